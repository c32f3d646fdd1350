//! Round-robin expert parallelism: the baseline every placement is
//! measured against.
//!
//! Expert e of every layer goes to the e mod N-th alive die (dies in id
//! order, so row-major on a mesh; defective dies skipped). The rest of the
//! model is placed data-parallel by `place.rs`.

use moec_runtime::machine::DieId;

/// The die of expert `expert` among the alive `dies`.
pub fn expert_die(expert: u32, dies: &[DieId]) -> DieId {
    dies[expert as usize % dies.len()]
}

#[cfg(test)]
mod tests {
    use crate::driver::{self, CompileOptions};
    use crate::ir::Op;
    use crate::source::MemoryReader;
    use moec_runtime::machine::DieId;
    use std::path::Path;

    const SRC: &str = "
        model m { layers = 3; dense_layers = 1; dense_ffn = 64; hidden = 32; vocab = 50
                  attention gqa { heads = 4; kv_heads = 2; head_dim = 8 }
                  moe { experts = 10; top_k = 2; expert_ffn = 16 } }
        machine w { topology = mesh(2, 2)
                    die { compute = 1 TFLOPS; memory = 1 GB; memory_bw = 1 TB/s }
                    link { bandwidth = 100 GB/s; latency = 10 ns }
                    defects { die(1, 0) } }
        workload d { phase = decode; batch = 8; context = 32 }
        plan default { model = m; machine = w; workload = d }";

    #[test]
    fn expert_e_goes_to_the_e_mod_n_th_alive_die_in_every_layer() {
        let mut reader = MemoryReader::default();
        reader.0.insert("t.moe".into(), SRC.as_bytes().to_vec());
        let session = driver::check(&reader, Path::new("t.moe")).unwrap();
        assert!(!session.has_errors(), "{:?}", session.diagnostics.sorted());
        let ir = session.compile(&CompileOptions::default(), &mut |_, _| {}).unwrap();
        // Die 1 = (1, 0) is dead: the alive dies are 0, 2, 3.
        let alive = [DieId(0), DieId(2), DieId(3)];
        let mut experts = 0;
        for (_, n) in ir.nodes() {
            match n.op {
                Op::Expert { expert, .. } => {
                    experts += 1;
                    assert_eq!(n.ann.dies, vec![alive[expert.0 as usize % 3]]);
                }
                _ => assert_eq!(
                    n.ann.dies,
                    alive.to_vec(),
                    "{:?} is data-parallel on every alive die",
                    n.op
                ),
            }
        }
        assert_eq!(experts, 2 * 10);
    }
}
