"""Sadness that reads (issue 15): the grief brow, heavy lids, the arched mouth over a raised chin, and the
forehead folds that the raised brow heads make. Geometry at the sad prototype's anchor and in the default
model's class; the folds as properties of the wrinkle pattern."""

import jax.numpy as jnp
import numpy as np
import pytest

from affectsynth.affect.au_fields import AU_NAMES, _lid_pairs, action_unit_fields
from affectsynth.affect.va_map import au_intensities
from affectsynth.face import topology as topo
from affectsynth.render.appearance import wrinkles as ap_wrinkles

SAD = (-0.6, -0.3)
TOPO = topo.face_topology()


def _deformation(valence, arousal):
    fields = action_unit_fields()
    basis = np.stack([fields[n] for n in AU_NAMES]).astype(np.float64)
    return np.einsum("k,kvc->vc", au_intensities(valence, arousal).astype(np.float64), basis)


def _brow_parts():
    """Left brow points: inner fifth (heads), outer fifth (tails)."""
    brow = TOPO.region("left_brow")
    ax = np.abs(TOPO.template[brow, 0])
    u = (ax - ax.min()) / (ax.max() - ax.min())
    return brow[u < 0.2], brow[u > 0.8]


def _brow_tilt(d):
    """How much higher the brow heads end up than the tails (mm), and the heads' own rise."""
    inner, outer = _brow_parts()
    return d[inner, 1].mean() - d[outer, 1].mean(), d[inner, 1].mean()


def test_sad_brows_slant_up_towards_the_centre():
    """The grief brow: the heads rise (AU1) and come together (AU4) while the tails do not rise, so the brow
    tilts up towards the centre by several mm (a uniform lift would not read as sadness)."""
    d = _deformation(*SAD)
    tilt, rise = _brow_tilt(d)
    inner, _ = _brow_parts()
    # the heads rise more than AU4 at 0.4 let them (3.3 mm): a light knit, or sad read angry (8 of 48)
    assert rise > 3.45 and tilt > 3.5, (rise, tilt)
    assert d[inner, 0].mean() < -1.0  # left brow heads (x > 0) move towards the midline: the knit
    right = TOPO.mirror[inner]
    np.testing.assert_allclose(d[right, 1], d[inner, 1], atol=1e-4)  # both brows alike


def test_sad_upper_lids_hang_heavy_but_stay_open():
    """The upper lid comes down over the eye (a lowered lid, AU43 partial), most in its middle, and every
    eye keeps well over a third of its opening."""
    d = _deformation(*SAD)
    x = TOPO.template
    for side in ("left", "right"):
        up, lo = _lid_pairs(TOPO, side)
        gap0 = x[up, 1] - x[lo, 1]
        gap1 = gap0 + d[up, 1] - d[lo, 1]
        open_ = gap0 > 0.5 * gap0.max()
        assert d[up[open_], 1].mean() < -3.0  # AU1 takes 1.5 mm of AU43's 0.6 back (at 0.5: -2.6 mm)
        assert np.all(gap1[open_] > 0.4 * gap0[open_]), (side, gap1 / np.maximum(gap0, 1e-6))


def test_sad_mouth_arches_over_a_raised_chin():
    """Lip corners pulled down (AU15) while the chin boss pushes the middle of the lower lip up and forward
    (AU17): a downward arch, the chin moving up and out."""
    d = _deformation(*SAD)
    corners = [TOPO.region("lips_outer_upper")[i] for i in (0, -1)]
    mid_lower = TOPO.region("lips_outer_lower")[len(TOPO.region("lips_outer_lower")) // 2]
    assert max(d[c, 1] for c in corners) < -2.5
    assert d[mid_lower, 1] - d[corners[0], 1] > 5.0
    chin = d[TOPO.region("chin")]
    assert chin[:, 1].mean() > 4.0 and chin[:, 2].mean() > 1.0, chin.mean(0)


def test_bored_lids_hang_and_its_corners_sag():
    """Boredom shows as heavy lids and a slack mouth whose corners sag a few mm (at AU15 0.3 they fell 1.1 mm
    and bored read neutral on 38 of 48 London faces), while the eyes keep half their opening."""
    d = _deformation(-0.5, -0.6)
    x = TOPO.template
    corners = [TOPO.region("lips_outer_upper")[i] for i in (0, -1)]
    assert max(d[c, 1] for c in corners) < -2.5
    up, lo = _lid_pairs(TOPO, "left")
    gap0 = x[up, 1] - x[lo, 1]
    open_ = gap0 > 0.5 * gap0.max()
    assert d[up[open_], 1].mean() < -3.5
    assert np.all((gap0 + d[up, 1] - d[lo, 1])[open_] > 0.45 * gap0[open_])


def test_bored_is_not_sad():
    """Bored sits next to sad but keeps its brows nearly level and the chin boss down: the sad brow and
    raised chin are sadness's, not low arousal's (its sagging corners tug the chin's sides down ~1 mm)."""
    d = _deformation(-0.5, -0.6)
    tilt, _ = _brow_tilt(d)
    assert abs(tilt) < 1.0, tilt
    chin = d[TOPO.region("chin")]
    assert chin[:, 1].max() < 0.5 and np.abs(chin).max() < 1.5


# --------------------------------------------------------------------------------------------------------
# forehead folds of the raised brow heads


def _au(**kw):
    v = np.zeros(len(AU_NAMES), np.float32)
    for k, x in kw.items():
        v[AU_NAMES.index(k)] = x
    return jnp.asarray(v)


def _grief(au, uv):
    uv = jnp.asarray(uv, jnp.float32)
    x, y = uv[..., 0], uv[..., 1]

    def a(name):
        return jnp.maximum(au[AU_NAMES.index(name)], 0.0)

    return np.asarray(ap_wrinkles._grief_folds(x, y, jnp.abs(x), a, jnp.asarray(0.5)))


def _grid():
    xs, ys = np.meshgrid(np.linspace(-60, 60, 241), np.linspace(20, 80, 241))
    return xs, ys, np.stack([xs, ys], -1)


def test_grief_folds_darken_the_centre_of_the_forehead_only():
    """AU1 with AU4: dark short lines above the brow heads, in the middle of the forehead only (the sides
    stay smooth: that is AU2's), symmetric, and linear in the intensities (zero at zero)."""
    xs, ys, uv = _grid()
    d = _grief(_au(AU1=0.85, AU4=0.4), uv)
    centre = (np.abs(xs) < 12) & (ys > 50) & (ys < 68)
    assert d[centre].min() < -0.08
    assert np.abs(d[np.abs(xs) > 24]).max() < 1e-3
    assert np.abs(d[ys < 42]).max() < 1e-3  # above the brow heads, not on the eyes
    np.testing.assert_allclose(d, d[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(_grief(_au(AU1=0.425, AU4=0.2), uv), 0.5 * d, atol=1e-6)
    assert np.abs(_grief(_au(), uv)).max() == 0.0


def test_grief_folds_only_darken():
    """The grief folds are creases, no lit edge: each line's faint highlight sat between the two lines, and
    on the London faces the forehead showed a pale band between the folds."""
    _, _, uv = _grid()
    d = _grief(_au(AU1=1.0, AU4=0.3), uv)
    assert d.min() < -0.1 and d.max() <= 0.0


@pytest.mark.parametrize("aus", [{"AU1": 1.0, "AU2": 1.0}, {"AU4": 1.0}, {"AU2": 0.6}])
def test_no_grief_folds_without_sadness_brow(aus):
    """A raised whole forehead (AU1 + AU2, surprise) folds evenly across (``_forehead_lines``), a lowered
    brow alone has no forehead lines: neither gets the grief folds."""
    _, _, uv = _grid()
    assert np.abs(_grief(_au(**aus), uv)).max() == 0.0


def test_the_horseshoe_needs_the_knit():
    """The arch over the glabella comes with AU4's knit: AU1 alone draws the lines above it but not the
    arch between the brow heads."""
    ys = np.linspace(44.0, 56.0, 121)
    col = np.stack([np.zeros_like(ys), ys], -1)
    knit = _grief(_au(AU1=0.8, AU4=0.5), col)
    lone = _grief(_au(AU1=0.8), col)
    arch = (ys > 52.0) & (ys < 55.0)
    assert knit[arch].min() < lone[arch].min() - 0.04


def test_chin_raiser_presses_the_upper_lip_instead_of_lifting_it():
    """AU17 pushes the lower lip up into the upper one: the upper lip's inner contour goes up with it (the
    lips stay closed) but its vermilion border and the philtrum much less (ICT mouthShrugLower: border
    still), so the red of the upper lip thins; near the corners, where it is thin, it is left alone."""
    f = action_unit_fields()["AU17"]
    x = TOPO.template
    iu, ou = TOPO.region("lips_inner_upper"), TOPO.region("lips_outer_upper")
    mid_in, mid_out = iu[np.argmin(np.abs(x[iu, 0]))], ou[np.argmin(np.abs(x[ou, 0]))]
    assert f[mid_in, 1] > 4.0
    assert f[mid_out, 1] < 0.45 * f[mid_in, 1], (f[mid_out, 1], f[mid_in, 1])
    height = x[mid_out, 1] - x[mid_in, 1]
    assert 0.3 * height < height + f[mid_out, 1] - f[mid_in, 1] < 0.8 * height  # thinner, not crossed
    philtrum = 164  # FaceMesh point between the upper lip's border and the nose
    assert f[philtrum, 1] < 0.5 * f[mid_in, 1]


def test_the_face_fit_moves_the_upper_lip_whole_where_the_chin_raiser_presses_it():
    """The default model's fit mode for AU17 lifts the upper lip's border with its inner contour (a pressed,
    thinner red on a photo is the person's lip shape, which neutralisation must not undo), while the field
    the gallery's expressions are made of presses it (``test_chin_raiser_presses_the_upper_lip...``)."""
    from affectsynth.affect.default import default_model_skeleton

    morph = default_model_skeleton().morphable
    fit = np.asarray(morph.expression_basis[list(morph.expression_names).index("AU17")])
    press = action_unit_fields()["AU17"]
    x = TOPO.template
    iu, ou = TOPO.region("lips_inner_upper"), TOPO.region("lips_outer_upper")
    mid_in, mid_out = iu[np.argmin(np.abs(x[iu, 0]))], ou[np.argmin(np.abs(x[ou, 0]))]
    assert fit[mid_out, 1] > 0.8 * fit[mid_in, 1] > 3.0, (fit[mid_out, 1], fit[mid_in, 1])
    assert press[mid_out, 1] < 0.45 * press[mid_in, 1]
    lower = TOPO.region("lips_outer_lower")
    assert np.allclose(fit[lower], press[lower], atol=0.3)  # the lower lip and chin: one motion
