"""Inputs of the bulk jobs: scanning, safe output names, size bucketing of images of mixed sizes.

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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputImageError, OutputError

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
