"""Quality of each compression method on two real models, in one command:

    .venv/bin/python benches/quality.py [--json benches/results-quality.json]

SmolLM2-135M (causal LM, bf16): perplexity on the GNU GPL v3 text (windows of 512
tokens). all-MiniLM-L6-v2 (sentence encoder, fp32): mean cosine similarity of sentence
embeddings to the dense model's, over sentences of the same text. Calibration (GPTQ,
SparseGPT, SpQR) uses different real text: CPython's Python Language Reference,
128 windows of 128 tokens. Prints a markdown table (also written with --md).

Rows at about 4.25 bits compare ctcodec's rotations (R1 + R2 folded, `rotate=`; R4 or,
for MiniLM, every Linear's input turned online, `online_rotation=True`) and
MSE observer with llm-compressor's GPTQ, QuIP + GPTQ and SpinQuant + GPTQ on the same
calibration windows (benches/llmc_worker.py in its own import path: run
scripts/setup_llmc.sh first, or pass --no-llmc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import ctcodec  # noqa: E402
from ctcodec.calibrate import compress_calibrated  # noqa: E402
from ctcodec.calibrate.texts import load_text  # noqa: E402
from ctcodec.evaluate import embedding_similarity, load_model, perplexity, sentences  # noqa: E402
from ctcodec.spqr_format import SpqrParams  # noqa: E402
from realdata import dense_smollm2_folder, minilm_folder  # noqa: E402


def llm_compressor(recipe: str, group: int, args, kind: str = "causal", observer: str = "minmax"):
    """A maker for llm-compressor's `recipe` (benches/llmc_worker.py, in its own import path
    .llmc: scripts/setup_llmc.sh) on ctcodec's exact calibration windows. A causal LM is
    scored in memory, with any online transforms it attached (QuIP's), on the same text;
    an encoder is scored from its saved checkpoint like ours."""
    def make(src: Path, out: Path) -> dict:
        from transformers import AutoTokenizer

        from ctcodec.calibrate.texts import calibration_windows

        if not (ROOT / ".llmc").is_dir():
            raise SystemExit("llm-compressor rows need .llmc: run bash scripts/setup_llmc.sh")
        windows = calibration_windows(AutoTokenizer.from_pretrained(src), load_text(args.calib), args.nsamples,
                                      args.seqlen, 0)
        out.mkdir(parents=True)
        torch.save(windows, out.parent / "windows.pt")
        proc = subprocess.run([sys.executable, str(ROOT / "benches" / "llmc_worker.py"), "--model", str(src),
                               "--out", str(out), "--windows", str(out.parent / "windows.pt"), "--recipe", recipe,
                               "--group-size", str(group), "--observer", observer]
                              + (["--eval-text", args.eval_text] if kind == "causal" else ["--encoder"]),
                              env=dict(os.environ, PYTHONPATH=str(ROOT / ".llmc")), capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"llmc_worker {recipe} failed:\n{proc.stderr[-3000:]}")
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        return {"quality": report["perplexity"], "llmc": report} if kind == "causal" else {"llmc": report}
    return make


def methods(group: int, args, kind: str) -> list[tuple[str, object]]:
    cal = {"calib": args.calib, "nsamples": args.nsamples, "seqlen": args.seqlen}
    # Rotations fold into pre-norm RMSNorm decoders (Llama family), not BERT's post-norm
    # layers: those get online input rotations on every Linear layer.
    rotated = [
        (f"RTN W4A16 g{group} + online input rotation (hadamard)", lambda s, o: ctcodec.compress_checkpoint(
            s, o, scheme="W4A16", group_size=group, rotate="hadamard", online_rotation=True)),
        (f"GPTQ W4A16 g{group} (act order) + online input rotation (hadamard) + mse observer",
         lambda s, o: compress_calibrated(s, o, scheme="W4A16", group_size=group, rotate="hadamard",
                                          online_rotation=True, observer="mse", act_order=True, **cal)),
        (f"GPTQ W4A16 g{group} (act order) + mse observer", lambda s, o: compress_calibrated(
            s, o, scheme="W4A16", group_size=group, observer="mse", act_order=True, **cal)),
    ] if kind != "causal" else [
        (f"RTN W4A16 g{group} + rotation ({r})", lambda s, o, r=r: ctcodec.compress_checkpoint(
            s, o, scheme="W4A16", group_size=group, rotate=r)) for r in ("hadamard", "random-hadamard")] + [
        (f"GPTQ W4A16 g{group} + rotation (random-hadamard){' + mse observer' if obs == 'mse' else ''}",
         lambda s, o, obs=obs: compress_calibrated(s, o, scheme="W4A16", group_size=group, rotate="random-hadamard",
                                                   observer=obs, **cal)) for obs in ("minmax", "mse")] + [
        (f"GPTQ W4A16 g{group} (act order) + rotation (random-hadamard) + mse observer",
         lambda s, o: compress_calibrated(s, o, scheme="W4A16", group_size=group, rotate="random-hadamard",
                                          observer="mse", act_order=True, **cal)),
        # R4 is an online transform: scored through ctcodec's loader, which applies it.
        (f"GPTQ W4A16 g{group} (act order) + rotation (random-hadamard) + online R4 + mse observer",
         lambda s, o: compress_calibrated(s, o, scheme="W4A16", group_size=group, rotate="random-hadamard",
                                          online_rotation=True, observer="mse", act_order=True, **cal))]
    # llm-compressor beside us: its rotations are for causal LMs; its GPTQ runs on both.
    recipes = [("GPTQ", "gptq", "minmax")] + ([] if kind != "causal" else [
        ("GPTQ + mse observer", "gptq", "mse"), ("QuIP + GPTQ", "quip-gptq", "minmax"),
        ("SpinQuant R1R2 + GPTQ", "spinquant-gptq", "minmax"), ("SpinQuant R1R2 + GPTQ + mse observer",
                                                                "spinquant-gptq", "mse")])
    peers = [] if args.no_llmc else [
        (f"llm-compressor {name} W4A16 g{group}", llm_compressor(recipe, group, args, kind, observer))
        for name, recipe, observer in recipes]
    return [
        ("dense", None),
        (f"RTN W4A16 g{group}", lambda s, o: ctcodec.compress_checkpoint(s, o, scheme="W4A16", group_size=group)),
        (f"GPTQ W4A16 g{group} (act order)", lambda s, o: compress_calibrated(
            s, o, scheme="W4A16", group_size=group, act_order=True, **cal)),
        (f"GPTQ W4A16 g{group} + mse observer", lambda s, o: compress_calibrated(
            s, o, scheme="W4A16", group_size=group, observer="mse", **cal)),
        (f"SparseGPT 2:4 + W4A16 g{group}", lambda s, o: compress_calibrated(
            s, o, algorithm="sparsegpt", sparsity="2:4", scheme="W4A16", group_size=group, **cal)),
    ] + [(f"SpQR {bits}-bit 16x16, tau {tau}", lambda s, o, bits=bits, tau=tau: compress_calibrated(
            s, o, algorithm="spqr", spqr_params=SpqrParams(bits=bits), outlier_threshold=tau,
            percdamp=args.spqr_percdamp, **cal))
          for bits, taus in ((3, args.tau3), (4, args.tau4)) for tau in taus] + rotated + [
        # SpQR at the W4A16 g64 budget: 4 + 6/32 + 64/(32·32) = 4.25 paper bits before outliers.
        ("SpQR 4-bit 32x32, tau 1.0 (4.25-bit budget)", lambda s, o: compress_calibrated(
            s, o, algorithm="spqr", spqr_params=SpqrParams(bits=4, beta1=32, beta2=32), outlier_threshold=1.0,
            percdamp=args.spqr_percdamp, **cal))] + peers


def score(kind: str, folder: Path, reference, text: str, sents: list[str]) -> float:
    model, tok = load_model(folder)
    if kind == "causal":
        return perplexity(model, tok, text)
    return embedding_similarity(reference, model, tok, sents)["mean_cosine"]


def run(args) -> list[dict]:
    cache = ROOT / "demo-data"
    cache.mkdir(exist_ok=True)
    models = {"SmolLM2-135M": (dense_smollm2_folder(cache), "causal", 64),
              "all-MiniLM-L6-v2": (minilm_folder(cache), "encoder", 128)}
    text = load_text(args.eval_text)
    sents = sentences(text)
    rows = []
    for model_name in args.models:
        src, kind, group = models[model_name]
        reference = load_model(src)[0] if kind == "encoder" else None
        for label, make in methods(group, args, kind):
            if args.only and not any(o in label for o in args.only):
                continue
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                out = Path(tmp) / "c"
                t0 = time.perf_counter()
                summary = make(src, out) if make else {}
                seconds = time.perf_counter() - t0
                folder = out if make else src
                report = ctcodec.inspect_checkpoint(folder) if make else None
                # llm-compressor's rows come scored (in memory, with their online transforms).
                quality = summary["quality"] if "quality" in summary else score(kind, folder, reference, text, sents)
            row = {"model": model_name, "method": label, "metric": "perplexity" if kind == "causal" else "cosine",
                   "quality": quality, "seconds": seconds,
                   "bits_per_param": report["bits_per_param"] if report else 16.0 if kind == "causal" else 32.0,
                   "average_bits": summary.get("average_bits"), "outlier_fraction": summary.get("outlier_fraction"),
                   "skipped": [s["module"] for s in summary.get("skipped", [])], "llmc": summary.get("llmc")}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | method | stored bits/param | SpQR paper bits | quality | vs dense | time (s) |",
             "|---|---|---|---|---|---|---|"]
    dense = {r["model"]: r["quality"] for r in rows if r["method"] == "dense"}
    for r in rows:
        d = dense.get(r["model"])
        rel = "" if d is None or r["method"] == "dense" else f"{(r['quality'] / d - 1) * 100:+.2f}%"
        q = f"ppl {r['quality']:.3f}" if r["metric"] == "perplexity" else f"cos {r['quality']:.5f}"
        paper = "" if r["average_bits"] is None else f"{r['average_bits']:.3f} ({r['outlier_fraction']:.2%} outliers)"
        lines.append(f"| {r['model']} | {r['method']} | {r['bits_per_param']:.3f} | {paper} | {q} | {rel} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["SmolLM2-135M", "all-MiniLM-L6-v2"])
    p.add_argument("--only", nargs="*", default=None, help="run only methods whose label contains one of these")
    p.add_argument("--calib", default="python-reference")
    p.add_argument("--eval-text", default="gpl-3")
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=128)
    p.add_argument("--tau3", type=float, nargs="*", default=[1.0, 0.3],
                   help="SpQR 3-bit relative outlier thresholds (one row each: ~3.6 and ~3.9 average bits)")
    p.add_argument("--tau4", type=float, nargs="*", default=[1.0], help="SpQR 4-bit relative outlier thresholds")
    p.add_argument("--spqr-percdamp", type=float, default=1.0, help="SpQR Hessian damping (the SpQR README's 1.0)")
    p.add_argument("--no-llmc", action="store_true", help="leave out llm-compressor's rows")
    p.add_argument("--json", default=None)
    p.add_argument("--md", default=None)
    args = p.parse_args()
    rows = run(args)
    md = table(rows)
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    if args.md:
        Path(args.md).write_text(md + "\n")


if __name__ == "__main__":
    main()
