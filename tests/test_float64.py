"""float64 end to end (`jax_enable_x64`) with explicit dtypes: layer, VI and density fits."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tensorflow_probability.substrates import jax as tfp

import emf_jax

tfd = tfp.distributions
F64 = jnp.float64
# The bound for float64 round trips; float32 would fail it by five orders of magnitude.
ROUND_TRIP_TOL = 1e-9


def _c(value):
    return jnp.asarray(value, F64)


def _pinned_chain_model():
    """A log-normal scale and a 5-step chain (one MarkovChain variable), both ends observed."""
    def program():
        scale = yield tfd.LogNormal(_c(-1.0), _c(0.5), name="scale")
        x = yield tfd.MarkovChain(tfd.Normal(_c(0.0), scale),
                                  lambda _, x: tfd.Normal(x, scale), 5, name="x")
        yield tfd.Independent(tfd.Normal(x[..., jnp.array([0, 4])], _c(0.2)), 1, name="obs")

    model = tfd.JointDistributionCoroutineAutoBatched(program)
    return model.experimental_pin(obs=_c([0.4, -0.3]))


def _assert_float64(tree, what):
    for leaf in jax.tree.leaves(tree):
        assert jnp.asarray(leaf).dtype == F64, f"{what}: got {jnp.asarray(leaf).dtype}"
        assert bool(jnp.all(jnp.isfinite(leaf))), f"{what}: non-finite values"


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_fit_vi_and_the_structured_layer_in_float64(x64):
    pinned = _pinned_chain_model()
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        pinned, hidden_units=(8,))
    params = init_fn(jax.random.key(1))
    _assert_float64(params, "initial surrogate parameters")
    result = emf_jax.fit_vi(pinned.unnormalized_log_prob, build_fn, params,
                            optimizer=optax.adam(1e-2), num_steps=30, sample_size=4, seed=0,
                            chunk_size=30, progress_bar=False)
    _assert_float64((result.params, result.losses), "fit_vi results")
    assert result.num_nonfinite == 0

    layer_init, layer_build = emf_jax.build_structured_layer_stateless(pinned)
    _assert_float64(layer_init(None), "initial gates")
    gates = {"gates": {"scale": _c(0.3), "x": _c(-0.8)}}  # far from the identity

    @jax.jit
    def check(p, key):
        surrogate = build_fn(p)
        draws, log_q = surrogate.experimental_sample_and_log_prob(16, seed=key)
        layer = layer_build(gates)
        noise = layer.noise_distribution().sample(8, seed=key)
        values, log_det = layer.forward_and_log_det(noise)
        back, inverse_log_det = layer.inverse_and_log_det(values)
        return (draws, log_q, surrogate.log_prob(draws)), (noise, back, log_det,
                                                           inverse_log_det)

    (draws, log_q, log_q_inverted), layer_out = check(result.params, jax.random.key(2))
    _assert_float64((draws, log_q, log_q_inverted), "surrogate draws and densities")
    _assert_float64(layer_out, "structured layer outputs")
    assert np.all(np.asarray(draws.scale) > 0)
    # log q through the inverse flow equals the forward pass's: the inversion round trips
    # (a log-density of a few units; 1e3 ulps-scale slack for the sums of 6 terms).
    np.testing.assert_allclose(log_q_inverted, log_q, rtol=0, atol=1e3 * ROUND_TRIP_TOL)
    noise, back, log_det, inverse_log_det = layer_out
    assert _max_diff(back, noise) <= ROUND_TRIP_TOL
    np.testing.assert_allclose(log_det, -inverse_log_det, rtol=0, atol=ROUND_TRIP_TOL)


def test_fit_density_in_float64(x64):
    """A MAF-backed GEMF-T density (with a chain variable) fitted to float64 rows."""
    def program():
        a = yield tfd.Normal(_c(0.0), _c(1.0), name="a")
        yield tfd.MarkovChain(tfd.Normal(jnp.sin(2.0 * a), _c(0.3)),
                              lambda _, x: tfd.Normal(0.8 * x, _c(0.3)), 3, name="b")

    model = tfd.JointDistributionCoroutineAutoBatched(program)
    data = model.sample(200, seed=jax.random.key(3))
    _assert_float64(data, "data")
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        model, backbone="maf", hidden_units=(8,))
    result = emf_jax.fit_density(build_fn, init_fn(jax.random.key(4)), data,
                                 optimizer=optax.adam(1e-2), num_steps=30, batch_size=50,
                                 seed=0, chunk_size=30, progress_bar=False)
    _assert_float64((result.params, result.losses), "fit_density results")
    assert float(result.losses[-5:].mean()) < float(result.losses[:5].mean())

    flow = build_fn(result.params).flow

    @jax.jit
    def round_trip(p, values):
        z, _ = flow.inverse_and_log_det(p, values)
        return flow.forward_and_log_det(p, z)[0]

    rows = jax.tree.map(lambda v: v[:20], data)
    back = round_trip(result.params, rows)
    _assert_float64(back, "density round trip")
    assert _max_diff(back, rows) <= ROUND_TRIP_TOL
