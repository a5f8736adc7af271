"""EMF densities: exact log-densities, trainable embedded models, fitting and data checks."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats
from tensorflow_probability.substrates import jax as tfp

from emf_jax import templates
from emf_jax.density import build_emf_density_stateless, model_params_of
from emf_jax.training import engine, fit_density, structure_data

tfd = tfp.distributions
SMALL = dict(hidden_units=(8,), num_backbone_layers=2)


def _perturbed(params, seed, scale=0.2):
    """Every leaf plus Gaussian noise (NumPy: eager JAX would compile once per leaf shape)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: jnp.asarray(np.asarray(leaf) + scale * rng.normal(size=np.shape(leaf)),
                                 jnp.asarray(leaf).dtype), params)


@pytest.fixture(scope="module")
def hierarchical_density():
    """A small GEMF-T density on the hierarchical template, built once for several tests."""
    model_fn, model_params = templates.hierarchical(2, 2)
    init_fn, build_fn = build_emf_density_stateless(model_fn, model_params, **SMALL)
    return model_params, init_fn, build_fn


# Every architecture's bookkeeping is shared with the surrogate builder (tests/
# test_surrogates.py checks it there); the default run covers the density default.
@pytest.mark.parametrize("architecture", [
    "gemf-t", *(pytest.param(a, marks=pytest.mark.slow)
                for a in ("emf-t", "gemf-m", "gemf-b", "flow"))])
def test_log_prob_is_the_change_of_variables_and_gradients_reach_the_model(
        architecture, hierarchical_density):
    # Independent computation: log q(x) = log N(z(x)) + log|det dz/dx| with z = flow⁻¹(x)
    # and the Jacobian from jax.jacfwd of the inverse on the flat value, not from the
    # layers' own log-det bookkeeping.
    model_params, init_fn, build_fn = hierarchical_density
    if architecture != "gemf-t":
        init_fn, build_fn = build_emf_density_stateless(
            templates.hierarchical(2, 2)[0], model_params, architecture=architecture, **SMALL)
    params = _perturbed(init_fn(jax.random.key(0)), 1)
    trace = build_fn(params).trace
    shapes = [tuple(r.event_shape) for r in trace.latents]
    sizes = [math.prod(s) for s in shapes]

    def unflat(v):
        parts = jnp.split(v, np.cumsum(sizes)[:-1])
        return trace.unflatten([p.reshape(s) for p, s in zip(parts, shapes)])

    def z_of(p, v):
        return build_fn(p).flow.inverse_and_log_det(p, unflat(v))[0]

    @jax.jit
    def check(p, v):
        log_q = build_fn(p).log_prob(unflat(v))
        z = z_of(p, v)
        reference = (jnp.sum(_standard_normal_log_pdf(z))
                     + jnp.linalg.slogdet(jax.jacfwd(z_of, argnums=1)(p, v))[1])
        grads = jax.grad(lambda q: build_fn(q).log_prob(unflat(v)))(p)
        return log_q, reference, grads

    v = jax.random.normal(jax.random.key(2), (sum(sizes),))
    log_q, reference, grads = check(params, v)
    np.testing.assert_allclose(log_q, reference, rtol=1e-4, atol=1e-4)
    model_grads = model_params_of(grads)
    if architecture == "flow":
        assert model_grads is None  # The model only gives the event structure.
    else:
        assert set(model_grads) == set(model_params)
        for name, g in model_grads.items():
            assert np.all(np.isfinite(g)), name
            assert np.any(np.abs(g) > 1e-6), f"no gradient reaches model parameter {name}"


def _standard_normal_log_pdf(z):
    return -0.5 * jnp.square(z) - 0.5 * math.log(2 * math.pi)


@pytest.mark.slow  # One compilation per template (their densities: tests/test_templates.py).
@pytest.mark.parametrize("template", [
    lambda: templates.gaussian_mixture(2, 3),
    lambda: templates.hierarchical(3, 2),
    lambda: templates.random_walk(4, 2),
    lambda: templates.smooth_walk(4),
], ids=["gaussian_mixture", "hierarchical", "random_walk", "smooth_walk"])
def test_ungated_density_starts_at_the_model(template):
    # The backbone starts as the identity, so the EMF-T density is the model itself.
    model_fn, model_params = template()
    model_params = _perturbed(model_params, 3)
    init_fn, build_fn = build_emf_density_stateless(
        model_fn, model_params, architecture="emf-t", **SMALL)
    params = init_fn(jax.random.key(0))
    values = model_fn(model_params).sample(5, seed=jax.random.key(4))
    log_q = jax.jit(lambda p, x: build_fn(p).log_prob(x))(params, values)
    np.testing.assert_allclose(log_q, model_fn(model_params).log_prob(values),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.slow  # The mixture test below also checks that fitting lowers the loss.
def test_fit_trains_the_random_walk_scales():
    # Data: a Gaussian random walk with initial and step scale 0.5, i.e. the template's own
    # family, whose scales start at 1. The optimum NLL is 4 * (0.5 log(2π 0.25) + 0.5) ≈
    # 2.90 against 4.13 at the start.
    rng = np.random.default_rng(0)
    n, steps = 1000, 4
    data = np.cumsum(rng.normal(0.0, 0.5, (n, steps)), axis=1).astype(np.float32)
    model_fn, model_params = templates.random_walk(steps)
    init_fn, build_fn = build_emf_density_stateless(model_fn, model_params, **SMALL)
    # Without the model-first phase (it alone reaches the optimum; see
    # tests/test_density_defaults.py), so that the joint fit is what trains the scales.
    result = fit_density(build_fn, init_fn(jax.random.key(0)), data,
                         optimizer=optax.adam(0.02), num_steps=300, batch_size=100, seed=0,
                         pretrain_model_steps=0, progress_bar=False)
    losses = np.asarray(result.losses)
    assert np.all(np.isfinite(losses))
    # Minibatch noise of a 100-row mean NLL is about 0.1 here: a 1-nat drop is far above it.
    assert losses[-50:].mean() < losses[0] - 1.0
    assert abs(losses[-50:].mean() - 2.90) < 0.1
    # The backbone absorbs part of the scale, so only the direction of travel is tested.
    fitted = model_params_of(result.params)
    assert float(jax.nn.softplus(fitted["raw_step_scale"])) < 0.95


def test_mixture_template_recovers_a_bimodal_density():
    # Target: 0.3 N(-2, 0.5²) + 0.7 N(2, 0.5²), n = 4000 training rows. Tolerances: the
    # left-mode weight has sampling standard error sqrt(0.3 · 0.7 / n) ≈ 0.007; we allow
    # 0.04 (about 5 standard errors plus optimisation error). The test NLL gap to the truth
    # estimates a KL divergence; its standard error is computed from the test sample.
    rng = np.random.default_rng(1)
    n = 4000

    def draw(size):
        left = rng.random(size) < 0.3
        return np.where(left, rng.normal(-2.0, 0.5, size), rng.normal(2.0, 0.5, size))

    def true_log_prob(x):
        return np.logaddexp(np.log(0.3) + stats.norm.logpdf(x, -2.0, 0.5),
                            np.log(0.7) + stats.norm.logpdf(x, 2.0, 0.5))

    data = draw(n).astype(np.float32)[:, None]
    model_fn, model_params = templates.gaussian_mixture(1, 8)
    init_fn, build_fn = build_emf_density_stateless(
        model_fn, model_params, architecture="emf-t", **SMALL)
    params = init_fn(jax.random.key(0))
    result = fit_density(build_fn, params, data,
                         optimizer=optax.adam(optax.cosine_decay_schedule(0.05, 600)),
                         num_steps=600, batch_size=200, seed=0, progress_bar=False,
                         pretrain_model_steps=0)
    # The joint fit alone (the model-first phase, on by default, would start it near the
    # optimum; tests/test_density_defaults.py tests that phase) lowers the loss, and trains
    # the model with the flow: the start (8 equal components spread over [-4, 4]) is
    # about 0.35 nats worse than the optimum; minibatch noise is about 0.06.
    losses = np.asarray(result.losses)
    assert np.all(np.isfinite(losses))
    assert losses[-100:].mean() < losses[:5].mean() - 0.2
    # The embedded model itself trained (the locations moved off their grid).
    assert not np.allclose(model_params_of(result.params)["locs"], model_params["locs"])

    grid = np.linspace(-5.0, 5.0, 1001)
    test = draw(n)
    points = np.concatenate([grid, test]).astype(np.float32)[:, None]
    density = build_fn(result.params)
    log_q = np.asarray(jax.jit(density.log_prob)((points,)), np.float64)
    p_fit, log_q_test = np.exp(log_q[:grid.size]), log_q[grid.size:]
    dx = grid[1] - grid[0]
    assert abs(p_fit.sum() * dx - 1.0) < 0.01  # Riemann sum of the mass inside ±5.
    left_weight = p_fit[grid < 0].sum() * dx
    assert abs(left_weight - 0.3) < 0.04, left_weight
    # Bimodal: modes near ±2 and a deep trough between them (the truth's trough is ~1e-3
    # of its peak).
    left_mode = grid[np.argmax(np.where(grid < 0, p_fit, 0.0))]
    right_mode = grid[np.argmax(np.where(grid > 0, p_fit, 0.0))]
    assert abs(left_mode + 2.0) < 0.25 and abs(right_mode - 2.0) < 0.25
    assert p_fit[np.abs(grid) < 0.5].min() < 0.1 * p_fit.max()
    gap = true_log_prob(test) - log_q_test
    sem = gap.std() / math.sqrt(n)
    assert gap.mean() < 0.05 + 4 * sem, (gap.mean(), sem)


@pytest.mark.parametrize("bad, error, message", [
    ("nan_rows", ValueError, r"data has 2 of 40 rows with NaN or infinite values "
                             r"\(first row indices: \[5, 9\]\)"),
    ("wrong_width", ValueError, r"flat data must have shape \[N, 6\]"),
    ("wrong_part_shape", ValueError, r"data for variable \.items has shape \[40, 2, 3\]"),
    ("bool", TypeError, "boolean dtype"),
    ("strings", TypeError, "non-numeric dtype"),
])
def test_bad_data_is_rejected_before_compiling(bad, error, message, hierarchical_density):
    _, init_fn, build_fn = hierarchical_density
    flat = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    data = flat
    if bad == "nan_rows":
        flat[5, 0] = np.nan
        flat[9, 4] = -np.inf
    elif bad == "wrong_width":
        data = flat[:, :5]
    elif bad == "wrong_part_shape":
        data = {"mean": flat[:, :2], "items": np.zeros((40, 2, 3), np.float32)}
    elif bad == "bool":
        data = flat > 0
    elif bad == "strings":
        data = flat.astype(str)
    before = engine._run_chunk_jit._cache_size()
    with pytest.raises(error, match=message):
        fit_density(build_fn, init_fn(jax.random.key(0)), data, optimizer=optax.adam(1e-3),
                    num_steps=5, batch_size=10, seed=0, progress_bar=False)
    assert engine._run_chunk_jit._cache_size() == before


def test_flat_data_split_in_the_model_variable_order(hierarchical_density):
    _, init_fn, build_fn = hierarchical_density
    density = build_fn(init_fn(jax.random.key(0)))
    flat = np.arange(18, dtype=np.float32).reshape(3, 6)
    parts = structure_data(density, flat)
    # Program order: mean [2] first, then items [2, 2].
    np.testing.assert_array_equal(parts.mean, flat[:, :2])
    np.testing.assert_array_equal(parts.items, flat[:, 2:].reshape(3, 2, 2))


def test_where_the_model_parameters_live(hierarchical_density):
    model_params, init_fn, _ = hierarchical_density
    params = init_fn(jax.random.key(0))
    assert set(params) == {"backbone", "structured"}
    assert set(params["structured"]) == {"gates", "model"}
    for name, value in model_params.items():
        np.testing.assert_array_equal(model_params_of(params)[name], value)
    # Fixed model parameters or a fixed model: nothing of the model is in the parameters.
    model_fn = templates.hierarchical(2, 2)[0]
    init_fn, _ = build_emf_density_stateless(
        model_fn, model_params, architecture="structured", train_model_params=False)
    assert model_params_of(init_fn(jax.random.key(0))) is None
    init_fn, _ = build_emf_density_stateless(model_fn(model_params), architecture="structured")
    assert model_params_of(init_fn(jax.random.key(0))) is None


@pytest.mark.slow  # Two more backbones to build and evaluate.
def test_flow_baselines_leave_the_model_out_and_start_at_the_identity():
    model_fn, model_params = templates.gaussian_mixture(2, 3)
    x = np.array([[0.3, -1.2]], np.float32)
    for kwargs in (dict(backbone="maf"), dict(backbone="nsf", backbone_kwargs=dict(num_bins=4))):
        init_fn, build_fn = build_emf_density_stateless(
            model_fn, model_params, architecture="flow", **SMALL, **kwargs)
        params = init_fn(jax.random.key(0))
        assert model_params_of(params) is None  # The model gives only the event structure.
        log_q = build_fn(params).log_prob((x,))
        np.testing.assert_allclose(log_q, stats.norm.logpdf(x).sum(-1), rtol=1e-5)


def test_argument_errors():
    model_fn, model_params = templates.gaussian_mixture(1, 2)

    def pinned_program():
        mu = yield tfd.Normal(0.0, 1.0, name="mu")
        yield tfd.Normal(mu, 1.0, name="y")

    pinned = tfd.JointDistributionCoroutineAutoBatched(pinned_program).experimental_pin(y=1.0)
    with pytest.raises(ValueError, match="pinned model"):
        build_emf_density_stateless(pinned)
    with pytest.raises(ValueError, match="only used with a model function"):
        build_emf_density_stateless(model_fn(model_params), model_params)
    with pytest.raises(ValueError, match="needs its initial model_params"):
        build_emf_density_stateless(model_fn)
    with pytest.raises(TypeError, match=r"model_params\['logits'\].*must be floating"):
        build_emf_density_stateless(
            model_fn, {**model_params, "logits": np.zeros((1, 2), np.int32)})
    with pytest.raises(TypeError, match="must return a JointDistribution"):
        build_emf_density_stateless(lambda p: p, model_params)
    with pytest.raises(ValueError, match="unknown architecture 'gemf-x'"):
        build_emf_density_stateless(model_fn, model_params, architecture="gemf-x")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_emf_density_stateless(model_fn, model_params, backbone="glow")
    with pytest.raises(ValueError, match="params must be the dict"):
        model_params_of({"backbone": {}})


def test_the_whole_density_is_a_drop_in_bijector(hierarchical_density):
    # The density is the push-forward of its noise through `density.bijector`, as for
    # tfd.TransformedDistribution: the same log_prob, and inverse undoes forward.
    _, init_fn, build_fn = hierarchical_density
    density = build_fn(_perturbed(init_fn(jax.random.key(0)), 3))
    bijector = density.bijector

    @jax.jit
    def check(z):
        values = bijector.forward([z])
        pushed = tfd.TransformedDistribution(density.noise_distribution, bijector)
        return values, bijector.inverse(values)[0], pushed.log_prob(values), density.log_prob(
            values)

    z = jax.random.normal(jax.random.key(1), (4, density.flow.event_size))
    _, z_again, log_pushed, log_q = check(z)
    np.testing.assert_allclose(z_again, z, atol=2e-4)
    np.testing.assert_allclose(log_pushed, log_q, atol=2e-3, rtol=1e-4)
