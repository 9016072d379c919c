"""Lip contact in image space: closing the inner lips of a deformed face where the expression presses them."""

import jax.numpy as jnp
from jaxtyping import Array, Float

from .._smooth import smoothstep
from ..face import topology as topo
from .au_fields import AU_NAMES

PRESSING_AUS = ("AU23", "AU24")
"""Lip tightener and presser: the lips are in contact while they act."""
PARTING_AUS = ("AU9", "AU10", "AU25", "AU26", "AU27")
"""AUs that lift the upper lip off the lower one or open the mouth."""


def press_lips(
    landmarks: Float[Array, "478 3"], au: Float[Array, " K"], margin: float = 0.5
) -> Float[Array, "478 3"]:
    """Offsets (pixels) that bring the inner lips of a deformed face into contact where the lips are pressed.

    A class mean of frames around anger blends its pressed lips (AU23, AU24) with the nose wrinkler and
    upper-lip raiser of its neighbour disgust (AU9, AU10), which lift the upper lip 2-3 mm: a slack, parted
    mouth that is neither. While pressing dominates parting (``au`` in ``AU_NAMES`` order, the applied
    intensities), the lips touch: each inner-lip pair moves to its midpoint by the fraction
    ``smoothstep((press - part) / margin)``, ``press`` and ``part`` the summed intensities of
    ``PRESSING_AUS`` and ``PARTING_AUS``. Exactly 0 when nothing presses (smiles, surprise, disgust).
    """
    idx = {n: i for i, n in enumerate(AU_NAMES)}
    press = sum(jnp.maximum(au[idx[n]], 0.0) for n in PRESSING_AUS)
    part = sum(jnp.maximum(au[idx[n]], 0.0) for n in PARTING_AUS)
    frac = smoothstep((press - part) / margin)
    upper, lower = (jnp.asarray(ids) for ids in topo.face_topology().inner_lip_pairs())
    half = 0.5 * (landmarks[lower] - landmarks[upper])
    half = half.at[:, 2].set(0.0)  # in the image plane only
    return jnp.zeros_like(landmarks).at[upper].add(frac * half).at[lower].add(-frac * half)
