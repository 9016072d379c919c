"""Geometric routines, one home each: similarity fits (NumPy and JAX), closest points on a triangle mesh.

Every similarity fit here takes ``(source, target, weights)`` and returns ``(rotation, scale,
translation)`` with :math:`\\mathrm{target} \\approx s R\\, \\mathrm{source} + t`.
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._types import Rotation


def similarity_fit(
    source: np.ndarray, target: np.ndarray, weights: np.ndarray | None = None, *, scale: bool = True
) -> tuple[np.ndarray, float, np.ndarray]:
    """Weighted Umeyama fit (NumPy, float64): the proper rotation R, scale s and translation t minimising
    :math:`\\sum_i w_i \\|s R x_i + t - y_i\\|^2`.

    Args:
        source: f[P, 3] points x.
        target: f[P, 3] points y.
        weights: f[P] non-negative weights (default ones).
        scale: fit the scale; False fixes s = 1 (a rigid fit).

    Returns:
        (R f64[3, 3] with det +1, s, t f64[3]). A reflection is never returned: when the best orthogonal
        map is one, the smallest singular direction is flipped (Umeyama 1991).
    """
    x, y = np.asarray(source, np.float64), np.asarray(target, np.float64)
    w = np.ones(x.shape[0]) if weights is None else np.asarray(weights, np.float64)
    w = w / max(float(w.sum()), 1e-300)
    mx, my = w @ x, w @ y
    xc, yc = x - mx, y - my
    u, sv, vt = np.linalg.svd((yc * w[:, None]).T @ xc)
    flip = np.array([1.0, 1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    r = (u * flip) @ vt
    s = float((sv * flip).sum() / max(float(w @ (xc * xc).sum(1)), 1e-300)) if scale else 1.0
    return r, s, my - s * r @ mx


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
    """Weighted Umeyama in JAX (jit/vmap-able), the twin of ``similarity_fit``: same arguments, same
    ``(R, s, t)`` result. Finite (s = 0) when all weights are zero."""
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
