//! `parallel(auto)`: the cost of every parallel form of every MoE layer on
//! the machine model, and the choice of one form per layer by equality
//! saturation (`form_graph.rs`).
//!
//! **The cost of a form** (one layer, one step) is what the layer's MoE
//! block takes on the placed dies: the experts' compute on the busiest die
//! plus the dispatch and combine. Both come from the machine model on the
//! form's real layout and one step of the workload's own routing: the
//! runtime's traffic (`step_traffic`: which die computes which expert part
//! for how many tokens, and the bytes between every pair of dies) gives
//! each die's expert time by the roofline of `sim::cost` (one grouped
//! launch, or one per part when unfused), and the transfers are routed
//! over the machine's links (the topology: hops, and which links the
//! all-to-all piles onto), giving `comm = 2 (max link bytes / bandwidth +
//! longest route x link latency)`, dispatch and combine alike.
//!
//! **Fit.** The link estimate leaves out what max-min sharing and
//! transfers' overlap do. As HD-MoE fits its gamma, the estimate is fitted
//! to the simulator: on the first MoE layer, every expert-parallel, TP and
//! MoEShard form's dispatch + combine is timed by the simulator's own
//! network (`LayerAllToAll`), and `comm` is scaled by the least-squares
//! factor through the origin. The factor and R^2 are left in the notes.
//!
//! **Memory.** A form is infeasible (infinite cost) for a layer when its
//! busiest die would hold more expert bytes than an even share, over the
//! MoE layers, of what the die has left besides the data-parallel weights
//! and the KV cache: the per-layer choice stays separable.

use super::form_graph::{self, FormCost};
use crate::ir::{self, Form, FormKind, Ir};
use crate::lower;
use crate::passes::parallel;
use crate::passes::place::node_balance;
use crate::passes::probe::layer_all_to_all::{LayerAllToAll, LayerLayout};
use crate::passes::PassContext;
use moec_runtime::machine::{DieId, Machine};
use moec_runtime::routing::RoutingGenerator;
use moec_runtime::sim::cost::CostModel;
use moec_runtime::sim::traffic::LayerTraffic;
use std::collections::BTreeMap;

/// Picks a form for every MoE layer of the placed `ir`; leaves the costs,
/// the fit and the e-graph's figures in the notes.
pub fn select(ir: &mut Ir, cx: &PassContext, moe_layers: &[u32]) -> Result<BTreeMap<u32, Form>, String> {
    let alive = cx.machine.alive_dies().len() as u32;
    let Some(step) = RoutingGenerator::new(cx.model, cx.workload)?.step(0) else {
        ir.header
            .notes
            .push("parallel auto: routing = gate is only known at run time; every layer keeps ep".into());
        return Ok(moe_layers.iter().map(|&l| (l, Form::EP)).collect());
    };
    let schedule = lower::lower(ir, cx.model, cx.machine, cx.workload)?;
    let probe = LayerAllToAll::new(cx.machine, schedule, &step);
    let mut costs = LayerCosts::new(ir, cx, probe, moe_layers)?;
    let fit_note = costs.fit(moe_layers.first().copied())?;
    costs.fill(moe_layers)?;
    let selection = form_graph::select(moe_layers, alive, costs.hybrid, &costs)?;
    let chosen: BTreeMap<u32, Form> = selection.forms.iter().copied().collect();
    let mut notes = vec![fit_note];
    notes.push(format!(
        "parallel auto: e-graph of {} classes and {} nodes after {} iterations ({}); rewrites fired: {}",
        selection.classes,
        selection.nodes,
        selection.iterations,
        selection.stop,
        selection
            .fired
            .iter()
            .map(|(r, n)| format!("{r} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut by_form: BTreeMap<Form, (usize, f64)> = BTreeMap::new();
    for (&l, &f) in &chosen {
        let e = by_form.entry(f).or_default();
        e.0 += 1;
        e.1 += costs.layer_cost(l, f);
    }
    let ep_total: f64 = moe_layers.iter().map(|&l| costs.layer_cost(l, Form::EP)).sum();
    notes.push(format!(
        "parallel auto: chose {} for an estimated {:.3} ms a step of MoE blocks (all ep: {:.3} ms)",
        by_form
            .iter()
            .map(|(f, (n, s))| format!("{f} on {n} layers ({:.3} ms)", s * 1e3))
            .collect::<Vec<_>>()
            .join(", "),
        selection.cost * 1e3,
        ep_total * 1e3
    ));
    drop(costs);
    ir.header.notes.extend(notes);
    Ok(chosen)
}

/// Every form's cost on every MoE layer, computed before the search.
pub struct LayerCosts<'a> {
    cx: &'a PassContext<'a>,
    /// Per MoE layer, per expert, the dies the placement chose (read once).
    placed: BTreeMap<u32, Vec<Vec<DieId>>>,
    probe: LayerAllToAll<'a>,
    /// Whether HD-MoE's hybrid is among the forms (a mesh or switch with
    /// routing known at compile time).
    pub hybrid: bool,
    /// The hybrid's layouts, per layer (computed once).
    hybrid_layouts: BTreeMap<u32, LayerLayout>,
    /// Per die, expert bytes a layer may use (see the module doc).
    layer_budget: u64,
    /// The fitted scale of the link estimate.
    gamma: f64,
    costs: BTreeMap<(u32, Form), f64>,
}

impl<'a> LayerCosts<'a> {
    fn new(
        ir: &'a Ir,
        cx: &'a PassContext<'a>,
        probe: LayerAllToAll<'a>,
        moe_layers: &[u32],
    ) -> Result<LayerCosts<'a>, String> {
        // The tightest die: its memory less its other weights and KV cache.
        let room = ir::memory::die_loads(ir, cx.machine)
            .iter()
            .filter(|l| cx.machine.is_alive(l.die))
            .map(|l| {
                let memory = cx.machine.die_spec(l.die).memory.0;
                memory.saturating_sub(l.other_bytes.0 + l.state_bytes.0)
            })
            .min()
            .unwrap_or(0);
        let layer_budget = room / (moe_layers.len().max(1) as u64);
        // The hybrid's layouts come from HD-MoE's own passes, run once;
        // where they cannot run (no alive die to solve for), no hybrid.
        let forms: BTreeMap<u32, Form> = moe_layers
            .iter()
            .map(|&l| {
                (
                    l,
                    Form {
                        kind: FormKind::Hybrid,
                        fused: true,
                    },
                )
            })
            .collect();
        let hybrid_layouts = parallel::layouts(ir, cx, &forms).map(|(l, _)| l).unwrap_or_default();
        Ok(LayerCosts {
            cx,
            placed: parallel::placed_experts(ir),
            probe,
            hybrid: !hybrid_layouts.is_empty(),
            hybrid_layouts,
            layer_budget,
            gamma: 1.0,
            costs: BTreeMap::new(),
        })
    }

    /// The layout of `form` on `layer` (`None`: the form does not apply).
    fn layout(&self, layer: u32, form: Form) -> Option<LayerLayout> {
        if form.kind == FormKind::Hybrid {
            return self.hybrid_layouts.get(&layer).cloned();
        }
        let ffn = self.cx.model.moe.as_ref().map_or(0, |m| m.expert_ffn);
        parallel::grouped_layout(self.cx, self.placed.get(&layer)?, form.kind, ffn, None).ok()
    }

    /// The link estimate of a layer's dispatch + combine (seconds, unscaled).
    fn link_estimate(machine: &Machine, t: &LayerTraffic) -> Result<f64, String> {
        let mut bytes = vec![0u64; machine.links().len()];
        let mut longest = 0.0f64;
        for &(src, dst, b) in &t.dispatch {
            let route = machine.route(src, dst).map_err(|e| e.to_string())?;
            let mut latency = 0.0;
            for &l in &route.links {
                bytes[l.0 as usize] += b;
                latency += machine.link(l).spec.latency.0;
            }
            longest = longest.max(latency);
        }
        let busiest = machine
            .links()
            .iter()
            .map(|l| bytes[l.id.0 as usize] as f64 / l.spec.bandwidth.0.max(1.0))
            .fold(0.0, f64::max);
        Ok(2.0 * (busiest + longest))
    }

    /// (expert compute on the busiest die, link estimate, simulated
    /// dispatch + combine if `simulate`) of `form` on `layer`, or `None`
    /// when it does not fit memory or does not apply.
    fn measure(&mut self, layer: u32, form: Form, simulate: bool) -> Result<Option<(f64, f64, f64)>, String> {
        let Some(layout) = self.layout(layer, form) else {
            return Ok(None);
        };
        if self.busiest_expert_bytes(&layout) > self.layer_budget {
            return Ok(None);
        }
        let Some(traffic) = self.probe.traffic(layer as usize, &layout) else {
            return Ok(Some((0.0, 0.0, 0.0)));
        };
        let costs = CostModel::new(self.cx.model, self.cx.workload);
        let compute = traffic
            .expert_loads
            .iter()
            .enumerate()
            .map(|(d, loads)| {
                let die = self.cx.machine.die_spec(DieId(d as u32));
                if form.fused {
                    costs.experts(loads).time(die).0
                } else {
                    loads.iter().map(|p| costs.experts(&[*p]).time(die).0).sum()
                }
            })
            .fold(0.0, f64::max);
        let link = Self::link_estimate(self.cx.machine, &traffic)?;
        let simulated = if simulate {
            self.probe.time(layer as usize, &layout)?
        } else {
            0.0
        };
        Ok(Some((compute, link, simulated)))
    }

    /// The most expert bytes one die holds under `layout`.
    fn busiest_expert_bytes(&self, layout: &LayerLayout) -> u64 {
        let (expert, ffn) = (
            self.cx.model.expert_bytes().0,
            self.cx.model.moe.as_ref().map_or(1, |m| m.expert_ffn.max(1)),
        );
        let mut per_die: BTreeMap<u32, u64> = BTreeMap::new();
        for (e, dies) in layout.dies.iter().enumerate() {
            let columns = layout.columns.get(e).filter(|c| !c.is_empty());
            for (i, d) in dies.iter().enumerate() {
                let share = columns.map_or(expert, |c| {
                    (u128::from(expert) * u128::from(c[i]) / u128::from(ffn)) as u64
                });
                *per_die.entry(d.0).or_default() += share;
            }
        }
        per_die.values().copied().max().unwrap_or(0)
    }

    /// Fits gamma on `layer` over the EP, TP and MoEShard forms; the note.
    fn fit(&mut self, layer: Option<u32>) -> Result<String, String> {
        let Some(layer) = layer else {
            return Ok("parallel auto: no MoE layer".into());
        };
        let mut samples = Vec::new();
        for form in form_graph::all_forms(self.cx.machine.alive_dies().len() as u32, false) {
            if !form.fused {
                continue;
            }
            if let Some((_, link, simulated)) = self.measure(layer, form, true)? {
                samples.push((link, simulated));
            }
        }
        Ok(match node_balance::fit_gamma(&samples) {
            Some(fit) => {
                self.gamma = fit.gamma;
                format!(
                    "parallel auto: link estimate x {:.3}, fitted by least squares to the simulated dispatch + \
                     combine of {} forms of layer {layer} (R^2 {:.2})",
                    fit.gamma,
                    samples.len(),
                    fit.r_squared
                )
            }
            None => format!(
                "parallel auto: link estimate unscaled: the {} forms of layer {layer} move nothing to fit on",
                samples.len()
            ),
        })
    }

    /// Computes every form's cost on every layer.
    fn fill(&mut self, moe_layers: &[u32]) -> Result<(), String> {
        let alive = self.cx.machine.alive_dies().len() as u32;
        for &layer in moe_layers {
            for form in form_graph::all_forms(alive, self.hybrid) {
                let cost = match self.measure(layer, form, false)? {
                    Some((compute, link, _)) => compute + self.gamma * link,
                    None => f64::INFINITY,
                };
                self.costs.insert((layer, form), cost);
            }
        }
        Ok(())
    }
}

impl FormCost for LayerCosts<'_> {
    fn layer_cost(&self, layer: u32, form: Form) -> f64 {
        self.costs.get(&(layer, form)).copied().unwrap_or(f64::INFINITY)
    }
}
