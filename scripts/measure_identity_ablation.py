#!/usr/bin/env python3
"""What in an edit costs identity, and what does the same part buy in legibility? (issue 15, identity goal)

Every configuration below synthesises the ten targets of ``eval_legibility.py`` on the same faces; each
output is scored by dlib's descriptor distance to its input photo (FACTS.md section 7: same photo lightly
perturbed ~0.08, a real smile ~0.22, another person > 0.6) and read by the FER critic (evaluation only), so
the identity a component costs sits next to the hits it buys:

    round trip       strength 0, no neutralisation, no cue: the working crop, raster, resampling and blend
    full             the default pipeline
    geometry         the full warp, no appearance cue (shading, wrinkles, mouth interior, eyes all off)
    warp mouth       geometry, the warp's landmark offsets kept only around the mouth (lips and the skin
    warp eyes        ... around the eyes and brows                                  within REGION_MM of them)
    warp rest        ... everywhere else (nose, cheeks, jaw, forehead); the three masks sum to one
    alpha            every cue, a feathered paste instead of the Poisson blend (its colour correction)
    strength 0.8 / strength 1.2    the full pipeline with the deformation and cues scaled

The region-masked warps run a plain ``jax.jit`` of the working-crop stage with ``pipeline.edit_offsets``
wrapped (never the stored programs, whose keys would not see the wrapper). Also per configuration: the
mean signed colour change inside the edited region (a global shift would show here) and the ratio of the
face's high-frequency energy out / in (a blur shows as < 1).

``--drop-aus`` instead removes one Action Unit at a time from each target (its share of the deformation,
``class_action_units`` times its expression mode, and its appearance intensity): what that AU costs in
identity and buys in critic hits, per target. The class mean is linear in the AU intensities up to a few
percent (the lids' share and the lip contact are recomputed after, not removed).

``--reference`` instead measures what real smiles cost: dlib distance of each person's neutral photo to
their smiling photo (no synthesis).

usage:
    python scripts/measure_identity_ablation.py --reference
    python scripts/measure_identity_ablation.py --faces 16 --out /tmp/ablation
    python scripts/measure_identity_ablation.py --faces 4 --configs full,geometry --no-critic --out /tmp/abl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import eval_legibility as ev  # noqa: E402  (scripts/ is not a package)
from measure_identity_cost import face_inputs  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "faces" / "london"
REGION_MM = 15.0  # skin within this distance (template millimetres) of a feature's landmarks belongs to it
MASKED = ("warp mouth", "warp eyes", "warp rest")


def region_weights() -> dict[str, np.ndarray]:
    """Per-landmark weights (478,) of the three warp regions; they partition one at every landmark.

    A landmark goes to the nearer of the mouth (lip contours) and the eyes (lid contours, irises, brows)
    when that feature is within ``REGION_MM`` on the canonical template, to the rest otherwise.
    """
    from affectsynth.face import topology as topo

    t = topo.face_topology()
    xyz = t.template

    def dist(names):
        ids = np.unique(np.concatenate([t.region(n) for n in names]))
        return np.linalg.norm(xyz[:, None, :] - xyz[None, ids, :], axis=-1).min(1)

    mouth = dist(["lips"])
    eyes = dist([f"{s}_{p}" for s in ("right", "left") for p in ("eye_upper", "eye_lower", "iris", "brow")])
    is_mouth = (mouth <= REGION_MM) & (mouth <= eyes)
    is_eyes = (eyes <= REGION_MM) & ~is_mouth
    rest = ~(is_mouth | is_eyes)
    return {
        "warp mouth": is_mouth.astype(np.float32),
        "warp eyes": is_eyes.astype(np.float32),
        "warp rest": rest.astype(np.float32),
    }


def configurations(af) -> dict:
    """Name -> SynthesisOptions (the masked warps share geometry's options; see ``masked_warp``)."""
    geo = af.AppearanceOptions(shading=False, wrinkles=False, mouth_interior=False, eyes=False)
    geometry = af.SynthesisOptions(appearance=geo)
    return {
        "round trip": af.SynthesisOptions(strength=0.0, neutralize=False, appearance=geo),
        "full": af.SynthesisOptions(),
        "geometry": geometry,
        **{name: geometry for name in MASKED},
        "alpha": af.SynthesisOptions(blend="alpha"),
        "strength 0.8": af.SynthesisOptions(strength=0.8),
        "strength 1.2": af.SynthesisOptions(strength=1.2),
    }


@contextlib.contextmanager
def patched_offsets(wrap):
    """Within the block, ``pipeline.edit_offsets`` is ``wrap(plain edit_offsets)`` for ``synthesize_batch``.

    ``working.work_program`` is swapped for a plain jit of ``edit_work_crops`` (a fresh function object, so
    jax traces it anew with the wrapper inside), and nothing is read from or written to the program cache.
    """
    import jax

    from affectsynth import pipeline, working

    plain_offsets, plain_program = pipeline.edit_offsets, working.work_program
    programs = {}

    def program(model, options, batch, **_):
        if (options, batch) not in programs:

            def fresh(*args, **kw):
                return working.edit_work_crops(*args, **kw)

            programs[options, batch] = jax.jit(fresh, static_argnames="options")
        jitted = programs[options, batch]
        return lambda *a: jitted(*a, working.program_model(model), options=options)

    pipeline.edit_offsets, working.work_program = wrap(plain_offsets), program
    try:
        yield
    finally:
        pipeline.edit_offsets, working.work_program = plain_offsets, plain_program


def masked_warp(weights: np.ndarray):
    """Within the block, ``synthesize_batch`` applies only ``weights`` (478,) of each landmark's offset."""
    import jax.numpy as jnp

    w = jnp.asarray(weights)[:, None]

    def wrap(plain):
        def offsets(*args, **kw):
            fit, off, au = plain(*args, **kw)
            return fit, off * w, au

        return offsets

    return patched_offsets(wrap)


def dropped_au():
    """Within the block, an item whose raw PRNG key is (k + 1, 0) loses Action Unit k (``model.au_names``):
    its class intensity times its expression mode is taken off the landmark offsets, and its appearance
    intensity is zeroed; key (0, 0) keeps every AU. The keys are free: ``options.sample`` is off."""
    import jax.numpy as jnp

    from affectsynth.affect.model import class_action_units
    from affectsynth.face.fit import to_image_offsets
    from affectsynth.face.morphable import expression_offsets

    def wrap(plain):
        def offsets(lm, target, key, model, options):
            fit, off, au = plain(lm, target, key, model, options)
            k = key[0].astype(jnp.int32) - 1
            names = model.morphable.expression_names
            intensity = class_action_units(model, target, interpolate=options.interpolate) * options.strength
            coef = jnp.zeros(len(names), off.dtype)
            for i, name in enumerate(model.au_names):
                if name in names:
                    coef = coef.at[names.index(name)].set(jnp.where(k == i, intensity[i], 0.0))
            off = off - to_image_offsets(fit, expression_offsets(model.morphable, coef))
            au = jnp.where(jnp.arange(au.shape[0]) == k, 0.0, au)
            return fit, off, au

        return offsets

    return patched_offsets(wrap)


def drop_au_table(photos, targets: dict, model, dl, critic, out: Path, batch: int = 10, floor: float = 0.1):
    """{target: {AU or "none": {"identity": [...], "hit": [...]}}}, each AU above ``floor`` in a target."""
    import jax.numpy as jnp

    import affectsynth as af
    from affectsynth.affect.model import class_action_units

    combos = []
    for n, va in targets.items():
        au = np.asarray(class_action_units(model, jnp.asarray(va, jnp.float32), interpolate=True))
        combos += [(n, -1)] + [(n, k) for k in np.flatnonzero(au > floor)]
    folder = out / "drop_au"
    folder.mkdir(parents=True, exist_ok=True)
    rows = {}
    with dropped_au():
        for pid, image, lm, desc, rect in photos:
            for start in range(0, len(combos), batch):
                part = combos[start : start + batch]
                part = part + [part[-1]] * (batch - len(part))  # one batch size, one program
                tv = np.array([targets[n] for n, _ in part], np.float32)
                keys = np.array([[k + 1, 0] for _, k in part], np.uint32)
                res = af.synthesize_batch(
                    np.repeat(image[None], batch, 0), np.repeat(lm[None], batch, 0), tv, model, keys=keys
                )
                for j, ((n, k), img) in enumerate(zip(part, np.asarray(res.images), strict=True)):
                    if start + j >= len(combos):
                        break
                    name = "none" if k < 0 else model.au_names[k]
                    d, _ = dl.descriptor(_u8(img), rect)
                    row = rows.setdefault(n, {}).setdefault(name, {"identity": [], "hit": []})
                    row["identity"].append(float(np.linalg.norm(d - desc)))
                    if critic is not None:
                        path = folder / f"{pid}__{n}.png"
                        af.save_image(path, img)
                        row["hit"].append(critic_hit(critic, path, n))
            print(f"  drop AU: {pid} done", file=sys.stderr, flush=True)
    return rows


def critic_hit(critic, path: Path, target: str) -> float | None:
    """1.0 when the critic's top class at ``path`` is one of ``target``'s, 0.0 when not, None when the
    target has no class or the critic finds no face."""
    want = critic.TARGETS[target][2]
    r = critic.judge(str(path))
    return float(r["top"] in want) if want is not None and "error" not in r else None


def _u8(img) -> np.ndarray:
    return np.floor(np.clip(np.asarray(img, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def _high_freq(gray: np.ndarray) -> np.ndarray:
    """Absolute 4-neighbour Laplacian (interior pixels) of a 2-D float image."""
    lap = 4 * gray[1:-1, 1:-1] - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]
    return np.abs(lap)


def image_changes(before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> dict:
    """Mean signed RGB change (grey levels) inside ``mask``, and the high-frequency energy ratio there."""
    m = mask > 0.5
    if not m.any():
        return {"shift": [0.0, 0.0, 0.0], "sharpness": 1.0}
    a, b = before.astype(np.float32), after.astype(np.float32)
    shift = (b[m] - a[m]).mean(0)
    inner = m[1:-1, 1:-1]
    hf_a, hf_b = (_high_freq(x.mean(-1))[inner].mean() for x in (a, b))
    return {"shift": [float(s) for s in shift], "sharpness": float(hf_b / max(hf_a, 1e-6))}


def reference(data: Path, dl) -> dict:
    """dlib distance neutral photo -> smiling photo of each person that has both."""
    from PIL import Image

    dist = {}
    for path in sorted((data / "neutral").iterdir()):
        smile = data / "smiling" / path.name
        if not smile.is_file():
            continue
        a, rect = dl.descriptor(np.asarray(Image.open(path).convert("RGB")))
        b, _ = dl.descriptor(np.asarray(Image.open(smile).convert("RGB")), rect)
        if a is not None and b is not None:
            dist[path.stem] = float(np.linalg.norm(a - b))
    v = np.array(list(dist.values()))
    q = np.percentile(v, [0, 25, 50, 75, 100])
    stats = dict(zip(("min", "q1", "median", "q3", "max"), (float(x) for x in q), strict=True))
    return {"n": int(v.size), **stats, "per_face": dist}


def run_config(name, opts, photos, targets, model, dl, critic, out: Path, weights=None) -> dict:
    """Synthesise, save and score one configuration: per target, distances, critic hits and changes."""
    import affectsynth as af

    names = list(targets)
    tv = np.array([targets[n] for n in names], np.float32)
    folder = out / name.replace(" ", "_").replace(".", "")
    folder.mkdir(parents=True, exist_ok=True)
    rows = {n: {"identity": [], "hit": [], "shift": [], "sharpness": []} for n in names}
    block = masked_warp(weights) if weights is not None else contextlib.nullcontext()
    with block:
        for pid, image, lm, desc, rect in photos:
            k = len(names)
            res = af.synthesize_batch(
                np.repeat(image[None], k, 0), np.repeat(lm[None], k, 0), tv, model, options=opts
            )
            src = _u8(image)
            for n, img, mask in zip(names, np.asarray(res.images), np.asarray(res.masks), strict=True):
                u8 = _u8(img)
                d, _ = dl.descriptor(u8, rect)
                row = rows[n]
                row["identity"].append(float(np.linalg.norm(d - desc)))
                change = image_changes(src, u8, mask)
                row["shift"].append(change["shift"])
                row["sharpness"].append(change["sharpness"])
                path = folder / f"{pid}__{n}.png"
                af.save_image(path, img)
                if critic is not None:
                    row["hit"].append(critic_hit(critic, path, n))
            print(f"  {name}: {pid} done", file=sys.stderr, flush=True)
    return rows


def summary(rows: dict) -> dict:
    """Per target: median identity, hit rate (None for targets no critic class fits), change medians."""
    out = {}
    for n, r in rows.items():
        hits = [h for h in r["hit"] if h is not None]
        out[n] = {
            "identity_median": float(np.median(r["identity"])),
            "identity_max": float(np.max(r["identity"])),
            "hit": float(np.mean(hits)) if hits else None,
            "shift": [float(x) for x in np.median(np.array(r["shift"]), 0)],
            "sharpness": float(np.median(r["sharpness"])),
        }
    every = [d for r in rows.values() for d in r["identity"]]
    hits = [v["hit"] for v in out.values() if v["hit"] is not None]
    out["all"] = {
        "identity_median": float(np.median(every)),
        "identity_max": float(np.max(every)),
        "hit": float(np.mean(hits)) if hits else None,
    }
    return out


def table(results: dict, names: list[str]) -> str:
    """Median identity (and critic hit rate) per configuration and target."""
    head = f"{'configuration':<14}" + "".join(f"{n[:9]:>12}" for n in [*names, "all"])
    lines = [head]
    for c, s in results.items():
        cells = []
        for n in [*names, "all"]:
            hit = s[n]["hit"]
            cells.append(f"{s[n]['identity_median']:.3f}/{'  - ' if hit is None else f'{hit:.2f}'}".rjust(12))
        lines.append(f"{c:<14}" + "".join(cells))
    return "\n".join(lines)


def bar_chart(results: dict, names: list[str], path: Path) -> None:
    """Grouped bars: median identity distance per target (groups) and configuration (bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(results)
    groups = [*names, "all"]
    x = np.arange(len(groups))
    width = 0.85 / len(configs)
    fig, ax = plt.subplots(figsize=(max(10, 1.3 * len(groups)), 5))
    for i, c in enumerate(configs):
        ys = [results[c][g]["identity_median"] for g in groups]
        ax.bar(x + (i - (len(configs) - 1) / 2) * width, ys, width, label=c)
    ax.axhline(0.25, color="k", ls="--", lw=0.8)
    ax.set_xticks(x, groups, rotation=30)
    ax.set_ylabel("median dlib distance, output vs input")
    ax.set_title("identity cost per target and configuration (dashed: issue 15 goal 0.25)")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=16, help="first N neutral London photos")
    ap.add_argument("--ids", default=None, help="comma-separated photo ids instead of --faces")
    ap.add_argument("--configs", default="", help="comma-separated configuration names (default: all)")
    ap.add_argument("--targets", default="", help="comma-separated eval_legibility targets (default: all)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=REPO / "out" / "identity_ablation")
    ap.add_argument("--no-critic", action="store_true", help="identity only")
    ap.add_argument("--reference", action="store_true", help="neutral vs smiling photos only")
    ap.add_argument("--drop-aus", action="store_true", help="remove one AU at a time (full pipeline)")
    a = ap.parse_args(argv)
    if not (a.data / "neutral").is_dir():
        print(f"{a.data}: no neutral/ photo folder", file=sys.stderr)
        return 2
    dl = ev._Dlib()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.reference:
        ref = reference(a.data, dl)
        print(
            f"real smiles, neutral vs smiling photo, {ref['n']} people: median {ref['median']:.3f}, "
            f"quartiles {ref['q1']:.3f} / {ref['q3']:.3f}, min {ref['min']:.3f}, max {ref['max']:.3f}"
        )
        (a.out / "reference.json").write_text(json.dumps(ref, indent=1))
        return 0

    import affectsynth as af

    targets = {n: ev.TARGETS[n] for n in (a.targets.split(",") if a.targets else ev.TARGETS)}
    configs = configurations(af)
    if a.configs:
        configs = {k: configs[k] for k in a.configs.split(",")}
    photos = ev.find_photos(a.data, None if a.ids else a.faces)
    if a.ids:
        keep = a.ids.split(",")
        photos = sorted((p for p in photos if p[0] in keep), key=lambda p: keep.index(p[0]))
    critic = None if a.no_critic else ev.load_critic(ev.DEFAULT_CRITIC)
    model = af.load_model()
    inputs = face_inputs(photos, dl)
    if a.drop_aus:
        rows = drop_au_table(inputs, targets, model, dl, critic, a.out)
        (a.out / "drop_au.json").write_text(json.dumps(rows, indent=1))
        print(f"\nwithout one AU: median dlib distance / critic hit rate, {len(inputs)} faces")
        for n, by_au in rows.items():
            cells = []
            for name, r in by_au.items():
                hits = [h for h in r["hit"] if h is not None]
                hit = f"{np.mean(hits):.2f}" if hits else "-"
                cells.append(f"{name} {np.median(r['identity']):.3f}/{hit}")
            print(f"{n:<10} " + "  ".join(cells))
        return 0
    masks = region_weights()
    results, raw = {}, {}
    for name, opts in configs.items():
        raw[name] = run_config(name, opts, inputs, targets, model, dl, critic, a.out, masks.get(name))
        results[name] = summary(raw[name])
        (a.out / "ablation.json").write_text(json.dumps({"summary": results, "raw": raw}, indent=1))
    names = list(targets)
    print(f"\nmedian dlib distance / critic hit rate, {len(inputs)} faces")
    print(table(results, names))
    print("\nmedian colour shift inside the edit (R, G, B grey levels) and sharpness out/in, all targets")
    for c, raw_rows in raw.items():
        shift = np.median(np.array([s for r in raw_rows.values() for s in r["shift"]]), 0)
        sharp = np.median([s for r in raw_rows.values() for s in r["sharpness"]])
        print(f"{c:<14} shift {shift[0]:+.2f} {shift[1]:+.2f} {shift[2]:+.2f}  sharpness {sharp:.3f}")
    bar_chart(results, names, a.out / "identity_ablation.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
