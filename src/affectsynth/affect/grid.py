"""The valence-arousal (V-A) space: a grid of square classes, emotion presets and target validation.

The paper cuts [-1, 1]^2 into 10 x 10 square classes of side 0.2. Class ids run valence-fastest::

    class id = arousal_row * n_valence + valence_column

with column 0 at the lowest valence and row 0 at the lowest arousal. A bin is half-open, ``[lo, lo + w)``,
except the last one, which also takes the upper edge: valence or arousal exactly 1 falls in the last class.

Empty classes (no gallery data) are filled by one documented rule, ``nearest_populated``: the populated class
whose centre is nearest in V-A (Euclidean distance between centres; ties go to the lowest class id).
"""

import dataclasses
import functools
import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._types import Target


@dataclasses.dataclass(frozen=True)
class AffectGrid:
    """A regular grid of square V-A classes over ``[low, high]^2`` (static, hashable configuration).

    Attributes:
        n_valence: number of columns along valence.
        n_arousal: number of rows along arousal.
        low / high: the range of both axes.
    """

    n_valence: int = 10
    n_arousal: int = 10
    low: float = -1.0
    high: float = 1.0

    def __post_init__(self):
        if int(self.n_valence) < 1 or int(self.n_arousal) < 1:
            raise ValueError(f"grid needs at least one class per axis, got {self.n_valence}x{self.n_arousal}")
        if not float(self.high) > float(self.low):
            raise ValueError(f"grid range must have high > low, got [{self.low}, {self.high}]")

    @property
    def num_classes(self) -> int:
        """Total number of classes, ``n_valence * n_arousal``."""
        return int(self.n_valence) * int(self.n_arousal)

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_arousal, n_valence)``: the class grid as an image (row = arousal bin)."""
        return int(self.n_arousal), int(self.n_valence)

    @property
    def cell_size(self) -> tuple[float, float]:
        """Side of a class along valence and along arousal."""
        span = float(self.high) - float(self.low)
        return span / int(self.n_valence), span / int(self.n_arousal)


def num_classes(grid: AffectGrid) -> int:
    """Number of classes of ``grid``."""
    return grid.num_classes


@functools.cache
def _edges(n: int, low: float, high: float) -> np.ndarray:
    """The n - 1 inner bin edges as float32 (computed in float64 once, so NumPy and JAX agree exactly).
    Cached (read-only): the default model's build bins each of its 23,040 gallery frames."""
    edges = (low + (high - low) * np.arange(1, n, dtype=np.float64) / n).astype(np.float32)
    edges.setflags(write=False)
    return edges


def _bin(x, n: int, low: float, high: float, xp):
    """Bin of x among n equal bins over [low, high] by exact float32 comparisons with the edges: a value on an
    edge goes to the upper bin, the top edge (and beyond) to the last bin, NaN to the bin of 0."""
    x = xp.asarray(x, xp.float32)
    x = xp.where(xp.isnan(x), xp.float32(0.0), x)
    edges = xp.asarray(_edges(n, low, high))
    return xp.sum((x[..., None] >= edges).astype(xp.int32), axis=-1).astype(xp.int32)


def class_index(grid: AffectGrid, target: Target) -> Int[Array, ""]:
    """Class id of a (valence, arousal) target (pure JAX; jit/vmap friendly).

    Values outside the range are clipped into the border classes; V or A equal to ``high`` falls in the last
    class. A NaN coordinate is treated as 0 so a jitted call never fails: validate targets at the edges
    (``validate_target``).
    """
    target = jnp.asarray(target)
    iv = _bin(target[0], grid.n_valence, grid.low, grid.high, jnp)
    ia = _bin(target[1], grid.n_arousal, grid.low, grid.high, jnp)
    return ia * grid.n_valence + iv


def class_index_np(grid: AffectGrid, valence, arousal) -> np.ndarray:
    """NumPy twin of ``class_index`` over arrays of valence and arousal (host-side bookkeeping)."""
    v = np.asarray(valence, np.float32)
    a = np.asarray(arousal, np.float32)
    iv = _bin(v, grid.n_valence, grid.low, grid.high, np)
    ia = _bin(a, grid.n_arousal, grid.low, grid.high, np)
    return (ia * grid.n_valence + iv).astype(np.int32)


def class_centre(grid: AffectGrid, idx: Int[Array, ""]) -> Float[Array, "2"]:
    """Centre (valence, arousal) of class ``idx`` (pure JAX)."""
    idx = jnp.clip(jnp.asarray(idx, jnp.int32), 0, grid.num_classes - 1)
    return jnp.asarray(class_centres_np(grid))[idx]


def class_centres_np(grid: AffectGrid) -> np.ndarray:
    """Centres of all classes, f32[C, 2] (NumPy)."""
    idx = np.arange(grid.num_classes)
    span = float(grid.high) - float(grid.low)
    iv, ia = idx % grid.n_valence, idx // grid.n_valence
    v = grid.low + span * (iv + 0.5) / grid.n_valence
    a = grid.low + span * (ia + 0.5) / grid.n_arousal
    return np.stack([v, a], axis=1).astype(np.float32)


def class_bounds(grid: AffectGrid, idx: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """((v_lo, v_hi), (a_lo, a_hi)) of class ``idx`` (host-side)."""
    iv, ia = int(idx) % grid.n_valence, int(idx) // grid.n_valence
    wv, wa = grid.cell_size
    return (grid.low + iv * wv, grid.low + (iv + 1) * wv), (grid.low + ia * wa, grid.low + (ia + 1) * wa)


def nearest_populated(grid: AffectGrid, counts) -> np.ndarray:
    """The documented empty-class rule: i32[C], each class's source class.

    A populated class (count > 0) is its own source; an empty class takes the populated class whose centre
    is nearest in V-A (ties: the lowest class id). If no class is populated every class is its own source.
    """
    counts = np.asarray(counts).reshape(-1)
    if counts.shape[0] != grid.num_classes:
        raise ValueError(f"{counts.shape[0]} counts for a grid of {grid.num_classes} classes")
    source = np.arange(grid.num_classes, dtype=np.int32)
    populated = np.flatnonzero(counts > 0)
    if populated.size == 0:
        return source
    col, row = np.arange(grid.num_classes) % grid.n_valence, np.arange(grid.num_classes) // grid.n_valence
    wv, wa = grid.cell_size
    # squared distances between centres from integer cell offsets: exact ties on a square grid
    d2 = ((col[:, None] - col[None, populated]) * wv) ** 2 + ((row[:, None] - row[None, populated]) * wa) ** 2
    nearest = populated[np.argmin(d2, axis=1)]
    return np.where(counts > 0, source, nearest).astype(np.int32)


# Emotion presets: rounded published V-A coordinates (FACTS.md section 2). "RM77" = Russell & Mehrabian 1977
# PAD norms (pleasure = valence); "R80" = Russell 1980 circumplex, third-party digitised coordinates. Both
# approximate. Each preset is also the anchor of its emotion's prototype in ``va_map.PROTOTYPES``, so a
# preset gets exactly its emotion's AU pattern (fear and anger are 5 degrees apart in V-A: both sources
# disagree by more than that, so the two presets are kept on either side of their common point).
EMOTION_PRESETS: dict[str, tuple[float, float]] = {
    "happy": (0.80, 0.40),  # RM77 happy (.81, .51), R80 happy (.83, .53), carefree (.78, .25)
    "excited": (0.60, 0.75),  # R80 excited (.62, .76)
    "surprised": (0.30, 0.80),  # between RM77 surprised (.40, .67) and R80 astonished (.16, .89)
    "afraid": (-0.50, 0.65),  # between R80 afraid (-.34, .64) and RM77 fearful (-.64, .60)
    "angry": (-0.55, 0.60),  # RM77 angry (-.51, .59), R80 angry (-.52, .58)
    "disgusted": (-0.60, 0.35),  # RM77 disgust
    "sad": (-0.60, -0.30),  # RM77 sad (-.63, -.27), R80 sad (-.65, -.27)
    "bored": (-0.50, -0.60),  # R80 bored (-.66, -.63)
    "sleepy": (0.28, -0.67),  # R80 sleepy
    "calm": (0.55, -0.40),  # R80 calm (.56, -.31)
    "relaxed": (0.69, -0.45),  # R80 relaxed
    "content": (0.77, 0.19),  # R80 pleased (closest published term to "content")
    "neutral": (0.0, 0.0),  # origin of the circumplex by definition
}


def validate_target(valence, arousal) -> tuple[float, float]:
    """Check a target at the edge: both finite numbers in [-1, 1]; returns them as floats.

    Raises:
        ValueError: with a one-line message naming the offending coordinate.
    """
    out = []
    for name, x in (("valence", valence), ("arousal", arousal)):
        try:
            xf = float(x)
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number, got {x!r}") from None
        if math.isnan(xf) or math.isinf(xf):
            raise ValueError(f"{name} is {xf}; it must be a finite number in [-1, 1]")
        if not -1.0 <= xf <= 1.0:
            raise ValueError(f"{name} {xf:g} is outside [-1, 1]")
        out.append(xf)
    return out[0], out[1]


__all__ = [
    "AffectGrid",
    "num_classes",
    "class_index",
    "class_index_np",
    "class_centre",
    "class_centres_np",
    "class_bounds",
    "nearest_populated",
    "EMOTION_PRESETS",
    "validate_target",
]
