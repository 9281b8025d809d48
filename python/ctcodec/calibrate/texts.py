"""Real text for calibration and evaluation, and its cutting into token windows.

Two sources that ship with every machine this project targets and that nobody here
wrote: the Python Language Reference (CPython's `pydoc_data.topics`, ~750 kB of English
prose) for calibration, and the GNU GPL version 3 (Debian's `base-files`, else CPython's
LICENSE.txt) for evaluation. Any UTF-8 file can replace either."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import torch

from ..errors import CodecError

BUILTIN = ("python-reference", "gpl-3")


def python_reference() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def gpl3() -> str:
    for p in (Path("/usr/share/common-licenses/GPL-3"), Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt"):
        if p.is_file():
            return p.read_text(encoding="utf-8")
    raise CodecError("no GPL-3 text on this machine; pass a text file")


def load_text(source: str | os.PathLike) -> str:
    if source == "python-reference":
        return python_reference()
    if source == "gpl-3":
        return gpl3()
    try:
        return Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CodecError(f"{source}: cannot read text: {e}") from None


def token_ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def calibration_windows(tokenizer, text: str, nsamples: int, seqlen: int, seed: int = 0) -> torch.Tensor:
    """`nsamples` windows of `seqlen` tokens at random offsets (as GPTQ draws them)."""
    ids = token_ids(tokenizer, text)
    if len(ids) <= seqlen:
        raise CodecError(f"calibration text has {len(ids)} tokens, fewer than one window of {seqlen}")
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seqlen, (nsamples,), generator=gen)
    return torch.stack([ids[s:s + seqlen] for s in starts.tolist()])
