"""Runs llm-compressor (the reference GPTQ / QuIP / SpinQuant) on a checkpoint with the
exact calibration windows ctcodec uses, for the quality benchmark. It runs in its own
import path (scripts/setup_llmc.sh installs llmcompressor and its compressed-tensors into
.llmc; torch and transformers come from .venv):

    PYTHONPATH=.llmc .venv/bin/python benches/llmc_worker.py --model DIR --out DIR \
        --windows WINDOWS.pt --recipe gptq [--group-size 64] [--observer minmax|mse] \
        [--actorder static|group|none] [--pipeline independent|sequential|basic]

WINDOWS.pt is a LongTensor [nsamples, seqlen] of token ids saved by the caller
(torch.save). Recipes, all W4A16 (int4 symmetric, one scale per group of --group-size
input columns), lm_head left dense:
  gptq            GPTQModifier alone
  quip-gptq       QuIPModifier(random-hadamard, rotations v and u) then GPTQModifier. QuIP
                  keeps ONLINE transforms: an input rotation and an output rotation
                  per Linear, saved as extra tensors (*.input / *.output transform
                  weights) that a plain dequantization does not apply.
  spinquant-gptq  SpinQuantModifier(R1, R2, random-hadamard) then GPTQModifier: R1 and R2
                  are fused into the weights, so the output is an ordinary checkpoint.
"hadamard" would need power-of-two sizes (SmolLM2's 576 is not); random-hadamard works.
The last line printed is one JSON object: the configuration used and the seconds taken.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

RECIPES = ("gptq", "quip-gptq", "spinquant-gptq")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="dense Hugging Face checkpoint folder")
    p.add_argument("--out", required=True, type=Path, help="folder for the compressed checkpoint")
    p.add_argument("--windows", required=True, type=Path, help="torch.save'd LongTensor [nsamples, seqlen]")
    p.add_argument("--recipe", required=True, choices=RECIPES)
    p.add_argument("--group-size", type=int, default=64)
    p.add_argument("--observer", choices=("minmax", "mse"), default="minmax",
                   help="weight observer for the group scales (llm-compressor names)")
    p.add_argument("--actorder", choices=("static", "group", "none"), default="static",
                   help="GPTQ column order: static (llm-compressor's default: columns by descending "
                        "Hessian diagonal, no g_idx saved), group (same order, g_idx saved), none")
    p.add_argument("--dampening-frac", type=float, default=0.01)
    p.add_argument("--block-size", type=int, default=128, help="GPTQ columns per lazy-update block")
    p.add_argument("--pipeline", default="independent",
                   help="llm-compressor calibration pipeline (independent picks sequential for GPTQ)")
    p.add_argument("--dtype", choices=("auto", "bfloat16", "float16", "float32"), default="auto",
                   help="dtype the model is loaded in (auto: the checkpoint's)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--encoder", action="store_true",
                   help="the model is an encoder (BERT): loaded with AutoModel, scored from the saved checkpoint")
    p.add_argument("--eval-text", default=None,
                   help="also score the compressed model in memory (fp32, with any online transforms "
                        "llm-compressor attached): perplexity on this text (ctcodec.evaluate, windows of 512)")
    return p.parse_args(argv)


def build_recipe(args):
    from compressed_tensors.quantization import (ActivationOrdering, QuantizationArgs, QuantizationScheme,
                                                 QuantizationStrategy, QuantizationType)
    from llmcompressor.modifiers.quantization import GPTQModifier

    actorder = {"static": ActivationOrdering.STATIC, "group": ActivationOrdering.GROUP, "none": None}[args.actorder]
    weights = QuantizationArgs(num_bits=4, type=QuantizationType.INT, symmetric=True, dynamic=False,
                               strategy=QuantizationStrategy.GROUP, group_size=args.group_size,
                               observer=args.observer, actorder=actorder)
    scheme = QuantizationScheme(targets=["Linear"], weights=weights)
    # actorder on the scheme is what the modifier resolves to (the modifier-level field's
    # default sentinel only fills a scheme that has none; None must be passed explicitly).
    gptq = GPTQModifier(config_groups={"group_0": scheme}, ignore=["lm_head"], actorder=actorder,
                        block_size=args.block_size, dampening_frac=args.dampening_frac)
    recipe = []
    if args.recipe == "quip-gptq":
        from llmcompressor.modifiers.transform import QuIPModifier
        recipe.append(QuIPModifier(rotations=["v", "u"], transform_type="random-hadamard",
                                   targets="Linear", ignore="lm_head"))
    elif args.recipe == "spinquant-gptq":
        from llmcompressor.modifiers.transform import SpinQuantModifier
        recipe.append(SpinQuantModifier(rotations=["R1", "R2"], transform_type="random-hadamard"))
    recipe.append(gptq)
    return recipe


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import compressed_tensors
    import llmcompressor
    import transformers
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    windows = torch.load(args.windows)
    if not (isinstance(windows, torch.Tensor) and windows.ndim == 2):
        raise SystemExit(f"{args.windows}: expected a 2-D LongTensor, got {type(windows)}")
    windows = windows.long()
    nsamples, seqlen = windows.shape
    dataset = Dataset.from_dict({"input_ids": windows.tolist(),
                                 "attention_mask": torch.ones_like(windows).tolist()})

    torch_dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    auto = AutoModel if args.encoder else AutoModelForCausalLM
    model = auto.from_pretrained(args.model, torch_dtype=torch_dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    recipe = build_recipe(args)

    # SpinQuant's R1 rotates the embeddings and fuses the final norm into lm_head, so a
    # tied lm_head must be untied first. oneshot must do it (tie_word_embeddings=False),
    # before it installs compressed-tensors' offload caches: SpinQuantModifier's own
    # untie runs later, and under the cache (llmcompressor 0.11.0, compressed-tensors
    # 0.16.0) its register_parameter(clone) only copies into the still-shared tensor,
    # so both rotations hit one tensor and save_pretrained drops lm_head.weight.
    untie = args.recipe == "spinquant-gptq"

    start = time.perf_counter()
    # Windows are already tokenized, so no text preprocessing runs; no shuffling keeps
    # ctcodec's order; oneshot saves nothing itself (no output_dir).
    oneshot(model=model, tokenizer=tokenizer, dataset=dataset, recipe=recipe, max_seq_length=seqlen,
            num_calibration_samples=nsamples, shuffle_calibration_samples=False, pipeline=args.pipeline,
            tie_word_embeddings=not untie)
    calibrate_s = time.perf_counter() - start
    ppl = None
    if args.eval_text and not args.encoder:
        # Before saving: save_pretrained(save_compressed=True) packs the weights in place.
        from ctcodec.calibrate.texts import load_text
        from ctcodec.evaluate import perplexity

        model.float()
        ppl = perplexity(model, tokenizer, load_text(args.eval_text))
        model.to(torch.bfloat16 if args.dtype == "auto" else torch_dtype)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, save_compressed=True)
    tokenizer.save_pretrained(args.out)
    elapsed = time.perf_counter() - start

    qconfig = json.loads((args.out / "config.json").read_text()).get("quantization_config", {})
    report = {
        "tool": "llmcompressor", "llmcompressor": llmcompressor.__version__,
        "compressed_tensors": compressed_tensors.__version__, "transformers": transformers.__version__,
        "torch": torch.__version__, "model": os.fspath(args.model), "out": os.fspath(args.out),
        "recipe": args.recipe, "modifiers": [type(m).__name__ for m in recipe],
        "transform_type": None if args.recipe == "gptq" else "random-hadamard",
        "rotations": {"gptq": None, "quip-gptq": ["v", "u"], "spinquant-gptq": ["R1", "R2"]}[args.recipe],
        "scheme": "W4A16 int4 symmetric group", "group_size": args.group_size, "observer": args.observer,
        "actorder": args.actorder, "dampening_frac": args.dampening_frac, "block_size": args.block_size,
        "pipeline": args.pipeline, "dtype": str(model.dtype), "nsamples": nsamples, "seqlen": seqlen,
        "ignore": ["lm_head"], "threads": torch.get_num_threads(),
        "format": qconfig.get("format"), "tie_word_embeddings": not untie,
        "online_transforms": sorted({f"{g}:{a['location']}" for g, sch in ((qconfig.get("transform_config") or {}).get("config_groups") or {}).items()
                                     for a in sch["apply"] if a["location"] in ("input", "output")}),
        "calibrate_s": round(calibrate_s, 2), "elapsed_s": round(elapsed, 2), "perplexity": ppl,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
