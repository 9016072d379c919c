"""Which sources key the stored programs (``compiled.program_sources``): every module the program's code
runs through is hashed, and the CLI, the model's build and the host-only modules are not (editing them
keeps the stored programs, issue 16)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from affectsynth import compiled

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
        ("workcrop.py", False),
        ("affect/build.py", False),
        ("affect/default.py", False),
    ],
)
def test_editing_a_source_changes_the_key_only_when_it_makes_up_the_program(package_copy, edited, recompiles):
    before = compiled.hash_sources(package_copy)
    with (package_copy / edited).open("a") as f:
        f.write("\n# edited\n")
    assert (compiled.hash_sources(package_copy) != before) == recompiles
