"""Scalar families whose quantile of normal noise has a closed form precise in both tails.

Each map is ``x = F⁻¹(Φ(e))`` written so that no probability that rounds to one is ever
formed (upper tails go through ``Φ(−e)``), with inverse ``e = Φ⁻¹(F(x))`` computed from the
log CDF on the lower side and the log survival function on the upper side.
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

tfd = tfp.distributions
tfb = tfp.bijectors
Array = jax.Array


def _log1mexp(x: Array) -> Array:
    """log(1 − exp(x)) for x < 0, stable on both sides of −log 2."""
    return jnp.where(x > -0.6931471805599453, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def _broadcast(dist: Any, *params: Array) -> list[Array]:
    shape = dist.batch_shape
    return [jnp.broadcast_to(p, shape).astype(dist.dtype) for p in params]


def uniform_transform(dist: Any) -> MonotoneTransform:
    """Uniform(low, high): ``u = logit Φ(e)``, then ``x = low + (high − low)·sigmoid(u)``.

    In unconstrained space the map has no parameters: ``u = log Φ(e) − log Φ(−e)``.
    """
    low, high = _broadcast(dist, dist.low, dist.high)
    support = tfb.Sigmoid(low=low, high=high)

    def forward(e):
        return jsp.log_ndtr(e) - jsp.log_ndtr(-e)

    def inverse(u):
        return normal_quantile_from_log_cdf(jax.nn.log_sigmoid(u), jax.nn.log_sigmoid(-u))

    def forward_log_derivative(e, u):
        return normal_log_pdf(e) - jax.nn.log_sigmoid(u) - jax.nn.log_sigmoid(-u)

    return MonotoneTransform(forward, inverse, forward_log_derivative, support)


def half_normal_transform(dist: Any) -> MonotoneTransform:
    """HalfNormal(σ): ``x = σ√2·erfinv(Φ(e))`` (lower side), ``−σ·Φ⁻¹(Φ(−e)/2)`` (upper)."""
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


def exponential_transform(dist: Any) -> MonotoneTransform:
    """Exponential(rate): ``x = −log Φ(−e) / rate``."""
    (rate,) = _broadcast(dist, dist.rate)

    def log_survival(x):
        return -rate * x

    return monotone_from_maps(
        dist, lambda e: -jsp.log_ndtr(-e) / rate,
        noise_from_log_cdf(lambda x: _log1mexp(log_survival(x)), log_survival))


def weibull_transform(dist: Any) -> MonotoneTransform:
    """Weibull(k, λ): ``x = λ·(−log Φ(−e))^(1/k)``."""
    k, lam = _broadcast(dist, dist.concentration, dist.scale)

    def log_survival(x):
        return -jnp.power(x / lam, k)

    return monotone_from_maps(
        dist, lambda e: lam * jnp.power(-jsp.log_ndtr(-e), 1 / k),
        noise_from_log_cdf(lambda x: _log1mexp(log_survival(x)), log_survival))


def _symmetric_noise(log_tail):
    """``e = sign(z)·(−Φ⁻¹(tail(|z|)))`` for a symmetric family with log tail mass `log_tail`."""
    def noise(z):
        return jnp.sign(z) * -jsp.ndtri(jnp.exp(log_tail(jnp.abs(z))))
    return noise


def laplace_transform(dist: Any) -> MonotoneTransform:
    """Laplace(μ, b): ``x = μ − b·sign(e)·(log 2 + log Φ(−|e|))``."""
    loc, scale = _broadcast(dist, dist.loc, dist.scale)
    log2 = jnp.log(2.0).astype(dist.dtype)
    noise = _symmetric_noise(lambda a: -log2 - a)
    return monotone_from_maps(
        dist, lambda e: loc - scale * jnp.sign(e) * (log2 + jsp.log_ndtr(-jnp.abs(e))),
        lambda x: noise((x - loc) / scale))


def logistic_transform(dist: Any) -> MonotoneTransform:
    """Logistic(μ, s): ``x = μ + s·(log Φ(e) − log Φ(−e))``."""
    loc, scale = _broadcast(dist, dist.loc, dist.scale)
    noise = _symmetric_noise(lambda a: jax.nn.log_sigmoid(-a))
    return monotone_from_maps(
        dist, lambda e: loc + scale * (jsp.log_ndtr(e) - jsp.log_ndtr(-e)),
        lambda x: noise((x - loc) / scale))


def cauchy_transform(dist: Any) -> MonotoneTransform:
    """Cauchy(μ, γ): ``x = μ + γ·sign(e) / tan(π·Φ(−|e|))``."""
    loc, scale = _broadcast(dist, dist.loc, dist.scale)
    pi = jnp.pi
    noise = _symmetric_noise(lambda a: jnp.log(jnp.arctan2(jnp.ones_like(a), a) / pi))
    return monotone_from_maps(
        dist, lambda e: loc + scale * jnp.sign(e) / jnp.tan(pi * jsp.ndtr(-jnp.abs(e))),
        lambda x: noise((x - loc) / scale))


def gumbel_transform(dist: Any) -> MonotoneTransform:
    """Gumbel(μ, β): ``x = μ − β·log(−log Φ(e))``."""
    loc, scale = _broadcast(dist, dist.loc, dist.scale)

    def log_cdf(x):
        return -jnp.exp(-(x - loc) / scale)

    return monotone_from_maps(
        dist, lambda e: loc - scale * jnp.log(-jsp.log_ndtr(e)),
        noise_from_log_cdf(log_cdf, lambda x: _log1mexp(log_cdf(x))))


def half_cauchy_transform(dist: Any) -> MonotoneTransform:
    """HalfCauchy(μ, γ): ``x = μ + γ·tan(π·Φ(e)/2)`` (lower), ``μ + γ / tan(π·Φ(−e)/2)``."""
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


def pareto_transform(dist: Any) -> MonotoneTransform:
    """Pareto(α, m): ``x = m·exp(−log Φ(−e) / α)``."""
    alpha, m = _broadcast(dist, dist.concentration, dist.scale)

    def log_survival(x):
        return alpha * (jnp.log(m) - jnp.log(x))

    return monotone_from_maps(
        dist, lambda e: m * jnp.exp(-jsp.log_ndtr(-e) / alpha),
        noise_from_log_cdf(lambda x: _log1mexp(log_survival(x)), log_survival))


def kumaraswamy_transform(dist: Any) -> MonotoneTransform:
    """Kumaraswamy(a, b): ``x = (1 − Φ(−e)^(1/b))^(1/a)``."""
    a, b = _broadcast(dist, dist.concentration1, dist.concentration0)

    def log_survival(x):
        return b * jnp.log1p(-jnp.power(x, a))

    return monotone_from_maps(
        dist, lambda e: jnp.exp(_log1mexp(jsp.log_ndtr(-e) / b) / a),
        noise_from_log_cdf(lambda x: _log1mexp(log_survival(x)), log_survival))


register_transform(tfd.Uniform, uniform_transform)
register_transform(tfd.HalfNormal, half_normal_transform)
register_transform(tfd.Exponential, exponential_transform)
register_transform(tfd.Weibull, weibull_transform)
register_transform(tfd.Laplace, laplace_transform)
register_transform(tfd.Logistic, logistic_transform)
register_transform(tfd.Cauchy, cauchy_transform)
register_transform(tfd.Gumbel, gumbel_transform)
register_transform(tfd.HalfCauchy, half_cauchy_transform)
register_transform(tfd.Pareto, pareto_transform)
register_transform(tfd.Kumaraswamy, kumaraswamy_transform)
