"""Writes the cargo-fuzz seed corpus: small real files of every format, written by
ctcodec itself, each prefixed with the selector bytes its target reads first.

    python scripts/fuzz_seeds.py rust/fuzz/corpus
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import ctcodec  # noqa: E402
from model_folders import model_folder  # noqa: E402

# target -> [(seed name, compress_checkpoint arguments, selector bytes)]; the selectors
# decode as the targets' own comments say (e.g. quant: format, strategy, type, symmetry
# in the first byte, bits and group size in the second).
SEEDS = {
    "header": [("dense", None, b""), ("sparse", {}, b"")],
    "bitmask": [("sparse", {}, b""), ("sparse-unstructured-half", {"sparsity": "0.5"}, b"")],
    "sparse24": [("sparse24", {"sparsity": "2:4", "format": "sparse-24-bitmask"}, b"\x00"),
                 ("sparse24-w8a8", {"scheme": "W8A8", "sparsity": "2:4", "format": "sparse-24-bitmask"}, b"\x01"),
                 ("sparse24-fp8", {"scheme": "FP8_DYNAMIC", "sparsity": "2:4", "format": "sparse-24-bitmask"},
                  b"\x03")],
    "quant": [("w4a16", {"scheme": "W4A16", "group_size": 32}, bytes([30, 3])),
              ("w4a16-asym", {"scheme": "W4A16_ASYM", "group_size": 32}, bytes([102, 3])),
              ("w3a16", {"scheme": "W3A16", "group_size": 32}, bytes([30, 2])),
              ("w8a8", {"scheme": "W8A8"}, bytes([8, 7])),
              ("fp8", {"scheme": "FP8_DYNAMIC"}, bytes([44, 7])),
              ("nvfp4", {"scheme": "NVFP4A16"}, bytes([21, 3])),
              ("mxfp4", {"scheme": "MXFP4A16"}, bytes([34, 3])),
              ("marlin24", {"scheme": "W4A16", "group_size": 128, "sparsity": "2:4", "format": "marlin-24"},
               bytes([17, 43]))],
}


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = model_folder(tmp / "dense", layers=1, widths=(128, 64))
        for target, seeds in SEEDS.items():
            (out / target).mkdir(parents=True, exist_ok=True)
            for name, kwargs, selector in seeds:
                folder = src if kwargs is None else tmp / f"{target}-{name}"
                if kwargs is not None:
                    ctcodec.compress_checkpoint(src, folder, **kwargs)
                (out / target / name).write_bytes(selector + (folder / "model.safetensors").read_bytes())
        (out / "spqr").mkdir(parents=True, exist_ok=True)
        from spqr_files import random_output, write_folder

        from ctcodec.spqr_format import SpqrParams

        for layout in ("csr", "ptcsr"):
            params = SpqrParams(bits=3, beta1=16, beta2=16, qq_scale_bits=3, qq_zero_bits=3, dtype="float16",
                                outlier_layout=layout)
            folder = write_folder(tmp / f"spqr-{layout}", params,
                                  {"model.layers.0.mlp.up_proj": random_output(params, 32, 48, seed=1)})
            (out / "spqr" / layout).write_bytes(bytes([2, 28, 18]) + (folder / "model.safetensors").read_bytes())
    print(f"seeds: {sorted(str(p.relative_to(out)) for p in out.rglob('*') if p.is_file())}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
