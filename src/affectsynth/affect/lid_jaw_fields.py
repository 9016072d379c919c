"""The Action Unit fields that are not anchor specs: AU43 lands the upper lid on the lower one; AU26 (jaw
drop) and AU27 (mouth stretch) rotate the lower face about a jaw axis near the ears, AU27 also stretches
the lips. Same conventions as ``au_fields``, which builds them with its other fields (host side, NumPy)."""

import numpy as np

from ..face import topology as topo
from . import au_fields as auf

JAW_DROP_DEG = 9.0
"""Jaw rotation of AU26 at intensity 1 (about 13 mm incisor opening for a 63 mm inter-pupil face)."""
MOUTH_STRETCH_DEG = 20.0
"""Jaw rotation of AU27 at intensity 1."""
JAW_LIP_CORNER = 0.3
"""Share of the jaw's motion that the lip corners follow; the lower lip follows it fully at its centre and
less towards the corners (1 - 0.7 (x / half width)^2), the upper lip from none at its centre to this at the
corners (0.3 (x / half width)^2), as ICT-FaceKit's jawOpen moves our lip points (lower lip 1.0 / 0.94 / 0.83 /
0.69 / 0.56 / 0.29 of its centre's drop from the centre to the corner; upper lip 0.07 ... 0.29). Every
lower-lip point at 1 and the corners at 0.5 dropped the lower lip as a flat block with a step at each
corner: a happy mouth's lower lip fell straight down beside the corners, a rectangular opening, and an
excited one a grimace (by eye, London outputs; now a crescent). All 48 London faces, with AU12's borders
(the critic, ``scripts/eval_legibility.py``): excited 35 -> 39 of 48, surprised 26 -> 40 (12 -> 1 read
afraid), happy 33 -> 32 (mean P(happy) 0.64 -> 0.61); happy's re-detected landmarks move less than
FaceMesh's noise (16 faces: curve 0.108 -> 0.111 IOD, real toothy smiles 0.122). The face fit keeps the
rigid drop (``lip_taper=False``)."""


def close_lid(g: "auf._Geometry") -> np.ndarray:
    """AU43: the upper lid contour lands on the lower lid (``au_fields.LID_CLOSE_FRACTION`` of the way,
    tapered towards the corners where the lids already meet); the skin ring above follows its nearest lid
    point."""
    x, t = g.x, g.t
    le_up, le_lo = auf._lid_pairs(t, "left")
    order = np.argsort(x[le_lo, 0])  # np.interp needs increasing sample points
    lo_y = np.interp(x[le_up, 0], x[le_lo, 0][order], x[le_lo, 1][order])
    lo_z = np.interp(x[le_up, 0], x[le_lo, 0][order], x[le_lo, 2][order])
    taper = (auf.LID_CLOSE_FRACTION * auf._profile(len(le_up)) ** 0.25)[:, None]
    close = np.stack([0 * lo_y, lo_y - x[le_up, 1], lo_z - x[le_up, 2]], axis=1) * taper
    ring = np.flatnonzero(np.nan_to_num(g.dist[le_up], posinf=1e9).min(0) < 6.0 * g.s)
    ring = ring[~np.isin(ring, np.concatenate([le_up, le_lo]))]
    near = np.argmin(g.dist[le_up][:, ring], axis=0)
    anchors = np.concatenate([le_up, ring])
    return auf._rbf(g, anchors, np.concatenate([close, 0.7 * close[near]]) / g.s, 6.0, pins=le_lo, exact=True)


def jaw_rotation(g: "auf._Geometry", degrees: float, lip_taper: bool = True) -> np.ndarray:
    """Rotation of the lower face about a left-right jaw axis near the ears, blended by a smooth weight.

    The axis runs along x through a point 0.75 IPD below the pupils and 1.3 IPD behind them (the
    temporomandibular joints). Weight 1 on the chin, the jaw and the lower lip's centre, tapering along the
    lips to ``JAW_LIP_CORNER`` at the corners; the upper lip's centre stays; elsewhere a Gaussian falloff
    (12 mm) in graph distance from the mandible points. ``lip_taper=False``: the lower lip at 1 throughout,
    the corners at 0.5, the upper lip at 0.5 (x / half width)^4 (a rigid drop: the face fit's mode,
    ``au_fields.action_unit_fields(fit_basis=True)``).
    """
    t, x = g.t, g.x
    pup = 0.5 * (x[topo.LEFT_PUPIL] + x[topo.RIGHT_PUPIL])
    ipd = topo.IPD_MM * g.s
    centre = np.array([0.0, pup[1] - 0.75 * ipd, pup[2] - 1.3 * ipd])
    iu, il = t.inner_lip_pairs()
    ou = t.region("lips_outer_upper")
    upper, lower = auf._lip_halves(t, g)
    mesh = np.arange(topo.NUM_MESH_POINTS)
    below = mesh[x[mesh, 1] < x[lower, 1].min()]
    mandible = np.unique(np.concatenate([t.region("chin"), t.region("jaw"), lower, below]))
    mandible = mandible[~np.isin(mandible, upper)]
    d = np.nan_to_num(g.dist[mandible].min(0), posinf=1e9)
    w = np.exp(-0.5 * (d / (12.0 * g.s)) ** 2)
    xc = np.abs(x[ou, 0]).max()
    corner = JAW_LIP_CORNER if lip_taper else 0.5
    w[upper] = corner * (np.abs(x[upper, 0]) / xc) ** (2 if lip_taper else 4)
    w[mandible] = 1.0
    if lip_taper:
        lip = np.setdiff1d(lower, upper)
        w[lip] = 1.0 - (1.0 - corner) * (np.abs(x[lip, 0]) / xc) ** 2
    w[np.intersect1d(upper, lower)] = corner  # the points at the mouth corners belong to both lips
    w[topo.NUM_MESH_POINTS :] = 0.0
    a = np.deg2rad(degrees)
    c, s = np.cos(a), np.sin(a)
    rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])  # positive angle: chin down and back
    moved = (x - centre) @ rot.T + centre
    return w[:, None] * (moved - x)


def lip_stretch(g: "auf._Geometry") -> np.ndarray:
    """AU27's left half beyond the jaw: the upper lip up a little, the corners drawn in."""
    t, x = g.t, g.x
    iu, _ = t.inner_lip_pairs()
    ou = t.region("lips_outer_upper")
    up_l = auf._left(g, np.concatenate([iu, ou]))
    corner = np.array([iu[-1], ou[-1]])
    tu = np.abs(x[up_l, 0]) / np.abs(x[ou, 0]).max()
    a = np.concatenate([up_l, corner])
    v = np.concatenate(
        [
            np.outer((1.0 - tu**2) * auf._midline_half(g, up_l), [0.0, 1.5, 0.0]),
            np.tile([-3.0, -1.0, 0.0], (2, 1)),
        ]
    )
    return auf._rbf(g, a, v, 6.0)
