"""Calibrated compression (needs torch and transformers): a layer-by-layer pass over a
model with real calibration text, and the GPTQ, SparseGPT and SpQR solvers."""

from .run import compress_calibrated

__all__ = ["compress_calibrated"]
