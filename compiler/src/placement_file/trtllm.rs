//! TensorRT-LLM's `moe_load_balancer.yaml` (the `load_balancer` of its
//! `moe_config`): `num_slots`, the expert slots of a layer over all devices;
//! `initial_global_assignments`, keyed by the model's layer index (MoE
//! layers only), each a list of `num_slots` expert ids where slots
//! `d * num_slots / devices ..` belong to device d; and
//! `layer_updates_per_iter`, 0 for a static placement. TensorRT-LLM checks
//! the file against a strict schema, so nothing else is written. The text
//! is laid out as TensorRT-LLM's own `generate_eplb_config.py` writes it:
//! keys sorted, each layer's list on one line.

use super::slots::{DeviceSlots, LayerSlots};
use super::yaml::{self, scalar_text};
use super::{Problem, ProblemKind, Target};
use std::collections::BTreeMap;
use std::fmt::Write;
use yaml_rust2::Yaml;

/// The keys that make a mapping TensorRT-LLM's file (`ep_size`, written by
/// some of its scripts, is accepted when it matches the devices).
pub const KEYS: [&str; 3] = ["initial_global_assignments", "layer_updates_per_iter", "num_slots"];

/// The YAML text of `slots`.
pub fn write(slots: &DeviceSlots) -> String {
    let mut out = String::from("initial_global_assignments:\n");
    for l in &slots.layers {
        let ids: Vec<String> = l.devices.iter().flatten().map(i64::to_string).collect();
        let _ = writeln!(out, "  {}: [{}]", l.layer, ids.join(", "));
    }
    let _ = writeln!(out, "layer_updates_per_iter: 0");
    let _ = writeln!(out, "num_slots: {}", slots.slots_per_device() * slots.device_count());
    out
}

/// The slots a TensorRT-LLM file describes.
pub fn read(text: &str, target: Target) -> Result<DeviceSlots, Problem> {
    let malformed = |m: String| Problem::malformed(format!("not TensorRT-LLM's load balancer file: {m}"));
    let Yaml::Hash(map) = yaml::load(text).map_err(malformed)? else {
        return Err(malformed("the top level is not a mapping".into()));
    };
    let mut num_slots = None;
    let mut ep_size = None;
    let mut assignments = None;
    for (key, value) in &map {
        match key.as_str() {
            Some("num_slots") => num_slots = Some(count(value, "num_slots").map_err(malformed)?),
            Some("ep_size") => ep_size = Some(count(value, "ep_size").map_err(malformed)?),
            Some("layer_updates_per_iter") => {
                // Online rebalancing after start; the initial assignment is the placement.
                count(value, "layer_updates_per_iter").map_err(malformed)?;
            }
            Some("initial_global_assignments") => assignments = Some(layers(value).map_err(malformed)?),
            _ => {
                return Err(malformed(format!(
                    "unknown key `{}` (keys: {}, ep_size)",
                    scalar_text(key),
                    KEYS.join(", ")
                )))
            }
        }
    }
    let assignments =
        assignments.ok_or_else(|| malformed("it has no `initial_global_assignments` to place experts by".into()))?;
    let devices = target.devices().len();
    if let Some(ep) = ep_size.filter(|&ep| ep != devices as u64) {
        return Err(Problem::new(
            ProblemKind::Machine,
            format!(
                "ep_size is {ep} but machine `{}` has {devices} alive dies",
                target.machine.spec().name
            ),
            "engine devices are the machine's alive dies in id order; export the placement for this machine",
        ));
    }
    let moe_layers = target.moe_layers();
    let model = target.model;
    if let Some(&layer) = assignments.keys().find(|l| !moe_layers.contains(l)) {
        return Err(Problem::new(
            ProblemKind::Model,
            format!(
                "initial_global_assignments has layer {layer}, which is not an MoE layer of model `{}` (MoE layers {})",
                model.name,
                super::slots::layer_ranges(&moe_layers)
            ),
            "keys are the model's layer indices; export the placement from a plan of the same model",
        ));
    }
    if let Some(layer) = moe_layers.iter().find(|l| !assignments.contains_key(l)) {
        return Err(Problem::new(
            ProblemKind::Model,
            format!(
                "initial_global_assignments has no entry for layer {layer}, an MoE layer of model `{}`",
                model.name
            ),
            "every MoE layer needs its assignment; export the placement from a plan of the same model",
        ));
    }
    let slots = num_slots.unwrap_or_else(|| assignments.values().next().map_or(0, |v| v.len() as u64));
    if slots == 0 || !slots.is_multiple_of(devices as u64) {
        return Err(Problem::new(
            ProblemKind::Slots,
            format!("num_slots {slots} does not divide over the {devices} devices (the alive dies)"),
            "TensorRT-LLM gives every device num_slots / devices slots; export the placement for this machine",
        ));
    }
    if let Some((layer, ids)) = assignments.iter().find(|(_, ids)| ids.len() as u64 != slots) {
        return Err(Problem::new(
            ProblemKind::Slots,
            format!("layer {layer} assigns {} slots but num_slots is {slots}", ids.len()),
            "each layer's list has one expert id per slot",
        ));
    }
    let per_device = (slots / devices as u64) as usize;
    Ok(DeviceSlots {
        layers: assignments
            .into_iter()
            .map(|(layer, ids)| LayerSlots {
                layer,
                devices: ids.chunks(per_device).map(<[i64]>::to_vec).collect(),
            })
            .collect(),
    })
}

/// A non-negative integer setting.
fn count(value: &Yaml, key: &str) -> Result<u64, String> {
    match value {
        Yaml::Integer(n) if *n >= 0 => Ok(*n as u64),
        other => Err(format!("`{key}` is {}, not a non-negative integer", scalar_text(other))),
    }
}

/// `initial_global_assignments`: layer index (an integer, or a string of
/// one, as JSON keys are) to a list of expert ids.
fn layers(value: &Yaml) -> Result<BTreeMap<u64, Vec<i64>>, String> {
    let Yaml::Hash(map) = value else {
        return Err("`initial_global_assignments` is not a mapping of layer to expert ids".into());
    };
    let mut out = BTreeMap::new();
    for (key, list) in map {
        let layer = match key {
            Yaml::Integer(n) => u64::try_from(*n).ok(),
            Yaml::String(s) => s.parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| format!("layer key `{}` is not a layer index", scalar_text(key)))?;
        let Yaml::Array(items) = list else {
            return Err(format!(
                "layer {layer} maps to {}, not a list of expert ids",
                scalar_text(list)
            ));
        };
        let ids = items
            .iter()
            .map(|y| match y {
                Yaml::Integer(n) => Ok(*n),
                other => Err(format!(
                    "layer {layer} has `{}` where an expert id belongs",
                    scalar_text(other)
                )),
            })
            .collect::<Result<Vec<i64>, String>>()?;
        if out.insert(layer, ids).is_some() {
            return Err(format!("layer {layer} is listed twice"));
        }
    }
    Ok(out)
}
