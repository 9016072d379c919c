"""Augmentation of a folder: every photo x populated V-A class, a resumable labels manifest, skips."""

import array
import contextlib
import csv
import dataclasses
import hashlib
import io
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import AffectsynthError, OutputError
from .inputs import (
    LABEL_FIELDS,
    SKIP_FIELDS,
    Batch,
    assign_stems,
    ensure_output_dir,
    output_name,
    pad_image,
    padded_shape,
    plan_batches,
    safe_output_path,
    source_key,
)

PLAN_CHUNK_INPUTS = 1024
"""Inputs per planning chunk: every engine cuts the input listing into consecutive chunks of this many
inputs and batches each chunk apart, so the plan (and the memory that holds it) is bounded however large the
job, and two engines given the same listing give the same batches."""

# ------------------------------------------------------------------------------------------ manifest


def _append_rows(path: Path, fields: Sequence[str], rows: Iterable[dict]) -> None:
    """Append CSV rows (header first if the file is new) and fsync: each call is durable when it returns."""
    new = not path.exists() or path.stat().st_size == 0
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    if new:
        w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in fields})
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())


def _csv_bytes(fields: Sequence[str], rows: Iterable[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r[k] for k in fields})
    return buf.getvalue().encode("utf-8")


def _parse_label_row(r: dict) -> dict | None:
    try:
        out = {k: r[k] for k in LABEL_FIELDS}
        out["class_id"], out["sample"] = int(out["class_id"]), int(out["sample"])
        for k in ("valence", "arousal", "fit_rms", "target_valence", "target_arousal"):
            out[k] = float(out[k])
    except (KeyError, TypeError, ValueError):
        return None
    return out if out["source"] and out["output"] else None


def read_manifest(out_dir, name: str = "labels.csv") -> tuple[list[dict], int]:
    """Rows of a job's ``labels.csv`` that are complete, well formed, with their image inside ``out_dir``.

    Repairs the file in place (atomically) when anything was dropped: a torn last line left by a crash, a
    row whose image is gone, a row naming a path outside ``out_dir``, or a duplicate. Returns (rows, dropped).
    Holds every row: a large job's resume uses ``scan_manifest``, which does not.
    """
    rows: list[dict] = []
    return rows, scan_manifest(out_dir, rows.append, name)


def scan_manifest(out_dir, visit: Callable[[dict], None], name: str = "labels.csv") -> int:
    """``read_manifest`` in bounded memory: ``visit(row)`` per kept row, in file order; returns ``dropped``.

    Two streaming passes: the first checks each row and keeps a 64-bit hash of its (source, class, sample)
    key (9 bytes a row in all); the first row of each key is kept. A hash collision can only drop a valid
    row, so that item is redone (same name, same pixels), never lost. The second pass visits the kept rows
    and, when any was dropped, rewrites the file with them verbatim (temp file + rename).
    """
    from ..io import atomic_open

    path = Path(out_dir) / name
    if not path.exists():
        return 0
    hashes, valid = array.array("Q"), bytearray()
    for row in _manifest_rows(path):
        ok = row is not None
        if ok:
            try:
                ok = safe_output_path(out_dir, row["output"]).is_file()
            except OutputError:
                ok = False
        key = f"{row['source']}\0{row['class_id']}\0{row['sample']}" if ok else ""
        hashes.append(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little"))
        valid.append(ok)
    good = np.flatnonzero(np.frombuffer(valid, np.uint8))
    keep = np.zeros(len(valid), bool)
    keep[good[np.unique(np.frombuffer(hashes, np.uint64)[good], return_index=True)[1]]] = True
    dropped = len(keep) - int(keep.sum()) + _torn(path)
    out = atomic_open(path, "w", encoding="utf-8", newline="") if dropped else contextlib.nullcontext()
    with out as f:
        w = None if f is None else csv.DictWriter(f, fieldnames=list(LABEL_FIELDS), lineterminator="\n")
        if w is not None:
            w.writeheader()
        for kept, (row, raw) in zip(keep, _manifest_rows(path, raw=True), strict=True):
            if kept:
                visit(row)
                if w is not None:
                    w.writerow({k: raw[k] for k in LABEL_FIELDS})  # kept rows verbatim
    return dropped


def _torn(path: Path) -> bool:
    """Whether the file's last line lacks its newline (a crash mid-append)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _manifest_rows(path: Path, raw: bool = False) -> Iterator:
    """Parsed rows (None where malformed) of a labels file, streamed, a torn last line left out; with
    ``raw``, (parsed, raw dict) pairs."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        lines = (line for line in f if line.endswith("\n"))
        for r in csv.DictReader(lines):
            yield (_parse_label_row(r), r) if raw else _parse_label_row(r)


# ----------------------------------------------------------------------------------------- augmentation


@dataclasses.dataclass(frozen=True)
class WorkItem:
    """One output image: input ``source`` (manifest key) with a target of class ``class_id``, sample ``k``."""

    source: str
    path: Path
    stem: str
    class_id: int
    k: int
    target: tuple[float, float]


@dataclasses.dataclass
class AugmentReport:
    """What a job did: counts, skipped inputs with reasons, where the manifests are."""

    written: int = 0
    already_done: int = 0
    pending: int = 0
    inputs: int = 0
    prepared: int = 0
    batches: int = 0
    compiled_shapes: set = dataclasses.field(default_factory=set)
    skipped: list = dataclasses.field(default_factory=list)  # (source, reason)
    labels_path: Path | None = None
    skipped_path: Path | None = None
    dropped_rows: int = 0

    @property
    def bad_inputs(self) -> int:
        return len({s for s, _ in self.skipped})


def item_key(source: str, class_id: int, k: int, seed: int = 0) -> np.ndarray:
    """A raw PRNG key u32[2] from (seed, source, class, k) only: samples do not depend on batching."""
    d = hashlib.sha256(f"{int(seed)}|{source}|{int(class_id)}|{int(k)}".encode()).digest()
    return np.frombuffer(d[:8], np.uint32).copy()


def default_loader(path):
    """``io.load_image`` with its notes: (image u8[H, W, 3], list of conversion notes). The photo's bytes,
    as ``affectsynth synth`` reads them: the batch's program and results are then those of ``synth``
    (bytes in, bytes out, each pixel what saving the float result writes), and a photo held in memory
    (the job's cache, a padded batch) takes a quarter of the room a float copy would."""
    from ..io import load_image

    image, info = load_image(path, return_info=True, dtype=np.uint8)
    return image, list(info.conversions)


def run_augment(
    sources: Sequence[Path],
    out_dir,
    classes: Sequence[tuple[int, float, float]],
    *,
    synth: Callable,
    detect: Callable,
    load: Callable = default_loader,
    crop: Callable | None = None,
    input_dir=None,
    per_class: int = 1,
    batch_size: int = 8,
    max_batch_pixels: int = 64_000_000,
    resume: bool = False,
    seed: int = 0,
    ext: str = ".png",
    progress: Callable | None = None,
    note: Callable = lambda msg: None,
    chunk_inputs: int = PLAN_CHUNK_INPUTS,
) -> AugmentReport:
    """Write ``per_class`` synthetic images per (input, class) into ``out_dir`` with ``labels.csv``.

    Args:
        sources: input image files (never written).
        out_dir: output folder (created); must not be an input's folder.
        classes: (class_id, target valence, target arousal) per class to synthesise.
        synth: ``synth(images [B,H,W,3], landmarks f32[B,478,3], targets f32[B,2], keys u32[B,2], crop)``
            returning an object with ``images`` [B,H,W,3], ``fit_rms`` f32[B] and ``label`` f32[B,2];
            images as ``load`` gives them (``default_loader``: uint8, and bytes come back).
        detect: ``detect(image, source) -> f32[478, 3]`` raising ``AffectsynthError`` for no/bad face.
        load: ``load(path) -> (image, notes)`` raising ``AffectsynthError`` for a bad file.
        crop: ``crop(landmarks f32[N,478,3], H, W) -> (h, w)``, one static crop per padded shape (bounds
            compilation); None lets ``synth`` choose.
        input_dir: manifest names are relative to it when given.
        per_class: samples per (input, class); keys are deterministic per (seed, input, class, k).
        resume: continue a job from its ``labels.csv``; without it an existing non-empty one is an error.
        progress: ``progress(total, desc) -> object`` with ``update(n)`` and ``close()`` (e.g. tqdm).
        note: receives one-line notes (conversions, several faces, skips).
        chunk_inputs: inputs per planning chunk (``PLAN_CHUNK_INPUTS``; see ``listing_chunks``).

    Labels rows are appended (and fsynced) per batch, only after that batch's images are renamed into place,
    so an interrupted job resumes without redoing or duplicating work. Bad inputs are listed in
    ``skipped.csv`` with reasons and the job goes on.
    """
    from ..io import atomic_write_bytes

    out = Path(out_dir)
    report = AugmentReport(labels_path=out / "labels.csv", skipped_path=out / "skipped.csv")
    _check_job(sources, out, classes, per_class, ext)
    ensure_output_dir(out)
    keys_of = {source_key(s, input_dir): Path(s) for s in sources}
    done = _resume_state(report, resume, note, keys_of, classes, per_class)
    pending = _pending_items(keys_of, classes, per_class, done, report)
    faces = _prepare_faces(pending, keys_of, load, detect, report, progress, note)
    _write_skipped(report, atomic_write_bytes)

    job = _Job(out, report, faces, {}, {Path(s).resolve() for s in sources}, synth, load, seed, ext)
    total = sum(len(v) for v in pending.values())
    bar = progress(total, "images") if progress is not None and total else None
    try:
        for chunk in listing_chunks(list(keys_of), chunk_inputs):
            part = {s: pending[s] for s in chunk if s in pending}
            _, batches, job.crops = plan_synthesis(part, faces, crop, batch_size, max_batch_pixels)
            job.run(batches, bar)
    finally:
        if bar is not None:
            bar.close()
        _write_skipped(report, atomic_write_bytes)
    return report


def listing_chunks(keys: Sequence[str], size: int = PLAN_CHUNK_INPUTS) -> Iterator[list[str]]:
    """Consecutive chunks of ``size`` input keys of the job's listing (done and bad inputs included, so the
    cut depends on the listing alone, not on what is left or what fails)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for i in range(0, len(keys), size):
        yield list(keys[i : i + size])


def plan_synthesis(pending: dict, faces: dict, crop, batch_size: int, max_batch_pixels: int):
    """(items, batches, crops): the work in order, its fixed-size batches, one static crop per padded shape.

    Shared by every engine, which call it on each ``listing_chunks`` chunk in turn, so that the same job
    gives the same batches (and so the same pixels) anywhere.
    """
    items = [it for src in pending for it in pending[src]]
    shape_of = lambda it: padded_shape(*faces[it.source][1])
    batches = plan_batches(items, shape_of, batch_size=batch_size, max_batch_pixels=max_batch_pixels)
    crops = {}
    if crop is not None:  # one static crop per padded shape, from all the faces of that shape
        for shape in {b.shape for b in batches}:
            lms = np.stack([faces[it.source][0] for it in items if shape_of(it) == shape])
            crops[shape] = tuple(int(c) for c in crop(lms, *shape))
    return items, batches, crops


def _check_job(sources: Sequence[Path], out: Path, classes, per_class: int, ext: str) -> None:
    """Reject bad job settings before any work: one-line ``AffectsynthError``s."""
    if per_class < 1:
        raise AffectsynthError("--per-class", f"must be >= 1, got {per_class}")
    if not classes:
        raise AffectsynthError("--classes", "no classes selected")
    if ext not in (".png", ".jpg", ".webp"):
        raise OutputError(ext, "output format must be .png, .jpg or .webp")
    for s in {Path(s).resolve() for s in sources}:
        if s.parent == out.resolve():
            raise OutputError(out, f"output folder holds the input {s.name}; use a separate folder")


def _resume_state(
    report: AugmentReport, resume: bool, note: Callable, keys_of: dict, classes, per_class: int
) -> np.ndarray:
    """Which work items ``labels.csv`` already holds: bool[inputs, classes, per_class] in the order of
    ``keys_of`` and ``classes`` (all False unless ``resume``).

    One byte per item of the job, however many are done: the rows themselves are streamed, not kept
    (``scan_manifest``). Rows of inputs, classes or samples outside this job are ignored, as before.
    """
    labels_path = report.labels_path
    if labels_path.exists() and labels_path.stat().st_size > 0 and not resume:
        raise OutputError(
            labels_path, "exists: pass --resume to continue that job, or use a new output folder"
        )
    done = np.zeros((len(keys_of), len(classes), per_class), bool)
    if not resume:
        report.dropped_rows = 0
        return done
    index = {s: i for i, s in enumerate(keys_of)}
    pos = {int(c): j for j, (c, _, _) in enumerate(classes)}

    def visit(r: dict) -> None:
        i, j, k = index.get(r["source"]), pos.get(r["class_id"]), r["sample"]
        if i is not None and j is not None and 0 <= k < per_class:
            done[i, j, k] = True

    report.dropped_rows = scan_manifest(labels_path.parent, visit, labels_path.name)
    if report.dropped_rows:
        note(f"note: {labels_path}: dropped {report.dropped_rows} incomplete or invalid row(s); redoing them")
    return done


def _pending_items(
    keys_of: dict, classes, per_class: int, done: np.ndarray, report: AugmentReport, stems: dict | None = None
) -> dict:
    """Work left per input: source -> [WorkItem], skipping what ``done`` (``_resume_state``, rows in the
    order of ``keys_of``) marks; counts into ``report``.

    ``stems`` (from ``assign_stems`` over the whole listing) lets a caller ask for one chunk at a time (with
    that chunk's rows of ``done``); the counts then add up over the calls.
    """
    stems = assign_stems(list(keys_of)) if stems is None else stems
    pending: dict[str, list[WorkItem]] = {}
    report.already_done += int(done.sum())
    for i, (src, path) in enumerate(keys_of.items()):
        for j, (cid, v, a) in enumerate(classes):
            for k in range(per_class):
                if not done[i, j, k]:
                    pending.setdefault(src, []).append(
                        WorkItem(src, path, stems[src], int(cid), k, (float(v), float(a)))
                    )
    report.inputs = max(report.inputs, len(keys_of))
    report.pending += sum(len(v) for v in pending.values())
    return pending


def _prepare_faces(pending: dict, keys_of: dict, load, detect, report: AugmentReport, progress, note) -> dict:
    """Load and detect once per input with work left: source -> (landmarks, (H, W)); images are not kept.

    An input that fails (bad file, no face) is recorded in ``report.skipped`` and removed from ``pending``.
    """
    faces: dict[str, tuple[np.ndarray, tuple[int, int]]] = {}
    bar = progress(len(pending), "faces") if progress is not None and pending else None
    for src in list(pending):
        if bar is not None:
            bar.update(1)
        try:
            image, notes = load(keys_of[src])
            for n in notes:
                note(f"note: {src}: {n}")
            faces[src] = (np.asarray(detect(image, src), np.float32), image.shape[:2])
            report.prepared += 1
        except AffectsynthError as e:
            report.skipped.append((src, e.problem))
            note(f"skipped: {src}: {e.problem}")
            del pending[src]
    if bar is not None:
        bar.close()
    return faces


@dataclasses.dataclass
class _Job:
    """The synthesis phase of ``run_augment``: batches dispatched and written one behind the other."""

    out: Path
    report: AugmentReport
    faces: dict  # source -> (landmarks, (H, W))
    crops: dict  # padded shape -> static crop
    inputs: set  # resolved input paths (never overwritten)
    synth: Callable
    load: Callable
    seed: int
    ext: str
    cache: OrderedDict = dataclasses.field(default_factory=OrderedDict)

    def run(self, batches: Sequence[Batch], bar) -> None:
        """One batch in flight: batch i computes while batch i-1's images are encoded and written."""
        inflight = None
        for b in batches:
            try:
                started = self.dispatch(b)
            except BaseException:
                if inflight is not None:  # keep the finished work of the previous batch
                    self.finish(*inflight, bar)
                raise
            if inflight is not None:
                self.finish(*inflight, bar)
            inflight = started
        if inflight is not None:
            self.finish(*inflight, bar)

    def dispatch(self, b: Batch):
        """Load and pad the batch's photos and start the synthesis (JAX returns before it is done)."""
        imgs, gone = [], set()
        for it in b.items:
            try:
                imgs.append(pad_image(_cached(self.cache, it, self.load)))
            except AffectsynthError as e:  # changed or removed since it was detected
                if it.source not in gone:
                    self.report.skipped.append((it.source, e.problem))
                gone.add(it.source)
                imgs.append(None)
        if len(gone) == len({it.source for it in b.items}):
            return b, None, gone
        stand_in = next(x for x in imgs if x is not None)
        imgs = np.stack([stand_in if x is None else x for x in imgs])
        lms = np.stack([self.faces[it.source][0] for it in b.items])
        targets = np.array([it.target for it in b.items], np.float32)
        keys = np.stack([item_key(it.source, it.class_id, it.k, self.seed) for it in b.items])
        return b, self.synth(imgs, lms, targets, keys, self.crops.get(b.shape)), gone

    def finish(self, b: Batch, res, gone: set, bar) -> None:
        """Wait for the batch, write its images atomically, then (only then) append and fsync its rows."""
        report = self.report
        report.batches += 1
        report.compiled_shapes.add((b.shape, len(b.items)))
        rows = self.write_batch(b, res, gone)
        if rows:
            _append_rows(report.labels_path, LABEL_FIELDS, rows)
        report.written += len(rows)
        if bar is not None:
            bar.update(b.valid)

    def write_batch(self, b: Batch, res, gone: set) -> list[dict]:
        """Write the batch's finished images atomically; their labels rows (non-finite ones are skips)."""
        report, rows = self.report, []
        if res is not None:
            out_imgs = np.asarray(res.images)
            rms, labels = np.asarray(res.fit_rms), np.asarray(res.label)
        for i, it in enumerate(b.items[: b.valid]):
            if res is None or it.source in gone:
                continue
            h, w = self.faces[it.source][1]
            im = out_imgs[i, :h, :w]
            if not (np.isfinite(im).all() and np.isfinite(labels[i]).all()):
                report.skipped.append((it.source, f"class {it.class_id} #{it.k}: non-finite output"))
                continue
            rows.append(self._write(it, im, labels[i], rms[i]))
        return rows

    def _write(self, it: WorkItem, image: np.ndarray, label: np.ndarray, rms) -> dict:
        """Save one output image (atomically) and return its labels row."""
        from ..io import save_image

        name = output_name(it.stem, it.class_id, it.k, self.ext)
        dest = safe_output_path(self.out, name)
        if dest.resolve() in self.inputs:
            raise OutputError(dest, "output would overwrite an input file")
        save_image(dest, image)
        return {
            "source": it.source,
            "output": name,
            "class_id": it.class_id,
            "sample": it.k,
            "valence": f"{float(label[0]):.4f}",
            "arousal": f"{float(label[1]):.4f}",
            "fit_rms": f"{float(rms):.5f}",
            "target_valence": f"{it.target[0]:.4f}",
            "target_arousal": f"{it.target[1]:.4f}",
        }


def _cached(cache: OrderedDict, it: WorkItem, load: Callable, size: int = 8) -> np.ndarray:
    if it.source in cache:
        cache.move_to_end(it.source)
        return cache[it.source]
    image, _ = load(it.path)
    image = np.asarray(image)
    cache[it.source] = image if image.dtype == np.uint8 else image.astype(np.float32, copy=False)
    while len(cache) > size:
        cache.popitem(last=False)
    return cache[it.source]


def _write_skipped(report: AugmentReport, write) -> None:
    if report.skipped_path is None:
        return
    if report.skipped or report.skipped_path.exists():
        rows = [{"source": s, "reason": r} for s, r in report.skipped]
        write(report.skipped_path, _csv_bytes(SKIP_FIELDS, rows))
