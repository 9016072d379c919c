"""The command line: synth, demo, grid, animate, augment, and every bad input of issue 7.

Most checks run the real loading, detection and output handling with a cheap fake synthesis backend (no
JAX compilation); a few end-to-end tests run the real pipeline on one image size and batch size.
"""

import csv
import hashlib
import io
import os
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from affectsynth.cli import bulk as cli_batch
from affectsynth.cli.app import app
from affectsynth.cli.media import mp4_available

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(res, code, *needles):
    """Exit ``code`` with exactly one error line, no traceback, mentioning every needle."""
    assert res.exit_code == code, (res.exit_code, res.stdout, res.stderr)
    errs = [ln for ln in res.stderr.splitlines() if ln.startswith("affectsynth: error:")]
    assert len(errs) == 1 and "Traceback" not in res.stderr, res.stderr
    for n in needles:
        assert n in errs[0], errs[0]
    return errs[0]


# ------------------------------------------------------------------------------------------ fixtures


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def image_bomb(path: Path, side: int = 60_000) -> Path:
    """A few hundred bytes claiming to be a 60,000 x 60,000 PNG (3.6 Gpx once decoded)."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (side + 1) * 2)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """One folder with good photos in odd formats and every kind of bad input."""
    d = tmp_path_factory.mktemp("photos")
    face = skimage.data.astronaut()
    Image.fromarray(face).save(d / "face.png")
    Image.fromarray(face).convert("L").save(d / "gray.png")
    Image.fromarray(face).convert("RGBA").save(d / "rgba.png")
    Image.fromarray(np.asarray(Image.fromarray(face).convert("L")).astype(np.uint16) * 257).save(
        d / "deep16.png"
    )
    two = np.concatenate([face, np.asarray(Image.fromarray(face).resize((512, 512)))], axis=1)
    Image.fromarray(two).save(d / "two_faces.png")
    Image.fromarray(face).resize((40, 40)).save(d / "tiny.png")  # face far below 10 px between pupils
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(d / "noface.png")
    Image.fromarray(face).save(d / "truncated.jpg", quality=90)
    (d / "truncated.jpg").write_bytes((d / "truncated.jpg").read_bytes()[:2000])
    (d / "notimage.jpg").write_text("GIF89a? no, just text")
    image_bomb(d / "bomb.png")
    Image.new("1", (10_000, 10_000)).save(d / "huge.png")
    return d


GOOD = {"face.png", "gray.png", "rgba.png", "deep16.png", "two_faces.png"}
BAD = {"tiny.png", "noface.png", "truncated.jpg", "notimage.jpg", "bomb.png", "huge.png"}


def digest(folder: Path) -> dict:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
    }


class FakeBackend(cli_batch.Backend):
    """Real detection; fake model and synthesis (brightness follows valence); no JAX compilation."""

    def __init__(self):
        self.calls = 0

    def load_model(self, path):
        if path is not None:
            return super().load_model(path)
        return "fake-model"

    def classes(self, model, populated_only):
        ids = [11, 55, 88] if populated_only else list(range(100))
        return [(i, -0.9 + 0.2 * (i % 10), -0.9 + 0.2 * (i // 10)) for i in ids]

    def synth(self, model, options):
        def run(images, landmarks, targets, keys, crop):
            self.calls += 1
            images = images / np.float32(255) if images.dtype == np.uint8 else images  # as synth reads bytes
            out = np.clip(images * 0.8 + 0.1 + 0.1 * targets[:, 0, None, None, None], 0, 1)
            return SimpleNamespace(images=out, fit_rms=np.full(len(images), 0.02), label=np.round(targets, 1))

        return run

    def crop(self, options):
        return lambda landmarks, h, w: (h, w)

    def options(self, **kw):
        return SimpleNamespace(**kw)

    def presets(self):
        return {"happy": (0.8, 0.5), "sad": (-0.6, -0.3)}


@pytest.fixture
def fake(monkeypatch):
    backend = FakeBackend()
    monkeypatch.setattr(cli_batch, "_backend", backend)
    return backend


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.float32)


def n_frames(path) -> int:
    with Image.open(path) as im:
        return im.n_frames


def labels(out: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((out / "labels.csv").read_text())))


# ------------------------------------------------------------------------------------------- augment


def test_augment_good_and_bad_inputs(photos, tmp_path, fake):
    before = digest(photos)
    out = tmp_path / "out"
    res = run("augment", photos, out, "--batch-size", 4, "--no-progress")
    assert res.exit_code == 0, res.stderr
    assert digest(photos) == before  # inputs never touched
    rows = labels(out)
    assert {r["source"] for r in rows} == GOOD and len(rows) == 3 * len(GOOD)
    for r in rows:
        assert (out / r["output"]).is_file() and r["output"].startswith(Path(r["source"]).stem + "_c")
        assert float(r["fit_rms"]) == pytest.approx(0.02)
        with Image.open(photos / r["source"]) as src, Image.open(out / r["output"]) as dst:
            assert dst.size == src.size
    skipped = {
        r["source"]: r["reason"] for r in csv.DictReader(io.StringIO((out / "skipped.csv").read_text()))
    }
    assert set(skipped) == BAD
    assert "too large" in skipped["huge.png"] and "too large" in skipped["bomb.png"]
    assert "not an image" in skipped["notimage.jpg"] and "corrupt or truncated" in skipped["truncated.jpg"]
    assert "no face" in skipped["noface.png"]
    assert "no face" in skipped["tiny.png"] or "too small" in skipped["tiny.png"]
    err = res.stderr
    assert "grayscale -> RGB" in err and "16-bit" in err and "RGBA" in err and "2 faces found" in err
    assert "6 input(s) skipped" in res.stdout
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temp files

    # run again: without --resume it refuses before doing any work
    one_line_error(run("augment", photos, out, "--no-progress"), 2, "--resume")


def test_augment_every_input_bad_exits_2(photos, tmp_path, fake):
    d = tmp_path / "bad"
    d.mkdir()
    for name in ("noface.png", "notimage.jpg", "bomb.png"):
        (d / name).write_bytes((photos / name).read_bytes())
    one_line_error(run("augment", d, tmp_path / "out", "--no-progress"), 2, "no usable input")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(run("augment", empty, tmp_path / "out2"), 2, "no input images")
    one_line_error(run("augment", tmp_path / "missing", tmp_path / "out3"), 2, "no such folder")


def test_augment_classes_samples_and_bad_options(photos, tmp_path, fake):
    d = tmp_path / "one"
    d.mkdir()
    (d / "face.png").write_bytes((photos / "face.png").read_bytes())
    out = tmp_path / "out"
    res = run("augment", d, out, "--classes", "3,45", "--per-class", 2, "--format", "jpg")
    assert res.exit_code == 0, res.stderr
    assert "images: 100%" in res.stderr and "4/4" in res.stderr  # tqdm: count, rate, ETA on stderr
    assert sorted(r["output"] for r in labels(out)) == [
        "face_c3_0.jpg",
        "face_c3_1.jpg",
        "face_c45_0.jpg",
        "face_c45_1.jpg",
    ]
    calls = fake.calls
    res = run(
        "augment",
        d,
        out,
        "--classes",
        "3,45,46",
        "--per-class",
        2,
        "--resume",
        "--no-progress",
        "--format",
        "jpg",
    )
    assert res.exit_code == 0 and "(4 already done)" in res.stdout, res.stdout
    assert fake.calls == calls + 1 and len(labels(out)) == 6  # only class 46 was synthesised
    one_line_error(run("augment", d, tmp_path / "o1", "--classes", "999"), 2, "class 999")
    one_line_error(run("augment", d, tmp_path / "o2", "--classes", "three"), 2, "--classes")
    one_line_error(run("augment", d, tmp_path / "o3", "--format", "gif"), 2, "--format")
    one_line_error(run("augment", d, d), 2, "input folder")
    assert run("augment", d, tmp_path / "o4", "--per-class", 0).exit_code == 2  # typer range check


def test_augment_unwritable_output(photos, tmp_path, fake):
    d = tmp_path / "one"
    d.mkdir()
    (d / "face.png").write_bytes((photos / "face.png").read_bytes())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    one_line_error(run("augment", d, blocker / "out"), 2, "not writable")
    one_line_error(run("augment", d, blocker), 2, "is a file")
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        one_line_error(run("augment", d, ro), 2, "not writable")


def test_augment_input_list_cannot_escape_output(photos, tmp_path, fake):
    base = tmp_path / "base"
    base.mkdir()
    lst = tmp_path / "list.csv"
    lst.write_text(f"source\n../../{photos.name}/face.png\n{photos / 'gray.png'}\n")
    out = tmp_path / "out"
    res = run("augment", base, out, "--inputs", lst, "--classes", "3", "--no-progress")
    assert res.exit_code == 0, res.stderr
    rows = labels(out)
    assert len(rows) == 2
    for r in rows:
        p = (out / r["output"]).resolve()
        assert p.parent == out.resolve() and ".." not in r["output"] and "/" not in r["output"]
    assert {p.name for p in tmp_path.iterdir()} == {"base", "list.csv", "out"}


# --------------------------------------------------------------------------------------- grid, animate


def test_grid_with_fake_backend(photos, tmp_path, fake):
    out = tmp_path / "sheet.png"
    res = run("grid", photos / "face.png", "-o", out, "--size", 2, "--tile", 64)
    assert res.exit_code == 0, res.stderr
    with Image.open(out) as im:
        sheet = np.asarray(im)
    assert sheet.ndim == 3 and sheet.shape[1] >= 128
    one_line_error(run("grid", photos / "face.png", "-o", out, "--size", 2), 2, "exists")
    one_line_error(run("grid", photos / "face.png", "-o", tmp_path / "s.xyz"), 2, "unsupported output format")
    one_line_error(run("grid", photos / "face.png", "-o", out / "s.png"), 2, "is a file")  # parent: a file
    one_line_error(run("grid", photos / "face.png", "-o", tmp_path / "s2.png", "--size", 0), 2, "--size")
    one_line_error(
        run("grid", photos / "face.png", "-o", tmp_path / "s3.png", "--extent", "nan"), 2, "--extent"
    )


@pytest.mark.parametrize(
    "name,needle",
    [
        ("truncated.jpg", "corrupt or truncated"),
        ("notimage.jpg", "not an image"),
        ("noface.png", "no face"),
        ("bomb.png", "too large"),
        ("huge.png", "too large"),
        ("missing.png", "no such file"),
    ],
)
def test_grid_bad_inputs(photos, tmp_path, fake, name, needle):
    one_line_error(run("grid", photos / name, "-o", tmp_path / "s.png"), 2, name, needle)


def test_animate_with_fake_backend(photos, tmp_path, fake):
    out = tmp_path / "anim"
    res = run(
        "animate",
        photos / "face.png",
        "--path",
        "0,0 0.8,0.4 sad",
        "-o",
        out,
        "--frames",
        5,
        "--mp4",
        "--crop-face",
        "--batch-size",
        4,
    )
    assert res.exit_code == 0, res.stderr
    frames = sorted((out / "frames").glob("*.png"))
    assert [f.name for f in frames] == [f"face_{i:04d}.png" for i in range(5)]
    assert n_frames(out / "face.gif") == 5
    if mp4_available():
        assert (out / "face.mp4").is_file()
    else:  # imageio-ffmpeg is optional: a clear note and the GIF only
        assert "imageio-ffmpeg" in res.stderr and not (out / "face.mp4").exists()
    # brightness follows valence along the path: frame 0 (V=0) -> max V -> end (V=-0.6)
    means = [pixels(f).mean() for f in frames]
    assert means[0] < max(means) and means[-1] < means[0]
    one_line_error(
        run("animate", photos / "face.png", "--path", "0,0 0.5,0.5", "-o", out, "--frames", 5), 2, "exists"
    )


@pytest.mark.parametrize(
    "path,needle",
    [
        ("0,0 nan,0.3", "finite"),
        ("0,0 2,0", "outside"),
        ("", "empty"),
        ("0,0 grumpy", "not 'V,A'"),
        ("0,0 0.5", "not 'V,A'"),
    ],
)
def test_animate_bad_paths(photos, tmp_path, fake, path, needle):
    one_line_error(
        run("animate", photos / "face.png", "--path", path, "-o", tmp_path / "a"), 2, "--path", needle
    )


def test_animate_bad_counts(photos, tmp_path, fake):
    one_line_error(
        run("animate", photos / "face.png", "-p", "0,0 1,1", "-o", tmp_path / "a", "--frames", 1),
        2,
        "--frames",
    )
    one_line_error(
        run("animate", photos / "face.png", "-p", "0,0 1,1", "-o", tmp_path / "a", "--fps", 0), 2, "--fps"
    )


# ------------------------------------------------------------------------- synth: fast input checks


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--target", "nan,0"], "finite"),
        (["--valence", "2", "--arousal", "0"], "outside"),
        (["--valence", "0.5"], "both"),
        (["--emotion", "grumpy"], "unknown emotion"),
        (["--target", "1"], "V,A"),
        ([], "no target"),
    ],
)
def test_synth_bad_targets(photos, tmp_path, args, needle):
    one_line_error(run("synth", photos / "face.png", "-o", tmp_path / "o.png", *args), 2, needle)


@pytest.mark.parametrize(
    "name,needle",
    [
        ("truncated.jpg", "corrupt"),
        ("notimage.jpg", "not an image"),
        ("bomb.png", "too large"),
        ("noface.png", "no face"),
    ],
)
def test_synth_bad_images(photos, tmp_path, name, needle):
    one_line_error(run("synth", photos / name, "-o", tmp_path / "o.png", "-e", "happy"), 2, needle)


def test_synth_refuses_to_overwrite_input(photos, tmp_path):
    src = tmp_path / "in.png"
    src.write_bytes((photos / "face.png").read_bytes())
    one_line_error(run("synth", src, "-o", src, "-e", "happy", "--overwrite"), 2, "input")
    assert src.read_bytes() == (photos / "face.png").read_bytes()


def test_missing_and_corrupt_model_file(photos, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 definitely not a model")
    for model in (tmp_path / "nope.npz", bad):
        one_line_error(
            run("synth", photos / "face.png", "-o", tmp_path / "o.png", "-e", "happy", "-m", model), 3
        )
        one_line_error(run("augment", photos, tmp_path / "aug", "-m", model, "--no-progress"), 3)


# --------------------------------------------------------------------- end to end with the real pipeline
# One image size (512 x 512) and one batch size (4) for synth/grid/animate/augment: one compilation.


@pytest.fixture(scope="module")
def astronaut(photos):
    return photos / "face.png"


@pytest.mark.slow
def test_real_synth_several_targets(astronaut, tmp_path):
    out = tmp_path / "out"
    res = run("synth", astronaut, "-o", out, "-e", "happy", "-e", "sad", "-t", "-0.6,0.6", "-t", "0.2,-0.7")
    assert res.exit_code == 0, res.stderr
    src = pixels(astronaut)
    outs = sorted(out.glob("*.png"))
    assert len(outs) == 4
    imgs = [pixels(p) for p in outs]
    for im in imgs:
        assert im.shape == src.shape
        changed = np.abs(im - src).max(-1) > 2
        assert 0.001 < changed.mean() < 0.5  # the face changed, most of the photo did not
    assert np.abs(imgs[0] - imgs[1]).max() > 10  # different targets, different faces


@pytest.mark.slow
def test_real_grid_animate_augment(astronaut, tmp_path):
    res = run("grid", astronaut, "-o", tmp_path / "grid.png", "--size", 2, "--batch-size", 4, "--tile", 96)
    assert res.exit_code == 0, res.stderr
    assert pixels(tmp_path / "grid.png").shape[1] >= 192

    out = tmp_path / "anim"
    res = run("animate", astronaut, "-p", "0,0 0.8,0.4 -0.6,0.6", "-o", out, "--frames", 4, "--batch-size", 4)
    assert res.exit_code == 0, res.stderr
    frames = [pixels(p) for p in sorted((out / "frames").glob("*.png"))]
    assert len(frames) == 4 and n_frames(out / "face.gif") == 4
    step = [np.abs(a - b).mean() for a, b in zip(frames[:-1], frames[1:], strict=True)]
    assert max(step) < 10 * (min(step) + 0.05)  # no jump between frames

    d = tmp_path / "in"
    d.mkdir()
    (d / "face.png").write_bytes(astronaut.read_bytes())
    res = run("augment", d, tmp_path / "aug", "--classes", "3,45,77,90", "--batch-size", 4, "--no-progress")
    assert res.exit_code == 0, res.stderr
    rows = labels(tmp_path / "aug")
    assert len(rows) == 4
    for r in rows:  # the label is the class median: inside the 0.2-wide class cell of the target
        label = np.array([float(r["valence"]), float(r["arousal"])])
        target = np.array([float(r["target_valence"]), float(r["target_arousal"])])
        assert np.abs(label - target).max() <= 0.1 + 1e-3, r
        assert 0 <= float(r["fit_rms"]) < 0.2


@pytest.mark.slow
def test_real_demo(tmp_path):
    res = run("demo", "-o", tmp_path)
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "contact_sheet.png").is_file() and len(list(tmp_path.glob("astronaut_*.png"))) >= 5
    one_line_error(run("demo", "-o", tmp_path), 2, "exists")
