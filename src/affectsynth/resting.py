"""Neutralisation's landmark rules for what the face model's fit misses: a smile's raised lip corners.

Pure JAX, used by ``pipeline._neutral_offsets``. Thresholds come from FaceMesh on the 48 London people
(neutral and smiling photos of each, FACTS.md section 9).
"""

import jax.numpy as jnp
from jaxtyping import Array, Float

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
    x = jnp.clip((shape[0] - SMILING_CORNER_HEIGHT[0]) / SMILING_CORNER_HEIGHT[1], 0.0, 1.0)
    smiling = jnp.maximum(parted, x * x * (3.0 - 2.0 * x))
    excess = shape - jnp.array([REST_CORNER_HEIGHT, REST_MOUTH_WIDTH])
    # the smaller of the two: the mode lifts the corners less than it widens, so undoing all of the lift
    # of a high-cornered mouth pursed it (London 010: 0.06 IOD narrower than her neutral photo)
    amount = jnp.clip(jnp.min(excess / jnp.maximum(per_unit, 1e-4)), 0.0, MAX_SMILE_RELAX)
    return -(smiling * amount) * smile
