"""y = x @ W.T for a pack-quantized W (W4A16 / W8A16): picks the path by M and launches it.

- M == 1: GEMV, memory-bound: on CUDA cores (gemv.py), or for fp16 x on tensor cores
  (gemv_tc.py) when the tuner times that faster.
- 2 <= M <= 32: split-K tensor-core kernel with 16/32-row tiles (gemm.py), or where they
  take the weight and x and the tuner times them faster, the tensor-core GEMV over row
  tiles or the bit-unpacked GEMM (gemm_tc.py).
- M > 32: tiled tensor-core GEMM (gemm.py; it too splits K when its tiles cannot fill
  the GPU), or, when the tuner times them faster, the same with the weight bit-unpacked in
  registers (gemm_tc.py), or the weight decoded whole and torch.matmul.
All accumulate in fp32 and round the output once to x's dtype.
"""

from __future__ import annotations

import torch
import triton

from ._runtime import interpreting, on_device, require_runtime, sm_count
from .decode import dequantize
from .gemm import dot_kernel
from .gemm_tc import gemm_tc_kernel
from .gemv import gemv_kernel
from .gemv_tc import gemv_tc_kernel
from .repack import PreparedWeight, prepare
from .split_sum import semaphores
from .tuning import Config, tuner_for
from .word_packing import codes_per_word

PATHS = ("gemv", "splitk", "tiled")
SPLIT_K_MAX_M = 32


def choose_path(m: int) -> str:
    return "gemv" if m == 1 else "splitk" if m <= SPLIT_K_MAX_M else "tiled"


def _optional(t: torch.Tensor | None, dummy: torch.Tensor) -> torch.Tensor:
    # Absent tensors are never read (their constexpr flag is off); any pointer will do.
    return dummy if t is None else t


def _launch(path: str, x2: torch.Tensor, w: PreparedWeight, y: torch.Tensor, cfg: Config, interp: bool) -> None:
    """The kernel a config names: its kind first (the tensor-core GEMV and the bit-unpacked
    GEMM serve several paths), else the path's own kernel."""
    if cfg.tensor_cores:  # exact (q - zp) products, scales per group partial sum, as the GEMV
        _launch_gemv_tc(x2, w, y, cfg, interp)
    elif cfg.bit_unpack:
        _launch_gemm_tc(x2, w, y, cfg, interp)
    elif path == "gemv":
        _launch_gemv(x2, w, y, cfg, interp)
    else:
        _launch_dot(x2, w, y, cfg, interp)


def _launch_gemv(x2: torch.Tensor, w: PreparedWeight, y: torch.Tensor, cfg: Config, interp: bool) -> None:
    grid = (triton.cdiv(w.n, cfg.block_n),)
    gemv_kernel[grid](
        x2, w.qweight, w.scales, _optional(w.zeros, w.qweight), _optional(w.perm, w.qweight), y,
        w.n, w.k, w.blocks, w.qweight.stride(0),
        BITS=w.num_bits, GROUP=w.group, RUN=w.run, HAS_ZP=w.zeros is not None, HAS_PERM=w.perm is not None,
        BLOCK_N=cfg.block_n, UNROLL=cfg.unroll, INTERPRET=interp,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def _launch_gemv_tc(x2: torch.Tensor, w: PreparedWeight, y: torch.Tensor, cfg: Config, interp: bool) -> None:
    """The tensor-core GEMV (gemv_tc.py) for any M: one B column per (row of x, scale group),
    so at most 32 columns (more spill on sm_90): fewer rows per tile when groups are small."""
    if not tensor_core_gemv_takes(x2.dtype, w.num_bits):
        raise ValueError(f"the tensor-core GEMV takes float16 x, or bfloat16 x with 4-bit weights; "
                         f"got {x2.dtype} x with {w.num_bits}-bit weights")
    m = x2.shape[0]
    groups = codes_per_word(w.num_bits) // w.run
    # Rows per tile: one for a single row (that kernel variant reads row 0 only), else a
    # power of two from 2 up to the config's, with at most 32 B columns.
    block_m = 1 if m == 1 else max(2, 1 << (min(cfg.block_m, 32 // groups).bit_length() - 1))
    n_tiles, m_tiles = triton.cdiv(w.n, cfg.block_n), triton.cdiv(m, block_m)
    if m_tiles > 65535:  # CUDA's grid limit on z
        raise ValueError(f"the tensor-core GEMV takes at most {65535 * block_m} rows of x here, got {m}")
    splits, per = split_count(n_tiles * m_tiles, w.blocks, sm_count(y.device.index or 0))
    part, sem = _split_buffers(y, splits, n_tiles * m_tiles)
    gemv_tc_kernel[(n_tiles, splits, m_tiles)](
        x2, w.qweight, w.scales, _optional(w.zeros, w.qweight), _optional(w.perm, w.qweight), y, part, sem,
        m, w.n, w.k, w.blocks, per, splits, x2.stride(0), w.qweight.stride(0), w.n, m * w.n,
        BITS=w.num_bits, GROUP=w.group, HAS_ZP=w.zeros is not None, HAS_PERM=w.perm is not None,
        BLOCK_M=block_m, BLOCK_N=cfg.block_n, BF16=x2.dtype == torch.bfloat16, PARTIAL=splits > 1,
        INTERPRET=interp, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def tensor_core_gemv_takes(dtype: torch.dtype, bits: int) -> bool:
    """fp16 x, or bf16 x with 4-bit codes (bf16's 7 fraction bits hold 128 + q only for q < 128)."""
    return dtype == torch.float16 or (dtype == torch.bfloat16 and bits == 4)


def unpacked_gemm_takes(dtype: torch.dtype, w: PreparedWeight) -> bool:
    """Whether the bit-unpacked GEMM (gemm_tc.py) takes x and the weight: as the tensor-core
    GEMV, and scales in x's dtype (its product is one rounding in that dtype)."""
    return tensor_core_gemv_takes(dtype, w.num_bits) and w.scales.dtype == dtype


def _in_k_order(x2: torch.Tensor, w: PreparedWeight) -> torch.Tensor:
    """x's columns in the weight's k order: one gather, or a zero column appended first
    when the k order has padding (K not a multiple of the block, padded act-order groups)."""
    padded = w.k_padded > w.k  # perm names each of the k columns once, so padding is the rest
    return (torch.nn.functional.pad(x2, (0, 1)) if padded else x2).index_select(1, w.x_order_index())


def _launch_gemm_tc(x2: torch.Tensor, w: PreparedWeight, y: torch.Tensor, cfg: Config, interp: bool) -> None:
    """The bit-unpacked tiled GEMM (gemm_tc.py) over x permuted once into the weight's k order."""
    if not unpacked_gemm_takes(x2.dtype, w):
        raise ValueError(f"the bit-unpacked GEMM takes float16 x, or bfloat16 x with 4-bit weights, with scales "
                         f"of x's dtype; got {x2.dtype} x, {w.num_bits}-bit weights, {w.scales.dtype} scales")
    if cfg.block_m < 16 or cfg.block_n < 16:
        raise ValueError(f"the bit-unpacked GEMM's tiles are at least 16 x 16 (tl.dot's minimum): {cfg}")
    m = x2.shape[0]
    xk = _in_k_order(x2, w)
    tiles = triton.cdiv(m, cfg.block_m) * triton.cdiv(w.n, cfg.block_n)
    splits, per, part, sem = _tile_splits(y, tiles, w.blocks, cfg.split)
    gemm_tc_kernel[(tiles, splits)](
        xk, w.qweight, w.scales, _optional(w.zeros, w.qweight), y, part, sem,
        m, w.n, w.blocks, per, splits, xk.stride(0), w.qweight.stride(0), w.n, m * w.n,
        BITS=w.num_bits, GROUP=w.group, HAS_ZP=w.zeros is not None, BF16=x2.dtype == torch.bfloat16,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, GROUP_M=cfg.group_m, PARTIAL=splits > 1,
        INTERPRET=interp, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def _split_buffers(y: torch.Tensor, splits: int, tiles: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A split kernel's fp32 partials [splits, *y.shape] and its per-tile counters
    (split_sum.py); y itself and no counters when K is not split (never read then)."""
    if splits == 1:
        return y, y
    part = torch.empty(splits, *y.shape, dtype=torch.float32, device=y.device)
    return part, semaphores(y.device, tiles)


def _tile_splits(y: torch.Tensor, tiles: int, blocks: int, split: bool):
    """(splits, blocks per split, partials, counters) of a tiled launch; K unsplit unless `split`."""
    splits, per = split_count(tiles, blocks, sm_count(y.device.index or 0)) if split else (1, blocks)
    return (splits, per, *_split_buffers(y, splits, tiles))


def split_count(tiles: int, blocks: int, sms: int) -> tuple[int, int]:
    """(splits, blocks per split): about two programs per SM when output tiles are fewer
    than SMs, never an empty split."""
    if tiles >= sms:
        return 1, blocks
    want = max(1, min(-(-2 * sms // tiles), blocks))
    per = -(-blocks // want)
    return -(-blocks // per), per


def half_dequant(x: torch.Tensor, w: PreparedWeight) -> bool:
    """Whether the tensor-core paths dequantize in fp16: for fp16 x and fp16 scales, where
    fp16 arithmetic gives the decoded weight bit for bit (dequant_math.decoded_fp16)."""
    return x.dtype == torch.float16 and w.scales.dtype == torch.float16


def _launch_dot(x2: torch.Tensor, w: PreparedWeight, y: torch.Tensor, cfg: Config, interp: bool) -> None:
    if cfg.dense:  # the decoded weight (ctcodec's decode, bit for bit) times x by torch
        torch.matmul(x2, dequantize(w, x2.dtype).t(), out=y)
        return
    m = x2.shape[0]
    tiles = triton.cdiv(m, cfg.block_m) * triton.cdiv(w.n, cfg.block_n)
    splits, per, part, sem = _tile_splits(y, tiles, w.blocks, cfg.split)
    dot_kernel[(tiles, splits)](
        x2, w.qweight, w.scales, _optional(w.zeros, w.qweight), _optional(w.perm, w.qweight), y, part, sem,
        m, w.n, w.k, w.blocks, per, splits, x2.stride(0), w.qweight.stride(0), w.n, m * w.n,
        BITS=w.num_bits, GROUP=w.group, RUN=w.run, HAS_ZP=w.zeros is not None, HAS_PERM=w.perm is not None,
        HALF=half_dequant(x2, w), WHOLE_BLOCK=cfg.whole_block, SWAP_AB=cfg.swap_ab,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, GROUP_M=cfg.group_m, PARTIAL=splits > 1,
        INTERPRET=interp, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )


def _tuning_key(path: str, m: int, w: PreparedWeight, x: torch.Tensor) -> tuple:
    return (path, 1 << (m - 1).bit_length(), w.shape_key, x.dtype, x.device.index)


def quant_matmul(x: torch.Tensor, w: PreparedWeight, *, path: str | None = None,
                 config: Config | None = None) -> torch.Tensor:
    """y = x @ W.T for x [..., k] in fp16 or bf16; returns [..., n] in x's dtype.

    `path` ("gemv", "splitk", "tiled") and `config` force a kernel and its tile sizes
    (tests and benchmarks); by default the path follows M and the config is tuned once
    per shape. The first call for a shape times configs: make it outside CUDA graph
    capture (during capture the first config of the list is used)."""
    if x.dtype not in (torch.float16, torch.bfloat16):
        raise ValueError(f"x must be float16 or bfloat16, got {x.dtype}")
    if x.shape[-1] != w.k:
        raise ValueError(f"x has {x.shape[-1]} columns, the weight {w.k}")
    if x.device != w.device:
        raise ValueError(f"x is on {x.device}, the weight on {w.device}")
    interp = interpreting()  # read once: an environment lookup costs about a microsecond
    require_runtime(x, interp=interp)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, w.k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    y = torch.empty(m, w.n, dtype=x.dtype, device=x.device)
    if m == 0:
        return y.reshape(*lead, w.n)
    path = path or choose_path(m)
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r} (one of {PATHS})")
    if path == "gemv" and m != 1:
        raise ValueError(f"the gemv path takes one row of x, got {m}")
    tuner = None if config else tuner_for(path, tensor_core_gemv_takes(x.dtype, w.num_bits),
                                          unpacked_gemm_takes(x.dtype, w))
    # Kernel offsets are 32-bit: rows go in chunks whose x and y stay under 2**31 elements
    # (x in the bit-unpacked GEMM's k order has k_padded columns, k + 1 before the gather).
    step = max(1, (2**31 - 1) // max(w.k_padded + 1, w.n))
    with on_device(x, interp=interp):
        for r0 in range(0, m, step):
            xs, ys = (x2, y) if m <= step else (x2[r0:r0 + step], y[r0:r0 + step])
            cfg = config or tuner.pick(_tuning_key(path, xs.shape[0], w, xs),
                                       lambda c: _launch(path, xs, w, ys, c, interp))
            _launch(path, xs, w, ys, cfg, interp)
    return y.reshape(*lead, w.n)


def dequant_matmul(
    x: torch.Tensor,
    weight_packed: torch.Tensor,
    weight_scale: torch.Tensor,
    num_bits: int,
    group_size: int | None,
    n: int,
    k: int,
    *,
    weight_zero_point: torch.Tensor | None = None,
    weight_g_idx: torch.Tensor | None = None,
) -> torch.Tensor:
    """One call from the checkpoint's tensors: `prepare` then `quant_matmul`. The repack
    runs every time; a model should call `prepare` once per weight and keep the result."""
    w = prepare(weight_packed, weight_scale, num_bits, group_size, n, k,
                weight_zero_point=weight_zero_point, weight_g_idx=weight_g_idx)
    return quant_matmul(x, w)
