"""Runs under the current compressed-tensors: loads a compressed folder the way users do,
with transformers' `from_pretrained` (its compressed-tensors quantizer builds the
compressed modules on the meta device, loads our tensors into them, and decompresses),
then saves the logits of a prompt.

    python ct_hf_load.py MODEL_DIR TOKENIZER_DIR OUT.pt
"""

import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ct_current import PROMPT

model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
tok = AutoTokenizer.from_pretrained(sys.argv[2])
ids = tok(PROMPT, return_tensors="pt").input_ids
with torch.no_grad():
    torch.save(model(ids).logits, sys.argv[3])
print("ok")
