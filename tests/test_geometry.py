"""``face.geometry``, tested once: similarity fits (NumPy and JAX) and closest points on a mesh."""

import jax.numpy as jnp
import numpy as np
import pytest

from affectsynth.face import geometry as geo


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.array([1.0, 1.0, np.linalg.det(q)])  # det +1


def _planted(rng, n=50):
    x = rng.normal(size=(n, 3)) * np.array([30.0, 40.0, 20.0])
    rot, s, t = _random_rotation(rng), float(rng.uniform(0.1, 12.0)), rng.normal(size=3) * 50.0
    return x, rot, s, t, s * x @ rot.T + t


# --------------------------------------------------------------------------------------------- similarity


@pytest.mark.parametrize("seed", range(5))
def test_similarity_fit_recovers_planted_similarity_exactly(seed):
    x, rot, s, t, y = _planted(np.random.default_rng(seed))
    r2, s2, t2 = geo.similarity_fit(x, y)
    np.testing.assert_allclose(r2, rot, atol=1e-10)
    assert s2 == pytest.approx(s, rel=1e-10)
    np.testing.assert_allclose(t2, t, atol=1e-8)


def test_similarity_fit_without_scale_is_the_rigid_fit():
    x, rot, _, t, _ = _planted(np.random.default_rng(7))
    y = x @ rot.T + t
    r2, s2, t2 = geo.similarity_fit(x, y * 1.0, scale=False)
    assert s2 == 1.0
    np.testing.assert_allclose(r2, rot, atol=1e-10)
    np.testing.assert_allclose(t2, t, atol=1e-8)
    # on scaled data the rigid fit still returns s = 1 and a worse residual than the similarity
    r3, s3, t3 = geo.similarity_fit(x, 2.0 * y, scale=False)
    r4, s4, t4 = geo.similarity_fit(x, 2.0 * y)
    res = [np.linalg.norm(s_ * x @ r_.T + t_ - 2.0 * y) for r_, s_, t_ in ((r3, s3, t3), (r4, s4, t4))]
    assert s3 == 1.0 and res[1] < 1e-8 < res[0]


def test_similarity_fit_never_returns_a_reflection():
    rng = np.random.default_rng(3)
    for _ in range(20):
        x = rng.normal(size=(30, 3))
        mirror = np.diag([-1.0, 1.0, 1.0]) @ _random_rotation(rng)
        r, s, _ = geo.similarity_fit(x, x @ mirror.T + rng.normal(size=3))
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert s > 0


def test_similarity_fit_respects_weights():
    rng = np.random.default_rng(4)
    x, rot, s, t, y = _planted(rng, 40)
    y_bad = y.copy()
    y_bad[:10] = rng.uniform(-1e3, 1e3, (10, 3))  # outliers with weight 0 are ignored
    w = np.r_[np.zeros(10), np.ones(30)]
    r2, s2, t2 = geo.similarity_fit(x, y_bad, w)
    np.testing.assert_allclose(r2, rot, atol=1e-9)
    assert s2 == pytest.approx(s, rel=1e-9)
    # integer weights = repeated points
    k = rng.integers(1, 4, 40)
    noisy = y + rng.normal(size=y.shape)
    got = geo.similarity_fit(x, noisy, k.astype(float))
    want = geo.similarity_fit(np.repeat(x, k, 0), np.repeat(noisy, k, 0))
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
    # only the relative weights matter
    for a, b in zip(got, geo.similarity_fit(x, noisy, 7.5 * k), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)


def test_jax_similarity_matches_numpy_and_ignores_masked_points():
    rng = np.random.default_rng(5)
    x, rot, s, t, y = _planted(rng, 60)
    y = y + rng.normal(size=y.shape) * 0.5
    y[:8] = np.nan  # weight 0 at NaN targets must not poison the fit
    w = np.r_[np.zeros(8), rng.uniform(0.2, 2.0, 52)]
    want = geo.similarity_fit(x[8:], y[8:], w[8:])
    got = geo.similarity_procrustes(jnp.asarray(x), jnp.asarray(np.nan_to_num(y)), jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(got[0]), want[0], atol=1e-5)
    assert float(got[1]) == pytest.approx(want[1], rel=1e-5)
    np.testing.assert_allclose(np.asarray(got[2]), want[2], atol=1e-3 * (1 + np.abs(want[2]).max()))
    r0, s0, t0 = geo.similarity_procrustes(jnp.asarray(x), jnp.asarray(x), jnp.zeros(60))
    assert np.all(np.isfinite(r0)) and np.isfinite(float(s0)) and np.all(np.isfinite(t0))


# ------------------------------------------------------------------------------------------ closest point


def _segment_closest(p, a, b):
    t = np.clip(np.sum((p - a) * (b - a), -1) / np.sum((b - a) ** 2, -1), 0.0, 1.0)
    return a + t[..., None] * (b - a)


def _reference_closest(p, a, b, c):
    """Independent reference: the in-plane projection when it falls inside, else the best of the three
    edges (each a clamped segment projection)."""
    n = np.cross(b - a, c - a)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    q = p - np.sum((p - a) * n, -1)[..., None] * n
    inside = np.ones(q.shape[:-1], bool)
    for u, v in ((a, b), (b, c), (c, a)):
        inside &= np.sum(np.cross(v - u, q - u) * n, -1) >= 0
    cands = np.stack([q, _segment_closest(p, a, b), _segment_closest(p, b, c), _segment_closest(p, c, a)])
    d = np.linalg.norm(cands - p, axis=-1)
    d[0] = np.where(inside, d[0], np.inf)
    return np.take_along_axis(cands, np.argmin(d, 0)[None, ..., None], 0)[0]


def test_closest_point_barycentric_in_every_voronoi_region():
    """Points placed in each of the 7 regions of one triangle (3 vertices, 3 edges, interior), off-plane."""
    a, b, c = np.array([0.0, 0, 0]), np.array([4.0, 0, 0]), np.array([1.0, 3.0, 0])
    rng = np.random.default_rng(0)
    centre = (a + b + c) / 3
    pts = [centre + rng.uniform(-0.3, 0.3, 3)]  # interior
    for v in (a, b, c):  # vertex regions: pushed out from the centroid past the vertex
        pts.append(v + 1.5 * (v - centre) + [0, 0, 2.0])
    for u, v in ((a, b), (b, c), (c, a)):  # edge regions: from the edge midpoint, outwards in the plane
        mid = 0.5 * (u + v)
        pts.append(mid + 1.2 * (mid - centre) - [0, 0, 1.0])
    pts = np.array(pts)
    bary = geo.closest_point_barycentric(a, b, c, pts)
    got = bary @ np.stack([a, b, c])
    want = _reference_closest(pts, *(np.broadcast_to(v, pts.shape) for v in (a, b, c)))
    np.testing.assert_allclose(got, want, atol=1e-12)
    np.testing.assert_allclose(bary.sum(1), 1.0, atol=1e-12)
    assert np.all(bary >= -1e-12)
    # the vertex regions give a vertex exactly, the edge regions a zero coordinate, the interior none
    assert np.all(np.isclose(bary[1:4].max(1), 1.0))
    assert np.all(np.isclose(bary[4:].min(1), 0.0)) and np.all(bary[0] > 0.05)


def test_closest_points_on_mesh_against_brute_force():
    rng = np.random.default_rng(5)
    verts = rng.uniform(-1, 1, (30, 3))
    tris = np.array([rng.choice(30, 3, replace=False) for _ in range(25)])
    pts = rng.uniform(-1.5, 1.5, (200, 3))
    closest, tri_id, bary = geo.closest_points_on_mesh(pts, verts, tris, candidates=30)
    np.testing.assert_allclose(bary.sum(1), 1.0, atol=1e-9)
    assert np.all(bary >= -1e-9)
    np.testing.assert_allclose(np.einsum("pj,pjd->pd", bary, verts[tris[tri_id]]), closest, atol=1e-9)
    tv = verts[tris]  # [F, 3, 3]
    per_tri = _reference_closest(pts[:, None], tv[None, :, 0], tv[None, :, 1], tv[None, :, 2])  # [P, F, 3]
    ref = np.linalg.norm(per_tri - pts[:, None], axis=-1).min(1)
    np.testing.assert_allclose(np.linalg.norm(closest - pts, axis=1), ref, atol=1e-9)
    # random points reach every kind of region: vertices, edges and faces
    kinds = np.sum(bary > 1e-9, axis=1)
    assert {1, 2, 3} <= set(kinds.tolist())


def test_closest_points_on_mesh_candidates_on_a_dense_surface():
    """With the default candidate count (nearest vertices' triangles) the answer on a fine grid is exact."""
    g = np.linspace(-1, 1, 21)
    u, v = np.meshgrid(g, g)
    verts = np.stack([u.ravel(), v.ravel(), 0.3 * np.sin(2 * u.ravel()) * np.cos(v.ravel())], 1)
    idx = np.arange(21 * 21).reshape(21, 21)
    q = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 4)
    tris = np.concatenate([q[:, [0, 1, 2]], q[:, [0, 2, 3]]])
    pts = np.random.default_rng(1).uniform(-0.9, 0.9, (100, 3)) * np.array([1, 1, 0.3])
    fast = geo.closest_points_on_mesh(pts, verts, tris)[0]
    full = geo.closest_points_on_mesh(pts, verts, tris, candidates=len(verts))[0]
    np.testing.assert_allclose(fast, full, atol=1e-12)
