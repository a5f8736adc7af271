"""EMF surrogate posteriors: every architecture builds, samples the model's structure, has a
consistent density, and takes finite fitting steps inside TFP's stateless fit under jit."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorflow_probability.substrates import jax as tfp

import emf_jax
from emf_jax.architectures import ARCHITECTURES
from tests import structured_models as sm
from tests.bijector_checks import check_bijection

tfd = tfp.distributions
SMALL = dict(hidden_units=(8,), num_backbone_layers=2)


def scalar_model(dtype=jnp.float32):
    def program():
        mu = yield tfd.Normal(jnp.asarray(0.0, dtype), 1.0, name="mu")
        yield tfd.Normal(mu, jnp.asarray(0.5, dtype), name="y")
    return tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(
        y=jnp.asarray(0.8, dtype))


MODELS = {
    "scalar_pinned": lambda: scalar_model(),
    "vector": lambda: sm.vector_valued(jnp.float32),
    "constrained": lambda: sm.constrained(jnp.float32),
    "pinned_hierarchical": lambda: sm.pinned_hierarchical(jnp.float32),
}


def _reference_sample(model, shape, seed):
    if hasattr(model, "sample_unpinned"):
        return model.sample_unpinned(shape, seed=seed)
    return model.sample(shape, seed=seed)


def _grid():
    # The constrained model (numeric Gamma/Beta maps) compiles slowly: by default it runs with
    # the top and flow architectures, every other pairing under `-m slow`.
    for model_name in sorted(MODELS):
        for architecture in sorted(ARCHITECTURES):
            slow = model_name == "constrained" and architecture not in ("gemf-t", "flow")
            yield pytest.param(architecture, model_name, id=f"{model_name}-{architecture}",
                               marks=(pytest.mark.slow,) if slow else ())


@pytest.mark.parametrize("architecture,model_name", list(_grid()))
def test_samples_have_the_latent_structure_and_a_consistent_density(architecture, model_name):
    model = MODELS[model_name]()
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        model, architecture=architecture, **SMALL)
    params = init_fn(jax.random.key(0))
    # Perturb every parameter so the backbone is not the identity.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(treedef, [
        leaf + 0.1 * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)])

    @jax.jit
    def sample_and_densities(p, seed):
        q = build_fn(p)
        x, log_q = q.experimental_sample_and_log_prob(6, seed=seed)
        return x, log_q, q.log_prob(x)

    x, log_q, log_q_again = sample_and_densities(params, jax.random.key(2))
    reference = _reference_sample(model, (6,), jax.random.key(3))
    assert jax.tree.structure(x) == jax.tree.structure(reference)
    for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(reference)):
        assert a.shape == b.shape and a.dtype == b.dtype
    np.testing.assert_allclose(log_q, log_q_again, rtol=1e-4, atol=1e-3)
    if model_name == "constrained":
        assert jnp.all(x.rate > 0) and jnp.all(x.scale > 0)
        assert jnp.all((x.p > 0) & (x.p < 1))


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_embedded_flow_is_a_bijection_with_the_right_log_det(architecture):
    flow = emf_jax.architectures.build_embedded_flow(
        sm.pinned_hierarchical(jnp.float32), architecture=architecture, **SMALL)
    params = flow.init(jax.random.key(0))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(treedef, [
        leaf + 0.2 * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)])
    z = jax.random.normal(jax.random.key(2), (flow.event_size,))
    check_bijection(
        lambda v: flow.forward_and_log_det(params, v)[0],
        lambda x: flow.inverse_and_log_det(params, x)[0],
        lambda v: flow.forward_and_log_det(params, v)[1],
        z, inverse_log_det=lambda x: flow.inverse_and_log_det(params, x)[1])


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_fit_surrogate_posterior_stateless_takes_finite_steps(architecture):
    pinned = sm.pinned_hierarchical(jnp.float32)
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        pinned, architecture=architecture, **SMALL)

    @jax.jit
    def fit(key):
        return tfp.vi.fit_surrogate_posterior_stateless(
            pinned.unnormalized_log_prob, build_fn, init_fn(key), optax.adam(1e-2),
            num_steps=30, sample_size=8, seed=key)

    params, losses = fit(jax.random.key(0))
    assert losses.shape == (30,)
    assert jnp.all(jnp.isfinite(losses))
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(params))


def test_gemf_t_starts_at_the_prior_and_improves_the_elbo_on_a_conjugate_model():
    """With a Normal-Normal model the posterior is exact: the ELBO must approach log p(y).

    The paper's start (gate 0.999, no warm start), so that the fit has ground to cover."""
    pinned = scalar_model()
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        pinned, architecture="gemf-t", hidden_units=(16,), initial_gate=0.999,
        warm_start_steps=0)
    result = emf_jax.fit_vi(pinned.unnormalized_log_prob, build_fn, init_fn(jax.random.key(0)),
                            optimizer=optax.adam(1e-2), num_steps=600, sample_size=16,
                            seed=0, progress_bar=False)
    x, log_q = build_fn(result.params).experimental_sample_and_log_prob(
        4000, seed=jax.random.key(1))
    elbo_samples = pinned.unnormalized_log_prob(x) - log_q
    # Exact evidence: y ~ N(0, 1 + 0.25).
    log_evidence = tfd.Normal(0.0, jnp.sqrt(1.25)).log_prob(0.8)
    elbo = jnp.mean(elbo_samples)
    standard_error = jnp.std(elbo_samples) / jnp.sqrt(4000.0)
    assert elbo <= log_evidence + 4 * standard_error
    assert elbo >= log_evidence - 0.02
    x0, log_q0 = build_fn(init_fn(jax.random.key(0))).experimental_sample_and_log_prob(
        4000, seed=jax.random.key(1))
    assert jnp.mean(pinned.unnormalized_log_prob(x0) - log_q0) < elbo


def test_the_default_warm_start_begins_near_the_evidence_on_a_conjugate_model():
    """The warm start's Gaussian pilot already finds the exact (Gaussian) posterior: its
    initial ELBO is within 0.05 nats of log p(y), where the prior start is 0.3 nats below."""
    pinned = scalar_model()
    log_evidence = float(tfd.Normal(0.0, jnp.sqrt(1.25)).log_prob(0.8))

    def initial_elbo(**options):
        init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
            pinned, architecture="gemf-t", hidden_units=(8,), **options)
        q = build_fn(jax.jit(init_fn)(jax.random.key(0)))
        x, log_q = q.experimental_sample_and_log_prob(4000, seed=jax.random.key(1))
        return float(jnp.mean(pinned.unnormalized_log_prob(x) - log_q))

    # KL(prior || posterior) here is 0.28 nats; 4000 draws put the estimates within 0.01.
    assert initial_elbo() >= log_evidence - 0.05
    assert initial_elbo(initial_gate=0.999, warm_start_steps=0) < log_evidence - 0.2


def test_unknown_architecture_and_backbone_errors():
    pinned = scalar_model()
    with pytest.raises(ValueError, match="unknown architecture 'gemf-x'"):
        emf_jax.build_emf_surrogate_posterior_stateless(pinned, architecture="gemf-x")
    with pytest.raises(ValueError, match="unknown backbone 'glow'"):
        emf_jax.build_emf_surrogate_posterior_stateless(pinned, backbone="glow")
    with pytest.raises(ValueError, match="needs num_backbone_layers >= 2"):
        emf_jax.build_emf_surrogate_posterior_stateless(
            pinned, architecture="gemf-m", num_backbone_layers=1)


def test_non_finite_draws_are_masked_and_all_non_finite_steps_skipped():
    pinned = scalar_model()
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(pinned, **SMALL)

    # Some draws NaN (mu > 1, about a sixth of them): left out of the average and counted,
    # no step skipped (all 4 draws NaN has probability about 0.16^4 per step).
    def flaky_target(mu):
        return jnp.where(mu > 1.0, jnp.nan, pinned.unnormalized_log_prob(mu))

    with pytest.warns(RuntimeWarning, match="of draws"):
        result = emf_jax.fit_vi(flaky_target, build_fn, init_fn(jax.random.key(0)),
                                optimizer=optax.adam(1e-3), num_steps=40, sample_size=4,
                                seed=0, progress_bar=False)
    assert result.num_nonfinite_draws > 0
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(result.params))

    # A target NaN everywhere: every draw of every step is left out, so every step is skipped.
    def broken_target(mu):
        return jnp.full(jnp.shape(mu), jnp.nan)

    with pytest.warns(RuntimeWarning, match="skipped"):
        result = emf_jax.fit_vi(broken_target, build_fn, init_fn(jax.random.key(0)),
                                optimizer=optax.adam(1e-3), num_steps=5, sample_size=4,
                                seed=0, progress_bar=False)
    assert result.num_nonfinite == 5 and result.num_nonfinite_draws == 20
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(result.params))


@pytest.mark.parametrize("architecture", ["gemf-t", "gemf-m"])
def test_the_whole_surrogate_is_a_drop_in_bijector_for_neutra_hmc(architecture):
    model = MODELS["pinned_hierarchical"]()
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        model, architecture=architecture, **SMALL)
    params = init_fn(jax.random.key(0))
    leaves, treedef = jax.tree.flatten(params)
    params = jax.tree.unflatten(treedef, [
        leaf + 0.1 * jax.random.normal(jax.random.key(i), leaf.shape, leaf.dtype)
        for i, leaf in enumerate(leaves)])
    surrogate = build_fn(params)
    bijector = surrogate.bijector
    size = surrogate.flow.event_size

    @jax.jit
    def check(z):
        values = bijector.forward([z])
        pushed = tfd.TransformedDistribution(surrogate.noise_distribution, bijector)
        return (values, bijector.inverse(values)[0], pushed.log_prob(values),
                surrogate.log_prob(values))

    z = jax.random.normal(jax.random.key(1), (5, size))
    values, z_again, log_pushed, log_q = check(z)
    assert jax.tree.structure(values) == jax.tree.structure(
        model.sample_unpinned(seed=jax.random.key(2)))
    np.testing.assert_allclose(z_again, z, atol=2e-4)
    np.testing.assert_allclose(log_pushed, log_q, atol=2e-3, rtol=1e-4)

    # HMC on the noise through TFP's TransformedTransitionKernel: its states are the model's
    # values, pushed through the flow from the noise it moves. The chain starts from noise
    # (`transformed_init_state`, TFP's documented way when the state changes structure).
    kernel = tfp.mcmc.TransformedTransitionKernel(
        tfp.mcmc.HamiltonianMonteCarlo(model.unnormalized_log_prob, step_size=0.1,
                                       num_leapfrog_steps=3), bijector=bijector)
    draws, accepted = jax.jit(lambda seed: tfp.mcmc.sample_chain(
        num_results=20, current_state=bijector.forward([jnp.zeros((2, size))]), kernel=kernel,
        previous_kernel_results=kernel.bootstrap_results(
            transformed_init_state=[jnp.zeros((2, size))]),
        trace_fn=lambda _, r: r.inner_results.is_accepted, seed=seed))(jax.random.key(3))
    assert jax.tree.structure(draws) == jax.tree.structure(values)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(draws))
    assert 0.0 < float(jnp.mean(accepted)) <= 1.0
