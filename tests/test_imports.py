"""The house rules on imports (shared/design.md), checked on the source without importing it.

- The core (tracing, transforms, gates, apply, structured) imports nothing from the rooms
  above it: surrogates, density, training, architectures, benchmarks.
- flows/ knows nothing of models or tracing.
- The package never imports benchmarks/ or tests/.
- The package has no import cycle between its modules.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "emf_jax"

CORE = ("emf_jax.tracing", "emf_jax.transforms", "emf_jax.gates", "emf_jax.apply",
        "emf_jax.structured")
ABOVE_CORE = ("emf_jax.surrogates", "emf_jax.density", "emf_jax.training",
              "emf_jax.architectures", "emf_jax.distribution", "emf_jax.baselines",
              "benchmarks")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every module that `path` imports at module level or inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            # `from emf_jax import gates` imports the submodule emf_jax.gates.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph(root: Path) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_core_imports_nothing_from_the_rooms_above_it():
    offenders = {}
    for name, path in ((_module_name(p), p) for p in PACKAGE.rglob("*.py")):
        if not _within(name, CORE):
            continue
        bad = sorted(m for m in _imports(path) if _within(m, ABOVE_CORE))
        if bad:
            offenders[name] = bad
    assert not offenders, f"core modules import from above the core: {offenders}"


def test_flows_know_nothing_of_models_or_tracing():
    for path in (PACKAGE / "flows").rglob("*.py"):
        bad = sorted(m for m in _imports(path)
                     if m.startswith("emf_jax.") and not m.startswith("emf_jax.flows"))
        assert not bad, f"{_module_name(path)} imports {bad}"


def test_the_package_never_imports_benchmarks_or_tests():
    for path in PACKAGE.rglob("*.py"):
        bad = sorted(m for m in _imports(path) if _within(m, ("benchmarks", "tests")))
        assert not bad, f"{_module_name(path)} imports {bad}"


def test_no_import_cycles():
    """Neither the package nor the benchmarks (function-level imports included) has a cycle."""
    for root in (PACKAGE, PACKAGE.parent / "benchmarks"):
        _check_acyclic(_graph(root))


def _check_acyclic(graph: dict[str, set[str]]) -> None:
    # Package __init__ files re-export their submodules: an edge from a package to its own
    # submodule is not a cycle of the design, so those are left out.
    graph = {n: {m for m in deps if not m.startswith(n + ".")} for n, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_checker_sees_a_cycle(tmp_path):
    """The cycle check can fail: a two-module cycle written to a temporary package."""
    package = tmp_path / "emf_jax"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from emf_jax import b\n")
    (package / "b.py").write_text("from emf_jax.a import x\n")
    globals()["PACKAGE"] = package
    try:
        with pytest.raises(pytest.fail.Exception, match="import cycle"):
            test_no_import_cycles()
    finally:
        globals()["PACKAGE"] = Path(__file__).resolve().parents[1] / "emf_jax"
