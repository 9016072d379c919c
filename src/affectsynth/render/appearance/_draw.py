"""Small drawing helpers shared by the appearance cues (pure jnp, per pixel)."""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._smooth import smoothstep as _smoothstep
from ..._types import Image, Triangles
from .context import AU_NAMES, AppearanceContext

# --------------------------------------------------------------------------------------------------------
# small pure helpers


def _window_size(h: int, w: int, fraction: float) -> tuple[int, int]:
    side = max(64, int(np.ceil(fraction * min(h, w))))
    return min(h, side), min(w, side)


def _window_origin(h: int, w: int, centre: Float[Array, "2"], size: tuple[int, int]):
    top = jnp.clip(jnp.round(centre[1] - size[0] / 2), 0, h - size[0]).astype(jnp.int32)
    left = jnp.clip(jnp.round(centre[0] - size[1] / 2), 0, w - size[1]).astype(jnp.int32)
    return top, left


def _windowed(layer, image: Image, centre: Float[Array, "2"], size: tuple[int, int]):
    """Run ``layer(sub_image, sub_xy) -> (sub_image, extra)`` on a static-size window around ``centre``."""
    h, w = image.shape[:2]
    top, left = _window_origin(h, w, centre, size)
    sub = jax.lax.dynamic_slice(image, (top, left, 0), (size[0], size[1], image.shape[2]))
    xy = _pixel_grid(*size) + jnp.stack([left, top]).astype(image.dtype)[None, None, :]
    new, extra = layer(sub, xy)
    return jax.lax.dynamic_update_slice(image, new.astype(image.dtype), (top, left, 0)), extra


def _paste(
    canvas: Float[Array, "H W *C"],
    sub: Float[Array, "h w *C"],
    centre: Float[Array, "2"],
    size: tuple[int, int],
):
    """``sub`` written over ``canvas`` at ``_windowed``'s window around ``centre`` (any trailing channels)."""
    top, left = _window_origin(canvas.shape[0], canvas.shape[1], centre, size)
    start = (top, left) + (0,) * (canvas.ndim - 2)
    return jax.lax.dynamic_update_slice(canvas, sub.astype(canvas.dtype), start)


def _pixel_grid(h: int, w: int) -> Float[Array, "H W 2"]:
    ys, xs = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32) + 0.5, jnp.arange(w, dtype=jnp.float32) + 0.5, indexing="ij"
    )
    return jnp.stack([xs, ys], axis=-1)


def _luminance(rgb: Float[Array, "... 3"]) -> Float[Array, "..."]:
    return rgb @ jnp.array([0.2126, 0.7152, 0.0722], rgb.dtype)


def _band(x, lo, hi, soft):
    """Smooth plateau: 1 on [lo, hi], 0 beyond ``soft`` outside it."""
    return _smoothstep((x - lo + soft) / soft) * _smoothstep((hi + soft - x) / soft)


def _gauss(d, sigma):
    """A Gaussian-like bump of scale ``sigma`` with compact support (3 sigma): (1 - u^2)^4, u = d / 3 sigma.

    Polynomial rather than ``exp``: it is evaluated dozens of times per pixel, and it is exactly zero away
    from its pattern, so a cue cannot leak outside its region."""
    # times a reciprocal: sigma is usually a traced scalar, and a per-pixel division is several times
    # slower than a multiply on CPU (XLA folds it away only for constants)
    u2 = jnp.minimum(jnp.square(d * (1.0 / (3.0 * sigma))), 1.0)
    return jnp.square(jnp.square(1.0 - u2))


def _segment_distance(px, py, a, b):
    """Squared distance from points (px, py) to the segment [a, b] (elementwise; a, b f32[2])."""
    abx, aby = b[0] - a[0], b[1] - a[1]
    apx, apy = px - a[0], py - a[1]
    len2 = abx * abx + aby * aby
    inv = 1.0 / jnp.where(len2 > 1e-12, len2, 1.0)  # a scalar: one division per segment, not per pixel
    t = jnp.clip((apx * abx + apy * aby) * inv, 0.0, 1.0)
    dx, dy = apx - t * abx, apy - t * aby
    return dx * dx + dy * dy


def _polyline_distance(p: Float[Array, "... 2"], pts: Float[Array, "N 2"]) -> Float[Array, "..."]:
    """Distance to an open polyline.

    A ``lax.fori_loop`` over the segments (each step one fused pass over the points), not a Python loop:
    unrolled, the segments' ops made up half of the crops' program's instructions (the eyes' and the
    mouth's contours: six polylines and five polygons per face) and much of its compile time."""
    px, py = p[..., 0], p[..., 1]

    def step(k, d2):
        return jnp.minimum(d2, _segment_distance(px, py, pts[k], pts[k + 1]))

    d2 = jax.lax.fori_loop(1, pts.shape[0] - 1, step, _segment_distance(px, py, pts[0], pts[1]))
    return jnp.sqrt(d2 + 1e-12)


def _polygon_sdf(p: Float[Array, "... 2"], poly: Float[Array, "N 2"]) -> Float[Array, "..."]:
    """Signed distance to a closed polygon, negative inside (even-odd rule); a loop over the edges as in
    ``_polyline_distance``."""
    px, py = p[..., 0], p[..., 1]
    nxt = jnp.roll(poly, -1, axis=0)

    def step(k, carry):
        d2, inside = carry
        a, b = poly[k], nxt[k]
        d2 = jnp.minimum(d2, _segment_distance(px, py, a, b))
        dy = b[1] - a[1]
        slope = (b[0] - a[0]) / jnp.where(jnp.abs(dy) > 1e-12, dy, 1.0)  # scalar per edge
        x_at = a[0] + slope * (py - a[1])
        return d2, inside ^ (((a[1] > py) != (b[1] > py)) & (px < x_at))

    start = (jnp.full(px.shape, jnp.inf, px.dtype), jnp.zeros(px.shape, bool))
    d2, inside = jax.lax.fori_loop(0, poly.shape[0], step, start)
    dist = jnp.sqrt(d2 + 1e-12)
    return jnp.where(inside, -dist, dist)


def _polygon_area(poly: Float[Array, "N 2"]) -> Float[Array, ""]:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * jnp.abs(jnp.sum(x * jnp.roll(y, -1) - jnp.roll(x, -1) * y))


def _face_normals(vertices: Float[Array, "V 3"], triangles: Triangles) -> Float[Array, "F 3"]:
    """Unnormalised face normals in the image frame (y down, z away: a front face points to -z), twice each
    triangle's area long; their z is twice the triangle's signed area in the image plane."""
    p = vertices[triangles]
    return jnp.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])


def _vertex_normals(vertices: Float[Array, "V 3"], triangles: Triangles) -> Float[Array, "V 3"]:
    """Area-weighted unit vertex normals, expressed camera-style (x right, y up, z towards the camera)."""
    fn = _face_normals(vertices, triangles)
    vn = jnp.zeros_like(vertices).at[triangles.reshape(-1)].add(jnp.repeat(fn, 3, axis=0))
    vn = vn * jnp.array([[1.0, -1.0, -1.0]], vertices.dtype)
    norm = jnp.sqrt(jnp.sum(vn * vn, axis=-1, keepdims=True))
    safe = jnp.where(norm > 1e-12, norm, 1.0)
    return jnp.where(norm > 1e-12, vn / safe, jnp.array([[0.0, 0.0, 1.0]], vertices.dtype))


def _sh9(n: Float[Array, "... 3"]) -> Float[Array, "... 9"]:
    """Real spherical harmonics up to order 2 (unnormalised; the lighting absorbs the constants)."""
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    one = jnp.ones_like(x)
    return jnp.stack([one, y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], axis=-1)


def _au(ctx: AppearanceContext, name: str) -> Float[Array, ""]:
    return jnp.maximum(ctx.au[AU_NAMES.index(name)], 0.0)
