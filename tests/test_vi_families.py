"""VI on models with the structured families: GEMF-T against mean field at an equal budget.

Each test fits GEMF-T (`build_emf_surrogate_posterior_stateless` + `fit_vi`, small networks)
and the mean-field Gaussian baseline with the same optimizer, steps and Monte Carlo sample
size, then estimates both ELBOs from the same number of fresh draws. GEMF-T must reach a
finite ELBO above mean field's by more than 3 standard errors of the difference (the two
estimates are independent means of ``M`` draws: ``se = sqrt(var_a/M + var_b/M)``). A
non-finite mean-field ELBO counts as −∞ (its fit failed).

On the Dirichlet mixture-weight model GEMF-T used to lose to mean field from the paper's
start (every gate 0.999; measured: 300 steps, 40 observations: GEMF-T −80.52, mean field
−79.35). From the default start (gate candidates 0.5 / 0.01 and a Gaussian warm start,
`emf_jax.initialization`) it wins (measured: −78.56 ± 0.01 against −79.34 ± 0.02, CPU,
float32, the settings of the test below), so that comparison is now an ordinary test.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tensorflow_probability.substrates import jax as tfp

import emf_jax
from emf_jax.baselines import build_mean_field_surrogate_stateless

tfd = tfp.distributions
psd = tfp.math.psd_kernels
Root = tfd.JointDistributionCoroutine.Root
EVAL_DRAWS = 4000


def _elbo_draws(target, q, seed):
    x, log_q = q.experimental_sample_and_log_prob(EVAL_DRAWS, seed=seed)
    return target(*x) - log_q


def _fit(pinned, init, build, *, num_steps, learning_rate, sample_size=8):
    """ELBO draws at the initial and at the fitted parameters."""
    target = pinned.unnormalized_log_prob
    params = init(jax.random.key(0))
    fit = emf_jax.fit_vi(target, build, params, optimizer=optax.adam(learning_rate),
                         num_steps=num_steps, seed=1, sample_size=sample_size,
                         chunk_size=num_steps, progress_bar=False)
    draws = jax.jit(lambda p: _elbo_draws(target, build(p), jax.random.key(2)))
    return np.asarray(draws(params), np.float64), np.asarray(draws(fit.params), np.float64)


def _gemf_t(pinned):
    return emf_jax.build_emf_surrogate_posterior_stateless(
        pinned, hidden_units=(16,), num_backbone_layers=2)


def _fit_and_compare(pinned, *, num_steps, learning_rate):
    _, gemf = _fit(pinned, *_gemf_t(pinned), num_steps=num_steps,
                   learning_rate=learning_rate)
    _, mf = _fit(pinned, *build_mean_field_surrogate_stateless(pinned, initial_loc_radius=0.0),
                 num_steps=num_steps, learning_rate=learning_rate)
    assert np.all(np.isfinite(gemf)), "GEMF-T's ELBO draws are not finite"
    if not np.all(np.isfinite(mf)):
        return gemf.mean(), -np.inf
    se = np.sqrt(gemf.var() / gemf.size + mf.var() / mf.size)
    assert gemf.mean() - mf.mean() > 3 * se, (gemf.mean(), mf.mean(), se)
    return gemf.mean(), mf.mean()


def _dirichlet_mixture():
    """Mixture weights ~ Dirichlet(1, 1, 1) and a common scale; 40 observations."""
    locs = jnp.array([-2.0, 0.0, 2.0])
    rng = np.random.default_rng(0)
    component = rng.choice(3, size=40, p=[0.6, 0.3, 0.1])
    y = jnp.asarray(rng.normal(np.asarray(locs)[component], 0.7), jnp.float32)

    def program():
        weights = yield Root(tfd.Dirichlet(jnp.ones(3), name="weights"))
        scale = yield Root(tfd.HalfNormal(1.0, name="scale"))
        yield tfd.Sample(tfd.MixtureSameFamily(tfd.Categorical(probs=weights),
                                               tfd.Normal(locs, scale)), 40, name="y")

    return tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(y=y)


def test_dirichlet_mixture_weights_gemf_t_beats_mean_field():
    """Dirichlet(1, 1, 1) mixture weights: GEMF-T's ELBO after 300 steps is finite and above
    mean field's by more than 3 standard errors."""
    _fit_and_compare(_dirichlet_mixture(), num_steps=300, learning_rate=1e-2)


def test_gaussian_process_with_lognormal_kernel_parents_gemf_t_beats_mean_field():
    """A log-Gaussian Cox-like model: GP latent (amplitude and length scale LogNormal),
    Poisson counts at 8 points."""
    x = np.linspace(0.0, 1.0, 8).astype(np.float32)
    counts = jnp.asarray([1.0, 3.0, 6.0, 4.0, 2.0, 0.0, 1.0, 5.0])

    def program():
        amplitude = yield Root(tfd.LogNormal(0.0, 0.5, name="amplitude"))
        length_scale = yield Root(tfd.LogNormal(-1.5, 0.5, name="length_scale"))
        f = yield tfd.GaussianProcess(psd.ExponentiatedQuadratic(amplitude, length_scale),
                                      index_points=x[:, None], jitter=1e-5, name="f")
        yield tfd.Independent(tfd.Poisson(log_rate=f), 1, name="counts")

    pinned = tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(
        counts=counts)
    _fit_and_compare(pinned, num_steps=300, learning_rate=1e-2)
