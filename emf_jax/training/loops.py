"""The training loops: `fit_vi` (variational inference) and `fit_density` (maximum likelihood).

Both run on the engine's chunked scan (`emf_jax.training.engine`).

Many devices. `fit_vi` and `fit_density` take ``mesh=`` (a `jax.sharding.Mesh`) or
``devices=`` (a list of devices): parameters and optimiser state are replicated and the Monte
Carlo sample axis (VI) or the minibatch axis (density) is split across the devices, inside
the same compiled program (see `emf_jax.sharding`). Results equal the single-device ones up
to the order of floating-point reductions.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Callable, Literal, NamedTuple, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tensorflow_probability.substrates import jax as tfp

from emf_jax._checks import as_key, check_callable, check_int, check_optimizer, check_positive_float
from emf_jax.sharding import data_parallel
from emf_jax.training.data import num_rows, shape_str, split_rows, structure_data
from emf_jax.training.engine import (
    FitResult,
    Seed,
    freeze_compiler_options,
    run_minimize,
    static,
)
from emf_jax.training.losses import MinibatchNLL, VariationalLoss, row_nll_runner
from emf_jax.training.starts import DEFAULT_PILOT_STEPS, StartCandidates, run_pilot

__all__ = [
    "DEFAULT_PATIENCE",
    "DEFAULT_PILOT_STEPS",
    "DEFAULT_PRETRAIN_MODEL_STEPS",
    "DEFAULT_VALIDATION_FRACTION",
    "DensityFitResult",
    "ModelPart",
    "StartCandidates",
    "fit_density",
    "fit_vi",
]

PyTree = Any
Auto = Literal["auto"]

# fit_density's defaults (see its docstring).
DEFAULT_VALIDATION_FRACTION = 0.1
DEFAULT_PATIENCE = 10
DEFAULT_PRETRAIN_MODEL_STEPS = 500
# The model-first phase: a template's few parameters take a large learning rate, and a
# larger minibatch than the joint fit (the template's log-density is cheap).
_PRETRAIN_OPTIMIZER = optax.adam(1e-2)
_PRETRAIN_BATCH = 1024
# The divergence warning: validation NLL above the training NLL (on as many training rows)
# by more than this margin plus this many standard errors of the difference, at this many
# consecutive chunk ends.
_DIVERGENCE_MARGIN = 0.1
_DIVERGENCE_STANDARD_ERRORS = 4.0
_DIVERGENCE_CHUNKS = 3


class ModelPart(NamedTuple):
    """The embedded model of a density: where its parameters sit, and its density alone.

    A density builder attaches one to its ``build_fn`` as ``build_fn.model_part`` (as
    `emf_jax.build_emf_density_stateless` does when the model's parameters train); then
    `fit_density` first fits the model alone by maximum likelihood (cheap: a template has few
    parameters and a closed-form log-density), and the joint fit starts from there.

    Attributes:
      build: ``build(model_params) -> tfd.Distribution`` over the density's events: the
        model alone.
      get: ``get(params) -> model_params``, the model's part of the density's parameters.
      set: ``set(params, model_params) -> params``, a copy with that part replaced.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> part = ModelPart(build=lambda m: tfp.distributions.Normal(m["loc"], 1.0),
      ...                  get=lambda p: p["model"], set=lambda p, m: {**p, "model": m})
      >>> part.set({"model": {"loc": 0.0}, "flow": 1.0}, {"loc": 2.0})["model"]
      {'loc': 2.0}
    """

    build: Callable[[PyTree], Any]
    get: Callable[[PyTree], PyTree]
    set: Callable[[PyTree, PyTree], PyTree]

# fit_vi warns when more than this share of its Monte Carlo draws were left out as non-finite.
NONFINITE_DRAWS_WARNING_FRACTION = 0.02


class DensityFitResult(NamedTuple):
    """Result of `fit_density`: `FitResult`'s fields plus validation records.

    Attributes:
      params: the parameters at `best_step` (the best validation loss when there is a
        validation set, as by default, else the last step).
      opt_state: the optimiser state at `best_step`.
      losses: array `[steps_run]` of the minibatch training loss at each step run
        (shorter than `num_steps` when early stopping ended the fit).
      num_nonfinite: number of steps skipped because the loss or a gradient was not
        finite.
      validation_losses: NumPy array `[chunks_run]` of the validation negative mean
        log-likelihood at the end of each chunk (empty without a validation set).
      best_step: global step count (including `start_step`) after which `params` were
        taken; resume from `params` and `opt_state` with `start_step=best_step`.
      start_choice: the index of the start that the pilot chose (see `fit_density`;
        ``build_fn.start_candidates.labels[start_choice]`` names it), -1 without a pilot.
      start_validation_nll: NumPy array ``[num_candidates]``, each candidate start's
        validation NLL after the pilot (empty without a pilot).

    Example:
      >>> import numpy as np, optax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> data = np.random.default_rng(0).normal(size=100).astype(np.float32)
      >>> result = fit_density(lambda p: tfp.distributions.Normal(p["loc"], 1.0),
      ...                      {"loc": 0.0}, data, optimizer=optax.adam(0.1), num_steps=20,
      ...                      batch_size=10, seed=0, validation_fraction=0.2, chunk_size=10,
      ...                      progress_bar=False)
      >>> result.losses.shape, result.validation_losses.shape, result.best_step in (10, 20)
      ((20,), (2,), True)
    """

    params: PyTree
    opt_state: PyTree
    losses: jax.Array
    num_nonfinite: int
    validation_losses: np.ndarray
    best_step: int
    start_choice: int = -1
    start_validation_nll: np.ndarray = np.zeros((0,))


def fit_vi(target_log_prob_fn: Callable[..., jax.Array],
           build_fn: Callable[[PyTree], Any], params: PyTree, *, optimizer: Any,
           num_steps: int, seed: Seed, sample_size: int = 1,
           importance_sample_size: int = 1,
           discrepancy_fn: Callable[[jax.Array], jax.Array] = tfp.vi.kl_reverse,
           gradient_estimator: Any = tfp.vi.GradientEstimators.REPARAMETERIZATION,
           chunk_size: int = 100, opt_state: PyTree | None = None, start_step: int = 0,
           progress_bar: bool = True, mesh: Any = None,
           devices: Any = None,
           compiler_options: Mapping[str, Any] | None = None,
           max_grad_norm: float | None = None) -> FitResult:
    """Fits a surrogate posterior `build_fn(params)` to an unnormalised target density.

    The loss of a step is `tfp.vi.monte_carlo_variational_loss` of the surrogate against
    the target, as in `tfp.vi.fit_surrogate_posterior_stateless`: with the defaults, the
    negative ELBO estimated from `sample_size` reparameterised draws of
    `surrogate.experimental_sample_and_log_prob`. The target is called as
    `target_log_prob_fn(*sample)` for list/tuple-like samples (e.g. the `StructTuple` of a
    `JointDistributionCoroutine`), `target_log_prob_fn(**sample)` for dict samples and
    `target_log_prob_fn(sample)` for a single array; it must accept a leading sample axis.
    Unlike TFP, `build_fn` always receives the whole parameter pytree as one argument.
    The optimisation runs on `minimize`'s engine (chunks, non-finite guard, resume).

    Non-finite draws (`VariationalLoss`): a draw whose term ``log p(x) - log q(x)`` is NaN
    or infinite is left out of its step's Monte Carlo average (the mean is over the finite
    draws) and counted in `FitResult.num_nonfinite_draws`; a step is skipped only when all
    its draws (or its gradient) are non-finite. A `RuntimeWarning` says so when more than
    2 % of the draws were left out, and (from the engine) whenever a step was skipped.

    Args:
      target_log_prob_fn: unnormalised log-density of the target, e.g.
        `model.experimental_pin(...).unnormalized_log_prob`.
      build_fn: `build_fn(params) -> tfd.Distribution`, the surrogate.
      params: initial parameters (a pytree, typically a dict).
      optimizer: an `optax.GradientTransformation`.
      num_steps: number of optimisation steps.
      seed: an int or a PRNG key; step `t` uses `jax.random.fold_in(key, t)`.
      sample_size: Monte Carlo draws per step.
      importance_sample_size: draws combined into one importance-weighted term (IWAE
        bound when > 1); see `tfp.vi.monte_carlo_variational_loss`.
      discrepancy_fn: Csiszar function of the log weights; `tfp.vi.kl_reverse` gives the
        ELBO.
      gradient_estimator: a `tfp.vi.GradientEstimators` member.
      chunk_size: steps per compiled scan chunk (progress bar update interval).
      opt_state: optimiser state to resume from (with `params` and `start_step`).
      start_step: global index of the first step when resuming.
      progress_bar: whether to show a tqdm progress bar.
      mesh: a `jax.sharding.Mesh`: split the `sample_size * importance_sample_size` Monte
        Carlo draws of each step across all its devices (data parallel; parameters are
        replicated). Their number must be a multiple of the number of devices.
      devices: a list of devices instead of `mesh` (a one-axis mesh over them).
      compiler_options: XLA options for compiling the training program, passed to
        `jax.jit(..., compiler_options=...)`. On the CPU, ``{"xla_disable_hlo_passes":
        "fusion"}`` cuts the compile time of long Python-loop models (one variable per
        time step) several-fold; see the performance guide in the docs.
      max_grad_norm: if given, clip each step's gradient to this global norm before the
        optimiser sees it (as `optax.clip_by_global_norm`; the optimiser state keeps the
        optimiser's own structure).

    Returns:
      A `FitResult(params, opt_state, losses, num_nonfinite, num_nonfinite_draws)`;
      `losses` are the per-step loss estimates (the negative ELBO by default, over the
      finite draws). With `mesh`/`devices` the arrays are replicated on the mesh.

    Raises:
      TypeError: if a function argument is not callable or the optimiser is not optax-like.
      ValueError: if a count or `max_grad_norm` is out of range, or the draws do not split
        evenly over the devices.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> target = tfd.Normal(2.0, 0.5).log_prob
      >>> build = lambda p: tfd.Normal(p["loc"], jax.nn.softplus(p["raw_scale"]))
      >>> result = fit_vi(target, build, {"loc": 0.0, "raw_scale": 0.0},
      ...                 optimizer=optax.adam(0.05), num_steps=400, sample_size=16,
      ...                 seed=0, progress_bar=False)
      >>> bool(abs(result.params["loc"] - 2.0) < 0.1)
      True
    """
    for name, fn in (("target_log_prob_fn", target_log_prob_fn), ("build_fn", build_fn),
                     ("discrepancy_fn", discrepancy_fn)):
        check_callable(name, fn)
    check_optimizer(optimizer)
    plan = data_parallel(mesh, devices)
    sample_size = check_int("sample_size", sample_size, 1)
    importance_sample_size = check_int("importance_sample_size", importance_sample_size, 1)
    max_grad_norm = check_positive_float("max_grad_norm", max_grad_norm, allow_none=True)
    if plan is not None:
        plan.check_divisible(sample_size * importance_sample_size,
                             "sample_size * importance_sample_size")
    loss_fn = VariationalLoss(
        target_log_prob_fn=target_log_prob_fn, build_fn=build_fn,
        sample_size=sample_size, importance_sample_size=importance_sample_size,
        discrepancy_fn=discrepancy_fn, gradient_estimator=gradient_estimator, plan=plan)
    result, steps_run = run_minimize(
        loss_fn, params, optimizer=optimizer, num_steps=check_int("num_steps", num_steps, 0),
        key=as_key(seed), args=(), chunk_size=check_int("chunk_size", chunk_size, 1),
        opt_state=opt_state, start_step=check_int("start_step", start_step, 0),
        progress_bar=progress_bar, description="fit_vi", plan=plan,
        compiler_options=freeze_compiler_options(compiler_options),
        max_grad_norm=max_grad_norm)
    # A term is one group of importance samples.
    total = steps_run * sample_size
    if total and result.num_nonfinite_draws > NONFINITE_DRAWS_WARNING_FRACTION * total:
        warnings.warn(
            f"fit_vi: {100 * result.num_nonfinite_draws / total:.1f}% of draws "
            f"({result.num_nonfinite_draws} of {total}) had a non-finite target or surrogate "
            "log-density and were left out of their step's average: the surrogate puts mass "
            "where the target overflows (e.g. heavy-tailed priors with an exp link). Start "
            "the surrogate where the target is finite, lower the learning rate or set "
            "`max_grad_norm`.", RuntimeWarning, stacklevel=2)
    return result


def fit_density(build_fn: Callable[[PyTree], Any], params: PyTree, data: Any, *,
                optimizer: Any, num_steps: int, batch_size: int, seed: Seed,
                validation_fraction: Union[float, Auto] = "auto",
                validation_data: Any = None,
                patience: Union[int, None, Auto] = "auto", chunk_size: int = 100,
                opt_state: PyTree | None = None, start_step: int = 0,
                progress_bar: bool = True, mesh: Any = None,
                devices: Any = None,
                compiler_options: Mapping[str, Any] | None = None,
                pretrain_model_steps: Union[int, Auto] = "auto",
                pretrain_optimizer: Any = None,
                pilot_steps: Union[int, Auto] = "auto") -> DensityFitResult:
    """Fits a density `build_fn(params)` to data by minibatch maximum likelihood.

    Each step draws `batch_size` training rows uniformly with replacement (all rows, in
    order, when `batch_size` equals the number of training rows) with `jax.random` inside
    the compiled scan, and takes an optimiser step on the negative mean log-likelihood
    `-mean(build_fn(params).log_prob(batch))`. Data are checked and structured by
    `structure_data` before anything is compiled.

    The defaults aim at a density that generalises (a flexible flow on a few thousand rows
    overfits otherwise):

    - Validation. By default `DEFAULT_VALIDATION_FRACTION` (10%) of the rows are held out
      (a random split that depends only on `seed`, so a resumed fit with the same seed sees
      the same split); `validation_data` gives a separate set instead, and
      ``validation_fraction=0.0`` opts out. The validation negative mean log-likelihood is
      evaluated at the end of every chunk of `chunk_size` steps, and the returned `params`
      are those of the best chunk end.
    - Early stopping. With a validation set the fit stops after `DEFAULT_PATIENCE` (10)
      chunk ends without improvement; ``patience=None`` runs all `num_steps`.
    - The embedded model first. When ``build_fn.model_part`` is a `ModelPart` (the EMF
      densities of `emf_jax.build_emf_density_stateless` with trainable model parameters),
      the model alone is first fitted by maximum likelihood on the training rows for
      `DEFAULT_PRETRAIN_MODEL_STEPS` (500) steps (Adam, learning rate 1e-2, minibatches of
      up to 1024 rows), and the joint fit starts from those model parameters. Otherwise
      the flow, more flexible, absorbs what the model's parameters should learn (e.g. the
      scale of a random walk's steps) before they learn it. Skipped when resuming
      (`opt_state` given or ``start_step > 0``).
    - A divergence warning. At each chunk end the training NLL is also evaluated on as many
      training rows as the validation set has; a `RuntimeWarning` reports when the
      validation NLL exceeds it, in mean or in median (robust to the heavy tail of an
      overfitted density's validation NLL), by more than 0.1 nats plus 4 standard errors of
      the difference at 3 consecutive chunk ends (the density overfits; the returned
      parameters are still the best validation point).
    - The start chosen on validation rows. When ``build_fn.start_candidates`` is a
      `StartCandidates` with several candidates (the gated EMF densities of
      `emf_jax.build_emf_density_stateless` with ``initial_gate="auto"``: the model's gates
      at 0.999 and at 0.1), each candidate, made from `params` after the model-first fit,
      takes the first `DEFAULT_PILOT_STEPS` (500) steps of the joint fit, one after the
      other on the same minibatches and with the fit's own compiled program (the pilot
      costs its steps, no compilation); the one with the lowest validation NLL is kept (the first
      unless another is lower by more than two standard errors of the paired row
      differences; `emf_jax.training.starts.choose_start`) and the fit continues from its
      pilot parameters and optimiser state, as if it had started there. Needs a validation
      set; skipped when resuming. Why: from λ = 0.999 the fit does not learn to close a gate
      when the model hurts the held-out rows (docs/density.md).

    Args:
      build_fn: `build_fn(params) -> tfd.Distribution` with scalar batch shape; it may have
        a `ModelPart` as attribute ``model_part``.
      params: initial parameters (a pytree, typically a dict).
      data: rows of the event structure or a flat `[N, D]` array; see `structure_data`.
      optimizer: an `optax.GradientTransformation`.
      num_steps: maximum number of optimisation steps (of the joint fit).
      batch_size: rows per minibatch, at most the number of training rows.
      seed: an int or a PRNG key; it fixes the validation split and the minibatches.
      validation_fraction: share of the rows held out for validation, in [0, 1);
        ``"auto"``: `DEFAULT_VALIDATION_FRACTION` unless `validation_data` is given.
      validation_data: a separate validation set (same forms as `data`); exclusive with a
        nonzero `validation_fraction`.
      patience: chunk ends without validation improvement before stopping; `None` never
        stops early; ``"auto"``: `DEFAULT_PATIENCE` with a validation set, else None. An
        integer needs a validation set.
      chunk_size: steps per compiled scan chunk, also the validation interval.
      opt_state: optimiser state to resume from (with `params` and `start_step`).
      start_step: global index of the first step when resuming.
      progress_bar: whether to show a tqdm progress bar.
      mesh: a `jax.sharding.Mesh`: split each minibatch's rows across all its devices (data
        parallel; parameters and data are replicated). `batch_size` must be a multiple of
        the number of devices.
      devices: a list of devices instead of `mesh` (a one-axis mesh over them).
      compiler_options: XLA options for compiling the training and validation programs, passed to
        `jax.jit(..., compiler_options=...)`. On the CPU, ``{"xla_disable_hlo_passes":
        "fusion"}`` cuts the compile time of long Python-loop models (one variable per
        time step) several-fold; see the performance guide in the docs.
      pretrain_model_steps: steps of the model-alone fit before the joint fit; ``"auto"``:
        `DEFAULT_PRETRAIN_MODEL_STEPS` when `build_fn` has a ``model_part`` and the fit is
        not resumed, else 0. A positive integer needs a ``model_part``.
      pretrain_optimizer: the optimiser of the model-alone fit (default: Adam, 1e-2).
      pilot_steps: steps of the pilot that chooses between ``build_fn.start_candidates``
        (they count towards `num_steps`); ``"auto"``: `DEFAULT_PILOT_STEPS` (at most
        `num_steps`) when `build_fn` has several start candidates, a validation set is
        used and the fit is not resumed, else 0 (the first candidate, i.e. `params` as
        given). A positive integer needs start candidates and a validation set.

    Returns:
      A `DensityFitResult(params, opt_state, losses, num_nonfinite, validation_losses,
      best_step, start_choice, start_validation_nll)`; `losses`, `num_nonfinite` and
      `best_step` count the joint fit's steps (the pilot's of the chosen start included).

    Raises:
      TypeError: for an optimiser that is not optax-like or data of a bad dtype.
      ValueError: for bad data (see `structure_data`), too few rows for `batch_size`,
        inconsistent validation options, `pretrain_model_steps` without a model part,
        `pilot_steps` without start candidates or a validation set, or a `batch_size` that
        does not split evenly over the devices.

    Warns:
      RuntimeWarning: when the validation loss stays well above the training loss (see
        above), and (from the engine) when steps were skipped for non-finite values.

    Example:
      >>> import jax, numpy as np, optax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> data = np.random.default_rng(0).normal(3.0, 1.0, size=500).astype(np.float32)
      >>> build = lambda p: tfd.Normal(p["loc"], jax.nn.softplus(p["raw_scale"]))
      >>> result = fit_density(build, {"loc": 0.0, "raw_scale": 0.5}, data,
      ...                      optimizer=optax.adam(0.05), num_steps=300, batch_size=100,
      ...                      seed=0, progress_bar=False)
      >>> bool(abs(result.params["loc"] - data.mean()) < 0.2)
      True
      >>> result.validation_losses.shape       # 10% of the rows held out; 3 chunk ends
      (3,)
    """
    check_callable("build_fn", build_fn)
    check_optimizer(optimizer)
    num_steps = check_int("num_steps", num_steps, 0)
    batch_size = check_int("batch_size", batch_size, 1)
    plan = data_parallel(mesh, devices)
    if plan is not None:
        plan.check_divisible(batch_size, "batch_size")
    chunk_size = check_int("chunk_size", chunk_size, 1)
    start_step = check_int("start_step", start_step, 0)
    frozen_options = freeze_compiler_options(compiler_options)
    if isinstance(validation_fraction, str):
        if validation_fraction != "auto":
            raise ValueError(f"`validation_fraction` must be a number in [0, 1) or 'auto', "
                             f"got {validation_fraction!r}.")
        validation_fraction = (DEFAULT_VALIDATION_FRACTION if validation_data is None
                               else 0.0)
    if not 0.0 <= float(validation_fraction) < 1.0:
        raise ValueError(f"`validation_fraction` must be in [0, 1), got {validation_fraction}.")
    if validation_data is not None and validation_fraction > 0:
        raise ValueError("give either `validation_fraction` or `validation_data`, not both.")
    has_validation = validation_data is not None or validation_fraction > 0
    if isinstance(patience, str):
        if patience != "auto":
            raise ValueError(f"`patience` must be a positive int, None or 'auto', got "
                             f"{patience!r}.")
        patience = DEFAULT_PATIENCE if has_validation else None
    if patience is not None:
        patience = check_int("patience", patience, 1)
    if patience is not None and not has_validation:
        raise ValueError("`patience` needs a validation set: set `validation_fraction` or "
                         "`validation_data`.")
    model_part = getattr(build_fn, "model_part", None)
    if model_part is not None and not isinstance(model_part, ModelPart):
        raise TypeError(f"build_fn.model_part must be an emf_jax.training.ModelPart, got "
                        f"{type(model_part).__name__}")
    resuming = opt_state is not None or start_step > 0
    if isinstance(pretrain_model_steps, str):
        if pretrain_model_steps != "auto":
            raise ValueError(f"`pretrain_model_steps` must be a non-negative int or 'auto', "
                             f"got {pretrain_model_steps!r}.")
        pretrain_model_steps = (DEFAULT_PRETRAIN_MODEL_STEPS
                                if model_part is not None and not resuming else 0)
    pretrain_model_steps = check_int("pretrain_model_steps", pretrain_model_steps, 0)
    if pretrain_model_steps > 0 and model_part is None:
        raise ValueError("`pretrain_model_steps` needs a density whose build_fn has a "
                         "`model_part` (the EMF densities of build_emf_density_stateless "
                         "with trainable model parameters); this build_fn has none.")
    if pretrain_optimizer is not None:
        check_optimizer(pretrain_optimizer)
    starts = getattr(build_fn, "start_candidates", None)
    if starts is not None and not isinstance(starts, StartCandidates):
        raise TypeError(f"build_fn.start_candidates must be an "
                        f"emf_jax.training.StartCandidates, got {type(starts).__name__}")
    several = starts is not None and len(starts.labels) > 1
    if isinstance(pilot_steps, str):
        if pilot_steps != "auto":
            raise ValueError(f"`pilot_steps` must be a non-negative int or 'auto', got "
                             f"{pilot_steps!r}.")
        # Whole chunks: DEFAULT_PILOT_STEPS rounded up, at most the chunks of num_steps.
        pilot_steps = (min(-(-DEFAULT_PILOT_STEPS // chunk_size), num_steps // chunk_size)
                       * chunk_size if several and has_validation and not resuming else 0)
    pilot_steps = check_int("pilot_steps", pilot_steps, 0)
    if pilot_steps % chunk_size:
        raise ValueError(f"`pilot_steps` must be a multiple of `chunk_size`={chunk_size} (the "
                         f"validation interval), got {pilot_steps}.")
    if pilot_steps > 0 and not several:
        raise ValueError("`pilot_steps` needs a build_fn with several `start_candidates` (the "
                         "gated densities of build_emf_density_stateless with "
                         "initial_gate='auto'); this build_fn has none.")
    if pilot_steps > 0 and not has_validation:
        raise ValueError("`pilot_steps` chooses the start on validation rows: set "
                         "`validation_fraction` or `validation_data`.")
    if pilot_steps > num_steps:
        raise ValueError(f"`pilot_steps`={pilot_steps} exceeds `num_steps`={num_steps}: the "
                         "pilot's steps are the first steps of the fit.")
    if pilot_steps > 0 and plan is not None:
        raise ValueError("the start pilot runs on one device: pass pilot_steps=0 with "
                         "`mesh` or `devices` (or choose the start yourself).")

    dist = build_fn(params)
    batch_shapes = [tuple(s) for s in jax.tree.leaves(dist.batch_shape)]
    if any(batch_shapes):
        raise ValueError(
            f"fit_density needs a distribution with scalar batch shape, got batch shape "
            f"{dist.batch_shape}: wrap batch dimensions into the event with tfd.Independent.")
    structured = structure_data(dist, data, name="data")
    n = num_rows(structured)
    split_key, train_key = jax.random.split(as_key(seed))
    if validation_fraction > 0:
        if n < 2:
            raise ValueError(f"a validation split needs at least 2 rows, got {n}: pass "
                             "validation_fraction=0.0 (or more data).")
        train, valid = split_rows(structured, validation_fraction, split_key)
    else:
        valid = (structure_data(dist, validation_data, name="validation_data")
                 if validation_data is not None else None)
        train = structured
    n_train = num_rows(train)
    if batch_size > n_train:
        held_out = (f" after holding out {n - n_train} validation rows (pass "
                    f"validation_fraction=0.0 to train on all {n})" if n_train < n else "")
        raise ValueError(f"`batch_size`={batch_size} exceeds the {n_train} training rows"
                         f"{held_out}.")

    log_prob_shape = jax.eval_shape(
        lambda p, x: build_fn(p).log_prob(x), params,
        jax.tree.map(lambda x: x[:batch_size], train)).shape
    if log_prob_shape != (batch_size,):
        raise ValueError(
            f"build_fn(params).log_prob of {batch_size} rows has shape "
            f"{shape_str(log_prob_shape)}, expected [{batch_size}]: fit_density needs a "
            "distribution with scalar batch shape (wrap batch dimensions in tfd.Independent).")

    train = jax.tree.map(jnp.asarray, train)
    if pretrain_model_steps > 0 and model_part is not None:
        params = _fit_model_first(
            model_part, params, train, optimizer=pretrain_optimizer or _PRETRAIN_OPTIMIZER,
            num_steps=pretrain_model_steps, batch_size=min(n_train, max(batch_size,
                                                                        _PRETRAIN_BATCH)),
            key=jax.random.fold_in(split_key, 1), chunk_size=chunk_size,
            progress_bar=progress_bar, compiler_options=frozen_options)
    hook = None
    validation_losses: list[float] = []
    best: dict[str, Any] = {"loss": math.inf, "params": None, "opt_state": None,
                            "step": start_step, "since": 0}
    divergence = _DivergenceMonitor()
    if valid is not None:
        valid = jax.tree.map(jnp.asarray, valid)
        n_valid = num_rows(valid)
        # As many training rows as validation rows (the same compiled program when they fit).
        rows = np.sort(np.asarray(jax.random.permutation(
            jax.random.fold_in(split_key, 2), n_train))[:n_valid])
        train_probe = jax.tree.map(lambda x: x[rows], train)
        static_build = static(build_fn)
        nll_rows = row_nll_runner(frozen_options)

        def hook(step: int, params: PyTree, opt_state: PyTree):
            val_rows = np.asarray(nll_rows(static_build, params, valid), np.float64)
            probe_rows = np.asarray(nll_rows(static_build, params, train_probe), np.float64)
            return record(step, params, opt_state, val_rows, probe_rows)

    def record(step: int, params: PyTree, opt_state: PyTree, val_rows: np.ndarray,
               probe_rows: np.ndarray) -> tuple[bool, dict]:
        """Books one chunk end's validation: the best point, patience, divergence."""
        loss = float(np.mean(val_rows))
        validation_losses.append(loss)
        divergence.update(step, val_rows, probe_rows)
        if loss < best["loss"] or (best["params"] is None and not math.isnan(loss)):
            best.update(loss=loss, params=params, opt_state=opt_state, step=step, since=0)
        else:
            best["since"] += 1
        stop = patience is not None and best["since"] >= patience
        return stop, {"val": f"{loss:.4g}"}

    loss_fn = MinibatchNLL(build_fn=build_fn, batch_size=batch_size, plan=plan)
    pilot = None
    stop = False
    if pilot_steps > 0 and starts is not None and valid is not None:
        num_chunks = pilot_steps // chunk_size

        def evaluate(params: PyTree) -> tuple[np.ndarray, np.ndarray]:
            return (np.asarray(nll_rows(static_build, params, valid), np.float64),
                    np.asarray(nll_rows(static_build, params, train_probe), np.float64))

        pilot = run_pilot(loss_fn, starts.make(params), starts.labels, evaluate=evaluate,
                          optimizer=optimizer, key=train_key, args=(train,),
                          num_chunks=num_chunks, chunk_size=chunk_size, start_step=start_step,
                          progress_bar=progress_bar, compiler_options=frozen_options)
        # Book the chosen start's chunk ends as if its fit had run them here.
        for c, (val_rows, probe_rows) in enumerate(pilot.chunk_rows):
            record(start_step + (c + 1) * chunk_size, None, None, val_rows, probe_rows)
        if pilot.best_params is not None:
            best.update(loss=validation_losses[-num_chunks + pilot.best_chunk],
                        params=pilot.best_params, opt_state=pilot.best_opt_state,
                        step=start_step + (pilot.best_chunk + 1) * chunk_size,
                        since=num_chunks - 1 - pilot.best_chunk)
        else:  # No finite validation loss: the pilot's end (the fit goes on from there).
            best.update(loss=math.inf, params=None, opt_state=None, since=0)
        stop = patience is not None and best["since"] >= patience
        params, opt_state = pilot.result.params, pilot.result.opt_state
        start_step += pilot_steps
        num_steps -= pilot_steps
    result, steps_run = run_minimize(
        loss_fn, params, optimizer=optimizer, num_steps=0 if stop else num_steps,
        key=train_key, args=(train,), chunk_size=chunk_size, opt_state=opt_state,
        start_step=start_step, progress_bar=progress_bar, description="fit_density",
        chunk_hook=hook, plan=plan, compiler_options=frozen_options)
    losses, num_nonfinite = result.losses, result.num_nonfinite
    if pilot is not None:
        losses = jnp.concatenate([pilot.result.losses.astype(losses.dtype), losses])
        num_nonfinite += pilot.result.num_nonfinite
    if best["params"] is None:  # No validation (or only NaN losses): keep the last step.
        best.update(params=result.params, opt_state=result.opt_state,
                    step=start_step + steps_run)
    divergence.warn(best_step=int(best["step"]), best_loss=best["loss"])
    return DensityFitResult(
        params=best["params"], opt_state=best["opt_state"], losses=losses,
        num_nonfinite=num_nonfinite,
        validation_losses=np.asarray(validation_losses, dtype=np.float64),
        best_step=int(best["step"]),
        start_choice=-1 if pilot is None else pilot.choice,
        start_validation_nll=(np.zeros((0,)) if pilot is None else pilot.validation_nll))


def _fit_model_first(model_part: ModelPart, params: PyTree, train: PyTree, *,
                     optimizer: Any, num_steps: int, batch_size: int, key: jax.Array,
                     chunk_size: int, progress_bar: bool, compiler_options: Any) -> PyTree:
    """`params` with the embedded model's part fitted alone by maximum likelihood."""
    loss_fn = MinibatchNLL(build_fn=model_part.build, batch_size=batch_size)
    result, _ = run_minimize(
        loss_fn, model_part.get(params), optimizer=optimizer, num_steps=num_steps, key=key,
        args=(train,), chunk_size=chunk_size, opt_state=None, start_step=0,
        progress_bar=progress_bar, description="fit_density (model first)", plan=None,
        compiler_options=compiler_options)
    return model_part.set(params, result.params)


def _gap_and_stderr(val: np.ndarray, train: np.ndarray, *, robust: bool
                    ) -> tuple[float, float]:
    """Validation minus training mean (or median) NLL and the standard error of that gap."""
    if robust:  # Median; its standard error from the MAD (exact for normal rows).
        def stderr(x: np.ndarray) -> float:
            return 1.2533 * 1.4826 * float(np.median(np.abs(x - np.median(x)))) / math.sqrt(
                len(x))
        gap = float(np.median(val) - np.median(train))
    else:
        def stderr(x: np.ndarray) -> float:
            return float(np.std(x)) / math.sqrt(len(x))
        gap = float(np.mean(val) - np.mean(train))
    return gap, math.hypot(stderr(val), stderr(train))


class _DivergenceMonitor:
    """Tracks the validation-minus-training NLL gap over chunk ends (see `fit_density`).

    A chunk end counts as diverged when the mean gap or the median gap (robust to the heavy
    tail of the validation NLL of an overfitted density, which inflates the mean's standard
    error) exceeds the margin plus `_DIVERGENCE_STANDARD_ERRORS` of its standard errors.
    """

    def __init__(self) -> None:
        self.run = 0
        self.first: tuple[int, float, float] | None = None
        self.last: tuple[int, float, float] | None = None

    def update(self, step: int, val: np.ndarray, train: np.ndarray) -> None:
        if not (np.all(np.isfinite(train)) and len(val) > 1 and len(train) > 1):
            self.run = 0
            return
        worst = None
        for robust in (False, True):
            if robust or np.all(np.isfinite(val)):
                gap, stderr = _gap_and_stderr(val, train, robust=robust)
            else:  # Non-finite validation NLL, finite training NLL: the extreme case.
                gap, stderr = math.inf, 0.0
            if gap > _DIVERGENCE_MARGIN + _DIVERGENCE_STANDARD_ERRORS * stderr:
                worst = worst or (step, gap, stderr)
        self.run = self.run + 1 if worst else 0
        if worst and self.run >= _DIVERGENCE_CHUNKS:
            self.first = self.first or worst
            self.last = worst

    def warn(self, *, best_step: int, best_loss: float) -> None:
        if self.first is None or self.last is None:
            return
        step, gap, stderr = self.last
        warnings.warn(
            f"fit_density: the validation NLL exceeded the training NLL (on as many training "
            f"rows; in mean or median) by more than {_DIVERGENCE_MARGIN} nats + "
            f"{_DIVERGENCE_STANDARD_ERRORS:g} standard errors at {_DIVERGENCE_CHUNKS} "
            f"consecutive chunk ends, first at step {self.first[0]} (gap {self.first[1]:.3g} "
            f"± {self.first[2]:.2g}), last at step {step} (gap {gap:.3g} ± {stderr:.2g}): "
            f"the density overfits the training rows. The returned parameters are the best "
            f"validation point (step {best_step}, validation NLL {best_loss:.4g}); a smaller "
            "flow, more data or fewer steps generalise better.", RuntimeWarning, stacklevel=3)
