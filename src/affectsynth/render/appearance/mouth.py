"""The mouth interior: a lit cavity, teeth and tongue where the lips part wider than in the photo."""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._types import Image
from ...face import topology as topo
from ..raster import sample_bilinear
from ._draw import (
    _au,
    _band,
    _gauss,
    _luminance,
    _polygon_area,
    _polygon_sdf,
    _polyline_distance,
    _smoothstep,
)
from .context import AppearanceContext

# --------------------------------------------------------------------------------------------------------
# 3. mouth interior


def mouth_interior(
    render: Image, patch: Image, ctx: AppearanceContext, xy: Float[Array, "H W 2"]
) -> tuple[Image, Float[Array, "H W"], Float[Array, ""]]:
    """Paint a lit cavity, upper (and for wide openings lower) teeth and a tongue hint into the new opening.

    Weighted by the fraction of the target's inner-lip area that is new, so an opening the photo already
    has keeps its own pixels and lips that close again give back exactly the photo's lips. Soft masks from
    distances to the inner lip contours; colours from this photo's lips and skin.

    Returns:
        (image, alpha f32[H, W] of the painted interior, added opening area in pixels).
    """
    t = topo.face_topology()
    hole = jnp.asarray(t.region("mouth_hole"))
    upper = jnp.asarray(t.region("lips_inner_upper"))
    lower = jnp.asarray(t.region("lips_inner_lower"))
    src = ctx.landmarks[:, :2]
    dst = ctx.target_landmarks[:, :2]
    s = ctx.interocular
    mm = s / topo.IPD_MM  # pixels per mm
    a_src = _polygon_area(src[hole])
    a_dst = _polygon_area(dst[hole])
    newness = _smoothstep(jnp.clip((a_dst - a_src) / jnp.maximum(a_dst, 1e-3), 0.0, 1.0) / 0.6)
    c0, c1 = dst[upper[0]], dst[upper[-1]]
    width = jnp.linalg.norm(c1 - c0) + 1e-3
    ex = (c1 - c0) / width
    h_open = a_dst / width * 1.5  # mean opening height -> approximate mid height

    sdf = _polygon_sdf(xy, dst[hole])
    d_up = _polyline_distance(xy, dst[upper])
    d_lo = _polyline_distance(xy, dst[lower])
    feather = jnp.clip(0.15 * h_open, 0.6, 3.0)
    inside = _smoothstep(-sdf / feather + 0.5)
    alpha = newness * inside

    along = (xy - 0.5 * (c0 + c1)[None, None, :]) @ ex
    u = jnp.clip(along / (0.5 * width), -1.5, 1.5)
    x_mm = along / mm
    local_h = d_up + d_lo + 1e-3
    v = d_up / local_h

    lip_idx = jnp.asarray(t.region("lips"))
    lip_rgb = jnp.mean(sample_bilinear(patch, src[lip_idx]), axis=0)
    skin_idx = jnp.asarray(np.concatenate([t.region("right_cheek"), t.region("left_cheek")]))
    skin_rgb = jnp.mean(sample_bilinear(patch, src[skin_idx]), axis=0)
    skin_l = _luminance(skin_rgb)
    tint = (skin_rgb / jnp.maximum(jnp.mean(skin_rgb), 1e-3)) ** 0.25

    # cavity: darkest in the middle and at the corners, warm light bounced from the lips near the edges
    edge = jnp.minimum(d_up, d_lo)
    near_lip = jnp.exp(-edge / (0.25 * local_h + 1.0))
    corner_dark = 1.0 - 0.5 * jnp.clip(jnp.abs(u), 0.0, 1.0) ** 2
    cavity = lip_rgb[None, None, :] * (0.10 + 0.22 * near_lip[..., None]) * corner_dark[..., None]

    # teeth are lit like the eye whites (albedo independent of skin tone): sample the sclera between each
    # pupil and its eye corners; the skin only sets a floor when the eyes are shadowed or closed
    pupils = src[jnp.array([topo.RIGHT_PUPIL, topo.RIGHT_PUPIL, topo.LEFT_PUPIL, topo.LEFT_PUPIL])]
    corners = src[jnp.array([33, 133, 362, 263])]
    sclera = _luminance(sample_bilinear(patch, 0.5 * pupils + 0.5 * corners))
    exposure = jnp.clip(jnp.maximum(jnp.mean(sclera) / 0.7, skin_l / 0.6), 0.35, 1.2)
    teeth_rgb = jnp.clip(jnp.array([0.93, 0.90, 0.83]) * tint * exposure, 0.0, 0.95)
    gaps = jnp.zeros_like(x_mm)
    for g in (0.0, 8.5, 15.0, 22.0):
        gaps += _gauss(jnp.abs(x_mm) - g, 0.35)
    tooth_shade = (1.0 - 0.6 * jnp.clip(jnp.abs(u), 0.0, 1.0) ** 2) * (1.0 - 0.15 * jnp.minimum(gaps, 1.0))

    # upper teeth: a band under the upper lip that fills most of a smile's gap (real smiles show ~10 mm of
    # incisor crown), incisal edge following the smile arc; dark cavity only at the corners and, in wide
    # openings, between the upper and the lower teeth
    # how much of the gap: a smile (AU12, AU10 lift the upper lip off the teeth) shows mostly teeth, a
    # dropped jaw alone (surprise) mostly the dark cavity
    smile = jnp.clip(_au(ctx, "AU12") + _au(ctx, "AU10"), 0.0, 1.0)
    wide = _smoothstep((h_open / mm - 6.0) / 10.0)
    h_up = jnp.minimum(10.0 * mm * (1.0 - 0.3 * u * u), (0.3 + 0.55 * smile - 0.2 * wide) * local_h)
    soft = jnp.maximum(0.8, 0.08 * h_up)
    m_up = _smoothstep((h_up - d_up) / soft) * _band(jnp.abs(u), 0.0, 0.85, 0.12)
    lip_shadow = 0.72 + 0.28 * _smoothstep(d_up / (0.35 * h_up + 1.0))
    up_rgb = teeth_rgb[None, None, :] * (tooth_shade * lip_shadow)[..., None]
    # lower teeth from openings of about 6 mm (fully by 16 mm), behind the lower lip
    h_lo = jnp.minimum(6.0 * mm * (1.0 - 0.4 * u * u), 0.25 * local_h)
    m_lo = wide * _smoothstep((h_lo - d_lo) / soft) * _band(jnp.abs(u), 0.0, 0.65, 0.12)
    lo_rgb = teeth_rgb[None, None, :] * (0.72 * tooth_shade)[..., None]
    tongue_m = (
        _smoothstep((h_open / mm - 14.0) / 8.0)
        * jnp.exp(-jnp.square(u / 0.5))
        * _smoothstep((v - 0.55) / 0.3)
    )
    tongue_rgb = (lip_rgb * jnp.array([1.0, 0.72, 0.72]) * 0.7)[None, None, :]

    col = cavity
    col = col * (1 - tongue_m[..., None]) + tongue_rgb * tongue_m[..., None]
    col = col * (1 - m_lo[..., None]) + lo_rgb * m_lo[..., None]
    col = col * (1 - m_up[..., None]) + up_rgb * m_up[..., None]
    out = render * (1 - alpha[..., None]) + col * alpha[..., None]
    opening = jnp.maximum(a_dst - a_src, 0.0)
    return out, alpha, opening
