//! RMS normalisation of rows.
//!
//! Every real MoE transformer normalises the input of each attention and FFN
//! block (pre-norm); without it the residual stream of a 61-layer model with
//! random weights grows without bound. The learned scale is taken as 1: it
//! would only rescale the next projection's random weights.

/// Guards against dividing by zero on an all-zero row.
pub const EPS: f32 = 1e-6;

/// Each row of `x` (`rows x width`, row-major) divided by its root mean square.
pub fn rms_norm(x: &[f32], width: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    rms_norm_in_place(&mut out, width);
    out
}

/// [`rms_norm`] in place.
pub fn rms_norm_in_place(x: &mut [f32], width: usize) {
    if width == 0 {
        return;
    }
    for row in x.chunks_exact_mut(width) {
        let mean_square = row.iter().map(|v| v * v).sum::<f32>() / width as f32;
        let scale = 1.0 / (mean_square + EPS).sqrt();
        for v in row {
            *v *= scale;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_get_unit_root_mean_square() {
        let y = rms_norm(&[3.0, 4.0, 0.0, 0.0, 0.0, 0.0], 2);
        let rms = ((y[0] * y[0] + y[1] * y[1]) / 2.0).sqrt();
        assert!((rms - 1.0).abs() < 1e-5);
        assert!((y[0] / y[1] - 0.75).abs() < 1e-6);
        assert_eq!(&y[2..], &[0.0; 4]);
    }
}
