"""``augment --engine ray``: the augmentation job of ``cli.augment`` on Ray Data, for clusters and GPUs.

The driver does what the local engine does before synthesis (list inputs, read the ``--resume`` state) and
the stages do the rest with the local engine's own code (work items, one static crop per padded shape, the
same fixed-size batches per ``listing_chunks`` chunk), so the two engines give the same file names, the
same pixels and the same labels rows for a seed, and either can finish the other's job. The whole job is
ONE Ray Data dataset, streamed, so the driver's memory does not grow with it:

1. read (``_ChunkSource``): one read task per ``PLAN_CHUNK_INPUTS`` chunk of the listing with work left;
2. ``plan_stage`` (CPU tasks, ``map_batches``): load and detect the chunk's inputs, plan its batches; one
   row per batch, after a row with the chunk's bad inputs and notes;
3. synthesis (``map_batches`` with ``SynthesisActor`` on an actor pool: ``--workers`` actors with
   ``--gpus-per-worker`` each, alive for the whole job, so each loads the model and compiles once): each
   call takes one planned batch, writes its images straight into OUTPUT (temp + rename, so OUTPUT must be
   shared storage on a cluster) and returns labels rows.

The driver reads the results in order (``iter_rows``, ``preserve_order``) and appends the rows (fsynced) to
``labels.csv`` only after their images are in place, and lists bad inputs in ``skipped.csv``. An actor that
dies (its process killed, its node lost) is restarted by Ray and its batch rerun, at most ``MAX_RETRIES``
times; every block holds one batch, so a batch that still fails is the only one lost: Ray Data drops its
block (``max_errored_blocks``), and the driver, which knows each chunk's items, lists the missing ones in
``skipped.csv`` with the reason (``--resume`` redoes them). A batch that raises is skipped in the actor.
"""

import contextlib
import logging
import os
import pickle
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

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
JAX_GPU_FRACTION = 0.75
"""JAX's default share of a GPU for one process (``XLA_PYTHON_CLIENT_MEM_FRACTION``), split between
actors that share a GPU (``--gpus-per-worker`` < 1)."""
_DATA_SETTINGS = dict(
    enable_progress_bars=False,  # the driver shows its own bar
    print_on_execution_start=False,
    max_errored_blocks=-1,  # a lost batch does not stop the job: the driver lists its items as skipped
    target_max_block_size=1,  # one row (one batch) per block, so a failing block loses that batch only
)
"""``DataContext`` settings for the job's dataset (restored afterwards)."""
_QUIET_LOGGERS = {
    "ray.data._internal.progress": logging.ERROR,  # not the warning that the bars are off
    "ray.data._internal.execution.streaming_executor": logging.WARNING,
    "ray.data._internal.execution.streaming_executor_state": logging.CRITICAL,  # dropped blocks: see above
}


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


@contextlib.contextmanager
def _data_context() -> Iterator[None]:
    """``_DATA_SETTINGS`` and in-order results on Ray Data's current context, and its chatty loggers quieted
    (its logs still go to Ray's files), for the job; everything is put back after it."""
    import ray

    c = ray.data.DataContext.get_current()
    saved = {k: getattr(c, k) for k in _DATA_SETTINGS}
    order, levels = c.execution_options.preserve_order, {}
    for k, v in _DATA_SETTINGS.items():
        setattr(c, k, v)
    c.execution_options.preserve_order = True
    for name, level in _QUIET_LOGGERS.items():
        levels[name] = logging.getLogger(name).level
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(c, k, v)
        c.execution_options.preserve_order = order
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


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


# ---------------------------------------------------------------------------------- read and plan stages


def _chunk_source(parts: list[tuple[int, bytes]]):
    """A lazy ``Datasource`` over the job's chunks: the driver holds only their pickled listings."""
    import pyarrow as pa
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class ChunkSource(Datasource):
        def estimate_inmemory_data_size(self):
            return sum(len(w) for _, w in parts)

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            def task(c: int, work: bytes) -> ReadTask:
                meta = BlockMetadata(num_rows=1, size_bytes=len(work), input_files=None, exec_stats=None)
                return ReadTask(lambda: [pa.table({"chunk": [c], "work": [work]})], meta)

            return [task(c, w) for c, w in parts]

        def get_name(self):
            return "Chunks"

    return ChunkSource()


def plan_stage(batch: dict, classes, per_class: int, batching, face_index=None, backend=None) -> dict:
    """Ray Data UDF, one listing chunk per row: detect its inputs with work left and plan its batches.

    Emits (pickled, in ``msg``) one ``("chunk", c, (skips, notes, items dropped))`` row, then one
    ``("batch", c, spec)`` row per planned batch, spec = pickled (batch, faces, crop) for ``SynthesisActor``.
    """
    from .bulk import Backend

    detect_of = (backend or Backend()).detect
    msgs = []
    for c, work in zip(batch["chunk"], batch["work"], strict=True):
        keys, stems, done = pickle.loads(work)
        report = AugmentReport()
        pending = _pending_items(keys, classes, per_class, done, report, stems)
        notes: list[str] = []
        detect = detect_of(notes.append, face_index)
        faces, dropped = {}, 0
        for src in list(pending):
            try:
                image, conv = default_loader(Path(keys[src]))
                notes.extend(f"note: {src}: {m}" for m in conv)
                faces[src] = (np.asarray(detect(image, src), np.float32), image.shape[:2])
            except AffectsynthError as e:
                report.skipped.append((src, e.problem))
                dropped += len(pending.pop(src))
        _, batches, crops = plan_synthesis(pending, faces, *batching)
        msgs.append(pickle.dumps(("chunk", int(c), (report.skipped, notes, dropped))))
        for b in batches:
            spec = pickle.dumps((b, {it.source: faces[it.source] for it in b.items}, crops.get(b.shape)))
            msgs.append(pickle.dumps(("batch", int(c), spec)))
    return {"msg": np.array(msgs, object)}


# ------------------------------------------------------------------------------------ synthesis stage


class SynthesisActor:
    """Ray Data callable class: the model and its compiled program, kept for the job; one batch per call."""

    def __init__(self, model: list, options: dict, out: str, seed: int, ext: str, backend=None):
        import ray

        from .bulk import Backend

        backend = backend or Backend()
        self.synth = backend.synth(ray.get(model[0]), backend.options(**options))
        self.out, self.seed, self.ext = Path(out), seed, ext
        self.cache = OrderedDict()  # the last few photos, as the local engine keeps them

    def __call__(self, batch: dict) -> dict:
        """Synthesise the ``"batch"`` rows (``("done", c, (shape, size, settled items), result)``); pass the
        others on."""
        out = []
        for raw in batch["msg"]:
            kind, c, spec = pickle.loads(raw)
            if kind != "batch":
                out.append(raw)
                continue
            b = pickle.loads(spec)[0]
            settled = [(it.source, it.class_id, it.k) for it in b.items[: b.valid]]
            out.append(pickle.dumps(("done", c, (b.shape, len(b.items), settled), self.one(spec))))
        return {"msg": np.array(out, object)}

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
        except (Exception, SystemExit) as e:  # noqa: BLE001 - one bad batch never stops the job
            # (--resume redoes it); an actor that exits on purpose is never restarted, and Ray Data 2.60
            # then waits for it forever (ray-project/ray#62746)
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
        max_retries: reruns of a batch whose actor died, or of a chunk whose detection task died
            (``MAX_RETRIES``).
        chunk_inputs: inputs per planning chunk (``PLAN_CHUNK_INPUTS``; the local engine's default too).
        backend: what the stages call (``cli.bulk.Backend`` by default; tests pass a cheap fake).
        on_batch: ``on_batch(batch, (actor pid, start, end))`` per finished batch (benchmarks); ``batch``
            has the batch's padded ``shape``, ``size`` and ``valid`` (real items).
    """
    import ray

    from ..io import atomic_write_bytes

    out = Path(out_dir)
    report = AugmentReport(labels_path=out / "labels.csv", skipped_path=out / "skipped.csv")
    _check_job(sources, out, classes, per_class, ext)
    ensure_output_dir(out)
    keys_of = {source_key(s, input_dir): Path(s) for s in sources}
    done = _resume_state(report, resume, note, keys_of, classes, per_class)
    report.inputs, report.already_done = len(keys_of), int(done.sum())
    report.pending = done.size - report.already_done
    book = _Books(report, note, max_retries, on_batch, (keys_of, classes, per_class, done, chunk_inputs))
    if not book.chunks:
        return report
    bar = progress(report.pending, "images") if progress is not None else None
    plan_kw = dict(classes=classes, per_class=per_class, face_index=face_index, backend=backend,
                   batching=(crop, batch_size, max_batch_pixels))  # fmt: skip
    model_ref = [ray.put(model)]  # held by the driver for the job: restarted actors still find it
    actor_kw = dict(model=model_ref, options=options, out=str(out), seed=seed, ext=ext, backend=backend)
    n_workers = workers or default_workers(ray, gpus_per_worker)
    try:
        with _data_context(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)  # Ray's kwargs for the actors
            ds = _job_dataset(ray, book, plan_kw, actor_kw, n_workers, gpus_per_worker, max_retries)
            for r in ds.iter_rows():
                book.take(pickle.loads(r["msg"]), bar)
        book.close_upto(None, bar)
    finally:
        if bar is not None:
            bar.close()
        _write_skipped(report, atomic_write_bytes)
    return report


def _job_dataset(ray, book, plan_kw: dict, actor_kw: dict, workers: int, gpus: float, retries: int):
    """The job's lazy dataset: chunk reads -> ``plan_stage`` tasks -> ``SynthesisActor`` pool.

    Reads and planning take no CPU of their own (num_cpus=0), so they run beside actors that may hold every
    CPU; each actor has one batch at a time, so an actor's death costs a retry to its own batch only.
    """
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.read_datasource(
        _chunk_source(book.parts()), override_num_blocks=len(book.chunks), num_cpus=0
    )
    return ds.map_batches(
        plan_stage, batch_size=1, batch_format="numpy", num_cpus=0, fn_kwargs=plan_kw,
        compute=ray.data.TaskPoolStrategy(size=min(cpus, len(book.chunks))),
        max_retries=retries,  # Ray Data's default (-1) reruns a crashing detection forever
    ).map_batches(
        SynthesisActor, batch_size=1, batch_format="numpy", fn_constructor_kwargs=actor_kw,
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
        num_cpus=1, num_gpus=gpus or None, runtime_env=actor_runtime_env(gpus) or None,
        max_restarts=-1,  # Ray Data 2.60 never replaces an actor past its restarts: its pool would hang
        max_task_retries=retries,
    )  # fmt: skip


class _Books:
    """The driver's accounts: each chunk's results recorded in order as they stream in, and when a chunk
    is over, its items that never came back listed as skipped (their batch's block was dropped)."""

    def __init__(self, report: AugmentReport, note: Callable, retries: int, on_batch, job: tuple):
        self.report, self.note, self.retries, self.on_batch = report, note, retries, on_batch
        self.keys_of, self.classes, self.per_class, self.done, size = job
        self.stems = assign_stems(list(self.keys_of))
        keys = list(self.keys_of)
        starts = range(0, len(keys), size)
        self.chunks = [  # (chunk number, first input, its keys) of the chunks with work left
            (c, i, chunk)
            for c, (i, chunk) in enumerate(zip(starts, listing_chunks(keys, size), strict=True))
            if not self.done[i : i + len(chunk)].all()
        ]
        self.next = 0  # index in self.chunks of the first chunk not closed
        self.skipped = set(report.skipped)  # what report.skipped holds, for a constant-time duplicate check
        self.seen: dict = {"planned": False, "items": set(), "bad": set()}

    def _work(self, i: int, chunk: list) -> tuple[dict, dict, np.ndarray]:
        keys = {s: self.keys_of[s] for s in chunk}
        return keys, {s: self.stems[s] for s in chunk}, self.done[i : i + len(chunk)]

    def parts(self) -> list[tuple[int, bytes]]:
        """What each read task gets: (chunk number, pickled (inputs, stems, done rows))."""
        return [(c, pickle.dumps(self._work(i, chunk))) for c, i, chunk in self.chunks]

    def take(self, msg: tuple, bar) -> None:
        """Record one result row: a chunk's detection outcome or a finished batch."""
        kind, c = msg[0], msg[1]
        self.close_upto(c, bar)
        report, seen = self.report, self.seen
        if kind == "chunk":
            skips, notes, dropped = msg[2]
            for m in notes:
                self.note(m)
            seen["planned"] = True
            for s, reason in skips:
                self._skip(s, reason)
                seen["bad"].add(s)
            _advance(bar, dropped)
            return
        (shape, size, settled), result = msg[2], msg[3]
        rows, skipped, span = pickle.loads(result)
        report.batches += 1
        report.compiled_shapes.add((shape, size))
        if rows:
            _append_rows(report.labels_path, LABEL_FIELDS, rows)
        report.written += len(rows)
        for s, reason in skipped:
            self._skip(s, reason)
        seen["items"].update(settled)
        if self.on_batch is not None:
            self.on_batch(SimpleNamespace(shape=shape, size=size, valid=len(settled)), span)
        _advance(bar, len(settled))

    def close_upto(self, c: int | None, bar) -> None:
        """Close every chunk before chunk number ``c`` (all if None): list its missing items as skipped."""
        while self.next < len(self.chunks) and (c is None or self.chunks[self.next][0] < c):
            _, i, chunk = self.chunks[self.next]
            keys, stems, done = self._work(i, chunk)
            pending = _pending_items(keys, self.classes, self.per_class, done, AugmentReport(), stems)
            seen, lost = self.seen, {}
            for src, items in pending.items():
                if src not in seen["bad"]:
                    self.report.prepared += 1 if seen["planned"] else 0
                    for it in items:
                        if (it.source, it.class_id, it.k) not in seen["items"]:
                            lost[src] = lost.get(src, 0) + 1
            reason = (
                f"synthesis worker died on this batch {self.retries + 1} time(s)"
                if seen["planned"]
                else f"face detection of its chunk died {self.retries + 1} time(s)"
            )
            for src, n in lost.items():
                self._skip(src, reason)
                _advance(bar, n)
            self.next += 1
            self.seen = {"planned": False, "items": set(), "bad": set()}

    def _skip(self, src: str, reason: str) -> None:
        if (src, reason) not in self.skipped:  # a list scan here is quadratic in a job's skips
            self.skipped.add((src, reason))
            self.report.skipped.append((src, reason))
            self.note(f"skipped: {src}: {reason}")


def _advance(bar, n: int) -> None:
    """``n`` items are settled (done, skipped or dropped with a bad input): move the bar on."""
    if bar is not None and n:
        bar.update(n)
