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
  cheek_width  change of the distance between the cheek points (205/425): the bulge pushed out
  oval_width   change of the face's width at the cheekbones (face-oval points 234/454)

Appearance, from the pixels (luminance relative to the same image's nose-bridge skin, so exposure cancels),
sampled through a least-squares affine map of the template (mm) onto each image's stable landmarks:

  teeth_fill   share of the inner-lip polygon that is teeth (brighter than the lips' own median and than 0.9
               of the skin): how much of the open mouth shows teeth
  teeth_reach  width of the teeth pixels' extent over the inner corners' distance
  teeth_bright median luminance of the teeth pixels over the skin's (1 where they match the skin)
  teeth_tex    standard deviation of the teeth pixels' log-luminance after a 3x3 box blur is taken out (the
               gaps and edges between crowns; a flat painted band is near 0)
  teeth_warm   median (R - B) / (R + G + B) of the teeth pixels: how yellow (positive) or blue the teeth are,
               in the photo's own white balance, so compare a person's real smile with our output
  teeth_green  median (G - (R + B) / 2) / (R + G + B) of the teeth pixels (negative: magenta)
  shade_warm   median (R - B) / (R + G + B) of the inner-mouth pixels at 0.6-1.0 of the skin's luminance:
               mostly the teeth's shaded sides and corners (real ones warm as they darken, lit by the lips)
  fold_dip     nasolabial fold: 1 - darkest / mean of the two ends, along template segments across the fold
               (positive: a dark crease); values are absolute, not changes
  fold_width   width (mm) of the fold profile where it is darker than half its dip
  apple        change of the cheek-apple patch's luminance (template (+-35, 8) mm, radius 6) vs the neutral
               photo: a painted highlight shows as a positive value

``--sheet`` writes face crops: the neutral photo, the real smile and each run's output, one row per id.

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
    "cheek_width",
    "oval_width",
)
LOOKS = (
    "teeth_fill",
    "teeth_reach",
    "teeth_bright",
    "teeth_tex",
    "teeth_warm",
    "teeth_green",
    "shade_warm",
    "fold_dip",
    "fold_width",
    "apple",
)
CHEEK_PTS = (205, 425)
OVAL_PTS = (234, 454)
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
BRIDGE_MM = ((-6.0, 30.0), (6.0, 38.0))  # skin patch on the nose bridge between the eyes (template mm)
APPLE_MM, APPLE_R = (35.0, 8.0), 6.0
FOLD_ACROSS = tuple(((18.0 + 0.25 * k, y), (44.0 + 0.25 * k, y)) for k, y in enumerate((-8.0, -14.0, -20.0)))


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
        "cheek_width": float(np.linalg.norm(lm[CHEEK_PTS[1]] - lm[CHEEK_PTS[0]])),
        "oval_width": float(np.linalg.norm(lm[OVAL_PTS[1]] - lm[OVAL_PTS[0]])),
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
        "cheek_width": (other["cheek_width"] - neutral["cheek_width"]) / iod,
        "oval_width": (other["oval_width"] - neutral["oval_width"]) / iod,
    }


def template_map(template: np.ndarray, lm: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """3 x 2 affine taking template (x mm, y mm, 1) to image pixels, least squares on ``ids``."""
    a = np.column_stack([template[ids, :2], np.ones(len(ids))])
    return np.linalg.lstsq(a, lm[ids], rcond=None)[0]


def _sample(lum: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of ``lum`` at pixel positions ``xy`` (N x 2, x right, y down; clamped)."""
    h, w = lum.shape
    x = np.clip(xy[:, 0], 0.0, w - 1.001)
    y = np.clip(xy[:, 1], 0.0, h - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    top = lum[y0, x0] * (1 - fx) + lum[y0, x0 + 1] * fx
    bottom = lum[y0 + 1, x0] * (1 - fx) + lum[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _disc(centre, radius: float, step: float = 0.5) -> np.ndarray:
    g = np.arange(-radius, radius + 1e-6, step)
    xx, yy = np.meshgrid(g, g)
    keep = xx**2 + yy**2 <= radius**2
    return np.column_stack([xx[keep] + centre[0], yy[keep] + centre[1]])


def looks(img: np.ndarray, lm: np.ndarray, amap: np.ndarray) -> dict[str, float]:
    """Appearance numbers of one photo (``LOOKS``; ``apple`` as the raw patch luminance)."""
    from matplotlib.path import Path as PolyPath

    lum = img[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114]) + 1.0

    def at(mm):
        mm = np.asarray(mm, np.float64).reshape(-1, 2)
        return _sample(lum, np.column_stack([mm, np.ones(len(mm))]) @ amap)

    (bx0, by0), (bx1, by1) = BRIDGE_MM
    gx, gy = np.meshgrid(np.linspace(bx0, bx1, 9), np.linspace(by0, by1, 9))
    skin = float(np.median(at(np.column_stack([gx.ravel(), gy.ravel()]))))
    apple = float(np.mean([at(_disc((sx * APPLE_MM[0], APPLE_MM[1]), APPLE_R)).mean() for sx in (-1, 1)]))
    dips, widths = [], []
    for sx in (-1.0, 1.0):
        for (x0, y0), (x1, y1) in FOLD_ACROSS:
            t = np.linspace(0.0, 1.0, 105)
            prof = at(np.column_stack([sx * (x0 + t * (x1 - x0)), y0 + t * (y1 - y0)]))
            ends = 0.5 * (prof[:8].mean() + prof[-8:].mean())
            dip = 1.0 - prof.min() / ends
            dips.append(dip)
            widths.append(np.count_nonzero(prof < ends * (1.0 - 0.5 * dip)) * (x1 - x0) / (len(t) - 1))
    poly = lm[list(INNER_LIPS)]
    x0, y0 = np.floor(poly.min(0)).astype(int)
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 1
    yy, xx = np.mgrid[y0:y1, x0:x1]
    inside = PolyPath(poly).contains_points(np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5]))
    patch = lum[y0:y1, x0:x1]
    mouth = patch.ravel()[inside]
    out = {"fold_dip": float(np.median(dips)), "fold_width": float(np.median(widths)), "apple": apple / skin}
    if mouth.size < 20:
        none = {"teeth_fill": 0.0, "teeth_reach": 0.0, "teeth_tex": 0.0}
        nan = {k: float("nan") for k in ("teeth_bright", "teeth_warm", "teeth_green", "shade_warm")}
        return out | none | nan
    teeth = inside.reshape(patch.shape) & (patch > max(np.median(mouth), 0.9 * skin))
    log = np.log(patch)
    pad = np.pad(log, 1, mode="edge")
    blur = sum(pad[i : i + patch.shape[0], j : j + patch.shape[1]] for i in range(3) for j in range(3)) / 9.0
    cols = np.flatnonzero(teeth.any(0))
    span = float(np.linalg.norm(lm[INNER_LIPS[10]] - lm[INNER_LIPS[0]]))
    out["teeth_fill"] = float(teeth.sum() / inside.sum())
    out["teeth_reach"] = float((cols.max() - cols.min() + 1) / span) if cols.size else 0.0
    out["teeth_bright"] = float(np.median(patch[teeth]) / skin) if teeth.any() else float("nan")
    out["teeth_tex"] = float(np.std((log - blur)[teeth])) if teeth.sum() > 10 else 0.0
    rgb = img[y0:y1, x0:x1, :3].astype(np.float64) + 1.0
    shade = inside.reshape(patch.shape) & (patch >= 0.6 * skin) & (patch < skin)

    def chroma(where, weights):
        """Median of (weights . RGB) / (R + G + B) over the pixels ``where`` (NaN if none)."""
        px = rgb[where]
        return float(np.median(px @ np.asarray(weights) / px.sum(axis=1))) if where.any() else float("nan")

    out["teeth_warm"] = chroma(teeth, (1.0, 0.0, -1.0))
    out["teeth_green"] = chroma(teeth, (-0.5, 1.0, -0.5))
    out["shade_warm"] = chroma(shade, (1.0, 0.0, -1.0))
    return out


def stable_points() -> tuple[np.ndarray, np.ndarray]:
    """(ids of the landmarks an expression hardly moves: nose, forehead, inner eye corners; the FaceMesh
    template f64[N, 3], mm): what the shapes are aligned on and the looks sampled through."""
    from affectsynth.face import topology as topo

    t = topo.face_topology()
    stable = np.concatenate([t.region("nose"), t.region("forehead"), np.array(STABLE_EXTRA)])
    return stable, np.asarray(t.template, np.float64)


def photo_looks(img: np.ndarray, lm: np.ndarray) -> dict[str, float]:
    """``looks`` of uint8 RGB ``img`` with landmarks ``lm`` (pixels), through its own template map."""
    stable, template = stable_points()
    return looks(img, lm, template_map(template, lm, stable))


def as_uint8(img) -> np.ndarray:
    """An image as uint8 RGB (``af.load_image`` gives floats in [0, 1])."""
    img = np.asarray(img)[..., :3]
    if img.dtype == np.uint8:
        return img
    return np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)


def face_crop(img: np.ndarray, lm: np.ndarray, size: int = 256) -> np.ndarray:
    """A square crop around the landmarks' box (10 % margin), resized to ``size``."""
    from PIL import Image

    lo, hi = lm.min(0), lm.max(0)
    c, half = 0.5 * (lo + hi), 0.55 * float((hi - lo).max())
    box = tuple(int(round(v)) for v in (c[0] - half, c[1] - half, c[0] + half, c[1] + half))
    return np.asarray(Image.fromarray(img[..., :3]).crop(box).resize((size, size), Image.BILINEAR))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", nargs="+", required=True, help="London photo ids")
    ap.add_argument("--runs", nargs="*", type=Path, default=[], help="output folders with <id>__<target>.png")
    ap.add_argument("--names", nargs="*", default=None, help="a column name per run")
    ap.add_argument("--target", default="happy")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", type=Path, default=None, help="write every number here")
    ap.add_argument("--sheet", type=Path, default=None, help="write a PNG of face crops here")
    args = ap.parse_args(argv)

    import affectsynth as af

    stable, _ = stable_points()
    names = args.names or [p.name for p in args.runs]
    if len(names) != len(args.runs):
        print("error: --names needs one name per --runs folder", file=sys.stderr)
        return 2
    sources = {"real": lambda i: args.data / "smiling" / f"{i}.jpg"}
    for name, run in zip(names, args.runs, strict=True):
        sources[name] = lambda i, run=run: run / f"{i}__{args.target}.png"
    rows: dict[str, dict[str, dict[str, float]]] = {k: {} for k in ("neutral", *sources)}
    sheet_rows = []
    for pid in args.ids:
        img0 = as_uint8(af.load_image(args.data / "neutral" / f"{pid}.jpg"))
        lm0 = np.asarray(af.detect_landmarks(img0))[:, :2]
        iod = float(np.linalg.norm(lm0[PUPILS[1]] - lm0[PUPILS[0]]))
        base = shape(lm0)
        look0 = photo_looks(img0, lm0)
        rows["neutral"][pid] = {m: 0.0 for m in MEASURES} | look0 | {"apple": 0.0}
        tiles = [face_crop(img0, lm0)]
        for key, where in sources.items():
            path = where(pid)
            if not path.exists():
                continue
            img = as_uint8(af.load_image(path))
            lm = np.asarray(af.detect_landmarks(img))[:, :2]
            look = photo_looks(img, lm)
            look["apple"] -= look0["apple"]
            rows[key][pid] = measures(base, shape(align(lm, lm0, stable)), iod) | look
            tiles.append(face_crop(img, lm))
        sheet_rows.append(np.concatenate(tiles, axis=1))
    summary = {}
    for columns in (MEASURES, LOOKS):
        print(f"{'source':>10} {'n':>3} " + " ".join(f"{m[:12]:>12}" for m in columns))
        for key, per in rows.items():
            if not per:
                continue
            med = {m: float(np.nanmedian([v[m] for v in per.values()])) for m in columns}
            summary.setdefault(key, {}).update(med)
            print(f"{key:>10} {len(per):>3} " + " ".join(f"{med[m]:>12.3f}" for m in columns))
    print("(medians; shape in inter-pupil distances, FaceMesh noise ~0.015; neutral: the photo's own looks)")
    if args.json:
        args.json.write_text(json.dumps({"median": summary, "per_face": rows}, indent=1))
    if args.sheet and sheet_rows:
        from PIL import Image

        width = max(r.shape[1] for r in sheet_rows)
        padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in sheet_rows]
        Image.fromarray(np.concatenate(padded, axis=0)).save(args.sheet)
        print(f"sheet: {args.sheet} (columns: neutral, {', '.join(sources)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
