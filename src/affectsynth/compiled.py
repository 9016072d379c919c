"""Compiled programs kept across processes: JAX's persistent compilation cache and exported programs.

A fresh process would otherwise trace, lower and compile ``synthesize_batch``'s program again (~20 s on two
CPU cores). Two caches, both under the user cache (``affect.default.cache_dir``: ``$AFFECTSYNTH_CACHE``,
else ``$XDG_CACHE_HOME/affectsynth``, else ``~/.cache/affectsynth``):

* ``xla/``: JAX's persistent compilation cache (XLA executables keyed by JAX itself), switched on here
  unless the user already configured one;
* ``programs/``: our jitted programs, each stored once compiled as an XLA executable
  (``jax.experimental.serialize_executable``; ``.xlaexe``), which a later process loads in about a second
  without tracing, lowering or compiling. Where a backend cannot serialise executables, the ``jax.export``
  serialisation is kept instead (``.jaxexport``: skips tracing; compiled again, a persistent-cache hit).
  The file name is a hash of everything the program depends on: a name, caller-given static settings
  (options, batch size), the arguments' shapes and dtypes (the model's signature included), the model's
  static fields, the jax/jaxlib versions, the platform and host CPU, ``XLA_FLAGS`` and a hash of the
  package's sources that make up the program (``program_sources``: an edited pipeline never runs a stale
  program; an edited CLI, model build or README keeps it). Files are written atomically
  (temp + rename), so processes may share the cache; an unreadable, corrupt (checksummed) or mismatching
  file is rebuilt and replaced, never fatal.

``AFFECTSYNTH_PROGRAM_CACHE=0`` switches both off (plain ``jax.jit`` every process).
"""

import contextlib
import dataclasses
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

PROGRAM_FORMAT = 2
"""Bumped when the way programs are keyed or stored changes."""

COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
"""XLA options our programs are compiled with (part of every program's key). LLVM at -O1 rather than XLA's
default: the crops' program compiled in 18.8-21.1 s of CPU instead of 22.4-25.6 s (2 cores, load 6-7)
and ran as fast (median 77 vs 74-77 ms warm, interleaved); -O0 halved the compile (12 s) but ran 3.3x
slower, and every later call reuses the stored program. Options a backend does not know are dropped
(``compile_lowered``)."""

QUICK_OPTIONS = {**COMPILER_OPTIONS, "xla_cpu_use_fusion_emitters": False}
"""Options of a program compiled while someone waits for it (``load_program(quick=True)``: the first
``synth`` of a photo with nothing built ahead): XLA:CPU's elemental loop emitter instead of its MLIR fusion
emitters, which build a pass pipeline per fusion (a third of the compile's CPU). The crops' program
compiles in 7.7-8.6 s of CPU instead of 15.8-16.2 s, outputs within 1e-6, but runs 8-11% slower warm
(512 px, batch 1 and 8, interleaved). So ``affectsynth warmup`` and batches of more than one face build
with ``COMPILER_OPTIONS``, and a quick program is used only until such a one exists."""

_LOADED: dict[str, object] = {}
"""Program key -> its compiled program (one load per process)."""


def _unknown_options(error: Exception, options: dict) -> list[str]:
    """The options ``error`` (jax's JaxRuntimeError: INVALID_ARGUMENT: No such compile option: 'x') names."""
    return [k for k in options if f"No such compile option: '{k}'" in str(error)]


def _dropping_unknown(attempt, options: dict):
    """``attempt(options)``, again without each option the backend rejects as unknown (dropped from
    ``options`` itself, so they stay out of later attempts) until it succeeds or fails otherwise."""
    while True:
        try:
            return attempt(options)
        except Exception as e:
            unknown = _unknown_options(e, options)
            if not unknown:
                raise
            for k in unknown:
                del options[k]


def compile_lowered(lowered, options=None):
    """``lowered.compile(options)`` (default ``COMPILER_OPTIONS``), dropping each option the backend
    rejects as unknown (a jaxlib that renamed or removed a debug option still compiles, as XLA's default)."""
    return _dropping_unknown(lowered.compile, dict(COMPILER_OPTIONS if options is None else options))


def jit(fn, **kw):
    """``jax.jit(fn, **kw)`` compiled with ``QUICK_OPTIONS`` (less those the backend rejects, found at
    the first call): for programs compiled in every process, such as the default model's SPLOCS (whose
    compile halves with them, and whose run is 25% faster). Called inside another transformation (jit,
    vmap, grad), it is a plain ``jax.jit``: JAX takes compiler options on the outermost jit only."""
    options = dict(QUICK_OPTIONS)
    jitted: dict[tuple, object] = {}
    nested = jax.jit(fn, **kw)

    def with_options(opts, args, kwargs):
        key = tuple(sorted(opts))
        if key not in jitted:
            jitted[key] = jax.jit(fn, compiler_options=dict(opts), **kw)
        return jitted[key](*args, **kwargs)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((args, kwargs))):
            return nested(*args, **kwargs)
        return _dropping_unknown(lambda opts: with_options(opts, args, kwargs), options)

    return call


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


# The stored programs are made of the code ``working`` imports (it builds ``synthesize_batch``'s program)
# and ``compiled`` (which stores and loads them; its own imports reach the model's build only through the
# cache folder's name, so they are not followed).
HOST_ONLY = frozenset({"io", "face.landmarks", "affect.default"})
"""Modules on that import path that run on the host only and import no JAX (so none of their code can be
traced into a program): atomic file writes, face detection, the default model's load or build (the model
reaches a program as arguments, whose shapes and static fields are in the program's key). Editing them
keeps the stored programs. ``workcrop`` is not among them since its paste-back has a jitted lookup of its
own: an edit there recompiles too, the safe side."""


def _module_file(root: Path, name: str) -> Path | None:
    """The file of package-relative module ``name`` (a module or a package's ``__init__``), else None."""
    stem = root / name.replace(".", "/")
    return next((p for p in (stem.with_suffix(".py"), stem / "__init__.py") if p.is_file()), None)


def _imports(path: Path, package: list[str]) -> set[str]:
    """Package-relative names that the module at ``path`` (in ``package``) imports relatively, the imports
    inside functions included; ``from .x import y`` gives both ``x`` and ``x.y`` (``y`` may be a module)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_bytes())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            stem = package[: len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
            found.add(".".join(stem))
            found.update(".".join([*stem, alias.name]) for alias in node.names)
    return found


def program_sources(root: Path | None = None) -> list[Path]:
    """The package files a stored program depends on: ``compiled``, the modules ``working`` imports,
    transitively (their packages' ``__init__`` too), less ``HOST_ONLY``, and the package's data files
    (constants baked into the program). The CLI, the model's build and the docs are not among them."""
    root = root or Path(__file__).resolve().parent
    files, seen, todo = set(), set(), ["working"]
    while todo:
        name = todo.pop()
        path = None if name in seen or name in HOST_ONLY else _module_file(root, name)
        seen.add(name)
        if path is None:  # seen, host-only, or an imported name that is no module (a function, a class)
            continue
        files.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # the packages' __init__
        todo += _imports(path, parts if path.name == "__init__.py" else parts[:-1])
    files |= {root / "__init__.py", root / "compiled.py"}
    return sorted(files) + sorted((root / "data").glob("*"))


def hash_sources(root: Path) -> str:
    """Hash of ``program_sources(root)``: their paths (relative to ``root``) and contents."""
    h = hashlib.sha256()
    for p in program_sources(root):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@functools.cache
def source_hash() -> str:
    """Hash of the sources that make up the stored programs (``program_sources``): a program built by other
    code is never reused, and editing the CLI, the model's build or the docs does not recompile."""
    return hash_sources(Path(__file__).resolve().parent)


def _platform() -> str:
    dev = jax.devices()[0]
    return f"{dev.platform}:{getattr(dev, 'device_kind', '')}"


@functools.cache
def _host() -> str:
    """The machine and its CPU features: a compiled CPU executable uses the instructions of the CPU that
    built it, so a cache shared by other machines (a network home) keeps one program per CPU kind."""
    import platform

    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    return f"{platform.machine()}:{hashlib.sha256(flags.encode()).hexdigest()[:12]}"


def _signature(leaves) -> list:
    return [(tuple(int(d) for d in np.shape(x)), str(jnp.result_type(x))) for x in leaves]


def program_key(name: str, settings, args, static, options=None) -> str:
    """Hash naming a program: ``settings`` (json-able or repr-able static settings), ``args`` (arrays: their
    shapes/dtypes), ``static`` (the non-array part of the pytree arguments), versions, platform, sources,
    compiler ``options`` (default ``COMPILER_OPTIONS``)."""
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
        "host": _host(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "compiler_options": COMPILER_OPTIONS if options is None else options,
        "source": source_hash(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def program_path(name: str, key: str, kind: str = "jaxexport") -> Path:
    """Where a program lives: ``programs/<name>-<key>.<kind>`` (``jaxexport``: an exported program;
    ``xlaexe``: the compiled executable)."""
    return cache_root() / "programs" / f"{name}-{key}.{kind}"


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


EXECUTABLE_MAGIC = b"affectsynth-xla-executable\n"


def _pack_executable(prog, args) -> bytes | None:
    """``prog`` (a ``jax.stages.Compiled`` of flat arrays -> tuple of arrays) as bytes: a magic line, a JSON
    header (argument signature, number of outputs, SHA-256 of the payload) and the payload
    (``jax.experimental.serialize_executable``). None when this backend cannot serialise it."""
    from jax.experimental import serialize_executable

    try:
        payload, _, out_tree = serialize_executable.serialize(prog)
    except Exception:  # e.g. a backend without executable serialisation: the exported program is kept
        return None
    header = {
        "format": PROGRAM_FORMAT,
        "signature": _signature(args),
        "outputs": out_tree.num_leaves,
        "sha256": hashlib.sha256(payload).hexdigest(),
    }
    head = json.dumps(header).encode()
    return EXECUTABLE_MAGIC + len(head).to_bytes(8, "little") + head + payload


def _prepare_runtime():
    """Make the runtime ready for a deserialised executable. jaxlib fills its CPU LAPACK kernels' function
    pointers lazily, when a linear-algebra op is first lowered; an executable loaded without lowering
    anything (a fresh process) would call null pointers and crash (``jax.export`` does the same for its
    programs, ``_export._ensure_backends_initialized``)."""
    try:
        from jax._src.lax.linalg import initialize_lapack
    except ImportError:  # another jax: lowering a small solve initialises them through the public API
        jax.jit(jnp.linalg.solve).lower(jnp.eye(2), jnp.ones(2))
        return
    initialize_lapack()


def _unpack_executable(data: bytes, args):
    """The compiled executable packed in ``data`` (``_pack_executable``) if it is whole (checksum) and takes
    ``args``; None if corrupt, stale or not loadable. The payload is unpickled
    (``serialize_executable``), so only our own user cache is read, and only after its checksum matches."""
    n = len(EXECUTABLE_MAGIC)
    if data[:n] != EXECUTABLE_MAGIC or len(data) < n + 8:
        return None
    size = int.from_bytes(data[n : n + 8], "little")
    try:
        header = json.loads(data[n + 8 : n + 8 + size])
        payload = data[n + 8 + size :]
        sig = [(tuple(s), d) for s, d in header["signature"]]
        whole = hashlib.sha256(payload).hexdigest() == header["sha256"]
        if not whole or sig != _signature(args) or header["format"] != PROGRAM_FORMAT:
            return None
        from jax.experimental import serialize_executable

        _prepare_runtime()
        in_tree = jax.tree_util.tree_structure((tuple(range(len(sig))), {}))
        out_tree = jax.tree_util.tree_structure(tuple(range(int(header["outputs"]))))
        return serialize_executable.deserialize_and_load(payload, in_tree, out_tree)
    except Exception:  # a foreign or damaged file, an executable this runtime cannot load: rebuilt
        return None


def _read_executable(path: Path, args):
    """The compiled executable stored at ``path`` for ``args`` (``_unpack_executable``); None if missing."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return _unpack_executable(data, args)


def _verified_executable(prog, args) -> bytes | None:
    """``prog`` packed for storage, once a copy unpacked from the bytes has run on ``args``; None when it
    cannot be serialised or the copy fails. (An executable that JAX itself loaded from its persistent
    compilation cache serialises without some of its functions on jaxlib 0.10 CPU: "NOT_FOUND: Function
    ... not found" when run; such a program is kept as an exported program instead.)"""
    data = _pack_executable(prog, args)
    if data is None:
        return None
    copy = _unpack_executable(data, args)
    try:
        jax.block_until_ready(copy(*args))
    except Exception:  # also when ``copy`` is None
        return None
    return data


def _store(path: Path, data: bytes):
    """Write ``data`` atomically; a full disk or read-only cache only costs the next process a rebuild."""
    from .io import atomic_write_bytes

    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        warnings.warn(f"affectsynth: could not store {path}: {e.strerror}", stacklevel=3)


def _specs(args):
    return [jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)) for a in args]


@contextlib.contextmanager
def _fresh_compilation():
    """JAX's persistent compilation cache off for the enclosed compiles: an executable that JAX loaded from
    it does not serialise whole (``_verified_executable``), and after a package upgrade that left a
    program's HLO unchanged that cache would hand back exactly such an executable."""
    from jax.experimental.compilation_cache import compilation_cache

    was = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()  # JAX decides once per process whether the cache is used
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", was)
        compilation_cache.reset_cache()


def _build(fn, args, name: str, key: str, options=None):
    """Trace, lower and compile ``fn`` at the shapes of ``args`` (a fresh compile, not from JAX's
    persistent cache) and store the result: the compiled executable where the backend can serialise it,
    else the exported program (``jax.export``, which still skips tracing next time)."""
    lowered = jax.jit(fn).lower(*_specs(args))
    with _fresh_compilation():
        prog = compile_lowered(lowered, options)
    data = _verified_executable(prog, args)
    if data is not None:
        _store(program_path(name, key, "xlaexe"), data)
    else:
        exp = jax.export.export(jax.jit(fn))(*_specs(args))
        _store(program_path(name, key), exp.serialize())
    return prog


def _load(name: str, key: str, args, options=None):
    """The stored program for ``key``: the compiled executable (no tracing, lowering or compiling), else the
    exported program compiled through the persistent compilation cache. None when neither is usable."""
    prog = _read_executable(program_path(name, key, "xlaexe"), args)
    if prog is not None:
        return prog
    exp = _read(program_path(name, key), args)
    if exp is None:
        return None
    return compile_lowered(jax.jit(exp.call).lower(*_specs(args)), options)


def load_program(
    name: str, fn, args, settings=None, static=None, *, rebuild: bool = False, quick: bool = False
):
    """``jax.jit(fn)`` compiled for arrays shaped like ``args``, from the disk caches when possible.

    ``fn`` takes and returns flat arrays only (pass a pytree's static part through ``static``, which is
    hashed into the key, and close over it in ``fn``). Loads ``programs/<name>-<key>.xlaexe`` (the compiled
    executable: ~1 s, nothing traced or compiled) or ``.jaxexport`` (compiled again, a hit in the persistent
    compilation cache) when present and valid, else compiles ``fn`` and stores it. ``rebuild`` ignores
    stored files. ``quick``: someone is waiting for this program (a first ``synth``): the one compiled with
    ``COMPILER_OPTIONS`` when it is stored, else one compiled with ``QUICK_OPTIONS`` (half the compile, a
    slower run; stored under its own key). With caching off, the program is compiled from ``fn`` once per
    process. ``settings`` and
    ``static`` must have a stable ``repr`` (dataclasses, tuples, strings; no object addresses).
    """
    key = program_key(name, settings, args, static)
    quick_key = program_key(name, settings, args, static, QUICK_OPTIONS) if quick else None
    for k in (key, quick_key) if not rebuild else ():
        if k in _LOADED:
            return _LOADED[k]
    if not enabled():
        k, options = (quick_key, QUICK_OPTIONS) if quick else (key, COMPILER_OPTIONS)
        _LOADED[k] = prog = compile_lowered(jax.jit(fn).lower(*_specs(args)), options)
        return prog
    enable_persistent_cache()
    prog = None if rebuild else _load(name, key, args)
    if prog is None and quick:  # the quick program (stored or built now) until one is built ahead
        key, options = quick_key, QUICK_OPTIONS
        prog = None if rebuild else _load(name, key, args, options)
    else:
        options = COMPILER_OPTIONS
    if prog is None:
        prog = _build(fn, args, name, key, options)
    _LOADED[key] = prog
    return prog


def static_text(obj) -> str:
    """Canonical text of a pytree's static part, for program keys: dataclasses (equinox modules included)
    field by field, containers item by item, anything else by ``repr``. Not ``repr`` itself: equinox's hides
    a field whose value *is* its default object, so a model just built and the same model read back from
    its file (equal values, other objects) printed differently, and the first process's stored program was
    compiled again by the next one."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = (f"{f.name}={static_text(getattr(obj, f.name))}" for f in dataclasses.fields(obj))
        return f"{type(obj).__module__}.{type(obj).__qualname__}({', '.join(fields)})"
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__}({', '.join(static_text(x) for x in obj)})"
    if isinstance(obj, dict):
        items = (f"{static_text(k)}: {static_text(v)}" for k, v in sorted(obj.items()))
        return f"dict({', '.join(items)})"
    return repr(obj)


def model_program(
    name: str, fn, arrays: tuple, model, settings, *, rebuild: bool = False, quick: bool = False
):
    """``lambda *arrays: fn(*arrays, model)`` compiled through ``load_program``. The model (an equinox
    pytree) is split into its array leaves (arguments of the program, so any model of the same signature
    reuses it) and its static rest (baked in, part of the key)."""
    dynamic, static = eqx.partition(model, eqx.is_array)
    leaves, treedef = jax.tree_util.tree_flatten(dynamic)
    n = len(arrays)

    def flat(*xs):
        return fn(*xs[:n], eqx.combine(jax.tree_util.tree_unflatten(treedef, xs[n:]), static))

    shape = static_text(jax.tree_util.tree_map(lambda _: "array", dynamic))  # where the arrays sit
    static_key = (shape, static_text(static))
    prog = load_program(name, flat, (*arrays, *leaves), settings, static_key, rebuild=rebuild, quick=quick)
    return lambda *xs: prog(*xs, *leaves)


def clear_memory():
    """Forget the programs loaded in this process (tests; the disk cache stays)."""
    _LOADED.clear()
