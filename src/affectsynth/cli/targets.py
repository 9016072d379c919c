"""One photo under many targets in fixed-size chunks, and the V-A grid sheet built from it."""

from collections.abc import Callable, Sequence

import numpy as np

from .augment import item_key
from .inputs import fill_batch, pad_image

# ------------------------------------------------------------------------- one photo, many targets


def synthesize_targets(
    image: np.ndarray,
    landmarks: np.ndarray,
    targets: np.ndarray,
    synth: Callable,
    *,
    chunk: int = 8,
    keys: np.ndarray | None = None,
    crop: tuple[int, int] | None = None,
    on_chunk: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One photo (landmarks detected once) under many targets, in fixed-size chunks (one compilation).

    The photo is padded to ``PAD_MULTIPLE``, the last chunk is filled by repeating its last target, results
    are cropped back. Returns (images [N, H, W, 3], fit_rms f32[N]): bytes for a uint8 photo (as
    ``augment.default_loader`` reads it), else float32. ``synth`` as in ``run_augment``.
    """
    targets = np.asarray(targets, np.float32).reshape(-1, 2)
    n = len(targets)
    h, w = image.shape[:2]
    chunk = max(1, min(int(chunk), n))
    image = np.asarray(image)
    padded = pad_image(image if image.dtype == np.uint8 else image.astype(np.float32, copy=False))
    if keys is None:
        keys = np.stack([item_key("targets", 0, i) for i in range(n)])
    imgs = np.repeat(padded[None], chunk, 0)
    lms = np.repeat(np.asarray(landmarks, np.float32)[None], chunk, 0)
    out_imgs, out_rms = [], []
    for i in range(0, n, chunk):
        idx, valid = fill_batch(list(range(i, min(i + chunk, n))), chunk)
        res = synth(imgs, lms, targets[idx], np.asarray(keys)[idx], crop)
        out_imgs.append(np.asarray(res.images)[:valid, :h, :w])
        out_rms.append(np.asarray(res.fit_rms)[:valid])
        if on_chunk is not None:
            on_chunk(valid)
    return np.concatenate(out_imgs), np.concatenate(out_rms)


def grid_sheet(
    tiles: Sequence[np.ndarray], targets: np.ndarray, size: int, *, tile: int = 192, title: str = ""
) -> np.ndarray:
    """A labelled V-A grid contact sheet (valence on x, arousal on y, as in the paper's Fig. 5), uint8 RGB."""
    from PIL import Image, ImageDraw

    from .sheets import contact_sheet

    labels = [f"V={v:+.2f} A={a:+.2f}" for v, a in np.asarray(targets)]
    body = Image.fromarray(contact_sheet(list(tiles), labels, columns=size, tile=tile, title=title or None))
    left, bottom = 28, 26
    sheet = Image.new("RGB", (body.width + left, body.height + bottom), (255, 255, 255))
    sheet.paste(body, (left, 0))
    d = ImageDraw.Draw(sheet)
    d.text((left + body.width // 2 - 60, body.height + 6), "valence ->", fill=(0, 0, 0))
    axis = Image.new("RGB", (body.height, left), (255, 255, 255))
    ImageDraw.Draw(axis).text((body.height // 2 - 60, 8), "arousal ->", fill=(0, 0, 0))
    sheet.paste(axis.rotate(90, expand=True), (0, 0))
    return np.asarray(sheet)
