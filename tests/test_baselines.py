"""Tests for emf_jax.baselines (mean field, full rank, ASVI, IAF) and the flat layout they share."""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorflow_probability.substrates import jax as tfp

from emf_jax import baselines
from emf_jax._structure import flat_latent_layout

tfd = tfp.distributions
tfb = tfp.bijectors
Root = tfd.JointDistributionCoroutine.Root

BUILDERS = {
    "mean_field": baselines.build_mean_field_surrogate_stateless,
    "full_rank": baselines.build_full_rank_surrogate_stateless,
    "asvi": baselines.build_asvi_surrogate_stateless,
}


# ----------------------------------------------------------------------------------------------
# Test models.


class Case(NamedTuple):
    """A model to approximate: ``model`` (pinned or not), its target and a support check."""

    model: object
    target: Callable
    in_support: Callable  # latent sample -> boolean array over the sample dims

    def prior_sample(self, sample_shape=(), seed=None):
        if isinstance(self.model, tfd.JointDistribution):
            return self.model.sample(sample_shape, seed=seed)
        return self.model.sample_unpinned(sample_shape, seed=seed)


def _hierarchical() -> Case:
    """mu ~ N(0, 1), tau ~ HalfNormal(1), x ~ N(mu, tau) (3-vector), y ~ N(x, 0.5) pinned."""

    def model_fn():
        mu = yield Root(tfd.Normal(0.0, 1.0, name="mu"))
        tau = yield Root(tfd.HalfNormal(1.0, name="tau"))
        x = yield tfd.Sample(tfd.Normal(mu, tau), 3, name="x")
        yield tfd.Independent(tfd.Normal(x, 0.5), 1, name="y")

    pinned = tfd.JointDistributionCoroutine(model_fn).experimental_pin(
        y=jnp.array([0.3, 1.1, -0.4])
    )
    return Case(pinned, pinned.unnormalized_log_prob, lambda s: s.tau > 0)


def _unpinned() -> Case:
    """All latent, list-structured: a ~ N(0, 1), b ~ N(a, 1) (2-vector)."""
    model = tfd.JointDistributionSequential(
        [tfd.Normal(0.0, 1.0), lambda a: tfd.Sample(tfd.Normal(a, 1.0), 2)]
    )
    return Case(model, model.log_prob, lambda s: jnp.isfinite(s[0]))


def _constrained() -> Case:
    """Positive latents (LogNormal, HalfNormal, Gamma) in an auto-batched model."""

    def model_fn():
        s = yield tfd.LogNormal(0.0, 0.5, name="s")
        h = yield tfd.HalfNormal(1.0, name="h")
        g = yield tfd.Gamma(2.0, 2.0, name="g")
        yield tfd.Sample(tfd.Normal(g, s + h), 2, name="y")

    pinned = tfd.JointDistributionCoroutineAutoBatched(model_fn).experimental_pin(
        y=jnp.array([0.5, 1.5])
    )
    return Case(
        pinned, pinned.unnormalized_log_prob, lambda x: (x.s > 0) & (x.h > 0) & (x.g > 0)
    )


def _vector() -> Case:
    """Vector latents in a dict: z ~ MVN (3), w ~ Dirichlet (3 -> 2 unconstrained), y pinned."""
    chol = jnp.array([[1.0, 0.0, 0.0], [0.5, 1.0, 0.0], [-0.3, 0.2, 0.7]])
    model = tfd.JointDistributionNamed(
        dict(
            z=tfd.MultivariateNormalTriL(jnp.zeros(3), chol),
            w=tfd.Dirichlet(jnp.ones(3)),
            y=lambda z, w: tfd.Independent(tfd.Normal(z * w, 0.5), 1),
        )
    )
    pinned = model.experimental_pin(y=jnp.array([0.2, -0.1, 0.4]))

    def in_support(x):
        w = x["w"]
        return (w > 0).all(-1) & (jnp.abs(w.sum(-1) - 1) < 1e-5)

    return Case(pinned, pinned.unnormalized_log_prob, in_support)


MODELS = {
    "hierarchical": _hierarchical,
    "unpinned": _unpinned,
    "constrained": _constrained,
    "vector": _vector,
}

# XLA's CPU compile time dominates these tests (TFP's fit loop and ASVI's auto-batched joint
# surrogate are large programs); less backend optimisation compiles faster and computes the same.
_jit = functools.partial(
    jax.jit,
    compiler_options=dict(xla_backend_optimization_level=0, xla_llvm_disable_expensive_passes=True),
)

# Every builder on every model. Each pair compiles a program of ~10 s on a shared CI core, so
# the default suite runs three pairs (every builder; constrained, vector and dict-structured
# latents); the rest are marked slow. Unpinned list-structured models are fitted by default in
# test_recovers_correlated_gaussian, an auto-batched model in test_float64_model.
_DEFAULT = {
    ("mean_field", "hierarchical"),
    ("full_rank", "vector"),
    ("asvi", "hierarchical"),
}
GRID = [
    pytest.param(b, m, marks=() if (b, m) in _DEFAULT else pytest.mark.slow, id=f"{b}-{m}")
    for b in BUILDERS
    for m in MODELS
]


def _build(builder: str, model: str):
    case = MODELS[model]()
    init_fn, build_fn = BUILDERS[builder](case.model)
    return case, init_fn, build_fn


def _call(target, x):
    """Calls a joint log-density the way TFP's VI fitting does (lists are spread)."""
    return target(*x) if isinstance(x, (list, tuple)) and not hasattr(x, "_fields") else target(x)


# ----------------------------------------------------------------------------------------------
# Structure, support, densities, fitting: every builder on every model (one compiled program
# per pair).


@pytest.mark.parametrize("builder,model", GRID)
def test_surrogate_samples_densities_and_fit(builder, model):
    case, init_fn, build_fn = _build(builder, model)
    num_steps = 100

    @_jit
    def run(key):
        k_init, k64, k_fit = jax.random.split(key, 3)
        q = build_fn(init_fn(k_init))
        x64, lp = q.experimental_sample_and_log_prob(64, seed=k64)
        params, losses = tfp.vi.fit_surrogate_posterior_stateless(
            case.target,
            build_fn,
            init_fn(k_init),
            optax.adam(0.05),
            num_steps,
            sample_size=8,
            seed=k_fit,
        )
        # The ELBO before and after fitting, on the same 1024 draws of the sampler's noise
        # (common random numbers: the difference is far less noisy than the 8-sample losses).
        k_elbo = jax.random.PRNGKey(7)

        def elbo(p):
            x, lq = build_fn(p).experimental_sample_and_log_prob(1024, seed=k_elbo)
            return jnp.mean(_call(case.target, x) - lq)

        return dict(
            x64=x64,
            lp=lp,
            elbo_before=elbo(init_fn(k_init)),
            elbo_after=elbo(params),
            log_prob=q.log_prob(x64),
            in_support=case.in_support(x64),
            target=_call(case.target, x64),
            params=params,
            losses=losses,
        )

    out = run(jax.random.PRNGKey(0))
    tree = jax.tree_util
    # Structure, type, shapes and dtypes are those of the model's latent sample (checked on
    # abstract values: tracing is enough, and compiling each sample shape costs seconds).
    key = jax.random.PRNGKey(1)
    for sample_shape in [(), (4,)]:
        x = jax.eval_shape(
            lambda shape=sample_shape: build_fn(init_fn(key)).sample(shape, seed=key))
        ref = jax.eval_shape(lambda shape=sample_shape: case.prior_sample(shape, seed=key))
        assert tree.tree_structure(x) == tree.tree_structure(ref)
        assert type(x) is type(ref)
        assert tree.tree_map(lambda a: (a.shape, a.dtype), x) == tree.tree_map(
            lambda a: (a.shape, a.dtype), ref
        )
    assert tree.tree_structure(out["x64"]) == tree.tree_structure(ref)
    # Samples lie in the support: the model's density is finite there.
    assert bool(out["in_support"].all())
    assert bool(jnp.isfinite(out["target"]).all())
    # log_prob agrees with the density returned alongside the samples.
    assert bool(jnp.isfinite(out["lp"]).all())
    np.testing.assert_allclose(out["log_prob"], out["lp"], rtol=1e-4, atol=1e-4)
    # The jitted fit runs, stays finite and raises the ELBO.
    losses = out["losses"]
    assert losses.shape == (num_steps,)
    assert bool(jnp.isfinite(losses).all())
    assert all(bool(jnp.isfinite(p).all()) for p in tree.tree_leaves(out["params"]))
    assert float(out["elbo_after"]) > float(out["elbo_before"])


# ----------------------------------------------------------------------------------------------
# Correctness against exact posteriors.

_Y = jnp.array([0.8, 1.6, 0.2, 1.1, 1.9])
# mu ~ N(0, 1), y_i ~ N(mu, 1): posterior N(sum(y) / (n + 1), 1 / (n + 1)).
_POST_MEAN = float(_Y.sum()) / (len(_Y) + 1)
_POST_SD = math.sqrt(1.0 / (len(_Y) + 1))


def _conjugate_pinned():
    def model_fn():
        mu = yield Root(tfd.Normal(0.0, 1.0, name="mu"))
        yield tfd.Sample(tfd.Normal(mu, 1.0), len(_Y), name="y")

    return tfd.JointDistributionCoroutine(model_fn).experimental_pin(y=_Y)


# Fits for the exact-answer tests: the learning rate decays from 0.1 to _FINAL_LR over the first
# half of the run and stays there for the second half.
_NUM_STEPS, _SAMPLE_SIZE, _NUM_DRAWS, _FINAL_LR = 600, 64, 4000, 2e-3
_LEARNING_RATE = optax.join_schedules(
    [
        optax.exponential_decay(0.1, _NUM_STEPS // 2, decay_rate=_FINAL_LR / 0.1),
        optax.constant_schedule(_FINAL_LR),
    ],
    boundaries=[_NUM_STEPS // 2],
)
# Mean field and full rank start at scale 0.1 so that the first half reaches sds of ~1.
_FIT_OPTIONS = {"mean_field": dict(initial_scale=0.1), "full_rank": dict(initial_scale=0.1)}


def _tolerance(sd, mc_se_factor=1.0):
    """Tolerance on a fitted mean or sd when the exact answer has standard deviation ``sd``.

    The Gaussian families used contain the exact answer, so the errors are
    (a) Monte Carlo error of the check: 4 standard errors, ``4 sd / sqrt(_NUM_DRAWS)`` times
        ``mc_se_factor`` (``1 / sqrt(2)`` for a standard deviation);
    (b) the optimiser's stationary noise at the final learning rate ``eta``: near the optimum
        the gradient of a location is pure noise of size ``g = 1 / (sd sqrt(S))`` for ``S =
        _SAMPLE_SIZE`` draws, so Adam acts like SGD with step ``eta / g`` on curvature
        ``1 / sd^2``, whose stationary variance is ``eta sd / (2 sqrt(S))``; it relaxes there
        in ``sd / (eta sqrt(S))`` steps (about 60 for sd = 1), so the constant second half is
        long enough. 4 of those standard deviations.
    """
    mc = 4 * sd * mc_se_factor / math.sqrt(_NUM_DRAWS)
    opt = 4 * math.sqrt(_FINAL_LR * sd / (2 * math.sqrt(_SAMPLE_SIZE)))
    return mc + opt


def _mean_tol(sd):
    return _tolerance(sd)


def _sd_tol(sd):
    return _tolerance(sd, mc_se_factor=1 / math.sqrt(2))


def _fit_and_sample(target, init_fn, build_fn, *, seed):
    """Fits with Adam (decaying learning rate) under jit, then draws from the fitted surrogate."""

    @_jit
    def run(key):
        k_init, k_fit, k_draw = jax.random.split(key, 3)
        params, losses = tfp.vi.fit_surrogate_posterior_stateless(
            target, build_fn, init_fn(k_init), optax.adam(_LEARNING_RATE), _NUM_STEPS,
            sample_size=_SAMPLE_SIZE, seed=k_fit,
        )
        return build_fn(params).sample(_NUM_DRAWS, seed=k_draw), losses

    return run(jax.random.PRNGKey(seed))


@pytest.mark.parametrize(
    "builder",
    ["mean_field", "full_rank", "asvi", pytest.param("asvi_mean_field", marks=pytest.mark.slow)],
)
def test_recovers_conjugate_normal_posterior(builder):
    pinned = _conjugate_pinned()
    if builder == "asvi_mean_field":
        init_fn, build_fn = baselines.build_asvi_surrogate_stateless(pinned, mean_field=True)
    else:
        init_fn, build_fn = BUILDERS[builder](pinned, **_FIT_OPTIONS.get(builder, {}))
    x, losses = _fit_and_sample(pinned.unnormalized_log_prob, init_fn, build_fn, seed=0)
    assert bool(jnp.isfinite(losses).all())
    mu = np.asarray(x.mu)
    assert abs(mu.mean() - _POST_MEAN) < _mean_tol(_POST_SD)
    assert abs(mu.std() - _POST_SD) < _sd_tol(_POST_SD)


# Unpinned Gaussian chain a ~ N(0, 1), b ~ N(a, 0.5): covariance [[1, 1], [1, 1.25]], precision
# [[5, -4], [-4, 4]]. The full-rank family contains it; the mean-field optimum (reverse KL) has
# the exact means and sds 1 / sqrt(diag(precision)) = (1 / sqrt(5), 1 / 2), uncorrelated.
_CHAIN_SD = (1.0, math.sqrt(1.25))
_CHAIN_CORR = 1.0 / math.sqrt(1.25)
_CHAIN_MEAN_FIELD_SD = (1.0 / math.sqrt(5.0), 0.5)


@pytest.mark.parametrize("builder", ["full_rank", "mean_field"])
def test_recovers_correlated_gaussian(builder):
    model = tfd.JointDistributionSequential([tfd.Normal(0.0, 1.0), lambda a: tfd.Normal(a, 0.5)])
    init_fn, build_fn = BUILDERS[builder](model, **_FIT_OPTIONS[builder])
    x, _ = _fit_and_sample(model.log_prob, init_fn, build_fn, seed=1)
    a, b = np.asarray(x[0]), np.asarray(x[1])
    sds, corr = (_CHAIN_SD, _CHAIN_CORR) if builder == "full_rank" else (_CHAIN_MEAN_FIELD_SD, 0.0)
    for draws, sd in zip((a, b), sds):
        assert abs(draws.mean()) < _mean_tol(sd)
        assert abs(draws.std() - sd) < _sd_tol(sd)
    # Standard error of a sample correlation: (1 - rho^2) / sqrt(n); for full rank, optimiser
    # noise as for a unit-scale parameter (mean field's correlation is zero by construction).
    corr_tol = 4 * (1 - corr**2) / math.sqrt(_NUM_DRAWS)
    if builder == "full_rank":
        corr_tol += _tolerance(1.0) - _tolerance(0.0)
    assert abs(np.corrcoef(a, b)[0, 1] - corr) < corr_tol


# ----------------------------------------------------------------------------------------------
# Parameters, seeds, dtypes.


def test_initial_parameters():
    pinned = _hierarchical().model
    size = 5  # mu, tau, x (3)
    init_fn, build_fn = baselines.build_mean_field_surrogate_stateless(
        pinned, initial_loc_radius=0.5, initial_scale=0.3
    )
    params = init_fn(jax.random.PRNGKey(0))
    assert set(params) == {"loc", "raw_scale"}
    assert params["loc"].shape == (size,)
    assert bool((jnp.abs(params["loc"]) <= 0.5).all())
    np.testing.assert_allclose(jax.nn.softplus(params["raw_scale"]), 0.3, rtol=1e-5)

    init_fn, build_fn = baselines.build_full_rank_surrogate_stateless(
        pinned, initial_loc_radius=0.0, initial_scale=0.3
    )
    params = init_fn(jax.random.PRNGKey(0))
    assert params["raw_scale_tril"].shape == (size * (size + 1) // 2,)
    np.testing.assert_array_equal(params["loc"], jnp.zeros(size))
    scale_tril = jax.jit(lambda p: build_fn(p).distribution.scale.to_dense())(params)
    np.testing.assert_allclose(scale_tril, 0.3 * jnp.eye(size), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_seed_forms_agree_and_differ_by_seed(builder):
    init_fn, _ = BUILDERS[builder](_hierarchical().model)
    # One compiled program (ASVI's initialisation is slow to run op by op).
    a, b, c, d = jax.jit(lambda *seeds: [init_fn(s) for s in seeds])(
        jax.random.PRNGKey(7), jax.random.key(7), 7, jax.random.PRNGKey(8)
    )
    leaves = jax.tree_util.tree_leaves
    for x, y in zip(leaves(a), leaves(b)):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(leaves(a), leaves(c)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(leaves(a), leaves(d)))


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_float64_auto_batched_model(builder, x64):
    f64 = jnp.float64

    def model_fn():
        mu = yield tfd.Normal(f64(0.0), f64(1.0), name="mu")
        s = yield tfd.HalfNormal(f64(1.0), name="s")
        yield tfd.Normal(mu, s, name="y")

    pinned = tfd.JointDistributionCoroutineAutoBatched(model_fn).experimental_pin(y=f64(0.5))
    init_fn, build_fn = BUILDERS[builder](pinned)
    params = init_fn(jax.random.PRNGKey(0))
    assert all(p.dtype == jnp.float64 for p in jax.tree_util.tree_leaves(params))

    @jax.jit
    def run(params, key):
        q = build_fn(params)
        x, lp = q.experimental_sample_and_log_prob(3, seed=key)
        return x, lp, q.log_prob(x), pinned.unnormalized_log_prob(x)

    x, lp, log_prob, target = run(params, jax.random.PRNGKey(1))
    ref = jax.eval_shape(lambda: pinned.sample_unpinned(3, seed=jax.random.PRNGKey(2)))
    assert jax.tree_util.tree_structure(x) == jax.tree_util.tree_structure(ref)
    assert x.mu.shape == (3,) and x.s.shape == (3,) and bool((x.s > 0).all())
    assert x.mu.dtype == jnp.float64 and x.s.dtype == jnp.float64 and lp.dtype == jnp.float64
    np.testing.assert_allclose(log_prob, lp, rtol=1e-10)
    assert bool(jnp.isfinite(target).all())


@pytest.mark.parametrize("builder", ["mean_field", "full_rank"])
def test_dtype_option(builder, x64):
    pinned = _hierarchical().model  # a float32 model
    init_fn, build_fn = BUILDERS[builder](pinned, dtype=jnp.float64)
    params = init_fn(jax.random.PRNGKey(0))
    assert all(p.dtype == jnp.float64 for p in jax.tree_util.tree_leaves(params))

    @jax.jit
    def run(params, key):
        x = build_fn(params).sample(seed=key)
        return x, pinned.unnormalized_log_prob(x)

    x, target = run(params, jax.random.PRNGKey(1))
    assert all(v.dtype == jnp.float64 for v in x)
    assert bool(jnp.isfinite(target))


# ----------------------------------------------------------------------------------------------
# The shared flat layout.


def test_flat_layout_of_vector_model():
    pinned = _vector().model
    layout = flat_latent_layout(pinned)
    names = tuple(pinned._flat_resolve_names())  # pylint: disable=protected-access
    assert layout.names == names and set(names) == {"z", "w"}
    shapes = dict(zip(layout.names, layout.unconstrained_shapes))
    assert shapes == {"z": (3,), "w": (2,)}
    assert dict(zip(layout.names, layout.constrained_shapes)) == {"z": (3,), "w": (3,)}
    assert layout.total_size == 5 and layout.dtype == np.float32

    @jax.jit
    def run(v):
        bij = layout.flat_bijector()
        x = bij.forward(v)
        unflat = layout.unflatten_bijector().forward(v)
        return (
            x,
            bij.inverse(x),
            bij.forward_log_det_jacobian(v),
            layout.event_space_bijector().forward_log_det_jacobian(unflat),
        )

    v = jax.random.normal(jax.random.PRNGKey(0), (4, 5))
    x, v_again, fldj, event_space_fldj = run(v)
    assert jax.tree_util.tree_map(jnp.shape, x) == {"z": (4, 3), "w": (4, 3)}
    np.testing.assert_allclose(v_again, v, atol=1e-5)
    # Log-det: the flat re-indexing adds nothing to the event-space bijector's.
    np.testing.assert_allclose(fldj, event_space_fldj, rtol=1e-6)
    # Building bijectors under jit left no traced values cached in the user's model.
    assert not pinned.distribution._single_sample_distributions  # pylint: disable=protected-access


def test_flat_bijector_log_det_matches_jacobian():
    layout = flat_latent_layout(_hierarchical().model)  # mu, tau (softplus), x (3)

    @jax.jit
    def run(v):
        bij = layout.flat_bijector()
        jac = jax.jacfwd(lambda u: jnp.concatenate([jnp.ravel(p) for p in bij.forward(u)]))(v)
        v_again = bij.inverse(bij.forward(v))
        return bij.forward_log_det_jacobian(v), jnp.linalg.slogdet(jac)[1], v_again

    v = jax.random.normal(jax.random.PRNGKey(0), (layout.total_size,))
    fldj, log_abs_det_jacobian, v_again = run(v)
    np.testing.assert_allclose(fldj, log_abs_det_jacobian, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v_again, v, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Errors.


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_rejects_non_joint_models(builder):
    with pytest.raises(TypeError, match="JointDistribution"):
        BUILDERS[builder](tfd.Normal(0.0, 1.0))


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_rejects_discrete_latents(builder):
    model = tfd.JointDistributionNamed(
        dict(k=tfd.Poisson(3.0), y=lambda k: tfd.Normal(jnp.float32(k), 1.0))
    )
    with pytest.raises(TypeError, match="'k'"):
        BUILDERS[builder](model.experimental_pin(y=0.0))


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_rejects_batched_latents(builder):
    def model_fn():
        x = yield Root(tfd.Normal(jnp.zeros(3), 1.0, name="x"))
        yield tfd.Independent(tfd.Normal(x, 1.0), 1, name="y")

    model = tfd.JointDistributionCoroutine(model_fn)
    with pytest.raises(ValueError, match="'x' has batch shape"):
        BUILDERS[builder](model.experimental_pin(y=jnp.zeros(3)))


def test_rejects_models_without_latents():
    model = tfd.JointDistributionNamed(dict(a=tfd.Normal(0.0, 1.0)))
    with pytest.raises(ValueError, match="no latent"):
        baselines.build_mean_field_surrogate_stateless(model.experimental_pin(a=0.0))


@pytest.mark.parametrize(
    "builder,kwargs,error,match",
    [
        ("mean_field", dict(initial_scale=0.0), ValueError, "initial_scale"),
        ("mean_field", dict(initial_loc_radius=-1.0), ValueError, "initial_loc_radius"),
        ("full_rank", dict(initial_scale=float("nan")), ValueError, "initial_scale"),
        ("full_rank", dict(dtype=jnp.int32), TypeError, "dtype"),
        ("asvi", dict(initial_prior_weight=1.5), ValueError, "initial_prior_weight"),
        ("asvi", dict(dtype=jnp.float16), ValueError, "dtype"),
    ],
)
def test_rejects_bad_options(builder, kwargs, error, match):
    with pytest.raises(error, match=match):
        BUILDERS[builder](_hierarchical().model, **kwargs)


@pytest.mark.parametrize("builder", ["mean_field", "full_rank"])
def test_rejects_bad_seeds(builder):
    init_fn, _ = BUILDERS[builder](_hierarchical().model)
    with pytest.raises(ValueError, match="seed"):
        init_fn(jnp.zeros(3))


@pytest.mark.parametrize("builder", list(BUILDERS))
def test_build_fn_rejects_wrong_params(builder):
    init_fn, build_fn = BUILDERS[builder](_hierarchical().model)
    params = init_fn(jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="expected a dict"):
        build_fn(tuple(params.values()))
    with pytest.raises(TypeError, match="expected a dict"):
        build_fn({**params, "extra": jnp.zeros(1)})


# ----------------------------------------------------------------------------------------------
# ASVI's HalfNormal substitute.


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
def test_half_normal_substitute_matches_median_and_spread(scale):
    rules = dict(baselines.ASVI_PRIOR_SUBSTITUTION_RULES)
    prior = tfd.HalfNormal(scale)
    sub = rules[tfd.HalfNormal](prior)
    assert isinstance(sub, tfd.TransformedDistribution)
    assert isinstance(sub.bijector, tfb.Softplus) and isinstance(sub.distribution, tfd.Normal)
    softplus = tfb.Softplus()
    np.testing.assert_allclose(
        softplus.forward(sub.distribution.quantile(0.5)), prior.quantile(0.5), rtol=1e-5
    )
    # Equal interquartile ranges in the unconstrained (softplus-inverse) space.
    iqr = lambda q: q(0.75) - q(0.25)  # noqa: E731
    np.testing.assert_allclose(
        iqr(sub.distribution.quantile),
        iqr(lambda p: softplus.inverse(prior.quantile(p))),
        rtol=1e-4,
    )


# ----------------------------------------------------------------------------------------------
# ASVI's noise-driven sampling and the IAF baseline.


def test_asvi_noise_sampling_matches_tfp_joint_distribution():
    """The default (noise through make_distribution_bijector) is TFP's ASVI distribution."""
    case = _hierarchical()
    init_fn, build_fn = baselines.build_asvi_surrogate_stateless(case.model)
    _, build_joint = baselines.build_asvi_surrogate_stateless(case.model, sample_from_noise=False)
    # Move away from the prior so the check is not only about the initial parameters.
    params = jax.tree.map(lambda p: p + 0.3, init_fn(jax.random.PRNGKey(0)))
    q, q_joint = build_fn(params), build_joint(params)
    assert isinstance(q_joint, tfd.JointDistribution)

    reference = q_joint.sample(64, seed=jax.random.PRNGKey(1))
    np.testing.assert_allclose(q.log_prob(reference), q_joint.log_prob(reference), rtol=1e-4,
                               atol=1e-4)

    n = 20_000
    x, log_q = jax.jit(lambda key: q.experimental_sample_and_log_prob(n, seed=key))(
        jax.random.PRNGKey(2))
    np.testing.assert_allclose(log_q, q_joint.log_prob(x), rtol=1e-4, atol=1e-4)
    assert bool(jnp.all(case.in_support(x)))
    y = q_joint.sample(n, seed=jax.random.PRNGKey(3))
    for name in ("mu", "tau", "x"):
        a, b = np.asarray(getattr(x, name)), np.asarray(getattr(y, name))
        # Two independent means of n draws differ by 5 standard errors at most.
        tolerance = 5 * np.sqrt(a.var(0) / n + b.var(0) / n)
        assert np.all(np.abs(a.mean(0) - b.mean(0)) < tolerance), name


def test_iaf_baseline_is_the_flow_architecture():
    # The baseline is the "flow" chain itself, without the surrogate builder's tempered
    # affine base stage (the peer stays as the paper's IAF).
    from emf_jax.architectures import build_embedded_flow
    from emf_jax.distribution import EmbeddedFlowDistribution

    case = _hierarchical()
    init_fn, build_fn = baselines.build_iaf_surrogate_stateless(case.model, hidden_units=(8,))
    flow = build_embedded_flow(case.model, architecture="flow", hidden_units=(8,),
                               activation=jnp.tanh)
    key = jax.random.PRNGKey(0)
    params = init_fn(key)
    jax.tree.map(np.testing.assert_array_equal, params, flow.init(key))
    x = build_fn(params).sample(32, seed=jax.random.PRNGKey(1))
    assert bool(jnp.all(case.in_support(x)))
    np.testing.assert_allclose(build_fn(params).log_prob(x),
                               EmbeddedFlowDistribution(flow, params).log_prob(x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["named", "sequential", "named_auto_batched"])
def test_asvi_samples_non_coroutine_models(kind):
    """Named / Sequential models keep TFP's sampling; samples keep the model's structure."""
    parts = dict(mu=tfd.Normal(0.0, 1.0), y=lambda mu: tfd.Normal(mu, 1.0))
    if kind == "named":
        model = tfd.JointDistributionNamed(parts).experimental_pin(y=0.5)
    elif kind == "named_auto_batched":
        model = tfd.JointDistributionNamedAutoBatched(parts).experimental_pin(y=0.5)
    else:
        model = tfd.JointDistributionSequential([parts["mu"], parts["y"]])
    init_fn, build_fn = baselines.build_asvi_surrogate_stateless(model)
    q = build_fn(init_fn(jax.random.PRNGKey(0)))
    x = q.sample(3, seed=jax.random.PRNGKey(1))
    expected = model.sample_unpinned(seed=jax.random.PRNGKey(2)) if kind != "sequential" \
        else model.sample(seed=jax.random.PRNGKey(2))
    assert jax.tree.structure(x) == jax.tree.structure(expected)
    assert bool(jnp.all(jnp.isfinite(q.log_prob(x))))
