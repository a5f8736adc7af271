"""Probabilistic-model templates with trainable parameters, for EMF density estimation.

In density estimation the embedded model's own parameters are trained together with the flow
(Silvestri et al., 2022). Each template here returns a pair ``(model_fn, model_params)``:

- ``model_params`` is a dict of *unconstrained* floating arrays (the initial values);
- ``model_fn(model_params)`` builds a ``tfd.JointDistributionCoroutineAutoBatched`` whose
  variables are all continuous (Normal, Independent Normal or a Gaussian mixture), ready to be
  embedded in a structured layer.

Positive quantities (scales) are stored as ``raw_*`` entries and mapped through softplus. The
programs are written so that they also accept parent values with extra leading batch
dimensions, so a structured layer may walk them with batched values.

Templates:

- :func:`gaussian_mixture`: independent 1-D Gaussian mixture per dimension (2-D toy problems).
- :func:`hierarchical`: a global mean and exchangeable items around it (IRIS, digits).
- :func:`random_walk`: first-order Markov chain, the paper's "continuity" prior.
- :func:`smooth_walk`: second-order chain, the paper's "smoothness" prior.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

from emf_jax import _checks

tfd = tfp.distributions

__all__ = [
    "DEFAULT_BACKGROUND_WEIGHT",
    "ModelFn",
    "ModelParams",
    "gaussian_mixture",
    "hierarchical",
    "random_walk",
    "smooth_walk",
    "step_names",
]

ModelParams = dict[str, jax.Array]
"""Unconstrained, trainable parameters of a template (a flat dict of arrays)."""

ModelFn = Callable[[Mapping[str, jax.Array]], tfd.JointDistribution]
"""Builds the template's joint distribution from its parameters."""

DTypeLike = Any

DEFAULT_BACKGROUND_WEIGHT = 0.01
"""Weight of :func:`gaussian_mixture`'s fixed wide background component (see there)."""


# ----------------------------------------------------------------------------- helpers


def _resolve_dtype(dtype: DTypeLike | None) -> np.dtype:
    """Returns the floating dtype to use; ``None`` means JAX's default float dtype."""
    return _checks.resolve_float_dtype(dtype)


def _check_int(value: Any, name: str, minimum: int) -> int:
    """Checks that ``value`` is an integer >= ``minimum`` and returns it as an int."""
    return _checks.check_index(value, name, minimum)


def _check_positive_float(value: Any, name: str) -> float:
    """Checks that ``value`` is a finite positive number and returns it as a float."""
    return _checks.check_number(value, name, positive=True)


def _softplus_inverse(value: float, shape: tuple[int, ...], dtype: np.dtype) -> jax.Array:
    """Returns an array of ``shape`` whose softplus equals ``value``."""
    raw = float(np.log(np.expm1(value)))
    return jnp.full(shape, raw, dtype=dtype)


def _get(params: Mapping[str, jax.Array], key: str, template: str) -> jax.Array:
    """Looks up ``params[key]``, naming the template and the expected keys on failure."""
    try:
        return jnp.asarray(params[key])
    except KeyError as err:
        raise KeyError(
            f"{template}: model_params has no entry {key!r}; "
            f"got keys {sorted(params)}. Use the params returned by the template."
        ) from err
    except TypeError as err:
        raise TypeError(
            f"{template}: model_params must be a mapping of arrays, got "
            f"{type(params).__name__}."
        ) from err


def _normal(loc: jax.Array, scale: jax.Array, event_ndims: int, name: str) -> tfd.Distribution:
    """A Normal, wrapped in ``Independent`` when the variable has event dimensions."""
    if event_ndims == 0:
        return tfd.Normal(loc=loc, scale=scale, name=name)
    return tfd.Independent(
        tfd.Normal(loc=loc, scale=scale), reinterpreted_batch_ndims=event_ndims, name=name
    )


def step_names(num_steps: int) -> tuple[str, ...]:
    """Names of the per-step variables of :func:`random_walk` and :func:`smooth_walk`.

    Args:
      num_steps: number of time steps ``T``.

    Returns:
      ``('x0', 'x1', ..., 'x{T-1}')``, the order of the model's variables.

    Example:
      >>> step_names(3)
      ('x0', 'x1', 'x2')
    """
    num_steps = _check_int(num_steps, "num_steps", 1)
    return tuple(f"x{t}" for t in range(num_steps))


# ----------------------------------------------------------------------------- templates


def gaussian_mixture(
    event_size: int,
    num_components: int,
    *,
    loc_range: tuple[float, float] = (-4.0, 4.0),
    initial_scale: float | None = None,
    background_weight: float = DEFAULT_BACKGROUND_WEIGHT,
    dtype: DTypeLike | None = None,
) -> tuple[ModelFn, ModelParams]:
    """Independent per-dimension Gaussian mixtures (the paper's 2-D toy prior).

    Each of the ``event_size`` dimensions is an independent 1-D mixture of
    ``num_components`` trainable Normals with its own weights, locations and scales, plus
    one fixed, wide background Normal of weight ``w = background_weight``. The joint
    distribution has one variable, ``'x'``, of event shape ``[event_size]``; per dimension::

        p(x) = (1 - w) * sum_k softmax(logits)_k * Normal(x; locs_k, softplus(raw_scales)_k)
               + w * Normal(x; (low + high) / 2, (high - low) / 2)

    with ``(low, high) = loc_range``. The background is wide relative to the data (whose
    range ``loc_range`` should cover, as the components start on it): its scale is half
    that range, 4 by default against data of unit scale. It bounds the mixture's tail:
    maximum likelihood narrows the edge components (a fitted scale of 0.01 is common), and
    a point beyond all of them would otherwise get ``log p(x) ≈ -(x - μ_K)² / (2 s_K²)``
    (about -4.5e4 at 3 units past a component of scale 0.01), and an embedded-model flow on
    top of the mixture inherits that through the mixture's quantile map. With the
    background, ``log p(x) >= log w + log Normal(x; centre, (high - low) / 2)`` everywhere,
    at a cost of at most ``-log(1 - w)`` (0.01 nats per dimension by default) inside the
    data. The background has no trainable parameter, so maximum likelihood cannot remove
    it; ``background_weight=0.0`` gives the plain mixture of the trainable components.

    Parameters (all of shape ``[event_size, num_components]``):

    - ``'logits'``: mixture logits, initialised at zero (equal weights);
    - ``'locs'``: component locations, initialised on ``linspace(*loc_range, K)``;
    - ``'raw_scales'``: softplus-inverse of the component scales, initialised so that every
      scale equals ``initial_scale`` (default: the grid spacing
      ``(high - low) / (K - 1)``, or ``(high - low) / 2`` when ``K == 1``), so that
      neighbouring components overlap.

    Args:
      event_size: number of dimensions ``D`` (>= 1).
      num_components: number of mixture components ``K`` per dimension (>= 1).
      loc_range: ``(low, high)`` of the initial location grid, ``low < high``.
      initial_scale: initial component scale (> 0); ``None`` for the grid spacing.
      background_weight: weight ``w`` of the fixed background component, in [0, 1);
        ``0.0`` for no background.
      dtype: floating dtype of the parameters; ``None`` for JAX's default float dtype.

    Returns:
      ``(model_fn, model_params)``.

    Raises:
      TypeError: non-integer sizes, a non-number ``background_weight`` or a non-floating
        dtype.
      ValueError: sizes < 1, a bad ``loc_range``, a non-positive ``initial_scale`` or a
        ``background_weight`` outside [0, 1).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> model_fn, params = gaussian_mixture(2, 5)
      >>> params['locs'].shape
      (2, 5)
      >>> jd = model_fn(params)
      >>> jd.log_prob((jnp.zeros(2),)).shape
      ()
    """
    event_size = _check_int(event_size, "event_size", 1)
    num_components = _check_int(num_components, "num_components", 1)
    dtype = _resolve_dtype(dtype)
    try:
        low, high = (float(v) for v in loc_range)
    except (TypeError, ValueError) as err:
        raise TypeError(f"loc_range must be a pair of numbers, got {loc_range!r}.") from err
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"loc_range must be finite with low < high, got {(low, high)}.")
    if initial_scale is None:
        initial_scale = (high - low) / (num_components - 1 if num_components > 1 else 2)
    initial_scale = _check_positive_float(initial_scale, "initial_scale")
    try:
        background_weight = float(background_weight)
    except (TypeError, ValueError) as err:
        raise TypeError(f"background_weight must be a number, got {background_weight!r}."
                        ) from err
    if not 0.0 <= background_weight < 1.0:
        raise ValueError(f"background_weight must be in [0, 1), got {background_weight}.")
    background_loc = 0.5 * (low + high)
    background_scale = 0.5 * (high - low)

    shape = (event_size, num_components)
    if num_components == 1:
        grid = np.array([0.5 * (low + high)])
    else:
        grid = np.linspace(low, high, num_components)
    params: ModelParams = {
        "logits": jnp.zeros(shape, dtype=dtype),
        "locs": jnp.broadcast_to(jnp.asarray(grid, dtype=dtype), shape),
        "raw_scales": _softplus_inverse(initial_scale, shape, dtype),
    }

    def model_fn(model_params: Mapping[str, jax.Array]) -> tfd.JointDistribution:
        logits = _get(model_params, "logits", "gaussian_mixture")
        locs = _get(model_params, "locs", "gaussian_mixture")
        scales = jax.nn.softplus(_get(model_params, "raw_scales", "gaussian_mixture"))
        if background_weight > 0.0:
            # One more component per dimension, fixed: log weights log(1 - w) + log_softmax
            # for the trainable ones and log w for the background.
            column = locs.shape[:-1] + (1,)
            logits = jnp.concatenate(
                [jax.nn.log_softmax(logits, axis=-1) + np.log1p(-background_weight),
                 jnp.full(column, np.log(background_weight), logits.dtype)], axis=-1)
            locs = jnp.concatenate([locs, jnp.full(column, background_loc, locs.dtype)], -1)
            scales = jnp.concatenate(
                [scales, jnp.full(column, background_scale, scales.dtype)], axis=-1)

        def program():
            yield tfd.Independent(
                tfd.MixtureSameFamily(
                    mixture_distribution=tfd.Categorical(logits=logits),
                    components_distribution=tfd.Normal(loc=locs, scale=scales),
                ),
                reinterpreted_batch_ndims=1,
                name="x",
            )

        return tfd.JointDistributionCoroutineAutoBatched(program, name="gaussian_mixture")

    return model_fn, params


def hierarchical(
    num_items: int,
    item_size: int,
    *,
    initial_prior_scale: float = 1.0,
    initial_item_scale: float = 1.0,
    dtype: DTypeLike | None = None,
) -> tuple[ModelFn, ModelParams]:
    """A global mean and exchangeable items around it (the paper's IRIS / digits prior).

    Two variables, in this order::

        mean  ~ Independent(Normal(0, softplus(raw_prior_scale)), 1)     # [item_size]
        items ~ Independent(Normal(mean, softplus(raw_item_scale)), 2)   # [num_items, item_size]

    The items are one variable (every row shares the same conditional given ``mean``), so the
    joint event is ``[item_size]`` then ``[num_items, item_size]``, i.e. ``(1 + num_items)``
    rows of ``item_size`` in the order of :func:`emf_jax.datasets.iris_like`.

    Parameters (shape ``[item_size]``, one scale per feature), initialised so that the
    scales equal the given initial values (1 by default, as in the paper):

    - ``'raw_prior_scale'``: softplus-inverse of the scale of ``mean``;
    - ``'raw_item_scale'``: softplus-inverse of the scale of the items around ``mean``.

    Args:
      num_items: number of items per sample (>= 1).
      item_size: size of each item and of the mean (>= 1).
      initial_prior_scale: initial scale of ``mean`` (> 0).
      initial_item_scale: initial scale of the items (> 0).
      dtype: floating dtype of the parameters; ``None`` for JAX's default float dtype.

    Returns:
      ``(model_fn, model_params)``.

    Raises:
      TypeError: non-integer sizes or a non-floating dtype.
      ValueError: sizes < 1 or non-positive scales.

    Example:
      >>> import jax
      >>> model_fn, params = hierarchical(9, 4)
      >>> sample = model_fn(params).sample(seed=jax.random.key(0))
      >>> sample.mean.shape, sample.items.shape
      ((4,), (9, 4))
    """
    num_items = _check_int(num_items, "num_items", 1)
    item_size = _check_int(item_size, "item_size", 1)
    initial_prior_scale = _check_positive_float(initial_prior_scale, "initial_prior_scale")
    initial_item_scale = _check_positive_float(initial_item_scale, "initial_item_scale")
    dtype = _resolve_dtype(dtype)
    params: ModelParams = {
        "raw_prior_scale": _softplus_inverse(initial_prior_scale, (item_size,), dtype),
        "raw_item_scale": _softplus_inverse(initial_item_scale, (item_size,), dtype),
    }

    def model_fn(model_params: Mapping[str, jax.Array]) -> tfd.JointDistribution:
        prior_scale = jax.nn.softplus(_get(model_params, "raw_prior_scale", "hierarchical"))
        item_scale = jax.nn.softplus(_get(model_params, "raw_item_scale", "hierarchical"))

        def program():
            mean = yield _normal(jnp.zeros_like(prior_scale), prior_scale, 1, "mean")
            # Works for a mean with extra leading batch dimensions too.
            shape = mean.shape[:-1] + (num_items, item_size)
            loc = jnp.broadcast_to(mean[..., None, :], shape)
            yield _normal(loc, jnp.broadcast_to(item_scale, shape), 2, "items")

        return tfd.JointDistributionCoroutineAutoBatched(program, name="hierarchical")

    return model_fn, params


def _walk_setup(
    num_steps: int, event_size: int, min_steps: int, dtype: DTypeLike | None
) -> tuple[int, int, tuple[int, ...], int, np.dtype]:
    num_steps = _check_int(num_steps, "num_steps", min_steps)
    event_size = _check_int(event_size, "event_size", 1)
    event_shape = () if event_size == 1 else (event_size,)
    return num_steps, event_size, event_shape, len(event_shape), _resolve_dtype(dtype)


def _walk_scale_params(scales: Mapping[str, float], event_shape: tuple[int, ...],
                       dtype: np.dtype) -> ModelParams:
    """The walks' parameters: ``"raw_<name>"``, whose softplus is each checked ``scales[name]``.

    One rule for the names, so that a walk's parameter keys and its model_fn's reads
    (`_walk_scales`) cannot drift apart.
    """
    return {f"raw_{name}": _softplus_inverse(_check_positive_float(value, name), event_shape,
                                             dtype)
            for name, value in scales.items()}


def _walk_scales(model_params: Mapping[str, jax.Array], names: Sequence[str],
                 template: str) -> list[jax.Array]:
    """The positive scales ``softplus(model_params["raw_<name>"])`` of a walk, in order."""
    return [jax.nn.softplus(_get(model_params, f"raw_{name}", template)) for name in names]


def random_walk(
    num_steps: int,
    event_size: int = 1,
    *,
    initial_scale: float = 1.0,
    step_scale: float = 1.0,
    dtype: DTypeLike | None = None,
) -> tuple[ModelFn, ModelParams]:
    """First-order Gaussian random walk: the paper's "continuity" prior for time series.

    One variable per time step, named ``'x0'`` ... ``'x{T-1}'`` (see :func:`step_names`)::

        x0 ~ Normal(0, softplus(raw_initial_scale))
        xt ~ Normal(x{t-1}, softplus(raw_step_scale))        t = 1 .. T-1

    Each variable is a scalar ``Normal`` when ``event_size == 1`` and an
    ``Independent(Normal, 1)`` of event shape ``[event_size]`` otherwise, so a flat sample in
    time-major order (``x0``'s components, then ``x1``'s, ...) matches
    :func:`emf_jax.datasets.flatten_time_series`.

    Parameters (scalars when ``event_size == 1``, else shape ``[event_size]``, one scale per
    coordinate, shared over time), initialised so the scales equal the given values (1 by
    default, as in the paper):

    - ``'raw_initial_scale'``: softplus-inverse of the scale of ``x0``;
    - ``'raw_step_scale'``: softplus-inverse of the scale of each increment.

    Args:
      num_steps: number of time steps ``T`` (>= 1).
      event_size: size of the state at each step (>= 1).
      initial_scale: initial value of the scale of ``x0`` (> 0).
      step_scale: initial value of the step scale (> 0).
      dtype: floating dtype of the parameters; ``None`` for JAX's default float dtype.

    Returns:
      ``(model_fn, model_params)``: ``model_params`` holds the two raw scales above and
      ``model_fn(model_params)`` builds the walk's joint distribution over ``x0 .. x{T-1}``.

    Raises:
      TypeError: non-integer sizes or a non-floating dtype.
      ValueError: sizes < 1 or non-positive scales.

    Example:
      >>> import jax
      >>> model_fn, params = random_walk(3)
      >>> sample = model_fn(params).sample(seed=jax.random.key(0))
      >>> sample._fields
      ('x0', 'x1', 'x2')
    """
    num_steps, event_size, event_shape, event_ndims, dtype = _walk_setup(
        num_steps, event_size, 1, dtype
    )
    scales = {"initial_scale": initial_scale, "step_scale": step_scale}
    params = _walk_scale_params(scales, event_shape, dtype)
    names = step_names(num_steps)

    def model_fn(model_params: Mapping[str, jax.Array]) -> tfd.JointDistribution:
        scale0, scale = _walk_scales(model_params, list(scales), "random_walk")

        def program():
            x = yield _normal(jnp.zeros_like(scale0), scale0, event_ndims, names[0])
            for name in names[1:]:
                x = yield _normal(x, jnp.broadcast_to(scale, jnp.shape(x)), event_ndims, name)

        return tfd.JointDistributionCoroutineAutoBatched(program, name="random_walk")

    return model_fn, params


def smooth_walk(
    num_steps: int,
    event_size: int = 1,
    *,
    initial_scale: float = 1.0,
    initial_step_scale: float = 1.0,
    step_scale: float = 1.0,
    dtype: DTypeLike | None = None,
) -> tuple[ModelFn, ModelParams]:
    """Second-order Gaussian walk: the paper's "smoothness" prior for time series.

    One variable per time step, named ``'x0'`` ... ``'x{T-1}'`` (see :func:`step_names`).
    The first two steps start a random walk; after that each step extrapolates linearly::

        x0 ~ Normal(0, softplus(raw_initial_scale))
        x1 ~ Normal(x0, softplus(raw_initial_step_scale))
        xt ~ Normal(2 x{t-1} - x{t-2}, softplus(raw_step_scale))   t = 2 .. T-1

    Variable shapes and the time-major flat order are as in :func:`random_walk`.

    Parameters (scalars when ``event_size == 1``, else shape ``[event_size]``), initialised
    so the scales equal the given values (1 by default):

    - ``'raw_initial_scale'``: softplus-inverse of the scale of ``x0``;
    - ``'raw_initial_step_scale'``: softplus-inverse of the scale of ``x1 - x0``;
    - ``'raw_step_scale'``: softplus-inverse of the scale of the second differences.

    Args:
      num_steps: number of time steps ``T`` (>= 2).
      event_size: size of the state at each step (>= 1).
      initial_scale: initial value of the scale of ``x0`` (> 0).
      initial_step_scale: initial value of the scale of ``x1 - x0`` (> 0).
      step_scale: initial value of the scale of the second differences (> 0).
      dtype: floating dtype of the parameters; ``None`` for JAX's default float dtype.

    Returns:
      ``(model_fn, model_params)``.

    Raises:
      TypeError: non-integer sizes or a non-floating dtype.
      ValueError: ``num_steps < 2``, ``event_size < 1`` or non-positive scales.

    Example:
      >>> import jax
      >>> model_fn, params = smooth_walk(4, 2)
      >>> sample = model_fn(params).sample(seed=jax.random.key(0))
      >>> sample.x3.shape
      (2,)
    """
    num_steps, event_size, event_shape, event_ndims, dtype = _walk_setup(
        num_steps, event_size, 2, dtype
    )
    scales = {"initial_scale": initial_scale, "initial_step_scale": initial_step_scale,
              "step_scale": step_scale}
    params = _walk_scale_params(scales, event_shape, dtype)
    names = step_names(num_steps)

    def model_fn(model_params: Mapping[str, jax.Array]) -> tfd.JointDistribution:
        scale0, scale1, scale = _walk_scales(model_params, list(scales), "smooth_walk")

        def program():
            previous = yield _normal(jnp.zeros_like(scale0), scale0, event_ndims, names[0])
            x = yield _normal(
                previous, jnp.broadcast_to(scale1, jnp.shape(previous)), event_ndims, names[1]
            )
            for name in names[2:]:
                loc = 2.0 * x - previous
                previous, x = x, (
                    yield _normal(loc, jnp.broadcast_to(scale, jnp.shape(loc)), event_ndims, name)
                )

        return tfd.JointDistributionCoroutineAutoBatched(program, name="smooth_walk")

    return model_fn, params
