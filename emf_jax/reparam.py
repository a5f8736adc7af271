"""Model-informed reparameterisation layers: VIP, gated VIP and MIF, from the model's program.

Both layers walk the model in program order, like the structured layer, and map each latent
variable's input noise ``ε_i`` to its value ``u_i`` in unconstrained space; the architecture's
``support`` stage then maps ``u`` into the support. For a variable whose conditional given
its parents is an elementwise location-scale family with location ``f_i`` and scale ``g_i``
(both functions of the earlier values ``z_<i``: the map is triangular):

- **VIP** (Gorinova, Moore & Hoffman 2020, "Automatic reparameterisation of probabilistic
  programs"): a learned partial centring ``λ_i = sigmoid(w_i) ∈ [0, 1]`` per element::

      u_i = f_i + g_i^(1 − λ_i) · (ε_i − λ_i f_i),
      log|det ∂u_i/∂ε_i| = Σ (1 − λ_i) log g_i

  ``λ = 1`` is the centred parameterisation (``u = ε``), ``λ = 0`` the non-centred one
  (``u = f + g ε``). In a surrogate ``ε`` comes from the learnable elementwise affine base
  stage, so the variational family is the mean-field Gaussian over the reparameterised
  space that VIP prescribes. ``w`` starts at ``logit(initial_centring)``.

- **Gated VIP** (``"gated_vip"``, this package's combination of VIP with the gated
  structured layer): VIP's partial centring on the location-scale latents, and on every
  other latent the structured layer's gate (`emf_jax.gates`), ``u_i = λ_i F_i(ε_i) + (1 −
  λ_i) ε_i`` with one learned ``λ_i`` per variable. Plain VIP leaves those variables at the
  non-centred map ``F_i(ε_i)``, which is the poor parameterisation VIP exists to avoid when
  a scale's prior (a HalfCauchy's, a HalfNormal's quantile map) is far from its posterior.
  Both kinds of λ start at ``initial_centring`` (0.5: halfway, like the gated layer's
  preferred start). The ``"gemf-vip"`` architecture puts a backbone flow under this layer,
  as GEMF-T puts one under the gated structured layer.

- **MIF** (Ko & Domke 2025, "Model-informed flows"): one affine forward-autoregressive layer
  in the model's order. A per-variable conditioner network sees the earlier values
  ``u_<i`` (unconstrained), the earlier noise ``ε_<i``, and the prior's own location and
  log-scale at those values, ``f_i`` and ``log g_i``; it outputs ``(a_i, b_i, t_i)`` and::

      ε'_i = a_i + σ_i · (ε_i − t_i),   σ_i = σ_min + softplus(b_i + softplus⁻¹(1 − σ_min)),
      u_i  = F_i(ε'_i)                  (F_i: the prior's map, f_i + g_i ε' here)

  so that ``u_i = m_i + s_i (ε_i − t_i)`` with ``m_i = f_i + g_i a_i`` and
  ``s_i = g_i σ_i``; ``log|det ∂u_i/∂ε_i| = Σ log σ_i + log|det ∂F_i/∂ε'_i|``. The networks'
  output layers start at zero, so the layer starts exactly at the prior's non-centred map
  (``m_i = f_i``, ``s_i = g_i``, ``t_i = 0``). The floor ``σ_min = 1e-3`` (the backbone's
  minimum scale) bounds the layer's condition number: without it a conditioner fed
  ``log g_i`` deep in a funnel's neck can drive σ to 1e-20, where the inverse (and so
  ``log_prob`` of given values) loses every digit in float32.

Other families (a map that is not an elementwise affine one: a closed-form or numerical
quantile, a full scale matrix) fall back to their existing map ``F_i`` in unconstrained
space: VIP uses ``u_i = F_i(ε_i)`` (the non-centred map: the variable gets no ``λ``), gated
VIP the gated map above; MIF
uses the same formula as above with ``F_i`` that map, and feeds the conditioner
``f_i = F_i(0)`` and ``log g_i = log F_i'(0)`` (the elementwise median and local scale in
unconstrained space; for a matrix map, its shift and the log of its diagonal's magnitude).
`tfd.MarkovChain` latents are refused with an error naming the variable (use the "gemf-t"
family of architectures for them).

The layers are model-aware bijectors on lists of per-latent parts (leading sample
dimensions allowed and shared), used by `emf_jax.architectures` as the ``"vip"``,
``"gated_vip"`` and ``"mif"`` stages; their parameters are ``params["reparam"]``: ``{name:
w_i}`` for VIP (only the location-scale latents, ``w_i`` of the variable's shape), the same
for gated VIP plus a scalar gate logit ``{name: w_i}`` for each other latent (every latent
then has an entry), ``{name: network params}`` for MIF (every latent). A model
with many latent variables builds one conditioner per variable: compile time grows with the
number of variables in the program, as for the structured layer.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from emf_jax.flows.made import mlp
from emf_jax.gates import gated_forward, gated_inverse
from emf_jax.tracing import ModelTrace, walk_model
from emf_jax.transforms import transform_for
from emf_jax.transforms.base import AffineTransform, MonotoneTransform, support_forward
from emf_jax.transforms.markov_chain import ChainTransform

__all__ = ["CENTRING_KINDS", "MIF_MIN_SCALE", "REPARAM_KINDS", "ReparamLayer",
           "build_reparam_layer"]

Array = jax.Array
Params = dict

REPARAM_KINDS = ("vip", "mif", "gated_vip")
# The kinds with VIP's partial centring (their λ's are gates: the warm start fits them).
CENTRING_KINDS = ("vip", "gated_vip")
DEFAULT_INITIAL_CENTRING = 0.5
MIF_MIN_SCALE = 1e-3
# softplus⁻¹(1 − σ_min): the MIF scale σ = σ_min + softplus(b + this) is exactly 1 at b = 0.
_SOFTPLUS_INV = math.log(math.expm1(1.0 - MIF_MIN_SCALE))


class ReparamLayer(NamedTuple):
    """A VIP, gated VIP or MIF layer as pure functions (formulas: the module docstring).

    Attributes:
      kind: "vip", "gated_vip" or "mif".
      init: ``init(key) -> params`` (the layer's own parameters, ``params["reparam"]``).
      forward_parts_and_log_det: ``(params, model_params, noise_parts) -> (u_parts,
        log|det|)``; parts are per latent in the trace's order, each ``[..., *shape_i]``
        with the variable's unconstrained shape; log|det| has the sample shape.
      inverse_parts_and_log_det: ``(params, model_params, u_parts) -> (noise_parts,
        log|det| of the inverse)``.
      centred: for VIP and gated VIP, the names of the latents that get a centring λ (the
        elementwise location-scale ones); for MIF, empty. Gated VIP gates the others.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.tracing import trace_model
      >>> tfd = tfp.distributions
      >>> model = tfd.JointDistributionNamed(dict(
      ...     m=tfd.Normal(1., 2.), x=lambda m: tfd.Normal(m, 3.)))
      >>> layer = build_reparam_layer("vip", lambda _: model, trace_model(model))
      >>> params = layer.init(jax.random.key(0))          # λ = 0.5 for both
      >>> u, log_det = layer.forward_parts_and_log_det(params, None, [jnp.zeros(()),
      ...                                                          jnp.zeros(())])
      >>> [round(float(v), 4) for v in u]    # m = 1 + √2·(0 − 0.5); x = m + √3·(0 − m/2)
      [0.2929, 0.0392]
    """

    kind: str
    init: Callable[[Any], Params]
    forward_parts_and_log_det: Callable[[Params, Any, list], tuple[list, Array]]
    inverse_parts_and_log_det: Callable[[Params, Any, list], tuple[list, Array]]
    centred: tuple[str, ...]


def _is_elementwise_affine(t: Any) -> bool:
    return isinstance(t, AffineTransform) and t.scale_matrix is None


def _loc_log_scale(t: Any, shape: tuple[int, ...], dtype: Any) -> tuple[Array, Array]:
    """The prior's location f and log-scale log g in unconstrained space (value shape)."""
    if isinstance(t, AffineTransform):
        loc = jnp.broadcast_to(jnp.asarray(t.shift, dtype), shape)
        if t.scale_matrix is None:
            return loc, jnp.log(jnp.broadcast_to(jnp.asarray(t.scale, dtype), shape))
        diag = jnp.diagonal(jnp.asarray(t.scale_matrix, dtype), axis1=-2, axis2=-1)
        return loc, jnp.log(jnp.abs(jnp.broadcast_to(diag, shape)))
    zero = jnp.zeros(shape, dtype)
    loc = t.forward(zero)
    return loc, t.forward_log_derivative(zero, loc)


def _classify(model_fn: Callable[[Any], Any], model_params: Any, trace: ModelTrace
              ) -> dict[str, str]:
    """Each latent's kind of map: "affine" (elementwise), "other" (a fallback); chains raise."""
    kinds: dict[str, str] = {}
    records = {r.name: r for r in trace.latents}

    def choose(index: int, name: str, dist: Any) -> Array:
        t = transform_for(dist, variable_name=name)
        if isinstance(t, ChainTransform):
            raise NotImplementedError(
                f"variable '{name}' is a MarkovChain: the 'vip', 'mif' and 'gemf-vip' "
                "architectures reparameterise whole variables and do not scan over a "
                "chain's steps; use an architecture with the structured layer (e.g. "
                "'gemf-t') for this model")
        if not isinstance(t, (AffineTransform, MonotoneTransform)):
            raise NotImplementedError(f"variable '{name}': map {type(t).__name__} is not "
                                      "supported by the 'vip', 'mif' and 'gemf-vip' architectures")
        kinds[name] = "affine" if _is_elementwise_affine(t) else "other"
        return jnp.zeros(records[name].event_shape, records[name].dtype)

    def run() -> int:
        walk_model(model_fn(model_params), choose)
        return 0

    jax.eval_shape(run)
    return kinds


def _batched(event_fn: Callable[[list], tuple[list, Array]], trace: ModelTrace,
             parts: Sequence[Any]) -> tuple[list, Array]:
    """Runs `event_fn` on one event per sample (the sample dimensions flattened, vmapped)."""
    latents = trace.latents
    if len(parts) != len(latents):
        raise ValueError(f"expected {len(latents)} parts (one per latent variable "
                         f"{list(trace.latent_names)}), got {len(parts)}")
    batch_shape = None
    prepared = []
    for record, leaf in zip(latents, parts):
        leaf = jnp.asarray(leaf).astype(record.dtype)
        event = tuple(record.unconstrained_shape or ())
        if leaf.ndim < len(event) or tuple(leaf.shape[leaf.ndim - len(event):]) != event:
            raise ValueError(f"variable '{record.name}': expected a value of shape {event} "
                             f"(with optional leading sample dimensions), got shape "
                             f"{tuple(leaf.shape)}")
        leaf_batch = tuple(leaf.shape[:leaf.ndim - len(event)])
        if batch_shape is None:
            batch_shape = leaf_batch
        elif leaf_batch != batch_shape:
            raise ValueError(f"variable '{record.name}': sample dimensions {leaf_batch} differ "
                             f"from those of '{latents[0].name}' {batch_shape}")
        prepared.append(leaf)
    batch_shape = batch_shape or ()
    size = int(np.prod(batch_shape)) if batch_shape else 1
    flat = [p.reshape((size,) + p.shape[len(batch_shape):]) for p in prepared]
    out, log_det = jax.vmap(event_fn)(flat)
    return [o.reshape(batch_shape + o.shape[1:]) for o in out], log_det.reshape(batch_shape)


def build_reparam_layer(
    kind: str,
    model_fn: Callable[[Any], Any],
    trace: ModelTrace,
    *,
    model_params: Any = None,
    hidden_units: Sequence[int] = (32, 32),
    activation: Callable[[Array], Array] = jax.nn.relu,
    initial_centring: float = DEFAULT_INITIAL_CENTRING,
) -> ReparamLayer:
    """Builds the VIP, gated VIP or MIF layer of a model (formulas: the module docstring).

    Args:
      kind: "vip", "gated_vip" or "mif".
      model_fn: ``model_fn(model_params) -> JointDistribution`` (a constant function for a
        fixed model).
      trace: the model's `ModelTrace`.
      model_params: the model parameters used to classify each latent's map (None for a
        fixed model).
      hidden_units: MIF: hidden layer sizes of each variable's conditioner.
      activation: MIF: the conditioners' activation.
      initial_centring: VIP and gated VIP: λ at initialisation (the centrings and gated
        VIP's gates), in (0, 1) (0.5: halfway between the non-centred and the centred
        parameterisation, where the sigmoid's gradient is largest).

    Returns:
      A `ReparamLayer`.

    Raises:
      ValueError: an unknown kind, or `initial_centring` outside (0, 1).
      NotImplementedError: a `tfd.MarkovChain` latent (the message names it).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.tracing import trace_model
      >>> tfd = tfp.distributions
      >>> model = tfd.JointDistributionNamed(dict(
      ...     m=tfd.Normal(1., 2.), x=lambda m: tfd.Normal(m, 3.)))
      >>> layer = build_reparam_layer("mif", lambda _: model, trace_model(model),
      ...                             hidden_units=(4,))
      >>> u, log_det = layer.forward_parts_and_log_det(
      ...     layer.init(jax.random.key(0)), None, [jnp.ones(()), jnp.ones(())])
      >>> [float(v) for v in u], round(float(log_det), 4)   # the prior's map: log 2 + log 3
      ([3.0, 6.0], 1.7918)
    """
    if kind not in REPARAM_KINDS:
        raise ValueError(f"unknown reparameterisation {kind!r}; choose one of {REPARAM_KINDS}")
    if not 0.0 < float(initial_centring) < 1.0:
        raise ValueError(f"initial_centring must be in (0, 1), got {initial_centring!r}")
    kinds = _classify(model_fn, model_params, trace)
    records = trace.latents
    names = trace.latent_names
    shapes = {r.name: tuple(r.unconstrained_shape or ()) for r in records}
    sizes = {n: int(np.prod(s)) for n, s in shapes.items()}
    dtype = records[0].dtype
    centred = tuple(n for n in names if kind in CENTRING_KINDS and kinds[n] == "affine")
    gated = tuple(n for n in names if kind == "gated_vip" and n not in centred)
    networks = {}
    if kind == "mif":
        before = 0
        for n in names:
            networks[n] = mlp(2 * before + 2 * sizes[n], 3 * sizes[n], hidden_units=hidden_units,
                              activation=activation, output_init_scale=0.0, dtype=dtype)
            before += sizes[n]
    logit = math.log(initial_centring) - math.log1p(-initial_centring)

    def init(key: Any) -> Params:
        if kind in CENTRING_KINDS:
            # A centring per element (VIP's); a gate per variable (the structured layer's).
            return {n: jnp.full(shapes[n] if n in centred else (), logit, records[i].dtype)
                    for i, n in enumerate(names) if n in centred or n in gated}
        key = jax.random.key(0) if key is None else key
        keys = jax.random.split(key, len(names))
        return {n: networks[n].init(k) for n, k in zip(names, keys)}

    def conditioner(params: Params, name: str, t: Any, previous_u: list, previous_e: list
                    ) -> tuple[Array, Array, Array]:
        """MIF: (a, σ, t) for variable `name`, each of its unconstrained shape."""
        shape = shapes[name]
        loc, log_scale = _loc_log_scale(t, shape, dtype)
        features = [jnp.ravel(v) for v in previous_u + previous_e] + [
            jnp.ravel(loc), jnp.ravel(log_scale)]
        out = networks[name].apply(params[name], jnp.concatenate(features).astype(dtype))
        a, b, shift = (o.reshape(shape) for o in jnp.split(out, 3))
        return a, MIF_MIN_SCALE + jax.nn.softplus(b + _SOFTPLUS_INV), shift

    def forward_event(params: Params, model_params: Any, noise: list) -> tuple[list, Array]:
        by_name = dict(zip(names, noise))
        us: dict[str, Array] = {}
        log_dets: list[Array] = []

        def choose(index: int, name: str, dist: Any) -> Array:
            t = transform_for(dist, variable_name=name)
            e = by_name[name]
            if name in centred:
                lam = jax.nn.sigmoid(params[name])
                loc, log_scale = _loc_log_scale(t, shapes[name], e.dtype)
                u = loc + jnp.exp((1.0 - lam) * log_scale) * (e - lam * loc)
                log_det = jnp.sum((1.0 - lam) * log_scale)
            elif kind in CENTRING_KINDS:  # VIP: the map; gated VIP: the gated map.
                u, log_det = gated_forward(t, e, params.get(name))
            else:
                done = [n for n in names if n in us]
                a, sigma, shift = conditioner(params, name, t, [us[n] for n in done],
                                              [by_name[n] for n in done])
                u, log_det = gated_forward(t, a + sigma * (e - shift), None)
                log_det = log_det + jnp.sum(jnp.log(sigma))
            us[name] = u.astype(e.dtype)
            log_dets.append(log_det)
            return support_forward(t, us[name])

        walk_model(model_fn(model_params), choose)
        return [us[n] for n in names], _total(log_dets, dtype)

    def inverse_event(params: Params, model_params: Any, values: list) -> tuple[list, Array]:
        by_name = dict(zip(names, values))
        es: dict[str, Array] = {}
        log_dets: list[Array] = []

        def choose(index: int, name: str, dist: Any) -> Array:
            t = transform_for(dist, variable_name=name)
            u = by_name[name]
            if name in centred:
                lam = jax.nn.sigmoid(params[name])
                loc, log_scale = _loc_log_scale(t, shapes[name], u.dtype)
                e = (u - loc) * jnp.exp(-(1.0 - lam) * log_scale) + lam * loc
                log_det = -jnp.sum((1.0 - lam) * log_scale)
            elif kind in CENTRING_KINDS:
                e, log_det = gated_inverse(t, u, params.get(name))
            else:
                done = [n for n in names if n in es]
                a, sigma, shift = conditioner(params, name, t, [by_name[n] for n in done],
                                              [es[n] for n in done])
                e_prime, log_det = gated_inverse(t, u, None)
                e = (e_prime - a) / sigma + shift
                log_det = log_det - jnp.sum(jnp.log(sigma))
            es[name] = e.astype(u.dtype)
            log_dets.append(log_det)
            return support_forward(t, u)

        walk_model(model_fn(model_params), choose)
        return [es[n] for n in names], _total(log_dets, dtype)

    def forward_parts_and_log_det(params: Params, model_params: Any, noise: list
                                  ) -> tuple[list, Array]:
        return _batched(lambda ev: forward_event(params, model_params, ev), trace, noise)

    def inverse_parts_and_log_det(params: Params, model_params: Any, values: list
                                  ) -> tuple[list, Array]:
        return _batched(lambda ev: inverse_event(params, model_params, ev), trace, values)

    return ReparamLayer(kind, init, forward_parts_and_log_det, inverse_parts_and_log_det,
                        centred)


def _total(terms: list[Array], dtype: Any) -> Array:
    total = jnp.zeros((), dtype)
    for term in terms:
        total = total + term
    return total
