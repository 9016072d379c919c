"""The whole synthesis: fit -> V-A deformation -> render with the photo's texture -> Poisson blend.

``synthesize_item`` is the per-item stage, in order: ``_crop_window`` (a static-size crop around the face,
its size chosen on the host from the landmarks and bucketed to multiples of 64 px so recompilation is
bounded; an edge-padded copy when the face fills the photo), ``fit_morphable_model``,
``_target_deformation`` minus ``_neutral_offsets`` (the input's own expression), its lids' closing rescaled
to the face's own opening (``lids.lid_share``), ``_warped_mesh`` (with the skirt over which the edit fades
out), rasterise + texture transfer, ``apply_appearance``, ``_composite`` (Poisson or alpha blend), paste
back. ``synthesize_batch`` is ``jit(vmap(synthesize_item))`` over a batch
of same-size images inside a caller's ``jit``; on concrete arrays it takes the working-crop path
(``working``: ``_edit_patch`` on fixed-size crops, one program kept on disk). Pixels outside the face's
render mask are the input's, bit for bit.
"""

import dataclasses
import functools
import math
import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._smooth import smoothstep
from .affect.grid import class_index
from .affect.lip_contact import press_lips
from .affect.model import (
    AffectModel,
    class_action_units,
    class_deformation,
    class_label,
    sample_deformation,
)
from .errors import OptionsError, TargetError
from .face import topology as topo
from .face.fit import fit_morphable_model, to_image_offsets
from .face.morphable import expression_offsets
from .lids import lid_share
from .render.appearance.compose import apply_appearance
from .render.appearance.context import (
    EYE,
    MOUTH,
    SKIN,
    SKIRT,
    AppearanceContext,
    AppearanceOptions,
    dense_template,
    named_action_units,
)
from .render.poisson import poisson_blend
from .render.raster import interpolate, rasterize, sample_bilinear
from .resting import gaussian_fade, level_corners, mouth_coordinates, relax_smile, unturn_corners

CROP_BUCKET = 64
BLENDS = ("poisson", "alpha")
MAX_SUBDIVISION = 3
"""Each level multiplies the render mesh's ~1,000 triangles by 4 (3 levels: ~64k)."""


@dataclasses.dataclass(frozen=True)
class SynthesisOptions:
    """Static settings of ``synthesize_batch`` (hashable; changing one recompiles).

    Attributes:
        neutralize: remove the expression fitted on the input before adding the target's, so a smiling input
            does not end up smiling twice.
        neutral_tolerance: scale of the model's per-mode resting allowance (``AffectModel.
            resting_expression``): fitted activations up to it are the person's resting face (neutral mouths
            are fitted with AU23, AU26, AU17 ... to explain lip shape) and are kept; only the excess is
            removed. 1 keeps everything 48 neutral London photos showed; 0 removes every activation.
        interpolate: blend neighbouring V-A class means bilinearly (smooth in V-A; needed for animations).
            False applies the target class's mean exactly as the paper does.
        sample: draw a varied expression of the target's class instead of its mean (needs ``key``).
        strength: scale of the applied deformation (1 = the model's), in [0, 2].
        subdivision: midpoint subdivisions of the render mesh (each x4 triangles), 0..3.
        fit_steps: optimiser steps of the morphable-model fit, at least 1.
        skirt: width of the ring beyond the face contour over which the deformation fades to zero, as a
            fraction of the face's radius, in (0, 2]; the photo outside the ring is untouched.
        mouth_interior: paint a cavity (and a hint of teeth) where the lips part wider than in the photo
            (shorthand for ``appearance.mouth_interior`` when ``appearance`` is None).
        appearance: which expression-appearance cues to draw (shading, wrinkles, mouth interior, eyes);
            None: all on, with ``mouth_interior`` as given.
        blend: "poisson" (gradient-domain blend into the photo) or "alpha" (feathered paste).
        work_size: side (px) of the square working crop each face is resampled into, a multiple of 32 in
            128..4096. The compiled program's shapes depend on it and the batch size only, never on the
            photo; a face needing more room is downsampled into it, a smaller one is processed at its own
            scale, and the edit is carried back to the photo at full resolution (``synthesize_batch``).

    Raises:
        OptionsError: a field outside its range (exit code 2 in the CLI), e.g. ``blend="Poisson"``.
    """

    neutralize: bool = True
    neutral_tolerance: float = 1.0
    interpolate: bool = True
    sample: bool = False
    strength: float = 1.0
    subdivision: int = 1
    fit_steps: int = 60
    skirt: float = 0.35
    mouth_interior: bool = True
    appearance: AppearanceOptions | None = None
    blend: str = "poisson"
    work_size: int = 512

    def __post_init__(self):
        """Reject a bad setting here, with a one-line ``OptionsError``, not deep inside a traced function."""
        for name in ("neutralize", "interpolate", "sample", "mouth_interior"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                _bad(name, "must be True or False", getattr(self, name))
        _check_real("neutral_tolerance", self.neutral_tolerance, 0.0, math.inf)
        _check_real("strength", self.strength, 0.0, 2.0)
        _check_real("skirt", self.skirt, 0.0, 2.0, low_open=True)
        _check_int("subdivision", self.subdivision, 0, MAX_SUBDIVISION)
        _check_int("fit_steps", self.fit_steps, 1, 100_000)
        if self.appearance is not None and not isinstance(self.appearance, AppearanceOptions):
            _bad("appearance", "must be None or an AppearanceOptions", self.appearance)
        if self.blend not in BLENDS:
            _bad("blend", f"must be one of {', '.join(map(repr, BLENDS))}", self.blend)
        _check_int("work_size", self.work_size, 128, 4096)
        if self.work_size % 32:
            _bad("work_size", "must be a multiple of 32", self.work_size)


def _bad(name: str, rule: str, value):
    raise OptionsError(f"SynthesisOptions.{name}", f"{rule}, got {value!r}")


def _check_real(name: str, x, low: float, high: float, *, low_open: bool = False):
    """``x`` is a finite real number in [low, high] (or (low, high] when ``low_open``)."""
    ok = isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)
    ok = ok and (low < x if low_open else low <= x) and x <= high
    if not ok:
        where = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        _bad(name, f"must be a finite number {f'in {where}' if high < math.inf else f'>= {low:g}'}", x)


def _check_int(name: str, x, low: int, high: int):
    if not (isinstance(x, numbers.Integral) and not isinstance(x, bool) and low <= x <= high):
        _bad(name, f"must be a whole number in {low}..{high}", x)


class SynthesisResult(eqx.Module):
    """Batch output: images with the target affect, their edit masks and per-item diagnostics."""

    images: Float[Array, "B H W 3"]
    masks: Float[Array, "B H W"]
    fit_rms: Float[Array, " B"]
    """Fit residual RMS / inter-pupil distance (dimensionless; ~0.01-0.03 on good photos)."""
    input_expression: Float[Array, "B Ke"]
    """Expression coefficients fitted on the input (what ``neutralize`` removes)."""
    class_id: Array
    label: Float[Array, "B 2"]
    """The training label of each item: median (V, A) of its class."""
    mouth_opening: Float[Array, " B"]
    """Area added to the mouth opening, as a fraction of the face mask's area."""


@functools.cache
def _render_mesh(subdivision: int):
    """Triangles, groups and subdivision weights of the render mesh: face + hole fills + skirt ring."""
    t = topo.face_topology()
    ring = t.region("outer_boundary")
    n = topo.NUM_LANDMARKS
    skirt_ids = n + np.arange(len(ring))
    skirt_tris = []
    for k in range(len(ring)):
        a, b = ring[k], ring[(k + 1) % len(ring)]
        sa, sb = skirt_ids[k], skirt_ids[(k + 1) % len(ring)]
        skirt_tris += [(a, b, sa), (b, sb, sa)]
    tris = np.concatenate(
        [t.triangles, t.fill_mouth, t.fill_right_eye, t.fill_left_eye, np.array(skirt_tris, np.int32)]
    )
    groups = np.concatenate(
        [
            np.full(len(t.triangles), SKIN),
            np.full(len(t.fill_mouth), MOUTH),
            np.full(len(t.fill_right_eye) + len(t.fill_left_eye), EYE),
            np.full(len(skirt_tris), SKIRT),
        ]
    ).astype(np.int32)
    sub = topo.subdivide(tris, n + len(ring), subdivision)
    dense_groups = groups[np.arange(len(sub.triangles)) % len(tris)]
    # NumPy, not jnp: this is cached across traces, and a jnp array created inside one trace would leak
    return {
        "ring": np.asarray(ring),
        "weights": np.asarray(sub.weights, np.float32),
        "triangles": np.asarray(sub.triangles, np.int32),
        "groups": np.asarray(dense_groups, np.int32),
    }


def neutral_excess(
    expression: Float[Array, " Ke"], model: AffectModel, tolerance: float = 1.0
) -> Float[Array, " Ke"]:
    """The part of a photo's fitted expression that neutralisation removes: each activation shrunk towards
    0 by ``tolerance`` times the model's per-mode resting allowance (``AffectModel.resting_expression``),
    from both sides for signed modes. A resting face keeps its shape; a smile loses what exceeds rest."""
    tol = tolerance * model.resting_expression.astype(expression.dtype)
    return jnp.sign(expression) * jnp.maximum(jnp.abs(expression) - tol, 0.0)


REST_LIP_GAP = 0.015
"""Largest inner-lip gap (fraction of the inter-pupil distance) of a closed resting mouth: FaceMesh on 48
neutral London photos gives a median 0.003, 90th percentile 0.012 (one open neutral mouth: 0.049); the same
people smiling: median 0.038, 90th percentile 0.18."""


def _inner_lip_pairs(landmarks: Float[Array, "478 3"]):
    """(upper ids, lower ids paired with them by index, half of each pair's difference lower - upper)."""
    upper, lower = (jnp.asarray(ids) for ids in topo.face_topology().inner_lip_pairs())
    return upper, lower, 0.5 * (landmarks[lower] - landmarks[upper])


def _lip_parting(landmarks: Float[Array, "478 3"], interocular: Float[Array, ""]) -> Float[Array, ""]:
    """How far the lips are parted beyond rest, 0..1: ``smoothstep((gap - r) / r)`` with ``gap`` the widest
    inner-lip pair distance and ``r = REST_LIP_GAP`` inter-pupil distances (0 for any resting mouth)."""
    half = _inner_lip_pairs(landmarks)[2]
    gap = 2.0 * jnp.max(jnp.sqrt(jnp.sum(jnp.square(half[:, :2]), axis=-1)))
    rest = REST_LIP_GAP * interocular
    return smoothstep((gap - rest) / jnp.maximum(rest, 1e-6))


LIP_CLOSE_SPREAD = (0.12, 0.55)
"""How far ``close_lips`` carries the inner lips' closing into the skin around them (inter-pupil
distances): above the upper inner contour the move falls as ``exp(-(d / 0.12)^2)`` (0 from 3 x 0.12 up: the
nose stays), below the lower one as ``exp(-d / 0.55)``. London smiles against the same people's neutral
photos (24 open smiles, aligned on stable points): the upper lip's border moves half as far as its inner
contour, the lower lip's border 0.8 and the chin 0.37 of its inner contour (the jaw closes too). Closing
only the inner contours stretched both lips' red over the photo's teeth: 0.14 / 0.19 tall against the real
neutral 0.10 / 0.15 (re-detected, median; 0.125 / 0.16 now)."""


def close_lips(landmarks: Float[Array, "478 3"], interocular: Float[Array, ""]) -> Float[Array, "478 3"]:
    """Offsets (pixels) that bring parted inner lips together at their midpoints, for neutralisation.

    The face model's fit explains a smile's parted lips only in part (the lips-part and jaw modes also
    describe closed mouths, so their resting allowance is large), and what stays parted shows the photo's
    teeth in a "neutral" face. Each inner-lip pair (upper, lower) moves to its midpoint by a fraction
    ``smoothstep((gap - r) / r)`` of the way, ``gap`` the widest pair distance and ``r = REST_LIP_GAP``
    inter-pupil distances: a resting mouth (gap < r) gets exactly 0, lips parted by 2r or more close fully.
    The lips and the skin above and below follow as a real mouth closes (``LIP_CLOSE_SPREAD``): each point
    takes the move of the inner contour above or below it (interpolated along the mouth; nothing beyond the
    corners), fading with its distance from that contour.
    """
    upper, lower, half = _inner_lip_pairs(landmarks)
    frac = _lip_parting(landmarks, interocular)
    u, v, _ = mouth_coordinates(landmarks, upper[0], upper[-1])  # u: -1 .. 1 between the corners
    # the contours' positions along the mouth, non-decreasing as interp needs (a turned head can fold a
    # contour's end back on itself)
    nodes_up, nodes_lo = jax.lax.cummax(u[upper]), jax.lax.cummax(u[lower])
    v_up = jnp.interp(u, nodes_up, v[upper])
    v_lo = jnp.interp(u, nodes_lo, v[lower])
    move_up = jnp.stack([jnp.interp(u, nodes_up, half[:, k]) for k in range(3)], axis=-1)
    move_lo = jnp.stack([jnp.interp(u, nodes_lo, -half[:, k]) for k in range(3)], axis=-1)
    iod = jnp.maximum(interocular, 1e-6)
    d_up = jnp.maximum(v_up - v, 0.0) / iod
    d_lo = jnp.maximum(v - v_lo, 0.0) / iod
    w_up = gaussian_fade(d_up / LIP_CLOSE_SPREAD[0])  # 0 from 3 widths up: the nose and above stay put
    w_lo = jnp.exp(-d_lo / LIP_CLOSE_SPREAD[1])
    above = (v <= 0.5 * (v_up + v_lo))[:, None]
    field = jnp.where(above, w_up[:, None] * move_up, w_lo[:, None] * move_lo)
    beyond = (jnp.abs(u) >= 1.0)[:, None]  # past the corners: nothing (the end nodes are the corners)
    field = jnp.where(beyond, 0.0, field)
    # the inner contours exactly to their midpoints; the corners are in both lists with no gap
    field = field.at[upper].set(half).at[lower].set(-half)
    return frac * field


def appearance_action_units(
    model: AffectModel, target: Float[Array, "2"], expression: Float[Array, " Ke"], options: SynthesisOptions
) -> Float[Array, " K"]:
    """AU intensities the appearance cues draw (``AU_NAMES`` order): the model's own ``class_au`` at the
    target, blended like the deformation and times ``strength``, less what neutralisation removes from the
    photo's fitted ``expression`` (a smile the photo already has is not drawn twice)."""
    interpolate = options.interpolate and not options.sample  # a sample's class mean stands for it
    au = class_action_units(model, target, interpolate=interpolate) * options.strength
    au = named_action_units(au, model.au_names)
    names = model.morphable.expression_names
    if options.neutralize and names:  # unnamed (e.g. PCA) modes say nothing about AUs
        excess = neutral_excess(expression, model, options.neutral_tolerance)
        au = au - named_action_units(excess, names)
    return au


class ItemResult(eqx.Module):
    """One item's output (``synthesize_batch`` stacks these into a ``SynthesisResult``)."""

    image: Float[Array, "H W 3"]
    mask: Float[Array, "H W"]
    fit_rms: Float[Array, ""]
    input_expression: Float[Array, " Ke"]
    class_id: Int[Array, ""]
    label: Float[Array, " 2"]
    mouth_opening: Float[Array, ""]


def _crop_window(image: Float[Array, "H W 3"], landmarks: Float[Array, "478 3"], crop: tuple[int, int]):
    """The static ``crop`` window centred on the face, clipped to the image (which must hold it).

    Returns (patch f32[ch, cw, 3], landmarks in the patch's pixels, top, left) with top/left traced.
    """
    h, w = image.shape[:2]
    ch, cw = crop
    centre = 0.5 * (landmarks[:, :2].min(0) + landmarks[:, :2].max(0))
    top = jnp.clip(jnp.round(centre[1] - ch / 2), 0, h - ch).astype(jnp.int32)
    left = jnp.clip(jnp.round(centre[0] - cw / 2), 0, w - cw).astype(jnp.int32)
    patch = jax.lax.dynamic_slice(image, (top, left, 0), (ch, cw, 3))
    lm = landmarks - jnp.stack([left, top, 0]).astype(landmarks.dtype)[None, :]
    return patch, lm, top, left


def _target_deformation(model: AffectModel, target, key, options: SynthesisOptions) -> Float[Array, "V 3"]:
    """The target's deformation (class mean, or a sample of its class), scaled by ``options.strength``."""
    if options.sample:
        deform = sample_deformation(model, target, key)
    else:
        deform = class_deformation(model, target, interpolate=options.interpolate)
    return deform * options.strength


def _neutral_offsets(fit, lm: Float[Array, "478 3"], model: AffectModel, options: SynthesisOptions):
    """Image offsets (pixels, landmark frame) that take the input's face to rest: its fitted expression
    beyond the model's resting allowances (``neutral_excess``) is undone, then lips still parted wider than
    a resting mouth are closed (``close_lips``), a smile the fit missed is relaxed (``relax_smile``) and what
    its closed lip line keeps of the smile's curve is levelled (``level_corners``). Added to the target's
    offsets when ``options.neutralize`` is on: a smiling input does not end up smiling twice.
    """
    excess = neutral_excess(fit.expression, model, options.neutral_tolerance)
    to_rest = to_image_offsets(fit, -expression_offsets(model.morphable, excess))
    closed = close_lips(lm + to_rest, fit.interocular)
    names = model.morphable.expression_names
    if "AU12" not in names:  # static: a model without a named lip-corner mode (e.g. PCA) relaxes no smile
        return to_rest + closed
    unit = jnp.zeros_like(fit.expression).at[names.index("AU12")].set(1.0)
    smile = to_image_offsets(fit, expression_offsets(model.morphable, unit))
    parted = _lip_parting(lm + to_rest, fit.interocular)
    relaxed = relax_smile(lm + to_rest + closed, smile, parted)
    level = level_corners(lm + to_rest + closed + relaxed, fit.interocular, parted)
    return to_rest + closed + relaxed + level


def _warped_mesh(lm: Float[Array, "478 3"], offsets: Float[Array, "478 3"], options: SynthesisOptions):
    """The dense render mesh before (src) and after (dst) the deformation, in the crop's pixels.

    The face is extended by a skirt ring (``options.skirt`` of the face's radius beyond its contour, pushed
    behind it) that does not move, so the deformation fades to zero across it. Returns (mesh, src, dst).
    """
    mesh = {k: jnp.asarray(v) for k, v in _render_mesh(options.subdivision).items()}
    ring = lm[mesh["ring"]]
    c2 = jnp.mean(ring[:, :2], axis=0)
    skirt_xy = ring[:, :2] + (ring[:, :2] - c2[None, :]) * options.skirt
    face_depth = jnp.max(lm[:, 2]) - jnp.min(lm[:, 2])
    skirt = jnp.concatenate([skirt_xy, ring[:, 2:] + face_depth], axis=1)
    src = jnp.concatenate([lm, skirt], axis=0)
    dst = jnp.concatenate([lm + offsets, skirt], axis=0)
    return mesh, mesh["weights"] @ src, mesh["weights"] @ dst


def _composite(patch: Float[Array, "h w 3"], render: Float[Array, "h w 3"], frags, options: SynthesisOptions):
    """Blend the render into the patch where the mesh covers it. Returns (patch out, coverage mask)."""
    covered = (frags.triangle_id >= 0).astype(patch.dtype)
    render = jnp.where(covered[..., None] > 0, render, patch)
    if options.blend == "poisson":
        out = poisson_blend(patch, render, covered)
    else:  # "alpha" (SynthesisOptions accepts nothing else)
        a = frags.coverage[..., None]
        out = patch + a * (render - patch)  # exactly the patch where render == patch (not so a*r + (1-a)*p)
    return out, covered


def edit_offsets(lm: Float[Array, "478 3"], target, key, model: AffectModel, options: SynthesisOptions):
    """Fit the face and return (fit, the landmark offsets the render applies (pixels, landmark frame), the
    appearance AUs): the target's deformation, less the input's own expression when ``options.neutralize``,
    plus the resting mouth's turn against the target's valence taken away (``unturn_corners``), and the lip
    contact. Apart from ``_edit_patch`` so the chain can be measured link by link
    (``scripts/measure_chain.py``)."""
    fit = fit_morphable_model(lm, model.morphable, steps=options.fit_steps)
    offsets = to_image_offsets(fit, _target_deformation(model, target, key, options))
    rest = _neutral_offsets(fit, lm, model, options) if options.neutralize else jnp.zeros_like(lm)
    # the lids close the same share of this face's opening (at rest), not the template's millimetres
    offsets = offsets + lid_share(lm + rest, offsets, fit.interocular) + rest
    # a target takes away a resting mouth's turn against its valence (an upturn made bared teeth grin, a
    # downturn flattened smiles); part of the target's expression, so scaled by the strength as it is
    unturn = unturn_corners(lm + rest, fit.interocular, jnp.asarray(target)[0])
    offsets = offsets + options.strength * unturn
    au = appearance_action_units(model, target, fit.expression, options)
    offsets = offsets + press_lips(lm + offsets, au)
    return fit, offsets, au


def _edit_patch(patch, lm, target, key, model: AffectModel, options):
    """The edit of one face in a patch that holds it: fit, deform, render, appearance cues, blend.

    Returns (blended patch, coverage mask, source position of each pixel ``src_xy`` (x, y; 0 where
    uncovered; under the mouth's paint: ``_painted_sources``), the plain warp ``sample_bilinear(patch,
    src_xy)``, the fit, the appearance diagnostics).
    """
    crop = patch.shape[:2]
    fit, offsets, au = edit_offsets(lm, target, key, model, options)
    mesh, src_d, dst_d = _warped_mesh(lm, offsets, options)

    frags = rasterize(dst_d, mesh["triangles"], *crop)
    src_xy = interpolate(frags, src_d[:, :2])
    warped = sample_bilinear(patch, src_xy)
    # expression appearance (render/appearance): shading, wrinkles, mouth interior, eyes
    look = options.appearance or AppearanceOptions(mouth_interior=options.mouth_interior)
    ctx = AppearanceContext(
        src_vertices=src_d,
        dst_vertices=dst_d,
        triangles=mesh["triangles"],
        groups=mesh["groups"],
        surface=dense_template(mesh["weights"], mesh["ring"], options.skirt),
        landmarks=lm,
        target_landmarks=lm + offsets,
        au=au,
        interocular=fit.interocular,
    )
    render, look_diag = apply_appearance(warped, patch, frags, ctx, look)
    out, covered = _composite(patch, render, frags, options)
    src_xy = _painted_sources(src_xy, look_diag, lm)
    return out, covered, src_xy, sample_bilinear(patch, src_xy), fit, look_diag


def _painted_sources(
    src_xy: Float[Array, "h w 2"], diag: dict, lm: Float[Array, "478 3"]
) -> Float[Array, "h w 2"]:
    """Source positions under the mouth's paint: deep in a painted opening moved (by ``painted_deep``) to
    the photo's mouth centre, along a closing lip seam shifted into the lips (``source_shift``).

    The edit leaves the crop as a warp plus a smooth residual, and the full-resolution paste-back applies
    the warp to the photo's own pixels (sharper than the crop's): what the crop's paint hid came back as its
    fine detail. A dropped jaw's opening samples the photo's closed lip seam stretched tall (vertical
    streaks in the painted cavity), and lips closed over a smile squeezed its teeth into a thin white line.
    The crop's result is unchanged (the residual takes the difference); the weights rise smoothly, so that
    neighbouring sources stay close (the paste-back interpolates between them).
    """
    centre = jnp.mean(lm[jnp.asarray(topo.face_topology().region("mouth_hole")), :2], axis=0)
    w = diag["painted_deep"][..., None]
    return src_xy + w * (centre[None, None, :] - src_xy) + diag["source_shift"]


def _synthesize_in_frame(image, landmarks, target, key, model: AffectModel, options, crop) -> ItemResult:
    """One item whose image holds the crop: crop, edit (``_edit_patch``), paste back."""
    h, w = image.shape[:2]
    patch, lm, top, left = _crop_window(image, landmarks, crop)
    out, covered, _, _, fit, look_diag = _edit_patch(patch, lm, target, key, model, options)
    return ItemResult(
        image=jax.lax.dynamic_update_slice(image, out.astype(image.dtype), (top, left, 0)),
        mask=jax.lax.dynamic_update_slice(jnp.zeros((h, w), image.dtype), covered, (top, left)),
        fit_rms=fit.rms,
        input_expression=fit.expression,
        class_id=class_index(model.grid, target),
        label=class_label(model, target),
        mouth_opening=look_diag["mouth_opening"] / jnp.maximum(jnp.sum(covered), 1.0),
    )


def synthesize_item(
    image: Float[Array, "H W 3"],
    landmarks: Float[Array, "478 3"],
    target: Float[Array, " 2"],
    key: Array,
    model: AffectModel,
    options: SynthesisOptions,
    crop: tuple[int, int],
) -> ItemResult:
    """The per-item stage of ``synthesize_batch`` (which vmaps and jits it); ``options``, ``crop`` static.

    A crop larger than the image (a face that fills the photo) is handled by a separate padding step: the work
    runs on an edge-padded copy (the appearance windows are sized as fractions of a crop ~4 inter-pupil
    distances wide) and the result is cut back to the image's size.
    """
    h, w = image.shape[:2]
    pad_h, pad_w = max(crop[0] - h, 0), max(crop[1] - w, 0)
    if not (pad_h or pad_w):  # static
        return _synthesize_in_frame(image, landmarks, target, key, model, options, crop)
    top, left = pad_h // 2, pad_w // 2
    padded = jnp.pad(image, ((top, pad_h - top), (left, pad_w - left), (0, 0)), mode="edge")
    shift = jnp.asarray([left, top, 0], landmarks.dtype)[None, :]
    res = _synthesize_in_frame(padded, landmarks + shift, target, key, model, options, crop)
    rows, cols = slice(top, top + h), slice(left, left + w)
    return eqx.tree_at(lambda r: (r.image, r.mask), res, (res.image[rows, cols], res.mask[rows, cols]))


@functools.partial(jax.jit, static_argnames=("options", "crop"))
def _synthesize_batch_jit(images, landmarks, targets, keys, model, options, crop) -> SynthesisResult:
    fn = functools.partial(synthesize_item, model=model, options=options, crop=crop)
    out = jax.vmap(fn)(images, landmarks, targets, keys)
    return SynthesisResult(
        images=out.image,
        masks=out.mask,
        fit_rms=out.fit_rms,
        input_expression=out.input_expression,
        class_id=out.class_id,
        label=out.label,
        mouth_opening=out.mouth_opening,
    )


def crop_size(landmarks, height: int, width: int, *, skirt: float = 0.35, bucket: int = CROP_BUCKET):
    """Static crop (h, w) covering every face of a batch with skirt and margin, bucketed to ``bucket`` px.

    Clipped to the image unless the face needs more room than the image has (a face that fills the frame):
    then the crop is larger than the image and ``synthesize_batch`` pads the image's border for the work.
    """
    lm = np.asarray(landmarks, np.float64).reshape(-1, topo.NUM_LANDMARKS, 3)
    span = (lm[:, :, :2].max(1) - lm[:, :, :2].min(1)).max(0)  # (w, h)
    need = span * (1.0 + skirt) * 1.35 + 16
    side = [bucket * int(np.ceil(n / bucket)) for n in need]  # (w, h)
    # a crop that fits is clipped to the image; one that does not keeps its full size (padded later)
    ch = side[1] if need[1] > height else min(height, side[1])
    cw = side[0] if need[0] > width else min(width, side[0])
    return ch, cw


def synthesize_batch(
    images: Float[Array, "B H W 3"],
    landmarks: Float[Array, "B 478 3"],
    targets: Float[Array, "B 2"],
    model: AffectModel,
    *,
    options: SynthesisOptions = SynthesisOptions(),
    key: Array | None = None,
    keys: Array | None = None,
    crop: tuple[int, int] | None = None,
) -> SynthesisResult:
    """Give each face of a batch its target (valence, arousal).

    One jit-compiled, vmapped function over the batch; runs unchanged on CPU, GPU and TPU. Images are float
    RGB in [0, 1], or uint8 as decoded (the edited images are then uint8 too), all of one size (bucket or pad
    mixed sizes); landmarks are FaceMesh's, in pixels.

    Args:
        images: f32[B, H, W, 3] in [0, 1], or u8[B, H, W, 3].
        landmarks: f32[B, 478, 3] from ``detect_landmarks``.
        targets: f32[B, 2] (valence, arousal), each in [-1, 1] (validate with ``affect.validate_target`` at
            the edge: inside the jitted function a NaN target cannot raise).
        model: an ``AffectModel`` (``load_model()`` gives the default).
        options: static settings (see ``SynthesisOptions``).
        key: PRNG key, used when ``options.sample`` is True (split into one key per item).
        keys: one PRNG key per item instead (u32[B, 2]), e.g. derived from each item's identity so that a
            resumed job draws the same samples.
        crop: static processing window (h, w). Default: computed from the landmarks on the host
            (``crop_size``); when the landmarks are traced (called inside your own jit) the whole image is
            processed — pass ``crop=crop_size(...)`` of representative landmarks there, since the appearance
            windows are sized for a crop about 4 inter-pupil distances wide. A crop larger than the image is
            allowed: the border is edge-padded for the work and the output has the image's size.
    """
    if not isinstance(options, SynthesisOptions):
        raise OptionsError("options", f"must be a SynthesisOptions, got {type(options).__name__}")
    b = np.shape(images)[0]
    if keys is None:
        from .working import item_keys

        keys = item_keys(key, b, options)
    traced = any(isinstance(x, jax.core.Tracer) for x in (images, landmarks, targets, keys))
    raw_keys = not jax.dtypes.issubdtype(jnp.result_type(keys), jax.dtypes.prng_key)
    if crop is None and not traced and raw_keys and np.shape(keys) == (b, 2):
        from .working import synthesize_working  # the fixed-shape working-crop program, kept on disk

        return synthesize_working(images, landmarks, targets, keys, model, options)
    photo_bytes = jnp.result_type(images) == jnp.uint8
    images = jnp.asarray(images, jnp.float32) / (255.0 if photo_bytes else 1.0)
    landmarks = jnp.asarray(landmarks, jnp.float32)
    targets = jnp.asarray(targets, jnp.float32)
    h, w = images.shape[1:3]
    if crop is None:  # inside the caller's jit: the landmarks have no values yet, the whole image is the crop
        crop = (h, w)
    keys = jnp.asarray(keys)
    res = _synthesize_batch_jit(images, landmarks, targets, keys, model, options, tuple(int(c) for c in crop))
    if photo_bytes:  # bytes in, bytes out, as on the working-crop path (rounded as ``save_image`` rounds)
        res = eqx.tree_at(
            lambda r: r.images, res, jnp.floor(jnp.clip(res.images, 0, 1) * 255 + 0.5).astype(jnp.uint8)
        )
    return res


def load_model(path=None) -> AffectModel:
    """The affect model at ``path``, or the default one (built by our own code at first use, then cached)."""
    if path is None:
        from .affect.default import default_model

        return default_model()
    from .affect.model import read_model

    return read_model(path)


def check_target(valence: float, arousal: float, where: str = "target") -> np.ndarray:
    """Validate a (valence, arousal) pair at the edge: finite and in [-1, 1]."""
    for name, x in (("valence", valence), ("arousal", arousal)):
        try:
            xf = float(x)
        except (TypeError, ValueError):
            raise TargetError(where, f"{name} must be a number, got {x!r}") from None
        if not np.isfinite(xf):
            raise TargetError(where, f"{name} is {xf}; it must be a finite number in [-1, 1]")
        if not -1.0 <= xf <= 1.0:
            raise TargetError(where, f"{name} {xf:g} is outside [-1, 1]")
    return np.array([valence, arousal], np.float32)


def synthesize(
    image,
    valence: float,
    arousal: float,
    model: AffectModel | None = None,
    *,
    landmarks=None,
    face_index: int | None = None,
    options: SynthesisOptions = SynthesisOptions(),
    key=None,
) -> np.ndarray:
    """One photo, one target: returns the edited image as float32 (H, W, 3) in [0, 1].

    Detects the face when ``landmarks`` is not given (the largest face, or ``face_index``), loads the
    default model when ``model`` is None.
    """
    from .face.landmarks import detect_landmarks

    img = np.asarray(image)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    target = check_target(valence, arousal)
    if landmarks is None:
        landmarks = detect_landmarks(img, face_index=face_index)
    model = load_model() if model is None else model
    res = synthesize_batch(
        img[None], np.asarray(landmarks)[None], target[None], model, options=options, key=key
    )
    return np.asarray(res.images[0])
