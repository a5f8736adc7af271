"""Where the CPU compile of a loop model's GEMF-T step goes: XLA's HLO passes or the backend.

Usage::

    python -m benchmarks.compile_profile --models ar --steps 30,100
    python -m benchmarks.compile_profile --models ar --steps 100 \\
        --compiler-options '{"xla_disable_hlo_passes": "fusion"}'

Why: the compile time of a Python-loop model grows faster than its number of steps
(`benchmarks.structured`, compile table). Each cell runs in a fresh process with XLA's
pass-pipeline and CPU-compiler logging on (``TF_CPP_VMODULE``) and reports, for the jitted
step only: the time of every HLO pass summed over the pipelines (largest first), the HLO
pass total, and the CPU backend's time after the passes (LLVM code generation and JIT, the
``Compiling [jit_step] for CPU using JIT`` line), with the compile's CPU seconds and the
steady step (CPU ms, mean of 20 calls). The step is that of `benchmarks.structured`
(IAF backbone, 2 layers, hidden 512-512, 16 draws) without the warm start
(``warm_start_steps=0``: its compile is not the step's). Writes
``benchmarks/results/compile_profile.md``.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
_PASS = re.compile(r"HLO pass: (\S+) time: .*?\((\d+) us\)")
_PIPELINE = re.compile(r"Running HLO pass pipeline on module (\S+):")
_BACKEND = re.compile(r"Compiling \[jit_step\] for CPU using JIT time: .*?\((\d+) us\)")


def worker(kind: str, num_steps: int, options: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Lower and compile the step in this process; the log goes to stderr."""
    import jax
    import optax
    from tensorflow_probability.substrates import jax as tfp

    import emf_jax
    from benchmarks import structured

    pinned = structured.loop_model(kind, num_steps)
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        pinned, architecture="gemf-t", backbone="iaf", num_backbone_layers=2,
        hidden_units=(512, 512), warm_start_steps=0)
    optimizer = optax.adam(1e-3)
    params = init_fn(jax.random.key(0))

    def step(state: Any, key: Any) -> Any:
        params, opt_state = state
        loss, grads = jax.value_and_grad(lambda p: tfp.vi.monte_carlo_variational_loss(
            pinned.unnormalized_log_prob, build_fn(p), sample_size=16, seed=key))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    state = (params, optimizer.init(params))
    lowered = jax.jit(step).lower(state, jax.random.key(1))
    cpu = time.process_time()
    compiled = lowered.compile(options) if options else lowered.compile()
    compile_cpu = time.process_time() - cpu
    state, loss = compiled(state, jax.random.key(1))
    jax.block_until_ready(loss)
    cpu = time.process_time()
    for i in range(20):
        state, loss = compiled(state, jax.random.key(i))
        jax.block_until_ready(loss)
    return dict(compile_cpu=compile_cpu, step_cpu_ms=(time.process_time() - cpu) / 20 * 1e3,
                loss=float(loss))


def parse_log(text: str) -> dict[str, Any]:
    """Per-pass seconds of the step's HLO pipelines and the backend's seconds after them."""
    passes: collections.Counter = collections.Counter()
    module = None
    backend = None
    for line in text.splitlines():
        if (m := _PIPELINE.search(line)) is not None:
            module = m.group(1)
        elif (m := _PASS.search(line)) is not None and module == "jit_step":
            passes[m.group(1)] += int(m.group(2)) / 1e6
        elif (m := _BACKEND.search(line)) is not None:
            backend = int(m.group(1)) / 1e6
    return dict(passes=dict(passes.most_common()), hlo_total=sum(passes.values()),
                backend=backend)


def run_cell(kind: str, num_steps: int, options: Optional[dict[str, Any]],
             timeout: float) -> dict[str, Any]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0",
               TF_CPP_VMODULE="hlo_pass_pipeline=1,cpu_compiler=1")
    cmd = [sys.executable, "-m", "benchmarks.compile_profile", "--worker", kind,
           str(num_steps), "--compiler-options", json.dumps(options)]
    wall = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} T={num_steps}: worker failed: {proc.stderr[-500:]}")
    return dict(kind=kind, T=num_steps, options=options, wall=time.perf_counter() - wall,
                **json.loads(lines[-1]), **parse_log(proc.stderr))


def format_rows(rows: Sequence[dict[str, Any]], top: int = 5) -> str:
    out = ["| model | T | options | compile CPU s | HLO passes s (wall) | backend after the "
           "passes s (wall) | largest passes s | step CPU ms |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        largest = ", ".join(f"{k} {v:.2f}" for k, v in list(r["passes"].items())[:top])
        backend = "n/a" if r["backend"] is None else f"{r['backend']:.1f}"
        out.append(f"| {r['kind']} | {r['T']} | {json.dumps(r['options'])} | "
                   f"{r['compile_cpu']:.1f} | {r['hlo_total']:.1f} | {backend} | {largest} | "
                   f"{r['step_cpu_ms']:.1f} |")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ar")
    parser.add_argument("--steps", default="30,100")
    parser.add_argument("--compiler-options", default="null",
                        help="a JSON dict passed to compile(), or null")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--worker", nargs=2, default=None, metavar=("KIND", "T"))
    parser.add_argument("--output", default="compile_profile.md")
    args = parser.parse_args(argv)
    options = json.loads(args.compiler_options)
    if args.worker is not None:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), options)), flush=True)
        return ""
    rows = []
    for kind in args.models.split(","):
        for num_steps in map(int, args.steps.split(",")):
            rows.append(run_cell(kind, num_steps, options, args.timeout))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "passes"}), flush=True)
    table = format_rows(rows)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    text = (f"# Compile profile of the GEMF-T step (`python -m benchmarks.compile_profile "
            f"{' '.join(argv if argv is not None else sys.argv[1:])}`)\n\n{table}\n")
    (RESULTS / args.output).write_text(text, encoding="utf-8")
    (RESULTS / args.output).with_suffix(".json").write_text(json.dumps(rows, indent=1),
                                                            encoding="utf-8")
    return table


if __name__ == "__main__":
    main()
