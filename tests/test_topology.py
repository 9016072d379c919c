"""The shipped face topology: counts, hole fills, mirror symmetry, regions, subdivision."""

import numpy as np
import pytest

from affectsynth.face import topology as topo


@pytest.fixture(scope="module")
def t():
    return topo.face_topology()


def test_counts_and_index_ranges(t):
    assert t.template.shape == (478, 3) and t.template.dtype == np.float32
    assert t.triangles.shape == (852, 3)
    assert (len(t.fill_mouth), len(t.fill_right_eye), len(t.fill_left_eye)) == (18, 14, 14)
    assert t.closed_triangles.shape == (898, 3)
    for tris in (t.triangles, t.fill_mouth, t.fill_right_eye, t.fill_left_eye):
        assert tris.min() >= 0 and tris.max() < topo.NUM_MESH_POINTS  # irises are not in the mesh
    # no duplicate triangles, no degenerate ones
    assert len({tuple(sorted(f)) for f in t.closed_triangles}) == 898
    assert np.all(
        (t.closed_triangles[:, 0] != t.closed_triangles[:, 1])
        & (t.closed_triangles[:, 1] != t.closed_triangles[:, 2])
    )


def test_open_mesh_has_three_holes_and_fills_close_them(t):
    def boundary_edges(tris):
        e = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
        key, count = np.unique(np.sort(e, axis=1), axis=0, return_counts=True)
        return key[count == 1]

    open_b = boundary_edges(t.triangles)
    closed_b = boundary_edges(t.closed_triangles)
    assert len(open_b) == 20 + 16 + 16 + 36
    assert len(closed_b) == 36  # only the outer contour is left
    assert set(np.unique(closed_b)) == set(t.region("outer_boundary").tolist())
    for fill, hole in (
        (t.fill_mouth, "mouth_hole"),
        (t.fill_right_eye, "right_eye_hole"),
        (t.fill_left_eye, "left_eye_hole"),
    ):
        assert set(np.unique(fill)) <= set(t.region(hole).tolist())


def test_triangles_face_the_camera(t):
    p = t.template[t.triangles]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    assert np.mean(n[:, 2] > 0) > 0.9  # normals towards +z (a few at the silhouette may turn away)


def test_mirror_is_an_involution_matching_the_template(t):
    m = t.mirror
    np.testing.assert_array_equal(m[m], np.arange(478))
    np.testing.assert_allclose(t.template[m] * np.array([-1.0, 1.0, 1.0]), t.template, atol=1e-4)
    fixed = m == np.arange(478)
    np.testing.assert_allclose(t.template[fixed, 0], 0.0, atol=1e-5)
    assert m[topo.RIGHT_PUPIL] == topo.LEFT_PUPIL
    # mirroring maps triangles onto triangles, except 12 of FaceMesh's own tessellation whose diagonals
    # are flipped on one side (a property of the source mesh, measured)
    tris = {tuple(sorted(f)) for f in t.triangles}
    assert len(tris - {tuple(sorted(m[f])) for f in t.triangles}) <= 12


def test_canonical_frame(t):
    np.testing.assert_allclose(t.template[: topo.NUM_MESH_POINTS].mean(0), 0.0, atol=1e-3)
    assert t.interocular(t.template) == pytest.approx(topo.IPD_MM, rel=1e-5)
    assert (
        t.template[topo.RIGHT_PUPIL, 0] < 0 < t.template[topo.LEFT_PUPIL, 0]
    )  # subject's right = image left
    assert t.template[10, 1] > t.template[1, 1] > t.template[152, 1]  # forehead above nose tip above chin
    assert t.template[1, 2] > t.template[t.region("face_oval"), 2].max()  # nose tip nearest the camera


def test_template_face_plane_is_frontal(t):
    q = t.template[t.region("face_oval")]
    n = np.linalg.svd(q - q.mean(0))[2][-1]
    n = n if n[2] > 0 else -n
    assert abs(np.degrees(np.arctan2(n[1], n[2]))) < 3.0


def test_regions_non_empty_and_left_right_mirrored(t):
    for name, ids in t.regions.items():
        assert len(ids) > 0, name
        assert ids.min() >= 0 and ids.max() < 478, name
    m = t.mirror
    for name in t.regions:
        if name.startswith("right_"):
            twin = "left_" + name[len("right_") :]
            assert set(m[t.region(name)].tolist()) == set(t.region(twin).tolist()), name
        elif not name.startswith("left_"):
            # midline regions are their own mirror image
            assert set(m[t.region(name)].tolist()) == set(t.region(name).tolist()), name
    with pytest.raises(KeyError):
        t.region("nope")


def test_contours_are_ordered_corner_to_corner(t):
    v = t.template
    for upper, lower in (("right_eye_upper", "right_eye_lower"), ("lips_outer_upper", "lips_outer_lower")):
        up, lo = t.region(upper), t.region(lower)
        assert {up[0], up[-1]} == {lo[0], lo[-1]}  # shared corners
        steps = np.linalg.norm(np.diff(v[up], axis=0), axis=1)
        assert steps.max() < 0.5 * np.linalg.norm(v[up[0]] - v[up[-1]])  # neighbours, not jumps


def test_subdivision_weights_reproduce_linear_fields(t):
    sub = topo.subdivide(t.triangles, 478, levels=2)
    assert sub.triangles.shape == (852 * 16, 3)
    np.testing.assert_allclose(sub.weights.sum(1), 1.0, atol=1e-6)
    dense = sub.apply(t.template)
    np.testing.assert_allclose(dense[:478], t.template, atol=1e-5)
    # every new vertex lies on a base-mesh edge midpoint chain: affine fields are reproduced exactly
    a = np.array([[0.3, -1.2, 2.0]], np.float32)
    np.testing.assert_allclose(sub.apply(t.template @ a.T), dense @ a.T, atol=1e-3)


def test_graph_distances_respect_holes(t):
    d = topo.graph_distances(t.template, t.triangles)
    upper, lower = 13, 14  # inner lip midpoints: close in space, far along the open mesh
    assert np.linalg.norm(t.template[upper] - t.template[lower]) < 0.3 * d[upper, lower]
    np.testing.assert_allclose(d, d.T)
    assert np.all(np.diag(d) == 0)
