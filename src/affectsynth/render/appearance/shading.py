"""Shading: a lighting estimate from the photo and the shading ratio of the deformed surface."""

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._types import Image
from ..raster import sample_bilinear
from ._draw import _face_normals, _luminance, _sh9, _smoothstep, _vertex_normals
from .context import SHADING_CLIP, SKIN, AppearanceContext

# --------------------------------------------------------------------------------------------------------
# 1. shading


def fit_sh_lighting(
    luminance: Float[Array, " N"],
    normals: Float[Array, "N 3"],
    weights: Float[Array, " N"],
    ridge: float = 1e-3,
) -> Float[Array, "9"]:
    r"""Second-order spherical-harmonic lighting from a photo's luminance and surface normals.

    Weighted ridge least squares (albedo folded into the coefficients):
    :math:`\min_c \sum_i w_i (Y(n_i)^\top c - L_i)^2 + \rho \sum_i w_i \|c_{1:}\|^2`.
    """
    a = _sh9(normals)
    aw = a * weights[:, None]
    total = jnp.sum(weights) + 1e-6
    reg = ridge * total * jnp.concatenate([jnp.array([1e-3]), jnp.ones(8)]).astype(a.dtype) + 1e-9
    return jnp.linalg.solve(aw.T @ a + jnp.diag(reg), aw.T @ luminance)


def shading_log_ratio(patch: Image, ctx: AppearanceContext) -> tuple[Float[Array, " Vd"], Float[Array, "9"]]:
    r"""Per-vertex log shading ratio :math:`\log \mathrm{clip}(s(n_{def}) / s(n_{neu}))`, and the lighting.

    Lighting :math:`s(n) = Y(n)^\top c` is fitted to the photo's luminance at the skin vertices against their
    neutral normals (``fit_sh_lighting``). Per vertex, then interpolated per pixel (Gouraud): smooth, no
    facets, and cheap (the fit sees a few thousand samples, not every pixel). Exactly 0 at a vertex whose
    1-ring did not move. Vertices of the hole fills and the skirt get 0.
    """
    n_src = _vertex_normals(ctx.src_vertices, ctx.triangles)
    n_dst = _vertex_normals(ctx.dst_vertices, ctx.triangles)
    num = ctx.src_vertices.shape[0]
    other = jnp.zeros(num, bool).at[ctx.triangles.reshape(-1)].max(jnp.repeat(ctx.groups != SKIN, 3))
    lum = _luminance(sample_bilinear(patch, ctx.src_vertices[:, :2]))
    w = (~other & (lum > 0.06) & (lum < 0.97) & (n_src[:, 2] > 0.2)).astype(patch.dtype)
    coeffs = fit_sh_lighting(lum, n_src, w)
    floor = 0.05 * (jnp.sum(lum * w) / (jnp.sum(w) + 1e-6)) + 1e-4
    s_src = jnp.maximum(_sh9(n_src) @ coeffs, floor)
    s_dst = jnp.maximum(_sh9(n_dst) @ coeffs, floor)
    log_ratio = jnp.log(jnp.clip(s_dst / s_src, *SHADING_CLIP))
    return jnp.where(other, 0.0, log_ratio * _unfolded(ctx)), coeffs


FOLD_SHRINK = 0.25
"""Image-plane area ratio (deformed / neutral) of a triangle under which its normal is not trusted for
shading: ``_unfolded`` fades the ratio's vertices to no shading change from here to a flat or folded one."""


def _unfolded(ctx: AppearanceContext) -> Float[Array, " Vd"]:
    """How far each vertex's shading ratio can be trusted (0..1): the smallest over its triangles of how far
    the triangle is from collapsing in the image (``FOLD_SHRINK``). Where the deformation folds the skin over
    itself (sadness's lip corners pulled down against the chin pushed up: up to 40 of 3880 triangles turn
    over on London faces), the folded triangles' normals point anywhere, and their vertices' shading drew
    dotted dark lines from the lip corners, the rasteriser picking the folded layer pixel by pixel."""
    tri = ctx.triangles
    # twice the triangles' signed areas in the image plane
    a_src, a_dst = (_face_normals(v, tri)[:, 2] for v in (ctx.src_vertices, ctx.dst_vertices))
    ok = jnp.abs(a_src) > 1e-6
    trust = jnp.where(ok, _smoothstep(a_dst / jnp.where(ok, a_src, 1.0) / FOLD_SHRINK), 1.0)
    num = ctx.src_vertices.shape[0]
    return jnp.ones(num, trust.dtype).at[tri.reshape(-1)].min(jnp.repeat(trust, 3))
