"""Regenerate ``src/affectsynth/data/face_topology.npz``: the FaceMesh triangle mesh and canonical template.

Run: ``python scripts/make_face_data.py`` (needs mediapipe and scikit-image, both dependencies).

What it derives, all from our own code over public inputs:
- triangles: the 3-cliques of MediaPipe's ``FACEMESH_TESSELATION`` edge list, minus the two cliques that
  enclose a degree-3 vertex (they are not faces), oriented so normals point at the camera: 852 triangles;
  the mesh is a disk with three holes (mouth, two eyes), closed separately by ear clipping (46 triangles);
- the canonical template: FaceMesh's 478 landmarks of ``skimage.data.astronaut()`` (a public-domain NASA
  portrait shipped inside scikit-image), made left/right symmetric, rotated frontal, translated so the
  origin is the centroid of the 468 mesh points and scaled to millimetres (inter-pupil distance 63 mm);
  x points to the image right (the subject's left), y up, z towards the camera;
- a neutralised mouth: the astronaut smiles broadly (lip corners up and back, lips apart with teeth), a bad
  neutral. ``neutralise_mouth`` moves the four lip contours to a closed, relaxed mouth by fixed rules
  (narrow the mouth, close the lips onto a nearly flat stomion line, bring the corners forward) and
  carries that displacement to the surrounding skin by a bi-Laplacian extension; the brows, eyes, nose,
  and the face outline keep their shape (all points then shift by the same ~1 mm so the origin stays at the
  mesh centroid). Regions, triangles and fills are computed on the unmodified shape;
  only ``template`` is neutralised (mirror twins stay exact mirrors);
- the mirror permutation (index of each point's left/right twin) and named regions.

The output is deterministic for a given mediapipe version; ``tests/test_topology.py`` checks its invariants.
"""

from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

OUT = Path(__file__).resolve().parents[1] / "src" / "affectsynth" / "data" / "face_topology.npz"
IPD_MM = 63.0


def tessellation_triangles(edges):
    adj = defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    tris = set()
    for a, b in edges:
        for c in adj[a] & adj[b]:
            tris.add(tuple(sorted((a, b, c))))
    tris = sorted(tris)
    # A clique whose three vertices surround a degree-3 vertex is a "cap" over a fan, not a face.
    bad = []
    for t in tris:
        for nbrs in adj.values():
            if len(nbrs) == 3 and nbrs == set(t):
                bad.append(t)
    tris = [t for t in tris if t not in bad]
    return np.array(tris, np.int32), bad


def orient(tris, verts):
    """Orient triangles consistently (shared edges run opposite ways), normals towards the camera (+z).

    Orientation is propagated across shared edges by breadth-first search, then the whole mesh is flipped
    if most area faces away; a per-triangle z test would mis-orient grazing triangles at the silhouette.
    """
    out = tris.copy()
    edge_tris = defaultdict(list)
    for t, tri in enumerate(out):
        for i in range(3):
            edge_tris[tuple(sorted((int(tri[i]), int(tri[(i + 1) % 3]))))].append(t)
    done = np.zeros(len(out), bool)
    for seed in range(len(out)):
        if done[seed]:
            continue
        done[seed] = True
        queue = [seed]
        while queue:
            t = queue.pop()
            tri = out[t]
            for i in range(3):
                a, b = int(tri[i]), int(tri[(i + 1) % 3])
                for u in edge_tris[tuple(sorted((a, b)))]:
                    if done[u]:
                        continue
                    o = [int(v) for v in out[u]]
                    # neighbour must traverse the shared edge as b -> a
                    same = any(o[j] == a and o[(j + 1) % 3] == b for j in range(3))
                    if same:
                        out[u] = out[u][[0, 2, 1]]
                    done[u] = True
                    queue.append(u)
    p = verts[out]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    if n[:, 2].sum() < 0:
        out = out[:, [0, 2, 1]]
    return out


def boundary_loops(tris):
    count = defaultdict(int)
    directed = {}
    for t in tris:
        for i in range(3):
            a, b = int(t[i]), int(t[(i + 1) % 3])
            count[tuple(sorted((a, b)))] += 1
            directed[(a, b)] = True
    nxt = {}
    for (a, b), n in count.items():
        if n == 1:
            # boundary edge: keep the direction it has in its triangle
            if (a, b) in directed:
                nxt[a] = b
            else:
                nxt[b] = a
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(loop)
    return loops


def ear_clip(loop, verts2d):
    """Triangulate a simple polygon (vertex ids in order) by ear clipping in 2D."""
    idx = list(loop)
    pts = {i: verts2d[i] for i in idx}
    area = sum(
        pts[idx[k]][0] * pts[idx[(k + 1) % len(idx)]][1] - pts[idx[(k + 1) % len(idx)]][0] * pts[idx[k]][1]
        for k in range(len(idx))
    )
    if area < 0:
        idx = idx[::-1]
    out = []

    def inside(p, a, b, c):
        def s(u, v, w):
            return (u[0] - w[0]) * (v[1] - w[1]) - (v[0] - w[0]) * (u[1] - w[1])

        d1, d2, d3 = s(p, a, b), s(p, b, c), s(p, c, a)
        return not (((d1 < 0) or (d2 < 0) or (d3 < 0)) and ((d1 > 0) or (d2 > 0) or (d3 > 0)))

    while len(idx) > 3:
        best = None
        for k in range(len(idx)):
            a, b, c = idx[k - 1], idx[k], idx[(k + 1) % len(idx)]
            pa, pb, pc = pts[a], pts[b], pts[c]
            cross = (pb[0] - pa[0]) * (pc[1] - pa[1]) - (pb[1] - pa[1]) * (pc[0] - pa[0])
            if cross <= 0:
                continue
            if any(inside(pts[o], pa, pb, pc) for o in idx if o not in (a, b, c)):
                continue
            # prefer the fattest ear: best minimum angle
            ang = []
            for u, v, w in ((pa, pb, pc), (pb, pc, pa), (pc, pa, pb)):
                e1, e2 = v - u, w - u
                ang.append(np.arccos(np.clip(e1 @ e2 / (np.linalg.norm(e1) * np.linalg.norm(e2)), -1, 1)))
            score = min(ang)
            if best is None or score > best[0]:
                best = (score, k, (a, b, c))
        if best is None:
            raise RuntimeError("ear clipping failed")
        out.append(best[2])
        idx.pop(best[1])
    out.append(tuple(idx))
    return np.array(out, np.int32)


def astronaut_landmarks():
    import mediapipe as mp
    import skimage.data

    img = skimage.data.astronaut()
    h, w = img.shape[:2]
    with mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=1
    ) as fm:
        res = fm.process(img)
    lm = np.array([[p.x * w, p.y * h, p.z * w] for p in res.multi_face_landmarks[0].landmark], np.float64)
    # image frame (x right, y down, z away) -> template frame (x right, y up, z towards camera)
    return lm * np.array([1.0, -1.0, -1.0])


def mirror_permutation(x):
    """Index of each point's left/right twin: nearest neighbour of the x-mirrored shape (after centring)."""
    c = x - x.mean(0)
    # rough symmetry plane from the midline points: those whose mirror is themselves are unknown yet,
    # so iterate: estimate plane, mirror, match, re-estimate.
    R = np.eye(3)
    for _ in range(5):
        y = c @ R.T
        m = y * np.array([-1.0, 1.0, 1.0])
        d = np.linalg.norm(y[:, None, :] - m[None, :, :], axis=-1)
        perm = linear_sum_assignment(d)[1]
        # Procrustes rotation that maps y to its mirrored twin; half of it makes y symmetric
        a, b = y, m[perm]
        u, _, vt = np.linalg.svd(b.T @ a)
        r = u @ vt
        if np.linalg.det(r) < 0:
            u[:, -1] *= -1
            r = u @ vt
        w, v = np.linalg.eig(r)
        # half rotation via axis-angle
        ang = np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))
        axis = np.real(v[:, np.argmin(np.abs(w - 1))])
        k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
        half = np.eye(3) + np.sin(ang / 2) * k + (1 - np.cos(ang / 2)) * (k @ k)
        R = half @ R
    return perm, R


# Neutral-mouth rules (millimetres in the 63 mm inter-pupil frame). The proportions are those of an average
# relaxed adult mouth: width about 0.77 inter-pupil distances (48.5 mm), lips closed on a stomion line whose
# corners sit about 1.5 mm above its centre, corners about 3.5 mm less deep than in a broad smile.
NEUTRAL_MOUTH_WIDTH_MM = 48.5
NEUTRAL_CORNER_RISE_MM = 1.5
NEUTRAL_CORNER_FORWARD_MM = 3.5
NEUTRAL_LIP_GAP_MM = 0.5  # at the centre, tapering to 0 at the corners: keeps the mouth fill non-degenerate
NEUTRAL_VERMILION_GAIN = 1.25  # a smile stretches the lips thin; relaxed lips are thicker
NEUTRAL_FREE_RADIUS_MM = 45.0  # skin farther than this (along the mesh) from the lips stays where it is
NEUTRAL_BAND_MM = 0.8  # the lip band's inner rings stay this far above/below the closed lip line


def neutralise_mouth(sym, tris, regions, mirror):
    """Close and relax a smiling mouth: deterministic rules on the lip contours + bi-Laplacian extension.

    Lip contours (inner/outer, upper/lower, each 11 points corner to corner, paired by index): x is scaled
    so the mouth is ``NEUTRAL_MOUTH_WIDTH_MM`` wide; inner contours move onto the stomion line
    y_s(x) = y_0 + rise (x / x_c)^2 (y_0 the middle of the current lip gap at the midline) with a small gap
    that tapers to zero at the corners; outer contours keep their vermilion height above/below the inner
    one, times ``NEUTRAL_VERMILION_GAIN``; z comes forward by ``forward (x / x_c)^2``. Other vertices solve
    min ||L d||^2 (L the uniform graph Laplacian of the open mesh) with the contour displacements and zero
    displacement beyond ``NEUTRAL_FREE_RADIUS_MM`` (graph distance), at the outline, the eyes and brows.
    """
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.csgraph import shortest_path
    from scipy.sparse.linalg import spsolve

    n = sym.shape[0]
    iu, il = regions["lips_inner_upper"], regions["lips_inner_lower"][::-1]
    ou, ol = regions["lips_outer_upper"], regions["lips_outer_lower"][::-1]
    xc_old = np.abs(sym[ou, 0]).max()
    sx = 0.5 * NEUTRAL_MOUTH_WIDTH_MM / xc_old
    y0 = 0.5 * (sym[iu[len(iu) // 2], 1] + sym[il[len(il) // 2], 1])
    # the smiling lower lip is dropped and retracted: inner contours meet at their mean depth
    zmid = 0.5 * (sym[iu, 2] + sym[il, 2])
    dz = {False: zmid - sym[iu, 2], True: zmid - sym[il, 2]}
    target = {}
    for inner, outer, sign in ((iu, ou, 1.0), (il, ol, -1.0)):
        u = sym[inner, 0] / np.abs(sym[inner, 0]).max()
        ys = y0 + NEUTRAL_CORNER_RISE_MM * u**2 + sign * 0.5 * NEUTRAL_LIP_GAP_MM * (1.0 - u**2)
        gain = np.full(len(inner), NEUTRAL_VERMILION_GAIN)
        gain[[0, -1]] = 0.3  # the outer corners are squeezed onto the lip line, like the band beside them
        for ids, y_new in ((inner, ys), (outer, ys + gain * (sym[outer, 1] - sym[inner, 1]))):
            p = sym[ids].copy()
            uu = p[:, 0] / xc_old
            p[:, 0] *= sx
            p[:, 1] = y_new
            p[:, 2] += NEUTRAL_CORNER_FORWARD_MM * uu**2 + dz[inner is il]
            for i, q in zip(ids, p, strict=True):
                target[int(i)] = q
    # The two inner rings of the lip band (between the outer and inner contours) follow the contours by
    # inverse-distance weighting, so the thin corner triangles keep their order.
    from matplotlib.path import Path as PolyPath

    # Each band point follows its own lip (the one whose inner contour is nearer).
    outline = PolyPath(sym[np.concatenate([ou, ol[::-1][1:-1]]), :2])
    band = [i for i in np.flatnonzero(outline.contains_points(sym[:468, :2])) if int(i) not in target]
    lip_sets = [np.concatenate([iu, ou]), np.concatenate([il, ol])]
    moves = [np.array([target[int(i)] for i in c]) - sym[c] for c in lip_sets]
    for i in band:
        k = int(np.argmin([np.linalg.norm(sym[c[:11]] - sym[i], axis=1).min() for c in lip_sets]))
        wgt = np.linalg.norm(sym[lip_sets[k]] - sym[i], axis=1) ** -4.0
        q = sym[i] + wgt @ moves[k] / wgt.sum()
        # keep the band point at least NEUTRAL_BAND_MM off the closed lip line, on its own side
        inner = lip_sets[k][:11]
        tx, ty = (np.array([target[int(j)][c] for j in inner]) for c in (0, 1))
        line_y = np.interp(q[0], tx, ty)
        corner = inner[0] if q[0] < 0 else inner[-1]
        if abs(q[0]) >= abs(target[int(corner)][0]):  # beside the corner: on the lip line, squeezed
            q[1] = target[int(corner)][1] + 0.3 * (sym[i, 1] - sym[corner, 1])
        elif k == 0:
            q[1] = max(q[1], line_y + NEUTRAL_BAND_MM)
        else:
            q[1] = min(q[1], line_y - NEUTRAL_BAND_MM)
        target[int(i)] = q
    e = edges_of_tris(tris)
    w = np.linalg.norm(sym[e[:, 0]] - sym[e[:, 1]], axis=1)
    rows, cols = np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])
    graph = coo_matrix((np.concatenate([w, w]), (rows, cols)), shape=(n, n)).tocsr()
    lips = np.array(sorted(target))
    dist = shortest_path(graph, directed=False, indices=lips).min(0)
    fixed = (dist > NEUTRAL_FREE_RADIUS_MM) | (np.arange(n) >= 468)
    for name in ("outer_boundary", "right_brow", "left_brow", "right_eye_hole", "left_eye_hole"):
        fixed[regions[name]] = True
    fixed[:468] |= ~np.isin(np.arange(468), np.unique(tris))
    known = fixed.copy()
    known[lips] = True
    d = np.zeros((n, 3))
    d[lips] = np.array([target[int(i)] for i in lips]) - sym[lips]
    adj = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    deg = np.asarray(adj.sum(1)).ravel()
    lap = diags(np.maximum(deg, 1.0)) - adj
    lap = diags(1.0 / np.maximum(deg, 1.0)) @ lap
    q = (lap.T @ lap).tocsr()
    free = np.flatnonzero(~known)
    kn = np.flatnonzero(known)
    rhs = -(q[free][:, kn] @ d[kn])
    d[free] = spsolve(q[free][:, free].tocsc(), rhs).reshape(-1, 3)
    out = sym + d
    out = 0.5 * (out + out[mirror] * np.array([-1.0, 1.0, 1.0]))
    out[mirror == np.arange(n), 0] = 0.0
    return out - np.array([0.0, 1.0, 1.0]) * out[:468].mean(0)  # keep the origin at the mesh centroid


def edges_of_tris(tris):
    e = np.sort(np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0)


def main():
    import mediapipe as mp

    conn = mp.solutions.face_mesh_connections
    raw = astronaut_landmarks()
    perm, R = mirror_permutation(raw[:468])
    # iris twins: centres 468 <-> 473, ring points matched by mirrored position below
    x = (raw - raw[:468].mean(0)) @ R.T
    # yaw/pitch alignment: symmetry plane is x = 0 after R (up to roll); fix roll/pitch so that the
    # line between the eye centres is horizontal and the forehead-chin line lies in the y-z plane.
    full_perm = np.concatenate([perm, np.arange(468, 478)])
    m = x * np.array([-1.0, 1.0, 1.0])
    # iris: right centre 468 ring 469-472, left centre 473 ring 474-477
    for i in range(468, 478):
        cand = np.arange(473, 478) if i < 473 else np.arange(468, 473)
        full_perm[i] = cand[np.linalg.norm(m[cand] - x[i], axis=1).argmin()]
    sym = 0.5 * (x + m[full_perm])
    # pitch: make the face plane vertical: fit a plane to the 36-point face oval and rotate its normal to +z
    oval = sorted({a for e in conn.FACEMESH_FACE_OVAL for a in e})
    q = sym[oval] - sym[oval].mean(0)
    n = np.linalg.svd(q)[2][-1]
    n = n if n[2] > 0 else -n
    pitch = np.arctan2(n[1], n[2])
    c, s = np.cos(pitch), np.sin(pitch)
    rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    sym = sym @ rx.T  # row vectors: x @ R.T rotates by R
    sym = sym - sym[:468].mean(0)
    sym[full_perm == np.arange(478), 0] = 0.0
    ipd = np.linalg.norm(sym[468] - sym[473])
    sym = sym * (IPD_MM / ipd)

    tris, bad = tessellation_triangles(sorted(conn.FACEMESH_TESSELATION))
    assert len(bad) == 2, bad
    tris = orient(tris, sym)
    loops = boundary_loops(tris)
    loops.sort(key=len)
    lens = [len(loop) for loop in loops]
    assert lens == [16, 16, 20, 36], lens
    eye_a, eye_b, mouth, outer = loops
    # subject's right eye is on the image left (x < 0)
    if sym[eye_a, 0].mean() > 0:
        eye_a, eye_b = eye_b, eye_a
    right_eye, left_eye = eye_a, eye_b
    fill = {
        "mouth": ear_clip(mouth, sym[:, :2]),
        "right_eye": ear_clip(right_eye, sym[:, :2]),
        "left_eye": ear_clip(left_eye, sym[:, :2]),
    }
    fill = {k: orient(v, sym) for k, v in fill.items()}

    def split_loop(loop):
        """Split a closed contour at its extreme-x corners into (upper, lower), each from corner to corner."""
        loop = list(loop)
        i0 = int(np.argmin(sym[loop, 0]))
        loop = loop[i0:] + loop[:i0]
        i1 = int(np.argmax(sym[loop, 0]))
        a, b = loop[: i1 + 1], loop[i1:] + loop[:1]
        if sym[a, 1].mean() < sym[b, 1].mean():
            a, b = b, a
        return np.array(a, np.int32), np.array(b, np.int32)

    def verts_of(edges):
        return np.array(sorted({v for e in edges for v in e}), np.int32)

    def edge_loop(edges):
        adj = defaultdict(list)
        for a, b in edges:
            adj[a].append(b)
            adj[b].append(a)
        start = min(adj)
        loop, prev, v = [start], None, start
        while True:
            nxt = [u for u in adj[v] if u != prev]
            u = nxt[0] if prev is not None else adj[v][0]
            if u == start:
                break
            loop.append(u)
            prev, v = v, u
        return loop

    lips = sorted(conn.FACEMESH_LIPS)
    mouth_set = set(mouth)
    inner_edges = [e for e in lips if e[0] in mouth_set and e[1] in mouth_set]
    outer_edges = [e for e in lips if not (e[0] in mouth_set and e[1] in mouth_set)]
    inner_up, inner_lo = split_loop(edge_loop(inner_edges))
    outer_up, outer_lo = split_loop(edge_loop(outer_edges))
    reu, rel = split_loop(right_eye)
    leu, lel = split_loop(left_eye)

    y = sym[:, 1]
    xabs = np.abs(sym[:, 0])
    mesh = np.arange(468)
    brow_r, brow_l = verts_of(conn.FACEMESH_RIGHT_EYEBROW), verts_of(conn.FACEMESH_LEFT_EYEBROW)
    brow_y = sym[np.concatenate([brow_r, brow_l]), 1].min()
    nose = verts_of(conn.FACEMESH_NOSE)
    mouth_y = sym[np.concatenate([outer_up, outer_lo]), 1]
    lip_bottom = mouth_y.min()
    eye_bottom = sym[np.concatenate([rel, lel]), 1].min()
    mouth_halfwidth = np.abs(sym[np.concatenate([outer_up, outer_lo]), 0]).max()
    oval = verts_of(conn.FACEMESH_FACE_OVAL)
    forehead = mesh[(y[mesh] > brow_y + 4.0)]
    chin = mesh[(y[mesh] < lip_bottom - 4.0) & (xabs[mesh] < mouth_halfwidth * 1.1)]
    jaw = mesh[(y[mesh] < lip_bottom + 5.0) & (xabs[mesh] >= mouth_halfwidth * 1.1)]
    cheek = mesh[
        (y[mesh] < eye_bottom - 3.0)
        & (y[mesh] > lip_bottom + 5.0)
        & (xabs[mesh] > mouth_halfwidth * 0.75)
        & ~np.isin(mesh, nose)
    ]
    regions = {
        "lips_inner_upper": inner_up,
        "lips_inner_lower": inner_lo,
        "lips_outer_upper": outer_up,
        "lips_outer_lower": outer_lo,
        "lips": verts_of(lips),
        "right_eye_upper": reu,
        "right_eye_lower": rel,
        "left_eye_upper": leu,
        "left_eye_lower": lel,
        "right_brow": brow_r,
        "left_brow": brow_l,
        "nose": nose,
        "face_oval": np.array(edge_loop(sorted(conn.FACEMESH_FACE_OVAL)), np.int32),
        "right_iris": np.arange(468, 473, dtype=np.int32),
        "left_iris": np.arange(473, 478, dtype=np.int32),
        "forehead": forehead.astype(np.int32),
        "chin": chin.astype(np.int32),
        "jaw": jaw.astype(np.int32),
        "right_cheek": cheek[sym[cheek, 0] < 0].astype(np.int32),
        "left_cheek": cheek[sym[cheek, 0] > 0].astype(np.int32),
        "mouth_hole": np.array(mouth, np.int32),
        "right_eye_hole": np.array(right_eye, np.int32),
        "left_eye_hole": np.array(left_eye, np.int32),
        "outer_boundary": np.array(outer, np.int32),
    }
    neutral = neutralise_mouth(sym, tris, regions, full_perm)
    arrays = {
        "template": neutral.astype(np.float32),
        "triangles": tris.astype(np.int32),
        "fill_mouth": fill["mouth"],
        "fill_right_eye": fill["right_eye"],
        "fill_left_eye": fill["left_eye"],
        "mirror": full_perm.astype(np.int32),
    }
    arrays.update({f"region_{k}": v for k, v in regions.items()})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT}: {len(tris)} triangles + fills {[len(v) for v in fill.values()]}")
    for k, v in regions.items():
        print(f"  {k:18s} {len(v)}")


if __name__ == "__main__":
    main()
