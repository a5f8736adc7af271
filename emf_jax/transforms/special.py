"""Scalar families whose quantile of normal noise is a special-function inverse.

Each map is ``x = F⁻¹(Φ(e))`` computed from TFP's inverses of the regularised incomplete
gamma and beta functions (`tfp.math.igammainv`, `igammacinv`, `betaincinv`): no numerical
root finding in the forward pass, so the map costs what TFP's own quantile costs. Both tails
stay precise: the lower tail inverts ``F`` at ``Φ(e)``, the upper tail inverts the survival
function at ``Φ(−e)``, so that no probability rounding to one is ever formed; where the
family has a symmetry (Beta's ``a ↔ b``, StudentT's two tails) one call serves both sides by
swapping the arguments.

The inverse ``e = Φ⁻¹(F(x))`` comes from the family's log CDF and log survival function,
and the log-derivative from ``log φ(e) − log p_U(u)``, the density of ``u`` written in the
unconstrained space where that is stabler than going through ``x``.

The float32 round trip of each map, over noise ``|e| ≤ 6`` and a grid of parameters, is
measured by ``python -m benchmarks.structured`` (its accuracy table): every family here
meets the property suite's tolerance without refinement.

The examples use this module's own names (``jnp``, ``tfd``), as doctest gives them.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy import special as jsp
from tensorflow_probability.substrates import jax as tfp

from emf_jax._numerics import _lower_normal_quantile_from_log as _lower_quantile
from emf_jax._numerics import normal_log_pdf, normal_quantile_from_log_cdf, vectorized_under_vmap
from emf_jax.transforms.base import MonotoneTransform
from emf_jax.transforms.monotone import monotone_from_maps, noise_from_log_cdf
from emf_jax.transforms.registry import register_transform

tfd = tfp.distributions
tfb = tfp.bijectors
Array = jax.Array

__all__ = ["beta_transform", "chi2_transform", "chi_transform", "gamma_transform",
           "inverse_gamma_transform", "student_t_transform"]


# The noise range of the gamma-quantile maps under a gate (`MonotoneTransform.noise_limit`):
# in float32 a Gamma(½) quantile at e = −9 (Φ ≈ 10⁻¹⁹) underflows to 0.
GAMMA_NOISE_LIMIT = 8.0

# TFP's inverses are while loops, which the structured layer's vmap over draws would batch
# into slower loops (`vectorized_under_vmap`): under vmap each is one call on the whole batch.
_betaincinv = vectorized_under_vmap(tfp.math.betaincinv, 3)
_igammainv = vectorized_under_vmap(tfp.math.igammainv, 2)
_igammacinv = vectorized_under_vmap(tfp.math.igammacinv, 2)


def _broadcast(dist: Any, *params: Array) -> list[Array]:
    shape = dist.batch_shape
    return [jnp.broadcast_to(p, shape).astype(dist.dtype) for p in params]


def _tail_noise(e: Array) -> tuple[Array, Array]:
    """``(min(e, 0), max(e, 0))`` through `where`, so each side gets the whole gradient at 0."""
    zero = jnp.zeros_like(e)
    below = e < 0
    return jnp.where(below, e, zero), jnp.where(below, zero, e)


def _igammac_inverse(alpha: Array, e: Array) -> Array:
    """``Q⁻¹(α, Φ(−e))`` for ``e ≥ 0`` (``Q`` the regularised upper incomplete gamma).

    `tfp.math.igammacinv(α, q)` forms ``1 − q`` internally and returns ``inf`` once that
    rounds to one (``q`` below about 6e−8 in float32, ``e`` above 5.3). Its answer at
    ``max(q, 4ε)`` is refined by Newton steps on ``log Q(α, z) = log Φ(−e)``, which is
    almost linear in ``z`` there (``log Q ≈ −z + (α − 1) log z``), so three steps reach
    float precision from ``q = 4ε`` down to ``Φ(−6)`` and beyond. Where ``q ≥ 4ε`` the
    steps leave the converged value unchanged.
    """
    dtype = e.dtype
    floor = 4 * jnp.finfo(dtype).eps
    log_q = jsp.log_ndtr(-e)
    z = _igammacinv(alpha, jnp.maximum(jnp.exp(log_q), floor))
    deep = log_q < jnp.log(floor)
    log_gamma_alpha = jsp.gammaln(alpha)
    for _ in range(3):
        z_safe = jnp.where(deep, z, jnp.ones_like(z))
        log_tail = jnp.log(jsp.gammaincc(alpha, z_safe))
        log_pdf = (alpha - 1) * jnp.log(z_safe) - z_safe - log_gamma_alpha
        step = (log_tail - log_q) * jnp.exp(log_tail - log_pdf)
        z = jnp.where(deep, jnp.maximum(z_safe + step, 0.5 * z_safe), z)
    return z


def _igamma_inverse(alpha: Array, e: Array) -> Array:
    """``P⁻¹(α, Φ(e))`` for ``e ≤ 0``: `tfp.math.igammainv`, precise for small ``p``."""
    return _igammainv(alpha, jsp.ndtr(e))


def _standard_gamma_quantile(alpha: Array, e: Array) -> Array:
    """``z = P⁻¹(α, Φ(e))``: the lower side at ``Φ(e)``, the upper side at ``Φ(−e)``."""
    low, high = _tail_noise(e)
    return jnp.where(e < 0, _igamma_inverse(alpha, low), _igammac_inverse(alpha, high))


def _standard_gamma_upper_quantile(alpha: Array, e: Array) -> Array:
    """``z = Q⁻¹(α, Φ(e))``: the point whose upper tail mass is ``Φ(e)``."""
    low, high = _tail_noise(e)
    return jnp.where(e < 0, _igammac_inverse(alpha, -low), _igamma_inverse(alpha, -high))


def _gamma_noise(alpha: Array, rate: Array):
    """``x -> Φ⁻¹(P(α, βx))`` from ``log P`` and ``log Q`` (TFP's Gamma survival function
    is ``1 − P``, imprecise in the upper tail)."""
    return noise_from_log_cdf(lambda x: jnp.log(jsp.gammainc(alpha, rate * x)),
                              lambda x: jnp.log(jsp.gammaincc(alpha, rate * x)))


@register_transform(tfd.Gamma)
def gamma_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Gamma`: ``x = P⁻¹(α, Φ(e)) / β``.

    ``P⁻¹`` is `tfp.math.igammainv` at ``Φ(e)`` on the lower side and `tfp.math.igammacinv`
    at ``Φ(−e)`` on the upper side.

    Args:
      dist: a `tfd.Gamma(concentration=α, rate=β)` (or `log_rate=log β`).

    Returns:
      A `MonotoneTransform` (support bijector: the family's, a softplus).

    Example:
      >>> from emf_jax.transforms.base import support_forward
      >>> dist = tfd.Gamma(2., 3.)
      >>> t = gamma_transform(dist)
      >>> x = support_forward(t, t.forward(jnp.array([-6., 0., 6.])))
      >>> [round(float(p), 4) for p in dist.cdf(x)]          # Φ(−6), ½, Φ(6)
      [0.0, 0.5, 1.0]
      >>> round(float(t.inverse(t.forward(jnp.array(6.)))), 3)  # TFP's 1 − F rounds to 0 here
      6.0
    """
    alpha, rate = _broadcast(dist, dist.concentration, _gamma_rate(dist))
    return _gamma_like(dist, alpha, rate)


def _gamma_rate(dist: Any) -> Array:
    # A Gamma is parameterised by `rate` or by `log_rate`.
    return dist.rate if dist.rate is not None else jnp.exp(dist.log_rate)


def _gamma_like(dist: Any, alpha: Array, rate: Array) -> MonotoneTransform:
    return monotone_from_maps(
        dist, lambda e: _standard_gamma_quantile(alpha, e) / rate, _gamma_noise(alpha, rate)
    )._replace(noise_limit=GAMMA_NOISE_LIMIT)


@register_transform(tfd.Chi2)
def chi2_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Chi2`: the Gamma map with ``α = k/2``, ``β = ½``.

    Args:
      dist: a `tfd.Chi2(df=k)`.

    Returns:
      :func:`gamma_transform`'s `MonotoneTransform` at those parameters (with its noise limit).

    Example:
      >>> from emf_jax.transforms.base import support_forward
      >>> t = chi2_transform(tfd.Chi2(2.))       # an Exponential(½)
      >>> round(float(support_forward(t, t.forward(jnp.zeros(())))), 4)   # 2 log 2
      1.3863
    """
    (df,) = _broadcast(dist, dist.df)
    return _gamma_like(dist, 0.5 * df, jnp.full_like(df, 0.5))


@register_transform(tfd.Chi)
def chi_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Chi`: ``x = √(2·P⁻¹(k/2, Φ(e)))``.

    Args:
      dist: a `tfd.Chi(df=k)`.

    Returns:
      A `MonotoneTransform` whose noise is the Gamma noise of ``x²`` (support bijector: the
      family's softplus).

    Example:
      >>> from emf_jax.transforms.base import support_forward
      >>> dist = tfd.Chi(3.)
      >>> t = chi_transform(dist)
      >>> round(float(dist.cdf(support_forward(t, t.forward(jnp.ones(()))))), 4)   # Φ(1)
      0.8413
    """
    (df,) = _broadcast(dist, dist.df)
    half_df = 0.5 * df
    gamma_noise = _gamma_noise(half_df, jnp.full_like(half_df, 0.5))
    return monotone_from_maps(
        dist, lambda e: jnp.sqrt(2 * _standard_gamma_quantile(half_df, e)),
        lambda x: gamma_noise(jnp.square(x)))._replace(noise_limit=GAMMA_NOISE_LIMIT)


@register_transform(tfd.InverseGamma)
def inverse_gamma_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.InverseGamma`: ``x = β / Q⁻¹(α, Φ(e))``.

    ``X = β/Z`` with ``Z ~ Gamma(α, 1)``, so ``F(x) = Q(α, β/x)`` and the quantile is
    ``β / Q⁻¹(α, Φ(e))`` (`igammacinv` at ``Φ(e)`` on the lower side, `igammainv` at
    ``Φ(−e)`` on the upper side).

    The unconstrained space is that of a softplus, ``x = softplus(u)``, which is increasing
    (the family's default bijector, a reciprocal of a softplus, is decreasing: the gate's
    blend ``λ·f(e) + (1 − λ)·e`` needs an increasing ``f``).

    Args:
      dist: a `tfd.InverseGamma(concentration=α, scale=β)`.

    Returns:
      A `MonotoneTransform` with a `tfb.Softplus` support bijector.

    Example:
      >>> from emf_jax.transforms.base import support_forward
      >>> dist = tfd.InverseGamma(3., 2.)
      >>> t = inverse_gamma_transform(dist)
      >>> x = support_forward(t, t.forward(jnp.array([-1., 1.])))
      >>> [round(float(p), 4) for p in dist.cdf(x)]            # Φ(−1), Φ(1)
      [0.1587, 0.8413]
    """
    alpha, scale = _broadcast(dist, dist.concentration, dist.scale)
    return monotone_from_maps(
        dist, lambda e: scale / _standard_gamma_upper_quantile(alpha, e),
        noise_from_log_cdf(lambda x: jnp.log(jsp.gammaincc(alpha, scale / x)),
                           lambda x: jnp.log(jsp.gammainc(alpha, scale / x))),
        support_bijector=tfb.Softplus())._replace(noise_limit=GAMMA_NOISE_LIMIT)


@register_transform(tfd.Beta)
def beta_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.Beta`: ``u = logit I⁻¹(a, b, Φ(e))``, then ``x = sigmoid(u)``.

    On the upper side ``1 − x = I⁻¹(b, a, Φ(−e))`` (the symmetry ``I_x(a, b) =
    1 − I_{1−x}(b, a)``), so one `tfp.math.betaincinv` call with the arguments swapped per
    element serves both sides, and ``u = ±(log y − log(1 − y))`` keeps values near 1 exact.
    The log-derivative uses the density of ``u``,
    ``log p_U(u) = a·log σ(u) + b·log σ(−u) − log B(a, b)``, which needs no ``1 − x``.

    Args:
      dist: a `tfd.Beta(concentration1=a, concentration0=b)`.

    Returns:
      A `MonotoneTransform` (support bijector: the family's, a sigmoid).

    Example:
      >>> dist = tfd.Beta(2., 3.)
      >>> t = beta_transform(dist)
      >>> u = t.forward(jnp.array([-1., 1., 6.]))
      >>> [round(float(p), 4) for p in dist.cdf(t.support_bijector.forward(u[:2]))]
      [0.1587, 0.8413]
      >>> round(float(t.inverse(u[2])), 3)            # x = 1 − 4e−4: the upper tail kept
      6.0
    """
    a, b = _broadcast(dist, dist.concentration1, dist.concentration0)
    support = dist.experimental_default_event_space_bijector()
    log_beta = tfp.math.lbeta(a, b)

    def forward(e):
        low, high = _tail_noise(e)
        below = e < 0
        # At exactly ½ (e = 0) TFP's betaincinv stops on its initial bracket and returns its
        # first guess for a, b < 1 (an error of up to 0.4 in e, measured): nudged below.
        p = jnp.minimum(jsp.ndtr(jnp.where(below, low, -high)), 0.5 - jnp.finfo(e.dtype).eps)
        y = _betaincinv(jnp.where(below, a, b), jnp.where(below, b, a), p)
        logit = jnp.log(y) - jnp.log1p(-y)
        return jnp.where(below, logit, -logit)

    def log_density_u(u):
        return a * jax.nn.log_sigmoid(u) + b * jax.nn.log_sigmoid(-u) - log_beta

    def inverse(u):
        # x = σ(u) and 1 − x = σ(−u) are both exact: each tail from its own side.
        return normal_quantile_from_log_cdf(
            jnp.log(tfp.math.betainc(a, b, jax.nn.sigmoid(u))),
            jnp.log(tfp.math.betainc(b, a, jax.nn.sigmoid(-u))))

    def forward_log_derivative(e, u):
        return normal_log_pdf(e) - log_density_u(u)

    return MonotoneTransform(forward, inverse, forward_log_derivative, support)


@register_transform(tfd.StudentT)
def student_t_transform(dist: Any) -> MonotoneTransform:
    """The map of `tfd.StudentT`: ``x = μ + σ·sign(e)·|t|``, ``|t|`` from `betaincinv`.

    With ``p = Φ(−|e|)`` the one-sided tail mass, ``t² = ν(1 − y)/y`` for
    ``y = I⁻¹(ν/2, ½, 2p)`` in the tails (``|e| > 0.6745``, where ``2p < ½``) and
    ``t² = ν·y/(1 − y)`` for ``y = I⁻¹(½, ν/2, 1 − 2p)`` near the centre, where
    ``1 − 2p = erf(|e|/√2)`` is formed without cancellation; one `betaincinv` call serves
    both, with its arguments chosen per element.

    Args:
      dist: a `tfd.StudentT(df=ν, loc=μ, scale=σ)`.

    Returns:
      A `MonotoneTransform` on the real line (no support bijector: ``u`` is ``x``).

    Example:
      >>> dist = tfd.StudentT(4., 1., 2.)
      >>> x = student_t_transform(dist).forward(jnp.array([-1., 0.3, 6.]))
      >>> [round(float(p), 4) for p in dist.cdf(x[:2])]                 # Φ(−1), Φ(0.3)
      [0.1587, 0.6179]
      >>> t = student_t_transform(dist)
      >>> round(float(t.inverse(x[2])), 3)         # the tail kept: TFP's 1 − F rounds to 0
      6.0
    """
    df, loc, scale = _broadcast(dist, dist.df, dist.loc, dist.scale)
    half_df = 0.5 * df
    half = jnp.asarray(0.5, dist.dtype)

    def forward(e):
        magnitude = jnp.abs(e)
        tail = magnitude > 0.6744897501960817          # Φ⁻¹(¾): 2p = ½ there
        two_p = 2 * jsp.ndtr(-magnitude)
        # Kept below ½, where TFP's betaincinv would stop on its initial bracket (see Beta).
        centre = jnp.minimum(jsp.erf(magnitude / jnp.sqrt(2.0).astype(e.dtype)),
                             0.5 - jnp.finfo(e.dtype).eps)
        y = _betaincinv(jnp.where(tail, half_df, half), jnp.where(tail, half, half_df),
                                jnp.where(tail, two_p, centre))
        # Floors keep both sides of the `where` finite (and their gradients too, at e = 0).
        tiny = jnp.finfo(e.dtype).tiny
        ratio = jnp.where(tail, (1 - y) / jnp.maximum(y, tiny), y / jnp.maximum(1 - y, tiny))
        t = jnp.sign(e) * jnp.sqrt(jnp.maximum(df * ratio, tiny))
        return loc + scale * t

    def log_tail(x):
        # ½·I_{ν/(ν+t²)}(ν/2, ½), the mass beyond |t|: TFP's survival function is 1 − F.
        t = (x - loc) / scale
        return jnp.log(0.5 * tfp.math.betainc(half_df, half, df / (df + jnp.square(t))))

    def noise(x):
        tail = -_lower_quantile(log_tail(x))
        return jnp.where(x < loc, -tail, tail)

    return monotone_from_maps(dist, forward, noise)

