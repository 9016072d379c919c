#!/usr/bin/env python3
"""Do the lids close the same share of every face's eye opening? (issue 15; ``affectsynth.lids``)

For each London person and each output folder (``scripts/eval_legibility.py`` writes ``<id>__<target>.png``),
FaceMesh re-detects the eyes on the neutral photo and on the output, and the share of the opening the target
closes is ``1 - gap(output) / gap(neutral)`` (``lids.eye_gaps``: paired upper/lower lid points, corners left
out). Printed per target: the median share, the mean share of the narrowest and of the widest quarter of
eyes, and the correlation of each eye's share with the *other* eye's opening (the two eyes' detection
errors are mostly independent while their true openings agree, r ~ 0.8; the same eye's opening would
correlate with its own share through the shared denominator). A lid rule that closes millimetres shows a
negative correlation (narrow eyes lose more); a share of the opening shows none.

usage:
    python scripts/measure_lids.py --runs /tmp/before /tmp/after --names before after --targets sad bored
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces" / "london"
PUPILS = (468, 473)


def openings(lm: np.ndarray) -> np.ndarray:
    """Mean lid gap of the (right, left) eye of one landmark set, pixels."""
    import jax.numpy as jnp

    from affectsynth.lids import eye_gaps

    return np.asarray(eye_gaps(jnp.asarray(lm, jnp.float32))).mean(axis=1)


def summary(rows: np.ndarray) -> dict[str, float]:
    """``rows``: f[N, 4] = (right opening IOD, left opening IOD, right share, left share)."""
    a = np.concatenate([rows[:, 0], rows[:, 1]])
    s = np.concatenate([rows[:, 2], rows[:, 3]])
    lo, hi = a < np.percentile(a, 25), a > np.percentile(a, 75)
    cross = 0.5 * (np.corrcoef(rows[:, 1], rows[:, 2])[0, 1] + np.corrcoef(rows[:, 0], rows[:, 3])[0, 1])
    return {
        "median": float(np.median(s)),
        "narrow": float(s[lo].mean()),
        "wide": float(s[hi].mean()),
        "r": cross,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", type=Path, required=True, help="folders with <id>__<target>.png")
    ap.add_argument("--names", nargs="*", default=None, help="a column name per run")
    ap.add_argument("--targets", nargs="+", default=["sad", "bored", "calm", "happy"])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args(argv)

    import affectsynth as af

    names = args.names or [p.name for p in args.runs]
    ids = sorted(p.stem for p in (args.data / "neutral").glob("*.jpg"))
    neutral = {}
    print(f"{'target':>8} {'run':>8} {'n':>3} {'median':>7} {'narrow':>7} {'wide':>7} {'r(other)':>9}")
    for target in args.targets:
        for name, run in zip(names, args.runs, strict=True):
            rows = []
            for pid in ids:
                path = run / f"{pid}__{target}.png"
                if not path.is_file():
                    continue
                if pid not in neutral:
                    neutral[pid] = np.asarray(
                        af.detect_landmarks(af.load_image(args.data / "neutral" / f"{pid}.jpg"))
                    )
                n = neutral[pid]
                gn = openings(n)
                go = openings(np.asarray(af.detect_landmarks(af.load_image(path))))
                iod = float(np.linalg.norm(n[PUPILS[1], :2] - n[PUPILS[0], :2]))
                rows.append([gn[0] / iod, gn[1] / iod, 1.0 - go[0] / gn[0], 1.0 - go[1] / gn[1]])
            if len(rows) < 4:
                continue
            s = summary(np.array(rows))
            head = f"{target:>8} {name:>8} {len(rows):>3}"
            print(f"{head} {s['median']:>7.3f} {s['narrow']:>7.3f} {s['wide']:>7.3f} {s['r']:>+9.2f}")
    print("(share of the neutral photo's opening closed; narrow / wide: the quarters of eyes by opening)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
