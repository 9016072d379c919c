import csv

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affectsynth.evaluate import ccc, format_table, mse, pcc, subject_split, va_regression_arrays


def ref_stats(x, y):
    """Slow loop references (population moments)."""
    n = len(x)
    mx = sum(x) / n
    my = sum(y) / n
    sxx = sum((a - mx) ** 2 for a in x) / n
    syy = sum((b - my) ** 2 for b in y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / n
    return (
        2 * sxy / (sxx + syy + (mx - my) ** 2),
        sxy / np.sqrt(sxx * syy),
        sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) / n,
    )


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1)), min_size=3, max_size=30))
def test_metrics_vs_reference(pairs):
    x = [p[0] for p in pairs]
    y = [p[1] for p in pairs]
    if np.std(x) < 1e-3 or np.std(y) < 1e-3:
        return
    c, p, m = ref_stats(x, y)
    assert ccc(x, y) == pytest.approx(c, rel=1e-9, abs=1e-12)
    assert pcc(x, y) == pytest.approx(p, rel=1e-9, abs=1e-12)
    assert mse(x, y) == pytest.approx(m, rel=1e-9, abs=1e-15)


def test_metrics_analytic():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert ccc(x, x) == pytest.approx(1.0) and pcc(x, x) == pytest.approx(1.0) and mse(x, x) == 0
    assert pcc(x, 2 * x + 3) == pytest.approx(1.0)
    # shift by 1: var 1.25 each, covariance 1.25, mean gap 1 -> 2.5 / 3.5
    assert ccc(x, x + 1) == pytest.approx(2.5 / 3.5)
    assert mse(x, x + 1) == pytest.approx(1.0)
    z = x - x.mean()
    assert ccc(z, -z) == pytest.approx(-1.0) and pcc(z, -z) == pytest.approx(-1.0)
    assert pcc(x, np.ones(4)) == 0.0
    with pytest.raises(ValueError):
        ccc([1.0], [1.0, 2.0])


def test_subject_split():
    subjects = [f"s{i % 10}" for i in range(200)]
    test = subject_split(subjects, 0.2, seed=3)
    tr = {s for s, t in zip(subjects, test, strict=True) if not t}
    te = {s for s, t in zip(subjects, test, strict=True) if t}
    assert not tr & te and len(te) == 2 and len(tr) == 8
    assert np.array_equal(test, subject_split(subjects, 0.2, seed=3))
    with pytest.raises(ValueError):
        subject_split(["a", "a"], 0.2, 0)


def test_va_regression_recovers_linear_affect(tmp_path):
    pytest.importorskip("sklearn")
    from affectsynth.evaluate import write_table_csv

    rng = np.random.default_rng(0)
    n, v = 400, 60
    y = rng.uniform(-1, 1, (n, 2))
    basis = rng.normal(size=(2, v, 3))
    subjects = [f"s{i % 8}" for i in range(n)]
    offsets = {s: rng.normal(0, 0.05, (v, 3)) for s in set(subjects)}
    d = np.einsum("nk,kvc->nvc", y, basis) + np.stack([offsets[s] for s in subjects])
    d += rng.normal(0, 0.05, d.shape)
    rows = va_regression_arrays(d, y, subjects, ks=(5, 1000), test_fraction=0.25, seed=1)
    assert rows[0].k_used == 5 and rows[0].ccc_valence > 0.9 and rows[0].ccc_arousal > 0.9
    assert rows[0].mse_valence < 0.05 and rows[0].n_test == 100
    assert rows[1].k_used < 1000 and "clipped" in rows[1].note
    text = format_table(rows)
    assert "CCC V" in text and "clipped" in text
    out = write_table_csv(tmp_path / "t.csv", rows)
    with out.open() as f:
        table = list(csv.DictReader(f))
    assert [int(r["k"]) for r in table] == [5, 1000] and float(table[0]["ccc_valence"]) > 0.9


def test_cli_va_regression(tmp_path):
    pytest.importorskip("sklearn")
    from typer.testing import CliRunner

    from affectsynth.affect.gallery import GalleryFrame, write_gallery
    from affectsynth.cli.models import evaluate_app
    from affectsynth.face.topology import face_topology

    rng = np.random.default_rng(0)
    tpl = face_topology().template
    basis = rng.normal(0, 2, (2, *tpl.shape))

    def frames():
        for s in range(5):
            neutral = tpl + rng.normal(0, 0.5, tpl.shape)
            yield GalleryFrame(f"s{s}", f"s{s}q", 0, neutral.astype(np.float32), 0.0, 0.0, True, "t")
            for f in range(1, 25):
                va = rng.uniform(-1, 1, 2)
                verts = neutral + np.einsum("k,kvc->vc", va, basis) + rng.normal(0, 0.05, tpl.shape)
                yield GalleryFrame(
                    f"s{s}", f"s{s}q", f, verts.astype(np.float32), *map(float, va), False, "t"
                )

    gallery = tmp_path / "g"
    write_gallery(gallery, frames())
    out = tmp_path / "table.csv"
    r = CliRunner().invoke(
        evaluate_app, ["va-regression", str(gallery), "--k", "4,500", "--output", str(out)]
    )
    assert r.exit_code == 0, r.output
    assert "CCC V" in r.output and "clipped" in r.output and out.is_file()
    with out.open() as f:
        table = list(csv.DictReader(f))
    assert float(table[0]["ccc_valence"]) > 0.8 and float(table[0]["ccc_arousal"]) > 0.8
    r = CliRunner().invoke(evaluate_app, ["va-regression", str(gallery), "--k", "a,b"])
    assert r.exit_code == 2 and "--k" in r.output
