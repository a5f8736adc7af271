"""Flat-vector view of a model's latent variables (private helper).

Variational surrogates that live on one flat unconstrained vector (mean field, full-rank
Gaussian, flows) all need the same plumbing to turn a vector ``z`` of shape ``[D]`` into a
latent value of the model: split ``z`` into one piece per latent variable, reshape each piece
to that variable's unconstrained event shape, rebuild the model's latent structure (a
``StructTuple``, ``dict`` or ``list``) and push it through the model's default event-space
bijector into the support. :func:`flat_latent_layout` inspects a model once and returns a
:class:`FlatLatentLayout` that records these facts and builds that bijector.

The inspection is abstract (``jax.eval_shape``): it runs no model code on the device. Bijectors
are built on demand, on a fresh copy of the model, so that building one inside ``jax.jit``
never leaves traced values in the user's model (TFP caches per-variable distributions on a
joint distribution the first time its event-space bijector is built).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

from emf_jax.tracing import trace_model, walk_model
from emf_jax.transforms.registry import UnsupportedDistributionError

tfb = tfp.bijectors
tfd = tfp.distributions
tfde = tfp.experimental.distributions

__all__ = ["FlatLatentLayout", "flat_latent_layout", "latent_model"]

JointModel = Union[tfd.JointDistribution, tfde.JointDistributionPinned]


def latent_model(model: Any) -> JointModel:
    """Checks that ``model`` is a joint distribution whose latents a surrogate can describe.

    Args:
      model: a ``tfd.JointDistribution`` (all variables latent) or a
        ``JointDistributionPinned`` (from ``model.experimental_pin(...)``; the unpinned
        variables are latent).

    Returns:
      ``model`` itself.

    Raises:
      TypeError: if ``model`` is not a joint distribution.
    """
    if not isinstance(model, (tfd.JointDistribution, tfde.JointDistributionPinned)):
        raise TypeError(
            "`model` must be a tfd.JointDistribution or a JointDistributionPinned "
            f"(from `model.experimental_pin(...)`); got {type(model).__name__}."
        )
    return model


def _static_shape(shape: Any, what: str) -> tuple[int, ...]:
    """Converts a TensorShape / sequence to a tuple of Python ints, or raises ValueError."""
    if getattr(shape, "rank", 0) is None:
        raise ValueError(f"{what} has an unknown rank; static event shapes are required.")
    dims = tuple(getattr(shape, "as_list", lambda: list(shape))())
    if any(d is None for d in dims):
        raise ValueError(f"{what} has a partly unknown shape {dims}; static shapes are required.")
    return tuple(int(d) for d in dims)


def _fresh_copy(model: JointModel) -> JointModel:
    """A copy of ``model`` with empty caches (``model`` itself if it cannot be copied)."""
    try:
        if isinstance(model, tfde.JointDistributionPinned):
            return tfde.JointDistributionPinned(model.distribution.copy(), **model.pins)
        return model.copy()
    except (TypeError, ValueError, NotImplementedError):  # pragma: no cover - exotic subclasses
        return model


@dataclasses.dataclass(frozen=True, eq=False)
class FlatLatentLayout:
    """How a flat unconstrained vector of shape ``[D]`` maps to a model's latent variables.

    Parts are listed in the model's own variable order (the order its program draws them).

    Attributes:
      names: names of the latent variables, in model order.
      constrained_shapes: event shape of each latent variable (as the model samples it).
      unconstrained_shapes: event shape of each latent variable in the unconstrained space of
        the model's default event-space bijector (e.g. ``(2,)`` for a 3-simplex).
      dtype: the common floating dtype of the latent variables.
      structure: the model's latent structure (``StructTuple`` / ``dict`` / ``list``) with the
        part index ``0 .. n-1`` as leaves, as used by ``tfb.Restructure``.
      model: the model the layout describes.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> model = tfd.JointDistributionNamed(
      ...     {"w": tfd.Dirichlet([1., 1., 1.]), "s": tfd.HalfNormal(1.)})
      >>> layout = flat_latent_layout(model)
      >>> layout.names, layout.unconstrained_shapes, layout.total_size
      (('w', 's'), ((2,), ()), 3)
    """

    names: tuple[str, ...]
    constrained_shapes: tuple[tuple[int, ...], ...]
    unconstrained_shapes: tuple[tuple[int, ...], ...]
    dtype: np.dtype
    structure: Any
    model: JointModel

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of unconstrained coordinates of each latent variable."""
        return tuple(math.prod(s) for s in self.unconstrained_shapes)

    @property
    def total_size(self) -> int:
        """``D``: the total number of unconstrained coordinates."""
        return sum(self.sizes)

    def event_space_bijector(self) -> tfb.Bijector:
        """The model's default event-space bijector: unconstrained latent structure -> support.

        Built on a fresh copy of the model (safe to call inside ``jax.jit``; see the module
        docstring).
        """
        return _fresh_copy(self.model).experimental_default_event_space_bijector()

    def unflatten_bijector(self) -> tfb.Bijector:
        """Bijector from a flat vector ``[..., D]`` to the unconstrained latent structure.

        Forward: split into ``sizes``, reshape each part to its unconstrained shape, restructure.
        Inverse: the reverse. Log-det: zero (a re-indexing).

        Returns:
          A multipart ``tfb.Bijector`` with ``forward_min_event_ndims=1``.
        """
        n = len(self.names)
        reshapes = tfb.JointMap(
            [
                tfb.Reshape(event_shape_out=shape, event_shape_in=(size,))
                for shape, size in zip(self.unconstrained_shapes, self.sizes)
            ]
        )
        restructure = tfb.Restructure(
            output_structure=self.structure, input_structure=list(range(n))
        )
        return tfb.Chain([restructure, reshapes, tfb.Split(list(self.sizes), axis=-1)])

    def flat_bijector(self) -> tfb.Bijector:
        """Bijector from a flat unconstrained vector ``[..., D]`` to constrained latents.

        Forward: :meth:`unflatten_bijector`, then the model's default event-space bijector.
        Log-det: that of the event-space bijector.

        Returns:
          A ``tfb.Bijector`` whose forward output has the model's latent structure (what
          ``pinned.sample_unpinned()`` or ``model.sample()`` returns), in the support.
        """
        return tfb.Chain([self.event_space_bijector(), self.unflatten_bijector()])


def flat_latent_layout(model: JointModel) -> FlatLatentLayout:
    """Inspects a joint model's latent variables for flat-vector surrogates.

    Args:
      model: a ``tfd.JointDistribution`` (all variables latent) or a
        ``JointDistributionPinned`` (its unpinned variables are latent).

    Returns:
      A :class:`FlatLatentLayout`; ``layout.flat_bijector()`` maps ``[..., D]`` vectors to
      latent values in the support.

    Raises:
      TypeError: if ``model`` is not a joint distribution, or a latent variable is not
        real-valued (discrete latents cannot be described by a continuous surrogate).
      ValueError: if the model has no latent variables, a latent variable has a non-scalar
        batch shape or an unknown event shape, or latents have different float dtypes.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax._structure import flat_latent_layout
      >>> tfd = tfp.distributions
      >>> model = tfd.JointDistributionNamed(dict(
      ...     w=tfd.Dirichlet(jnp.ones(3)), s=tfd.HalfNormal(1.0),
      ...     y=lambda s: tfd.Normal(0.0, s)))
      >>> layout = flat_latent_layout(model.experimental_pin(y=0.5))
      >>> layout.names, layout.unconstrained_shapes, layout.total_size
      (('s', 'w'), ((), (2,)), 3)
      >>> x = layout.flat_bijector().forward(jnp.zeros(3))
      >>> sorted(x), x['w'].shape
      (['s', 'w'], (3,))
    """
    model = latent_model(model)
    facts: dict[str, Any] = {}

    def inspect() -> jax.Array:
        # Runs under jax.eval_shape on a copy: nothing is computed, nothing leaks into `model`.
        facts.update(_inspect(_fresh_copy(model)))
        return jnp.zeros(())

    jax.eval_shape(inspect)
    return FlatLatentLayout(model=model, **facts)


def _partly_pinned_nested(model: JointModel) -> list[str]:
    """Names of nested joint distributions that are pinned in part (None for some parts)."""
    if not isinstance(model, tfde.JointDistributionPinned):
        return []
    jd = model.distribution
    # pylint: disable-next=protected-access
    parts = dict(zip(jd._flat_resolve_names(), jd._get_single_sample_distributions()))
    found = []
    for name, value in model.pins.items():
        if isinstance(parts.get(name), tfd.JointDistribution) and _has_none(value):
            found.append(name)
    return found


def _has_none(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_none(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_none(v) for v in value)
    return False


def _inspect(model: JointModel) -> dict[str, Any]:
    """The static facts of :class:`FlatLatentLayout` (see :func:`flat_latent_layout`).

    The parts are the trace's values (`emf_jax.tracing`): variables of nested joint
    distributions are parts of their own, named by their path (``"h/a"``), and
    deterministic variables are parts of unconstrained size 0 (TFP's event-space bijector
    computes them from their parents).
    """
    partly = _partly_pinned_nested(model)
    if partly:
        raise ValueError(
            f"nested joint distributions {partly} are pinned in part: TFP's pinned model drops "
            "such a part whole, so surrogates built on its event-space bijector cannot describe "
            "it; pin every part of it or none, or use the EMF surrogates (which trace it).")
    try:
        trace = trace_model(model, check_transforms=False)
    except UnsupportedDistributionError as err:  # a discrete latent
        raise TypeError(f"{err} Only real-valued latents are supported (pin discrete variables "
                        "or marginalise them out).") from err
    names = trace.value_names
    if not names:
        raise ValueError("The model has no latent (unpinned) variables to approximate.")
    records = {r.name: r for r in trace.values}

    def flatten(tree: Any) -> list[Any]:
        return trace.flatten_values(tree)

    dtypes = flatten(model.dtype)
    for name, dt in zip(names, dtypes):
        if not jnp.issubdtype(np.dtype(dt), jnp.floating):
            raise TypeError(
                f"Latent variable {name!r} has dtype {np.dtype(dt).name}: only real-valued "
                "latents are supported (pin discrete variables or marginalise them out)."
            )
    # Discrete families (e.g. Poisson, whose samples are floats) have no event-space bijector.
    leaf_dists = _leaf_distributions(model)
    for name in trace.latent_names:
        if leaf_dists[name].experimental_default_event_space_bijector() is None:
            raise TypeError(
                f"Latent variable {name!r} ({type(leaf_dists[name]).__name__}) has no continuous "
                "support: only real-valued latents are supported (pin discrete variables or "
                "marginalise them out)."
            )
    distinct = sorted({np.dtype(dt).name for dt in dtypes})
    if len(distinct) > 1:
        raise ValueError(
            f"Latent variables have different dtypes {distinct}; build the model with one "
            "float dtype (e.g. pass jnp arrays of that dtype as parameters)."
        )

    event_shapes = [
        _static_shape(s, f"The event shape of latent variable {n!r}")
        for n, s in zip(names, flatten(model.event_shape))
    ]
    for name, event in zip(names, event_shapes):
        # The trace records batch and event dimensions together: any extra ones are batch.
        if tuple(records[name].event_shape) != event:
            batch = list(records[name].event_shape[:len(records[name].event_shape) - len(event)])
            raise ValueError(
                f"Latent variable {name!r} has batch shape {batch}; surrogates need scalar "
                "batch shapes: wrap the distribution in tfd.Independent / tfd.Sample or use a "
                "JointDistribution*AutoBatched model."
            )

    event_space_bijector = model.experimental_default_event_space_bijector()
    unconstrained = flatten(event_space_bijector.inverse_event_shape(model.event_shape))
    return dict(
        names=names,
        constrained_shapes=tuple(event_shapes),
        unconstrained_shapes=tuple(
            _static_shape(s, f"The unconstrained event shape of latent variable {n!r}")
            for n, s in zip(names, unconstrained)
        ),
        dtype=np.dtype(distinct[0]),
        structure=trace.unflatten_values(list(range(len(names)))),
    )


def _leaf_distributions(model: JointModel) -> dict[str, Any]:
    """{name: distribution} of every latent variable, nested ones included (abstractly)."""
    found: dict[str, Any] = {}

    def choose(index: int, name: str, dist: Any) -> jax.Array:
        found[name] = dist
        return jnp.zeros(tuple(dist.batch_shape) + tuple(dist.event_shape), dist.dtype)

    walk_model(model, choose)
    return found
