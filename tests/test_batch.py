"""Bulk-job logic (cli/inputs, augment, targets, media) and V-A paths, with a fake synthesis and detector."""

import csv
import hashlib
import io
import re
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from affectsynth.affect.paths import catmull_rom, grid_targets, parse_path, resample_path, resample_path_jit
from affectsynth.cli import augment as B
from affectsynth.cli import inputs as BI
from affectsynth.cli import media as BM
from affectsynth.cli import targets as BT
from affectsynth.errors import FaceDetectionError, OutputError, TargetError

# ------------------------------------------------------------------------------------------------ paths


def test_parse_path_numbers_and_presets():
    w = parse_path("0,0  0.8,0.4;-0.6,0.6 happy", {"happy": (0.81, 0.51)})
    np.testing.assert_allclose(w, [[0, 0], [0.8, 0.4], [-0.6, 0.6], [0.81, 0.51]], atol=1e-7)
    assert w.dtype == np.float32


@pytest.mark.parametrize(
    "text,match",
    [
        ("", "empty"),
        ("0,0 nan,0.2", "finite"),
        ("0,0 1.5,0", "outside"),
        ("0,0,0", "not 'V,A'"),
        ("0,x", "numbers"),
        ("0,0 inf,0", "finite"),
        ("grumpy", "not 'V,A'"),
    ],
)
def test_parse_path_rejects(text, match):
    with pytest.raises(TargetError, match=match):
        parse_path(text, {"happy": (0.8, 0.5)})


def _catmull_rom_reference(p, t):
    """Hermite form with tangents (P_{i+1} - P_{i-1}) / 2 and reflected phantom end points."""
    p = np.asarray(p, np.float64)
    ext = np.concatenate([2 * p[:1] - p[1:2], p, 2 * p[-1:] - p[-2:-1]])
    out = []
    for tt in t:
        i = min(int(np.floor(tt)), len(p) - 2)
        u = tt - i
        p1, p2 = ext[i + 1], ext[i + 2]
        m1, m2 = (ext[i + 2] - ext[i]) / 2, (ext[i + 3] - ext[i + 1]) / 2
        h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2
        out.append(h00 * p1 + h10 * m1 + h01 * p2 + h11 * m2)
    return np.array(out)


def test_catmull_rom_matches_hermite_reference_and_interpolates():
    rng = np.random.default_rng(0)
    p = rng.uniform(-0.9, 0.9, (5, 2)).astype(np.float32)
    t = np.linspace(0, 4, 37).astype(np.float32)
    cr = jax.jit(catmull_rom)
    np.testing.assert_allclose(np.asarray(cr(p, t)), _catmull_rom_reference(p, t), atol=2e-6)
    np.testing.assert_allclose(np.asarray(cr(p, np.arange(5.0, dtype=np.float32))), p, atol=1e-6)


def test_resample_straight_line_is_evenly_spaced():
    w = np.array([[-0.5, 0.0], [0.0, 0.25], [0.5, 0.5]], np.float32)  # collinear: spline = the line
    r = np.asarray(resample_path_jit(w, 11, ease=False))
    np.testing.assert_allclose(r, np.linspace(w[0], w[-1], 11), atol=2e-3)
    r_lin = np.asarray(resample_path_jit(w, 11, smooth=False, ease=False))
    np.testing.assert_allclose(r_lin, np.linspace(w[0], w[-1], 11), atol=1e-5)


def test_resample_endpoints_range_smoothness_and_jit():
    w = parse_path("0,0 0.8,0.4 -0.6,0.6 1,1 -1,1")
    r = np.asarray(resample_path_jit(w, 48))
    np.testing.assert_allclose(r[0], w[0], atol=1e-6)
    np.testing.assert_allclose(r[-1], w[-1], atol=1e-6)
    assert np.all(np.abs(r) <= 1.0) and np.isfinite(r).all()
    step = np.linalg.norm(np.diff(r, axis=0), axis=1)
    # no jumps: no step is much longer than the average; eased ends start and stop slowly
    assert step.max() < 2.5 * step.mean()
    assert step[0] < 0.3 * step.mean() and step[-1] < 0.3 * step.mean()
    eager = np.asarray(resample_path(w[:3], 5, density=4))
    np.testing.assert_allclose(np.asarray(resample_path_jit(w[:3], 5, density=4)), eager, atol=1e-6)


def test_smooth_path_has_no_corners():
    """Second differences (frame-to-frame change of velocity) stay small on a spline, not on a polyline."""
    w = parse_path("-0.8,0 0,0.6 0.8,0")

    def worst(smooth):
        r = np.asarray(resample_path_jit(w, 48, smooth=smooth))
        step = np.linalg.norm(np.diff(r, axis=0), axis=1).mean()
        return np.linalg.norm(np.diff(r, 2, axis=0), axis=1).max() / step

    assert worst(True) < 0.5 < 0.8 < worst(False)


def test_resample_degenerate_paths_are_finite():
    one = np.asarray(resample_path(np.array([[0.3, -0.2]], np.float32), 5))
    np.testing.assert_allclose(one, np.tile([0.3, -0.2], (5, 1)), atol=1e-7)
    same = np.asarray(resample_path_jit(np.array([[0.3, 0.3], [0.3, 0.3], [0.3, 0.3]], np.float32), 4))
    np.testing.assert_allclose(same, np.full((4, 2), 0.3), atol=1e-6)
    grad = jax.jit(jax.grad(lambda p: resample_path(p, 4, density=8).sum()))
    g = grad(np.array([[0.3, 0.3], [0.3, 0.3]], np.float32))
    assert np.isfinite(np.asarray(g)).all()


def test_grid_targets_layout():
    g = grid_targets(3, 0.8)
    assert g.shape == (9, 2)
    np.testing.assert_allclose(g[:3, 0], [-0.8, 0, 0.8], atol=1e-7)  # valence grows along a row
    np.testing.assert_allclose(g[::3, 1], [0.8, 0, -0.8], atol=1e-7)  # arousal falls down the rows
    np.testing.assert_allclose(grid_targets(1), [[0, 0]])
    with pytest.raises(TargetError):
        grid_targets(0)
    with pytest.raises(TargetError):
        grid_targets(3, float("nan"))


# -------------------------------------------------------------------------------------- path safety

CRAFTED = [
    "../../etc/passwd",
    "/etc/shadow.jpg",
    "..",
    ".hidden.png",
    "a/b/../c.jpg",
    "ünï cødé?.png",
    "x" * 300 + ".jpg",
    "con:*|<>.png",
    "./././x.png",
    "-rf.png",
]


@pytest.mark.parametrize("src", CRAFTED)
def test_safe_stem_and_output_stay_inside(tmp_path, src):
    stem = BI.safe_stem(src)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem), stem
    assert ".." not in stem and "/" not in stem and len(stem) <= BI.MAX_STEM
    p = BI.safe_output_path(tmp_path, BI.output_name(stem, 42, 3))
    assert BI.inside(tmp_path, p) and p.parent == tmp_path


@pytest.mark.parametrize("name", ["../x.png", "/tmp/x.png", "a/b.png", "..", "", "."])
def test_safe_output_path_rejects(tmp_path, name):
    with pytest.raises(OutputError):
        BI.safe_output_path(tmp_path, name)


def test_assign_stems_unique():
    stems = BI.assign_stems(["a/x.jpg", "a__x.png", "A__X.jpg", "b.jpg"])
    assert len({s.lower() for s in stems.values()}) == 4
    assert stems["b.jpg"] == "b"


# -------------------------------------------------------------------------------------------- bucketing


def test_pad_image_edge_replicates():
    rng = np.random.default_rng(1)
    img = rng.random((100, 130, 3)).astype(np.float32)
    p = BI.pad_image(img)
    assert p.shape == (128, 256, 3) and BI.padded_shape(100, 130) == (128, 256)
    np.testing.assert_array_equal(p[:100, :130], img)
    np.testing.assert_array_equal(p[100:, :130], np.broadcast_to(img[-1:], (28, 130, 3)))
    np.testing.assert_array_equal(p[:100, 130:], np.broadcast_to(img[:, -1:], (100, 126, 3)))
    assert BI.pad_image(p) is p


def test_plan_batches_fixed_sizes_every_item_once():
    shapes = {i: [(128, 128), (256, 128), (128, 128)][i % 3] for i in range(11)}
    batches = BI.plan_batches(list(range(11)), shapes.__getitem__, batch_size=3)
    assert {(b.shape, len(b.items)) for b in batches} == {((128, 128), 3), ((256, 128), 3)}
    real = [it for b in batches for it in b.items[: b.valid]]
    assert sorted(real) == list(range(11))
    for b in batches:
        assert all(shapes[it] == b.shape for it in b.items)
        assert all(it == b.items[b.valid - 1] for it in b.items[b.valid :])
    capped = BI.plan_batches(
        list(range(5)), lambda i: (1024, 1024), batch_size=8, max_batch_pixels=2 * 1024 * 1024
    )
    assert all(len(b.items) == 2 for b in capped) and sum(b.valid for b in capped) == 5


# ------------------------------------------------------------------------------------ fake pipeline


class FakeSynth:
    """Brightness follows the target's valence; the sampled key leaves a visible mark (pixel [0, 0])."""

    def __init__(self, fail_on_call=None):
        self.calls, self.fail_on_call, self.shapes = 0, fail_on_call, []

    def __call__(self, images, landmarks, targets, keys, crop):
        self.calls += 1
        self.shapes.append((images.shape, crop))
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise KeyboardInterrupt
        images = images / np.float32(255) if images.dtype == np.uint8 else images  # bytes read as synth does
        out = np.clip(images * 0.5 + 0.25 + 0.2 * targets[:, 0, None, None, None], 0, 1)
        out[:, 0, 0, :] = (keys[:, :1] % 251) / 255.0
        return SimpleNamespace(images=out, fit_rms=np.full(len(images), 0.02), label=np.round(targets, 1))


def fake_detect(image, source):
    if "noface" in str(source):
        raise FaceDetectionError(source, "no face found")
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    return np.concatenate([rng.uniform(0.2, 0.8, (478, 2)) * [w, h], np.zeros((478, 1))], 1).astype(
        np.float32
    )


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(2)
    d = tmp_path / "in"
    _write(d / "a.png", (rng.random((100, 120, 3)) * 255).astype(np.uint8))
    _write(d / "b.jpg", (rng.random((130, 90, 3)) * 255).astype(np.uint8))
    _write(d / "c.png", (rng.random((110, 100, 3)) * 255).astype(np.uint8))
    _write(d / "corrupt.jpg", (rng.random((90, 90, 3)) * 255).astype(np.uint8))
    (d / "corrupt.jpg").write_bytes((d / "corrupt.jpg").read_bytes()[:300])  # truncated
    (d / "notes.png").write_text("not an image")
    _write(d / "noface.png", np.zeros((64, 64, 3), np.uint8))
    return d


CLASSES = [(12, -0.7, -0.5), (55, 0.1, 0.1), (88, 0.7, 0.7)]


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _rows(out):
    return list(csv.DictReader(io.StringIO((out / "labels.csv").read_text())))


def test_run_augment_outputs_labels_skips_and_bounded_compiles(photos, tmp_path):
    before = _digest(photos)
    out = tmp_path / "out"
    synth = FakeSynth()
    crops = []
    rep = B.run_augment(
        BI.scan_inputs(photos),
        out,
        CLASSES,
        synth=synth,
        detect=fake_detect,
        input_dir=photos,
        batch_size=4,
        crop=lambda lm, h, w: crops.append((lm.shape, h, w)) or (64, 64),
    )
    assert _digest(photos) == before  # inputs never touched
    assert rep.written == 9 and rep.prepared == 3 and rep.bad_inputs == 3
    # padded shapes: a -> 128x128, b -> 256x128, c -> 128x128: two shapes, one batch size each
    assert rep.compiled_shapes == {((128, 128), 4), ((256, 128), 4)}
    assert {s[0] for s in synth.shapes} == {(4, 128, 128, 3), (4, 256, 128, 3)}
    assert all(c == (64, 64) for _, c in synth.shapes) and len(crops) == 2
    rows = _rows(out)
    assert len(rows) == 9 and len({(r["source"], r["class_id"], r["sample"]) for r in rows}) == 9
    for r in rows:
        img = np.asarray(Image.open(out / r["output"]), np.float32) / 255
        src = np.asarray(Image.open(photos / r["source"]).convert("RGB"), np.float32) / 255
        assert img.shape == src.shape  # cropped back
        v = float(r["target_valence"])
        want = np.clip(src * 0.5 + 0.25 + 0.2 * v, 0, 1)
        assert np.abs(img[1:, 1:] - want[1:, 1:]).max() <= 1 / 255 + 1e-6
        assert float(r["valence"]) == pytest.approx(round(v, 1))
        assert r["output"] == f"{Path(r['source']).stem}_c{r['class_id']}_0.png"
    skipped = {
        r["source"]: r["reason"] for r in csv.DictReader(io.StringIO((out / "skipped.csv").read_text()))
    }
    assert set(skipped) == {"corrupt.jpg", "notes.png", "noface.png"}
    assert "corrupt" in skipped["corrupt.jpg"] and "not an image" in skipped["notes.png"]
    assert "no face" in skipped["noface.png"]


def test_augment_resume_after_interrupt_no_duplicates(photos, tmp_path):
    out = tmp_path / "out"
    srcs = BI.scan_inputs(photos)
    kw = dict(detect=fake_detect, input_dir=photos, batch_size=2, per_class=2)
    with pytest.raises(KeyboardInterrupt):
        B.run_augment(srcs, out, CLASSES, synth=FakeSynth(fail_on_call=3), **kw)
    first = _rows(out)
    assert len(first) == 4  # two batches of 2 finished before the interrupt
    with pytest.raises(OutputError, match="--resume"):
        B.run_augment(srcs, out, CLASSES, synth=FakeSynth(), **kw)
    synth = FakeSynth()
    rep = B.run_augment(srcs, out, CLASSES, synth=synth, resume=True, **kw)
    assert rep.already_done == 4 and rep.written == 14
    rows = _rows(out)
    assert len(rows) == 18 and len({(r["source"], r["class_id"], r["sample"]) for r in rows}) == 18
    assert rows[:4] == first
    rep2 = B.run_augment(srcs, out, CLASSES, synth=(s := FakeSynth()), resume=True, **kw)
    assert rep2.written == 0 and s.calls == 0 and len(_rows(out)) == 18


def test_resume_repairs_torn_and_hostile_rows(photos, tmp_path):
    out = tmp_path / "out"
    srcs = BI.scan_inputs(photos)
    kw = dict(detect=fake_detect, input_dir=photos, batch_size=8)
    B.run_augment(srcs, out, CLASSES[:1], synth=FakeSynth(), **kw)
    (tmp_path / "evil.png").write_bytes(b"x")
    text = (out / "labels.csv").read_text()
    lines = text.splitlines(keepends=True)
    hostile = "c.png,../evil.png,55,0,0.1,0.1,0.02,0.1,0.1\n"
    (out / "labels.csv").write_text("".join(lines[:3]) + hostile + lines[3][:10])  # + torn row
    rows, dropped = B.read_manifest(out)
    assert dropped == 2 and len(rows) == 2 and all(".." not in r["output"] for r in rows)
    assert (out / "labels.csv").read_text() == "".join(lines[:3])
    rep = B.run_augment(srcs, out, CLASSES[:2], synth=FakeSynth(), resume=True, **kw)
    assert rep.already_done == 2 and rep.written == 4
    assert len(_rows(out)) == 6


def test_sampling_keys_do_not_depend_on_batching(photos, tmp_path):
    srcs = BI.scan_inputs(photos)
    a, b = tmp_path / "a", tmp_path / "b"
    for d, bs in ((a, 1), (b, 4)):
        B.run_augment(
            srcs,
            d,
            CLASSES,
            synth=FakeSynth(),
            detect=fake_detect,
            input_dir=photos,
            batch_size=bs,
            per_class=2,
        )
    imgs = sorted(p.name for p in a.glob("*.png"))
    assert len(imgs) == 18 and imgs == sorted(p.name for p in b.glob("*.png"))
    for n in imgs:
        assert (a / n).read_bytes() == (b / n).read_bytes()
    k = {tuple(B.item_key("a.png", 3, i)) for i in range(5)} | {tuple(B.item_key("b.png", 3, 0))}
    assert len(k) == 6


def test_output_folder_cannot_be_input_folder(photos):
    with pytest.raises(OutputError, match="separate folder"):
        B.run_augment(BI.scan_inputs(photos), photos, CLASSES, synth=FakeSynth(), detect=fake_detect)


def test_input_list_with_escaping_names(tmp_path, photos):
    # entries that climb out and absolute paths are READ, but outputs stay inside out/
    lst = tmp_path / "list.csv"
    (tmp_path / "sub").mkdir()
    lst.write_text(f"source\n../in/a.png\n{(photos / 'b.jpg').resolve()}\nin/../in/c.png\n")
    srcs = BI.read_input_list(lst, base=tmp_path / "sub")
    assert [s.name for s in srcs] == ["a.png", "b.jpg", "c.png"]
    out = tmp_path / "out"
    rep = B.run_augment(
        srcs, out, CLASSES[:1], synth=FakeSynth(), detect=fake_detect, input_dir=tmp_path / "sub"
    )
    assert rep.written == 2  # 'in/../in/c.png' relative to sub/ does not exist -> skipped
    assert all(p.parent == out for p in out.iterdir())
    for r in _rows(out):
        assert BI.inside(out, out / r["output"])


def test_scan_inputs_recursive_excludes_output_and_hidden(tmp_path):
    d = tmp_path / "in"
    img = np.zeros((8, 8, 3), np.uint8)
    for rel in ("x.png", "sub/y.jpg", ".cache/z.png", "out/old.png", "readme.txt"):
        _write(d / rel, img) if rel.endswith((".png", ".jpg")) else (d / rel).write_text("hi")
    assert [p.name for p in BI.scan_inputs(d)] == ["x.png"]
    assert [p.relative_to(d).as_posix() for p in BI.scan_inputs(d, recursive=True, exclude=[d / "out"])] == [
        "sub/y.jpg",
        "x.png",
    ]


def test_unwritable_output_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        BI.ensure_output_dir(f)
    with pytest.raises(OutputError, match="not writable"):
        BI.ensure_output_dir(f / "sub")


# -------------------------------------------------------------------------- one photo, many targets


def test_synthesize_targets_chunks_and_crops_back():
    rng = np.random.default_rng(3)
    img = rng.random((70, 90, 3)).astype(np.float32)
    lm = fake_detect(img, "x")
    targets = grid_targets(3)
    synth = FakeSynth()
    seen = []
    out, rms = BT.synthesize_targets(img, lm, targets, synth, chunk=4, on_chunk=seen.append)
    assert out.shape == (9, 70, 90, 3) and rms.shape == (9,) and seen == [4, 4, 1]
    assert {s[0] for s in synth.shapes} == {(4, 128, 128, 3)}  # one shape: one compilation
    for i, (v, _) in enumerate(targets):
        np.testing.assert_allclose(
            out[i, 1:, 1:], np.clip(img * 0.5 + 0.25 + 0.2 * v, 0, 1)[1:, 1:], atol=1e-6
        )


def _shimmer_frames():
    """A static many-coloured background (quantisation must approximate it) and a patch that changes."""
    yy, xx = np.mgrid[0:48, 0:64] / np.array([47.0, 63.0])[:, None, None]
    bg = np.stack([xx, yy, 0.5 * (xx + yy)], -1).astype(np.float32)
    frames = np.repeat(bg[None], 6, 0)
    for i in range(6):
        frames[i, 8:40, 40:60] = [1.0 - 0.15 * i, 0.1 * i, 0.3 + 0.1 * i]
    return frames


def _decode(data):
    im = Image.open(io.BytesIO(data))
    out = []
    for i in range(im.n_frames):
        im.seek(i)
        out.append(np.asarray(im.convert("RGB"), np.float32) / 255)
    return im, np.stack(out)


def test_gif_static_pixels_do_not_shimmer():
    frames = _shimmer_frames()
    im, back = _decode(BM.encode_gif(frames, fps=10))
    assert len(back) == 6 and im.info["duration"] == 100
    # the static background decodes to exactly the same colours in every frame (one shared palette)
    np.testing.assert_array_equal(back[:, :, :36], np.broadcast_to(back[:1, :, :36], back[:, :, :36].shape))
    assert np.abs(back - frames).max() < 0.1


def test_per_frame_palettes_would_shimmer():
    """Guards the test above: Pillow's default per-frame quantisation fails it on the same frames."""
    frames = (_shimmer_frames() * 255 + 0.5).astype(np.uint8)
    ims = [Image.fromarray(f).quantize(colors=64 + 16 * i) for i, f in enumerate(frames)]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=100)
    _, back = _decode(buf.getvalue())
    assert not np.array_equal(back[:, :, :36], np.broadcast_to(back[:1, :, :36], back[:, :, :36].shape))


def test_grid_sheet_is_labelled_image():
    tiles = [np.full((30, 30, 3), v, np.float32) for v in np.linspace(0, 1, 4)]
    sheet = BT.grid_sheet(tiles, grid_targets(2), 2, tile=40, title="t")
    assert sheet.dtype == np.uint8 and sheet.ndim == 3 and sheet.shape[1] >= 80 and sheet.shape[0] >= 80


def paint_target(images, landmarks, targets, keys, crop):
    """A fake synthesis that paints each image one colour: red = valence, green = arousal, blue = 0.25."""
    v, a = (targets[:, k, None, None] for k in (0, 1))
    out = np.stack([(v + 1) / 2, (a + 1) / 2, np.full_like(v, 0.25)], -1)
    return SimpleNamespace(images=np.broadcast_to(out, images.shape).copy(), fit_rms=np.zeros(len(images)))


def test_grid_sheet_puts_valence_along_x_and_arousal_up_y():
    """As the ``grid`` command builds it: tiles found by their painted colour, decoded back to (V, A)."""
    from affectsynth.cli.sheets import face_box

    img = np.random.default_rng(0).random((90, 110, 3)).astype(np.float32)
    lm = fake_detect(img, "x")
    targets = grid_targets(3, 0.8)
    imgs, _ = BT.synthesize_targets(img, lm, targets, paint_target, chunk=4)
    t, left, b, r = face_box(lm, *img.shape[:2])
    sheet = BT.grid_sheet([im[t:b, left:r] for im in imgs], targets, 3, tile=48, title="t").astype(int)
    tile_px = (sheet[..., 2] == 64) & (sheet[..., 0] != 64)  # blue 0.25; text and background are grey
    ys, xs = np.nonzero(tile_px)
    tiles = {}
    for colour in {tuple(c) for c in sheet[ys, xs, :2]}:
        at = np.all(sheet[ys, xs, :2] == colour, axis=1)
        va = tuple(int(x) for x in np.round((np.array(colour) / 255 * 2 - 1) * 10))  # tenths
        assert va not in tiles, "two colours decode to one target"
        tiles[va] = (xs[at].mean(), ys[at].mean(), at.sum())
    assert sorted(tiles) == sorted(tuple(x) for x in np.round(targets * 10).astype(int).tolist())
    assert min(n for _, _, n in tiles.values()) > 0.9 * 48 * 48  # whole tiles, not stray pixels
    axis = sorted({v for v, _ in tiles})
    for k in axis:  # fixed arousal: x grows with valence, y stays; fixed valence: y falls as arousal grows
        row = [tiles[(v, k)] for v in axis]
        col = [tiles[(k, a)] for a in axis]
        assert np.all(np.diff([x for x, _, _ in row]) > 40) and np.ptp([y for _, y, _ in row]) < 1
        assert np.all(np.diff([y for _, y, _ in col]) < -40) and np.ptp([x for x, _, _ in col]) < 1


def test_input_vanishing_mid_job_is_skipped_not_fatal(photos, tmp_path):
    seen = set()

    def flaky_load(path):
        if Path(path).name == "b.jpg" and "b.jpg" in seen:
            raise OutputError(path, "no such file")  # any AffectsynthError: removed after detection
        seen.add(Path(path).name)
        return B.default_loader(path)

    out = tmp_path / "out"
    rep = B.run_augment(
        BI.scan_inputs(photos),
        out,
        CLASSES,
        synth=FakeSynth(),
        detect=fake_detect,
        load=flaky_load,
        input_dir=photos,
        batch_size=2,
    )
    assert rep.written == 6 and {r["source"] for r in _rows(out)} == {"a.png", "c.png"}
    assert ("b.jpg", "no such file") in rep.skipped


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=120))
def test_any_source_name_stays_inside(tmp_path_factory, text):
    out = tmp_path_factory.getbasetemp() / "prop"
    stem = BI.safe_stem(text)
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem) and ".." not in stem
    assert BI.inside(out, BI.safe_output_path(out, BI.output_name(stem, 7, 0)))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.sampled_from([(128, 128), (256, 128), (128, 384)]), min_size=1, max_size=30),
    st.integers(1, 9),
)
def test_plan_batches_property(shapes, bs):
    batches = BI.plan_batches(list(range(len(shapes))), shapes.__getitem__, batch_size=bs)
    assert sorted(i for b in batches for i in b.items[: b.valid]) == list(range(len(shapes)))
    assert len({(b.shape, len(b.items)) for b in batches}) == len(set(shapes))  # one compile per shape
    assert all(len(b.items) == bs and 1 <= b.valid <= bs for b in batches)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.sampled_from([12, 55, 88, 99]), st.integers(0, 2), st.booleans()),
        max_size=40,
    ),
    st.booleans(),
    st.integers(1, 2),
)
def test_resume_state_matches_the_rows_it_keeps(tmp_path_factory, rows, torn, per_class):
    """The compact resume state (streamed, one byte per item) marks exactly the (input, class, sample)
    keys of the rows a full read keeps: image present, first of its key; the rest are dropped and the
    file rewritten with the kept rows only. Input 4, class 99 and samples >= per_class are not in the job."""
    out = tmp_path_factory.mktemp("resume_prop")
    (out / "x.png").write_bytes(b"x")
    lines = [",".join(B.LABEL_FIELDS) + "\n"]
    for i, c, k, present in rows:
        lines.append(f"s{i}.png,{'x' if present else 'gone'}.png,{c},{k},0.1,0.2,0.01,0.1,0.2\n")
    (out / "labels.csv").write_text("".join(lines) + ("s0.png,x.png,12" if torn else ""))
    kept, seen = [], set()
    for line, (i, c, k, present) in zip(lines[1:], rows, strict=True):
        if present and (i, c, k) not in seen:
            kept.append(line)
            seen.add((i, c, k))
    keys_of = {f"s{i}.png": out / f"s{i}.png" for i in range(4)}
    classes = CLASSES
    report = B.AugmentReport(labels_path=out / "labels.csv")
    done = B._resume_state(report, True, lambda m: None, keys_of, classes, per_class)
    want = np.zeros((4, 3, per_class), bool)
    for i, c, k in seen:
        if i < 4 and c != 99 and k < per_class:
            want[i, [cc for cc, _, _ in classes].index(c), k] = True
    assert np.array_equal(done, want)
    assert report.dropped_rows == len(rows) - len(kept) + torn
    if report.dropped_rows:
        assert (out / "labels.csv").read_text() == lines[0] + "".join(kept)
    rep = B.AugmentReport()
    pending = B._pending_items(keys_of, classes, per_class, done, rep)
    assert rep.already_done == int(want.sum()) and rep.pending == want.size - want.sum()
    left = {(int(s[1]), it.class_id, it.k) for s in pending for it in pending[s]}
    every = {(i, c, k) for i in range(4) for c, _, _ in classes for k in range(per_class)}
    assert left == every - seen
