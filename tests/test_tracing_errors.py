"""Bad models get clear errors that name the variable and the reason, before any compiling."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from tensorflow_probability.substrates import jax as tfp

import emf_jax
from emf_jax.transforms.registry import is_discrete

tfd = tfp.distributions
Root = tfd.JointDistributionCoroutine.Root


def _model_with(latent):
    def program():
        k = yield Root(latent(name="k"))
        yield tfd.Normal(jnp.asarray(k, jnp.float32), 1.0, name="y")

    return tfd.JointDistributionCoroutine(program).experimental_pin(y=0.5)


@pytest.mark.parametrize("latent", [
    lambda name: tfd.Bernoulli(probs=0.3, name=name),
    lambda name: tfd.Categorical(logits=jnp.zeros(3), name=name),
    # Count families whose samples are floats: caught by family, not by dtype.
    lambda name: tfd.Poisson(3.0, name=name),
    lambda name: tfd.Binomial(5.0, probs=0.4, name=name),
    lambda name: tfd.NegativeBinomial(4.0, probs=0.3, name=name),
    lambda name: tfd.Geometric(probs=0.3, name=name),
], ids=["Bernoulli", "Categorical", "Poisson", "Binomial", "NegativeBinomial", "Geometric"])
@pytest.mark.parametrize("builder", ["structured", "surrogate"])
def test_discrete_latents_are_rejected_by_name(latent, builder):
    model = _model_with(latent)
    build = (emf_jax.build_structured_layer_stateless if builder == "structured"
             else emf_jax.build_emf_surrogate_posterior_stateless)
    with pytest.raises(emf_jax.UnsupportedDistributionError,
                       match=r"variable 'k'.*discrete.*(pin|Pin)"):
        build(model)


def test_discrete_families_inside_wrappers_are_discrete():
    assert is_discrete(tfd.Poisson(jnp.ones(3)))
    with pytest.raises(emf_jax.UnsupportedDistributionError, match="variable 'k'.*discrete"):
        emf_jax.build_structured_layer_stateless(
            _model_with(lambda name: tfd.Independent(tfd.Poisson(jnp.ones(2)), 1, name=name)))


def test_continuous_families_are_not_discrete():
    for dist in [tfd.Normal(0.0, 1.0), tfd.Gamma(2.0, 1.0), tfd.Beta(2.0, 2.0),
                 tfd.MixtureSameFamily(tfd.Categorical(logits=jnp.zeros(2)),
                                       tfd.Normal(jnp.zeros(2), 1.0))]:
        assert not is_discrete(dist), type(dist).__name__


def test_wrongly_structured_noise_is_rejected():
    init_fn, build_fn = emf_jax.build_structured_layer_stateless(
        _model_with(lambda name: tfd.Normal(0.0, 1.0, name=name)))
    layer = build_fn(init_fn(jax.random.PRNGKey(0)))
    with pytest.raises((TypeError, ValueError)):
        layer.forward({"not_k": jnp.zeros(())})
