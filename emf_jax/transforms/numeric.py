"""Families mapped by numerically inverting their CDF (quantile used as the first guess)."""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from tensorflow_probability.substrates import jax as tfp

from emf_jax.transforms.base import MonotoneTransform
from emf_jax.transforms.monotone import cdf_inversion_transform
from emf_jax.transforms.registry import (TransformFn, register_fallback, register_transform)

tfd = tfp.distributions
tfb = tfp.bijectors


def mixture_transform(dist: Any) -> MonotoneTransform:
    """MixtureSameFamily of scalar components: ``x = F⁻¹(Φ(e))`` for the mixture CDF.

    The log CDF and log survival function are log-sum-exps over the components, so both tails
    stay precise; the first guess is the mixture mean.
    """
    if tuple(dist.event_shape) != ():
        raise NotImplementedError(
            "MixtureSameFamily with a non-scalar event has no CDF to invert; wrap scalar "
            "mixtures in tfd.Independent instead.")
    log_weights = jax.nn.log_softmax(dist.mixture_distribution.logits_parameter(), axis=-1)
    components = dist.components_distribution
    component_support = components.experimental_default_event_space_bijector()
    if type(component_support).__name__ != "Identity":
        raise NotImplementedError(
            "only mixtures of components supported on the whole real line (e.g. Normal, "
            f"StudentT) have a built-in map; got components {type(components).__name__}. "
            "Register a transform for this mixture.")

    def mixed(log_fn):
        return lambda x: jax.nn.logsumexp(log_weights + log_fn(x[..., None]), axis=-1)

    mean = dist.mean()
    return cdf_inversion_transform(
        dist,
        log_cdf=mixed(components.log_cdf),
        log_survival=mixed(components.log_survival_function),
        initial_guess=lambda e: mean + jnp.zeros_like(e),
        support_bijector=tfb.Identity())


def truncated_normal_transform(dist: Any) -> MonotoneTransform:
    """TruncatedNormal: CDF inversion with the closed-form quantile as first guess."""
    return cdf_inversion_transform(dist)


def _scalar_cdf_fallback(dist: Any) -> Optional[TransformFn]:
    """Any continuous scalar family whose `cdf` is implemented gets numeric inversion."""
    if tuple(dist.event_shape) != ():
        return None
    try:
        jax.eval_shape(dist.cdf, jnp.zeros(dist.batch_shape, dist.dtype))
    except NotImplementedError:
        return None
    return cdf_inversion_transform


for _family in (tfd.Gamma, tfd.Beta, tfd.StudentT, tfd.InverseGamma, tfd.Chi2, tfd.Chi,
                tfd.GeneralizedPareto, tfd.Triangular, tfd.VonMises):
    register_transform(_family, cdf_inversion_transform)
register_transform(tfd.TruncatedNormal, truncated_normal_transform)
register_transform(tfd.MixtureSameFamily, mixture_transform)
register_fallback(_scalar_cdf_fallback)

