#!/usr/bin/env python3
"""Where does an expression's magnitude go between the model and the pixels? (issue 15, item 3)

For a few neutral London photos and targets, the landmark displacement is measured at each link of the
chain and reported as the fraction ``kept = sum(got . want) / sum(want . want)`` of the model's own
deformation projected with the fitted pose (``want``: what tests/test_pipeline.py's re-detection test
compares with), per face region:

  a_applied  offsets the renderer is given: ``want`` + neutralisation (the input's own expression removed)
             + lip contact (``pipeline.edit_offsets``)
  b_field    the warp field the working-crop program returns, read at each moved landmark: where the pixel
             drawn there comes from (so the photo's pixel under the neutral landmark ends up there)
  c_warp     FaceMesh re-detected on the pure warp pasted back into the photo (no appearance cues, no
             Poisson correction): the paste-back and FaceMesh's own reading of a pure geometric warp
  c_cues     + appearance cues (shading, wrinkles, mouth, eyes), alpha blend
  d_output   the full output (appearance + Poisson blend + paste-back), re-detected: the test's number
  no_<cue>   (``--split-cues``) c_cues with that one cue off

and, as a check of FaceMesh itself on motion that real faces make, ``real_smile``: each person's real smile
(landmarks of the smiling photo, similarity-aligned onto the neutral one on stable points) applied to the
neutral photo as a pure warp and re-detected.

Regions: brows, upper lids, lower lids, lip corners, lips (the rest of the lip contours), and ``top24``
(the 24 points the model moves most, as the test). A region whose ``want`` is below 0.01 inter-pupil
distances (RMS) is reported as "-": FaceMesh's own noise is ~0.015 there (FACTS.md section 9).

usage:
    python scripts/measure_chain.py                                   # faces 001 003 004 009
    python scripts/measure_chain.py --faces 001 009 --targets angry sad --json /tmp/chain.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces" / "london"
TARGETS = {
    "angry": (-0.55, 0.6),
    "afraid": (-0.5, 0.65),
    "sad": (-0.6, -0.3),
    "surprised": (0.3, 0.8),
    "happy": (0.8, 0.4),
}
LINKS = ("a_applied", "b_field", "c_warp", "c_cues", "d_output")
SMALL = 0.01  # region RMS of ``want`` (inter-pupil distances) below which its ratio is noise
STABLE = ("nose", "forehead")  # similarity alignment of a smiling photo onto the neutral one


def region_ids() -> dict[str, np.ndarray]:
    """Landmark ids of the regions the table reports (lid and lip contours without their corners)."""
    from affectsynth.face import topology as topo

    t = topo.face_topology()
    r = t.region
    corners = np.array([r("lips_outer_upper")[0], r("lips_outer_upper")[-1]])
    lips = np.concatenate([r(k) for k in ("lips_outer_upper", "lips_outer_lower")] + [r("lips_inner_upper")])
    lips = np.concatenate([lips, r("lips_inner_lower")])
    return {
        "brows": np.concatenate([r("left_brow"), r("right_brow")]),
        "upper_lids": np.concatenate([r("left_eye_upper")[1:-1], r("right_eye_upper")[1:-1]]),
        "lower_lids": np.concatenate([r("left_eye_lower")[1:-1], r("right_eye_lower")[1:-1]]),
        "lip_corners": corners,
        "lips": np.setdiff1d(np.unique(lips), np.concatenate([corners, [78, 308]])),
    }


def kept(got: np.ndarray, want: np.ndarray, ids: np.ndarray, iod: float) -> float | None:
    """Fraction of ``want`` (N x 2) that ``got`` moves along it over ``ids``; None when ``want`` is tiny."""
    w, g = want[ids, :2], got[ids, :2]
    if np.sqrt(np.mean(np.sum(w * w, axis=1))) < SMALL * iod:
        return None
    return float(np.sum(g * w) / np.sum(w * w))


def sample_field(field: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``field`` f[S, S, C] at pixel positions ``xy`` (N x 2, centres at +0.5)."""
    s = field.shape[0]
    u = np.clip(xy - 0.5, 0.0, s - 1.001)
    i0 = np.floor(u).astype(int)
    f = u - i0
    x0, y0 = i0[:, 0], i0[:, 1]
    fx, fy = f[:, :1], f[:, 1:]
    top = field[y0, x0] * (1 - fx) + field[y0, x0 + 1] * fx
    bot = field[y0 + 1, x0] * (1 - fx) + field[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bot * fy


def redetect(image: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Displacement (photo pixels, N x 2) of FaceMesh's landmarks on ``image`` from ``lm``."""
    import affectsynth as af

    return np.asarray(af.detect_landmarks(image))[:, :2] - lm[:, :2]


def paste(photo, window, disp, cov, resid, painted=None) -> np.ndarray:
    """The working-crop edit carried back to the photo (``workcrop.paste_back``)."""
    from affectsynth import workcrop

    out = photo.copy()
    workcrop.paste_back(out, np.zeros(photo.shape[:2], np.float32), photo, window, disp, cov, resid, painted)
    return out


def chain_of_face(photo, lm, targets, model, options, split_cues=()) -> dict:
    """Per target: name -> link -> displacement (photo pixels, 478 x 2), plus ``want``; with ``split_cues``
    (``AppearanceOptions`` switch names) also ``no_<cue>``: the cues but that one, alpha blend."""
    import jax
    import jax.numpy as jnp

    from affectsynth import workcrop, working
    from affectsynth.affect.model import class_deformation
    from affectsynth.face.fit import to_image_offsets
    from affectsynth.pipeline import edit_offsets
    from affectsynth.render.appearance.context import AppearanceOptions

    h, w = photo.shape[:2]
    size = options.work_size
    win = workcrop.face_window(lm, h, w, size=size, skirt=options.skirt)
    crop = workcrop.cut_window(photo, win, size)
    cl = workcrop.crop_landmarks(lm, win)
    tv = np.array([targets[k] for k in targets], np.float32)
    b = len(tv)
    keys = np.zeros((b, 2), np.uint32)

    @jax.jit
    def offsets_of(cl, tv, model):
        def one(t):
            fit, off, _ = edit_offsets(cl, t, None, model, options)
            want = to_image_offsets(fit, class_deformation(model, t, interpolate=options.interpolate))
            return want * options.strength, off

        return jax.vmap(one)(tv)

    want, applied = (np.asarray(x)[..., :2] / win.scale for x in offsets_of(jnp.asarray(cl), tv, model))
    crops, lms = np.repeat(crop[None], b, 0), np.repeat(cl[None], b, 0)
    full = working.work_program(model, options, b)(crops, lms, tv, keys)
    alpha = dataclasses.replace(options, blend="alpha", appearance=AppearanceOptions())
    cues = working.work_program(model, alpha, b)(crops, lms, tv, keys)
    without = {}
    for cue in split_cues:  # all cues but one, alpha blend: which cue moves the landmarks
        look = dataclasses.replace(AppearanceOptions(), **{cue: False})
        prog = working.work_program(model, dataclasses.replace(alpha, appearance=look), b)
        without[cue] = np.asarray(prog(crops, lms, tv, keys).residual)
    out = {}
    cue_edit, full_edit = (cues.residual, cues.painted), (full.residual, full.painted)
    for i, name in enumerate(targets):
        disp, cov = np.asarray(full.displacement[i]), np.asarray(full.covered[i])
        dst = cl[:, :2] + applied[i] * win.scale
        field = -sample_field(disp, dst) / win.scale  # where each moved landmark's pixel came from
        zero = np.zeros_like(np.asarray(full.residual[i]))
        out[name] = {
            "want": want[i],
            "a_applied": applied[i],
            "b_field": field,
            "c_warp": redetect(paste(photo, win, disp, cov, zero), lm),
            "c_cues": redetect(paste(photo, win, disp, cov, *(np.asarray(x[i]) for x in cue_edit)), lm),
            "d_output": redetect(paste(photo, win, disp, cov, *(np.asarray(x[i]) for x in full_edit)), lm),
        }
        for cue, resid in without.items():
            out[name][f"no_{cue}"] = redetect(paste(photo, win, disp, cov, resid[i]), lm)
    return out


def align_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (Umeyama, no reflection) taking ``src`` (N x 2) to ``dst``: returns
    (rotation, scale, src mean, dst mean), so ``x -> (x - src mean) @ (scale rotation).T + dst mean``."""
    ms, md = src.mean(0), dst.mean(0)
    a, c = src - ms, dst - md
    u, sv, vt = np.linalg.svd(c.T @ a)
    d = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ d @ vt
    s = np.trace(np.diag(sv) @ d) / np.sum(a * a)
    return r, s, ms, md


def real_smile(photo, lm, smile_path, options) -> dict | None:
    """The person's real smile applied to their neutral photo as a pure warp, and FaceMesh's reading."""
    import jax
    import jax.numpy as jnp

    import affectsynth as af
    from affectsynth import workcrop
    from affectsynth.face import topology as topo
    from affectsynth.pipeline import _warped_mesh
    from affectsynth.render.raster import interpolate, rasterize

    if not smile_path.exists():
        return None
    lm_s = np.asarray(af.detect_landmarks(af.load_image(smile_path)))
    t = topo.face_topology()
    stable = np.concatenate([t.region(k) for k in STABLE] + [np.array([133, 362])])
    r, s, ms, md = align_similarity(lm_s[stable, :2], lm[stable, :2])
    moved = (lm_s[:, :2] - ms) @ (s * r).T + md
    want = moved - lm[:, :2]
    want[468:] = 0.0  # irises: the smile's gaze is not part of the expression
    h, w = photo.shape[:2]
    size = options.work_size
    win = workcrop.face_window(lm, h, w, size=size, skirt=options.skirt)
    cl = workcrop.crop_landmarks(lm, win)
    off = np.zeros_like(cl)
    off[:, :2] = want * win.scale

    @jax.jit
    def warp_field(cl, off):
        mesh, src, dst = _warped_mesh(cl, off, options)
        frags = rasterize(dst, mesh["triangles"], size, size)
        centres = jnp.arange(size, dtype=jnp.float32) + 0.5
        grid = jnp.stack(jnp.meshgrid(centres, centres, indexing="xy"), axis=-1)
        cov = (frags.triangle_id >= 0).astype(jnp.float32)
        return (interpolate(frags, src[:, :2]) - grid) * cov[..., None], cov

    disp, cov = (np.asarray(x) for x in warp_field(jnp.asarray(cl), jnp.asarray(off)))
    zero = np.zeros(disp.shape[:2] + (3,), np.float32)
    return {"want": want, "c_warp": redetect(paste(photo, win, disp, cov, zero), lm)}


def table(rows: list[dict], links) -> str:
    """Mean (over faces) kept fraction per target x link x region, as a text table."""
    names = list(region_ids()) + ["top24"]
    lines = [f"{'target':<11}{'link':<11}" + "".join(f"{n:>12}" for n in names)]
    for target in dict.fromkeys(r["target"] for r in rows):
        for link in links:
            cells = []
            for n in names:
                v = [r["kept"][link][n] for r in rows if r["target"] == target]
                v = [x for x in v if x is not None]
                cells.append(f"{np.mean(v):>12.2f}" if v else f"{'-':>12}")
            lines.append(f"{target:<11}{link:<11}" + "".join(cells))
    return "\n".join(lines)


def score(chain: dict, iod: float, links) -> dict:
    """Kept fractions per link and region of one (face, target)."""
    want = chain["want"]
    ids = region_ids()
    ids["top24"] = np.argsort(-np.linalg.norm(want, axis=1))[:24]
    return {link: {n: kept(chain[link], want, i, iod) for n, i in ids.items()} for link in links}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--faces", nargs="+", default=["001", "003", "004", "009"])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--json", type=Path, help="write every number here")
    parser.add_argument(
        "--split-cues",
        nargs="*",
        default=[],
        choices=["shading", "wrinkles", "mouth_interior", "eyes"],
        help="also re-detect with each of these appearance cues off (one program each)",
    )
    parser.add_argument("--no-smile", action="store_true", help="skip the real-smile FaceMesh check")
    args = parser.parse_args(argv)
    if not (args.data / "neutral").is_dir():
        sys.exit(f"{args.data}: no neutral/ folder of London photos")
    from tqdm import tqdm

    import affectsynth as af

    model = af.load_model()
    options = af.SynthesisOptions()
    targets = {k: TARGETS[k] for k in args.targets}
    rows, smiles = [], []
    for face in tqdm(args.faces, desc="faces", unit="face"):
        path = args.data / "neutral" / f"{face}.jpg"
        if not path.exists():
            sys.exit(f"{path}: no such photo")
        photo = af.load_image(path)
        lm = np.asarray(af.detect_landmarks(photo))
        iod = float(np.linalg.norm(lm[468, :2] - lm[473, :2]))
        links = LINKS + tuple(f"no_{c}" for c in args.split_cues)
        for name, chain in chain_of_face(photo, lm, targets, model, options, args.split_cues).items():
            rows.append({"face": face, "target": name, "kept": score(chain, iod, links)})
        if not args.no_smile:
            chain = real_smile(photo, lm, args.data / "smiling" / f"{face}.jpg", options)
            if chain is not None:
                smiles.append({"face": face, "target": "real_smile", "kept": score(chain, iod, ("c_warp",))})
    print(table(rows, LINKS + tuple(f"no_{c}" for c in args.split_cues)))
    if smiles:
        print("\nFaceMesh on the neutral photo warped by the person's real smile (aligned landmarks):")
        print(table(smiles, ("c_warp",)))
    if args.json:
        fd, tmp = tempfile.mkstemp(dir=args.json.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"rows": rows, "real_smile": smiles, "faces": args.faces}, f, indent=1)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
