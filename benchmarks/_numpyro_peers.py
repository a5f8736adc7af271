"""NumPyro's autoguide flows as outside peers in ``benchmarks.vi`` (optional dependency).

NumPyro (the ``bench`` extra) is imported only when a peer runs; :func:`available` says
whether it is installed. The peers see the same target as every other method: the pinned
TFP model's log joint density on one flat unconstrained vector ``u`` (the model's default
event-space bijector with its log-determinant; the identity for the paper's targets),
exposed to NumPyro as an improper flat site plus a ``numpyro.factor``. Autoguides that fit
one joint flow or Gaussian over all latents (``AutoIAFNormal``, ``AutoBNAFNormal``,
``AutoMultivariateNormal``) do not use the model's structure, so they are unaffected by how the
density is written.

Training: ``numpyro.infer.SVI`` with ``Trace_ELBO(num_particles=sample_size)`` and the same
optax optimiser (Adam with cosine decay) and step count as the other methods;
the initialisation and a ``lax.scan`` of ``svi.update`` steps are compiled once and reused
for every seed (``svi.run`` would re-compile on every call). NumPyro has no non-finite
guard: a step with a NaN loss spoils the fit, and the table counts such steps.

Evaluation: draws ``z ~ N(0, I)`` are pushed through the guide's transforms, with
``log q = log N(z) - sum log|det J|`` (no inverse needed); ``log q`` of reference draws uses
the transforms' inverses, which NumPyro's IAF has (``D`` sequential passes) and its block
neural autoregressive flow does not (reported as "—").
"""
from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

__all__ = ["available", "make_peer"]


def available() -> bool:
    """Whether NumPyro can be imported."""
    return importlib.util.find_spec("numpyro") is not None


class _FlatTarget:
    """The pinned model's log density on one flat unconstrained vector."""

    def __init__(self, pinned: Any):
        from emf_jax.internal import flat_latent_layout

        layout = flat_latent_layout(pinned)
        self.pinned = pinned
        self.size = layout.total_size
        self.dtype = layout.dtype
        self.bijector = layout.flat_bijector()

    def log_prob(self, u: Any) -> Any:
        """``log p(x(u), y) + log|det dx/du|`` for ``u`` of shape ``[D]``."""
        x = self.bijector.forward(u)
        return (self.pinned.unnormalized_log_prob(x)
                + self.bijector.forward_log_det_jacobian(u, event_ndims=1))

    def to_flat(self, x: Any) -> Any:
        """Constrained latent draws (structure, leaves ``[n, ...]``) to ``[n, D]``."""
        return self.bijector.inverse(x)

    def from_flat(self, u: Any) -> Any:
        return self.bijector.forward(u)


def make_peer(target: Any, method: str, budget: Any, *, library_defaults: bool = False
              ) -> Any:
    """Fit and evaluation functions of a NumPyro autoguide on `target`.

    Args:
      target: an object with a ``pinned_model`` (``emf_jax.models.BenchmarkTarget`` or
        ``benchmarks.real_models.RealTarget``).
      method: "numpyro_iaf" (``AutoIAFNormal``: 2 flows of the budget's hidden units, at least
        ``D`` wide, tanh, as the paper's IAF baseline), "numpyro_bnaf"
        (``AutoBNAFNormal``, NumPyro's defaults: one flow, hidden factors [8, 8]) or
        "numpyro_mvn" (``AutoMultivariateNormal``, NumPyro's defaults: init_to_uniform,
        init_scale 0.1).
      budget: a ``benchmarks._common.Budget``.
      library_defaults: build ``AutoIAFNormal`` with NumPyro's defaults (3 flows, hidden
        ``[D, D]``, ELU) instead of the paper's baseline configuration (the real suite: a new
        user's first experience).

    Returns:
      A ``benchmarks._common.MethodRun``.

    Raises:
      ImportError: if NumPyro is not installed.
      ValueError: for an unknown `method`.
    """
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax.example_libraries import stax
    from numpyro.distributions import constraints
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoBNAFNormal, AutoIAFNormal, AutoMultivariateNormal
    from numpyro.optim import optax_to_numpyro

    from benchmarks._common import MethodRun, learning_rates, make_optimizer
    from emf_jax.diagnostics import psis_khat

    flat = _FlatTarget(target.pinned_model)
    size = flat.size

    def model() -> None:
        u = numpyro.sample("u", dist.ImproperUniform(constraints.real_vector, (), (size,)))
        numpyro.factor("log_joint", flat.log_prob(u))

    if method == "numpyro_iaf" and library_defaults:
        guide = AutoIAFNormal(model)
        invertible = True
    elif method == "numpyro_iaf":
        # NumPyro's MADE needs hidden layers at least as wide as the input.
        hidden = [max(int(h), size) for h in budget.hidden_units]
        guide = AutoIAFNormal(model, num_flows=2, hidden_dims=hidden, nonlinearity=stax.Tanh)
        invertible = True
    elif method == "numpyro_bnaf":
        guide = AutoBNAFNormal(model)
        invertible = False
    elif method == "numpyro_mvn":
        guide = AutoMultivariateNormal(model)
        invertible = True
    else:
        raise ValueError(f"unknown NumPyro peer {method!r}; expected numpyro_iaf, "
                         "numpyro_bnaf or numpyro_mvn.")
    svi = SVI(model, guide, optax_to_numpyro(make_optimizer(budget, method)),
              loss=Trace_ELBO(num_particles=budget.sample_size))

    # `svi.run` re-traces and re-compiles on every call. Instead, set up the guide's
    # prototype once, eagerly (it stores shapes on the guide), then compile the whole fit
    # (init and a lax.scan of updates) once and reuse it for every seed.
    svi.init(jax.random.PRNGKey(0))

    @jax.jit
    def _run(key: jax.Array) -> tuple[Any, jax.Array]:
        state = svi.init(key)
        state, losses = jax.lax.scan(lambda s, _: svi.update(s), state, None,
                                     length=budget.num_steps)
        return svi.get_params(state), losses

    def fit(seed: int, learning_rate: float) -> tuple[Any, np.ndarray, int]:
        # The learning rate is compiled into the optimiser above: only that one can run.
        if learning_rate != learning_rates(budget, method)[0]:
            raise ValueError(f"{method} runs at the learning rate "
                             f"{learning_rates(budget, method)[0]}, got {learning_rate}.")
        params, losses = _run(jax.random.PRNGKey(seed))
        jax.block_until_ready(params)
        losses = np.asarray(losses)
        # NumPyro has no non-finite guard: count the steps whose loss was not finite.
        return params, losses, int(np.sum(~np.isfinite(losses)))

    @jax.jit
    def _evaluate(params: Any, key: jax.Array, reference: Any) -> dict[str, Any]:
        posterior = guide.get_posterior(params)
        if isinstance(posterior, dist.TransformedDistribution):
            base = posterior.base_dist
            z = base.sample(key, (budget.eval_draws,))
            log_q = base.log_prob(z)
            u = z
            for transform in posterior.transforms:
                v = transform(u)
                log_q = log_q - transform.log_abs_det_jacobian(u, v)
                u = v
        else:  # AutoMultivariateNormal: a Gaussian on u
            u = posterior.sample(key, (budget.eval_draws,))
            log_q = posterior.log_prob(u)
        log_w = jax.vmap(flat.log_prob)(u) - log_q
        out = {"log_w": log_w, "khat": psis_khat(log_w), "draws": flat.from_flat(u)}
        if reference is not None and invertible:
            ref_flat = flat.to_flat(reference)
            ref_flat = jnp.asarray(ref_flat, u.dtype)
            # log q_x(x) = log q_u(u(x)) + log|det du/dx|.
            out["log_q_ref"] = jnp.mean(posterior.log_prob(ref_flat)
                                        + flat.bijector.inverse_log_det_jacobian(
                                            reference, event_ndims=_event_ndims(flat)))
        return out

    def evaluate(params: Any, seed: int, reference: Any) -> dict[str, Any]:
        key = jax.random.fold_in(jax.random.PRNGKey(seed), 7919)
        return _evaluate(params, key, reference)

    return MethodRun(fit=fit, evaluate=evaluate)


def _event_ndims(flat: _FlatTarget) -> Any:
    """The event ndims structure of the flat bijector's constrained side."""
    return flat.bijector.inverse_min_event_ndims
