//! Properties of the quantized formats: decode(encode(x)) is within half a step of x,
//! and what is decoded is what the codes say.

use proptest::prelude::*;

use super::args::Strategy as Scales;
use super::{
    decode, decode_into, encode_into, floats, output_parts, DecodeInput, QType, QuantArgs,
    QuantFormat, QuantSpec, Role,
};
use crate::codecs::quant::floats::{store_row, Compute};
use crate::dtype::Dtype;

fn encode_decode(
    spec: &QuantSpec,
    dtype: Dtype,
    shape: &[usize],
    xs: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let compute = Compute::of(dtype).unwrap();
    let mut input = vec![0u8; xs.len() * dtype.bits() / 8];
    store_row(compute, xs, &mut input);
    let mut exact = vec![0f32; xs.len()];
    floats::load_row(compute, &input, &mut exact);
    let parts = output_parts(spec, dtype, shape).unwrap();
    let mut bufs: Vec<Vec<u8>> = parts
        .iter()
        .map(|p| vec![0u8; p.shape.iter().product::<usize>() * p.dtype.bits() / 8])
        .collect();
    {
        let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        encode_into(spec, dtype, shape, &input, true, &mut outs).unwrap();
    }
    let find = |r: Role| parts.iter().position(|p| p.role == r);
    let scale_i = find(Role::Scale).unwrap();
    let zero = find(Role::ZeroPoint).map(|i| (bufs[i].as_slice(), parts[i].dtype));
    let global =
        find(Role::GlobalScale).map(|i| f32::from_le_bytes(bufs[i][..4].try_into().unwrap()));
    let input = DecodeInput {
        weight: &bufs[0],
        scale: &bufs[scale_i],
        scale_dtype: parts[scale_i].dtype,
        zero_point: zero,
        g_idx: None,
        global_scale: global,
        meta: None,
    };
    let out_dtype = decode::output_dtype(spec, parts[scale_i].dtype).unwrap();
    let mut out = vec![0u8; xs.len() * out_dtype.bits() / 8];
    decode_into(spec, shape, &input, true, &mut out).unwrap();
    let mut back = vec![0f32; xs.len()];
    floats::load_row(Compute::of(out_dtype).unwrap(), &out, &mut back);
    (exact, back)
}

fn int_spec(bits: u32, symmetric: bool, strategy: Scales, legacy: bool) -> QuantSpec {
    QuantSpec {
        format: QuantFormat::Pack { legacy },
        args: QuantArgs {
            num_bits: bits,
            qtype: QType::Int,
            symmetric,
            strategy,
        },
        global_scale: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn int_round_trip_within_half_a_step(
        bits in 2u32..=8,
        symmetric in any::<bool>(),
        legacy in any::<bool>(),
        rows in 1usize..12,
        groups in 1usize..4,
        seed in any::<u64>(),
    ) {
        let group = 8;
        let cols = group * groups;
        let mut state = seed | 1;
        let xs: Vec<f32> = (0..rows * cols).map(|_| {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            ((state % 20001) as f32 - 10000.0) / 2500.0
        }).collect();
        let spec = int_spec(bits, symmetric, Scales::Group(group), legacy);
        let (exact, back) = encode_decode(&spec, Dtype::F32, &[rows, cols], &xs);
        for r in 0..rows {
            for g in 0..groups {
                let cell = &exact[r * cols + g * group..r * cols + (g + 1) * group];
                let lo = cell.iter().fold(0f32, |m, &x| m.min(x));
                let hi = cell.iter().fold(0f32, |m, &x| m.max(x));
                let levels = ((1u32 << bits) - 1) as f32;
                let step = if symmetric { 2.0 * lo.abs().max(hi.abs()) / levels } else { (hi - lo) / levels };
                for c in 0..group {
                    let i = r * cols + g * group + c;
                    // Half a step, plus the rounding of a symmetric range that is one
                    // level short on the positive side.
                    let tol = if symmetric { step } else { 0.5 * step * 1.001 + 1e-6 };
                    prop_assert!((exact[i] - back[i]).abs() <= tol + 1e-6, "x {} back {} step {}", exact[i], back[i], step);
                }
            }
        }
    }

    #[test]
    fn fp8_channel_round_trip(rows in 1usize..8, cols in 1usize..40, seed in any::<u64>()) {
        let mut state = seed | 1;
        let xs: Vec<f32> = (0..rows * cols).map(|_| {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            ((state % 2001) as f32 - 1000.0) / 100.0
        }).collect();
        let spec = QuantSpec {
            format: QuantFormat::Naive,
            args: QuantArgs { num_bits: 8, qtype: QType::Float, symmetric: true, strategy: Scales::Channel },
            global_scale: None,
        };
        let (exact, back) = encode_decode(&spec, Dtype::Bf16, &[rows, cols], &xs);
        for (x, y) in exact.iter().zip(&back) {
            // e4m3 keeps 3 mantissa bits: relative error below 2^-4, plus bf16 output rounding.
            prop_assert!((x - y).abs() <= x.abs() / 14.0 + 1e-3, "{x} vs {y}");
        }
    }
}

#[test]
fn nvfp4_round_trip_is_close() {
    let rows = 4;
    let cols = 64;
    let xs: Vec<f32> = (0..rows * cols)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    let spec = QuantSpec {
        format: QuantFormat::Nvfp4,
        args: QuantArgs {
            num_bits: 4,
            qtype: QType::Float,
            symmetric: true,
            strategy: Scales::TensorGroup(16),
        },
        global_scale: None,
    };
    let (exact, back) = encode_decode(&spec, Dtype::Bf16, &[rows, cols], &xs);
    for g in 0..rows * cols / 16 {
        let cell = &exact[g * 16..(g + 1) * 16];
        let amax = cell.iter().fold(0f32, |m, &x| m.max(x.abs()));
        for i in g * 16..(g + 1) * 16 {
            // The widest e2m1 gap is 2 (4 to 6) at scale amax/6, plus fp8 scale rounding.
            assert!(
                (exact[i] - back[i]).abs() <= amax / 6.0 * 1.07 + 1e-3,
                "{} vs {}",
                exact[i],
                back[i]
            );
        }
    }
}

#[test]
fn group_must_divide_columns() {
    let spec = int_spec(4, true, Scales::Group(128), false);
    let err = output_parts(&spec, Dtype::Bf16, &[8, 200]).unwrap_err();
    assert!(err.contains("group size"), "{err}");
}
