"""The structured layer against TFP's `make_distribution_bijector`, and loop models' compile.

Usage::

    python -m benchmarks.structured                  # every table (about 30-60 min on CPU)
    python -m benchmarks.structured --quick          # fewer families and T = 30, 100 only
    python -m benchmarks.structured --tables accuracy,families,nine,compile,step

Tables, each measured in this one process side by side (except the compile-vs-T table,
whose cells each run in a fresh process so that no cache helps):

- **accuracy**: per special-function family (`emf_jax.transforms.special`), the worst
  float32 round-trip error ``|Φ⁻¹(F(x(e))) − e| / max(1, |e|)`` over noise ``e`` in
  ``[−6, 6]`` (241 points plus ``0, ±1e−4``) and a grid of parameters, and the worst gap
  between the map's log-derivative and ``log dx/de`` by autodiff. The property suite's
  tolerance is 1e−4.
- **families**: one variable of each scalar family, 256 draws, forward + log-det. emf_jax's
  ungated and gated structured layer against `tfp.experimental.bijectors.
  make_distribution_bijector` on the same model: compile (the first call of the jitted
  function), steady time (the median of ``--repeats`` calls) and the first eager call
  (no jit; the first call in the process for that family). Ratios are emf_jax / TFP.
- **nine**: the same on one model of nine variables (Normal, HalfNormal, Gamma, Beta,
  LogNormal, Sample, Laplace, StudentT, Uniform).
- **compile**: the GEMF-T VI step (IAF backbone, 2 layers, hidden [512, 512], 16 draws) on
  Python-loop models of T = 30, 100, 300, 1000 steps: a Normal AR(1) (the Brownian bridge
  of `benchmarks.speed`), stochastic volatility with Gamma / Beta parameters, and the
  Lorenz system (`emf_jax.models.time_series.lorenz_system`); each cell build + first-call
  seconds, wall and CPU, under a time limit (``--compile-timeout``), "> limit" past it.
- **step**: steady ms per step of GEMF-T against the backbone alone (architecture
  ``"flow"``) on the same loop models at T = 30 (``--step-T``).

Results are printed and written to ``benchmarks/results/structured.md`` (``_quick`` with
``--quick``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TABLES = ("accuracy", "families", "nine", "compile", "step")
LOOP_MODELS = ("ar", "sv", "lorenz")
LOOP_NAMES = {"ar": "Normal AR(1) (Brownian bridge)",
              "sv": "stochastic volatility (Gamma, Beta parameters)",
              "lorenz": "Lorenz system (3-d states)"}


# ----------------------------------------------------------------------------- accuracy


def _accuracy_cases() -> dict[str, list[Any]]:
    from tensorflow_probability.substrates import jax as tfp
    tfd = tfp.distributions
    return {
        "Gamma": [tfd.Gamma(a, 1.3) for a in (0.3, 0.7, 1.0, 2.5, 10.0, 100.0)],
        "Chi2": [tfd.Chi2(k) for k in (1.0, 2.0, 5.0, 30.0)],
        "Chi": [tfd.Chi(k) for k in (1.0, 2.0, 5.0, 30.0)],
        "InverseGamma": [tfd.InverseGamma(a, 1.3) for a in (0.5, 1.0, 3.0, 10.0, 100.0)],
        "Beta": [tfd.Beta(a, b) for a in (0.3, 1.0, 2.5, 20.0) for b in (0.3, 1.0, 3.0, 20.0)],
        "StudentT": [tfd.StudentT(nu, 0.5, 1.5) for nu in (0.7, 1.0, 2.0, 4.0, 30.0, 300.0)],
    }


def _describe(dist: Any) -> str:
    keys = ("concentration", "concentration1", "concentration0", "df")
    return ", ".join(f"{k}={float(v):g}" for k, v in dist.parameters.items() if k in keys)


def accuracy_table() -> list[dict[str, Any]]:
    """Worst float32 round trip and log-det gap per family over the noise and parameter grid."""
    import jax
    import jax.numpy as jnp

    from emf_jax.transforms import transform_for

    e = jnp.concatenate([jnp.linspace(-6.0, 6.0, 241), jnp.array([0.0, 1e-4, -1e-4])])
    rows = []
    for family, dists in _accuracy_cases().items():
        worst, worst_at, worst_log_det, non_finite = 0.0, "", 0.0, 0
        for dist in dists:
            t = transform_for(dist)

            @jax.jit
            def run(e, t=t):
                u = t.forward(e)
                log_derivative = t.forward_log_derivative(e, u)
                autodiff = jnp.log(jax.vmap(jax.grad(t.forward))(e))
                return u, t.inverse(u), log_derivative, autodiff

            u, back, log_derivative, autodiff = (np.asarray(v) for v in run(e))
            finite = np.isfinite(u) & np.isfinite(log_derivative) & np.isfinite(back)
            non_finite += int((~finite).sum())
            err = np.where(finite, np.abs(back - np.asarray(e)) / np.maximum(1, np.abs(e)), 0)
            if err.max() > worst:
                worst = float(err.max())
                worst_at = f"{_describe(dist)}, e = {float(e[int(err.argmax())]):.2f}"
            gap = np.where(finite & np.isfinite(autodiff), np.abs(log_derivative - autodiff), 0)
            worst_log_det = max(worst_log_det, float(gap.max()))
        rows.append(dict(family=family, params=", ".join(_describe(d) for d in dists),
                         worst=worst, worst_at=worst_at, worst_log_det=worst_log_det,
                         non_finite=non_finite, points=len(dists) * int(e.size)))
        print(f"accuracy {family}: worst {worst:.2e} ({worst_at}), log-det gap "
              f"{worst_log_det:.2e}, non-finite {non_finite}", flush=True)
    return rows


# ----------------------------------------------------------------------------- families


def _family_makers() -> dict[str, Callable[[], Any]]:
    from tensorflow_probability.substrates import jax as tfp
    tfd = tfp.distributions
    return {
        "Normal": lambda: tfd.Normal(0.5, 1.5),
        "HalfNormal": lambda: tfd.HalfNormal(1.5),
        "LogNormal": lambda: tfd.LogNormal(0.2, 0.5),
        "Exponential": lambda: tfd.Exponential(2.0),
        "Uniform": lambda: tfd.Uniform(-1.0, 2.0),
        "Laplace": lambda: tfd.Laplace(0.5, 1.2),
        "Logistic": lambda: tfd.Logistic(0.5, 1.2),
        "Cauchy": lambda: tfd.Cauchy(0.5, 1.2),
        "Gumbel": lambda: tfd.Gumbel(0.5, 1.2),
        "Weibull": lambda: tfd.Weibull(1.7, 1.2),
        "Gamma": lambda: tfd.Gamma(2.5, 1.3),
        "Chi2": lambda: tfd.Chi2(3.0),
        "InverseGamma": lambda: tfd.InverseGamma(3.0, 1.3),
        "Beta": lambda: tfd.Beta(2.0, 3.0),
        "StudentT": lambda: tfd.StudentT(4.0, 0.5, 1.5),
        "Kumaraswamy": lambda: tfd.Kumaraswamy(2.0, 3.0),
        "Pareto": lambda: tfd.Pareto(3.0, 1.0),
        "HalfCauchy": lambda: tfd.HalfCauchy(0.0, 1.0),
    }


QUICK_FAMILIES = ("Normal", "HalfNormal", "Gamma", "Beta", "StudentT", "InverseGamma")


def _one_variable_model(make: Callable[[], Any]) -> Any:
    from tensorflow_probability.substrates import jax as tfp
    tfd = tfp.distributions

    def program():
        yield make().copy(name="x")

    return tfd.JointDistributionCoroutineAutoBatched(program)


def nine_family_model() -> Any:
    """Normal, HalfNormal, Gamma, Beta, LogNormal, Sample, Laplace, StudentT, Uniform."""
    from tensorflow_probability.substrates import jax as tfp
    tfd = tfp.distributions

    def program():
        mu = yield tfd.Normal(0.0, 1.0, name="mu")
        tau = yield tfd.HalfNormal(1.0, name="tau")
        rate = yield tfd.Gamma(2.0, 1.0 + tau, name="rate")
        p = yield tfd.Beta(1.0 + rate, 2.0, name="p")
        s = yield tfd.LogNormal(0.3 * mu, 0.5, name="s")
        yield tfd.Sample(tfd.Normal(mu, s), 3, name="z")
        yield tfd.Laplace(mu, 1.0 + p, name="lap")
        yield tfd.StudentT(4.0, mu, s, name="t")
        yield tfd.Uniform(mu - 1.0, mu + 1.0 + p, name="u")

    return tfd.JointDistributionCoroutineAutoBatched(program)


def _block(tree: Any) -> Any:
    import jax
    return jax.block_until_ready(tree)


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    _block(fn())
    return time.perf_counter() - start


def _forward_fns(model: Any) -> dict[str, Callable[[Any], Any]]:
    """The three maps measured: emf_jax ungated, emf_jax gated, TFP; each e -> (x, log-det)."""
    import jax
    from tensorflow_probability.substrates import jax as tfp

    import emf_jax

    fns = {}
    for gated in (False, True):
        init_fn, build_fn = emf_jax.build_structured_layer_stateless(model, gated=gated)
        params = init_fn(None)
        if gated:
            # Gates at 0.7: away from the near-identity start, where the numeric inverse is hard.
            params["gates"] = jax.tree.map(lambda w: w * 0 + 0.85, params["gates"])
        fns["gated" if gated else "ungated"] = (
            lambda e, b=build_fn, p=params: b(p).forward_and_log_det(e))
    try:
        bijector = tfp.experimental.bijectors.make_distribution_bijector(model)
    except NotImplementedError:  # e.g. Pareto: TFP's Pareto has no quantile
        return fns
    fns["tfp"] = lambda e: (bijector.forward(e), bijector.forward_log_det_jacobian(
        e, event_ndims=bijector.forward_min_event_ndims))
    return fns


def _noise(model: Any, n: int) -> Any:
    import jax

    import emf_jax
    init_fn, build_fn = emf_jax.build_structured_layer_stateless(model, gated=False)
    return build_fn(init_fn(None)).noise_distribution().sample(n, seed=jax.random.key(0))


def measure_model(model: Any, *, draws: int, repeats: int, eager: bool) -> dict[str, Any]:
    """compile / steady / first eager call of emf_jax (ungated, gated) and TFP on `model`."""
    import jax

    e = _block(_noise(model, draws))
    out: dict[str, Any] = {}
    for kind, fn in _forward_fns(model).items():
        row: dict[str, Any] = {}
        try:  # a joint model's TFP bijector is built lazily, at its first call
            first = _timed(lambda fn=fn: fn(e))
        except NotImplementedError:
            if kind != "tfp":
                raise
            continue  # e.g. Pareto: TFP's Pareto has no quantile
        if eager:
            row["eager_first"] = first
        jitted = jax.jit(fn)
        row["compile"] = _timed(lambda jitted=jitted: jitted(e))
        times = [_timed(lambda jitted=jitted: jitted(e)) for _ in range(repeats)]
        row["steady"] = statistics.median(times)
        out[kind] = row
    return out


def families_table(names: Sequence[str], *, draws: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    makers = _family_makers()
    for name in names:
        result = measure_model(_one_variable_model(makers[name]), draws=draws,
                               repeats=repeats, eager=True)
        rows.append(dict(family=name, **result))
        print(f"family {name}: {json.dumps(result)}", flush=True)
    return rows


# ----------------------------------------------------------------------------- loop models


def loop_model(kind: str, num_steps: int) -> Any:
    """A pinned Python-loop model of `num_steps` steps: 'ar', 'sv' or 'lorenz'."""
    import jax.numpy as jnp
    from tensorflow_probability.substrates import jax as tfp
    tfd = tfp.distributions

    if kind == "ar":
        from benchmarks import speed
        return speed.bridge(num_steps, "loop")
    if kind == "lorenz":
        from emf_jax.models import time_series
        model = time_series.lorenz_system(num_steps, dtype=np.float32)
        observed = [n for n in model._flat_resolve_names() if not n.startswith("x")]
        sample = model.sample(seed=_key(0))
        return model.experimental_pin(**{n: getattr(sample, n) for n in observed})
    if kind != "sv":
        raise ValueError(f"unknown loop model {kind!r}")
    rng = np.random.default_rng(0)
    returns = jnp.asarray(rng.normal(0.0, 1.0, num_steps), jnp.float32)

    def program():
        # Stochastic volatility: persistence ~ Beta, innovation precision ~ Gamma.
        phi = yield tfd.Beta(20.0, 1.5, name="phi")
        precision = yield tfd.Gamma(5.0, 0.5, name="precision")
        mu = yield tfd.Normal(0.0, 1.0, name="mu")
        scale = 1.0 / jnp.sqrt(precision)
        h = yield tfd.Normal(mu, scale / jnp.sqrt(1 - jnp.square(phi)), name="h0")
        path = [h]
        for t in range(1, num_steps):
            h = yield tfd.Normal(mu + phi * (h - mu), scale, name=f"h{t}")
            path.append(h)
        yield tfd.Independent(tfd.Normal(0.0, jnp.exp(0.5 * jnp.stack(path, -1))), 1,
                              name="y")

    return tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(y=returns)


def _key(seed: int) -> Any:
    import jax
    return jax.random.key(seed)


def _stepper(kind: str, num_steps: int, method: str, hidden: tuple[int, ...]) -> Any:
    from benchmarks import speed
    settings = speed.Settings(hidden=hidden, sample_size=16, learning_rate=1e-3, steps=50,
                              rounds=1, speed_models=(), compile_steps=(),
                              compile_timeout=0.0, quick=False)
    return speed.make_stepper(method, loop_model(kind, num_steps), settings)


def compile_worker(kind: str, num_steps: int, hidden: tuple[int, ...]) -> dict[str, float]:
    """Build + first call of the GEMF-T step (run in a fresh process)."""
    from benchmarks import speed
    speed._import_everything()  # noqa: SLF001  (imports are not compile time)
    clock = speed.Clock()
    stepper = _stepper(kind, num_steps, "gemf-t", hidden)
    build = clock.read()
    _, first = speed.first_call(stepper)
    return dict(build_wall=build[0], build_cpu=build[1], first_wall=first[0],
                first_cpu=first[1])


def compile_table(kinds: Sequence[str], steps: Sequence[int], timeout: float,
                  hidden: tuple[int, ...]) -> list[dict[str, Any]]:
    rows = []
    for kind in kinds:
        row: dict[str, Any] = dict(kind=kind, cells={})
        failed = False
        for num_steps in steps:
            if failed:
                row["cells"][num_steps] = "not run (a shorter T already failed)"
                continue
            cmd = [sys.executable, "-m", "benchmarks.structured", "--worker", kind,
                   str(num_steps), "--hidden", ",".join(map(str, hidden))]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                      cwd=Path(__file__).resolve().parent.parent)
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode != 0 or not lines:
                    tail = (proc.stderr or proc.stdout)[-300:].replace("\n", " ")
                    oom = "MemoryError" in proc.stderr or "bad_alloc" in proc.stderr
                    row["cells"][num_steps] = ("out of memory" if oom else
                                               f"failed (rc {proc.returncode}): {tail}")
                    failed = True
                else:
                    row["cells"][num_steps] = json.loads(lines[-1])
            except subprocess.TimeoutExpired:
                row["cells"][num_steps] = f"> {timeout:.0f} s"
                failed = True
            print(f"compile {kind} T={num_steps}: {row['cells'][num_steps]}", flush=True)
        rows.append(row)
    return rows


def step_table(kinds: Sequence[str], num_steps: int, hidden: tuple[int, ...],
               steps: int, rounds: int) -> list[dict[str, Any]]:
    from benchmarks import speed
    rows = []
    for kind in kinds:
        steppers = {}
        for method in ("gemf-t", "backbone"):
            stepper = _stepper(kind, num_steps, method, hidden)
            steppers[method], _ = speed.first_call(stepper)
        best: dict[str, tuple[float, float]] = {}
        for _ in range(rounds):  # alternate, so load changes hit both alike
            for method in steppers:
                steppers[method], (wall, cpu), _ = speed.timed_steps(steppers[method], steps)
                if method not in best or cpu < best[method][1]:
                    best[method] = (wall, cpu)
        rows.append(dict(kind=kind, num_steps=num_steps, **{
            f"{m}_{w}": v for m, (wall, cpu) in best.items()
            for w, v in (("wall", wall), ("cpu", cpu))}))
        print(f"step {kind} T={num_steps}: {rows[-1]}", flush=True)
    return rows


# ----------------------------------------------------------------------------- report


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}×" if b > 0 else "n/a"


def format_accuracy(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| family | parameters | worst round trip | where | worst log-det gap | "
             "non-finite / points |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['params']} | {r['worst']:.1e} | {r['worst_at']} | "
                     f"{r['worst_log_det']:.1e} | {r['non_finite']} / {r['points']} |")
    return "\n".join(lines)


def format_families(rows: Sequence[dict[str, Any]], label: str = "family") -> str:
    lines = [f"| {label} | TFP compile | ungated compile (×) | gated compile (×) | TFP steady | "
             "ungated steady (×) | gated steady (×) | TFP first eager | ungated first eager "
             "(×) | gated first eager (×) |", "|---|" + "---|" * 9]
    for r in rows:
        if "tfp" not in r:
            lines.append(f"| {r[label]} | TFP builds no bijector (no quantile) |"
                         + " |" * 8)
            continue
        t, u, g = r["tfp"], r["ungated"], r["gated"]
        cells = [f"{t['compile']:.2f} s",
                 f"{u['compile']:.2f} s ({_ratio(u['compile'], t['compile'])})",
                 f"{g['compile']:.2f} s ({_ratio(g['compile'], t['compile'])})",
                 _ms(t["steady"]), f"{_ms(u['steady'])} ({_ratio(u['steady'], t['steady'])})",
                 f"{_ms(g['steady'])} ({_ratio(g['steady'], t['steady'])})"]
        if "eager_first" in t:
            cells += [f"{t['eager_first']:.2f} s",
                      f"{u['eager_first']:.2f} s ({_ratio(u['eager_first'], t['eager_first'])})",
                      f"{g['eager_first']:.2f} s ({_ratio(g['eager_first'], t['eager_first'])})"]
        else:
            cells += ["not run"] * 3
        lines.append(f"| {r[label]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_compile(rows: Sequence[dict[str, Any]], steps: Sequence[int]) -> str:
    lines = ["| model | " + " | ".join(f"T = {t}" for t in steps) + " |",
             "|---|" + "---|" * len(steps)]
    for r in rows:
        cells = []
        for t in steps:
            c = r["cells"].get(t, "not run")
            if isinstance(c, dict):
                cells.append(f"{c['build_wall']:.1f} + {c['first_wall']:.1f} s (CPU "
                             f"{c['build_cpu']:.1f} + {c['first_cpu']:.1f} s)")
            else:
                cells.append(str(c))
        lines.append(f"| {LOOP_NAMES[r['kind']]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_steps(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| model | T | backbone ms/step (CPU ms) | GEMF-T ms/step (CPU ms) | "
             "GEMF-T / backbone (CPU) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {LOOP_NAMES[r['kind']]} | {r['num_steps']} | {r['backbone_wall'] * 1e3:.2f} "
            f"({r['backbone_cpu'] * 1e3:.2f}) | {r['gemf-t_wall'] * 1e3:.2f} "
            f"({r['gemf-t_cpu'] * 1e3:.2f}) | {_ratio(r['gemf-t_wall'], r['backbone_wall'])} "
            f"({_ratio(r['gemf-t_cpu'], r['backbone_cpu'])}) |")
    return "\n".join(lines)


def _machine() -> str:
    from benchmarks import speed
    return speed.machine()


def write_report(path: Path, sections: dict[str, str], args: argparse.Namespace) -> None:
    from benchmarks import speed
    text = ["# The structured layer at TFP's speed", "",
            "Written by `python -m benchmarks.structured"
            + (" --quick" if args.quick else "") + "`; see the module docstring for the method.",
            "", f"- Machine: {_machine()}", f"- Versions: {speed.versions()}",
            f"- Settings: float32; {args.draws} draws per call; steady = median of "
            f"{args.repeats} calls; loop models: hidden {args.hidden}, 16 draws, Adam.", ""]
    for title, body in sections.items():
        text += [f"## {title}", "", body, ""]
    path.write_text("\n".join(text))
    print(f"wrote {path}")


def write_json(path: Path, data: dict[str, Any]) -> None:
    """The raw numbers of every table run, beside the markdown report."""
    path.write_text(json.dumps(data, indent=1, default=str))
    print(f"wrote {path}")


def parse(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tables", default=",".join(TABLES))
    parser.add_argument("--families", default=None,
                        help="comma-separated families of the families table (default: all)")
    parser.add_argument("--draws", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--hidden", default="512,512")
    parser.add_argument("--compile-steps", default=None)
    parser.add_argument("--compile-models", default=",".join(LOOP_MODELS))
    parser.add_argument("--compile-timeout", type=float, default=600.0)
    parser.add_argument("--step-T", type=int, default=30)
    parser.add_argument("--worker", nargs=2, default=None, metavar=("KIND", "T"))
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    args.hidden = tuple(int(h) for h in args.hidden.split(","))
    if args.compile_steps is None:
        args.compile_steps = "30,100" if args.quick else "30,100,300,1000"
    args.compile_steps = [int(t) for t in args.compile_steps.split(",")]
    return args


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse(argv)
    if args.worker is not None:
        kind, num_steps = args.worker[0], int(args.worker[1])
        print(json.dumps(compile_worker(kind, num_steps, args.hidden)), flush=True)
        return
    tables = args.tables.split(",")
    sections: dict[str, str] = {}
    raw: dict[str, Any] = {}
    if "accuracy" in tables:
        sections["Float32 accuracy of the special-function maps (no refinement)"] = (
            format_accuracy(accuracy_table()))
    if "families" in tables:
        names = (tuple(args.families.split(",")) if args.families else
                 QUICK_FAMILIES if args.quick else tuple(_family_makers()))
        rows = families_table(names, draws=args.draws, repeats=args.repeats)
        raw["families"] = rows
        sections["One variable per family: emf_jax against make_distribution_bijector"] = (
            "Ratios are emf_jax / TFP. Compile: the first call of the jitted forward + "
            "log-det; steady: median over calls; first eager: no jit, the first call.\n\n"
            + format_families(rows))
    if "nine" in tables:
        result = measure_model(nine_family_model(), draws=args.draws, repeats=args.repeats,
                               eager=True)
        print(f"nine: {json.dumps(result)}", flush=True)
        raw["nine"] = result
        sections["Nine-family model (forward + log-det of 256 draws)"] = format_families(
            [dict(model="nine families", **result)], label="model")
    models = args.compile_models.split(",")
    if "compile" in tables:
        rows = compile_table(models, args.compile_steps, args.compile_timeout, args.hidden)
        raw["compile"] = rows
        sections["Compile time of the GEMF-T step against T (Python-loop models)"] = (
            "Each cell: build + first call, wall (CPU), in a fresh process under a limit of "
            f"{args.compile_timeout:.0f} s.\n\n" + format_compile(rows, args.compile_steps))
    if "step" in tables:
        rows = step_table(models, args.step_T, args.hidden, steps=50, rounds=3)
        raw["step"] = rows
        sections["GEMF-T step against its backbone alone (loop form)"] = format_steps(rows)
    name = args.output or ("structured_quick.md" if args.quick else "structured.md")
    RESULTS_DIR.mkdir(exist_ok=True)
    write_report(RESULTS_DIR / name, sections, args)
    write_json((RESULTS_DIR / name).with_suffix(".json"), raw)


if __name__ == "__main__":
    main()
