"""ctcodec: a fast codec for compressed-tensors checkpoints in safetensors."""

from ._native import __version__
from .checkpoint import compress_checkpoint, decompress_checkpoint
from .errors import CodecError
from .inspect import inspect_checkpoint
from .reading import decompress_file, load_compressed
from .writing import save_compressed

__all__ = [
    "CodecError",
    "__version__",
    "compress_checkpoint",
    "decompress_checkpoint",
    "decompress_file",
    "inspect_checkpoint",
    "load_compressed",
    "save_compressed",
]
