"""Landmark rules for the mouth at rest, where the face model's fit misses it: a smile's raised lip corners
(neutralisation) and a resting mouth's turn (taken away where the target's valence goes against it).

Pure JAX, used by ``pipeline._neutral_offsets`` and ``pipeline.edit_offsets``. Thresholds come from
FaceMesh on the 48 London people (neutral and smiling photos of each, FACTS.md section 9).
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._smooth import smoothstep
from .face import topology as topo

REST_CORNER_HEIGHT = -0.025
"""Median height of the lip corners above the lips' centre line (midpoint of FaceMesh 13 and 14), in
inter-pupil distances, over 48 neutral London photos (their smiles: 0.049). A smile is relaxed to it."""
REST_MOUTH_WIDTH = 0.77
"""Median distance between the lip corners (FaceMesh 61, 291) over the same neutral photos, in inter-pupil
distances (their smiles: 0.89). Relaxing a smile never narrows the mouth below it."""
SMILING_CORNER_HEIGHT = (0.065, 0.04)
"""Corners higher than ``[0]`` (the highest of the 48 neutral photos: 0.060) start to count as a smile even
with closed lips, fully ``[1]`` higher; below it only parted lips (``close_lips``) mark a smile."""
MAX_SMILE_RELAX = 0.6
"""Most of the lip-corner mode that neutralisation takes back (more pursed some relaxed London smiles)."""


def _mouth_shape(landmarks: Float[Array, "478 3"]) -> Float[Array, "2"]:
    """(height of the lip corners above the midpoint of the inner-lip centres along the eyes' normal, the
    corners' distance), in inter-pupil distances (height positive: corners up)."""
    x = landmarks[:, :2]
    eyes = x[topo.LEFT_PUPIL] - x[topo.RIGHT_PUPIL]
    iod = jnp.maximum(jnp.linalg.norm(eyes), 1e-6)
    up = jnp.stack([eyes[1], -eyes[0]]) / iod  # image y points down: "up" is -y for level eyes
    height = ((0.5 * (x[61] + x[291]) - 0.5 * (x[13] + x[14])) @ up) / iod
    return jnp.stack([height, jnp.linalg.norm(x[291] - x[61]) / iod])


def _smiling(shape: Float[Array, "2"], parted: Float[Array, ""]) -> Float[Array, ""]:
    """Whether the face smiles, 0..1: its lips are parted beyond rest (``parted``) or its corners stand higher
    than on any neutral photo (``SMILING_CORNER_HEIGHT``; ``shape``: ``_mouth_shape``)."""
    return jnp.maximum(parted, smoothstep((shape[0] - SMILING_CORNER_HEIGHT[0]) / SMILING_CORNER_HEIGHT[1]))


def relax_smile(
    landmarks: Float[Array, "478 3"], smile: Float[Array, "478 3"], parted: Float[Array, ""]
) -> Float[Array, "478 3"]:
    """Offsets (pixels) that take a smile's raised corners and bunched cheeks to rest, for neutralisation.

    The face model's fit gives most of a real smile to face shape (on London smiles the fitted lip-corner
    mode stays under its resting allowance), so the smile is measured on the landmarks: the corners' height
    above the lips' centre (``_mouth_shape``) beyond ``REST_CORNER_HEIGHT``, or its width beyond
    ``REST_MOUTH_WIDTH`` if that is less, is undone by a negative amount (at most ``MAX_SMILE_RELAX``) of
    ``smile`` (the lip-corner-puller mode's image offsets at activation 1, which also carry its cheek).
    Only when the face smiles: the lips are parted beyond rest (``parted``, ``close_lips``'s fraction) or the
    corners stand higher than on any neutral photo (``SMILING_CORNER_HEIGHT``); a resting face gets 0.
    """
    shape = _mouth_shape(landmarks)
    per_unit = _mouth_shape(landmarks + smile) - shape  # rise and widening per unit of the mode (linear)
    smiling = _smiling(shape, parted)
    excess = shape - jnp.array([REST_CORNER_HEIGHT, REST_MOUTH_WIDTH])
    # the smaller of the two: the mode lifts the corners less than it widens, so undoing all of the lift
    # of a high-cornered mouth pursed it (London 010: 0.06 IOD narrower than her neutral photo)
    amount = jnp.clip(jnp.min(excess / jnp.maximum(per_unit, 1e-4)), 0.0, MAX_SMILE_RELAX)
    return -(smiling * amount) * smile


CORNER_DROP_SPREAD = (0.2, 0.5)
"""How far ``level_corners``'s move reaches: across the lip line, a Gaussian of 0.2 inter-pupil distances
(0 from three of them: the nose and the chin's tip stay); beyond the corners, one of 0.5 half mouth widths."""
MAX_CORNER_DROP = 0.08
"""Most ``level_corners`` lowers the corners (inter-pupil distances; the 24 open London smiles kept 0.05
above the same people's neutral photos after ``relax_smile``)."""


def gaussian_fade(x: Float[Array, "*n"]) -> Float[Array, "*n"]:
    """``exp(-x^2)`` lowered and rescaled to end at exactly 0 from ``|x| = 3`` (1 at 0): a move that fades
    this way leaves whatever lies further away bit-for-bit where it was."""
    floor = np.exp(-9.0)
    return jnp.maximum(jnp.exp(-jnp.square(x)) - floor, 0.0) / (1.0 - floor)


def mouth_coordinates(
    landmarks: Float[Array, "478 3"], left, right
) -> tuple[Float[Array, " 478"], Float[Array, " 478"], Float[Array, "2"]]:
    """Every landmark in the mouth's frame: (u, v, down). ``u`` runs along the line from landmark ``left`` to
    ``right`` (the lips' corners), -1 and 1 at them; ``v`` (pixels) across it along ``down``, the unit normal
    pointing away from the nose (down the face, whatever the head's roll)."""
    x = landmarks[:, :2]
    c0, c1 = x[left], x[right]
    width = jnp.maximum(jnp.linalg.norm(c1 - c0), 1e-6)
    mid, along = 0.5 * (c0 + c1), (c1 - c0) / width
    down = jnp.stack([-along[1], along[0]])
    down = down * jnp.where(jnp.dot(mid - x[topo.NOSE_TIP], down) < 0.0, -1.0, 1.0)
    rel = x - mid[None, :]
    return rel @ along / (0.5 * width), rel @ down, down


def _lower_corners(
    landmarks: Float[Array, "478 3"], interocular, drop, *, own_curve: bool = True
) -> Float[Array, "478 3"]:
    """Offsets (pixels) that bring the sides of the lip line (and the lips and skin around them) down by
    ``drop g(u)`` pixels (up where ``drop`` is negative), fading across the lip line (``CORNER_DROP_SPREAD``).
    ``g`` is 0 at the centre, 1 at the corners and held beyond them: the line's own rise towards the corners
    (``own_curve``, for a smile's curve), else ``u^2`` (a resting line that is tilted or wavy has no rise to
    follow: its own rise lowered a stretch beside the centre and not the corners). The mouth does not narrow
    and the line does not wave (a corner depressor's narrower footprint bent it into an M)."""
    t = topo.face_topology()
    seam = jnp.asarray(t.region("lips_inner_upper"))
    iod = jnp.maximum(interocular, 1e-6)
    u, v, down = mouth_coordinates(landmarks, seam[0], seam[-1])
    nodes, line = jax.lax.cummax(u[seam]), v[seam]  # non-decreasing, as interp needs
    v_line = jnp.interp(u, nodes, line)  # the lip line under (or over) each point; held beyond the corners
    if own_curve:
        centre = jnp.interp(0.0, nodes, line)
        depth = jnp.maximum(centre - 0.5 * (line[0] + line[-1]), 1e-3 * iod)  # the line's sag below its ends
        g = jnp.clip((centre - v_line) / depth, 0.0, 1.0)
    else:
        g = jnp.minimum(jnp.square(u), 1.0)
    g = g * jnp.exp(-jnp.square(jnp.maximum(jnp.abs(u) - 1.0, 0.0) / CORNER_DROP_SPREAD[1]))
    fade = gaussian_fade((v - v_line) / (CORNER_DROP_SPREAD[0] * iod))
    move = (drop * g * fade)[:, None] * down[None, :]
    return jnp.concatenate([move, jnp.zeros_like(landmarks[:, 2:])], axis=-1)


def level_corners(
    landmarks: Float[Array, "478 3"], interocular: Float[Array, ""], parted: Float[Array, ""]
) -> Float[Array, "478 3"]:
    """Offsets (pixels) that lower what is left of a smile's raised corners after ``relax_smile``: the line
    where the closed lips meet keeps the smile's curve, so its sides come down (``_lower_corners``) by the
    corners' height above ``REST_CORNER_HEIGHT`` (undoing more of the lip-corner puller instead pursed wide
    mouths). Gated like ``relax_smile``: a resting face gets 0."""
    shape = _mouth_shape(landmarks)
    smiling = _smiling(shape, parted)
    iod = jnp.maximum(interocular, 1e-6)
    drop = smiling * jnp.clip(shape[0] - REST_CORNER_HEIGHT, 0.0, MAX_CORNER_DROP) * iod  # pixels
    return _lower_corners(landmarks, interocular, drop)


AFFECT_VALENCE = (0.15, 0.45)
"""``unturn_corners`` starts to act at valences beyond ``+-[0]`` and acts fully beyond ``+-[1]``: the
targets of issue 15 (happy 0.8 ... calm 0.55, afraid -0.5 ... sad -0.6) all get the whole of it, surprised
(0.3) half."""


def unturn_corners(
    landmarks: Float[Array, "478 3"], interocular: Float[Array, ""], valence: Float[Array, ""]
) -> Float[Array, "478 3"]:
    """Offsets (pixels) that take away a resting mouth's turn where the target's valence goes against it: for
    an unpleasant target, corners that stand higher above the lips' centre than the median neutral face's
    (``REST_CORNER_HEIGHT``) come down to it; for a pleasant one, corners that stand lower come up to it
    (``_lower_corners``; at most ``MAX_CORNER_DROP`` either way). In full beyond ``AFFECT_VALENCE[1]``, not at
    all within ``AFFECT_VALENCE[0]`` of neutral: a neutral target keeps the person's own mouth.

    People's neutral mouths differ in their turn (the 48 London photos: -0.100 to +0.060 inter-pupil
    distances, median -0.025). The face model's fit gives the turn to face shape, not to expression, so it
    survives neutralisation and the expressions add to it. Bared teeth on a mouth that turns up kept their
    corners level with the lips' centre, an upturned band that reads as a grin (a second classifier read
    009's and 014's afraid, angry and disgusted faces as happy); a smile on a mouth that turns down kept a
    flatter curve (the critic's P(happy) at the happy target rose with the resting turn, Spearman 0.38 over
    the 42 London faces it can read). Applied to ``landmarks`` at rest.
    """

    shape = _mouth_shape(landmarks)
    iod = jnp.maximum(interocular, 1e-6)
    excess = shape[0] - REST_CORNER_HEIGHT
    # an upturn comes down for unpleasant targets, a downturn (raised) goes up for pleasant ones
    drop = smoothstep(-valence, *AFFECT_VALENCE) * jnp.clip(excess, 0.0, MAX_CORNER_DROP)
    drop = drop + smoothstep(valence, *AFFECT_VALENCE) * jnp.clip(excess, -MAX_CORNER_DROP, 0.0)
    return _lower_corners(landmarks, interocular, drop * iod, own_curve=False)
