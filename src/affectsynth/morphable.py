"""3D morphable model of the face on the FaceMesh topology, and its fit to detected landmarks.

The model is linear in the canonical frame (mm, x image right, y up, z towards the camera)::

    shape = mean + sum_i a_i B_id[i] + sum_j e_j B_exp[j]

and is observed through a scaled-orthographic camera in FaceMesh's landmark frame (pixels, y down, z away
from the camera): ``projected = scale * shape @ rotation.T + translation``. ``rotation`` is one proper
rotation that already contains the fixed frame change ``diag(1, -1, -1)`` (a half turn about x).

The fit (``fit_morphable_model``) is a closed-form initialisation (3D similarity Procrustes alternated
with a ridge solve of the coefficients) refined by Adam on a robust objective; it is pure, jit-compilable
and vmappable (``fit_morphable_model_batch``), with a per-landmark mask for missing points.
"""

import contextlib
import dataclasses
import functools
import json
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from . import topology as topo
from ._types import Landmarks, Rotation, Vertices

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


# FaceMesh vertex for some of the 68 Multi-PIE landmarks, read off the topology's regions (eye and lip
# contour ends, lip midlines) and FaceMesh's well-known nose tip / subnasale / nasion / chin points.
MULTIPIE_TO_FACEMESH = {
    36: 33,  # right eye outer corner (subject's right = image left)
    39: 133,  # right eye inner corner
    42: 362,  # left eye inner corner
    45: 263,  # left eye outer corner
    48: 61,  # mouth corner (outer), right
    54: 291,  # mouth corner (outer), left
    51: 0,  # upper lip top, midline
    57: 17,  # lower lip bottom, midline
    62: 13,  # upper lip inner, midline
    66: 14,  # lower lip inner, midline
    30: 1,  # nose tip
    33: 2,  # subnasale
    27: 168,  # nasion
    8: 152,  # chin
}


def _similarity_np(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Umeyama: ``dst ~ s R src + t`` in the least-squares sense (NumPy, float64)."""
    ms, md = src.mean(0), dst.mean(0)
    xs, xd = src - ms, dst - md
    u, sv, vt = np.linalg.svd(xd.T @ xs)
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt
    s = float(np.trace(np.diag(sv) @ d) / np.sum(xs**2))
    return r, s, md - s * r @ ms


def closest_point_barycentric(a: np.ndarray, b: np.ndarray, c: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Barycentric coordinates [..., 3] of the point of triangle (a, b, c) closest to p (NumPy, broadcasting).

    Voronoi-region case analysis (vertex, edge or face region, tested in that order), as in Ericson's
    *Real-Time Collision Detection*, vectorised.
    """
    dot = lambda u, v: np.sum(u * v, axis=-1)
    ab, ac, ap, bp, cp = b - a, c - a, p - a, p - b, p - c
    d1, d2, d3, d4, d5, d6 = dot(ab, ap), dot(ac, ap), dot(ab, bp), dot(ac, bp), dot(ab, cp), dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        denom = 1.0 / (va + vb + vc)
    v_in, w_in = vb * denom, vc * denom
    z = np.zeros_like(d1)
    o = np.ones_like(d1)
    cases = [
        ((d1 <= 0) & (d2 <= 0), (o, z, z)),
        ((d3 >= 0) & (d4 <= d3), (z, o, z)),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), (1 - t_ab, t_ab, z)),
        ((d6 >= 0) & (d5 <= d6), (z, z, o)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), (1 - t_ac, z, t_ac)),
        ((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), (z, 1 - t_bc, t_bc)),
    ]
    out = np.stack([1 - v_in - w_in, v_in, w_in], axis=-1)
    for cond, bary in reversed(cases):  # earlier cases take precedence
        out = np.where(cond[..., None], np.stack(bary, axis=-1), out)
    return out


def closest_points_on_mesh(
    points: np.ndarray, vertices: np.ndarray, triangles: np.ndarray, *, candidates: int = 12
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest surface point of a triangle mesh for each query point (NumPy).

    Candidate triangles are those around the ``candidates`` nearest mesh vertices (k-d tree); exact when
    the closest point lies in a triangle touching one of them (dense meshes, points near the surface).

    Returns:
        (closest f64[P, 3], triangle id i64[P], barycentric f64[P, 3]).
    """
    from scipy.spatial import cKDTree

    points, vertices = np.asarray(points, np.float64), np.asarray(vertices, np.float64)
    triangles = np.asarray(triangles, np.int64)
    used = np.unique(triangles)  # vertices outside every triangle are never candidates
    k = min(candidates, used.size)
    _, nn = cKDTree(vertices[used]).query(points, k=k)
    nn = used[np.asarray(nn).reshape(points.shape[0], k)]
    # vertex -> incident triangles, padded with -1
    owner = np.repeat(np.arange(triangles.shape[0]), 3)
    vert = triangles.reshape(-1)
    order = np.argsort(vert, kind="stable")
    counts = np.bincount(vert, minlength=vertices.shape[0])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    adj = -np.ones((vertices.shape[0], max(int(counts.max()), 1)), np.int64)
    rank = np.arange(vert.size) - starts[vert[order]]
    adj[vert[order], rank] = owner[order]
    cand = adj[nn].reshape(points.shape[0], -1)  # [P, C]
    safe = np.maximum(cand, 0)
    tri = vertices[triangles[safe]]  # [P, C, 3, 3]
    bary = closest_point_barycentric(tri[..., 0, :], tri[..., 1, :], tri[..., 2, :], points[:, None, :])
    closest = np.einsum("pcj,pcjd->pcd", bary, tri)
    dist = np.where(cand >= 0, np.sum((closest - points[:, None, :]) ** 2, axis=-1), np.inf)
    best = np.argmin(dist, axis=1)
    rows = np.arange(points.shape[0])
    return closest[rows, best], cand[rows, best], bary[rows, best]


def ict_identity_basis(
    neutral: np.ndarray,
    faces: np.ndarray,
    identity_deltas: np.ndarray,
    landmark_vertices: np.ndarray,
    num_modes: int = 40,
    *,
    face_vertices: int = 9409,
    icp_iterations: int = 5,
    deltas_are_modes: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Bring ICT-FaceKit identity shapes onto the 478-point topology and PCA them.

    ICT's neutral face is aligned to our template by a similarity (from ``MULTIPIE_TO_FACEMESH`` applied to
    its 68 landmark vertices), refined by a few rigid ICP steps; every template point is projected onto the
    closest point of the aligned ICT face surface and the identity deltas are interpolated there
    (barycentric), rotated and scaled by the same similarity (cm -> template mm).

    ICT's 100 identity shapes are mutually orthogonal to 1e-4 (cosine) with decreasing norms: they are the
    modes of ICT's own PCA model, each at one standard deviation, not sampled people. So by default
    (``deltas_are_modes``) the shape prior is :math:`\\sum_k c_k d_k` with :math:`c \\sim N(0, I)`; its
    covariance :math:`S^T S` (rows of S = resampled deltas) is re-diagonalised by an SVD of S (no
    centring): basis = right singular vectors, std = singular values. With ``deltas_are_modes=False`` the
    rows are treated as samples (centred PCA, std = singular value / sqrt(n - 1)).

    Args:
        neutral: f32[N, 3] ICT neutral (cm).
        faces: i32[F, 4] ICT polygons (quads; -1 pads triangles).
        identity_deltas: f32[S, N, 3] identity shapes minus the neutral.
        landmark_vertices: i32[68] ICT vertex of each Multi-PIE landmark.
        num_modes: principal components kept.
        face_vertices: ICT vertices ``< face_vertices`` form the face region (the rest: eyes, mouth
            interior, head).
        icp_iterations: rigid closest-point refinements after the landmark similarity.
        deltas_are_modes: see above.

    Returns:
        (basis f32[K, 478, 3] unit-norm modes, std f32[K] coefficient std in template mm, as in
        ``default_identity_basis``).
    """
    t = topo.face_topology()
    tmpl = t.template.astype(np.float64)
    neutral = np.asarray(neutral, np.float64)
    faces = np.asarray(faces)
    lm_mp = np.array(sorted(MULTIPIE_TO_FACEMESH))
    src = neutral[np.asarray(landmark_vertices)[lm_mp]]
    dst = tmpl[[MULTIPIE_TO_FACEMESH[i] for i in lm_mp]]
    r, s, tr = _similarity_np(src, dst)

    quads = faces[np.all(faces < face_vertices, axis=1)]
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[quads[:, 3] >= 0][:, [0, 2, 3]]])
    tris = tris[np.all(tris >= 0, axis=1)]
    mesh_pts = tmpl[: topo.NUM_MESH_POINTS]
    for _ in range(icp_iterations):  # rigid ICP of the surface onto the template's mesh points
        closest, _, _ = closest_points_on_mesh(mesh_pts, s * neutral @ r.T + tr, tris)
        r2, _, _ = _similarity_np(closest, mesh_pts)  # rotation only: keep the landmark-derived scale
        t2 = mesh_pts.mean(0) - r2 @ closest.mean(0)
        r, tr = r2 @ r, r2 @ tr + t2
    _, tri_id, bary = closest_points_on_mesh(tmpl, s * neutral @ r.T + tr, tris)
    corners = tris[tri_id]  # [478, 3]
    deltas = np.asarray(identity_deltas, np.float64)
    sampled = np.einsum("vc,svcd->svd", bary, deltas[:, corners, :])  # [S, 478, 3] cm, ICT axes
    sampled = s * sampled @ r.T  # template mm, canonical axes
    flat = sampled.reshape(sampled.shape[0], -1)
    if not deltas_are_modes:
        flat = flat - flat.mean(0)
    _, sv, vt = np.linalg.svd(flat, full_matrices=False)
    k = min(num_modes, vt.shape[0])
    std = sv[:k] if deltas_are_modes else sv[:k] / np.sqrt(max(flat.shape[0] - 1, 1))
    basis = vt[:k].reshape(k, -1, 3)
    return basis.astype(np.float32), std.astype(np.float32)


def load_ict_identity_basis(folder, num_modes: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Read ICT-FaceKit arrays from ``folder`` and build an identity basis (see ``ict_identity_basis``).

    ``folder`` holds ``ict_facekit_deltas.npz`` (neutral, faces, identity_deltas) and ``vertex_indices.json``
    (``idx_to_landmark_verts``).
    """
    folder = Path(folder)
    with np.load(folder / "ict_facekit_deltas.npz") as z:
        neutral, faces, deltas = z["neutral"], z["faces"], z["identity_deltas"]
    with open(folder / "vertex_indices.json") as f:
        landmarks = np.asarray(json.load(f)["idx_to_landmark_verts"])
    return ict_identity_basis(neutral, faces, deltas, landmarks, num_modes)


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


# --------------------------------------------------------------------------------------------------------
# Rotations and camera


def _hat(w: Float[Array, "3"]) -> Float[Array, "3 3"]:
    z = jnp.zeros((), w.dtype)
    return jnp.stack([jnp.stack([z, -w[2], w[1]]), jnp.stack([w[2], z, -w[0]]), jnp.stack([-w[1], w[0], z])])


def rotvec_to_matrix(w: Float[Array, "3"]) -> Rotation:
    """Rodrigues' formula ``exp([w]_x)``, NaN-free with finite gradients at ``w = 0``."""
    theta2 = jnp.sum(w * w)
    small = theta2 < 1e-8
    t2 = jnp.where(small, 1.0, theta2)
    theta = jnp.sqrt(t2)
    a = jnp.where(small, 1.0 - theta2 / 6.0, jnp.sin(theta) / theta)
    b = jnp.where(small, 0.5 - theta2 / 24.0, (1.0 - jnp.cos(theta)) / t2)
    k = _hat(w)
    return jnp.eye(3, dtype=w.dtype) + a * k + b * (k @ k)


def _axis_rotation(angle, axis: int):
    c, s = jnp.cos(angle), jnp.sin(angle)
    o, z = jnp.ones_like(c), jnp.zeros_like(c)
    if axis == 0:
        rows = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == 1:
        rows = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        rows = [[c, -s, z], [s, c, z], [z, z, o]]
    return jnp.stack([jnp.stack(r) for r in rows])


def pose_rotation(yaw: Float[Array, ""], pitch: Float[Array, ""], roll: Float[Array, ""]) -> Rotation:
    """Canonical -> landmark-frame rotation of a head turned by (yaw, pitch, roll) in degrees.

    Head rotation in the canonical frame is ``R_y(yaw) R_x(pitch) R_z(roll)`` (positive yaw turns the nose
    towards image right, positive pitch turns it down, positive roll tilts the top of the head towards image
    left, i.e. counter-clockwise as seen in the image),
    followed by the fixed ``diag(1, -1, -1)`` frame change. Inverse of ``head_pose_degrees``.
    """
    y, p, r = (jnp.deg2rad(jnp.asarray(a, jnp.float32)) for a in (yaw, pitch, roll))
    head = _axis_rotation(y, 1) @ _axis_rotation(p, 0) @ _axis_rotation(r, 2)
    return jnp.asarray(FLIP, head.dtype) @ head


def head_pose_degrees(rotation: Rotation) -> Float[Array, "3"]:
    """(yaw, pitch, roll) in degrees of a canonical -> landmark rotation (see ``pose_rotation``)."""
    h = jnp.asarray(FLIP, rotation.dtype) @ rotation
    yaw = jnp.arctan2(h[0, 2], h[2, 2])
    pitch = jnp.arcsin(jnp.clip(-h[1, 2], -1.0, 1.0))
    roll = jnp.arctan2(h[1, 0], h[1, 1])
    return jnp.rad2deg(jnp.stack([yaw, pitch, roll]))


def similarity_procrustes(
    source: Float[Array, "V 3"], target: Float[Array, "V 3"], weights: Float[Array, " V"]
) -> tuple[Rotation, Float[Array, ""], Float[Array, "3"]]:
    """Weighted Umeyama: the proper rotation R, scale s and translation t minimising
    :math:`\\sum_i w_i \\|s R x_i + t - y_i\\|^2`. Finite (s = 0) when all weights are zero."""
    w = weights / jnp.maximum(jnp.sum(weights), 1e-12)
    mu_s, mu_t = w @ source, w @ target
    xs, xt = source - mu_s[None, :], target - mu_t[None, :]
    cov = (xt * w[:, None]).T @ xs
    u, sv, vt = jnp.linalg.svd(cov)
    d = jnp.where(jnp.linalg.det(u) * jnp.linalg.det(vt) < 0, -1.0, 1.0).astype(source.dtype)
    dvec = jnp.stack([jnp.ones_like(d), jnp.ones_like(d), d])
    r = (u * dvec[None, :]) @ vt
    var = w @ jnp.sum(xs * xs, axis=1)
    s = jnp.sum(sv * dvec) / jnp.maximum(var, 1e-12)
    return r, s, mu_t - s * (r @ mu_s)


# --------------------------------------------------------------------------------------------------------
# Fit


class FitResult(eqx.Module):
    """A morphable-model fit to one face's landmarks (batched results carry a leading batch axis).

    Attributes:
        rotation: f32[3, 3] proper rotation canonical -> landmark frame (contains ``diag(1, -1, -1)``).
        scale: pixels per mm.
        translation: f32[3] pixels.
        identity: f32[K_id] identity coefficients (model units, not whitened).
        expression: f32[K_e] expression coefficients fitted on the input (what neutralisation removes).
        vertices: f32[V, 3] fitted canonical shape (mean + identity + expression), mm.
        projected: f32[V, 3] fitted shape in the landmark frame (pixels, y down, z away).
        residuals: f32[V] per-landmark image-plane (x, y) distance in pixels; 0 where masked.
        rms: rms of ``residuals`` over unmasked points / inter-pupil distance (3D, in pixels).
        interocular: inter-pupil distance of the fit in pixels (3D, so it does not shrink with yaw).
        loss: final value of the robust objective (per unmasked point).
    """

    rotation: Rotation
    scale: Float[Array, ""]
    translation: Float[Array, "3"]
    identity: Float[Array, " Ki"]
    expression: Float[Array, " Ke"]
    vertices: Vertices
    projected: Vertices
    residuals: Float[Array, " V"]
    rms: Float[Array, ""]
    interocular: Float[Array, ""]
    loss: Float[Array, ""]


def to_image(fit: FitResult, canonical_points: Float[Array, "N 3"]) -> Float[Array, "N 3"]:
    """Apply the fitted pose: canonical mm -> landmark frame pixels (``s R x + t``)."""
    return fit.scale * (canonical_points @ fit.rotation.T) + fit.translation[None, :]


def to_image_offsets(fit: FitResult, canonical_offsets: Float[Array, "N 3"]) -> Float[Array, "N 3"]:
    """Rotate and scale displacements (mm, canonical) into pixel displacements in the landmark frame."""
    return fit.scale * (canonical_offsets @ fit.rotation.T)


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Static settings of the fit (hashable).

    Attributes:
        learning_rate: Adam step size (cosine-decayed to 5% over the steps); parameters are scaled so one
            rate suits all (about 0.3 deg, 0.5% scale, 0.5% IOD and 0.02 prior std per step at the start).
        depth_weight: weight of the z residuals relative to x, y (FaceMesh depth is less reliable).
        noise: landmark noise std as a fraction of the inter-pupil distance; sets the data-vs-prior balance.
        robust_scale: pseudo-Huber threshold as a fraction of the inter-pupil distance: residuals beyond it
            count linearly (outlier landmarks, occlusions).
        init_iterations: Procrustes / ridge alternations of the closed-form initialisation.
        unroll: ``lax.scan`` unroll factor of the Adam loop (a CPU speed knob; same result).
    """

    learning_rate: float = 0.02
    depth_weight: float = 0.5
    noise: float = 0.02
    robust_scale: float = 0.05
    init_iterations: int = 2
    unroll: int = 1


class _Params(eqx.Module):
    rotvec: Float[Array, "3"]
    log_scale: Float[Array, ""]
    shift: Float[Array, "3"]
    identity: Float[Array, " Ki"]  # whitened: coefficient / std
    expression: Float[Array, " Ke"]


_UNITS = {"rotvec": 0.25, "log_scale": 0.25, "shift": 0.25, "identity": 1.0, "expression": 1.0}


class _Frame(eqx.Module):
    """Closed-form initial pose the Adam parameters are relative to."""

    rotation: Rotation
    scale: Float[Array, ""]
    translation: Float[Array, "3"]
    iod: Float[Array, ""]


def _decode(p: _Params, frame: _Frame, model: MorphableModel):
    rotation = frame.rotation @ rotvec_to_matrix(_UNITS["rotvec"] * p.rotvec)
    scale = frame.scale * jnp.exp(_UNITS["log_scale"] * p.log_scale)
    translation = frame.translation + frame.iod * _UNITS["shift"] * p.shift
    identity = model.identity_std * p.identity
    expression = model.expression_std * p.expression
    return rotation, scale, translation, identity, expression


def _objective(
    p: _Params, frame: _Frame, model: MorphableModel, landmarks, weights, config: FitConfig
) -> Float[Array, ""]:
    """Robust negative log posterior per unmasked point.

    :math:`\\frac{1}{\\sum_i w_i}\\Big[\\sum_i w_i \\frac{\\rho(\\|D(sRx_i+t-y_i)\\|/d)}{2\\sigma^2}
    + \\tfrac12\\|\\alpha/\\sigma_\\alpha\\|^2 + \\tfrac12\\|\\epsilon/\\sigma_\\epsilon\\|^2\\Big]`, with
    :math:`\\rho(u) = 2c^2(\\sqrt{1+u^2/c^2}-1)` (pseudo-Huber, ~u^2 for small u), ``D = diag(1, 1,
    sqrt(depth_weight))``, ``d`` the initial inter-pupil distance in pixels and ``sigma = noise``.
    """
    rotation, scale, translation, identity, expression = _decode(p, frame, model)
    x = model.shape(identity, expression)
    proj = scale * (x @ rotation.T) + translation[None, :]
    dw = jnp.asarray([1.0, 1.0, np.sqrt(config.depth_weight)], proj.dtype)
    r = (proj - landmarks) * dw[None, :] / frame.iod
    u2 = jnp.sum(r * r, axis=1)
    c2 = config.robust_scale**2
    rho = 2.0 * c2 * (jnp.sqrt(1.0 + u2 / c2) - 1.0)
    data = jnp.sum(weights * rho) / (2.0 * config.noise**2)
    prior = 0.5 * (jnp.sum(p.identity**2) + jnp.sum(p.expression**2))
    return (data + prior) / jnp.maximum(jnp.sum(weights), 1.0)


def _ridge_coefficients(model, rotation, scale, translation, iod, landmarks, weights, config):
    """Whitened identity+expression coefficients minimising the quadratic objective at a fixed pose."""
    if model.num_identity + model.num_expression == 0:
        return jnp.zeros(0, landmarks.dtype), jnp.zeros(0, landmarks.dtype)
    basis = jnp.concatenate([model.identity_basis, model.expression_basis], axis=0)
    std = jnp.concatenate([model.identity_std, model.expression_std])
    dw = jnp.asarray([1.0, 1.0, np.sqrt(config.depth_weight)], landmarks.dtype)
    sw = jnp.sqrt(weights)[:, None] * dw[None, :] / (iod * config.noise)  # [V, 3]
    a = scale * jnp.einsum("kvb,ab->kva", basis, rotation) * std[:, None, None]
    a = (a * sw[None]).reshape(basis.shape[0], -1)  # [K, 3V]
    y = ((landmarks - scale * (model.mean @ rotation.T) - translation[None, :]) * sw).reshape(-1)
    lhs = a @ a.T + jnp.eye(a.shape[0], dtype=a.dtype)
    z = jnp.linalg.solve(lhs, a @ y)
    return z[: model.num_identity], z[model.num_identity :]


def _initialise(model: MorphableModel, landmarks, weights, config: FitConfig):
    """Procrustes of the mean, then ``init_iterations`` x (ridge coefficients, Procrustes of the shape)."""
    zi = jnp.zeros(model.num_identity, landmarks.dtype)
    ze = jnp.zeros(model.num_expression, landmarks.dtype)
    x = model.mean
    rotation, scale, translation = similarity_procrustes(x, landmarks, weights)
    for _ in range(config.init_iterations):
        iod = jnp.maximum(scale * topo.IPD_MM, 1e-3)
        zi, ze = _ridge_coefficients(model, rotation, scale, translation, iod, landmarks, weights, config)
        if model.expression_nonnegative:
            ze = jnp.maximum(ze, 0.0)
        x = model.shape(model.identity_std * zi, model.expression_std * ze)
        rotation, scale, translation = similarity_procrustes(x, landmarks, weights)
    iod = jnp.maximum(scale * topo.IPD_MM, 1e-3)
    return _Frame(rotation, scale, translation, iod), zi, ze


def fit_morphable_model(
    landmarks: Landmarks,
    model: MorphableModel,
    mask: Float[Array, " 478"] | None = None,
    *,
    steps: int = 200,
    config: FitConfig = FitConfig(),
) -> FitResult:
    """Fit pose, identity and expression of ``model`` to one face's FaceMesh landmarks.

    Closed-form start (weighted 3D similarity Procrustes alternated with a ridge solve of the whitened
    coefficients), then ``steps`` Adam steps (``lax.scan``) on the robust objective of ``_objective``.
    Pure and jit/vmap compatible; ``steps`` and ``config`` are static. Masked points (``mask == 0``) may hold
    NaN; with everything masked the result is finite (and meaningless: check ``rms`` / the mask).

    Args:
        landmarks: f32[478, 3] in pixels (x, y, z*W; y down, z away from the camera).
        model: the morphable model (any K_id, K_e, including 0).
        mask: f32[478] in {0, 1} (or soft weights); None means all points.
        steps: Adam steps (static).
        config: static settings.
    """
    landmarks = jnp.asarray(landmarks)
    weights = (
        jnp.ones(landmarks.shape[0], landmarks.dtype) if mask is None else jnp.asarray(mask, landmarks.dtype)
    )
    valid = weights > 0
    landmarks = jnp.where(valid[:, None], landmarks, 0.0)
    weights = jnp.where(valid, weights, 0.0)
    landmarks = jax.lax.stop_gradient(landmarks)

    frame, zi, ze = _initialise(model, landmarks, weights, config)
    frame = jax.lax.stop_gradient(frame)
    dt = landmarks.dtype
    params = _Params(jnp.zeros(3, dt), jnp.zeros((), dt), jnp.zeros(3, dt), zi, ze)
    params = jax.lax.stop_gradient(params)

    schedule = optax.cosine_decay_schedule(config.learning_rate, max(steps, 1), alpha=0.05)
    optimiser = optax.adam(schedule)
    value_and_grad = jax.value_and_grad(_objective)

    def step(carry, _):
        p, state = carry
        _, g = value_and_grad(p, frame, model, landmarks, weights, config)
        updates, state = optimiser.update(g, state, p)
        p = optax.apply_updates(p, updates)
        if model.expression_nonnegative:  # projected gradient: activations stay >= 0
            p = eqx.tree_at(lambda q: q.expression, p, jnp.maximum(p.expression, 0.0))
        return (p, state), None

    init = (params, optimiser.init(params))
    (params, _), _ = jax.lax.scan(step, init, None, length=steps, unroll=config.unroll)
    loss = _objective(params, frame, model, landmarks, weights, config)

    rotation, scale, translation, identity, expression = _decode(params, frame, model)
    vertices = model.shape(identity, expression)
    projected = scale * (vertices @ rotation.T) + translation[None, :]
    res = jnp.where(valid, jnp.linalg.norm(projected[:, :2] - landmarks[:, :2], axis=1), 0.0)
    iod = scale * jnp.linalg.norm(vertices[topo.LEFT_PUPIL] - vertices[topo.RIGHT_PUPIL])
    rms = jnp.sqrt(jnp.sum(weights * res**2) / jnp.maximum(jnp.sum(weights), 1e-6)) / jnp.maximum(iod, 1e-6)
    return FitResult(
        rotation, scale, translation, identity, expression, vertices, projected, res, rms, iod, loss
    )


@functools.partial(jax.jit, static_argnames=("steps", "config"))
def fit_morphable_model_batch(
    landmarks: Float[Array, "B 478 3"],
    model: MorphableModel,
    mask: Float[Array, "B 478"] | None = None,
    *,
    steps: int = 200,
    config: FitConfig = FitConfig(),
) -> FitResult:
    """``jit(vmap(fit_morphable_model))`` over a batch of faces; one shared model."""
    fit = functools.partial(fit_morphable_model, model=model, steps=steps, config=config)
    if mask is None:
        return jax.vmap(lambda lm: fit(lm))(landmarks)
    return jax.vmap(lambda lm, m: fit(lm, mask=m))(landmarks, mask)
