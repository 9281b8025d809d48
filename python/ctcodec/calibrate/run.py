"""`compress_calibrated`: GPTQ, SparseGPT (optionally stacked with GPTQ) or SpQR over a
model folder, calibrated on real text, written as a compressed checkpoint."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Sequence

import torch

from .. import _native, quant_plan
from ..checkpoint import DEFAULT_IGNORE, DEFAULT_TARGETS, compress_checkpoint
from ..config_models import serialise_quantization_config
from ..errors import CodecError
from ..model_folder import (CONFIG_NAME, check_input_folder, copy_other_files, output_folder, read_json, shard_paths,
                            write_config, write_index)
from ..reading import refuse_compressed
from ..spqr_format import SpqrParams, pack as spqr_pack
from ..targets import is_target
from . import engine, export, gptq, spqr
from .int_quantizer import IntQuantizer
from .layerwise import LayerwiseModel
from .texts import calibration_windows, load_text

ALGORITHMS = ("gptq", "sparsegpt", "spqr")


def _parse_sparsity(sparsity) -> tuple[float | None, int, int]:
    if sparsity is None:
        return None, 0, 0
    s = str(sparsity).strip()
    if ":" in s:
        n, m = (int(x) for x in s.split(":"))
        if not 0 < n < m:
            raise CodecError(f"sparsity {s!r}: need N:M with 0 < N < M (keep N of every M)")
        return None, m - n, m
    frac = float(s)
    if not 0.0 < frac < 1.0:
        raise CodecError(f"sparsity {frac} is not a fraction in (0, 1)")
    return frac, 0, 0


class CalibratedSolver:
    """Solves one weight with the run's algorithm (`solve`, pure: it may run on a cluster
    worker) and keeps what the checkpoint needs (`record`, on the driver, in module order)."""

    def __init__(self, algorithm, quantizers, spqr_params, percdamp, act_order, actorder, frac, prune_n, prune_m,
                 outlier_threshold, simplified_outliers, dtype):
        self.algorithm, self.quantizers, self.spqr_params = algorithm, quantizers, spqr_params
        self.percdamp, self.act_order, self.actorder = percdamp, act_order, actorder
        self.frac, self.prune_n, self.prune_m = frac, prune_n, prune_m
        self.outlier_threshold, self.simplified_outliers, self.dtype = outlier_threshold, simplified_outliers, dtype
        self.replaced: dict[str, list] = {}
        self.dense: dict[str, torch.Tensor] = {}
        self.counts = {"weights": 0, "params": 0, "outliers": 0, "pruned": 0}

    def solve(self, module: str, weight: torch.Tensor, H: torch.Tensor) -> tuple[torch.Tensor, dict]:
        name = f"{module}.weight"
        done = {"params": weight.numel(), "outliers": 0, "pruned": 0}
        if self.algorithm == "spqr":
            p = self.spqr_params
            r = spqr.solve(weight, H, p, percdamp=self.percdamp, outlier_threshold=self.outlier_threshold,
                           act_order=self.act_order, simplified_outliers=self.simplified_outliers)
            done["outliers"] = len(r.outlier_rows)
            done["replaced"] = spqr_pack(p, module, r.codes.numpy(), r.scale_codes.numpy(), r.zero_codes.numpy(),
                                         r.second_order.numpy(), r.perm.numpy(), r.outlier_rows.numpy(),
                                         r.outlier_cols.numpy(), r.outlier_values.numpy())
            return r.weight, done
        q = self.quantizers[name]
        r = gptq.solve(weight, H, q, percdamp=self.percdamp, act_order=bool(self.act_order),
                       static_groups=self.actorder == "weight", sparsity=self.frac,
                       prune_n=self.prune_n, prune_m=self.prune_m)
        done["pruned"] = r.pruned
        if q is None:
            done["dense"] = r.weight.to(self.dtype)
        else:
            done["replaced"] = export.pack_quantized(module, r, q.num_bits, q.symmetric, q.dtype)
        return r.weight, done

    def __getstate__(self) -> dict:
        # Workers need the settings, not what the driver has recorded so far.
        return {**self.__dict__, "replaced": {}, "dense": {}}

    def record(self, module: str, done: dict) -> None:
        name = f"{module}.weight"
        self.counts["weights"] += 1
        for key in ("params", "outliers", "pruned"):
            self.counts[key] += done[key]
        if "replaced" in done:
            self.replaced[name] = done["replaced"]
        if "dense" in done:
            self.dense[name] = done["dense"]


def compress_calibrated(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    *,
    algorithm: str = "gptq",
    scheme: str | None = None,
    group_size: int | None = None,
    sparsity: str | float | None = None,
    spqr_params: SpqrParams | None = None,
    calib: str | os.PathLike = "python-reference",
    nsamples: int = 128,
    seqlen: int = 128,
    percdamp: float | None = None,
    act_order: bool | None = None,
    actorder: str = "weight",
    outlier_threshold: float = 0.2,
    simplified_outliers: bool = False,
    targets: Sequence[str] | None = None,
    ignore: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = False,
    overwrite: bool = False,
    cluster: str | None = None,
    rotate: str | None = None,
    online_rotation: bool = False,
    observer: str = "minmax",
) -> dict:
    """Compresses a model folder with a calibrated algorithm (see the README):

    - `gptq`: `scheme` (an integer pack-quantized preset such as W4A16, W4A16_ASYM,
      W8A16; `group_size` overrides) with GPTQ error compensation. With `act_order` and
      groups, `actorder="weight"` keeps the original column groups (what
      compressed-tensors >= 0.20 accepts) and `actorder="group"` makes groups in
      activation order and writes `weight_g_idx` (compressed-tensors <= 0.19, vLLM).
    - `sparsegpt`: prunes to `sparsity` ("2:4" or a fraction) with SparseGPT; with a
      `scheme` the kept weights are GPTQ-quantized in the same pass.
    - `spqr`: SpQR with `spqr_params` (bits, beta1, beta2, statistic bits).

    The model is calibrated one layer at a time on `nsamples` windows of `seqlen` tokens
    of `calib` (a text file, or "python-reference"); returns a summary with timings.
    With `cluster` ("auto", "ray://HOST:PORT" or "local:N") the batches and the solves
    run on a Ray cluster's workers; the output is bit-identical to a run without.
    With `rotate` ("hadamard" or "random-hadamard", Llama-family models) the model is
    rotated first (`ctcodec.rotation`) and calibrated in its rotated basis;
    `online_rotation` adds R4 (down_proj's input turned online). `observer`
    picks GPTQ's group ranges: "minmax", or "mse" (each row's range shrunk by up to 20%
    where that lowers its quantization error, as compressed-tensors' MSE observer)."""
    if online_rotation and rotate is None:
        raise CodecError("online_rotation goes with rotate (hadamard or random-hadamard)")
    if rotate is not None:
        from ..rotation import compress_rotated

        return compress_rotated(compress_calibrated, src_dir, dst_dir, rotate, online=online_rotation, algorithm=algorithm, scheme=scheme,
                                group_size=group_size, sparsity=sparsity, spqr_params=spqr_params, calib=calib,
                                nsamples=nsamples, seqlen=seqlen, percdamp=percdamp, act_order=act_order,
                                actorder=actorder, outlier_threshold=outlier_threshold,
                                simplified_outliers=simplified_outliers, targets=targets, ignore=ignore, seed=seed,
                                progress=progress, overwrite=overwrite, cluster=cluster, observer=observer)
    t_start = time.perf_counter()
    if algorithm not in ALGORITHMS:
        raise CodecError(f"algorithm must be one of {ALGORITHMS}, not {algorithm!r}")
    src, dst = Path(src_dir), Path(dst_dir)
    check_input_folder(src)
    refuse_compressed(src)
    targets = list(DEFAULT_TARGETS if targets is None else targets)
    ignore = list(DEFAULT_IGNORE if ignore is None else ignore)
    frac, prune_n, prune_m = _parse_sparsity(sparsity)
    pruning = frac is not None or prune_n > 0
    if algorithm == "sparsegpt" and not pruning:
        raise CodecError("sparsegpt needs a sparsity (2:4 or a fraction)")
    if algorithm != "sparsegpt" and pruning:
        raise CodecError("pruning is done by --algorithm sparsegpt")
    if prune_n and act_order:
        # N:M groups are consecutive input columns; in activation order they would not be.
        raise CodecError(f"{sparsity} sparsity cannot be combined with activation order")
    if observer not in ("minmax", "mse"):
        raise CodecError(f"observer must be minmax or mse, not {observer!r}")
    if actorder not in ("weight", "group"):
        raise CodecError(f"actorder must be weight or group, not {actorder!r}")
    if algorithm == "spqr" and scheme is not None:
        raise CodecError("SpQR has its own parameters; give no scheme")
    if algorithm == "gptq" and scheme is None:
        raise CodecError("gptq needs a scheme (e.g. W4A16)")

    shards = shard_paths(src)
    headers = {s: _native.read_header(os.fspath(s))[1] for s in shards}
    plan = None
    quantizers: dict[str, IntQuantizer] = {}
    if scheme is not None:
        plan = quant_plan.plan(scheme, group_size, None, targets, ignore, None)
        for tensors in headers.values():
            dtypes = {n: d for n, d, _s in tensors}
            for name, spec in plan.encodings(tensors).items():
                if spec.format != "pack-quantized" or spec.type != "int" or spec.strategy not in ("group", "channel"):
                    raise CodecError(f"{algorithm} writes integer pack-quantized schemes (W4A16, W8A16, ...), "
                                     f"not {scheme} ({spec.format}, {spec.type} {spec.strategy})")
                quantizers[name] = IntQuantizer(spec.num_bits, spec.symmetric,
                                                spec.group_size if spec.strategy == "group" else None,
                                                getattr(torch, {"BF16": "bfloat16", "F16": "float16"}.get(dtypes[name], "float32")),
                                                observer)
        plan.refuse_if_nothing_fits()
    else:
        for tensors in headers.values():
            for name, dtype, shape in tensors:
                if name.endswith(".weight") and len(shape) == 2 and dtype in ("BF16", "F16", "F32") \
                        and is_target(name[: -len(".weight")], shape, targets, ignore):
                    quantizers[name] = None
    if not quantizers:
        raise CodecError(f"{src}: no weight matches the targets")

    lw = LayerwiseModel(src)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(src)
    windows = calibration_windows(tokenizer, load_text(calib), nsamples, seqlen, seed)
    if act_order is None:
        act_order = algorithm == "spqr"
    if percdamp is None:
        percdamp = 1.0 if algorithm == "spqr" else 0.01
    if algorithm == "spqr":
        # The format decodes to the model's own dtype.
        model_dtype = str(lw.dtype).replace("torch.", "")
        spqr_params = SpqrParams(**{**(spqr_params or SpqrParams()).__dict__, "dtype": model_dtype})

    solver = CalibratedSolver(algorithm, quantizers, spqr_params, percdamp, act_order, actorder, frac, prune_n,
                              prune_m, outlier_threshold, simplified_outliers, lw.dtype)
    replaced, dense, counts = solver.replaced, solver.dense, solver.counts

    log = print if progress else (lambda s: None)
    t0 = time.perf_counter()
    runner_factory = None
    if cluster is not None:
        from ..cluster import calibration_runner

        runner_factory = calibration_runner(cluster, src)
    phases = engine.calibrate(lw, windows, lambda module, _shape: f"{module}.weight" in quantizers, solver, log,
                              runner_factory)
    calib_seconds = time.perf_counter() - t0
    # Weights outside the repeated layers (a pooler, a head) see no calibration pass:
    # they stay dense and are listed, as compressed-tensors lists what it ignores.
    outside = [n[: -len(".weight")] for n in sorted(set(quantizers) - set(replaced) - set(dense))]
    skipped = [{"module": m, "reason": "outside the model's repeated layers; not calibrated"} for m in outside]
    ignore = list(dict.fromkeys(ignore + outside))
    if plan is not None:
        plan.skipped.extend(skipped)

    with output_folder(src, dst, overwrite):
        summary = {"algorithm": algorithm, "calibration_seconds": calib_seconds, "nsamples": nsamples,
                   "seqlen": seqlen, "weights": counts["weights"], "phases": phases}
        config = read_json(src / CONFIG_NAME)
        if algorithm == "sparsegpt" and plan is None:
            # Pruned only: write the pruned dense model, then store it losslessly sparse.
            with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
                tmp = Path(tmp)
                export.write_checkpoint(src, tmp, {}, dense)
                write_index(src, tmp, shards)
                write_config(tmp, config, sort_keys=False)
                copy_other_files(src, tmp, shards)
                fmt = "sparse-24-bitmask" if (prune_n, prune_m) == (2, 4) else "sparse-bitmask"
                inner = compress_checkpoint(tmp, dst, fmt, targets=targets, ignore=ignore, overwrite=True)
            summary.update(format=fmt, bytes_out=inner["bytes_out"], pruned_fraction=counts["pruned"] / counts["params"])
        else:
            stats = export.write_checkpoint(src, dst, replaced, {})
            write_index(src, dst, shards)
            if algorithm == "spqr":
                share = counts["outliers"] / counts["params"]
                config["quantization_config"] = spqr_params.config(
                    ignore=ignore, outlier_fraction=share, average_bits=spqr_params.average_bits(share),
                    calibration={"algorithm": "spqr", "nsamples": nsamples, "seqlen": seqlen, "percdamp": percdamp,
                                 "outlier_threshold": outlier_threshold, "act_order": bool(act_order),
                                 "simplified_outliers": simplified_outliers})
                summary.update(average_bits=spqr_params.average_bits(share), outlier_fraction=share, skipped=skipped)
            else:
                for g in plan.groups.values():
                    if act_order and g["weights"].get("strategy") == "group":
                        g["weights"]["actorder"] = actorder
                    g["weights"]["observer"] = observer
                config["quantization_config"] = plan.config()
                summary["skipped"] = plan.skipped
                if pruning:
                    config["quantization_config"]["sparsity_config"] = {
                        "format": "dense", "global_sparsity": counts["pruned"] / counts["params"],
                        "ignore": config["quantization_config"]["ignore"], "registry_requires_subclass": False,
                        "sparsity_structure": f"{prune_m - prune_n}:{prune_m}" if prune_n else "unstructured",
                        "targets": targets}
                    summary["pruned_fraction"] = counts["pruned"] / counts["params"]
            if config.get("transform_config"):  # online transforms of the source, as in compress_checkpoint
                config["quantization_config"]["transform_config"] = config.pop("transform_config")
            # Written through the same typed models the reader checks with.
            config["quantization_config"] = serialise_quantization_config(
                config["quantization_config"], dst / CONFIG_NAME)
            write_config(dst, config)
            copy_other_files(src, dst, shards)
            summary["bytes_out"] = sum(s["bytes_out"] for s in stats)
    summary["seconds"] = time.perf_counter() - t_start
    return summary
