"""All benchmarks in one run: ``python scripts/bench.py [--only fit,poisson] [--quick]`` (``make bench``).

Each stage's script runs in its own process (its own compile caches and peak memory), one after the other,
and prints its table, every one of them with the baseline named in its issue measured in the same run:

    fit         scripts/bench_fit.py         per-face fit time at B = 1, 8, 64; vmap vs a Python loop
    raster      scripts/bench_raster.py      rasterize at 256/512/1024 px, base and subdivided meshes
    poisson     scripts/bench_poisson.py     poisson_blend at 256/512/1024 px vs cv2.seamlessClone
    splocs      scripts/bench_splocs.py      SPLOCS at F frames x N vertices vs the reference update order
    appearance  scripts/bench_appearance.py  appearance cues' cost as a ratio to the geometry-only path
    augment     scripts/bench_augment.py     augmentation images/s at batch 1, 8, 32, stages, peak memory

Outputs are also written to ``out/bench/<name>.txt``. ``--quick`` shrinks every run (smoke test of the
scripts, not numbers to report).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = {
    "fit": (["bench_fit.py"], ["--sizes", "1", "8", "--repeats", "2", "--steps", "30"]),
    "raster": (["bench_raster.py"], ["--sizes", "256", "--levels", "0", "--repeats", "2"]),
    "poisson": (["bench_poisson.py"], ["--sizes", "256", "--repeats", "2", "--rounds", "1", "--no-plain"]),
    "splocs": (["bench_splocs.py"], ["--quick", "--repeats", "1"]),
    "appearance": (["bench_appearance.py"], ["--runs", "2", "--size", "256"]),
    "augment": (["bench_augment.py"], ["--images", "4", "--sizes", "1,4"]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated stages (default: all)")
    ap.add_argument("--quick", action="store_true", help="small sizes: check the scripts run")
    ap.add_argument("--out", type=Path, default=Path("out/bench"))
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(STAGES)
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        ap.error(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        script, quick = STAGES[name]
        cmd = [sys.executable, str(HERE / script[0]), *(quick if args.quick else [])]
        print(f"\n===== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        text = proc.stdout + (f"\n[stderr]\n{proc.stderr}" if proc.returncode else "")
        print(text, flush=True)
        (args.out / f"{name}.txt").write_text(text)
        status = "ok" if proc.returncode == 0 else "FAILED"
        print(f"===== {name}: {status} in {time.perf_counter() - t0:.0f} s")
        if proc.returncode:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
