"""Choosing a density's start on held-out rows: a short pilot fit of each candidate start.

Why. An embedded-model density starts at its model (every gate λ = 0.999), and from there
maximum likelihood does not learn whether the model helps: Adam moves a gate's logit
(w ≈ 6.9) by about its learning rate per step, and the training likelihood does not ask for a
smaller gate even where the model hurts the held-out rows. Measured on the generalization
benchmark's nonlinear-drift set (a random-walk template on data with a nonlinear drift;
benchmarks/results/density_drift.md) the fitted gates stayed at 0.999 and the test NLL was
2 nats worse than the flow alone, while a start at λ = 0.1 matched the flow. Which start is
right depends on the data, and only held-out rows can tell.

How. Each candidate start (e.g. the same parameters at different gates) is fitted for a few
hundred steps of the joint fit, all candidates at once (`jax.vmap` over a `lax.scan`) on the
same minibatches (common random numbers), with the caller's optimiser, and every candidate's
negative log-likelihood is evaluated on the same validation rows at every chunk end. Each
candidate is scored at its own best chunk end (a flexible density may already overfit by
the pilot's end), and `choose_start` picks one: the first (preferred) candidate unless
another's mean validation NLL is lower by more than two standard errors of the paired
per-row difference. The fit continues from the chosen
candidate's pilot parameters and optimiser state, so the pilot's steps are not lost: the
chosen fit is exactly the one that would have run from that start.

Everything here is traceable under `jax.jit`; `emf_jax.fit_density` runs it by default for
the densities of `emf_jax.build_emf_density_stateless` (``initial_gate="auto"``).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from emf_jax.training.data import num_rows
from emf_jax.training.engine import _tree_all_finite
from emf_jax.training.losses import row_nll

__all__ = ["DEFAULT_PILOT_STEPS", "StartCandidates", "choose_start"]
# PilotResult and pilot_starts are fit_density's machinery, not public API.

PyTree = Any

# Pilot steps per candidate before the choice (see `fit_density`). Measured on the
# generalization benchmark (Adam 1e-3, batch 100; docs/density.md): at step 300 the
# nonlinear-drift set's two gates still tie on validation (-5.69 at 0.999, -5.65 at 0.1);
# by step 500 their best validation NLL orders them as their full fits' test NLL does
# (-5.92 vs -6.70; full fits: test -5.54 vs -7.51), and on the other three sets too.
DEFAULT_PILOT_STEPS = 500
# A candidate other than the first must beat it by this many standard errors.
_STANDARD_ERRORS = 2.0


class StartCandidates(NamedTuple):
    """Alternative starts of a density, between which `fit_density` chooses on validation rows.

    A density builder attaches one to its ``build_fn`` as ``build_fn.start_candidates`` (as
    `emf_jax.build_emf_density_stateless` does with ``initial_gate="auto"``).

    Attributes:
      labels: a readable name of each candidate, in order of preference (the first is kept
        unless another is clearly better).
      make: ``make(params) -> stacked``: the candidates made from one parameter set (e.g.
        after the model-first fit), stacked on a new leading axis of ``len(labels)``.
        Traceable.

    Example:
      >>> import jax.numpy as jnp
      >>> starts = StartCandidates(("a", "b"), lambda p: {"w": jnp.stack([p["w"], -p["w"]])})
      >>> starts.make({"w": jnp.ones(2)})["w"].shape
      (2, 2)
    """

    labels: tuple[str, ...]
    make: Callable[[PyTree], PyTree]


class PilotResult(NamedTuple):
    """The result of `pilot_starts`: the chosen candidate's pilot, chunk end by chunk end.

    Attributes:
      params: the chosen candidate's parameters at the end of the pilot.
      opt_state: its optimiser state there.
      best_params: its parameters at its best validation chunk end.
      best_opt_state: its optimiser state there.
      best_chunk: the index of that chunk end (0 for the first).
      losses: ``[num_steps]``, its minibatch training loss at each pilot step.
      num_nonfinite: its pilot steps skipped for a non-finite loss or gradient.
      validation_rows: ``[num_chunks, num_valid]``, its validation NLL per row at each chunk
        end.
      probe_rows: ``[num_chunks, num_probe]``, its NLL of the probe rows at each chunk end.
      choice: the chosen candidate's index (int32 scalar).
      validation_nll: ``[num_candidates]``, each candidate's best mean validation NLL over
        the pilot's chunk ends (inf when no chunk end had all rows finite).
    """

    params: PyTree
    opt_state: PyTree
    best_params: PyTree
    best_opt_state: PyTree
    best_chunk: jax.Array
    losses: jax.Array
    num_nonfinite: jax.Array
    validation_rows: jax.Array
    probe_rows: jax.Array
    choice: jax.Array
    validation_nll: jax.Array


def choose_start(row_nlls: jax.Array, *, standard_errors: float = _STANDARD_ERRORS
                 ) -> jax.Array:
    """The candidate to keep, from each candidate's NLL on the same validation rows.

    A candidate is eligible when all its rows are finite. Among the eligible ones, the first
    is kept unless the best (lowest mean NLL) beats it by more than `standard_errors`
    standard errors of the mean of their paired row differences (the rows are the same, so
    the pairing removes the rows' own spread); else the best is taken. When none is
    eligible, the one with the most finite rows. Traceable under `jax.jit`.

    Args:
      row_nlls: ``[num_candidates, num_rows]`` negative log-likelihoods (``num_rows >= 2``).
      standard_errors: the margin, in standard errors (>= 0).

    Returns:
      The index, an int32 scalar.

    Raises:
      ValueError: for a bad shape or margin.

    Example:
      >>> import jax.numpy as jnp
      >>> clear = jnp.array([[1.0, 2.0, 3.0, 2.0], [0.0, 1.0, 2.0, 1.0]])  # 1 nat, every row
      >>> noisy = jnp.array([[1.0, 2.0, 3.0, 2.0], [0.0, 3.0, 2.0, 2.6]])  # 0.1 nat, noisy
      >>> int(choose_start(clear)), int(choose_start(noisy))
      (1, 0)
    """
    if row_nlls.ndim != 2 or row_nlls.shape[0] < 1 or row_nlls.shape[1] < 2:
        raise ValueError(f"`row_nlls` must be [num_candidates >= 1, num_rows >= 2], got shape "
                         f"{tuple(row_nlls.shape)}.")
    if not float(standard_errors) >= 0:
        raise ValueError(f"`standard_errors` must be >= 0, got {standard_errors!r}.")
    finite = jnp.isfinite(row_nlls)
    num_finite = jnp.sum(finite, axis=1)
    eligible = num_finite == row_nlls.shape[1]
    safe = jnp.where(finite, row_nlls, jnp.zeros((), row_nlls.dtype))
    means = jnp.mean(safe, axis=1)
    first = jnp.argmax(eligible)
    best = jnp.argmin(jnp.where(eligible, means, jnp.inf))
    diff = safe[first] - safe[best]
    stderr = jnp.std(diff) / np.sqrt(row_nlls.shape[1] - 1)
    keep_first = means[first] - means[best] <= standard_errors * stderr
    chosen = jnp.where(keep_first, first, best)
    return jnp.where(jnp.any(eligible), chosen, jnp.argmax(num_finite)).astype(jnp.int32)


def _mean_or_inf(rows: jax.Array) -> jax.Array:
    """The mean of `rows` along the last axis, inf unless all of them are finite."""
    finite = jnp.all(jnp.isfinite(rows), axis=-1)
    return jnp.where(finite, jnp.mean(jnp.where(jnp.isfinite(rows), rows, 0.0), axis=-1),
                     jnp.inf)


def _pilot_one(loss_fn: Callable[..., jax.Array], build_fn: Callable[[PyTree], Any],
               optimizer: Any, params: PyTree, key: jax.Array, train: PyTree, valid: PyTree,
               probe: PyTree, num_chunks: int, chunk_size: int, first_step: int) -> dict:
    """`num_chunks` chunks of `chunk_size` optimiser steps from `params`, as
    `emf_jax.fit_density` takes them (step ``t`` draws its minibatch from
    ``fold_in(key, first_step + t)``; a non-finite loss or gradient skips the update), with
    the validation and probe rows' NLL at every chunk end and the best chunk end kept."""
    extra_args = isinstance(optimizer, optax.GradientTransformationExtraArgs)

    def step(carry: tuple[PyTree, PyTree], t: jax.Array
             ) -> tuple[tuple[PyTree, PyTree], tuple[jax.Array, jax.Array]]:
        params, opt_state = carry
        step_key = jax.random.fold_in(key, first_step + t)
        loss, grads = jax.value_and_grad(loss_fn)(params, step_key, train)
        if extra_args:
            updates, new_state = optimizer.update(
                grads, opt_state, params, value=loss, grad=grads,
                value_fn=lambda p: loss_fn(p, step_key, train))
        else:
            updates, new_state = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        ok = jnp.isfinite(loss) & _tree_all_finite(grads)
        kept = jax.tree.map(lambda a, b: jnp.where(ok, a, b), (new_params, new_state),
                            (params, opt_state))
        return kept, (loss, jnp.logical_not(ok))

    def chunk(carry: dict, c: jax.Array) -> tuple[dict, tuple[jax.Array, ...]]:
        steps = c * chunk_size + jnp.arange(chunk_size, dtype=jnp.int32)
        (params, opt_state), (losses, skipped) = jax.lax.scan(
            step, (carry["params"], carry["opt_state"]), steps)
        val_rows = row_nll(build_fn, params, valid)
        probe_rows = row_nll(build_fn, params, probe)
        val = _mean_or_inf(val_rows)
        better = val < carry["best_val"]
        best = jax.tree.map(lambda a, b: jnp.where(better, a, b),
                            (params, opt_state, c, val, val_rows),
                            (carry["best_params"], carry["best_opt_state"],
                             carry["best_chunk"], carry["best_val"], carry["best_rows"]))
        carry = dict(params=params, opt_state=opt_state, best_params=best[0],
                     best_opt_state=best[1], best_chunk=best[2], best_val=best[3],
                     best_rows=best[4])
        return carry, (losses, jnp.sum(skipped.astype(jnp.int32)), val_rows, probe_rows)

    opt_state = optimizer.init(params)
    dtype = jax.eval_shape(lambda: row_nll(build_fn, params, valid)).dtype
    init = dict(params=params, opt_state=opt_state, best_params=params,
                best_opt_state=opt_state, best_chunk=jnp.zeros((), jnp.int32),
                best_val=jnp.full((), jnp.inf, dtype),
                best_rows=jnp.full((num_rows(valid),), jnp.inf, dtype))
    carry, (losses, skipped, val_rows, probe_rows) = jax.lax.scan(
        chunk, init, jnp.arange(num_chunks, dtype=jnp.int32))
    return dict(carry, losses=losses.reshape(-1), num_nonfinite=jnp.sum(skipped),
                validation_rows=val_rows, probe_rows=probe_rows)


def pilot_starts(loss_fn: Callable[..., jax.Array], build_fn: Callable[[PyTree], Any],
                 candidates: PyTree, *, optimizer: Any, key: jax.Array, train: PyTree,
                 valid: PyTree, probe: PyTree, num_chunks: int, chunk_size: int,
                 first_step: int = 0) -> PilotResult:
    """Fits every candidate start for a few chunks and keeps the one `choose_start` picks.

    Each candidate is scored by its rows at its own best validation chunk end (a flexible
    density may already overfit by the pilot's end), and `choose_start` compares those.

    Args:
      loss_fn: the training loss ``loss_fn(params, seed, train)`` (e.g.
        `emf_jax.training.MinibatchNLL`).
      build_fn: ``build_fn(params) -> tfd.Distribution``, for the row NLLs.
      candidates: parameter sets stacked on a leading axis (`StartCandidates.make`).
      optimizer: an optax optimiser (each candidate gets its own state).
      key: the training key; every candidate sees the same minibatches.
      train: structured training rows.
      valid: structured validation rows (at least 2).
      probe: structured rows whose NLL is also recorded at each chunk end (`fit_density`'s
        training rows for its divergence warning).
      num_chunks: chunks of the pilot (>= 1).
      chunk_size: steps per chunk (>= 1).
      first_step: the global index of the first pilot step (for the minibatch keys).

    Returns:
      A `PilotResult`. Traceable under `jax.jit` (with `loss_fn`, `build_fn`, `optimizer`,
      `num_chunks` and `chunk_size` static).
    """
    runs = jax.vmap(lambda p: _pilot_one(loss_fn, build_fn, optimizer, p, key, train, valid,
                                         probe, num_chunks, chunk_size, first_step)
                    )(candidates)
    choice = choose_start(runs["best_rows"])
    pick = {k: jax.tree.map(lambda leaf: leaf[choice], v) for k, v in runs.items()}
    return PilotResult(
        params=pick["params"], opt_state=pick["opt_state"], best_params=pick["best_params"],
        best_opt_state=pick["best_opt_state"], best_chunk=pick["best_chunk"],
        losses=pick["losses"], num_nonfinite=pick["num_nonfinite"],
        validation_rows=pick["validation_rows"], probe_rows=pick["probe_rows"],
        choice=choice, validation_nll=runs["best_val"])
