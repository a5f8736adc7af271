"""A trained embedded-model flow as a drop-in `tfb.Bijector`: noise ↔ the model's values.

``surrogate.bijector`` (and a density's) is this bijector, as for TFP's
`tfd.TransformedDistribution`: the surrogate equals
``tfd.TransformedDistribution(surrogate.noise_distribution, surrogate.bijector)``.
NeuTra-style HMC preconditioning runs HMC on the noise and maps it through the trained flow
with ``tfp.mcmc.TransformedTransitionKernel(kernel, bijector=surrogate.bijector)``, with
states in the model's own structure.

The noise is a one-element list ``[z]`` (``z[..., D]``), not a bare array: TFP's MCMC
transforms treat a bijector whose values are a structure as a multi-part bijector and hand it
its input as a list of parts, so a one-part list is what makes it drop-in there. The noise
distribution is therefore ``tfd.JointDistributionSequential([tfd.MultivariateNormalDiag(0,
I_D)])``. TFP's `TransformedTransitionKernel` supports tuple-like structures (the
``StructTuple`` of a `JointDistributionCoroutine`, or lists) but not dicts: for a
`JointDistributionNamed` model, run the kernel on a list of values.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from tensorflow_probability.substrates import jax as tfp

from emf_jax.architectures import EmbeddedFlow
from emf_jax.flows.base import HoldsFlow

__all__ = ["EmbeddedFlowBijector"]

tfb = tfp.bijectors
tfd = tfp.distributions
_TensorShape = type(tfd.Normal(0.0, 1.0).event_shape)


class EmbeddedFlowBijector(HoldsFlow[EmbeddedFlow], tfb.Bijector):
    """The whole chain of an `EmbeddedFlow` at given parameters, as a `tfb.Bijector`.

    Forward maps noise ``[z]`` (``z[..., D]``, see the module docstring) to values with the
    model's latent structure (each part in its support); inverse maps values back to ``[z]``.
    ``forward_min_event_ndims`` is ``[1]``, ``inverse_min_event_ndims`` the structure of the
    latents' event ranks.

    Args:
      flow: the `EmbeddedFlow`.
      params: its parameters.
      validate_args: TFP's runtime checks, passed to `tfb.Bijector`.
      name: the bijector's name (TFP's name scope).

    Example:
      >>> import jax, jax.numpy as jnp, emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> tfd = tfp.distributions
      >>> model = tfd.JointDistributionNamed(dict(
      ...     s=tfd.HalfNormal(1.), x=lambda s: tfd.Sample(tfd.Normal(0., s), 2)))
      >>> init_fn, build_fn = emf_jax.build_emf_surrogate_posterior_stateless(
      ...     model, hidden_units=(4,))
      >>> q = build_fn(init_fn(jax.random.key(0)))
      >>> z = jnp.array([[0.3, -1.0, 2.0]])
      >>> @jax.jit
      ... def check(z):
      ...     values = q.bijector.forward([z])
      ...     pushed = tfd.TransformedDistribution(q.noise_distribution, q.bijector)
      ...     return q.bijector.inverse(values)[0], pushed.log_prob(values) - q.log_prob(values)
      >>> z_again, gap = check(z)
      >>> bool(jnp.allclose(z_again, z, atol=1e-5)), bool(jnp.allclose(gap, 0.0, atol=1e-4))
      (True, True)
    """

    def __init__(self, flow: EmbeddedFlow, params: Any, *, validate_args: bool = False,
                 name: str = "embedded_flow"):
        parameters = dict(locals())
        self._hold(flow, params)
        # The values are the latents and the deterministic variables.
        value_ranks = flow.trace.unflatten_values([len(r.event_shape) for r in flow.trace.values])
        super().__init__(forward_min_event_ndims=[1], inverse_min_event_ndims=value_ranks,
                         is_constant_jacobian=False, validate_args=validate_args,
                         parameters=parameters, name=name)

    @property
    def _parts_interact(self) -> bool:
        return True

    def _is_increasing(self, **kwargs: Any) -> bool:
        return False

    def _forward(self, noise):
        (z,) = noise
        return self._flow.forward_and_log_det(self._params, z)[0]

    def _inverse(self, values):
        return [self._flow.inverse_and_log_det(self._params, values)[0]]

    def _forward_log_det_jacobian(self, noise):
        (z,) = noise
        return self._flow.forward_and_log_det(self._params, z)[1]

    def _inverse_log_det_jacobian(self, values):
        return self._flow.inverse_and_log_det(self._params, values)[1]

    def _forward_event_shape(self, input_shape):
        return self._flow.trace.unflatten_values([_TensorShape(r.event_shape)
                                                  for r in self._flow.trace.values])

    def _inverse_event_shape(self, output_shape):
        return [_TensorShape([self._flow.event_size])]

    def _forward_event_shape_tensor(self, input_shape):
        return self._flow.trace.unflatten_values([np.array(r.event_shape, np.int32)
                                                  for r in self._flow.trace.values])

    def _inverse_event_shape_tensor(self, output_shape):
        return [np.array([self._flow.event_size], np.int32)]

    def _forward_dtype(self, input_dtype, **kwargs):
        return self._flow.trace.unflatten_values([r.dtype for r in self._flow.trace.values])

    def _inverse_dtype(self, output_dtype, **kwargs):
        return [self._flow.trace.latents[0].dtype]
