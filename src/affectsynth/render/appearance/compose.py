"""``apply_appearance``: every enabled cue in order, on one crop."""

import jax.numpy as jnp
import numpy as np

from ..._types import Image
from ...face import topology as topo
from ..raster import interpolate
from ._draw import _paste, _window_size, _windowed
from .context import SKIN, SKIRT, AppearanceContext, AppearanceOptions
from .eyes import _eye_layer
from .mouth import mouth_interior
from .shading import shading_log_ratio
from .wrinkles import sample_wrinkle_texture, wrinkle_texture

# --------------------------------------------------------------------------------------------------------

CREASE_TINT = np.array([0.75, 1.05, 1.25], np.float32)
"""Per-channel (R, G, B) share of a wrinkle's darkening (log-luminance; Rec. 709 weighted mean 1.0). Light
that reaches the bottom of a skin fold has scattered through more skin and blood, so a crease is a deeper,
more saturated tone of the skin; darkened equally in R, G and B the sadness folds read as pale grey stripes
on the London faces. The lit edges (positive parts) stay neutral."""


def apply_appearance(
    render: Image,
    patch: Image,
    frags,
    ctx: AppearanceContext,
    options: AppearanceOptions = AppearanceOptions(),
) -> tuple[Image, dict]:
    r"""Add the expression's appearance cues to a geometry-only render.

    ``render`` is the photo's texture on the deformed mesh (what ``frags`` rasterised), ``patch`` the photo
    crop. Multiplicative cues act in log-luminance on skin pixels:
    :math:`I'_c = I_c \exp(\gamma (\log r_{shade} + \delta_{wrinkle} + (t_c - 1) \min(\delta_{wrinkle}, 0)))`,
    :math:`\gamma` = ``options.strength``, :math:`t` = ``CREASE_TINT``;
    then the eye layer and the mouth interior are composited with soft masks. ``options`` is static.

    Returns:
        (image f32[H, W, 3], diagnostics: ``log_ratio`` f32[H, W], ``wrinkles`` f32[H, W], ``lighting``
        f32[9], ``mouth_alpha`` f32[H, W], ``mouth_opening`` f32[] (added inner-lip area, px),
        ``eye_closure`` f32[2] (right, left), ``painted_deep`` f32[H, W] (where the mouth interior is painted
        well inside its contour) and ``source_shift`` f32[H, W, 2] (pixels; along a closing lip seam): how
        the warp's source positions change under the mouth's paint, ``pipeline._painted_sources``).
    """
    h, w = render.shape[:2]
    covered = frags.triangle_id >= 0
    group = ctx.groups[jnp.maximum(frags.triangle_id, 0)]
    skin = covered & ((group == SKIN) | (group == SKIRT))
    zeros = jnp.zeros((h, w), render.dtype)
    out = render
    diag = {
        "log_ratio": zeros,
        "wrinkles": zeros,
        "lighting": jnp.zeros(9, render.dtype),
        "mouth_alpha": zeros,
        "mouth_opening": jnp.zeros((), render.dtype),
        "painted_deep": zeros,
        "source_shift": jnp.zeros((h, w, 2), render.dtype),
        "eye_closure": jnp.zeros(2, render.dtype),
    }
    t = topo.face_topology()
    if options.eyes:
        closures = []
        for side in ("right", "left"):
            centre = jnp.mean(ctx.target_landmarks[t.region(f"{side}_eye_hole"), :2], axis=0)
            full = out

            def eye(sub, sub_xy, side=side, full=full):
                return _eye_layer(sub, patch, ctx, sub_xy, side, source=full)

            out, closure = _windowed(eye, out, centre, _window_size(h, w, options.eye_window))
            closures.append(closure)
        diag["eye_closure"] = jnp.stack(closures)
    log_gain = zeros
    if options.shading or options.wrinkles:  # one interpolation pass for both cues
        attrs = [ctx.surface]
        if options.shading:
            lr_v, coeffs = shading_log_ratio(patch, ctx)
            attrs.append(lr_v[:, None])
            diag["lighting"] = coeffs
        per_pixel = interpolate(frags, jnp.concatenate(attrs, axis=1))
    if options.shading:
        lr = jnp.where(skin, per_pixel[..., 2], 0.0)
        diag["log_ratio"] = lr
        log_gain = log_gain + lr
    if options.wrinkles:
        mm_per_px = topo.IPD_MM / jnp.maximum(ctx.interocular, 1.0)
        texture = wrinkle_texture(ctx.au, mm_per_px)
        wd = jnp.where(skin, sample_wrinkle_texture(texture, per_pixel[..., :2]), 0.0)
        diag["wrinkles"] = wd
        log_gain = log_gain + wd
    if options.shading or options.wrinkles:
        shade = jnp.exp(options.strength * log_gain)
        if not options.wrinkles:
            out = out * shade[..., None]
        else:  # a crease is a shadow of the skin's own colour: redder, not greyer; exp(s (t_c - 1) d) to
            # first order (its argument stays under 0.1), folded into one per-pixel factor: one exp per pixel
            crease = shade * (options.strength * jnp.minimum(diag["wrinkles"], 0.0))
            out = out * (shade[..., None] + crease[..., None] * (CREASE_TINT - 1.0)[None, None, :])
    if options.mouth_interior:
        centre = jnp.mean(ctx.target_landmarks[t.region("mouth_hole"), :2], axis=0)
        size = _window_size(h, w, options.mouth_window)

        def mouth(sub, sub_xy):
            painted, alpha, opening, resample = mouth_interior(sub, patch, ctx, sub_xy)
            return painted, (alpha, opening, resample)

        out, (alpha_win, opening, (deep_win, shift_win)) = _windowed(mouth, out, centre, size)
        alpha = jnp.where(covered, _paste(zeros, alpha_win, centre, size), 0.0)
        out = jnp.where(covered[..., None], out, render)
        diag["mouth_alpha"], diag["mouth_opening"] = alpha, opening
        resample = jnp.concatenate([deep_win[..., None], shift_win], axis=-1)
        resample = _paste(jnp.zeros((h, w, 3), render.dtype), resample, centre, size)
        resample = jnp.where(covered[..., None], resample, 0.0)  # uncovered: the warp is not used
        diag["painted_deep"], diag["source_shift"] = resample[..., 0], resample[..., 1:]
    return jnp.clip(out, 0.0, 1.0), diag
