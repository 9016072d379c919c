"""The face mesh: FaceMesh's 478 points as triangles, named regions, canonical template, subdivision.

All arrays here are constants (NumPy), built once by ``scripts/make_face_data.py`` and shipped as package
data. The canonical frame: millimetres, x to the image right (the subject's left), y up, z towards the
camera, origin at the centroid of the 468 mesh points, inter-pupil distance 63 mm.
"""

import dataclasses
import functools
from importlib import resources

import numpy as np

NUM_LANDMARKS = 478
NUM_MESH_POINTS = 468
IPD_MM = 63.0
RIGHT_PUPIL = 468
LEFT_PUPIL = 473
NOSE_TIP = 1  # FaceMesh index of the tip of the nose


@dataclasses.dataclass(frozen=True, eq=False)
class FaceTopology:
    """Triangle mesh over the 478 FaceMesh points.

    Attributes:
        template: f32[478, 3] canonical neutral face (mm).
        triangles: i32[852, 3] skin triangles, mouth and eyes left open, normals towards +z.
        fill_mouth / fill_right_eye / fill_left_eye: triangles that close each hole.
        mirror: i32[478] index of each point's left/right twin (an involution).
        regions: name -> i32 vertex ids (contours are ordered corner to corner).
    """

    template: np.ndarray
    triangles: np.ndarray
    fill_mouth: np.ndarray
    fill_right_eye: np.ndarray
    fill_left_eye: np.ndarray
    mirror: np.ndarray
    regions: dict

    @property
    def closed_triangles(self) -> np.ndarray:
        """Skin triangles plus all hole fills (898 triangles): a watertight-in-front surface."""
        return np.concatenate([self.triangles, self.fill_mouth, self.fill_right_eye, self.fill_left_eye])

    def region(self, name: str) -> np.ndarray:
        try:
            return self.regions[name]
        except KeyError:
            raise KeyError(f"unknown region {name!r}; known: {sorted(self.regions)}") from None

    def inner_lip_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(inner upper lip ids, inner lower lip ids paired with them by index): both from the same corner to
        the other (the lower contour is stored the other way round), each pair one above the other."""
        return self.region("lips_inner_upper"), self.region("lips_inner_lower")[::-1]

    def interocular(self, vertices: np.ndarray) -> float:
        """Distance between the pupil centres of a (478, 3) vertex array."""
        return float(np.linalg.norm(vertices[LEFT_PUPIL] - vertices[RIGHT_PUPIL]))


@functools.cache
def face_topology() -> FaceTopology:
    """Load the shipped face topology (cached)."""
    with resources.files("affectsynth").joinpath("data/face_topology.npz").open("rb") as f:
        data = dict(np.load(f))
    regions = {k[len("region_") :]: v.astype(np.int32) for k, v in data.items() if k.startswith("region_")}
    return FaceTopology(
        template=data["template"].astype(np.float32),
        triangles=data["triangles"].astype(np.int32),
        fill_mouth=data["fill_mouth"].astype(np.int32),
        fill_right_eye=data["fill_right_eye"].astype(np.int32),
        fill_left_eye=data["fill_left_eye"].astype(np.int32),
        mirror=data["mirror"].astype(np.int32),
        regions=regions,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Subdivision:
    """A denser mesh whose vertices are fixed linear combinations of the base vertices.

    ``weights @ base_field`` carries any per-vertex field of the base mesh (positions, deformations,
    colours) exactly onto the dense mesh. New vertices are edge midpoints (weights 1/2, 1/2).

    Attributes:
        weights: f32[V_dense, V_base] (dense; the base mesh is small).
        triangles: i32[F_dense, 3].
    """

    weights: np.ndarray
    triangles: np.ndarray

    def apply(self, field):
        """Map a base-mesh field [V_base, ...] to the dense mesh (works on NumPy and JAX arrays)."""
        return self.weights @ field if field.ndim == 2 else np.einsum("dv,v...->d...", self.weights, field)


def subdivide(triangles: np.ndarray, num_vertices: int, levels: int = 1) -> Subdivision:
    """Midpoint (1 -> 4) subdivision of a triangle mesh, ``levels`` times, orientation preserved."""
    weights = np.eye(num_vertices, dtype=np.float32)
    tris = np.asarray(triangles, np.int64)
    for _ in range(levels):
        n = weights.shape[0]
        edges = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
        uniq, inv = np.unique(edges, axis=0, return_inverse=True)
        inv = inv.reshape(3, -1).T + n  # midpoint vertex id for edges (01, 12, 20) of each triangle
        mids = 0.5 * (weights[uniq[:, 0]] + weights[uniq[:, 1]])
        weights = np.concatenate([weights, mids])
        a, b, c = tris.T
        ab, bc, ca = inv.T
        tris = np.concatenate(
            [
                np.stack([a, ab, ca], 1),
                np.stack([ab, b, bc], 1),
                np.stack([ca, bc, c], 1),
                np.stack([ab, bc, ca], 1),
            ]
        )
    return Subdivision(weights=weights.astype(np.float32), triangles=tris.astype(np.int32))


def edges_of(triangles: np.ndarray) -> np.ndarray:
    """Unique undirected edges (i < j) of a triangle list."""
    e = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0)


def graph_distances(vertices: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """All-pairs shortest path lengths along mesh edges (Dijkstra stand-in for geodesics; small meshes).

    Holes stay holes: pass the open ``triangles`` so upper and lower lip are not neighbours.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path

    e = edges_of(np.asarray(triangles))
    w = np.linalg.norm(vertices[e[:, 0]] - vertices[e[:, 1]], axis=1)
    n = vertices.shape[0]
    g = coo_matrix(
        (np.concatenate([w, w]), (np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]]))),
        shape=(n, n),
    )
    return shortest_path(g.tocsr(), directed=False)
