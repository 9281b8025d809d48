"""Optional dependencies: a clear one-line error naming the extra to install, instead of
a traceback from deep inside an import."""

from __future__ import annotations

import importlib.util

# What each extra of pyproject.toml brings that ctcodec imports.
EXTRAS = {
    "torch": ("torch", "transformers", "accelerate"),
    "gpu": ("torch", "transformers", "accelerate", "triton", "ctcodec_kernels"),
    "cluster": ("ray",),
}


class MissingDependency(ImportError):
    """An optional dependency is not installed; the message says what to install."""


def missing(modules) -> list[str]:
    """The modules that cannot be imported here."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require(extra: str, what: str, *modules: str) -> None:
    """Raises MissingDependency when `what` (a feature, e.g. "ctcodec eval") cannot run
    because `modules` (default: everything `extra` brings) are not all installed."""
    absent = missing(modules or EXTRAS[extra])
    if absent:
        raise MissingDependency(
            f'{what} needs {", ".join(absent)}, which {"is" if len(absent) == 1 else "are"} not installed: '
            f'pip install "ctcodec[{extra}]"')
