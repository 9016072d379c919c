#!/usr/bin/env python3
"""A second opinion on legibility (issue 15, item 5): a classifier trained on other data reads the outputs.

``scripts/eval_legibility.py`` scores its folder (``<id>__<target>.png``) with the FER critic of
``../shared/tools/fer-critic`` (mini-Xception, trained on FER2013). The issue's figures are also checked
with a classifier we do not have, so a reading that only that critic gives is worth knowing about. This
script reads the same folder, the same people's neutral photos and real smiles with face-api's
FaceExpressionNet (SSD MobileNet face box; 7 classes; MIT weights from the npm package
``@vladmandic/face-api``, trained on other public and web images), run by
``scripts/second_classifier/read_expressions.cjs`` under Node.js. Evaluation only, like the critic: never a
loss, never a target for pixels.

Hits follow issue 15's rule, the critic's: a top class among those sharing the target's region of the V-A
plane (fear and anger either for both; excited: happy or surprised; disgusted: disgusted or angry).

Outputs: a table on stdout (with the critic's hit rates beside them when the folder has
``legibility.json``), per group of people where the photo set has an ``info.csv``,
``<out>/second_classifier.json`` (every reading) and ``<out>/second_classifier.png`` (hit rates of both
classifiers per target, the issue's goals marked).

Setup once (Node.js 18+ and the npm registry): ``make second-classifier``.

usage:
    python scripts/eval_legibility.py --out out/legibility
    python scripts/eval_second_classifier.py --out out/legibility
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces" / "london"
READER = REPO / "scripts" / "second_classifier" / "read_expressions.cjs"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_legibility import TARGETS  # noqa: E402
from eval_legibility import by_group as by_group_of_people  # noqa: E402

CLASSES = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "angry": "angry",
    "fearful": "afraid",
    "disgusted": "disgusted",
    "surprised": "surprised",
}
"""face-api's class names -> the critic's."""

REGIONS: dict[str, frozenset[str] | None] = {
    "neutral": frozenset({"neutral"}),
    "happy": frozenset({"happy"}),
    "excited": frozenset({"happy", "surprised"}),
    "surprised": frozenset({"surprised"}),
    "afraid": frozenset({"afraid", "angry"}),
    "angry": frozenset({"angry", "afraid"}),
    "disgusted": frozenset({"disgusted", "angry"}),
    "sad": frozenset({"sad"}),
    "bored": None,
    "calm": None,
}
"""Classes that count as a hit per target (issue 15, item 5); None: no class, not scored."""

GOALS = {"neutral": 0.9, "happy": 0.8}
"""Issue 15's per-target goals; every other classed target: ``OTHER_GOAL``, the macro mean ``MACRO_GOAL``."""
OTHER_GOAL = 0.4
MACRO_GOAL = 0.6


def read_images(
    paths: list[Path], *, node: str = "node", progress: bool = True, jobs: int = 2
) -> dict[str, dict]:
    """Readings of ``paths`` by the Node reader: {path: {"top", "probs"} or {"error"}}, the list shared
    among ``jobs`` processes (each loads the models once, ~1 s; then ~0.3 s per image on one core).

    Raises:
        SystemExit: (one line) Node.js or the reader's packages are missing, or a reader failed.
    """
    if shutil.which(node) is None:
        raise SystemExit(f"{node}: Node.js not found (the second classifier runs under Node.js 18+)")
    if not (READER.parent / "node_modules" / "@vladmandic" / "face-api").is_dir():
        raise SystemExit(f"{READER.parent}: packages not installed; run `make second-classifier`")
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    bar = tqdm(
        total=len(paths), desc="second classifier", unit="img", disable=not progress, dynamic_ncols=True
    )
    lock = threading.Lock()

    def run(chunk: list[Path]) -> tuple[dict[str, dict], int, str]:
        got: dict[str, dict] = {}
        # stderr to a file, not a pipe: a reader that writes much there never blocks on it
        with tempfile.TemporaryFile("w+") as err:
            with subprocess.Popen(
                [node, str(READER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
            ) as proc:
                proc.stdin.write("".join(f"{p}\n" for p in chunk))  # the reader reads all before it writes
                proc.stdin.close()
                for line in proc.stdout:
                    if not line.startswith("{"):  # a library's notice on stdout is not a reading
                        continue
                    r = json.loads(line)
                    got[r.pop("image")] = parse_reading(r)
                    with lock:
                        bar.update(1)
            err.seek(0)
            lines = err.read().strip().splitlines()
        return got, proc.returncode, lines[-1] if lines else f"exit code {proc.returncode}"

    jobs = max(1, min(jobs, len(paths)))
    chunks = [paths[k::jobs] for k in range(jobs)]
    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(run, chunks))
    bar.close()
    out: dict[str, dict] = {}
    for (got, code, last), chunk in zip(results, chunks, strict=True):
        if code != 0 or len(got) != len(chunk):
            raise SystemExit(f"{READER}: read {len(got)} of {len(chunk)} images: {last}")
        out.update(got)
    return out


def parse_reading(r: dict) -> dict:
    """One reader line (without its image) as {"top", "probs"} in the critic's class names, or {"error"}."""
    if "probs" not in r:
        return {"error": r.get("error", "no reading")}
    probs = {CLASSES[k]: float(v) for k, v in r["probs"].items()}
    return {"top": max(probs, key=probs.get), "probs": probs, "box": r.get("box")}


def score(readings: dict[str, dict], ids: list[str]) -> dict:
    """Per-target hit rates of ``readings`` keyed ``<id>__<target>`` (the folder's images by name):
    {"targets": {t: {"hit", "judged", "top_classes"}}, "macro_hit", "unjudged": [keys]}. A target with no
    class or no judged image has hit None; the macro mean is over the classed targets that have one."""
    targets, unjudged = {}, []
    for t, region in REGIONS.items():
        tops = []
        for pid in ids:
            r = readings.get(f"{pid}__{t}")
            if r is None:
                continue
            if "error" in r:
                unjudged.append(f"{pid}__{t}")
            else:
                tops.append(r["top"])
        hit = None if region is None or not tops else sum(x in region for x in tops) / len(tops)
        targets[t] = {"hit": hit, "judged": len(tops), "top_classes": dict(Counter(tops).most_common())}
    classed = [row["hit"] for t, row in targets.items() if REGIONS[t] is not None and row["hit"] is not None]
    return {
        "targets": targets,
        "macro_hit": float(np.mean(classed)) if classed else None,
        "unjudged": unjudged,
    }


def by_group(readings: dict[str, dict], ids: list[str], data: Path) -> dict:
    """Hits per group of people (``data/info.csv``'s ethnicity): {group: {"n", target: [hits, judged]}}; {}
    without the file. Counted by ``eval_legibility.by_group``, as the critic's are."""
    targets = {t: {"regions": region} for t, region in REGIONS.items()}
    missing = {"error": "no image"}  # a target the folder lacks is not judged
    per_image = {f"{p}__{t}": readings.get(f"{p}__{t}", missing) for p in ids for t in REGIONS}
    return by_group_of_people({"targets": targets, "per_image": per_image}, {}, data)


def references(readings: dict[str, dict]) -> dict:
    """How the reader sees real faces: inputs read as neutral, real smiles as happy ([hits, judged])."""
    out = {}
    for key, want in (("inputs_neutral", "neutral"), ("real_smiles_happy", "happy")):
        tops = [r["top"] for k, r in readings.items() if k.startswith(key + "/") and "error" not in r]
        out[key] = [sum(t == want for t in tops), len(tops)]
    return out


def critic_hits(out: Path) -> dict[str, float] | None:
    """The FER critic's hit rate per target from ``out/legibility.json`` (eval_legibility), if there."""
    path = out / "legibility.json"
    if not path.is_file():
        return None
    targets = json.loads(path.read_text()).get("scores", {}).get("targets", {})
    return {t: row.get("hit") for t, row in targets.items()}


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def report(res: dict) -> str:
    """The table printed on stdout."""
    s, critic = res["scores"], res.get("critic")
    lines = [f"{'target':<11}{'second':>8}{'critic':>8}{'n':>5}  top classes (second classifier)"]
    for t, row in s["targets"].items():
        c = _fmt(critic.get(t)) if critic else "-"
        tops = ", ".join(f"{k} {n}" for k, n in row["top_classes"].items())
        lines.append(f"{t:<11}{_fmt(row['hit']):>8}{c:>8}{row['judged']:>5}  {tops}")
    macro = s["macro_hit"]
    lines.append(f"macro hit (8 classed targets): {'n/a' if macro is None else f'{macro:.3f}'}")
    ref = res["references"]
    for key, label in (
        ("inputs_neutral", "input photos read as neutral"),
        ("real_smiles_happy", "real smiles read as happy"),
    ):
        hits, n = ref[key]
        lines.append(f"{label}: {hits}/{n}")
    if s["unjudged"]:
        lines.append(f"no face found on: {', '.join(s['unjudged'])}")
    groups = res.get("groups") or {}
    if groups:
        classed = [t for t, r in REGIONS.items() if r is not None]
        lines.append("hits by group of people (info.csv ethnicity):")
        lines.append(f"{'':<18}" + "".join(f"{t[:7]:>8}" for t in classed))
        for g, row in groups.items():
            cells = "".join(f"{f'{row[t][0]}/{row[t][1]}' if t in row else '-':>8}" for t in classed)
            lines.append(f"  {g:<11} n={row['n']:<3}" + cells)
    return "\n".join(lines)


def chart(res: dict, path: Path) -> None:
    """Bars: hit rate per classed target, this classifier and (if known) the critic; goals marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classed = [t for t, r in REGIONS.items() if r is not None]
    series = {"second classifier (face-api)": [res["scores"]["targets"][t]["hit"] for t in classed]}
    if res.get("critic"):
        series["FER critic"] = [res["critic"].get(t) for t in classed]
    x = np.arange(len(classed) + 1)
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, (name, ys) in enumerate(series.items()):
        macro = [v for v in ys if v is not None]
        vals = [np.nan if v is None else v for v in ys] + [np.mean(macro) if macro else np.nan]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name)
    goals = [GOALS.get(t, OTHER_GOAL) for t in classed] + [MACRO_GOAL]
    ax.scatter(x, goals, marker="_", s=900, color="k", zorder=3, label="issue 15 goal")
    ax.set_xticks(x, [*classed, "macro"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("hit rate")
    ax.set_title("legibility read by two independent classifiers")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")  # written whole, then renamed
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def evaluate(out: Path, *, data: Path, node: str = "node", progress: bool = True, jobs: int = 2) -> dict:
    """Read ``out``'s ``<id>__<target>.png`` and the same people's neutral and smiling photos; score them."""
    images = {p.stem: p for p in sorted(out.glob("*__*.png")) if p.stem.split("__")[1] in TARGETS}
    ids = sorted({key.split("__")[0] for key in images})
    if not ids:
        raise SystemExit(f"{out}: no <id>__<target>.png images (write them with scripts/eval_legibility.py)")
    refs = {}
    for pid in ids:
        for key, folder in (("inputs_neutral", "neutral"), ("real_smiles_happy", "smiling")):
            photo = data / folder / f"{pid}.jpg"
            if photo.is_file():
                refs[f"{key}/{pid}"] = photo
    todo = {**images, **refs}
    raw = read_images([todo[k] for k in todo], node=node, progress=progress, jobs=jobs)
    readings = {k: raw[str(p)] for k, p in todo.items()}
    return {
        "scores": score(readings, ids),
        "references": references(readings),
        "groups": by_group(readings, ids, data),
        "critic": critic_hits(out),
        "readings": readings,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="a folder written by scripts/eval_legibility.py")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="photos: neutral/, smiling/, info.csv")
    ap.add_argument("--node", default="node", help="the Node.js executable")
    ap.add_argument("--jobs", type=int, default=2, help="reader processes (each uses one core)")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    if not a.out.is_dir():
        print(f"{a.out}: no such folder", file=sys.stderr)
        return 2
    try:
        res = evaluate(a.out, data=a.data, node=a.node, progress=not a.no_progress, jobs=a.jobs)
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    print(report(res))
    path = a.out / "second_classifier.json"
    tmp = path.with_suffix(".json.tmp")  # written whole, then renamed: never half a file
    tmp.write_text(json.dumps(res, indent=1))
    tmp.replace(path)
    chart(res, a.out / "second_classifier.png")
    print(f"wrote {path} and {a.out / 'second_classifier.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
