"""ICT-FaceKit (MIT) importer: its expression rig as AU fields on our topology, its identity modes.

The rig's shapes are transferred onto FaceMesh's 478 points through a landmark-anchored correspondence;
``import_ict_model`` builds an AffectModel from them with the same generator as the default model, and
``load_ict_identity_basis`` gives a morphable-model identity basis.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np

from ...face import geometry
from ...face import topology as topo
from ...face.geometry import MULTIPIE_TO_FACEMESH, _similarity_np
from ..au_fields import LATERAL_AUS, _mirror_field, _seal_lips
from ..default import DEFAULT_GALLERY, _build_model
from ..synthetic_gallery import GalleryConfig, generate_gallery

# --------------------------------------------------------------------------------------------------------
# ICT-FaceKit importer

# FaceMesh index for each of the 68 Multi-PIE (iBUG) landmarks, in iBUG order: jaw 0-16 (subject's right
# to left), brows 17-26, nose bridge 27-30, nostrils 31-35, eyes 36-47, outer lips 48-59, inner lips 60-67.
# Chosen by us on the FaceMesh template (nearest FaceMesh point to each iBUG definition; jaw points on the
# face oval). The ICT rig marks these 68 points in ``vertex_indices.json``.
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

# ICT shape name (without _L/_R) -> AU. Sources: the ICT-FaceKit documentation's AU table; AU25/AU26 from a
# partial jawOpen (lips part / jaw drop), AU27 from the full jawOpen, AU23 from mouthPress, AU43 from
# eyeBlink (AU45).
ICT_TO_AU: dict[str, tuple[str, float]] = {
    "browInnerUp": ("AU1", 1.0),
    "browOuterUp": ("AU2", 1.0),
    "browDown": ("AU4", 1.0),
    "eyeWide": ("AU5", 1.0),
    "cheekSquint": ("AU6", 1.0),
    "eyeSquint": ("AU7", 1.0),
    "noseSneer": ("AU9", 1.0),
    "mouthShrugUpper": ("AU10", 1.0),
    "mouthSmile": ("AU12", 1.0),
    "mouthDimple": ("AU14", 1.0),
    "mouthFrown": ("AU15", 1.0),
    "mouthLowerDown": ("AU16", 1.0),
    "mouthShrugLower": ("AU17", 1.0),
    "mouthStretch": ("AU20", 1.0),
    "mouthPress": ("AU24", 1.0),
    "eyeBlink": ("AU43", 1.0),
    "jawOpen": ("AU27", 1.0),
}
ICT_DERIVED: dict[str, tuple[str, float]] = {
    "AU26": ("jawOpen", 0.45),
    "AU25": ("jawOpen", 0.2),
    "AU23": ("mouthPress", 0.6),
}
"""AUs the rig lacks, made as a fraction of another shape."""


def _read_obj_vertices(path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices f64[N, 3] and polygon faces (list of index lists) of a Wavefront OBJ."""
    verts, faces = [], []
    with open(path) as f:
        for line in f:
            if line.startswith("v "):
                verts.append([float(c) for c in line.split()[1:4]])
            elif line.startswith("f "):
                faces.append([int(tok.split("/")[0]) - 1 for tok in line.split()[1:]])
    return np.array(verts, np.float64), faces


def _load_ict(
    folder, source: str = "auto"
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(neutral cm f64[N, 3], triangles i64[F, 3], shape name -> delta cm, landmark vertex ids [68]).

    ``source``: "obj" (FaceXModel/*.obj or *.obj in the folder), "npz" (ict_facekit_deltas.npz) or "auto"
    (OBJs when the neutral OBJ is there).
    """
    folder = Path(folder)
    sub = folder / "FaceXModel"
    root = sub if sub.is_dir() else folder
    idx_file = next(
        (p for p in (root / "vertex_indices.json", folder / "vertex_indices.json") if p.is_file()), None
    )
    if idx_file is None:
        raise FileNotFoundError(f"no vertex_indices.json in {folder}")
    with open(idx_file) as f:
        landmarks = np.asarray(json.load(f)["idx_to_landmark_verts"], np.int64)
    npz = folder / "ict_facekit_deltas.npz"
    neutral_obj = root / "generic_neutral_mesh.obj"
    if source not in ("auto", "obj", "npz"):
        raise ValueError(f"source must be 'auto', 'obj' or 'npz', got {source!r}")
    if neutral_obj.is_file() and source != "npz":
        neutral, polys = _read_obj_vertices(neutral_obj)
        tris = []
        for p in polys:
            tris.extend([p[0], p[k], p[k + 1]] for k in range(1, len(p) - 1))
        deltas = {}
        for p in sorted(root.glob("*.obj")):
            if p.name == neutral_obj.name or p.stem.startswith("identity"):
                continue
            v, _ = _read_obj_vertices(p)
            if v.shape == neutral.shape:
                deltas[p.stem] = v - neutral
        return neutral, np.array(tris, np.int64), deltas, landmarks
    if npz.is_file() and source != "obj":
        d = np.load(npz)
        quads = d["faces"].astype(np.int64)
        tris = np.concatenate([quads[:, [0, 1, 2]], quads[quads[:, 3] >= 0][:, [0, 2, 3]]])
        names = [str(n) for n in d["expression_names"]]
        all_deltas = d["expression_deltas"]  # one decompression (indexing the lazy npz member re-reads it)
        deltas = {n: all_deltas[k].astype(np.float64) for k, n in enumerate(names)}
        return d["neutral"].astype(np.float64), tris, deltas, landmarks
    raise FileNotFoundError(
        f"{folder}: neither FaceXModel/generic_neutral_mesh.obj nor ict_facekit_deltas.npz"
    )


def _similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (Umeyama): dst ~ s R src + t."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, sv, vt = np.linalg.svd(b.T @ a)
    dfix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    r = u @ dfix @ vt
    s = float((sv * np.diag(dfix)).sum() / (a**2).sum())
    return s, r, md - s * r @ ms


def _closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentrics of the closest point to p on triangles (a, b, c), all f64[..., 3] (Ericson's regions)."""
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = (ab * ap).sum(-1), (ac * ap).sum(-1)
    bp = p - b
    d3, d4 = (ab * bp).sum(-1), (ac * bp).sum(-1)
    cp = p - c
    d5, d6 = (ab * cp).sum(-1), (ac * cp).sum(-1)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    den = np.where(np.abs(va + vb + vc) > 1e-30, va + vb + vc, 1e-30)
    v, w = vb / den, vc / den  # interior
    out = np.stack([1 - v - w, v, w], -1)

    def put(mask, bc):
        nonlocal out
        out = np.where(mask[..., None], bc, out)

    def safe(x):
        return np.where(np.abs(x) > 1e-30, x, 1e-30)

    # edges (checked before vertices, which take precedence)
    e_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    t_ab = d1 / safe(d1 - d3)
    put(e_ab, np.stack([1 - t_ab, t_ab, 0 * t_ab], -1))
    e_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    t_ac = d2 / safe(d2 - d6)
    put(e_ac, np.stack([1 - t_ac, 0 * t_ac, t_ac], -1))
    e_bc = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
    t_bc = (d4 - d3) / safe((d4 - d3) + (d5 - d6))
    put(e_bc, np.stack([0 * t_bc, 1 - t_bc, t_bc], -1))
    one = np.ones_like(d1)
    zero = np.zeros_like(d1)
    put((d1 <= 0) & (d2 <= 0), np.stack([one, zero, zero], -1))
    put((d3 >= 0) & (d4 <= d3), np.stack([zero, one, zero], -1))
    put((d6 >= 0) & (d5 <= d6), np.stack([zero, zero, one], -1))
    return out


def closest_points_on_mesh(
    vertices: np.ndarray, triangles: np.ndarray, points: np.ndarray, candidates: int = 48
) -> tuple[np.ndarray, np.ndarray]:
    """Closest surface point of a triangle mesh to each query point: (triangle id i64[P], barycentric [P, 3]).

    Exact over the ``candidates`` triangles whose centroids are nearest to each point (a k-d tree), which is
    exact whenever the mesh is finely tessellated relative to the query's distance to it (true here).
    """
    from scipy.spatial import cKDTree

    tri = np.asarray(triangles, np.int64)
    cen = vertices[tri].mean(1)
    k = min(candidates, len(tri))
    _, cand = cKDTree(cen).query(points, k=k)
    cand = cand.reshape(len(points), k)
    a, b, c = (vertices[tri[cand, i]] for i in range(3))
    bc = _closest_on_triangles(points[:, None, :], a, b, c)
    q = bc[..., 0:1] * a + bc[..., 1:2] * b + bc[..., 2:3] * c
    best = np.argmin(((q - points[:, None, :]) ** 2).sum(-1), axis=1)
    rows = np.arange(len(points))
    return cand[rows, best], bc[rows, best]


def ict_correspondence(neutral_cm: np.ndarray, triangles: np.ndarray, landmarks: np.ndarray):
    """Our 478 points on the ICT surface: similarity from the 68 landmarks, then closest point.

    Returns:
        (triangle id i64[478], barycentric f64[478, 3], similarity (s, R, t) mapping ICT cm -> our mm).
    """
    t = topo.face_topology()
    ours = t.template.astype(np.float64)[list(IBUG68_TO_FACEMESH)]
    theirs = neutral_cm[landmarks]
    s, r, tr = _similarity(theirs, ours)
    aligned = neutral_cm @ (s * r).T + tr
    tri_id, bary = closest_points_on_mesh(aligned, triangles, t.template.astype(np.float64))
    return tri_id.astype(np.int64), bary, (s, r, tr)


def ict_action_unit_fields(folder, source: str = "auto") -> dict[str, np.ndarray]:
    """AU fields on our topology from an ICT-FaceKit folder (original layout or the npz subset).

    Each ICT shape's deltas (cm) are sampled at our points' closest surface points (barycentric), rotated
    and scaled into our frame (mm), and renamed by ``ICT_TO_AU`` (L + R summed into the bilateral AU; the
    L/R naming of ICT is the subject's side, like ours). Returns name -> f32[478, 3].
    """
    neutral, tris, deltas, landmarks = _load_ict(folder, source)
    tri_id, bary, (s, r, _) = ict_correspondence(neutral, tris, landmarks)
    corners = tris[tri_id]

    def sample(delta):
        d = np.einsum("pk,pkc->pc", bary, delta[corners])
        return (d @ (s * r).T).astype(np.float32)

    t = topo.face_topology()
    out: dict[str, np.ndarray] = {}
    for ict, (au, gain) in ICT_TO_AU.items():
        sides = {sfx: deltas[ict + sfx] for sfx in ("_L", "_R", "") if ict + sfx in deltas}
        if not sides:
            continue
        if "" in sides:
            out[au] = gain * sample(sides[""])
            continue
        for sfx, dl in sides.items():
            out[au + sfx[1:]] = gain * sample(dl)
        if len(sides) == 2:
            out[au] = out[au + "L"] + out[au + "R"]
        elif au in LATERAL_AUS:  # only one side shipped: the other by mirror
            have = next(iter(sides))[1:]
            other = "R" if have == "L" else "L"
            out[au + other] = _mirror_field(t, out[au + have]).astype(np.float32)
            out[au] = out[au + "L"] + out[au + "R"]
    for au, (src, frac) in ICT_DERIVED.items():
        if au not in out and src in deltas:
            out[au] = (frac * sample(deltas[src])).astype(np.float32)
    return {k: _seal_lips(t, v).astype(np.float32) for k, v in out.items()}


def import_ict_model(folder, *, config: GalleryConfig = DEFAULT_GALLERY):
    """ICT-FaceKit folder -> AffectModel: its AU fields on our topology, then the generated gallery, built."""
    fields = ict_action_unit_fields(folder)
    if not fields:
        raise ValueError(f"{folder}: no ICT expression shape with a known AU")
    kw = dataclasses.asdict(config)
    frames = generate_gallery(fields=fields, source="ict-facekit", **kw)
    return _build_model(frames, fields)


def ict_identity_basis(
    neutral: np.ndarray,
    faces: np.ndarray,
    identity_deltas: np.ndarray,
    landmark_vertices: np.ndarray,
    num_modes: int = 40,
    *,
    face_vertices: int = 9409,
    icp_iterations: int = 5,
    deltas_are_modes: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Bring ICT-FaceKit identity shapes onto the 478-point topology and PCA them.

    ICT's neutral face is aligned to our template by a similarity (from ``MULTIPIE_TO_FACEMESH`` applied to
    its 68 landmark vertices), refined by a few rigid ICP steps; every template point is projected onto the
    closest point of the aligned ICT face surface and the identity deltas are interpolated there
    (barycentric), rotated and scaled by the same similarity (cm -> template mm).

    ICT's 100 identity shapes are mutually orthogonal to 1e-4 (cosine) with decreasing norms: they are the
    modes of ICT's own PCA model, each at one standard deviation, not sampled people. So by default
    (``deltas_are_modes``) the shape prior is :math:`\\sum_k c_k d_k` with :math:`c \\sim N(0, I)`; its
    covariance :math:`S^T S` (rows of S = resampled deltas) is re-diagonalised by an SVD of S (no
    centring): basis = right singular vectors, std = singular values. With ``deltas_are_modes=False`` the
    rows are treated as samples (centred PCA, std = singular value / sqrt(n - 1)).

    Args:
        neutral: f32[N, 3] ICT neutral (cm).
        faces: i32[F, 4] ICT polygons (quads; -1 pads triangles).
        identity_deltas: f32[S, N, 3] identity shapes minus the neutral.
        landmark_vertices: i32[68] ICT vertex of each Multi-PIE landmark.
        num_modes: principal components kept.
        face_vertices: ICT vertices ``< face_vertices`` form the face region (the rest: eyes, mouth
            interior, head).
        icp_iterations: rigid closest-point refinements after the landmark similarity.
        deltas_are_modes: see above.

    Returns:
        (basis f32[K, 478, 3] unit-norm modes, std f32[K] coefficient std in template mm, as in
        ``default_identity_basis``).
    """
    t = topo.face_topology()
    tmpl = t.template.astype(np.float64)
    neutral = np.asarray(neutral, np.float64)
    faces = np.asarray(faces)
    lm_mp = np.array(sorted(MULTIPIE_TO_FACEMESH))
    src = neutral[np.asarray(landmark_vertices)[lm_mp]]
    dst = tmpl[[MULTIPIE_TO_FACEMESH[i] for i in lm_mp]]
    r, s, tr = _similarity_np(src, dst)

    quads = faces[np.all(faces < face_vertices, axis=1)]
    tris = np.concatenate([quads[:, [0, 1, 2]], quads[quads[:, 3] >= 0][:, [0, 2, 3]]])
    tris = tris[np.all(tris >= 0, axis=1)]
    mesh_pts = tmpl[: topo.NUM_MESH_POINTS]
    for _ in range(icp_iterations):  # rigid ICP of the surface onto the template's mesh points
        closest, _, _ = geometry.closest_points_on_mesh(mesh_pts, s * neutral @ r.T + tr, tris)
        r2, _, _ = _similarity_np(closest, mesh_pts)  # rotation only: keep the landmark-derived scale
        t2 = mesh_pts.mean(0) - r2 @ closest.mean(0)
        r, tr = r2 @ r, r2 @ tr + t2
    _, tri_id, bary = geometry.closest_points_on_mesh(tmpl, s * neutral @ r.T + tr, tris)
    corners = tris[tri_id]  # [478, 3]
    deltas = np.asarray(identity_deltas, np.float64)
    sampled = np.einsum("vc,svcd->svd", bary, deltas[:, corners, :])  # [S, 478, 3] cm, ICT axes
    sampled = s * sampled @ r.T  # template mm, canonical axes
    flat = sampled.reshape(sampled.shape[0], -1)
    if not deltas_are_modes:
        flat = flat - flat.mean(0)
    _, sv, vt = np.linalg.svd(flat, full_matrices=False)
    k = min(num_modes, vt.shape[0])
    std = sv[:k] if deltas_are_modes else sv[:k] / np.sqrt(max(flat.shape[0] - 1, 1))
    basis = vt[:k].reshape(k, -1, 3)
    return basis.astype(np.float32), std.astype(np.float32)


def load_ict_identity_basis(folder, num_modes: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Read ICT-FaceKit arrays from ``folder`` and build an identity basis (see ``ict_identity_basis``).

    ``folder`` holds ``ict_facekit_deltas.npz`` (neutral, faces, identity_deltas) and ``vertex_indices.json``
    (``idx_to_landmark_verts``).
    """
    folder = Path(folder)
    with np.load(folder / "ict_facekit_deltas.npz") as z:
        neutral, faces, deltas = z["neutral"], z["faces"], z["identity_deltas"]
    with open(folder / "vertex_indices.json") as f:
        landmarks = np.asarray(json.load(f)["idx_to_landmark_verts"])
    return ict_identity_basis(neutral, faces, deltas, landmarks, num_modes)
