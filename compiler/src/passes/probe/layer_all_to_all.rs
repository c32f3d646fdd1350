//! One MoE layer's all-to-all, simulated: how long the dispatch and then
//! the combine of one step take for a given layout of that layer's experts.
//!
//! This is the objective HD-MoE's LinkBalance searches over and the
//! measurement its gamma is fitted against. It reuses the simulator rather
//! than re-deriving it: the transfers come from
//! [`moec_runtime::sim::traffic::step_traffic`] on the plan's own lowered
//! schedule (so sequence homes, attention groups and replica choice are the
//! runtime's), and they run on [`moec_runtime::sim::network::Network`] (the
//! machine's routes, XY on an `xy` mesh, and max-min sharing of every link).
//! The dispatch transfers all start together, as every die issues its
//! dispatch at about the same time; the combine starts once they have all
//! arrived and sends the same bytes back. Compute is left out: the experts'
//! time is NodeBalance's term, not this one.

use moec_runtime::machine::{DieId, Machine};
use moec_runtime::routing::StepRouting;
use moec_runtime::schedule::Schedule;
use moec_runtime::sim::network::Network;
use moec_runtime::sim::time::Time;
use moec_runtime::sim::traffic::{step_traffic, LayerTraffic};

/// The network quantum of the search's objective: coarser than `moec
/// run`'s 0.02, as a search compares candidates and needs their order, not
/// the last percent (five times fewer rate recomputes on a 256-die
/// all-to-all).
const SEARCH_QUANTUM: f64 = 0.1;

/// One layer's expert layout: per expert its dies, and when split the
/// FFN columns each holds (parallel to the dies, whole copies one after
/// another; empty: every die a whole replica), as `Placement` keeps them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerLayout {
    pub dies: Vec<Vec<DieId>>,
    pub columns: Vec<Vec<u64>>,
}

impl LayerLayout {
    /// Whole replicas on `dies[expert]`.
    pub fn replicas(dies: Vec<Vec<DieId>>) -> LayerLayout {
        LayerLayout {
            dies,
            columns: Vec::new(),
        }
    }
}

/// A lowered schedule and one step's routing, ready to time any layout of
/// one layer's experts.
pub struct LayerAllToAll<'a> {
    machine: &'a Machine,
    /// The plan's schedule; a probe swaps one layer's expert dies in and out.
    schedule: Schedule,
    /// Per model layer, that layer's routing alone (so a probe computes the
    /// traffic of one layer only); `None` for dense layers.
    layers: Vec<Option<StepRouting>>,
}

impl<'a> LayerAllToAll<'a> {
    /// Times layouts on `schedule` (the plan's lowered schedule; its expert
    /// placement does not matter, each probe sets the layer it times) under
    /// the routing of one `step`.
    pub fn new(machine: &'a Machine, schedule: Schedule, step: &StepRouting) -> LayerAllToAll<'a> {
        let mut layers = vec![None; schedule.model.layers as usize];
        for lr in &step.layers {
            if let Some(slot) = layers.get_mut(lr.layer as usize) {
                *slot = Some(StepRouting {
                    tokens: step.tokens,
                    top_k: step.top_k,
                    layers: vec![lr.clone()],
                });
            }
        }
        LayerAllToAll {
            machine,
            schedule,
            layers,
        }
    }

    /// The dispatch transfers of `layer` with its experts laid out as
    /// `layout` (what one [`LayerAllToAll::time`] simulates, twice).
    pub fn transfers(&mut self, layer: usize, layout: &LayerLayout) -> usize {
        self.traffic(layer, layout).map_or(0, |t| t.dispatch.len())
    }

    /// The traffic of `layer` alone with its experts laid out as `layout`.
    pub fn traffic(&mut self, layer: usize, layout: &LayerLayout) -> Option<LayerTraffic> {
        let routing = self.layers.get(layer)?.as_ref()?;
        let placement = &mut self.schedule.placement;
        let kept = std::mem::replace(placement.experts.get_mut(layer)?, layout.dies.clone());
        if placement.expert_columns.len() <= layer {
            placement.expert_columns.resize(placement.experts.len(), Vec::new());
        }
        let kept_columns = std::mem::replace(&mut placement.expert_columns[layer], layout.columns.clone());
        let mut traffic = step_traffic(&self.schedule, self.machine, routing);
        self.schedule.placement.experts[layer] = kept;
        self.schedule.placement.expert_columns[layer] = kept_columns;
        traffic.layers.get_mut(layer)?.take()
    }

    /// Seconds from the first dispatch transfer to the last combine transfer
    /// of `layer` with its experts laid out as `layout` (0 when nothing
    /// leaves its die).
    pub fn time(&mut self, layer: usize, layout: &LayerLayout) -> Result<f64, String> {
        let Some(t) = self.traffic(layer, layout) else {
            return Ok(0.0);
        };
        let mut net = Network::new(self.machine).with_quantum(SEARCH_QUANTUM);
        let route_error = |e: moec_runtime::machine::RouteError| e.to_string();
        for &(src, dst, bytes) in &t.dispatch {
            net.start(Time::ZERO, src, dst, bytes, 0).map_err(route_error)?;
        }
        net.advance(Time::NEVER);
        let dispatched = net.now();
        for &(src, dst, bytes) in &t.dispatch {
            net.start(dispatched, dst, src, bytes, 1).map_err(route_error)?;
        }
        net.advance(Time::NEVER);
        Ok(net.now().secs())
    }
}
