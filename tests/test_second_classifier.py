"""The second opinion on legibility (``scripts/eval_second_classifier.py``): its scoring follows issue 15's
hit rule, and it fails with one line when its Node.js reader is not installed. The reader itself runs only
where ``make second-classifier`` installed it (and ``../shared`` is there)."""

import json
import shutil
import sys

import pytest

from script_module import load_script

ev2 = load_script("eval_second_classifier")


def _reading(top: str, p: float = 0.9) -> dict:
    """A parsed reading whose top class is ``top`` (the critic's names)."""
    rest = (1.0 - p) / 6
    return {"top": top, "probs": {c: (p if c == top else rest) for c in ev2.CLASSES.values()}}


def test_parse_reading_maps_face_api_classes_and_keeps_errors():
    probs = {"neutral": 0.1, "happy": 0.05, "sad": 0.05, "angry": 0.1, "fearful": 0.6, "disgusted": 0.05}
    r = ev2.parse_reading({"probs": probs | {"surprised": 0.05}, "box": [1, 2, 3, 4]})
    assert r["top"] == "afraid" and set(r["probs"]) == set(ev2.CLASSES.values())
    assert r["box"] == [1, 2, 3, 4]
    assert ev2.parse_reading({"error": "no face"}) == {"error": "no face"}


def test_score_uses_the_shared_region_rule():
    readings = {
        "001__afraid": _reading("angry"),  # fear and anger share a region: a hit
        "002__afraid": _reading("disgusted"),  # not in fear's region
        "001__disgusted": _reading("angry"),  # disgust borders anger: a hit
        "002__disgusted": _reading("sad"),
        "001__excited": _reading("surprised"),
        "002__excited": _reading("happy"),
        "001__sad": {"error": "no face"},  # not judged, not a miss
        "002__sad": _reading("sad"),
        "001__calm": _reading("happy"),  # no class: never scored
    }
    s = ev2.score(readings, ["001", "002"])
    t = s["targets"]
    assert t["afraid"]["hit"] == 0.5 and t["disgusted"]["hit"] == 0.5 and t["excited"]["hit"] == 1.0
    assert t["sad"]["hit"] == 1.0 and t["sad"]["judged"] == 1 and s["unjudged"] == ["001__sad"]
    assert t["calm"]["hit"] is None and t["neutral"]["hit"] is None  # no class / no image
    assert s["macro_hit"] == pytest.approx((0.5 + 0.5 + 1.0 + 1.0) / 4)
    assert t["afraid"]["top_classes"] == {"angry": 1, "disgusted": 1}


def test_hit_regions_cover_the_legibility_targets():
    ev = load_script("eval_legibility")
    assert set(ev2.REGIONS) == set(ev.TARGETS)
    assert all(r is None or r <= set(ev2.CLASSES.values()) for r in ev2.REGIONS.values())


def test_hit_regions_are_the_critics_own():
    """``REGIONS`` restates the FER critic's hit rule (``critic.TARGETS``) so that the script runs without
    it; where the critic is there, the two must not drift apart (``eval_legibility`` takes the critic's)."""
    ev = load_script("eval_legibility")
    try:
        critic = ev.load_critic(ev.DEFAULT_CRITIC)
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"FER critic not usable: {e}")
    theirs = {t: (frozenset(want) if want else None) for t, (_, _, want) in critic.TARGETS.items()}
    assert ev2.REGIONS == theirs


def test_groups_and_references(tmp_path):
    info = tmp_path / "info.csv"
    info.write_text("face_id,age,gender,ethnicity\n001,30,female,a\n002,40,male,b\n003,22,male,a\n")
    readings = {
        "001__happy": _reading("happy"),
        "002__happy": _reading("neutral"),
        "003__happy": _reading("happy"),
        "inputs_neutral/001": _reading("neutral"),
        "inputs_neutral/002": _reading("sad"),
        "real_smiles_happy/001": _reading("happy"),
        "real_smiles_happy/002": {"error": "no face"},
    }
    g = ev2.by_group(readings, ["001", "002", "003"], tmp_path)
    assert list(g) == ["a", "b"]  # larger group first
    assert g["a"] == {"n": 2, "happy": [2, 2]} and g["b"] == {"n": 1, "happy": [0, 1]}
    assert ev2.by_group(readings, ["001"], tmp_path / "no_info") == {}
    assert ev2.references(readings) == {"inputs_neutral": [1, 2], "real_smiles_happy": [1, 1]}


def test_report_and_chart(tmp_path):
    ids = ["001", "002"]
    readings = {
        f"{p}__{t}": _reading("happy" if t == "happy" else "neutral") for p in ids for t in ev2.REGIONS
    }
    res = {
        "scores": ev2.score(readings, ids),
        "references": {"inputs_neutral": [2, 2], "real_smiles_happy": [1, 2]},
        "groups": {},
        "critic": {"happy": 0.5, "neutral": 1.0},
    }
    text = ev2.report(res)
    assert "happy         1.000   0.500" in text and "real smiles read as happy: 1/2" in text
    ev2.chart(res, tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp.png"))


def test_missing_node_or_packages_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit, match="Node.js not found"):
        ev2.read_images([tmp_path / "x.png"], node="no-such-node-executable")
    (tmp_path / "001__happy.png").write_bytes(b"")
    rc = ev2.main(["--out", str(tmp_path), "--node", "no-such-node-executable", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Node.js not found" in err
    assert ev2.main(["--out", str(tmp_path / "none")]) == 2


@pytest.mark.slow
def test_reader_reads_real_faces(london_dir, tmp_path):
    """Golden check of the installed reader on real photos: a neutral photo reads neutral, a real open smile
    happy, and an unreadable file gives an error line, not a crash."""
    if shutil.which("node") is None or not (ev2.READER.parent / "node_modules").is_dir():
        pytest.skip("second classifier not installed (make second-classifier)")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    paths = [london_dir / "neutral" / "001.jpg", london_dir / "smiling" / "001.jpg", bad]
    got = ev2.read_images(paths, progress=False, jobs=2)  # split across two readers
    assert got[str(paths[0])]["top"] == "neutral"
    assert got[str(paths[1])]["top"] == "happy"
    assert "error" in got[str(bad)]
    json.dumps(got)  # plain data


FAKE_READER = """
import json, sys
print("a library's notice on stdout")
for path in sys.stdin.read().split():
    if "crash" in path:
        print("reader died on " + path, file=sys.stderr)
        sys.exit(3)
    if "blank" in path:
        print(json.dumps({"image": path, "error": "no face"}))
        continue
    probs = {"neutral": 0.1, "happy": 0.8, "sad": 0.02, "angry": 0.02, "fearful": 0.02, "disgusted": 0.02,
             "surprised": 0.02}
    print(json.dumps({"image": path, "box": [0, 0, 9, 9], "probs": probs}))
"""


@pytest.fixture
def fake_reader(tmp_path, monkeypatch):
    """A stand-in for the Node reader (run by this Python), with the package folder it checks for."""
    folder = tmp_path / "reader"
    (folder / "node_modules" / "@vladmandic" / "face-api").mkdir(parents=True)
    script = folder / "read_expressions.py"
    script.write_text(FAKE_READER)
    monkeypatch.setattr(ev2, "READER", script)
    return sys.executable


@pytest.mark.parametrize("jobs", [1, 2, 5])
def test_readers_share_the_list_and_skip_notices(fake_reader, tmp_path, jobs):
    paths = [tmp_path / f"{i:03d}__happy.png" for i in range(7)] + [tmp_path / "blank.png"]
    got = ev2.read_images(paths, node=fake_reader, progress=False, jobs=jobs)
    assert set(got) == {str(p) for p in paths}
    assert all(got[str(p)]["top"] == "happy" for p in paths[:-1])
    assert got[str(paths[-1])] == {"error": "no face"}


def test_a_failing_reader_is_one_line(fake_reader, tmp_path):
    paths = [tmp_path / "001__happy.png", tmp_path / "crash.png"]
    with pytest.raises(SystemExit, match=r"read 0 of 1 images: reader died on .*crash\.png"):
        ev2.read_images(paths, node=fake_reader, progress=False, jobs=2)
