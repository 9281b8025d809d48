"""Calibrated compression (needs torch and transformers): a layer-by-layer pass over a
model with real calibration text, and the GPTQ, SparseGPT and SpQR solvers."""

from ..extras import require

require("torch", "ctcodec.calibrate (GPTQ, SparseGPT, SpQR)")

from .run import compress_calibrated  # noqa: E402  (after the dependency check)

__all__ = ["compress_calibrated"]
