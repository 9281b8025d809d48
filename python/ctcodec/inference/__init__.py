"""Running compressed checkpoints: CompressedLinear modules and model loading."""

from .linear import CompressedLinear
from .loading import load_model, replace_modules

__all__ = ["CompressedLinear", "load_model", "replace_modules"]
