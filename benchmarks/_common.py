"""What the VI benchmark and its NumPyro peers share: the method tables, the budget,
the fitted-method record and the optimiser (one module, so that neither imports the other).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import numpy as np

__all__ = ["Budget", "GAUSSIAN_METHODS", "METHODS", "MethodRun", "OWN_METHODS",
           "PAPER_PEER_METHODS", "PEER_METHODS", "REAL_METHODS", "REPARAM_METHODS",
           "learning_rates", "make_optimizer", "with_learning_rate"]


METHODS: dict[str, str] = {
    "mean_field": "mean field",
    "full_rank": "full-rank",
    "asvi": "ASVI",
    "iaf": "IAF",
    "emf_t": "EMF-T",
    "gemf_t": "GEMF-T",
    "vip": "VIP",
    "mif": "MIF",
    "gemf_vip": "GEMF-VIP",
    "numpyro_mvn": "NumPyro AutoMultivariateNormal",
    "numpyro_iaf": "NumPyro AutoIAFNormal",
    "numpyro_bnaf": "NumPyro AutoBNAFNormal",
}
"""Method keys and their labels, in table order."""

OWN_METHODS = ("mean_field", "full_rank", "asvi", "iaf", "emf_t", "gemf_t")
REPARAM_METHODS = ("vip", "mif", "gemf_vip")
"""The model-informed reparameterisations (issue 19): run with ``--methods``, not by default."""
PAPER_PEER_METHODS = ("numpyro_iaf", "numpyro_bnaf")
PEER_METHODS = ("numpyro_mvn",) + PAPER_PEER_METHODS
# VIP: a Gaussian over the reparameterised space, with as few parameters as full rank.
GAUSSIAN_METHODS = ("mean_field", "full_rank", "asvi", "vip", "numpyro_mvn")
REAL_METHODS = ("mean_field", "full_rank", "asvi", "iaf", "gemf_t", "numpyro_mvn",
                "numpyro_iaf")
"""The real suite's methods: each library's defaults (NumPyro's AutoIAFNormal included)."""


class Budget(NamedTuple):
    """The fixed budget every method gets.

    Attributes:
      num_steps: Adam steps.
      sample_size: Monte Carlo draws per step (reparameterised -ELBO gradient).
      gaussian_lrs: peak learning rates tried for mean field, full rank, ASVI and VIP (cheap
        per step): each target reports the one with the lower mean -ELBO over seeds.
      flow_lr: peak learning rate of the flows (IAF, EMF-T, GEMF-T, MIF, GEMF-VIP, NumPyro
        peers).
      final_lr_fraction: cosine decay from the peak to this fraction of it over the run.
      hidden_units: hidden layers of every autoregressive network (2 flow layers).
      eval_draws: fresh surrogate draws for -ELBO and k̂.
      reference_draws: reference posterior draws scored by log q.
    """

    num_steps: int
    sample_size: int
    gaussian_lrs: tuple[float, ...]
    flow_lr: float
    final_lr_fraction: float
    hidden_units: tuple[int, ...]
    eval_draws: int
    reference_draws: int

    def describe(self) -> str:
        lrs = " or ".join(f"{lr:g}" for lr in self.gaussian_lrs)
        return (f"{self.num_steps} Adam steps, {self.sample_size} draws/step, peak learning "
                f"rate {lrs} (mean field, full rank, ASVI, VIP: the better per target) or "
                f"{self.flow_lr:g} (flows) with cosine decay to {self.final_lr_fraction:g}× "
                "of the peak; flows: 2 "
                f"autoregressive layers, hidden {list(self.hidden_units)}; -ELBO and k̂ from "
                f"{self.eval_draws} fresh draws, log q from {self.reference_draws} "
                "reference draws")




@dataclasses.dataclass
class MethodRun:
    """What one method needs: ``fit(seed, learning_rate) -> (params, losses, num_nonfinite)``
    and ``evaluate(params, seed, reference_draws) -> dict`` (both compile once and are reused
    across seeds and learning rates)."""

    fit: Callable[[int, float], tuple[Any, np.ndarray, int]]
    evaluate: Callable[[Any, int, Any], dict[str, Any]]


def learning_rates(budget: Budget, method: str) -> tuple[float, ...]:
    """The peak learning rates `method` is run with (NumPyro's Gaussian: the first only, as
    its optimiser is compiled into its fit)."""
    if method in GAUSSIAN_METHODS:
        lrs = tuple(budget.gaussian_lrs)
        return lrs[:1] if method in PEER_METHODS else lrs
    return (budget.flow_lr,)


def make_optimizer(budget: Budget, method: str) -> Any:
    """Adam with cosine decay from the method's (first) peak learning rate.

    The peak is an injected hyperparameter (``state[0].hyperparams["learning_rate"]``), so
    that :func:`with_learning_rate` can change it without recompiling a fit.
    """
    import optax

    decay = optax.cosine_decay_schedule(1.0, budget.num_steps, alpha=budget.final_lr_fraction)
    return optax.chain(
        optax.inject_hyperparams(optax.adam)(learning_rate=learning_rates(budget, method)[0]),
        optax.scale_by_schedule(decay))


def with_learning_rate(opt_state: Any, learning_rate: float) -> Any:
    """The state of :func:`make_optimizer`'s optimiser with another peak learning rate."""
    import jax.numpy as jnp

    inject = opt_state[0]
    old = inject.hyperparams["learning_rate"]
    hyper = dict(inject.hyperparams, learning_rate=jnp.asarray(learning_rate, old.dtype))
    return (inject._replace(hyperparams=hyper),) + tuple(opt_state[1:])
