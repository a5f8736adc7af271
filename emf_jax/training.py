"""Scan-based optimisation: `minimize`, `fit_vi` and `fit_density`.

One engine, `minimize`, runs an optax optimiser on a stochastic loss
`loss_fn(params, seed, *args) -> scalar`. Steps run inside a jit-compiled chunk of
`chunk_size` steps driven by `jax.lax.scan`; Python only loops over chunks, updating a
tqdm progress bar in between. The chunk program is compiled once per (loss function,
optimizer, chunk size, argument shapes): the last, partial chunk masks its surplus steps
instead of compiling a shorter scan, and a second call with the same loss function,
optimizer object and shapes reuses the compiled program.

Seeds. The seed of step `t` (counted globally, from `start_step`) is
`jax.random.fold_in(key, t)`, where `key` is `jax.random.PRNGKey(seed)` for an integer
`seed`, or `seed` itself when it is already a PRNG key (raw `uint32[2]` or typed). The
seed of a step depends only on the base seed and the step's global index, so a run of
`2 * n` steps equals a run of `n` steps resumed for another `n` steps with the previous
`params`, `opt_state` and `start_step=n`.

Non-finite guard. A step whose loss or any gradient is NaN or infinite leaves the
parameters and optimiser state unchanged; training goes on. The number of skipped steps
is returned (`FitResult.num_nonfinite`), shown in the progress bar and reported at the end
by a `RuntimeWarning`.

On top of the engine:

- `fit_vi` minimises TFP's Monte Carlo variational loss
  (`tfp.vi.monte_carlo_variational_loss`) of a surrogate `build_fn(params)` against a
  target log-density, the semantics of `tfp.vi.fit_surrogate_posterior_stateless`.
- `fit_density` fits `build_fn(params)` to data by minibatch maximum likelihood, with an
  optional validation split and early stopping.

Many devices. `fit_vi` and `fit_density` take ``mesh=`` (a `jax.sharding.Mesh`) or
``devices=`` (a list of devices): parameters and optimiser state are replicated and the Monte
Carlo sample axis (VI) or the minibatch axis (density) is split across the devices, inside
the same compiled program (see `emf_jax.sharding`). Results equal the single-device ones up
to the order of floating-point reductions.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tensorflow_probability.substrates import jax as tfp
from tqdm.auto import tqdm

from emf_jax.sharding import DataParallel, data_parallel

__all__ = [
    "DensityFitResult",
    "FitResult",
    "fit_density",
    "fit_vi",
    "minimize",
    "structure_data",
]

PyTree = Any
Seed = Any  # int, raw uint32[2] PRNG key or typed PRNG key.

# Maximum number of offending row indices quoted in data error messages.
_MAX_ROWS_QUOTED = 5
# Rows per vectorised block when evaluating the validation log-likelihood.
_VALIDATION_BLOCK = 4096


class FitResult(NamedTuple):
    """Result of `minimize` and `fit_vi`.

    Attributes:
      params: the parameters after the last step.
      opt_state: the optimiser state after the last step; pass it back with `params` and
        `start_step=start_step + len(losses)` to resume.
      losses: array `[num_steps]` of the loss at each step, evaluated at the parameters
        before that step's update (NaN or inf where a step was skipped).
      num_nonfinite: number of steps skipped because the loss or a gradient was not
        finite.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> loss = lambda p, seed: jnp.sum(p ** 2)
      >>> result = minimize(loss, jnp.ones(2), optimizer=optax.sgd(0.1), num_steps=3,
      ...                   seed=0, progress_bar=False)
      >>> result.losses.shape, result.num_nonfinite
      ((3,), 0)
      >>> resumed = minimize(loss, result.params, optimizer=optax.sgd(0.1), num_steps=3,
      ...                    seed=0, opt_state=result.opt_state, start_step=3,
      ...                    progress_bar=False)
      >>> bool(resumed.losses[0] < result.losses[0])
      True
    """

    params: PyTree
    opt_state: PyTree
    losses: jax.Array
    num_nonfinite: int


class DensityFitResult(NamedTuple):
    """Result of `fit_density`: `FitResult`'s fields plus validation records.

    Attributes:
      params: the parameters at `best_step` (the best validation loss when there is a
        validation set, else the last step).
      opt_state: the optimiser state at `best_step`.
      losses: array `[steps_run]` of the minibatch training loss at each step run
        (shorter than `num_steps` when early stopping ended the fit).
      num_nonfinite: number of steps skipped because the loss or a gradient was not
        finite.
      validation_losses: NumPy array `[chunks_run]` of the validation negative mean
        log-likelihood at the end of each chunk (empty without a validation set).
      best_step: global step count (including `start_step`) after which `params` were
        taken; resume from `params` and `opt_state` with `start_step=best_step`.

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


# ----------------------------------------------------------------------------- engine


class _ByIdentity:
    """Hashable-by-identity wrapper for a static argument that is not hashable."""

    def __init__(self, value: Any):
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.value is self.value


def _static(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return _ByIdentity(value)
    return value


def _unstatic(value: Any) -> Any:
    return value.value if isinstance(value, _ByIdentity) else value


def _tree_all_finite(tree: PyTree) -> jax.Array:
    finite = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(finite)) if finite else jnp.asarray(True)


def _as_strong_array(x: Any) -> jax.Array:
    """`jnp.asarray` without weak types, so that scan carries keep a fixed type."""
    x = jnp.asarray(x)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        return x
    return jnp.asarray(x, dtype=x.dtype)


def _as_key(seed: Seed) -> jax.Array:
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"`seed` must be an int or a PRNG key, got {seed!r}.")
    if isinstance(seed, (int, np.integer)):
        return jax.random.PRNGKey(int(seed))
    key = jnp.asarray(seed)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"`seed` must be a single PRNG key, got key shape {key.shape}.")
        return key
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise TypeError(
            "`seed` must be an int, a raw `jax.random.PRNGKey` (uint32[2]) or a typed key; "
            f"got an array of dtype {key.dtype} and shape {key.shape}.")
    return key


def _run_chunk(params: PyTree, opt_state: PyTree, key: jax.Array, first_step: jax.Array,
               num_active: jax.Array, args: tuple, *, loss_fn: Any, optimizer: Any,
               chunk_size: int) -> tuple[PyTree, PyTree, jax.Array, jax.Array]:
    """Runs `chunk_size` scan steps, of which the first `num_active` are real."""
    loss_fn = _unstatic(loss_fn)
    optimizer = _unstatic(optimizer)
    loss_aval = jax.eval_shape(loss_fn, params, key, *args)
    if not isinstance(loss_aval, jax.ShapeDtypeStruct) or loss_aval.shape != ():
        raise TypeError(
            "`loss_fn(params, seed, *args)` must return a scalar array; got "
            f"{jax.tree.map(lambda a: a.shape, loss_aval)}.")
    value_and_grad = jax.value_and_grad(loss_fn)
    extra_args = isinstance(optimizer, optax.GradientTransformationExtraArgs)

    def real_step(params, opt_state, step):
        step_key = jax.random.fold_in(key, step)
        loss, grads = value_and_grad(params, step_key, *args)
        finite = jnp.isfinite(loss) & _tree_all_finite(grads)
        if extra_args:
            updates, new_opt_state = optimizer.update(
                grads, opt_state, params, value=loss, grad=grads,
                value_fn=lambda p: loss_fn(p, step_key, *args))
        else:
            updates, new_opt_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        # One branch over the whole (params, opt_state) pair: a per-leaf `jnp.where` compiles
        # about 6x slower on XLA CPU for gated structured layers with many variables.
        params, opt_state = jax.lax.cond(
            finite, lambda: (new_params, new_opt_state), lambda: (params, opt_state))
        return params, opt_state, loss, jnp.logical_not(finite)

    def masked_step(params, opt_state, step):
        del step
        return params, opt_state, jnp.full((), jnp.nan, loss_aval.dtype), jnp.asarray(False)

    def body(carry, i):
        params, opt_state, num_nonfinite = carry
        params, opt_state, loss, skipped = jax.lax.cond(
            i < num_active, real_step, masked_step, params, opt_state, first_step + i)
        return (params, opt_state, num_nonfinite + skipped.astype(jnp.int32)), loss

    init = (params, opt_state, jnp.zeros((), jnp.int32))
    (params, opt_state, num_nonfinite), losses = jax.lax.scan(
        body, init, jnp.arange(chunk_size, dtype=jnp.int32))
    return params, opt_state, losses, num_nonfinite


_CHUNK_STATIC_ARGS = ("loss_fn", "optimizer", "chunk_size")
_run_chunk_jit = jax.jit(_run_chunk, static_argnames=_CHUNK_STATIC_ARGS)

# XLA compiler options as a sorted tuple of (name, value) pairs: hashable, one cache entry
# per distinct set.
_CompilerOptions = tuple


def _freeze_compiler_options(options: Mapping[str, Any] | None) -> _CompilerOptions:
    """Checks `compiler_options` and returns it in hashable form (`()` for none)."""
    if options is None:
        return ()
    if not isinstance(options, Mapping):
        raise TypeError("`compiler_options` must be a mapping of XLA option names to values, "
                        f"got {type(options).__name__}.")
    for name, value in options.items():
        if not isinstance(name, str):
            raise TypeError(f"`compiler_options` keys must be strings, got {name!r}.")
        if not isinstance(value, (str, bool, int, float)):
            raise TypeError(f"`compiler_options[{name!r}]` must be a str, bool, int or float, "
                            f"got {type(value).__name__}.")
    return tuple(sorted(options.items()))


@functools.lru_cache(maxsize=None)
def _chunk_runner(compiler_options: _CompilerOptions) -> Callable[..., Any]:
    """The jitted chunk program compiled with `compiler_options` (one per distinct set)."""
    if not compiler_options:
        return _run_chunk_jit
    return jax.jit(_run_chunk, static_argnames=_CHUNK_STATIC_ARGS,
                   compiler_options=dict(compiler_options))

# A chunk hook: `hook(steps_done, params, opt_state) -> (stop, postfix)`.
_ChunkHook = Callable[[int, PyTree, PyTree], "tuple[bool, dict[str, Any]]"]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an int, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}.")
    return int(value)


def _check_optimizer(optimizer: Any) -> None:
    if not (callable(getattr(optimizer, "init", None))
            and callable(getattr(optimizer, "update", None))):
        raise TypeError("`optimizer` must be an optax.GradientTransformation (with `init` and "
                        f"`update`), got {type(optimizer).__name__}.")


def _minimize(loss_fn: Callable[..., jax.Array], params: PyTree, *, optimizer: Any,
              num_steps: int, key: jax.Array, args: tuple, chunk_size: int,
              opt_state: PyTree | None, start_step: int, progress_bar: bool,
              description: str, chunk_hook: _ChunkHook | None = None,
              stacklevel: int = 2, plan: DataParallel | None = None,
              compiler_options: _CompilerOptions = ()) -> tuple[FitResult, int]:
    """The engine behind the public functions; returns the result and the steps run."""
    params = jax.tree.map(_as_strong_array, params)
    if opt_state is None:
        opt_state = optimizer.init(params)
    opt_state = jax.tree.map(_as_strong_array, opt_state)
    args = jax.tree.map(_as_strong_array, tuple(args))
    if plan is not None:
        # Everything the chunk reads lives on every device; the loss splits the work.
        params, opt_state, key, args = plan.replicate((params, opt_state, key, args))
    static_loss, static_opt = _static(loss_fn), _static(optimizer)
    run_chunk = _chunk_runner(compiler_options)

    chunk_losses = []
    num_nonfinite = jnp.zeros((), jnp.int32)
    steps_done = 0
    postfix: dict[str, Any] = {}
    with tqdm(total=num_steps, desc=description, unit="step", disable=not progress_bar,
              dynamic_ncols=True) as bar:
        while steps_done < num_steps:
            num_active = min(chunk_size, num_steps - steps_done)
            params, opt_state, losses, skipped = run_chunk(
                params, opt_state, key, np.int32(start_step + steps_done),
                np.int32(num_active), args, loss_fn=static_loss, optimizer=static_opt,
                chunk_size=chunk_size)
            num_nonfinite = num_nonfinite + skipped
            steps_done += num_active
            chunk_losses.append(losses[:num_active])
            stop = False
            if chunk_hook is not None:
                stop, postfix = chunk_hook(start_step + steps_done, params, opt_state)
            if progress_bar:
                recent = np.asarray(losses[:num_active])
                recent = recent[np.isfinite(recent)]
                bar.set_postfix(
                    loss=f"{recent.mean():.4g}" if recent.size else "nan",
                    nonfinite=int(num_nonfinite), **postfix, refresh=False)
                bar.update(num_active)
            if stop:
                break

    if chunk_losses:
        losses = jnp.concatenate(chunk_losses)
    else:
        losses = jnp.zeros((0,), jax.eval_shape(loss_fn, params, key, *args).dtype)
    num_nonfinite = int(num_nonfinite)
    if num_nonfinite:
        warnings.warn(
            f"{description}: {num_nonfinite} of {steps_done} steps had a non-finite loss or "
            "gradient and were skipped (parameters and optimizer state left unchanged).",
            RuntimeWarning, stacklevel=stacklevel + 1)
    return FitResult(params, opt_state, losses, num_nonfinite), steps_done


def minimize(loss_fn: Callable[..., jax.Array], params: PyTree, *, optimizer: Any,
             num_steps: int, seed: Seed, args: tuple = (), chunk_size: int = 100,
             opt_state: PyTree | None = None, start_step: int = 0,
             progress_bar: bool = True, description: str = "minimize",
             compiler_options: Mapping[str, Any] | None = None) -> FitResult:
    """Minimises a stochastic loss with an optax optimiser, in jit-compiled scan chunks.

    Step `t` (global index, starting at `start_step`) evaluates
    `loss, grads = jax.value_and_grad(loss_fn)(params, jax.random.fold_in(key, t), *args)`
    and applies `optimizer.update`; a non-finite loss or gradient skips the update. Steps
    run in jit-compiled `lax.scan` chunks of `chunk_size`; the progress bar shows the mean
    loss of the last chunk. The compiled chunk is cached on (`loss_fn`, `optimizer`,
    `chunk_size`) and the shapes of the arrays: reuse the same function and optimiser
    objects to avoid recompiling. Pass data through `args` rather than closing over it:
    closed-over arrays become constants of the compiled program, and new data of the same
    shape would recompile. Optimisers of type `optax.GradientTransformationExtraArgs`
    also receive `value=loss`, `grad=grads` and `value_fn` (so that e.g. `optax.lbfgs`
    works). `minimize` itself is a Python loop over compiled chunks: call it from Python,
    not from inside `jax.jit`.

    Args:
      loss_fn: `loss_fn(params, seed, *args) -> scalar`, jit-compatible.
      params: initial parameters (a pytree of arrays).
      optimizer: an `optax.GradientTransformation`.
      num_steps: number of steps to run (0 returns at once).
      seed: an int or a PRNG key; see the module docstring for the per-step seeds.
      args: extra arrays (pytrees) passed to `loss_fn` after the seed.
      chunk_size: steps per compiled chunk; the progress bar updates once per chunk.
      opt_state: optimiser state to resume from; `None` calls `optimizer.init(params)`.
      start_step: global index of the first step; set it to the number of steps already
        run when resuming so that the step seeds continue the earlier sequence.
      progress_bar: whether to show a tqdm progress bar.
      description: label of the progress bar and of warnings.
      compiler_options: XLA options for compiling the training program, passed to
        `jax.jit(..., compiler_options=...)`. On the CPU, ``{"xla_disable_hlo_passes":
        "fusion"}`` cuts the compile time of long Python-loop models (one variable per
        time step) several-fold; see the performance guide in the docs.

    Returns:
      A `FitResult(params, opt_state, losses, num_nonfinite)`.

    Raises:
      TypeError: if `optimizer` is not optax-like, `seed` is not a seed, or `loss_fn` does
        not return a scalar.
      ValueError: if `num_steps`, `chunk_size` or `start_step` is out of range.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> result = minimize(lambda p, seed: jnp.sum((p["x"] - 3.0) ** 2),
      ...                   {"x": jnp.zeros(2)}, optimizer=optax.adam(0.1),
      ...                   num_steps=300, seed=0, progress_bar=False)
      >>> bool(jnp.allclose(result.params["x"], 3.0, atol=1e-2)), result.losses.shape
      (True, (300,))
    """
    if not callable(loss_fn):
        raise TypeError(f"`loss_fn` must be callable, got {type(loss_fn).__name__}.")
    _check_optimizer(optimizer)
    num_steps = _check_int("num_steps", num_steps, 0)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    start_step = _check_int("start_step", start_step, 0)
    result, _ = _minimize(loss_fn, params, optimizer=optimizer, num_steps=num_steps,
                          key=_as_key(seed), args=tuple(args), chunk_size=chunk_size,
                          opt_state=opt_state, start_step=start_step,
                          progress_bar=progress_bar, description=description,
                          compiler_options=_freeze_compiler_options(compiler_options))
    return result


# ------------------------------------------------------------------------------- fit_vi


@dataclasses.dataclass(frozen=True)
class _VariationalLoss:
    """TFP's Monte Carlo variational loss of `build_fn(params)`; hashable by its fields."""

    target_log_prob_fn: Callable[..., jax.Array]
    build_fn: Callable[[PyTree], Any]
    sample_size: int
    importance_sample_size: int
    discrepancy_fn: Callable[[jax.Array], jax.Array]
    gradient_estimator: Any
    plan: DataParallel | None = None

    def __call__(self, params: PyTree, seed: jax.Array) -> jax.Array:
        surrogate = self.build_fn(params)
        stopped = None
        if self.gradient_estimator == tfp.vi.GradientEstimators.DOUBLY_REPARAMETERIZED:
            stopped = self.build_fn(jax.tree.map(jax.lax.stop_gradient, params))
        target = self.target_log_prob_fn
        if self.plan is not None:
            target = _sharded_target(target, self.plan)
        return tfp.vi.monte_carlo_variational_loss(
            target, surrogate_posterior=surrogate,
            sample_size=self.sample_size,
            importance_sample_size=self.importance_sample_size,
            discrepancy_fn=self.discrepancy_fn,
            gradient_estimator=self.gradient_estimator,
            stopped_surrogate_posterior=stopped, seed=seed)


def _sharded_target(target_log_prob_fn: Callable[..., jax.Array],
                    plan: DataParallel) -> Callable[..., jax.Array]:
    """The target with its samples (and log-densities) split along the sample axis.

    XLA propagates the split back to the surrogate's draws and through the gradient.
    """
    def target(*args, **kwargs):
        args, kwargs = plan.shard_leading_axis((args, kwargs))
        return plan.shard_leading_axis(target_log_prob_fn(*args, **kwargs))

    return target


def fit_vi(target_log_prob_fn: Callable[..., jax.Array],
           build_fn: Callable[[PyTree], Any], params: PyTree, *, optimizer: Any,
           num_steps: int, seed: Seed, sample_size: int = 1,
           importance_sample_size: int = 1,
           discrepancy_fn: Callable[[jax.Array], jax.Array] = tfp.vi.kl_reverse,
           gradient_estimator: Any = tfp.vi.GradientEstimators.REPARAMETERIZATION,
           chunk_size: int = 100, opt_state: PyTree | None = None, start_step: int = 0,
           progress_bar: bool = True, mesh: Any = None,
           devices: Any = None,
           compiler_options: Mapping[str, Any] | None = None) -> FitResult:
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

    Returns:
      A `FitResult(params, opt_state, losses, num_nonfinite)`; `losses` are the per-step
      loss estimates (the negative ELBO by default). With `mesh`/`devices` the arrays are
      replicated on the mesh.

    Raises:
      TypeError: if a function argument is not callable or the optimiser is not optax-like.
      ValueError: if a count is out of range, or the draws do not split evenly over the
        devices.

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
        if not callable(fn):
            raise TypeError(f"`{name}` must be callable, got {type(fn).__name__}.")
    _check_optimizer(optimizer)
    plan = data_parallel(mesh, devices)
    sample_size = _check_int("sample_size", sample_size, 1)
    importance_sample_size = _check_int("importance_sample_size", importance_sample_size, 1)
    if plan is not None:
        plan.check_divisible(sample_size * importance_sample_size,
                             "sample_size * importance_sample_size")
    loss_fn = _VariationalLoss(
        target_log_prob_fn=target_log_prob_fn, build_fn=build_fn,
        sample_size=sample_size, importance_sample_size=importance_sample_size,
        discrepancy_fn=discrepancy_fn, gradient_estimator=gradient_estimator, plan=plan)
    result, _ = _minimize(
        loss_fn, params, optimizer=optimizer, num_steps=_check_int("num_steps", num_steps, 0),
        key=_as_key(seed), args=(), chunk_size=_check_int("chunk_size", chunk_size, 1),
        opt_state=opt_state, start_step=_check_int("start_step", start_step, 0),
        progress_bar=progress_bar, description="fit_vi", plan=plan,
        compiler_options=_freeze_compiler_options(compiler_options))
    return result


# -------------------------------------------------------------------------- fit_density


def _shape_str(shape: tuple) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _event_structure(dist: Any) -> tuple[list[tuple[int, ...]], list[np.dtype], Any, list[str]]:
    """Flat event shapes, dtypes, treedef and variable names of `dist`."""
    shapes, treedef = jax.tree.flatten(dist.event_shape)
    paths = [jax.tree_util.keystr(path) or "<value>"
             for path, _ in jax.tree_util.tree_flatten_with_path(dist.event_shape)[0]]
    dtypes = jax.tree.leaves(dist.dtype)
    if len(dtypes) != len(shapes):
        raise ValueError(
            f"the distribution's dtype structure {dist.dtype} does not match its event shape "
            f"structure {dist.event_shape}.")
    flat_shapes = []
    for shape, path in zip(shapes, paths):
        dims = getattr(shape, "as_list", lambda s=shape: list(s))()
        if dims is None or any(d is None for d in dims):
            raise ValueError(f"variable {path}: the event shape {shape} is not fully known.")
        flat_shapes.append(tuple(int(d) for d in dims))
    return flat_shapes, [np.dtype(d) for d in dtypes], treedef, paths


def _check_dtype(arr: np.ndarray, path: str, name: str) -> None:
    dtype = arr.dtype
    if jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer):
        return
    if dtype == np.bool_:
        kind = "boolean"
    elif jnp.issubdtype(dtype, jnp.complexfloating):
        kind = "complex"
    else:
        kind = "non-numeric"
    raise TypeError(f"{name}{'' if path == '<value>' else ' ' + path} has {kind} dtype "
                    f"{dtype}; density data must be real numbers (float or integer).")


def structure_data(dist: Any, data: Any, *, name: str = "data") -> PyTree:
    """Checks data rows against a distribution's events and returns them structured.

    `data` is either a pytree with the structure of `dist.event_shape` whose leaves have
    shape `[N, *event_shape]` (a dict is also accepted for a `StructTuple` event), or one
    flat `[N, D]` array whose columns are the variables' flattened events in the
    distribution's flatten order (`jax.tree.leaves(dist.event_shape)`: sorted keys for
    `JointDistributionNamed`, definition order for `JointDistributionCoroutine` and
    `JointDistributionSequential`); `D` must equal the total event size. Integer data are
    cast to the variable's dtype; float data for an integer-valued variable must hold
    whole numbers. Everything is checked on the host, before any compilation.

    Args:
      dist: a TFP distribution with scalar batch shape.
      data: the data, as above (NumPy or JAX arrays).
      name: how the data are called in error messages.

    Returns:
      A pytree with the structure of `dist.event_shape` of NumPy arrays
      `[N, *event_shape]` in the variables' dtypes.

    Raises:
      TypeError: for boolean, complex or non-numeric data.
      ValueError: for a wrong structure or shape, non-finite rows, non-integral values of
        an integer variable, or no rows.

    Example:
      >>> import numpy as np
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> dist = tfd.JointDistributionNamed(
      ...     {"a": tfd.Normal(0.0, 1.0), "b": tfd.Sample(tfd.Normal(0.0, 1.0), 2)})
      >>> parts = structure_data(dist, np.zeros((5, 3)))
      >>> parts["a"].shape, parts["b"].shape
      ((5,), (5, 2))
    """
    shapes, dtypes, treedef, paths = _event_structure(dist)
    event_shape = dist.event_shape
    if (isinstance(data, Mapping) and isinstance(event_shape, tuple)
            and hasattr(event_shape, "_fields")):
        missing = [f for f in event_shape._fields if f not in data]
        extra = [k for k in data if k not in event_shape._fields]
        if missing or extra:
            raise ValueError(f"{name} keys do not match the distribution's variables "
                             f"{list(event_shape._fields)}: missing {missing}, "
                             f"unexpected {extra}.")
        data = type(event_shape)(*[data[f] for f in event_shape._fields])

    if treedef.num_nodes == 1 and treedef.num_leaves == 1:
        data = np.asarray(data)  # A plain distribution: lists of numbers are fine too.
    leaves, data_treedef = jax.tree.flatten(data)
    if data_treedef == treedef:
        arrays = [np.asarray(x) for x in leaves]
        for arr, path in zip(arrays, paths):
            _check_dtype(arr, path, name)
        for arr, shape, path in zip(arrays, shapes, paths):
            if arr.ndim != len(shape) + 1 or arr.shape[1:] != shape:
                if len(shapes) == 1 and arr.ndim == 2 and arr.shape[1] == math.prod(shape):
                    continue  # A flat [N, D] array for a single variable; reshaped below.
                expected = _shape_str(("N",) + shape)
                raise ValueError(
                    f"{name}{'' if path == '<value>' else ' for variable ' + path} has shape "
                    f"{_shape_str(arr.shape)}; expected {expected} (N rows of event shape "
                    f"{_shape_str(shape)}).")
        arrays = [arr.reshape((arr.shape[0],) + shape) for arr, shape in zip(arrays, shapes)]
    elif len(leaves) == 1 and not isinstance(data, (Mapping, list, tuple)):
        flat = np.asarray(leaves[0])
        _check_dtype(flat, "<value>", name)
        sizes = [math.prod(s) for s in shapes]
        total = sum(sizes)
        if flat.ndim != 2 or flat.shape[1] != total:
            layout = ", ".join(f"{p}: {_shape_str(s)}" for p, s in zip(paths, shapes))
            raise ValueError(
                f"flat {name} must have shape [N, {total}] (the total event size of "
                f"{layout}); got {_shape_str(flat.shape)}.")
        columns = np.split(flat, np.cumsum(sizes)[:-1], axis=1)
        arrays = [c.reshape((flat.shape[0],) + s) for c, s in zip(columns, shapes)]
    else:
        raise ValueError(
            f"{name} must be a pytree with the structure of the distribution's event shape "
            f"{event_shape} (leaves [N, *event_shape]) or one flat [N, D] array; got "
            f"structure {data_treedef}.")

    num_rows = {arr.shape[0] for arr in arrays}
    if len(num_rows) != 1:
        counts = ", ".join(f"{p}: {a.shape[0]}" for p, a in zip(paths, arrays))
        raise ValueError(f"{name} variables have different numbers of rows ({counts}).")
    n = num_rows.pop()
    if n == 0:
        raise ValueError(f"{name} has no rows.")

    bad_rows = np.zeros(n, bool)
    for arr in arrays:
        if jnp.issubdtype(arr.dtype, jnp.floating):
            bad_rows |= ~np.isfinite(arr.astype(np.float64).reshape(n, -1)).all(axis=1)
    if bad_rows.any():
        first = np.flatnonzero(bad_rows)[:_MAX_ROWS_QUOTED].tolist()
        raise ValueError(f"{name} has {int(bad_rows.sum())} of {n} rows with NaN or infinite "
                         f"values (first row indices: {first}).")

    out = []
    for arr, dtype, path in zip(arrays, dtypes, paths):
        if np.issubdtype(dtype, np.integer) and jnp.issubdtype(arr.dtype, jnp.floating):
            as_float = arr.astype(np.float64)
            if np.any(as_float != np.round(as_float)):
                raise ValueError(f"{name} for integer-valued variable {path} (dtype {dtype}) "
                                 "holds non-integer values.")
        out.append(arr.astype(dtype))
    return jax.tree.unflatten(treedef, out)


def _num_rows(data: PyTree) -> int:
    return int(jax.tree.leaves(data)[0].shape[0])


@dataclasses.dataclass(frozen=True)
class _MinibatchNLL:
    """Negative mean log-likelihood of a random minibatch; hashable by its fields."""

    build_fn: Callable[[PyTree], Any]
    batch_size: int
    plan: DataParallel | None = None

    def __call__(self, params: PyTree, seed: jax.Array, data: PyTree) -> jax.Array:
        n = _num_rows(data)
        if self.batch_size == n:
            batch = data
        else:  # Uniform rows with replacement: O(batch_size) per step, no shuffling state.
            rows = jax.random.randint(seed, (self.batch_size,), 0, n)
            batch = jax.tree.map(lambda x: jnp.take(x, rows, axis=0), data)
        if self.plan is None:
            return -jnp.mean(self.build_fn(params).log_prob(batch))
        log_probs = self.build_fn(params).log_prob(self.plan.shard_leading_axis(batch))
        return -jnp.mean(self.plan.shard_leading_axis(log_probs))


def _mean_nll(build_fn: Any, params: PyTree, data: PyTree) -> jax.Array:
    dist = _unstatic(build_fn)(params)
    n = _num_rows(data)
    log_probs = jax.lax.map(dist.log_prob, data, batch_size=min(n, _VALIDATION_BLOCK))
    return -jnp.mean(log_probs)


_mean_nll_jit = jax.jit(_mean_nll, static_argnums=0)


@functools.lru_cache(maxsize=None)
def _mean_nll_runner(compiler_options: _CompilerOptions) -> Callable[..., Any]:
    """The jitted validation loss compiled with `compiler_options`."""
    if not compiler_options:
        return _mean_nll_jit
    return jax.jit(_mean_nll, static_argnums=0, compiler_options=dict(compiler_options))


def fit_density(build_fn: Callable[[PyTree], Any], params: PyTree, data: Any, *,
                optimizer: Any, num_steps: int, batch_size: int, seed: Seed,
                validation_fraction: float = 0.0, validation_data: Any = None,
                patience: int | None = None, chunk_size: int = 100,
                opt_state: PyTree | None = None, start_step: int = 0,
                progress_bar: bool = True, mesh: Any = None,
                devices: Any = None,
                compiler_options: Mapping[str, Any] | None = None) -> DensityFitResult:
    """Fits a density `build_fn(params)` to data by minibatch maximum likelihood.

    Each step draws `batch_size` training rows uniformly with replacement (all rows, in
    order, when `batch_size` equals the number of training rows) with `jax.random` inside
    the compiled scan, and takes an optimiser step on the negative mean log-likelihood
    `-mean(build_fn(params).log_prob(batch))`. Data are checked and structured by
    `structure_data` before anything is compiled.

    Validation: `validation_fraction` holds out that share of the rows (a random split
    that depends only on `seed`, so a resumed fit with the same seed sees the same split),
    or `validation_data` gives a separate set. The validation negative mean
    log-likelihood is evaluated at the end of every chunk of `chunk_size` steps; the
    returned `params` are those of the best chunk end, and with `patience` the fit stops
    after `patience` chunk ends without improvement.

    Args:
      build_fn: `build_fn(params) -> tfd.Distribution` with scalar batch shape.
      params: initial parameters (a pytree, typically a dict).
      data: rows of the event structure or a flat `[N, D]` array; see `structure_data`.
      optimizer: an `optax.GradientTransformation`.
      num_steps: maximum number of optimisation steps.
      batch_size: rows per minibatch, at most the number of training rows.
      seed: an int or a PRNG key; it fixes the validation split and the minibatches.
      validation_fraction: share of the rows held out for validation, in [0, 1).
      validation_data: a separate validation set (same forms as `data`); exclusive with
        `validation_fraction`.
      patience: chunk ends without validation improvement before stopping; `None` never
        stops early. Needs a validation set.
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

    Returns:
      A `DensityFitResult(params, opt_state, losses, num_nonfinite, validation_losses,
      best_step)`.

    Raises:
      TypeError: for an optimiser that is not optax-like or data of a bad dtype.
      ValueError: for bad data (see `structure_data`), too few rows for `batch_size`,
        inconsistent validation options, or a `batch_size` that does not split evenly over
        the devices.

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
    """
    if not callable(build_fn):
        raise TypeError(f"`build_fn` must be callable, got {type(build_fn).__name__}.")
    _check_optimizer(optimizer)
    num_steps = _check_int("num_steps", num_steps, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    plan = data_parallel(mesh, devices)
    if plan is not None:
        plan.check_divisible(batch_size, "batch_size")
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    start_step = _check_int("start_step", start_step, 0)
    frozen_options = _freeze_compiler_options(compiler_options)
    if patience is not None:
        patience = _check_int("patience", patience, 1)
    if not 0.0 <= float(validation_fraction) < 1.0:
        raise ValueError(f"`validation_fraction` must be in [0, 1), got {validation_fraction}.")
    if validation_data is not None and validation_fraction > 0:
        raise ValueError("give either `validation_fraction` or `validation_data`, not both.")
    has_validation = validation_data is not None or validation_fraction > 0
    if patience is not None and not has_validation:
        raise ValueError("`patience` needs a validation set: set `validation_fraction` or "
                         "`validation_data`.")

    dist = build_fn(params)
    batch_shapes = [tuple(s) for s in jax.tree.leaves(dist.batch_shape)]
    if any(batch_shapes):
        raise ValueError(
            f"fit_density needs a distribution with scalar batch shape, got batch shape "
            f"{dist.batch_shape}: wrap batch dimensions into the event with tfd.Independent.")
    structured = structure_data(dist, data, name="data")
    n = _num_rows(structured)
    split_key, train_key = jax.random.split(_as_key(seed))
    if validation_fraction > 0:
        num_validation = max(1, int(round(validation_fraction * n)))
        order = np.asarray(jax.random.permutation(split_key, n))
        val_rows, train_rows = np.sort(order[:num_validation]), np.sort(order[num_validation:])
        valid = jax.tree.map(lambda x: x[val_rows], structured)
        train = jax.tree.map(lambda x: x[train_rows], structured)
    else:
        valid = (structure_data(dist, validation_data, name="validation_data")
                 if validation_data is not None else None)
        train = structured
    n_train = _num_rows(train)
    if batch_size > n_train:
        held_out = f" after holding out {n - n_train} validation rows" if n_train < n else ""
        raise ValueError(f"`batch_size`={batch_size} exceeds the {n_train} training rows"
                         f"{held_out}.")

    log_prob_shape = jax.eval_shape(
        lambda p, x: build_fn(p).log_prob(x), params,
        jax.tree.map(lambda x: x[:batch_size], train)).shape
    if log_prob_shape != (batch_size,):
        raise ValueError(
            f"build_fn(params).log_prob of {batch_size} rows has shape "
            f"{_shape_str(log_prob_shape)}, expected [{batch_size}]: fit_density needs a "
            "distribution with scalar batch shape (wrap batch dimensions in tfd.Independent).")

    train = jax.tree.map(jnp.asarray, train)
    hook = None
    validation_losses: list[float] = []
    best: dict[str, Any] = {"loss": math.inf, "params": None, "opt_state": None,
                            "step": start_step}
    if valid is not None:
        valid = jax.tree.map(jnp.asarray, valid)
        static_build = _static(build_fn)
        mean_nll = _mean_nll_runner(frozen_options)
        chunks_without_improvement = 0

        def hook(step: int, params: PyTree, opt_state: PyTree):
            nonlocal chunks_without_improvement
            loss = float(mean_nll(static_build, params, valid))
            validation_losses.append(loss)
            if loss < best["loss"] or (best["params"] is None and not math.isnan(loss)):
                best.update(loss=loss, params=params, opt_state=opt_state, step=step)
                chunks_without_improvement = 0
            else:
                chunks_without_improvement += 1
            stop = patience is not None and chunks_without_improvement >= patience
            return stop, {"val": f"{loss:.4g}"}

    loss_fn = _MinibatchNLL(build_fn=build_fn, batch_size=batch_size, plan=plan)
    result, steps_run = _minimize(
        loss_fn, params, optimizer=optimizer, num_steps=num_steps,
        key=train_key, args=(train,), chunk_size=chunk_size, opt_state=opt_state,
        start_step=start_step, progress_bar=progress_bar, description="fit_density",
        chunk_hook=hook, plan=plan, compiler_options=frozen_options)
    if best["params"] is None:  # No validation (or only NaN losses): keep the last step.
        best.update(params=result.params, opt_state=result.opt_state,
                    step=start_step + steps_run)
    return DensityFitResult(
        params=best["params"], opt_state=best["opt_state"], losses=result.losses,
        num_nonfinite=result.num_nonfinite,
        validation_losses=np.asarray(validation_losses, dtype=np.float64),
        best_step=int(best["step"]))

