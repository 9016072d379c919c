"""What keys the stored programs (issue 16): the sources (``compiled.program_sources``: every module the
program's code runs through, not the CLI, the model's build or the host-only modules, so editing those
keeps the stored programs) and the model's static part (``compiled.static_text``: by value, so a model
read back from its file reuses the program built with it; ``working.program_model``: without metadata)."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from affectsynth import compiled, working
from affectsynth.affect import default as dflt
from affectsynth.affect import synthetic_gallery as sgal
from affectsynth.affect.grid import AffectGrid
from affectsynth.affect.model import read_model, save_model

PACKAGE = Path(compiled.__file__).resolve().parent


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def test_every_module_the_program_builder_imports_is_hashed_except_the_host_only_ones():
    """A fresh process importing ``working`` (which builds the program) loads exactly the modules the
    static walk finds, less the host-only ones; none of those imports JAX."""
    code = "import json, sys, affectsynth.working; print(json.dumps(sorted(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {m[len("affectsynth.") :] for m in json.loads(r.stdout) if m.startswith("affectsynth.")}
    hashed = {_module(p) for p in compiled.program_sources() if p.suffix == ".py"}
    assert loaded - compiled.HOST_ONLY <= hashed
    assert "working" in hashed and "pipeline" in hashed and "render.poisson" in hashed
    assert not any(m.startswith("cli") for m in hashed)
    for name in compiled.HOST_ONLY:
        source = (PACKAGE / f"{name.replace('.', '/')}.py").read_text()
        assert "\nimport jax" not in source and "\nfrom jax" not in source, name


def test_the_data_files_are_hashed():
    assert PACKAGE / "data" / "face_topology.npz" in compiled.program_sources()


@pytest.fixture
def package_copy(tmp_path) -> Path:
    root = tmp_path / "affectsynth"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.parametrize(
    ("edited", "recompiles"),
    [
        ("render/poisson.py", True),
        ("pipeline.py", True),
        ("face/fit.py", True),
        ("compiled.py", True),
        ("cli/app.py", False),
        ("workcrop.py", True),  # it imports JAX (its tiled lookup): hashed, on the safe side
        ("affect/build.py", False),
        ("affect/default.py", False),
    ],
)
def test_editing_a_source_changes_the_key_only_when_it_makes_up_the_program(package_copy, edited, recompiles):
    before = compiled.hash_sources(package_copy)
    with (package_copy / edited).open("a") as f:
        f.write("\n# edited\n")
    assert (compiled.hash_sources(package_copy) != before) == recompiles


# ------------------------------------------------------------------ the static part of a program's key


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), m=st.integers(1, 30), low=st.floats(-2, 0), high=st.floats(0.5, 2))
def test_static_text_depends_on_values_not_on_which_objects_hold_them(n, m, low, high):
    """Equinox's repr hides a field that *is* its default object: equal grids made apart (one as the default
    model's, one as read from a file's JSON header) must key alike, and different ones differently."""
    made, read = AffectGrid(n, m), AffectGrid(**json.loads(json.dumps(dataclasses.asdict(AffectGrid(n, m)))))
    assert compiled.static_text(made) == compiled.static_text(read)
    assert compiled.static_text(AffectGrid(n, m, low, high)) == compiled.static_text(
        AffectGrid(int(str(n)), int(str(m)), float(repr(low)), float(repr(high)))
    )
    assert compiled.static_text(AffectGrid(n, m, low, high)) != compiled.static_text(
        AffectGrid(n + 1, m, low, high)
    )


def _probe(x, model):
    return (x + model.class_mean.sum(),)


@pytest.mark.slow
def test_a_model_read_back_from_its_file_reuses_the_program_built_for_it(
    program_cache, monkeypatch, tmp_path
):
    """The first process builds the default model and compiles with it; the next reads the model file: the
    same program (it used to be keyed apart, and compiled again). Metadata alone does not key either."""
    config = sgal.GalleryConfig(num_subjects=1, num_directions=4, frames_per_sequence=2)
    built = dflt.build_default_model(cache=False, config=config)
    save_model(tmp_path / "m.npz", built)
    x = np.ones(3, np.float32)
    first = compiled.model_program("probe", _probe, (x,), working.program_model(built), None)(x)
    compiled.clear_memory()

    def no_tracing(*a, **k):
        raise AssertionError("compiled again")

    monkeypatch.setattr(compiled, "_build", no_tracing)
    read = read_model(tmp_path / "m.npz")
    renamed = dataclasses.replace(read, metadata=json.dumps({"name": "another"}))
    for model in (read, renamed):
        again = compiled.model_program("probe", _probe, (x,), working.program_model(model), None)(x)
        np.testing.assert_allclose(again[0], first[0], rtol=1e-6)
