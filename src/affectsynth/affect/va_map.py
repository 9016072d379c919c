"""The valence-arousal -> Action Unit intensity map.

Emotion prototypes (EMFACS patterns, FACTS.md section 3) sit at published V-A anchors (section 2);
``au_intensities`` blends them over the whole V-A square, so nearby targets get nearby AU patterns.
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..face import topology as topo
from .au_fields import AU_NAMES, _lid_pairs

# --------------------------------------------------------------------------------------------------------
# Valence-arousal -> AU intensities

# Emotion prototypes: (name, valence, arousal, {AU: intensity at the anchor}). Anchors from Russell &
# Mehrabian 1977 and Russell 1980 (FACTS.md 2); AU patterns from EMFACS prototypes and Du et al. 2014
# (FACTS.md 3), softened where the word is not a face (calm, relaxed: soft lids and a slight smile).
PROTOTYPES: tuple[tuple[str, float, float, dict[str, float]], ...] = (
    ("content", 0.79, -0.01, {"AU6": 0.35, "AU12": 0.6}),
    ("pleased", 0.77, 0.19, {"AU6": 0.55, "AU12": 0.8, "AU25": 0.2}),
    ("happy", 0.81, 0.51, {"AU6": 0.8, "AU12": 1.0, "AU25": 0.4, "AU26": 0.1}),
    (
        "excited",
        0.62,
        0.76,
        {"AU1": 0.3, "AU2": 0.3, "AU5": 0.3, "AU6": 0.7, "AU12": 0.9, "AU25": 0.9, "AU26": 0.5},
    ),
    ("astonished", 0.16, 0.89, {"AU1": 0.9, "AU2": 0.9, "AU5": 0.9, "AU25": 1.0, "AU26": 0.8}),
    (
        "afraid",
        -0.34,
        0.64,
        {"AU1": 0.8, "AU2": 0.5, "AU4": 0.5, "AU5": 0.9, "AU7": 0.3, "AU20": 0.8, "AU25": 0.7, "AU26": 0.3},
    ),
    ("angry", -0.51, 0.59, {"AU4": 1.0, "AU5": 0.5, "AU7": 0.7, "AU10": 0.2, "AU23": 0.8, "AU24": 0.4}),
    ("disgusted", -0.60, 0.35, {"AU4": 0.4, "AU9": 0.9, "AU10": 0.7, "AU15": 0.4, "AU16": 0.3, "AU17": 0.4}),
    ("displeased", -0.55, 0.16, {"AU4": 0.6, "AU14": 0.2, "AU15": 0.4, "AU17": 0.5, "AU24": 0.3}),
    ("sad", -0.63, -0.27, {"AU1": 0.8, "AU4": 0.6, "AU15": 0.9, "AU17": 0.5, "AU43": 0.15}),
    ("bored", -0.66, -0.63, {"AU4": 0.15, "AU14": 0.3, "AU15": 0.3, "AU43": 0.4}),
    ("tired", 0.04, -0.63, {"AU1": 0.1, "AU25": 0.1, "AU43": 0.55}),
    ("sleepy", 0.28, -0.67, {"AU12": 0.1, "AU26": 0.15, "AU43": 0.6}),
    ("relaxed", 0.69, -0.45, {"AU6": 0.15, "AU12": 0.4, "AU43": 0.3}),
    ("calm", 0.56, -0.31, {"AU12": 0.3, "AU43": 0.2}),
)
"""V-A emotion prototypes with their AU patterns; ``au_intensities`` blends them over the whole square."""

ANGULAR_CONCENTRATION = 12.0
"""Von Mises concentration of the angular blend of prototypes (about a 17-degree half-width)."""
MAX_RADIUS_GAIN = 1.3
"""Intensity gain at most this multiple of the prototype's own (corners of the square go a bit beyond)."""

_P_DIRS = np.array([[v, a] for _, v, a, _ in PROTOTYPES]) / np.linalg.norm(
    np.array([[v, a] for _, v, a, _ in PROTOTYPES]), axis=1, keepdims=True
)
_P_RADII = np.linalg.norm(np.array([[v, a] for _, v, a, _ in PROTOTYPES]), axis=1)
_P_PATTERNS = np.array([[p.get(n, 0.0) for n in AU_NAMES] for _, _, _, p in PROTOTYPES])


def _au_map(xp, valence, arousal):
    """The V-A -> AU map written once for NumPy and jax.numpy (``xp``)."""
    r2 = valence**2 + arousal**2
    safe = xp.where(r2 > 1e-12, r2, 1.0)
    r = xp.where(r2 > 1e-12, xp.sqrt(safe), 0.0)
    u = xp.stack([valence, arousal]) / xp.where(r2 > 1e-12, xp.sqrt(safe), 1.0)
    dirs = xp.asarray(_P_DIRS, dtype=u.dtype)
    logits = ANGULAR_CONCENTRATION * (dirs @ u)
    w = xp.exp(logits - xp.max(logits))
    w = w / xp.sum(w)
    pattern = w @ xp.asarray(_P_PATTERNS, dtype=u.dtype)
    radius = w @ xp.asarray(_P_RADII, dtype=u.dtype)
    gain = xp.minimum(r / radius, MAX_RADIUS_GAIN)
    return xp.clip(gain * pattern, 0.0, 1.0)


def au_intensities(valence: float, arousal: float) -> np.ndarray:
    """AU intensities (``AU_NAMES`` order) for a target affect, over the whole [-1, 1]^2 square.

    A von Mises blend over angle of the emotion prototypes (``PROTOTYPES``):
    :math:`I(v, a) = \\mathrm{clip}(\\min(r / \\bar r, g_{max}) \\sum_p w_p P_p, 0, 1)`,
    :math:`w_p \\propto \\exp(\\kappa\\, u \\cdot u_p)` with ``u`` the unit direction of (v, a), ``r`` its
    length and :math:`\\bar r = \\sum_p w_p r_p` the blended anchor radius: zero at the origin, the
    prototype's pattern at its anchor, growing with the distance from the origin.

    Returns:
        f32[K].
    """
    v, a = np.float64(valence), np.float64(arousal)
    return _au_map(np, v, a).astype(np.float32)


def au_intensities_jax(target: Float[Array, "2"]) -> Float[Array, " K"]:
    """``au_intensities`` in pure jax.numpy (jit/vmap/grad-friendly; the gradient is finite at the origin)."""
    target = jnp.asarray(target)
    return _au_map(jnp, target[0], target[1])


def intensities_to_deformation(
    intensities: Float[Array, " K"], basis: Float[Array, "K V 3"]
) -> Float[Array, "V 3"]:
    """Deformation of an AU intensity vector: :math:`\\sum_k I_k B_k`."""
    return jnp.einsum("k,kvc->vc", intensities, basis)


def closure_limits(fields: dict[str, np.ndarray], topology: topo.FaceTopology | None = None) -> np.ndarray:
    """Per-AU fraction of each eye's opening that the AU closes, at each lid pair: f32[K, P].

    A combination with intensities ``w >= 0`` keeps every eye open iff ``max_p sum_k w_k c_kp < 1``; the
    generator scales the closing AUs down to stay below ``0.9``.
    """
    t = topo.face_topology() if topology is None else topology
    x = t.template
    cols = []
    for side in ("right", "left"):
        up, lo = _lid_pairs(t, side)
        gap = np.maximum(x[up, 1] - x[lo, 1], 1e-3)
        inner = gap > 0.2 * gap.max()  # corners are shared points: no gap to close
        cols.append((up[inner], lo[inner], gap[inner]))
    out = []
    for n in AU_NAMES:
        f = fields.get(n)
        if f is None:
            out.append(np.zeros(sum(len(c[0]) for c in cols)))
            continue
        out.append(np.concatenate([np.maximum(0.0, -(f[up, 1] - f[lo, 1]) / gap) for up, lo, gap in cols]))
    return np.array(out, np.float32)


def limit_closure(intensities: np.ndarray, closure: np.ndarray, ceiling: float = 0.9) -> np.ndarray:
    """Scale the lid-closing AUs down so that no eye closes past ``ceiling`` of its opening."""
    total = (intensities @ closure).max() if closure.size else 0.0
    closing = closure.max(1) > 0
    factor = min(1.0, ceiling / total) if total > 0 else 1.0
    return np.where(closing, intensities * factor, intensities).astype(np.float32)
