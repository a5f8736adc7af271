"""`EmbeddedFlowDistribution`: an embedded-model flow as a `tfd.Distribution`.

Samples have the model's latent structure; `log_prob` inverts the flow;
`experimental_sample_and_log_prob` runs the flow forward once (no inversion), which is what
variational inference uses.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tensorflow_probability.substrates import jax as tfp

from emf_jax._numerics import guard_draws
from emf_jax.architectures import EmbeddedFlow
from emf_jax.flows.base import HoldsFlow

__all__ = ["EmbeddedFlowDistribution"]

tfd = tfp.distributions
_TensorShape = type(tfd.Normal(0.0, 1.0).event_shape)


def _standard_normal_log_prob(z: jax.Array) -> jax.Array:
    d = z.shape[-1]
    return -0.5 * jnp.sum(jnp.square(z), axis=-1) - 0.5 * d * jnp.log(2 * jnp.pi).astype(z.dtype)


class EmbeddedFlowDistribution(HoldsFlow[EmbeddedFlow], tfd.Distribution):
    """The push-forward of ``N(0, I_D)`` through an `EmbeddedFlow` with given parameters.

    ``log q(x) = log N(z) + log|det ∂z/∂x|`` with ``z = flow⁻¹(x)``. Samples have the model's
    latent structure. `experimental_sample_and_log_prob` runs the flow forward once (what VI
    uses); `log_prob` of given values inverts every layer. The surrogate and density builders
    (`emf_jax.build_emf_surrogate_posterior_stateless`,
    `emf_jax.density.build_emf_density_stateless`) return it from their ``build_fn``.

    Guarded samples. The values returned by `sample` and `experimental_sample_and_log_prob`
    are the flow's values in the forward pass; in the backward pass, every draw whose
    cotangent has a non-finite entry (in any latent) gets a zero cotangent instead
    (`emf_jax._numerics.guard_draws`, a `jax.custom_vjp`). A draw where the target
    overflows (``log p = -inf`` or a non-finite gradient) then adds nothing to the
    parameters' gradient, rather than ``0 * inf = NaN`` to all of them: fitted with TFP's
    own ``tfp.vi.fit_surrogate_posterior_stateless``, which has no guard, the loss of such a
    step is non-finite but the parameters stay finite and keep learning from the other
    draws. `experimental_sample_and_log_prob` guards each draw together with its log-density
    (a draw that is itself non-finite, or whose value or log q gets a non-finite cotangent,
    drops out of the gradient whole): at an overflowing draw the path from log q to the
    parameters can be NaN too.

    Args:
      flow: the `emf_jax.architectures.EmbeddedFlow` (pure functions of the parameters).
      params: the flow's parameters, as from ``flow.init(seed)``.
      validate_args: passed to `tfd.Distribution`.
      name: the distribution's name.

    Example:
      >>> import jax, emf_jax
      >>> from tensorflow_probability.substrates import jax as tfp
      >>> from emf_jax.architectures import build_embedded_flow
      >>> tfd = tfp.distributions
      >>> def program():
      ...     s = yield tfd.HalfNormal(1., name='s')
      ...     yield tfd.Normal(0., s, name='x')
      >>> model = tfd.JointDistributionCoroutineAutoBatched(program)
      >>> flow = build_embedded_flow(model, architecture='structured')
      >>> q = emf_jax.EmbeddedFlowDistribution(flow, flow.init(jax.random.key(0)))
      >>> draw = jax.jit(lambda seed: q.experimental_sample_and_log_prob(3, seed=seed))
      >>> x, log_q = draw(jax.random.key(1))
      >>> x.s.shape, bool((x.s > 0).all()), log_q.shape
      ((3,), True, (3,))
    """

    def __init__(self, flow: EmbeddedFlow, params: Any, *, validate_args: bool = False,
                 name: str = "EmbeddedFlowDistribution"):
        parameters = dict(locals())
        self._hold(flow, params)
        values = flow.trace.values  # the latents and the deterministic variables
        self._dtype_tree = flow.trace.unflatten_values([r.dtype for r in values])
        self._event_shape_tree = flow.trace.unflatten_values(
            [_TensorShape(r.event_shape) for r in values])
        self._noise_dtype = flow.trace.latents[0].dtype
        super().__init__(
            dtype=self._dtype_tree,
            reparameterization_type=tfd.FULLY_REPARAMETERIZED,
            validate_args=validate_args,
            allow_nan_stats=True,
            parameters=parameters,
            name=name)

    @property
    def trace(self):
        """The model's `ModelTrace`."""
        return self._flow.trace

    @property
    def bijector(self) -> Any:
        """The whole trained flow as a `tfb.Bijector` from noise ``[z]`` to values.

        As for `tfd.TransformedDistribution`: this distribution is the push-forward of
        `noise_distribution` through it. Use it for NeuTra-style HMC
        (`tfp.mcmc.TransformedTransitionKernel`); see `emf_jax.embedded_bijector`.
        """
        from emf_jax.embedded_bijector import EmbeddedFlowBijector
        return EmbeddedFlowBijector(self._flow, self._params)

    @property
    def noise_distribution(self) -> Any:
        """The base distribution of `bijector`: ``[z]`` with ``z ~ N(0, I_D)``."""
        d = self._flow.event_size
        return tfd.JointDistributionSequential(
            [tfd.MultivariateNormalDiag(jnp.zeros((d,), self._noise_dtype))])

    def _event_shape(self):
        return self._event_shape_tree

    def _event_shape_tensor(self):
        return self._flow.trace.unflatten_values(
            [np.array(r.event_shape, np.int32) for r in self._flow.trace.values])

    def _batch_shape(self):
        return _TensorShape([])

    def _batch_shape_tensor(self):
        return np.array([], np.int32)

    def _noise(self, shape, seed):
        return jax.random.normal(seed, tuple(shape) + (self._flow.event_size,), self._noise_dtype)

    def _sample_n(self, n, seed=None):
        values = self._flow.forward_and_log_det(self._params, self._noise((n,), seed))[0]
        return guard_draws(values, 1)

    def _log_prob(self, value):
        z, log_det = self._flow.inverse_and_log_det(self._params, value)
        return _standard_normal_log_prob(z) + log_det

    def _sample_and_log_prob(self, sample_shape, seed, **kwargs):
        shape = tuple(int(s) for s in np.asarray(sample_shape).reshape(-1))
        z = self._noise(shape, seed)
        values, log_det = self._flow.forward_and_log_det(self._params, z)
        # The draws and their log-densities are guarded together: a draw dropped from the
        # gradient takes its log q term with it (its path to the parameters may be NaN too).
        return guard_draws((values, _standard_normal_log_prob(z) - log_det), len(shape))

    def _default_event_space_bijector(self):
        return None
