"""Walks a TFP joint distribution program once and records each of its variables.

The tracer drives the model's own coroutine (the mechanism TFP uses for every
`JointDistribution*` flavour: Coroutine, Sequential, Named and their AutoBatched variants), so
each variable's conditional distribution is built from its parents' values exactly as the
model writes it. Pinned models (`model.experimental_pin(...)`) feed their pinned values in.

`trace_model` runs the program abstractly (`jax.eval_shape`: no computation) and returns a
`ModelTrace`; `walk_model` runs it with a callback that chooses each latent value, which is how
the structured layer maps noise to values.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from tensorflow_probability.substrates import jax as tfp

from emf_jax.transforms import transform_for
from emf_jax.transforms.markov_chain import ChainTransform
from emf_jax.transforms.registry import UnsupportedDistributionError, is_discrete
from emf_jax.transforms.wrappers import wrapper_base_class

tfd = tfp.distributions
JointDistributionPinned = tfp.experimental.distributions.JointDistributionPinned

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class VariableRecord:
    """What the tracer knows about one variable of the program.

    Attributes:
      name: the variable's resolved name (TFP's `_flat_resolve_names`).
      index: position in the program's order.
      family: the distribution's class name (outermost, e.g. 'Independent').
      base_family: the class name after unwrapping Independent / Sample.
      event_shape: shape of one value of the variable (what `model.sample()` gives for it).
      dtype: the value dtype.
      support: the class name of the support (default event-space) bijector, or None.
      pinned: True for observed (pinned) variables.
      unconstrained_shape: the shape of its noise (None for pinned variables).
      num_steps: for a `tfd.MarkovChain` variable (possibly inside Independent / Sample),
        its number of steps ``T``; None otherwise. Its support is that of step 0.

    Example:
      >>> import emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> def program():
      ...     scale = yield tfd.HalfNormal(1., name='scale')
      ...     yield tfd.Sample(tfd.Normal(0., scale), 3, name='x')
      >>> model = tfd.JointDistributionCoroutineAutoBatched(program)
      >>> trace = emf_jax.trace_model(model)
      >>> x = trace.record('x')
      >>> x.family, x.base_family, x.event_shape, x.pinned
      ('Sample', 'Normal', (3,), False)
      >>> trace.record('scale').support
      'Softplus'
    """

    name: str
    index: int
    family: str
    base_family: str
    event_shape: tuple[int, ...]
    dtype: Any
    support: Optional[str]
    pinned: bool
    unconstrained_shape: Optional[tuple[int, ...]]
    num_steps: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class ModelTrace:
    """The records of every variable, in program order, and the model's latent structure.

    Attributes:
      records: one `VariableRecord` per variable (pinned ones included).
      latent_names: names of the latent (unpinned) variables in program order.
      latent_structure: a tree like the model's latent event (e.g. a StructTuple, list or
        dict) with the latent variable names as leaves.

    Example:
      >>> import emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> model = tfd.JointDistributionNamed(dict(
      ...     mu=tfd.Normal(0., 1.), y=lambda mu: tfd.Normal(mu, 1.)))
      >>> trace = emf_jax.trace_model(model.experimental_pin(y=0.5))
      >>> trace.latent_names, [r.name for r in trace.latents]
      (('mu',), ['mu'])
      >>> trace.unflatten([1.5])
      {'mu': 1.5}
    """

    records: tuple[VariableRecord, ...]
    latent_names: tuple[str, ...]
    latent_structure: Any

    @property
    def latents(self) -> tuple[VariableRecord, ...]:
        return tuple(r for r in self.records if not r.pinned)

    def record(self, name: str) -> VariableRecord:
        for r in self.records:
            if r.name == name:
                return r
        raise KeyError(name)

    def unflatten(self, flat_latents: Sequence[Any]) -> Any:
        """Latent values in program order -> the model's latent structure."""
        leaves, treedef = _names_treedef(self.latent_structure)
        by_name = dict(zip(self.latent_names, flat_latents))
        return jax.tree.unflatten(treedef, [by_name[n] for n in leaves])

    def flatten(self, latents: Any) -> list[Any]:
        """The model's latent structure -> latent values in program order.

        Raises:
          ValueError: if `latents` is not structured like the model's latent event.
        """
        names, treedef = _names_treedef(self.latent_structure)
        try:
            leaves = treedef.flatten_up_to(latents)
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"expected values structured like the model's latent event {treedef} "
                f"(variables {list(self.latent_names)}), got {_describe_structure(latents)}"
            ) from err
        by_name = dict(zip(names, leaves))
        return [by_name[n] for n in self.latent_names]


def _names_treedef(structure: Any):
    return jax.tree.flatten(structure, is_leaf=lambda x: isinstance(x, str))


def _describe_structure(tree: Any) -> str:
    try:
        return str(jax.tree.structure(tree))
    except Exception:  # pragma: no cover
        return type(tree).__name__


def split_pins(model: Any) -> tuple[Any, dict[str, Any]]:
    """Splits a (possibly pinned) model into its joint distribution and its pinned values.

    Args:
      model: a `tfd.JointDistribution*` or a pinned one (``model.experimental_pin(...)``).

    Returns:
      ``(joint distribution, {name: pinned value})``: the unpinned joint distribution and
      the pins (an empty dict for a model that is not pinned).

    Raises:
      TypeError: `model` is not a joint distribution.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> def program():
      ...     scale = yield tfd.HalfNormal(1., name='scale')
      ...     yield tfd.Normal(0., scale, name='y')
      >>> model = tfd.JointDistributionCoroutineAutoBatched(program)
      >>> jd, pins = split_pins(model.experimental_pin(y=0.5))
      >>> jd is model, {name: float(v) for name, v in pins.items()}, split_pins(model)[1]
      (True, {'y': 0.5}, {})
    """
    if isinstance(model, JointDistributionPinned):
        return model.distribution, dict(model.pins)
    if isinstance(model, tfd.JointDistribution):
        return model, {}
    raise TypeError(
        "emf_jax expects a tfd.JointDistribution (Coroutine, Sequential, Named, or an "
        f"AutoBatched variant) or a pinned one (model.experimental_pin(...)); got {type(model)}")


_WRAPPERS = tuple(wrapper_base_class(c) for c in (tfd.Independent, tfd.Sample))


def _unwrap(dist: Any) -> Any:
    while isinstance(dist, _WRAPPERS):
        dist = dist.distribution
    return dist


def walk_model(model: Any, choose_value: Callable[[int, str, Any], Array],
               on_pinned: Optional[Callable[[int, str, Any, Array], None]] = None) -> list[Array]:
    """Runs the model's program, asking `choose_value` for every latent value.

    Args:
      model: a joint distribution or a pinned one.
      choose_value: ``(index, name, distribution) -> value`` for each latent variable, called
        in program order with the variable's conditional distribution given the values chosen
        so far. Pinned variables take their pinned values.
      on_pinned: optional ``(index, name, distribution, value)`` callback for pinned ones.

    Returns:
      The values of all variables (pinned ones included) in program order.

    Raises:
      TypeError: `model` is not a joint distribution.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> def program():
      ...     scale = yield tfd.HalfNormal(1., name='scale')
      ...     yield tfd.Normal(0., scale, name='y')
      >>> model = tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(y=0.5)
      >>> def choose(index, name, dist):
      ...     return jnp.full(dist.event_shape, 2.0)         # every latent value set to 2
      >>> def on_pinned(index, name, dist, value):
      ...     print(name, float(dist.scale))                 # y's conditional given scale = 2
      >>> values = walk_model(model, choose, on_pinned)
      y 2.0
      >>> [float(v) for v in values]
      [2.0, 0.5]
    """
    jd, pins = split_pins(model)
    names = jd._flat_resolve_names()  # pylint: disable=protected-access
    generator = jd._model_coroutine()  # pylint: disable=protected-access
    values: list[Array] = []
    try:
        yielded = next(generator)
        while True:
            index = len(values)
            dist = yielded.distribution if type(yielded).__name__ == "Root" else yielded
            name = names[index]
            if name in pins:
                value = pins[name]
                if on_pinned is not None:
                    on_pinned(index, name, dist, value)
            else:
                value = choose_value(index, name, dist)
            values.append(value)
            yielded = generator.send(value)
    except StopIteration:
        pass
    return values


def _check_transition(name: str, dist: Any, transform: ChainTransform,
                      value_shape: tuple[int, ...]) -> None:
    """Looks up the map of a chain's transition once, so that a missing one fails here."""
    if transform.num_steps < 2:
        return
    axis = len(value_shape) - 1 - len(transform.step_event_shape)
    state = jnp.zeros(value_shape[:axis] + value_shape[axis + 1:], dist.dtype)
    try:
        transform_for(transform.transition_fn(jnp.zeros((), jnp.int32), state),
                      variable_name=name)
    except UnsupportedDistributionError as err:
        raise UnsupportedDistributionError(
            f"the transition of MarkovChain variable '{name}': {err}") from err


def _latent_structure(model: Any, names: Sequence[str], pins: dict[str, Any]) -> Any:
    jd, _ = split_pins(model)
    if isinstance(model, JointDistributionPinned):
        return model._model_unflatten(  # pylint: disable=protected-access
            [n for n in names if n not in pins])
    return jd._model_unflatten(list(names))  # pylint: disable=protected-access


def trace_model(model: Any, *, check_transforms: bool = True) -> ModelTrace:
    """Records every variable of `model` (abstractly: nothing is computed).

    Args:
      model: a `tfd.JointDistribution*` or a pinned one.
      check_transforms: also look up each latent's map and fail early if there is none.

    Returns:
      A `ModelTrace`.

    Raises:
      UnsupportedDistributionError: a latent variable is discrete or has no map; the message
        names the variable and its family.
      TypeError: `model` is not a joint distribution.

    Example:
      >>> import emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> def program():
      ...     scale = yield tfd.HalfNormal(1., name='scale')
      ...     yield tfd.Normal(0., scale, name='x')
      >>> trace = emf_jax.trace_model(tfd.JointDistributionCoroutineAutoBatched(program))
      >>> [(r.name, r.family, r.support) for r in trace.records]
      [('scale', 'HalfNormal', 'Softplus'), ('x', 'Normal', 'Identity')]
    """
    jd, pins = split_pins(model)
    names = list(jd._flat_resolve_names())  # pylint: disable=protected-access
    records: list[VariableRecord] = []

    def choose(index: int, name: str, dist: Any) -> Array:
        if isinstance(dist.dtype, (dict, list, tuple)):
            if isinstance(_unwrap(dist), tfd.MarkovChain):
                transform_for(dist, variable_name=name)  # says why its states are refused
            raise UnsupportedDistributionError(
                f"variable '{name}' is itself a joint distribution ({type(dist).__name__}); "
                "nested joint distributions are not supported: inline its variables.")
        if is_discrete(dist):
            # Raises with the variable's name and family.
            transform_for(dist, variable_name=name)
        value_shape = tuple(dist.batch_shape) + tuple(dist.event_shape)
        num_steps = None
        if check_transforms:
            transform = transform_for(dist, variable_name=name)
            support = transform.support_bijector
            if isinstance(transform, ChainTransform):
                num_steps = transform.num_steps
                unconstrained = transform.unconstrained_shape(value_shape)
                _check_transition(name, dist, transform, value_shape)
        else:
            support = dist.experimental_default_event_space_bijector()
        if num_steps is None:
            unconstrained = (value_shape if support is None
                             else tuple(support.inverse_event_shape(value_shape)))
        records.append(VariableRecord(
            name=name, index=index, family=type(dist).__name__,
            base_family=type(_unwrap(dist)).__name__, event_shape=value_shape,
            dtype=jnp.dtype(dist.dtype),
            support="Identity" if support is None else type(support).__name__, pinned=False,
            unconstrained_shape=unconstrained, num_steps=num_steps))
        return jnp.zeros(value_shape, dist.dtype)

    pinned_families: dict[str, str] = {}

    def observe(index: int, name: str, dist: Any, value: Array) -> None:
        pinned_families[name] = type(dist).__name__

    def run():
        values = walk_model(model, choose, observe)
        return [jnp.asarray(v) for v in values]

    shapes = jax.eval_shape(run)
    latent_iter = iter(records)
    full: list[VariableRecord] = []
    for index, (name, shape) in enumerate(zip(names, shapes)):
        if name in pins:
            full.append(VariableRecord(
                name=name, index=index, family=pinned_families.get(name, "?"),
                base_family=pinned_families.get(name, "?"),
                event_shape=tuple(shape.shape), dtype=shape.dtype, support=None, pinned=True,
                unconstrained_shape=None))
        else:
            full.append(next(latent_iter))
    latent_names = tuple(n for n in names if n not in pins)
    return ModelTrace(tuple(full), latent_names, _latent_structure(model, names, pins))
