"""A generated V-A-labelled expression gallery from the Action Unit fields.

Synthetic subjects (identity variation x per-subject AU gains) run neutral -> apex sequences along many
V-A directions; the frames are in the gallery format and go through the same builder as a real corpus.
"""

import dataclasses
from collections.abc import Iterator

import numpy as np

from ..face import topology as topo
from .au_fields import AU_NAMES, LATERAL_AUS, action_unit_fields
from .va_map import closure_limits, gallery_intensities, limit_closure

# --------------------------------------------------------------------------------------------------------
# Generated gallery

SUBJECT_CEILING = 1.0
"""Highest AU intensity a generated subject reaches (1 = the prototype's apex, ``au_fields`` at ICT-FaceKit's
peak). Not above: at 1.3 the generator's apexes fold the mesh (15 of 144 in
``test_gallery_apexes_never_flip_or_cross``: pressed lips AU23 > 1 with AU24, AU4 > 1 with AU17). So the
stronger subjects saturate and a class mean keeps about 0.9 of a prototype's 1.0 AUs."""


def subject_intensities(pattern: np.ndarray, gains: np.ndarray, jitter: np.ndarray) -> np.ndarray:
    """One subject's AU intensities for a map ``pattern``: ``pattern * gains * jitter`` in
    ``[0, SUBJECT_CEILING]``; gains and jitter have mean 1, so the mean over subjects is the pattern except
    where the ceiling cuts the stronger subjects."""
    return np.clip(pattern * gains * jitter, 0.0, SUBJECT_CEILING)


def subject_gains(rng: np.random.Generator, subjects: int, count: int, sigma: float) -> np.ndarray:
    """Per-AU gains of every subject, f64[subjects, count]: lognormal spread ``sigma``, each AU's column
    divided by its mean so that it averages exactly 1 over the gallery's subjects (a dozen lognormal draws
    average 1 +- 0.07; a class mean over them would carry that error into the prototype's intensity)."""
    g = np.exp(sigma * rng.standard_normal((subjects, count)))
    return g / g.mean(0)


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

    num_subjects: int = 24
    num_directions: int = 96
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
    from ..face.morphable import default_identity_basis

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
    gain_rng = np.random.default_rng([seed, 2])
    all_gains = subject_gains(gain_rng, num_subjects, len(names), gain_sigma) * present
    for s in range(num_subjects):
        coef = rng.standard_normal(len(id_std)) * id_std * identity_scale
        neutral = template + np.einsum("k,kvc->vc", coef, id_basis)
        gains = all_gains[s]
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
                w = subject_intensities(gallery_intensities(val, aro).astype(np.float64), gains, jitter)
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
    :math:`g_k \\sim \\log\\mathcal N(0, \\sigma_g^2)` normalised to mean 1 over the subjects
    (``subject_gains``) and a left/right imbalance for lateral AUs.
    Sequence j runs along angle :math:`\\theta_j = 2\\pi (j + o_s)/D` (random offset ``o_s`` per
    subject) to an apex at 85-100 % of the square's boundary; frame f is at :math:`t = f/(F-1)` of the way,
    labelled with its (V, A), with intensities ``gallery_intensities(V, A) * g`` up to ``SUBJECT_CEILING``
    (lid closure limited by ``limit_closure``). Frame 0 is the sequence's neutral.

    Args:
        fields: AU fields (default ``action_unit_fields()``); missing AUs are skipped; "AUnL"/"AUnR" are
            used for the left/right imbalance where present.
        pose_jitter_deg: random head rotation per frame (degrees, std per axis; 0 = none).

    Yields:
        ``gallery.GalleryFrame`` (subject, sequence, frame, vertices f32[478, 3], valence, arousal,
        is_neutral, source, au: the intensities f32[K] in ``AU_NAMES`` order), deterministic for a seed.
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
            au=w.astype(np.float32),
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
