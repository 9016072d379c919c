#!/usr/bin/env python3
"""Did a change move the critic's reading of our outputs, or only its noise? (issue 15)

The FER critic (``../shared/tools/fer-critic``: a Haar face box, a 64 x 64 grey mini-Xception; evaluation
only, never a loss) turns on changes nobody can see. Two ``scripts/eval_legibility.py`` runs whose outputs
of a target differ by more than 2 grey levels at a median 3-32 pixels of 455,000 (a rebuilt model, one
field changed elsewhere) read differently on 1-4 of 48 faces per target (sad 0.40 and 0.49). So a hit-rate
difference of a few faces between two runs says little by itself.

This script re-reads two or more evaluation folders of the same faces with the critic's own classifier, on
the face box the critic found in each image (its ``legibility.json``), shifted and scaled over a small grid
(``SHIFTS``, ``SCALES``; between two nearly identical runs 2/3 of 479 boxes moved, 90 % of all by at most
0.6 % of the width and 1.6 % in scale, the largest by 2.8 % and 11 %), and averages the class probabilities
over the grid. Per target and run:

  p_hit     mean over faces of the (averaged) probability of the target's hit classes (critic.TARGETS)
  hit       share of faces whose averaged top class is a hit
  critic    the hit rate the run's evaluation recorded (one box, the official figure)

and for every run after the first, paired per face: the mean difference of ``p_hit`` from the first run with a
95 % bootstrap interval over faces (``*`` when it excludes 0). ``macro`` is the same over the eight classed
targets (faces resampled together). It compares our outputs with each other; the official figures stay
``eval_legibility.py``'s.

usage:
    python scripts/compare_runs.py /tmp/leg-main /tmp/leg-change [--names main change] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_legibility import DEFAULT_CRITIC, TARGETS, load_critic  # noqa: E402

SHIFTS = (-0.04, 0.0, 0.04)
"""Box shifts (fractions of its width and height), in x and in y."""
SCALES = (0.94, 1.0, 1.06)
"""Box scales about its centre."""
MARGIN = 0.1
"""The margin the critic adds around its box (``critic.judge``)."""


def jittered_boxes(box, shifts=SHIFTS, scales=SCALES) -> np.ndarray:
    """Every (x, y, w, h) of ``box`` shifted by ``shifts`` (x and y) and scaled by ``scales`` about its
    centre: f64[len(shifts)^2 len(scales), 4]."""
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + 0.5 * w, y + 0.5 * h
    out = []
    for s in scales:
        for sy in shifts:
            for sx in shifts:
                ww, hh = w * s, h * s
                out.append((cx + sx * w - 0.5 * ww, cy + sy * h - 0.5 * hh, ww, hh))
    return np.asarray(out)


def crop(rgb: np.ndarray, box, margin: float = MARGIN) -> np.ndarray:
    """The critic's crop of ``box`` with its margin, clipped to the image (as ``critic.judge`` cuts)."""
    x, y, w, h = box
    dx, dy = w * margin, h * margin
    hh, ww = rgb.shape[:2]
    top, bottom = int(round(max(0.0, y - dy))), int(round(min(hh, y + h + dy)))
    left, right = int(round(max(0.0, x - dx))), int(round(min(ww, x + w + dx)))
    return rgb[top:bottom, left:right]


def mean_probs(rgb: np.ndarray, box, classify) -> np.ndarray:
    """The class probabilities ``classify`` gives, averaged over the jittered crops of ``box``."""
    return np.mean([classify(np.ascontiguousarray(crop(rgb, b))) for b in jittered_boxes(box)], axis=0)


def read_run(folder: Path, critic) -> dict:
    """{target: {face id: averaged probabilities f64[C]}} over the faces the run's critic judged."""
    import imageio.v3 as iio

    run = json.loads((Path(folder) / "legibility.json").read_text())
    out: dict[str, dict[str, np.ndarray]] = {t: {} for t in TARGETS}
    for key, reading in run["scores"]["per_image"].items():
        pid, target = key.split("__")
        if "box" not in reading or target not in out:
            continue
        rgb = np.asarray(iio.imread(Path(folder) / f"{key}.png"))[..., :3]
        out[target][pid] = mean_probs(rgb, reading["box"], critic.classify)
    return {"probs": out, "critic": {t: run["scores"]["targets"][t]["hit"] for t in TARGETS}}


def paired_interval(diffs: np.ndarray, *, draws: int = 4000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-face differences f64[F] (or f64[F, T]: faces resampled together, the mean over all)
    and its 95 % bootstrap interval."""
    diffs = np.asarray(diffs, np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), (draws, len(diffs)))
    means = diffs[idx].reshape(draws, -1).mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(diffs.mean()), float(lo), float(hi)


def _per_face(run: dict, targets: list[str], faces: list[str], classes: list[str], wants: dict):
    """(p_hit, hit) of ``run`` on ``faces`` x ``targets``: f64[F, T] each."""
    probs = np.array([[run["probs"][t][f] for t in targets] for f in faces]).reshape(
        len(faces), len(targets), -1
    )
    mask = np.array([[c in wants[t] for c in classes] for t in targets], np.float64)  # [T, C]
    return np.einsum("ftc,tc->ft", probs, mask), mask[np.arange(len(targets)), probs.argmax(-1)]


def compare(runs: list[dict], classes: list[str], wants: dict) -> dict:
    """Per classed target and run: p_hit, hit, the run's critic figure, and (after the first run) the paired
    difference of p_hit from the first with its interval; the same over all classed targets as "macro"
    (the faces every run judged at every classed target)."""
    classed = [t for t in TARGETS if wants.get(t)]
    groups = {t: [t] for t in classed}
    groups["macro"] = classed
    rows: dict = {}
    for name, targets in groups.items():
        faces = sorted(set.intersection(*(set(r["probs"][t]) for r in runs for t in targets)))
        per_run = [_per_face(r, targets, faces, classes, wants) for r in runs]
        base = per_run[0][0]
        rows[name] = []
        for k, (r, (ph, hit)) in enumerate(zip(runs, per_run, strict=True)):
            row = {"n": len(faces), "p_hit": float(ph.mean()), "hit": float(hit.mean())}
            if name != "macro":
                row["critic"] = r["critic"][name]
            if k:
                row["delta"] = paired_interval(ph - base)
            rows[name].append(row)
    return rows


def table(rows: dict, names: list[str]) -> str:
    """The comparison as text: one line per target, a column group per run."""
    head = f"{'target':10s}" + "".join(f"{n[:26]:>28s}" for n in names)
    sub = f"{'':10s}" + "".join(f"{'p_hit  hit critic':>28s}" for _ in names)
    lines = [head, sub]
    for t, per_run in rows.items():
        cells = []
        for r in per_run:
            crit = "" if r.get("critic") is None else f"{r['critic']:.3f}"
            cell = f"{r['p_hit']:.3f} {r['hit']:.3f} {crit:>5s}"
            if "delta" in r:
                d, lo, hi = r["delta"]
                cell += f" {d:+.3f}{'*' if lo > 0 or hi < 0 else ' '}"
            cells.append(f"{cell:>28s}")
        lines.append(f"{t:10s}" + "".join(cells))
    lines.append(
        "p_hit: mean probability of the hit classes over a grid of jittered face boxes; hit: share whose "
        "averaged top class is a hit; critic: the run's own figure; +d: p_hit minus the first run's, paired "
        "per face (* = its 95 % bootstrap interval excludes 0)"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="eval_legibility.py output folders (first = baseline)")
    ap.add_argument("--names", nargs="*", help="a label per run (default: the folders' names)")
    ap.add_argument("--critic", type=Path, default=DEFAULT_CRITIC)
    ap.add_argument("--json", type=Path, help="write the comparison here too")
    args = ap.parse_args(argv)
    if len(args.runs) < 2:
        ap.error("give at least two runs")
    names = args.names or [p.name for p in args.runs]
    if len(names) != len(args.runs):
        ap.error("--names needs one label per run")
    for p in args.runs:
        if not (p / "legibility.json").is_file():
            raise SystemExit(f"{p}/legibility.json: not found (run scripts/eval_legibility.py --out {p})")
    try:
        critic = load_critic(args.critic)
    except (ImportError, FileNotFoundError) as e:
        raise SystemExit(f"{args.critic}: critic unavailable: {e}") from None
    classes = list(critic.CLASSES)
    wants = {t: critic.TARGETS[t][2] for t in TARGETS}
    runs = []
    for p in args.runs:
        print(f"reading {p} ...", file=sys.stderr)
        runs.append(read_run(p, critic))
    rows = compare(runs, classes, wants)
    print(table(rows, names))
    if args.json:
        args.json.write_text(json.dumps({"names": names, "runs": [str(p) for p in args.runs], "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
