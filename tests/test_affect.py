import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affectsynth.affect.grid import (
    EMOTION_PRESETS,
    AffectGrid,
    class_centre,
    class_centres_np,
    class_index,
    class_index_np,
    nearest_populated,
    num_classes,
    validate_target,
)

GRID = AffectGrid()


def ref_index(grid, v, a):
    """Slow reference: walk the bins."""

    def b(x, n):
        w = (grid.high - grid.low) / n
        for i in range(n - 1, -1, -1):
            if x >= np.float32(grid.low + w * i) or i == 0:
                return i

    return b(v, grid.n_valence) + grid.n_valence * b(a, grid.n_arousal)


def test_defaults_and_count():
    assert (GRID.n_valence, GRID.n_arousal, GRID.low, GRID.high) == (10, 10, -1.0, 1.0)
    assert num_classes(GRID) == 100 == GRID.num_classes
    assert hash(GRID) == hash(AffectGrid())  # static / hashable
    with pytest.raises(ValueError):
        AffectGrid(n_valence=0)


@pytest.mark.parametrize(
    "target, expected",
    [
        ((-1.0, -1.0), 0),
        ((1.0, 1.0), 99),  # exactly 1 goes in the last class
        ((1.0, -1.0), 9),
        ((-1.0, 1.0), 90),
        ((0.0, 0.0), 55),
        ((0.2, 0.2), 66),  # on an edge: upper bin
        ((0.19999, -0.2), 45),
        ((-0.95, 0.05), 50),
        ((5.0, -7.0), 9),  # outside: clipped into the border class
    ],
)
def test_class_index_analytic(target, expected):
    assert int(class_index(GRID, jnp.asarray(target, jnp.float32))) == expected
    assert int(class_index_np(GRID, *target)) == expected


def test_jit_vmap_nan():
    f = jax.jit(class_index, static_argnums=0)
    ts = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (50, 2)), jnp.float32)
    eager = np.array([int(class_index(GRID, t)) for t in ts])
    np.testing.assert_array_equal(np.asarray(jax.vmap(lambda t: f(GRID, t))(ts)), eager)
    np.testing.assert_array_equal(class_index_np(GRID, ts[:, 0], ts[:, 1]), eager)
    # NaN does not crash under jit: it is treated as 0
    assert int(f(GRID, jnp.array([jnp.nan, 0.5]))) == int(f(GRID, jnp.array([0.0, 0.5])))


@settings(max_examples=200, deadline=None)
@given(st.floats(-1, 1, width=32), st.floats(-1, 1, width=32))
def test_np_matches_reference(v, a):
    assert int(class_index_np(GRID, v, a)) == ref_index(GRID, np.float32(v), np.float32(a))


@pytest.mark.parametrize("grid", [GRID, AffectGrid(3, 5, 0.0, 1.0), AffectGrid(1, 1)])
def test_centre_round_trip(grid):
    centres = class_centres_np(grid)
    for i in range(grid.num_classes):
        c = class_centre(grid, i)
        np.testing.assert_allclose(np.asarray(c), centres[i], atol=1e-7)
        assert int(class_index(grid, c)) == i
    wv, wa = grid.cell_size
    assert np.all(np.abs(np.diff(np.unique(centres[:, 0]))) - wv < 1e-6)


def test_centres_exact():
    np.testing.assert_array_equal(np.asarray(class_centre(GRID, 55)), np.float32([0.1, 0.1]))


def test_nearest_populated_rule():
    counts = np.zeros(100, int)
    counts[[0, 99]] = 5
    src = nearest_populated(GRID, counts)
    assert src[0] == 0 and src[99] == 99
    assert src[1] == 0 and src[98] == 99 and src[9] == 0  # 9 is as far from 0 as from 99: lowest id wins
    counts = np.ones(100, int)
    counts[[44, 45, 54]] = 0
    np.testing.assert_array_equal(nearest_populated(GRID, counts)[[44, 45, 54]], [34, 35, 53])
    np.testing.assert_array_equal(nearest_populated(GRID, np.zeros(100)), np.arange(100))
    with pytest.raises(ValueError):
        nearest_populated(GRID, np.ones(7))


def test_presets():
    need = "happy excited surprised afraid angry disgusted sad bored sleepy calm relaxed content neutral"
    assert set(need.split()) <= set(EMOTION_PRESETS)
    for v, a in EMOTION_PRESETS.values():
        assert -1 <= v <= 1 and -1 <= a <= 1
    assert EMOTION_PRESETS["neutral"] == (0.0, 0.0)
    quadrant = {"happy": (1, 1), "excited": (1, 1), "angry": (-1, 1), "afraid": (-1, 1), "sad": (-1, -1)}
    quadrant |= {"bored": (-1, -1), "calm": (1, -1), "relaxed": (1, -1), "sleepy": (1, -1)}
    for name, (sv, sa) in quadrant.items():
        v, a = EMOTION_PRESETS[name]
        assert np.sign(v) == sv and np.sign(a) == sa, name


@pytest.mark.parametrize("bad", [(float("nan"), 0), (0, 1.5), (-1.0001, 0), ("x", 0), (0, float("inf"))])
def test_validate_target_errors(bad):
    with pytest.raises(ValueError) as e:
        validate_target(*bad)
    assert "\n" not in str(e.value) and ("valence" in str(e.value) or "arousal" in str(e.value))


def test_validate_target_ok():
    assert validate_target(1, -1.0) == (1.0, -1.0)
