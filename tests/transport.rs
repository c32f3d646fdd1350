//! The all-to-all transports (`transfers = direct | m2n | nccl`): the
//! machine's per-message costs against MegaScale-Infer's M2N measurement,
//! the group synchronisation of the NCCL-style collective, and the numbers
//! a step computes unchanged by either.

mod common;

/// MegaScale-Infer's benchmark: M = 8 senders (node 0) and N = 8 receivers
/// (node 1), 200 Gb/s a GPU, every sender one message of `tokens` rows of
/// 2 KB to every receiver (each token chooses all 8 experts, one a GPU).
fn m2n_bench(tokens_per_sender: u32, transfers: &str) -> String {
    format!(
        r#"
model wide {{
  layers = 1
  dense_layers = 0
  hidden = 1024
  vocab = 64
  attention mha {{ heads = 8; head_dim = 128 }}
  moe {{ experts = 8; top_k = 8; expert_ffn = 256 }}
}}
machine two_nodes {{
  topology = cluster(nodes = 2, per_node = 8)
  die {{ compute = 312 TFLOPS; memory = 80 GB; memory_bw = 2039 GB/s }}
  link {{ bandwidth = 200 GB/s; latency = 500 ns }}
  inter_node {{ bandwidth = 200 Gb/s; latency = 2 us }}
}}
workload w {{
  phase = decode
  batch = {batch}
  context = 16
  routing = uniform(seed = 1)
}}
plan p {{
  model = wide
  machine = two_nodes
  workload = w
  placement = contiguous
  transfers = {transfers}
  disaggregate {{ attention = [0, 1, 2, 3, 4, 5, 6, 7]; experts = [8, 9, 10, 11, 12, 13, 14, 15] }}
}}
"#,
        batch = 8 * tokens_per_sender
    )
}

/// The M2N transfer's latency: from the senders' dispatch to the last
/// receiver's.
fn dispatch_latency(tokens_per_sender: u32, transfers: &str) -> f64 {
    let s = common::schedule_of(&m2n_bench(tokens_per_sender, transfers), "p");
    let r = common::simulate_first_step(&s, false);
    let dispatch = |senders: bool| {
        r.spans
            .iter()
            .filter(move |x| x.op.name() == "dispatch" && (x.die.0 < 8) == senders)
    };
    let start = dispatch(true).map(|x| x.start_s).fold(f64::MAX, f64::min);
    let end = dispatch(false).map(|x| x.end_s).fold(0.0, f64::max);
    end - start
}

#[test]
fn m2n_against_nccl_reproduces_megascale_infers_latency_cut() {
    // The paper's medians: M2N 80.8% below NCCL at 2 KB, 68.2% at 256 KB.
    for (tokens, paper) in [(1, 0.808), (128, 0.682)] {
        let (direct, m2n, nccl) = (
            dispatch_latency(tokens, "direct"),
            dispatch_latency(tokens, "m2n"),
            dispatch_latency(tokens, "nccl"),
        );
        let cut = 1.0 - m2n / nccl;
        assert!(direct < m2n && m2n < nccl, "{direct} {m2n} {nccl}");
        assert!(
            (cut - paper).abs() < 0.02,
            "{} KB: M2N {:.1} us, NCCL {:.1} us: {:.1}% below, the paper {:.1}%",
            2 * tokens,
            m2n * 1e6,
            nccl * 1e6,
            cut * 100.0,
            paper * 100.0
        );
    }
}
