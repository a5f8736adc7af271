"""The device a benchmark's timings come from, as recorded in the result files."""
from __future__ import annotations


def device_name() -> str:
    """``"cpu"``, or the accelerator's platform and kind, e.g. ``"gpu (NVIDIA H200)"``."""
    import jax

    backend = jax.default_backend()
    return backend if backend == "cpu" else f"{backend} ({jax.devices()[0].device_kind})"
