//! FFN activations: SwiGLU (`silu(x W_gate) * (x W_up)`), GELU in its tanh
//! form, and ReLU.

use crate::model::Activation;

/// `x * sigmoid(x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// GELU, tanh approximation (as GPT-2 and most serving stacks compute it).
pub fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
}

/// `max(x, 0)`.
pub fn relu(x: f32) -> f32 {
    x.max(0.0)
}

/// SwiGLU's gating: `gate[i] = silu(gate[i]) * up[i]`.
pub fn swiglu_in_place(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
}

/// An ungated activation applied in place; SwiGLU needs two inputs, so it
/// goes through [`swiglu_in_place`] and is the identity here.
pub fn apply_in_place(activation: Activation, xs: &mut [f32]) {
    match activation {
        Activation::Gelu => xs.iter_mut().for_each(|x| *x = gelu(*x)),
        Activation::Relu => xs.iter_mut().for_each(|x| *x = relu(*x)),
        Activation::Swiglu => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert_eq!(silu(0.0), 0.0);
        // GELU(1) = 0.8413 exactly; the tanh form is within 1e-3 of it.
        assert!((gelu(1.0) - 0.841_192).abs() < 1e-5);
        assert!((gelu(-3.0) + 0.003_637_4).abs() < 1e-5);
        assert_eq!(relu(-2.0), 0.0);
        assert_eq!(relu(2.5), 2.5);
        let mut g = [1.0, -1.0];
        swiglu_in_place(&mut g, &[2.0, 3.0]);
        assert!((g[0] - 2.0 * 0.731_058_6).abs() < 1e-6);
        assert!((g[1] - 3.0 * (-0.268_941_4)).abs() < 1e-6);
    }
}
