"""Ground-truth posterior draws of the VI benchmark targets by long NUTS runs.

Usage::

    python -m benchmarks.ground_truth                       # every target
    python -m benchmarks.ground_truth --targets brownian_bridge_r eight_schools --quick
    python -m benchmarks.ground_truth --list                # what is cached, with diagnostics

Each target's draws are cached in ``benchmarks/ground_truth/{name}.npz`` (compressed, < 1 MB)
and read back with :func:`load_ground_truth` (this module; the package never imports
``benchmarks``). A summary table of all cached runs is written to
``benchmarks/results/ground_truth.md``.

Method (float64, jit-compiled, several chains):

1. The pinned model's latents are mapped to one flat unconstrained vector through
   ``pinned_model.experimental_default_event_space_bijector()`` (its log-det is added).
2. Initialisation: the best ``num_chains`` of 4096 prior draws (by posterior density), each
   refined by BFGS; the Laplace approximation at the best optimum preconditions stage 1, and
   each chain starts at its optimum plus a draw from that approximation.
3. Stage 1: TFP's ``NoUTurnSampler`` with ``DualAveragingStepSizeAdaptation``; its second half
   estimates the posterior mean and covariance.
4. Stage 2: the same sampler on the standardised variable ``z = L^{-1}(u - mean)`` (``L`` the
   Cholesky factor of the regularised covariance estimate: a dense mass matrix in effect),
   with a fresh step-size warm-up, then ``num_results`` draws per chain at a fixed step size.
5. Diagnostics on all draws of stage 2 (in the constrained space): split R-hat
   (``tfp.mcmc.potential_scale_reduction``) and cross-chain ESS
   (``tfp.mcmc.effective_sample_size``), plus divergences and acceptance. Means and standard
   deviations are computed from all draws; the stored draws are thinned to at most
   ``max_draws`` (fewer for high-dimensional targets, to keep files small).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

GROUND_TRUTH_DIR = Path(__file__).resolve().parent / "ground_truth"
"""Where the ``.npz`` files live."""

SUMMARY_PATH = Path(__file__).resolve().parent / "results" / "ground_truth.md"

_MAX_STORED_FLOATS = 200_000  # float32 draws per file: about 0.8 MB before compression


class NutsSettings(NamedTuple):
    """Settings of one ground-truth run.

    Attributes:
      num_chains: independent chains.
      num_warmup: steps of each of the two adaptation stages.
      num_results: draws per chain after the warm-up.
      max_tree_depth: NUTS's maximum tree depth.
      target_accept_prob: dual-averaging target.
      max_draws: at most this many (thinned) draws are stored.
    """

    num_chains: int = 4
    num_warmup: int = 1000
    num_results: int = 5000
    max_tree_depth: int = 10
    target_accept_prob: float = 0.9
    max_draws: int = 2000


QUICK = NutsSettings(num_warmup=500, num_results=1000)
"""A short setting for a first look (``--quick``)."""


class GroundTruth(NamedTuple):
    """Cached ground truth of one target.

    Attributes:
      name: the target name.
      draws: thinned posterior draws per latent variable, ``[num_draws, *event_shape]``
        (float32).
      mean: posterior mean per latent variable, from all draws (float64).
      stddev: posterior standard deviation per latent variable, from all draws.
      rhat: split R-hat per latent coordinate.
      ess: cross-chain effective sample size per latent coordinate (of the draws: sets the
        Monte Carlo error of means).
      ess_sq: the same for the squared deviations from the mean (sets the Monte Carlo error
        of variances and standard deviations).
      info: run metadata and summary diagnostics (settings, seed, divergences, acceptance,
        step size, wall time, versions).
    """

    name: str
    draws: dict[str, np.ndarray]
    mean: dict[str, np.ndarray]
    stddev: dict[str, np.ndarray]
    rhat: dict[str, np.ndarray]
    ess: dict[str, np.ndarray]
    ess_sq: dict[str, np.ndarray]
    info: dict[str, Any]


def ground_truth_path(name: str, directory: str | os.PathLike | None = None) -> Path:
    """The cache file of target `name`."""
    return Path(directory or GROUND_TRUTH_DIR) / f"{name}.npz"


def load_ground_truth(
    name: str, *, directory: str | os.PathLike | None = None
) -> GroundTruth:
    """Loads the cached NUTS ground truth of a target.

    Args:
      name: a target name (see ``emf_jax.models.TARGET_NAMES``).
      directory: where the files are; defaults to ``benchmarks/ground_truth``.

    Returns:
      A :class:`GroundTruth`.

    Raises:
      FileNotFoundError: if no run of `name` is cached (the message says how to make one).
    """
    path = ground_truth_path(name, directory)
    if not path.exists():
        raise FileNotFoundError(
            f"no ground truth for {name!r} at {path}; make it with "
            f"`python -m benchmarks.ground_truth --targets {name}`.")
    with np.load(path, allow_pickle=False) as data:
        info = json.loads(str(data["info"]))
        groups: dict[str, dict[str, np.ndarray]] = {
            "draws": {}, "mean": {}, "stddev": {}, "rhat": {}, "ess": {}, "ess_sq": {}}
        for key in data.files:
            group, _, var = key.partition("/")
            if group in groups:
                groups[group][var] = data[key]
    order = info["latent_names"]
    return GroundTruth(
        name=name,
        info=info,
        **{g: {v: vals[v] for v in order} for g, vals in groups.items()},
    )


# ----------------------------------------------------------------------------- sampling


def _flat_problem(target: Any):
    """The target's log density on one flat unconstrained vector, and the maps around it."""
    import jax
    import jax.numpy as jnp

    pinned = target.pinned_model
    bijector = pinned.experimental_default_event_space_bijector()
    names = list(pinned.event_shape._fields)
    struct = type(pinned.event_shape)
    shapes = [tuple(s) for s in bijector.inverse_event_shape(pinned.event_shape)]
    sizes = [int(np.prod(s, dtype=int)) for s in shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)

    def unflatten(flat):
        return struct(*[
            jnp.reshape(flat[offsets[i]:offsets[i + 1]], shapes[i]) for i in range(len(names))])

    def flatten(parts):
        return jnp.concatenate([jnp.reshape(p, (-1,)) for p in parts])

    def log_prob(flat):
        u = unflatten(flat)
        return (pinned.unnormalized_log_prob(bijector.forward(u))
                + bijector.forward_log_det_jacobian(u))

    def constrain(flat):
        return flatten(bijector.forward(unflatten(flat)))

    def initial(seed, num_chains):
        draws = pinned.sample_unpinned(num_chains, seed=seed)
        parts = bijector.inverse(draws)
        return jax.vmap(flatten)(parts)

    return log_prob, constrain, initial, int(offsets[-1])


def _nuts_stage(log_prob, z0, shift, tril, step_size, seed, *, num_steps, num_adaptation,
                settings: NutsSettings):
    """Runs NUTS with dual averaging on z (x = shift + tril @ z) for `num_steps` steps."""
    import jax
    import jax.numpy as jnp
    from tensorflow_probability.substrates import jax as tfp

    def target(z):
        return jax.vmap(lambda v: log_prob(shift + tril @ v))(z)

    kernel = tfp.mcmc.NoUTurnSampler(
        target_log_prob_fn=target, step_size=step_size,
        max_tree_depth=settings.max_tree_depth)
    kernel = tfp.mcmc.DualAveragingStepSizeAdaptation(
        kernel, num_adaptation_steps=num_adaptation,
        target_accept_prob=jnp.asarray(settings.target_accept_prob, z0.dtype))

    def trace_fn(_, kr):
        inner = kr.inner_results
        return (inner.has_divergence, inner.leapfrogs_taken,
                jnp.exp(jnp.minimum(inner.log_accept_ratio, 0.0)), kr.new_step_size)

    samples, (divergent, leapfrogs, accept, step) = tfp.mcmc.sample_chain(
        num_results=num_steps, current_state=z0, kernel=kernel, num_burnin_steps=0,
        trace_fn=trace_fn, seed=seed)
    return samples, divergent, leapfrogs, accept, step


def _whiten(u, shift, tril):
    """z = L^{-1} (u - shift) for a batch of rows u."""
    import jax.scipy.linalg as jsl

    return jsl.solve_triangular(tril, (u - shift).T, lower=True).T


def _initialise(log_prob, initial, key, num_chains: int, dtype, num_candidates: int = 4096):
    """Chain starting points and a first preconditioner.

    The `num_chains` best of `num_candidates` prior draws (by posterior density) are each
    refined by BFGS; the Laplace approximation at the best optimum (the inverse negative
    Hessian, if positive definite) gives the first preconditioner, else the identity.
    Starting from distinct prior draws keeps the chains apart when the posterior has several
    modes, which R-hat then reveals.
    """
    import jax
    import jax.numpy as jnp
    from jax.scipy.optimize import minimize

    candidates = initial(key, num_candidates).astype(dtype)
    dim = candidates.shape[-1]
    lp = jax.jit(jax.vmap(log_prob))(candidates)
    lp = jnp.where(jnp.isfinite(lp), lp, -jnp.inf)
    starts = candidates[jnp.argsort(lp)[-num_chains:]]

    @jax.jit
    def refine(x):
        result = minimize(lambda v: -log_prob(v), x, method="BFGS",
                          options={"maxiter": 1000})
        better = jnp.isfinite(result.fun) & (-result.fun >= log_prob(x))
        return jnp.where(better, result.x, x)

    refined = jnp.stack([refine(x) for x in starts])
    values = jax.vmap(log_prob)(refined)
    best = refined[jnp.argmax(values)]
    hess = np.asarray(jax.jit(jax.hessian(log_prob))(best), np.float64)
    eye = np.eye(dim)
    try:
        cov = np.linalg.inv(-0.5 * (hess + hess.T))
        tril = np.linalg.cholesky(0.5 * (cov + cov.T))
    except np.linalg.LinAlgError:
        tril = eye
    if not np.all(np.isfinite(tril)):
        tril = eye
    return refined, jnp.asarray(best, dtype), jnp.asarray(tril, dtype)


def chain_diagnostics(draws: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split R-hat, cross-chain ESS and the ESS of the squared deviations per coordinate.

    Args:
      draws: ``[num_results, num_chains, dim]`` (constrained) draws.

    Returns:
      ``(rhat, ess, ess_sq)``, each ``[dim]``.
    """
    import jax.numpy as jnp
    from tensorflow_probability.substrates import jax as tfp

    draws = jnp.asarray(draws)
    rhat = tfp.mcmc.potential_scale_reduction(draws, independent_chain_ndims=1,
                                              split_chains=True)
    ess = tfp.mcmc.effective_sample_size(draws, cross_chain_dims=1)
    # ESS of the squared deviations: the one that sets the Monte Carlo error of variances.
    ess_sq = tfp.mcmc.effective_sample_size(
        (draws - jnp.mean(draws, axis=(0, 1))) ** 2, cross_chain_dims=1)
    return np.asarray(rhat), np.asarray(ess), np.asarray(ess_sq)


def run_nuts(target: Any, *, settings: NutsSettings = NutsSettings(), seed: int = 0
             ) -> dict[str, Any]:
    """Samples a benchmark target's posterior with two-stage adaptive NUTS.

    Args:
      target: an ``emf_jax.models.BenchmarkTarget`` built in float64.
      settings: the run's :class:`NutsSettings`.
      seed: the sampler's seed.

    Returns:
      A dict with ``draws`` (constrained, ``[num_results, num_chains, dim]``), ``rhat``,
      ``ess`` and ``ess_sq`` (``[dim]``) and scalar diagnostics.
    """
    import jax
    import jax.numpy as jnp

    log_prob, constrain, initial, dim = _flat_problem(target)
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    n_warm = settings.num_warmup

    stage = jax.jit(
        lambda z0, shift, tril, step, key, num_steps, num_adaptation: _nuts_stage(
            log_prob, z0, shift, tril, step, key, num_steps=num_steps,
            num_adaptation=num_adaptation, settings=settings),
        static_argnums=(5, 6))

    timings = {}
    start = time.perf_counter()
    u0, shift1, tril1 = _initialise(log_prob, initial, keys[0], settings.num_chains, dtype)
    timings["initialise"] = time.perf_counter() - start

    # Stage 1: preconditioned by the Laplace approximation at the best optimum found; each
    # chain starts from its own optimum plus a draw from that approximation (optima of a
    # unimodal posterior coincide, and chains must not start at one point).
    z0 = _whiten(u0, shift1, tril1) + jax.random.normal(keys[2], u0.shape, dtype)
    tic = time.perf_counter()
    s1, div1, _, _, step1 = stage(z0, shift1, tril1, jnp.asarray(0.5, dtype), keys[1], n_warm,
                                  int(0.8 * n_warm))
    s1 = np.asarray(shift1) + np.asarray(s1[n_warm // 2:]).reshape(-1, dim) @ np.asarray(
        tril1).T
    timings["stage1"] = time.perf_counter() - tic

    # Stage 2: preconditioned by the regularised sample covariance of stage 1 (Stan's
    # shrinkage towards a small multiple of I).
    n = s1.shape[0]
    cov = np.atleast_2d(np.cov(s1.T))
    cov = (n / (n + 5.0)) * cov + 1e-3 * (5.0 / (n + 5.0)) * np.eye(dim)
    shift = jnp.asarray(s1.mean(axis=0), dtype)
    tril = jnp.asarray(np.linalg.cholesky(cov), dtype)
    z0 = _whiten(jnp.asarray(s1[-settings.num_chains:], dtype), shift, tril)
    tic = time.perf_counter()
    s2, _, _, _, step2 = jax.block_until_ready(stage(
        z0, shift, tril, jnp.asarray(0.5, dtype), keys[3], n_warm, int(0.8 * n_warm)))
    timings["stage2_warmup"] = time.perf_counter() - tic
    tic = time.perf_counter()
    z, divergent, leapfrogs, accept, step = stage(
        s2[-1], shift, tril, step2[-1], keys[4], settings.num_results, 0)
    z = np.asarray(z)
    timings["sampling"] = time.perf_counter() - tic
    u = shift + jnp.einsum("ij,rcj->rci", tril, z)
    draws = jax.vmap(jax.vmap(constrain))(u)
    rhat, ess, ess_sq = chain_diagnostics(draws)
    draws = np.asarray(draws)
    elapsed = time.perf_counter() - start
    return {
        "draws": draws,
        "rhat": rhat,
        "ess": ess,
        "ess_sq": ess_sq,
        "num_divergences": int(np.sum(np.asarray(divergent))),
        "num_warmup_divergences": int(np.sum(np.asarray(div1))),
        "mean_accept_prob": float(np.mean(np.asarray(accept))),
        "mean_leapfrogs": float(np.mean(np.asarray(leapfrogs))),
        "step_size": float(np.asarray(step)[-1]),
        "stage1_step_size": float(np.asarray(step1)[-1]),
        "wall_seconds": elapsed,
        "timings": timings,
    }


def make_ground_truth(
    name: str,
    *,
    settings: NutsSettings = NutsSettings(),
    seed: int = 0,
    data_seed: int = 0,
    directory: str | os.PathLike | None = None,
) -> GroundTruth:
    """Runs NUTS on target `name` and writes ``{directory}/{name}.npz``.

    Args:
      name: a target name.
      settings: the run's :class:`NutsSettings`.
      seed: the sampler's seed.
      data_seed: the target's data seed (``get_target(name, seed=data_seed)``).
      directory: where to write; defaults to ``benchmarks/ground_truth``.

    Returns:
      The :class:`GroundTruth` as written (and as :func:`load_ground_truth` reads it).
    """
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from emf_jax import models

    target = models.get_target(name, seed=data_seed, dtype=jnp.float64)
    result = run_nuts(target, settings=settings, seed=seed)
    names = list(target.pinned_model.event_shape._fields)
    shapes = [tuple(s) for s in target.pinned_model.event_shape]
    return write_ground_truth(
        name, result, names, shapes, settings=settings, seed=seed, directory=directory,
        extra_info={"data_seed": data_seed, "description": target.description})


def write_ground_truth(
    name: str,
    result: dict[str, Any],
    names: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    *,
    settings: NutsSettings,
    seed: int,
    directory: str | os.PathLike | None = None,
    extra_info: dict[str, Any] | None = None,
) -> GroundTruth:
    """Writes ``{directory}/{name}.npz`` from a :func:`run_nuts` result.

    Args:
      name: the cache name.
      result: :func:`run_nuts`'s dict (``draws`` ``[results, chains, dim]`` in the order of
        `names`, and its diagnostics).
      names: the latent names, in flat order.
      shapes: their event shapes.
      settings: the run's :class:`NutsSettings`.
      seed: the sampler's seed.
      directory: where to write; defaults to ``benchmarks/ground_truth``.
      extra_info: more metadata (``description`` and ``data_seed`` are expected).

    Returns:
      The :class:`GroundTruth` as written.
    """
    import jax

    from emf_jax.internal import split_flat

    names, shapes = list(names), [tuple(s) for s in shapes]
    extra_info = dict(extra_info or {})
    extra_info.setdefault("data_seed", 0)
    extra_info.setdefault("description", name)
    draws = result["draws"]  # [results, chains, dim]
    num_results, num_chains, dim = draws.shape
    flat = draws.reshape(-1, dim)
    total = flat.shape[0]
    keep = max(1, min(settings.max_draws, _MAX_STORED_FLOATS // dim, total))
    # Thin within chains, interleaving the chains.
    stride = max(1, total // keep)
    thinned = np.swapaxes(draws, 0, 1)[:, ::max(1, stride), :].reshape(-1, dim)
    rng = np.random.default_rng(seed)
    thinned = thinned[np.sort(rng.choice(thinned.shape[0], size=min(keep, thinned.shape[0]),
                                         replace=False))]

    info = {
        "name": name,
        "latent_names": names,
        "latent_shapes": [list(s) for s in shapes],
        "settings": settings._asdict(),
        "seed": seed,
        "num_draws_total": int(total),
        "num_draws_stored": int(thinned.shape[0]),
        "max_rhat": float(np.max(result["rhat"])),
        "min_ess": float(np.min(result["ess"])),
        "median_ess": float(np.median(result["ess"])),
        "min_ess_sq": float(np.min(result["ess_sq"])),
        **{k: result[k] for k in ("num_divergences", "num_warmup_divergences",
                                  "mean_accept_prob", "mean_leapfrogs", "step_size",
                                  "wall_seconds", "timings")},
        **extra_info,
        "method": "prior-draw + BFGS starts, Laplace-preconditioned stage 1, dense stage 2",
        "jax_version": jax.__version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    arrays = {"info": np.asarray(json.dumps(info))}
    for group, values in (
        ("draws", thinned.astype(np.float32)),
        ("mean", flat.mean(axis=0)),
        ("stddev", flat.std(axis=0, ddof=1)),
        ("rhat", result["rhat"]),
        ("ess", result["ess"]),
        ("ess_sq", result["ess_sq"]),
    ):
        for var, value in split_flat(np.asarray(values), names, shapes).items():
            arrays[f"{group}/{var}"] = value
    path = ground_truth_path(name, directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return load_ground_truth(name, directory=directory)


REAL_SETTINGS = NutsSettings(num_chains=4, num_warmup=500, num_results=1000, max_draws=1000)
"""The real suite's runs (``--suite real``): a few minutes each on 2 CPU cores."""


def real_truth_sources() -> dict[str, str]:
    """Each ground-truth cache of the real suite and the target whose model NUTS samples
    (the first suite target with that ``truth_name``: the Markov-chain or explicit form)."""
    from benchmarks import real_models

    sources: dict[str, str] = {}
    for name in real_models.REAL_TARGET_NAMES:
        truth = real_models.get_real_target(name).truth_name
        sources.setdefault(truth, name)
    return sources


def make_real_ground_truth(
    name: str,
    *,
    settings: NutsSettings = REAL_SETTINGS,
    seed: int = 0,
    directory: str | os.PathLike | None = None,
) -> GroundTruth:
    """Runs NUTS on a ``benchmarks.real_models`` target and writes its ``truth_name`` cache.

    NUTS samples the target's ``nuts_pinned`` model (a non-centred form of the same
    posterior) where it has one; its draws are mapped to the target's latents by
    ``nuts_to_latents`` before the moments, R-hat and ESS are computed, so the cache describes
    the model as the user wrote it.

    Args:
      name: a name of ``benchmarks.real_models.REAL_TARGET_NAMES``.
      settings: the run's :class:`NutsSettings`.
      seed: the sampler's seed.
      directory: where to write; defaults to ``benchmarks/ground_truth``.

    Returns:
      The :class:`GroundTruth` as written (its name is the target's ``truth_name``).
    """
    import types

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from benchmarks import real_models
    from emf_jax.internal import split_flat

    target = real_models.get_real_target(name, dtype=jnp.float64)
    sampled = target.pinned_model if target.nuts_pinned is None else target.nuts_pinned
    result = run_nuts(types.SimpleNamespace(pinned_model=sampled), settings=settings,
                      seed=seed)
    names = list(target.pinned_model.event_shape._fields)
    shapes = [tuple(s) for s in target.pinned_model.event_shape]
    description = target.description
    if target.nuts_pinned is not None:
        nc_names = list(sampled.event_shape._fields)
        nc_shapes = [tuple(s) for s in sampled.event_shape]
        parts = split_flat(np.asarray(result["draws"]), nc_names, nc_shapes)
        latents = target.nuts_to_latents({k: jnp.asarray(v) for k, v in parts.items()})
        lead = result["draws"].shape[:2]
        draws = np.concatenate([np.reshape(np.asarray(v), lead + (-1,)) for v in latents],
                               axis=-1)
        result = dict(result, draws=draws)
        result["rhat"], result["ess"], result["ess_sq"] = chain_diagnostics(draws)
        description += "; NUTS ran on the non-centred form, draws mapped back"
    return write_ground_truth(
        target.truth_name, result, names, shapes, settings=settings, seed=seed,
        directory=directory, extra_info={"description": description, "data_seed": 0,
                                         "sampled_target": name})


# ----------------------------------------------------------------------------- reporting


def compare_with_exact(truth: GroundTruth) -> dict[str, float] | None:
    """Compares NUTS moments with the target's closed-form posterior, if it has one.

    Returns:
      None, or the largest absolute errors of the mean and standard deviation, and their
      largest |z|-scores: errors over the Monte Carlo standard errors ``sd / sqrt(ESS)``
      (mean) and ``sd / sqrt(2 ESS_sq)`` (standard deviation, Gaussian approximation).
    """
    from emf_jax import models

    if truth.name not in models.EXACT_TARGET_NAMES:
        return None
    exact = models.get_target(truth.name, seed=truth.info["data_seed"]).exact_posterior
    mean_err, sd_err, z_max, z_sd_max = 0.0, 0.0, 0.0, 0.0
    for var in truth.info["latent_names"]:
        d_mean = np.abs(truth.mean[var] - exact.mean[var])
        d_sd = np.abs(truth.stddev[var] - exact.stddev[var])
        z = d_mean / (exact.stddev[var] / np.sqrt(truth.ess[var]))
        z_sd = d_sd / (exact.stddev[var] / np.sqrt(2.0 * truth.ess_sq[var]))
        z_sd_max = max(z_sd_max, float(np.max(z_sd)))
        mean_err = max(mean_err, float(np.max(d_mean)))
        sd_err = max(sd_err, float(np.max(d_sd)))
        z_max = max(z_max, float(np.max(z)))
    return {"max_mean_error": mean_err, "max_sd_error": sd_err, "max_mean_z": z_max,
            "max_sd_z": z_sd_max,
            "log_marginal_likelihood": exact.log_marginal_likelihood}


def _summary_row(truth: GroundTruth) -> str:
    info = truth.info
    cmp = compare_with_exact(truth)
    exact = ("—" if cmp is None else
             f"mean err {cmp['max_mean_error']:.3g} (max z {cmp['max_mean_z']:.1f}), "
             f"sd err {cmp['max_sd_error']:.3g} (max z {cmp['max_sd_z']:.1f})")
    s = info["settings"]
    return (f"| {truth.name} | {s['num_chains']}×{s['num_results']} "
            f"(warm-up 2×{s['num_warmup']}) | {info['max_rhat']:.4f} | {info['min_ess']:.0f} "
            f"| {info['median_ess']:.0f} | {info['min_ess_sq']:.0f} | {info['num_divergences']} "
            f"| {info['mean_accept_prob']:.2f} | {info['mean_leapfrogs']:.1f} "
            f"| {info['wall_seconds']:.0f} | {exact} |")


def write_summary(directory: str | os.PathLike | None = None,
                  path: str | os.PathLike = SUMMARY_PATH) -> str:
    """Writes (and returns) a markdown table of every cached run's diagnostics."""
    rows = []
    for file in sorted(Path(directory or GROUND_TRUTH_DIR).glob("*.npz")):
        rows.append(_summary_row(load_ground_truth(file.stem, directory=directory)))
    text = "\n".join([
        "# NUTS ground truth (python -m benchmarks.ground_truth)",
        "",
        "float64, CPU; R-hat is split R-hat, ESS the cross-chain effective sample size, both "
        "per latent coordinate (worst / median shown; ESS (x²) is that of the squared "
        "deviations, which sets the error of variances); divergences and acceptance after "
        "warm-up. Last column: against the closed-form posterior where one exists (z: error "
        "over its Monte Carlo standard error).",
        "",
        "| target | chains × draws | max R-hat | min ESS | median ESS | min ESS (x²) "
        "| divergences | accept | leapfrogs/step | wall s | vs exact |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)
    return text


def main(argv: Sequence[str] | None = None) -> None:
    """The command line (see the module docstring)."""
    from emf_jax import models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=None,
                        help="target names (default: all of emf_jax.models.TARGET_NAMES, or "
                             "with --suite real every cache of benchmarks.real_models)")
    parser.add_argument("--suite", choices=("paper", "real"), default="paper",
                        help="the paper's targets, or the public models of "
                             "benchmarks.real_models (settings REAL_SETTINGS)")
    parser.add_argument("--quick", action="store_true",
                        help="short runs (4 chains, 2×500 warm-up, 1000 draws each)")
    parser.add_argument("--chains", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--results", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--data-seed", type=int, default=0, help="data seed of the targets")
    parser.add_argument("--skip-existing", action="store_true",
                        help="keep targets that already have a cached file")
    parser.add_argument("--list", action="store_true",
                        help="only print the summary of the cached runs")
    args = parser.parse_args(argv)

    if args.list:
        print(write_summary())
        return
    if args.suite == "real":
        _main_real(parser, args)
        write_summary()
        return
    names = args.targets or list(models.TARGET_NAMES)
    unknown = [n for n in names if n not in models.TARGET_NAMES]
    if unknown:
        parser.error(f"unknown targets {unknown}; choose from {models.TARGET_NAMES}")
    settings = QUICK if args.quick else NutsSettings()
    overrides = {k: v for k, v in (("num_chains", args.chains), ("num_warmup", args.warmup),
                                   ("num_results", args.results)) if v is not None}
    settings = settings._replace(**overrides)
    for name in names:
        if args.skip_existing and ground_truth_path(name).exists():
            print(f"{name}: cached, skipped")
            continue
        truth = make_ground_truth(name, settings=settings, seed=args.seed,
                                  data_seed=args.data_seed)
        print(_summary_row(truth), flush=True)
    write_summary()


def _main_real(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from benchmarks import real_models

    sources = real_truth_sources()
    names = args.targets or list(sources.values())
    unknown = [n for n in names if n not in real_models.REAL_TARGET_NAMES]
    if unknown:
        parser.error(f"unknown real targets {unknown}; choose from "
                     f"{real_models.REAL_TARGET_NAMES}")
    settings = QUICK if args.quick else REAL_SETTINGS
    overrides = {k: v for k, v in (("num_chains", args.chains), ("num_warmup", args.warmup),
                                   ("num_results", args.results)) if v is not None}
    settings = settings._replace(**overrides)
    for name in names:
        truth = real_models.get_real_target(name).truth_name
        if args.skip_existing and ground_truth_path(truth).exists():
            print(f"{name}: cached as {truth}, skipped")
            continue
        print(_summary_row(make_real_ground_truth(name, settings=settings, seed=args.seed)),
              flush=True)


if __name__ == "__main__":
    main()
