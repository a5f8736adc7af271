"""The documentation: the site builds strictly, the notebooks run, the docstring examples pass.

- `test_docs_site_builds`: ``mkdocs build --strict`` with the repository's ``mkdocs.yml``, in a
  subprocess, into a temporary directory (the API pages are generated from the docstrings).
- `test_notebook_runs`: every notebook of ``notebooks/`` executed by nbclient in a fresh
  kernel, with a handful of training steps (``EMF_NOTEBOOK_STEPS``). These are smoke runs:
  they check that every cell runs (and the notebooks' own assertions), not the quality of
  the fits. Compilation dominates them, so XLA's backend optimisation is turned off in the
  kernel. All four run in the default suite.
- `test_notebooks_are_committed_clean`: no outputs in the committed notebooks, and each one
  reads its step count from ``EMF_NOTEBOOK_STEPS``.
- `test_doctests`: the examples in the docstrings of every ``emf_jax`` module, run by
  ``pytest --doctest-modules`` in two subprocesses (two tests, so ``pytest -n 2`` runs them
  side by side), also with XLA's backend optimisation off: compilation dominates the
  examples, and the level does not change the values they print (checked when this was
  written: the same examples pass at both levels).
- `test_public_names_have_args_returns_and_example`: the house rule for docstrings, checked
  without running anything: every public function and class of every public ``emf_jax``
  module has an ``Example`` (which `test_doctests` runs), and every function documents its
  ``Args:`` and its ``Returns:`` (or ``Yields:``).
"""
from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
NOTEBOOK_STEPS = "5"
PACKAGE_DIR = ROOT / "emf_jax"
NUM_DOCTEST_GROUPS = 2


def _fast_compile_env() -> dict[str, str]:
    """The environment for subprocesses whose time goes into XLA compilation."""
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    return dict(os.environ, XLA_FLAGS=flags, MPLBACKEND="Agg", JAX_PLATFORMS="cpu")


def _files_with_examples() -> list[Path]:
    """The emf_jax source files that hold a doctest (found without importing them)."""
    return [path for path in sorted(PACKAGE_DIR.rglob("*.py"))
            if ">>>" in path.read_text(encoding="utf-8")]


# ----------------------------------------------------------------------------- site


def test_docs_site_builds(tmp_path):
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict",
         "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    api = (site / "api" / "structured" / "index.html").read_text(encoding="utf-8")
    assert "build_structured_layer_stateless" in api
    # Docstring examples ("Example:" sections) render as code, prompts included.
    assert '<span class="gp">&gt;&gt;&gt; </span>' in api
    # The formula renderer ships with the site: no page loads a script from the network.
    assert (site / "assets" / "mathjax" / "tex-mml-chtml.js").stat().st_size > 100_000
    assert list((site / "assets" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
    concepts = (site / "concepts" / "index.html").read_text(encoding="utf-8")
    assert "assets/mathjax/tex-mml-chtml.js" in concepts
    assert not re.search(r'<script[^>]+src="https?://', concepts)
    # The benchmark tables of benchmarks/results/ are inlined by docs/hooks.py.
    reproducing = (site / "reproducing" / "index.html").read_text(encoding="utf-8")
    assert "eight_schools" in reproducing


# ------------------------------------------------------------------------- notebooks


def test_notebooks_found():
    assert len(NOTEBOOKS) == 4, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_are_committed_clean(path):
    import nbformat

    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    dirty = [i for i, cell in enumerate(code) if cell.outputs or cell.execution_count]
    assert not dirty, f"{path.name}: code cells {dirty} have outputs; clear them before committing"
    assert "EMF_NOTEBOOK_STEPS" in code[0].source, (
        f"{path.name}: the first code cell must read the step count from EMF_NOTEBOOK_STEPS")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # The kernel inherits this process's environment.
    for name, value in _fast_compile_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("EMF_NOTEBOOK_STEPS", NOTEBOOK_STEPS)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=600, startup_timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.outputs if output.output_type == "error"]
    assert not errors


# --------------------------------------------------------------------------- doctests


@pytest.mark.parametrize("group", range(NUM_DOCTEST_GROUPS))
def test_doctests(group):
    files = _files_with_examples()[group::NUM_DOCTEST_GROUPS]
    command = [
        sys.executable, "-m", "pytest", "--doctest-modules", "-q", "-p", "no:cacheprovider",
        "-p", "no:xdist", "-o", "addopts=", "-o", "testpaths=",
        "-o", "doctest_optionflags=ELLIPSIS NORMALIZE_WHITESPACE",
        *[str(path.relative_to(ROOT)) for path in files]]
    result = subprocess.run(command, cwd=ROOT, env=_fast_compile_env(), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
    # pytest makes one doctest item per documented object: at least one per file.
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= len(files), result.stdout[-5000:]


# ------------------------------------------------------------------------ docstrings


def _is_private_module(name: str) -> bool:
    return any(part.startswith("_") for part in name.split(".")[1:])


def _public_names(module: object) -> list[tuple[str, object]]:
    """The functions and classes a public module documents: its own, or a private module's.

    The names are `__all__` when the module defines it, else its non-underscore globals.
    Only functions and classes whose home is this module count: re-exports are checked in
    the module that defines them, and type aliases (``Array = jax.Array``) are not
    definitions. A name of `__all__` defined in a private module (e.g.
    ``emf_jax.models._common.BenchmarkTarget``) is checked where it is exported, since the
    private module itself is not walked.
    """
    exported = getattr(module, "__all__", None)
    names = exported if exported is not None else [
        name for name in vars(module) if not name.startswith("_")]
    found = []
    for name in names:
        value = getattr(module, name)
        if not (inspect.isfunction(value) or inspect.isclass(value)):
            continue
        home = getattr(value, "__module__", None) or ""
        private_home = home.startswith("emf_jax.") and _is_private_module(home)
        if home == module.__name__ or (exported is not None and private_home):
            found.append((name, value))
    return found


def _docstring_gaps(value: object) -> list[str]:
    """The sections a public function or class lacks (its own ``__doc__``, not inherited)."""
    doc = value.__doc__ or ""
    missing = [] if "Example" in doc else ["Example"]
    if inspect.isfunction(value):
        signature = inspect.signature(value)
        if signature.parameters and "Args:" not in doc:
            missing.append("Args:")
        returns_none = signature.return_annotation in (None, "None")
        if not returns_none and "Returns:" not in doc and "Yields:" not in doc:
            missing.append("Returns:")
    return missing


def test_public_names_have_args_returns_and_example():
    import emf_jax

    modules = ["emf_jax"] + [
        info.name for info in pkgutil.walk_packages(emf_jax.__path__, "emf_jax.")
        if not info.name.rsplit(".", 1)[-1].startswith("_")]
    assert len(modules) > 10, modules
    offenders: dict[str, list[str]] = {}
    checked = 0
    for module_name in modules:
        module = importlib.import_module(module_name)
        for _name, value in _public_names(module):
            checked += 1
            gaps = _docstring_gaps(value)
            if gaps:
                offenders[f"{value.__module__}.{value.__qualname__}"] = gaps
    assert checked > 100, checked
    assert not offenders, (
        f"{len(offenders)} public names lack docstring sections (every public function needs "
        "Args: (if it has parameters), Returns: or Yields: (unless annotated -> None) and an "
        "Example; every class an Example):\n" + "\n".join(
            f"  {name}: {', '.join(gaps)}" for name, gaps in sorted(offenders.items())))
