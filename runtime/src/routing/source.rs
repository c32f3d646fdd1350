//! The routing source of a run: one [`RoutingGenerator`] per workload that
//! turns its `routing = ...` into a [`StepRouting`] for every step.
//!
//! `uniform` and `zipf(...)` draw from the seeded synthetic generator
//! (`synthetic.rs`), `skewed(...)` from the same generator with MoEShard's
//! fixed popularity (`skewed.rs`), `calibrated(...)` from it once
//! `calibrate.rs` has solved its parameters, `trace("...")` replays a
//! recorded trace (`trace.rs`, format in `docs/TRACES.md`), `counts(...)`
//! samples recorded expert counts (`count_sampler.rs`), and `gate` yields
//! nothing: the numeric executor runs the model's own router and produces
//! the routing itself.

use super::calibrate::{self, CalibrationTarget};
use super::count_sampler::CountSampler;
use super::skewed::{self, SkewedParams};
use super::synthetic::{Synthetic, ZipfParams};
use super::trace::{read_trace, TraceReplay};
use super::StepRouting;
use crate::model::ModelSpec;
use crate::workload::{RoutingSource, WorkloadSpec};
use std::path::Path;

/// Every step's routing for one model and workload.
#[derive(Clone, Debug)]
pub struct RoutingGenerator {
    inner: Inner,
}

#[derive(Clone, Debug)]
enum Inner {
    Synthetic(Box<Synthetic>),
    Trace(Box<TraceReplay>),
    Counts(Box<CountSampler>),
    /// The real gate decides at run time.
    Gate,
    /// A model without MoE layers: every step routes nothing.
    Dense {
        tokens: usize,
    },
}

impl RoutingGenerator {
    /// The generator for `workload`'s routing source on `model`. Trace paths
    /// are used as given (the compiler resolved them against the .moe file's
    /// folder). `Gate` gives a generator whose [`step`](Self::step) returns
    /// None: the numeric executor's gate decides. Errors say what is wrong
    /// with the model, the parameters or the trace file (naming it).
    pub fn new(model: &ModelSpec, workload: &WorkloadSpec) -> Result<RoutingGenerator, String> {
        let tokens = usize::try_from(workload.tokens_per_step()).map_err(|_| {
            format!(
                "workload `{}`: {} tokens per step do not fit this machine's address space",
                workload.name,
                workload.tokens_per_step()
            )
        })?;
        let has_moe = model.moe.is_some() && model.moe_layers() > 0;
        let inner = match &workload.routing {
            RoutingSource::Gate { .. } => Inner::Gate,
            RoutingSource::Uniform { .. }
            | RoutingSource::Zipf { .. }
            | RoutingSource::Skewed { .. }
            | RoutingSource::Calibrated { .. }
                if !has_moe =>
            {
                Inner::Dense { tokens }
            }
            RoutingSource::Uniform { seed } => Inner::Synthetic(Box::new(Synthetic::uniform(model, tokens, *seed)?)),
            &RoutingSource::Zipf {
                s,
                layer_corr,
                drift,
                seed,
            } => Inner::Synthetic(Box::new(Synthetic::zipf(
                model,
                tokens,
                ZipfParams { s, layer_corr, drift },
                seed,
            )?)),
            &RoutingSource::Skewed { hot, boost, seed } => Inner::Synthetic(Box::new(skewed::generator(
                model,
                tokens,
                SkewedParams { hot, boost },
                seed,
            )?)),
            RoutingSource::Trace { path } => {
                let trace = read_trace(Path::new(path))?;
                Inner::Trace(Box::new(TraceReplay::new(trace, path, model, tokens)?))
            }
            RoutingSource::Counts { counts, seed } => Inner::Counts(Box::new(
                CountSampler::new(counts, model, tokens, *seed).map_err(|e| format!("{}: {e}", counts.source))?,
            )),
            RoutingSource::Calibrated {
                skew,
                dependency,
                drift,
                seed,
            } => {
                let target = CalibrationTarget {
                    skew: skew.clone(),
                    dependency: *dependency,
                };
                let solved = calibrate::solve(model, &target, *seed, calibrate::SAMPLE_TOKENS)
                    .map_err(|e| format!("calibrated routing: {e}"))?;
                let params = ZipfParams {
                    s: 0.0,
                    layer_corr: solved.layer_corr,
                    drift: *drift,
                };
                Inner::Synthetic(Box::new(Synthetic::with_exponents(
                    model,
                    tokens,
                    &solved.exponents,
                    params,
                    *seed,
                )?))
            }
        };
        Ok(RoutingGenerator { inner })
    }

    /// The routing of step `t` for `workload.tokens_per_step()` tokens over
    /// every MoE layer of the model, in layer order; None for `Gate`. Steps
    /// may be asked in any order and always give the same answer (going
    /// back in time replays the synthetic popularity walk from step 0).
    pub fn step(&mut self, t: u64) -> Option<StepRouting> {
        match &mut self.inner {
            Inner::Synthetic(g) => Some(g.step(t)),
            Inner::Trace(r) => Some(r.step(t)),
            Inner::Counts(c) => Some(c.step(t)),
            Inner::Gate => None,
            Inner::Dense { tokens } => Some(StepRouting {
                tokens: *tokens,
                top_k: 0,
                layers: Vec::new(),
            }),
        }
    }

    /// The loads the source was given rather than draws, per model MoE
    /// layer (model layer, choices per expert): a trace's recorded steps
    /// summed, a `counts(...)` file's counts; `None` for a generated source.
    pub fn given_loads(&self, experts: usize) -> Option<Vec<(u32, Vec<f64>)>> {
        match &self.inner {
            Inner::Trace(r) => Some(r.recorded_loads(experts)),
            Inner::Counts(c) => Some(c.recorded_loads()),
            _ => None,
        }
    }

    /// Whether the routing comes from the real gate at run time.
    pub fn is_gate(&self) -> bool {
        matches!(self.inner, Inner::Gate)
    }

    /// The replay, when the source is a trace (for its layer mapping).
    pub fn trace(&self) -> Option<&TraceReplay> {
        match &self.inner {
            Inner::Trace(r) => Some(r),
            _ => None,
        }
    }

    /// The sampler, when the source is recorded counts (for its layer mapping).
    pub fn counts(&self) -> Option<&CountSampler> {
        match &self.inner {
            Inner::Counts(c) => Some(c),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::tests::{deepseek_v3, model};
    use super::super::trace::write_trace;
    use super::*;
    use crate::workload::Phase;

    fn workload(phase: Phase, batch: u64, seq_len: u64, routing: RoutingSource) -> WorkloadSpec {
        WorkloadSpec {
            name: "w".into(),
            phase,
            batch,
            seq_len,
            steps: 10,
            routing,
            slo: None,
        }
    }

    #[test]
    fn each_source_gives_its_routing() {
        let m = deepseek_v3();
        let zipf = RoutingSource::Zipf {
            s: 1.2,
            layer_corr: 0.6,
            drift: 0.02,
            seed: 7,
        };
        let mut g = RoutingGenerator::new(&m, &workload(Phase::Decode, 256, 4096, zipf.clone())).unwrap();
        let s = g.step(0).unwrap();
        assert_eq!((s.tokens, s.top_k, s.layers.len()), (256, 8, 58));
        assert_eq!(s.layers[0].layer, 3);
        assert_eq!(s.layers[57].layer, 60);
        // Prefill pushes batch x seq_len tokens.
        let mut p = RoutingGenerator::new(&m, &workload(Phase::Prefill, 2, 100, zipf.clone())).unwrap();
        assert_eq!(p.step(0).unwrap().tokens, 200);
        // Same workload, same routing; the synthetic generator is what it uses.
        let mut again = RoutingGenerator::new(&m, &workload(Phase::Decode, 256, 4096, zipf)).unwrap();
        assert_eq!(again.step(0), Some(s.clone()));
        let mut direct = Synthetic::zipf(
            &m,
            256,
            ZipfParams {
                s: 1.2,
                layer_corr: 0.6,
                drift: 0.02,
            },
            7,
        )
        .unwrap();
        assert_eq!(direct.step(0), s);

        // skewed(...) is the same generator with MoEShard's popularity.
        let skewed = RoutingSource::Skewed {
            hot: 0.1,
            boost: 0.6,
            seed: 7,
        };
        let mut k = RoutingGenerator::new(&m, &workload(Phase::Decode, 256, 4096, skewed)).unwrap();
        let direct = skewed::generator(&m, 256, SkewedParams::MOESHARD, 7).unwrap().step(2);
        assert_eq!(k.step(2), Some(direct));

        let mut u =
            RoutingGenerator::new(&m, &workload(Phase::Decode, 16, 1, RoutingSource::Uniform { seed: 1 })).unwrap();
        assert_eq!(u.step(3).unwrap().layers.len(), 58);

        let mut gate =
            RoutingGenerator::new(&m, &workload(Phase::Decode, 16, 1, RoutingSource::Gate { seed: 1 })).unwrap();
        assert!(gate.is_gate());
        assert_eq!(gate.step(0), None);
    }

    #[test]
    fn trace_source_replays_the_file_and_names_it_in_errors() {
        let m = model(16, 2, 1, 1, 0, 3);
        let mut syn = Synthetic::uniform(&m, 4, 5).unwrap();
        let steps: Vec<StepRouting> = (0..2).map(|t| syn.step(t)).collect();
        let dir = std::env::temp_dir().join(format!("moec-routing-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("trace.json");
        std::fs::write(&path, write_trace(&steps, 16, None)).unwrap();
        let w = workload(
            Phase::Decode,
            4,
            1,
            RoutingSource::Trace {
                path: path.display().to_string(),
            },
        );
        let mut g = RoutingGenerator::new(&m, &w).unwrap();
        assert_eq!(g.step(0), Some(steps[0].clone()));
        assert_eq!(g.step(3), Some(steps[1].clone()));

        std::fs::write(&path, "{\"format\": \"moec-routing-trace\", \"version\": 9}").unwrap();
        let e = RoutingGenerator::new(&m, &w).unwrap_err();
        assert!(
            e.starts_with(&format!("{}: routing trace version 9", path.display())),
            "{e}"
        );
        // The wrong model for the trace.
        std::fs::write(&path, write_trace(&steps, 16, None)).unwrap();
        let e = RoutingGenerator::new(&model(16, 4, 1, 1, 0, 3), &w).unwrap_err();
        assert!(e.contains("top_k = 2 but model"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dense_models_route_nothing_and_bad_params_are_errors() {
        let mut dense = model(16, 2, 1, 1, 0, 3);
        dense.moe = None;
        let mut g = RoutingGenerator::new(
            &dense,
            &workload(Phase::Decode, 8, 1, RoutingSource::Uniform { seed: 0 }),
        )
        .unwrap();
        let s = g.step(0).unwrap();
        assert!(s.layers.is_empty());
        let bad = RoutingSource::Zipf {
            s: f64::NAN,
            layer_corr: 0.0,
            drift: 0.0,
            seed: 0,
        };
        let e = RoutingGenerator::new(&model(16, 2, 1, 1, 0, 3), &workload(Phase::Decode, 8, 1, bad)).unwrap_err();
        assert!(e.contains("zipf: s = NaN"), "{e}");
        let bad = RoutingSource::Skewed {
            hot: 0.0,
            boost: 0.6,
            seed: 0,
        };
        let e = RoutingGenerator::new(&model(16, 2, 1, 1, 0, 3), &workload(Phase::Decode, 8, 1, bad)).unwrap_err();
        assert!(e.starts_with("skewed: hot = 0"), "{e}");
    }

    #[test]
    fn count_and_calibrated_sources_route_through_the_generator() {
        use super::super::calibrate::SkewTarget;
        use super::super::counts::{parse_counts, select, CountSelection};
        let text = r#"{"logical_count": [[40, 30, 20, 10], [10, 20, 30, 40]]}"#;
        let counts = select(&parse_counts(text, "s").unwrap(), "s", &CountSelection::default(), None).unwrap();
        let m = model(4, 2, 1, 1, 0, 2);
        let routing = RoutingSource::Counts {
            counts: Box::new(counts.clone()),
            seed: 3,
        };
        let mut g = RoutingGenerator::new(&m, &workload(Phase::Decode, 64, 16, routing.clone())).unwrap();
        let direct = CountSampler::new(&counts, &m, 64, 3).unwrap();
        assert_eq!(g.step(5), Some(direct.step(5)));
        assert_eq!(g.counts().map(|c| c.layer_map()), Some(vec![(0, 0), (1, 1)]));
        // The counts do not fit a model with other experts: the error names them.
        let e = RoutingGenerator::new(&model(8, 2, 1, 1, 0, 2), &workload(Phase::Decode, 4, 1, routing)).unwrap_err();
        assert!(
            e.starts_with("s: SGLang logical_count") && e.contains("cover 4 experts"),
            "{e}"
        );

        let calibrated = RoutingSource::Calibrated {
            skew: SkewTarget::Every(1.2),
            dependency: Some(0.8),
            drift: 0.0,
            seed: 1,
        };
        let m = model(8, 2, 1, 1, 0, 3);
        let mut g = RoutingGenerator::new(&m, &workload(Phase::Decode, 32, 16, calibrated.clone())).unwrap();
        let s = g.step(0).unwrap();
        assert_eq!((s.tokens, s.layers.len()), (32, 3));
        let mut again = RoutingGenerator::new(&m, &workload(Phase::Decode, 32, 16, calibrated)).unwrap();
        assert_eq!(again.step(0), Some(s));
        let bad = RoutingSource::Calibrated {
            skew: SkewTarget::Every(9.0),
            dependency: None,
            drift: 0.0,
            seed: 1,
        };
        let e = RoutingGenerator::new(&m, &workload(Phase::Decode, 8, 1, bad)).unwrap_err();
        assert!(e.starts_with("calibrated routing: skew = 9 cannot be reached"), "{e}");
    }
}
