"""The ``affectsynth`` command line: parse, load, call one pipeline function, write. No maths here.

Exit codes: 0 success; 1 internal error; 2 bad input (image, face, target, output path); 3 missing or
corrupt model file; 130 interrupted.
"""

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import OutputError
from .guard import guarded

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Put a chosen valence/arousal affect on a face photo.",
    pretty_exceptions_enable=False,
)


def _note(msg: str):
    typer.echo(msg, err=True)


class _Stages:
    """Wall time per stage of a command, printed to stderr when ``AFFECTSYNTH_TIMINGS`` is set (for
    ``scripts/bench_latency.py``): ``timing: import 1.10 s, detect 0.30 s, ...``."""

    def __init__(self):
        import os
        import time

        self._now = time.perf_counter
        self._on = bool(os.environ.get("AFFECTSYNTH_TIMINGS"))
        self._last = self._now()
        self.stages: list[tuple[str, float]] = []

    def __call__(self, name: str):
        t = self._now()
        self.stages.append((name, t - self._last))
        self._last = t

    def report(self):
        if self._on:
            _note("timing: " + ", ".join(f"{n} {s:.3f} s" for n, s in self.stages))


def _parse_target(text: str) -> tuple[float, float]:
    parts = text.replace(" ", "").split(",")
    if len(parts) != 2:
        raise ValueError
    return float(parts[0]), float(parts[1])


def _targets(valence, arousal, emotion, target) -> list[tuple[str, float, float]]:
    """Collect (name, V, A) from --valence/--arousal, --emotion (repeatable) and --target V,A (repeatable)."""
    from ..affect.grid import EMOTION_PRESETS
    from ..errors import TargetError
    from ..pipeline import check_target

    out = []
    if (valence is None) != (arousal is None):
        raise TargetError("target", "give both --valence and --arousal")
    if valence is not None:
        check_target(valence, arousal)
        out.append((f"v{valence:+.2f}_a{arousal:+.2f}", valence, arousal))
    for name in emotion or ():
        key = name.strip().lower()
        if key not in EMOTION_PRESETS:
            raise TargetError(
                "--emotion", f"unknown emotion {name!r}; known: {', '.join(sorted(EMOTION_PRESETS))}"
            )
        v, a = EMOTION_PRESETS[key]
        out.append((key, v, a))
    for t in target or ():
        try:
            v, a = _parse_target(t)
        except ValueError:
            raise TargetError("--target", f"expected 'V,A' such as 0.8,0.4, got {t!r}") from None
        check_target(v, a)
        out.append((f"v{v:+.2f}_a{a:+.2f}", v, a))
    if not out:
        raise TargetError("target", "no target: give --valence V --arousal A, --emotion NAME or --target V,A")
    return out


def _options(neutralize: bool, sample: bool, strength: float, exact_classes: bool):
    from ..pipeline import SynthesisOptions

    return SynthesisOptions(
        neutralize=neutralize, sample=sample, strength=strength, interpolate=not exact_classes
    )


ModelOpt = Annotated[
    Path | None, typer.Option("--model", "-m", help="Model file (.npz); default: the built-in model.")
]
NeutralizeOpt = Annotated[
    bool, typer.Option("--neutralize/--no-neutralize", help="Remove the input's own expression first.")
]
SampleOpt = Annotated[
    bool, typer.Option("--sample", help="Draw a varied expression of the target's class, not its mean.")
]
StrengthOpt = Annotated[
    float, typer.Option("--strength", min=0.0, max=2.0, help="Scale of the applied expression.")
]
ExactOpt = Annotated[
    bool,
    typer.Option(
        "--exact-classes", help="Use the target class's mean exactly (the paper), no V-A interpolation."
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for --sample.")]


@app.command()
@guarded
def synth(
    input: Annotated[Path, typer.Argument(help="Input photo (JPEG, PNG, WebP, TIFF, ...).")],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Output image file; a folder when several targets are given."),
    ],
    valence: Annotated[
        float | None, typer.Option("--valence", "-v", help="Target valence in [-1, 1].")
    ] = None,
    arousal: Annotated[
        float | None, typer.Option("--arousal", "-a", help="Target arousal in [-1, 1].")
    ] = None,
    emotion: Annotated[
        list[str] | None, typer.Option("--emotion", "-e", help="Preset target, e.g. happy, sad (repeatable).")
    ] = None,
    target: Annotated[
        list[str] | None, typer.Option("--target", "-t", help="Target as 'V,A' (repeatable).")
    ] = None,
    model: ModelOpt = None,
    face_index: Annotated[
        int | None, typer.Option("--face-index", help="Which face when there are several (0 = largest).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing output files.")] = False,
    neutralize: NeutralizeOpt = True,
    sample: SampleOpt = False,
    strength: StrengthOpt = 1.0,
    exact_classes: ExactOpt = False,
    seed: SeedOpt = 0,
):
    """Synthesise the target affect(s) on the face in INPUT and write the result(s)."""
    _QUICK_EXIT[0] = True
    clock = _Stages()
    from .. import pipeline  # noqa: F401  (JAX and the stages, timed apart)

    clock("import")
    goals = _targets(valence, arousal, emotion, target)
    outs = _output_paths(input, output, [name for name, _, _ in goals], overwrite)
    opts = _options(neutralize, sample, strength, exact_classes)
    image, lm, mdl = _load_face_and_program(input, face_index, model, opts, len(goals), clock)
    images, fit_rms = _synthesize_targets(image, lm, goals, mdl, opts, seed if sample else None, clock)
    from ..io import save_image

    for (_, v, a), out, im in zip(goals, outs, images, strict=True):
        save_image(out, im)
        typer.echo(f"wrote {out}  (V={v:+.2f}, A={a:+.2f}, fit rms {fit_rms:.3f})")
    clock("save")
    clock.report()


SAVE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff")


def _output_paths(input: Path, output: Path, names: list[str], overwrite: bool) -> list[Path]:
    """Where each target's image goes: ``output`` itself for one target with a file name, else
    ``output/<input stem>_<name><input's suffix, or .png>``; each checked (``io.check_output_path``)."""
    from ..io import check_output_path

    if len(names) == 1 and output.suffix:
        return [check_output_path(output, overwrite=overwrite, inputs=[input])]
    if output.exists() and not output.is_dir():
        raise OutputError(output, "several targets need an output folder, but this is a file")
    ext = input.suffix.lower() if input.suffix.lower() in SAVE_SUFFIXES else ".png"
    return [
        check_output_path(output / f"{input.stem}_{name}{ext}", overwrite=overwrite, inputs=[input])
        for name in names
    ]


def _load_face_and_program(input: Path, face_index, model_path, opts, batch: int, clock: "_Stages"):
    """The photo (uint8 RGB as decoded: the pipeline edits it without a full-size float copy), its chosen
    face's landmarks and the model, with the synthesis program for ``batch`` faces loaded meanwhile on a
    second thread (the photo's decoding, MediaPipe's import and XLA's loading of the stored executable
    overlap; a daemon thread, so a failed detection does not wait for it). The default model is loaded on
    that thread too (its first-ever build overlaps the detection); a model file the user names is read
    first, so its errors come before the photo's."""
    import threading

    import numpy as np

    from ..compiled import source_hash
    from ..face.landmarks import detect_landmarks
    from ..io import load_image
    from ..pipeline import load_model
    from ..working import prepare, prepare_default

    models = [] if model_path is None else [load_model(model_path)]
    clock("load model")
    failed: list[BaseException] = []
    # The program key's source hash parses the package's modules (``ast``); CPython 3.11's AST constructor
    # keeps its recursion depth per interpreter, not per thread, so parsing on the loader thread while
    # something on the main thread (detection's imports) built ASTs too failed once in a full test run
    # ("SystemError: AST constructor recursion depth mismatch"). Hashed here first (cached for the
    # process, ~0.09 s, work the thread no longer does); the thread only looks it up.
    source_hash()

    dtypes = (np.uint8,)  # the paste-back's tile program (only without OpenCV) for uint8 photos only

    def load_program():
        try:
            if models:  # compiled once, kept in the user cache (``affectsynth warmup``)
                prepare(models[0], opts, batch, photo_dtypes=dtypes, quick=True)
            else:  # the default model (built and cached at first use, the programs compiled meanwhile)
                models.append(prepare_default(opts, batch, photo_dtypes=dtypes, quick=True))
        except BaseException as e:  # re-raised on the main thread
            failed.append(e)

    loader = threading.Thread(target=load_program, name="affectsynth-load-program", daemon=True)
    loader.start()
    image, info = load_image(input, return_info=True, dtype=np.uint8)
    for c in info.conversions:
        _note(f"note: {input}: {c}")
    clock("load image")
    lm, det = detect_landmarks(image, face_index=face_index, source=str(input), return_detection=True)
    if det.num_faces > 1 or det.upscaled:
        _note(f"note: {input}: {det.describe()}")
    clock("detect")
    loader.join()
    if failed:
        raise failed[0]
    clock("load program")  # what the detection did not hide (the default model's load included)
    return image, lm, models[0]


def _synthesize_targets(image, lm, goals, mdl, opts, seed: int | None, clock: "_Stages"):
    """One batch: the photo under every (name, V, A) goal. Returns (images u8[n, H, W, 3] for a uint8
    photo, the fit's RMS). ``seed`` (None unless sampling) seeds the samples."""
    import numpy as np

    from ..pipeline import synthesize_batch

    n = len(goals)
    key = None
    if seed is not None:
        import jax

        key = jax.random.PRNGKey(seed)
    targets = np.array([[v, a] for _, v, a in goals], np.float32)
    # the photo broadcast, not repeated: the working-crop path only reads it (its output is a fresh array)
    photos = np.broadcast_to(image, (n, *image.shape))
    res = synthesize_batch(photos, np.repeat(lm[None], n, 0), targets, mdl, options=opts, key=key)
    images = np.asarray(res.images)
    clock("run")
    return images, float(np.asarray(res.fit_rms)[0])  # NumPy: indexing a JAX array compiles a program


@app.command()
@guarded
def warmup(
    model: ModelOpt = None,
    batch: Annotated[
        list[int] | None,
        typer.Option(
            "--batch", "-b", min=1, help="Batch sizes to compile (repeatable; default 1: one target)."
        ),
    ] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Compile again even when a program is cached.")
    ] = False,
):
    """Compile the synthesis program ahead of time and keep it in the user cache (``synth`` then starts fast).

    Compiles what ``synth`` uses with its default options: one program per batch size (= number of targets).
    """
    import time

    from ..compiled import cache_root, enable_persistent_cache, enabled
    from ..pipeline import load_model
    from ..working import prepare, prepare_default

    if not enabled():
        _note("note: AFFECTSYNTH_PROGRAM_CACHE is off; nothing is kept")
    enable_persistent_cache()
    opts = _options(True, False, 1.0, False)
    sizes = sorted(set(batch or [1]))
    if model is None:  # the default model: its first-use build overlaps the first program's compilation
        typer.echo(f"loading the expression model, compiling for {sizes[0]} face(s) per call...", nl=False)
        t = time.perf_counter()
        mdl = prepare_default(opts, sizes[0], rebuild=rebuild)
        typer.echo(f" {time.perf_counter() - t:.1f} s")
        sizes = sizes[1:]
    else:
        mdl = load_model(model)
    for k, b in enumerate(sizes, 1):
        typer.echo(
            f"[{k}/{len(sizes)}] compiling the synthesis program for {b} face(s) per call...", nl=False
        )
        t = time.perf_counter()
        prepare(mdl, opts, b, rebuild=rebuild)
        typer.echo(f" {time.perf_counter() - t:.1f} s")
    typer.echo(f"programs kept in {cache_root()}")


DEMO_EMOTIONS = (
    "neutral",
    "happy",
    "excited",
    "surprised",
    "afraid",
    "angry",
    "disgusted",
    "sad",
    "bored",
    "calm",
)


@app.command()
@guarded
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the demo images.")] = Path("out"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
    model: ModelOpt = None,
):
    """Synthesise several emotions on skimage's astronaut photo; write PNGs and a contact sheet."""
    import numpy as np
    import skimage.data

    from ..affect.grid import EMOTION_PRESETS
    from ..face.landmarks import detect_landmarks
    from ..io import check_output_path, save_image
    from ..pipeline import load_model, synthesize_batch
    from .sheets import contact_sheet, face_box

    names = [e for e in DEMO_EMOTIONS if e in EMOTION_PRESETS]
    outs = [check_output_path(output / f"astronaut_{n}.png", overwrite=overwrite) for n in names]
    sheet_path = check_output_path(output / "contact_sheet.png", overwrite=overwrite)
    image = skimage.data.astronaut().astype(np.float32) / 255.0
    lm = detect_landmarks(image, source="skimage.data.astronaut()")
    typer.echo("loading the expression model (built and cached at first use)...")
    mdl = load_model(model)
    targets = np.array([EMOTION_PRESETS[n] for n in names], np.float32)
    typer.echo(f"synthesising {len(names)} targets...")
    res = synthesize_batch(
        np.repeat(image[None], len(names), 0), np.repeat(lm[None], len(names), 0), targets, mdl
    )
    imgs = np.asarray(res.images)
    t, left, b, r = face_box(lm, *image.shape[:2])
    tiles, labels = [image[t:b, left:r]], ["input"]
    for n, out, im, (v, a) in zip(names, outs, imgs, targets, strict=True):
        save_image(out, im)
        tiles.append(im[t:b, left:r])
        labels.append(f"{n} V={v:+.2f} A={a:+.2f}")
    save_image(
        sheet_path,
        contact_sheet(tiles, labels, columns=4, title="affectsynth demo: skimage.data.astronaut()"),
    )
    typer.echo(f"wrote {len(outs)} images and {sheet_path}")


def _mount_subapps():
    from .bulk import register
    from .models import evaluate_app, model_app

    register(app)
    app.add_typer(model_app, name="model", help="Build, inspect and import affect models.")
    app.add_typer(evaluate_app, name="evaluate", help="Evaluation protocols (the paper's section 4.1).")


_mount_subapps()


_QUICK_EXIT: list[bool] = [False]
"""Set by a command whose process has nothing left to do after it (``synth``): ``main`` then ends the
process without the interpreter's teardown, which spends ~0.6 s freeing XLA and MediaPipe objects on two
CPU cores. Outputs are written (atomically) and closed by then; the streams are flushed. Only ``main``
does this, so the commands run in-process (tests, ``CliRunner``) are unaffected."""


def _exit_code(code) -> int:
    """``SystemExit.code`` as an exit status (None: 0; a message: printed, 1)."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _small_pages():
    """Stop NumPy asking the kernel for transparent huge pages (``madvise``) for its large arrays, in this
    process only (the command line's own). Where the kernel compacts memory to find a huge page at the
    first touch of a fresh array (``defrag`` set to ``madvise``, the common default), a fresh process's
    first full-size arrays cost far more than their copies: measured at 3000 px, load 6, the output's
    108 MB float first fill 0.8-1.35 s with huge pages, 0.09-0.18 s without. The library leaves NumPy's
    default alone (its caller owns the process, and a long-lived one reuses its pages)."""
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # another NumPy: its default stays
        return
    _set_madvise_hugepage(False)


def main():
    """Console-script entry point."""
    _small_pages()
    try:
        app()
        code = 0
    except SystemExit as e:
        code = _exit_code(e.code)
    except BrokenPipeError:  # pragma: no cover
        code = 1
    if _QUICK_EXIT[0] and not os.environ.get("AFFECTSYNTH_FULL_EXIT"):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more to say
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
