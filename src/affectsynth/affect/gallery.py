"""Gallery of labelled 3D expression meshes: the on-disk format, a streaming reader and an atomic writer.

A gallery is a folder holding ``gallery.csv`` and mesh files, all in one topology (same vertex count and
order). The CSV has a header and the columns::

    subject, sequence, frame, mesh, valence, arousal, is_neutral

``mesh`` is a path relative to the folder (it must not escape it) to an ``.npy`` vertex array (fastest),
an ``.obj`` or a ``.ply`` (read with trimesh, ``process=False`` so the vertex order is kept). ``valence`` and
``arousal`` are in [-1, 1]. ``is_neutral`` is 1 (or true/yes) on exactly one row per (subject, sequence):
the neutral mesh that the sequence's deformations are measured from.

Rows may come in any order. ``read_gallery`` first scans the CSV rows (cheap: text only, no meshes) to find
each sequence's neutral row, then reads the CSV again and streams meshes one at a time, yielding a
sequence's neutral frame before any other frame of it (memory: O(sequences), never O(rows)). Bad rows
(missing or unreadable file, wrong vertex count, label NaN or outside [-1, 1], missing fields, a second
neutral) and sequences without a neutral are reported through ``on_bad_row`` as
``BadRow(file, line, problem)`` and skipped, never used.
"""

import csv
import dataclasses
import io
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from ..io import atomic_open, atomic_write_bytes

CSV_NAME = "gallery.csv"
COLUMNS = ("subject", "sequence", "frame", "mesh", "valence", "arousal", "is_neutral")
MESH_SUFFIXES = (".npy", ".obj", ".ply")

_log = logging.getLogger("affectsynth.affect.gallery")


@dataclasses.dataclass(frozen=True)
class GalleryFrame:
    """One labelled mesh of a gallery.

    Attributes:
        subject / sequence: identifiers; a sequence belongs to one subject and has one neutral frame.
        frame: frame number inside the sequence.
        vertices: f32[V, 3] mesh vertices (any rigid pose; the model builder aligns them).
        valence / arousal: label in [-1, 1].
        is_neutral: True for the sequence's neutral (reference) mesh.
        source: where it came from (``"file:line"`` for a CSV row, or a generator's name).
        au: f32[A] the frame's Action-Unit intensities when the source knows them (the generated gallery),
            in the order the model builder is told (``build_affect_model(au_names=...)``); else None.
    """

    subject: str
    sequence: str
    frame: int
    vertices: np.ndarray
    valence: float
    arousal: float
    is_neutral: bool
    source: str
    au: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class BadRow:
    """A skipped gallery row: ``str()`` gives ``"file:line: problem"``."""

    file: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.problem}"


def log_bad_row(bad: BadRow) -> None:
    """Default reporter: a warning on the ``affectsynth.gallery`` logger."""
    _log.warning("%s", bad)


class GalleryError(ValueError):
    """The gallery as a whole is unusable (no CSV, no header, missing columns)."""


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


@dataclasses.dataclass(frozen=True)
class _Row:
    line: int
    subject: str
    sequence: str
    frame: int
    mesh: str
    valence: float
    arousal: float
    is_neutral: bool


def _parse_row(rec: dict, line: int) -> _Row:
    """Validate the text fields of one CSV record (raises ValueError with the problem)."""
    missing = [c for c in COLUMNS if rec.get(c) is None]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    subject, sequence, mesh = rec["subject"].strip(), rec["sequence"].strip(), rec["mesh"].strip()
    if not subject or not sequence:
        raise ValueError("empty subject or sequence")
    if not mesh:
        raise ValueError("empty mesh path")
    try:
        frame = int(rec["frame"].strip())
    except ValueError:
        raise ValueError(f"frame {rec['frame']!r} is not an integer") from None
    labels = []
    for name in ("valence", "arousal"):
        try:
            x = float(rec[name])
        except ValueError:
            raise ValueError(f"{name} {rec[name]!r} is not a number") from None
        if math.isnan(x) or not -1.0 <= x <= 1.0:
            raise ValueError(f"{name} {x:g} is outside [-1, 1]" if not math.isnan(x) else f"{name} is NaN")
        labels.append(x)
    flag = rec["is_neutral"].strip().lower()
    if flag not in _TRUE | _FALSE:
        raise ValueError(f"is_neutral {rec['is_neutral']!r} is not 0/1")
    return _Row(line, subject, sequence, frame, mesh, labels[0], labels[1], flag in _TRUE)


def _resolve(folder: Path, mesh: str) -> Path:
    """Mesh path inside the gallery folder (raises ValueError if absolute or escaping the folder)."""
    rel = Path(mesh)
    if rel.is_absolute() or rel.drive:
        raise ValueError(f"mesh path {mesh!r} must be relative to the gallery folder")
    root = folder.resolve()
    full = (root / rel).resolve()
    if full != root and root not in full.parents:
        raise ValueError(f"mesh path {mesh!r} escapes the gallery folder")
    return full


def load_mesh_vertices(path: Path, num_vertices: int | None = None) -> np.ndarray:
    """Vertices f32[V, 3] of an .npy / .obj / .ply file (raises ValueError with a one-line problem)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"unsupported mesh format {suffix!r} (use {', '.join(MESH_SUFFIXES)})")
    if not path.is_file():
        raise ValueError(f"mesh file {path.name} not found")
    try:
        if suffix == ".npy":
            verts = np.load(path, allow_pickle=False)
        else:
            import trimesh

            # process=False keeps vertices as stored; maintain_order keeps OBJ vertices that no face
            # uses (FaceMesh's iris points), which trimesh would otherwise drop
            extra = {"maintain_order": True} if suffix == ".obj" else {}
            geom = trimesh.load(path, process=False, force="mesh", **extra)
            verts = np.asarray(geom.vertices)
    except Exception as err:  # unreadable / corrupt file: report, never crash the stream
        msg = " ".join(str(err).split())[:120]
        raise ValueError(f"cannot read mesh {path.name}: {type(err).__name__}: {msg}") from None
    verts = np.asarray(verts)
    if verts.ndim != 2 or verts.shape[1] != 3:
        raise ValueError(f"mesh {path.name} has shape {verts.shape}, expected [V, 3]")
    if num_vertices is not None and verts.shape[0] != num_vertices:
        raise ValueError(f"mesh {path.name} has {verts.shape[0]} vertices, expected {num_vertices}")
    if not np.issubdtype(verts.dtype, np.number) or not np.all(np.isfinite(verts)):
        raise ValueError(f"mesh {path.name} has non-finite vertices")
    return verts.astype(np.float32)


def _records(csv_path: Path) -> Iterator[tuple[int, dict]]:
    """Stream (line number, record) from the CSV file (text only; raises GalleryError if unusable)."""
    try:
        f = open(csv_path, encoding="utf-8-sig", newline="")
    except FileNotFoundError:
        raise GalleryError(f"{csv_path}: gallery CSV not found") from None
    except OSError as err:
        raise GalleryError(f"{csv_path}: cannot read gallery CSV ({type(err).__name__})") from None
    with f:
        try:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                need = ", ".join(COLUMNS)
                raise GalleryError(f"{csv_path}: missing column(s) {', '.join(missing)} (need {need})")
            reader.fieldnames = header
            for rec in reader:
                if any((v or "").strip() for k, v in rec.items() if k is not None and isinstance(v, str)):
                    yield reader.line_num, rec
        except (UnicodeDecodeError, csv.Error) as err:
            raise GalleryError(f"{csv_path}: cannot read gallery CSV ({type(err).__name__})") from None


def _scan(csv_path: Path, report: Callable[[BadRow], None]) -> tuple[dict, set]:
    """First pass over the CSV text (no meshes): each sequence's neutral row, and the lines already
    reported as bad (unparsable rows, second neutrals). Memory: O(sequences + bad rows)."""
    neutral, bad = {}, set()
    name = str(csv_path)
    for line, rec in _records(csv_path):
        try:
            row = _parse_row(rec, line)
        except ValueError as err:
            report(BadRow(name, line, str(err)))
            bad.add(line)
            continue
        key = (row.subject, row.sequence)
        if row.is_neutral:
            if key in neutral:
                first = neutral[key].line
                why = f"second neutral for sequence {row.sequence!r} (first at line {first}); row skipped"
                report(BadRow(name, line, why))
                bad.add(line)
                continue
            neutral[key] = row
    return neutral, bad


def read_gallery(
    path,
    *,
    num_vertices: int | None = 478,
    on_bad_row: Callable[[BadRow], None] | None = None,
) -> Iterator[GalleryFrame]:
    """Stream the frames of the gallery folder ``path`` (its ``gallery.csv``), one mesh in memory at a time.

    Each sequence's neutral frame is yielded before the sequence's other frames, whatever the CSV order.

    Args:
        path: the gallery folder (or its ``gallery.csv``).
        num_vertices: required vertex count (None: take the first good mesh's count).
        on_bad_row: called with a ``BadRow`` for every skipped row (default: a logged warning).

    Raises:
        GalleryError: no CSV, unreadable CSV or missing columns (the whole gallery is unusable).
    """
    report = log_bad_row if on_bad_row is None else on_bad_row
    path = Path(path)
    csv_path = path if path.suffix.lower() == ".csv" else path / CSV_NAME
    neutral_rows, bad_lines = _scan(csv_path, report)
    reader = _SequenceReader(csv_path.parent, str(csv_path), report, neutral_rows, num_vertices)
    for line, rec in _records(csv_path):
        if line not in bad_lines:  # bad lines were reported by the first pass
            yield from reader.frames_of(_parse_row(rec, line))


@dataclasses.dataclass
class _SequenceReader:
    """The state of one ``read_gallery`` pass: the vertex count and which sequences' neutrals were yielded
    (True) or found unusable (the neutral's line, as text)."""

    folder: Path
    name: str
    report: Callable[[BadRow], None]
    neutral_rows: dict  # (subject, sequence) -> its neutral _Row
    want: int | None  # vertex count (None until the first good mesh)
    neutral_state: dict = dataclasses.field(default_factory=dict)
    no_neutral_reported: set = dataclasses.field(default_factory=set)

    def _load(self, row: _Row) -> np.ndarray:
        verts = load_mesh_vertices(_resolve(self.folder, row.mesh), self.want)
        if self.want is None:
            self.want = verts.shape[0]
        return verts

    def _frame(self, row: _Row, verts: np.ndarray) -> GalleryFrame:
        return GalleryFrame(
            subject=row.subject,
            sequence=row.sequence,
            frame=row.frame,
            vertices=verts,
            valence=row.valence,
            arousal=row.arousal,
            is_neutral=row.is_neutral,
            source=f"{self.name}:{row.line}",
        )

    def _bad(self, row: _Row, why: str) -> None:
        self.report(BadRow(self.name, row.line, why))

    def frames_of(self, row: _Row) -> Iterator[GalleryFrame]:
        """The frames one CSV row releases: its sequence's neutral the first time the sequence is met, then
        the row itself (non-neutral rows of a sequence whose neutral is missing or unusable are reported)."""
        key = (row.subject, row.sequence)
        if key not in self.neutral_rows:
            if key not in self.no_neutral_reported:
                self.no_neutral_reported.add(key)
                self._bad(
                    row,
                    f"sequence {row.sequence!r} of subject {row.subject!r} has no "
                    "neutral row (is_neutral=1); its rows are skipped",
                )
            return
        if key not in self.neutral_state:
            nrow = self.neutral_rows[key]
            try:
                nverts = self._load(nrow)
            except ValueError as err:
                self.neutral_state[key] = f"{nrow.line}"
                self._bad(nrow, f"{err}; sequence {row.sequence!r} is skipped")
            else:
                self.neutral_state[key] = True
                yield self._frame(nrow, nverts)
        if row.is_neutral:
            return  # already yielded (or reported) above
        if self.neutral_state[key] is not True:
            self._bad(
                row,
                f"skipped: the neutral of sequence {row.sequence!r} (line "
                f"{self.neutral_state[key]}) is unusable",
            )
            return
        try:
            verts = self._load(row)
        except ValueError as err:
            self._bad(row, str(err))
            return
        yield self._frame(row, verts)


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(text: str) -> str:
    return _SAFE.sub("_", text).strip("._") or "x"


def _mesh_bytes(verts: np.ndarray, fmt: str, triangles: np.ndarray | None) -> bytes:
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, verts.astype(np.float32), allow_pickle=False)
        return buf.getvalue()
    if fmt == "obj":
        lines = [f"v {x:.7g} {y:.7g} {z:.7g}" for x, y, z in verts.tolist()]
        if triangles is not None:
            lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in triangles.tolist()]
        return ("\n".join(lines) + "\n").encode()
    import trimesh

    mesh = trimesh.Trimesh(verts, faces=triangles if triangles is not None else None, process=False)
    return mesh.export(file_type="ply", encoding="binary")


def write_gallery(
    path,
    frames: Iterable[GalleryFrame],
    mesh_format: str = "npy",
    *,
    triangles: np.ndarray | None = None,
) -> int:
    """Write frames as a gallery folder (streaming; every file written atomically, the CSV last).

    Meshes go to ``meshes/<subject>/<sequence>_<frame>.<ext>``; OBJ/PLY files get ``triangles`` (default:
    the face topology's when the mesh has 478 vertices). Returns the number of frames written.
    """
    if mesh_format not in ("npy", "obj", "ply"):
        raise ValueError(f"mesh_format must be 'npy', 'obj' or 'ply', got {mesh_format!r}")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tris = triangles
    n = 0
    # the CSV goes in last, atomically: an interrupted write leaves no gallery.csv
    with atomic_open(folder / CSV_NAME, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(COLUMNS)
        used: set = set()
        for fr in frames:
            verts = np.asarray(fr.vertices, np.float32)
            if tris is None and mesh_format != "npy" and verts.shape[0] == 478:
                from ..face.topology import face_topology

                tris = face_topology().triangles
            rel = f"meshes/{_safe(fr.subject)}/{_safe(fr.sequence)}_{int(fr.frame):05d}"
            base, k = rel, 1
            while rel in used:
                rel, k = f"{base}-{k}", k + 1
            used.add(rel)
            rel = f"{rel}.{mesh_format}"
            atomic_write_bytes(folder / rel, _mesh_bytes(verts, mesh_format, tris))
            writer.writerow(
                [
                    fr.subject,
                    fr.sequence,
                    int(fr.frame),
                    rel,
                    repr(float(fr.valence)),
                    repr(float(fr.arousal)),
                    int(bool(fr.is_neutral)),
                ]
            )
            n += 1
    return n


__all__ = [
    "GalleryFrame",
    "BadRow",
    "GalleryError",
    "read_gallery",
    "write_gallery",
    "load_mesh_vertices",
    "log_bad_row",
    "CSV_NAME",
    "COLUMNS",
]
