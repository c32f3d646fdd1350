//! The numeric kernels' speed: GFLOP/s of the f32 GEMM (faer, one thread)
//! on the expert shapes of the examples, as `tokens x hidden` times
//! `hidden x expert_ffn` (the up projection; down is its transpose shape),
//! and of the grouped expert kernel over a die's experts.
//!
//! `cargo bench -p moec --bench kernels`. divan reports the counter as
//! items/s: one item is one FLOP, so `Gitem/s` reads as GFLOP/s. Compare
//! with the core's peak (docs/RUNTIME.md states this machine's).

use moec_runtime::kernels::expert::{grouped_ffn, ExpertBlock, FfnWeights};
use moec_runtime::kernels::gemm::matmul;
use moec_runtime::model::Activation;
use moec_runtime::rng::Rng;

fn main() {
    divan::main();
}

fn filled(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.normal() as f32).collect()
}

/// (model, hidden, expert_ffn) of the examples' experts.
const EXPERTS: &[(&str, usize, usize)] = &[
    ("deepseek_v3", 7168, 2048),
    ("qwen3_235b", 4096, 1536),
    ("mixtral_8x7b", 4096, 14336),
    ("switch_base_128", 768, 3072),
];

/// Tokens one expert sees (`M`): a decode step's few, and a prefill's many.
#[divan::bench(args = EXPERTS, consts = [8, 64, 512], sample_count = 5, sample_size = 1)]
fn expert_gemm<const M: usize>(bencher: divan::Bencher, &(_, k, n): &(&str, usize, usize)) {
    let a = filled(M * k, 1);
    let b = filled(k * n, 2);
    bencher
        .counter(divan::counter::ItemsCount::new(2 * M * k * n))
        .bench_local(|| matmul(&a, &b, M, k, n));
}

/// One die's grouped launch: 4 DeepSeek-V3-shaped experts (SwiGLU) at
/// numeric width 1024 (what fits this machine), 64 tokens each.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn grouped_swiglu_experts(bencher: divan::Bencher) {
    let (hidden, ffn, tokens, experts) = (1024, 2048, 64, 4);
    let weights: Vec<FfnWeights> = (0..experts as u64)
        .map(|e| FfnWeights {
            hidden,
            ffn,
            activation: Activation::Swiglu,
            gate: filled(hidden * ffn, 10 + e),
            up: filled(hidden * ffn, 20 + e),
            down: filled(ffn * hidden, 30 + e),
        })
        .collect();
    let rows = filled(tokens * hidden, 3);
    let blocks: Vec<ExpertBlock<'_>> = weights
        .iter()
        .map(|w| ExpertBlock {
            weights: w,
            rows: &rows,
            n: tokens,
        })
        .collect();
    bencher
        .counter(divan::counter::ItemsCount::new(
            experts as usize * 6 * tokens * hidden * ffn,
        ))
        .bench_local(|| grouped_ffn(&blocks));
}
