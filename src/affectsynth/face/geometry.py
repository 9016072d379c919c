"""Geometric routines shared by the importers and the fit: similarity fits, closest points on a mesh."""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._types import Rotation

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
