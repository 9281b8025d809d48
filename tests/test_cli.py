"""The `ctcodec` command as users run it (the installed console script): exit codes,
messages, and what is left on disk after each case."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.numpy import load_file

import ctcodec
from model_folders import model_folder

CTCODEC = Path(sys.executable).parent / "ctcodec"


def run(*args, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(CTCODEC), *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def listing(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_version_is_the_package_version():
    from importlib.metadata import version

    r = run("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"ctcodec {version('ctcodec')}" == f"ctcodec {ctcodec.__version__}"


@pytest.mark.parametrize("command", [["compress", "--scheme", "W4A16"], ["compress"], ["decompress"]])
def test_missing_input_says_it_does_not_exist_and_writes_nothing(command, tmp_path):
    r = run(command[0], tmp_path / "nowhere", tmp_path / "out", *command[1:])
    assert r.returncode == 2
    assert r.stderr.strip() == f"ctcodec: error: {tmp_path / 'nowhere'}: does not exist"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", [["inspect"], ["eval"]])
def test_missing_path_of_inspect_and_eval(command, tmp_path):
    r = run(*command, tmp_path / "nowhere")
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_non_empty_output_names_the_cli_flag_and_is_left_alone(tmp_path):
    src = model_folder(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    r = run("compress", src, out, "--scheme", "W8A16", "--group-size", "32")
    assert r.returncode == 2
    assert "--overwrite" in r.stderr and "overwrite=True" not in r.stderr
    assert listing(out) == {"notes.txt": b"mine"}
    r = run("compress", src, out, "--scheme", "W8A16", "--group-size", "32", "--overwrite")
    assert r.returncode == 0, r.stderr
    assert {"notes.txt", "model.safetensors", "config.json"} <= set(listing(out))


def test_group_size_that_fits_no_layer_is_refused_before_writing(tmp_path):
    src = model_folder(tmp_path / "src", widths=(64, 96))
    r = run("compress", src, tmp_path / "out", "--scheme", "W4A16", "--group-size", "100")
    assert r.returncode == 2
    err = r.stderr.strip()
    assert err.count("\n") == 0, err  # one line
    # The widths, and the standard group sizes dividing both 64 and 96: 16 and 32.
    assert "64, 96" in err and "16, 32" in err and "-1" in err, err
    assert not (tmp_path / "out").exists()


def test_layers_left_dense_are_summarised_in_one_line_and_listed_with_v(tmp_path):
    src = model_folder(tmp_path / "src", layers=12, widths=(64, 96))
    # group 64 fits the up projections (64 wide), not the down projections (96 wide)
    r = run("compress", src, tmp_path / "out", "--scheme", "W4A16", "--group-size", "64", "-q")
    assert r.returncode == 0, r.stderr
    dense_lines = [line for line in r.stdout.splitlines() if line.startswith("left dense")]
    assert len(dense_lines) == 1, r.stdout
    assert "12 weights" in dense_lines[0] and "model.layers.0.mlp.down_proj" in dense_lines[0]
    assert "-v" in dense_lines[0]
    config = json.loads((tmp_path / "out" / "config.json").read_text())["quantization_config"]
    assert len([m for m in config["ignore"] if "down_proj" in m]) == 12
    r = run("compress", src, tmp_path / "out-v", "--scheme", "W4A16", "--group-size", "64", "-q", "-v")
    dense_lines = [line for line in r.stdout.splitlines() if line.startswith("left dense")]
    assert len(dense_lines) == 12
    assert all("not a multiple of the group size 64" in line for line in dense_lines)


def test_decompress_of_a_folder_with_nothing_compressed(tmp_path):
    src = model_folder(tmp_path / "src")
    r = run("decompress", src, tmp_path / "out")
    assert r.returncode == 2
    assert "holds nothing compressed" in r.stderr and "--copy" in r.stderr
    assert not (tmp_path / "out").exists()
    r = run("decompress", src, tmp_path / "out", "--copy", "-q")
    assert r.returncode == 0, r.stderr
    assert "holds nothing compressed" in r.stdout
    assert load_file(tmp_path / "out" / "model.safetensors").keys() == load_file(src / "model.safetensors").keys()


def _corrupt_bitmask(folder: Path) -> None:
    """Clears every bit of one weight's bitmask: it then claims fewer non-zeros than its
    `compressed` tensor holds, which only the decoder notices (the header stays valid)."""
    path = folder / "model.safetensors"
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    header = json.loads(path.read_bytes()[8 : 8 + header_len])
    start, end = header["model.layers.5.mlp.up_proj.bitmask"]["data_offsets"]
    data = bytearray(path.read_bytes())
    data[8 + header_len + start : 8 + header_len + end] = b"\x00" * (end - start)
    path.write_bytes(bytes(data))


def test_failed_run_leaves_no_output_folder_and_the_input_untouched(tmp_path):
    src = model_folder(tmp_path / "src")
    assert run("compress", src, tmp_path / "sparse", "-q").returncode == 0
    _corrupt_bitmask(tmp_path / "sparse")
    before = listing(tmp_path / "sparse")
    r = run("decompress", tmp_path / "sparse", tmp_path / "out", "-q")
    assert r.returncode == 2, r.stderr
    assert "model.layers.5.mlp.up_proj" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
    assert listing(tmp_path / "sparse") == before
    # An output folder that existed (empty) before stays, and stays empty.
    (tmp_path / "kept").mkdir()
    assert run("decompress", tmp_path / "sparse", tmp_path / "kept", "-q").returncode == 2
    assert list((tmp_path / "kept").iterdir()) == []


def test_failed_compress_of_a_truncated_input_leaves_nothing(tmp_path):
    src = model_folder(tmp_path / "src")
    shard = src / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])  # the header promises 100 bytes more
    before = listing(src)
    for extra in ([], ["--scheme", "W8A16", "--group-size", "32"]):
        r = run("compress", src, tmp_path / "out", "-q", *extra)
        assert r.returncode == 2
        assert str(shard) in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "out").exists()
    assert listing(src) == before


def test_inspect_sorts_layers_by_number(tmp_path):
    src = model_folder(tmp_path / "src", layers=12)
    assert run("compress", src, tmp_path / "out", "-q").returncode == 0
    r = run("inspect", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    layers = [int(line.split(".")[2]) for line in r.stdout.splitlines() if line.startswith("model.layers.")]
    assert layers == sorted(layers) and layers[-1] == 11


def test_inspect_into_a_closed_pipe_is_quiet(tmp_path):
    src = model_folder(tmp_path / "src", layers=40)
    assert run("compress", src, tmp_path / "out", "-q").returncode == 0
    r = subprocess.run(f"'{CTCODEC}' inspect '{tmp_path / 'out'}' | head -2", shell=True, capture_output=True,
                       text=True)
    assert len(r.stdout.splitlines()) == 2
    assert "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr


_NO_TORCH = "import sys\nfor name in ('torch', 'transformers', 'accelerate'):\n    sys.modules[name] = None\n"


@pytest.fixture
def no_torch_env(tmp_path) -> dict:
    """An environment whose Python cannot import torch, transformers or accelerate (a
    sitecustomize blocks them), as after a plain `pip install ctcodec`."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_NO_TORCH)
    return dict(os.environ, PYTHONPATH=str(tmp_path / "site"))


@pytest.mark.parametrize("command, feature", [
    (["eval", "{src}"], "ctcodec eval"),
    (["compress", "{src}", "{out}", "--scheme", "W4A16", "--algorithm", "gptq"], "--algorithm gptq"),
    (["compress", "{src}", "{out}", "--sparsity", "2:4", "--algorithm", "sparsegpt"], "--algorithm sparsegpt"),
    (["compress", "{src}", "{out}", "--spqr"], "--spqr"),
    (["convert-spqr", "--legacy-model-path", "{src}", "--base-model", "{src}", "{out}"], "convert-spqr"),
])
def test_missing_optional_dependencies_name_the_extra(command, feature, no_torch_env, tmp_path):
    """With torch hidden (a sitecustomize that blocks its import), each torch feature
    answers with one line naming the extra to install, and exit code 2."""
    env = no_torch_env
    src = model_folder(tmp_path / "src")
    r = run(*[a.format(src=src, out=tmp_path / "out") for a in command], env=env)
    assert r.returncode == 2
    line = r.stderr.strip()
    assert "\n" not in line, line
    assert feature in line and "torch" in line and 'pip install "ctcodec[torch]"' in line, line
    assert not (tmp_path / "out").exists()


def test_core_commands_work_without_torch(no_torch_env, tmp_path):
    env = no_torch_env
    src = model_folder(tmp_path / "src")
    assert run("compress", src, tmp_path / "q", "--scheme", "W4A16", "--group-size", "32", "-q", env=env).returncode == 0
    r = run("decompress", tmp_path / "q", tmp_path / "d", "-q", env=env)
    assert r.returncode == 0, r.stderr
    assert run("inspect", tmp_path / "q", "--summary", env=env).returncode == 0


def test_decompress_file_checks_its_arguments_before_reading(tmp_path):
    src = model_folder(tmp_path / "src")
    with pytest.raises(ctcodec.CodecError, match="unknown framework 'jax'"):
        ctcodec.decompress_file(src, framework="jax")  # raised by the call, not by the first next()
    with pytest.raises(ctcodec.CodecError, match="unknown read mode 'fast'"):
        ctcodec.decompress_file(src, mode="fast")
    with pytest.raises(ctcodec.CodecError, match="CPU"):
        ctcodec.decompress_file(src, framework="numpy", device="cuda")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ctcodec.decompress_file(tmp_path / "nowhere")
    for mode in ("auto", "mmap", "pread"):
        got = dict(ctcodec.decompress_file(src, framework="numpy", mode=mode))
        assert got.keys() == load_file(src / "model.safetensors").keys()


@pytest.mark.parametrize("code, feature", [
    ("ctcodec.load_model('x')", "ctcodec.load_model"),
    ("from ctcodec.calibrate import compress_calibrated", "ctcodec.calibrate"),
    ("list(ctcodec.decompress_file('x', framework='torch'))", "framework='torch'"),
])
def test_python_api_without_torch_raises_missing_dependency(code, feature, no_torch_env):
    script = ("import ctcodec\ntry:\n    " + code + "\nexcept ctcodec.MissingDependency as e:\n"
              "    assert isinstance(e, ImportError)\n    print(e)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       env=no_torch_env)
    assert r.returncode == 0, r.stderr
    assert feature in r.stdout and 'pip install "ctcodec[torch]"' in r.stdout, r.stdout
