"""Poisson blending: the discrete system against a direct sparse solve, analytic cases, OpenCV, transforms."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from skimage import data, transform

from affectsynth.render import multigrid as MG
from affectsynth.render import poisson as P


def _reference(target, source, mask, mixed=False):
    """Slow, obviously-correct assembly of the documented system (NumPy float64 loops) + spsolve."""
    h, w = mask.shape
    inside = mask > 0.5
    index = -np.ones((h, w), int)
    index[inside] = np.arange(inside.sum())
    out = target.astype(np.float64).copy()
    if not inside.any():
        return out
    for c in range(target.shape[2]):
        t, s = target[..., c].astype(np.float64), source[..., c].astype(np.float64)
        rows, cols, vals, b = [], [], [], np.zeros(inside.sum())
        for i in range(h):
            for j in range(w):
                k = index[i, j]
                if k < 0:
                    continue
                for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0)):
                    qi, qj = i + di, j + dj
                    if not (0 <= qi < h and 0 <= qj < w):
                        continue  # Neumann: missing neighbour is absent
                    v = s[i, j] - s[qi, qj]
                    if mixed and abs(t[i, j] - t[qi, qj]) > abs(v):
                        v = t[i, j] - t[qi, qj]
                    rows.append(k), cols.append(k), vals.append(1.0)
                    b[k] += v
                    if index[qi, qj] >= 0:
                        rows.append(k), cols.append(index[qi, qj]), vals.append(-1.0)
                    else:
                        b[k] += t[qi, qj]
        a = sp.csr_matrix((vals, (rows, cols)), shape=(b.size, b.size))
        if inside.all():  # pin the mean to the source's (singular otherwise)
            a = sp.vstack([a, np.ones((1, b.size))]).tocsr()
            x = spla.lsqr(a, np.append(b, s.sum()), atol=1e-14, btol=1e-14, iter_lim=20000)[0]
        else:
            x = spla.spsolve(a.tocsc(), b)
        out[..., c][inside] = x
    return out


def _blob(h, w, seed, touch_border=True):
    rng = np.random.default_rng(seed)
    i, j = np.mgrid[0:h, 0:w] + 0.5
    m = np.zeros((h, w))
    for _ in range(3):
        ci, cj, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.2, 0.35) * min(h, w)
        m += np.exp(-((i - ci) ** 2 + (j - cj) ** 2) / (2 * r**2))
    m = (m / m.max()).astype(np.float32)
    if touch_border:
        m[: h // 3, 0] = 1.0
    return m


def _images(h, w, seed):
    rng = np.random.default_rng(seed)
    t = rng.uniform(0.1, 0.9, (h, w, 3)).astype(np.float32)
    s = np.clip(t[::-1] * 0.7 + rng.uniform(0, 0.2, (h, w, 3)), 0, 1).astype(np.float32)
    return t, s


# One image size and one set of static settings for most tests: each distinct (shape, statics) compiles once.
H, W = 24, 32
EXACT = dict(tol=1e-6, max_iters=200)


@pytest.fixture(scope="module")
def small():
    t, s = _images(H, W, 0)
    m = _blob(H, W, 1)
    assert 0 < (m > 0.5).mean() < 0.8 and (m[:, 0] > 0.5).any()
    return t, s, m


@pytest.mark.parametrize(
    ("preconditioner", "mixed"), [("multigrid", False), ("multigrid", True), ("dst", False), ("none", False)]
)
def test_matches_sparse_direct_solve(small, preconditioner, mixed):
    t, s, m = small
    sol = P.solve_blend(t, s, m, mixed=mixed, preconditioner=preconditioner, **EXACT)
    ref = _reference(t, s, m, mixed=mixed)
    np.testing.assert_allclose(np.asarray(sol.x), ref, atol=2e-5)
    # the reported residual is the true one, recomputed after the loop; check it independently too
    assert np.all(np.asarray(sol.residual) <= 2e-6)
    assert np.all(np.asarray(sol.iterations) < {"multigrid": 12, "dst": 25, "none": 200}[preconditioner])
    out = np.asarray(P.poisson_blend(t, s, m, mixed=mixed, preconditioner=preconditioner, **EXACT))
    np.testing.assert_array_equal(out[m <= 0.5], t[m <= 0.5])  # outside the region: target exactly
    np.testing.assert_allclose(out, np.clip(ref, 0, 1), atol=2e-5)


def test_quadratic_guidance_reproduced_exactly():
    # source: a quadratic (constant discrete Laplacian); target: the same quadratic plus a discrete-harmonic
    # function; the region does not touch the border, so the solution equals the target exactly.
    i, j = np.mgrid[0:H, 0:W].astype(np.float64)
    x, y = (j - W / 2) / W, (i - H / 2) / W  # one scale for both axes: x^2 - y^2 stays harmonic
    q = 0.3 * x**2 + 0.2 * y**2 + 0.1 * x * y + 0.4
    harmonic = 0.15 * (x**2 - y**2) + 0.1 * x - 0.05 * y + 0.1 * x * y
    src = np.repeat(q[..., None], 3, axis=2).astype(np.float32)
    tgt = np.repeat((q + harmonic)[..., None], 3, axis=2).astype(np.float32)
    mask = (((j - 15) / 11) ** 2 + ((i - 11) / 8) ** 2 < 1).astype(np.float32)
    sol = P.solve_blend(tgt, src, mask, **EXACT)
    np.testing.assert_allclose(np.asarray(sol.x), tgt, atol=1e-5)
    assert np.abs(src - tgt)[mask > 0].max() > 0.02  # not trivially equal


def test_constant_offset_with_border_touching_mask():
    # guidance of source == target's; the region is the left half including three image borders:
    # Neumann on the border + Dirichlet on the cut -> the target itself, finite everywhere
    t, _ = _images(H, W, 3)
    s = t + 0.3
    m = np.zeros((H, W), np.float32)
    m[:, :14] = 1.0
    sol = P.solve_blend(t, s, m, **EXACT)
    assert np.isfinite(np.asarray(sol.x)).all()
    np.testing.assert_allclose(np.asarray(sol.x), t, atol=1e-5)


def test_mixed_gradients_keep_stronger_texture():
    t, _ = _images(H, W, 4)
    flat = np.full_like(t, 0.5)
    m = np.zeros((H, W), np.float32)
    m[5:19, 4:25] = 1.0
    mixed = np.asarray(P.poisson_blend(t, flat, m, mixed=True, **EXACT))
    np.testing.assert_allclose(mixed, t, atol=1e-5)  # the flat source never wins an edge
    importing = np.asarray(P.poisson_blend(t, flat, m, **EXACT))
    assert np.abs(importing - t)[m > 0].mean() > 0.05  # importing replaces the texture by a membrane


def test_empty_and_full_masks():
    t, s = _images(H, W, 5)
    empty = P.solve_blend(t, s, np.zeros((H, W), np.float32), **EXACT)
    np.testing.assert_array_equal(np.asarray(empty.x), t)
    assert np.all(np.asarray(empty.iterations) == 0)
    np.testing.assert_array_equal(np.asarray(P.poisson_blend(t, s, np.zeros((H, W), np.float32), **EXACT)), t)

    full = np.ones((H, W), np.float32)
    sol = P.solve_blend(t, s, full, **EXACT)  # importing on the whole image: the source itself (mean pinned)
    np.testing.assert_allclose(np.asarray(sol.x), s, atol=1e-5)
    mixed = P.solve_blend(t, s, full, mixed=True, **EXACT)
    assert np.isfinite(np.asarray(mixed.x)).all() and np.all(np.asarray(mixed.residual) <= 2e-6)
    np.testing.assert_allclose(np.asarray(mixed.x), _reference(t, s, full, mixed=True), atol=2e-5)


def test_opencv_seamless_clone_same_problem():
    """cv2.seamlessClone solves: bounding box of the mask, its 1-pixel frame from the destination (Dirichlet),
    guidance = e * grad(masked src) + (1 - e) * grad(dst) with e the mask eroded 3 times (3x3), forward
    differences. The same discrete problem through solve_poisson agrees within a few grey levels."""
    n = 128
    dst = (transform.resize(data.astronaut(), (n, n), anti_aliasing=True) * 255).astype(np.uint8)
    src = np.ascontiguousarray(dst[:, ::-1])  # a mirrored face: plenty of structure to transfer
    i, j = np.mgrid[0:n, 0:n] + 0.5
    mask = ((((j - 62) / 30) ** 2 + ((i - 58) / 38) ** 2) < 1).astype(np.uint8) * 255
    x0, y0, ww, hh = cv2.boundingRect(mask)
    centre = (x0 + ww // 2, y0 + hh // 2)
    expected = cv2.seamlessClone(src, dst, mask.copy(), centre, cv2.NORMAL_CLONE)

    box = (slice(y0, y0 + hh), slice(x0, x0 + ww))
    m = mask[box]
    # OpenCV erodes a view into the whole mask: zeros just outside the box erode inwards too
    e = cv2.erode(np.pad(m, 1), np.ones((3, 3), np.uint8), iterations=3)[1:-1, 1:-1]
    e = e.astype(np.float32)[..., None] / 255
    s = src[box].astype(np.float32) * (m[..., None] > 0)
    d = dst[box].astype(np.float32)
    gx = e[:, :-1] * (s[:, 1:] - s[:, :-1]) + (1 - e[:, :-1]) * (d[:, 1:] - d[:, :-1])
    gy = e[:-1] * (s[1:] - s[:-1]) + (1 - e[:-1]) * (d[1:] - d[:-1])
    interior = np.zeros((hh, ww), np.float32)
    interior[1:-1, 1:-1] = 1.0
    solve = jax.jit(jax.vmap(lambda a, b, c: P.solve_poisson(a, b, c, interior), in_axes=2))
    sol = solve(jnp.asarray(gx / 255), jnp.asarray(gy / 255), jnp.asarray(d / 255))
    ours = np.clip(np.moveaxis(np.asarray(sol.x), 0, -1) * 255, 0, 255)
    diff = np.abs(ours - expected[box].astype(np.float32))
    assert diff.max() <= 3.0 and diff.mean() < 1.0, (diff.max(), diff.mean())
    outside = np.ones((n, n), bool)
    outside[box] = False
    np.testing.assert_array_equal(expected[outside], dst[outside])


def test_transforms_jit_vmap_channels(small):
    t, s, m = small
    masks = np.stack([m, np.zeros((H, W), np.float32), np.ones((H, W), np.float32)])
    ts, ss = np.stack([t, t[::-1], t[:, ::-1]]), np.stack([s, s, s[::-1]])
    blend = lambda a, b, c: P.poisson_blend(a, b, c, **EXACT)
    batched = jax.jit(jax.vmap(blend))(ts, ss, masks)
    looped = np.stack([np.asarray(blend(a, b, c)) for a, b, c in zip(ts, ss, masks, strict=True)])
    np.testing.assert_allclose(np.asarray(batched), looped, atol=1e-6)

    # the channel solves are independent: each equals a single-channel solve_poisson (the multigrid blend
    # runs the channels in one loop until the last has converged: every channel reports that count).
    # Channel 0 has the target as its source: solved by the initial guess, in 0 iterations.
    s = s.copy()
    s[..., 0] = t[..., 0]
    sol = P.solve_blend(t, s, m, **EXACT)
    single = jax.jit(lambda gx, gy, b, mm, x0: P.solve_poisson(gx, gy, b, mm, x0, **EXACT))
    counts = []
    for c in range(3):
        gx, gy = P.guidance_field(jnp.asarray(t[..., c]), jnp.asarray(s[..., c]))
        one = single(gx, gy, t[..., c], m, s[..., c])
        np.testing.assert_allclose(np.asarray(sol.x[..., c]), np.asarray(one.x), atol=1e-6)
        counts.append(int(one.iterations))
    assert counts[0] == 0 < min(counts[1:])
    np.testing.assert_array_equal(np.asarray(sol.iterations), [max(counts)] * 3)

    # windows above _LOCKSTEP_PIXELS solve the channels one after another, each to its own count
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(P, "_LOCKSTEP_PIXELS", 0)
        jax.clear_caches()
        seq = P.solve_blend(t, s, m, **EXACT)
    jax.clear_caches()
    np.testing.assert_allclose(np.asarray(seq.x), np.asarray(sol.x), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(seq.iterations), counts)

    # jit == eager (the while loop run op by op), on a tiny problem
    tt, mm = t[:10, :12, 1], m[:10, :12]
    gx, gy = P.guidance_field(jnp.asarray(tt), jnp.asarray(s[:10, :12, 1]))
    jitted = jax.jit(P.solve_poisson)(gx, gy, tt, mm)
    with jax.disable_jit():
        eager = P.solve_poisson(gx, gy, jnp.asarray(tt), jnp.asarray(mm))
    np.testing.assert_allclose(np.asarray(jitted.x), np.asarray(eager.x), atol=1e-6)
    assert int(jitted.iterations) == int(eager.iterations) > 0


@pytest.mark.parametrize(
    ("preconditioner", "shape", "whole"),
    [
        ("multigrid", (10, 13), False),
        ("multigrid", (50, 37), False),
        ("multigrid", (9, 19), True),
        ("dst", (10, 13), False),
    ],
)
def test_preconditioner_is_symmetric_positive_definite(preconditioner, shape, whole):
    """The V-cycle (one quarter level at 10 x 13; three at 50 x 37, odd sides padded on every level; the
    singular whole-image case) and the DST inverse are SPD on the region; the V-cycle keeps the outside
    at zero. 949 basis vectors in one vmap also caught an XLA:CPU miscompilation (see ``_v_cycle``)."""
    h, w = shape
    m = np.ones(shape, bool) if whole else _blob(h, w, 8) > 0.5
    if preconditioner == "multigrid":
        region = MG._to_quarters(jnp.asarray(m, jnp.float32))
        mg = MG._multigrid(region, MG._in_image(shape, jnp.float32), jnp.asarray(whole))
        if shape == (50, 37):
            assert len(mg.levels) == 3
        apply = lambda r: MG._from_quarters(MG._v_cycle(mg, MG._to_quarters(r)), r.shape)
    else:
        apply = P._dirichlet_inverse
    idx = np.flatnonzero(m)
    basis = np.zeros((idx.size, h * w), np.float32)
    basis[np.arange(idx.size), idx] = 1.0
    if whole:  # singular: the preconditioner acts on zero-mean vectors (CG projects)
        basis -= basis.mean(axis=1, keepdims=True)
    out = np.asarray(jax.jit(jax.vmap(apply))(jnp.asarray(basis.reshape(-1, h, w)))).reshape(idx.size, -1)
    dense = (out[:, idx] @ basis[:, idx].T).astype(np.float64) if whole else out[:, idx].astype(np.float64)
    if preconditioner == "multigrid":  # the solver relies on the V-cycle leaving the outside at zero
        assert not np.any(out[:, ~m.reshape(-1)])
    np.testing.assert_allclose(dense, dense.T, atol=1e-5 * np.abs(dense).max())
    eig = np.linalg.eigvalsh(0.5 * (dense + dense.T))
    if whole:  # positive on the zero-mean subspace: one zero eigenvalue (the constants), the rest > 0
        assert eig[1] > 1e3 * abs(eig[0])
    else:
        assert eig.min() > 0


@pytest.mark.parametrize("shape", [(30, 37), (31, 36)])
def test_quarter_layout_and_hierarchy(shape):
    """The 2x2 quarter layout round-trips, its neighbour maps are the 4-neighbours of the ordinary layout,
    and the multigrid levels built from it are the Galerkin coarsening of the masked operator."""
    h, w = shape
    a = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    q = MG._to_quarters(jnp.asarray(a))
    np.testing.assert_array_equal(np.asarray(MG._from_quarters(q, shape)), a)
    padded = np.pad(a, 1)
    expected = [padded[1:-1, :-2], padded[1:-1, 2:], padded[:-2, 1:-1], padded[2:, 1:-1]]  # l, r, u, d
    for got, want in zip(MG._neighbours(q), expected, strict=True):
        np.testing.assert_array_equal(np.asarray(MG._from_quarters(got, shape)), want)

    m = _blob(h, w, 5) > 0.5
    fine = MG._region_operator(jnp.asarray(m), jnp.float32)
    mg = MG._multigrid(MG._to_quarters(fine.region), MG._in_image(shape, jnp.float32), jnp.asarray(False))
    assert len(mg.levels) >= 2
    np.testing.assert_array_equal(np.asarray(MG._from_quarters(mg.levels[0].diag, shape)), fine.diag)
    coarse = MG._coarsen(fine)
    hc, wc = coarse.leak.shape
    directions = [
        MG._pad_x(coarse.wx, 1),
        MG._pad_x(coarse.wx, 0),
        MG._pad_y(coarse.wy, 1),
        MG._pad_y(coarse.wy, 0),
    ]
    level = mg.levels[1]
    np.testing.assert_allclose(
        np.asarray(MG._from_quarters(level.inv_diag, (hc, wc))), coarse.inv_diag, rtol=1e-6
    )
    for k, d in enumerate(directions):
        np.testing.assert_array_equal(np.asarray(MG._from_quarters(level.weights[k], (hc, wc))), d)


def test_preconditioning_cuts_iterations():
    n = 64
    img = transform.resize(data.astronaut(), (n, n), anti_aliasing=True).astype(np.float32)
    src = np.ascontiguousarray(img[:, ::-1])
    i, j = np.mgrid[0:n, 0:n] + 0.5
    mask = ((((j - n / 2) / (0.2 * n)) ** 2 + ((i - n / 2) / (0.26 * n)) ** 2) < 1).astype(np.float32)
    its = {}
    for pc in P.PRECONDITIONERS:
        sol = P.solve_blend(img, src, mask, max_iters=500, preconditioner=pc)
        assert np.all(np.asarray(sol.residual) <= 1e-5), pc
        its[pc] = int(np.max(np.asarray(sol.iterations)))
    assert its["multigrid"] <= 15 and its["dst"] <= 30 and its["none"] >= 3 * its["multigrid"], its


def _disc(n, ci, cj, radius):
    i, j = np.mgrid[0:n, 0:n] + 0.5
    return (((i - ci) ** 2 + (j - cj) ** 2) < radius**2).astype(np.float32)


@pytest.mark.parametrize(
    "where",
    [(48.0, 40.0, 12.0), (30.0, 2.0, 14.0), (3.0, 93.0, 20.0), (60.5, 70.5, 0.6)],
    ids=["inside", "left-border", "top-right-corner", "one-pixel"],
)
def test_window_solve_equals_whole_image_solve(where):
    """An eager call solves only in the mask's window; inside jit the mask is traced and the whole image
    is solved. Both give the same image wherever the region lies (a border window keeps the Neumann edge)."""
    n = 96
    t, s = _images(n, n, 3)
    mask = _disc(n, *where)
    window = P.solve_window(mask)
    assert window is not None
    top, left, h, w = window
    assert h % P.WINDOW_STEP == 0 or top + h == n
    assert w % P.WINDOW_STEP == 0 or left + w == n
    inside = mask > 0.5
    assert inside[top : top + h, left : left + w].sum() == inside.sum()
    # every unknown keeps its 4 neighbours in the window: the frame is outside the region or the image edge
    for edge, at_border in (
        (inside[top], top == 0),
        (inside[top + h - 1], top + h == n),
        (inside[:, left], left == 0),
        (inside[:, left + w - 1], left + w == n),
    ):
        assert at_border or not edge.any()
    windowed = P.poisson_blend(t, s, mask, **EXACT)
    whole = jax.jit(lambda a, b, c: P.poisson_blend(a, b, c, **EXACT))(t, s, mask)
    np.testing.assert_allclose(np.asarray(windowed), np.asarray(whole), atol=2e-5)  # both solved to 1e-6
    np.testing.assert_array_equal(np.asarray(windowed)[~inside], t[~inside])
    unwindowed = P.poisson_blend(t, s, mask, window=False, **EXACT)  # eager, opted out: the whole image
    np.testing.assert_allclose(np.asarray(unwindowed), np.asarray(whole), atol=1e-6)
    sol = P.solve_blend(t, s, mask, **EXACT)
    assert sol.x.shape == t.shape and np.all(np.asarray(sol.residual) <= 1e-6)
    np.testing.assert_allclose(np.asarray(sol.x), _reference(t, s, mask), atol=5e-5)


def test_no_window_when_nothing_to_gain():
    n = 40
    assert P.solve_window(np.zeros((n, n), np.float32)) is None  # empty
    assert P.solve_window(np.ones((n, n), np.float32)) is None  # whole image
    assert P.solve_window(_disc(n, 20, 20, 19.5)) is None  # the window would be the whole image
    assert jax.jit(lambda m: jnp.asarray(P.solve_window(m) is None))(_disc(n, 20, 20, 5.0))  # traced


def test_rejects_unknown_preconditioner():
    with pytest.raises(ValueError, match="preconditioner"):
        P.solve_poisson(
            jnp.zeros((4, 3)), jnp.zeros((3, 4)), jnp.zeros((4, 4)), jnp.zeros((4, 4)), preconditioner="ilu"
        )


def test_a_loop_of_eager_solves_compiles_once():
    """Called outside any jit, problem after problem of one size, the solver compiles once; its CG loop over
    fresh closures used to compile again on every call (0.7 s, memory never freed)."""
    rng = np.random.default_rng(5)
    n = 24
    mask = _disc(n, 12, 12, 8.0)

    def solve():
        gx, gy = rng.normal(size=(n, n - 1)), rng.normal(size=(n - 1, n))
        return P.solve_poisson(
            jnp.asarray(gx, jnp.float32), jnp.asarray(gy, jnp.float32), jnp.zeros((n, n)), mask
        )

    solve()
    compiled = P.solve_poisson._cache_size()
    for _ in range(3):
        assert np.asarray(solve().residual) <= 1e-5
    assert P.solve_poisson._cache_size() == compiled
