"""The MarkovChain map: the shared bijector properties, the structured layer, and scaling."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorflow_probability.substrates import jax as tfp

import emf_jax
from emf_jax.apply import _chain_scan, _step_inverse, apply_forward, apply_inverse
from emf_jax.transforms import transform_for
from emf_jax.transforms.markov_chain import ChainTransform
from tests.bijector_checks import check_bijection

tfd = tfp.distributions
Root = tfd.JointDistributionCoroutine.Root
NUM_STEPS = 5


def _c(value, dtype):
    return jnp.asarray(value, dtype)


def _align(step, x):
    """`step` broadcast against the state: TFP's log_prob passes all steps at once."""
    step = jnp.asarray(step)
    return jnp.reshape(step, step.shape + (1,) * (x.ndim - step.ndim))


# name -> fn(dtype) -> a chain of NUM_STEPS steps whose transition depends on the state.
CHAINS = {
    "scalar_normal": lambda d: tfd.MarkovChain(
        tfd.Normal(_c(0.3, d), _c(1.0, d)),
        lambda _, x: tfd.Normal(0.8 * x + 0.1, _c(0.5, d)), NUM_STEPS),
    "vector_normal": lambda d: tfd.MarkovChain(
        tfd.MultivariateNormalDiag(_c([0.0, 1.0], d), _c([1.0, 0.5], d)),
        lambda _, x: tfd.MultivariateNormalTriL(
            jnp.tanh(x) + x[..., ::-1] * 0.3, _c([[0.7, 0.0], [0.2, 0.4]], d)), NUM_STEPS),
    "batched_normal": lambda d: tfd.MarkovChain(
        tfd.Normal(_c([0.0, 1.0, -1.0], d), _c(1.0, d)),
        lambda step, x: tfd.Normal(x + 0.1 * _align(step, x).astype(d), _c(0.3, d)),
        NUM_STEPS),
    # Positive states: the log-normal map (affine, then Exp) and a monotone map (HalfNormal).
    "lognormal": lambda d: tfd.MarkovChain(
        tfd.LogNormal(_c(0.0, d), _c(0.5, d)),
        lambda _, x: tfd.LogNormal(0.5 * jnp.log(x), _c(0.3, d)), NUM_STEPS),
    "half_normal": lambda d: tfd.MarkovChain(
        tfd.HalfNormal(_c(1.0, d)), lambda _, x: tfd.HalfNormal(0.5 + x), NUM_STEPS),
}


def _gate(name, t, kind, dtype):
    if kind == "ungated":
        return None
    if kind == "shared":
        return _c(-0.7, dtype)
    return jnp.linspace(-2.0, 2.0, t.num_steps, dtype=dtype)  # λ from 0.12 to 0.88


def _check_map(name, gate_kind, dtype):
    dist = CHAINS[name](dtype)
    t = transform_for(dist)
    assert isinstance(t, ChainTransform) and t.num_steps == NUM_STEPS
    w = _gate(name, t, gate_kind, dtype)
    shape = t.unconstrained_shape(tuple(dist.batch_shape) + tuple(dist.event_shape))
    keys = jax.random.split(jax.random.key(0), 2)
    check_bijection(
        lambda e: apply_forward(t, e, w)[0],
        lambda x: apply_inverse(t, x, w)[0],
        lambda e: apply_forward(t, e, w)[2],
        jax.random.normal(keys[0], shape, dtype),
        inverse_log_det=lambda x: apply_inverse(t, x, w)[2],
        extra_inputs=[1.5 * jax.random.normal(keys[1], shape, dtype)])


# Every chain runs with every gate layout under `-m slow`; the default run keeps one layout
# per chain (all three for the scalar chain) because monotone gated maps compile slowly.
DEFAULT_MAP_CASES = {("scalar_normal", "ungated"), ("scalar_normal", "shared"),
                     ("scalar_normal", "per_step"), ("vector_normal", "per_step"),
                     ("batched_normal", "shared"), ("lognormal", "per_step"),
                     ("half_normal", "ungated")}


@pytest.mark.parametrize("name,gate_kind", [
    pytest.param(n, g, marks=() if (n, g) in DEFAULT_MAP_CASES else (pytest.mark.slow,))
    for n in sorted(CHAINS) for g in ("ungated", "shared", "per_step")])
def test_chain_map_round_trip_and_log_det(name, gate_kind):
    """Round trip and log-det against slogdet(jacfwd), under jit, for each gate layout."""
    _check_map(name, gate_kind, jnp.float32)


@pytest.mark.parametrize("name", ["vector_normal",
                                  pytest.param("half_normal", marks=pytest.mark.slow)])
def test_chain_map_round_trip_and_log_det_float64(name, x64):
    _check_map(name, "per_step", jnp.float64)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n == "half_normal" else n for n in sorted(CHAINS)])
def test_ungated_chain_map_is_the_chain_density(name):
    """log N(e) − log|det J(e)| = chain.log_prob(x), sample by sample (64 draws)."""
    dist = CHAINS[name](jnp.float32)
    t = transform_for(dist)
    shape = t.unconstrained_shape(tuple(dist.batch_shape) + tuple(dist.event_shape))
    noise = jax.random.normal(jax.random.key(1), (64,) + shape)

    @jax.jit
    def densities(e):
        _, x, log_det = jax.vmap(lambda v: apply_forward(t, v))(e)
        log_noise = jnp.sum(tfd.Normal(0.0, 1.0).log_prob(e), axis=tuple(range(1, e.ndim)))
        prior = dist.log_prob(x)
        return log_noise - log_det, jnp.sum(prior.reshape(64, -1), axis=-1)

    pushed, prior = densities(noise)
    np.testing.assert_allclose(pushed, prior, rtol=1e-5, atol=1e-3)


def test_parallel_inverse_equals_the_scanned_inverse():
    """The vectorised inverse (values known) and a step-by-step scan give the same noise."""
    dist = CHAINS["lognormal"](jnp.float32)
    t = transform_for(dist)
    w = jnp.linspace(-1.0, 1.0, NUM_STEPS)
    x = dist.sample(seed=jax.random.key(2))
    e_parallel, _, ld_parallel = apply_inverse(t, x, w)
    e_scan, _, ld_scan = jax.jit(lambda v: _chain_scan(t, v, w, _step_inverse, True, True))(x)
    np.testing.assert_allclose(e_parallel, e_scan, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ld_parallel, ld_scan, rtol=1e-5, atol=1e-4)


def _bridge(num_steps, *, chain, dtype=jnp.float32):
    """A Brownian bridge observed at both ends, as one MarkovChain or as a Python loop."""
    observed = np.array([0, 1, num_steps - 2, num_steps - 1])
    scale = _c(0.1, dtype)

    def as_chain():
        x = yield tfd.MarkovChain(tfd.Normal(_c(0.0, dtype), scale),
                                  lambda _, x: tfd.Normal(x, scale), num_steps, name="x")
        yield tfd.Independent(tfd.Normal(x[..., observed], _c(0.15, dtype)), 1, name="obs")

    def as_loop():
        x = yield Root(tfd.Normal(_c(0.0, dtype), scale, name="x0"))
        path = [x]
        for k in range(1, num_steps):
            x = yield tfd.Normal(x, scale, name=f"x{k}")
            path.append(x)
        locs = jnp.stack([path[k] for k in observed], axis=-1)
        yield tfd.Independent(tfd.Normal(locs, _c(0.15, dtype)), 1, name="obs")

    model = tfd.JointDistributionCoroutineAutoBatched(as_chain if chain else as_loop)
    return model.experimental_pin(obs=_c([0.1, 0.2, -0.3, -0.2], dtype))


def test_chain_variable_matches_the_python_loop_in_the_gated_layer():
    """A MarkovChain variable and the same process as T variables give the same layer."""
    num_steps = 6
    chain_init, chain_build = emf_jax.build_structured_layer_stateless(
        _bridge(num_steps, chain=True))
    loop_init, loop_build = emf_jax.build_structured_layer_stateless(
        _bridge(num_steps, chain=False))
    w = jnp.linspace(-1.5, 1.5, num_steps)
    chain_params = {"gates": {"x": w}}
    loop_params = {"gates": {f"x{k}": w[k] for k in range(num_steps)}}
    noise = jax.random.normal(jax.random.key(3), (7, num_steps))
    chain_layer = chain_build(chain_params)
    values, log_det = chain_layer.forward_and_log_det(chain_layer.trace.unflatten([noise]))
    loop_noise = loop_build(loop_init(None)).trace.unflatten(list(noise.T))
    loop_values, loop_log_det = loop_build(loop_params).forward_and_log_det(loop_noise)
    np.testing.assert_allclose(values.x, jnp.stack(jax.tree.leaves(loop_values), -1),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_det, loop_log_det, rtol=1e-5, atol=1e-5)


def test_structured_layer_with_a_chain_variable():
    """Round trip and log-det of the whole layer with per-step gates, under jit."""
    pinned = _bridge(NUM_STEPS, chain=True)
    init_fn, build_fn = emf_jax.build_structured_layer_stateless(pinned, per_step_gates=True)
    params = init_fn(None)
    assert params["gates"]["x"].shape == (NUM_STEPS,)
    params = {"gates": {"x": jnp.linspace(-2.0, 2.0, NUM_STEPS)}}
    layer = build_fn(params)
    record = layer.trace.record("x")
    assert (record.family, record.num_steps, record.unconstrained_shape) == (
        "MarkovChain", NUM_STEPS, (NUM_STEPS,))
    noise = layer.noise_distribution().sample(seed=jax.random.key(4))
    check_bijection(layer.forward, layer.inverse, layer.forward_log_det_jacobian, noise,
                    inverse_log_det=layer.inverse_log_det_jacobian)


def test_map_and_support_halves_compose_for_a_constrained_chain():
    def program():
        yield tfd.MarkovChain(tfd.LogNormal(0.0, 0.5),
                              lambda _, x: tfd.LogNormal(0.5 * jnp.log(x), 0.3), NUM_STEPS,
                              name="v")

    model = tfd.JointDistributionCoroutineAutoBatched(program)
    init_fn, build_fn = emf_jax.build_structured_layer_stateless(model)
    params = {"gates": {"v": jnp.asarray(0.4)}}
    noise = build_fn(params).noise_distribution().sample(3, seed=jax.random.key(6))

    @jax.jit
    def halves(e):
        whole = build_fn(params).forward_and_log_det(e)
        u, map_ld = build_fn(params, parts="map").forward_and_log_det(e)
        x, support_ld = build_fn(params, parts="support").forward_and_log_det(u)
        u_back, _ = build_fn(params, parts="support").inverse_and_log_det(whole[0])
        e_back, _ = build_fn(params, parts="map").inverse_and_log_det(u)
        return whole, u, x, map_ld + support_ld, u_back, e_back

    (whole, whole_ld), u, x, halves_ld, u_back, e_back = halves(noise)
    np.testing.assert_allclose(x.v, whole.v, rtol=1e-6)
    np.testing.assert_allclose(halves_ld, whole_ld, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(whole.v) > 0)
    np.testing.assert_allclose(u_back.v, u.v, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(e_back.v, noise.v, rtol=1e-4, atol=1e-4)


def _forward_jaxpr_size(model):
    init_fn, build_fn = emf_jax.build_structured_layer_stateless(model)
    params = init_fn(None)
    noise = build_fn(params).noise_distribution().sample(seed=jax.random.key(0))
    jaxpr = jax.make_jaxpr(lambda p, e: build_fn(p).forward_and_log_det(e))(params, noise)
    return len(jaxpr.jaxpr.eqns)


@pytest.mark.parametrize("form", ["chain", "sample"])
def test_trace_does_not_grow_with_the_number_of_steps(form):
    """A MarkovChain or a Sample variable traces to the same program whatever its length."""
    def model(num_steps):
        def program():
            scale = yield Root(tfd.HalfNormal(1.0, name="scale"))
            if form == "chain":
                yield tfd.MarkovChain(tfd.Normal(0.0, scale),
                                      lambda _, x: tfd.Normal(x, scale), num_steps, name="x")
            else:
                yield tfd.Sample(tfd.Normal(0.0, scale), num_steps, name="x")
        return tfd.JointDistributionCoroutine(program)

    sizes = [_forward_jaxpr_size(model(n)) for n in (5, 50)]
    assert sizes[0] == sizes[1]
    loop_sizes = [_forward_jaxpr_size(_bridge(n, chain=False).distribution) for n in (5, 10)]
    assert loop_sizes[1] > loop_sizes[0]  # the Python loop does grow


def test_errors_name_the_variable_and_the_reason():
    def joint_state():
        yield tfd.MarkovChain(
            tfd.JointDistributionSequential([tfd.Normal(0.0, 1.0), tfd.Normal(0.0, 1.0)]),
            lambda _, x: tfd.JointDistributionSequential(
                [tfd.Normal(x[0], 1.0), tfd.Normal(x[1], 1.0)]), 3, name="z")

    with pytest.raises(emf_jax.UnsupportedDistributionError, match="'z'.*structures"):
        emf_jax.trace_model(tfd.JointDistributionCoroutine(joint_state))

    # (Dirichlet steps have a map since issue 16: a discrete step family has none.)
    def poisson_steps():
        yield tfd.MarkovChain(tfd.Poisson(1.0), lambda _, x: tfd.Poisson(x + 1.0), 3, name="w")

    with pytest.raises(emf_jax.UnsupportedDistributionError, match="'w'"):
        emf_jax.trace_model(tfd.JointDistributionCoroutine(poisson_steps))

    def exp_of_chain():
        yield tfd.TransformedDistribution(
            tfd.MarkovChain(tfd.Normal(0.0, 1.0), lambda _, x: tfd.Normal(x, 1.0), 3),
            tfp.bijectors.Exp(), name="y")

    with pytest.raises(emf_jax.UnsupportedDistributionError, match="'y'.*step"):
        emf_jax.trace_model(tfd.JointDistributionCoroutine(exp_of_chain))

    t = transform_for(CHAINS["scalar_normal"](jnp.float32))
    with pytest.raises(ValueError, match="gate of a MarkovChain of 5 steps"):
        apply_forward(t, jnp.zeros(5), jnp.zeros(3))
    with pytest.raises(ValueError, match="5 steps"):
        apply_forward(t, jnp.zeros(4))


def test_chains_inside_sample_and_independent():
    """Sample(chain) and Independent(batched chain): the lead axes are mapped like a batch."""
    def program():
        a = yield Root(tfd.Sample(CHAINS["scalar_normal"](jnp.float32), 2, name="a"))
        yield tfd.Independent(tfd.MarkovChain(
            tfd.Normal(a[..., -1], 1.0), lambda _, x: tfd.Normal(0.5 * x, 0.7), 3), 1, name="b")

    model = tfd.JointDistributionCoroutine(program)
    init_fn, build_fn = emf_jax.build_structured_layer_stateless(model, gated=False)
    layer = build_fn(init_fn(None))
    assert [(r.base_family, r.num_steps, r.unconstrained_shape) for r in layer.trace.latents] == [
        ("MarkovChain", NUM_STEPS, (2, NUM_STEPS)), ("MarkovChain", 3, (2, 3))]
    noise = layer.noise_distribution().sample(16, seed=jax.random.key(7))

    @jax.jit
    def check(e):
        values, log_det = layer.forward_and_log_det(e)
        back, _ = layer.inverse_and_log_det(values)
        return back, layer.noise_distribution().log_prob(e) - log_det, model.log_prob(values)

    back, pushed, prior = check(noise)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(noise)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pushed, prior, rtol=1e-5, atol=1e-3)
