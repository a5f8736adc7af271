"""The registry that picks a per-variable map for a distribution, its errors, and its kinds.

Look-up follows the distribution's class hierarchy (most specific class first), so a map
registered for a subclass wins over one registered for its parent (e.g. `Exponential` over
`Gamma`, `LogNormal` over `TransformedDistribution`).

Every registration records the family's *kind* of map (`KINDS`): ``"affine"``
(``x = m + S e``, gates in closed form), ``"closed form"`` (a quantile of ``Φ(e)`` in
elementary functions), ``"special-function quantile"`` (a quantile through special-function
inverses such as ``igammainv``), ``"CDF inversion"`` (the CDF inverted numerically),
``"structured"`` (independent scalar conditionals, then a structured bijection onto the
support: simplices, correlation and covariance matrices), ``"wrapper"`` (the map of the
distributions it wraps) and ``"custom"`` (registered by a user without a kind). The kinds of
emf_jax's own maps live in one table here, `_BUILTIN_KINDS`, keyed by the map function;
`family_table_markdown` renders the registry as the families table of the README and the
docs.
"""
from __future__ import annotations

import contextvars
from typing import Any, Callable, NamedTuple, Optional, TypeVar

from tensorflow_probability.substrates import jax as tfp

from emf_jax.transforms.base import Transform

__all__ = [
    "TransformFn",
    "KINDS",
    "UnsupportedDistributionError",
    "register_transform",
    "register_fallback",
    "registered_families",
    "family_kind",
    "FamilyRow",
    "family_rows",
    "family_table_markdown",
    "is_discrete",
    "current_variable",
    "transform_for",
]

tfd = tfp.distributions

TransformFn = Callable[[Any], Any]  # a Transform (a ChainTransform for tfd.MarkovChain)
_REGISTRY: dict[type, TransformFn] = {}
_KINDS: dict[type, str] = {}
_FALLBACKS: list[Callable[[Any], Optional[TransformFn]]] = []
# The variable whose map is being looked up, for error messages of nested look-ups.
_CURRENT_VARIABLE: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "emf_jax_current_variable", default=None)

F = TypeVar("F", bound=TransformFn)

KINDS = ("affine", "closed form", "special-function quantile", "CDF inversion", "structured",
         "wrapper", "custom")

# The kind of each of emf_jax's own maps, keyed by the map function's module and name. A map
# registered without a kind and missing here is "custom" (tests/test_families.py fails for
# emf_jax's own maps then: add the new map here, or pass kind= to register_transform).
_BUILTIN_KINDS: dict[str, str] = {
    "emf_jax.transforms.affine.normal_transform": "affine",
    "emf_jax.transforms.affine.mvn_linear_operator_transform": "affine",
    "emf_jax.transforms.structured_families.mvn_precision_factor_transform": "affine",
    "emf_jax.transforms.structured_families.gaussian_process_transform": "affine",
    **{f"emf_jax.transforms.closed_form.{name}_transform": "closed form" for name in (
        "uniform", "half_normal", "exponential", "weibull", "laplace", "logistic", "cauchy",
        "gumbel", "half_cauchy", "pareto", "kumaraswamy")},
    **{f"emf_jax.transforms.special.{name}_transform": "special-function quantile" for name in (
        "gamma", "chi2", "chi", "inverse_gamma", "beta", "student_t")},
    "emf_jax.transforms.monotone.cdf_inversion_transform": "CDF inversion",
    "emf_jax.transforms.numeric.truncated_normal_transform": "CDF inversion",
    "emf_jax.transforms.numeric.mixture_transform": "CDF inversion",
    "emf_jax.transforms.numeric.von_mises_transform": "CDF inversion",
    "emf_jax.transforms.structured_families.dirichlet_transform": "structured",
    "emf_jax.transforms.structured_families.lkj_transform": "structured",
    "emf_jax.transforms.structured_families.wishart_transform": "structured",
    "emf_jax.transforms.wrappers.unwrap_transform": "wrapper",
    "emf_jax.transforms.wrappers.transformed_distribution_transform": "wrapper",
    "emf_jax.transforms.markov_chain.markov_chain_transform": "wrapper",
}


def _map_name(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class UnsupportedDistributionError(NotImplementedError):
    """No map from N(0, 1) noise to this variable's distribution is known.

    A `NotImplementedError`, raised when a model is traced or its layer built, for a discrete
    latent or a family without a map; the message names the variable and the family and says
    what to do (pin the variable, marginalise it, or `register_transform`).

    Args:
      message: the explanation.

    Example:
      >>> import emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> def program():
      ...     coin = yield tfd.Bernoulli(probs=0.5, name='coin')
      ...     yield tfd.Normal(0., 1., name='x')
      >>> try:
      ...     emf_jax.trace_model(tfd.JointDistributionCoroutineAutoBatched(program))
      ... except emf_jax.UnsupportedDistributionError as err:
      ...     print(str(err)[:55])
      variable 'coin' has the discrete distribution Bernoulli
    """


def register_transform(distribution_class: type, fn: Optional[F] = None, *,
                       kind: Optional[str] = None):
    """Registers the map from N(0, 1) noise to instances of `distribution_class`.

    Args:
      distribution_class: a `tfd.Distribution` subclass.
      fn: ``fn(distribution) -> Transform`` (an `AffineTransform` or `MonotoneTransform`,
        built e.g. with `emf_jax.transforms.affine` or `cdf_inversion_transform`). It receives
        the variable's conditional distribution (parents already substituted) and describes the
        map on one whole value of the variable. If omitted, `register_transform` is a decorator.
      kind: the kind of map, one of `KINDS` (shown in the families table); by default the
        kind emf_jax records for its own map functions, else ``"custom"``.

    Returns:
      `fn` (so it can be used as a decorator).

    Raises:
      TypeError: `distribution_class` is not a class or `fn` is not callable.
      ValueError: `kind` is not one of `KINDS`.

    Example:
      >>> import emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> class MyNormal(tfp.distributions.Normal):
      ...     pass
      >>> _ = emf_jax.register_transform(MyNormal, emf_jax.transforms.normal_transform)
      >>> float(emf_jax.transforms.transform_for(MyNormal(0., 2.)).scale)
      2.0
      >>> family_kind(MyNormal)                   # the kind of the map it reuses
      'affine'
    """
    if not isinstance(distribution_class, type):
        raise TypeError(f"register_transform expects a class, got {distribution_class!r}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def register(f: F) -> F:
        if not callable(f):
            raise TypeError(f"the transform for {distribution_class.__name__} must be callable")
        _REGISTRY[distribution_class] = f
        _KINDS[distribution_class] = (kind if kind is not None
                                      else _BUILTIN_KINDS.get(_map_name(f), "custom"))
        return f

    return register if fn is None else register(fn)


def register_fallback(rule: Callable[[Any], Optional[TransformFn]]) -> None:
    """Adds a rule tried, in order, when no class in the hierarchy is registered.

    A fallback matches distributions by a property rather than by class; emf_jax installs
    one itself (numerical inversion of the CDF of any continuous scalar family), so a new
    rule is tried after it. For one class, prefer `register_transform`.

    Args:
      rule: ``rule(distribution) -> fn or None``: a ``fn(distribution) -> Transform`` for
        the distributions it handles, None to decline (the next rule is then tried).

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.transforms.affine import normal_transform
      >>> class Tagged(tfp.distributions.Normal):   # matched by a property, not by class
      ...     tag = "gaussian"
      >>> def tagged_rule(dist):
      ...     if getattr(dist, "tag", None) != "gaussian":
      ...         return None                    # declined
      ...     return normal_transform
      >>> register_fallback(tagged_rule)
      >>> float(transform_for(Tagged(0., 3.)).scale)    # Normal's registered map wins first
      3.0
    """
    _FALLBACKS.append(rule)


def registered_families() -> tuple[type, ...]:
    """The distribution classes with a registered map.

    Families without one may still work through a fallback (numerical inversion of a scalar
    CDF); see `transform_for`.

    Returns:
      A tuple of `tfd.Distribution` subclasses.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfp.distributions.Normal in registered_families()
      True
    """
    return tuple(_REGISTRY)


def family_kind(distribution_class: type) -> str:
    """The kind of map registered for `distribution_class` (one of `KINDS`).

    Args:
      distribution_class: a registered `tfd.Distribution` subclass.

    Returns:
      Its kind, e.g. ``"affine"`` or ``"CDF inversion"``.

    Raises:
      KeyError: `distribution_class` has no registered map.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> family_kind(tfd.Normal), family_kind(tfd.Gamma), family_kind(tfd.Dirichlet)
      ('affine', 'special-function quantile', 'structured')
    """
    if distribution_class not in _KINDS:
        raise KeyError(f"{distribution_class.__name__} has no registered map")
    return _KINDS[distribution_class]


class FamilyRow(NamedTuple):
    """One registered family in the families table.

    Attributes:
      name: the class name (e.g. ``'Dirichlet'``).
      kind: its kind of map (one of `KINDS`).
      distribution_class: the class.

    Example:
      >>> rows = {row.name: row for row in family_rows()}
      >>> rows["Gamma"].kind
      'special-function quantile'
    """

    name: str
    kind: str
    distribution_class: type


def family_rows() -> tuple[FamilyRow, ...]:
    """The registered families and their kinds, sorted by kind (in `KINDS` order), then name.

    TFP's private twins of public wrappers (``_Sample``, ``_Independent``, ...; see
    `emf_jax.transforms.wrappers.wrapper_base_class`) are left out: they share the public
    class's map.

    Returns:
      A tuple of `FamilyRow`.

    Example:
      >>> [row.name for row in family_rows() if row.kind == "wrapper"]
      ['Independent', 'MarkovChain', 'Sample', 'TransformedDistribution']
    """
    rows = [FamilyRow(cls.__name__, _KINDS[cls], cls) for cls in _REGISTRY
            if not cls.__name__.startswith("_")]
    return tuple(sorted(rows, key=lambda r: (KINDS.index(r.kind), r.name)))


_KIND_DESCRIPTIONS = {
    "affine": "x = m + S e: the gated map and its inverse in closed form",
    "closed form": "x = F⁻¹(Φ(e)) in closed form (through Φ, Φ⁻¹, erf⁻¹), precise in both tails",
    "special-function quantile": "x = F⁻¹(Φ(e)) through special-function inverses",
    "CDF inversion": "x = F⁻¹(Φ(e)) by a safeguarded Newton solve on the CDF "
                     "(also the fallback for any other continuous scalar family with a `cdf`)",
    "structured": "independent Beta / Chi2 / Normal conditionals (stick-breaking, C-vine, "
                  "Bartlett), then a bijection onto the simplex or the matrices",
    "wrapper": "the map of the wrapped distributions (LogNormal, LogLogistic, SinhArcsinh, ... "
               "are TransformedDistributions)",
    "custom": "registered by the user",
}
_FAMILY_NOTES = {
    "MultivariateNormalLinearOperator": " (Diag, TriL, FullCovariance, DiagPlusLowRank, ...)",
    "WishartLinearOperator": " (the Wishart family)",
}


def family_table_markdown() -> str:
    """The families table of the README and the docs, generated from the registry.

    One row per kind: the families registered with that kind and how their map works.

    Returns:
      A Markdown table (ends with a newline).

    Example:
      >>> print(family_table_markdown().splitlines()[0])
      | kind | families | map |
    """
    lines = ["| kind | families | map |", "|---|---|---|"]
    rows = family_rows()
    for kind in KINDS:
        names = [r.name + _FAMILY_NOTES.get(r.name, "") for r in rows if r.kind == kind]
        if names:
            lines.append(f"| {kind} | {', '.join(names)} | {_KIND_DESCRIPTIONS[kind]} |")
    return "\n".join(lines) + "\n"


# TFP's count families whose samples are floats: their dtype alone does not say "discrete".
_FLOAT_VALUED_DISCRETE_FAMILIES = (
    "Poisson", "Binomial", "NegativeBinomial", "Geometric", "BetaBinomial", "Skellam",
    "Multinomial", "DirichletMultinomial", "ZeroInflatedNegativeBinomial",
    "PoissonLogNormalQuadratureCompound", "GeneralizedPoisson", "QuantizedDistribution",
    "DiscreteRectifiedNormal",
)


def is_discrete(dist: Any) -> bool:
    """True for discrete families: integer or boolean values, or one of TFP's count families.

    TFP's count families (`tfd.Poisson`, `tfd.Binomial`, `tfd.NegativeBinomial`, ...) sample
    floats, so they are recognised by class; any other family by its dtype. A structured dtype
    (a joint distribution) is not discrete.

    Args:
      dist: a distribution (or any object with a `dtype`).

    Returns:
      Whether its values are discrete.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> is_discrete(tfd.Bernoulli(probs=0.5)), is_discrete(tfd.Normal(0., 1.))
      (True, False)
      >>> is_discrete(tfd.Poisson(3.0))                 # float samples, still counts
      True
    """
    import jax.numpy as jnp
    from tensorflow_probability.substrates import jax as tfp

    families = tuple(cls for cls in (getattr(tfp.distributions, name, None)
                                     for name in _FLOAT_VALUED_DISCRETE_FAMILIES)
                     if isinstance(cls, type))
    if isinstance(dist, families):
        return True
    dtype = getattr(dist, "dtype", None)
    if dtype is None or isinstance(dtype, (dict, list, tuple)):
        return False
    return not jnp.issubdtype(dtype, jnp.floating)


def current_variable() -> str:
    """``"variable 'name'"`` for the variable whose map is being looked up, for messages.

    Inside a look-up by `transform_for` (also a nested one, e.g. a `tfd.Sample`'s inner
    distribution) this names the outer variable; outside any look-up, or when no name was
    given, it is ``"a variable"``.

    Returns:
      A phrase naming the variable, for the start of an error message.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.transforms.affine import normal_transform
      >>> class Flagged(tfp.distributions.Normal):
      ...     pass
      >>> seen = []
      >>> def flagged_transform(dist):
      ...     seen.append(current_variable())
      ...     return normal_transform(dist)
      >>> _ = register_transform(Flagged, flagged_transform)
      >>> _ = transform_for(Flagged(0., 1.), variable_name="z")
      >>> seen, current_variable()
      (["variable 'z'"], 'a variable')
    """
    name = _CURRENT_VARIABLE.get()
    return f"variable '{name}'" if name is not None else "a variable"


def _describe(dist: Any) -> str:
    return type(dist).__name__


def transform_for(dist: Any, *, variable_name: Optional[str] = None) -> Transform:
    """The map from N(0, 1) noise to `dist` (on one whole value of the variable).

    Look-up: the registered map of the most specific class in ``type(dist).__mro__``, else
    the first fallback rule that accepts `dist` (e.g. numerical CDF inversion for continuous
    scalar families).

    Args:
      dist: the variable's (conditional) distribution.
      variable_name: the variable's name, for error messages.

    Returns:
      An `AffineTransform` or `MonotoneTransform`.

    Example:
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> type(transform_for(tfd.Normal(0., 1.))).__name__
      'AffineTransform'
      >>> t = transform_for(tfd.Gamma(2., 1.))
      >>> type(t).__name__, type(t.support_bijector).__name__
      ('MonotoneTransform', 'Softplus')

    Raises:
      UnsupportedDistributionError: for a discrete family, or one with no registered map and
        no continuous scalar CDF; the message names the variable and the family and says how
        to pin it or register a map.
    """
    if variable_name is None:
        # A nested look-up (Independent, Sample, MarkovChain steps) names the outer variable.
        variable_name = _CURRENT_VARIABLE.get()
    where = f"variable '{variable_name}'" if variable_name is not None else "a variable"
    if is_discrete(dist):
        raise UnsupportedDistributionError(
            f"{where} has the discrete distribution {_describe(dist)}: discrete latent variables "
            "cannot be mapped from continuous noise. Pin it to observed values "
            "(model.experimental_pin(name=value)), or marginalise it out of the model (e.g. "
            "with tfd.MixtureSameFamily).")
    token = _CURRENT_VARIABLE.set(variable_name)
    try:
        for cls in type(dist).__mro__:
            fn = _REGISTRY.get(cls)
            if fn is not None:
                return fn(dist)
        for rule in _FALLBACKS:
            fn = rule(dist)
            if fn is not None:
                return fn(dist)
    finally:
        _CURRENT_VARIABLE.reset(token)
    raise UnsupportedDistributionError(
        f"{where} has the distribution {_describe(dist)}, for which emf_jax knows no map from "
        "N(0, 1) noise (it has no registered transform and no scalar CDF to invert). Register "
        f"one with emf_jax.register_transform({_describe(dist)}, fn), or pin the variable.")
