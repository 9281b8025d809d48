"""Running compressed checkpoints: CompressedLinear modules and model loading."""

from .compiled import compile_for_decoding
from .linear import CompressedLinear, prepare_kernels
from .loading import load_model, replace_modules

__all__ = ["CompressedLinear", "compile_for_decoding", "load_model", "prepare_kernels", "replace_modules"]
