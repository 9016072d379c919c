"""scripts/measure_neutral_of_smiles.py: its measures and its table (the London run itself is a script)."""

import numpy as np

from script_module import load_script


def _script():
    return load_script("measure_neutral_of_smiles")


def test_lip_heights_are_in_inter_pupil_distances():
    from affectsynth.face import topology as topo

    ns = _script()
    lm = topo.face_topology().template.astype(np.float64) * np.array([1.0, -1.0, -1.0])
    heights = ns.lip_heights(lm)
    np.testing.assert_allclose(ns.lip_heights(3.0 * lm + 7.0), heights, rtol=1e-9)  # scale-free
    assert np.all(heights > 0.0) and heights[2] > heights[0] + heights[1]  # the chin is below the lips
    lm2 = lm.copy()
    lm2[[14, 17], 1] += 0.1 * np.linalg.norm(lm[468, :2] - lm[473, :2])  # the lower lip moves down as one
    np.testing.assert_allclose(ns.lip_heights(lm2)[:2], heights[:2], atol=1e-9)


def test_the_table_splits_open_and_closed_smiles():
    ns = _script()
    t = ns.ev.OPEN_SMILE

    def row(opening, out_h, critic):
        return {
            "opening": opening,
            "smile": [0.08, 0.95],
            "output": [out_h, 0.85],
            "neutral": [-0.03, 0.78],
            "removed": (0.08 - out_h) / 0.11,
            "residual": [out_h + 0.03, 0.07],
            "lips_smile": [0.08, 0.14, 0.54],
            "lips_output": [0.12, 0.16, 0.56],
            "lips_neutral": [0.1, 0.15, 0.58],
            "identity_smile": 0.25,
            "identity_output": 0.3,
            "critic": critic,
        }

    rows = {
        "001": row(t + 0.1, 0.0, "neutral"),
        "002": row(t, 0.02, "happy"),
        "003": row(0.0, 0.05, "neutral"),
    }
    table = ns.summary(rows).splitlines()
    open_line = next(line for line in table if line.startswith("open"))
    closed_line = next(line for line in table if line.startswith("closed"))
    assert open_line.split()[1] == "2" and open_line.endswith("1/2")
    assert "0.010" in open_line.split()  # the median output height of the open pair
    assert closed_line.split()[1] == "1" and closed_line.endswith("1/1")
