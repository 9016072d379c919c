"""affectsynth: put a chosen valence/arousal affect on a real face photo, in JAX.

The pipeline, one module per stage::

    io          load_image, save_image              photos in and out (any format, atomic writes)
    landmarks   detect_landmarks                    MediaPipe FaceMesh, 478 points in pixels
    topology    face_topology, subdivide            the FaceMesh triangle mesh, regions, canonical frame
    morphable   fit_morphable_model                 3D morphable-model fit (optax, vmap)
    affect      AffectGrid, class_index             the valence-arousal class grid and emotion presets
    splocs      learn_splocs                        sparse localised deformation components
    gallery     read_gallery, write_gallery         labelled 3D expression corpora
    model       build_affect_model, AffectModel     per-V-A-class expression model
    expressions action_unit_fields, default_model   the built-in FACS model and the ICT importer
    raster      rasterize, transfer_texture         JAX software rasteriser
    appearance  apply_appearance                    shading, wrinkles, mouth interior
    poisson     poisson_blend                       preconditioned CG Poisson blend
    pipeline    synthesize_batch, synthesize        everything above, jit + vmap
    evaluate    va_regression, ccc                  the paper's V-A regression protocol
    batch       run_augment                         bulk jobs (augmentation, grids, animations)
"""

from types import ModuleType as _ModuleType

from .affect import EMOTION_PRESETS as EMOTION_PRESETS
from .affect import AffectGrid as AffectGrid
from .affect import class_centre as class_centre
from .affect import class_index as class_index
from .affect import validate_target as validate_target
from .appearance import AppearanceContext as AppearanceContext
from .appearance import AppearanceOptions as AppearanceOptions
from .appearance import apply_appearance as apply_appearance
from .batch import run_augment as run_augment
from .errors import AffectsynthError as AffectsynthError
from .errors import FaceDetectionError as FaceDetectionError
from .errors import InputImageError as InputImageError
from .errors import ModelFileError as ModelFileError
from .errors import OutputError as OutputError
from .errors import TargetError as TargetError
from .evaluate import ccc as ccc
from .evaluate import mse as mse
from .evaluate import pcc as pcc
from .evaluate import va_regression as va_regression
from .expressions import AU_NAMES as AU_NAMES
from .expressions import action_unit_fields as action_unit_fields
from .expressions import au_intensities as au_intensities
from .expressions import build_default_model as build_default_model
from .expressions import default_model as default_model
from .expressions import expression_basis as expression_basis
from .expressions import generate_gallery as generate_gallery
from .expressions import import_ict_model as import_ict_model
from .gallery import GalleryFrame as GalleryFrame
from .gallery import read_gallery as read_gallery
from .gallery import write_gallery as write_gallery
from .io import load_image as load_image
from .io import save_image as save_image
from .landmarks import detect_landmarks as detect_landmarks
from .model import AffectModel as AffectModel
from .model import build_affect_model as build_affect_model
from .model import class_deformation as class_deformation
from .model import class_label as class_label
from .model import sample_deformation as sample_deformation
from .model import save_model as save_model
from .morphable import FitConfig as FitConfig
from .morphable import FitResult as FitResult
from .morphable import MorphableModel as MorphableModel
from .morphable import default_identity_basis as default_identity_basis
from .morphable import expression_offsets as expression_offsets
from .morphable import fit_morphable_model as fit_morphable_model
from .morphable import fit_morphable_model_batch as fit_morphable_model_batch
from .morphable import load_ict_identity_basis as load_ict_identity_basis
from .morphable import morphable_model as morphable_model
from .morphable import to_image as to_image
from .morphable import to_image_offsets as to_image_offsets
from .paths import grid_targets as grid_targets
from .paths import parse_path as parse_path
from .paths import resample_path as resample_path
from .pipeline import SynthesisOptions as SynthesisOptions
from .pipeline import SynthesisResult as SynthesisResult
from .pipeline import load_model as load_model
from .pipeline import synthesize as synthesize
from .pipeline import synthesize_batch as synthesize_batch
from .poisson import poisson_blend as poisson_blend
from .poisson import solve_blend as solve_blend
from .poisson import solve_poisson as solve_poisson
from .raster import Fragments as Fragments
from .raster import interpolate as interpolate
from .raster import rasterize as rasterize
from .raster import sample_bilinear as sample_bilinear
from .raster import transfer_texture as transfer_texture
from .splocs import SplocsResult as SplocsResult
from .splocs import fit_weights as fit_weights
from .splocs import learn_splocs as learn_splocs
from .topology import FaceTopology as FaceTopology
from .topology import face_topology as face_topology
from .topology import subdivide as subdivide

__version__ = "0.1.0"

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
