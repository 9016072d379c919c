"""Template correspondence: where each of FaceMesh's 478 points lies on another face mesh (a scan or a rig).

One routine for every importer. The source mesh is brought into the template's frame (mm) by a similarity
fitted to 68 Multi-PIE landmarks, refined by similarity ICP and then by a non-rigid ICP of the template
(stiffness annealed), and every template point is finally projected onto the source surface. The search is
restricted contour by contour: points of the upper lip only land on the source's upper lip, the lower lip
on the lower lip, each lid on its own lid and the irises on the eyeballs, so a closed mouth or eye on the
source never glues the two sides of the slit together. Fields on the source (expression or identity
deltas) are then carried over by ``SurfaceCorrespondence.sample``.
"""

import dataclasses

import numpy as np

from . import topology as topo
from .geometry import closest_points_on_mesh, similarity_fit

# FaceMesh point for each of the 68 Multi-PIE (iBUG) landmarks, in iBUG order: jaw 0-16 (subject's right
# to left), brows 17-26, nose bridge 27-30, nostrils 31-35, eyes 36-47, outer lips 48-59, inner lips 60-67.
# Chosen on the FaceMesh template (nearest FaceMesh point to each iBUG definition; jaw points on the oval).
IBUG68_TO_FACEMESH: tuple[int, ...] = (
    # jaw (subject's right ear -> chin -> left ear)
    127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,
    # right brow (outer -> inner), left brow (inner -> outer)
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge (top -> tip), nostrils (right -> left)
    168, 197, 5, 4, 98, 97, 2, 326, 327,
    # right eye: outer corner, upper x2, inner corner, lower x2
    33, 160, 158, 133, 153, 144,
    # left eye: inner corner, upper x2, outer corner, lower x2
    362, 385, 387, 263, 373, 380,
    # outer lips: right corner, upper (right -> left), left corner, lower (left -> right)
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
    # inner lips: right corner, upper, left corner, lower
    78, 81, 13, 311, 308, 402, 14, 178,
)  # fmt: skip

LANDMARK_WEIGHTS = np.array([0.25] * 17 + [1.0] * 51)
"""Weights of the 68 landmarks in the initial similarity: the jaw line is a silhouette, defined loosely."""

# The slits and what surrounds them, on both meshes: (name, iBUG landmarks that lie on the slit's contour).
SLITS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("mouth", (60, 61, 62, 63, 64, 65, 66, 67)),
    ("right_eye", (36, 37, 38, 39, 40, 41)),
    ("left_eye", (42, 43, 44, 45, 46, 47)),
)
SLIT_RADIUS_MM = {"mouth": 14.0, "right_eye": 6.0, "left_eye": 6.0}
"""Graph distance (template mm) from a slit within which points are kept on their own side of it."""


@dataclasses.dataclass(frozen=True)
class SourceMesh:
    """A face mesh to put the template on.

    Attributes:
        vertices: f64[N, 3] (any units and frame: the similarity takes care of both).
        triangles: i64[F, 3] the face surface (restrict it to the face region: no head, mouth socket, eyes).
        landmarks: i64[68] source vertex of each Multi-PIE landmark (``IBUG68_TO_FACEMESH`` order).
        eyeballs: (right, left) i64[F_e, 3] triangles of each eyeball (the irises land there), or None.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    landmarks: np.ndarray
    eyeballs: tuple[np.ndarray, np.ndarray] | None = None


@dataclasses.dataclass(frozen=True)
class SurfaceCorrespondence:
    """Each template point's place on the source surface, and the similarity source -> template mm.

    Attributes:
        corners: i64[P, 3] source vertices of the triangle each point lands on.
        barycentric: f64[P, 3] its barycentric coordinates there.
        rotation / scale / translation: ``template ~ scale * rotation @ source + translation``.
        residual: f64[P] distance (mm) from each refined template point to its surface point.
        rigid_residual: f64[P] the same distance after the similarity ICP only (before the non-rigid step).
    """

    corners: np.ndarray
    barycentric: np.ndarray
    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    residual: np.ndarray
    rigid_residual: np.ndarray

    def sample(self, field: np.ndarray) -> np.ndarray:
        """A displacement field f[..., N, 3] on the source -> f64[..., P, 3] in the template frame (mm)."""
        field = np.asarray(field, np.float64)
        at = np.einsum("pk,...pkc->...pc", self.barycentric, field[..., self.corners, :])
        return self.scale * at @ self.rotation.T

    def points(self, vertices: np.ndarray) -> np.ndarray:
        """The corresponding surface points of source ``vertices`` f[N, 3], in the template frame (mm)."""
        at = np.einsum("pk,pkc->pc", self.barycentric, np.asarray(vertices, np.float64)[self.corners])
        return self.scale * at @ self.rotation.T + self.translation


# --------------------------------------------------------------------------------------------------------
# Mesh structure: boundary loops, their two sides


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """The boundary loops of a triangle mesh (edges used by one triangle), each an ordered vertex array."""
    tri = np.asarray(triangles, np.int64)
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    key = np.sort(e, axis=1)
    _, inv, cnt = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    nxt = {int(a): int(b) for a, b in e[cnt[inv.reshape(-1)] == 1]}  # directed: one successor each
    loops = []
    while nxt:
        start = next(iter(nxt))
        loop = [start]
        cur = nxt.pop(start)
        while cur != start and cur in nxt:
            loop.append(cur)
            cur = nxt.pop(cur)
        loops.append(np.array(loop, np.int64))
    return loops


def split_contour(vertices: np.ndarray, loop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut a closed slit contour at its two extreme-x vertices (the corners): (upper, lower) chains, each
    from one corner to the other; upper is the one with the higher mean y (canonical frame: y up)."""
    loop = np.asarray(loop, np.int64)
    loop = np.roll(loop, -int(np.argmin(vertices[loop, 0])))
    k = int(np.argmax(vertices[loop, 0]))
    a, b = loop[: k + 1], np.concatenate([loop[k:], loop[:1]])
    return (a, b) if vertices[a, 1].mean() > vertices[b, 1].mean() else (b, a)


def _edge_graph(vertices: np.ndarray, triangles: np.ndarray):
    from scipy.sparse import coo_matrix

    e = topo.edges_of(np.asarray(triangles, np.int64))
    w = np.linalg.norm(vertices[e[:, 0]] - vertices[e[:, 1]], axis=1)
    n = vertices.shape[0]
    rows, cols = np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])
    return coo_matrix((np.concatenate([w, w]), (rows, cols)), shape=(n, n)).tocsr()


def side_of_slit(
    vertices: np.ndarray, triangles: np.ndarray, upper: np.ndarray, lower: np.ndarray, radius: float
) -> np.ndarray:
    """Label every vertex within graph distance ``radius`` of a slit by its side: +1 (nearer the upper
    contour), -1 (nearer the lower), 0 (farther, or as near to both: the corners). i8[N]."""
    from scipy.sparse.csgraph import dijkstra

    g = _edge_graph(vertices, triangles)
    du = dijkstra(g, indices=np.asarray(upper), min_only=True, limit=2 * radius)
    dl = dijkstra(g, indices=np.asarray(lower), min_only=True, limit=2 * radius)
    near = np.minimum(du, dl) <= radius
    with np.errstate(invalid="ignore"):  # inf - inf far from both: not near anyway
        tie = np.abs(du - dl) <= 1e-9 * max(radius, 1.0)
    return np.where(near & ~tie, np.where(du < dl, 1, -1), 0).astype(np.int8)


def _slit_contours(vertices, triangles, landmark_ids) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(upper, lower) contour of each slit of ``SLITS``: the boundary loop nearest its landmarks."""
    loops = boundary_loops(triangles)
    out = {}
    for name, lms in SLITS:
        p = vertices[np.asarray(landmark_ids)[list(lms)]]
        gap = [np.linalg.norm(p[:, None] - vertices[lp][None], axis=2).min(1).mean() for lp in loops]
        out[name] = split_contour(vertices, loops[int(np.argmin(gap))])
    return out


def _template_contours(t: topo.FaceTopology) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    r = t.region
    return {
        "mouth": (r("lips_inner_upper"), r("lips_inner_lower")),
        "right_eye": (r("right_eye_upper"), r("right_eye_lower")),
        "left_eye": (r("left_eye_upper"), r("left_eye_lower")),
    }


def _labels(vertices, triangles, contours, scale_mm: float) -> np.ndarray:
    """Per vertex: 0 free, or 2k+1 / 2k+2 for the upper / lower side of slit k (radii in mm / scale_mm)."""
    lab = np.zeros(vertices.shape[0], np.int16)
    for k, (name, _) in enumerate(SLITS):
        up, lo = contours[name]
        side = side_of_slit(vertices, triangles, up, lo, SLIT_RADIUS_MM[name] / scale_mm)
        lab = np.where(side == 1, 2 * k + 1, np.where(side == -1, 2 * k + 2, lab))
    return lab


# --------------------------------------------------------------------------------------------------------
# The correspondence


def _search_sets(source: SourceMesh, scale: float) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Template point labels i16[478] and, per label, the source triangles its points may land on."""
    t = topo.face_topology()
    tmpl = t.template.astype(np.float64)
    contours = _slit_contours(source.vertices, source.triangles, source.landmarks)
    # the source side of a slit reaches 1.5x farther, so points at the edge of a template band find room
    src_lab = _labels(source.vertices, source.triangles, contours, scale / 1.5)
    tmpl_lab = _labels(tmpl, t.triangles, _template_contours(t), 1.0)
    tri_lab = src_lab[source.triangles]
    sets = {0: source.triangles}
    for lab in range(1, 2 * len(SLITS) + 1):
        sets[lab] = source.triangles[np.all(tri_lab == lab, axis=1)]
    if source.eyeballs is not None:
        for k, (side, ids) in enumerate(zip(("right", "left"), source.eyeballs, strict=True)):
            lab = 2 * len(SLITS) + 1 + k
            tmpl_lab[t.region(f"{side}_iris")] = lab
            sets[lab] = np.asarray(ids, np.int64)
    return tmpl_lab, sets


def _closest(points, vertices, labels, sets):
    """Label-restricted closest points: (closest f64[P, 3], corners i64[P, 3], barycentric f64[P, 3])."""
    closest = np.zeros_like(points)
    corners = np.zeros((points.shape[0], 3), np.int64)
    bary = np.zeros_like(points)
    for lab in np.unique(labels):
        ids = np.flatnonzero(labels == lab)
        tris = sets[int(lab)] if len(sets[int(lab)]) else sets[0]
        c, tid, b = closest_points_on_mesh(points[ids], vertices, tris)
        closest[ids], corners[ids], bary[ids] = c, tris[tid], b
    return closest, corners, bary


def _smoothness_laplacian(t: topo.FaceTopology) -> np.ndarray:
    """Graph Laplacian f64[478, 478] over the closed mesh's edges and each iris ring's spokes (an iris moves
    as one piece, free of the lids: it lands on the eyeball, which expressions do not move)."""
    e = [topo.edges_of(t.closed_triangles)]
    for side in ("right", "left"):
        iris = t.region(f"{side}_iris")
        e.append(np.stack([np.full(len(iris) - 1, iris[0]), iris[1:]], 1))
    e = np.concatenate(e)
    n = t.template.shape[0]
    a = np.zeros((n, n))
    a[e[:, 0], e[:, 1]] = a[e[:, 1], e[:, 0]] = 1.0
    return np.diag(a.sum(1)) - a


def template_correspondence(
    source: SourceMesh,
    *,
    icp_iterations: int = 8,
    stiffness: tuple[float, ...] = (30.0, 10.0, 3.0, 1.0, 0.3, 0.1, 0.03),
) -> SurfaceCorrespondence:
    """Where each template point lies on ``source`` (see the module docstring).

    1. Similarity from the 68 landmarks (``LANDMARK_WEIGHTS``).
    2. ``icp_iterations`` similarity ICP steps: label-restricted closest points of the template, robust
       weights :math:`1 / (1 + (r_i / 2\\tilde r)^2)`.
    3. Non-rigid ICP: per stiffness :math:`\\alpha` (decreasing), the template points x solve
       :math:`\\min_x \\sum_i \\|x_i - c_i\\|^2 + \\alpha (x - T)^\\top L (x - T)` (L: the closed mesh's graph
       Laplacian) with c their current closest points, twice per stiffness.
    4. Final closest points of the refined x: corners, barycentrics and residuals.
    """
    t = topo.face_topology()
    tmpl = t.template.astype(np.float64)
    src = np.asarray(source.vertices, np.float64)
    lm = np.asarray(source.landmarks, np.int64)
    r, s, tr = similarity_fit(src[lm], tmpl[list(IBUG68_TO_FACEMESH)], LANDMARK_WEIGHTS)
    labels, sets = _search_sets(source, s)
    for _ in range(icp_iterations):
        closest, corners, bary = _closest(tmpl, s * src @ r.T + tr, labels, sets)
        res = np.linalg.norm(closest - tmpl, axis=1)
        w = 1.0 / (1.0 + (res / (2.0 * max(float(np.median(res)), 1e-9))) ** 2)
        on_src = np.einsum("pk,pkc->pc", bary, src[corners])
        r, s, tr = similarity_fit(on_src, tmpl, w)
    aligned = s * src @ r.T + tr
    closest, corners, bary = _closest(tmpl, aligned, labels, sets)
    rigid_res = np.linalg.norm(closest - tmpl, axis=1)
    lap = _smoothness_laplacian(t)
    x = tmpl.copy()
    eye = np.eye(tmpl.shape[0])
    for alpha in stiffness:
        for _ in range(2):
            closest, corners, bary = _closest(x, aligned, labels, sets)
            x = np.linalg.solve(eye + alpha * lap, closest + alpha * lap @ tmpl)
    closest, corners, bary = _closest(x, aligned, labels, sets)
    return SurfaceCorrespondence(
        corners=corners,
        barycentric=bary,
        rotation=r,
        scale=float(s),
        translation=tr,
        residual=np.linalg.norm(closest - x, axis=1),
        rigid_residual=rigid_res,
    )
