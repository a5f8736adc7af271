"""The structured layer: a model's program as a bijector from standard-normal noise.

For each latent variable, in program order, the layer builds the variable's conditional given
the values already produced, and maps that variable's noise through the conditional's map
(`emf_jax.transforms`), blended with the identity by the variable's gate (`emf_jax.gates`),
then into the support. The layer is therefore autoregressive in the model's order:

    forward:  x_i = B_i(λ_i·f_i(e_i; x_<i) + (1 − λ_i)·e_i)
    inverse:  e_i = g_i⁻¹(B_i⁻¹(x_i); x_<i)             (g_i the gated map)
    log|det J| = Σ_i log|det ∂g_i/∂e_i| + log|det ∂B_i/∂u_i|

With ``gated=False`` every λ_i is exactly 1 and the push-forward of N(0, I) is the model's
prior: ``log N(e) − log|det J(e)| = model.log_prob(forward(e))``.

A `tfd.MarkovChain` variable is one variable whose map scans over its steps
(`emf_jax.transforms.markov_chain`); batched and `tfd.Sample` / `tfd.Independent` variables
are mapped elementwise in one go. The layer's trace (and so its compile time) grows with the
number of variables in the program, not with their sizes: write long time series as one
MarkovChain rather than a Python loop of variables.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

from emf_jax.apply import apply_forward, apply_inverse
from emf_jax.gates import DEFAULT_INITIAL_GATE, gate_logit
from emf_jax.tracing import ModelTrace, trace_model, walk_model
from emf_jax.transforms import transform_for

tfd = tfp.distributions
tfb = tfp.bijectors
Array = jax.Array
Params = dict
_TensorShape = type(tfd.Normal(0.0, 1.0).event_shape)

ModelOrFn = Union[Any, Callable[[Any], Any]]


def resolve_model(model: ModelOrFn, model_params: Any) -> tuple[Callable[[Any], Any], Any]:
    """``(model_fn, model_params)`` for a fixed model or a model-building function.

    Args:
      model: a joint distribution (pinned or not), or ``model_fn(model_params)``.
      model_params: the initial parameters of a model function; None for a fixed model.

    Returns:
      ``(model_fn, model_params)``: a constant function and None for a fixed model.

    Raises:
      ValueError: `model_params` with a fixed model, or none with a model function.
      TypeError: anything else.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> model = tfp.distributions.JointDistributionNamed({"a": tfp.distributions.Normal(0., 1.)})
      >>> model_fn, params = resolve_model(model, None)
      >>> model_fn(params) is model, params
      (True, None)
    """
    is_distribution = isinstance(model, tfd.JointDistribution) or hasattr(model, "pins")
    if is_distribution:
        if model_params is not None:
            raise ValueError("model_params is only used when the model is given as a function "
                             "model_fn(model_params) -> JointDistribution")
        return (lambda _: model), None
    if callable(model):
        if model_params is None:
            raise ValueError("a model given as a function needs its initial model_params")
        return model, model_params
    raise TypeError(f"expected a JointDistribution, a pinned one, or model_fn; got {type(model)}")


_PARTS = ("map_and_support", "map", "support")


class StructuredLayer(tfb.Bijector):
    """The (gated) structured layer of a joint distribution, as a `tfb.Bijector`.

    Forward maps noise structured like the model's latent event (same tree, nested parts
    nested, pinned and deterministic parts left out; each leaf of the variable's
    unconstrained shape) to latent values with the model's structure (the trace's
    `value_structure`: deterministic variables included, computed from their parents, when
    the support is applied). The inverse reads only the latents of its input: deterministic
    values are recomputed, not checked. Leading sample dimensions are allowed and shared by
    all parts.

    `parts` selects what is applied: ``"map_and_support"`` (the default: noise to values in
    the support), ``"map"`` (noise to unconstrained values ``u``: used when more flow layers
    follow, as in the middle and bottom architectures) or ``"support"`` (``u`` to values,
    each variable's support bijector given its parents: the last step of those
    architectures). The two halves compose to the whole layer.

    Build it with `build_structured_layer_stateless`; see the module docstring for the
    formulas.

    Args:
      model_fn: ``model_fn(model_params) -> JointDistribution`` (a constant function for a
        fixed model).
      trace: the model's `ModelTrace`.
      params: ``{'gates': {name: w}}`` when gated, plus ``'model'`` for a model function.
      gated: whether the gates are applied.
      parts: ``"map_and_support"``, ``"map"`` or ``"support"`` (above).
      validate_args: passed to `tfb.Bijector`.
      name: the bijector's name.

    Example:
      >>> import jax, jax.numpy as jnp, emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> def program():
      ...     scale = yield tfd.HalfNormal(1., name='scale')
      ...     yield tfd.Normal(0., scale, name='x')
      >>> model = tfd.JointDistributionCoroutineAutoBatched(program)
      >>> init_fn, build_fn = emf_jax.build_structured_layer_stateless(model, gated=False)
      >>> layer = build_fn(init_fn(None))
      >>> prior = tfd.TransformedDistribution(layer.noise_distribution(), layer)
      >>> x = model.sample(4, seed=jax.random.key(0))
      >>> gap = jax.jit(lambda x: prior.log_prob(x) - model.log_prob(x))(x)
      >>> bool(jnp.allclose(gap, 0.0, atol=1e-4))
      True
    """

    def __init__(self, model_fn: Callable[[Any], Any], trace: ModelTrace, params: Params, *,
                 gated: bool, parts: str = "map_and_support", validate_args: bool = False,
                 name: str = "structured_layer"):
        parameters = dict(locals())
        if parts not in _PARTS:
            raise ValueError(f"parts must be one of {_PARTS}, got {parts!r}")
        self._model_fn = model_fn
        self._trace = trace
        self._params = params
        self._gated = gated
        self._apply_map = parts in ("map_and_support", "map")
        self._apply_support = parts in ("map_and_support", "support")
        super().__init__(
            forward_min_event_ndims=trace.unflatten(
                [len(r.unconstrained_shape or ()) for r in trace.latents]),
            inverse_min_event_ndims=self._unflatten_out(
                [len(self._value_shape(r)) for r in self._out_records()]),
            is_constant_jacobian=False,
            validate_args=validate_args,
            parameters=parameters,
            name=name)

    # -- public helpers -------------------------------------------------------------------

    @property
    def trace(self) -> ModelTrace:
        """The model's `ModelTrace` (variable records and latent structure)."""
        return self._trace

    @property
    def params(self) -> Params:
        return self._params

    @property
    def gates(self) -> dict[str, Array]:
        """λ per latent variable (empty when ungated)."""
        return {k: jax.nn.sigmoid(w) for k, w in self._params.get("gates", {}).items()}

    def noise_distribution(self) -> Any:
        """A standard-normal joint distribution structured like this layer's input.

        ``tfd.TransformedDistribution(layer.noise_distribution(), layer)`` is the model's
        prior when the layer is ungated.
        """
        return standard_normal_like(self._trace)

    def forward_and_log_det(self, noise: Any) -> tuple[Any, Array]:
        """``(forward(noise), forward_log_det_jacobian(noise))`` in one pass."""
        out, log_det = self.forward_parts_and_log_det(self._trace.flatten(noise))
        return self._unflatten_out(out), log_det

    def inverse_and_log_det(self, values: Any) -> tuple[Any, Array]:
        """``(inverse(values), inverse_log_det_jacobian(values))`` in one pass."""
        out, log_det = self.inverse_parts_and_log_det(self._flatten_out(values))
        return self._trace.unflatten(out), log_det

    def forward_parts_and_log_det(self, noise: list) -> tuple[list, Array]:
        """`forward_and_log_det` on a list of parts, one per latent in the trace's order.

        It returns one part per record of the value side: the latents and the deterministic
        variables, in program order, when the values land in the support (``parts`` with
        the support), else the latents' ``u``. The architectures' stage chains use this form,
        so the model's structure is built once, at the end of the chain.
        """
        return self._batched(self._forward_event, noise, self._noise_shape)

    def inverse_parts_and_log_det(self, values: list) -> tuple[list, Array]:
        """`inverse_and_log_det` on a list of the latents' parts, in the trace's order.

        Deterministic variables are functions of their parents: they have no part here.
        """
        return self._batched(self._inverse_event, values, self._value_shape)

    # -- tfb.Bijector protocol --------------------------------------------------------------

    @property
    def _parts_interact(self):
        return True

    def _is_increasing(self, **kwargs):
        return False

    def _forward(self, x):
        return self.forward_and_log_det(x)[0]

    def _inverse(self, y):
        return self.inverse_and_log_det(y)[0]

    def _forward_log_det_jacobian(self, x):
        return self.forward_and_log_det(x)[1]

    def _inverse_log_det_jacobian(self, y):
        return self.inverse_and_log_det(y)[1]

    def _forward_dtype(self, input_dtype, **kwargs):
        return self._unflatten_out([r.dtype for r in self._out_records()])

    def _inverse_dtype(self, output_dtype, **kwargs):
        return self._trace.unflatten([r.dtype for r in self._trace.latents])

    def _forward_event_shape(self, input_shape):
        return self._unflatten_out([_TensorShape(self._value_shape(r))
                                    for r in self._out_records()])

    def _inverse_event_shape(self, output_shape):
        return self._trace.unflatten([_TensorShape(r.unconstrained_shape)
                                      for r in self._trace.latents])

    def _forward_event_shape_tensor(self, input_shape):
        return self._unflatten_out([np.array(self._value_shape(r), np.int32)
                                    for r in self._out_records()])

    def _inverse_event_shape_tensor(self, output_shape):
        return self._trace.unflatten([np.array(r.unconstrained_shape, np.int32)
                                      for r in self._trace.latents])

    # -- implementation ---------------------------------------------------------------------

    def _out_records(self):
        """Records of the value side: deterministic variables too when values are in the
        support (they are functions of their parents; there is no ``u`` for them)."""
        return self._trace.values if self._apply_support else self._trace.latents

    def _unflatten_out(self, flat: list[Any]) -> Any:
        if self._apply_support:
            return self._trace.unflatten_values(flat)
        return self._trace.unflatten(flat)

    def _flatten_out(self, tree: Any) -> list[Any]:
        """Value-side tree -> the latents' leaves (deterministic values are not read)."""
        if not self._apply_support:
            return self._trace.flatten(tree)
        by_name = dict(zip(self._trace.value_names, self._trace.flatten_values(tree)))
        return [by_name[n] for n in self._trace.latent_names]

    @staticmethod
    def _noise_shape(record):
        return record.unconstrained_shape

    def _value_shape(self, record):
        return record.event_shape if self._apply_support else record.unconstrained_shape

    def _gate(self, name: str) -> Optional[Array]:
        if not self._gated:
            return None
        per_sample = getattr(self, "_per_sample_gates", None)
        return per_sample[name] if per_sample is not None else self._params["gates"][name]

    def _gate_rows(self, size: int) -> Optional[Array]:
        """Every gate, flattened and concatenated, broadcast to ``[size, G]`` (None ungated).

        Why not close over the gates inside the vmap over samples: the gradient of an
        unbatched gate is then summed over the samples inside each variable's own
        reduction, and XLA's fusion copies the whole backward chain of the later variables
        into each of those reductions: on a Python-loop model the compiled program (and its
        compile time) grew quadratically in the number of variables. (Optimisation barriers
        do not stop it: the CPU pipeline removes them before fusion.) Broadcast here, once,
        and split inside the vmap by one `lax.split` (`_split_gates`), all the gates'
        gradients are one concatenate and one reduction, whatever the number of variables.
        """
        if not self._gated:
            return None
        gates = self._params["gates"]
        flat = jnp.concatenate([jnp.ravel(gates[n]) for n in self._trace.latent_names])
        return jnp.broadcast_to(flat, (size,) + flat.shape)

    def _split_gates(self, row: Optional[Array]) -> Optional[dict[str, Array]]:
        if row is None:
            return None
        gates = self._params["gates"]
        names = self._trace.latent_names
        parts = jax.lax.split(row, [int(np.size(gates[n])) for n in names])
        return {n: part.reshape(jnp.shape(gates[n])) for n, part in zip(names, parts)}

    def _batched(self, event_fn, flat: list, shape_of) -> tuple[list, Array]:
        latents = self._trace.latents
        if len(flat) != len(latents):
            raise ValueError(f"expected {len(latents)} parts (one per latent variable "
                             f"{list(self._trace.latent_names)}), got {len(flat)}")
        batch_shape = None
        prepared = []
        for record, leaf in zip(latents, flat):
            leaf = jnp.asarray(leaf)
            if not jnp.issubdtype(leaf.dtype, jnp.floating):
                raise TypeError(f"variable '{record.name}': expected floating values, got "
                                f"dtype {leaf.dtype}")
            leaf = leaf.astype(record.dtype)
            event = tuple(shape_of(record))
            if leaf.ndim < len(event) or tuple(leaf.shape[leaf.ndim - len(event):]) != event:
                raise ValueError(
                    f"variable '{record.name}': expected a value of shape {event} (with optional "
                    f"leading sample dimensions), got shape {tuple(leaf.shape)}")
            leaf_batch = tuple(leaf.shape[:leaf.ndim - len(event)])
            if batch_shape is None:
                batch_shape = leaf_batch
            elif leaf_batch != batch_shape:
                raise ValueError(
                    f"variable '{record.name}': sample dimensions {leaf_batch} differ from "
                    f"those of '{latents[0].name}' {batch_shape}; all parts must share them")
            prepared.append(leaf)
        batch_shape = batch_shape or ()
        size = int(np.prod(batch_shape)) if batch_shape else 1
        reshaped = [p.reshape((size,) + p.shape[len(batch_shape):]) for p in prepared]
        # Under a trace, a runtime predicate that is not batched (see `_fusion_barrier`).
        traced = any(isinstance(leaf, jax.core.Tracer) for leaf in reshaped)
        predicate = (jnp.isfinite(reshaped[0].ravel()[0]) if traced and reshaped[0].size
                     else None)

        def with_gates(events, gate_row, predicate):
            # The per-sample gates are set for this trace only (see `_gate_rows`).
            self._per_sample_gates = self._split_gates(gate_row)
            self._barrier_predicate = predicate
            try:
                return event_fn(events)
            finally:
                self._per_sample_gates = None
                self._barrier_predicate = None

        out, log_det = jax.vmap(with_gates, in_axes=(0, 0, None))(
            reshaped, self._gate_rows(size), predicate)
        out = [o.reshape(batch_shape + o.shape[1:]) for o in out]
        return out, log_det.reshape(batch_shape)

    def _forward_event(self, noise: list[Array]) -> tuple[list[Array], Array]:
        by_name = dict(zip(self._trace.latent_names, noise))
        outputs: dict[str, Array] = {}
        log_dets: list[Array] = []

        def choose(index: int, name: str, dist: Any) -> Array:
            out, x, log_det = apply_forward(
                transform_for(dist, variable_name=name), by_name[name], self._gate(name),
                apply_map=self._apply_map, apply_support=self._apply_support)
            log_dets.append(log_det)
            # The value the later variables condition on, behind a fusion barrier.
            barrier = getattr(self, "_barrier_predicate", None)
            if out is x:
                out = x = _fusion_barrier(x, barrier)
            else:
                x = _fusion_barrier(x, barrier)
            outputs[name] = out
            return x

        def derive(index: int, name: str, dist: Any, value: Array) -> None:
            outputs[name] = value

        walk_model(self._model_fn(self._params.get("model")), choose,
                   on_deterministic=derive)
        return ([outputs[r.name] for r in self._out_records()], _sum(log_dets, noise))

    def _inverse_event(self, values: list[Array]) -> tuple[list[Array], Array]:
        by_name = dict(zip(self._trace.latent_names, values))
        outputs: dict[str, Array] = {}
        log_dets: list[Array] = []

        def choose(index: int, name: str, dist: Any) -> Array:
            out, x, log_det = apply_inverse(
                transform_for(dist, variable_name=name), by_name[name], self._gate(name),
                apply_map=self._apply_map, apply_support=self._apply_support)
            log_dets.append(log_det)
            outputs[name] = out
            return x

        walk_model(self._model_fn(self._params.get("model")), choose)
        return [outputs[n] for n in self._trace.latent_names], _sum(log_dets, values)


def _keep(value: Array) -> Array:
    return value


def _keep_too(value: Array) -> Array:
    # The same identity as `_keep` (negation is exact), written so that the branch does not
    # merely forward its input: JAX replaces a cond output that every branch forwards by
    # the input itself, which would remove the barrier.
    return jnp.negative(jnp.negative(value))


def _barrier_on_cpu(value: Array, predicate: Array) -> Array:
    return jax.lax.cond(predicate, _keep, _keep_too, value)


def _fusion_barrier(value: Array, predicate: Optional[Array]) -> Array:
    """The identity on `value`, which XLA's CPU fusion cannot see through (both ways).

    Why: in a model written as a Python loop, variable ``i + 1``'s conditional is built from
    ``x_i``, so the forward pass is a chain of ``T`` variables and the backward pass a chain
    of cotangents ``∂L/∂x_i = (direct term) + (∂x_{i+1}/∂x_i)·∂L/∂x_{i+1}``. Each link is a
    few cheap elementwise ops with two users (the next link and the variable's own
    gradient), and XLA's CPU fusion duplicates cheap producers into every user: the
    optimized program, and its compile time, grew as O(T²) although the traced program is
    O(T). A `lax.cond` is not fused into its users; with a predicate that is not batched
    (computed outside the vmap over draws, so vmap keeps a real conditional) and not a
    constant (so XLA does not inline it), each variable's value, and by the cond's
    transpose its cotangent, is materialised once. Both branches are the identity, so the
    value is exact whatever the predicate. `lax.platform_dependent` confines it to CPU
    (on other platforms it is the identity). None (an eager call): the identity.
    """
    if predicate is None:
        return value
    return jax.lax.platform_dependent(value, predicate, cpu=_barrier_on_cpu,
                                      default=lambda v, _: v)


def _sum(terms: list[Array], like: list[Array]) -> Array:
    dtype = jnp.result_type(*like) if like else jnp.float32
    total = jnp.zeros((), dtype)
    for term in terms:
        total = total + term
    return total


def standard_normal_like(trace: ModelTrace) -> Any:
    """Independent N(0, 1) noise structured like the latent event of a traced model.

    The joint distribution's flavour matches the structure (named tuple, dict or list, nested
    joint distributions for nested parts), so its event structure equals the structured
    layer's input structure. Deterministic variables have no noise and no part here.

    Args:
      trace: a `ModelTrace` (from `emf_jax.trace_model`).

    Returns:
      A joint distribution of independent standard normals, one part per latent variable,
      of that variable's unconstrained shape.

    Example:
      >>> import emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> model = tfd.JointDistributionNamed(dict(
      ...     w=tfd.Sample(tfd.Normal(0., 1.), 3), y=lambda w: tfd.Normal(w.sum(-1), 1.)))
      >>> noise = emf_jax.standard_normal_like(emf_jax.trace_model(model.experimental_pin(y=0.)))
      >>> noise.event_shape
      {'w': TensorShape([3])}
    """
    by_name = {r.name: r for r in trace.latents}

    def joint(tree: Any, name: Optional[str]) -> Any:
        if isinstance(tree, str):
            r = by_name[tree]
            return tfd.Sample(tfd.Normal(jnp.zeros((), r.dtype), jnp.ones((), r.dtype)),
                              r.unconstrained_shape, name=name)
        if isinstance(tree, dict):
            return tfd.JointDistributionNamedAutoBatched(
                type(tree)((k, joint(v, k)) for k, v in tree.items()), name=name)
        if hasattr(tree, "_fields"):
            parts = [joint(v, k) for k, v in zip(tree._fields, tree)]

            def program():
                for part in parts:
                    yield part
            return tfd.JointDistributionCoroutineAutoBatched(program, name=name)
        kind = tuple if isinstance(tree, tuple) else list
        return tfd.JointDistributionSequentialAutoBatched(
            kind(joint(v, None) for v in tree), name=name)

    return joint(trace.latent_structure, None)


def build_structured_layer_stateless(
    model: ModelOrFn,
    *,
    gated: bool = True,
    model_params: Any = None,
    initial_gate: float = DEFAULT_INITIAL_GATE,
    per_step_gates: bool = False,
    trace: Optional[ModelTrace] = None,
    validate_args: bool = False,
    name: str = "structured_layer",
) -> tuple[Callable[..., Params], Callable[..., StructuredLayer]]:
    """Builds the (gated) structured layer of a model, in TFP's stateless-builder shape.

    Args:
      model: a `tfd.JointDistribution*` (Coroutine, Sequential, Named, AutoBatched variants),
        a pinned one (`model.experimental_pin(...)`; pinned parts are left out of the layer),
        or a function ``model_fn(model_params) -> JointDistribution`` whose parameters then
        train with the layer.
      gated: give each latent variable a gate λ = sigmoid(w); ``False`` is exactly the model.
      model_params: initial parameters of `model_fn` (a pytree), only with a model function.
      initial_gate: λ at initialisation (the paper: 0.999, almost exactly the model).
      per_step_gates: give each step of a `tfd.MarkovChain` variable its own gate (a ``[T]``
        vector) instead of one gate for the whole chain (the default: one λ per latent
        variable, a chain being one variable).
      trace: the model's `ModelTrace` when the caller has it already (`trace_model` of the
        model at `model_params`), so that the model is not traced twice; None traces it.
      validate_args: passed to the bijector.
      name: the bijector's name.

    Returns:
      ``(init_fn, build_fn)``: ``params = init_fn(seed)`` (a dict with ``'gates'``: one
      unconstrained scalar per latent variable (a ``[T]`` vector for a chain with
      `per_step_gates`), and ``'model'`` when a model function is used;
      the seed is accepted for API symmetry, the initialisation is deterministic) and
      ``layer = build_fn(params)``, a `StructuredLayer` (a `tfb.Bijector`).

    Raises:
      UnsupportedDistributionError: a latent is discrete or has no registered map.

    Example:
      >>> import jax, emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> def program():
      ...     mu = yield tfd.Normal(0., 1., name='mu')
      ...     yield tfd.Normal(mu, 0.5, name='x')
      >>> model = tfd.JointDistributionCoroutineAutoBatched(program)
      >>> init_fn, build_fn = emf_jax.build_structured_layer_stateless(model)
      >>> layer = build_fn(init_fn(jax.random.key(0)))
      >>> noise = layer.noise_distribution().sample(seed=jax.random.key(1))
      >>> sorted(layer.forward(noise)._asdict())
      ['mu', 'x']
    """
    model_fn, model_params = resolve_model(model, model_params)
    if trace is None:
        trace = trace_model(model_fn(model_params))
    if not trace.latent_names:
        raise ValueError("the model has no latent variables: every variable is pinned")
    initial_logit = gate_logit(initial_gate)

    def init_fn(seed: Any = None) -> Params:
        del seed
        params: Params = {}
        if gated:
            params["gates"] = {
                r.name: jnp.full((r.num_steps,) if per_step_gates and r.num_steps else (),
                                 initial_logit, r.dtype)
                for r in trace.latents}
        if model_params is not None:
            params["model"] = model_params
        return params

    def build_fn(params: Params, *, parts: str = "map_and_support") -> StructuredLayer:
        if gated and "gates" not in params:
            raise ValueError("params has no 'gates' entry: use the params from init_fn")
        return StructuredLayer(model_fn, trace, params, gated=gated, parts=parts,
                               validate_args=validate_args, name=name)

    return init_fn, build_fn
