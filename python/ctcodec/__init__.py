"""ctcodec: a fast codec for compressed-tensors checkpoints in safetensors."""

from ._native import __version__
from .checkpoint import compress_checkpoint, decompress_checkpoint
from .errors import CodecError
from .extras import MissingDependency
from .inspect import inspect_checkpoint
from .reading import decompress_file, load_compressed
from .writing import save_compressed


def __getattr__(name):
    # torch-dependent parts load on first use, so the codec imports without torch.
    if name in ("load_model", "replace_modules", "prepare_kernels", "compile_for_decoding", "CompressedLinear"):
        from .extras import require

        require("torch", f"ctcodec.{name}")
        from . import inference

        return getattr(inference, name)
    raise AttributeError(f"module 'ctcodec' has no attribute {name!r}")


__all__ = [
    "CodecError",
    "MissingDependency",
    "__version__",
    "compile_for_decoding",
    "compress_checkpoint",
    "decompress_checkpoint",
    "decompress_file",
    "inspect_checkpoint",
    "load_model",
    "prepare_kernels",
    "replace_modules",
    "load_compressed",
    "save_compressed",
]
