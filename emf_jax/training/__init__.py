"""Training, split by job (in the manner of flowjax's ``train/``).

- `emf_jax.training.engine`: `minimize`, the chunked `lax.scan` and its compile cache.
- `emf_jax.training.losses`: `VariationalLoss`, `MinibatchNLL`, `mean_nll`.
- `emf_jax.training.data`: `structure_data` and the train/validation split.
- `emf_jax.training.loops`: `fit_vi` and `fit_density`.
"""
from emf_jax.training.data import split_rows, structure_data
from emf_jax.training.engine import FitResult, minimize
from emf_jax.training.loops import DensityFitResult, fit_density, fit_vi
from emf_jax.training.losses import MinibatchNLL, VariationalLoss, mean_nll

__all__ = [
    "DensityFitResult",
    "FitResult",
    "MinibatchNLL",
    "VariationalLoss",
    "fit_density",
    "fit_vi",
    "mean_nll",
    "minimize",
    "split_rows",
    "structure_data",
]
