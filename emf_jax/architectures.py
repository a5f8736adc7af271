"""Embedded-model flow architectures: each one a chain of named stages.

An architecture is a tuple of stages read from the noise ``z ~ N(0, I_D)`` (D = total
unconstrained size of the latents) to the model's values, in the manner of optax's
``named_chain`` and distrax's ``Chain``. The names are defined here once, in `ARCHITECTURES`,
and shared by the surrogate-posterior and density builders:

=================  ================================================  ==========================
name               stages (noise → values)                           what it is
=================  ================================================  ==========================
``"gemf-t"``       backbone, map_and_support                         the paper's GEMF-T
``"emf-t"``        backbone, map_and_support (ungated)               EMF-T
``"gemf-m"``       backbone[0], map, backbone[1], support            structured layer mid-way
``"emf-m"``        as gemf-m, ungated
``"gemf-b"``       map, backbone, support                            structured layer first
``"emf-b"``        as gemf-b, ungated
``"flow"``         backbone, support                                 the backbone alone (IAF)
``"structured"``   map_and_support                                   the gated layer alone
``"vip"``          vip, support                                      VIP (Gorinova et al. 2020)
``"mif"``          mif, support                                      affine MIF (Ko & Domke 2025)
``"gemf-vip"``     backbone, gated_vip, support                      a backbone under gated VIP
=================  ================================================  ==========================

The stage kinds:

- ``backbone[i]``: segment ``i`` of the backbone flow (`make_backbone`) on the flat vector;
  the middle placement splits the backbone's layers into two segments.
- ``map``: the (gated) structured layer to unconstrained values ``u`` (``parts="map"``).
- ``support``: each variable's support bijector given its parents (``parts="support"``), so
  that samples land in the model's support whatever the flow stages do.
- ``map_and_support``: both at once (the whole structured layer).
- ``vip`` / ``mif`` / ``gated_vip``: the model-informed reparameterisation layers of
  `emf_jax.reparam` (noise to ``u``, in the model's order), followed by ``support``. In a
  surrogate, the affine base stage before them makes VIP's base the Gaussian of the paper.
  ``gated_vip`` is VIP's centring on the location-scale latents and the structured layer's
  gate on the others: ``"gemf-vip"`` is GEMF-T with that layer in place of the gated
  structured map.

One generic fold runs the chain forward and one in reverse (`EmbeddedFlow`). Values change
representation only where the stage kind changes: flow stages work on the flat vector
``[..., D]``, structured stages on a list of per-variable parts, and the model's structure
(a ``StructTuple``, dict or list) is built once, at the end. Every architecture with a
backbone and the structured map has the same parameter keys: ``{"backbone": (segment
params, ...), "structured": {...}}``; the reparameterisation architectures have
``{"reparam": {...}, "structured": {...}}``, plus ``"backbone"`` when they have one
(``"structured"`` holds the model's parameters of a model function, if any);
`migrate_params` converts the layouts of earlier versions (``{"lower", "upper", ...}``, a
bare backbone) and `emf_jax.load` applies it.

Adding an architecture is one row of `ARCHITECTURES`. Built-in backbones start as the exact
identity, so every architecture starts exactly at its structured layer (the model's prior
when ungated).
"""
from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from emf_jax import checkpoint
from emf_jax import flows as flows_lib
from emf_jax.gates import DEFAULT_INITIAL_GATE
from emf_jax.reparam import REPARAM_KINDS, build_reparam_layer
from emf_jax.structured import StructuredLayer, build_structured_layer_stateless, resolve_model
from emf_jax.tracing import ModelTrace, trace_model

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "BACKBONES",
    "EmbeddedFlow",
    "FlowFactory",
    "LatentLayout",
    "Stage",
    "build_embedded_flow",
    "get_architecture",
    "make_backbone",
    "migrate_params",
]

Array = jax.Array
Params = dict

# The stage kinds of the structured layer and the `StructuredLayer` parts they apply.
_STRUCTURED_PARTS = {"map": "map", "support": "support", "map_and_support": "map_and_support"}
STAGE_KINDS = ("backbone",) + tuple(_STRUCTURED_PARTS) + REPARAM_KINDS


class Stage(NamedTuple):
    """One stage of an architecture's chain.

    Attributes:
      kind: "backbone" (a segment of the backbone flow, on the flat vector), "map",
        "support" or "map_and_support" (the structured layer's parts), "vip", "mif" or
        "gated_vip" (a reparameterisation layer of `emf_jax.reparam`, on the list of parts).
      segment: for a backbone stage, the index of its segment (the middle placement has
        two); 0 otherwise.

    Example:
      >>> Stage("backbone", 1)
      Stage(kind='backbone', segment=1)
    """

    kind: str
    segment: int = 0

    def __str__(self) -> str:
        return f"backbone[{self.segment}]" if self.kind == "backbone" else self.kind


class Architecture(NamedTuple):
    """What an architecture name means.

    Attributes:
      name: the name.
      placement: where the structured layer sits: "top", "middle", "bottom", "none"
        (backbone only), "only" (no backbone) or "reparam" (a VIP / MIF / gated VIP layer
        instead of the structured map, with or without a backbone below it; the structured
        layer supplies the support only).
      gated: whether the structured layer is gated.
      stages: the chain, read from the noise to the values (see the module docstring).

    Example:
      >>> arch = ARCHITECTURES["gemf-m"]
      >>> arch.placement, arch.gated, [str(s) for s in arch.stages]
      ('middle', True, ['backbone[0]', 'map', 'backbone[1]', 'support'])
    """

    name: str
    placement: str
    gated: bool
    stages: tuple[Stage, ...]

    @property
    def num_backbone_segments(self) -> int:
        """How many backbone segments the chain holds (0, 1 or 2)."""
        return sum(stage.kind == "backbone" for stage in self.stages)


_TOP = (Stage("backbone"), Stage("map_and_support"))
_MIDDLE = (Stage("backbone", 0), Stage("map"), Stage("backbone", 1), Stage("support"))
_BOTTOM = (Stage("map"), Stage("backbone"), Stage("support"))

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("gemf-t", "top", True, _TOP),
    Architecture("emf-t", "top", False, _TOP),
    Architecture("gemf-m", "middle", True, _MIDDLE),
    Architecture("emf-m", "middle", False, _MIDDLE),
    Architecture("gemf-b", "bottom", True, _BOTTOM),
    Architecture("emf-b", "bottom", False, _BOTTOM),
    Architecture("flow", "none", False, (Stage("backbone"), Stage("support"))),
    Architecture("structured", "only", True, (Stage("map_and_support"),)),
    Architecture("vip", "reparam", False, (Stage("vip"), Stage("support"))),
    Architecture("mif", "reparam", False, (Stage("mif"), Stage("support"))),
    Architecture("gemf-vip", "reparam", False,
                 (Stage("backbone"), Stage("gated_vip"), Stage("support"))),
)}

BACKBONES = ("iaf", "maf", "realnvp", "nsf")

FlowFactory = Callable[..., flows_lib.Flow]


def get_architecture(name: str) -> Architecture:
    """The `Architecture` called `name` (case-insensitive); a clear error otherwise.

    Args:
      name: one of the keys of `ARCHITECTURES` ("gemf-t", "emf-t", "gemf-m", "emf-m",
        "gemf-b", "emf-b", "flow", "structured", "vip", "mif", "gemf-vip").

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
      forward_without_backbone: as `forward_and_log_det` with the backbone stages left out:
        the same function wherever the backbone is the identity, as it is at `init`, and
        cheaper to compile and run (the warm start's pilot uses it).

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
    forward_without_backbone: Optional[Callable[[Params, Any], tuple[Any, Array]]] = None


class LatentLayout(NamedTuple):
    """The flat view of a model's latents: one vector ``[..., D]`` ↔ a list of parts.

    Part ``i`` is latent ``i`` of the trace (program order) with its unconstrained shape;
    the flat vector concatenates the flattened parts in that order.

    Attributes:
      shapes: each latent's unconstrained shape.
      offsets: the start of each part in the flat vector, then D.

    Example:
      >>> import jax.numpy as jnp
      >>> layout = LatentLayout(((), (2,)), (0, 1, 3))
      >>> parts = layout.to_parts(jnp.arange(6.0).reshape(2, 3))
      >>> [p.shape for p in parts], layout.to_flat(parts).shape, layout.event_size
      ([(2,), (2, 2)], (2, 3), 3)
    """

    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]

    @classmethod
    def of(cls, trace: ModelTrace) -> "LatentLayout":
        """The layout of a traced model's latents."""
        shapes = tuple(tuple(r.unconstrained_shape or ()) for r in trace.latents)
        offsets = tuple(int(o) for o in np.cumsum([0] + [int(np.prod(s)) for s in shapes]))
        return cls(shapes, offsets)

    @property
    def event_size(self) -> int:
        """D, the size of the flat vector."""
        return self.offsets[-1]

    def to_parts(self, z: Array) -> list[Array]:
        """Splits ``z[..., D]`` into the per-latent parts ``[..., *shape_i]``."""
        batch = z.shape[:-1]
        return [z[..., self.offsets[i]:self.offsets[i + 1]].reshape(batch + shape)
                for i, shape in enumerate(self.shapes)]

    def to_flat(self, parts: Sequence[Array]) -> Array:
        """Concatenates per-latent parts into ``[..., D]`` (the inverse of `to_parts`)."""
        first = parts[0]
        batch = first.shape[:first.ndim - len(self.shapes[0])]
        return jnp.concatenate([p.reshape(batch + (-1,)) for p in parts], axis=-1)


def migrate_params(tree: Any) -> Any:
    """Converts embedded-flow parameters of earlier layouts to the current one.

    Earlier versions stored the middle placement's backbone as ``{"lower": ..., "upper":
    ...}`` next to ``"structured"``, and the other placements' backbone as one flow's
    parameters under ``"backbone"``. Now every architecture with a backbone stores a tuple
    of segment parameters under ``"backbone"``. The conversion applies to every dict in
    `tree` that has a ``"structured"`` entry, so it converts optimizer states (whose
    moments mirror the parameters) as well; anything else is returned unchanged.

    Args:
      tree: a pytree (parameters, an optimizer state, or a dict holding them).

    Returns:
      The tree in the current layout.

    Example:
      >>> old = {"lower": {"w": 1}, "upper": {"w": 2}, "structured": {}}
      >>> migrate_params(old)
      {'backbone': ({'w': 1}, {'w': 2}), 'structured': {}}
      >>> migrate_params({"backbone": {"w": 1}, "structured": {}})
      {'backbone': ({'w': 1},), 'structured': {}}
    """
    if isinstance(tree, dict):
        tree = {k: migrate_params(v) for k, v in tree.items()}
        if "structured" in tree:
            if "lower" in tree and "upper" in tree:
                lower, upper = tree.pop("lower"), tree.pop("upper")
                tree = {"backbone": (lower, upper), **tree}
            elif "backbone" in tree and not isinstance(tree["backbone"], (tuple, list)):
                tree = {**tree, "backbone": (tree["backbone"],)}
        return tree
    if isinstance(tree, (list, tuple)) and not hasattr(tree, "_fields"):
        return type(tree)(migrate_params(v) for v in tree)
    if hasattr(tree, "_fields"):  # Named tuples (optax states) keep their type.
        return type(tree)(*[migrate_params(v) for v in tree])
    return tree


_OLD_SEGMENT_KEYS = {"['lower']": "['backbone'][0]", "['upper']": "['backbone'][1]"}


@checkpoint.register_path_migration
def _migrate_key_path(path: str) -> str:
    """A stored leaf path in the layout before stage chains -> its path now (`emf_jax.load`).

    ``['lower']`` / ``['upper']`` (the middle placement's halves) become backbone segments 0
    and 1; a bare ``['backbone']`` (one flow's parameters) becomes segment 0.
    """
    for old, new in _OLD_SEGMENT_KEYS.items():
        path = path.replace(old, new)
    return re.sub(r"\['backbone'\](?!\[\d)", "['backbone'][0]", path)


def _segment_layers(arch: Architecture, num_backbone_layers: int) -> tuple[int, ...]:
    """The number of backbone layers in each segment of the chain."""
    segments = arch.num_backbone_segments
    if segments == 0:
        return ()
    if num_backbone_layers < segments:
        raise ValueError(f"architecture {arch.name!r} needs num_backbone_layers >= {segments}, "
                         f"got {num_backbone_layers}")
    if segments == 1:
        return (num_backbone_layers,)
    return (num_backbone_layers // 2, num_backbone_layers - num_backbone_layers // 2)


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
      num_backbone_layers: flow layers in the backbone, split over its segments (at least
        one per segment: 2 for the middle placement).
      hidden_units: hidden layer sizes of each conditioner network (the backbone's, or
        MIF's per-variable conditioners).
      activation: the conditioners' activation.
      initial_gate: λ at initialisation (of the structured layer's gates; VIP's centrings
        and gated VIP's gates start at 0.5).
      backbone_kwargs: extra options of the backbone factory.

    Returns:
      An `EmbeddedFlow`.

    Raises:
      ValueError: an unknown architecture or backbone, or too few backbone layers.
      UnsupportedDistributionError: a latent variable without a map.
      NotImplementedError: "vip" / "mif" / "gemf-vip" with a `tfd.MarkovChain` latent.

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
    segment_layers = _segment_layers(arch, num_backbone_layers)
    model_fn, resolved_params = resolve_model(model, model_params)
    trace = trace_model(model_fn(resolved_params))
    init_structured, build_structured = build_structured_layer_stateless(
        model, gated=arch.gated, model_params=model_params, initial_gate=initial_gate,
        trace=trace)
    layout = LatentLayout.of(trace)
    dtype = trace.latents[0].dtype
    reparam_kinds = [s.kind for s in arch.stages if s.kind in REPARAM_KINDS]
    reparam = {k: build_reparam_layer(k, model_fn, trace, model_params=resolved_params,
                                      hidden_units=hidden_units, activation=activation)
               for k in reparam_kinds}
    segments = tuple(
        make_backbone(backbone, layout.event_size, num_layers=n, hidden_units=hidden_units,
                      activation=activation, dtype=dtype, **dict(backbone_kwargs or {}))
        for n in segment_layers)

    def init(key: Any) -> Params:
        key = jax.random.key(0) if key is None else key
        keys = jax.random.split(key, max(1, len(segments)))
        params: Params = {}
        if segments:
            params["backbone"] = tuple(flow.init(k) for flow, k in zip(segments, keys))
        params["structured"] = init_structured(None)
        if reparam:
            # One reparameterisation layer per chain (today's rows have one): its params.
            (layer_,) = reparam.values()
            params["reparam"] = layer_.init(jax.random.fold_in(key, 1))
        return params

    def reparam_stage(params: Params, stage: Stage, value: list, inverse: bool
                      ) -> tuple[list, Array]:
        layer_ = reparam[stage.kind]
        fn = layer_.inverse_parts_and_log_det if inverse else layer_.forward_parts_and_log_det
        return fn(params["reparam"], params["structured"].get("model"), value)

    def layer(params: Params, stage: Stage) -> StructuredLayer:
        return build_structured(params["structured"], parts=_STRUCTURED_PARTS[stage.kind])

    def forward_and_log_det(params: Params, z: Array) -> tuple[Any, Array]:
        return forward_stages(params, z, arch.stages)

    def forward_without_backbone(params: Params, z: Array) -> tuple[Any, Array]:
        stages = tuple(s for s in arch.stages if s.kind != "backbone")
        # Adjacent once the backbone between them is gone: "map" then "support" is one pass.
        if tuple(s.kind for s in stages) == ("map", "support"):
            stages = (Stage("map_and_support"),)
        return forward_stages(params, z, stages)

    def forward_stages(params: Params, z: Array, stages: tuple[Stage, ...]
                       ) -> tuple[Any, Array]:
        # The value is the flat vector [..., D] or a list of parts, as `is_flat` says.
        value: Any = z
        is_flat = True
        total = jnp.zeros(z.shape[:-1], z.dtype)
        for stage in stages:
            if stage.kind == "backbone":
                value = value if is_flat else layout.to_flat(value)
                value, log_det = segments[stage.segment].forward_and_log_det(
                    params["backbone"][stage.segment], value)
                is_flat = True
            elif stage.kind in REPARAM_KINDS:
                value = layout.to_parts(value) if is_flat else value
                value, log_det = reparam_stage(params, stage, value, inverse=False)
                is_flat = False
            else:
                value = layout.to_parts(value) if is_flat else value
                value, log_det = layer(params, stage).forward_parts_and_log_det(value)
                is_flat = False
            total = total + log_det
        # Every chain ends with the support, whose parts are the model's values (latents and
        # deterministic variables): the model's structure is built here, once.
        return trace.unflatten_values(value), total

    def inverse_and_log_det(params: Params, values: Any) -> tuple[Array, Array]:
        by_name = dict(zip(trace.value_names, trace.flatten_values(values)))
        # Deterministic variables are functions of the latents: only the latents are read.
        value: Any = [by_name[n] for n in trace.latent_names]
        is_flat = False
        total: Any = None
        for stage in reversed(arch.stages):
            if stage.kind == "backbone":
                value = value if is_flat else layout.to_flat(value)
                value, log_det = segments[stage.segment].inverse_and_log_det(
                    params["backbone"][stage.segment], value)
                is_flat = True
            elif stage.kind in REPARAM_KINDS:
                value = layout.to_parts(value) if is_flat else value
                value, log_det = reparam_stage(params, stage, value, inverse=True)
                is_flat = False
            else:
                value = layout.to_parts(value) if is_flat else value
                value, log_det = layer(params, stage).inverse_parts_and_log_det(value)
                is_flat = False
            total = log_det if total is None else total + log_det
        return (value if is_flat else layout.to_flat(value)), total

    return EmbeddedFlow(init, forward_and_log_det, inverse_and_log_det, layout.event_size,
                        trace, arch, forward_without_backbone)
