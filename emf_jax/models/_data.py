"""Fixed observed data of the benchmarks that use published data sets.

The two bridge series are the observed values of inference_gym 0.0.5's
``BrownianMotionMissingMiddleObservations`` and ``ConvectionLorenzBridge`` (Apache License 2.0;
values as published there, in float32), kept here so that the benchmarks and tests do not
depend on inference_gym. Both observe steps 0-9 and 20-29 of a 30-step series.
"""
from __future__ import annotations

import numpy as np

__all__ = ["GYM_BROWNIAN_BRIDGE_OBS", "GYM_LORENZ_BRIDGE_OBS"]

GYM_BROWNIAN_BRIDGE_OBS = np.array([
    0.21592641, 0.118771404, -0.07945447, 0.037677474, -0.27885845, -0.1484156,
    -0.3250906, -0.22957903, -0.44110894, -0.09830782,
    -0.8786016, -0.83736074, -0.7384849, -0.8939254, -0.7774566, -0.70238715,
    -0.87771565, -0.51853573, -0.6948214, -0.6202789,
], dtype=np.float32).astype(np.float64)
"""inference_gym's Brownian-bridge observations at steps 0-9 and 20-29."""

GYM_LORENZ_BRIDGE_OBS = np.array([
    -0.2761459, 0.18631345, 0.1467675, -1.3148443, -1.2150469, -0.44544014,
    -0.5505127, -0.9422926, -1.9986963, 0.13876402,
    -16.095385, -18.901144, -21.515736, -22.736586, -23.451488, -21.417793,
    -15.236895, -7.6766376, -0.19389218, 6.26647,
], dtype=np.float32).astype(np.float64)
"""inference_gym's convection (first coordinate) observations at steps 0-9 and 20-29."""
