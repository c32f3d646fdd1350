//! Semantic analysis: the syntax trees of a root file and its imports to a
//! checked [`Program`] of models, machines, workloads and plans.
//!
//! Every value is type-, unit- and range-checked here; names are resolved;
//! the machine is built (so defects are validated) and each plan is checked
//! for what can be known before any pass runs (an expert larger than a die).
//! All errors are collected; an item with errors is left out of the program.

pub mod machine;
pub mod migration;
pub mod model;
pub mod plan;
pub mod reader;
pub mod suggest;
pub mod units;
pub mod workload;

pub use plan::{AttentionParallel, ParallelChoice, PlacementChoice, Plan};
pub use workload::RoutingSite;

use crate::diag::{Code, Diagnostic};
use crate::placement_file::{self, ExpertLayout, Target};
use crate::source::{SourceMap, SourceReader};
use crate::syntax::ast::{Decl, DeclKind, Item, SourceFile};
use crate::syntax::{FileId, Span};
use moec_runtime::machine::Machine;
use moec_runtime::model::ModelSpec;
use moec_runtime::workload::WorkloadSpec;
use std::collections::BTreeMap;

/// Everything a set of files defines, checked. Items keep their source order;
/// an item that failed its checks is present by name only, so a plan that
/// names it does not get a second, misleading "unknown name" error.
#[derive(Default)]
pub struct Program {
    pub models: Vec<Named<ModelSpec>>,
    pub machines: Vec<Named<Machine>>,
    pub workloads: Vec<Named<WorkloadSpec>>,
    /// Where each workload's `routing = ...` is written (parallel to
    /// `workloads`; None when it is left at its default).
    pub routing_sites: Vec<Option<RoutingSite>>,
    pub plans: Vec<Plan>,
    /// The placement each `placement = file("...")` plan read, by plan name.
    pub placement_files: BTreeMap<String, ExpertLayout>,
}

/// An item by name; `item` is `None` when it had errors.
pub struct Named<T> {
    pub name: String,
    pub span: Span,
    pub item: Option<T>,
}

impl Program {
    fn names<T>(list: &[Named<T>]) -> Vec<(&str, bool)> {
        list.iter().map(|n| (n.name.as_str(), n.item.is_some())).collect()
    }

    /// Model names, each with whether it checked.
    pub fn model_names(&self) -> Vec<(&str, bool)> {
        Self::names(&self.models)
    }

    /// Machine names, each with whether it checked.
    pub fn machine_names(&self) -> Vec<(&str, bool)> {
        Self::names(&self.machines)
    }

    /// Workload names, each with whether it checked.
    pub fn workload_names(&self) -> Vec<(&str, bool)> {
        Self::names(&self.workloads)
    }

    /// The model at index `i`, if it checked.
    pub fn model(&self, i: usize) -> Option<&ModelSpec> {
        self.models.get(i)?.item.as_ref()
    }

    /// The machine at index `i`, if it checked.
    pub fn machine(&self, i: usize) -> Option<&Machine> {
        self.machines.get(i)?.item.as_ref()
    }

    /// The workload at index `i`, if it checked.
    pub fn workload(&self, i: usize) -> Option<&WorkloadSpec> {
        self.workloads.get(i)?.item.as_ref()
    }

    /// The plan named `name`.
    pub fn plan(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// The placement a `placement = file("...")` plan read.
    pub fn placement_file(&self, plan: &str) -> Option<&ExpertLayout> {
        self.placement_files.get(plan)
    }
}

/// Checks parsed files (root first, then imports) into a program. Files
/// that items name (a plan's placement file, a workload's routing counts)
/// are read through `reader`.
pub fn analyze(
    reader: &dyn SourceReader,
    sources: &SourceMap,
    files: &[(FileId, SourceFile)],
) -> (Program, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let mut program = Program::default();
    let decls: Vec<(FileId, &Decl)> = files
        .iter()
        .flat_map(|(id, f)| {
            f.items.iter().filter_map(move |i| match i {
                Item::Decl(d) => Some((*id, d)),
                Item::Import(_) => None,
            })
        })
        .collect();
    report_duplicates(&decls, &mut diags);

    // Models, machines and workloads first: plans refer to them.
    for &(file, d) in &decls {
        let named = || Named {
            name: d.name.text.clone(),
            span: d.name.span,
            item: None::<()>,
        };
        match d.kind {
            DeclKind::Model => program.models.push(named().with(model::check(d, &mut diags))),
            DeclKind::Machine => program.machines.push(named().with(machine::check(d, &mut diags))),
            DeclKind::Workload => {
                let (spec, site) = workload::check(d, base_dir(sources, file), reader, &mut diags);
                program.workloads.push(named().with(spec));
                program.routing_sites.push(site);
            }
            DeclKind::Plan => {}
        }
    }
    for &(file, d) in decls.iter().filter(|(_, d)| d.kind == DeclKind::Plan) {
        let Some(p) = plan::check(d, &program, &mut diags) else {
            continue;
        };
        if let PlacementChoice::File { path, format, span } = &p.placement {
            let (Some(model), Some(machine)) = (program.model(p.model), program.machine(p.machine)) else {
                continue;
            };
            let target = Target { model, machine };
            match placement_file::read(reader, &base_dir(sources, file).join(path), *format, target) {
                Ok(layout) => {
                    program.placement_files.insert(p.name.clone(), layout);
                }
                Err(problem) => {
                    diags.push(problem.into_diagnostic(Some(*span)));
                    continue;
                }
            }
        }
        program.plans.push(p);
    }
    (program, diags)
}

/// The folder of a file: where the paths written in it are relative to.
fn base_dir(sources: &SourceMap, file: FileId) -> &std::path::Path {
    sources.path(file).parent().unwrap_or(std::path::Path::new(""))
}

impl Named<()> {
    /// The same name with the checked item (or `None`) attached.
    fn with<T>(self, item: Option<T>) -> Named<T> {
        Named {
            name: self.name,
            span: self.span,
            item,
        }
    }
}

/// E0010 for a second item of the same kind and name.
fn report_duplicates(decls: &[(FileId, &Decl)], diags: &mut Vec<Diagnostic>) {
    for (i, (_, d)) in decls.iter().enumerate() {
        if let Some((_, first)) = decls[..i]
            .iter()
            .find(|(_, o)| o.kind == d.kind && o.name.text == d.name.text)
        {
            diags.push(
                Diagnostic::error(
                    Code::E0010,
                    d.name.span,
                    format!("{} `{}` is defined twice", d.kind.keyword(), d.name.text),
                )
                .with_label("defined again here")
                .with_secondary(first.name.span, "first defined here")
                .with_hint("rename one of them"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::driver;
    use crate::source::MemoryReader;
    use moec_runtime::machine::DieId;
    use moec_runtime::workload::{Phase, RoutingSource};
    use std::path::Path;

    fn session(files: &[(&str, &str)]) -> driver::Session {
        let mut reader = MemoryReader::default();
        for (name, text) in files {
            reader.0.insert((*name).into(), text.as_bytes().to_vec());
        }
        driver::check(&reader, Path::new(files[0].0)).unwrap()
    }

    const MACHINE: &str = "machine w {
        topology = mesh(4, 4, wafers = (2, 1))
        die { compute = 2250 TFLOPS; memory = 96 GiB; memory_bw = 8 TB/s }
        link { bandwidth = 900 GB/s; latency = 20 ns }
        inter_wafer { bandwidth = 400 Gb/s; latency = 1 us }
        defects { die(7, 3); link((0, 0), (1, 0)) }
    }";

    #[test]
    fn quantities_arrive_in_base_units_and_defects_apply() {
        let s = session(&[("m.moe", MACHINE)]);
        assert!(!s.has_errors(), "{:?}", s.diagnostics.sorted());
        let m = s.program.machine(0).unwrap();
        assert_eq!(m.spec().die.memory.0, 96 << 30);
        assert_eq!(m.spec().die.compute.0, 2.25e15);
        assert_eq!(m.spec().inter_wafer_link.as_ref().unwrap().bandwidth.0, 50e9);
        assert_eq!(m.die_count(), 32);
        assert_eq!(m.alive_dies().len(), 31);
        assert!(!m.is_alive(m.die_at(moec_runtime::machine::Coord::new(7, 3)).unwrap()));
        assert!(m.is_alive(DieId(0)));
    }

    #[test]
    fn workloads_know_their_tokens_and_routing() {
        let s = session(&[(
            "w.moe",
            "workload p { phase = prefill; batch = 4; seq_len = 1024; routing = zipf(s = 1.1, drift = 0.1) }",
        )]);
        let w = s.program.workload(0).unwrap();
        assert_eq!((w.phase, w.tokens_per_step(), w.steps), (Phase::Prefill, 4096, 1));
        assert_eq!(
            w.routing,
            RoutingSource::Zipf {
                s: 1.1,
                layer_corr: 0.0,
                drift: 0.1,
                seed: 0
            }
        );
    }

    #[test]
    fn skewed_routing_takes_moeshards_defaults_and_refuses_out_of_range_arguments() {
        let workload =
            |routing: &str| format!("workload w {{ phase = decode; batch = 4; context = 8; routing = {routing} }}");
        for (routing, expected) in [
            ("skewed", (0.1, 0.6, 0)),
            ("skewed(seed = 7)", (0.1, 0.6, 7)),
            ("skewed(hot = 0.25, boost = 2, seed = 3)", (0.25, 2.0, 3)),
            ("skewed(hot = 1, boost = 0)", (1.0, 0.0, 0)),
        ] {
            let s = session(&[("w.moe", &workload(routing))]);
            assert!(!s.has_errors(), "{routing}: {:?}", s.diagnostics.sorted());
            let (hot, boost, seed) = expected;
            assert_eq!(
                s.program.workload(0).unwrap().routing,
                RoutingSource::Skewed { hot, boost, seed },
                "{routing}"
            );
        }
        for (routing, at) in [
            ("skewed(hot = 0)", "0"),
            ("skewed(hot = 1.5, seed = 7)", "1.5"),
            ("skewed(boost = -1)", "-1"),
        ] {
            let s = session(&[("w.moe", &workload(routing))]);
            let d = s.diagnostics.sorted();
            assert_eq!(d.len(), 1, "{routing}: {d:?}");
            assert_eq!(d[0].code.as_str(), "E0008", "{routing}");
            let src = s.loaded.sources.text(crate::syntax::FileId(0));
            assert_eq!(&src[d[0].span.range()], at, "{routing}");
            assert!(d[0].hint.as_deref().is_some_and(|h| h.contains("MoEShard")), "{d:?}");
        }
        // An argument skewed does not take, or a source name misspelt.
        let s = session(&[("w.moe", &workload("skewed(s = 1.2)"))]);
        assert_eq!(s.diagnostics.sorted()[0].code.as_str(), "E0018");
        let s = session(&[("w.moe", &workload("skewd"))]);
        let d = s.diagnostics.sorted();
        assert!(d[0].hint.as_deref().is_some_and(|h| h.contains("skewed")), "{d:?}");
    }

    #[test]
    fn names_are_unique_across_imports_and_imports_are_read_once() {
        let s = session(&[
            (
                "a.moe",
                "import \"b.moe\"\nimport \"./b.moe\"\nmachine w { topology = switch(2) }",
            ),
            ("b.moe", MACHINE),
        ]);
        let codes: Vec<&str> = s.diagnostics.sorted().iter().map(|d| d.code.as_str()).collect();
        // One duplicate (b.moe read once), plus a's own missing die and link.
        assert_eq!(codes.iter().filter(|c| **c == "E0010").count(), 1, "{codes:?}");
        assert_eq!(s.loaded.files.len(), 2);
    }

    #[test]
    fn a_plan_naming_an_item_with_errors_gets_no_second_error() {
        let s = session(&[(
            "p.moe",
            "model m { layers = 0 }\nplan x { model = m; machine = q; workload = r }",
        )]);
        let codes: Vec<&str> = s.diagnostics.sorted().iter().map(|d| d.code.as_str()).collect();
        assert!(codes.contains(&"E0008"));
        assert_eq!(
            codes.iter().filter(|c| **c == "E0009").count(),
            2,
            "machine q and workload r, not model m: {codes:?}"
        );
    }

    #[test]
    fn count_and_calibrated_routing_read_their_arguments() {
        use moec_runtime::routing::calibrate::SkewTarget;
        let sglang = r#"{"logical_count": [[3, 1, 2, 2, 1, 1, 1, 1], [1, 1, 1, 5, 2, 2, 2, 2]], "rank": 0}"#;
        let model = "model m { layers = 2; hidden = 64; vocab = 10; attention mha { heads = 2; head_dim = 32 }
                       moe { experts = 8; top_k = 1; expert_ffn = 64 } }
                     machine s { topology = switch(2); die { compute = 1 TFLOPS; memory = 1 TB; memory_bw = 1 TB/s }
                       link { bandwidth = 1 GB/s; latency = 1 ns } }";
        let text = format!(
            "{model}
             workload a {{ phase = decode; batch = 4; context = 8; routing = counts(\"d/sg.json\", seed = 3) }}
             workload b {{ phase = decode; batch = 4; context = 8
               routing = calibrated(skew = [1.2, 1.4], dependency = 0.7, drift = 0.01, seed = 2) }}
             plan p {{ model = m; machine = s; workload = a }}
             plan q {{ model = m; machine = s; workload = b }}"
        );
        let s = session(&[("w.moe", &text), ("d/sg.json", sglang)]);
        assert!(!s.has_errors(), "{:?}", s.diagnostics.sorted());
        let RoutingSource::Counts { counts, seed } = &s.program.workload(0).unwrap().routing else {
            panic!("counts");
        };
        assert_eq!((counts.experts, counts.recorded_layers(), *seed), (8, vec![0, 1], 3));
        assert_eq!(
            s.program.workload(1).unwrap().routing,
            RoutingSource::Calibrated {
                skew: SkewTarget::PerLayer(vec![1.2, 1.4]),
                dependency: Some(0.7),
                drift: 0.01,
                seed: 2
            }
        );
        // The plan under the calibrated workload keeps what it achieved.
        assert!(s.program.plan("p").unwrap().calibration.is_none());
        let c = s.program.plan("q").unwrap().calibration.as_ref().unwrap();
        assert_eq!(c.skew.len(), 2);
        assert!((c.skew[1].achieved / 1.4 - 1.0).abs() < 0.05, "{c:?}");
        assert!((c.dependency.unwrap() - 0.7).abs() < 0.02, "{c:?}");
        // The sites point at the arguments.
        let site = s.program.routing_sites[1].as_ref().unwrap();
        let src = s.loaded.sources.text(crate::syntax::FileId(0));
        assert_eq!(&src[site.arg("dependency").range()], "0.7");
    }
}
