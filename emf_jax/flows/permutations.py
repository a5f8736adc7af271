"""Fixed permutations of the event dimensions (volume preserving, log-det 0).

A permutation is a NumPy int array ``perm`` of shape ``[D]``; applying it maps
``x -> x[..., perm]``. It is a static constant, never a parameter.
"""
from __future__ import annotations

from typing import Sequence, Union

import jax.numpy as jnp
import numpy as np

from emf_jax.flows.base import Array, Flow, Params, check_input, no_params, validate_event_size

__all__ = [
    "reverse_permutation",
    "random_permutation",
    "inverse_permutation",
    "resolve_permutation",
    "permutation_flow",
]

PermutationSpec = Union[str, Sequence[int], np.ndarray, None]


def reverse_permutation(event_size: int) -> np.ndarray:
    """The permutation that reverses the event: ``[D-1, ..., 1, 0]``.

    Args:
      event_size: ``D``, a positive integer.

    Returns:
      An integer NumPy array of shape ``[D]``.

    Example:
      >>> reverse_permutation(3).tolist()
      [2, 1, 0]
    """
    return np.arange(validate_event_size(event_size))[::-1].copy()


def random_permutation(event_size: int, *, seed: int = 0) -> np.ndarray:
    """A fixed pseudo-random permutation of ``range(event_size)``, reproducible from ``seed``.

    Args:
      event_size: ``D``, a positive integer.
      seed: seed of ``np.random.default_rng``.

    Returns:
      An integer NumPy array of shape ``[D]``.

    Example:
      >>> sorted(random_permutation(4, seed=1).tolist())
      [0, 1, 2, 3]
    """
    return np.random.default_rng(seed).permutation(validate_event_size(event_size))


def inverse_permutation(permutation: Sequence[int] | np.ndarray) -> np.ndarray:
    """The permutation ``inv`` with ``x[..., perm][..., inv] == x``.

    Args:
      permutation: a permutation of ``range(D)``.

    Returns:
      Its inverse, an integer NumPy array of shape ``[D]``.

    Example:
      >>> inverse_permutation([2, 0, 1]).tolist()
      [1, 2, 0]
    """
    return np.argsort(np.asarray(permutation))


def _validate_permutation(permutation: Sequence[int] | np.ndarray, event_size: int) -> np.ndarray:
    perm = np.asarray(permutation)
    if (perm.shape != (event_size,) or not np.issubdtype(perm.dtype, np.integer)
            or sorted(perm.tolist()) != list(range(event_size))):
        raise ValueError(
            f"permutation must be a permutation of range({event_size}), got {permutation!r}")
    return perm.astype(np.int64)


def resolve_permutation(spec: PermutationSpec, event_size: int, *, seed: int = 0
                        ) -> np.ndarray | None:
    """Turns a permutation option into an index array (or ``None`` for no permutation).

    Args:
      spec: ``"reverse"``, ``"random"`` (fixed, from ``seed``), ``None``/``"none"``, or an
        explicit permutation of ``range(event_size)``.
      event_size: ``D``.
      seed: seed of the ``"random"`` permutation.

    Returns:
      An int array of shape ``[D]``, or ``None``.

    Example:
      >>> resolve_permutation("reverse", 2).tolist()
      [1, 0]
    """
    event_size = validate_event_size(event_size)
    if spec is None or (isinstance(spec, str) and spec == "none"):
        return None
    if isinstance(spec, str):
        if spec == "reverse":
            return reverse_permutation(event_size)
        if spec == "random":
            return random_permutation(event_size, seed=seed)
        raise ValueError(f"permutation must be 'reverse', 'random', 'none', None or a sequence "
                         f"of indices, got {spec!r}")
    return _validate_permutation(spec, event_size)


def permutation_flow(permutation: Sequence[int] | np.ndarray) -> Flow:
    """The flow ``y = x[..., perm]``; ``x = y[..., argsort(perm)]``; log-det 0; no parameters.

    Args:
      permutation: a permutation of ``range(D)``.

    Returns:
      A `Flow` with empty (``{}``) parameters.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> flow = permutation_flow([1, 0])
      >>> flow.forward_and_log_det({}, jnp.array([1.0, 2.0]))[0].tolist()
      [2.0, 1.0]
    """
    perm = np.asarray(permutation)
    event_size = validate_event_size(perm.size if perm.ndim == 1 else 0, "len(permutation)")
    perm = _validate_permutation(perm, event_size)
    inv = inverse_permutation(perm)

    def forward_and_log_det(params: Params, x: Array) -> tuple[Array, Array]:
        del params
        x = check_input(x, event_size)
        return x[..., perm], jnp.zeros(x.shape[:-1], x.dtype)

    def inverse_and_log_det(params: Params, y: Array) -> tuple[Array, Array]:
        del params
        y = check_input(y, event_size, "y")
        return y[..., inv], jnp.zeros(y.shape[:-1], y.dtype)

    return Flow(no_params, forward_and_log_det, inverse_and_log_det, event_size)
