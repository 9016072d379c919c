"""Facial Action Unit fields: smooth 3D deformations on the FaceMesh topology, one per AU (and side).

The default affect model needs no data: FACS Action Units (AUs) are written as smooth deformation fields on
the FaceMesh topology, a V-A -> AU-intensity map places emotion prototypes (EMFACS patterns) at published
V-A anchors, and synthetic subjects (identity variation x per-subject AU gains) run neutral -> apex
sequences along many V-A directions. Those frames go through the same gallery builder as a real corpus.
An importer turns the ICT-FaceKit rig (MIT) into AU fields on our topology, so the same generator builds a
model from an artist/scan-made rig.

Conventions: canonical frame of ``topology.py`` (mm; x = image right = subject's LEFT, y up, z towards the
camera). Fields are at intensity 1 (apex); magnitudes are written for the 63 mm inter-pupil template and
scale with the inter-pupil distance of the topology's template. "L" = subject's left (x > 0).
"""

import dataclasses
import functools

import numpy as np

from ..face import topology as topo

AU_NAMES: tuple[str, ...] = (
    "AU1",
    "AU2",
    "AU4",
    "AU5",
    "AU6",
    "AU7",
    "AU9",
    "AU10",
    "AU12",
    "AU14",
    "AU15",
    "AU16",
    "AU17",
    "AU20",
    "AU23",
    "AU24",
    "AU25",
    "AU26",
    "AU27",
    "AU43",
)
"""The Action Units of the expression basis (bilateral fields), in basis order."""

LATERAL_AUS: tuple[str, ...] = (
    "AU1",
    "AU2",
    "AU4",
    "AU5",
    "AU6",
    "AU7",
    "AU10",
    "AU12",
    "AU14",
    "AU15",
    "AU20",
    "AU43",
)
"""AUs that also come as one-sided fields ``AUnL`` / ``AUnR`` (the bilateral field is their sum)."""

AU_DESCRIPTIONS: dict[str, str] = {
    "AU1": "inner brow raiser",
    "AU2": "outer brow raiser",
    "AU4": "brow lowerer",
    "AU5": "upper lid raiser",
    "AU6": "cheek raiser",
    "AU7": "lid tightener",
    "AU9": "nose wrinkler",
    "AU10": "upper lip raiser",
    "AU12": "lip corner puller",
    "AU14": "dimpler",
    "AU15": "lip corner depressor",
    "AU16": "lower lip depressor",
    "AU17": "chin raiser",
    "AU20": "lip stretcher",
    "AU23": "lip tightener",
    "AU24": "lip presser",
    "AU25": "lips part",
    "AU26": "jaw drop",
    "AU27": "mouth stretch",
    "AU43": "eyes closed",
}

JAW_DROP_DEG = 9.0
"""Jaw rotation of AU26 at intensity 1 (about 13 mm incisor opening for a 63 mm inter-pupil face)."""
MOUTH_STRETCH_DEG = 20.0
"""Jaw rotation of AU27 at intensity 1."""
LID_CLOSE_FRACTION = 0.97
"""AU43 at intensity 1 brings the upper lid this fraction of the way to the lower lid (never past it)."""


# --------------------------------------------------------------------------------------------------------
# Geometry shared by the fields (NumPy, host side, built once per topology)


@dataclasses.dataclass(frozen=True, eq=False)
class _Geometry:
    x: np.ndarray  # f64[V, 3] template
    s: float  # scale: inter-pupil distance / 63 mm
    dist: np.ndarray  # f64[V, V] graph distances over the open mesh (inf for unconnected points)
    t: topo.FaceTopology

    def r(self, name: str) -> np.ndarray:
        return self.t.region(name)


def _geometry(t: topo.FaceTopology) -> _Geometry:
    x = t.template.astype(np.float64)
    s = t.interocular(x) / topo.IPD_MM
    d = topo.graph_distances(x, t.triangles)
    return _Geometry(x=x, s=s, dist=d, t=t)


def _rbf(g: _Geometry, anchors, vectors, sigma: float, pins=(), exact: bool = False) -> np.ndarray:
    """Smooth field from anchor displacements: normalised Gaussian weights in graph distance.

    :math:`f_i = \\sum_a w_{ai} v_a / (1 + S_i^8)^{1/8}`, :math:`w_{ai} = \\exp(-d_{ai}^2 / 2\\sigma^2)`,
    :math:`S_i = \\sum_a w_{ai}`: near the anchors an average of their vectors, far away a Gaussian decay.
    ``pins`` are anchors with zero displacement (keep e.g. the other lip or eyelid still). Graph distance
    over the open mesh respects the mouth and eye holes. ``exact``: anchors and pins get exactly their
    vectors (contours that must land somewhere, such as a closing eyelid).
    """
    anchors = np.asarray(anchors, np.int64)
    vectors = np.asarray(vectors, np.float64).reshape(-1, 3)
    pins = np.asarray(pins, np.int64)
    idx = np.concatenate([anchors, pins])
    vec = np.concatenate([vectors * g.s, np.zeros((len(pins), 3))])
    d = g.dist[idx]
    w = np.where(np.isfinite(d), np.exp(-0.5 * (np.nan_to_num(d, posinf=1e9) / (sigma * g.s)) ** 2), 0.0)
    ssum = w.sum(0)
    out = (w.T @ vec) / ((1.0 + ssum**8) ** 0.125)[:, None]
    if exact:
        out[idx] = vec
    return out


def _left(g: _Geometry, ids) -> np.ndarray:
    """Ids on the subject's left half (x >= 0, midline included)."""
    ids = np.asarray(ids)
    return ids[g.x[ids, 0] >= -1e-6]


def _midline_half(g: _Geometry, ids) -> np.ndarray:
    """Per-id factor 1/2 on the midline (x = 0): a left field + its mirror then counts midline points once."""
    return np.where(np.abs(g.x[np.asarray(ids), 0]) < 1e-4, 0.5, 1.0)


def _smoothstep(t):
    """3t^2 - 2t^3 on [0, 1], clamped outside."""
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _profile(n: int) -> np.ndarray:
    """sin(pi t) along a contour of n points, corner to corner (0 at both corners)."""
    return np.sin(np.pi * np.linspace(0.0, 1.0, n))


def _mirror_field(t: topo.FaceTopology, f: np.ndarray) -> np.ndarray:
    return f[t.mirror] * np.array([-1.0, 1.0, 1.0])


def _lip_pairs(t: topo.FaceTopology) -> tuple[np.ndarray, np.ndarray]:
    """Inner upper / inner lower lip points paired by index (same x in the symmetric template)."""
    return t.region("lips_inner_upper"), t.region("lips_inner_lower")[::-1]


def _lid_pairs(t: topo.FaceTopology, side: str) -> tuple[np.ndarray, np.ndarray]:
    return t.region(f"{side}_eye_upper"), t.region(f"{side}_eye_lower")[::-1]


def _lip_halves(t: topo.FaceTopology, g: "_Geometry") -> tuple[np.ndarray, np.ndarray]:
    """All points of the upper lip and of the lower lip (contours + the rings between), corners in both."""
    from matplotlib.path import Path as PolyPath

    x = g.x
    iu, il = _lip_pairs(t)
    ou, ol = t.region("lips_outer_upper"), t.region("lips_outer_lower")
    outline = PolyPath(x[np.concatenate([ou, ol[1:-1]]), :2])
    inside = np.flatnonzero(outline.contains_points(x[: topo.NUM_MESH_POINTS, :2], radius=1e-6))
    inside = np.unique(np.concatenate([inside, iu, il, ou, ol]))
    du = np.nan_to_num(g.dist[iu][:, inside].min(0), posinf=1e9)
    dl = np.nan_to_num(g.dist[il][:, inside].min(0), posinf=1e9)
    corners = [iu[0], iu[-1], ou[0], ou[-1]]
    upper = np.union1d(inside[du <= dl], corners)
    lower = np.union1d(inside[dl <= du], corners)
    return upper, lower


def _seal_lips(t: topo.FaceTopology, f: np.ndarray) -> np.ndarray:
    """Make a field unable to make the lips cross, alone or in any non-negative combination.

    Paired inner-lip points get the same x displacement (their mean), and the upper one never moves down
    relative to the lower one: where it would, the lip that moves more drags the other along.
    """
    f = f.copy()
    up, lo = _lip_pairs(t)
    mx = 0.5 * (f[up, 0] + f[lo, 0])
    f[up, 0] = mx
    f[lo, 0] = mx
    du, dl = f[up, 1], f[lo, 1]
    bad = du < dl
    upper_drives = np.abs(du) > np.abs(dl)
    f[up, 1] = np.where(bad & ~upper_drives, dl, du)
    f[lo, 1] = np.where(bad & upper_drives, du, dl)
    return f


# --------------------------------------------------------------------------------------------------------
# The Action Unit fields


def _left_fields(g: _Geometry) -> dict[str, np.ndarray]:
    """Subject's-left (x > 0) halves of all AUs: lateral ones are mirrored, midline ones summed with it."""
    x = g.x
    t = g.t
    lb = t.region("left_brow")
    ax = np.abs(x[lb, 0])
    u_brow = (ax - ax.min()) / (ax.max() - ax.min())  # 0 inner .. 1 outer
    le_up, le_lo = _lid_pairs(t, "left")
    iu, il = _lip_pairs(t)
    ou, ol = t.region("lips_outer_upper"), t.region("lips_outer_lower")[::-1]
    xc = np.abs(x[ou, 0]).max()
    corner_in, corner_out = iu[-1], ou[-1]  # left inner / outer lip corners (x > 0)
    lips_all = np.unique(np.concatenate([iu, il, ou, ol]))
    near_corner = np.flatnonzero(
        (np.linalg.norm(x - x[corner_in], axis=1) < 4.0 * g.s) & (np.arange(len(x)) < topo.NUM_MESH_POINTS)
    )
    corners = np.unique(np.concatenate([[corner_in, corner_out], near_corner]))
    upper_lip = np.concatenate([iu, ou])
    lower_lip = np.concatenate([il, ol])
    pupil = x[topo.LEFT_PUPIL]
    mesh = np.arange(topo.NUM_MESH_POINTS)
    eye_hole = t.region("left_eye_hole")
    nose = t.region("nose")
    malar = mesh[
        (x[mesh, 0] > 34.0 * g.s)
        & (x[mesh, 0] < 66.0 * g.s)
        & (x[mesh, 1] < pupil[1] - 9.0 * g.s)
        & (x[mesh, 1] > pupil[1] - 66.0 * g.s)
        & ~np.isin(mesh, nose)
    ]
    chin = _left(g, t.region("chin"))
    # under the nose tip (alae, columella, subnasale = FaceMesh 2): thin triangles that the mouth AUs must not
    # fold; lip fields fade smoothly from the upper lip's top (FaceMesh 0) to 0 at the subnasale
    nose_base = nose[x[nose, 1] < x[4, 1]]
    under_nose = (1.0 - _smoothstep((x[:, 1] - x[0, 1]) / (x[2, 1] - x[0, 1])))[:, None]
    f: dict[str, np.ndarray] = {}

    # Brows (AU1, AU2, AU4): inner/outer halves of the left brow; the lids stay pinned.
    lid_pins = np.concatenate([le_up, le_lo])
    w_in = np.clip(1.3 - 1.3 * u_brow, 0.0, 1.0)
    w_out = np.clip(1.3 * u_brow - 0.3, 0.0, 1.0)
    # The other brow is pinned, so the midline gets half from each side and L + R counts it once.
    rb = t.mirror[lb]
    f["AU1"] = _rbf(g, lb, np.outer(w_in, [-0.5, 5.8, 0.8]), 14.0, pins=np.concatenate([le_lo, rb]))
    f["AU2"] = _rbf(g, lb, np.outer(w_out, [0.5, 8.6, 0.8]), 14.0, pins=np.concatenate([le_lo, rb]))
    au4 = np.stack([-3.0 - 0.9 * (1.0 - u_brow), -3.2 - 0.5 * (1.0 - u_brow), 2.0 + 0 * u_brow], axis=1)
    f["AU4"] = _rbf(g, lb, au4, 10.0, pins=np.concatenate([le_lo, rb]))

    # Eyelids (AU5, AU7, AU43): upper and lower contours moved separately, the other contour pinned.
    p_up, p_lo = _profile(len(le_up)), _profile(len(le_lo))
    f["AU5"] = _rbf(g, le_up, np.outer(p_up, [0.3, 2.8, -0.6]), 7.0, pins=le_lo)
    lo_y = np.interp(x[le_up, 0], x[le_lo, 0], x[le_lo, 1]) if x[le_lo[0], 0] < x[le_lo[-1], 0] else None
    if lo_y is None:  # np.interp needs increasing sample points
        order = np.argsort(x[le_lo, 0])
        lo_y = np.interp(x[le_up, 0], x[le_lo, 0][order], x[le_lo, 1][order])
        lo_z = np.interp(x[le_up, 0], x[le_lo, 0][order], x[le_lo, 2][order])
    else:
        lo_z = np.interp(x[le_up, 0], x[le_lo, 0], x[le_lo, 2])
    # tapered towards the corners (where the lids already meet) so the corner triangles keep their order
    taper = (LID_CLOSE_FRACTION * p_up**0.25)[:, None]
    close = np.stack([0 * lo_y, lo_y - x[le_up, 1], lo_z - x[le_up, 2]], axis=1) * taper
    # the ring of skin just above the lid contour follows its nearest lid point (keeps the fold ordered)
    ring = np.flatnonzero(np.nan_to_num(g.dist[le_up], posinf=1e9).min(0) < 6.0 * g.s)
    ring = ring[~np.isin(ring, np.concatenate([le_up, le_lo]))]
    near = np.argmin(g.dist[le_up][:, ring], axis=0)
    a43 = np.concatenate([le_up, ring])
    v43 = np.concatenate([close, 0.7 * close[near]]) / g.s
    f["AU43"] = _rbf(g, a43, v43, 6.0, pins=le_lo, exact=True)
    # AU7 lid tightener: lower lid up and in with the skin below it, upper lid a little down.
    below = np.flatnonzero(np.nan_to_num(g.dist[le_lo], posinf=1e9).min(0) < 9.0 * g.s)
    below = below[(x[below, 1] < x[le_lo, 1].min()) & (below < topo.NUM_MESH_POINTS)]
    near_lo = p_lo[np.argmin(g.dist[le_lo][:, below], axis=0)]  # fades at the eye corners, like the lid
    lids7 = np.concatenate(
        [
            np.outer(p_up, [0.0, -0.8, 0.0]),
            np.outer(p_lo, [-1.5, 2.2, 0.8]),
            np.outer(0.3 + 0.7 * near_lo, [-2.0, 2.0, 0.7]),
        ]
    )
    f["AU7"] = _rbf(g, np.concatenate([le_up, le_lo, below]), lids7, 5.0, exact=True)

    # AU6 cheek raiser: malar skin up, lower lid pushed up, upper lid pinned.
    anchors6 = np.concatenate([malar, le_lo])
    vec6 = np.concatenate([np.tile([-0.6, 4.8, 2.4], (len(malar), 1)), np.outer(p_lo, [0.0, 2.0, 0.4])])
    f["AU6"] = _rbf(g, anchors6, vec6, 10.0, pins=le_up)

    # AU9 nose wrinkler: nose sides up, inner brow down (procerus), upper lip a little up.
    nose_l = nose[(x[nose, 0] > 2.0 * g.s) & (x[nose, 1] < x[4, 1] + 6.0 * g.s)]  # alae, not the bridge
    inner_brow = lb[u_brow < 0.35]
    ou_l = _left(g, ou)
    # the nasolabial skin beside the nose rises with the alae (ICT noseSneer: ~9 mm)
    beside = mesh[
        (x[mesh, 0] > 8.0 * g.s)
        & (x[mesh, 0] < 48.0 * g.s)
        & (x[mesh, 1] < x[4, 1] + 4.0 * g.s)
        & (x[mesh, 1] > x[corner_out, 1] + 4.0 * g.s)
        & ~np.isin(mesh, nose)
    ]
    nose_mid = nose[np.abs(x[nose, 0]) < 1e-4]  # half per side: the columella and bridge move less
    a9 = np.concatenate([nose_l, beside, inner_brow, ou_l, nose_mid])
    v9 = np.concatenate(
        [
            np.tile([-0.4, 6.6, 1.8], (len(nose_l), 1)),
            np.tile([-1.2, 7.0, 2.2], (len(beside), 1)),
            np.tile([-0.5, -2.0, 0.0], (len(inner_brow), 1)),
            np.outer(_midline_half(g, ou_l), [0.0, 4.5, 0.3]),
            np.tile([0.0, 1.5, 0.3], (len(nose_mid), 1)),
        ]
    )
    f["AU9"] = _rbf(
        g,
        a9,
        v9,
        9.0,
        pins=np.concatenate([np.setdiff1d(lower_lip, corners), lid_pins, t.mirror[nose_l], rb]),
    )

    # AU10 upper lip raiser: upper lip contours up (more laterally), lower lip pinned.
    up_l = _left(g, upper_lip)
    tu = np.abs(x[up_l, 0]) / xc
    v10 = np.stack([0 * tu, 3.6 * (1.0 - 0.1 * tu), 0.7 + 0 * tu], axis=1) * _midline_half(g, up_l)[:, None]
    f["AU10"] = _rbf(g, up_l, v10, 8.0, pins=lower_lip) * under_nose

    # Lip corner AUs (12, 14, 15, 20): the left corner region moves, the far (right) corner is pinned. The
    # lips' midline takes part at half weight per side: a real smile lifts the whole mouth (ICT mouthSmile:
    # corner 14 mm, upper-lip centre 3.5 mm; London smiles: upper-lip centre up 0.025 IOD), so it is not
    # pinned; the depressor and the stretcher move it a little with the corners.
    lips_all = np.concatenate([upper_lip, lower_lip])
    mid_up = upper_lip[np.abs(x[upper_lip, 0]) < 1e-4]
    mid_lo = lower_lip[np.abs(x[lower_lip, 0]) < 1e-4]
    far = np.concatenate([t.mirror[corners], nose_base])

    def corner_field(corner_vec, up_vec, lo_vec, sigma):
        a = np.concatenate([corners, mid_up, mid_lo])
        v = np.concatenate(
            [
                np.tile(corner_vec, (len(corners), 1)),
                np.tile(up_vec, (len(mid_up), 1)),
                np.tile(lo_vec, (len(mid_lo), 1)),
            ]
        )
        return _rbf(g, a, v, sigma, pins=far)

    # Each side's field reaches across the midline, so L + R would double the lips' centre there: the
    # centre is tapered to half below the nose (both sides together then lift it ~3.5 mm, as ICT does).
    nose_tip_y, corner_y = x[4, 1], x[corner_out, 1]
    above = _smoothstep((x[:, 1] - corner_y) / max(nose_tip_y - corner_y, 1e-6))
    lateral = 0.5 + 0.5 * _smoothstep(np.abs(x[:, 0]) / xc)
    taper = (above + (1.0 - above) * lateral)[:, None]
    f["AU12"] = taper * corner_field([6.6, 9.4, -7.2], [0.0, 1.0, -0.7], [0.0, 0.9, -0.4], 14.0)
    f["AU14"] = corner_field([-2.0, 1.0, -4.5], [0.0, 0.0, -0.5], [0.0, 0.0, -0.5], 8.0)
    f["AU15"] = corner_field([1.6, -4.4, -2.8], [0.0, -0.3, 0.0], [0.0, -0.5, 0.0], 10.0)
    f["AU20"] = corner_field([5.8, -2.0, -6.0], [0.0, -0.2, -0.5], [0.0, -0.4, -0.5], 12.0)

    # AU16 lower lip depressor: lower lip down and out, upper lip pinned.
    lo_l = _left(g, lower_lip)
    tl = np.abs(x[lo_l, 0]) / xc
    v16 = (
        np.stack([0.4 * tl, -4.0 * (1.0 - 0.5 * tl**2), -1.4 + 0.0 * tl], axis=1)
        * _midline_half(g, lo_l)[:, None]
    )
    v16c = np.outer(_midline_half(g, chin), [0.0, -3.2, -2.2])  # ICT's depressor takes the chin along
    f["AU16"] = _rbf(g, np.concatenate([lo_l, chin]), np.concatenate([v16, v16c]), 10.0, pins=upper_lip)

    # AU17 chin raiser: chin up and forward, lower lip pushed up (the seal drags the upper lip along).
    # The whole mouth (both lips, contours and the rings between) rises together, so the lips stay closed.
    upper_all, lower_all = _lip_halves(t, g)
    mouth_l = _left(g, np.union1d(upper_all, lower_all))
    tm = np.abs(x[mouth_l, 0]) / xc
    a17 = np.concatenate([chin, mouth_l])
    v17 = np.concatenate(
        [
            np.tile([0.0, 6.4, 2.1], (len(chin), 1)) * _midline_half(g, chin)[:, None],
            np.stack([0 * tm, 3.9 * (1 - 0.5 * tm**2), 3.5 + 0 * tm], 1) * _midline_half(g, mouth_l)[:, None],
        ]
    )
    f["AU17"] = _rbf(g, a17, v17, 10.0) * under_nose

    # AU23 lip tightener / AU24 lip presser: vermilion thinned towards the lip line, corners inwards.
    ou_l, ol_l = _left(g, ou), _left(g, ol)
    a23 = np.concatenate([ou_l, ol_l, corners])
    v23 = np.concatenate(
        [
            np.outer(_midline_half(g, ou_l), [0.0, -1.6, 0.3]),
            np.outer(_midline_half(g, ol_l), [0.0, 1.6, 0.3]),
            np.tile([-1.8, 0.0, 0.5], (len(corners), 1)),
        ]
    )
    inner_pins = np.concatenate([iu, il])[~np.isin(np.concatenate([iu, il]), corners)]
    f["AU23"] = _rbf(g, a23, v23, 5.0, pins=inner_pins)
    a24 = np.concatenate([ou_l, ol_l, corners, chin])
    v24 = np.concatenate(
        [
            np.outer(_midline_half(g, ou_l), [0.0, -0.8, -0.3]),
            np.outer(_midline_half(g, ol_l), [0.0, 2.0, 0.3]),
            np.tile([-1.0, 0.0, 0.0], (len(corners), 1)),
            np.outer(_midline_half(g, chin), [0.0, 4.0, 1.8]),
        ]
    )
    f["AU24"] = _rbf(g, a24, v24, 6.0, pins=inner_pins)

    # AU25 lips part: inner contours apart (upper up, lower down), zero at the corners.
    iu_l, il_l = _left(g, iu), _left(g, il)
    pu = np.cos(0.5 * np.pi * np.abs(x[iu_l, 0]) / np.abs(x[iu, 0]).max())
    pl = np.cos(0.5 * np.pi * np.abs(x[il_l, 0]) / np.abs(x[il, 0]).max())
    ou_w = np.cos(0.5 * np.pi * np.abs(x[ou_l, 0]) / xc)
    ol_w = np.cos(0.5 * np.pi * np.abs(x[ol_l, 0]) / xc)
    a25 = np.concatenate([iu_l, il_l, ou_l, ol_l])
    v25 = np.concatenate(
        [
            np.outer(pu * _midline_half(g, iu_l), [0.0, 1.5, 0.0]),
            np.outer(pl * _midline_half(g, il_l), [0.0, -2.5, 0.0]),
            np.outer(ou_w * _midline_half(g, ou_l), [0.0, 0.8, 0.0]),
            np.outer(ol_w * _midline_half(g, ol_l), [0.0, -1.4, 0.0]),
        ]
    )
    f["AU25"] = _rbf(g, a25, v25, 5.0)
    del lips_all, eye_hole
    return f


def _jaw_field(g: _Geometry, degrees: float) -> np.ndarray:
    """Rotation of the lower face about a left-right jaw axis near the ears, blended by a smooth weight.

    The axis runs along x through a point 0.75 IPD below the pupils and 1.3 IPD behind them (the
    temporomandibular joints). Weight 1 on the chin, jaw and lower lip; the upper lip stays (its corners
    follow halfway); elsewhere a Gaussian falloff (12 mm) in graph distance from the mandible points.
    """
    t, x = g.t, g.x
    pup = 0.5 * (x[topo.LEFT_PUPIL] + x[topo.RIGHT_PUPIL])
    ipd = topo.IPD_MM * g.s
    centre = np.array([0.0, pup[1] - 0.75 * ipd, pup[2] - 1.3 * ipd])
    iu, il = _lip_pairs(t)
    ou = t.region("lips_outer_upper")
    upper, lower = _lip_halves(t, g)
    mesh = np.arange(topo.NUM_MESH_POINTS)
    below = mesh[x[mesh, 1] < x[lower, 1].min()]
    mandible = np.unique(np.concatenate([t.region("chin"), t.region("jaw"), lower, below]))
    mandible = mandible[~np.isin(mandible, upper)]
    d = np.nan_to_num(g.dist[mandible].min(0), posinf=1e9)
    w = np.exp(-0.5 * (d / (12.0 * g.s)) ** 2)
    xc = np.abs(x[ou, 0]).max()
    w[upper] = 0.5 * (np.abs(x[upper, 0]) / xc) ** 4
    w[mandible] = 1.0
    w[np.intersect1d(upper, lower)] = 0.5  # the points at the mouth corners belong to both lips
    w[topo.NUM_MESH_POINTS :] = 0.0
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])  # positive angle: chin down and back
    moved = (x - centre) @ rot.T + centre
    return w[:, None] * (moved - x)


@functools.cache
def _default_fields() -> dict[str, np.ndarray]:
    return _build_fields(topo.face_topology())


def _build_fields(t: topo.FaceTopology) -> dict[str, np.ndarray]:
    g = _geometry(t)
    left = _left_fields(g)
    out: dict[str, np.ndarray] = {}
    for name, fl in left.items():
        fl = _seal_lips(t, fl)
        fr = _mirror_field(t, fl)
        if name in LATERAL_AUS:
            out[name + "L"] = fl
            out[name + "R"] = fr
        out[name] = fl + fr
    jaw26 = _jaw_field(g, JAW_DROP_DEG)
    jaw27 = _jaw_field(g, MOUTH_STRETCH_DEG)
    # AU27 also stretches the lips: corners inwards and the upper lip up a little.
    stretch = _left_fields_stretch(g)
    for name, fld in (("AU26", jaw26), ("AU27", jaw27 + stretch + _mirror_field(t, stretch))):
        fld = 0.5 * (fld + _mirror_field(t, fld))
        out[name] = _seal_lips(t, fld)
    out = {k: v.astype(np.float32) for k, v in out.items()}
    for k in out:
        out[k].setflags(write=False)
    return out


def _left_fields_stretch(g: _Geometry) -> np.ndarray:
    t, x = g.t, g.x
    iu, _ = _lip_pairs(t)
    ou = t.region("lips_outer_upper")
    up_l = _left(g, np.concatenate([iu, ou]))
    corner = np.array([iu[-1], ou[-1]])
    tu = np.abs(x[up_l, 0]) / np.abs(x[ou, 0]).max()
    a = np.concatenate([up_l, corner])
    v = np.concatenate(
        [
            np.outer((1.0 - tu**2) * _midline_half(g, up_l), [0.0, 1.5, 0.0]),
            np.tile([-3.0, -1.0, 0.0], (2, 1)),
        ]
    )
    return _rbf(g, a, v, 6.0)


def action_unit_fields(topology: topo.FaceTopology | None = None) -> dict[str, np.ndarray]:
    """Action Unit deformation fields on the FaceMesh topology, at intensity 1 (apex), in canonical mm.

    Keys "AU1" ... "AU43" (see ``AU_NAMES``) and one-sided "AUnL"/"AUnR" for ``LATERAL_AUS`` (the bilateral
    field is L + R; L is the subject's left, x > 0). Each field is a normalised Gaussian interpolation of
    anatomically directed anchor displacements in graph distance over the open mesh (so the lips and the
    lids move as separate contours), scaled by the template's inter-pupil distance / 63 mm; AU26/AU27 rotate
    the lower face about a jaw axis near the ears. Lip fields are sealed: the inner contours cannot cross
    under any non-negative combination.

    Args:
        topology: a ``FaceTopology`` (default: the shipped one; its fields are cached, read-only).

    Returns:
        name -> f32[478, 3].
    """
    if topology is None:
        return dict(_default_fields())
    return _build_fields(topology)


def expression_basis(
    topology: topo.FaceTopology | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The AU fields as a morphable-model expression basis.

    Returns:
        (basis f32[K, 478, 3] in ``AU_NAMES`` order at intensity 1, prior std f32[K] of the intensities
        (0.5: an intensity of 1 is a two-sigma apex), names).
    """
    f = action_unit_fields(topology)
    basis = np.stack([f[n] for n in AU_NAMES]).astype(np.float32)
    return basis, np.full(len(AU_NAMES), 0.5, np.float32), AU_NAMES
