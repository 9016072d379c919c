"""Benchmark ``fit_morphable_model``: time per face at batch sizes 1, 8 and 64, vmap vs a Python loop.

Synthetic landmarks (planted pose / identity / expression + noise) so no data is needed. Compile time is
reported apart; steady-state times are medians of ``--repeats`` runs after ``block_until_ready``. The
baseline is a Python loop of single-face jitted fits over the same faces, measured in the same run.

    python scripts/bench_fit.py [--steps 200] [--repeats 5] [--sizes 1 8 64]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from _timing import median_time
from affectsynth.face import fit as fitm
from affectsynth.face import morphable as mm


def _faces(model, n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        zi = 0.8 * rng.standard_normal(model.num_identity)
        ze = rng.uniform(-0.5, 0.8, model.num_expression)
        rot = fitm.pose_rotation(*rng.uniform([-45, -15, -10], [45, 15, 10]))
        shape = model.shape(jnp.asarray(zi * model.identity_std), jnp.asarray(ze * model.expression_std))
        lm = 4.0 * shape @ rot.T + jnp.asarray(rng.uniform(200, 400, (1, 3)), jnp.float32)
        out.append(lm + 0.5 * jnp.asarray(rng.standard_normal(lm.shape), jnp.float32))
    return jnp.stack(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--identity-modes", type=int, default=60)
    args = parser.parse_args()

    dirs = np.zeros((4, 2, 3), np.float32)
    dirs[0] = [[-2, 4, 0], [2, 4, 0]]
    dirs[1] = [[0, -5, 0], [0, -5, 0]]
    dirs[2] = [[0, 4, 0], [0, 4, 0]]
    dirs[3] = [[0, -3, 0], [0, -3, 0]]
    expr = mm.bump_fields([[61, 291], [14, 17], [105, 334], [159, 386]], dirs)
    model = mm.morphable_model(expr, identity_modes=args.identity_modes)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    print(f"model: K_id={model.num_identity}, K_exp={model.num_expression}; steps={args.steps}")

    single = jax.jit(fitm.fit_morphable_model, static_argnames=("steps",))
    faces = _faces(model, max(args.sizes))
    t0 = time.perf_counter()
    jax.block_until_ready(single(faces[0], model, steps=args.steps))
    print(f"compile single: {time.perf_counter() - t0:.2f} s")

    print(f"{'B':>4} {'compile s':>10} {'vmap ms/face':>13} {'loop ms/face':>13} {'loop/vmap':>10}")
    for b in args.sizes:
        lms = faces[:b]
        t0 = time.perf_counter()
        jax.block_until_ready(fitm.fit_morphable_model_batch(lms, model, steps=args.steps))
        compile_s = time.perf_counter() - t0
        t_vmap = median_time(
            lambda lms=lms: fitm.fit_morphable_model_batch(lms, model, steps=args.steps), args.repeats
        )
        t_loop = median_time(
            lambda lms=lms: [single(lm, model, steps=args.steps) for lm in lms], max(1, args.repeats // 2)
        )
        vmap_ms, loop_ms = 1e3 * t_vmap / b, 1e3 * t_loop / b
        print(f"{b:>4} {compile_s:>10.2f} {vmap_ms:>13.2f} {loop_ms:>13.2f} {t_loop / t_vmap:>10.2f}")


if __name__ == "__main__":
    main()
