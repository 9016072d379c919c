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
