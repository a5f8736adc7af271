"""Baseline variational surrogates built from a model: mean field, full-rank Gaussian, ASVI, IAF.

Each builder follows TFP's stateless convention and takes the same inputs as the EMF surrogate
builder::

    init_fn, build_fn = build_mean_field_surrogate_stateless(pinned_model)
    params = init_fn(seed)      # a dict of arrays
    q = build_fn(params)        # a tfd.Distribution over the model's latent variables

``model`` is a pinned joint distribution (``model.experimental_pin(...)``), whose unpinned
variables are latent, or an unpinned ``tfd.JointDistribution`` (all variables latent). Samples
of ``q`` have the model's latent structure (what ``pinned.sample_unpinned()`` or
``model.sample()`` returns) and lie in the support. The pair plugs straight into
``tfp.vi.fit_surrogate_posterior_stateless(pinned.unnormalized_log_prob, build_fn,
init_fn(seed), optimizer, num_steps, ...)``, also under ``jax.jit``.

The IAF baseline (:func:`build_iaf_surrogate_stateless`) is the ``"flow"`` architecture of
the EMF surrogate builder with the paper's IAF settings.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike
from tensorflow_probability.substrates import jax as tfp

from emf_jax._structure import FlatLatentLayout, JointModel, flat_latent_layout
from emf_jax.architectures import build_embedded_flow
from emf_jax.distribution import EmbeddedFlowDistribution

tfd = tfp.distributions
tfb = tfp.bijectors

__all__ = [
    "ASVI_PRIOR_SUBSTITUTION_RULES",
    "build_asvi_surrogate_stateless",
    "build_full_rank_surrogate_stateless",
    "build_iaf_surrogate_stateless",
    "build_mean_field_surrogate_stateless",
]

Params = dict[str, jax.Array]
InitFn = Callable[[Any], Params]
BuildFn = Callable[[Params], tfd.Distribution]
SubstitutionRule = tuple[Any, Callable[[tfd.Distribution], tfd.Distribution]]


# ----------------------------------------------------------------------------------------------
# Shared helpers.


def _as_key(seed: Any) -> jax.Array:
    """Returns a raw ``uint32[2]`` PRNG key from an int, a raw key or a typed key."""
    seed = jnp.asarray(seed)
    if jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(seed)
    if seed.shape == () and jnp.issubdtype(seed.dtype, jnp.integer):
        return jax.random.PRNGKey(seed)
    if seed.shape != (2,) or seed.dtype != jnp.uint32:
        raise ValueError(
            "`seed` must be an int, a jax.random.key or a jax.random.PRNGKey (uint32[2]); "
            f"got an array of shape {seed.shape} and dtype {seed.dtype}."
        )
    return seed


def _float_dtype(dtype: Optional[DTypeLike], layout: FlatLatentLayout) -> np.dtype:
    """Resolves the surrogate's dtype: ``dtype`` if given (must be floating), else the model's."""
    if dtype is None:
        return layout.dtype
    dtype = np.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"`dtype` must be a floating dtype; got {dtype.name}.")
    return jnp.zeros((), dtype).dtype  # canonical: float64 becomes float32 without x64


def _check_positive(value: float, what: str) -> None:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{what}` must be a positive finite number; got {value!r}.")


def _check_initial_loc_radius(value: float) -> None:
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"`initial_loc_radius` must be finite and >= 0; got {value!r}.")


def _softplus_inverse(x: jax.Array) -> jax.Array:
    """Inverse of ``jax.nn.softplus`` for positive ``x``: ``log(expm1(x))``, computed stably."""
    return x + jnp.log(-jnp.expm1(-x))


def _initial_loc(key: jax.Array, size: int, radius: float, dtype: np.dtype) -> jax.Array:
    """Uniform on ``[-radius, radius]^size`` (Stan's and TFP's initialisation convention)."""
    return jax.random.uniform(key, (size,), dtype=dtype, minval=-radius, maxval=radius)


def _check_params(params: Any, expected: Sequence[str], builder: str) -> None:
    """Raises a TypeError unless ``params`` is a mapping with exactly the ``expected`` keys."""
    if not hasattr(params, "keys") or set(params.keys()) != set(expected):
        got = sorted(params.keys()) if hasattr(params, "keys") else type(params).__name__
        raise TypeError(
            f"{builder}: expected a dict with keys {sorted(expected)} (as returned by init_fn);"
            f" got {got}."
        )


class _GaussianFamily(NamedTuple):
    """What tells the mean-field and full-rank surrogates apart; the rest is shared.

    ``initial_raw(size, dtype)`` is the initial unconstrained scale parameter (stored under
    ``raw_key``) and ``base(loc, raw)`` the Gaussian on the flat unconstrained vector.
    """

    builder: str
    raw_key: str
    initial_raw: Callable[[int, np.dtype], jax.Array]
    base: Callable[[jax.Array, jax.Array], tfd.Distribution]
    name: str


def _flat_gaussian_surrogate(model: JointModel, dtype: Optional[DTypeLike],
                             initial_loc_radius: float, initial_scale: float,
                             family: _GaussianFamily) -> tuple[InitFn, BuildFn]:
    """A Gaussian on the flat unconstrained latents, pushed through the model's bijector.

    One function for both Gaussian baselines, so that their argument checks, parameter
    layout (``{"loc", family.raw_key}``) and output bijector cannot drift apart.
    """
    layout = flat_latent_layout(model)
    dtype = _float_dtype(dtype, layout)
    _check_initial_loc_radius(initial_loc_radius)
    _check_positive(initial_scale, "initial_scale")
    size = layout.total_size

    def init_fn(seed: Any) -> Params:
        return {
            "loc": _initial_loc(_as_key(seed), size, initial_loc_radius, dtype),
            family.raw_key: family.initial_raw(size, dtype),
        }

    def build_fn(params: Params) -> tfd.Distribution:
        _check_params(params, ("loc", family.raw_key), family.builder)
        base = family.base(params["loc"], params[family.raw_key])
        return tfd.TransformedDistribution(base, layout.flat_bijector(), name=family.name)

    return init_fn, build_fn


# ----------------------------------------------------------------------------------------------
# Mean field.


def build_mean_field_surrogate_stateless(
    model: JointModel,
    *,
    dtype: Optional[DTypeLike] = None,
    initial_loc_radius: float = 2.0,
    initial_scale: float = 1e-2,
) -> tuple[InitFn, BuildFn]:
    """Builds a mean-field (diagonal) Gaussian surrogate in the model's unconstrained space.

    ``z ~ N(loc, diag(softplus(raw_scale))^2)`` on the flat vector of all ``D`` unconstrained
    coordinates; ``z`` is split and reshaped into the latent structure and pushed through the
    model's default event-space bijector (so constrained latents land in their support).

    Args:
      model: a pinned joint distribution (``model.experimental_pin(...)``) or an unpinned
        ``tfd.JointDistribution``; its latent variables must be real-valued.
      dtype: floating dtype of the parameters and samples. Default: the dtype of the model's
        latent variables.
      initial_loc_radius: initial locations are drawn uniformly from
        ``[-initial_loc_radius, initial_loc_radius]`` in the unconstrained space (TFP's and
        Stan's convention); ``0`` starts at the origin.
      initial_scale: initial standard deviation of every unconstrained coordinate.

    Returns:
      ``(init_fn, build_fn)``: ``init_fn(seed)`` returns ``{"loc": [D], "raw_scale": [D]}``
      (``scale = softplus(raw_scale)``); ``build_fn(params)`` returns the surrogate
      ``tfd.Distribution``.

    Raises:
      TypeError: if ``model`` is not a joint distribution, a latent is not real-valued, or
        ``dtype`` is not floating.
      ValueError: if an option is out of range or the model's latents cannot be laid out as
        one vector (see :func:`emf_jax._structure.flat_latent_layout`).

    Example:
      >>> import jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.baselines import build_mean_field_surrogate_stateless
      >>> tfd = tfp.distributions
      >>> model = tfd.JointDistributionNamed(dict(
      ...     s=tfd.HalfNormal(1.0), y=lambda s: tfd.Normal(0.0, s)))
      >>> init_fn, build_fn = build_mean_field_surrogate_stateless(
      ...     model.experimental_pin(y=0.5))
      >>> q = build_fn(init_fn(jax.random.PRNGKey(0)))
      >>> x = q.sample(4, seed=jax.random.PRNGKey(1))
      >>> x["s"].shape, bool((x["s"] > 0).all())
      ((4,), True)
    """
    def raw_scale(size: int, dtype: np.dtype) -> jax.Array:
        return jnp.full((size,), _softplus_inverse(jnp.asarray(initial_scale, dtype)), dtype)

    def base(loc: jax.Array, raw: jax.Array) -> tfd.Distribution:
        return tfd.MultivariateNormalDiag(loc=loc, scale_diag=jax.nn.softplus(raw))

    return _flat_gaussian_surrogate(
        model, dtype, initial_loc_radius, initial_scale,
        _GaussianFamily("build_mean_field_surrogate_stateless", "raw_scale", raw_scale, base,
                        "MeanFieldSurrogate"))


# ----------------------------------------------------------------------------------------------
# Full-rank Gaussian.


def _scale_tril_from_raw(raw: jax.Array) -> jax.Array:
    """Lower-triangular matrix with a softplus-positive diagonal from ``D(D+1)/2`` numbers."""
    m = tfp.math.fill_triangular(raw)
    diag = jnp.diagonal(m, axis1=-2, axis2=-1)
    return m + jnp.eye(m.shape[-1], dtype=m.dtype) * (jax.nn.softplus(diag) - diag)[..., None, :]


def build_full_rank_surrogate_stateless(
    model: JointModel, *, dtype: Optional[DTypeLike] = None, initial_loc_radius: float = 2.0,
    initial_scale: float = 1e-2,
) -> tuple[InitFn, BuildFn]:
    """Builds a full-rank Gaussian surrogate on one flat vector of the unconstrained latents.

    ``z ~ N(loc, L L^T)`` on the flat vector of all ``D`` unconstrained coordinates, where
    ``L`` is lower triangular, filled from ``D(D+1)/2`` numbers with a softplus on the
    diagonal; ``z`` is split and reshaped into the latent structure and pushed through the
    model's default event-space bijector. Using one ``D``-vector (not one block per variable)
    keeps the compiled program small for models with many variables.

    Args:
      model: as for :func:`build_mean_field_surrogate_stateless`.
      dtype: as for :func:`build_mean_field_surrogate_stateless`.
      initial_loc_radius: as for :func:`build_mean_field_surrogate_stateless`.
      initial_scale: ``L`` starts as ``initial_scale * I``.

    Returns:
      ``(init_fn, build_fn)``: ``init_fn(seed)`` returns
      ``{"loc": [D], "raw_scale_tril": [D * (D + 1) // 2]}``; ``build_fn(params)`` returns the
      surrogate ``tfd.Distribution``.

    Raises:
      TypeError, ValueError: as :func:`build_mean_field_surrogate_stateless` does.

    Example (with this module's ``jax`` and ``tfd``; imports as in the mean-field example):
      >>> model = tfd.JointDistributionNamed(dict(
      ...     a=tfd.Normal(0.0, 1.0), b=lambda a: tfd.Normal(a, 1.0)))
      >>> init_fn, build_fn = build_full_rank_surrogate_stateless(model)
      >>> params = init_fn(jax.random.PRNGKey(0))
      >>> params["raw_scale_tril"].shape
      (3,)
      >>> sorted(build_fn(params).sample(seed=jax.random.PRNGKey(1)))
      ['a', 'b']
    """
    def raw_scale_tril(size: int, dtype: np.dtype) -> jax.Array:
        raw_diag = _softplus_inverse(jnp.asarray(initial_scale, dtype))
        return tfp.math.fill_triangular_inverse(jnp.eye(size, dtype=dtype) * raw_diag)

    def base(loc: jax.Array, raw: jax.Array) -> tfd.Distribution:
        return tfd.MultivariateNormalTriL(loc=loc, scale_tril=_scale_tril_from_raw(raw))

    return _flat_gaussian_surrogate(
        model, dtype, initial_loc_radius, initial_scale,
        _GaussianFamily("build_full_rank_surrogate_stateless", "raw_scale_tril",
                        raw_scale_tril, base, "FullRankSurrogate"))


# ----------------------------------------------------------------------------------------------
# ASVI.

# Quantiles of |Z|, Z ~ N(0, 1): lower quartile, median, upper quartile.
_HALF_NORMAL_QUARTILES = (0.31863936396437514, 0.6744897501960817, 1.1503493803760079)


def _half_normal_as_softplus_normal(dist: tfd.HalfNormal) -> tfd.Distribution:
    """``Softplus(Normal(loc, scale))`` shaped like ``HalfNormal(dist.scale)``.

    In the softplus-inverse space, ``loc`` is the prior's median and ``scale`` makes the
    Normal's interquartile range equal to the prior's: the substitute has the prior's median
    exactly and about its spread.
    """
    s = jnp.asarray(dist.scale, dist.dtype)
    q1, q2, q3 = (_softplus_inverse(q * s) for q in _HALF_NORMAL_QUARTILES)
    loc = q2
    scale = (q3 - q1) / (2.0 * _HALF_NORMAL_QUARTILES[1])
    return tfd.TransformedDistribution(
        tfd.Normal(loc=loc, scale=scale), tfb.Softplus(), name=dist.name
    )


def _default_asvi_substitution_rules() -> tuple[SubstitutionRule, ...]:
    tfp_rules = tfp.experimental.vi.ASVI_DEFAULT_PRIOR_SUBSTITUTION_RULES
    others = tuple(rule for rule in tfp_rules if rule[0] is not tfd.HalfNormal)
    return ((tfd.HalfNormal, _half_normal_as_softplus_normal),) + others


#: ASVI prior substitution rules used by :func:`build_asvi_surrogate_stateless`: TFP's
#: defaults, except that a ``HalfNormal`` prior becomes a ``Softplus``-transformed ``Normal``
#: with the same median and interquartile range in the unconstrained space (TFP's
#: ``TruncatedNormal`` substitute diverged on a Brownian-motion model with HalfNormal scales).
ASVI_PRIOR_SUBSTITUTION_RULES: tuple[SubstitutionRule, ...] = _default_asvi_substitution_rules()


_TensorShape = type(tfd.Normal(0.0, 1.0).event_shape)


class _NoiseDrivenJoint(tfd.Distribution):
    """A joint distribution ``q`` sampled by pushing one block of noise through its bijector.

    Samples: ``x = B(unflatten(z))`` with ``z ~ N(0, I_D)`` drawn with a single key and ``B =
    make_distribution_bijector(q)``, one sample at a time under ``jax.vmap`` (TFP's ASVI
    conditionals assume unbatched parents). Density: ``q.log_prob``; with
    ``experimental_sample_and_log_prob``, ``log N(z) - log|det dB/dz|`` (no inversion).
    """

    def __init__(self, joint: tfd.Distribution, layout: FlatLatentLayout,
                 name: str = "asvi_surrogate"):
        parameters = dict(locals())
        self._joint = joint
        self._layout = layout
        self._to_latents = tfb.Chain([
            tfp.experimental.bijectors.make_distribution_bijector(joint),
            layout.unflatten_bijector(),
        ])
        super().__init__(dtype=joint.dtype, reparameterization_type=tfd.FULLY_REPARAMETERIZED,
                         validate_args=False, allow_nan_stats=True, parameters=parameters,
                         name=name)

    @property
    def joint(self) -> tfd.Distribution:
        """TFP's ASVI joint distribution."""
        return self._joint

    def _event_shape(self):
        return self._joint.event_shape

    def _event_shape_tensor(self):
        return self._joint.event_shape_tensor()

    def _batch_shape(self):
        return _TensorShape([])

    def _batch_shape_tensor(self):
        return np.array([], np.int32)

    def _forward(self, z: jax.Array) -> tuple[Any, jax.Array]:
        """Pushes noise of shape ``[n, D]`` through the bijector, one row at a time."""
        bijector = self._to_latents
        return jax.vmap(lambda row: (bijector.forward(row),
                                     bijector.forward_log_det_jacobian(row, 1)))(z)

    def _noise(self, shape: tuple[int, ...], seed: Any) -> jax.Array:
        return jax.random.normal(seed, shape + (self._layout.total_size,), self._layout.dtype)

    def _sample_n(self, n, seed=None):
        return self._forward(self._noise((n,), seed))[0]

    def _log_prob(self, value):
        return self._joint.log_prob(value)

    def _sample_and_log_prob(self, sample_shape, seed, **kwargs):
        shape = tuple(int(s) for s in np.asarray(sample_shape).reshape(-1))
        z = self._noise(shape, seed).reshape((-1, self._layout.total_size))
        values, log_det = self._forward(z)
        log_noise = -0.5 * jnp.sum(jnp.square(z), axis=-1) - 0.5 * z.shape[-1] * jnp.log(
            2 * jnp.pi).astype(z.dtype)
        values = jax.tree.map(lambda v: v.reshape(shape + v.shape[1:]), values)
        return values, (log_noise - log_det).reshape(shape)

    def _default_event_space_bijector(self):
        return self._joint.experimental_default_event_space_bijector()


def build_asvi_surrogate_stateless(
    model: JointModel,
    *,
    mean_field: bool = False,
    initial_prior_weight: float = 0.5,
    prior_substitution_rules: Sequence[SubstitutionRule] = ASVI_PRIOR_SUBSTITUTION_RULES,
    surrogate_rules: Optional[Sequence[Any]] = None,
    dtype: Optional[DTypeLike] = None,
    sample_from_noise: bool = True,
) -> tuple[InitFn, BuildFn]:
    """Builds an ASVI (automatic structured VI) surrogate with the model's own structure.

    ASVI (Ambrogioni et al., 2021) replaces every parameter ``theta`` of each latent
    conditional by ``w * theta_prior + (1 - w) * theta_free`` with trainable ``w`` in (0, 1)
    and ``theta_free``. This wraps ``tfp.experimental.vi.build_asvi_surrogate_posterior_
    stateless``, which walks a pinned model's latent conditionals with the pinned values
    substituted (observed variables are not part of the surrogate).

    Args:
      model: a pinned joint distribution (``model.experimental_pin(...)``) or an unpinned
        ``tfd.JointDistribution``; its latent variables must be real-valued.
      mean_field: if True, drop the prior term (``w = 0``): independent factors of the
        prior's families.
      initial_prior_weight: initial ``w`` in [0, 1].
      prior_substitution_rules: ``(condition, substitute_fn)`` pairs applied to every prior
        distribution before its surrogate is built (see TFP). Default:
        :data:`ASVI_PRIOR_SUBSTITUTION_RULES`.
      surrogate_rules: special-purpose surrogate rules (see TFP). Default: TFP's.
      dtype: ASVI's parameters take the dtype of the model's parameters; if given, ``dtype``
        must equal the dtype of the model's latent variables (accepted so that every builder
        has the same signature).
      sample_from_noise: if True (default), the surrogate draws one flat block of
        standard-normal noise with a single key and pushes it through
        ``tfp.experimental.bijectors.make_distribution_bijector`` of TFP's ASVI joint
        distribution: the same distribution and density, but without the joint
        distribution's per-variable chain of key splits, which XLA's CPU fusion pass
        duplicates quadratically (a 30-variable Brownian bridge took about 10 minutes to
        compile one training step; about 1 minute this way). Used for coroutine models only;
        for ``JointDistributionNamed`` / ``Sequential`` models, and if False, ``build_fn``
        returns TFP's joint distribution itself.

    Returns:
      ``(init_fn, build_fn)``: ``init_fn(seed)`` returns a dict of unconstrained parameters
      with TFP's names (``"mean_field_parameter_<dist name>_<param>"`` and
      ``"prior_weight_<dist name>_<param>"``, the distribution's ``name`` being e.g. ``"mu"``
      for ``tfd.Normal(0., 1., name="mu")``);
      ``build_fn(params)`` returns the surrogate joint distribution.

    Raises:
      TypeError: if ``model`` is not a joint distribution or a latent is not real-valued.
      ValueError: if ``initial_prior_weight`` is outside [0, 1], ``dtype`` differs from the
        model's, or the model's latents are not supported (see
        :func:`emf_jax._structure.flat_latent_layout`).

    Example (with this module's ``jax`` and ``tfd``; imports as in the mean-field example):
      >>> model = tfd.JointDistributionNamed(dict(
      ...     mu=tfd.Normal(0.0, 1.0), y=lambda mu: tfd.Normal(mu, 1.0)))
      >>> init_fn, build_fn = build_asvi_surrogate_stateless(model.experimental_pin(y=0.5))
      >>> params = init_fn(jax.random.PRNGKey(0))
      >>> sorted(params)[:2]
      ['mean_field_parameter_Normal_loc', 'mean_field_parameter_Normal_scale']
      >>> build_fn(params).sample(3, seed=jax.random.PRNGKey(1))["mu"].shape
      (3,)
    """
    layout = flat_latent_layout(model)  # validates the model (real, scalar-batch latents)
    if dtype is not None and _float_dtype(dtype, layout) != layout.dtype:
        raise ValueError(
            f"ASVI takes its dtype from the model's parameters ({layout.dtype.name}); got "
            f"dtype={np.dtype(dtype).name}. Build the model in the dtype you want instead."
        )
    if not 0.0 <= float(initial_prior_weight) <= 1.0:
        raise ValueError(f"`initial_prior_weight` must be in [0, 1]; got {initial_prior_weight!r}.")
    kwargs: dict[str, Any] = dict(
        mean_field=mean_field,
        initial_prior_weight=initial_prior_weight,
        prior_substitution_rules=tuple(prior_substitution_rules),
    )
    if surrogate_rules is not None:
        kwargs["surrogate_rules"] = tuple(surrogate_rules)
    tfp_init, tfp_build = tfp.experimental.vi.build_asvi_surrogate_posterior_stateless(
        model, **kwargs
    )
    # TFP's parameters are a StructTuple (a tuple); ours are a dict keyed by the same names.
    # The names are read once from an abstract evaluation, so build_fn needs no init call.
    names = tuple(jax.eval_shape(lambda: tfp_init(seed=jax.random.PRNGKey(0)))._fields)
    structure = jax.tree_util.tree_structure(layout.structure)

    # TFP's make_distribution_bijector of the ASVI surrogate only accepts the coroutine's
    # StructTuple structure; models written as JointDistributionNamed / Sequential keep TFP's
    # own sampling (correct, only slower to compile).
    noise_path_supported = hasattr(layout.structure, "_fields")

    def init_fn(seed: Any) -> Params:
        raw = tfp_init(seed=_as_key(seed))
        return dict(zip(names, raw))

    def build_fn(params: Params) -> tfd.Distribution:
        _check_params(params, names, "build_asvi_surrogate_stateless")
        q = tfp_build([params[name] for name in names])
        if jax.tree_util.tree_structure(q.dtype) != structure:  # type: ignore[operator]
            raise ValueError(  # pragma: no cover - guards against changes in TFP
                "ASVI surrogate's sample structure differs from the model's latent structure."
            )
        if not (sample_from_noise and noise_path_supported):
            return q
        return _NoiseDrivenJoint(q, layout)

    return init_fn, build_fn


# ----------------------------------------------------------------------------------------------
# IAF.


def build_iaf_surrogate_stateless(
    model: JointModel,
    *,
    num_layers: int = 2,
    hidden_units: Sequence[int] = (512, 512),
    activation: Callable[[jax.Array], jax.Array] = jnp.tanh,
    backbone_kwargs: Optional[dict] = None,
) -> tuple[InitFn, BuildFn]:
    """Builds the plain inverse-autoregressive-flow baseline (the paper's IAF surrogate).

    A stack of ``num_layers`` MADE-conditioned affine IAF layers (reversing permutations
    between them) on ``N(0, I_D)``, followed by the model's default event-space bijector so
    that samples land in the support. It is the ``"flow"`` architecture of
    :func:`emf_jax.build_emf_surrogate_posterior_stateless`, with the paper's IAF baseline
    activation (tanh) as default.

    Args:
      model: a pinned joint distribution or an unpinned one (all variables latent).
      num_layers: number of IAF layers.
      hidden_units: hidden layer sizes of each MADE conditioner.
      activation: the conditioner's activation.
      backbone_kwargs: extra options for the IAF factory (see
        :func:`emf_jax.flows.inverse_autoregressive_flow`).

    Returns:
      ``(init_fn, build_fn)`` as for the other builders.

    Example:
      >>> import jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.baselines import build_iaf_surrogate_stateless
      >>> tfd = tfp.distributions
      >>> prior = tfd.JointDistributionNamed(dict(rate=tfd.Gamma(2.0, 1.0)))  # all latent
      >>> init_fn, build_fn = build_iaf_surrogate_stateless(prior, hidden_units=(8,))
      >>> x = build_fn(init_fn(jax.random.PRNGKey(0))).sample(4, seed=jax.random.PRNGKey(1))
      >>> bool((x["rate"] > 0).all())
      True
    """
    flow = build_embedded_flow(
        model, architecture="flow", backbone="iaf", num_backbone_layers=num_layers,
        hidden_units=hidden_units, activation=activation, backbone_kwargs=backbone_kwargs)

    def init_fn(seed: Any = None) -> dict:
        return flow.init(seed)

    def build_fn(params: dict) -> EmbeddedFlowDistribution:
        return EmbeddedFlowDistribution(flow, params, name="iaf_surrogate")

    return init_fn, build_fn
