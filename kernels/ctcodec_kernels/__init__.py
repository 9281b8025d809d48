"""ctcodec-kernels: Triton kernels over ctcodec's formats.

Nothing here yet: the dequant GEMM, SpQR matvec and on-GPU decompression arrive with the
GPU issue. The package already imports on machines without a GPU or Triton, as the
kernels will have to: Triton is imported lazily, inside the functions that need it.
"""

__all__: list[str] = []


def triton_available() -> bool:
    """True when Triton can be imported (it is optional until a kernel is called)."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None
