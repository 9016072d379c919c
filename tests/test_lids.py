"""Lids close a share of the person's own eye opening (``affectsynth.lids``), not the template's millimetres.

Synthetic faces: the template's landmarks in pixels with each eye's upper lid moved so that its opening is
a chosen multiple of the template's; offsets are AU fields in pixels. Fast, no photos.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import affectsynth as af
from affectsynth import lids, pipeline
from affectsynth.affect.au_fields import action_unit_fields
from affectsynth.face import topology as topo

PX_PER_MM = 4.0
FLIP = np.array([PX_PER_MM, -PX_PER_MM, -PX_PER_MM], np.float32)
T = topo.face_topology().template.astype(np.float32)
IOD = float(np.linalg.norm(T[topo.LEFT_PUPIL, :2] - T[topo.RIGHT_PUPIL, :2]) * PX_PER_MM)
FIELDS = {k: v * FLIP for k, v in action_unit_fields().items()}
share_jit = jax.jit(lids.lid_share)


def _face(opening: float) -> np.ndarray:
    """Template landmarks (pixels, y down) with every lid gap scaled by ``opening`` about the lower lid."""
    lm = T * FLIP + np.array([256.0, 256.0, 0.0], np.float32)
    up, lo, _, _ = lids._lid_points()
    lm[up, 1] = lm[lo, 1] - opening * (lm[lo, 1] - lm[up, 1])
    return lm


def _offsets(**aus: float) -> np.ndarray:
    return sum(v * FIELDS[k] for k, v in aus.items()).astype(np.float32)


def _closed_share(lm, offsets) -> np.ndarray:
    """Share of each lid pair's gap that the offsets plus ``lid_share``'s correction close, f[2, P]."""
    lm, offsets = jnp.asarray(lm), jnp.asarray(offsets)
    moved = lm + offsets + share_jit(lm, offsets, jnp.asarray(IOD, jnp.float32))
    return np.asarray(1.0 - lids.eye_gaps(moved) / lids.eye_gaps(lm))


def test_rest_opening_is_left_as_the_model_says():
    """A face whose opening is ``REST_EYE_APERTURE`` gets the deformation's own millimetres (no change)."""
    rest = lids.REST_EYE_APERTURE * IOD / float(np.mean(lids.eye_gaps(jnp.asarray(_face(1.0)))))
    lm, off = _face(rest), _offsets(AU43=0.5, AU6=0.5)
    corr = np.asarray(share_jit(jnp.asarray(lm), jnp.asarray(off), jnp.asarray(IOD, jnp.float32)))
    assert np.abs(corr).max() < 1e-3 * IOD, np.abs(corr).max()


@settings(max_examples=25, deadline=None)
@given(
    opening=st.floats(0.6, 1.4),
    au43=st.floats(0.05, 0.6),
    au6=st.floats(0.0, 1.0),
    au7=st.floats(0.0, 0.8),
)
def test_every_opening_loses_the_same_share(opening, au43, au6, au7):
    """Narrow and wide eyes lose the share of their opening that a face at rest opening loses."""
    off = _offsets(AU43=au43, AU6=au6, AU7=au7)
    rest = lids.REST_EYE_APERTURE * IOD / float(np.mean(lids.eye_gaps(jnp.asarray(_face(1.0)))))
    want = _closed_share(_face(rest), off)
    got = _closed_share(_face(opening), off)
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_lids_never_cross_on_a_narrow_eye():
    """AU43 at 1 closes the template's eye 0.97 of the way: a narrow eye stops at ``MAX_CLOSED`` of its
    own gap instead of its upper lid going through the lower one (without the correction: 1.6x its gap)."""
    lm, off = _face(0.6), _offsets(AU43=1.0)
    raw = 1.0 - np.asarray(lids.eye_gaps(jnp.asarray(lm + off)) / lids.eye_gaps(jnp.asarray(lm)))
    assert raw.max() > 1.2  # the millimetres alone cross the lids
    got = _closed_share(lm, off)
    assert got.max() <= lids.MAX_CLOSED + 1e-4 and got.min() > 0.5, got


@pytest.mark.parametrize("aus", [{"AU5": 1.0}, {"AU5": 0.5, "AU1": 1.0, "AU2": 1.0}, {}])
def test_opening_and_still_lids_are_left_alone(aus):
    off = _offsets(**aus) if aus else np.zeros_like(T)
    corr = share_jit(jnp.asarray(_face(0.7)), jnp.asarray(off), jnp.asarray(IOD, jnp.float32))
    assert float(jnp.abs(corr).max()) < 1e-4


def test_the_skin_beside_the_lid_follows_it():
    """The skin ring above a closing upper lid moves with the lid's correction (``RING_SHARE``), so a
    narrow eye's lid crease is not squeezed against a lid that now drops less."""
    lm, off = _face(0.6), _offsets(AU43=0.5)
    corr = np.asarray(share_jit(jnp.asarray(lm), jnp.asarray(off), jnp.asarray(IOD, jnp.float32)))
    up, _, ring_up, _ = lids._lid_points()
    ring, near = ring_up[1, :, 0], ring_up[1, :, 1]
    np.testing.assert_allclose(corr[ring, :2], lids.RING_SHARE * corr[up[1][near], :2], atol=1e-4)
    assert corr[up[1], 1].min() < -0.5  # the narrow eye's lid drops less: corrected upwards (pixels)


def test_jit_matches_eager_and_vmap_matches_a_loop():
    lms = np.stack([_face(k) for k in (0.7, 1.0, 1.3)])
    offs = np.stack([_offsets(AU43=a, AU6=0.4) for a in (0.2, 0.5, 0.3)])
    iod = jnp.full((3,), IOD, jnp.float32)
    batched = np.asarray(jax.vmap(lids.lid_share)(jnp.asarray(lms), jnp.asarray(offs), iod))
    for i in range(3):
        args = (jnp.asarray(lms[i]), jnp.asarray(offs[i]), iod[i])
        eager = np.asarray(lids.lid_share(*args))
        np.testing.assert_allclose(np.asarray(share_jit(*args)), eager, atol=1e-4)
        np.testing.assert_allclose(batched[i], eager, atol=1e-4)


def _edit_share(model, face: np.ndarray, target) -> float:
    """Mean share of the eyes' opening that ``pipeline.edit_offsets`` closes on ``face`` for ``target``
    (V, A), without neutralisation."""
    lm = jnp.asarray(face)
    options = pipeline.SynthesisOptions(neutralize=False)
    target = jnp.asarray(target, jnp.float32)
    _, offsets, _ = pipeline.edit_offsets(lm, target, jax.random.PRNGKey(0), model, options)
    return float(jnp.mean(1.0 - lids.eye_gaps(lm + offsets) / lids.eye_gaps(lm)))


def test_the_pipeline_closes_narrow_and_wide_eyes_by_the_same_share():
    """Through ``edit_offsets`` (sad: AU43's heavy lids): two faces that differ only in their eye opening
    lose the same share of it: 0.46 both (the template's millimetres alone closed 0.68 of the narrow eye and
    0.41 of the other)."""
    model = af.load_model()
    shares = [_edit_share(model, _face(opening), (-0.6, -0.3)) for opening in (0.6, 1.0)]
    assert shares[0] > 0.2 and abs(shares[0] - shares[1]) < 0.03, shares


def test_low_arousal_leaves_the_eyes_open_under_heavy_lids():
    """Along the bottom of the V-A square (A = -0.8, where the radial gain grew AU43 up to 0.8 and the lids
    closed 0.62-0.77 of the eye's opening on 8 London faces: shut eyes at 512 px) and at the tired and sleepy
    anchors, the lids close between 0.35 and 0.6 of the opening: heavy lids over a visible iris."""
    model = af.load_model()
    targets = [(v, -0.8) for v in (-0.8, -0.4, 0.0, 0.4)] + [(0.04, -0.63), (0.28, -0.67)]
    for target in targets:
        share = _edit_share(model, _face(1.0), target)
        assert 0.35 < share < 0.6, (target, share)
