"""Paths through valence-arousal space: parsing, smooth resampling to N frames, V-A grids of targets.

A path is a few waypoints ``(V, A)``; an animation needs one target per frame that moves smoothly (no jumps
or jitter between frames, which would show as flicker). ``resample_path`` passes a uniform Catmull-Rom spline
through the waypoints (or straight segments), re-parametrises it by arc length so the face changes at an
even pace, optionally eases in and out at the ends, and clips to [-1, 1]^2 (a spline may overshoot slightly).
"""

import math
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._smooth import smoothstep
from ..errors import TargetError

_TOKEN_SPLIT = re.compile(r"[\s;]+")


def parse_path(text: str, presets: Mapping[str, tuple[float, float]] | None = None, *, where: str = "--path"):
    """Parse waypoints such as ``"0,0 0.8,0.4 -0.6,0.6"`` into f32[K, 2] (valence, arousal) rows.

    Waypoints are separated by spaces or semicolons; each is ``V,A`` or, when ``presets`` is given, an emotion
    name such as ``happy``. Every value must be finite and in [-1, 1].

    Raises:
        TargetError: empty path, malformed waypoint, unknown name, NaN/inf or out-of-range value.
    """
    tokens = [t for t in _TOKEN_SPLIT.split(str(text).strip()) if t]
    if not tokens:
        raise TargetError(where, "empty path; expected waypoints such as '0,0 0.8,0.4 -0.6,0.6'")
    out = []
    for tok in tokens:
        name = tok.lower()
        if presets is not None and name in presets:
            v, a = presets[name]
        else:
            parts = tok.split(",")
            if len(parts) != 2:
                known = f" or an emotion name ({', '.join(sorted(presets))})" if presets else ""
                raise TargetError(where, f"waypoint {tok!r} is not 'V,A'{known}")
            try:
                v, a = float(parts[0]), float(parts[1])
            except ValueError:
                raise TargetError(where, f"waypoint {tok!r}: values must be numbers") from None
        for label, x in (("valence", v), ("arousal", a)):
            if not math.isfinite(x):
                raise TargetError(where, f"waypoint {tok!r}: {label} is {x}; it must be finite, in [-1, 1]")
            if not -1.0 <= x <= 1.0:
                raise TargetError(where, f"waypoint {tok!r}: {label} {x:g} is outside [-1, 1]")
        out.append((v, a))
    return np.asarray(out, np.float32)


def catmull_rom(waypoints: Float[Array, "K 2"], t: Float[Array, " N"]) -> Float[Array, "N 2"]:
    """Uniform Catmull-Rom spline through ``waypoints`` evaluated at parameters ``t`` in [0, K-1].

    The curve passes through waypoint ``i`` at ``t = i`` with a continuous tangent. Phantom end points are the
    reflections ``2 P_0 - P_1`` and ``2 P_{K-1} - P_{K-2}``. On segment ``i`` with local ``u = t - i``:

    .. math:: C(u) = \\tfrac12 \\left[2P_i + (P_{i+1} - P_{i-1})u
        + (2P_{i-1} - 5P_i + 4P_{i+1} - P_{i+2})u^2 + (3P_i - P_{i-1} - 3P_{i+1} + P_{i+2})u^3\\right]

    Needs K >= 2.
    """
    p = jnp.asarray(waypoints)
    k = p.shape[0]
    ext = jnp.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]], axis=0)  # K + 2 points
    t = jnp.clip(jnp.asarray(t, p.dtype), 0.0, k - 1)
    seg = jnp.clip(jnp.floor(t).astype(jnp.int32), 0, k - 2)
    u = (t - seg)[:, None]
    p0, p1, p2, p3 = ext[seg], ext[seg + 1], ext[seg + 2], ext[seg + 3]
    c1 = p2 - p0
    c2 = 2 * p0 - 5 * p1 + 4 * p2 - p3
    c3 = 3 * p1 - p0 - 3 * p2 + p3
    return 0.5 * (2 * p1 + u * (c1 + u * (c2 + u * c3)))


def _polyline(waypoints, t):
    p = jnp.asarray(waypoints)
    k = p.shape[0]
    t = jnp.clip(jnp.asarray(t, p.dtype), 0.0, k - 1)
    seg = jnp.clip(jnp.floor(t).astype(jnp.int32), 0, k - 2)
    u = (t - seg)[:, None]
    return p[seg] * (1 - u) + p[seg + 1] * u


def ease_in_out(s: Float[Array, " N"]) -> Float[Array, " N"]:
    """Smoothstep ``3s^2 - 2s^3``: starts and stops with zero velocity (a looping GIF does not jolt)."""
    return smoothstep(s)


def resample_path(
    waypoints: Float[Array, "K 2"],
    num_frames: int,
    *,
    smooth: bool = True,
    ease: bool = True,
    density: int = 64,
) -> Float[Array, "N 2"]:
    """``num_frames`` targets along the path through ``waypoints``, evenly spaced in arc length.

    The curve (Catmull-Rom when ``smooth``, else straight segments) is sampled densely (``density`` points per
    segment), its cumulative length tabulated, and frame ``j`` placed at arc length ``L e(j / (N-1))`` with
    ``e`` the ease curve (identity when ``ease`` is False). First and last frames are the first and last
    waypoints; everything is clipped to [-1, 1]. ``num_frames``, ``smooth``, ``ease``, ``density`` are static.
    """
    p = jnp.asarray(waypoints, jnp.float32)
    k = p.shape[0]
    if k == 1:
        return jnp.broadcast_to(jnp.clip(p, -1.0, 1.0), (num_frames, 2))
    curve = catmull_rom if smooth else _polyline
    td = jnp.linspace(0.0, k - 1.0, (k - 1) * density + 1)
    pd = curve(p, td)
    step = pd[1:] - pd[:-1]
    sq = jnp.sum(step * step, axis=-1)
    seg_len = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)  # NaN-free gradient at 0
    s = jnp.concatenate([jnp.zeros(1), jnp.cumsum(seg_len)])
    total = s[-1]
    f = jnp.linspace(0.0, 1.0, num_frames) if num_frames > 1 else jnp.zeros(1)
    if ease:
        f = ease_in_out(f)
    t_arc = jnp.interp(f * total, s, td)
    t = jnp.where(total > 1e-6, t_arc, f * (k - 1.0))  # a path that goes nowhere: uniform parameter
    return jnp.clip(curve(p, t), -1.0, 1.0)


resample_path_jit = jax.jit(resample_path, static_argnames=("num_frames", "smooth", "ease", "density"))


def grid_targets(size: int, extent: float = 0.8) -> np.ndarray:
    """``size x size`` targets over [-extent, extent]^2 as f32[size*size, 2], row-major as shown on a sheet.

    Valence grows along a row (left to right), arousal falls down the rows (top row = highest arousal), the
    layout of the paper's Fig. 5. ``size == 1`` gives the single target (0, 0).
    """
    if int(size) != size or size < 1:
        raise TargetError("--size", f"must be a whole number >= 1, got {size!r}")
    if not (math.isfinite(extent) and 0.0 < extent <= 1.0):
        raise TargetError("--extent", f"must be in (0, 1], got {extent!r}")
    axis = np.linspace(-extent, extent, int(size)) if size > 1 else np.zeros(1)
    v, a = np.meshgrid(axis, axis[::-1])
    return np.stack([v.ravel(), a.ravel()], axis=1).astype(np.float32)
