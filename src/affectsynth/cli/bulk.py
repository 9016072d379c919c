"""Bulk commands of the CLI: ``grid`` (V-A contact sheet), ``animate`` (V-A path), ``augment`` (data sets).

Registered on the main app by ``register(app)``. Parse, validate everything that can be validated before any
heavy work, call ``batch``'s job logic with the pipeline plugged in, write. Exit codes as in ``cli``: 0 done,
1 internal error, 2 bad input (image, face, target, output path; for ``augment``: every input was bad),
3 missing or corrupt model file, 130 interrupted.
"""

import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from ..errors import AffectsynthError, InputImageError, OptionsError, OutputError, TargetError


class Backend:
    """The pipeline as the bulk commands use it (tests substitute a cheap fake)."""

    def load_model(self, path):
        from ..pipeline import load_model

        return load_model(path)

    def classes(self, model, populated_only: bool) -> list[tuple[int, float, float]]:
        """(class id, centre V, centre A) of the model's grid classes (only populated ones if asked)."""
        from ..affect import grid as affect

        counts = np.asarray(model.class_count)
        ids = [i for i in range(model.grid.num_classes) if counts[i] > 0 or not populated_only]
        centres = affect.class_centres_np(model.grid)
        return [(i, float(centres[i, 0]), float(centres[i, 1])) for i in ids]

    def synth(self, model, options):
        """``f(images, landmarks, targets, keys, crop) -> SynthesisResult`` with one PRNG key per item."""
        from ..pipeline import synthesize_batch

        def run(images, landmarks, targets, keys, crop):
            return synthesize_batch(images, landmarks, targets, model, options=options, keys=keys, crop=crop)

        return run

    def crop(self, options):
        """None: ``synthesize_batch`` resamples each face into its fixed-size working crop, so one program
        (per batch size and options) serves photos of every size."""
        return None

    def detect(self, note, face_index=None):
        from ..face.landmarks import detect_landmarks

        def run(image, source):
            lm, det = detect_landmarks(
                image, face_index=face_index, source=str(source), return_detection=True
            )
            if det.num_faces > 1 or det.upscaled:
                note(f"note: {source}: {det.describe()}")
            return lm

        return run

    def presets(self) -> dict:
        from ..affect.grid import EMOTION_PRESETS

        return dict(EMOTION_PRESETS)

    def options(self, **kw):
        from ..pipeline import SynthesisOptions

        return SynthesisOptions(**kw)


_backend = Backend()


def _note(msg: str):
    typer.echo(msg, err=True)


def _load_photo(path: Path, face_index, *, max_pixels=None):
    from .augment import default_loader

    image, notes = default_loader(path)
    for n in notes:
        _note(f"note: {path}: {n}")
    lm = _backend.detect(_note, face_index)(image, path)
    return image, np.asarray(lm, np.float32)


def _check_strength(strength: float):
    if not np.isfinite(strength) or not 0.0 <= strength <= 2.0:
        raise TargetError("--strength", f"must be in [0, 2], got {strength}")


ModelOpt = Annotated[Path | None, typer.Option("--model", "-m", help="Model file (.npz); default: built-in.")]
FaceOpt = Annotated[
    int | None, typer.Option("--face-index", help="Which face when there are several (0 = largest).")
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")]
NeutralizeOpt = Annotated[
    bool, typer.Option("--neutralize/--no-neutralize", help="Remove the input's expression first.")
]
StrengthOpt = Annotated[float, typer.Option("--strength", help="Scale of the applied expression, in [0, 2].")]
ChunkOpt = Annotated[int, typer.Option("--batch-size", min=1, max=256, help="Images per compiled batch.")]


def grid(
    input: Annotated[Path, typer.Argument(help="Input photo.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Contact sheet image (.png, .jpg, ...).")],
    size: Annotated[int, typer.Option("--size", help="Targets per side: SIZE x SIZE over the extent.")] = 5,
    extent: Annotated[
        float, typer.Option("--extent", help="Targets span [-EXTENT, EXTENT] on both axes.")
    ] = 0.8,
    tile: Annotated[int, typer.Option("--tile", min=32, max=1024, help="Tile side in the sheet (px).")] = 192,
    model: ModelOpt = None,
    face_index: FaceOpt = None,
    overwrite: OverwriteOpt = False,
    neutralize: NeutralizeOpt = True,
    strength: StrengthOpt = 1.0,
    exact_classes: Annotated[
        bool, typer.Option("--exact-classes", help="Class means exactly (the paper).")
    ] = False,
    batch_size: ChunkOpt = 8,
):
    """A V-A grid contact sheet of one photo (the paper's Fig. 5): valence along x, arousal along y."""
    from ..affect.paths import grid_targets
    from ..io import check_output_path, save_image
    from .inputs import ensure_output_dir
    from .sheets import face_box
    from .targets import grid_sheet, synthesize_targets

    if not 1 <= size <= 15:
        raise TargetError("--size", f"must be in 1..15, got {size}")
    targets = grid_targets(size, extent)
    _check_strength(strength)
    out = check_output_path(output, overwrite=overwrite, inputs=[input])
    ensure_output_dir(out.parent if str(out.parent) else Path("."))
    image, lm = _load_photo(input, face_index)
    mdl = _backend.load_model(model)
    opts = _backend.options(neutralize=neutralize, interpolate=not exact_classes, strength=strength)
    typer.echo(f"synthesising {len(targets)} targets...", err=True)
    imgs, rms = synthesize_targets(image, lm, targets, _backend.synth(mdl, opts), chunk=batch_size)
    t, left, b, r = face_box(lm, *image.shape[:2])
    tiles = [im[t:b, left:r] for im in imgs]
    sheet = grid_sheet(tiles, targets, size, tile=tile, title=f"{input.name}: valence (x) / arousal (y)")
    save_image(out, sheet)
    typer.echo(
        f"wrote {out}  ({size}x{size} targets over [-{extent:g}, {extent:g}]^2, fit rms {float(rms[0]):.3f})"
    )


def animate(
    input: Annotated[Path, typer.Argument(help="Input photo.")],
    path: Annotated[str, typer.Option("--path", "-p", help="Waypoints 'V,A V,A ...' or emotion names.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output folder (frames/ and the animation).")
    ],
    frames: Annotated[int, typer.Option("--frames", "-n", help="Number of frames (2..600).")] = 24,
    fps: Annotated[float, typer.Option("--fps", help="Frames per second (0 < fps <= 60).")] = 12.0,
    linear: Annotated[
        bool, typer.Option("--linear", help="Straight segments instead of a smooth spline.")
    ] = False,
    ease: Annotated[bool, typer.Option("--ease/--no-ease", help="Ease in and out at the ends.")] = True,
    mp4: Annotated[
        bool, typer.Option("--mp4", help="Also write MP4 (needs imageio-ffmpeg; else GIF only).")
    ] = False,
    crop_face: Annotated[
        bool, typer.Option("--crop-face", help="Frames show the face box, not the photo.")
    ] = False,
    model: ModelOpt = None,
    face_index: FaceOpt = None,
    overwrite: OverwriteOpt = False,
    neutralize: NeutralizeOpt = True,
    strength: StrengthOpt = 1.0,
    batch_size: ChunkOpt = 8,
):
    """Frames, a GIF (and optionally an MP4) of the face moving along a V-A path."""
    from ..affect.paths import parse_path, resample_path_jit
    from ..io import atomic_write_bytes, save_image
    from .inputs import ensure_output_dir, safe_stem
    from .media import encode_gif, mp4_available, write_mp4
    from .sheets import face_box
    from .targets import synthesize_targets

    waypoints = parse_path(path, _backend.presets())
    if not 2 <= frames <= 600:
        raise TargetError("--frames", f"must be in 2..600, got {frames}")
    if not (np.isfinite(fps) and 0 < fps <= 60):
        raise TargetError("--fps", f"must be in (0, 60], got {fps}")
    _check_strength(strength)
    stem = safe_stem(input.name)
    gif_path, mp4_path, frame_dir = output / f"{stem}.gif", output / f"{stem}.mp4", output / "frames"
    frame_paths = [frame_dir / f"{stem}_{i:04d}.png" for i in range(frames)]
    if not overwrite:
        clash = [p for p in (gif_path, mp4_path, *frame_paths) if p.exists()]
        if clash:
            raise OutputError(clash[0], "exists; pass --overwrite to replace it")
    if input.exists() and output.exists() and output.resolve() == input.resolve():
        raise OutputError(output, "output would overwrite the input file")
    ensure_output_dir(frame_dir)
    if mp4 and not mp4_available():
        _note("note: MP4 needs the optional package imageio-ffmpeg (not installed); writing GIF only")
        mp4 = False
    image, lm = _load_photo(input, face_index)
    targets = np.asarray(resample_path_jit(waypoints, frames, smooth=not linear, ease=ease))
    mdl = _backend.load_model(model)
    opts = _backend.options(neutralize=neutralize, interpolate=True, strength=strength)
    from tqdm import tqdm

    with tqdm(total=frames, unit="frame", desc="animate", file=sys.stderr, leave=False) as bar:
        imgs, _ = synthesize_targets(
            image, lm, targets, _backend.synth(mdl, opts), chunk=batch_size, on_chunk=bar.update
        )
    if crop_face:
        t, left, b, r = face_box(lm, *image.shape[:2])
        imgs = imgs[:, t:b, left:r]
    for p, im in zip(frame_paths, imgs, strict=True):
        save_image(p, im)
    atomic_write_bytes(gif_path, encode_gif(imgs, fps))
    wrote = [str(gif_path)]
    if mp4:
        write_mp4(mp4_path, imgs, fps)
        wrote.append(str(mp4_path))
    typer.echo(f"wrote {frames} frames in {frame_dir} and {', '.join(wrote)}")


def _parse_classes(text: str | None, backend_classes) -> list[tuple[int, float, float]]:
    """``None`` -> populated classes; ``all`` -> every class; ``3,45`` -> those (validated)."""
    if text is None:
        return backend_classes(True)
    every = backend_classes(False)
    if text.strip().lower() == "all":
        return every
    by_id = {c[0]: c for c in every}
    out = []
    for tok in text.replace(" ", "").split(","):
        if not tok:
            continue
        try:
            cid = int(tok)
        except ValueError:
            raise TargetError("--classes", f"expected class ids such as 3,45 or 'all', got {tok!r}") from None
        if cid not in by_id:
            raise TargetError("--classes", f"class {cid} does not exist (0..{max(by_id)})")
        if by_id[cid] not in out:
            out.append(by_id[cid])
    if not out:
        raise TargetError("--classes", "no class given")
    return out


def augment(
    input_dir: Annotated[Path, typer.Argument(help="Folder of input photos (only read).")],
    output_dir: Annotated[Path, typer.Argument(help="Output folder: images, labels.csv, skipped.csv.")],
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Class ids '3,45,...' or 'all'; default: populated classes."),
    ] = None,
    per_class: Annotated[
        int, typer.Option("--per-class", min=1, max=100, help="Images per (input, class).")
    ] = 1,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted job in OUTPUT_DIR.")
    ] = False,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Also scan sub-folders.")] = False,
    inputs: Annotated[
        Path | None, typer.Option("--inputs", help="CSV listing input files (relative to INPUT_DIR).")
    ] = None,
    batch_size: ChunkOpt = 8,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the per-item sampling keys.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="Output format: png, jpg or webp.")] = "png",
    model: ModelOpt = None,
    face_index: FaceOpt = None,
    neutralize: NeutralizeOpt = True,
    strength: StrengthOpt = 1.0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    engine: Annotated[
        str, typer.Option("--engine", help="local (this process) or ray (Ray Data: a cluster, GPUs).")
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray cluster: auto or ray://HOST:PORT; default: a local Ray."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Ray synthesis actors (default: per GPU/node).")
    ] = None,
    gpus_per_worker: Annotated[
        float, typer.Option("--gpus-per-worker", min=0.0, help="GPUs per Ray synthesis actor.")
    ] = 0.0,
):
    """Synthetic images of every input for each V-A class, with a labels CSV (class-median V-A labels)."""
    if engine not in ("local", "ray"):
        raise OptionsError("--engine", f"must be local or ray, got {engine!r}")
    if engine == "local" and (address or workers or gpus_per_worker):
        raise OptionsError("--engine", "--address, --workers and --gpus-per-worker need --engine ray")
    _check_strength(strength)
    ext = "." + fmt.lower().lstrip(".")
    if ext not in (".png", ".jpg", ".webp"):
        raise OutputError(fmt, "--format must be png, jpg or webp")
    sources = _augment_sources(input_dir, output_dir, inputs, recursive)
    labels = output_dir / "labels.csv"
    if labels.exists() and labels.stat().st_size > 0 and not resume:
        raise OutputError(labels, "exists: pass --resume to continue that job, or use a new output folder")
    mdl = _backend.load_model(model)
    chosen = _parse_classes(classes, lambda populated: _backend.classes(mdl, populated))
    opt_kw = dict(neutralize=neutralize, sample=per_class > 1, strength=strength)
    job = dict(input_dir=input_dir, per_class=per_class, batch_size=batch_size, resume=resume, seed=seed)
    job.update(ext=ext, progress=_bar_factory(progress), note=_note)
    if engine == "ray":
        ray_kw = dict(address=address, workers=workers, gpus_per_worker=gpus_per_worker)
        report = _augment_ray(sources, output_dir, chosen, mdl, opt_kw, face_index, job, ray_kw)
    else:
        from .augment import run_augment

        opts = _backend.options(**opt_kw)
        synth, detect = _backend.synth(mdl, opts), _backend.detect(_note, face_index)
        report = run_augment(
            sources, output_dir, chosen, synth=synth, detect=detect, crop=_backend.crop(opts), **job
        )
    _augment_summary(report, input_dir, len(chosen), per_class)


def _augment_sources(input_dir: Path, output_dir: Path, inputs: Path | None, recursive: bool) -> list[Path]:
    """The job's input files (from ``--inputs`` or a scan); creates ``output_dir``."""
    from .inputs import ensure_output_dir, read_input_list, scan_inputs

    if output_dir.resolve() == input_dir.resolve():
        raise OutputError(output_dir, "output folder is the input folder; use a separate folder")
    if inputs is not None:
        if not input_dir.is_dir():
            raise InputImageError(input_dir, "no such folder")
        sources = read_input_list(inputs, base=input_dir)
    else:
        sources = scan_inputs(input_dir, recursive=recursive, exclude=[output_dir])
    if not sources:
        raise InputImageError(
            input_dir, "no input images found (.jpg, .jpeg, .png, .webp, .tif, .tiff, .bmp)"
        )
    ensure_output_dir(output_dir)
    return sources


def _bar_factory(enabled: bool):
    from tqdm import tqdm

    def bar(total, desc):
        return tqdm(
            total=total, unit="img", desc=desc, file=sys.stderr, disable=not enabled, dynamic_ncols=True
        )

    return bar


def _augment_ray(sources, output_dir, chosen, mdl, opt_kw: dict, face_index, job: dict, ray_kw: dict):
    """``augment --engine ray``: connect to (or start) Ray and run the job there."""
    try:
        from .bulk_ray import ray_session, run_augment_ray
    except ImportError:
        raise OptionsError("--engine ray", "needs Ray: pip install 'affectsynth[ray]'") from None
    crop = _backend.crop(_backend.options(**opt_kw))
    with ray_session(ray_kw.pop("address")):
        return run_augment_ray(
            sources, output_dir, chosen, model=mdl, options=opt_kw, crop=crop, face_index=face_index,
            **ray_kw, **job,
        )  # fmt: skip


def _augment_summary(report, input_dir: Path, n_classes: int, per_class: int) -> None:
    """Print the job's outcome; exit 2 when every input was bad, 1 when nothing could be written."""
    for src, reason in report.skipped:
        _note(f"skipped: {src}: {reason}")
    skipped = f"; {report.bad_inputs} input(s) skipped, see {report.skipped_path}" if report.skipped else ""
    typer.echo(
        f"wrote {report.written} image(s) for {n_classes} class(es) x {per_class} "
        f"({report.already_done} already done){skipped}; labels in {report.labels_path}"
    )
    if report.written == 0 and report.pending > 0 and report.already_done == 0:
        if report.prepared == 0:
            raise InputImageError(
                input_dir, f"no usable input: {report.bad_inputs} skipped ({report.skipped_path})"
            )
        raise AffectsynthError("augment", f"nothing was written (see {report.skipped_path})")


def register(app: typer.Typer) -> None:
    """Add ``grid``, ``animate`` and ``augment`` to ``app``, wrapped in ``cli.guarded`` (exit codes)."""
    from .guard import guarded

    app.command("grid")(guarded(grid))
    app.command("animate")(guarded(animate))
    app.command("augment")(guarded(augment))
