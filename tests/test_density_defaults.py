"""fit_density's defaults that make densities generalise: the validation split, early stopping
that restores the best parameters, the embedded model fitted first, bounded flow scales (a
finite log-density far outside the data) and the train/validation divergence warning."""
from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats
from tensorflow_probability.substrates import jax as tfp

from emf_jax import templates
from emf_jax.density import DENSITY_MAX_LOG_SCALE, build_emf_density_stateless, model_params_of
from emf_jax.training import (
    DEFAULT_PATIENCE,
    DEFAULT_VALIDATION_FRACTION,
    ModelPart,
    fit_density,
    structure_data,
)
from emf_jax.training.loops import DEFAULT_PRETRAIN_MODEL_STEPS

tfd = tfp.distributions
SMALL = dict(hidden_units=(8,), num_backbone_layers=2)


def _normal_loc(params):
    return tfd.Normal(params["loc"], 1.0)


def _overfit_warnings(record):
    return [w for w in record if issubclass(w.category, RuntimeWarning)
            and "overfits" in str(w.message)]


def test_a_validation_split_and_early_stopping_are_on_by_default():
    # Training rows around 0, validation rows around 1; the location starts at 3 and SGD
    # walks it down towards the training mean: the validation NLL falls until the location
    # passes 1 and rises after, so the best chunk end is the one nearest loc = 1.
    rng = np.random.default_rng(0)
    train = rng.normal(0.0, 1.0, 400).astype(np.float32)
    valid = rng.normal(1.0, 1.0, 400).astype(np.float32)
    chunk = 5
    result = fit_density(_normal_loc, {"loc": jnp.asarray(3.0)}, train,
                         optimizer=optax.sgd(0.02), num_steps=2000, batch_size=400, seed=0,
                         validation_data=valid, chunk_size=chunk, progress_bar=False)
    val = result.validation_losses
    best = int(np.argmin(val))
    assert val[-1] > val[best] + 1e-3            # it rose after the best point ...
    # ... and the fit stopped DEFAULT_PATIENCE chunk ends after it, long before 2000 steps.
    assert len(val) == best + 1 + DEFAULT_PATIENCE
    assert len(result.losses) == len(val) * chunk < 2000
    assert result.best_step == (best + 1) * chunk
    # The returned parameters are the best ones: their validation NLL is the minimum, and
    # their location is the one that minimises the validation NLL (the validation mean) to
    # within one chunk's move (SGD steps of 0.02 * |loc - mean| < 0.06 per step).
    restored = float(-jnp.mean(_normal_loc(result.params).log_prob(valid)))
    np.testing.assert_allclose(restored, val[best], rtol=1e-5)
    assert abs(float(result.params["loc"]) - valid.mean()) < chunk * 0.06
    assert float(result.params["loc"]) > train.mean() + 0.5  # not the last (overfit) point

    # The default split holds out DEFAULT_VALIDATION_FRACTION of the rows.
    split = fit_density(_normal_loc, {"loc": jnp.asarray(0.0)}, train,
                        optimizer=optax.sgd(0.02), num_steps=20, batch_size=360, seed=0,
                        chunk_size=10, progress_bar=False)
    assert split.validation_losses.shape == (2,)
    with pytest.raises(ValueError, match="validation_fraction=0.0"):
        fit_density(_normal_loc, {"loc": jnp.asarray(0.0)}, train,
                    optimizer=optax.sgd(0.02), num_steps=20,
                    batch_size=int(400 * (1 - DEFAULT_VALIDATION_FRACTION)) + 1, seed=0,
                    progress_bar=False)
    # Opting out: no validation, the last parameters, all steps.
    none = fit_density(_normal_loc, {"loc": jnp.asarray(0.0)}, train,
                       optimizer=optax.sgd(0.02), num_steps=20, batch_size=400, seed=0,
                       validation_fraction=0.0, chunk_size=10, progress_bar=False)
    assert none.validation_losses.shape == (0,) and none.best_step == 20


def _walk_data(num_rows, num_steps, step_scale, initial_scale, seed):
    rng = np.random.default_rng(seed)
    x0 = initial_scale * rng.standard_normal((num_rows, 1))
    steps = step_scale * rng.standard_normal((num_rows, num_steps - 1))
    return np.cumsum(np.concatenate([x0, steps], 1), 1).astype(np.float32)


def test_the_model_is_fitted_first_to_its_maximum_likelihood():
    # A random walk with step scale 0.3 and initial scale 2; the template starts at 1 and 1.
    # Its maximum-likelihood scales are closed-form: the root mean square of the increments
    # and of x0. The model-first phase fits the template alone on the training rows (90%
    # of 500), full batch (fewer than 1024 rows), 500 Adam steps of 1e-2.
    T, n = 5, 500
    data = _walk_data(n, T, 0.3, 2.0, seed=1)
    mle_step = float(np.sqrt(np.mean(np.diff(data, axis=1) ** 2)))
    mle_initial = float(np.sqrt(np.mean(data[:, 0] ** 2)))
    model_fn, model_params = templates.random_walk(T)
    init_fn, build_fn = build_emf_density_stateless(model_fn, model_params, **SMALL)
    assert isinstance(build_fn.model_part, ModelPart)
    params = init_fn(jax.random.key(0))
    kwargs = dict(optimizer=optax.adam(1e-3), num_steps=0, batch_size=100, seed=0,
                  progress_bar=False)
    fitted = model_params_of(fit_density(build_fn, params, data, **kwargs).params)
    # The training split's MLE differs from the all-rows one by about its standard error:
    # sigma / sqrt(2 * 450 * 4) = 0.005 for the step scale, 2 / sqrt(2 * 450) = 0.07 for x0.
    step = float(jax.nn.softplus(fitted["raw_step_scale"]))
    initial = float(jax.nn.softplus(fitted["raw_initial_scale"]))
    assert abs(step - mle_step) < 0.02, (step, mle_step)
    assert abs(initial - mle_initial) < 0.25, (initial, mle_initial)
    # Without the phase (and with zero joint steps) nothing moves.
    untouched = model_params_of(fit_density(build_fn, params, data, pretrain_model_steps=0,
                                            **kwargs).params)
    np.testing.assert_allclose(jax.nn.softplus(untouched["raw_step_scale"]), 1.0, rtol=1e-5)
    # The flow keeps its initial (identity) parameters: only the model's part changed.
    result = fit_density(build_fn, params, data, **kwargs).params
    chex_equal = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)),
                              result["backbone"], params["backbone"])
    assert all(jax.tree.leaves(chex_equal))


def test_model_first_needs_a_model_part_and_is_off_for_the_backbone_alone():
    model_fn, model_params = templates.random_walk(3)
    _, flow_build = build_emf_density_stateless(model_fn, model_params, architecture="flow",
                                                **SMALL)
    _, fixed_build = build_emf_density_stateless(model_fn, model_params,
                                                 train_model_params=False, **SMALL)
    assert not hasattr(flow_build, "model_part") and not hasattr(fixed_build, "model_part")
    data = _walk_data(50, 3, 0.5, 1.0, seed=0)
    with pytest.raises(ValueError, match="`pretrain_model_steps` needs a density"):
        fit_density(_normal_loc, {"loc": 0.0}, data[:, 0], optimizer=optax.adam(0.1),
                    num_steps=1, batch_size=10, seed=0, pretrain_model_steps=5,
                    progress_bar=False)
    assert DEFAULT_PRETRAIN_MODEL_STEPS > 0


@pytest.mark.parametrize("template, architecture", [
    ("random_walk", "gemf-t"), ("random_walk", "flow"),
    # The mixture layer's CDF inversion compiles slowly (tens of seconds on 2 shared cores).
    pytest.param("mixture", "gemf-t", marks=pytest.mark.slow)])
def test_far_tail_points_get_a_finite_log_density(template, architecture):
    # Random, far-from-identity parameters (a stand-in for a fitted flow) and points up to
    # 1e15 away from the data. Without the bound the backbone's scale can shrink to its
    # floor (1e-3 per layer), so |z| reaches 1e21 and z^2 overflows float32 (3e38); with
    # |log scale| < 3 per layer, |z| stays below about e^6 * 1e15 / sigma and z^2 is finite.
    if template == "random_walk":
        model_fn, model_params = templates.random_walk(4)
        far = np.array([[0.0, 0.1, -0.1, 0.2], [50.0, -50.0, 50.0, -50.0],
                        [1e6, -1e6, 1e6, 0.0], [1e15, 0.0, -1e15, 1e15]], np.float32)
    else:
        model_fn, model_params = templates.gaussian_mixture(2, 5)
        far = np.array([[0.0, 0.0], [50.0, -50.0], [1e6, 0.0], [1e15, -1e15]], np.float32)
    init_fn, build_fn = build_emf_density_stateless(model_fn, model_params,
                                                    architecture=architecture, **SMALL)
    params = init_fn(jax.random.key(0))
    rng = np.random.default_rng(3)
    params = {**params, "backbone": jax.tree.map(
        lambda leaf: jnp.asarray(rng.normal(0.0, 1.0, np.shape(leaf)), leaf.dtype),
        params["backbone"])}
    log_prob = jax.jit(lambda p, x: build_fn(p).log_prob(x))
    values = np.asarray(log_prob(params, structure_data(build_fn(params), far)))
    assert np.all(np.isfinite(values)), values
    assert values[0] > values[-1]  # and far points are much less likely than the bulk


def _memoriser(params):
    """A kernel density whose centres sit on the training rows and whose width trains."""
    width = 0.05 + jax.nn.softplus(params["raw"])
    return tfd.MixtureSameFamily(tfd.Categorical(logits=jnp.zeros(params["locs"].shape[0])),
                                 tfd.Normal(params["locs"], width))


def test_the_divergence_warning_fires_when_the_density_overfits():
    # Overfitting by construction: 40 kernels on the 40 training rows, their common width
    # free above 0.05. Maximum likelihood shrinks the width to that floor (the training NLL
    # falls) while the NLL of 400 fresh rows rises. At width 0.1 and below (computed in
    # NumPy for these rows) the median gap is more than 5 of its standard errors; the mean
    # gap, whose standard error the validation NLL's heavy tail inflates, stays below 4.
    rng = np.random.default_rng(0)
    train = rng.normal(size=40).astype(np.float32)
    valid = rng.normal(size=400).astype(np.float32)
    params = {"locs": jnp.asarray(train), "raw": jnp.asarray(0.5)}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fit_density(_memoriser, params, train, optimizer=optax.adam(0.05),
                             num_steps=300, batch_size=40, seed=0, validation_data=valid,
                             patience=None, chunk_size=20, progress_bar=False)
    assert len(_overfit_warnings(record)) == 1, [str(w.message) for w in record]
    assert result.validation_losses[-1] > result.validation_losses.min() + 1.0


def test_the_divergence_warning_stays_quiet_on_a_benign_fit():
    # A well-specified two-parameter Normal on 2000 rows: the validation-minus-training gap is
    # of the order of its standard error (about 0.05 nats for 200 rows), far below the
    # threshold of 0.1 nats + 4 standard errors, at every chunk end.
    rng = np.random.default_rng(1)
    data = rng.normal(3.0, 2.0, 2000).astype(np.float32)

    def normal(p):
        return tfd.Normal(p["loc"], jax.nn.softplus(p["raw"]))

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fit_density(normal, {"loc": jnp.asarray(0.0), "raw": jnp.asarray(1.0)},
                             data, optimizer=optax.adam(0.05), num_steps=400, batch_size=100,
                             seed=0, patience=None, chunk_size=20, progress_bar=False)
    assert not _overfit_warnings(record), [str(w.message) for w in record]
    assert result.validation_losses.shape == (20,)


def test_density_backbones_bound_their_log_scales_by_default():
    model_fn, model_params = templates.random_walk(3)
    init_fn, build_fn = build_emf_density_stateless(model_fn, model_params,
                                                    architecture="flow", **SMALL)
    _, unbounded_build = build_emf_density_stateless(
        model_fn, model_params, architecture="flow",
        backbone_kwargs={"max_log_scale": None}, **SMALL)
    params = init_fn(jax.random.key(0))
    # Huge conditioner outputs: the bounded log-det stays within 2 layers * 3 dims * bound.
    params = {**params, "backbone": jax.tree.map(lambda leaf: leaf + 30.0,
                                                 params["backbone"])}
    z = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
    _, log_det = build_fn(params).flow.forward_and_log_det(params, z)
    _, unbounded = unbounded_build(params).flow.forward_and_log_det(params, z)
    assert float(jnp.max(jnp.abs(log_det))) < 2 * 3 * DENSITY_MAX_LOG_SCALE
    assert float(jnp.max(jnp.abs(unbounded))) > 2 * 3 * DENSITY_MAX_LOG_SCALE


def test_the_mixture_background_keeps_a_far_tail_point_likely():
    # Maximum likelihood narrows a mixture's edge components (the 2-D banana's fit left
    # scales near 0.01); a GEMF-T density on that mixture then gave a tail point beyond every
    # component log-density -4.4e4 (the plain template at x = 7: -3.7e4). The template's
    # fixed background component N((low + high) / 2, (high - low) / 2) of weight w bounds the
    # template's log-density below by log w + log N(x; 0, 4) (loc_range (-4, 4)), and the
    # density at initialisation (the backbone the identity, gate 0.999) follows it.
    model_fn, model_params = templates.gaussian_mixture(1, 5)
    model_params = {**model_params,
                    "raw_scales": jnp.full((1, 5), float(np.log(np.expm1(0.01))))}
    init_fn, build_fn = build_emf_density_stateless(model_fn, model_params, **SMALL)
    params = init_fn(jax.random.key(0))
    x = np.array([[0.0], [7.0], [30.0]], np.float32)
    values = np.asarray(jax.jit(lambda p, v: build_fn(p).log_prob(v))(
        params, structure_data(build_fn(params), x)))
    floor = (np.log(templates.DEFAULT_BACKGROUND_WEIGHT)
             + stats.norm.logpdf(x[:, 0], 0.0, 4.0))
    # The gate's blend with the identity (weight 1 - 0.999) moves the log-density by 0.04
    # nats at x = 30 (measured); 0.5 nats leaves ten times that.
    assert np.all(values[1:] > floor[1:] - 0.5), (values, floor)
    # The template alone without the background: beyond all narrow components.
    plain_fn, _ = templates.gaussian_mixture(1, 5, background_weight=0.0)
    plain = np.asarray(plain_fn(model_params).log_prob((jnp.asarray(x),)))
    assert plain[1] < -1e4 and values[1] > plain[1] + 1e4


# ---------------------------------------------------------------- the start chosen on validation


def test_choose_start_keeps_the_first_unless_another_is_clearly_better():
    from emf_jax.training.starts import choose_start
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 1.0, 400)
    # Paired rows: candidate 1 better by 0.5 nats with a paired spread of 0.1 (standard
    # error 0.005): far beyond two standard errors.
    clear = np.stack([base, base - 0.5 + rng.normal(0.0, 0.1, 400)])
    assert int(choose_start(jnp.asarray(clear))) == 1
    # Better by 0.005 nats with a paired spread of 1 (standard error 0.05): the first stays.
    close = np.stack([base, base - 0.005 + rng.normal(0.0, 1.0, 400) - 0.0])
    close[1] += (np.mean(close[0]) - 0.005) - np.mean(close[1])
    assert int(choose_start(jnp.asarray(close))) == 0
    # A non-finite row rules a candidate out, however good its other rows.
    broken = clear.copy()
    broken[1, 3] = np.inf
    assert int(choose_start(jnp.asarray(broken))) == 0
    # Jit-traceable.
    assert int(jax.jit(choose_start)(jnp.asarray(clear))) == 1
    with pytest.raises(ValueError, match="row_nlls"):
        choose_start(jnp.zeros((2, 1)))


def _two_starts(params):
    """Two candidate locations: as given, and shifted by +3."""
    return {"loc": jnp.stack([params["loc"], params["loc"] + 3.0])}


def _normal_with_starts(params):
    return tfd.Normal(params["loc"], 1.0)


_normal_with_starts.start_candidates = __import__(
    "emf_jax.training", fromlist=["StartCandidates"]).StartCandidates(
        ("as given", "shifted"), _two_starts)


def test_fit_density_pilots_the_start_candidates_and_keeps_the_better_one():
    # Rows around 3.5; the candidate starts are loc = 0 and loc = 3. After a 20-step pilot of
    # SGD 0.01 (each step moves loc by 1% of the distance), the first is still ~2.9 away and
    # the second is ~0.4 away: its validation NLL is lower by ~4 nats, far beyond 2 paired
    # standard errors. The fit then continues from the chosen pilot exactly as a fit from
    # loc = 3 would (same minibatches, same chunk ends).
    rng = np.random.default_rng(0)
    data = rng.normal(3.5, 1.0, 500).astype(np.float32)
    kwargs = dict(optimizer=optax.sgd(0.01), num_steps=60, batch_size=50, seed=0,
                  chunk_size=10, progress_bar=False)
    result = fit_density(_normal_with_starts, {"loc": jnp.asarray(0.0)}, data,
                         pilot_steps=20, **kwargs)
    assert result.start_choice == 1
    assert result.start_validation_nll.shape == (2,)
    assert result.start_validation_nll[0] > result.start_validation_nll[1] + 2.0
    plain = fit_density(_normal_loc, {"loc": jnp.asarray(3.0)}, data, **kwargs)
    np.testing.assert_allclose(result.validation_losses, plain.validation_losses, rtol=1e-5)
    np.testing.assert_allclose(result.losses, plain.losses, rtol=1e-5)
    np.testing.assert_allclose(result.params["loc"], plain.params["loc"], rtol=1e-5)
    assert result.best_step == plain.best_step
    # Without a pilot the start is the one given.
    none = fit_density(_normal_with_starts, {"loc": jnp.asarray(0.0)}, data, pilot_steps=0,
                       **kwargs)
    assert none.start_choice == -1 and none.start_validation_nll.shape == (0,)


def test_the_pilot_compiles_nothing_beyond_the_fit():
    # The pilot runs each candidate through the fit's own chunk program, so a fit with a
    # pilot compiles as many XLA programs as the same fit without one (a vmapped pilot
    # compiled one more, larger program).
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kw: compiles.append(event)
        if event == "/jax/core/compile/backend_compile_duration" else None)

    def fresh_build():  # a new function each time: its own compiled programs
        def build(params):
            return tfd.Normal(params["loc"], 1.0)
        build.start_candidates = _normal_with_starts.start_candidates
        return build

    data = np.random.default_rng(0).normal(3.5, 1.0, 200).astype(np.float32)

    def count(pilot_steps):
        start = len(compiles)
        result = fit_density(fresh_build(), {"loc": jnp.asarray(0.0)}, data,
                             optimizer=optax.sgd(0.01), num_steps=40, batch_size=20, seed=0,
                             chunk_size=10, pilot_steps=pilot_steps, patience=None,
                             progress_bar=False)
        return len(compiles) - start, result

    count(20)  # the small eager operations of both kinds of fit, compiled once
    count(0)
    without, _ = count(0)
    with_pilot, result = count(20)
    assert result.start_choice == 1
    assert without > 0 and with_pilot == without


def test_the_pilot_options_are_checked():
    data = np.random.default_rng(0).normal(size=100).astype(np.float32)
    kwargs = dict(optimizer=optax.sgd(0.01), num_steps=20, batch_size=10, seed=0,
                  chunk_size=10, progress_bar=False)
    with pytest.raises(ValueError, match="`pilot_steps` needs a build_fn"):
        fit_density(_normal_loc, {"loc": 0.0}, data, pilot_steps=10, **kwargs)
    with pytest.raises(ValueError, match="validation rows"):
        fit_density(_normal_with_starts, {"loc": 0.0}, data, pilot_steps=10,
                    validation_fraction=0.0, **kwargs)
    with pytest.raises(ValueError, match="multiple of `chunk_size`"):
        fit_density(_normal_with_starts, {"loc": 0.0}, data, pilot_steps=15, **kwargs)
    with pytest.raises(ValueError, match="exceeds `num_steps`"):
        fit_density(_normal_with_starts, {"loc": 0.0}, data, pilot_steps=30, **kwargs)
    with pytest.raises(ValueError, match="'auto'"):
        fit_density(_normal_with_starts, {"loc": 0.0}, data, pilot_steps="yes", **kwargs)


def test_the_density_offers_its_gate_candidates_by_default_and_keeps_the_old_start():
    from emf_jax.density import DENSITY_GATE_CANDIDATES
    model_fn, model_params = templates.random_walk(3)
    init_fn, build_fn = build_emf_density_stateless(model_fn, model_params, **SMALL)
    starts = build_fn.start_candidates
    assert starts.labels == tuple(f"gate {g:g}" for g in DENSITY_GATE_CANDIDATES)
    params = init_fn(jax.random.key(0))
    stacked = jax.jit(starts.make)(params)
    for leaf in jax.tree.leaves(stacked["structured"]["gates"]):
        np.testing.assert_allclose(jax.nn.sigmoid(leaf), DENSITY_GATE_CANDIDATES, rtol=1e-4)
    # Everything else is the same parameter set repeated.
    np.testing.assert_array_equal(jax.tree.leaves(stacked["backbone"])[0][1],
                                  jax.tree.leaves(params["backbone"])[0])
    # The init's gates are the first candidate's (the paper's start).
    for leaf in jax.tree.leaves(params["structured"]["gates"]):
        np.testing.assert_allclose(jax.nn.sigmoid(leaf), DENSITY_GATE_CANDIDATES[0], rtol=1e-4)
    # The old start, by option: one gate, no candidates.
    _, fixed = build_emf_density_stateless(model_fn, model_params, initial_gate=0.999, **SMALL)
    assert not hasattr(fixed, "start_candidates")
    # Ungated architectures have nothing to choose.
    _, ungated = build_emf_density_stateless(model_fn, model_params, architecture="emf-t",
                                             **SMALL)
    assert not hasattr(ungated, "start_candidates")
    with pytest.raises(ValueError, match="`initial_gate`"):
        build_emf_density_stateless(model_fn, model_params, initial_gate="best", **SMALL)
    with pytest.raises(ValueError, match="`initial_gate` must be in"):
        build_emf_density_stateless(model_fn, model_params, initial_gate=1.0, **SMALL)
    with pytest.raises(TypeError, match="`initial_gate`"):
        build_emf_density_stateless(model_fn, model_params, initial_gate=None, **SMALL)
