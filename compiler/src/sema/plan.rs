//! Checking a `plan` item: which model runs on which machine under which
//! workload, and which pass choices compile it.

use super::reader::BlockReader;
use super::suggest::did_you_mean;
use super::Program;
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::{Decl, ValueKind};
use crate::syntax::Span;

/// How experts are assigned to dies. Each choice is a placement pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementChoice {
    /// Expert e of every layer on die e mod N (the expert-parallel baseline).
    RoundRobin,
    /// Contiguous blocks of expert ids per die (Megatron-LM's default).
    Contiguous,
    /// DeepSeek's EPLB, global policy: replicate the hottest experts into
    /// redundant slots, pack heaviest-first onto the lightest die.
    Eplb,
}

impl PlacementChoice {
    /// Every choice, with its spelling in the language.
    pub const ALL: &'static [(&'static str, PlacementChoice)] = &[
        ("round_robin", PlacementChoice::RoundRobin),
        ("contiguous", PlacementChoice::Contiguous),
        ("eplb", PlacementChoice::Eplb),
    ];

    /// The spelling in the language (and the pass argument: `place(round_robin)`).
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, c)| *c == self)
            .map(|(n, _)| *n)
            .unwrap_or("round_robin")
    }
}

/// How attention layers are spread over dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionParallel {
    /// Every die holds all attention weights and serves its share of the batch.
    DataParallel,
}

/// A checked plan: indices into the [`Program`]'s items.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub model: usize,
    pub machine: usize,
    pub workload: usize,
    pub placement: PlacementChoice,
    /// Extra expert slots per layer for placements that replicate (EPLB);
    /// `None`: one per alive die.
    pub redundant_experts: Option<u64>,
    pub attention: AttentionParallel,
    pub span: Span,
}

/// Reads a plan against the items already checked in `program`.
pub fn check(decl: &Decl, program: &Program, diags: &mut Vec<Diagnostic>) -> Option<Plan> {
    let what = format!("plan `{}`", decl.name.text);
    let mut r = BlockReader::new(&what, decl.name.span, &decl.body);
    let model = reference(&mut r, "model", "model = deepseek_v3", &program.model_names(), diags);
    let machine = reference(
        &mut r,
        "machine",
        "machine = wafer_8x8",
        &program.machine_names(),
        diags,
    );
    let workload = reference(
        &mut r,
        "workload",
        "workload = decode",
        &program.workload_names(),
        diags,
    );
    let placement_names: Vec<&str> = PlacementChoice::ALL.iter().map(|(n, _)| *n).collect();
    let placement = match r.choice("placement", &placement_names) {
        Some((name, _)) => PlacementChoice::ALL.iter().find(|(n, _)| *n == name).map(|(_, c)| *c),
        None if r.span_of("placement").is_some() => None,
        None => Some(PlacementChoice::RoundRobin),
    };
    let attention = match r.choice("attention", &["dp"]) {
        Some(_) => Some(AttentionParallel::DataParallel),
        None if r.span_of("attention").is_some() => None,
        None => Some(AttentionParallel::DataParallel),
    };
    let redundant_experts = r.int("redundant_experts", 0, 1 << 20);
    let parallel_ok = r.choice("parallel", &["ep"]).is_some() || r.span_of("parallel").is_none();
    let migration_ok = r.choice("migration", &["none"]).is_some() || r.span_of("migration").is_none();
    diags.extend(r.finish());

    let plan = Plan {
        name: decl.name.text.clone(),
        model: model??,
        machine: machine??,
        workload: workload??,
        placement: placement?,
        redundant_experts,
        attention: attention?,
        span: decl.name.span,
    };
    if !(parallel_ok && migration_ok) {
        return None;
    }
    let fits = expert_fits(program, &plan, decl, diags);
    fits.then_some(plan)
}

/// Resolves `key = name` against the defined names of that kind. The outer
/// `Option` is "written"; the inner is "defined and checked".
fn reference(
    r: &mut BlockReader,
    key: &'static str,
    example: &str,
    defined: &[(&str, bool)],
    diags: &mut Vec<Diagnostic>,
) -> Option<Option<usize>> {
    let v = r.required(key, example)?;
    let ValueKind::Name(name) = &v.kind else {
        diags.push(super::reader::wrong_type(
            v,
            key,
            &format!("the name of a {key}"),
            v.kind.describe(),
        ));
        return Some(None);
    };
    match defined.iter().position(|(n, _)| n == name) {
        // Defined but failed its own checks: those errors are reported already.
        Some(i) if defined[i].1 => Some(Some(i)),
        Some(_) => Some(None),
        None => {
            let hint = did_you_mean(name, defined.iter().map(|(n, _)| *n)).unwrap_or_else(|| {
                if defined.is_empty() {
                    format!("no {key} is defined; add `{key} {name} {{ ... }}` or import a file that has one")
                } else {
                    format!(
                        "defined: {}",
                        defined.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    )
                }
            });
            diags.push(
                Diagnostic::error(Code::E0009, v.span, format!("no {key} named `{name}`"))
                    .with_label("not defined")
                    .with_hint(hint),
            );
            Some(None)
        }
    }
}

/// E0014: an expert larger than a die can never be placed whole.
fn expert_fits(program: &Program, plan: &Plan, decl: &Decl, diags: &mut Vec<Diagnostic>) -> bool {
    let (Some(model), Some(machine)) = (program.model(plan.model), program.machine(plan.machine)) else {
        return false;
    };
    let need = model.expert_bytes();
    let have = machine.spec().die.memory;
    if need > have {
        diags.push(
            Diagnostic::error(
                Code::E0014,
                decl.name.span,
                format!(
                    "an expert of `{}` needs {need} but a die of `{}` has {have} of memory",
                    model.name,
                    machine.spec().name
                ),
            )
            .with_label("this plan cannot place a whole expert on a die")
            .with_hint("use a machine with more memory per die; sharded forms come with `parallel`"),
        );
        return false;
    }
    true
}
