"""Coupling layers (RealNVP; Dinh et al., 2017) with an MLP conditioner.

The event is split into halves ``x = (x_a, x_b)`` with ``x_a = x[..., :D // 2]``. With an
elementwise transform ``tau``:

- forward: ``y_a = x_a``, ``y_b = tau(x_b; theta(x_a))``
- inverse: ``x_a = y_a``, ``x_b = tau^{-1}(y_b; theta(y_a))``
- ``log|det dy/dx| = sum_j log tau'(x_b[j]; theta_j(x_a))``

Both directions take one network pass. A permutation between stacked layers (the reversal by
default) makes the halves alternate.

``event_size == 1``: the conditioning half is empty, so ``theta`` is a learned constant and the
layer is a learned elementwise transform of the single coordinate (a sensible fall-back rather
than an error; it is the ``D = 1`` case of the formulas above).
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from emf_jax.flows.base import (
    Array,
    Elementwise,
    Flow,
    Params,
    PRNGKey,
    affine_elementwise,
    check_input,
    resolve_elementwise,
    validate_event_size,
)
from emf_jax.flows.made import mlp
from emf_jax.flows.permutations import PermutationSpec
from emf_jax.flows.stack import stack_layers

__all__ = ["coupling_layer", "real_nvp_flow"]


def coupling_layer(
    event_size: int,
    *,
    elementwise: Elementwise | None = None,
    hidden_units: Sequence[int] = (256, 256),
    activation: Callable[[Array], Array] = jax.nn.relu,
    output_init_scale: float = 1e-2,
    dtype: jnp.dtype = jnp.float32,
) -> Flow:
    """One coupling layer: ``x[..., D//2:]`` is transformed conditioned on ``x[..., :D//2]``.

    Args:
      event_size: ``D`` (``D == 1`` gives a learned elementwise transform; see the module
        docstring).
      elementwise: the transform ``tau``; default `affine_elementwise()` (RealNVP). Pass
        `rational_quadratic_spline(...)` for a neural spline coupling layer.
      hidden_units: MLP hidden widths.
      activation: MLP hidden activation.
      output_init_scale: MLP output-kernel scale at init (0: exactly the identity at init).
      dtype: parameter dtype.

    Returns:
      A `Flow`; its parameters are ``{"conditioner": mlp_params}``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> layer = coupling_layer(3, hidden_units=(8,))
      >>> y, ldj = layer.forward_and_log_det(layer.init(jax.random.PRNGKey(0)), jnp.ones(3))
      >>> y[:1].tolist()
      [1.0]
    """
    event_size = validate_event_size(event_size)
    elementwise = resolve_elementwise(elementwise)
    split = event_size // 2
    num_transformed = event_size - split
    num_params = elementwise.num_params
    net = mlp(split, num_transformed * num_params, hidden_units=hidden_units,
              activation=activation, output_init_scale=output_init_scale, dtype=dtype)

    def init(key: PRNGKey) -> Params:
        return {"conditioner": net.init(key)}

    def _raw(params: Params, z_a: Array) -> Array:
        raw = net.apply(params["conditioner"], z_a)
        return raw.reshape(raw.shape[:-1] + (num_transformed, num_params))

    def forward_and_log_det(params: Params, x: Array) -> tuple[Array, Array]:
        x = check_input(x, event_size)
        x_a, x_b = x[..., :split], x[..., split:]
        y_b, ldj = elementwise.forward(_raw(params, x_a), x_b)
        return jnp.concatenate([x_a.astype(y_b.dtype), y_b], axis=-1), jnp.sum(ldj, axis=-1)

    def inverse_and_log_det(params: Params, y: Array) -> tuple[Array, Array]:
        y = check_input(y, event_size, "y")
        y_a, y_b = y[..., :split], y[..., split:]
        x_b, ldj = elementwise.inverse(_raw(params, y_a), y_b)
        return jnp.concatenate([y_a.astype(x_b.dtype), x_b], axis=-1), jnp.sum(ldj, axis=-1)

    return Flow(init, forward_and_log_det, inverse_and_log_det, event_size)


def real_nvp_flow(
    event_size: int, *, num_layers: int = 4, hidden_units: Sequence[int] = (256, 256),
    activation: Callable[[Array], Array] = jax.nn.relu, permutation: PermutationSpec = "reverse",
    permutation_seed: int = 0, min_scale: float = 1e-3, max_log_scale: float | None = None,
    max_shift: float | None = None, output_init_scale: float = 1e-2, dtype: jnp.dtype = jnp.float32,
) -> Flow:
    """A RealNVP flow: affine coupling layers with a permutation (reversal) between them.

    Each layer maps ``y_b = scale(x_a) * x_b + shift(x_a)``, ``y_a = x_a`` with
    ``scale = 1 + (1 - min_scale) elu(.)`` starting at 1; log-det ``sum log scale``.

    Args:
      event_size: ``D`` (``D == 1``: each layer is a learned affine map; see the module
        docstring).
      num_layers: number of coupling layers.
      hidden_units: MLP hidden widths.
      activation: MLP hidden activation.
      permutation: between layers; see `stack_layers`. Use a non-trivial permutation, or
        every layer transforms the same half.
      permutation_seed: seed of a ``"random"`` permutation.
      min_scale: bound of the affine map, as in `masked_autoregressive_flow`.
      max_log_scale: bound of the affine map, as in `masked_autoregressive_flow`.
      max_shift: bound of the affine map, as in `masked_autoregressive_flow`.
      output_init_scale: see `coupling_layer`.
      dtype: parameter dtype.

    Returns:
      A `Flow` whose parameters are one coupling layer's ``{"conditioner": ...}``, stacked by
      `stack_layers` on a leading axis of size ``num_layers``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> flow = real_nvp_flow(4, num_layers=2, hidden_units=(8,))
      >>> params = flow.init(jax.random.PRNGKey(0))
      >>> flow.inverse_and_log_det(params, jnp.zeros((3, 4)))[0].shape
      (3, 4)
    """
    elementwise = affine_elementwise(min_scale=min_scale, max_log_scale=max_log_scale,
                                     max_shift=max_shift)
    layer = coupling_layer(event_size, elementwise=elementwise, hidden_units=hidden_units,
                           activation=activation, output_init_scale=output_init_scale,
                           dtype=dtype)
    return stack_layers(layer, num_layers, permutation=permutation,
                        permutation_seed=permutation_seed)
