"""Before/after contact sheet of the appearance cues: 8 London faces x 6 V-A targets.

Each face gets two rows: the geometry-only result (all appearance cues off) and the full result, with the
input photo in the first column. Reads the London photos in place from ../shared (never copy them into the
repository) and writes a PNG under out/ (git-ignored) unless a path is given.

Backends:
  pipeline   ``synthesize_batch`` with ``AppearanceOptions`` all off vs all on (the real thing).
  reference  the test suite's NumPy rasteriser and a similarity-aligned AU deformation of the template,
             no Poisson blend: a preview for when a pipeline stage is unavailable.
  auto       pipeline, falling back to reference if it fails (default).

Usage: python scripts/appearance_sheet.py [out.png] [--backend auto] [--faces 8] [--cell 224]
Attribution: Face Research Lab London Set, DeBruine & Jones (2017), CC-BY 4.0 (printed on the sheet's log).
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from PIL import Image

from affectsynth.affect.au_fields import expression_basis
from affectsynth.render.appearance import context as ap

REPO = Path(__file__).resolve().parents[1]
LONDON = REPO.parent / "shared" / "data" / "faces" / "london"
TARGETS = ((0.8, 0.5), (0.6, -0.3), (0.4, 0.9), (-0.6, 0.6), (-0.6, -0.3), (-0.5, 0.3))
"""happy, relaxed, surprised/excited, angry/afraid, sad, displeased."""


def face_ids(n: int) -> list[str]:
    ids = sorted(p.stem for p in (LONDON / "neutral").glob("*.jpg"))
    return ids[:: max(1, len(ids) // n)][:n]


def rows_pipeline(ids):
    from affectsynth import pipeline  # noqa: PLC0415
    from affectsynth.face.landmarks import detect_landmarks  # noqa: PLC0415
    from affectsynth.io import load_image  # noqa: PLC0415

    @dataclasses.dataclass(frozen=True)
    class Options(pipeline.SynthesisOptions):
        appearance: ap.AppearanceOptions | None = None

    sys.path.insert(0, str(REPO / "scripts"))
    from bench_appearance import load_model  # noqa: PLC0415

    model = load_model(pipeline)
    off = ap.AppearanceOptions(shading=False, wrinkles=False, mouth_interior=False, eyes=False)
    targets = np.array(TARGETS, np.float32)
    for fid in ids:
        img = np.asarray(load_image(LONDON / "neutral" / f"{fid}.jpg"), np.float32)
        lm = np.asarray(detect_landmarks(img), np.float32)
        imgs, lms = np.repeat(img[None], len(TARGETS), 0), np.repeat(lm[None], len(TARGETS), 0)
        pair = []
        for look in (off, ap.AppearanceOptions()):
            res = pipeline.synthesize_batch(imgs, lms, targets, model, options=Options(appearance=look))
            pair.append([np.asarray(x) for x in res.images])
        yield img, lm, pair


def rows_reference(ids):
    sys.path.insert(0, str(REPO / "tests"))
    import test_appearance as T  # noqa: PLC0415
    from affectsynth.affect.va_map import au_intensities  # noqa: PLC0415

    basis = (expression_basis()[0], None)
    mesh = T.render_mesh()
    off = ap.AppearanceOptions(shading=False, wrinkles=False, mouth_interior=False, eyes=False)
    for fid in ids:
        pair = [[], []]
        for v, a in TARGETS:
            au = au_intensities(v, a)
            render, frags, ctx, patch, _ = T.london_pair_scene(LONDON, fid, basis, mesh, au=au)
            for k, look in enumerate((off, ap.AppearanceOptions())):
                out, _ = T.apply(render, jnp.asarray(patch), frags, ctx, options=look)
                pair[k].append(np.asarray(out))
        yield patch, np.asarray(ctx.landmarks), pair


def crop_cell(img, lm, cell: int):
    """Square crop around the face (from its landmarks), resized to ``cell`` px."""
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
    c, half = 0.5 * (lo + hi), 0.62 * float(np.max(hi - lo))
    x0, y0 = int(max(0, c[0] - half)), int(max(0, c[1] - half))
    x1, y1 = int(min(img.shape[1], c[0] + half)), int(min(img.shape[0], c[1] + half))
    sub = (np.clip(img[y0:y1, x0:x1], 0, 1) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(sub).resize((cell, cell), Image.LANCZOS))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(REPO / "out" / "appearance_sheet.png"))
    parser.add_argument("--backend", choices=("auto", "pipeline", "reference"), default="auto")
    parser.add_argument("--faces", type=int, default=8)
    parser.add_argument("--cell", type=int, default=224)
    args = parser.parse_args()
    if not (LONDON / "neutral").is_dir():
        sys.exit(f"London photos not found at {LONDON}")
    ids = face_ids(args.faces)
    backend = args.backend
    if backend == "auto":
        try:
            next(rows_pipeline(ids[:1]))
            backend = "pipeline"
        except Exception as e:  # noqa: BLE001  (a stage not ready: fall back to the reference preview)
            print(f"pipeline failed ({type(e).__name__}: {str(e)[:120]}); using the reference backend")
            backend = "reference"
    gen = rows_pipeline(ids) if backend == "pipeline" else rows_reference(ids)
    blank = np.full((args.cell, args.cell, 3), 255, np.uint8)
    lines = []
    for img, lm, (before, after) in gen:
        first = crop_cell(img, lm, args.cell)
        lines.append(np.concatenate([first] + [crop_cell(x, lm, args.cell) for x in before], 1))
        lines.append(np.concatenate([blank] + [crop_cell(x, lm, args.cell) for x in after], 1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(lines, 0)).save(out)
    print(
        f"wrote {out} ({backend} backend; rows: geometry only / with appearance; columns: input, {TARGETS})"
    )
    print("Photos: Face Research Lab London Set, DeBruine & Jones (2017), CC-BY 4.0.")


if __name__ == "__main__":
    main()
