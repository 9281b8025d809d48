"""Edge cases found in review: each once misbehaved."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import ctcodec


def _rss_file_kib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    return 0


def test_streaming_read_keeps_mapped_pages_bounded(tmp_path):
    # 96 x 4 MiB float32 weights, half zeros: the compressed file is ~210 MiB. Every
    # decoded part (shape tensors included) must be released, or the whole file stays
    # mapped. Pages are dropped in 64 MiB runs, so well under the file size stays.
    rng = np.random.default_rng(0)
    w = np.where(rng.random((1024, 1024)) < 0.5, 0, 1).astype(np.float32)
    ctcodec.save_compressed({f"l{i:02d}.weight": w for i in range(96)}, tmp_path / "big.safetensors")
    baseline = _rss_file_kib()  # shared libraries (torch, numpy) are file-backed too
    peak = 0
    for _, t in ctcodec.decompress_file(tmp_path / "big.safetensors", framework="numpy"):
        peak = max(peak, _rss_file_kib() - baseline)
        del t
    assert peak < 120 * 1024, f"{peak / 1024:.0f} MiB of the file stayed mapped"


def test_output_folder_inside_input_is_not_copied_into_itself(tmp_path):
    src = tmp_path / "m"
    src.mkdir()
    save_file({"a.weight": torch.eye(8)}, src / "model.safetensors")
    (src / "config.json").write_text("{}")
    ctcodec.compress_checkpoint(src, src / "out")
    assert sorted(p.name for p in (src / "out").iterdir()) == ["config.json", "model.safetensors"]


def test_numpy_scalar_keeps_its_rank(tmp_path):
    ctcodec.save_compressed({"s": np.array(3.0, np.float32), "x.weight": np.array(2.0, np.float32)}, tmp_path / "f.safetensors")
    out = dict(ctcodec.decompress_file(tmp_path / "f.safetensors", framework="numpy"))
    assert out["s"].shape == () and out["x.weight"].shape == () and out["x.weight"] == 2.0


def test_null_metadata_is_no_metadata(tmp_path):
    header = json.dumps({"__metadata__": None, "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}}).encode()
    header += b" " * (-len(header) % 8)
    (tmp_path / "f.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\x01\x02")
    (name, t), = ctcodec.decompress_file(tmp_path / "f.safetensors", framework="numpy")
    assert name == "a" and t.tolist() == [1, 2]


def test_overwrite_removes_a_stale_index(tmp_path):
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    save_file({"a.weight": torch.eye(4)}, sharded / "model-00001-of-00001.safetensors")
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a.weight": "model-00001-of-00001.safetensors"}}))
    (sharded / "config.json").write_text("{}")
    single = tmp_path / "single"
    single.mkdir()
    save_file({"b.weight": torch.eye(4) * 2}, single / "model.safetensors")
    (single / "config.json").write_text("{}")
    ctcodec.compress_checkpoint(sharded, tmp_path / "out")
    ctcodec.compress_checkpoint(single, tmp_path / "out", overwrite=True)
    assert set(dict(ctcodec.decompress_file(tmp_path / "out"))) == {"b.weight"}


def test_failed_checkpoint_leaves_no_shards(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    save_file({"a.weight": torch.eye(4)}, src / "model-00001-of-00002.safetensors")
    (src / "model-00002-of-00002.safetensors").write_bytes(b"\x00" * 16)  # broken second shard
    (src / "config.json").write_text("{}")
    with pytest.raises(ctcodec.CodecError, match="model-00002-of-00002"):
        ctcodec.compress_checkpoint(src, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.safetensors"))


def test_unstorable_dtype_error_names_file_and_tensor(tmp_path):
    with pytest.raises(ctcodec.CodecError, match=r"f\.safetensors.*'m\.weight'.*complex128"):
        ctcodec.save_compressed({"m.weight": torch.zeros(2, 2, dtype=torch.complex128)}, tmp_path / "f.safetensors")
