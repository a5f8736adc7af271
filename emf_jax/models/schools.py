"""Eight Schools, non-centred, with inference_gym's priors.

::

    avg_effect          ~ Normal(0, 10)
    log_stddev          ~ Normal(5, 1)
    school_effects_std  ~ Normal(0, 1)^8
    obs                 ~ Normal(avg_effect + exp(log_stddev) * school_effects_std,
                                 treatment_stddevs)

with the SAT-coaching data of Rubin (1981). inference_gym's ``EightSchools`` is the centred
form (``school_effects = avg_effect + exp(log_stddev) * school_effects_std``); the two joint
densities differ by the Jacobian ``8 * log_stddev``.

Given ``log_stddev`` the model is linear-Gaussian in ``(avg_effect, school_effects_std)``, so
its evidence and posterior moments follow exactly from a one-dimensional quadrature over
``log_stddev`` (:func:`eight_schools_exact_posterior`).
"""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from scipy import special
from tensorflow_probability.substrates import jax as tfp

from emf_jax.models import _common, gaussian

tfd = tfp.distributions

__all__ = [
    "EIGHT_SCHOOLS_LATENT_NAMES",
    "TREATMENT_EFFECTS",
    "TREATMENT_STDDEVS",
    "eight_schools",
    "eight_schools_exact_posterior",
]

TREATMENT_EFFECTS = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
"""Estimated treatment effects of the eight schools (Rubin, 1981)."""

TREATMENT_STDDEVS = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)
"""Standard errors of the treatment effects (Rubin, 1981)."""

EIGHT_SCHOOLS_LATENT_NAMES = ("avg_effect", "log_stddev", "school_effects_std")
"""Latent variables of :func:`eight_schools` in program order."""


def _check_stddevs(treatment_stddevs: Sequence[float]) -> np.ndarray:
    stddevs = np.asarray(treatment_stddevs, dtype=np.float64)
    if stddevs.ndim != 1 or stddevs.size == 0:
        raise ValueError(
            f"treatment_stddevs must be a non-empty vector, got shape {stddevs.shape}.")
    if not np.all(np.isfinite(stddevs)) or np.any(stddevs <= 0):
        raise ValueError("treatment_stddevs must be finite and positive.")
    return stddevs


def eight_schools(
    *,
    treatment_stddevs: Sequence[float] = TREATMENT_STDDEVS,
    avg_effect_scale: float = 10.0,
    log_stddev_loc: float = 5.0,
    log_stddev_scale: float = 1.0,
    dtype: _common.DTypeLike | None = None,
) -> tfd.JointDistributionCoroutineAutoBatched:
    """The non-centred Eight Schools model.

    Args:
      treatment_stddevs: the known standard errors, one per school (the number of schools).
      avg_effect_scale: prior scale of ``avg_effect`` (mean 0).
      log_stddev_loc: prior mean of ``log_stddev``.
      log_stddev_scale: prior scale of ``log_stddev``.
      dtype: floating dtype; None for JAX's default float.

    Returns:
      A ``tfd.JointDistributionCoroutineAutoBatched`` over ``avg_effect``, ``log_stddev``,
      ``school_effects_std`` (shape ``[J]``) and ``obs`` (shape ``[J]``).

    Example:
      >>> model = eight_schools()
      >>> [str(s) for s in model.event_shape]
      ['()', '()', '(8,)', '(8,)']
    """
    dtype = _common.resolve_dtype(dtype)
    stddevs = jnp.asarray(_check_stddevs(treatment_stddevs), dtype)
    num_schools = stddevs.shape[0]
    avg_scale = jnp.asarray(_common.check_positive(avg_effect_scale, "avg_effect_scale"), dtype)
    lt_loc = jnp.asarray(_common.check_real(log_stddev_loc, "log_stddev_loc"), dtype)
    lt_scale = jnp.asarray(_common.check_positive(log_stddev_scale, "log_stddev_scale"), dtype)
    zero = jnp.zeros((), dtype)

    def program():
        avg_effect = yield tfd.Normal(loc=zero, scale=avg_scale, name="avg_effect")
        log_stddev = yield tfd.Normal(loc=lt_loc, scale=lt_scale, name="log_stddev")
        effects_std = yield tfd.Independent(
            tfd.Normal(loc=jnp.zeros(num_schools, dtype), scale=jnp.ones(num_schools, dtype)),
            reinterpreted_batch_ndims=1,
            name="school_effects_std",
        )
        effects = (avg_effect[..., None]
                   + jnp.exp(log_stddev)[..., None] * effects_std)
        yield tfd.Independent(
            tfd.Normal(loc=effects, scale=stddevs),
            reinterpreted_batch_ndims=1,
            name=_common.OBSERVED_NAME,
        )

    return tfd.JointDistributionCoroutineAutoBatched(program, name="eight_schools")


def eight_schools_exact_posterior(
    treatment_effects: Sequence[float] = TREATMENT_EFFECTS,
    *,
    treatment_stddevs: Sequence[float] = TREATMENT_STDDEVS,
    avg_effect_scale: float = 10.0,
    log_stddev_loc: float = 5.0,
    log_stddev_scale: float = 1.0,
    num_grid: int = 4001,
    grid_halfwidth: float = 10.0,
) -> _common.ExactPosterior:
    """Evidence and posterior moments of :func:`eight_schools` by quadrature over log_stddev.

    For fixed ``log_stddev`` the model is linear-Gaussian, so ``p(obs | log_stddev)`` and the
    conditional moments of ``(avg_effect, school_effects_std)`` are closed form; a uniform grid
    over ``log_stddev_loc +- grid_halfwidth * log_stddev_scale`` integrates them against the
    prior (the integrand is smooth and decays fast, so the grid sum converges geometrically).

    Args:
      treatment_effects: the observed effects.
      treatment_stddevs: their known standard errors.
      avg_effect_scale, log_stddev_loc, log_stddev_scale: the priors, as in
        :func:`eight_schools`.
      num_grid: number of grid points.
      grid_halfwidth: half-width of the grid in prior standard deviations.

    Returns:
      An :class:`~emf_jax.models.ExactPosterior` (float64).

    Example:
      >>> post = eight_schools_exact_posterior()
      >>> round(post.log_marginal_likelihood, 3)
      -36.131
    """
    stddevs = _check_stddevs(treatment_stddevs)
    y = np.asarray(treatment_effects, dtype=np.float64)
    if y.shape != stddevs.shape:
        raise ValueError(
            f"treatment_effects has shape {y.shape}, treatment_stddevs {stddevs.shape}.")
    num_grid = _common.check_int(num_grid, "num_grid", 3)
    j = stddevs.size
    loc = _common.check_real(log_stddev_loc, "log_stddev_loc")
    scale = _common.check_positive(log_stddev_scale, "log_stddev_scale")
    half = _common.check_positive(grid_halfwidth, "grid_halfwidth")
    grid = np.linspace(loc - half * scale, loc + half * scale, num_grid)
    tau = np.exp(grid)

    # Nodes: avg_effect, school_effects_std (J), obs (J); one network per grid point.
    n = 1 + 2 * j
    b = np.zeros((num_grid, n, n))
    b[:, 1 + j + np.arange(j), 0] = 1.0
    b[:, 1 + j + np.arange(j), 1 + np.arange(j)] = tau[:, None]
    scales = np.concatenate(
        [[_common.check_positive(avg_effect_scale, "avg_effect_scale")], np.ones(j), stddevs])
    mean, cov = gaussian.gaussian_network_moments(
        b, np.zeros((num_grid, n)), np.broadcast_to(scales, (num_grid, n)))
    log_ev, cond_mean, cond_cov = gaussian.condition_gaussian(
        mean, cov, np.arange(1 + j, n), y)

    log_prior = -0.5 * ((grid - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)
    log_w = log_ev + log_prior + np.log(grid[1] - grid[0])
    log_marginal = special.logsumexp(log_w)
    probs = np.exp(log_w - log_marginal)

    # Mixture moments of (avg_effect, log_stddev, school_effects_std).
    cond_mean_full = np.concatenate([cond_mean[:, :1], grid[:, None], cond_mean[:, 1:]], axis=1)
    cond_cov_full = np.zeros((num_grid, 2 + j, 2 + j))
    keep = np.array([0] + list(range(2, 2 + j)))
    cond_cov_full[:, keep[:, None], keep[None, :]] = cond_cov
    post_mean = probs @ cond_mean_full
    second = np.einsum(
        "k,kij->ij", probs,
        cond_cov_full + cond_mean_full[:, :, None] * cond_mean_full[:, None, :])
    post_cov = second - np.outer(post_mean, post_mean)
    post_cov = 0.5 * (post_cov + post_cov.T)
    return _common.make_exact_posterior(
        log_marginal, post_mean, post_cov, EIGHT_SCHOOLS_LATENT_NAMES, [(), (), (j,)])
