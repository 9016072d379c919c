"""``augment --engine ray``: the augmentation job of ``cli.augment`` on Ray Data, for clusters and GPUs.

The driver does what the local engine does before synthesis (list inputs, read the ``--resume`` state, work
items, one static crop per padded shape, the same fixed-size batches) so the two engines give the same file
names, the same pixels and the same labels rows for a seed, and either can finish the other's job. Two Ray
Data stages do the heavy work:

1. face detection: a CPU task stage (``map_batches`` over the inputs with work left) returning landmarks;
2. synthesis: an actor pool (``--workers``, ``--gpus-per-worker`` each) whose actors hold the model and
   their compiled program for the whole job; each call takes one planned batch, writes its images straight
   into OUTPUT (temp + rename, so OUTPUT must be shared storage on a cluster) and returns labels rows.

The driver appends the rows (fsynced) to ``labels.csv`` in batch order as results stream back, only after
their images are in place, and lists bad inputs in ``skipped.csv``. Ray Data restarts an actor that dies
and retries its batch (its defaults: without limit); a batch that raises is reported as skipped (its items
are redone by ``--resume``).
"""

import contextlib
import os
import pickle
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import AffectsynthError
from .augment import (
    AugmentReport,
    _append_rows,
    _check_job,
    _Job,
    _pending_items,
    _resume_state,
    _write_skipped,
    default_loader,
    plan_synthesis,
)
from .inputs import LABEL_FIELDS, ensure_output_dir, source_key

LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
"""Object store of a local Ray (no ``--address``): only paths, landmarks and rows travel through it."""
BATCHES_PER_BLOCK = 4
"""Planned batches per Ray Data block (at most; small jobs use smaller blocks, four per actor): rows reach the
driver and ``labels.csv`` a block at a time, so a killed driver redoes at most this many batches per actor;
more per block would cost less scheduling."""


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None):
    """Connect to the Ray at ``address`` (``auto``, ``ray://HOST:PORT``) or start a local one for the machine.

    Reuses a Ray already initialised in this process (tests); shuts down only what it started.
    """
    import ray

    if ray.is_initialized():
        yield ray
        return
    with warnings.catch_warnings():  # Ray's helpers are fork + exec: JAX's fork warning does not apply
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=num_cpus or os.cpu_count() or 1,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                include_dashboard=False,
                log_to_driver=False,
            )
    try:
        yield ray
    finally:
        ray.shutdown()


def default_workers(ray, gpus_per_worker: float) -> int:
    """Synthesis actors when ``--workers`` is not given: one per GPU share, else one per node.

    On CPU one XLA process already uses every core of its node, so more actors per node only contend.
    """
    if gpus_per_worker > 0:
        return max(1, int(ray.cluster_resources().get("GPU", 0) // gpus_per_worker))
    return max(1, sum(1 for n in ray.nodes() if n.get("Alive")))


# --------------------------------------------------------------------------------------- stage 1: detect


def detect_stage(batch: dict, face_index=None) -> dict:
    """Ray Data UDF: load and detect each input; landmarks f32[N,478,3], size, and the error or notes."""
    from .bulk import Backend

    notes: list[list[str]] = []
    detect = Backend().detect(lambda msg: notes[-1].append(msg), face_index)
    n = len(batch["source"])
    lms, hw, errors = np.zeros((n, 478, 3), np.float32), np.zeros((n, 2), np.int64), [""] * n
    for i, (src, path) in enumerate(zip(batch["source"], batch["path"], strict=True)):
        notes.append([])
        try:
            image, conv = default_loader(Path(path))
            notes[-1] += [f"note: {src}: {c}" for c in conv]
            lms[i] = np.asarray(detect(image, str(src)), np.float32)
            hw[i] = image.shape[:2]
        except AffectsynthError as e:
            errors[i] = e.problem
    return {
        "source": batch["source"],
        "landmarks": lms,
        "hw": hw,
        "error": np.array(errors, object),
        "notes": np.array(["\n".join(n) for n in notes], object),
    }


# ------------------------------------------------------------------------------------ stage 2: synthesis


class SynthesisActor:
    """Ray Data actor: the model and its compiled program, kept for the job; one planned batch per call."""

    def __init__(self, model: list, options: dict, out: str, seed: int, ext: str):
        import ray

        from .bulk import Backend

        backend = Backend()
        self.synth = backend.synth(ray.get(model[0]), backend.options(**options))
        self.out, self.seed, self.ext = Path(out), seed, ext
        self.cache = OrderedDict()  # the last few photos, as the local engine keeps them

    def __call__(self, batch: dict) -> dict:
        return {"result": np.array([self.one(spec) for spec in batch["spec"]], object)}

    def one(self, spec: bytes) -> bytes:
        """Synthesise and write one batch: pickled (rows, skipped, (pid, start, end)); an unexpected error
        skips the batch. The span (this actor's wall clock) lets benchmarks see Ray's gaps between batches."""
        t0 = time.time()
        b, faces, crop = pickle.loads(spec)
        report = AugmentReport()
        inputs = {it.path.resolve() for it in b.items}
        job = _Job(
            out=self.out, report=report, faces=faces, crops={b.shape: crop} if crop else {}, inputs=inputs,
            synth=self.synth, load=default_loader, seed=self.seed, ext=self.ext, cache=self.cache,
        )  # fmt: skip
        try:
            rows = job.write_batch(*job.dispatch(b))
        except Exception as e:  # noqa: BLE001 - one bad batch never stops the job; --resume redoes it
            reason = f"synthesis failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            rows = []
            report.skipped += [(s, reason) for s in dict.fromkeys(it.source for it in b.items[: b.valid])]
        return pickle.dumps((rows, report.skipped, (os.getpid(), t0, time.time())))


# ---------------------------------------------------------------------------------------------- driver


def run_augment_ray(
    sources: Sequence[Path],
    out_dir,
    classes: Sequence[tuple[int, float, float]],
    *,
    model,
    options: dict,
    crop: Callable | None = None,
    face_index=None,
    input_dir=None,
    per_class: int = 1,
    batch_size: int = 8,
    max_batch_pixels: int = 64_000_000,
    resume: bool = False,
    seed: int = 0,
    ext: str = ".png",
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    progress: Callable | None = None,
    note: Callable = lambda msg: None,
    on_batch: Callable | None = None,
) -> AugmentReport:
    """``run_augment`` on the Ray this process is connected to (see ``ray_session``); same arguments, plus:

    Args:
        model: the loaded model, shipped once to every synthesis actor.
        options: ``SynthesisOptions`` keyword arguments (the actors build their own).
        workers: synthesis actors (default: ``default_workers``).
        gpus_per_worker: GPUs each synthesis actor reserves (0: CPU).
        on_batch: ``on_batch(batch, (actor pid, start, end))`` per finished batch (benchmarks).
    """
    import ray

    from ..io import atomic_write_bytes

    out = Path(out_dir)
    report = AugmentReport(labels_path=out / "labels.csv", skipped_path=out / "skipped.csv")
    _check_job(sources, out, classes, per_class, ext)
    ensure_output_dir(out)
    done = _resume_state(report, resume, note)
    keys_of = {source_key(s, input_dir): Path(s) for s in sources}
    pending = _pending_items(keys_of, classes, per_class, done, report)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
    faces = _detect_all(pending, keys_of, face_index, report, progress, note)
    _write_skipped(report, atomic_write_bytes)
    items, batches, crops = plan_synthesis(pending, faces, crop, batch_size, max_batch_pixels)
    if not batches:
        return report
    specs = [
        {"spec": pickle.dumps((b, {it.source: faces[it.source] for it in b.items}, crops.get(b.shape)))}
        for b in batches
    ]
    n_workers = workers or default_workers(ray, gpus_per_worker)
    # the driver holds the model's reference for the whole job, so a restarted actor still finds it (a
    # reference inside a list is passed as is, not resolved)
    model_ref = [ray.put(model)]
    blocks = min(len(specs), max(-(-len(specs) // BATCHES_PER_BLOCK), 4 * n_workers))  # all actors busy
    results = ray.data.from_items(specs, override_num_blocks=blocks).map_batches(
        SynthesisActor,
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=n_workers),
        num_cpus=1,
        num_gpus=gpus_per_worker or None,
        fn_constructor_kwargs=dict(model=model_ref, options=options, out=str(out), seed=seed, ext=ext),
    )
    bar = progress(len(items), "images") if progress is not None else None
    try:
        for b, row in zip(batches, results.iter_rows(), strict=True):
            rows, skipped, span = pickle.loads(row["result"])
            _record_batch(report, b, rows, skipped, note)
            if on_batch is not None:
                on_batch(b, span)
            if bar is not None:
                bar.update(b.valid)
    finally:
        if bar is not None:
            bar.close()
        _write_skipped(report, atomic_write_bytes)
    return report


def _record_batch(report: AugmentReport, b, rows: list, skipped: list, note: Callable) -> None:
    """What the local engine's ``_Job.finish`` does with a finished batch, on the driver."""
    report.batches += 1
    report.compiled_shapes.add((b.shape, len(b.items)))
    if rows:
        _append_rows(report.labels_path, LABEL_FIELDS, rows)
    report.written += len(rows)
    for s, reason in skipped:
        if (s, reason) not in report.skipped:
            report.skipped.append((s, reason))
            note(f"skipped: {s}: {reason}")


def _detect_all(pending: dict, keys_of: dict, face_index, report: AugmentReport, progress, note) -> dict:
    """Stage 1 on Ray: source -> (landmarks, (H, W)) for inputs with work left; failures skipped."""
    import ray

    if not pending:
        return {}
    rows = [{"source": s, "path": str(keys_of[s])} for s in pending]
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 64)).map_batches(
        detect_stage, batch_size=8, batch_format="numpy", fn_kwargs={"face_index": face_index}, num_cpus=1
    )
    faces: dict = {}
    bar = progress(len(rows), "faces") if progress is not None else None
    for r in ds.iter_rows():
        src = str(r["source"])
        for msg in filter(None, str(r["notes"]).split("\n")):
            note(msg)
        if r["error"]:
            report.skipped.append((src, str(r["error"])))
            note(f"skipped: {src}: {r['error']}")
            del pending[src]
        else:
            faces[src] = (np.asarray(r["landmarks"], np.float32), tuple(int(x) for x in r["hw"]))
            report.prepared += 1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return faces
