"""Shape aliases used across affectsynth (jaxtyping). Batch axes are added by ``vmap`` in the pipeline."""

from jaxtyping import Array, Bool, Float, Int

Image = Float[Array, "H W 3"]
"""An RGB image, float32 in [0, 1]."""
Mask = Float[Array, "H W"]
"""A soft mask in [0, 1]."""
Landmarks = Float[Array, "478 3"]
"""FaceMesh landmarks in pixels: x right, y down, z (same scale as x) away from the camera."""
Vertices = Float[Array, "V 3"]
Vertices2D = Float[Array, "V 2"]
Triangles = Int[Array, "F 3"]
Deformation = Float[Array, "V 3"]
Target = Float[Array, "2"]
"""(valence, arousal) in [-1, 1]^2."""
Rotation = Float[Array, "3 3"]
BoolMask = Bool[Array, "H W"]

__all__ = [
    "Image",
    "Mask",
    "Landmarks",
    "Vertices",
    "Vertices2D",
    "Triangles",
    "Deformation",
    "Target",
    "Rotation",
    "BoolMask",
]
