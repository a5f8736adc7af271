"""Model-agnostic normalizing flows in pure JAX.

Flows map arrays to arrays and know nothing of models or tracing. A `Flow` is a named tuple of
pure functions of a plain parameter pytree (see `emf_jax.flows.base`); `FlowBijector` wraps a
flow and its parameters as a ``tfb.Bijector``.

Factories: `masked_autoregressive_flow` (IAF/MAF), `real_nvp_flow`, `neural_spline_flow`,
`affine_flow` (elementwise or lower-triangular), `identity_flow`, `chain_flows`. Stacked
layers share one traced body (``jax.lax.scan``), so compile time does not grow with depth.
"""
from emf_jax.flows.affine import affine_flow, scale_affine_params
from emf_jax.flows.autoregressive import masked_autoregressive_flow, masked_autoregressive_layer
from emf_jax.flows.base import (
    Elementwise,
    Flow,
    FlowBijector,
    affine_elementwise,
    chain_flows,
    identity_flow,
)
from emf_jax.flows.coupling import coupling_layer, real_nvp_flow
from emf_jax.flows.made import Network, made, made_degrees, mlp
from emf_jax.flows.permutations import (
    inverse_permutation,
    permutation_flow,
    random_permutation,
    reverse_permutation,
)
from emf_jax.flows.splines import neural_spline_flow, rational_quadratic_spline
from emf_jax.flows.stack import stack_layers

__all__ = [
    "Elementwise",
    "Flow",
    "FlowBijector",
    "Network",
    "affine_elementwise",
    "affine_flow",
    "chain_flows",
    "coupling_layer",
    "identity_flow",
    "inverse_permutation",
    "made",
    "made_degrees",
    "masked_autoregressive_flow",
    "masked_autoregressive_layer",
    "mlp",
    "neural_spline_flow",
    "permutation_flow",
    "random_permutation",
    "rational_quadratic_spline",
    "real_nvp_flow",
    "reverse_permutation",
    "scale_affine_params",
    "stack_layers",
]
