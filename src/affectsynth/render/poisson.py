"""Gradient-domain (Poisson) blending by preconditioned conjugate gradient on the masked 5-point Laplacian.

The discrete problem (Perez, Gangnet & Blake 2003), one channel at a time. Unknowns are the pixels of
:math:`\\Omega = \\{p : \\text{mask}_p > 0.5\\}` (a soft mask is thresholded, not feathered). For each
:math:`p \\in \\Omega`, with :math:`N_p` its 4-neighbours *that lie inside the image*,

.. math::
    \\sum_{q \\in N_p} (f_p - f_q) = \\sum_{q \\in N_p} v_{pq},
    \\qquad f_q = t_q \\text{ for } q \\notin \\Omega,

so the boundary of the region takes the target's values (Dirichlet) and a neighbour missing because ``p``
is on the image border is simply absent (Neumann: zero normal derivative). The matrix of this system is
symmetric positive definite whenever :math:`\\Omega` is not the whole image. When it is (no Dirichlet data
at all) the system is singular with the constants as null space; it is solved on the zero-mean subspace
and the mean of the solution is pinned to the mean of the initial guess (``poisson_blend``: the source's).

Everything is matrix-free and static-shape: vectors are whole arrays that are zero outside :math:`\\Omega`;
the operator is stored as edge weights (1 where both ends are unknowns) plus a diagonal "leak" (the number
of Dirichlet neighbours), which also describes every coarse level of the multigrid preconditioner.
Conjugate gradient runs in a ``lax.while_loop`` to a relative residual
:math:`\\|b - Af\\|_2 / \\|b\\|_2 \\le` ``tol`` or ``max_iters``. With the multigrid preconditioner the
vectors are kept in a 2x2 "quarter" layout (``_to_quarters``: the four pixels of each 2x2 block in four
half-size planes, red pixels of the checkerboard first), where a Gauss-Seidel half sweep touches only its
own colour and the coarsening is elementwise; the blend assembles its right-hand side in that layout too.

Called eagerly with a concrete mask, ``poisson_blend``/``solve_blend`` solve only in the mask's bounding box
plus a one-pixel frame (``solve_window``), as OpenCV does: the work scales with the region, not the image.

Preconditioners (static choice):

* ``"multigrid"`` (default): one symmetric V-cycle of aggregation multigrid (2x2 blocks, Galerkin coarse
  operators that are again edge-weighted Laplacians, one red-black Gauss-Seidel sweep before and after the
  over-corrected coarse update, a dense exact solve on the coarsest level of at most 64 pixels). About
  10-15 iterations to 1e-5 independent of image size, each costing about two passes over the image for
  the V-cycle and two for CG, so it is the fast one.
* ``"dst"``: the exact inverse of the Dirichlet Laplacian of the (window) rectangle by a fast sine
  transform, applied to the masked residual and masked again (symmetric). Iterations grow slowly with the
  size of the region (the condition number grows like its diameter, not its square), but grow fast when
  the region reaches the image border, where the true edge is Neumann (80-100 iterations at 512-1024 px).
* ``"none"``: plain CG (hundreds of iterations at 256 px and above).
"""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._types import Image, Mask
from .multigrid import (
    _apply,
    _fine_apply,
    _from_quarters,
    _in_image,
    _multigrid,
    _neighbour_sum,
    _neighbours,
    _pad_x,
    _pad_y,
    _region_operator,
    _to_quarters,
    _v_cycle,
)

MASK_THRESHOLD = 0.5
"""Pixels with ``mask > MASK_THRESHOLD`` are unknowns of the Poisson problem."""

PRECONDITIONERS = ("multigrid", "dst", "none")

# the blend's channels share one CG loop up to this many pixels per channel (see _solve_quarters)
_LOCKSTEP_PIXELS = 1 << 16


class PoissonSolution(eqx.Module):
    """The solution of one channel's masked Poisson problem with convergence diagnostics.

    Attributes:
        x: f32[H, W] the solution inside the region, the Dirichlet values outside it.
        iterations: number of CG iterations run.
        residual: final relative residual :math:`\\|b - Af\\|_2 / \\|b\\|_2`, recomputed after the loop
            (not CG's recursive estimate, which can drift below it in float32).
    """

    x: Float[Array, "H W"]
    iterations: Int[Array, ""]
    residual: Float[Array, ""]


# --------------------------------------------------------------------------------------------------------
# Fast sine transform preconditioner


def _dst1(x, axis: int):
    """Unnormalised DST-I along ``axis``: :math:`y_k = \\sum_{n=1}^{N} x_n \\sin(\\pi k n / (N+1))`.

    From the real FFT of the odd extension :math:`[0, x, 0, -\\mathrm{rev}(x)]` of length 2N+2, whose
    transform is :math:`-2i y_k`.
    """
    x = jnp.moveaxis(x, axis, -1)
    z = jnp.zeros(x.shape[:-1] + (1,), x.dtype)
    ext = jnp.concatenate([z, x, z, -x[..., ::-1]], axis=-1)
    n = x.shape[-1]
    y = -0.5 * jnp.imag(jnp.fft.rfft(ext, axis=-1))[..., 1 : n + 1]
    return jnp.moveaxis(y.astype(x.dtype), -1, axis)


def _dirichlet_inverse(r):
    """Exact inverse of the 5-point Laplacian of the rectangle with zero values just outside it."""
    h, w = r.shape
    ky = jnp.arange(1, h + 1, dtype=r.dtype) * (math.pi / (h + 1))
    kx = jnp.arange(1, w + 1, dtype=r.dtype) * (math.pi / (w + 1))
    eig = (2.0 - 2.0 * jnp.cos(ky))[:, None] + (2.0 - 2.0 * jnp.cos(kx))[None, :]
    s = _dst1(_dst1(r, 0), 1) / eig
    return _dst1(_dst1(s, 0), 1) * (4.0 / ((h + 1) * (w + 1)))


# --------------------------------------------------------------------------------------------------------
# Conjugate gradient


def _right_hand_side(gx, gy, boundary, inside):
    """``b_p = sum_{q in N_p} v_pq + sum_{q in N_p, q outside} t_q`` for p inside (0 elsewhere).

    ``gx[i, j]`` is the guidance on the edge from (i, j) to (i, j+1), i.e. ``v_pq = -gx`` seen from the left
    pixel and ``+gx`` from the right one: a forward-difference gradient field.
    """
    dt = boundary.dtype
    m = inside.astype(dt)
    div = _pad_x(gx, 1) - _pad_x(gx, 0) + _pad_y(gy, 1) - _pad_y(gy, 0)
    outside = boundary * (1 - m)
    dirichlet = (
        _pad_x(outside[:, 1:], 0)
        + _pad_x(outside[:, :-1], 1)
        + _pad_y(outside[1:, :], 0)
        + _pad_y(outside[:-1, :], 1)
    )
    return m * (div + dirichlet)


def _dot(a, b):
    return jnp.sum(a * b)


def _zero_mean(v, region, n: int, whole):
    """``v`` less its mean over the ``n`` pixels of the image when the region is the whole image (where the
    constants are the operator's null space); ``v`` itself otherwise."""
    return jnp.where(whole, v - region * (jnp.sum(v) / n), v)


def _cg(apply, precondition, r, scale, tol: float, max_iters: int, dot=_dot):
    """Preconditioned CG for ``A du = r`` from ``du = 0``, until ``|r - A du| * scale <= tol`` or
    ``max_iters``; returns ``(du, iterations)``. Vectors are in whatever layout ``apply`` and
    ``precondition`` use. Each iteration preconditions first, so the preconditioner is traced (and
    compiled) once and never applied to the final residual. ``dot`` (default: over the whole array) may
    keep axes of independent systems, e.g. channels: each then gets its own step sizes and ``scale``, and
    the loop runs until every one has converged."""

    def cond(state):
        _, _, _, _, rr, k = state
        return (jnp.max(jnp.sqrt(rr) * scale) > tol) & (k < max_iters)

    def body(state):
        u, r, p, rz_old, _, k = state
        z = precondition(r)
        rz = dot(r, z)
        beta = jnp.where((k > 0) & (rz_old > 0), rz / jnp.where(rz_old > 0, rz_old, 1.0), 0.0)
        p = z + beta * p
        ap = apply(p)
        pap = dot(p, ap)
        alpha = jnp.where(pap > 0, rz / jnp.where(pap > 0, pap, 1.0), 0.0)
        u = u + alpha * p
        r = r - alpha * ap
        return u, r, p, rz, dot(r, r), k + 1

    zero = jnp.zeros_like(r)
    state = (zero, r, zero, jnp.ones_like(dot(r, r)), dot(r, r), jnp.zeros((), jnp.int32))
    u, _, _, _, _, k = jax.lax.while_loop(cond, body, state)
    return u, k


@functools.partial(jax.jit, static_argnames=("tol", "max_iters", "preconditioner"))
def solve_poisson(
    gx: Float[Array, "H Wm1"],
    gy: Float[Array, "Hm1 W"],
    boundary: Float[Array, "H W"],
    mask: Float[Array, "H W"] | Bool[Array, "H W"],
    x0: Float[Array, "H W"] | None = None,
    *,
    tol: float = 1e-5,
    max_iters: int = 100,
    preconditioner: str = "multigrid",
) -> PoissonSolution:
    """Solve one channel's masked Poisson problem by preconditioned CG.

    Solves :math:`\\sum_{q \\in N_p}(f_p - f_q) = \\sum_{q \\in N_p} v_{pq}` for :math:`p \\in \\Omega` with
    :math:`f = ` ``boundary`` outside :math:`\\Omega` (see the module docstring for the border and
    whole-image conventions). ``tol``, ``max_iters`` and ``preconditioner`` are static. Compiled as a whole:
    called outside any ``jit``, its CG loop over fresh closures compiled again on every call (0.7 s and
    ~100 memory maps never given back).

    Args:
        gx: guidance on horizontal edges, ``gx[i, j]`` for the edge (i, j) -> (i, j+1): a forward-difference
            gradient (e.g. ``src[:, 1:] - src[:, :-1]`` for importing gradients).
        gy: guidance on vertical edges, ``gy[i, j]`` for (i, j) -> (i+1, j).
        boundary: Dirichlet values, used outside the region.
        mask: the region is ``mask > 0.5``.
        x0: initial guess inside the region (default ``boundary``); also fixes the mean when the region
            is the whole image.
        tol: target relative residual :math:`\\|b - Af\\|_2 / \\|b\\|_2`.
        max_iters: at most this many CG iterations.
        preconditioner: "multigrid", "dst" or "none".

    Returns:
        The solution with the iterations used and the final relative residual.
    """
    if preconditioner not in PRECONDITIONERS:
        raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {preconditioner!r}")
    boundary = jnp.asarray(boundary)
    dt = boundary.dtype
    inside = jnp.asarray(mask) > MASK_THRESHOLD
    m = inside.astype(dt)
    x0 = boundary if x0 is None else jnp.asarray(x0, dt)
    whole = jnp.all(inside)
    n = math.prod(inside.shape)
    op = _region_operator(inside, dt)
    rhs = _right_hand_side(jnp.asarray(gx, dt), jnp.asarray(gy, dt), boundary, inside)
    # On the whole image the constants are the null space: b is made zero-mean once, and CG then stays in
    # the range of A by itself (every A p sums to zero, and the preconditioners are positive definite on
    # the whole space), so the loop needs no projections; the solution's mean is fixed after it.
    b = _zero_mean(rhs, m, n, whole)
    scale = 1.0 / jnp.maximum(jnp.sqrt(_dot(b, b)), jnp.finfo(dt).tiny)
    u = m * x0
    r = b - _apply(op, u)
    if preconditioner == "multigrid":  # CG runs in the finest level's quarter layout (see _to_quarters)
        mg = _multigrid(_to_quarters(m), _in_image(inside.shape, dt), whole)
        du, k = _cg(
            lambda v: _fine_apply(mg.levels[0], v),
            lambda r: _v_cycle(mg, r),
            _to_quarters(r),
            scale,
            tol,
            max_iters,
        )
        du = _from_quarters(du, inside.shape)
    else:
        # the DST inverse is masked: the correction must stay zero outside the region
        precondition = (lambda r: m * _dirichlet_inverse(r)) if preconditioner == "dst" else (lambda r: r)
        du, k = _cg(lambda v: _apply(op, v), precondition, r, scale, tol, max_iters)
    u = u + du
    u = jax.lax.cond(whole, lambda u: u - jnp.mean(u) + jnp.mean(x0), lambda u: u, u)
    final = b - _apply(op, m * u)
    final = _zero_mean(final, m, n, whole)
    residual = jnp.sqrt(_dot(final, final)) * scale
    return PoissonSolution(jnp.where(inside, u, boundary), k, residual)


# --------------------------------------------------------------------------------------------------------
# Blending


def _stronger(source_diff, target_diff):
    """Mixed gradients: per edge the difference of larger magnitude (the source's on a tie)."""
    return jnp.where(jnp.abs(source_diff) >= jnp.abs(target_diff), source_diff, target_diff)


def guidance_field(
    target: Float[Array, "H W"], source: Float[Array, "H W"], *, mixed: bool = False
) -> tuple[Float[Array, "H Wm1"], Float[Array, "Hm1 W"]]:
    """Forward-difference guidance of one channel: the source's gradient, or per edge the larger-magnitude
    of the source's and the target's (mixed gradients, which keep target texture where it is stronger)."""
    sx, sy = source[:, 1:] - source[:, :-1], source[1:, :] - source[:-1, :]
    if not mixed:
        return sx, sy
    tx, ty = target[:, 1:] - target[:, :-1], target[1:, :] - target[:-1, :]
    return _stronger(sx, tx), _stronger(sy, ty)


def _solve_channels(target, source, mask, mixed, tol, max_iters, preconditioner) -> PoissonSolution:
    """Every channel through ``solve_poisson`` (ordinary layout; the "dst" and "none" preconditioners)."""

    def channel(t, s):
        gx, gy = guidance_field(t, s, mixed=mixed)
        return solve_poisson(gx, gy, t, mask, s, tol=tol, max_iters=max_iters, preconditioner=preconditioner)

    sol = jax.vmap(channel, in_axes=(2, 2))(target, source)
    return PoissonSolution(jnp.moveaxis(sol.x, 0, -1), sol.iterations, sol.residual)


def _image_quarters(image: Float[Array, "H W C"]) -> Float[Array, "C 4 H2 W2"]:
    # channels first, then quarters: sliced straight from the channel-last array, XLA:CPU chose a
    # transposed layout and a copy after it (3.5 ms at 512 px inside synthesize_batch)
    return jax.vmap(_to_quarters)(jnp.transpose(image, (2, 0, 1)))


def _image_from_quarters(q: Float[Array, "C 4 H2 W2"], shape: tuple[int, int]) -> Float[Array, "H W C"]:
    return jnp.moveaxis(jax.vmap(lambda c: _from_quarters(c, shape))(q), 0, -1)


def _solve_quarters(target, source, region, shape, mixed, tol, max_iters) -> PoissonSolution:
    """The blend with the multigrid preconditioner, set up and solved in quarter layout throughout.

    ``target``, ``source``: f32[C, 4, H2, W2] (``_image_quarters``), ``region``: f32[4, H2, W2] (1 inside),
    ``shape``: the image's (H, W). Same system as ``solve_poisson`` with the guidance of
    ``guidance_field``, assembled per pixel from its four neighbours (no layout changes).

    Up to ``_LOCKSTEP_PIXELS`` pixels the channels run in lockstep: one CG loop over all of them with
    per-channel step sizes, until the last one has converged (a channel that converged earlier keeps
    refining; each reports the loop's count). On two cores that was 20-30% faster than one channel after
    another at face-sized windows: every pass is three times larger, so XLA's per-kernel cost and its
    hand-offs between threads are paid once per iteration instead of three times. Larger windows solve
    the channels one after another (``lax.map``, each to its own count): three channels' vectors no
    longer fit in a core's cache, and lockstep was 1.3-1.8x slower there. Returns the solution in quarter
    layout (the target outside the region).
    """
    dt = target.dtype
    n = math.prod(shape)
    in_image = _in_image(shape, dt)
    whole = jnp.all((region > 0) | (in_image == 0))
    mg = _multigrid(region, in_image, whole)
    fine = mg.levels[0]

    def right_hand_side(t, s):
        if mixed:  # the guidance of every edge chosen separately
            b = 0.0
            present = _neighbours(in_image)  # 1 where that neighbour is a pixel of the image
            neighbours = zip(present, _neighbours(region), _neighbours(t), _neighbours(s), strict=True)
            for e, m_q, t_q, s_q in neighbours:
                v = _stronger(s - s_q, t - t_q)  # guidance on the edge p -> q
                b = b + e * (v + (1.0 - m_q) * t_q)
        else:
            # importing gradients: sum_q (s_p - s_q) + sum_{q outside} t_q over the neighbours q in the
            # image, i.e. degree * s_p minus one neighbour sum (beyond the image both s and t are zero)
            b = fine.diag * s - _neighbour_sum(s - (1.0 - region) * t)
        return _zero_mean(region * b, region, n, whole)  # see solve_poisson

    axes = (1, 2, 3)
    dot = lambda a, c: jnp.sum(a * c, axis=axes, keepdims=True)  # noqa: E731 (per channel)
    total = lambda a: jnp.sum(a, axis=axes, keepdims=True)  # noqa: E731
    apply = jax.vmap(lambda v: _fine_apply(fine, v))
    precondition = jax.vmap(lambda r: _v_cycle(mg, r))

    def solve(t, s):  # channels f32[c, 4, H2, W2] in one CG loop
        b = jax.vmap(right_hand_side)(t, s)
        scale = 1.0 / jnp.maximum(jnp.sqrt(dot(b, b)), jnp.finfo(dt).tiny)
        u = region[None] * s
        du, k = _cg(apply, precondition, b - apply(u), scale, tol, max_iters, dot)
        u = u + du
        u = jnp.where(whole, u - region[None] * ((total(u) - total(s)) / n), u)  # the source's mean
        final = jax.vmap(lambda f: _zero_mean(f, region, n, whole))(b - apply(u))
        residual = (jnp.sqrt(dot(final, final)) * scale).reshape(-1)
        x = jnp.where(region[None] > 0, u, t)
        return PoissonSolution(x, jnp.broadcast_to(k, residual.shape), residual)

    if region.size <= _LOCKSTEP_PIXELS:
        return solve(target, source)
    sol = jax.lax.map(lambda ts: solve(ts[0][None], ts[1][None]), (target, source))
    return PoissonSolution(sol.x[:, 0], sol.iterations[:, 0], sol.residual[:, 0])


def _solve(target, source, mask, mixed, tol, max_iters, preconditioner) -> PoissonSolution:
    """Every channel's solve; the solution ``x`` as f32[H, W, C] (the target outside the region)."""
    source = source.astype(target.dtype)
    if preconditioner != "multigrid":
        return _solve_channels(target, source, mask, mixed, tol, max_iters, preconditioner)
    region = _to_quarters((mask > MASK_THRESHOLD).astype(target.dtype))
    q = _image_quarters
    sol = _solve_quarters(q(target), q(source), region, mask.shape, mixed, tol, max_iters)
    return PoissonSolution(_image_from_quarters(sol.x, mask.shape), sol.iterations, sol.residual)


_STATIC = ("mixed", "tol", "max_iters", "preconditioner", "image_only")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _solve_blend(target, source, mask, *, mixed, tol, max_iters, preconditioner, image_only):
    sol = _solve(target, source, mask, mixed, tol, max_iters, preconditioner)
    # poisson_blend wants the clipped image only: the residual diagnostics are then dead code XLA drops
    return jnp.clip(sol.x, 0.0, 1.0) if image_only else sol


@functools.partial(jax.jit, static_argnames=("size",))
def _cut(arrays, top, left, *, size):
    """The ``size`` window at (top, left) of each array. A separate program from the solve on purpose:
    with dynamic offsets XLA:CPU fuses the slice into its consumers, and those passes (the layout change
    to quarters, the set-up) then ran several times slower."""
    return tuple(
        jax.lax.dynamic_slice(a, (top, left) + (0,) * (a.ndim - 2), size + a.shape[2:]) for a in arrays
    )


@functools.partial(jax.jit, static_argnames=_STATIC)
def _solve_blend_window(target, cut, top, left, *, mixed, tol, max_iters, preconditioner, image_only):
    """The solve on the window arrays ``cut`` (from ``_cut``), pasted into the full ``target`` (outside the
    window: the target, untouched); in one program, which saves a dispatch and a pass."""
    sol = _solve(*cut, mixed, tol, max_iters, preconditioner)
    x = jnp.clip(sol.x, 0.0, 1.0) if image_only else sol.x
    x = jax.lax.dynamic_update_slice(target.astype(x.dtype), x, (top, left, 0))
    return x if image_only else PoissonSolution(x, sol.iterations, sol.residual)


WINDOW_STEP = 16
"""Window sides are rounded up to a multiple of this, so nearby mask sizes share one compilation."""


def solve_window(mask: Mask) -> tuple[int, int, int, int] | None:
    """``(top, left, height, width)`` of the smallest window that holds the region and a 1-pixel frame
    around it (clipped at the image border), its sides rounded up to ``WINDOW_STEP``.

    The problem inside the window is exactly the whole-image problem: every unknown keeps its four
    neighbours, the frame supplies the Dirichlet values, and where the region touches the image border the
    window does too (same Neumann edge). ``None`` when there is nothing to gain: the mask is traced (inside
    ``jit``/``vmap`` the shape must be static), empty, or the window is the whole image.
    """
    try:
        inside = np.asarray(mask) > MASK_THRESHOLD
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if rows.size == 0:
        return None

    def span(first: int, last: int, n: int) -> tuple[int, int]:
        lo, hi = max(first - 1, 0), min(last + 2, n)
        size = min(-(-(hi - lo) // WINDOW_STEP) * WINDOW_STEP, n)
        return min(lo, n - size), size

    (top, height), (left, width) = (
        span(rows[0], rows[-1], inside.shape[0]),
        span(cols[0], cols[-1], inside.shape[1]),
    )
    if (height, width) == inside.shape:
        return None
    return top, left, height, width


def _blend(target, source, mask, mixed, tol, max_iters, preconditioner, window, *, image_only):
    if preconditioner not in PRECONDITIONERS:
        raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {preconditioner!r}")
    # every static argument passed explicitly, so defaults and explicit values share one compilation
    static = dict(
        mixed=bool(mixed),
        tol=float(tol),
        max_iters=int(max_iters),
        preconditioner=preconditioner,
        image_only=image_only,
    )
    window = solve_window(mask) if window else None
    target, source, mask = jnp.asarray(target), jnp.asarray(source), jnp.asarray(mask)
    if window is None:
        return _solve_blend(target, source, mask, **static)
    top, left, height, width = window
    cut = _cut((target, source, mask), top, left, size=(height, width))
    return _solve_blend_window(target, cut, top, left, **static)


def solve_blend(
    target: Image,
    source: Image,
    mask: Mask,
    *,
    mixed: bool = False,
    tol: float = 1e-5,
    max_iters: int = 100,
    preconditioner: str = "multigrid",
    window: bool = True,
) -> PoissonSolution:
    """``poisson_blend`` without the clipping, with diagnostics: ``x`` f32[H, W, 3], ``iterations`` i32[3]
    and ``residual`` f32[3] per channel. jit-compiled, in the mask's window (``solve_window``) when the
    mask is concrete. With the multigrid preconditioner the channels of a window of up to
    ``_LOCKSTEP_PIXELS`` (65,536) pixels share one CG loop that runs until the last has converged (every
    channel reports that count); larger ones are solved one after another, each to its own count. "dst"
    and "none" vmap the channels (each stops at its own count)."""
    return _blend(target, source, mask, mixed, tol, max_iters, preconditioner, window, image_only=False)


def poisson_blend(
    target: Image,
    source: Image,
    mask: Mask,
    *,
    mixed: bool = False,
    tol: float = 1e-5,
    max_iters: int = 100,
    preconditioner: str = "multigrid",
    window: bool = True,
) -> Image:
    """Blend ``source`` into ``target`` inside ``mask`` by solving the Poisson equation per channel.

    Inside :math:`\\Omega = \\{\\text{mask} > 0.5\\}` the result's Laplacian matches the guidance field's
    divergence, on the region's boundary it meets the target:
    :math:`\\min_f \\sum_{(p,q) \\cap \\Omega \\ne \\emptyset} (f_p - f_q - v_{pq})^2` with
    :math:`f = t` outside :math:`\\Omega`. Importing gradients :math:`v_{pq} = s_p - s_q` (default) or
    mixed gradients (per edge the larger of the source's and target's difference). Outside the region
    the target is returned exactly (an empty mask returns ``target``); on the image border missing
    neighbours are ignored (Neumann); a mask covering the whole image returns the solution with the source's
    mean (for importing gradients, the source itself). Output clipped to [0, 1]. jit-compiled; vmap over a
    leading batch axis for batches (a ``while_loop`` then runs until every item has converged). Called
    with a concrete mask it solves only in the mask's window (``solve_window``: the work scales with the
    region, not the image); inside ``jit``/``vmap`` the mask is traced and the whole image is solved.

    Args:
        target: f32[H, W, 3] in [0, 1], the photo.
        source: f32[H, W, 3] in [0, 1], aligned with ``target``.
        mask: f32[H, W] in [0, 1]; thresholded at 0.5.
        mixed: mixed instead of importing gradients (static).
        tol: relative residual to stop at (static).
        max_iters: CG iteration cap (static).
        preconditioner: "multigrid" (default), "dst" or "none" (static).
        window: solve in the mask's window when the mask is concrete (default). Each new window size
            compiles the solver once (about 3 s on CPU; sides are rounded up to ``WINDOW_STEP``), so a long
            eager loop over masks of many sizes may prefer ``window=False``: one compilation per image size.
    """
    return _blend(target, source, mask, mixed, tol, max_iters, preconditioner, window, image_only=True)
