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
import jax.numpy as jnp
from tensorflow_probability.substrates import jax as tfp

from emf_jax import baselines, checkpoint
from emf_jax import flows as flows_lib
from emf_jax._checks import as_key, check_int
from emf_jax.architectures import ARCHITECTURES, EmbeddedFlow, FlowFactory, build_embedded_flow
from emf_jax.distribution import EmbeddedFlowDistribution
from emf_jax.gates import gate_logit
from emf_jax.initialization import (
    DEFAULT_GATE_CANDIDATES,
    DEFAULT_TEMPERATURE_LADDER,
    gaussian_warm_start,
    select_temperature,
)
from emf_jax.reparam import CENTRING_KINDS
from emf_jax.tracing import joint_log_prob_fn

__all__ = ["SURROGATES", "build_emf_surrogate_posterior_stateless", "build_surrogate_stateless"]

Array = jax.Array

# Pilot steps of the warm start (see `build_emf_surrogate_posterior_stateless`).
DEFAULT_WARM_START_STEPS = 200
# Up to this many latent dimensions the base stage is a full lower-triangular affine map
# (D² parameters); above it, elementwise.
FULL_RANK_BASE_MAX_DIMS = 512


def build_emf_surrogate_posterior_stateless(
    model: Any, *, architecture: str = "gemf-t", backbone: Union[str, FlowFactory] = "iaf",
    num_backbone_layers: int = 2, hidden_units: Sequence[int] = (512, 512),
    activation: Callable[[Array], Array] = jax.nn.relu, initial_gate: Union[str, float] = "auto",
    backbone_kwargs: Optional[dict] = None, initial_temperature: Union[str, float] = "auto",
    warm_start_steps: int = DEFAULT_WARM_START_STEPS, full_rank_base: Union[str, bool] = "auto",
    name: str = "emf_surrogate_posterior",
) -> tuple[Callable[..., dict], Callable[[dict], EmbeddedFlowDistribution]]:
    """Builds an embedded-model-flow surrogate posterior for a (pinned) TFP model.

    The surrogate pushes ``N(0, I_D)`` through a learnable affine base stage
    (``params["base"]``: ``z -> shift + L z``, ``L`` lower-triangular up to
    `FULL_RANK_BASE_MAX_DIMS` latent dimensions, else diagonal), a backbone flow and the
    model's own (gated) structured layer, so it can start close to the prior's structure and
    bend away from it where the posterior needs to. The model's own parameters stay fixed;
    the base stage, the gates and the backbone are trained.

    The start (all inside ``init_fn``, traceable under `jax.jit`), for a pinned model of a
    gated architecture:

    1. Candidate gates. With ``initial_gate="auto"`` two starts are considered
       (`emf_jax.initialization.DEFAULT_GATE_CANDIDATES`): every gate at 0.5 (preferred:
       the prior's non-centred map blended halfway with the identity) and at 0.01 (the
       structured map almost off, so the flow works in the latents' unconstrained space,
       the centred parameterisation). The paper's start, 0.999 (almost exactly the prior),
       is ``initial_gate=0.999``: from there Adam barely moves the gates, and on public
       models whose prior is a poor parameterisation of the posterior the fit stays trapped
       (see docs/concepts.md for the measurements).
    2. Tempered base noise, per candidate: the base stage's initial scale is the temperature
       ``tau`` picked by `emf_jax.initialization.select_temperature`, the largest of 1, 0.5,
       ..., 0.01 such that all of 32 draws with noise scaled by ``2 tau`` have a finite
       target log-density (`emf_jax.joint_log_prob_fn`). So no candidate starts where a
       heavy-tailed prior's draws overflow the likelihood.
    3. Warm start: each candidate's base stage and gates are fitted for `warm_start_steps`
       Adam steps (learning rate 1e-2, 16 draws) with the backbone held at its identity:
       a Gaussian fit in that candidate's space. The model's start is kept unless another
       candidate's ELBO beats it by more than two standard errors on 256 common draws
       (`emf_jax.initialization.gaussian_warm_start`). Since the candidate at gate 0.01 is
       a full-rank Gaussian over the unconstrained latents, the fit starts about as good as
       a full-rank Gaussian baseline or better. In "vip" and "gemf-vip" the centrings
       (and gated VIP's gates) are trained with the base in this pilot, as gates are.

    An unpinned model (all variables latent) starts at the model itself (gate
    `initial_gate`, or 0.999 for "auto"; ``tau = 1``; no pilot): its posterior is the
    prior. Ungated architectures have no gate to choose; they get steps 2 and 3.

    Args:
      model: a pinned joint distribution (observations pinned with
        ``model.experimental_pin(...)``) or an unpinned one (all variables latent).
      architecture: "gemf-t" (default: backbone, then the gated structured layer on top),
        "emf-t" (ungated), "gemf-m" / "emf-m" (structured layer between the two halves of the
        backbone), "gemf-b" / "emf-b" (structured layer at the bottom), "flow" (the backbone
        alone: the IAF baseline), "structured" (the gated layer alone), "vip", "mif",
        "gemf-vip" (a backbone under gated VIP; `emf_jax.reparam`). See
        `emf_jax.architectures`.
      backbone: "iaf" (default for VI: one network pass per sample), "maf", "realnvp", "nsf",
        or a flow factory.
      num_backbone_layers: autoregressive / coupling layers in the backbone (reversing
        permutations between them). The paper: 2.
      hidden_units: hidden layer sizes of each conditioner network. The paper: (512, 512).
      activation: the conditioner's activation (the paper: relu; its IAF baseline: tanh).
      initial_gate: "auto" (the candidates above) or λ at initialisation, a float in (0, 1)
        (0.999: almost exactly the model); a float still gets the warm start of the base.
      backbone_kwargs: extra options for the backbone factory.
      initial_temperature: "auto" (the tempered start above for a pinned model, 1 for an
        unpinned one) or a positive float, the initial scale of the affine stage.
      warm_start_steps: the pilot steps of the warm start (0: none; with
        ``initial_gate="auto"`` the model's start, gate 0.999, is then taken).
      full_rank_base: "auto" (lower-triangular up to `FULL_RANK_BASE_MAX_DIMS` latent
        dimensions), True or False (elementwise).
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
    if isinstance(initial_gate, str):
        if initial_gate != "auto":
            raise ValueError("`initial_gate` must be 'auto' or a float in (0, 1), got "
                             f"{initial_gate!r}.")
        gate_candidates: tuple[float, ...] = DEFAULT_GATE_CANDIDATES
    else:
        gate_candidates = (float(initial_gate),)
    warm_start_steps = check_int("warm_start_steps", warm_start_steps, 0)
    if full_rank_base not in ("auto", True, False):
        raise ValueError(f"`full_rank_base` must be 'auto', True or False, got "
                         f"{full_rank_base!r}.")
    inner = build_embedded_flow(
        model, architecture=architecture, backbone=backbone,
        num_backbone_layers=num_backbone_layers, hidden_units=hidden_units,
        activation=activation, initial_gate=gate_candidates[0],
        backbone_kwargs=backbone_kwargs)
    dtype = inner.trace.latents[0].dtype
    lower_triangular = (inner.event_size <= FULL_RANK_BASE_MAX_DIMS
                        if full_rank_base == "auto" else bool(full_rank_base))
    base = flows_lib.affine_flow(inner.event_size, lower_triangular=lower_triangular,
                                 dtype=dtype)
    pinned = isinstance(model, tfp.experimental.distributions.JointDistributionPinned)
    flow = _with_base_stage(inner, base)
    assert inner.forward_without_backbone is not None
    pilot_flow = _with_base_stage(
        inner._replace(forward_and_log_det=inner.forward_without_backbone), base)
    gated = "gates" in inner.init(jax.random.key(0))["structured"]
    centring = any(s.kind in CENTRING_KINDS for s in inner.architecture.stages)
    if not (pinned and gated):
        gate_candidates = gate_candidates[:1]
    warm = pinned and warm_start_steps > 0
    gate_logits = [gate_logit(gate) for gate in gate_candidates]

    def candidate(params: dict, logit: float, key: Array) -> dict:
        params = dict(params)
        if gated:
            structured = dict(params["structured"])
            structured["gates"] = jax.tree.map(lambda w: jnp.full_like(w, logit),
                                               structured["gates"])
            params["structured"] = structured
        if auto and pinned:
            tau: Any = select_temperature(
                lambda z: inner.forward_and_log_det(params, z), joint_log_prob_fn(model),
                key, event_size=inner.event_size, dtype=dtype,
                ladder=DEFAULT_TEMPERATURE_LADDER, num_draws=32, min_finite_fraction=1.0,
                probe_scale=2.0)
        else:
            tau = 1.0 if auto else float(initial_temperature)
        params["base"] = flows_lib.scale_affine_params(params["base"], tau)
        return params

    def init_fn(seed: Any = None) -> dict:
        key = as_key(0 if seed is None else seed)
        params = inner.init(seed)
        params["base"] = base.init(jax.random.key(0))  # the identity, whatever the key
        tau_key = jax.random.fold_in(key, 1)
        if not warm:
            return candidate(params, gate_logits[0], tau_key)
        starts = [candidate(params, logit, tau_key) for logit in gate_logits]
        stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *starts)
        trainable = {k: jax.tree.map(lambda _, k=k: k == "base", v) for k, v in params.items()}
        if gated:
            trainable["structured"] = dict(
                jax.tree.map(lambda _: False, params["structured"]),
                gates=jax.tree.map(lambda _: True, params["structured"]["gates"]))
        if centring:
            # VIP's centrings (and gated VIP's gates) are this architecture's gates.
            trainable["reparam"] = jax.tree.map(lambda _: True, params["reparam"])
        start = gaussian_warm_start(
            pilot_flow.forward_and_log_det, joint_log_prob_fn(model), stacked,
            jax.random.fold_in(key, 2), trainable=trainable, event_size=inner.event_size,
            dtype=dtype, num_steps=warm_start_steps)
        return start.params

    flow = flow._replace(init=init_fn)

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
