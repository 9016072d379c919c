"""Lid closing as a share of the person's own eye opening.

The model's deformations are in millimetres on one template face, so a lid that drops 5 mm (AU43, sad and
bored) leaves a wide eye half open and a narrow one nearly shut. ``lid_share`` rescales how far the target
moves the lids towards each other by the face's own opening, so every face loses the same share of it.
Pure JAX, used by ``pipeline.edit_offsets``; thresholds come from FaceMesh on the 48 London neutral photos.
"""

import functools

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .face import topology as topo

REST_EYE_APERTURE = 0.0923
"""Median eye opening of 48 neutral London photos (FaceMesh; the mean gap between paired upper and lower lid
points, corners left out, in inter-pupil distances; 10th-90th percentile per eye 0.082-0.109; the template's
0.104). A face with this opening closes as many pixels per inter-pupil distance as the deformation says."""
APERTURE_RATIO = (0.5, 2.0)
"""Bounds of the face's opening over ``REST_EYE_APERTURE`` (real faces: 0.85-1.5; guards a bad detection)."""
MAX_CLOSED = 0.97
"""The lids never close more than this share of the face's own gap (``au_fields.LID_CLOSE_FRACTION``)."""
RING_SHARE = 0.7
"""Share of its lid point's correction that the skin ring next to each lid contour follows (as AU43's)."""


@functools.cache
def _lid_points() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paired upper / lower lid points of both eyes, corners left out, each i32[E, P]; and the skin ring
    next to the upper / lower contours with, per ring point, the lid point it follows: i32[E, Q, 2]
    (ring id, index into that eye's pairs), upper then lower."""
    t = topo.face_topology()
    x = t.template
    up, lo, ring_up, ring_lo = [], [], [], []
    for side in ("right", "left"):
        u, low = t.region(f"{side}_eye_upper"), t.region(f"{side}_eye_lower")[::-1]
        contour = np.union1d(u, low)
        up.append(u[1:-1])
        lo.append(low[1:-1])
        for c, rings in ((u[1:-1], ring_up), (low[1:-1], ring_lo)):
            tri = t.triangles[np.isin(t.triangles, c).any(1)]
            ring = np.setdiff1d(tri.ravel(), contour)
            near = np.argmin(np.linalg.norm(x[ring, None] - x[None, c], axis=-1), axis=1)
            rings.append(np.stack([ring, near], axis=1))
    as_i32 = functools.partial(np.asarray, dtype=np.int32)
    return as_i32(up), as_i32(lo), as_i32(ring_up), as_i32(ring_lo)


def _down(landmarks: Float[Array, "478 3"]) -> Float[Array, "2"]:
    """Unit image direction from the brows towards the chin (normal to the line between the pupils)."""
    eyes = landmarks[topo.LEFT_PUPIL, :2] - landmarks[topo.RIGHT_PUPIL, :2]
    return jnp.stack([-eyes[1], eyes[0]]) / jnp.maximum(jnp.linalg.norm(eyes), 1e-6)


def eye_gaps(landmarks: Float[Array, "478 3"]) -> Float[Array, "2 P"]:
    """Gaps between paired upper and lower lid points of each eye (right, left; pixels, >= 0 when open)."""
    up, lo, _, _ = _lid_points()
    down = _down(landmarks)
    return (landmarks[lo, :2] - landmarks[up, :2]) @ down


def lid_share(
    landmarks: Float[Array, "478 3"], offsets: Float[Array, "478 3"], interocular: Float[Array, ""]
) -> Float[Array, "478 3"]:
    """Correction (pixels) to ``offsets`` so that the lids close the same share of this face's opening.

    ``landmarks`` is the face at rest, ``offsets`` the target's deformation on it. Per pair of lid points,
    the closing :math:`c` (how much nearer the upper point comes to the lower one) becomes
    :math:`\\min(r c, m g)` with :math:`r` the eye's opening over ``REST_EYE_APERTURE`` (clipped to
    ``APERTURE_RATIO``), :math:`g` the pair's own gap and :math:`m` = ``MAX_CLOSED``; the change is shared
    between the two lids in proportion to how much each moved to close, and the skin ring beside each lid
    follows its lid point by ``RING_SHARE``. Opening (negative :math:`c`) is left as it is.
    """
    up, lo, ring_up, ring_lo = _lid_points()
    down = _down(landmarks)
    gap = eye_gaps(landmarks)
    ratio = jnp.clip(jnp.mean(gap, axis=1) / (REST_EYE_APERTURE * interocular), *APERTURE_RATIO)
    move_up = offsets[up, :2] @ down  # upper lid downwards
    move_lo = -(offsets[lo, :2] @ down)  # lower lid upwards
    closing = move_up + move_lo
    wanted = jnp.minimum(ratio[:, None] * closing, MAX_CLOSED * jnp.maximum(gap, 0.0))
    extra = jnp.where(closing > 0, wanted - closing, 0.0)
    mu, ml = jnp.maximum(move_up, 0.0), jnp.maximum(move_lo, 0.0)
    total = mu + ml
    share_up = jnp.where(total > 0, mu / jnp.where(total > 0, total, 1.0), 0.5)
    d_up = (share_up * extra)[..., None] * down[None, None, :]  # [E, P, 2]
    d_lo = -((1.0 - share_up) * extra)[..., None] * down[None, None, :]
    out = jnp.zeros((landmarks.shape[0], 2), landmarks.dtype)
    out = out.at[up].add(d_up).at[lo].add(d_lo)
    eye = jnp.arange(up.shape[0])[:, None]
    out = out.at[ring_up[..., 0]].add(RING_SHARE * d_up[eye, ring_up[..., 1]])
    out = out.at[ring_lo[..., 0]].add(RING_SHARE * d_lo[eye, ring_lo[..., 1]])
    return jnp.concatenate([out, jnp.zeros_like(landmarks[:, 2:])], axis=1)
