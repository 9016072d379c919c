"""``smoothstep``: the package's one soft switch between two values."""

import numpy as np


def smoothstep(x, lo: float = 0.0, hi: float = 1.0):
    """0 at and below ``lo``, 1 at and above ``hi``, ``3t^2 - 2t^3`` of ``t = (x - lo) / (hi - lo)`` between:
    a ramp that starts and stops with zero slope, so a rule switched on by it has no kink where it starts.

    NumPy in, NumPy out (model building runs in float64); anything else, a JAX array or tracer included, goes
    through ``jax.numpy``.
    """
    if isinstance(x, (np.ndarray, np.generic, float, int)):
        xp = np
    else:
        import jax.numpy as xp
    t = xp.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)
