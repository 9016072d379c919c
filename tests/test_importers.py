"""Template correspondence (face.correspondence) and the ICT-FaceKit importer (affect.importers).

The correspondence is checked on planted data (the template itself under a known similarity); the ICT
checks read ../shared/data/ict-facekit in place and skip without it.
"""

import dataclasses

import numpy as np
import pytest
from typer.testing import CliRunner

from affectsynth.affect import au_fields as auf
from affectsynth.affect.importers import ict, ict_files
from affectsynth.affect.model import class_deformation, read_model, save_model
from affectsynth.affect.synthetic_gallery import GalleryConfig
from affectsynth.cli.app import app
from affectsynth.face import correspondence as corr_mod
from affectsynth.face import topology as topo

T = topo.face_topology().template.astype(np.float64)
SMALL = GalleryConfig(num_subjects=2, num_directions=8, frames_per_sequence=4)


def _rotation(deg, axis):
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


# ------------------------------------------------------------------------------ correspondence (planted)


def test_boundary_loops_and_their_sides_on_the_template():
    t = topo.face_topology()
    loops = corr_mod.boundary_loops(t.triangles)
    assert sorted(len(lp) for lp in loops) == [16, 16, 20, 36]
    mouth = next(lp for lp in loops if set(lp) == set(t.region("mouth_hole")))
    up, lo = corr_mod.split_contour(T, mouth)
    assert set(up) == set(t.region("lips_inner_upper")) and set(lo) == set(t.region("lips_inner_lower"))
    side = corr_mod.side_of_slit(T, t.triangles, up, lo, radius=10.0)
    corners = [up[0], up[-1]]
    assert np.all(side[up[1:-1]] == 1) and np.all(side[lo[1:-1]] == -1) and np.all(side[corners] == 0)
    assert side[0] == 1 and side[17] == -1  # outer lip midpoints: upper and lower
    assert side[10] == 0  # the forehead is far from the mouth


def test_correspondence_recovers_a_planted_similarity():
    """The template itself, moved by a known similarity, is found again: every mesh point on itself."""
    t = topo.face_topology()
    rot = _rotation(20.0, 1) @ _rotation(-10.0, 0)
    s, tr = 0.1, np.array([3.0, -40.0, 7.0])  # template mm -> "cm", turned and shifted
    src = s * T @ rot.T + tr
    mesh = corr_mod.SourceMesh(src, t.triangles.astype(np.int64), np.array(corr_mod.IBUG68_TO_FACEMESH))
    c = corr_mod.template_correspondence(mesh)
    np.testing.assert_allclose(c.rotation, rot.T, atol=1e-6)
    assert c.scale == pytest.approx(1.0 / s, rel=1e-6)
    mesh_pts = slice(0, topo.NUM_MESH_POINTS)
    np.testing.assert_allclose(c.points(src)[mesh_pts], T[mesh_pts], atol=1e-4)
    assert c.residual[mesh_pts].max() < 1e-4 and c.rigid_residual[mesh_pts].max() < 1e-4
    # a linear field on the source comes back exactly, turned and scaled into the template frame
    a = np.random.default_rng(0).normal(size=(3, 3))
    want = (1.0 / s) * (src @ a.T) @ rot
    np.testing.assert_allclose(c.sample(src @ a.T)[mesh_pts], want[mesh_pts], atol=1e-3)


# --------------------------------------------------------------------------------- ICT-FaceKit (shared)


@pytest.fixture(scope="module")
def rig(ict_dir):
    return ict_files.read_ict(ict_dir, identity=True)


@pytest.fixture(scope="module")
def made(rig):
    return ict.ict_action_unit_fields(rig)


def _obj_only(tmp_path, ict_dir):
    """The original layout with the three shipped OBJs (2 expression shapes) and the index file."""
    sub = tmp_path / "ict" / "FaceXModel"
    sub.mkdir(parents=True)
    for name in ("generic_neutral_mesh.obj", "jawOpen.obj", "mouthSmile_L.obj", "vertex_indices.json"):
        (sub / name).symlink_to(ict_dir / name)
    return sub.parent


@pytest.mark.shared
def test_ict_correspondence_lies_on_the_surface(made, rig):
    c = made.correspondence
    assert 8.0 < c.scale < 12.0  # cm -> template mm: an ICT head is about our size
    assert c.residual.max() < 2.0, np.argsort(-c.residual)[:5]
    assert np.median(c.rigid_residual) < 3.0  # the similarity alone is already close
    # irises land on the eyeballs, every other point on the face region
    t = topo.face_topology()
    (r0, r1), (l0, l1) = ict_files.EYEBALLS
    assert np.all((c.corners[t.region("right_iris")] >= r0) & (c.corners[t.region("right_iris")] < r1))
    assert np.all((c.corners[t.region("left_iris")] >= l0) & (c.corners[t.region("left_iris")] < l1))
    assert c.corners[: topo.NUM_MESH_POINTS].max() < ict_files.FACE_VERTICES


@pytest.mark.shared
def test_ict_jaw_open_parts_the_lips(made, rig):
    t = topo.face_topology()
    x = T + made.fields["AU27"]
    assert x[13, 1] - x[14, 1] >= 20.0  # inner lip centres, upper minus lower (mm)
    up, lo = t.inner_lip_pairs()
    assert np.all(x[up[1:-1], 1] > x[lo[1:-1], 1])
    # contour by contour: each upper inner-lip point sits on ICT vertices that jawOpen moves far less than
    # those under its lower partner (near the corners the jaw drags both; at the centre only the lower)
    jaw = np.linalg.norm(rig.expressions["jawOpen"], axis=1)
    moved = np.einsum("pk,pk->p", made.correspondence.barycentric, jaw[made.correspondence.corners])
    assert np.all(moved[up[1:-1]] < 0.6 * moved[lo[1:-1]]) and moved[13] < 0.1 * moved[14]
    for au in ("AU25", "AU26"):  # partial jaw openings: the lips part too
        y = T + made.fields[au]
        assert y[13, 1] - y[14, 1] > 3.0


@pytest.mark.shared
def test_ict_lids_and_irises(made):
    t = topo.face_topology()
    blink = made.fields["AU43"]
    for side in ("right", "left"):
        up, lo = auf._lid_pairs(t, side)
        gap0 = T[up[1:-1], 1] - T[lo[1:-1], 1]
        gap1 = gap0 + blink[up[1:-1], 1] - blink[lo[1:-1], 1]
        assert gap1.max() < 0.35 * gap0.max()  # the upper lid comes down onto the lower
        assert np.abs(blink[t.region(f"{side}_iris")]).max() < 0.5  # the eyeball does not move


@pytest.mark.shared
def test_ict_every_readme_mapping_is_built(made):
    assert made.missing == ()
    assert set(auf.AU_NAMES) <= set(made.fields)
    assert made.table["AU23"].startswith("0.6*mouthPress_L") and "mouthRollUpper" in made.table["AU28"]
    np.testing.assert_allclose(made.fields["AU12"], made.fields["AU12L"] + made.fields["AU12R"], atol=1e-4)
    # peak magnitudes in line with FACTS section 9 (measured on 478 points, ICT mm)
    peak = {k: np.linalg.norm(v, axis=1).max() for k, v in made.fields.items()}
    assert 10.0 < peak["AU12"] < 20.0 and 30.0 < peak["AU27"] < 50.0 and 3.0 < peak["AU15"] < 9.0
    # and they point the way our hand-written fields do (frame, axes and sides right); measured 0.84-0.95
    ours = auf.action_unit_fields()
    for au in ("AU1", "AU12", "AU12L", "AU15", "AU26", "AU27"):
        a, b = ours[au].ravel(), made.fields[au].ravel()
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.75, au


@pytest.mark.shared
def test_ict_layout_preference_and_agreement(tmp_path, ict_dir, made):
    folder = _obj_only(tmp_path, ict_dir)
    objs = ict_files.read_ict(folder)
    assert objs.origin == "obj" and sorted(objs.expressions) == ["jawOpen", "mouthSmile_L"]
    from_objs = ict.ict_action_unit_fields(objs)
    assert "AU1" in from_objs.missing and "AU12R" in from_objs.fields  # the missing side by mirror
    for au in ("AU27", "AU12L"):
        np.testing.assert_allclose(from_objs.fields[au], made.fields[au], atol=1e-3)
    (folder / ict_files.NPZ_NAME).symlink_to(ict_dir / ict_files.NPZ_NAME)
    both = ict_files.read_ict(folder)
    assert both.origin == "npz" and len(both.expressions) == 57  # more shapes than the two OBJs


@pytest.mark.shared
def test_ict_import_below_the_minimum_fails_in_one_line(tmp_path, ict_dir):
    folder = _obj_only(tmp_path, ict_dir)
    with pytest.raises(ict_files.IctDataError, match="missing AU1, AU4, AU15") as err:
        ict.import_ict_model(folder, config=SMALL)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)
    res = CliRunner().invoke(app, ["model", "import-ict", str(folder), "-o", str(tmp_path / "m.npz")])
    errs = [ln for ln in res.stderr.splitlines() if ln.startswith("affectsynth: error:")]
    assert res.exit_code == 2 and len(errs) == 1 and "AU15" in errs[0], res.stderr
    assert not (tmp_path / "m.npz").exists()


def test_ict_bad_files_name_the_file(tmp_path):
    (tmp_path / ict_files.NPZ_NAME).write_bytes(b"not an archive")
    with pytest.raises(ict_files.IctDataError, match=ict_files.NPZ_NAME):
        ict_files.read_ict(tmp_path)
    with pytest.raises(ict_files.IctDataError, match="neither"):
        ict_files.read_ict(tmp_path / "..")
    obj = tmp_path / "bad.obj"
    obj.write_text("v 1 2\nf 1 2 3\n")
    with pytest.raises(ict_files.IctDataError, match="bad.obj"):
        ict_files.read_obj(obj)


@pytest.mark.shared
def test_ict_model_names_its_source_and_moves_every_target(tmp_path, ict_dir):
    model = ict.import_ict_model(ict_dir, config=SMALL)
    info = model.info
    assert info["name"] == "ict-facekit" and info["source"] == str(ict_dir.resolve())
    assert info["missing_aus"] == [] and "mouthPress" in info["au_table"]["AU24"]
    assert info["read_from"].startswith("npz") and "MIT" in info["licence"]
    assert model.morphable.expression_names == auf.AU_NAMES
    for va in ((-0.63, -0.27), (-0.66, -0.63), (0.4, 0.67), (-0.51, 0.59)):  # sad, bored, surprised, angry
        peak = float(np.linalg.norm(np.asarray(class_deformation(model, np.array(va))), axis=1).max())
        assert peak > 1.0, (va, peak)
    path = save_model(tmp_path / "ict.npz", model)
    assert read_model(path).info == info
    res = CliRunner().invoke(app, ["model", "info", str(path)])
    assert res.exit_code == 0 and "name: ict-facekit" in res.stdout and "AU <- shapes" in res.stdout
    assert "AUs not built (no shape): none" in res.stdout


@pytest.mark.shared
def test_ict_identity_basis(rig, made):
    basis, std = ict.ict_identity_basis(rig, num_modes=30, corr=made.correspondence)
    assert basis.shape == (30, 478, 3) and std.shape == (30,)
    flat = basis.reshape(30, -1).astype(np.float64)
    np.testing.assert_allclose(flat @ flat.T, np.eye(30), atol=1e-4)
    assert np.all(np.diff(std) <= 1e-4) and np.all(std > 0)
    # one standard deviation of the first mode moves the face by millimetres, not microns or metres
    assert 0.5 < std[0] / np.sqrt(478) < 10.0
    # ICT's identity model is left/right symmetric: the leading modes are (anti)symmetric on our mesh too
    t = topo.face_topology()
    parity = np.sum(basis[:5, t.mirror] * np.array([-1.0, 1.0, 1.0]) * basis[:5], axis=(1, 2))
    assert np.all(np.abs(parity) > 0.9), parity
    model = ict.import_ict_model(
        rig.path.parent, identity=True, identity_modes=12, config=dataclasses.replace(SMALL, num_subjects=1)
    )
    assert model.morphable.num_identity == 12 and model.info["identity"].startswith("ict-facekit")
