"""Expression appearance: shading from the deformed surface, AU-driven wrinkles, the mouth interior, eyes.

The geometry stage moves the photo's own texture onto the deformed face; this stage adds what geometry
alone cannot: the light a fold catches (a shading *ratio* under a lighting estimate taken from the photo),
the fine lines an Action Unit draws (procedural furrows in log-luminance, so they inherit the photo's own
lighting and skin tone), what a parted mouth shows (a lit cavity, teeth and tongue coloured from this
photo) and eyelids that slide over a static eye instead of squeezing the iris.

Everything is a pure function of arrays (jit, vmap); which cue runs is static (``AppearanceOptions``).
Every cue is exactly the identity when the target changes nothing: the shading ratio is ``x / x``, wrinkle
amplitudes are proportional to the AU intensities, the mouth interior is weighted by the *added* opening
area and the eye layer samples the photo where the render does.

Wrinkle patterns live on the surface: each dense render-mesh vertex carries its position on the canonical
template (millimetres, ``dense_template``), interpolated per pixel, so the furrows are placed relative to the
fitted landmarks, follow the skin and scale with the face.
"""

import dataclasses

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..._types import Landmarks
from ...affect.au_fields import AU_NAMES
from ...face import topology as topo

# triangle groups of the render mesh (the pipeline's numbering)
SKIN, MOUTH, EYE, SKIRT = 0, 1, 2, 3

SHADING_CLIP = (0.6, 1.4)
"""Range of the shading ratio shade(n_deformed) / shade(n_neutral)."""


@dataclasses.dataclass(frozen=True)
class AppearanceOptions:
    """Static switches of ``apply_appearance`` (hashable; changing one recompiles).

    Attributes:
        shading: relight the skin by the change of surface orientation under the photo's own lighting.
        wrinkles: AU-driven furrows (forehead, glabella, crow's feet, nose, nasolabial fold, chin).
        mouth_interior: cavity, teeth and tongue where the target parts the lips wider than the photo.
        eyes: keep the eye content static under moving lids (no stretched iris) and close lids with skin.
        strength: scale of the shading and wrinkle cues (1 = calibrated; 0 turns them off smoothly).
        eye_window / mouth_window: side of the square window (fraction of the crop's shorter side, at least
            64 px) in which each eye / the mouth is processed, for speed. The pipeline's crop is about 4.2
            inter-pupil distances wide, so these hold an eye and a wide-open mouth with margin; 1.0 processes
            the whole crop.
    """

    shading: bool = True
    wrinkles: bool = True
    mouth_interior: bool = True
    eyes: bool = True
    strength: float = 1.0
    eye_window: float = 0.2
    mouth_window: float = 0.35


class AppearanceContext(eqx.Module):
    """Everything ``apply_appearance`` needs about one face (all in the crop's pixels unless said).

    Attributes:
        src_vertices: f32[Vd, 3] dense render-mesh vertices on the photo (x, y pixels, y down, z away).
        dst_vertices: f32[Vd, 3] the same vertices deformed (what was rasterised).
        triangles: i32[Fd, 3] dense render-mesh triangles.
        groups: i32[Fd] SKIN=0, MOUTH=1, EYE=2, SKIRT=3 per dense triangle.
        surface: f32[Vd, 2] each dense vertex's (x, y) on the canonical template, mm (``dense_template``).
        landmarks: f32[478, 3] FaceMesh landmarks of the photo.
        target_landmarks: f32[478, 3] the deformed landmarks.
        au: f32[K] AU intensities of the applied deformation in ``AU_NAMES`` order (0 none, 1 apex;
            negative values, e.g. from neutralising an expressive photo, count as 0).
        interocular: f32[] pupil distance of the photo's face, pixels.
    """

    src_vertices: Float[Array, "Vd 3"]
    dst_vertices: Float[Array, "Vd 3"]
    triangles: Int[Array, "Fd 3"]
    groups: Int[Array, " Fd"]
    surface: Float[Array, "Vd 2"]
    landmarks: Landmarks
    target_landmarks: Landmarks
    au: Float[Array, " K"]
    interocular: Float[Array, ""]


def dense_template(
    weights: Float[Array, "Vd Vb"], skirt_ring: Int[Array, " R"], skirt: float
) -> Float[Array, "Vd 2"]:
    """Canonical template (x, y) mm of every dense render-mesh vertex.

    Args:
        weights: f32[Vd, 478 + R] subdivision weights of the render mesh (landmarks, then the skirt ring).
        skirt_ring: i32[R] landmark ids the skirt vertices were pushed out from (in skirt order).
        skirt: how far the skirt was pushed out, as a fraction of the distance from the ring's centre.
    """
    template = jnp.asarray(topo.face_topology().template[:, :2])
    ring = template[jnp.asarray(skirt_ring)]
    centre = jnp.mean(ring, axis=0, keepdims=True)
    base = jnp.concatenate([template, ring + (ring - centre) * skirt])
    return jnp.asarray(weights, jnp.float32) @ base


def named_action_units(values: Float[Array, " A"], names: tuple[str, ...]) -> Float[Array, " K"]:
    """Intensities given per ``names`` (static: a model's own AU list) in ``AU_NAMES`` order, the order the
    cues read; AUs the list lacks are 0 and names that are not FACS AUs of ``AU_NAMES`` are ignored."""
    if len(names) != values.shape[-1]:
        raise ValueError(f"{values.shape[-1]} intensities for {len(names)} AU names")
    index = {n: i for i, n in enumerate(names)}
    cols = [values[index[n]] if n in index else jnp.zeros((), values.dtype) for n in AU_NAMES]
    return jnp.stack(cols)
