import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from affectsynth.affect.build import build_affect_model, robust_rigid_align
from affectsynth.affect.gallery import GalleryFrame, write_gallery
from affectsynth.affect.grid import AffectGrid, class_centre, class_index_np
from affectsynth.affect.model import (
    AffectModel,
    class_action_units,
    class_deformation,
    class_label,
    project_action_units,
    read_model,
    sample_deformation,
    save_model,
)
from affectsynth.errors import ModelFileError
from affectsynth.face.morphable import morphable_model
from affectsynth.face.topology import face_topology

TOPO = face_topology()
TPL = TOPO.template.astype(np.float64)
V = TPL.shape[0]
# planted classes: (V, A) point inside the class -> deformation (mm, canonical frame)
CLASSES = {(0.5, 0.5): "lips_outer_upper", (-0.5, 0.3): "right_brow", (0.3, -0.7): "jaw"}
KW = dict(num_components=3, splocs_iterations=3, splocs_admm_steps=3)


def planted_deformation(region, scale=4.0):
    d = np.zeros((V, 3))
    ids = TOPO.region(region)
    d[ids] = scale * np.array([0.3, 1.0, 0.5])
    return d


def rotation(rng, deg):
    w = np.deg2rad(deg) * rng.normal(size=3)
    th = np.linalg.norm(w)
    k = w / th
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * kx + (1 - np.cos(th)) * kx @ kx


def synthetic_frames(n_subjects=4, per_class=3, noise=0.02, seed=0, bad=False):
    """Sequences: neutral (identity-perturbed template), then frames of one planted class; random poses."""
    rng = np.random.default_rng(seed)
    for s in range(n_subjects):
        neutral = TPL + rng.normal(0, 1.0, (V, 3)) @ np.diag([1, 1, 0.5]) * 0.5
        for j, ((v, a), region) in enumerate(CLASSES.items()):
            seq = f"s{s}-q{j}"
            scale = rng.uniform(0.8, 1.3)

            def pose(x, scale=scale):
                return scale * x @ rotation(rng, 15).T + rng.normal(0, 20, 3)

            yield GalleryFrame(f"s{s}", seq, 0, pose(neutral).astype(np.float32), 0.0, 0.0, True, "t")
            for f in range(1, per_class + 1):
                d = planted_deformation(region) + rng.normal(0, noise, (V, 3))
                va = (v + rng.uniform(-0.05, 0.05), a + rng.uniform(-0.05, 0.05))
                yield GalleryFrame(f"s{s}", seq, f, pose(neutral + d).astype(np.float32), *va, False, "t")
    if bad:
        yield GalleryFrame("x", "orphan", 1, TPL.astype(np.float32), 0.1, 0.1, False, "orphan")
        yield GalleryFrame("x", "short", 0, TPL[:10].astype(np.float32), 0.0, 0.0, True, "short")


@pytest.fixture(scope="module")
def morph():
    return morphable_model(identity="none")


@pytest.fixture(scope="module")
def built(morph):
    ticks = []
    model, report = build_affect_model(synthetic_frames(bad=True), morph, progress=ticks.append, **KW)
    return model, report, ticks


def test_class_means_recovered(built):
    model, report, ticks = built
    assert len(ticks) == report.frames_read == 4 * 3 * 4 + 2
    assert report.num_skipped == 2 and any("orphan" in s for s in report.skipped)
    for (v, a), region in CLASSES.items():
        c = int(class_index_np(model.grid, v, a))
        assert int(model.class_count[c]) == 4 * 3
        want = planted_deformation(region)
        got = np.asarray(model.class_mean[c])
        assert np.abs(got - want).max() < 0.15 * np.abs(want).max(), np.abs(got - want).max()
        # the label is the median of the class's labels, inside the class
        lab = np.asarray(model.class_label[c])
        assert abs(lab[0] - v) < 0.05 and abs(lab[1] - a) < 0.05
    # the neutral class holds the zero deformations of the 12 neutral frames
    c0 = int(class_index_np(model.grid, 0.0, 0.0))
    assert int(model.class_count[c0]) == 12 and np.abs(np.asarray(model.class_mean[c0])).max() < 1e-4


def test_empty_class_rule(built):
    model, report, _ = built
    counts = np.asarray(model.class_count)
    src = np.asarray(model.class_source)
    assert set(report.empty_classes) == set(np.flatnonzero(counts == 0))
    for c in report.empty_classes:
        s = src[c]
        assert counts[s] > 0 and report.filled_from[c] == s
        np.testing.assert_array_equal(model.class_mean[c], model.class_mean[s])
        np.testing.assert_array_equal(model.components[c], model.components[s])
        np.testing.assert_allclose(model.class_label[c], class_centre(model.grid, c))
        # nearest populated centre
        d = np.linalg.norm(np.asarray(class_centre(model.grid, c)) - np.asarray(class_centre(model.grid, s)))
        dmin = min(
            np.linalg.norm(np.asarray(class_centre(model.grid, c) - class_centre(model.grid, p)))
            for p in np.flatnonzero(counts)
        )
        assert d <= dmin + 1e-6


def test_components_and_weights(built):
    model, _, _ = built
    c = int(class_index_np(model.grid, 0.5, 0.5))
    comps = np.asarray(model.components[c])
    assert comps.shape == (3, V, 3) and np.all(np.isfinite(comps))
    # the dominant component lives on the planted region
    top = comps[np.argmax(np.linalg.norm(comps.reshape(3, -1), axis=1))]
    e = np.sum(top**2, axis=1)
    assert e[TOPO.region("lips_outer_upper")].sum() > 0.5 * e.sum()
    assert np.all(np.asarray(model.weight_std) >= 0)


def test_rigid_alignment_recovers_pose():
    rng = np.random.default_rng(1)
    d = planted_deformation("lips_outer_lower", 8.0)
    moved = (TPL + d) @ rotation(rng, 20).T + np.array([5.0, -3.0, 2.0])
    al = robust_rigid_align(moved, TPL)
    np.testing.assert_allclose(al - TPL, d, atol=0.05 * 8.0)
    batch = robust_rigid_align(np.stack([moved, TPL]), np.stack([TPL, TPL]))
    np.testing.assert_allclose(batch[0], al, atol=1e-9)
    np.testing.assert_allclose(batch[1], TPL, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_kabsch_matches_the_centred_reference(seed):
    """``_rigid_batch``'s cross-covariance (raw points less the means' product) against a per-frame loop
    that centres first, far from the origin too (a face 300 mm off-centre); the fit recovers a planted
    rigid motion exactly when nothing else moves."""
    from affectsynth.affect.build import _rigid_batch

    rng = np.random.default_rng(seed)
    b = 4
    src = TPL[None] + rng.normal(0.0, 1.0, (b, V, 3)) + np.array([300.0, -200.0, 100.0])
    r_true = np.stack([rotation(rng, 30) for _ in range(b)])
    t_true = rng.normal(0.0, 20.0, (b, 3))
    dst = src @ np.swapaxes(r_true, 1, 2) + t_true[:, None] + rng.normal(0.0, 0.5, (b, V, 3))
    w = rng.uniform(0.1, 1.0, (b, V))
    r, t = _rigid_batch(src, dst, w)
    for i in range(b):
        wi = w[i] / w[i].sum()
        ms, md = wi @ src[i], wi @ dst[i]
        cov = (dst[i] - md).T @ ((src[i] - ms) * wi[:, None])
        u, _, vt = np.linalg.svd(cov)
        d = np.sign(np.linalg.det(u @ vt))
        r_ref = u @ np.diag([1.0, 1.0, d]) @ vt
        np.testing.assert_allclose(r[i], r_ref, atol=1e-9)
        np.testing.assert_allclose(t[i], md - r_ref @ ms, atol=1e-7)
    exact = src @ np.swapaxes(r_true, 1, 2) + t_true[:, None]
    r, t = _rigid_batch(src, exact, w)
    np.testing.assert_allclose(r, r_true, atol=1e-9)
    np.testing.assert_allclose(t, t_true, atol=1e-7)


def test_class_deformation(built):
    model, _, _ = built
    t = jnp.array([0.5, 0.5])
    c = int(class_index_np(model.grid, 0.5, 0.5))
    np.testing.assert_array_equal(class_deformation(model, t), model.class_mean[c])
    f = jax.jit(class_deformation, static_argnames="interpolate")
    np.testing.assert_allclose(f(model, t), class_deformation(model, t), atol=0)
    # interpolation reproduces class means at class centres, is continuous, and between two centres is the
    # average of the two means
    centre = class_centre(model.grid, c)
    np.testing.assert_allclose(f(model, centre, interpolate=True), model.class_mean[c], atol=1e-5)
    mid = centre + jnp.array([0.1, 0.0])
    avg = 0.5 * (model.class_mean[c] + model.class_mean[c + 1])
    np.testing.assert_allclose(f(model, mid, interpolate=True), avg, atol=1e-5)
    a, b = f(model, mid, interpolate=True), f(model, mid + 1e-4, interpolate=True)
    assert float(jnp.abs(a - b).max()) < 1e-2
    corner = f(model, jnp.array([1.0, 1.0]), interpolate=True)
    np.testing.assert_allclose(corner, model.class_mean[99], atol=1e-5)
    assert np.all(np.isfinite(np.asarray(f(model, jnp.array([jnp.nan, 0.0]), interpolate=True))))
    np.testing.assert_allclose(class_label(model, t), model.class_label[c])


def test_sample_deformation_mean(built):
    model, _, _ = built
    t = jnp.array([0.5, 0.5])
    c = int(class_index_np(model.grid, 0.5, 0.5))
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    draws = jax.vmap(lambda k: sample_deformation(model, t, k))(keys)
    spread = float(jnp.abs(draws - model.class_mean[c][None]).max())
    assert spread > 0  # it varies
    err = float(jnp.abs(draws.mean(0) - model.class_mean[c]).max())
    assert err < 5 * spread / np.sqrt(4000)
    cold = sample_deformation(model, t, keys[0], temperature=0.0)
    np.testing.assert_allclose(cold, model.class_mean[c], atol=1e-6)


def test_streaming_generator_consumed_once(morph):
    seen = []

    def gen():
        for fr in synthetic_frames(n_subjects=2, per_class=1):
            seen.append(fr.frame)
            yield fr

    model, report = build_affect_model(gen(), morph, grid=AffectGrid(4, 4), max_frames_per_class=2, **KW)
    assert report.frames_read == len(seen) == 2 * 3 * 2
    assert model.class_mean.shape == (16, V, 3) and model.grid == AffectGrid(4, 4)


def test_save_load_round_trip(built, tmp_path):
    model, _, _ = built
    p = save_model(tmp_path / "m.npz", model)
    back = read_model(p)
    assert isinstance(back, AffectModel) and back.grid == model.grid and back.metadata == model.metadata
    for a, b in zip(jax.tree_util.tree_leaves(model), jax.tree_util.tree_leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert back.morphable.expression_names == model.morphable.expression_names
    assert not [q for q in tmp_path.iterdir() if q.name != "m.npz"]


def test_load_errors(built, tmp_path):
    model, _, _ = built
    with pytest.raises(ModelFileError, match="not found"):
        read_model(tmp_path / "none.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ModelFileError, match="not an affectsynth model"):
        read_model(tmp_path / "text.npz")
    np.save(tmp_path / "arr.npy", np.zeros(3))
    with pytest.raises(ModelFileError, match="not an affectsynth model"):
        read_model(tmp_path / "arr.npy")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(ModelFileError, match="not an affectsynth model"):
        read_model(tmp_path / "other.npz")
    good = save_model(tmp_path / "good.npz", model)
    with np.load(good) as z:
        data = {k: z[k] for k in z.files}
    header = json.loads(data["header"].tobytes())
    header["version"] = 99
    np.savez(tmp_path / "v99.npz", **{**data, "header": np.frombuffer(json.dumps(header).encode(), np.uint8)})
    with pytest.raises(ModelFileError, match="version 99"):
        read_model(tmp_path / "v99.npz")
    np.savez(tmp_path / "shape.npz", **{**data, "class_count": np.zeros(3, np.int32)})
    with pytest.raises(ModelFileError, match="corrupt"):
        read_model(tmp_path / "shape.npz")
    raw = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError) as e:
        read_model(tmp_path / "cut.npz")
    assert "\n" not in str(e.value)
    assert zipfile.is_zipfile(good)


# ---------------------------------------------------------------------------------------------------------
# CLI


@pytest.fixture(scope="module")
def gallery_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gallery")
    write_gallery(d, synthetic_frames(n_subjects=3, per_class=2))
    with open(d / "gallery.csv", "a") as f:
        f.write("zz,q,1,meshes/missing.npy,0.1,0.1,0\n")
    return d


def test_cli_build_info(gallery_dir, tmp_path):
    from affectsynth.cli.models import model_app

    runner = CliRunner()
    out = tmp_path / "m.npz"
    fig = tmp_path / "m.png"
    r = runner.invoke(
        model_app,
        [
            "build",
            str(gallery_dir),
            "--output",
            str(out),
            "--figure",
            str(fig),
            "--components",
            "3",
            "--quiet",
        ],
    )
    assert r.exit_code == 0, r.output
    assert out.is_file() and fig.read_bytes()[:4] == b"\x89PNG"
    assert "gallery.csv:" in r.output and "no neutral" in r.output  # the bad row was reported
    r = runner.invoke(model_app, ["info", str(out)])
    assert r.exit_code == 0 and "populated classes" in r.output
    r = runner.invoke(model_app, ["build", str(gallery_dir), "--output", str(out), "--quiet"])
    assert r.exit_code == 2 and "exists" in r.output


def test_cli_errors(tmp_path):
    from affectsynth.cli.models import model_app

    runner = CliRunner()
    r = runner.invoke(model_app, ["info", str(tmp_path / "nope.npz")])
    assert r.exit_code == 3 and r.output.startswith("affectsynth: error: ") and "Traceback" not in r.output
    r = runner.invoke(model_app, ["build", str(tmp_path), "--output", str(tmp_path / "m.npz")])
    assert r.exit_code == 2 and "gallery CSV not found" in r.output


# ---------------------------------------------------------------------------------------------------------
# The model's own AU description (class_au)


@pytest.fixture(scope="module")
def au_fields():
    from affectsynth.affect.au_fields import expression_basis

    basis, std, names = expression_basis()
    return np.asarray(basis, np.float64), std, names


def test_project_action_units_recovers_planted_intensities_unshrunk(au_fields):
    basis, _, names = au_fields
    rng = np.random.default_rng(3)
    planted = rng.uniform(0.0, 1.0, (4, len(names))) * (rng.uniform(size=(4, len(names))) < 0.4)
    planted[0, names.index("AU23")] = 1.0  # the AUs a ridge shrank most (0.19x, 0.22x)
    planted[0, names.index("AU5")] = 0.9
    got = project_action_units(np.einsum("nk,kvc->nvc", planted, basis), basis)
    assert got.shape == planted.shape and got.min() >= 0.0
    np.testing.assert_allclose(got, planted, atol=1e-3)


def au_frames(morph_names, intensities, with_au=True, seed=0):
    """Sequences whose frames are the AU basis at known intensities (one class per pattern)."""
    from affectsynth.affect.au_fields import expression_basis

    basis = np.asarray(expression_basis()[0], np.float64)
    rng = np.random.default_rng(seed)
    for j, ((v, a), w) in enumerate(intensities.items()):
        seq = f"q{j}"
        zero = np.zeros(len(morph_names), np.float32) if with_au else None
        yield GalleryFrame("s", seq, 0, TPL.astype(np.float32), 0.0, 0.0, True, "t", au=zero)
        for f in range(1, 4):
            g = np.asarray(w) * rng.uniform(0.8, 1.2)
            verts = TPL + np.einsum("k,kvc->vc", g, basis)
            au = g.astype(np.float32) if with_au else None
            yield GalleryFrame("s", seq, f, verts.astype(np.float32), v, a, False, "t", au=au)


def test_class_au_from_frames_is_exact_and_projection_agrees(au_fields):
    basis, std, names = au_fields
    morph = morphable_model(basis, std, names, identity="none")
    k = len(names)
    eye = dict(zip(names, np.eye(k), strict=True))
    pats = {
        (0.5, 0.5): eye["AU12"] * 0.8 + eye["AU6"] * 0.6,
        (-0.5, 0.3): eye["AU4"] * 0.9 + eye["AU23"] * 0.7,
    }
    exact, _ = build_affect_model(au_frames(names, pats), morph, au_names=names, **KW)
    proj, _ = build_affect_model(au_frames(names, pats, with_au=False), morph, au_names=names, **KW)
    assert exact.au_names == names == proj.au_names
    assert json.loads(exact.metadata)["class_au"] == "gallery intensities"
    assert "projection" in json.loads(proj.metadata)["class_au"]
    for (v, a), w in pats.items():
        c = int(class_index_np(exact.grid, v, a))
        own = [f.au for f in au_frames(names, pats) if not f.is_neutral and (f.valence, f.arousal) == (v, a)]
        np.testing.assert_allclose(np.asarray(exact.class_au[c]), np.mean(own, 0), atol=1e-6)
        # the projection finds the planted AUs, not shrunk (a ridge gave 0.19x-0.7x); what it misses is
        # motion the rigid alignment of the frames took away (AU6 moves points it treats as rigid)
        got, want = np.asarray(proj.class_au[c]), np.asarray(exact.class_au[c])
        on = w > 0
        assert np.all(got[on] >= 0.7 * want[on]) and np.all(got[on] <= 1.05 * want[on]), (got, want)
        assert np.all(got[~on] < 0.15), got


def test_build_without_expression_modes_projects_onto_facs_fields(built, au_fields):
    model, _, _ = built
    assert model.au_names == au_fields[2] and model.class_au.shape == (model.num_classes, len(au_fields[2]))
    assert float(np.min(np.asarray(model.class_au))) >= 0.0
    assert model.resting_expression.shape == (0,)


def test_class_action_units_blend_like_class_deformation(built):
    model, _, _ = built
    rng = np.random.default_rng(1)
    au = rng.uniform(0, 1, model.class_au.shape).astype(np.float32)
    # a model whose class means carry the AU vector on vertex 0: both queries must blend identically
    mean = np.zeros(model.class_mean.shape, np.float32)
    mean[:, 0, :] = au[:, :3]
    probe = eqx_replace(model, class_au=jnp.asarray(au), class_mean=jnp.asarray(mean))
    for target in rng.uniform(-1, 1, (20, 2)).astype(np.float32):
        for interp in (False, True):
            a = np.asarray(class_action_units(probe, target, interpolate=interp))
            d = np.asarray(class_deformation(probe, target, interpolate=interp))
            np.testing.assert_allclose(a[:3], d[0], atol=1e-6)


def eqx_replace(model, **kw):
    import equinox as eqx

    return eqx.tree_at(lambda m: [getattr(m, k) for k in kw], model, list(kw.values()))


def test_version_1_file_is_migrated_by_projection(built, tmp_path):
    model, _, _ = built
    good = save_model(tmp_path / "v2.npz", model)
    with np.load(good) as z:
        data = {k: z[k] for k in z.files if k not in ("class_au", "resting_expression")}
    header = json.loads(data["header"].tobytes())
    header["version"] = 1
    header.pop("au_names")
    np.savez(tmp_path / "v1.npz", **{**data, "header": np.frombuffer(json.dumps(header).encode(), np.uint8)})
    old = read_model(tmp_path / "v1.npz")
    assert old.au_names == model.au_names
    np.testing.assert_allclose(np.asarray(old.class_au), np.asarray(model.class_au), atol=1e-5)
    np.savez(tmp_path / "v2bad.npz", **{**data})  # version 2 without its AU arrays
    with pytest.raises(ModelFileError, match="missing class_au"):
        read_model(tmp_path / "v2bad.npz")


# ---------------------------------------------------------------------------------------------------------
# Planted parameters: the generator's AU intensities survive the build (alignment + class means)

PLANT = dict(num_subjects=3, num_directions=48, frames_per_sequence=6, seed=0, asymmetry=0.0)


@pytest.fixture(scope="module")
def planted_build():
    from affectsynth.affect import synthetic_gallery as sgal
    from affectsynth.affect.au_fields import action_unit_fields, expression_basis

    basis, std, names = expression_basis()
    frames = sgal.generate_gallery(**PLANT, pose_jitter_deg=3.0)
    model, _ = build_affect_model(
        frames, morphable_model(basis, std, names), num_components=2, splocs_iterations=1, splocs_admm_steps=1
    )
    sums: dict = {}
    plan = sgal._gallery_plan(fields=action_unit_fields(), identity_scale=1.0, gain_sigma=0.25, **PLANT)
    for *_, v, a, w in plan:
        sums.setdefault(int(class_index_np(model.grid, v, a)), []).append(w)
    return model, basis.astype(np.float64), names, {c: np.mean(w, 0) for c, w in sums.items()}


@pytest.mark.parametrize(
    "target,aus",
    [
        (
            (0.3, 0.8),
            ("AU1", "AU2", "AU5"),
        ),  # surprised: brows and upper lids (AU25/26/27 overlap: not compared)
        ((0.6, 0.75), ("AU1", "AU2", "AU5", "AU6", "AU12")),  # excited
        ((0.8, 0.4), ("AU6", "AU12", "AU10")),  # happy
        ((-0.6, -0.3), ("AU1", "AU4", "AU15")),  # sad
    ],
)
def test_class_means_keep_the_generators_intensities(planted_build, target, aus):
    """Ridge projection of a class mean onto the AU basis recovers the mean intensities the generator used
    for that class's frames: the rigid alignment does not take brow, lid or cheek motion for head motion."""
    model, basis, names, want = planted_build
    c = int(class_index_np(model.grid, *target))
    k = basis.reshape(len(names), -1)
    gram = k @ k.T
    got = np.linalg.solve(
        gram + 1e-6 * np.trace(gram) / len(gram) * np.eye(len(gram)), k @ np.ravel(model.class_mean[c])
    )
    for au in aus:
        i = names.index(au)
        assert abs(got[i] - want[c][i]) < 0.1, (au, float(got[i]), float(want[c][i]))
    # the mouth-opening AUs (25/26/27) overlap: where the class opens the mouth, their split is not compared
    opens = max(want[c][names.index(n)] for n in ("AU25", "AU26")) > 0.02
    opening = ("AU25", "AU26", "AU27") if opens else ()
    off = [i for i, n in enumerate(names) if want[c][i] < 0.02 and n not in opening]
    assert np.abs(got[off]).max() < 0.1, {names[i]: round(float(got[i]), 2) for i in off}
    if target == (0.8, 0.4):  # the happy class's lower lid goes up (AU6), as generated
        lower = TOPO.region("left_eye_lower")[3:-3]
        assert np.asarray(model.class_mean[c])[lower, 1].mean() > 0.3
