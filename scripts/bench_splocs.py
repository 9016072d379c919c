"""Benchmark SPLOCS (``learn_splocs``) at a few sizes F frames x N vertices, and the per-class batched build.

Compile time is measured apart (first call); then the median of N calls after ``block_until_ready``.
Baseline, measured in the same run: the reference algorithm's update order written straightforwardly
(residual-based W step, per-step Cholesky solves), in the same JAX, i.e. what the Gram-form W step and the
explicit K x K inverse in ``splocs.py`` save. Also PCA (SVD) of the same data, for scale.

    python scripts/bench_splocs.py [--repeats 3] [--quick]
"""

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from _timing import compile_and_median
from affectsynth.affect import splocs
from affectsynth.face.topology import face_topology, subdivide


@functools.partial(jax.jit, static_argnames=("k", "iters", "admm"))
def baseline(x, dist, k, iters, admm, sparsity=2.0, d_min=0.1, d_max=0.7, rho=10.0):
    """Straightforward reference update order (residual W step, cho_solve per ADMM step), started from the
    first K frames as components (the greedy initialisation is the same in both and left out here)."""
    f, v, _ = x.shape
    x = x / jnp.std(x)
    mask = jnp.ones((f,), x.dtype)
    c = x[:k]
    w = jnp.zeros((f, k), x.dtype)
    z, u = c, jnp.zeros_like(c)
    eye = jnp.eye(k, dtype=x.dtype)
    for _ in range(iters):
        r = x - jnp.einsum("fk,kvc->fvc", w, c)

        def w_step(j, rw, c=c):
            r, w = rw
            rk = r + w[:, j, None, None] * c[j][None]
            nrm = jnp.sum(c[j] ** 2)
            wn = jnp.einsum("fvc,vc->f", rk, c[j]) / jnp.maximum(nrm, 1e-12)
            wn = splocs.project_weights(wn, mask, False)
            return rk - wn[:, None, None] * c[j][None], w.at[:, j].set(wn)

        r, w = jax.lax.fori_loop(0, k, w_step, (r, w))
        centres = jnp.argmax(jnp.sum(c * c, -1), axis=1)
        lam = sparsity * splocs.support_map(dist[centres], d_min, d_max)
        chol = jnp.linalg.cholesky(w.T @ w + rho * eye)
        wtx = jnp.einsum("fk,fvc->kvc", w, x).reshape(k, -1)
        for _ in range(admm):
            c = jax.scipy.linalg.cho_solve((chol, True), wtx + rho * (z - u).reshape(k, -1)).reshape(k, v, 3)
            z = splocs.group_soft_threshold(c + u, lam / rho)
            u = u + c - z
        c = z
    return c, w


def data(f, v, k, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((f, k)) @ rng.standard_normal((k, v * 3))).reshape(f, v, 3).astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smallest size only")
    args = ap.parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    topo = face_topology()
    sub = subdivide(topo.triangles, 478, 1)
    meshes = {
        478: (topo.template, topo.triangles),
        sub.weights.shape[0]: (sub.apply(topo.template), sub.triangles),
    }
    sizes = [(1000, 478)] if args.quick else [(1000, 478), (10000, 478), (1000, sub.weights.shape[0])]
    k = 50
    print(f"K={k}, 10 outer iterations x 10 ADMM steps (reference defaults)")
    print(f"{'F':>6} {'N':>5} {'compile s':>9} {'ours s':>8} {'baseline s':>10} {'speed-up':>8} {'PCA s':>7}")
    for f, n in sizes:
        rest, tris = meshes[n]
        dist = splocs.geodesic_distances(rest, tris)
        x = jnp.asarray(data(f, n, 20))
        ours = functools.partial(splocs.learn_splocs, x, rest, tris, num_components=k, distances=dist)
        comp, t_ours = compile_and_median(ours, args.repeats)
        dj = jnp.asarray(dist)
        base = functools.partial(baseline, x, dj, k, 10, 10)
        _, t_base = compile_and_median(base, max(1, args.repeats // 2))
        flat = x.reshape(x.shape[0], -1)
        _, t_pca = compile_and_median(functools.partial(jnp.linalg.svd, flat, full_matrices=False), 1)
        ratio = t_base / t_ours
        print(f"{f:>6} {n:>5} {comp:>9.2f} {t_ours:>8.3f} {t_base:>10.3f} {ratio:>7.1f}x {t_pca:>7.3f}")

    # the model build's per-class call: 16 classes x 256 frames, K = 8, vmapped
    rest, tris = meshes[478]
    dist = splocs.geodesic_distances(rest, tris)
    xs = np.stack([data(256, 478, 6, seed=s) for s in range(16)])
    mask = np.ones((16, 256), bool)
    fn = functools.partial(splocs.learn_splocs_batch, xs, mask, rest, tris, num_components=8, distances=dist)
    comp, t = compile_and_median(fn, args.repeats)
    print(
        f"batched build call: 16 classes x 256 frames x 478, K=8: compile {comp:.2f} s, run {t:.3f} s "
        f"({1000 * t / 16:.0f} ms per class)"
    )


if __name__ == "__main__":
    main()
