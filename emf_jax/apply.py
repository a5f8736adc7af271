"""Applying a variable's map, gate and support bijector: one variable or a whole chain.

This room sits above `emf_jax.transforms` (the maps) and `emf_jax.gates` (the gates) and is
imported by `emf_jax.structured` only. A map comes in one of three kinds, dispatched here and
nowhere else: an `AffineTransform`, a `MonotoneTransform` (both handled by the gates), or a
`ChainTransform` (a `tfd.MarkovChain`, scanned over its steps)::

    forward:   e  --gated map g-->  u  --support bijector B-->  x
    inverse:   x  --B⁻¹-->  u  --g⁻¹-->  e

For a chain, step 0 uses the initial state prior's map and step k ≥ 1 the map of
``transition_fn(k − 1, x_{k−1})``; the forward pass is a `lax.scan` (traced once whatever the
length), the inverse is vectorised over the steps.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from emf_jax.gates import gated_forward, gated_inverse
from emf_jax.transforms.base import (
    Transform,
    support_forward,
    support_forward_log_det,
    support_inverse,
    support_inverse_log_det,
)
from emf_jax.transforms.markov_chain import ChainTransform

__all__ = ["apply_forward", "apply_inverse"]

Array = jax.Array


def _zero(like: Array) -> Array:
    return jnp.zeros((), like.dtype)


def _step_forward(t: Transform, inputs: Array, w: Optional[Array], apply_map: bool,
                  apply_support: bool) -> tuple[Array, Array, Array]:
    if apply_map:
        u, log_det = gated_forward(t, inputs, w)
    else:
        u, log_det = inputs, _zero(inputs)
    x = support_forward(t, u)
    if apply_support and t.support_bijector is not None:
        log_det = log_det + support_forward_log_det(t, u)
    return (x if apply_support else u), x, log_det


def _step_inverse(t: Transform, inputs: Array, w: Optional[Array], apply_map: bool,
                  apply_support: bool) -> tuple[Array, Array, Array]:
    if apply_support:
        x = inputs
        u = support_inverse(t, x)
        log_det = (_zero(x) if t.support_bijector is None else support_inverse_log_det(t, x))
    else:
        u = inputs
        x = support_forward(t, u)
        log_det = _zero(u)
    e = u
    if apply_map:
        e, map_log_det = gated_inverse(t, u, w)
        log_det = log_det + map_log_det
    return e, x, log_det


def apply_forward(t: Any, inputs: Array, w: Optional[Array] = None, *, apply_map: bool = True,
                  apply_support: bool = True) -> tuple[Array, Array, Array]:
    """One variable's (gated) map: noise ``e`` → ``u`` → value ``x``, and its log-det.

    Args:
      t: the variable's map (`transform_for(dist)`): an affine, monotone or chain map.
      inputs: ``e`` (noise of the unconstrained shape) when `apply_map`, else ``u``.
      w: the gate parameter (scalar; for a chain also ``[T]``: one per step), or None for
        the ungated map.
      apply_map: apply the gated map ``e → u``.
      apply_support: apply the support bijector ``u → x``.

    Returns:
      ``(output, x, log_det)``: the output (``x`` with `apply_support`, else ``u``), the
      value ``x`` in the support (what the model's later variables condition on) and
      log|det| of the parts applied, summed over the whole value.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> import jax.numpy as jnp
      >>> from emf_jax.transforms import transform_for
      >>> tfd = tfp.distributions
      >>> chain = tfd.MarkovChain(tfd.Normal(0., 1.), lambda _, x: tfd.Normal(x, 0.5), 4)
      >>> out, x, log_det = apply_forward(transform_for(chain), jnp.ones(4))
      >>> [float(v) for v in out], round(float(log_det), 4)  # 3 log 0.5
      ([1.0, 1.5, 2.0, 2.5], -2.0794)
    """
    if isinstance(t, ChainTransform):
        return _chain_scan(t, inputs, w, _step_forward, apply_map, apply_support)
    return _step_forward(t, inputs, w, apply_map, apply_support)


def apply_inverse(t: Any, inputs: Array, w: Optional[Array] = None, *, apply_map: bool = True,
                  apply_support: bool = True) -> tuple[Array, Array, Array]:
    """The inverse of `apply_forward`: ``(noise or u, x, log|det|)`` from ``x`` (or ``u``).

    A chain's inverse needs no scan when the values are given: every step is inverted at
    once.

    Args:
      t: the variable's map (`transform_for(dist)`): an affine, monotone or chain map.
      inputs: ``x`` (a value in the support) when `apply_support`, else ``u``.
      w: the gate parameter (scalar; for a chain also ``[T]``: one per step), or None for
        the ungated map.
      apply_map: invert the gated map ``u → e``.
      apply_support: invert the support bijector ``x → u``.

    Returns:
      ``(output, x, log_det)``: ``e`` with `apply_map` (else ``u``), the value ``x`` and
      the log|det| of the inverse of the parts applied, summed over the whole value.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> import jax.numpy as jnp
      >>> from emf_jax.transforms import transform_for
      >>> tfd = tfp.distributions
      >>> chain = tfd.MarkovChain(tfd.Normal(0., 1.), lambda _, x: tfd.Normal(x, 0.5), 4)
      >>> e, x, log_det = apply_inverse(transform_for(chain), jnp.array([1.0, 1.5, 2.0, 2.5]))
      >>> [float(v) for v in e], round(float(log_det), 4)    # apply_forward's example undone
      ([1.0, 1.0, 1.0, 1.0], 2.0794)
    """
    if isinstance(t, ChainTransform):
        if apply_support:
            return _chain_inverse_parallel(t, inputs, w, apply_map)
        return _chain_scan(t, inputs, w, _step_inverse, apply_map, apply_support)
    return _step_inverse(t, inputs, w, apply_map, apply_support)


# -- chains ------------------------------------------------------------------------------------


def _time_axis(t: ChainTransform, value: Array) -> int:
    axis = value.ndim - 1 - len(t.step_event_shape)
    if axis < 0 or value.shape[axis] != t.num_steps:
        raise ValueError(f"a MarkovChain of {t.num_steps} steps with step event shape "
                         f"{t.step_event_shape} got a value of shape {value.shape}")
    return axis


def _split_gates(t: ChainTransform, w: Optional[Array]) -> tuple[Any, Any, bool]:
    """(gate of step 0, gates of steps 1.., whether the gates are per step)."""
    if w is None:
        return None, None, False
    w = jnp.asarray(w)
    if w.shape == ():
        return w, w, False
    if w.shape == (t.num_steps,):
        return w[0], w[1:], True
    raise ValueError(f"the gate of a MarkovChain of {t.num_steps} steps must be a scalar or "
                     f"have shape ({t.num_steps},), got shape {w.shape}")


def _support_is_identity(t: ChainTransform, state: Array) -> bool:
    """Whether every step's support is the real line (a static fact, probed at trace time)."""
    if t.initial.support_bijector is not None:
        return False
    return (t.num_steps == 1 or t.step_transform(jnp.zeros((), jnp.int32), state)
            .support_bijector is None)


def _chain_scan(t: ChainTransform, inputs: Array, w: Optional[Array], step_fn: Callable,
                apply_map: bool, apply_support: bool) -> tuple[Array, Array, Array]:
    axis = _time_axis(t, inputs)
    steps = jnp.moveaxis(inputs, axis, 0)
    if not apply_map and _support_is_identity(t, steps[0]):
        # The support half of an unconstrained chain is the identity: no scan at all.
        return inputs, inputs, _zero(inputs)
    w0, w_rest, per_step = _split_gates(t, w)
    out0, x0, log_det0 = step_fn(t.initial, steps[0], w0, apply_map, apply_support)
    if t.num_steps == 1:
        return (jnp.moveaxis(out0[None], 0, axis), jnp.moveaxis(x0[None], 0, axis), log_det0)

    def body(carry, step_inputs):
        x_previous, total = carry
        k, inputs_k, w_k = step_inputs
        w_k = w_k if per_step else w_rest
        out_k, x_k, log_det_k = step_fn(t.step_transform(k, x_previous), inputs_k, w_k,
                                        apply_map, apply_support)
        return (x_k.astype(x0.dtype), total + log_det_k), (out_k.astype(out0.dtype), x_k)

    ks = jnp.arange(t.num_steps - 1, dtype=jnp.int32)
    (_, log_det), (outs, xs) = jax.lax.scan(
        body, (x0, log_det0), (ks, steps[1:], w_rest if per_step else None))
    out = jnp.concatenate([out0[None], outs], axis=0)
    x = jnp.concatenate([x0[None], xs.astype(x0.dtype)], axis=0)
    return jnp.moveaxis(out, 0, axis), jnp.moveaxis(x, 0, axis), log_det


def _chain_inverse_parallel(t: ChainTransform, x: Array, w: Optional[Array],
                            apply_map: bool) -> tuple[Array, Array, Array]:
    axis = _time_axis(t, x)
    steps = jnp.moveaxis(x, axis, 0)
    if not apply_map and _support_is_identity(t, steps[0]):
        return x, x, _zero(x)
    w0, w_rest, per_step = _split_gates(t, w)
    e0, _, log_det0 = _step_inverse(t.initial, steps[0], w0, apply_map, True)
    if t.num_steps == 1:
        return jnp.moveaxis(e0[None], 0, axis), x, log_det0

    def one_step(k, x_previous, x_k, w_k):
        return _step_inverse(t.step_transform(k, x_previous), x_k, w_k, apply_map, True)

    ks = jnp.arange(t.num_steps - 1, dtype=jnp.int32)
    es, _, log_dets = jax.vmap(one_step, in_axes=(0, 0, 0, 0 if per_step else None))(
        ks, steps[:-1], steps[1:], w_rest)
    e = jnp.concatenate([e0[None], es.astype(e0.dtype)], axis=0)
    return jnp.moveaxis(e, 0, axis), x, log_det0 + jnp.sum(log_dets)
