"""Distributions that wrap another: the map of the inner distribution, reused or extended."""
from __future__ import annotations

from typing import Any

from tensorflow_probability.substrates import jax as tfp

from emf_jax.transforms.base import Transform, with_support
from emf_jax.transforms.registry import register_transform, transform_for

tfd = tfp.distributions
tfb = tfp.bijectors


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
    if inner.support_bijector is None:
        return with_support(inner, dist.bijector)
    return with_support(inner, tfb.Chain([dist.bijector, inner.support_bijector]))


register_transform(tfd.Independent, unwrap_transform)
register_transform(tfd.Sample, unwrap_transform)
register_transform(tfd.TransformedDistribution, transformed_distribution_transform)
