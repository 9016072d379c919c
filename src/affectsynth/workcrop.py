"""The working crop on the host (NumPy): cut and resample each face into a fixed-size square, carry the
edit back to the photo at full resolution.

Why on the host: a photo handed to a compiled program makes the program's shapes depend on the photo's
size (a compilation per size); here the program only ever sees ``S x S`` crops (``S`` =
``SynthesisOptions.work_size``). A face needing more room than ``S`` is downsampled (box filter by an
integer factor, then linear interpolation: anti-aliased); a smaller one is cut at its own scale, so a
512 px photo is edited exactly as at full resolution. The edit comes back as a displacement field (applied
to the photo's own pixels with a Catmull-Rom lookup, so its sharpness survives) and a smooth residual
(appearance cues + the Poisson correction), both upsampled bilinearly; only the face's region is touched.
The paste-back runs tile by tile (``TILE x TILE`` photo pixels) through one small compiled program
(``paste_tile``: the fields' upsampling, the 16-tap lookup and the blend fused, so no full-size float
temporaries), whose shapes are fixed whatever the photo: compiled once and stored with the crops' program
(``compiled``); ``_paste_numpy`` is its NumPy reference.

Coordinates: pixel centres at ``i + 0.5`` (``render.raster``'s convention); a window is (top, left,
scale): crop position ``c`` shows photo position ``(top, left) + c / scale``.
"""

import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, Shaped

from .face import topology as topo

MARGIN = 1.35
"""Room around the face and its skirt in the window, as in ``pipeline.crop_size``."""


class Window(NamedTuple):
    """Where a working crop sits in its photo: integer top-left corner and scale (crop px per photo px)."""

    top: int
    left: int
    scale: float


def face_window(landmarks, height: int, width: int, *, size: int, skirt: float) -> Window:
    """The square window around one face (f32[478, 3] landmarks, photo pixels) for an ``size`` crop.

    Its side in the photo is what the face, its skirt and a margin need, but at least ``size`` (so a small
    face keeps its scale, scale 1); centred on the face and moved inside the photo where the photo is
    large enough (else the crop's outside is the photo's edge pixels repeated).
    """
    lm = np.asarray(landmarks, np.float64).reshape(topo.NUM_LANDMARKS, 3)
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
    need = float((hi - lo).max()) * (1.0 + skirt) * MARGIN + 16
    side = max(need, float(size))
    centre = 0.5 * (lo + hi)  # (x, y)
    corner = []
    for c, extent in ((centre[1], height), (centre[0], width)):
        start = math.floor(c - side / 2)
        if math.ceil(side) <= extent:
            start = min(max(start, 0), extent - math.ceil(side))
        corner.append(int(start))
    return Window(corner[0], corner[1], size / side)


def crop_landmarks(landmarks, window: Window) -> np.ndarray:
    """Photo-pixel landmarks f32[478, 3] in the working crop's pixels (depth scaled alike)."""
    shift = np.array([window.left, window.top, 0.0], np.float64)
    return ((np.asarray(landmarks, np.float64) - shift) * window.scale).astype(np.float32)


def _linear_taps(u: np.ndarray, n: int):
    """Indices (i0, i1) and weight of i1 for linear interpolation at continuous indices ``u``, clamped."""
    u = np.clip(u, 0.0, n - 1.0)
    i0 = np.clip(np.floor(u).astype(np.int32), 0, max(n - 2, 0))
    i1 = np.minimum(i0 + 1, n - 1)
    return i0, i1, (u - i0).astype(np.float32)


def _lerp_axis(a: np.ndarray, u: np.ndarray, axis: int) -> np.ndarray:
    i0, i1, f = _linear_taps(u, a.shape[axis])
    shape = [1] * a.ndim
    shape[axis] = len(u)
    f = f.reshape(shape)
    x0, x1 = np.take(a, i0, axis=axis), np.take(a, i1, axis=axis)
    return x0 + f * (x1 - x0)


def cut_window(image: np.ndarray, window: Window, size: int) -> np.ndarray:
    """The ``size x size`` working crop f32[size, size, C] of ``image`` f32[H, W, C] in [0, 1] or u8[H, W, C]
    (edge pixels repeated beyond the photo). At scale 1 an exact copy of photo pixels (``x / 255`` for
    uint8, as ``io.load_image`` makes them); below, box filter then linear."""
    h, w = image.shape[:2]
    unit = 255.0 if image.dtype == np.uint8 else 1.0
    k = max(1, int(math.floor(1.0 / window.scale + 1e-6)))
    # reduced pixel j covers photo pixels [corner + j k, corner + (j + 1) k); crop centres in its indices
    u = (np.arange(size) + 0.5) / window.scale / k - 0.5
    n = int(math.ceil(u[-1])) + 2
    region = image[_span(window.top, n * k, h)][:, _span(window.left, n * k, w)]
    if window.scale == 1.0:  # u are whole pixels: the linear taps' weights are all 0
        return np.divide(region[:size, :size], np.float32(unit), dtype=np.float32)
    if k > 1:
        region = _box_mean(region, k, unit)
    elif unit != 1.0:
        region = np.divide(region, np.float32(unit), dtype=np.float32)
    return _lerp_axis(_lerp_axis(region.astype(np.float32, copy=False), u, 0), u, 1)


def _box_mean(region: np.ndarray, k: int, unit: float) -> np.ndarray:
    """Means f32[n, m, C] / ``unit`` of the ``k x k`` blocks of ``region`` [n k, m k, C], in row bands on a
    few threads (NumPy releases the GIL; on one thread a 12-Mpx photo's took 19-24 ms of a ~160-210 ms edit,
    on two 16-18 ms). Sums over contiguous axes (a mean over axes (1, 3) is several times slower): the k rows
    of a band in turn, then the k pixels of a row; bytes summed as 16-bit integers (exact, as float32 sums of
    them are, and faster)."""
    (n, m), c = (x // k for x in region.shape[:2]), region.shape[-1]
    acc = np.uint16 if unit != 1.0 and k * k * 255 < 2**16 else np.float32
    out = np.empty((n, m, c), np.float32)

    def band(i0: int, i1: int):
        bands = region[i0 * k : i1 * k].reshape(i1 - i0, k, m * k * c)
        rows = bands[:, 0].astype(acc)
        for j in range(1, k):  # (``.sum(1)`` took 1.6x as long)
            rows += bands[:, j]
        rows = rows.reshape(i1 - i0, m, k * c)
        sums = rows[..., :c].copy()
        for j in range(1, k):  # (``.reshape(., m, k, c).sum(2)``, the same sums, took twice as long)
            sums += rows[..., j * c : (j + 1) * c]
        np.divide(sums, np.float32(k**2 * unit), out=out[i0:i1], dtype=np.float32)

    parts = min(_threads(), max(1, region.size // BOX_BAND_SIZE))
    edges = [round(i * n / parts) for i in range(parts + 1)]
    if parts == 1:
        band(0, n)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(parts) as pool:
            list(pool.map(band, edges[:-1], edges[1:]))
    return out


BOX_BAND_SIZE = 1 << 21
"""Photo values (pixels x channels) per thread at least in ``_box_mean``: smaller regions run on one."""


def _span(start: int, n: int, extent: int):
    """Index of ``n`` pixels from ``start`` along an axis of ``extent``: a slice (a view) when inside, else
    clamped indices (edge pixels repeated)."""
    if 0 <= start and start + n <= extent:
        return slice(start, start + n)
    return np.clip(start + np.arange(n), 0, extent - 1)


CUBIC_A = -0.75
"""The cubic convolution kernel's parameter (Keys 1981): -0.75, OpenCV's ``INTER_CUBIC``, so that the
host's paste-back (``cv2.remap``) and the references here use one kernel. Sharper than Catmull-Rom (-0.5):
on a 3000 px face's warp the Laplacian variance kept rises 0.93 -> 0.95; the clip to the four nearest
pixels bounds its larger overshoot."""


def _cubic_weights(t, xp=np):
    """The four weights f[..., 4] of taps ``floor(u) - 1 .. floor(u) + 2`` at fraction ``t = u - floor(u)``
    (NumPy or ``jax.numpy`` as ``xp``); they sum to 1."""
    a = CUBIC_A
    t2, t3 = t * t, t * t * t
    return xp.stack(
        [
            a * (t3 - 2 * t2 + t),
            (a + 2) * t3 - (a + 3) * t2 + 1,
            (2 * a + 3) * t2 - a * t - (a + 2) * t3,
            a * (t2 - t3),
        ],
        -1,
    )


def _cubic_taps(u: np.ndarray, n: int):
    """Four clamped indices f[..., 4] and cubic convolution weights f[..., 4] (``CUBIC_A``) for
    interpolation at continuous indices ``u``: unlike linear interpolation, a sub-pixel shift keeps the
    image's fine detail (a linear tap pair at half a pixel halves the highest frequencies)."""
    u = np.clip(u, 0.0, n - 1.0)
    i = np.floor(u).astype(np.int32)
    w = _cubic_weights((u - i).astype(np.float32))
    idx = np.clip(i[..., None] + np.arange(-1, 3, dtype=np.int32), 0, n - 1)
    return idx, w


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Catmull-Rom lookup of ``image`` f32[H, W, C] (or u8: float values 0..255) at pixel positions (x, y)
    (pixel centres at +0.5, edge pixels repeated), clipped to the range of the four nearest pixels (no
    ringing past the photo's own values). About 4x the cost of a bilinear lookup, which would blur: a
    3000 px face warped bilinearly kept 0.88 of its Laplacian variance, this keeps 0.98."""
    h, w = image.shape[:2]
    jx, wx = _cubic_taps(x - 0.5, w)
    iy, wy = _cubic_taps(y - 0.5, h)
    flat = image.reshape(h * w, -1)
    out = lo = hi = None
    for a in range(4):
        row = iy[..., a] * w
        across = None
        for b in range(4):
            v = flat.take(row + jx[..., b], axis=0).astype(np.float32, copy=False)
            if a in (1, 2) and b in (1, 2):  # the bilinear neighbourhood bounds the result
                lo = v.copy() if lo is None else np.minimum(lo, v, out=lo)
                hi = v.copy() if hi is None else np.maximum(hi, v, out=hi)
            v *= wx[..., b, None]
            across = v if across is None else np.add(across, v, out=across)
        across *= wy[..., a, None]
        out = across if out is None else np.add(out, across, out=out)
    return np.clip(out, lo, hi, out=out)


TILE = 256
"""Side of the photo tiles the compiled paste-back (``paste_tile``) finishes one at a time."""

WINDOW = TILE + 128
"""Side of the photo window a tile reads: the tile's own pixels and its warp's taps, which a smooth
displacement keeps within a few dozen pixels of them (a tile whose taps do not fit is carried back by the
NumPy reference, ``_paste_numpy``)."""

FIELD_WINDOW = TILE + 4
"""Side of the window of the crop's fields a tile's bilinear upsampling reads: a tile spans at most ``TILE``
crop pixels (scale <= 1), plus the taps."""


def _catmull_rom(
    src: Float[Array, "P P C"], x: Float[Array, "T T"], y: Float[Array, "T T"], corner, extent
) -> Float[Array, "T T C"]:
    """``_sample`` of a photo at positions (x, y) (photo pixels) from its window ``src``, whose pixel
    ``[0, 0]`` is photo pixel ``corner`` (row, col) of a photo ``extent`` (h, w) in size: 16 gathers fused
    into one program instead of NumPy's temporaries. A uint8 window is converted once (gathering bytes
    and converting each of the 16 taps measured 12% slower) and looked up in grey levels (0..255)."""
    p = src.shape[1]
    jx, wx = _cubic_taps_jax(x - 0.5, extent[1], corner[1])
    iy, wy = _cubic_taps_jax(y - 0.5, extent[0], corner[0])
    flat = src.reshape(-1, src.shape[-1]).astype(jnp.float32)
    out = lo = hi = None
    for a in range(4):
        across = None
        for b in range(4):
            v = jnp.take(flat, iy[..., a] * p + jx[..., b], axis=0, mode="clip")
            if a in (1, 2) and b in (1, 2):  # the bilinear neighbourhood bounds the result
                lo = v if lo is None else jnp.minimum(lo, v)
                hi = v if hi is None else jnp.maximum(hi, v)
            v = v * wx[..., b, None]
            across = v if across is None else across + v
        across = across * wy[..., a, None]
        out = across if out is None else out + across
    return jnp.clip(out, lo, hi)


def _cubic_taps_jax(u: Float[Array, "T T"], n, origin):
    """``_cubic_taps`` in JAX, indices relative to a window starting at ``origin`` (traced scalars)."""
    u = jnp.clip(u, 0.0, n - 1.0)
    i = jnp.floor(u)
    w = _cubic_weights(u - i, jnp)
    offsets = jnp.arange(-1, 3, dtype=jnp.int32)[None, None, :]
    idx = jnp.clip(i.astype(jnp.int32)[..., None] + offsets, 0, n.astype(jnp.int32) - 1)
    return idx - origin, w


def _linear_taps_jax(u: Float[Array, " T"], n: int):
    """``_linear_taps`` in JAX (``n`` static)."""
    u = jnp.clip(u, 0.0, n - 1.0)
    i0 = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, max(n - 2, 0))
    return i0, jnp.minimum(i0 + 1, n - 1), u - i0


def _upsample(
    fields: Float[Array, "S S K"], u: Float[Array, " T"], v: Float[Array, " T"]
) -> Float[Array, "T T K"]:
    """Bilinear lookup of ``fields`` at crop rows ``u`` x columns ``v`` (continuous indices, increasing),
    columns first as ``_lerp_axis`` does, from the ``FIELD_WINDOW``-sided window they fall in."""
    s = fields.shape[0]
    fw = min(FIELD_WINDOW, s)
    i0, i1, fy = _linear_taps_jax(u, s)
    j0, j1, fx = _linear_taps_jax(v, s)
    r0, c0 = jnp.clip(i0[0], 0, s - fw), jnp.clip(j0[0], 0, s - fw)
    win = jax.lax.dynamic_slice(fields, (r0, c0, 0), (fw, fw, fields.shape[-1]))
    a0, a1 = jnp.take(win, j0 - c0, axis=1), jnp.take(win, j1 - c0, axis=1)
    across = a0 + fx[None, :, None] * (a1 - a0)
    b0, b1 = jnp.take(across, i0 - r0, axis=0), jnp.take(across, i1 - r0, axis=0)
    return b0 + fy[:, None, None] * (b1 - b0)


def paste_tile(
    src: Shaped[Array, "P P 3"],
    fields: Float[Array, "S S 10"],
    origin: Int[Array, "2"],
    corner: Int[Array, "2"],
    geom: Float[Array, "5"],
) -> tuple[Shaped[Array, "T T 3"], Float[Array, "T T"]]:
    """One finished ``TILE x TILE`` tile of the paste-back, the photo tile whose top-left pixel is ``origin``
    (row, col): the crop's ``fields`` (displacement in photo px, coverage, residual, paint) upsampled
    bilinearly, the warp looked up in the photo window ``src`` (its pixel [0, 0] is photo pixel ``corner``;
    it holds the tile and its taps), ``photo + C (warp - photo) + R`` under the paint (``paste_back``),
    clipped to [0, 1]. ``geom`` = (window top, left, scale, photo height, width). Shapes are fixed,
    whatever the photo: compiled once (and stored). ``src`` is float32 in [0, 1] or uint8 (a photo as
    decoded: the tile comes back uint8, rounded as ``io.save_image`` rounds, with no full-size float copy of
    the photo anywhere; one program per dtype). Returns the tile and its coverage ``C``; the caller keeps
    the photo where ``C`` is 0."""
    unit = 255.0 if src.dtype == jnp.uint8 else 1.0  # grey levels per unit of the fields' residual
    top, left, scale = geom[0], geom[1], geom[2]
    centres = jnp.arange(TILE, dtype=jnp.float32) + 0.5
    ys, xs = origin[0] + centres, origin[1] + centres
    up = _upsample(fields, (ys - top) * scale - 0.5, (xs - left) * scale - 0.5)
    warp = _catmull_rom(src, xs[None, :] + up[..., 0], ys[:, None] + up[..., 1], corner, geom[3:])
    orig = jax.lax.dynamic_slice(src, (origin[0] - corner[0], origin[1] - corner[1], 0), (TILE, TILE, 3))
    orig = orig.astype(jnp.float32)
    cover = up[..., 2]
    out = orig + cover[..., None] * (warp - orig) + unit * up[..., 3:6]
    out = jnp.clip(out * (1.0 - up[..., 9:10]) + unit * up[..., 6:9], 0.0, unit)
    if src.dtype == jnp.uint8:  # a static choice (the dtype), not a traced one
        out = jnp.floor(out + 0.5).astype(jnp.uint8)
    return out, cover


def tile_program(size: int, dtype=np.float32, *, rebuild: bool = False):
    """``paste_tile`` compiled for ``size``-sided working crops and photos of ``dtype`` (float32 or uint8),
    loaded from the user cache (``compiled``) or built and stored there (``working.prepare``, hence
    ``affectsynth warmup``, builds them ahead of time)."""
    from .compiled import load_program

    args = (
        np.zeros((WINDOW, WINDOW, 3), dtype),
        np.zeros((size, size, 10), np.float32),
        np.zeros(2, np.int32),
        np.zeros(2, np.int32),
        np.float32([0, 0, 1, WINDOW, WINDOW]),
    )
    settings = (TILE, WINDOW, FIELD_WINDOW)
    return load_program("paste_tile", paste_tile, args, settings=settings, rebuild=rebuild)


def _threads() -> int:
    """Worker threads for the tiles: the CPUs this process may use, at most 4 (NumPy and compiled programs
    release the GIL)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, min(n, 4))


def _tiles(
    window: Window, covered: np.ndarray, h: int, w: int, rows: int = TILE, cols: int = TILE
) -> list[tuple[int, int, int, int]]:
    """Photo regions (rows a:b, cols c:d), at most ``rows x cols``, that the upsampled coverage can reach:
    ``rows``-row strips over the covered crop rows (one crop pixel of margin), each limited to the columns
    its own crop rows cover and cut every ``cols`` columns."""
    s, n = window.scale, len(covered)
    used = np.flatnonzero(covered.any(1))
    if used.size == 0:
        return []
    y0 = max(0, int(math.floor(window.top + (used[0] - 1) / s)))
    y1 = min(h, int(math.ceil(window.top + (used[-1] + 2) / s)))
    tiles = []
    for a in range(y0, y1, rows):
        b = min(a + rows, y1)
        lo = max(0, int(math.floor((a - window.top) * s)) - 2)
        hi = min(n, int(math.ceil((b - window.top) * s)) + 3)
        across = np.flatnonzero(covered[lo:hi].any(0))
        if across.size == 0:
            continue
        x0 = max(0, int(math.floor(window.left + (across[0] - 1) / s)))
        x1 = min(w, int(math.ceil(window.left + (across[-1] + 2) / s)))
        tiles += [(a, b, c, min(c + cols, x1)) for c in range(x0, x1, cols)]
    return tiles


def _tile_corner(window: Window, fields: np.ndarray, tile, h: int, w: int):
    """The photo window's corner (row, col) for ``paste_tile`` on ``tile`` (a, b, c, d): one holding the
    tile's ``TILE x TILE`` pixels and every tap its warp reads (bounded by the displacement's range over
    the crop pixels the tile's bilinear upsampling reads). None when they do not fit in ``WINDOW``, or
    when nothing there is covered (the tile is left as it is)."""
    a, b, c, d = tile
    s, n = window.scale, len(fields)
    i0, i1, _ = _linear_taps((np.float32([a, b - 1]) + 0.5 - window.top) * s - 0.5, n)
    j0, j1, _ = _linear_taps((np.float32([c, d - 1]) + 0.5 - window.left) * s - 0.5, n)
    block = fields[i0[0] : i1[1] + 1, j0[0] : j1[1] + 1]
    if not block[..., 2].any():
        return None, False
    corner = []
    for (p, q), k, extent in (((a, b), 1, h), ((c, d), 0, w)):
        shift = block[..., k]
        lo, hi = _tap_span(np.float32([p + float(shift.min()), q - 1 + float(shift.max())]), extent)
        lo, hi = max(0, lo - 1), min(extent - 1, hi + 1)  # a pixel of slack for float rounding
        start = min(lo, p)
        if max(hi, p + TILE - 1) - start >= WINDOW:
            return None, True
        corner.append(start)
    return corner, True


def _tap_span(u: np.ndarray, n: int):
    """First and last photo index a Catmull-Rom lookup at continuous indices ``u`` reads."""
    u = np.clip(u, 0.0, n - 1.0)
    return max(0, int(np.floor(u.min())) - 1), min(n - 1, int(np.floor(u.max())) + 2)


def paste_engine() -> str:
    """How ``paste_back`` carries edits back by default: ``"opencv"`` (``cv2``, which MediaPipe brings; see
    ``_paste_opencv``) when it imports, else ``"tiles"`` (the compiled ``paste_tile``)."""
    try:
        import cv2  # noqa: F401
    except ImportError:
        return "tiles"
    return "opencv"


def paste_back(
    out, mask, photo, window: Window, displacement, covered, residual, painted=None, *, engine: str = "auto"
):
    """Write one face's working-crop edit of ``photo`` f32[H, W, 3] (or u8: ``out`` is then uint8 too,
    rounded as ``io.save_image`` rounds) into ``out`` (same shape and dtype, C-contiguous), at full
    resolution.

    ``displacement`` f32[S, S, 2] (crop px), ``covered`` f32[S, S], ``residual`` f32[S, S, 3]: see
    ``working.WorkEdit``. Inside the face's region the output is ``photo + C (warp - photo) + R``, with the
    displacement, coverage ``C`` and residual ``R`` upsampled bilinearly and the warp sampling the photo's
    own pixels; pixels the upsampled coverage does not reach are left as they are in ``out``. ``painted``
    f32[S, S, 4] (optional: ``(P * colour, P)``, the crop's final colour premultiplied by its opacity
    ``P``) marks what the crop painted (the mouth's interior): there the result is ``(1 - P) x + P colour``
    (``x`` the above, both upsampled), so that the photo's fine detail does not show through the paint (its
    sources, moved under the paint, stretched it into streaks). ``mask`` f32[H, W] receives ``C``. The
    photo lives on the host, so by default (``engine="auto"``: ``paste_engine``) OpenCV does it in row
    strips (``_paste_opencv``); ``"tiles"``: tile by tile (``_tiles``) with the compiled ``paste_tile`` (a
    tile whose warp reaches too far: the NumPy reference); ``"numpy"``: the NumPy reference
    ``_paste_numpy`` throughout. Regions run on a few threads (``photo`` is only read; regions write
    disjoint pixels).
    """
    h, w = photo.shape[:2]
    engine = paste_engine() if engine == "auto" else engine
    if engine == "opencv" and not _opencv_can_write(out, mask, photo):
        engine = "tiles"
    if painted is None:
        painted = np.zeros((*np.shape(covered), 4), np.float32)
    if engine == "opencv":
        one = _opencv_strips(out, mask, photo, window, (displacement, covered, residual, painted))
        regions = _tiles(window, covered, h, w, rows=STRIP, cols=w)
    else:
        fields = np.concatenate([displacement / window.scale, covered[..., None], residual, painted], axis=-1)
        one = _compiled_tiles(out, mask, photo, window, fields.astype(np.float32), compiled=engine == "tiles")
        regions = _tiles(window, covered, h, w)
    if len(regions) > 1 and _threads() > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(_threads()) as pool:
            list(pool.map(one, regions))
    else:
        for region in regions:
            one(region)


def _compiled_tiles(out, mask, photo, window: Window, fields, *, compiled: bool):
    """The paste-back of one tile (a, b, c, d) by ``paste_tile`` (or, when not ``compiled`` or where the
    warp reaches past the tile's window, ``_paste_numpy``), as a function of the tile."""
    h, w = photo.shape[:2]
    prog = tile_program(len(fields), photo.dtype) if compiled else None
    on_device = jax.device_put(fields) if compiled else None
    geom = np.float32([window.top, window.left, window.scale, h, w])

    def one(tile):
        a, b, c, d = tile
        corner, touched = _tile_corner(window, fields, tile, h, w)
        if not touched:
            return
        if prog is None or corner is None:
            _paste_numpy(out, mask, photo, window, fields, tile)
            return
        src = np.ascontiguousarray(photo[_span(corner[0], WINDOW, h)][:, _span(corner[1], WINDOW, w)])
        edited, cover = prog(src, on_device, np.int32([a, c]), np.int32(corner), geom)
        _write(out, mask, tile, np.asarray(edited)[: b - a, : d - c], np.asarray(cover)[: b - a, : d - c])

    return one


def _opencv_can_write(out, mask, photo) -> bool:
    """Whether OpenCV's functions can write into views of ``out`` and ``mask`` (C-contiguous, of the
    photo's dtype, uint8 or float32): otherwise they would write into a copy."""
    arrays = (out, mask)
    return (
        photo.dtype in (np.uint8, np.float32)
        and out.dtype == photo.dtype
        and mask.dtype == np.float32
        and all(x.flags.c_contiguous and x.flags.writeable for x in arrays)
    )


STRIP = 64
"""Rows of the photo strips ``_paste_opencv`` finishes one at a time (their temporaries stay in cache)."""

COVER_FLOOR = 1e-5
"""Upsampled coverage at or below which ``_paste_opencv`` leaves a pixel as it is (an edit scaled by it moves
no pixel by a visible amount, and no byte)."""


def _opencv_strips(out, mask, photo, window: Window, edit):
    """``_paste_opencv`` of one strip (a, b, c, d), as a function of the strip, the fields laid out once
    for it over the crop pixels any strip reads (the covered ones and 3 more around: the strips reach one
    crop pixel past them, bilinear taps one more): the displacement's components apart, in photo pixels
    (``cv2.warpAffine`` has fast paths for 1 and 4 channels only), and (residual in the photo's units,
    coverage), the residual plus half a grey level for uint8 photos (so that truncating rounds as
    ``io.save_image`` does); the paint (colour in the photo's units, opacity) where the crop painted, with
    the photo rows it reaches (None when nothing is painted)."""
    displacement, covered, residual, painted = edit
    n = len(covered)
    used = [np.flatnonzero(covered.any(k)) for k in (1, 0)]
    (r0, r1), (c0, c1) = ((max(0, u[0] - 3), min(n, u[-1] + 4)) if u.size else (0, n) for u in used)
    unit = 255.0 if photo.dtype == np.uint8 else 1.0
    half = 0.5 if photo.dtype == np.uint8 else 0.0
    block = np.s_[r0:r1, c0:c1]
    dx, dy = (np.divide(displacement[block][..., k], window.scale, dtype=np.float32) for k in (0, 1))
    rc = np.empty((r1 - r0, c1 - c0, 4), np.float32)
    np.multiply(residual[block], unit, out=rc[..., :3])
    rc[..., :3] += half
    rc[..., 3] = covered[block]
    paint = None
    rows = np.flatnonzero(painted[block][..., 3].any(1))
    if rows.size:
        pc = np.multiply(painted[block], np.float32([unit, unit, unit, 1.0]), dtype=np.float32)
        pc[..., :3] += half * pc[..., 3:]  # the half grey level of what it replaces
        s = window.scale
        reach = (window.top + (r0 + rows[0] - 1) / s, window.top + (r0 + rows[-1] + 2) / s)
        paint = (pc, reach)
    fields = (dx, dy, rc, (r0, c0), paint)
    return lambda strip: _paste_opencv(out, mask, photo, window, fields, strip)


def _paste_opencv(out, mask, photo, window: Window, fields, strip):
    """``_paste_numpy`` of the photo region ``strip`` (rows a:b, cols c:d) with OpenCV, written into
    ``out`` and ``mask``: the fields upsampled by ``cv2.warpAffine``, the warp looked up by ``cv2.remap``
    (``INTER_CUBIC``: ``CUBIC_A``; positions to 1/32 px), clipped to the four nearest pixels (erosion and
    dilation by a 2 x 2 square, looked up at the same whole-pixel positions), blended in float32. uint8
    photos are looked up in float (grey levels) from a block of the strip's taps converted alone; ``out``
    gets bytes, ``photo + 0.5`` truncated. ``fields`` = (dx, dy, (residual, coverage), their corner in
    the crop, the paint) from ``_opencv_strips``. Equal to the reference within the 1/32 px rounding of
    positions (measured: 0.015 grey levels mean, 1.2 at most on a 3000 px face)."""
    import cv2

    a, b, c, d = strip
    h, w = photo.shape[:2]
    dx, dy, rc, (r0, c0), paint = fields  # the fields' pixel [0, 0] is the crop's [r0, c0]
    s = window.scale
    m = np.float64(
        [[s, 0, s * (c + 0.5 - window.left) - 0.5 - c0], [0, s, s * (a + 0.5 - window.top) - 0.5 - r0]]
    )
    size, flags = (d - c, b - a), cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    up = [cv2.warpAffine(f, m, size, flags=flags, borderMode=cv2.BORDER_REPLICATE) for f in (dx, dy, rc)]
    mx, my, rc = up
    cover = cv2.extractChannel(rc, 3)
    # OpenCV's 1/32 px positions leave a trace of coverage on pixels just past the rim where the exact
    # upsampling has none (measured 3.7e-7): below COVER_FLOOR a pixel is left as it is
    cv2.threshold(cover, COVER_FLOOR, 0.0, cv2.THRESH_TOZERO, dst=cover)
    if not cv2.countNonZero(cover):
        return
    mx += np.arange(c, d, dtype=np.float32)  # continuous photo indices: a pixel's centre is at i + 0.5
    my += np.arange(a, b, dtype=np.float32)[:, None]
    across, down = [], []
    for mp, n, ends in ((mx, w, across), (my, h, down)):
        low, high = cv2.minMaxLoc(mp)[:2]
        if low < 0 or high > n - 1:  # clamped to the photo as ``_cubic_taps`` clamps (a warp may reach
            np.clip(mp, 0.0, n - 1.0, out=mp)  # past a narrow photo altogether: its taps are then empty)
            low, high = min(max(low, 0.0), n - 1.0), min(max(high, 0.0), n - 1.0)
        # taps of floor(u) - 1 .. floor(u) + 2, floor(u) rounded up by OpenCV's 1/32 px where u is near it
        ends += [max(0, math.floor(low) - 1), min(n, math.floor(high) + 4)]
    (x0, x1), (y0, y1) = across, down
    mx -= x0
    my -= y0
    m1, m2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
    block = photo[y0:y1, x0:x1]
    src = block if block.dtype == np.float32 else block.astype(np.float32)
    warp = cv2.remap(src, m1, m2, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    square = np.ones((2, 2), np.uint8)
    for op, bound in ((cv2.erode, cv2.max), (cv2.dilate, cv2.min)):  # the bilinear neighbourhood's range
        extreme = op(block, square, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
        near = cv2.remap(extreme, m1, None, cv2.INTER_NEAREST)
        bound(warp, near.astype(np.float32, copy=False), dst=warp)
    orig = photo[a:b, c:d]
    edited = cv2.subtract(warp, orig, dtype=cv2.CV_32F)
    cv2.multiply(edited, cv2.merge([cover] * 3), dst=edited)
    cv2.add(edited, orig, dst=edited, dtype=cv2.CV_32F)
    cv2.add(edited, cv2.cvtColor(rc, cv2.COLOR_RGBA2RGB), dst=edited)
    if paint is not None and paint[1][0] < b and paint[1][1] > a:  # under the paint, the crop's colour
        pu = cv2.warpAffine(paint[0], m, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
        keep = 1.0 - cv2.extractChannel(pu, 3)
        cv2.multiply(edited, cv2.merge([keep] * 3), dst=edited)
        cv2.add(edited, cv2.cvtColor(pu, cv2.COLOR_RGBA2RGB), dst=edited)
    np.clip(edited, 0.0, 1.0 if photo.dtype != np.uint8 else 255.0, out=edited)
    if photo.dtype == np.uint8:
        edited = edited.astype(np.uint8)  # truncation of x + 0.5: floor(x + 0.5) as ``io.save_image``
    cv2.copyTo(edited, cv2.compare(cover, 0.0, cv2.CMP_GT), out[a:b, c:d])
    cv2.max(mask[a:b, c:d], cover, dst=mask[a:b, c:d])


def _write(out, mask, tile, edited: np.ndarray, cover: np.ndarray):
    """Copy a finished tile into ``out`` where it is covered, its coverage into ``mask`` (maximum)."""
    a, b, c, d = tile
    np.copyto(out[a:b, c:d], edited, where=cover[..., None] > 0)
    np.maximum(mask[a:b, c:d], cover, out=mask[a:b, c:d])


def _paste_numpy(out, mask, photo, window: Window, fields, tile):
    """``paste_tile`` in NumPy for the photo region ``tile`` (rows a:b, cols c:d), written into ``out`` and
    ``mask``: the reference the compiled tiles are tested against, and the fallback for a warp that
    reaches beyond a tile's window."""
    a, b, c, d = tile
    s = window.scale
    unit = np.float32(255.0 if photo.dtype == np.uint8 else 1.0)
    xc = (np.arange(c, d) + 0.5).astype(np.float32)
    yc = (np.arange(a, b) + 0.5).astype(np.float32)
    across = _lerp_axis(fields, (xc - window.left) * s - 0.5, 1)
    up = _lerp_axis(across, (yc - window.top) * s - 0.5, 0)
    cover = up[..., 2:3]
    orig = photo[a:b, c:d].astype(np.float32, copy=False)
    edited = _sample(photo, xc[None, :] + up[..., 0], yc[:, None] + up[..., 1])
    edited -= orig
    edited *= cover
    edited += orig
    edited += unit * up[..., 3:6]
    edited *= 1.0 - up[..., 9:10]  # under the paint, the crop's colour (``paste_back``)
    edited += unit * up[..., 6:9]
    np.clip(edited, 0.0, unit, out=edited)
    if photo.dtype == np.uint8:
        edited = np.floor(edited + 0.5).astype(np.uint8)
    _write(out, mask, tile, edited, cover[..., 0])
