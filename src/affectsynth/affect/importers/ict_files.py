"""Reading an ICT-FaceKit folder (MIT licence): the original ``FaceXModel/`` OBJ layout or the arrays file.

Layouts read (``FOLDER`` is what the user passes):

- original: ``FOLDER/FaceXModel/`` (or ``FOLDER`` itself) holding ``generic_neutral_mesh.obj``, one OBJ per
  expression shape (``jawOpen.obj``, ``mouthSmile_L.obj``, ...), ``identity000.obj`` ... and
  ``vertex_indices.json``;
- arrays: ``FOLDER/ict_facekit_deltas.npz`` (``neutral``, ``faces``, ``expression_names`` /
  ``expression_deltas``, ``identity_names`` / ``identity_deltas``, all deltas = shape - neutral).

When both are there, the one with more expression shapes is read (the arrays file on a tie). Units are
ICT's centimetres; every OBJ of the rig shares one topology (26,719 vertices, face region = 0..9408).
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from ...errors import AffectsynthError

NPZ_NAME = "ict_facekit_deltas.npz"
NEUTRAL_OBJ = "generic_neutral_mesh.obj"
INDEX_JSON = "vertex_indices.json"
FACE_VERTICES = 9409
"""ICT vertices 0..9408 are the face; the rest are head, neck, mouth socket, teeth, eyeballs."""
EYEBALLS = ((23021, 23791), (21451, 22221))
"""(first, end) vertex ids of the right and left eyeball's outer shell (ICT-FaceKit's documented layout;
the right eye is at -x, the subject's right)."""


class IctDataError(AffectsynthError):
    """An ICT-FaceKit folder that cannot be read or gives too little to build a model."""

    exit_code = 2


@dataclasses.dataclass(frozen=True)
class IctRig:
    """The rig as read: neutral, topology, expression shapes, optionally identity shapes.

    Attributes:
        neutral: f64[N, 3] neutral mesh (cm).
        polygons: i64[F, 4] faces (vertex ids; -1 pads triangles).
        expressions: shape name -> f32[N, 3] delta (shape - neutral).
        identities: f32[S, N, 3] identity deltas, or None when not asked for.
        landmarks: i64[68] vertex of each Multi-PIE landmark.
        origin: "npz" or "obj" (what the shapes were read from) and ``path`` the file or folder.
        licence: the folder's LICENSE text ("" if absent).
    """

    neutral: np.ndarray
    polygons: np.ndarray
    expressions: dict
    identities: np.ndarray | None
    landmarks: np.ndarray
    origin: str
    path: Path
    licence: str

    def triangles(self, first: int = 0, end: int | None = None) -> np.ndarray:
        """Triangles i64[T, 3] of the polygons whose vertices all lie in [first, end) (quads split in two)."""
        p = self.polygons
        end = self.neutral.shape[0] if end is None else end
        used = np.where(p >= 0, p, first)
        p = p[np.all((used >= first) & (used < end), axis=1)]
        return np.concatenate([p[:, [0, 1, 2]], p[p[:, 3] >= 0][:, [0, 2, 3]]])


def read_obj(path: Path, *, faces: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Vertices f64[N, 3] (and, with ``faces``, polygons i64[F, 4] padded with -1) of a Wavefront OBJ."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise IctDataError(path, f"unreadable OBJ ({err.strerror or err})") from None
    try:
        v = np.array([ln.split()[1:4] for ln in lines if ln.startswith("v ")], np.float64)
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError("vertex lines without three coordinates")
        polys = None
        if faces:
            rows = [
                [int(tok.split("/")[0]) - 1 for tok in ln.split()[1:]] for ln in lines if ln.startswith("f ")
            ]
            if any(len(r) not in (3, 4) for r in rows):
                raise ValueError("only triangles and quads are supported")
            polys = np.array([r + [-1] * (4 - len(r)) for r in rows], np.int64)
    except ValueError as err:
        raise IctDataError(path, f"not a readable OBJ ({err})") from None
    return v, polys


def _obj_folder(folder: Path) -> Path | None:
    for root in (folder / "FaceXModel", folder):
        if (root / NEUTRAL_OBJ).is_file():
            return root
    return None


def _obj_shapes(root: Path) -> tuple[list[Path], list[Path]]:
    """(expression OBJs, identity OBJs) of an original-layout folder, sorted by name."""
    objs = sorted(p for p in root.glob("*.obj") if p.name != NEUTRAL_OBJ)
    ident = [p for p in objs if p.stem.startswith("identity")]
    return [p for p in objs if not p.stem.startswith("identity")], ident


def _landmarks(folder: Path, root: Path | None) -> np.ndarray:
    for base in (root, folder):
        if base is not None and (base / INDEX_JSON).is_file():
            path = base / INDEX_JSON
            try:
                lm = np.asarray(json.loads(path.read_text())["idx_to_landmark_verts"], np.int64)
            except (ValueError, KeyError, TypeError):
                raise IctDataError(path, "no idx_to_landmark_verts list") from None
            if lm.shape != (68,):
                raise IctDataError(path, f"{lm.size} landmark vertices (need 68)")
            return lm
    raise IctDataError(folder, f"no {INDEX_JSON} (the 68 landmark vertex ids)")


def _npz_shape_count(path: Path) -> int:
    try:
        with np.load(path) as z:
            return len(z["expression_names"])
    except (OSError, ValueError, KeyError) as err:
        raise IctDataError(path, f"not an ICT-FaceKit arrays file ({type(err).__name__}: {err})") from None


def _read_npz(path: Path, identity: bool):
    try:
        with np.load(path) as z:
            neutral = z["neutral"].astype(np.float64)
            polys = z["faces"].astype(np.int64)
            names = [str(n) for n in z["expression_names"]]
            deltas = z["expression_deltas"]  # one decompression (indexing the lazy member re-reads it)
            ids = z["identity_deltas"].astype(np.float32) if identity else None
    except (OSError, ValueError, KeyError) as err:
        raise IctDataError(path, f"not an ICT-FaceKit arrays file ({type(err).__name__}: {err})") from None
    if deltas.shape != (len(names), *neutral.shape):
        raise IctDataError(
            path, f"expression_deltas {deltas.shape} do not match {len(names)} x {neutral.shape}"
        )
    return neutral, polys, {n: deltas[k].astype(np.float32) for k, n in enumerate(names)}, ids


def _read_objs(root: Path, identity: bool):
    neutral, polys = read_obj(root / NEUTRAL_OBJ, faces=True)
    expr_paths, id_paths = _obj_shapes(root)

    def delta(p):
        v, _ = read_obj(p)
        if v.shape != neutral.shape:
            raise IctDataError(p, f"{v.shape[0]} vertices (the neutral has {neutral.shape[0]})")
        return (v - neutral).astype(np.float32)

    expressions = {p.stem: delta(p) for p in expr_paths}
    ids = np.stack([delta(p) for p in id_paths]) if identity and id_paths else None
    return neutral, polys, expressions, ids


def read_ict(folder, *, identity: bool = False) -> IctRig:
    """Read an ICT-FaceKit folder (see the module docstring); ``identity`` also reads the identity shapes.

    Raises:
        IctDataError: one line naming the file: no neutral / arrays file, no landmark list, a shape with
            another vertex count, an unreadable file, or no identity shapes when they are asked for.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise IctDataError(folder, "ICT-FaceKit folder not found")
    root = _obj_folder(folder)
    npz = folder / NPZ_NAME
    n_obj = len(_obj_shapes(root)[0]) if root is not None else -1
    n_npz = _npz_shape_count(npz) if npz.is_file() else -1
    if max(n_obj, n_npz) < 0:
        raise IctDataError(folder, f"neither FaceXModel/{NEUTRAL_OBJ} nor {NPZ_NAME}")
    landmarks = _landmarks(folder, root)
    if n_npz >= n_obj:
        neutral, polys, expressions, ids = _read_npz(npz, identity)
        origin, path = "npz", npz
    else:
        neutral, polys, expressions, ids = _read_objs(root, identity)
        origin, path = "obj", root
    if identity and (ids is None or len(ids) == 0):
        raise IctDataError(path, "no identity shapes (identityNNN.obj or identity_deltas)")
    if landmarks.max() >= neutral.shape[0] or polys.max() >= neutral.shape[0]:
        raise IctDataError(path, "landmark or face vertex ids beyond the mesh")
    lic = next((p for p in (folder / "LICENSE", folder.parent / "LICENSE") if p.is_file()), None)
    return IctRig(
        neutral=neutral,
        polygons=polys,
        expressions=expressions,
        identities=ids,
        landmarks=landmarks,
        origin=origin,
        path=path,
        licence=lic.read_text(errors="replace") if lic is not None else "",
    )
