"""`tfd.MarkovChain`: a whole time series as one variable, mapped step by step by `lax.scan`.

A chain's value has shape ``lead + [T] + step_event`` (``lead``: the chain's batch shape, or
the sample dimensions of a `tfd.Sample` / `tfd.Independent` around it). Step 0 is mapped by
the map of the chain's ``initial_state_prior``, step ``k ≥ 1`` by the map of
``transition_fn(k − 1, x_{k−1})``; both come from the registry (`transform_for`), so any
family with a registered map can be a chain's step family::

    forward:   x_0 = B_0(g_0(e_0)),   x_k = B_k(g_k(e_k; x_{k−1}))        (a lax.scan over k)
    inverse:   e_k = g_k⁻¹(B_k⁻¹(x_k); x_{k−1})                          (every k at once)
    log|det J| = Σ_k log|det ∂g_k/∂e_k| + log|det ∂B_k/∂u_k|

where ``g_k(e) = λ_k·f_k(e) + (1 − λ_k)·e`` is the gated step map (`emf_jax.gates`) and
``B_k`` the step's support bijector. The step body is traced once whatever ``T`` is, so a
chain compiles in a time that does not grow with its length, unlike the same process
written as a Python loop of ``T`` variables.

Gates: one gate parameter ``w`` for the whole chain (a scalar: every step shares λ, the
default, consistent with one λ per latent variable), or one per step (shape ``[T]``).

The inverse needs no scan when the values are given (every step's conditional depends on
known values only), so it is vectorised over the steps: density evaluation of long chains
is parallel.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from tensorflow_probability.substrates import jax as tfp

from emf_jax.transforms.base import Transform
from emf_jax.transforms.registry import (
    UnsupportedDistributionError,
    current_variable,
    register_transform,
    transform_for,
)

tfd = tfp.distributions
Array = jax.Array

__all__ = ["ChainTransform", "markov_chain_transform"]


@dataclasses.dataclass(frozen=True, eq=False)
class ChainTransform:
    """The map of a `tfd.MarkovChain` (see the module docstring for the formulas).

    Attributes:
      initial: the map of step 0 (the initial state prior's).
      transition_fn: the chain's ``transition_fn(previous_step, previous_state)``.
      num_steps: ``T`` (static).
      step_event_shape: the event shape of one step.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.transforms import transform_for
      >>> tfd = tfp.distributions
      >>> chain = tfd.MarkovChain(tfd.Normal(0., 1.), lambda _, x: tfd.Normal(x, 0.5), 4)
      >>> t = transform_for(chain)
      >>> isinstance(t, ChainTransform), t.num_steps, t.step_event_shape
      (True, 4, ())
      >>> step = t.step_transform(jnp.array(0), jnp.array(1.0))   # x_1 ~ Normal(x_0 = 1, 0.5)
      >>> float(step.shift), float(step.scale)
      (1.0, 0.5)
    """

    initial: Transform
    transition_fn: Callable[[Any, Array], Any]
    num_steps: int
    step_event_shape: tuple[int, ...]

    @property
    def support_bijector(self) -> Any:
        """The support bijector of step 0, or None for the real line (used for its name)."""
        return self.initial.support_bijector

    def step_transform(self, previous_step: Array, previous_state: Array) -> Transform:
        """The map of the step after `previous_step`, given the state at that step."""
        return transform_for(self.transition_fn(previous_step, previous_state))

    def unconstrained_shape(self, value_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The noise shape of a value of shape ``lead + [T] + step_event``."""
        axis = len(value_shape) - 1 - len(self.step_event_shape)
        step_shape = tuple(value_shape[:axis]) + tuple(value_shape[axis + 1:])
        support = self.initial.support_bijector
        if support is not None:
            step_shape = tuple(support.inverse_event_shape(step_shape))
        return step_shape[:axis] + (self.num_steps,) + step_shape[axis:]


def markov_chain_transform(dist: Any) -> ChainTransform:
    """MarkovChain(initial_state_prior, transition_fn, num_steps): the per-step maps, scanned.

    Args:
      dist: a `tfd.MarkovChain` whose state is one array.

    Returns:
      A `ChainTransform` (apply it with `emf_jax.apply.apply_forward` / `apply_inverse`).

    Raises:
      UnsupportedDistributionError: for a chain whose state is a structure (a joint
        distribution) rather than one array, or a step family without a map.
      ValueError: when ``num_steps`` is not static.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> chain = tfd.MarkovChain(tfd.MultivariateNormalDiag([0., 0.], [1., 1.]),
      ...                         lambda _, x: tfd.MultivariateNormalDiag(x, [.1, .1]), 10)
      >>> t = markov_chain_transform(chain)
      >>> t.num_steps, t.step_event_shape, t.unconstrained_shape((10, 2))
      (10, (2,), (10, 2))
    """
    prior = dist.initial_state_prior
    if isinstance(prior.dtype, (dict, list, tuple)):
        raise UnsupportedDistributionError(
            f"{current_variable()} is a MarkovChain whose states are structures (a joint "
            "initial_state_prior), which is not supported: use one array-valued state (stack "
            "the parts on the last axis).")
    event_shape = dist.event_shape
    if event_shape.rank is None or event_shape[0] is None:
        raise ValueError(f"{current_variable()} is a MarkovChain without a static num_steps "
                         f"(a Python int), which its map needs; got {dist.num_steps!r}")
    dims = tuple(int(d) for d in event_shape)
    return ChainTransform(initial=transform_for(prior), transition_fn=dist.transition_fn,
                          num_steps=dims[0], step_event_shape=dims[1:])


register_transform(tfd.MarkovChain, markov_chain_transform)
