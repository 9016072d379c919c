"""The working-crop path of ``synthesize_batch``: one compiled program whose shapes never depend on the photo.

On the host (``workcrop``), each face is resampled into a fixed ``options.work_size`` square; the compiled
program (``edit_work_crops``, kept on disk by ``compiled``) edits the batch of crops and returns the edit
as a ``WorkEdit`` (displacement field, coverage, smooth residual); the host carries it back to each photo
at full resolution. The program is built once per (batch size, options, model signature), whatever the
photos' sizes.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import workcrop
from .affect.grid import class_index
from .affect.model import AffectModel, class_label
from .face import topology as topo
from .pipeline import SynthesisOptions, SynthesisResult, _edit_patch


class WorkEdit(eqx.Module):
    """The edit of a batch of working crops, in a form that carries back to any resolution.

    ``out = crop + covered * (warp(crop, displacement) - crop) + residual``: the warp is applied to the
    photo's own pixels at full resolution, the residual (appearance cues + the smooth Poisson correction,
    0 outside ``covered``) is upsampled. Where the crop painted what the photo does not have (the mouth's
    interior: teeth, cavity), ``painted`` carries the crop's own colour instead (``workcrop.paste_back``).
    """

    displacement: Float[Array, "B S S 2"]
    """Source minus destination position (x, y) of each covered pixel, crop pixels (0 elsewhere)."""
    covered: Float[Array, "B S S"]
    residual: Float[Array, "B S S 3"]
    painted: Float[Array, "B S S 4"]
    """(P * out, P): the crop's result premultiplied by the opacity P of its paint (0 elsewhere)."""
    fit_rms: Float[Array, " B"]
    input_expression: Float[Array, "B Ke"]
    class_id: Array
    label: Float[Array, "B 2"]
    mouth_opening: Float[Array, " B"]


def edit_work_crops(crops, landmarks, targets, keys, model: AffectModel, options) -> WorkEdit:
    """``pipeline._edit_patch`` vmapped over fixed-size working crops f32[B, S, S, 3] (landmarks in crop
    pixels), returned as a ``WorkEdit``. Its shapes depend on B and ``options.work_size`` only."""

    def one(patch, lm, target, key):
        out, covered, src_xy, warped, fit, diag = _edit_patch(patch, lm, target, key, model, options)
        s = patch.shape[0]
        centres = jnp.arange(s, dtype=patch.dtype) + 0.5
        grid = jnp.stack(jnp.meshgrid(centres, centres, indexing="xy"), axis=-1)
        c = covered[..., None]
        paint = (diag["mouth_alpha"] * covered)[..., None]
        return WorkEdit(
            displacement=(src_xy - grid) * c,
            covered=covered,
            residual=(out - (patch + c * (warped - patch))) * c,
            painted=jnp.concatenate([paint * out, paint], axis=-1),
            fit_rms=fit.rms,
            input_expression=fit.expression,
            class_id=class_index(model.grid, target),
            label=class_label(model, target),
            mouth_opening=diag["mouth_opening"] / jnp.maximum(jnp.sum(covered), 1.0),
        )

    return jax.vmap(one)(crops, landmarks, targets, keys)


def work_program(
    model: AffectModel,
    options: SynthesisOptions,
    batch: int,
    *,
    rebuild: bool = False,
    quick: bool | None = None,
):
    """The compiled ``edit_work_crops`` for ``batch`` faces: ``f(crops, landmarks, targets, keys) ->
    WorkEdit``, loaded from the user cache (``compiled``) or built and stored there. ``quick`` (default:
    one face) prefers a fast compile to a fast run when nothing was built ahead (``compiled.QUICK_OPTIONS``):
    one photo's caller waits for the compile, a batch job runs long enough to repay the full one."""
    from .compiled import model_program

    size = options.work_size
    model = program_model(model)

    def flat(*args):  # a stored program returns arrays, not our pytree
        return tuple(jax.tree_util.tree_leaves(edit_work_crops(*args, options=options)))

    arrays = (
        np.zeros((batch, size, size, 3), np.float32),
        np.zeros((batch, topo.NUM_LANDMARKS, 3), np.float32),
        np.zeros((batch, 2), np.float32),
        np.zeros((batch, 2), np.uint32),  # raw PRNG keys
    )
    quick = batch == 1 if quick is None else quick
    prog = model_program("synthesize", flat, arrays, model, (options, batch), rebuild=rebuild, quick=quick)
    return lambda *args: WorkEdit(*prog(*args))


def program_model(model: AffectModel) -> AffectModel:
    """``model`` as its program sees it: without its metadata (JSON text: name, source, frame counts), which
    no stage reads. The metadata is a static field, so it would otherwise key (and be baked into) the
    program: models of one signature (arrays' shapes, grid, AU names) now share one program."""
    return dataclasses.replace(model, metadata="{}")


PHOTO_DTYPES = (np.float32, np.uint8)
"""The photo dtypes the paste-back has a tile program for: float RGB in [0, 1] (the API's images) and
uint8 (a photo as decoded: ``affectsynth synth`` works on those, without full-size float copies). Built
only where the paste-back uses them (``workcrop.paste_engine``: without OpenCV)."""


def prepare(
    model: AffectModel,
    options: SynthesisOptions = SynthesisOptions(),
    batch: int = 1,
    *,
    photo_dtypes=PHOTO_DTYPES,
    quick: bool = False,
    **kw,
):
    """Load (or build, compile and store in the user cache) the program ``synthesize_batch`` runs for
    ``batch`` faces and ``options``, and the paste-back's tile programs where it uses them
    (``workcrop.tile_program``, one per photo dtype in ``photo_dtypes``; none with OpenCV); later calls in
    this process and later processes find them ready. ``rebuild=True`` ignores stored programs; built ahead,
    the crops' program is compiled for speed unless ``quick`` (see ``work_program``), which it returns."""
    for dtype in photo_dtypes if workcrop.paste_engine() == "tiles" else ():
        workcrop.tile_program(options.work_size, dtype, **kw)
    return work_program(model, options, batch, quick=quick, **kw)


def prepare_default(options: SynthesisOptions = SynthesisOptions(), batch: int = 1, **kw) -> AffectModel:
    """The default model with its programs ready (``prepare``). When the model is not cached yet (its
    first use builds it, 20-30 s), the programs are compiled meanwhile on a second thread, against the
    model's skeleton (``affect.default.default_model_skeleton``: same shapes and static fields, hence the
    same program key), so the first call ever waits for the longer of the two instead of their sum."""
    import threading

    from . import pipeline
    from .affect.default import default_model_path, default_model_skeleton
    from .compiled import source_hash

    ahead = None
    if not default_model_path().is_file():
        source_hash()  # parsed (``ast``) on this thread, not beside another one: see ``cli.app``'s loader
        try:  # here, before the build: its AU fields and identity basis (cached) are then computed once,
            skeleton = default_model_skeleton()  # where both threads used to compute them side by side
        except Exception:  # only a head start: ``prepare`` below compiles (and reports) for itself
            skeleton = None

        def compile_ahead():
            try:
                if skeleton is not None:
                    prepare(skeleton, options, batch, **kw)
            except Exception:  # only a head start, as above
                pass

        ahead = threading.Thread(target=compile_ahead, name="affectsynth-compile-ahead", daemon=True)
        ahead.start()
    model = pipeline.load_model(None)  # the default model: built (and cached) at first use
    if ahead is not None:
        ahead.join()
        kw = {**kw, "rebuild": False}  # just built (had that failed, compiled now)
    prepare(model, options, batch, **kw)
    return model


def item_keys(key, batch: int, options: SynthesisOptions):
    """One raw PRNG key per item (u32[B, 2]) from ``key`` (default ``PRNGKey(0)``). Without
    ``options.sample`` the keys are never read, so they are zeros made on the host: splitting would run
    (and, in a fresh process, compile) a small program for nothing."""
    if not options.sample:
        return np.zeros((batch, 2), np.uint32)
    return jax.random.split(jax.random.PRNGKey(0) if key is None else key, batch)


def synthesize_working(images, landmarks, targets, keys, model: AffectModel, options) -> SynthesisResult:
    """``synthesize_batch`` on concrete arrays: each face resampled into its ``options.work_size`` working
    crop on the host (``workcrop``), one compiled program over the crops (kept on disk by ``compiled``, so
    it is built once per batch size and options, whatever the photos' sizes), the edit carried back to the
    photos at full resolution on the host. Images and masks come back as NumPy arrays. uint8 photos (as
    decoded, ``io.load_image(..., dtype=np.uint8)``) give uint8 images, each pixel what saving the float
    result would write (up to a grey level where float rounding lands on a tie): a quarter of the memory,
    and no float copy of the whole photo to make, fill and convert back."""
    from concurrent.futures import ThreadPoolExecutor

    photos = np.asarray(images)
    if photos.dtype != np.uint8:
        photos = photos.astype(np.float32, copy=False)
    landmarks = np.asarray(landmarks, np.float32)
    b, h, w = photos.shape[:3]
    size = options.work_size
    windows = [
        workcrop.face_window(lm, h, w, size=size, skirt=options.skirt) for lm in landmarks.reshape(b, -1, 3)
    ]
    crops = np.stack([workcrop.cut_window(im, win, size) for im, win in zip(photos, windows, strict=True)])
    lms = np.stack([workcrop.crop_landmarks(lm, win) for lm, win in zip(landmarks, windows, strict=True)])
    run = work_program(model, options, b)
    with ThreadPoolExecutor(1) as pool:  # the output (edited in place) copied while the program runs
        copying = pool.submit(photos.copy)
        edit = run(crops, lms, np.asarray(targets, np.float32), np.asarray(keys).astype(np.uint32))
        images = copying.result()
    fields = [np.asarray(x) for x in (edit.displacement, edit.covered, edit.residual, edit.painted)]
    masks = np.zeros((b, h, w), np.float32)
    for i, win in enumerate(windows):
        workcrop.paste_back(images[i], masks[i], photos[i], win, *(f[i] for f in fields))
    return SynthesisResult(
        images=images,
        masks=masks,
        fit_rms=edit.fit_rms,
        input_expression=edit.input_expression,
        class_id=edit.class_id,
        label=edit.label,
        mouth_opening=edit.mouth_opening,
    )
