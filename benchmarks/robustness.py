"""Robustness on a model whose prior draws overflow its likelihood: stochastic volatility.

Usage::

    python -m benchmarks.robustness                      # 3000 steps x 16 draws (CPU: ~20 min)
    python -m benchmarks.robustness --steps 300          # a quick look
    PYTHONPATH=/path/to/old/checkout python -m benchmarks.robustness --label before

Model: the public stochastic-volatility model of S&P 500 returns (TFP's and inference gym's
version): persistence ``2 Beta(20, 1.5) - 1`` (a `tfd.TransformedDistribution`), mean
log-volatility ``Cauchy(0, 5)``, shock scale ``HalfCauchy(0, 2)``, log-volatility ``h`` one
`tfd.MarkovChain` AR(1) of 100 days, returns ``Normal(0, exp(h / 2))``. The returns are
synthetic, drawn from the model itself with the parameters fixed at persistence 0.95, mean
log-volatility -9 (a daily sd near 1 %) and shock scale 0.25 (seed 0; no download). Prior
draws of ``h`` reach ``±10⁴``, where ``exp(h / 2)`` overflows float32.

Methods, each fitted by TFP's own ``tfp.vi.fit_surrogate_posterior_stateless`` (jitted,
no guard) and by ``emf_jax.fit_vi``, same budget: Adam 1e-3, ``--steps`` steps,
``--sample-size`` draws per step, CPU, float32, default options:

- ``gemf-t``: ``build_emf_surrogate_posterior_stateless(pinned)``, the default surrogate.
- ``gemf-t tau=1``: the same with ``initial_temperature=1.0`` (no tempered start; the
  per-draw guard and the masked loss only). Skipped where the option does not exist.
- ``mean field``: ``emf_jax.baselines.build_mean_field_surrogate_stateless``.

Metrics: the final ELBO from 1000 fresh draws (mean over the finite draws ± its SEM, and
how many of the 1000 were finite); the number of parameter leaves holding a NaN/inf;
non-finite steps (TFP: steps whose loss was not finite; fit_vi: steps skipped by its
guard); draws left out by fit_vi's masked loss; the initial temperature; wall time.

Each run writes ``benchmarks/results/robustness_<label>.json``; the table in
``benchmarks/results/robustness.md`` merges every label found there (run once with the
current code as ``after`` and once with an older checkout on ``PYTHONPATH`` as ``before``).
"""
from __future__ import annotations

import argparse
import inspect
import json
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tensorflow_probability.substrates import jax as tfp

import emf_jax
from emf_jax import baselines

tfd, tfb = tfp.distributions, tfp.bijectors

RESULTS = Path(__file__).resolve().parent / "results"
ELBO_DRAWS = 1000
LEARNING_RATE = 1e-3


def stochastic_volatility(num_days: int = 100) -> Any:
    """The pinned stochastic-volatility model with synthetic returns (see the docstring)."""
    def program():
        persistence = yield tfd.TransformedDistribution(
            tfd.Beta(20.0, 1.5), tfb.Chain([tfb.Shift(-1.0), tfb.Scale(2.0)]),
            name="persistence_of_volatility")
        mean = yield tfd.Cauchy(0.0, 5.0, name="mean_log_volatility")
        shock = yield tfd.HalfCauchy(0.0, 2.0, name="white_noise_shock_scale")
        h = yield tfd.MarkovChain(
            tfd.Normal(mean, shock / jnp.sqrt(1.0 - persistence ** 2)),
            lambda _, x: tfd.Normal(persistence * (x - mean) + mean, shock),
            num_steps=num_days, name="log_volatility")
        yield tfd.Independent(tfd.Normal(0.0, jnp.exp(h / 2.0)), 1, name="returns")

    model = tfd.JointDistributionCoroutineAutoBatched(program)
    truth = model.sample(persistence_of_volatility=0.95, mean_log_volatility=-9.0,
                         white_noise_shock_scale=0.25, seed=jax.random.key(0))
    return model.experimental_pin(returns=truth.returns)


def _builders(pinned: Any) -> dict[str, Any]:
    builders = {"gemf-t": lambda: emf_jax.build_emf_surrogate_posterior_stateless(pinned)}
    params = inspect.signature(emf_jax.build_emf_surrogate_posterior_stateless).parameters
    if "initial_temperature" in params:
        builders["gemf-t tau=1"] = lambda: emf_jax.build_emf_surrogate_posterior_stateless(
            pinned, initial_temperature=1.0)
    builders["mean field"] = lambda: baselines.build_mean_field_surrogate_stateless(pinned)
    return builders


def _num_bad_leaves(params: Any) -> tuple[int, int]:
    leaves = jax.tree.leaves(params)
    return sum(int(not np.all(np.isfinite(np.asarray(x)))) for x in leaves), len(leaves)


def _final_elbo(pinned: Any, surrogate: Any, seed: int) -> dict[str, float]:
    draws, log_q = jax.jit(lambda k: surrogate.experimental_sample_and_log_prob(
        ELBO_DRAWS, seed=k))(jax.random.key(seed))
    terms = np.asarray(pinned.unnormalized_log_prob(draws) - log_q, np.float64)
    finite = np.isfinite(terms)
    n = int(finite.sum())
    mean = float(terms[finite].mean()) if n else float("nan")
    sem = float(terms[finite].std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"elbo": mean, "elbo_sem": sem, "finite_draws": n}


def _temperature(params: Any) -> float:
    base = params.get("base") if isinstance(params, dict) else None
    if base is None:
        return float("nan")
    return float(np.exp(np.asarray(base["log_scale"])[0]))


def run(label: str, steps: int, sample_size: int, seed: int) -> list[dict]:
    pinned = stochastic_volatility()
    rows = []
    for method, make in _builders(pinned).items():
        init_fn, build_fn = make()
        for fitter in ("tfp", "fit_vi"):
            key = jax.random.key(seed)
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if fitter == "tfp":
                    params, losses = jax.jit(
                        lambda k, build_fn=build_fn, init_fn=init_fn:
                        tfp.vi.fit_surrogate_posterior_stateless(
                            pinned.unnormalized_log_prob, build_fn, init_fn(k),
                            optax.adam(LEARNING_RATE), num_steps=steps,
                            sample_size=sample_size, seed=k))(key)
                    params = jax.block_until_ready(params)
                    initial = jax.jit(init_fn)(key)
                    bad_steps = int(np.sum(~np.isfinite(np.asarray(losses))))
                    left_out = None
                else:
                    initial = jax.jit(init_fn)(key)
                    result = emf_jax.fit_vi(
                        pinned.unnormalized_log_prob, build_fn, initial,
                        optimizer=optax.adam(LEARNING_RATE), num_steps=steps,
                        sample_size=sample_size, seed=key, progress_bar=False)
                    params = jax.block_until_ready(result.params)
                    bad_steps = int(result.num_nonfinite)
                    left_out = getattr(result, "num_nonfinite_draws", None)
            seconds = time.perf_counter() - start
            bad, total = _num_bad_leaves(params)
            row = dict(label=label, method=method, fitter=fitter, steps=steps,
                       sample_size=sample_size, bad_leaves=bad, leaves=total,
                       nonfinite_steps=bad_steps, nonfinite_draws=left_out,
                       temperature=_temperature(initial), seconds=seconds,
                       warnings=[str(w.message)[:160] for w in caught
                                 if issubclass(w.category, RuntimeWarning)])
            row.update(_final_elbo(pinned, build_fn(params), seed + 1))
            rows.append(row)
            print(_format_row(row), flush=True)
    return rows


def _fmt(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return format(value, spec)


def _format_row(row: dict) -> str:
    elbo = (f"{row['elbo']:.1f} ± {row['elbo_sem']:.1f}" if np.isfinite(row["elbo"])
            else "NaN")
    draws = _fmt(row["nonfinite_draws"], "d")
    total_draws = row["steps"] * row["sample_size"]
    return (f"| {row['label']} | {row['method']} | {row['fitter']} | {elbo} | "
            f"{row['finite_draws']}/{ELBO_DRAWS} | {row['bad_leaves']}/{row['leaves']} | "
            f"{row['nonfinite_steps']}/{row['steps']} | {draws}/{total_draws} | "
            f"{_fmt(row['temperature'], '.3g')} | {row['seconds']:.0f} |")


HEADER = ("| code | surrogate | fitter | final ELBO (1000 draws) | finite draws | "
          "NaN param leaves | non-finite steps | masked draws | tau | wall s |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def write_table() -> str:
    rows = []
    for path in sorted(RESULTS.glob("robustness_*.json")):
        rows.extend(json.loads(path.read_text()))
    order = {"before": 0, "after": 1}
    rows.sort(key=lambda r: (order.get(r["label"], 2), r["label"]))
    lines = ["# Robustness: stochastic volatility (prior draws overflow the likelihood)", "",
             "Written by `python -m benchmarks.robustness` (see its docstring for the model, "
             "the methods and the metrics). CPU, float32, Adam 1e-3. `before`: the code "
             "before the robustness changes (run with that checkout on PYTHONPATH); "
             "`after`: this code. ELBO: mean ± SEM over the finite of 1000 fresh draws.",
             "", HEADER]
    lines += [_format_row(r) for r in rows]
    warned = [(r, w) for r in rows for w in r.get("warnings", [])]
    if warned:
        lines += ["", "Warnings raised:", ""]
        lines += [f"- {r['label']} / {r['method']} / {r['fitter']}: {w}" for r, w in warned]
    text = "\n".join(lines) + "\n"
    (RESULTS / "robustness.md").write_text(text)
    return text


def main(argv: Any = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--sample-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--label", default="after")
    args = parser.parse_args(argv)
    print(HEADER, flush=True)
    rows = run(args.label, args.steps, args.sample_size, args.seed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"robustness_{args.label}.json").write_text(json.dumps(rows, indent=1))
    print(write_table())
    return rows


if __name__ == "__main__":
    main()
