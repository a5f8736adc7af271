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

from emf_jax import baselines
from emf_jax.architectures import ARCHITECTURES, FlowFactory, build_embedded_flow
from emf_jax.distribution import EmbeddedFlowDistribution
from emf_jax.gates import DEFAULT_INITIAL_GATE

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
    name: str = "emf_surrogate_posterior",
) -> tuple[Callable[..., dict], Callable[[dict], EmbeddedFlowDistribution]]:
    """Builds an embedded-model-flow surrogate posterior for a (pinned) TFP model.

    The surrogate pushes ``N(0, I_D)`` through a backbone flow and the model's own (gated)
    structured layer, so it starts close to the prior's structure and can bend away from it
    where the posterior needs to. The model's own parameters stay fixed; the gates and the
    backbone are trained.

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
    flow = build_embedded_flow(
        model, architecture=architecture, backbone=backbone,
        num_backbone_layers=num_backbone_layers, hidden_units=hidden_units,
        activation=activation, initial_gate=initial_gate, backbone_kwargs=backbone_kwargs)

    def init_fn(seed: Any = None) -> dict:
        return flow.init(seed)

    def build_fn(params: dict) -> EmbeddedFlowDistribution:
        return EmbeddedFlowDistribution(flow, params, name=name)

    return init_fn, build_fn


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
