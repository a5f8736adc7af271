"""Training, split by job (in the manner of flowjax's ``train/``).

- `emf_jax.training.engine`: `minimize`, the chunked `lax.scan` and its compile cache.
- `emf_jax.training.losses`: `VariationalLoss`, `MinibatchNLL`, `mean_nll`.
- `emf_jax.training.data`: `structure_data` and the train/validation split.
- `emf_jax.training.loops`: `fit_vi`, `fit_density` and `ModelPart`.
- `emf_jax.training.starts`: `StartCandidates` and the pilot that chooses a density's start.
"""
from emf_jax.training.data import split_rows, structure_data
from emf_jax.training.engine import FitResult, minimize
from emf_jax.training.loops import (
                                    DEFAULT_PATIENCE,
                                    DEFAULT_PILOT_STEPS,
                                    DEFAULT_PRETRAIN_MODEL_STEPS,
                                    DEFAULT_VALIDATION_FRACTION,
                                    DensityFitResult,
                                    ModelPart,
                                    StartCandidates,
                                    fit_density,
                                    fit_vi,
)
from emf_jax.training.losses import MinibatchNLL, VariationalLoss, mean_nll, row_nll

__all__ = [
    "DEFAULT_PATIENCE",
    "DEFAULT_PILOT_STEPS",
    "DEFAULT_PRETRAIN_MODEL_STEPS",
    "DEFAULT_VALIDATION_FRACTION",
    "DensityFitResult",
    "FitResult",
    "MinibatchNLL",
    "ModelPart",
    "StartCandidates",
    "VariationalLoss",
    "fit_density",
    "fit_vi",
    "mean_nll",
    "row_nll",
    "minimize",
    "split_rows",
    "structure_data",
]
