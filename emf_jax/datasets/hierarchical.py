"""Hierarchical data sets built from IRIS and the 8 x 8 digits (paper: section on hierarchies).

Each sample is one *group*: a class of the underlying data set is picked uniformly, then the
sample is a ``[1 + num_items, F]`` array whose row 0 is the group mean and rows
``1..num_items`` are members of that class drawn without replacement. This is the layout of
:func:`emf_jax.templates.hierarchical` (``mean`` then ``items``), so
``x[:, 0], x[:, 1:]`` are that model's values and ``x.reshape(N, -1)`` is its flat order.

Row 0 depends on ``group_mean``:

- ``'class'`` (default, as in the paper): the mean of the whole class. Note that it then takes
  only as many distinct values as there are classes (3 for IRIS, 10 for digits).
- ``'items'``: the mean of the drawn items (a deterministic function of rows 1..).
- ``'rest'``: the mean of the class members that were *not* drawn, a noisy estimate of the
  class mean that is neither discrete nor a function of the items.

The real data come from scikit-learn's bundled copies (no download), which is an optional
dependency (``pip install 'emf_jax[bench]'``). ``source='auto'`` uses them when scikit-learn
is installed and otherwise falls back, with a warning, to a synthetic stand-in of the same
shape; ``source='sklearn'`` raises ``ImportError`` instead, ``source='synthetic'`` always uses
the stand-in. The synthetic stand-ins draw Gaussian classes and are *not* the real data.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import warnings
from typing import Literal, Union

import jax
import jax.numpy as jnp
import numpy as np

from emf_jax.datasets._utils import DTypeLike, check_float, check_int, resolve_dtype

__all__ = ["iris_like", "digits_like"]

GroupMean = Literal["class", "items", "rest"]
Source = Literal["auto", "sklearn", "synthetic"]
Array = Union[np.ndarray, jax.Array]
_GROUP_MEANS = ("class", "items", "rest")
_SOURCES = ("auto", "sklearn", "synthetic")

# Per-class feature means and standard deviations (ddof=1) of Fisher's IRIS data
# (setosa, versicolor, virginica; sepal length, sepal width, petal length, petal width, cm),
# used by the synthetic stand-in.
_IRIS_CLASS_MEANS = np.array([
    [5.006, 3.428, 1.462, 0.246],
    [5.936, 2.770, 4.260, 1.326],
    [6.588, 2.974, 5.552, 2.026],
])
_IRIS_CLASS_STDS = np.array([
    [0.3525, 0.3791, 0.1737, 0.1054],
    [0.5162, 0.3138, 0.4699, 0.1978],
    [0.6359, 0.3225, 0.5519, 0.2747],
])
_IRIS_RESOLUTION = 0.1  # the measurements are given to 0.1 cm
_IRIS_CLASS_SIZE = 50
_DIGITS_LEVELS = 17  # pixel intensities are integers 0..16
_DIGITS_CLASS_SIZE = 180


def _check_options(num_samples: int, num_items: int, group_mean: str,
                   source: str) -> tuple[int, int]:
    """Checks the options both group generators take; returns ``(num_samples, num_items)``."""
    num_samples = check_int(num_samples, "num_samples", 1)
    num_items = check_int(num_items, "num_items", 1)
    if group_mean not in _GROUP_MEANS:
        raise ValueError(f"group_mean must be one of {_GROUP_MEANS}, got {group_mean!r}.")
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {_SOURCES}, got {source!r}.")
    return num_samples, num_items


@functools.lru_cache(maxsize=None)
def _sklearn_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads scikit-learn's bundled ``iris`` or ``digits`` as ``(data, target)``."""
    try:
        from sklearn import datasets as sk_datasets
    except ImportError as err:
        raise ImportError(
            f"The real {name} data need scikit-learn, which is not installed. Install it with "
            "`pip install 'emf_jax[bench]'` (or `pip install scikit-learn`), or pass "
            "source='synthetic' for a synthetic stand-in of the same shape."
        ) from err
    loader = {"iris": sk_datasets.load_iris, "digits": sk_datasets.load_digits}[name]
    bunch = loader()
    return np.asarray(bunch.data, np.float64), np.asarray(bunch.target, np.int64)


def _use_sklearn(name: str, source: str) -> bool:
    if source == "synthetic":
        return False
    if source == "sklearn":
        _sklearn_data(name)
        return True
    try:
        _sklearn_data(name)
    except ImportError:
        warnings.warn(
            f"scikit-learn is not installed: using a synthetic stand-in for the {name} data "
            "(pass source='synthetic' to silence this, or install emf_jax[bench]).",
            UserWarning,
            stacklevel=3,
        )
        return False
    return True


@dataclasses.dataclass(frozen=True)
class _Standardize:
    """IRIS features: ``(raw + step * u - mean) / std`` (hashable, for the jit cache)."""

    step: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, xp: types.ModuleType, raw: Array, u: Array) -> Array:
        return (raw + self.step * u - xp.asarray(self.mean)) / xp.asarray(self.std)


@dataclasses.dataclass(frozen=True)
class _DequantizedLogit:
    """Digits features: ``logit(alpha + (1 - 2 alpha) (raw + 1/2 + u) / levels)``."""

    alpha: float
    levels: int

    def __call__(self, xp: types.ModuleType, raw: Array, u: Array) -> Array:
        p = self.alpha + (1.0 - 2.0 * self.alpha) * (raw + 0.5 + u) / self.levels
        return xp.log(p) - xp.log1p(-p)


def _groups_from_members(
    key: jax.Array,
    num_samples: int,
    num_items: int,
    *,
    raw: np.ndarray,
    target: np.ndarray,
    features: _Standardize | _DequantizedLogit,
    group_mean: str,
    dtype: np.dtype,
) -> jax.Array:
    """Groups drawn from a labelled data set (``raw`` features, ``target`` labels).

    ``features(xp, raw, u)`` maps raw values and dequantisation noise ``u`` in
    ``[-1/2, 1/2)`` (0 for the cell midpoint) to features, with ``xp`` numpy or jax.numpy.
    """
    classes = np.unique(target)
    counts = np.array([np.sum(target == c) for c in classes])
    minimum = int(counts.min()) - (1 if group_mean == "rest" else 0)
    if num_items > minimum:
        raise ValueError(
            f"num_items must be <= {minimum} (the smallest class has {counts.min()} "
            f"members, group_mean={group_mean!r}), got {num_items}."
        )
    table = np.zeros((len(classes), counts.max()), np.int32)  # member indices, 0-padded
    for row, c in enumerate(classes):
        table[row, :counts[row]] = np.flatnonzero(target == c)
    midpoints = np.asarray(features(np, raw, np.zeros_like(raw)), np.float64)
    sums = np.stack([midpoints[target == c].sum(0) for c in classes])
    return _sample_groups(
        key, jnp.asarray(raw, dtype), jnp.asarray(table), jnp.asarray(counts),
        jnp.asarray(midpoints, dtype), jnp.asarray(sums, dtype),
        num_samples, num_items, features, group_mean, dtype,
    )


@functools.partial(jax.jit, static_argnums=(6, 7, 8, 9, 10))
def _sample_groups(
    key: jax.Array, raw: jax.Array, table: jax.Array, counts: jax.Array,
    midpoints: jax.Array, sums: jax.Array, num_samples: int, num_items: int,
    features: _Standardize | _DequantizedLogit, group_mean: str, dtype: np.dtype,
) -> jax.Array:
    num_classes, width = table.shape
    key_class, key_members, key_noise = jax.random.split(key, 3)
    c = jax.random.randint(key_class, (num_samples,), 0, num_classes)
    count = counts[c]
    # A uniformly random subset per group: the members with the num_items largest of iid
    # uniform keys (padding slots get -1, below every key).
    order_keys = jax.random.uniform(key_members, (num_samples, width), dtype)
    order_keys = jnp.where(jnp.arange(width) < count[:, None], order_keys, -1.0)
    _, slots = jax.lax.top_k(order_keys, num_items)
    chosen = jnp.take_along_axis(table[c], slots, axis=1)  # [N, num_items]
    noise = jax.random.uniform(key_noise, (num_samples, num_items, raw.shape[1]), dtype) - 0.5
    items = features(jnp, raw[chosen], noise)
    if group_mean == "class":
        mean = sums[c] / count[:, None].astype(dtype)
    elif group_mean == "items":
        mean = jnp.mean(items, axis=1)
    else:
        rest = sums[c] - jnp.sum(midpoints[chosen], axis=1)
        mean = rest / (count - num_items)[:, None].astype(dtype)
    return jnp.concatenate([mean[:, None], items], axis=1).astype(dtype)


def _gaussian_groups(
    key: jax.Array,
    num_samples: int,
    num_items: int,
    *,
    class_means: np.ndarray,
    class_stds: np.ndarray,
    class_size: int,
    group_mean: str,
    dtype: np.dtype,
) -> jax.Array:
    """Synthetic groups: items ~ N(class mean, class std^2), classes picked uniformly."""
    maximum = class_size - (1 if group_mean == "rest" else 0)
    if num_items > maximum:
        raise ValueError(
            f"num_items must be <= {maximum} for the synthetic stand-in "
            f"(group_mean={group_mean!r}), got {num_items}."
        )
    return _sample_gaussian_groups(
        key, jnp.asarray(class_means, dtype), jnp.asarray(class_stds, dtype),
        num_samples, num_items, class_size, group_mean, dtype,
    )


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _sample_gaussian_groups(
    key: jax.Array, means: jax.Array, stds: jax.Array, num_samples: int, num_items: int,
    class_size: int, group_mean: str, dtype: np.dtype,
) -> jax.Array:
    num_classes, size = means.shape
    key_class, key_items, key_rest = jax.random.split(key, 3)
    c = jax.random.randint(key_class, (num_samples,), 0, num_classes)
    eps = jax.random.normal(key_items, (num_samples, num_items, size), dtype)
    items = means[c][:, None] + stds[c][:, None] * eps
    if group_mean == "class":
        mean = means[c]
    elif group_mean == "items":
        mean = jnp.mean(items, axis=1)
    else:
        rest_eps = jax.random.normal(key_rest, (num_samples, size), dtype)
        mean = means[c] + stds[c] * rest_eps / np.sqrt(class_size - num_items)
    return jnp.concatenate([mean[:, None], items], axis=1)


def iris_like(key: jax.Array, num_samples: int, *, num_items: int = 9,
              group_mean: GroupMean = "class", source: Source = "auto", dequantize: bool = True,
              dtype: DTypeLike | None = None) -> jax.Array:
    """Groups of IRIS flowers: a class mean plus ``num_items`` flowers of that class.

    Features are the 4 IRIS measurements standardised with the whole data set's mean and
    standard deviation (so a ``N(0, 1)`` prior on the mean is sensible). With ``dequantize``
    each drawn flower gets uniform noise of one measurement step (0.1 cm) before
    standardising, as the measurements are rounded and contain duplicates. Row 0 is set by
    ``group_mean`` (see the module docstring). With the defaults a sample is ``10 x 4``, as
    in the paper.

    Args:
      key: a JAX PRNG key.
      num_samples: number of groups ``N`` (>= 1, static).
      num_items: flowers per group (>= 1; at most the class size, 50, or 49 for ``'rest'``).
      group_mean: ``'class'``, ``'items'`` or ``'rest'``.
      source: ``'auto'``, ``'sklearn'`` or ``'synthetic'`` (see the module docstring).
      dequantize: add uniform noise of one measurement step to the drawn flowers (real data
        only; the synthetic stand-in is continuous already).
      dtype: floating output dtype; ``None`` for JAX's default float dtype.

    Returns:
      An array of shape ``[N, 1 + num_items, 4]``.

    Raises:
      ValueError: a bad option or ``num_items`` larger than a class.
      ImportError: ``source='sklearn'`` without scikit-learn.

    Example:
      >>> import jax
      >>> iris_like(jax.random.key(0), 3, source='synthetic').shape
      (3, 10, 4)
    """
    num_samples, num_items = _check_options(num_samples, num_items, group_mean, source)
    dtype = resolve_dtype(dtype)
    if not _use_sklearn("iris", source):
        # Standardise with the moments of the equal-weight mixture of the classes.
        mean = _IRIS_CLASS_MEANS.mean(0)
        std = np.sqrt((_IRIS_CLASS_STDS**2).mean(0) + _IRIS_CLASS_MEANS.var(0))
        return _gaussian_groups(
            key, num_samples, num_items,
            class_means=(_IRIS_CLASS_MEANS - mean) / std,
            class_stds=_IRIS_CLASS_STDS / std,
            class_size=_IRIS_CLASS_SIZE, group_mean=group_mean, dtype=dtype,
        )
    data, target = _sklearn_data("iris")
    features = _Standardize(
        step=_IRIS_RESOLUTION if dequantize else 0.0,
        mean=tuple(data.mean(0).tolist()),
        std=tuple(data.std(0).tolist()),
    )
    return _groups_from_members(
        key, num_samples, num_items, raw=data, target=target, features=features,
        group_mean=group_mean, dtype=dtype,
    )


def digits_like(key: jax.Array, num_samples: int, *, num_items: int = 19,
                group_mean: GroupMean = "class", source: Source = "auto", alpha: float = 0.05,
                dtype: DTypeLike | None = None) -> jax.Array:
    """Groups of 8 x 8 digit images in logit space: a class mean plus ``num_items`` images.

    Pixel intensities ``k`` in ``{0, ..., 16}`` are dequantised and logit-transformed::

        p = (k + 1/2 + u) / 17,   u ~ U[-1/2, 1/2)
        feature = logit(alpha + (1 - 2 alpha) p)

    so features lie in ``(logit(alpha), logit(1 - alpha))`` (about +-2.94 for the default
    ``alpha = 0.05``). Class means use the cell midpoints (``u = 0``). Row 0 is set by
    ``group_mean`` (see the module docstring). With the defaults a sample is ``20 x 64``, as
    in the paper.

    The synthetic stand-in uses 10 fixed random prototypes in logit space with unit-free
    Gaussian noise of standard deviation 0.5 around them.

    Args:
      key: a JAX PRNG key.
      num_samples: number of groups ``N`` (>= 1, static).
      num_items: images per group (>= 1; at most the smallest class size).
      group_mean: ``'class'``, ``'items'`` or ``'rest'``.
      source: ``'auto'``, ``'sklearn'`` or ``'synthetic'`` (see the module docstring).
      alpha: boundary shrinkage of the logit transform, in ``(0, 0.5)``.
      dtype: floating output dtype; ``None`` for JAX's default float dtype.

    Returns:
      An array of shape ``[N, 1 + num_items, 64]``.

    Raises:
      ValueError, ImportError: as :func:`iris_like` does.

    Example:
      >>> import jax
      >>> digits_like(jax.random.key(0), 2, num_items=4, source='synthetic').shape
      (2, 5, 64)
    """
    num_samples, num_items = _check_options(num_samples, num_items, group_mean, source)
    alpha = check_float(alpha, "alpha", positive=True)
    if alpha >= 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}.")
    dtype = resolve_dtype(dtype)
    if not _use_sklearn("digits", source):
        rng = np.random.default_rng(0)  # fixed prototypes: part of the data set's definition
        intensity = rng.uniform(0.0, 1.0, (10, 64)) ** 2
        shrunk = alpha + (1.0 - 2.0 * alpha) * intensity
        prototypes = np.log(shrunk) - np.log1p(-shrunk)
        return _gaussian_groups(
            key, num_samples, num_items,
            class_means=prototypes, class_stds=np.full_like(prototypes, 0.5),
            class_size=_DIGITS_CLASS_SIZE, group_mean=group_mean, dtype=dtype,
        )
    data, target = _sklearn_data("digits")
    features = _DequantizedLogit(alpha=alpha, levels=_DIGITS_LEVELS)
    return _groups_from_members(
        key, num_samples, num_items, raw=data, target=target, features=features,
        group_mean=group_mean, dtype=dtype,
    )
