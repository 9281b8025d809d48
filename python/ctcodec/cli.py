"""The `ctcodec` command line."""

from __future__ import annotations

import argparse
import sys
import time

from .checkpoint import compress_checkpoint, decompress_checkpoint
from .errors import CodecError
from .inspect import inspect_checkpoint


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def _cmd_compress(args) -> int:
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
    )
    dt = time.perf_counter() - t0
    print(
        f"compressed {summary['compressed_tensors']} of {summary['tensors']} tensors: "
        f"{_mib(summary['bytes_in'])} -> {_mib(summary['bytes_out'])} "
        f"(ratio {summary['bytes_in'] / max(summary['bytes_out'], 1):.2f}x"
        + ("" if args.scheme or args.recipe else f", global sparsity {summary['global_sparsity']:.1%}")
        + f") in {dt:.2f} s ({summary['bytes_in'] / 2**20 / max(dt, 1e-9):,.0f} MiB/s)"
    )
    for s in summary.get("skipped", []):
        print(f"left dense: {s['module']}: {s['reason']}")
    return 0


def _cmd_decompress(args) -> int:
    t0 = time.perf_counter()
    summary = decompress_checkpoint(args.model_dir, args.out_dir, progress=not args.quiet, overwrite=args.overwrite)
    print(f"wrote {summary['tensors']} dense tensors to {args.out_dir} in {time.perf_counter() - t0:.2f} s")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ctcodec", description="Compress and decompress compressed-tensors checkpoints.")
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
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(run=_cmd_compress)

    d = sub.add_parser("decompress", help="write the dense form of a compressed model folder")
    d.add_argument("model_dir")
    d.add_argument("out_dir")
    d.add_argument("--overwrite", action="store_true")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(run=_cmd_decompress)

    i = sub.add_parser("inspect", help="formats, per-tensor sparsity, sizes and ratio")
    i.add_argument("path")
    i.add_argument("--summary", action="store_true", help="totals only")
    i.set_defaults(run=_cmd_inspect)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (CodecError, FileNotFoundError) as e:
        print(f"ctcodec: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
