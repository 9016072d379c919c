"""Animation output: frames to GIF bytes and MP4 files."""

import io
import os
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------- animations


def _to_uint8(frames) -> np.ndarray:
    f = np.asarray(frames)
    if f.dtype != np.uint8:
        f = (np.clip(np.nan_to_num(f.astype(np.float32)), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return f


def encode_gif(frames, fps: float = 12.0, *, loop: bool = True) -> bytes:
    """Frames (N, H, W, 3) as an animated GIF, all frames quantised to ONE shared palette.

    Pillow (imageio's GIF plugin) quantises each frame to its own palette by default, which makes colours
    shimmer from frame to frame; a palette built from all frames together avoids that.
    """
    from PIL import Image

    f = _to_uint8(frames)
    n, h, w = f.shape[:3]
    step = max(1, int(np.ceil(np.sqrt(n * h * w / 2_000_000))))  # subsample the palette source when huge
    mosaic = Image.fromarray(np.concatenate(list(f[:, ::step, ::step]), axis=0))
    palette = mosaic.quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    ims = [Image.fromarray(x).quantize(palette=palette, dither=Image.Dither.NONE) for x in f]
    buf = io.BytesIO()
    duration = int(round(1000.0 / fps))
    ims[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=ims[1:],
        duration=duration,
        loop=0 if loop else None,
        disposal=1,
    )
    return buf.getvalue()


def mp4_available() -> bool:
    """Whether MP4 can be written: needs the optional ``imageio-ffmpeg`` package (not a dependency)."""
    import importlib.util

    return importlib.util.find_spec("imageio_ffmpeg") is not None


def write_mp4(path, frames, fps: float = 12.0) -> Path:
    """Write frames as an H.264 MP4 atomically (temp file + rename) via imageio + imageio-ffmpeg.

    Only when ``mp4_available()``; frames are cropped to even sizes (yuv420p needs them).
    """
    import imageio.v2 as iio2

    p = Path(path)
    f = _to_uint8(frames)
    f = f[:, : f.shape[1] // 2 * 2, : f.shape[2] // 2 * 2]
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp.mp4")
    try:
        iio2.mimwrite(tmp, list(f), fps=fps, codec="libx264", macro_block_size=1)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p
