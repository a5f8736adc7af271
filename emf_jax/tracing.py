"""Walks a TFP joint distribution program once and records each of its variables.

The tracer drives the model's own coroutine (the mechanism TFP uses for every
`JointDistribution*` flavour: Coroutine, Sequential, Named and their AutoBatched variants), so
each variable's conditional distribution is built from its parents' values exactly as the
model writes it. Pinned models (`model.experimental_pin(...)`) feed their pinned values in.

Nested joint distributions (a `tfd.JointDistribution*` yielded by, or an entry of, another)
are walked in place: each of their variables is a variable of the trace, named by its path,
``"<outer name>/<inner name>"`` (e.g. ``"h/x_3"``; deeper nesting adds more parts). The nested
part's value, sent back to the outer program, has the inner model's own structure.

`tfd.Deterministic` / `tfd.VectorDeterministic` variables (possibly inside `tfd.Independent`
/ `tfd.Sample`) are derived quantities: their value is their ``loc``, a function of their
parents. They have no noise, no gate and no map; they are not latents, but they are part of
the values (the model's `sample` includes them, so the surrogate's samples do too).

`trace_model` runs the program abstractly (`jax.eval_shape`: no computation) and returns a
`ModelTrace`; `walk_model` runs it with a callback that chooses each latent value, which is how
the structured layer maps noise to values.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from tensorflow_probability.substrates import jax as tfp
from tensorflow_probability.substrates.jax.internal import structural_tuple

from emf_jax.transforms import transform_for
from emf_jax.transforms.markov_chain import ChainTransform
from emf_jax.transforms.registry import UnsupportedDistributionError, is_discrete
from emf_jax.transforms.wrappers import wrapper_base_class

__all__ = ["PATH_SEPARATOR", "ModelTrace", "VariableRecord", "is_deterministic",
           "joint_log_prob_fn", "split_pins", "trace_model", "walk_model"]

tfd = tfp.distributions
JointDistributionPinned = tfp.experimental.distributions.JointDistributionPinned

Array = jax.Array

#: Separates the parts of an inner variable's name: ``"<outer>/<inner>"``.
PATH_SEPARATOR = "/"


@dataclasses.dataclass(frozen=True)
class VariableRecord:
    """What the tracer knows about one variable of the program.

    Attributes:
      name: the variable's resolved name (TFP's `_flat_resolve_names`); for a variable of a
        nested joint distribution, its path ``"<outer name>/<inner name>"``.
      index: position in the program's order (nested variables flattened in place).
      family: the distribution's class name (outermost, e.g. 'Independent').
      base_family: the class name after unwrapping Independent / Sample.
      event_shape: shape of one value of the variable (what `model.sample()` gives for it).
      dtype: the value dtype.
      support: the class name of the support (default event-space) bijector, or None.
      pinned: True for observed (pinned) variables.
      unconstrained_shape: the shape of its noise (None for pinned and deterministic
        variables).
      num_steps: for a `tfd.MarkovChain` variable (possibly inside Independent / Sample),
        its number of steps ``T``; None otherwise. Its support is that of step 0.
      deterministic: True for a `tfd.Deterministic` / `tfd.VectorDeterministic` variable
        (a function of its parents: no noise, no gate).

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
    deterministic: bool = False


@dataclasses.dataclass(frozen=True)
class ModelTrace:
    """The records of every variable, in program order, and the model's latent structure.

    Two views of the unpinned variables:

    - the *latents* (`latent_names`, `latent_structure`, `flatten` / `unflatten`): the
      variables with noise, i.e. the unpinned ones that are not deterministic. The
      structured layer's noise has this structure.
    - the *values* (`value_names`, `value_structure`, `flatten_values` /
      `unflatten_values`): the latents plus the deterministic variables, structured like
      ``pinned.sample_unpinned()`` (``model.sample()`` for an unpinned model). Samples of
      a surrogate have this structure.

    Without deterministic variables the two are the same.

    Attributes:
      records: one `VariableRecord` per variable (pinned and deterministic ones included).
      latent_names: names of the latent variables in program order.
      latent_structure: a tree like the model's latent event (e.g. a StructTuple, list or
        dict, nested like the model) with the latent variable names as leaves.
      value_names: names of the latents and deterministic variables in program order
        (None: the same as `latent_names`).
      value_structure: like `latent_structure`, with the deterministic variables too
        (None: the same as `latent_structure`).

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
    # None (the default) means "the latents": filled in by __post_init__.
    value_names: tuple[str, ...] = None  # type: ignore[assignment]
    value_structure: Any = None

    def __post_init__(self):
        if self.value_names is None:
            object.__setattr__(self, "value_names", tuple(self.latent_names))
        if self.value_structure is None:
            object.__setattr__(self, "value_structure", self.latent_structure)

    @property
    def latents(self) -> tuple[VariableRecord, ...]:
        """The records of the latent variables (with noise), in program order."""
        return tuple(r for r in self.records if not (r.pinned or r.deterministic))

    @property
    def deterministics(self) -> tuple[VariableRecord, ...]:
        """The records of the unpinned deterministic variables, in program order."""
        return tuple(r for r in self.records if r.deterministic and not r.pinned)

    @property
    def values(self) -> tuple[VariableRecord, ...]:
        """The records of `value_names` (latents and deterministic variables), in order."""
        return tuple(r for r in self.records if not r.pinned)

    def record(self, name: str) -> VariableRecord:
        for r in self.records:
            if r.name == name:
                return r
        raise KeyError(name)

    def unflatten(self, flat_latents: Sequence[Any]) -> Any:
        """Latent values in program order -> the model's latent structure."""
        return _unflatten(self.latent_structure, self.latent_names, flat_latents)

    def flatten(self, latents: Any) -> list[Any]:
        """The model's latent structure -> latent values in program order.

        Raises:
          ValueError: if `latents` is not structured like the model's latent event.
        """
        return _flatten(self.latent_structure, self.latent_names, latents)

    def unflatten_values(self, flat_values: Sequence[Any]) -> Any:
        """Values of `value_names` in program order -> the model's sample structure."""
        return _unflatten(self.value_structure, self.value_names, flat_values)

    def flatten_values(self, values: Any) -> list[Any]:
        """The model's sample structure -> values of `value_names` in program order.

        Raises:
          ValueError: if `values` is not structured like the model's samples.
        """
        return _flatten(self.value_structure, self.value_names, values)


def _names_treedef(structure: Any):
    return jax.tree.flatten(structure, is_leaf=lambda x: isinstance(x, str))


def _unflatten(structure: Any, names: Sequence[str], flat: Sequence[Any]) -> Any:
    leaves, treedef = _names_treedef(structure)
    by_name = dict(zip(names, flat))
    return jax.tree.unflatten(treedef, [by_name[n] for n in leaves])


def _flatten(structure: Any, names: Sequence[str], tree: Any) -> list[Any]:
    leaf_names, treedef = _names_treedef(structure)
    try:
        leaves = treedef.flatten_up_to(tree)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"expected values structured like the model's latent event {treedef} "
            f"(variables {list(names)}), got {_describe_structure(tree)}"
        ) from err
    by_name = dict(zip(leaf_names, leaves))
    return [by_name[n] for n in names]


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
      the pins (an empty dict for a model that is not pinned). The pins are keyed by the
      outer program's names, as TFP keeps them; the pin of a nested joint distribution is
      a value structured like that distribution's samples, with None for its unpinned parts.

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
_DETERMINISTIC = (tfd.Deterministic, tfd.VectorDeterministic)
_UNPINNED = object()


def _unwrap(dist: Any) -> Any:
    while isinstance(dist, _WRAPPERS):
        wrapper: Any = dist
        dist = wrapper.distribution
    return dist


def is_deterministic(dist: Any) -> bool:
    """Whether `dist` is a point mass (`Deterministic` / `VectorDeterministic`, maybe wrapped).

    Args:
      dist: a distribution.

    Returns:
      True when `dist` is a `tfd.Deterministic` or `tfd.VectorDeterministic`, possibly
      inside `tfd.Independent` / `tfd.Sample`.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> is_deterministic(tfd.Independent(tfd.Deterministic([1., 2.]), 1))
      True
      >>> is_deterministic(tfd.Normal(0., 1.))
      False
    """
    return isinstance(_unwrap(dist), _DETERMINISTIC)


def _deterministic_value(dist: Any) -> Array:
    # A point mass ignores its seed; sampling (rather than reading `loc`) lets TFP broadcast
    # the value through Independent / Sample wrappers exactly as `model.sample` does.
    return dist.sample(seed=jax.random.PRNGKey(0))


def _inner_pins(jd: Any, value: Any, path: str) -> dict[str, Any]:
    """The pins of a nested joint distribution's parts from the pin of the whole part."""
    if value is _UNPINNED or value is None:
        return {}
    names = list(jd._flat_resolve_names())  # pylint: disable=protected-access
    if hasattr(value, "_asdict"):
        items = dict(value._asdict())
    elif isinstance(value, dict):
        items = dict(value)
    elif isinstance(value, (list, tuple)):
        if len(value) > len(names):
            raise ValueError(f"the pin of nested joint distribution '{path}' has {len(value)} "
                             f"parts, but it has {len(names)} ({names})")
        items = dict(zip(names, value))
    else:
        raise ValueError(
            f"the pin of nested joint distribution '{path}' must be structured like its "
            f"samples (parts {names}, None for the unpinned ones), got {type(value).__name__}")
    unknown = sorted(set(items) - set(names))
    if unknown:
        raise ValueError(f"the pin of nested joint distribution '{path}' names {unknown}, "
                         f"which are not among its parts {names}")
    return {k: v for k, v in items.items() if v is not None}


def _walk(jd: Any, pins: dict[str, Any], prefix: str,
          visit: Callable[[str, Any, Any], Any]) -> tuple[list[Any], list[Any]]:
    """Runs one (possibly nested) program: (value of each part, name tree of each part)."""
    names = jd._flat_resolve_names()  # pylint: disable=protected-access
    generator = jd._model_coroutine()  # pylint: disable=protected-access
    values: list[Any] = []
    trees: list[Any] = []
    try:
        yielded = next(generator)
        while True:
            dist = yielded.distribution if type(yielded).__name__ == "Root" else yielded
            name = names[len(values)]
            path = prefix + name
            if isinstance(dist, tfd.JointDistribution):
                inner_values, inner_trees = _walk(
                    dist, _inner_pins(dist, pins.get(name, _UNPINNED), path),
                    path + PATH_SEPARATOR, visit)
                value = dist._model_unflatten(inner_values)  # pylint: disable=protected-access
                tree = dist._model_unflatten(inner_trees)  # pylint: disable=protected-access
            else:
                value = visit(path, dist, pins.get(name, _UNPINNED))
                tree = path
            values.append(value)
            trees.append(tree)
            yielded = generator.send(value)
    except StopIteration:
        pass
    return values, trees


def _walk_model(model: Any, choose_value: Callable[[int, str, Any], Array],
                on_pinned: Optional[Callable[[int, str, Any, Array], None]] = None,
                on_deterministic: Optional[Callable[[int, str, Any, Array], None]] = None
                ) -> tuple[list[Array], Any]:
    jd, pins = split_pins(model)
    values: list[Array] = []

    def visit(name: str, dist: Any, pinned_value: Any) -> Any:
        index = len(values)
        if pinned_value is not _UNPINNED:
            value = pinned_value
            if on_pinned is not None:
                on_pinned(index, name, dist, value)
        elif is_deterministic(dist):
            value = _deterministic_value(dist)
            if on_deterministic is not None:
                on_deterministic(index, name, dist, value)
        else:
            value = choose_value(index, name, dist)
        values.append(value)
        return value

    _, trees = _walk(jd, pins, "", visit)
    return values, jd._model_unflatten(trees)  # pylint: disable=protected-access


def walk_model(model: Any, choose_value: Callable[[int, str, Any], Array],
               on_pinned: Optional[Callable[[int, str, Any, Array], None]] = None,
               on_deterministic: Optional[Callable[[int, str, Any, Array], None]] = None
               ) -> list[Array]:
    """Runs the model's program, asking `choose_value` for every latent value.

    Nested joint distributions are walked in place (their variables named
    ``"<outer>/<inner>"``); deterministic variables take their value (their ``loc``, given
    the values so far) without a call to `choose_value`.

    Args:
      model: a joint distribution or a pinned one.
      choose_value: ``(index, name, distribution) -> value`` for each latent variable, called
        in program order with the variable's conditional distribution given the values chosen
        so far. Pinned variables take their pinned values.
      on_pinned: optional ``(index, name, distribution, value)`` callback for pinned ones.
      on_deterministic: optional ``(index, name, distribution, value)`` callback for the
        unpinned deterministic ones.

    Returns:
      The values of all variables (pinned and deterministic ones included) in program
      order, nested variables flattened in place.

    Raises:
      TypeError: `model` is not a joint distribution.
      ValueError: the pin of a nested joint distribution is not structured like its samples.

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
    return _walk_model(model, choose_value, on_pinned, on_deterministic)[0]


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


_PRUNED = object()


def _prune(tree: Any, keep: set[str]) -> Any:
    """`tree` (names as leaves) without the leaves not in `keep` and the emptied containers.

    A container that loses parts is rebuilt as TFP's pinned models rebuild theirs (a
    StructTuple of the remaining fields, a dict or list of the remaining entries).
    """
    if isinstance(tree, str):
        return tree if tree in keep else _PRUNED
    if isinstance(tree, dict):
        items = [(k, _prune(v, keep)) for k, v in tree.items()]
        kept = [(k, v) for k, v in items if v is not _PRUNED]
        if not kept:
            return _PRUNED
        if len(kept) == len(items) and all(v is tree[k] for k, v in kept):
            return tree
        return type(tree)(kept)
    if hasattr(tree, "_fields"):
        items = [(k, _prune(v, keep)) for k, v in zip(tree._fields, tree)]
        kept = [(k, v) for k, v in items if v is not _PRUNED]
        if not kept:
            return _PRUNED
        if len(kept) == len(items) and all(v is old for (_, v), old in zip(kept, tree)):
            return tree
        return structural_tuple.structtuple([k for k, _ in kept])(*[v for _, v in kept])
    parts = [_prune(v, keep) for v in tree]
    kept = [v for v in parts if v is not _PRUNED]
    if not kept:
        return _PRUNED
    if len(kept) == len(parts) and all(v is old for v, old in zip(kept, tree)):
        return tree
    return type(tree)(kept)


def _pruned(tree: Any, keep: set[str]) -> Any:
    out = _prune(tree, keep)
    if out is not _PRUNED:
        return out
    if isinstance(tree, dict):
        return type(tree)()
    if hasattr(tree, "_fields"):
        return structural_tuple.structtuple([])()
    return type(tree)()


def _trace(model: Any, check_transforms: bool) -> tuple[ModelTrace, Any, dict[str, Any]]:
    """(trace, name tree of every variable, {name: pinned value})."""
    records: list[VariableRecord] = []
    pinned_values: dict[str, Any] = {}

    def choose(index: int, name: str, dist: Any) -> Array:
        if isinstance(dist.dtype, (dict, list, tuple)):
            if isinstance(_unwrap(dist), tfd.MarkovChain):
                transform_for(dist, variable_name=name)  # says why its states are refused
            raise UnsupportedDistributionError(
                f"variable '{name}' ({type(dist).__name__}) has structured values: a joint "
                "distribution can be nested only as a part of its own (yielded or listed "
                "directly, not wrapped in Sample / Independent / Transformed).")
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

    def observe(index: int, name: str, dist: Any, value: Any) -> None:
        pinned_values[name] = value
        value = jnp.asarray(value)
        records.append(VariableRecord(
            name=name, index=index, family=type(dist).__name__,
            base_family=type(_unwrap(dist)).__name__, event_shape=tuple(value.shape),
            dtype=value.dtype, support=None, pinned=True, unconstrained_shape=None,
            deterministic=is_deterministic(dist)))

    def derive(index: int, name: str, dist: Any, value: Array) -> None:
        records.append(VariableRecord(
            name=name, index=index, family=type(dist).__name__,
            base_family=type(_unwrap(dist)).__name__, event_shape=tuple(value.shape),
            dtype=value.dtype, support=None, pinned=False, unconstrained_shape=None,
            deterministic=True))

    trees: list[Any] = []

    def run():
        values, tree = _walk_model(model, choose, observe, derive)
        trees.append(tree)
        return [jnp.asarray(v) for v in values]

    jax.eval_shape(run)
    names = [r.name for r in records]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"variables {duplicates} have the same name: name the parts of the "
                         f"nested joint distributions so that their paths differ")
    latent_names = tuple(r.name for r in records if not (r.pinned or r.deterministic))
    value_names = tuple(r.name for r in records if not r.pinned)
    trace = ModelTrace(tuple(records), latent_names, _pruned(trees[0], set(latent_names)),
                       value_names, _pruned(trees[0], set(value_names)))
    return trace, trees[0], pinned_values


def trace_model(model: Any, *, check_transforms: bool = True) -> ModelTrace:
    """Records every variable of `model` (abstractly: nothing is computed).

    Args:
      model: a `tfd.JointDistribution*` or a pinned one. Its parts may themselves be joint
        distributions (nested, to any depth); their variables are named by their path
        (``"h/x_3"``) and may be pinned one by one (see `split_pins`).
      check_transforms: also look up each latent's map and fail early if there is none.

    Returns:
      A `ModelTrace`.

    Raises:
      UnsupportedDistributionError: a latent variable is discrete or has no map; the message
        names the variable and its family.
      TypeError: `model` is not a joint distribution.
      ValueError: two variables resolve to the same name, or the pin of a nested joint
        distribution is not structured like its samples.

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
      >>> def inner():
      ...     yield tfd.Normal(0., 1., name='a')
      >>> def outer():
      ...     yield tfd.JointDistributionCoroutineAutoBatched(inner, name='h')
      ...     yield tfd.Deterministic(2., name='two')
      >>> trace = emf_jax.trace_model(tfd.JointDistributionCoroutineAutoBatched(outer))
      >>> trace.latent_names, trace.value_names, trace.record('two').deterministic
      (('h/a',), ('h/a', 'two'), True)
    """
    return _trace(model, check_transforms)[0]


def joint_log_prob_fn(model: Any) -> Callable[..., Array]:
    """The unnormalised log-density of a (pinned) model as a function of its unpinned values.

    The sum of every variable's log-density given its parents, pinned ones included, like
    ``pinned.unnormalized_log_prob``, with two differences that make it the target to fit
    the surrogates of this package to:

    - Deterministic variables are functions of their parents: their values in the input
      are not read but recomputed, and their point-mass terms (zero on that manifold) are
      left out. TFP's ``Deterministic.log_prob`` tests ``|x − loc| ≤ 0`` exactly, which
      fails (``-inf``) whenever ``x`` and the recomputed ``loc`` differ by rounding: under
      `jax.jit` even on the model's own samples (XLA contracts ``x − a·s`` into a fused
      multiply-add, whose result is the product's rounding error), and on a surrogate's
      samples drawn under jit even when evaluated eagerly.
    - Nested joint distributions may be partly pinned (TFP's pinned model drops such a
      part whole from its samples and cannot evaluate its density).

    The values are structured like the trace's `value_structure` (the surrogate's
    samples), with optional leading sample dimensions shared by all parts (the model runs
    once per sample, under `jax.vmap`).

    Args:
      model: a joint distribution or a pinned one.

    Returns:
      ``log_prob(*values)``: called with one value structure, with its top-level parts as
      positional arguments (as `tfp.vi` and `emf_jax.fit_vi` call the target), or with
      them as keyword arguments; it returns the log-density, of the sample shape.

    Raises:
      TypeError: `model` is not a joint distribution.

    Example:
      >>> import jax, jax.numpy as jnp, emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> def program():
      ...     mu = yield tfd.Normal(0., 1., name='mu')
      ...     s = yield tfd.HalfNormal(1., name='s')
      ...     d = yield tfd.Deterministic(mu * s, name='d')
      ...     yield tfd.Normal(d, 1., name='y')
      >>> jd = tfd.JointDistributionCoroutineAutoBatched(program)
      >>> pinned = jd.experimental_pin(y=0.3)
      >>> x = pinned.sample_unpinned(4, seed=jax.random.key(0))
      >>> log_prob = jax.jit(joint_log_prob_fn(pinned))
      >>> bool(jnp.allclose(log_prob(x), pinned.unnormalized_log_prob(x), atol=1e-5))
      True
    """
    trace = trace_model(model, check_transforms=False)
    structure = trace.value_structure
    latents = trace.latents

    def as_values(args: tuple, kwargs: dict) -> Any:
        if kwargs:
            if args:
                raise TypeError("pass the values either positionally or by keyword, not both")
            if hasattr(structure, "_fields"):
                return type(structure)(**kwargs)
            return type(structure)(kwargs) if isinstance(structure, dict) else kwargs
        if len(args) == 1:
            try:
                trace.flatten_values(args[0])
                return args[0]
            except ValueError:
                pass
        if hasattr(structure, "_fields"):
            return type(structure)(*args)
        if isinstance(structure, dict):
            return type(structure)(zip(structure.keys(), args))
        return type(structure)(args)

    def one_event(flat: list[Array]) -> Array:
        by_name = dict(zip(trace.latent_names, flat))
        terms: list[Array] = []

        def choose(index: int, name: str, dist: Any) -> Array:
            terms.append(jnp.sum(dist.unnormalized_log_prob(by_name[name])))
            return by_name[name]

        def observe(index: int, name: str, dist: Any, value: Any) -> None:
            terms.append(jnp.sum(dist.unnormalized_log_prob(value)))

        _walk_model(model, choose, observe)
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return total

    def log_prob(*args: Any, **kwargs: Any) -> Array:
        by_name = dict(zip(trace.value_names, trace.flatten_values(as_values(args, kwargs))))
        leaves = [jnp.asarray(by_name[r.name], r.dtype) for r in latents]
        batch = None
        for r, leaf in zip(latents, leaves):
            event = tuple(r.event_shape)
            leaf_batch = tuple(leaf.shape[:leaf.ndim - len(event)])
            if leaf.ndim < len(event) or tuple(leaf.shape[leaf.ndim - len(event):]) != event:
                raise ValueError(f"variable '{r.name}': expected a value of shape {event} "
                                 f"(with optional leading sample dimensions), got shape "
                                 f"{tuple(leaf.shape)}")
            if batch is None:
                batch = leaf_batch
            elif leaf_batch != batch:
                raise ValueError(f"variable '{r.name}': sample dimensions {leaf_batch} differ "
                                 f"from those of '{latents[0].name}' {batch}")
        batch = batch or ()
        size = math.prod(batch)
        flat = [leaf.reshape((size,) + leaf.shape[len(batch):]) for leaf in leaves]
        return jax.vmap(one_event)(flat).reshape(batch)

    return log_prob
