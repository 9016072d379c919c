"""The composed pipeline on a small synthetic face (no MediaPipe, no photo): transforms and every option.

The face is the FaceMesh canonical template given a smile by the model's own AU12/AU25 modes, projected to
2D landmarks (with half a pixel of noise, so the fit has a real residual as on photos) on a 160 px textured
image. The model is a small default-style model (built in a few seconds; the first target's class holds
two frames, so sampling varies). A compilation of the whole pipeline costs 5 s (alpha blend, no appearance
cues, no subdivision: ``CHEAP``) to 20 s (every cue) on an idle CPU core, so compilations are few: the
default options three times, ``CHEAP`` and a few one-field changes of it; the options' effects are also
checked on their stage alone.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affectsynth.affect import default as dflt
from affectsynth.affect import synthetic_gallery as sgal
from affectsynth.affect.grid import AffectGrid
from affectsynth.affect.model import class_index
from affectsynth.errors import OptionsError
from affectsynth.face import topology as topo
from affectsynth.face.morphable import expression_offsets
from affectsynth.pipeline import SynthesisOptions, crop_size, synthesize_batch, synthesize_item
from affectsynth.render.appearance.context import AppearanceOptions

SIZE = 160
SHIFTS = ((0.0, 0.0), (6.0, -4.0), (-5.0, 3.0))
TARGETS = np.array([[0.8, 0.4], [-0.6, 0.6], [0.2, 0.9]], np.float32)
NO_CUES = AppearanceOptions(shading=False, wrinkles=False, mouth_interior=False, eyes=False)
CHEAP = SynthesisOptions(blend="alpha", appearance=NO_CUES, subdivision=0)


@pytest.fixture(scope="module")
def model():
    config = sgal.GalleryConfig(num_subjects=3, num_directions=12, frames_per_sequence=4)
    # 144 frames: 0.2-wide classes (the default 0.1 leaves most classes with a frame or none to sample from)
    return dflt.build_default_model(cache=False, config=config, grid=AffectGrid(10, 10))


def synthetic_face(model, shift=(0.0, 0.0), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """(image f32[SIZE, SIZE, 3], landmarks f32[478, 3]): a smiling template on a textured background."""
    names = model.morphable.expression_names
    smile = np.zeros(len(names), np.float32)
    smile[names.index("AU12")], smile[names.index("AU25")] = 1.0, 0.6
    template = topo.face_topology().template
    shape = template + np.asarray(expression_offsets(model.morphable, jnp.asarray(smile)))
    s = 0.4 * SIZE / np.ptp(template[:, 0])  # face width: 40% of the image
    lm = shape * np.array([s, -s, -s]) + np.array([SIZE / 2 + shift[0], SIZE / 2 + shift[1], 0.0])
    rng = np.random.default_rng(seed)
    lm[:, :2] += rng.normal(0.0, 0.5, (topo.NUM_LANDMARKS, 2))
    y, x = np.mgrid[:SIZE, :SIZE] / SIZE
    image = np.stack([0.5 + 0.3 * x, 0.4 + 0.2 * np.sin(9 * x + 7 * y + seed), 0.3 + 0.2 * y], -1)
    image += 0.05 * rng.standard_normal((SIZE, SIZE, 3))
    for pupil in (topo.RIGHT_PUPIL, topo.LEFT_PUPIL):  # dark irises: something for the lids to cover
        r = np.hypot(x * SIZE + 0.5 - lm[pupil, 0], y * SIZE + 0.5 - lm[pupil, 1])
        image[r < 3.0] = 0.1
    return np.clip(image, 0, 1).astype(np.float32), lm.astype(np.float32)


@pytest.fixture(scope="module")
def batch(model):
    """Three faces (different positions, textures, targets) and the crop that covers all of them."""
    faces = [synthetic_face(model, shift, seed) for seed, shift in enumerate(SHIFTS)]
    images, lms = (np.stack(x) for x in zip(*faces, strict=True))
    keys = jax.random.split(jax.random.PRNGKey(1), len(images))
    return images, lms, TARGETS, keys, crop_size(lms, SIZE, SIZE)


def run(model, batch, options, **kw):
    images, lms, targets, keys, crop = batch
    return synthesize_batch(images, lms, targets, model, options=options, keys=keys, crop=crop, **kw)


@pytest.fixture(scope="module")
def cheap(model, batch):
    return run(model, batch, CHEAP)


@pytest.fixture(scope="module")
def full(model, batch):
    return run(model, batch, SynthesisOptions())


def changed_inside_only(image, out, mask, min_change=1e-3):
    """``out`` is ``image`` bit for bit outside ``mask`` and visibly different inside it."""
    outside = mask[..., None] == 0
    np.testing.assert_array_equal(np.where(outside, out, 0), np.where(outside, image, 0))
    assert np.abs(out - image).max() > min_change


# ---------------------------------------------------------------------------------------- transforms


def test_the_edit_is_inside_the_mask_and_the_fit_sees_the_smile(model, batch, full):
    images, masks = np.asarray(full.images), np.asarray(full.masks)
    for i in range(len(images)):
        changed_inside_only(batch[0][i], images[i], masks[i], min_change=0.05)
        assert 0.05 < masks[i].mean() < 0.5
    names = model.morphable.expression_names
    assert np.all(np.asarray(full.input_expression)[:, names.index("AU12")] > 0.7)
    assert np.all(np.asarray(full.fit_rms) < 0.05)


def test_vmap_matches_a_loop_over_the_items(model, batch, cheap):
    """The jitted, vmapped batch equals the per-item stage jitted alone on each item."""
    images, lms, targets, keys, crop = batch
    one = jax.jit(synthesize_item, static_argnames=("options", "crop"))
    for i in range(len(images)):
        item = one(images[i], lms[i], targets[i], keys[i], model, CHEAP, crop)
        diff = np.abs(np.asarray(cheap.images[i]) - np.asarray(item.image))
        assert diff.max() < 1e-3 and diff.mean() < 1e-6, (diff.max(), diff.mean())
        np.testing.assert_array_equal(np.asarray(cheap.masks[i]), np.asarray(item.mask))
        np.testing.assert_allclose(np.asarray(cheap.label[i]), np.asarray(item.label))
        assert int(cheap.class_id[i]) == int(item.class_id)


def test_jit_matches_eager(model, batch, cheap):
    """The per-item stage called op by op (no outer jit, no vmap) gives the batch's result."""
    images, lms, targets, keys, crop = batch
    eager = synthesize_item(images[1], lms[1], targets[1], keys[1], model, CHEAP, crop)
    assert not isinstance(eager.image, jax.core.Tracer)
    diff = np.abs(np.asarray(cheap.images[1]) - np.asarray(eager.image))
    assert diff.max() < 1e-3 and diff.mean() < 1e-6, (diff.max(), diff.mean())
    np.testing.assert_allclose(np.asarray(cheap.input_expression[1]), eager.input_expression, atol=1e-3)


def test_called_inside_a_jit_processes_the_whole_image(model, batch, cheap):
    """Traced landmarks have no values to choose a crop from: the whole image is the crop (here the same
    160 px window as the host's choice, so the results agree to float noise: the two are different
    programs, and a 1e-6 difference in the fitted landmarks moves the smile relaxation's amount by 7e-6 and
    a hard edge by 1e-4 px (2 of 230,400 values differed by 1.5e-4 when it came in); the same bounds as the
    vmap-vs-loop test above."""
    images, lms, targets, keys, crop = batch
    assert crop == (SIZE, SIZE)
    inner = jax.jit(lambda im, lm: synthesize_batch(im, lm, targets, model, options=CHEAP, keys=keys).images)
    diff = np.abs(np.asarray(inner(images, lms)) - np.asarray(cheap.images))
    assert diff.max() < 1e-3 and diff.mean() < 1e-6, (diff.max(), diff.mean())


def test_uint8_photos_give_their_float_result_as_bytes(model, batch, cheap):
    """Bytes in, bytes out on every path (here the explicit-crop program; the working-crop path is tested
    in test_latency): the photo read as x / 255, the result rounded as ``save_image`` rounds, so a uint8
    batch equals the float batch's result saved, up to a grey level where float noise lands on a tie."""
    from affectsynth.io import _to_uint8

    images, lms, targets, keys, crop = batch
    photos = _to_uint8(images)
    res = synthesize_batch(photos, lms, targets, model, options=CHEAP, keys=keys, crop=crop)
    assert res.images.dtype == np.uint8
    floats = run(model, (photos.astype(np.float32) / 255, lms, targets, keys, crop), CHEAP)
    diff = np.abs(np.asarray(res.images, np.int16) - _to_uint8(np.asarray(floats.images)).astype(np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())


def test_a_face_that_fills_the_frame_is_padded_for_the_work(model, batch, cheap):
    """A crop larger than the image runs on an edge-padded copy; the result has the image's size and keeps
    the edit of the full image away from the cut border."""
    images, lms, targets, keys, _ = batch
    lo, hi = lms[0, :, :2].min(0), lms[0, :, :2].max(0)
    (x0, y0), (x1, y1) = np.floor(lo - 6).astype(int), np.ceil(hi + 6).astype(int)
    tight = np.ascontiguousarray(images[:1, y0:y1, x0:x1])
    tight_lm = lms[:1] - np.array([x0, y0, 0], np.float32)
    crop = crop_size(tight_lm, *tight.shape[1:3])
    assert crop[0] > tight.shape[1] and crop[1] > tight.shape[2]  # the padded path runs
    out = synthesize_batch(tight, tight_lm, targets[:1], model, options=CHEAP, keys=keys[:1], crop=crop)
    assert out.images.shape == tight.shape and out.masks.shape == tight.shape[:3]
    reference = np.asarray(cheap.images[0, y0:y1, x0:x1])
    inner = (slice(12, -12), slice(12, -12))  # the border's pixels sample the edge padding instead
    np.testing.assert_allclose(np.asarray(out.images[0])[inner], reference[inner], atol=2e-3)


# ----------------------------------------------------------------------------------------- options


def test_strength_zero_returns_the_input(model, batch):
    """No deformation (and no neutralisation): bit for bit outside the mask, within 1e-5 inside, with every
    appearance cue and the Poisson blend on."""
    res = run(model, batch, SynthesisOptions(strength=0.0, neutralize=False))
    images, masks = np.asarray(res.images), np.asarray(res.masks)
    for i in range(len(images)):
        inside = masks[i] > 0
        assert inside.mean() > 0.05
        np.testing.assert_array_equal(images[i][~inside], batch[0][i][~inside])
        np.testing.assert_allclose(images[i][inside], batch[0][i][inside], atol=1e-5, rtol=0)


def most_varied(model, targets) -> int:
    """Index of the target whose class varies most: the small test gallery leaves some classes with one
    frame (nothing to sample)."""
    spread = [float(np.max(model.weight_std[class_index(model.grid, jnp.asarray(t))])) for t in targets]
    assert max(spread) > 0.01
    return int(np.argmax(spread))


def test_sampling_is_deterministic_per_key(model, batch):
    images, lms, targets, keys, crop = batch
    i = most_varied(model, targets)
    same = np.array([i, i, i])
    k = np.stack([keys[0], keys[0], keys[2]])
    opts = dataclasses.replace(CHEAP, sample=True)
    res = synthesize_batch(images[same], lms[same], targets[same], model, options=opts, keys=k, crop=crop)
    out = np.asarray(res.images)
    np.testing.assert_array_equal(out[0], out[1])  # same key, same draw
    assert np.abs(out[0] - out[2]).max() > 1e-3  # another key, another draw
    mean = synthesize_batch(images[same], lms[same], targets[same], model, options=CHEAP, keys=k, crop=crop)
    assert np.abs(out[0] - np.asarray(mean.images[0])).max() > 1e-3  # a draw, not the class mean
    again = synthesize_batch(images[same], lms[same], targets[same], model, options=opts, keys=k, crop=crop)
    np.testing.assert_array_equal(np.asarray(again.images), out)


def test_neutralize_keeps_or_removes_the_input_smile(model, batch, cheap):
    res = run(model, batch, dataclasses.replace(CHEAP, neutralize=False))
    images, out, masks = batch[0], np.asarray(res.images), np.asarray(res.masks)
    for i in range(len(images)):
        changed_inside_only(images[i], out[i], masks[i])
    # the lips: the kept smile lifts the corners, so the two results differ there by a visible amount
    assert np.abs(out - np.asarray(cheap.images)).max() > 0.05


def test_every_other_option_reaches_the_pipeline(model, batch, cheap):
    """All remaining fields changed at once (one compilation): a different face, the same background."""
    change = dict(
        neutral_tolerance=0.0,
        interpolate=False,
        strength=0.5,
        subdivision=2,
        fit_steps=5,
        skirt=0.2,
        blend="poisson",
    )
    res = run(model, batch, dataclasses.replace(CHEAP, **change))
    images, out, masks = batch[0], np.asarray(res.images), np.asarray(res.masks)
    assert np.abs(out - np.asarray(cheap.images)).max() > 0.02
    assert not np.array_equal(masks, np.asarray(cheap.masks))  # another skirt: another mask
    for i in range(len(images)):
        changed_inside_only(images[i], out[i], masks[i])


def test_deformation_options_on_their_stage(model):
    """``interpolate``, ``strength`` and ``sample`` (per key) act on the target's deformation."""
    from affectsynth.pipeline import _target_deformation

    target = jnp.asarray(TARGETS[most_varied(model, TARGETS)])  # off-centre in its class
    k0, k1 = jax.random.PRNGKey(0), jax.random.PRNGKey(1)

    def deformation(key=k0, **change):
        return np.asarray(_target_deformation(model, target, key, dataclasses.replace(CHEAP, **change)))

    mean = deformation()
    assert np.abs(mean - deformation(interpolate=False)).max() > 0.1  # off-centre: a blend of classes
    np.testing.assert_allclose(deformation(strength=0.5), 0.5 * mean, rtol=1e-6, atol=1e-6)
    assert np.all(deformation(strength=0.0) == 0)
    np.testing.assert_array_equal(deformation(k0, sample=True), deformation(k0, sample=True))
    assert np.abs(deformation(k0, sample=True) - deformation(k1, sample=True)).max() > 0.01


def test_appearance_cues_and_mouth_interior(model, batch, full):
    """appearance=None turns every cue on (``full``); the mouth interior then follows ``mouth_interior``."""
    no_mouth = run(model, batch, SynthesisOptions(mouth_interior=False))
    opening = np.asarray(full.mouth_opening)
    assert opening.max() > 0 and np.all(np.asarray(no_mouth.mouth_opening) == 0)
    i = int(np.argmax(opening))
    assert np.abs(np.asarray(full.images[i]) - np.asarray(no_mouth.images[i])).max() > 0.02
    np.testing.assert_array_equal(np.asarray(full.masks), np.asarray(no_mouth.masks))


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "bad",
    [
        {"blend": "Poisson"},
        {"blend": None},
        {"strength": 2.5},
        {"strength": -0.1},
        {"strength": float("nan")},
        {"neutral_tolerance": -0.1},
        {"neutral_tolerance": float("inf")},
        {"fit_steps": 0},
        {"fit_steps": 2.5},
        {"subdivision": -1},
        {"subdivision": 4},
        {"skirt": 0.0},
        {"mouth_interior": 1},
        {"neutralize": "yes"},
        {"appearance": "all"},
    ],
    ids=lambda bad: f"{next(iter(bad))}={next(iter(bad.values()))!r}",
)
def test_bad_options_raise_one_line(bad):
    (name,) = bad
    with pytest.raises(OptionsError, match=f"SynthesisOptions.{name}: ") as err:
        SynthesisOptions(**bad)
    assert "\n" not in str(err.value) and err.value.exit_code == 2  # the CLI's "bad input"
    assert isinstance(err.value, ValueError)


def test_good_edge_options_are_accepted():
    SynthesisOptions(strength=0, subdivision=3, fit_steps=1, neutral_tolerance=0, blend="alpha")
    SynthesisOptions(strength=np.float32(2.0), subdivision=np.int64(0), neutralize=np.bool_(True))


def test_synthesize_batch_rejects_options_of_another_type(model, batch):
    with pytest.raises(OptionsError, match="options: must be a SynthesisOptions"):
        synthesize_batch(*batch[:3], model, options={"blend": "alpha"})


def test_the_cli_reports_a_bad_option_as_bad_input(capsys, monkeypatch):
    import typer

    from affectsynth.cli.guard import guarded

    monkeypatch.delenv("AFFECTSYNTH_DEBUG", raising=False)

    @guarded
    def command():
        SynthesisOptions(blend="soft")

    with pytest.raises(typer.Exit) as err:
        command()
    assert err.value.exit_code == 2
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "SynthesisOptions.blend: must be one of 'poisson', 'alpha'" in message


def test_the_pure_core_imports_without_the_host_side_libraries():
    """face/, affect/, render/, pipeline (and the host-side working crop and program cache it uses) import
    with typer, Pillow, MediaPipe, imageio and Ray made unimportable: those belong to io.py and cli/."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('typer', 'PIL', 'mediapipe', 'imageio', 'ray'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import affectsynth, affectsynth.pipeline, affectsynth.workcrop, affectsynth.compiled\n"
        "import affectsynth.face.fit, affectsynth.affect.build, affectsynth.render.poisson\n"
        "import affectsynth.render.appearance.compose\n"
        "try:\n"
        "    import typer\n"
        "except ImportError:\n"
        "    print('ok')\n"  # and the block itself works
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
