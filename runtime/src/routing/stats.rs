//! Routing statistics for the compiler: how many tokens each expert of each
//! layer receives, measured on the workload's own routing source.
//!
//! Placement passes that balance load (EPLB) read these instead of assuming
//! uniform routing. They are counted over the first few steps the run will
//! see, so the statistics and the measurement share their routing.

use super::RoutingGenerator;
use crate::model::{LayerKind, ModelSpec};
use crate::workload::WorkloadSpec;

/// Steps sampled at most.
pub const SAMPLED_STEPS: u64 = 4;

/// Expert loads per layer.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingStats {
    /// `loads[layer][expert]`: token choices per step on average (empty
    /// for dense layers).
    pub loads: Vec<Vec<f64>>,
    /// How they were obtained, in words.
    pub source: String,
}

impl RoutingStats {
    /// Counts the first `min(steps, SAMPLED_STEPS)` steps of the workload's
    /// routing. With `routing = gate` nothing is known before the run, so the
    /// loads are uniform and `source` says so.
    pub fn measure(model: &ModelSpec, workload: &WorkloadSpec) -> Result<RoutingStats, String> {
        let experts = model.moe.as_ref().map_or(0, |m| m.experts as usize);
        let mut loads: Vec<Vec<f64>> = (0..model.layers)
            .map(|l| {
                if model.layer_kind(l) == LayerKind::Moe {
                    vec![0.0; experts]
                } else {
                    Vec::new()
                }
            })
            .collect();
        let mut generator = RoutingGenerator::new(model, workload)?;
        let steps = workload.steps.clamp(1, SAMPLED_STEPS);
        if generator.is_gate() {
            let top_k = model.moe.as_ref().map_or(0, |m| m.top_k) as f64;
            let each = workload.tokens_per_step() as f64 * top_k / experts.max(1) as f64;
            for l in loads.iter_mut() {
                l.iter_mut().for_each(|x| *x = each);
            }
            return Ok(RoutingStats {
                loads,
                source: "uniform (routing = gate decides only at run time)".into(),
            });
        }
        for t in 0..steps {
            let Some(step) = generator.step(t) else { break };
            for lr in &step.layers {
                if let Some(layer) = loads.get_mut(lr.layer as usize) {
                    for &e in &lr.experts {
                        if let Some(x) = layer.get_mut(e as usize) {
                            *x += 1.0 / steps as f64;
                        }
                    }
                }
            }
        }
        Ok(RoutingStats {
            loads,
            source: format!("counted over the first {steps} steps of the workload's routing"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::deepseek_v3;
    use crate::workload::{Phase, RoutingSource};

    #[test]
    fn loads_add_up_to_every_choice_and_follow_the_skew() {
        let model = deepseek_v3();
        let mut w = WorkloadSpec {
            name: "w".into(),
            phase: Phase::Decode,
            batch: 256,
            seq_len: 16,
            steps: 10,
            routing: RoutingSource::Zipf {
                s: 0.8,
                layer_corr: 0.0,
                drift: 0.0,
                seed: 1,
            },
        };
        let stats = RoutingStats::measure(&model, &w).unwrap();
        assert!(stats.loads[0].is_empty() && stats.loads[3].len() == 256);
        let total: f64 = stats.loads[3].iter().sum();
        assert!((total - 256.0 * 8.0).abs() < 1e-6, "{total}");
        let max = stats.loads[3].iter().copied().fold(0.0, f64::max);
        assert!(max > 3.0 * total / 256.0, "skewed: {max}");
        w.routing = RoutingSource::Gate { seed: 0 };
        let uniform = RoutingStats::measure(&model, &w).unwrap();
        assert!(uniform.loads[3].iter().all(|&x| (x - 8.0).abs() < 1e-9));
    }
}
