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

from .._smooth import smoothstep as _smoothstep
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

LID_CLOSE_FRACTION = 0.97
"""AU43 at intensity 1 brings the template's upper lid this fraction of the way to the lower lid (never past
it). On a photo the pipeline closes the same share of that face's own opening (``lids.lid_share``)."""


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


def _profile(n: int) -> np.ndarray:
    """sin(pi t) along a contour of n points, corner to corner (0 at both corners)."""
    return np.sin(np.pi * np.linspace(0.0, 1.0, n))


def _mirror_field(t: topo.FaceTopology, f: np.ndarray) -> np.ndarray:
    return f[t.mirror] * np.array([-1.0, 1.0, 1.0])


def _lid_pairs(t: topo.FaceTopology, side: str) -> tuple[np.ndarray, np.ndarray]:
    return t.region(f"{side}_eye_upper"), t.region(f"{side}_eye_lower")[::-1]


def _lip_halves(t: topo.FaceTopology, g: "_Geometry") -> tuple[np.ndarray, np.ndarray]:
    """All points of the upper lip and of the lower lip (contours + the rings between), corners in both."""
    from matplotlib.path import Path as PolyPath

    x = g.x
    iu, il = t.inner_lip_pairs()
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
    up, lo = t.inner_lip_pairs()
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
# The Action Unit fields: named point sets, then one spec per AU


def _point_sets(g: _Geometry) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Named point sets of the subject's left half that the AU specs move or pin, and per-point weights
    (profiles along a contour, distances along the brow or the lips) keyed "set.weight", aligned with them."""
    x, t, s = g.x, g.t, g.s
    lb = t.region("left_brow")
    ax = np.abs(x[lb, 0])
    u = (ax - ax.min()) / (ax.max() - ax.min())  # 0 inner .. 1 outer
    le_up, le_lo = _lid_pairs(t, "left")
    iu, il = t.inner_lip_pairs()
    ou, ol = t.region("lips_outer_upper"), t.region("lips_outer_lower")[::-1]
    xc = np.abs(x[ou, 0]).max()
    corner_in, corner_out = iu[-1], ou[-1]  # left inner / outer lip corners (x > 0)
    mesh = np.arange(topo.NUM_MESH_POINTS)
    near_corner = mesh[np.linalg.norm(x[mesh] - x[corner_in], axis=1) < 4.0 * s]
    corners = np.unique(np.concatenate([[corner_in, corner_out], near_corner]))
    upper_lip, lower_lip = np.concatenate([iu, ou]), np.concatenate([il, ol])
    nose, pupil_y, tip_y = t.region("nose"), x[topo.LEFT_PUPIL, 1], x[4, 1]

    def box(x0, x1, y0, y1):  # left-half mesh points in a box, off the nose
        xs, ys = x[mesh, 0], x[mesh, 1]
        return mesh[(xs > x0 * s) & (xs < x1 * s) & (ys > y0) & (ys < y1) & ~np.isin(mesh, nose)]

    dist_lo = np.nan_to_num(g.dist[le_lo], posinf=1e9)
    below = mesh[(dist_lo[:, mesh].min(0) < 9.0 * s) & (x[mesh, 1] < x[le_lo, 1].min())]
    upper_all, lower_all = _lip_halves(t, g)
    sets = {
        "brow": lb,
        "inner_brow": lb[u < 0.35],
        "right_brow": t.mirror[lb],
        "lid_up": le_up,
        "lid_lo": le_lo,
        "below_lid": below,  # skin under the lower lid
        "malar": box(34.0, 66.0, pupil_y - 66.0 * s, pupil_y - 9.0 * s),
        "alae": nose[(x[nose, 0] > 2.0 * s) & (x[nose, 1] < tip_y + 6.0 * s)],
        "right_alae": t.mirror[nose[(x[nose, 0] > 2.0 * s) & (x[nose, 1] < tip_y + 6.0 * s)]],
        "smile_cheek": box(30.0, 56.0, tip_y - 14.0 * s, tip_y + 3.0 * s),  # above the nasolabial fold
        "beside_nose": box(8.0, 48.0, x[corner_out, 1] + 4.0 * s, tip_y + 4.0 * s),  # nasolabial skin
        "nose_mid": nose[np.abs(x[nose, 0]) < 1e-4],
        "corners": corners,
        "right_corners": t.mirror[corners],
        "nose_base": nose[x[nose, 1] < tip_y],
        "mid_up": upper_lip[np.abs(x[upper_lip, 0]) < 1e-4],
        "mid_lo": lower_lip[np.abs(x[lower_lip, 0]) < 1e-4],
        "mid_up_in": iu[np.abs(x[iu, 0]) < 1e-4],
        "mid_up_out": ou[np.abs(x[ou, 0]) < 1e-4],
        "mid_lo_in": il[np.abs(x[il, 0]) < 1e-4],
        "mid_lo_out": ol[np.abs(x[ol, 0]) < 1e-4],
        "upper_lip": upper_lip,
        "lower_lip": lower_lip,
        "lower_lip_off_corners": np.setdiff1d(lower_lip, corners),
        "inner_lips_off_corners": np.setdiff1d(np.concatenate([iu, il]), corners),
        "upper_lip_l": _left(g, upper_lip),
        "lower_lip_l": _left(g, lower_lip),
        "outer_up_l": _left(g, ou),
        "outer_lo_l": _left(g, ol),
        "inner_up_l": _left(g, iu),
        "inner_lo_l": _left(g, il),
        "mouth_l": _left(g, np.union1d(upper_all, lower_all)),
        "chin": _left(g, t.region("chin")),
    }
    near_lo = _profile(len(le_lo))[np.argmin(dist_lo[:, below], axis=0)]

    def across(name, width):  # |x| / width at the set's points
        return np.abs(x[sets[name], 0]) / width

    weights = {
        "brow.in": np.clip(1.3 - 1.3 * u, 0.0, 1.0),
        "brow.out": np.clip(1.3 * u - 0.3, 0.0, 1.0),
        "brow.toward_in": 1.0 - u,
        "lid_up.profile": _profile(len(le_up)),
        "lid_lo.profile": _profile(len(le_lo)),
        "below_lid.profile": 0.3 + 0.7 * near_lo,  # fades at the eye corners, like the lid
        "upper_lip_l.across": across("upper_lip_l", xc),
        "lower_lip_l.across": across("lower_lip_l", xc),
        "lower_lip_l.across2": across("lower_lip_l", xc) ** 2,
        "mouth_l.across2": across("mouth_l", xc) ** 2,
        "inner_up_l.cos": np.cos(0.5 * np.pi * across("inner_up_l", np.abs(x[iu, 0]).max())),
        "inner_lo_l.cos": np.cos(0.5 * np.pi * across("inner_lo_l", np.abs(x[il, 0]).max())),
        "outer_up_l.cos": np.cos(0.5 * np.pi * across("outer_up_l", xc)),
        "outer_lo_l.cos": np.cos(0.5 * np.pi * across("outer_lo_l", xc)),
    }
    return sets, weights


@dataclasses.dataclass(frozen=True)
class _Spec:
    """One AU's left half: anchor groups ``(set, ((weight, vector mm), ...), halve midline)`` whose vectors
    at each point are the weighted sum of the terms ("1" = weight 1), Gaussian width ``sigma`` (mm), pinned
    sets, ``exact`` anchors, and an optional ``fade`` applied afterwards."""

    groups: tuple
    sigma: float
    pins: tuple[str, ...] = ()
    exact: bool = False
    fade: str = ""


def _one(vec, half=False, weight="1"):
    """A group's (terms, halve midline) for one vector times one weight."""
    return ((weight, vec),), half


def _corner_spec(corner, mid_up, mid_lo, sigma, fade="", extra=(), pins=(), mid_out=None):
    """A lip-corner AU: the left corners and the lips' midline points move, the right corners are pinned;
    ``extra`` groups move more of the face with them, ``pins`` keep more of it still. ``mid_out``: (upper,
    lower) vectors for the outer (vermilion border) midline points, which then move apart from the inner."""
    if mid_out is None:
        mids = (("mid_up", *_one(mid_up)), ("mid_lo", *_one(mid_lo)))
    else:
        mids = (
            ("mid_up_in", *_one(mid_up)),
            ("mid_up_out", *_one(mid_out[0])),
            ("mid_lo_in", *_one(mid_lo)),
            ("mid_lo_out", *_one(mid_out[1])),
        )
    groups = (("corners", *_one(corner)), *mids, *extra)
    return _Spec(groups, sigma, ("right_corners", "nose_base", *pins), fade=fade)


AU_SPECS: dict[str, _Spec] = {
    # Brows: inner/outer parts of the left brow; the lower lid and the other brow are pinned, so the midline
    # gets half from each side and L + R counts it once.
    "AU1": _Spec((("brow", *_one((-0.5, 5.8, 0.8), weight="brow.in")),), 14.0, ("lid_lo", "right_brow")),
    "AU2": _Spec((("brow", *_one((0.5, 8.6, 0.8), weight="brow.out")),), 14.0, ("lid_lo", "right_brow")),
    # AU4 lowers the brows over a still upper lid (ICT browDown moves the lid contour < 0.4 mm): dragging the
    # lid down with the brow hid anger's glare (AU5) under a sleepy lid
    "AU4": _Spec(
        (("brow", (("1", (-3.0, -3.2, 2.0)), ("brow.toward_in", (-0.9, -0.5, 0.0))), False),),
        10.0,
        ("lid_lo", "lid_up", "right_brow"),
    ),
    # Lids: upper and lower contours move separately, the other contour pinned (AU43: ``lid_jaw_fields``).
    "AU5": _Spec((("lid_up", *_one((0.35, 3.2, -0.7), weight="lid_up.profile")),), 7.0, ("lid_lo",)),
    "AU7": _Spec(  # lower lid up and in with the skin below it, upper lid barely down (ICT eyeSquint: 0.1 mm)
        (
            ("lid_up", *_one((0.0, -0.3, 0.0), weight="lid_up.profile")),
            ("lid_lo", *_one((-1.65, 2.4, 0.9), weight="lid_lo.profile")),
            ("below_lid", *_one((-2.2, 2.2, 0.8), weight="below_lid.profile")),
        ),
        5.0,
        exact=True,
    ),
    # AU6: malar skin up and forward, the lower lid pushed up a little. A Duchenne smile narrows the eye by
    # 0.85 mm (48 London smiles, 0.0135 IOD: lower lid up 0.75 mm, upper 0.1 down); a lid anchor of 3.0 mm
    # (with the malar skin's drag, 2.35 mm) and AU12's pull closed happy's eye 3.1 mm (re-detected 2.5x real)
    "AU6": _Spec(
        (("malar", *_one((-0.6, 5.2, 2.1))), ("lid_lo", *_one((0.0, 1.5, 0.3), weight="lid_lo.profile"))),
        8.0,
        ("lid_up",),
        fade="above_fold",
    ),
    # AU9: alae and nasolabial skin up (ICT noseSneer ~9 mm), procerus pulls the inner brow down. The nose's
    # midline rises 6.9 mm (ICT 3.4) and the upper lip's border and the cheek beside the nose 0.75 of ICT's:
    # with the midline held to 4.3 mm the disgusted and afraid outputs read less (-0.029, -0.027) and cost
    # more identity (dlib, disgusted 0.416 -> 0.441: the nostrils change shape where a nose moving as a whole
    # does not); with the lip and cheek at ICT's too, 0.470
    "AU9": _Spec(
        (
            ("alae", *_one((-0.4, 6.6, 1.8))),
            ("beside_nose", *_one((-1.2, 7.0, 2.2))),
            ("inner_brow", *_one((-0.7, -3.0, -0.4))),  # ICT noseSneer: brow heads 3.5 mm down
            ("outer_up_l", *_one((0.0, 4.5, 0.3), half=True)),
            ("nose_mid", *_one((0.0, 1.5, 0.3))),  # half per side: columella and bridge move less
            # the lower lid rises with the infraorbital skin (ICT noseSneer: 0.71 mm mean, 1.2 at the inner
            # third; pinned, ours 0.02): the narrowed eyes of disgust (48 London faces, critic's
            # probability of disgust or anger over jittered boxes +0.020, scripts/compare_runs.py)
            ("lid_lo", *_one((-0.15, 1.6, 0.3), weight="lid_lo.profile")),
        ),
        9.0,
        ("lower_lip_off_corners", "lid_up", "right_alae", "right_brow"),
    ),
    "AU10": _Spec(
        (("upper_lip_l", (("1", (0.0, 3.6, 0.7)), ("upper_lip_l.across", (0.0, -0.36, 0.0))), True),),
        8.0,
        ("lower_lip",),
        fade="under_nose",
    ),
    # Lip corners: the left corner region moves, the right one is pinned. The lips' midline takes part at
    # half weight per side: a real smile lifts the whole mouth (ICT mouthSmile: corner 14 mm, upper-lip
    # centre 3.5 mm; London smiles: upper-lip centre up 0.025 IOD), so it is not pinned.
    # The zygomaticus also bunches the cheek up and out above the fold (ICT mouthSmile: FaceMesh 205/50 rise
    # ~4 mm, come forward ~2 mm), which the corner alone left still. The lower lid is AU6's: pinned here, or
    # the 14 mm Gaussian lifted it 1.1 mm (ICT mouthSmile 0.5 mm) on top of AU6's.
    # The lips rise as a whole, borders nearly as far as the inner contours (ICT mouthSmile: upper lip's
    # centre 3.6 mm inside, 3.6 at the border; lower 3.6 / 3.8): one midline vector for both, against the
    # pinned nose base, lifted the borders 2.2 / 2.9 mm under inner contours at 3.4 / 3.4, thinning the red;
    # now 2.8 / 3.4 under 3.8 / 3.7 (a lone border anchor between the nose-base pins and the inner anchors
    # keeps ~40 % of its vector; peak ratio vs ICT 0.947 -> 0.948, cosine 0.928 -> 0.930). 16 London happy
    # outputs, median of the 10 whose real smile shows teeth: upper lip's border up 0.032 -> 0.038 IOD (real
    # 0.054), its red thinned by 0.035 -> 0.032 (0.023): below FaceMesh's noise, but towards real smiles.
    "AU12": _corner_spec(
        (7.1, 9.4, -7.2),
        (0.0, 2.2, -1.8),
        (0.0, 1.0, -0.4),
        14.0,
        fade="smile_midline",
        extra=(("smile_cheek", *_one((3.9, 4.0, 1.8))),),
        pins=("lid_lo",),
        mid_out=((0.0, 7.0, -4.0), (0.0, 3.5, -0.4)),
    ),
    "AU14": _corner_spec((-2.0, 1.0, -4.5), (0.0, 0.0, -0.5), (0.0, 0.0, -0.5), 8.0),
    "AU15": _corner_spec((2.0, -4.7, -1.9), (0.0, -0.3, 0.0), (0.0, -0.5, 0.0), 10.0),
    "AU20": _corner_spec((5.8, -2.0, -6.0), (0.0, -0.2, -0.5), (0.0, -0.4, -0.5), 12.0),
    "AU16": _Spec(  # lower lip down, back and out; ICT's depressor takes the chin along
        (
            (
                "lower_lip_l",
                (
                    ("1", (0.0, -4.0, -1.4)),
                    ("lower_lip_l.across", (0.4, 0.0, 0.0)),
                    ("lower_lip_l.across2", (0.0, 2.0, 0.0)),
                ),
                True,
            ),
            ("chin", *_one((0.0, -3.2, -2.2), half=True)),
        ),
        10.0,
        ("upper_lip",),
    ),
    "AU17": _Spec(  # chin up and forward, the lower lip pushed up in the middle (the corners stay: with AU15
        # the mouth arches, ICT mouthShrugLower); the upper lip's inner contour goes along so the lips stay
        # closed, its border much less: the pressed upper lip thins (``_upper_lip_press``)
        (
            ("chin", *_one((0.0, 6.4, 2.1), half=True)),
            ("mouth_l", (("1", (0.0, 3.9, 3.5)), ("mouth_l.across2", (0.0, -3.9, -1.5))), True),
        ),
        10.0,
        fade="pressed_upper_lip",
    ),
    "AU23": _Spec(  # vermilion thinned towards the lip line, corners inwards
        (
            ("outer_up_l", *_one((0.0, -1.6, 0.3), half=True)),
            ("outer_lo_l", *_one((0.0, 1.6, 0.3), half=True)),
            ("corners", *_one((-1.8, 0.0, 0.5))),
        ),
        5.0,
        ("inner_lips_off_corners",),
    ),
    "AU24": _Spec(  # lips pressed, the chin pushed up
        (
            ("outer_up_l", *_one((0.0, -0.8, -0.3), half=True)),
            ("outer_lo_l", *_one((0.0, 2.0, 0.3), half=True)),
            ("corners", *_one((-1.0, 0.0, 0.0))),
            ("chin", *_one((0.0, 4.0, 1.8), half=True)),
        ),
        6.0,
        ("inner_lips_off_corners",),
    ),
    "AU25": _Spec(  # inner contours apart (upper up, lower down), zero at the corners
        (
            ("inner_up_l", *_one((0.0, 1.5, 0.0), half=True, weight="inner_up_l.cos")),
            ("inner_lo_l", *_one((0.0, -2.5, 0.0), half=True, weight="inner_lo_l.cos")),
            ("outer_up_l", *_one((0.0, 0.8, 0.0), half=True, weight="outer_up_l.cos")),
            ("outer_lo_l", *_one((0.0, -1.4, 0.0), half=True, weight="outer_lo_l.cos")),
        ),
        5.0,
    ),
}
"""The left halves of the AU fields (except AU43 and the jaw): what moves where, in mm at 63 mm IPD. Peaks
are set against ICT-FaceKit's scanned shapes (FACTS.md 9; ``test_fields_at_real_magnitudes``)."""


SMILE_BELOW_TAPER = (0.55, 0.1, 0.4)
"""How much of AU12's pull (x out, y up, z back) the skin loses from 4 to 20 mm below the lip corners
(``_fades``): ICT-FaceKit's mouthSmile there moves (3.5, 8.3, -5.0) mm against its corner's (7, 9.4, -7)."""


def _fades(g: _Geometry) -> dict[str, np.ndarray]:
    """Smooth multipliers f[V, 1] (or f[V, 3], per axis) applied after the interpolation."""
    x = g.x
    ou = g.t.region("lips_outer_upper")
    xc, corner_y, tip_y = np.abs(x[ou, 0]).max(), x[ou[-1], 1], x[4, 1]
    # under the nose tip (alae, columella, subnasale = FaceMesh 2) the triangles are thin: lip fields fade
    # from the upper lip's top (FaceMesh 0) to 0 at the subnasale so they never fold them
    under_nose = 1.0 - _smoothstep((x[:, 1] - x[0, 1]) / (x[2, 1] - x[0, 1]))
    # each side's smile reaches across the midline, so L + R would double the lips' centre: below the nose
    # the centre is tapered to half (both sides together then lift it ~3.5 mm, as ICT does)
    above = _smoothstep((x[:, 1] - corner_y) / max(tip_y - corner_y, 1e-6))
    lateral = 0.5 + 0.5 * _smoothstep(np.abs(x[:, 0]) / xc)
    midline = above + (1.0 - above) * lateral
    # the smile's pull fades on the lower cheek beyond the modiolus (ICT's mouthSmile moves FaceMesh 212/214
    # ~0.7x the corner; an untapered pull lifted the jaw-line skin as much as the corner itself)
    beyond = _smoothstep((np.abs(x[:, 0]) - xc - 8.0 * g.s) / (14.0 * g.s))
    smile = midline * (1.0 - 0.25 * beyond * (1.0 - above))
    # below the corners the pull lifts the skin but drags it out and back less (``SMILE_BELOW_TAPER``): with
    # the corner's whole vector the lateral chin went out 1.7x as far as ICT's and the lower face widened (on
    # 48 London faces, the critic's jittered P(happy) +0.034, identity at happy -0.002, both intervals
    # excluding 0; scripts/compare_runs.py, measure_identity_cost.py --mean-smile)
    below = _smoothstep((corner_y - x[:, 1] - 4.0 * g.s) / (16.0 * g.s))
    smile = smile[:, None] * (1.0 - below[:, None] * np.array(SMILE_BELOW_TAPER))
    # the cheek raiser lifts malar skin above the nasolabial fold; at the mouth corner's level and below it
    # moves it about half as much (ICT cheekSquint; untapered, the jaw-line skin rose as much as the malar)
    cheek = 0.45 + 0.55 * _smoothstep((x[:, 1] - corner_y) / max(tip_y - corner_y, 1e-6))
    return {
        "under_nose": under_nose[:, None],
        "smile_midline": smile,
        "above_fold": cheek[:, None],
        "pressed_upper_lip": (under_nose * _upper_lip_press(g))[:, None],
    }


CHIN_PRESS_BORDER = 0.35
"""Share of AU17's push that reaches the upper lip's vermilion border and the skin above it."""


def _upper_lip_press(g: _Geometry) -> np.ndarray:
    """f[V] for AU17: 1 on the lower lip and the upper lip's inner contour, falling linearly in height to
    ``CHIN_PRESS_BORDER`` at the upper vermilion border and above it, in the middle of the mouth only (back
    to 1 by 0.7 of the way to the corners: there the red is 1-3 mm tall and a gallery apex crossed it).

    The chin boss pushes the lower lip up into the upper one, whose red thins while its border and the
    philtrum stay (ICT mouthShrugLower: inner contour up 6.6 mm, border 0.0); the unscaled field lifted the
    whole upper lip 5 mm. Linear in height between the contours, so no point of the lip overtakes the one
    above it while the push stays under the red's height over ``1 - CHIN_PRESS_BORDER``."""
    x, t = g.x, g.t
    iu, ou = t.region("lips_inner_upper"), t.region("lips_outer_upper")
    xc = np.abs(x[ou, 0]).max()
    ax = np.abs(x[:, 0])

    def contour(ids):  # y of a contour at |x| (its left half, increasing x for np.interp)
        ids = ids[x[ids, 0] >= -1e-6]
        order = np.argsort(x[ids, 0])
        return np.interp(ax, x[ids, 0][order], x[ids, 1][order])

    y_in, y_out = contour(iu), contour(ou)
    up = np.clip((x[:, 1] - y_in) / np.maximum(y_out - y_in, 0.5 * g.s), 0.0, 1.0)
    lateral = 1.0 - _smoothstep((ax - 0.25 * xc) / (0.45 * xc))  # none where the red thins to the corners
    return 1.0 - (1.0 - CHIN_PRESS_BORDER) * up * lateral


def _spec_field(g: _Geometry, spec: _Spec, sets, weights, fades) -> np.ndarray:
    """One AU's left-half field from its spec."""
    anchors, vectors = [], []
    for name, terms, half in spec.groups:
        ids = sets[name]
        v = sum(np.outer(np.ones(len(ids)) if w == "1" else weights[w], vec) for w, vec in terms)
        anchors.append(ids)
        vectors.append(v * (_midline_half(g, ids)[:, None] if half else 1.0))
    pins = np.concatenate([sets[p] for p in spec.pins]) if spec.pins else ()
    f = _rbf(g, np.concatenate(anchors), np.concatenate(vectors), spec.sigma, pins=pins, exact=spec.exact)
    return f * fades[spec.fade] if spec.fade else f


def _left_fields(g: _Geometry, fit_basis: bool = False) -> dict[str, np.ndarray]:
    """Subject's-left (x > 0) halves of all AUs: lateral ones are mirrored, midline ones summed with it.
    ``fit_basis``: AU17 without its upper-lip press (``action_unit_fields``)."""
    from .lid_jaw_fields import close_lid  # imports this module: here, not at the top

    sets, weights = _point_sets(g)
    fades = _fades(g)
    specs = dict(AU_SPECS)
    if fit_basis:
        specs["AU17"] = dataclasses.replace(specs["AU17"], fade="under_nose")
    f = {name: _spec_field(g, spec, sets, weights, fades) for name, spec in specs.items()}
    f["AU43"] = close_lid(g)
    return f


@functools.cache
def _default_fields(fit_basis: bool = False) -> dict[str, np.ndarray]:
    return _build_fields(topo.face_topology(), fit_basis)


def _build_fields(t: topo.FaceTopology, fit_basis: bool = False) -> dict[str, np.ndarray]:
    from . import lid_jaw_fields as lj  # imports this module: here, not at the top

    g = _geometry(t)
    left = _left_fields(g, fit_basis)
    out: dict[str, np.ndarray] = {}
    for name, fl in left.items():
        fl = _seal_lips(t, fl)
        fr = _mirror_field(t, fl)
        if name in LATERAL_AUS:
            out[name + "L"] = fl
            out[name + "R"] = fr
        out[name] = fl + fr
    jaw26 = lj.jaw_rotation(g, lj.JAW_DROP_DEG, lip_taper=not fit_basis)
    jaw27 = lj.jaw_rotation(g, lj.MOUTH_STRETCH_DEG, lip_taper=not fit_basis)
    # AU27 also stretches the lips: corners inwards and the upper lip up a little.
    stretch = lj.lip_stretch(g)
    for name, fld in (("AU26", jaw26), ("AU27", jaw27 + stretch + _mirror_field(t, stretch))):
        fld = 0.5 * (fld + _mirror_field(t, fld))
        out[name] = _seal_lips(t, fld)
    out = {k: v.astype(np.float32) for k, v in out.items()}
    for k in out:
        out[k].setflags(write=False)
    return out


def action_unit_fields(
    topology: topo.FaceTopology | None = None, *, fit_basis: bool = False
) -> dict[str, np.ndarray]:
    """Action Unit deformation fields on the FaceMesh topology, at intensity 1 (apex), in canonical mm.

    Keys "AU1" ... "AU43" (see ``AU_NAMES``) and one-sided "AUnL"/"AUnR" for ``LATERAL_AUS`` (the bilateral
    field is L + R; L is the subject's left, x > 0). Each field is a normalised Gaussian interpolation of
    anatomically directed anchor displacements in graph distance over the open mesh (so the lips and the
    lids move as separate contours), scaled by the template's inter-pupil distance / 63 mm; AU26/AU27 rotate
    the lower face about a jaw axis near the ears. Lip fields are sealed: the inner contours cannot cross
    under any non-negative combination.

    Args:
        topology: a ``FaceTopology`` (default: the shipped one; its fields are cached, read-only).
        fit_basis: the fields as the face fit's expression modes: AU17 lifts the whole upper lip with the
            lower one instead of pressing it (``_upper_lip_press``). A press thins the upper lip's red,
            which on a photo is the person's lip shape; as a fit mode it let neutralisation thin or thicken
            the input's lips (the astronaut's closed neutral seam lost a quarter of its darkness). Likewise
            the jaw (AU26, AU27) drops the lips rigidly, without ``lid_jaw_fields.JAW_LIP_CORNER``'s taper:
            a tapered lower lip is a curve, which on a closed neutral mouth is the person's own lip line; as
            a fit mode it explained London 014's lower lip as a dropped jaw (AU26 0.54 beyond its resting
            0.43, was AU16 0.21) and neutralisation bent the closed lips (corners 0.021 IOD lower).

    Returns:
        name -> f32[478, 3].
    """
    if topology is None:
        return dict(_default_fields(fit_basis))
    return _build_fields(topology, fit_basis)


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
