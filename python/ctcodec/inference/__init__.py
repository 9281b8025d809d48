"""Running compressed checkpoints: CompressedLinear modules and model loading."""

from .linear import CompressedLinear, prepare_kernels
from .loading import load_model, replace_modules

__all__ = ["CompressedLinear", "load_model", "prepare_kernels", "replace_modules"]
