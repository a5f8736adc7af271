"""Families mapped by numerically inverting their CDF (quantile used as the first guess)."""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from tensorflow_probability.substrates import jax as tfp

from emf_jax.transforms.base import MonotoneTransform
from emf_jax.transforms.monotone import cdf_inversion_transform
from emf_jax.transforms.registry import TransformFn, register_fallback, register_transform

tfd = tfp.distributions
tfb = tfp.bijectors


def mixture_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.MixtureSameFamily` of scalar components: ``x = F⁻¹(Φ(e))``.

    ``F`` is the mixture CDF ``Σ_k w_k F_k(x)``, inverted numerically by
    `cdf_inversion_transform`. The log CDF and log survival function are log-sum-exps over the
    components, so both tails stay precise; the first guess is the mixture mean.

    Args:
      dist: a `tfd.MixtureSameFamily` with a scalar event whose components live on the whole
        real line (e.g. Normal, StudentT).

    Returns:
      A `MonotoneTransform` on the real line (no support bijector: ``u`` is ``x``).

    Raises:
      NotImplementedError: for a non-scalar event, or components with a constrained support.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> dist = tfd.MixtureSameFamily(tfd.Categorical(probs=[0.3, 0.7]),
      ...                              tfd.Normal([-2., 2.], [1., 1.]))
      >>> x = jax.jit(mixture_transform(dist).forward)(jnp.array([-1., 0., 1.]))
      >>> bool(jnp.allclose(dist.cdf(x), jnp.array([0.1587, 0.5, 0.8413]), atol=1e-4))  # Φ(e)
      True
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
    """The map of `tfd.TruncatedNormal`: ``x = F⁻¹(Φ(e))`` by numerical CDF inversion.

    `cdf_inversion_transform` with its defaults: the family's closed-form quantile is the
    first guess, refined by a safeguarded Newton iteration on ``Φ⁻¹(F(x)) = e``, so that
    forward and inverse agree to floating-point precision.

    Args:
      dist: a `tfd.TruncatedNormal(loc, scale, low, high)`.

    Returns:
      A `MonotoneTransform` (support bijector: the family's, a sigmoid onto ``(low, high)``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.transforms.base import support_forward
      >>> dist = tfp.distributions.TruncatedNormal(0., 1., 0., 2.)
      >>> t = truncated_normal_transform(dist)
      >>> x = jax.jit(lambda e: support_forward(t, t.forward(e)))(jnp.zeros(()))
      >>> round(float(x), 4)                      # the median, dist.quantile(0.5)
      0.6391
    """
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


# Gamma, Beta, StudentT, InverseGamma, Chi2 and Chi have special-function quantiles
# (`emf_jax.transforms.special`); these still invert their CDF.
for _family in (tfd.GeneralizedPareto, tfd.Triangular, tfd.VonMises):
    register_transform(_family, cdf_inversion_transform)
register_transform(tfd.TruncatedNormal, truncated_normal_transform)
register_transform(tfd.MixtureSameFamily, mixture_transform)
register_fallback(_scalar_cdf_fallback)

