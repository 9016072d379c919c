"""Legibility floor (issue 15, item 5): an independent classifier reads our outputs on a few real faces.

Runs ``scripts/eval_legibility.py`` (imported from scripts/) on 4 neutral London photos (the first whose input
the critic reads as neutral) with all ten targets.
Skips cleanly without ``../shared`` (photos, FER critic) or onnxruntime. The floor is low on purpose for now
(neutral reads as neutral, happy as happy, every target changes the face); it will be raised as the
expressions improve.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from script_module import load_script

FACES = 4


def _script():
    return load_script("eval_legibility")


@pytest.fixture(scope="module")
def legibility(london_dir, tmp_path_factory):
    critic = london_dir.parents[2] / "tools" / "fer-critic"  # <shared>/tools/fer-critic
    if not (critic / "critic.py").is_file() or not (critic / "fer_minixception.onnx").is_file():
        pytest.skip(f"FER critic not found at {critic}")
    pytest.importorskip("onnxruntime")
    ev = _script()
    try:
        crit = ev.load_critic(critic)
    except (ImportError, FileNotFoundError, SystemExit) as e:
        pytest.skip(f"FER critic not usable: {e}")
    # The first FACES photos whose unedited input the critic reads as neutral (it misreads a few real
    # neutral faces, e.g. 003 as afraid): chosen on the inputs only, never on our outputs.
    ids = [
        pid for pid, path in ev.find_photos(london_dir, 12) if crit.judge(str(path)).get("top") == "neutral"
    ]
    if len(ids) < FACES:
        pytest.skip(f"the critic reads only {len(ids)} of the first 12 inputs as neutral")
    out = tmp_path_factory.mktemp("legibility")
    res = ev.evaluate(
        out,
        data=london_dir,
        ids=ids[:FACES],
        critic_dir=critic,
        identity=False,
        sheet=False,
        progress=False,
    )
    return ev, out, res


@pytest.mark.slow
@pytest.mark.shared
def test_neutral_reads_neutral(legibility):
    _, _, res = legibility
    assert len(res["synthesised"]) == FACES, res["failed"]
    rows = res["scores"]["per_image"]
    tops = {k: r.get("top") for k, r in rows.items() if k.endswith("__neutral")}
    assert sum(t == "neutral" for t in tops.values()) >= 3, tops


@pytest.mark.slow
@pytest.mark.shared
def test_outputs_differ_from_input(legibility):
    ev, out, res = legibility
    assert {p.name for p in Path(out).glob("*__*.png")} == {
        f"{pid}__{t}.png" for pid in res["synthesised"] for t in ev.TARGETS
    }
    # Every non-neutral target moves a visible share of the face crop (a do-nothing edit gives ~0).
    per_face = res["edit_size"]["per_face"]
    small = {t: v for t, v in per_face.items() if t != "neutral" and min(v) < 0.01}
    assert not small, small


@pytest.mark.slow
@pytest.mark.shared
def test_negative_high_arousal_targets_read_negative_not_surprised(legibility):
    """afraid, angry and disgusted (12 images on the 4 faces) read as one of the negative high-arousal classes
    on at least 5 and as surprised on at most 1. Revision 20's tense face (a dropped jaw: a band of upper
    teeth over a dark cavity) read surprised on 2 of them and negative on 6; revision 22's clenched, bared
    teeth and tightened lids: surprised 0, negative 8."""
    _, _, res = legibility
    rows = res["scores"]["per_image"]
    targets = ("afraid", "angry", "disgusted")
    tops = {k: r.get("top") for k, r in rows.items() if k.split("__")[1] in targets}
    assert len(tops) == 3 * FACES
    assert sum(t in ("afraid", "angry", "disgusted") for t in tops.values()) >= 5, tops
    assert sum(t == "surprised" for t in tops.values()) <= 1, tops


@pytest.mark.slow
@pytest.mark.shared
def test_sad_reads_negative(legibility):
    """Sadness (the grief brow and its forehead folds, heavy lids, the arched mouth over a raised chin):
    the critic's proxy valence is negative on every face and at least half read as sad (on these 4 faces
    the sad target read sad on 3 at ec78d4d, probabilities 0.43-0.52; a floor that the old code meets too)."""
    _, _, res = legibility
    rows = {k: r for k, r in res["scores"]["per_image"].items() if k.endswith("__sad")}
    assert len(rows) == FACES
    assert all(r["proxy_valence"] < -0.1 for r in rows.values()), rows
    assert sum(r.get("top") == "sad" for r in rows.values()) >= FACES // 2, rows


@pytest.mark.slow
@pytest.mark.shared
def test_happy_reads_happy(legibility):
    """The smile is read as a smile on most of these faces (12 of the first 12 London faces at revision 21,
    11 of 12 before; the critic reads 19 of the 48 people's own real smiles as neutral)."""
    _, _, res = legibility
    rows = res["scores"]["per_image"]
    tops = {k: r.get("top") for k, r in rows.items() if k.endswith("__happy")}
    assert sum(t == "happy" for t in tops.values()) >= 3, tops


def test_hits_are_counted_per_group_of_people(tmp_path):
    """``by_group`` counts a target's hits per info.csv group with the target's own regions, leaves out
    unclassed targets and images the critic could not judge, and reads the real smiles as happy or not."""
    ev = _script()
    (tmp_path / "info.csv").write_text("face_id,age,gender,ethnicity\n001,20,f,a\n002,30,m,b\n003,40,f,a\n")
    targets = {
        "happy": {"regions": ["happy"], "hit": 0.5},
        "angry": {"regions": ["afraid", "angry"], "hit": 0.5},
        "calm": {"regions": None, "hit": None},
    }
    tops = {
        "001": ("happy", "afraid", "neutral"),
        "002": ("neutral", "angry", "happy"),
        "003": ("happy", None, "x"),
    }
    per_image = {}
    for pid, (happy, angry, calm) in tops.items():
        per_image[f"{pid}__happy"] = {"top": happy}
        per_image[f"{pid}__angry"] = {"top": angry} if angry else {"error": "no face"}
        per_image[f"{pid}__calm"] = {"top": calm}
    smiles = {"001": {"top": "happy"}, "002": {"top": "neutral"}}
    got = ev.by_group({"targets": targets, "per_image": per_image}, smiles, tmp_path)
    assert list(got) == ["a", "b"]  # the larger group first
    assert got["a"] == {"n": 2, "happy": [2, 2], "angry": [1, 1], "real_smile_happy": [1, 1]}
    assert got["b"] == {"n": 1, "happy": [0, 1], "angry": [1, 1], "real_smile_happy": [0, 1]}
    assert ev.by_group({"targets": targets, "per_image": per_image}, smiles, tmp_path / "none") == {}


def test_happy_is_counted_by_the_kind_of_the_persons_real_smile():
    """``happy_by_smile`` splits people at ``OPEN_SMILE`` by their real smile's opening and counts our happy
    and their real smile with the happy target's regions; unjudged images count in neither; the identity
    medians split the same way."""
    ev = _script()
    targets = {"happy": {"regions": ["happy"], "hit": 0.5}}
    per_image = {
        "001__happy": {"top": "happy"},
        "002__happy": {"top": "neutral"},
        "003__happy": {"error": "no face"},
        "004__happy": {"top": "happy"},
    }
    smiles = {"001": {"top": "neutral"}, "002": {"top": "happy"}, "003": {"top": "happy"}}
    t = ev.OPEN_SMILE
    openings = {"001": t + 0.1, "002": t, "003": t / 2, "004": 0.0}
    got = ev.happy_by_smile({"targets": targets, "per_image": per_image}, smiles, openings)
    assert got == {
        "open": {"n": 2, "ours": [1, 2], "real": [1, 2]},
        "closed": {"n": 2, "ours": [1, 1], "real": [1, 1]},
    }
    ident = {
        "per_image": {"001__happy": 0.3, "002__happy": 0.5, "004__happy": 0.1},
        "real_smiles": {"001": 0.2, "003": 0.4, "004": 0.1},
    }
    assert ev._identity_by_smile(ident, openings) == {
        "open": {"n": 2, "ours": 0.4, "real": 0.2},
        "closed": {"n": 2, "ours": 0.1, "real": 0.25},
    }


def test_a_scaled_set_holds_every_photo_resized_and_its_groups(tmp_path):
    """``scaled_set`` (``--scale``): each neutral and smiling photo resampled to the factor (a JPEG under
    the same id: ``real_smiles`` looks smiles up as ``<id>.jpg``), the group table copied, other files
    left out; a photo already there is kept rather than written again."""
    from PIL import Image

    ev = _script()
    data = tmp_path / "set"
    rng = np.random.default_rng(0)
    for sub, name, size in (
        ("neutral", "001.jpg", (90, 60)),
        ("neutral", "002.png", (31, 40)),
        ("smiling", "001.jpg", (90, 60)),
    ):
        (data / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size[::-1] + (3,), dtype=np.uint8)).save(data / sub / name)
    (data / "neutral" / "notes.txt").write_text("not a photo")
    (data / "info.csv").write_text("face_id,ethnicity\n001,a\n")
    dest = ev.scaled_set(data, tmp_path / "small", 1 / 3)
    sizes = {}
    for path in dest.rglob("*.jpg"):
        with Image.open(path) as image:
            sizes[path.relative_to(dest).as_posix()] = image.size
    assert sizes == {"neutral/001.jpg": (30, 20), "neutral/002.jpg": (10, 13), "smiling/001.jpg": (30, 20)}
    assert (dest / "info.csv").read_text() == (data / "info.csv").read_text()
    assert not list(dest.rglob("*.txt")) and not list(dest.rglob("*.tmp.jpg"))
    stamp = (dest / "neutral" / "001.jpg").stat().st_mtime_ns
    ev.scaled_set(data, dest, 1 / 3)
    assert (dest / "neutral" / "001.jpg").stat().st_mtime_ns == stamp


def test_compare_runs_jitters_the_critics_box_and_pairs_faces(tmp_path):
    """``compare_runs.py``: the critic's box shifted and scaled over the grid (its centre once unchanged);
    each image read as the mean over those crops; per target the paired difference from the first run with a
    bootstrap interval that excludes 0 for a shift on every face and not for symmetric noise."""
    import imageio.v3 as iio

    cr = load_script("compare_runs")
    boxes = cr.jittered_boxes((100, 50, 80, 60))
    assert boxes.shape == (len(cr.SHIFTS) ** 2 * len(cr.SCALES), 4)
    assert any(np.allclose(b, (100, 50, 80, 60)) for b in boxes)
    centres = boxes[:, :2] + 0.5 * boxes[:, 2:]
    np.testing.assert_allclose(np.unique(np.round(centres[:, 0], 6)), 140 + 80 * np.array(cr.SHIFTS))
    np.testing.assert_allclose(boxes[:, 2] / boxes[:, 3], 80 / 60)

    # a classifier that reads the crop's mean grey: "happy" on bright crops, "neutral" on dark ones
    classes = ["happy", "neutral"]

    def classify(rgb):
        p = float(rgb.mean()) / 255.0
        return np.array([p, 1.0 - p])

    img = np.zeros((100, 100, 3), np.uint8)
    img[:, 50:] = 255  # the right half white: a box on the edge reads by how much of it is white
    p = cr.mean_probs(img, (30, 30, 40, 40), classify)
    want = np.mean([classify(cr.crop(img, b)) for b in cr.jittered_boxes((30, 30, 40, 40))], axis=0)
    np.testing.assert_allclose(p, want)
    assert 0.3 < p[0] < 0.7  # straddles the edge, and the grid moves it across

    # two runs read from disk through their legibility.json boxes
    runs = []
    for name, level in (("a", 100), ("b", 140)):
        folder = tmp_path / name
        folder.mkdir()
        per_image = {}
        for pid in ("001", "002", "003"):
            iio.imwrite(folder / f"{pid}__happy.png", np.full((60, 60, 3), level, np.uint8))
            per_image[f"{pid}__happy"] = {"top": "happy", "box": [10, 10, 40, 40]}
        scores = {"per_image": per_image, "targets": {t: {"hit": 0.5} for t in cr.TARGETS}}
        (folder / "legibility.json").write_text(__import__("json").dumps({"scores": scores}))
        runs.append(cr.read_run(folder, type("Critic", (), {"classify": staticmethod(classify)})))
    rows = cr.compare(runs, classes, {"happy": {"happy"}})
    d, lo, hi = rows["happy"][1]["delta"]
    assert abs(d - 40 / 255) < 1e-6 and lo > 0  # brighter on every face: a change, not noise
    assert rows["happy"][0]["p_hit"] == pytest.approx(100 / 255)
    assert [r["hit"] for r in rows["happy"]] == [0.0, 1.0]  # 100/255 reads neutral, 140/255 happy
    assert rows["macro"][1]["delta"][0] == pytest.approx(d)  # one classed target: the macro is its delta

    noise = np.tile([0.05, -0.05], 20)
    mean, lo, hi = cr.paired_interval(noise)
    assert abs(mean) < 1e-12 and lo < 0 < hi
    mean, lo, hi = cr.paired_interval(noise + 0.03)
    assert lo > 0


def _sweep_result(strength: float, hits: dict, ident: float | None, over: int = 0) -> dict:
    """A minimal ``eval_legibility`` result at one strength, as ``scripts/sweep_strength.py`` reads it."""
    targets = {t: {"hit": h} for t, h in hits.items()}
    identity = {"available": False}
    if ident is not None:
        identity = {
            "available": True,
            "median": ident,
            "max": 0.4 + over,
            "n_over": over,
            "median_per_target": {"happy": ident},
            "real_smiles_median": 0.22,
        }
    return {
        "config": {"strength": strength, "faces": 2},
        "scores": {
            "targets": targets,
            "macro_hit": float(np.mean(list(hits.values()))),
            "valence_ccc": 0.7,
            "real_smiles_happy": 0.5,
        },
        "identity": identity,
    }


def test_strength_sweep_states_each_goal_and_reuses_only_matching_runs(tmp_path):
    """``sweep_strength``: the goals read from one strength's figures (the weakest classed target other
    than happy and neutral decides "others"; identity goals are unknown without dlib), the table says when
    no strength meets them all, and a stored run is reused only at its own strength and face count."""
    sw = load_script("sweep_strength")
    names = ("neutral", "happy", "excited", "surprised", "afraid", "angry", "disgusted", "sad")
    good = dict.fromkeys(names, 0.9)
    row = sw.summarise(_sweep_result(1.0, good, 0.2))
    assert all(sw.goals_met(row).values())
    weak_sad = sw.summarise(_sweep_result(1.0, {**good, "sad": 0.35}, 0.2))
    assert weak_sad["others_min"] == 0.35
    assert sw.goals_met(weak_sad)["others_min"] is False
    assert sw.goals_met(weak_sad)["macro"] is True
    far = sw.goals_met(sw.summarise(_sweep_result(1.0, good, 0.26, over=1)))
    assert far["identity_median"] is False and far["identity_over"] is False
    blind = sw.goals_met(sw.summarise(_sweep_result(1.0, good, None)))
    assert blind["identity_median"] is None and blind["happy"] is True
    assert "every goal holds at strength 1" in sw.table([row])
    assert "no strength in the sweep meets every goal" in sw.table([weak_sad])

    folder = sw.run_dir(tmp_path, 0.8)
    folder.mkdir(parents=True)
    (folder / "legibility.json").write_text(json.dumps(_sweep_result(0.8, good, 0.2)))
    assert sw.load_run(tmp_path, 0.8, 2)["config"]["strength"] == 0.8
    assert sw.load_run(tmp_path, 0.8, 3) is None  # other faces
    assert sw.load_run(tmp_path, 1.0, 2) is None  # nothing stored at 1.0
    (sw.run_dir(tmp_path, 1.0)).mkdir()
    (sw.run_dir(tmp_path, 1.0) / "legibility.json").write_text(json.dumps(_sweep_result(0.8, good, 0.2)))
    assert sw.load_run(tmp_path, 1.0, 2) is None  # a run made at another strength
    second = {"scores": {"targets": {t: {"hit": 0.5} for t in names}, "macro_hit": 0.5}}
    both = sw.summarise(_sweep_result(0.6, good, 0.15), second)
    assert both["second"]["macro"] == 0.5 and both["second"]["hits"]["sad"] == 0.5
    assert row["second"] is None
    assert "second classifier" in sw.table([row, both]) and "second classifier" not in sw.table([row])
    png = sw.chart([row, both], tmp_path / "sweep.png")
    assert png.stat().st_size > 0
