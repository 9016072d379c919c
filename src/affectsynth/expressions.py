"""Facial Action Unit fields, the valence-arousal -> AU mapping, the generated gallery and the default model.

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
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import topology as topo

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
        (x[mesh, 0] > 14.0 * g.s)
        & (x[mesh, 0] < 55.0 * g.s)
        & (x[mesh, 1] < pupil[1] - 9.0 * g.s)
        & (x[mesh, 1] > pupil[1] - 30.0 * g.s)
        & ~np.isin(mesh, nose)
    ]
    chin = _left(g, t.region("chin"))
    f: dict[str, np.ndarray] = {}

    # Brows (AU1, AU2, AU4): inner/outer halves of the left brow; the lids stay pinned.
    lid_pins = np.concatenate([le_up, le_lo])
    w_in = np.clip(1.3 - 1.3 * u_brow, 0.0, 1.0)
    w_out = np.clip(1.3 * u_brow - 0.3, 0.0, 1.0)
    # The other brow is pinned, so the midline gets half from each side and L + R counts it once.
    rb = t.mirror[lb]
    f["AU1"] = _rbf(g, lb, np.outer(w_in, [-0.5, 6.5, 0.5]), 14.0, pins=np.concatenate([le_lo, rb]))
    f["AU2"] = _rbf(g, lb, np.outer(w_out, [0.5, 6.0, 0.0]), 14.0, pins=np.concatenate([le_lo, rb]))
    au4 = np.stack([-3.0 * (1.0 - u_brow), -4.0 - 0.5 * (1.0 - u_brow), 0.5 + 0 * u_brow], axis=1)
    f["AU4"] = _rbf(g, lb, au4, 10.0, pins=np.concatenate([le_lo, rb]))

    # Eyelids (AU5, AU7, AU43): upper and lower contours moved separately, the other contour pinned.
    p_up, p_lo = _profile(len(le_up)), _profile(len(le_lo))
    f["AU5"] = _rbf(g, le_up, np.outer(p_up, [0.0, 3.0, 0.3]), 7.0, pins=le_lo)
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
    lids7 = np.concatenate([np.outer(p_up, [0.0, -0.8, 0.0]), np.outer(p_lo, [0.0, 2.2, 0.2])])
    f["AU7"] = _rbf(g, np.concatenate([le_up, le_lo]), lids7, 4.0, exact=True)

    # AU6 cheek raiser: malar skin up, lower lid pushed up, upper lid pinned.
    anchors6 = np.concatenate([malar, le_lo])
    vec6 = np.concatenate([np.tile([0.5, 3.5, 0.8], (len(malar), 1)), np.outer(p_lo, [0.0, 1.5, 0.2])])
    f["AU6"] = _rbf(g, anchors6, vec6, 10.0, pins=le_up)

    # AU9 nose wrinkler: nose sides up, inner brow down (procerus), upper lip a little up.
    nose_l = nose[x[nose, 0] > 2.0 * g.s]
    inner_brow = lb[u_brow < 0.35]
    ou_l = _left(g, ou)
    a9 = np.concatenate([nose_l, inner_brow, ou_l])
    v9 = np.concatenate(
        [
            np.tile([0.3, 3.0, 0.5], (len(nose_l), 1)),
            np.tile([-0.5, -2.0, 0.0], (len(inner_brow), 1)),
            np.outer(_midline_half(g, ou_l), [0.0, 1.5, 0.3]),
        ]
    )
    f["AU9"] = _rbf(g, a9, v9, 9.0, pins=np.concatenate([lower_lip, lid_pins, t.mirror[nose_l], rb]))

    # AU10 upper lip raiser: upper lip contours up (more laterally), lower lip pinned.
    up_l = _left(g, upper_lip)
    tu = np.abs(x[up_l, 0]) / xc
    v10 = np.stack([0 * tu, 3.5 * (0.6 + 0.4 * tu), 0.8 + 0 * tu], axis=1) * _midline_half(g, up_l)[:, None]
    f["AU10"] = _rbf(g, up_l, v10, 8.0, pins=lower_lip)

    # Lip corner AUs (12, 14, 15, 20): the left corner region moves, the far (right) corner is pinned.
    # The lip midline is pinned too: these muscles pull the corners, so the lips curve (a smile turns the
    # corners up relative to the lips' centre) instead of the whole mouth sliding up or down.
    lips_all = np.concatenate([upper_lip, lower_lip])
    midline = lips_all[np.abs(x[lips_all, 0]) < 1e-4]
    far = np.concatenate([t.mirror[corners], midline])
    # Below the nose the pull fades towards the midline (a smile curves the lips; it does not lift the
    # lips' centre as much as the corners); above the nose tip the field is untouched. Smooth in x and y.
    nose_tip_y = x[4, 1]
    corner_y = x[corner_out, 1]
    above = _smoothstep((x[:, 1] - corner_y) / max(nose_tip_y - corner_y, 1e-6))
    lateral = 0.25 + 0.75 * _smoothstep(np.abs(x[:, 0]) / xc)
    taper = (above + (1.0 - above) * lateral)[:, None]
    f["AU12"] = taper * _rbf(g, corners, np.tile([5.0, 6.5, -3.0], (len(corners), 1)), 14.0, pins=far)
    f["AU14"] = _rbf(g, corners, np.tile([-2.0, 0.8, -2.0], (len(corners), 1)), 8.0, pins=far)
    f["AU15"] = _rbf(g, corners, np.tile([1.0, -4.5, -0.5], (len(corners), 1)), 12.0, pins=far)
    f["AU20"] = _rbf(g, corners, np.tile([5.0, -1.0, -1.5], (len(corners), 1)), 12.0, pins=far)

    # AU16 lower lip depressor: lower lip down and out, upper lip pinned.
    lo_l = _left(g, lower_lip)
    tl = np.abs(x[lo_l, 0]) / xc
    v16 = (
        np.stack([0.3 * tl, -3.5 * (1.0 - 0.6 * tl**2), 1.0 - 0.5 * tl], axis=1)
        * _midline_half(g, lo_l)[:, None]
    )
    f["AU16"] = _rbf(g, lo_l, v16, 8.0, pins=upper_lip)

    # AU17 chin raiser: chin up and forward, lower lip pushed up (the seal drags the upper lip along).
    # The whole mouth (both lips, contours and the rings between) rises together, so the lips stay closed.
    upper_all, lower_all = _lip_halves(t, g)
    mouth_l = _left(g, np.union1d(upper_all, lower_all))
    tm = np.abs(x[mouth_l, 0]) / xc
    a17 = np.concatenate([chin, mouth_l])
    v17 = np.concatenate(
        [
            np.tile([0.0, 3.5, 2.0], (len(chin), 1)) * _midline_half(g, chin)[:, None],
            np.stack([0 * tm, 1.8 * (1 - 0.5 * tm**2), 1.2 + 0 * tm], 1) * _midline_half(g, mouth_l)[:, None],
        ]
    )
    f["AU17"] = _rbf(g, a17, v17, 12.0)

    # AU23 lip tightener / AU24 lip presser: vermilion thinned towards the lip line, corners inwards.
    ou_l, ol_l = _left(g, ou), _left(g, ol)
    a23 = np.concatenate([ou_l, ol_l, corners])
    v23 = np.concatenate(
        [
            np.outer(_midline_half(g, ou_l), [0.0, -1.0, 0.3]),
            np.outer(_midline_half(g, ol_l), [0.0, 1.0, 0.3]),
            np.tile([-1.5, 0.0, 0.5], (len(corners), 1)),
        ]
    )
    inner_pins = np.concatenate([iu, il])[~np.isin(np.concatenate([iu, il]), corners)]
    f["AU23"] = _rbf(g, a23, v23, 5.0, pins=inner_pins)
    a24 = np.concatenate([ou_l, ol_l, corners, chin])
    v24 = np.concatenate(
        [
            np.outer(_midline_half(g, ou_l), [0.0, -0.8, -0.3]),
            np.outer(_midline_half(g, ol_l), [0.0, 1.2, -0.3]),
            np.tile([-1.0, 0.0, 0.0], (len(corners), 1)),
            np.outer(_midline_half(g, chin), [0.0, 1.0, 0.5]),
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


# --------------------------------------------------------------------------------------------------------
# Valence-arousal -> AU intensities

# Emotion prototypes: (name, valence, arousal, {AU: intensity at the anchor}). Anchors from Russell &
# Mehrabian 1977 and Russell 1980 (FACTS.md 2); AU patterns from EMFACS prototypes and Du et al. 2014
# (FACTS.md 3), softened where the word is not a face (calm, relaxed: soft lids and a slight smile).
PROTOTYPES: tuple[tuple[str, float, float, dict[str, float]], ...] = (
    ("content", 0.79, -0.01, {"AU6": 0.35, "AU12": 0.6}),
    ("pleased", 0.77, 0.19, {"AU6": 0.55, "AU12": 0.8, "AU25": 0.2}),
    ("happy", 0.81, 0.51, {"AU6": 0.8, "AU12": 1.0, "AU25": 0.4, "AU26": 0.1}),
    (
        "excited",
        0.62,
        0.76,
        {"AU1": 0.3, "AU2": 0.3, "AU5": 0.3, "AU6": 0.7, "AU12": 0.9, "AU25": 0.9, "AU26": 0.5},
    ),
    ("astonished", 0.16, 0.89, {"AU1": 0.9, "AU2": 0.9, "AU5": 0.9, "AU25": 1.0, "AU26": 0.8}),
    (
        "afraid",
        -0.34,
        0.64,
        {"AU1": 0.8, "AU2": 0.5, "AU4": 0.5, "AU5": 0.9, "AU7": 0.3, "AU20": 0.8, "AU25": 0.7, "AU26": 0.3},
    ),
    ("angry", -0.51, 0.59, {"AU4": 1.0, "AU5": 0.5, "AU7": 0.7, "AU10": 0.2, "AU23": 0.8, "AU24": 0.4}),
    ("disgusted", -0.60, 0.35, {"AU4": 0.4, "AU9": 0.9, "AU10": 0.7, "AU15": 0.4, "AU16": 0.3, "AU17": 0.4}),
    ("displeased", -0.55, 0.16, {"AU4": 0.6, "AU14": 0.2, "AU15": 0.4, "AU17": 0.5, "AU24": 0.3}),
    ("sad", -0.63, -0.27, {"AU1": 0.8, "AU4": 0.6, "AU15": 0.9, "AU17": 0.5, "AU43": 0.15}),
    ("bored", -0.66, -0.63, {"AU4": 0.15, "AU14": 0.3, "AU15": 0.3, "AU43": 0.4}),
    ("tired", 0.04, -0.63, {"AU1": 0.1, "AU25": 0.1, "AU43": 0.55}),
    ("sleepy", 0.28, -0.67, {"AU12": 0.1, "AU26": 0.15, "AU43": 0.6}),
    ("relaxed", 0.69, -0.45, {"AU6": 0.15, "AU12": 0.4, "AU43": 0.3}),
    ("calm", 0.56, -0.31, {"AU12": 0.3, "AU43": 0.2}),
)
"""V-A emotion prototypes with their AU patterns; ``au_intensities`` blends them over the whole square."""

ANGULAR_CONCENTRATION = 12.0
"""Von Mises concentration of the angular blend of prototypes (about a 17-degree half-width)."""
MAX_RADIUS_GAIN = 1.3
"""Intensity gain at most this multiple of the prototype's own (corners of the square go a bit beyond)."""

_P_DIRS = np.array([[v, a] for _, v, a, _ in PROTOTYPES]) / np.linalg.norm(
    np.array([[v, a] for _, v, a, _ in PROTOTYPES]), axis=1, keepdims=True
)
_P_RADII = np.linalg.norm(np.array([[v, a] for _, v, a, _ in PROTOTYPES]), axis=1)
_P_PATTERNS = np.array([[p.get(n, 0.0) for n in AU_NAMES] for _, _, _, p in PROTOTYPES])


def _au_map(xp, valence, arousal):
    """The V-A -> AU map written once for NumPy and jax.numpy (``xp``)."""
    r2 = valence**2 + arousal**2
    safe = xp.where(r2 > 1e-12, r2, 1.0)
    r = xp.where(r2 > 1e-12, xp.sqrt(safe), 0.0)
    u = xp.stack([valence, arousal]) / xp.where(r2 > 1e-12, xp.sqrt(safe), 1.0)
    dirs = xp.asarray(_P_DIRS, dtype=u.dtype)
    logits = ANGULAR_CONCENTRATION * (dirs @ u)
    w = xp.exp(logits - xp.max(logits))
    w = w / xp.sum(w)
    pattern = w @ xp.asarray(_P_PATTERNS, dtype=u.dtype)
    radius = w @ xp.asarray(_P_RADII, dtype=u.dtype)
    gain = xp.minimum(r / radius, MAX_RADIUS_GAIN)
    return xp.clip(gain * pattern, 0.0, 1.0)


def au_intensities(valence: float, arousal: float) -> np.ndarray:
    """AU intensities (``AU_NAMES`` order) for a target affect, over the whole [-1, 1]^2 square.

    A von Mises blend over angle of the emotion prototypes (``PROTOTYPES``):
    :math:`I(v, a) = \\mathrm{clip}(\\min(r / \\bar r, g_{max}) \\sum_p w_p P_p, 0, 1)`,
    :math:`w_p \\propto \\exp(\\kappa\\, u \\cdot u_p)` with ``u`` the unit direction of (v, a), ``r`` its
    length and :math:`\\bar r = \\sum_p w_p r_p` the blended anchor radius: zero at the origin, the
    prototype's pattern at its anchor, growing with the distance from the origin.

    Returns:
        f32[K].
    """
    v, a = np.float64(valence), np.float64(arousal)
    return _au_map(np, v, a).astype(np.float32)


def au_intensities_jax(target: Float[Array, "2"]) -> Float[Array, " K"]:
    """``au_intensities`` in pure jax.numpy (jit/vmap/grad-friendly; the gradient is finite at the origin)."""
    target = jnp.asarray(target)
    return _au_map(jnp, target[0], target[1])


def intensities_to_deformation(
    intensities: Float[Array, " K"], basis: Float[Array, "K V 3"]
) -> Float[Array, "V 3"]:
    """Deformation of an AU intensity vector: :math:`\\sum_k I_k B_k`."""
    return jnp.einsum("k,kvc->vc", intensities, basis)


def closure_limits(fields: dict[str, np.ndarray], topology: topo.FaceTopology | None = None) -> np.ndarray:
    """Per-AU fraction of each eye's opening that the AU closes, at each lid pair: f32[K, P].

    A combination with intensities ``w >= 0`` keeps every eye open iff ``max_p sum_k w_k c_kp < 1``; the
    generator scales the closing AUs down to stay below ``0.9``.
    """
    t = topo.face_topology() if topology is None else topology
    x = t.template
    cols = []
    for side in ("right", "left"):
        up, lo = _lid_pairs(t, side)
        gap = np.maximum(x[up, 1] - x[lo, 1], 1e-3)
        inner = gap > 0.2 * gap.max()  # corners are shared points: no gap to close
        cols.append((up[inner], lo[inner], gap[inner]))
    out = []
    for n in AU_NAMES:
        f = fields.get(n)
        if f is None:
            out.append(np.zeros(sum(len(c[0]) for c in cols)))
            continue
        out.append(np.concatenate([np.maximum(0.0, -(f[up, 1] - f[lo, 1]) / gap) for up, lo, gap in cols]))
    return np.array(out, np.float32)


def limit_closure(intensities: np.ndarray, closure: np.ndarray, ceiling: float = 0.9) -> np.ndarray:
    """Scale the lid-closing AUs down so that no eye closes past ``ceiling`` of its opening."""
    total = (intensities @ closure).max() if closure.size else 0.0
    closing = closure.max(1) > 0
    factor = min(1.0, ceiling / total) if total > 0 else 1.0
    return np.where(closing, intensities * factor, intensities).astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# Generated gallery


@dataclasses.dataclass(frozen=True)
class GalleryConfig:
    """Parameters of the generated gallery (all static; they key the default model's cache).

    Attributes:
        num_subjects: synthetic identities.
        num_directions: V-A directions per subject (evenly spaced, offset per subject).
        frames_per_sequence: frames from neutral (frame 0) to apex.
        seed: random seed.
        identity_scale: multiplier of the GP identity prior's standard deviations.
        gain_sigma: log-normal spread of the per-subject AU gains.
        asymmetry: spread of the per-subject left/right imbalance of lateral AUs.
        pose_jitter_deg: random head rotation per frame (0: none; the model builder aligns frames).
    """

    num_subjects: int = 12
    num_directions: int = 48
    frames_per_sequence: int = 10
    seed: int = 0
    identity_scale: float = 1.0
    gain_sigma: float = 0.25
    asymmetry: float = 0.1
    pose_jitter_deg: float = 0.0


def _square_radius(theta: np.ndarray) -> np.ndarray:
    """Distance from the origin to the boundary of [-1, 1]^2 along angle theta."""
    return 1.0 / np.maximum(np.abs(np.cos(theta)), np.abs(np.sin(theta)))


def _rotation(rng, degrees: float) -> np.ndarray:
    if degrees <= 0:
        return np.eye(3)
    w = np.deg2rad(degrees) * rng.standard_normal(3)
    th = np.linalg.norm(w)
    k = w / max(th, 1e-12)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * kx + (1 - np.cos(th)) * (kx @ kx)


def _gallery_plan(
    *,
    num_subjects: int,
    num_directions: int,
    frames_per_sequence: int,
    seed: int,
    fields: dict[str, np.ndarray],
    identity_scale: float,
    gain_sigma: float,
    asymmetry: float,
):
    """The random choices of the generated gallery, one tuple per frame (shared by the generator and checks).

    Yields (subject index, neutral f64[V, 3], subject fields f64[K, V, 3], direction, frame, valence,
    arousal, intensities f64[K]).
    """
    from .morphable import default_identity_basis

    if num_subjects < 1 or num_directions < 1 or frames_per_sequence < 2:
        raise ValueError("need num_subjects >= 1, num_directions >= 1 and frames_per_sequence >= 2")
    template = topo.face_topology().template.astype(np.float64)
    zero = np.zeros_like(template)
    names = list(AU_NAMES)
    lat = np.array([n in LATERAL_AUS and (n + "L") in fields and (n + "R") in fields for n in names])
    base = np.stack([np.asarray(fields.get(n, zero), np.float64) for n in names])
    left = np.stack(
        [np.asarray(fields[n + "L"], np.float64) if b else zero for n, b in zip(names, lat, strict=True)]
    )
    right = np.stack(
        [np.asarray(fields[n + "R"], np.float64) if b else zero for n, b in zip(names, lat, strict=True)]
    )
    present = np.array([n in fields for n in names])
    closure = closure_limits({n: f for n, f in zip(names, base, strict=True) if n in fields})
    id_basis, id_std = default_identity_basis()
    rng = np.random.default_rng(seed)
    for s in range(num_subjects):
        coef = rng.standard_normal(len(id_std)) * id_std * identity_scale
        neutral = template + np.einsum("k,kvc->vc", coef, id_basis)
        gains = np.exp(gain_sigma * rng.standard_normal(len(names))) * present
        tilt = np.clip(asymmetry * rng.standard_normal(len(names)), -0.5, 0.5)[:, None, None]
        subj_fields = np.where(lat[:, None, None], (1 + tilt) * left + (1 - tilt) * right, base)
        offset = rng.uniform()
        for j in range(num_directions):
            theta = 2 * np.pi * (j + offset) / num_directions
            apex_r = _square_radius(theta) * rng.uniform(0.85, 1.0)
            jitter = rng.uniform(0.9, 1.1, size=len(names))
            for f in range(frames_per_sequence):
                t = f / (frames_per_sequence - 1)
                val = float(np.clip(t * apex_r * np.cos(theta), -1.0, 1.0))
                aro = float(np.clip(t * apex_r * np.sin(theta), -1.0, 1.0))
                w = np.clip(au_intensities(val, aro).astype(np.float64) * gains * jitter, 0.0, 1.0)
                w = limit_closure(w, closure).astype(np.float64)
                yield s, neutral, subj_fields, j, f, val, aro, w


def generate_gallery(
    *,
    num_subjects: int = 12,
    num_directions: int = 48,
    frames_per_sequence: int = 10,
    seed: int = 0,
    fields: dict[str, np.ndarray] | None = None,
    identity_scale: float = 1.0,
    gain_sigma: float = 0.25,
    asymmetry: float = 0.1,
    pose_jitter_deg: float = 0.0,
    source: str = "facs-synthetic",
) -> Iterator:
    """Synthetic V-A gallery: subjects x sequences from neutral to apex along V-A directions.

    Subject s: template + GP identity offsets (``morphable.default_identity_basis``), per-AU gains
    :math:`g_k \\sim \\log\\mathcal N(0, \\sigma_g^2)` and a left/right imbalance for lateral AUs.
    Sequence j runs along angle :math:`\\theta_j = 2\\pi (j + o_s)/D` (random offset ``o_s`` per
    subject) to an apex at 85-100 % of the square's boundary; frame f is at :math:`t = f/(F-1)` of the way,
    labelled with its (V, A), with intensities ``au_intensities(V, A) * g`` (lid closure limited by
    ``limit_closure``). Frame 0 is the sequence's neutral.

    Args:
        fields: AU fields (default ``action_unit_fields()``); missing AUs are skipped; "AUnL"/"AUnR" are
            used for the left/right imbalance where present.
        pose_jitter_deg: random head rotation per frame (degrees, std per axis; 0 = none).

    Yields:
        ``gallery.GalleryFrame`` (subject, sequence, frame, vertices f32[478, 3], valence, arousal,
        is_neutral, source), deterministic for a given seed.
    """
    fields = action_unit_fields() if fields is None else fields
    from .gallery import GalleryFrame as frame_type

    pose_rng = np.random.default_rng([seed, 1])
    plan = _gallery_plan(
        num_subjects=num_subjects,
        num_directions=num_directions,
        frames_per_sequence=frames_per_sequence,
        seed=seed,
        fields=fields,
        identity_scale=identity_scale,
        gain_sigma=gain_sigma,
        asymmetry=asymmetry,
    )
    for s, neutral, subj_fields, j, f, val, aro, w in plan:
        verts = neutral + np.einsum("k,kvc->vc", w, subj_fields)
        if pose_jitter_deg > 0:
            verts = verts @ _rotation(pose_rng, pose_jitter_deg).T
        subject = f"{source}-{s:03d}"
        yield frame_type(
            subject=subject,
            sequence=f"{subject}-dir{j:02d}",
            frame=f,
            vertices=verts.astype(np.float32),
            valence=val,
            arousal=aro,
            is_neutral=f == 0,
            source=source,
        )


def apex_intensities(
    *, num_subjects: int, num_directions: int, seed: int = 0, gain_sigma: float = 0.25, fields=None
) -> np.ndarray:
    """The AU intensity vectors at the apex of every sequence the generator makes (f32[S * D, K], checks)."""
    fields = action_unit_fields() if fields is None else fields
    plan = _gallery_plan(
        num_subjects=num_subjects,
        num_directions=num_directions,
        frames_per_sequence=2,
        seed=seed,
        fields=fields,
        identity_scale=0.0,
        gain_sigma=gain_sigma,
        asymmetry=0.0,
    )
    return np.array([w for *_, f, _, _, w in plan if f == 1], np.float32)


# --------------------------------------------------------------------------------------------------------
# Default model (built from the generated gallery, cached)

DEFAULT_GALLERY = GalleryConfig()


def cache_dir() -> Path:
    """$AFFECTSYNTH_CACHE, else $XDG_CACHE_HOME/affectsynth, else ~/.cache/affectsynth."""
    if os.environ.get("AFFECTSYNTH_CACHE"):
        return Path(os.environ["AFFECTSYNTH_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "affectsynth"
    return Path.home() / ".cache" / "affectsynth"


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("affectsynth")
    except Exception:  # pragma: no cover - not installed
        return "0"


DEFAULT_MODEL_REVISION = 6
"""Bumped whenever the default model's build changes in a way the other key parts do not capture."""


def default_model_key(config: GalleryConfig = DEFAULT_GALLERY) -> str:
    """Hash of the generator parameters, the AU prototypes, the template and the package version."""
    h = hashlib.sha256()
    h.update(json.dumps(dataclasses.asdict(config), sort_keys=True).encode())
    h.update(json.dumps([(n, v, a, sorted(p.items())) for n, v, a, p in PROTOTYPES]).encode())
    h.update(np.ascontiguousarray(topo.face_topology().template).tobytes())
    h.update(_package_version().encode())
    h.update(f"revision {DEFAULT_MODEL_REVISION}".encode())
    return h.hexdigest()[:16]


def default_model_path(config: GalleryConfig = DEFAULT_GALLERY) -> Path:
    return cache_dir() / f"default_model_{default_model_key(config)}.npz"


def _build_model(frames, fields):
    """Gallery frames -> AffectModel through ``build_affect_model`` (same path as a real corpus)."""
    from .model import build_affect_model
    from .morphable import morphable_model

    basis = np.stack([np.asarray(fields[n], np.float32) for n in AU_NAMES if n in fields])
    names = tuple(n for n in AU_NAMES if n in fields)
    morph = morphable_model(basis, np.full(len(names), 0.5, np.float32), names)
    model, _ = build_affect_model(
        frames, morph, name="default-facs", source="affectsynth generated FACS gallery"
    )
    return model


def build_default_model(*, cache: bool = True, force: bool = False, config: GalleryConfig = DEFAULT_GALLERY):
    """Build (or load from the user cache) the default AffectModel from the generated FACS gallery.

    Deterministic for a given ``config``; the cache file name carries ``default_model_key(config)`` and is
    written atomically (temp file + rename). ``force`` rebuilds even when a cached file exists.
    """
    from .model import load_model, save_model

    path = default_model_path(config)
    if cache and not force and path.is_file():
        return load_model(path)
    frames = generate_gallery(**dataclasses.asdict(config))
    model = _build_model(frames, action_unit_fields())
    if cache:
        save_model(path, model)  # atomic: temp file + rename
    return model


@functools.cache
def default_model():
    """The default AffectModel (built at first use, cached on disk and in memory)."""
    return build_default_model()


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


__all__ = [
    "AU_NAMES",
    "LATERAL_AUS",
    "PROTOTYPES",
    "action_unit_fields",
    "expression_basis",
    "au_intensities",
    "au_intensities_jax",
    "intensities_to_deformation",
    "generate_gallery",
    "GalleryConfig",
    "build_default_model",
    "default_model",
    "import_ict_model",
    "ict_action_unit_fields",
]
