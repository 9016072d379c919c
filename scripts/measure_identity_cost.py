#!/usr/bin/env python3
"""Where does the identity cost of an edit come from? (issue 15, item 3 of the identity goal)

Ablations through public options, each scored by dlib's face descriptor distance (output vs input photo,
FACTS.md section 7: same photo lightly perturbed ~0.08, a real smile ~0.22, another person > 0.6):

    round trip     strength 0, no neutralisation, no cues: the working crop, raster and blend alone
    neutralise     strength 0, neutralisation on: what taking the photo to rest costs
    geometry       the full deformation, no appearance cue
    +mouth / +shading / +wrinkles / +eyes    geometry and that one cue
    full           every cue (the default)
    full, alpha    every cue, a feathered paste instead of the Poisson blend
    thin plate     no synthesis: the input warped by a thin-plate spline that takes its landmarks where the
                   full edit puts them, the image border fixed: the expression's landmark geometry alone,
                   without the renderer (its mesh's piecewise-linear warp, the cues, the blend)

``--swap`` adds where in the face the landmark geometry's cost lies, with thin-plate warps of the neutral
photo by groups of landmarks (``SWAP_GROUPS``): for every target, the edit's landmark moves with one
group's moves taken away (the cost that group's motion adds); and for happy, ours against the same
person's real smile, and ours with one group taken from the real smile instead (a group whose swap brings
the distance down is where our smile departs from real ones in a way dlib sees).

``--mean-smile`` asks whether our smile's *pattern* costs more than a real one's: the mean of the other
people's open real smiles, carried onto each face in its own frame, as it is and scaled to our smile's
size, against ours (thin-plate warps), with the size of the moves per group of points.

And a geometric check of identity-shape leakage: the landmark offsets the warp applies (deformation and
neutralisation apart), per face region, in inter-pupil distances. Jaw contour and nose should move little
under any target but an open jaw; large offsets there change face shape rather than expression.

Prints two tables (three with ``--swap``); ``--json`` also writes every number.

usage:
    python scripts/measure_identity_cost.py --faces 12
    python scripts/measure_identity_cost.py --faces 4 --targets happy,disgusted --configs geometry,full
    python scripts/measure_identity_cost.py --faces 48 --configs "thin plate" --targets happy --swap
    python scripts/measure_identity_cost.py --faces 48 --configs "thin plate" --targets happy --mean-smile
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))  # scripts/ is not a package: its scripts import each other so

import eval_legibility as ev  # noqa: E402  (targets, photo list, dlib wrapper)
import measure_smile  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces" / "london"
DEFAULT_TARGETS = ("neutral", "calm", "happy", "surprised", "disgusted", "sad")
REGIONS = ("jaw", "chin", "nose", "face_oval", "right_cheek", "lips", "right_eye_lower", "right_brow")


THIN_PLATE = "thin plate"
"""The configuration that is not a synthesis (``thin_plate_warp`` by the full edit's landmark offsets)."""


def configurations(af) -> dict:
    """Name -> SynthesisOptions of each ablation (see the module docstring); None for ``THIN_PLATE``."""
    look = af.AppearanceOptions
    off = {"shading": False, "wrinkles": False, "mouth_interior": False, "eyes": False}
    geo = look(**off)
    cue = {f"+{k.split('_')[0]}": look(**{**off, k: True}) for k in off}
    return {
        "round trip": af.SynthesisOptions(strength=0.0, neutralize=False, appearance=geo),
        "neutralise": af.SynthesisOptions(strength=0.0, appearance=geo),
        "geometry": af.SynthesisOptions(appearance=geo),
        **{k: af.SynthesisOptions(appearance=v) for k, v in cue.items()},
        "full": af.SynthesisOptions(),
        "full, alpha": af.SynthesisOptions(blend="alpha"),
        THIN_PLATE: None,
    }


def thin_plate_warp(image: np.ndarray, src_xy: np.ndarray, dst_xy: np.ndarray, step: int = 8) -> np.ndarray:
    """``image`` f32[H, W, C] warped so that the points ``src_xy`` land on ``dst_xy`` (N x 2 pixels, x
    right): each output pixel looks up its source through a thin-plate spline fitted to the points' moves
    back (``dst -> src - dst``), pinned to no move at 32 points on the image border, evaluated every
    ``step`` pixels and interpolated bilinearly; the lookup is OpenCV's cubic (edges replicated)."""
    import cv2
    from scipy.interpolate import RBFInterpolator

    h, w = image.shape[:2]
    ring = [(x, y) for x in np.linspace(0, w - 1, 9) for y in (0, h - 1)]
    ring += [(x, y) for y in np.linspace(0, h - 1, 9)[1:-1] for x in (0, w - 1)]
    ring = np.asarray(ring, np.float64)
    at = np.concatenate([np.asarray(dst_xy, np.float64), ring])
    back = np.concatenate([np.asarray(src_xy, np.float64) - np.asarray(dst_xy, np.float64), 0 * ring])
    spline = RBFInterpolator(at, back, kernel="thin_plate_spline")
    gy, gx = np.mgrid[0 : h + step : step, 0 : w + step : step]
    coarse = spline(np.column_stack([gx.ravel(), gy.ravel()]).astype(np.float64))
    coarse = coarse.reshape(*gy.shape, 2).astype(np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    fine = [cv2.remap(coarse[..., k], xs / step, ys / step, cv2.INTER_LINEAR) for k in (0, 1)]
    return cv2.remap(
        np.asarray(image, np.float32),
        xs + fine[0],
        ys + fine[1],
        cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )


def edited_landmarks(model):
    """``(landmarks f32[N, 3], target (v, a)) -> f64[N, 2]``: where the full edit (``pipeline.edit_offsets``,
    the default options) puts each landmark, in the photo's pixels."""
    import jax
    import jax.numpy as jnp

    import affectsynth as af
    from affectsynth import pipeline as pl

    opts, key = af.SynthesisOptions(), jax.random.PRNGKey(0)

    def edited(lm, target):
        lm = jnp.asarray(lm, jnp.float32)
        _, offsets, _ = pl.edit_offsets(lm, jnp.asarray(target, jnp.float32), key, model, opts)
        return np.asarray((lm + offsets)[:, :2], np.float64)

    return edited


def _thin_plate_outputs(image, lm, targets: np.ndarray, model) -> list[np.ndarray]:
    """``thin_plate_warp`` of ``image`` by the full edit's landmark moves (``edited_landmarks``) at each
    target."""
    edited = edited_landmarks(model)
    return [thin_plate_warp(image, lm[:, :2], edited(lm, tv)) for tv in targets]


SWAP_GROUPS = {
    "lips": ("lips",),
    "chin and jaw": ("chin", "jaw", "face_oval"),
    "cheeks": ("right_cheek", "left_cheek"),
    "eyes": (
        "right_eye_upper",
        "right_eye_lower",
        "left_eye_upper",
        "left_eye_lower",
        "right_iris",
        "left_iris",
    ),
    "brows": ("right_brow", "left_brow", "forehead"),
    "nose": ("nose",),
}
"""Groups of FaceMesh points for ``smile_swap_table``, by topology region; a point in no region joins the
group of the nearest point that is in one (on the template)."""


def landmark_groups() -> np.ndarray:
    """i32[478]: each FaceMesh point's index into ``SWAP_GROUPS`` (every point in exactly one group)."""
    from affectsynth.face import topology as topo

    t = topo.face_topology()
    label = np.full(len(t.template), -1)
    for g, regions in enumerate(SWAP_GROUPS.values()):
        for r in regions:
            ids = t.region(r)
            label[ids[label[ids] < 0]] = g
    known = np.flatnonzero(label >= 0)
    for i in np.flatnonzero(label < 0):
        label[i] = label[known[np.argmin(np.linalg.norm(t.template[known] - t.template[i], axis=1))]]
    return label


def real_smile_landmarks(pid: str, lm: np.ndarray, data: Path, stable: np.ndarray):
    """(smiling photo, its FaceMesh points (N x 2) similarity-aligned onto the neutral ones ``lm`` on
    ``stable``), or None where the person has no smiling photo."""
    import affectsynth as af

    path = Path(data) / "smiling" / f"{pid}.jpg"
    if not path.is_file():
        return None
    smiling = np.asarray(af.load_image(path), np.float32)
    lm_s = np.asarray(af.detect_landmarks(smiling, source=str(path)))[:, :2]
    return smiling, measure_smile.align(lm_s.astype(np.float64), lm[:, :2].astype(np.float64), stable)


def real_smiles(inputs, data: Path) -> dict:
    """{id: ``real_smile_landmarks``} of each input whose person has a smiling photo, detected once for
    every table that compares with the real smiles (``inputs``: ``face_inputs``)."""
    stable, _ = measure_smile.stable_points()
    out = {}
    for pid, _image, lm, _desc, _rect in inputs:
        smile = real_smile_landmarks(pid, lm, data, stable)
        if smile is not None:
            out[pid] = smile
    return out


def smile_kinds(opened) -> dict[str, np.ndarray]:
    """{"all", "open", "closed"}: masks over people by whether their real smile shows teeth, as the tables
    report them."""
    opened = np.asarray(opened, bool)
    return {"all": np.ones(len(opened), bool), "open": opened, "closed": ~opened}


def _warp_cost(dl, image, src, rect, desc):
    """dlib distance to ``desc`` of ``image`` thin-plate warped from landmarks ``src`` to ``dst`` (N x 2), as
    a function of ``dst``."""

    def cost(dst):
        d, _ = dl.descriptor(_u8(thin_plate_warp(image, src, dst)), rect)
        return float(np.linalg.norm(d - desc))

    return cost


def region_cost_table(inputs, dl, targets: dict) -> dict:
    """{target: {"all": [...], group: [...]}}: dlib distances of the neutral photo ``thin_plate_warp``-ed by
    the edit's landmark moves (``edited_landmarks``), and by them with one ``SWAP_GROUPS`` group's moves
    taken away (those points held still)."""
    import affectsynth as af

    edited = edited_landmarks(af.load_model())
    labels = landmark_groups()
    out = {n: {"all": [], **{g: [] for g in SWAP_GROUPS}} for n in targets}
    for _pid, image, lm, desc, rect in inputs:
        src = lm[:, :2].astype(np.float64)
        cost = _warp_cost(dl, image, src, rect, desc)
        for n, v in targets.items():
            dst = edited(lm, v)
            out[n]["all"].append(cost(dst))
            for g, name in enumerate(SWAP_GROUPS):
                out[n][name].append(cost(np.where((labels == g)[:, None], src, dst)))
    return out


def smile_swap_table(inputs, dl, smiles: dict) -> dict:
    """Our happy's landmark geometry against the same person's real smile, group by group (``--swap``):
    {"id", "open" (the real smile shows teeth), "ours", "real", "swap": {group: [...]}} of dlib distances to
    the neutral photo, each the neutral photo ``thin_plate_warp``-ed: by our happy's landmark moves
    (``edited_landmarks``), by the real smile's, and by ours with one ``SWAP_GROUPS`` group of points taken
    from the real smile (``smiles``: ``real_smiles``)."""
    import affectsynth as af

    edited = edited_landmarks(af.load_model())
    labels = landmark_groups()
    out = {"id": [], "open": [], "ours": [], "real": [], "swap": {g: [] for g in SWAP_GROUPS}}
    for pid, image, lm, desc, rect in inputs:
        if pid not in smiles:
            continue
        real = smiles[pid][1]
        ours = edited(lm, ev.TARGETS["happy"])
        cost = _warp_cost(dl, image, lm[:, :2].astype(np.float64), rect, desc)

        out["id"].append(pid)
        out["open"].append(ev.lip_opening(real) >= ev.OPEN_SMILE)  # as eval_legibility splits them
        out["ours"].append(cost(ours))
        out["real"].append(cost(real))
        for g, name in enumerate(SWAP_GROUPS):
            out["swap"][name].append(cost(np.where((labels == g)[:, None], real, ours)))
    return out


def face_frame(points: np.ndarray) -> tuple[float, np.ndarray]:
    """(inter-pupil distance, rotation f64[2, 2] from the face's frame to the photo's) of FaceMesh points
    (N x 2, pixels): the frame's x runs along the line through the pupils (468, 473)."""
    a, b = np.asarray(points[468], np.float64), np.asarray(points[473], np.float64)
    iod = float(np.linalg.norm(b - a))
    c, s = (b - a) / iod
    return iod, np.array([[c, -s], [s, c]])


def mean_smile_table(inputs, dl, smiles: dict) -> dict:
    """Is our happy's landmark pattern costlier than a typical real smile of the same size? (``--mean-smile``)

    Each person's landmark moves (ours at happy, ``edited_landmarks``; their real smile's, aligned as
    ``real_smile_landmarks`` aligns them) are put in their face's frame (``face_frame``: rotated to the
    pupils' line, in inter-pupil distances). The mean of the *other* people's open real smiles is then
    carried back onto each person, as it is and scaled to the size of our smile on that person (the
    norm over all points), and every version warps the neutral photo (``thin_plate_warp``) for dlib.
    Returns {"id", "open", "size ratio", "cost": {version: [...]}, "rms": {group: {...}}}: the costs,
    and the root-mean-square move per ``SWAP_GROUPS`` group (inter-pupil distances; the median over
    the open smilers of ours and of their real smiles, and the mean open smile's own). ``smiles``:
    ``real_smiles``."""
    import affectsynth as af

    edited = edited_landmarks(af.load_model())
    people = []
    for pid, image, lm, desc, rect in inputs:
        smile = smiles.get(pid)
        if smile is None:
            continue
        src = lm[:, :2].astype(np.float64)
        iod, rot = face_frame(src)
        people.append(
            {
                "id": pid,
                "cost": _warp_cost(dl, image, src, rect, desc),
                "back": lambda d, src=src, iod=iod, rot=rot: src + iod * d @ rot.T,
                "open": bool(ev.lip_opening(smile[1]) >= ev.OPEN_SMILE),
                "real": (smile[1] - src) @ rot / iod,
                "ours": (edited(lm, ev.TARGETS["happy"]) - src) @ rot / iod,
            }
        )
    versions = ("ours", "real", "mean open smile", "mean open smile, our size")
    out = {"id": [], "open": [], "size ratio": [], "cost": {v: [] for v in versions}}
    for p in people:
        others = [q["real"] for q in people if q["open"] and q is not p]
        if not others:
            continue
        mean = np.mean(others, axis=0)
        ratio = float(np.linalg.norm(p["ours"]) / np.linalg.norm(mean))
        moves = (p["ours"], p["real"], mean, ratio * mean)
        out["id"].append(p["id"])
        out["open"].append(p["open"])
        out["size ratio"].append(ratio)
        for v, d in zip(versions, moves, strict=True):
            out["cost"][v].append(p["cost"](p["back"](d)))
    opened = [p for p in people if p["open"]]
    labels = landmark_groups()
    out["rms"] = {}
    for g, name in enumerate(SWAP_GROUPS):
        sel = labels == g

        def rms(d, sel=sel):
            return float(np.sqrt(np.mean(np.sum(d[sel] ** 2, axis=-1))))

        out["rms"][name] = {
            "ours": float(np.median([rms(p["ours"]) for p in opened])) if opened else None,
            "real": float(np.median([rms(p["real"]) for p in opened])) if opened else None,
            "mean open smile": rms(np.mean([p["real"] for p in opened], axis=0)) if opened else None,
        }
    return out


def real_smile_table(inputs, dl, smiles: dict) -> dict:
    """What the same people's real smiles cost, {"photo": [...], "thin plate": [...]}: the smiling photo
    against the neutral one, and the neutral photo warped (``thin_plate_warp``) by the smile's own landmark
    moves (FaceMesh on both photos, the smile's similarity-aligned onto the neutral's on points an
    expression hardly moves, as ``measure_smile.py`` aligns them): how much of a real expression's cost
    is its landmark geometry. ``inputs``: ``face_inputs`` of the neutral photos, described by ``dl``;
    ``smiles``: ``real_smiles``."""
    out = {"photo": [], "thin plate": []}
    for pid, image, lm, desc, rect in inputs:
        if pid not in smiles:
            continue
        smiling, moved = smiles[pid]
        d_photo, _ = dl.descriptor(_u8(smiling))
        if d_photo is None:
            continue
        d_warp, _ = dl.descriptor(_u8(thin_plate_warp(image, lm[:, :2], moved)), rect)
        out["photo"].append(float(np.linalg.norm(d_photo - desc)))
        out["thin plate"].append(float(np.linalg.norm(d_warp - desc)))
    return out


def _u8(img) -> np.ndarray:
    return (np.clip(np.asarray(img, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def face_inputs(photos, dl) -> list[tuple]:
    """(id, float image, FaceMesh landmarks, dlib descriptor, dlib box) of each photo dlib finds a face on."""
    import affectsynth as af

    inputs = []
    for pid, path in photos:
        image = np.asarray(af.load_image(path), np.float32)
        lm = np.asarray(af.detect_landmarks(image, source=str(path)), np.float32)
        desc, rect = dl.descriptor(_u8(image))
        if desc is None:
            print(f"{path}: dlib finds no face, skipped", file=sys.stderr)
            continue
        inputs.append((pid, image, lm, desc, rect))
    return inputs


def identity_table(inputs, dl, targets: dict, configs: dict, progress: bool = True) -> dict:
    """{config: {target: [distance per face]}} for every configuration (one batch per face and config);
    ``inputs``: ``face_inputs`` of the photos, described by ``dl``."""
    from tqdm import tqdm

    import affectsynth as af

    model = af.load_model()
    names = list(targets)
    tv = np.array([targets[n] for n in names], np.float32)
    table = {c: {n: [] for n in names} for c in configs}
    bar = tqdm(total=len(configs) * len(inputs), desc="ablations", unit="face", disable=not progress)
    for cname, opts in configs.items():
        for _pid, image, lm, desc, rect in inputs:
            k = len(names)
            if opts is None:  # THIN_PLATE
                outs = _thin_plate_outputs(image, lm, tv, model)
            else:
                res = af.synthesize_batch(
                    np.repeat(image[None], k, 0), np.repeat(lm[None], k, 0), tv, model, options=opts
                )
                outs = np.asarray(res.images)
            for n, out in zip(names, outs, strict=True):
                d, _ = dl.descriptor(_u8(out), rect)
                table[cname][n].append(float(np.linalg.norm(d - desc)))
            bar.update()
    bar.close()
    return table


def leakage_table(inputs, targets: dict) -> dict:
    """{target: {region: mean |offset| / IOD}} of the deformation, plus "neutralise" (the rest offsets);
    ``inputs``: ``face_inputs`` of the photos (their images and landmarks; no photo is read again)."""
    import jax.numpy as jnp

    import affectsynth as af
    from affectsynth import pipeline as pl
    from affectsynth.face import topology as topo
    from affectsynth.face.fit import fit_morphable_model, to_image_offsets

    model = af.load_model()
    opts = af.SynthesisOptions()
    t = topo.face_topology()
    rows = {n: {r: [] for r in REGIONS} for n in [*targets, "neutralise"]}
    for _pid, _image, landmarks, _desc, _rect in inputs:
        lm = jnp.asarray(landmarks, jnp.float32)
        fit = fit_morphable_model(lm, model.morphable, steps=opts.fit_steps)
        iod = float(fit.interocular)
        moves = {
            n: to_image_offsets(fit, pl._target_deformation(model, jnp.asarray(v), None, opts))
            for n, v in targets.items()
        }
        moves["neutralise"] = pl._neutral_offsets(fit, lm, model, opts)
        for n, off in moves.items():
            size = np.linalg.norm(np.asarray(off)[:, :2], axis=-1) / iod
            for r in REGIONS:
                rows[n][r].append(float(size[t.region(r)].mean()))
    return {n: {r: float(np.mean(v)) for r, v in row.items()} for n, row in rows.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=12, help="first N neutral London photos")
    ap.add_argument("--targets", default=",".join(DEFAULT_TARGETS), help="comma-separated target names")
    ap.add_argument("--configs", default="", help="comma-separated configuration names (default: all)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", type=Path, help="write every number here")
    ap.add_argument("--swap", action="store_true", help="also the costs of groups of landmarks (see above)")
    ap.add_argument(
        "--mean-smile", action="store_true", help="also our smile against the mean real smile (see above)"
    )
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    import affectsynth as af

    if not (a.data / "neutral").is_dir():
        print(f"{a.data}: no neutral/ photo folder", file=sys.stderr)
        return 2
    unknown = [n for n in a.targets.split(",") if n not in ev.TARGETS]
    if unknown:
        print(f"unknown target(s) {unknown}; known: {list(ev.TARGETS)}", file=sys.stderr)
        return 2
    targets = {n: ev.TARGETS[n] for n in a.targets.split(",")}
    configs = configurations(af)
    if a.configs:
        configs = {k: configs[k] for k in a.configs.split(",")}
    photos = ev.find_photos(a.data, a.faces)
    dl = ev._Dlib()
    inputs = face_inputs(photos, dl)  # once: the ablations and the real smiles compare with the same inputs
    table = identity_table(inputs, dl, targets, configs, progress=not a.no_progress)
    leak = leakage_table(inputs, targets)
    names = list(targets)
    print(f"\nidentity: median dlib distance output vs input, {len(inputs)} faces")
    print(f"{'configuration':<14}" + "".join(f"{n[:9]:>10}" for n in names) + f"{'all':>8}{'max':>7}")
    for c, row in table.items():
        every = [d for n in names for d in row[n]]
        cells = "".join(f"{np.median(row[n]):10.3f}" for n in names)
        print(f"{c:<14}{cells}{np.median(every):8.3f}{np.max(every):7.3f}")
    smiles = real_smiles(inputs, a.data) if THIN_PLATE in table or a.swap or a.mean_smile else {}
    if THIN_PLATE in table:
        real = real_smile_table(inputs, dl, smiles)
        if real["photo"]:
            print(
                f"the same people's real smiles ({len(real['photo'])}): the smiling photo "
                f"{np.median(real['photo']):.3f}, the neutral photo warped by the smile's landmark moves "
                f"{np.median(real['thin plate']):.3f}"
            )
    swap = smile_swap_table(inputs, dl, smiles) if a.swap else None
    regions = region_cost_table(inputs, dl, targets) if a.swap else None
    if regions:
        print("\nthe edit's landmark moves, one group's moves taken away (thin-plate warps; median distance)")
        print(f"{'target':<10}{'all':>8}" + "".join(f"{g[:12]:>14}" for g in SWAP_GROUPS))
        for n, row in regions.items():
            print(
                f"{n:<10}{np.median(row['all']):8.3f}"
                + "".join(f"{np.median(row[g]):14.3f}" for g in SWAP_GROUPS)
            )
    if swap and swap["id"]:
        print(
            "\nour happy's landmark moves with one group of points from the same person's real smile instead"
        )
        print("(thin-plate warps of the neutral photo; median dlib distance to it)")
        kinds = smile_kinds(swap["open"])
        print(f"{'smiles':<8}{'n':>4}{'ours':>8}{'real':>8}" + "".join(f"{g[:12]:>14}" for g in SWAP_GROUPS))
        for k, keep in kinds.items():
            if keep.any():
                med = [
                    np.median(np.asarray(v)[keep])
                    for v in (swap["ours"], swap["real"], *swap["swap"].values())
                ]
                print(
                    f"{k:<8}{int(keep.sum()):>4}"
                    + "".join(f"{m:8.3f}" for m in med[:2])
                    + "".join(f"{m:14.3f}" for m in med[2:])
                )
    mean_smile = mean_smile_table(inputs, dl, smiles) if a.mean_smile else None
    if mean_smile and mean_smile["id"]:
        print("\nour happy against the mean of the other people's open real smiles, carried onto each face")
        print("(thin-plate warps of the neutral photo; median dlib distance to it)")
        kinds = smile_kinds(mean_smile["open"])
        head = "".join(f"{v[:26]:>28}" for v in mean_smile["cost"])
        print(f"{'smiles':<8}{'n':>4}{head}{'size ratio':>12}")
        for k, keep in kinds.items():
            if keep.any():
                costs = mean_smile["cost"].values()
                cells = "".join(f"{np.median(np.asarray(c)[keep]):28.3f}" for c in costs)
                ratio = np.median(np.asarray(mean_smile["size ratio"])[keep])
                print(f"{k:<8}{int(keep.sum()):>4}{cells}{ratio:12.2f}")
        print("root-mean-square landmark move per group, inter-pupil distances (open smilers)")
        print(f"{'group':<14}{'ours':>8}{'real':>8}{'mean real':>11}")
        for g, row in mean_smile["rms"].items():
            print(f"{g:<14}" + "".join(f"{row[v]:{w}.4f}" for v, w in zip(row, (8, 8, 11), strict=True)))
    print("\nlandmark offsets of the warp: mean |offset| per region / inter-pupil distance")
    print(f"{'offsets of':<14}" + "".join(f"{r[:9]:>10}" for r in REGIONS))
    for n, row in leak.items():
        print(f"{n:<14}" + "".join(f"{row[r]:10.4f}" for r in REGIONS))
    if a.json:
        tmp = a.json.with_suffix(".tmp")
        extra = {"real_smiles": real} if THIN_PLATE in table else {}
        extra |= {"smile_swap": swap, "without_group": regions} if swap else {}
        extra |= {"mean_smile": mean_smile} if mean_smile else {}
        tmp.write_text(json.dumps({"identity": table, "offsets": leak, **extra}, indent=1))
        tmp.replace(a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
