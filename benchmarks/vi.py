"""The EMF paper's structured VI experiments: surrogates against ground truth, per target.

Usage (from the repository root)::

    python -m benchmarks.vi --quick                  # minutes: 2 small targets, 2 seeds
    python -m benchmarks.vi --full                   # every target, 5 seeds (hours on a CPU)
    python -m benchmarks.vi --full --targets eight_schools binary_tree_linear_4 --seeds 5
    python -m benchmarks.vi --full --methods gemf_t iaf --steps 3000
    python -m benchmarks.vi --smoke --out-dir /tmp/x # seconds: what the CI test runs
    python -m benchmarks.vi --full --table-only      # rewrite the table from saved results
    python -m benchmarks.vi --full --targets van_der_pol_bridge_r --methods gemf_t \
        --xla-option xla_disable_hlo_passes=fusion   # XLA options for emf_jax/TFP programs
    python -m benchmarks.vi --suite real             # public models (benchmarks.real_models)
    python -m benchmarks.vi --suite real --quick     # the same machinery in seconds

The real suite (``--suite real``) runs public models written by others
(``benchmarks.real_models``) with each library's default options: mean field, full rank, ASVI,
IAF, GEMF-T, and NumPyro's ``AutoMultivariateNormal`` and ``AutoIAFNormal`` (NumPyro's
defaults). Besides -ELBO (with the number of non-finite draws among the evaluation draws: any
one makes the ELBO -inf) and k̂, it reports against the cached NUTS moments the worst
standardised error of the posterior means ``max_i |E_q x_i - m_i| / s_i`` and the median ratio
of the surrogate's to NUTS's standard deviations, plus the non-finite training steps and the
wall time. A method that cannot be built on a model (e.g. an unsupported distribution) is
recorded as "unsupported: <error>". Its results go to ``vi_real.md`` / ``vi_real.json``
(``vi_real_quick.*`` with ``--quick``).

Methods (one fixed budget for all, stated in the table's header): mean field, full-rank
Gaussian (one flat vector), ASVI and IAF (``emf_jax.baselines``; IAF has tanh conditioners,
as the paper's baseline), EMF-T and GEMF-T (backbone IAF with relu conditioners, then the
(gated) structured layer); with ``--methods vip mif gemf_vip`` also the model-informed
reparameterisations of issue 19 (``emf_jax.reparam``: VIP over a full-rank base, at the
Gaussians' learning rates; affine MIF and GEMF-VIP, an IAF backbone under gated VIP, at the
flows'). NumPyro's ``AutoIAFNormal`` and ``AutoBNAFNormal`` run on
the same log-density as outside peers when NumPyro is installed (the ``bench`` extra);
without it they are skipped with a note.

Metrics, each as mean ± standard error over seeds:

- ``-ELBO``: ``-mean(log p(x, y) - log q(x))`` over ``--eval-draws`` fresh draws of ``q``
  (lower is better; its floor is ``-log p(y)``, printed where the evidence is known).
- ``log q(ref)``: the surrogate's mean log-density of reference posterior draws (exact
  Gaussian draws for the linear-Gaussian targets, else the cached NUTS draws of
  ``benchmarks/ground_truth``): ``-KL(p || q)`` up to the constant entropy of ``p``, a
  forward-KL (mass-covering) proxy; higher is better.
- ``k̂``: the PSIS Pareto shape of the importance weights ``p / q`` on the same draws as the
  ELBO (``emf_jax.diagnostics.psis_khat``); < 0.5 good, > 0.7 ``q`` misses posterior mass.
- Wall time: the first seed's fit (including compilation of the training program) and the
  steady-state time per step (later seeds reuse the compiled program).

Results are kept per target and method in ``benchmarks/results/vi_{mode}.json`` (so that a
``--full`` run can be done in parts: each run updates the targets and methods it ran), and
rendered to ``vi_{mode}.md`` with two plots per target: ``vi_{mode}_{target}_metrics.png``
(-ELBO and log q(ref) per method, drawn from the saved results, so also for targets run in
parts) and, when the target's methods ran in one process, ``vi_{mode}_{target}.png`` (loss
traces of the first seed and each surrogate's marginals against the reference draws).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import jax
import numpy as np

from benchmarks._common import (  # noqa: F401  (re-exported: benchmarks.vi.Budget, ...)
    GAUSSIAN_METHODS,
    METHODS,
    OWN_METHODS,
    PAPER_PEER_METHODS,
    PEER_METHODS,
    REAL_METHODS,
    Budget,
    MethodRun,
    learning_rates,
    make_optimizer,
    with_learning_rate,
)
from benchmarks._device import device_name

RESULTS_DIR = Path(__file__).resolve().parent / "results"


PAPER_TARGETS = (
    "brownian_smoothing_r", "brownian_smoothing_c", "brownian_bridge_r", "brownian_bridge_c",
    "lorenz_smoothing_r", "lorenz_smoothing_c", "lorenz_bridge_r", "lorenz_bridge_c",
    "van_der_pol_smoothing_r", "van_der_pol_smoothing_c", "van_der_pol_bridge_r",
    "van_der_pol_bridge_c", "eight_schools", "binary_tree_linear_4", "binary_tree_tanh_4",
    "binary_tree_linear_8", "binary_tree_tanh_8",
)
"""The paper's VI targets (``emf_jax.models`` names), cheapest families first."""

# Linear-Gaussian targets: their exact posterior is Gaussian, so reference draws are exact.
_GAUSSIAN_POSTERIORS = ("brownian_smoothing_r", "brownian_bridge_r", "brownian_bridge_r_gym",
                        "binary_tree_linear_4", "binary_tree_linear_8")


class Mode(NamedTuple):
    budget: Budget
    targets: tuple[str, ...]
    num_seeds: int
    methods: tuple[str, ...]


MODES: dict[str, Mode] = {
    # Seconds: the CI test. Tiny networks and few steps; numbers are not meaningful.
    "smoke": Mode(Budget(30, 4, (5e-2,), 1e-3, 1.0, (8, 8), 200, 100),
                  ("binary_tree_linear_4",), 1, OWN_METHODS + PAPER_PEER_METHODS),
    # Minutes: two small targets, the paper's architecture, short fits.
    "quick": Mode(Budget(600, 16, (5e-2,), 1e-3, 0.1, (512, 512), 1000, 1000),
                  ("eight_schools", "binary_tree_linear_4"), 2,
                  OWN_METHODS + PAPER_PEER_METHODS),
    # The paper's settings where a CPU allows (its flows used sample size 50 and lr ~1e-4
    # for longer runs).
    "full": Mode(Budget(2000, 16, (1e-2, 5e-2), 1e-3, 0.1, (512, 512), 1000, 500),
                 PAPER_TARGETS, 5, OWN_METHODS + PAPER_PEER_METHODS),
}

REAL_MODES: dict[str, Mode] = {
    # The real suite at a modest CPU budget (the emf_jax flows' default hidden units).
    # 1000 steps: every row of vi_real.md was run at this budget (CPU hours for the suite).
    "real": Mode(Budget(1000, 16, (1e-2,), 1e-3, 0.1, (512, 512), 1000, 500),
                 (), 3, REAL_METHODS),
    # Seconds per method: the smoke test's machinery check; numbers are not meaningful.
    "real_quick": Mode(Budget(50, 4, (1e-2,), 1e-3, 1.0, (16, 16), 200, 100),
                       ("eight_schools_centered", "gp_regression"), 1, REAL_METHODS),
}
"""Modes of ``--suite real`` (``real``, and ``real_quick`` with ``--quick``); the ``real``
mode's targets are all of ``benchmarks.real_models.REAL_TARGET_NAMES``."""



# ----------------------------------------------------------------------------- reference


class Reference(NamedTuple):
    """Reference posterior draws of a target.

    Attributes:
      draws: latent structure (as the pinned model samples it), leaves ``[n, *event]``.
      source: a short description (exact Gaussian or NUTS with its diagnostics).
      log_evidence: exact ``log p(y)`` where known, else None.
      mean: the reference posterior means, flat in model order (the real suite), or None.
      stddev: the reference posterior standard deviations, flat, or None.
    """

    draws: Any
    source: str
    log_evidence: Optional[float]
    mean: Optional[np.ndarray] = None
    stddev: Optional[np.ndarray] = None


def load_reference(target: Any, num_draws: int, *, seed: int = 0) -> Optional[Reference]:
    """Reference draws for `target`: exact for linear-Gaussian posteriors, else cached NUTS.

    Args:
      target: an ``emf_jax.models.BenchmarkTarget`` (data seed 0, as the NUTS cache).
      num_draws: how many draws to return (at most those cached, for NUTS).
      seed: numpy seed of the exact draws and of the NUTS subsample.

    Returns:
      A :class:`Reference`, or None when no ground truth is available.
    """
    from emf_jax import internal, models

    pinned = target.pinned_model
    names = list(pinned.event_shape._fields)
    shapes = [tuple(s) for s in pinned.event_shape]
    struct = type(pinned.event_shape)
    dtype = np.dtype(target.observations[models.OBSERVED_NAME].dtype)
    if dtype.kind != "f":  # Bernoulli observations: the latents take the model's float dtype
        dtype = np.dtype(pinned.dtype[0])
    log_evidence = (None if target.exact_posterior is None
                    else target.exact_posterior.log_marginal_likelihood)
    rng = np.random.default_rng(seed)
    if target.name in _GAUSSIAN_POSTERIORS:
        exact = target.exact_posterior
        mean = np.concatenate([np.reshape(exact.mean[n], -1) for n in names])
        flat = rng.multivariate_normal(mean, exact.covariance, size=num_draws,
                                       method="cholesky")
        parts = internal.split_flat(flat, names, shapes)
        source = "exact Gaussian posterior"
    else:
        from benchmarks import ground_truth

        try:
            truth = ground_truth.load_ground_truth(target.name)
        except FileNotFoundError:
            return None
        total = truth.draws[names[0]].shape[0]
        keep = np.sort(rng.choice(total, size=min(num_draws, total), replace=False))
        parts = {n: truth.draws[n][keep] for n in names}
        info = truth.info
        source = (f"NUTS, {info['num_draws_total']} draws, max R-hat {info['max_rhat']:.3f}, "
                  f"min ESS {info['min_ess']:.0f}")
    draws = struct(*[np.asarray(parts[n], dtype) for n in names])
    return Reference(draws=draws, source=source, log_evidence=log_evidence)


def load_real_reference(target: Any, num_draws: int, *, seed: int = 0
                        ) -> Optional[Reference]:
    """Reference draws and moments of a ``benchmarks.real_models`` target from its cached
    NUTS run (``truth_name``; targets of one posterior share it: their flat latent vectors
    in model order coincide).

    Args:
      target: a ``benchmarks.real_models.RealTarget``.
      num_draws: how many draws to return (at most those cached).
      seed: numpy seed of the subsample.

    Returns:
      A :class:`Reference` with ``mean`` and ``stddev`` (flat, model order), or None when no
      ground truth is cached.

    Raises:
      ValueError: if the cached latents do not have the target's total size.
    """
    from benchmarks import ground_truth
    from emf_jax.internal import split_flat

    try:
        truth = ground_truth.load_ground_truth(target.truth_name)
    except FileNotFoundError:
        return None
    pinned = target.pinned_model
    # Leaves of the latent structure in model order (a nested joint distribution's latent is
    # itself a structure: its leaves are flattened depth first, as the model orders them).
    leaves, treedef = jax.tree_util.tree_flatten(
        pinned.event_shape, is_leaf=lambda s: not isinstance(s, tuple) or hasattr(s, "rank"))
    shapes = [tuple(s) for s in leaves]
    names = [f"leaf{i}" for i in range(len(shapes))]
    order = truth.info["latent_names"]

    def flat(group: dict[str, np.ndarray], lead: tuple[int, ...]) -> np.ndarray:
        return np.concatenate([np.reshape(group[n], lead + (-1,)) for n in order], axis=-1)

    total = truth.draws[order[0]].shape[0]
    draws = flat(truth.draws, (total,))
    size = sum(int(np.prod(s, dtype=int)) for s in shapes)
    if draws.shape[-1] != size:
        raise ValueError(f"ground truth {target.truth_name!r} has {draws.shape[-1]} latent "
                         f"coordinates, target {target.name!r} has {size}.")
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(total, size=min(num_draws, total), replace=False))
    parts = split_flat(draws[keep], names, shapes)
    dtype = np.dtype(jax.tree.leaves(pinned.dtype)[0])
    info = truth.info
    source = (f"NUTS ({info['sampled_target']}), {info['num_draws_total']} draws, max R-hat "
              f"{info['max_rhat']:.3f}, min ESS {info['min_ess']:.0f}, "
              f"{info['num_divergences']} divergences")
    return Reference(draws=jax.tree_util.tree_unflatten(
                         treedef, [np.asarray(parts[n], dtype) for n in names]),
                     source=source, log_evidence=None,
                     mean=flat(truth.mean, ()), stddev=flat(truth.stddev, ()))


# ----------------------------------------------------------------------------- methods




def _builders(pinned: Any, budget: Budget) -> dict[str, Callable[[], tuple[Any, Any]]]:
    from emf_jax import baselines
    from emf_jax.surrogates import build_emf_surrogate_posterior_stateless as build_emf

    hidden = tuple(budget.hidden_units)
    return {
        "mean_field": lambda: baselines.build_mean_field_surrogate_stateless(pinned),
        "full_rank": lambda: baselines.build_full_rank_surrogate_stateless(pinned),
        "asvi": lambda: baselines.build_asvi_surrogate_stateless(pinned),
        "iaf": lambda: baselines.build_iaf_surrogate_stateless(pinned, hidden_units=hidden),
        "emf_t": lambda: build_emf(pinned, architecture="emf-t", hidden_units=hidden),
        "gemf_t": lambda: build_emf(pinned, architecture="gemf-t", hidden_units=hidden),
        "vip": lambda: build_emf(pinned, architecture="vip"),
        "mif": lambda: build_emf(pinned, architecture="mif", hidden_units=hidden),
        "gemf_vip": lambda: build_emf(pinned, architecture="gemf-vip", hidden_units=hidden),
    }


def _tfp_method(target: Any, method: str, budget: Budget, *,
                compiler_options: Optional[dict[str, Any]] = None) -> MethodRun:
    """A surrogate built by emf_jax (or its baselines), fitted with ``emf_jax.fit_vi``.

    `compiler_options` (XLA options) apply to the training and the evaluation programs.
    """
    import jax
    import jax.numpy as jnp

    from emf_jax.diagnostics import psis_khat
    from emf_jax.training import fit_vi

    pinned = target.pinned_model
    log_prob = pinned.unnormalized_log_prob
    init_fn, build_fn = _builders(pinned, budget)[method]()
    optimizer = make_optimizer(budget, method)
    chunk = min(budget.num_steps, 500)

    def fit(seed: int, learning_rate: float) -> tuple[Any, np.ndarray, int]:
        params = init_fn(jax.random.PRNGKey(seed))
        opt_state = with_learning_rate(optimizer.init(params), learning_rate)
        result = fit_vi(log_prob, build_fn, params, optimizer=optimizer, opt_state=opt_state,
                        num_steps=budget.num_steps, sample_size=budget.sample_size,
                        seed=seed, chunk_size=chunk, progress_bar=False,
                        compiler_options=compiler_options)
        jax.block_until_ready(result.params)
        return result.params, np.asarray(result.losses), result.num_nonfinite

    @functools.partial(jax.jit, compiler_options=compiler_options)
    def _evaluate(params: Any, key: jax.Array, reference: Any) -> dict[str, jax.Array]:
        q = build_fn(params)
        x, log_q = q.experimental_sample_and_log_prob(budget.eval_draws, seed=key)
        log_w = log_prob(x) - log_q
        out = {"log_w": log_w, "khat": psis_khat(log_w), "draws": x}
        if reference is not None:
            out["log_q_ref"] = jnp.mean(q.log_prob(reference))
        return out

    def evaluate(params: Any, seed: int, reference: Any) -> dict[str, Any]:
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 7919)
        return _evaluate(params, key, reference)

    return MethodRun(fit=fit, evaluate=evaluate)


def make_method(target: Any, method: str, budget: Budget, *,
                compiler_options: Optional[dict[str, Any]] = None,
                library_defaults: bool = False) -> MethodRun:
    """Builds the fit and evaluation functions of `method` on `target`.

    `compiler_options` (XLA options, see `emf_jax.fit_vi`) apply to the emf_jax and TFP
    methods; the NumPyro peers compile with their defaults. `library_defaults` builds
    NumPyro's AutoIAFNormal with NumPyro's defaults (the real suite).
    """
    if method in PEER_METHODS:
        from benchmarks import _numpyro_peers

        return _numpyro_peers.make_peer(target, method, budget,
                                        library_defaults=library_defaults)
    return _tfp_method(target, method, budget, compiler_options=compiler_options)


# ----------------------------------------------------------------------------- running


def _sem(values: Sequence[float]) -> float:
    values = np.asarray(values, np.float64)
    return float(values.std(ddof=1) / math.sqrt(values.size)) if values.size > 1 else float("nan")


def flatten_draws(draws: Any, names: Sequence[str]) -> np.ndarray:
    """Latent draws (a structure with leaves ``[n, *event]``: named tuple or dict) as
    ``[n, D]`` in the order of `names`."""
    leaves = [draws[n] if isinstance(draws, dict) else getattr(draws, n) for n in names]
    # A nested joint distribution's latent is a structure of leaves [n, *event].
    leaves = [np.asarray(v, np.float64) for leaf in leaves for v in jax.tree.leaves(leaf)]
    return np.concatenate([np.reshape(v, (v.shape[0], -1)) for v in leaves], axis=-1)


def moment_errors(flat: np.ndarray, log_w: np.ndarray, mean: np.ndarray, stddev: np.ndarray
                  ) -> dict[str, float]:
    """The surrogate's moments against the reference's, on the draws whose log-weight and
    coordinates are all finite.

    Returns:
      ``max_mean_z``: ``max_i |E_q x_i - m_i| / s_i``; ``median_sd_ratio``: the median of
      ``sd_q,i / s_i``; ``num_nonfinite_draws``: the draws left out (non-finite ``log w`` or
      coordinates). Both moments are NaN when fewer than two draws are finite.
    """
    ok = np.isfinite(log_w) & np.all(np.isfinite(flat), axis=-1)
    out = {"num_nonfinite_draws": int(np.sum(~ok)), "max_mean_z": float("nan"),
           "median_sd_ratio": float("nan")}
    if ok.sum() >= 2:
        kept = flat[ok]
        out["max_mean_z"] = float(np.max(np.abs(kept.mean(0) - mean) / stddev))
        out["median_sd_ratio"] = float(np.median(kept.std(0, ddof=1) / stddev))
    return out


def _run_seeds(run: MethodRun, method: str, learning_rate: float, seeds: Sequence[int],
               ref_draws: Any, log: Callable[[str], None],
               moments: Optional[tuple[Sequence[str], np.ndarray, np.ndarray]] = None,
               ) -> tuple[dict[str, list], dict]:
    """Fits and evaluates one method at one learning rate for every seed.

    `moments` (latent names, flat reference means and standard deviations) adds the moment
    errors of :func:`moment_errors` per seed.
    """
    keys = ["neg_elbo", "neg_elbo_se", "log_q_ref", "khat", "fit_seconds", "eval_seconds",
            "num_nonfinite", "final_loss"]
    if moments is not None:
        keys += ["neg_elbo_finite", "num_nonfinite_draws", "max_mean_z", "median_sd_ratio"]
    keys += [] if moments is not None else ["num_nonfinite_draws"]
    per_seed: dict[str, list] = {k: [] for k in keys}
    extras: dict[str, Any] = {}
    for index, seed in enumerate(seeds):
        tic = time.perf_counter()
        params, losses, nonfinite = run.fit(seed, learning_rate)
        fit_seconds = time.perf_counter() - tic
        tic = time.perf_counter()
        out = run.evaluate(params, seed, ref_draws)
        log_w = np.asarray(out["log_w"], np.float64)
        eval_seconds = time.perf_counter() - tic
        finite = np.isfinite(log_w)
        # A draw with log p = -inf (or log q = +inf) makes the ELBO -inf: kept as such.
        neg_elbo = float(-np.mean(log_w)) if finite.all() else float("inf")
        per_seed["neg_elbo"].append(neg_elbo)
        per_seed["neg_elbo_se"].append(float(np.std(log_w) / math.sqrt(log_w.size))
                                       if finite.all() else float("nan"))
        per_seed["log_q_ref"].append(float(out["log_q_ref"]) if "log_q_ref" in out
                                     else None)
        per_seed["khat"].append(float(out["khat"]))
        per_seed["fit_seconds"].append(fit_seconds)
        per_seed["eval_seconds"].append(eval_seconds)
        per_seed["num_nonfinite"].append(int(nonfinite))
        tail = losses[-max(1, len(losses) // 20):]
        per_seed["final_loss"].append(float(np.mean(tail[np.isfinite(tail)]))
                                      if np.isfinite(tail).any() else float("nan"))
        if moments is None:
            per_seed["num_nonfinite_draws"].append(int(np.sum(~finite)))
        else:
            names, mean, stddev = moments
            errors = moment_errors(flatten_draws(out["draws"], names), log_w, mean, stddev)
            for key, value in errors.items():
                per_seed[key].append(value)
            # Shown beside the count of the draws it leaves out; never the headline ELBO.
            per_seed["neg_elbo_finite"].append(float(-np.mean(log_w[finite]))
                                               if finite.any() else float("nan"))
        if index == 0:
            extras = {"losses": losses, "draws": out["draws"]}
        lq = per_seed["log_q_ref"][-1]
        log(f"  {METHODS[method]:<24} lr {learning_rate:<6g} seed {seed}: -ELBO "
            f"{neg_elbo:10.3f}  log q(ref) {'—' if lq is None else f'{lq:10.3f}'}  k̂ "
            f"{per_seed['khat'][-1]:6.2f}  fit {fit_seconds:6.1f}s  eval {eval_seconds:5.1f}s"
            + (f"  ({nonfinite} non-finite steps skipped)" if nonfinite else "")
            + ("" if moments is None else
               f"  mean z {per_seed['max_mean_z'][-1]:.2f}  sd ratio "
               f"{per_seed['median_sd_ratio'][-1]:.2f}  non-finite draws "
               f"{per_seed['num_nonfinite_draws'][-1]}"))
    return per_seed, extras


def run_method(target: Any, method: str, budget: Budget, seeds: Sequence[int],
               reference: Optional[Reference], *, log: Callable[[str], None] = print,
               compiler_options: Optional[dict[str, Any]] = None,
               library_defaults: bool = False,
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fits `method` on `target` once per seed (and learning rate) and evaluates every fit.

    With several learning rates (the Gaussian baselines), all are run and the one with the
    lowest mean -ELBO over seeds is reported; the others' mean -ELBO is kept in the record.

    Returns:
      ``(record, extras)``: the JSON-able per-seed metrics, and the first seed's loss trace
      and surrogate draws (for plots).
    """
    run = make_method(target, method, budget, compiler_options=compiler_options,
                      library_defaults=library_defaults)
    ref_draws = None if reference is None else reference.draws
    moments = None
    if reference is not None and reference.mean is not None:
        moments = (list(target.pinned_model.event_shape._fields), reference.mean,
                   reference.stddev)
    runs = {}
    all_fit_seconds = []
    for lr in learning_rates(budget, method):
        runs[lr] = _run_seeds(run, method, lr, seeds, ref_draws, log, moments)
        all_fit_seconds += runs[lr][0]["fit_seconds"]

    def score(lr: float) -> float:
        value = float(np.mean(runs[lr][0]["neg_elbo"]))
        return value if np.isfinite(value) else float("inf")

    best = min(runs, key=score)
    per_seed, extras = runs[best]
    # The first fit compiled the training program; every later fit reuses it.
    steady = all_fit_seconds[1:]
    record = {
        "status": "ok",
        "seeds": list(seeds),
        "learning_rate": best,
        "other_learning_rates": {f"{lr:g}": score(lr) for lr in runs if lr != best},
        "per_seed": per_seed,
        "first_fit_seconds": all_fit_seconds[0],
        "steady_ms_per_step": (1e3 * float(np.median(steady)) / budget.num_steps
                               if steady else None),
        "budget": budget._asdict(),
        "device": device_name(),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if compiler_options and method not in PEER_METHODS:
        record["compiler_options"] = dict(compiler_options)
    return record, extras


def run_target(name: str, methods: Sequence[str], budget: Budget, seeds: Sequence[int], *,
               log: Callable[[str], None] = print, plot_path: Optional[Path] = None,
               save: Optional[Callable[[dict[str, Any]], None]] = None,
               compiler_options: Optional[dict[str, Any]] = None,
               suite: str = "paper") -> dict[str, Any]:
    """Runs every method on one target; returns the target's JSON record.

    `save(record)`, if given, is called after each method with the record so far (so that
    an interrupted run keeps the methods it finished). `compiler_options` go to
    `make_method`. With ``suite="real"`` `name` is a ``benchmarks.real_models`` target, its
    reference comes from :func:`load_real_reference` (moments included), NumPyro's
    AutoIAFNormal has NumPyro's defaults, and a method whose surrogate cannot be built on the
    model's distributions is recorded as "unsupported: <error>".
    """
    from emf_jax import models
    from emf_jax.transforms import UnsupportedDistributionError

    real = suite == "real"
    if real:
        from benchmarks import real_models

        target = real_models.get_real_target(name)
        reference = load_real_reference(target, budget.reference_draws)
    else:
        target = models.get_target(name)
        reference = load_reference(target, budget.reference_draws)
    record: dict[str, Any] = {
        "description": target.description,
        "reference": None if reference is None else reference.source,
        "log_evidence": None if reference is None else reference.log_evidence,
        "num_latents": int(sum(int(np.prod(s, dtype=int))
                               for s in target.pinned_model.event_shape)),
        "methods": {},
    }
    if reference is None and not real:
        record["log_evidence"] = (None if target.exact_posterior is None
                                  else target.exact_posterior.log_marginal_likelihood)
    missing = ("none (no cached ground truth; make it with `python -m benchmarks.ground_truth "
               + ("--suite real " if real else "") + f"--targets {name}`)")
    log(f"{name}: {target.description}\n  reference: {record['reference'] or missing}")
    extras: dict[str, Any] = {}
    for method in methods:
        if method in PEER_METHODS:
            from benchmarks import _numpyro_peers

            if not _numpyro_peers.available():
                record["methods"][method] = {"status": "not run (numpyro not installed)"}
                continue
        try:
            record["methods"][method], extras[method] = run_method(
                target, method, budget, seeds, reference, log=log,
                compiler_options=compiler_options, library_defaults=real)
        except UnsupportedDistributionError as err:
            message = str(err).splitlines()[0][:200]
            log(f"  {METHODS[method]}: unsupported ({message})")
            record["methods"][method] = {"status": f"unsupported: {message}"}
        except Exception as err:  # noqa: BLE001 - a failing method must not stop the others
            message = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            log(f"  {METHODS[method]}: FAILED ({message})")
            record["methods"][method] = {"status": f"failed ({message})"}
        if save is not None:
            save(record)
    if plot_path is not None and extras:
        plot_target(plot_path, name, record, extras, reference)
    return record


# ----------------------------------------------------------------------------- reporting


def _stat(values: Sequence[Optional[float]]) -> Optional[tuple[float, float]]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return float(np.mean(vals)), _sem(vals)


def _fmt(stat: Optional[tuple[float, float]], digits: int = 3, bold: bool = False) -> str:
    if stat is None:
        return "—"
    mean, sem = stat
    if not np.isfinite(mean):
        text = f"{mean}"
    elif np.isnan(sem):
        text = f"{mean:.{digits}f}"
    else:
        text = f"{mean:.{digits}f} ± {sem:.{digits}f}"
    return f"**{text}**" if bold else text


def _method_stats(entry: dict[str, Any]) -> dict[str, Any]:
    per = entry["per_seed"]
    return {
        "neg_elbo": _stat(per["neg_elbo"]),
        "log_q_ref": _stat(per["log_q_ref"]),
        "khat": _stat(per["khat"]),
    }


def _best(stats: dict[str, dict[str, Any]], key: str, lower: bool) -> Optional[str]:
    cands = {m: s[key][0] for m, s in stats.items()
             if s[key] is not None and np.isfinite(s[key][0])}
    if not cands:
        return None
    return (min if lower else max)(cands, key=cands.get)


def target_table(name: str, record: dict[str, Any]) -> str:
    """The markdown section of one target."""
    stats = {m: _method_stats(e) for m, e in record["methods"].items() if e["status"] == "ok"}
    best = {k: _best(stats, k, lower) for k, lower in
            (("neg_elbo", True), ("log_q_ref", False), ("khat", True))}
    log_ev = record.get("log_evidence")
    lines = [f"### {name}", "", record["description"], "",
             f"Latent dimension {record['num_latents']}; reference draws: "
             f"{record['reference'] or 'none cached (log q not measured)'}"
             + ("" if log_ev is None else f"; exact -log p(y) = {-log_ev:.4f} "
                "(the floor of -ELBO)") + ".", ""]
    gap_col = log_ev is not None
    header = ["method", "-ELBO ↓"] + (["gap ↓"] if gap_col else []) + [
        "log q(ref) ↑", "k̂ ↓", "fit s, 1st seed (incl. compile)", "ms/step (steady)", "seeds"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, label in METHODS.items():
        entry = record["methods"].get(method)
        if entry is None:
            continue
        if entry["status"] != "ok":
            lines.append(f"| {label} | {entry['status']} |" + " |" * (len(header) - 2))
            continue
        s = stats[method]
        if entry.get("other_learning_rates"):
            label = f"{label} (lr {entry['learning_rate']:g})"
        row = [label, _fmt(s["neg_elbo"], bold=best["neg_elbo"] == method)]
        if gap_col:
            gap = None if s["neg_elbo"] is None else (s["neg_elbo"][0] + log_ev,
                                                      s["neg_elbo"][1])
            row.append(_fmt(gap))
        nonfinite = sum(entry["per_seed"]["num_nonfinite"])
        steady = entry["steady_ms_per_step"]
        row += [_fmt(s["log_q_ref"], bold=best["log_q_ref"] == method),
                _fmt(s["khat"], digits=2, bold=best["khat"] == method),
                f"{entry['first_fit_seconds']:.1f}",
                ("—" if steady is None else f"{steady:.1f}")
                + ("" if entry.get("device", "cpu") == "cpu" else f" ({entry['device']})")
                + "".join(f" (XLA {k}={v})" for k, v in
                          entry.get("compiler_options", {}).items()),
                f"{len(entry['seeds'])}" + (f" ({nonfinite} steps skipped)" if nonfinite else "")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def summary_table(results: dict[str, Any]) -> str:
    """One row per target: the best method per metric, and GEMF-T's value and rank."""
    lines = ["| target | best -ELBO | GEMF-T -ELBO (rank) | best log q(ref) | "
             "GEMF-T log q(ref) (rank) | best k̂ | GEMF-T k̂ (rank) |",
             "|---|---|---|---|---|---|---|"]
    for name, record in results["targets"].items():
        stats = {m: _method_stats(e) for m, e in record["methods"].items()
                 if e["status"] == "ok"}
        cells = [name]
        for key, lower, digits in (("neg_elbo", True, 3), ("log_q_ref", False, 3),
                                   ("khat", True, 2)):
            ranked = sorted(((s[key][0], m) for m, s in stats.items()
                             if s[key] is not None and np.isfinite(s[key][0])),
                            reverse=not lower)
            if not ranked:
                cells += ["—", "—"]
                continue
            value, method = ranked[0]
            cells.append(f"{METHODS[method]} ({value:.{digits}f})")
            order = [m for _, m in ranked]
            if "gemf_t" in order:
                g = stats["gemf_t"][key][0]
                cells.append(f"{g:.{digits}f} ({order.index('gemf_t') + 1}/{len(order)})")
            else:
                cells.append("—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _real_stats(entry: dict[str, Any]) -> dict[str, Any]:
    per = entry["per_seed"]
    out = _method_stats(entry)
    for key in ("max_mean_z", "median_sd_ratio", "neg_elbo_finite"):
        out[key] = _stat(per.get(key, []))
    out["num_nonfinite_draws"] = sum(per.get("num_nonfinite_draws", []))
    out["num_nonfinite"] = sum(per["num_nonfinite"])
    return out


def real_target_table(name: str, record: dict[str, Any]) -> str:
    """The markdown section of one real-suite target."""
    stats = {m: _real_stats(e) for m, e in record["methods"].items() if e["status"] == "ok"}
    best = {k: _best(stats, k, lower) for k, lower in
            (("neg_elbo", True), ("max_mean_z", True), ("khat", True))}
    ratios = {m: abs(math.log(s["median_sd_ratio"][0])) for m, s in stats.items()
              if s["median_sd_ratio"] is not None and np.isfinite(s["median_sd_ratio"][0])
              and s["median_sd_ratio"][0] > 0}
    best["median_sd_ratio"] = min(ratios, key=ratios.get) if ratios else None
    lines = [f"### {name}", "", record["description"], "",
             f"Latent dimension {record['num_latents']}; reference: "
             f"{record['reference'] or 'none cached (moments not measured)'}.", ""]
    header = ["method", "-ELBO ↓", "non-finite draws", "max mean z ↓", "median sd ratio (1)",
              "k̂ ↓", "non-finite steps", "fit s, 1st seed (incl. compile)",
              "ms/step (steady)", "seeds"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method, label in METHODS.items():
        entry = record["methods"].get(method)
        if entry is None:
            continue
        if entry["status"] != "ok":
            lines.append(f"| {label} | {entry['status']} |" + " |" * (len(header) - 2))
            continue
        s = stats[method]
        if entry.get("other_learning_rates"):
            label = f"{label} (lr {entry['learning_rate']:g})"
        steady = entry["steady_ms_per_step"]
        evals = len(entry["seeds"]) * entry["budget"]["eval_draws"]
        row = [label, _fmt(s["neg_elbo"], 2, bold=best["neg_elbo"] == method),
               f"{s['num_nonfinite_draws']} / {evals}",
               _fmt(s["max_mean_z"], 2, bold=best["max_mean_z"] == method),
               _fmt(s["median_sd_ratio"], 2, bold=best["median_sd_ratio"] == method),
               _fmt(s["khat"], digits=2, bold=best["khat"] == method),
               f"{s['num_nonfinite']} / {len(entry['seeds']) * entry['budget']['num_steps']}",
               f"{entry['first_fit_seconds']:.1f}",
               ("—" if steady is None else f"{steady:.1f}")
               + ("" if entry.get("device", "cpu") == "cpu" else f" ({entry['device']})"),
               f"{len(entry['seeds'])}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


class Verdict(NamedTuple):
    """GEMF-T against the best method and the best Gaussian baseline on one target.

    Attributes:
      gemf: GEMF-T's -ELBO (mean, SEM over seeds), or None when it has no finite row.
      best: ``(method, (mean, SEM))`` of the lowest finite mean -ELBO, or None.
      rank: GEMF-T's rank among the finite rows (1 = first), or None.
      num_ranked: how many methods have a finite mean -ELBO.
      gaussian: ``(method, (mean, SEM))`` of the best Gaussian baseline, or None.
      vs_gaussian: GEMF-T's mean -ELBO ≤ the best Gaussian's + 2 (SEM_G + SEM_Gauss); None
        when either is missing; False when GEMF-T's -ELBO is not finite.
      vs_first: GEMF-T is first, or its mean is within one combined SEM of the first's.
    """

    gemf: Optional[tuple[float, float]]
    best: Optional[tuple[str, tuple[float, float]]]
    rank: Optional[int]
    num_ranked: int
    gaussian: Optional[tuple[str, tuple[float, float]]]
    vs_gaussian: Optional[bool]
    vs_first: Optional[bool]


def verdict(stats: dict[str, dict[str, Any]], has_gemf: bool) -> Verdict:
    """The "never worse than a Gaussian" and "first or within one SEM" checks of issue 14.

    One rule for both suites, so their tables cannot disagree: standard errors are over
    seeds and add (the two rows are independent fits); a missing SEM (one seed) counts 0.
    `stats` maps methods to their ``_method_stats``; `has_gemf` says whether GEMF-T has an
    ``ok`` row (a non-finite one fails both checks rather than vanishing from the table).
    """
    finite = sorted((s["neg_elbo"][0], m) for m, s in stats.items()
                    if s["neg_elbo"] is not None and np.isfinite(s["neg_elbo"][0]))
    order = [m for _, m in finite]
    best = None if not finite else (finite[0][1], stats[finite[0][1]]["neg_elbo"])
    gauss = [m for m in order if m in GAUSSIAN_METHODS]
    gaussian = None if not gauss else (gauss[0], stats[gauss[0]]["neg_elbo"])
    gemf = stats["gemf_t"]["neg_elbo"] if "gemf_t" in order else None

    def within(other: Optional[tuple[str, tuple[float, float]]], k: float) -> Optional[bool]:
        if not has_gemf or other is None:
            return None
        if gemf is None:
            return False
        sem = np.nan_to_num(gemf[1]) + np.nan_to_num(other[1][1])
        return bool(gemf[0] <= other[1][0] + k * sem)

    return Verdict(gemf=gemf, best=best,
                   rank=order.index("gemf_t") + 1 if "gemf_t" in order else None,
                   num_ranked=len(order), gaussian=gaussian, vs_gaussian=within(gaussian, 2.0),
                   vs_first=within(best, 1.0))


def _yes_no(value: Optional[bool]) -> str:
    return "—" if value is None else ("yes" if value else "no")


def _verdicts(results: dict[str, Any], stats_fn: Callable[[dict[str, Any]], dict[str, Any]]
              ) -> Iterator[tuple[str, dict[str, Any], dict[str, Any], Verdict]]:
    """``(name, record, stats, verdict)`` per target, the stats of the ``ok`` rows only."""
    for name, record in results["targets"].items():
        stats = {m: stats_fn(e) for m, e in record["methods"].items() if e["status"] == "ok"}
        yield name, record, stats, verdict(stats, "gemf_t" in stats)


def real_summary_table(results: dict[str, Any]) -> str:
    """One row per real-suite target: the best -ELBO, GEMF-T's -ELBO and rank, the best
    Gaussian baseline's, whether GEMF-T is within 2 SEM of it or better (:func:`verdict`),
    and GEMF-T's worst standardised mean error."""
    lines = ["| target | best -ELBO | GEMF-T -ELBO (rank) | best Gaussian -ELBO "
             "| GEMF-T ≥ best Gaussian − 2 SEM | GEMF-T max mean z | methods not run |",
             "|---|---|---|---|---|---|---|"]
    for name, record, stats, v in _verdicts(results, _real_stats):
        cells = [name, "—" if v.best is None else f"{METHODS[v.best[0]]} ({v.best[1][0]:.2f})"]
        g = stats.get("gemf_t")
        if g is None:
            cells.append(record["methods"].get("gemf_t", {}).get("status", "not run")[:60])
        elif v.gemf is None:
            cells.append(f"{g['neg_elbo'][0] if g['neg_elbo'] else '—'} (—/{v.num_ranked})")
        else:
            cells.append(f"{v.gemf[0]:.2f} ({v.rank}/{v.num_ranked})")
        cells.append("—" if v.gaussian is None
                     else f"{METHODS[v.gaussian[0]]} ({v.gaussian[1][0]:.2f})")
        cells.append(_yes_no(v.vs_gaussian))
        cells.append("—" if g is None else _fmt(g["max_mean_z"], 2))
        skipped = [METHODS[m] for m, e in record["methods"].items() if e["status"] != "ok"]
        cells.append(", ".join(skipped) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def verdict_table(results: dict[str, Any]) -> str:
    """One row per paper target: GEMF-T's -ELBO, the best method's and the best Gaussian's
    (mean ± SEM), the two checks of :func:`verdict`, and when GEMF-T's row was made (its
    seeds and date), so that a row older than the current defaults is visible as such."""
    lines = ["| target | GEMF-T -ELBO (rank) | best -ELBO | best Gaussian -ELBO | "
             "GEMF-T ≥ best Gaussian − 2 SEM | GEMF-T first or within 1 SEM | GEMF-T row |",
             "|---|---|---|---|---|---|---|"]
    for name, record, stats, v in _verdicts(results, _method_stats):
        entry = record["methods"].get("gemf_t", {})
        cells = [name,
                 entry.get("status", "not run") if v.gemf is None and "gemf_t" not in stats
                 else ("not finite" if v.gemf is None
                       else f"{_fmt(v.gemf)} ({v.rank}/{v.num_ranked})")]
        for pick in (v.best, v.gaussian):
            cells.append("—" if pick is None else f"{METHODS[pick[0]]} {_fmt(pick[1])}")
        cells += [_yes_no(v.vs_gaussian), _yes_no(v.vs_first),
                  "—" if "gemf_t" not in stats else
                  f"{len(entry['seeds'])} seeds, {entry.get('created', 'undated')}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


REAL_HEADER_NOTE = (
    "The GEMF-T rows are from the library with issue 14's work (tempered start, masked "
    "non-finite draws, gate candidates and the Gaussian warm start); the other rows are "
    "from the earlier run without it (same budget and seeds; the baselines' builders did "
    "not change, but `fit_vi` did not yet mask non-finite draws then), except on "
    "gp_regression, gaussian_mixture_dirichlet and sv_sp500_nested (and sv_sp500_loop's IAF "
    "and NumPyro rows), where every row is from the current library (gp_regression's "
    "NumPyro rows are the earlier run's; sv_sp500_nested's GEMF-T ran with XLA's fusion pass off, "
    "`--xla-option xla_disable_hlo_passes=fusion`, for its 100-step nested loop). Each "
    "library's default "
    "options (emf_jax's surrogates and baselines as built by default, NumPyro's autoguides "
    "with their defaults), all fitted by the same Adam with cosine decay; the Gaussians "
    "(mean field, full rank, ASVI, NumPyro AutoMultivariateNormal) at the Gaussian peak "
    "learning rate, the flows (IAF, GEMF-T, NumPyro AutoIAFNormal) at the flows' one.")


def write_real_report(results: dict[str, Any], mode: str, out_dir: Path) -> Path:
    """Writes ``vi_{mode}.md`` of the real suite; returns its path."""
    budgets = {json.dumps(e["budget"], sort_keys=True)
               for r in results["targets"].values() for e in r["methods"].values()
               if e.get("status") == "ok"}
    budget_lines = [Budget(**{k: (tuple(v) if isinstance(v, list) else v)
                              for k, v in json.loads(b).items()}).describe()
                    for b in sorted(budgets)]
    command = "python -m benchmarks.vi --suite real" + (" --quick" if mode != "real" else "")
    text = "\n".join([
        f"# VI on public models ({mode}): {command}",
        "",
        REAL_HEADER_NOTE,
        "",
        "Models: `benchmarks/real_models.py` (sources in each docstring); reference: NUTS "
        "(`python -m benchmarks.ground_truth --suite real`). float32; timings on this "
        "repository's 2-core CPU unless a row names a GPU. Budget: " + " | ".join(budget_lines)
        + ".",
        "Values are mean ± standard error over seeds. -ELBO over all evaluation draws (lower "
        "is better; `inf` when any draw has a non-finite log-weight, and the non-finite draws "
        "are counted beside it, out of all seeds' draws); max mean z: "
        "max_i |E_q x_i - m_i| / s_i against NUTS's means m and sds s (finite draws only); "
        "median sd ratio: median_i sd_q,i / s_i (1 is right, < 1 too narrow); k̂: PSIS "
        "Pareto shape of p/q (< 0.5 good, > 0.7 q misses posterior mass); non-finite steps: "
        "training steps whose loss or gradient was not finite (skipped by emf_jax.fit_vi; "
        "NumPyro has no guard), out of all seeds' steps. Best per column in bold.",
        "",
        "## Summary",
        "",
        real_summary_table(results),
        "## Per target",
        "",
        *[real_target_table(n, r) for n, r in results["targets"].items()],
    ])
    path = out_dir / f"vi_{mode}.md"
    path.write_text(text)
    return path


def write_report(results: dict[str, Any], mode: str, out_dir: Path) -> Path:
    """Writes ``vi_{mode}.md`` from the accumulated results; returns its path."""
    if mode.startswith("real"):
        return write_real_report(results, mode, out_dir)
    budgets = {json.dumps(e["budget"], sort_keys=True)
               for r in results["targets"].values() for e in r["methods"].values()
               if e.get("status") == "ok"}
    budget_lines = [Budget(**{k: (tuple(v) if isinstance(v, list) else v)
                              for k, v in json.loads(b).items()}).describe()
                    for b in sorted(budgets)]
    text = "\n".join([
        f"# VI benchmark ({mode}): python -m benchmarks.vi --{mode}",
        "",
        "float32; timings on this repository's 2-core CPU unless a row names a GPU. "
        "Budget: " + " | ".join(budget_lines) + ".",
        "Values are mean ± standard error over seeds (seed = initialisation and training "
        "randomness; the data are fixed). -ELBO: lower is better (floor -log p(y)); gap: "
        "-ELBO + log p(y) where the evidence is exact; log q(ref): mean surrogate "
        "log-density of reference posterior draws (forward-KL proxy, higher is better); k̂: "
        "PSIS Pareto shape of p/q (< 0.5 good, > 0.7 the surrogate misses posterior mass). "
        "Best mean per column in bold. The first fit includes compiling the training "
        "program; later seeds reuse it (ms/step).",
        "",
        "## Summary (rank among the methods that ran)",
        "",
        summary_table(results),
        "## GEMF-T against the best method and the best Gaussian baseline",
        "",
        "Issue 14's checks on -ELBO (mean ± SEM over seeds; the SEMs of the two rows add): "
        "never worse than the best Gaussian baseline (mean field, full rank, ASVI) by more "
        "than 2 SEM, and first or within 1 SEM of the first. The last column says when "
        "GEMF-T's row was made: rows before 2026-12-06 predate the current default start "
        "(the Gaussian warm start).",
        "",
        verdict_table(results),
        "## Per target",
        "",
        *[target_table(n, r) for n, r in results["targets"].items()],
    ])
    path = out_dir / f"vi_{mode}.md"
    path.write_text(text)
    return path


def plot_target(path: Path, name: str, record: dict[str, Any], extras: dict[str, Any],
                reference: Optional[Reference]) -> None:
    """Loss traces (first seed) and each method's marginals against the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from emf_jax.diagnostics import plot_elbo_trace, plot_marginals

    methods = [m for m in METHODS if m in extras]
    ncols = 3
    nrows = 1 + math.ceil(len(methods) / ncols)
    fig = plt.figure(figsize=(5.0 * ncols, 3.2 * nrows))
    grid = fig.add_gridspec(nrows, ncols)
    ax = fig.add_subplot(grid[0, :])
    plot_elbo_trace({METHODS[m]: extras[m]["losses"] for m in methods}, ax=ax, skip=0.1,
                    log_evidence=record.get("log_evidence"),
                    title=f"{name}: -ELBO per step (first seed; first 10% of steps not shown)")
    finite = np.concatenate([np.asarray(extras[m]["losses"], float)[
        len(extras[m]["losses"]) // 10:] for m in methods])
    finite = finite[np.isfinite(finite)]
    if finite.size:
        lo, hi = np.quantile(finite, [0.0, 0.98])
        ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
    ref = None if reference is None else reference.draws
    for i, method in enumerate(methods):
        axm = fig.add_subplot(grid[1 + i // ncols, i % ncols])
        stats = _method_stats(record["methods"][method])
        plot_marginals(extras[method]["draws"], reference=ref, ax=axm, label=METHODS[method],
                       reference_label="reference",
                       title=f"{METHODS[method]}: -ELBO {_fmt(stats['neg_elbo'], 2)}")
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _symlog_axis(ax: Any, values: Sequence[float], linthresh: float) -> None:
    """A symlog x axis with about five decade ticks on each side that has values."""
    ax.set_xscale("symlog", linthresh=linthresh)
    low = math.floor(math.log10(linthresh))
    top = math.ceil(math.log10(max(abs(v) for v in values)))
    decades = sorted(set(np.linspace(low, top, min(5, top - low + 1)).round().astype(int)))
    ticks = [0.0]
    if max(values) > 0:
        ticks += [10.0 ** d for d in decades]
    if min(values) < 0:
        ticks += [-(10.0 ** d) for d in decades]
    ax.set_xticks(sorted(ticks), [f"{t:.0e}" if t else "0" for t in sorted(ticks)],
                  rotation=30, fontsize=7)


def plot_metrics(path: Path, name: str, record: dict[str, Any]) -> None:
    """-ELBO and log q(ref) per method (mean ± SEM over seeds), from the saved record.

    Unlike `plot_target` it needs no fit of this process, so every target gets one even when
    its methods ran in separate processes. Methods without a result are listed with their
    status; an axis whose values span several orders of magnitude is symlog.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in METHODS if m in record["methods"]]
    fig, axes = plt.subplots(1, 2, figsize=(11.0, 0.45 * len(methods) + 1.6), sharey=True)
    for ax, key, label in ((axes[0], "neg_elbo", "-ELBO (lower is better)"),
                           (axes[1], "log_q_ref", "log q(reference draws) (higher is better)")):
        values = []
        for row, method in enumerate(methods):
            entry = record["methods"][method]
            stat = _method_stats(entry)[key] if entry["status"] == "ok" else None
            if stat is None or not np.isfinite(stat[0]):
                why = entry["status"] if entry["status"] != "ok" else (
                    "not measured" if stat is None else "not finite")
                ax.annotate(why[:60], (0.01, row), xycoords=("axes fraction", "data"),
                            va="center", fontsize=7, color="0.4")
                continue
            ax.errorbar(stat[0], row, xerr=np.nan_to_num(stat[1]), fmt="o",
                        color="C3" if method == "gemf_t" else "C0", capsize=3)
            values.append(stat[0])
        if key == "neg_elbo" and record.get("log_evidence") is not None:
            ax.axvline(-record["log_evidence"], color="0.5", ls="--", lw=1,
                       label="-log p(y) (the floor)")
            ax.legend(loc="lower right", fontsize=7)
        magnitudes = np.abs(values)
        if values and magnitudes.max() > 1e3 * max(np.median(magnitudes), 1.0):
            _symlog_axis(ax, values, linthresh=max(float(np.median(magnitudes)), 1.0))
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(methods)), [METHODS[m] for m in methods])
    axes[0].invert_yaxis()
    fig.suptitle(f"{name}: mean ± SEM over seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


# ----------------------------------------------------------------------------- command line


def _update_results(path: Path, update: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Applies `update` to the saved results under an exclusive lock (runs in parts may run
    at the same time) and returns them."""
    import fcntl
    import hashlib
    import tempfile

    # The lock file lives in the temp directory, not beside the results.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"benchmarks_vi_{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(path.read_text()) if path.exists() else {"targets": {}}
        update(results)
        from benchmarks.real_models import REAL_TARGET_NAMES

        order = {n: i for i, n in enumerate(PAPER_TARGETS + REAL_TARGET_NAMES)}
        results["targets"] = dict(sorted(results["targets"].items(),
                                         key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
        path.write_text(json.dumps(results, indent=1, allow_nan=True))
        fcntl.flock(lock, fcntl.LOCK_UN)
    return results


def _merge_target(name: str, record: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """An update that adds `record`'s methods to target `name`, keeping its other methods."""
    def update(results: dict[str, Any]) -> None:
        old = results["targets"].get(name, {"methods": {}})
        merged = dict(old["methods"])
        merged.update(record["methods"])
        results["targets"][name] = dict(record, methods=merged)

    return update


def _option_value(text: str) -> Any:
    """A command-line option value as a bool, int or float where it reads as one."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """The command line (see the module docstring); returns the accumulated results."""
    from emf_jax import models

    parser = argparse.ArgumentParser(prog="python -m benchmarks.vi",
                                     description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    for name, help_text in (("smoke", "seconds: one tiny target and budget (CI)"),
                            ("quick", "minutes: two small targets, 2 seeds"),
                            ("full", "the paper's targets, 5 seeds (run in parts with "
                                     "--targets / --methods)")):
        mode.add_argument(f"--{name}", dest="mode", action="store_const", const=name,
                          help=help_text)
    parser.add_argument("--suite", choices=("paper", "real"), default="paper",
                        help="the paper's targets (a mode is required) or the public models "
                             "of benchmarks.real_models (mode real; --quick: real_quick)")
    parser.add_argument("--targets", nargs="+", help="target names (default: the mode's)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS),
                        help="methods (default: all)")
    parser.add_argument("--seeds", type=int, help="number of seeds 0..n-1")
    parser.add_argument("--steps", type=int, help="optimisation steps")
    parser.add_argument("--sample-size", type=int, help="Monte Carlo draws per step")
    parser.add_argument("--hidden", type=int, nargs="+", help="hidden units of the flows")
    parser.add_argument("--eval-draws", type=int, help="draws for -ELBO and k-hat (>= 150)")
    parser.add_argument("--reference-draws", type=int, help="reference draws scored by log q")
    parser.add_argument("--mark-not-run", nargs=2, metavar=("METHOD", "REASON"),
                        action="append", default=[],
                        help="record METHOD as 'not run (REASON)' on the selected targets "
                             "(kept only where no result exists)")
    parser.add_argument("--xla-option", action="append", default=[], metavar="NAME=VALUE",
                        help="an XLA compiler option for the emf_jax/TFP methods' programs, "
                             "e.g. xla_disable_hlo_passes=fusion (recorded per method)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--table-only", action="store_true",
                        help="only rewrite the markdown from the saved results")
    args = parser.parse_args(argv)

    real = args.suite == "real"
    if real:
        from benchmarks import real_models

        if args.mode == "full":
            parser.error("--suite real has its own budget: use no mode, or --quick")
        args.mode = "real" if args.mode is None else "real_quick"
        spec = REAL_MODES[args.mode]
        if not spec.targets:
            spec = spec._replace(targets=real_models.REAL_TARGET_NAMES)
        known_targets: Sequence[str] = real_models.REAL_TARGET_NAMES
    else:
        if args.mode is None:
            parser.error("choose a mode: --smoke, --quick or --full (or --suite real)")
        spec = MODES[args.mode]
        known_targets = models.TARGET_NAMES
    overrides = {k: v for k, v in (
        ("num_steps", args.steps), ("sample_size", args.sample_size),
        ("hidden_units", None if args.hidden is None else tuple(args.hidden)),
        ("eval_draws", args.eval_draws), ("reference_draws", args.reference_draws))
        if v is not None}
    budget = spec.budget._replace(**overrides)
    if budget.eval_draws < 150 and args.mode not in ("smoke", "real_quick"):
        parser.error("--eval-draws must be >= 150 (the paper's -ELBO estimate)")
    for key in ("num_steps", "sample_size", "eval_draws", "reference_draws"):
        if getattr(budget, key) < 1:
            parser.error(f"{key} must be positive, got {getattr(budget, key)}")
    if budget.eval_draws < 25:
        parser.error("--eval-draws must be >= 25 (k-hat needs a tail of 5)")
    targets = tuple(args.targets or spec.targets)
    unknown = [t for t in targets if t not in known_targets]
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {tuple(known_targets)}")
    methods = tuple(args.methods or spec.methods)
    num_seeds = spec.num_seeds if args.seeds is None else args.seeds
    if num_seeds < 1:
        parser.error(f"--seeds must be >= 1, got {num_seeds}")

    compiler_options = {}
    for option in args.xla_option:
        name, sep, value = option.partition("=")
        if not sep or not name:
            parser.error(f"--xla-option expects NAME=VALUE, got {option!r}")
        compiler_options[name] = _option_value(value)

    # The real suite writes tables only (its models have up to 103 latents to plot).
    args.no_plots = args.no_plots or real
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"vi_{args.mode}.json"
    results = _update_results(json_path, lambda r: None)
    if not args.table_only:
        if any(m in PEER_METHODS for m in methods):
            from benchmarks import _numpyro_peers

            if not _numpyro_peers.available():
                print("note: numpyro is not installed (pip install -e '.[bench]'): the NumPyro "
                      "peers are skipped.")
        print(f"budget: {budget.describe()}; seeds 0..{num_seeds - 1}", flush=True)
        for name in targets:
            record = run_target(
                name, methods, budget, list(range(num_seeds)),
                log=lambda line: print(line, flush=True),
                plot_path=None if args.no_plots else out_dir / f"vi_{args.mode}_{name}.png",
                save=lambda rec, name=name: _update_results(json_path, _merge_target(name, rec)),
                compiler_options=compiler_options or None, suite=args.suite)
            results = _update_results(json_path, _merge_target(name, record))
    for method, _ in args.mark_not_run:
        if method not in METHODS:
            parser.error(f"--mark-not-run: unknown method {method!r}")

    def mark(results: dict[str, Any]) -> None:
        for method, reason in args.mark_not_run:
            for name in targets:
                entry = results["targets"].get(name)
                if entry is not None and entry["methods"].get(method, {}).get("status") != "ok":
                    entry["methods"][method] = {"status": f"not run ({reason})"}

    results = _update_results(json_path, mark)
    if not args.no_plots:
        for name in targets:
            if name in results["targets"]:
                plot_metrics(out_dir / f"vi_{args.mode}_{name}_metrics.png", name,
                             results["targets"][name])
    report = write_report(results, args.mode, out_dir)
    print(f"\nwritten: {report}")
    print(report.read_text())
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
