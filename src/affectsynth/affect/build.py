"""The per-class affect model: class-mean deformations, SPLOCS components and weight statistics.

``build_affect_model`` streams a gallery (``GalleryFrame`` objects) once:

1. per sequence, the neutral frame (it must come before the sequence's other frames; ``read_gallery``
   guarantees this whatever the CSV order) fixes the similarity :math:`(s, R)` that maps it onto
   ``morphable.mean`` (Umeyama on all points);
2. every frame is rigidly aligned to its neutral by robust (iteratively reweighted) Procrustes, so a mouth
   opening does not tilt the head; deformation :math:`d = \\mathrm{aligned} - \\mathrm{neutral}`, brought into
   the canonical frame as :math:`s\\, d R^T`;
3. the frame's (V, A) picks its class (``affect.class_index``); per class an exact running mean and count
   are accumulated, with a bounded reservoir sample of deformations (``max_frames_per_class``) for SPLOCS.
   Meshes are never all held: memory is O(classes x reservoir + sequences x V); labels (2 floats per frame)
   are kept for the exact class-median label.

Then SPLOCS is learnt for all populated classes (``splocs.learn_splocs_batch``: compiled, vmapped calls
over chunks of classes padded to a common size; two sizes, ``_size_groups``). Empty classes are filled by
the rule of ``affect.nearest_populated`` (the nearest populated class by V-A centre distance): mean,
components and weights are copied from it, ``class_source`` says from where, ``class_count`` stays 0 and
the label is the class centre.
"""

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Iterator

import jax.numpy as jnp
import numpy as np

from ..face import topology as topo
from ..face.geometry import similarity_fit
from ..face.morphable import MorphableModel
from .grid import AffectGrid, class_centres_np, class_index_np, nearest_populated
from .model import AffectModel, au_projection_basis, project_action_units, resting_tolerance
from .splocs import geodesic_distances, learn_splocs_batch

# --------------------------------------------------------------------------------------------------------
# Building


@dataclasses.dataclass(frozen=True)
class BuildReport:
    """What ``build_affect_model`` did (host-side bookkeeping for the CLI and logs)."""

    frames_read: int
    frames_used: int
    sequences: int
    skipped: tuple[str, ...]
    num_skipped: int
    class_count: tuple[int, ...]
    empty_classes: tuple[int, ...]
    filled_from: dict
    seconds_streaming: float
    seconds_splocs: float
    splocs_seconds_per_class: float

    def summary(self) -> str:
        populated = sum(1 for c in self.class_count if c > 0)
        return (
            f"{self.frames_used} of {self.frames_read} frames used ({self.num_skipped} skipped) from "
            f"{self.sequences} sequences; {populated}/{len(self.class_count)} classes populated, "
            f"{len(self.empty_classes)} filled from the nearest populated class; streaming "
            f"{self.seconds_streaming:.1f} s, SPLOCS {self.seconds_splocs:.1f} s "
            f"({1000 * self.splocs_seconds_per_class:.0f} ms per class)"
        )


def _rigid_batch(src: np.ndarray, dst: np.ndarray, w: np.ndarray):
    """Batched weighted Kabsch: (R [B,3,3], t [B,3]) minimising sum_i w_bi ||R src_bi + t - dst_bi||^2."""
    w = w / np.maximum(w.sum(1, keepdims=True), 1e-300)
    ms = (w[:, None, :] @ src)[:, 0]
    md = (w[:, None, :] @ dst)[:, 0]
    # sum_i w_i (dst_i - md)(src_i - ms)^T = sum_i w_i dst_i src_i^T - md ms^T (the weights sum to 1): one
    # stacked product of the raw points, 8x faster than centring both first (two [B, V, 3] temporaries)
    cov = (np.swapaxes(dst, 1, 2) * w[:, None, :]) @ src - md[:, :, None] * ms[:, None, :]
    u, _, vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    u = u * np.stack([np.ones_like(d), np.ones_like(d), d], axis=1)[:, None, :]
    r = u @ vt
    return r, md - (r @ ms[:, :, None])[:, :, 0]


def robust_rigid_align(
    frames: np.ndarray, references: np.ndarray, iterations: int = 6, prior: np.ndarray | None = None
) -> np.ndarray:
    """Frames f[B, V, 3] (or one [V, 3]) rigidly moved onto their references by iteratively reweighted
    Procrustes (vectorised over the batch).

    Weights :math:`p_i / (1 + (r_i / 2\\tilde r)^2)` with :math:`\\tilde r` the median residual, so the
    vertices an expression moves (lips, jaw, brows) barely pull the head pose; ``prior`` f[V] (``p_i``,
    default 1) favours points that expressions do not move (``rigid_prior``). Without it a broad expression
    (a smile lifts the whole lower face) drags the pose and part of the expression is lost.
    """
    single = np.ndim(frames) == 2
    f = np.asarray(frames, np.float64).reshape((-1,) + np.shape(frames)[-2:])
    ref = np.asarray(references, np.float64).reshape(f.shape)
    p = np.ones(f.shape[1]) if prior is None else np.asarray(prior, np.float64)
    w = np.broadcast_to(p, f.shape[:2])
    for it in range(iterations + 1):
        r, t = _rigid_batch(f, ref, w)
        # R^T made contiguous first: NumPy's stacked matmul then takes its fast path (1.3x, same values)
        moved = f @ np.ascontiguousarray(np.swapaxes(r, 1, 2)) + t[:, None, :]
        if it == iterations:
            break
        diff = moved - ref
        res = np.sqrt(np.einsum("bvc,bvc->bv", diff, diff))  # the norm over xyz; 3x np.linalg.norm's speed
        med = np.maximum(np.median(res, axis=1, keepdims=True), 1e-9)
        w = p[None, :] / (1.0 + (res / (2.0 * med)) ** 2)
    return moved[0] if single else moved


class _Reservoir:
    """Bounded uniform sample (Algorithm R) of one class's deformations."""

    def __init__(self, capacity: int, shape: tuple[int, ...]):
        self.data = np.zeros((capacity,) + shape, np.float32)
        self.seen = 0

    def add(self, x: np.ndarray, rng: np.random.Generator):
        cap = self.data.shape[0]
        if self.seen < cap:
            self.data[self.seen] = x
        else:
            j = int(rng.integers(0, self.seen + 1))
            if j < cap:
                self.data[j] = x
        self.seen += 1

    @property
    def size(self) -> int:
        return min(self.seen, self.data.shape[0])


RIGID_SCALE = 0.05
"""A point's alignment weight halves where the expression basis moves it by this fraction of the basis's
median peak displacement (about 0.8 mm for the AU fields)."""


def rigid_prior(basis: np.ndarray) -> np.ndarray:
    """Alignment prior f[V] from an expression basis f[K, V, 3]: high on the points that no mode moves.

    :math:`p_i = 1 / (1 + (m_i / m_0)^4)` with :math:`m_i = \\max_k \\|B_{k,i}\\|` the largest displacement
    of point i under any mode and :math:`m_0` = ``RIGID_SCALE`` x the median of the modes' peaks. Derived
    from the fields, not a hand list: a forehead or nose-bridge point that AU1/AU2/AU4/AU9 move would
    otherwise anchor the pose and the alignment would eat the brow, lid and cheek motion.
    """
    b = np.asarray(basis, np.float64)
    m = np.linalg.norm(b, axis=2).max(0)
    m0 = RIGID_SCALE * float(np.median(np.linalg.norm(b, axis=2).max(1)))
    return 1.0 / (1.0 + (m / max(m0, 1e-12)) ** 4)


def _default_prior(num_vertices: int) -> np.ndarray | None:
    """``rigid_prior`` of the built-in AU fields when the vertex count is our topology's, else None."""
    if num_vertices != topo.face_topology().template.shape[0]:
        return None
    from .au_fields import expression_basis

    return rigid_prior(expression_basis()[0])


def iter_deformations(
    frames: Iterable,
    reference: np.ndarray,
    *,
    include_neutral: bool = True,
    on_skip: Callable | None = None,
    align_batch: int = 256,
    basis: np.ndarray | None = None,
) -> Iterator[tuple]:
    """Stream ``(frame, deformation f32[V, 3])`` from gallery frames, in the frame of ``reference``.

    Per sequence the neutral (which must come first) fixes the similarity (s, R) onto ``reference``; each
    other frame is robustly rigidly aligned to its neutral and
    :math:`s (\\mathrm{aligned} - \\mathrm{neutral}) R^T` is yielded. Neutral frames yield zeros when
    ``include_neutral``. Unusable frames (wrong shape, non-finite, label outside [-1, 1], no neutral before
    them, a second neutral) go to ``on_skip(frame, why)``. Frames are aligned in vectorised batches of
    ``align_batch`` (order may change within a batch). Memory: one (neutral, s, R) per sequence plus a batch.
    ``basis`` f[K, V, 3]: the expression modes whose still points anchor the alignment (``rigid_prior``;
    default: the built-in AU fields on our topology).
    """
    ref = np.asarray(reference, np.float64)
    v = ref.shape[0]
    prior = rigid_prior(basis) if basis is not None and np.shape(basis)[1:] == (v, 3) else _default_prior(v)
    neutrals: dict = {}
    pending: list = []
    report = on_skip if on_skip is not None else (lambda fr, why: None)

    def flush():
        f = np.stack([np.asarray(p.vertices, np.float64) for p, _ in pending])
        refs = np.stack([neutrals[key][0] for _, key in pending])
        aligned = robust_rigid_align(f, refs, prior=prior)
        out = []
        for (fr, key), al, nref in zip(pending, aligned, refs, strict=True):
            _, s, r = neutrals[key]
            out.append((fr, (s * (al - nref) @ r.T).astype(np.float32)))
        pending.clear()
        return out

    for fr in frames:
        verts = np.asarray(fr.vertices, np.float64)
        key = (str(fr.subject), str(fr.sequence))
        va = (float(fr.valence), float(fr.arousal))
        if verts.shape != (v, 3) or not np.all(np.isfinite(verts)):
            report(fr, f"vertices {verts.shape} (need [{v}, 3], finite)")
        elif not all(np.isfinite(va)) or not all(-1.0 <= x <= 1.0 for x in va):
            report(fr, f"label {va} outside [-1, 1]")
        elif fr.is_neutral:
            if key in neutrals:
                report(fr, f"second neutral for sequence {key[1]!r}")
                continue
            r, s, _ = similarity_fit(verts, ref)
            neutrals[key] = (verts, s, r)
            if include_neutral:
                yield fr, np.zeros((v, 3), np.float32)
        elif key not in neutrals:
            report(fr, f"no neutral seen before this frame for sequence {key[1]!r}")
        else:
            pending.append((fr, key))
            if len(pending) >= align_batch:
                yield from flush()
    if pending:
        yield from flush()


NUM_COMPONENTS = 8
"""SPLOCS components per class unless told otherwise (small K keeps the build fast)."""


def build_affect_model(
    frames: Iterable,
    morphable: MorphableModel,
    *,
    grid: AffectGrid = AffectGrid(),
    num_components: int = NUM_COMPONENTS,
    max_frames_per_class: int = 256,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
    include_neutral: bool = True,
    splocs_iterations: int = 10,
    splocs_admm_steps: int = 10,
    sparsity: float = 2.0,
    name: str = "affect-model",
    source: str = "",
    classes_per_call: int = 16,
    align_batch: int = 256,
    au_names: tuple[str, ...] | None = None,
) -> tuple[AffectModel, BuildReport]:
    """Build an ``AffectModel`` from a stream of gallery frames (see the module docstring).

    Args:
        frames: ``GalleryFrame``-like objects; each sequence's neutral before its other frames (frames of
            a sequence whose neutral has not been seen are reported and skipped).
        morphable: the face model (its ``mean`` defines the canonical frame; stored in the model).
        grid: the V-A class grid.
        num_components: SPLOCS components K per class (small K keeps the build fast).
        max_frames_per_class: reservoir size per class for SPLOCS (the mean uses every frame).
        seed: reservoir sampling seed.
        progress: called with 1 after each frame read (e.g. ``tqdm.update``).
        include_neutral: count neutral frames (deformation 0, label as given) as data of their class.
        splocs_iterations / splocs_admm_steps / sparsity: SPLOCS settings.
        name / source: recorded in the metadata.
        classes_per_call: classes per compiled SPLOCS call at the largest reservoir size (memory bound; 4x as
            many for the classes that fit a quarter of it: two compiled shapes, ``_size_groups``).
        align_batch: frames rigidly aligned together (vectorised); bounds the frames held at once.
        au_names: names of the frames' ``au`` intensities. When given and every used frame carries them,
            ``class_au`` is their exact class mean (neutral frames count as 0); otherwise the class means are
            projected onto the morphable's expression basis (``project_action_units``).

    Returns:
        (model, report).
    """
    t0 = time.perf_counter()
    mean = np.asarray(morphable.mean, np.float64)
    stats = _ClassStats.empty(grid.num_classes, mean.shape[0], max_frames_per_class, seed, au_names)
    frames = stats.counted(frames, progress)
    for fr, d in iter_deformations(
        frames,
        mean,
        include_neutral=include_neutral,
        on_skip=stats.skip,
        align_batch=align_batch,
        basis=np.asarray(morphable.expression_basis) if morphable.num_expression > 0 else None,
    ):
        stats.add(grid, fr, d)
    t1 = time.perf_counter()

    source_of = nearest_populated(grid, stats.counts)
    class_mean, class_lab = _class_means(stats, grid)
    class_mean = class_mean[source_of]
    au_names, class_au, au_source = _class_action_units(stats, morphable, class_mean, source_of, au_names)
    splocs = {"iterations": splocs_iterations, "admm_steps": splocs_admm_steps, "sparsity": sparsity}
    comps, wmean, wstd = _class_components(
        stats.reservoirs,
        mean,
        grid.num_classes,
        int(num_components),
        classes_per_call,
        sparsity=sparsity,
        num_iterations=splocs_iterations,
        admm_steps=splocs_admm_steps,
    )
    t2 = time.perf_counter()

    report = _report(stats, source_of, t1 - t0, t2 - t1)
    meta = {
        "name": name,
        "source": source,
        "frames_used": report.frames_used,
        "sequences": report.sequences,
        "num_components": int(num_components),
        "max_frames_per_class": int(max_frames_per_class),
        "include_neutral": bool(include_neutral),
        "splocs": splocs,
        "empty_class_rule": "nearest_populated",
        "class_au": au_source,
        "seed": seed,
    }
    parts = (class_mean, class_lab, comps[source_of], wmean[source_of], wstd[source_of], class_au)
    model = _assemble_model(morphable, grid, stats.counts, source_of, parts, au_names, meta)
    return model, report


def _assemble_model(morphable, grid, counts, source_of, parts, au_names, meta) -> AffectModel:
    """The ``AffectModel`` pytree from the build's host arrays (``parts``: class means f[C, V, 3], labels
    f[C, 2], components, weight mean and std, class AU intensities f[C, U])."""
    class_mean, class_lab, comps, wmean, wstd, class_au = parts
    return AffectModel(
        morphable=morphable,
        class_mean=jnp.asarray(class_mean),
        class_count=jnp.asarray(counts.astype(np.int32)),
        class_source=jnp.asarray(source_of.astype(np.int32)),
        class_label=jnp.asarray(class_lab.astype(np.float32)),
        components=jnp.asarray(comps),
        weight_mean=jnp.asarray(wmean),
        weight_std=jnp.asarray(wstd),
        class_au=jnp.asarray(class_au),
        resting_expression=jnp.asarray(resting_tolerance(morphable)),
        grid=grid,
        au_names=tuple(au_names),
        metadata=json.dumps(meta, sort_keys=True),
    )


@dataclasses.dataclass
class _ClassStats:
    """What one pass over the gallery accumulates: per class an exact sum, count, labels and a reservoir."""

    sums: np.ndarray  # f64[C, V, 3]
    counts: np.ndarray  # i64[C]
    labels: list  # per class: [(V, A), ...]
    reservoirs: dict  # class -> _Reservoir (populated classes only)
    rng: np.random.Generator
    capacity: int
    skipped: list = dataclasses.field(default_factory=list)  # the first 1000 reasons
    num_skipped: int = 0
    frames_read: int = 0
    sequences: set = dataclasses.field(default_factory=set)
    au_sums: np.ndarray | None = None  # f64[C, K]: the frames' own AU intensities; None -> projection

    @classmethod
    def empty(
        cls, num_classes: int, num_vertices: int, capacity: int, seed: int, au_names=None
    ) -> "_ClassStats":
        return cls(
            sums=np.zeros((num_classes, num_vertices, 3), np.float64),
            counts=np.zeros(num_classes, np.int64),
            labels=[[] for _ in range(num_classes)],
            reservoirs={},
            rng=np.random.default_rng(seed),
            capacity=capacity,
            au_sums=None if au_names is None else np.zeros((num_classes, len(au_names)), np.float64),
        )

    def skip(self, fr, why):
        self.num_skipped += 1
        if len(self.skipped) < 1000:
            self.skipped.append(f"{getattr(fr, 'source', '?')}: {why}")

    def counted(self, frames, progress):
        """``frames``, counting each one read (and ticking ``progress``)."""
        for fr in frames:
            self.frames_read += 1
            if progress is not None:
                progress(1)
            yield fr

    def add(self, grid: AffectGrid, fr, d: np.ndarray):
        """One aligned deformation ``d`` (canonical frame) of frame ``fr`` into its V-A class."""
        self.sequences.add((str(fr.subject), str(fr.sequence)))
        c = int(class_index_np(grid, fr.valence, fr.arousal))
        self.sums[c] += d
        self.counts[c] += 1
        self.au_sums = _add_frame_au(self.au_sums, c, fr)
        self.labels[c].append((float(fr.valence), float(fr.arousal)))
        if c not in self.reservoirs:
            self.reservoirs[c] = _Reservoir(self.capacity, d.shape)
        self.reservoirs[c].add(d, self.rng)


def _report(stats: _ClassStats, source_of: np.ndarray, streaming: float, splocs: float) -> BuildReport:
    """The build's bookkeeping from the streamed statistics and the two phases' durations (s)."""
    counts = stats.counts
    empty = tuple(int(c) for c in np.flatnonzero(counts == 0))
    return BuildReport(
        frames_read=stats.frames_read,
        frames_used=int(counts.sum()),
        sequences=len(stats.sequences),
        skipped=tuple(stats.skipped),
        num_skipped=stats.num_skipped,
        class_count=tuple(int(c) for c in counts),
        empty_classes=empty,
        filled_from={c: int(source_of[c]) for c in empty if counts.sum() > 0},
        seconds_streaming=streaming,
        seconds_splocs=splocs,
        splocs_seconds_per_class=splocs / max(len(stats.reservoirs), 1),
    )


def _class_means(stats: _ClassStats, grid: AffectGrid) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean deformation f32[C, V, 3] (0 where empty) and label f32[C, 2] (median, else centre)."""
    nc = grid.num_classes
    class_mean = np.zeros((nc,) + stats.sums.shape[1:], np.float32)
    class_lab = class_centres_np(grid).copy()
    for c in range(nc):
        if stats.counts[c] > 0:
            class_mean[c] = (stats.sums[c] / stats.counts[c]).astype(np.float32)
            class_lab[c] = np.median(np.asarray(stats.labels[c], np.float64), axis=0)
    return class_mean, class_lab


SMALL_CLASS_FRACTION = 4
"""Classes of at most 1/4 of the largest reservoir go through SPLOCS padded to that quarter, 4x as many per
call (``_class_components``): in the default gallery 319 of 400 classes hold <= 64 frames (median 41) and
padding every class to 256 made 102,400 frame slots for 20,819 frames; two sizes make 45,056."""


def _size_groups(sizes: dict, classes_per_call: int) -> list[tuple[list, int, int]]:
    """Populated classes (class -> reservoir size) as (classes, padded frames, classes per call) groups: the
    classes that fit a quarter of the largest reservoir (when that quarter holds 16 frames or more), then
    the rest, each group padded to its own largest size. Two compiled shapes, the same memory per call."""
    fmax = max(sizes.values())
    small = fmax // SMALL_CLASS_FRACTION
    groups = [sorted(c for c in sizes if sizes[c] <= small), sorted(c for c in sizes if sizes[c] > small)]
    if small < 16 or not groups[0]:
        return [(sorted(sizes), fmax, classes_per_call)]
    per_call = (classes_per_call, classes_per_call * SMALL_CLASS_FRACTION)
    return [
        (ids, max(sizes[c] for c in ids), per) for ids, per in zip(groups, per_call[::-1], strict=True) if ids
    ]


def _class_components(reservoirs: dict, mean: np.ndarray, nc: int, k: int, classes_per_call: int, **splocs):
    """SPLOCS components f32[C, K, V, 3] and weight mean/std f32[C, K] of the populated classes (0 elsewhere).

    Classes go through a compiled ``learn_splocs_batch``, ``classes_per_call`` at a time padded to the
    largest reservoir (masked); the classes that fit a quarter of it, 4x as many at a time padded to that
    quarter (``_size_groups``: two compiled shapes, a quarter of the padded work in the default gallery).
    """
    v = mean.shape[0]
    comps = np.zeros((nc, k, v, 3), np.float32)
    wmean = np.zeros((nc, k), np.float32)
    wstd = np.zeros((nc, k), np.float32)
    if not reservoirs:
        return comps, wmean, wstd
    tris = topo.face_topology().triangles if v == topo.NUM_LANDMARKS else None
    if tris is None:
        raise ValueError(f"SPLOCS needs the face topology (478 vertices); the morphable model has {v}")
    dist = geodesic_distances(mean, tris)
    sizes = {c: reservoirs[c].size for c in reservoirs}
    for group, fmax, per_call in _size_groups(sizes, max(1, int(classes_per_call))):
        chunk = min(per_call, len(group))
        for start in range(0, len(group), chunk):
            ids = group[start : start + chunk]
            x = np.zeros((chunk, fmax, v, 3), np.float32)
            m = np.zeros((chunk, fmax), bool)
            for j, c in enumerate(ids):
                x[j, : sizes[c]] = reservoirs[c].data[: sizes[c]]
                m[j, : sizes[c]] = True
            res = learn_splocs_batch(x, m, mean, tris, num_components=k, distances=dist, **splocs)
            cj, wj = np.asarray(res.components), np.asarray(res.weights)
            for j, c in enumerate(ids):
                comps[c] = cj[j]
                wmean[c] = wj[j, : sizes[c]].mean(0)
                wstd[c] = wj[j, : sizes[c]].std(0)
    return comps, wmean, wstd


def _class_action_units(stats: _ClassStats, morphable: MorphableModel, class_mean, source_of, au_names):
    """Per-class AU intensities: the frames' own (exact class means) when every used frame carried them,
    else the class means projected onto the morphable's expression basis. Returns (names, f32[C, K], how)."""
    if stats.au_sums is not None:
        counts = np.maximum(stats.counts, 1)[:, None]
        return tuple(au_names), (stats.au_sums / counts)[source_of].astype(np.float32), "gallery intensities"
    names, basis, how = au_projection_basis(morphable)
    return tuple(names), project_action_units(class_mean, basis), how


def _add_frame_au(sums: np.ndarray | None, c: int, frame) -> np.ndarray | None:
    """Accumulate a frame's own AU intensities into its class (neutral frames: 0); None (projection
    instead) once a frame without them, or of another length, comes."""
    if sums is None:
        return None
    au = getattr(frame, "au", None)
    if frame.is_neutral:
        return sums
    if au is None or np.shape(au) != sums.shape[1:] or not np.all(np.isfinite(au)):
        return None
    sums[c] += np.asarray(au, np.float64)
    return sums
