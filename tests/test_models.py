"""Tests of the benchmark models (emf_jax.models).

Every model's density is checked against an independent numpy/scipy implementation written
here from the paper's settings; the exact posteriors against a Kalman filter/smoother, a
Laplace expansion of the TFP model (exact for Gaussian models) and Monte Carlo; the fixed data
and densities against inference_gym where it is installed.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from emf_jax import models
from emf_jax.models import time_series

# ----------------------------------------------------------------------------- references

BRIDGE_30 = tuple(range(10)) + tuple(range(20, 30))
BRIDGE_120 = tuple(range(40)) + tuple(range(80, 120))

GYM_BROWNIAN_OBS = [
    0.21592641, 0.118771404, -0.07945447, 0.037677474, -0.27885845, -0.1484156,
    -0.3250906, -0.22957903, -0.44110894, -0.09830782, -0.8786016, -0.83736074,
    -0.7384849, -0.8939254, -0.7774566, -0.70238715, -0.87771565, -0.51853573,
    -0.6948214, -0.6202789,
]
EIGHT_SCHOOLS_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
EIGHT_SCHOOLS_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def lorenz_rhs(s):
    x, y, z = s
    return np.array([10.0 * (y - x), x * (28.0 - z) - y, x * y - 8.0 / 3.0 * z])


def van_der_pol_rhs(s, mu=1.0):
    x, v = s
    return np.array([v, mu * (1.0 - x * x) * v - x])


def log_sigmoid(v):
    return -np.logaddexp(0.0, -v)


def ref_state_space(path, obs, *, rhs, dt, init_scale, step_scale, observed, kind,
                    obs_scale, logit_scale):
    """log p(path, obs) of an Euler-Maruyama state-space model, written with scipy."""
    path = [np.asarray(v, np.float64) for v in path]
    total = np.sum(stats.norm.logpdf(path[0], 0.0, init_scale))
    for t in range(1, len(path)):
        prev = path[t - 1]
        loc = prev if rhs is None else prev + dt * rhs(prev)
        total += np.sum(stats.norm.logpdf(path[t], loc, step_scale))
    first = np.array([np.atleast_1d(path[t])[0] for t in observed])
    obs = np.asarray(obs, np.float64)
    if kind == "r":
        total += np.sum(stats.norm.logpdf(obs, first, obs_scale))
    else:
        logits = logit_scale * first
        total += np.sum(obs * log_sigmoid(logits) + (1 - obs) * log_sigmoid(-logits))
    return total


def ref_eight_schools(avg_effect, log_stddev, effects_std, obs):
    total = stats.norm.logpdf(avg_effect, 0.0, 10.0) + stats.norm.logpdf(log_stddev, 5.0, 1.0)
    total += np.sum(stats.norm.logpdf(effects_std, 0.0, 1.0))
    theta = avg_effect + np.exp(log_stddev) * np.asarray(effects_std)
    return total + np.sum(stats.norm.logpdf(obs, theta, EIGHT_SCHOOLS_SIGMA))


def ref_binary_tree(layers, obs, *, link, leaf_scale, node_scale):
    """Leaves first; each node ~ N(f(left parent) - f(right parent), node_scale)."""
    f = (lambda v: v) if link == "linear" else np.tanh
    nodes = [np.asarray(v, np.float64) for v in layers] + [np.asarray(obs, np.float64)]
    total = np.sum(stats.norm.logpdf(nodes[0], 0.0, leaf_scale))
    for parent, child in zip(nodes[:-1], nodes[1:]):
        assert child.size * 2 == parent.size
        for i in range(child.size):
            loc = f(parent[2 * i]) - f(parent[2 * i + 1])
            total += stats.norm.logpdf(child[i], loc, node_scale)
    return total


def reference_log_joint(name, latents, obs):
    """The paper's models, with their settings hard-coded independently of the package."""
    if name == "eight_schools":
        return ref_eight_schools(
            latents["avg_effect"], latents["log_stddev"], latents["school_effects_std"], obs)
    if name.startswith("binary_tree"):
        _, _, link, depth = name.split("_")
        scales = {"linear": (0.2, 0.15), "tanh": (0.1, 0.05)}[link]
        layers = [latents[f"layer{k}"] for k in range(int(depth) - 1)]
        return ref_binary_tree(layers, obs, link=link, leaf_scale=scales[0],
                               node_scale=scales[1])
    setting = "_bridge_" if "_bridge_" in name else "_smoothing_"
    family, _, rest = name.partition(setting)
    kind = rest[0]
    bridge = setting == "_bridge_"
    settings = {
        "brownian": dict(rhs=None, dt=1.0, init_scale=0.1, step_scale=0.1, obs_scale=0.15,
                         logit_scale=5.0, steps=30),
        "lorenz": dict(rhs=lorenz_rhs, dt=0.02, init_scale=1.0,
                       step_scale=np.sqrt(0.02) * 0.1, obs_scale=1.0, logit_scale=2.0,
                       steps=30),
        "van_der_pol": dict(rhs=van_der_pol_rhs, dt=0.05, init_scale=1.0,
                            step_scale=np.sqrt(0.05) * 0.1, obs_scale=0.5, logit_scale=1.0,
                            steps=120),
    }[family]
    steps = settings.pop("steps")
    observed = (BRIDGE_30 if steps == 30 else BRIDGE_120) if bridge else tuple(range(steps))
    path = [latents[f"x{t}"] for t in range(steps)]
    return ref_state_space(path, obs, observed=observed, kind=kind, **settings)


@functools.lru_cache(maxsize=None)
def cached_target(name, seed=0, dtype=None):
    return models.get_target(name, seed=seed, dtype=dtype)


def latent_names(target):
    return list(target.pinned_model.event_shape._fields)


def random_latents(target, rng):
    """Random latent values: a perturbed true path where known, else standard normal."""
    out = {}
    for name, shape in zip(latent_names(target), target.pinned_model.event_shape):
        noise = rng.standard_normal(tuple(shape))
        if target.true_latents is not None:
            value = np.asarray(target.true_latents[name], np.float64) + 0.05 * noise
        else:
            value = noise
        out[name] = value
    return out


def to_jax(values, dtype):
    return {k: jnp.asarray(v, dtype) for k, v in values.items()}


def flatten_latents(target, values):
    """Flattens a latent dict in program order (the order of ExactPosterior.covariance)."""
    return jnp.concatenate([jnp.reshape(values[n], (-1,)) for n in latent_names(target)])


def unflatten_latents(target, flat):
    out, start = {}, 0
    for name, shape in zip(latent_names(target), target.pinned_model.event_shape):
        size = int(np.prod(tuple(shape), dtype=int))
        out[name] = jnp.reshape(flat[start:start + size], tuple(shape))
        start += size
    return out


# ----------------------------------------------------------------------------- structure


def test_target_names_cover_the_paper():
    expected = {
        f"{family}_{setting}_{kind}"
        for family in ("brownian", "lorenz", "van_der_pol")
        for setting in ("smoothing", "bridge")
        for kind in ("r", "c")
    } | {"eight_schools"} | {f"binary_tree_{link}_{d}" for link in ("linear", "tanh")
                            for d in (4, 8)}
    assert expected <= set(models.TARGET_NAMES)
    assert set(models.EXACT_TARGET_NAMES) <= set(models.TARGET_NAMES)
    assert len(set(models.TARGET_NAMES)) == len(models.TARGET_NAMES)


@pytest.mark.parametrize("name", models.TARGET_NAMES)
def test_target_structure_and_density(name):
    """Structure, data and log density (pinned and joint) against the scipy reference."""
    target = cached_target(name)
    assert target.name == name
    assert set(target.observations) == {models.OBSERVED_NAME}
    names = latent_names(target)
    assert models.OBSERVED_NAME not in names
    assert list(target.model.event_shape._fields) == names + [models.OBSERVED_NAME]
    obs = target.observations[models.OBSERVED_NAME]
    assert obs.shape == tuple(target.model.event_shape[-1])
    if name.endswith("_c"):
        assert obs.dtype == jnp.int32
        assert set(np.unique(np.asarray(obs))) <= {0, 1}
    else:
        assert obs.dtype == jnp.float32
    if target.true_latents is not None:
        assert list(target.true_latents) == names
        for n, shape in zip(names, target.pinned_model.event_shape):
            assert target.true_latents[n].shape == tuple(shape)
    assert (target.exact_posterior is not None) == (name in models.EXACT_TARGET_NAMES)
    assert target.description

    # Eager evaluation (TFP's per-op cost is shared by the targets of one family).
    values = random_latents(target, np.random.default_rng(123))
    jax_values = to_jax(values, jnp.float32)
    expected = reference_log_joint(
        name, {k: np.asarray(v, np.float64) for k, v in jax_values.items()}, np.asarray(obs))
    got_pinned = float(target.pinned_model.unnormalized_log_prob(jax_values))
    got_joint = float(target.model.log_prob(**jax_values, obs=obs))
    tol = 2e-5 * max(1.0, abs(expected))
    assert abs(got_pinned - expected) <= tol, (got_pinned, expected)
    assert abs(got_joint - expected) <= tol, (got_joint, expected)


def _check_jit_and_gradient(name):
    """Value and gradient under jit: the value matches the reference; the gradient is finite
    and its directional derivative matches a central difference of the float64 reference."""
    target = cached_target(name)
    obs64 = np.asarray(target.observations[models.OBSERVED_NAME])
    rng = np.random.default_rng(7)
    jax_values = to_jax(random_latents(target, rng), jnp.float32)
    value, grads = jax.jit(jax.value_and_grad(target.pinned_model.unnormalized_log_prob))(
        jax_values)
    as_float64 = {k: np.asarray(v, np.float64) for k, v in jax_values.items()}
    expected = reference_log_joint(name, as_float64, obs64)
    assert abs(float(value) - expected) <= 2e-5 * max(1.0, abs(expected))
    names = latent_names(target)
    assert set(grads) == set(names)
    for leaf in jax.tree.leaves(grads):
        assert bool(jnp.all(jnp.isfinite(leaf)))
    direction = {k: rng.standard_normal(v.shape) for k, v in as_float64.items()}
    eps = 1e-4
    plus = reference_log_joint(
        name, {k: v + eps * direction[k] for k, v in as_float64.items()}, obs64)
    minus = reference_log_joint(
        name, {k: v - eps * direction[k] for k, v in as_float64.items()}, obs64)
    numeric = (plus - minus) / (2 * eps)
    terms = [np.asarray(grads[k], np.float64) * direction[k] for k in names]
    analytic = sum(float(np.sum(t)) for t in terms)
    scale = sum(float(np.sum(np.abs(t))) for t in terms)
    assert abs(analytic - numeric) <= 1e-3 * max(1.0, scale), (analytic, numeric)


@pytest.mark.parametrize(
    "name", ["brownian_bridge_c", "lorenz_bridge_r", "van_der_pol_bridge_c", "eight_schools",
             "binary_tree_tanh_8"])
def test_jit_and_gradient(name):
    _check_jit_and_gradient(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", models.TARGET_NAMES)
def test_jit_and_gradient_all_targets(name):
    _check_jit_and_gradient(name)


@pytest.mark.parametrize("name", ["lorenz_smoothing_r", "eight_schools"])
def test_float64_density_is_exact(x64, name):
    """Eager (not jitted) evaluation in float64 agrees with the reference to rounding."""
    target = models.get_target(name, dtype=jnp.float64)
    obs = target.observations[models.OBSERVED_NAME]
    values = random_latents(target, np.random.default_rng(5))
    jax_values = to_jax(values, jnp.float64)
    got = target.pinned_model.unnormalized_log_prob(jax_values)
    assert got.dtype == jnp.float64
    expected = reference_log_joint(name, values, np.asarray(obs))
    np.testing.assert_allclose(float(got), expected, rtol=1e-11, atol=1e-11)
    sample = target.pinned_model.sample_unpinned(seed=jax.random.PRNGKey(0))
    assert all(v.dtype == jnp.float64 for v in jax.tree.leaves(sample))


def test_builders_with_custom_settings(x64):
    steps = [1, 4, 8]
    model = models.van_der_pol(
        10, step_size=0.1, mu=2.0, innovation_scale=0.3, initial_scale=0.5,
        observation="classification", logit_scale=3.0, observed_steps=steps,
        dtype=jnp.float64)
    rng = np.random.default_rng(0)
    path = [rng.standard_normal(2) for _ in range(10)]
    obs = np.array([1, 0, 1], dtype=np.int32)
    value = {f"x{t}": jnp.asarray(v) for t, v in enumerate(path)}
    got = float(model.log_prob(**value, obs=jnp.asarray(obs)))
    expected = ref_state_space(
        path, obs, rhs=functools.partial(van_der_pol_rhs, mu=2.0), dt=0.1, init_scale=0.5,
        step_scale=np.sqrt(0.1) * 0.3, observed=steps, kind="c", obs_scale=None,
        logit_scale=3.0)
    np.testing.assert_allclose(got, expected, rtol=1e-11)

    model = models.brownian_motion(6, innovation_scale=0.7, observation_scale=0.2,
                                   observed_steps=[0, 5], dtype=jnp.float64)
    path = list(rng.standard_normal(6))
    obs = rng.standard_normal(2)
    value = {f"x{t}": jnp.asarray(v) for t, v in enumerate(path)}
    got = float(model.log_prob(**value, obs=jnp.asarray(obs)))
    expected = ref_state_space(path, obs, rhs=None, dt=1.0, init_scale=0.7, step_scale=0.7,
                               observed=[0, 5], kind="r", obs_scale=0.2, logit_scale=None)
    np.testing.assert_allclose(got, expected, rtol=1e-11)

    model = models.binary_tree(3, link="tanh", leaf_scale=0.4, node_scale=0.3,
                               dtype=jnp.float64)
    layers = [rng.standard_normal(4), rng.standard_normal(2)]
    obs = rng.standard_normal(1)
    got = float(model.log_prob(layer0=jnp.asarray(layers[0]), layer1=jnp.asarray(layers[1]),
                               obs=jnp.asarray(obs)))
    expected = ref_binary_tree(layers, obs, link="tanh", leaf_scale=0.4, node_scale=0.3)
    np.testing.assert_allclose(got, expected, rtol=1e-11)


def test_batched_log_prob_matches_single_events():
    target = cached_target("brownian_bridge_c")
    rng = np.random.default_rng(0)
    batch = [to_jax(random_latents(target, rng), jnp.float32) for _ in range(3)]
    stacked = jax.tree.map(lambda *v: jnp.stack(v), *batch)
    got = target.pinned_model.unnormalized_log_prob(stacked)
    assert got.shape == (3,)
    singles = [float(target.pinned_model.unnormalized_log_prob(b)) for b in batch]
    np.testing.assert_allclose(np.asarray(got), singles, rtol=1e-5)


# ----------------------------------------------------------------------------- data


def test_synthetic_data_are_reproducible_and_shared():
    a = cached_target("brownian_smoothing_r", 0)
    b = models.get_target("brownian_smoothing_r", seed=0)
    c = cached_target("brownian_smoothing_r", 1)
    np.testing.assert_array_equal(a.observations["obs"], b.observations["obs"])
    assert not np.allclose(a.observations["obs"], c.observations["obs"])
    # The bridge observes a subset of the smoothing data; r and c share the latent path.
    bridge = cached_target("brownian_bridge_r", 0)
    np.testing.assert_array_equal(
        bridge.observations["obs"], np.asarray(a.observations["obs"])[list(BRIDGE_30)])
    classification = cached_target("brownian_smoothing_c", 0)
    for name in latent_names(a):
        np.testing.assert_array_equal(a.true_latents[name], classification.true_latents[name])


@pytest.mark.parametrize(
    "name,rhs,dt,init_scale,step_scale",
    [
        ("brownian_smoothing_r", None, 1.0, 0.1, 0.1),
        ("lorenz_smoothing_r", lorenz_rhs, 0.02, 1.0, np.sqrt(0.02) * 0.1),
        ("van_der_pol_smoothing_r", van_der_pol_rhs, 0.05, 1.0, np.sqrt(0.05) * 0.1),
    ],
)
def test_simulated_paths_follow_the_dynamics(name, rhs, dt, init_scale, step_scale):
    """The simulator's standardised innovations, pooled over seeds, look N(0, 1)."""
    residuals, observation_residuals = [], []
    obs_scale = {"brownian": 0.15, "lorenz": 1.0, "van": 0.5}[name.split("_")[0]]
    spec_fn = {"brownian": time_series.brownian_motion_spec,
               "lorenz": time_series.lorenz_system_spec,
               "van": time_series.van_der_pol_spec}[name.split("_")[0]]
    for seed in range(4):
        # The simulator that get_target uses (without building and pinning the model).
        latents, obs = time_series.simulate_state_space(spec_fn(), np.random.default_rng(seed))
        path = [latents[f"x{t}"] for t in range(len(latents))]
        residuals.append(np.atleast_1d(path[0]) / init_scale)
        for t in range(1, len(path)):
            loc = path[t - 1] if rhs is None else path[t - 1] + dt * rhs(path[t - 1])
            residuals.append(np.atleast_1d((path[t] - loc) / step_scale))
        first = np.array([np.atleast_1d(v)[0] for v in path])
        observation_residuals.append((obs - first) / obs_scale)
    for r in (np.concatenate(residuals), np.concatenate(observation_residuals)):
        n = r.size
        assert abs(r.mean()) < 4.0 / np.sqrt(n)
        assert abs(r.var() - 1.0) < 4.0 * np.sqrt(2.0 / n)


def test_classification_labels_follow_the_logits():
    """Pooled over seeds, labels are Bernoulli(sigmoid(5 x)) given the path."""
    labels, probs = [], []
    spec = time_series.brownian_motion_spec(observation="classification")
    for seed in range(20):
        latents, obs = time_series.simulate_state_space(spec, np.random.default_rng(seed))
        labels.append(obs)
        probs.append(special.expit(5.0 * np.array([latents[f"x{t}"] for t in range(30)])))
    labels, probs = np.concatenate(labels), np.concatenate(probs)
    z = (labels.sum() - probs.sum()) / np.sqrt(np.sum(probs * (1 - probs)))
    assert abs(z) < 4.0


# ----------------------------------------------------------------------------- exact posteriors


def kalman_brownian(obs_by_step, *, steps, q, r, s0):
    """Scalar Kalman filter + RTS smoother for x_t = x_{t-1} + N(0, q^2), y = x + N(0, r^2)."""
    m_f, p_f, m_p, p_p = np.zeros(steps), np.zeros(steps), np.zeros(steps), np.zeros(steps)
    log_lik = 0.0
    m, p = 0.0, s0**2
    for t in range(steps):
        if t > 0:
            p = p + q**2
        m_p[t], p_p[t] = m, p
        if t in obs_by_step:
            s = p + r**2
            log_lik += stats.norm.logpdf(obs_by_step[t], m, np.sqrt(s))
            k = p / s
            m, p = m + k * (obs_by_step[t] - m), (1 - k) * p
        m_f[t], p_f[t] = m, p
    m_s, p_s = m_f.copy(), p_f.copy()
    for t in range(steps - 2, -1, -1):
        g = p_f[t] / p_p[t + 1]
        m_s[t] = m_f[t] + g * (m_s[t + 1] - m_p[t + 1])
        p_s[t] = p_f[t] + g**2 * (p_s[t + 1] - p_p[t + 1])
    return log_lik, m_s, np.sqrt(p_s)


@pytest.mark.parametrize("name", ["brownian_smoothing_r", "brownian_bridge_r",
                                  "brownian_bridge_r_gym"])
def test_brownian_exact_posterior_matches_kalman_smoother(name):
    target = cached_target(name)
    observed = BRIDGE_30 if "bridge" in name else tuple(range(30))
    obs = np.asarray(target.observations["obs"], np.float64)
    log_lik, mean, sd = kalman_brownian(dict(zip(observed, obs)), steps=30, q=0.1, r=0.15,
                                        s0=0.1)
    exact = target.exact_posterior
    assert exact.covariance.shape == (30, 30)
    np.testing.assert_allclose(exact.log_marginal_likelihood, log_lik, rtol=1e-10)
    np.testing.assert_allclose([exact.mean[f"x{t}"] for t in range(30)], mean, atol=1e-10)
    np.testing.assert_allclose([exact.stddev[f"x{t}"] for t in range(30)], sd, rtol=1e-9)
    assert models.exact_log_marginal_likelihood(target) == exact.log_marginal_likelihood


def test_gym_brownian_bridge_log_marginal_likelihood():
    """peers.md: exact log p(y) = 5.6130 for inference_gym's Brownian bridge data."""
    target = cached_target("brownian_bridge_r_gym")
    np.testing.assert_allclose(np.asarray(target.observations["obs"]), GYM_BROWNIAN_OBS,
                               rtol=1e-7)
    assert round(models.exact_log_marginal_likelihood("brownian_bridge_r_gym"), 4) == 5.6130


@pytest.mark.parametrize("name", [
    "brownian_bridge_r", "binary_tree_linear_4",
    pytest.param("binary_tree_linear_8", marks=pytest.mark.slow)])
def test_exact_posterior_matches_laplace_expansion_of_the_model(x64, name):
    """For a Gaussian posterior, one Newton step from anywhere lands on the mean, the
    inverse negative Hessian is the covariance and the Laplace evidence is exact."""
    target = models.get_target(name, dtype=jnp.float64)
    exact = target.exact_posterior

    def log_joint(flat):
        return target.pinned_model.unnormalized_log_prob(unflatten_latents(target, flat))

    dim = exact.covariance.shape[0]
    x0 = jnp.zeros(dim, jnp.float64)
    grad, hess = jax.jit(lambda x: (jax.grad(log_joint)(x), jax.hessian(log_joint)(x)))(x0)
    mode = x0 - jnp.linalg.solve(hess, grad)
    sign, log_det = np.linalg.slogdet(-np.asarray(hess))
    assert sign > 0
    laplace = float(log_joint(mode)) + 0.5 * dim * np.log(2 * np.pi) - 0.5 * log_det
    np.testing.assert_allclose(exact.log_marginal_likelihood, laplace, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        np.asarray(flatten_latents(target, {k: jnp.asarray(v) for k, v in exact.mean.items()})),
        np.asarray(mode), atol=1e-9)
    np.testing.assert_allclose(exact.covariance, np.linalg.inv(-np.asarray(hess)),
                               rtol=1e-8, atol=1e-12)


def test_binary_tree_exact_evidence_matches_monte_carlo():
    target = cached_target("binary_tree_linear_4")
    y = float(target.observations["obs"][0])
    rng = np.random.default_rng(0)
    n = 200_000
    layer = 0.2 * rng.standard_normal((n, 8))
    for _ in range(2):
        loc = layer[:, 0::2] - layer[:, 1::2]
        layer = loc + 0.15 * rng.standard_normal(loc.shape)
    weights = stats.norm.pdf(y, layer[:, 0] - layer[:, 1], 0.15)
    estimate = np.log(weights.mean())
    standard_error = weights.std() / (weights.mean() * np.sqrt(n))
    exact = models.exact_log_marginal_likelihood(target)
    assert abs(estimate - exact) < 5 * standard_error + 1e-4


def test_eight_schools_exact_posterior():
    exact = cached_target("eight_schools").exact_posterior
    # peers.md: log p(y) = -36.1308, posterior sd(log tau) = 0.513.
    assert round(exact.log_marginal_likelihood, 4) == -36.1308
    assert round(float(exact.stddev["log_stddev"]), 3) == 0.513
    # Quadrature is converged: a coarser, wider grid agrees.
    coarse = models.eight_schools_exact_posterior(num_grid=801, grid_halfwidth=12.0)
    np.testing.assert_allclose(coarse.log_marginal_likelihood, exact.log_marginal_likelihood,
                               rtol=1e-10)
    np.testing.assert_allclose(coarse.covariance, exact.covariance, rtol=1e-8, atol=1e-10)
    # Monte Carlo over (avg_effect, log_stddev) with the school effects integrated out.
    rng = np.random.default_rng(0)
    n = 400_000
    mu = 10.0 * rng.standard_normal(n)
    log_tau = 5.0 + rng.standard_normal(n)
    scale = np.sqrt(EIGHT_SCHOOLS_SIGMA**2 + np.exp(2 * log_tau)[:, None])
    log_w = np.sum(stats.norm.logpdf(EIGHT_SCHOOLS_Y, mu[:, None], scale), axis=1)
    w = np.exp(log_w - log_w.max())
    estimate = np.log(w.mean()) + log_w.max()
    standard_error = w.std() / (w.mean() * np.sqrt(n))
    assert abs(estimate - exact.log_marginal_likelihood) < 5 * standard_error
    # Self-normalised importance estimates of the posterior moments of log_stddev.
    p = w / w.sum()
    ess = 1.0 / np.sum(p**2)
    mean_lt = np.sum(p * log_tau)
    sd_lt = np.sqrt(np.sum(p * (log_tau - mean_lt) ** 2))
    assert abs(mean_lt - exact.mean["log_stddev"]) < 5 * sd_lt / np.sqrt(ess)
    # The covariance is a valid covariance matrix with the reported marginal sds.
    assert np.all(np.linalg.eigvalsh(exact.covariance) > 0)
    np.testing.assert_allclose(np.sqrt(np.diag(exact.covariance))[:2],
                               [exact.stddev["avg_effect"], exact.stddev["log_stddev"]])


def test_exact_log_marginal_likelihood_errors():
    with pytest.raises(ValueError, match="lorenz_bridge_r"):
        models.exact_log_marginal_likelihood("lorenz_bridge_r")
    with pytest.raises(ValueError, match="brownian_bridge_c"):
        models.exact_log_marginal_likelihood(cached_target("brownian_bridge_c"))
    with pytest.raises(TypeError, match="BenchmarkTarget"):
        models.exact_log_marginal_likelihood(3.0)


def test_gaussian_helpers_against_scipy():
    rng = np.random.default_rng(0)
    b = np.tril(rng.standard_normal((5, 5)), -1)
    c, d = rng.standard_normal(5), rng.uniform(0.5, 2.0, 5)
    mean, cov = models.gaussian_network_moments(b, c, d)
    a = np.linalg.inv(np.eye(5) - b)
    samples = (a @ (c[:, None] + d[:, None] * rng.standard_normal((5, 200_000)))).T
    np.testing.assert_allclose(mean, a @ c, atol=1e-12)
    # Gaussian samples: Var(ĉov_ij) = (Σ_ii Σ_jj + Σ_ij²) / n; 5 standard errors per entry.
    n = samples.shape[0]
    standard_error = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / n)
    assert np.all(np.abs(np.cov(samples.T) - cov) <= 5 * standard_error)
    observed, values = [1, 3], rng.standard_normal(2)
    log_ev, post_mean, post_cov = models.condition_gaussian(mean, cov, observed, values)
    np.testing.assert_allclose(
        log_ev, stats.multivariate_normal(mean[observed], cov[np.ix_(observed, observed)])
        .logpdf(values), rtol=1e-12)
    # Conditioning on everything but one coordinate: compare with the precision form.
    precision = np.linalg.inv(cov)
    _, m1, c1 = models.condition_gaussian(mean, cov, [1, 2, 3, 4], rng.standard_normal(4))
    np.testing.assert_allclose(c1[0, 0], 1.0 / precision[0, 0], rtol=1e-10)
    with pytest.raises(ValueError, match="strictly lower"):
        models.gaussian_network_moments(np.eye(2), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="observed"):
        models.condition_gaussian(mean, cov, [7], np.zeros(1))


# ----------------------------------------------------------------------------- errors


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown target"):
        models.get_target("brownian")
    with pytest.raises(ValueError, match="seed"):
        models.get_target("eight_schools", seed=-1)
    with pytest.raises(ValueError, match="observation"):
        models.brownian_motion(observation="poisson")
    with pytest.raises(ValueError, match="observed_steps"):
        models.lorenz_system(5, observed_steps=[0, 5])
    with pytest.raises(ValueError, match="observed_steps"):
        models.van_der_pol(5, observed_steps=[3, 1])
    with pytest.raises(ValueError, match="observed_steps"):
        models.brownian_motion(5, observed_steps=[])
    with pytest.raises(ValueError, match="innovation_scale"):
        models.brownian_motion(innovation_scale=-1.0)
    with pytest.raises(TypeError, match="num_steps"):
        models.brownian_motion(3.5)
    with pytest.raises(ValueError, match="depth"):
        models.binary_tree(1)
    with pytest.raises(ValueError, match="link"):
        models.binary_tree(3, link="relu")
    with pytest.raises(ValueError, match="treatment_stddevs"):
        models.eight_schools(treatment_stddevs=[1.0, -2.0])
    with pytest.raises(TypeError, match="dtype"):
        models.brownian_motion(dtype=jnp.int32)
    if not jax.config.jax_enable_x64:
        with pytest.raises(ValueError, match="jax_enable_x64"):
            models.brownian_motion(dtype=jnp.float64)


# ----------------------------------------------------------------------------- inference_gym


def test_brownian_bridge_matches_inference_gym():
    gym = pytest.importorskip("inference_gym.using_jax")
    gym_target = gym.targets.BrownianMotionMissingMiddleObservations()
    target = cached_target("brownian_bridge_r_gym")
    x = np.random.default_rng(0).normal(scale=0.3, size=30).astype(np.float32)
    ours = target.pinned_model.unnormalized_log_prob({f"x{t}": x[t] for t in range(30)})
    theirs = gym_target.unnormalized_log_prob([jnp.asarray(v) for v in x])
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-5)
    # Our exact posterior against inference_gym's long-NUTS ground truth.
    transform = gym_target.sample_transformations["identity"]
    exact = target.exact_posterior
    np.testing.assert_allclose([exact.mean[f"x{t}"] for t in range(30)],
                               transform.ground_truth_mean, atol=3e-3)
    np.testing.assert_allclose([exact.stddev[f"x{t}"] for t in range(30)],
                               transform.ground_truth_standard_deviation, atol=3e-3)


def test_lorenz_bridge_matches_inference_gym():
    gym = pytest.importorskip("inference_gym.using_jax")
    gym_target = gym.targets.ConvectionLorenzBridge()
    target = cached_target("lorenz_bridge_r_gym")
    x = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    ours = target.pinned_model.unnormalized_log_prob({f"x{t}": x[t] for t in range(30)})
    theirs = gym_target.unnormalized_log_prob([jnp.asarray(v) for v in x])
    np.testing.assert_allclose(float(ours), float(theirs), rtol=1e-5)


def test_eight_schools_matches_inference_gym_by_change_of_variables():
    """inference_gym's model is centred: log p_nc(mu, lt, z, y) = log p_c(mu, lt, theta, y)
    + 8 lt with theta = mu + exp(lt) z."""
    gym = pytest.importorskip("inference_gym.using_jax")
    gym_target = gym.targets.EightSchools()
    target = cached_target("eight_schools")
    rng = np.random.default_rng(0)
    for _ in range(3):
        mu, lt = np.float32(rng.normal(scale=5.0)), np.float32(rng.normal(1.0, 1.0))
        z = rng.standard_normal(8).astype(np.float32)
        ours = target.pinned_model.unnormalized_log_prob(
            {"avg_effect": mu, "log_stddev": lt, "school_effects_std": z})
        theta = jnp.asarray(mu + np.exp(lt) * z)
        theirs = gym_target.unnormalized_log_prob(
            {"avg_effect": jnp.asarray(mu), "log_stddev": jnp.asarray(lt),
             "school_effects": theta})
        np.testing.assert_allclose(float(ours), float(theirs) + 8 * float(lt), rtol=1e-5)


# ----------------------------------------------------------------------------- cached NUTS


def test_cached_ground_truth_is_current():
    """The cached NUTS runs (benchmarks/ground_truth) still describe the current targets."""
    ground_truth = pytest.importorskip("benchmarks.ground_truth")
    # The paper targets' caches; the real suite's (benchmarks/real_models.py) are checked
    # against their own targets in tests/test_vi_benchmark.py.
    real = set(ground_truth.real_truth_sources())
    files = sorted(f for f in ground_truth.GROUND_TRUTH_DIR.glob("*.npz") if f.stem not in real)
    if not files:
        pytest.skip("no cached ground truth")
    for file in files:
        assert file.stat().st_size < 1_000_000, file
        truth = ground_truth.load_ground_truth(file.stem)
        target = cached_target(file.stem, truth.info["data_seed"])
        assert truth.info["description"] == target.description
        names = latent_names(target)
        assert list(truth.draws) == names
        for name, shape in zip(names, target.pinned_model.event_shape):
            assert truth.draws[name].shape[1:] == tuple(shape)
            assert truth.mean[name].shape == tuple(shape)
        assert truth.info["max_rhat"] < 1.05
        comparison = ground_truth.compare_with_exact(truth)
        if comparison is not None:
            # Max |z| over at most 254 coordinates: 5 is far in the tail of N(0, 1).
            assert comparison["max_mean_z"] < 5.0, (file.stem, comparison)
            assert comparison["max_sd_z"] < 5.0, (file.stem, comparison)
    with pytest.raises(FileNotFoundError, match="python -m benchmarks.ground_truth"):
        ground_truth.load_ground_truth("no_such_target")
