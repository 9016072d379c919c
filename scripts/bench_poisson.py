"""Benchmark: affectsynth.poisson_blend against cv2.seamlessClone (measured in the same run).

For each size N (default 256, 512, 1024) the target is ``skimage.data.astronaut()`` resized to N x N, the
source its mirror image, the mask a face-like ellipse ``--width`` of the image wide (default 0.4) and 1.3
times as tall. Reported per size:

* cv2.seamlessClone (NORMAL_CLONE, uint8, aligned) median wall time;
* poisson_blend (jit, float32, tol 1e-5, multigrid and DST preconditioners): compile time (first call,
  minus a steady-state call) and median steady-state time after ``block_until_ready``, and the ratio to cv2;
* CG iterations to a relative residual of 1e-5 per preconditioner, including plain CG (one run, capped at
  ``--plain-cap`` iterations; skipped with ``--no-plain``).

Usage: ``python scripts/bench_poisson.py [--sizes 256 512 1024] [--repeats 5] [--width 0.4] [--no-plain]``
"""

import argparse
import platform
import statistics
import time

import cv2
import jax
import numpy as np
from skimage import data, transform

from affectsynth import poisson as P


def scene(n: int, width: float):
    target = transform.resize(data.astronaut(), (n, n), anti_aliasing=True).astype(np.float32)
    source = np.ascontiguousarray(target[:, ::-1])
    i, j = np.mgrid[0:n, 0:n] + 0.5
    a = width * n / 2
    mask = (((j - n / 2) / a) ** 2 + ((i - n / 2) / (1.3 * a)) ** 2 < 1).astype(np.float32)
    return target, source, mask


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t0)
    return out


def bench_cv2(target, source, mask, repeats: int) -> float:
    t8, s8 = (np.clip(target * 255, 0, 255).astype(np.uint8), np.clip(source * 255, 0, 255).astype(np.uint8))
    m8 = (mask > 0.5).astype(np.uint8) * 255
    x, y, w, h = cv2.boundingRect(m8)
    centre = (x + w // 2, y + h // 2)
    # seamlessClone may overwrite a 1-channel mask: a fresh copy each call (copy time is negligible)
    return statistics.median(
        timed(lambda: cv2.seamlessClone(s8, t8, m8.copy(), centre, cv2.NORMAL_CLONE), repeats)
    )


def bench_ours(target, source, mask, repeats: int, preconditioner: str):
    t, s, m = (jax.device_put(a) for a in (target, source, mask))
    call = lambda: P.poisson_blend(t, s, m, preconditioner=preconditioner)
    t0 = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - t0
    steady = statistics.median(timed(call, repeats))
    return max(first - steady, 0.0), steady


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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=float, default=0.4, help="ellipse width as a fraction of the image")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain-CG iteration count")
    parser.add_argument("--plain-cap", type=int, default=3000)
    args = parser.parse_args()

    dev = jax.devices()[0]
    print(
        f"device: {dev.platform} {dev.device_kind} | jax {jax.__version__} | cv2 {cv2.__version__} | "
        f"{platform.processor() or platform.machine()}"
    )
    print(
        f"mask: ellipse {args.width:.2f} x {1.3 * args.width:.2f} of the image; tol 1e-5; "
        f"median of {args.repeats}"
    )
    print(
        f"{'N':>5} {'cv2 ms':>8} {'method':>10} {'compile s':>9} {'ms':>8} {'x cv2':>6} "
        f"{'iters':>6} {'resid':>8}"
    )
    for n in args.sizes:
        target, source, mask = scene(n, args.width)
        cv_ms = 1e3 * bench_cv2(target, source, mask, args.repeats)
        for pc in ("multigrid", "dst"):
            compile_s, steady = bench_ours(target, source, mask, args.repeats, pc)
            its, res, _ = iterations(target, source, mask, pc, 100)
            print(
                f"{n:>5} {cv_ms:>8.1f} {pc:>10} {compile_s:>9.2f} {1e3 * steady:>8.1f} "
                f"{1e3 * steady / cv_ms:>6.2f} {its:>6d} {res:>8.1e}",
                flush=True,
            )
        if not args.no_plain:
            its, res, wall = iterations(target, source, mask, "none", args.plain_cap)
            print(
                f"{n:>5} {cv_ms:>8.1f} {'none':>10} {'(single run incl. compile)':>26} "
                f"{its:>6d} {res:>8.1e}  wall {wall:.1f} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
