"""``scripts/measure_identity_cost.py``'s thin-plate warp: the landmark geometry of an edit without the
renderer. It must move the image as the points move and leave the border and unmoved images alone."""

import numpy as np

from script_module import load_script


def _image(h=120, w=100):
    """A smooth test image: lookups between pixels are then nearly exact."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([np.sin(xs / 9.0) + 0.01 * ys, np.cos(ys / 7.0), 0.02 * (xs + ys)], axis=-1)


def _points(rng, n=40, h=120, w=100):
    return np.column_stack([rng.uniform(30, w - 30, n), rng.uniform(30, h - 30, n)])


def test_no_move_is_no_change():
    warp = load_script("measure_identity_cost").thin_plate_warp
    img = _image()
    pts = _points(np.random.default_rng(0))
    np.testing.assert_allclose(warp(img, pts, pts), img, atol=1e-5)


def test_points_land_where_they_are_sent_and_the_border_stays():
    """A planted shift of the middle points by (2.5, -1.5) px: the output near them shows what the input
    held before the shift; the border, pinned, shows the input."""
    warp = load_script("measure_identity_cost").thin_plate_warp
    img = _image()
    src = _points(np.random.default_rng(1))
    dst = src + np.array([2.5, -1.5])
    out = warp(img, src, dst)
    gy, gx = np.gradient(img, axis=(0, 1))
    for (sx, sy), (dx, dy) in zip(src[:10], dst[:10], strict=True):
        # the pixel nearest to dst, corrected to first order by the image's own gradient for the remainder
        i, j = int(round(dy)), int(round(dx))
        expect = (
            img[int(round(sy)), int(round(sx))] + gx[i, j] * (sx - round(sx)) + gy[i, j] * (sy - round(sy))
        )
        expect = expect - gx[i, j] * (dx - j) - gy[i, j] * (dy - i)
        np.testing.assert_allclose(out[i, j], expect, atol=0.03)
    for edge in (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]):  # within 0.05 px of no move
        np.testing.assert_allclose(out[edge], img[edge], atol=0.006)


def test_swap_groups_take_every_landmark_once_and_both_sides_alike():
    """``--swap`` replaces one group of points at a time: together the groups must be all 478 points, none
    in two, and a point's mirror twin in the same group (or a swap would move one side of the face only)."""
    from affectsynth.face import topology as topo

    mic = load_script("measure_identity_cost")
    labels = mic.landmark_groups()
    t = topo.face_topology()
    assert labels.shape == (len(t.template),)
    assert set(np.unique(labels)) == set(range(len(mic.SWAP_GROUPS)))
    np.testing.assert_array_equal(labels[t.mirror], labels)
    lips = list(mic.SWAP_GROUPS).index("lips")
    assert np.all(labels[t.region("lips")] == lips) and np.all(labels[t.region("nose")] != lips)


def test_face_frame_undoes_the_photos_rotation_and_scale():
    """``face_frame``: a face turned by 30 degrees and scaled 3x in the photo gives the same moves, in its
    frame and inter-pupil distances, as the upright face, and carrying them back gives the photo's moves."""
    frame = load_script("measure_identity_cost").face_frame
    rng = np.random.default_rng(1)
    upright = rng.uniform(-1.0, 1.0, (478, 2))
    upright[468], upright[473] = (-0.5, 0.0), (0.5, 0.0)
    moves = 0.05 * rng.normal(size=(478, 2))
    t = np.deg2rad(30.0)
    turn = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    photo = 3.0 * upright @ turn.T + (200.0, 150.0)
    photo_moves = 3.0 * moves @ turn.T
    iod, rot = frame(photo)
    assert abs(iod - 3.0) < 1e-9
    np.testing.assert_allclose(rot, turn, atol=1e-12)
    in_frame = photo_moves @ rot / iod
    np.testing.assert_allclose(in_frame, moves, atol=1e-12)
    np.testing.assert_allclose(iod * in_frame @ rot.T, photo_moves, atol=1e-12)
