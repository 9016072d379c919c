"""The per-V-A-class affect model (``AffectModel``): queries (pure JAX) and its file format."""

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..errors import ModelFileError
from ..face import topology as topo
from ..face.morphable import MorphableModel
from ..io import atomic_write_bytes
from .grid import AffectGrid, class_index

FORMAT_NAME = "affectsynth-affect-model"
FORMAT_VERSION = 2
"""2: ``class_au``, ``au_names`` and ``resting_expression`` (version-1 files are read and given them by
projection, see ``read_model``)."""

RESTING_ALLOWANCE_MM: dict[str, float] = {
    "AU1": 6.4, "AU2": 4.6, "AU4": 4.7, "AU5": 2.5, "AU6": 0.7, "AU7": 1.5, "AU9": 1.25, "AU10": 0.85,
    "AU12": 4.0, "AU14": 0.5, "AU15": 3.15, "AU16": 6.7, "AU17": 7.5, "AU20": 2.5, "AU23": 2.1,
    "AU24": 0.8, "AU25": 0.05, "AU26": 7.5, "AU27": 19.7, "AU43": 4.6,
}  # fmt: skip
"""Peak displacement (mm) each Action Unit mode reaches in fits of resting faces: the largest fitted
activation over 48 neutral London photos (``scripts/measure_resting_expression.py``) times the mode's peak
displacement, plus 10% (the larger of two measurements: with the AU fields before and after they were
scaled to ICT-FaceKit magnitudes). Neutralisation keeps activations below it (face shape the identity
basis cannot express); smiles exceed it on the modes that part the lips (AU10, AU25, AU26). Stored in mm so
that it survives a rescaled field; modes without an entry get ``DEFAULT_RESTING_MM``."""

DEFAULT_RESTING_MM = 2.0


class AffectModel(eqx.Module):
    """Per-V-A-class expression model on the FaceMesh topology (canonical frame, mm).

    Attributes:
        morphable: the face model used for fitting photos (stored, not used here).
        grid: the V-A class grid (static).
        class_mean: f32[C, V, 3] mean deformation of each class (empty classes: their source's).
        class_count: i32[C] frames seen per class (0 for empty classes).
        class_source: i32[C] class whose data fills each class (itself when populated).
        class_label: f32[C, 2] median (V, A) of the class's frames (class centre when empty).
        components: f32[C, K, V, 3] the class's SPLOCS components (mm).
        weight_mean / weight_std: f32[C, K] mean and std of the components' weights over the class sample.
        class_au: f32[C, A] Action-Unit intensities of each class mean (0 none, 1 apex), in ``au_names``
            order: what the appearance cues draw. From the gallery's own AU labels when it has them (the
            generated gallery), else by non-negative least squares on the morphable's expression basis.
        resting_expression: f32[Ke] per expression mode of ``morphable``, the activation a resting face
            shows in a fit (kept by neutralisation; ``resting_tolerance``).
        au_names: names of ``class_au``'s columns (static).
        metadata: JSON text (static): name, source, build information.
    """

    morphable: MorphableModel
    class_mean: Float[Array, "C V 3"]
    class_count: Int[Array, " C"]
    class_source: Int[Array, " C"]
    class_label: Float[Array, "C 2"]
    components: Float[Array, "C K V 3"]
    weight_mean: Float[Array, "C K"]
    weight_std: Float[Array, "C K"]
    class_au: Float[Array, "C A"]
    resting_expression: Float[Array, " Ke"]
    grid: AffectGrid = eqx.field(static=True, default=AffectGrid())
    au_names: tuple[str, ...] = eqx.field(static=True, default=())
    metadata: str = eqx.field(static=True, default="{}")

    @property
    def num_classes(self) -> int:
        return self.class_mean.shape[0]

    @property
    def num_components(self) -> int:
        return self.components.shape[1]

    @property
    def class_counts(self):
        """Alias of ``class_count``."""
        return self.class_count

    @property
    def info(self) -> dict:
        """``metadata`` parsed from JSON."""
        try:
            return json.loads(self.metadata)
        except ValueError:
            return {"metadata": self.metadata}


# --------------------------------------------------------------------------------------------------------
# Pure JAX queries


def _blend_classes(model: AffectModel, values: Float[Array, "C ..."], target, interpolate: bool):
    """Per-class ``values`` at a (V, A) target: the target's class, or the bilinear blend of the four
    classes around it (each placed at its class centre; beyond the outermost centres, the border ones)."""
    grid = model.grid
    target = jnp.asarray(target, jnp.float32)
    if not interpolate:
        return values[class_index(grid, target)]
    t = jnp.where(jnp.isnan(target), 0.0, target)
    wv, wa = grid.cell_size

    def axis(x, w, n):
        u = jnp.clip((x - grid.low) / w - 0.5, 0.0, n - 1.0)
        i0 = jnp.clip(jnp.floor(u), 0, max(n - 2, 0)).astype(jnp.int32)
        return i0, jnp.minimum(i0 + 1, n - 1), u - i0

    iv0, iv1, fv = axis(t[0], wv, grid.n_valence)
    ia0, ia1, fa = axis(t[1], wa, grid.n_arousal)
    nv = grid.n_valence
    return (
        (1 - fv) * (1 - fa) * values[ia0 * nv + iv0]
        + fv * (1 - fa) * values[ia0 * nv + iv1]
        + (1 - fv) * fa * values[ia1 * nv + iv0]
        + fv * fa * values[ia1 * nv + iv1]
    )


def class_deformation(
    model: AffectModel, target: Float[Array, "2"], *, interpolate: bool = False
) -> Float[Array, "V 3"]:
    """Deformation (canonical frame, mm) for a (V, A) target.

    ``interpolate=False``: the mean of the target's class (the paper). ``interpolate=True``: bilinear
    blend of the four class means around the target, each mean placed at its class centre (continuous in
    V-A, for animation without jumps); beyond the outermost centres the border means are used.
    """
    return _blend_classes(model, model.class_mean, target, interpolate)


def class_action_units(
    model: AffectModel, target: Float[Array, "2"], *, interpolate: bool = False
) -> Float[Array, " A"]:
    """AU intensities (``model.au_names`` order) of the deformation ``class_deformation`` returns for the
    same arguments: the classes' ``class_au`` blended with the same weights (both are linear in them)."""
    return _blend_classes(model, model.class_au, target, interpolate)


def sample_deformation(
    model: AffectModel, target: Float[Array, "2"], key: PRNGKeyArray, *, temperature: float = 1.0
) -> Float[Array, "V 3"]:
    """A varied deformation of the target's class: :math:`\\bar d + \\sum_k (w_k - \\bar w_k) C_k` with
    :math:`w_k \\sim \\mathcal N(\\bar w_k, (\\tau \\sigma_k)^2)`, so its expectation is the class mean."""
    c = class_index(model.grid, target)
    eps = jax.random.normal(key, model.weight_std.shape[1:], model.weight_std.dtype)
    dw = temperature * model.weight_std[c] * eps
    return model.class_mean[c] + jnp.tensordot(dw, model.components[c], axes=1)


def class_label(model: AffectModel, target: Float[Array, "2"]) -> Float[Array, "2"]:
    """The label synthetic images of this target carry: the median (V, A) of its class (the paper, 4.4)."""
    return model.class_label[class_index(model.grid, target)]


# --------------------------------------------------------------------------------------------------------
# The model's own Action-Unit description (NumPy, at build and load time)


def project_action_units(deformations: np.ndarray, basis: np.ndarray) -> np.ndarray:
    r"""AU intensities f32[N, K] that explain deformations f[N, V, 3] with fields f[K, V, 3] (mm).

    Non-negative least squares per deformation, :math:`\min_{a \ge 0} \|\sum_k a_k B_k - d\|^2`
    (``scipy.optimize.nnls``, float64): AUs are activations, and without a ridge an intensity is not
    shrunk (a ridge scaled to the mean field returned AU23 at 0.19x, AU5 at 0.22x its true value).
    """
    from scipy.optimize import nnls  # noqa: PLC0415  (host-only, at build/load time)

    d = np.asarray(deformations, np.float64).reshape(len(deformations), -1)
    if len(basis) == 0:
        return np.zeros((len(d), 0), np.float32)
    b = np.asarray(basis, np.float64).reshape(len(basis), -1)
    return np.stack([nnls(b.T, x, maxiter=50 * len(b))[0] for x in d]).astype(np.float32)


def au_projection_basis(morphable: MorphableModel) -> tuple[tuple[str, ...], np.ndarray, str]:
    """(names, fields f[K, V, 3], description) the class means are projected onto for their AU intensities:
    the morphable's own expression modes, or the FACS fields of ``au_fields`` when it has none."""
    if morphable.num_expression > 0:
        names = morphable.expression_names or tuple(f"mode{k}" for k in range(morphable.num_expression))
        return names, np.asarray(morphable.expression_basis), "projection onto the model's expression modes"
    if morphable.mean.shape[0] != topo.NUM_LANDMARKS:
        return (), np.zeros((0,) + tuple(morphable.mean.shape), np.float32), "none (no AU basis)"
    from .au_fields import expression_basis  # noqa: PLC0415  (builds the fields: only when needed)

    basis, _, names = expression_basis()
    return tuple(names), basis, "projection onto the FACS fields (au_fields)"


def resting_tolerance(morphable: MorphableModel) -> np.ndarray:
    """f32[Ke] activation per expression mode that a resting face may show in a fit: the mode's
    ``RESTING_ALLOWANCE_MM`` (``DEFAULT_RESTING_MM`` for an unlisted name) over its peak displacement."""
    basis = np.asarray(morphable.expression_basis, np.float64)
    names = morphable.expression_names or ("",) * len(basis)
    peak = np.linalg.norm(basis, axis=-1).max(axis=-1) if len(basis) else np.zeros(0)
    allowance = np.array([RESTING_ALLOWANCE_MM.get(n, DEFAULT_RESTING_MM) for n in names], np.float64)
    return (allowance / np.maximum(peak, 1e-6)).astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# Files

_MORPH_FIELDS = ("mean", "identity_basis", "identity_std", "expression_basis", "expression_std")
_MODEL_FIELDS = (
    "class_mean",
    "class_count",
    "class_source",
    "class_label",
    "components",
    "weight_mean",
    "weight_std",
)
_AU_FIELDS = ("class_au", "resting_expression")
"""Arrays new in format version 2 (a version-1 file gets them by ``_migrate_v1``)."""


def save_model(path, model: AffectModel) -> Path:
    """Write ``model`` as one .npz (arrays + a JSON ``header`` with the format version), atomically."""
    if not isinstance(model, AffectModel):
        raise TypeError(f"save_model needs an AffectModel, got {type(model).__name__}")
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "grid": dataclasses.asdict(model.grid),
        "expression_names": list(model.morphable.expression_names),
        "expression_nonnegative": bool(model.morphable.expression_nonnegative),
        "metadata": model.metadata,
        "au_names": list(model.au_names),
    }
    arrays = {f"morphable_{f}": np.asarray(getattr(model.morphable, f)) for f in _MORPH_FIELDS}
    arrays.update({f: np.asarray(getattr(model, f)) for f in (*_MODEL_FIELDS, *_AU_FIELDS)})
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    p = Path(path)
    atomic_write_bytes(p, buf.getvalue())
    return p


def read_model(path) -> AffectModel:
    """Read a model file written by ``save_model`` (``affectsynth.load_model`` adds the default model).

    Raises:
        ModelFileError: one line, for a missing file, a file that is not a model, an unsupported format
            version, or a corrupt/inconsistent file.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(p, "model file not found")
    try:
        with open(p, "rb") as fh:
            z = np.load(fh, allow_pickle=False)
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ModelFileError(p, "not an affectsynth model (a plain .npy array, not an .npz archive)")
            with z:
                data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        if zipfile.is_zipfile(p):
            raise ModelFileError(p, f"corrupt model file ({type(err).__name__})") from None
        raise ModelFileError(p, "not an affectsynth model (not an .npz archive)") from None
    if "header" not in data:
        raise ModelFileError(p, "not an affectsynth model (no header)")
    try:
        header = json.loads(data["header"].tobytes().decode())
    except (ValueError, UnicodeDecodeError):
        raise ModelFileError(p, "corrupt model file (unreadable header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise ModelFileError(p, "not an affectsynth model (wrong format name)")
    version = header.get("version")
    if version not in (1, FORMAT_VERSION):
        raise ModelFileError(
            p,
            f"model format version {version} is not supported (this version reads 1 and "
            f"{FORMAT_VERSION}); rebuild the model",
        )
    needed = [f"morphable_{f}" for f in _MORPH_FIELDS] + list(_MODEL_FIELDS)
    needed += list(_AU_FIELDS) if version > 1 else []
    missing = [k for k in needed if k not in data]
    if missing:
        raise ModelFileError(p, f"corrupt model file (missing {', '.join(missing)})")
    try:
        grid = AffectGrid(**header["grid"])
        morph = MorphableModel(
            **{f: jnp.asarray(data[f"morphable_{f}"], jnp.float32) for f in _MORPH_FIELDS},
            expression_names=tuple(header.get("expression_names", ())),
            expression_nonnegative=bool(header.get("expression_nonnegative", False)),
        )
        arrays = {f: data[f] for f in _MODEL_FIELDS}
        if version == 1:
            au_names = _migrate_v1(arrays, morph)
        else:
            arrays.update({f: data[f] for f in _AU_FIELDS})
            au_names = tuple(str(n) for n in header.get("au_names", ()))
        _check_shapes(arrays, grid, morph.mean.shape[0], len(au_names), morph.num_expression)
    except (TypeError, ValueError, KeyError) as err:
        raise ModelFileError(p, f"corrupt model file ({' '.join(str(err).split())})") from None
    return AffectModel(
        morphable=morph,
        class_mean=jnp.asarray(arrays["class_mean"], jnp.float32),
        class_count=jnp.asarray(arrays["class_count"], jnp.int32),
        class_source=jnp.asarray(arrays["class_source"], jnp.int32),
        class_label=jnp.asarray(arrays["class_label"], jnp.float32),
        components=jnp.asarray(arrays["components"], jnp.float32),
        weight_mean=jnp.asarray(arrays["weight_mean"], jnp.float32),
        weight_std=jnp.asarray(arrays["weight_std"], jnp.float32),
        class_au=jnp.asarray(arrays["class_au"], jnp.float32),
        resting_expression=jnp.asarray(arrays["resting_expression"], jnp.float32),
        grid=grid,
        au_names=au_names,
        metadata=str(header.get("metadata", "{}")),
    )


def _migrate_v1(arrays: dict, morph: MorphableModel) -> tuple[str, ...]:
    """Give a version-1 model (no AU description) its ``class_au`` by projecting the class means as a build
    would (``au_projection_basis``), and the default ``resting_expression``; returns the AU names."""
    names, basis, _ = au_projection_basis(morph)
    arrays["class_au"] = project_action_units(arrays["class_mean"], basis)
    arrays["resting_expression"] = resting_tolerance(morph)
    return names


def _check_shapes(a: dict, grid: AffectGrid, v: int, num_au: int, num_expression: int):
    c = grid.num_classes
    k = a["components"].shape[1] if a["components"].ndim == 4 else -1
    want = {
        "class_mean": (c, v, 3),
        "class_count": (c,),
        "class_source": (c,),
        "class_label": (c, 2),
        "components": (c, k, v, 3),
        "weight_mean": (c, k),
        "weight_std": (c, k),
        "class_au": (c, num_au),
        "resting_expression": (num_expression,),
    }
    for name, shape in want.items():
        if a[name].shape != shape:
            raise ValueError(f"{name} has shape {a[name].shape}, expected {shape}")
        if not np.all(np.isfinite(a[name])):
            raise ValueError(f"{name} has non-finite values")
    if np.any(a["class_source"] < 0) or np.any(a["class_source"] >= c):
        raise ValueError("class_source out of range")


def describe_model(model: AffectModel) -> str:
    """Multi-line text summary: grid, classes, counts and sizes (for ``affectsynth model info``)."""
    g = model.grid
    counts = np.asarray(model.class_count)
    src = np.asarray(model.class_source)
    nbytes = sum(np.asarray(x).nbytes for x in jax.tree_util.tree_leaves(model))
    info = model.info
    lines = [
        f"name: {info.get('name', '?')}  source: {info.get('source', '') or '-'}",
        f"grid: {g.n_valence} x {g.n_arousal} classes over [{g.low:g}, {g.high:g}]^2 "
        f"(cell {g.cell_size[0]:g} x {g.cell_size[1]:g})",
        f"vertices: {model.class_mean.shape[1]}  components per class: {model.num_components}  "
        f"morphable: {model.morphable.num_identity} identity + "
        f"{model.morphable.num_expression} expression modes",
        f"frames: {int(counts.sum())}  populated classes: {int((counts > 0).sum())}/{g.num_classes}  "
        f"size: {nbytes / 1e6:.1f} MB in memory",
        "counts per class (rows: arousal high -> low, columns: valence low -> high; * = empty, filled):",
    ]
    grid_counts = counts.reshape(g.n_arousal, g.n_valence)
    for row in range(g.n_arousal - 1, -1, -1):
        cells = []
        for col in range(g.n_valence):
            n = int(grid_counts[row, col])
            cells.append(f"{n:>6d}" if n > 0 else f"{'*' + str(int(src[row * g.n_valence + col])):>6s}")
        lines.append(" ".join(cells))
    return "\n".join(lines)
