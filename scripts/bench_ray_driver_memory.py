"""Peak memory of the Ray engine's driver on a large job: its plan, and its ``--resume`` state.

Each measurement runs in its own subprocess (so peak RSS is its own), on a synthetic listing of
``--inputs`` fake photos x ``--classes`` classes (no Ray, no detection, no synthesis):

* ``plan``: the driver's whole share of the plan (``bulk_ray._Books``: the listing, its chunks, the pickled
  work of every read task) next to ``whole``, every work item, landmark and batch spec held at once (the
  engine before the plan was chunked).
* ``resume-rows`` / ``resume``: resuming a job whose ``labels.csv`` holds every item (``--inputs`` x
  ``--classes`` rows, all naming one image so no million files are needed): ``resume-rows`` holds every row
  and a set of keys (the resume state before it was compacted), ``resume`` is the engines' own
  ``augment._resume_state`` (a streamed scan into one byte per item).

    python scripts/bench_ray_driver_memory.py --inputs 100000 --classes 10     # 1M items
"""

import argparse
import csv
import pickle
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def _job(n: int, n_classes: int):
    keys_of = {f"in/{i:07d}.jpg": Path(f"/data/in/{i:07d}.jpg") for i in range(n)}
    return keys_of, [(c, 0.1 * c, -0.1 * c) for c in range(n_classes)]


def _labels(out: Path, keys_of: dict, classes) -> None:
    """A finished job's ``labels.csv``: every (input, class) done, all rows naming ``x.png``."""
    from affectsynth.cli.inputs import LABEL_FIELDS

    out.mkdir(parents=True, exist_ok=True)
    (out / "x.png").write_bytes(b"x")
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(LABEL_FIELDS)
        for src in keys_of:
            for c, v, a in classes:
                w.writerow([src, "x.png", c, 0, v, a, 0.01, v, a])


def run(mode: str, n: int, n_classes: int, folder: str) -> tuple[int, int]:
    """(items planned or found done, peak RSS in MiB) for one mode in this process."""
    from affectsynth.cli import augment as A
    from affectsynth.cli import bulk_ray as R

    keys_of, classes = _job(n, n_classes)
    report = A.AugmentReport(labels_path=Path(folder) / "labels.csv")
    done = np.zeros((n, n_classes, 1), bool)
    if mode == "whole":
        pending = A._pending_items(keys_of, classes, 1, done, report)
        faces = {s: (np.zeros((478, 3), np.float32), (512, 384)) for s in pending}
        _, batches, crops = A.plan_synthesis(pending, faces, None, 8, 64_000_000)
        specs = [pickle.dumps((b, {it.source: faces[it.source] for it in b.items}, None)) for b in batches]
        assert len(specs) == len(batches)  # all held at once
        count = sum(b.valid for b in batches)
    elif mode == "plan":
        book = R._Books(report, print, 2, None, (keys_of, classes, 1, done, A.PLAN_CHUNK_INPUTS))
        parts = book.parts()
        assert len(parts) == len(book.chunks)  # every read task's work, pickled, held at once
        count = sum(int((~done[i : i + len(ch)]).sum()) for _, i, ch in book.chunks)
    elif mode == "resume-rows":
        rows = A.read_manifest(folder)[0]
        count = len({(r["source"], r["class_id"], r["sample"]) for r in rows})
    else:
        count = int(A._resume_state(report, True, print, keys_of, classes, 1).sum())
    return count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=20000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--modes", default="whole,plan,resume-rows,resume")
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode:
        print(*run(a.mode, a.inputs, a.classes, a.folder))
        return
    print(f"{a.inputs} inputs x {a.classes} classes = {a.inputs * a.classes} items")
    with tempfile.TemporaryDirectory(prefix="bench_ray_driver_memory_") as tmp:
        modes = a.modes.split(",")
        if any(m.startswith("resume") for m in modes):
            _labels(Path(tmp), *_job(a.inputs, a.classes))
        for mode in modes:
            cmd = [sys.executable, __file__, "--mode", mode, "--folder", tmp]
            cmd += ["--inputs", str(a.inputs), "--classes", str(a.classes)]
            count, rss = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
            print(f"{mode:12s} {count:>9} items, driver peak RSS {rss} MiB")


if __name__ == "__main__":
    main()
