import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from affectsynth.errors import InputImageError, OutputError
from affectsynth.io import _unit_float, check_output_path, load_image, save_image


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return (rng.random((40, 56, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp", ".tif", ".bmp"])
def test_round_trip_formats(tmp_path, rgb, ext):
    p = save_image(tmp_path / f"a{ext}", rgb)
    back = load_image(p)
    assert back.shape == (40, 56, 3) and back.dtype == np.float32
    tol = 0.0 if ext in (".png", ".tif", ".bmp") else 0.25
    assert np.abs(back - rgb / 255.0).mean() <= tol + 1e-7


def test_exif_orientation_applied(tmp_path, rgb):
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    arr, info = load_image(tmp_path / "o.jpg", return_info=True)
    assert arr.shape == (56, 40, 3)
    assert any("EXIF" in c for c in info.conversions)


@pytest.mark.parametrize(
    "mode,expect",
    [
        ("L", "grayscale"),
        ("LA", "alpha"),
        ("RGBA", "alpha"),
        ("P", "palette"),
        ("I;16", "16-bit"),
        ("CMYK", "CMYK"),
    ],
)
def test_modes_converted(tmp_path, rgb, mode, expect):
    base = Image.fromarray(rgb)
    if mode == "I;16":
        a = np.asarray(base.convert("L")).astype(np.uint16) * 257
        im = Image.fromarray(a)
        ext = ".png"
    else:
        im = base.convert(mode)
        ext = ".tif" if mode == "CMYK" else ".png"
    im.save(tmp_path / f"m{ext}")
    arr, info = load_image(tmp_path / f"m{ext}", return_info=True)
    assert arr.shape == (40, 56, 3) and 0.0 <= arr.min() and arr.max() <= 1.0
    assert any(expect in c for c in info.conversions), info.conversions
    if mode == "I;16":
        assert np.allclose(arr[..., 0], np.asarray(base.convert("L")) / 255.0, atol=1e-6)


def test_missing_corrupt_and_not_image(tmp_path, rgb):
    with pytest.raises(InputImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "t.jpg").write_text("hello, I am not a picture")
    with pytest.raises(InputImageError, match="not an image"):
        load_image(tmp_path / "t.jpg")
    save_image(tmp_path / "good.jpg", rgb)
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputImageError, match="corrupt or truncated"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(InputImageError, match="folder"):
        load_image(tmp_path)


def test_huge_image_refused_from_header(tmp_path):
    Image.new("1", (10_000, 10_000)).save(tmp_path / "huge.png")
    with pytest.raises(InputImageError, match="too large: 10000x10000"):
        load_image(tmp_path / "huge.png")


def test_error_is_one_line_with_file(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(InputImageError) as e:
        load_image(tmp_path / "x.png")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "x.png") in msg


def test_save_is_atomic(tmp_path, rgb, monkeypatch):
    target = tmp_path / "out.png"
    save_image(target, rgb)
    before = target.read_bytes()

    def boom(self, fp, *a, **k):
        fp.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", boom)
    with pytest.raises(OutputError, match="write failed"):
        save_image(target, rgb * 0)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_check_output_path(tmp_path, rgb):
    src = save_image(tmp_path / "in.png", rgb)
    with pytest.raises(OutputError, match="exists"):
        check_output_path(src)
    with pytest.raises(OutputError, match="overwrite the input"):
        check_output_path(src, overwrite=True, inputs=[src])
    with pytest.raises(OutputError, match="unsupported output format"):
        check_output_path(tmp_path / "x.gifx")
    assert check_output_path(tmp_path / "new.png") == tmp_path / "new.png"


@settings(max_examples=25, deadline=None)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 9),
    channels=st.sampled_from([(), (3,)]),
    rows=st.integers(1, 50),
    seed=st.integers(0, 2**16),
)
def test_float_to_uint8_in_row_blocks_equals_the_one_pass_formula(h, w, channels, rows, seed):
    """Clip to [0, 1], scale, round half up; NaN -> 0, +-inf clipped; whatever the block size."""
    from affectsynth.io import _to_uint8

    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 0.7, (h, w, *channels))
    x.flat[rng.integers(0, x.size, 3)] = [np.nan, np.inf, -np.inf]
    want = (np.clip(np.nan_to_num(x.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(_to_uint8(x, rows=rows), want)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_unit_float_is_the_division_by_255(h, w, seed):
    """``_unit_float`` (one output array) gives exactly ``a / 255`` in float32, every uint8 value included."""
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    a.flat[:2] = (0, 255)
    out = _unit_float(a)
    assert out.dtype == np.float32 and out.shape == a.shape
    assert np.array_equal(out, a.astype(np.float32) / np.float32(255.0))
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16"])
def test_uint8_loading_is_the_float_image_rounded(tmp_path, rgb, ext, mode):
    """``dtype=np.uint8`` gives what saving the float image would write: the decoded bytes themselves for
    8-bit files (``x / 255`` rounds back to ``x``), the rounded values for 16-bit ones."""
    base = Image.fromarray(rgb)
    if mode == "I;16":
        if ext == ".jpg":
            pytest.skip("JPEG has no 16-bit mode")
        im = Image.fromarray(np.asarray(base.convert("L")).astype(np.uint16) * 257 + 100)
    else:
        im = base.convert(mode) if ext != ".jpg" or mode in ("RGB", "L") else base
    im.save(tmp_path / f"a{ext}")
    as_float = load_image(tmp_path / f"a{ext}")
    as_bytes, info = load_image(tmp_path / f"a{ext}", dtype=np.uint8, return_info=True)
    assert as_bytes.dtype == np.uint8 and as_bytes.shape == as_float.shape
    assert as_bytes.flags.writeable
    np.testing.assert_array_equal(as_bytes, (as_float * 255.0 + 0.5).astype(np.uint8))
    assert info.conversions == load_image(tmp_path / f"a{ext}", return_info=True)[1].conversions


def test_load_image_refuses_other_dtypes(tmp_path, rgb):
    save_image(tmp_path / "a.png", rgb)
    with pytest.raises(ValueError, match="float32 or uint8"):
        load_image(tmp_path / "a.png", dtype=np.float64)
