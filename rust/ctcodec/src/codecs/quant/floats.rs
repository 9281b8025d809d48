//! Float formats as torch's CPU kernels produce them: bf16/f16 arithmetic is done in
//! f32 and rounded to nearest-even, fp8 e4m3fn and fp4 e2m1 conversions as
//! compressed-tensors casts. Emulating these roundings is what makes our quantized
//! bytes equal to compressed-tensors' own.

use crate::dtype::Dtype;

/// The dtype torch does a quantization's arithmetic in (the weight's dtype).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compute {
    BF16,
    F16,
    F32,
}

impl Compute {
    /// The compute dtype for weights of `dtype`, if they can be quantized.
    pub fn of(dtype: Dtype) -> Option<Compute> {
        match dtype {
            Dtype::Bf16 => Some(Compute::BF16),
            Dtype::F16 => Some(Compute::F16),
            Dtype::F32 => Some(Compute::F32),
            _ => None,
        }
    }

    pub fn dtype(self) -> Dtype {
        match self {
            Compute::BF16 => Dtype::Bf16,
            Compute::F16 => Dtype::F16,
            Compute::F32 => Dtype::F32,
        }
    }

    /// Rounds an f32 result to this dtype (as torch does after each bf16/f16 op).
    #[inline(always)]
    pub fn round(self, x: f32) -> f32 {
        match self {
            Compute::BF16 => bf16_round(x),
            Compute::F16 => half::f16::from_f32(x).to_f32(),
            Compute::F32 => x,
        }
    }

    /// `torch.finfo(dtype).eps`, the stand-in for a zero scale.
    pub fn eps(self) -> f32 {
        match self {
            Compute::BF16 => 0.0078125,
            Compute::F16 => 0.000_976_562_5,
            Compute::F32 => f32::EPSILON,
        }
    }
}

#[inline(always)]
pub fn bf16_round(x: f32) -> f32 {
    f32::from_bits((bf16_bits(x) as u32) << 16)
}

/// bf16 bits of `x`, rounded to nearest-even (NaN stays NaN).
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let lsb = (b >> 16) & 1;
    (b.wrapping_add(0x7fff + lsb) >> 16) as u16
}

/// Reads element `i` of a bf16/f16/f32 byte buffer as f32 (exact).
#[inline(always)]
pub fn load(dtype: Compute, bytes: &[u8], i: usize) -> f32 {
    match dtype {
        Compute::BF16 => {
            f32::from_bits((u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]) as u32) << 16)
        }
        Compute::F16 => {
            half::f16::from_bits(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])).to_f32()
        }
        Compute::F32 => f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().expect("4 bytes")),
    }
}

/// Converts a bf16/f16/f32 byte buffer into f32 values.
pub fn load_row(dtype: Compute, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Compute::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        Compute::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        Compute::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().expect("4 bytes"));
            }
        }
    }
}

/// Stores f32 values as `dtype` (rounded to nearest-even) into a byte buffer.
pub fn store_row(dtype: Compute, values: &[f32], out: &mut [u8]) {
    match dtype {
        Compute::BF16 => {
            for (c, &v) in out.chunks_exact_mut(2).zip(values) {
                c.copy_from_slice(&bf16_bits(v).to_le_bytes());
            }
        }
        Compute::F16 => {
            for (c, &v) in out.chunks_exact_mut(2).zip(values) {
                c.copy_from_slice(&half::f16::from_f32(v).to_bits().to_le_bytes());
            }
        }
        Compute::F32 => {
            for (c, &v) in out.chunks_exact_mut(4).zip(values) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
    }
}

/// Largest finite float8_e4m3fn value.
pub const E4M3_MAX: f32 = 448.0;

/// float8_e4m3fn bits of `x`, rounded to nearest-even as torch's `.to(float8_e4m3fn)`:
/// values past the largest finite one become NaN (0x7f), there is no infinity.
pub fn e4m3_from_f32(x: f32) -> u8 {
    let sign = if x.is_sign_negative() { 0x80u8 } else { 0 };
    let a = x.abs();
    if a.is_nan() || a >= 464.0 {
        // 464 is halfway between 448 and the next (absent) value 480.
        return sign | 0x7f;
    }
    if a < 0.015625 {
        // Subnormal range: steps of 2^-9; 8 steps reach the smallest normal (code 0x08).
        let q = (a * 512.0).round_ties_even() as u8;
        return sign | q;
    }
    let bits = a.to_bits();
    let exp = ((bits >> 23) & 0xff) as i32 - 127;
    let mant = bits & 0x7f_ffff;
    // Keep 3 mantissa bits, round the other 20 to nearest-even.
    let keep = mant >> 20;
    let rest = mant & 0xf_ffff;
    let half = 0x8_0000;
    let mut q = keep;
    if rest > half || (rest == half && (keep & 1) == 1) {
        q += 1;
    }
    let mut e = exp + 7;
    if q == 8 {
        q = 0;
        e += 1;
    }
    sign | ((e as u8) << 3) | q as u8
}

/// The value of float8_e4m3fn bits.
pub fn e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let e = ((b >> 3) & 0xf) as i32;
    let m = (b & 7) as f32;
    if e == 0xf && (b & 7) == 7 {
        return f32::NAN;
    }
    if e == 0 {
        sign * m * (1.0 / 512.0)
    } else {
        sign * (1.0 + m / 8.0) * 2f32.powi(e - 7)
    }
}

/// Rounds to the nearest float8_e4m3fn value, the way compressed-tensors rounds a
/// scale to fp8: clamp to ±448, cast, cast back.
pub fn e4m3_round(x: f32) -> f32 {
    e4m3_to_f32(e4m3_from_f32(x.clamp(-E4M3_MAX, E4M3_MAX)))
}

/// Magnitudes of fp4 e2m1 codes 0..8.
pub const E2M1_VALUES: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

/// The e2m1 code (sign in bit 3) compressed-tensors stores for an already clamped
/// value: its thresholds (ties at 0.25, 1.25, 2.5 and 5 go down; at 0.75, 1.75 and 3.5
/// up), and the sign of `x * sign(x)`, so small negatives become -0 (code 8) while
/// -0.0 itself stays +0.
#[inline(always)]
pub fn e2m1_code(x: f32) -> u8 {
    let a = x.abs();
    let idx = if a <= 0.25 {
        0
    } else if a < 0.75 {
        1
    } else if a <= 1.25 {
        2
    } else if a < 1.75 {
        3
    } else if a <= 2.5 {
        4
    } else if a < 3.5 {
        5
    } else if a <= 5.0 {
        6
    } else {
        7
    };
    if x < 0.0 {
        idx | 8
    } else {
        idx
    }
}

/// The value of an e2m1 code.
#[inline(always)]
pub fn e2m1_value(code: u8) -> f32 {
    let v = E2M1_VALUES[(code & 7) as usize];
    if code & 8 != 0 {
        -v
    } else {
        v
    }
}

/// An E8M0 exponent byte as a float (`2^(e-127)`), as compressed-tensors decodes MX scales.
pub fn e8m0_to_f32(e: u8) -> f32 {
    if e == 0xff {
        return f32::NAN;
    }
    2f32.powi(e as i32 - 127)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_round_trips_every_code() {
        for b in 0..=255u8 {
            let v = e4m3_to_f32(b);
            if v.is_nan() {
                continue;
            }
            let back = e4m3_from_f32(v);
            // +0 and -0 keep their sign.
            assert_eq!(back, b, "code {b:#x} value {v}");
        }
        assert_eq!(e4m3_to_f32(0x7e), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 1.0 / 512.0);
    }

    #[test]
    fn e4m3_rounds_to_nearest_even() {
        // 1.0 = 0x38, next 1.125 = 0x39; halfway 1.0625 goes to even (1.0).
        assert_eq!(e4m3_from_f32(1.0625), 0x38);
        assert_eq!(e4m3_from_f32(1.1875), 0x3a); // halfway 1.125..1.25 -> 1.25 (even)
        assert_eq!(e4m3_from_f32(1.07), 0x39);
        assert_eq!(e4m3_from_f32(460.0), 0x7e);
        assert_eq!(e4m3_from_f32(464.0), 0x7f);
        assert_eq!(e4m3_from_f32(1.5 / 1024.0), 0x01); // halfway 0 and 2^-9 -> up? 0.75 steps
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(bf16_round(1.0 + 1.0 / 256.0), 1.0);
        assert_eq!(bf16_round(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
        assert_eq!(bf16_round(1.0 + 1.5 / 256.0), 1.0 + 2.0 / 256.0);
    }

    #[test]
    fn e2m1_thresholds() {
        let cases = [
            (0.25, 0),
            (0.26, 1),
            (0.75, 2),
            (1.25, 2),
            (1.3, 3),
            (1.75, 4),
            (2.5, 4),
            (2.6, 5),
            (3.5, 6),
            (5.0, 6),
            (5.1, 7),
            (-0.1, 8),
            (-6.0, 15),
        ];
        for (x, code) in cases {
            assert_eq!(e2m1_code(x), code, "{x}");
        }
        assert_eq!(e2m1_code(-0.0), 0);
    }
}
