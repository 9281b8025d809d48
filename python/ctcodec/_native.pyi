from os import PathLike
from typing import Sequence

import numpy as np
import numpy.typing as npt

__version__: str

class CompressedFile:
    """A validated safetensors file whose dense tensors decode one at a time."""

    def __init__(self, path: str | PathLike[str], format: str | None = None, mode: str = "auto") -> None: ...
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
    jobs: Sequence[tuple[str, str, Sequence[str]]], progress: bool = False, mode: str = "auto"
) -> list[list[dict]]: ...
def decompress_files(
    jobs: Sequence[tuple[str, str]], format: str | None = None, progress: bool = False, mode: str = "auto"
) -> int: ...
def write_tensors(
    path: str | PathLike[str],
    tensors: Sequence[tuple[str, str, Sequence[int], npt.NDArray[np.uint8]]],
    select: Sequence[bool],
    metadata: Sequence[tuple[str, str]] | None = None,
) -> list[dict]: ...
def read_header(
    path: str | PathLike[str], mode: str = "auto"
) -> tuple[list[tuple[str, str]] | None, list[tuple[str, str, list[int]]]]: ...
