"""Robustness on models whose prior draws overflow the likelihood.

The mechanisms (docs/concepts.md, "Robust fitting"): the tempered start
(`emf_jax.initialization`, the affine base stage `emf_jax.flows.affine_flow`), the per-draw
gradient guard of the EMF surrogate's samples, the masked Monte Carlo average of
`VariationalLoss`, gradient clipping and the warnings of `fit_vi`.
"""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorflow_probability.substrates import jax as tfp
from tensorflow_probability.substrates.jax.internal import samplers

import emf_jax
from emf_jax import flows
from emf_jax._numerics import guard_draws
from emf_jax.initialization import (
    finite_fraction_by_temperature,
    gaussian_warm_start,
    select_temperature,
)
from emf_jax.training import VariationalLoss
from tests.bijector_checks import check_bijection

tfd = tfp.distributions
SMALL = dict(hidden_units=(16,))


def overflowing_model():
    """Heavy-tailed priors with an exp link: about 4 % of prior draws overflow the likelihood.

    A Cauchy mean and a HalfCauchy scale of three log-volatilities h, observed through
    Normal(0, exp(h / 2)): a prior draw with |h| beyond about 180 makes exp(h / 2) or the
    observation's squared z-score overflow float32.
    """
    def program():
        mu = yield tfd.Cauchy(0.0, 5.0, name="mu")
        s = yield tfd.HalfCauchy(0.0, 2.0, name="s")
        h = yield tfd.Sample(tfd.Normal(mu, s), 3, name="h")
        yield tfd.Independent(tfd.Normal(0.0, jnp.exp(h / 2.0)), 1, name="y")
    return tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(
        y=jnp.array([0.01, -0.02, 0.015]))


def benign_model():
    def program():
        mu = yield tfd.Normal(0.0, 1.0, name="mu")
        yield tfd.Normal(mu, 0.5, name="y")
    return tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(y=0.8)


def _all_finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


def _elbo(pinned, build_fn, params, num_draws=2000, seed=7):
    """Mean and standard error of the finite ELBO terms, and how many were finite."""
    # Jitted: eagerly, each of the surrogate's TFP ops compiles and dispatches on its own.
    @jax.jit
    def elbo_terms(p):
        x, log_q = build_fn(p).experimental_sample_and_log_prob(
            num_draws, seed=jax.random.key(seed))
        return pinned.unnormalized_log_prob(x) - log_q

    terms = np.asarray(elbo_terms(params), np.float64)
    finite = np.isfinite(terms)
    return terms[finite].mean(), terms[finite].std() / np.sqrt(finite.sum()), finite.sum()


# ------------------------------------------------------------------------------ affine flow


@pytest.mark.parametrize("lower_triangular", [False, True])
@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_affine_flow_is_a_bijection_with_the_right_log_det(lower_triangular, dtype_name,
                                                           request):
    if dtype_name == "float64":
        request.getfixturevalue("x64")
    dtype = jnp.dtype(dtype_name)
    flow = flows.affine_flow(4, lower_triangular=lower_triangular, dtype=dtype)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda p: jnp.asarray(0.4 * rng.standard_normal(p.shape), dtype),
                          flow.init(jax.random.key(0)))
    x = jnp.asarray(rng.standard_normal(4), dtype)
    check_bijection(lambda v: flow.forward_and_log_det(params, v)[0],
                    lambda v: flow.inverse_and_log_det(params, v)[0],
                    lambda v: flow.forward_and_log_det(params, v)[1], x,
                    inverse_log_det=lambda v: flow.inverse_and_log_det(params, v)[1])
    # Leading batch dimensions, and the exact identity at init.
    batch = jnp.asarray(rng.standard_normal((2, 3, 4)), dtype)
    y, log_det = flow.forward_and_log_det(params, batch)
    assert y.shape == (2, 3, 4) and log_det.shape == (2, 3) and y.dtype == dtype
    np.testing.assert_allclose(flow.inverse_and_log_det(params, y)[0], batch,
                               atol=1e-4 if dtype == jnp.float32 else 1e-10)
    y0, log_det0 = flow.forward_and_log_det(flow.init(jax.random.key(0)), batch)
    assert bool(jnp.all(y0 == batch)) and bool(jnp.all(log_det0 == 0))


def test_scale_affine_params_scales_the_matrix_under_jit():
    flow = flows.affine_flow(3, lower_triangular=True)
    params = dict(flow.init(jax.random.key(0)), lower=jnp.ones((3, 3)))
    scaled = jax.jit(flows.scale_affine_params)(params, 0.25)
    x = jnp.array([1.0, -2.0, 3.0])
    np.testing.assert_allclose(flow.forward_and_log_det(scaled, x)[0],
                               0.25 * flow.forward_and_log_det(params, x)[0], rtol=1e-6)
    np.testing.assert_allclose(flow.forward_and_log_det(scaled, x)[1], 3 * np.log(0.25),
                               rtol=1e-6)


# ------------------------------------------------------------------------ tempered start


def test_temperature_is_one_on_a_benign_model_and_below_one_where_the_prior_overflows():
    for pinned, expect_one in ((benign_model(), True), (overflowing_model(), False)):
        init_fn, _ = emf_jax.build_emf_surrogate_posterior_stateless(
            pinned, warm_start_steps=0, **SMALL)
        tau = float(jnp.exp(jax.jit(init_fn)(jax.random.key(0))["base"]["log_scale"][0]))
        assert (tau == 1.0) == expect_one, tau
    # Where the ladder stops: the untempered rung has non-finite draws, the chosen one none.
    pinned = overflowing_model()
    flow = emf_jax.architectures.build_embedded_flow(pinned, **SMALL)
    params = flow.init(jax.random.key(0))
    forward = lambda z: flow.forward_and_log_det(params, z)  # noqa: E731
    ladder = (1.0, 0.5, 0.1)
    # The probe at 2 tau: fractions at (2, 1, 0.2).
    fractions = finite_fraction_by_temperature(
        forward, pinned.unnormalized_log_prob, jax.random.key(3), event_size=flow.event_size,
        ladder=tuple(2 * t for t in ladder), num_draws=200)
    assert float(fractions[0]) < 1.0 and float(fractions[-1]) == 1.0
    tau = jax.jit(lambda key: select_temperature(
        forward, pinned.unnormalized_log_prob, key, event_size=flow.event_size, ladder=ladder,
        num_draws=200, probe_scale=2.0))(jax.random.key(3))
    first_ok = ladder[int(np.argmax(np.asarray(fractions) == 1.0))]
    assert float(tau) == pytest.approx(first_ok) and first_ok < 1.0
    # An unpinned model has no target: the affine stage starts as the identity.
    init_fn, _ = emf_jax.build_emf_surrogate_posterior_stateless(
        tfd.JointDistributionNamed(dict(a=tfd.Cauchy(0.0, 1.0))), **SMALL)
    assert float(init_fn(jax.random.key(0))["base"]["log_scale"][0]) == 0.0


def test_select_temperature_takes_the_last_rung_when_none_qualifies_and_checks_arguments():
    never = lambda x: jnp.full(x.shape[:-1], -jnp.inf)  # noqa: E731
    identity = lambda z: (z, jnp.zeros(z.shape[:-1]))  # noqa: E731
    tau = select_temperature(identity, never, jax.random.key(0), event_size=2,
                             ladder=(1.0, 0.3))
    assert float(tau) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="strictly decreasing"):
        select_temperature(identity, never, 0, event_size=2, ladder=(0.5, 1.0))
    with pytest.raises(ValueError, match="min_finite_fraction"):
        select_temperature(identity, never, 0, event_size=2, min_finite_fraction=0.0)
    with pytest.raises(ValueError, match="initial_temperature"):
        emf_jax.build_emf_surrogate_posterior_stateless(benign_model(), initial_temperature=0)


# --------------------------------------------------------------------- per-draw guard


def test_guard_draws_zeroes_the_cotangent_of_non_finite_draws_only():
    x = {"a": jnp.array([1.0, 200.0, 3.0]), "b": jnp.ones((3, 2))}

    def loss(x):
        x = guard_draws(x, 1)
        # exp(200) overflows: draw 1's gradient is inf in "a" (and 0 * inf = NaN in "b").
        return jnp.sum(jnp.exp(x["a"]) * jnp.sum(x["b"], axis=-1))

    grads = jax.grad(loss)(x)
    assert _all_finite(grads)
    np.testing.assert_allclose(grads["a"], [2 * np.exp(1.0), 0.0, 2 * np.exp(3.0)], rtol=1e-5)
    np.testing.assert_allclose(grads["b"][1], [0.0, 0.0])
    np.testing.assert_allclose(grads["b"][0], [np.exp(1.0)] * 2, rtol=1e-5)


def test_surrogate_gradients_stay_finite_when_a_draw_overflows_the_target():
    """TFP's own loss (no masking): one overflowing draw must not make the gradient NaN."""
    pinned = overflowing_model()
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        pinned, initial_temperature=1.0, initial_gate=0.999, warm_start_steps=0, **SMALL)
    params = init_fn(jax.random.key(0))
    seed = jax.random.key(5)
    num_draws = 64

    def tfp_loss(params):
        return tfp.vi.monte_carlo_variational_loss(
            pinned.unnormalized_log_prob, build_fn(params), sample_size=num_draws, seed=seed)

    def unguarded_loss(params):  # the same draws through the bare flow
        sample_seed, _ = samplers.split_seed(seed, 2)
        flow = build_fn(params).flow
        z = jax.random.normal(sample_seed, (num_draws, flow.event_size))
        x, log_det = flow.forward_and_log_det(params, z)
        log_q = tfd.Normal(0.0, 1.0).log_prob(z).sum(-1) - log_det
        return -jnp.mean(pinned.unnormalized_log_prob(x) - log_q)

    loss, grads = jax.jit(jax.value_and_grad(tfp_loss))(params)
    unguarded, bare_grads = jax.jit(jax.value_and_grad(unguarded_loss))(params)
    assert not np.isfinite(float(loss)) and not np.isfinite(float(unguarded))  # a draw overflows
    assert not _all_finite(bare_grads)  # without the guard: NaN
    assert _all_finite(grads)
    assert any(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))


# ----------------------------------------------------------------------------- masking


def test_masked_loss_is_the_mean_of_the_finite_terms_and_counts_the_rest():
    def target(x):
        return jnp.where(x > 0.5, -jnp.inf, tfd.Normal(1.0, 2.0).log_prob(x))

    build = lambda p: tfd.Normal(p, 1.0)  # noqa: E731
    loss = VariationalLoss(target, build, sample_size=32)
    seed = jax.random.key(3)
    sample_seed, _ = samplers.split_seed(seed, 2)
    x, log_q = build(0.1).experimental_sample_and_log_prob([32], seed=sample_seed)
    terms = target(x) - log_q
    finite = np.isfinite(terms)
    assert 0 < finite.sum() < 32
    value, count = jax.jit(loss.loss_and_count)(0.1, seed)
    np.testing.assert_allclose(value, -np.mean(np.asarray(terms)[finite]), rtol=1e-5)
    assert int(count) == 32 - finite.sum()
    # The gradient is that of the finite mean (finite, and it does not vanish).
    grad = jax.grad(loss)(0.1, seed)
    assert np.isfinite(float(grad)) and float(grad) != 0.0
    # Unmasked, TFP's own mean is -inf; with every draw non-finite the masked loss is NaN.
    unmasked = VariationalLoss(target, build, sample_size=32, mask_nonfinite_draws=False)
    assert float(unmasked(0.1, seed)) == np.inf
    assert np.isnan(float(loss(5.0, seed)))


def test_fit_vi_warns_and_counts_masked_draws_and_stays_finite():
    def target(mu):  # a quarter of the prior-like draws are NaN
        return jnp.where(mu > 0.7, jnp.nan, tfd.Normal(0.0, 1.0).log_prob(mu))

    build = lambda p: tfd.Normal(p["loc"], jax.nn.softplus(p["raw"]))  # noqa: E731
    with pytest.warns(RuntimeWarning, match=r"% of draws \(\d+ of 800\).*non-finite"):
        result = emf_jax.fit_vi(target, build, {"loc": 0.0, "raw": 0.55},
                                optimizer=optax.adam(1e-2), num_steps=50, sample_size=16,
                                seed=0, progress_bar=False)
    assert result.num_nonfinite_draws > 0.02 * 800
    assert result.num_nonfinite == 0 and _all_finite(result.params)
    assert bool(jnp.all(jnp.isfinite(result.losses)))


# ---------------------------------------------------------------------------- clipping


def test_max_grad_norm_clips_the_step_and_is_checked():
    target = tfd.Normal(100.0, 1.0).log_prob  # gradient about 100 at loc 0
    build = lambda p: tfd.Normal(p["loc"], 1.0)  # noqa: E731
    kwargs = dict(optimizer=optax.sgd(1.0), num_steps=1, sample_size=4, seed=0,
                  progress_bar=False)
    clipped = emf_jax.fit_vi(target, build, {"loc": 0.0}, max_grad_norm=0.5, **kwargs)
    free = emf_jax.fit_vi(target, build, {"loc": 0.0}, **kwargs)
    np.testing.assert_allclose(clipped.params["loc"], 0.5, rtol=1e-5)
    assert float(free.params["loc"]) > 50.0
    for bad, error in ((0.0, ValueError), (-1.0, ValueError), ("1", TypeError),
                       (np.inf, ValueError)):
        with pytest.raises(error, match="max_grad_norm"):
            emf_jax.fit_vi(target, build, {"loc": 0.0}, max_grad_norm=bad, **kwargs)


# ------------------------------------------------------------------ end to end, both fitters


def test_overflowing_model_fits_with_both_fitters_above_mean_field():
    pinned = overflowing_model()
    steps, draws, lr = 500, 16, 1e-3
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(pinned, **SMALL)
    mf_init, mf_build = emf_jax.baselines.build_mean_field_surrogate_stateless(pinned)

    def tfp_fit(init, build):
        return jax.jit(lambda key: tfp.vi.fit_surrogate_posterior_stateless(
            pinned.unnormalized_log_prob, build, init(key), optax.adam(lr), num_steps=steps,
            sample_size=draws, seed=key))(jax.random.key(0))[0]

    def vi_fit(init, build):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return emf_jax.fit_vi(pinned.unnormalized_log_prob, build, init(jax.random.key(0)),
                                  optimizer=optax.adam(lr), num_steps=steps,
                                  sample_size=draws, seed=0, progress_bar=False).params

    for fit in (tfp_fit, vi_fit):
        params = fit(init_fn, build_fn)
        assert _all_finite(params)
        elbo, sem, num_finite = _elbo(pinned, build_fn, params)
        mf_elbo, mf_sem, _ = _elbo(pinned, mf_build, fit(mf_init, mf_build))
        assert num_finite >= 0.99 * 2000
        # Above mean field by more than 3 standard errors of the difference.
        assert elbo - mf_elbo > 3 * np.hypot(sem, mf_sem), (fit.__name__, elbo, mf_elbo)


def test_guard_drops_a_draw_and_its_log_density_together():
    """A draw whose value gets a non-finite cotangent (its target overflowed) also loses its
    log-density term's cotangent, and a draw that is itself non-finite drops out whole."""
    def loss(values, log_q):
        values, log_q = guard_draws((values, log_q), 1)
        return jnp.sum(-jnp.exp(50.0 * values[:, 0])) - jnp.sum(log_q)

    values = jnp.array([[0.1], [3.0], [0.2]])      # exp(150) overflows float32: draw 1
    log_q = jnp.array([-1.0, -2.0, -3.0])
    grad_values, grad_log_q = jax.grad(loss, argnums=(0, 1))(values, log_q)
    np.testing.assert_array_equal(grad_log_q, [-1.0, 0.0, -1.0])
    assert float(grad_values[1, 0]) == 0.0 and bool(jnp.all(jnp.isfinite(grad_values)))
    # A non-finite draw (here its log q) is dropped even where its cotangent is finite.
    grad_log_q = jax.grad(lambda lq: -jnp.sum(guard_draws((values * 0.0, lq), 1)[1]))(
        jnp.array([-1.0, -jnp.inf, -3.0]))
    np.testing.assert_array_equal(grad_log_q, [-1.0, 0.0, -1.0])


# ---------------------------------------------------------------------------- warm start


def _location_scale_flow(params, z):
    log_scale = params["log_scale"]
    return (params["shift"] + jnp.exp(log_scale) * z[..., 0],
            jnp.broadcast_to(log_scale, z.shape[:-1]))


def test_warm_start_fits_the_trainable_leaves_and_keeps_the_first_of_equals():
    target = tfd.Normal(3.0, 0.5).log_prob
    options = dict(trainable={"shift": False, "log_scale": True}, event_size=1)
    warm = jax.jit(lambda c: gaussian_warm_start(_location_scale_flow, target, c,
                                                 jax.random.key(0), **options))
    equal = warm({"shift": jnp.array([3.0, 3.0]), "log_scale": jnp.zeros(2)})
    assert int(equal.choice) == 0
    # 200 Adam steps at 1e-2 reach the optimum log 0.5 from 0; the exact fit has ELBO 0.
    np.testing.assert_allclose(equal.params["log_scale"], np.log(0.5), atol=0.05)
    np.testing.assert_allclose(equal.elbos, 0.0, atol=0.01)
    assert equal.num_finite.tolist() == [256, 256]
    # A second candidate better by far more than two standard errors wins; the frozen
    # shift is left where it was.
    apart = warm({"shift": jnp.array([1.0, 3.0]), "log_scale": jnp.zeros(2)})
    assert int(apart.choice) == 1 and float(apart.params["shift"]) == 3.0
    assert float(apart.elbos[0]) < float(apart.elbos[1]) - 1.0


def test_warm_start_never_picks_a_candidate_with_non_finite_draws_and_stays_finite():
    def target(x):  # nothing below 0
        return jnp.where(x > 0.0, tfd.Normal(3.0, 0.5).log_prob(x), -jnp.inf)

    candidates = {"shift": jnp.array([0.0, 3.0]), "log_scale": jnp.zeros(2)}
    start = gaussian_warm_start(_location_scale_flow, target, candidates, jax.random.key(1),
                                trainable={"shift": True, "log_scale": True}, event_size=1,
                                num_steps=50)
    assert int(start.choice) == 1
    assert int(start.num_finite[0]) < 256 and _all_finite(start.params)
    for bad in (dict(num_steps=0), dict(sample_size=0), dict(num_eval_draws=1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            gaussian_warm_start(_location_scale_flow, target, candidates, 0,
                                trainable={"shift": True, "log_scale": True}, event_size=1,
                                **bad)


def test_surrogate_options_are_checked():
    pinned = benign_model()
    for bad, error in ((dict(initial_gate="prior"), ValueError),
                       (dict(warm_start_steps=-1), ValueError),
                       (dict(warm_start_steps=1.5), TypeError),
                       (dict(full_rank_base="yes"), ValueError)):
        with pytest.raises(error, match=next(iter(bad))):
            emf_jax.build_emf_surrogate_posterior_stateless(pinned, **SMALL, **bad)
