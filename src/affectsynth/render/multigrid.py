"""The masked Poisson operator and its multigrid preconditioner (quarter layout), for ``poisson``."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

# multigrid settings (fixed: tuned once on face-like masks, see scripts/bench_poisson.py)
_COARSEST = 64  # stop coarsening at this many pixels or fewer; that level is solved exactly (dense)
_OVER_CORRECTION = 1.6  # scale of the coarse correction (piecewise-constant aggregates under-correct)


# --------------------------------------------------------------------------------------------------------
# The operator: an edge-weighted graph Laplacian plus a diagonal leak, on full H x W arrays


class _Operator(eqx.Module):
    """``(A u)_p = sum_q w_pq (u_p - u_q) + c_p u_p`` with horizontal/vertical edge weights and leak.

    ``region`` is set on the finest level only, where every edge weight is 1 between two unknowns: there
    the neighbour sum of a vector that is zero outside the region needs no weights (``region`` times the
    plain 4-neighbour sum): each stencil pass reads one array instead of three.
    """

    wx: Float[Array, "H Wm1"]
    wy: Float[Array, "Hm1 W"]
    leak: Float[Array, "H W"]
    diag: Float[Array, "H W"]
    inv_diag: Float[Array, "H W"]
    region: Float[Array, "H W"] | None = None


def _make_operator(wx, wy, leak, region=None) -> _Operator:
    diag = leak + _pad_x(wx, 1) + _pad_x(wx, 0) + _pad_y(wy, 1) + _pad_y(wy, 0)
    inv = jnp.where(diag > 0, 1.0 / jnp.where(diag > 0, diag, 1.0), 0.0)
    return _Operator(wx, wy, leak, diag, inv, region)


def _pad_x(a, before: int):
    """Pad one column of zeros on the left (``before=1``) or the right (``before=0``)."""
    return jnp.pad(a, ((0, 0), (before, 1 - before)))


def _pad_y(a, before: int):
    return jnp.pad(a, ((before, 1 - before), (0, 0)))


def _offdiag(op: _Operator, u):
    """``sum_q w_pq u_q``: the weighted sum of the 4 neighbours (``u`` zero outside the region)."""
    if op.region is not None:
        return op.region * (
            _pad_x(u[:, 1:], 0) + _pad_x(u[:, :-1], 1) + _pad_y(u[1:, :], 0) + _pad_y(u[:-1, :], 1)
        )
    fx = op.wx * u[:, 1:]  # contribution of the right neighbour to the left pixel
    bx = op.wx * u[:, :-1]  # of the left neighbour to the right pixel
    fy = op.wy * u[1:, :]
    by = op.wy * u[:-1, :]
    return _pad_x(fx, 0) + _pad_x(bx, 1) + _pad_y(fy, 0) + _pad_y(by, 1)


def _apply(op: _Operator, u):
    return op.diag * u - _offdiag(op, u)


def _region_operator(inside: Bool[Array, "H W"], dtype) -> _Operator:
    """The masked 5-point operator: edges between two unknowns, leak = number of Dirichlet neighbours."""
    m = inside.astype(dtype)
    wx = m[:, 1:] * m[:, :-1]
    wy = m[1:, :] * m[:-1, :]
    ones = jnp.ones_like(m)
    degree = _pad_x(ones[:, 1:], 1) + _pad_x(ones[:, 1:], 0) + _pad_y(ones[1:, :], 1) + _pad_y(ones[1:, :], 0)
    connected = _pad_x(wx, 1) + _pad_x(wx, 0) + _pad_y(wy, 1) + _pad_y(wy, 0)
    return _make_operator(wx, wy, m * (degree - connected), region=m)


# --------------------------------------------------------------------------------------------------------
# Multigrid preconditioner
#
# Every level but the coarsest is kept in a 2x2 "quarter" layout: pixel (2i + a, 2j + b) of an even-sized
# H x W array is element (q, i, j) of a 4 x H/2 x W/2 array, quarters in the order (0,0), (1,1), (0,1),
# (1,0), i.e. the red pixels (even i + j) first, then the black ones. A red-black half sweep then computes
# only its own colour, the residual after a sweep is nonzero on red pixels only, and the 2x2 restriction
# and prolongation become sums and broadcasts of whole quarters instead of strided reads and repeats.
# On CPU this cut the cost of a CG iteration (V-cycle included) by about 40%.


def _block_sum(a, hc: int, wc: int):
    """Sum over 2x2 blocks after zero-padding to (2 hc, 2 wc)."""
    h, w = a.shape
    a = jnp.pad(a, ((0, 2 * hc - h), (0, 2 * wc - w)))
    rows = a[0::2] + a[1::2]  # strided adds: several times faster on CPU than a reshape-and-sum
    return rows[:, 0::2] + rows[:, 1::2]


def _coarsen(op: _Operator) -> _Operator:
    """Galerkin operator ``P^T A P`` for piecewise-constant prolongation over 2x2 blocks.

    It is again an edge-weighted Laplacian plus leak: coarse edge weights sum the fine edges that cross
    between two blocks, the coarse leak sums the fine leaks of a block.
    """
    h, w = op.leak.shape
    hc, wc = (h + 1) // 2, (w + 1) // 2
    wx = jnp.pad(op.wx, ((0, 2 * hc - h), (0, 0)))
    wx = wx[:, 1 : 2 * wc - 2 : 2]  # fine edges (2J+1, 2J+2): between block J and J+1
    wx = wx[0::2] + wx[1::2]  # pairs of rows; adds, not a reduction (XLA:CPU reduces a short axis slowly)
    wy = jnp.pad(op.wy, ((0, 0), (0, 2 * wc - w)))
    wy = wy[1 : 2 * hc - 2 : 2, :]
    wy = wy[:, 0::2] + wy[:, 1::2]
    return _make_operator(wx, wy, _block_sum(op.leak, hc, wc))


def _to_quarters(a: Float[Array, "H W"]) -> Float[Array, "4 H2 W2"]:
    """Quarter layout of ``a`` (zero-padded to even sides)."""
    h, w = a.shape
    a = jnp.pad(a, ((0, h % 2), (0, w % 2)))
    return jnp.stack([a[0::2, 0::2], a[1::2, 1::2], a[0::2, 1::2], a[1::2, 0::2]])


def _from_quarters(q: Float[Array, "4 H2 W2"], shape: tuple[int, int]) -> Float[Array, "H W"]:
    """Inverse of ``_to_quarters`` for an array of ``shape``."""
    _, h2, w2 = q.shape
    even = jnp.stack([q[0], q[2]], axis=-1).reshape(h2, 2 * w2)  # row 2i: (0,0) (0,1) (0,0) ...
    odd = jnp.stack([q[3], q[1]], axis=-1).reshape(h2, 2 * w2)  # row 2i+1: (1,0) (1,1) ...
    return jnp.stack([even, odd], axis=1).reshape(2 * h2, 2 * w2)[: shape[0], : shape[1]]


def _shift(a, di: int, dj: int):
    """``out[i, j] = a[i + di, j + dj]``, zero where that lies outside (``di, dj`` in {-1, 0, 1})."""
    h, w = a.shape
    a = jnp.pad(a, ((max(-di, 0), max(di, 0)), (max(-dj, 0), max(dj, 0))))
    return a[max(di, 0) : max(di, 0) + h, max(dj, 0) : max(dj, 0) + w]


def _weighted(terms, weights, quarter: int):
    """``sum_d w[d, quarter] * value_d`` over (direction, value) pairs; unit weights if ``weights`` is None"""
    if weights is None:
        return sum(v for _, v in terms)
    return sum(weights[d, quarter] * v for d, v in terms)


def _red_neighbours(black: Float[Array, "2 H2 W2"], weights=None) -> Float[Array, "2 H2 W2"]:
    """Weighted 4-neighbour sums of the red quarters (0,0), (1,1), whose neighbours are all black.

    ``weights`` (directions left, right, up, down; quarters) or None for unit weights.
    """
    q01, q10 = black[0], black[1]
    n00 = [(0, _shift(q01, 0, -1)), (1, q01), (2, _shift(q10, -1, 0)), (3, q10)]
    n11 = [(0, q10), (1, _shift(q10, 0, 1)), (2, q01), (3, _shift(q01, 1, 0))]
    return jnp.stack([_weighted(n00, weights, 0), _weighted(n11, weights, 1)])


def _black_neighbours(red: Float[Array, "2 H2 W2"], weights=None) -> Float[Array, "2 H2 W2"]:
    """The same for the black quarters (0,1), (1,0)."""
    q00, q11 = red[0], red[1]
    n01 = [(0, q00), (1, _shift(q00, 0, 1)), (2, _shift(q11, -1, 0)), (3, q11)]
    n10 = [(0, _shift(q11, 0, -1)), (1, q11), (2, q00), (3, _shift(q00, 1, 0))]
    return jnp.stack([_weighted(n01, weights, 2), _weighted(n10, weights, 3)])


def _neighbours(a: Float[Array, "4 H2 W2"]) -> tuple[Float[Array, "4 H2 W2"], ...]:
    """Every pixel's left, right, upper and lower neighbour, in quarter layout (zero beyond the array)."""
    q00, q11, q01, q10 = a
    left = jnp.stack([_shift(q01, 0, -1), q10, q00, _shift(q11, 0, -1)])
    right = jnp.stack([q01, _shift(q10, 0, 1), _shift(q00, 0, 1), q11])
    up = jnp.stack([_shift(q10, -1, 0), q01, _shift(q11, -1, 0), q00])
    down = jnp.stack([q10, _shift(q01, 1, 0), q11, _shift(q00, 1, 0)])
    return left, right, up, down


def _neighbour_sum(u: Float[Array, "4 H2 W2"]) -> Float[Array, "4 H2 W2"]:
    """The sum of every pixel's four neighbours, quarter layout (zero beyond the array)."""
    return jnp.concatenate([_red_neighbours(u[2:]), _black_neighbours(u[:2])])


class _Level(eqx.Module):
    """One multigrid level in quarter layout.

    The finest level has unit weights on the edges inside the region (``region`` set, ``weights`` None;
    ``diag`` is kept for CG's operator); coarser ones carry the edge weights to the left, right, upper and
    lower neighbour of every pixel (``weights``) and need no region (weights and ``inv_diag`` vanish
    outside it).
    """

    inv_diag: Float[Array, "4 H2 W2"]
    diag: Float[Array, "4 H2 W2"] | None = None
    region: Float[Array, "4 H2 W2"] | None = None
    weights: Float[Array, "4 4 H2 W2"] | None = None


class _Multigrid(eqx.Module):
    levels: list[_Level]  # finest first, each padded to even sides
    coarsest: Float[Array, "N N"]  # the inverse of the coarsest operator (dense; N = its pixel count)


def _coarsest_inverse(op: _Operator, whole: Bool[Array, ""]) -> Float[Array, "N N"]:
    """Dense inverse of the coarsest operator (at most ``_COARSEST`` pixels).

    Pixels outside the region (zero rows) get a unit diagonal, so they map to zero. When the region is the
    whole image the operator is singular with the constants as null space; adding ``J / N`` (``J`` all ones)
    makes it invertible without changing the solution for the zero-mean right-hand sides CG supplies.
    """
    shape = op.leak.shape
    n = math.prod(shape)
    basis = jnp.eye(n, dtype=op.leak.dtype).reshape((n,) + shape)
    a = jax.vmap(lambda e: _apply(op, e))(basis).reshape(n, n)
    a = a + jnp.diag((op.diag.reshape(n) == 0).astype(a.dtype)) + jnp.where(whole, 1.0 / n, 0.0)
    # from the eigendecomposition (one LAPACK call): XLA:CPU expands the triangular solves of a Cholesky
    # inverse into loops that took 3.6 ms inside synthesize_batch; eigenvalues floored against rounding
    w, v = jnp.linalg.eigh(a)
    w = jnp.maximum(w, 1e-6 * w[-1])
    return (v / w[None, :]) @ v.T


def _in_image(shape: tuple[int, int], dtype) -> Float[Array, "4 H2 W2"]:
    """1 on the pixels of an image of ``shape`` in quarter layout, 0 on the padding that evens its sides."""
    return _to_quarters(jnp.ones(shape, dtype))


def _multigrid(region: Float[Array, "4 H2 W2"], in_image: Float[Array, "4 H2 W2"], whole) -> _Multigrid:
    """The hierarchy of the masked 5-point operator of ``region`` (1 inside, quarter layout).

    The finest level is read off the region directly; the next one is its Galerkin coarsening (2x2 blocks
    are exactly the quarters' elements): an edge between two blocks weighs the number of fine region edges
    that cross it, a block leaks the number of its fine Dirichlet edges. ``whole``: the region is the whole
    image (singular operator).
    """
    degree = _neighbour_sum(in_image)
    levels = [_Level(region / jnp.maximum(degree, 1.0), diag=region * degree, region=region)]
    q00, q11, q01, q10 = region
    wx = q01[:, :-1] * q00[:, 1:] + q11[:, :-1] * q10[:, 1:]  # fine edges between block columns J, J+1
    wy = q10[:-1, :] * q00[1:, :] + q11[:-1, :] * q01[1:, :]  # and between block rows I, I+1
    leak = region * (degree - _neighbour_sum(region))
    # the four quarters added, not .sum(axis=0): inside a larger program XLA:CPU made that a YNNPACK
    # reduction taking 8 ms at 512 px
    op = _make_operator(wx, wy, leak[0] + leak[1] + leak[2] + leak[3])
    while op.leak.size > _COARSEST:
        directions = (_pad_x(op.wx, 1), _pad_x(op.wx, 0), _pad_y(op.wy, 1), _pad_y(op.wy, 0))
        levels.append(
            _Level(_to_quarters(op.inv_diag), weights=jnp.stack([_to_quarters(d) for d in directions]))
        )
        op = _coarsen(op)
    return _Multigrid(levels, _coarsest_inverse(op, whole))


def _fine_apply(fine: _Level, u: Float[Array, "4 H2 W2"]) -> Float[Array, "4 H2 W2"]:
    """``A u`` on the finest level, quarter layout (``u`` zero outside the region)."""
    return fine.diag * u - fine.region * _neighbour_sum(u)


def _v_cycle(mg: _Multigrid, r: Float[Array, "4 H2 W2"], level: int = 0) -> Float[Array, "4 H2 W2"]:
    """One symmetric V-cycle from a zero guess: an SPD approximation of ``A^{-1} r`` (quarter layout).

    Per level: one red-black Gauss-Seidel sweep, the coarse correction (restriction = 2x2 block sums,
    prolongation = piecewise constant, over-corrected by ``_OVER_CORRECTION``), one black-red sweep; the
    coarsest level is solved exactly (``_coarsest_inverse``). Symmetric because the post-smoother is the
    adjoint of the pre-smoother, restriction is the transpose of prolongation and the coarsest inverse is
    symmetric. What is known to be zero is left out: the first red half sweep starts from zero (so it is
    ``r / diag``); after the black half sweep the residual vanishes on black pixels and on red ones is the
    weighted black neighbour sum (``r - diag * r / diag = 0``); the coarse correction is added to red
    pixels only, as the next (black) half sweep overwrites the black ones.
    """
    lv = mg.levels[level]
    d, w = lv.inv_diag, lv.weights
    red = r[:2] * d[:2]
    black = (r[2:] + _black_neighbours(red, w)) * d[2:]
    residual = _red_neighbours(black, w)
    if lv.region is not None:  # unit weights also reach outside the region; mask them off
        residual = lv.region[:2] * residual
    coarse_r = residual[0] + residual[1]
    if level + 1 == len(mg.levels):
        # a matrix product, not a multiply-and-sum: XLA:CPU (jax 0.10.2) fused the latter with the sweeps
        # around it into a YNNPACK reduction that returned wrong rows under vmap over ~940-1500 vectors
        coarse_x = (mg.coarsest @ coarse_r.reshape(-1)).reshape(coarse_r.shape)
    else:
        coarse_x = _v_cycle(mg, _to_quarters(coarse_r), level + 1)
        coarse_x = _from_quarters(coarse_x, coarse_r.shape)
    correction = _OVER_CORRECTION * coarse_x[None]
    if lv.region is not None:  # x must stay zero outside the region (the unit stencil reads it there)
        correction = lv.region[:2] * correction
    red = red + correction
    black = (r[2:] + _black_neighbours(red, w)) * d[2:]
    red = (r[:2] + _red_neighbours(black, w)) * d[:2]
    return jnp.concatenate([red, black])
