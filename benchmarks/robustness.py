"""Robustness on a model whose prior draws overflow its likelihood: stochastic volatility.

Usage::

    python -m benchmarks.robustness                      # 3000 steps x 16 draws (CPU: ~20 min)
    python -m benchmarks.robustness --steps 300          # a quick look
    PYTHONPATH=/path/to/old/checkout python -m benchmarks.robustness --label before
    python -m benchmarks.robustness --sweep              # every target of both suites
    python -m benchmarks.robustness --sweep --targets eight_schools neals_funnel

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

``--sweep`` asks the same question of every target of both suites (the paper's 17 of
``benchmarks.vi`` and the public models of ``benchmarks.real_models``): the default GEMF-T
surrogate, started from its ``init_fn``, fitted from that start by both fitters at a short
budget (300 steps x 8 draws, seed 0, Adam 1e-3). A fit passes when no parameter leaf is
NaN/inf and the ELBO over all 500 fresh draws is finite. Results:
``benchmarks/results/robustness_sweep.{json,md}``, updated per target (so it runs in parts).
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


def fit(fitter: str, pinned: Any, build_fn: Any, initial: Any, key: Any, steps: int,
        sample_size: int, compiler_options: Any = None) -> dict[str, Any]:
    """Fits `build_fn` from `initial` with TFP's fitter (``"tfp"``) or ``emf_jax.fit_vi``.

    Adam at `LEARNING_RATE`, every other option the fitter's default. Returns the final
    parameters, the non-finite steps (TFP: steps whose loss was not finite; fit_vi: steps
    its guard skipped), fit_vi's masked draws (None for TFP), the wall time (compilation
    included) and the RuntimeWarnings raised.
    """
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if fitter == "tfp":
            params, losses = jax.jit(
                lambda p, k: tfp.vi.fit_surrogate_posterior_stateless(
                    pinned.unnormalized_log_prob, build_fn, p, optax.adam(LEARNING_RATE),
                    num_steps=steps, sample_size=sample_size, seed=k),
                compiler_options=compiler_options)(initial, key)
            params = jax.block_until_ready(params)
            bad_steps = int(np.sum(~np.isfinite(np.asarray(losses))))
            left_out = None
        elif fitter == "fit_vi":
            result = emf_jax.fit_vi(
                pinned.unnormalized_log_prob, build_fn, initial,
                optimizer=optax.adam(LEARNING_RATE), num_steps=steps,
                sample_size=sample_size, seed=key, progress_bar=False,
                compiler_options=compiler_options)
            params = jax.block_until_ready(result.params)
            bad_steps = int(result.num_nonfinite)
            left_out = getattr(result, "num_nonfinite_draws", None)
        else:
            raise ValueError(f"fitter must be 'tfp' or 'fit_vi', got {fitter!r}.")
    return dict(params=params, nonfinite_steps=bad_steps, nonfinite_draws=left_out,
                seconds=time.perf_counter() - start,
                warnings=[str(w.message)[:160] for w in caught
                          if issubclass(w.category, RuntimeWarning)])


def run(label: str, steps: int, sample_size: int, seed: int) -> list[dict]:
    pinned = stochastic_volatility()
    rows = []
    for method, make in _builders(pinned).items():
        init_fn, build_fn = make()
        for fitter in ("tfp", "fit_vi"):
            key = jax.random.key(seed)
            tic = time.perf_counter()
            initial = jax.jit(init_fn)(key)
            out = fit(fitter, pinned, build_fn, initial, key, steps, sample_size)
            bad, total = _num_bad_leaves(out["params"])
            row = dict(label=label, method=method, fitter=fitter, steps=steps,
                       sample_size=sample_size, bad_leaves=bad, leaves=total,
                       nonfinite_steps=out["nonfinite_steps"],
                       nonfinite_draws=out["nonfinite_draws"],
                       temperature=_temperature(initial),
                       seconds=time.perf_counter() - tic, warnings=out["warnings"])
            row.update(_final_elbo(pinned, build_fn(out["params"]), seed + 1))
            rows.append(row)
            print(_format_row(row), flush=True)
    return rows


# ----------------------------------------------------------------------------- the sweep

SWEEP_STEPS = 300
SWEEP_SAMPLE_SIZE = 8
SWEEP_EVAL_DRAWS = 500
SWEEP_FITTERS = ("tfp", "fit_vi")


def sweep_targets() -> list[tuple[str, str]]:
    """``(suite, name)`` for every target of both suites: the paper's 17, then the real one."""
    from benchmarks import real_models
    from benchmarks.vi import PAPER_TARGETS

    return ([("paper", name) for name in PAPER_TARGETS]
            + [("real", name) for name in real_models.REAL_TARGET_NAMES])


def _pinned(suite: str, name: str) -> Any:
    if suite == "paper":
        from emf_jax import models

        return models.get_target(name, dtype=np.float32).pinned_model
    from benchmarks import real_models

    return real_models.get_real_target(name).pinned_model


def _elbo_over_all_draws(pinned: Any, surrogate: Any, seed: int, num_draws: int
                         ) -> dict[str, Any]:
    """The ELBO over all `num_draws` fresh draws (``-inf``/NaN if any term is not finite)."""
    draws, log_q = jax.jit(lambda k: surrogate.experimental_sample_and_log_prob(
        num_draws, seed=k))(jax.random.key(seed))
    terms = np.asarray(pinned.unnormalized_log_prob(draws) - log_q, np.float64)
    finite = np.isfinite(terms)
    return {"elbo": float(terms.mean()), "elbo_sem": float(terms.std(ddof=1)
                                                           / np.sqrt(terms.size)),
            "finite_draws": int(finite.sum()), "eval_draws": int(terms.size)}


def sweep_one(suite: str, name: str, steps: int, sample_size: int, seed: int,
              compiler_options: Any = None) -> list[dict]:
    """The default GEMF-T surrogate on one target through both fitters: one row per fitter.

    A target whose surrogate cannot be built gets one row with ``status`` "unsupported:
    <error>" (the error's first line); a fit that raises gets "error: <error>".
    """
    base = dict(suite=suite, target=name, steps=steps, sample_size=sample_size, seed=seed,
                compiler_options=compiler_options)
    pinned = _pinned(suite, name)
    try:
        init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(pinned)
        key = jax.random.key(seed)
        tic = time.perf_counter()
        initial = jax.block_until_ready(jax.jit(init_fn)(key))
        init_seconds = time.perf_counter() - tic
    except Exception as error:  # noqa: BLE001 - recorded, the sweep goes on
        return [dict(base, fitter=fitter, status="unsupported: "
                     + str(error).strip().splitlines()[0][:160]) for fitter in SWEEP_FITTERS]
    start = _elbo_over_all_draws(pinned, build_fn(initial), seed + 1, SWEEP_EVAL_DRAWS)
    rows = []
    for fitter in SWEEP_FITTERS:
        try:
            out = fit(fitter, pinned, build_fn, initial, key, steps, sample_size,
                      compiler_options)
        except Exception as error:  # noqa: BLE001 - recorded, the sweep goes on
            rows.append(dict(base, fitter=fitter, status="error: "
                             + str(error).strip().splitlines()[0][:160]))
            continue
        bad, total = _num_bad_leaves(out["params"])
        row = dict(base, fitter=fitter, status="ok", bad_leaves=bad, leaves=total,
                   nonfinite_steps=out["nonfinite_steps"],
                   nonfinite_draws=out["nonfinite_draws"], init_seconds=init_seconds,
                   seconds=out["seconds"], warnings=out["warnings"],
                   initial_elbo=start["elbo"], initial_finite_draws=start["finite_draws"])
        if bad == 0:
            row.update(_elbo_over_all_draws(pinned, build_fn(out["params"]), seed + 1,
                                            SWEEP_EVAL_DRAWS))
        else:
            row.update(elbo=float("nan"), elbo_sem=float("nan"), finite_draws=0,
                       eval_draws=SWEEP_EVAL_DRAWS)
        rows.append(row)
    return rows


def sweep_passes(row: dict) -> bool:
    """The must-show per fit: no non-finite parameter and a finite ELBO over all draws."""
    return (row.get("status") == "ok" and row["bad_leaves"] == 0
            and row["finite_draws"] == row["eval_draws"] and bool(np.isfinite(row["elbo"])))


SWEEP_HEADER = ("| suite | target | fitter | pass | final ELBO (all draws) | finite draws | "
                "non-finite param leaves | non-finite steps | masked draws | ELBO at start | "
                "fit s (incl. compile) |\n|---|---|---|---|---|---|---|---|---|---|---|")


def _format_sweep_row(row: dict) -> str:
    # An XLA option (e.g. fusion off for a long Python loop) is named beside the target.
    options = "".join(f" (XLA {k}={v})" for k, v in (row.get("compiler_options") or {}).items())
    head = f"| {row['suite']} | {row['target']}{options} | {row['fitter']} |"
    if row.get("status") != "ok":
        return head + f" — | {row['status']} | | | | | | |"
    elbo = (f"{row['elbo']:.2f} ± {row['elbo_sem']:.2f}" if np.isfinite(row["elbo"])
            else str(row["elbo"]))
    total_draws = row["steps"] * row["sample_size"]
    return (head + f" {'yes' if sweep_passes(row) else '**no**'} | {elbo} | "
            f"{row['finite_draws']}/{row['eval_draws']} | "
            f"{row['bad_leaves']}/{row['leaves']} | {row['nonfinite_steps']}/{row['steps']} | "
            f"{_fmt(row['nonfinite_draws'], 'd')}/{total_draws} | "
            f"{row['initial_elbo']:.4g} | {row['seconds']:.0f} |")


def write_sweep_table(rows: list[dict], path: Path) -> str:
    """Writes the sweep's markdown table to `path`; returns its text."""
    ran = [r for r in rows if r.get("status") == "ok"]
    failed = [r for r in ran if not sweep_passes(r)]
    other = [r for r in rows if r.get("status") != "ok"]
    steps = sorted({r["steps"] for r in rows})
    sizes = sorted({r["sample_size"] for r in rows})
    lines = [
        "# Robustness sweep: the default GEMF-T surrogate on every target of both suites", "",
        "Written by `python -m benchmarks.robustness --sweep`. Each target's default surrogate "
        "(`emf_jax.build_emf_surrogate_posterior_stateless(pinned)`, every option at its "
        "default) starts from its `init_fn` (seed 0) and is fitted from the same start by "
        "`tfp.vi.fit_surrogate_posterior_stateless` (jitted; no guard) and by "
        "`emf_jax.fit_vi`, each with Adam 1e-3 and otherwise default options, "
        f"{'/'.join(map(str, steps))} steps × {'/'.join(map(str, sizes))} draws, CPU, "
        "float32. Pass: no parameter leaf holds a NaN/inf and the ELBO over all "
        f"{SWEEP_EVAL_DRAWS} fresh draws is finite (the ELBO's mean ± SEM is over all "
        "draws, not only the finite ones). Non-finite steps: TFP, steps whose loss was not "
        "finite; fit_vi, steps its guard skipped. Masked draws: draws fit_vi left out of "
        "their step's average. ELBO at start: the same estimate before fitting.", "",
        f"**{len(ran) - len(failed)} of {len(ran)} fits pass**"
        + (f"; {len(other)} not run (unsupported models)" if other else "") + ".", "",
        SWEEP_HEADER]
    lines += [_format_sweep_row(r) for r in rows]
    missing = [name for _, name in sweep_targets()
               if name not in {r["target"] for r in rows}]
    if missing:
        lines += ["", "Not yet swept: " + ", ".join(missing) + "."]
    warned = [(r, w) for r in rows for w in r.get("warnings", [])]
    if warned:
        lines += ["", "Warnings raised:", ""]
        lines += [f"- {r['target']} / {r['fitter']}: {w}" for r, w in warned]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def sweep(targets: Any, steps: int, sample_size: int, seed: int,
          compiler_options: Any = None) -> list[dict]:
    """Runs :func:`sweep_one` on `targets` (default: all, else in their order), merging into
    the saved sweep.

    Rows are saved after every target (the sweep can be run in parts); a target's earlier
    rows are replaced.
    """
    known = sweep_targets()
    by_name = {name: (suite, name) for suite, name in known}
    unknown = set(targets or ()) - set(by_name)
    if unknown:
        raise ValueError(f"unknown targets {sorted(unknown)}; choose from "
                         f"{[name for _, name in known]}.")
    chosen = [by_name[name] for name in targets] if targets else known  # in the given order
    json_path = RESULTS / "robustness_sweep.json"
    rows = json.loads(json_path.read_text()) if json_path.exists() else []
    order = {t: i for i, t in enumerate(known)}
    for suite, name in chosen:
        new = sweep_one(suite, name, steps, sample_size, seed, compiler_options)
        for row in new:
            print(_format_sweep_row(row), flush=True)
        rows = [r for r in rows if (r["suite"], r["target"]) != (suite, name)] + new
        rows.sort(key=lambda r: (order.get((r["suite"], r["target"]), len(order)),
                                 SWEEP_FITTERS.index(r["fitter"])))
        json_path.write_text(json.dumps(rows, indent=1))
        write_sweep_table(rows, RESULTS / "robustness_sweep.md")
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
        if path.name == "robustness_sweep.json":  # the sweep has its own table
            continue
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
    parser.add_argument("--steps", type=int,
                        help=f"Adam steps (default 3000; --sweep: {SWEEP_STEPS})")
    parser.add_argument("--sample-size", type=int,
                        help=f"draws per step (default 16; --sweep: {SWEEP_SAMPLE_SIZE})")
    parser.add_argument("--seed", type=int, help="the fit's seed (default 1; --sweep: 0)")
    parser.add_argument("--label", default="after")
    parser.add_argument("--sweep", action="store_true",
                        help="the default GEMF-T surrogate on every target of both suites")
    parser.add_argument("--targets", nargs="+", help="--sweep: only these targets")
    parser.add_argument("--xla-option", action="append", default=[], metavar="NAME=VALUE",
                        help="--sweep: an XLA option for both fitters' programs")
    args = parser.parse_args(argv)

    def pick(value: Any, default: Any, sweep_default: Any) -> Any:
        return value if value is not None else (sweep_default if args.sweep else default)

    steps = pick(args.steps, 3000, SWEEP_STEPS)
    sample_size = pick(args.sample_size, 16, SWEEP_SAMPLE_SIZE)
    seed = pick(args.seed, 1, 0)
    if args.sweep:
        options = {}
        for option in args.xla_option:
            name, sep, value = option.partition("=")
            if not sep or not name:
                parser.error(f"--xla-option expects NAME=VALUE, got {option!r}")
            options[name] = value
        return sweep(args.targets, steps, sample_size, seed, options or None)
    print(HEADER, flush=True)
    rows = run(args.label, steps, sample_size, seed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"robustness_{args.label}.json").write_text(json.dumps(rows, indent=1))
    print(write_table())
    return rows


if __name__ == "__main__":
    main()
