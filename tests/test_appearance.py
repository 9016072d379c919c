"""Tests of the expression-appearance cues (shading, wrinkles, mouth interior, eyes).

A synthetic face (the canonical template, Lambert-shaded under a planted light, with lips, irises and brows
painted on) is rasterised by a slow NumPy reference rasteriser, so these tests do not depend on raster.py.
"""

import sys
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affectsynth import pipeline
from affectsynth.affect.au_fields import AU_NAMES, expression_basis
from affectsynth.face import topology as topo
from affectsynth.render import raster
from affectsynth.render.appearance import _draw as ap_draw
from affectsynth.render.appearance import compose as ap_compose
from affectsynth.render.appearance import context as ap
from affectsynth.render.appearance import mouth as ap_mouth
from affectsynth.render.appearance import shading as ap_shading
from affectsynth.render.appearance import wrinkles as ap_wrinkles

SIZE = 224
PX_PER_MM = 1.25

apply = jax.jit(ap_compose.apply_appearance, static_argnames="options")
wrinkles = jax.jit(ap_wrinkles.wrinkle_log_delta)


# --------------------------------------------------------------------------------------------------------
# reference machinery (NumPy)


class Frags(eqx.Module):
    """The fields of raster.Fragments that apply_appearance reads."""

    triangle_id: jax.Array
    barycentric: jax.Array
    vertex_ids: jax.Array

    @property
    def mask(self):
        return self.triangle_id >= 0


def render_mesh(skirt=0.35, levels=1):
    """The pipeline's render mesh (landmarks + skirt ring, skin/mouth/eye/skirt groups, subdivided) with
    its canonical surface coordinates."""
    m = pipeline._render_mesh(levels)
    return types.SimpleNamespace(
        ring=m["ring"],
        weights=m["weights"],
        triangles=m["triangles"],
        groups=m["groups"],
        surface=ap.dense_template(m["weights"], m["ring"], skirt),
        skirt=skirt,
    )


def rasterize_np(v, tris, h, w):
    """Slow reference rasteriser: nearest (smallest z) triangle per pixel centre, screen barycentrics."""
    tid = np.full((h, w), -1, np.int32)
    bary = np.zeros((h, w, 3), np.float32)
    depth = np.full((h, w), np.inf)
    for f, (a, b, c) in enumerate(tris):
        p = v[[a, b, c]].astype(np.float64)
        x0, x1 = int(np.floor(p[:, 0].min())), int(np.ceil(p[:, 0].max()))
        y0, y1 = int(np.floor(p[:, 1].min())), int(np.ceil(p[:, 1].max()))
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
        det = (p[1, 0] - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[2, 0] - p[0, 0]) * (p[1, 1] - p[0, 1])
        if abs(det) < 1e-12:
            continue
        l1 = ((xs - p[0, 0]) * (p[2, 1] - p[0, 1]) - (p[2, 0] - p[0, 0]) * (ys - p[0, 1])) / det
        l2 = ((p[1, 0] - p[0, 0]) * (ys - p[0, 1]) - (xs - p[0, 0]) * (p[1, 1] - p[0, 1])) / det
        l0 = 1 - l1 - l2
        inside = (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        z = l0 * p[0, 2] + l1 * p[1, 2] + l2 * p[2, 2]
        sub_d = depth[y0:y1, x0:x1]
        win = inside & (z < sub_d)
        sub_d[win] = z[win]
        tid[y0:y1, x0:x1][win] = f
        bary[y0:y1, x0:x1][win] = np.stack([l0, l1, l2], -1)[win]
    ids = np.where((tid >= 0)[..., None], np.asarray(tris)[np.maximum(tid, 0)], 0)
    return Frags(triangle_id=jnp.asarray(tid), barycentric=jnp.asarray(bary), vertex_ids=jnp.asarray(ids))


def to_image(canonical, scale=None, size=None):
    """Canonical mm (y up, z to camera) -> pixels (y down, z away), face centred."""
    scale = PX_PER_MM if scale is None else scale
    size = SIZE if size is None else size
    out = canonical * np.array([scale, -scale, -scale], np.float32)
    return out + np.array([size / 2, size / 2 - 4, 0.0], np.float32)


def bilinear_np(img, xy):
    return np.asarray(raster.sample_bilinear(jnp.asarray(img), jnp.asarray(xy)))


@pytest.fixture(scope="module")
def basis():
    b, _, names = expression_basis()
    return np.asarray(b), names


@pytest.fixture(scope="module")
def face():
    return make_face()


def make_face():
    """A synthetic photo: Lambert-shaded template under a planted light, lips, irises, brows painted."""
    t = topo.face_topology()
    mesh = render_mesh()
    lm = to_image(t.template)
    ring = lm[mesh.ring]
    c2 = ring[:, :2].mean(0)
    skirt = np.concatenate([ring[:, :2] + (ring[:, :2] - c2) * mesh.skirt, ring[:, 2:] + 60.0], 1)
    src = mesh.weights @ np.concatenate([lm, skirt])
    frags = rasterize_np(src, mesh.triangles, SIZE, SIZE)
    normals = np.asarray(ap_draw._vertex_normals(jnp.asarray(src), jnp.asarray(mesh.triangles)))
    n = np.asarray(raster.interpolate(frags, jnp.asarray(normals)))
    light = np.array([0.3, 0.5, 0.81])
    shade = 0.25 + 0.75 * np.clip(n @ light, 0, 1)
    rng = np.random.default_rng(0)
    albedo = np.array([0.78, 0.58, 0.48]) * (1 + 0.03 * rng.standard_normal((SIZE, SIZE, 1)))
    img = albedo * shade[..., None]
    ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5
    for pupil in (topo.RIGHT_PUPIL, topo.LEFT_PUPIL):
        r = np.hypot(xs - lm[pupil, 0], ys - lm[pupil, 1])
        img[r < 6.5] = [0.95, 0.95, 0.93]
        img[r < 4.0] = [0.12, 0.08, 0.06]
    lip_poly = np.concatenate([lm[t.region("lips_outer_upper"), :2], lm[t.region("lips_outer_lower"), :2]])
    lip_sdf = np.asarray(ap_draw._polygon_sdf(jnp.stack([xs, ys], -1), jnp.asarray(lip_poly)))
    img[lip_sdf < 0] *= np.array([0.85, 0.55, 0.55])
    img = np.where((frags.triangle_id >= 0)[..., None], img, 0.35).astype(np.float32)
    return types.SimpleNamespace(mesh=mesh, lm=lm, skirt=skirt, img=img, light=light)


def make_scene(face, deform_mm, au, options=None):
    """Deform the synthetic face by canonical offsets (mm), rasterise, render, build the context."""
    t = topo.face_topology()
    mesh = face.mesh
    dst_lm = to_image(t.template + deform_mm)
    src = mesh.weights @ np.concatenate([face.lm, face.skirt])
    dst = mesh.weights @ np.concatenate([dst_lm, face.skirt])
    frags = rasterize_np(dst, mesh.triangles, SIZE, SIZE)
    src_xy = np.asarray(raster.interpolate(frags, jnp.asarray(src[:, :2])))
    render = bilinear_np(face.img, src_xy)
    render = np.where((frags.triangle_id >= 0)[..., None], render, face.img).astype(np.float32)
    ctx = ap.AppearanceContext(
        src_vertices=jnp.asarray(src, jnp.float32),
        dst_vertices=jnp.asarray(dst, jnp.float32),
        triangles=jnp.asarray(mesh.triangles),
        groups=jnp.asarray(mesh.groups),
        surface=jnp.asarray(mesh.surface),
        landmarks=jnp.asarray(face.lm),
        target_landmarks=jnp.asarray(dst_lm, jnp.float32),
        au=jnp.asarray(au, jnp.float32),
        interocular=jnp.asarray(topo.IPD_MM * PX_PER_MM, jnp.float32),
    )
    return jnp.asarray(render), frags, ctx


def au_vector(**kw):
    v = np.zeros(len(AU_NAMES), np.float32)
    for k, x in kw.items():
        v[AU_NAMES.index(k)] = x
    return v


def deformation(basis, au):
    b, _ = basis
    return np.einsum("k,kvc->vc", au, b).astype(np.float32)


def log_lum(img):
    return np.log(np.asarray(ap_draw._luminance(jnp.asarray(img))) + 1e-3)


# --------------------------------------------------------------------------------------------------------
# helpers and pieces


def _segment_d2_reference(p, a, b):
    """Squared distance from points p[..., 2] to the segment [a, b], float64 NumPy."""
    ab, ap_ = b - a, p - a
    t = np.clip((ap_ @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
    return np.sum((ap_ - t[..., None] * ab) ** 2, axis=-1)


def _star_polygon(rng, n):
    """A random star-shaped (hence simple) polygon of ``n`` vertices around (20, 20)."""
    angles = np.sort(rng.uniform(0.0, 2 * np.pi, n))
    radii = rng.uniform(4.0, 15.0, n)
    return np.stack([20 + radii * np.cos(angles), 20 + radii * np.sin(angles)], -1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_polyline_and_polygon_distances_match_a_loop_reference(seed):
    """The segment loops (``lax.fori_loop``) against per-segment NumPy: distances, and inside by a ray cast
    from each point; jitted and eager agree. Points on a 2-D grid (as the cues use them) and a flat list."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 20))
    poly = _star_polygon(rng, n)
    ys, xs = np.meshgrid(np.arange(0.25, 40, 1.5), np.arange(0.5, 40, 1.5), indexing="ij")
    p = np.stack([xs, ys], -1)
    line = np.min([_segment_d2_reference(p, poly[k], poly[k + 1]) for k in range(n - 1)], axis=0)
    ring = np.min([_segment_d2_reference(p, poly[k], poly[(k + 1) % n]) for k in range(n)], axis=0)
    inside = np.zeros(p.shape[:2], bool)
    for k in range(n):
        (ax, ay), (bx, by) = poly[k], poly[(k + 1) % n]
        crosses = (ay > p[..., 1]) != (by > p[..., 1])
        x_at = ax + (bx - ax) * (p[..., 1] - ay) / np.where(crosses, by - ay, 1.0)
        inside ^= crosses & (p[..., 0] < x_at)
    want_sdf = np.where(inside, -np.sqrt(ring), np.sqrt(ring))
    pj, polyj = jnp.asarray(p, jnp.float32), jnp.asarray(poly, jnp.float32)
    for fn in (ap_draw._polyline_distance, jax.jit(ap_draw._polyline_distance)):
        np.testing.assert_allclose(np.asarray(fn(pj, polyj)), np.sqrt(line), atol=2e-3)
    for fn in (ap_draw._polygon_sdf, jax.jit(ap_draw._polygon_sdf)):
        got = np.asarray(fn(pj, polyj))
        np.testing.assert_allclose(got, want_sdf, atol=2e-3)
        assert ((got < 0) == inside).all()
    flat = np.asarray(ap_draw._polygon_sdf(pj.reshape(-1, 2), polyj))
    np.testing.assert_array_equal(flat, np.asarray(ap_draw._polygon_sdf(pj, polyj)).reshape(-1))


def test_au_names_match_expression_basis():
    assert ap.AU_NAMES == AU_NAMES


def test_polygon_sdf_square():
    sq = jnp.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
    p = jnp.array([[2.0, 2.0], [1.0, 2.0], [6.0, 2.0], [7.0, 8.0], [-1.0, -1.0]])
    want = np.array([-2.0, -1.0, 2.0, 5.0, np.sqrt(2.0)])
    np.testing.assert_allclose(np.asarray(ap_draw._polygon_sdf(p, sq)), want, atol=1e-5)
    assert float(ap_draw._polygon_area(sq)) == pytest.approx(16.0)


def test_bilinear_pixel_centres_and_midpoints():
    img = jnp.arange(12.0).reshape(3, 4, 1)
    xy = jnp.array([[0.5, 0.5], [3.5, 2.5], [1.0, 0.5], [1.5, 1.0], [-3.0, 10.0]])
    np.testing.assert_allclose(
        np.asarray(raster.sample_bilinear(img, xy))[:, 0], [0.0, 11.0, 0.5, 3.0, 8.0], atol=1e-6
    )


def test_sh_lighting_recovers_planted_coefficients():
    rng = np.random.default_rng(1)
    n = rng.standard_normal((400, 3))
    n[:, 2] = np.abs(n[:, 2])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    c = rng.standard_normal(9).astype(np.float32) * np.array([1, 0.5, 0.5, 0.5, 0.2, 0.2, 0.2, 0.2, 0.2])
    y = np.asarray(ap_draw._sh9(jnp.asarray(n, jnp.float32))) @ c
    got = ap_shading.fit_sh_lighting(
        jnp.asarray(y, jnp.float32), jnp.asarray(n, jnp.float32), jnp.ones(400), ridge=1e-7
    )
    np.testing.assert_allclose(np.asarray(got), c, atol=2e-3)


def test_vertex_normals_face_the_camera(face):
    nrm = np.asarray(
        ap_draw._vertex_normals(jnp.asarray(face.lm), jnp.asarray(topo.face_topology().triangles))
    )
    np.testing.assert_allclose(np.linalg.norm(nrm, axis=1), 1.0, atol=1e-5)
    assert nrm[4, 2] > 0.9  # nose tip looks at the camera (camera frame: z towards it)
    assert nrm[topo.face_topology().region("forehead"), 1].mean() > 0.05  # forehead tilts up


# --------------------------------------------------------------------------------------------------------
# wrinkles: where each pattern lives, symmetry, zero at zero


@pytest.mark.parametrize(
    ("aus", "box"),
    [
        ({"AU1": 1.0, "AU2": 1.0}, (0, 50, 44, 76)),  # (|x| lo, |x| hi, y lo, y hi) mm
        ({"AU4": 1.0}, (0, 38, 30, 60)),  # glabella, shadow under the brow, fold above the brow heads
        ({"AU6": 1.0}, (14, 62, -40, 48)),  # crow's feet, lid, some nasolabial
        ({"AU9": 1.0}, (0, 47, -40, 40)),  # bridge lines, root line, some nasolabial
        ({"AU12": 1.0}, (14, 47, -42, 4)),
        ({"AU17": 1.0}, (0, 20, -72, -34)),
        ({"AU23": 1.0}, (0, 26, -42, -24)),  # the lips' seam and their vermilion
        ({"AU24": 1.0}, (0, 26, -52, -24)),  # and the mentolabial crease
    ],
)
def test_wrinkles_stay_in_their_region(aus, box):
    xs, ys = np.meshgrid(np.linspace(-70, 70, 281), np.linspace(-85, 85, 341))
    uv = jnp.asarray(np.stack([xs, ys], -1), jnp.float32)
    d = np.asarray(wrinkles(uv, jnp.asarray(au_vector(**aus)), jnp.asarray(0.5)))
    lo, hi, ylo, yhi = box
    inside = (np.abs(xs) >= lo) & (np.abs(xs) <= hi) & (ys >= ylo) & (ys <= yhi)
    assert np.abs(d[inside]).max() > 0.05
    assert np.abs(d[~inside]).max() < 2e-3
    assert d.min() > -0.25 and d.max() < 0.12  # subtle
    np.testing.assert_allclose(d, d[:, ::-1], atol=1e-6)  # symmetric
    d0 = wrinkles(uv, jnp.zeros(len(AU_NAMES)), jnp.asarray(0.5))
    assert float(jnp.abs(d0).max()) == 0.0
    half = np.asarray(wrinkles(uv, jnp.asarray(0.5 * au_vector(**aus)), jnp.asarray(0.5)))
    np.testing.assert_allclose(half, 0.5 * d, atol=1e-6)  # fades linearly to zero


def _au4_wrinkles(uv):
    au4 = jnp.asarray(au_vector(AU4=1.0))
    return np.asarray(wrinkles(jnp.asarray(uv, jnp.float32), au4, jnp.asarray(0.5)))[0]


def test_brow_lowerer_knits_the_glabella_and_shades_the_socket():
    """AU4 at widths a small face keeps: two dark vertical glabella furrows either side of a lit bulge, and
    a broad shadow under the lowered brow over the upper lid (several mm tall, not a hairline)."""
    xs = np.linspace(-12.0, 12.0, 241)
    row = np.stack([xs, np.full_like(xs, 42.0)], -1)[None]
    d = _au4_wrinkles(row)
    furrow = np.abs(xs)[np.argmin(d)]
    assert 4.5 < furrow < 7.5 and d.min() < -0.12, (furrow, d.min())
    assert d[np.abs(xs) < 1.0].mean() > d.min() + 0.1  # the bulge between the furrows
    ys = np.linspace(30.0, 50.0, 201)
    col = np.stack([np.full_like(ys, 22.0), ys], -1)[None]  # under the middle of the brow
    d = _au4_wrinkles(col)
    dark = ys[d < -0.05]
    assert dark.size and dark.max() - dark.min() > 3.0 and 36.0 < dark.mean() < 44.0, (dark.min(), dark.max())


def test_pressed_lips_draw_a_dark_seam_between_pale_lips():
    """AU23/AU24: along the midline a dark seam where the lips meet, the vermilion above and below it paler;
    the seam follows the lips' line out towards the corners."""
    ys = np.linspace(-45.0, -22.0, 461)
    for x in (0.0, 12.0):
        col = np.stack([np.full_like(ys, x), ys], -1)[None]
        d = np.asarray(
            wrinkles(jnp.asarray(col, jnp.float32), jnp.asarray(au_vector(AU23=0.8, AU24=0.6)), 0.5)
        )
        d = d[0]
        seam = ys[np.argmin(d)]
        assert abs(seam - (-32.45 + 0.0029 * x * x)) < 0.6 and d.min() < -0.08, (x, seam, d.min())
    assert d[np.abs(ys + 37.0) < 1.0].mean() > 0.03 and d[np.abs(ys + 29.0) < 1.0].mean() > 0.03


@pytest.mark.parametrize(
    "aus",
    [
        {"AU1": 1.0, "AU2": 1.0, "AU4": 1.0},
        {"AU23": 1.0, "AU24": 1.0, "AU17": 0.5},
        {"AU6": 1.0, "AU9": 1.0, "AU10": 1.0, "AU12": 1.0},
        {"AU15": 1.0, "AU17": 1.0},
    ],
)
def test_wrinkle_texture_stands_in_for_the_patterns(aus):
    """apply_appearance draws the wrinkles once per face on a template-space texture and looks them up per
    pixel (speed); the lookup must reproduce the per-pixel evaluation."""
    rng = np.random.default_rng(0)
    (x0, x1), (y0, y1) = ap_wrinkles.WRINKLE_EXTENT
    uv = jnp.asarray(rng.uniform([x0, y0], [x1, y1], (120, 160, 2)), jnp.float32)
    a, mm = jnp.asarray(au_vector(**aus)), jnp.asarray(0.4)
    direct = np.asarray(wrinkles(uv, a, mm))
    looked_up = np.asarray(
        jax.jit(lambda a, uv: ap_wrinkles.sample_wrinkle_texture(ap_wrinkles.wrinkle_texture(a, mm), uv))(
            a, uv
        )
    )
    assert np.corrcoef(direct.ravel(), looked_up.ravel())[0, 1] > 0.999
    assert np.abs(direct - looked_up).max() < 0.1 * np.abs(direct).max()


def test_wrinkle_texture_extent_holds_every_pattern():
    tex = np.asarray(ap_wrinkles.wrinkle_texture(jnp.full(len(AU_NAMES), 1.5), jnp.asarray(0.5)))
    assert np.abs(tex).max() > 0.1
    border = np.concatenate([tex[0], tex[-1], tex[:, 0], tex[:, -1]])
    assert np.abs(border).max() < 1e-6  # so the hard cut at the extent is invisible
    far = jnp.asarray([[[100.0, 0.0], [0.0, -120.0], [-80.0, 90.0]]])
    assert np.all(np.asarray(ap_wrinkles.sample_wrinkle_texture(jnp.asarray(tex), far)) == 0.0)


def test_fast_cosine_is_accurate():
    x = jnp.linspace(-300.0, 300.0, 200001)
    assert float(jnp.abs(ap_wrinkles._cos(x) - jnp.cos(x)).max()) < 5e-5
    near = jnp.linspace(-7.0, 7.0, 20001)
    assert float(jnp.abs(ap_wrinkles._cos(near) - jnp.cos(near)).max()) < 1e-6


# --------------------------------------------------------------------------------------------------------
# end to end on the synthetic face


def test_zero_target_is_identity(face):
    render, frags, ctx = make_scene(face, np.zeros((478, 3), np.float32), au_vector())
    out, diag = apply(render, jnp.asarray(face.img), frags, ctx)
    np.testing.assert_allclose(np.asarray(out), np.asarray(render), atol=1e-5)
    np.testing.assert_allclose(np.asarray(out), face.img, atol=2e-3)
    assert float(diag["mouth_opening"]) == 0.0
    assert float(jnp.abs(diag["log_ratio"]).max()) < 1e-5


def test_folded_skin_gets_no_shading_change(face, basis):
    """Where the deformation folds the skin over itself (a triangle turned over in the image) its normals
    mean nothing: the folded triangles' vertices get no shading change, fading in from ``FOLD_SHRINK`` of a
    triangle's area; nothing else changes, and a face that does not move trusts every vertex. Folded
    triangles' vertex shading drew dotted dark lines from sad outputs' lip corners (London 001, 113)."""
    au = au_vector(AU12=1.0, AU6=1.0)
    _, _, ctx = make_scene(face, deformation(basis, au), au)
    img = jnp.asarray(face.img)
    still = eqx.tree_at(lambda c: c.dst_vertices, ctx, ctx.src_vertices)
    assert np.asarray(ap_shading._unfolded(still)).min() == 1.0
    before = np.asarray(ap_shading._unfolded(ctx))
    tris = np.asarray(ctx.triangles)
    skin = np.flatnonzero((np.asarray(ctx.groups) == ap.SKIN) & (before[tris].min(1) == 1.0))
    t = tris[skin[len(skin) // 2]]
    dst = np.asarray(ctx.dst_vertices).copy()
    dst[t[0], :2] = dst[t[1], :2] + dst[t[2], :2] - dst[t[0], :2]  # turned over its opposite edge
    folded = eqx.tree_at(lambda c: c.dst_vertices, ctx, jnp.asarray(dst))
    trust = np.asarray(ap_shading._unfolded(folded))
    assert np.all(trust[t] == 0.0) and trust.min() >= 0.0
    assert np.all(np.asarray(ap_shading.shading_log_ratio(img, folded)[0])[t] == 0.0)
    near = np.unique(tris[np.isin(tris, t).any(1)])  # the fold's triangles' vertices
    far = np.setdiff1d(np.arange(len(dst)), near)
    np.testing.assert_array_equal(trust[far], before[far])


def test_shading_follows_the_fold(face, basis):
    au = au_vector(AU12=1.0, AU6=1.0)
    render, frags, ctx = make_scene(face, deformation(basis, au), au)
    out, diag = apply(render, jnp.asarray(face.img), frags, ctx)  # diag["log_ratio"]: the shading cue alone
    lr = np.asarray(diag["log_ratio"])
    uv = np.asarray(raster.interpolate(frags, ctx.surface))
    tris = np.asarray(ctx.triangles)
    moved = np.linalg.norm(np.asarray(ctx.dst_vertices - ctx.src_vertices), axis=1)
    ring_moved = np.zeros_like(moved)  # largest motion in each vertex's 1-ring (its normal depends on it)
    np.maximum.at(ring_moved, tris.ravel(), np.repeat(moved[tris].max(1), 3))
    tid = np.asarray(frags.triangle_id)
    # still: the 1-ring moved less than 1e-6 (the AU fields' smooth fades leave ~1e-9 float dust far away)
    still = ring_moved[tris[np.maximum(tid, 0)]].max(-1) < 1e-6
    covered = np.asarray(frags.triangle_id) >= 0
    assert (still & covered).sum() > 100
    assert np.abs(lr[still & covered]).max() < 1e-5  # nothing where the surface did not move
    cheek = (
        covered
        & (np.abs(uv[..., 0]) > 20)
        & (np.abs(uv[..., 0]) < 45)
        & (uv[..., 1] > -35)
        & (uv[..., 1] < 5)
    )
    assert np.abs(lr[cheek]).max() > 0.02
    assert np.log(ap.SHADING_CLIP[0]) - 1e-6 <= lr.min() and lr.max() <= np.log(ap.SHADING_CLIP[1]) + 1e-6
    # the lighting estimate is the planted one up to scale: brighter for normals facing the light
    c = np.asarray(diag["lighting"])
    y = (
        np.asarray(ap_draw._sh9(jnp.asarray([face.light, -face.light * np.array([1, 1, -1])], jnp.float32)))
        @ c
    )
    assert y[0] > y[1]


def test_cues_symmetric_for_symmetric_target(face, basis):
    au = au_vector(AU1=1.0, AU2=1.0, AU6=1.0, AU12=1.0, AU25=1.0, AU26=0.6)
    render, frags, ctx = make_scene(face, deformation(basis, au), au)
    out, diag = apply(render, jnp.asarray(face.img), frags, ctx)
    change = log_lum(out) - log_lum(render)
    # the synthetic face is centred at x = SIZE/2: mirror columns
    a, b = change[:, 8:-8], change[:, 8:-8][:, ::-1]
    r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert r > 0.9
    wr = np.asarray(diag["wrinkles"])[:, 8:-8]
    assert np.corrcoef(wr.ravel(), wr[:, ::-1].ravel())[0, 1] > 0.9


def test_mouth_interior_fills_new_opening_only(face, basis):
    au = au_vector(AU25=1.0, AU26=1.0, AU12=0.5)
    render, frags, ctx = make_scene(face, deformation(basis, au), au)
    img = jnp.asarray(face.img)
    out, diag = apply(render, img, frags, ctx, options=ap.AppearanceOptions(shading=False, wrinkles=False))
    t = topo.face_topology()
    xy = np.asarray(ap_draw._pixel_grid(SIZE, SIZE))
    hole = np.asarray(ctx.target_landmarks)[t.region("mouth_hole"), :2]
    sdf = np.asarray(ap_draw._polygon_sdf(jnp.asarray(xy), jnp.asarray(hole)))
    alpha = np.asarray(diag["mouth_alpha"])
    assert float(diag["mouth_opening"]) > 50.0
    assert alpha[sdf < -2].min() > 0.9  # the opening is painted
    assert alpha[sdf > 2].max() == 0.0  # nothing outside it
    gy, gx = np.gradient(alpha)
    assert np.hypot(gx, gy).max() < 0.75  # soft edge, no hard step
    lum = log_lum(out)
    lips = np.asarray(ap_draw._luminance(jnp.asarray(face.img)))[
        np.asarray(ap_draw._polygon_sdf(jnp.asarray(xy), jnp.asarray(face.lm[t.region("lips"), :2]))) < 0
    ]
    assert np.percentile(lum[sdf < -1], 20) < np.log(np.median(lips)) - 0.7  # a dark cavity, not lip texture
    assert np.abs(np.asarray(out) - np.asarray(render))[sdf < -2].mean() > 0.1
    upper = np.asarray(
        ap_draw._polyline_distance(
            jnp.asarray(xy), jnp.asarray(np.asarray(ctx.target_landmarks)[t.region("lips_inner_upper"), :2])
        )
    )
    teeth = (sdf < -1) & (upper < 4) & (np.abs(xy[..., 0] - SIZE / 2) < 8)
    assert lum[teeth].mean() > lum[sdf < -1].mean() + 0.2  # upper teeth brighter than the cavity
    # closing the lips again returns exactly the photo's lips
    render0, frags0, ctx0 = make_scene(face, np.zeros((478, 3), np.float32), au_vector())
    out0, diag0 = apply(
        render0, img, frags0, ctx0, options=ap.AppearanceOptions(shading=False, wrinkles=False)
    )
    assert float(jnp.abs(out0 - render0).max()) < 1e-5
    assert float(diag0["mouth_alpha"].max()) == 0.0


def test_an_opening_is_painted_fully_once_a_fifth_of_it_is_new():
    """``_newness``: a photo's own open mouth that grows by a few percent keeps its pixels; once a fifth of
    the target's opening is new it is painted fully (over a 0-35 % ramp, the demo's smiling astronaut's
    excited opening, about a quarter new, was painted at ~0.78 over her stretched teeth: a grey band);
    lips that close, or part by a hair, get nothing."""
    width, mm = jnp.float32(200.0), jnp.float32(4.0)  # a 50 mm mouth at 4 px/mm
    a_dst = jnp.float32(200.0 * 4.0 * 8.0)  # 8 mm mean height

    def new(share, a=a_dst):
        return float(ap_mouth._newness((1.0 - share) * a, a, width, mm))

    assert new(0.03) == 0.0 and new(0.0) == 0.0 and new(-0.5) == 0.0
    assert new(0.2) == pytest.approx(1.0, abs=1e-6) and new(0.25) == pytest.approx(1.0, abs=1e-6)
    assert 0.2 < new(0.12) < 0.8
    assert new(1.0) == pytest.approx(1.0, abs=1e-6)  # a closed photo mouth opening
    assert new(1.0, jnp.float32(200.0 * 4.0 * 0.2)) < 0.15  # parted by 0.2 mm


def test_mouth_interior_leaves_lips_parted_by_a_hair(face, basis):
    """Lips that part by a fraction of a millimetre (AU25 at 0.05: at most 0.2 mm) keep their own pixels: a
    relative test alone painted the whole new sliver as cavity, a black line between closed lips."""
    for a in (0.02, 0.05):
        au = au_vector(AU25=a)
        render, frags, ctx = make_scene(face, deformation(basis, au), au)
        look = ap.AppearanceOptions(shading=False, wrinkles=False)
        out, diag = apply(render, jnp.asarray(face.img), frags, ctx, options=look)
        assert float(diag["mouth_alpha"].max()) < 0.1
        assert float(jnp.abs(out - render).max()) < 0.05


def _mouth_parts(face, basis, **aus):
    """(output luminance, inside-opening mask, |x| from the mouth centre / half width, distance to the inner
    lower lip in px) for a scene with only the mouth cue."""
    out, inside, u, d_lo = _mouth_scene(face, basis, **aus)
    return np.asarray(ap_draw._luminance(out)), inside, u, d_lo


def _mouth_scene(face, basis, **aus):
    """``_mouth_parts`` with the output's colours f32[H, W, 3] instead of its luminance."""
    au = au_vector(**aus)
    render, frags, ctx = make_scene(face, deformation(basis, au), au)
    off = ap.AppearanceOptions(shading=False, wrinkles=False, eyes=False)
    out, _ = apply(render, jnp.asarray(face.img), frags, ctx, options=off)
    t = topo.face_topology()
    xy = jnp.asarray(ap_draw._pixel_grid(SIZE, SIZE))
    dst = np.asarray(ctx.target_landmarks)[:, :2]
    inside = np.asarray(ap_draw._polygon_sdf(xy, jnp.asarray(dst[t.region("mouth_hole")]))) < -1.5
    c0, c1 = dst[t.region("lips_inner_upper")[[0, -1]]]
    u = np.abs(np.asarray(xy)[..., 0] - 0.5 * (c0[0] + c1[0])) / (0.5 * abs(c1[0] - c0[0]))
    d_lo = np.asarray(ap_draw._polyline_distance(xy, jnp.asarray(dst[t.region("lips_inner_lower")])))
    return np.asarray(out), inside, u, d_lo


def test_a_smile_gap_is_mostly_teeth(face, basis):
    lum, inside, u, _ = _mouth_parts(face, basis, AU6=0.6, AU12=1.0, AU25=1.0)
    assert inside.sum() > 40
    # teeth are lit like the painted sclera (~0.5-0.6 here); the cavity is a fraction of the lip colour
    assert np.mean(lum[inside & (u < 0.5)] > 0.3) > 0.8


def _warmth(rgb):
    """(R - B) / (R + G + B) per pixel: how yellow-red (positive) or blue a colour is."""
    rgb = np.asarray(rgb, np.float64)
    return (rgb[..., 0] - rgb[..., 2]) / np.maximum(rgb.sum(-1), 1e-9)


def test_shaded_teeth_take_the_skins_hue_at_their_own_luminance():
    """``_warm_shadows``: lit teeth (shade above the knee) keep their colour; darker ones move towards the
    skin's hue, more the darker they are, at their own luminance; a grey skin (the photo's white balance)
    changes nothing."""
    knee, gain = ap_mouth.SHADOW_WARMTH
    teeth = jnp.array([0.92, 0.9, 0.85])
    skin = jnp.array([0.75, 0.55, 0.45])
    hue = skin / ap_draw._luminance(skin)
    q = jnp.linspace(1.0, 0.1, 19)
    rgb = teeth[None, None, :] * q[None, :, None]
    out = np.asarray(ap_mouth._warm_shadows(rgb, teeth, hue))[0]
    np.testing.assert_allclose(
        np.asarray(ap_draw._luminance(out)), np.asarray(ap_draw._luminance(rgb))[0], atol=1e-6
    )
    lit = np.asarray(q) >= knee
    np.testing.assert_array_equal(out[lit], np.asarray(rgb)[0][lit])
    warm, own, target = _warmth(out), _warmth(teeth), _warmth(hue)
    share = np.clip(gain * (1.0 - np.asarray(q)[~lit] / knee), 0.0, 1.0)
    rising = np.diff(warm[~lit])
    assert np.all(rising[share[1:] < 1.0] > 1e-3) and np.all(rising > -1e-6)  # warmer the darker, to the hue
    assert share[-1] == 1.0  # (the darkest take all of it)
    # at least that share of the way from the teeth's own warmth to the skin's, and never past the teeth's
    # colour under light of the skin's hue
    assert np.all(warm[~lit] >= own + share * (target - own) - 1e-6)
    assert np.all(warm[~lit] <= _warmth(teeth * hue) + 1e-6)
    grey = np.asarray(ap_mouth._warm_shadows(rgb, teeth, jnp.ones(3)))
    np.testing.assert_allclose(grey, np.asarray(rgb), atol=1e-6)


def test_a_smiles_shaded_teeth_are_warmer_than_its_lit_ones(face, basis):
    """In a rendered open smile the teeth darkening towards the mouth's corners take the skin's warmth:
    darkened in their own hue (before ``SHADOW_WARMTH``) they kept the lit teeth's chroma, a grey band
    (0.034 on the London smiles' shaded teeth, 0.087 real; ``scripts/measure_smile.py``, ``shade_warm``)."""
    out, inside, u, _ = _mouth_scene(face, basis, AU6=0.8, AU12=1.0, AU25=1.0, AU26=0.6)
    lum = np.asarray(ap_draw._luminance(out))
    teeth = inside & (lum > 0.35)  # not the cavity (under 0.2 here)
    lit = teeth & (u < 0.3)
    shaded = teeth & (u > 0.45) & (lum < 0.8 * np.median(lum[lit]))
    assert lit.sum() > 20 and shaded.sum() > 20, (lit.sum(), shaded.sum())
    assert np.median(_warmth(out[shaded])) > np.median(_warmth(out[lit])) + 0.02


def test_a_wide_opening_shows_lower_teeth_and_a_dark_cavity_between(face, basis):
    lum, inside, u, d_lo = _mouth_parts(face, basis, AU25=1.0, AU26=1.0, AU27=0.6)
    lower = inside & (u < 0.3) & (d_lo < 3.0)
    assert lower.sum() > 10 and np.mean(lum[lower] > 0.3) > 0.5
    centre = inside & (u < 0.5)
    assert np.mean(lum[centre] < 0.15) > 0.3  # between the rows of teeth: the dark cavity


def _near_lips(face, basis, **aus):
    """(output luminance, centre of the opening within 3 px of the inner upper lip, the same at the lower,
    the centre over 4 px from both)."""
    lum, inside, u, d_lo = _mouth_parts(face, basis, **aus)
    grid = jnp.asarray(ap_draw._pixel_grid(SIZE, SIZE))
    au = au_vector(**aus)
    _, _, ctx = make_scene(face, deformation(basis, au), au)
    upper = np.asarray(ctx.target_landmarks)[topo.face_topology().region("lips_inner_upper"), :2]
    d_up = np.asarray(ap_draw._polyline_distance(grid, jnp.asarray(upper)))
    centre = inside & (u < 0.3)
    return lum, centre & (d_up < 3.0), centre & (d_lo < 3.0), centre & (d_up > 4.0) & (d_lo > 4.0)


def test_a_relaxed_dropped_jaw_shows_upper_incisors_and_hides_the_lower_teeth(face, basis):
    """Surprise's open mouth (AU25+26, no smile, no stretch): a rim of upper incisors under the relaxed upper
    lip and the lower teeth mostly behind the lower lip; fear's stretched lips (AU20) bare the lower teeth.
    All cavity over a row of lower teeth read as a scream (afraid) on London faces."""
    lum, up, lo, mid = _near_lips(face, basis, AU25=1.0, AU26=1.0)
    assert up.sum() > 5 and lo.sum() > 5 and mid.sum() > 5
    assert lum[up].mean() > np.median(lum[mid]) + 0.1  # the incisor rim (a small face: soft, ~2 px)
    assert lum[up].mean() > lum[lo].mean()  # more upper than lower teeth
    lum_s, _, lo_s, _ = _near_lips(face, basis, AU20=1.0, AU25=1.0, AU26=1.0)
    assert lum_s[lo_s].mean() > lum[lo].mean() + 0.15


@pytest.mark.parametrize(
    "aus",
    [
        {"AU25": 1.0, "AU26": 0.3},  # ~10 mm
        {"AU25": 1.0, "AU26": 0.6},
        {"AU25": 1.0, "AU26": 1.0},
        {"AU25": 1.0, "AU26": 1.0, "AU27": 0.6},  # ~40 mm
    ],
)
def test_an_open_mouth_is_shaded_like_a_mouth(face, basis, aus):
    """Down the middle of the opening (0 at the inner upper lip, 1 at the lower): darkest just under the
    upper teeth, lighter and redder towards the floor, where the tongue lies at every opening size (redder
    than the lips). Before, the cavity was lit from both lips (darkest in its middle) and the tongue drawn
    from 14 mm openings only."""
    au = au_vector(**aus)
    render, frags, ctx = make_scene(face, deformation(basis, au), au)
    off = ap.AppearanceOptions(shading=False, wrinkles=False, eyes=False)
    out = np.asarray(apply(render, jnp.asarray(face.img), frags, ctx, options=off)[0])
    t = topo.face_topology()
    xy = jnp.asarray(ap_draw._pixel_grid(SIZE, SIZE))
    dst = np.asarray(ctx.target_landmarks)[:, :2]
    inside = np.asarray(ap_draw._polygon_sdf(xy, jnp.asarray(dst[t.region("mouth_hole")]))) < -1.0
    d_up, d_lo = (
        np.asarray(ap_draw._polyline_distance(xy, jnp.asarray(dst[t.region(r)])))
        for r in ("lips_inner_upper", "lips_inner_lower")
    )
    v = d_up / (d_up + d_lo + 1e-3)
    c0, c1 = dst[t.region("lips_inner_upper")[[0, -1]]]
    middle = inside & (np.abs(np.asarray(xy)[..., 0] - 0.5 * (c0[0] + c1[0])) < 0.15 * abs(c1[0] - c0[0]))
    lum = np.asarray(ap_draw._luminance(jnp.asarray(out)))
    red = out[..., 0] / np.maximum(out[..., 1], 1e-3)
    bins = [middle & (v >= a) & (v < a + 0.2) for a in (0.2, 0.4, 0.6)]  # under the teeth .. the floor
    assert all(b.sum() >= 10 for b in bins)
    dark = [np.median(lum[b]) for b in bins]
    assert dark[0] < dark[1] < dark[2] and dark[2] > 2.0 * dark[0], dark
    redness = [np.median(red[b]) for b in bins]
    assert redness[2] > 1.2 * redness[0], redness
    lips = np.asarray(ap_draw._polygon_sdf(xy, jnp.asarray(face.lm[t.region("lips"), :2]))) < 0
    lip_red = np.median(face.img[..., 0][lips] / face.img[..., 1][lips])
    assert redness[2] > 1.2 * lip_red and dark[2] > 0.06  # the tongue: redder than the lips, not black


BARED = {"AU10": 1.0, "AU16": 0.7, "AU20": 0.4, "AU25": 1.0}
"""Anger's bared mouth over a closed jaw (the gallery's tense face without its brows and eyes)."""


def test_a_closed_jaw_with_bared_lips_shows_both_rows_of_teeth_clenched(face, basis):
    """Lips drawn off the teeth over a closed jaw (AU10 + AU16, no AU26): upper teeth under the upper lip,
    lower teeth over the lower lip, and no dark cavity between them (only the bite line); the same lips
    over a dropped jaw (AU26) open onto the dark cavity again, and a smile (AU12) keeps its own path."""
    lum, up, lo, mid = _near_lips(face, basis, **BARED)
    _, inside, u, _ = _mouth_parts(face, basis, **BARED)
    centre = inside & (u < 0.5)
    assert up.sum() > 5 and lo.sum() > 5 and centre.sum() > 40
    assert lum[up].mean() > 0.3 and lum[lo].mean() > 0.3  # both rows of teeth
    assert lum[up].mean() > lum[lo].mean() + 0.05  # the lower row behind the upper one, in its shadow
    dark = lum[centre] < 0.15
    assert dark.mean() < 0.12  # no cavity: at most the thin bite line (0.2 when painted as a dropped jaw)
    lum_j, _, _, _ = _near_lips(face, basis, **BARED, AU26=1.0)
    _, inside_j, u_j, _ = _mouth_parts(face, basis, **BARED, AU26=1.0)
    assert np.mean(lum_j[inside_j & (u_j < 0.5)] < 0.15) > dark.mean() + 0.2


def test_clenched_teeth_meet_on_a_straight_line_at_the_photos_lip_seam(face, basis):
    """The bite line runs through the photo's lip seam (a closed jaw keeps the teeth where they were) and is
    straight: the darkest row of the opening's middle column lies within 2 mm of the seam, and at a quarter
    of the width either side within 1 mm of the middle's (one that followed the opening's outline curved up
    towards the corners: a smile arc)."""
    au = au_vector(**BARED)
    _, _, ctx = make_scene(face, deformation(basis, au), au)
    xy = jnp.asarray(ap_draw._pixel_grid(SIZE, SIZE))
    clench, below = ap_mouth._clench(ctx, xy)
    assert float(clench) > 0.95
    t = topo.face_topology()
    up, lo = t.region("lips_inner_upper"), t.region("lips_inner_lower")
    i_up, i_lo = up[len(up) // 2], lo[len(lo) // 2]
    src = np.asarray(ctx.landmarks)[:, :2]
    seam = 0.5 * (src[i_up] + src[i_lo])
    dst = np.asarray(ctx.target_landmarks)[:, :2]
    at = lambda p: float(np.asarray(below)[int(p[1]), int(p[0])])  # noqa: E731
    assert at(dst[i_up]) < -1.0 < 1.0 < at(dst[i_lo])  # upper lip above the line, lower lip under it
    lum, inside, u, _ = _mouth_parts(face, basis, **BARED)
    c0, c1 = src[up[[0, -1]], 0]
    darkest = []
    for x in (seam[0] - 0.25 * abs(c1 - c0), seam[0], seam[0] + 0.25 * abs(c1 - c0)):
        col = int(x)
        rows = np.nonzero(inside[:, col])[0]
        darkest.append(rows[np.argmin(lum[rows, col])] + 0.5)
    assert abs(darkest[1] - seam[1]) < 2.0 * PX_PER_MM
    assert max(abs(darkest[0] - darkest[1]), abs(darkest[2] - darkest[1])) < 1.0 * PX_PER_MM
    for aus in ({"AU26": 0.6}, {"AU27": 0.6}, {"AU12": 1.0, "AU6": 0.6}):  # a dropped jaw, a smile: no clench
        au = au_vector(**BARED, **aus)
        _, _, ctx = make_scene(face, deformation(basis, au), au)
        assert float(ap_mouth._clench(ctx, xy)[0]) < 0.05, aus


@settings(max_examples=30, deadline=None)
@given(angle=st.floats(-np.pi, np.pi), cross=st.floats(-1.0, 1.0))
def test_clenched_rows_stay_upright_at_any_roll_and_when_the_inner_lips_cross(face, basis, angle, cross):
    """The bite line's "down" points to the chin however the head is rolled, and however FaceMesh placed a
    closed mouth's inner lips: on 21 of the 48 London neutral photos the lower inner lip's midpoint lies at
    or above the upper one (``cross`` > 0 here: above by up to a pixel). Taken from the inner lips, "down"
    turned both rows upside down on those faces (the darker lower row on top). Distances under the line
    are the same for the rolled head."""
    au = au_vector(**BARED)
    _, _, ctx = make_scene(face, deformation(basis, au), au)
    t = topo.face_topology()
    up, lo = t.region("lips_inner_upper"), t.region("lips_inner_lower")
    i_up, i_lo = up[len(up) // 2], lo[len(lo) // 2]
    lm = np.asarray(ctx.landmarks).copy()
    lm[i_lo, :2] = lm[i_up, :2] - np.float32([0.0, cross])
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]], np.float32)
    pivot = lm[1, :2].copy()

    def rolled(points):
        out = np.array(points, np.float32)
        out[..., :2] = (out[..., :2] - pivot) @ rot.T + pivot
        return out

    dst = np.asarray(ctx.target_landmarks)
    probes = dst[[i_up, i_lo], :2][None]  # the target's inner-lip midpoints, f32[1, 2, 2]
    belows = []
    for f in (lambda x: x, rolled):
        scene = eqx.tree_at(lambda c: (c.landmarks, c.target_landmarks), ctx, (f(lm), f(dst)))
        clench, below = ap_mouth._clench(scene, jnp.asarray(f(probes)))
        assert float(clench) > 0.95
        belows.append(np.asarray(below)[0])
    assert belows[0][0] < -1.0 < 1.0 < belows[0][1], belows[0]  # upper lip above the line, lower under it
    np.testing.assert_allclose(belows[1], belows[0], atol=1e-2)


def test_eyes_close_without_smearing_iris(face, basis):
    au = au_vector(AU43=1.0)
    render, frags, ctx = make_scene(face, deformation(basis, au), au)
    img = jnp.asarray(face.img)
    out, diag = apply(render, img, frags, ctx, options=ap.AppearanceOptions(shading=False, wrinkles=False))
    assert float(diag["eye_closure"].min()) > 0.8
    lm = face.lm
    xy = np.asarray(ap_draw._pixel_grid(SIZE, SIZE))
    near = np.hypot(xy[..., 0] - lm[topo.RIGHT_PUPIL, 0], xy[..., 1] - lm[topo.RIGHT_PUPIL, 1]) < 9
    dark = np.asarray(ap_draw._luminance(out))[near] < 0.2
    dark_render = np.asarray(ap_draw._luminance(render))[near] < 0.2
    assert dark.sum() < 0.5 * max(dark_render.sum(), 1)  # no squashed iris line left
    assert dark.sum() < 12


def test_eyes_open_wider_keep_iris_round(face, basis):
    au = au_vector(AU5=1.0)
    render, frags, ctx = make_scene(face, deformation(basis, au), au)
    out, _ = apply(
        render, jnp.asarray(face.img), frags, ctx, options=ap.AppearanceOptions(shading=False, wrinkles=False)
    )
    lm = face.lm
    xy = np.asarray(ap_draw._pixel_grid(SIZE, SIZE))
    near = np.hypot(xy[..., 0] - lm[topo.LEFT_PUPIL, 0], xy[..., 1] - lm[topo.LEFT_PUPIL, 1]) < 12
    iris = lambda im: int((np.asarray(ap_draw._luminance(jnp.asarray(im)))[near] < 0.2).sum())  # noqa: E731
    assert abs(iris(out) - iris(face.img)) <= 0.15 * iris(face.img)


def test_vmap_matches_loop_and_no_retrace(face, basis):
    """vmap == a loop of single calls, and a second call with new values does not retrace."""
    scenes = []
    for au in (au_vector(AU6=1.0, AU12=1.0, AU25=0.8, AU26=0.5), au_vector(AU4=1.0, AU15=0.8, AU17=1.0)):
        scenes.append(make_scene(face, deformation(basis, au), au))
    img = jnp.asarray(face.img)
    loop = [np.asarray(apply(r, img, f, c)[0]) for r, f, c in scenes]
    traces = apply._cache_size()
    np.asarray(apply(*scenes[1][:1], img, *scenes[1][1:])[0])
    assert apply._cache_size() == traces  # same shapes and options: no new compilation
    stack = jax.tree.map(lambda *xs: jnp.stack(xs), *scenes)
    batched = jax.jit(jax.vmap(lambda r, f, c: ap_compose.apply_appearance(r, img, f, c)[0]))(*stack)
    np.testing.assert_allclose(np.asarray(batched), np.stack(loop), atol=1e-4)
    assert np.abs(loop[0] - loop[1]).max() > 0.05  # the two targets really differ


# --------------------------------------------------------------------------------------------------------
# real pairs: does the synthesised smile darken/lighten where a real smile does?

LONDON_CROP = 416
SMILE = {"AU6": 0.8, "AU12": 1.0}


def _similarity(src, dst):
    """Umeyama: s, R, t with dst ~ s R src + t (NumPy, rows are points)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sv, vt = np.linalg.svd(b.T @ a)
    d = np.sign(np.linalg.det(u @ vt))
    dm = np.diag([1.0] * (src.shape[1] - 1) + [d])
    r = u @ dm @ vt
    s = np.trace(np.diag(sv) @ dm) / np.sum(a * a)
    return s, r, md - s * r @ ms


def _blur(x, sigma=3.0):
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma)


def london_pair_scene(london_dir, face_id, basis, mesh, au=None):
    """Synthesise a smile on a London neutral photo (NumPy raster) and warp the real smile onto it.

    Returns (render, frags, ctx, patch, smile_on_target): the real smiling photo resampled through the same
    surface points, so its difference to ``render`` is the real appearance change at each surface point.
    """
    from affectsynth.face.landmarks import detect_landmarks  # noqa: PLC0415
    from affectsynth.io import load_image  # noqa: PLC0415

    t = topo.face_topology()
    neutral = np.asarray(load_image(london_dir / "neutral" / f"{face_id}.jpg"), np.float32)
    smile_path = london_dir / "smiling" / f"{face_id}.jpg"
    smiling = np.asarray(
        load_image(smile_path if smile_path.is_file() else london_dir / "neutral" / f"{face_id}.jpg"),
        np.float32,
    )
    lm_n = np.asarray(detect_landmarks(neutral), np.float32)
    lm_s = np.asarray(detect_landmarks(smiling), np.float32)
    c = 0.5 * (lm_n[:, :2].min(0) + lm_n[:, :2].max(0))
    half = LONDON_CROP // 2
    top, left = (
        int(np.clip(round(c[1]) - half, 0, neutral.shape[0] - LONDON_CROP)),
        int(np.clip(round(c[0]) - half, 0, neutral.shape[1] - LONDON_CROP)),
    )
    patch = neutral[top : top + LONDON_CROP, left : left + LONDON_CROP]
    off = np.array([left, top, 0], np.float32)
    lm = lm_n - off
    s, r, _ = _similarity(t.template * np.array([1, -1, -1], np.float32), lm)
    au = au_vector(**SMILE) if au is None else np.asarray(au, np.float32)
    deform = deformation(basis, au) * np.array([1, -1, -1], np.float32)
    dst_lm = lm + (s * deform @ r.T).astype(np.float32)
    ring = lm[mesh.ring]
    c2 = ring[:, :2].mean(0)
    depth = lm[:, 2].max() - lm[:, 2].min()
    skirt = np.concatenate([ring[:, :2] + (ring[:, :2] - c2) * mesh.skirt, ring[:, 2:] + depth], 1)
    src = mesh.weights @ np.concatenate([lm, skirt])
    dst = mesh.weights @ np.concatenate([dst_lm, skirt])
    frags = rasterize_np(dst, mesh.triangles, LONDON_CROP, LONDON_CROP)
    tri = jnp.asarray(mesh.triangles)
    render = bilinear_np(patch, np.asarray(raster.interpolate(frags, jnp.asarray(src[:, :2]))))
    covered = (np.asarray(frags.triangle_id) >= 0)[..., None]
    render = np.where(covered, render, patch).astype(np.float32)
    # the real smile: its own landmarks, similarity-aligned to the neutral photo's crop (exposure drift out)
    s2, r2, t2 = _similarity(lm_s[:, :2], lm_n[:, :2])
    smile_xy = lm_s[:, :2] @ (s2 * r2).T + t2 - off[:2]
    inv = np.linalg.inv(s2 * r2)
    smile_dense = mesh.weights[:, :478] @ smile_xy + mesh.weights[:, 478:] @ skirt[:, :2]
    xy_full = (
        np.asarray(raster.interpolate(frags, jnp.asarray(smile_dense, jnp.float32))) + off[:2] - t2
    ) @ inv.T
    smile_on_target = bilinear_np(smiling, xy_full)
    ctx = ap.AppearanceContext(
        src_vertices=jnp.asarray(src, jnp.float32),
        dst_vertices=jnp.asarray(dst, jnp.float32),
        triangles=tri,
        groups=jnp.asarray(mesh.groups),
        surface=jnp.asarray(mesh.surface),
        landmarks=jnp.asarray(lm),
        target_landmarks=jnp.asarray(dst_lm),
        au=jnp.asarray(au),
        interocular=jnp.asarray(np.linalg.norm(lm[topo.LEFT_PUPIL] - lm[topo.RIGHT_PUPIL]), jnp.float32),
    )
    return jnp.asarray(render), frags, ctx, patch, smile_on_target


def smile_correlation(render, out, frags, ctx, smile_on_target):
    """Pearson r of synthetic vs real log-luminance change over the nasolabial and under-eye skin."""
    uv = np.asarray(raster.interpolate(frags, ctx.surface))
    ax, y = np.abs(uv[..., 0]), uv[..., 1]
    tid = np.asarray(frags.triangle_id)
    skin = (tid >= 0) & (np.asarray(ctx.groups)[np.maximum(tid, 0)] == ap.SKIN)
    region = skin & (
        ((ax > 16) & (ax < 40) & (y > -36) & (y < 2)) | ((ax > 16) & (ax < 56) & (y > 8) & (y < 25))
    )
    synth = _blur(log_lum(out) - log_lum(render))
    real = _blur(log_lum(smile_on_target) - log_lum(render))
    real = real - np.median(real[region])
    return float(np.corrcoef(synth[region], real[region])[0, 1])


def test_london_smile_correlates_with_real_smile(london_dir, basis):
    mesh = render_mesh()
    rs = []
    for fid in sorted(p.stem for p in (london_dir / "neutral").glob("*.jpg"))[:8]:
        render, frags, ctx, patch, real = london_pair_scene(london_dir, fid, basis, mesh)
        out, _ = apply(render, jnp.asarray(patch), frags, ctx)
        rs.append(smile_correlation(np.asarray(render), np.asarray(out), frags, ctx, real))
    assert len(rs) == 8
    assert np.median(rs) > 0.05, rs  # measured median 0.22 (shading alone 0.23, wrinkles alone 0.09)


@pytest.mark.parametrize(
    ("aus", "active"),
    [
        ({"AU43": 1.0}, "eyes"),  # eyes closed
        ({"AU1": 1.0, "AU2": 1.0, "AU5": 1.0}, "eyes"),  # eyes wide
        ({"AU25": 1.0, "AU26": 1.0, "AU27": 1.0, "AU20": 1.0, "AU4": 1.0, "AU9": 1.0}, "mouth_interior"),
    ],
    ids=["closed", "wide", "scream"],
)
def test_default_windows_hold_the_eyes_and_the_mouth(monkeypatch, basis, aus, active):
    """The eye and mouth cues run in windows sized as fractions of the crop (speed). On a crop as wide as
    the pipeline's (~4.2 inter-pupil distances), the defaults must give exactly the whole-crop result."""
    monkeypatch.setattr(sys.modules[__name__], "SIZE", 384)
    monkeypatch.setattr(sys.modules[__name__], "PX_PER_MM", 384 / 265.0)
    face = make_face()
    au = au_vector(**aus)
    render, frags, ctx = make_scene(face, deformation(basis, au), au)
    img = jnp.asarray(face.img)
    off = {"shading": False, "wrinkles": False, "mouth_interior": False, "eyes": False}
    for cue, window in (("eyes", "eye_window"), ("mouth_interior", "mouth_window")):
        default = ap.AppearanceOptions(**{**off, cue: True})
        whole = ap.AppearanceOptions(**{**off, cue: True, window: 1.0})
        a, _ = apply(render, img, frags, ctx, options=default)
        b, _ = apply(render, img, frags, ctx, options=whole)
        if cue == active:
            assert float(jnp.abs(a - render).max()) > 0.05, cue  # the cue is at work
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, err_msg=cue)


def test_small_faces_draw_fewer_mouth_structures():
    """Below 0.7 px/mm no lower teeth, tongue or clenched crown tones (they alias into a striped grey band);
    full detail from 1.2 px/mm; monotone in between."""
    mm = jnp.linspace(0.2, 3.0, 57)
    d = np.asarray(ap_mouth._detail(mm))
    assert np.all(d[np.asarray(mm) <= 0.7] == 0.0) and np.all(d[np.asarray(mm) >= 1.2] == 1.0)
    assert np.all(np.diff(d) >= 0.0)


def _seam_frame(closed_mm, dst_gap_mm, d=0.0, width=5):
    """A 1 x ``width`` pixel ``_MouthFrame`` on the lips' seam (distance ``d`` px) in the middle of the
    mouth."""
    one = jnp.ones((1, width), jnp.float32)
    return ap_mouth._MouthFrame(
        alpha=0 * one,
        deep=0 * one,
        u=0 * one,
        x_mm=0 * one,
        d_up=d * one,
        d_lo=d * one,
        lip_rise=0 * one,
        local_h=one,
        h_open=jnp.float32(0.0),
        mm=jnp.float32(1.5),
        opening=jnp.float32(0.0),
        closed_mm=jnp.float32(closed_mm),
        dst_gap_mm=jnp.float32(dst_gap_mm),
        src_gap=jnp.float32(8.0),
    )


def _open_mouth_photo(gap_mm, inside):
    """(photo, context) of the template face at ``PX_PER_MM`` with its inner lower lip lowered ``gap_mm``
    (the lower lip and chin with it), lips red on skin, and the opening between the inner lips painted
    ``inside(share)``: share 0 at the inner upper lip .. 1 at the inner lower lip."""
    t = topo.face_topology()
    canon = np.array(t.template, np.float32)
    below = canon[:, 1] < canon[t.region("lips_inner_lower"), 1].max() + 0.5
    below[t.region("lips_inner_upper")] = False
    canon[below, 1] -= gap_mm
    lm = to_image(canon)
    ys, xs = np.mgrid[:SIZE, :SIZE] + 0.5
    xy = jnp.stack([jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.float32)], -1)
    img = np.broadcast_to(np.float32([0.78, 0.58, 0.48]), (SIZE, SIZE, 3)).copy()
    outer = np.concatenate([lm[t.region("lips_outer_upper"), :2], lm[t.region("lips_outer_lower"), :2]])
    img[np.asarray(ap_draw._polygon_sdf(xy, jnp.asarray(outer))) < 0] = [0.66, 0.32, 0.3]
    up, lo = lm[t.region("lips_inner_upper"), :2], lm[t.region("lips_inner_lower"), :2]
    hole = np.asarray(ap_draw._polygon_sdf(xy, jnp.asarray(np.concatenate([up, lo])))) < 0
    top = np.interp(xs, up[:, 0], up[:, 1])
    bottom = np.interp(xs, lo[::-1, 0], lo[::-1, 1])
    share = np.clip((ys - top) / np.maximum(bottom - top, 1e-3), 0.0, 1.0)
    img[hole] = inside(share[hole])
    ctx = types.SimpleNamespace(landmarks=jnp.asarray(lm), interocular=jnp.float32(topo.IPD_MM * PX_PER_MM))
    return jnp.asarray(img), ctx


def test_a_photo_showing_its_teeth_gives_the_painted_teeth_their_hue(monkeypatch):
    """A smiling photo's own teeth set the painted teeth's hue (``_own_teeth``): the brightest third of the
    samples across its opening (lit crowns over a dark gap) gives it, fully where the lips part 5 mm or
    more and the samples are brighter and paler than the lips; the exposure stays the eye whites' (the
    teeth as bright as without). A dark gap, a red tongue or lips parted by a millimetre give nothing."""
    warm = np.float32([0.86, 0.78, 0.66])
    dark = np.float32([0.08, 0.03, 0.03])
    lips = jnp.float32([0.66, 0.32, 0.3])

    def teeth_over_gap(share):
        return np.where(share[:, None] < 0.6, warm, dark)

    def hue(rgb):
        return np.asarray(rgb) / float(ap_draw._luminance(jnp.asarray(rgb)))

    img, ctx = _open_mouth_photo(8.0, teeth_over_gap)
    own, weight = ap_mouth._own_teeth(img, ctx, lips)
    assert float(weight) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(np.asarray(own), hue(warm), atol=0.03)
    for inside in (
        lambda s: np.broadcast_to(dark, (len(s), 3)),  # a dark gap
        lambda s: np.broadcast_to(np.float32([0.72, 0.3, 0.32]), (len(s), 3)),  # the tongue
    ):
        assert float(ap_mouth._own_teeth(*_open_mouth_photo(8.0, inside), lips)[1]) == 0.0
    assert float(ap_mouth._own_teeth(*_open_mouth_photo(1.0, teeth_over_gap), lips)[1]) == 0.0
    # in the photo's colours (a dimmer photo: the teeth stay under their 0.96 ceiling), against the same
    # photo's colours without its teeth's hue
    with_teeth = ap_mouth._mouth_colours(0.6 * img, ctx)[1]
    monkeypatch.setattr(ap_mouth, "_own_teeth", lambda *a: (jnp.ones(3), jnp.float32(0.0)))
    without = ap_mouth._mouth_colours(0.6 * img, ctx)[1]
    assert float(jnp.max(with_teeth)) < 0.96
    np.testing.assert_allclose(hue(with_teeth), hue(warm), atol=0.03)
    assert float(ap_draw._luminance(with_teeth)) == pytest.approx(
        float(ap_draw._luminance(without)), rel=1e-5
    )
    assert np.abs(hue(without) - hue(warm)).max() > 0.05  # the eye whites' hue differs


def test_lips_closing_over_the_photos_teeth_hide_them():
    """A smiling photo's teeth and dark gap left between lips that close (its neutral) are taken, lip pixels
    (a little darker or lighter) are not; nothing when the photo's mouth was closed or the target's lips
    stay parted (a smile keeps its teeth)."""
    lip = jnp.array([0.7, 0.4, 0.4], jnp.float32)
    # teeth, lips, a shaded lip, the mouth's dark gap, teeth and gap blurred together (grey)
    pixels = jnp.array(
        [[[0.9, 0.88, 0.82], [0.7, 0.4, 0.4], [0.6, 0.35, 0.33], [0.15, 0.08, 0.08], [0.47, 0.45, 0.44]]],
        jnp.float32,
    )
    frame = _seam_frame
    closing = np.asarray(ap_mouth._gap_in_seam(pixels, frame(4.0, 0.2), lip))
    assert closing[0, 0] > 0.9 and closing[0, 1] == 0.0 and closing[0, 2] == 0.0
    assert closing[0, 3] > 0.9 and closing[0, 4] > 0.9
    far = np.asarray(ap_mouth._gap_in_seam(pixels, frame(4.0, 0.2, d=12.0), lip))
    assert far.max() < 0.01  # only along the seam
    for closed, gap in ((0.0, 0.2), (4.0, 3.0)):
        assert float(np.asarray(ap_mouth._gap_in_seam(pixels, frame(closed, gap), lip)).max()) == 0.0
    # monotone in how far the photo's opening closes
    m = [float(ap_mouth._gap_in_seam(pixels, frame(c, 0.2), lip)[0, 0]) for c in (0.0, 0.5, 1.0, 2.0)]
    assert np.all(np.diff(m) >= 0.0) and m[-1] > m[0]


def test_a_raised_lid_carries_its_lash_line(face, basis):
    """The static eye keeps out of the lid margin: under AU5 the photo's lash line rises with the lid
    instead of a copy staying at the old contour (FaceMesh then read the lid half way, issue 15 item 3)."""
    t = topo.face_topology()
    upper = t.region("right_eye_upper")[2:-2]  # the middle of the lid, away from the corners
    xy = ap_draw._pixel_grid(SIZE, SIZE)
    near = np.asarray(ap_draw._polyline_distance(xy, jnp.asarray(face.lm[upper, :2]))) < 1.0
    lashed = types.SimpleNamespace(**{**vars(face), "img": np.where(near[..., None], 0.05, face.img)})
    lashed.img = lashed.img.astype(np.float32)
    au = au_vector(AU5=1.0)
    render, frags, ctx = make_scene(lashed, deformation(basis, au), au)
    only_eyes = ap.AppearanceOptions(shading=False, wrinkles=False, mouth_interior=False)
    out, _ = apply(render, jnp.asarray(lashed.img), frags, ctx, options=only_eyes)
    lum = np.asarray(ap_draw._luminance(out))
    mid = upper[1:-1]
    old, new = face.lm[mid, :2], np.asarray(ctx.target_landmarks)[mid, :2]
    assert np.min(old[:, 1] - new[:, 1]) > 2.0  # the lid rises by more than the line's width

    def at(p):
        return lum[np.floor(p[:, 1]).astype(int), np.floor(p[:, 0]).astype(int)]

    assert np.max(at(new)) < 0.15  # the line is where the lid went
    assert np.min(at(old)) > 0.3  # and not left behind


def test_a_smile_creases_the_nasolabial_fold_softly_and_lights_the_cheek_apple_a_little():
    """AU12: a crease from the nose wing past the mouth corner, lateral of the corner, a soft valley several
    mm wide rather than a dark line (real smiles' folds: London, scripts/measure_smile.py); AU6: the cheek
    pad shades the fold under its lower edge and lifts its crest by ``APPLE_LIGHT`` (real open smiles'
    apples brighten 1.8 %; a 0.05 crest brightened ours 5 %); both scale with the intensity."""
    xs = np.linspace(0.0, 60.0, 601)
    for y, depth in ((-10.0, 0.05), (-20.0, 0.05), (-30.0, 0.03)):  # fading out past the corner (y -31)
        row = jnp.asarray(np.stack([xs, np.full_like(xs, y)], -1)[None], jnp.float32)
        d = np.asarray(wrinkles(row, jnp.asarray(au_vector(AU12=1.0)), jnp.asarray(0.5)))[0]
        fold = xs[np.argmin(d)]
        width = np.count_nonzero(d < 0.5 * d.min()) * (xs[1] - xs[0])  # mm darker than half the dip
        assert 26.0 < fold < 36.0 and -0.09 < d.min() < -depth, (y, fold, d.min())
        assert width >= 3.8, (y, width)  # main's line: 3.0-3.2 mm
        # the sneer (AU10) keeps a sharp, deep line: anger and disgust read less without it
        d10 = np.asarray(wrinkles(row, jnp.asarray(au_vector(AU10=1.0)), jnp.asarray(0.5)))[0]
        if y > -25.0:
            assert d10.min() < -0.1 and np.count_nonzero(d10 < 0.5 * d10.min()) * (xs[1] - xs[0]) < width
    pts = jnp.asarray([[[35.0, -3.0], [35.0, 40.0]]], jnp.float32)  # underside, far
    d6 = np.asarray(wrinkles(pts, jnp.asarray(au_vector(AU6=1.0)), jnp.asarray(0.5)))[0]
    half = np.asarray(wrinkles(pts, jnp.asarray(au_vector(AU6=0.5)), jnp.asarray(0.5)))[0]
    assert d6[0] < -0.02 and abs(d6[1]) < 1e-6, d6
    np.testing.assert_allclose(half, 0.5 * d6, atol=1e-6)
    cheek = np.stack(np.meshgrid(np.linspace(20.0, 50.0, 61), np.linspace(-8.0, 16.0, 49)), -1)
    lit = np.asarray(
        wrinkles(jnp.asarray(cheek, jnp.float32), jnp.asarray(au_vector(AU6=1.0)), jnp.asarray(0.5))
    )
    top = np.unravel_index(np.argmax(lit), lit.shape)
    assert 0.015 < lit.max() <= 0.03, float(lit.max())  # the crest: a few per cent, not the old +0.05
    assert 30.0 < cheek[top][0] < 40.0 and 3.0 < cheek[top][1] < 11.0, cheek[top]  # on the apple (35, 6)
    half_lit = np.asarray(
        wrinkles(jnp.asarray(cheek, jnp.float32), jnp.asarray(au_vector(AU6=0.5)), jnp.asarray(0.5))
    )
    np.testing.assert_allclose(half_lit, 0.5 * lit, atol=1e-6)


def test_rounded_contour_keeps_its_ends_and_cuts_its_corners():
    """Chaikin corner cutting of an inner-lip contour: ends kept, 2N - 2 points per round, a straight
    contour stays on its line, and a V's sharpest turn is much gentler (the incisal edge is an arc)."""
    line = jnp.stack([jnp.linspace(0.0, 10.0, 6), 2.0 + 0.5 * jnp.linspace(0.0, 10.0, 6)], -1)
    r = np.asarray(ap_mouth._rounded(line))
    assert r.shape == (2 * (2 * 6 - 2) - 2, 2)
    np.testing.assert_allclose(r[[0, -1]], np.asarray(line)[[0, -1]], atol=1e-6)
    np.testing.assert_allclose(r[:, 1], 2.0 + 0.5 * r[:, 0], atol=1e-5)

    def sharpest(p):
        e = np.diff(p, axis=0)
        ang = np.arctan2(e[:, 1], e[:, 0])
        return np.abs(np.diff(ang)).max()

    rng = np.random.default_rng(0)
    for _ in range(5):
        x = np.linspace(-10.0, 10.0, 11)
        v = np.stack([x, np.abs(x) * rng.uniform(0.2, 1.0) + rng.normal(0.0, 0.1, 11)], -1).astype(np.float32)
        rv = np.asarray(ap_mouth._rounded(jnp.asarray(v)))
        assert sharpest(rv) < 0.5 * sharpest(v)
        assert rv[:, 0].min() >= v[:, 0].min() and rv[:, 0].max() <= v[:, 0].max()  # inside the hull


def _flat_mouth(px_per_mm, gap_px, xs, rows, lip_rise=None):
    """(frame, distance to the upper lip) of a straight, evenly open mouth ``gap_px`` tall: columns at ``xs``
    (mm from the midline), pixel rows ``rows`` under the upper lip; ``lip_rise`` (px, per column): how far
    the lower lip under each column lies above its midline point (the frame's field; 0 by default)."""
    x_mm, d_up = (jnp.asarray(a) for a in np.meshgrid(xs, rows))
    one = jnp.ones_like(x_mm)
    rise = 0 * one if lip_rise is None else jnp.asarray(lip_rise, jnp.float32)[None, :] * one
    frame = ap_mouth._MouthFrame(
        alpha=one,
        deep=one,
        u=x_mm / 25.0,
        x_mm=x_mm,
        d_up=d_up,
        d_lo=jnp.maximum(gap_px - d_up, 0.0),
        lip_rise=rise,
        local_h=gap_px * one,
        h_open=jnp.float32(gap_px),
        mm=jnp.float32(px_per_mm),
        opening=jnp.float32(100.0),
        closed_mm=jnp.float32(0.0),
        dst_gap_mm=jnp.float32(gap_px / px_per_mm),
        src_gap=jnp.float32(0.0),
    )
    return frame, d_up


def _teeth_band(px_per_mm, gap_px=8.0, smile=1.0):
    """Height (px) of the upper teeth down each column of a straight, evenly open mouth ``gap_px`` tall, for
    columns at x = -12..12 mm: (x mm, heights)."""
    xs = np.arange(-12.0, 12.01, 0.25, dtype=np.float32)
    frame, d_up = _flat_mouth(px_per_mm, gap_px, xs, np.arange(0.0, 40.0, 0.1, dtype=np.float32))
    m_up = np.asarray(
        ap_mouth._teeth(frame, jnp.ones(3), jnp.float32(smile), jnp.float32(1.0), jnp.float32(0.0), d_up)[0]
    )
    return xs, m_up.sum(0) * 0.1


def test_crowns_touch_on_a_hairline_and_darken_from_the_midline_out():
    """Teeth are told apart by their own tones (``CROWN_TONES``: central incisors brightest), their convex
    faces and a hairline where they touch, not by dark bars: the line is gone 0.8 mm from the gap (the
    Gaussian lines before reached 2.1 mm either side: bars that made clenched rows a grille), and on a
    smaller face it widens to 0.6 px with the same total darkness."""
    xs = np.arange(0.0, 40.0, 0.01, dtype=np.float32)
    edges = ap_mouth.TOOTH_EDGES_MM
    side, line, tone = (np.asarray(a) for a in ap_mouth._crowns(jnp.asarray(xs), edges, 4.0))  # 4 px/mm
    for g in edges:
        at = np.argmin(np.abs(xs - g))
        assert line[at] == pytest.approx(1.0, abs=1e-3) and side[at] == pytest.approx(1.0, abs=1e-3)
    to_gap = np.min(np.abs(xs[:, None] - np.float32(edges)[None, :]), axis=1)
    assert np.all(line[to_gap > 0.8] == 0.0)
    middles = [4.25, 11.75, 18.5, 25.0]
    tones = [tone[np.argmin(np.abs(xs - m))] for m in middles]
    assert np.all(np.diff(tones) < 0) and tones[0] == 1.0, tones
    assert all(side[np.argmin(np.abs(xs - m))] < 1e-3 for m in middles)
    small = np.asarray(ap_mouth._crowns(jnp.asarray(xs), edges, 0.5)[1])
    near = to_gap < 4.0
    assert small[near].sum() == pytest.approx(line[near].sum(), rel=0.05)
    assert (small > 0.5 * small.max()).sum() > 2 * (line > 0.5).sum()  # wider, and as dark in all


def test_a_smiles_teeth_are_convex_crowns_of_one_tone_on_each_rows_own_gaps():
    """A smile's rows are crowns like a clenched row's, not a flat band with soft bars: across the upper row
    each crown is brightest in its middle and darkens towards its sides as a convex face does
    (``CROWN_ROUNDING`` times an open row's ``OPEN_RELIEF``, quadratic), darker still on the hairline at each
    gap of ``TOOTH_EDGES_MM``;
    unclenched, the crowns share one tone (a clenched row's ``CROWN_TONES`` on a smile read as bared teeth).
    The lower row's hairlines lie on its own gaps (``LOWER_TOOTH_EDGES_MM``), not under the upper ones."""
    mm = 4.0
    xs = np.arange(-30.0, 30.001, 0.05, dtype=np.float32)
    frame, d_up = _flat_mouth(mm, 120.0, xs, np.arange(0.0, 120.0, 1.0, dtype=np.float32))
    one, zero = jnp.float32(1.0), jnp.float32(0.0)
    m_up, up, m_lo, lo = (np.asarray(a) for a in ap_mouth._teeth(frame, jnp.ones(3), one, one, zero, d_up))
    turn = 1.0 - 0.65 * np.clip(np.abs(xs / 25.0), 0.0, 1.0) ** 2  # the row turning from the light
    upper = up[10, :, 0] / turn  # 2.5 mm under the lip, across the upper crowns
    lower = lo[-8, :, 0] / turn  # 2 mm over the lower lip, across the lower crowns
    front = np.abs(xs) < 16.0
    # (the lower row tapers from the midline: full height over its incisors and the canines' near halves)
    assert m_up[10][front].min() > 0.99 and m_lo[-8][np.abs(xs) < 12.0].min() > 0.99

    def at(row, x):
        return row[np.argmin(np.abs(xs - x))]

    centre = [at(upper, m) for m in (4.25, 11.75, -4.25, -11.75)]
    assert max(centre) - min(centre) < 0.02, centre  # one tone
    rounding = ap_mouth.CROWN_ROUNDING * ap_mouth.OPEN_RELIEF
    e = np.asarray(ap_mouth.TOOTH_EDGES_MM)
    middles, halves = 0.5 * (e[:-1] + e[1:]), 0.5 * np.diff(e)  # crown half widths, between their middles
    for m, g in ((4.25, 8.5), (11.75, 15.0), (-4.25, -8.5)):  # the side of a crown, 0.9 mm from its gap
        side = at(upper, g - np.sign(g) * 0.9)
        half = np.interp(abs(g) - 0.9, middles, halves)
        want = rounding * (1.0 - 0.9 / half) ** 2  # convex: quadratic from its middle to its gaps
        assert 1.0 - side / at(upper, m) == pytest.approx(want, abs=0.01), (m, at(upper, m), side)
    for g in ap_mouth.TOOTH_EDGES_MM[1:4]:
        assert at(upper, g) < at(upper, g - 0.9) - 0.05 and at(upper, -g) < at(upper, -g + 0.9) - 0.05
    # the lower row: darkest on its own gaps, not on the upper ones
    for g_lo, g_up in zip(ap_mouth.LOWER_TOOTH_EDGES_MM[1:3], ap_mouth.TOOTH_EDGES_MM[1:3], strict=True):
        assert at(lower, g_lo) < at(lower, g_up) - 0.05, (g_lo, g_up)


def test_a_small_faces_wide_open_mouth_has_a_tongue_and_a_small_opening_has_none():
    """Below 0.7 px/mm (``_detail``: the demo's astronaut is at 0.68) the tongue and the lower teeth are
    drawn where they are a few pixels tall: a surprised mouth 18 px tall gets its tongue and the lower teeth
    of a wide opening (before: a black hole over a rim of upper teeth), a 4 px slit neither."""
    lip = jnp.float32([0.7, 0.4, 0.4])
    xs = np.arange(-12.0, 12.01, 0.25, dtype=np.float32)
    for gap_px, drawn in ((18.0, True), (4.0, False)):
        frame, d_up = _flat_mouth(0.68, gap_px, xs, np.arange(0.0, gap_px, 0.25, dtype=np.float32))
        tongue = float(np.asarray(ap_mouth._tongue(frame, lip)[0]).max())
        one, zero = jnp.float32(1.0), jnp.float32(0.0)
        lower = float(np.asarray(ap_mouth._teeth(frame, jnp.ones(3), zero, one, zero, d_up)[2]).max())
        if drawn:
            assert tongue > 0.9 and lower > 0.9, (tongue, lower)
        else:
            assert tongue < 0.05 and lower < 0.05, (tongue, lower)


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.floats(0.05, 10.0), min_size=1, max_size=8),
    values=st.lists(st.floats(-2.0, 2.0), min_size=9, max_size=9),
    start=st.floats(-20.0, 20.0),
)
def test_ramps_equal_interp(gaps, values, start):
    """``_ramps`` is ``jnp.interp`` (constant beyond the end nodes) without its search and gather."""
    nodes = start + np.cumsum([0.0, *gaps])
    vals = np.float32(values[: len(nodes)])
    x = jnp.asarray(np.linspace(nodes[0] - 5.0, nodes[-1] + 5.0, 2001, dtype=np.float32))
    want = np.asarray(jnp.interp(x, jnp.asarray(nodes, jnp.float32), jnp.asarray(vals)))
    slope = np.abs(np.diff(vals) / np.diff(nodes)).max(initial=0.0)
    tol = 2e-5 + 4e-7 * slope * float(np.abs(x).max())  # float32 positions, times the steepest ramp
    np.testing.assert_allclose(np.asarray(ap_mouth._ramps(x, nodes, vals)), want, atol=tol)


def test_clenched_rows_overlap_with_no_dark_gap_between_them():
    """Clenched, the upper incisors' edge lies over the lower row (the overbite): down the middle of the
    mouth the teeth never darken below 0.4 across the bite (a 0.5 mm black line before), the lower row is
    darkest just under the upper edge, in its shadow, and lighter 1 mm lower, and a little darker than the
    upper row (set back behind it, but lit nearly as well: at 0.82 of its brightness, London angry mouths
    showed brown tiles under white ones)."""
    mm = 2.0
    xs = np.arange(-3.0, 3.001, 0.05, dtype=np.float32)
    rows = np.arange(0.0, 20.0, 0.25, dtype=np.float32)
    frame, d_up = _flat_mouth(mm, 20.0, xs, rows)
    below = d_up - 10.0  # the bite line across the middle
    one = jnp.float32(1.0)
    m_up, up, m_lo, lo = (np.asarray(a) for a in ap_mouth._teeth(frame, jnp.ones(3), one, one, one, below))
    col = m_lo[..., None] * lo  # over a black cavity
    col = col * (1.0 - m_up[..., None]) + m_up[..., None] * up
    lum = np.median(col.mean(-1), axis=1)
    bite = np.abs(rows - 10.0) < 3.0
    assert lum[bite].min() > 0.4, lum[bite].min()
    edge = np.argmin(np.where(bite, lum, np.inf))
    assert 9.5 <= rows[edge] <= 10.5  # darkest at the upper edge, on the lower row
    assert lum[np.searchsorted(rows, 10.0 + 1.0 * mm)] > lum[edge] + 0.2
    ratio = np.median(lum[rows > 12.0]) / np.median(lum[rows < 8.0])
    assert 0.85 < ratio < 0.97, ratio


def test_incisal_edge_notches_between_the_teeth(monkeypatch):
    """A smile's upper teeth end in rounded tips where their edge stands over the dark mouth (a wide-open
    smile, 30 px = 20 mm at 1.5 px/mm): the band is shorter at each gap between crowns than without the
    notches, by about ``EMBRASURE_MM``, and unchanged across the middle of a crown; small faces (where the
    teeth alias) get no notches."""
    xs, _ = _teeth_band(1.5, gap_px=30.0)
    notched = {mm: _teeth_band(mm, gap_px=30.0)[1] for mm in (1.5, 0.6)}
    want = ap_mouth.EMBRASURE_MM * 1.5  # pixels at 1.5 px/mm
    monkeypatch.setattr(ap_mouth, "EMBRASURE_MM", 0.0)
    notch = {mm: _teeth_band(mm, gap_px=30.0)[1] - notched[mm] for mm in (1.5, 0.6)}
    at_gap = notch[1.5][np.isclose(xs, 0.0) | np.isclose(np.abs(xs), 8.5)]
    mid_crown = notch[1.5][np.isclose(np.abs(xs), 4.25)]
    assert np.all(at_gap > 0.6 * want) and np.all(at_gap < 1.5 * want), at_gap
    assert np.all(np.abs(mid_crown) < 0.05), mid_crown
    assert np.abs(notch[0.6]).max() < 1e-6


def test_a_wide_smiles_lateral_incisors_end_higher_than_the_centrals(monkeypatch):
    """Where a smile's upper edge stands free over the dark mouth (30 px = 20 mm at 1.5 px/mm), each crown
    ends at its own height (``INCISAL_RISE_MM``): the laterals ~0.8 mm above the central incisors, the
    canines between; all at one height, the row was a ruled band. Teeth resting on the lower lip (an 8 mm
    smile) and small faces (no fine detail) are unchanged."""
    mm = 1.5
    xs, stepped = _teeth_band(mm, gap_px=30.0)
    resting, small = _teeth_band(mm, gap_px=8.0 * mm)[1], _teeth_band(0.6, gap_px=30.0)[1]
    central, lateral, canine = ap_mouth.INCISAL_RISE_MM[:3]
    assert central == 0.0 and lateral > canine > 0.0
    monkeypatch.setattr(ap_mouth, "INCISAL_RISE_MM", (0.0,) * len(ap_mouth.INCISAL_RISE_MM))
    _, level = _teeth_band(mm, gap_px=30.0)
    rise = level - stepped  # pixels the edge stands higher
    for middle, want_mm in ((4.25, central), (11.75, lateral), (18.5, canine)):
        got = rise[np.isclose(np.abs(xs), middle)]
        assert np.all(np.abs(got - want_mm * mm) < 0.15 * mm), (middle, got)
    np.testing.assert_allclose(_teeth_band(mm, gap_px=8.0 * mm)[1], resting, atol=1e-5)
    np.testing.assert_allclose(_teeth_band(0.6, gap_px=30.0)[1], small, atol=1e-5)


def test_a_smiles_teeth_resting_on_the_lower_lip_part_in_a_notch_at_each_gap(monkeypatch):
    """Upper teeth resting on the lower lip (an 8 mm smile) still part at each gap: a crown's rounded tips
    leave a shadowed notch (``LIP_EMBRASURE_MM`` deep at the gap, shaded by ``TIP_NOTCH_SHADE``), which
    narrows with the crown's convex face and is gone in the middle of a crown, so no dark line runs along
    the lip. Clenched rows, an edge standing free over the cavity and small faces are unchanged."""
    mm = 2.0
    one, zero = jnp.float32(1.0), jnp.float32(0.0)
    xs = np.arange(-24.0, 24.001, 0.05, dtype=np.float32)

    def upper(gap_px, px_mm=mm, clench=zero):
        frame, d_up = _flat_mouth(px_mm, gap_px, xs, np.arange(0.0, gap_px, 0.1, dtype=np.float32))
        return np.asarray(ap_mouth._teeth(frame, jnp.ones(3), one, one, clench, d_up)[1][..., 0])

    cases = {
        "lip": (8.0 * mm,),
        "free": (20.0 * mm,),
        "clenched": (8.0 * mm, mm, one),
        "small": (8.0 * 0.6, 0.6),
    }
    got = {k: upper(*v) for k, v in cases.items()}
    depth_px = ap_mouth.LIP_EMBRASURE_MM * mm
    monkeypatch.setattr(ap_mouth, "LIP_EMBRASURE_MM", 0.0)
    plain = {k: upper(*v) for k, v in cases.items()}
    for k in ("free", "clenched", "small"):
        np.testing.assert_allclose(got[k], plain[k], atol=1e-6, err_msg=k)
    ratio = got["lip"] / plain["lip"]

    def col(x):
        return np.argmin(np.abs(xs - x))

    last = -2  # 0.1 px above the lower lip
    for g in ap_mouth.TOOTH_EDGES_MM[:4]:
        for x in (g, -g):
            assert ratio[last, col(x)] == pytest.approx(1.0 - ap_mouth.TIP_NOTCH_SHADE, abs=0.02), x
            # a rounded V: tallest at the gap (over half its depth dark), lower 0.5 mm beside it, gone at 2 mm
            tall = [(ratio[:, col(x + dx)] < 0.7).sum() * 0.1 for dx in (0.0, 0.5, 2.0)]
            assert 0.5 * depth_px < tall[0] <= depth_px, (x, tall)
            assert tall[1] < tall[0] - 0.1 and tall[2] == 0.0, (x, tall)
    middles = 0.5 * (np.asarray(ap_mouth.TOOTH_EDGES_MM[:-1]) + np.asarray(ap_mouth.TOOTH_EDGES_MM[1:]))
    for m in middles[:3]:
        np.testing.assert_allclose(ratio[:, col(m)], 1.0, atol=1e-6)  # no line along the lip mid-crown
    # above the notch the crowns are untouched
    np.testing.assert_allclose(ratio[: int((8.0 * mm - depth_px) / 0.1) - 1], 1.0, atol=1e-6)


def test_a_small_faces_clenched_rows_show_hairlines_but_not_their_crowns_tones():
    """Below ``_detail``'s scale a clenched lower row's crowns (5-7 mm, 3-4 px on the demo's astronaut at
    0.68 px/mm) are drawn without their own tones and rounding: they aliased into a grey band of vertical
    stripes under the white upper row. The hairlines where crowns touch stay, in both rows (without them her
    bared rows were a white mouth guard): widened to 0.6 px, each darkens its gap and nothing 1.5 px away.
    Across the rest of the mouth the lower row changes only as the whole row turns from the light; on a
    large face its crowns' tones and rounding still show."""
    xs = np.arange(-10.0, 10.001, 0.05, dtype=np.float32)
    one = jnp.float32(1.0)
    turn = 1.0 - 0.65 * (xs / 25.0) ** 2

    def rows(mm):
        frame, d_up = _flat_mouth(mm, 12.0 * mm, xs, np.array([3.0 * mm, 9.0 * mm], np.float32))
        _, up, _, lo = ap_mouth._teeth(frame, jnp.ones(3), one, one, one, d_up - 6.0 * mm)
        return np.asarray(up)[0, :, 0] / turn, np.asarray(lo)[1, :, 0] / turn  # 3 mm over, 3 mm under

    def to_gap(edges):
        return np.min(np.abs(np.abs(xs)[:, None] - np.float32(edges)[None, :]), axis=1)

    mm = 0.6
    up, lo = rows(mm)
    for row, edges in ((up, ap_mouth.TOOTH_EDGES_MM), (lo, ap_mouth.LOWER_TOOTH_EDGES_MM)):
        d = to_gap(edges)
        away = d > 1.5 / mm
        level = np.median(row[away])
        for g in (e for e in edges if e < 10.0):
            at = np.abs(np.abs(xs) - g) < 0.3
            assert level - row[at].min() > 0.02, (g, level, row[at].min())
    assert np.ptp(lo[to_gap(ap_mouth.LOWER_TOOTH_EDGES_MM) > 1.5 / mm]) < 0.01
    _, large = rows(2.0)
    assert np.ptp(large[to_gap(ap_mouth.LOWER_TOOTH_EDGES_MM) > 1.5 / 2.0]) > 0.05


def test_the_lower_row_grows_with_the_opening_and_is_never_a_ghost():
    """A smile's lower teeth appear as the jaw drops (from ~6 mm openings, ``wide``): the opening sets how
    much of the row shows, never how opaque it is. Faded in by opacity, a 12-16 mm opening drew them as a
    grey ghost over the dark cavity (London excited outputs, by eye). (Rows under a millimetre keep a soft
    edge.)"""
    mm = 2.0
    one, zero = jnp.float32(1.0), jnp.float32(0.0)
    xs = np.arange(-2.0, 2.01, 0.5, dtype=np.float32)
    heights = []
    for gap_mm in (12.0, 14.0, 16.0, 24.0):
        rows = np.arange(0.0, gap_mm * mm, 0.1, dtype=np.float32)
        frame, d_up = _flat_mouth(mm, gap_mm * mm, xs, rows)
        m_lo = np.asarray(ap_mouth._teeth(frame, jnp.ones(3), one, one, zero, d_up)[2])
        assert m_lo.max() > 0.99, (gap_mm, m_lo.max())
        heights.append(float(m_lo[:, len(xs) // 2].sum() * 0.1 / mm))
    assert np.all(np.diff(heights) > 0.2), heights


def test_a_dropped_jaws_lower_teeth_show_in_the_middle_only():
    """A relaxed open mouth (no smile: surprise) shows its lower teeth at the midline, tapering to none 0.7
    of the way to the corners (the lower lip covers the teeth beyond the incisors and canines): kept along
    all of the mouth, the row followed the lower lip round the opening, a denture's white arch (London
    surprised outputs, by eye). The upper row keeps ``REST_INCISOR_MM`` across the front (tapered too, it
    cost the critic's surprised reads on 2 of 48 faces)."""
    mm, gap = 2.0, 40.0  # a 20 mm opening
    xs = np.arange(-25.0, 25.01, 0.5, dtype=np.float32)  # u = x / 25 in ``_flat_mouth``
    rows = np.arange(0.0, gap, 0.05, dtype=np.float32)
    frame, d_up = _flat_mouth(mm, gap, xs, rows)
    zero, bare = jnp.float32(0.0), jnp.float32(0.5)
    m_up, _, m_lo, _ = (np.asarray(a) for a in ap_mouth._teeth(frame, jnp.ones(3), zero, bare, zero, d_up))
    # band heights (px) per column; the mask's soft edge (0.9 px) takes half a pixel off its integral
    up, lo = m_up.sum(0) * 0.05 + 0.45, m_lo.sum(0) * 0.05

    def at(h, x):
        return float(h[np.argmin(np.abs(xs - x))])

    rest = ap_mouth.REST_INCISOR_MM * mm
    for x in (0.0, 12.5, -12.5):
        assert at(up, x) == pytest.approx(rest, abs=0.15), x
    assert at(lo, 0.0) > 2.0
    assert at(lo, 15.0) < 0.4 * at(lo, 0.0) and at(lo, 18.0) < 0.05 * at(lo, 0.0)
    assert at(lo, -15.0) == pytest.approx(at(lo, 15.0), abs=1e-3)


def test_a_dropped_jaws_lower_teeth_hide_where_its_lip_rises():
    """The lower incisal edges stay with the jaw: where a dropped jaw's lower lip rises off its lowest point
    (``lip_rise``: the jaw field's V), it covers them, column by column; they show as a patch with a level
    top in the middle (following the V, the row drew a denture's white V along the lip: London
    ``surprised`` outputs 001, 039, 097, by eye). A smile's lower lip curves up with the teeth's own arc:
    its row is unchanged."""
    mm, gap = 2.0, 40.0
    xs = np.arange(-25.0, 25.01, 0.5, dtype=np.float32)
    rows = np.arange(0.0, gap, 0.05, dtype=np.float32)
    rise = 0.8 * np.abs(xs) * mm  # px: a V, 0.8 mm up per mm out
    zero, half = jnp.float32(0.0), jnp.float32(0.5)

    def heights(smile, lip_rise):
        frame, d_up = _flat_mouth(mm, gap, xs, rows, lip_rise)
        m_lo = np.asarray(ap_mouth._teeth(frame, jnp.ones(3), smile, half, zero, d_up)[2])
        return m_lo.sum(0) * 0.05

    flat, v = heights(zero, None), heights(zero, rise)
    assert flat[xs == 0.0][0] > 2.0 and v[xs == 0.0][0] == pytest.approx(flat[xs == 0.0][0], abs=1e-4)
    shown = flat - rise  # what the lip leaves of each column's band (px; both lose the soft edge's share)
    np.testing.assert_allclose(v[shown > 1.0], shown[shown > 1.0], atol=0.05)
    assert np.all(v[shown <= -0.5] < 1e-3) and np.all(v <= flat + 1e-4)  # (flat lost the soft edge)
    assert np.abs(xs[v > 1e-3]).max() < 4.0  # a patch in the middle: none past 4 mm (the band reached 17)
    one = jnp.float32(1.0)
    np.testing.assert_allclose(heights(one, rise), heights(one, None), atol=1e-4)


def test_smile_teeth_rest_on_the_lower_lip_without_a_sliver_of_cavity():
    """A smile whose upper teeth end within a millimetre of the lower lip rests them on it: every column is
    teeth down to the lip, with no notches (a sub-millimetre line of cavity under the incisal edge, broken
    into dots by the pixel grid, drew a dark zipper along London happy outputs' lower lip). A wide opening
    (20 mm, the jaw penalty) keeps its dark mouth under the teeth, and so does a dropped jaw with no smile."""
    mm = 1.5
    for gap_mm in (6.0, 8.0, 9.0, 10.0):
        gap = gap_mm * mm
        xs, h = _teeth_band(mm, gap_px=gap)
        front = np.abs(xs) < 9.0
        assert np.all(h[front] >= gap - 0.1), (gap_mm, (gap - h[front]).max())
    _, h_wide = _teeth_band(mm, gap_px=30.0)
    assert np.all(h_wide[np.abs(xs) < 9.0] < 0.7 * 30.0)
    _, h_jaw = _teeth_band(mm, gap_px=15.0, smile=0.0)
    assert np.all(h_jaw[np.abs(xs) < 9.0] < 0.6 * 15.0)


def test_creases_darken_in_the_skins_own_colour(face, basis):
    """A wrinkle's furrow is a shadow of the skin: red kept more than blue, so the skin there is darker and
    more saturated (the grief folds darkened equally in R, G, B read as pale grey stripes); its lit edge
    brightens all channels alike."""
    au = au_vector(AU1=1.0, AU4=0.4)
    render, frags, ctx = make_scene(face, np.zeros((topo.NUM_LANDMARKS, 3), np.float32), au)
    off = ap.AppearanceOptions(shading=False, mouth_interior=False, eyes=False)
    out, diag = apply(render, jnp.asarray(face.img), frags, ctx, options=off)
    wd = np.asarray(diag["wrinkles"])
    gain = np.log(np.maximum(np.asarray(out), 1e-4)) - np.log(np.maximum(np.asarray(render), 1e-4))
    crease, edge = wd < -0.05, wd > 0.01
    assert crease.sum() > 20 and edge.sum() > 20
    r, g, b = (gain[..., c][crease] for c in range(3))
    assert np.all(r > b + 0.01) and np.all(r < 0.0), (r.max(), b.max())  # darker, redder
    lum = 0.2126 * r + 0.7152 * g + 0.0722 * b
    assert np.allclose(lum, wd[crease], atol=0.01)  # the same darkening of luminance as before
    assert np.allclose(gain[edge][:, 0], gain[edge][:, 2], atol=1e-3)
