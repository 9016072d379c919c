"""Eyes: lids that slide over a static eye instead of squeezing the iris."""

import jax.numpy as jnp

from ..._types import Image
from ...face import topology as topo
from ..raster import sample_bilinear
from ._draw import _gauss, _polygon_area, _polygon_sdf, _polyline_distance, _smoothstep
from .context import AppearanceContext

# --------------------------------------------------------------------------------------------------------
# 4. eyes

LID_MARGIN = 0.04
"""Width of the lid margin inside the eye contour (inter-pupil distances) that moves with the lid."""


def _eye_layer(
    render: Image, patch: Image, ctx: AppearanceContext, xy, side: str, source: Image | None = None
):
    """Eye content static under moving lids; lid skin over a nearly closed eye. ``source``: full render."""
    source = render if source is None else source
    t = topo.face_topology()
    hole = jnp.asarray(t.region(f"{side}_eye_hole"))
    lower = jnp.asarray(t.region(f"{side}_eye_lower"))
    upper = jnp.asarray(t.region(f"{side}_eye_upper"))
    brow = jnp.asarray(t.region(f"{side}_brow"))
    pupil = topo.RIGHT_PUPIL if side == "right" else topo.LEFT_PUPIL
    src = ctx.landmarks[:, :2]
    dst = ctx.target_landmarks[:, :2]
    s = ctx.interocular
    a_src = _polygon_area(src[hole])
    a_dst = _polygon_area(dst[hole])
    closure = jnp.clip(1.0 - a_dst / jnp.maximum(a_src, 1e-3), 0.0, 1.0)
    sdf_dst = _polygon_sdf(xy, dst[hole])
    # static eye: the eyeball moves with the eye as a whole (pupil landmark), lids move over it. The lid
    # margin (lash line, lid shadow: a band just inside the contour) belongs to the lid, so the static copy
    # keeps out of it in the photo and in the target: a copy reaching the old contour left the old lash line
    # in place, and FaceMesh re-detected 0.5 of the lids' motion (0.96 on the plain warp; now 0.8)
    margin = LID_MARGIN * s * (1.0 - closure)  # a closing eye has no room for it (its lid skin covers)
    shift = dst[pupil] - src[pupil]
    q = xy - shift[None, None, :]
    sdf_src = _polygon_sdf(q, src[hole])
    static_w = _smoothstep(0.5 - (sdf_dst + margin) / 1.5) * _smoothstep(0.5 - (sdf_src + margin) / 1.5)
    out = jnp.where(
        static_w[..., None] > 0,
        render * (1 - static_w[..., None]) + sample_bilinear(patch, q) * static_w[..., None],
        render,
    )
    # nearly closed: lid skin (sampled above the lid margin) covers the last sliver, lashes at the seam
    up_dir = jnp.mean(dst[brow], axis=0) - jnp.mean(dst[hole], axis=0)
    up_dir = up_dir / jnp.maximum(jnp.linalg.norm(up_dir), 1e-6)
    d_up = _polyline_distance(xy, dst[upper])
    lid_xy = xy + up_dir[None, None, :] * (d_up + 0.07 * s)[..., None]
    cover = _smoothstep((closure - 0.45) / 0.45)
    w = cover * _smoothstep(0.5 - sdf_dst / 1.5)
    out = out * (1 - w[..., None]) + sample_bilinear(source, lid_xy) * w[..., None]
    d_lo = _polyline_distance(xy, dst[lower])
    lash = (
        cover
        * _gauss(d_lo, jnp.maximum(0.8, 0.012 * s))
        * _smoothstep(1.0 - jnp.maximum(sdf_dst, 0.0) / (0.03 * s + 1.0))
    )
    out = out * jnp.exp(-0.5 * lash)[..., None]
    return out, closure
