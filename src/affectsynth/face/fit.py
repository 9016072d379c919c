"""Fit of the morphable model to detected landmarks, and the camera that maps it into the photo.

The fit (``fit_morphable_model``) is a closed-form initialisation (3D similarity Procrustes alternated
with a ridge solve of the coefficients) refined by Adam on a robust objective; it is pure, jit-compilable
and vmappable (``fit_morphable_model_batch``), with a per-landmark mask for missing points. The camera is
scaled-orthographic: ``projected = scale * shape @ rotation.T + translation``.
"""

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from .._types import Landmarks, Rotation, Vertices
from . import topology as topo
from .geometry import similarity_procrustes
from .morphable import FLIP, MorphableModel

# --------------------------------------------------------------------------------------------------------
# Rotations and camera


def _hat(w: Float[Array, "3"]) -> Float[Array, "3 3"]:
    z = jnp.zeros((), w.dtype)
    return jnp.stack([jnp.stack([z, -w[2], w[1]]), jnp.stack([w[2], z, -w[0]]), jnp.stack([-w[1], w[0], z])])


def rotvec_to_matrix(w: Float[Array, "3"]) -> Rotation:
    """Rodrigues' formula ``exp([w]_x)``, NaN-free with finite gradients at ``w = 0``."""
    theta2 = jnp.sum(w * w)
    small = theta2 < 1e-8
    t2 = jnp.where(small, 1.0, theta2)
    theta = jnp.sqrt(t2)
    a = jnp.where(small, 1.0 - theta2 / 6.0, jnp.sin(theta) / theta)
    b = jnp.where(small, 0.5 - theta2 / 24.0, (1.0 - jnp.cos(theta)) / t2)
    k = _hat(w)
    return jnp.eye(3, dtype=w.dtype) + a * k + b * (k @ k)


def _axis_rotation(angle, axis: int):
    c, s = jnp.cos(angle), jnp.sin(angle)
    o, z = jnp.ones_like(c), jnp.zeros_like(c)
    if axis == 0:
        rows = [[o, z, z], [z, c, -s], [z, s, c]]
    elif axis == 1:
        rows = [[c, z, s], [z, o, z], [-s, z, c]]
    else:
        rows = [[c, -s, z], [s, c, z], [z, z, o]]
    return jnp.stack([jnp.stack(r) for r in rows])


def pose_rotation(yaw: Float[Array, ""], pitch: Float[Array, ""], roll: Float[Array, ""]) -> Rotation:
    """Canonical -> landmark-frame rotation of a head turned by (yaw, pitch, roll) in degrees.

    Head rotation in the canonical frame is ``R_y(yaw) R_x(pitch) R_z(roll)`` (positive yaw turns the nose
    towards image right, positive pitch turns it down, positive roll tilts the top of the head towards image
    left, i.e. counter-clockwise as seen in the image),
    followed by the fixed ``diag(1, -1, -1)`` frame change. Inverse of ``head_pose_degrees``.
    """
    y, p, r = (jnp.deg2rad(jnp.asarray(a, jnp.float32)) for a in (yaw, pitch, roll))
    head = _axis_rotation(y, 1) @ _axis_rotation(p, 0) @ _axis_rotation(r, 2)
    return jnp.asarray(FLIP, head.dtype) @ head


def head_pose_degrees(rotation: Rotation) -> Float[Array, "3"]:
    """(yaw, pitch, roll) in degrees of a canonical -> landmark rotation (see ``pose_rotation``)."""
    h = jnp.asarray(FLIP, rotation.dtype) @ rotation
    yaw = jnp.arctan2(h[0, 2], h[2, 2])
    pitch = jnp.arcsin(jnp.clip(-h[1, 2], -1.0, 1.0))
    roll = jnp.arctan2(h[1, 0], h[1, 1])
    return jnp.rad2deg(jnp.stack([yaw, pitch, roll]))


# --------------------------------------------------------------------------------------------------------
# Fit


class FitResult(eqx.Module):
    """A morphable-model fit to one face's landmarks (batched results carry a leading batch axis).

    Attributes:
        rotation: f32[3, 3] proper rotation canonical -> landmark frame (contains ``diag(1, -1, -1)``).
        scale: pixels per mm.
        translation: f32[3] pixels.
        identity: f32[K_id] identity coefficients (model units, not whitened).
        expression: f32[K_e] expression coefficients fitted on the input (what neutralisation removes).
        vertices: f32[V, 3] fitted canonical shape (mean + identity + expression), mm.
        projected: f32[V, 3] fitted shape in the landmark frame (pixels, y down, z away).
        residuals: f32[V] per-landmark image-plane (x, y) distance in pixels; 0 where masked.
        rms: rms of ``residuals`` over unmasked points / inter-pupil distance (3D, in pixels).
        interocular: inter-pupil distance of the fit in pixels (3D, so it does not shrink with yaw).
        loss: final value of the robust objective (per unmasked point).
    """

    rotation: Rotation
    scale: Float[Array, ""]
    translation: Float[Array, "3"]
    identity: Float[Array, " Ki"]
    expression: Float[Array, " Ke"]
    vertices: Vertices
    projected: Vertices
    residuals: Float[Array, " V"]
    rms: Float[Array, ""]
    interocular: Float[Array, ""]
    loss: Float[Array, ""]


def to_image(fit: FitResult, canonical_points: Float[Array, "N 3"]) -> Float[Array, "N 3"]:
    """Apply the fitted pose: canonical mm -> landmark frame pixels (``s R x + t``)."""
    return fit.scale * (canonical_points @ fit.rotation.T) + fit.translation[None, :]


def to_image_offsets(fit: FitResult, canonical_offsets: Float[Array, "N 3"]) -> Float[Array, "N 3"]:
    """Rotate and scale displacements (mm, canonical) into pixel displacements in the landmark frame."""
    return fit.scale * (canonical_offsets @ fit.rotation.T)


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Static settings of the fit (hashable).

    Attributes:
        learning_rate: Adam step size (cosine-decayed to 5% over the steps); parameters are scaled so one
            rate suits all (about 0.3 deg, 0.5% scale, 0.5% IOD and 0.02 prior std per step at the start).
        depth_weight: weight of the z residuals relative to x, y (FaceMesh depth is less reliable).
        noise: landmark noise std as a fraction of the inter-pupil distance; sets the data-vs-prior balance.
        robust_scale: pseudo-Huber threshold as a fraction of the inter-pupil distance: residuals beyond it
            count linearly (outlier landmarks, occlusions).
        init_iterations: Procrustes / ridge alternations of the closed-form initialisation.
        unroll: ``lax.scan`` unroll factor of the Adam loop (a CPU speed knob; same result).
    """

    learning_rate: float = 0.02
    depth_weight: float = 0.5
    noise: float = 0.02
    robust_scale: float = 0.05
    init_iterations: int = 2
    unroll: int = 1


class _Params(eqx.Module):
    rotvec: Float[Array, "3"]
    log_scale: Float[Array, ""]
    shift: Float[Array, "3"]
    identity: Float[Array, " Ki"]  # whitened: coefficient / std
    expression: Float[Array, " Ke"]


_UNITS = {"rotvec": 0.25, "log_scale": 0.25, "shift": 0.25, "identity": 1.0, "expression": 1.0}


class _Frame(eqx.Module):
    """Closed-form initial pose the Adam parameters are relative to."""

    rotation: Rotation
    scale: Float[Array, ""]
    translation: Float[Array, "3"]
    iod: Float[Array, ""]


def _decode(p: _Params, frame: _Frame, model: MorphableModel):
    rotation = frame.rotation @ rotvec_to_matrix(_UNITS["rotvec"] * p.rotvec)
    scale = frame.scale * jnp.exp(_UNITS["log_scale"] * p.log_scale)
    translation = frame.translation + frame.iod * _UNITS["shift"] * p.shift
    identity = model.identity_std * p.identity
    expression = model.expression_std * p.expression
    return rotation, scale, translation, identity, expression


def _objective(
    p: _Params, frame: _Frame, model: MorphableModel, landmarks, weights, config: FitConfig
) -> Float[Array, ""]:
    """Robust negative log posterior per unmasked point.

    :math:`\\frac{1}{\\sum_i w_i}\\Big[\\sum_i w_i \\frac{\\rho(\\|D(sRx_i+t-y_i)\\|/d)}{2\\sigma^2}
    + \\tfrac12\\|\\alpha/\\sigma_\\alpha\\|^2 + \\tfrac12\\|\\epsilon/\\sigma_\\epsilon\\|^2\\Big]`, with
    :math:`\\rho(u) = 2c^2(\\sqrt{1+u^2/c^2}-1)` (pseudo-Huber, ~u^2 for small u), ``D = diag(1, 1,
    sqrt(depth_weight))``, ``d`` the initial inter-pupil distance in pixels and ``sigma = noise``.
    """
    rotation, scale, translation, identity, expression = _decode(p, frame, model)
    x = model.shape(identity, expression)
    proj = scale * (x @ rotation.T) + translation[None, :]
    dw = jnp.asarray([1.0, 1.0, np.sqrt(config.depth_weight)], proj.dtype)
    r = (proj - landmarks) * dw[None, :] / frame.iod
    u2 = jnp.sum(r * r, axis=1)
    c2 = config.robust_scale**2
    rho = 2.0 * c2 * (jnp.sqrt(1.0 + u2 / c2) - 1.0)
    data = jnp.sum(weights * rho) / (2.0 * config.noise**2)
    prior = 0.5 * (jnp.sum(p.identity**2) + jnp.sum(p.expression**2))
    return (data + prior) / jnp.maximum(jnp.sum(weights), 1.0)


def _ridge_coefficients(model, rotation, scale, translation, iod, landmarks, weights, config):
    """Whitened identity+expression coefficients minimising the quadratic objective at a fixed pose."""
    if model.num_identity + model.num_expression == 0:
        return jnp.zeros(0, landmarks.dtype), jnp.zeros(0, landmarks.dtype)
    basis = jnp.concatenate([model.identity_basis, model.expression_basis], axis=0)
    std = jnp.concatenate([model.identity_std, model.expression_std])
    dw = jnp.asarray([1.0, 1.0, np.sqrt(config.depth_weight)], landmarks.dtype)
    sw = jnp.sqrt(weights)[:, None] * dw[None, :] / (iod * config.noise)  # [V, 3]
    a = scale * jnp.einsum("kvb,ab->kva", basis, rotation) * std[:, None, None]
    a = (a * sw[None]).reshape(basis.shape[0], -1)  # [K, 3V]
    y = ((landmarks - scale * (model.mean @ rotation.T) - translation[None, :]) * sw).reshape(-1)
    lhs = a @ a.T + jnp.eye(a.shape[0], dtype=a.dtype)
    z = jnp.linalg.solve(lhs, a @ y)
    return z[: model.num_identity], z[model.num_identity :]


def _initialise(model: MorphableModel, landmarks, weights, config: FitConfig):
    """Procrustes of the mean, then ``init_iterations`` x (ridge coefficients, Procrustes of the shape)."""
    zi = jnp.zeros(model.num_identity, landmarks.dtype)
    ze = jnp.zeros(model.num_expression, landmarks.dtype)
    x = model.mean
    rotation, scale, translation = similarity_procrustes(x, landmarks, weights)
    for _ in range(config.init_iterations):
        iod = jnp.maximum(scale * topo.IPD_MM, 1e-3)
        zi, ze = _ridge_coefficients(model, rotation, scale, translation, iod, landmarks, weights, config)
        if model.expression_nonnegative:
            ze = jnp.maximum(ze, 0.0)
        x = model.shape(model.identity_std * zi, model.expression_std * ze)
        rotation, scale, translation = similarity_procrustes(x, landmarks, weights)
    iod = jnp.maximum(scale * topo.IPD_MM, 1e-3)
    return _Frame(rotation, scale, translation, iod), zi, ze


@functools.partial(jax.jit, static_argnames=("steps", "config"))
def fit_morphable_model(
    landmarks: Landmarks,
    model: MorphableModel,
    mask: Float[Array, " 478"] | None = None,
    *,
    steps: int = 200,
    config: FitConfig = FitConfig(),
) -> FitResult:
    """Fit pose, identity and expression of ``model`` to one face's FaceMesh landmarks.

    Closed-form start (weighted 3D similarity Procrustes alternated with a ridge solve of the whitened
    coefficients), then ``steps`` Adam steps (``lax.scan``) on the robust objective of ``_objective``.
    Pure, jit-compiled and vmap compatible; ``steps`` and ``config`` are static. (Not compiled as a whole,
    every eager call compiled the ``lax.scan`` over its fresh ``step`` closure again: 0.5 s and ~200
    memory maps that were never given back, until a long loop ran out of them.) Masked points
    (``mask == 0``) may hold NaN; with everything masked the result is finite (and meaningless: check
    ``rms`` / the mask).

    Args:
        landmarks: f32[478, 3] in pixels (x, y, z*W; y down, z away from the camera).
        model: the morphable model (any K_id, K_e, including 0).
        mask: f32[478] in {0, 1} (or soft weights); None means all points.
        steps: Adam steps (static).
        config: static settings.
    """
    landmarks = jnp.asarray(landmarks)
    weights = (
        jnp.ones(landmarks.shape[0], landmarks.dtype) if mask is None else jnp.asarray(mask, landmarks.dtype)
    )
    valid = weights > 0
    landmarks = jnp.where(valid[:, None], landmarks, 0.0)
    weights = jnp.where(valid, weights, 0.0)
    landmarks = jax.lax.stop_gradient(landmarks)

    frame, zi, ze = _initialise(model, landmarks, weights, config)
    frame = jax.lax.stop_gradient(frame)
    dt = landmarks.dtype
    params = _Params(jnp.zeros(3, dt), jnp.zeros((), dt), jnp.zeros(3, dt), zi, ze)
    params = jax.lax.stop_gradient(params)

    schedule = optax.cosine_decay_schedule(config.learning_rate, max(steps, 1), alpha=0.05)
    optimiser = optax.adam(schedule)
    value_and_grad = jax.value_and_grad(_objective)

    def step(carry, _):
        p, state = carry
        _, g = value_and_grad(p, frame, model, landmarks, weights, config)
        updates, state = optimiser.update(g, state, p)
        p = optax.apply_updates(p, updates)
        if model.expression_nonnegative:  # projected gradient: activations stay >= 0
            p = eqx.tree_at(lambda q: q.expression, p, jnp.maximum(p.expression, 0.0))
        return (p, state), None

    init = (params, optimiser.init(params))
    (params, _), _ = jax.lax.scan(step, init, None, length=steps, unroll=config.unroll)
    loss = _objective(params, frame, model, landmarks, weights, config)

    rotation, scale, translation, identity, expression = _decode(params, frame, model)
    vertices = model.shape(identity, expression)
    projected = scale * (vertices @ rotation.T) + translation[None, :]
    res = jnp.where(valid, jnp.linalg.norm(projected[:, :2] - landmarks[:, :2], axis=1), 0.0)
    iod = scale * jnp.linalg.norm(vertices[topo.LEFT_PUPIL] - vertices[topo.RIGHT_PUPIL])
    rms = jnp.sqrt(jnp.sum(weights * res**2) / jnp.maximum(jnp.sum(weights), 1e-6)) / jnp.maximum(iod, 1e-6)
    return FitResult(
        rotation, scale, translation, identity, expression, vertices, projected, res, rms, iod, loss
    )


@functools.partial(jax.jit, static_argnames=("steps", "config"))
def fit_morphable_model_batch(
    landmarks: Float[Array, "B 478 3"],
    model: MorphableModel,
    mask: Float[Array, "B 478"] | None = None,
    *,
    steps: int = 200,
    config: FitConfig = FitConfig(),
) -> FitResult:
    """``jit(vmap(fit_morphable_model))`` over a batch of faces; one shared model."""
    fit = functools.partial(fit_morphable_model, model=model, steps=steps, config=config)
    if mask is None:
        return jax.vmap(lambda lm: fit(lm))(landmarks)
    return jax.vmap(lambda lm, m: fit(lm, mask=m))(landmarks, mask)
