//! Scales and zero points from min/max statistics, computed in the dtypes
//! compressed-tensors' `calculate_qparams` computes them in.

use super::args::{QType, QuantArgs};
use super::floats::{e4m3_round, Compute};

/// Per-cell statistics and the quantization parameters derived from them.
#[derive(Clone, Debug, PartialEq)]
pub struct QParams {
    /// Scale of each cell of the grid, row-major; exactly representable in the
    /// dtype they are stored in.
    pub scales: Vec<f32>,
    /// Zero point of each cell (integer-valued; all zero when symmetric).
    pub zeros: Vec<f32>,
}

/// Running min/max of each scale cell.
#[derive(Clone, Debug)]
pub struct MinMax {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

impl MinMax {
    pub fn new(cells: usize) -> Self {
        MinMax {
            min: vec![f32::INFINITY; cells],
            max: vec![f32::NEG_INFINITY; cells],
        }
    }

    #[inline(always)]
    pub fn add(&mut self, cell: usize, x: f32) {
        // torch.amin/amax propagate NaN; a NaN weight makes its cell NaN.
        if x < self.min[cell] || x.is_nan() {
            self.min[cell] = x;
        }
        if x > self.max[cell] || x.is_nan() {
            self.max[cell] = x;
        }
    }

    /// Adds a run of values that all fall in one cell.
    #[inline]
    pub fn add_run(&mut self, cell: usize, xs: &[f32]) {
        let (mut lo, mut hi) = (self.min[cell], self.max[cell]);
        let mut nan = false;
        for &x in xs {
            lo = lo.min(x);
            hi = hi.max(x);
            nan |= x.is_nan();
        }
        if nan {
            lo = f32::NAN;
            hi = f32::NAN;
        }
        self.min[cell] = lo;
        self.max[cell] = hi;
    }

    pub fn merge(&mut self, other: &MinMax) {
        for (a, &b) in self.min.iter_mut().zip(&other.min) {
            if b < *a || b.is_nan() {
                *a = b;
            }
        }
        for (a, &b) in self.max.iter_mut().zip(&other.max) {
            if b > *a || b.is_nan() {
                *a = b;
            }
        }
    }
}

/// Where the scale ends up, which decides its last rounding and the zero-scale stand-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleKind {
    /// Kept in the weight's dtype.
    Weight,
    /// Rounded to float8_e4m3fn (NVFP4 group scales).
    Fp8,
    /// A power of two stored as an E8M0 exponent (MX formats).
    E8m0,
}

/// compressed-tensors' MX scale for a group's largest magnitude, as the float the module
/// holds (a power of two in the weight's dtype): round |x| to a power of two on its bits
/// in that dtype (halfway up, for fp4's 1-bit mantissa), take the exponent, subtract
/// fp4's 2, clamp to a byte, and cast `2^(e - 127)` back; a zero result becomes 1 (the
/// "eps" of a uint8 scale dtype).
pub fn mx_scale(max_pos: f32, compute: Compute) -> f32 {
    let (bits, mantissa, exp_bits): (u32, u32, u32) = match compute {
        Compute::BF16 => ((max_pos.to_bits() >> 16), 7, 8),
        Compute::F16 => (half::f16::from_f32(max_pos).to_bits() as u32, 10, 5),
        Compute::F32 => (max_pos.to_bits(), 23, 8),
    };
    let add = 1u32 << (mantissa - 2);
    let mask = ((1u32 << (exp_bits + 1)) - 1) << mantissa;
    let p2_bits = bits.wrapping_add(add) & mask;
    let p2 = match compute {
        Compute::BF16 => f32::from_bits(p2_bits << 16),
        Compute::F16 => half::f16::from_bits(p2_bits as u16).to_f32(),
        Compute::F32 => f32::from_bits(p2_bits),
    };
    let e = if p2.is_nan() {
        return f32::NAN;
    } else if p2 == 0.0 {
        0.0
    } else if p2.is_infinite() {
        255.0
    } else {
        (127.0 + p2.log2().floor() - 2.0).clamp(0.0, 255.0)
    };
    let scale = compute.round(2f32.powi(e as i32 - 127));
    if scale == 0.0 {
        1.0
    } else {
        scale
    }
}

/// compressed-tensors' `calculate_qparams`: 0 is always representable, symmetric
/// scales divide the largest magnitude by half the range (7.5 for int4), asymmetric
/// ones spread min..max over the whole range; zero scales become eps.
pub fn calculate_qparams(
    stats: &MinMax,
    args: &QuantArgs,
    compute: Compute,
    global_scale: Option<f32>,
    kind: ScaleKind,
) -> QParams {
    let cells = stats.min.len();
    let mut qp = QParams {
        scales: vec![0.0; cells],
        zeros: vec![0.0; cells],
    };
    qparams_into(
        &stats.min,
        &stats.max,
        args,
        compute,
        global_scale,
        kind,
        &mut qp.scales,
        &mut qp.zeros,
    );
    qp
}

/// [`calculate_qparams`] into caller slices (one per cell), allocating nothing.
#[allow(clippy::too_many_arguments)]
pub fn qparams_into(
    mins: &[f32],
    maxs: &[f32],
    args: &QuantArgs,
    compute: Compute,
    global_scale: Option<f32>,
    kind: ScaleKind,
    scales: &mut [f32],
    zeros: &mut [f32],
) {
    let c = |x: f32| compute.round(x);
    let (q_min, q_max) = args.range();
    let bit_range = c(q_max - q_min);
    for (((&lo, &hi), so), zo) in mins
        .iter()
        .zip(maxs)
        .zip(scales.iter_mut())
        .zip(zeros.iter_mut())
    {
        let lo = nan_min(lo, 0.0);
        let hi = nan_max(hi, 0.0);
        let (mut scale, zero) = if args.symmetric && kind == ScaleKind::E8m0 {
            (mx_scale(nan_max(lo.abs(), hi.abs()), compute), 0.0)
        } else if args.symmetric {
            let max_pos = nan_max(lo.abs(), hi.abs());
            (c(max_pos / c(bit_range / 2.0)), 0.0)
        } else {
            let scale = c(c(hi - lo) / bit_range);
            let zero = c(q_min - c(lo / scale));
            (scale, nan_clamp(zero, q_min, q_max))
        };
        if let Some(g) = global_scale {
            scale *= g; // an f32 product: the global scale is an fp32 tensor
        }
        let eps = match kind {
            ScaleKind::Weight if global_scale.is_some() => f32::EPSILON,
            ScaleKind::Weight => compute.eps(),
            ScaleKind::Fp8 => {
                scale = e4m3_round(scale);
                0.125
            }
            ScaleKind::E8m0 => 1.0,
        };
        if scale == 0.0 {
            scale = eps;
        }
        *so = scale;
        *zo = round_zero_point(zero, args);
    }
}

/// The global scale NVFP4 puts over a whole tensor, `448 * 6 / amax`, as
/// compressed-tensors' `generate_gparam` computes it in the weight's dtype: torch
/// evaluates `scalar / tensor` as `reciprocal(tensor) * scalar`, each rounded to that
/// dtype; amax is clamped to the dtype's smallest normal, a non-finite result becomes 1.
pub fn global_scale(amax: f32, compute: Compute) -> f32 {
    let tiny = match compute {
        Compute::F16 => 6.103_515_6e-5,
        _ => f32::MIN_POSITIVE,
    };
    let amax = if amax.is_nan() { amax } else { amax.max(tiny) };
    let g = compute.round(compute.round(1.0 / amax) * (448.0 * 6.0));
    if g.is_finite() {
        g
    } else {
        1.0
    }
}

/// Zero points are rounded half-to-even into the int8 range; a NaN (an asymmetric
/// all-zero cell divides 0 by 0) casts to 0 as torch's x86 kernels cast it.
fn round_zero_point(zero: f32, args: &QuantArgs) -> f32 {
    if args.symmetric || zero.is_nan() {
        return 0.0;
    }
    match args.qtype {
        QType::Int => zero.clamp(-128.0, 127.0).round_ties_even(),
        QType::Float => zero,
    }
}

// torch's min/max/clamp propagate NaN, unlike f32::min/max.
fn nan_min(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.min(b)
    }
}

fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else {
        a.max(b)
    }
}

fn nan_clamp(x: f32, lo: f32, hi: f32) -> f32 {
    if x.is_nan() {
        x
    } else {
        x.clamp(lo, hi)
    }
}
