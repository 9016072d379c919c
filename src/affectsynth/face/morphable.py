"""3D morphable model of the face on the FaceMesh topology: the linear model and its bases.

The model is linear in the canonical frame (mm, x image right, y up, z towards the camera)::

    shape = mean + sum_i a_i B_id[i] + sum_j e_j B_exp[j]

and is observed through a scaled-orthographic camera in FaceMesh's landmark frame (pixels, y down, z away
from the camera): ``projected = scale * shape @ rotation.T + translation``. ``rotation`` is one proper
rotation that already contains the fixed frame change ``diag(1, -1, -1)`` (a half turn about x).

Its fit to landmarks is in ``face.fit``.
"""

import contextlib
import functools

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._types import Vertices
from . import topology as topo

FLIP = np.diag(np.array([1.0, -1.0, -1.0], np.float32))
"""Canonical frame (y up, z towards camera) -> landmark frame (y down, z away): a half turn about x."""


class MorphableModel(eqx.Module):
    """Linear face model in the canonical frame (mm): ``mean + sum_i a_i B_id[i] + sum_j e_j B_exp[j]``.

    Attributes:
        mean: f32[V, 3] neutral mean face (the topology's template by default).
        identity_basis: f32[K_id, V, 3] identity modes.
        identity_std: f32[K_id] prior standard deviation of each identity coefficient.
        expression_basis: f32[K_exp, V, 3] expression modes (e.g. Action Unit fields at intensity 1).
        expression_std: f32[K_exp] prior standard deviation of each expression coefficient.
        expression_names: names of the expression modes (static).
        expression_nonnegative: the expression modes are activations that cannot go negative (Action Units,
            blendshape rigs); the fit then projects their coefficients onto >= 0 (static). False for signed
            bases such as PCA modes.
    """

    mean: Float[Array, "V 3"]
    identity_basis: Float[Array, "Ki V 3"]
    identity_std: Float[Array, " Ki"]
    expression_basis: Float[Array, "Ke V 3"]
    expression_std: Float[Array, " Ke"]
    expression_names: tuple[str, ...] = eqx.field(static=True, default=())
    expression_nonnegative: bool = eqx.field(static=True, default=False)

    @property
    def num_identity(self) -> int:
        return self.identity_basis.shape[0]

    @property
    def num_expression(self) -> int:
        return self.expression_basis.shape[0]

    def shape(self, identity: Float[Array, " Ki"], expression: Float[Array, " Ke"]) -> Vertices:
        """Canonical shape (mm) for identity and expression coefficients (either may have length 0)."""
        return self.mean + identity_offsets(self, identity) + expression_offsets(self, expression)


def identity_offsets(model: MorphableModel, coefficients: Float[Array, " Ki"]) -> Float[Array, "V 3"]:
    """Identity displacement ``sum_i a_i B_id[i]`` in the canonical frame (mm)."""
    return jnp.tensordot(coefficients, model.identity_basis, axes=1)


def expression_offsets(model: MorphableModel, coefficients: Float[Array, " Ke"]) -> Float[Array, "V 3"]:
    """Expression displacement ``sum_j e_j B_exp[j]`` in the canonical frame (mm).

    This is what neutralisation subtracts: ``target_deformation - expression_offsets(model, fit.expression)``.
    """
    return jnp.tensordot(coefficients, model.expression_basis, axes=1)


# --------------------------------------------------------------------------------------------------------
# Bases (NumPy, built once on the host, never inside a jitted path)


def _single_threaded_blas():
    """Limit BLAS to one thread where threadpoolctl is available: a 478^2 eigh is ~10x slower when
    OpenBLAS threads compete with XLA's on a busy 2-core machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def default_identity_basis(
    num_modes: int = 60,
    *,
    length_scales: tuple[float, ...] = (15.0, 30.0, 60.0),
    amplitudes: tuple[float, ...] = (1.0, 2.0, 3.0),
    axis_scale: tuple[float, float, float] = (1.0, 1.0, 1.25),
    symmetry: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """A data-free identity basis: the leading eigenmodes of a Gaussian-process prior on the template.

    The displacement field ``u: vertices -> R^3`` has covariance
    :math:`\\mathrm{Cov}(u_a(i), u_b(j)) = \\delta_{ab} s_a^2 \\, [K (I + \\gamma_a P)]_{ij}` with
    :math:`K_{ij} = \\sum_l \\sigma_l^2 \\exp(-\\|x_i - x_j\\|^2 / 2\\ell_l^2)` over template positions,
    ``P`` the left/right mirror permutation and :math:`\\gamma_x = -\\gamma, \\gamma_{y,z} = +\\gamma`, so
    mirror-symmetric fields get variance ``1 + gamma`` times, antisymmetric ``1 - gamma`` times, and every
    mode is either symmetric or antisymmetric. Distances are Euclidean (not along the mesh), so upper and
    lower lip and the two eyelids move together: identity cannot open the mouth or close an eye, which
    keeps it separable from expression.

    Args:
        num_modes: modes kept (largest variance first, over the three axes).
        length_scales: kernel length scales (mm), one per squared-exponential term.
        amplitudes: standard deviation (mm) of each term.
        axis_scale: per-axis multiplier of the standard deviation (x, y, z); depth varies a little more.
        symmetry: gamma in [0, 1): preference for symmetric variation.

    Returns:
        (basis f32[num_modes, 478, 3] with unit-norm modes, std f32[num_modes]): the prior std (mm) of
        each mode's coefficient; one std moves the vertices by std / sqrt(478) mm rms. Cached.
    """
    basis, std = _gp_basis(
        num_modes, tuple(length_scales), tuple(amplitudes), tuple(axis_scale), float(symmetry)
    )
    return basis.copy(), std.copy()


@functools.lru_cache(maxsize=8)
def _gp_basis(
    num_modes: int,
    length_scales: tuple[float, ...],
    amplitudes: tuple[float, ...],
    axis_scale: tuple[float, float, float],
    symmetry: float,
) -> tuple[np.ndarray, np.ndarray]:
    if len(length_scales) != len(amplitudes):
        raise ValueError("length_scales and amplitudes must have the same length")
    if not 0.0 <= symmetry < 1.0:
        raise ValueError(f"symmetry must be in [0, 1), got {symmetry}")
    t = topo.face_topology()
    x = t.template.astype(np.float64)
    v = x.shape[0]
    if not 0 < num_modes <= 3 * v:
        raise ValueError(f"num_modes must be in 1..{3 * v}, got {num_modes}")
    d2 = np.sum((x[:, None, :] - x[None, :, :]) ** 2, axis=-1)
    k = sum(a**2 * np.exp(-d2 / (2.0 * ell**2)) for ell, a in zip(length_scales, amplitudes, strict=True))
    m = t.mirror
    k = 0.5 * (k + k[np.ix_(m, m)])  # commutes with the mirror permutation
    kp = k[:, m]  # K @ P
    values, vectors, axes = [], [], []
    for axis, gamma in enumerate((-symmetry, symmetry, symmetry)):
        ka = axis_scale[axis] ** 2 * (k + gamma * kp)
        with _single_threaded_blas():
            w, u = np.linalg.eigh(0.5 * (ka + ka.T))
        values.append(w)
        vectors.append(u.T)
        axes.append(np.full(v, axis))
    values, vectors, axes = np.concatenate(values), np.concatenate(vectors), np.concatenate(axes)
    order = np.argsort(-values, kind="stable")[:num_modes]
    basis = np.zeros((num_modes, v, 3))
    basis[np.arange(num_modes), :, axes[order]] = vectors[order]
    # deterministic sign: largest-magnitude entry positive
    flat = basis.reshape(num_modes, -1)
    signs = np.sign(flat[np.arange(num_modes), np.argmax(np.abs(flat), axis=1)])
    basis *= signs[:, None, None]
    std = np.sqrt(np.maximum(values[order], 0.0))
    return basis.astype(np.float32), std.astype(np.float32)


def bump_fields(
    centres: list[list[int]],
    directions: np.ndarray,
    radius: float = 12.0,
) -> np.ndarray:
    """Localised smooth displacement fields on the template (a stand-in expression basis for tests).

    Field ``k`` is ``sum_c directions[k, c] * exp(-||x - x_c||^2 / 2 r^2)`` over its centre vertices ``c``.

    Args:
        centres: for each field, the template vertex ids it is centred on.
        directions: f32[K, max_centres, 3] displacement (mm) at each centre.
        radius: Gaussian radius r (mm).

    Returns:
        f32[K, 478, 3].
    """
    x = topo.face_topology().template.astype(np.float64)
    directions = np.asarray(directions, np.float64)
    out = np.zeros((len(centres), x.shape[0], 3))
    for k, ids in enumerate(centres):
        for c, vid in enumerate(ids):
            g = np.exp(-np.sum((x - x[vid]) ** 2, axis=1) / (2.0 * radius**2))
            out[k] += g[:, None] * directions[k, c][None, :]
    return out.astype(np.float32)


def morphable_model(
    expression_basis=None,
    expression_std=None,
    expression_names: tuple[str, ...] = (),
    identity="gp",
    *,
    identity_modes: int = 60,
    expression_nonnegative: bool = True,
) -> MorphableModel:
    """Assemble a ``MorphableModel`` with the topology's template as mean.

    Args:
        expression_basis: f32[K_e, 478, 3] or None (no expression modes, K_e = 0).
        expression_std: f32[K_e] prior std of the expression coefficients (default ones).
        expression_names: one name per expression mode (or empty).
        identity: "gp" (``default_identity_basis(identity_modes)``), "none", or a (basis, std) pair such as
            ``load_ict_identity_basis(folder)``.
        identity_modes: modes of the default GP basis.
        expression_nonnegative: expression coefficients are non-negative activations (AUs, blendshapes);
            pass False for a signed (PCA) expression basis.
    """
    mean = topo.face_topology().template
    v = mean.shape[0]
    if isinstance(identity, str):
        if identity == "gp":
            id_basis, id_std = default_identity_basis(identity_modes)
        elif identity == "none":
            id_basis, id_std = np.zeros((0, v, 3), np.float32), np.zeros((0,), np.float32)
        else:
            raise ValueError(f"identity must be 'gp', 'none' or (basis, std), got {identity!r}")
    else:
        id_basis, id_std = identity
    if expression_basis is None:
        expression_basis = np.zeros((0, v, 3), np.float32)
    expression_basis = np.asarray(expression_basis, np.float32)
    if expression_std is None:
        expression_std = np.ones(expression_basis.shape[0], np.float32)
    id_basis, id_std = np.asarray(id_basis, np.float32), np.asarray(id_std, np.float32)
    expression_std = np.asarray(expression_std, np.float32)
    for name, b, sd in (("identity", id_basis, id_std), ("expression", expression_basis, expression_std)):
        if b.ndim != 3 or b.shape[1:] != (v, 3) or sd.shape != b.shape[:1]:
            raise ValueError(f"{name} basis {b.shape} / std {sd.shape} do not match [K, {v}, 3] / [K]")
    expression_names = tuple(expression_names)
    if expression_names and len(expression_names) != expression_basis.shape[0]:
        raise ValueError(f"{len(expression_names)} expression names for {expression_basis.shape[0]} modes")
    return MorphableModel(
        mean=jnp.asarray(mean),
        identity_basis=jnp.asarray(id_basis),
        identity_std=jnp.asarray(id_std),
        expression_basis=jnp.asarray(expression_basis),
        expression_std=jnp.asarray(expression_std),
        expression_names=expression_names,
        expression_nonnegative=bool(expression_nonnegative),
    )
