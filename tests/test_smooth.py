"""The shared smoothstep: one rule for NumPy (model building) and JAX (synthesis)."""

import jax
import jax.numpy as jnp
import numpy as np

from affectsynth._smooth import smoothstep


def test_smoothstep_ramps_from_lo_to_hi_with_flat_ends_in_numpy_and_jax():
    x = np.linspace(-1.0, 3.0, 401)
    y = smoothstep(x, 0.5, 2.0)
    assert isinstance(y, np.ndarray) and y.dtype == np.float64  # model building stays in float64
    assert np.all(y[x <= 0.5] == 0.0) and np.all(y[x >= 2.0] == 1.0)
    assert np.all(np.diff(y) >= 0.0)
    np.testing.assert_allclose(smoothstep(1.25, 0.5, 2.0), 0.5, atol=1e-12)  # symmetric about the middle
    got = jax.jit(lambda v: smoothstep(v, 0.5, 2.0))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), y, atol=1e-6)
    slope = jax.vmap(jax.grad(lambda v: smoothstep(v, 0.5, 2.0)))(jnp.asarray([0.5, 2.0, 1.25]))
    np.testing.assert_allclose(np.asarray(slope), [0.0, 0.0, 1.0], atol=1e-6)  # 1.5 / (hi - lo)
