"""The release artifacts as a user gets them: scripts/build_wheels.sh builds them, a new
venv installs ctcodec from them alone (no package index; numpy and ml_dtypes from a
local wheelhouse), and reads bf16 sparse-bitmask and W4A16 checkpoints to numpy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import ctcodec

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _sh(*args, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900, **kw)
    assert r.returncode == 0, f"{args}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _locked(package: str) -> str:
    """The version requirements/test.lock pins for `package`."""
    m = re.search(rf"^{re.escape(package)}==(\S+)", (ROOT / "requirements" / "test.lock").read_text(), re.M)
    assert m, package
    return m.group(1)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    log = _sh("bash", ROOT / "scripts" / "build_wheels.sh", out).stdout
    assert "is consistent with" in log  # auditwheel's verdict on the manylinux tag
    return out


def test_artifacts_are_an_abi3_manylinux_wheel_an_sdist_and_the_kernels(dist):
    names = sorted(p.name for p in dist.iterdir())
    wheel = next(n for n in names if n.startswith("ctcodec-") and n.endswith(".whl"))
    assert re.fullmatch(rf"ctcodec-{ctcodec.__version__}-cp310-abi3-manylinux_2_\d+_x86_64\.whl", wheel), names
    assert f"ctcodec-{ctcodec.__version__}.tar.gz" in names
    assert any(re.fullmatch(r"ctcodec_kernels-[\d.]+-py3-none-any\.whl", n) for n in names), names
    with zipfile.ZipFile(dist / wheel) as z:
        metadata = z.read(f"ctcodec-{ctcodec.__version__}.dist-info/METADATA").decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert sorted(r.split()[1].split(">")[0].split("=")[0].lower() for r in core) == ["ml-dtypes", "numpy", "pydantic"]
    assert any("torch" in r and "extra == 'torch'" in r for r in requires)
    assert any("transformers" in r and "extra == 'torch'" in r for r in requires)


def _bf16_checkpoints(tmp: Path) -> tuple[dict[str, Path], dict[str, np.ndarray]]:
    """A bf16 model folder compressed to sparse-bitmask and to W4A16, and what our own
    decoder reads from each (as raw uint16 bit patterns)."""
    import ml_dtypes
    from safetensors.numpy import save_file

    rng = np.random.default_rng(1)
    w = rng.standard_normal((64, 128)).astype(np.float32)
    w[rng.random(w.shape) < 0.5] = 0
    src = tmp / "dense"
    src.mkdir()
    save_file({"model.layers.0.mlp.up_proj.weight": w.astype(ml_dtypes.bfloat16),
               "model.norm.weight": np.ones(128, dtype=ml_dtypes.bfloat16)}, src / "model.safetensors")
    (src / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    folders = {"sparse": tmp / "sparse", "w4a16": tmp / "w4a16"}
    ctcodec.compress_checkpoint(src, folders["sparse"])
    ctcodec.compress_checkpoint(src, folders["w4a16"], scheme="W4A16", group_size=64)
    expected = {}
    for kind, folder in folders.items():
        for name, t in ctcodec.decompress_file(folder, framework="numpy"):
            assert t.dtype == ml_dtypes.bfloat16
            expected[f"{kind}/{name}"] = t.view(np.uint16)
    return folders, expected


_READER = """
import json, sys
import numpy as np
import ctcodec
out = {}
for kind, folder in json.loads(sys.argv[1]).items():
    for name, t in ctcodec.decompress_file(folder):
        assert isinstance(t, np.ndarray) and t.dtype.name == "bfloat16", (name, type(t), t.dtype)
        np.save(sys.argv[2] + "/" + kind + "-" + name + ".npy", t.view(np.uint16))
print("read", len(list(__import__("pathlib").Path(sys.argv[2]).iterdir())))
"""


def test_fresh_venv_installs_from_dist_alone_and_reads_bf16_checkpoints(dist, tmp_path):
    wheelhouse = tmp_path / "wheelhouse"
    core = ["numpy", "ml-dtypes", "pydantic", "pydantic-core", "annotated-types", "typing-extensions",
            "typing-inspection"]  # the core dependencies and theirs, at the locked versions
    _sh(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
        "--dest", wheelhouse, *[f"{name}=={_locked(name)}" for name in core])
    venv = tmp_path / "venv"
    _sh(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    _sh(py, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", dist, "--find-links", wheelhouse,
        "ctcodec")
    installed = _sh(py, "-m", "pip", "list", "--format", "json").stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert {"ctcodec", "numpy", "ml_dtypes", "pydantic"} <= names | {n.replace("-", "_") for n in names}
    assert "torch" not in names

    folders, expected = _bf16_checkpoints(tmp_path)
    arrays = tmp_path / "arrays"
    arrays.mkdir()
    _sh(py, "-c", _READER, json.dumps({k: str(v) for k, v in folders.items()}), arrays)
    for key, want in expected.items():
        kind, name = key.split("/")
        got = np.load(arrays / f"{kind}-{name}.npy")
        assert np.array_equal(got, want), key

    version = _sh(venv / "bin" / "ctcodec", "--version").stdout.strip()
    assert version == f"ctcodec {ctcodec.__version__}"
    # The torch features say what to install, in one line, with exit code 2.
    r = subprocess.run([str(venv / "bin" / "ctcodec"), "eval", str(folders["w4a16"])], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        'ctcodec: error: ctcodec eval needs torch, transformers, accelerate, which are not installed: '
        'pip install "ctcodec[torch]"']
