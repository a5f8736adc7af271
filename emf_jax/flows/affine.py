"""A learnable affine flow ``y = shift + L x``: elementwise (diagonal) or lower-triangular.

With ``scale = exp(log_scale)`` and ``L = diag(scale)`` (elementwise) or ``L = diag(scale) +
strictly_lower(lower)`` (lower-triangular):

- forward: ``y = shift + L x``, ``log|det dy/dx| = sum_d log_scale_d``
- inverse: ``x = L^{-1} (y - shift)`` (a triangular solve), ``log|det dx/dy| = -sum_d
  log_scale_d``

``init`` gives the exact identity (``shift = 0``, ``log_scale = 0``, ``lower = 0``).
`scale_affine_params` multiplies the scale of given parameters, e.g. to start a surrogate
with its base noise shrunk by a temperature (see `emf_jax.initialization`). At the bottom
of a flow the stage turns ``N(0, I)`` into any Gaussian with that scale structure, so a flow
with it can represent at least that Gaussian pushed through the rest.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from emf_jax.flows.base import Array, Flow, Params, PRNGKey, check_input, validate_event_size

__all__ = ["affine_flow", "scale_affine_params"]


def affine_flow(event_size: int, *, lower_triangular: bool = False,
                dtype: jnp.dtype = jnp.float32) -> Flow:
    """The affine flow ``y = shift + L x`` (see the module docstring for the formulas).

    Args:
      event_size: ``D``.
      lower_triangular: if True, ``L`` is lower-triangular with a positive diagonal (a
        full-rank Gaussian at the bottom of a flow); else diagonal (``D`` scales).
      dtype: parameter dtype.

    Returns:
      A `Flow` whose parameters are ``{"shift": [D], "log_scale": [D]}``, plus ``"lower":
      [D, D]`` (only its strictly lower part is used) when ``lower_triangular``; `init`
      gives the exact identity.

    Raises:
      TypeError: if ``lower_triangular`` is not a bool.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> flow = affine_flow(2, lower_triangular=True)
      >>> params = flow.init(jax.random.key(0))
      >>> params = dict(params, shift=jnp.array([1.0, 0.0]),
      ...               log_scale=jnp.log(jnp.array([2.0, 0.5])),
      ...               lower=jnp.array([[0.0, 0.0], [3.0, 0.0]]))
      >>> y, log_det = flow.forward_and_log_det(params, jnp.array([1.0, 1.0]))
      >>> y.tolist(), round(float(log_det), 6)
      ([3.0, 3.5], 0.0)
      >>> x, _ = flow.inverse_and_log_det(params, y)
      >>> [round(v, 5) for v in x.tolist()]
      [1.0, 1.0]
    """
    event_size = validate_event_size(event_size)
    if not isinstance(lower_triangular, bool):
        raise TypeError(f"`lower_triangular` must be a bool, got {lower_triangular!r}.")

    def init(key: PRNGKey) -> Params:
        del key
        params = {"shift": jnp.zeros((event_size,), dtype),
                  "log_scale": jnp.zeros((event_size,), dtype)}
        if lower_triangular:
            params["lower"] = jnp.zeros((event_size, event_size), dtype)
        return params

    def matrix(params: Params) -> Array:
        scale = jnp.exp(params["log_scale"])
        return jnp.tril(params["lower"], -1) + jnp.diag(scale)

    def log_det(params: Params, batch_shape: tuple, dtype) -> Array:
        return jnp.broadcast_to(jnp.sum(params["log_scale"]), batch_shape).astype(dtype)

    def forward_and_log_det(params: Params, x: Array) -> tuple[Array, Array]:
        x = check_input(x, event_size)
        if lower_triangular:
            y = params["shift"] + jnp.einsum("ij,...j->...i", matrix(params), x)
        else:
            y = params["shift"] + jnp.exp(params["log_scale"]) * x
        return y, log_det(params, y.shape[:-1], y.dtype)

    def inverse_and_log_det(params: Params, y: Array) -> tuple[Array, Array]:
        y = check_input(y, event_size, "y")
        centred = y - params["shift"]
        if lower_triangular:
            flat = centred.reshape((-1, event_size)).T
            x = jax.scipy.linalg.solve_triangular(matrix(params), flat, lower=True)
            x = x.T.reshape(centred.shape)
        else:
            x = centred * jnp.exp(-params["log_scale"])
        return x, -log_det(params, x.shape[:-1], x.dtype)

    return Flow(init, forward_and_log_det, inverse_and_log_det, event_size)


def scale_affine_params(params: Params, scale: Array) -> Params:
    """The parameters of an `affine_flow` with ``L`` multiplied by ``scale`` (a scalar).

    ``log_scale`` gains ``log(scale)`` and the strictly lower part is multiplied by
    ``scale``, so ``L -> scale * L``; the shift is unchanged. Traceable: ``scale`` may be a
    value computed under `jax.jit`.

    Args:
      params: parameters of an `affine_flow`.
      scale: a positive scalar.

    Returns:
      The new parameters (same structure and dtypes).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> flow = affine_flow(2)
      >>> params = scale_affine_params(flow.init(jax.random.key(0)), 0.5)
      >>> flow.forward_and_log_det(params, jnp.array([2.0, -4.0]))[0].tolist()
      [1.0, -2.0]
    """
    log_scale = params["log_scale"]
    scale = jnp.asarray(scale, log_scale.dtype)
    new = dict(params, log_scale=log_scale + jnp.log(scale))
    if "lower" in params:
        new["lower"] = params["lower"] * scale
    return new
