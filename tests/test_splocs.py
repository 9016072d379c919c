import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from affectsynth.affect import splocs
from affectsynth.face.topology import face_topology

TOPO = face_topology()
REST, TRIS = TOPO.template, TOPO.triangles
V = REST.shape[0]


@pytest.fixture(scope="module")
def dist():
    return splocs.geodesic_distances(REST, TRIS)


def planted(dist, k=4, f=240, signed=False, noise=0.01, seed=0):
    """K localised bumps (cone of geodesic radius 0.08 around random centres) with sparse weights."""
    rng = np.random.default_rng(seed)
    centres = []
    while len(centres) < k:  # well-separated centres on the mesh proper
        c = int(rng.integers(0, 468))
        if all(dist[c, o] > 0.3 for o in centres):
            centres.append(c)
    comps = np.zeros((k, V, 3), np.float32)
    for j, c in enumerate(centres):
        comps[j] = np.clip(1 - dist[c] / 0.08, 0, 1)[:, None] * rng.normal(0, 3, 3)
    w = rng.uniform(0, 1, (f, k)) * (rng.uniform(size=(f, k)) < 0.5)
    if signed:
        w = w * rng.choice([-1.0, 1.0], (f, k))
    x = np.einsum("fk,kvc->fvc", w, comps) + noise * rng.standard_normal((f, V, 3))
    return x.astype(np.float32), comps, w


def match(found, truth):
    """Best |correlation| of each true component with a found one, and that found component."""
    out = []
    for t in truth:
        cors = [abs(np.corrcoef(c.ravel(), t.ravel())[0, 1]) if np.any(c) else 0.0 for c in found]
        j = int(np.argmax(cors))
        out.append((cors[j], found[j]))
    return out


# ---------------------------------------------------------------------------------------------------------
# Building blocks


def test_group_soft_threshold_closed_form():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(7, 5, 3)).astype(np.float32)
    t = rng.uniform(0, 2, (7, 5)).astype(np.float32)
    got = np.asarray(splocs.group_soft_threshold(jnp.asarray(v), jnp.asarray(t)))
    for i in range(7):
        for j in range(5):
            n = np.linalg.norm(v[i, j])
            want = np.zeros(3) if n <= t[i, j] else v[i, j] * (1 - t[i, j] / n)
            np.testing.assert_allclose(got[i, j], want, rtol=1e-5, atol=1e-6)
    # it is the prox: z minimises 1/2 ||z - v||^2 + t ||z|| (check against random perturbations)
    obj = lambda z, v, t: 0.5 * np.sum((z - v) ** 2) + t * np.linalg.norm(z)
    for _ in range(20):
        z = got[0, 0] + rng.normal(0, 0.05, 3)
        assert obj(z, v[0, 0], t[0, 0]) >= obj(got[0, 0], v[0, 0], t[0, 0]) - 1e-6


def test_group_soft_threshold_zero_and_grads():
    z = splocs.group_soft_threshold(jnp.zeros((2, 3)), jnp.ones(2))
    assert np.all(np.asarray(z) == 0)
    g = jax.grad(lambda v: jnp.sum(splocs.group_soft_threshold(v, jnp.ones(2))))(jnp.zeros((2, 3)))
    assert np.all(np.isfinite(np.asarray(g)))
    with jax.enable_x64(True):
        v = jnp.asarray(np.random.default_rng(2).normal(size=(4, 3)) * 3.0)
        check_grads(lambda v: splocs.group_soft_threshold(v, jnp.full(4, 0.5)), (v,), order=1, modes=["rev"])


def test_project_weights():
    m = jnp.ones(4)
    np.testing.assert_allclose(
        splocs.project_weights(jnp.array([-1.0, 2.0, 1.0, 0.0]), m, False), [0, 1, 0.5, 0]
    )
    np.testing.assert_allclose(
        splocs.project_weights(jnp.array([-4.0, 2.0, 1.0, 0.0]), m, True), [-1, 0.5, 0.25, 0]
    )
    np.testing.assert_allclose(splocs.project_weights(jnp.array([-1.0, -2.0, 0, 0]), m, False), 0)
    mask = jnp.array([1.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(
        splocs.project_weights(jnp.array([1.0, 9.0, 2.0, 0.0]), mask, False), [0.5, 0, 1, 0]
    )


def test_support_map():
    d = jnp.array([0.0, 0.1, 0.4, 0.7, 2.0])
    np.testing.assert_allclose(splocs.support_map(d, 0.1, 0.7), [0, 0, 0.5, 1, 1], atol=1e-6)


def test_geodesics(dist):
    assert dist.shape == (V, V) and np.allclose(dist, dist.T) and np.all(np.diag(dist) == 0)
    assert np.all(dist >= 0) and dist[:468, :468].max() < 1.5
    # the open mouth: inner-lip midpoints are close in space but far along the mesh
    up = TOPO.region("lips_inner_upper")[5]
    lo = TOPO.region("lips_inner_lower")[5]
    diag = np.linalg.norm(REST.max(0) - REST.min(0))
    assert dist[up, lo] > 4 * np.linalg.norm(REST[up] - REST[lo]) / diag


def test_fit_weights_exact():
    rng = np.random.default_rng(3)
    c = rng.normal(size=(5, 40, 3)).astype(np.float32)
    w = rng.normal(size=(9, 5)).astype(np.float32)
    x = np.einsum("fk,kvc->fvc", w, c)
    np.testing.assert_allclose(np.asarray(splocs.fit_weights(jnp.asarray(c), jnp.asarray(x))), w, atol=1e-3)
    np.testing.assert_allclose(np.asarray(splocs.reconstruct(w, c)), x, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Learning


@pytest.fixture(scope="module")
def unsigned_run(dist):
    x, comps, w = planted(dist)
    res = splocs.learn_splocs(x, REST, TRIS, num_components=4, distances=dist)
    return x, comps, w, res


def test_recovers_planted_components(unsigned_run, dist):
    x, comps, _, res = unsigned_run
    found = np.asarray(res.components)
    assert found.shape == (4, V, 3) and res.weights.shape == (x.shape[0], 4)
    for (cor, c), truth in zip(match(found, comps), comps, strict=True):
        # correlation threshold: each planted component has a recovered twin with |r| > 0.99
        assert cor > 0.99
        # support thresholds: > 95 % of the recovered component's energy lies on the true support, and
        # < 0.1 % of it beyond d_max of its centre (where the full penalty applies)
        support = np.linalg.norm(truth, axis=1) > 0
        e = np.sum(c**2, axis=1)
        assert e[support].sum() / e.sum() > 0.95
        centre = int(np.argmax(e))
        assert e[dist[centre] > 0.7].sum() < 1e-3 * e.sum()
    w = np.asarray(res.weights)
    assert np.all(w >= 0) and np.allclose(w.max(0), 1.0)


def test_energy_decreases(unsigned_run):
    e = np.asarray(unsigned_run[3].energy_history)
    assert e.shape == (10,) and np.all(np.isfinite(e))
    assert np.all(np.diff(e) <= 1e-3 * e[0])  # monotone up to float32 round-off
    assert e[-1] < 0.5 * e[0]


def test_energy_matches_objective(unsigned_run, dist):
    x, _, _, res = unsigned_run
    e = float(splocs.splocs_energy(x, res, dist))
    np.testing.assert_allclose(e, float(res.energy_history[-1]), rtol=2e-3)


def test_reconstruction_vs_pca(unsigned_run):
    x, _, _, res = unsigned_run
    f = x.shape[0]
    rec = np.asarray(splocs.reconstruct(res.weights, res.components))
    err = np.linalg.norm(rec - x) / np.linalg.norm(x)
    xf = x.reshape(f, -1)
    u, s, vt = np.linalg.svd(xf, full_matrices=False)
    pca = np.linalg.norm(xf - (u[:, :4] * s[:4]) @ vt[:4]) / np.linalg.norm(xf)
    # same rank: PCA is optimal, SPLOCS (sparse, local, constrained weights) is within 5 % of it here
    assert pca <= err <= 1.05 * pca + 1e-3, (err, pca)
    # refitting the weights by ridge LS can only help
    refit = np.asarray(splocs.reconstruct(splocs.fit_weights(res.components, jnp.asarray(x)), res.components))
    assert np.linalg.norm(refit - x) <= np.linalg.norm(rec - x) * (1 + 1e-4)


def test_signed_weights(dist):
    x, comps, _ = planted(dist, k=3, f=200, signed=True, seed=5)
    res = splocs.learn_splocs(x, REST, TRIS, num_components=3, signed_weights=True, distances=dist)
    w = np.asarray(res.weights)
    assert w.min() < 0 and np.allclose(np.abs(w).max(0), 1.0)
    for cor, _ in match(np.asarray(res.components), comps):
        assert cor > 0.99


def test_batch_equals_loop_with_padding(dist):
    """vmap over padded data sets == one call per unpadded set (masked frames are ignored)."""
    kw = dict(num_components=3, num_iterations=3, admm_steps=3, distances=dist)
    xa, _, _ = planted(dist, k=3, f=30, seed=7)
    xb, _, _ = planted(dist, k=3, f=18, seed=8)
    xs = np.zeros((2, 30, V, 3), np.float32)
    xs[0], xs[1, :18] = xa, xb
    xs[1, 18:] = 1e3  # garbage in the padding must not leak
    mask = np.zeros((2, 30), bool)
    mask[0], mask[1, :18] = True, True
    batch = splocs.learn_splocs_batch(xs, mask, REST, TRIS, **kw)
    for i, x in enumerate((xa, xb)):
        one = splocs.learn_splocs(x, REST, TRIS, **kw)
        n = x.shape[0]
        np.testing.assert_allclose(batch.components[i], one.components, rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(batch.weights[i, :n], one.weights, rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(batch.energy_history[i], one.energy_history, rtol=2e-3)
        assert np.all(np.asarray(batch.weights[i, n:]) == 0)


def test_empty_data_is_finite(dist):
    res = splocs.learn_splocs_batch(
        np.zeros((1, 6, V, 3), np.float32),
        np.zeros((1, 6), bool),
        REST,
        TRIS,
        num_components=3,
        num_iterations=3,
        admm_steps=3,
        distances=dist,
    )
    assert np.all(np.asarray(res.components) == 0) and np.all(np.isfinite(np.asarray(res.energy_history)))


def test_argument_checks():
    with pytest.raises(ValueError):
        splocs.learn_splocs(np.zeros((2, V, 3)), REST, TRIS, d_min=0.7, d_max=0.1)
    with pytest.raises(ValueError):
        splocs.learn_splocs(np.zeros((2, V, 3)), REST, TRIS, distances=np.zeros((3, 3)))
