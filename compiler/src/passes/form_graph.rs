//! TEMPORARY (replaced by the e-graph search when it lands): forms and an
//! exhaustive per-layer choice.

use crate::ir::{Form, FormKind};

/// What a form costs on one layer (seconds; infinity: infeasible).
pub trait FormCost {
    fn layer_cost(&self, layer: u32, form: Form) -> f64;
}

/// The choice.
pub struct Selection {
    pub forms: Vec<(u32, Form)>,
    pub cost: f64,
    pub classes: usize,
    pub nodes: usize,
    pub iterations: usize,
    pub stop: String,
    pub fired: Vec<(String, usize)>,
}

/// Every form of a layer.
pub fn all_forms(dies: u32, hybrid: bool) -> Vec<Form> {
    let mut kinds = vec![FormKind::Ep];
    for k in (1..=dies).filter(|k| dies % k == 0) {
        kinds.push(FormKind::Tp(k));
        kinds.push(FormKind::Shard(k));
    }
    if hybrid {
        kinds.push(FormKind::Hybrid);
    }
    kinds
        .into_iter()
        .flat_map(|kind| [true, false].map(|fused| Form { kind, fused }))
        .collect()
}

/// Per layer the cheapest form.
pub fn select(moe_layers: &[u32], dies: u32, hybrid: bool, cost: &dyn FormCost) -> Selection {
    let mut forms = Vec::new();
    let mut total = 0.0;
    for &l in moe_layers {
        let best = all_forms(dies, hybrid)
            .into_iter()
            .min_by(|a, b| cost.layer_cost(l, *a).total_cmp(&cost.layer_cost(l, *b)).then(a.cmp(b)))
            .unwrap_or(Form::EP);
        total += cost.layer_cost(l, best);
        forms.push((l, best));
    }
    Selection {
        forms,
        cost: total,
        classes: 0,
        nodes: 0,
        iterations: 0,
        stop: "exhaustive".into(),
        fired: Vec::new(),
    }
}
