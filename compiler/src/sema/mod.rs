//! Semantic analysis: the syntax trees of a root file and its imports to a
//! checked [`Program`] of models, machines, workloads and plans.
//!
//! Every value is type-, unit- and range-checked here; names are resolved;
//! the machine is built (so defects are validated) and each plan is checked
//! for what can be known before any pass runs (an expert larger than a die).
//! All errors are collected; an item with errors is left out of the program.

pub mod machine;
pub mod model;
pub mod plan;
pub mod reader;
pub mod suggest;
pub mod units;
pub mod workload;

pub use plan::{AttentionParallel, Plan, PlacementChoice};

use crate::diag::{Code, Diagnostic};
use crate::source::SourceMap;
use crate::syntax::ast::{Decl, DeclKind, Item, SourceFile};
use crate::syntax::{FileId, Span};
use moec_runtime::machine::Machine;
use moec_runtime::model::ModelSpec;
use moec_runtime::workload::WorkloadSpec;

/// Everything a set of files defines, checked. Items keep their source order;
/// an item that failed its checks is present by name only, so a plan that
/// names it does not get a second, misleading "unknown name" error.
#[derive(Default)]
pub struct Program {
    pub models: Vec<Named<ModelSpec>>,
    pub machines: Vec<Named<Machine>>,
    pub workloads: Vec<Named<WorkloadSpec>>,
    pub plans: Vec<Plan>,
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
}

/// Checks parsed files (root first, then imports) into a program.
pub fn analyze(sources: &SourceMap, files: &[(FileId, SourceFile)]) -> (Program, Vec<Diagnostic>) {
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
        let named = || Named { name: d.name.text.clone(), span: d.name.span, item: None::<()> };
        match d.kind {
            DeclKind::Model => program.models.push(named().with(model::check(d, &mut diags))),
            DeclKind::Machine => program.machines.push(named().with(machine::check(d, &mut diags))),
            DeclKind::Workload => {
                let base = sources.path(file).parent().unwrap_or(std::path::Path::new("")).to_path_buf();
                program.workloads.push(named().with(workload::check(d, &base, &mut diags)))
            }
            DeclKind::Plan => {}
        }
    }
    for &(_, d) in decls.iter().filter(|(_, d)| d.kind == DeclKind::Plan) {
        if let Some(p) = plan::check(d, &program, &mut diags) {
            program.plans.push(p);
        }
    }
    (program, diags)
}

impl Named<()> {
    /// The same name with the checked item (or `None`) attached.
    fn with<T>(self, item: Option<T>) -> Named<T> {
        Named { name: self.name, span: self.span, item }
    }
}

/// E0010 for a second item of the same kind and name.
fn report_duplicates(decls: &[(FileId, &Decl)], diags: &mut Vec<Diagnostic>) {
    for (i, (_, d)) in decls.iter().enumerate() {
        if let Some((_, first)) = decls[..i].iter().find(|(_, o)| o.kind == d.kind && o.name.text == d.name.text) {
            diags.push(
                Diagnostic::error(Code::E0010, d.name.span, format!("{} `{}` is defined twice", d.kind.keyword(), d.name.text))
                    .with_label("defined again here")
                    .with_secondary(first.name.span, "first defined here")
                    .with_hint("rename one of them"),
            );
        }
    }
}
