"""``augment --engine ray``: the augmentation job of ``cli.augment`` on Ray, for clusters and GPUs.

The driver does what the local engine does before synthesis (list inputs, read the ``--resume`` state, work
items, one static crop per padded shape, the same fixed-size batches per ``listing_chunks`` chunk) so the
two engines give the same file names, the same pixels and the same labels rows for a seed, and either can
finish the other's job. The job streams through the listing one chunk (``PLAN_CHUNK_INPUTS`` inputs) at a
time, so the driver's memory does not grow with the job:

1. face detection: a Ray Data CPU task stage over the chunk's inputs with work left, returning landmarks
   (the next chunk's detection runs while this chunk is synthesised);
2. synthesis: a pool of Ray actors (``--workers``, ``--gpus-per-worker`` each) that hold the model and
   their compiled program for the whole job; each call takes one planned batch, writes its images straight
   into OUTPUT (temp + rename, so OUTPUT must be shared storage on a cluster) and returns labels rows. The
   driver keeps one batch in flight per actor.

The driver appends the rows (fsynced) to ``labels.csv`` in batch order as results come back, only after
their images are in place, and lists bad inputs in ``skipped.csv``. An actor that dies (its process killed,
its node lost) is restarted by Ray and its batch rerun, at most ``MAX_RETRIES`` times; a batch that still
fails, or raises, is listed in ``skipped.csv`` with the reason and the job goes on (``--resume`` redoes it).
"""

import concurrent.futures
import contextlib
import logging
import os
import pickle
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import AffectsynthError
from .augment import (
    PLAN_CHUNK_INPUTS,
    AugmentReport,
    _append_rows,
    _check_job,
    _Job,
    _pending_items,
    _resume_state,
    _write_skipped,
    default_loader,
    listing_chunks,
    plan_synthesis,
)
from .inputs import LABEL_FIELDS, assign_stems, ensure_output_dir, source_key

LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
"""Object store of a local Ray (no ``--address``): only paths, landmarks and rows travel through it."""
MAX_RETRIES = 2
"""Times Ray reruns a batch whose synthesis actor died under it (the actors' ``max_task_retries``): a
preempted node or a crash is survived, a batch that kills its worker every time is skipped after this."""
MAX_RESTARTS = 16
"""Restarts of one synthesis actor (``max_restarts``); an actor past them is replaced by a fresh one."""
JAX_GPU_FRACTION = 0.75
"""JAX's default share of a GPU for one process (``XLA_PYTHON_CLIENT_MEM_FRACTION``), split between
actors that share a GPU (``--gpus-per-worker`` < 1)."""
DETECT_BATCH = 8
"""Inputs per face detection task call."""


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None):
    """Connect to the Ray at ``address`` (``auto``, ``ray://HOST:PORT``) or start a local one for the machine.

    Reuses a Ray already initialised in this process (tests); shuts down only what it started. Ray's own
    logging is kept to warnings and the workers' output stays in their log files, so the driver's progress
    bar stays readable.
    """
    import ray

    if ray.is_initialized():
        yield ray
        return
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
    with warnings.catch_warnings():  # Ray's helpers are fork + exec: JAX's fork warning does not apply
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(
                num_cpus=num_cpus or os.cpu_count() or 1,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                include_dashboard=False,
                **quiet,
            )
    try:
        yield ray
    finally:
        ray.shutdown()


def _quiet_ray_data() -> None:
    """No Ray Data progress bars or per-dataset banners on the driver (its logs still go to Ray's files)."""
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # and not the warning that they are off:
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(logging.WARNING)
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = True


def default_workers(ray, gpus_per_worker: float) -> int:
    """Synthesis actors when ``--workers`` is not given: one per GPU share, else one per node.

    On CPU one XLA process already uses every core of its node, so more actors per node only contend.
    """
    if gpus_per_worker > 0:
        return max(1, int(ray.cluster_resources().get("GPU", 0) // gpus_per_worker))
    return max(1, sum(1 for n in ray.nodes() if n.get("Alive")))


def actor_runtime_env(gpus_per_worker: float) -> dict:
    """The synthesis actors' ``runtime_env``: with a GPU share below one, several actors share a GPU, so
    each may use only its share of JAX's usual 75% (``XLA_PYTHON_CLIENT_MEM_FRACTION``) and allocates it as
    it needs it (no preallocation), instead of each taking 75% of the GPU at start."""
    if not 0 < gpus_per_worker < 1:
        return {}
    fraction = JAX_GPU_FRACTION * gpus_per_worker
    env = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{fraction:.4f}"}
    return {"env_vars": env}


# --------------------------------------------------------------------------------------- stage 1: detect


def detect_stage(batch: dict, face_index=None, backend=None) -> dict:
    """Ray Data UDF: load and detect each input; landmarks f32[N,478,3], size, and the error or notes."""
    from .bulk import Backend

    notes: list[list[str]] = []
    detect = (backend or Backend()).detect(lambda msg: notes[-1].append(msg), face_index)
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


def _detect_chunk(rows: list[dict], face_index, backend) -> list[tuple]:
    """Stage 1 for one chunk on Ray Data: (source, landmarks, (H, W), error, notes) per input, in order."""
    import ray

    if not rows:
        return []
    cpus = int(ray.cluster_resources().get("CPU", 1))
    tasks = max(1, min(cpus, -(-len(rows) // DETECT_BATCH)))  # as many blocks as tasks: Ray Data warns else
    ds = ray.data.from_items(rows, override_num_blocks=tasks).map_batches(
        detect_stage,
        batch_size=DETECT_BATCH,
        batch_format="numpy",
        fn_kwargs={"face_index": face_index, "backend": backend},
        num_cpus=0,  # runs beside the synthesis actors, which may hold every CPU: never wait for them
        compute=ray.data.TaskPoolStrategy(size=tasks),
    )
    out = []
    for r in ds.iter_rows():
        hw = tuple(int(x) for x in r["hw"])
        out.append((str(r["source"]), np.asarray(r["landmarks"], np.float32), hw, r["error"], r["notes"]))
    return out


# ------------------------------------------------------------------------------------ stage 2: synthesis


class SynthesisActor:
    """Ray actor: the model and its compiled program, kept for the job; one planned batch per call."""

    def __init__(self, model: list, options: dict, out: str, seed: int, ext: str, backend=None):
        import ray

        from .bulk import Backend

        backend = backend or Backend()
        self.synth = backend.synth(ray.get(model[0]), backend.options(**options))
        self.out, self.seed, self.ext = Path(out), seed, ext
        self.cache = OrderedDict()  # the last few photos, as the local engine keeps them

    def ping(self) -> int:
        """This actor's process id (the driver's liveness check after a batch failed)."""
        return os.getpid()

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
            report.skipped += _batch_skips(b, reason)
        return pickle.dumps((rows, report.skipped, (os.getpid(), t0, time.time())))


def _batch_skips(b, reason: str) -> list[tuple[str, str]]:
    """(source, reason) once per input of a batch's real items."""
    return [(s, reason) for s in dict.fromkeys(it.source for it in b.items[: b.valid])]


class _ActorPool:
    """Synthesis actors with one batch in flight each; results handed to ``record`` in submission order.

    Ray restarts an actor that dies and reruns its batch (``max_restarts``, ``max_task_retries``); a batch
    whose retries are spent comes back as the error, and an actor past its restarts is replaced.
    """

    def __init__(self, make: Callable, record: Callable):
        self.make, self.record = make, record
        self.free: deque = deque()
        self.inflight: dict = {}  # ref -> (seq, batch, actor)
        self.done: dict = {}  # seq -> (batch, pickled result or the error), waiting for earlier ones
        self.started = self.submitted = self.recorded = 0

    def start(self, n: int) -> None:
        """Create the ``n`` actors (once)."""
        while self.started < n:
            self.free.append(self.make())
            self.started += 1

    def submit(self, b, spec: bytes) -> None:
        while not self.free:
            self._collect()
        actor = self.free.popleft()
        self.inflight[actor.one.remote(spec)] = (self.submitted, b, actor)
        self.submitted += 1

    def drain(self) -> None:
        while self.inflight:
            self._collect()

    def _collect(self) -> None:
        """Wait for one batch; free its actor (replaced if dead); record finished batches in order."""
        import ray

        ready, _ = ray.wait(list(self.inflight), num_returns=1)
        seq, b, actor = self.inflight.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayActorError as e:
            result = e
            actor = self._alive(actor)
        except ray.exceptions.RayError as e:
            result = e
        self.free.append(actor)
        self.done[seq] = (b, result)
        while self.recorded in self.done:
            self.record(*self.done.pop(self.recorded))
            self.recorded += 1

    def _alive(self, actor):
        """``actor`` if it still answers (Ray restarted it), else a fresh one in its place."""
        import ray

        try:
            ray.get(actor.ping.remote())
            return actor
        except ray.exceptions.RayActorError:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            return self.make()


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
    max_retries: int = MAX_RETRIES,
    chunk_inputs: int = PLAN_CHUNK_INPUTS,
    backend=None,
    progress: Callable | None = None,
    note: Callable = lambda msg: None,
    on_batch: Callable | None = None,
) -> AugmentReport:
    """``run_augment`` on the Ray this process is connected to (see ``ray_session``); same arguments, plus:

    Args:
        model: the loaded model, shipped once to every synthesis actor.
        options: ``SynthesisOptions`` keyword arguments (the actors build their own).
        workers: synthesis actors (default: ``default_workers``).
        gpus_per_worker: GPUs each synthesis actor reserves (0: CPU; < 1: actors share a GPU).
        max_retries: reruns of a batch whose actor died (``MAX_RETRIES``).
        chunk_inputs: inputs per planning chunk (``PLAN_CHUNK_INPUTS``; the local engine's default too).
        backend: what the stages call (``cli.bulk.Backend`` by default; tests pass a cheap fake).
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
    report.inputs = len(keys_of)
    _quiet_ray_data()
    plan = _Plan(
        keys_of, classes, per_class, done, report, chunk_inputs, (crop, batch_size, max_batch_pixels)
    )
    bar = progress(plan.total, "images") if progress is not None and plan.total else None
    model_ref = [ray.put(model)]  # held by the driver for the job: restarted actors still find it
    remote = ray.remote(SynthesisActor).options(
        num_cpus=1, num_gpus=gpus_per_worker or None, max_restarts=MAX_RESTARTS,
        max_task_retries=max_retries, runtime_env=actor_runtime_env(gpus_per_worker) or None,
    )  # fmt: skip
    record = _Recorder(report, note, bar, on_batch, max_retries)
    n_workers = workers or default_workers(ray, gpus_per_worker)
    pool = _ActorPool(lambda: remote.remote(model_ref, options, str(out), seed, ext, backend), record)
    try:
        for faces, batches, crops in plan.chunks(face_index, backend, note, record.lost):
            pool.start(n_workers)  # once there is work for the actors
            for b in batches:
                spec = (b, {it.source: faces[it.source] for it in b.items}, crops.get(b.shape))
                pool.submit(b, pickle.dumps(spec))
            _write_skipped(report, atomic_write_bytes)
        pool.drain()
    finally:
        if bar is not None:
            bar.close()
        _write_skipped(report, atomic_write_bytes)
    return report


class _Recorder:
    """What the local engine's ``_Job.finish`` does with a finished batch, on the driver, in batch order."""

    def __init__(self, report: AugmentReport, note: Callable, bar, on_batch: Callable | None, retries: int):
        self.report, self.note, self.bar, self.on_batch, self.retries = report, note, bar, on_batch, retries

    def __call__(self, b, result) -> None:
        import ray

        if isinstance(result, ray.exceptions.RayActorError):
            reason = (
                f"synthesis worker died on this batch {self.retries + 1} time(s) ({type(result).__name__})"
            )
            rows, skipped, span = [], _batch_skips(b, reason), None
        elif isinstance(result, Exception):
            first = (str(result).strip().splitlines() or [""])[0]
            rows, skipped, span = (
                [],
                _batch_skips(b, f"synthesis failed: {type(result).__name__}: {first}"),
                None,
            )
        else:
            rows, skipped, span = pickle.loads(result)
        report = self.report
        report.batches += 1
        report.compiled_shapes.add((b.shape, len(b.items)))
        if rows:
            _append_rows(report.labels_path, LABEL_FIELDS, rows)
        report.written += len(rows)
        for s, reason in skipped:
            if (s, reason) not in report.skipped:
                report.skipped.append((s, reason))
                self.note(f"skipped: {s}: {reason}")
        if self.on_batch is not None and span is not None:
            self.on_batch(b, span)
        self.lost(b.valid)

    def lost(self, n: int) -> None:
        """``n`` items are settled (done, skipped or dropped with a bad input): move the bar on."""
        if self.bar is not None and n:
            self.bar.update(n)


class _Plan:
    """The job's work, one ``listing_chunks`` chunk at a time: items, detection, batches (bounded memory)."""

    def __init__(
        self, keys_of: dict, classes, per_class: int, done: set, report, chunk_inputs: int, batching
    ):
        self.keys_of, self.classes, self.per_class, self.done = keys_of, classes, per_class, done
        self.report, self.chunk_inputs, self.batching = report, chunk_inputs, batching
        self.stems = assign_stems(list(keys_of))
        wanted = {(int(c), k) for c, _, _ in classes for k in range(per_class)}
        already = sum(1 for s, c, k in done if s in keys_of and (c, k) in wanted)
        self.total = len(keys_of) * len(wanted) - already

    def chunks(self, face_index, backend, note: Callable, lost: Callable) -> Iterator[tuple]:
        """(faces, batches, crops) per chunk with work left; detection runs one chunk ahead, in a thread."""
        parts = (self._pending(c) for c in listing_chunks(list(self.keys_of), self.chunk_inputs))
        ex, ahead = concurrent.futures.ThreadPoolExecutor(1, "affectsynth-detect"), None
        try:
            for pending in parts:
                if not pending:
                    continue
                rows = [{"source": s, "path": str(self.keys_of[s])} for s in pending]
                nxt = (pending, ex.submit(_detect_chunk, rows, face_index, backend))
                if ahead is not None:
                    yield self._planned(*ahead, note, lost)
                ahead = nxt
            if ahead is not None:
                yield self._planned(*ahead, note, lost)
        finally:  # an interrupted job does not wait for the next chunk's detection
            ex.shutdown(wait=False, cancel_futures=True)

    def _pending(self, chunk: list[str]) -> dict:
        keys = {s: self.keys_of[s] for s in chunk}
        return _pending_items(keys, self.classes, self.per_class, self.done, self.report, self.stems)

    def _planned(self, pending: dict, detected, note: Callable, lost: Callable) -> tuple:
        """Record the chunk's detection (notes, skips) and plan its batches."""
        faces = {}
        for src, lms, hw, error, notes in detected.result():
            for msg in filter(None, str(notes).split("\n")):
                note(msg)
            if error:
                self.report.skipped.append((src, str(error)))
                note(f"skipped: {src}: {error}")
                lost(len(pending.pop(src)))
            else:
                faces[src] = (lms, hw)
                self.report.prepared += 1
        _, batches, crops = plan_synthesis(pending, faces, *self.batching)
        return faces, batches, crops
