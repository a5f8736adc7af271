"""Distributions that wrap another: the map of the inner distribution, reused or extended."""
from __future__ import annotations

import sys
from typing import Any

from tensorflow_probability.substrates import jax as tfp

from emf_jax.transforms.base import Transform, with_support
from emf_jax.transforms.markov_chain import ChainTransform  # also registers MarkovChain
from emf_jax.transforms.registry import (UnsupportedDistributionError, current_variable,
                                         register_transform, transform_for)

tfd = tfp.distributions
tfb = tfp.bijectors


def wrapper_base_class(public_class: type) -> type:
    """The private base TFP instantiates for non-composite contents (`_Sample` for Sample)."""
    base = getattr(sys.modules[public_class.__module__], "_" + public_class.__name__, None)
    return base if isinstance(base, type) and issubclass(public_class, base) else public_class


def unwrap_transform(dist: Any) -> Transform:
    """Independent / Sample: the inner map acts on the whole value (parameters broadcast)."""
    return transform_for(dist.distribution)


def transformed_distribution_transform(dist: Any) -> Transform:
    """TransformedDistribution(base, g): the base's map, then g.

    The gate acts in the base's unconstrained space and the support bijector becomes
    ``g ∘ B_base``, which is exactly TFP's default event-space bijector of the transformed
    distribution. (LogNormal, LogLogistic, SinhArcsinh, Chi, ... take this path.)
    """
    inner = transform_for(dist.distribution)
    if isinstance(inner, ChainTransform):
        raise UnsupportedDistributionError(
            f"{current_variable()} is a TransformedDistribution of a MarkovChain, which has no map: transform the chain's "
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
