"""Which weights a checkpoint compression touches: compressed-tensors' target rules,
applied to tensor names and shapes because no model is instantiated."""

from __future__ import annotations

import re
from typing import Iterable, Sequence

# Modules whose 2-D weight is not a Linear layer's, by the names transformers uses.
_NOT_LINEAR = re.compile(r"(^|\.)(embed_tokens|embed_positions|embeddings?|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings|shared|[a-z_]*norm[a-z_]*|ln_\w+)$", re.IGNORECASE)


def looks_linear(module: str, shape: Sequence[int]) -> bool:
    """A `Linear` stand-in: a 2-D weight of a module not named like an embedding or norm."""
    return len(shape) == 2 and not _NOT_LINEAR.search(module)


def _matches(module: str, shape: Sequence[int], target: str) -> bool:
    if target.startswith("re:"):
        return re.match(target[3:], module) is not None
    if target == "Linear":
        return looks_linear(module, shape)
    return target == module


def is_target(module: str, shape: Sequence[int], targets: Iterable[str], ignore: Iterable[str]) -> bool:
    """compressed-tensors' rule: matched by a target (exact name, `re:` regex, or the
    `Linear` class) and by no ignore entry (same kinds)."""
    return any(_matches(module, shape, t) for t in targets) and not any(_matches(module, shape, i) for i in ignore)
