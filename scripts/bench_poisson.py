"""Benchmark: affectsynth.poisson_blend against cv2.seamlessClone (measured in the same run).

For each size N (default 256, 512, 1024) and mask width (default 0.4 and 0.8) the target is
``skimage.data.astronaut()`` resized to N x N, the source its mirror image, the mask an ellipse ``width`` of
the image wide and 1.3 times as tall (0.4: a face in a portrait; 0.8 reaches the top and bottom edges).
Both solvers work in the mask's bounding box (cv2 by design, ours through ``solve_window``).

Protocol: every solver runs alone in a fresh Python process (``--worker``), ``--repeats`` back-to-back
calls after two warm-up calls, as a user's loop would call it; the processes of the two solvers alternate
``--rounds`` times so both see the same drift of this shared machine (the medians of every process are
printed too: on two cores a JAX process sometimes runs in a slow mode, 1.5-2x its usual time for its
whole life, in which XLA's two worker threads keep swapping cores), and run with glibc's mmap and trim
thresholds raised (``MALLOC_ENV``: without, cv2 re-faults its large buffers on every call, 2x slower at
512 px / 0.8). Reported per solver: the median over
all timed calls and the fastest call; ratios of medians ("x cv2") and of the fastest calls ("best").
Not timed in one process on purpose: after a JAX call XLA's worker threads stay busy for about 0.1 s and
slowed OpenCV's two threads from 6.2 to about 10 ms at 512 px, which flattered JAX by ~1.5x. Also reported:
compile time (first call minus median), the solve window, CG iterations to 1e-5 for the multigrid and DST
preconditioners and for plain CG (one run in this process, capped at ``--plain-cap``; ``--no-plain`` skips
it). ``taskset -c 0 python scripts/bench_poisson.py`` gives the single-core comparison.

Usage: ``python scripts/bench_poisson.py [--sizes 256 512 1024] [--widths 0.4 0.8] [--repeats 20]
[--rounds 5] [--no-plain]``
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import cv2
import jax
import numpy as np
from skimage import data, transform

from affectsynth.render import poisson as P


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


def worker(solver: str, n: int, width: float, repeats: int) -> dict:
    """Time ``solver`` ("cv2", "multigrid" or "dst") alone in this process: first call, 2 warm-up calls,
    then ``repeats`` back-to-back calls."""
    scn = scene(n, width)
    call = cv2_call(*scn) if solver == "cv2" else ours_call(*scn, solver)

    def timed() -> float:
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        return time.perf_counter() - t0

    first = timed()
    timed(), timed()
    return {"first": first, "times": [timed() for _ in range(repeats)]}


# glibc returns large freed blocks to the OS, so a program that allocates its big buffers afresh on every
# call page-faults them in again each time: cv2.seamlessClone took 49 ms instead of 24 ms at 512 px / 0.8
# that way. Both workers run with these thresholds raised (the setting most favourable to cv2).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 31)}


def isolated(solver: str, n: int, width: float, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", solver, str(n), str(width), str(repeats)]
    env = {**os.environ, **MALLOC_ENV}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


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
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the two solvers' processes")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain-CG iteration count")
    parser.add_argument("--plain-cap", type=int, default=3000)
    parser.add_argument(
        "--worker", nargs=4, metavar=("SOLVER", "N", "WIDTH", "REPEATS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        solver, n, width, repeats = args.worker
        print(json.dumps(worker(solver, int(n), float(width), int(repeats))))
        return

    dev = jax.devices()[0]
    print(
        f"device: {dev.platform} {dev.device_kind} | jax {jax.__version__} | cv2 {cv2.__version__} "
        f"({cv2.getNumThreads()} threads) | {platform.processor() or platform.machine()}"
    )
    dst_repeats = max(args.repeats // 10, 2)
    print(
        f"tol 1e-5; each solver alone in its own process, {args.repeats} back-to-back calls, {args.rounds} "
        f"alternated rounds (DST: {dst_repeats} calls, 1 round); 'x cv2': ratio of medians, 'best': ratio "
        "of the fastest calls"
    )
    print(
        f"{'N':>5} {'width':>5} {'window':>9} {'cv2 ms':>7} {'method':>10} {'compile s':>9} {'ms':>7} "
        f"{'x cv2':>6} {'best':>6} {'iters':>5} {'resid':>8}  per-process medians ms (ours | cv2)"
    )
    for n in args.sizes:
        for width in args.widths:
            target, source, mask = scene(n, width)
            window = P.solve_window(mask)
            shape = f"{window[2]}x{window[3]}" if window else "whole"
            runs = {"cv2": [], "multigrid": [], "dst": []}
            for r in range(args.rounds):
                order = ("cv2", "multigrid") if r % 2 == 0 else ("multigrid", "cv2")
                for solver in order:
                    runs[solver].append(isolated(solver, n, width, args.repeats))
            runs["dst"].append(isolated("dst", n, width, dst_repeats))
            cv_times = [t for run in runs["cv2"] for t in run["times"]]
            cv_med, cv_best = statistics.median(cv_times), min(cv_times)
            for pc in ("multigrid", "dst"):
                times = [t for run in runs[pc] for t in run["times"]]
                med = statistics.median(times)
                compile_s = statistics.median([run["first"] for run in runs[pc]]) - med
                its, res, _ = iterations(target, source, mask, pc, 100)
                best = min(times) / cv_best
                spread = ""
                if pc == "multigrid":
                    per = lambda runs: " ".join(f"{1e3 * statistics.median(r['times']):.1f}" for r in runs)  # noqa: E731
                    spread = f"  {per(runs[pc])} | {per(runs['cv2'])}"
                print(
                    f"{n:>5} {width:>5.2f} {shape:>9} {1e3 * cv_med:>7.1f} {pc:>10} {compile_s:>9.2f} "
                    f"{1e3 * med:>7.1f} {med / cv_med:>6.2f} {best:>6.2f} {its:>5d} {res:>8.1e}{spread}",
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
