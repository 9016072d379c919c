"""Contact sheets: labelled grids of images (numpy + Pillow), for people to look at."""

import numpy as np


def face_box(landmarks, height: int, width: int, *, margin: float = 0.35) -> tuple[int, int, int, int]:
    """Square (top, left, bottom, right) around a face's landmarks, enlarged by ``margin``, in the image."""
    lm = np.asarray(landmarks)
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
    c = 0.5 * (lo + hi)
    half = 0.5 * (hi - lo).max() * (1 + margin)
    half = min(half, height / 2, width / 2)
    top = int(np.clip(c[1] - half, 0, height - 2 * half))
    left = int(np.clip(c[0] - half, 0, width - 2 * half))
    side = int(2 * half)
    return top, left, top + side, left + side


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8) if img.dtype != np.uint8 else img
    return np.asarray(Image.fromarray(u8).resize((size, size), Image.Resampling.LANCZOS))


def contact_sheet(
    tiles, labels=None, *, columns: int | None = None, tile: int = 256, title: str | None = None
) -> np.ndarray:
    """Arrange images (each H x W x 3, float [0, 1] or uint8) in a grid with a caption under each.

    Returns uint8 (H, W, 3).
    """
    from PIL import Image, ImageDraw

    n = len(tiles)
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    cap = 18 if labels is not None else 0
    head = 24 if title else 0
    sheet = Image.new("RGB", (columns * tile, head + rows * (tile + cap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((6, 5), title, fill=(0, 0, 0))
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        y = head + r * (tile + cap)
        sheet.paste(Image.fromarray(_resize(np.asarray(t), tile)), (c * tile, y))
        if labels is not None:
            draw.text((c * tile + 4, y + tile + 3), str(labels[i]), fill=(0, 0, 0))
    return np.asarray(sheet)
