"""Wall-clock helpers shared by the benchmark scripts (not part of the package)."""

import statistics
import time

import jax


def timed(fn, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn()``, waiting for its arrays (``block_until_ready``)."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return out


def alternate(calls, repeats: int) -> list[float]:
    """Median seconds of each zero-argument call, the calls timed in turn ``repeats`` times: every variant
    sees the same machine state (a shared CPU drifts by up to 2x between seconds), so their ratios hold."""
    times = [[] for _ in calls]
    for _ in range(repeats):
        for call, out in zip(calls, times, strict=True):
            out.extend(timed(call, 1))
    return [statistics.median(t) for t in times]
