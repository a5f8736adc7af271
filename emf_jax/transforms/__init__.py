"""Per-family maps from standard-normal noise to a variable's conditional distribution.

`transform_for(dist)` returns the map for one variable; `register_transform` extends the
registry. See `base` for the two kinds of map and the role of the support bijector.
"""
from emf_jax.transforms import affine as _affine  # noqa: F401  (registers families)
from emf_jax.transforms import closed_form as _closed_form  # noqa: F401
from emf_jax.transforms import numeric as _numeric  # noqa: F401
from emf_jax.transforms import special as _special  # noqa: F401
from emf_jax.transforms import structured_families as _structured_families  # noqa: F401
from emf_jax.transforms import wrappers as _wrappers  # noqa: F401
from emf_jax.transforms.affine import mvn_linear_operator_transform, normal_transform
from emf_jax.transforms.base import (
    AffineTransform,
    MonotoneTransform,
    Transform,
    affine,
    affine_matvec,
)
from emf_jax.transforms.monotone import cdf_inversion_transform, monotone_from_maps
from emf_jax.transforms.registry import (
    KINDS,
    FamilyRow,
    UnsupportedDistributionError,
    family_kind,
    family_rows,
    family_table_markdown,
    register_transform,
    registered_families,
    transform_for,
)

__all__ = [
    "AffineTransform",
    "FamilyRow",
    "KINDS",
    "MonotoneTransform",
    "Transform",
    "UnsupportedDistributionError",
    "affine",
    "affine_matvec",
    "cdf_inversion_transform",
    "family_kind",
    "family_rows",
    "family_table_markdown",
    "monotone_from_maps",
    "mvn_linear_operator_transform",
    "normal_transform",
    "register_transform",
    "registered_families",
    "transform_for",
]
