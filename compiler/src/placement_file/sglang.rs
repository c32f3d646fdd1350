//! SGLang's expert location, the JSON `--init-expert-location FILE.json`
//! accepts: `{"physical_to_logical_map": [[...], ...]}`, one row per layer
//! of the model (dense layers included, as SGLang sizes it by
//! `num_hidden_layers`), each row the logical expert id of every physical
//! expert slot. Physical slot p lives on device `p / slots_per_device`.
//! SGLang passes the object's keys as arguments, so the file holds that one
//! key and nothing else.

use super::json::{self, Json};
use super::slots::{DeviceSlots, LayerSlots};
use super::{Problem, ProblemKind, Target};
use moec_runtime::model::LayerKind;
use serde::Deserialize;

/// The file as SGLang reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    physical_to_logical_map: Vec<Vec<i64>>,
}

/// The JSON text of `slots`. Dense layers get SGLang's trivial row (slot p
/// holds expert p mod E), which SGLang never reads for routing.
pub fn write(slots: &DeviceSlots, target: Target) -> String {
    let physical = slots.slots_per_device() * slots.device_count();
    let experts = target.experts().max(1) as i64;
    let mut moe = slots.layers.iter();
    let rows: Vec<Json> = (0..target.model.layers)
        .map(|layer| match target.model.layer_kind(layer) {
            LayerKind::Moe => match moe.next() {
                Some(l) => Json::ints(l.devices.iter().flatten().copied()),
                None => Json::ints([]),
            },
            LayerKind::Dense => Json::ints((0..physical as i64).map(|p| p % experts)),
        })
        .collect();
    json::to_text(&Json::Obj(vec![("physical_to_logical_map", Json::Arr(rows))]))
}

/// The slots a SGLang file describes: its rows of the model's MoE layers,
/// each cut into one run of slots per alive die.
pub fn read(text: &str, target: Target) -> Result<DeviceSlots, Problem> {
    let file: File = serde_json::from_str(text)
        .map_err(|e| Problem::malformed(format!("not SGLang's expert location JSON: {e}")))?;
    let rows = file.physical_to_logical_map;
    let model = target.model;
    if rows.len() as u64 != model.layers {
        return Err(Problem::new(
            ProblemKind::Model,
            format!(
                "SGLang's physical_to_logical_map has {} rows, one per layer, but model `{}` has {} layers",
                rows.len(),
                model.name,
                model.layers
            ),
            "export the placement from a plan of the same model",
        ));
    }
    let physical = rows.first().map_or(0, Vec::len);
    if let Some((layer, row)) = rows.iter().enumerate().find(|(_, r)| r.len() != physical) {
        return Err(Problem::new(
            ProblemKind::Slots,
            format!(
                "layer 0 has {physical} physical experts but layer {layer} has {}",
                row.len()
            ),
            "SGLang has the same physical experts in every layer",
        ));
    }
    let devices = target.devices().len();
    if physical == 0 || !physical.is_multiple_of(devices) {
        return Err(Problem::new(
            ProblemKind::Slots,
            format!(
                "{physical} physical experts do not divide over the {devices} devices (the alive dies of `{}`)",
                target.machine.spec().name
            ),
            "SGLang gives every device physical_experts / devices slots; export the placement for this machine",
        ));
    }
    let per_device = physical / devices;
    let layers = rows
        .into_iter()
        .enumerate()
        .filter(|&(layer, _)| model.layer_kind(layer as u64) == LayerKind::Moe)
        .map(|(layer, row)| LayerSlots {
            layer: layer as u64,
            devices: row.chunks(per_device).map(<[i64]>::to_vec).collect(),
        })
        .collect();
    Ok(DeviceSlots { layers })
}
