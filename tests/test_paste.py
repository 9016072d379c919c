"""The paste-back's engines (issue 16): OpenCV on the host (``workcrop._paste_opencv``, the default where
``cv2`` imports) against the NumPy reference (``workcrop._paste_numpy``), and which programs the working
crop needs with it.

OpenCV's ``remap`` and ``warpAffine`` round sample positions to 1/32 px, so its output differs from the
reference by at most the photo's change over 1/64 px: bounded here on band-limited noise (a worst case
for gradients) and exactly on a ramp (``test_latency``).
"""

import numpy as np
import pytest
from hypothesis import example, given, settings

from affectsynth import workcrop, working
from affectsynth.pipeline import SynthesisOptions
from test_latency import paste_cases, pasted, smooth_edit

cv2 = pytest.importorskip("cv2")


def band_limited(rng, h, w):
    """Noise blurred by a binomial filter: detail a camera could record, gradients up to ~0.3 per pixel."""
    image = rng.random((h, w, 3), np.float32)
    for axis in (0, 1):
        image = 0.25 * np.roll(image, 1, axis) + 0.5 * image + 0.25 * np.roll(image, -1, axis)
    return image


@settings(max_examples=12, deadline=None)
@given(**paste_cases(700, 400))
@example(h=600, w=650, top=-40, left=-30, scale=0.1, amplitude=14.0, seed=1)  # windows past the edges
@example(h=500, w=500, top=0, left=0, scale=1.0, amplitude=6.0, seed=2)  # a face at its own scale
@example(h=129, w=8, top=0, left=0, scale=0.328125, amplitude=8.0, seed=2)  # a warp reaching past the photo
@example(h=642, w=26, top=0, left=0, scale=1 / 3, amplitude=0.0, seed=0)  # a trace of coverage past the rim
def test_opencv_paste_equals_the_numpy_reference(h, w, top, left, scale, amplitude, seed):
    """OpenCV's paste-back writes what the reference writes, within its 1/32 px rounding of positions
    (measured on such photos: 0.038 at most, 4e-4 mean where covered); the coverage within its rounding of
    the fields' sample positions (measured 5e-6); pixels it does not cover are left bit for bit."""
    rng = np.random.default_rng(seed)
    image = band_limited(rng, h, w)
    edit = smooth_edit(rng, 64, amplitude)
    win = workcrop.Window(top, left, scale)
    (got, got_mask), (want, want_mask) = (pasted(image, win, edit, engine=e) for e in ("opencv", "numpy"))
    np.testing.assert_allclose(got_mask, want_mask, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(got[want_mask == 0], image[want_mask == 0])
    np.testing.assert_allclose(got, want, rtol=0, atol=0.06)
    covered = want_mask > 0
    if covered.any():
        assert np.abs(got - want)[covered].mean() < 1.5e-3


def test_opencv_paste_lands_on_the_reference_s_sub_pixel_positions():
    """The same check on a smooth photo (slopes up to 0.044 a pixel), where OpenCV's rounding to 1/32 px
    moves the output by 1.5e-3 at most (measured): a Catmull-Rom kernel (3.7e-3 off) or a lookup half a
    pixel off (~0.02) would show."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:400, :380].astype(np.float32)
    image = 0.5 + 0.4 * np.stack([np.sin(xx / 9), np.cos(yy / 7), np.sin((xx + yy) / 11)], -1)
    edit = smooth_edit(rng, 64, 8.0)
    win = workcrop.Window(-20, 10, 0.17)
    (got, mask), (want, _) = (pasted(image, win, edit, engine=e) for e in ("opencv", "numpy"))
    assert (mask > 0).mean() > 0.2
    np.testing.assert_allclose(got, want, rtol=0, atol=2.5e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_opencv_strips_on_threads_write_what_one_thread_writes(monkeypatch, dtype):
    rng = np.random.default_rng(3)
    image = band_limited(rng, 900, 700)
    if dtype == np.uint8:
        image = np.floor(image * 255 + 0.5).astype(np.uint8)
    edit = smooth_edit(rng, 64, 2.0)
    win = workcrop.Window(-7, 11, 0.09)
    results = []
    for threads in (1, 3):
        monkeypatch.setattr(workcrop, "_threads", lambda n=threads: n)
        results.append(pasted(image, win, edit, engine="opencv"))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert (results[0][1] > 0).sum() > 10_000 and (results[0][0] != image).any()
    assert len(workcrop._tiles(win, edit[1], 900, 700, rows=workcrop.STRIP, cols=700)) >= 4


def test_a_view_opencv_cannot_write_into_goes_to_the_compiled_tiles(monkeypatch):
    """``out`` that is not C-contiguous (OpenCV would write into a copy of it) is pasted by the tiles."""
    rng = np.random.default_rng(6)
    image = band_limited(rng, 300, 280)
    edit = smooth_edit(rng, 64, 3.0)
    win = workcrop.Window(10, 5, 0.3)
    want, want_mask = pasted(image, win, edit, engine="tiles")
    out = np.asfortranarray(image.copy())
    mask = np.zeros(image.shape[:2], np.float32)
    workcrop.paste_back(out, mask, image, win, *edit, engine="opencv")
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(mask, want_mask)


@pytest.mark.parametrize("engine", ["opencv", "tiles"])
def test_prepare_builds_tile_programs_only_for_the_tiles(monkeypatch, engine):
    """With OpenCV there is no tile program to build (a first call, ``warmup`` and ``augment`` after
    ``synth`` compile the crops' program only); without it, one per photo dtype."""
    built = []
    monkeypatch.setattr(workcrop, "paste_engine", lambda: engine)
    monkeypatch.setattr(workcrop, "tile_program", lambda size, dtype, **kw: built.append(np.dtype(dtype)))
    monkeypatch.setattr(working, "work_program", lambda *a, **kw: "crops")
    assert working.prepare(None, SynthesisOptions(), 1) == "crops"
    assert built == ([] if engine == "opencv" else [np.dtype(np.float32), np.dtype(np.uint8)])


# ------------------------------------------------------------------------ the batch jobs on the photo's bytes


@pytest.fixture(scope="module")
def model():
    from affectsynth.affect import default as dflt
    from affectsynth.affect import synthetic_gallery as sgal

    config = sgal.GalleryConfig(num_subjects=3, num_directions=12, frames_per_sequence=4)
    return dflt.build_default_model(cache=False, config=config)


@pytest.mark.slow
def test_augment_works_on_bytes_and_compiles_nothing_after_synth(model, program_cache, monkeypatch, tmp_path):
    """``augment`` reads photos as ``synth`` does (uint8), so after ``synth``'s programs are ready (batch 1)
    a job of batch 1 builds no program (it used to build the float photos' tile program); its images are
    the float photos' results saved, within 1 grey level."""
    import dataclasses

    from affectsynth import compiled
    from affectsynth.cli import augment
    from affectsynth.cli.bulk import Backend
    from affectsynth.io import load_image, save_image
    from test_synthesis import CHEAP, synthetic_face

    opts = dataclasses.replace(CHEAP, work_size=256)
    image, lm = synthetic_face(model)
    source = save_image(tmp_path / "in" / "face.png", image)
    builds = []
    real_build = compiled._build
    monkeypatch.setattr(compiled, "_build", lambda *a: builds.append(a[2]) or real_build(*a))
    working.prepare(model, opts, 1, photo_dtypes=(np.uint8,))  # as ``affectsynth synth`` prepares
    after_synth = len(builds)
    synth, seen = Backend().synth(model, opts), []

    def recorded(images, *rest):
        seen.append(images.dtype)
        return synth(images, *rest)

    classes = [(11, -0.7, -0.7), (88, 0.7, 0.7)]
    job = dict(detect=lambda im, src: lm, batch_size=1)
    augment.run_augment([source], tmp_path / "bytes", classes, synth=recorded, **job)
    assert builds[after_synth:] == [] and set(seen) == {np.dtype(np.uint8)}
    floats = lambda path: (load_image(path), [])
    augment.run_augment([source], tmp_path / "floats", classes, synth=recorded, load=floats, **job)
    assert seen[-1] == np.float32
    for name in ("face_c11_0.png", "face_c88_0.png"):
        got, want = (np.asarray(load_image(tmp_path / d / name, dtype=np.uint8)) for d in ("bytes", "floats"))
        off = np.abs(got.astype(np.int16) - want)
        assert off.max() <= 1 and (off > 0).mean() < 1e-3, (off.max(), (off > 0).sum())
        assert np.abs(got.astype(np.int16) - np.asarray(load_image(source, dtype=np.uint8))).max() > 10
