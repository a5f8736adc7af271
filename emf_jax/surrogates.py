"""EMF surrogate posteriors for variational inference, in TFP's stateless-builder shape.

`build_emf_surrogate_posterior_stateless` builds the embedded-model flows. `SURROGATES` names
every surrogate the package builds from one model, the baselines included, and
`build_surrogate_stateless(name, model, **options)` builds one by name: benchmarks and the
demo use it, so a method has one spelling everywhere.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Union

import jax
from tensorflow_probability.substrates import jax as tfp

from emf_jax import baselines, checkpoint
from emf_jax import flows as flows_lib
from emf_jax._checks import as_key
from emf_jax.architectures import ARCHITECTURES, EmbeddedFlow, FlowFactory, build_embedded_flow
from emf_jax.distribution import EmbeddedFlowDistribution
from emf_jax.gates import DEFAULT_INITIAL_GATE
from emf_jax.initialization import DEFAULT_TEMPERATURE_LADDER, select_temperature
from emf_jax.tracing import joint_log_prob_fn

__all__ = ["SURROGATES", "build_emf_surrogate_posterior_stateless", "build_surrogate_stateless"]

Array = jax.Array


def build_emf_surrogate_posterior_stateless(
    model: Any,
    *,
    architecture: str = "gemf-t",
    backbone: Union[str, FlowFactory] = "iaf",
    num_backbone_layers: int = 2,
    hidden_units: Sequence[int] = (512, 512),
    activation: Callable[[Array], Array] = jax.nn.relu,
    initial_gate: float = DEFAULT_INITIAL_GATE,
    backbone_kwargs: Optional[dict] = None,
    initial_temperature: Union[str, float] = "auto",
    name: str = "emf_surrogate_posterior",
) -> tuple[Callable[..., dict], Callable[[dict], EmbeddedFlowDistribution]]:
    """Builds an embedded-model-flow surrogate posterior for a (pinned) TFP model.

    The surrogate pushes ``N(0, I_D)`` through a learnable elementwise affine stage
    (``params["base"]``: ``z -> shift + scale * z``), a backbone flow and the model's own
    (gated) structured layer, so it starts close to the prior's structure and can bend away
    from it where the posterior needs to. The model's own parameters stay fixed; the affine
    stage, the gates and the backbone are trained.

    Tempered start. For a pinned model the affine stage's initial scale is a temperature
    ``tau`` picked by `emf_jax.initialization.select_temperature`: the largest of 1, 0.5,
    0.25, 0.1, 0.05, 0.02, 0.01 such that all of 32 draws of the initial surrogate with noise
    scaled by ``2 tau`` (a margin for the tail a long fit meets) have a finite
    target log-density (`emf_jax.joint_log_prob_fn`, which also takes Deterministic nodes and
    partly pinned nested parts) (so ``tau = 1``, the prior itself, whenever the prior's
    draws keep the likelihood finite). This runs inside ``init_fn`` and is traceable under
    `jax.jit`.

    Args:
      model: a pinned joint distribution (observations pinned with
        ``model.experimental_pin(...)``) or an unpinned one (all variables latent).
      architecture: "gemf-t" (default: backbone, then the gated structured layer on top),
        "emf-t" (ungated), "gemf-m" / "emf-m" (structured layer between the two halves of the
        backbone), "gemf-b" / "emf-b" (structured layer at the bottom), "flow" (the backbone
        alone: the IAF baseline), "structured" (the gated layer alone). See
        `emf_jax.architectures`.
      backbone: "iaf" (default for VI: one network pass per sample), "maf", "realnvp", "nsf",
        or a flow factory.
      num_backbone_layers: autoregressive / coupling layers in the backbone (reversing
        permutations between them). The paper: 2.
      hidden_units: hidden layer sizes of each conditioner network. The paper: (512, 512).
      activation: the conditioner's activation (the paper: relu; its IAF baseline: tanh).
      initial_gate: λ at initialisation (0.999: almost exactly the model).
      backbone_kwargs: extra options for the backbone factory.
      initial_temperature: "auto" (the tempered start above for a pinned model, 1 for an
        unpinned one) or a positive float, the initial scale of the affine stage.
      name: the distribution's name.

    Returns:
      ``(init_fn, build_fn)``: ``params = init_fn(seed)`` (a dict of arrays) and
      ``surrogate = build_fn(params)``, a `tfd.Distribution` whose samples have the pinned
      model's latent structure (as ``pinned.sample_unpinned()`` gives), with `log_prob` and
      `experimental_sample_and_log_prob`. Constrained latents land in their support.

    Example:
      >>> import jax, optax, emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> def program():
      ...     mu = yield tfd.Normal(0., 1., name='mu')
      ...     yield tfd.Normal(mu, 0.5, name='y')
      >>> pinned = tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(y=1.)
      >>> init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
      ...     pinned, hidden_units=(8,))
      >>> params, losses = jax.jit(lambda key: tfp.vi.fit_surrogate_posterior_stateless(
      ...     pinned.unnormalized_log_prob, build_fn, init_fn(key), optax.adam(1e-2),
      ...     num_steps=20, sample_size=4, seed=key))(jax.random.key(0))
      >>> build_fn(params).sample(seed=jax.random.key(1)).mu.shape
      ()
    """
    auto = isinstance(initial_temperature, str)
    if auto and initial_temperature != "auto":
        raise ValueError("`initial_temperature` must be 'auto' or a positive float, got "
                         f"{initial_temperature!r}.")
    if not auto and not float(initial_temperature) > 0:
        raise ValueError(f"`initial_temperature` must be > 0, got {initial_temperature!r}.")
    inner = build_embedded_flow(
        model, architecture=architecture, backbone=backbone,
        num_backbone_layers=num_backbone_layers, hidden_units=hidden_units,
        activation=activation, initial_gate=initial_gate, backbone_kwargs=backbone_kwargs)
    base = flows_lib.affine_flow(inner.event_size, dtype=inner.trace.latents[0].dtype)
    pinned = isinstance(model, tfp.experimental.distributions.JointDistributionPinned)

    def init_fn(seed: Any = None) -> dict:
        params = inner.init(seed)
        params["base"] = base.init(jax.random.key(0))  # the identity, whatever the key
        if auto and pinned:
            key = jax.random.fold_in(as_key(0 if seed is None else seed), 1)
            tau: Any = select_temperature(
                lambda z: inner.forward_and_log_det(params, z), joint_log_prob_fn(model),
                key, event_size=inner.event_size, dtype=inner.trace.latents[0].dtype,
                ladder=DEFAULT_TEMPERATURE_LADDER, num_draws=32, min_finite_fraction=1.0,
                probe_scale=2.0)
        else:
            tau = 1.0 if auto else float(initial_temperature)
        params["base"] = flows_lib.scale_affine_params(params["base"], tau)
        return params

    flow = _with_base_stage(inner, base)._replace(init=init_fn)

    def build_fn(params: dict) -> EmbeddedFlowDistribution:
        return EmbeddedFlowDistribution(flow, params, name=name)

    return init_fn, build_fn


# Checkpoints from before the affine base stage load with it at the identity (all zeros).
checkpoint.register_zero_filled_leaves(lambda path: "['base']" in path)


def _with_base_stage(flow: EmbeddedFlow, base: flows_lib.Flow) -> EmbeddedFlow:
    """`flow` with the flat flow `base` (params["base"]) applied first to the noise."""
    def forward_and_log_det(params: dict, z: Array) -> tuple[Any, Array]:
        z, ldj0 = base.forward_and_log_det(params["base"], z)
        x, ldj1 = flow.forward_and_log_det(params, z)
        return x, ldj0 + ldj1

    def inverse_and_log_det(params: dict, values: Any) -> tuple[Array, Array]:
        z, ildj1 = flow.inverse_and_log_det(params, values)
        z, ildj0 = base.inverse_and_log_det(params["base"], z)
        return z, ildj0 + ildj1

    return flow._replace(forward_and_log_det=forward_and_log_det,
                         inverse_and_log_det=inverse_and_log_det)


SURROGATES: dict[str, Callable[..., tuple[Callable[..., Any], Callable[[Any], Any]]]] = {
    "mean-field": baselines.build_mean_field_surrogate_stateless,
    "full-rank": baselines.build_full_rank_surrogate_stateless,
    "asvi": baselines.build_asvi_surrogate_stateless,
    "iaf": baselines.build_iaf_surrogate_stateless,
    **{name: functools.partial(build_emf_surrogate_posterior_stateless, architecture=name)
       for name in ARCHITECTURES},
}


def build_surrogate_stateless(name: str, model: Any, **options: Any
                              ) -> tuple[Callable[..., Any], Callable[[Any], Any]]:
    """Builds the surrogate called `name` (a key of `SURROGATES`) for a pinned model.

    Args:
      name: "mean-field", "full-rank", "asvi", "iaf" (the baselines of `emf_jax.baselines`)
        or an architecture name ("gemf-t", "emf-t", ..., see `emf_jax.architectures`).
      model: the (pinned) joint distribution.
      **options: keyword options of that builder (e.g. ``hidden_units``).

    Returns:
      ``(init_fn, build_fn)`` in TFP's stateless-builder shape.

    Raises:
      ValueError: for an unknown name (the message lists the known ones).

    Example:
      >>> import jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> model = tfd.JointDistributionNamed(dict(
      ...     mu=tfd.Normal(0., 1.), y=lambda mu: tfd.Normal(mu, 1.))).experimental_pin(y=1.)
      >>> init_fn, build_fn = build_surrogate_stateless("mean-field", model)
      >>> build_fn(init_fn(jax.random.key(0))).sample(seed=jax.random.key(1))["mu"].shape
      ()
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in SURROGATES:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(SURROGATES)}")
    return SURROGATES[key](model, **options)
