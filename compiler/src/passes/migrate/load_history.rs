//! Expert loads over the steps of a run, as an online balancer sees them:
//! observed step by step from the workload's own routing source, and
//! predicted for a step from a window of the steps before it.
//!
//! A serving balancer counts the tokens each expert received (SGLang's
//! `logical_count`, EPLB's statistics); it never sees the future. So a
//! policy asks [`LoadHistory::predict`] for step `s` and gets the mean of
//! the loads observed in `s - window .. s`, nothing of step `s` itself.
//!
//! Counting every token of every step of a long run would cost as much as
//! generating the run's routing twice; a balancer's counts are a sample
//! anyway. So the history counts the first [`SAMPLE_TOKENS`] tokens of each
//! step (the synthetic generators give token `i` the same choices whatever
//! the batch, so these are exactly the run's first tokens) and scales the
//! counts to the step's tokens.

use moec_runtime::model::ModelSpec;
use moec_runtime::routing::RoutingGenerator;
use moec_runtime::workload::{Phase, WorkloadSpec};

/// Tokens of each step counted.
pub const SAMPLE_TOKENS: u64 = 2048;

/// Loads kept at most (steps x MoE layers x experts, 4 bytes each): 512 MiB.
const MAX_LOADS: u64 = 1 << 27;

/// Observed expert loads of every step of a run.
pub struct LoadHistory {
    /// `loads[step][i][e]`: tokens expert `e` of the `i`th MoE layer
    /// received in `step` (scaled from the sample).
    loads: Vec<Vec<Vec<f32>>>,
    sampled: u64,
    tokens: u64,
}

impl LoadHistory {
    /// Observes `steps` steps of `workload`'s routing on `model`, for the
    /// MoE layers `layers` (model layer ids, in order).
    pub fn observe(
        model: &ModelSpec,
        workload: &WorkloadSpec,
        layers: &[u32],
        steps: u64,
    ) -> Result<LoadHistory, String> {
        let experts = model.moe.as_ref().map_or(0, |m| m.experts as usize);
        let per_step = (layers.len() as u64).saturating_mul(experts as u64).max(1);
        if steps.saturating_mul(per_step) > MAX_LOADS {
            return Err(format!(
                "a migration policy plans over at most {} steps of this model ({} MoE layers of {experts} experts), not {steps}: run fewer steps (--steps)",
                MAX_LOADS / per_step,
                layers.len()
            ));
        }
        let tokens = workload.tokens_per_step();
        let mut sample = workload.clone();
        match sample.phase {
            Phase::Decode => sample.batch = sample.batch.min(SAMPLE_TOKENS),
            Phase::Prefill => sample.batch = sample.batch.min(SAMPLE_TOKENS.div_ceil(sample.seq_len.max(1))).max(1),
        }
        let sampled = sample.tokens_per_step().max(1);
        let scale = tokens as f32 / sampled as f32;
        let mut generator = RoutingGenerator::new(model, &sample)?;
        if generator.is_gate() {
            return Err(
                "routing = gate decides only while the run goes on, so a migration policy has no loads to plan from; \
                 give the workload a routing source (zipf, calibrated, counts, trace)"
                    .into(),
            );
        }
        let mut loads = Vec::with_capacity(steps as usize);
        for s in 0..steps {
            let step = generator.step(s).ok_or("the routing source gave no step")?;
            let per_layer = layers
                .iter()
                .map(|&l| {
                    let mut v = vec![0.0f32; experts];
                    for (x, n) in v.iter_mut().zip(step.expert_loads(l, experts)) {
                        *x = n as f32 * scale;
                    }
                    v
                })
                .collect();
            loads.push(per_layer);
        }
        Ok(LoadHistory { loads, sampled, tokens })
    }

    /// Steps observed.
    pub fn steps(&self) -> u64 {
        self.loads.len() as u64
    }

    /// The predicted loads of MoE layer `i` at `step`: the mean over the
    /// `window` steps before it (`None` at step 0: nothing seen yet).
    pub fn predict(&self, step: u64, window: u64, i: usize) -> Option<Vec<f64>> {
        let end = step.min(self.steps());
        let start = end.saturating_sub(window.max(1));
        if end == start {
            return None;
        }
        let experts = self.loads[start as usize].get(i)?.len();
        let mut mean = vec![0.0f64; experts];
        for s in start..end {
            for (m, &x) in mean.iter_mut().zip(&self.loads[s as usize][i]) {
                *m += f64::from(x);
            }
        }
        let n = (end - start) as f64;
        mean.iter_mut().for_each(|m| *m /= n);
        Some(mean)
    }

    /// How the loads were obtained, in words (for the notes).
    pub fn source(&self) -> String {
        if self.sampled >= self.tokens {
            format!("observed on every token of {} steps", self.steps())
        } else {
            format!(
                "observed on the first {} of {} tokens of each of {} steps",
                self.sampled,
                self.tokens,
                self.steps()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(loads: Vec<Vec<Vec<f32>>>) -> LoadHistory {
        LoadHistory {
            loads,
            sampled: 1,
            tokens: 1,
        }
    }

    #[test]
    fn the_prediction_averages_only_the_window_before_the_step() {
        let h = history(vec![
            vec![vec![1.0, 0.0]],
            vec![vec![3.0, 2.0]],
            vec![vec![5.0, 4.0]],
            vec![vec![100.0, 100.0]],
        ]);
        assert_eq!(h.predict(0, 2, 0), None);
        assert_eq!(h.predict(1, 2, 0), Some(vec![1.0, 0.0]));
        assert_eq!(h.predict(3, 2, 0), Some(vec![4.0, 3.0]));
        // Step 3's own loads never enter its prediction.
        assert_eq!(h.predict(3, 10, 0), Some(vec![3.0, 2.0]));
    }
}
