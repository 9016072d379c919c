import os
from pathlib import Path

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AFFECTSYNTH_SHARED", REPO.parent / "shared"))
LONDON = SHARED / "data" / "faces" / "london"
ICT = SHARED / "data" / "ict-facekit"


@pytest.fixture(scope="session")
def london_dir():
    if not (LONDON / "neutral").is_dir():
        pytest.skip(f"London face set not found at {LONDON}")
    return LONDON


@pytest.fixture(scope="session")
def ict_dir():
    if not (ICT / "ict_facekit_deltas.npz").is_file():
        pytest.skip(f"ICT-FaceKit data not found at {ICT}")
    return ICT


@pytest.fixture
def program_cache(tmp_path, monkeypatch):
    """A private user cache for stored programs (``compiled``); JAX's process-wide compilation cache left
    alone; no program in memory before or after."""
    from affectsynth import compiled

    monkeypatch.setenv("AFFECTSYNTH_CACHE", str(tmp_path))
    monkeypatch.setenv("AFFECTSYNTH_PROGRAM_CACHE", "1")
    monkeypatch.setattr(compiled, "enable_persistent_cache", lambda: None)
    compiled.clear_memory()
    yield tmp_path
    compiled.clear_memory()
