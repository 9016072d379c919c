#!/usr/bin/env python3
"""How does our smile compare with the same people's real smiles? (issue 15, item 4)

For each London person, FaceMesh landmarks of the neutral photo, of the real smiling photo and of our
``<id>__<target>.png`` in each given output folder (``scripts/eval_legibility.py`` writes them) are
similarity-aligned onto the neutral landmarks on stable points (nose, forehead, inner eye corners), and the
smile's shape is measured in inter-pupil distances (IOD), as the change from the neutral photo:

  corners_up   mean rise of the two lip corners
  widening     change of the corner-to-corner distance
  curve        rise of the corners *relative to the lips' centre* (the mean of the inner-lip midpoints):
               what turns a mouth line into a U; a lens of parted lips has corners level with the centre
  upper_up     rise of the upper lip's outer midpoint
  gap          opening between the inner-lip midpoints
  lid_up       rise of the lower lids' middle points (AU6 pushes them up)
  cheek_up     rise of the cheek points beside the nose wing (AU6/AU12 bunch the cheek)
  aperture     change of the eyes' opening (negative: narrower)
  lower_drop   drop of the lower lip's inner midpoint *relative to the corners*: a smile's lower lip follows
               its curve, centre below the corners
  upper_curve  drop of the upper lip's inner midpoint relative to the corners (the upper lip's arc)
  near_gap     opening between the inner lips a third of the way in from each corner (points 80/88, 310/318)
  gap_curve    gap minus near_gap: how much more the lips part at the centre than near the corners (an arc
               of teeth, not a flat band)

FaceMesh's noise on points that do not move is ~0.015 IOD (FACTS.md 9): differences below it are noise.

usage:
    python scripts/measure_smile.py --ids 001 003 004 --runs /tmp/before /tmp/after --names before after
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces" / "london"
STABLE_EXTRA = (133, 362)  # inner eye corners: AU6 hardly moves them
CORNERS = (61, 291)
INNER_MID = (13, 14)
UPPER_MID = 0
LOWER_LID = (145, 374)
UPPER_LID = (159, 386)
CHEEK = (205, 425)
PUPILS = (468, 473)
NEAR_PAIRS = ((80, 88), (310, 318))  # inner-lip pairs a third of the way in from each corner
MEASURES = (
    "corners_up",
    "widening",
    "curve",
    "upper_up",
    "gap",
    "lid_up",
    "cheek_up",
    "aperture",
    "lower_drop",
    "upper_curve",
    "near_gap",
    "gap_curve",
)


def align(src: np.ndarray, dst: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``src`` (N x 2) moved by the least-squares similarity taking ``src[ids]`` onto ``dst[ids]``."""
    a, b = src[ids], dst[ids]
    ma, mb = a.mean(0), b.mean(0)
    u, sv, vt = np.linalg.svd((b - mb).T @ (a - ma))
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = np.trace(np.diag(sv) @ d) / np.sum((a - ma) ** 2)
    return (src - ma) @ (scale * rot).T + mb


def shape(lm: np.ndarray) -> dict[str, float]:
    """Raw shape numbers of one aligned landmark set (pixels, y down; ``measures`` takes differences)."""
    c = lm[list(CORNERS)]
    centre_y = lm[list(INNER_MID), 1].mean()
    return {
        "corners_y": float(c[:, 1].mean()),
        "width": float(np.linalg.norm(c[1] - c[0])),
        "curve": float(centre_y - c[:, 1].mean()),
        "upper_y": float(lm[UPPER_MID, 1]),
        "gap": float(lm[INNER_MID[1], 1] - lm[INNER_MID[0], 1]),
        "lid_y": float(lm[list(LOWER_LID), 1].mean()),
        "cheek_y": float(lm[list(CHEEK), 1].mean()),
        "aperture": float(np.mean(lm[list(LOWER_LID), 1] - lm[list(UPPER_LID), 1])),
        "lower_rel": float(lm[INNER_MID[1], 1] - c[:, 1].mean()),
        "upper_rel": float(lm[INNER_MID[0], 1] - c[:, 1].mean()),
        "near_gap": float(np.mean([lm[lo, 1] - lm[up, 1] for up, lo in NEAR_PAIRS])),
    }


def measures(neutral: dict, other: dict, iod: float) -> dict[str, float]:
    """The smile's measures (``MEASURES``, IOD) of ``other`` against ``neutral``."""
    return {
        "corners_up": (neutral["corners_y"] - other["corners_y"]) / iod,
        "widening": (other["width"] - neutral["width"]) / iod,
        "curve": (other["curve"] - neutral["curve"]) / iod,
        "upper_up": (neutral["upper_y"] - other["upper_y"]) / iod,
        "gap": (other["gap"] - neutral["gap"]) / iod,
        "lid_up": (neutral["lid_y"] - other["lid_y"]) / iod,
        "cheek_up": (neutral["cheek_y"] - other["cheek_y"]) / iod,
        "aperture": (other["aperture"] - neutral["aperture"]) / iod,
        "lower_drop": (other["lower_rel"] - neutral["lower_rel"]) / iod,
        "upper_curve": (other["upper_rel"] - neutral["upper_rel"]) / iod,
        "near_gap": (other["near_gap"] - neutral["near_gap"]) / iod,
        "gap_curve": ((other["gap"] - other["near_gap"]) - (neutral["gap"] - neutral["near_gap"])) / iod,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", nargs="+", required=True, help="London photo ids")
    ap.add_argument("--runs", nargs="*", type=Path, default=[], help="output folders with <id>__<target>.png")
    ap.add_argument("--names", nargs="*", default=None, help="a column name per run")
    ap.add_argument("--target", default="happy")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    args = ap.parse_args(argv)

    import affectsynth as af
    from affectsynth.face import topology as topo

    t = topo.face_topology()
    stable = np.concatenate([t.region("nose"), t.region("forehead"), np.array(STABLE_EXTRA)])
    names = args.names or [p.name for p in args.runs]
    if len(names) != len(args.runs):
        print("error: --names needs one name per --runs folder", file=sys.stderr)
        return 2
    sources = {"real": lambda i: args.data / "smiling" / f"{i}.jpg"}
    for name, run in zip(names, args.runs, strict=True):
        sources[name] = lambda i, run=run: run / f"{i}__{args.target}.png"
    rows: dict[str, dict[str, dict[str, float]]] = {k: {} for k in sources}
    for pid in args.ids:
        neutral_path = args.data / "neutral" / f"{pid}.jpg"
        lm0 = np.asarray(af.detect_landmarks(af.load_image(neutral_path)))[:, :2]
        iod = float(np.linalg.norm(lm0[PUPILS[1]] - lm0[PUPILS[0]]))
        base = shape(lm0)
        for key, where in sources.items():
            path = where(pid)
            if not path.exists():
                continue
            lm = np.asarray(af.detect_landmarks(af.load_image(path)))[:, :2]
            rows[key][pid] = measures(base, shape(align(lm, lm0, stable)), iod)
    print(f"{'source':>10} {'n':>3} " + " ".join(f"{m[:10]:>10}" for m in MEASURES))
    summary = {}
    for key, per in rows.items():
        if not per:
            continue
        med = {m: float(np.median([v[m] for v in per.values()])) for m in MEASURES}
        summary[key] = med
        print(f"{key:>10} {len(per):>3} " + " ".join(f"{med[m]:>10.3f}" for m in MEASURES))
    print("(medians, inter-pupil distances; FaceMesh noise ~0.015)")
    if args.json:
        args.json.write_text(json.dumps({"median": summary, "per_face": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
