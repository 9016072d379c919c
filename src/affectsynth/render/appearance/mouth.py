"""The mouth interior: a lit cavity, teeth and tongue where the lips part wider than in the photo."""

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._types import Image
from ...face import topology as topo
from ...resting import mouth_coordinates
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

TOOTH_EDGES_MM = (0.0, 8.5, 15.0, 22.0, 28.0, 34.0)
"""Distances (mm) from the midline of the gaps between the upper teeth: central incisors ~8.5 mm wide,
laterals ~6.5 mm, canines ~7 mm seen nearly face on, then the premolars (~7 mm, foreshortened to ~6 as the
arch turns away). The incisal notches use the front four; the crowns all."""

LOWER_TOOTH_EDGES_MM = (0.0, 5.4, 11.3, 18.0, 24.5, 31.0)
"""The same for the lower teeth (central incisors ~5.4 mm, laterals ~5.9 mm, canines ~6.7 mm, premolars):
their gaps do not line up with the upper ones."""

CROWN_TONES = (1.0, 0.95, 0.9, 0.87, 0.85, 0.85)
"""Brightness of each crown of a clenched row from the midline out (central and lateral incisors, canine,
premolars: one per crown from each of ``TOOTH_EDGES_MM``), besides the row's turn away from the light: the
central incisors are the largest, flattest and most frontal teeth, and each next one stands further back and
more sideways."""

INCISAL_RISE_MM = (0.0, 0.8, 0.4, 0.7, 0.9, 0.9)
"""How far (mm) each upper crown's incisal edge stands above the central incisors' (central and lateral
incisors, canine, premolars; one per crown from each of ``TOOTH_EDGES_MM``): the laterals are shorter, the
canines' cusps reach nearly as low as the centrals, the premolars sit higher and further back. Where the edge
stands free over the cavity it steps with them; all at one height, a wide smile's upper row was a ruled
band."""

CROWN_ROUNDING = 0.12
"""How much a crown darkens from its middle to its sides: its labial face is convex and turns away from the
light towards its neighbours. This, not a dark line, is most of what shows one tooth from the next."""

OPEN_RELIEF = 1.5
"""How much deeper the crowns' rounding (``CROWN_ROUNDING``) and contact lines are in an open mouth's rows
than in clenched ones. On the 24 London people whose real smile is open, the teeth's fine texture
(``scripts/measure_smile.py`` ``teeth_tex``) was 0.033 against their real smiles' 0.048; 0.038 with this,
and the critic's probability of happy over jittered boxes rose by 0.027 (48 faces, interval excluding 0;
``scripts/compare_runs.py``). At 2.0: texture 0.045, but the teeth darker than real (brightness 1.11 of the
skin, real 1.14) and P(happy) +0.010 more, within noise. Clenched rows keep 1 (their crowns' own tones and
the overbite's shadow part them; deeper relief there is untried)."""

CONTACT_LINE_MM = 0.2
"""Half-width (mm) of the line where two crowns touch (at least 0.6 px): a hairline, not a gap. With soft
lines reaching 2.1 mm either side of a gap (the smile's band until then) the clenched rows were bars of
grey, a radiator grille (London angry outputs, by eye)."""

OVERBITE_SHADOW = 0.4
"""How much the upper incisal edge darkens the lower teeth just under it (fading over a millimetre):
clenched, the upper incisors overlap the lower ones by 2-3 mm and stand ~2 mm in front of them, so the bite
shows as the upper teeth's edge over a shadowed lower row, not as a dark gap. A dark line 0.5 mm wide
between the rows (before) drew a black stripe across every angry and disgusted mouth."""


REST_INCISOR_MM = 2.0
"""Upper incisor crown (mm) that a relaxed upper lip leaves in view: about 2 mm in men and 3 mm in women at
rest (Vig & Brundo 1978), more in the young. A dropped jaw (surprise) keeps it; without it the gap of a
relaxed open mouth was all cavity over a row of lower teeth, the bared lower teeth of a scream (London
``surprised`` outputs read afraid on 18 of 48 faces)."""

LOWER_TEETH_AT_REST = 0.3
"""Fraction of the lower-teeth band shown when nothing pulls the lower lip off them: a relaxed lower lip
rides down with the jaw over the lower incisors; smiles, AU16/AU20 (fear's stretched lips) and AU27 (a
forced stretch) bare them."""

EMBRASURE_MM = 0.5
"""How far (mm) the incisal edge of the upper teeth rises at each gap between crowns (their rounded corners:
the incisal embrasures, a dark notch between tooth tips in a real smile)."""

LIP_EMBRASURE_MM = 0.7
"""Depth (mm) at each gap of the notch between two upper crowns whose tips rest on the lower lip (a smile's
teeth, ``MIN_SLIVER_MM``): a crown's incisal corners are rounded, so even on the lip the tips part, and the
shadowed mouth shows between them (``EMBRASURE_MM`` does this where the edge stands free). The notch follows
each crown's convex face (``_crowns``' ``side``: none mid-crown, deepest at a gap) and is darkened by
``TIP_NOTCH_SHADE``. On the 24 London people whose real smile is open, the teeth's fine texture
(``scripts/measure_smile.py`` ``teeth_tex``) was 0.038 against their real smiles' 0.048: 0.044 with this,
0.052 at 1 mm; the critic's probability of happy over jittered boxes rose by 0.007 (0.012 at 1 mm; neither
outside noise; ``scripts/compare_runs.py``), no other target moved. Cut out of the row instead, the notches
showed the cavity and tongue as red dots along the lip (0.5-1 mm, by eye)."""

TIP_NOTCH_SHADE = 0.6
"""How much the notch between tips resting on the lower lip (``LIP_EMBRASURE_MM``) darkens the teeth."""

NEW_OPENING = (0.05, 0.2)
"""Share of the target's opening that is new (not the photo's own) from which its interior is painted, and
by which it is fully painted. Partly painted, the interior mixes with the photo's own stretched teeth into
grey: over a 0-35 % ramp (before), the demo's smiling astronaut, whose excited opening is about a quarter
new (re-detected), showed a grey band under her teeth."""

MIN_OPENING_MM = 1.0
"""Mean added height (mm) of the lips' opening from which the painted interior is fully drawn (from 0)."""

MIN_SLIVER_MM = 1.0
"""Narrowest cavity (mm) a smile leaves between the upper incisal edge and the lower lip; a thinner one
closes (its teeth rest on the lip), fully below this and not at all from twice it. A sub-millimetre line of
cavity, broken into dots by the pixel grid, drew a dark zipper along the lower lip of every London happy
output."""

DEEP_MM = 3.0
"""Depth (mm) inside the new opening's contour over which ``_MouthFrame.deep`` rises from 0 to 1 (or a
half the opening's height, if more)."""

SEAM_REACH = 0.5
"""How far (a share of the photo's mean inner-lip gap) from the closed seam the photo's opening can still
show when its lips close: FaceMesh's inner contour of a toothy smile lies up to that far onto the teeth."""

SEAM_RETURN = 2.5
"""Over how many of the photo's inner-lip gaps (pixels below a closed seam) the warp's sources return from
the photo's upper inner lip to their own (``_closed_lips``): over one, the paste-back drew the teeth they
pass over as fine grey lines across the lower lip (London 099's neutral); stretched, that detail is coarse
enough for the crop's residual to take out."""

MEETING_LINE_MM = 0.35
"""Half-width (mm) of the soft line where closed lips meet (at least 0.6 px)."""

MEETING_LINE_DEPTH = 0.3
"""How much the closed lips' meeting line darkens them at its centre: a darker one (or one as wide as the
photo's gap) drew a pencil line across large faces."""

CAVITY_FLOOR_RED = 0.25
"""How much green and blue fall, against red, from the top of the mouth cavity to its floor."""

TONGUE_FROM_MM = 2.0
"""Mean opening height (mm) from which the tongue is drawn (fully from 6 mm)."""

SHADOW_WARMTH = (0.85, 1.6)
"""(knee, gain): shaded teeth take the skin's hue (``_mouth_colours``) at their own luminance, a share
``gain * (1 - q / knee)`` of it (at most all) at shade ``q`` (1 lit .. 0 black; none above the knee). In a
mouth, light reaches a tooth's shaded side through and off lips, cheeks and gums, and dentin shows through
thin enamel: real shaded teeth are warm. On the 24 London people whose real smile shows teeth, the inner
mouth's pixels at 0.6-1.0 of the skin's luminance ((R - B) / (R + G + B), ``scripts/measure_smile.py``
``shade_warm``): real smiles 0.087; ours 0.034 darkened in the teeth's own cream hue (a grey band), 0.058
with a gain of 1, 0.071 with 1.6. Lit teeth keep their colour (``teeth_warm`` 0.032, real 0.038)."""


OWN_TEETH_GAP_MM = (2.5, 5.0)
"""The photo's own inner-lip gap (mm, mean over the middle of the mouth) over which the painted teeth take
the hue of the teeth the photo shows (``_own_teeth``) instead of the eye whites' and skin's: none below the
first, fully from the second."""

OWN_TEETH_CONTRAST = ((1.05, 1.25), (0.8, 0.6))
"""When the photo's brightest samples in its opening count as teeth: their luminance over its lips' (not at
the first value, fully from the second) and their saturation over the lips' (likewise). Teeth are brighter
and paler than lips: a parted mouth's dark gap is darker, its tongue as red. (Lit, pale lips are nearly as
bright as teeth: the demo's astronaut's are 0.74 of hers, with 1.9 times their saturation.)"""


class _MouthFrame(NamedTuple):
    """Per-pixel coordinates of the target's opening (pixels unless named otherwise)."""

    alpha: Float[Array, "H W"]  # how much of the pixel is painted interior (0 where the photo's own shows)
    deep: Float[Array, "H W"]  # painted and over ``DEEP_MM`` inside the opening's contour (0..1, smooth)
    u: Float[Array, "H W"]  # position along the mouth, -1..1 between the corners
    x_mm: Float[Array, "H W"]  # the same in mm from the mouth centre
    d_up: Float[Array, "H W"]  # distance to the inner upper lip
    d_lo: Float[Array, "H W"]  # distance to the inner lower lip
    lip_rise: Float[Array, "H W"]  # how far the inner lower lip under the pixel lies above its midline point
    local_h: Float[Array, "H W"]  # local height of the opening (d_up + d_lo)
    h_open: Float[Array, ""]  # mean opening height
    mm: Float[Array, ""]  # pixels per mm
    opening: Float[Array, ""]  # area added to the opening
    closed_mm: Float[Array, ""]  # mean height (mm) by which the photo's own opening closes (0 if it opens)
    dst_gap_mm: Float[Array, ""]  # the target's mean opening height (mm)
    src_gap: Float[Array, ""]  # the photo's mean opening height (pixels)


def _rounded(points: Float[Array, "N 2"], rounds: int = 2) -> Float[Array, "M 2"]:
    """The contour through ``points`` with its corners cut (Chaikin, ``rounds`` times; ends kept).

    FaceMesh's 11-point inner lip contours bend sharply at the midline once the jaw drops, and the teeth and
    cavity, laid out by distance to them, drew the bend as a V in the upper teeth's incisal edge (excited);
    a real incisal edge is a smooth arc. Static length: N -> 2N - 2 per round."""
    for _ in range(rounds):
        a, b = points[:-1], points[1:]
        cut = jnp.stack([0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b], axis=1).reshape(-1, 2)
        points = jnp.concatenate([points[:1], cut[1:-1], points[-1:]])
    return points


def _newness(
    a_src: Float[Array, ""], a_dst: Float[Array, ""], width: Float[Array, ""], mm: Float[Array, ""]
) -> Float[Array, ""]:
    """How fully to paint the target's opening (0..1), from the photo's and the target's inner-lip areas
    (pixels^2), the target mouth's width (pixels) and the pixels per mm.

    By the share of the target's opening that is new (``NEW_OPENING``): an opening the photo already has
    keeps its own pixels, and lips that close again give back exactly the photo's lips. And by the added
    mean height (``MIN_OPENING_MM``): the share alone turned the hairline slit of closed lips that part by a
    fraction of a millimetre (a neutral target) into a black line."""
    share = jnp.clip((a_dst - a_src) / jnp.maximum(a_dst, 1e-3), 0.0, 1.0)
    lo, hi = NEW_OPENING
    added_mm = jnp.maximum(a_dst - a_src, 0.0) / width / mm
    return _smoothstep((share - lo) / (hi - lo)) * _smoothstep(added_mm / MIN_OPENING_MM)


def _mouth_frame(ctx: AppearanceContext, xy: Float[Array, "H W 2"]) -> _MouthFrame:
    """Where the new opening is and each pixel's place in it, from the inner lip contours.

    ``alpha`` is weighted by ``_newness``: an opening the photo already has keeps its own pixels, lips that
    close again give back exactly the photo's lips, and lips parted by a hair show no painted slit.
    """
    t = topo.face_topology()
    hole = jnp.asarray(t.region("mouth_hole"))
    upper = jnp.asarray(t.region("lips_inner_upper"))
    lower = jnp.asarray(t.region("lips_inner_lower"))
    src = ctx.landmarks[:, :2]
    dst = ctx.target_landmarks[:, :2]
    mm = ctx.interocular / topo.IPD_MM
    a_src = _polygon_area(src[hole])
    a_dst = _polygon_area(dst[hole])
    c0, c1 = dst[upper[0]], dst[upper[-1]]
    width = jnp.linalg.norm(c1 - c0) + 1e-3
    newness = _newness(a_src, a_dst, width, mm)
    ex = (c1 - c0) / width
    h_open = a_dst / width * 1.5  # mean opening height -> approximate mid height
    sdf = _polygon_sdf(xy, dst[hole])
    feather = jnp.clip(0.15 * h_open, 0.6, 2.0)
    along = (xy - 0.5 * (c0 + c1)[None, None, :]) @ ex
    d_up = _polyline_distance(xy, _rounded(dst[upper]))
    d_lo = _polyline_distance(xy, _rounded(dst[lower]))
    # the mouth's "down" (away from the nose) and the inner lower lip's midline point: the lip lies ``d_lo``
    # under a pixel of the opening (a slanted lip's nearest point a little to the side: it reads a little
    # higher there)
    down = mouth_coordinates(ctx.target_landmarks, upper[0], upper[-1])[2]
    bottom = dst[lower[len(lower) // 2]]
    return _MouthFrame(
        # opaque from the contour inwards: the render's stretched lip seam must not show as a dark rim
        alpha=newness * _smoothstep(0.9 - sdf / feather),
        deep=newness * _smoothstep(-sdf / jnp.maximum(DEEP_MM * mm, 0.5 * h_open)),
        u=jnp.clip(along / (0.5 * width), -1.5, 1.5),
        x_mm=along / mm,
        d_up=d_up,
        d_lo=d_lo,
        lip_rise=(bottom[None, None, :] - xy) @ down - d_lo,
        local_h=d_up + d_lo + 1e-3,
        h_open=h_open,
        mm=mm,
        opening=jnp.maximum(a_dst - a_src, 0.0),
        closed_mm=jnp.maximum(a_src - a_dst, 0.0) / width / mm,
        dst_gap_mm=a_dst / width / mm,
        src_gap=a_src / width,
    )


def _gap_in_seam(out: Image, f: _MouthFrame, lip_rgb: Float[Array, "3"]) -> Float[Array, "H W"]:
    """Where lips that close over the photo's own opening still show it (0..1).

    FaceMesh's inner-lip contour of a toothy smile runs partly over the teeth, so closing the lips (a smiling
    input's ``neutral`` or a negative target) squeezes the photo's teeth and the dark gap beside them into a
    line between the lips. Along the closed seam (within about half the photo's gap, the corners included),
    pixels unlike the lips are taken: whiter (a higher darkest channel: teeth are bright and unsaturated),
    much darker (the cavity, the dark corners of a smile) or much greyer (the two blurred together: the
    astronaut's grey seam). Nothing when the photo's mouth was closed or opens,
    or when the target's lips stay parted (mean gap over 2 mm: a smile on a smiling photo keeps its teeth).
    """
    near = _seam_band(f)[1]
    whiter = _smoothstep((jnp.min(out, axis=-1) - jnp.min(lip_rgb)) / 0.15)
    darker = _smoothstep((0.75 - _luminance(out) / jnp.maximum(_luminance(lip_rgb), 1e-3)) / 0.2)
    chroma = jnp.max(lip_rgb) - jnp.min(lip_rgb)
    grey = 0.6 * chroma - (jnp.max(out, axis=-1) - jnp.min(out, axis=-1))
    greyer = _smoothstep(grey / (0.3 * chroma + 1e-3))
    return _closing(f) * near * jnp.maximum(jnp.maximum(whiter, darker), greyer)


def _seam_band(f: _MouthFrame) -> tuple[Float[Array, ""], Float[Array, "H W"]]:
    """(reach, band): how far (pixels) from the closed seam the photo's opening can still show
    (``SEAM_REACH``), and the band within it along the mouth, corners included (0..1, smooth)."""
    seam = jnp.minimum(f.d_up, f.d_lo)
    reach = jnp.maximum(1.0, SEAM_REACH * f.src_gap)
    return reach, (1.0 - _smoothstep((seam - reach) / reach)) * _band(jnp.abs(f.u), 0.0, 1.0, 0.2)


def _closing(f: _MouthFrame) -> Float[Array, ""]:
    """How much the photo's open mouth closes into a seam (0..1): its mean gap shrinks by 2 mm or more and
    the target's stays under about 1 mm."""
    return _smoothstep(f.closed_mm / 2.0) * (1.0 - _smoothstep((f.dst_gap_mm - 0.5) / 1.5))


def _closed_lips(
    out: Image,
    f: _MouthFrame,
    lips: Float[Array, "2 3"],
    across: Float[Array, "H W"],
    gap_xy: Float[Array, "H W 2"],
) -> tuple[Image, Float[Array, "H W 2"]]:
    """Lips that close over the photo's open mouth: what of its opening the seam still shows
    (``_gap_in_seam``) takes the colour of the lip it lies in (``lips``: upper, lower; ``across``: signed
    pixels below the seam), a little darker where the lip turns in towards the seam, and the lips meet on a
    thin soft line (``MEETING_LINE_MM``), drawn only as far as the mouth closes.

    Returns (image, source shift f32[H, W, 2], pixels). The warp's sources jump across a closed seam by the
    photo's gap (``gap_xy``): from its upper inner lip above to its lower one below. The full-resolution
    paste-back interpolates the warp between the crop's pixels, and there sampled the middle of that gap:
    the photo's teeth, a thin white line that the crop never saw. The shift takes the jump out: below the
    seam the sources start on the photo's upper inner lip and return to their own over ``SEAM_RETURN``
    photo gaps, so the crop sees all that the paste-back samples (``pipeline._painted_sources``).
    """
    side = _smoothstep(across / jnp.maximum(0.5 * f.mm, 0.5) * 0.5 + 0.5)[..., None]
    lip = lips[0][None, None, :] * (1.0 - side) + lips[1][None, None, :] * side
    reach = _seam_band(f)[0]
    lip = lip * (0.88 + 0.12 * _smoothstep(jnp.abs(across) / reach))[..., None]
    take = _gap_in_seam(out, f, jnp.mean(lips, axis=0))[..., None]
    out = out * (1.0 - take) + lip * take
    width = jnp.maximum(MEETING_LINE_MM * f.mm, 0.6)
    line = _closing(f) * _band(jnp.abs(f.u), 0.0, 0.95, 0.1) * jnp.exp(-jnp.square(across / width))
    back = jnp.where(across > 0.0, 1.0 - _smoothstep(across / jnp.maximum(SEAM_RETURN * f.src_gap, 1.0)), 0.0)
    shift = (_closing(f) * back)[..., None] * gap_xy  # (the gap is 0 at and beyond the corners)
    return out * (1.0 - MEETING_LINE_DEPTH * line)[..., None], shift


def _lip_colours(patch: Image, ctx: AppearanceContext) -> Float[Array, "2 3"]:
    """(upper, lower) lip colour of this photo, sampled half way between each lip's outer and inner contour
    (the middle seven of eleven pairs): the inner contour itself lies on the teeth or the dark gap of a
    parted mouth, and the lip colour sampled on it was a grey for the smiling astronaut."""
    t = topo.face_topology()
    src = ctx.landmarks[:, :2]
    pairs = (("lips_outer_upper", "lips_inner_upper"), ("lips_outer_lower", "lips_inner_lower"))
    cols = []
    for outer, inner in pairs:
        mid = 0.5 * (src[jnp.asarray(t.region(outer)[2:-2])] + src[jnp.asarray(t.region(inner)[2:-2])])
        cols.append(jnp.mean(sample_bilinear(patch, mid), axis=0))
    return jnp.stack(cols)


def _across_seam(
    ctx: AppearanceContext, xy: Float[Array, "H W 2"]
) -> tuple[Float[Array, "H W"], Float[Array, "H W 2"]]:
    """(signed distance (pixels, positive towards the chin) of each pixel below the target's lip seam, the
    curve half way between its inner upper and lower lip contours, measured across the mouth; the photo's
    own inner-lip gap there: upper minus lower inner-lip point, pixels, interpolated along the mouth)."""
    t = topo.face_topology()
    dst, src = ctx.target_landmarks[:, :2], ctx.landmarks[:, :2]
    up, lo = (jnp.asarray(ids) for ids in t.inner_lip_pairs())
    mid = 0.5 * (dst[up] + dst[lo])
    c0, c1 = mid[0], mid[-1]
    ex = (c1 - c0) / (jnp.linalg.norm(c1 - c0) + 1e-6)
    down = jnp.array([-ex[1], ex[0]])
    down = down * jnp.sign(jnp.dot(down, dst[152] - dst[0]) + 1e-6)  # chin below the upper lip
    centre = 0.5 * (c0 + c1)
    along_pts, across_pts = (mid - centre[None, :]) @ ex, (mid - centre[None, :]) @ down
    rel = xy - centre[None, None, :]
    along = rel @ ex
    gap = src[up] - src[lo]
    gap_xy = jnp.stack([jnp.interp(along, along_pts, gap[:, i]) for i in range(2)], axis=-1)
    return rel @ down - jnp.interp(along, along_pts, across_pts), gap_xy


def _mouth_colours(
    patch: Image, ctx: AppearanceContext
) -> tuple[Float[Array, "2 3"], Float[Array, "3"], Float[Array, "3"]]:
    """((upper, lower) lip colours (``_lip_colours``), teeth colour, shaded teeth's hue) from this photo.

    Teeth are lit like the eye whites (albedo independent of skin tone): the sclera between each pupil and
    its eye corners sets the exposure; the skin only sets a floor when the eyes are shadowed or closed, and
    tints the teeth a little towards the photo's white balance. A photo that shows its own teeth gives their
    hue instead, at the same exposure (``_own_teeth``). The third colour is the skin's scaled to luminance 1:
    the hue that shaded teeth take (``SHADOW_WARMTH``).
    """
    t = topo.face_topology()
    src = ctx.landmarks[:, :2]
    lips = _lip_colours(patch, ctx)
    skin_idx = jnp.asarray(np.concatenate([t.region("right_cheek"), t.region("left_cheek")]))
    skin_rgb = jnp.mean(sample_bilinear(patch, src[skin_idx]), axis=0)
    tint = (skin_rgb / jnp.maximum(jnp.mean(skin_rgb), 1e-3)) ** 0.15
    pupils = src[jnp.array([topo.RIGHT_PUPIL, topo.RIGHT_PUPIL, topo.LEFT_PUPIL, topo.LEFT_PUPIL])]
    corners = src[jnp.array([33, 133, 362, 263])]
    sclera = _luminance(sample_bilinear(patch, 0.5 * pupils + 0.5 * corners))
    # exposure: the sclera's luminance / 0.64 (teeth a little brighter than the eye whites beside them: real
    # smiles of the London set, the teeth's 80th percentile 0.79 against sclera 0.50-0.60; at / 0.7 with an
    # ivory base our teeth were a dull grey-beige band, darkest on dark skin)
    exposure = jnp.clip(jnp.maximum(jnp.mean(sclera) / 0.64, _luminance(skin_rgb) / 0.6), 0.35, 1.2)
    teeth_rgb = jnp.clip(jnp.array([0.96, 0.95, 0.91]) * tint * exposure, 0.0, 0.96)
    # a photo that shows its own teeth gives their hue (``_own_teeth``), at the eye whites' exposure
    own_hue, weight = _own_teeth(patch, ctx, jnp.mean(lips, axis=0))
    lum = _luminance(teeth_rgb)
    teeth_rgb = jnp.clip(teeth_rgb + weight * (lum * own_hue - teeth_rgb), 0.0, 0.96)
    return lips, teeth_rgb, skin_rgb / jnp.maximum(_luminance(skin_rgb), 1e-3)


def _own_teeth(
    patch: Image, ctx: AppearanceContext, lip_rgb: Float[Array, "3"]
) -> tuple[Float[Array, "3"], Float[Array, ""]]:
    """(hue (luminance 1), weight 0..1) of the teeth this photo shows between its parted lips, if it does.

    A smiling photo holds the person's own teeth: their hue, in this photo's light and white balance, is a
    better guide than the eye whites' (the demo's astronaut has warm teeth beside bluish-white sclera: her
    painted teeth were a cold white band beside her own). Sampled at 0.35, 0.5 and 0.65 of the way from each
    inner upper to the inner lower lip point across the middle of the mouth (nearer the lips, the samples
    took their red), the brightest third (the lit crowns; the rest is the gap, shaded teeth or the tongue)
    averaged. Only the hue: the samples catch crowns' edges and shade, so they are darker than the lit
    crowns (with samples at a quarter, half and three quarters of the way, the brightest two of 21 were at
    0.93 of the exposure the eye whites give, which matches real teeth; on the 24 London smiling photos
    whose teeth show, taking the brighter half's luminance too made the painted teeth 0.11 darker against
    the skin than the photo's own). The weight rises with the opening (``OWN_TEETH_GAP_MM``) and with how
    much brighter and paler than the lips the samples are (``OWN_TEETH_CONTRAST``): a closed mouth, a dark
    gap or a tongue give 0."""
    src = ctx.landmarks[:, :2]
    up, lo = (src[jnp.asarray(ids[2:-2])] for ids in topo.face_topology().inner_lip_pairs())
    share = jnp.array([0.35, 0.5, 0.65], src.dtype)
    pts = up[None] + share[:, None, None] * (lo - up)[None]
    rgb = sample_bilinear(patch, pts.reshape(-1, 2))
    lum = _luminance(rgb)
    own = jnp.mean(rgb[jnp.argsort(-lum)[: rgb.shape[0] // 3]], axis=0)
    gap_mm = jnp.mean(jnp.linalg.norm(lo - up, axis=-1)) / (ctx.interocular / topo.IPD_MM)
    brighter = _luminance(own) / jnp.maximum(_luminance(lip_rgb), 1e-3)
    paler = _saturation(own) / jnp.maximum(_saturation(lip_rgb), 1e-3)
    (lo_g, hi_g), ((lo_b, hi_b), (lo_p, hi_p)) = OWN_TEETH_GAP_MM, OWN_TEETH_CONTRAST
    weight = (
        _smoothstep((gap_mm - lo_g) / (hi_g - lo_g))
        * _smoothstep((brighter - lo_b) / (hi_b - lo_b))
        * _smoothstep((paler - lo_p) / (hi_p - lo_p))
    )
    return own / jnp.maximum(_luminance(own), 1e-3), weight


def _saturation(rgb: Float[Array, "... 3"]) -> Float[Array, "..."]:
    """(max - min) / max of each colour: 0 for greys and whites, 1 for pure hues."""
    top = jnp.max(rgb, axis=-1)
    return (top - jnp.min(rgb, axis=-1)) / jnp.maximum(top, 1e-3)


def _cavity(f: _MouthFrame, lip_rgb: Float[Array, "3"]) -> Image:
    """The dark mouth cavity, lit from below: darkest at the top, in the shadow of the upper lip and teeth,
    lighter and redder towards its floor (the tongue and the floor of the mouth catch the light that enters
    over the lower lip), darker at the corners (the buccal corridors). Lit instead by light bounced off
    both lips, the band just under the upper teeth was the cavity's brightest, a grey rim under them."""
    v = jnp.clip(f.d_up / f.local_h, 0.0, 1.0)  # 0 at the inner upper lip, 1 at the lower
    floor = _smoothstep((v - 0.3) / 0.7)
    corner_dark = 1.0 - 0.5 * jnp.clip(jnp.abs(f.u), 0.0, 1.0) ** 2
    light = (0.07 + 0.2 * floor) * corner_dark
    # green and blue fall towards the floor
    tint = 1.0 - (CAVITY_FLOOR_RED * floor)[..., None] * jnp.array([0.0, 1.0, 1.0])[None, None, :]
    return lip_rgb[None, None, :] * light[..., None] * tint


def _tongue(f: _MouthFrame, lip_rgb: Float[Array, "3"]) -> tuple[Float[Array, "H W"], Image]:
    """(mask, colour) of the tongue: resting on the floor of every opening from ``TONGUE_FROM_MM`` (its tip
    behind the lower teeth, so it fills the lower part of the gap), redder than the lips, its back in the
    upper lip's shadow. Drawn on faces from 0.7 px/mm (``_detail``), and on smaller ones where it is a few
    pixels tall (``_visible``). From 14 mm openings only (before), a mouth opened by surprise was an empty
    black hole, and so it stayed on the demo's astronaut (0.68 px/mm) until the pixel rule."""
    v = f.d_up / f.local_h
    opened = _smoothstep((f.h_open / f.mm - TONGUE_FROM_MM) / 4.0)
    drawn = jnp.maximum(_detail(f.mm), _visible(0.4 * f.h_open))  # the tongue: ~0.4 of the opening's height
    mask = drawn * opened * jnp.exp(-jnp.square(f.u / 0.55)) * _smoothstep((v - 0.5) / 0.25)
    shade = 0.45 + 0.3 * _smoothstep((v - 0.5) / 0.5)
    rgb = lip_rgb[None, None, :] * jnp.array([1.0, 0.7, 0.72])[None, None, :] * shade[..., None]
    return mask, rgb


def _detail(mm: Float[Array, ""]) -> Float[Array, ""]:
    """How much of the mouth's fine structure to draw: 1 where a millimetre spans 1.2 pixels or more (faces
    of 76 px inter-pupil distance and up), 0 below 0.7 px/mm (44 px; the demo's astronaut: 0.68). Small
    faces get fewer, clearer structures: the upper teeth band and the dark cavity, without a clenched lower
    row's own crown tones and rounding (3-4 px crowns alias into stripes), the lower teeth and the tongue (a
    grey band beside a dark slit). The hairlines where crowns touch are drawn at every scale: widened to
    0.6 px with their darkness spread (``_crowns``), they do not alias."""
    return _smoothstep((mm - 0.7) / 0.5)


def _visible(px):
    """How fully to draw a structure of a small face (below ``_detail``'s scale) that is ``px`` pixels tall:
    not at all under 2 px (a grey line beside a dark slit), fully from 4 px. The tongue and lower teeth of
    a wide-open mouth are that tall even where a millimetre spans less than a pixel."""
    return _smoothstep((px - 2.0) / 2.0)


def _crowns(x_mm: Float[Array, "H W"], edges, mm: Float[Array, ""]):
    """(side, line, tone), each f32[H, W]: a pixel's place in its row of teeth, ``edges`` the gaps between
    the crowns (mm from the midline). ``side`` is 0 across the middle of a crown and rises (quadratically)
    to 1 at a gap, where its convex face has turned away from the light; ``line`` is the hairline where two
    crowns touch (``CONTACT_LINE_MM``; widened to 0.6 px on small faces with its darkness spread, so that it
    neither aliases nor darkens more); ``tone`` the crown's own brightness (``CROWN_TONES``)."""
    ax = jnp.abs(x_mm)
    e = np.asarray(edges, np.float32)
    to_gap = jnp.abs(ax - e[0])
    for g in e[1:]:
        to_gap = jnp.minimum(to_gap, jnp.abs(ax - g))
    # the crowns' half widths, interpolated between their middles
    half = _ramps(ax, 0.5 * (e[:-1] + e[1:]), 0.5 * np.diff(e))
    side = 1.0 - jnp.clip(to_gap / half, 0.0, 1.0)
    width = jnp.maximum(CONTACT_LINE_MM, 0.6 / mm)  # half-width at half depth, mm
    line = (CONTACT_LINE_MM / width) * _gauss(to_gap, width / 1.2)
    return side * side, line, _per_crown(ax, edges, CROWN_TONES)


def _per_crown(ax: Float[Array, "H W"], edges, values) -> Float[Array, "H W"]:
    """Each crown's own value at distance ``ax`` (mm) from the midline: ``values[k]`` between gaps k and
    k + 1 of ``edges`` (the last beyond the last gap), changing over 0.3 mm either side of a gap."""
    e = np.asarray(edges, np.float32)
    steps = np.stack([e[1:] - 0.3, e[1:] + 0.3], axis=1).reshape(-1)
    return _ramps(ax, steps, np.repeat(values, 2)[1:-1])


def _ramps(x, nodes, values):
    """``jnp.interp(x, nodes, values)`` (constant beyond the ends) as a sum of clipped ramps: a few fused
    elementwise operations per pixel, where ``jnp.interp`` searches and gathers (several times slower on
    XLA:CPU, per pixel of the mouth window)."""
    out = jnp.full_like(x, float(values[0]))
    for k in range(1, len(nodes)):
        rise, run = float(values[k] - values[k - 1]), float(nodes[k] - nodes[k - 1])
        if rise:
            out = out + rise * jnp.clip((x - float(nodes[k - 1])) * (1.0 / run), 0.0, 1.0)
    return out


def _teeth(
    f: _MouthFrame,
    teeth_rgb: Float[Array, "3"],
    smile: Float[Array, ""],
    bare: Float[Array, ""],
    clench: Float[Array, ""],
    below: Float[Array, "H W"],
):
    """Upper (and for wide openings lower) teeth: (upper mask, upper colour, lower mask, lower colour).

    The upper band sits under the upper lip, its incisal edge following the smile arc. How much of the gap
    it fills: a smile (AU12, AU10 lift the upper lip off the teeth) shows mostly teeth down to the lower lip
    (real smiles show ~10 mm of incisor crown), dark only in the corners; a dropped jaw alone (surprise)
    mostly the dark cavity under a rim of upper incisors (``REST_INCISOR_MM``). Each row is convex crowns
    (``CROWN_ROUNDING``) touching on hairlines (``CONTACT_LINE_MM``) that deepen towards the incisal edge,
    and darkens towards the corners where it turns away from the light; where the upper edge stands free
    over the cavity each crown ends at its own height (``INCISAL_RISE_MM``), and where it rests on the lower
    lip the rounded tips part in a shadowed notch at each gap (``LIP_EMBRASURE_MM``). Lower teeth from
    openings of ~6 mm (their full height by 16 mm), as tall as the lower lip is pulled off them (``bare``) at
    the midline and tapering to none 0.7 of the way to the corners (without a smile, also cut level where the
    lip rises off its lowest point: ``lip_rise``), in the upper row's tone times 0.85 (set back, under the
    upper teeth), their hairlines half as dark. Clenched (``clench``, see ``_clench``):
    each crown also in its own tone (``CROWN_TONES``); the upper row's edge on the bite line (``below`` = 0,
    pixels), notched between the crowns, over the lower row, which shows under it in the upper teeth's
    shadow (``OVERBITE_SHADOW``) down to its lip; no cavity.
    """
    detail = _detail(f.mm)
    gaps = sum(_gauss(jnp.abs(f.x_mm) - g, 0.7) for g in TOOTH_EDGES_MM[:4])  # the notches, 2 mm either side
    turn = jnp.clip(jnp.abs(f.u), 0.0, 1.0) ** 2
    # contact shadow where a smile's incisal edge meets the lower lip (no dark slit left between them)
    contact = 0.88 + 0.12 * _smoothstep(f.d_lo / (0.1 * f.local_h + 1.5))
    wide = _smoothstep((f.h_open / f.mm - 6.0) / 10.0)
    # fraction of the local gap height. (A wide-open smile keeping more of its gap to the upper teeth, a
    # 0.33 instead of 0.55 jaw penalty, looked less like a grimace by eye but bared more teeth: the critic
    # read 12 of 48 London excited outputs as angry, against 9, and excited fell from 0.71 to 0.65. At 0.55
    # a thick dark crescent parted the rows, wider than the real wide smiles' (103, 107, 130); at 0.45, with
    # the lower row opaque and lighter, excited read 40 of 48 instead of 38; 39 once the row tapers)
    reach = jnp.minimum(0.3 + 0.8 * smile - 0.45 * wide, 1.1)
    rest = jnp.minimum(REST_INCISOR_MM * f.mm, 0.3 * f.local_h)  # the relaxed upper lip's incisor display
    h_up = jnp.minimum(11.0 * f.mm * (1.0 - 0.3 * f.u * f.u), jnp.maximum(reach * f.local_h, rest))
    # a smile's teeth rest on the lower lip rather than leave a sliver of cavity under them (MIN_SLIVER_MM)
    sliver = (f.local_h - h_up) / f.mm
    shut = smile * (1.0 - _smoothstep((sliver - MIN_SLIVER_MM) / MIN_SLIVER_MM))
    h_up = h_up + shut * jnp.maximum(1.1 * f.local_h - h_up, 0.0)
    # rounded incisal corners: the edge rises into a small notch at each gap between crowns, where the
    # cavity (or the lower lip) shows between the tips; a straight edge was a mouth guard (London happy
    # outputs next to the same people's real smiles, by eye)
    # (a crown's full edge only: on the 2 mm rim of a relaxed open mouth notches drew chipped teeth)
    tall = _smoothstep((h_up / f.mm - 3.0) / 3.0)
    # (and only where the edge stands over the cavity: notches into the lip contact drew dark dots)
    notch = EMBRASURE_MM * f.mm
    rise = detail * notch * jnp.minimum(gaps, 1.0)
    free = 1.0 - _smoothstep((h_up - f.local_h) / notch + 1.0)
    shorter = _per_crown(jnp.abs(f.x_mm), TOOTH_EDGES_MM, INCISAL_RISE_MM) * f.mm
    h_up = h_up - tall * free * (rise + detail * shorter)
    # resting on the lower lip, the rounded tips still part at each gap: a shadowed notch between them (none
    # where it would be under a pixel deep: a soft line along the lip, the dark zipper of MIN_SLIVER_MM)
    crowns_up = _crowns(f.x_mm, TOOTH_EDGES_MM, f.mm)
    tip_notch = LIP_EMBRASURE_MM * f.mm * crowns_up[0]  # pixels; deepest at a gap, none mid-crown
    on_lip = tall * (1.0 - free) * (1.0 - clench) * detail * _smoothstep((tip_notch - 0.3) / 0.7)
    between_tips = on_lip * _smoothstep((f.d_up - f.local_h + tip_notch) / jnp.maximum(0.5 * tip_notch, 0.3))
    # where along its crown a pixel lies, 0 at the gum (or lip) .. 1 at the incisal edge; clenched, the edge
    # is the bite line
    soft_c = jnp.maximum(0.6, 0.2 * f.mm)
    edge = _smoothstep(f.d_up / jnp.maximum(h_up, 1.0))
    edge = edge + clench * (1.0 - _smoothstep(-below / (3.0 * f.mm)) - edge)
    # the opening sets how much of the lower row shows, not how opaque it is (a grey ghost over the cavity);
    # the lower lip covers the teeth beyond the incisors and canines (along all of it, their band followed
    # the lip's arch round the mouth: a denture's)
    h_lo = bare * wide * jnp.minimum(6.0 * f.mm * jnp.clip(1.0 - f.u * f.u / 0.5, 0.0, 1.0), 0.25 * f.local_h)
    # the incisal edges stay with the jaw: where a dropped jaw's lip rises off its lowest point it covers them
    # (a smile's lower lip curves up with the teeth's own arc)
    h_lo = jnp.clip(h_lo - (1.0 - smile) * f.lip_rise, 0.0, h_lo)
    edge_lo = _smoothstep(f.d_lo / jnp.maximum(h_lo, 1.0))
    edge_lo = edge_lo + clench * (1.0 - _smoothstep(below / (2.0 * f.mm)) - edge_lo)

    # Every row of teeth: convex crowns touching on hairlines that open towards the incisal edge; clenched,
    # each crown also in its own tone. (A smile's teeth were one bright band parted by soft lines 2 mm
    # either side of each gap: a mouth guard by eye next to the same people's real smiles. On the 24 London
    # people whose real smile is open, the crowns brought teeth_tex 0.029 -> 0.034, teeth_reach 0.52 ->
    # 0.56 and teeth_bright 1.175 -> 1.149 towards the real 0.048, 0.65 and 1.141 (scripts/measure_smile.py);
    # the critic's mean P(happy) on the 48 happy outputs stayed 0.613, its hits went 33 -> 31 (the top class
    # changed on 7 faces: 2 new hits, 4 lost), excited and surprised 39 -> 38 and 40 -> 39; lines half as
    # deep changed none of these hits. With tones too, a smile read as bared teeth: 28 happy hits)
    relief = 1.0 + (OPEN_RELIEF - 1.0) * (1.0 - clench)

    def row(crowns, along, depth, shaped=1.0):
        side, line, tone = crowns
        lines = relief * depth * (0.2 + 0.3 * along) * line
        shade = (1.0 - shaped * relief * CROWN_ROUNDING * side) * (1.0 - lines)
        return shade * (1.0 + shaped * clench * (tone - 1.0))

    shading = (1.0 - 0.65 * turn) * contact  # the row turning away from the light, the lower lip's contact
    tooth_shade = shading * row(crowns_up, edge, 1.0)
    # (below _detail's scale the lower row's crowns, 3-4 px, lose their own tones and rounding: on the demo's
    # astronaut they aliased into a grey band of vertical stripes. Both rows keep their hairlines: without
    # them her bared rows were a plain white mouth guard; on the 48 London photos at a third of their size
    # (0.5-0.65 px/mm) the critic's jittered-box P(hit) rose for happy by 0.012 and disgusted by 0.010, both
    # intervals excluding 0, the others by 0-0.006)
    tooth_shade_lo = shading * row(
        _crowns(f.x_mm, LOWER_TOOTH_EDGES_MM, f.mm), edge_lo, 0.5 + 0.5 * clench, detail
    )
    soft = jnp.maximum(0.9, 0.1 * h_up)
    # clenched rows reach their lips (the gums a raised lip could show stay in the lips' shadow) and meet on
    # a straight bite line: one that followed the opening's shape curved up at the corners, a smile arc
    rows = _band(jnp.abs(f.u), 0.0, 0.74 + 0.06 * clench, 0.15)
    m_up = _smoothstep((h_up - f.d_up) / soft) * rows
    m_up = m_up + clench * (_smoothstep((-rise - below) / soft_c) * rows - m_up)
    # the upper lip's shadow on the teeth; a clenched snarl's lip is lifted off them, its shadow a rim
    lip_shadow = 0.86 + 0.14 * _smoothstep(f.d_up / (0.35 * h_up + 1.0 - clench * 0.35 * h_up))
    up_shade = tooth_shade * lip_shadow * (1.0 - TIP_NOTCH_SHADE * between_tips)
    up_rgb = teeth_rgb[None, None, :] * up_shade[..., None]
    m_lo = jnp.maximum(detail, _visible(h_lo)) * _smoothstep((h_lo - f.d_lo) / soft)
    m_lo = m_lo * _band(jnp.abs(f.u), 0.0, 0.65, 0.12)
    # clenched, the lower row reaches up behind the upper one (showing in its notches)
    m_lo_c = _smoothstep((below + detail * notch + soft_c) / soft_c) * _band(jnp.abs(f.u), 0.0, 0.72, 0.12)
    m_lo = m_lo + clench * (m_lo_c - m_lo)
    overbite = 1.0 - clench * OVERBITE_SHADOW * (1.0 - _smoothstep(below / f.mm))
    # (at 0.72 a smile's lower row was a grey band under the white upper one.) A clenched lower row stands
    # just behind the upper one and is lit nearly as well, its shadow under the upper edge (``overbite``):
    # at 0.8 it was a row of brown tiles under white ones (London angry outputs, by eye); at 0.9 the critic's
    # jittered-box P(angry or afraid) of angry +0.012 (interval excluding 0), afraid +0.009, disgusted +0.003
    # (its single-box counts of angry and afraid fell by 2 faces each, within their run-to-run swing)
    lo_rgb = teeth_rgb[None, None, :] * ((0.85 + 0.05 * clench) * tooth_shade_lo * overbite)[..., None]
    return m_up, up_rgb, m_lo, lo_rgb


def _warm_shadows(rgb: Image, teeth_rgb: Float[Array, "3"], hue: Float[Array, "3"]) -> Image:
    """Shaded teeth ``rgb`` (``teeth_rgb`` times a shade) moved towards ``hue`` (luminance 1) as they darken
    (``SHADOW_WARMTH``), their luminance kept; lit teeth keep their colour."""
    knee, gain = SHADOW_WARMTH
    q = _luminance(rgb) / jnp.maximum(_luminance(teeth_rgb), 1e-3)
    share = jnp.clip(gain * (1.0 - q / knee), 0.0, 1.0)
    warm = rgb * (1.0 + share[..., None] * (hue - 1.0)[None, None, :])
    return warm * (_luminance(rgb) / jnp.maximum(_luminance(warm), 1e-6))[..., None]


def _lower_lip_pull(ctx: AppearanceContext, smile: Float[Array, ""]) -> Float[Array, ""]:
    """How far the lower lip is drawn off the lower teeth (``LOWER_TEETH_AT_REST`` .. 1): smiles, lip
    depressor and stretcher (AU16, AU20) and the forced stretch of AU27."""
    pull = smile + _au(ctx, "AU16") + _au(ctx, "AU20") + _au(ctx, "AU27")
    return LOWER_TEETH_AT_REST + (1.0 - LOWER_TEETH_AT_REST) * jnp.clip(pull, 0.0, 1.0)


def _clench(
    ctx: AppearanceContext, xy: Float[Array, "H W 2"]
) -> tuple[Float[Array, ""], Float[Array, "H W"]]:
    """(clench 0..1, below): how much the opening is bared, clenched teeth, and where the rows meet.

    Lips drawn off the teeth (AU10 raises the upper lip, AU16 lowers the lower one, AU20 stretches them)
    over a closed jaw (no AU26/AU27) and no smile (AU12: the smile's own teeth path) bare both rows of teeth
    clenched together: anger's and disgust's square mouth. Painted by the dropped jaw's rules, that opening
    was a band of upper teeth over a dark cavity, a gasp (revision 20's London angry outputs read surprised
    on 11 of 48 faces). ``below``: each pixel's distance (pixels) under the bite line,
    the line through the photo's own lip seam (which a closed jaw keeps in place) along the mouth's corners.
    """
    t = topo.face_topology()
    up, lo = t.region("lips_inner_upper"), t.region("lips_inner_lower")
    i_up, i_lo = int(up[len(up) // 2]), int(lo[len(lo) // 2])  # the inner lips' midline points
    jaw = _au(ctx, "AU26") + _au(ctx, "AU27")
    bared = _au(ctx, "AU10") + _au(ctx, "AU16") + 0.5 * _au(ctx, "AU20")
    no_smile = 1.0 - _smoothstep(_au(ctx, "AU12") / 0.3)
    clench = (1.0 - _smoothstep(jaw / 0.35)) * no_smile * _smoothstep(bared / 0.6)
    seam = 0.5 * (ctx.landmarks[i_up, :2] + ctx.landmarks[i_lo, :2])
    # the mouth's own frame, "down" pointing away from the nose: not towards the lower inner lip, which on a
    # closed mouth FaceMesh often puts at or above the upper one (21 of the 48 London neutral photos),
    # turning the rows upside down
    down = mouth_coordinates(ctx.landmarks, up[0], up[-1])[2]
    return clench, (xy - seam[None, None, :]) @ down


def mouth_interior(
    render: Image, patch: Image, ctx: AppearanceContext, xy: Float[Array, "H W 2"]
) -> tuple[Image, Float[Array, "H W"], Float[Array, ""], tuple[Float[Array, "H W"], Float[Array, "H W 2"]]]:
    """Paint a lit cavity, upper (and for wide openings lower) teeth and a tongue hint into the new opening.

    Soft masks from distances to the inner lip contours (``_mouth_frame``); colours from this photo's lips
    and eye whites (``_mouth_colours``); layers back to front: cavity, tongue, lower teeth, upper teeth. Lips
    that close over the photo's open mouth take their own colour where its opening still shows
    (``_closed_lips``).

    Returns:
        (image, alpha f32[H, W] of the painted interior, added opening area in pixels, (``deep``: where the
        interior is painted well inside its contour, the source shift along a closing seam)): how the warp's
        source positions change under the paint (``pipeline._painted_sources``).
    """
    f = _mouth_frame(ctx, xy)
    lips, teeth_rgb, shadow_hue = _mouth_colours(patch, ctx)
    lip_rgb = jnp.mean(lips, axis=0)
    smile = jnp.clip(_au(ctx, "AU12") + _au(ctx, "AU10"), 0.0, 1.0)
    clench, below = _clench(ctx, xy)
    m_up, up_rgb, m_lo, lo_rgb = _teeth(f, teeth_rgb, smile, _lower_lip_pull(ctx, smile), clench, below)
    tongue_m, tongue_rgb = _tongue(f, lip_rgb)
    col = _cavity(f, lip_rgb)
    col = col * (1 - tongue_m[..., None]) + tongue_rgb * tongue_m[..., None]
    up_rgb, lo_rgb = (_warm_shadows(c, teeth_rgb, shadow_hue) for c in (up_rgb, lo_rgb))
    col = col * (1 - m_lo[..., None]) + lo_rgb * m_lo[..., None]
    col = col * (1 - m_up[..., None]) + up_rgb * m_up[..., None]
    out = render * (1 - f.alpha[..., None]) + col * f.alpha[..., None]
    out, shift = _closed_lips(out, f, lips, *_across_seam(ctx, xy))
    return out, f.alpha, f.opening, (f.deep, shift)
