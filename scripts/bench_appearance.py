"""Benchmark: added cost of the appearance cues per 512 px image, as a ratio to the geometry-only path.

Two measurements, each a compile call timed apart and the median of N runs after ``block_until_ready``:

* ``pipeline``: ``synthesize_batch`` on a London photo (512 px crop) with every cue on vs every cue off
  (needs raster.py and ../shared; skipped when either is missing).
* ``stage``: on a synthetic 512 px face rasterised once on the host (frags given), the geometry-only tail
  (render = bilinear texture transfer, then Poisson blend) vs the same with ``apply_appearance`` in between.
  Rasterisation and the fit are excluded, so this ratio is an upper bound of the pipeline's.

Usage: python scripts/bench_appearance.py [--runs 5] [--size 512]
"""

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from affectsynth import appearance as ap

REPO = Path(__file__).resolve().parents[1]
LONDON = REPO.parent / "shared" / "data" / "faces" / "london"


def timed(fn, *args, runs: int):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times)


def report(name, base, full):
    (cb, tb), (cf, tf) = base, full
    print(
        f"{name:9s} geometry-only {tb * 1e3:8.1f} ms (compile {cb:5.1f} s) | "
        f"with appearance {tf * 1e3:8.1f} ms"
        f" (compile {cf:5.1f} s) | ratio {tf / tb:5.2f}x | added {1e3 * (tf - tb):7.1f} ms"
    )


def load_model(pipeline):
    """The default model; built without the disk cache if loading it fails."""
    try:
        return pipeline.load_model()
    except Exception as e:  # noqa: BLE001
        from affectsynth.expressions import build_default_model  # noqa: PLC0415

        print(f"load_model failed ({type(e).__name__}: {e}); building the default model without the cache")
        model = build_default_model(cache=False)
        return model[0] if isinstance(model, tuple) else model  # (model, report) in some versions


def bench_stage(size: int, runs: int):
    sys.path.insert(0, str(REPO / "tests"))
    import test_appearance as T  # noqa: PLC0415  (reuses the test's reference rasteriser and face)
    from affectsynth.poisson import poisson_blend  # noqa: PLC0415

    T.SIZE, T.PX_PER_MM = size, size / 180.0
    face = T.make_face()
    basis = (ap.action_unit_basis(), None)
    au = T.au_vector(AU1=0.6, AU2=0.6, AU6=1.0, AU12=1.0, AU25=1.0, AU26=0.6)
    _, frags, ctx = T.make_scene(face, T.deformation(basis, au), au)
    patch = jnp.asarray(face.img)

    def tail(patch, frags, ctx, options):
        src_xy = ap._interp(frags, ctx.triangles, ctx.src_vertices[:, :2])
        render = ap._bilinear(patch, src_xy)
        if options is not None:
            render, _ = ap.apply_appearance(render, patch, frags, ctx, options)
        covered = (frags.triangle_id >= 0).astype(patch.dtype)
        render = jnp.where(covered[..., None] > 0, render, patch)
        return poisson_blend(patch, render, covered)

    base = jax.jit(lambda p, f, c: tail(p, f, c, None))
    full = jax.jit(lambda p, f, c: tail(p, f, c, ap.AppearanceOptions()))
    report("stage", timed(base, patch, frags, ctx, runs=runs), timed(full, patch, frags, ctx, runs=runs))


def bench_pipeline(size: int, runs: int):
    try:
        from affectsynth import pipeline  # noqa: PLC0415
    except ImportError as e:
        print(f"pipeline  skipped: {e}")
        return
    if not (LONDON / "neutral").is_dir():
        print("pipeline  skipped: London photos not found")
        return
    from affectsynth.io import load_image  # noqa: PLC0415
    from affectsynth.landmarks import detect_landmarks  # noqa: PLC0415

    @dataclasses.dataclass(frozen=True)
    class Options(pipeline.SynthesisOptions):
        appearance: ap.AppearanceOptions | None = None

    img = np.asarray(load_image(sorted((LONDON / "neutral").glob("*.jpg"))[0]), np.float32)
    lm = np.asarray(detect_landmarks(img), np.float32)
    model = load_model(pipeline)
    target = np.array([[0.8, 0.5]], np.float32)
    off = ap.AppearanceOptions(shading=False, wrinkles=False, mouth_interior=False, eyes=False)
    crop = (min(size, img.shape[0]), min(size, img.shape[1]))

    def run(look):
        opts = Options(appearance=look)
        return lambda: (
            pipeline.synthesize_batch(img[None], lm[None], target, model, options=opts, crop=crop).images
        )

    report("pipeline", timed(run(off), runs=runs), timed(run(ap.AppearanceOptions()), runs=runs))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
        f"size {args.size}"
    )
    bench_pipeline(args.size, args.runs)
    bench_stage(args.size, args.runs)


if __name__ == "__main__":
    main()
