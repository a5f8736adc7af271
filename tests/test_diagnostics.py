"""Tests of emf_jax.diagnostics: PSIS k-hat against weights of known tail shape, and plots."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from emf_jax import diagnostics
from emf_jax.diagnostics import psis_khat, psis_tail_length


@jax.jit
def _gpd_log_weights(key, k):
    u = jax.random.uniform(key, k.shape[:1] + (NUM_REPS, NUM_DRAWS))
    k = k[:, None, None]
    safe_k = jnp.where(k == 0.0, 1.0, k)
    pareto = jnp.log(jnp.expm1(-k * jnp.log1p(-u)) / safe_k)
    return jnp.where(k == 0.0, jnp.log(-jnp.log1p(-u)), pareto)


NUM_REPS, NUM_DRAWS = 40, 10_000
SHAPES = (-0.3, 0.0, 0.3, 0.7, 1.2)


def gpd_log_weights(key, k, num=None):
    """log of generalised-Pareto(shape k, scale 1) draws by inversion of the cdf:
    w = ((1 - u)^(-k) - 1) / k, and w = -log(1 - u) (exponential) for k = 0.
    Returns [NUM_REPS, NUM_DRAWS] draws, or the first `num` of the first replicate."""
    draws = _gpd_log_weights(key, jnp.asarray([k], jnp.float32))[0]
    return draws if num is None else draws[0, :num]


def expected_khat(k, tail):
    """The estimator's target: k shrunk by the prior, worth 10 observations at k = 0.5.
    Exceedances of a GPD over a threshold are GPD with the same shape (threshold
    stability), so the fitted tail has shape k whatever its cutoff."""
    return (tail * k + 10 * 0.5) / (tail + 10)


def test_khat_recovers_the_generalised_pareto_shape():
    """Mean of k-hat over R independent samples of S weights, for several shapes k. The
    asymptotic standard deviation of a GPD shape estimate from M tail points is
    (1 + k) / sqrt(M) (the MLE's, which Zhang & Stephens' estimator attains), so the mean of R
    is within 4 (1 + k) / sqrt(M R) of its target unless something is wrong (a 4-sigma band:
    fails by chance < 1e-4 per shape)."""
    tail = psis_tail_length(NUM_DRAWS)
    log_w = _gpd_log_weights(jax.random.key(11), jnp.asarray(SHAPES, jnp.float32))
    khat = np.asarray(jax.jit(jax.vmap(jax.vmap(psis_khat)))(log_w))
    assert np.all(np.isfinite(khat))
    for k, values in zip(SHAPES, khat):
        target = expected_khat(k, tail)
        tol = 4 * (1 + abs(k)) / math.sqrt(tail * NUM_REPS)
        assert abs(values.mean() - target) < tol, (k, values.mean(), tol)
        # Each replicate is within 5 of its own standard deviations.
        assert np.all(np.abs(values - target) < 5 * (1 + abs(k)) / math.sqrt(tail)), k
    # The estimates order the shapes correctly, replicate by replicate.
    assert np.all(np.diff(khat, axis=0)[1:] > 0)


def test_khat_agrees_with_scipy_maximum_likelihood_on_the_same_tail():
    """An independent fit of the same exceedances (scipy's GPD maximum likelihood, location
    fixed at 0): both estimate the same shape from the same M points, and differ by the
    estimators' O(1/M) biases plus the prior's shrinkage, well within 0.5 / sqrt(M)."""
    tail = psis_tail_length(NUM_DRAWS)
    log_w = np.asarray(gpd_log_weights(jax.random.key(3), 0.6, NUM_DRAWS), np.float64)
    ordered = np.sort(log_w)
    exceedances = np.exp(ordered[-tail:]) - np.exp(ordered[-tail - 1])
    shape, _, _ = stats.genpareto.fit(exceedances, floc=0.0)
    shrunk = (tail * shape + 5.0) / (tail + 10)
    assert abs(float(psis_khat(log_w)) - shrunk) < 0.5 / math.sqrt(tail)


def test_khat_is_shift_invariant_and_order_invariant():
    log_w = gpd_log_weights(jax.random.key(5), 0.5, 1000)
    base = float(psis_khat(log_w))
    perm = jax.random.permutation(jax.random.key(6), log_w)
    # float32 rounding of the shifted weights only.
    assert abs(float(psis_khat(perm + 1234.5)) - base) < 1e-3
    assert float(psis_khat(perm)) == pytest.approx(base, abs=1e-6)


def test_khat_of_light_and_no_tails():
    # Equal weights: no tail at all.
    assert float(psis_khat(jnp.zeros(1000))) == -np.inf
    # q = p up to rounding noise: bounded weights, k-hat well below 0.5. Log weights
    # N(0, 1e-3^2) make w ~ 1 + N(0, 1e-6): a Gaussian tail (k = 0, shrunk towards 0.5 by
    # 10 / (M + 10) ~ 0.1 at M = 95) with sd (1 + k) / sqrt(M) ~ 0.1.
    noise = 1e-3 * jax.random.normal(jax.random.key(0), (1000,))
    assert float(psis_khat(noise)) < 0.5
    # Bounded weights (uniform): k = -1.
    bounded = jnp.log(jax.random.uniform(jax.random.key(1), (1000,)))
    assert float(psis_khat(bounded)) < -0.5


def test_khat_edge_values_and_errors():
    log_w = jnp.zeros(1000).at[3].set(jnp.nan)
    assert np.isnan(float(psis_khat(log_w)))
    assert float(psis_khat(jnp.zeros(1000).at[3].set(jnp.inf))) == np.inf
    # Zero weights (-inf log weights) are fine.
    with_zeros = gpd_log_weights(jax.random.key(2), 0.3, 1000).at[:10].set(-jnp.inf)
    assert np.isfinite(float(psis_khat(with_zeros)))
    # A tail spanning more than float32's range: extremely heavy.
    huge = jnp.concatenate([jnp.zeros(900), jnp.linspace(0.0, 400.0, 100)])
    assert float(psis_khat(huge)) > 1.0
    with pytest.raises(ValueError, match="log_weights must be one-dimensional"):
        psis_khat(jnp.zeros((10, 10)))
    with pytest.raises(ValueError, match="log_weights must have >= 25"):
        psis_khat(jnp.zeros(24))
    with pytest.raises(TypeError, match="log_weights must be real"):
        psis_khat(jnp.zeros(30, jnp.complex64))
    with pytest.raises(ValueError, match="num_draws"):
        psis_tail_length(10)
    assert psis_tail_length(25) == 5
    assert psis_tail_length(10_000) == 300


def test_khat_in_float64(x64):
    log_w = gpd_log_weights(jax.random.key(4), 0.9).astype(jnp.float64)[0]
    khat = psis_khat(log_w)
    assert khat.dtype == jnp.float64
    tail = psis_tail_length(NUM_DRAWS)
    assert abs(float(khat) - expected_khat(0.9, tail)) < 4 * 1.9 / math.sqrt(tail)


def test_plots_return_figures():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses = np.concatenate([np.linspace(50.0, 5.0, 200), [np.nan], np.full(99, 5.0)])
    fig = diagnostics.plot_elbo_trace(losses, label="fit", log_evidence=-4.0, skip=0.1,
                                      title="t")
    ax = fig.axes[0]
    assert ax.get_title() == "t"
    raw = ax.lines[0].get_xdata()
    assert raw[0] == 30  # 10 % of 300 steps skipped
    smooth = ax.lines[1].get_ydata()
    assert np.all(np.isfinite(smooth))  # the NaN step is left out of the average
    plt.close(fig)

    fig, axes = plt.subplots(1, 2)
    rng = np.random.default_rng(0)
    samples = {"a": rng.normal(size=(400,)), "b": rng.normal(2.0, 0.5, size=(400, 3))}
    out = diagnostics.plot_marginals(samples, reference=samples, ax=axes[1], title="m")
    assert out is fig
    band = axes[1].collections[-1].get_paths()[0].vertices
    assert band[:, 0].max() == 3  # four coordinates: a, b[0], b[1], b[2]
    median = axes[1].lines[-1].get_ydata()
    np.testing.assert_allclose(median[1:], 2.0, atol=4 * 0.5 * 1.25 / np.sqrt(400))
    with pytest.raises(ValueError, match="reference has 2 coordinates"):
        diagnostics.plot_marginals(samples, reference=rng.normal(size=(10, 2)))
    with pytest.raises(ValueError, match="quantiles"):
        diagnostics.plot_marginals(samples, quantiles=(0.9, 0.1))
    with pytest.raises(ValueError, match="skip"):
        diagnostics.plot_elbo_trace(losses, skip=1.0)
    with pytest.raises(ValueError, match="max_points"):
        diagnostics.plot_elbo_trace(losses, max_points=0)
    # Long traces are thinned.
    fig = diagnostics.plot_elbo_trace(np.arange(5000.0), max_points=100)
    assert len(fig.axes[0].lines[0].get_xdata()) == 100
    with pytest.raises(ValueError, match="one-dimensional"):
        diagnostics.plot_elbo_trace({"x": np.zeros((3, 3))})
    plt.close("all")
