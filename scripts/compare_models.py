#!/usr/bin/env python3
"""Two affect models side by side (issue 17 item 5): hit-rate table and a contact sheet from two
``scripts/eval_legibility.py`` output folders of the same faces.

    python scripts/eval_legibility.py --out /tmp/leg-default
    python scripts/eval_legibility.py --out /tmp/leg-ict --model ict.npz
    python scripts/compare_models.py /tmp/leg-default /tmp/leg-ict --names default ict --out /tmp/compare.png

The sheet has, per face (4 by default, spread over the run), one row per model: the input and the ten targets,
face crops, each tile labelled with the critic's top class (* = a hit). The table is printed on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_legibility import TARGETS, _crop_box  # noqa: E402


def read_run(folder: Path) -> dict:
    """The ``legibility.json`` of one evaluation folder (with its folder recorded)."""
    path = folder / "legibility.json"
    if not path.is_file():
        raise SystemExit(f"{path}: not found (run scripts/eval_legibility.py --out {folder} first)")
    run = json.loads(path.read_text())
    run["folder"] = folder
    return run


def table(runs: list[dict], names: list[str]) -> str:
    """Per-target hit rates, macro, CCC and identity median, one column per model."""
    lines = [f"{'target':12s}" + "".join(f"{n:>12s}" for n in names)]
    for t in TARGETS:
        cells = [r["scores"]["targets"][t]["hit"] for r in runs]
        lines.append(f"{t:12s}" + "".join(f"{'-' if c is None else f'{c:.3f}':>12s}" for c in cells))
    for key, label in (("macro_hit", "macro"), ("valence_ccc", "valence CCC")):
        lines.append(f"{label:12s}" + "".join(f"{r['scores'][key]:12.3f}" for r in runs))
    ident = [r.get("identity", {}).get("median") for r in runs]
    lines.append(f"{'identity med':12s}" + "".join(f"{'-' if i is None else f'{i:.3f}':>12s}" for i in ident))
    return "\n".join(lines)


def sheet(runs: list[dict], names: list[str], path: Path, *, faces: int = 4, tile: int = 128) -> Path:
    """Rows: each face once per model; columns: input + every target; labelled with the critic's reading."""
    from PIL import Image, ImageDraw

    import affectsynth as af

    ids = [i for i in runs[0]["synthesised"] if all(i in r["synthesised"] for r in runs[1:])]
    pick = [ids[i] for i in np.unique(np.linspace(0, len(ids) - 1, min(faces, len(ids))).round().astype(int))]
    data = Path(runs[0]["config"]["data"])
    cols = ["input", *TARGETS]
    head, cap, side = 34, 16, 90
    rows = [(pid, k) for pid in pick for k in range(len(runs))]
    img = Image.new("RGB", (side + len(cols) * tile, head + len(rows) * (tile + cap)), "white")
    draw = ImageDraw.Draw(img)
    title = f"models side by side: {' vs '.join(names)} (critic's top class, * = hit)"
    draw.text((4, 2), title, fill="black")
    for j, c in enumerate(cols):
        draw.text((side + j * tile + 4, 18), c, fill="black")
    for i, (pid, k) in enumerate(rows):
        run, y = runs[k], head + i * (tile + cap)
        draw.text((4, y + tile // 2), f"{pid} {names[k]}", fill="black")
        src_path = data / "neutral" / f"{pid}.jpg"
        src = Image.open(src_path).convert("RGB")
        lm = np.asarray(af.detect_landmarks(af.load_image(src_path), source=str(src_path)))
        box = _crop_box(lm, src.height, src.width)
        for j, c in enumerate(cols):
            im = src if c == "input" else Image.open(run["folder"] / f"{pid}__{c}.png").convert("RGB")
            img.paste(im.crop(box).resize((tile, tile), Image.Resampling.LANCZOS), (side + j * tile, y))
            r = None if c == "input" else run["scores"]["per_image"].get(f"{pid}__{c}")
            if r is not None:
                mark = "*" if r.get("top") in (run["scores"]["targets"][c]["regions"] or ()) else ""
                label = r.get("error") or f"{r['top']} {r['top_prob']:.2f}{mark}"
                draw.text((side + j * tile + 3, y + tile + 2), label, fill="black")
    af.save_image(path, np.asarray(img))
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folders", type=Path, nargs="+", help="eval_legibility.py output folders")
    ap.add_argument("--names", nargs="+", default=None, help="one label per folder")
    ap.add_argument("--faces", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("compare_models.png"))
    args = ap.parse_args(argv)
    names = args.names or [f.name for f in args.folders]
    if len(names) != len(args.folders):
        raise SystemExit("--names: give one label per folder")
    runs = [read_run(f) for f in args.folders]
    print(table(runs, names))
    print(f"wrote {sheet(runs, names, args.out, faces=args.faces)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
