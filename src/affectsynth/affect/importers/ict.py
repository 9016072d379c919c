"""ICT-FaceKit (MIT) on our topology: its expression rig as Action Unit fields, its identity modes.

Both go through one ``face.correspondence.template_correspondence`` of ICT's neutral face (region
0..9408, eyeballs for the irises): each shape's deltas are sampled at our 478 points' surface points and
brought into the template frame (mm). ``import_ict_model`` renames the shapes by ``ICT_AU_TABLE`` (the
ICT-FaceKit documentation's FACS table, plus stand-ins for AU23/25/26) and builds an AffectModel with the
same generator and builder as the default model; ``--identity`` swaps in ICT's identity modes.
"""

import dataclasses
from pathlib import Path

import numpy as np

from ...face import topology as topo
from ...face.correspondence import SourceMesh, SurfaceCorrespondence, template_correspondence
from ..au_fields import AU_NAMES, _mirror_field, _seal_lips
from ..default import DEFAULT_GALLERY, _build_model
from ..synthetic_gallery import GalleryConfig, generate_gallery
from .ict_files import EYEBALLS, FACE_VERTICES, IctDataError, IctRig, read_ict

ICT_AU_TABLE: tuple[tuple[str, tuple[tuple[str, float], ...]], ...] = (
    ("AU1", (("browInnerUp", 1.0),)),
    ("AU2", (("browOuterUp", 1.0),)),
    ("AU4", (("browDown", 1.0),)),
    ("AU5", (("eyeWide", 1.0),)),
    ("AU6", (("cheekSquint", 1.0),)),
    ("AU7", (("eyeSquint", 1.0),)),
    ("AU9", (("noseSneer", 1.0),)),
    ("AU10", (("mouthShrugUpper", 1.0),)),
    ("AU11", (("mouthUpperUp", 1.0),)),
    ("AU12", (("mouthSmile", 1.0),)),
    ("AU14", (("mouthDimple", 1.0),)),
    ("AU15", (("mouthFrown", 1.0),)),
    ("AU16", (("mouthLowerDown", 1.0),)),
    ("AU17", (("mouthShrugLower", 1.0),)),
    ("AU18", (("mouthPucker", 1.0),)),
    ("AU20", (("mouthStretch", 1.0),)),
    ("AU22", (("mouthFunnel", 1.0),)),
    ("AU23", (("mouthPress", 0.6),)),
    ("AU24", (("mouthPress", 1.0),)),
    ("AU25", (("jawOpen", 0.2),)),
    ("AU26", (("jawOpen", 0.45),)),
    ("AU27", (("jawOpen", 1.0),)),
    ("AU28", (("mouthRollLower", 1.0), ("mouthRollUpper", 1.0))),
    ("AU29", (("jawForward", 1.0),)),
    ("AU33", (("cheekPuff", 1.0),)),
    ("AU43", (("eyeBlink", 1.0),)),
)
"""AU -> the ICT shapes (name without _L/_R, gain) that make it. From the ICT-FaceKit documentation's table
(its AU45 eyeBlink is our AU43, eyes closed). The rig has no AU23, AU25 or AU26: AU23 (lip tightener) is a
partial mouthPress, AU25 (lips part) and AU26 (jaw drop) are partial jawOpens, which part the lips."""

MINIMUM_AUS: tuple[str, ...] = ("AU1", "AU4", "AU12", "AU15", "AU26")
"""Below these an imported model cannot show the V-A map's basic directions (sad, angry, happy, aroused)."""


@dataclasses.dataclass(frozen=True)
class IctFields:
    """AU fields from the rig and what was made of what.

    Attributes:
        fields: AU name (and "AUnL"/"AUnR" for one-sided ones) -> f32[478, 3] (mm, intensity 1).
        table: AU -> the ICT shapes summed for it ("0.6*mouthPress_L+0.6*mouthPress_R").
        missing: AUs of ``ICT_AU_TABLE`` or ``AU_NAMES`` with no shape in the rig.
        correspondence: the template's correspondence on the rig's neutral.
    """

    fields: dict
    table: dict
    missing: tuple[str, ...]
    correspondence: SurfaceCorrespondence


def ict_source_mesh(rig: IctRig) -> SourceMesh:
    """ICT's neutral as a correspondence source: the face region, its landmarks and its two eyeballs."""
    eyes = tuple(rig.triangles(a, b) for a, b in EYEBALLS)
    have_eyes = all(len(e) for e in eyes)  # empty when the mesh has no such vertices
    return SourceMesh(
        vertices=rig.neutral,
        triangles=rig.triangles(0, FACE_VERTICES),
        landmarks=rig.landmarks,
        eyeballs=eyes if have_eyes else None,
    )


def ict_correspondence(rig: IctRig) -> SurfaceCorrespondence:
    """The template's correspondence on the rig's neutral (one for the expression and identity parts)."""
    return template_correspondence(ict_source_mesh(rig))


def _shape_fields(rig: IctRig, corr: SurfaceCorrespondence, parts) -> tuple[dict, str] | None:
    """One AU's unsealed pieces from its (shape, gain) parts: {"": bilateral shapes' sum, "L": left, "R":
    right} (only the pieces it has) and the recipe."""
    t = topo.face_topology()
    sides: dict[str, np.ndarray] = {"": 0.0, "L": 0.0, "R": 0.0}
    recipe, lateral = [], False
    for shape, gain in parts:
        if shape in rig.expressions:
            sides[""] = sides[""] + gain * corr.sample(rig.expressions[shape])
            recipe.append(f"{gain:g}*{shape}")
            continue
        got = {s: rig.expressions.get(f"{shape}_{s}") for s in ("L", "R")}
        if all(v is None for v in got.values()):
            return None
        lateral = True
        one = {s: gain * corr.sample(v) for s, v in got.items() if v is not None}
        for s, other in (("L", "R"), ("R", "L")):
            if s not in one:  # only one side shipped: the other by mirror
                one[s] = _mirror_field(t, one[other])
        for s in ("L", "R"):
            sides[s] = sides[s] + one[s]
            recipe.append(f"{gain:g}*{shape}_{s}" + ("" if got[s] is not None else " (mirrored)"))
    if not lateral:
        del sides["L"], sides["R"]
    elif len(recipe) == 2 * len(parts):  # no bilateral shape
        del sides[""]
    return sides, "+".join(r.removeprefix("1*") for r in recipe)


def ict_action_unit_fields(rig: IctRig, corr: SurfaceCorrespondence | None = None) -> IctFields:
    """AU fields on our topology from a read rig (see ``ICT_AU_TABLE``); lip fields sealed like ours."""
    corr = ict_correspondence(rig) if corr is None else corr
    t = topo.face_topology()
    fields, table, missing = {}, {}, []
    for au, parts in ICT_AU_TABLE:
        made = _shape_fields(rig, corr, parts)
        if made is None:
            missing.append(au)
            continue
        sides, table[au] = made
        sealed = {s: _seal_lips(t, f) for s, f in sides.items()}  # a sum of sealed fields stays sealed
        fields.update({au + s: f.astype(np.float32) for s, f in sealed.items() if s})
        fields[au] = sum(sealed.values()).astype(np.float32)
    missing += [au for au in AU_NAMES if au not in fields and au not in missing]
    return IctFields(fields=fields, table=table, missing=tuple(missing), correspondence=corr)


def ict_identity_basis(
    rig: IctRig,
    num_modes: int = 40,
    *,
    deltas_are_modes: bool = True,
    corr: SurfaceCorrespondence | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """ICT's identity shapes on our topology, re-diagonalised: (basis f32[K, 478, 3] unit-norm, std f32[K]).

    ICT's 100 identity shapes are mutually orthogonal to 1e-4 (cosine) with decreasing norms: they are the
    modes of ICT's own PCA model, each at one standard deviation, not sampled people. So by default
    (``deltas_are_modes``) the prior is :math:`\\sum_k c_k d_k` with :math:`c \\sim N(0, I)`, whose
    covariance :math:`S^\\top S` (rows of S: the resampled deltas, mm) is re-diagonalised by an SVD of S
    (no centring): basis = right singular vectors, std = singular values. With ``deltas_are_modes=False``
    the rows are samples (centred PCA, std = singular value / sqrt(n - 1)). Same convention as
    ``default_identity_basis``.
    """
    if rig.identities is None or len(rig.identities) == 0:
        raise IctDataError(rig.path, "no identity shapes were read (read_ict(..., identity=True))")
    corr = ict_correspondence(rig) if corr is None else corr
    sampled = corr.sample(rig.identities)  # [S, 478, 3] mm
    flat = sampled.reshape(sampled.shape[0], -1)
    if not deltas_are_modes:
        flat = flat - flat.mean(0)
    _, sv, vt = np.linalg.svd(flat, full_matrices=False)
    k = min(num_modes, vt.shape[0])
    std = sv[:k] if deltas_are_modes else sv[:k] / np.sqrt(max(flat.shape[0] - 1, 1))
    return vt[:k].reshape(k, -1, 3).astype(np.float32), std.astype(np.float32)


def load_ict_identity_basis(folder, num_modes: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Read an ICT-FaceKit folder and build its identity basis (see ``ict_identity_basis``)."""
    return ict_identity_basis(read_ict(folder, identity=True), num_modes)


def _licence_note(rig: IctRig) -> str:
    head = "ICT-FaceKit (USC Institute for Creative Technologies), MIT licence; derived arrays."
    return head + (" Licence text: " + " ".join(rig.licence.split()) if rig.licence else "")


def import_ict_model(
    folder,
    *,
    identity: bool = False,
    identity_modes: int = 40,
    config: GalleryConfig = DEFAULT_GALLERY,
):
    """ICT-FaceKit folder -> AffectModel: its AU fields on our topology, the generated gallery, built;
    with ``identity`` the morphable model's identity basis is ICT's. The metadata names the source, the
    AU -> shape table, the AUs not built, the correspondence residuals and the licence.

    Raises:
        IctDataError: unreadable folder, or a rig without every AU of ``MINIMUM_AUS``.
    """
    rig = read_ict(folder, identity=identity)
    made = ict_action_unit_fields(rig)
    lacking = [au for au in MINIMUM_AUS if au not in made.fields]
    if lacking:
        have = ", ".join(a for a in AU_NAMES if a in made.fields) or "none"
        raise IctDataError(
            rig.path,
            f"{len(rig.expressions)} expression shapes give AUs {have}; an affect model needs at least "
            f"{', '.join(MINIMUM_AUS)} (missing {', '.join(lacking)})",
        )
    corr = made.correspondence
    meta = {
        "read_from": f"{rig.origin}: {rig.path}",
        "expression_shapes": len(rig.expressions),
        "au_table": made.table,
        "missing_aus": list(made.missing),
        "unused_aus": sorted((set(made.table) - set(AU_NAMES)), key=lambda a: int(a[2:])),
        "correspondence_mm": {
            "max_residual": round(float(corr.residual.max()), 3),
            "median_rigid_residual": round(float(np.median(corr.rigid_residual)), 3),
            "scale_mm_per_unit": round(corr.scale, 4),
        },
        "identity": "gp",
        "licence": _licence_note(rig),
    }
    id_basis = "gp"
    if identity:
        id_basis = ict_identity_basis(rig, identity_modes, corr=corr)
        meta["identity"] = f"ict-facekit ({id_basis[0].shape[0]} modes of {len(rig.identities)} shapes)"
    frames = generate_gallery(fields=made.fields, source="ict-facekit", **dataclasses.asdict(config))
    model = _build_model(
        frames,
        made.fields,
        name="ict-facekit",
        source=str(Path(folder).resolve()),
        metadata=meta,
        identity=id_basis,
    )
    return model
