"""Compiled programs kept across processes: JAX's persistent compilation cache and exported programs.

A fresh process would otherwise trace, lower and compile ``synthesize_batch``'s program again (~20 s on two
CPU cores). Two caches, both under the user cache (``affect.default.cache_dir``: ``$AFFECTSYNTH_CACHE``,
else ``$XDG_CACHE_HOME/affectsynth``, else ``~/.cache/affectsynth``):

* ``xla/``: JAX's persistent compilation cache (XLA executables keyed by JAX itself), switched on here
  unless the user already configured one;
* ``programs/``: ``jax.export`` serialisations of our jitted programs, which skip tracing and lowering too.
  The file name is a hash of everything the program depends on: a name, caller-given static settings
  (options, batch size), the arguments' shapes and dtypes (the model's signature included), the model's
  static fields, the jax/jaxlib versions, the platform and a hash of this package's source files (an edited
  pipeline never runs a stale program). Files are written atomically (temp + rename), so processes may share
  the cache; an unreadable, corrupt or mismatching file is rebuilt and replaced, never fatal.

``AFFECTSYNTH_PROGRAM_CACHE=0`` switches both off (plain ``jax.jit`` every process).
"""

import functools
import hashlib
import json
import os
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

PROGRAM_FORMAT = 1
"""Bumped when the way programs are keyed or stored changes."""

_LOADED: dict[str, object] = {}
"""Program key -> its compiled ``Exported`` (one load per process)."""


def enabled() -> bool:
    """False when ``AFFECTSYNTH_PROGRAM_CACHE`` is 0/false/no/off."""
    return os.environ.get("AFFECTSYNTH_PROGRAM_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def cache_root() -> Path:
    from .affect.default import cache_dir

    return cache_dir()


def enable_persistent_cache() -> Path | None:
    """Point JAX's persistent compilation cache at ``<cache>/xla`` (unless one is configured or caching is
    off) and cache every compiled program, however quick. Returns the folder in use (None: off)."""
    if not enabled():
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    folder = cache_root() / "xla"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only home: run without it
        warnings.warn(f"affectsynth: compilation cache off ({folder}: {e.strerror})", stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


@functools.cache
def source_hash() -> str:
    """Hash of this package's Python sources: programs built by other code are never reused."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _platform() -> str:
    dev = jax.devices()[0]
    return f"{dev.platform}:{getattr(dev, 'device_kind', '')}"


def _signature(leaves) -> list:
    return [(tuple(int(d) for d in np.shape(x)), str(jnp.result_type(x))) for x in leaves]


def program_key(name: str, settings, args, static) -> str:
    """Hash naming a program: ``settings`` (json-able or repr-able static settings), ``args`` (arrays: their
    shapes/dtypes), ``static`` (the non-array part of the pytree arguments), versions, platform, sources."""
    import jaxlib

    parts = {
        "format": PROGRAM_FORMAT,
        "name": name,
        "settings": repr(settings),
        "args": _signature(args),
        "static": repr(static),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "x64": bool(jax.config.jax_enable_x64),
        "platform": _platform(),
        "source": source_hash(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def program_path(name: str, key: str) -> Path:
    return cache_root() / "programs" / f"{name}-{key}.jaxexport"


def _read(path: Path, args):
    """The exported program at ``path`` if it loads and takes ``args``; None if missing, corrupt or stale."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        exp = jax.export.deserialize(bytearray(data))
        ok = [(tuple(a.shape), str(a.dtype)) for a in exp.in_avals] == _signature(args)
    except Exception:  # a corrupt or foreign file: rebuilt by the caller
        return None
    return exp if ok else None


def _build(fn, args, path: Path):
    """Trace, lower and export ``fn`` at the shapes of ``args``; store it atomically (best effort)."""
    from .io import atomic_write_bytes

    specs = [jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)) for a in args]
    exp = jax.export.export(jax.jit(fn))(*specs)
    try:
        atomic_write_bytes(path, exp.serialize())
    except OSError as e:  # a full disk or read-only cache: the program still runs
        warnings.warn(f"affectsynth: could not store {path}: {e.strerror}", stacklevel=3)
    return exp


def load_program(name: str, fn, args, settings=None, static=None, *, rebuild: bool = False):
    """``jax.jit(fn)`` compiled for arrays shaped like ``args``, from the disk caches when possible.

    ``fn`` takes and returns flat arrays only (pass a pytree's static part through ``static``, which is
    hashed into the key, and close over it in ``fn``). Loads ``programs/<name>-<key>.jaxexport`` when present
    and valid, else exports and stores it; then compiles it ahead of time (a hit in the persistent
    compilation cache after the first process). ``rebuild`` ignores a stored file. With caching off, the
    program is compiled from ``fn`` once per process. ``settings`` and ``static`` must have a stable
    ``repr`` (dataclasses, tuples, strings; no object addresses).
    """
    specs = [jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)) for a in args]
    key = program_key(name, settings, args, static)
    if not rebuild and key in _LOADED:
        return _LOADED[key]
    if enabled():
        enable_persistent_cache()
        path = program_path(name, key)
        exp = None if rebuild else _read(path, args)
        if exp is None:
            exp = _build(fn, args, path)
        prog = jax.jit(exp.call).lower(*specs).compile()
    else:
        prog = jax.jit(fn).lower(*specs).compile()
    _LOADED[key] = prog
    return prog


def model_program(name: str, fn, arrays: tuple, model, settings, *, rebuild: bool = False):
    """``lambda *arrays: fn(*arrays, model)`` compiled through ``load_program``. The model (an equinox
    pytree) is split into its array leaves (arguments of the program, so any model of the same signature
    reuses it) and its static rest (baked in, part of the key)."""
    dynamic, static = eqx.partition(model, eqx.is_array)
    leaves, treedef = jax.tree_util.tree_flatten(dynamic)
    n = len(arrays)

    def flat(*xs):
        return fn(*xs[:n], eqx.combine(jax.tree_util.tree_unflatten(treedef, xs[n:]), static))

    prog = load_program(name, flat, (*arrays, *leaves), settings, (str(treedef), static), rebuild=rebuild)
    return lambda *xs: prog(*xs, *leaves)


def clear_memory():
    """Forget the programs loaded in this process (tests; the disk cache stays)."""
    _LOADED.clear()
