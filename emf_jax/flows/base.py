"""The common interface of emf_jax flows: `Flow`, elementwise transforms, composition, and
`FlowBijector`, the bridge to TFP.

A flow is a bijection of ``R^D`` given as pure functions of a plain parameter pytree::

    params = flow.init(key)
    y, fldj = flow.forward_and_log_det(params, x)     # x [..., D] -> y [..., D], fldj [...]
    x, ildj = flow.inverse_and_log_det(params, y)     # ildj = -fldj at the matching point

Flows know nothing of models or tracing; they map arrays to arrays. Leading batch dimensions
are arbitrary. The dtype of the outputs is the promotion of the input and parameter dtypes
(use the factories' ``dtype=`` option and inputs of that dtype).
"""
from __future__ import annotations

from typing import Any, Callable, Generic, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp
from tensorflow_probability.substrates.jax.internal import cache_util

tfb = tfp.bijectors

__all__ = [
    "Array",
    "PRNGKey",
    "Params",
    "Flow",
    "Elementwise",
    "affine_elementwise",
    "positive_from_raw",
    "identity_flow",
    "chain_flows",
    "FlowBijector",
    "HoldsFlow",
    "validate_event_size",
    "check_input",
    "resolve_elementwise",
    "no_params",
]

Array = jax.Array
PRNGKey = jax.Array
Params = Any  # a pytree of arrays (nested dicts / tuples)


class Flow(NamedTuple):
    """A parameterised bijection of ``R^event_size``, as pure functions.

    Attributes:
      init: ``init(key) -> params``, a plain pytree of arrays.
      forward_and_log_det: ``(params, x[..., D]) -> (y[..., D], log|det dy/dx|[...])``.
      inverse_and_log_det: ``(params, y[..., D]) -> (x[..., D], log|det dx/dy|[...])``.
      event_size: ``D``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> flow = identity_flow(3)
      >>> params = flow.init(jax.random.key(0))
      >>> y, log_det = flow.forward_and_log_det(params, jnp.ones((5, 3)))
      >>> y.shape, log_det.shape, flow.event_size
      ((5, 3), (5,), 3)
    """

    init: Callable[[PRNGKey], Params]
    forward_and_log_det: Callable[[Params, Array], tuple[Array, Array]]
    inverse_and_log_det: Callable[[Params, Array], tuple[Array, Array]]
    event_size: int


class Elementwise(NamedTuple):
    """A scalar monotone bijection applied elementwise, with unconstrained parameters.

    Attributes:
      num_params: number of raw parameters per element.
      forward: ``(raw[..., num_params], x[...]) -> (y[...], log|dy/dx|[...])``.
      inverse: ``(raw[..., num_params], y[...]) -> (x[...], log|dx/dy|[...])``.

    ``raw = 0`` must give the identity, so that a conditioner with a zero output layer gives an
    identity flow layer.

    Example:
      >>> import jax.numpy as jnp
      >>> transform = affine_elementwise()
      >>> y, log_det = transform.forward(jnp.zeros((4, transform.num_params)), jnp.arange(4.))
      >>> y.tolist(), log_det.tolist()
      ([0.0, 1.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0])
    """

    num_params: int
    forward: Callable[[Array, Array], tuple[Array, Array]]
    inverse: Callable[[Array, Array], tuple[Array, Array]]


def validate_event_size(event_size: int, name: str = "event_size") -> int:
    """Returns ``event_size`` as an int, raising if it is not a positive integer.

    The flow factories call it on their ``event_size`` argument, so a bad size fails when the
    flow is built rather than inside a traced computation.

    Args:
      event_size: the value to check (a Python or NumPy integer; not a bool).
      name: the argument's name, for the error messages.

    Returns:
      ``event_size`` as a Python int.

    Raises:
      TypeError: if ``event_size`` is not an integer.
      ValueError: if it is smaller than 1.

    Example:
      >>> import numpy as np
      >>> validate_event_size(np.int64(3))
      3
      >>> try:
      ...     validate_event_size(0, "num_features")
      ... except ValueError as err:
      ...     print(err)
      num_features must be >= 1, got 0
    """
    if isinstance(event_size, bool) or not isinstance(event_size, (int, np.integer)):
        raise TypeError(f"{name} must be a positive int, got {type(event_size).__name__}")
    if event_size < 1:
        raise ValueError(f"{name} must be >= 1, got {event_size}")
    return int(event_size)


def check_input(x: Array, event_size: int, name: str = "x") -> Array:
    """Converts ``x`` to an array and checks it is floating with last dimension ``event_size``.

    Every flow calls it on its inputs (shapes are static, so this costs nothing under jit).

    Args:
      x: the input, ``[..., event_size]``.
      event_size: the expected size of the last dimension.
      name: the argument's name, for the error messages.

    Returns:
      ``x`` as a JAX array.

    Raises:
      TypeError: if ``x`` is not floating.
      ValueError: if ``x`` is a scalar or its last dimension is not ``event_size``.

    Example:
      >>> check_input([[0.5, 1.0]], 2).shape
      (1, 2)
      >>> try:
      ...     check_input([True, False], 2, "y")
      ... except TypeError as err:
      ...     print(err)
      y must be a floating array, got dtype bool
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating array, got dtype {x.dtype}")
    if x.ndim == 0 or x.shape[-1] != event_size:
        raise ValueError(
            f"{name} must have shape [..., {event_size}] (event_size={event_size}), "
            f"got shape {x.shape}")
    return x


def resolve_elementwise(elementwise: Elementwise | None) -> Elementwise:
    """The layer factories' ``elementwise=`` argument: None means `affine_elementwise()`.

    One place for the default and the type check, so that the autoregressive and coupling
    layers cannot disagree on either.

    Args:
      elementwise: an `Elementwise`, or None for the affine default.

    Returns:
      The `Elementwise` to use.

    Raises:
      TypeError: if ``elementwise`` is neither None nor an `Elementwise`.

    Example:
      >>> resolve_elementwise(None).num_params
      2
    """
    if elementwise is None:
        return affine_elementwise()
    if not isinstance(elementwise, Elementwise):
        raise TypeError(f"elementwise must be an Elementwise, got {type(elementwise).__name__}")
    return elementwise


def no_params(key: PRNGKey) -> Params:
    """The ``init`` of a flow without parameters: ignores ``key`` and returns ``{}``.

    Args:
      key: a PRNG key (unused).

    Returns:
      An empty dict.

    Example:
      >>> no_params(None)
      {}
    """
    del key
    return {}


def positive_from_raw(raw: Array, min_value: float) -> tuple[Array, Array]:
    """Maps raw values to ``v = 1 + (1 - min_value) * elu(raw)`` and returns ``(v, log v)``.

    ``v`` is smooth (C1) and increasing, exactly 1 at ``raw = 0``, tends to ``min_value`` as
    ``raw -> -inf`` and grows linearly for ``raw > 0`` (like a shifted softplus, but with an
    exact 1 at 0 so that a zero conditioner output gives an exact identity).

    Args:
      raw: unconstrained values (e.g. a conditioner's outputs).
      min_value: the infimum of ``v``, in (0, 1).

    Returns:
      ``(v, log v)``, both of the shape of `raw` (``log v`` computed as ``log1p``, precise
      near ``raw = 0``).

    Example:
      >>> import jax.numpy as jnp
      >>> v, log_v = positive_from_raw(jnp.array([-100.0, 0.0, 1.0]), 0.1)
      >>> [round(float(a), 4) for a in v], round(float(log_v[1]), 4)
      ([0.1, 1.0, 1.9], 0.0)
    """
    delta = (1.0 - min_value) * jax.nn.elu(raw)
    return 1.0 + delta, jnp.log1p(delta)


def affine_elementwise(*, min_scale: float = 1e-3, max_log_scale: float | None = None,
                       max_shift: float | None = None) -> Elementwise:
    """The elementwise affine map ``y = scale * x + shift``.

    With ``raw = (r, u)``: ``scale = 1 + (1 - min_scale) * elu(u)`` (see
    `positive_from_raw`) and ``shift = r``, so ``raw = 0`` gives scale 1 and shift 0 (exactly
    the identity), and the scale stays above ``min_scale`` (a well-conditioned inverse).

    Bounds (off by default). A conditioner far outside its training inputs extrapolates its
    outputs (linearly for ReLU networks), and an unbounded log-scale or shift makes the
    log-density of such points arbitrarily bad. With ``max_log_scale = B`` the log-scale is
    soft-clipped, ``log scale = B tanh(log(1 + (1 - min_scale) elu(u)) / B)``, so
    ``|log scale| < B``; with ``max_shift = S``, ``shift = S tanh(r / S)``, so
    ``|shift| < S``. Both clips have slope 1 at 0: the identity at ``raw = 0`` and the
    behaviour near it are unchanged.

    - forward: ``y = scale * x + shift``, log-det ``log(scale)``
    - inverse: ``x = (y - shift) / scale``, log-det ``-log(scale)``

    Args:
      min_scale: lower bound of the scale, in (0, 1).
      max_log_scale: bound ``B > 0`` of ``|log scale|``, or None (unbounded above).
      max_shift: bound ``S > 0`` of ``|shift|``, or None (unbounded).

    Returns:
      An `Elementwise` with ``num_params == 2``.

    Raises:
      ValueError: for a bound out of range.

    Example:
      >>> import jax.numpy as jnp
      >>> t = affine_elementwise()
      >>> y, ldj = t.forward(jnp.zeros((3, 2)), jnp.arange(3.0))
      >>> y.tolist(), ldj.tolist()
      ([0.0, 1.0, 2.0], [0.0, 0.0, 0.0])
      >>> bounded = affine_elementwise(max_log_scale=2.0, max_shift=5.0)
      >>> y, ldj = bounded.forward(jnp.array([[1e6, 1e6]]), jnp.zeros(1))
      >>> bool(y[0] <= 5.0), bool(ldj[0] <= 2.0)
      (True, True)
    """
    if not 0.0 < min_scale < 1.0:
        raise ValueError(f"min_scale must be in (0, 1), got {min_scale}")
    for name, bound in (("max_log_scale", max_log_scale), ("max_shift", max_shift)):
        if bound is not None and not (isinstance(bound, (int, float, np.floating))
                                      and 0.0 < float(bound) < float("inf")):
            raise ValueError(f"{name} must be a positive finite number or None, got {bound!r}")

    def scale_and_shift(raw: Array) -> tuple[Array, Array, Array]:
        shift = raw[..., 0]
        if max_shift is not None:
            shift = max_shift * jnp.tanh(shift / max_shift)
        if max_log_scale is None:
            scale, log_scale = positive_from_raw(raw[..., 1], min_scale)
        else:
            log_scale = max_log_scale * jnp.tanh(
                positive_from_raw(raw[..., 1], min_scale)[1] / max_log_scale)
            scale = jnp.exp(log_scale)
        return scale, log_scale, shift

    def forward(raw: Array, x: Array) -> tuple[Array, Array]:
        scale, log_scale, shift = scale_and_shift(raw)
        return x * scale + shift, log_scale

    def inverse(raw: Array, y: Array) -> tuple[Array, Array]:
        scale, log_scale, shift = scale_and_shift(raw)
        return (y - shift) / scale, -log_scale

    return Elementwise(2, forward, inverse)


def identity_flow(event_size: int) -> Flow:
    """The identity map of ``R^event_size``; its parameters are an empty dict.

    Args:
      event_size: ``D``.

    Returns:
      A `Flow` with ``y = x`` and log-det 0.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> flow = identity_flow(2)
      >>> flow.forward_and_log_det(flow.init(jax.random.PRNGKey(0)), jnp.ones(2))[1].tolist()
      0.0
    """
    event_size = validate_event_size(event_size)

    def apply(params: Params, x: Array) -> tuple[Array, Array]:
        del params
        x = check_input(x, event_size)
        return x, jnp.zeros(x.shape[:-1], x.dtype)

    return Flow(no_params, apply, apply, event_size)


def chain_flows(*flows: Flow) -> Flow:
    """Composes flows; the first is applied first in the forward direction.

    ``forward = flows[-1] o ... o flows[0]``, log-dets add; the inverse runs in reverse order.

    Args:
      *flows: one or more `Flow`s with the same ``event_size``.

    Returns:
      A `Flow` whose parameters are a tuple with one entry per flow.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> flow = chain_flows(identity_flow(2), identity_flow(2))
      >>> params = flow.init(jax.random.PRNGKey(0))
      >>> len(params), flow.forward_and_log_det(params, jnp.ones((4, 2)))[0].shape
      (2, (4, 2))
    """
    if not flows:
        raise ValueError("chain_flows needs at least one flow")
    for i, f in enumerate(flows):
        if not isinstance(f, Flow):
            raise TypeError(f"flows[{i}] must be a Flow, got {type(f).__name__}")
    sizes = {f.event_size for f in flows}
    if len(sizes) != 1:
        raise ValueError(f"all flows must have the same event_size, got "
                         f"{[f.event_size for f in flows]}")
    event_size = flows[0].event_size

    def init(key: PRNGKey) -> Params:
        keys = jax.random.split(key, len(flows))
        return tuple(f.init(k) for f, k in zip(flows, keys))

    def _check_params(params: Params) -> None:
        if not isinstance(params, (tuple, list)) or len(params) != len(flows):
            raise ValueError(f"params of a chain of {len(flows)} flows must be a tuple of "
                             f"{len(flows)} entries, got {type(params).__name__}")

    def forward_and_log_det(params: Params, x: Array) -> tuple[Array, Array]:
        _check_params(params)
        x = check_input(x, event_size)
        total: Any = 0.0
        for f, p in zip(flows, params):
            x, ldj = f.forward_and_log_det(p, x)
            total = total + ldj
        return x, jnp.broadcast_to(total, x.shape[:-1]).astype(x.dtype)

    def inverse_and_log_det(params: Params, y: Array) -> tuple[Array, Array]:
        _check_params(params)
        y = check_input(y, event_size, "y")
        total: Any = 0.0
        for f, p in zip(reversed(flows), reversed(tuple(params))):
            y, ldj = f.inverse_and_log_det(p, y)
            total = total + ldj
        return y, jnp.broadcast_to(total, y.shape[:-1]).astype(y.dtype)

    return Flow(init, forward_and_log_det, inverse_and_log_det, event_size)


def _float_dtype(params: Params) -> Any:
    leaves = [leaf for leaf in jax.tree.leaves(params)
              if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)]
    return jnp.result_type(*leaves) if leaves else None


FlowT = TypeVar("FlowT")


class HoldsFlow(Generic[FlowT]):
    """Mixin of the objects that wrap a flow at given parameters: their `flow` and `params`.

    `FlowBijector`, `emf_jax.EmbeddedFlowBijector` and `emf_jax.EmbeddedFlowDistribution` set
    ``self._flow`` and ``self._params`` in ``__init__``; this gives all of them the same two
    read-only properties, in one place.

    Example:
      >>> import jax
      >>> flow = identity_flow(2)
      >>> bijector = FlowBijector(flow, flow.init(jax.random.PRNGKey(0)))
      >>> isinstance(bijector, HoldsFlow), bijector.flow is flow, bijector.params
      (True, True, {})
    """

    _flow: FlowT
    _params: Params

    def _hold(self, flow: FlowT, params: Params) -> None:
        """Stores the flow and its parameters (call it in ``__init__``)."""
        self._flow = flow
        self._params = params

    @property
    def flow(self) -> FlowT:
        """The wrapped flow."""
        return self._flow

    @property
    def params(self) -> Params:
        """The flow's parameters."""
        return self._params


class FlowBijector(HoldsFlow[Flow], tfb.Bijector):
    """A ``tfb.Bijector`` (``forward_min_event_ndims=1``) applying a `Flow` with given params.

    - forward: ``y = flow.forward_and_log_det(params, x)[0]``
    - inverse: ``x = flow.inverse_and_log_det(params, y)[0]``
    - log-det: the flow's own log-dets, computed in the same pass as the transform.

    The transform and its log-det are cached together (TFP's bijector cache with greedy
    attributes, as in ``tfb.FFJORD``): for an IAF, ``sample`` followed by ``log_prob`` of the
    same sample costs one network pass and never runs the sequential inverse.

    ``params`` may be tracers, so build the bijector inside the function you ``jax.jit`` (the
    bijector itself is not a pytree). It works inside ``tfd.TransformedDistribution`` and
    ``tfb.Chain``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> flow = identity_flow(2)
      >>> bij = FlowBijector(flow, flow.init(jax.random.PRNGKey(0)))
      >>> dist = tfp.distributions.TransformedDistribution(
      ...     tfp.distributions.Sample(tfp.distributions.Normal(0.0, 1.0), 2), bij)
      >>> print(f"{dist.log_prob(jnp.zeros(2)):.4f}")
      -1.8379
    """

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    def __init__(self, flow: Flow, params: Params, *, validate_args: bool = False,
                 name: str = "flow_bijector") -> None:
        """Wraps ``flow`` with ``params``.

        Args:
          flow: a `Flow`.
          params: its parameters (a pytree matching ``flow.init``'s output; may be tracers).
          validate_args: passed to ``tfb.Bijector``.
          name: bijector name.
        """
        if not isinstance(flow, Flow):
            raise TypeError(f"flow must be an emf_jax.flows.Flow, got {type(flow).__name__}")
        parameters = dict(flow=flow, params=params, validate_args=validate_args, name=name)
        self._hold(flow, params)
        super().__init__(forward_min_event_ndims=1, is_constant_jacobian=False,
                         validate_args=validate_args, dtype=_float_dtype(params),
                         parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype: Any) -> dict:
        return dict()

    def _augmented_forward(self, x: Array) -> tuple[Array, dict]:
        y, fldj = self._flow.forward_and_log_det(self._params, x)
        return y, {"fldj": fldj, "ildj": -fldj}

    def _augmented_inverse(self, y: Array) -> tuple[Array, dict]:
        x, ildj = self._flow.inverse_and_log_det(self._params, y)
        return x, {"ildj": ildj, "fldj": -ildj}

    def _forward(self, x: Array) -> Array:
        return self._augmented_forward(x)[0]

    def _inverse(self, y: Array) -> Array:
        return self._augmented_inverse(y)[0]

    def _forward_log_det_jacobian(self, x: Array) -> Array:
        cached = self._cache.forward_attributes(x)
        if "fldj" not in cached:
            cached.update(self._augmented_forward(x)[1])
        return cached["fldj"]

    def _inverse_log_det_jacobian(self, y: Array) -> Array:
        cached = self._cache.inverse_attributes(y)
        if "ildj" not in cached:
            cached.update(self._augmented_inverse(y)[1])
        return cached["ildj"]
