"""Building `MonotoneTransform`s from a family's quantile of normal noise and its CDF."""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from emf_jax._numerics import normal_log_pdf, normal_quantile_from_log_cdf, solve_increasing
from emf_jax.transforms.base import MonotoneTransform

__all__ = ["monotone_from_maps", "noise_from_log_cdf", "cdf_inversion_transform"]

Array = jax.Array


def _support_bijector(dist: Any, support_bijector: Optional[Any]) -> Optional[Any]:
    """The support bijector, or None for the identity (which skips the bijector's overhead)."""
    support = (dist.experimental_default_event_space_bijector() if support_bijector is None
               else support_bijector)
    return None if type(support).__name__ == "Identity" else support


def _forward(support, u):
    return u if support is None else support.forward(u)


def _inverse(support, x):
    return x if support is None else support.inverse(x)


def _log_det(support, u):
    return 0.0 if support is None else support.forward_log_det_jacobian(u, event_ndims=0)


def monotone_from_maps(
    dist: Any,
    value_from_noise: Callable[[Array], Array],
    noise_from_value: Callable[[Array], Array],
    *,
    support_bijector: Optional[Any] = None,
) -> MonotoneTransform:
    """A map given by ``x = F⁻¹(Φ(e))`` and ``e = Φ⁻¹(F(x))`` in the constrained space.

    In unconstrained space ``u = B⁻¹(x)`` (``B`` the support bijector), and
    ``log f'(e) = log φ(e) − log p(x) − log B'(u)``.

    Args:
      dist: the (scalar-event) distribution; its `log_prob` gives the log-derivative.
      value_from_noise: ``e -> x``, precise in both tails where possible.
      noise_from_value: ``x -> e``, its inverse.
      support_bijector: defaults to the distribution's default event-space bijector.

    Returns:
      A `MonotoneTransform` whose log-derivative comes from ``dist.log_prob``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jax.scipy.special import ndtr, ndtri
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> dist = tfp.distributions.Exponential(2.0)      # F(x) = 1 - exp(-2x)
      >>> t = monotone_from_maps(dist, lambda e: -jnp.log1p(-ndtr(e)) / 2.0,
      ...                        lambda x: ndtri(-jnp.expm1(-2.0 * x)))
      >>> x = t.support_bijector.forward(t.forward(jnp.zeros(())))
      >>> round(float(x), 4)                            # the median, log(2) / 2
      0.3466
    """
    support = _support_bijector(dist, support_bijector)

    def forward(e):
        return _inverse(support, value_from_noise(e))

    def inverse(u):
        return noise_from_value(_forward(support, u))

    def forward_log_derivative(e, u):
        return normal_log_pdf(e) - dist.log_prob(_forward(support, u)) - _log_det(support, u)

    return MonotoneTransform(forward, inverse, forward_log_derivative, support)


def noise_from_log_cdf(log_cdf: Callable[[Array], Array],
                       log_survival: Callable[[Array], Array]) -> Callable[[Array], Array]:
    """The inverse map ``x -> e = Φ⁻¹(F(x))`` from the log CDF and the log survival function.

    Both tails stay precise: the lower side uses ``log F(x)`` and the upper side
    ``log(1 − F(x))``, so no probability that rounds to one is formed.

    Args:
      log_cdf: ``x -> log F(x)``.
      log_survival: ``x -> log(1 − F(x))``.

    Returns:
      The function ``x -> Φ⁻¹(F(x))`` (elementwise).

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> dist = tfp.distributions.Logistic(0., 1.)
      >>> noise = noise_from_log_cdf(dist.log_cdf, dist.log_survival_function)
      >>> [round(float(e), 4) for e in noise(jnp.array([-40.0, 40.0]))]  # F(40) rounds to 1
      [-8.5927, 8.5927]
    """
    return lambda x: normal_quantile_from_log_cdf(log_cdf(x), log_survival(x))


def cdf_inversion_transform(
    dist: Any,
    *,
    log_cdf: Optional[Callable[[Array], Array]] = None,
    log_survival: Optional[Callable[[Array], Array]] = None,
    initial_guess: Optional[Callable[[Array], Array]] = None,
    support_bijector: Optional[Any] = None,
) -> MonotoneTransform:
    """A map for any continuous scalar family with a CDF, inverted numerically.

    The inverse ``e = Φ⁻¹(F(x))`` is closed form. The forward ``x = F⁻¹(Φ(e))`` is the root in
    unconstrained space of ``u ↦ Φ⁻¹(F(B(u))) − e``, found by a safeguarded Newton iteration
    from an initial guess — the family's `quantile` where TFP has one — so forward and inverse
    agree to floating-point precision.
    Gradients come from the implicit function theorem. The log-det uses `log_prob`.

    Args:
      dist: a scalar-event continuous distribution.
      log_cdf: defaults to `dist.log_cdf`.
      log_survival: defaults to `dist.log_survival_function`.
      initial_guess: ``e -> x`` guess; defaults to `dist.quantile(Φ(e))` clipped away from
        0 and 1, or the support's image of 0 when the family has no quantile.
      support_bijector: defaults to the distribution's default event-space bijector.

    Returns:
      A `MonotoneTransform`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> dist = tfp.distributions.Logistic(0.0, 1.0)
      >>> t = cdf_inversion_transform(dist)        # ignoring Logistic's closed-form quantile
      >>> x = jax.jit(t.forward)(jnp.array([-1.0, 0.0, 1.0]))   # real line: u is x
      >>> bool(jnp.allclose(dist.cdf(x), jnp.array([0.1587, 0.5, 0.8413]), atol=1e-4))
      True
    """
    support = _support_bijector(dist, support_bijector)
    log_cdf = dist.log_cdf if log_cdf is None else log_cdf
    log_survival = dist.log_survival_function if log_survival is None else log_survival
    noise_from_value = noise_from_log_cdf(log_cdf, log_survival)

    def guess_u(e):
        if initial_guess is not None:
            u0 = _inverse(support, initial_guess(e))
        else:
            eps = jnp.finfo(e.dtype).eps
            p = jnp.clip(jax.scipy.special.ndtr(e), eps, 1 - eps)
            try:
                u0 = _inverse(support, dist.quantile(p))
            except NotImplementedError:
                u0 = jnp.zeros_like(e)
        return jnp.where(jnp.isfinite(u0), u0, jnp.zeros_like(u0))

    def forward(e):
        # Solved directly in unconstrained space: no round trip through the support.
        return solve_increasing(lambda v: noise_from_value(_forward(support, v)) - e,
                                guess_u(e), jnp.ones_like(e))

    def value_from_noise(e):
        return _forward(support, forward(e))

    base = monotone_from_maps(dist, value_from_noise, noise_from_value, support_bijector=support)
    return base._replace(forward=forward)
