"""The first ``affectsynth synth`` call ever (empty user cache: the default model built, the programs
compiled), A/B: the CLI of several source trees run alternately, each run in a fresh empty cache.

Issue 16's goal for this call is 20 s of wall time. On a shared machine the wall time follows the load,
so each run also reports its CPU seconds (user + sys of the subprocess), the CLI's stage timings
(``AFFECTSYNTH_TIMINGS``) and the 1-minute load average when it ended; compare trees only within one
run of this script (alternating, same load).

Usage: ``python scripts/bench_first_call.py [--runs 2] [--photo PHOTO] SRC [SRC ...]`` where each SRC is
a tree's ``src`` folder (e.g. ``/work/main/src`` and this checkout's ``src``). Prints one line per run and
the medians per tree, and with ``--json`` writes them too.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LONDON = REPO.parent / "shared" / "data" / "faces" / "london" / "neutral" / "001.jpg"


def first_call(src: Path, photo: Path, tmp: Path) -> dict:
    """One first-ever ``synth`` with the CLI of tree ``src`` in a fresh empty cache under ``tmp``."""
    cache = Path(tempfile.mkdtemp(prefix="cache_", dir=tmp))
    env = {**os.environ, "AFFECTSYNTH_CACHE": str(cache), "AFFECTSYNTH_TIMINGS": "1", "PYTHONPATH": str(src)}
    env.pop("AFFECTSYNTH_PROGRAM_CACHE", None)
    out = tmp / "out.png"
    cmd = [sys.executable, "-m", "affectsynth.cli.app", "synth", str(photo), "-v", "0.8", "-a", "0.4"]
    cmd += ["-o", str(out), "--overwrite"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{src}: failed ({proc.returncode})\n{proc.stderr[-2000:]}")
    stages = {}
    for line in proc.stderr.splitlines():
        if line.startswith("timing: "):
            for part in line[len("timing: ") :].split(", "):
                name, secs = part.rsplit(" ", 2)[:2]
                stages[name] = float(secs)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall": wall, "cpu": cpu, "stages": stages, "load": os.getloadavg()[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", nargs="+", type=Path, help="a tree's src folder (one per side of the A/B)")
    ap.add_argument("--runs", type=int, default=2, help="runs per tree (alternating)")
    ap.add_argument("--photo", type=Path, default=LONDON)
    ap.add_argument("--json", type=Path, help="also write the runs here")
    args = ap.parse_args()
    if not args.photo.is_file():
        raise SystemExit(f"{args.photo}: photo not found (pass --photo)")
    runs: dict[str, list] = {str(s): [] for s in args.src}
    with tempfile.TemporaryDirectory(prefix="bench_first_call_") as tmp:
        for i in range(args.runs):
            order = args.src if i % 2 == 0 else args.src[::-1]
            for src in order:
                r = first_call(src, args.photo, Path(tmp))
                runs[str(src)].append(r)
                stages = ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items())
                print(f"{src}: wall {r['wall']:.1f} s, cpu {r['cpu']:.1f} s, load {r['load']:.1f} ({stages})")
    for src, rs in runs.items():
        wall = statistics.median(r["wall"] for r in rs)
        cpu = statistics.median(r["cpu"] for r in rs)
        print(f"median {src}: wall {wall:.1f} s, cpu {cpu:.1f} s over {len(rs)} runs")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
