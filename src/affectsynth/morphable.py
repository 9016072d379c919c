"""3D morphable model of the face on the FaceMesh topology, and its fit to detected landmarks."""

import equinox as eqx
from jaxtyping import Array, Float


class MorphableModel(eqx.Module):
    """Linear face model in the canonical frame (mm): ``mean + sum_i a_i B_id[i] + sum_j e_j B_exp[j]``.

    Attributes:
        mean: f32[V, 3] neutral mean face (the topology's template by default).
        identity_basis: f32[K_id, V, 3] identity modes.
        identity_std: f32[K_id] prior standard deviation of each identity coefficient.
        expression_basis: f32[K_exp, V, 3] expression modes (e.g. Action Unit fields at intensity 1).
        expression_std: f32[K_exp] prior standard deviation of each expression coefficient.
        expression_names: names of the expression modes (static).
    """

    mean: Float[Array, "V 3"]
    identity_basis: Float[Array, "Ki V 3"]
    identity_std: Float[Array, " Ki"]
    expression_basis: Float[Array, "Ke V 3"]
    expression_std: Float[Array, " Ke"]
    expression_names: tuple[str, ...] = eqx.field(static=True, default=())
