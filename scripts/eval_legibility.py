#!/usr/bin/env python3
"""Legibility of synthesised affect (issue 15, item 5): do others read our targets as the target?

For each neutral photo of the London set, all ten targets below are synthesised in one ``synthesize_batch``
call and written as ``<out>/<id>__<target>.png``. The folder is then scored by the independent FER critic
(``../shared/tools/fer-critic/critic.py``: evaluation only, never a loss): per-target hit rates with the
critic's own V-A region rule, the macro mean over the eight classed targets, and the concordance (CCC) of the
critic's proxy valence with the target valence. Identity is checked with dlib's 128-d face descriptor
(distance output vs input; < 0.6 is "same person"), and reported as n/a when dlib is not installed.
References read by the same critic: the input photos (read as neutral?) and the same people's real smiles
(``<data>/smiling/<id>.jpg``, read as happy?), split into open (toothy) and closed smiles, since our happy is
an open one; dlib also measures what those real smiles cost in identity. Where the set has an ``info.csv``,
the hits are also counted per group of people (its ``ethnicity`` column): the critic reads darker faces less
well (its README), and a target's misses should be read by group before the face is changed.

Outputs: a table on stdout, ``<out>/legibility.json`` with every number, and ``<out>/legibility_sheet.png``
(8 faces x input + ten targets, face crops, each tile labelled with the critic's reading).

Uses only the public API (``import affectsynth as af``) so it survives module moves.

usage:
    python scripts/eval_legibility.py --out out/legibility            # all 48 faces, default model
    python scripts/eval_legibility.py --faces 4 --strength 1.5 --out /tmp/leg
    python scripts/eval_legibility.py --score-only --out out/legibility   # re-score an existing folder
    python scripts/eval_legibility.py --ids 004,062,114 --out /tmp/leg        # chosen photos only
    python scripts/eval_legibility.py --scale 0.33 --out /tmp/leg_small        # the photos at a third
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces" / "london"
DEFAULT_CRITIC = REPO.parent / "shared" / "tools" / "fer-critic"

# name -> (valence, arousal), issue 15 item 5. Which critic classes count as a hit is the critic's business
# (critic.TARGETS); the two lists are checked against each other when the critic is loaded.
TARGETS: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happy": (0.8, 0.4),
    "excited": (0.6, 0.75),
    "surprised": (0.3, 0.8),
    "afraid": (-0.5, 0.65),
    "angry": (-0.55, 0.6),
    "disgusted": (-0.6, 0.35),
    "sad": (-0.6, -0.3),
    "bored": (-0.5, -0.6),
    "calm": (0.55, -0.4),
}
SAME_PERSON = 0.6  # dlib descriptor distance below which two faces are the same person (FACTS.md 7)
SHEET_FACES = 8


# ----------------------------------------------------------------------------------------------- inputs
def find_photos(data: Path, limit: int | None = None) -> list[tuple[str, Path]]:
    """(id, path) of the neutral photos ``data/neutral/NNN.jpg``, sorted; at most ``limit``."""
    folder = Path(data) / "neutral"
    photos = sorted((p.stem, p) for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return photos[:limit] if limit else photos


def _progress(total: int, desc: str, unit: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, smoothing=0.1)


# -------------------------------------------------------------------------------------------- synthesis
def synthesize_folder(
    photos: list[tuple[str, Path]],
    out: Path,
    *,
    model_path: str | None = None,
    strength: float = 1.0,
    progress: bool = True,
) -> dict:
    """Write ``out/<id>__<target>.png`` for every photo and target. Returns inputs, landmarks and failures."""
    import affectsynth as af

    out.mkdir(parents=True, exist_ok=True)
    model = af.load_model(model_path)
    options = af.SynthesisOptions(strength=strength)
    names = list(TARGETS)
    targets = np.array([TARGETS[n] for n in names], np.float32)
    done, failed = {}, {}
    bar = _progress(len(photos) * len(names), "synthesis", "img", progress)
    for pid, path in photos:
        try:
            image = np.asarray(af.load_image(path), np.float32)
            lm = np.asarray(af.detect_landmarks(image, source=str(path)), np.float32)
        except af.AffectsynthError as e:  # an unusable photo is reported, not fatal
            failed[pid] = str(e)
            bar.update(len(names))
            continue
        k = len(names)
        res = af.synthesize_batch(
            np.repeat(image[None], k, 0), np.repeat(lm[None], k, 0), targets, model, options=options
        )
        for name, img in zip(names, np.asarray(res.images), strict=True):
            af.save_image(out / f"{pid}__{name}.png", img)
        done[pid] = {"input": str(path), "landmarks": lm}
        bar.update(k)
        bar.set_postfix(faces=f"{len(done)}/{len(photos)}", failed=len(failed))
    bar.close()
    return {"done": done, "failed": failed}


# ---------------------------------------------------------------------------------------------- critic
def load_critic(critic_dir: Path):
    """Import ``critic_dir/critic.py`` as a module (raises ImportError/FileNotFoundError when unusable)."""
    path = Path(critic_dir) / "critic.py"
    if not path.is_file():
        raise FileNotFoundError(f"no critic at {path}")
    spec = importlib.util.spec_from_file_location("fer_critic", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # imports cv2 and onnxruntime: ImportError when missing
    if not Path(mod.MODEL).is_file():
        raise FileNotFoundError(f"critic model missing: {mod.MODEL}")
    theirs = {t: (v, a) for t, (v, a, _) in mod.TARGETS.items()}
    if theirs != TARGETS:
        print(f"warning: critic.TARGETS differ from this script's: {theirs}", file=sys.stderr)
    return mod


def _reading(judged: dict) -> dict:
    """The critic's reading of one image without the image itself (what the JSON keeps)."""
    return {k: v for k, v in judged.items() if k != "image"}


def score_folder(
    out: Path, ids: list[str], critic, *, input_paths: dict | None = None, progress: bool = True
) -> dict:
    """Per-image critic readings, the critic's own per-target hit rates, and proxy-valence CCC."""
    import affectsynth as af

    names = list(TARGETS)
    per_image, cache = {}, {}
    judge = critic.judge
    inputs = {}
    bar = _progress(len(ids) * (len(names) + 1), "critic", "img", progress)
    for pid in ids:
        if input_paths and pid in input_paths:  # what the critic reads on the photo itself (a reference)
            r = critic.judge(str(input_paths[pid]))
            inputs[pid] = _reading(r)
            bar.update(1)
        for t in names:
            path = str(out / f"{pid}__{t}.png")
            cache[path] = judge(path)
            per_image[f"{pid}__{t}"] = _reading(cache[path])
            bar.update(1)
    bar.close()

    # Hit rates: the critic's own numbers (its region rule, its code) over the whole folder; its judge is
    # served from the readings above so no image is classified twice (the Haar detector takes ~0.4 s).
    def cached(path, *args, **kw):
        return cache[path] if path in cache and not args and not kw else judge(path, *args, **kw)

    critic.judge = cached
    try:
        theirs = critic.hit_rates(str(out))
    finally:
        critic.judge = judge
    # The same rule applied to this run's images only; must agree unless the folder holds other files.
    rows = {}
    for t in names:
        want = critic.TARGETS[t][2]
        ok = [per_image[f"{pid}__{t}"] for pid in ids if "error" not in per_image[f"{pid}__{t}"]]
        tops: dict[str, int] = {}
        for r in ok:
            tops[r["top"]] = tops.get(r["top"], 0) + 1
        hit = None if want is None or not ok else float(np.mean([r["top"] in want for r in ok]))
        rows[t] = {
            "n": len(ids),
            "judged": len(ok),
            "hit": hit,
            "hit_critic": theirs[t]["hit"],
            "regions": sorted(want) if want else None,
            "proxy_valence": float(np.mean([r["proxy_valence"] for r in ok])) if ok else None,
            "proxy_arousal": float(np.mean([r["proxy_arousal"] for r in ok])) if ok else None,
            "top_classes": dict(sorted(tops.items(), key=lambda kv: -kv[1])),
        }
        if theirs[t]["n"] != len(ids) or (hit is not None and abs(theirs[t]["hit"] - hit) > 1e-3):
            print(
                f"warning: {t}: critic.hit_rates saw n={theirs[t]['n']} hit={theirs[t]['hit']}, this run "
                f"n={len(ids)} hit={hit}; does {out} hold files from another run?",
                file=sys.stderr,
            )
    classed = [r["hit"] for r in rows.values() if r["hit"] is not None]
    tv, pv = [], []
    for key, r in per_image.items():
        if "error" not in r:
            tv.append(TARGETS[key.split("__")[1]][0])
            pv.append(r["proxy_valence"])
    return {
        "targets": rows,
        "macro_hit": float(np.mean(classed)) if classed else None,
        "macro_hit_critic": theirs["macro_hit"],
        "valence_ccc": af.ccc(np.array(pv), np.array(tv)) if len(pv) > 1 else None,
        "unjudged": sorted(k for k, r in per_image.items() if "error" in r),
        "inputs_neutral": (
            float(np.mean([r.get("top") == "neutral" for r in inputs.values()])) if inputs else None
        ),
        "inputs": inputs,
        "per_image": per_image,
    }


def real_smiles(data: Path, ids: list[str], critic) -> dict:
    """The critic's reading of each person's real smiling photo (``data/smiling/<id>.jpg``, when the set
    has one): the reference the happy target is read against (the same people, really smiling)."""
    out = {}
    for pid in ids:
        path = Path(data) / "smiling" / f"{pid}.jpg"
        if path.is_file():
            r = critic.judge(str(path))
            out[pid] = _reading(r)
    return out


def by_group(scores: dict, smiles: dict, data: Path, column: str = "ethnicity") -> dict:
    """Hit rates per group of people (``data/info.csv``'s ``column``; the London set records self-reported
    ethnicity): {group: {"n": people, target: [hits, judged], "real_smile_happy": [hits, judged]}}.
    The critic is known to read faces of darker skin less well (its README), so a target's misses are
    worth reading by group before the face is changed. Empty when there is no info.csv."""
    import csv

    path = Path(data) / "info.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        group = {row["face_id"]: row.get(column, "") for row in csv.DictReader(f)}
    per_image = scores["per_image"]
    ids = sorted({key.split("__")[0] for key in per_image})
    out: dict[str, dict] = {}
    for pid in ids:
        g = out.setdefault(group.get(pid, "unknown"), {"n": 0})
        g["n"] += 1
        for t, row in scores["targets"].items():
            r = per_image[f"{pid}__{t}"]
            if row["regions"] is None or "error" in r:
                continue
            hits = g.setdefault(t, [0, 0])
            hits[0] += r["top"] in row["regions"]
            hits[1] += 1
        r = smiles.get(pid)
        if r is not None and "error" not in r:
            hits = g.setdefault("real_smile_happy", [0, 0])
            hits[0] += r["top"] == "happy"
            hits[1] += 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]["n"]))


OPEN_SMILE = 0.04
"""Inner-lip gap (inter-pupil distances) from which a real smile counts as open: it shows teeth. The 48
London smiles leave a clear gap around it: 24 closed (0.025 at most) and 24 open (0.051 and up, median
0.14)."""


def lip_opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap in inter-pupil distances (FaceMesh: inner-lip midpoints 13/14, iris centres 468/473)."""
    lm = np.asarray(landmarks, np.float64)
    return float(np.linalg.norm(lm[13, :2] - lm[14, :2]) / np.linalg.norm(lm[468, :2] - lm[473, :2]))


def smile_openings(data: Path, ids: list[str]) -> dict[str, float]:
    """``lip_opening`` of each person's real smiling photo; people without a smiling photo or a detected
    face are left out."""
    import affectsynth as af

    out = {}
    for pid in ids:
        path = Path(data) / "smiling" / f"{pid}.jpg"
        if not path.is_file():
            continue
        try:
            out[pid] = lip_opening(af.detect_landmarks(af.load_image(path), source=str(path)))
        except af.AffectsynthError:
            continue
    return out


def happy_by_smile(scores: dict, smiles: dict, openings: dict, threshold: float = OPEN_SMILE) -> dict:
    """Happy hits on the people whose real smile is open (shows teeth) and on those whose is closed, next
    to the critic's reading of those real smiles: {"open" | "closed": {"n", "ours": [hits, judged],
    "real": [hits, judged]}}. Our happy is an open, toothy smile; the fair reference for it is the open
    real smiles (the critic reads faint closed smiles as neutral, its README)."""
    out: dict[str, dict] = {}
    regions = scores["targets"]["happy"]["regions"]
    for pid, gap in openings.items():
        g = out.setdefault("open" if gap >= threshold else "closed", {"n": 0, "ours": [0, 0], "real": [0, 0]})
        g["n"] += 1
        for key, r in (("ours", scores["per_image"].get(f"{pid}__happy")), ("real", smiles.get(pid))):
            if r is not None and "error" not in r:
                g[key][0] += r["top"] in regions
                g[key][1] += 1
    return out


# -------------------------------------------------------------------------------------------- identity
class _Dlib:
    """dlib's face descriptor, with the .dat files of face_recognition_models loaded by path."""

    def __init__(self):
        import dlib

        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("face_recognition_models is not installed")
        models = Path(next(iter(spec.submodule_search_locations))) / "models"
        self.detect = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def descriptor(self, rgb_u8: np.ndarray, rect=None):
        """128-d descriptor of the largest face, and its box (or ``rect`` when no face is found)."""
        found = self.detect(rgb_u8, 0)  # no upsampling: the faces are large
        if len(found):
            rect = max(found, key=lambda r: r.width() * r.height())
        if rect is None:
            return None, None
        return np.asarray(self.net.compute_face_descriptor(rgb_u8, self.shape(rgb_u8, rect))), rect


def identity_distances(out: Path, done: dict, *, data: Path | None = None, progress: bool = True) -> dict:
    """dlib distance between each output and its input photo; {"available": False, ...} without dlib.
    With ``data``, also each person's real smile (``data/smiling/<id>.jpg``) against the same input: what a
    real expression costs (``real_smiles``)."""
    try:
        d = _Dlib()
    except (ImportError, RuntimeError, OSError) as e:
        return {"available": False, "reason": f"{type(e).__name__}: {e}"}
    from PIL import Image

    names = list(TARGETS)
    dist, missing, real = {}, [], {}
    bar = _progress(len(done) * (len(names) + 1), "identity", "img", progress)
    for pid, info in done.items():
        ref, rect = d.descriptor(np.asarray(Image.open(info["input"]).convert("RGB")))
        bar.update(1)
        smile = Path(data) / "smiling" / f"{pid}.jpg" if data is not None else None
        if ref is not None and smile is not None and smile.is_file():
            desc, _ = d.descriptor(np.asarray(Image.open(smile).convert("RGB")))
            if desc is not None:  # another photo: no fallback box
                real[pid] = float(np.linalg.norm(desc - ref))
        for t in names:
            key = f"{pid}__{t}"
            if ref is None:
                missing.append(key)
            else:  # the input's box is the fallback when the output's face is not detected
                desc, _ = d.descriptor(np.asarray(Image.open(out / f"{key}.png").convert("RGB")), rect)
                dist[key] = float(np.linalg.norm(desc - ref))
            bar.update(1)
    bar.close()
    v = np.array(list(dist.values()))
    per_target = {
        t: float(np.median([x for k, x in dist.items() if k.endswith(f"__{t}")]))
        for t in names
        if any(k.endswith(f"__{t}") for k in dist)
    }
    return {
        "available": True,
        "median": float(np.median(v)) if v.size else None,
        "max": float(v.max()) if v.size else None,
        "argmax": max(dist, key=dist.get) if dist else None,
        "n_over": int((v >= SAME_PERSON).sum()),
        "threshold": SAME_PERSON,
        "n": int(v.size),
        "median_per_target": per_target,
        "missing": missing,
        "per_image": dist,
        "real_smiles": real,
        "real_smiles_median": float(np.median(list(real.values()))) if real else None,
    }


# ------------------------------------------------------------------------------------------- edit size
def edit_sizes(out: Path, done: dict, *, threshold: float = 0.05) -> dict:
    """Per target: median over faces of the fraction of face-crop pixels whose value moved > ``threshold``."""
    from PIL import Image

    frac: dict[str, list[float]] = {t: [] for t in TARGETS}
    for pid, info in done.items():
        src = Image.open(info["input"]).convert("RGB")
        box = _crop_box(info["landmarks"], src.height, src.width)
        a = np.asarray(src.crop(box), np.float32) / 255.0
        for t in TARGETS:
            b = np.asarray(Image.open(out / f"{pid}__{t}.png").convert("RGB").crop(box), np.float32) / 255.0
            frac[t].append(float((np.abs(b - a).max(-1) > threshold).mean()))
    return {
        "threshold": threshold,
        "median": {t: float(np.median(v)) for t, v in frac.items() if v},
        "per_face": frac,
    }


# ------------------------------------------------------------------------------------------------ sheet
def _crop_box(lm: np.ndarray, h: int, w: int, margin: float = 0.35) -> tuple[int, int, int, int]:
    """Square (left, top, right, bottom) around the landmarks, enlarged by ``margin``, inside the image."""
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
    c = 0.5 * (lo + hi)
    half = min(0.5 * float((hi - lo).max()) * (1 + margin), h / 2, w / 2)
    left = int(np.clip(c[0] - half, 0, w - 2 * half))
    top = int(np.clip(c[1] - half, 0, h - 2 * half))
    side = int(2 * half)
    return left, top, left + side, top + side


def contact_sheet(out: Path, done: dict, scores: dict | None, path: Path, *, tile: int = 150) -> Path:
    """Rows: up to 8 faces spread over the run; columns: input + each target; crops labelled."""
    from PIL import Image, ImageDraw

    import affectsynth as af

    ids = list(done)
    pick = np.unique(np.linspace(0, len(ids) - 1, min(SHEET_FACES, len(ids))).round().astype(int))
    rows = [ids[i] for i in pick]
    cols = ["input", *TARGETS]
    head, cap, side = 34, 16, 44
    sheet = Image.new("RGB", (side + len(cols) * tile, head + len(rows) * (tile + cap)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), "affectsynth legibility: critic's top class under each tile (* = hit)", fill="black")
    for j, c in enumerate(cols):
        va = "" if c == "input" else " {:+.2f},{:+.2f}".format(*TARGETS[c])
        draw.text((side + j * tile + 4, 18), c + va, fill="black")
    per_image = scores["per_image"] if scores else {}
    for i, pid in enumerate(rows):
        y = head + i * (tile + cap)
        draw.text((4, y + tile // 2), pid, fill="black")
        src = Image.open(done[pid]["input"]).convert("RGB")
        box = _crop_box(done[pid]["landmarks"], src.height, src.width)
        for j, c in enumerate(cols):
            im = src if c == "input" else Image.open(out / f"{pid}__{c}.png").convert("RGB")
            sheet.paste(im.crop(box).resize((tile, tile), Image.Resampling.LANCZOS), (side + j * tile, y))
            r = (scores["inputs"] if c == "input" else per_image).get(pid if c == "input" else f"{pid}__{c}")
            if r is not None:
                want = None if c == "input" else scores["targets"][c]["regions"]
                mark = "*" if want and r.get("top") in want else ""
                label = r.get("error") or f"{r['top']} {r['top_prob']:.2f}{mark}"
                draw.text((side + j * tile + 3, y + tile + 2), label, fill="black")
    af.save_image(path, np.asarray(sheet))
    return path


# ------------------------------------------------------------------------------------------ evaluation
def evaluate(
    out: Path,
    *,
    data: Path = DEFAULT_DATA,
    faces: int | None = None,
    ids: list[str] | None = None,
    model_path: str | None = None,
    strength: float = 1.0,
    critic_dir: Path = DEFAULT_CRITIC,
    identity: bool = True,
    sheet: bool = True,
    synthesize: bool = True,
    progress: bool = True,
) -> dict:
    """Synthesise (unless ``synthesize`` is False), score, check identity and draw the sheet; return all."""
    import affectsynth as af

    out = Path(out)
    photos = find_photos(data)
    if ids is not None:  # these photo ids only (e.g. the test's choice), in this order
        by_id = dict(photos)
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise SystemExit(f"{Path(data) / 'neutral'}: no photo with id {', '.join(unknown)}")
        photos = [(i, by_id[i]) for i in ids]
    photos = photos[:faces] if faces else photos
    critic = load_critic(critic_dir)  # fail before the long part
    t0 = time.perf_counter()
    if synthesize:
        syn = synthesize_folder(photos, out, model_path=model_path, strength=strength, progress=progress)
    else:
        syn = {"done": {}, "failed": {}}
        for pid, path in photos:
            if all((out / f"{pid}__{t}.png").is_file() for t in TARGETS):
                lm = np.asarray(af.detect_landmarks(af.load_image(path), source=str(path)), np.float32)
                syn["done"][pid] = {"input": str(path), "landmarks": lm}
    t1 = time.perf_counter()
    ids = list(syn["done"])
    inputs = {pid: syn["done"][pid]["input"] for pid in ids}
    scores = score_folder(out, ids, critic, input_paths=inputs, progress=progress)
    smiles = real_smiles(data, ids, critic)
    scores["real_smiles"] = smiles
    scores["real_smiles_happy"] = (
        float(np.mean([r.get("top") == "happy" for r in smiles.values()])) if smiles else None
    )
    scores["by_group"] = by_group(scores, smiles, data)
    openings = smile_openings(data, ids)
    scores["smile_openings"] = openings
    scores["happy_by_smile"] = happy_by_smile(scores, smiles, openings)
    t2 = time.perf_counter()
    ident = {"available": False}
    if identity:
        ident = identity_distances(out, syn["done"], data=data, progress=progress)
    if ident.get("available") and openings:  # identity of ours vs real smiles, by the real smile's kind
        ident["happy_by_smile"] = _identity_by_smile(ident, openings)
    t3 = time.perf_counter()
    edits = edit_sizes(out, syn["done"])
    sheet_path = contact_sheet(out, syn["done"], scores, out / "legibility_sheet.png") if sheet else None
    t4 = time.perf_counter()
    return {
        "config": {
            "data": str(data),
            "faces": len(photos),
            "model": model_path or "default",
            "strength": strength,
            "critic": str(critic_dir),
            "affectsynth": getattr(af, "__version__", None),
        },
        "synthesised": ids,
        "failed": syn["failed"],
        "scores": scores,
        "identity": ident,
        "edit_size": edits,
        "sheet": str(sheet_path) if sheet_path else None,
        "seconds": {
            "synthesis": t1 - t0,
            "critic": t2 - t1,
            "identity": t3 - t2,
            "edit size + sheet": t4 - t3,
            "total": t4 - t0,
        },
        "_synthesis": syn,  # in-memory only (landmarks); dropped before writing JSON
    }


def _identity_by_smile(ident: dict, openings: dict, threshold: float = OPEN_SMILE) -> dict:
    """Median identity distance of our happy outputs and of the real smiles, on the people whose real smile
    is open and on those whose is closed: {"open" | "closed": {"n", "ours", "real"}}."""
    out = {}
    for kind, ids in (
        ("open", [p for p, g in openings.items() if g >= threshold]),
        ("closed", [p for p, g in openings.items() if g < threshold]),
    ):
        ours = [ident["per_image"][f"{p}__happy"] for p in ids if f"{p}__happy" in ident["per_image"]]
        real = [ident["real_smiles"][p] for p in ids if p in ident["real_smiles"]]
        if ids:
            out[kind] = {
                "n": len(ids),
                "ours": float(np.median(ours)) if ours else None,
                "real": float(np.median(real)) if real else None,
            }
    return out


def _fmt(x, spec=".3f"):
    return "n/a" if x is None else format(x, spec)


def report(res: dict) -> str:
    s = res["scores"]
    lines = [f"{'target':<10} {'V':>6} {'A':>6} {'hit':>6} {'n':>4}  {'proxyV':>6}  top classes"]
    for t, r in s["targets"].items():
        v, a = TARGETS[t]
        tops = ", ".join(f"{k} {n}" for k, n in r["top_classes"].items())
        lines.append(
            f"{t:<10} {v:+6.2f} {a:+6.2f} {_fmt(r['hit']):>6} {r['judged']:>4}  "
            f"{_fmt(r['proxy_valence'], '+.3f'):>6}  {tops}"
        )
    ident = res["identity"]
    edits = res["edit_size"]["median"]
    lines += [
        f"edit size (median share of face-crop pixels moved > {res['edit_size']['threshold']}): "
        + ", ".join(f"{t} {x:.3f}" for t, x in edits.items()),
        f"macro hit (8 classed targets): {_fmt(s['macro_hit'])}"
        f"   (critic.hit_rates: {_fmt(s['macro_hit_critic'])})",
        f"happy {_fmt(s['targets']['happy']['hit'])}   neutral {_fmt(s['targets']['neutral']['hit'])}",
        f"proxy-valence CCC vs target valence: {_fmt(s['valence_ccc'])}",
        f"input photos read as neutral: {_fmt(s['inputs_neutral'])}; "
        f"the same people's real smiles read as happy: {_fmt(s.get('real_smiles_happy'))}",
    ]
    for kind, row in (s.get("happy_by_smile") or {}).items():
        (oh, oj), (rh, rj) = row["ours"], row["real"]
        lines.append(
            f"happy on the {row['n']} people whose real smile is {kind}: ours {oh}/{oj}, "
            f"their real smiles {rh}/{rj}"
        )
    groups = s.get("by_group") or {}
    if groups:
        classed = [t for t, r in s["targets"].items() if r["hit"] is not None]
        lines.append(
            "hits by group of people (info.csv ethnicity); the real smiles read as happy at the end:"
        )
        lines.append(f"  {'':<12} {'':<5}" + " ".join(f"{t[:7]:>7}" for t in classed) + "  real smile")
        for g, row in groups.items():
            cells = [f"{row[t][0]:>3}/{row[t][1]:<3}" if t in row else f"{'-':>7}" for t in classed]
            ref = row.get("real_smile_happy")
            lines.append(
                f"  {g:<12} n={row['n']:<3}" + " ".join(cells) + (f"  {ref[0]:>3}/{ref[1]}" if ref else "")
            )
    if ident.get("available"):
        lines.append(
            f"identity (dlib distance, output vs input): median {_fmt(ident['median'])}, "
            f"max {_fmt(ident['max'])} ({ident['argmax']}), "
            f">= {SAME_PERSON}: {ident['n_over']} of {ident['n']}"
        )
        if ident.get("real_smiles_median") is not None:
            lines.append(
                f"identity of the same people's real smiles (smiling vs neutral photo): median "
                f"{_fmt(ident['real_smiles_median'])}; ours at happy: "
                f"{_fmt(ident['median_per_target'].get('happy'))}"
            )
        for kind, row in (ident.get("happy_by_smile") or {}).items():
            lines.append(
                f"  on the {row['n']} people whose real smile is {kind}: real {_fmt(row['real'])}, "
                f"ours {_fmt(row['ours'])}"
            )
    else:
        lines.append(f"identity: n/a ({ident.get('reason', 'skipped')})")
    if res["failed"]:
        lines.append(f"failed photos: {res['failed']}")
    if s["unjudged"]:
        lines.append(f"no face found by the critic on: {', '.join(s['unjudged'])}")
    sec = res["seconds"]
    lines.append(
        "wall time: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in sec.items())
        + f"; {len(res['synthesised'])} faces x {len(TARGETS)} targets"
    )
    return "\n".join(lines)


def scaled_set(data: Path, dest: Path, scale: float) -> Path:
    """A copy of the face set at ``scale`` of its size (``dest``: ``neutral/`` and ``smiling/`` photos
    resampled with a Lanczos filter, JPEG quality 95, and its ``info.csv``): how legible the targets stay on
    smaller faces, whose mouth and wrinkle detail the renderer draws more simply (``mouth._detail``). Kept
    photos are reused."""
    import shutil

    from PIL import Image

    for sub in ("neutral", "smiling"):
        if not (data / sub).is_dir():
            continue
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for path in sorted((data / sub).iterdir()):
            if (
                path.suffix.lower() not in (".jpg", ".jpeg", ".png")
                or (dest / sub / f"{path.stem}.jpg").exists()
            ):
                continue
            with Image.open(path) as image:
                size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                small = image.convert("RGB").resize(size, Image.LANCZOS)
            tmp = dest / sub / f"{path.stem}.tmp.jpg"
            small.save(tmp, quality=95)
            tmp.replace(dest / sub / f"{path.stem}.jpg")
    if (data / "info.csv").is_file():
        shutil.copyfile(data / "info.csv", dest / "info.csv")
    return dest


def save_result(res: dict, out: Path) -> Path:
    """Write ``evaluate``'s result (less its in-memory ``_synthesis``, which it drops) as
    ``out/legibility.json``, whole, then renamed: never half a file. Returns the path."""
    res.pop("_synthesis", None)
    path = Path(out) / "legibility.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(res, indent=1, default=float))
    tmp.replace(path)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "out" / "legibility", help="output folder")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="London set (with neutral/NNN.jpg)")
    ap.add_argument("--faces", type=int, default=None, help="use the first N neutral photos only")
    ap.add_argument("--ids", default=None, help="comma-separated photo ids (e.g. 004,062), in this order")
    ap.add_argument("--model", default=None, help="affect model file for af.load_model (default: built-in)")
    ap.add_argument("--strength", type=float, default=1.0, help="SynthesisOptions.strength")
    ap.add_argument(
        "--scale", type=float, default=1.0, help="evaluate on the photos resized by this factor (e.g. 0.33)"
    )
    ap.add_argument("--critic", type=Path, default=DEFAULT_CRITIC, help="folder holding critic.py")
    ap.add_argument("--no-identity", action="store_true", help="skip the dlib identity check")
    ap.add_argument("--score-only", action="store_true", help="score images already in --out")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)

    if not (a.data / "neutral").is_dir():
        print(f"skipped: no face photos at {a.data / 'neutral'} (pass --data DIR)")
        return 0
    if not 0.0 < a.scale <= 1.0:
        ap.error(f"--scale must be in (0, 1], got {a.scale}")
    if a.scale != 1.0:
        a.data = scaled_set(a.data, a.out / f"photos_x{a.scale:g}", a.scale)
    try:
        load_critic(a.critic)
    except (ImportError, FileNotFoundError) as e:
        print(f"skipped: the FER critic is not usable ({type(e).__name__}: {e}); pass --critic DIR")
        return 0
    res = evaluate(
        a.out,
        data=a.data,
        faces=a.faces,
        ids=a.ids.split(",") if a.ids else None,
        model_path=a.model,
        strength=a.strength,
        critic_dir=a.critic,
        identity=not a.no_identity,
        synthesize=not a.score_only,
        progress=not a.no_progress,
    )
    path = save_result(res, a.out)
    print(report(res))
    print(f"wrote {path} and {res['sheet']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
