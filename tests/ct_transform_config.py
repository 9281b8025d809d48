"""Runs under compressed-tensors 0.20: parses a checkpoint's transform_config with its own
TransformConfig model and prints, per group, the type and (location, inverse) pairs.

    python ct_transform_config.py MODEL_DIR
"""

import json
import sys
from pathlib import Path

from compressed_tensors.transform import TransformConfig

qc = json.loads((Path(sys.argv[1]) / "config.json").read_text())["quantization_config"]
config = TransformConfig.model_validate(qc["transform_config"])
for name, scheme in config.config_groups.items():
    print(name, scheme.type, scheme.head_dim, [(a.location, a.inverse) for a in scheme.apply])
print("ok")
