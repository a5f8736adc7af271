"""Types and helpers shared by the benchmark models.

Conventions of every benchmark model in :mod:`emf_jax.models`:

- The model is a ``tfd.JointDistributionCoroutineAutoBatched`` whose latent variables are
  yielded one by one, each with an explicit ``name=`` (the EMF structured layer walks the
  program variable by variable).
- All observed data form one final variable named ``"obs"`` (:data:`OBSERVED_NAME`), a vector
  with one entry per observed quantity, so that pinning is always
  ``model.experimental_pin(obs=values)`` and the pinned model's parts are exactly the latents.
- Parameters are built in the requested floating dtype (float64 works under
  ``jax_enable_x64``); Bernoulli observations are ``int32``.
"""
from __future__ import annotations

import operator
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

from emf_jax import _checks

__all__ = [
    "OBSERVED_NAME",
    "OBSERVATION_KINDS",
    "ExactPosterior",
    "BenchmarkTarget",
    "resolve_dtype",
    "check_int",
    "check_positive",
    "check_real",
    "check_observation",
    "check_steps",
    "observation_distribution",
    "simulate_observations",
    "round_to_float32",
    "as_observations",
    "split_flat",
    "make_exact_posterior",
]

tfd = tfp.distributions

DTypeLike = Any

OBSERVED_NAME = "obs"
"""Name of the single observed variable of every benchmark model."""

OBSERVATION_KINDS = ("regression", "classification")
"""Observation models: Gaussian noise ("regression") or Bernoulli on logits ("classification")."""


class ExactPosterior(NamedTuple):
    """Exact posterior summaries of a target whose posterior is known in closed form.

    Attributes:
      log_marginal_likelihood: ``log p(obs)``, in float64.
      mean: posterior mean of each latent variable, keyed by name (float64 arrays of the
        variable's event shape).
      stddev: posterior standard deviation of each latent variable, keyed by name.
      covariance: posterior covariance of all latents flattened and concatenated in program
        order, ``[d, d]`` with ``d`` the total latent dimension.

    Example:
      >>> from emf_jax import models
      >>> exact = models.get_target("binary_tree_linear_4").exact_posterior
      >>> exact.covariance.shape, sorted(exact.mean)[:2]
      ((14, 14), ['layer0', 'layer1'])
    """

    log_marginal_likelihood: float
    mean: dict[str, np.ndarray]
    stddev: dict[str, np.ndarray]
    covariance: np.ndarray


class BenchmarkTarget(NamedTuple):
    """One posterior-inference benchmark problem.

    Attributes:
      name: the registry name (one of :data:`emf_jax.models.TARGET_NAMES`).
      model: the joint distribution over latents and the observed variable ``"obs"``.
      pinned_model: ``model.experimental_pin(**observations)``, a
        ``tfd.JointDistributionPinned`` over the latents; its ``unnormalized_log_prob`` is the
        VI target ``log p(x, obs)``.
      observations: ``{"obs": values}``, the pinned data.
      true_latents: the latent values the synthetic data were simulated from, keyed by name,
        or None for real or externally supplied data.
      description: a one-line description of the model and its settings.
      exact_posterior: the closed-form posterior (:class:`ExactPosterior`) where one exists
        (linear-Gaussian models, and Eight Schools by one-dimensional quadrature), else None.

    Example:
      >>> from emf_jax import models
      >>> target = models.get_target("eight_schools")
      >>> target.name, target.pinned_model.event_shape._fields
      ('eight_schools', ('avg_effect', 'log_stddev', 'school_effects_std'))
      >>> round(target.exact_posterior.log_marginal_likelihood, 2)
      -36.13
    """

    name: str
    model: Any
    pinned_model: Any
    observations: dict[str, jax.Array]
    true_latents: dict[str, np.ndarray] | None
    description: str
    exact_posterior: ExactPosterior | None = None


# ----------------------------------------------------------------------------- validation


def resolve_dtype(dtype: DTypeLike | None) -> np.dtype:
    """Returns the floating dtype to build a model in.

    Args:
      dtype: a floating dtype, or None for JAX's default float dtype (float64 under
        ``jax_enable_x64``, else float32).

    Returns:
      The resolved numpy dtype.

    Raises:
      TypeError: if `dtype` is not a floating dtype.
      ValueError: if float64 is requested while ``jax_enable_x64`` is off.
    """
    return _checks.resolve_float_dtype(dtype, strict=True)


def check_int(value: Any, name: str, minimum: int) -> int:
    """Checks that `value` is an integer >= `minimum` and returns it as a Python int."""
    return _checks.check_index(value, name, minimum)


def check_positive(value: Any, name: str) -> float:
    """Checks that `value` is a finite positive real number and returns it as a float."""
    return _checks.check_number(value, name, positive=True)


def check_real(value: Any, name: str) -> float:
    """Checks that `value` is a finite real number and returns it as a float."""
    return _checks.check_number(value, name)


def check_observation(observation: Any) -> str:
    """Checks the observation kind ("regression" or "classification")."""
    if observation not in OBSERVATION_KINDS:
        raise ValueError(
            f"observation must be one of {OBSERVATION_KINDS}, got {observation!r}.")
    return observation


def check_steps(steps: Sequence[int] | None, num_steps: int, name: str) -> tuple[int, ...]:
    """Validates a set of time indices: unique, increasing, in ``[0, num_steps)``, non-empty.

    Args:
      steps: the indices, or None for all of ``range(num_steps)``.
      num_steps: the length of the series.
      name: the argument's name, for error messages.

    Returns:
      The indices as a tuple of Python ints.
    """
    if steps is None:
        return tuple(range(num_steps))
    try:
        result = tuple(operator.index(s) for s in steps)
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of integers, got {steps!r}.") from err
    if not result:
        raise ValueError(f"{name} must not be empty.")
    if any(b <= a for a, b in zip(result, result[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {result}.")
    if result[0] < 0 or result[-1] >= num_steps:
        raise ValueError(f"{name} must lie in [0, {num_steps}), got {result}.")
    return result


# ----------------------------------------------------------------------------- building


def observation_distribution(
    locs: jax.Array,
    *,
    observation: str,
    observation_scale: jax.Array,
    logit_scale: jax.Array,
) -> tfd.Distribution:
    """The distribution of the observed vector ``"obs"`` given the observed latent values.

    Args:
      locs: ``[..., n]`` latent values at the observed positions.
      observation: "regression" (``Normal(locs, observation_scale)``) or "classification"
        (``Bernoulli(logits=logit_scale * locs)``, int32).
      observation_scale: the Gaussian noise scale (regression).
      logit_scale: the factor on the logits (classification).

    Returns:
      An ``Independent`` distribution with event shape ``[n]``, named ``"obs"``.
    """
    if observation == "regression":
        base = tfd.Normal(loc=locs, scale=observation_scale)
    else:
        base = tfd.Bernoulli(logits=logit_scale * locs, dtype=jnp.int32)
    return tfd.Independent(base, reinterpreted_batch_ndims=1, name=OBSERVED_NAME)


def simulate_observations(
    rng: np.random.Generator,
    locs: np.ndarray,
    *,
    observation: str,
    observation_scale: float,
    logit_scale: float,
) -> np.ndarray:
    """Draws observations in numpy (float64 or int32) given latent values.

    Both kinds consume the same random numbers (one normal and one uniform per entry), so
    that regression and classification data built from one generator state share the
    latent path and the random stream afterwards.
    """
    noise = rng.standard_normal(locs.shape)
    uniforms = rng.uniform(size=locs.shape)
    if observation == "regression":
        return locs + observation_scale * noise
    probs = 1.0 / (1.0 + np.exp(-logit_scale * locs))
    return (uniforms < probs).astype(np.int32)


def round_to_float32(values: np.ndarray) -> np.ndarray:
    """Rounds floating data to float32 precision (kept as float64), so that one data set is
    exactly representable, and identical, in float32 and float64 models."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.floating):
        return values.astype(np.float32).astype(np.float64)
    return values


def as_observations(values: np.ndarray, dtype: np.dtype) -> dict[str, jax.Array]:
    """Wraps observed values as ``{"obs": array}`` in `dtype` (int32 stays int32)."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.integer):
        return {OBSERVED_NAME: jnp.asarray(values, dtype=jnp.int32)}
    return {OBSERVED_NAME: jnp.asarray(values, dtype=dtype)}


def split_flat(
    flat: np.ndarray, names: Sequence[str], shapes: Sequence[tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """Splits the last axis of `flat` into named parts of the given event shapes.

    Args:
      flat: an array ``[..., D]``.
      names: the parts' names, in order.
      shapes: their event shapes; their sizes must add up to ``D``.

    Returns:
      A dict ``name -> array [..., *shape]``.

    Raises:
      ValueError: when the sizes do not add up to ``D``.

    Example:
      >>> import numpy as np
      >>> parts = split_flat(np.arange(6.0).reshape(2, 3), ["a", "b"], [(), (2,)])
      >>> parts["a"].shape, parts["b"].shape
      ((2,), (2, 2))
    """
    out = {}
    start = 0
    for name, shape in zip(names, shapes):
        size = int(np.prod(shape, dtype=int))
        out[name] = flat[..., start:start + size].reshape(flat.shape[:-1] + tuple(shape))
        start += size
    if start != flat.shape[-1]:
        raise ValueError(f"flat has {flat.shape[-1]} entries, the shapes need {start}.")
    return out


def make_exact_posterior(
    log_marginal_likelihood: float | np.ndarray,
    mean: np.ndarray,
    covariance: np.ndarray,
    names: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
) -> ExactPosterior:
    """Packs a flat posterior mean and covariance into an :class:`ExactPosterior`."""
    stddev = np.sqrt(np.clip(np.diagonal(covariance), 0.0, None))
    return ExactPosterior(
        log_marginal_likelihood=float(log_marginal_likelihood),
        mean=split_flat(mean, names, shapes),
        stddev=split_flat(stddev, names, shapes),
        covariance=covariance,
    )

