//! Storage precision: rounding f32 values to the model's storage type.
//!
//! Kernels compute in f32, but a bf16 model stores bf16 weights. Rounding
//! each weight once, when it is created (round to nearest, ties to even, as
//! `half` does), makes every copy of it, on every die and in the reference,
//! the same number.

use crate::model::DType;
use half::{bf16, f16};

/// `x` rounded to `dtype` and widened back to f32. fp8 is not modelled: its
/// values stay f32 (the formats differ between vendors, and the numerics
/// check data movement, not quantisation error).
pub fn round(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::Bf16 => bf16::from_f32(x).to_f32(),
        DType::Fp16 => f16::from_f32(x).to_f32(),
        DType::Fp32 | DType::Fp8 => x,
    }
}

/// Rounds every value of `xs` in place (see [`round`]).
pub fn round_all(dtype: DType, xs: &mut [f32]) {
    // One match for the whole slice keeps the loops tight: the KV cache is
    // rounded every step.
    match dtype {
        DType::Bf16 => xs.iter_mut().for_each(|x| *x = bf16::from_f32(*x).to_f32()),
        DType::Fp16 => xs.iter_mut().for_each(|x| *x = f16::from_f32(*x).to_f32()),
        DType::Fp32 | DType::Fp8 => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and the next bf16 (1 + 2^-7): ties go
        // to the even mantissa, 1.
        assert_eq!(round(DType::Bf16, 1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
        assert_eq!(round(DType::Bf16, 1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        // Just above a tie rounds up.
        assert_eq!(round(DType::Bf16, 1.0 + 1.0 / 256.0 + 1.0 / 4096.0), 1.0 + 1.0 / 128.0);
        assert_eq!(round(DType::Fp32, 1.0 + 1.0 / 256.0), 1.0 + 1.0 / 256.0);
        let mut xs = [0.1f32, -3.3];
        round_all(DType::Bf16, &mut xs);
        assert!(xs.iter().all(|x| x.to_bits() & 0xFFFF == 0));
    }
}
