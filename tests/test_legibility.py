"""Legibility floor (issue 15, item 5): an independent classifier reads our outputs on a few real faces.

Runs ``scripts/eval_legibility.py`` (imported from scripts/) on 4 neutral London photos (the first whose input
the critic reads as neutral) with all ten targets.
Skips cleanly without ``../shared`` (photos, FER critic) or onnxruntime. The floor is low on purpose for now
(neutral reads as neutral, happy as happy, every target changes the face); it will be raised as the
expressions improve.
"""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FACES = 4


def _script():
    path = REPO / "scripts" / "eval_legibility.py"
    spec = importlib.util.spec_from_file_location("eval_legibility", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
def test_happy_reads_happy(legibility):
    """The smile is read as a smile on most of these faces (12 of the first 12 London faces at revision 21,
    11 of 12 before; the critic reads 19 of the 48 people's own real smiles as neutral)."""
    _, _, res = legibility
    rows = res["scores"]["per_image"]
    tops = {k: r.get("top") for k, r in rows.items() if k.endswith("__happy")}
    assert sum(t == "happy" for t in tops.values()) >= 3, tops
