"""Expression appearance: shading from the deformed surface, AU-driven wrinkles, the mouth interior, eyes.

The geometry stage moves the photo's own texture onto the deformed face; this stage adds what geometry
alone cannot: the light a fold catches (a shading *ratio* under a lighting estimate taken from the photo),
the fine lines an Action Unit draws (procedural furrows in log-luminance, so they inherit the photo's own
lighting and skin tone), what a parted mouth shows (a lit cavity, teeth and tongue coloured from this
photo) and eyelids that slide over a static eye instead of squeezing the iris.

Everything is a pure function of arrays (jit, vmap); which cue runs is static (``AppearanceOptions``).
Every cue is exactly the identity when the target changes nothing: the shading ratio is ``x / x``, wrinkle
amplitudes are proportional to the AU intensities, the mouth interior is weighted by the *added* opening
area and the eye layer samples the photo where the render does.

Wrinkle patterns live on the surface: each dense render-mesh vertex carries its position on the canonical
template (millimetres, ``dense_template``), interpolated per pixel, so the furrows are placed relative to the
fitted landmarks, follow the skin and scale with the face.
"""

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from . import topology as topo
from ._types import Image, Landmarks, Triangles

AU_NAMES: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU12", "AU14",
    "AU15", "AU16", "AU17", "AU20", "AU23", "AU24", "AU25", "AU26", "AU27", "AU43",
)  # fmt: skip
"""Order of ``AppearanceContext.au`` (the same as ``expressions.AU_NAMES``; a test checks they agree)."""

# triangle groups of the render mesh (the pipeline's numbering)
SKIN, MOUTH, EYE, SKIRT = 0, 1, 2, 3

SHADING_CLIP = (0.6, 1.4)
"""Range of the shading ratio shade(n_deformed) / shade(n_neutral)."""


@dataclasses.dataclass(frozen=True)
class AppearanceOptions:
    """Static switches of ``apply_appearance`` (hashable; changing one recompiles).

    Attributes:
        shading: relight the skin by the change of surface orientation under the photo's own lighting.
        wrinkles: AU-driven furrows (forehead, glabella, crow's feet, nose, nasolabial fold, chin).
        mouth_interior: cavity, teeth and tongue where the target parts the lips wider than the photo.
        eyes: keep the eye content static under moving lids (no stretched iris) and close lids with skin.
        strength: scale of the shading and wrinkle cues (1 = calibrated; 0 turns them off smoothly).
        eye_window / mouth_window: side of the square window (fraction of the crop's shorter side, at least
            64 px) in which each eye / the mouth is processed, for speed. The pipeline's crop is about 4.2
            inter-pupil distances wide, so these hold an eye and a wide-open mouth with margin; 1.0 processes
            the whole crop.
    """

    shading: bool = True
    wrinkles: bool = True
    mouth_interior: bool = True
    eyes: bool = True
    strength: float = 1.0
    eye_window: float = 0.2
    mouth_window: float = 0.35


class AppearanceContext(eqx.Module):
    """Everything ``apply_appearance`` needs about one face (all in the crop's pixels unless said).

    Attributes:
        src_vertices: f32[Vd, 3] dense render-mesh vertices on the photo (x, y pixels, y down, z away).
        dst_vertices: f32[Vd, 3] the same vertices deformed (what was rasterised).
        triangles: i32[Fd, 3] dense render-mesh triangles.
        groups: i32[Fd] SKIN=0, MOUTH=1, EYE=2, SKIRT=3 per dense triangle.
        surface: f32[Vd, 2] each dense vertex's (x, y) on the canonical template, mm (``dense_template``).
        landmarks: f32[478, 3] FaceMesh landmarks of the photo.
        target_landmarks: f32[478, 3] the deformed landmarks.
        au: f32[K] AU intensities of the applied deformation in ``AU_NAMES`` order (0 none, 1 apex;
            negative values, e.g. from neutralising an expressive photo, count as 0).
        interocular: f32[] pupil distance of the photo's face, pixels.
    """

    src_vertices: Float[Array, "Vd 3"]
    dst_vertices: Float[Array, "Vd 3"]
    triangles: Int[Array, "Fd 3"]
    groups: Int[Array, " Fd"]
    surface: Float[Array, "Vd 2"]
    landmarks: Landmarks
    target_landmarks: Landmarks
    au: Float[Array, " K"]
    interocular: Float[Array, ""]


def dense_template(
    weights: Float[Array, "Vd Vb"], skirt_ring: Int[Array, " R"], skirt: float
) -> Float[Array, "Vd 2"]:
    """Canonical template (x, y) mm of every dense render-mesh vertex.

    Args:
        weights: f32[Vd, 478 + R] subdivision weights of the render mesh (landmarks, then the skirt ring).
        skirt_ring: i32[R] landmark ids the skirt vertices were pushed out from (in skirt order).
        skirt: how far the skirt was pushed out, as a fraction of the distance from the ring's centre.
    """
    template = jnp.asarray(topo.face_topology().template[:, :2])
    ring = template[jnp.asarray(skirt_ring)]
    centre = jnp.mean(ring, axis=0, keepdims=True)
    base = jnp.concatenate([template, ring + (ring - centre) * skirt])
    return jnp.asarray(weights, jnp.float32) @ base


@functools.cache
def action_unit_basis() -> np.ndarray:
    """The AU displacement fields f32[K, 478, 3] (mm, intensity 1) in ``AU_NAMES`` order (host constant)."""
    from .expressions import expression_basis  # noqa: PLC0415  (heavy module, only needed here)

    basis, _, names = expression_basis()
    if tuple(names) != AU_NAMES:
        raise ValueError(f"expression basis AUs {names} differ from appearance.AU_NAMES")
    return np.asarray(basis, np.float32)


def project_action_units(
    deformation: Float[Array, "V 3"], basis: Float[Array, "K V 3"], ridge: float = 1e-2
) -> Float[Array, " K"]:
    r"""AU intensities that best explain a canonical deformation (mm).

    Ridge least squares :math:`\min_a \|\sum_k a_k B_k - d\|^2 + \rho \bar\sigma^2 \|a\|^2`, with
    :math:`\bar\sigma^2` the mean squared norm of the fields (so ``ridge`` is unit-free). Negative values
    are kept (the cues ignore them).
    """
    b = basis.reshape(basis.shape[0], -1)
    gram = b @ b.T
    reg = ridge * jnp.trace(gram) / b.shape[0]
    return jnp.linalg.solve(gram + reg * jnp.eye(b.shape[0], dtype=b.dtype), b @ deformation.reshape(-1))


# --------------------------------------------------------------------------------------------------------
# small pure helpers


def _interp(frags, triangles: Triangles, attrs: Float[Array, "V C"]) -> Float[Array, "H W C"]:
    """Barycentric interpolation of per-vertex attributes (0 where no triangle)."""
    ids = getattr(frags, "vertex_ids", None)  # raster.Fragments carries them: saves a gather
    ids = triangles[jnp.maximum(frags.triangle_id, 0)] if ids is None else ids
    # per corner, (H, W) indices: XLA:CPU gathers with the (H, W, 3) ids at once ~30x slower
    out = sum(attrs[ids[..., k]] * frags.barycentric[..., k : k + 1] for k in range(3))
    return jnp.where((frags.triangle_id >= 0)[..., None], out, 0.0)


def _bilinear(image: Float[Array, "H W C"], xy: Float[Array, "... 2"]) -> Float[Array, "... C"]:
    """Bilinear sample at pixel coordinates (centre of pixel (i, j) at (j + .5, i + .5)), clamp to edge."""
    h, w = image.shape[:2]
    x = jnp.clip(xy[..., 0] - 0.5, 0.0, w - 1.0)
    y = jnp.clip(xy[..., 1] - 0.5, 0.0, h - 1.0)
    x0 = jnp.clip(jnp.floor(x), 0, w - 2).astype(jnp.int32) if w > 1 else jnp.zeros_like(x, jnp.int32)
    y0 = jnp.clip(jnp.floor(y), 0, h - 2).astype(jnp.int32) if h > 1 else jnp.zeros_like(y, jnp.int32)
    fx = (x - x0)[..., None]
    fy = (y - y0)[..., None]
    x1 = jnp.minimum(x0 + 1, w - 1)
    y1 = jnp.minimum(y0 + 1, h - 1)
    top = image[y0, x0] * (1 - fx) + image[y0, x1] * fx
    bot = image[y1, x0] * (1 - fx) + image[y1, x1] * fx
    return top * (1 - fy) + bot * fy


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
    canvas: Float[Array, "H W"], sub: Float[Array, "h w"], centre: Float[Array, "2"], size: tuple[int, int]
):
    top, left = _window_origin(canvas.shape[0], canvas.shape[1], centre, size)
    return jax.lax.dynamic_update_slice(canvas, sub.astype(canvas.dtype), (top, left))


def _pixel_grid(h: int, w: int) -> Float[Array, "H W 2"]:
    ys, xs = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32) + 0.5, jnp.arange(w, dtype=jnp.float32) + 0.5, indexing="ij"
    )
    return jnp.stack([xs, ys], axis=-1)


def _luminance(rgb: Float[Array, "... 3"]) -> Float[Array, "..."]:
    return rgb @ jnp.array([0.2126, 0.7152, 0.0722], rgb.dtype)


def _smoothstep(x):
    x = jnp.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


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
    """Distance from points (px, py) to the segment [a, b] (elementwise; a, b f32[2])."""
    abx, aby = b[0] - a[0], b[1] - a[1]
    apx, apy = px - a[0], py - a[1]
    len2 = abx * abx + aby * aby
    inv = 1.0 / jnp.where(len2 > 1e-12, len2, 1.0)  # a scalar: one division per segment, not per pixel
    t = jnp.clip((apx * abx + apy * aby) * inv, 0.0, 1.0)
    dx, dy = apx - t * abx, apy - t * aby
    return dx * dx + dy * dy


def _polyline_distance(p: Float[Array, "... 2"], pts: Float[Array, "N 2"]) -> Float[Array, "..."]:
    """Distance to an open polyline (a short static loop over segments: fuses into one pass per pixel)."""
    px, py = p[..., 0], p[..., 1]
    d2 = _segment_distance(px, py, pts[0], pts[1])
    for k in range(1, pts.shape[0] - 1):
        d2 = jnp.minimum(d2, _segment_distance(px, py, pts[k], pts[k + 1]))
    return jnp.sqrt(d2 + 1e-12)


def _polygon_sdf(p: Float[Array, "... 2"], poly: Float[Array, "N 2"]) -> Float[Array, "..."]:
    """Signed distance to a closed polygon, negative inside (even-odd rule)."""
    px, py = p[..., 0], p[..., 1]
    n = poly.shape[0]
    d2 = jnp.full(px.shape, jnp.inf, px.dtype)
    inside = jnp.zeros(px.shape, bool)
    for k in range(n):
        a, b = poly[k], poly[(k + 1) % n]
        d2 = jnp.minimum(d2, _segment_distance(px, py, a, b))
        dy = b[1] - a[1]
        slope = (b[0] - a[0]) / jnp.where(jnp.abs(dy) > 1e-12, dy, 1.0)  # scalar per edge
        x_at = a[0] + slope * (py - a[1])
        inside = inside ^ (((a[1] > py) != (b[1] > py)) & (px < x_at))
    dist = jnp.sqrt(d2 + 1e-12)
    return jnp.where(inside, -dist, dist)


def _polygon_area(poly: Float[Array, "N 2"]) -> Float[Array, ""]:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * jnp.abs(jnp.sum(x * jnp.roll(y, -1) - jnp.roll(x, -1) * y))


def _vertex_normals(vertices: Float[Array, "V 3"], triangles: Triangles) -> Float[Array, "V 3"]:
    """Area-weighted unit vertex normals, expressed camera-style (x right, y up, z towards the camera)."""
    p = vertices[triangles]
    fn = jnp.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])  # image frame (y down, z away): points to -z
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


# --------------------------------------------------------------------------------------------------------
# 1. shading


def fit_sh_lighting(
    luminance: Float[Array, " N"],
    normals: Float[Array, "N 3"],
    weights: Float[Array, " N"],
    ridge: float = 1e-3,
) -> Float[Array, "9"]:
    r"""Second-order spherical-harmonic lighting from a photo's luminance and surface normals.

    Weighted ridge least squares (albedo folded into the coefficients):
    :math:`\min_c \sum_i w_i (Y(n_i)^\top c - L_i)^2 + \rho \sum_i w_i \|c_{1:}\|^2`.
    """
    a = _sh9(normals)
    aw = a * weights[:, None]
    total = jnp.sum(weights) + 1e-6
    reg = ridge * total * jnp.concatenate([jnp.array([1e-3]), jnp.ones(8)]).astype(a.dtype) + 1e-9
    return jnp.linalg.solve(aw.T @ a + jnp.diag(reg), aw.T @ luminance)


def shading_log_ratio(patch: Image, ctx: AppearanceContext) -> tuple[Float[Array, " Vd"], Float[Array, "9"]]:
    r"""Per-vertex log shading ratio :math:`\log \mathrm{clip}(s(n_{def}) / s(n_{neu}))`, and the lighting.

    Lighting :math:`s(n) = Y(n)^\top c` is fitted to the photo's luminance at the skin vertices against their
    neutral normals (``fit_sh_lighting``). Per vertex, then interpolated per pixel (Gouraud): smooth, no
    facets, and cheap (the fit sees a few thousand samples, not every pixel). Exactly 0 at a vertex whose
    1-ring did not move. Vertices of the hole fills and the skirt get 0.
    """
    n_src = _vertex_normals(ctx.src_vertices, ctx.triangles)
    n_dst = _vertex_normals(ctx.dst_vertices, ctx.triangles)
    num = ctx.src_vertices.shape[0]
    other = jnp.zeros(num, bool).at[ctx.triangles.reshape(-1)].max(jnp.repeat(ctx.groups != SKIN, 3))
    lum = _luminance(_bilinear(patch, ctx.src_vertices[:, :2]))
    w = (~other & (lum > 0.06) & (lum < 0.97) & (n_src[:, 2] > 0.2)).astype(patch.dtype)
    coeffs = fit_sh_lighting(lum, n_src, w)
    floor = 0.05 * (jnp.sum(lum * w) / (jnp.sum(w) + 1e-6)) + 1e-4
    s_src = jnp.maximum(_sh9(n_src) @ coeffs, floor)
    s_dst = jnp.maximum(_sh9(n_dst) @ coeffs, floor)
    log_ratio = jnp.log(jnp.clip(s_dst / s_src, *SHADING_CLIP))
    return jnp.where(other, 0.0, log_ratio), coeffs


# --------------------------------------------------------------------------------------------------------
# 2. wrinkles (procedural, in template millimetres)

_T_CROW = np.array([44.2, 28.9], np.float32)  # outer eye corner (landmark 263; mirrored for 33)
_T_NASOLABIAL = np.array([[23.5, -1.0], [33.0, -14.0], [33.0, -36.0]], np.float32)  # quadratic Bezier


def _bezier(ctrl: np.ndarray, n: int = 13) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
    return ((1 - t) ** 2 * ctrl[0] + 2 * (1 - t) * t * ctrl[1] + t**2 * ctrl[2]).astype(np.float32)


def _lower_lid_template() -> np.ndarray:
    t = topo.face_topology()
    pts = t.template[t.region("left_eye_lower"), :2]
    return pts[np.argsort(pts[:, 0])].astype(np.float32)


def _poly(coef: np.ndarray, x):
    """Evaluate a polynomial with constant coefficients (lowest order first) by Horner's rule."""
    out = jnp.full_like(x, float(coef[-1]))
    for c in coef[-2::-1]:
        out = out * x + float(c)
    return out


def _fit_cos_turns() -> np.ndarray:
    """Coefficients (in powers of t^2) of an even polynomial for cos(2 pi t) on |t| <= 1/2."""
    t = np.cos(np.linspace(0.0, np.pi, 201)) * 0.5  # Chebyshev-spaced nodes
    return np.polynomial.polynomial.polyfit(t * t, np.cos(2 * np.pi * t), 8)


_COS_TURNS = _fit_cos_turns()


def _cos(x):
    """cos(x) to ~2e-5 for |x| < 300 (float32 range reduction) by a polynomial: several times faster than
    ``jnp.cos`` on XLA:CPU, where the wrinkle textures evaluate it a dozen times per pixel."""
    t = x * (0.5 / np.pi)
    t = t - jnp.round(t)
    return _poly(_COS_TURNS, t * t)


def _furrow(d, sigma_mm, mm_per_px):
    """A furrow across signed distance d (mm, + = upwards/outwards): dark line, faint highlight above it.

    The width is widened to at least ~0.6 px (no aliasing on small faces) keeping the integrated darkness.
    """
    sigma = jnp.sqrt(sigma_mm**2 + jnp.square(0.6 * mm_per_px))
    keep = sigma_mm / sigma
    return keep * (-_gauss(d, sigma) + 0.3 * _gauss(d - 2.2 * sigma, 1.3 * sigma))


WRINKLE_GROUPS = ("upper", "eyes", "nasolabial", "chin")
"""Wrinkle patterns by face region: forehead, glabella and nose; crow's feet and lower lids; nasolabial
folds; chin and marionette lines."""


def wrinkle_log_delta(
    uv: Float[Array, "H W 2"],
    au: Float[Array, " K"],
    mm_per_px: Float[Array, ""],
    groups: tuple[str, ...] = WRINKLE_GROUPS,
) -> Float[Array, "H W"]:
    """Additive log-luminance of the AU wrinkle patterns at template coordinates ``uv`` (mm).

    Symmetric patterns are written for the subject's left half (x > 0) and mirrored with |x|. Each pattern's
    amplitude is proportional to its AU intensity, so all vanish at zero intensity. ``groups`` (static)
    selects the regions (``WRINKLE_GROUPS``) to draw.
    """
    unknown = set(groups) - set(WRINKLE_GROUPS)
    if unknown:
        raise ValueError(f"unknown wrinkle groups {sorted(unknown)}; expected some of {WRINKLE_GROUPS}")
    x, y = uv[..., 0], uv[..., 1]
    ax = jnp.abs(x)

    def a(name):
        return jnp.maximum(au[AU_NAMES.index(name)], 0.0)

    draw = {
        "upper": _upper_wrinkles,
        "eyes": _eye_wrinkles,
        "nasolabial": _nasolabial_wrinkles,
        "chin": _chin_wrinkles,
    }
    delta = jnp.zeros_like(x)
    for g in groups:
        delta = delta + draw[g](x, y, ax, a, mm_per_px)
    return delta


def _upper_wrinkles(x, y, ax, a, mm_per_px):
    delta = jnp.zeros_like(x)
    # forehead (AU1 centre, AU2 sides): three gently arched, slightly wavy horizontal lines
    centre_w = jnp.exp(-jnp.square(x / 20.0))
    fore_amp = 0.09 * (a("AU1") * centre_w + a("AU2") * (1.0 - 0.7 * centre_w))
    for k, yk in enumerate((56.5, 62.5, 68.5)):
        curve = yk - 0.0035 * x * x + 0.7 * _cos(x / (9.0 + 2.0 * k)) - 0.4 * k
        broken = 0.75 + 0.25 * _cos(x / (6.5 + 1.3 * k))
        delta += fore_amp * broken * _band(ax, 0.0, 36.0 - 3.0 * k, 9.0) * _furrow(y - curve, 0.75, mm_per_px)
    # glabella (AU4): two short vertical furrows between the inner brow heads, a root line with AU9
    gx = ax - (5.5 + 0.12 * (y - 38.0))
    delta += 0.13 * a("AU4") * _band(y, 37.0, 48.0, 4.0) * _furrow(gx, 0.8, mm_per_px)
    root = 0.5 * a("AU4") + a("AU9")
    delta += 0.08 * root * _band(ax, 0.0, 6.0, 4.0) * _furrow(y - 34.0, 0.9, mm_per_px)
    # nose (AU9): oblique "bunny lines" on the sides of the nasal bridge
    along = (ax - 9.0) * 0.6 + (y - 26.0) * 0.8
    across = -(ax - 9.0) * 0.8 + (y - 26.0) * 0.6
    for k in range(3):
        delta += (
            0.10 * a("AU9") * _band(along, -4.0, 4.0, 2.5) * _furrow(across - 2.6 * (k - 1), 0.6, mm_per_px)
        )
    return delta


def _eye_wrinkles(x, y, ax, a, mm_per_px):
    delta = jnp.zeros_like(x)
    # crow's feet (AU6): lines fanning out from the outer eye corner
    cx, cy = ax - _T_CROW[0], y - _T_CROW[1]
    r = jnp.sqrt(cx * cx + cy * cy + 1e-6)
    crow = 0.07 * a("AU6") * _band(r, 4.0, 13.0, 3.5) * (cx > 0)
    for k, th in enumerate(np.deg2rad([-32.0, -12.0, 8.0, 27.0])):
        delta += crow * (0.8 + 0.2 * (k % 2)) * _furrow(cy * np.cos(th) - cx * np.sin(th), 0.55, mm_per_px)
    # lower lid (AU6): bulge just under the lid, infraorbital crease below it
    lid = _lower_lid_template()
    lid_y = np.polynomial.Polynomial.fit(lid[:, 0], lid[:, 1], 4).convert().coef
    below = _poly(lid_y, jnp.clip(ax, lid[0, 0], lid[-1, 0])) - y  # mm under the lower lid
    lid_w = a("AU6") * _band(ax, 18.0, 42.0, 4.0)
    delta += lid_w * (0.05 * _gauss(below - 2.5, 1.4) - 0.07 * _gauss(below - 6.0, 1.0))
    return delta


def _nasolabial_wrinkles(x, y, ax, a, mm_per_px):
    delta = jnp.zeros_like(x)
    # nasolabial fold (AU10, AU12, some AU9/AU6): crease from the nose wing past the mouth corner; the curve
    # is monotone in y, so its horizontal offset (times the cosine of its slope) is the signed distance
    naso = _bezier(_T_NASOLABIAL, 33)
    fit = np.polynomial.Polynomial.fit(naso[:, 1], naso[:, 0], 3).convert()  # x(y), cubic (no searchsorted)
    yc = jnp.clip(y, naso[-1, 1], naso[0, 1])
    fold_x = _poly(fit.coef, yc)
    slope = _poly(fit.deriv().coef, yc)
    sd = (ax - fold_x) * jax.lax.rsqrt(1.0 + slope * slope)  # + lateral (cheek side)
    pos = (naso[0, 1] - y) / (naso[0, 1] - naso[-1, 1])
    fade = _smoothstep(pos / 0.15) * _smoothstep((1.0 - pos) / 0.3)
    n_amp = jnp.minimum(a("AU12") + a("AU10") + 0.5 * a("AU9") + 0.3 * a("AU6"), 1.6)
    delta += n_amp * fade * (0.10 * _furrow(-sd, 1.3, mm_per_px) + 0.04 * _gauss(sd - 4.5, 3.0))
    return delta


def _chin_wrinkles(x, y, ax, a, mm_per_px):
    delta = jnp.zeros_like(x)
    # chin (AU17): mentolabial crease and "orange peel" dimpling; AU15: marionette lines
    delta += (
        0.10 * a("AU17") * _band(ax, 0.0, 11.0, 5.0) * _furrow(y - (-44.5 + 0.02 * x * x), 1.0, mm_per_px)
    )
    peel = (  # even in x: symmetric faces stay symmetric
        _cos(1.9 * x) * _cos(0.6 * y)
        + _cos(1.1 * x) * _cos(1.7 * y + 1.3)
        + _cos(0.4 * x) * _cos(2.1 * y + 2.1)
        + _cos(2.3 * x) * _cos(1.2 * y + 0.4)
    ) / 4.0
    delta += 0.07 * a("AU17") * _band(ax, 0.0, 12.0, 5.0) * _band(y, -66.0, -52.0, 5.0) * peel
    mx = ax - (25.0 - 0.12 * (-34.0 - y))
    delta += 0.09 * a("AU15") * _band(y, -54.0, -36.0, 4.0) * _furrow(-mx, 0.9, mm_per_px)
    return delta


WRINKLE_EXTENT = ((-66.0, 66.0), (-80.0, 82.0))
"""Template rectangle (x, y) in mm that holds every wrinkle pattern; they are 0 outside it."""

WRINKLE_TEXEL = 0.4
"""Side of a wrinkle-texture texel in mm (the thinnest furrow has sigma 0.55 mm)."""


def _texture_grid() -> np.ndarray:
    (x0, x1), (y0, y1) = WRINKLE_EXTENT
    xs = np.arange(x0, x1 + 1e-6, WRINKLE_TEXEL, dtype=np.float32)
    ys = np.arange(y0, y1 + 1e-6, WRINKLE_TEXEL, dtype=np.float32)
    return np.stack(np.meshgrid(xs, ys, indexing="xy"), axis=-1)  # (Ty, Tx, 2): row = y, column = x


def wrinkle_texture(au: Float[Array, " K"], mm_per_px: Float[Array, ""]) -> Float[Array, "Ty Tx"]:
    """``wrinkle_log_delta`` rasterised once per face on a template-space grid (``WRINKLE_EXTENT``,
    ``WRINKLE_TEXEL``), to be looked up per pixel by ``sample_wrinkle_texture``.

    Why a texture: evaluated per pixel, the patterns' thousand-odd operations end up in one XLA:CPU loop
    with the gathers of the template coordinates, which cannot be vectorised (10 ms at 512 px); on the
    fixed grid they vectorise and the lookup is four gathers (about 2 ms in all). Bilinear lookup of the
    0.4 mm texture: correlation 0.9998 with the per-pixel evaluation, largest difference 6% of the peak.
    """
    grid = jnp.asarray(_texture_grid())
    draw = [functools.partial(wrinkle_log_delta, grid, groups=(g,)) for g in WRINKLE_GROUPS]

    # group by group in a loop: the loop carries the texture in memory, which keeps XLA from fusing the
    # patterns into the lookup's gathers (an optimisation barrier does not survive on CPU)
    def add_group(i, texture):
        return texture + jax.lax.switch(i, draw, au, mm_per_px)

    return jax.lax.fori_loop(0, len(draw), add_group, jnp.zeros(grid.shape[:2], jnp.float32))


def sample_wrinkle_texture(texture: Float[Array, "Ty Tx"], uv: Float[Array, "H W 2"]) -> Float[Array, "H W"]:
    """Bilinear lookup of a ``wrinkle_texture`` at template coordinates ``uv`` (mm); 0 outside its extent."""
    (x0, x1), (y0, y1) = WRINKLE_EXTENT
    inside = (uv[..., 0] >= x0) & (uv[..., 0] <= x1) & (uv[..., 1] >= y0) & (uv[..., 1] <= y1)
    # texel (i, j) sits at template (x0 + j t, y0 + i t); _bilinear's pixel (i, j) at (j + .5, i + .5)
    xy = jnp.stack([uv[..., 0] - x0, uv[..., 1] - y0], axis=-1) * (1.0 / WRINKLE_TEXEL) + 0.5
    return jnp.where(inside, _bilinear(texture[..., None], xy)[..., 0], 0.0)


# --------------------------------------------------------------------------------------------------------
# 3. mouth interior


def mouth_interior(
    render: Image, patch: Image, ctx: AppearanceContext, xy: Float[Array, "H W 2"]
) -> tuple[Image, Float[Array, "H W"], Float[Array, ""]]:
    """Paint a lit cavity, upper (and for wide openings lower) teeth and a tongue hint into the new opening.

    Weighted by the fraction of the target's inner-lip area that is new, so an opening the photo already
    has keeps its own pixels and lips that close again give back exactly the photo's lips. Soft masks from
    distances to the inner lip contours; colours from this photo's lips and skin.

    Returns:
        (image, alpha f32[H, W] of the painted interior, added opening area in pixels).
    """
    t = topo.face_topology()
    hole = jnp.asarray(t.region("mouth_hole"))
    upper = jnp.asarray(t.region("lips_inner_upper"))
    lower = jnp.asarray(t.region("lips_inner_lower"))
    src = ctx.landmarks[:, :2]
    dst = ctx.target_landmarks[:, :2]
    s = ctx.interocular
    mm = s / topo.IPD_MM  # pixels per mm
    a_src = _polygon_area(src[hole])
    a_dst = _polygon_area(dst[hole])
    newness = _smoothstep(jnp.clip((a_dst - a_src) / jnp.maximum(a_dst, 1e-3), 0.0, 1.0) / 0.6)
    c0, c1 = dst[upper[0]], dst[upper[-1]]
    width = jnp.linalg.norm(c1 - c0) + 1e-3
    ex = (c1 - c0) / width
    h_open = a_dst / width * 1.5  # mean opening height -> approximate mid height

    sdf = _polygon_sdf(xy, dst[hole])
    d_up = _polyline_distance(xy, dst[upper])
    d_lo = _polyline_distance(xy, dst[lower])
    feather = jnp.clip(0.15 * h_open, 0.6, 3.0)
    inside = _smoothstep(-sdf / feather + 0.5)
    alpha = newness * inside

    along = (xy - 0.5 * (c0 + c1)[None, None, :]) @ ex
    u = jnp.clip(along / (0.5 * width), -1.5, 1.5)
    x_mm = along / mm
    local_h = d_up + d_lo + 1e-3
    v = d_up / local_h

    lip_idx = jnp.asarray(t.region("lips"))
    lip_rgb = jnp.mean(_bilinear(patch, src[lip_idx]), axis=0)
    skin_idx = jnp.asarray(np.concatenate([t.region("right_cheek"), t.region("left_cheek")]))
    skin_rgb = jnp.mean(_bilinear(patch, src[skin_idx]), axis=0)
    skin_l = _luminance(skin_rgb)
    tint = (skin_rgb / jnp.maximum(jnp.mean(skin_rgb), 1e-3)) ** 0.25

    # cavity: darkest in the middle and at the corners, warm light bounced from the lips near the edges
    edge = jnp.minimum(d_up, d_lo)
    near_lip = jnp.exp(-edge / (0.25 * local_h + 1.0))
    corner_dark = 1.0 - 0.5 * jnp.clip(jnp.abs(u), 0.0, 1.0) ** 2
    cavity = lip_rgb[None, None, :] * (0.10 + 0.22 * near_lip[..., None]) * corner_dark[..., None]

    # teeth are lit like the eye whites (albedo independent of skin tone): sample the sclera between each
    # pupil and its eye corners; the skin only sets a floor when the eyes are shadowed or closed
    pupils = src[jnp.array([topo.RIGHT_PUPIL, topo.RIGHT_PUPIL, topo.LEFT_PUPIL, topo.LEFT_PUPIL])]
    corners = src[jnp.array([33, 133, 362, 263])]
    sclera = _luminance(_bilinear(patch, 0.5 * pupils + 0.5 * corners))
    exposure = jnp.clip(jnp.maximum(jnp.mean(sclera) / 0.7, skin_l / 0.6), 0.35, 1.2)
    teeth_rgb = jnp.clip(jnp.array([0.93, 0.90, 0.83]) * tint * exposure, 0.0, 0.95)
    gaps = jnp.zeros_like(x_mm)
    for g in (0.0, 8.5, 15.0, 22.0):
        gaps += _gauss(jnp.abs(x_mm) - g, 0.35)
    tooth_shade = (1.0 - 0.6 * jnp.clip(jnp.abs(u), 0.0, 1.0) ** 2) * (1.0 - 0.15 * jnp.minimum(gaps, 1.0))

    # upper teeth: incisal edge follows the smile arc, hidden under the upper lip, shadowed just below it
    h_up = jnp.minimum(9.0 * mm * (1.0 - 0.35 * u * u), 0.5 * local_h)
    soft = jnp.maximum(0.8, 0.08 * h_up)
    m_up = _smoothstep((h_up - d_up) / soft) * _band(jnp.abs(u), 0.0, 0.78, 0.12)
    lip_shadow = 0.72 + 0.28 * _smoothstep(d_up / (0.35 * h_up + 1.0))
    up_rgb = teeth_rgb[None, None, :] * (tooth_shade * lip_shadow)[..., None]
    # lower teeth and tongue only for wide openings
    wide = _smoothstep((h_open / mm - 14.0) / 8.0)
    h_lo = jnp.minimum(6.0 * mm * (1.0 - 0.4 * u * u), 0.22 * local_h)
    m_lo = wide * _smoothstep((h_lo - d_lo) / soft) * _band(jnp.abs(u), 0.0, 0.6, 0.12)
    lo_rgb = teeth_rgb[None, None, :] * (0.72 * tooth_shade)[..., None]
    tongue_m = (
        _smoothstep((h_open / mm - 14.0) / 8.0)
        * jnp.exp(-jnp.square(u / 0.5))
        * _smoothstep((v - 0.55) / 0.3)
    )
    tongue_rgb = (lip_rgb * jnp.array([1.0, 0.72, 0.72]) * 0.7)[None, None, :]

    col = cavity
    col = col * (1 - tongue_m[..., None]) + tongue_rgb * tongue_m[..., None]
    col = col * (1 - m_lo[..., None]) + lo_rgb * m_lo[..., None]
    col = col * (1 - m_up[..., None]) + up_rgb * m_up[..., None]
    out = render * (1 - alpha[..., None]) + col * alpha[..., None]
    opening = jnp.maximum(a_dst - a_src, 0.0)
    return out, alpha, opening


# --------------------------------------------------------------------------------------------------------
# 4. eyes


def _eye_layer(
    render: Image, patch: Image, ctx: AppearanceContext, xy, side: str, source: Image | None = None
):
    """Eye content static under moving lids; lid skin over a nearly closed eye. ``source``: full render."""
    source = render if source is None else source
    t = topo.face_topology()
    hole = jnp.asarray(t.region(f"{side}_eye_hole"))
    lower = jnp.asarray(t.region(f"{side}_eye_lower"))
    upper = jnp.asarray(t.region(f"{side}_eye_upper"))
    brow = jnp.asarray(t.region(f"{side}_brow"))
    pupil = topo.RIGHT_PUPIL if side == "right" else topo.LEFT_PUPIL
    src = ctx.landmarks[:, :2]
    dst = ctx.target_landmarks[:, :2]
    s = ctx.interocular
    a_src = _polygon_area(src[hole])
    a_dst = _polygon_area(dst[hole])
    closure = jnp.clip(1.0 - a_dst / jnp.maximum(a_src, 1e-3), 0.0, 1.0)
    sdf_dst = _polygon_sdf(xy, dst[hole])
    in_dst = _smoothstep(0.5 - sdf_dst / 1.0)
    # static eye: the eyeball moves with the eye as a whole (pupil landmark), lids move over it
    shift = dst[pupil] - src[pupil]
    q = xy - shift[None, None, :]
    sdf_src = _polygon_sdf(q, src[hole])
    static_w = in_dst * _smoothstep(0.5 - sdf_src / 1.5)
    out = jnp.where(
        static_w[..., None] > 0,
        render * (1 - static_w[..., None]) + _bilinear(patch, q) * static_w[..., None],
        render,
    )
    # nearly closed: lid skin (sampled above the lid margin) covers the last sliver, lashes at the seam
    up_dir = jnp.mean(dst[brow], axis=0) - jnp.mean(dst[hole], axis=0)
    up_dir = up_dir / jnp.maximum(jnp.linalg.norm(up_dir), 1e-6)
    d_up = _polyline_distance(xy, dst[upper])
    lid_xy = xy + up_dir[None, None, :] * (d_up + 0.07 * s)[..., None]
    cover = _smoothstep((closure - 0.45) / 0.45)
    w = cover * _smoothstep(0.5 - sdf_dst / 1.5)
    out = out * (1 - w[..., None]) + _bilinear(source, lid_xy) * w[..., None]
    d_lo = _polyline_distance(xy, dst[lower])
    lash = (
        cover
        * _gauss(d_lo, jnp.maximum(0.8, 0.012 * s))
        * _smoothstep(1.0 - jnp.maximum(sdf_dst, 0.0) / (0.03 * s + 1.0))
    )
    out = out * jnp.exp(-0.5 * lash)[..., None]
    return out, closure


# --------------------------------------------------------------------------------------------------------


def apply_appearance(
    render: Image,
    patch: Image,
    frags,
    ctx: AppearanceContext,
    options: AppearanceOptions = AppearanceOptions(),
) -> tuple[Image, dict]:
    r"""Add the expression's appearance cues to a geometry-only render.

    ``render`` is the photo's texture on the deformed mesh (what ``frags`` rasterised), ``patch`` the photo
    crop. Multiplicative cues act in log-luminance on skin pixels:
    :math:`I' = I \exp(\gamma (\log r_{shade} + \delta_{wrinkle}))`, :math:`\gamma` = ``options.strength``;
    then the eye layer and the mouth interior are composited with soft masks. ``options`` is static.

    Returns:
        (image f32[H, W, 3], diagnostics: ``log_ratio`` f32[H, W], ``wrinkles`` f32[H, W], ``lighting``
        f32[9], ``mouth_alpha`` f32[H, W], ``mouth_opening`` f32[] (added inner-lip area, px),
        ``eye_closure`` f32[2] (right, left)).
    """
    h, w = render.shape[:2]
    covered = frags.triangle_id >= 0
    group = ctx.groups[jnp.maximum(frags.triangle_id, 0)]
    skin = covered & ((group == SKIN) | (group == SKIRT))
    zeros = jnp.zeros((h, w), render.dtype)
    out = render
    diag = {
        "log_ratio": zeros,
        "wrinkles": zeros,
        "lighting": jnp.zeros(9, render.dtype),
        "mouth_alpha": zeros,
        "mouth_opening": jnp.zeros((), render.dtype),
        "eye_closure": jnp.zeros(2, render.dtype),
    }
    t = topo.face_topology()
    if options.eyes:
        closures = []
        for side in ("right", "left"):
            centre = jnp.mean(ctx.target_landmarks[t.region(f"{side}_eye_hole"), :2], axis=0)
            full = out

            def eye(sub, sub_xy, side=side, full=full):
                return _eye_layer(sub, patch, ctx, sub_xy, side, source=full)

            out, closure = _windowed(eye, out, centre, _window_size(h, w, options.eye_window))
            closures.append(closure)
        diag["eye_closure"] = jnp.stack(closures)
    log_gain = zeros
    if options.shading or options.wrinkles:  # one interpolation pass for both cues
        attrs = [ctx.surface]
        if options.shading:
            lr_v, coeffs = shading_log_ratio(patch, ctx)
            attrs.append(lr_v[:, None])
            diag["lighting"] = coeffs
        per_pixel = _interp(frags, ctx.triangles, jnp.concatenate(attrs, axis=1))
    if options.shading:
        lr = jnp.where(skin, per_pixel[..., 2], 0.0)
        diag["log_ratio"] = lr
        log_gain = log_gain + lr
    if options.wrinkles:
        mm_per_px = topo.IPD_MM / jnp.maximum(ctx.interocular, 1.0)
        texture = wrinkle_texture(ctx.au, mm_per_px)
        wd = jnp.where(skin, sample_wrinkle_texture(texture, per_pixel[..., :2]), 0.0)
        diag["wrinkles"] = wd
        log_gain = log_gain + wd
    if options.shading or options.wrinkles:
        out = out * jnp.exp(options.strength * log_gain)[..., None]
    if options.mouth_interior:
        centre = jnp.mean(ctx.target_landmarks[t.region("mouth_hole"), :2], axis=0)
        size = _window_size(h, w, options.mouth_window)

        def mouth(sub, sub_xy):
            painted, alpha, opening = mouth_interior(sub, patch, ctx, sub_xy)
            return painted, (alpha, opening)

        out, (alpha_win, opening) = _windowed(mouth, out, centre, size)
        alpha = _paste(zeros, alpha_win, centre, size)
        alpha = jnp.where(covered, alpha, 0.0)
        out = jnp.where(covered[..., None], out, render)
        diag["mouth_alpha"], diag["mouth_opening"] = alpha, opening
    return jnp.clip(out, 0.0, 1.0), diag


__all__ = [
    "AU_NAMES",
    "AppearanceContext",
    "action_unit_basis",
    "project_action_units",
    "AppearanceOptions",
    "apply_appearance",
    "dense_template",
    "fit_sh_lighting",
    "mouth_interior",
    "shading_log_ratio",
    "wrinkle_log_delta",
    "wrinkle_texture",
    "sample_wrinkle_texture",
]
