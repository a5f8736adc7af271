"""Conditioner networks: MADE (masked autoregressive) and a plain MLP.

Both are pure functions of a plain parameter pytree::

    net = made(3, 2, hidden_units=(16, 16))
    params = net.init(jax.random.PRNGKey(0))
    out = net.apply(params, x)          # x [..., 3] -> out [..., 3, 2]

MADE (Germain et al., 2015) multiplies each dense kernel by a fixed binary mask derived from
unit *degrees*. Input ``i`` has degree ``deg(i)`` in ``1..D`` (its position in the
autoregressive ordering); hidden units get degrees cycled over ``1..D-1``. A hidden unit of
degree ``k`` may see inputs of degree ``<= k``; output ``d`` (degree ``deg(d)``) may see hidden
units of degree ``< deg(d)``. Hence output ``d`` depends only on inputs that come strictly
before ``d`` in the ordering. The masks are NumPy constants closed over by ``apply``: they are
never part of the trainable parameters.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from emf_jax.flows.base import Array, Params, PRNGKey, validate_event_size

__all__ = ["Network", "made", "mlp", "made_degrees"]

Activation = Callable[[Array], Array]
InputOrder = Union[str, Sequence[int]]


class Network(NamedTuple):
    """A stateless network: ``params = init(key)``, ``out = apply(params, x)``.

    Attributes:
      init: maps a PRNG key to the parameter pytree (a dict of ``{"kernel", "bias"}`` dicts).
      apply: maps ``(params, x[, context])`` to the network output.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> network = mlp(3, 2, hidden_units=(8,))
      >>> network.apply(network.init(jax.random.key(0)), jnp.ones((4, 3))).shape
      (4, 2)
    """

    init: Callable[[PRNGKey], Params]
    apply: Callable[..., Array]


def _validate_hidden_units(hidden_units: Sequence[int]) -> tuple[int, ...]:
    try:
        units = tuple(hidden_units)
    except TypeError:
        raise TypeError(
            f"hidden_units must be a sequence of positive ints, got {hidden_units!r}") from None
    for h in units:
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1:
            raise ValueError(f"hidden_units must contain positive ints, got {hidden_units!r}")
    return tuple(int(h) for h in units)


def _validate_nonnegative_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _dense_stack(
    sizes: Sequence[int],
    masks: Sequence[np.ndarray] | None,
    *,
    activation: Activation,
    output_init_scale: float,
    context_size: int,
    dtype: jnp.dtype,
) -> Network:
    """A stack of (optionally masked) dense layers; the last layer is linear."""
    num_dense = len(sizes) - 1
    names = [f"hidden_{i}" for i in range(num_dense - 1)] + ["output"]
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")

    shapes = [(sizes[i], sizes[i + 1]) for i in range(num_dense)]
    # The context feeds the first layer and (when there are hidden layers) the output layer
    # directly, so that every output, including a MADE's first, can depend on it.
    context_layers = (names[:1] + (["output"] if num_dense > 1 else [])) if context_size else []
    shapes += [(context_size, sizes[1] if name != "output" else sizes[-1])
               for name in context_layers]
    limits = [np.sqrt(6.0 / max(fan_in + fan_out, 1)) for fan_in, fan_out in shapes]
    offsets = np.cumsum([0] + [a * b for a, b in shapes])

    def init(key: PRNGKey) -> Params:
        # One uniform draw for all kernels (sliced below): one random-number kernel to compile.
        u = jax.random.uniform(key, (int(offsets[-1]),), dtype, -1.0, 1.0)
        kernels = [limit * u[start:stop].reshape(shape)  # Glorot-uniform
                   for limit, start, stop, shape in zip(limits, offsets[:-1], offsets[1:], shapes)]
        params = {name: {"kernel": kernel, "bias": jnp.zeros((size,), dtype)}
                  for name, kernel, size in zip(names, kernels, sizes[1:])}
        for name, kernel in zip(context_layers, kernels[num_dense:]):
            params[name]["context_kernel"] = kernel
        output = params["output"]
        for key_name in ("kernel", "context_kernel"):
            if key_name in output:
                output[key_name] = output[key_name] * jnp.asarray(output_init_scale, dtype)
        return params

    def apply(params: Params, x: Array, context: Array | None = None) -> Array:
        if context is not None and not context_size:
            raise ValueError("context was given but the network was built with context_size=0")
        if context_size:
            if context is None:
                raise ValueError(f"this network was built with context_size={context_size}; "
                                 "apply(params, x, context) needs a context")
            if context.shape[-1:] != (context_size,):
                raise ValueError(f"context must have last dimension {context_size}, "
                                 f"got shape {context.shape}")
        h = x
        for i, name in enumerate(names):
            kernel = params[name]["kernel"]
            if masks is not None:
                kernel = kernel * masks[i].astype(kernel.dtype)
            h = h @ kernel + params[name]["bias"]
            if name in context_layers:
                h = h + context @ params[name]["context_kernel"]
            if name != "output":
                h = activation(h)
        return h

    return Network(init, apply)


def mlp(
    input_size: int,
    output_size: int,
    *,
    hidden_units: Sequence[int] = (256, 256),
    activation: Activation = jax.nn.relu,
    output_init_scale: float = 1e-2,
    dtype: jnp.dtype = jnp.float32,
) -> Network:
    """A fully connected network ``[..., input_size] -> [..., output_size]``.

    Hidden layers use ``activation``; the output layer is linear. Kernels are Glorot-uniform,
    biases zero, and the output kernel is scaled by ``output_init_scale`` so that a conditioner
    starts near zero output (a flow layer near the identity) while every parameter still gets a
    nonzero gradient.

    Args:
      input_size: size of the last input axis (0 is allowed: the output is then a learned
        constant).
      output_size: size of the last output axis.
      hidden_units: widths of the hidden layers.
      activation: hidden activation.
      output_init_scale: multiplier of the output kernel at init (0 gives an exactly zero
        output at init, but then no gradient reaches the hidden layers on the first step).
      dtype: floating dtype of the parameters.

    Returns:
      A `Network` whose ``apply(params, x)`` returns ``[..., output_size]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = mlp(3, 4, hidden_units=(8,))
      >>> net.apply(net.init(jax.random.PRNGKey(0)), jnp.ones((2, 3))).shape
      (2, 4)
    """
    input_size = _validate_nonnegative_int(input_size, "input_size")
    output_size = _validate_nonnegative_int(output_size, "output_size")
    units = _validate_hidden_units(hidden_units)
    return _dense_stack((input_size, *units, output_size), None, activation=activation,
                        output_init_scale=output_init_scale, context_size=0, dtype=dtype)


def made_degrees(event_size: int, input_order: InputOrder = "left-to-right") -> np.ndarray:
    """The degree (1-based position in the autoregressive ordering) of each input.

    Args:
      event_size: number of inputs ``D``.
      input_order: ``"left-to-right"`` (input ``i`` has degree ``i + 1``), ``"right-to-left"``,
        or a permutation of ``range(D)`` listing the inputs in autoregressive order (the first
        listed input depends on nothing).

    Returns:
      An int array of shape ``[D]`` with values in ``1..D``.

    Example:
      >>> made_degrees(3, [2, 0, 1]).tolist()
      [2, 3, 1]
    """
    event_size = validate_event_size(event_size)
    if isinstance(input_order, str):
        if input_order == "left-to-right":
            return np.arange(1, event_size + 1)
        if input_order == "right-to-left":
            return np.arange(event_size, 0, -1)
        raise ValueError(
            "input_order must be 'left-to-right', 'right-to-left' or a permutation of "
            f"range({event_size}), got {input_order!r}")
    order = np.asarray(input_order)
    if order.shape != (event_size,) or sorted(order.tolist()) != list(range(event_size)):
        raise ValueError(
            f"input_order must be a permutation of range({event_size}), got {input_order!r}")
    degrees = np.empty(event_size, dtype=np.int64)
    degrees[order] = np.arange(1, event_size + 1)
    return degrees


def made(
    event_size: int,
    num_params: int,
    *,
    hidden_units: Sequence[int] = (512, 512),
    activation: Activation = jax.nn.relu,
    input_order: InputOrder = "left-to-right",
    context_size: int = 0,
    output_init_scale: float = 1e-2,
    dtype: jnp.dtype = jnp.float32,
) -> Network:
    """A masked autoregressive network (MADE): ``[..., D] -> [..., D, num_params]``.

    ``out[..., d, :]`` depends only on inputs that precede ``d`` in ``input_order`` (and on the
    optional ``context``, which feeds the first hidden layer and the output layer without a
    mask). With
    ``event_size == 1`` no input precedes the only output, so the output is a learned constant
    (the output bias); that is a valid, if trivial, autoregressive network.

    Hidden unit ``k`` of every hidden layer has degree ``k mod (D - 1) + 1``; masks follow from
    the degrees (see the module docstring) and are static constants, not parameters.

    Args:
      event_size: number of inputs ``D``.
      num_params: number of outputs per input dimension.
      hidden_units: widths of the hidden layers; widths ``>= D - 1`` let every output see
        every earlier input.
      activation: hidden activation (ReLU by default; ``jnp.tanh`` for the IAF baseline).
      input_order: see `made_degrees`.
      context_size: size of an optional conditioning input (0: none).
      output_init_scale: multiplier of the output kernel at init (see `mlp`).
      dtype: floating dtype of the parameters.

    Returns:
      A `Network` whose ``apply(params, x, context=None)`` returns ``[..., D, num_params]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> net = made(3, 2, hidden_units=(8,))
      >>> net.apply(net.init(jax.random.PRNGKey(0)), jnp.ones((5, 3))).shape
      (5, 3, 2)
    """
    event_size = validate_event_size(event_size)
    num_params = _validate_nonnegative_int(num_params, "num_params")
    if num_params == 0:
        raise ValueError("num_params must be >= 1, got 0")
    context_size = _validate_nonnegative_int(context_size, "context_size")
    units = _validate_hidden_units(hidden_units)

    in_degrees = made_degrees(event_size, input_order)
    hidden_degrees = [np.arange(h) % max(event_size - 1, 1) + 1 for h in units]
    out_degrees = np.repeat(in_degrees, num_params)  # unit d * num_params + p has degree deg(d)
    masks = []
    prev = in_degrees
    for deg in hidden_degrees:
        masks.append(deg[None, :] >= prev[:, None])
        prev = deg
    masks.append(out_degrees[None, :] > prev[:, None])

    net = _dense_stack((event_size, *units, event_size * num_params), masks,
                       activation=activation, output_init_scale=output_init_scale,
                       context_size=context_size, dtype=dtype)

    def apply(params: Params, x: Array, context: Array | None = None) -> Array:
        if x.shape[-1:] != (event_size,):
            raise ValueError(f"x must have last dimension {event_size}, got shape {x.shape}")
        out = net.apply(params, x, context)
        return out.reshape(out.shape[:-1] + (event_size, num_params))

    return Network(net.init, apply)
