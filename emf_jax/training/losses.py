"""The training losses as public objects: `loss(params, seed, *args) -> scalar`.

`VariationalLoss` is the Monte Carlo variational loss of `fit_vi`; `MinibatchNLL` the minibatch
negative log-likelihood of `fit_density`; `mean_nll` the full-data validation loss.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from tensorflow_probability.substrates import jax as tfp

from emf_jax._numerics import guard_draws
from emf_jax.sharding import DataParallel
from emf_jax.training.data import num_rows
from emf_jax.training.engine import CompilerOptions, unstatic

__all__ = ["MinibatchNLL", "VariationalLoss", "mean_nll", "row_nll"]

PyTree = Any

# Rows per vectorised block when evaluating the validation log-likelihood.
_VALIDATION_BLOCK = 4096


@dataclasses.dataclass(frozen=True)
class VariationalLoss:
    """TFP's Monte Carlo variational loss of `build_fn(params)`, as `loss(params, seed)`.

    With the defaults it is the negative ELBO estimated from `sample_size` reparameterised
    draws, the semantics of `tfp.vi.fit_surrogate_posterior_stateless`. The object is a
    frozen dataclass, hashable by its fields, so that `minimize` compiles it once.

    Non-finite draws. With `mask_nonfinite_draws` (the default), a draw whose term
    ``discrepancy_fn(log p(x) - log q(x))`` (after combining its importance samples) is NaN
    or infinite is left out: the loss is the mean of the finite terms,
    ``sum_{i finite} term_i / #finite``, and its gradient is that mean's gradient. The
    target's inputs are guarded (`emf_jax._numerics.guard_draws`) so that a left-out draw's
    ``0 * inf`` cannot reach the gradient through the sample path. When every draw is
    non-finite the loss is NaN, and `minimize` skips the step. `loss_and_count` also
    returns the number of left-out draws (`fit_vi` reports their total). The VIMCO
    estimator, whose terms share leave-one-out baselines, is never masked.

    ``sample_size * importance_sample_size`` draws are made per call; with
    ``importance_sample_size > 1`` a term (and a left-out unit) is a group of importance
    samples.

    Attributes:
      target_log_prob_fn: the unnormalised target log-density.
      build_fn: ``build_fn(params) -> tfd.Distribution``, the surrogate.
      sample_size: Monte Carlo draws per evaluation.
      importance_sample_size: draws combined into one importance-weighted term.
      discrepancy_fn: Csiszar function of the log weights (`tfp.vi.kl_reverse`: the ELBO).
      gradient_estimator: a `tfp.vi.GradientEstimators` member.
      plan: a data-parallel plan that splits the draws over devices, or None.
      mask_nonfinite_draws: leave non-finite terms out of the average (see above).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> loss = VariationalLoss(tfd.Normal(0., 1.).log_prob,
      ...                        lambda p: tfd.Normal(p, 1.), sample_size=8)
      >>> float(loss(0.0, jax.random.key(0)))  # the surrogate equals the target: KL = 0
      0.0
      >>> clipped = VariationalLoss(lambda x: jnp.where(x > 0, -jnp.inf, tfd.Normal(0., 1.)
      ...                           .log_prob(x)), lambda p: tfd.Normal(p, 1.), sample_size=8)
      >>> value, num_left_out = clipped.loss_and_count(0.0, jax.random.key(0))
      >>> float(value), int(num_left_out) > 0   # the mean of the finite terms
      (0.0, True)
    """

    target_log_prob_fn: Callable[..., jax.Array]
    build_fn: Callable[[PyTree], Any]
    sample_size: int = 1
    importance_sample_size: int = 1
    discrepancy_fn: Callable[[jax.Array], jax.Array] = tfp.vi.kl_reverse
    gradient_estimator: Any = tfp.vi.GradientEstimators.REPARAMETERIZATION
    plan: DataParallel | None = None
    mask_nonfinite_draws: bool = True

    def __call__(self, params: PyTree, seed: jax.Array) -> jax.Array:
        return self.loss_and_count(params, seed)[0]

    def loss_and_count(self, params: PyTree, seed: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The loss and the number of draws (terms) left out as non-finite.

        Args:
          params: the surrogate's parameters.
          seed: a PRNG key.

        Returns:
          ``(loss, num_nonfinite_draws)``: a scalar and an int32 scalar (0 without
          masking).

        Example:
          >>> import jax
          >>> from tensorflow_probability.substrates import jax as tfp
          >>> tfd = tfp.distributions
          >>> loss = VariationalLoss(tfd.Normal(0., 1.).log_prob, lambda p: tfd.Normal(p, 1.))
          >>> int(loss.loss_and_count(0.0, jax.random.key(0))[1])
          0
        """
        surrogate = self.build_fn(params)
        stopped = None
        if self.gradient_estimator == tfp.vi.GradientEstimators.DOUBLY_REPARAMETERIZED:
            stopped = self.build_fn(jax.tree.map(jax.lax.stop_gradient, params))
        target = self.target_log_prob_fn
        if self.plan is not None:
            target = _sharded_target(target, self.plan)
        discrepancy_fn = self.discrepancy_fn
        counts: list[jax.Array] = []
        if (self.mask_nonfinite_draws
                and self.gradient_estimator != tfp.vi.GradientEstimators.VIMCO):
            target = _guarded_target(target)
            discrepancy_fn = _masked_discrepancy(discrepancy_fn, counts)
        loss = tfp.vi.monte_carlo_variational_loss(
            target, surrogate_posterior=surrogate,
            sample_size=self.sample_size,
            importance_sample_size=self.importance_sample_size,
            discrepancy_fn=discrepancy_fn,
            gradient_estimator=self.gradient_estimator,
            stopped_surrogate_posterior=stopped, seed=seed)
        # The discrepancy runs once per trace; its count is of this same trace.
        count = counts[-1] if counts else jnp.zeros((), jnp.int32)
        return loss, count


def _guarded_target(target_log_prob_fn: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    """The target with `guard_draws` on its floating inputs (one leading draw axis)."""
    def target(*args, **kwargs):
        leaves, treedef = jax.tree.flatten((args, kwargs))
        draws = [i for i, leaf in enumerate(leaves)
                 if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jnp.inexact)
                 and leaf.ndim >= 1]
        guarded = guard_draws([leaves[i] for i in draws], 1)
        for i, leaf in zip(draws, guarded):
            leaves[i] = leaf
        args, kwargs = jax.tree.unflatten(treedef, leaves)
        return target_log_prob_fn(*args, **kwargs)

    return target


def _masked_discrepancy(discrepancy_fn: Callable[[jax.Array], jax.Array],
                        counts: list) -> Callable[[jax.Array], jax.Array]:
    """`discrepancy_fn` with non-finite terms replaced so that their mean is over the rest.

    TFP averages the returned terms; terms ``t_i * n / #finite`` (0 where not finite)
    average to the mean of the finite ones. Non-finite log-weights are replaced by 0 before
    the discrepancy (the double-`where` that keeps their gradient exactly 0).
    """
    def masked(log_weights: jax.Array) -> jax.Array:
        finite = jnp.isfinite(log_weights)
        zero = jnp.zeros((), log_weights.dtype)
        terms = discrepancy_fn(jnp.where(finite, log_weights, zero))
        finite = finite & jnp.isfinite(terms)
        num_finite = jnp.sum(finite.astype(jnp.int32))
        counts.append(jnp.asarray(finite.size, jnp.int32) - num_finite)
        # NaN when nothing is finite: the step is then skipped by the engine's guard.
        scale = jnp.where(num_finite > 0,
                          finite.size / jnp.maximum(num_finite, 1).astype(terms.dtype),
                          jnp.asarray(jnp.nan, terms.dtype))
        return jnp.where(finite, terms, zero) * scale

    return masked


def _sharded_target(target_log_prob_fn: Callable[..., jax.Array],
                    plan: DataParallel) -> Callable[..., jax.Array]:
    """The target with its samples (and log-densities) split along the sample axis.

    XLA propagates the split back to the surrogate's draws and through the gradient.
    """
    def target(*args, **kwargs):
        args, kwargs = plan.shard_leading_axis((args, kwargs))
        return plan.shard_leading_axis(target_log_prob_fn(*args, **kwargs))

    return target


@dataclasses.dataclass(frozen=True)
class MinibatchNLL:
    """Negative mean log-likelihood of a random minibatch, as `loss(params, seed, data)`.

    Each call draws `batch_size` rows of `data` uniformly with replacement (all rows, in
    order, when `batch_size` equals the number of rows). A frozen dataclass, hashable by its
    fields, so that `minimize` compiles it once.

    Attributes:
      build_fn: ``build_fn(params) -> tfd.Distribution`` with scalar batch shape.
      batch_size: rows per minibatch.
      plan: a data-parallel plan that splits the rows over devices, or None.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> loss = MinibatchNLL(lambda p: tfp.distributions.Normal(p, 1.), batch_size=2)
      >>> round(float(loss(0.0, jax.random.key(0), jnp.zeros(2))), 4)  # 0.5 log(2 pi)
      0.9189
    """

    build_fn: Callable[[PyTree], Any]
    batch_size: int
    plan: DataParallel | None = None

    def __call__(self, params: PyTree, seed: jax.Array, data: PyTree) -> jax.Array:
        n = num_rows(data)
        if self.batch_size == n:
            batch = data
        else:  # Uniform rows with replacement: O(batch_size) per step, no shuffling state.
            rows = jax.random.randint(seed, (self.batch_size,), 0, n)
            batch = jax.tree.map(lambda x: jnp.take(x, rows, axis=0), data)
        if self.plan is None:
            return -jnp.mean(self.build_fn(params).log_prob(batch))
        log_probs = self.build_fn(params).log_prob(self.plan.shard_leading_axis(batch))
        return -jnp.mean(self.plan.shard_leading_axis(log_probs))


def mean_nll(build_fn: Any, params: PyTree, data: PyTree) -> jax.Array:
    """Negative mean log-likelihood of all rows of `data`, in vectorised blocks.

    Args:
      build_fn: ``build_fn(params) -> tfd.Distribution`` (possibly wrapped by
        `emf_jax.training.engine.static`).
      params: the parameters.
      data: a structured data pytree (leaves ``[N, ...]``).

    Returns:
      ``-mean(log_prob(rows))``, a scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> nll = mean_nll(lambda p: tfp.distributions.Normal(p, 1.), 0.0, jnp.zeros(3))
      >>> round(float(nll), 4)
      0.9189
    """
    return jnp.mean(row_nll(build_fn, params, data))


def row_nll(build_fn: Any, params: PyTree, data: PyTree) -> jax.Array:
    """The negative log-likelihood of each row of `data`, in vectorised blocks.

    `fit_density` takes the validation loss (their mean) and compares the training and
    validation losses (means and medians, with their standard errors) from these values.

    Args:
      build_fn: ``build_fn(params) -> tfd.Distribution`` (possibly wrapped by
        `emf_jax.training.engine.static`).
      params: the parameters.
      data: a structured data pytree (leaves ``[N, ...]``).

    Returns:
      ``-log_prob(row)`` for every row, shape ``[N]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> nll = row_nll(lambda p: tfp.distributions.Normal(p, 1.), 0.0, jnp.array([0.0, 2.0]))
      >>> [round(float(v), 4) for v in nll]                   # 0.5 log(2 pi) + x^2 / 2
      [0.9189, 2.9189]
    """
    dist = unstatic(build_fn)(params)
    n = num_rows(data)
    return -jax.lax.map(dist.log_prob, data, batch_size=min(n, _VALIDATION_BLOCK))


_row_nll_jit = jax.jit(row_nll, static_argnums=0)


@functools.lru_cache(maxsize=None)
def row_nll_runner(compiler_options: CompilerOptions) -> Callable[..., Any]:
    """The jitted `row_nll` compiled with `compiler_options`."""
    if not compiler_options:
        return _row_nll_jit
    return jax.jit(row_nll, static_argnums=0, compiler_options=dict(compiler_options))
