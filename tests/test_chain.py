"""The expression's magnitude survives the chain model -> offsets -> warp field (issue 15, item 3).

``scripts/measure_chain.py`` measures each link on real faces (FaceMesh re-detection included); these are
the links that need no photo: the render's warp field carries every landmark's pixel exactly by its
offset, and the script's own arithmetic (kept fraction, similarity alignment) is right.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affectsynth import pipeline
from affectsynth.affect.au_fields import AU_NAMES, expression_basis
from affectsynth.face import topology as topo
from affectsynth.render.raster import interpolate, rasterize, sample_bilinear
from script_module import load_script

SIZE = 256
PX_PER_MM = 1.4


def _script():
    return load_script("measure_chain")


def _face_and_offsets(aus: dict[str, float]):
    """Template landmarks in a SIZE x SIZE image (pixels, y down) and the AU basis' offsets for ``aus``."""
    t = topo.face_topology()
    flip = np.array([PX_PER_MM, -PX_PER_MM, -PX_PER_MM], np.float32)
    lm = t.template * flip + np.array([SIZE / 2, SIZE / 2 - 4, 0.0], np.float32)
    basis, _, _ = expression_basis()
    au = np.zeros(len(AU_NAMES), np.float32)
    for k, v in aus.items():
        au[AU_NAMES.index(k)] = v
    return lm.astype(np.float32), (np.einsum("k,kvc->vc", au, np.asarray(basis)) * flip).astype(np.float32)


@jax.jit
def _field_at_moved_landmarks(lm, offsets):
    """Where the pixel drawn at each moved landmark comes from: the render's source-position field (what
    ``_edit_patch`` samples the photo with), bilinearly read at ``lm + offsets``."""
    options = pipeline.SynthesisOptions()
    mesh, src, dst = pipeline._warped_mesh(lm, offsets, options)
    frags = rasterize(dst, mesh["triangles"], SIZE, SIZE)
    src_xy = interpolate(frags, src[:, :2])
    return sample_bilinear(src_xy, lm[:, :2] + offsets[:, :2])


@pytest.mark.parametrize(
    "aus",
    [
        {"AU4": 1.0, "AU5": 0.7, "AU7": 0.8, "AU23": 0.8},  # angry
        {"AU1": 1.0, "AU4": 0.8, "AU15": 0.9, "AU17": 0.8},  # sad
        {"AU1": 1.0, "AU2": 1.0, "AU5": 1.0, "AU26": 1.0},  # surprised
        {"AU6": 0.8, "AU12": 1.0, "AU25": 0.8},  # happy
    ],
)
def test_the_warp_moves_each_landmarks_pixel_by_its_offset(aus):
    """Link (b): the photo's pixel under each neutral brow, lid and lip-corner landmark is drawn at the moved
    landmark (within 0.03 of the offset + 0.25 px: a bilinear reading of a piecewise-linear field), and the
    24 points moved most keep >= 0.97 of their motion, so nothing is lost between the mesh and the image
    (London faces: 0.97-1.03 per region). Elsewhere a few points sit where the deformed mesh folds over
    itself (cheek sides under AU6, inner lips as they part), and the surface in front is drawn there."""
    lm, off = _face_and_offsets(aus)
    moved = np.linalg.norm(off[:, :2], axis=1)
    top = np.argsort(-moved)[:24]
    assert moved[top].min() > 2.0  # a real test: the expression moves points by pixels
    src = np.asarray(_field_at_moved_landmarks(jnp.asarray(lm), jnp.asarray(off)))
    got = lm[:, :2] + off[:, :2] - src  # how far the pixel drawn at each moved landmark travelled
    err = np.linalg.norm(got - off[:, :2], axis=1)
    t = topo.face_topology()
    ids = [t.region(f"{s}_brow") for s in ("left", "right")]
    ids += [t.region(f"{s}_eye_{lid}")[1:-1] for s in ("left", "right") for lid in ("upper", "lower")]
    ids = np.concatenate(ids + [t.region("lips_outer_upper")[[0, -1]]])
    assert np.all(err[ids] <= 0.03 * moved[ids] + 0.25), float(np.max(err[ids] - 0.03 * moved[ids]))
    kept = np.sum(got[top] * off[top, :2]) / np.sum(off[top, :2] ** 2)
    assert kept >= 0.97, kept


def test_field_jit_matches_eager():
    lm, off = _face_and_offsets({"AU4": 1.0, "AU7": 0.8})
    with jax.disable_jit():
        eager = np.asarray(_field_at_moved_landmarks(jnp.asarray(lm), jnp.asarray(off)))
    np.testing.assert_allclose(np.asarray(_field_at_moved_landmarks(lm, off)), eager, atol=1e-3)


def test_kept_is_the_projection_onto_the_wanted_motion():
    mc = _script()
    rng = np.random.default_rng(0)
    want = rng.normal(size=(478, 2)) * 5.0
    ids = np.arange(40)
    for a in (0.0, 0.5, 1.3):
        side = rng.normal(size=want.shape)  # motion across ``want`` does not count
        side -= (np.sum(side[ids] * want[ids]) / np.sum(want[ids] ** 2)) * want
        assert mc.kept(a * want + side, want, ids, iod=60.0) == pytest.approx(a, abs=1e-9)
    assert mc.kept(want, 0.01 * want, ids, iod=600.0) is None  # below FaceMesh's noise: not reported


def test_align_similarity_recovers_a_planted_similarity():
    mc = _script()
    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 2)) * 40.0
    ang, s, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = src @ (s * rot).T + shift
    r, s_fit, ms, md = mc.align_similarity(src, dst)
    np.testing.assert_allclose((src - ms) @ (s_fit * r).T + md, dst, atol=1e-9)
    assert s_fit == pytest.approx(s)
