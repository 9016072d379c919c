"""affectsynth: put a chosen valence/arousal affect on a real face photo, in JAX."""

from .morphable import MorphableModel as MorphableModel
from .topology import FaceTopology as FaceTopology
from .topology import face_topology as face_topology
from .topology import subdivide as subdivide

__version__ = "0.1.0"

__all__ = ["MorphableModel", "FaceTopology", "face_topology", "subdivide"]
