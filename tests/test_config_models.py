"""config.json's `quantization_config` is typed: a value of the wrong type or range is a
CodecError naming config.json and the field path, through every reader; fields that
compressed-tensors tolerates beyond its own stay tolerated; and random mutations of the
config end in a decode, a CodecError or an OSError, nothing else."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ctcodec
from model_folders import model_folder

KINDS = ["W4A16", "W4A16_ASYM", "sparse", "W8A8", "FP8_DYNAMIC", "NVFP4A16", "sparse24"]
READERS = {
    "decompress_file": lambda folder, out: list(ctcodec.decompress_file(folder, framework="numpy")),
    "inspect_checkpoint": lambda folder, out: ctcodec.inspect_checkpoint(folder),
    "decompress_checkpoint": lambda folder, out: ctcodec.decompress_checkpoint(folder, out),
    "compress_checkpoint": lambda folder, out: ctcodec.compress_checkpoint(folder, out),
}


@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("typed")
    src = model_folder(root / "dense", layers=2)
    out = {kind: root / kind for kind in KINDS}
    ctcodec.compress_checkpoint(src, out["W4A16"], scheme="W4A16", group_size=32)
    ctcodec.compress_checkpoint(src, out["W4A16_ASYM"], scheme="W4A16_ASYM", group_size=32)
    ctcodec.compress_checkpoint(src, out["sparse"])
    ctcodec.compress_checkpoint(src, out["W8A8"], scheme="W8A8")
    ctcodec.compress_checkpoint(src, out["FP8_DYNAMIC"], scheme="FP8_DYNAMIC")
    ctcodec.compress_checkpoint(src, out["NVFP4A16"], scheme="NVFP4A16")
    ctcodec.compress_checkpoint(src, out["sparse24"], scheme="W8A8", sparsity="2:4", format="sparse-24-bitmask")
    return out


def _copy_with_config(folder: Path, dst: Path, edit) -> Path:
    dst.mkdir()
    for f in folder.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def _set(path: tuple, value):
    def edit(config):
        node = config["quantization_config"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


# (folder, path inside quantization_config, bad value, what the message must say)
BAD = {
    "num_bits_text": ("W4A16", ("config_groups", "group_0", "weights", "num_bits"), "bogus",
                      "config_groups.group_0.weights.num_bits"),
    "num_bits_nine": ("W4A16", ("config_groups", "group_0", "weights", "num_bits"), 9, "less than or equal to 8"),
    "groups_not_a_dict": ("W4A16", ("config_groups",), "group_0", "quantization_config.config_groups: "),
    "group_not_a_scheme": ("W4A16", ("config_groups", "group_0"), 7, "config_groups.group_0"),
    "ignore_not_a_list": ("W4A16", ("ignore",), 5, "quantization_config.ignore: "),
    "target_not_a_string": ("W4A16", ("config_groups", "group_0", "targets"), [{"a": 1}],
                            "config_groups.group_0.targets.0"),
    "targets_a_string": ("W4A16", ("config_groups", "group_0", "targets"), "Linear", "config_groups.group_0.targets"),
    "strategy_unknown": ("W4A16", ("config_groups", "group_0", "weights", "strategy"), "rows",
                         "config_groups.group_0.weights.strategy"),
    "symmetric_a_list": ("W8A8", ("config_groups", "group_0", "weights", "symmetric"), [1],
                         "config_groups.group_0.weights.symmetric"),
    "activations_a_string": ("W8A8", ("config_groups", "group_0", "input_activations"), "token",
                             "config_groups.group_0.input_activations"),
    "sparsity_format_a_number": ("sparse", ("sparsity_config", "format"), 3, "sparsity_config.format"),
    "sparsity_not_a_dict": ("sparse", ("sparsity_config",), "sparse-bitmask", "sparsity_config"),
    "sparsity_ignore_a_dict": ("sparse", ("sparsity_config", "ignore"), {"a": 1}, "sparsity_config.ignore"),
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("case", list(BAD))
def test_malformed_values_name_config_json_and_the_field(case, reader, compressed, tmp_path):
    kind, path, value, needle = BAD[case]
    folder = _copy_with_config(compressed[kind], tmp_path / "in", _set(path, value))
    with pytest.raises(ctcodec.CodecError) as info:
        READERS[reader](folder, tmp_path / "out")
    msg = str(info.value)
    assert str(folder / "config.json") in msg and needle in msg, msg
    assert not (tmp_path / "out").exists()


def test_quantization_config_that_is_not_an_object(compressed, tmp_path):
    folder = _copy_with_config(compressed["W4A16"], tmp_path / "in",
                               lambda c: c.__setitem__("quantization_config", ["pack-quantized"]))
    with pytest.raises(ctcodec.CodecError, match="quantization_config: expected an object, got list"):
        list(ctcodec.decompress_file(folder))


@pytest.mark.parametrize("kind", KINDS)
def test_unknown_fields_stay_tolerated(kind, compressed, tmp_path):
    def edit(config):
        qc = config["quantization_config"]
        qc["a_future_field"] = {"nested": [1, 2]}
        for group in qc.get("config_groups", {}).values():
            group["another_one"] = True
            if group.get("weights"):
                group["weights"]["observer_kwargs"] = {"averaging_constant": 0.01}
                group["weights"]["something_new"] = "x"
        if qc.get("sparsity_config"):
            qc["sparsity_config"]["registry_requires_subclass"] = False
            qc["sparsity_config"]["new_knob"] = 1

    folder = _copy_with_config(compressed[kind], tmp_path / "in", edit)
    want = dict(ctcodec.decompress_file(compressed[kind], framework="numpy"))
    got = dict(ctcodec.decompress_file(folder, framework="numpy"))
    assert want.keys() == got.keys()
    for name in want:
        assert np.array_equal(want[name].view(np.uint16), got[name].view(np.uint16)), name


# Random JSON values, spliced anywhere into a valid config.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=8)
    | st.sampled_from(["Linear", "re:.*", "group", "int", "float", "pack-quantized", "sparse-bitmask", "channel"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


FUZZ_EXAMPLES = int(os.environ.get("CTCODEC_CONFIG_FUZZ_EXAMPLES", "150"))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(KINDS), choice=st.integers(0, 10**6), value=json_values,
       delete=st.booleans())
def test_config_mutations_end_in_a_decode_or_a_codec_error(kind, choice, value, delete, compressed, tmp_path_factory):
    """The only outcomes a mutated config.json may have: a decode, CodecError or OSError
    (CTCODEC_CONFIG_FUZZ_EXAMPLES sets how many mutations run)."""
    config = json.loads((compressed[kind] / "config.json").read_text())
    paths = list(_paths(config))[1:]
    path = paths[choice % len(paths)]
    mutated = copy.deepcopy(config)
    node = mutated
    for key in path[:-1]:
        node = node[key]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value
    folder = _copy_with_config(compressed[kind], tmp_path_factory.mktemp("fuzz") / "in", lambda c: (c.clear(), c.update(mutated)))
    for reader in ("decompress_file", "inspect_checkpoint"):
        try:
            READERS[reader](folder, None)
        except (ctcodec.CodecError, OSError):
            pass


def test_recipes_are_typed_too(tmp_path):
    src = model_folder(tmp_path / "dense", layers=1)
    recipe = {"config_groups": {"mlp": {"targets": ["re:.*mlp.*"], "weights": {"num_bits": "four"}}}}
    (tmp_path / "recipe.json").write_text(json.dumps(recipe))
    with pytest.raises(ctcodec.CodecError) as info:
        ctcodec.compress_checkpoint(src, tmp_path / "out", recipe=tmp_path / "recipe.json")
    assert f"{tmp_path / 'recipe.json'}: quantization_config.config_groups.mlp.weights.num_bits" in str(info.value)
    assert not (tmp_path / "out").exists()
    # A preset group ({"scheme": ..., "targets": ..., "group_size": ...}) is ctcodec's own shorthand: accepted.
    ctcodec.compress_checkpoint(src, tmp_path / "ok", recipe={"config_groups": {
        "mlp": {"scheme": "W4A16", "targets": ["re:.*mlp.*"], "group_size": 32}}})


@pytest.mark.parametrize("kind, value, needle", [
    ("W8A8", 0, "group_size must be positive, or -1"),
    ("W8A8", -5, "group_size must be positive, or -1"),
])
def test_group_size_range(kind, value, needle, compressed, tmp_path):
    folder = _copy_with_config(compressed[kind], tmp_path / "in",
                               _set(("config_groups", "group_0", "weights", "group_size"), value))
    with pytest.raises(ctcodec.CodecError, match=needle):
        list(ctcodec.decompress_file(folder))


@pytest.mark.parametrize("kind", ["W8A8", "sparse24", "FP8_DYNAMIC"])
def test_group_size_minus_one_on_a_channel_scheme_decodes_the_same(kind, compressed, tmp_path):
    """-1 is compressed-tensors' spelling of "one group per row" (found by the fuzz: it
    reached the native spec as a negative size); on a channel scheme it changes nothing."""
    folder = _copy_with_config(compressed[kind], tmp_path / "in",
                               _set(("config_groups", "group_0", "weights", "group_size"), -1))
    want = dict(ctcodec.decompress_file(compressed[kind], framework="numpy"))
    got = dict(ctcodec.decompress_file(folder, framework="numpy"))
    assert all(np.array_equal(want[n].view(np.uint16), got[n].view(np.uint16)) for n in want)


@pytest.mark.parametrize("kind", KINDS)
def test_written_configs_are_the_models_dump_and_read_back_the_same(kind, compressed):
    """The writer serialises through the models: what config.json holds is a fixed point
    of validate-then-dump, with every key the writer set (nothing added, nothing lost)."""
    from ctcodec.config_models import serialise_quantization_config

    qc = json.loads((compressed[kind] / "config.json").read_text())["quantization_config"]
    assert serialise_quantization_config(qc, "config.json") == qc
    assert json.dumps(serialise_quantization_config(qc, "x"), sort_keys=True) == json.dumps(qc, sort_keys=True)
