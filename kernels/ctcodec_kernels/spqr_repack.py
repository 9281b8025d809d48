"""The load-time repack of a ctcodec SpQR weight into the layout of the SpQR kernels
(spqr.py). Torch only (no Triton): exact, done once per weight; keep the result.

The stored format (rust/ctcodec/src/spqr/mod.rs): b-bit codes of the stored (permuted)
columns packed LSB-first along each row, straddling int32 words; per (row, group of
beta2 stored columns) a scale code and a zero code; per (tile of beta1 rows, group) four
fp16 second-order numbers; the permutation; fp16 outliers (CSR or PTCSR) that REPLACE
the dense value. Decode: s = ss·(cs − sz), z = zs·(cz − zz), w = s·(q − z) in f32.

Kernel layout (`PreparedSpqr`):

- Units. A unit is `words` int32 words holding `codes` codes of consecutive kernel
  columns (32 codes for 3, 5, 7 bits; 16 for 2, 4, 6, 8 bits with beta2 = 16; never a
  wasted bit): `per_word` = 32 // b codes sit at bits p·b of each word (no code
  straddles a word), and the `extra` codes left over are spread over the top
  32 − per_word·b bits of the unit's words (3 bits: 10 + 10 + 10 codes, and 2 codes in
  the top 2 bits of the three words). Each code is then one AND and one FADD away from
  an exact float (spqr.py), the extra codes cost a few operations per unit.
- codes int32 [Mp, words, NU]: word w of unit u of a row at [row, w, u] (planes), so a
  program reads a contiguous run of units per plane with 16-byte loads; NU (units per
  row) is padded to a multiple of 16 and the rows to Mp, a multiple of 64, with zeros
  (so the kernels' loads need no row masks).
- Kernel columns: group g of the stored columns starts at kernel column g·GP (GP: beta2
  rounded up to a divisor or a multiple of the unit, so groups never straddle a unit
  unevenly; GP = beta2 in the common cases), kernel column u·codes + c is code c of
  unit u. A unit holds `runs` = codes / GP whole groups (or lies inside one group).
- stats uint8 [Mp, runs, NU] (int16 when qs + qz > 8): the stored (cz << qs | cs) of the
  group of run r of unit u; 8 bits per group instead of the stored qs + qz.
- second_order fp16 [Mp / beta1 (rounded up), 4, runs, NU]: ss, sz, zs, zz of (tile,
  group of run r of unit u), as stored; the kernels dequantize the statistics themselves
  with the decoder's f32 operations (s and z equal the decoder's bit for bit). Stored
  per (tile, group) as 4 x 16 bits, not as an f32 scale and zero per (row, group), which
  would be 64 / beta2 = 4 bits per weight.
- kperm int32 [codes, NU]: the input column (x index) of code c of unit u, -1 for
  padding; the kernel's x is gathered through it once per call.
- Outliers as additive corrections, CSR: o_offsets int32 [m+1], o_cols int16 [nnz] (the
  INPUT column, as uint16 bits), o_delta fp32 [nnz] = value − dense value at that
  position (the dense value decoded exactly as the decoder does, the difference rounded
  once to f32), so y = W_dense·x + Σ delta·x[col] is the replace-semantics product up
  to f32 rounding. o_values fp16 [nnz] keeps the values themselves for dequantize_spqr.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch

MAX_COLS = 1 << 16  # outlier columns are stored in 16 bits
VECTOR_UNITS = 16  # NU is padded to a multiple of this (16-byte loads, aligned planes)
ROW_PAD = 64  # rows of codes, stats and second order are padded to a multiple (no row masks)
_CHUNK = 1 << 22  # codes unpacked per chunk of rows during the repack


def _fail(msg: str) -> None:
    raise ValueError(f"SpQR weight: {msg}")


@dataclass(frozen=True)
class SpqrGeometry:
    """The kernel layout's constants for one set of SpQR parameters."""

    bits: int
    beta1: int
    beta2: int
    qs: int  # qq_scale_bits
    qz: int  # qq_zero_bits
    words: int  # int32 words per unit
    per_word: int  # codes in the low bits of each word
    extra: int  # codes spread over the words' top bits
    group_cols: int  # GP: kernel columns per group (beta2, padded when it must be)

    @property
    def codes(self) -> int:
        return self.words * self.per_word + self.extra

    @property
    def spare_bits(self) -> int:  # top bits of each word holding the extra codes
        return 32 - self.per_word * self.bits

    @property
    def run(self) -> int:  # codes of a unit sharing one group
        return min(self.group_cols, self.codes)

    @property
    def runs(self) -> int:  # groups per unit (1 when a group spans units)
        return self.codes // self.run

    @staticmethod
    def of(bits: int, beta1: int, beta2: int, qs: int, qz: int) -> "SpqrGeometry":
        for name, v, lo, hi in (("bits", bits, 1, 8), ("qq_scale_bits", qs, 1, 8), ("qq_zero_bits", qz, 1, 8),
                                ("beta1", beta1, 1, 4096), ("beta2", beta2, 1, 4096)):
            if not (isinstance(v, int) and lo <= v <= hi):
                _fail(f"{name} must be an integer in {lo}..{hi}, got {v!r}")
        per_word = 32 // bits
        spare = 32 - per_word * bits
        base = bits // math.gcd(bits, 32)  # fewest words holding a whole number of codes
        target = min(1 << (beta2 - 1).bit_length(), 32)  # codes per unit wanted (<= 32)
        words = base
        while 32 * words // bits < target:
            words += base
        codes = 32 * words // bits
        extra = codes - words * per_word
        assert extra * bits == words * spare and words * spare <= 31
        gp = beta2
        while not (codes % gp == 0 or gp % codes == 0):
            gp += 1
        return SpqrGeometry(bits, beta1, beta2, qs, qz, words, per_word, extra, gp)


@dataclass(eq=False, repr=False)
class PreparedSpqr:
    """A SpQR Linear weight W [m, n] in the kernels' layout (see the module docstring).
    `spqr_matvec(x, w)` is x @ W.T."""

    geometry: SpqrGeometry
    m: int
    n: int
    nu: int  # units per row (multiple of VECTOR_UNITS)
    codes: torch.Tensor  # int32 [rows_padded, words, nu]
    stats: torch.Tensor  # uint8 / int16 [rows_padded, runs, nu]
    second_order: torch.Tensor  # fp16 [tiles, 4, runs, nu]
    kperm: torch.Tensor  # int32 [codes, nu]
    o_offsets: torch.Tensor  # int32 [m + 1]
    o_cols: torch.Tensor  # int16 [nnz]: input column (uint16 bits)
    o_delta: torch.Tensor  # float32 [nnz]
    o_values: torch.Tensor  # float16 [nnz]

    @property
    def device(self) -> torch.device:
        return self.codes.device

    @property
    def rows_padded(self) -> int:
        return -(-self.m // ROW_PAD) * ROW_PAD

    @property
    def tiles(self) -> int:  # second-order tiles of the padded rows
        return -(-self.rows_padded // self.geometry.beta1)

    @property
    def nnz(self) -> int:
        return self.o_delta.numel()

    def check(self) -> None:
        """Shapes, dtypes, devices and contiguity of every part (no device sync): raises
        ValueError on a PreparedSpqr the kernels could read out of bounds with."""
        g = self.geometry
        if not isinstance(g, SpqrGeometry):
            _fail(f"prepared geometry must be a SpqrGeometry, got {type(g).__name__}")
        if not (1 <= self.m < 2**31 and 1 <= self.n <= MAX_COLS):
            _fail(f"prepared shape ({self.m}, {self.n}) is out of range")
        need_units = -(-(-(-self.n // g.beta2) * g.group_cols) // g.codes)
        if self.nu % VECTOR_UNITS or self.nu < need_units:
            _fail(f"prepared nu={self.nu} must be a multiple of {VECTOR_UNITS} and >= {need_units}")
        stat_dtype = torch.uint8 if g.qs + g.qz <= 8 else torch.int16
        nnz = self.o_cols.numel()
        want = [
            ("codes", self.codes, torch.int32, (self.rows_padded, g.words, self.nu)),
            ("stats", self.stats, stat_dtype, (self.rows_padded, g.runs, self.nu)),
            ("second_order", self.second_order, torch.float16, (self.tiles, 4, g.runs, self.nu)),
            ("kperm", self.kperm, torch.int32, (g.codes, self.nu)),
            ("o_offsets", self.o_offsets, torch.int32, (self.m + 1,)),
            ("o_cols", self.o_cols, torch.int16, (nnz,)),
            ("o_delta", self.o_delta, torch.float32, (nnz,)),
            ("o_values", self.o_values, torch.float16, (nnz,)),
        ]
        for name, t, dtype, shape in want:
            if not isinstance(t, torch.Tensor):
                _fail(f"prepared {name} is not a tensor")
            if t.dtype != dtype or tuple(t.shape) != shape:
                _fail(f"prepared {name} must be {dtype} {list(shape)}, got {t.dtype} {list(t.shape)}")
            if t.device != self.codes.device:
                _fail(f"prepared {name} is on {t.device}, codes on {self.codes.device}")
            if not t.is_contiguous():
                _fail(f"prepared {name} is not contiguous")
        if self.codes.numel() >= 2**31 or self.rows_padded * self.nu * g.codes >= 2**31:
            _fail("more than 2**31 codes (kernel offsets are 32-bit)")

    def __repr__(self) -> str:
        g = self.geometry
        return (f"PreparedSpqr(m={self.m}, n={self.n}, bits={g.bits}, beta1={g.beta1}, beta2={g.beta2}, "
                f"qq_bits=({g.qs}, {g.qz}), outliers={self.nnz}, device={self.device})")


def _param(params: Any, name: str) -> int:
    v = params.get(name) if isinstance(params, Mapping) else getattr(params, name, None)
    if v is None:
        _fail(f"params lack {name!r}")
    if isinstance(v, torch.Tensor):
        v = v.item()
    try:
        if int(v) != v:
            raise TypeError
    except (TypeError, ValueError):
        _fail(f"params {name}={v!r} is not an integer")
    return int(v)


def geometry_of(params: Any) -> SpqrGeometry:
    """From a params dict (bits, beta1, beta2, qq_scale_bits, qq_zero_bits) or an object
    with those attributes (ctcodec.spqr_format.SpqrParams)."""
    return SpqrGeometry.of(*(_param(params, k) for k in ("bits", "beta1", "beta2", "qq_scale_bits", "qq_zero_bits")))


def bit_fields(words: torch.Tensor, first: int, count: int, bits: int) -> torch.Tensor:
    """int64 [..., count]: the `bits`-wide unsigned fields first..first+count-1 packed
    LSB-first across the int32 `words` (last dim), straddling words; bits past the end
    read 0."""
    w = words.to(torch.int64) & 0xFFFFFFFF
    w = torch.cat([w, torch.zeros_like(w[..., :1])], dim=-1)
    pos = (torch.arange(first, first + count, device=words.device) * bits)
    idx, shift = pos // 32, pos % 32
    window = w[..., idx] | (w[..., (idx + 1).clamp_(max=w.shape[-1] - 1)] << 32)
    return (window >> shift) & ((1 << bits) - 1)


def fields_at(words: torch.Tensor, rows: torch.Tensor, fields: torch.Tensor, bits: int) -> torch.Tensor:
    """int64: field fields[i] of row rows[i] of int32 `words` [R, W] (bits past the end read 0)."""
    pos = fields.to(torch.int64) * bits
    idx, shift = pos // 32, pos % 32
    width = words.shape[1]
    lo = words[rows, idx.clamp(max=width - 1)].to(torch.int64) & 0xFFFFFFFF
    hi = torch.where(idx + 1 < width, words[rows, (idx + 1).clamp(max=width - 1)].to(torch.int64) & 0xFFFFFFFF, 0)
    return ((lo | (hi << 32)) >> shift) & ((1 << bits) - 1)


def _to_int32(v: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2**32) to int32 with the same bits."""
    return torch.where(v >= 2**31, v - 2**32, v).to(torch.int32)


def _tensor(tensors: Mapping[str, torch.Tensor], name: str, dtype: torch.dtype, shape=None, *,
            required: bool = True) -> torch.Tensor | None:
    t = tensors.get(name)
    if t is None:
        if required:
            _fail(f"missing {name}")
        return None
    if not isinstance(t, torch.Tensor):
        _fail(f"{name} is not a tensor")
    if t.dtype != dtype or (shape is not None and tuple(t.shape) != tuple(shape)):
        want = f" {list(shape)}" if shape is not None else ""
        _fail(f"{name} must be {dtype}{want}, got {t.dtype} {list(t.shape)}")
    return t


def _check_offsets(offsets: torch.Tensor, total: int, what: str) -> torch.Tensor:
    o = offsets.to(torch.int64)
    if int(o[0]) != 0 or bool((o[1:] < o[:-1]).any()):
        _fail(f"{what} must start at 0 and never decrease")
    if int(o[-1]) != total:
        _fail(f"{what} end at {int(o[-1])} but {total} col_vals are stored")
    return o


def read_outliers(tensors: Mapping[str, torch.Tensor], geo: SpqrGeometry, m: int, n: int):
    """(rows int64, stored columns int64, fp16 values) of the outliers, sorted by row then
    column, from either layout, checked as ctcodec's reader checks them."""
    dev = tensors["weight_codes"].device
    tiles = -(-m // geo.beta1)
    has_csr = "weight_outlier_row_offsets" in tensors or "weight_outlier_col_vals" in tensors
    has_ptcsr = "weight_outlier_tile_offsets" in tensors or "weight_outlier_tile_col_vals" in tensors
    if has_csr == has_ptcsr:
        _fail("needs exactly one outlier layout (weight_outlier_row_offsets + weight_outlier_col_vals, "
              "or weight_outlier_tile_offsets + weight_outlier_tile_col_vals)")
    if has_csr:
        offsets = _tensor(tensors, "weight_outlier_row_offsets", torch.int32, (m + 1,))
        col_vals = _tensor(tensors, "weight_outlier_col_vals", torch.int32)
        if col_vals.dim() != 1:
            _fail(f"weight_outlier_col_vals must be 1-D, got {list(col_vals.shape)}")
        o = _check_offsets(offsets, col_vals.numel(), "outlier row offsets")
        rows = torch.repeat_interleave(torch.arange(m, device=dev), o.diff())
    else:
        offsets = _tensor(tensors, "weight_outlier_tile_offsets", torch.int32, (tiles + 1,))
        slots = _tensor(tensors, "weight_outlier_tile_col_vals", torch.int32)
        if slots.dim() != 1:
            _fail(f"weight_outlier_tile_col_vals must be 1-D, got {list(slots.shape)}")
        o = _check_offsets(offsets, slots.numel(), "outlier tile offsets")
        widths = o.diff()
        if bool((widths % geo.beta1 != 0).any()):
            t = int(torch.nonzero(widths % geo.beta1)[0, 0])
            _fail(f"outlier tile row {t} holds {int(widths[t])} slots, not a multiple of {geo.beta1}")
        slot = torch.arange(slots.numel(), device=dev)
        tile = torch.repeat_interleave(torch.arange(tiles, device=dev), widths)
        within = slot - o[tile]
        k, i = within // geo.beta1, within % geo.beta1
        rows_all = tile * geo.beta1 + i
        keep = slots != 0  # an all-zero slot is padding
        rows, k, col_vals = rows_all[keep], k[keep], slots[keep]
        if rows.numel():
            if int(rows.max()) >= m:
                _fail(f"outlier tile row: entry in row {int(rows.max())}, past the {m} rows")
            # entries of a row must come before its padding: its largest k is its count - 1
            count = torch.zeros(m, dtype=torch.int64, device=dev).index_add_(0, rows, torch.ones_like(rows))
            last = torch.full((m,), -1, dtype=torch.int64, device=dev).scatter_reduce_(0, rows, k, "amax")
            if bool((last + 1 != count).any()):
                r = int(torch.nonzero(last + 1 != count)[0, 0])
                _fail(f"outlier tile row {r // geo.beta1}: entry after padding in row {r}")
            order = torch.argsort(rows * (int(k.max()) + 1) + k)
            rows, col_vals = rows[order], col_vals[order]
    cols = col_vals.to(torch.int64) & 0xFFFF
    values = ((col_vals.to(torch.int64) >> 16) & 0xFFFF)
    values = torch.where(values >= 2**15, values - 2**16, values).to(torch.int16).view(torch.float16)
    if cols.numel():
        if int(cols.max()) >= n:
            bad = int(torch.argmax(cols))
            _fail(f"outlier column {int(cols[bad])} of row {int(rows[bad])} is past the {n} columns")
        same_row = rows[1:] == rows[:-1]
        if bool((same_row & (cols[1:] <= cols[:-1])).any()):
            r = int(rows[1:][same_row & (cols[1:] <= cols[:-1])][0])
            _fail(f"outlier columns of row {r} are not strictly increasing")
    return rows, cols, values


def _stats_and_second_order(stats_words, so, geo: SpqrGeometry, rows: torch.Tensor, groups: torch.Tensor):
    """(s, z) in f32 at (rows[i], groups[i]), dequantized exactly as the decoder does."""
    st = fields_at(stats_words, rows, groups, geo.qs + geo.qz)
    cs = (st & ((1 << geo.qs) - 1)).to(torch.float32)
    cz = (st >> geo.qs).to(torch.float32)
    f = so[rows // geo.beta1, groups].to(torch.float32)  # [k, 4]
    s = f[:, 0] * (cs - f[:, 1])
    z = f[:, 2] * (cz - f[:, 3])
    return s, z


def prepare_spqr(tensors: Mapping[str, torch.Tensor], params: Any) -> PreparedSpqr:
    """Repacks one SpQR weight (its stored tensors, named `weight_codes`, ... with or
    without the module prefix, on the device the kernels will run on) for spqr_matvec.
    `params`: a dict with bits, beta1, beta2, qq_scale_bits, qq_zero_bits, or
    ctcodec.spqr_format.SpqrParams. Checks the tensors as ctcodec's decoder does
    (ValueError on a malformed weight). Synchronizes with the device."""
    geo = geometry_of(params)
    named: dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        short = key.rsplit(".", 1)[-1]
        if short in named:
            _fail(f"two tensors named {short!r} (pass one module's tensors)")
        named[short] = t
    shape = _tensor(named, "weight_shape", torch.int64)
    if shape.numel() != 2:
        _fail(f"weight_shape must hold 2 values, got {list(shape.shape)}")
    m, n = (int(v) for v in shape.reshape(-1).tolist())
    if m < 1 or n < 1 or m >= 2**31:
        _fail(f"shape [{m}, {n}] is empty or too large")
    if n > MAX_COLS:
        _fail(f"SpQR stores columns in 16 bits: {n} input features is more than {MAX_COLS}")
    b, beta1, beta2 = geo.bits, geo.beta1, geo.beta2
    groups, tiles = -(-n // beta2), -(-m // beta1)
    codes = _tensor(named, "weight_codes", torch.int32, (m, -(-groups * beta2 * b // 32)))
    dev = codes.device
    stats = _tensor(named, "weight_stats", torch.int32, (m, -(-groups * (geo.qs + geo.qz) // 32)))
    so = _tensor(named, "weight_second_order", torch.float16, (tiles, groups, 4))
    perm = _tensor(named, "weight_perm", torch.int32, (n,))
    if len({t.device for t in named.values()}) != 1:
        _fail(f"tensors are on different devices: {sorted({str(t.device) for t in named.values()})}")
    if not bool(torch.isfinite(so).all()):
        _fail("weight_second_order has an entry that is not finite")
    p64 = perm.to(torch.int64)
    if bool(((p64 < 0) | (p64 >= n)).any()) or not bool((torch.bincount(p64.clamp(0, n - 1), minlength=n) == 1).all()):
        _fail(f"weight_perm is not a permutation of 0..{n}")
    o_rows, o_cols, o_values = read_outliers(named, geo, m, n)

    # Kernel columns: stored column j = g * beta2 + o goes to g * GP + o.
    gp, C = geo.group_cols, geo.codes
    j = torch.arange(n, device=dev)
    kcol = (j // beta2) * gp + j % beta2
    nu = -(-(groups * gp) // C)
    nu = -(-nu // VECTOR_UNITS) * VECTOR_UNITS
    kperm = torch.full((nu * C,), -1, dtype=torch.int32, device=dev)
    kperm[kcol] = perm
    kperm = kperm.view(nu, C).t().contiguous()  # [C, nu]: code-major

    # Codes: unpacked a chunk of rows at a time, moved to kernel columns, packed in units.
    W, P, E, R = geo.words, geo.per_word, geo.extra, geo.spare_bits
    rows_p = -(-m // ROW_PAD) * ROW_PAD
    packed = torch.zeros(rows_p, W, nu, dtype=torch.int32, device=dev)
    step = max(1, _CHUNK // max(n, nu * C))
    shifts = torch.arange(P, device=dev, dtype=torch.int64) * b
    for r0 in range(0, m, step):
        r1 = min(m, r0 + step)
        q = bit_fields(codes[r0:r1], 0, n, b)  # [rows, n] int64
        moved = torch.zeros(r1 - r0, nu * C, dtype=torch.int64, device=dev)
        moved[:, kcol] = q
        moved = moved.view(r1 - r0, nu, C)
        low = moved[:, :, : W * P].reshape(r1 - r0, nu, W, P)
        words = (low << shifts).sum(-1)  # [rows, nu, W]
        if E:
            ext = (moved[:, :, W * P:] << (torch.arange(E, device=dev, dtype=torch.int64) * b)).sum(-1)
            w_idx = torch.arange(W, device=dev, dtype=torch.int64)
            words |= ((ext[:, :, None] >> (w_idx * R)) & ((1 << R) - 1)) << (P * b)
        packed[r0:r1] = _to_int32(words).transpose(1, 2)

    # Statistics and second order per (run, unit): the group holding run r of unit u.
    runs = geo.runs
    first = torch.arange(nu, device=dev)[None, :] * C + torch.arange(runs, device=dev)[:, None] * geo.run
    grp = first // gp  # [runs, nu]
    real = grp < groups
    grp_c = grp.clamp(max=groups - 1)
    st = bit_fields(stats, 0, groups, geo.qs + geo.qz)  # [m, groups]
    st_dtype = torch.uint8 if geo.qs + geo.qz <= 8 else torch.int16
    st_k = torch.where(real, st[:, grp_c], 0)
    if st_dtype == torch.int16:
        st_k = torch.where(st_k >= 2**15, st_k - 2**16, st_k)
    st_k = torch.cat([st_k.to(st_dtype), st_k.new_zeros(rows_p - m, runs, nu, dtype=st_dtype)]).contiguous()
    so_k = torch.where(real[None, :, :, None], so[:, grp_c], torch.zeros((), dtype=torch.float16, device=dev))
    tiles_p = -(-rows_p // beta1)
    so_k = torch.cat([so_k, so_k.new_zeros(tiles_p - tiles, runs, nu, 4)])
    so_k = so_k.permute(0, 3, 1, 2).contiguous()  # [tiles_p, 4, runs, nu]

    # Outliers: additive corrections against the dense value at their position.
    if o_rows.numel():
        q = fields_at(codes, o_rows, o_cols, b).to(torch.float32)
        s, z = _stats_and_second_order(stats, so, geo, o_rows, o_cols // beta2)
        dense = s * (q - z)
        delta = o_values.to(torch.float32) - dense
    else:
        delta = torch.zeros(0, dtype=torch.float32, device=dev)
    counts = torch.bincount(o_rows, minlength=m) if o_rows.numel() else torch.zeros(m, dtype=torch.int64, device=dev)
    o_offsets = torch.zeros(m + 1, dtype=torch.int64, device=dev)
    o_offsets[1:] = torch.cumsum(counts, 0)
    in_col = p64[o_cols]
    in_col = torch.where(in_col >= 2**15, in_col - 2**16, in_col).to(torch.int16)
    prepared = PreparedSpqr(geo, m, n, nu, packed, st_k, so_k, kperm, o_offsets.to(torch.int32),
                            in_col.contiguous(), delta.contiguous(), o_values.contiguous())
    prepared.check()
    return prepared
