"""The default affect model: built from the generated gallery at first use, cached per user.

Cache location: ``$AFFECTSYNTH_CACHE``, else ``$XDG_CACHE_HOME/affectsynth``, else ``~/.cache/affectsynth``;
the file name carries a hash of everything the build depends on.
"""

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..face import topology as topo
from .au_fields import AU_NAMES, action_unit_fields
from .grid import AffectGrid
from .synthetic_gallery import GalleryConfig, generate_gallery
from .va_map import GALLERY_PROTOTYPES, PROTOTYPES

# --------------------------------------------------------------------------------------------------------
# Default model (built from the generated gallery, cached)

DEFAULT_GALLERY = GalleryConfig()
DEFAULT_GRID = AffectGrid(20, 20)
"""The default model's V-A classes: 0.1 wide. Emotion anchors sit 13-20 degrees apart; a 0.2 class spans as
much at their radius, so its mean blended each prototype with its neighbours (issue 15: disgust's AU9 kept
0.66, sadness's AU1 0.70 in their classes; measured with 24 subjects x 96 directions)."""


def cache_dir() -> Path:
    """$AFFECTSYNTH_CACHE, else $XDG_CACHE_HOME/affectsynth, else ~/.cache/affectsynth."""
    if os.environ.get("AFFECTSYNTH_CACHE"):
        return Path(os.environ["AFFECTSYNTH_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "affectsynth"
    return Path.home() / ".cache" / "affectsynth"


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("affectsynth")
    except Exception:  # pragma: no cover - not installed
        return "0"


DEFAULT_MODEL_REVISION = 33
"""Bumped whenever the default model's build changes in a way the other key parts do not capture."""


def default_model_key(config: GalleryConfig = DEFAULT_GALLERY, grid: AffectGrid = DEFAULT_GRID) -> str:
    """Hash of the generator parameters, V-A grid, AU prototypes, AU fields, template and package version."""
    h = hashlib.sha256()
    h.update(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())
    for table in (PROTOTYPES, GALLERY_PROTOTYPES):
        h.update(json.dumps([(n, v, a, sorted(p.items())) for n, v, a, p in table]).encode())
    h.update(np.ascontiguousarray(topo.face_topology().template).tobytes())
    h.update(field_sources_hash())  # an edited AU field changes every frame: no stale cached model
    h.update(_package_version().encode())
    h.update(f"revision {DEFAULT_MODEL_REVISION}".encode())
    h.update(repr(grid).encode())
    return h.hexdigest()[:16]


FIELD_SOURCES = (
    "affect/au_fields.py",
    "affect/lid_jaw_fields.py",
    "face/topology.py",
    "data/face_topology.npz",
)
"""What the AU fields are computed from (package-relative): their code, the topology's regions and data."""


def field_sources_hash(root: Path | None = None) -> bytes:
    """Hash of ``FIELD_SOURCES`` under ``root`` (default: this package). The fields themselves are not hashed:
    computing them took 0.26 s, on every call that looks up the cached model."""
    root = root or Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for rel in FIELD_SOURCES:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    return h.digest()


def default_model_path(config: GalleryConfig = DEFAULT_GALLERY, grid: AffectGrid = DEFAULT_GRID) -> Path:
    return cache_dir() / f"default_model_{default_model_key(config, grid)}.npz"


def _build_model(
    frames,
    fields,
    *,
    name: str = "default-facs",
    source: str = "affectsynth generated FACS gallery",
    metadata: dict | None = None,
    identity="gp",
    grid: AffectGrid = DEFAULT_GRID,
):
    """Gallery frames -> AffectModel through ``build_affect_model`` (same path as a real corpus).

    ``name`` / ``source`` / ``metadata`` (merged in) describe the model; ``identity`` is the morphable
    model's identity basis ("gp" or a (basis, std) pair); ``grid`` its V-A classes.
    """
    from .build import build_affect_model

    morph = _morphable(fields, identity)
    model, _ = build_affect_model(frames, morph, grid=grid, name=name, source=source, au_names=AU_NAMES)
    if metadata:
        model = dataclasses.replace(model, metadata=json.dumps({**model.info, **metadata}, sort_keys=True))
    return model


def _morphable(fields, identity="gp"):
    """The morphable model of an affect model built from ``fields`` (AU name -> f[V, 3] field)."""
    from ..face.morphable import morphable_model

    basis = np.stack([np.asarray(fields[n], np.float32) for n in AU_NAMES if n in fields])
    names = tuple(n for n in AU_NAMES if n in fields)
    return morphable_model(basis, np.full(len(names), 0.5, np.float32), names, identity=identity)


def default_model_skeleton(grid: AffectGrid = DEFAULT_GRID):
    """An AffectModel with the default model's structure, array shapes and static fields, and zeros for its
    class data, ready in about a second (from the AU fields and the grid) where the build takes 20-30 s.

    A compiled program depends on its model's shapes and static fields only (its key holds nothing else,
    ``compiled.model_program``): compiled against this skeleton while the real model builds, the program
    is the one the real model looks up. Should the build ever give another signature, the key differs and
    the program is simply compiled again (never a wrong program)."""
    from .build import NUM_COMPONENTS, _assemble_model

    morph = _morphable(action_unit_fields(fit_basis=True))
    nc, v, k = grid.num_classes, morph.mean.shape[0], NUM_COMPONENTS
    f32 = np.float32
    parts = (
        np.zeros((nc, v, 3), f32),
        np.zeros((nc, 2), f32),
        np.zeros((nc, k, v, 3), f32),
        np.zeros((nc, k), f32),
        np.zeros((nc, k), f32),
        np.zeros((nc, len(AU_NAMES)), f32),
    )
    counts = np.zeros(nc, np.int64)
    return _assemble_model(morph, grid, counts, counts, parts, AU_NAMES, {})


def build_default_model(
    *,
    cache: bool = True,
    force: bool = False,
    config: GalleryConfig = DEFAULT_GALLERY,
    grid: AffectGrid = DEFAULT_GRID,
):
    """Build (or load from the user cache) the default AffectModel from the generated FACS gallery.

    Deterministic for a given ``config``; the cache file name carries ``default_model_key(config)`` and is
    written atomically (temp file + rename). ``force`` rebuilds even when a cached file exists. ``grid``: the
    V-A classes; a small test gallery (a few subjects) needs a coarser grid than the default 0.1-wide classes,
    or most classes hold one frame or none and sampling within a class has nothing to draw from.
    """
    from .model import read_model, save_model

    path = default_model_path(config, grid)
    if cache and not force and path.is_file():
        return read_model(path)
    frames = generate_gallery(**dataclasses.asdict(config))
    model = _build_model(frames, action_unit_fields(fit_basis=True), grid=grid)
    if cache:
        save_model(path, model)  # atomic: temp file + rename
    return model


@functools.cache
def default_model():
    """The default AffectModel (built at first use, cached on disk and in memory)."""
    return build_default_model()
