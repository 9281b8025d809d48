//! The safetensors element types and the facts the codecs need about them.

use std::fmt;
use std::str::FromStr;

/// Every dtype a safetensors header may name, in the reference's alignment order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    Bool,
    F4,
    F6E2M3,
    F6E3M2,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    F8E8M0,
    F8E4M3Fnuz,
    F8E5M2Fnuz,
    I16,
    U16,
    F16,
    Bf16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64,
}

const NAMES: [(Dtype, &str); 22] = [
    (Dtype::Bool, "BOOL"),
    (Dtype::F4, "F4"),
    (Dtype::F6E2M3, "F6_E2M3"),
    (Dtype::F6E3M2, "F6_E3M2"),
    (Dtype::U8, "U8"),
    (Dtype::I8, "I8"),
    (Dtype::F8E5M2, "F8_E5M2"),
    (Dtype::F8E4M3, "F8_E4M3"),
    (Dtype::F8E8M0, "F8_E8M0"),
    (Dtype::F8E4M3Fnuz, "F8_E4M3FNUZ"),
    (Dtype::F8E5M2Fnuz, "F8_E5M2FNUZ"),
    (Dtype::I16, "I16"),
    (Dtype::U16, "U16"),
    (Dtype::F16, "F16"),
    (Dtype::Bf16, "BF16"),
    (Dtype::I32, "I32"),
    (Dtype::U32, "U32"),
    (Dtype::F32, "F32"),
    (Dtype::C64, "C64"),
    (Dtype::F64, "F64"),
    (Dtype::I64, "I64"),
    (Dtype::U64, "U64"),
];

impl Dtype {
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(d, _)| *d == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    /// Size of one element in bits (4 and 6 for the packed sub-byte floats).
    pub fn bits(self) -> usize {
        match self {
            Dtype::F4 => 4,
            Dtype::F6E2M3 | Dtype::F6E3M2 => 6,
            Dtype::Bool
            | Dtype::U8
            | Dtype::I8
            | Dtype::F8E5M2
            | Dtype::F8E4M3
            | Dtype::F8E8M0
            | Dtype::F8E4M3Fnuz
            | Dtype::F8E5M2Fnuz => 8,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::Bf16 => 16,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 32,
            Dtype::C64 | Dtype::F64 | Dtype::I64 | Dtype::U64 => 64,
        }
    }

    /// Whole bytes per element, or None for the packed sub-byte floats.
    pub fn byte_size(self) -> Option<usize> {
        let bits = self.bits();
        (bits % 8 == 0).then_some(bits / 8)
    }

    /// The bits that decide whether an element compares equal to zero, as torch's
    /// `x != 0` does: floats ignore the sign so -0.0 counts as zero; complex numbers
    /// are zero when both halves are. None when the type has no zero (E8M0) or is
    /// packed below a byte, so element-wise sparsity does not apply.
    pub fn zero_test_mask(self) -> Option<u64> {
        Some(match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 0xff,
            // The fnuz variants use 0x80 as NaN, so only 0x00 is zero.
            Dtype::F8E4M3Fnuz | Dtype::F8E5M2Fnuz => 0xff,
            Dtype::F8E5M2 | Dtype::F8E4M3 => 0x7f,
            Dtype::I16 | Dtype::U16 => 0xffff,
            Dtype::F16 | Dtype::Bf16 => 0x7fff,
            Dtype::I32 | Dtype::U32 => 0xffff_ffff,
            Dtype::F32 => 0x7fff_ffff,
            Dtype::C64 => 0x7fff_ffff_7fff_ffff,
            Dtype::F64 => 0x7fff_ffff_ffff_ffff,
            Dtype::I64 | Dtype::U64 => u64::MAX,
            Dtype::F8E8M0 | Dtype::F4 | Dtype::F6E2M3 | Dtype::F6E3M2 => return None,
        })
    }

    pub fn is_float(self) -> bool {
        !matches!(
            self,
            Dtype::Bool
                | Dtype::U8
                | Dtype::I8
                | Dtype::I16
                | Dtype::U16
                | Dtype::I32
                | Dtype::U32
                | Dtype::I64
                | Dtype::U64
        )
    }
}

impl FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(d, _)| *d)
            .ok_or_else(|| format!("unknown dtype {s:?}"))
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (d, n) in NAMES {
            assert_eq!(n.parse::<Dtype>().unwrap(), d);
            assert_eq!(d.to_string(), n);
        }
        assert!("bf16".parse::<Dtype>().is_err());
    }
}
