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


def median_time(fn, repeats: int) -> float:
    return statistics.median(timed(fn, repeats))


def compile_and_median(fn, repeats: int) -> tuple[float, float]:
    """(compile seconds, median steady seconds): the first call minus the median of ``repeats`` later ones."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    steady = median_time(fn, repeats)
    return max(first - steady, 0.0), steady


def alternate(calls, repeats: int) -> list[float]:
    """Median seconds of each zero-argument call, the calls timed in turn ``repeats`` times: every variant
    sees the same machine state (a shared CPU drifts by up to 2x between seconds), so their ratios hold."""
    times = [[] for _ in calls]
    for _ in range(repeats):
        for call, out in zip(calls, times, strict=True):
            out.extend(timed(call, 1))
    return [statistics.median(t) for t in times]
