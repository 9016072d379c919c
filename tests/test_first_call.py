"""The first ``synth`` call ever (issue 16): what it computes from empty caches, and that the cheaper way
it now does so gives the same programs and the same model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from affectsynth import compiled


def _poly(x):
    return (jnp.sin(x) * x + jnp.cos(2.0 * x) ** 2,)


def test_an_option_the_backend_does_not_know_is_dropped_not_fatal():
    x = np.linspace(-3, 3, 64, dtype=np.float32)
    lowered = jax.jit(_poly).lower(x)
    with pytest.raises(Exception, match="No such compile option"):
        lowered.compile({"xla_affectsynth_no_such_option": True})
    prog = compiled.compile_lowered(
        lowered, {"xla_affectsynth_no_such_option": True, **compiled.COMPILER_OPTIONS}
    )
    np.testing.assert_allclose(prog(x)[0], _poly(x)[0], rtol=1e-6, atol=1e-6)


def test_a_real_compile_error_is_raised():
    class Broken:
        def compile(self, options):
            raise RuntimeError("INVALID_ARGUMENT: something else")

    with pytest.raises(RuntimeError, match="something else"):
        compiled.compile_lowered(Broken())


def test_our_compiler_options_compile_what_the_default_options_compute():
    """The options (the elemental loop emitter, LLVM -O1) change how XLA:CPU generates code, not what
    it computes: a program of the kinds in ours (loops, gathers, reductions, elementwise chains)."""

    def fn(img, idx):
        def body(i, acc):
            return acc + jnp.take(img, (idx + i) % img.shape[0], axis=0).sum(-1) * jnp.exp(-0.1 * i)

        acc = jax.lax.fori_loop(0, 7, body, jnp.zeros(idx.shape, img.dtype))
        return (jnp.tanh(acc) * jnp.sqrt(jnp.abs(acc) + 1.0), jnp.cumsum(acc) / (1.0 + jnp.max(acc)))

    rng = np.random.default_rng(0)
    img = rng.normal(size=(97, 5)).astype(np.float32)
    idx = rng.integers(0, 97, 300).astype(np.int32)
    lowered = jax.jit(fn).lower(img, idx)
    ours = compiled.compile_lowered(lowered)(img, idx)
    default = lowered.compile()(img, idx)
    for a, b in zip(ours, default, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=2e-6)
