"""Peak memory of the Ray engine's driver while it plans a large job (no Ray, no detection, no synthesis).

A synthetic listing of ``--inputs`` fake photos x ``--classes`` classes is planned two ways, each in its own
subprocess (so peak RSS is its own): ``whole`` holds every work item, landmark and batch spec at once (the
engine before the plan was chunked), ``chunked`` runs the engine's own planner (``bulk_ray._Plan``) one
``listing_chunks`` chunk at a time with detection faked, pickling each batch spec and dropping it.

    python scripts/bench_ray_driver_memory.py --inputs 20000 --classes 10     # 200k planned items
"""

import argparse
import pickle
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np


def _fake_detect(rows, face_index, backend):
    lms = np.zeros((478, 3), np.float32)
    return [(r["source"], lms.copy(), (512, 384), "", "") for r in rows]


def run(mode: str, n: int, n_classes: int) -> tuple[int, int]:
    """(batch specs made, peak RSS in MiB) for one planning mode in this process."""
    from affectsynth.cli import augment as A
    from affectsynth.cli import bulk_ray as R

    keys_of = {f"in/{i:07d}.jpg": Path(f"/data/in/{i:07d}.jpg") for i in range(n)}
    classes = [(c, 0.1 * c, -0.1 * c) for c in range(n_classes)]
    report = A.AugmentReport()
    made = 0
    if mode == "whole":
        pending = A._pending_items(keys_of, classes, 1, set(), report)
        faces = {s: (np.zeros((478, 3), np.float32), (512, 384)) for s in pending}
        _, batches, crops = A.plan_synthesis(pending, faces, None, 8, 64_000_000)
        specs = [pickle.dumps((b, {it.source: faces[it.source] for it in b.items}, None)) for b in batches]
        made = len(specs)
    else:
        R._detect_chunk = _fake_detect
        plan = R._Plan(keys_of, classes, 1, set(), report, A.PLAN_CHUNK_INPUTS, (None, 8, 64_000_000))
        for faces, batches, _ in plan.chunks(None, None, lambda m: None, lambda k: None):
            for b in batches:
                pickle.dumps((b, {it.source: faces[it.source] for it in b.items}, None))
                made += 1
    return made, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=20000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--mode", choices=["whole", "chunked"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.mode:
        print(*run(a.mode, a.inputs, a.classes))
        return
    print(f"{a.inputs} inputs x {a.classes} classes = {a.inputs * a.classes} planned items")
    for mode in ("whole", "chunked"):
        cmd = [
            sys.executable,
            __file__,
            "--mode",
            mode,
            "--inputs",
            str(a.inputs),
            "--classes",
            str(a.classes),
        ]
        made, rss = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        print(f"{mode:8s} {made} batch specs, driver peak RSS {rss} MiB")


if __name__ == "__main__":
    main()
