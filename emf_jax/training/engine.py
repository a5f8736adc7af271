"""The optimisation engine: `minimize`, chunked `lax.scan`, the compile cache.

One engine, `minimize`, runs an optax optimiser on a stochastic loss
`loss_fn(params, seed, *args) -> scalar`. Steps run inside a jit-compiled chunk of
`chunk_size` steps driven by `jax.lax.scan`; Python only loops over chunks, updating a
tqdm progress bar in between. The chunk program is compiled once per (loss function,
optimizer, chunk size, argument shapes): the last, partial chunk masks its surplus steps
instead of compiling a shorter scan, and a second call with the same loss function,
optimizer object and shapes reuses the compiled program. The loss is traced once per
compile.

Seeds. The seed of step `t` (counted globally, from `start_step`) is
`jax.random.fold_in(key, t)`, where `key` is `jax.random.PRNGKey(seed)` for an integer
`seed`, or `seed` itself when it is already a PRNG key (raw `uint32[2]` or typed). The
seed of a step depends only on the base seed and the step's global index, so a run of
`2 * n` steps equals a run of `n` steps resumed for another `n` steps with the previous
`params`, `opt_state` and `start_step=n`.

Non-finite guard. A step whose loss or any gradient is NaN or infinite leaves the
parameters and optimiser state unchanged; training goes on. The number of skipped steps
is returned (`FitResult.num_nonfinite`), shown in the progress bar and reported at the end
by a `RuntimeWarning`. A loss object with a method ``loss_and_count(params, seed, *args) ->
(loss, count)`` (`VariationalLoss`: the number of Monte Carlo draws it left out as
non-finite) is differentiated through that method, and the counts are summed into
`FitResult.num_nonfinite_draws`.

Gradient clipping. With ``max_grad_norm``, the gradient is rescaled to a global norm of
at most ``max_grad_norm`` (``g * min(1, max_grad_norm / ||g||)``, as
``optax.clip_by_global_norm``) before the optimiser sees it. The optimiser state keeps the
user's optimiser's structure, so a fit can be resumed with or without clipping.
"""
from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from emf_jax._checks import as_key, check_callable, check_int, check_optimizer, check_positive_float
from emf_jax.sharding import DataParallel

__all__ = ["FitResult", "minimize"]

PyTree = Any
Seed = Any  # int, raw uint32[2] PRNG key or typed PRNG key.


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
      num_nonfinite_draws: number of Monte Carlo draws left out of their step's average
        because their term was not finite (`VariationalLoss`; 0 for other losses).

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
    num_nonfinite_draws: int = 0


class _ByIdentity:
    """Hashable-by-identity wrapper for a static argument that is not hashable."""

    def __init__(self, value: Any):
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByIdentity) and other.value is self.value


def static(value: Any) -> Any:
    """`value` as a static jit argument: itself if hashable, else wrapped by identity."""
    try:
        hash(value)
    except TypeError:
        return _ByIdentity(value)
    return value


def unstatic(value: Any) -> Any:
    """The value that `static` wrapped."""
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


def _scalar_loss(loss_fn: Callable[..., Any]) -> Callable[..., tuple[jax.Array, jax.Array]]:
    """`loss_fn` as ``(loss, num_nonfinite_draws)``, checked at trace time to be scalar."""
    counted = callable(getattr(loss_fn, "loss_and_count", None))

    def checked(*args: Any) -> tuple[jax.Array, jax.Array]:
        if counted:
            counting: Any = loss_fn
            loss, count = counting.loss_and_count(*args)
        else:
            loss, count = loss_fn(*args), jnp.zeros((), jnp.int32)
        if not (hasattr(loss, "shape") and hasattr(loss, "dtype")) or loss.shape != ():
            shapes = jax.tree.map(lambda a: getattr(a, "shape", type(a).__name__), loss)
            raise TypeError("`loss_fn(params, seed, *args)` must return a scalar array; got "
                            f"{shapes}.")
        return loss, jnp.asarray(count, jnp.int32)
    return checked


def _clip_by_global_norm(grads: PyTree, max_norm: float) -> PyTree:
    norm = optax.global_norm(grads)
    factor = jnp.minimum(1.0, max_norm / jnp.maximum(norm, jnp.finfo(norm.dtype).tiny))
    return jax.tree.map(lambda g: (g * factor).astype(g.dtype), grads)


def _run_chunk(params: PyTree, opt_state: PyTree, key: jax.Array, first_step: jax.Array,
               num_active: jax.Array, args: tuple, *, loss_fn: Any, optimizer: Any,
               chunk_size: int, max_grad_norm: float | None = None
               ) -> tuple[PyTree, PyTree, jax.Array, jax.Array, jax.Array]:
    """Runs `chunk_size` scan steps, of which the first `num_active` are real."""
    loss_fn = unstatic(loss_fn)
    optimizer = unstatic(optimizer)
    # `lax.cond` traces its true branch first: the real step records the loss's dtype there,
    # so that the masked branch can return a NaN of that dtype without a second trace.
    loss_dtype: list[Any] = []

    def value_and_grad(params, step_key):
        (loss, count), grads = jax.value_and_grad(_scalar_loss(loss_fn), has_aux=True)(
            params, step_key, *args)
        loss_dtype.append(loss.dtype)
        return loss, count, grads
    extra_args = isinstance(optimizer, optax.GradientTransformationExtraArgs)

    def real_step(params, opt_state, step):
        step_key = jax.random.fold_in(key, step)
        loss, count, grads = value_and_grad(params, step_key)
        finite = jnp.isfinite(loss) & _tree_all_finite(grads)
        if max_grad_norm is not None:
            grads = _clip_by_global_norm(grads, max_grad_norm)
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
        return params, opt_state, loss, jnp.logical_not(finite), count

    def masked_step(params, opt_state, step):
        del step
        dtype = loss_dtype[0] if loss_dtype else jax.eval_shape(
            loss_fn, params, key, *args).dtype
        return (params, opt_state, jnp.full((), jnp.nan, dtype), jnp.asarray(False),
                jnp.zeros((), jnp.int32))

    def body(carry, i):
        params, opt_state, num_nonfinite, num_draws = carry
        params, opt_state, loss, skipped, count = jax.lax.cond(
            i < num_active, real_step, masked_step, params, opt_state, first_step + i)
        carry = (params, opt_state, num_nonfinite + skipped.astype(jnp.int32),
                 num_draws + count)
        return carry, loss

    init = (params, opt_state, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))
    (params, opt_state, num_nonfinite, num_draws), losses = jax.lax.scan(
        body, init, jnp.arange(chunk_size, dtype=jnp.int32))
    return params, opt_state, losses, num_nonfinite, num_draws


_CHUNK_STATIC_ARGS = ("loss_fn", "optimizer", "chunk_size", "max_grad_norm")
_run_chunk_jit = jax.jit(_run_chunk, static_argnames=_CHUNK_STATIC_ARGS)

# XLA compiler options as a sorted tuple of (name, value) pairs: hashable, one cache entry
# per distinct set.
CompilerOptions = tuple


def freeze_compiler_options(options: Mapping[str, Any] | None) -> CompilerOptions:
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
def _chunk_runner(compiler_options: CompilerOptions) -> Callable[..., Any]:
    """The jitted chunk program compiled with `compiler_options` (one per distinct set)."""
    if not compiler_options:
        return _run_chunk_jit
    return jax.jit(_run_chunk, static_argnames=_CHUNK_STATIC_ARGS,
                   compiler_options=dict(compiler_options))

# A chunk hook: `hook(steps_done, params, opt_state) -> (stop, postfix)`.
ChunkHook = Callable[[int, PyTree, PyTree], "tuple[bool, dict[str, Any]]"]


def run_minimize(loss_fn: Callable[..., jax.Array], params: PyTree, *, optimizer: Any,
                    num_steps: int, key: jax.Array, args: tuple, chunk_size: int,
                 opt_state: PyTree | None, start_step: int, progress_bar: bool,
                 description: str, chunk_hook: ChunkHook | None = None,
                 stacklevel: int = 2, plan: DataParallel | None = None,
                 compiler_options: CompilerOptions = (),
                 max_grad_norm: float | None = None) -> tuple[FitResult, int]:
    """The engine behind the public functions; returns the result and the steps run."""
    params = jax.tree.map(_as_strong_array, params)
    if opt_state is None:
        opt_state = optimizer.init(params)
    opt_state = jax.tree.map(_as_strong_array, opt_state)
    args = jax.tree.map(_as_strong_array, tuple(args))
    if plan is not None:
        # Everything the chunk reads lives on every device; the loss splits the work.
        params, opt_state, key, args = plan.replicate((params, opt_state, key, args))
    static_loss, static_opt = static(loss_fn), static(optimizer)
    run_chunk = _chunk_runner(compiler_options)

    chunk_losses = []
    num_nonfinite = jnp.zeros((), jnp.int32)
    num_nonfinite_draws = jnp.zeros((), jnp.int32)
    steps_done = 0
    postfix: dict[str, Any] = {}
    with tqdm(total=num_steps, desc=description, unit="step", disable=not progress_bar,
              dynamic_ncols=True) as bar:
        while steps_done < num_steps:
            num_active = min(chunk_size, num_steps - steps_done)
            params, opt_state, losses, skipped, left_out = run_chunk(
                params, opt_state, key, np.int32(start_step + steps_done),
                np.int32(num_active), args, loss_fn=static_loss, optimizer=static_opt,
                chunk_size=chunk_size, max_grad_norm=max_grad_norm)
            num_nonfinite = num_nonfinite + skipped
            num_nonfinite_draws = num_nonfinite_draws + left_out
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
    steps_skipped = int(num_nonfinite)
    if steps_skipped:
        warnings.warn(
            f"{description}: {steps_skipped} of {steps_done} steps had a non-finite loss or "
            "gradient and were skipped (parameters and optimizer state left unchanged).",
            RuntimeWarning, stacklevel=stacklevel + 1)
    return FitResult(params, opt_state, losses, steps_skipped,
                     int(num_nonfinite_draws)), steps_done


def minimize(loss_fn: Callable[..., jax.Array], params: PyTree, *, optimizer: Any,
             num_steps: int, seed: Seed, args: tuple = (), chunk_size: int = 100,
             opt_state: PyTree | None = None, start_step: int = 0,
             progress_bar: bool = True, description: str = "minimize",
             compiler_options: Mapping[str, Any] | None = None,
             max_grad_norm: float | None = None) -> FitResult:
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
      max_grad_norm: if given, clip each step's gradient to this global norm before the
        optimiser (see the module docstring).

    Returns:
      A `FitResult(params, opt_state, losses, num_nonfinite, num_nonfinite_draws)`.

    Raises:
      TypeError: if `optimizer` is not optax-like, `seed` is not a seed, or `loss_fn` does
        not return a scalar.
      ValueError: if `num_steps`, `chunk_size`, `start_step` or `max_grad_norm` is out of
        range.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> result = minimize(lambda p, seed: jnp.sum((p["x"] - 3.0) ** 2),
      ...                   {"x": jnp.zeros(2)}, optimizer=optax.adam(0.1),
      ...                   num_steps=300, seed=0, progress_bar=False)
      >>> bool(jnp.allclose(result.params["x"], 3.0, atol=1e-2)), result.losses.shape
      (True, (300,))
    """
    check_callable("loss_fn", loss_fn)
    check_optimizer(optimizer)
    num_steps = check_int("num_steps", num_steps, 0)
    chunk_size = check_int("chunk_size", chunk_size, 1)
    start_step = check_int("start_step", start_step, 0)
    max_grad_norm = check_positive_float("max_grad_norm", max_grad_norm, allow_none=True)
    result, _ = run_minimize(loss_fn, params, optimizer=optimizer, num_steps=num_steps,
                          key=as_key(seed), args=tuple(args), chunk_size=chunk_size,
                          opt_state=opt_state, start_step=start_step,
                          progress_bar=progress_bar, description=description,
                          compiler_options=freeze_compiler_options(compiler_options),
                          max_grad_norm=max_grad_norm)
    return result


