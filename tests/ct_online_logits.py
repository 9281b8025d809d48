"""Runs under compressed-tensors 0.20: loads a compressed folder with transformers (its
compressed-tensors quantizer decompresses the weights, in which the weight-side
rotations are already folded), then applies the checkpoint's ONLINE transforms with
compressed-tensors' own `apply_transform_config`, as vLLM does at load time (transformers
4.57 does not), and saves the logits of the prompt (an encoder's last hidden state).

    python ct_online_logits.py MODEL_DIR TOKENIZER_DIR OUT.pt [--encoder]
"""

import json
import sys
from pathlib import Path

import torch
from compressed_tensors.transform import TransformConfig, apply_transform_config
from compressed_tensors.transform.factory.base import TransformBase
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from ct_current import PROMPT

folder = Path(sys.argv[1])
groups = json.loads((folder / "config.json").read_text())["quantization_config"]["transform_config"]["config_groups"]
online = {}
for name, group in groups.items():
    applies = [a for a in group["apply"] if a["location"] not in ("weight_input", "weight_output")]
    if applies:
        online[name] = {**group, "apply": applies}
encoder = "--encoder" in sys.argv[4:]
model = (AutoModel if encoder else AutoModelForCausalLM).from_pretrained(folder, dtype=torch.bfloat16)
apply_transform_config(model, TransformConfig.model_validate({"config_groups": online}))
hooked = sorted(n for n, m in model.named_modules() if isinstance(m, TransformBase))
tok = AutoTokenizer.from_pretrained(sys.argv[2])
ids = tok(PROMPT, return_tensors="pt").input_ids
with torch.no_grad():
    out = model(ids)
    torch.save(out.last_hidden_state if encoder else out.logits, sys.argv[3])
print("online transforms:", len(hooked), hooked[:1])
print("ok")
