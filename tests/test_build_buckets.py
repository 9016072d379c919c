"""The model build's SPLOCS groups (``build._frame_buckets``): classes of similar size padded to a power of
two of frames instead of the largest reservoir, with the same components per class (issue 16: the default
model's build time)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affectsynth.affect import build, splocs
from affectsynth.face.topology import face_topology
from test_splocs import planted

TOPO = face_topology()


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 300), min_size=1, max_size=60), chunk=st.integers(1, 20))
def test_every_class_lands_in_one_group_padded_to_room_for_all_its_frames(sizes, chunk):
    groups = build._frame_buckets(sizes, chunk)
    ids = [i for g, _ in groups for i in g]
    assert sorted(ids) == list(range(len(sizes)))
    shapes = set()
    for g, frames in groups:
        assert 1 <= len(g) <= chunk
        assert max(sizes[i] for i in g) <= frames <= max(sizes)
        assert frames == max(sizes) or frames & (frames - 1) == 0  # a power of two, or the largest
        shapes.add(frames)
    assert len(shapes) <= max(sizes).bit_length()  # a handful of compiled shapes, not one per group


def test_padding_to_the_largest_reservoir_made_most_frames_padding():
    """The default gallery's reservoir sizes are skewed (a few full classes, a median near 35): the buckets
    hold far fewer padded frames than padding all to the largest."""
    rng = np.random.default_rng(0)
    sizes = np.minimum(rng.lognormal(np.log(35), 0.6, 400).astype(int) + 1, 256).tolist()
    sizes[:5] = [256] * 5
    groups = build._frame_buckets(sizes, 16)
    padded = sum(16 * frames for _, frames in groups)
    assert padded < 0.5 * len(groups) * 16 * 256


def _reservoir(x: np.ndarray, capacity: int) -> build._Reservoir:
    r = build._Reservoir(capacity, x.shape[1:])
    for d in x:
        r.add(d, np.random.default_rng(0))
    return r


@pytest.mark.slow
def test_bucketed_components_equal_each_class_learnt_alone():
    """Classes of 6, 20 and 40 frames in groups of two (so padded to 16/32 and 64): each class's components
    and weight statistics match ``learn_splocs`` on its own frames."""
    rest, tris = TOPO.template, TOPO.triangles
    dist = np.asarray(splocs.geodesic_distances(rest, tris))
    data = {c: planted(dist, k=2, f=f, seed=c)[0] for c, f in ((3, 6), (7, 20), (11, 40))}
    reservoirs = {c: _reservoir(x, 64) for c, x in data.items()}
    kw = dict(num_iterations=3, admm_steps=3)
    comps, wmean, wstd = build._class_components(reservoirs, rest, 12, 2, 2, **kw)
    assert not comps[0].any() and not wmean[5].any()  # classes without frames stay 0
    for c, x in data.items():
        one = splocs.learn_splocs(x, rest, tris, num_components=2, distances=dist, **kw)
        w = np.asarray(one.weights)
        np.testing.assert_allclose(comps[c], one.components, rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(wmean[c], w.mean(0), rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(wstd[c], w.std(0), rtol=2e-3, atol=2e-4)
