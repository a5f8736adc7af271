"""Tests for emf_jax.templates: densities against scipy, shapes, dtypes, jit and gradients."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats
from tensorflow_probability.substrates import jax as tfp

from emf_jax import templates

tfd = tfp.distributions

RTOL = {np.dtype("float32"): 1e-5, np.dtype("float64"): 1e-11}


def _softplus(raw):
    return np.logaddexp(0.0, np.asarray(raw, np.float64))


def _perturb(params, seed):
    """Random parameters near the initial ones (a fixed seed per test)."""
    rng = np.random.default_rng(seed)
    return {
        name: jnp.asarray(np.asarray(value) + rng.normal(0.0, 0.5, np.shape(value)),
                          dtype=jnp.asarray(value).dtype)
        for name, value in params.items()
    }


def _jit_log_prob(model_fn):
    """``(params, values) -> log_prob``, compiled once (eager TFP dispatch is slow)."""
    return jax.jit(lambda params, values: model_fn(params).log_prob(values))


def _sample_shapes(model_fn, params, n):
    """Shapes and dtypes of ``model_fn(params).sample(n)``, traced without compiling."""
    return jax.eval_shape(lambda key: model_fn(params).sample(n, seed=key), jax.random.key(0))


def _np(params):
    return {name: np.asarray(value, np.float64) for name, value in params.items()}


# ------------------------------------------------------------------------- reference densities


def _ref_mixture(x, p, background_weight=templates.DEFAULT_BACKGROUND_WEIGHT,
                 loc_range=(-4.0, 4.0)):
    logw = p["logits"] - special.logsumexp(p["logits"], axis=-1, keepdims=True)
    comp = stats.norm.logpdf(x[..., None], p["locs"], _softplus(p["raw_scales"]))
    mixture = special.logsumexp(logw + comp, axis=-1)
    if background_weight == 0.0:
        return mixture.sum(-1)
    low, high = loc_range
    background = stats.norm.logpdf(x, 0.5 * (low + high), 0.5 * (high - low))
    return np.logaddexp(np.log1p(-background_weight) + mixture,
                        np.log(background_weight) + background).sum(-1)


def _ref_hierarchical(mean, items, p):
    lp = stats.norm.logpdf(mean, 0.0, _softplus(p["raw_prior_scale"])).sum(-1)
    return lp + stats.norm.logpdf(
        items, mean[..., None, :], _softplus(p["raw_item_scale"])).sum((-1, -2))


def _ref_random_walk(xs, p):
    lp = stats.norm.logpdf(xs[0], 0.0, _softplus(p["raw_initial_scale"]))
    for prev, x in zip(xs[:-1], xs[1:]):
        lp = lp + stats.norm.logpdf(x, prev, _softplus(p["raw_step_scale"]))
    return lp


def _ref_smooth_walk(xs, p):
    lp = stats.norm.logpdf(xs[0], 0.0, _softplus(p["raw_initial_scale"]))
    lp = lp + stats.norm.logpdf(xs[1], xs[0], _softplus(p["raw_initial_step_scale"]))
    for t in range(2, len(xs)):
        lp = lp + stats.norm.logpdf(xs[t], 2 * xs[t - 1] - xs[t - 2],
                                    _softplus(p["raw_step_scale"]))
    return lp


def _sum_event(lp, event_size):
    return lp if event_size == 1 else lp.sum(-1)


# ------------------------------------------------------------------------- gaussian_mixture


def test_gaussian_mixture_initialisation():
    model_fn, params = templates.gaussian_mixture(3, 5, loc_range=(-2.0, 2.0))
    assert set(params) == {"logits", "locs", "raw_scales"}
    np.testing.assert_array_equal(params["logits"], np.zeros((3, 5)))
    np.testing.assert_allclose(params["locs"], np.tile(np.linspace(-2, 2, 5), (3, 1)))
    np.testing.assert_allclose(jax.nn.softplus(params["raw_scales"]), 1.0, rtol=1e-6)
    _, params1 = templates.gaussian_mixture(2, 1, loc_range=(0.0, 4.0), initial_scale=0.3)
    np.testing.assert_allclose(params1["locs"], [[2.0], [2.0]])
    np.testing.assert_allclose(jax.nn.softplus(params1["raw_scales"]), 0.3, rtol=1e-6)


@pytest.mark.parametrize("use_x64", [False, True])
@pytest.mark.parametrize("background_weight", [templates.DEFAULT_BACKGROUND_WEIGHT, 0.0, 0.3])
def test_gaussian_mixture_log_prob_matches_scipy(use_x64, background_weight, request):
    if use_x64:
        request.getfixturevalue("x64")
    dtype = jnp.float64 if use_x64 else jnp.float32
    model_fn, params = templates.gaussian_mixture(3, 4, loc_range=(-3.0, 5.0),
                                                  background_weight=background_weight,
                                                  dtype=dtype)
    params = _perturb(params, 0)
    x = np.random.default_rng(1).normal(0.0, 3.0, (7, 3))
    assert model_fn(params).dtype.x == jnp.dtype(dtype)
    got = _jit_log_prob(model_fn)(params, (jnp.asarray(x, dtype),))
    assert got.dtype == jnp.dtype(dtype) and got.shape == (7,)
    np.testing.assert_allclose(got, _ref_mixture(x, _np(params), background_weight,
                                                 (-3.0, 5.0)), rtol=RTOL[np.dtype(dtype)])


def test_gaussian_mixture_background_bounds_the_tail():
    # Components narrowed to scale 0.01 (as maximum likelihood leaves the edge ones): 3 units
    # past the last one the plain mixture's log-density is about -(3 / 0.01)^2 / 2 = -4.5e4;
    # with the background it is at least log w + log N(x; 0, 4) (loc_range (-4, 4)).
    model_fn, params = templates.gaussian_mixture(1, 5)
    params = {**params, "raw_scales": jnp.full((1, 5), float(np.log(np.expm1(0.01))))}
    x = (jnp.asarray([[7.0]]),)
    plain_fn, _ = templates.gaussian_mixture(1, 5, background_weight=0.0)
    plain = float(plain_fn(params).log_prob(x)[0])
    with_background = float(model_fn(params).log_prob(x)[0])
    floor = np.log(templates.DEFAULT_BACKGROUND_WEIGHT) + stats.norm.logpdf(7.0, 0.0, 4.0)
    assert plain < -4e4
    # float32 logsumexp of the two terms: the background dominates by 4e4 nats, exactly.
    np.testing.assert_allclose(with_background, floor, rtol=1e-5)
    # Inside the data the background costs at most -log(1 - w) nats.
    inside = (jnp.asarray([[2.0]]),)
    assert 0.0 <= float(plain_fn(params).log_prob(inside)[0]
                        - model_fn(params).log_prob(inside)[0]) <= -np.log1p(-0.01) + 1e-6


def test_gaussian_mixture_sample_structure():
    model_fn, params = templates.gaussian_mixture(2, 3)
    jd = model_fn(params)
    assert isinstance(jd, tfd.JointDistribution)
    sample = _sample_shapes(model_fn, params, 11)
    assert sample._fields == ("x",)
    assert sample.x.shape == (11, 2)
    assert jd.event_shape.x == (2,)


# ------------------------------------------------------------------------- hierarchical


@pytest.mark.parametrize("use_x64", [False, True])
def test_hierarchical_log_prob_matches_scipy(use_x64, request):
    if use_x64:
        request.getfixturevalue("x64")
    dtype = jnp.float64 if use_x64 else jnp.float32
    model_fn, params = templates.hierarchical(4, 3, dtype=dtype)
    np.testing.assert_allclose(jax.nn.softplus(params["raw_prior_scale"]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(jax.nn.softplus(params["raw_item_scale"]), 1.0, rtol=1e-6)
    params = _perturb(params, 2)
    rng = np.random.default_rng(3)
    mean, items = rng.normal(size=(5, 3)), rng.normal(size=(5, 4, 3))
    got = _jit_log_prob(model_fn)(params, (jnp.asarray(mean, dtype), jnp.asarray(items, dtype)))
    assert got.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(got, _ref_hierarchical(mean, items, _np(params)),
                               rtol=RTOL[np.dtype(dtype)])


def test_hierarchical_sample_structure():
    model_fn, params = templates.hierarchical(9, 4)
    sample = _sample_shapes(model_fn, params, 6)
    assert sample._fields == ("mean", "items")
    assert sample.mean.shape == (6, 4) and sample.items.shape == (6, 9, 4)


# ------------------------------------------------------------------------- walks

WALKS = [
    (templates.random_walk, _ref_random_walk, 1),
    (templates.smooth_walk, _ref_smooth_walk, 2),
]


@pytest.mark.parametrize("template,reference,min_steps", WALKS)
@pytest.mark.parametrize("event_size", [1, 3])
@pytest.mark.parametrize("use_x64", [False, True])
def test_walk_log_prob_matches_numpy(template, reference, min_steps, event_size, use_x64,
                                     request):
    if use_x64:
        request.getfixturevalue("x64")
    dtype = jnp.float64 if use_x64 else jnp.float32
    num_steps = 5
    model_fn, params = template(num_steps, event_size, dtype=dtype)
    for value in params.values():  # every scale initialised at 1
        np.testing.assert_allclose(jax.nn.softplus(value), 1.0, rtol=1e-6)
        assert value.shape == (() if event_size == 1 else (event_size,))
    params = _perturb(params, 4)
    shape = (num_steps, 6) + (() if event_size == 1 else (event_size,))
    xs = np.random.default_rng(5).normal(0.0, 2.0, shape)
    got = _jit_log_prob(model_fn)(params, tuple(jnp.asarray(x, dtype) for x in xs))
    assert got.dtype == jnp.dtype(dtype) and got.shape == (6,)
    want = _sum_event(reference(list(xs), _np(params)), event_size)
    np.testing.assert_allclose(got, want, rtol=RTOL[np.dtype(dtype)])


@pytest.mark.parametrize("template", [templates.random_walk, templates.smooth_walk])
@pytest.mark.parametrize("event_size", [1, 2])
def test_walk_sample_structure(template, event_size):
    model_fn, params = template(4, event_size)
    sample = _sample_shapes(model_fn, params, 3)
    assert sample._fields == templates.step_names(4) == ("x0", "x1", "x2", "x3")
    for x in sample:
        assert x.shape == ((3,) if event_size == 1 else (3, event_size))


def test_smooth_walk_extrapolates_linearly():
    # With tiny second-difference noise, the path continues the first step's line.
    model_fn, params = templates.smooth_walk(6, step_scale=1e-4)
    xs = jax.jit(lambda key: model_fn(params).sample(seed=key))(jax.random.key(2))
    second_diff = np.diff(np.asarray(xs), n=2)
    assert np.max(np.abs(second_diff)) < 1e-2
    assert abs(float(xs[1] - xs[0])) > 1e-2  # but the first step itself is not tiny


# ------------------------------------------------------------------------- all templates


def _random_values(model_fn, params, n, seed):
    """Standard-normal values with the structure of ``n`` samples of the model."""
    rng = np.random.default_rng(seed)
    shapes = _sample_shapes(model_fn, params, n)
    return tuple(jnp.asarray(rng.normal(size=x.shape), x.dtype) for x in shapes)


CASES = {
    "gaussian_mixture": lambda dtype=None: templates.gaussian_mixture(2, 3, dtype=dtype),
    "hierarchical": lambda dtype=None: templates.hierarchical(3, 2, dtype=dtype),
    "random_walk": lambda dtype=None: templates.random_walk(4, 2, dtype=dtype),
    "smooth_walk": lambda dtype=None: templates.smooth_walk(4, dtype=dtype),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_and_gradients(name):
    model_fn, params = CASES[name]()
    data = _random_values(model_fn, params, 16, seed=3)

    def loss(p):
        return -jnp.mean(model_fn(p).log_prob(data))

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(value)
    assert set(grads) == set(params)
    for key, grad in grads.items():
        assert grad.shape == params[key].shape
        assert np.all(np.isfinite(grad)), key
        assert np.linalg.norm(np.ravel(grad)) > 0.0, key


@pytest.mark.parametrize("name", sorted(CASES))
def test_program_accepts_batched_parents(name):
    """The program also runs un-vectorised with batched values (no autobatching)."""
    model_fn, params = CASES[name]()
    data = _random_values(model_fn, params, 5, seed=4)

    @jax.jit
    def both(values):
        jd = model_fn(params)
        manual = tfd.JointDistributionCoroutine(jd.model)
        return manual.log_prob(values), jd.log_prob(values)

    manual, auto = both(data)
    assert manual.shape == auto.shape == (5,)
    np.testing.assert_allclose(manual, auto, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_float64(name, x64):
    model_fn, params = CASES[name](jnp.float64)
    for value in params.values():
        assert value.dtype == jnp.float64
    sample = _sample_shapes(model_fn, params, 2)
    assert all(x.dtype == jnp.float64 for x in sample)
    log_prob = jax.eval_shape(lambda p, s: model_fn(p).log_prob(s), params, sample)
    assert log_prob.dtype == jnp.float64 and log_prob.shape == (2,)


def test_default_dtype_follows_x64(x64):
    _, params = templates.random_walk(2)
    assert params["raw_step_scale"].dtype == jnp.float64


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: templates.gaussian_mixture(0, 3), ValueError, "event_size"),
        (lambda: templates.gaussian_mixture(2, 2.5), TypeError, "num_components"),
        (lambda: templates.gaussian_mixture(2, 3, loc_range=(1.0, -1.0)), ValueError,
         "loc_range"),
        (lambda: templates.gaussian_mixture(2, 3, loc_range=1.0), TypeError, "loc_range"),
        (lambda: templates.gaussian_mixture(2, 3, background_weight=1.0), ValueError,
         "background_weight"),
        (lambda: templates.gaussian_mixture(2, 3, background_weight="a"), TypeError,
         "background_weight"),
        (lambda: templates.gaussian_mixture(2, 3, initial_scale=0.0), ValueError,
         "initial_scale"),
        (lambda: templates.hierarchical(3, 2, dtype=jnp.int32), TypeError, "dtype"),
        (lambda: templates.hierarchical(0, 2), ValueError, "num_items"),
        (lambda: templates.random_walk(0), ValueError, "num_steps"),
        (lambda: templates.random_walk(3, True), TypeError, "event_size"),
        (lambda: templates.smooth_walk(1), ValueError, "num_steps"),
        (lambda: templates.smooth_walk(3, step_scale=-1.0), ValueError, "step_scale"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_missing_parameter_is_named():
    model_fn, params = templates.random_walk(3)
    del params["raw_step_scale"]
    with pytest.raises(KeyError, match="raw_step_scale"):
        model_fn(params)
