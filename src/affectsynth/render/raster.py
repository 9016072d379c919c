"""A software triangle rasteriser in pure JAX: z-buffered fragments, interpolation, texture transfer.

Conventions. Vertices are ``(x, y, z)`` in pixels: pixel (row ``i``, col ``j``) has its centre at
``(x, y) = (j + 0.5, i + 0.5)``, ``y`` points down, and a *smaller* ``z`` is *nearer* the camera (the
FaceMesh convention). A pixel belongs to a triangle when its centre does; barycentrics are screen-space
(no perspective correction: the renders here are weak-perspective, where depth is affine on screen).

Coverage of a pixel centre ``p`` by triangle :math:`(v_0, v_1, v_2)` is decided by the edge functions

.. math::
    E_i(p) = (v_{i+2} - v_{i+1}) \\times (p - v_{i+1}), \\qquad
    b_i = E_i / (E_0 + E_1 + E_2),

(indices mod 3, :math:`a \\times b = a_x b_y - a_y b_x`): ``p`` is inside when every :math:`E_i` has the
sign of the triangle's area. Every edge is evaluated in one canonical direction (endpoints in
lexicographic order of their coordinates) and then negated where needed, so two triangles that share an
edge see bitwise opposite values. Centres exactly on an edge follow the *top-left rule*: they go to the
triangle whose interior lies below a horizontal edge or to the right of any other edge. Hence the
triangles of a consistently oriented mesh cover each pixel centre of their union exactly once, whatever
their size. Zero-area and non-finite triangles cover nothing.

Algorithm (static shapes, exact). Each triangle's pixel bounding box, clipped to the image, is cut into
``window x window`` pixel windows; the windows of all triangles are enumerated by a prefix sum of their
counts and processed ``capacity`` windows per round. A round tests its windows' pixels and merges them
into a z-buffer by two scatter-min passes (depth, then the smallest triangle id at that depth). Rounds
repeat in a ``lax.while_loop`` until every window is done, so no triangle is ever dropped: big
triangles, off-screen parts and meshes larger than ``capacity`` only cost more rounds. The work is
proportional to the area of the triangles' bounding boxes, not to ``H * W * F``, and memory is bounded
by ``capacity * window**2``. Fragment attributes are then recomputed per pixel from the winning triangle
with the caller's vertices, so barycentrics, depth and coverage are differentiable in the vertices
(triangle ids are not).

Back-face culling: our template triangles are counter-clockwise seen from the camera (normals towards
the viewer), which in pixel coordinates (``y`` down) means a *negative* signed area
:math:`(v_1 - v_0) \\times (v_2 - v_0) < 0`. ``cull_backfaces=True`` drops the triangles with a positive
area (clockwise as seen on screen), i.e. those facing away from the camera; the frontal face is kept.
"""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._types import Image, Triangles, Vertices, Vertices2D

DEFAULT_WINDOW = 4
"""Side in pixels of the square windows that triangles' bounding boxes are cut into."""

_NO_TRIANGLE = jnp.iinfo(jnp.int32).max


class Fragments(eqx.Module):
    """What the rasteriser saw at each pixel centre (all arrays are per pixel).

    Attributes:
        triangle_id: index of the visible triangle, -1 where no triangle covers the pixel centre.
        barycentric: screen-space barycentrics of the pixel centre in that triangle (non-negative, sum
            to 1); 0 outside.
        depth: interpolated ``z`` of the visible surface; ``+inf`` outside.
        coverage: anti-aliased coverage in [0, 1]: 1 inside, 0 outside, ramping over about one pixel
            across the silhouette (estimated from the distance of the pixel centre to the boundary edge).
        vertex_ids: the visible triangle's three vertex indices (0 outside), so that attributes can be
            interpolated without the triangle list.
    """

    triangle_id: Int[Array, "H W"]
    barycentric: Float[Array, "H W 3"]
    depth: Float[Array, "H W"]
    coverage: Float[Array, "H W"]
    vertex_ids: Int[Array, "H W 3"]

    @property
    def mask(self):
        """Boolean ``H x W``: pixel centres covered by some triangle."""
        return self.triangle_id >= 0


def default_capacity(num_triangles: int, height: int, width: int, window: int = DEFAULT_WINDOW) -> int:
    """Windows per round: one per triangle plus a quarter of an image tiling.

    A frontal face mesh 45% of the image wide needs about ``F + 0.6 * tiles`` windows, so 1-3 rounds.
    Measured on CPU (scripts/bench_raster.py) a few smaller rounds cost no more than one big one, and
    they keep memory (``capacity * window**2`` per round) low for batched renders.
    """
    tiles = math.ceil(height / window) * math.ceil(width / window)
    return int(num_triangles + (tiles + 3) // 4)


def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


class _Setup(eqx.Module):
    """Per-triangle data for the window pass."""

    table: Float[
        Array, "F 21"
    ]  # per edge i: ax, ay, dx, dy (canonical direction), sign, top-left; then z0..z2
    box: Int[Array, "F 5"]  # first col, first row, last col, last row, windows per row
    count: Int[Array, " F"]  # windows of the triangle (0: nothing to draw)


def _setup(vertices, triangles, height: int, width: int, window: int, cull_backfaces: bool) -> _Setup:
    corners = vertices[triangles]  # F 3 3
    finite = jnp.all(jnp.isfinite(corners), axis=(1, 2))
    corners = jnp.where(finite[:, None, None], corners, 0.0)
    x, y, z = (corners[:, :, k] for k in range(3))  # each F 3
    ax, ay = jnp.roll(x, -1, axis=1), jnp.roll(y, -1, axis=1)  # edge i runs from v[i+1] to v[i+2]
    bx, by = jnp.roll(x, -2, axis=1), jnp.roll(y, -2, axis=1)
    swap = (ax > bx) | ((ax == bx) & (ay > by))
    sx, sy = jnp.where(swap, bx, ax), jnp.where(swap, by, ay)
    dx, dy = jnp.where(swap, ax, bx) - sx, jnp.where(swap, ay, by) - sy
    sigma = jnp.where(swap, -1.0, 1.0).astype(x.dtype)
    # twice the signed area: E_0 at v0, with the same canonical formula as the pixel tests
    area = sigma[:, 0] * _cross(dx[:, 0], dy[:, 0], x[:, 0] - sx[:, 0], y[:, 0] - sy[:, 0])
    keep = finite & (area != 0)
    if cull_backfaces:
        keep = keep & (area < 0)
    sign = sigma * jnp.sign(area)[:, None]
    # interior normal of edge i is sign * (-dy, dx): top edge if it points down (+y), left if it points right
    nx, ny = -sign * dy, sign * dx
    top_left = ((ny > 0) | ((ny == 0) & (nx > 0))).astype(x.dtype)
    per_edge = jnp.stack([sx, sy, dx, dy, sign, top_left], axis=-1).reshape(-1, 18)
    table = jnp.concatenate([per_edge, z], axis=1)

    size = jnp.array([[width, height]], jnp.int32)
    xy = corners[..., :2]
    lo = jnp.clip(jnp.min(xy, axis=1) - 0.5, -2.0, size + 2.0)
    hi = jnp.clip(jnp.max(xy, axis=1) - 0.5, -2.0, size + 2.0)
    first = jnp.maximum(jnp.ceil(lo).astype(jnp.int32), 0)
    last = jnp.minimum(jnp.floor(hi).astype(jnp.int32), size - 1)
    span = last - first + 1
    per = (span + window - 1) // window
    count = jnp.where(keep & jnp.all(span > 0, axis=1), per[:, 0] * per[:, 1], 0)
    box = jnp.concatenate([first, last, per[:, :1]], axis=1)
    return _Setup(table=table, box=box, count=count)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _raster_ids(vertices, triangles, height: int, width: int, window: int, capacity: int, cull: bool):
    """Visible triangle id per pixel (flat, ``_NO_TRIANGLE`` where none) by windowed z-buffering.

    Compiled as a whole: ``rasterize`` called outside any ``jit`` compiled the ``while_loop`` over its
    fresh ``body`` closure again on every call (0.3 s and ~75 memory maps never given back)."""
    setup = _setup(vertices, triangles, height, width, window, cull)
    ends = jnp.cumsum(setup.count)
    total = ends[-1]
    npix = height * width
    offs = jnp.arange(window, dtype=jnp.int32)
    slot = jnp.arange(capacity, dtype=jnp.int32)
    num_tri = triangles.shape[0]
    shape = (capacity, window, window)

    def body(state):
        r, zbuf, ids = state
        g = r * capacity + slot
        t = jnp.minimum(jnp.searchsorted(ends, g, side="right"), num_tri - 1).astype(jnp.int32)
        box = setup.box[t]
        local = g - (ends[t] - setup.count[t])
        per_row = jnp.maximum(box[:, 4], 1)
        col = lambda k: box[:, k, None, None]
        cols = (box[:, 0] + (local % per_row) * window)[:, None, None] + offs[None, None, :]
        rows = (box[:, 1] + (local // per_row) * window)[:, None, None] + offs[None, :, None]
        inside = (g < total)[:, None, None] & (cols <= col(2)) & (rows <= col(3))
        px = cols.astype(vertices.dtype) + 0.5
        py = rows.astype(vertices.dtype) + 0.5
        tab = setup.table[t]
        c = lambda k: tab[:, k, None, None]
        ev = []
        for i in range(3):
            o = 6 * i
            e = c(o + 4) * (c(o + 2) * (py - c(o + 1)) - c(o + 3) * (px - c(o)))
            inside = inside & ((e > 0) | ((e == 0) & (c(o + 5) > 0)))
            ev.append(e)
        total_e = ev[0] + ev[1] + ev[2]
        inside = inside & (total_e > 0)
        depth = (ev[0] * c(18) + ev[1] * c(19) + ev[2] * c(20)) / jnp.where(inside, total_e, 1.0)
        inside = inside & jnp.isfinite(depth)
        idx = jnp.where(inside, rows * width + cols, npix).reshape(-1)
        depth = depth.reshape(-1)
        znew = zbuf.at[idx].min(depth, mode="drop")
        win = depth == znew.at[idx].get(mode="fill", fill_value=-jnp.inf)
        tid = jnp.broadcast_to(t[:, None, None], shape).reshape(-1)
        round_ids = jnp.full((npix,), _NO_TRIANGLE, jnp.int32)
        round_ids = round_ids.at[jnp.where(win, idx, npix)].min(tid, mode="drop")
        ids = jnp.where(znew < zbuf, round_ids, jnp.minimum(ids, round_ids))
        return r + 1, znew, ids

    init = (
        jnp.zeros((), jnp.int32),
        jnp.full((npix,), jnp.inf, vertices.dtype),
        jnp.full((npix,), _NO_TRIANGLE, jnp.int32),
    )
    _, _, ids = jax.lax.while_loop(lambda s: s[0] * capacity < total, body, init)
    return ids


def _coverage(covered, bary, grad):
    """Silhouette anti-aliasing from each covered pixel's triangle, across its 4-neighbourhood.

    For a covered pixel ``p`` next to an uncovered one ``q``, the triangle of ``p`` is left through its
    edges whose barycentric turns negative at ``q``; with ``d`` the distance from a pixel centre to that
    edge line, ``p`` gets ``clip(0.5 + d_p)`` and ``q`` gets ``clip(0.5 - d_q)``: the exact area fraction
    for an axis-aligned edge, a one-pixel ramp otherwise. Interior pixels stay at 1, far ones at 0, and
    the image border is no silhouette. ``bary`` and ``grad`` are per-edge lists of ``H x W`` arrays
    (``grad[i] = (db_i/dx, db_i/dy)``).
    """
    h, w = covered.shape
    dt = bary[0].dtype
    # work on a 1-pixel padded grid so that neighbours are plain slices (a pad fused into the arithmetic
    # is slow on CPU); beyond the border counts as covered for p's test and sends nothing to q
    pad = lambda a, fill: jnp.pad(a, 1, constant_values=fill)
    cov_p = pad(covered, False)
    cov_nb = pad(covered, True)
    bp = [pad(b, 0.0) for b in bary]
    gp = [(pad(gx, 0.0), pad(gy, 0.0)) for gx, gy in grad]
    # per edge: distance of the centre to the edge line, and its change per pixel step in x and y
    dist, step_x, step_y = [], [], []
    for b, (gx, gy) in zip(bp, gp, strict=True):
        n = jnp.sqrt(gx * gx + gy * gy)
        inv = jnp.where(n > 0, 1.0 / jnp.where(n > 0, n, 1.0), 0.0)
        dist.append(jnp.where(n > 0, b * inv, jnp.inf))  # zero gradient (padding): never crossed
        step_x.append(gx * inv)
        step_y.append(gy * inv)
    core = lambda a, di, dj: a[1 + di : 1 + di + h, 1 + dj : 1 + dj + w]
    inner = jnp.ones((h, w), dt)
    outer = jnp.zeros((h, w), dt)
    for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        edge = cov_p & ~jnp.roll(cov_nb, (-di, -dj), axis=(0, 1))  # roll wraps only into the padding
        d_in = jnp.full(cov_p.shape, jnp.inf, dt)
        d_out = jnp.zeros(cov_p.shape, dt)
        for dc, sx, sy in zip(dist, step_x, step_y, strict=True):
            dq = dc + (sx if dj > 0 else -sx) if dj else dc + (sy if di > 0 else -sy)
            crossed = dq < 0  # the neighbour is beyond this edge of p's triangle
            d_in = jnp.where(crossed, jnp.minimum(d_in, dc), d_in)
            d_out = jnp.where(crossed, jnp.maximum(d_out, -dq), d_out)
        inner = jnp.where(
            core(edge, 0, 0), jnp.minimum(inner, jnp.clip(0.5 + core(d_in, 0, 0), 0.0, 1.0)), inner
        )
        sent = jnp.where(edge, jnp.clip(0.5 - d_out, 0.0, 1.0), 0.0)
        outer = jnp.maximum(outer, core(sent, -di, -dj))  # p's estimate goes to q = p + (di, dj)
    return jnp.where(covered, inner, outer)


def rasterize(
    vertices: Float[Array, "V 3"],
    triangles: Int[Array, "F 3"],
    height: int,
    width: int,
    *,
    cull_backfaces: bool = False,
    window: int = DEFAULT_WINDOW,
    capacity: int | None = None,
) -> Fragments:
    """Rasterise a triangle mesh with a z-buffer (nearest = smallest ``z``).

    Args:
        vertices: ``(x, y, z)`` in pixels, pixel-centre convention, ``y`` down, smaller ``z`` nearer.
        triangles: vertex indices; any size, any orientation (see ``cull_backfaces``).
        height, width: static image size.
        cull_backfaces: static; drop triangles with positive signed area in pixel coordinates
            (clockwise on screen = facing away for our counter-clockwise, camera-facing template).
        window: static side of the pixel windows triangles are processed in (tuning only).
        capacity: static windows per round (tuning only; default ``default_capacity``). Results never
            depend on it: more windows than this only take more rounds.

    Returns:
        ``Fragments``; ties in depth go to the smaller triangle id. jit/vmap-able (vmap over vertices).
    """
    num_tri = triangles.shape[0]
    if capacity is None:
        capacity = default_capacity(num_tri, height, width, window)
    if num_tri == 0:
        ids = jnp.full((height * width,), _NO_TRIANGLE, jnp.int32)
    else:
        ids = _raster_ids(
            jax.lax.stop_gradient(vertices), triangles, height, width, window, capacity, cull_backfaces
        )
    ids = ids.reshape(height, width)
    covered = ids != _NO_TRIANGLE
    tri_id = jnp.where(covered, ids, -1)
    if num_tri == 0:
        vid = jnp.zeros((height, width, 3), jnp.int32)
    else:
        vid = jnp.where(covered[..., None], triangles[jnp.maximum(tri_id, 0)], 0)

    # per-pixel attributes from the winning triangle (differentiable in the vertices)
    cy, cx = jnp.meshgrid(
        jnp.arange(height, dtype=vertices.dtype) + 0.5,
        jnp.arange(width, dtype=vertices.dtype) + 0.5,
        indexing="ij",
    )
    # one row gather per pixel from a per-triangle table (cheaper on CPU than nine scalar gathers)
    rows = (
        vertices[triangles].reshape(num_tri, 9)[jnp.maximum(tri_id, 0)]
        if num_tri
        else jnp.zeros((height, width, 9))
    )
    vx, vy, vz = ([rows[..., 3 * k + c] for k in range(3)] for c in range(3))
    e, d = [], []
    for i in range(3):
        a, b = (i + 1) % 3, (i + 2) % 3
        d.append((vx[b] - vx[a], vy[b] - vy[a]))
        e.append(_cross(d[i][0], d[i][1], cx - vx[a], cy - vy[a]))
    twice_area = e[0] + e[1] + e[2]
    ok = covered & (twice_area != 0)
    inv = 1.0 / jnp.where(ok, twice_area, 1.0)
    bary = [jnp.maximum(ei * inv, 0.0) for ei in e]
    bsum = bary[0] + bary[1] + bary[2]
    bsum = jnp.where(ok & (bsum > 0), bsum, 1.0)
    bary = [jnp.where(ok, bi / bsum, 0.0) for bi in bary]
    depth = jnp.where(covered, bary[0] * vz[0] + bary[1] * vz[1] + bary[2] * vz[2], jnp.inf)
    grad = [(jnp.where(ok, -dy * inv, 0.0), jnp.where(ok, dx * inv, 0.0)) for dx, dy in d]
    coverage = _coverage(covered, bary, grad)
    bary = jnp.stack(bary, axis=-1)
    return Fragments(triangle_id=tri_id, barycentric=bary, depth=depth, coverage=coverage, vertex_ids=vid)


def interpolate(fragments: Fragments, vertex_attributes: Float[Array, "V C"]) -> Float[Array, "H W C"]:
    """Barycentric interpolation of per-vertex attributes at each pixel centre (0 where uncovered).

    Computed as :math:`a_0 + b_1 (a_1 - a_0) + b_2 (a_2 - a_0)`, which stays accurate for large
    attribute values (pixel positions) even though the barycentrics sum to 1 only up to rounding.
    """
    # one gather per corner with an (H, W) index array: a single gather with the (H, W, 3) ids is ~30x
    # slower on XLA:CPU (10 ms instead of 0.3 ms for 2 channels at 512 x 512)
    a0, a1, a2 = (vertex_attributes[fragments.vertex_ids[..., k]] for k in range(3))
    b = fragments.barycentric
    out = a0 + b[..., 1:2] * (a1 - a0) + b[..., 2:3] * (a2 - a0)
    return jnp.where(fragments.mask[..., None], out, 0.0)


def sample_bilinear(image: Float[Array, "H W C"], xy: Float[Array, "... 2"]) -> Float[Array, "... C"]:
    """Bilinear lookup at continuous pixel positions ``(x, y)`` (pixel-centre convention, clamp to edge).

    Pixel ``(i, j)`` holds the value at ``(j + 0.5, i + 0.5)``; positions beyond the outer centres take
    the border value. Differentiable in ``xy`` (piecewise linear) and in ``image``.
    """
    h, w = image.shape[:2]
    u = jnp.clip(xy[..., 0] - 0.5, 0.0, w - 1.0)
    v = jnp.clip(xy[..., 1] - 0.5, 0.0, h - 1.0)
    j0 = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, max(w - 2, 0))
    i0 = jnp.clip(jnp.floor(v).astype(jnp.int32), 0, max(h - 2, 0))
    j1 = jnp.minimum(j0 + 1, w - 1)
    i1 = jnp.minimum(i0 + 1, h - 1)
    fx = (u - j0.astype(u.dtype))[..., None]
    fy = (v - i0.astype(v.dtype))[..., None]
    top = image[i0, j0] * (1.0 - fx) + image[i0, j1] * fx
    bottom = image[i1, j0] * (1.0 - fx) + image[i1, j1] * fx
    return top * (1.0 - fy) + bottom * fy


def transfer_texture(
    image: Image,
    source_vertices_2d: Vertices2D,
    target_vertices: Vertices,
    triangles: Triangles,
    *,
    cull_backfaces: bool = False,
) -> tuple[Image, Fragments]:
    """Render the mesh at ``target_vertices`` textured with ``image`` as seen at ``source_vertices_2d``.

    Each covered pixel samples the photo (bilinearly) where its surface point was before the
    deformation: :math:`I'(p) = I\\big(\\sum_i b_i(p)\\, s_{t(p), i}\\big)` with ``b`` the target
    fragments' barycentrics and ``s`` the source positions. With ``source == target[:, :2]`` the covered
    pixels reproduce the photo. Uncovered pixels are 0 (composite with ``fragments.coverage``). The
    output size is the image's.

    Returns:
        ``(render, fragments)`` of the target mesh.
    """
    h, w = image.shape[:2]
    frags = rasterize(target_vertices, triangles, h, w, cull_backfaces=cull_backfaces)
    src = interpolate(frags, source_vertices_2d)
    render = jnp.where(frags.mask[..., None], sample_bilinear(image, src), 0.0)
    return render, frags


__all__ = [
    "Fragments",
    "rasterize",
    "interpolate",
    "sample_bilinear",
    "transfer_texture",
    "default_capacity",
    "DEFAULT_WINDOW",
]
