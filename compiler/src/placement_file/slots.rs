//! The engines' view of a placement: per MoE layer, per device, the expert
//! in each slot. Devices are the machine's alive dies in id order (device d
//! is the d-th alive die), and every device has the same number of slots in
//! every layer, as SGLang, vllm-ascend and TensorRT-LLM all require.
//!
//! Converting from an [`ExpertLayout`] checks that rule (E0039, naming the
//! dies); converting back checks a file's devices, slots and expert ids
//! against the model and machine (E0037, E0038, E0039), so each format's
//! reader only has to get its own layout of the numbers right.

use super::{ExpertLayout, Format, Padding, Problem, ProblemKind, Target};
use moec_runtime::machine::{DieId, Machine};
use moec_runtime::units::Bytes;
use std::collections::BTreeMap;

/// One MoE layer as engines hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSlots {
    /// The model's layer index.
    pub layer: u64,
    /// `devices[d][s]`: the expert id in slot `s` of device `d`, as the file
    /// has it (checked against the model when converted to a layout).
    pub devices: Vec<Vec<i64>>,
}

/// Every MoE layer as engines hold it, in layer order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceSlots {
    pub layers: Vec<LayerSlots>,
}

impl DeviceSlots {
    /// Slots on each device (the same on all of them).
    pub fn slots_per_device(&self) -> usize {
        self.layers.first().and_then(|l| l.devices.first()).map_or(0, Vec::len)
    }

    /// Devices (the machine's alive dies).
    pub fn device_count(&self) -> usize {
        self.layers.first().map_or(0, |l| l.devices.len())
    }

    /// The engine view of `layout`: each device's experts in ascending id
    /// order. When dies hold different numbers of experts: E0039, or under
    /// [`Padding::Repeat`] the short dies' experts again in further slots.
    pub fn from_layout(
        layout: &ExpertLayout,
        target: Target,
        format: Format,
        padding: Padding,
    ) -> Result<DeviceSlots, Problem> {
        let devices = target.devices();
        let mut layers = Vec::new();
        for layer in target.moe_layers() {
            let experts = layout.experts.get(layer as usize).ok_or_else(|| {
                Problem::new(
                    ProblemKind::Model,
                    format!("the placement has no layer {layer}"),
                    "this is a bug in moec; please report it with the input file",
                )
            })?;
            let mut slots: Vec<Vec<i64>> = vec![Vec::new(); devices.len()];
            for (expert, dies) in experts.iter().enumerate() {
                for die in dies {
                    let Ok(d) = devices.binary_search(die) else {
                        return Err(Problem::new(
                            ProblemKind::Machine,
                            format!(
                                "expert {expert} of layer {layer} is placed on {}, which is not an alive die",
                                target.machine.die_label(*die)
                            ),
                            "this is a bug in moec; please report it with the input file",
                        ));
                    };
                    slots[d].push(expert as i64);
                }
            }
            layers.push(LayerSlots { layer, devices: slots });
        }
        let mut out = DeviceSlots { layers };
        if let Padding::Repeat { free } = padding {
            out.pad(target, free)?;
        }
        out.equal_counts(target.machine, format)?;
        Ok(out)
    }

    /// Fills every device up to the most slots any device has in any layer
    /// with its own experts again, in id order (round robin over a die
    /// count that does not divide the experts leaves some dies short).
    /// Each added slot is one more copy of an expert's weights in the
    /// engine, so it must fit the die's `free` memory (E0020); a die with no
    /// expert in a layer has nothing to repeat (left for E0039).
    fn pad(&mut self, target: Target, free: &[Bytes]) -> Result<(), Problem> {
        let devices = target.devices();
        let most = self
            .layers
            .iter()
            .flat_map(|l| &l.devices)
            .map(Vec::len)
            .max()
            .unwrap_or(0);
        let mut added = vec![0u64; devices.len()];
        for l in &mut self.layers {
            for (d, slots) in l.devices.iter_mut().enumerate() {
                let held = slots.clone();
                for again in held.iter().cycle().take(most.saturating_sub(slots.len())) {
                    slots.push(*again);
                    added[d] += 1;
                }
            }
        }
        let expert = target.model.expert_bytes();
        for (&die, &extra) in devices.iter().zip(&added) {
            let need = expert * extra;
            let have = free.get(die.index()).copied().unwrap_or(Bytes(0));
            if extra > 0 && need > have {
                return Err(Problem::new(
                    ProblemKind::Memory,
                    format!(
                        "padding {} to {most} slots a layer adds {extra} expert slots ({need}) but it has {have} free",
                        target.machine.die_label(die)
                    ),
                    "engines keep a copy of the weights in every slot; use a placement with equal slots per die",
                ));
            }
        }
        Ok(())
    }

    /// E0039 unless every device holds the same number of experts in every
    /// layer; the message names dies and their counts.
    fn equal_counts(&self, machine: &Machine, format: Format) -> Result<(), Problem> {
        let devices = machine.alive_dies();
        let need = format!(
            "{} gives every device the same number of expert slots in every MoE layer",
            format.engine()
        );
        let hint = "pass --pad-slots to fill the short dies with second slots of experts they hold, write \
                    `--format moec`, which records any placement, or choose a placement with equal slots per die";
        let first = self.slots_per_device();
        for l in &self.layers {
            // Dies by the number of experts they hold in this layer.
            let mut by_count: BTreeMap<usize, Vec<DieId>> = BTreeMap::new();
            for (d, slots) in l.devices.iter().enumerate() {
                by_count.entry(slots.len()).or_default().extend(devices.get(d));
            }
            if by_count.len() > 1 {
                let parts: Vec<String> = by_count
                    .iter()
                    .rev()
                    .map(|(count, dies)| format!("{count} on {}", die_list(machine, dies)))
                    .collect();
                return Err(Problem::new(
                    ProblemKind::Slots,
                    format!(
                        "{need}, but layer {} holds experts unequally: {}",
                        l.layer,
                        parts.join("; ")
                    ),
                    hint,
                ));
            }
            let count = by_count.keys().next().copied().unwrap_or(0);
            if count != first {
                return Err(Problem::new(
                    ProblemKind::Slots,
                    format!(
                        "{need}, but layer {} holds {first} experts on every die and layer {} holds {count}",
                        self.layers.first().map_or(0, |f| f.layer),
                        l.layer
                    ),
                    hint,
                ));
            }
        }
        Ok(())
    }

    /// The layout a file's slots describe, checked: the model's MoE layers
    /// in order (E0037), one device per alive die (E0038), equal slots
    /// (E0039), expert ids in range and every expert with a replica (E0037).
    /// Two slots of one expert on one device are one replica.
    pub fn into_layout(self, target: Target, format: Format) -> Result<ExpertLayout, Problem> {
        let devices = target.devices();
        let experts = target.experts();
        let machine_name = &target.machine.spec().name;
        let model_name = &target.model.name;
        let moe_layers = target.moe_layers();
        let written: Vec<u64> = self.layers.iter().map(|l| l.layer).collect();
        if written != moe_layers {
            return Err(Problem::new(
                ProblemKind::Model,
                format!(
                    "the file places MoE layers {} but model `{model_name}` has MoE layers {}",
                    layer_ranges(&written),
                    layer_ranges(&moe_layers)
                ),
                "export the placement from a plan of the same model",
            ));
        }
        let mut layout = ExpertLayout {
            experts: vec![Vec::new(); target.model.layers as usize],
        };
        let per_device = self.slots_per_device();
        for l in self.layers {
            if l.devices.len() != devices.len() {
                return Err(Problem::new(
                    ProblemKind::Machine,
                    format!(
                        "the file has {} devices (in layer {}) but machine `{machine_name}` has {} alive dies",
                        l.devices.len(),
                        l.layer,
                        devices.len()
                    ),
                    "engine devices are the machine's alive dies in id order; export the placement for this machine",
                ));
            }
            let mut holders: Vec<Vec<DieId>> = vec![Vec::new(); experts as usize];
            for (d, (slots, &die)) in l.devices.iter().zip(&devices).enumerate() {
                if slots.len() != per_device {
                    return Err(Problem::new(
                        ProblemKind::Slots,
                        format!(
                            "{} gives every device the same number of slots, but device {d} has {} in layer {} \
                             and device 0 has {per_device} in layer {}",
                            format.engine(),
                            slots.len(),
                            l.layer,
                            moe_layers.first().copied().unwrap_or(0)
                        ),
                        "give every device the same number of slots in every layer",
                    ));
                }
                for (s, &id) in slots.iter().enumerate() {
                    let Some(h) = usize::try_from(id).ok().and_then(|e| holders.get_mut(e)) else {
                        return Err(Problem::new(
                            ProblemKind::Model,
                            format!(
                                "expert id {id} (layer {}, device {d}, slot {s}) is outside 0..{experts}, \
                                 the experts of model `{model_name}`",
                                l.layer
                            ),
                            "export the placement from a plan of the same model",
                        ));
                    };
                    // Two slots of one expert on a device are two copies.
                    h.push(die);
                }
            }
            let missing: Vec<String> = holders
                .iter()
                .enumerate()
                .filter(|(_, h)| h.is_empty())
                .map(|(e, _)| e.to_string())
                .collect();
            if !missing.is_empty() {
                return Err(Problem::new(
                    ProblemKind::Model,
                    format!(
                        "in layer {}, expert{} {} of model `{model_name}` {} no replica",
                        l.layer,
                        if missing.len() == 1 { "" } else { "s" },
                        abbreviated(&missing),
                        if missing.len() == 1 { "has" } else { "have" }
                    ),
                    "every expert needs a slot on some device: its tokens have nowhere else to go",
                ));
            }
            for h in &mut holders {
                h.sort();
            }
            if let Some(slot) = layout.experts.get_mut(l.layer as usize) {
                *slot = holders;
            }
        }
        Ok(layout)
    }
}

/// Up to 8 items, then how many more.
fn abbreviated(items: &[String]) -> String {
    const SHOWN: usize = 8;
    if items.len() <= SHOWN {
        return items.join(", ");
    }
    format!("{} and {} more", items[..SHOWN].join(", "), items.len() - SHOWN)
}

/// `4 dies ((0, 0), (1, 0), ...)`.
fn die_list(machine: &Machine, dies: &[DieId]) -> String {
    let names: Vec<String> = dies.iter().map(|&d| machine.die_label(d)).collect();
    format!(
        "{} {} ({})",
        dies.len(),
        if dies.len() == 1 { "die" } else { "dies" },
        abbreviated(&names)
    )
}

/// `3..=60`, `1, 3, 5` or `none`: a list of layers, runs shortened.
pub fn layer_ranges(layers: &[u64]) -> String {
    if layers.is_empty() {
        return "none".into();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < layers.len() {
        let mut j = i;
        while j + 1 < layers.len() && layers[j + 1] == layers[j] + 1 {
            j += 1;
        }
        parts.push(if j >= i + 2 {
            format!("{}..={}", layers[i], layers[j])
        } else if j == i + 1 {
            format!("{}, {}", layers[i], layers[j])
        } else {
            layers[i].to_string()
        });
        i = j + 1;
    }
    abbreviated(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_lists_shorten_runs() {
        assert_eq!(layer_ranges(&[3, 4, 5, 6]), "3..=6");
        assert_eq!(layer_ranges(&[1, 3, 5]), "1, 3, 5");
        assert_eq!(layer_ranges(&[0, 1, 5]), "0, 1, 5");
        assert_eq!(layer_ranges(&[]), "none");
    }
}
