"""Shape-stable programs kept across processes (issue 16): the working crop (``workcrop``), the program
cache (``compiled``) and ``synthesize_batch``'s working-crop path against the whole-photo (legacy) path.

The NumPy resampling is checked against analytic cases (linear ramps are reproduced exactly by linear
interpolation and box filters); the cache with a tiny function; the pipeline on the synthetic face of
``test_synthesis`` (cheap options) and, when ``../shared`` is there, on a London photo at 512 and 3000 px.
"""

import dataclasses
import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from affectsynth import compiled, pipeline, workcrop, working
from affectsynth.affect import default as dflt
from affectsynth.affect import synthetic_gallery as sgal
from affectsynth.errors import OptionsError
from affectsynth.pipeline import SynthesisOptions, crop_size, synthesize_batch
from test_synthesis import CHEAP, synthetic_face


def ramp(h, w, a=(0.002, 0.001), b=(0.0005, 0.003)):
    """f32[h, w, 2]: two linear functions of the pixel centre (x, y)."""
    y, x = np.mgrid[:h, :w] + 0.5
    return np.stack([a[0] * x + a[1] * y, b[0] * x + b[1] * y], -1).astype(np.float32)


# ---------------------------------------------------------------------------------------- working crop


def face_landmarks(cx, cy, span):
    """478 landmarks filling a ``span`` px square centred on (cx, cy)."""
    rng = np.random.default_rng(0)
    lm = rng.uniform(-0.5, 0.5, (478, 3)) * span + [cx, cy, 0]
    lm[:2, :2] = [[cx - span / 2, cy - span / 2], [cx + span / 2, cy + span / 2]]
    return lm.astype(np.float32)


def test_a_small_face_keeps_its_scale_and_a_large_one_is_downsampled():
    small = workcrop.face_window(face_landmarks(300, 200, 100), 400, 600, size=256, skirt=0.35)
    assert small.scale == 1.0 and 0 <= small.top <= 400 - 256 and 0 <= small.left <= 600 - 256
    big = workcrop.face_window(face_landmarks(1500, 1000, 1000), 2000, 3000, size=256, skirt=0.35)
    side = 256 / big.scale
    assert big.scale < 1 and side >= 1000 * 1.35  # the face and its skirt fit
    assert big.left <= 1500 - 500 and big.left + side >= 1500 + 500


def test_the_window_stays_in_the_photo_when_it_fits_and_pads_otherwise():
    corner = workcrop.face_window(face_landmarks(40, 30, 60), 300, 300, size=256, skirt=0.35)
    assert (corner.top, corner.left) == (0, 0)
    tiny = workcrop.face_window(face_landmarks(50, 50, 60), 100, 100, size=256, skirt=0.35)
    assert tiny.top < 0 and tiny.left < 0  # the crop's outside repeats the edge pixels


def test_at_scale_one_the_crop_is_a_copy_of_photo_pixels():
    rng = np.random.default_rng(1)
    image = rng.random((90, 120, 3), np.float32)
    win = workcrop.Window(-10, 20, 1.0)
    crop = workcrop.cut_window(image, win, 64)
    np.testing.assert_array_equal(crop[10:, :], image[:54, 20:84])
    np.testing.assert_array_equal(crop[:10, :], np.broadcast_to(image[0, 20:84], (10, 64, 3)))


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.1, 1.0), top=st.integers(0, 40), left=st.integers(0, 40))
def test_a_downsampled_crop_reproduces_a_linear_image(scale, top, left):
    """Box filter + linear interpolation are exact on linear functions (away from the clamped edges)."""
    size = 32
    extent = int(top + size / scale + 80)
    image = ramp(extent, extent)
    crop = workcrop.cut_window(image, workcrop.Window(top, left, scale), size)
    c = np.arange(size) + 0.5
    x, y = left + c[None, :] / scale, top + c[:, None] / scale
    want = np.stack([0.002 * x + 0.001 * y, 0.0005 * x + 0.003 * y], -1)  # ``ramp`` at photo (x, y)
    np.testing.assert_allclose(crop, want, atol=1e-5)


def test_landmarks_follow_the_crop():
    lm = face_landmarks(700, 500, 600)
    win = workcrop.face_window(lm, 1000, 1400, size=256, skirt=0.35)
    out = workcrop.crop_landmarks(lm, win)
    np.testing.assert_allclose(out[:, 0], (lm[:, 0] - win.left) * win.scale, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(out[:, 2], lm[:, 2] * win.scale, rtol=1e-5, atol=1e-3)
    assert out[:, :2].min() >= 0 and out[:, :2].max() <= 256


ENGINES = ("opencv", "tiles", "numpy")


@pytest.mark.parametrize("engine", ENGINES)
def test_paste_back_without_an_edit_returns_the_photo_bit_for_bit(engine):
    rng = np.random.default_rng(2)
    image = rng.random((300, 200, 3), np.float32)
    out, mask = image.copy(), np.zeros((300, 200), np.float32)
    covered = np.zeros((64, 64), np.float32)
    covered[10:50, 12:40] = 1
    zeros = np.zeros((64, 64, 2), np.float32)
    win = workcrop.Window(30, 20, 0.4)
    workcrop.paste_back(out, mask, image, win, zeros, covered, np.zeros((64, 64, 3)), engine=engine)
    np.testing.assert_array_equal(out, image)
    assert mask.max() == 1 and mask[:30].max() == 0 and mask[:, :20].max() == 0


def cubic_ramp_position(x):
    """Where the cubic convolution lookup (``workcrop.CUBIC_A``) of a linear ramp at pixel coordinate ``x``
    (centres at i + 0.5) lands: at ``x`` exactly for Catmull-Rom (a = -0.5); a = -0.75 moves it by
    ``-(4a + 2) t^3 + (6a + 3) t^2 - 2a t - t`` (t the fraction past the pixel centre), up to 0.048 px."""
    a = workcrop.CUBIC_A
    t = (x - 0.5) - np.floor(x - 0.5)
    return x + (-4 * a - 2) * t**3 + (6 * a + 3) * t**2 - (2 * a + 1) * t


@pytest.mark.parametrize("engine, atol", [("opencv", 8e-5), ("tiles", 2e-5), ("numpy", 2e-5)])
@settings(max_examples=10, deadline=None)
@given(scale=st.floats(0.2, 1.0), dx=st.floats(-3, 3), dy=st.floats(-3, 3), r=st.floats(-0.1, 0.1))
def test_paste_back_applies_the_displacement_to_photo_pixels_and_adds_the_residual(
    engine, atol, scale, dx, dy, r
):
    """A constant displacement ``d`` (crop px) samples the photo ``d / scale`` photo px away (where the cubic
    lookup of a ramp lands there); a constant residual is added; both only where the upsampled coverage is
    1. OpenCV rounds positions to 1/32 px: 1/64 px x the lookup's slope (up to 1.5 x the ramp's) more."""
    image = np.concatenate([ramp(260, 260), np.zeros((260, 260, 1), np.float32)], -1) + 0.2
    out, mask = image.copy(), np.zeros((260, 260), np.float32)
    covered = np.zeros((48, 48), np.float32)
    covered[8:40, 8:40] = 1
    disp = np.broadcast_to(np.float32([dx, dy]), (48, 48, 2)) * covered[..., None]
    resid = np.full((48, 48, 3), r, np.float32) * covered[..., None]
    win = workcrop.Window(5, 7, scale)
    workcrop.paste_back(out, mask, image, win, disp, covered, resid, engine=engine)
    inside = mask == 1
    assert inside.any()
    yy, xx = np.nonzero(inside)
    x, y = cubic_ramp_position(xx + 0.5 + dx / scale), cubic_ramp_position(yy + 0.5 + dy / scale)
    want = np.stack([0.002 * x + 0.001 * y, 0.0005 * x + 0.003 * y], -1) + 0.2 + r
    want = np.clip(want, 0.0, 1.0)  # the output is a valid image (a residual near white is clipped)
    np.testing.assert_allclose(out[yy, xx, :2], want, atol=atol)
    np.testing.assert_array_equal(out[mask == 0], image[mask == 0])


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dtype", [np.float32, np.uint8])
def test_under_the_paint_the_photo_s_detail_gives_way_to_the_crop_s_colour(engine, dtype):
    """Where the crop painted (opacity 1) the output is the crop's colour upsampled, whatever the photo
    and the warp there (no fine detail of the photo comes through); a paint of opacity 0 changes nothing,
    bit for bit."""
    rng = np.random.default_rng(8)
    image = rng.random((300, 280, 3), np.float32)  # white noise: all fine detail
    if dtype == np.uint8:
        image = np.floor(image * 255 + 0.5).astype(np.uint8)
    disp, covered, resid, _ = smooth_edit(rng, 64, 3.0)
    covered[:] = 1.0
    colour = np.float32([0.9, 0.85, 0.8])
    painted = np.zeros((64, 64, 4), np.float32)
    painted[20:44, 20:44] = [*colour, 1.0]
    win = workcrop.Window(10, 5, 0.25)
    got, _ = pasted(image, win, (disp, covered, resid, painted), engine=engine)
    inside = got[10 + 4 * 21 : 10 + 4 * 43, 5 + 4 * 21 : 5 + 4 * 43].astype(np.float32)  # 1 crop px in
    unit = 255.0 if dtype == np.uint8 else 1.0
    np.testing.assert_allclose(inside, np.broadcast_to(colour * unit, inside.shape), atol=0.51 * unit / 255)
    plain = pasted(image, win, (disp, covered, resid), engine=engine)
    zero = pasted(image, win, (disp, covered, resid, np.zeros_like(painted)), engine=engine)
    np.testing.assert_array_equal(plain[0], zero[0])
    assert (plain[0] != got).any()


def smooth_edit(rng, size, amplitude):
    """A working crop's edit: a covered disc with a soft rim, a smooth displacement of up to ``amplitude``
    crop px (large ones reach past a tile's window: the NumPy fallback), a small residual and a painted
    blob inside the disc (opacity rising to 1, a smooth colour, premultiplied)."""
    yy, xx = np.mgrid[:size, :size] - rng.uniform(0.3, 0.7, 2)[:, None, None] * size
    covered = np.clip(size * rng.uniform(0.2, 0.5) - np.hypot(yy, xx), 0, 1).astype(np.float32)
    phase = rng.uniform(0, 6, 2)
    wave = np.stack([np.sin(yy / 9 + phase[0]), np.cos(xx / 7 + phase[1])], -1)
    disp = (amplitude * wave * covered[..., None]).astype(np.float32)
    resid = (rng.normal(0, 0.03, (size, size, 3)) * covered[..., None]).astype(np.float32)
    opacity = np.clip(1.5 - np.hypot(yy + 2, xx - 1) / 4, 0, 1) * covered
    colour = 0.5 + 0.4 * np.stack([np.sin(xx / 5), np.cos(yy / 6), np.sin((xx - yy) / 7)], -1)
    painted = np.concatenate([opacity[..., None] * colour, opacity[..., None]], -1).astype(np.float32)
    return disp, covered, resid, painted


def paste_cases(side: int, reach: int) -> dict:
    """Hypothesis strategies of a photo (up to ``side`` px a side), a crop window over it (its corner from
    -150 to ``reach``, past the photo's edges included) and a smooth edit's amplitude and seed."""
    return {
        "h": st.integers(8, side),
        "w": st.integers(8, side),
        "top": st.integers(-150, reach),
        "left": st.integers(-150, reach),
        "scale": st.floats(0.12, 1.0),
        "amplitude": st.floats(0, 12),
        "seed": st.integers(0, 2**16),
    }


def pasted(photo, win, edit, *, engine: str = "tiles"):
    """(output, mask) of ``workcrop.paste_back`` of ``edit`` (displacement, coverage, residual[, paint]) on a
    copy."""
    out, mask = photo.copy(), np.zeros(photo.shape[:2], np.float32)
    workcrop.paste_back(out, mask, photo, win, *edit, engine=engine)
    return out, mask


@settings(max_examples=12, deadline=None)
@given(**paste_cases(700, 400))
@example(h=600, w=650, top=-40, left=-30, scale=0.1, amplitude=14.0, seed=1)  # windows past the edges
def test_compiled_tiles_equal_the_numpy_reference(h, w, top, left, scale, amplitude, seed):
    """``paste_tile`` (one compiled program per tile: fields upsampled, warp looked up, blended) writes what
    the NumPy reference ``_paste_numpy`` writes over the same tiles: tiles cut by the photo's edges, crop
    windows reaching past them, and warps too long for a tile's window (NumPy there) included. Not bit for
    bit: XLA fuses multiply-adds (measured up to 2.4e-4 on noise at 3000 px positions, where a float32 ulp
    of the position is 2.4e-4 px)."""
    rng = np.random.default_rng(seed)
    image = rng.random((h, w, 3), np.float32)
    edit = smooth_edit(rng, 64, amplitude)
    win = workcrop.Window(top, left, scale)
    (got, got_mask), (want, want_mask) = (pasted(image, win, edit, engine=e) for e in ("tiles", "numpy"))
    np.testing.assert_allclose(got_mask, want_mask, rtol=0, atol=2e-6)
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-4)
    assert np.abs(got - want).mean() < 2e-6
    np.testing.assert_array_equal(got[want_mask == 0], image[want_mask == 0])


@settings(max_examples=8, deadline=None)
@given(**paste_cases(600, 300))
@example(h=600, w=550, top=-40, left=-30, scale=0.1, amplitude=14.0, seed=1)  # windows past the edges
def test_a_uint8_photo_is_pasted_as_its_float_result_saved(h, w, top, left, scale, amplitude, seed):
    """A uint8 photo (``affectsynth synth``'s) comes back uint8: what rounding the float photo's result to
    bytes gives (``io.save_image``'s rounding), by each engine (OpenCV, compiled tiles, the NumPy
    reference). Float rounding may land a value on the other side of a half grey level: at most 1 level,
    at a few pixels."""
    from affectsynth.io import _to_uint8

    rng = np.random.default_rng(seed)
    photo = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    edit = smooth_edit(rng, 64, amplitude)
    edit[2][:4] += 0.5 * edit[1][:4, :, None]  # some residual values pushed past white: clipped alike
    win = workcrop.Window(top, left, scale)
    for engine in ENGINES:
        want, want_mask = pasted(photo / np.float32(255.0), win, edit, engine=engine)
        want = _to_uint8(want)
        got, mask = pasted(photo, win, edit, engine=engine)
        assert got.dtype == np.uint8
        np.testing.assert_allclose(mask, want_mask, rtol=0, atol=2e-6)
        off = np.abs(got.astype(np.int16) - want)
        assert off.max() <= 1 and (off > 0).mean() < 1e-3, (off.max(), (off > 0).sum())
        np.testing.assert_array_equal(got[want_mask == 0], photo[want_mask == 0])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_the_box_filter_on_threads_sums_what_one_thread_sums(monkeypatch, dtype):
    """``cut_window``'s box filter split into row bands on several threads (uneven bands, a window past the
    photo's edge) gives the one-thread crop bit for bit, and both are the blocks' means."""
    rng = np.random.default_rng(4)
    photo = rng.integers(0, 256, (410, 380, 3)).astype(dtype)
    win = workcrop.Window(-6, 9, 0.23)  # k = 4, 7 bands of reduced rows over 3 threads
    monkeypatch.setattr(workcrop, "BOX_BAND_SIZE", 10**9)
    one = workcrop.cut_window(photo, win, 64)
    monkeypatch.setattr(workcrop, "BOX_BAND_SIZE", 1)
    monkeypatch.setattr(workcrop, "_threads", lambda: 3)
    np.testing.assert_array_equal(workcrop.cut_window(photo, win, 64), one)
    block = photo[:40, :32].astype(np.float64).reshape(10, 4, 8, 4, 3).mean((1, 3))
    unit = 255.0 if dtype == np.uint8 else 1.0
    means = workcrop._box_mean(photo[:40, :32], 4, unit)
    np.testing.assert_allclose(means, block / unit, rtol=1e-6)


def test_a_uint8_crop_is_the_float_photo_s_crop():
    """``cut_window`` of a uint8 photo is the crop of ``photo / 255``: bit for bit at scale 1, within float
    rounding when box-filtered."""
    rng = np.random.default_rng(5)
    photo = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    as_float = photo / np.float32(255.0)
    for win in (workcrop.Window(-10, 20, 1.0), workcrop.Window(7, -3, 0.3), workcrop.Window(0, 0, 0.45)):
        got = workcrop.cut_window(photo, win, 64)
        assert got.dtype == np.float32
        want = workcrop.cut_window(as_float, win, 64)
        np.testing.assert_allclose(got, want, rtol=0, atol=0 if win.scale == 1 else 1e-6)


def test_paste_back_uses_the_compiled_tiles_and_runs_them_on_threads(monkeypatch):
    """Tiles on several threads write exactly what one thread writes; within the window, every covered tile
    is finished by the compiled program, none by the NumPy fallback."""
    rng = np.random.default_rng(3)
    image = rng.random((900, 700, 3), np.float32)
    edit = smooth_edit(rng, 64, 2.0)
    covered = edit[1]
    win = workcrop.Window(-7, 11, 0.09)
    fallback = []
    real = workcrop._paste_numpy
    monkeypatch.setattr(workcrop, "_paste_numpy", lambda *a: fallback.append(1) or real(*a))
    results = []
    for threads in (1, 3):
        monkeypatch.setattr(workcrop, "_threads", lambda n=threads: n)
        results.append(pasted(image, win, edit))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert (results[0][1] > 0).sum() > 10_000 and (results[0][0] != image).any()
    assert len(workcrop._tiles(win, covered, 900, 700)) >= 4 and not fallback


@pytest.mark.parametrize("shift, keep", [(0.25, 0.75), (0.5, 0.6)])
def test_the_warp_lookup_keeps_fine_detail_at_sub_pixel_shifts(shift, keep):
    """A sub-pixel shift is where interpolation blurs: on band-limited noise a bilinear lookup keeps 0.54
    (quarter pixel) and 0.41 (half) of the Laplacian variance; the cubic lookup must keep ``keep``,
    reproduce whole-pixel shifts exactly, and stay within the range of the four nearest pixels."""
    rng = np.random.default_rng(5)
    image = rng.random((64, 64, 3), np.float32)
    for axis in (0, 1):  # binomial blur: detail a camera could record, not pixel-level white noise
        image = 0.25 * np.roll(image, 1, axis) + 0.5 * image + 0.25 * np.roll(image, -1, axis)
    yy, xx = np.mgrid[8:56, 8:56].astype(np.float32) + 0.5
    np.testing.assert_array_equal(workcrop._sample(image, xx + 2.0, yy - 1.0), image[7:55, 10:58])
    moved = workcrop._sample(image, xx + shift, yy + shift)
    j0, j1, fx = workcrop._linear_taps(xx - 0.5 + shift, 64)
    i0, i1, fy = workcrop._linear_taps(yy - 0.5 + shift, 64)
    fx, fy = fx[..., None], fy[..., None]
    top = image[i0, j0] + fx * (image[i0, j1] - image[i0, j0])
    bilinear = top + fy * (image[i1, j0] + fx * (image[i1, j1] - image[i1, j0]) - top)

    def lap_var(a):
        g = a.mean(-1)
        return (g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]).var()

    before = lap_var(image[8:56, 8:56])
    assert lap_var(moved) >= keep * before
    assert lap_var(moved) >= 1.4 * lap_var(bilinear)
    quads = np.stack([image[i0, j0], image[i0, j1], image[i1, j0], image[i1, j1]])
    assert (moved >= quads.min(0) - 1e-6).all() and (moved <= quads.max(0) + 1e-6).all()


def test_work_size_is_validated():
    assert SynthesisOptions(work_size=256).work_size == 256
    for bad in (100, 500, 8192, 512.0, True):
        with pytest.raises(OptionsError, match="SynthesisOptions.work_size: "):
            SynthesisOptions(work_size=bad)


# ---------------------------------------------------------------------------------------- program cache


class Scale(eqx.Module):
    weight: jax.Array
    name: str = eqx.field(static=True, default="a")


def affine(x, y, m: Scale):
    return (x * m.weight + y, jnp.sum(x))


def no_tracing(*a, **k):
    raise AssertionError("traced again")


def test_a_program_is_stored_and_a_later_process_loads_it_without_tracing(program_cache, monkeypatch):
    m = Scale(jnp.float32(3.0))
    x, y = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones((2, 3), np.float32)
    first = compiled.model_program("affine", affine, (x, y), m, ("opts", 2))(x, y)
    np.testing.assert_allclose(first[0], x * 3 + 1)
    (stored,) = (program_cache / "programs").glob("affine-*.xlaexe")  # the compiled executable itself
    compiled.clear_memory()  # a new process: only the disk is left
    monkeypatch.setattr(compiled, "_build", no_tracing)
    monkeypatch.setattr(jax, "jit", no_tracing)  # not even compiled from an exported program
    again = compiled.model_program("affine", affine, (x, y), Scale(jnp.float32(2.0)), ("opts", 2))(x, y)
    np.testing.assert_allclose(again[0], x * 2 + 1)  # same signature, other values: same program
    assert list((program_cache / "programs").iterdir()) == [stored]


def test_without_executable_serialisation_the_exported_program_is_kept(program_cache, monkeypatch):
    """A backend that cannot serialise executables (or an executable whose unpacked copy fails): the
    ``jax.export`` file is stored instead and a later process compiles it, without tracing ``fn``."""
    m = Scale(jnp.float32(3.0))
    x = np.ones((2, 3), np.float32)
    with monkeypatch.context() as patch:
        patch.setattr(compiled, "_pack_executable", lambda prog, args: None)
        compiled.model_program("affine", affine, (x, x), m, None)
    assert [p.suffix for p in (program_cache / "programs").iterdir()] == [".jaxexport"]
    compiled.clear_memory()
    monkeypatch.setattr(compiled, "_build", no_tracing)
    out = compiled.model_program("affine", affine, (x, x), m, None)(x, x)
    np.testing.assert_allclose(out[0], 4.0)
    assert [p.suffix for p in (program_cache / "programs").iterdir()] == [".jaxexport"]


def test_an_executable_whose_copy_fails_to_run_is_not_stored(program_cache, monkeypatch):
    m = Scale(jnp.float32(3.0))
    x = np.ones((2, 3), np.float32)

    def broken(data, args):
        def run(*a):
            raise jax.errors.JaxRuntimeError("NOT_FOUND: Function fusion not found")

        return run

    monkeypatch.setattr(compiled, "_unpack_executable", broken)
    out = compiled.model_program("affine", affine, (x, x), m, None)(x, x)
    np.testing.assert_allclose(out[0], 4.0)  # the program compiled in this process is fine
    assert [p.suffix for p in (program_cache / "programs").iterdir()] == [".jaxexport"]


LINALG_PROGRAM = """
import json, sys
import jax
import jax.numpy as jnp
import numpy as np
from affectsynth import compiled

def solve(a, b):
    return (jnp.linalg.solve(a + 4 * jnp.eye(3), b) * jnp.pad(b, 1)[1:-1],)

a, b = np.ones((3, 3), np.float32), np.arange(3, dtype=np.float32)
if sys.argv[1:] == ["prime"]:  # the same program into JAX's persistent compilation cache
    compiled.enable_persistent_cache()
    jax.jit(solve).lower(a, b).compile()
(x,) = compiled.load_program("solve", solve, (a, b))(a, b)
files = sorted(p.suffix for p in compiled.cache_root().joinpath("programs").iterdir())
print(json.dumps({"files": files, "x": np.asarray(x).tolist()}))
"""


def test_stored_executables_run_in_fresh_processes(tmp_path):
    """Each in a new process sharing one user cache: build and store; load only (jaxlib binds its CPU
    LAPACK kernels when a linear-algebra op is first lowered, so a process that only loads must bind them,
    else it crashes); build again with the program file gone but JAX's persistent compilation cache
    holding the program (an executable JAX loads from there does not serialise whole: builds compile
    afresh)."""
    import os
    import shutil
    import subprocess
    import sys

    env = {**os.environ, "AFFECTSYNTH_CACHE": str(tmp_path), "AFFECTSYNTH_PROGRAM_CACHE": "1"}
    want = np.linalg.solve(np.ones((3, 3)) + 4 * np.eye(3), np.arange(3.0)) * np.arange(3.0)
    for step in ("build", "load", "build again"):
        if step == "build again":
            shutil.rmtree(tmp_path / "programs")
        cmd = [sys.executable, "-c", LINALG_PROGRAM, *(["prime"] if step == "build again" else [])]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert r.returncode == 0, (step, r.stderr[-2000:])
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["files"] == [".xlaexe"], step
        np.testing.assert_allclose(out["x"], want, rtol=1e-5)


def test_the_key_names_everything_the_program_depends_on(monkeypatch):
    x = np.zeros((2, 3), np.float32)
    base = compiled.program_key("p", ("opts", 1), (x,), "static")
    assert base == compiled.program_key("p", ("opts", 1), (np.ones((2, 3), np.float32),), "static")
    others = {
        compiled.program_key("q", ("opts", 1), (x,), "static"),
        compiled.program_key("p", ("opts", 2), (x,), "static"),
        compiled.program_key("p", ("opts", 1), (np.zeros((3, 3), np.float32),), "static"),
        compiled.program_key("p", ("opts", 1), (x.astype(np.int32),), "static"),
        compiled.program_key("p", ("opts", 1), (x,), "other static"),
        compiled.program_key("p", ("opts", 1), (x,), "static", compiled.QUICK_OPTIONS),
    }
    monkeypatch.setattr(compiled, "COMPILER_OPTIONS", {"xla_backend_optimization_level": 3})
    others.add(compiled.program_key("p", ("opts", 1), (x,), "static"))
    monkeypatch.undo()
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=true")
    others.add(compiled.program_key("p", ("opts", 1), (x,), "static"))
    assert base not in others and len(others) == 8


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


DAMAGE = {
    "garbage": lambda data: b"not a program" * 10,
    "truncated": lambda data: data[: len(data) // 2],
    "empty": lambda data: b"",
    "flipped": flip_last_byte,
}


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("kind", ["xlaexe", "jaxexport"])
def test_a_corrupt_program_is_rebuilt_not_fatal(program_cache, monkeypatch, damage, kind):
    m = Scale(jnp.float32(3.0))
    x = np.ones((2, 3), np.float32)
    if kind == "jaxexport":
        monkeypatch.setattr(compiled, "_pack_executable", lambda prog, args: None)
    compiled.model_program("affine", affine, (x, x), m, None)
    (path,) = (program_cache / "programs").glob(f"*.{kind}")
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    compiled.clear_memory()
    out = compiled.model_program("affine", affine, (x, x), m, None)(x, x)
    np.testing.assert_allclose(out[0], 4.0)
    read = compiled._read_executable if kind == "xlaexe" else compiled._read
    assert read(path, (x, x, m.weight)) is not None  # replaced by a good one


@pytest.mark.parametrize("kind", ["xlaexe", "jaxexport"])
def test_a_program_of_other_shapes_under_the_same_name_is_not_used(program_cache, monkeypatch, kind):
    m = Scale(jnp.float32(3.0))
    x, z = np.ones((2, 3), np.float32), np.ones((4, 3), np.float32)
    if kind == "jaxexport":
        monkeypatch.setattr(compiled, "_pack_executable", lambda prog, args: None)
    compiled.model_program("affine", affine, (x, x), m, None)
    (good,) = (program_cache / "programs").glob(f"*.{kind}")
    compiled.clear_memory()
    # a stale file where the (4, 3) program belongs, as if keys had collided
    monkeypatch.setattr(compiled, "program_path", lambda name, key, kind="jaxexport": good)
    out = compiled.model_program("affine", affine, (z, z), m, None)(z, z)
    np.testing.assert_allclose(out[0], 4.0)


def test_caching_off_writes_nothing(program_cache, monkeypatch):
    monkeypatch.setenv("AFFECTSYNTH_PROGRAM_CACHE", "0")
    x = np.ones((2, 3), np.float32)
    out = compiled.model_program("affine", affine, (x, x), Scale(jnp.float32(3.0)), None)(x, x)
    np.testing.assert_allclose(out[0], 4.0)
    assert not (program_cache / "programs").exists()


def test_the_persistent_compilation_cache_is_not_overridden(monkeypatch, tmp_path):
    monkeypatch.setenv("AFFECTSYNTH_CACHE", str(tmp_path))
    if jax.config.jax_compilation_cache_dir:  # already on in this process (another test, or the user)
        assert compiled.enable_persistent_cache() == type(tmp_path)(jax.config.jax_compilation_cache_dir)
    monkeypatch.setenv("AFFECTSYNTH_PROGRAM_CACHE", "off")
    assert compiled.enable_persistent_cache() is None


# ---------------------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def model():
    config = sgal.GalleryConfig(num_subjects=3, num_directions=12, frames_per_sequence=4)
    return dflt.build_default_model(cache=False, config=config)


def _probe(x, model):
    return (x + model.class_mean.sum() + model.components.sum(),)


def test_a_program_compiled_for_the_default_model_skeleton_serves_the_built_model(model, program_cache):
    """``default_model_skeleton`` (zeros, ready before the build) has the built default model's structure,
    shapes and static fields, so the program compiled for it while the model builds is the one the model
    finds (no second compile), and it computes with the model's own values."""
    skeleton = dflt.default_model_skeleton()
    assert float(jnp.abs(skeleton.class_mean).sum()) == 0
    x = np.ones(3, np.float32)
    compiled.model_program("probe", _probe, (x,), working.program_model(skeleton), None)(x)
    builds = []
    real_build = compiled._build
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(compiled, "_build", lambda *a: builds.append(a[2]) or real_build(*a))
        got = compiled.model_program("probe", _probe, (x,), working.program_model(model), None)(x)
    assert builds == []
    np.testing.assert_allclose(got[0], _probe(x, model)[0], rtol=1e-5)


def test_prepare_default_compiles_beside_the_first_build(model, monkeypatch, tmp_path):
    """With no default model on disk, the programs are prepared for the skeleton on another thread while
    the model builds, then looked up for the model; with the model on disk, no head start."""
    import threading

    calls = []
    monkeypatch.setattr(dflt, "default_model_skeleton", lambda: "skeleton")
    monkeypatch.setattr(pipeline, "load_model", lambda path: calls.append("build") or model)
    monkeypatch.setattr(
        working, "prepare", lambda m, *a, **k: calls.append((m, threading.current_thread().name))
    )
    absent = tmp_path / "default_model.npz"
    monkeypatch.setattr(dflt, "default_model_path", lambda: absent)
    main = threading.current_thread().name
    assert working.prepare_default() is model
    assert len(calls) == 3 and "build" in calls and ("skeleton", "affectsynth-compile-ahead") in calls
    assert calls[-1] == (model, main)  # after the head start finished
    calls.clear()
    absent.touch()
    working.prepare_default()
    assert calls == ["build", (model, main)]


def legacy(image, lm, target, model, options):
    """The whole-photo path (as before issue 16): the crop decided from the landmarks, photo in the jit."""
    crop = crop_size(lm[None], *image.shape[:2], skirt=options.skirt)
    res = synthesize_batch(image[None], lm[None], target[None], model, options=options, crop=crop)
    return np.asarray(res.images[0]), np.asarray(res.masks[0])


def test_the_working_crop_matches_the_whole_photo_path_and_compiles_once(model, program_cache, monkeypatch):
    """At the face's own scale the working crop gives the old result (up to the sharper warp lookup); a
    photo of another size (with the face at another scale) reuses the program."""
    opts = dataclasses.replace(CHEAP, work_size=256)
    image, lm = synthetic_face(model)
    target = np.float32([0.8, 0.4])
    builds = []
    real_build = compiled._build
    monkeypatch.setattr(compiled, "_build", lambda *a: builds.append(a[2]) or real_build(*a))
    res = synthesize_batch(image[None], lm[None], target[None], model, options=opts)
    assert isinstance(res.images, np.ndarray) and res.images.shape == (1, *image.shape)
    want, want_mask = legacy(image, lm, target, model, opts)
    np.testing.assert_array_equal(res.masks[0], want_mask)
    # the warp of the photo's pixels is a cubic lookup here, bilinear (blurrier) in the whole-photo
    # path: measured mean 0.27 grey levels, 99th percentile 3.9 (the bound: 2 grey levels mean)
    diff = np.abs(res.images[0] - want) * 255
    assert diff.mean() < 0.5 and np.percentile(diff, 99) < 6, (diff.mean(), np.percentile(diff, 99))
    # the crops' program, and the paste-back's tiles where there is no OpenCV to carry the edit back
    assert sorted(builds) == (["paste_tile"] if workcrop.paste_engine() == "tiles" else []) + ["synthesize"]
    first = len(builds)

    # four times larger: the face (~190 px + skirt) no longer fits 256 px and is downsampled into it
    big = np.repeat(np.repeat(image, 4, 0), 4, 1)
    big_lm = lm * np.float32([4, 4, 4])
    out = synthesize_batch(big[None], big_lm[None], target[None], model, options=opts)
    assert len(builds) == first  # the same programs
    ref, ref_mask = legacy(big, big_lm, target, model, opts)
    both = (out.masks[0] > 0.5) & (ref_mask > 0.5)
    assert both.sum() > 0.9 * (ref_mask > 0.5).sum()
    err = np.abs(out.images[0] - ref)[both]
    assert err.mean() < 2 / 255, err.mean() * 255
    edit = np.abs(ref - big)[both].mean()
    assert edit > 4 * err.mean()  # the comparison is not trivially between two unedited photos

    # a uint8 photo (the command line's): the same crops' program, the float result as saved
    from affectsynth.io import _to_uint8

    photo = _to_uint8(image)
    as_float = synthesize_batch((photo / np.float32(255))[None], lm[None], target[None], model, options=opts)
    got = synthesize_batch(photo[None], lm[None], target[None], model, options=opts)
    assert got.images.dtype == np.uint8 and builds.count("synthesize") == 1
    np.testing.assert_array_equal(got.masks, as_float.masks)
    off = np.abs(got.images[0].astype(np.int16) - _to_uint8(as_float.images[0]))
    assert off.max() <= 1 and (off > 0).mean() < 1e-3, (off.max(), (off > 0).sum())


# ---------------------------------------------------------------------------------------- London photos


def laplacian_variance(image, mask):
    g = image.mean(-1)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap[mask[1:-1, 1:-1] > 0.99].var())


def resized(image, side):
    from PIL import Image

    im = Image.fromarray(np.round(image * 255).astype(np.uint8)).resize((side, side), Image.BICUBIC)
    return np.asarray(im, np.float32) / 255


@pytest.mark.slow
@pytest.mark.shared
def test_a_london_photo_at_512_and_3000_px(london_dir):
    """512 px: within 2 grey levels (mean) of the whole-photo path. 3000 px: the same program, and the
    output keeps >= 0.9 of the input's high-frequency energy inside the face (the warp moves the photo's
    own pixels; only the smooth correction is upsampled)."""
    import affectsynth as af

    model = af.load_model()
    photo = af.load_image(london_dir / "neutral" / "001.jpg")
    target = np.float32([0.8, 0.4])
    opts = SynthesisOptions()
    small = resized(photo, 512)
    lm = af.detect_landmarks(small)
    res = synthesize_batch(small[None], lm[None], target[None], model, options=opts)
    want, _ = legacy(small, lm, target, model, opts)
    assert np.abs(res.images[0] - want).mean() * 255 < 2

    large = resized(photo, 3000)
    lm3 = af.detect_landmarks(large)
    loaded = dict(compiled._LOADED)
    out = synthesize_batch(large[None], lm3[None], target[None], model, options=opts)
    assert compiled._LOADED.keys() == loaded.keys()  # no new program for a new photo size
    inside = out.masks[0]
    assert inside.sum() > 0.05 * math.prod(inside.shape)
    ratio = laplacian_variance(out.images[0], inside) / laplacian_variance(large, inside)
    assert ratio >= 0.9, ratio
    assert np.abs(out.images[0] - large)[inside > 0.99].mean() > 1 / 255  # and it was edited

    # as ``affectsynth synth`` runs it: the photo's bytes in, bytes out, the float result as saved
    from affectsynth.io import _to_uint8

    raw = _to_uint8(large)
    got = synthesize_batch(raw[None], lm3[None], target[None], model, options=opts).images[0]
    off = np.abs(got.astype(np.int16) - _to_uint8(out.images[0]))
    assert off.max() <= 1 and (off > 0).mean() < 1e-3, (off.max(), (off > 0).sum())
    assert laplacian_variance(got / 255.0, inside) / laplacian_variance(raw / 255.0, inside) >= 0.9


# ---------------------------------------------------------------------------------------- the command


def test_the_command_line_asks_for_no_huge_pages(monkeypatch):
    """``main`` turns NumPy's huge-page advice off for its own process (a fresh process's first touch of a
    full-size array is where the kernel compacts memory) before it runs a command."""
    from numpy._core.multiarray import _get_madvise_hugepage, _set_madvise_hugepage

    from affectsynth.cli import app

    before = _get_madvise_hugepage()
    seen = []
    monkeypatch.setattr(app, "app", lambda: seen.append(_get_madvise_hugepage()))
    monkeypatch.setattr(app, "_QUICK_EXIT", [False])  # (set by an in-process ``synth``: would end pytest)
    try:
        _set_madvise_hugepage(True)
        with pytest.raises(SystemExit):
            app.main()
        assert seen == [False]
    finally:
        _set_madvise_hugepage(before)


@pytest.mark.parametrize("full_exit", ["", "1"])
def test_synth_ends_its_process_quickly_with_the_right_status_and_messages(tmp_path, full_exit):
    """``main`` skips the interpreter's teardown after ``synth`` (``AFFECTSYNTH_FULL_EXIT`` keeps it):
    the exit status and the flushed messages are the same either way."""
    import os
    import subprocess
    import sys

    from affectsynth.cli import app

    env = {**os.environ, "AFFECTSYNTH_CACHE": str(tmp_path), "AFFECTSYNTH_FULL_EXIT": full_exit}
    cmd = [sys.executable, "-m", "affectsynth.cli.app", "synth", str(tmp_path / "missing.jpg")]
    r = subprocess.run(
        [*cmd, "-v", "0.5", "-a", "0.1", "-o", str(tmp_path / "o.png")],
        env=env,
        text=True,
        capture_output=True,
    )
    assert r.returncode == 2 and r.stderr.strip().endswith("missing.jpg: no such file"), r.stderr
    assert app._exit_code(None) == 0 and app._exit_code(3) == 3 and app._exit_code("bye") == 1
