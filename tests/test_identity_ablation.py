"""``scripts/measure_identity_ablation.py``'s warp regions: the three masks split every landmark's offset
between mouth, eyes and the rest, so the three masked warps together account for the whole warp."""

import runpy
from pathlib import Path

import numpy as np

from affectsynth.face import topology as topo

REPO = Path(__file__).resolve().parents[1]


def _region_weights():
    return runpy.run_path(str(REPO / "scripts" / "measure_identity_ablation.py"))["region_weights"]()


def test_region_masks_partition_the_landmarks():
    w = _region_weights()
    assert set(w) == {"warp mouth", "warp eyes", "warp rest"}
    stack = np.stack(list(w.values()))
    assert stack.shape == (3, topo.NUM_LANDMARKS)
    np.testing.assert_array_equal(stack.sum(0), 1.0)
    assert set(np.unique(stack)) <= {0.0, 1.0}


def test_region_masks_hold_their_features():
    """Lips in the mouth region; lids, irises and brows in the eyes'; the face contour and the nose tip
    (FaceMesh 1) in the rest."""
    w = _region_weights()
    t = topo.face_topology()
    assert w["warp mouth"][t.region("lips")].all()
    for side in ("right", "left"):
        for part in ("eye_upper", "eye_lower", "iris", "brow"):
            assert w["warp eyes"][t.region(f"{side}_{part}")].all(), (side, part)
    assert w["warp rest"][t.region("face_oval")].all()
    assert w["warp rest"][1] == 1.0
