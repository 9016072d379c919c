"""Tests of affectsynth.raster against a brute-force NumPy reference and analytic cases."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from affectsynth.face.topology import face_topology
from affectsynth.render.raster import Fragments, interpolate, rasterize, sample_bilinear, transfer_texture


@functools.partial(jax.jit, static_argnames=("height", "width", "cull_backfaces", "capacity"))
def raster_jit(vertices, triangles, height, width, cull_backfaces=False, capacity=None):
    return rasterize(vertices, triangles, height, width, cull_backfaces=cull_backfaces, capacity=capacity)


S = 16  # image side of the small cases; they are padded to one shape so that they share compilations
PAD_V, PAD_F = 48, 16


def pad_mesh(vertices, triangles):
    """Pad to PAD_V vertices and PAD_F triangles; the extra triangles have zero area (cover nothing)."""
    assert len(vertices) < PAD_V and len(triangles) <= PAD_F
    v = np.zeros((PAD_V, 3), np.float32)
    v[: len(vertices)] = vertices
    t = np.full((PAD_F, 3), PAD_V - 1, np.int32)
    t[: len(triangles)] = triangles
    return v, t


def raster_small(vertices, triangles, cull_backfaces=False, capacity=None):
    """``rasterize`` on an S x S image with the mesh padded to one shape (shared compilations)."""
    v, t = pad_mesh(vertices, triangles)
    return raster_jit(v, t, S, S, cull_backfaces=cull_backfaces, capacity=capacity)


def reference(vertices, triangles, height, width):
    """Per pixel, per triangle, in float64: inside flags, barycentrics, depth, and a 'robust' flag.

    A pixel is robust when its centre is at least 1e-3 px from every edge line of every triangle whose
    bounding box holds it and the two nearest candidate depths differ by more than 1e-3 (so float32
    rounding cannot change the answer).
    """
    v = np.asarray(vertices, np.float64)
    ids = np.full((height, width), -1)
    bary = np.zeros((height, width, 3))
    depth = np.full((height, width), np.inf)
    robust = np.ones((height, width), bool)
    for i in range(height):
        for j in range(width):
            p = np.array([j + 0.5, i + 0.5])
            hits = []
            for t, tri in enumerate(triangles):
                a, b, c = v[tri, :2]
                area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
                if area == 0:
                    continue
                e = []
                for k in range(3):
                    s, f = v[tri[(k + 1) % 3], :2], v[tri[(k + 2) % 3], :2]
                    ek = (f[0] - s[0]) * (p[1] - s[1]) - (f[1] - s[1]) * (p[0] - s[0])
                    if abs(ek) / max(np.hypot(*(f - s)), 1e-12) < 1e-3:
                        robust[i, j] = False
                    e.append(ek / area)
                e = np.array(e)
                if np.all(e >= 0):
                    hits.append((float(e @ v[tri, 2]), t, e))
            if hits:
                hits.sort(key=lambda h: (h[0], h[1]))
                if len(hits) > 1 and hits[1][0] - hits[0][0] < 1e-3:
                    robust[i, j] = False
                depth[i, j], ids[i, j], bary[i, j] = hits[0]
    return ids, bary, depth, robust


def random_mesh(seed, num_tri, height, width, spread=1.3):
    rng = np.random.default_rng(seed)
    centres = rng.uniform([-0.15 * width, -0.15 * height], [spread * width, spread * height], (num_tri, 1, 2))
    xy = centres + rng.normal(0, 0.25 * min(height, width), (num_tri, 3, 2))
    z = rng.uniform(-5, 5, (num_tri, 1, 1)) + rng.normal(0, 1, (num_tri, 3, 1))
    vertices = np.concatenate([xy, z], -1).reshape(-1, 3).astype(np.float32)
    return vertices, np.arange(3 * num_tri, dtype=np.int32).reshape(-1, 3)


def face_vertices(size, width_fraction=0.45):
    topo = face_topology()
    v = topo.template
    s = width_fraction * size / np.ptp(v[:, 0])
    return (
        np.stack([v[:, 0] * s + size / 2, -v[:, 1] * s + size / 2, -v[:, 2] * s], 1).astype(np.float32),
        topo.triangles,
    )


def check_against_reference(frags: Fragments, vertices, triangles, height, width):
    ids, bary, depth, robust = reference(vertices, triangles, height, width)
    got = np.asarray(frags.triangle_id)
    np.testing.assert_array_equal(got[robust], ids[robust])
    both = robust & (ids >= 0)
    np.testing.assert_allclose(np.asarray(frags.barycentric)[both], bary[both], atol=2e-4)
    np.testing.assert_allclose(np.asarray(frags.depth)[both], depth[both], atol=2e-3, rtol=1e-4)
    assert np.all(np.isinf(np.asarray(frags.depth)[got < 0]))
    return robust


@pytest.mark.parametrize("seed", [0, 1])
def test_random_meshes_match_brute_force(seed):
    vertices, triangles = random_mesh(seed, 12, S, S)
    frags = raster_small(vertices, triangles)
    robust = check_against_reference(frags, vertices, triangles, S, S)
    assert robust.mean() > 0.6
    # a tiny capacity forces many rounds of the window loop: same answer, nothing dropped
    few = raster_small(vertices, triangles, capacity=3)
    np.testing.assert_array_equal(np.asarray(few.triangle_id), np.asarray(frags.triangle_id))


def test_mesh_partly_outside_and_culling_of_nothing():
    vertices, triangles = random_mesh(5, 10, S, S, spread=1.0)
    vertices[:, :2] += np.float32([-9.0, 7.0])  # push a good part of it out of the frame
    frags = raster_small(vertices, triangles)
    check_against_reference(frags, vertices, triangles, S, S)
    assert 0 < np.mean(np.asarray(frags.triangle_id) >= 0) < 1


def two_triangle_rectangle(x0, y0, x1, y1, z=1.0):
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], np.float32)
    return v, np.array([[0, 2, 1], [0, 3, 2]], np.int32)  # both negative area (front-facing)


@pytest.mark.parametrize("rect", [(2.5, 3.5, 10.5, 9.5), (1.0, 2.0, 9.0, 12.0), (0.5, 0.5, 16.5, 14.5)])
def test_rectangle_split_in_two_covers_each_centre_once(rect):
    h, w = S, S
    v, tris = two_triangle_rectangle(*rect)
    masks = [np.asarray(raster_small(v, tris[k : k + 1]).triangle_id) >= 0 for k in range(2)]
    cy, cx = np.mgrid[0:h, 0:w] + 0.5
    x0, y0, x1, y1 = rect
    # half-open: centres on the top and left sides belong to the rectangle, on bottom and right do not
    expected = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    assert not np.any(masks[0] & masks[1])
    np.testing.assert_array_equal(masks[0] | masks[1], expected)
    # the opposite winding (clockwise on screen) must tile the same way
    flipped = tris[:, ::-1].copy()
    both = np.asarray(raster_small(v, flipped).triangle_id) >= 0
    np.testing.assert_array_equal(both, expected)


def test_grid_mesh_with_vertices_on_pixel_centres_tiles_exactly():
    # a fan/grid of triangles whose vertices and edges pass through many pixel centres
    n = 4
    gy, gx = np.mgrid[0 : n + 1, 0 : n + 1]
    v = np.stack([2.5 + 3 * gx, 1.5 + 3 * gy, np.zeros_like(gx)], -1).reshape(-1, 3).astype(np.float32)
    tris = []
    for i in range(n):
        for j in range(n):
            a, b, c, d = (
                i * (n + 1) + j,
                i * (n + 1) + j + 1,
                (i + 1) * (n + 1) + j + 1,
                (i + 1) * (n + 1) + j,
            )
            tris += [[a, c, b], [a, d, c]] if (i + j) % 2 else [[a, d, b], [b, d, c]]
    tris = np.array(tris, np.int32)
    h = w = 16
    count = np.zeros((h, w), int)
    for t in tris:  # each triangle alone: counts how many triangles claim each centre
        count += np.asarray(raster_small(v, t[None]).triangle_id) >= 0
    cy, cx = np.mgrid[0:h, 0:w] + 0.5
    inside = (cx >= 2.5) & (cx < 2.5 + 3 * n) & (cy >= 1.5) & (cy < 1.5 + 3 * n)
    np.testing.assert_array_equal(count, inside.astype(int))


def test_single_triangle_larger_than_the_image():
    h, w = S, S
    v = np.array([[-100.0, -50.0, 2.0], [300.0, -40.0, 4.0], [-80.0, 250.0, 6.0]], np.float32)
    tris = np.array([[0, 1, 2]], np.int32)
    frags = raster_small(v, tris, capacity=3)  # needs 16 windows: several rounds
    assert np.all(np.asarray(frags.triangle_id) == 0)
    xy = np.asarray(interpolate(frags, jnp.asarray(v[:, :2])))
    cy, cx = np.mgrid[0:h, 0:w] + 0.5
    np.testing.assert_allclose(xy[..., 0], cx, atol=1e-4)
    np.testing.assert_allclose(xy[..., 1], cy, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(frags.coverage), 1.0)  # the image border is no silhouette
    check_against_reference(frags, v, tris, h, w)


def test_z_buffer_keeps_the_nearer_triangle_in_either_order():
    h, w = S, S
    near = np.array([[1.0, 1.0, 1.0], [9.0, 1.0, 1.0], [1.0, 9.0, 1.0]], np.float32)
    far = np.array([[0.0, 0.0, 5.0], [10.0, 0.0, 5.0], [10.0, 10.0, 5.0]], np.float32)
    for order in ((near, far), (far, near)):
        v = np.concatenate(order)
        tris = np.array([[0, 1, 2], [3, 4, 5]], np.int32)
        frags = raster_small(v, tris)
        ids = np.asarray(frags.triangle_id)
        near_id = 0 if order[0] is near else 1
        cy, cx = np.mgrid[0:h, 0:w] + 0.5
        in_near = (cx > 1) & (cy > 1) & (cx + cy < 10)
        in_far = (cy < cx) & (cx < 10) & (cy < 10)
        assert np.all(ids[in_near] == near_id)
        assert np.all(ids[in_far & ~in_near] == 1 - near_id)
        np.testing.assert_allclose(np.asarray(frags.depth)[in_near], 1.0)


def test_backface_culling_keeps_the_frontal_face(face32):
    v, tris, size, full = face32
    kept = raster_jit(v, tris, size, size, cull_backfaces=True)
    ids_k, ids_f = np.asarray(kept.triangle_id), np.asarray(full.triangle_id)
    assert (ids_k >= 0).sum() > 0.97 * (ids_f >= 0).sum()
    # the same face seen from behind (mirror x: every triangle flips its winding) is culled entirely
    back = v.copy()
    back[:, 0] = size - back[:, 0]
    back[:, 2] = -back[:, 2]
    assert np.all(np.asarray(raster_jit(back, tris, size, size, cull_backfaces=True).triangle_id) < 0)
    assert np.any(np.asarray(raster_jit(back, tris, size, size).triangle_id) >= 0)


def test_degenerate_triangles_cover_nothing_and_make_no_nan():
    v = np.array(
        [[2.0, 2.0, 1.0], [8.0, 8.0, 1.0], [5.0, 5.0, 1.0], [3.0, 3.0, 0.0], [np.nan, 1.0, 0.0], [7, 2, 0]],
        np.float32,
    )
    tris = np.array([[0, 1, 2], [3, 3, 3], [3, 4, 5]], np.int32)  # collinear, point, NaN vertex
    frags = raster_small(v, tris)
    assert np.all(np.asarray(frags.triangle_id) == -1)
    for leaf in jax.tree.leaves(frags):
        assert not np.any(np.isnan(np.asarray(leaf)))

    def loss(vv):
        f = rasterize(vv, jnp.asarray(tris), S, S)
        return jnp.sum(f.barycentric) + jnp.sum(f.coverage) + jnp.sum(jnp.where(f.mask, f.depth, 0.0))

    # one ordinary triangle next to the degenerate ones: gradients flow and stay finite
    vv = np.concatenate([np.nan_to_num(v), [[1.0, 1.0, 0.0], [12.0, 2.0, 1.0], [3.0, 13.0, 2.0]]]).astype(
        np.float32
    )
    tris = np.concatenate([tris, [[6, 8, 7]]]).astype(np.int32)
    g = np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(vv)))
    assert np.all(np.isfinite(g)) and np.any(g[6:] != 0)
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.fixture(scope="module")
def face32():
    size = 32
    v, tris = face_vertices(size, 0.8)
    return v, tris, size, raster_jit(v, tris, size, size)


def test_face_barycentrics_sum_to_one_and_reproduce_positions(face32):
    v, tris, size, frags = face32
    mask = np.asarray(frags.triangle_id) >= 0
    bary = np.asarray(frags.barycentric)
    assert mask.sum() > 200
    np.testing.assert_allclose(bary.sum(-1)[mask], 1.0, atol=1e-6)
    assert np.all(bary >= 0) and np.all(bary[~mask] == 0)
    xy = np.asarray(interpolate(frags, jnp.asarray(v[:, :2])))
    cy, cx = np.mgrid[0:size, 0:size] + 0.5
    np.testing.assert_allclose(xy[..., 0][mask], cx[mask], atol=1e-4)
    np.testing.assert_allclose(xy[..., 1][mask], cy[mask], atol=1e-4)
    # vertex ids agree with the triangle list
    np.testing.assert_array_equal(
        np.asarray(frags.vertex_ids)[mask], tris[np.asarray(frags.triangle_id)[mask]]
    )


def test_face_against_trimesh_point_in_triangle(face32):
    trimesh = pytest.importorskip("trimesh")
    v, tris, size, frags = face32
    ids = np.asarray(frags.triangle_id)
    cy, cx = np.mgrid[0:size, 0:size] + 0.5
    mask = ids >= 0
    pts = np.stack([cx[mask], cy[mask], np.zeros(mask.sum())], 1)
    corners = np.concatenate([v[tris[ids[mask]], :2], np.zeros((mask.sum(), 3, 1))], -1).astype(np.float64)
    bary = trimesh.triangles.points_to_barycentric(corners, pts)
    np.testing.assert_allclose(np.asarray(frags.barycentric)[mask], bary, atol=1e-4)


def test_coverage_is_a_unit_ramp_at_the_silhouette(face32):
    _, _, _, frags = face32
    cov = np.asarray(frags.coverage)
    mask = np.asarray(frags.triangle_id) >= 0
    assert np.all((cov >= 0) & (cov <= 1))
    interior = mask.copy()
    for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        interior &= np.roll(mask, (di, dj), (0, 1))
    np.testing.assert_array_equal(cov[interior], 1.0)
    far = ~mask
    for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        far &= ~np.roll(mask, (di, dj), (0, 1))
    np.testing.assert_array_equal(cov[far], 0.0)
    assert np.all(cov[mask] >= 0.5) and np.all(cov[~mask] <= 0.5)


@pytest.mark.parametrize("edge_x", [10.3, 10.5, 10.8])
def test_coverage_of_an_axis_aligned_edge_is_the_area_fraction(edge_x):
    # a square whose right side is at x = edge_x: column 10 spans [10, 11] and is covered by edge_x - 10
    v, tris = two_triangle_rectangle(2.0, 2.0, edge_x, 9.0)
    cov = np.asarray(raster_small(v, tris).coverage)
    np.testing.assert_allclose(cov[4:7, 10], edge_x - 10, atol=1e-5)
    np.testing.assert_allclose(cov[4:7, 3:10], 1.0)
    np.testing.assert_allclose(cov[4:7, 11:], 0.0)


def test_jit_equals_eager_and_vmap_equals_loop():
    h, w = S, S
    meshes = [pad_mesh(*random_mesh(s, 5, h, w)) for s in (10, 11, 12)]
    tris = meshes[0][1]
    eager = rasterize(jnp.asarray(meshes[0][0]), jnp.asarray(tris), h, w)
    jitted = raster_jit(meshes[0][0], tris, h, w)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    stacked = jnp.asarray(np.stack([m[0] for m in meshes]))
    batched = jax.jit(jax.vmap(lambda vv: rasterize(vv, jnp.asarray(tris), h, w)))(stacked)
    for k, (vv, _) in enumerate(meshes):
        one = raster_jit(vv, tris, h, w)
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(batched), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b)[k], atol=1e-6)


def test_a_loop_of_eager_rasterisations_compiles_once():
    """Called outside any jit, mesh after mesh, the z-buffer loop compiles once per image size; its
    ``while_loop`` over a fresh closure used to compile again on every call (0.3 s, memory never freed)."""
    from affectsynth.render import raster

    meshes = [pad_mesh(*random_mesh(s, 5, S, S)) for s in (20, 21, 22)]
    rasterize(jnp.asarray(meshes[0][0]), jnp.asarray(meshes[0][1]), S, S)
    compiled = raster._raster_ids._cache_size()
    for v, tris in meshes[1:]:
        rasterize(jnp.asarray(v), jnp.asarray(tris), S, S)
    assert raster._raster_ids._cache_size() == compiled


def test_transfer_texture_identity_reproduces_the_image(face32):
    v, tris, size, _ = face32
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, (size, size, 3)).astype(np.float32)
    render, frags = jax.jit(transfer_texture)(image, v[:, :2], v, tris)
    mask = np.asarray(frags.triangle_id) >= 0
    assert mask.sum() > 300
    np.testing.assert_allclose(np.asarray(render)[mask], image[mask], atol=1e-5)
    assert np.all(np.asarray(render)[~mask] == 0)
    # a translated target samples the photo at the source: the render is the shifted photo
    moved = v + np.float32([3.0, -2.0, 0.0])
    render2, frags2 = jax.jit(transfer_texture)(image, v[:, :2], moved, tris)
    m2 = np.asarray(frags2.triangle_id) >= 0
    shifted = np.zeros_like(image)
    shifted[:-2, 3:] = image[2:, :-3]
    np.testing.assert_allclose(np.asarray(render2)[m2], shifted[m2], atol=1e-4)


def bilinear_reference(image, x, y):
    h, w = image.shape[:2]
    u = min(max(x - 0.5, 0.0), w - 1.0)
    v = min(max(y - 0.5, 0.0), h - 1.0)
    j0, i0 = int(np.floor(u)), int(np.floor(v))
    j1, i1 = min(j0 + 1, w - 1), min(i0 + 1, h - 1)
    fx, fy = u - j0, v - i0
    return (
        image[i0, j0] * (1 - fx) * (1 - fy)
        + image[i0, j1] * fx * (1 - fy)
        + image[i1, j0] * (1 - fx) * fy
        + image[i1, j1] * fx * fy
    )


def test_sample_bilinear_matches_numpy_reference():
    rng = np.random.default_rng(7)
    image = rng.uniform(0, 1, (7, 9, 2)).astype(np.float32)
    xy = rng.uniform(-3, 12, (5, 8, 2)).astype(np.float32)
    xy[0, :3] = [[0.5, 0.5], [8.5, 6.5], [3.5, 2.5]]  # exact centres
    got = np.asarray(jax.jit(sample_bilinear)(image, xy))
    assert got.shape == (5, 8, 2)
    ref = np.array([[bilinear_reference(image, *p) for p in row] for row in xy])
    np.testing.assert_allclose(got, ref, atol=1e-6)
    np.testing.assert_array_equal(got[0, 0], image[0, 0])
    np.testing.assert_array_equal(got[0, 1], image[6, 8])
    np.testing.assert_array_equal(got[0, 2], image[2, 3])


def test_sample_bilinear_gradients_match_finite_differences():
    rng = np.random.default_rng(8)
    with jax.enable_x64(True):
        image = jnp.asarray(rng.uniform(0, 1, (6, 7, 3)))
        # inside cells, away from the cell borders where the derivative jumps
        xy = jnp.asarray(rng.integers(1, 5, (10, 2)) + 0.5 + rng.uniform(0.1, 0.9, (10, 2)))
        check_grads(lambda p: sample_bilinear(image, p), (xy,), order=1, modes=["fwd", "rev"], eps=1e-4)
        check_grads(lambda im: sample_bilinear(im, xy), (image,), order=1, modes=["rev"])
