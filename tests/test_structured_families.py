"""The structured families (simplex, correlation and covariance matrices) and the Gaussian
processes through the shared property suite, plus family-specific statistics.

A structured family's value has more coordinates than noise dimensions (a simplex in ℝ^K, a
``d × d`` matrix), so the layer is checked in its two halves:

- the gated map ``e → u`` (``parts="map"``) is square: `check_bijection` (round trip, log-det
  against the slogdet of `jax.jacfwd`, inverse log-det), with random gates;
- the support bijector ``u → x``: `check_support_bijection` (round trip, log-det against the
  Jacobian onto the free coordinates in which the family's `log_prob` is a density);

and whole: the gated layer round-trips ``e → x → e``, and the ungated push-forward density
``log N(e) − log|det J|`` equals ``model.log_prob(x)`` sample by sample. Everything runs under
`jax.jit`, in float32 and float64.

Statistical tests use fixed seeds. Two-sample Kolmogorov–Smirnov tests at α = 1e-3 per
coordinate reject when ``D > c(α)·sqrt((n + m)/(n·m))``, c = 1.949 (one-sample:
``c(α)/sqrt(n)``). Moments are compared with a tolerance of 5 standard errors (two-sided
p ≈ 6e-7 per moment), the standard error estimated from the same samples.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from tensorflow_probability.substrates import jax as tfp

import emf_jax
from emf_jax.transforms import transform_for
from tests import structured_models as sm
from tests.bijector_checks import check_bijection, check_support_bijection

tfd = tfp.distributions
psd = tfp.math.psd_kernels
NAMES = sorted(sm.STRUCTURED_FAMILIES)
# The default run covers every row in float32 and every family in float64; the rows that only
# add an output variant (Cholesky outputs) run in float64 under `-m slow` (compile time).
FLOAT64_DEFAULT = ("Dirichlet", "LKJ", "CholeskyLKJ", "WishartTriL", "WishartLinearOperator")


def _grid(float64_default=FLOAT64_DEFAULT):
    for name in NAMES:
        yield pytest.param(name, jnp.float32, id=f"float32-{name}")
        marks = () if name in float64_default else (pytest.mark.slow,)
        yield pytest.param(name, jnp.float64, id=f"float64-{name}", marks=marks)


GRID = list(_grid())
KS_C = 1.949      # c(α) of the Kolmogorov–Smirnov test at α = 1e-3
Z = 5.0           # standard errors allowed for a moment


@pytest.fixture
def dtype(request):
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", request.param == jnp.float64)
    try:
        yield request.param
    finally:
        jax.config.update("jax_enable_x64", previous)


def _layer(model, *, gated, seed=0):
    init_fn, build_fn = emf_jax.build_structured_layer_stateless(model, gated=gated)
    params = init_fn(jax.random.key(seed))
    if gated:
        # Random gates across (0, 1), not just the near-identity initialisation.
        keys = jax.random.split(jax.random.key(seed + 100), len(params["gates"]))
        params["gates"] = {name: 2.0 * jax.random.normal(k, (), w.dtype)
                           for k, (name, w) in zip(keys, sorted(params["gates"].items()))}
    return build_fn, params


def _noise(layer, seed, sample_shape=()):
    return layer.noise_distribution().sample(sample_shape, seed=jax.random.key(seed))


@pytest.mark.parametrize("name,dtype", GRID, indirect=["dtype"])
def test_gated_map_round_trip_and_log_det(name, dtype):
    model = sm.family_model(name, dtype)
    build_fn, params = _layer(model, gated=True)
    layer = build_fn(params, parts="map")
    check_bijection(layer.forward, layer.inverse, layer.forward_log_det_jacobian,
                    _noise(layer, 1), inverse_log_det=layer.inverse_log_det_jacobian,
                    extra_inputs=[_noise(layer, 2)])


@pytest.mark.parametrize("name,dtype", list(_grid(NAMES)), indirect=["dtype"])
def test_support_bijector_round_trip_and_log_det(name, dtype):
    make, free = sm.STRUCTURED_FAMILIES[name]
    dist = make(jnp.asarray(0.3, dtype), dtype)
    support = transform_for(dist).support_bijector
    shape = tuple(support.inverse_event_shape(dist.event_shape))
    for seed in (0, 1):
        u = 1.5 * jax.random.normal(jax.random.key(seed), shape, dtype)
        check_support_bijection(support, u, free)


@pytest.mark.parametrize("name,dtype", GRID, indirect=["dtype"])
def test_whole_layer_gated_round_trip_and_ungated_density(name, dtype):
    model = sm.family_model(name, dtype)
    build_fn, params = _layer(model, gated=True)
    ungated_build, ungated_params = _layer(model, gated=False)
    tol = 1e-4 if dtype == jnp.float32 else 1e-9

    @jax.jit
    def run(e):
        layer = build_fn(params)
        x = layer.forward(e)
        values, log_det = ungated_build(ungated_params).forward_and_log_det(e)
        pushed = ungated_build(ungated_params).noise_distribution().log_prob(e) - log_det
        return layer.inverse(x), x, pushed, model.log_prob(values)

    e = _noise(build_fn(params), 3, (16,))
    e_back, x, pushed, prior = run(e)
    for a, b in zip(jax.tree.leaves(e_back), jax.tree.leaves(e)):
        np.testing.assert_allclose(a, b, atol=tol * max(1.0, float(jnp.max(jnp.abs(b)))))
    for leaf in jax.tree.leaves(x):
        assert leaf.dtype == dtype and bool(jnp.all(jnp.isfinite(leaf)))
    np.testing.assert_allclose(pushed, prior, rtol=10 * tol, atol=100 * tol)


@pytest.mark.parametrize("name", NAMES)
def test_ungated_push_forward_matches_prior_samples(name):
    """Two-sample KS tests on every free coordinate of the child, and on the parent."""
    model = sm.family_model(name, jnp.float32)
    free = sm.STRUCTURED_FAMILIES[name][1]
    build_fn, params = _layer(model, gated=False)
    n = 2000
    pushed = jax.jit(lambda e: build_fn(params).forward(e))(_noise(build_fn(params), 11, (n,)))
    prior = model.sample(n, seed=jax.random.key(12))
    critical = KS_C * np.sqrt(2.0 / n)
    for a, b in ((pushed.parent[:, None], prior.parent[:, None]),
                 (free(pushed.child), free(prior.child))):
        a, b = np.asarray(a).reshape(n, -1), np.asarray(b).reshape(n, -1)
        for j in range(a.shape[1]):
            statistic = scipy.stats.ks_2samp(a[:, j], b[:, j]).statistic
            assert statistic < critical, (j, statistic, critical)


def _push_forward(dist, n, seed=0):
    """n draws of the ungated map of `dist` alone (a one-variable model), jitted."""
    model = tfd.JointDistributionSequentialAutoBatched([dist])
    build_fn, params = _layer(model, gated=False)
    return jax.jit(lambda e: build_fn(params).forward(e))(
        _noise(build_fn(params), seed, (n,)))[0]


def _assert_mean(samples, expected, what):
    """Sample mean within Z standard errors (estimated from the samples) of `expected`."""
    samples = np.asarray(samples, np.float64)
    se = samples.std(0) / np.sqrt(samples.shape[0])
    np.testing.assert_array_less(np.abs(samples.mean(0) - expected), Z * se + 1e-7, what)


def test_dirichlet_sums_to_one_with_beta_marginals():
    alpha = np.array([1.5, 2.0, 3.0, 0.8])
    x = np.asarray(_push_forward(tfd.Dirichlet(jnp.asarray(alpha, jnp.float32)), 4000),
                   np.float64)
    np.testing.assert_allclose(x.sum(-1), 1.0, atol=1e-5)
    assert np.all(x > 0)
    total = alpha.sum()
    mean = alpha / total
    _assert_mean(x, mean, "marginal means")
    # Variance α_k(α₀ − α_k)/(α₀²(α₀ + 1)): the mean of (x − m)², with its standard error.
    variance = alpha * (total - alpha) / (total ** 2 * (total + 1))
    _assert_mean((x - mean) ** 2, variance, "marginal variances")
    # Each marginal is Beta(α_k, α₀ − α_k): one-sample KS against the exact CDF.
    for k, a in enumerate(alpha):
        statistic = scipy.stats.kstest(x[:, k], scipy.stats.beta(a, total - a).cdf).statistic
        assert statistic < KS_C / np.sqrt(x.shape[0]), (k, statistic)


@pytest.mark.parametrize("family", ["LKJ", "LKJCholeskyOutput", "CholeskyLKJ"])
def test_lkj_unit_diagonal_positive_definite_and_beta_off_diagonal(family):
    d, eta = 4, 1.7
    if family == "CholeskyLKJ":
        dist = tfd.CholeskyLKJ(d, jnp.float32(eta))
    else:
        dist = tfd.LKJ(d, jnp.float32(eta), input_output_cholesky=family != "LKJ")
    x = np.asarray(_push_forward(dist, 4000), np.float64)
    if family == "LKJ":
        r = x
    else:
        np.testing.assert_allclose(np.triu(x, 1), 0.0)
        assert np.all(np.diagonal(x, axis1=-2, axis2=-1) > 0)
        r = x @ np.swapaxes(x, -1, -2)
    np.testing.assert_allclose(np.diagonal(r, axis1=-2, axis2=-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(r, np.swapaxes(r, -1, -2), atol=1e-6)
    assert np.all(np.linalg.eigvalsh(r) > 0)
    # Every off-diagonal entry of an LKJ(η) matrix is Beta(η − 1 + d/2, same) on (−1, 1).
    b = eta - 1 + d / 2
    marginal = scipy.stats.beta(b, b, loc=-1, scale=2)
    for i, j in zip(*np.tril_indices(d, -1)):
        statistic = scipy.stats.kstest(r[:, i, j], marginal.cdf).statistic
        assert statistic < KS_C / np.sqrt(r.shape[0]), ((i, j), statistic)


@pytest.mark.parametrize("cholesky", [False, True])
def test_wishart_positive_definite_with_mean_df_sigma(cholesky):
    df = 5.0
    scale_tril = np.array(sm._SCALE_TRIL)
    dist = tfd.WishartTriL(jnp.float32(df), jnp.asarray(scale_tril, jnp.float32),
                           input_output_cholesky=cholesky)
    x = np.asarray(_push_forward(dist, 4000), np.float64)
    w = x @ np.swapaxes(x, -1, -2) if cholesky else x
    assert np.all(np.linalg.eigvalsh(w) > 0)
    sigma = scale_tril @ scale_tril.T
    _assert_mean(w.reshape(len(w), -1), (df * sigma).ravel(), "Wishart mean df·Σ")
    # Bartlett: W_11 / Σ_11 ~ Chi2(df).
    statistic = scipy.stats.kstest(w[:, 0, 0] / sigma[0, 0], scipy.stats.chi2(df).cdf).statistic
    assert statistic < KS_C / np.sqrt(len(w))


def _assert_gaussian_moments(samples, mean, covariance):
    """Mean within Z standard errors; each covariance entry within Z standard errors.

    For Gaussian values the sample covariance entry (i, j) has variance
    (Σ_ii Σ_jj + Σ_ij²)/n.
    """
    samples = np.asarray(samples, np.float64)
    n = samples.shape[0]
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean),
                                 Z * np.sqrt(np.diag(covariance) / n))
    diag = np.diag(covariance)
    se = np.sqrt((np.outer(diag, diag) + covariance ** 2) / n)
    np.testing.assert_array_less(np.abs(np.cov(samples.T) - covariance), Z * se)


def test_gaussian_process_mean_and_covariance_include_noise_and_jitter():
    index_points = np.linspace(0.0, 1.0, 5)[:, None].astype(np.float32)
    jitter = 0.05        # large, so that a missing jitter would fail the covariance check
    gp = tfd.GaussianProcess(psd.ExponentiatedQuadratic(np.float32(1.3), np.float32(0.4)),
                             index_points=index_points, observation_noise_variance=0.1,
                             jitter=jitter, mean_fn=lambda x: jnp.sin(3.0 * x[..., 0]))
    f = _push_forward(gp, 8000)
    covariance = np.asarray(gp.covariance(), np.float64) + jitter * np.eye(5)
    _assert_gaussian_moments(f, np.asarray(gp.mean(), np.float64), covariance)
    # The map's matrix is exactly TFP's Cholesky factor of K + (σ² + jitter)·I.
    scale = np.asarray(transform_for(gp).scale_matrix, np.float64)
    np.testing.assert_allclose(scale @ scale.T, covariance, rtol=1e-5, atol=1e-5)


def test_gaussian_process_regression_model_mean_and_covariance():
    gprm = sm.FAMILIES["GaussianProcessRegressionModel"](jnp.float32(0.3), jnp.float32)
    f = _push_forward(gprm, 8000)
    covariance = np.asarray(gprm.covariance(), np.float64) + 1e-5 * np.eye(3)
    _assert_gaussian_moments(f, np.asarray(gprm.mean(), np.float64), covariance)


def test_gp_with_kernel_parameter_parents_matches_prior_moments():
    """amplitude, length scale ~ LogNormal; f ~ GP: the pushed values' moments match prior
    samples' (two-sample: the difference of means within Z·sqrt(var_a/n + var_b/n))."""
    model = sm.gp_kernel_parents(jnp.float32)
    build_fn, params = _layer(model, gated=False)
    n = 4000
    pushed = jax.jit(lambda e: build_fn(params).forward(e))(_noise(build_fn(params), 5, (n,)))
    prior = model.sample(n, seed=jax.random.key(6))
    for a, b in zip(jax.tree.leaves(pushed), jax.tree.leaves(prior)):
        a = np.asarray(a, np.float64).reshape(n, -1)
        b = np.asarray(b, np.float64).reshape(n, -1)
        se = np.sqrt((a.var(0) + b.var(0)) / n)
        np.testing.assert_array_less(np.abs(a.mean(0) - b.mean(0)), Z * se)
        # Second moments: the same two-sample bound on the products x_i x_j.
        pa = (a[:, :, None] * a[:, None, :]).reshape(n, -1)
        pb = (b[:, :, None] * b[:, None, :]).reshape(n, -1)
        se = np.sqrt((pa.var(0) + pb.var(0)) / n)
        np.testing.assert_array_less(np.abs(pa.mean(0) - pb.mean(0)), Z * se)


def test_mvn_precision_factor_covariance_is_the_inverse_precision():
    dist = sm.FAMILIES["MultivariateNormalPrecisionFactorLinearOperator"](
        jnp.float32(0.0), jnp.float32)
    x = _push_forward(dist, 8000)
    factor = np.asarray(dist.precision_factor.to_dense(), np.float64)
    _assert_gaussian_moments(x, np.asarray(dist.loc, np.float64),
                             np.linalg.inv(factor @ factor.T))
