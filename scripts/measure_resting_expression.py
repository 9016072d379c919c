"""What the face-model fit reports on resting faces: the data behind neutralisation's tolerances.

Fits the default model to the London neutral and smiling photos and prints, per expression mode, the
fitted activation (median, 90th percentile, max over the neutral photos; median and 90th percentile over the
smiling ones) and the max in mm (activation x the mode's peak displacement): ``RESTING_ALLOWANCE_MM`` in
``affect/model.py`` is the neutral max in mm plus 10%. Then the widest inner-lip gap (FaceMesh, in
inter-pupil distances) of both sets: ``pipeline.REST_LIP_GAP``.

    PYTHONPATH=src python scripts/measure_resting_expression.py [--shared ../shared] [--limit 48]
"""

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from affectsynth import pipeline
from affectsynth.face import topology as topo
from affectsynth.face.fit import fit_morphable_model
from affectsynth.face.landmarks import detect_landmarks
from affectsynth.io import load_image


def landmarks(folder: Path, limit: int) -> np.ndarray:
    return np.stack(
        [np.asarray(detect_landmarks(load_image(p))) for p in sorted(folder.glob("*.jpg"))[:limit]]
    )


def lip_gap(lm: np.ndarray) -> np.ndarray:
    """Widest inner-lip pair distance per face, in inter-pupil distances."""
    t = topo.face_topology()
    up, lo = t.inner_lip_pairs()
    iod = np.linalg.norm(lm[:, topo.LEFT_PUPIL, :2] - lm[:, topo.RIGHT_PUPIL, :2], axis=1)
    return np.linalg.norm(lm[:, lo, :2] - lm[:, up, :2], axis=2).max(1) / iod


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--limit", type=int, default=48)
    args = ap.parse_args()
    london = args.shared / "data" / "faces" / "london"
    model = pipeline.load_model()
    morph = model.morphable
    fit = jax.jit(jax.vmap(lambda lm: fit_morphable_model(lm, morph, steps=60).expression))
    lms = {kind: landmarks(london / kind, args.limit) for kind in ("neutral", "smiling")}
    act = {kind: np.asarray(fit(jnp.asarray(lm))) for kind, lm in lms.items()}
    peak = np.linalg.norm(np.asarray(morph.expression_basis), axis=-1).max(-1)
    print("mode   neutral p50  p90  max  max_mm | smiling p50  p90")
    for k, name in enumerate(morph.expression_names):
        a, b = act["neutral"][:, k], act["smiling"][:, k]
        neutral = f"{np.median(a):11.2f} {np.percentile(a, 90):4.2f} {a.max():4.2f} {a.max() * peak[k]:6.2f}"
        print(f"{name:6s} {neutral} | {np.median(b):11.2f} {np.percentile(b, 90):4.2f}")
    for kind, lm in lms.items():
        g = lip_gap(lm)
        print(
            f"inner-lip gap ({kind}, IOD): median {np.median(g):.3f}  p90 {np.percentile(g, 90):.3f}  "
            f"max {g.max():.3f}"
        )


if __name__ == "__main__":
    main()
