//! Routing statistics for the compiler, measured on the workload's own
//! routing source: how many tokens each expert of each layer receives, which
//! top-k sets of experts tokens choose together and how often, and how
//! tokens move from the experts of one MoE layer to those of the next.
//!
//! Placement passes that balance load (EPLB) read the loads instead of
//! assuming uniform routing; MoETuner reads the layer-to-layer transitions.
//! They are counted over the first few steps the run will see, so the
//! statistics and the measurement share their routing.

use super::RoutingGenerator;
use crate::model::{LayerKind, ModelSpec};
use crate::workload::WorkloadSpec;
use std::collections::BTreeMap;

/// Co-activation sets kept per layer (the most frequent).
pub const KEPT_SETS: usize = 32;

/// Steps sampled at most.
pub const SAMPLED_STEPS: u64 = 4;

/// Expert loads, co-activation sets and layer-to-layer transitions.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingStats {
    /// `loads[layer][expert]`: token choices per step on average (empty
    /// for dense layers).
    pub loads: Vec<Vec<f64>>,
    /// `transitions[layer]`: for an MoE layer followed by another MoE layer
    /// (the next one, skipping dense layers), `(e1, e2) -> n`: per step on
    /// average, tokens that chose `e1` here and `e2` there (a token with
    /// top-k choices in both counts once for each of the k x k pairs).
    /// Empty for the last MoE layer and for dense layers.
    pub transitions: Vec<BTreeMap<(u32, u32), f64>>,
    /// `coactivation[layer]`: the most frequent sets of experts chosen
    /// together by one token (sorted ids), with tokens per step on average,
    /// most frequent first (at most [`KEPT_SETS`]).
    pub coactivation: Vec<Vec<(Vec<u32>, f64)>>,
    /// How they were obtained, in words.
    pub source: String,
    /// `given[layer][expert]`: the loads the routing source was given (a
    /// trace's recorded steps summed, a `counts(...)` file's counts), in
    /// their own scale; empty for a generated source. What EPLB balances
    /// on, as upstream balances the counts an engine recorded.
    pub given: Vec<Vec<f64>>,
}

impl RoutingStats {
    /// Counts the first `min(steps, SAMPLED_STEPS)` steps of the workload's
    /// routing. With `routing = gate` nothing is known before the run, so the
    /// loads are uniform and `source` says so. Transitions are counted only
    /// when asked for (`with_transitions`): k x k pairs per token and layer
    /// are the costly part.
    pub fn measure(model: &ModelSpec, workload: &WorkloadSpec, with_transitions: bool) -> Result<RoutingStats, String> {
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
                transitions: vec![BTreeMap::new(); model.layers as usize],
                coactivation: vec![Vec::new(); model.layers as usize],
                source: "uniform (routing = gate decides only at run time)".into(),
                given: Vec::new(),
            });
        }
        let mut given = Vec::new();
        if let Some(recorded) = generator.given_loads(experts) {
            given = vec![Vec::new(); model.layers as usize];
            for (layer, loads) in recorded {
                if let Some(g) = given.get_mut(layer as usize) {
                    *g = loads;
                }
            }
        }
        let per_step = 1.0 / steps as f64;
        let mut transitions = vec![BTreeMap::new(); model.layers as usize];
        let mut sets: Vec<BTreeMap<Vec<u32>, f64>> = vec![BTreeMap::new(); model.layers as usize];
        for t in 0..steps {
            let Some(step) = generator.step(t) else { break };
            let k = step.top_k.max(1);
            for (i, lr) in step.layers.iter().enumerate() {
                let l = lr.layer as usize;
                if let Some(layer) = loads.get_mut(l) {
                    for &e in &lr.experts {
                        if let Some(x) = layer.get_mut(e as usize) {
                            *x += per_step;
                        }
                    }
                }
                for chosen in lr.experts.chunks(k) {
                    let mut set = chosen.to_vec();
                    set.sort_unstable();
                    *sets[l].entry(set).or_insert(0.0) += per_step;
                }
                // The next MoE layer's choices of the same tokens.
                if let Some(next) = step.layers.get(i + 1).filter(|_| with_transitions) {
                    for (here, there) in lr.experts.chunks(k).zip(next.experts.chunks(k)) {
                        for &a in here {
                            for &b in there {
                                *transitions[l].entry((a, b)).or_insert(0.0) += per_step;
                            }
                        }
                    }
                }
            }
        }
        let coactivation = sets
            .into_iter()
            .map(|m| {
                let mut v: Vec<(Vec<u32>, f64)> = m.into_iter().collect();
                v.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                v.truncate(KEPT_SETS);
                v
            })
            .collect();
        Ok(RoutingStats {
            loads,
            transitions,
            coactivation,
            source: format!("counted over the first {steps} steps of the workload's routing"),
            given,
        })
    }

    /// The loads a balancer should see: the counts the source was given
    /// when it gives them, else [`RoutingStats::loads`].
    pub fn balance_loads(&self) -> &[Vec<f64>] {
        if self.given.is_empty() {
            &self.loads
        } else {
            &self.given
        }
    }

    /// Where [`RoutingStats::balance_loads`] come from, in words.
    pub fn balance_source(&self) -> String {
        if self.given.is_empty() {
            self.source.clone()
        } else {
            "as the routing source records them".into()
        }
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
            slo: None,
        };
        let stats = RoutingStats::measure(&model, &w, true).unwrap();
        assert!(stats.loads[0].is_empty() && stats.loads[3].len() == 256);
        let total: f64 = stats.loads[3].iter().sum();
        assert!((total - 256.0 * 8.0).abs() < 1e-6, "{total}");
        let max = stats.loads[3].iter().copied().fold(0.0, f64::max);
        assert!(max > 3.0 * total / 256.0, "skewed: {max}");
        // Every token moves from its 8 experts in layer 3 to 8 in layer 4.
        let moved: f64 = stats.transitions[3].values().sum();
        assert!((moved - 256.0 * 64.0).abs() < 1e-6, "{moved}");
        assert!(stats.transitions.last().unwrap().is_empty());
        let sets = &stats.coactivation[3];
        assert!(!sets.is_empty() && sets.len() <= KEPT_SETS);
        assert!(sets.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(sets
            .iter()
            .all(|(s, _)| s.len() == 8 && s.windows(2).all(|p| p[0] < p[1])));
        w.routing = RoutingSource::Gate { seed: 0 };
        let uniform = RoutingStats::measure(&model, &w, true).unwrap();
        assert!(uniform.loads[3].iter().all(|&x| (x - 8.0).abs() < 1e-9));
    }

    #[test]
    fn count_and_calibrated_sources_give_stats_too() {
        use crate::routing::calibrate::SkewTarget;
        use crate::routing::counts::{parse_counts, select, CountSelection};
        use crate::routing::synthetic::tests::model;
        let text = r#"{"logical_count": [[0, 0, 0, 0], [50, 30, 15, 5], [10, 20, 30, 40]]}"#;
        let counts = select(&parse_counts(text, "s").unwrap(), "s", &CountSelection::default(), None).unwrap();
        let m = model(4, 2, 1, 1, 1, 2);
        let mut w = WorkloadSpec {
            name: "w".into(),
            phase: Phase::Prefill,
            batch: 8,
            seq_len: 4096,
            steps: 4,
            routing: RoutingSource::Counts {
                counts: Box::new(counts),
                seed: 1,
            },
            slo: None,
        };
        let stats = RoutingStats::measure(&m, &w, true).unwrap();
        assert!(stats.loads[0].is_empty());
        // 32,768 tokens x 2 choices a step, split 50 : 30 : 15 : 5 in layer 1.
        for (got, share) in stats.loads[1].iter().zip([0.5, 0.3, 0.15, 0.05]) {
            assert!((got / (65_536.0 * share) - 1.0).abs() < 0.02, "{:?}", stats.loads[1]);
        }
        assert!(!stats.transitions[1].is_empty() && stats.transitions[2].is_empty());
        // A balancer sees the recorded counts themselves, not the draws.
        assert_eq!(stats.given[1], vec![50.0, 30.0, 15.0, 5.0]);
        assert_eq!(stats.balance_loads()[2], vec![10.0, 20.0, 30.0, 40.0]);

        w.routing = RoutingSource::Calibrated {
            skew: SkewTarget::Every(1.5),
            dependency: None,
            drift: 0.0,
            seed: 2,
        };
        let m = model(8, 2, 1, 1, 0, 2);
        let stats = RoutingStats::measure(&m, &w, false).unwrap();
        assert!(stats.given.is_empty(), "a generated source records nothing");
        assert_eq!(stats.balance_loads(), &stats.loads[..]);
        let mean = 65_536.0 / 8.0;
        let max = stats.loads[0].iter().copied().fold(0.0, f64::max);
        assert!((max / mean / 1.5 - 1.0).abs() < 0.03, "{:?}", stats.loads[0]);
    }

    #[test]
    fn a_trace_gives_its_recorded_choices_summed_over_every_step() {
        use crate::routing::trace::write_trace;
        use crate::routing::RoutingGenerator;
        let model = deepseek_v3();
        let mut w = WorkloadSpec {
            name: "w".into(),
            phase: Phase::Decode,
            batch: 64,
            seq_len: 16,
            steps: 6,
            routing: RoutingSource::Zipf {
                s: 1.0,
                layer_corr: 0.0,
                drift: 0.1,
                seed: 3,
            },
            slo: None,
        };
        let mut generator = RoutingGenerator::new(&model, &w).unwrap();
        let steps: Vec<_> = (0..6).map(|t| generator.step(t).unwrap()).collect();
        let path = std::env::temp_dir().join(format!("moec-stats-trace-{}.json", std::process::id()));
        std::fs::write(&path, write_trace(&steps, 256, None)).unwrap();
        w.routing = RoutingSource::Trace {
            path: path.to_string_lossy().into_owned(),
        };
        let stats = RoutingStats::measure(&model, &w, false).unwrap();
        let _ = std::fs::remove_file(&path);
        // All six recorded steps, not the first four the loads count.
        let mut summed = vec![0.0; 256];
        for step in &steps {
            for &e in &step.layers[0].experts {
                summed[e as usize] += 1.0;
            }
        }
        let first = steps[0].layers[0].layer as usize;
        assert_eq!(stats.given[first], summed);
        assert!((stats.given[first].iter().sum::<f64>() - 6.0 * 64.0 * 8.0).abs() < 1e-9);
    }
}
