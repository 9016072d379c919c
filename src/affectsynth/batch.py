"""Bulk jobs around ``synthesize_batch``: augmentation of a folder, V-A grids, V-A path animations.

Host-side job logic only (no maths of the method): scanning inputs, safe output names, bucketing images of
mixed sizes so that compilation is bounded, a resumable labels manifest, a report of skipped inputs, GIF/MP4
encoding. The synthesis, detection and loading functions are passed in (dependency injection), so that the
logic is tested with cheap fakes and runs unchanged with the real pipeline.

Bucketing: every image is edge-padded at the bottom/right to the next multiple of ``PAD_MULTIPLE`` pixels
(landmark coordinates are unchanged), items with equal padded shapes run together in batches of one fixed
size per shape (the last batch is filled by repeating an item whose result is dropped), and results are
cropped back. So the number of compilations is at most the number of distinct padded shapes.
"""

import csv
import dataclasses
import hashlib
import io
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from .errors import AffectsynthError, InputImageError, OutputError

PAD_MULTIPLE = 128
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"})
LABEL_FIELDS = (
    "source",
    "output",
    "class_id",
    "sample",
    "valence",
    "arousal",
    "fit_rms",
    "target_valence",
    "target_arousal",
)
"""Columns of ``labels.csv``; (valence, arousal) is the training label: the median of the item's class."""
SKIP_FIELDS = ("source", "reason")
MAX_STEM = 80


# ----------------------------------------------------------------------------------------------- inputs


def scan_inputs(input_dir, *, recursive: bool = False, exclude: Sequence = ()) -> list[Path]:
    """Image files (by extension) in ``input_dir``, sorted; hidden files and ``exclude`` folders skipped.

    Raises:
        InputImageError: ``input_dir`` missing or not a folder.
    """
    root = Path(input_dir)
    if not root.is_dir():
        raise InputImageError(root, "no such folder" if not root.exists() else "not a folder")
    excluded = [Path(e).resolve() for e in exclude]
    it = root.rglob("*") if recursive else root.iterdir()
    found = []
    for p in it:
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() not in IMAGE_EXTS or not p.is_file():
            continue
        rp = p.resolve()
        if any(rp == e or e in rp.parents for e in excluded):
            continue
        found.append(p)
    return sorted(found, key=lambda q: q.relative_to(root).as_posix())


def read_input_list(csv_path, base=None) -> list[Path]:
    """Input files listed in a CSV (column ``source``, else the first column); relative entries are taken
    relative to ``base`` (default: the CSV's folder). Only read: output names never come from these strings.

    Raises:
        InputImageError: the list is missing or unreadable.
    """
    p = Path(csv_path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputImageError(p, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputImageError(p, f"cannot read the input list ({e})") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r and r[0].strip()]
    if rows and rows[0][0].strip().lower() == "source":
        rows = rows[1:]
    root = p.parent if base is None else Path(base)
    return [Path(r[0].strip()) if Path(r[0].strip()).is_absolute() else root / r[0].strip() for r in rows]


def source_key(path, input_dir=None) -> str:
    """An input's name in the manifest: its path relative to ``input_dir`` (POSIX), else absolute."""
    p = Path(path)
    if input_dir is not None:
        try:
            return p.resolve().relative_to(Path(input_dir).resolve()).as_posix()
        except ValueError:
            pass
    return p.resolve().as_posix()


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:8]


def safe_stem(source: str) -> str:
    """A file-name stem made only of ``[A-Za-z0-9._-]`` that cannot name a folder or climb out of one.

    Folders of a relative source become ``__``; an absolute source keeps only its file name. Leading dots are
    stripped (no hidden files, no ``..``); long names are cut and suffixed with a hash of the source.
    """
    p = Path(str(source))
    parts = [p.name] if p.is_absolute() else [q for q in p.parts if q not in ("", ".", "..", "/")]
    if parts:
        parts[-1] = Path(parts[-1]).stem if Path(parts[-1]).suffix.lower() in IMAGE_EXTS else parts[-1]
    stem = "__".join(parts)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem)
    stem = re.sub(r"\.{2,}", ".", stem).lstrip("._-")
    if len(stem) > MAX_STEM:
        stem = f"{stem[: MAX_STEM - 9]}-{_short_hash(str(source))}"
    return stem or f"image-{_short_hash(str(source))}"


def assign_stems(sources: Sequence[str]) -> dict[str, str]:
    """``safe_stem`` of each source, made unique (case-insensitively) by a hash suffix where two collide."""
    stems = {s: safe_stem(s) for s in sources}
    count: dict[str, int] = {}
    for st in stems.values():
        count[st.lower()] = count.get(st.lower(), 0) + 1
    return {s: (st if count[st.lower()] == 1 else f"{st}-{_short_hash(s)}") for s, st in stems.items()}


def inside(root, path) -> bool:
    """Whether ``path`` resolves to somewhere strictly inside folder ``root``."""
    r, p = Path(root).resolve(), Path(path).resolve()
    return p != r and r in p.parents


def output_name(stem: str, class_id: int, k: int, ext: str = ".png") -> str:
    """Deterministic output file name ``<stem>_c<class>_<k><ext>``."""
    return f"{stem}_c{int(class_id)}_{int(k)}{ext}"


def safe_output_path(out_dir, name: str) -> Path:
    """``out_dir / name`` after checking that it stays inside ``out_dir``.

    Raises:
        OutputError: the name has folders, is absolute, or otherwise escapes ``out_dir``.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise OutputError(name, "output name must be a plain file name")
    p = Path(out_dir) / name
    if not inside(out_dir, p):
        raise OutputError(p, f"escapes the output folder {out_dir}")
    return p


def ensure_output_dir(path) -> Path:
    """Create the output folder if needed and prove it is writable (a temp file is created and removed).

    Raises:
        OutputError: it is a file, cannot be created, or is not writable.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputError(p, "is a file; expected an output folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".affectsynth-write-test-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"")
        probe.unlink()
    except OSError as e:
        raise OutputError(p, f"output folder is not writable ({e.strerror or e})") from None
    if not os.access(p, os.W_OK):
        raise OutputError(p, "output folder is not writable")
    return p


# ------------------------------------------------------------------------------------- size bucketing


def padded_shape(height: int, width: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    """(H, W) rounded up to multiples of ``multiple``."""
    return (-(-int(height) // multiple) * multiple, -(-int(width) // multiple) * multiple)


def pad_image(image: np.ndarray, multiple: int = PAD_MULTIPLE) -> np.ndarray:
    """Edge-replicate ``image`` at the bottom and right up to ``padded_shape`` (pixel coordinates kept)."""
    h, w = image.shape[:2]
    ph, pw = padded_shape(h, w, multiple)
    if (ph, pw) == (h, w):
        return image
    return np.pad(image, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")


def fill_batch(items: Sequence, size: int) -> tuple[list, int]:
    """``items`` extended to ``size`` by repeating the last one; returns (batch, number of real items)."""
    n = len(items)
    if not 0 < n <= size:
        raise ValueError(f"need 1..{size} items, got {n}")
    return list(items) + [items[-1]] * (size - n), n


def batch_size_for(shape: tuple[int, int], batch_size: int, max_batch_pixels: int) -> int:
    """The fixed batch size used for one padded shape: ``batch_size`` capped so a batch holds at most
    ``max_batch_pixels`` pixels (huge photos run a few at a time instead of exhausting memory)."""
    return max(1, min(int(batch_size), int(max_batch_pixels) // (shape[0] * shape[1])))


@dataclasses.dataclass(frozen=True)
class Batch:
    """One call of the synthesis function: items sharing a padded shape, filled to a fixed size."""

    shape: tuple[int, int]
    items: tuple  # length = the fixed batch size of this shape
    valid: int  # the first ``valid`` items are real


def plan_batches(
    items: Sequence, shape_of: Callable, *, batch_size: int, max_batch_pixels: int = 64_000_000
) -> list[Batch]:
    """Group ``items`` by padded shape (first-seen order, stable inside a group); cut fixed-size batches."""
    groups: OrderedDict = OrderedDict()
    for it in items:
        groups.setdefault(tuple(shape_of(it)), []).append(it)
    out = []
    for shape, group in groups.items():
        bs = batch_size_for(shape, batch_size, max_batch_pixels)
        for i in range(0, len(group), bs):
            filled, n = fill_batch(group[i : i + bs], bs)
            out.append(Batch(shape, tuple(filled), n))
    return out


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
    """
    from .io import atomic_write_bytes

    path = Path(out_dir) / name
    if not path.exists():
        return [], 0
    text = path.read_text(encoding="utf-8", errors="replace")
    torn = bool(text) and not text.endswith("\n")
    if torn:
        text = text[: text.rfind("\n") + 1]
    rows, raw, seen, dropped = [], [], set(), int(torn)
    for r in csv.DictReader(io.StringIO(text)):
        row = _parse_label_row(r)
        key = None if row is None else (row["source"], row["class_id"], row["sample"])
        ok = row is not None and key not in seen
        if ok:
            try:
                ok = safe_output_path(out_dir, row["output"]).is_file()
            except OutputError:
                ok = False
        if ok:
            rows.append(row)
            raw.append(r)
            seen.add(key)
        else:
            dropped += 1
    if dropped:
        atomic_write_bytes(path, _csv_bytes(LABEL_FIELDS, raw))  # kept rows verbatim
    return rows, dropped


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
    """``io.load_image`` with its notes: (image f32[H, W, 3], list of conversion notes)."""
    from .io import load_image

    image, info = load_image(path, return_info=True)
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
) -> AugmentReport:
    """Write ``per_class`` synthetic images per (input, class) into ``out_dir`` with ``labels.csv``.

    Args:
        sources: input image files (never written).
        out_dir: output folder (created); must not be an input's folder.
        classes: (class_id, target valence, target arousal) per class to synthesise.
        synth: ``synth(images f32[B,H,W,3], landmarks f32[B,478,3], targets f32[B,2], keys u32[B,2], crop)``
            returning an object with ``images`` f32[B,H,W,3], ``fit_rms`` f32[B] and ``label`` f32[B,2].
        detect: ``detect(image, source) -> f32[478, 3]`` raising ``AffectsynthError`` for no/bad face.
        load: ``load(path) -> (image, notes)`` raising ``AffectsynthError`` for a bad file.
        crop: ``crop(landmarks f32[N,478,3], H, W) -> (h, w)``, one static crop per padded shape (bounds
            compilation); None lets ``synth`` choose.
        input_dir: manifest names are relative to it when given.
        per_class: samples per (input, class); keys are deterministic per (seed, input, class, k).
        resume: continue a job from its ``labels.csv``; without it an existing non-empty one is an error.
        progress: ``progress(total, desc) -> object`` with ``update(n)`` and ``close()`` (e.g. tqdm).
        note: receives one-line notes (conversions, several faces, skips).

    Labels rows are appended (and fsynced) per batch, only after that batch's images are renamed into place,
    so an interrupted job resumes without redoing or duplicating work. Bad inputs are listed in
    ``skipped.csv`` with reasons and the job goes on.
    """
    from .io import atomic_write_bytes, save_image

    out = Path(out_dir)
    labels_path, skipped_path = out / "labels.csv", out / "skipped.csv"
    report = AugmentReport(labels_path=labels_path, skipped_path=skipped_path)
    if per_class < 1:
        raise AffectsynthError("--per-class", f"must be >= 1, got {per_class}")
    if not classes:
        raise AffectsynthError("--classes", "no classes selected")
    if ext not in (".png", ".jpg", ".webp"):
        raise OutputError(ext, "output format must be .png, .jpg or .webp")
    resolved_inputs = {Path(s).resolve() for s in sources}
    for s in resolved_inputs:
        if s.parent == out.resolve():
            raise OutputError(out, f"output folder holds the input {s.name}; use a separate folder")
    ensure_output_dir(out)
    if labels_path.exists() and labels_path.stat().st_size > 0 and not resume:
        raise OutputError(
            labels_path, "exists: pass --resume to continue that job, or use a new output folder"
        )
    done_rows, report.dropped_rows = read_manifest(out) if resume else ([], 0)
    if report.dropped_rows:
        note(f"note: {labels_path}: dropped {report.dropped_rows} incomplete or invalid row(s); redoing them")
    done = {(r["source"], r["class_id"], r["sample"]) for r in done_rows}

    keys_of = {source_key(s, input_dir): Path(s) for s in sources}
    stems = assign_stems(list(keys_of))
    pending: dict[str, list[WorkItem]] = {}
    for src, path in keys_of.items():
        for cid, v, a in classes:
            for k in range(per_class):
                if (src, int(cid), k) in done:
                    report.already_done += 1
                    continue
                pending.setdefault(src, []).append(
                    WorkItem(src, path, stems[src], int(cid), k, (float(v), float(a)))
                )
    report.inputs = len(keys_of)
    report.pending = sum(len(v) for v in pending.values())

    # phase 1: load + detect once per input that has work left; keep only landmarks and shapes in memory
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
    _write_skipped(report, atomic_write_bytes)

    items = [it for src in pending for it in pending[src]]
    shape_of = lambda it: padded_shape(*faces[it.source][1])
    batches = plan_batches(items, shape_of, batch_size=batch_size, max_batch_pixels=max_batch_pixels)
    crops = {}
    if crop is not None:
        for shape in {b.shape for b in batches}:
            lms = np.stack([faces[it.source][0] for it in items if shape_of(it) == shape])
            crops[shape] = tuple(int(c) for c in crop(lms, *shape))
    bar = progress(len(items), "images") if progress is not None and items else None
    cache: OrderedDict = OrderedDict()

    def dispatch(b: Batch):
        """Load and pad the batch's photos and start the synthesis (JAX returns before it is done)."""
        imgs, gone = [], set()
        for it in b.items:
            try:
                imgs.append(pad_image(_cached(cache, it, load)))
            except AffectsynthError as e:  # changed or removed since it was detected
                if it.source not in gone:
                    report.skipped.append((it.source, e.problem))
                gone.add(it.source)
                imgs.append(None)
        if len(gone) == len({it.source for it in b.items}):
            return b, None, gone
        stand_in = next(x for x in imgs if x is not None)
        imgs = np.stack([stand_in if x is None else x for x in imgs])
        lms = np.stack([faces[it.source][0] for it in b.items])
        targets = np.array([it.target for it in b.items], np.float32)
        keys = np.stack([item_key(it.source, it.class_id, it.k, seed) for it in b.items])
        return b, synth(imgs, lms, targets, keys, crops.get(b.shape)), gone

    def finish(b: Batch, res, gone: set):
        """Wait for the batch, write its images atomically, then (only then) append and fsync its rows."""
        report.batches += 1
        report.compiled_shapes.add((b.shape, len(b.items)))
        rows = []
        if res is not None:
            out_imgs = np.asarray(res.images)
            rms, labels = np.asarray(res.fit_rms), np.asarray(res.label)
        for i, it in enumerate(b.items[: b.valid]):
            if res is None or it.source in gone:
                continue
            h, w = faces[it.source][1]
            im = out_imgs[i, :h, :w]
            if not (np.isfinite(im).all() and np.isfinite(labels[i]).all()):
                report.skipped.append((it.source, f"class {it.class_id} #{it.k}: non-finite output"))
                continue
            name = output_name(it.stem, it.class_id, it.k, ext)
            dest = safe_output_path(out, name)
            if dest.resolve() in resolved_inputs:
                raise OutputError(dest, "output would overwrite an input file")
            save_image(dest, im)
            rows.append(
                {
                    "source": it.source,
                    "output": name,
                    "class_id": it.class_id,
                    "sample": it.k,
                    "valence": f"{float(labels[i, 0]):.4f}",
                    "arousal": f"{float(labels[i, 1]):.4f}",
                    "fit_rms": f"{float(rms[i]):.5f}",
                    "target_valence": f"{it.target[0]:.4f}",
                    "target_arousal": f"{it.target[1]:.4f}",
                }
            )
        if rows:
            _append_rows(labels_path, LABEL_FIELDS, rows)
        report.written += len(rows)
        if bar is not None:
            bar.update(b.valid)

    # one batch in flight: batch i computes while batch i-1's images are encoded and written
    inflight = None
    try:
        for b in batches:
            try:
                started = dispatch(b)
            except BaseException:
                if inflight is not None:  # keep the finished work of the previous batch
                    finish(*inflight)
                    inflight = None
                raise
            if inflight is not None:
                finish(*inflight)
            inflight = started
        if inflight is not None:
            finish(*inflight)
    finally:
        if bar is not None:
            bar.close()
        _write_skipped(report, atomic_write_bytes)
    return report


def _cached(cache: OrderedDict, it: WorkItem, load: Callable, size: int = 8) -> np.ndarray:
    if it.source in cache:
        cache.move_to_end(it.source)
        return cache[it.source]
    image, _ = load(it.path)
    cache[it.source] = np.asarray(image, np.float32)
    while len(cache) > size:
        cache.popitem(last=False)
    return cache[it.source]


def _write_skipped(report: AugmentReport, write) -> None:
    if report.skipped_path is None:
        return
    if report.skipped or report.skipped_path.exists():
        rows = [{"source": s, "reason": r} for s, r in report.skipped]
        write(report.skipped_path, _csv_bytes(SKIP_FIELDS, rows))


# ------------------------------------------------------------------------- one photo, many targets


def synthesize_targets(
    image: np.ndarray,
    landmarks: np.ndarray,
    targets: np.ndarray,
    synth: Callable,
    *,
    chunk: int = 8,
    keys: np.ndarray | None = None,
    crop: tuple[int, int] | None = None,
    on_chunk: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One photo (landmarks detected once) under many targets, in fixed-size chunks (one compilation).

    The photo is padded to ``PAD_MULTIPLE``, the last chunk is filled by repeating its last target, results
    are cropped back. Returns (images f32[N, H, W, 3], fit_rms f32[N]). ``synth`` as in ``run_augment``.
    """
    targets = np.asarray(targets, np.float32).reshape(-1, 2)
    n = len(targets)
    h, w = image.shape[:2]
    chunk = max(1, min(int(chunk), n))
    padded = pad_image(np.asarray(image, np.float32))
    if keys is None:
        keys = np.stack([item_key("targets", 0, i) for i in range(n)])
    imgs = np.repeat(padded[None], chunk, 0)
    lms = np.repeat(np.asarray(landmarks, np.float32)[None], chunk, 0)
    out_imgs, out_rms = [], []
    for i in range(0, n, chunk):
        idx, valid = fill_batch(list(range(i, min(i + chunk, n))), chunk)
        res = synth(imgs, lms, targets[idx], np.asarray(keys)[idx], crop)
        out_imgs.append(np.asarray(res.images)[:valid, :h, :w])
        out_rms.append(np.asarray(res.fit_rms)[:valid])
        if on_chunk is not None:
            on_chunk(valid)
    return np.concatenate(out_imgs), np.concatenate(out_rms)


def grid_sheet(
    tiles: Sequence[np.ndarray], targets: np.ndarray, size: int, *, tile: int = 192, title: str = ""
) -> np.ndarray:
    """A labelled V-A grid contact sheet (valence on x, arousal on y, as in the paper's Fig. 5), uint8 RGB."""
    from PIL import Image, ImageDraw

    from .sheets import contact_sheet

    labels = [f"V={v:+.2f} A={a:+.2f}" for v, a in np.asarray(targets)]
    body = Image.fromarray(contact_sheet(list(tiles), labels, columns=size, tile=tile, title=title or None))
    left, bottom = 28, 26
    sheet = Image.new("RGB", (body.width + left, body.height + bottom), (255, 255, 255))
    sheet.paste(body, (left, 0))
    d = ImageDraw.Draw(sheet)
    d.text((left + body.width // 2 - 60, body.height + 6), "valence ->", fill=(0, 0, 0))
    axis = Image.new("RGB", (body.height, left), (255, 255, 255))
    ImageDraw.Draw(axis).text((body.height // 2 - 60, 8), "arousal ->", fill=(0, 0, 0))
    sheet.paste(axis.rotate(90, expand=True), (0, 0))
    return np.asarray(sheet)


# ---------------------------------------------------------------------------------------- animations


def _to_uint8(frames) -> np.ndarray:
    f = np.asarray(frames)
    if f.dtype != np.uint8:
        f = (np.clip(np.nan_to_num(f.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return f


def encode_gif(frames, fps: float = 12.0, *, loop: bool = True) -> bytes:
    """Frames (N, H, W, 3) as an animated GIF, all frames quantised to ONE shared palette.

    Pillow (imageio's GIF plugin) quantises each frame to its own palette by default, which makes colours
    shimmer from frame to frame; a palette built from all frames together avoids that.
    """
    from PIL import Image

    f = _to_uint8(frames)
    n, h, w = f.shape[:3]
    step = max(1, int(np.ceil(np.sqrt(n * h * w / 2_000_000))))  # subsample the palette source when huge
    mosaic = Image.fromarray(np.concatenate(list(f[:, ::step, ::step]), axis=0))
    palette = mosaic.quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    ims = [Image.fromarray(x).quantize(palette=palette, dither=Image.Dither.NONE) for x in f]
    buf = io.BytesIO()
    duration = int(round(1000.0 / fps))
    ims[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=ims[1:],
        duration=duration,
        loop=0 if loop else None,
        disposal=1,
    )
    return buf.getvalue()


def mp4_available() -> bool:
    """Whether MP4 can be written: needs the optional ``imageio-ffmpeg`` package (not a dependency)."""
    import importlib.util

    return importlib.util.find_spec("imageio_ffmpeg") is not None


def write_mp4(path, frames, fps: float = 12.0) -> Path:
    """Write frames as an H.264 MP4 atomically (temp file + rename) via imageio + imageio-ffmpeg.

    Only when ``mp4_available()``; frames are cropped to even sizes (yuv420p needs them).
    """
    import imageio.v2 as iio2

    p = Path(path)
    f = _to_uint8(frames)
    f = f[:, : f.shape[1] // 2 * 2, : f.shape[2] // 2 * 2]
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp.mp4")
    try:
        iio2.mimwrite(tmp, list(f), fps=fps, codec="libx264", macro_block_size=1)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p
