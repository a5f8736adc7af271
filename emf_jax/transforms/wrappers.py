"""Distributions that wrap another: the map of the inner distribution, reused or extended."""
from __future__ import annotations

import sys
from typing import Any

from tensorflow_probability.substrates import jax as tfp

from emf_jax.transforms.base import Transform, with_support
from emf_jax.transforms.markov_chain import ChainTransform  # also registers MarkovChain
from emf_jax.transforms.registry import (
    UnsupportedDistributionError,
    current_variable,
    register_transform,
    transform_for,
)

__all__ = ["wrapper_base_class", "unwrap_transform", "transformed_distribution_transform"]

tfd = tfp.distributions
tfb = tfp.bijectors


def wrapper_base_class(public_class: type) -> type:
    """The private base TFP instantiates for non-composite contents (`_Sample` for Sample).

    TFP builds e.g. a `_Sample` rather than a `tfd.Sample` when the wrapped distribution is
    not a composite tensor (a `tfd.MarkovChain` with a Python ``transition_fn``); the public
    class derives from it, so an ``isinstance`` check against the base covers both.

    Args:
      public_class: a TFP distribution class, e.g. `tfd.Sample`.

    Returns:
      Its private base ``_<name>`` from the same module when there is one, else
      `public_class` itself.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> wrapper_base_class(tfd.Sample).__name__, wrapper_base_class(tfd.Normal).__name__
      ('_Sample', 'Normal')
    """
    base = getattr(sys.modules[public_class.__module__], "_" + public_class.__name__, None)
    return base if isinstance(base, type) and issubclass(public_class, base) else public_class


def unwrap_transform(dist: Any) -> Transform:
    """The map of `tfd.Independent` and `tfd.Sample`: the inner distribution's map.

    The inner map acts on the whole value (its parameters broadcast over the sample or
    reinterpreted dimensions), so these wrappers add nothing to it.

    Args:
      dist: a `tfd.Independent` or `tfd.Sample` (or their private bases).

    Returns:
      The map of ``dist.distribution`` (`transform_for`).

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> t = unwrap_transform(tfd.Independent(tfd.Normal([0., 1.], [1., 2.]), 1))
      >>> t.shift.tolist(), t.scale.tolist()
      ([0.0, 1.0], [1.0, 2.0])
    """
    return transform_for(dist.distribution)


def transformed_distribution_transform(dist: Any) -> Transform:
    """The map of `tfd.TransformedDistribution(base, g)`: the base's map, then ``g``.

    ``x = g(B_base(f_base(e)))``: the gate acts in the base's unconstrained space and the
    support bijector becomes ``g ∘ B_base``, which is exactly TFP's default event-space
    bijector of the transformed distribution. (LogNormal, LogLogistic, SinhArcsinh, Chi, ...
    take this path.)

    Args:
      dist: a `tfd.TransformedDistribution` (or a subclass without a map of its own).

    Returns:
      The base distribution's map with the support bijector ``g ∘ B_base``.

    Raises:
      UnsupportedDistributionError: when the base is a `tfd.MarkovChain`.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.apply import apply_forward
      >>> t = transformed_distribution_transform(tfp.distributions.LogNormal(0., 1.))
      >>> _, x, _ = apply_forward(t, jnp.ones(()))
      >>> type(t.support_bijector).__name__, round(float(x), 4)     # x = exp(e)
      ('Exp', 2.7183)
    """
    inner = transform_for(dist.distribution)
    if isinstance(inner, ChainTransform):
        raise UnsupportedDistributionError(
            f"{current_variable()} is a TransformedDistribution of a MarkovChain, which has no "
            "map: transform the chain's "
            "step distributions instead (e.g. a chain of LogNormal steps, not an Exp of a "
            "chain).")
    if inner.support_bijector is None:
        return with_support(inner, dist.bijector)
    return with_support(inner, tfb.Chain([dist.bijector, inner.support_bijector]))


# TFP returns instances of the private base classes (`_Sample`, ...) when the wrapped
# distribution is not a composite tensor (e.g. a MarkovChain with a Python transition_fn);
# the public classes derive from them, so registering the bases covers both.
for _public, _fn in ((tfd.Independent, unwrap_transform), (tfd.Sample, unwrap_transform),
                     (tfd.TransformedDistribution, transformed_distribution_transform)):
    register_transform(_public, _fn)
    register_transform(wrapper_base_class(_public), _fn)
