import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))  # realdata helpers shared with the demo and benches

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Real checkpoints built once and reused (ignored by git)."""
    d = ROOT / "demo-data"
    d.mkdir(exist_ok=True)
    return d


@pytest.fixture(scope="module")
def tiny(cache_dir):
    """A tiny random-weight Llama with SmolLM2's tokenizer (tests/tiny_models.py)."""
    from tiny_models import tiny_llama

    return tiny_llama(cache_dir)
