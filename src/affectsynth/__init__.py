"""affectsynth: put a chosen valence/arousal affect on a real face photo, in JAX.

The pipeline, stage by stage (every name is re-exported here)::

    io                    load_image, save_image            photos in and out (any format, atomic writes)
    face.landmarks        detect_landmarks                  MediaPipe FaceMesh, 478 points in pixels
    face.topology         face_topology, subdivide          the FaceMesh triangle mesh, canonical frame
    face.morphable        morphable_model                   the linear 3D face model and its bases
    face.fit              fit_morphable_model               3D morphable-model fit (optax, vmap)
    affect.grid           AffectGrid, class_index           the valence-arousal classes, emotion presets
    affect.au_fields      action_unit_fields                FACS Action Units as 3D deformation fields
    affect.va_map         au_intensities                    V-A target -> AU intensities
    affect.gallery        read_gallery, write_gallery       labelled 3D expression corpora
    affect.splocs         learn_splocs                      sparse localised deformation components
    affect.build          build_affect_model                gallery -> per-V-A-class expression model
    affect.model          AffectModel, class_deformation    the model: class means, samples, labels
    affect.default        default_model                     the built-in model (built once, cached)
    affect.importers.ict  import_ict_model                  ICT-FaceKit as an expression model
    render.raster         rasterize, transfer_texture       JAX software rasteriser
    render.appearance     apply_appearance                  shading, wrinkles, mouth interior, eyes
    render.poisson        poisson_blend                     preconditioned CG Poisson blend
    pipeline              synthesize_batch, synthesize      everything above, jit + vmap
    evaluate              va_regression, ccc                the paper's V-A regression protocol
    cli.augment           run_augment                       bulk augmentation (host side)

Names are imported on first use (PEP 562 ``__getattr__``): ``import affectsynth`` does no work, and a
command that needs only a few modules (``affectsynth synth`` with its program on disk) does not pay for
the rest (model building, SPLOCS, the evaluation protocol, scikit-learn, Ray).
"""

import importlib

_EXPORTS = {
    "affect.au_fields": ("AU_NAMES", "action_unit_fields", "expression_basis"),
    "affect.build": ("build_affect_model",),
    "affect.default": ("build_default_model", "default_model"),
    "affect.gallery": ("GalleryFrame", "read_gallery", "write_gallery"),
    "affect.grid": ("EMOTION_PRESETS", "AffectGrid", "class_centre", "class_index", "validate_target"),
    "affect.importers.ict": ("import_ict_model", "load_ict_identity_basis"),
    "affect.model": ("AffectModel", "class_deformation", "class_label", "sample_deformation", "save_model"),
    "affect.paths": ("grid_targets", "parse_path", "resample_path"),
    "affect.splocs": ("SplocsResult", "fit_weights", "learn_splocs"),
    "affect.synthetic_gallery": ("generate_gallery",),
    "affect.va_map": ("au_intensities",),
    "cli.augment": ("run_augment",),
    "errors": (
        "AffectsynthError",
        "FaceDetectionError",
        "InputImageError",
        "ModelFileError",
        "OptionsError",
        "OutputError",
        "TargetError",
    ),
    "evaluate": ("ccc", "mse", "pcc", "va_regression"),
    "face.fit": (
        "FitConfig",
        "FitResult",
        "fit_morphable_model",
        "fit_morphable_model_batch",
        "to_image",
        "to_image_offsets",
    ),
    "face.landmarks": ("detect_landmarks",),
    "face.morphable": ("MorphableModel", "default_identity_basis", "expression_offsets", "morphable_model"),
    "face.topology": ("FaceTopology", "face_topology", "subdivide"),
    "io": ("load_image", "save_image"),
    "pipeline": ("SynthesisOptions", "SynthesisResult", "load_model", "synthesize", "synthesize_batch"),
    "render.appearance.compose": ("apply_appearance",),
    "render.appearance.context": ("AppearanceContext", "AppearanceOptions"),
    "render.poisson": ("poisson_blend", "solve_blend", "solve_poisson"),
    "render.raster": ("Fragments", "interpolate", "rasterize", "sample_bilinear", "transfer_texture"),
}
"""Module (relative to this package) -> the public names it provides."""

_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__version__ = "0.1.0"

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """Import a public name's module at first use (then the name is an ordinary attribute)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *__all__})
