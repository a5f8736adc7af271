"""The EMF paper's variational-inference benchmark models.

Every model is a ``tfd.JointDistributionCoroutineAutoBatched`` with one named latent variable per
time step (``x0, x1, ...``), per layer (``layer0, ...``) or per parameter block, followed by
one observed vector variable ``"obs"``; pinning is always ``model.experimental_pin(obs=...)``.

Use :func:`get_target` for a ready-to-use problem (model, pinned model, data, true latents,
exact posterior where one exists)::

    >>> from emf_jax import models
    >>> target = models.get_target("eight_schools")
    >>> target.pinned_model.event_shape._fields
    ('avg_effect', 'log_stddev', 'school_effects_std')

Families (builders return the unpinned joint distribution):

- :func:`brownian_motion`: 30 steps, innovation 0.1, noise 0.15 or logits ``5 x``.
- :func:`lorenz_system`: 3-dim state, 30 Euler-Maruyama steps of size 0.02, noise 1.0 on
  the first coordinate or logits ``2 x``.
- :func:`van_der_pol`: 2-dim state, 120 steps of size 0.05, ``mu = 1``, noise 0.5 or logits
  ``x``.
- :func:`eight_schools`: non-centred, inference_gym's priors.
- :func:`binary_tree`: the paper's tree of colliders, linear or tanh coupling.
"""
from emf_jax.models._common import (
    OBSERVED_NAME,
    BenchmarkTarget,
    ExactPosterior,
)
from emf_jax.models.gaussian import condition_gaussian, gaussian_network_moments
from emf_jax.models.registry import (
    EXACT_TARGET_NAMES,
    TARGET_NAMES,
    exact_log_marginal_likelihood,
    get_target,
)
from emf_jax.models.schools import (
    TREATMENT_EFFECTS,
    TREATMENT_STDDEVS,
    eight_schools,
    eight_schools_exact_posterior,
)
from emf_jax.models.time_series import brownian_motion, lorenz_system, van_der_pol
from emf_jax.models.trees import binary_tree

__all__ = [
    "EXACT_TARGET_NAMES",
    "OBSERVED_NAME",
    "TARGET_NAMES",
    "TREATMENT_EFFECTS",
    "TREATMENT_STDDEVS",
    "BenchmarkTarget",
    "ExactPosterior",
    "binary_tree",
    "brownian_motion",
    "condition_gaussian",
    "eight_schools",
    "eight_schools_exact_posterior",
    "exact_log_marginal_likelihood",
    "gaussian_network_moments",
    "get_target",
    "lorenz_system",
    "van_der_pol",
]
