"""Where a warm ``synthesize_batch`` spends its time (issue 16): 512 px against 12 Mpx, bytes and floats.

In one process, after a first call: the working crop's cut (``workcrop.cut_window``: box filter and linear
resampling), the crops' program (results waited for), the paste-back (``workcrop.paste_back``; its engine
with ``--engine``) and the rest (the output's copy and allocation, the masks, Python). Wall and CPU
seconds of this process (CPU counts every thread: two cores give up to twice the wall), medians of
``--repeats``, and the machine's load. Usage: ``python scripts/profile_warm.py [--photo PATH]``.
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
LONDON = REPO.parent / "shared" / "data" / "faces" / "london" / "neutral" / "001.jpg"


def clocked(stages: dict, name: str, fn):
    """``fn`` recording its wall and CPU seconds under ``name`` in ``stages`` (summed over calls)."""

    def run(*args, **kw):
        t, c = time.perf_counter(), time.process_time()
        out = fn(*args, **kw)
        if name == "program":  # the call returns before the results are computed
            jax.block_until_ready(out)
        wall, cpu = stages.get(name, (0.0, 0.0))
        stages[name] = (wall + time.perf_counter() - t, cpu + time.process_time() - c)
        return out

    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", type=Path, default=LONDON)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--engine", default="auto", help="paste-back engine: auto, opencv, tiles or numpy")
    args = ap.parse_args()
    from PIL import Image

    import affectsynth as af
    from affectsynth import workcrop, working

    stages: dict = {}
    workcrop.cut_window = clocked(stages, "cut", workcrop.cut_window)
    paste, kw = workcrop.paste_back, {} if args.engine == "auto" else {"engine": args.engine}
    workcrop.paste_back = clocked(stages, "paste", lambda *a, **k: paste(*a, **k, **kw))
    program = working.work_program
    working.work_program = lambda *a, **k: clocked(stages, "program", program(*a, **k))
    model = af.load_model()
    source = Image.open(args.photo).convert("RGB")
    engine = getattr(workcrop, "paste_engine", lambda: "tiles")() if args.engine == "auto" else args.engine
    print(f"paste engine {engine}")
    head = ("total", "cut", "program", "paste", "rest")
    print(f"{'photo':>8s} {'dtype':7s} " + " ".join(f"{h:>11s}" for h in head))
    for side in (512, 3464):
        photo = np.asarray(source.resize((side, side), Image.BICUBIC))
        lm = af.detect_landmarks(photo)
        for dtype in ("uint8", "float32"):
            image = photo if dtype == "uint8" else photo.astype(np.float32) / 255
            runs = []
            for _ in range(args.repeats + 1):
                stages.clear()
                t, c = time.perf_counter(), time.process_time()
                af.synthesize_batch(image[None], lm[None], np.float32([[0.8, 0.4]]), model)
                stages["total"] = (time.perf_counter() - t, time.process_time() - c)
                runs.append(dict(stages))
            runs = runs[1:]
            med = {k: [statistics.median(r[k][i] for r in runs) * 1e3 for i in (0, 1)] for k in runs[0]}
            med["rest"] = [
                med["total"][i] - sum(med[k][i] for k in ("cut", "program", "paste")) for i in (0, 1)
            ]
            cells = " ".join(
                f"{med[k][0]:5.0f}/{med[k][1]:5.0f}" for k in ("total", "cut", "program", "paste", "rest")
            )
            print(f"{side:>5d} px {dtype:7s} {cells}   (ms wall/CPU)")
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
