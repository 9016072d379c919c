"""Evaluation: CCC / PCC / MSE and the paper's V-A regression protocol (section 4.1).

Protocol (``va_regression``): expression deformations of a gallery (each frame rigidly aligned to its
sequence's neutral, in the canonical frame) are split by subject (no subject in both sets); a PCA basis of
the training deformations gives k coefficients per frame; CCA maps them to 2 dimensions; an RBF-kernel SVR
per output predicts valence and arousal; CCC, PCC and MSE are reported on the test subjects for each k.
CCA and SVR come from scikit-learn (optional extra ``affectsynth[eval]``, imported lazily); the metrics are
our own.
"""

import csv
import dataclasses
import io
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .io import atomic_write_bytes

DEFAULT_KS = (84, 150, 200, 300, 500)


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float64).reshape(-1)
    y = np.asarray(y, np.float64).reshape(-1)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"need two non-empty arrays of the same length, got {x.size} and {y.size}")
    return x, y


def mse(x, y) -> float:
    """Mean squared error :math:`\\frac1n \\sum_i (x_i - y_i)^2`."""
    x, y = _pair(x, y)
    return float(np.mean((x - y) ** 2))


def pcc(x, y) -> float:
    """Pearson correlation :math:`s_{xy} / (s_x s_y)` (0 when either side is constant)."""
    x, y = _pair(x, y)
    dx, dy = x - x.mean(), y - y.mean()
    den = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    return float(np.sum(dx * dy) / den) if den > 0 else 0.0


def ccc(x, y) -> float:
    """Concordance correlation :math:`2 s_{xy} / (s_x^2 + s_y^2 + (\\bar x - \\bar y)^2)` (population
    moments; 1 only for identical sequences, penalises bias and scale unlike PCC; 0 if both constant and
    equal is undefined and returned as 1 when x == y)."""
    x, y = _pair(x, y)
    mx, my = x.mean(), y.mean()
    sxy = np.mean((x - mx) * (y - my))
    den = x.var() + y.var() + (mx - my) ** 2
    if den == 0:
        return 1.0
    return float(2 * sxy / den)


def _require_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ImportError(
            "the V-A regression protocol needs scikit-learn: pip install 'affectsynth[eval]'"
        ) from None


@dataclasses.dataclass(frozen=True)
class RegressionRow:
    """One line of the table: requested k, k actually used, metrics on the test subjects."""

    k: int
    k_used: int
    ccc_valence: float
    ccc_arousal: float
    pcc_valence: float
    pcc_arousal: float
    mse_valence: float
    mse_arousal: float
    n_train: int
    n_test: int
    note: str = ""


def subject_split(subjects: Sequence[str], test_fraction: float, seed: int) -> np.ndarray:
    """bool[N] test mask: a random ``test_fraction`` of the distinct subjects (at least one on each side)."""
    subjects = np.asarray(subjects)
    uniq = np.unique(subjects)
    if uniq.size < 2:
        raise ValueError(f"a subject-independent split needs at least 2 subjects, got {uniq.size}")
    rng = np.random.default_rng(seed)
    n_test = int(np.clip(round(test_fraction * uniq.size), 1, uniq.size - 1))
    test = rng.permutation(uniq)[:n_test]
    return np.isin(subjects, test)


def collect_deformations(frames: Iterable, *, reference=None, include_neutral: bool = False, on_skip=None):
    """(deformations f32[N, V, 3], labels f32[N, 2], subjects) from gallery frames (held in memory)."""
    from .affect.build import iter_deformations

    if reference is None:
        from .face.topology import face_topology

        reference = face_topology().template
    defs, labels, subjects = [], [], []
    for fr, d in iter_deformations(frames, reference, include_neutral=include_neutral, on_skip=on_skip):
        defs.append(d)
        labels.append((fr.valence, fr.arousal))
        subjects.append(str(fr.subject))
    if not defs:
        raise ValueError("no usable frames in the gallery")
    return np.stack(defs).astype(np.float32), np.asarray(labels, np.float32), subjects


def va_regression_arrays(
    deformations,
    labels,
    subjects: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    svr_c: float = 1.0,
    max_train: int | None = 20000,
) -> list[RegressionRow]:
    """The protocol on arrays: PCA(k) -> CCA(2) -> RBF SVR per output, subject-independent split."""
    _require_sklearn()
    from sklearn.cross_decomposition import CCA
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    x = np.asarray(deformations, np.float64).reshape(len(subjects), -1)
    y = np.asarray(labels, np.float64).reshape(len(subjects), 2)
    test = subject_split(subjects, test_fraction, seed)
    xtr, ytr, xte, yte = x[~test], y[~test], x[test], y[test]
    if max_train is not None and len(xtr) > max_train:
        keep = np.random.default_rng(seed).choice(len(xtr), max_train, replace=False)
        xtr, ytr = xtr[keep], ytr[keep]
    mu = xtr.mean(0)
    _, _, vt = np.linalg.svd(xtr - mu, full_matrices=False)
    k_max = int(min(vt.shape[0], len(xtr) - 1, x.shape[1]))
    rows = []
    for k in ks:
        k = int(k)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        ku = min(k, k_max)
        note = f"k clipped to {ku} (training data rank bound)" if ku < k else ""
        ptr, pte = (xtr - mu) @ vt[:ku].T, (xte - mu) @ vt[:ku].T
        nc = min(2, ku)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cca = CCA(n_components=nc, max_iter=1000).fit(ptr, ytr)
        if any("converge" in str(w.message).lower() for w in caught):
            note = "; ".join(filter(None, [note, "CCA did not fully converge"]))
        scale = StandardScaler().fit(cca.transform(ptr))
        ftr, fte = scale.transform(cca.transform(ptr)), scale.transform(cca.transform(pte))
        pred = np.stack([SVR(kernel="rbf", C=svr_c).fit(ftr, ytr[:, j]).predict(fte) for j in (0, 1)], 1)
        rows.append(
            RegressionRow(
                k=k,
                k_used=ku,
                ccc_valence=ccc(pred[:, 0], yte[:, 0]),
                ccc_arousal=ccc(pred[:, 1], yte[:, 1]),
                pcc_valence=pcc(pred[:, 0], yte[:, 0]),
                pcc_arousal=pcc(pred[:, 1], yte[:, 1]),
                mse_valence=mse(pred[:, 0], yte[:, 0]),
                mse_arousal=mse(pred[:, 1], yte[:, 1]),
                n_train=len(xtr),
                n_test=len(xte),
                note=note,
            )
        )
    return rows


def va_regression(
    frames: Iterable,
    ks: Sequence[int] = DEFAULT_KS,
    test_fraction: float = 0.2,
    seed: int = 0,
    *,
    output=None,
    on_skip=None,
    include_neutral: bool = False,
) -> list[RegressionRow]:
    """The paper's section 4.1 protocol on gallery frames; writes the table as CSV to ``output`` if given.

    Neutral frames are left out by default (their deformation is zero by construction).
    """
    _require_sklearn()
    d, y, subjects = collect_deformations(frames, include_neutral=include_neutral, on_skip=on_skip)
    rows = va_regression_arrays(d, y, subjects, ks, test_fraction, seed)
    if output is not None:
        write_table_csv(output, rows)
    return rows


def write_table_csv(path, rows: Sequence[RegressionRow]) -> Path:
    """Write the table as CSV (atomically)."""
    buf = io.StringIO()
    fields = [f.name for f in dataclasses.fields(RegressionRow)]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(fields)
    for r in rows:
        w.writerow([f"{x:.6g}" if isinstance(x, float) else x for x in dataclasses.astuple(r)])
    p = Path(path)
    atomic_write_bytes(p, buf.getvalue().encode("utf-8"))
    return p


def format_table(rows: Sequence[RegressionRow]) -> str:
    """Fixed-width text table of CCC / MSE (and PCC) per k."""
    head = (
        f"{'k':>5} {'used':>5} {'CCC V':>7} {'CCC A':>7} {'PCC V':>7} {'PCC A':>7} {'MSE V':>7} {'MSE A':>7}"
        f" {'train':>6} {'test':>6}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r.k:>5d} {r.k_used:>5d} {r.ccc_valence:>7.3f} {r.ccc_arousal:>7.3f} {r.pcc_valence:>7.3f} "
            f"{r.pcc_arousal:>7.3f} {r.mse_valence:>7.4f} {r.mse_arousal:>7.4f} "
            f"{r.n_train:>6d} {r.n_test:>6d}" + (f"  ({r.note})" if r.note else "")
        )
    return "\n".join(lines)


__all__ = [
    "ccc",
    "pcc",
    "mse",
    "va_regression",
    "va_regression_arrays",
    "subject_split",
    "collect_deformations",
    "RegressionRow",
    "format_table",
    "write_table_csv",
    "DEFAULT_KS",
]
