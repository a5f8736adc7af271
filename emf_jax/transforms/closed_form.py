"""Scalar families whose quantile of normal noise has a closed form precise in both tails.

Each map is ``x = F⁻¹(Φ(e))`` written so that no probability that rounds to one is ever
formed (upper tails go through ``Φ(−e)``), with inverse ``e = Φ⁻¹(F(x))`` computed from the
log CDF on the lower side and the log survival function on the upper side.

The examples use this module's own names (``jnp``, ``tfd``), as doctest gives them.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy import special as jsp
from tensorflow_probability.substrates import jax as tfp

from emf_jax._numerics import normal_log_pdf, normal_quantile_from_log_cdf, safe_where
from emf_jax.transforms.base import MonotoneTransform
from emf_jax.transforms.monotone import monotone_from_maps, noise_from_log_cdf
from emf_jax.transforms.registry import register_transform

__all__ = [
    "uniform_transform",
    "half_normal_transform",
    "exponential_transform",
    "weibull_transform",
    "laplace_transform",
    "logistic_transform",
    "cauchy_transform",
    "gumbel_transform",
    "half_cauchy_transform",
    "pareto_transform",
    "kumaraswamy_transform",
]

tfd = tfp.distributions
tfb = tfp.bijectors
Array = jax.Array


def _log1mexp(x: Array) -> Array:
    """log(1 − exp(x)) for x < 0, stable on both sides of −log 2."""
    return jnp.where(x > -0.6931471805599453, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


# Beyond |e| = 10 (Φ(−10) ≈ 7.6e−24, still a normal float32) log Φ comes from its asymptotic
# series, whose first omitted term there is below 1e−7 relative.
_LOGIT_SERIES_START = 10.0


def _normal_logit(e: Array) -> Array:
    """``logit Φ(e) = log Φ(e) − log Φ(−e)``, precise in both tails, from one `ndtr` only.

    Why not ``log_ndtr(e) − log_ndtr(−e)``: each `log_ndtr` evaluates several branches
    (about 450 XLA ops, measured), which made Uniform's and Logistic's maps 4–5× the cost of
    TFP's. Here ``p = Φ(t)`` for ``t = −|e|`` (through `where`, so the gradient at 0 is
    exact) is the smaller tail, formed without cancellation, and
    ``|logit Φ(e)| = log(1 − p) − log p``.
    """
    below = e < 0
    t = jnp.where(below, e, -e)
    series = t < -_LOGIT_SERIES_START
    start = jnp.full_like(t, -_LOGIT_SERIES_START)
    # `where`, not min/max: at a tie those split the gradient between their arguments.
    t_series = jnp.where(series, t, start)
    inv_t2 = 1 / jnp.square(t_series)
    log_p_series = (-0.5 * jnp.square(t_series) - jnp.log(-t_series)
                    - 0.9189385332046727 + jnp.log1p(inv_t2 * (-1 + inv_t2 * (3 - 15 * inv_t2))))
    p = jsp.ndtr(jnp.where(series, start, t))
    magnitude = jnp.log1p(-p) - jnp.where(series, log_p_series, jnp.log(p))
    return jnp.where(below, -magnitude, magnitude)


def _broadcast(dist: Any, *params: Array) -> list[Array]:
    shape = dist.batch_shape
    return [jnp.broadcast_to(p, shape).astype(dist.dtype) for p in params]


def _from_log_survival(dist: Any, value_from_noise, log_survival) -> MonotoneTransform:
    """A map whose inverse comes from the family's closed-form log survival function.

    The log CDF is ``log(1 − S)``, formed by `_log1mexp` so that neither tail rounds.
    """
    return monotone_from_maps(
        dist, value_from_noise,
        noise_from_log_cdf(lambda x: _log1mexp(log_survival(x)), log_survival))


@register_transform(tfd.Uniform)
def uniform_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Uniform`: ``x = low + (high − low)·Φ(e)``, through ``u = logit Φ(e)``.

    In unconstrained space the map has no parameters: ``u = log Φ(e) − log Φ(−e)``; the
    support bijector ``sigmoid`` rescaled to ``(low, high)`` then gives ``x``.

    Args:
      dist: a `tfd.Uniform(low, high)`.

    Returns:
      A `MonotoneTransform` whose support bijector is a `tfb.Sigmoid` onto ``(low, high)``.

    Example:
      >>> from emf_jax.transforms.base import support_forward
      >>> t = uniform_transform(tfd.Uniform(0., 4.))
      >>> float(support_forward(t, t.forward(jnp.zeros(()))))      # the median
      2.0
    """
    low, high = _broadcast(dist, dist.low, dist.high)
    support = tfb.Sigmoid(low=low, high=high)

    def forward(e):
        return _normal_logit(e)

    def inverse(u):
        return normal_quantile_from_log_cdf(jax.nn.log_sigmoid(u), jax.nn.log_sigmoid(-u))

    def forward_log_derivative(e, u):
        return normal_log_pdf(e) - jax.nn.log_sigmoid(u) - jax.nn.log_sigmoid(-u)

    return MonotoneTransform(forward, inverse, forward_log_derivative, support)


@register_transform(tfd.HalfNormal)
def half_normal_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.HalfNormal`: ``x = σ√2·erfinv(Φ(e))``, i.e. ``x = F⁻¹(Φ(e))``.

    The upper side is written ``x = −σ·Φ⁻¹(Φ(−e)/2)``, so that no probability rounding to one
    is formed.

    Args:
      dist: a `tfd.HalfNormal(scale)`.

    Returns:
      A `MonotoneTransform` (support bijector: the family's, a softplus).

    Example:
      >>> from emf_jax.transforms.base import support_forward
      >>> t = half_normal_transform(tfd.HalfNormal(1.))
      >>> round(float(support_forward(t, t.forward(jnp.zeros(())))), 4)   # the median
      0.6745
    """
    (scale,) = _broadcast(dist, dist.scale)
    sqrt2 = jnp.sqrt(2.0).astype(dist.dtype)

    def value_from_noise(e):
        return safe_where(e < 0, lambda v: scale * sqrt2 * jsp.erfinv(jsp.ndtr(v)),
                          lambda v: -scale * jsp.ndtri(jsp.ndtr(-v) / 2), e, safe_value=0.0)

    def log_cdf(x):
        return jnp.log(jsp.erf(x / (scale * sqrt2)))

    def log_survival(x):
        return jnp.log(jsp.erfc(x / (scale * sqrt2)))

    return monotone_from_maps(dist, value_from_noise, noise_from_log_cdf(log_cdf, log_survival))


@register_transform(tfd.Exponential)
def exponential_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Exponential`: ``x = F⁻¹(Φ(e)) = −log Φ(−e) / rate``.

    Args:
      dist: a `tfd.Exponential(rate)`.

    Returns:
      A `MonotoneTransform` (support bijector: the family's, a softplus), inverted through
      the log survival function ``−rate·x``.

    Example:
      >>> from emf_jax.transforms.base import support_forward
      >>> t = exponential_transform(tfd.Exponential(2.))
      >>> round(float(support_forward(t, t.forward(jnp.zeros(())))), 4)   # log(2) / 2
      0.3466
    """
    (rate,) = _broadcast(dist, dist.rate)

    def log_survival(x):
        return -rate * x

    return _from_log_survival(dist, lambda e: -jsp.log_ndtr(-e) / rate, log_survival)


@register_transform(tfd.Weibull)
def weibull_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Weibull`: ``x = F⁻¹(Φ(e)) = λ·(−log Φ(−e))^(1/k)``.

    Args:
      dist: a `tfd.Weibull(concentration=k, scale=λ)`.

    Returns:
      A `MonotoneTransform` (support bijector: the family's, a softplus).

    Example:
      >>> from emf_jax.transforms.base import support_forward
      >>> t = weibull_transform(tfd.Weibull(2., 1.))
      >>> round(float(support_forward(t, t.forward(jnp.zeros(())))), 4)   # √(log 2)
      0.8326
    """
    k, lam = _broadcast(dist, dist.concentration, dist.scale)

    def log_survival(x):
        return -jnp.power(x / lam, k)

    return _from_log_survival(
        dist, lambda e: lam * jnp.power(-jsp.log_ndtr(-e), 1 / k), log_survival)


def _symmetric_noise(log_tail):
    """``e = sign(z)·(−Φ⁻¹(tail(|z|)))`` for a symmetric family with log tail mass `log_tail`."""
    def noise(z):
        return jnp.sign(z) * -jsp.ndtri(jnp.exp(log_tail(jnp.abs(z))))
    return noise


def _location_scale_transform(dist: Any, offset, log_tail) -> MonotoneTransform:
    """``x = μ + offset(e, s)`` for a symmetric location-scale family.

    `offset(e, s)` is ``s·F₀⁻¹(Φ(e))`` of the standard family (written so that no
    probability near one is formed; it takes the scale so that each family keeps its own
    order of rounding); `log_tail(a)` is the standard family's log tail mass beyond
    ``a ≥ 0``, which gives the inverse through `_symmetric_noise`.
    """
    loc, scale = _broadcast(dist, dist.loc, dist.scale)
    noise = _symmetric_noise(log_tail)
    return monotone_from_maps(
        dist, lambda e: loc + offset(e, scale), lambda x: noise((x - loc) / scale))


@register_transform(tfd.Laplace)
def laplace_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Laplace`: ``x = F⁻¹(Φ(e)) = μ − b·sign(e)·(log 2 + log Φ(−|e|))``.

    Args:
      dist: a `tfd.Laplace(loc=μ, scale=b)`.

    Returns:
      A `MonotoneTransform` on the real line (no support bijector: ``u`` is ``x``).

    Example:
      >>> dist = tfd.Laplace(1., 2.)
      >>> x = laplace_transform(dist).forward(jnp.ones(()))
      >>> round(float(dist.cdf(x)), 4)                                    # Φ(1)
      0.8413
    """
    log2 = jnp.log(2.0).astype(dist.dtype)
    return _location_scale_transform(
        dist, lambda e, s: -(s * jnp.sign(e) * (log2 + jsp.log_ndtr(-jnp.abs(e)))),
        lambda a: -log2 - a)


@register_transform(tfd.Logistic)
def logistic_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Logistic`: ``x = F⁻¹(Φ(e)) = μ + s·(log Φ(e) − log Φ(−e))``.

    Args:
      dist: a `tfd.Logistic(loc=μ, scale=s)`.

    Returns:
      The `MonotoneTransform`, on the real line as :func:`laplace_transform`'s.

    Example:
      >>> t = logistic_transform(tfd.Logistic(1., 2.))
      >>> float(t.forward(jnp.zeros(())))                                 # the median, μ
      1.0
    """
    return _location_scale_transform(
        dist, lambda e, s: s * _normal_logit(e), lambda a: jax.nn.log_sigmoid(-a))


@register_transform(tfd.Cauchy)
def cauchy_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Cauchy`: ``x = F⁻¹(Φ(e)) = μ + γ·sign(e) / tan(π·Φ(−|e|))``.

    Args:
      dist: a `tfd.Cauchy(loc=μ, scale=γ)`.

    Returns:
      A `MonotoneTransform` on the real line, inverted through the tail mass
      ``arctan(1/a)/π`` beyond ``a = |x − μ|/γ`` (no probability near one is formed).

    Example:
      >>> dist = tfd.Cauchy(1., 2.)
      >>> e = cauchy_transform(dist).inverse(jnp.asarray(3.))             # the upper quartile
      >>> round(float(e), 4)                                              # Φ⁻¹(3/4)
      0.6745
    """
    pi = jnp.pi
    return _location_scale_transform(
        dist, lambda e, s: s * jnp.sign(e) / jnp.tan(pi * jsp.ndtr(-jnp.abs(e))),
        lambda a: jnp.log(jnp.arctan2(jnp.ones_like(a), a) / pi))


@register_transform(tfd.Gumbel)
def gumbel_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Gumbel`: ``x = F⁻¹(Φ(e)) = μ − β·log(−log Φ(e))``.

    Args:
      dist: a `tfd.Gumbel(loc=μ, scale=β)`.

    Returns:
      A `MonotoneTransform` on the real line; the inverse goes through the closed-form log
      CDF ``−exp(−(x − μ)/β)`` (`noise_from_log_cdf`), as the family is not symmetric.

    Example:
      >>> t = gumbel_transform(tfd.Gumbel(0., 1.))
      >>> round(float(t.forward(jnp.zeros(()))), 4)                       # −log log 2
      0.3665
    """
    loc, scale = _broadcast(dist, dist.loc, dist.scale)

    def log_cdf(x):
        return -jnp.exp(-(x - loc) / scale)

    return monotone_from_maps(
        dist, lambda e: loc - scale * jnp.log(-jsp.log_ndtr(e)),
        noise_from_log_cdf(log_cdf, lambda x: _log1mexp(log_cdf(x))))


@register_transform(tfd.HalfCauchy)
def half_cauchy_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.HalfCauchy`: ``x = F⁻¹(Φ(e)) = μ + γ·tan(π·Φ(e)/2)``.

    The upper side is written ``x = μ + γ / tan(π·Φ(−e)/2)``, so that no probability rounding
    to one is formed.

    Args:
      dist: a `tfd.HalfCauchy(loc=μ, scale=γ)`.

    Returns:
      A `MonotoneTransform` (support bijector: the family's, onto ``(μ, ∞)``).

    Example:
      >>> from emf_jax.transforms.base import support_forward
      >>> t = half_cauchy_transform(tfd.HalfCauchy(0., 1.))
      >>> round(float(support_forward(t, t.forward(jnp.zeros(())))), 4)   # the median, γ
      1.0
    """
    loc, scale = _broadcast(dist, dist.loc, dist.scale)
    half_pi = jnp.pi / 2

    def value_from_noise(e):
        z = safe_where(e < 0, lambda v: jnp.tan(half_pi * jsp.ndtr(v)),
                       lambda v: 1 / jnp.tan(half_pi * jsp.ndtr(-v)), e, safe_value=0.0)
        return loc + scale * z

    def log_cdf(x):
        z = (x - loc) / scale
        return jnp.log(jnp.arctan2(z, jnp.ones_like(z)) / half_pi)

    def log_survival(x):
        z = (x - loc) / scale
        return jnp.log(jnp.arctan2(jnp.ones_like(z), z) / half_pi)

    return monotone_from_maps(dist, value_from_noise, noise_from_log_cdf(log_cdf, log_survival))


@register_transform(tfd.Pareto)
def pareto_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Pareto`: ``x = F⁻¹(Φ(e)) = m·exp(−log Φ(−e) / α)``.

    Args:
      dist: a `tfd.Pareto(concentration=α, scale=m)`.

    Returns:
      A `MonotoneTransform` (support bijector: the family's, onto ``(m, ∞)``), inverted
      through the log survival function ``α·(log m − log x)``.

    Example:
      >>> from emf_jax.transforms.base import support_forward
      >>> t = pareto_transform(tfd.Pareto(2., 1.))
      >>> round(float(support_forward(t, t.forward(jnp.zeros(())))), 4)   # m·2^(1/α)
      1.4142
    """
    alpha, m = _broadcast(dist, dist.concentration, dist.scale)

    def log_survival(x):
        return alpha * (jnp.log(m) - jnp.log(x))

    return _from_log_survival(
        dist, lambda e: m * jnp.exp(-jsp.log_ndtr(-e) / alpha), log_survival)


@register_transform(tfd.Kumaraswamy)
def kumaraswamy_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Kumaraswamy`: ``x = F⁻¹(Φ(e)) = (1 − Φ(−e)^(1/b))^(1/a)``.

    Args:
      dist: a `tfd.Kumaraswamy(concentration1=a, concentration0=b)`.

    Returns:
      A `MonotoneTransform` (support bijector: the family's, a sigmoid onto ``(0, 1)``).

    Example:
      >>> from emf_jax.transforms.base import support_forward
      >>> t = kumaraswamy_transform(tfd.Kumaraswamy(2., 3.))
      >>> round(float(support_forward(t, t.forward(jnp.zeros(())))), 4)   # (1 − 2^(−1/b))^(1/a)
      0.4542
    """
    a, b = _broadcast(dist, dist.concentration1, dist.concentration0)

    def log_survival(x):
        return b * jnp.log1p(-jnp.power(x, a))

    return _from_log_survival(
        dist, lambda e: jnp.exp(_log1mexp(jsp.log_ndtr(-e) / b) / a), log_survival)

