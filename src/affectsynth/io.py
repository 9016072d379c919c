"""Images on disk: robust loading (any common format, EXIF orientation, odd modes) and atomic saving."""

import contextlib
import dataclasses
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .errors import InputImageError, OutputError

DEFAULT_MAX_PIXELS = 40_000_000
"""Images above this many pixels are refused (a 10,000 x 10,000 photo, image bombs); override per call."""

_WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}


@dataclasses.dataclass(frozen=True)
class ImageInfo:
    """What ``load_image`` found and did, for reporting."""

    path: str
    format: str
    mode: str
    width: int
    height: int
    conversions: tuple[str, ...] = ()


def load_image(path, *, max_pixels: int = DEFAULT_MAX_PIXELS, return_info: bool = False, dtype=np.float32):
    """Read an image file as float32 RGB in [0, 1], shape (H, W, 3) (``dtype=np.uint8``: 0..255 instead,
    a quarter of the memory and no conversion; 16-bit and float images are rounded).

    EXIF orientation is applied; grayscale, grayscale+alpha, palette, CMYK, RGBA (alpha dropped: the photo's
    colour is kept, not composited) and 16-bit/float images are converted. The file is only read.

    Raises:
        InputImageError: missing, unreadable, corrupt or truncated file, not an image, or more than
            ``max_pixels`` pixels (checked from the header, before decoding).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if np.dtype(dtype) not in (np.float32, np.uint8):
        raise ValueError(f"load_image: dtype must be float32 or uint8, got {np.dtype(dtype)}")
    if not p.exists():
        raise InputImageError(p, "no such file")
    if p.is_dir():
        raise InputImageError(p, "is a folder, not an image file")
    conversions: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise InputImageError(
                        p,
                        f"image too large: {w}x{h} = {w * h / 1e6:.0f} Mpx "
                        f"(limit {max_pixels / 1e6:.0f} Mpx)",
                    )
                if w < 8 or h < 8:
                    raise InputImageError(p, f"image too small: {w}x{h}")
                fmt = im.format or "unknown"
                mode = im.mode
                im.load()
                orientation = im.getexif().get(0x0112, 1)  # EXIF Orientation tag; 1 = upright
                oriented = im
                if orientation not in (0, 1):  # (upright, ``exif_transpose`` would only copy the photo)
                    oriented = ImageOps.exif_transpose(im)
                    conversions.append("EXIF orientation applied")
                arr = _to_rgb(oriented, conversions)
    except InputImageError:
        raise
    except UnidentifiedImageError:
        raise InputImageError(p, "not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputImageError(p, "image too large (decompression bomb guard)") from None
    except PermissionError:
        raise InputImageError(p, "permission denied") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputImageError(p, f"corrupt or truncated image ({e})") from None
    if arr.dtype != np.uint8 and not np.isfinite(arr).all():
        raise InputImageError(p, "image has NaN or infinite values")
    if np.dtype(dtype) == np.uint8:
        arr = _to_uint8(arr) if arr.dtype != np.uint8 else arr
        if not arr.flags.writeable:  # a view of the decoder's bytes: the caller gets its own array
            arr = arr.copy()
    elif arr.dtype == np.uint8:
        arr = _unit_float(arr)
    if return_info:
        return arr, ImageInfo(str(p), fmt, mode, arr.shape[1], arr.shape[0], tuple(conversions))
    return arr


def _to_rgb(im, conversions: list) -> np.ndarray:
    """``im`` as RGB pixels: u8[H, W, 3] from 8-bit modes (as decoded, possibly a read-only view),
    f32[H, W, 3] in [0, 1] from 16-bit, 32-bit integer and float ones."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        conversions.append("palette -> RGB")
        mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(im, dtype=np.float32) / 65535.0
        conversions.append("16-bit grayscale -> RGB")
        return np.repeat(a[..., None], 3, axis=-1)
    if mode == "I":
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
        conversions.append("32-bit integer grayscale -> RGB")
        return np.repeat((np.clip(a, 0, top) / top).astype(np.float32)[..., None], 3, axis=-1)
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = (a - lo) / (hi - lo) if hi > 1.0 or lo < 0.0 else a
        conversions.append("float grayscale -> RGB")
        return np.repeat(np.clip(a, 0, 1)[..., None], 3, axis=-1)
    if mode in ("1", "L"):
        conversions.append("grayscale -> RGB")
        im = im.convert("RGB")
    elif mode == "LA":
        conversions.append("grayscale+alpha -> RGB (alpha dropped)")
        im = im.convert("RGB")
    elif mode in ("RGBA", "RGBa", "PA"):
        conversions.append("RGBA -> RGB (alpha dropped)")
        im = im.convert("RGB")
    elif mode != "RGB":
        conversions.append(f"{mode} -> RGB")
        im = im.convert("RGB")
    return np.asarray(im)


def _unit_float(a: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1] (``a / 255``, the same values), written into one new array: ``astype``
    then a division would fill two full-size float arrays (2 x 108 MB at 3000 px)."""
    out = np.empty(a.shape, np.float32)
    np.divide(a, np.float32(255.0), out=out, dtype=np.float32)
    return out


def check_output_path(
    path, *, overwrite: bool = False, inputs=(), suffixes: tuple[str, ...] | None = None
) -> Path:
    """Validate an output file path before any work is done: known extension, not an input, not existing.

    ``suffixes``: the extensions allowed (e.g. ``(".npz",)`` for a model file); default the image formats.
    """
    p = Path(path)
    if suffixes is not None:
        if p.suffix.lower() not in suffixes:
            raise OutputError(p, f"expected a {' or '.join(suffixes)} file name")
    elif p.suffix.lower() not in _WRITE_FORMATS:
        raise OutputError(
            p, f"unsupported output format {p.suffix!r}; use one of {', '.join(sorted(_WRITE_FORMATS))}"
        )
    for i in inputs:
        if Path(i).exists() and p.exists() and os.path.samefile(p, i):
            raise OutputError(p, "output would overwrite the input file")
    if p.exists() and not overwrite:
        raise OutputError(p, "exists; pass --overwrite to replace it")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise OutputError(p, "output folder is not writable")
    return p


def _to_uint8(image, rows: int = 256) -> np.ndarray:
    """Float [0, 1] image -> uint8 (rounded; NaN -> 0, out of range clipped), ``rows`` rows at a time: a
    12-Mpx photo needs no full-size float temporaries (five of 144 MB each, done at once)."""
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr
    out = np.empty(arr.shape, np.uint8)
    for a in range(0, max(len(arr), 1), rows):
        block = np.nan_to_num(arr[a : a + rows].astype(np.float32))
        np.clip(block, 0.0, 1.0, out=block)
        block *= 255.0
        block += 0.5
        out[a : a + rows] = block  # truncates, as astype does
    return out


def save_image(path, image, *, quality: int = 95) -> Path:
    """Write float [0, 1] (or uint8) RGB to ``path`` atomically (temp file in the same folder, then rename).

    The format follows the extension. Folders are created. Nothing is half-written on failure.
    """
    from PIL import Image

    p = Path(path)
    fmt = _WRITE_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise OutputError(p, f"unsupported output format {p.suffix!r}")
    arr = _to_uint8(image)
    kw = {"quality": quality} if fmt in ("JPEG", "WEBP") else {"compress_level": 1} if fmt == "PNG" else {}
    try:
        with atomic_open(p, "wb") as f:
            Image.fromarray(arr).save(f, format=fmt, **kw)
    except OSError as e:
        raise OutputError(p, f"write failed ({e.strerror or e})") from None
    return p


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", **kwargs):
    """Open a temp file beside ``path`` for writing; on success it is renamed onto ``path`` (atomic on one
    file system), on any error it is removed, so ``path`` is never half-written. Folders are created and
    the file gets the usual permissions (0666 minus the umask; ``mkstemp`` alone would give 0600)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write bytes atomically (temp file + rename)."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)
