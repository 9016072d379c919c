"""Benchmark: affectsynth.rasterize on a face-like mesh, against a dense chunked z-buffer baseline.

The mesh is the FaceMesh template from ``face_topology()`` scaled to ``--width`` of the image width
(default 0.45), centred, frontal, and subdivided 0, 1, 2 times with ``topology.subdivide`` (852, 3408,
13632 triangles). For each image size N (default 256, 512, 1024) and mesh it reports:

* rasterize (jit): compile time (first call minus a steady-state call) and the median of ``--repeats``
  steady-state calls after ``block_until_ready``, plus the number of windows the mesh needs and the
  rounds that takes at the default capacity;
* the baseline: the obvious dense rasteriser, every pixel against every triangle in a ``lax.scan`` over
  chunks of 64 triangles (O(H W F), the brute-force method a tiled rasteriser replaces), measured in the
  same run where it is affordable (N * N * F <= ``--baseline-max`` pixel-triangle pairs), and the ratio;
* a vmapped batch of ``--batch`` faces (jittered copies) at 512 px per mesh: time per batch and per face.

Usage: ``python scripts/bench_raster.py [--sizes 256 512 1024] [--levels 0 1 2] [--repeats 5]``
"""

import argparse
import functools
import math
import platform

import jax
import jax.numpy as jnp
import numpy as np

from _timing import compile_and_median
from affectsynth.face.topology import face_topology, subdivide
from affectsynth.render import raster as R


def face_mesh(size: int, width: float, levels: int):
    topo = face_topology()
    v = topo.template
    s = width * size / np.ptp(v[:, 0])
    verts = np.stack([v[:, 0] * s + size / 2, -v[:, 1] * s + size / 2, -v[:, 2] * s], 1).astype(np.float32)
    tris = topo.triangles
    if levels:
        sub = subdivide(tris, verts.shape[0], levels)
        verts, tris = sub.weights @ verts, sub.triangles
    return jnp.asarray(verts), jnp.asarray(tris)


def dense_rasterize(vertices, triangles, height: int, width: int, chunk: int = 64):
    """Baseline: all pixels x all triangles (chunked scan), min depth with the smallest id on ties."""
    num = triangles.shape[0]
    pad = -num % chunk
    tris = jnp.concatenate([triangles, jnp.zeros((pad, 3), triangles.dtype)])
    corners = vertices[tris].reshape(-1, chunk, 3, 3)
    ids = jnp.arange(tris.shape[0], dtype=jnp.int32).reshape(-1, chunk)
    real = ids < num
    py, px = jnp.meshgrid(jnp.arange(height) + 0.5, jnp.arange(width) + 0.5, indexing="ij")
    px, py = px[..., None], py[..., None]

    def step(carry, block):
        zbuf, best = carry
        c, tid, ok = block
        x, y, z = (c[..., k] for k in range(3))
        e = [
            (x[:, b] - x[:, a]) * (py - y[:, a]) - (y[:, b] - y[:, a]) * (px - x[:, a])
            for a, b in ((1, 2), (2, 0), (0, 1))
        ]
        area = e[0] + e[1] + e[2]
        inside = ok & (area != 0)
        inside = inside & (
            ((e[0] >= 0) & (e[1] >= 0) & (e[2] >= 0)) | ((e[0] <= 0) & (e[1] <= 0) & (e[2] <= 0))
        )
        depth = jnp.where(
            inside, (e[0] * z[:, 0] + e[1] * z[:, 1] + e[2] * z[:, 2]) / jnp.where(inside, area, 1), jnp.inf
        )
        k = jnp.argmin(depth, axis=-1)
        d = jnp.take_along_axis(depth, k[..., None], -1)[..., 0]
        better = d < zbuf
        return (jnp.where(better, d, zbuf), jnp.where(better, tid[k], best)), None

    init = (jnp.full((height, width), jnp.inf), jnp.full((height, width), -1, jnp.int32))
    (_, best), _ = jax.lax.scan(step, init, (corners, ids, real))
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=float, default=0.45, help="face width as a fraction of the image")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--baseline-max", type=float, default=2e8, help="largest N*N*F for the baseline")
    args = parser.parse_args()

    dev = jax.devices()[0]
    print(
        f"device: {dev.platform} {dev.device_kind} | jax {jax.__version__} | "
        f"{platform.processor() or platform.machine()}"
    )
    print(f"face {args.width:.2f} of the width, window {R.DEFAULT_WINDOW}, median of {args.repeats}")
    print(
        f"{'N':>5} {'tris':>6} {'windows':>8} {'rounds':>6} {'compile s':>9} {'ms':>8} "
        f"{'dense ms':>9} {'x faster':>8}"
    )
    for n in args.sizes:
        for lev in args.levels:
            v, t = face_mesh(n, args.width, lev)
            f = t.shape[0]
            cap = R.default_capacity(f, n, n)
            windows = int(jnp.sum(R._setup(v, t, n, n, R.DEFAULT_WINDOW, False).count))
            ours = jax.jit(lambda v, t, n=n: R.rasterize(v, t, n, n))
            compile_s, steady = compile_and_median(lambda ours=ours, v=v, t=t: ours(v, t), args.repeats)
            base = "-"
            ratio = "-"
            if n * n * f <= args.baseline_max:
                dense = jax.jit(lambda v, t, n=n: dense_rasterize(v, t, n, n))
                ids = np.asarray(dense(v, t))
                agree = np.mean(ids == np.asarray(ours(v, t).triangle_id))
                _, b = compile_and_median(functools.partial(dense, v, t), max(1, args.repeats // 2))
                base, ratio = f"{1e3 * b:.1f}", f"{b / steady:.1f} (ids agree {100 * agree:.2f}%)"
            print(
                f"{n:>5} {f:>6} {windows:>8} {math.ceil(windows / cap):>6} {compile_s:>9.2f} "
                f"{1e3 * steady:>8.1f} {base:>9} {ratio:>8}",
                flush=True,
            )
    n, b = args.batch_size, args.batch
    print(f"vmap batch of {b} at {n} px (faces jittered by up to 5 px)")
    rng = np.random.default_rng(0)
    for lev in args.levels:
        v, t = face_mesh(n, args.width, lev)
        vs = v[None] + jnp.asarray(rng.uniform(-5, 5, (b, 1, 3)).astype(np.float32))
        batched = jax.jit(jax.vmap(lambda vv, t=t, n=n: R.rasterize(vv, t, n, n)))
        compile_s, steady = compile_and_median(lambda batched=batched, vs=vs: batched(vs), args.repeats)
        print(
            f"{n:>5} {t.shape[0]:>6} compile {compile_s:.2f} s, {1e3 * steady:.1f} ms per batch, "
            f"{1e3 * steady / b:.1f} ms per face",
            flush=True,
        )


if __name__ == "__main__":
    main()
