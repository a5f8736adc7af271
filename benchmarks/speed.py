"""Speed of a jitted VI step: steps per second, compile time, and compile time against T.

Usage::

    python -m benchmarks.speed                 # both tables, paper sizes (about 30-60 min on CPU)
    python -m benchmarks.speed --quick         # small sizes, a smoke run (a few minutes)
    python -m benchmarks.speed --skip-compile-table / --skip-speed-table

**Speed table** (one process, so that the methods share the machine's state). For each model
and method: the time to build the surrogate (tracing the model included), the first call of
the jitted step (tracing, lowering, XLA compilation and one step: "compile"), and the
steady-state steps per second (the median over rounds of ``--steps`` calls; the rounds visit
the methods in turn, so that a change of machine load hits all of them alike). Ratios are
given against the backbone alone and against NumPyro's AutoIAFNormal.

Methods, all with the same hidden sizes (``--hidden``), flows (2 autoregressive layers) and
Monte Carlo sample size (``--sample-size``), Adam, one step = ``value_and_grad`` of the
negative ELBO estimate plus the optimiser update:

- GEMF-T: IAF backbone, then the gated structured layer (``build_emf_surrogate_posterior_
  stateless``);
- backbone alone: the same IAF, then each variable's support (architecture ``"flow"``);
- ASVI: TFP's automatic structured VI (``emf_jax.baselines``); TFP cannot build it for a
  ``tfd.MarkovChain`` model, so it runs on the Python-loop form only;
- AutoIAFNormal: NumPyro's IAF autoguide (2 flows, the same hidden sizes) with
  ``Trace_ELBO(num_particles=sample_size)``, on the same target density (the model's log
  density on one flat vector as a ``numpyro.factor``).

Models: the Brownian bridge of the EMF paper (innovation and initial scale 0.1, observation
noise 0.15, the first and last thirds of the steps observed; for T = 30 inference_gym's
published data, else data simulated from the model with seed 0), written two ways:

- "loop": one variable per step, a Python loop in a ``JointDistributionCoroutine``
  (``emf_jax.models.brownian_motion``);
- "chain": one ``tfd.MarkovChain`` variable (the form that traces once for all steps);
- "loop_unfused" (compile table only): the "loop" model, its step compiled with XLA's fusion
  pass disabled (``compiler_options=NO_FUSION``, as ``emf_jax.fit_vi`` accepts it).

**Compile-time table**: the GEMF-T step on the bridge for T = 30, 100, 300, 1000 in each
form (``--compile-forms`` picks some; the others keep their last rows), each in a fresh
process (so that no cache helps) with a time limit (``--compile-timeout``): build time and
first-call time. A run past the limit is reported as "> limit".

Tables are printed and written to ``benchmarks/results/speed.md`` (``speed_quick.md`` with
``--quick``), with the machine, the versions and the settings.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FORMS = ("loop", "chain", "loop_unfused")
FORM_NAMES = {"loop": "Python loop (T variables)", "chain": "one tfd.MarkovChain",
              "loop_unfused": "Python loop, XLA fusion pass off"}
NO_FUSION = {"xla_disable_hlo_passes": "fusion"}
METHODS = ("gemf-t", "backbone", "asvi", "autoiaf")
METHOD_NAMES = {"gemf-t": "GEMF-T", "backbone": "backbone alone (IAF)",
                "asvi": "ASVI (TFP)", "autoiaf": "AutoIAFNormal (NumPyro)"}
INNOVATION_SCALE = 0.1
OBSERVATION_SCALE = 0.15


class Settings(NamedTuple):
    """Benchmark settings (same for every method)."""

    hidden: tuple[int, ...]
    sample_size: int
    learning_rate: float
    steps: int
    rounds: int
    speed_models: tuple[tuple[int, str], ...]
    compile_steps: tuple[int, ...]
    compile_timeout: float
    quick: bool


# ----------------------------------------------------------------------------- models


def observed_steps(num_steps: int) -> np.ndarray:
    """The bridge's observed steps: the first and the last third."""
    third = num_steps // 3
    return np.concatenate([np.arange(third), np.arange(num_steps - third, num_steps)])


def bridge_data(num_steps: int) -> np.ndarray:
    """inference_gym's data for T = 30, else a path simulated from the model (seed 0)."""
    if num_steps == 30:
        from emf_jax.internal import GYM_BROWNIAN_BRIDGE_OBS
        return np.asarray(GYM_BROWNIAN_BRIDGE_OBS, np.float32)
    rng = np.random.default_rng(0)
    path = np.cumsum(rng.normal(0.0, INNOVATION_SCALE, num_steps))
    steps = observed_steps(num_steps)
    return (path[steps] + rng.normal(0.0, OBSERVATION_SCALE, steps.size)).astype(np.float32)


def bridge(num_steps: int, form: str) -> Any:
    """The pinned Brownian bridge of `num_steps` steps as a Python loop or a MarkovChain."""
    import jax.numpy as jnp
    from tensorflow_probability.substrates import jax as tfp

    from emf_jax.models import time_series
    tfd = tfp.distributions

    steps = observed_steps(num_steps)
    data = jnp.asarray(bridge_data(num_steps))
    if form in ("loop", "loop_unfused"):
        model = time_series.brownian_motion(
            num_steps, innovation_scale=INNOVATION_SCALE, observation_scale=OBSERVATION_SCALE,
            observed_steps=steps.tolist(), dtype=np.float32)
        return model.experimental_pin(obs=data)
    if form != "chain":
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    scale = jnp.float32(INNOVATION_SCALE)

    def program():
        x = yield tfd.MarkovChain(tfd.Normal(jnp.float32(0.0), scale),
                                  lambda _, previous: tfd.Normal(previous, scale), num_steps,
                                  name="x")
        yield tfd.Independent(tfd.Normal(x[..., steps], jnp.float32(OBSERVATION_SCALE)), 1,
                              name="obs")

    return tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(obs=data)


# ---------------------------------------------------------------------------- methods


class Stepper(NamedTuple):
    """A jitted VI step: ``state, loss = step(state, key)``."""

    step: Callable[[Any, Any], tuple[Any, Any]]
    state: Any


def _tfp_stepper(pinned: Any, init_fn: Any, build_fn: Any, settings: Settings,
                 compiler_options: Optional[dict[str, Any]] = None) -> Stepper:
    import functools

    import jax
    import optax
    from tensorflow_probability.substrates import jax as tfp

    optimizer = optax.adam(settings.learning_rate)
    params = init_fn(jax.random.key(0))

    def loss_fn(params, key):
        return tfp.vi.monte_carlo_variational_loss(
            pinned.unnormalized_log_prob, build_fn(params),
            sample_size=settings.sample_size, seed=key)

    @functools.partial(jax.jit, compiler_options=compiler_options)
    def step(state, key):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return Stepper(step, (params, optimizer.init(params)))


def _numpyro_stepper(pinned: Any, settings: Settings) -> Stepper:
    import jax
    import numpyro
    import numpyro.distributions as ndist
    import optax
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoIAFNormal
    from numpyro.optim import optax_to_numpyro

    from emf_jax.internal import flat_latent_layout

    layout = flat_latent_layout(pinned)
    unflatten = layout.unflatten_bijector()  # the bridge is unconstrained: no support map

    def model():
        u = numpyro.sample("u", ndist.ImproperUniform(ndist.constraints.real, (),
                                                      (layout.total_size,)))
        numpyro.factor("log_density", pinned.unnormalized_log_prob(unflatten.forward(u)))

    guide = AutoIAFNormal(model, num_flows=2, hidden_dims=list(settings.hidden))
    svi = SVI(model, guide, optax_to_numpyro(optax.adam(settings.learning_rate)),
              Trace_ELBO(num_particles=settings.sample_size))
    state = svi.init(jax.random.key(0))
    update = jax.jit(svi.update)

    def step(state, key):
        del key  # NumPyro's SVI state carries its own key
        return update(state)

    return Stepper(step, state)


def make_stepper(method: str, pinned: Any, settings: Settings, *,
                 compiler_options: Optional[dict[str, Any]] = None) -> Stepper:
    """The jitted VI step of `method` on `pinned` (XLA `compiler_options` for emf_jax/TFP)."""
    import emf_jax
    from emf_jax.baselines import build_asvi_surrogate_stateless

    if method in ("gemf-t", "backbone"):
        init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
            pinned, architecture="gemf-t" if method == "gemf-t" else "flow", backbone="iaf",
            num_backbone_layers=2, hidden_units=settings.hidden)
        return _tfp_stepper(pinned, init_fn, build_fn, settings, compiler_options)
    if method == "asvi":
        init_fn, build_fn = build_asvi_surrogate_stateless(pinned)
        return _tfp_stepper(pinned, init_fn, build_fn, settings)
    if method == "autoiaf":
        return _numpyro_stepper(pinned, settings)
    raise ValueError(f"unknown method {method!r}")


def _block(tree: Any) -> None:
    import jax
    jax.block_until_ready(tree)


class Clock:
    """Wall time and this process's CPU time since it was made.

    The machine may be shared: CPU time (all of this process's threads) is what the work
    itself costs, wall time what a user waits.
    """

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def first_call(stepper: Stepper) -> tuple[Stepper, tuple[float, float]]:
    """Runs the first (compiling) call; returns the stepper and its (wall, CPU) seconds."""
    import jax
    clock = Clock()
    state, loss = stepper.step(stepper.state, jax.random.key(1))
    _block((state, loss))
    return stepper._replace(state=state), clock.read()


def timed_steps(stepper: Stepper, num_steps: int) -> tuple[Stepper, tuple[float, float], float]:
    """Runs `num_steps` steps: the stepper, (wall, CPU) seconds per step, the last loss."""
    import jax
    keys = jax.random.split(jax.random.key(2), num_steps)
    state = stepper.state
    _block(keys)
    clock = Clock()
    for key in keys:
        state, loss = stepper.step(state, key)
    _block((state, loss))
    wall, cpu = clock.read()
    return stepper._replace(state=state), (wall / num_steps, cpu / num_steps), float(loss)


# ------------------------------------------------------------------------ speed table


def speed_table(settings: Settings) -> list[dict[str, Any]]:
    """Measures every (model, method) of the speed table in this process."""
    rows: list[dict[str, Any]] = []
    for num_steps, form in settings.speed_models:
        pinned = bridge(num_steps, form)
        steppers: dict[str, Stepper] = {}
        for method in METHODS:
            row = {"T": num_steps, "form": form, "method": method}
            rows.append(row)
            if method == "asvi" and form == "chain":
                row["note"] = "n/a: TFP's ASVI has no surrogate for tfd.MarkovChain"
                continue
            clock = Clock()
            try:
                stepper = make_stepper(method, pinned, settings)
            except ImportError as err:  # NumPyro is an optional dependency
                row["note"] = f"n/a: {err}"
                continue
            row["build_s"], row["build_cpu_s"] = clock.read()
            stepper, (row["compile_s"], row["compile_cpu_s"]) = first_call(stepper)
            stepper, _, _ = timed_steps(stepper, max(3, settings.steps // 10))  # warm-up
            steppers[method] = stepper
            print(f"  T={num_steps} {form:5s} {method:9s} build {row['build_s']:6.2f} s "
                  f"(CPU {row['build_cpu_s']:6.2f} s)  compile {row['compile_s']:6.2f} s "
                  f"(CPU {row['compile_cpu_s']:6.2f} s)", flush=True)
        per_step: dict[str, list[tuple[float, float]]] = {m: [] for m in steppers}
        for _ in range(settings.rounds):
            for method, stepper in steppers.items():
                steppers[method], seconds, loss = timed_steps(stepper, settings.steps)
                per_step[method].append(seconds)
                if not np.isfinite(loss):
                    print(f"  warning: {method} loss {loss}", flush=True)
        for row in rows:
            if row["T"] == num_steps and row["form"] == form and row["method"] in per_step:
                walls, cpus = zip(*per_step[row["method"]])
                # The fastest round is the least disturbed by other jobs on the machine.
                row["ms_per_step"] = 1e3 * min(walls)
                row["cpu_ms_per_step"] = 1e3 * min(cpus)
                row["ms_median"] = 1e3 * statistics.median(walls)
                row["steps_per_s"] = 1e3 / row["ms_per_step"]
        by_method = {r["method"]: r for r in rows
                     if r["T"] == num_steps and r["form"] == form and "ms_per_step" in r}
        for row in by_method.values():
            for ref, key in (("backbone", "vs_backbone"), ("autoiaf", "vs_autoiaf")):
                if ref in by_method:
                    row[key] = row["ms_per_step"] / by_method[ref]["ms_per_step"]
                    row[key + "_cpu"] = (row["cpu_ms_per_step"]
                                         / by_method[ref]["cpu_ms_per_step"])
        print(format_speed_table([r for r in rows if r["T"] == num_steps and r["form"] == form]),
              flush=True)
    return rows


def _fmt(value: Optional[float], digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def format_speed_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| model | method | build s (CPU s) | compile s (CPU s) | ms/step (CPU ms) | "
             "steps/s | × backbone step (CPU) | × AutoIAFNormal step (CPU) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        model = f"bridge T={r['T']} ({r['form']})"
        name = METHOD_NAMES[r["method"]]
        if "note" in r:
            lines.append(f"| {model} | {name} | {r['note']} | | | | | |")
            continue

        def pair(key: str, digits: int = 2, suffix: str = "", r: dict = r) -> str:
            cpu = key.replace("_s", "_cpu_s") if key.endswith("_s") else key + "_cpu"
            if key == "ms_per_step":
                cpu = "cpu_ms_per_step"
            return (f"{_fmt(r.get(key), digits, suffix)} "
                    f"({_fmt(r.get(cpu), digits, suffix)})")

        lines.append(
            f"| {model} | {name} | {pair('build_s', 1)} | {pair('compile_s', 1)} | "
            f"{pair('ms_per_step', 3)} | {_fmt(r.get('steps_per_s'), 0)} | "
            f"{pair('vs_backbone', 2, '×')} | {pair('vs_autoiaf', 2, '×')} |")
    return "\n".join(lines)


# ----------------------------------------------------------------- compile-time table


def _import_everything() -> None:
    """Imports the libraries up front, so that no measured time includes an import."""
    import jax  # noqa: F401
    import optax  # noqa: F401
    from tensorflow_probability.substrates import jax as tfp  # noqa: F401

    import emf_jax  # noqa: F401
    import emf_jax.baselines  # noqa: F401
    import emf_jax.models  # noqa: F401
    try:
        import numpyro  # noqa: F401
    except ImportError:
        pass


def _limit_memory(gigabytes: float) -> None:
    """Caps this process's address space, so that a huge compilation fails here instead of
    pushing the shared machine out of memory."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return
    limit = int(gigabytes * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def compile_worker(num_steps: int, form: str, settings: Settings) -> dict[str, float]:
    """Build and first-call time of the GEMF-T step (run in a fresh process)."""
    _import_everything()
    clock = Clock()
    pinned = bridge(num_steps, form)
    stepper = make_stepper("gemf-t", pinned, settings,
                           compiler_options=NO_FUSION if form == "loop_unfused" else None)
    build, build_cpu = clock.read()
    stepper, (compile_s, compile_cpu) = first_call(stepper)
    _, (seconds, cpu_seconds), _ = timed_steps(stepper, 10)
    return {"build_s": build, "build_cpu_s": build_cpu, "compile_s": compile_s,
            "compile_cpu_s": compile_cpu, "ms_per_step": 1e3 * seconds,
            "cpu_ms_per_step": 1e3 * cpu_seconds}


def compile_table(settings: Settings, argv_settings: list[str],
                  forms: Sequence[str] = FORMS) -> list[dict[str, Any]]:
    rows = []
    for form in forms:
        exceeded_at = None
        for num_steps in settings.compile_steps:
            row: dict[str, Any] = {"T": num_steps, "form": form}
            rows.append(row)
            if exceeded_at is not None:
                row["note"] = f"not run (T = {exceeded_at} already failed or timed out)"
                continue
            cmd = [sys.executable, "-m", "benchmarks.speed", "--compile-worker",
                   str(num_steps), form, *argv_settings]
            start = time.perf_counter()
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=settings.compile_timeout,
                                      cwd=Path(__file__).resolve().parent.parent)
            except subprocess.TimeoutExpired:
                row["timeout"] = settings.compile_timeout
                exceeded_at = num_steps
                print(f"  T={num_steps} {form}: > {settings.compile_timeout:.0f} s", flush=True)
                continue
            row["process_s"] = time.perf_counter() - start
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
                row["note"] = ("out of memory (over the cap per process)" if "bad_alloc" in last
                               or "MemoryError" in last else "failed: " + last[:200])
                exceeded_at = num_steps
                print(f"  T={num_steps} {form}: {row['note']}", flush=True)
                continue
            row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"  T={num_steps} {form}: build {row['build_s']:.2f} s (CPU "
                  f"{row['build_cpu_s']:.2f} s), first call {row['compile_s']:.2f} s (CPU "
                  f"{row['compile_cpu_s']:.2f} s), {row['ms_per_step']:.3f} ms/step",
                  flush=True)
    return rows


def format_compile_table(rows: Sequence[dict[str, Any]], steps: Sequence[int]) -> str:
    header = "| form | " + " | ".join(f"T = {t}" for t in steps) + " |"
    lines = [header, "|---|" + "---|" * len(steps)]
    for form, label in FORM_NAMES.items():
        if not any(r["form"] == form for r in rows):
            continue
        cells = []
        for t in steps:
            r = next((r for r in rows if r["T"] == t and r["form"] == form), None)
            if r is None:
                cells.append("not run")
                continue
            if "timeout" in r:
                cells.append(f"> {r['timeout']:.0f} s")
            elif "note" in r:
                cells.append(r["note"])
            else:
                cells.append(f"{r['build_s']:.1f} + {r['compile_s']:.1f} s "
                             f"(CPU {r['build_cpu_s']:.1f} + {r['compile_cpu_s']:.1f} s)")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- report


def machine() -> str:
    import jax
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return (f"{cpu}, {os.cpu_count()} cores visible, JAX devices: {devices} "
            f"(load average at the end: {load})")


def versions() -> str:
    import importlib.metadata as md
    names = ("jax", "jaxlib", "tfp-nightly", "optax", "numpyro")
    found = []
    for name in names:
        try:
            found.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(found)


def goals(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's goals checked against the measured rows (CPU-time ratios, wall in brackets)."""
    lines = ["### Against the goals", ""]
    for r in rows:
        if r["method"] != "gemf-t" or "vs_backbone" not in r:
            continue
        model = f"bridge T={r['T']} ({r['form']})"
        lines.append(
            f"- {model}: GEMF-T step / backbone step = {r['vs_backbone_cpu']:.2f}× CPU "
            f"({r['vs_backbone']:.2f}× wall), goal ≤ 1.2×: "
            f"{'met' if r['vs_backbone_cpu'] <= 1.2 else 'not met'}; GEMF-T step / "
            f"AutoIAFNormal step = {r.get('vs_autoiaf_cpu', float('nan')):.2f}× CPU "
            f"({r.get('vs_autoiaf', float('nan')):.2f}× wall), goal ≤ 1: "
            f"{'met' if r.get('vs_autoiaf_cpu', 9) <= 1.0 else 'not met'}; build + compile "
            f"{r['build_cpu_s'] + r['compile_cpu_s']:.1f} s CPU "
            f"({r['build_s'] + r['compile_s']:.1f} s wall)"
            + (", goal ≤ 10 s: "
               f"{'met' if r['build_cpu_s'] + r['compile_cpu_s'] <= 10 else 'not met'} "
               "in CPU time" if r["T"] == 30 else "") + ".")
    return lines + [""]


def write_report(settings: Settings, speed_rows: Optional[list], compile_rows: Optional[list],
                 path: Path, notes: Sequence[str] = ()) -> None:
    parts = [
        "# Speed: jitted VI step, compile time, compile time against T",
        "",
        "Written by `python -m benchmarks.speed" + (" --quick" if settings.quick else "") +
        "`; see the module docstring for the method.",
        "",
        f"- Machine: {machine()}.",
        "- No GPU was lent to this session: every number is from the CPU above, which other "
        "jobs shared while it ran: wall times are inflated by the load, CPU times much less "
        "so; ratios are measured in the same process, in alternating rounds.",
        f"- Versions: {versions()}.",
        f"- Settings: hidden units {list(settings.hidden)} (every method), 2 autoregressive "
        f"layers, {settings.sample_size} Monte Carlo draws per step, Adam "
        f"({settings.learning_rate:g}), float32; {settings.rounds} rounds of {settings.steps} "
        "steps per method, the fastest round reported (wall and this process's CPU time; the "
        "median wall time is listed below the table).",
        "",
    ]
    if speed_rows is not None:
        parts += [
            "## Steps per second and compile time",
            "",
            "build: building the surrogate (the model's trace included); compile: the first "
            "call of the jitted step (tracing, lowering, XLA compilation, one step); "
            "× columns: this method's step time over the backbone's / AutoIAFNormal's on the "
            "same model (below 1 is faster).",
            "",
            format_speed_table(speed_rows),
            "",
        ]
        medians = [f"{METHOD_NAMES[r['method']]} T={r['T']} {r['form']}: {r['ms_median']:.3f}"
                   for r in speed_rows if "ms_median" in r]
        if medians:
            parts += ["Median wall ms/step over the rounds: " + ", ".join(medians) + ".", ""]
        parts += goals(speed_rows)
    if compile_rows is not None:
        parts += [
            "## Compile time of the GEMF-T step against the number of steps T",
            "",
            "Each cell: build s + first-call s (wall, then this process's CPU time) of the "
            "GEMF-T step on the Brownian bridge, in a fresh process, under a wall-time limit "
            "per process (--compile-timeout, 600 s by default; a cell \"> N s\" ran past "
            "its limit N).",
            "",
            format_compile_table(compile_rows, settings.compile_steps),
            "",
        ]
    if notes:
        parts += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))


# ------------------------------------------------------------------------------ main


def _settings_args(args: argparse.Namespace) -> list[str]:
    out = ["--hidden", *[str(h) for h in args.hidden], "--sample-size", str(args.sample_size),
           "--worker-memory-gb", str(args.worker_memory_gb)]
    return out + (["--quick"] if args.quick else [])


def parse(argv: Optional[Sequence[str]] = None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--hidden", type=int, nargs="+", default=None,
                        help="hidden units of every autoregressive network (default 512 512)")
    parser.add_argument("--sample-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=None, help="steps per timing round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compile-timeout", type=float, default=None,
                        help="seconds per compile-table process (default 600)")
    parser.add_argument("--skip-speed-table", action="store_true")
    parser.add_argument("--skip-compile-table", action="store_true")
    parser.add_argument("--compile-forms", nargs="+", choices=FORMS, default=list(FORMS),
                        help="forms measured in the compile table (others keep their rows)")
    parser.add_argument("--compile-worker", nargs=2, metavar=("T", "FORM"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--worker-memory-gb", type=float, default=8.0,
                        help="address-space cap of each compile-table process")
    args = parser.parse_args(argv)
    quick = args.quick
    args.hidden = args.hidden or ([32, 32] if quick else [512, 512])
    settings = Settings(
        hidden=tuple(args.hidden), sample_size=args.sample_size, learning_rate=1e-3,
        steps=args.steps or (20 if quick else 200), rounds=2 if quick else args.rounds,
        speed_models=((30, "loop"), (30, "chain")) if quick else
        ((30, "loop"), (30, "chain"), (300, "chain")),
        compile_steps=(30, 100) if quick else (30, 100, 300, 1000),
        compile_timeout=args.compile_timeout or (120.0 if quick else 600.0), quick=quick)
    return args, settings


def main(argv: Optional[Sequence[str]] = None) -> None:
    args, settings = parse(argv)
    if args.compile_worker:
        _limit_memory(args.worker_memory_gb)
        result = compile_worker(int(args.compile_worker[0]), args.compile_worker[1], settings)
        print(json.dumps(result))
        return
    speed_rows = compile_rows = None
    _import_everything()
    if not args.skip_speed_table:
        print("speed table", flush=True)
        speed_rows = speed_table(settings)
    if not args.skip_compile_table:
        print("compile time against T", flush=True)
        compile_rows = compile_table(settings, _settings_args(args), args.compile_forms)
        print(format_compile_table(compile_rows, settings.compile_steps), flush=True)
    path = RESULTS_DIR / ("speed_quick.md" if settings.quick else "speed.md")
    # A table skipped in this run keeps its last measured rows (kept beside the report).
    store = path.with_suffix(".json")
    previous = json.loads(store.read_text()) if store.exists() else {}
    speed_rows = previous.get("speed") if speed_rows is None else speed_rows
    if compile_rows is None:
        compile_rows = previous.get("compile")
    else:  # Forms not measured in this run keep their last rows.
        compile_rows = [r for r in previous.get("compile") or []
                        if r["form"] not in args.compile_forms] + compile_rows
    notes = previous.get("notes", [])
    store.write_text(json.dumps({"speed": speed_rows, "compile": compile_rows, "notes": notes},
                                indent=1))
    write_report(settings, speed_rows, compile_rows, path, notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
