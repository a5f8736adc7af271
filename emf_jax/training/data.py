"""Density data: checking rows against a distribution's events, and the validation split."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["num_rows", "split_rows", "structure_data"]

PyTree = Any

# Maximum number of offending row indices quoted in data error messages.
_MAX_ROWS_QUOTED = 5


def shape_str(shape: tuple) -> str:
    """`[a, b]` for a shape, as error messages write it."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _event_structure(dist: Any) -> tuple[list[tuple[int, ...]], list[np.dtype], Any, list[str]]:
    """Flat event shapes, dtypes, treedef and variable names of `dist`."""
    shapes, treedef = jax.tree.flatten(dist.event_shape)
    paths = [jax.tree_util.keystr(path) or "<value>"
             for path, _ in jax.tree_util.tree_flatten_with_path(dist.event_shape)[0]]
    dtypes = jax.tree.leaves(dist.dtype)
    if len(dtypes) != len(shapes):
        raise ValueError(
            f"the distribution's dtype structure {dist.dtype} does not match its event shape "
            f"structure {dist.event_shape}.")
    flat_shapes = []
    for shape, path in zip(shapes, paths):
        dims = getattr(shape, "as_list", lambda s=shape: list(s))()
        if dims is None or any(d is None for d in dims):
            raise ValueError(f"variable {path}: the event shape {shape} is not fully known.")
        flat_shapes.append(tuple(int(d) for d in dims))
    return flat_shapes, [np.dtype(d) for d in dtypes], treedef, paths


def _check_dtype(arr: np.ndarray, path: str, name: str) -> None:
    dtype = arr.dtype
    if jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer):
        return
    if dtype == np.bool_:
        kind = "boolean"
    elif jnp.issubdtype(dtype, jnp.complexfloating):
        kind = "complex"
    else:
        kind = "non-numeric"
    raise TypeError(f"{name}{'' if path == '<value>' else ' ' + path} has {kind} dtype "
                    f"{dtype}; density data must be real numbers (float or integer).")


def structure_data(dist: Any, data: Any, *, name: str = "data") -> PyTree:
    """Checks data rows against a distribution's events and returns them structured.

    `data` is either a pytree with the structure of `dist.event_shape` whose leaves have
    shape `[N, *event_shape]` (a dict is also accepted for a `StructTuple` event), or one
    flat `[N, D]` array whose columns are the variables' flattened events in the
    distribution's flatten order (`jax.tree.leaves(dist.event_shape)`: sorted keys for
    `JointDistributionNamed`, definition order for `JointDistributionCoroutine` and
    `JointDistributionSequential`); `D` must equal the total event size. Integer data are
    cast to the variable's dtype; float data for an integer-valued variable must hold
    whole numbers. Everything is checked on the host, before any compilation.

    Args:
      dist: a TFP distribution with scalar batch shape.
      data: the data, as above (NumPy or JAX arrays).
      name: how the data are called in error messages.

    Returns:
      A pytree with the structure of `dist.event_shape` of NumPy arrays
      `[N, *event_shape]` in the variables' dtypes.

    Raises:
      TypeError: for boolean, complex or non-numeric data.
      ValueError: for a wrong structure or shape, non-finite rows, non-integral values of
        an integer variable, or no rows.

    Example:
      >>> import numpy as np
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> dist = tfd.JointDistributionNamed(
      ...     {"a": tfd.Normal(0.0, 1.0), "b": tfd.Sample(tfd.Normal(0.0, 1.0), 2)})
      >>> parts = structure_data(dist, np.zeros((5, 3)))
      >>> parts["a"].shape, parts["b"].shape
      ((5,), (5, 2))
    """
    shapes, dtypes, treedef, paths = _event_structure(dist)
    event_shape = dist.event_shape
    if (isinstance(data, Mapping) and isinstance(event_shape, tuple)
            and hasattr(event_shape, "_fields")):
        missing = [f for f in event_shape._fields if f not in data]
        extra = [k for k in data if k not in event_shape._fields]
        if missing or extra:
            raise ValueError(f"{name} keys do not match the distribution's variables "
                             f"{list(event_shape._fields)}: missing {missing}, "
                             f"unexpected {extra}.")
        data = type(event_shape)(*[data[f] for f in event_shape._fields])

    if treedef.num_nodes == 1 and treedef.num_leaves == 1:
        data = np.asarray(data)  # A plain distribution: lists of numbers are fine too.
    leaves, data_treedef = jax.tree.flatten(data)
    if data_treedef == treedef:
        arrays = [np.asarray(x) for x in leaves]
        for arr, path in zip(arrays, paths):
            _check_dtype(arr, path, name)
        for arr, shape, path in zip(arrays, shapes, paths):
            if arr.ndim != len(shape) + 1 or arr.shape[1:] != shape:
                if len(shapes) == 1 and arr.ndim == 2 and arr.shape[1] == math.prod(shape):
                    continue  # A flat [N, D] array for a single variable; reshaped below.
                expected = shape_str(("N",) + shape)
                raise ValueError(
                    f"{name}{'' if path == '<value>' else ' for variable ' + path} has shape "
                    f"{shape_str(arr.shape)}; expected {expected} (N rows of event shape "
                    f"{shape_str(shape)}).")
        arrays = [arr.reshape((arr.shape[0],) + shape) for arr, shape in zip(arrays, shapes)]
    elif len(leaves) == 1 and not isinstance(data, (Mapping, list, tuple)):
        flat = np.asarray(leaves[0])
        _check_dtype(flat, "<value>", name)
        sizes = [math.prod(s) for s in shapes]
        total = sum(sizes)
        if flat.ndim != 2 or flat.shape[1] != total:
            layout = ", ".join(f"{p}: {shape_str(s)}" for p, s in zip(paths, shapes))
            raise ValueError(
                f"flat {name} must have shape [N, {total}] (the total event size of "
                f"{layout}); got {shape_str(flat.shape)}.")
        columns = np.split(flat, np.cumsum(sizes)[:-1], axis=1)
        arrays = [c.reshape((flat.shape[0],) + s) for c, s in zip(columns, shapes)]
    else:
        raise ValueError(
            f"{name} must be a pytree with the structure of the distribution's event shape "
            f"{event_shape} (leaves [N, *event_shape]) or one flat [N, D] array; got "
            f"structure {data_treedef}.")

    num_rows = {arr.shape[0] for arr in arrays}
    if len(num_rows) != 1:
        counts = ", ".join(f"{p}: {a.shape[0]}" for p, a in zip(paths, arrays))
        raise ValueError(f"{name} variables have different numbers of rows ({counts}).")
    n = num_rows.pop()
    if n == 0:
        raise ValueError(f"{name} has no rows.")

    bad_rows = np.zeros(n, bool)
    for arr in arrays:
        if jnp.issubdtype(arr.dtype, jnp.floating):
            bad_rows |= ~np.isfinite(arr.astype(np.float64).reshape(n, -1)).all(axis=1)
    if bad_rows.any():
        first = np.flatnonzero(bad_rows)[:_MAX_ROWS_QUOTED].tolist()
        raise ValueError(f"{name} has {int(bad_rows.sum())} of {n} rows with NaN or infinite "
                         f"values (first row indices: {first}).")

    out = []
    for arr, dtype, path in zip(arrays, dtypes, paths):
        if np.issubdtype(dtype, np.integer) and jnp.issubdtype(arr.dtype, jnp.floating):
            as_float = arr.astype(np.float64)
            if np.any(as_float != np.round(as_float)):
                raise ValueError(f"{name} for integer-valued variable {path} (dtype {dtype}) "
                                 "holds non-integer values.")
        out.append(arr.astype(dtype))
    return jax.tree.unflatten(treedef, out)


def num_rows(data: PyTree) -> int:
    """The number of rows (leading axis) of a structured data pytree.

    Args:
      data: a pytree whose leaves share their leading axis.

    Returns:
      The length of that axis.

    Example:
      >>> import numpy as np
      >>> num_rows({"a": np.zeros((4, 2)), "b": np.zeros(4)})
      4
    """
    return int(jax.tree.leaves(data)[0].shape[0])


def split_rows(data: PyTree, fraction: float, key: jax.Array) -> tuple[PyTree, PyTree]:
    """A random `(train, validation)` split of the rows, `fraction` of them held out.

    The split depends only on `key`. At least one row is held out when `fraction > 0`.

    Args:
      data: a structured data pytree (leaves `[N, ...]`).
      fraction: share of the rows held out, in (0, 1).
      key: a PRNG key.

    Returns:
      ``(train, validation)``, each with the rows in their original order.

    Example:
      >>> import jax, numpy as np
      >>> train, valid = split_rows(np.arange(10.0), 0.2, jax.random.key(0))
      >>> train.shape, valid.shape
      ((8,), (2,))
    """
    n = num_rows(data)
    num_validation = max(1, int(round(fraction * n)))
    order = np.asarray(jax.random.permutation(key, n))
    val_rows, train_rows = np.sort(order[:num_validation]), np.sort(order[num_validation:])
    return (jax.tree.map(lambda x: x[train_rows], data),
            jax.tree.map(lambda x: x[val_rows], data))
