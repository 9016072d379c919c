"""Pressed lips in contact (affect.lip_contact): closes only while pressing dominates parting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affectsynth.affect.au_fields import AU_NAMES
from affectsynth.affect.lip_contact import press_lips
from affectsynth.face import topology as topo

T = topo.face_topology()
UP, LO = T.inner_lip_pairs()


def _au(**kw):
    return jnp.asarray([kw.get(n, 0.0) for n in AU_NAMES], jnp.float32)


def _face(gap_px, seed=0):
    """Template landmarks in pixels (y down) with the inner lips parted by ``gap_px`` and some noise."""
    rng = np.random.default_rng(seed)
    lm = T.template * np.array([1.0, -1.0, -1.0]) * 1.6 + 300.0
    lm = lm + rng.normal(0.0, 0.3, lm.shape)
    lm[LO[1:-1]] = lm[UP[1:-1]]
    lm[UP[1:-1], 1] -= 0.5 * gap_px
    lm[LO[1:-1], 1] += 0.5 * gap_px
    return jnp.asarray(lm, jnp.float32)


def _gap(lm):
    lm = np.asarray(lm)
    return np.linalg.norm(lm[UP, :2] - lm[LO, :2], axis=1).max()


@pytest.mark.parametrize(
    "au",
    [
        {},
        {"AU6": 1.0, "AU12": 1.0, "AU25": 1.0},  # a smile
        {"AU9": 0.7, "AU10": 0.5, "AU24": 0.3},  # disgust: the raised upper lip wins
        {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0, "AU26": 1.0},
    ],
)
def test_nothing_moves_unless_the_lips_are_pressed(au):
    lm = _face(6.0)
    np.testing.assert_array_equal(np.asarray(press_lips(lm, _au(**au))), 0.0)


def test_pressed_lips_touch_and_nothing_else_moves():
    lm = _face(6.0)
    off = np.asarray(press_lips(lm, _au(AU4=1.0, AU23=0.8, AU24=0.7, AU9=0.2, AU10=0.1)))
    out = np.asarray(lm) + off
    assert _gap(out) < 1e-3
    others = np.setdiff1d(np.arange(topo.NUM_LANDMARKS), np.concatenate([UP, LO]))
    np.testing.assert_array_equal(off[others], 0.0)
    np.testing.assert_array_equal(off[:, 2], 0.0)  # image plane only
    # each pair meets at its midpoint: the mouth does not shift
    mid = 0.5 * (np.asarray(lm)[UP] + np.asarray(lm)[LO])
    np.testing.assert_allclose(out[UP, :2], mid[:, :2], atol=1e-4)


def test_contact_grows_smoothly_with_the_press():
    lm = _face(5.0, seed=1)
    base = _au(AU10=0.3)
    gaps = [_gap(lm + press_lips(lm, base + p * _au(AU24=1.0))) for p in np.linspace(0.0, 1.2, 25)]
    assert np.all(np.diff(gaps) <= 1e-5)  # never opens as the press grows
    assert gaps[0] == pytest.approx(_gap(lm)) and gaps[-1] < 1e-3
    steps = np.abs(np.diff(gaps))
    assert steps.max() < 0.2 * _gap(lm)  # no jump (smoothstep over a 0.5 margin)


def test_jit_vmap_and_finite_gradients():
    lms = jnp.stack([_face(g, seed=i) for i, g in enumerate((0.0, 3.0, 8.0))])
    aus = jnp.stack([_au(AU24=x, AU10=0.2) for x in (0.5, 0.8, 1.0)])
    eager = jnp.stack([press_lips(lm, a) for lm, a in zip(lms, aus, strict=True)])
    np.testing.assert_allclose(
        np.asarray(jax.jit(jax.vmap(press_lips))(lms, aus)), np.asarray(eager), atol=1e-5
    )
    grad = jax.grad(lambda a: jnp.sum(press_lips(lms[1], a) ** 2))(aus[0])
    assert np.all(np.isfinite(np.asarray(grad)))
