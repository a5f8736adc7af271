"""EMF densities for maximum-likelihood density estimation, in TFP's stateless-builder shape.

An embedded-model flow density pushes ``N(0, I_D)`` through a backbone flow and the structured
layer of a probabilistic model whose own parameters train with the flow (Silvestri et al.,
2022): a Gaussian-mixture layer gives multimodality, a hierarchical model couples groups of
variables, a random walk makes time series continuous. Fit it with `emf_jax.fit_density`.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
from tensorflow_probability.substrates import jax as tfp

from emf_jax.architectures import FlowFactory, build_embedded_flow, get_architecture
from emf_jax.distribution import EmbeddedFlowDistribution
from emf_jax.gates import DEFAULT_INITIAL_GATE, gate_logit
from emf_jax.training.loops import ModelPart
from emf_jax.training.starts import StartCandidates

tfd = tfp.distributions
Array = jax.Array

__all__ = ["DENSITY_GATE_CANDIDATES", "DENSITY_MAX_LOG_SCALE", "build_emf_density_stateless",
           "model_params_of"]

# The soft bound of each affine backbone layer's |log scale| in a density (see
# `emf_jax.flows.affine_elementwise`): points outside the training range, where the
# conditioner extrapolates, keep a log-density within a few nats per layer and dimension.
DENSITY_MAX_LOG_SCALE = 3.0
_AFFINE_BACKBONES = ("maf", "iaf", "realnvp")

# The initial gates between which `emf_jax.fit_density` chooses on validation rows with
# ``initial_gate="auto"``, the preferred first: the paper's start (almost exactly the model),
# and a start where the model is mostly off and the flow works near data space. The fit does
# not move a gate far from where it starts (Adam moves its logit by about the learning rate
# per step), so the start decides whether the model is used (docs/density.md).
DENSITY_GATE_CANDIDATES: tuple[float, ...] = (DEFAULT_INITIAL_GATE, 0.1)


def _is_model(obj: Any) -> bool:
    return isinstance(obj, tfd.JointDistribution) or hasattr(obj, "pins")


def _check_model_params(model_params: Any) -> Any:
    """Converts the leaves to arrays; they must be floating to be trained."""
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(model_params)
    if not leaves_with_paths:
        raise ValueError("model_params has no array leaves: pass the parameters that "
                         "model_fn(model_params) reads (e.g. from an emf_jax.templates template)")
    leaves = []
    for path, leaf in leaves_with_paths:
        try:
            arr = jnp.asarray(leaf)
        except TypeError as err:
            raise TypeError(f"model_params{jax.tree_util.keystr(path)}: expected an array, got "
                            f"{type(leaf).__name__}") from err
        if not jnp.issubdtype(arr.dtype, jnp.floating):
            raise TypeError(f"model_params{jax.tree_util.keystr(path)}: trainable parameters "
                            f"must be floating, got dtype {arr.dtype}")
        leaves.append(arr)
    return jax.tree.unflatten(treedef, leaves)


def build_emf_density_stateless(
    model_fn: Union[Callable[[Any], Any], Any],
    model_params: Any = None,
    *,
    architecture: str = "gemf-t",
    backbone: Union[str, FlowFactory] = "maf",
    num_backbone_layers: int = 2,
    hidden_units: Sequence[int] = (512, 512),
    activation: Callable[[Array], Array] = jax.nn.relu,
    initial_gate: Union[str, float] = "auto",
    train_model_params: bool = True,
    backbone_kwargs: Optional[dict] = None,
    name: str = "emf_density",
) -> tuple[Callable[..., dict], Callable[[dict], EmbeddedFlowDistribution]]:
    """Builds an embedded-model-flow density whose embedded model trains with the flow.

    The density is the push-forward of ``N(0, I_D)`` through the backbone flow and the
    structured layer of ``model_fn(model_params)`` (placed as `architecture` says; see
    `emf_jax.architectures`). Its events have the model's structure, so data are the model's
    variables: ``build_fn(params).log_prob(values)`` with ``values`` as
    ``model_fn(model_params).sample(n)`` gives them. With ``train_model_params`` the model's
    parameters live in the parameter pytree, at ``params["structured"]["model"]`` (see
    `model_params_of`), and maximum likelihood fits them together with the gates and the
    backbone.

    Args:
      model_fn: ``model_fn(model_params) -> JointDistribution`` whose variables are all
        continuous (e.g. a template of `emf_jax.templates`), or a fixed `JointDistribution`
        (then `model_params` must be None and nothing of the model trains). Pinned models
        are rejected: every variable is modelled.
      model_params: initial parameters of `model_fn`, a pytree of floating arrays.
      architecture: "gemf-t" (default: backbone, then the gated structured layer on top),
        "emf-t" (ungated), "gemf-m" / "emf-m" (structured layer between the halves of the
        backbone), "gemf-b" / "emf-b" (structured layer at the bottom), "flow" (the backbone
        alone: the model gives only the event structure and its parameters are not in
        `params`), "structured" (the gated layer alone).
      backbone: "maf" (default: the density is one network pass per layer), "nsf"
        (autoregressive rational-quadratic splines, run in the MAF direction unless
        ``backbone_kwargs`` says otherwise), "realnvp", "iaf" (its density needs ``D``
        passes per layer), or a flow factory (see `emf_jax.architectures.make_backbone`).
      num_backbone_layers: flow layers in the backbone (the paper: 2 for MAF, 6 for NSF).
      hidden_units: hidden sizes of each conditioner (the paper: (512, 512) for MAF,
        (32, 32) for NSF).
      activation: the conditioner's activation.
      initial_gate: "auto" (default): `init_fn` starts every gate at the first of
        `DENSITY_GATE_CANDIDATES` (0.999) and ``build_fn.start_candidates`` offers them all
        to `emf_jax.fit_density`, which fits each for a short pilot and keeps the one with
        the best validation NLL. A float in (0, 1): λ at initialisation and no choice (the
        paper's start is 0.999: almost exactly the model).
      train_model_params: whether the model's parameters train; ``False`` keeps them fixed
        at `model_params`.
      backbone_kwargs: extra options of the backbone factory (e.g. ``num_bins`` for "nsf").
        The affine backbones ("maf", "iaf", "realnvp") get ``max_log_scale=``
        `DENSITY_MAX_LOG_SCALE` unless it is given (``None`` removes the bound).
      name: the distribution's name.

    Returns:
      ``(init_fn, build_fn)``: ``params = init_fn(seed)`` (a dict of arrays; the backbone is
      drawn from `seed` and starts as the identity, so the density starts at the gated model)
      and ``density = build_fn(params)``, an `emf_jax.EmbeddedFlowDistribution` (a
      `tfd.Distribution` with `log_prob` and `sample`) over the model's variables. When the
      model's parameters train, ``build_fn.model_part`` is an `emf_jax.training.ModelPart`
      (the model alone and where its parameters sit), with which `emf_jax.fit_density`
      fits the model first. With ``initial_gate="auto"`` and a gated architecture,
      ``build_fn.start_candidates`` is an `emf_jax.training.StartCandidates` (the same
      parameters with every gate at each of `DENSITY_GATE_CANDIDATES`).

    Raises:
      ValueError: a pinned model, an unknown architecture or backbone, `model_params`
        with a fixed model, or an `initial_gate` that is neither "auto" nor in (0, 1).
      TypeError: non-floating model parameters.
      UnsupportedDistributionError: a discrete variable or a family without a map.

    Example:
      >>> import jax, numpy as np, optax
      >>> from emf_jax import fit_density, templates
      >>> from emf_jax.density import build_emf_density_stateless
      >>> model_fn, model_params = templates.random_walk(3)
      >>> init_fn, build_fn = build_emf_density_stateless(
      ...     model_fn, model_params, hidden_units=(8,))
      >>> data = np.cumsum(np.random.default_rng(0).normal(0, 0.5, (200, 3)), axis=1)
      >>> result = fit_density(build_fn, init_fn(jax.random.key(0)), data,
      ...     optimizer=optax.adam(1e-2), num_steps=50, batch_size=50, seed=0,
      ...     progress_bar=False)
      >>> bool(result.losses[-10:].mean() < result.losses[:10].mean())
      True
      >>> density = build_fn(result.params)
      >>> density.sample(2, seed=jax.random.key(1)).x2.shape
      (2,)
    """
    arch = get_architecture(architecture)
    gate_candidates = _gate_candidates(initial_gate)
    if _is_model(model_fn):
        if model_params is not None:
            raise ValueError("model_params is only used with a model function "
                             "model_fn(model_params) -> JointDistribution; got a fixed model")
        model = model_fn
    elif callable(model_fn):
        if model_params is None:
            raise ValueError("a model function needs its initial model_params")
        model_params = _check_model_params(model_params)
        model = model_fn(model_params)
        if not _is_model(model):
            raise TypeError(f"model_fn(model_params) must return a JointDistribution, got "
                            f"{type(model).__name__}")
    else:
        raise TypeError(f"model_fn must be a function model_fn(model_params) -> "
                        f"JointDistribution or a JointDistribution; got {type(model_fn)}")
    if hasattr(model, "pins"):
        raise ValueError("density estimation models every variable of the model; got a pinned "
                         "model (pins: " + ", ".join(sorted(model.pins)) + "). Pass the "
                         "unpinned model")

    trainable = (train_model_params and model_params is not None
                 and arch.placement != "none")
    backbone_kwargs = dict(backbone_kwargs or {})
    if backbone == "nsf":
        # TFP's default NSF direction suits sampling; density fitting wants one-pass density.
        backbone_kwargs.setdefault("direction", "maf")
    if isinstance(backbone, str) and backbone in _AFFINE_BACKBONES:
        backbone_kwargs.setdefault("max_log_scale", DENSITY_MAX_LOG_SCALE)
    flow = build_embedded_flow(
        model_fn if trainable else model,
        model_params=model_params if trainable else None,
        architecture=arch.name, backbone=backbone, num_backbone_layers=num_backbone_layers,
        hidden_units=hidden_units, activation=activation, initial_gate=gate_candidates[0],
        backbone_kwargs=backbone_kwargs)

    def init_fn(seed: Any = None) -> dict:
        return flow.init(seed)

    def build_fn(params: dict) -> EmbeddedFlowDistribution:
        return EmbeddedFlowDistribution(flow, params, name=name)

    if trainable:
        build_fn.model_part = ModelPart(  # type: ignore[attr-defined]
            build=model_fn, get=model_params_of, set=_with_model_params)
    gated = "gates" in jax.eval_shape(init_fn, jax.random.key(0)).get("structured", {})
    if len(gate_candidates) > 1 and gated:
        build_fn.start_candidates = StartCandidates(  # type: ignore[attr-defined]
            labels=tuple(f"gate {gate:g}" for gate in gate_candidates),
            make=functools.partial(_at_gates, logits=tuple(
                float(gate_logit(gate)) for gate in gate_candidates)))
    return init_fn, build_fn


def _gate_candidates(initial_gate: Union[str, float]) -> tuple[float, ...]:
    """The initial gates that an `initial_gate` option stands for, checked."""
    if isinstance(initial_gate, str):
        if initial_gate != "auto":
            raise ValueError(f"`initial_gate` must be 'auto' or a float in (0, 1), got "
                             f"{initial_gate!r}.")
        return DENSITY_GATE_CANDIDATES
    if isinstance(initial_gate, bool) or not isinstance(initial_gate, (int, float)):
        raise TypeError(f"`initial_gate` must be 'auto' or a float in (0, 1), got "
                        f"{initial_gate!r}.")
    if not 0.0 < float(initial_gate) < 1.0:
        raise ValueError(f"`initial_gate` must be in (0, 1), got {initial_gate!r}.")
    return (float(initial_gate),)


def _at_gates(params: dict, *, logits: Sequence[float]) -> dict:
    """`params` repeated once per gate logit on a new leading axis, every gate set to it."""
    stacked = jax.tree.map(lambda leaf: jnp.stack([leaf] * len(logits)), params)
    values = jnp.asarray(logits)
    set_gates = jax.tree.map(
        lambda w: jnp.broadcast_to(values.reshape((-1,) + (1,) * (w.ndim - 1)),
                                   w.shape).astype(w.dtype),
        stacked["structured"]["gates"])
    return {**stacked, "structured": {**stacked["structured"], "gates": set_gates}}


def _with_model_params(params: dict, model_params: Any) -> dict:
    """A copy of an EMF density's `params` with the embedded model's part replaced."""
    return {**params, "structured": {**params["structured"], "model": model_params}}


def model_params_of(params: dict) -> Any:
    """The embedded model's parameters inside the parameters of an EMF density.

    Args:
      params: parameters from `build_emf_density_stateless`'s ``init_fn`` (or fitted ones).

    Returns:
      The pytree to pass to ``model_fn``, or None when the model's parameters are not
      trained (a fixed model, ``train_model_params=False`` or the "flow" architecture).

    Example:
      >>> import jax
      >>> from emf_jax import templates
      >>> from emf_jax.density import build_emf_density_stateless, model_params_of
      >>> model_fn, model_params = templates.gaussian_mixture(1, 3)
      >>> init_fn, _ = build_emf_density_stateless(
      ...     model_fn, model_params, architecture="structured")
      >>> sorted(model_params_of(init_fn(jax.random.key(0))))
      ['locs', 'logits', 'raw_scales']
    """
    if not isinstance(params, dict) or "structured" not in params:
        raise ValueError("params must be the dict from build_emf_density_stateless's init_fn "
                         "(it has a 'structured' entry)")
    return params["structured"].get("model")
