"""README figures for the expression model: V-A -> AU map, AU fields, class-mean shapes, neutral template.

Run: ``python scripts/plot_expressions.py [--out docs] [--before OLD_TOPOLOGY.npz]``. Writes
- ``va_to_au.png``: intensity of each AU over the V-A square, and ``va_to_au.md``: the prototype table;
- ``action_units.png``: every AU field on the template (front view, arrows);
- ``class_means.png``: the 10 x 10 V-A class means of the generated gallery (like Fig. 3 of Kollias et al.),
  computed here as the plain mean deformation per class (the model builder's SPLOCS means should agree);
- ``template_neutral.png`` (only with ``--before``): the template before/after the mouth neutralisation.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from affectsynth.affect import au_fields as auf
from affectsynth.affect import synthetic_gallery as sgal
from affectsynth.affect import va_map as vam  # noqa: E402
from affectsynth.face.topology import face_topology  # noqa: E402


def _mesh(ax, x, tri, **kw):
    ax.triplot(x[:, 0], x[:, 1], tri, lw=0.25, **kw)
    ax.set_aspect("equal")
    ax.axis("off")


CONTOURS = (
    "face_oval",
    "lips_inner_upper",
    "lips_inner_lower",
    "lips_outer_upper",
    "lips_outer_lower",
    "right_eye_upper",
    "right_eye_lower",
    "left_eye_upper",
    "left_eye_lower",
)


def _sketch(ax, x, t):
    """Feature contours only (face oval closed, lips, lids, brows, nose points): readable when small."""
    for k in CONTOURS:
        r = t.region(k)
        r = np.append(r, r[0]) if k == "face_oval" else r
        ax.plot(x[r, 0], x[r, 1], "k-", lw=0.7)
    for k in ("right_brow", "left_brow", "nose"):
        r = t.region(k)
        ax.plot(x[r, 0], x[r, 1], "k.", ms=1.0)
    ax.set_aspect("equal")
    ax.axis("off")


def plot_va_map(out: Path):
    n = 61
    g = np.linspace(-1, 1, n)
    grid = np.array([[vam.au_intensities(v, a) for v in g] for a in g])  # [A, V, K]
    k = len(auf.AU_NAMES)
    fig, axes = plt.subplots(4, 5, figsize=(13, 10.5))
    for i, ax in enumerate(axes.ravel()[:k]):
        im = ax.imshow(grid[..., i], origin="lower", extent=(-1, 1, -1, 1), vmin=0, vmax=1, cmap="magma")
        ax.set_title(f"{auf.AU_NAMES[i]} {auf.AU_DESCRIPTIONS[auf.AU_NAMES[i]]}", fontsize=8)
        for _name, v, a, _ in vam.PROTOTYPES:
            ax.plot(v, a, "c.", ms=2)
        ax.set_xticks([-1, 0, 1])
        ax.set_yticks([-1, 0, 1])
        ax.tick_params(labelsize=6)
    fig.colorbar(im, ax=axes, shrink=0.6, label="AU intensity")
    fig.suptitle("V-A -> AU intensity (x: valence, y: arousal; dots: emotion prototypes)")
    fig.savefig(out / "va_to_au.png", dpi=110)
    plt.close(fig)
    lines = ["| prototype | valence | arousal | AU intensities at the anchor |", "|---|---|---|---|"]
    for name, v, a, p in vam.PROTOTYPES:
        aus = ", ".join(f"{k} {w:.2f}" for k, w in p.items())
        lines.append(f"| {name} | {v:+.2f} | {a:+.2f} | {aus} |")
    (out / "va_to_au.md").write_text("\n".join(lines) + "\n")


def plot_fields(out: Path):
    t = face_topology()
    x = t.template
    f = auf.action_unit_fields()
    fig, axes = plt.subplots(4, 5, figsize=(14, 12))
    for ax, name in zip(axes.ravel(), auf.AU_NAMES, strict=False):
        _mesh(ax, x + f[name], t.triangles, color="0.6")
        d = f[name]
        big = np.linalg.norm(d, axis=1) > 0.3
        ax.quiver(
            x[big, 0], x[big, 1], d[big, 0], d[big, 1], angles="xy", scale_units="xy", scale=0.5, width=0.004
        )
        ax.set_title(f"{name} {auf.AU_DESCRIPTIONS[name]}", fontsize=9)
    fig.suptitle("Action Unit fields at intensity 1 (mesh deformed; arrows x2)")
    fig.savefig(out / "action_units.png", dpi=100)
    plt.close(fig)


EXAGGERATE = 1.5  # class means are averages over subjects and directions: drawn 1.5x for legibility


def plot_class_means(out: Path, subjects: int = 6, directions: int = 48, frames: int = 10):
    t = face_topology()
    x = t.template
    sums = np.zeros((10, 10, 478, 3))
    counts = np.zeros((10, 10))
    neutral = {}
    for fr in sgal.generate_gallery(
        num_subjects=subjects, num_directions=directions, frames_per_sequence=frames
    ):
        if fr.is_neutral:
            neutral[fr.sequence] = fr.vertices
            continue
        i = min(int((fr.arousal + 1) / 0.2), 9)
        j = min(int((fr.valence + 1) / 0.2), 9)
        sums[i, j] += fr.vertices - neutral[fr.sequence]
        counts[i, j] += 1
    fig, axes = plt.subplots(10, 10, figsize=(13, 15))
    for i in range(10):
        for j in range(10):
            ax = axes[9 - i, j]
            if counts[i, j] == 0:
                ax.axis("off")
                continue
            _sketch(ax, x + EXAGGERATE * sums[i, j] / counts[i, j], t)
            ax.set_title(f"V{-0.9 + 0.2 * j:+.1f} A{-0.9 + 0.2 * i:+.1f}", fontsize=6)
    fig.suptitle(
        "Class-mean shapes of the generated gallery over the 10 x 10 V-A classes (valence ->, arousal ^)"
    )
    fig.savefig(out / "class_means.png", dpi=80)
    plt.close(fig)


def plot_template(out: Path, before: Path):
    t = face_topology()
    old = np.load(before)["template"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 6))
    for ax, xx, title in ((axes[0], old, "before (astronaut, smiling)"), (axes[1], t.template, "after")):
        _mesh(ax, xx, t.triangles, color="0.5")
        for k in ("lips_inner_upper", "lips_inner_lower", "lips_outer_upper", "lips_outer_lower"):
            r = t.region(k)
            ax.plot(xx[r, 0], xx[r, 1], "r-", lw=1)
        ax.set_title(title)
        ax.set_ylim(-80, 75)
    fig.savefig(out / "template_neutral.png", dpi=100)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    p.add_argument("--before", type=Path, default=None, help="an older face_topology.npz to compare")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    plot_va_map(args.out)
    plot_fields(args.out)
    plot_class_means(args.out)
    if args.before is not None:
        plot_template(args.out, args.before)
    print(f"wrote figures to {args.out}")


if __name__ == "__main__":
    main()
