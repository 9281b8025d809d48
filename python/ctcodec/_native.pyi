from os import PathLike
from typing import Sequence

import numpy as np
import numpy.typing as npt

__version__: str

from .scheme_presets import WeightSpec
from .spqr_format import SpqrParams

# A module's scheme, told apart by its `format` ("spqr" or a quantized format).
Scheme = WeightSpec | SpqrParams

class CompressedFile:
    """A validated safetensors file whose dense tensors decode one at a time."""

    def __init__(
        self,
        path: str | PathLike[str],
        format: str | None = None,
        mode: str = "auto",
        schemes: dict[str, Scheme] | None = None,
    ) -> None: ...
    @property
    def format(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def metadata(self) -> list[tuple[str, str]] | None: ...
    def __len__(self) -> int: ...
    def entries(self) -> list[tuple[str, str, list[int], bool]]: ...
    def read(self, index: int) -> npt.NDArray[np.uint8]: ...
    def read_batch(
        self, start: int, max_bytes: int = 64 << 20
    ) -> tuple[npt.NDArray[np.uint8], list[tuple[int, int, int]]]: ...

def compress_files(
    jobs: Sequence[tuple[str, str, dict[str, tuple[WeightSpec | None, str | None, bool]]]],
    progress: bool = False,
    mode: str = "auto",
) -> list[list[dict]]: ...
def decompress_files(
    jobs: Sequence[tuple[str, str]],
    format: str | None = None,
    progress: bool = False,
    mode: str = "auto",
    schemes: dict[str, Scheme] | None = None,
) -> int: ...
def write_tensors(
    path: str | PathLike[str],
    tensors: Sequence[tuple[str, str, Sequence[int], npt.NDArray[np.uint8]]],
    select: Sequence[bool],
    metadata: Sequence[tuple[str, str]] | None = None,
    specs: Sequence[WeightSpec | None] | None = None,
    two_four: bool = False,
) -> list[dict]: ...
def nvfp4_global_scales(path: str | PathLike[str], names: Sequence[str], mode: str = "auto") -> list[float]: ...
def read_header(
    path: str | PathLike[str], mode: str = "auto"
) -> tuple[list[tuple[str, str]] | None, list[tuple[str, str, list[int]]]]: ...
def pool_stats() -> tuple[int, int]: ...
def spqr_pack(
    params: SpqrParams,
    rows: int,
    cols: int,
    codes: npt.NDArray[np.uint8],
    scale_codes: npt.NDArray[np.uint8],
    zero_codes: npt.NDArray[np.uint8],
    second_order: npt.NDArray[np.uint16],
    perm: npt.NDArray[np.int32],
    outlier_rows: npt.NDArray[np.int32],
    outlier_cols: npt.NDArray[np.int32],
    outlier_values: npt.NDArray[np.uint16],
    layout: str = "csr",
) -> list[tuple[str, str, list[int], npt.NDArray[np.uint8]]]: ...
def pack_int_codes(codes: npt.NDArray[np.int8], rows: int, cols: int, bits: int) -> npt.NDArray[np.uint8]: ...
def formats() -> list[dict]:
    """Every format the core knows: {"name", "family", "writable"}."""
def convert_gptq_file(
    src: str | PathLike[str],
    dst: str | PathLike[str],
    bits: int,
    group_size: int | None,
    symmetric: bool,
    zeros_minus_one: bool,
    mode: str = "auto",
) -> list[dict]: ...
