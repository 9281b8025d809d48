"""The `ctcodec` command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from . import __version__
from .checkpoint import compress_checkpoint, decompress_checkpoint
from .errors import CodecError
from .extras import MissingDependency, require
from .inspect import inspect_checkpoint
from .reading import compressed_tensor_count
from .model_folder import OutputNotEmpty

# How many names a "left dense" summary shows before "-v lists them all".
_SHOWN_SKIPPED = 3


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _spqr_params(args):
    from .spqr_format import SpqrParams

    return SpqrParams(bits=args.wbits, beta1=args.qq_groupsize, beta2=args.groupsize,
                      qq_scale_bits=args.qq_scale_bits, qq_zero_bits=args.qq_zero_bits,
                      outlier_layout=args.outlier_layout)


def _print_skipped(skipped: list[dict], verbose: bool) -> None:
    """One line for the weights left dense (the full list with -v)."""
    if not skipped:
        return
    if verbose:
        for s in skipped:
            print(f"left dense: {s['module']}: {s['reason']}")
        return
    names = ", ".join(s["module"] for s in skipped[:_SHOWN_SKIPPED])
    more = f", ... ({len(skipped) - _SHOWN_SKIPPED} more; -v lists them all)" if len(skipped) > _SHOWN_SKIPPED else ""
    print(f"left dense: {len(skipped)} weight{'s' if len(skipped) > 1 else ''} ({names}{more}); "
          f"first reason: {skipped[0]['reason']}")


def _print_resumed(summary: dict) -> None:
    if summary.get("resumed_shards"):
        print(f"resumed {len(summary['resumed_shards'])} of {summary['shards']} shards: kept (verified) from an "
              "interrupted run of this command")


def _cmd_compress_calibrated(args) -> int:
    algorithm = "spqr" if args.spqr else args.algorithm
    require("torch", f"ctcodec compress {'--spqr' if args.spqr else '--algorithm ' + algorithm}")
    from .calibrate import compress_calibrated

    summary = compress_calibrated(
        args.model_dir, args.out_dir, algorithm=algorithm, scheme=args.scheme, group_size=args.group_size,
        sparsity=args.sparsity, spqr_params=_spqr_params(args) if args.spqr else None, calib=args.calib,
        nsamples=args.nsamples, seqlen=args.seqlen, percdamp=args.percdamp,
        act_order=None if args.permutation_order is None else args.permutation_order == "act_order",
        outlier_threshold=args.outlier_threshold, simplified_outliers=args.simplified_outliers,
        targets=args.targets, ignore=args.ignore, progress=not args.quiet, overwrite=args.overwrite,
        cluster=args.cluster, rotate=args.rotate, online_rotation=args.online_rotation,
        observer=args.observer)
    extra = ""
    if "average_bits" in summary:
        extra = f", {summary['average_bits']:.3f} average bits, {summary['outlier_fraction']:.3%} outliers"
    if "pruned_fraction" in summary:
        extra += f", {summary['pruned_fraction']:.1%} pruned"
    print(f"{algorithm}: {summary['weights']} weights calibrated on {summary['nsamples']}x{summary['seqlen']} tokens "
          f"in {summary['calibration_seconds']:.1f} s (total {summary['seconds']:.1f} s), "
          f"{_mib(summary['bytes_out'])} written{extra}")
    _print_skipped(summary.get("skipped", []), args.verbose)
    return 0


def _cmd_compress(args) -> int:
    if args.spqr or args.algorithm != "rtn":
        return _cmd_compress_calibrated(args)
    if args.rotate:
        require("torch", f"ctcodec compress --rotate {args.rotate}")
    t0 = time.perf_counter()
    summary = compress_checkpoint(
        args.model_dir,
        args.out_dir,
        format=args.format,
        scheme=args.scheme,
        group_size=args.group_size,
        recipe=args.recipe,
        sparsity=args.sparsity,
        targets=args.targets,
        ignore=args.ignore,
        sparsity_structure=args.sparsity_structure,
        progress=not args.quiet,
        overwrite=args.overwrite,
        cluster=args.cluster,
        rotate=args.rotate,
        online_rotation=args.online_rotation,
    )
    dt = time.perf_counter() - t0
    print(
        f"compressed {summary['compressed_tensors']} of {summary['tensors']} tensors: "
        f"{_mib(summary['bytes_in'])} -> {_mib(summary['bytes_out'])} "
        f"(ratio {summary['bytes_in'] / max(summary['bytes_out'], 1):.2f}x"
        + ("" if args.scheme or args.recipe else f", global sparsity {summary['global_sparsity']:.1%}")
        + f") in {dt:.2f} s ({summary['bytes_in'] / 2**20 / max(dt, 1e-9):,.0f} MiB/s)"
    )
    _print_skipped(summary.get("skipped", []), args.verbose)
    _print_resumed(summary)
    return 0


def _cmd_decompress(args) -> int:
    t0 = time.perf_counter()
    if compressed_tensor_count(args.model_dir) == 0:
        if not args.copy:
            raise CodecError(f"{args.model_dir}: holds nothing compressed, so there is nothing to decompress "
                             "(add --copy to copy it anyway)")
        print(f"{args.model_dir}: holds nothing compressed; copying it as asked (--copy)")
    summary = decompress_checkpoint(args.model_dir, args.out_dir, progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {summary['tensors']} dense tensors to {args.out_dir} in {time.perf_counter() - t0:.2f} s")
    if summary["online_transforms"]:
        print("note: this model has online transforms (kept in config.json as transform_config): it computes its "
              "function only where they are applied (ctcodec eval, ctcodec.evaluate.load_model), not in plain "
              "transformers", file=sys.stderr)
    _print_resumed(summary)
    return 0


def _cmd_inspect(args) -> int:
    report = inspect_checkpoint(args.path)
    print(f"format: {report['format']}")
    if not args.summary:
        print(f"{'tensor':60} {'dtype':6} {'shape':>18} {'sparsity':>9} {'bits/param':>10} {'stored':>12}")
        for r in report["tensors"]:
            sp = "" if r["sparsity"] is None else f"{r['sparsity']:.1%}"
            shape = "x".join(map(str, r["shape"])) or "scalar"
            print(f"{r['name'][:60]:60} {r['dtype']:6} {shape:>18} {sp:>9} {r['bits_per_param']:>10.3f} "
                  f"{_mib(r['stored_bytes']):>12}")
    print(
        f"dense {_mib(report['dense_bytes'])}, stored {_mib(report['stored_bytes'])}, "
        f"ratio {report['ratio']:.2f}x, sparsity of compressed weights {report['compressed_sparsity']:.1%}"
    )
    if report["bits_per_param"] is not None:
        print(f"bits/param: {report['bits_per_param']:.3f} over compressed weights, "
              f"{report['bits_per_param_all_weights']:.3f} over all weight matrices")
    return 0


def _cmd_convert_spqr(args) -> int:
    require("torch", "ctcodec convert-spqr", "torch")
    from .spqr_legacy import convert_legacy

    s = convert_legacy(args.legacy_model_path, args.base_model, args.out_dir, outlier_layout=args.outlier_layout,
                       overwrite=args.overwrite)
    print(f"converted {s['layers']} layers: {s['average_bits']:.3f} average bits, "
          f"{s['outlier_fraction']:.3%} outliers")
    return 0


def _cmd_convert_gptq(args) -> int:
    from .gptq import convert_gptq

    s = convert_gptq(args.gptq_dir, args.out_dir, overwrite=args.overwrite)
    kept = f", g_idx kept in {s['g_idx_kept']} (compressed-tensors 0.14-0.18 read it)" if s["g_idx_kept"] else ""
    print(f"converted {s['modules']} GPTQ modules ({s['settings']['bits']}-bit) to pack-quantized{kept}")
    return 0


def _cmd_eval(args) -> int:
    require("torch", "ctcodec eval")
    for path in (args.model, args.reference):
        if path is not None and not os.path.exists(path):
            raise CodecError(f"{path}: does not exist")
    from .calibrate.texts import load_text
    from .evaluate import embedding_similarity, load_model, perplexity, sentences

    text = load_text(args.text)
    model, tokenizer = load_model(args.model)
    if hasattr(model, "lm_head") or model.config.architectures and "CausalLM" in model.config.architectures[0]:
        print(f"perplexity {perplexity(model, tokenizer, text, args.seqlen):.4f} "
              f"({args.text}, windows of {args.seqlen} tokens)")
        return 0
    if not args.reference:
        raise CodecError("an encoder model is scored against a reference model: pass --reference DIR")
    reference, _ = load_model(args.reference)
    r = embedding_similarity(reference, model, tokenizer, sentences(text))
    print(f"embedding cosine to reference: mean {r['mean_cosine']:.5f}, min {r['min_cosine']:.5f} "
          f"over {r['sentences']} sentences")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctcodec", description="Compress and decompress compressed-tensors checkpoints.")
    p.add_argument("--version", action="version", version=f"ctcodec {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="compress a model folder")
    c.add_argument("model_dir")
    c.add_argument("out_dir")
    c.add_argument("--format", default=None,
                   help="output format: sparse-bitmask (default without --scheme), or force a quantized one")
    c.add_argument("--scheme", default=None,
                   help="quantize with a compressed-tensors preset: W4A16, W4A16_ASYM, W8A16, W8A8, FP8_DYNAMIC, "
                        "FP8_BLOCK, NVFP4A16, W2A16..W8A16, ...")
    c.add_argument("--group-size", type=int, default=None, help="group size for group schemes (-1: per channel)")
    c.add_argument("--recipe", default=None, help="JSON file with config_groups (per-layer schemes) and ignore")
    c.add_argument("--sparsity", default=None, help="magnitude-prune first: 2:4 or a fraction such as 0.5")
    c.add_argument("--targets", nargs="+", default=None, help="module names, re:regex, or Linear (default Linear)")
    c.add_argument("--ignore", nargs="*", default=None, help="modules to leave dense (default lm_head)")
    c.add_argument(
        "--sparsity-structure",
        default=None,
        help="recorded in config.json (default: 2:4 when every compressed weight is 2:4, else unstructured)",
    )
    c.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    c.add_argument("--cluster", default=None, metavar="auto|ray://HOST:PORT|local:N",
                   help="run on a Ray cluster (pip install 'ctcodec[cluster]'); the output is the same")
    c.add_argument("--rotate", choices=["hadamard", "random-hadamard"], default=None,
                   help="rotate a Llama-family model first (SpinQuant R1 + R2 folded into the weights, recorded as "
                        "transform_config): easier to quantize, the same function; needs torch")
    c.add_argument("--online-rotation", action="store_true",
                   help="with --rotate, also turn down_proj's input by a Hadamard at run time (SpinQuant R4, an "
                        "online transform: compressed-tensors' apply_transform_config and ctcodec's loaders "
                        "apply it, transformers 4.57 does not)")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.add_argument("-v", "--verbose", action="store_true", help="list every weight left dense, with the reason")
    cal = c.add_argument_group("calibrated compression (needs torch and transformers)")
    cal.add_argument("--algorithm", choices=["rtn", "gptq", "sparsegpt"], default="rtn",
                     help="rtn: round to nearest (default); gptq: with --scheme; sparsegpt: with --sparsity "
                          "(and optionally --scheme, quantized in the same pass)")
    cal.add_argument("--calib", default="python-reference",
                     help="calibration text file (default: the Python Language Reference shipped with CPython)")
    cal.add_argument("--nsamples", type=int, default=128, help="calibration windows (default 128)")
    cal.add_argument("--seqlen", type=int, default=128, help="tokens per calibration window (default 128)")
    cal.add_argument("--percdamp", type=float, default=None,
                     help="Hessian damping, as a fraction of its mean diagonal (default 0.01; SpQR 1.0)")
    cal.add_argument("--observer", choices=["minmax", "mse"], default="minmax",
                     help="GPTQ's group ranges: minmax (default) or mse (each row's range shrunk where that "
                          "lowers its error)")
    cal.add_argument("--permutation-order", "--act-order", dest="permutation_order", nargs="?", const="act_order",
                     choices=["identity", "act_order"], default=None,
                     help="column order: act_order (default for SpQR) or identity (default for GPTQ)")
    sq = c.add_argument_group("SpQR")
    sq.add_argument("--spqr", action="store_true", help="compress with SpQR")
    sq.add_argument("--wbits", type=int, default=3)
    sq.add_argument("--groupsize", type=int, default=16, help="input columns per first-order group (beta2)")
    sq.add_argument("--qq-scale-bits", type=int, default=3)
    sq.add_argument("--qq-zero-bits", type=int, default=3)
    sq.add_argument("--qq-groupsize", type=int, default=16, help="rows per second-order group (beta1)")
    sq.add_argument("--outlier-threshold", type=float, default=0.2, help="relative outlier threshold (inf: none)")
    sq.add_argument("--simplified-outliers", action="store_true", help="skip leave-one-out outlier pre-detection")
    sq.add_argument("--outlier-layout", choices=["csr", "ptcsr"], default="csr")
    c.set_defaults(run=_cmd_compress)

    d = sub.add_parser("decompress", help="write the dense form of a compressed model folder")
    d.add_argument("model_dir")
    d.add_argument("out_dir")
    d.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    d.add_argument("--copy", action="store_true", help="copy the folder even when nothing in it is compressed")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.set_defaults(run=_cmd_decompress)

    v = sub.add_parser("convert-spqr", help="convert the original SpQR's saved layers (main.py --save)")
    v.add_argument("--legacy-model-path", required=True, help="the folder SpQR's --save wrote")
    v.add_argument("--base-model", required=True, help="the dense model folder SpQR quantized")
    v.add_argument("out_dir")
    v.add_argument("--outlier-layout", choices=["csr", "ptcsr"], default="csr")
    v.add_argument("--overwrite", action="store_true")
    v.set_defaults(run=_cmd_convert_spqr)

    g = sub.add_parser("convert-gptq", help="convert a GPTQ model folder (AutoGPTQ, GPTQModel) to pack-quantized")
    g.add_argument("gptq_dir")
    g.add_argument("out_dir")
    g.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    g.set_defaults(run=_cmd_convert_gptq)

    e = sub.add_parser("eval", help="perplexity on a text (causal LMs) or embedding similarity (encoders)")
    e.add_argument("model", help="dense or compressed model folder")
    e.add_argument("--text", default="gpl-3", help="evaluation text file (default: the GNU GPL v3 text)")
    e.add_argument("--seqlen", type=int, default=512)
    e.add_argument("--reference", default=None, help="dense reference model for encoders")
    e.set_defaults(run=_cmd_eval)

    i = sub.add_parser("inspect", help="formats, per-tensor sparsity, sizes and ratio")
    i.add_argument("path")
    i.add_argument("--summary", action="store_true", help="totals only")
    i.set_defaults(run=_cmd_inspect)
    return p


def _exit_on_sigterm(signum, _frame) -> None:
    # Unwinds like Ctrl-C: a run keeps its finished shards for a rerun and removes its
    # temporary files (the handler runs once the current native call has returned).
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return args.run(args)
    except OutputNotEmpty as e:
        print(f"ctcodec: error: {e.folder}: output folder is not empty (add --overwrite to replace the checkpoint "
              "in it)", file=sys.stderr)
    except (CodecError, MissingDependency, OSError) as e:
        print(f"ctcodec: error: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("ctcodec: interrupted; finished shards are kept: run the same command again to resume",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
