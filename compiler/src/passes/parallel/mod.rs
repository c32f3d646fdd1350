//! `parallel(FORM)`: in what form each MoE layer's experts live on the dies
//! the placement chose: whole (EP), split by FFN columns over a group
//! (expert TP), sharded over every die of a group (MoEShard), or split per
//! expert as HD-MoE's NodeBalance says; `parallel(auto)` picks a form per
//! layer by equality saturation over the machine model's cost.
//!
//! Runs after a placement pass: EP keeps its dies; `tp(k)` turns each
//! expert into one copy split over the compact group of `k` dies
//! (`tp_groups::compact_groups`) holding its placed die (an expert the
//! placement replicated gets one copy per distinct group); `moeshard(k)`
//! gives every group of `k` a copy of every expert, a column shard on each
//! die (MoEShard: tokens go to every die of their home's group, each die
//! runs its shards of all experts in one grouped kernel, the partial
//! outputs are summed at the token's home); `hybrid` and
//! `compute_balanced` lay out HD-MoE's fractions (`hd_moe.rs`, split mode)
//! whatever the placement said. Columns are shared evenly, the first
//! `ffn mod k` parts one wider. `fused = false` marks the experts to launch
//! one kernel per part, for measuring what fusion saves.
//!
//! The annotation of a split expert: `Sharding::Cols(k)`, its dies copy
//! after copy, and the columns each holds (`Annotation::columns`); the
//! verifier checks every copy covers the FFN exactly once, and memory
//! counts each die's share.

pub mod form_graph;
pub(crate) mod select_parallel;

use crate::ir::{Form, FormKind, Ir, Op, Sharding};
use crate::passes::place::hd_moe::{self, Mode};
use crate::passes::place::tp_groups::compact_groups_within;
use crate::passes::probe::layer_all_to_all::LayerLayout;
use crate::passes::Pass;
use crate::passes::PassContext;
use moec_runtime::machine::DieId;
use moec_runtime::model::LayerKind;
use std::collections::BTreeMap;

/// The `parallel(...)` pass.
pub struct Parallel {
    /// One form for every layer, or `None` for `auto`.
    form: Option<Form>,
    /// The spec as written, for `name()`.
    spec: String,
}

impl Parallel {
    /// From the pass argument: a form as the language spells it, or `auto`.
    /// `tp` and `moeshard` without a size are resolved when the pass runs
    /// (all alive dies).
    pub fn new(arg: Option<&str>) -> Result<Parallel, String> {
        let arg = arg.ok_or("`parallel` needs a form: parallel(ep), parallel(tp(4)), parallel(moeshard), parallel(hybrid), parallel(auto)")?;
        let form = if arg.trim() == "auto" {
            None
        } else {
            // Checked now (with a placeholder size), resolved in `run`.
            Some(Form::parse(arg, 1)?)
        };
        Ok(Parallel {
            form,
            spec: arg.trim().to_string(),
        })
    }
}

impl Pass for Parallel {
    fn name(&self) -> String {
        format!("parallel({})", self.spec)
    }

    fn run(&self, ir: &mut Ir, cx: &PassContext) -> Result<(), String> {
        let alive = cx.machine.alive_dies();
        // Expert TP groups stay inside the expert pool (MegaScale-Infer's
        // tp_e); the other split forms lay their groups over every die.
        let split_in_pool = matches!(self.form, Some(f) if matches!(f.kind, FormKind::Ep | FormKind::Tp(_)));
        if ir.pools.is_some() && !split_in_pool {
            return Err(format!(
                "parallel({}) does not run on disaggregated pools: their experts are whole (ep) or split in the expert pool (tp(k))",
                self.spec
            ));
        }
        let moe_layers: Vec<u32> = (0..cx.model.layers)
            .filter(|&l| cx.model.layer_kind(l) == LayerKind::Moe)
            .map(|l| l as u32)
            .collect();
        let forms: BTreeMap<u32, Form> = match self.form {
            Some(_) => {
                let form = Form::parse(&self.spec, alive.len() as u32)?;
                moe_layers.iter().map(|&l| (l, form)).collect()
            }
            None => select_parallel::select(ir, cx, &moe_layers)?,
        };
        lay_out(ir, cx, &forms)
    }
}

/// Lays out every MoE layer's experts in its form.
pub fn lay_out(ir: &mut Ir, cx: &PassContext, forms: &BTreeMap<u32, Form>) -> Result<(), String> {
    let (layouts, notes) = layouts(ir, cx, forms)?;
    ir.header.notes.extend(notes);
    annotate(ir, &layouts, forms);
    ir.header.notes.push(note(forms, &layouts));
    Ok(())
}

/// The layout of every MoE layer in `forms` on the placed `ir`, and the
/// notes of the HD-MoE passes that laid out any hybrid.
pub fn layouts(
    ir: &Ir,
    cx: &PassContext,
    forms: &BTreeMap<u32, Form>,
) -> Result<(BTreeMap<u32, LayerLayout>, Vec<String>), String> {
    let alive = cx.machine.alive_dies();
    let ffn = cx.model.moe.as_ref().map_or(0, |m| m.expert_ffn);
    let placed = placed_experts(ir);
    // HD-MoE's layouts are computed once for all layers that ask.
    let mut hd: BTreeMap<Mode, hd_moe::HdMoe> = BTreeMap::new();
    for mode in [Mode::Hybrid, Mode::ComputeBalanced] {
        if forms.values().any(|f| hd_mode(f.kind) == Some(mode)) {
            hd.insert(mode, hd_moe::place(ir, cx, &alive, mode)?);
        }
    }
    let mut layouts: BTreeMap<u32, LayerLayout> = BTreeMap::new();
    for (&layer, form) in forms {
        let Some(experts) = placed.get(&layer) else { continue };
        let layout = match hd_mode(form.kind) {
            Some(mode) => {
                let plan = hd.get(&mode).ok_or("HD-MoE layout missing")?;
                LayerLayout {
                    dies: plan.layouts[layer as usize].clone(),
                    columns: plan.columns[layer as usize].clone(),
                }
            }
            None => grouped_layout(cx, experts, form.kind, ffn, ir.pools.as_ref().map(|p| &p.experts[..]))?,
        };
        layouts.insert(layer, layout);
    }
    let notes = hd.into_values().flat_map(|h| h.notes).collect();
    Ok((layouts, notes))
}

/// The layout of one layer in a form that needs no HD-MoE pass (EP, TP,
/// MoEShard), from its experts' placed dies; the hybrids are errors here.
/// `pool`: a disaggregated plan's expert pool, which TP groups stay in.
pub fn grouped_layout(
    cx: &PassContext,
    experts: &[Vec<DieId>],
    kind: FormKind,
    ffn: u64,
    pool: Option<&[DieId]>,
) -> Result<LayerLayout, String> {
    match kind {
        FormKind::Ep => Ok(LayerLayout::replicas(experts.to_vec())),
        FormKind::Tp(k) => tensor_parallel(cx, experts, (k, ffn), pool),
        FormKind::Shard(k) => sharded(cx, experts.len(), k, ffn),
        FormKind::Hybrid | FormKind::ComputeBalanced => Err(format!(
            "`{}` is laid out by HD-MoE's passes",
            Form { kind, fused: true }
        )),
    }
}

/// The HD-MoE mode a form is laid out by, if any.
fn hd_mode(kind: FormKind) -> Option<Mode> {
    match kind {
        FormKind::Hybrid => Some(Mode::Hybrid),
        FormKind::ComputeBalanced => Some(Mode::ComputeBalanced),
        _ => None,
    }
}

/// Per MoE layer, per expert: the dies the placement put it on.
pub fn placed_experts(ir: &Ir) -> BTreeMap<u32, Vec<Vec<DieId>>> {
    let mut placed: BTreeMap<u32, Vec<Vec<DieId>>> = BTreeMap::new();
    for (_, n) in ir.nodes() {
        if let (Op::Expert { expert, .. }, Some(layer)) = (&n.op, n.layer) {
            let experts = placed.entry(layer.0).or_default();
            let e = expert.0 as usize;
            if experts.len() <= e {
                experts.resize(e + 1, Vec::new());
            }
            experts[e] = n.ann.dies.clone();
        }
    }
    placed
}

/// `ffn` columns over `k` parts, the first `ffn mod k` one wider.
fn even_columns(ffn: u64, k: u32) -> Vec<u64> {
    let k = u64::from(k.max(1));
    (0..k).map(|i| ffn / k + u64::from(i < ffn % k)).collect()
}

/// The compact groups of `k` alive dies (inside `pool`, if given),
/// refusing sizes that leave an expert part without a column or no group
/// at all.
fn groups(cx: &PassContext, k: u32, ffn: u64, pool: Option<&[DieId]>) -> Result<Vec<Vec<DieId>>, String> {
    let alive = cx.machine.alive_dies().len() as u32;
    if k == 0 || k > alive {
        return Err(format!("a group of {k} dies: the machine has {alive} alive"));
    }
    if u64::from(k) > ffn {
        return Err(format!("an expert FFN of {ffn} columns cannot be split over {k} dies"));
    }
    let groups = compact_groups_within(cx.machine, k, pool);
    if groups.is_empty() {
        return Err(format!("no group of {k} dies lies inside the expert pool"));
    }
    Ok(groups)
}

/// Expert TP: each expert one copy over the group of each distinct group
/// its placed dies lie in.
fn tensor_parallel(
    cx: &PassContext,
    experts: &[Vec<DieId>],
    (k, ffn): (u32, u64),
    pool: Option<&[DieId]>,
) -> Result<LayerLayout, String> {
    if k == 1 {
        return Ok(LayerLayout::replicas(experts.to_vec()));
    }
    let groups = groups(cx, k, ffn, pool)?;
    let mut group_of: BTreeMap<DieId, usize> = BTreeMap::new();
    for (g, dies) in groups.iter().enumerate() {
        for &d in dies {
            group_of.insert(d, g);
        }
    }
    let columns = even_columns(ffn, k);
    let mut layout = LayerLayout::default();
    for (e, placed) in experts.iter().enumerate() {
        let mut chosen: Vec<usize> = Vec::new();
        for d in placed {
            // A die outside every group (left over) sends its expert to
            // the group its index falls in.
            let g = group_of.get(d).copied().unwrap_or(e % groups.len());
            if !chosen.contains(&g) {
                chosen.push(g);
            }
        }
        layout
            .dies
            .push(chosen.iter().flat_map(|&g| groups[g].clone()).collect());
        layout.columns.push(columns.repeat(chosen.len()));
    }
    Ok(layout)
}

/// MoEShard: every group a copy of every expert, a shard on each die.
fn sharded(cx: &PassContext, experts: usize, k: u32, ffn: u64) -> Result<LayerLayout, String> {
    let groups = groups(cx, k, ffn, None)?;
    let dies: Vec<DieId> = groups.concat();
    // One die a group: whole replicas everywhere, no columns.
    let columns = if k == 1 {
        Vec::new()
    } else {
        vec![even_columns(ffn, k).repeat(groups.len()); experts]
    };
    Ok(LayerLayout {
        dies: vec![dies; experts],
        columns,
    })
}

/// Writes the layouts into the experts' annotations.
fn annotate(ir: &mut Ir, layouts: &BTreeMap<u32, LayerLayout>, forms: &BTreeMap<u32, Form>) {
    let indices: Vec<_> = ir.graph.node_indices().collect();
    for i in indices {
        let node = &mut ir.graph[i];
        let (Op::Expert { expert, ffn, .. }, Some(layer)) = (&node.op, node.layer) else {
            continue;
        };
        let ffn = *ffn;
        let layer = layer.0;
        let (Some(layout), Some(form)) = (layouts.get(&layer), forms.get(&layer)) else {
            continue;
        };
        let e = expert.0 as usize;
        let dies = layout.dies.get(e).cloned().unwrap_or_default();
        let columns = layout.columns.get(e).cloned().unwrap_or_default();
        node.ann.sharding = match parts_per_copy(&columns, ffn) {
            Some(k) if k > 1 => Sharding::Cols(k),
            _ => Sharding::Whole,
        };
        node.ann.columns = if matches!(node.ann.sharding, Sharding::Cols(_)) {
            columns
        } else {
            Vec::new()
        };
        node.ann.dies = dies;
        node.ann.unfused = !form.fused;
    }
}

/// Parts in the first copy of a split expert of `ffn` columns (every copy
/// has as many: the layouts above make them so), or `None` when whole.
fn parts_per_copy(columns: &[u64], ffn: u64) -> Option<u32> {
    let mut at = 0;
    for (i, c) in columns.iter().enumerate() {
        at += c;
        if at >= ffn {
            return Some((i + 1) as u32);
        }
    }
    None
}

/// One line on the forms laid out.
fn note(forms: &BTreeMap<u32, Form>, layouts: &BTreeMap<u32, LayerLayout>) -> String {
    let mut by_form: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (&l, f) in forms {
        by_form.entry(f.to_string()).or_default().push(l);
    }
    let parts: usize = layouts.values().flat_map(|l| l.dies.iter()).map(Vec::len).sum();
    let experts: usize = layouts.values().map(|l| l.dies.len()).sum();
    let forms: Vec<String> = by_form
        .iter()
        .map(|(f, layers)| {
            format!(
                "{f} on {} layer{}",
                layers.len(),
                if layers.len() == 1 { "" } else { "s" }
            )
        })
        .collect();
    format!(
        "parallel: {}; {:.2} dies hold a part or copy of an expert on average",
        forms.join(", "),
        parts as f64 / experts.max(1) as f64
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{self, CompileOptions};
    use crate::passes::place::tp_groups::compact_groups;
    use crate::source::MemoryReader;
    use moec_runtime::run::{run, RunOptions};
    use moec_runtime::schedule::{Op as SOp, Schedule};
    use std::path::Path;

    /// A small MoE model on a 4x4 mesh, compiled with `passes`, lowered.
    fn compiled(passes: &str) -> (Ir, Schedule) {
        let src = "model m { layers = 3; dense_layers = 1; dense_ffn = 128; hidden = 64; vocab = 128; dtype = fp32
                     attention mha { heads = 4; head_dim = 16 }
                     moe { experts = 8; top_k = 2; expert_ffn = 96 } }
                   machine mesh { topology = mesh(4, 4)
                     die { compute = 10 TFLOPS; memory = 4 GiB; memory_bw = 600 GB/s }
                     link { bandwidth = 50 GB/s; latency = 50 ns } }
                   workload w { phase = decode; batch = 32; context = 64; steps = 1
                     routing = zipf(s = 1.2, seed = 3) }
                   plan p { model = m; machine = mesh; workload = w }";
        let mut reader = MemoryReader::default();
        reader.0.insert("t.moe".into(), src.as_bytes().to_vec());
        let session = driver::check(&reader, Path::new("t.moe")).expect("checks");
        let options = CompileOptions {
            passes: Some(passes.into()),
            ..Default::default()
        };
        let ir = session.compile(&options, &mut |_, _| {}).expect("compiles");
        let schedule = session.schedule(&options, &mut |_, _| {}).expect("lowers");
        (ir, schedule)
    }

    fn experts(ir: &Ir) -> Vec<&crate::ir::Annotation> {
        ir.nodes()
            .filter(|(_, n)| matches!(n.op, Op::Expert { .. }))
            .map(|(_, n)| &n.ann)
            .collect()
    }

    #[test]
    fn every_form_runs_with_the_numeric_check_passing() {
        let options = RunOptions {
            steps: Some(1),
            numerics: Some(moec_runtime::numerics::NumericConfig::default()),
            trace_steps: 0,
            network_quantum: 0.0,
            faults: Vec::new(),
        };
        for form in [
            "ep",
            "tp(2)",
            "tp(16)",
            "moeshard",
            "moeshard(4, fused = false)",
            "hybrid",
            "compute_balanced",
            "auto",
        ] {
            let (_, schedule) = compiled(&format!("place(round_robin),parallel({form})"));
            let out = run(&schedule, &options, &mut |_, _| {}).expect("runs");
            let check = out.report.numeric_check.as_ref().expect("numerics ran");
            assert!(check.max_rel_error < 1e-4, "{form}: {check:?}");
        }
    }

    #[test]
    fn moeshard_puts_a_shard_of_every_expert_on_every_die_of_each_group() {
        let (ir, schedule) = compiled("place(round_robin),parallel(moeshard(4))");
        for ann in experts(&ir) {
            assert_eq!(ann.sharding, Sharding::Cols(4));
            assert_eq!(ann.dies.len(), 16, "four copies of four shards");
            assert_eq!(ann.columns, vec![24; 16]);
        }
        assert!(schedule.placement.has_split_experts());
        // Every die holds a shard of every expert of every MoE layer.
        let all: std::collections::BTreeSet<_> = ir.nodes().flat_map(|(_, n)| n.ann.dies.clone()).collect();
        assert_eq!(all.len(), 16);
    }

    #[test]
    fn tp_splits_each_expert_over_the_group_of_its_placed_die() {
        let (ep, schedule) = compiled("place(round_robin)");
        let (tp, _) = compiled("place(round_robin),parallel(tp(4))");
        let machine = moec_runtime::machine::Machine::build(schedule.machine.clone()).expect("machine");
        let groups = compact_groups(&machine, 4);
        for (whole, split) in experts(&ep).iter().zip(experts(&tp)) {
            let group = groups.iter().find(|g| g.contains(&whole.dies[0])).expect("in a group");
            assert_eq!(&split.dies, group);
            assert_eq!(split.columns.iter().sum::<u64>(), 96);
        }
    }

    #[test]
    fn unfused_forms_launch_per_part_and_hybrid_parts_cover_each_expert() {
        let (_, schedule) = compiled("place(round_robin),parallel(moeshard(fused = false))");
        let unfused = schedule.programs[0]
            .instrs
            .iter()
            .filter(|i| matches!(i.op, SOp::Experts { unfused: true, .. }))
            .count();
        assert_eq!(unfused, 2, "both MoE layers");
        let (ir, _) = compiled("place(round_robin),parallel(hybrid)");
        for ann in experts(&ir) {
            if !ann.columns.is_empty() {
                assert_eq!(ann.columns.iter().sum::<u64>(), 96);
                assert_eq!(ann.sharding, Sharding::Cols(ann.dies.len() as u32));
            }
        }
    }

    #[test]
    fn columns_split_evenly_and_copies_are_counted() {
        assert_eq!(even_columns(10, 4), vec![3, 3, 2, 2]);
        assert_eq!(even_columns(8, 1), vec![8]);
        assert_eq!(parts_per_copy(&[3, 3, 2, 2, 3, 3, 2, 2], 10), Some(4));
        assert_eq!(parts_per_copy(&[5, 5], 10), Some(2));
        assert_eq!(parts_per_copy(&[], 10), None);
    }
}
