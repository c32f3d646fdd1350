//! moec's own placement file: a versioned JSON that records any placement,
//! including ones engines cannot express (unequal experts per die), with
//! dies named by id and by their name on the machine (mesh coordinates,
//! `gpu3`, `n1.gpu3`). Layout (docs/PLACEMENT_FORMATS.md):
//!
//! ```json
//! {
//!   "format": "moec-placement",
//!   "version": 1,
//!   "plan": "eplb",
//!   "model": {"name": "deepseek_v3", "layers": 61, "experts": 256},
//!   "machine": {"name": "wafer_8x8", "dies": 64, "alive": [{"id": 0, "name": "(0, 0)"}, ...]},
//!   "layers": [{"layer": 3, "replicas": [[0, 12], [5], ...]}, ...]
//! }
//! ```
//!
//! `replicas[e]` lists the ids of the dies holding expert e of that layer.

use super::json::{self, Json};
use super::{ExpertLayout, Problem, ProblemKind, Target};
use moec_runtime::machine::DieId;
use serde::Deserialize;

/// The value of `format`.
pub const FORMAT_NAME: &str = "moec-placement";
/// The version this moec writes and reads; bumped when a field changes meaning.
pub const VERSION: u64 = 1;

#[derive(Deserialize)]
struct Header {
    format: String,
    version: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(rename = "format")]
    _format: String,
    #[serde(rename = "version")]
    _version: u64,
    /// The plan it was compiled from: for people, not checked.
    #[serde(default, rename = "plan")]
    _plan: Option<String>,
    model: ModelIdentity,
    machine: MachineIdentity,
    layers: Vec<Layer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelIdentity {
    /// For people: a plan may read a placement of a model of the same shape.
    #[serde(rename = "name")]
    _name: String,
    layers: u64,
    experts: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MachineIdentity {
    /// As the model's name.
    #[serde(rename = "name")]
    _name: String,
    dies: u64,
    #[serde(default)]
    alive: Vec<NamedDie>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedDie {
    id: u32,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    layer: u64,
    replicas: Vec<Vec<u32>>,
}

/// The JSON text of `layout`, compiled from plan `plan`.
pub fn write(layout: &ExpertLayout, plan: &str, target: Target) -> String {
    let machine = target.machine;
    let alive = target
        .devices()
        .into_iter()
        .map(|d| {
            Json::Obj(vec![
                ("id", Json::Int(i64::from(d.0))),
                ("name", Json::Str(machine.die_label(d))),
            ])
        })
        .collect();
    let layers = target
        .moe_layers()
        .into_iter()
        .map(|layer| {
            let replicas = layout
                .experts
                .get(layer as usize)
                .map(|experts| {
                    experts
                        .iter()
                        .map(|dies| Json::ints(dies.iter().map(|d| i64::from(d.0))))
                        .collect()
                })
                .unwrap_or_default();
            Json::Obj(vec![
                ("layer", Json::Int(layer as i64)),
                ("replicas", Json::Arr(replicas)),
            ])
        })
        .collect();
    json::to_text(&Json::Obj(vec![
        ("format", Json::Str(FORMAT_NAME.into())),
        ("version", Json::Int(VERSION as i64)),
        ("plan", Json::Str(plan.into())),
        (
            "model",
            Json::Obj(vec![
                ("name", Json::Str(target.model.name.clone())),
                ("layers", Json::Int(target.model.layers as i64)),
                ("experts", Json::Int(target.experts() as i64)),
            ]),
        ),
        (
            "machine",
            Json::Obj(vec![
                ("name", Json::Str(machine.spec().name.clone())),
                ("dies", Json::Int(i64::from(machine.die_count()))),
                ("alive", Json::Arr(alive)),
            ]),
        ),
        ("layers", Json::Arr(layers)),
    ]))
}

/// The layout a moec placement file records, checked against the model
/// and machine.
pub fn read(text: &str, target: Target) -> Result<ExpertLayout, Problem> {
    let header: Header =
        serde_json::from_str(text).map_err(|e| Problem::malformed(format!("not a moec placement file: {e}")))?;
    if header.format != FORMAT_NAME {
        return Err(Problem::malformed(format!(
            "`format` is \"{}\", not \"{FORMAT_NAME}\"",
            header.format
        )));
    }
    if header.version != VERSION {
        return Err(Problem::new(
            ProblemKind::Malformed,
            format!(
                "moec placement file version {}; this moec reads version {VERSION}",
                header.version
            ),
            "write the placement again with this moec",
        ));
    }
    let file: File =
        serde_json::from_str(text).map_err(|e| Problem::malformed(format!("not a moec placement file: {e}")))?;
    let model = target.model;
    let machine = target.machine;
    let experts = target.experts();
    let model_problem = |message: String| {
        Problem::new(
            ProblemKind::Model,
            message,
            "export the placement from a plan of the same model",
        )
    };
    let machine_problem = |message: String| {
        Problem::new(
            ProblemKind::Machine,
            message,
            "export the placement for this machine, or use the machine it was written for",
        )
    };
    if file.model.layers != model.layers || file.model.experts != experts {
        return Err(model_problem(format!(
            "the file is for a model of {} layers and {} experts; model `{}` has {} layers and {experts} experts",
            file.model.layers, file.model.experts, model.name, model.layers
        )));
    }
    let machine_name = &machine.spec().name;
    if file.machine.dies != u64::from(machine.die_count()) {
        return Err(machine_problem(format!(
            "the file is for a machine of {} dies; machine `{machine_name}` has {}",
            file.machine.dies,
            machine.die_count()
        )));
    }
    let alive_here = |id: u32| -> Result<DieId, Problem> {
        let die = DieId(id);
        if id >= machine.die_count() {
            Err(machine_problem(format!(
                "die id {id} is not on machine `{machine_name}` (dies 0..{})",
                machine.die_count()
            )))
        } else if !machine.is_alive(die) {
            Err(machine_problem(format!(
                "die {} (id {id}) is dead on machine `{machine_name}`",
                machine.die_label(die)
            )))
        } else {
            Ok(die)
        }
    };
    for named in &file.machine.alive {
        let die = alive_here(named.id)?;
        let here = machine.die_label(die);
        if named.name != here {
            return Err(machine_problem(format!(
                "the file names die id {} \"{}\" but on machine `{machine_name}` it is \"{here}\"",
                named.id, named.name
            )));
        }
    }
    let moe_layers = target.moe_layers();
    let written: Vec<u64> = file.layers.iter().map(|l| l.layer).collect();
    if written != moe_layers {
        return Err(model_problem(format!(
            "the file places layers {} but model `{}` has MoE layers {}",
            super::slots::layer_ranges(&written),
            model.name,
            super::slots::layer_ranges(&moe_layers)
        )));
    }
    let mut layout = ExpertLayout {
        experts: vec![Vec::new(); model.layers as usize],
    };
    for l in file.layers {
        if l.replicas.len() as u64 != experts {
            return Err(model_problem(format!(
                "layer {} lists replicas of {} experts; model `{}` has {experts}",
                l.layer,
                l.replicas.len(),
                model.name
            )));
        }
        let mut holders = Vec::with_capacity(l.replicas.len());
        for (expert, ids) in l.replicas.into_iter().enumerate() {
            if ids.is_empty() {
                return Err(model_problem(format!(
                    "in layer {}, expert {expert} has no replica",
                    l.layer
                )));
            }
            let mut dies = ids
                .into_iter()
                .map(alive_here)
                .collect::<Result<Vec<DieId>, Problem>>()?;
            // A die listed twice holds two slots (two copies) of the expert.
            dies.sort();
            holders.push(dies);
        }
        if let Some(slot) = layout.experts.get_mut(l.layer as usize) {
            *slot = holders;
        }
    }
    Ok(layout)
}
