"""End-to-end golden checks on real photos: what FaceMesh measures on our outputs.

The synthesised images are fed back to the landmark detector, so these tests judge the pixels a user gets,
not our internal geometry. London set (CC-BY 4.0, read in place); skips without ``../shared``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import affectsynth as af
from affectsynth.affect.au_fields import AU_NAMES
from affectsynth.pipeline import (
    REST_LIP_GAP,
    SynthesisOptions,
    appearance_action_units,
    close_lips,
    crop_size,
    neutral_excess,
)
from affectsynth.resting import (
    AFFECT_VALENCE,
    MAX_CORNER_DROP,
    MAX_SMILE_RELAX,
    REST_CORNER_HEIGHT,
    REST_MOUTH_WIDTH,
    SMILING_CORNER_HEIGHT,
    _mouth_shape,
    level_corners,
    relax_smile,
    unturn_corners,
)

PEOPLE = ("001.jpg", "004.jpg", "009.jpg", "014.jpg")


def _features(lm: np.ndarray) -> tuple[float, float]:
    """(lip-corner lift above the inner upper lip centre, brow height above the upper lids), in IODs."""
    iod = float(np.linalg.norm(lm[473, :2] - lm[468, :2]))
    lift = (lm[13, 1] - lm[[61, 291], 1].mean()) / iod  # image y points down
    brow = (lm[[159, 386], 1].mean() - lm[[105, 334, 66, 296], 1].mean()) / iod
    return float(lift), float(brow)


@pytest.fixture(scope="module")
def measured(london_dir):
    model = af.load_model()
    rows = []
    for name in PEOPLE:
        image = af.load_image(london_dir / "neutral" / name)
        lm = af.detect_landmarks(image)
        base = np.array(_features(lm))
        out = {"image": image, "name": name}
        for key, (v, a) in {"happy": (0.8, 0.4), "tense": (-0.6, 0.6), "zero": (0.0, 0.0)}.items():
            res = af.synthesize(image, v, a, model=model, landmarks=lm)
            out[key] = res
            out[key + "_lm"] = np.asarray(af.detect_landmarks(res))
            out[key + "_delta"] = np.array(_features(out[key + "_lm"])) - base
        out["neutral_lm"] = np.asarray(lm)
        out["smiling_lm"] = np.asarray(af.detect_landmarks(af.load_image(london_dir / "smiling" / name)))
        rows.append(out)
    return rows


def _aperture(lm: np.ndarray) -> float:
    """Mean gap between paired upper and lower lid points of both eyes, in inter-pupil distances."""
    from affectsynth.lids import eye_gaps

    iod = float(np.linalg.norm(lm[473, :2] - lm[468, :2]))
    return float(np.mean(eye_gaps(jnp.asarray(lm, jnp.float32)))) / iod


@pytest.mark.slow
@pytest.mark.shared
def test_happy_narrows_the_eyes_like_the_same_peoples_real_smiles(measured):
    """Re-detected, our happy target narrows the eyes as much as these people's own smiles do (median
    within 0.006 IOD). Measured: real -0.012, ours -0.0125; before AU6's lid part was cut and AU12 let go of
    the lower lid, -0.022 (48 people: real -0.010, ours -0.0105, before -0.0205)."""
    ours = [_aperture(m["happy_lm"]) - _aperture(m["neutral_lm"]) for m in measured]
    real = [_aperture(m["smiling_lm"]) - _aperture(m["neutral_lm"]) for m in measured]
    assert abs(np.median(ours) - np.median(real)) < 0.006, (ours, real)


@pytest.mark.slow
@pytest.mark.shared
def test_happy_target_lifts_the_lip_corners(measured):
    """Real London smiles lift the corners 0.039 IOD (median over 48 people) relative to the upper lip
    centre; our V=+0.8, A=+0.4 must lift them at least 0.02 IOD on every face (measured 0.05-0.07)."""
    lifts = [m["happy_delta"][0] for m in measured]
    assert min(lifts) > 0.02, lifts


@pytest.mark.slow
@pytest.mark.shared
def test_tense_negative_target_lowers_the_brows(measured):
    """V=-0.6, A=+0.6 (angry/afraid region, AU4): the brows come down towards the eyes (median over the
    faces at least 0.01 IOD; measured 0.02-0.04) and the corners do not rise."""
    brows = [m["tense_delta"][1] for m in measured]
    assert np.median(brows) < -0.01, brows
    assert max(m["tense_delta"][0] for m in measured) < 0.01


@pytest.mark.slow
@pytest.mark.shared
def test_a_tense_mouth_turns_down_even_where_the_resting_mouth_turns_up(measured):
    """Re-detected on the V=-0.6, A=+0.6 outputs, the lip corners end well below the lips' centre on every
    face (``_mouth_shape``, < -0.04 IOD), London 009 included, whose neutral mouth turns up (its corners
    0.060 above the centre, 001 0.012, 014 0.014; the median neutral photo -0.025): ``unturn_corners``.
    Measured -0.070, -0.090, -0.055, -0.073 (001, 004, 009, 014). Before it, 009's bared mouth kept its
    corners level with the centre (-0.010), a grin that a second classifier read as happy (P 0.9 at angry),
    and 001's and 014's stood at -0.037 and -0.038."""
    heights = {m["name"]: float(_mouth_shape(jnp.asarray(m["tense_lm"]))[0]) for m in measured}
    assert max(heights.values()) < -0.04, heights


@pytest.mark.slow
@pytest.mark.shared
def test_a_smile_turns_up_even_where_the_resting_mouth_turns_down(london_dir):
    """London 105 and 172 have the most downturned neutral mouths of the 48 (corners 0.100 and 0.071
    inter-pupil distances below the lips' centre; the median -0.025). Re-detected at the happy target (0.8,
    0.4), their corners stand > 0.04 above the lips' centre: measured 0.065 and 0.072. Before
    ``unturn_corners`` raised a resting downturn for pleasant targets, -0.004 and 0.007: a smile whose
    corners stayed level with its centre."""
    model = af.load_model()
    heights = {}
    for name in ("105.jpg", "172.jpg"):
        image = af.load_image(london_dir / "neutral" / name)
        lm = af.detect_landmarks(image)
        out = af.detect_landmarks(af.synthesize(image, 0.8, 0.4, model=model, landmarks=lm))
        heights[name] = float(_mouth_shape(jnp.asarray(out))[0])
    assert min(heights.values()) > 0.04, heights


@pytest.mark.slow
@pytest.mark.shared
def test_origin_target_keeps_the_face_and_the_background(measured):
    """V=A=0 on a neutral face: landmarks move < 0.01 IOD; pixels far from the face are untouched."""
    for m in measured:
        assert np.all(np.abs(m["zero_delta"]) < 0.01), m["zero_delta"]
        for key in ("happy", "tense", "zero"):
            img, out = m["image"], m[key]
            assert out.shape == img.shape
            # the top rows (hair/background) and the bottom rows (neck/clothes) are the input's, bit for bit
            np.testing.assert_array_equal(out[:20], img[:20])
            np.testing.assert_array_equal(out[-20:], img[-20:])


@pytest.mark.slow
@pytest.mark.shared
def test_face_that_fills_the_frame_matches_the_full_photo(london_dir):
    """A photo cropped tight around the face needs a larger working crop than the image (the appearance
    windows assume ~4 inter-pupil distances of room): the pipeline pads the border for the work. The result
    must be the same face edit as on the full photo (measured: identical to 1e-4)."""
    model = af.load_model()
    image = af.load_image(london_dir / "neutral" / "009.jpg")
    lm = af.detect_landmarks(image)
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
    x0, y0 = np.maximum(np.floor(lo - 0.1 * (hi - lo)), 0).astype(int)
    x1, y1 = np.ceil(hi + 0.1 * (hi - lo)).astype(int)
    tight = np.ascontiguousarray(image[y0:y1, x0:x1])
    tight_lm = lm - np.array([x0, y0, 0], np.float32)
    ch, cw = crop_size(tight_lm[None], *tight.shape[:2])
    assert ch > tight.shape[0] and cw > tight.shape[1]  # the padded path runs
    edited = af.synthesize(tight, 0.8, 0.4, model=model, landmarks=tight_lm)
    reference = af.synthesize(image, 0.8, 0.4, model=model, landmarks=lm)[y0:y1, x0:x1]
    assert edited.shape == tight.shape
    changed = np.abs(reference - tight).mean(-1) > 0.02
    assert changed.mean() > 0.1  # the edit is there
    diff = np.abs(edited - reference).mean(-1)
    assert diff.mean() < 2e-3 and np.percentile(diff, 99) < 0.02, (diff.mean(), np.percentile(diff, 99))


# --------------------------------------------------------------------------------------------------------
# The chain's links that need no photo: appearance AUs, neutralisation, lip closing (fast)


@pytest.fixture(scope="module")
def default():
    return af.load_model()


def test_appearance_aus_are_the_models_class_aus_times_strength(default):
    from affectsynth.affect.model import class_action_units

    none = np.zeros(default.morphable.num_expression, np.float32)
    for target in [(0.8, 0.4), (-0.55, 0.6), (0.13, -0.71)]:
        for strength, interp in [(1.0, True), (0.6, False), (0.0, True)]:
            opts = SynthesisOptions(strength=strength, interpolate=interp)
            got = np.asarray(appearance_action_units(default, jnp.asarray(target), jnp.asarray(none), opts))
            own = np.asarray(class_action_units(default, jnp.asarray(target), interpolate=interp))
            want = dict(zip(default.au_names, strength * own, strict=True))
            np.testing.assert_allclose(got, [want.get(n, 0.0) for n in AU_NAMES], atol=1e-6)
    happy = appearance_action_units(default, jnp.asarray([0.8, 0.4]), jnp.asarray(none), SynthesisOptions())
    assert float(happy[AU_NAMES.index("AU12")]) > 0.5  # the generator's own intensity, not a shrunk fit


def test_an_imported_models_own_au_list_is_used(default):
    """A model that knows only two AUs (one not a FACS name here) drives exactly those cues."""
    import dataclasses

    own = np.zeros((default.num_classes, 2), np.float32)
    own[:, 0], own[:, 1] = 0.7, 0.9
    other = dataclasses.replace(default, class_au=jnp.asarray(own), au_names=("AU9", "mouthFunnel"))
    none = jnp.zeros(default.morphable.num_expression)
    got = np.asarray(appearance_action_units(other, jnp.asarray([-0.6, 0.35]), none, SynthesisOptions()))
    want = np.zeros(len(AU_NAMES), np.float32)
    want[AU_NAMES.index("AU9")] = 0.7
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_neutralisation_keeps_a_resting_face_and_removes_the_excess(default):
    tol = np.asarray(default.resting_expression)
    rng = np.random.default_rng(0)
    rest = rng.uniform(0.0, 1.0, tol.shape).astype(np.float32) * tol
    np.testing.assert_array_equal(np.asarray(neutral_excess(jnp.asarray(rest), default)), 0.0)
    smile = rest.copy()
    k = default.morphable.expression_names.index("AU25")
    smile[k] = tol[k] + 0.4
    got = np.asarray(neutral_excess(jnp.asarray(smile), default))
    np.testing.assert_allclose(got, np.eye(len(tol))[k] * 0.4, atol=1e-6)
    # 0: every activation is removed
    np.testing.assert_allclose(np.asarray(neutral_excess(jnp.asarray(rest), default, 0.0)), rest)


def _parted(gap_iod, iod=60.0):
    from affectsynth.face import topology as topo

    t = topo.face_topology()
    lm = (t.template * np.array([1, -1, -1]) * iod / topo.IPD_MM + 300.0).astype(np.float32)
    up, lo = (ids[1:-1] for ids in t.inner_lip_pairs())
    lm[lo] = lm[up]  # sealed, then parted by the gap
    lm[up, 1] -= 0.5 * gap_iod * iod
    lm[lo, 1] += 0.5 * gap_iod * iod
    return lm, iod, t


def test_close_lips_leaves_a_resting_mouth_and_closes_a_smile():
    for gap in (0.0, 0.005, REST_LIP_GAP * 0.99):
        lm, iod, _ = _parted(gap)
        np.testing.assert_array_equal(np.asarray(close_lips(jnp.asarray(lm), jnp.asarray(iod))), 0.0)
    for gap in (2 * REST_LIP_GAP, 0.1, 0.25):
        lm, iod, t = _parted(gap)
        move = np.asarray(close_lips(jnp.asarray(lm), jnp.asarray(iod)))
        out = lm + move
        up, lo = t.inner_lip_pairs()
        assert np.max(np.linalg.norm(out[up] - out[lo], axis=1)) < 1e-3 * iod
        # the lips close as a real mouth does (LIP_CLOSE_SPREAD): the upper lip's border comes down, the
        # lower lip's border and the chin rise, none further than the inner contour next to it (the template's
        # lips are thin: parted this way, the inner contours reach past their borders at the widest gaps)
        half = 0.5 * gap * iod
        assert 0.2 * half < move[0, 1] <= half + 1e-4  # upper lip's border (FaceMesh 0), y down
        assert -half - 1e-4 <= move[17, 1] < -0.6 * half  # lower lip's border
        assert move[17, 1] < move[152, 1] < -0.1 * half  # chin
        # nothing beyond the corners or from the nose up moves; the nose tip hardly
        x = lm[:, 0]
        corners = np.sort(lm[[up[0], up[-1]], 0])
        still = (x < corners[0] - 1.0) | (x > corners[1] + 1.0) | (lm[:, 1] < lm[1, 1] - 0.1 * iod)
        np.testing.assert_array_equal(move[still], 0.0)
        assert np.abs(move[1]).max() < 0.02 * half
    # in between the lips close continuously: never wider than the photo's, shut at twice the rest gap
    for gap in np.linspace(REST_LIP_GAP, 2 * REST_LIP_GAP, 6):
        lm, iod, t = _parted(gap)
        out = lm + np.asarray(close_lips(jnp.asarray(lm), jnp.asarray(iod)))
        assert 0.0 <= out[14, 1] - out[13, 1] <= gap * iod + 1e-4


def _smiling(height, width, iod=60.0):
    """Closed template lips whose corners stand ``height`` above the lips' centre, ``width`` apart (IOD),
    and a smile mode that lifts each corner 0.1 IOD and spreads them 0.12 IOD (image pixels)."""
    lm, iod, _ = _parted(0.0, iod)
    centre = 0.5 * (lm[13, :2] + lm[14, :2])
    for k, side in ((61, -1.0), (291, 1.0)):
        lm[k, :2] = centre + np.array([side * 0.5 * width * iod, -height * iod])
    smile = np.zeros_like(lm)
    smile[[61, 291], 0] = np.array([-0.06, 0.06]) * iod
    smile[[61, 291], 1] = -0.1 * iod
    return lm, smile, iod


def test_relax_smile_leaves_a_resting_mouth():
    # closed lips and corners no higher than on any neutral photo: nothing moves, whatever the mode
    for height in (REST_CORNER_HEIGHT, 0.0, SMILING_CORNER_HEIGHT[0] - 1e-3):
        lm, smile, _ = _smiling(height, 0.9)
        got = relax_smile(jnp.asarray(lm), jnp.asarray(smile), jnp.asarray(0.0))
        np.testing.assert_array_equal(np.asarray(got), 0.0)


@pytest.mark.parametrize("parted", [0.0, 1.0])
def test_relax_smile_lowers_raised_corners_towards_rest(parted):
    rng = np.random.default_rng(3)
    for _ in range(6):
        height = rng.uniform(SMILING_CORNER_HEIGHT[0] + SMILING_CORNER_HEIGHT[1], 0.16)
        width = rng.uniform(REST_MOUTH_WIDTH + 0.02, 1.05)
        lm, smile, _ = _smiling(height, width)
        off = np.asarray(relax_smile(jnp.asarray(lm), jnp.asarray(smile), jnp.asarray(parted)))
        before, after = (np.asarray(_mouth_shape(jnp.asarray(x))) for x in (lm, lm + off))
        assert after[0] < before[0] - 1e-3 and after[1] < before[1]  # lower and narrower
        # never past rest in either measure, never more than the cap of the mode
        assert after[0] >= REST_CORNER_HEIGHT - 1e-4 and after[1] >= REST_MOUTH_WIDTH - 1e-4
        amount = -off[61, 1] / smile[61, 1]
        assert 0.0 < amount <= MAX_SMILE_RELAX + 1e-5
        np.testing.assert_allclose(off, -amount * smile, atol=1e-4)  # only the mode moves the face


def _curved(bend: float, iod: float = 60.0):
    """Closed template lips bent into a smile's curve: points near the mouth rise by ``bend`` IOD times
    (their distance from the mouth's centre along it, in half widths)^2, fading away from the lip line."""
    lm, iod, t = _parted(0.0, iod)
    up = t.region("lips_inner_upper")
    c0, c1 = lm[up[0], :2], lm[up[-1], :2]
    centre, half = 0.5 * (c0 + c1), 0.5 * np.linalg.norm(c1 - c0)
    u = np.clip((lm[:, 0] - centre[0]) / half, -1.2, 1.2)
    near = np.exp(-np.square((lm[:, 1] - centre[1]) / (0.25 * iod)))
    lm[:, 1] -= bend * iod * u * u * near
    return lm, iod, t


def test_level_corners_leaves_a_resting_mouth_and_levels_a_smiles_curve():
    # a resting face (lips closed, corners below the smiling threshold): exactly nothing
    for bend in (0.0, 0.02):
        lm, iod, _ = _curved(bend)
        got = level_corners(jnp.asarray(lm), jnp.asarray(iod), jnp.asarray(0.0))
        np.testing.assert_array_equal(np.asarray(got), 0.0)
    for bend in (0.025, 0.035, 0.1):
        lm, iod, t = _curved(bend)
        args = (jnp.asarray(lm), jnp.asarray(iod), jnp.asarray(1.0))  # a smile (parted before closing)
        move = np.asarray(level_corners(*args))
        np.testing.assert_allclose(np.asarray(jax.jit(level_corners)(*args)), move, atol=1e-4)
        before, after = (np.asarray(_mouth_shape(jnp.asarray(x))) for x in (lm, lm + move))
        assert before[0] > REST_CORNER_HEIGHT + 0.05
        if before[0] - REST_CORNER_HEIGHT <= MAX_CORNER_DROP:
            assert abs(after[0] - REST_CORNER_HEIGHT) < 0.01, after  # the corners down to rest
        else:  # as far as the cap
            assert abs(before[0] - after[0] - MAX_CORNER_DROP) < 0.01, (before, after)
        assert abs(after[1] - before[1]) < 0.005  # and the mouth no narrower
        np.testing.assert_allclose(move[[13, 14]], 0.0, atol=1e-3)  # the lips' centre stays
        assert np.all(move[:, 1] >= -1e-6)  # only down (image y), nothing sideways or in depth
        np.testing.assert_allclose(move[:, [0, 2]], 0.0, atol=1e-4)
        far = np.abs(lm[:, 1] - lm[13, 1]) > 0.8 * iod  # the eyes, brows and forehead
        np.testing.assert_array_equal(move[far], 0.0)


def _waved(bend: float, wave: float):
    """``_curved`` lips whose line a sine wave raises on one side and lowers on the other (``wave`` IOD)."""
    lm, iod, t = _curved(bend)
    up = t.region("lips_inner_upper")
    centre, half = 0.5 * (lm[up[0], :2] + lm[up[-1], :2]), 0.5 * np.linalg.norm(lm[up[-1]] - lm[up[0]])
    u = np.clip((lm[:, 0] - centre[0]) / half, -1.0, 1.0)
    lm[:, 1] += wave * iod * np.sin(np.pi * u) * np.exp(-np.square((lm[:, 1] - centre[1]) / (0.25 * iod)))
    return lm, iod


def test_unturn_corners_takes_away_a_resting_turn_against_the_targets_valence():
    """Corners that stand higher than the median neutral face's (``REST_CORNER_HEIGHT``) come down to it for
    valences below ``-AFFECT_VALENCE[1]``; corners that stand lower come up to it above ``AFFECT_VALENCE[1]``;
    part of the way in between; not at all within ``AFFECT_VALENCE[0]`` of neutral, nor towards the turn
    the valence wants (an upturn is kept for pleasant targets, a downturn for unpleasant ones)."""
    # the template's mouth turns up (0.023 IOD); bend 0.12 passes the cap; -0.07 and -0.12 turn it down
    # (-0.059, -0.117). At bend -0.02 the corners still stand above the median but the seam between the lips
    # sags from its centre (London 087, 092: lowering it by its own rise moved nothing at the corners, only a
    # wave's raised side); a wave raises one side of the line and lowers the other
    cases = [(0.0, 0.0), (0.02, 0.0), (0.12, 0.0), (-0.02, 0.0), (0.0, 0.015), (-0.02, -0.02)]
    cases += [(-0.07, 0.0), (-0.12, 0.0), (-0.07, 0.015)]
    for bend, wave in cases:
        lm, iod = _waved(bend, wave)
        before = np.asarray(_mouth_shape(jnp.asarray(lm)))
        excess = before[0] - REST_CORNER_HEIGHT
        assert abs(excess) > 0.02
        sign = 1.0 if excess > 0 else -1.0  # the valence that goes against this mouth's turn: -sign
        for valence in (-AFFECT_VALENCE[0] + 1e-3, 0.0, AFFECT_VALENCE[0] - 1e-3, sign * 0.4, sign * 1.0):
            got = unturn_corners(jnp.asarray(lm), jnp.asarray(iod), jnp.asarray(valence))
            np.testing.assert_array_equal(np.asarray(got), 0.0)  # near neutral, or with the mouth's turn
        moved = []
        for strength in (0.2, 0.3, 0.4, AFFECT_VALENCE[1], 0.6, 1.0):
            args = (jnp.asarray(lm), jnp.asarray(iod), jnp.asarray(-sign * strength))
            move = np.asarray(unturn_corners(*args))
            np.testing.assert_allclose(np.asarray(jax.jit(unturn_corners)(*args)), move, atol=1e-4)
            after = np.asarray(_mouth_shape(jnp.asarray(lm + move)))
            moved.append(sign * (before[0] - after[0]))  # towards the median
            assert abs(after[1] - before[1]) < 0.005  # the mouth no narrower or wider
            np.testing.assert_allclose(move[[13, 14]], 0.0, atol=1e-3)  # the lips' centre stays
            assert np.all(sign * move[:, 1] >= -1e-6)  # only one way (down for an upturn, image y)
            np.testing.assert_allclose(move[:, [0, 2]], 0.0, atol=1e-4)
            far = np.abs(lm[:, 1] - lm[13, 1]) > 0.8 * iod
            np.testing.assert_array_equal(move[far], 0.0)
            if strength >= AFFECT_VALENCE[1]:
                if abs(excess) <= MAX_CORNER_DROP:
                    assert abs(after[0] - REST_CORNER_HEIGHT) < 0.01, (bend, wave, strength, after)
                else:
                    assert abs(moved[-1] - MAX_CORNER_DROP) < 0.01, (bend, wave, strength, moved)
        assert np.all(np.diff(moved) >= -1e-5) and moved[0] > 1e-4 and moved[0] < moved[3] - 0.01, moved


@settings(max_examples=25, deadline=None)
@given(angle=st.floats(-1.2, 1.2), gap=st.floats(0.03, 0.2), bend=st.floats(0.0, 0.1))
def test_closing_and_levelling_turn_with_the_head(angle, gap, bend):
    """``close_lips``, ``level_corners`` and ``unturn_corners`` work in the mouth's own frame: a head rolled
    by ``angle`` gets the same offsets rolled with it."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]], np.float32)

    def rolled(lm):
        out = lm.copy()
        out[:, :2] = (lm[:, :2] - lm[1, :2]) @ rot.T + lm[1, :2]
        return out

    for lm, iod, fn in (
        (*_parted(gap)[:2], lambda x, iod: close_lips(x, iod)),
        (*_curved(bend)[:2], lambda x, iod: level_corners(x, iod, jnp.asarray(1.0))),
        (*_curved(bend)[:2], lambda x, iod: unturn_corners(x, iod, jnp.asarray(-0.6))),
        (*_curved(-0.07 - bend)[:2], lambda x, iod: unturn_corners(x, iod, jnp.asarray(0.6))),  # raised
    ):
        move = np.asarray(fn(jnp.asarray(lm), jnp.asarray(iod)))
        turned = np.asarray(fn(jnp.asarray(rolled(lm)), jnp.asarray(iod)))
        np.testing.assert_allclose(turned[:, :2], move[:, :2] @ rot.T, atol=1e-3)
        np.testing.assert_allclose(turned[:, 2], move[:, 2], atol=1e-3)


# --------------------------------------------------------------------------------------------------------
# Per-link survival of the expression (issue 15, item 3): what FaceMesh re-detects on the output


_GAP = (
    "issue 15: re-detected {:s} keeps 0.45-0.67 of the prototype's displacement; the render's warp keeps "
    "0.99 and FaceMesh reads a pure warp by it at 0.46-0.68 (forehead points 0.1-0.3): measure_chain.py"
)


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("surprised", (0.3, 0.8)),
        ("angry", (-0.55, 0.6)),  # revisions 20 (open tense mouth) and 22 (clenched teeth) pass; was xfail
        ("happy", (0.8, 0.4)),
        pytest.param("sad", (-0.6, -0.3), marks=pytest.mark.xfail(reason=_GAP.format("sad"), strict=False)),
    ],
)
def test_redetected_displacement_keeps_the_prototypes(london_dir, name, target):
    """On a neutral London face the landmarks re-detected on the output move >= 80% of the way the model's
    deformation (projected with the fitted pose) moves them, over the 24 points it moves most."""
    from affectsynth.affect.model import class_deformation
    from affectsynth.face.fit import fit_morphable_model, to_image_offsets

    model = af.load_model()
    image = af.load_image(london_dir / "neutral" / "009.jpg")
    lm = np.asarray(af.detect_landmarks(image))
    fit = fit_morphable_model(jnp.asarray(lm), model.morphable, steps=SynthesisOptions().fit_steps)
    want = to_image_offsets(fit, class_deformation(model, jnp.asarray(target), interpolate=True))
    want = np.asarray(want)[:, :2]
    got = np.asarray(af.detect_landmarks(af.synthesize(image, *target, model=model, landmarks=lm)))
    got = got[:, :2] - lm[:, :2]
    top = np.argsort(-np.linalg.norm(want, axis=1))[:24]
    kept = float(np.sum(got[top] * want[top]) / np.sum(want[top] ** 2))
    assert kept >= 0.8, (name, kept)


def _lip_reds(lm: np.ndarray) -> float:
    """Height of the upper and the lower lip's red together (FaceMesh 0-13 and 14-17), in inter-pupil
    distances."""
    x = np.asarray(lm)[:, :2]
    iod = np.linalg.norm(x[468] - x[473])
    return float((np.linalg.norm(x[0] - x[13]) + np.linalg.norm(x[14] - x[17])) / iod)


@pytest.mark.slow
@pytest.mark.shared
def test_the_neutral_of_a_real_open_smile_has_the_persons_own_lips(london_dir):
    """Each London person's neutral photo is the ground truth for ``neutral`` of their smile. On the open
    (toothy) smiles the lips close with their red about as tall as in the person's own neutral photo
    (re-detected): closing only the inner contours stretched the red over the teeth, a median 1.24x the
    real neutral's over the 24 open smiles (1.10 with ``LIP_CLOSE_SPREAD``). The corners come down to the
    person's own: ``relax_smile`` alone left them a median 0.05 IOD higher (0.013 with ``level_corners``)."""
    model = af.load_model()
    ratios, corners = [], []
    for path in sorted((london_dir / "smiling").glob("*.jpg")):
        smile = af.load_image(path)
        lm = np.asarray(af.detect_landmarks(smile))
        iod = np.linalg.norm(lm[468, :2] - lm[473, :2])
        if np.linalg.norm(lm[13, :2] - lm[14, :2]) < 0.04 * iod:  # closed smile: not this test's case
            continue
        real = np.asarray(af.detect_landmarks(af.load_image(london_dir / "neutral" / path.name)))
        out = np.asarray(af.detect_landmarks(af.synthesize(smile, 0.0, 0.0, model=model, landmarks=lm)))
        ratios.append(_lip_reds(out) / _lip_reds(real))
        corners.append(float(_mouth_shape(jnp.asarray(out))[0] - _mouth_shape(jnp.asarray(real))[0]))
    assert len(ratios) >= 20, len(ratios)
    assert np.median(ratios) < 1.15, np.round(sorted(ratios), 2)
    assert np.median(corners) < 0.03, np.round(sorted(corners), 3)


@pytest.mark.slow
@pytest.mark.shared
def test_a_smiles_shaded_teeth_are_as_warm_as_the_persons_own(london_dir):
    """Golden check on real photos: on London people whose real smile shows teeth (lit frontally, light
    skin: there the mouth's mid-tones are teeth, not lips), the inner mouth's pixels at 0.6-1.0 of the
    skin's luminance (the teeth's shaded sides; ``scripts/measure_smile.py``'s ``shade_warm``) are as warm
    in our happy output as in the person's real smile, within 0.02: measured 0.000-0.002 apart on these
    four; teeth darkened in their own hue (before ``mouth.SHADOW_WARMTH``) were 0.026-0.046 cooler."""
    from script_module import load_script

    ms = load_script("measure_smile")
    model = af.load_model()
    for pid in ("004", "016", "091", "100"):
        neutral = af.load_image(london_dir / "neutral" / f"{pid}.jpg")
        warm = {}
        for key, image in (
            ("real", af.load_image(london_dir / "smiling" / f"{pid}.jpg")),
            ("ours", af.synthesize(neutral, 0.8, 0.4, model=model)),
        ):
            image = ms.as_uint8(image)
            warm[key] = ms.photo_looks(image, np.asarray(af.detect_landmarks(image))[:, :2])["shade_warm"]
        assert abs(warm["ours"] - warm["real"]) < 0.02, (pid, warm)


def _seam_whiteness(image: np.ndarray) -> float:
    """How much whiter (darkest channel: teeth are bright and unsaturated) the middle two thirds of the line
    where the re-detected inner lips meet is than the lips themselves (median over the outer contour)."""
    from affectsynth.face import topology as topo

    t = topo.face_topology()
    lm = np.asarray(af.detect_landmarks(image))[:, :2]
    up, lo = t.inner_lip_pairs()
    mid = 0.5 * (lm[up] + lm[lo])
    mid = mid[len(mid) // 6 : len(mid) - len(mid) // 6]
    pts = np.concatenate([np.linspace(a, b, 6) for a, b in zip(mid[:-1], mid[1:], strict=True)])
    outer = lm[np.concatenate([t.region("lips_outer_upper"), t.region("lips_outer_lower")])]

    def darkest(p):
        return image[np.round(p[:, 1]).astype(int), np.round(p[:, 0]).astype(int)].min(-1)

    return float(np.mean(darkest(pts)) - np.median(darkest(outer)))


@pytest.mark.slow
def test_a_smiling_inputs_neutral_closes_the_lips_over_its_teeth():
    """The demo's astronaut smiles showing her teeth; her ``neutral`` closes the lips and the line where they
    meet is darker than the lips (it was 0.04-0.07 darker with the photo's teeth squeezed into it, the photo's
    own parted lips 0.08 whiter)."""
    import skimage.data

    image = np.asarray(skimage.data.astronaut(), np.float32) / 255.0
    assert _seam_whiteness(image) > 0.0  # the photo shows teeth between the lips
    out = np.asarray(af.synthesize(image, 0.0, 0.0))
    assert _seam_whiteness(out) < -0.12
