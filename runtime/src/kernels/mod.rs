//! The numeric kernels both executors share: GEMM, normalisation,
//! activations, the router, expert FFNs, attention (MHA, GQA, MLA), the
//! synthetic KV cache and the combine.
//!
//! Everything computes in f32 on row-major buffers. Weights may hold values
//! rounded to the model's storage type ([`precision`]) so that every copy of a
//! weight, on any die, is the same number. The dense reference and the
//! distributed executor (`crate::numerics`) call exactly these functions, so a
//! difference between them is a difference in data movement, not in maths.

pub mod activation;
pub mod attention;
pub mod combine;
pub mod expert;
pub mod gate;
pub mod gemm;
pub mod kv_cache;
pub mod norm;
pub mod precision;

pub use attention::{attention, AttentionWeights, HeadsAttention, LatentAttention, SequenceRows};
pub use combine::combine;
pub use expert::{ffn, grouped_ffn, shared_ffn, ExpertBlock, FfnWeights};
pub use gate::{weights_for, Routed, Router};
pub use gemm::{matmul, matmul_into};
pub use kv_cache::SyntheticKvCache;
pub use norm::rms_norm;
