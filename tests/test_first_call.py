"""The first ``synth`` call ever (issue 16): what it computes from empty caches, and that the cheaper way
it now does so gives the same programs and the same model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affectsynth import compiled
from affectsynth.affect import build, splocs
from affectsynth.face.topology import face_topology


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
    default = lowered.compile()(img, idx)
    for options in (compiled.COMPILER_OPTIONS, compiled.QUICK_OPTIONS):
        ours = compiled.compile_lowered(lowered, options)(img, idx)
        for a, b in zip(ours, default, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-6, atol=2e-6)


def test_jit_drops_an_option_the_backend_does_not_know(monkeypatch):
    monkeypatch.setattr(
        compiled,
        "QUICK_OPTIONS",
        {"xla_affectsynth_no_such_option": 1, "xla_cpu_use_fusion_emitters": False},
    )
    f = compiled.jit(_poly)
    x = np.linspace(-2, 2, 33, dtype=np.float32)
    np.testing.assert_allclose(f(x)[0], _poly(x)[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        f(x + 1)[0], _poly(x + 1)[0], rtol=1e-6, atol=1e-6
    )  # the dropped one stays out


# ----------------------------------------------------------------------------------- the model's SPLOCS


def _reservoirs(sizes, seed=0):
    """Class -> a filled ``build._Reservoir`` of planted low-rank deformations, ``sizes[c]`` frames each."""
    rng = np.random.default_rng(seed)
    out = {}
    for c, n in sizes.items():
        r = build._Reservoir(max(sizes.values()), (478, 3))
        basis = rng.normal(size=(2, 478, 3)).astype(np.float32)
        for _ in range(n):
            r.add(np.einsum("k,kvc->vc", rng.uniform(0, 1, 2), basis).astype(np.float32), rng)
        out[c] = r
    return out


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(0, 399), st.integers(1, 256), min_size=1, max_size=60), st.integers(1, 16))
def test_size_groups_place_every_class_once_in_at_most_two_shapes(sizes, per_call):
    groups = build._size_groups(sizes, per_call)
    placed = [c for ids, _, _ in groups for c in ids]
    assert sorted(placed) == sorted(sizes)
    assert len(groups) <= 2
    for ids, frames, per in groups:
        assert frames == max(sizes[c] for c in ids)  # padded to the group's own largest
        assert per * frames <= per_call * max(sizes.values())  # no more memory per call than before
    if len(groups) == 2:
        (small, fs, _), (large, _, _) = groups
        assert max(sizes[c] for c in small) < min(sizes[c] for c in large)
        assert fs <= max(sizes.values()) // build.SMALL_CLASS_FRACTION


def test_classes_learnt_in_two_shapes_equal_them_learnt_padded_to_the_largest(monkeypatch):
    """Grouping by size changes the padding only (masked frames): the components and weight statistics equal
    those of every class padded to the largest reservoir, as the build did before (bit-identical on the
    default gallery, 400 classes)."""
    sizes = {3: 80, 7: 9, 8: 17, 11: 20, 20: 5, 21: 64}
    res = _reservoirs(sizes)
    mean = face_topology().template.astype(np.float64)
    kw = {"num_iterations": 3, "admm_steps": 3, "sparsity": 2.0}
    shapes = []
    learn = build.learn_splocs_batch
    monkeypatch.setattr(
        build, "learn_splocs_batch", lambda x, *a, **k: shapes.append(x.shape[:2]) or learn(x, *a, **k)
    )
    comps, wmean, wstd = build._class_components(res, mean, 25, 3, 2, **kw)
    assert sorted(set(shapes)) == [(2, 80), (4, 20)]  # the 4 classes of <= 80 / 4 frames in one call
    # the build before: 2 classes a call, all padded to 80 frames
    dist = splocs.geodesic_distances(mean, face_topology().triangles)
    ids = sorted(sizes)
    for start in range(0, len(ids), 2):
        chunk = ids[start : start + 2]
        x = np.zeros((2, 80, 478, 3), np.float32)
        m = np.zeros((2, 80), bool)
        for j, c in enumerate(chunk):
            x[j, : sizes[c]], m[j, : sizes[c]] = res[c].data[: sizes[c]], True
        out = learn(x, m, mean, face_topology().triangles, num_components=3, distances=dist, **kw)
        for j, c in enumerate(chunk):
            np.testing.assert_allclose(comps[c], np.asarray(out.components[j]), atol=1e-4)
            w = np.asarray(out.weights[j, : sizes[c]])
            np.testing.assert_allclose(wmean[c], w.mean(0), atol=1e-5)
            np.testing.assert_allclose(wstd[c], w.std(0), atol=1e-5)


def test_splocs_compiled_with_our_options_equals_it_under_jit_and_vmap():
    """``compiled.jit`` passes its options on the outermost call only (JAX refuses them on a nested jit): the
    learner still runs inside a user's jit and vmap, with the same result."""
    t = face_topology()
    dist = splocs.geodesic_distances(t.template, t.triangles)
    xs = np.random.default_rng(1).normal(size=(2, 12, 478, 3)).astype(np.float32)

    def learn(x):
        kw = {"num_components": 3, "num_iterations": 2, "admm_steps": 2, "distances": dist}
        return splocs.learn_splocs(x, t.template, t.triangles, **kw).components

    eager = np.stack([np.asarray(learn(x)) for x in xs])
    np.testing.assert_allclose(np.asarray(jax.jit(learn)(xs[0])), eager[0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(jax.vmap(learn)(xs)), eager, atol=1e-5)


# ------------------------------------------------------------------- quick programs and ahead-of-time ones


def test_a_quick_program_serves_until_one_is_built_ahead(program_cache, monkeypatch):
    """``quick`` compiles with ``QUICK_OPTIONS`` when nothing is stored, under its own key; a program built
    ahead (``quick=False``, as ``warmup`` builds) is preferred from then on, in a fresh process too."""
    built = []
    build = compiled._build

    def recording(fn, args, name, key, options=None):
        built.append(dict(compiled.COMPILER_OPTIONS if options is None else options))
        return build(fn, args, name, key, options)

    monkeypatch.setattr(compiled, "_build", recording)
    x = np.linspace(-2, 2, 17, dtype=np.float32)
    first = compiled.load_program("poly", _poly, (x,), quick=True)
    assert built == [compiled.QUICK_OPTIONS]
    assert compiled.load_program("poly", _poly, (x,), quick=True) is first  # in memory: nothing rebuilt
    compiled.clear_memory()
    compiled.load_program("poly", _poly, (x,), quick=True)  # a fresh process loads the stored quick one
    assert len(built) == 1
    ahead = compiled.load_program("poly", _poly, (x,))  # warmup: the full compile, stored beside it
    assert built[1:] == [compiled.COMPILER_OPTIONS] and ahead is not first
    assert len(list((program_cache / "programs").glob("poly-*"))) == 2
    assert compiled.load_program("poly", _poly, (x,), quick=True) is ahead
    compiled.clear_memory()
    again = compiled.load_program("poly", _poly, (x,), quick=True)
    assert len(built) == 2
    np.testing.assert_allclose(again(x)[0], _poly(x)[0], rtol=1e-6, atol=1e-6)
    key = compiled.program_key("poly", None, (x,), None)
    assert compiled._LOADED[key] is again  # the program built ahead, not the quick one


def test_one_face_waits_for_a_quick_compile_a_batch_gets_the_full_one(monkeypatch):
    """A call on one face compiles quickly; a batch, or a program built ahead (``prepare``: warmup), fully;
    the CLI's ``synth`` asks for a quick one explicitly."""
    from affectsynth import working
    from affectsynth.affect.default import default_model_skeleton

    seen = []
    monkeypatch.setattr(compiled, "model_program", lambda *a, quick=False, **k: seen.append(quick))
    skeleton = default_model_skeleton()  # nothing is compiled: model_program is replaced
    for batch in (1, 2, 8):
        working.work_program(skeleton, working.SynthesisOptions(), batch)
    working.prepare(skeleton, working.SynthesisOptions(), 1, photo_dtypes=())
    working.prepare(skeleton, working.SynthesisOptions(), 1, photo_dtypes=(), quick=True)
    assert seen == [True, False, False, False, True]
