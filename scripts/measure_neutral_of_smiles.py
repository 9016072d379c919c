#!/usr/bin/env python3
"""Does neutralisation take a real smile to the person's own neutral face? (issue 15, item 3)

The London set holds a neutral and a smiling photo of each of 48 people: ground truth for ``neutral``
(V = A = 0) of a smiling input. Each smiling photo is synthesised at (0, 0) and FaceMesh re-detects the
output; the mouth's shape (``resting._mouth_shape``: lip corners' height above the lips' centre and their
distance, in inter-pupil distances) is compared with the smile's and with the same person's real neutral
photo:

  removed    share of the smile's corner height above the real neutral that the output takes away
             (1: down to the person's neutral; 0: the smile kept)
  height / width residual   output - real neutral (0 is the goal; a smile left: height > 0)

and, with dlib (FACTS.md section 7), the descriptor distance of the output and of the smile to the real
neutral photo; with the FER critic (evaluation only) whether the output reads as neutral. People are split
by their smile's opening (``eval_legibility.OPEN_SMILE``): closed smiles lift the corners much less, and
neutral photos overlap them (corners up to 0.06 IOD), so they are the harder half.

Writes a table on stdout, ``--json`` every number, ``--sheet`` a PNG of mouth crops (smile, output, real
neutral) per person.

usage:
    python scripts/measure_neutral_of_smiles.py --json /tmp/neut.json --sheet /tmp/neut.png
    python scripts/measure_neutral_of_smiles.py --ids 004 009 062 --no-identity --no-critic
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import eval_legibility as ev  # noqa: E402  (scripts/ is not a package)


def mouth_shape(landmarks: np.ndarray) -> np.ndarray:
    """(corner height, corner distance) in inter-pupil distances: ``resting._mouth_shape``."""
    import jax.numpy as jnp

    from affectsynth.resting import _mouth_shape

    return np.asarray(_mouth_shape(jnp.asarray(landmarks, jnp.float32)), np.float64)


def lip_heights(landmarks: np.ndarray) -> np.ndarray:
    """(upper lip's red: FaceMesh 0 to 13, lower lip's: 14 to 17, lip border to chin: 17 to 152) in
    inter-pupil distances: a mouth closed by stretching the lips has tall lips; a closing jaw shortens the
    chin instead."""
    x = np.asarray(landmarks, np.float64)[:, :2]
    iod = np.linalg.norm(x[468] - x[473])
    return np.array([np.linalg.norm(x[a] - x[b]) for a, b in ((0, 13), (14, 17), (17, 152))]) / iod


def measure(
    data: Path,
    ids: list[str],
    *,
    identity: bool,
    critic_dir: Path | None,
    sheet: Path | None,
    cues: bool = True,
):
    import affectsynth as af

    model = af.load_model()
    options = af.SynthesisOptions()
    if not cues:  # the warp alone: no shading, wrinkles, mouth paint or eye cues
        look = af.AppearanceOptions(shading=False, wrinkles=False, mouth_interior=False, eyes=False)
        options = af.SynthesisOptions(appearance=look)
    dlib = None
    if identity:
        try:
            dlib = ev._Dlib()
        except (ImportError, RuntimeError, OSError) as e:
            print(f"identity: n/a ({e})", file=sys.stderr)
    critic = None
    if critic_dir is not None:
        try:
            critic = ev.load_critic(critic_dir)
        except (ImportError, FileNotFoundError) as e:
            print(f"critic: n/a ({e})", file=sys.stderr)
    rows, tiles = {}, []
    bar = ev._progress(len(ids), "neutral of smiles", "face", True)
    for pid in ids:
        smile_path, neutral_path = (Path(data) / kind / f"{pid}.jpg" for kind in ("smiling", "neutral"))
        if not (smile_path.is_file() and neutral_path.is_file()):
            bar.update(1)
            continue
        smile = np.asarray(af.load_image(smile_path), np.float32)
        neutral = np.asarray(af.load_image(neutral_path), np.float32)
        try:
            lm_s = np.asarray(af.detect_landmarks(smile, source=str(smile_path)), np.float32)
            lm_n = np.asarray(af.detect_landmarks(neutral, source=str(neutral_path)))
        except af.AffectsynthError as e:  # reported and skipped, as smile_openings skips it
            print(f"skipped {pid}: {e}", file=sys.stderr)
            bar.update(1)
            continue
        out = np.asarray(af.synthesize(smile, 0.0, 0.0, model=model, landmarks=lm_s, options=options))
        lm_o = np.asarray(af.detect_landmarks(out))
        s, o, n = (mouth_shape(x) for x in (lm_s, lm_o, lm_n))
        lift = s[0] - n[0]
        row = {
            "opening": ev.lip_opening(lm_s),
            "smile": s.tolist(),
            "output": o.tolist(),
            "neutral": n.tolist(),
            "removed": float((s[0] - o[0]) / lift) if lift > 0.02 else None,
            "residual": (o - n).tolist(),
            "lips_smile": lip_heights(lm_s).tolist(),
            "lips_output": lip_heights(lm_o).tolist(),
            "lips_neutral": lip_heights(lm_n).tolist(),
        }
        if dlib is not None:
            u8 = [np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8) for x in (smile, out, neutral)]
            ref, rect = dlib.descriptor(u8[2])
            if ref is not None:
                ds, _ = dlib.descriptor(u8[0])
                do, _ = dlib.descriptor(u8[1], rect)
                row["identity_smile"] = float(np.linalg.norm(ds - ref)) if ds is not None else None
                row["identity_output"] = float(np.linalg.norm(do - ref)) if do is not None else None
        if critic is not None:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{pid}.png"
                af.save_image(path, out)
                row["critic"] = ev._reading(critic.judge(str(path))).get("top")
        rows[pid] = row
        if sheet is not None:
            tiles.append([_mouth_crop(x, lm) for x, lm in ((smile, lm_s), (out, lm_s), (neutral, lm_n))])
        bar.update(1)
    bar.close()
    if sheet is not None and tiles:
        _write_sheet(sheet, tiles, list(rows))
    return rows


def _mouth_crop(image: np.ndarray, lm: np.ndarray, size: int = 160) -> np.ndarray:
    """A square crop around the mouth and cheeks (1.3 inter-pupil distances wide), resized to ``size``."""
    from PIL import Image

    iod = np.linalg.norm(lm[468, :2] - lm[473, :2])
    cx, cy = 0.5 * (lm[61, :2] + lm[291, :2])
    half = 0.65 * iod
    box = tuple(int(round(v)) for v in (cx - half, cy - 0.8 * half, cx + half, cy + 1.2 * half))
    pil = Image.fromarray(np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8))
    return np.asarray(pil.crop(box).resize((size, size)))


def _write_sheet(path: Path, tiles: list, ids: list[str]):
    from PIL import Image, ImageDraw

    size = tiles[0][0].shape[0]
    cols = 4  # people per row of the sheet, each as smile | output | real neutral
    rows = (len(tiles) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (3 * size + 8), rows * (size + 14)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (trio, pid) in enumerate(zip(tiles, ids, strict=True)):
        x0, y0 = (k % cols) * (3 * size + 8), (k // cols) * (size + 14)
        for j, tile in enumerate(trio):
            canvas.paste(Image.fromarray(tile), (x0 + j * size, y0 + 14))
        draw.text((x0 + 2, y0 + 1), f"{pid}: smile | neutral (ours) | neutral (real)", fill="black")
    tmp = Path(path).with_suffix(".tmp.png")
    canvas.save(tmp)
    tmp.replace(path)


def summary(rows: dict) -> str:
    lines = [
        f"{'smiles':<8} {'n':>3} {'removed':>8} {'height: smile':>14} {'ours':>7} {'real':>7}  "
        f"{'width: smile':>12} {'ours':>7} {'real':>7}  {'identity: smile':>15} {'ours':>6}  read neutral"
    ]
    for kind in ("open", "closed", "all"):
        sel = [
            r for r in rows.values() if kind == "all" or (r["opening"] >= ev.OPEN_SMILE) == (kind == "open")
        ]
        if not sel:
            continue

        def med(key, i=None, sel=sel):
            v = [r[key] if i is None else r[key][i] for r in sel if r.get(key) is not None]
            return float(np.median(v)) if v else None

        reads = [r["critic"] for r in sel if r.get("critic")]
        lines.append(
            f"{kind:<8} {len(sel):>3} {ev._fmt(med('removed')):>8} {ev._fmt(med('smile', 0)):>14} "
            f"{ev._fmt(med('output', 0)):>7} {ev._fmt(med('neutral', 0)):>7}  {ev._fmt(med('smile', 1)):>12} "
            f"{ev._fmt(med('output', 1)):>7} {ev._fmt(med('neutral', 1)):>7}  "
            f"{ev._fmt(med('identity_smile')):>15} {ev._fmt(med('identity_output')):>6}  "
            + (f"{sum(x == 'neutral' for x in reads)}/{len(reads)}" if reads else "n/a")
        )
    lines.append(
        "lip heights (upper red, lower red, lower lip to chin), medians: smile / ours / real neutral"
    )
    for kind in ("open", "closed"):
        sel = [r for r in rows.values() if (r["opening"] >= ev.OPEN_SMILE) == (kind == "open")]
        if sel:
            keys = ("lips_smile", "lips_output", "lips_neutral")
            cells = ["/".join(f"{v:.3f}" for v in np.median([r[k] for r in sel], axis=0)) for k in keys]
            lines.append(f"  {kind:<7} " + " | ".join(cells))
    lines.append(
        "(medians; mouth shape in inter-pupil distances, FaceMesh noise ~0.015; identity: dlib distance to "
        "the real neutral photo)"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ev.DEFAULT_DATA)
    ap.add_argument("--ids", nargs="*", default=None, help="London ids (default: all)")
    ap.add_argument("--no-identity", action="store_true")
    ap.add_argument("--no-critic", action="store_true")
    ap.add_argument("--critic", type=Path, default=ev.DEFAULT_CRITIC)
    ap.add_argument("--geometry-only", action="store_true", help="no appearance cue: the warp alone")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--sheet", type=Path, default=None)
    a = ap.parse_args(argv)
    if not (a.data / "smiling").is_dir():
        print(f"skipped: no smiling photos at {a.data / 'smiling'}")
        return 0
    ids = a.ids or [pid for pid, _ in ev.find_photos(a.data)]
    rows = measure(
        a.data,
        ids,
        identity=not a.no_identity,
        critic_dir=None if a.no_critic else a.critic,
        sheet=a.sheet,
        cues=not a.geometry_only,
    )
    print(summary(rows))
    if a.json:
        tmp = a.json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
