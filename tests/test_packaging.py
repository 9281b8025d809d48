"""The package metadata and the pinned environment agree: every range pyproject.toml
gives is met by the version the lock pins, the lock is what is installed, and the gpu
extra names the kernels distribution of the same version."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import ctcodec

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins(lock: str) -> dict[str, str]:
    text = (ROOT / "requirements" / lock).read_text()
    return {canonicalize_name(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.M)}


def _requirements(*extras: str) -> list[Requirement]:
    project = PYPROJECT["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return [r for r in reqs if canonicalize_name(r.name) not in ("ctcodec", "ctcodec-kernels")]


@pytest.mark.parametrize("extras", [("test", "torch")])
def test_lock_meets_every_range_of_pyproject(extras):
    pins = _pins("test.lock")
    for req in _requirements(*extras):
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not in requirements/test.lock: run scripts/lock.sh"
        assert req.specifier.contains(pins[name], prereleases=True), f"lock pins {name}=={pins[name]}, not {req}"


@pytest.mark.parametrize("lock", ["test.lock", "models.lock"])
def test_installed_environment_is_the_lock(lock):
    for name, pinned in _pins(lock).items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name}=={pinned} from requirements/{lock} is not installed: run scripts/setup.sh")
        assert installed == pinned, f"{name}: {installed} installed, {pinned} locked: run scripts/setup.sh"


def test_every_lock_entry_carries_a_hash():
    for lock in sorted((ROOT / "requirements").glob("*.lock")):
        entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text().strip())
        for entry in entries:
            if entry.startswith("#"):
                continue
            assert "--hash=sha256:" in entry, f"{lock.name}: {entry.splitlines()[0]} has no hash"


def test_gpu_extra_names_the_kernels_of_the_same_version():
    kernels = tomllib.loads((ROOT / "kernels" / "pyproject.toml").read_text())["project"]["version"]
    gpu = [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"]["gpu"]]
    pinned = next(r for r in gpu if r.name == "ctcodec-kernels")
    assert str(pinned.specifier) == f"=={kernels}" and kernels == ctcodec.__version__
    torch_extra = {canonicalize_name(Requirement(r).name) for r in PYPROJECT["project"]["optional-dependencies"]["torch"]}
    assert {"torch", "transformers", "accelerate"} <= torch_extra
