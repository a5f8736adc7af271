"""Tests of emf_jax.training: the scan engine, fit_vi and fit_density."""
import math
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorflow_probability.substrates import jax as tfp

from emf_jax.training import (
    DensityFitResult,
    FitResult,
    engine,
    fit_density,
    fit_vi,
    losses,
    minimize,
    structure_data,
)

tfd = tfp.distributions


# Shared by several tests so that they reuse one compiled chunk.
_ADAM = optax.adam(0.05)


def _noisy_quadratic(params, seed):
    noise = 0.3 * jax.random.normal(seed, params["x"].shape, params["x"].dtype)
    return jnp.sum((params["x"] - 1.0 - noise) ** 2)


def _normal_build(params):
    return tfd.Normal(params["loc"], jax.nn.softplus(params["raw_scale"]))


def _inverse_softplus(y):
    return float(np.log(np.expm1(y)))


# ------------------------------------------------------------------------------ engine


def test_minimize_returns_fit_result_and_converges():
    result = minimize(lambda p, seed: jnp.sum((p["x"] - 3.0) ** 2), {"x": jnp.zeros(3)},
                      optimizer=optax.adam(0.1), num_steps=250, seed=0, chunk_size=64,
                      progress_bar=False)
    assert isinstance(result, FitResult)
    assert result.losses.shape == (250,)
    assert result.num_nonfinite == 0
    np.testing.assert_allclose(result.params["x"], 3.0, atol=1e-2)
    # Each recorded loss is evaluated before its step's update.
    np.testing.assert_allclose(result.losses[0], 27.0, rtol=1e-6)
    assert float(result.losses[-1]) < 1e-3


def test_minimize_float64(x64):
    result = minimize(_noisy_quadratic, {"x": jnp.zeros(2, jnp.float64)},
                      optimizer=optax.sgd(0.1), num_steps=30, seed=1, chunk_size=8,
                      progress_bar=False)
    assert result.params["x"].dtype == jnp.float64
    assert result.losses.dtype == jnp.float64


def test_no_recompilation_across_chunks_and_calls():
    traces = []

    def loss_fn(params, seed):
        traces.append(1)  # Runs only while JAX traces the function.
        return _noisy_quadratic(params, seed)

    optimizer = optax.adam(0.05)
    params = {"x": jnp.zeros(4)}
    cache_before = engine._run_chunk_jit._cache_size()
    # 3 chunks of 10, the last one partial (5 real steps).
    first = minimize(loss_fn, params, optimizer=optimizer, num_steps=25, seed=0,
                     chunk_size=10, progress_bar=False)
    traces_after_first = len(traces)
    assert traces_after_first > 0
    assert engine._run_chunk_jit._cache_size() == cache_before + 1
    # A second call with the same function, optimizer and shapes: other step count, other
    # seed, resumed state; no new trace and no new compiled program.
    minimize(loss_fn, first.params, optimizer=optimizer, num_steps=7, seed=3,
             chunk_size=10, opt_state=first.opt_state, start_step=25, progress_bar=False)
    assert len(traces) == traces_after_first
    assert engine._run_chunk_jit._cache_size() == cache_before + 1
    # fit_vi builds its loss object anew on each call; equal objects share the program.
    build, target = _normal_build, tfd.Normal(0.0, 1.0).log_prob
    vi_params = {"loc": jnp.zeros(()), "raw_scale": jnp.zeros(())}
    fit_vi(target, build, vi_params, optimizer=optimizer, num_steps=3, seed=0, chunk_size=2,
           progress_bar=False)
    size = engine._run_chunk_jit._cache_size()
    fit_vi(target, build, vi_params, optimizer=optimizer, num_steps=5, seed=1, chunk_size=2,
           progress_bar=False)
    assert engine._run_chunk_jit._cache_size() == size


# Disabling XLA's fusion pass is the documented cure for slow CPU compiles of long
# Python-loop models; the numbers must not change.
_NO_FUSION = {"xla_disable_hlo_passes": "fusion"}


def test_compiler_options_compile_one_program_per_option_set():
    params = {"x": jnp.zeros(3)}
    kwargs = dict(optimizer=_ADAM, num_steps=12, chunk_size=5, progress_bar=False)
    default = minimize(_noisy_quadratic, params, seed=2, **kwargs)
    runner = engine._chunk_runner(engine.freeze_compiler_options(_NO_FUSION))
    assert runner is not engine._run_chunk_jit
    unfused = minimize(_noisy_quadratic, params, seed=2, compiler_options=_NO_FUSION, **kwargs)
    np.testing.assert_allclose(unfused.losses, default.losses, rtol=1e-5)
    np.testing.assert_allclose(unfused.params["x"], default.params["x"], rtol=1e-5)
    # An equal option set (another dict object) reuses the compiled program.
    size = runner._cache_size()
    minimize(_noisy_quadratic, params, seed=3, compiler_options=dict(_NO_FUSION), **kwargs)
    assert runner._cache_size() == size


def test_compiler_options_reach_xla():
    # XLA itself rejects an option it does not know: proof that the options are passed on.
    with pytest.raises(Exception, match="xla_no_such_option"):
        minimize(_noisy_quadratic, {"x": jnp.zeros(2)}, optimizer=_ADAM, num_steps=2,
                 seed=0, chunk_size=2, progress_bar=False,
                 compiler_options={"xla_no_such_option": True})


@pytest.mark.parametrize("options, message", [
    ([("xla_disable_hlo_passes", "fusion")], "must be a mapping"),
    ({1: "fusion"}, "keys must be strings"),
    ({"xla_disable_hlo_passes": ["fusion"]}, "must be a str, bool, int or float"),
])
def test_compiler_options_are_checked(options, message):
    with pytest.raises(TypeError, match=message):
        fit_vi(tfd.Normal(0.0, 1.0).log_prob, _normal_build,
               {"loc": jnp.zeros(()), "raw_scale": jnp.zeros(())}, optimizer=_ADAM,
               num_steps=2, seed=0, progress_bar=False, compiler_options=options)


def test_fit_vi_and_fit_density_pass_compiler_options():
    vi_params = {"loc": jnp.zeros(()), "raw_scale": jnp.zeros(())}
    target = tfd.Normal(1.0, 0.5).log_prob
    vi = [fit_vi(target, _normal_build, vi_params, optimizer=_ADAM, num_steps=20,
                 sample_size=4, seed=0, chunk_size=10, progress_bar=False,
                 compiler_options=options) for options in (None, _NO_FUSION)]
    np.testing.assert_allclose(vi[1].losses, vi[0].losses, rtol=1e-5)
    data = np.random.default_rng(4).normal(1.0, 2.0, 300).astype(np.float32)
    fits = [fit_density(_normal_build, vi_params, data, optimizer=_ADAM, num_steps=20,
                        batch_size=50, seed=0, validation_fraction=0.2, chunk_size=10,
                        progress_bar=False, compiler_options=options)
            for options in (None, _NO_FUSION)]
    np.testing.assert_allclose(fits[1].losses, fits[0].losses, rtol=1e-5)
    np.testing.assert_allclose(fits[1].validation_losses, fits[0].validation_losses,
                               rtol=1e-5)
    assert losses.row_nll_runner(
        engine.freeze_compiler_options(_NO_FUSION))._cache_size() >= 1


def test_resume_equals_one_run():
    optimizer = _ADAM
    params = {"x": jnp.zeros(3)}
    n = 23
    one_run = minimize(_noisy_quadratic, params, optimizer=optimizer, num_steps=2 * n,
                       seed=7, chunk_size=10, progress_bar=False)
    first = minimize(_noisy_quadratic, params, optimizer=optimizer, num_steps=n, seed=7,
                     chunk_size=10, progress_bar=False)
    second = minimize(_noisy_quadratic, first.params, optimizer=optimizer, num_steps=n,
                      seed=7, chunk_size=10, opt_state=first.opt_state, start_step=n,
                      progress_bar=False)
    np.testing.assert_allclose(second.params["x"], one_run.params["x"], rtol=1e-6)
    np.testing.assert_allclose(jnp.concatenate([first.losses, second.losses]),
                               one_run.losses, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
                 second.opt_state, one_run.opt_state)
    # The step seeds depend on the global step only, not on the chunking.
    other_chunks = minimize(_noisy_quadratic, params, optimizer=optimizer,
                            num_steps=2 * n, seed=7, chunk_size=4, progress_bar=False)
    np.testing.assert_allclose(other_chunks.losses, one_run.losses, rtol=1e-6)
    # Without start_step the second half would reuse the first half's seeds.
    wrong = minimize(_noisy_quadratic, first.params, optimizer=optimizer, num_steps=n,
                     seed=7, chunk_size=10, opt_state=first.opt_state, progress_bar=False)
    assert not np.allclose(wrong.losses, second.losses)


def test_seed_as_key_matches_int_seed():
    params = {"x": jnp.zeros(3)}
    kwargs = dict(optimizer=_ADAM, num_steps=5, chunk_size=10, progress_bar=False)
    from_int = minimize(_noisy_quadratic, params, seed=4, **kwargs)
    from_key = minimize(_noisy_quadratic, params, seed=jax.random.PRNGKey(4), **kwargs)
    np.testing.assert_array_equal(from_int.losses, from_key.losses)
    typed = minimize(_noisy_quadratic, params, seed=jax.random.key(4), **kwargs)
    assert np.all(np.isfinite(typed.losses))


def test_nonfinite_loss_steps_are_skipped_and_counted():
    def loss_fn(params, seed):
        bad = jax.random.uniform(seed) < 0.3
        return jnp.where(bad, jnp.nan, jnp.sum((params["x"] - 2.0) ** 2))

    num_steps, seed = 40, 5
    key = jax.random.PRNGKey(seed)
    expected_bad = np.array([
        bool(jax.random.uniform(jax.random.fold_in(key, t)) < 0.3) for t in range(num_steps)])
    assert 0 < expected_bad.sum() < num_steps
    with pytest.warns(RuntimeWarning, match=rf"{expected_bad.sum()} of {num_steps} steps"):
        result = minimize(loss_fn, {"x": jnp.zeros(2)}, optimizer=optax.adam(0.1),
                          num_steps=num_steps, seed=seed, chunk_size=16, progress_bar=False)
    assert result.num_nonfinite == expected_bad.sum()
    np.testing.assert_array_equal(np.isnan(result.losses), expected_bad)
    assert np.all(np.isfinite(result.params["x"]))
    # The finite steps still trained: adam with lr 0.1 moved x towards 2.
    assert np.all(result.params["x"] > 1.0)


def test_nonfinite_gradient_leaves_state_unchanged():
    # d/dx sqrt(|x|) is infinite at x = 0, so every step is skipped.
    params = {"x": jnp.zeros(2)}
    optimizer = optax.adam(0.1)
    with pytest.warns(RuntimeWarning, match="6 of 6 steps"):
        result = minimize(lambda p, seed: jnp.sum(jnp.sqrt(jnp.abs(p["x"]))), params,
                          optimizer=optimizer, num_steps=6, seed=0, chunk_size=4,
                          progress_bar=False)
    assert result.num_nonfinite == 6
    np.testing.assert_array_equal(result.params["x"], params["x"])
    jax.tree.map(np.testing.assert_array_equal, result.opt_state, optimizer.init(params))


def test_progress_bar_shows_loss_and_nonfinite_count(capsys):
    def loss_fn(params, seed):
        return jnp.where(jax.random.uniform(seed) < 0.5, jnp.inf, jnp.sum(params["x"] ** 2))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = minimize(loss_fn, {"x": jnp.ones(2)}, optimizer=optax.sgd(0.1),
                          num_steps=12, seed=0, chunk_size=5, progress_bar=True)
    err = capsys.readouterr().err
    assert "loss=" in err
    assert f"nonfinite={result.num_nonfinite}" in err
    assert "12/12" in err


def test_zero_steps_returns_inputs():
    result = minimize(_noisy_quadratic, {"x": jnp.ones(2)}, optimizer=optax.sgd(0.1),
                      num_steps=0, seed=0, progress_bar=False)
    assert result.losses.shape == (0,)
    np.testing.assert_array_equal(result.params["x"], 1.0)


@pytest.mark.slow  # Compiling the line search takes a few seconds.
def test_extra_args_optimizer_lbfgs():
    result = minimize(lambda p, seed: jnp.sum((p["x"] - jnp.arange(3.0)) ** 2),
                      {"x": jnp.zeros(3)}, optimizer=optax.lbfgs(), num_steps=10, seed=0,
                      chunk_size=10, progress_bar=False)
    np.testing.assert_allclose(result.params["x"], jnp.arange(3.0), atol=1e-4)


def test_minimize_argument_errors():
    params = {"x": jnp.zeros(2)}
    kwargs = dict(optimizer=optax.sgd(0.1), num_steps=3, seed=0, progress_bar=False)
    with pytest.raises(ValueError, match="chunk_size"):
        minimize(_noisy_quadratic, params, **{**kwargs, "chunk_size": 0})
    with pytest.raises(ValueError, match="num_steps"):
        minimize(_noisy_quadratic, params, **{**kwargs, "num_steps": -1})
    with pytest.raises(TypeError, match="optimizer"):
        minimize(_noisy_quadratic, params, **{**kwargs, "optimizer": "adam"})
    with pytest.raises(TypeError, match="seed"):
        minimize(_noisy_quadratic, params, **{**kwargs, "seed": 1.5})
    with pytest.raises(TypeError, match="scalar"):
        minimize(lambda p, seed: p["x"] ** 2, params, **kwargs)


# ------------------------------------------------------------------------------ fit_vi


def test_fit_vi_normal_target_recovers_exact_posterior():
    mu, sigma = 2.0, 0.5
    lr, sample_size = 0.05, 64
    result = fit_vi(tfd.Normal(mu, sigma).log_prob, _normal_build,
                    {"loc": jnp.zeros(()), "raw_scale": jnp.zeros(())},
                    optimizer=optax.sgd(lr), num_steps=300, sample_size=sample_size,
                    seed=0, chunk_size=100, progress_bar=False)
    loc = float(result.params["loc"])
    scale = float(jax.nn.softplus(result.params["raw_scale"]))
    # Near the optimum the reparameterised gradient in `loc` is
    # g = (loc - mu) / sigma^2 + mean(eps) / sigma with eps ~ N(0, 1): curvature
    # h = 1 / sigma^2 and noise variance v = 1 / (sigma^2 * sample_size). SGD then has a
    # stationary spread sd ~= sqrt(lr * v / (2 h)) = sqrt(lr / (2 * sample_size)); the
    # scale parameter's spread is smaller (about sd / 2.5). 300 steps contract the initial
    # error by (1 - lr * h)^300 < 1e-20. Tolerance: 5 sd.
    sd = math.sqrt(lr / (2 * sample_size))
    assert abs(loc - mu) < 5 * sd
    assert abs(scale - sigma) < 5 * sd
    # The loss is the negative ELBO, i.e. KL(q || p) >= 0 for a normalised target; its
    # average over the last steps is close to 0.
    assert abs(float(jnp.mean(result.losses[-100:]))) < 0.05
    assert float(result.losses[0]) > 1.0


@pytest.mark.parametrize("kind", ["named", "sequential", "coroutine"])
def test_fit_vi_loss_is_negative_elbo_and_calls_target_like_tfp(kind):
    # With the surrogate equal to the target, log p - log q == log_z for every sample, so
    # the loss is exactly -log_z at every step (kl_reverse, lr = 0).
    log_z = 1.25
    if kind == "named":
        def build(p):
            return tfd.JointDistributionNamed(
                {"a": tfd.Normal(p["m"], 1.0), "b": tfd.Normal(-p["m"], 2.0)})

        def target(a, b):  # Called as target(**sample).
            return tfd.Normal(1.0, 1.0).log_prob(a) + tfd.Normal(-1.0, 2.0).log_prob(b) + log_z
    elif kind == "sequential":
        def build(p):
            return tfd.JointDistributionSequential(
                [tfd.Normal(p["m"], 1.0), tfd.Normal(-p["m"], 2.0)])

        def target(a, b):  # Called as target(*sample).
            return tfd.Normal(1.0, 1.0).log_prob(a) + tfd.Normal(-1.0, 2.0).log_prob(b) + log_z
    else:
        def build(p):
            def model():
                root = tfd.JointDistributionCoroutine.Root
                yield root(tfd.Normal(p["m"], 1.0, name="a"))
                yield root(tfd.Normal(-p["m"], 2.0, name="b"))
            return tfd.JointDistributionCoroutine(model)

        def target(a, b):  # Called as target(*sample) on the StructTuple.
            return tfd.Normal(1.0, 1.0).log_prob(a) + tfd.Normal(-1.0, 2.0).log_prob(b) + log_z
    result = fit_vi(target, build, {"m": jnp.ones(())}, optimizer=optax.sgd(0.0),
                    num_steps=4, sample_size=3, seed=2, chunk_size=4, progress_bar=False)
    np.testing.assert_allclose(result.losses, -log_z, atol=1e-5)


def test_fit_vi_skips_steps_where_target_is_nan():
    def target(z):
        lp = tfd.Normal(1.0, 1.0).log_prob(z)
        return jnp.where(z > 1.5, jnp.nan, lp)

    with pytest.warns(RuntimeWarning, match="steps had a non-finite loss"):
        result = fit_vi(target, _normal_build,
                        {"loc": jnp.zeros(()), "raw_scale": jnp.zeros(())},
                        optimizer=optax.adam(0.02), num_steps=200, sample_size=1, seed=0,
                        chunk_size=50, progress_bar=False)
    assert result.num_nonfinite > 0
    assert result.num_nonfinite == int(np.sum(~np.isfinite(result.losses)))
    assert all(bool(jnp.isfinite(v)) for v in jax.tree.leaves(result.params))


def test_fit_vi_float64(x64):
    result = fit_vi(tfd.Normal(jnp.float64(1.0), 1.0).log_prob, _normal_build,
                    {"loc": jnp.zeros((), jnp.float64), "raw_scale": jnp.zeros((), jnp.float64)},
                    optimizer=optax.adam(0.05), num_steps=20, seed=0, chunk_size=10,
                    progress_bar=False)
    assert result.params["loc"].dtype == jnp.float64
    assert result.losses.dtype == jnp.float64


# ------------------------------------------------------------------------- fit_density


def test_fit_density_recovers_mean_and_scale():
    n, mu, sigma = 2000, 3.0, 2.0
    data = np.random.default_rng(0).normal(mu, sigma, size=n).astype(np.float32)
    params = {"loc": jnp.zeros(()), "raw_scale": jnp.asarray(_inverse_softplus(1.0))}
    optimizer = optax.adam(optax.exponential_decay(0.1, 400, 0.01))
    # The no-validation path (validation is on by default; tests/test_density_defaults.py).
    result = fit_density(_normal_build, params, data, optimizer=optimizer, num_steps=400,
                         batch_size=200, seed=0, chunk_size=100, progress_bar=False,
                         validation_fraction=0.0)
    assert isinstance(result, DensityFitResult)
    assert result.losses.shape == (400,)
    assert result.best_step == 400
    assert result.validation_losses.shape == (0,)
    def nll(p):
        return -float(jnp.mean(_normal_build(p).log_prob(data)))

    assert nll(result.params) < nll(params) - 0.5
    # Standard errors of the MLE: sigma / sqrt(n) for the mean, sigma / sqrt(2 n) for the
    # scale; tolerance 5 standard errors (the decayed learning rate makes the optimiser
    # error negligible by comparison).
    assert abs(float(result.params["loc"]) - mu) < 5 * sigma / math.sqrt(n)
    scale = float(jax.nn.softplus(result.params["raw_scale"]))
    assert abs(scale - sigma) < 5 * sigma / math.sqrt(2 * n)


def _two_part(params):
    return tfd.JointDistributionNamed({
        "a": tfd.Normal(params["a"], 1.0),
        "b": tfd.Independent(tfd.Normal(params["b"], 1.0), 1),
    })


def test_fit_density_flat_data_split_in_flatten_order():
    n = 1000
    rng = np.random.default_rng(1)
    means = np.array([1.0, -2.0, 4.0], np.float32)
    flat = (means + rng.normal(size=(n, 3))).astype(np.float32)
    # Keys sort as a, b: column 0 is `a`, columns 1-2 are `b`.
    parts = structure_data(_two_part({"a": 0.0, "b": jnp.zeros(2)}), flat)
    np.testing.assert_array_equal(parts["a"], flat[:, 0])
    np.testing.assert_array_equal(parts["b"], flat[:, 1:])
    # One optimizer object for both fits, so that the second reuses the compiled chunk.
    optimizer = optax.adam(optax.cosine_decay_schedule(0.2, 300))
    result = fit_density(_two_part, {"a": jnp.zeros(()), "b": jnp.zeros(2)}, flat,
                         optimizer=optimizer, num_steps=300, batch_size=100, seed=0,
                         progress_bar=False)
    # Unit-variance data: standard error of each mean 1 / sqrt(n); tolerance 5 of them.
    fitted = np.concatenate([np.atleast_1d(result.params["a"]), result.params["b"]])
    np.testing.assert_allclose(fitted, means, atol=5 / math.sqrt(n))
    # The same data as a pytree give the same fit.
    structured = fit_density(_two_part, {"a": jnp.zeros(()), "b": jnp.zeros(2)},
                             {"a": flat[:, 0], "b": flat[:, 1:]}, optimizer=optimizer,
                             num_steps=300, batch_size=100, seed=0, progress_bar=False)
    np.testing.assert_allclose(structured.params["b"], result.params["b"], rtol=1e-6)


def test_structure_data_coroutine_uses_definition_order_and_accepts_dicts():
    def model():
        yield tfd.Normal(0.0, 1.0, name="z")
        yield tfd.Sample(tfd.Normal(0.0, 1.0), 2, name="a")

    dist = tfd.JointDistributionCoroutineAutoBatched(model)
    flat = np.arange(12, dtype=np.int32).reshape(4, 3)
    parts = structure_data(dist, flat)
    np.testing.assert_array_equal(parts.z, [0, 3, 6, 9])  # Definition order, not sorted.
    np.testing.assert_array_equal(parts.a, flat[:, 1:])
    assert parts.z.dtype == np.float32  # Integer data are cast to the model's dtype.
    from_dict = structure_data(dist, {"a": flat[:, 1:], "z": flat[:, 0]})
    np.testing.assert_array_equal(from_dict.z, parts.z)
    with pytest.raises(ValueError, match=r"missing \['z'\]"):
        structure_data(dist, {"a": flat[:, 1:]})


def test_structure_data_plain_distribution_forms():
    dist = tfd.Normal(0.0, 1.0)
    np.testing.assert_array_equal(structure_data(dist, [1.0, 2.0]), [1.0, 2.0])
    np.testing.assert_array_equal(structure_data(dist, np.ones((2, 1))), [1.0, 1.0])
    with pytest.raises(ValueError, match=re.escape("data has shape [2, 2]; expected [N]")):
        structure_data(dist, np.ones((2, 2)))
    matrix = tfd.Independent(tfd.Normal(jnp.zeros((2, 3)), 1.0), 2)
    assert structure_data(matrix, np.ones((4, 6))).shape == (4, 2, 3)
    with pytest.raises(ValueError, match="has no rows"):
        structure_data(dist, np.ones((0,)))


def test_structure_data_float64_model(x64):
    dist = tfd.Normal(jnp.float64(0.0), 1.0)
    parts = structure_data(dist, np.ones((3, 1), np.float32))
    assert parts.shape == (3,) and parts.dtype == np.float64


def test_fit_density_early_stopping_returns_best_params():
    # Training rows centred at 0, validation rows at 1, loc starts at 2: the path of loc
    # from 2 to the training optimum 0 passes the validation optimum 1, so the validation
    # loss falls and then rises.
    rng = np.random.default_rng(2)
    train = rng.normal(0.0, 1.0, 400).astype(np.float32)
    train -= train.mean()
    valid = (rng.normal(0.0, 1.0, 200) + 1.0).astype(np.float32)

    def build(p):
        return tfd.Normal(p["loc"], 1.0)

    chunk, num_steps = 10, 400
    result = fit_density(build, {"loc": jnp.asarray(2.0)}, train, optimizer=optax.sgd(0.02),
                         num_steps=num_steps, batch_size=400, seed=0,
                         validation_data=valid, patience=3, chunk_size=chunk,
                         progress_bar=False)
    steps_run = result.losses.shape[0]
    assert steps_run < num_steps  # Stopped early ...
    best_chunk = int(np.argmin(result.validation_losses))
    assert len(result.validation_losses) == best_chunk + 1 + 3  # ... after 3 bad chunks.
    assert result.best_step == (best_chunk + 1) * chunk < steps_run
    # The returned params are the best ones: their validation NLL is the minimum.
    val_nll = -float(jnp.mean(build(result.params).log_prob(valid)))
    np.testing.assert_allclose(val_nll, result.validation_losses.min(), rtol=1e-5)
    assert abs(float(result.params["loc"]) - valid.mean()) < 0.1
    # Resuming from the best point continues at best_step.
    resumed = fit_density(build, result.params, train, optimizer=optax.sgd(0.02),
                          num_steps=chunk, batch_size=400, seed=0, opt_state=result.opt_state,
                          start_step=result.best_step, validation_fraction=0.0,
                          progress_bar=False)
    assert resumed.best_step == result.best_step + chunk


def test_fit_density_validation_fraction_split_is_deterministic():
    data = np.random.default_rng(3).normal(size=(103, 2)).astype(np.float32)

    def build(p):
        return tfd.MultivariateNormalDiag(p["loc"], jnp.ones(2))

    kwargs = dict(optimizer=optax.adam(0.05), num_steps=30, batch_size=16, seed=4,
                  validation_fraction=0.25, chunk_size=10, progress_bar=False)
    first = fit_density(build, {"loc": jnp.zeros(2)}, data, **kwargs)
    second = fit_density(build, {"loc": jnp.zeros(2)}, data, **kwargs)
    assert first.validation_losses.shape == (3,)
    np.testing.assert_array_equal(first.validation_losses, second.validation_losses)
    other_seed = fit_density(build, {"loc": jnp.zeros(2)}, data, **{**kwargs, "seed": 5})
    assert not np.allclose(other_seed.validation_losses, first.validation_losses)
    # 26 of 103 rows are held out: batch_size 78 fits, 78 + 1 does not.
    with pytest.raises(ValueError, match=r"batch_size`=78 exceeds the 77 training rows "
                                         r"after holding out 26 validation rows"):
        fit_density(build, {"loc": jnp.zeros(2)}, data, **{**kwargs, "batch_size": 78})


def _assert_no_compile(fn):
    before = engine._run_chunk_jit._cache_size()
    fn()
    assert engine._run_chunk_jit._cache_size() == before


@pytest.mark.parametrize("bad, error, message", [
    ("nan_rows", ValueError, r"data has 3 of 50 rows with NaN or infinite values "
                             r"\(first row indices: \[3, 7, 40\]\)"),
    ("wrong_shape", ValueError, r"data for variable \['b'\] has shape \[50, 3\]; expected "
                                r"\[N, 2\]"),
    ("wrong_width", ValueError, r"flat data must have shape \[N, 3\] .*got \[50, 4\]"),
    ("bool", TypeError, "boolean dtype"),
    ("complex", TypeError, "complex dtype"),
    ("object", TypeError, "non-numeric dtype"),
    ("wrong_keys", ValueError, "structure of the distribution's event shape"),
    ("too_few_rows", ValueError, r"`batch_size`=64 exceeds the 50 training rows\."),
])
def test_fit_density_rejects_bad_data_before_compiling(bad, error, message):
    rng = np.random.default_rng(0)
    flat = rng.normal(size=(50, 3)).astype(np.float32)
    data = {"a": flat[:, 0], "b": flat[:, 1:]}
    batch_size = 10
    if bad == "nan_rows":
        flat[[3, 40], 1] = np.nan
        flat[7, 0] = np.inf
        data = flat
    elif bad == "wrong_shape":
        data = {"a": flat[:, 0], "b": flat}
    elif bad == "wrong_width":
        data = np.concatenate([flat, flat[:, :1]], axis=1)
    elif bad == "bool":
        data = flat > 0
    elif bad == "complex":
        data = flat.astype(np.complex64)
    elif bad == "object":
        data = {"a": flat[:, 0].astype(object), "b": flat[:, 1:]}
    elif bad == "wrong_keys":
        data = {"a": flat[:, 0], "c": flat[:, 1:]}
    elif bad == "too_few_rows":
        batch_size = 64

    def run():
        with pytest.raises(error, match=message):
            fit_density(_two_part, {"a": jnp.zeros(()), "b": jnp.zeros(2)}, data,
                        optimizer=optax.adam(0.1), num_steps=5, batch_size=batch_size, seed=0,
                        validation_fraction=0.0, progress_bar=False)

    _assert_no_compile(run)


def test_fit_density_option_errors():
    data = np.zeros(20, np.float32)
    params = {"loc": jnp.zeros(()), "raw_scale": jnp.zeros(())}
    kwargs = dict(optimizer=optax.adam(0.1), num_steps=5, batch_size=4, seed=0,
                  progress_bar=False)
    with pytest.raises(ValueError, match="`patience` needs a validation set"):
        fit_density(_normal_build, params, data, patience=2, validation_fraction=0.0,
                    **kwargs)
    with pytest.raises(ValueError, match="`patience` must be a positive int, None or 'auto'"):
        fit_density(_normal_build, params, data, patience="never", **kwargs)
    with pytest.raises(ValueError, match="`validation_fraction` must be a number"):
        fit_density(_normal_build, params, data, validation_fraction="some", **kwargs)
    with pytest.raises(ValueError, match="either `validation_fraction` or `validation_data`"):
        fit_density(_normal_build, params, data, validation_fraction=0.2,
                    validation_data=data, **kwargs)
    with pytest.raises(ValueError, match=re.escape("`validation_fraction` must be in [0, 1)")):
        fit_density(_normal_build, params, data, validation_fraction=1.0, **kwargs)
    with pytest.raises(ValueError, match="scalar batch shape"):
        fit_density(lambda p: tfd.Normal(p["loc"] + jnp.zeros(3), 1.0), params, data,
                    **kwargs)
    with pytest.raises(ValueError, match="non-integer values"):
        fit_density(lambda p: tfd.Categorical(logits=p["loc"] + jnp.zeros(3)), params,
                    data + 0.5, **kwargs)


def test_loss_is_traced_once_per_compile():
    traces = []

    def loss(p, seed):
        traces.append(None)
        return jnp.sum((p - 1.0) ** 2)

    result = minimize(loss, jnp.zeros(3), optimizer=optax.sgd(0.1), num_steps=5, seed=0,
                      chunk_size=3, progress_bar=False)
    # Two chunks (3 + 2 masked-to-3 steps) share one compiled program: one trace in all.
    assert len(traces) == 1
    assert result.losses.shape == (5,) and bool(jnp.all(jnp.isfinite(result.losses)))
