"""Smoke tests: the demo command and every benchmark script run end to end at a tiny budget.

Each test calls the script's ``main`` in this process with the smallest options it has (a
few optimisation steps, tiny networks, one seed), redirects its output into ``tmp_path`` so
that `benchmarks/results/` is never touched, and checks that the table it writes has a row
per method with finite numbers. They catch a broken command line, import or table writer;
the numbers themselves are not checked (the benchmarks are not tests). The VI benchmark's
quick mode and its NumPyro peers are tested in tests/test_vi_benchmark.py. Scripts whose
smallest run compiles many programs (about a minute or more on a 2-core machine) are marked
``slow``.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

_NUMBER = re.compile(r"-?\d+\.\d+")


def _table_rows(text: str) -> list[str]:
    """The body rows of every Markdown table in `text`."""
    return [line for line in text.splitlines()
            if line.startswith("|") and not set(line) <= set("|-: ")
            and not line.startswith("| method") and not line.startswith("| model")]


def _assert_finite_rows(text: str, labels: list[str]) -> None:
    rows = _table_rows(text)
    for label in labels:
        matching = [r for r in rows if label in r]
        assert matching, f"no table row for {label!r} in:\n{text}"
        numbers = [float(x) for r in matching for x in _NUMBER.findall(r)]
        assert numbers and all(math.isfinite(x) for x in numbers), (
            f"row for {label!r} lacks finite numbers: {matching}")


def test_the_demo_command_runs_and_writes_its_figure(tmp_path, capsys):
    from emf_jax import __main__ as demo

    out = tmp_path / "demo.png"
    results = demo.main(["--steps", "2", "--no-progress", "--methods", "mean field",
                         "--out", str(out)])
    assert set(results) == {"mean field"}
    assert math.isfinite(results["mean field"]["elbo"])
    assert out.stat().st_size > 0, "the demo wrote no figure"
    assert "mean field" in capsys.readouterr().out


@pytest.mark.slow
def test_the_demo_command_with_every_method(tmp_path):
    """The README's command as a user runs it (four surrogates; about 1.5 min on 2 cores)."""
    import subprocess
    import sys

    out = tmp_path / "demo.png"
    proc = subprocess.run([sys.executable, "-m", "emf_jax", "--steps", "2", "--no-progress",
                           "--out", str(out)], capture_output=True, text=True, timeout=900,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("mean field", "ASVI", "IAF", "GEMF-T"):
        assert re.search(rf"^{re.escape(name)}\s+-?\d", proc.stdout, re.MULTILINE), proc.stdout
    assert out.stat().st_size > 0


@pytest.mark.parametrize("methods", [
    ["flow"],
    # GEMF-T's gate candidates and Gaussian pilot compile several programs: minutes on 2 cores.
    pytest.param(["flow", "gemf-t"], marks=pytest.mark.slow),
])
def test_architectures_benchmark(tmp_path, methods):
    from benchmarks import architectures

    out = tmp_path / "architectures.md"
    architectures.main(["--methods", *methods, "--seeds", "1", "--steps", "2",
                        "--hidden-units", "4", "4", "--out", str(out)])
    _assert_finite_rows(out.read_text(), methods)


def test_mif_benchmark(tmp_path):
    from benchmarks import mif

    mif.main(["--quick", "--targets", "eight_schools_noncentered", "--methods", "mif", "vip",
              "--seeds", "1", "--out-dir", str(tmp_path)])
    _assert_finite_rows((tmp_path / "mif_quick.md").read_text(), ["eight_schools_noncentered"])


def test_neutra_benchmark():
    from benchmarks import neutra

    text = neutra.main(["--smoke", "--dim", "3"])
    _assert_finite_rows(text, ["HMC (model coordinates)", "NeuTra HMC on GEMF-T noise"])


def test_density_benchmark(tmp_path, monkeypatch):
    from benchmarks import density

    monkeypatch.setattr(density, "RESULTS_DIR", tmp_path)
    density.main(["--quick", "--datasets", "brownian_motion", "--methods", "maf", "gemf-t",
                  "--seeds", "1", "--steps", "2", "--train-size", "200", "--test-size", "100",
                  "--hidden-units", "4", "4", "--tag", "smoke"])
    _assert_finite_rows((tmp_path / "density_smoke.md").read_text(), ["Brownian motion"])


@pytest.mark.slow
def test_density_generalization_benchmark(tmp_path, monkeypatch):
    from benchmarks import density

    monkeypatch.setattr(density, "RESULTS_DIR", tmp_path)
    density.main(["--generalization", "--gen-datasets", "nonlinear_drift", "--methods", "maf",
                  "--steps", "2", "--train-size", "200", "--valid-size", "50",
                  "--test-size", "100", "--tag", "smoke"])
    text = (tmp_path / "density_smoke.md").read_text()
    _assert_finite_rows(text, ["MAF"])
    assert "beyond exact" in text


@pytest.mark.slow
def test_density_pilot_cost_benchmark(tmp_path, monkeypatch):
    from benchmarks import density, density_pilot_cost

    monkeypatch.setattr(density_pilot_cost, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(density_pilot_cost, "GEN_TRAIN_SIZE", 200)
    monkeypatch.setattr(density_pilot_cost, "GEN_VALID_SIZE", 50)
    assert density.GEN_TRAIN_SIZE == 2700  # the module's own sizes stay
    text = density_pilot_cost.main(["--dataset", "nonlinear_drift", "--steps", "100"])
    assert (tmp_path / "density_pilot_cost.md").read_text() == text
    _assert_finite_rows(text, ["without pilot", "with pilot"])


def test_density_drift_benchmark(tmp_path, monkeypatch):
    from benchmarks import density_drift

    monkeypatch.setattr(density_drift, "RESULTS_DIR", tmp_path)
    text = density_drift.main(["--variants", "maf", "--steps", "2"])
    assert (tmp_path / "density_drift_partial.md").read_text() == text
    _assert_finite_rows(text.replace("| nan |", "|"), ["maf"])


@pytest.mark.slow
def test_structured_benchmark(tmp_path, monkeypatch):
    """Its accuracy table jit-compiles every family at every parameter case (minutes)."""
    from benchmarks import structured

    monkeypatch.setattr(structured, "RESULTS_DIR", tmp_path)
    structured.main(["--quick", "--tables", "accuracy", "--output", "structured_smoke.md"])
    text = (tmp_path / "structured_smoke.md").read_text()
    assert "Float32 accuracy" in text and _table_rows(text), text


@pytest.mark.slow
def test_speed_benchmark(tmp_path, monkeypatch):
    """Its quick speed table compiles eight programs, ASVI's alone for about 30 s."""
    pytest.importorskip("numpyro")
    from benchmarks import speed

    monkeypatch.setattr(speed, "RESULTS_DIR", tmp_path)
    speed.main(["--quick", "--skip-compile-table", "--steps", "2", "--rounds", "1"])
    _assert_finite_rows((tmp_path / "speed_quick.md").read_text(), ["GEMF-T"])


@pytest.mark.slow
def test_robustness_benchmark(tmp_path, monkeypatch):
    """Eight fits of the stochastic-volatility model (four surrogates, two fitters)."""
    from benchmarks import robustness

    monkeypatch.setattr(robustness, "RESULTS", tmp_path)
    robustness.main(["--steps", "2", "--label", "smoke"])
    assert (tmp_path / "robustness_smoke.json").exists()
    assert "gemf-t" in (tmp_path / "robustness.md").read_text()


@pytest.mark.slow
def test_house_speed_benchmark_against_this_checkout(tmp_path, monkeypatch):
    """Two fresh processes, each compiling the demo's GEMF-T step (512-512)."""
    from benchmarks import house_speed

    monkeypatch.setattr(house_speed, "RESULTS", tmp_path)
    text = house_speed.main(["--against", str(house_speed.REPO), "--rounds", "1"])
    _assert_finite_rows(text, ["before", "after"])
