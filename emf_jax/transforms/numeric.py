"""Families mapped by numerically inverting their CDF (quantile used as the first guess)."""
from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp
from tensorflow_probability.substrates.jax.distributions import von_mises as _tfp_von_mises

from emf_jax.transforms.base import MonotoneTransform
from emf_jax.transforms.monotone import cdf_inversion_transform
from emf_jax.transforms.registry import TransformFn, register_fallback, register_transform

tfd = tfp.distributions
tfb = tfp.bijectors
Array = jax.Array

__all__ = ["mixture_transform", "truncated_normal_transform", "von_mises_cdf",
           "von_mises_transform"]


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


def _tfp_von_mises_cdf(z: Array, concentration: Array) -> Array:
    return _tfp_von_mises.von_mises_cdf(z, concentration)


@jax.custom_jvp
def von_mises_cdf(z: Array, concentration: Array) -> Array:
    """TFP's von Mises CDF ``F₀(z; κ) = ∫_{-π}^{z} p₀(t; κ) dt`` with a forward-mode rule.

    ``p₀(t; κ) = exp(κ (cos t − 1)) / (2π I₀ₑ(κ))`` is the density of ``VonMises(0, κ)``
    (``I₀ₑ`` the exponentially scaled Bessel function); ``F₀`` grows by one per period of
    ``2π``. TFP defines this function with a reverse-mode-only gradient, which the Newton
    solve of `cdf_inversion_transform` (``jax.lax.custom_root`` linearises its objective)
    cannot differentiate; this rule gives ``∂F₀/∂z = p₀(z; κ)`` and ``∂F₀/∂κ`` from TFP's
    own reverse-mode rule (the CDF is elementwise, so one vector-Jacobian product with ones
    is the diagonal of the Jacobian).

    Args:
      z: the angle relative to the location, ``x − loc``.
      concentration: κ > 0, broadcastable against `z`.

    Returns:
      ``F₀(z; κ)``, of the broadcast shape.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> round(float(von_mises_cdf(jnp.zeros(()), jnp.asarray(2.0))), 4)   # symmetric
      0.5
      >>> slope = jax.jvp(lambda z: von_mises_cdf(z, jnp.asarray(2.0)),
      ...                 (jnp.zeros(()),), (jnp.ones(()),))[1]
      >>> bool(jnp.isclose(slope, tfd.VonMises(0.0, 2.0).prob(0.0)))        # the density
      True
    """
    z, concentration = jnp.broadcast_arrays(z, concentration)
    return _tfp_von_mises_cdf(z, concentration)


@von_mises_cdf.defjvp
def _von_mises_cdf_jvp(primals, tangents):
    z, concentration = jnp.broadcast_arrays(*primals)
    dz, dconcentration = (jnp.broadcast_to(t, z.shape) for t in tangents)
    cdf, pullback = jax.vjp(_tfp_von_mises_cdf, z, concentration)
    _, dcdf_dconcentration = pullback(jnp.ones_like(cdf))
    density = jnp.exp(concentration * (jnp.cos(z) - 1.0)) / (
        2.0 * np.pi * jax.scipy.special.i0e(concentration))
    return cdf, density * dz + dcdf_dconcentration * dconcentration


def von_mises_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.VonMises` on ``(−π, π)``: ``x = G⁻¹(Φ(e))`` by numerical inversion.

    TFP's VonMises lives on ``[−π, π]`` (its samples and support bijector), and its
    ``cdf(x) = F₀(x − loc)`` is offset by ``F₀(−π − loc)`` there. The map inverts the
    distribution's own CDF on its support,

        G(x) = F₀(x − loc; κ) − F₀(−π − loc; κ),   G(−π) = 0,  G(π) = 1,

    with `von_mises_cdf` (which has a forward-mode derivative, ``G'(x) = p(x)``); the log
    survival function is ``log(1 − G(x))``. The log-det uses `log_prob`, the density of ``G``.

    Args:
      dist: a `tfd.VonMises(loc, concentration)`.

    Returns:
      A `MonotoneTransform` (support bijector: the family's, a sigmoid onto ``(−π, π)``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from emf_jax.transforms.base import support_forward
      >>> dist = tfd.VonMises(0.0, 2.0)
      >>> t = von_mises_transform(dist)
      >>> x = jax.jit(lambda e: support_forward(t, t.forward(e)))(jnp.zeros(()))
      >>> abs(float(x)) < 1e-5                    # the median of a centred VonMises
      True
    """
    loc = jnp.asarray(dist.loc, dist.dtype)
    concentration = jnp.asarray(dist.concentration, dist.dtype)

    def cdf(x):
        return (von_mises_cdf(x - loc, concentration)
                - von_mises_cdf(-np.pi - loc + jnp.zeros_like(x), concentration))

    return cdf_inversion_transform(
        dist, log_cdf=lambda x: jnp.log(cdf(x)), log_survival=lambda x: jnp.log1p(-cdf(x)))


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
for _family in (tfd.GeneralizedPareto, tfd.Triangular):
    register_transform(_family, cdf_inversion_transform)
register_transform(tfd.VonMises, von_mises_transform)
register_transform(tfd.TruncatedNormal, truncated_normal_transform)
register_transform(tfd.MixtureSameFamily, mixture_transform)
register_fallback(_scalar_cdf_fallback)

