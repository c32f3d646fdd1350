//! vllm-ascend's expert map, the JSON its `expert_map_path` names (and its
//! EPLB records): `moe_layer_count`, then `layer_list`, one entry per MoE
//! layer in order (`layer_id` counts MoE layers from 0), each with
//! `device_count` and `device_list`, one entry per device in order
//! (`device_id`), whose `device_expert` lists the expert id in each of the
//! device's slots. vllm-ascend builds one tensor of layers x devices x slots
//! from it, so every list has the same length, and it reads the lists by
//! position: the ids are written, and read back, but positions decide.

use super::json::{self, Json};
use super::slots::{DeviceSlots, LayerSlots};
use super::{Problem, ProblemKind, Target};
use serde::Deserialize;

/// The file as vllm-ascend reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    moe_layer_count: u64,
    layer_list: Vec<Layer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Layer {
    /// Accepted and not used: positions decide, as in vllm-ascend.
    #[serde(default, rename = "layer_id")]
    _layer_id: Option<i64>,
    device_count: u64,
    device_list: Vec<Device>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Device {
    /// As `layer_id`.
    #[serde(default, rename = "device_id")]
    _device_id: Option<i64>,
    device_expert: Vec<i64>,
}

/// The JSON text of `slots`.
pub fn write(slots: &DeviceSlots) -> String {
    let layers: Vec<Json> = slots
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let devices = l
                .devices
                .iter()
                .enumerate()
                .map(|(d, experts)| {
                    Json::Obj(vec![
                        ("device_id", Json::Int(d as i64)),
                        ("device_expert", Json::ints(experts.iter().copied())),
                    ])
                })
                .collect();
            Json::Obj(vec![
                ("layer_id", Json::Int(i as i64)),
                ("device_count", Json::Int(l.devices.len() as i64)),
                ("device_list", Json::Arr(devices)),
            ])
        })
        .collect();
    json::to_text(&Json::Obj(vec![
        ("moe_layer_count", Json::Int(slots.layers.len() as i64)),
        ("layer_list", Json::Arr(layers)),
    ]))
}

/// The slots a vllm-ascend file describes: its i-th layer entry is the
/// model's i-th MoE layer.
pub fn read(text: &str, target: Target) -> Result<DeviceSlots, Problem> {
    let file: File = serde_json::from_str(text)
        .map_err(|e| Problem::malformed(format!("not vllm-ascend's expert map JSON: {e}")))?;
    if file.moe_layer_count != file.layer_list.len() as u64 {
        return Err(Problem::malformed(format!(
            "moe_layer_count is {} but layer_list has {} entries",
            file.moe_layer_count,
            file.layer_list.len()
        )));
    }
    let moe_layers = target.moe_layers();
    if file.layer_list.len() != moe_layers.len() {
        return Err(Problem::new(
            ProblemKind::Model,
            format!(
                "the expert map has {} MoE layers but model `{}` has {}",
                file.layer_list.len(),
                target.model.name,
                moe_layers.len()
            ),
            "export the placement from a plan of the same model",
        ));
    }
    let mut layers = Vec::new();
    for (i, (layer, model_layer)) in file.layer_list.into_iter().zip(moe_layers).enumerate() {
        if layer.device_count != layer.device_list.len() as u64 {
            return Err(Problem::malformed(format!(
                "layer_list[{i}] has device_count {} but {} entries in device_list",
                layer.device_count,
                layer.device_list.len()
            )));
        }
        layers.push(LayerSlots {
            layer: model_layer,
            devices: layer.device_list.into_iter().map(|d| d.device_expert).collect(),
        });
    }
    Ok(DeviceSlots { layers })
}
