#!/usr/bin/env python3
"""Legibility against identity as the expression's strength varies (issue 15, item 5).

Issue 15 asks for both: the critic reads the targets (macro >= 0.6, happy >= 0.8, neutral >= 0.9, every
other classed target >= 0.4, valence CCC >= 0.6) and the person stays the same (dlib distance output vs
input: median <= 0.25, none >= 0.6). ``SynthesisOptions.strength`` scales the whole edit (the
deformation and the appearance cues), so running ``scripts/eval_legibility.py`` at several strengths
traces what one goal costs in the other: a table of which goals hold at each strength, ``<out>/sweep.json``
and a chart ``<out>/strength_sweep.png`` (hit rates against strength, and against the median identity
distance, with the goals and the same people's real smiles marked). Where a strength's folder also holds
``second_classifier.json`` (``scripts/eval_second_classifier.py --out <out>/strength_<s>``), the second
classifier's hit rates join the table and its macro the chart.

Each strength's run lives in ``<out>/strength_<s>/`` (the images, ``legibility.json``, the contact sheet);
``--reuse`` loads a run already there instead of synthesising it again (a run is reused only when its
``legibility.json`` says it was made at that strength on the same faces).

usage:
    python scripts/sweep_strength.py --out out/sweep                                # 0.6, 0.8, 1.0, 1.25
    python scripts/sweep_strength.py --strengths 0.5 1.0 --faces 8 --out /tmp/sw
    python scripts/sweep_strength.py --reuse --out out/sweep                       # re-plot, re-tabulate
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

DEFAULT_STRENGTHS = (0.6, 0.8, 1.0, 1.25)

# issue 15, item 5: (what, threshold, at least?) over the summary's keys
GOALS = {
    "macro": (0.6, True),
    "happy": (0.8, True),
    "neutral": (0.9, True),
    "others_min": (0.4, True),
    "valence_ccc": (0.6, True),
    "identity_median": (0.25, False),
    "identity_over": (0, False),
}
CLASSED = ("neutral", "happy", "excited", "surprised", "afraid", "angry", "disgusted", "sad")


def run_dir(out: Path, strength: float) -> Path:
    return Path(out) / f"strength_{strength:g}"


def summarise(res: dict, second: dict | None = None) -> dict:
    """One strength's ``eval_legibility`` result -> the figures the goals are stated in; with ``second`` (that
    run's ``second_classifier.json``, from ``scripts/eval_second_classifier.py``) also the second
    classifier's hit rates and macro."""
    targets = res["scores"]["targets"]
    hits = {t: targets[t]["hit"] for t in CLASSED}
    ident = res.get("identity", {})
    have = bool(ident.get("available"))
    return {
        "strength": float(res["config"]["strength"]),
        "faces": int(res["config"]["faces"]),
        "hits": hits,
        "macro": float(res["scores"]["macro_hit"]),
        "happy": hits["happy"],
        "neutral": hits["neutral"],
        "others_min": min(hits[t] for t in CLASSED if t not in ("happy", "neutral")),
        "valence_ccc": float(res["scores"]["valence_ccc"]),
        "identity_median": float(ident["median"]) if have else None,
        "identity_max": float(ident["max"]) if have else None,
        "identity_over": int(ident["n_over"]) if have else None,
        "identity_per_target": dict(ident.get("median_per_target", {})) if have else {},
        "real_smiles_happy": res["scores"].get("real_smiles_happy"),
        "real_smiles_identity": ident.get("real_smiles_median") if have else None,
        "second": None
        if second is None
        else {
            "hits": {t: second["scores"]["targets"][t]["hit"] for t in CLASSED},
            "macro": float(second["scores"]["macro_hit"]),
        },
    }


def goals_met(row: dict) -> dict[str, bool | None]:
    """Each goal of ``GOALS`` at one strength: True / False, or None where the figure is missing."""
    met = {}
    for key, (threshold, at_least) in GOALS.items():
        x = row.get(key)
        met[key] = None if x is None else (x >= threshold if at_least else x <= threshold)
    return met


def load_run(out: Path, strength: float, faces: int | None) -> dict | None:
    """The result already in ``run_dir(out, strength)``, if it was made at that strength on those faces."""
    path = run_dir(out, strength) / "legibility.json"
    if not path.is_file():
        return None
    res = json.loads(path.read_text())
    cfg = res.get("config", {})
    if abs(float(cfg.get("strength", -1.0)) - strength) > 1e-9:
        return None
    if faces is not None and int(cfg.get("faces", -1)) != faces:
        return None
    return res


def run(out: Path, strength: float, *, faces: int | None, data: Path, progress: bool) -> dict:
    """``eval_legibility.evaluate`` at ``strength`` into its own folder, its JSON written by
    ``eval_legibility.save_result`` (a second classifier's reading of the images it replaces is removed)."""
    folder = run_dir(out, strength)
    (folder / "second_classifier.json").unlink(missing_ok=True)
    res = ev.evaluate(folder, data=data, faces=faces, strength=strength, progress=progress)
    ev.save_result(res, folder)
    return res


def _f(x, spec=".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    """Hit rates, CCC and identity per strength, and which goals hold (+ met, - not, ? unknown)."""
    lines = [
        f"{'strength':>8}" + "".join(f"{t[:9]:>10}" for t in CLASSED) + f"{'macro':>8}{'CCC':>7}"
        f"{'id med':>8}{'id max':>8}{'>=0.6':>6}  goals (macro happy neutral others CCC id-median id-max)"
    ]
    for r in rows:
        met = goals_met(r)
        marks = " ".join({True: "+", False: "-", None: "?"}[met[k]] for k in GOALS)
        lines.append(
            f"{r['strength']:>8g}"
            + "".join(f"{_f(r['hits'][t]):>10}" for t in CLASSED)
            + f"{r['macro']:>8.3f}{r['valence_ccc']:>7.3f}{_f(r['identity_median']):>8}"
            f"{_f(r['identity_max']):>8}{_f(r['identity_over'], 'd'):>6}  {marks}"
        )
    if any(r.get("second") for r in rows):
        lines.append("second classifier (scripts/eval_second_classifier.py), where the run has its reading:")
        for r in rows:
            if r.get("second"):
                hits = r["second"]["hits"]
                cells = "".join(f"{_f(hits[t]):>10}" for t in CLASSED)
                lines.append(f"{r['strength']:>8g}{cells}{r['second']['macro']:>8.3f}")
    both = [r["strength"] for r in rows if all(goals_met(r).values())]
    lines.append(
        "every goal holds at strength " + ", ".join(f"{s:g}" for s in both)
        if both
        else "no strength in the sweep meets every goal"
    )
    return "\n".join(lines)


def chart(rows: list[dict], path: Path) -> Path:
    """Two panels: hit rates against strength; macro, happy and sad against the median identity distance,
    with the goals dashed and the real smiles (critic's happy, their identity cost) as a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = np.array([r["strength"] for r in rows])
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 5))
    for t in CLASSED:
        a.plot(s, [r["hits"][t] for r in rows], marker="o", lw=1, label=t)
    a.plot(s, [r["macro"] for r in rows], "k-", lw=2.5, marker="s", label="macro")
    for y, what in ((0.6, "macro"), (0.8, "happy"), (0.4, "others")):
        a.axhline(y, color="grey", ls="--", lw=0.7)
        a.text(s.min(), y + 0.01, f"goal: {what}", fontsize=7, color="grey")
    a.set_xlabel("SynthesisOptions.strength")
    a.set_ylabel("critic hit rate")
    a.set_ylim(0, 1.02)
    a.legend(fontsize=7, ncol=2)
    a.set_title("hit rate per target against strength")

    ident = [r["identity_median"] for r in rows]
    if all(x is not None for x in ident):
        for key, style in (("macro", "k-s"), ("happy", "C1-o"), ("sad", "C7-o")):
            ys = [r[key] if key in r else r["hits"][key] for r in rows]
            b.plot(ident, ys, style, lw=1.5, label=key)
            for x, y, st in zip(ident, ys, s, strict=True):
                b.annotate(f"{st:g}", (x, y), textcoords="offset points", xytext=(4, -9), fontsize=7)
        seconds = [(x, r["second"]["macro"]) for x, r in zip(ident, rows, strict=True) if r.get("second")]
        if seconds:
            b.plot(*zip(*seconds, strict=True), "k--s", lw=1, mfc="none", label="macro, second classifier")
        real = rows[-1]
        if real.get("real_smiles_identity") is not None and real.get("real_smiles_happy") is not None:
            b.plot(
                [real["real_smiles_identity"]],
                [real["real_smiles_happy"]],
                "C1*",
                ms=14,
                label="real smiles: happy, identity",
            )
        b.axvline(0.25, color="grey", ls="--", lw=0.7)
        b.text(0.251, 0.02, "goal: identity median <= 0.25", fontsize=7, color="grey")
        for y in (0.6, 0.8, 0.4):
            b.axhline(y, color="grey", ls="--", lw=0.7)
        b.set_xlabel("median dlib distance, output vs input (lower keeps the person)")
        b.set_ylabel("hit rate (the critic's, unless marked)")
        b.set_ylim(0, 1.02)
        b.legend(fontsize=7)
        b.set_title("what legibility costs in identity (labels: strength)")
    else:
        b.text(0.5, 0.5, "identity n/a (dlib not installed)", ha="center", transform=b.transAxes)
    n = rows[0]["faces"]
    fig.suptitle(f"issue 15 goals against SynthesisOptions.strength, {n} London faces, FER critic")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strengths", type=float, nargs="+", default=list(DEFAULT_STRENGTHS))
    ap.add_argument("--out", type=Path, default=REPO / "out" / "strength_sweep")
    ap.add_argument("--data", type=Path, default=ev.DEFAULT_DATA)
    ap.add_argument("--faces", type=int, default=None, help="the first N neutral photos only")
    ap.add_argument("--reuse", action="store_true", help="load a strength's run already in --out")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    bad = [x for x in a.strengths if not 0.0 <= x <= 2.0]
    if bad:
        ap.error(f"--strengths must lie in [0, 2] (SynthesisOptions.strength), got {bad}")
    if not (a.data / "neutral").is_dir():
        print(f"skipped: no face photos at {a.data / 'neutral'} (pass --data DIR)")
        return 0
    try:
        ev.load_critic(ev.DEFAULT_CRITIC)
    except (ImportError, FileNotFoundError) as e:
        print(f"skipped: the FER critic is not usable ({type(e).__name__}: {e})")
        return 0
    available = len(ev.find_photos(a.data))
    faces = min(a.faces, available) if a.faces else available
    rows = []
    for k, strength in enumerate(sorted(set(a.strengths))):
        res = load_run(a.out, strength, faces) if a.reuse else None
        print(f"[{k + 1}/{len(set(a.strengths))}] strength {strength:g}: {'reused' if res else 'running'}")
        if res is None:
            res = run(a.out, strength, faces=a.faces, data=a.data, progress=not a.no_progress)
        second = run_dir(a.out, strength) / "second_classifier.json"
        rows.append(summarise(res, json.loads(second.read_text()) if second.is_file() else None))
    print(table(rows))
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "sweep.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"rows": rows, "goals": {k: list(v) for k, v in GOALS.items()}}, indent=1))
    tmp.replace(path)
    print(f"wrote {path} and {chart(rows, a.out / 'strength_sweep.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
