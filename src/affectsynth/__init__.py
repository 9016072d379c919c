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
"""

from types import ModuleType as _ModuleType

from .affect.au_fields import AU_NAMES as AU_NAMES
from .affect.au_fields import action_unit_fields as action_unit_fields
from .affect.au_fields import expression_basis as expression_basis
from .affect.build import build_affect_model as build_affect_model
from .affect.default import build_default_model as build_default_model
from .affect.default import default_model as default_model
from .affect.gallery import GalleryFrame as GalleryFrame
from .affect.gallery import read_gallery as read_gallery
from .affect.gallery import write_gallery as write_gallery
from .affect.grid import EMOTION_PRESETS as EMOTION_PRESETS
from .affect.grid import AffectGrid as AffectGrid
from .affect.grid import class_centre as class_centre
from .affect.grid import class_index as class_index
from .affect.grid import validate_target as validate_target
from .affect.importers.ict import import_ict_model as import_ict_model
from .affect.importers.ict import load_ict_identity_basis as load_ict_identity_basis
from .affect.model import AffectModel as AffectModel
from .affect.model import class_deformation as class_deformation
from .affect.model import class_label as class_label
from .affect.model import sample_deformation as sample_deformation
from .affect.model import save_model as save_model
from .affect.paths import grid_targets as grid_targets
from .affect.paths import parse_path as parse_path
from .affect.paths import resample_path as resample_path
from .affect.splocs import SplocsResult as SplocsResult
from .affect.splocs import fit_weights as fit_weights
from .affect.splocs import learn_splocs as learn_splocs
from .affect.synthetic_gallery import generate_gallery as generate_gallery
from .affect.va_map import au_intensities as au_intensities
from .cli.augment import run_augment as run_augment
from .errors import AffectsynthError as AffectsynthError
from .errors import FaceDetectionError as FaceDetectionError
from .errors import InputImageError as InputImageError
from .errors import ModelFileError as ModelFileError
from .errors import OptionsError as OptionsError
from .errors import OutputError as OutputError
from .errors import TargetError as TargetError
from .evaluate import ccc as ccc
from .evaluate import mse as mse
from .evaluate import pcc as pcc
from .evaluate import va_regression as va_regression
from .face.fit import FitConfig as FitConfig
from .face.fit import FitResult as FitResult
from .face.fit import fit_morphable_model as fit_morphable_model
from .face.fit import fit_morphable_model_batch as fit_morphable_model_batch
from .face.fit import to_image as to_image
from .face.fit import to_image_offsets as to_image_offsets
from .face.landmarks import detect_landmarks as detect_landmarks
from .face.morphable import MorphableModel as MorphableModel
from .face.morphable import default_identity_basis as default_identity_basis
from .face.morphable import expression_offsets as expression_offsets
from .face.morphable import morphable_model as morphable_model
from .face.topology import FaceTopology as FaceTopology
from .face.topology import face_topology as face_topology
from .face.topology import subdivide as subdivide
from .io import load_image as load_image
from .io import save_image as save_image
from .pipeline import SynthesisOptions as SynthesisOptions
from .pipeline import SynthesisResult as SynthesisResult
from .pipeline import load_model as load_model
from .pipeline import synthesize as synthesize
from .pipeline import synthesize_batch as synthesize_batch
from .render.appearance.compose import apply_appearance as apply_appearance
from .render.appearance.context import AppearanceContext as AppearanceContext
from .render.appearance.context import AppearanceOptions as AppearanceOptions
from .render.poisson import poisson_blend as poisson_blend
from .render.poisson import solve_blend as solve_blend
from .render.poisson import solve_poisson as solve_poisson
from .render.raster import Fragments as Fragments
from .render.raster import interpolate as interpolate
from .render.raster import rasterize as rasterize
from .render.raster import sample_bilinear as sample_bilinear
from .render.raster import transfer_texture as transfer_texture

__version__ = "0.1.0"

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
