"""Shared pytest configuration."""
import os

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

# XLA's CPU backend compilation (LLVM) dominates most tests: each builds a small program,
# runs it once or a few times, and moves on. Backend optimisation level 0 without LLVM's
# expensive passes compiles such programs markedly faster and computes the same values
# (XLA's CPU backend does not enable fast-math, so the arithmetic is IEEE either way; only
# the generated machine code is less tuned). tests/test_docs.py and tests/test_baselines.py
# used this for their subprocesses and fits before; here it covers the whole suite and, by
# inheritance of the environment, its subprocesses (two-process and sharding tests). Set
# EMF_TEST_XLA_OPTIMIZE=1 to run the suite with XLA's default optimisation instead.
# (Set before JAX initialises its backend: XLA reads XLA_FLAGS once.)
_FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0",
                       "--xla_llvm_disable_expensive_passes=true")
if os.environ.get("EMF_TEST_XLA_OPTIMIZE", "") not in ("1", "true"):
    _flags = os.environ.get("XLA_FLAGS", "").split()
    _flags += [f for f in _FAST_COMPILE_FLAGS if f.split("=")[0] not in
               {g.split("=")[0] for g in _flags}]
    os.environ["XLA_FLAGS"] = " ".join(_flags)

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def x64():
    """Runs a test with float64 enabled, restoring the previous setting afterwards."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
