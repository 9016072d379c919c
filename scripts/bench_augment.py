"""Augmentation throughput (images/s) for batch sizes 1, 8, 32, with a per-stage breakdown and peak memory.

Each batch size runs in its own subprocess (so peak RSS is its own): detect faces once, compile the batched
synthesis on one warm-up batch (timed apart), then run ``batch.run_augment`` over the inputs with every stage
timed (load, detect, synthesis after ``block_until_ready``, save + labels). Baseline: batch size 1 (one image
at a time through the same jitted function), measured in the same run; the ratio is batched / baseline.

    python scripts/bench_augment.py                      # London neutral faces if present, else astronaut
    python scripts/bench_augment.py --images 16 --sizes 1,8 --fake   # job overhead only (no JAX)
    python scripts/bench_augment.py --engine ray --images 16 --classes 2 --sizes 4 --workers 1,2

``--engine ray`` runs the same job with the local engine, on a local Ray with 1, 2, ... synthesis actors,
and with the local engine again, in one process, and compares their steady time per image per worker
(compilation left out, see ``ray_engines``); the per-worker overhead is Ray's over the local engine's
(the mean of its two runs: a shared machine's load drifts), minus 1.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LONDON = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces" / "london" / "neutral"


def _inputs(n: int, tmp: Path) -> list[Path]:
    files = sorted(LONDON.glob("*.jpg"))[:n] if LONDON.is_dir() else []
    if len(files) < n:  # fall back to (copies of) skimage's astronaut
        import skimage.data
        from PIL import Image

        tmp.mkdir(parents=True, exist_ok=True)
        for i in range(n - len(files)):
            p = tmp / f"astronaut_{i:03d}.png"
            Image.fromarray(skimage.data.astronaut()).save(p)
            files.append(p)
    return files


class Timer:
    def __init__(self):
        self.t: dict[str, list[float]] = {}

    def wrap(self, name, fn, block=None):
        def run(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            if block is not None:
                block(out)
            self.t.setdefault(name, []).append(time.perf_counter() - t0)
            return out

        return run


def one(batch_size: int, n: int, fake: bool, classes: int) -> dict:
    """One batch size in this process: returns timings as a dict."""
    import jax

    from affectsynth.cli import augment as B
    from affectsynth.cli import inputs as BI
    from affectsynth.cli.bulk import Backend

    tmp = Path(tempfile.mkdtemp(prefix="bench_augment_"))
    files = _inputs(n, tmp / "in")
    be = Backend()
    timer = Timer()
    detect = be.detect(lambda m: None)
    if fake:
        from types import SimpleNamespace

        def synth_raw(images, landmarks, targets, keys, crop):
            return SimpleNamespace(images=images * 0.9, fit_rms=np.zeros(len(images)), label=targets)

        chosen = [(i, 0.1 * i - 0.5, 0.3) for i in range(classes)]
        crop_fn = lambda lms, h, w: (h, w)
    else:
        model = be.load_model(None)
        opts = be.options()
        synth_raw = be.synth(model, opts)
        chosen = be.classes(model, True)[:classes]
        crop_all = be.crop(opts)
    # detect once up front to fix ONE crop for all runs (what run_augment does per padded shape)
    lms, shapes = [], []
    for f in files:
        img, _ = B.default_loader(f)
        lms.append(detect(img, str(f)))
        shapes.append(BI.padded_shape(*img.shape[:2]))
    if not fake:
        fixed = crop_all(np.stack(lms), *shapes[0])
        crop_fn = lambda l_, h, w: fixed

    def block(res):
        jax.block_until_ready(res.images) if hasattr(res.images, "block_until_ready") else None

    # compile apart: one warm-up batch of the benchmarked shape and size
    img0, _ = B.default_loader(files[0])
    pad0 = BI.pad_image(img0)
    warm = (
        np.repeat(pad0[None], batch_size, 0),
        np.repeat(lms[0][None], batch_size, 0),
        np.zeros((batch_size, 2), np.float32),
        np.zeros((batch_size, 2), np.uint32),
        crop_fn(None, *pad0.shape[:2]),
    )
    t0 = time.perf_counter()
    block(synth_raw(*warm))
    compile_s = time.perf_counter() - t0

    save_time = []
    import affectsynth.io as aio

    real_save = aio.save_image

    def timed_save(*a, **k):
        t = time.perf_counter()
        out = real_save(*a, **k)
        save_time.append(time.perf_counter() - t)
        return out

    aio.save_image = timed_save
    t0 = time.perf_counter()
    rep = B.run_augment(
        files,
        tmp / "out",
        chosen,
        synth=timer.wrap("synthesis", synth_raw, block),
        detect=timer.wrap("detect", detect),
        load=timer.wrap("load", B.default_loader),
        crop=crop_fn,
        batch_size=batch_size,
    )
    wall = time.perf_counter() - t0
    aio.save_image = real_save
    items = rep.written
    synth_t = timer.t.get("synthesis", [0.0])
    return {
        "batch_size": batch_size,
        "images": items,
        "wall_s": wall,
        "images_per_s": items / wall,
        "compile_s": compile_s,
        "synth_per_batch_median_s": float(np.median(synth_t)),
        "synth_images_per_s": batch_size / float(np.median(synth_t)),
        "stage_s": {
            "load": sum(timer.t.get("load", [])),
            "detect": sum(timer.t.get("detect", [])),
            "synthesis": sum(synth_t),
            "save": sum(save_time),
        },
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": str(jax.devices()[0]),
    }


class Arrivals:
    """``progress(total, desc)`` for the local engine: when each batch of the images bar was finished."""

    def __init__(self):
        self.t: list[tuple[float, int]] = []

    def __call__(self, total, desc):
        rec = self

        class Bar:
            def update(self, n):
                if desc == "images":
                    rec.t.append((time.perf_counter(), n))

            def close(self):
                pass

        return Bar()

    def steady(self) -> float:
        """(last - first finished batch) / images after the first: compilation left out."""
        return (self.t[-1][0] - self.t[0][0]) / max(sum(n for _, n in self.t[1:]), 1)


class Spans:
    """``on_batch`` for the Ray engine: each actor's (start, end) per batch, on that actor's clock."""

    def __init__(self):
        self.by_actor: dict[int, list[tuple[float, int]]] = {}

    def __call__(self, batch, span):
        pid, _, end = span
        self.by_actor.setdefault(pid, []).append((end, batch.valid))

    def steady(self) -> float:
        """Per actor, (last - first batch end) / images after its first batch (its compilation), averaged:
        the gaps Ray leaves between an actor's batches are inside, so this is a worker's real rate."""
        per = []
        for t in self.by_actor.values():
            t = sorted(t)
            if len(t) > 1:
                per.append((t[-1][0] - t[0][0]) / sum(n for _, n in t[1:]))
        return float(np.mean(per))


def ray_engines(n: int, classes: int, batch_size: int, workers: list[int]) -> list[dict]:
    """The same job with the local engine (before and after), then on a local Ray per worker count.

    Steady time per image: the local engine's from when its batches finish, Ray's from its actors' own
    batch end times (Ray hands results to the driver in bursts, so arrival times there would flatter it).
    """
    import ray

    from affectsynth.cli import augment as B
    from affectsynth.cli.bulk import Backend
    from affectsynth.cli.bulk_ray import ray_session, run_augment_ray

    tmp = Path(tempfile.mkdtemp(prefix="bench_augment_ray_"))
    files = _inputs(n, tmp / "in")
    be = Backend()
    model = be.load_model(None)
    chosen = be.classes(model, True)[:classes]
    opt_kw = {}
    opts = be.options(**opt_kw)
    job = dict(crop=be.crop(opts), batch_size=batch_size)
    synth, detect = be.synth(model, opts), be.detect(lambda m: None)
    runs = []

    def record(name, run, meter):
        t0 = time.perf_counter()
        rep = run(tmp / f"out{len(runs)}", meter)
        wall = time.perf_counter() - t0
        runs.append(dict(engine=name, images=rep.written, wall_s=wall, steady_s_per_image=meter.steady()))

    local = lambda out, bar: B.run_augment(
        files, out, chosen, synth=synth, detect=detect, progress=bar, **job
    )
    record("local", local, Arrivals())
    with ray_session(None):
        for w in workers:
            ray_job = lambda out, spans, w=w: run_augment_ray(
                files, out, chosen, model=model, options=opt_kw, workers=w, on_batch=spans, **job
            )
            record(f"ray x{w}", ray_job, Spans())
        device = str(ray.cluster_resources())
    record("local", local, Arrivals())
    for r in runs:
        r["device"] = device
    return runs


def print_ray(runs: list[dict], args) -> None:
    local = [r for r in runs if r["engine"] == "local"]
    base = float(np.mean([r["steady_s_per_image"] for r in local]))
    print(
        f"inputs: {args.images} x {args.classes} class(es), batch size {args.sizes}; Ray: {runs[0]['device']}"
    )
    print("engine    images  wall s  img/s(job)  steady s/img/worker  img/s/worker  overhead vs local")
    for r in runs:
        m = r["steady_s_per_image"]
        print(
            f"{r['engine']:<8}  {r['images']:>6}  {r['wall_s']:>6.1f}  {r['images'] / r['wall_s']:>10.2f}  "
            f"{m:>19.3f}  {1 / m:>12.2f}  {m / base - 1:>+17.1%}"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=32, help="number of input photos (one class each)")
    ap.add_argument("--classes", type=int, default=1, help="classes per photo")
    ap.add_argument("--sizes", default="1,8,32", help="batch sizes")
    ap.add_argument("--fake", action="store_true", help="fake synthesis: measures the job overhead only")
    ap.add_argument("--engine", choices=["local", "ray"], default="local", help="ray: local vs Ray engines")
    ap.add_argument("--workers", default="1,2", help="Ray synthesis actors to try (with --engine ray)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.engine == "ray":
        runs = ray_engines(
            a.images, a.classes, int(a.sizes.split(",")[0]), [int(w) for w in a.workers.split(",")]
        )
        print_ray(runs, a)
        return
    if a.one is not None:
        print("RESULT " + json.dumps(one(a.one, a.images, a.fake, a.classes)))
        return
    results = []
    for bs in [int(s) for s in a.sizes.split(",")]:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(bs),
            "--images",
            str(a.images),
            "--classes",
            str(a.classes),
        ]
        cmd += ["--fake"] if a.fake else []
        env = dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="3")
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode or not line:
            print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"batch size {bs} failed")
        results.append(json.loads(line[0][7:]))
    base = results[0]
    print(f"device: {base['device']}   inputs: {a.images} x {a.classes} class(es)   fake={a.fake}")
    hdr = "batch  img/s(job)  img/s(synth)  x baseline  compile s  load s  detect s  synth s  save s  peak MB"
    print(hdr)
    for r in results:
        s = r["stage_s"]
        print(
            f"{r['batch_size']:>5}  {r['images_per_s']:>10.2f}  {r['synth_images_per_s']:>12.2f}  "
            f"{r['images_per_s'] / base['images_per_s']:>10.2f}  {r['compile_s']:>9.1f}  {s['load']:>6.2f}  "
            f"{s['detect']:>8.2f}  {s['synthesis']:>7.2f}  {s['save']:>6.2f}  {r['peak_rss_mb']:>7.0f}"
        )


if __name__ == "__main__":
    main()
