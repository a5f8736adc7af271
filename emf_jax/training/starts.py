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
hundred steps of the joint fit, one candidate after the other, with the fit's own compiled
chunk program (`emf_jax.training.engine.run_minimize`, so the pilot adds no compilation: a
`jax.vmap` over the candidates compiled a second, larger program), on the same minibatches
(common random numbers) and with the caller's optimiser; every candidate's negative
log-likelihood is evaluated on the same validation rows at every chunk end. Each candidate
is scored at its own best chunk end (a flexible density may already overfit by the pilot's
end), and `choose_start` picks one: the first (preferred) candidate unless another's mean
validation NLL is lower by more than two standard errors of the paired per-row difference.
The fit continues from the chosen candidate's pilot parameters and optimiser state, so the
pilot's steps are not lost: the chosen fit is exactly the one that would have run from that
start.

`choose_start` is traceable under `jax.jit`; `emf_jax.fit_density` runs the pilot
(`run_pilot`) by default for the densities of `emf_jax.build_emf_density_stateless`
(``initial_gate="auto"``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from emf_jax.training.engine import CompilerOptions, FitResult, run_minimize

__all__ = ["DEFAULT_PILOT_STEPS", "StartCandidates", "choose_start"]
# PilotResult and run_pilot are fit_density's machinery, not public API.

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
    """The result of `run_pilot`: the chosen candidate's pilot, chunk end by chunk end.

    Attributes:
      result: the chosen candidate's `FitResult` at the end of the pilot (parameters,
        optimiser state, its minibatch losses, its skipped steps).
      best_params: its parameters at its best validation chunk end (None when no chunk end
        had all validation rows finite).
      best_opt_state: its optimiser state there.
      best_chunk: the index of that chunk end (0 for the first).
      chunk_rows: per chunk end, its ``(validation rows' NLL, probe rows' NLL)``.
      choice: the chosen candidate's index.
      validation_nll: ``[num_candidates]``, each candidate's best mean validation NLL over
        the pilot's chunk ends (inf when no chunk end had all rows finite).
    """

    result: FitResult
    best_params: PyTree
    best_opt_state: PyTree
    best_chunk: int
    chunk_rows: list[tuple[np.ndarray, np.ndarray]]
    choice: int
    validation_nll: np.ndarray


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


def run_pilot(loss_fn: Callable[..., jax.Array], candidates: PyTree, labels: Sequence[str],
              *, evaluate: Callable[[PyTree], tuple[np.ndarray, np.ndarray]], optimizer: Any,
              key: jax.Array, args: tuple, num_chunks: int, chunk_size: int,
              start_step: int, progress_bar: bool,
              compiler_options: CompilerOptions = ()) -> PilotResult:
    """Fits every candidate start for a few chunks and keeps the one `choose_start` picks.

    Each candidate runs `num_chunks` chunks of `run_minimize` from its own fresh optimiser
    state, with the same `key` and step indices (so the same minibatches) and the same
    compiled chunk as the fit that follows; `evaluate` gives its validation and probe rows'
    NLL at each chunk end. Each candidate is scored by its rows at its own best validation
    chunk end, and `choose_start` compares those.

    Args:
      loss_fn: the training loss ``loss_fn(params, key, *args)`` (e.g.
        `emf_jax.training.MinibatchNLL`).
      candidates: parameter sets stacked on a leading axis (`StartCandidates.make`).
      labels: a name per candidate (for the progress bar and warnings).
      evaluate: ``evaluate(params) -> (validation rows' NLL, probe rows' NLL)``.
      optimizer: an optax optimiser (each candidate gets its own state).
      key: the training key.
      args: the loss's data arguments.
      num_chunks: chunks of the pilot (>= 1).
      chunk_size: steps per chunk (>= 1).
      start_step: the global index of the first pilot step (for the minibatch keys).
      progress_bar: whether to show a progress bar per candidate.
      compiler_options: as for `run_minimize`.

    Returns:
      A `PilotResult`.
    """
    runs = []
    for i, label in enumerate(labels):
        chunk_rows: list[tuple[np.ndarray, np.ndarray]] = []
        best: dict[str, Any] = dict(val=math.inf, rows=None, params=None, opt_state=None,
                                    chunk=0)

        def hook(step: int, params: PyTree, opt_state: PyTree,
                 chunk_rows: list = chunk_rows, best: dict = best) -> tuple[bool, dict]:
            val_rows, probe_rows = evaluate(params)
            chunk_rows.append((val_rows, probe_rows))
            val = float(np.mean(val_rows)) if np.all(np.isfinite(val_rows)) else math.inf
            if val < best["val"]:
                best.update(val=val, rows=val_rows, params=params, opt_state=opt_state,
                            chunk=len(chunk_rows) - 1)
            return False, {"val": f"{val:.4g}"}

        result, _ = run_minimize(
            loss_fn, jax.tree.map(lambda leaf, i=i: leaf[i], candidates), optimizer=optimizer,
            num_steps=num_chunks * chunk_size, key=key, args=args, chunk_size=chunk_size,
            opt_state=None, start_step=start_step, progress_bar=progress_bar,
            description=f"fit_density pilot ({label})", chunk_hook=hook, stacklevel=3,
            compiler_options=compiler_options)
        runs.append((result, chunk_rows, best))
    # Each candidate's rows at its best chunk end; a candidate with no finite chunk end
    # offers its last rows (choose_start rules it out, or takes the one with most finite).
    rows = np.stack([best["rows"] if best["rows"] is not None else chunk_rows[-1][0]
                     for _, chunk_rows, best in runs])
    choice = int(choose_start(jnp.asarray(rows)))
    result, chunk_rows, best = runs[choice]
    return PilotResult(result=result, best_params=best["params"],
                       best_opt_state=best["opt_state"], best_chunk=int(best["chunk"]),
                       chunk_rows=chunk_rows, choice=choice,
                       validation_nll=np.asarray([b["val"] for _, _, b in runs], np.float64))
