"""``affectsynth model ...`` and ``affectsynth evaluate ...``: build/inspect/import affect models, run the
paper's V-A regression protocol. Parsing, files and printing only; the work is in ``model``, ``gallery``,
``evaluate`` (imported lazily so ``affectsynth --help`` stays fast).

Errors print one line ``affectsynth: error: <file>: <problem>`` on stderr and exit with 2 (bad input), 3
(missing/corrupt model file) or 1 (anything else); never a traceback (``AFFECTSYNTH_DEBUG=1`` shows it).
"""

from pathlib import Path
from typing import Annotated

import typer

from ..io import atomic_open, check_output_path
from .guard import fail as _fail
from .guard import guarded

model_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
evaluate_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

MAX_REPORTED_ROWS = 20


@model_app.callback()
def _model_group():
    """Build, inspect and import affect models."""


@evaluate_app.callback()
def _evaluate_group():
    """Evaluation protocols (the paper's section 4.1)."""


class _RowReporter:
    """Prints the first bad rows as warnings and counts the rest."""

    def __init__(self):
        self.count = 0

    def __call__(self, bad, why=None):
        self.count += 1
        if self.count <= MAX_REPORTED_ROWS:
            text = str(bad) if why is None else f"{getattr(bad, 'source', '?')}: {why}"
            typer.echo(f"affectsynth: warning: {text}", err=True)

    def finish(self):
        if self.count > MAX_REPORTED_ROWS:
            typer.echo(
                f"affectsynth: warning: {self.count - MAX_REPORTED_ROWS} more bad rows not shown "
                f"({self.count} skipped in all)",
                err=True,
            )


def _check_output(path: Path, overwrite: bool, suffixes: tuple[str, ...]) -> Path:
    return check_output_path(path, overwrite=overwrite, suffixes=suffixes)


def _gallery_csv(gallery: Path) -> Path:
    from ..affect.gallery import CSV_NAME, GalleryError

    csv_path = gallery if gallery.suffix.lower() == ".csv" else gallery / CSV_NAME
    if not csv_path.is_file():
        raise GalleryError(f"{csv_path}: gallery CSV not found (a gallery is a folder with {CSV_NAME})")
    return csv_path


def _count_rows(csv_path: Path) -> int:
    with open(csv_path, "rb") as f:
        return max(sum(1 for _ in f) - 1, 0)


def write_model_figure(model, path: Path, title: str = "") -> Path:
    """The paper's Fig. 3: V-A histogram of the gallery (frames per class) and every class's mean shape.

    Right panel: in each class cell the template plus the class mean deformation (magnified x3), frontal
    projection, points coloured by displacement magnitude (mm); empty classes are hatched.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..affect.grid import class_centres_np

    g = model.grid
    counts = np.asarray(model.class_count).reshape(g.n_arousal, g.n_valence)
    means = np.asarray(model.class_mean)
    base = np.asarray(model.morphable.mean)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(15, 7), dpi=100)
    ext = (g.low, g.high, g.low, g.high)
    im = ax0.imshow(np.log10(1 + counts), origin="lower", extent=ext, cmap="viridis", aspect="equal")
    wv, wa = g.cell_size
    for (row, col), n in np.ndenumerate(counts):
        ax0.text(
            g.low + (col + 0.5) * wv,
            g.low + (row + 0.5) * wa,
            str(int(n)),
            ha="center",
            va="center",
            fontsize=6,
            color="w" if n < counts.max() / 2 else "k",
        )
    fig.colorbar(im, ax=ax0, fraction=0.046, label="log10(1 + frames)")
    ax0.set(xlabel="valence", ylabel="arousal", title="gallery frames per V-A class")
    centres = class_centres_np(g)
    span = np.ptp(base[:, :2], axis=0).max()
    scale = 0.9 * min(wv, wa) / span
    mag = np.linalg.norm(means, axis=2)
    xy = base[None, :, :2] + 3.0 * means[:, :, :2]
    xy = (xy - base[:, :2].mean(0)) * scale + centres[:, None, :]
    sc = ax1.scatter(
        xy[..., 0].ravel(),
        xy[..., 1].ravel(),
        c=mag.ravel(),
        s=0.3,
        cmap="magma_r",
        vmin=0,
        vmax=max(float(np.percentile(mag, 99.5)), 1e-6),
        rasterized=True,
    )
    for c in np.flatnonzero(counts.reshape(-1) == 0):
        ax1.add_patch(
            plt.Rectangle(centres[c] - (wv / 2, wa / 2), wv, wa, fill=False, hatch="//", lw=0, color="0.7")
        )
    fig.colorbar(sc, ax=ax1, fraction=0.046, label="|class mean deformation| (mm)")
    ax1.set(
        xlim=(g.low, g.high),
        ylim=(g.low, g.high),
        aspect="equal",
        xlabel="valence",
        ylabel="arousal",
        title="class mean shapes (deformation x3; hatched: empty, filled from nearest)",
    )
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        with atomic_open(path, "wb") as f:
            fig.savefig(f, format="png")
    finally:
        plt.close(fig)
    return path


def _progress(total: int | None, quiet: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=desc, disable=quiet, leave=False, dynamic_ncols=True)


def load_gallery_config(path: Path):
    """``GalleryConfig`` from the ``[gallery]`` table of a TOML file; unknown keys are an error."""
    import dataclasses

    import tomllib

    from ..affect.synthetic_gallery import GalleryConfig

    try:
        table = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("gallery", {})
    except FileNotFoundError:
        _fail(f"{path}: no such config file", 2)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        _fail(f"{path}: unreadable config ({' '.join(str(err).split())})", 2)
    known = {f.name for f in dataclasses.fields(GalleryConfig)}
    unknown = sorted(set(table) - known)
    if unknown:
        _fail(f"{path}: unknown [gallery] keys {', '.join(unknown)} (known: {', '.join(sorted(known))})", 2)
    return GalleryConfig(**table)


@model_app.command("build")
@guarded
def build(
    gallery: Annotated[Path | None, typer.Argument(help="Gallery folder (with gallery.csv).")] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Model file (.npz); default affect_model.npz, none with --default.",
        ),
    ] = None,
    figure: Annotated[
        Path | None, typer.Option(help="Also write the V-A histogram + class means PNG.")
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="Rebuild the default model (no gallery) and refresh its cache.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(help="With --default: TOML file whose [gallery] table sets the generated gallery."),
    ] = None,
    components: Annotated[int, typer.Option(min=1, help="SPLOCS components per class.")] = 8,
    max_frames_per_class: Annotated[int, typer.Option(min=1, help="SPLOCS sample size per class.")] = 256,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace existing output files.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
):
    """Build an affect model file from a gallery (or the default one with --default)."""
    from ..affect.model import describe_model, save_model

    if output is None and not default:
        output = Path("affect_model.npz")
    if output is not None:
        _check_output(output, overwrite, (".npz",))
    if config is not None and not default:
        _fail("--config applies to --default builds only", 2)
    if figure is not None:
        _check_output(figure, overwrite, (".png",))
    if default:
        if gallery is not None:
            _fail("give either GALLERY or --default, not both", 2)
        model = _build_default(config)
    else:
        if gallery is None:
            _fail("missing GALLERY (or pass --default)", 2)
        model = _build_from_gallery(gallery, components, max_frames_per_class, seed, quiet)
    typer.echo(describe_model(model))
    if output is not None:
        save_model(output, model)
        typer.echo(f"wrote {output}")
    if figure is not None:
        write_model_figure(model, figure, title=str(gallery or "default model"))
        typer.echo(f"wrote {figure}")


def _build_default(config: Path | None):
    """The default model rebuilt from the generated FACS gallery (``config``: its TOML settings)."""
    from ..affect.default import build_default_model, default_model_path
    from ..affect.synthetic_gallery import GalleryConfig

    cfg = GalleryConfig() if config is None else load_gallery_config(config)
    typer.echo("building the default model from the generated FACS gallery...", err=True)
    model = build_default_model(force=True, config=cfg)
    typer.echo(f"cached {default_model_path(cfg)}", err=True)
    return model


def _build_from_gallery(gallery: Path, components: int, max_frames_per_class: int, seed: int, quiet: bool):
    """A model built from the gallery folder (or CSV) ``gallery``, with a progress bar and the skipped rows
    reported; exits 2 when no frame is usable."""
    from ..affect.build import build_affect_model
    from ..affect.gallery import read_gallery
    from ..face.morphable import morphable_model
    from ..face.topology import NUM_LANDMARKS

    csv_path = _gallery_csv(gallery)
    rows = _RowReporter()
    frames = read_gallery(csv_path, num_vertices=NUM_LANDMARKS, on_bad_row=rows)
    with _progress(_count_rows(csv_path), quiet, "reading gallery") as bar:
        model, report = build_affect_model(
            frames,
            morphable_model(),
            num_components=components,
            max_frames_per_class=max_frames_per_class,
            seed=seed,
            progress=bar.update,
            name=gallery.name if gallery.is_dir() else gallery.parent.name,
            source=str(gallery),
        )
    rows.finish()
    for line in report.skipped[:MAX_REPORTED_ROWS]:
        typer.echo(f"affectsynth: warning: {line}", err=True)
    if report.frames_used == 0:
        _fail(f"{csv_path}: no usable frames", 2)
    typer.echo(report.summary(), err=True)
    return model


def describe_provenance(info: dict) -> str:
    """An imported model's metadata as lines: where its shapes came from, AU <- shapes, AUs not built."""
    lines = []
    if "read_from" in info:
        lines.append(
            f"read from: {info['read_from']} ({info.get('expression_shapes', '?')} expression shapes)"
        )
    if "identity" in info:
        lines.append(f"identity basis: {info['identity']}")
    table = info.get("au_table") or {}
    if table:
        lines.append("AU <- shapes:")
        order = sorted(table, key=lambda a: (len(a), a))  # AU2 before AU10 (JSON keeps keys sorted as text)
        lines.extend(f"  {au:>5s} <- {table[au]}" for au in order)
    if "missing_aus" in info:
        lines.append(f"AUs not built (no shape): {', '.join(info['missing_aus']) or 'none'}")
    if info.get("unused_aus"):
        lines.append(f"built but outside the V-A map's AUs: {', '.join(info['unused_aus'])}")
    if "licence" in info:
        lines.append(f"licence: {info['licence'][:160]}{'...' if len(info['licence']) > 160 else ''}")
    return "\n".join(lines)


def _describe(model) -> str:
    from ..affect.model import describe_model

    extra = describe_provenance(model.info)
    return describe_model(model) + ("\n" + extra if extra else "")


@model_app.command("info")
@guarded
def info(model: Annotated[Path, typer.Argument(help="Model file (.npz).")]):
    """Print a model's name, source, classes, counts and sizes (and an imported model's AU table)."""
    from ..affect.model import read_model

    typer.echo(_describe(read_model(model)))


@model_app.command("figure")
@guarded
def figure_cmd(
    model: Annotated[Path, typer.Argument(help="Model file (.npz).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write.")] = Path("affect_model.png"),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
):
    """Write the V-A histogram and class mean shapes of a model as a PNG (the paper's Fig. 3)."""
    from ..affect.model import read_model

    _check_output(output, overwrite, (".png",))
    write_model_figure(read_model(model), output, title=str(model))
    typer.echo(f"wrote {output}")


@model_app.command("import-ict")
@guarded
def import_ict(
    folder: Annotated[
        Path, typer.Argument(help="ICT-FaceKit folder (FaceXModel/ OBJs and/or ict_facekit_deltas.npz).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write (.npz).")] = Path(
        "ict_model.npz"
    ),
    identity: Annotated[
        bool, typer.Option("--identity", help="Use ICT's identity shapes as the morphable identity basis.")
    ] = False,
    identity_modes: Annotated[int, typer.Option(min=1, help="Identity modes kept with --identity.")] = 40,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing file.")] = False,
):
    """Build a model from ICT-FaceKit expression shapes (its AU fields on our topology).

    Reads whichever of the original OBJ folder and the arrays file has more shapes; lists the AUs it could
    not build; fails (exit 2) when the rig lacks the minimum set (AU1, AU4, AU12, AU15, AU26).
    """
    from ..affect.importers.ict import import_ict_model
    from ..affect.model import save_model

    _check_output(output, overwrite, (".npz",))
    typer.echo(f"importing {folder} ...", err=True)
    model = import_ict_model(folder, identity=identity, identity_modes=identity_modes)
    save_model(output, model)
    typer.echo(_describe(model))
    typer.echo(f"wrote {output}")


def _parse_ks(text: str | None) -> tuple[int, ...]:
    from ..evaluate import DEFAULT_KS

    if text is None:
        return DEFAULT_KS
    try:
        ks = tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        _fail(f"--k: expected comma-separated integers, got {text!r}", 2)
    if not ks or min(ks) < 1:
        _fail(f"--k: expected positive integers, got {text!r}", 2)
    return ks


@evaluate_app.command("va-regression")
@guarded
def va_regression_cmd(
    gallery: Annotated[Path, typer.Argument(help="Gallery folder (with gallery.csv).")],
    k: Annotated[
        str | None, typer.Option("--k", help="Comma-separated basis sizes (default 84,150,200,300,500).")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="CSV file for the table.")] = None,
    test_fraction: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="Fraction of subjects held out.")
    ] = 0.2,
    seed: Annotated[int, typer.Option(help="Split seed.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing CSV.")] = False,
):
    """The paper's section 4.1 protocol: PCA(k) -> CCA(2) -> RBF SVR, subject-independent; CCC/MSE per k."""
    from ..affect.gallery import read_gallery
    from ..evaluate import format_table, va_regression, write_table_csv
    from ..face.topology import NUM_LANDMARKS

    ks = _parse_ks(k)
    if output is not None:
        _check_output(output, overwrite, (".csv",))
    csv_path = _gallery_csv(gallery)
    rows = _RowReporter()
    frames = read_gallery(csv_path, num_vertices=NUM_LANDMARKS, on_bad_row=rows)
    try:
        table = va_regression(frames, ks=ks, test_fraction=test_fraction, seed=seed, on_skip=rows)
    except ValueError as err:
        _fail(f"{csv_path}: {' '.join(str(err).split())}", 2)
    rows.finish()
    typer.echo(format_table(table))
    if output is not None:
        write_table_csv(output, table)
        typer.echo(f"wrote {output}")


__all__ = ["model_app", "evaluate_app", "write_model_figure"]
