"""Every architecture with every backbone learns: the ELBO improves and every parameter moves.

One CI-sized fit per (architecture, backbone) pair of the tables below: a pinned two-latent
model (a location and a positive scale, five observations), hidden units (4,), 30 Adam steps
of TFP's stateless fit under one `jax.jit`. Two checks that can fail:

- the ELBO at the fitted parameters exceeds the ELBO at the initial ones by more than
  ``Z = 4`` standard errors of the paired difference (common random numbers: the same 512
  noise draws at both parameter values, so the standard error is that of the per-draw
  differences, estimated from them; two-sided p ≈ 6e-5 for a spurious pass);
- every leaf of the parameter pytree (base stage, each backbone segment's layers, the
  structured layer's gates) has a nonzero gradient of the ELBO estimate at the fitted
  parameters. (At initialisation the backbones are the exact identity and their hidden
  layers get no gradient yet: the check runs after the fit.) A change that cut a stage out
  of the gradient path would fail here.

`ARCHITECTURE_ROWS` and `BACKBONE_ROWS` are written out by hand, so that
`tests/test_properties.py::test_every_family_backbone_and_architecture_has_a_row` fails when
`emf_jax.architectures.ARCHITECTURES` or `BACKBONES` gains a name without a row here.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tensorflow_probability.substrates import jax as tfp

import emf_jax

tfd = tfp.distributions

# architecture -> learning rate of its fit (all the same today; a row per name on purpose).
ARCHITECTURE_ROWS = {
    "gemf-t": 3e-2, "emf-t": 3e-2, "gemf-m": 3e-2, "emf-m": 3e-2,
    "gemf-b": 3e-2, "emf-b": 3e-2, "flow": 3e-2, "structured": 3e-2,
    "vip": 3e-2, "mif": 3e-2, "gemf-vip": 3e-2,
}
# backbone -> its factory options at CI size.
BACKBONE_ROWS: dict[str, dict] = {
    "iaf": {}, "maf": {}, "realnvp": {}, "nsf": {"num_bins": 4},
}
NUM_STEPS = 30
NUM_EVAL = 512
Z = 4.0
OBSERVATIONS = np.array([2.1, 3.4, 1.7, 2.9, 3.8], np.float32)


def _model():
    def program():
        mu = yield tfd.Normal(jnp.float32(0.0), 3.0, name="mu")
        s = yield tfd.HalfNormal(jnp.float32(2.0), name="s")
        # Scale at least 1: the log-likelihood's tails stay quadratic in mu, so the ELBO
        # terms at the prior have a finite, moderate variance (a scale near 0 would not).
        yield tfd.Sample(tfd.Normal(mu, 1.0 + s), OBSERVATIONS.size, name="y")
    return tfd.JointDistributionCoroutineAutoBatched(program).experimental_pin(
        y=jnp.asarray(OBSERVATIONS))


def _grid():
    # The default run covers every architecture (with "iaf") and every backbone (inside
    # "gemf-t"); the rest of the product runs
    # under `-m slow` (about 10 s of compile per pair on a CI core).
    from emf_jax.architectures import ARCHITECTURES
    for architecture in sorted(ARCHITECTURE_ROWS):
        backbones = (sorted(BACKBONE_ROWS)
                     if ARCHITECTURES[architecture].num_backbone_segments else ["none"])
        for backbone in backbones:
            default = backbone in ("iaf", "none") or architecture == "gemf-t"
            yield pytest.param(architecture, backbone, id=f"{architecture}-{backbone}",
                               marks=() if default else (pytest.mark.slow,))


@pytest.mark.parametrize("architecture,backbone", list(_grid()))
def test_the_elbo_improves_and_every_parameter_gets_a_gradient(architecture, backbone):
    pinned = _model()
    init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
        pinned, architecture=architecture, backbone="iaf" if backbone == "none" else backbone,
        hidden_units=(4,), num_backbone_layers=2,
        backbone_kwargs=BACKBONE_ROWS.get(backbone) or None,
        # The pilot would already have fitted the base and gates: this test is about what
        # the fit itself trains.
        warm_start_steps=0)
    target = pinned.unnormalized_log_prob

    def elbo_terms(params, seed, n):
        q = build_fn(params)
        x, log_q = q.experimental_sample_and_log_prob(n, seed=seed)
        return target(x) - log_q

    @jax.jit
    def fit_and_evaluate(key):
        init = init_fn(key)
        params, losses = tfp.vi.fit_surrogate_posterior_stateless(
            target, build_fn, init, optax.adam(ARCHITECTURE_ROWS[architecture]),
            num_steps=NUM_STEPS, sample_size=8, seed=jax.random.key(1))
        gradient = jax.grad(lambda p: jnp.mean(elbo_terms(p, jax.random.key(3), 16)))(params)
        # Both parameter values through one traced copy of the surrogate (compile time).
        both = jax.tree.map(lambda a, b: jnp.stack([a, b]), init, params)
        terms = jax.vmap(lambda p: elbo_terms(p, jax.random.key(2), NUM_EVAL))(both)
        return params, losses, terms[0], terms[1], gradient

    params, losses, before, after, gradient = fit_and_evaluate(jax.random.key(0))
    assert np.all(np.isfinite(losses)), f"{architecture}/{backbone}: non-finite losses"
    difference = np.asarray(after, np.float64) - np.asarray(before, np.float64)
    assert np.all(np.isfinite(difference)), f"{architecture}/{backbone}: non-finite ELBO terms"
    standard_error = np.std(difference, ddof=1) / np.sqrt(NUM_EVAL)
    gain = float(np.mean(difference))
    assert gain > Z * standard_error, (
        f"{architecture}/{backbone}: the ELBO did not improve in {NUM_STEPS} steps "
        f"({np.mean(before):.3f} -> {np.mean(after):.3f}, gain {gain:.3g} <= "
        f"{Z}·SE = {Z * standard_error:.3g})")
    dead = [jax.tree_util.keystr(path) for path, g in
            jax.tree_util.tree_flatten_with_path(gradient)[0]
            if not np.any(np.asarray(g) != 0)]
    assert not dead, f"{architecture}/{backbone}: parameters without gradient: {dead}"
    # The groups the architecture must train, each with at least one leaf (so that the
    # check above is not vacuous): each backbone segment, and the gates when gated.
    arch = emf_jax.architectures.get_architecture(architecture)
    for segment in range(arch.num_backbone_segments):
        assert jax.tree.leaves(params["backbone"][segment]), f"segment {segment} is empty"
    if arch.gated:
        assert jax.tree.leaves(params["structured"]["gates"]), "no gates"
    if arch.placement == "reparam":
        assert jax.tree.leaves(params["reparam"]), "no reparameterisation parameters"
