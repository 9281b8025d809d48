"""Model folders: sharded checkpoints with an index, config.json, other files; the CLI."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from sparse_data import canonical, make_tensor, same_bits

import ctcodec


def _sharded_folder(root, n_layers=3):
    """A Llama-shaped folder split over two shards, with an index and a tokenizer file."""
    root.mkdir()
    tensors = {"model.embed_tokens.weight": make_tensor(torch.bfloat16, [50, 16], 0.0, 1)}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        tensors[p + "self_attn.q_proj.weight"] = make_tensor(torch.bfloat16, [16, 16], 0.5, 10 + i)
        tensors[p + "mlp.down_proj.weight"] = make_tensor(torch.bfloat16, [16, 40], 0.7, 20 + i)
        tensors[p + "mlp.down_proj.bias"] = make_tensor(torch.bfloat16, [16], 0.5, 30 + i)
        tensors[p + "input_layernorm.weight"] = make_tensor(torch.bfloat16, [16], 0.2, 40 + i)
    tensors["lm_head.weight"] = make_tensor(torch.bfloat16, [50, 16], 0.5, 2)
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
              "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    weight_map = {}
    for fname, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, root / fname, metadata={"format": "pt"})
        weight_map.update({k: fname for k in keys})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    (root / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 16}))
    (root / "tokenizer.json").write_text('{"version": "1.0"}')
    return tensors


def test_compress_sharded_folder(tmp_path):
    tensors = _sharded_folder(tmp_path / "src")
    before = {p.name: p.read_bytes() for p in (tmp_path / "src").iterdir()}
    summary = ctcodec.compress_checkpoint(tmp_path / "src", tmp_path / "out")
    out = tmp_path / "out"

    # inputs untouched
    assert {p.name: p.read_bytes() for p in (tmp_path / "src").iterdir()} == before
    # Linear weights compressed; embeddings, norms, biases and the ignored lm_head left dense
    compressed = {s["name"] for s in summary["stats"] if s["compressed"]}
    assert compressed == {n for n in tensors if n.endswith("proj.weight")}

    cfg = json.loads((out / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["transform_config"] == {}
    sc = qc["sparsity_config"]
    assert sc["format"] == "sparse-bitmask" and sc["targets"] == ["Linear"] and sc["ignore"] == ["lm_head"]
    assert sc["sparsity_structure"] == "unstructured" and 0 < sc["global_sparsity"] < 1
    assert cfg["hidden_size"] == 16  # the rest of config.json kept

    index = json.loads((out / "model.safetensors.index.json").read_text())
    on_disk = {}
    for fname in set(index["weight_map"].values()):
        on_disk.update({k: fname for k in load_file(out / fname)})
    assert index["weight_map"] == on_disk
    assert "model.layers.0.self_attn.q_proj.bitmask" in on_disk and "model.layers.0.self_attn.q_proj.weight" not in on_disk
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for f in set(on_disk.values()) for t in load_file(out / f).values())
    assert (out / "tokenizer.json").read_text() == '{"version": "1.0"}'

    got = dict(ctcodec.decompress_file(out))
    assert set(got) == set(tensors)
    for n, t in tensors.items():
        assert same_bits(got[n], canonical(t) if n in compressed else t), n


def test_decompress_checkpoint_restores_identical_shards(tmp_path):
    _sharded_folder(tmp_path / "src")
    ctcodec.compress_checkpoint(tmp_path / "src", tmp_path / "comp")
    ctcodec.decompress_checkpoint(tmp_path / "comp", tmp_path / "back")
    back = tmp_path / "back"
    # tensors were written by safetensors with the same names and metadata, and held no
    # -0.0 in compressed weights after canonicalisation... so compare tensors, then files
    for shard in ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]:
        a, b = load_file(tmp_path / "src" / shard), load_file(back / shard)
        assert set(a) == set(b)
        assert all(same_bits(b[k], canonical(v) if k.endswith("proj.weight") else v) for k, v in a.items())
    assert "quantization_config" not in json.loads((back / "config.json").read_text())
    index = json.loads((back / "model.safetensors.index.json").read_text())
    assert "model.layers.0.self_attn.q_proj.weight" in index["weight_map"]


def test_round_trip_of_canonical_input_is_byte_identical(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    t = {f"l{i}.weight": canonical(make_tensor(torch.float16, [8, 24], 0.5, i)) for i in range(3)}
    save_file(t, src / "model.safetensors", metadata={"format": "pt"})
    (src / "config.json").write_text("{}")
    ctcodec.compress_checkpoint(src, tmp_path / "c", targets=["re:l[0-9]"])
    ctcodec.decompress_checkpoint(tmp_path / "c", tmp_path / "d")
    assert (tmp_path / "d" / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()


def test_targets_and_ignore(tmp_path):
    tensors = _sharded_folder(tmp_path / "src")
    summary = ctcodec.compress_checkpoint(
        tmp_path / "src", tmp_path / "out", targets=["re:.*mlp\\..*"], ignore=["model.layers.1.mlp.down_proj"]
    )
    compressed = {s["name"] for s in summary["stats"] if s["compressed"]}
    assert compressed == {"model.layers.0.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"}
    assert set(dict(ctcodec.decompress_file(tmp_path / "out"))) == set(tensors)


def test_refuses_to_write_over_input_or_into_non_empty_folder(tmp_path):
    _sharded_folder(tmp_path / "src")
    with pytest.raises(ctcodec.CodecError, match="input folder"):
        ctcodec.compress_checkpoint(tmp_path / "src", tmp_path / "src")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    with pytest.raises(ctcodec.CodecError, match="not empty"):
        ctcodec.compress_checkpoint(tmp_path / "src", tmp_path / "busy")
    assert (tmp_path / "busy" / "x").read_text() == "keep me"


def test_inspect_reports_sparsity_and_ratio(tmp_path):
    tensors = _sharded_folder(tmp_path / "src")
    ctcodec.compress_checkpoint(tmp_path / "src", tmp_path / "out")
    report = ctcodec.inspect_checkpoint(tmp_path / "out")
    assert report["format"] == "sparse-bitmask"
    rows = {r["name"]: r for r in report["tensors"]}
    q = tensors["model.layers.0.self_attn.q_proj.weight"]
    zeros = (canonical(q).float() == 0).sum().item()
    assert rows["model.layers.0.self_attn.q_proj.weight"]["sparsity"] == pytest.approx(zeros / q.numel())
    assert rows["lm_head.weight"]["sparsity"] is None
    assert report["dense_bytes"] == sum(t.numel() * 2 for t in tensors.values())
    assert report["ratio"] == pytest.approx(report["dense_bytes"] / report["stored_bytes"])


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "ctcodec.cli", *map(str, args)], capture_output=True, text=True)


def test_cli_compress_inspect_decompress(tmp_path):
    tensors = _sharded_folder(tmp_path / "src")
    r = _cli("compress", tmp_path / "src", tmp_path / "out", "--format", "sparse-bitmask")
    assert r.returncode == 0, r.stderr
    assert "compressed 6 of" in r.stdout and "ratio" in r.stdout
    r = _cli("inspect", tmp_path / "out")
    assert r.returncode == 0 and "sparse-bitmask" in r.stdout and "q_proj.weight" in r.stdout
    r = _cli("decompress", tmp_path / "out", tmp_path / "dense")
    assert r.returncode == 0, r.stderr
    got = {}
    for f in (tmp_path / "dense").glob("*.safetensors"):
        got.update(load_file(f))
    assert set(got) == set(tensors)


def test_cli_reports_errors_without_traceback(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    r = _cli("inspect", tmp_path / "bad")
    assert r.returncode == 2
    assert "model.safetensors" in r.stderr and "Traceback" not in r.stderr


def test_sparsity_structure_is_inferred_or_taken_as_given(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    w = torch.randn(8, 16)
    w24 = w.clone()
    groups = w24.view(-1, 4)
    drop = groups.abs().topk(2, dim=1, largest=False).indices  # two smallest of every four
    groups.scatter_(1, drop, 0.0)
    save_file({"a.weight": w24, "b.weight": w24 * 2, "norm.weight": torch.ones(16)}, src / "model.safetensors")
    (src / "config.json").write_text("{}")

    def structure(out, **kw):
        ctcodec.compress_checkpoint(src, tmp_path / out, **kw)
        return json.loads((tmp_path / out / "config.json").read_text())["quantization_config"]["sparsity_config"]["sparsity_structure"]

    assert structure("inferred") == "2:4"
    assert structure("given", sparsity_structure="unstructured") == "unstructured"
    save_file({"a.weight": w24, "b.weight": w}, src / "model.safetensors")  # one dense weight breaks 2:4
    assert structure("mixed") == "unstructured"
