"""Tests of emf_jax.flows: bijection properties, autoregressive structure, initialisation,
gradients, compile-time scaling, the TFP bridge and a small density fit."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorflow_probability.substrates import jax as tfp

from emf_jax import flows
from emf_jax.flows import (
    FlowBijector,
    chain_flows,
    identity_flow,
    made,
    masked_autoregressive_flow,
    masked_autoregressive_layer,
    neural_spline_flow,
    permutation_flow,
    rational_quadratic_spline,
    real_nvp_flow,
)
from tests.bijector_checks import (
    ROUND_TRIP_TOL,
    check_batch_consistency,
    check_bijection,
    check_tfp_bijector,
)

tfd = tfp.distributions
tfb = tfp.bijectors

# Small networks keep the file fast; bound 2.5 puts some test points in the spline tails.
FACTORIES = {
    "maf_affine_iaf": functools.partial(
        masked_autoregressive_flow, num_layers=2, hidden_units=(8, 8), direction="iaf"),
    "maf_affine_maf": functools.partial(
        masked_autoregressive_flow, num_layers=2, hidden_units=(8, 8), direction="maf"),
    "real_nvp": functools.partial(real_nvp_flow, num_layers=3, hidden_units=(8, 8)),
    # The clipped parameterisation (test_bounded_affine_layers_clip_log_scale_and_shift
    # checks the clips themselves).
    "maf_bounded_maf": functools.partial(
        masked_autoregressive_flow, num_layers=2, hidden_units=(8, 8), direction="maf",
        max_log_scale=1.0, max_shift=1.0),
    "nsf_ar_iaf": functools.partial(
        neural_spline_flow, num_layers=2, num_bins=4, hidden_units=(8, 8), bound=2.5,
        conditioner="autoregressive", direction="iaf"),
    "nsf_ar_maf": functools.partial(
        neural_spline_flow, num_layers=2, num_bins=4, hidden_units=(8, 8), bound=2.5,
        conditioner="autoregressive", direction="maf"),
    "nsf_coupling": functools.partial(
        neural_spline_flow, num_layers=3, num_bins=4, hidden_units=(8, 8), bound=2.5,
        conditioner="coupling"),
}
FAMILIES = sorted(FACTORIES)
DIMS = (1, 2, 5)
DTYPES = ("float32", "float64")


D = 5  # the "general" dimension most tests use; B events of it share compiled functions
B = 8


def _dtype(name: str, request: pytest.FixtureRequest) -> jnp.dtype:
    if name == "float64":
        request.getfixturevalue("x64")
    return jnp.dtype(name)


def _normal(seed, shape, dtype=jnp.float32, scale=1.0):
    """Normal test inputs drawn by NumPy (no random-number kernel to compile)."""
    return jnp.asarray(scale * np.random.default_rng(seed).standard_normal(shape), dtype)


def _random_params(flow, seed=1, scale=0.3):
    """Random N(0, scale^2) parameters with the structure of ``flow.init``'s output.

    Non-identity parameters make the bijection checks meaningful. NumPy draws them (shapes from
    ``jax.eval_shape``) so that no random-number kernel is compiled per test.
    """
    shapes = jax.eval_shape(flow.init, jax.random.PRNGKey(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype),
                        shapes)


# Flows and parameters are cached per configuration: a flow's functions are jitted with the
# parameters as arguments, so tests that share a flow and input shape share one compilation.
def _cases(all_cases, default):
    """``pytest.param``s of ``all_cases``; those not in ``default`` are marked slow."""
    return [pytest.param(*case, marks=() if case in default else pytest.mark.slow)
            for case in all_cases]


@functools.lru_cache(maxsize=None)
def _flow(family, dim, dtype_name="float32"):
    return FACTORIES[family](dim, dtype=jnp.dtype(dtype_name))


@functools.lru_cache(maxsize=None)
def _random(family, dim, dtype_name="float32"):
    """A cached small flow and random (non-identity) parameters for it."""
    flow = _flow(family, dim, dtype_name)
    return flow, _random_params(flow)


@functools.lru_cache(maxsize=None)
def _initialised(family, dim, dtype_name="float32"):
    """A cached small flow and its ``init`` parameters."""
    flow = _flow(family, dim, dtype_name)
    return flow, flow.init(jax.random.PRNGKey(0))


def _count_eqns(jaxpr, primitives=None) -> int:
    """Counts equations recursively through sub-jaxprs (scan bodies, jit calls, ...)."""
    count = 0
    for eqn in jaxpr.eqns:
        if primitives is None or eqn.primitive.name in primitives:
            count += 1
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    count += _count_eqns(inner, primitives)
    return count


# ----------------------------------------------------------------------------------------------
# Bijection: round trip and log-det against the Jacobian, with randomised parameters.


def _bijection_cases():
    """The full table (family x dim x dtype x jit); a covering subset runs by default.

    Each case compiles several programs, so the default run takes, per family, one jitted case
    at dim 5 and one un-jitted case at dim 1 or 2, alternating the dtypes, so that every family
    meets both dtypes and both modes and every dim is covered; the rest is marked slow.
    """
    cases = []
    for i, family in enumerate(FAMILIES):
        default = {(5, DTYPES[i % 2], True), (1 if i % 2 == 0 else 2, DTYPES[1 - i % 2], False)}
        for dim in DIMS:
            for dtype_name in DTYPES:
                for use_jit in (True, False):
                    marks = () if (dim, dtype_name, use_jit) in default else pytest.mark.slow
                    cases.append(pytest.param(
                        family, dim, dtype_name, use_jit, marks=marks,
                        id=f"{family}-{dim}-{dtype_name}-{'jit' if use_jit else 'nojit'}"))
    return cases


@pytest.mark.parametrize("family, dim, dtype_name, use_jit", _bijection_cases())
def test_bijection(family, dim, dtype_name, use_jit, request):
    dtype = _dtype(dtype_name, request)
    flow, params = _random(family, dim, dtype_name)
    x = _normal(2, (dim,), dtype, scale=1.5)
    check_bijection(
        lambda v: flow.forward_and_log_det(params, v)[0],
        lambda v: flow.inverse_and_log_det(params, v)[0],
        lambda v: flow.forward_and_log_det(params, v)[1],
        x,
        inverse_log_det=lambda v: flow.inverse_and_log_det(params, v)[1],
        use_jit=use_jit,
    )
    if not use_jit:  # (compiled already) the random flow is far from the identity
        y, fldj = flow.forward_and_log_det(params, x)
        assert float(jnp.max(jnp.abs(y - x))) > 0.05 and abs(float(fldj)) > 0.01


# One family per layer kind by default (the batch handling is shared).
@pytest.mark.parametrize("family", _cases(
    [(f,) for f in FAMILIES], {("maf_affine_maf",), ("real_nvp",), ("nsf_ar_iaf",)}))
def test_leading_batch_dims(family):
    flow, params = _random(family, D)
    x = _normal(2, (2, B // 2, D))
    y, fldj = flow.forward_and_log_det(params, x)
    assert y.shape == (2, B // 2, D) and fldj.shape == (2, B // 2)
    y_flat, fldj_flat = flow.forward_and_log_det(params, x.reshape(B, D))
    np.testing.assert_allclose(y.reshape(B, D), y_flat, atol=1e-5)
    np.testing.assert_allclose(fldj.reshape(B), fldj_flat, atol=1e-5)
    x_back, ildj = flow.inverse_and_log_det(params, y)
    assert x_back.shape == (2, B // 2, D) and ildj.shape == (2, B // 2)
    np.testing.assert_allclose(x_back, x, atol=1e-4)
    np.testing.assert_allclose(ildj, -fldj, atol=1e-4)


def test_spline_elementwise_tails_knots_and_monotonicity(x64):
    bound = 2.0
    spline = rational_quadratic_spline(num_bins=5, bound=bound)
    raw = jnp.asarray(np.random.default_rng(0).standard_normal(spline.num_params))
    # A grid through both tails, the bounds and (generically) every bin, plus points just
    # either side of the bounds.
    edges = np.array([-bound - 1e-9, -bound + 1e-9, bound - 1e-9, bound + 1e-9])
    x = jnp.asarray(np.concatenate([np.linspace(-4.0, 4.0, 801), edges]))

    @jax.jit
    def run(x):
        raw_b = jnp.broadcast_to(raw, x.shape + raw.shape)
        y, ldj = spline.forward(raw_b, x)
        dydx = jax.vmap(jax.grad(lambda v, r: spline.forward(r, v)[0]))(x, raw_b)
        x_back, ildj = spline.inverse(raw_b, y)
        return y, ldj, dydx, x_back, ildj

    y, ldj, dydx, x_back, ildj = run(x)
    grid, y_grid = x[:801], y[:801]
    outside = jnp.abs(x) > bound
    np.testing.assert_array_equal(y[outside], x[outside])  # identity tails
    np.testing.assert_array_equal(ldj[outside], 0.0)
    np.testing.assert_allclose(y[jnp.abs(x) == bound], x[jnp.abs(x) == bound], atol=1e-12)
    assert bool(jnp.all(jnp.diff(y_grid) > 0)), "spline is not increasing"
    assert float(jnp.max(jnp.abs(y_grid - grid))) > 0.1, "random spline is ~identity"
    np.testing.assert_allclose(ldj, jnp.log(dydx), atol=1e-9)
    # The slope is continuous across the bounds (slope-1 tails).
    np.testing.assert_allclose(dydx[801:], 1.0, atol=1e-6)
    np.testing.assert_allclose(x_back, x, atol=1e-10)
    np.testing.assert_allclose(ildj, -ldj, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# Autoregressive structure.


@pytest.mark.parametrize("order", ["left-to-right", "right-to-left", [3, 0, 4, 1, 2]])
def test_made_is_autoregressive(order):
    dim, num_params = 5, 3
    net = made(dim, num_params, hidden_units=(16, 16), activation=jnp.tanh, input_order=order,
               output_init_scale=1.0)
    params = _random_params(net)
    x = _normal(2, (dim,))
    jac = jax.jit(jax.jacfwd(lambda v: net.apply(params, v)))(x)  # [D, P, D]
    assert jac.shape == (dim, num_params, dim)
    degrees = flows.made_degrees(dim, order)
    allowed = degrees[None, :] < degrees[:, None]  # output d may see input j iff deg j < deg d
    dependence = np.asarray(jnp.max(jnp.abs(jac), axis=1))
    np.testing.assert_array_equal(dependence[~allowed], 0.0)
    # Wide enough hidden layers connect every allowed pair.
    assert np.all(dependence[allowed] > 1e-6)


def test_made_context_feeds_every_output():
    net = made(3, 2, hidden_units=(8,), context_size=2, output_init_scale=1.0)
    params = _random_params(net)
    x = _normal(2, (3,))
    ctx = _normal(3, (2,))
    jac_x, jac_ctx = jax.jit(jax.jacfwd(lambda v, c: net.apply(params, v, c), (0, 1)))(x, ctx)
    assert np.all(np.asarray(jnp.max(jnp.abs(jac_ctx), axis=(1, 2))) > 0)
    np.testing.assert_array_equal(np.triu(np.asarray(jnp.max(jnp.abs(jac_x), axis=1))), 0.0)
    with pytest.raises(ValueError, match="context"):
        net.apply(params, x)


def test_made_with_one_input_is_constant():
    net = made(1, 2, hidden_units=(4,), output_init_scale=1.0)
    params = _random_params(net)
    out = net.apply(params, jnp.array([[-3.0], [0.5], [7.0]]))
    np.testing.assert_allclose(out, jnp.broadcast_to(out[0], out.shape))


@pytest.mark.parametrize("direction", ["iaf", "maf"])
def test_autoregressive_layer_jacobian_is_lower_triangular(direction):
    layer = masked_autoregressive_layer(4, hidden_units=(16,), activation=jnp.tanh,
                                        direction=direction)
    params = _random_params(layer)
    x = _normal(2, (4,))
    jac, ldj = jax.jit(lambda v: (jax.jacfwd(lambda u: layer.forward_and_log_det(params, u)[0])(v),
                                  layer.forward_and_log_det(params, v)[1]))(x)
    np.testing.assert_array_equal(np.triu(np.asarray(jac), k=1), 0.0)
    assert np.all(np.abs(np.tril(np.asarray(jac), k=-1))[np.tril_indices(4, -1)] > 0)
    np.testing.assert_allclose(ldj, jnp.sum(jnp.log(jnp.abs(jnp.diag(jac)))), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Initialisation and gradients.


def _loss(family, flow, params, x):
    """A simple loss through the one-pass direction (the one training differentiates)."""
    fn = flow.inverse_and_log_det if family.endswith("_maf") else flow.forward_and_log_det
    y, ldj = fn(params, x)
    return jnp.mean(jnp.sum((y - 0.3) ** 2, axis=-1) - ldj)


def _zero_output_kernels(params):
    """The parameters ``output_init_scale=0`` would give: conditioner output kernels zeroed."""
    return jax.tree_util.tree_map_with_path(
        lambda path, p: jnp.zeros_like(p) if "'output'" in jax.tree_util.keystr(path)
        and "kernel" in jax.tree_util.keystr(path) else p, params)


@pytest.mark.parametrize("family, dim", _cases(
    [(f, d) for f in FAMILIES for d in (1, D)],
    {(f, D) for f in FAMILIES} | {("maf_affine_iaf", 1), ("nsf_coupling", 1)}))
def test_init_is_near_identity(family, dim):
    flow, params = _initialised(family, dim)
    x = _normal(3, (B, dim), scale=2.0)
    # A zero output layer gives the identity up to rounding (the stack restores the coordinate
    # order after its permutations).
    exact = _zero_output_kernels(params)
    for got, want in _both_directions(flow, exact, x):
        np.testing.assert_allclose(got, want, atol=1e-5)
    # The default init (output kernels scaled by 1e-2) is within ~5% per coordinate of it.
    for got, want in _both_directions(flow, params, x):
        tol = 0.05 * (1.0 + jnp.abs(want)) if got.shape == x.shape else 0.05 * dim
        assert bool(jnp.all(jnp.abs(got - want) <= tol))


def _both_directions(flow, params, x):
    """Pairs (value, identity value) of forward and inverse outputs and log-dets at ``x``."""
    y, fldj = flow.forward_and_log_det(params, x)
    x_back, ildj = flow.inverse_and_log_det(params, x)
    zero = jnp.zeros(x.shape[:-1], x.dtype)
    return [(y, x), (x_back, x), (fldj, zero), (ildj, zero)]


@pytest.mark.parametrize("family, dim", _cases(
    [(f, d) for f in FAMILIES for d in (1, D)],
    {("maf_affine_iaf", D), ("nsf_ar_maf", D), ("nsf_coupling", D), ("maf_affine_iaf", 1),
     ("real_nvp", 1)}))
def test_every_parameter_gets_a_gradient_at_init(family, dim):
    flow, params = _initialised(family, dim)
    x = _normal(3, (B, dim), scale=2.0)
    grads = jax.jit(jax.grad(functools.partial(_loss, family, flow)))(params, x)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        name = jax.tree_util.keystr(path)
        assert bool(jnp.all(jnp.isfinite(g))), name
        if dim == 1 and name != "['conditioner']['output']['bias']":
            # D = 1 (documented): the conditioner has no input, so each layer is a learned
            # elementwise map whose parameters are the output bias; a MADE masks everything
            # else off, a coupling MLP's hidden biases train once the output kernel is nonzero.
            continue
        per_layer = jnp.max(jnp.abs(g).reshape(g.shape[0], -1), axis=1)
        assert bool(jnp.all(per_layer > 0)), f"zero gradient in some layer at {name}"


def test_output_init_scale_zero_zeroes_the_output_kernels():
    flow = masked_autoregressive_flow(3, hidden_units=(8,), output_init_scale=0.0)
    params = flow.init(jax.random.PRNGKey(0))
    np.testing.assert_array_equal(params["conditioner"]["output"]["kernel"], 0.0)
    assert float(jnp.max(jnp.abs(params["conditioner"]["hidden_0"]["kernel"]))) > 0


# ----------------------------------------------------------------------------------------------
# Compile time: one traced layer body regardless of depth.


@pytest.mark.parametrize("family", FAMILIES)
def test_trace_size_does_not_grow_with_depth(family):
    dim = 3
    x = jnp.zeros((2, dim))
    sizes = {}
    for num_layers in (2, 8):
        flow = FACTORIES[family](dim, num_layers=num_layers)
        params = jax.eval_shape(flow.init, jax.random.PRNGKey(0))
        sizes[num_layers] = tuple(
            _count_eqns(jax.make_jaxpr(fn)(params, x).jaxpr)
            for fn in (flow.forward_and_log_det, flow.inverse_and_log_det))
    assert sizes[2] == sizes[8]
    assert min(sizes[2]) > 5  # a real layer body was traced


# ----------------------------------------------------------------------------------------------
# FlowBijector: the bridge to TFP.


def _base(dim, dtype):
    return tfd.Sample(tfd.Normal(jnp.zeros((), dtype), jnp.ones((), dtype)), dim)


@pytest.mark.parametrize("family, dtype_name", _cases(
    [(f, d) for f in FAMILIES for d in DTYPES],
    {("maf_affine_iaf", "float32"), ("nsf_coupling", "float32"), ("nsf_ar_maf", "float64")}))
def test_flow_bijector_in_transformed_distribution(family, dtype_name, request):
    dtype = _dtype(dtype_name, request)
    flow, params = _random(family, D, dtype_name)

    @jax.jit
    def run(params, seed, fresh):
        dist = tfd.TransformedDistribution(_base(D, dtype), FlowBijector(flow, params))
        samples = dist.sample(B, seed=seed)
        # Own samples hit the bijector cache; fresh points go through the inverse.
        return samples, dist.log_prob(samples), dist.log_prob(fresh)

    fresh = _normal(6, (B, D), dtype)
    samples, log_prob, log_prob_fresh = run(params, jax.random.PRNGKey(5), fresh)
    assert samples.shape == (B, D) and samples.dtype == dtype and log_prob.shape == (B,)
    tol = 1e-4 if dtype == jnp.float32 else 1e-9
    for y, lp in ((samples, log_prob), (fresh, log_prob_fresh)):
        x, ildj = flow.inverse_and_log_det(params, y)
        _, fldj = flow.forward_and_log_det(params, x)
        np.testing.assert_allclose(lp, _base(D, dtype).log_prob(x) - fldj, rtol=tol, atol=tol)
        np.testing.assert_allclose(lp, _base(D, dtype).log_prob(x) + ildj, rtol=tol, atol=tol)


# The wrapper is generic: one family with a sequential inverse, one with a sequential forward.
@pytest.mark.parametrize("family", ["maf_affine_iaf", "nsf_ar_maf"])
def test_flow_bijector_property_suite(family):
    flow, params = _random(family, D)
    bij = FlowBijector(flow, params)
    check_tfp_bijector(bij, _normal(2, (D,)))
    check_batch_consistency(bij, _normal(3, (B, D)))
    # Extra event dims are summed over.
    x2 = _normal(4, (B, D))
    np.testing.assert_allclose(bij.forward_log_det_jacobian(x2, event_ndims=2),
                               jnp.sum(bij.forward_log_det_jacobian(x2, event_ndims=1)),
                               rtol=1e-5)


def test_flow_bijector_in_chain_under_jit():
    flow, params = _random("maf_affine_maf", D)
    x = _normal(2, (B, D))

    @jax.jit
    def run(params, x):
        chain = tfb.Chain([tfb.Scale(2.0), FlowBijector(flow, params), tfb.Shift(1.0)])
        return chain.forward(x), chain.forward_log_det_jacobian(x, event_ndims=1)

    y, ldj = run(params, x)
    z, flow_ldj = flow.forward_and_log_det(params, x + 1.0)
    np.testing.assert_allclose(y, 2.0 * z, rtol=1e-6)
    np.testing.assert_allclose(ldj, flow_ldj + D * np.log(2.0), rtol=1e-5, atol=1e-5)


def test_iaf_log_prob_of_own_samples_skips_the_sequential_inverse():
    flow, params = _random("maf_affine_iaf", D)

    def sample_and_log_prob(params, seed):
        dist = tfd.TransformedDistribution(_base(D, jnp.float32), FlowBijector(flow, params))
        return dist.experimental_sample_and_log_prob(3, seed=seed)

    def log_prob_only(params, y):
        dist = tfd.TransformedDistribution(_base(D, jnp.float32), FlowBijector(flow, params))
        return dist.log_prob(y)

    seed = jax.random.PRNGKey(0)
    loops = {"scan", "while"}
    # Sampling and scoring its own samples: only the layer scan, no D-pass loop.
    assert _count_eqns(jax.make_jaxpr(sample_and_log_prob)(params, seed).jaxpr, loops) == 1
    # Scoring fresh points needs the sequential inverse (a loop inside the layer scan).
    assert _count_eqns(jax.make_jaxpr(log_prob_only)(params, jnp.zeros((3, D))).jaxpr,
                       loops) == 2


# ----------------------------------------------------------------------------------------------
# Composition, permutations and errors.


def test_chain_flows_composes_in_order():
    a, pa = _random("maf_affine_iaf", D)
    b, pb = _random("real_nvp", D)
    perm = [2, 0, 4, 1, 3]
    chain = chain_flows(a, permutation_flow(perm), b, identity_flow(D))
    params = (pa, {}, pb, {})
    shapes = jax.eval_shape(chain.init, jax.random.PRNGKey(0))
    assert jax.tree.structure(shapes) == jax.tree.structure(params)
    x = _normal(3, (B, D))
    y, ldj = chain.forward_and_log_det(params, x)
    z, l1 = a.forward_and_log_det(pa, x)
    z, l2 = b.forward_and_log_det(pb, z[..., jnp.array(perm)])
    np.testing.assert_allclose(y, z, rtol=1e-6)
    np.testing.assert_allclose(ldj, l1 + l2, rtol=1e-5)
    x_back, ildj = chain.inverse_and_log_det(params, y)
    np.testing.assert_allclose(x_back, x, atol=ROUND_TRIP_TOL[jnp.dtype("float32")])
    np.testing.assert_allclose(ildj, -ldj, atol=1e-4)


def test_random_permutation_is_fixed_and_used_between_layers():
    np.testing.assert_array_equal(flows.random_permutation(6, seed=3),
                                  flows.random_permutation(6, seed=3))
    flow = masked_autoregressive_flow(4, num_layers=3, hidden_units=(8,), permutation="random",
                                      permutation_seed=3)
    params = _random_params(flow)
    x = _normal(2, (4,))
    check_bijection(lambda v: flow.forward_and_log_det(params, v)[0],
                    lambda v: flow.inverse_and_log_det(params, v)[0],
                    lambda v: flow.forward_and_log_det(params, v)[1], x, use_jit=False)


def test_bad_arguments_raise_clear_errors():
    flow, params = _random("maf_affine_iaf", D)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 5\]"):
        flow.forward_and_log_det(params, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="shape"):
        flow.inverse_and_log_det(params, jnp.zeros(()))
    with pytest.raises(TypeError, match="floating"):
        flow.forward_and_log_det(params, jnp.zeros(D, jnp.int32))
    with pytest.raises(ValueError, match="leading axis of size 2"):
        flow.forward_and_log_det(jax.tree.map(lambda p: p[:1], params), jnp.zeros(D))
    with pytest.raises(ValueError, match="direction"):
        masked_autoregressive_flow(3, direction="forward")
    with pytest.raises(ValueError, match="conditioner"):
        neural_spline_flow(3, conditioner="mlp")
    with pytest.raises(ValueError, match="permutation"):
        masked_autoregressive_flow(3, permutation="shuffle")
    with pytest.raises(ValueError, match="permutation"):
        masked_autoregressive_flow(3, permutation=[0, 0, 1])
    with pytest.raises(ValueError, match="num_layers"):
        real_nvp_flow(3, num_layers=0)
    with pytest.raises(ValueError, match="event_size"):
        real_nvp_flow(0)
    with pytest.raises(TypeError, match="event_size"):
        real_nvp_flow(2.0)
    with pytest.raises(ValueError, match="hidden_units"):
        made(3, 2, hidden_units=(8, 0))
    with pytest.raises(ValueError, match="input_order"):
        made(3, 2, input_order=[0, 1])
    with pytest.raises(ValueError, match="num_bins"):
        rational_quadratic_spline(num_bins=0)
    with pytest.raises(ValueError, match="same event_size"):
        chain_flows(identity_flow(2), identity_flow(3))
    with pytest.raises(TypeError, match="Flow"):
        FlowBijector(lambda x: x, {})
    with pytest.raises(ValueError, match="max_log_scale must be a positive finite number"):
        masked_autoregressive_flow(3, max_log_scale=0.0)
    with pytest.raises(ValueError, match="max_shift must be a positive finite number"):
        real_nvp_flow(2, max_shift=float("inf"))


def test_bounded_affine_layers_clip_log_scale_and_shift():
    # Huge conditioner outputs: each clip holds (|log scale| < B per layer and dimension,
    # |shift| < S), and near raw = 0 the bounded map equals the unbounded one to first
    # order (tanh(u) = u - u^3 / 3: relative difference (u / B)^2 / 3 for u << B).
    bounded = flows.affine_elementwise(max_log_scale=2.0, max_shift=3.0)
    free = flows.affine_elementwise()
    big = jnp.array([[50.0, 50.0], [-50.0, -50.0]])
    y, ldj = bounded.forward(big, jnp.zeros(2))
    assert float(jnp.max(jnp.abs(y))) <= 3.0 and float(jnp.max(jnp.abs(ldj))) <= 2.0
    small = jnp.array([[1e-3, 2e-3]])
    np.testing.assert_allclose(bounded.forward(small, jnp.ones(1))[0],
                               free.forward(small, jnp.ones(1))[0], rtol=1e-6)
    flow = masked_autoregressive_flow(3, num_layers=2, hidden_units=(8,), direction="maf",
                                      max_log_scale=1.0)
    params = jax.tree.map(lambda p: p + 10.0, flow.init(jax.random.PRNGKey(0)))
    _, log_det = flow.inverse_and_log_det(params, jnp.full((4, 3), 1e6))
    assert bool(jnp.all(jnp.isfinite(log_det))) and float(jnp.max(jnp.abs(log_det))) <= 6.0


# ----------------------------------------------------------------------------------------------
# Training: a small MAF learns a correlated Gaussian.


def test_maf_fits_a_correlated_gaussian():
    rho, n_train, n_test = 0.9, 512, 4000
    chol = np.linalg.cholesky(np.array([[1.0, rho], [rho, 1.0]]))
    data = _normal(0, (n_train, 2)) @ jnp.asarray(chol.T, jnp.float32)
    test = _normal(1, (n_test, 2)) @ jnp.asarray(chol.T, jnp.float32)
    flow = masked_autoregressive_flow(2, num_layers=2, hidden_units=(16, 16), direction="maf")
    base = _base(2, jnp.float32)

    def nll(params, x):
        z, ildj = flow.inverse_and_log_det(params, x)
        return -jnp.mean(base.log_prob(z) + ildj)

    optimizer = optax.adam(1e-2)

    @jax.jit
    def fit(params):
        def step(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(nll)(params, data)
            updates, state = optimizer.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss
        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), None, 300)
        return params, losses

    params = flow.init(jax.random.PRNGKey(2))
    initial = float(nll(params, test))
    params, losses = fit(params)
    final = float(nll(params, test))
    assert bool(jnp.all(jnp.isfinite(losses)))
    # Exact entropy of the target; the identity-initialised flow starts near the standard
    # normal's cross-entropy, entropy + gap with gap = -log(1 - rho^2) / 2 = 0.83 nats.
    entropy = float(jnp.log(2 * jnp.pi) + 1.0 + 0.5 * jnp.log(1 - rho**2))
    gap = -0.5 * np.log(1 - rho**2)
    std_err = np.sqrt(2 / 2) / np.sqrt(n_test)  # sd of -log p(x) is sqrt(D / 2)
    assert initial > entropy + gap - 0.1
    assert final < entropy + 0.1 * gap  # closes at least 90% of the gap on held-out data
    assert final > entropy - 5 * std_err  # and cannot beat the true density beyond noise
