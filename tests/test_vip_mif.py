"""The "vip", "mif" and "gemf-vip" architectures (emf_jax.reparam): the bijector property
suite, their starting points, the support, and that every parameter learns."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorflow_probability.substrates import jax as tfp

import emf_jax
from emf_jax.architectures import build_embedded_flow
from emf_jax.reparam import build_reparam_layer
from tests.bijector_checks import check_bijection

tfd = tfp.distributions
KINDS = ("vip", "mif")
# The architectures built on `emf_jax.reparam` ("gemf-vip": a backbone under gated VIP).
ARCHITECTURES = KINDS + ("gemf-vip",)
# gemf-vip's default property check is the one where its gates act (HalfNormal: the fallback
# map) in float32 under jit; the rest of its grid runs under `-m slow` (compile time).
_SLOW = pytest.mark.slow


def _suite_params(families, modes):
    for kind in ARCHITECTURES:
        for family in families:
            for mode in modes:
                default = kind in KINDS or (family == "HalfNormal" and mode == "jit")
                yield pytest.param(kind, family, mode, id=f"{kind}-{family}-{mode}",
                                   marks=() if default else (_SLOW,))
EFFECTS = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
STDDEVS = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


def _eight_schools_centred(dtype, scale_family="HalfNormal", pinned=True):
    """Eight Schools, centred: theta_j ~ N(mu, tau); tau HalfNormal (a closed-form quantile:
    the fallback map) or LogNormal (affine in log space: VIP centres it too). Unpinned: the
    prior alone (no y)."""
    c = lambda v: jnp.asarray(v, dtype)  # noqa: E731

    def program():
        mu = yield tfd.Normal(c(0.0), c(5.0), name="mu")
        if scale_family == "HalfNormal":
            tau = yield tfd.HalfNormal(c(5.0), name="tau")
        else:
            tau = yield tfd.LogNormal(c(1.0), c(1.0), name="tau")
        theta = yield tfd.Sample(tfd.Normal(mu, tau), 8, name="theta")
        if pinned:
            yield tfd.Independent(tfd.Normal(theta, c(STDDEVS)), 1, name="y")

    model = tfd.JointDistributionCoroutineAutoBatched(program)
    return model.experimental_pin(y=c(EFFECTS)) if pinned else model


def _perturbed(params, key, scale):
    """Every parameter moved off its initial value (MIF's output layers start at zero, VIP's
    centrings at 0.5), so the checks exercise nontrivial maps."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten([leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype)
                              for leaf, k in zip(leaves, keys)])


def _flat(values):
    return jnp.concatenate([jnp.ravel(v) for v in jax.tree.leaves(values)])


@pytest.mark.parametrize("kind,family,mode", list(_suite_params(
    ["HalfNormal", "LogNormal"], ["jit", "eager"])))
def test_property_suite_float32(kind, family, mode):
    _check_property_suite(kind, family, jnp.float32, mode == "jit")


@pytest.mark.parametrize("kind,family", [
    ("vip", "LogNormal"), ("mif", "LogNormal"),
    pytest.param("gemf-vip", "HalfNormal", marks=_SLOW)])
def test_property_suite_float64(kind, family, x64):
    _check_property_suite(kind, family, jnp.float64, use_jit=True)


def _check_property_suite(kind, family, dtype, use_jit):
    # Round trip (1e-4 float32 / 1e-9 float64) and log|det| against slogdet(jacfwd) (2e-3 /
    # 1e-8): the shared bounds of tests/bijector_checks.py.
    flow = build_embedded_flow(_eight_schools_centred(dtype, family), architecture=kind,
                               hidden_units=(8,))
    # 0.1: trained-looking magnitudes. At 0.3 MIF's theta reaches 1e3 and float32
    # cancellation in (ε' − a)/σ alone exceeds the round-trip bound.
    params = _perturbed(flow.init(jax.random.key(0)), jax.random.key(1), scale=0.1)
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == dtype
    forward = lambda z: flow.forward_and_log_det(params, z)[0]  # noqa: E731
    inverse = lambda x: flow.inverse_and_log_det(params, x)[0]  # noqa: E731
    z = 0.7 * jax.random.normal(jax.random.key(2), (flow.event_size,), dtype)
    others = [0.7 * jax.random.normal(jax.random.key(3), (flow.event_size,), dtype)]
    check_bijection(forward, inverse, lambda z: flow.forward_and_log_det(params, z)[1], z,
                    inverse_log_det=lambda x: flow.inverse_and_log_det(params, x)[1],
                    use_jit=use_jit, extra_inputs=others)


@pytest.mark.parametrize("kind", KINDS)
def test_samples_land_in_the_support_and_keep_the_return_shape(kind):
    model = _eight_schools_centred(jnp.float32, "HalfNormal")
    # The paper's start with an elementwise base: the perturbation below is sized for it (a
    # perturbed full-rank base spreads tau past float32's range).
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        model, architecture=kind, hidden_units=(8,), warm_start_steps=0, full_rank_base=False)
    # Perturbed parameters move u well away from the prior's map (tau's draws span orders of
    # magnitude): the support stage must still hold. (Far larger ones make float32 tau
    # underflow to exactly 0: HalfNormal's quantile map rounds Φ(ε') to 0 below ε' ≈ −13.)
    params = _perturbed(init_fn(jax.random.key(0)), jax.random.key(1), scale=0.25)
    draws, log_q = jax.jit(lambda k: build_fn(params).experimental_sample_and_log_prob(
        256, seed=k))(jax.random.key(2))
    assert bool(jnp.all(draws.tau > 0)), "tau left its support"
    assert float(jnp.max(draws.tau) / jnp.min(draws.tau)) > 10.0
    assert draws.theta.shape == (256, 8) and log_q.shape == (256,)
    assert bool(jnp.all(jnp.isfinite(log_q)))
    # The surrogate's density of its own draws is the one it reported (float32: 1e-3 of the
    # magnitude, a few ulps of sums over 10 coordinates). Only where tau > 1e-2: in the
    # funnel's neck theta = mu + tau·(...) is rounded to mu's float32 spacing (~4e-6 at
    # |mu| ~ 50), so the noise recovered from theta has error ~ spacing / (tau · σ), σ ≥
    # 1e-3 (MIF's floor): beyond the 1e-3 bound for tau below ~1e-2, for any architecture.
    keep = np.asarray(draws.tau) > 1e-2
    assert keep.sum() > 100
    np.testing.assert_allclose(np.asarray(build_fn(params).log_prob(draws))[keep],
                               np.asarray(log_q)[keep], rtol=1e-3, atol=1e-3)


def test_mif_starts_exactly_at_the_prior():
    # Zero output layers: m_i = f_i, s_i = g_i, t_i = 0, so q is the prior (unpinned model,
    # base at the identity): log q(x) = log p(x) up to float32 rounding.
    model = _eight_schools_centred(jnp.float32, "HalfNormal", pinned=False)
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        model, architecture="mif", hidden_units=(8,))
    q = build_fn(init_fn(jax.random.key(0)))
    x = model.sample(64, seed=jax.random.key(1))
    np.testing.assert_allclose(q.log_prob(x) - model.log_prob(x), 0.0, atol=1e-3)


def test_vip_centring_one_and_zero_are_the_two_parameterisations():
    model = _eight_schools_centred(jnp.float32, "LogNormal", pinned=False)
    trace = emf_jax.trace_model(model)
    layer = build_reparam_layer("vip", lambda _: model, trace)
    assert layer.centred == ("mu", "tau", "theta")
    noise = [jnp.asarray(0.3), jnp.asarray(-0.2), jnp.linspace(-1.0, 1.0, 8)]
    big = {n: jnp.full(jnp.shape(e), 40.0) for n, e in zip(trace.latent_names, noise)}
    u, log_det = layer.forward_parts_and_log_det(big, None, noise)       # λ = 1: centred
    for a, b in zip(u, noise):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert abs(float(log_det)) < 1e-5
    small = jax.tree.map(lambda w: -w, big)                                # λ = 0: non-centred
    u, log_det = layer.forward_parts_and_log_det(small, None, noise)
    mu = 5.0 * 0.3
    log_tau = 1.0 - 0.2
    np.testing.assert_allclose(u[0], mu, rtol=1e-6)
    np.testing.assert_allclose(u[1], log_tau, rtol=1e-6)
    np.testing.assert_allclose(u[2], mu + np.exp(log_tau) * noise[2], rtol=1e-5)
    # log|det| = log 5 + log 1 + 8 log tau.
    np.testing.assert_allclose(log_det, np.log(5.0) + 8 * log_tau, rtol=1e-5)


# About 25 s each on a CI core; tests/test_learning.py covers vip and mif by default.
@pytest.mark.slow
@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_the_elbo_improves_and_every_parameter_learns(kind):
    model = _eight_schools_centred(jnp.float32, "HalfNormal")
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        model, architecture=kind, hidden_units=(8,), warm_start_steps=0)
    params = init_fn(jax.random.key(0))
    result = emf_jax.fit_vi(model.unnormalized_log_prob, build_fn, params,
                            optimizer=optax.adam(1e-2), num_steps=200, sample_size=4, seed=0,
                            chunk_size=200, progress_bar=False)

    def log_ratios(p, key, n):
        x, log_q = build_fn(p).experimental_sample_and_log_prob(n, seed=key)
        return log_q - model.unnormalized_log_prob(x)

    def neg_elbo(p, key, n):
        return jnp.mean(log_ratios(p, key, n))

    evaluate = jax.jit(lambda p: log_ratios(p, jax.random.key(5), 20000))
    before, after = np.asarray(evaluate(params)), np.asarray(evaluate(result.params))
    # -ELBO estimates from 20000 draws each (the start's log-ratios are heavy-tailed): the
    # gain must exceed 4 standard errors of the difference (independent draws), i.e. it is
    # not Monte Carlo noise.
    sem = np.hypot(before.std() / np.sqrt(before.size), after.std() / np.sqrt(after.size))
    assert after.mean() < before.mean() - 4 * sem, (before.mean(), after.mean(), sem)
    grads = jax.grad(neg_elbo)(result.params, jax.random.key(6), 64)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert bool(jnp.any(g != 0)), f"no gradient reaches {jax.tree_util.keystr(path)}"
    backbone = {"backbone"} if kind == "gemf-vip" else set()
    expected = {"base", "reparam", "structured"} | backbone
    assert set(grads) == expected


def test_gated_vip_gates_the_fallback_map_and_centres_the_rest():
    # tau (HalfNormal: a quantile map) gets a gate, mu and theta VIP's centrings. Gate 1:
    # plain VIP (the fallback map, ungated); gate 0: tau's noise is its unconstrained value.
    model = _eight_schools_centred(jnp.float32, "HalfNormal", pinned=False)
    trace = emf_jax.trace_model(model)
    vip = build_reparam_layer("vip", lambda _: model, trace)
    gated = build_reparam_layer("gated_vip", lambda _: model, trace)
    assert gated.centred == vip.centred == ("mu", "theta")
    params = gated.init(None)
    assert set(params) == {"mu", "tau", "theta"} and params["tau"].shape == ()
    assert float(params["tau"]) == 0.0        # λ = 0.5, like the centrings
    noise = [jnp.asarray(0.3), jnp.asarray(-0.2), jnp.linspace(-1.0, 1.0, 8)]
    centrings = {"mu": jnp.asarray(0.4), "theta": jnp.full((8,), -0.7)}
    u_vip, ld_vip = vip.forward_parts_and_log_det(centrings, None, noise)
    u_one, ld_one = gated.forward_parts_and_log_det(dict(centrings, tau=jnp.asarray(40.0)),
                                                    None, noise)
    for a, b in zip(u_one, u_vip):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(ld_one, ld_vip, rtol=1e-6)
    u_zero, _ = gated.forward_parts_and_log_det(dict(centrings, tau=jnp.asarray(-40.0)),
                                                None, noise)
    np.testing.assert_allclose(u_zero[1], noise[1], atol=1e-6)
    assert abs(float(u_vip[1] - noise[1])) > 0.1   # the two ends differ: a real check


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_a_markov_chain_latent_is_refused_by_name(kind):
    chain = tfd.JointDistributionNamed(dict(
        x=tfd.MarkovChain(tfd.Normal(0.0, 1.0), lambda _, x: tfd.Normal(x, 0.5), 4)))
    with pytest.raises(NotImplementedError, match="variable 'x' is a MarkovChain"):
        build_embedded_flow(chain, architecture=kind, hidden_units=(4,))
