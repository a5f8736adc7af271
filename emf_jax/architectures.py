"""Embedded-model flow architectures: where the structured layer sits among the flow layers.

The names are defined here once and shared by the surrogate-posterior and density builders.
Reading each from the noise ``z ~ N(0, I_D)`` (D = total unconstrained size of the latents):

=================  ==========================================================================
``"gemf-t"``       backbone, then the gated structured layer on top (the paper's GEMF-T)
``"emf-t"``        as gemf-t, ungated
``"gemf-m"``       first half of the backbone, gated structured layer (to unconstrained
                   space), second half, then each variable's support
``"emf-m"``        as gemf-m, ungated
``"gemf-b"``       gated structured layer first (to unconstrained space), then the backbone,
                   then each variable's support
``"emf-b"``        as gemf-b, ungated
``"flow"``         the backbone alone, then each variable's support (e.g. the IAF baseline)
``"structured"``   the gated structured layer alone
=================  ==========================================================================

"Each variable's support" is the second half of the structured layer (``parts="support"``):
each variable's support bijector, conditioned on its parents, so that samples always land in
the model's support whatever the flow layers do. Built-in backbones start as the exact
identity, so every architecture starts exactly at its structured layer (the model's prior when
ungated).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from emf_jax import flows as flows_lib
from emf_jax.gates import DEFAULT_INITIAL_GATE
from emf_jax.structured import build_structured_layer_stateless
from emf_jax.tracing import ModelTrace

Array = jax.Array
Params = dict


class Architecture(NamedTuple):
    """What an architecture name means.

    Attributes:
      name: the name.
      placement: "top", "middle", "bottom", "none" (backbone only) or "only" (no backbone).
      gated: whether the structured layer is gated.

    Example:
      >>> ARCHITECTURES["gemf-m"]
      Architecture(name='gemf-m', placement='middle', gated=True)
    """

    name: str
    placement: str
    gated: bool


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("gemf-t", "top", True),
    Architecture("emf-t", "top", False),
    Architecture("gemf-m", "middle", True),
    Architecture("emf-m", "middle", False),
    Architecture("gemf-b", "bottom", True),
    Architecture("emf-b", "bottom", False),
    Architecture("flow", "none", False),
    Architecture("structured", "only", True),
)}

BACKBONES = ("iaf", "maf", "realnvp", "nsf")

FlowFactory = Callable[..., flows_lib.Flow]


def get_architecture(name: str) -> Architecture:
    """The `Architecture` called `name` (case-insensitive); a clear error otherwise.

    Args:
      name: one of the keys of `ARCHITECTURES` ("gemf-t", "emf-t", "gemf-m", "emf-m",
        "gemf-b", "emf-b", "flow", "structured").

    Returns:
      The `Architecture`.

    Raises:
      ValueError: for an unknown name (the message lists the known ones).

    Example:
      >>> get_architecture("GEMF-T").placement
      'top'
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[key]


def make_backbone(backbone: Union[str, FlowFactory], event_size: int, *, num_layers: int,
                  hidden_units: Sequence[int], activation: Callable[[Array], Array],
                  dtype: Any, **kwargs: Any) -> flows_lib.Flow:
    """A backbone flow on ``R^event_size``.

    Args:
      backbone: "iaf" (fast sampling: for VI), "maf" (fast density: for maximum likelihood),
        "realnvp", "nsf" (autoregressive rational-quadratic splines; the paper's NSF setting:
        32 bins, bound 4), or a factory ``f(event_size, *, num_layers, hidden_units,
        activation, dtype, **kwargs) -> Flow``.
      event_size: D.
      num_layers, hidden_units, activation, dtype: passed to the factory.
      **kwargs: more factory options (e.g. ``num_bins`` for "nsf"). Built-in backbones start
        as the exact identity (``output_init_scale=0``) unless told otherwise.

    Returns:
      An `emf_jax.flows.Flow` on ``R^event_size``.

    Raises:
      ValueError: for an unknown backbone name, or "realnvp" with fewer than 2 dimensions.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> flow = make_backbone("maf", 3, num_layers=2, hidden_units=(8,),
      ...                      activation=jax.nn.relu, dtype=jnp.float32)
      >>> z = jnp.arange(3.0)
      >>> x, log_det = flow.forward_and_log_det(flow.init(jax.random.key(0)), z)
      >>> x.tolist(), float(log_det)                 # the identity at initialisation
      ([0.0, 1.0, 2.0], 0.0)
    """
    common = dict(num_layers=num_layers, hidden_units=tuple(hidden_units),
                  activation=activation, dtype=dtype, **kwargs)
    if callable(backbone):
        return backbone(event_size, **common)
    # Exactly the identity at initialisation, so an embedded flow starts as its structured
    # layer. The zero output layer gets a nonzero gradient on the first step; the hidden
    # layers start receiving gradient from the second step on.
    common.setdefault("output_init_scale", 0.0)
    # Built-in backbones are stacks that restore the input order (`flows.stack_layers`), so
    # with identity layers they are exactly the identity: no probe run is needed.
    if backbone in ("iaf", "maf"):
        flow = flows_lib.masked_autoregressive_flow(event_size, direction=backbone, **common)
    elif backbone == "realnvp":
        if event_size < 2:
            raise ValueError("the 'realnvp' backbone needs at least 2 dimensions; use 'iaf'")
        flow = flows_lib.real_nvp_flow(event_size, **common)
    elif backbone == "nsf":
        common.setdefault("direction", "iaf")
        flow = flows_lib.neural_spline_flow(event_size, **common)
    else:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {BACKBONES} or pass a "
                         "flow factory")
    return flow


class EmbeddedFlow(NamedTuple):
    """An embedded-model flow as pure functions of a parameter pytree.

    Attributes:
      init: ``init(key) -> params``.
      forward_and_log_det: ``(params, z[..., D]) -> (values, log|det|[...])``; values have the
        model's latent structure.
      inverse_and_log_det: ``(params, values) -> (z[..., D], log|det|[...])``.
      event_size: D, the size of the flat noise.
      trace: the model's `ModelTrace`.
      architecture: the `Architecture`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> model = tfd.JointDistributionNamed(dict(
      ...     m=tfd.Normal(0., 1.), x=lambda m: tfd.Sample(tfd.Normal(m, 1.), 2)))
      >>> flow = build_embedded_flow(model, architecture="structured")
      >>> params = flow.init(jax.random.key(0))
      >>> @jax.jit
      ... def round_trip(z):
      ...     values, log_det = flow.forward_and_log_det(params, z)
      ...     return values, log_det, flow.inverse_and_log_det(params, values)[0]
      >>> values, log_det, z = round_trip(jnp.zeros((4, flow.event_size)))
      >>> flow.event_size, values["x"].shape, log_det.shape
      (3, (4, 2), (4,))
      >>> bool(jnp.allclose(z, 0.0, atol=1e-5))
      True
    """

    init: Callable[[Any], Params]
    forward_and_log_det: Callable[[Params, Any], tuple[Any, Array]]
    inverse_and_log_det: Callable[[Params, Any], tuple[Array, Array]]
    event_size: int
    trace: ModelTrace
    architecture: Architecture


def _flattener(trace: ModelTrace):
    latents = trace.latents
    shapes = [tuple(r.unconstrained_shape) for r in latents]
    sizes = [int(np.prod(s)) for s in shapes]
    offsets = np.cumsum([0] + sizes)

    def unflatten(z: Array) -> Any:
        batch = z.shape[:-1]
        parts = [z[..., offsets[i]:offsets[i + 1]].reshape(batch + shapes[i])
                 for i in range(len(shapes))]
        return trace.unflatten(parts)

    def flatten(tree: Any) -> Array:
        leaves = trace.flatten(tree)
        batch = leaves[0].shape[:leaves[0].ndim - len(shapes[0])]
        return jnp.concatenate([leaf.reshape(batch + (-1,)) for leaf in leaves], axis=-1)

    return int(offsets[-1]), flatten, unflatten


def build_embedded_flow(
    model: Any,
    *,
    model_params: Any = None,
    architecture: str = "gemf-t",
    backbone: Union[str, FlowFactory] = "iaf",
    num_backbone_layers: int = 2,
    hidden_units: Sequence[int] = (512, 512),
    activation: Callable[[Array], Array] = jax.nn.relu,
    initial_gate: float = DEFAULT_INITIAL_GATE,
    backbone_kwargs: Optional[dict] = None,
) -> EmbeddedFlow:
    """Composes a model's structured layer with a backbone flow, as `EmbeddedFlow` functions.

    The surrogate and density builders wrap the result in an `EmbeddedFlowDistribution`.

    Args:
      model: a joint distribution (pinned or not), or a function
        ``model_fn(model_params) -> JointDistribution``.
      model_params: the initial parameters of a model function (they join the flow's
        parameters, under ``params["structured"]["model"]``); None for a fixed model.
      architecture: a name of `ARCHITECTURES` (see the module docstring).
      backbone: "iaf", "maf", "realnvp", "nsf" or a flow factory (see `make_backbone`).
      num_backbone_layers: flow layers in the backbone (at least 2 for the middle placement).
      hidden_units: hidden layer sizes of each conditioner network.
      activation: the conditioners' activation.
      initial_gate: λ at initialisation.
      backbone_kwargs: extra options of the backbone factory.

    Returns:
      An `EmbeddedFlow`.

    Raises:
      ValueError: an unknown architecture or backbone, or too few backbone layers.
      UnsupportedDistributionError: a latent variable without a map.

    Example:
      >>> import jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> model = tfd.JointDistributionNamed(dict(
      ...     mu=tfd.Normal(0., 1.), y=lambda mu: tfd.Normal(mu, 1.)))
      >>> flow = build_embedded_flow(model.experimental_pin(y=0.5), hidden_units=(8,))
      >>> flow.architecture.name, flow.event_size, sorted(flow.init(jax.random.key(0)))
      ('gemf-t', 1, ['backbone', 'structured'])
    """
    arch = get_architecture(architecture)
    init_structured, build_structured = build_structured_layer_stateless(
        model, gated=arch.gated, model_params=model_params, initial_gate=initial_gate)
    trace = build_structured(init_structured(None)).trace
    event_size, flatten, unflatten = _flattener(trace)
    dtype = trace.latents[0].dtype
    backbone_kwargs = dict(backbone_kwargs or {})
    if arch.placement != "only" and num_backbone_layers < (2 if arch.placement == "middle"
                                                           else 1):
        raise ValueError(f"architecture {arch.name!r} needs num_backbone_layers >= "
                         f"{2 if arch.placement == 'middle' else 1}, got {num_backbone_layers}")

    def backbone_of(num_layers: int) -> flows_lib.Flow:
        return make_backbone(backbone, event_size, num_layers=num_layers,
                             hidden_units=hidden_units, activation=activation, dtype=dtype,
                             **backbone_kwargs)

    if arch.placement == "middle":
        lower = backbone_of(num_backbone_layers // 2)
        upper = backbone_of(num_backbone_layers - num_backbone_layers // 2)
        flow_parts = {"lower": lower, "upper": upper}
    elif arch.placement == "only":
        flow_parts = {}
    else:
        flow_parts = {"backbone": backbone_of(num_backbone_layers)}

    def init(key: Any) -> Params:
        key = jax.random.key(0) if key is None else key
        keys = jax.random.split(key, max(1, len(flow_parts)))
        params: Params = {name: flow.init(k) for (name, flow), k in zip(flow_parts.items(), keys)}
        params["structured"] = init_structured(None)
        return params

    def structured(params: Params, parts: str):
        return build_structured(params["structured"], parts=parts)

    def forward_and_log_det(params: Params, z: Array) -> tuple[Any, Array]:
        placement = arch.placement
        if placement == "only":
            return structured(params, "map_and_support").forward_and_log_det(unflatten(z))
        if placement == "top":
            z, ldj0 = flow_parts["backbone"].forward_and_log_det(params["backbone"], z)
            x, ldj1 = structured(params, "map_and_support").forward_and_log_det(unflatten(z))
            return x, ldj0 + ldj1
        if placement == "none":
            z, ldj0 = flow_parts["backbone"].forward_and_log_det(params["backbone"], z)
            x, ldj1 = structured(params, "support").forward_and_log_det(unflatten(z))
            return x, ldj0 + ldj1
        total = 0.0
        if placement == "middle":
            z, ldj = flow_parts["lower"].forward_and_log_det(params["lower"], z)
            total = total + ldj
        u, ldj = structured(params, "map").forward_and_log_det(unflatten(z))
        total = total + ldj
        upper = "upper" if placement == "middle" else "backbone"
        z, ldj = flow_parts[upper].forward_and_log_det(params[upper], flatten(u))
        total = total + ldj
        x, ldj = structured(params, "support").forward_and_log_det(unflatten(z))
        return x, total + ldj

    def inverse_and_log_det(params: Params, values: Any) -> tuple[Array, Array]:
        placement = arch.placement
        if placement == "only":
            e, ildj = structured(params, "map_and_support").inverse_and_log_det(values)
            return flatten(e), ildj
        if placement in ("top", "none"):
            parts = "map_and_support" if placement == "top" else "support"
            e, ildj1 = structured(params, parts).inverse_and_log_det(values)
            z, ildj0 = flow_parts["backbone"].inverse_and_log_det(params["backbone"], flatten(e))
            return z, ildj0 + ildj1
        u, total = structured(params, "support").inverse_and_log_det(values)
        upper = "upper" if placement == "middle" else "backbone"
        z, ildj = flow_parts[upper].inverse_and_log_det(params[upper], flatten(u))
        total = total + ildj
        e, ildj = structured(params, "map").inverse_and_log_det(unflatten(z))
        total = total + ildj
        z = flatten(e)
        if placement == "middle":
            z, ildj = flow_parts["lower"].inverse_and_log_det(params["lower"], z)
            total = total + ildj
        return z, total

    return EmbeddedFlow(init, forward_and_log_det, inverse_and_log_det, event_size, trace, arch)
