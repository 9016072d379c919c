"""Benchmark: affectsynth.poisson_blend against cv2.seamlessClone (measured in the same run).

For each size N (default 256, 512, 1024) and mask width (default 0.4 and 0.8) the target is
``skimage.data.astronaut()`` resized to N x N, the source its mirror image, the mask an ellipse ``width`` of
the image wide and 1.3 times as tall (0.4: a face in a portrait; 0.8 reaches the top and bottom edges).
Both solvers work in the mask's bounding box (cv2 by design, ours through ``solve_window``). Reported:

* cv2.seamlessClone (NORMAL_CLONE, uint8, aligned) and poisson_blend (jit, float32, tol 1e-5, multigrid)
  timed alternately, call by call, so both see the same machine state (this shared CPU drifts by up to 2x
  between seconds); medians, the ratio of medians and the ratio of the fastest calls of each;
* the same for the DST preconditioner (own timing, fewer repeats: it is far slower);
* compile time of the first call, the solve window, CG iterations to 1e-5 per preconditioner, including plain
  CG (one run, capped at ``--plain-cap`` iterations; skipped with ``--no-plain``).

Usage: ``python scripts/bench_poisson.py [--sizes 256 512 1024] [--widths 0.4 0.8] [--repeats 15]
[--no-plain]``
"""

import argparse
import platform
import statistics
import time

import cv2
import jax
import numpy as np
from skimage import data, transform

from _timing import alternate_times, compile_and_median
from affectsynth import poisson as P


def scene(n: int, width: float):
    """Target, source (its mirror image) and an ellipse mask ``width`` of the image wide, 1.3x as tall."""
    target = transform.resize(data.astronaut(), (n, n), anti_aliasing=True).astype(np.float32)
    source = np.ascontiguousarray(target[:, ::-1])
    i, j = np.mgrid[0:n, 0:n] + 0.5
    a = width * n / 2
    mask = (((j - n / 2) / a) ** 2 + ((i - n / 2) / (1.3 * a)) ** 2 < 1).astype(np.float32)
    return target, source, mask


def cv2_call(target, source, mask):
    t8, s8 = (np.clip(target * 255, 0, 255).astype(np.uint8), np.clip(source * 255, 0, 255).astype(np.uint8))
    m8 = (mask > 0.5).astype(np.uint8) * 255
    x, y, w, h = cv2.boundingRect(m8)
    centre = (x + w // 2, y + h // 2)
    # seamlessClone may overwrite a 1-channel mask: a fresh copy each call (copy time is negligible)
    return lambda: cv2.seamlessClone(s8, t8, m8.copy(), centre, cv2.NORMAL_CLONE)


def ours_call(target, source, mask, preconditioner: str):
    t, s, m = (jax.device_put(a) for a in (target, source, mask))
    return lambda: P.poisson_blend(t, s, m, preconditioner=preconditioner)


def compile_time(call) -> float:
    return compile_and_median(call, 2)[0]


def iterations(target, source, mask, preconditioner: str, cap: int):
    t0 = time.perf_counter()
    sol = P.solve_blend(target, source, mask, preconditioner=preconditioner, max_iters=cap)
    jax.block_until_ready(sol)
    return (
        int(np.max(np.asarray(sol.iterations))),
        float(np.max(np.asarray(sol.residual))),
        time.perf_counter() - t0,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument(
        "--widths", type=float, nargs="+", default=[0.4, 0.8], help="ellipse widths (image=1)"
    )
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-plain", action="store_true", help="skip the plain-CG iteration count")
    parser.add_argument("--plain-cap", type=int, default=3000)
    args = parser.parse_args()

    dev = jax.devices()[0]
    print(
        f"device: {dev.platform} {dev.device_kind} | jax {jax.__version__} | cv2 {cv2.__version__} "
        f"({cv2.getNumThreads()} threads) | {platform.processor() or platform.machine()}"
    )
    print(
        f"tol 1e-5; medians of {args.repeats} alternated calls (DST: {max(args.repeats // 5, 2)}); "
        "'x cv2': ratio of medians, 'best': ratio of the fastest calls (the quiet-machine estimate)"
    )
    print(
        f"{'N':>5} {'width':>5} {'window':>9} {'cv2 ms':>7} {'method':>10} {'compile s':>9} {'ms':>7} "
        f"{'x cv2':>6} {'best':>6} {'iters':>5} {'resid':>8}"
    )
    for n in args.sizes:
        for width in args.widths:
            target, source, mask = scene(n, width)
            window = P.solve_window(mask)
            shape = f"{window[2]}x{window[3]}" if window else "whole"
            cv = cv2_call(target, source, mask)
            rows = []
            for pc in ("multigrid", "dst"):
                call = ours_call(target, source, mask, pc)
                compile_s = compile_time(call)
                reps = args.repeats if pc == "multigrid" else max(args.repeats // 5, 2)
                cv_t, ours_t = alternate_times([cv, call], reps)
                cv_s, ours_s = statistics.median(cv_t), statistics.median(ours_t)
                best = min(ours_t) / min(cv_t)
                its, res, _ = iterations(target, source, mask, pc, 100)
                rows.append((pc, compile_s, cv_s, ours_s, best, its, res))
            for pc, compile_s, cv_s, ours_s, best, its, res in rows:
                print(
                    f"{n:>5} {width:>5.2f} {shape:>9} {1e3 * cv_s:>7.1f} {pc:>10} {compile_s:>9.2f} "
                    f"{1e3 * ours_s:>7.1f} {ours_s / cv_s:>6.2f} {best:>6.2f} {its:>5d} {res:>8.1e}",
                    flush=True,
                )
            if not args.no_plain:
                its, res, wall = iterations(target, source, mask, "none", args.plain_cap)
                print(
                    f"{n:>5} {width:>5.2f} {shape:>9} {'':>7} {'none':>10} {'(one run, with compile)':>32} "
                    f"{its:>5d} {res:>8.1e}  wall {wall:.1f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
