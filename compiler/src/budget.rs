//! What a plan will cost to compile and simulate, estimated from its
//! sizes before any of the work is done, and the limits that keep every
//! plan the language accepts inside a workstation's memory (E0046).
//!
//! Each size the language bounds (layers 100,000, experts 65,536, dies
//! 2^20, batch and lengths 2^24, steps 2^24) is safe alone; their
//! products are not. Four products drive the cost, each measured on the
//! release build (docs/ARCHITECTURE.md, "Where limits are enforced"):
//!
//! - die-layers (alive dies x layers): the schedule holds a program per
//!   die with a few instructions per layer, and the engine and network
//!   keep state per die and layer: about 4 KB each when a step runs;
//! - expert nodes (MoE layers x routed experts): the IR's nodes, about
//!   0.5 KB each;
//! - routing choices per step (tokens x top_k x MoE layers): a step's
//!   routing, 4 bytes a choice, held while the step runs;
//! - migration planning (steps x MoE layers): a migration policy plays the
//!   run forward step by step, generating and balancing each step's loads
//!   per MoE layer; and NI-Balancer's cold-route table, dies^2 entries.
//!
//! `moec netbench` has its own: the messages it may simulate in all.

use crate::diag::{Code, Diagnostic};
use crate::passes::MigrationPolicy;
use crate::sema::Plan;
use moec_runtime::machine::Machine;
use moec_runtime::model::ModelSpec;
use moec_runtime::workload::WorkloadSpec;

/// Alive dies x layers: about 1 GiB when a step runs (65,536 dies of 4
/// layers, or 2 dies of 100,000: the layer limit on the smallest machine).
pub const MAX_DIE_LAYERS: u64 = 1 << 18;
/// MoE layers x routed experts: about 4 GiB of IR.
pub const MAX_EXPERT_NODES: u64 = 1 << 23;
/// Tokens x top_k x MoE layers in one step: 1 GiB of routing.
pub const MAX_ROUTING_CHOICES: u64 = 1 << 28;
/// Steps x MoE layers a migration policy plans over: DeepSeek-V3's 58 MoE
/// layers for 18,000 steps, about 15 minutes of compiling.
pub const MAX_MIGRATION_LAYER_STEPS: u64 = 1 << 20;
/// Dies NI-Balancer plans on: its cold-route table has dies^2 entries per
/// phase (4,096 dies: 0.5 GiB) and its three-leg search visits dies^2
/// relays.
pub const MAX_NI_BALANCER_DIES: u64 = 4096;

/// Refuses (E0046, at the plan) a plan whose estimated cost passes a
/// limit; `steps` is what a migration policy would plan over.
pub fn check(
    plan: &Plan,
    model: &ModelSpec,
    machine: &Machine,
    workload: &WorkloadSpec,
    policy: MigrationPolicy,
    steps: u64,
) -> Result<(), Diagnostic> {
    let dies = machine.alive_dies().len() as u64;
    let moe_layers = model.moe_layers();
    let (experts, top_k) = model.moe.as_ref().map_or((0, 0), |m| (m.experts, m.top_k));
    let mut sizes = vec![
        Size {
            what: "alive dies x layers",
            of: format!("{dies} x {}", model.layers),
            value: dies.saturating_mul(model.layers),
            limit: MAX_DIE_LAYERS,
            hint: "each die runs a program with instructions for every layer; simulate fewer layers \
                   (the cost per layer repeats) or a smaller machine",
        },
        Size {
            what: "MoE layers x experts",
            of: format!("{moe_layers} x {experts}"),
            value: moe_layers.saturating_mul(experts),
            limit: MAX_EXPERT_NODES,
            hint: "the IR has a node per expert of every MoE layer; model fewer layers (the cost per layer repeats)",
        },
        Size {
            what: "routing choices a step (tokens x top_k x MoE layers)",
            of: format!("{} x {top_k} x {moe_layers}", workload.tokens_per_step()),
            value: workload
                .tokens_per_step()
                .saturating_mul(top_k)
                .saturating_mul(moe_layers),
            limit: MAX_ROUTING_CHOICES,
            hint: "a step's routing is held while it runs; use a smaller batch (or seq_len) or fewer layers",
        },
    ];
    if policy != MigrationPolicy::None {
        sizes.push(Size {
            what: "steps x MoE layers a migration policy plans over",
            of: format!("{steps} x {moe_layers}"),
            value: steps.saturating_mul(moe_layers),
            limit: MAX_MIGRATION_LAYER_STEPS,
            hint: "the policy plays the run forward step by step at compile time; run fewer steps (--steps N)",
        });
    }
    if matches!(policy, MigrationPolicy::NiBalancer { .. }) {
        sizes.push(Size {
            what: "dies NI-Balancer plans on",
            of: format!("{dies}"),
            value: dies,
            limit: MAX_NI_BALANCER_DIES,
            hint: "its cold-route table and three-leg search grow as dies^2; use a smaller machine",
        });
    }
    match sizes.into_iter().find(|s| s.value > s.limit) {
        None => Ok(()),
        Some(s) => Err(Diagnostic::error(
            Code::E0046,
            plan.span,
            format!(
                "plan `{}` is too large to compile and simulate here: {} is {} = {}, above the limit of {}",
                plan.name, s.what, s.of, s.value, s.limit
            ),
        )
        .with_label("this plan")
        .with_hint(s.hint)),
    }
}

/// Messages a netbench load may simulate in all (each die's average count,
/// lengthened up to 16 times while stability is unclear): their latencies
/// are kept for the percentiles, 8 bytes each, with the flows in flight.
pub const MAX_NETBENCH_MESSAGES: u64 = 1 << 26;

/// Refuses (E0046) a netbench whose longest load would simulate more than
/// `MAX_NETBENCH_MESSAGES` messages.
pub fn check_netbench(dies: u64, messages_per_die: u32) -> Result<(), Diagnostic> {
    let lengthening = u64::from(moec_runtime::sim::netbench::MAX_LENGTHENING);
    let total = dies
        .saturating_mul(u64::from(messages_per_die))
        .saturating_mul(lengthening);
    if total <= MAX_NETBENCH_MESSAGES {
        return Ok(());
    }
    Err(Diagnostic::global(
        Code::E0046,
        format!(
            "netbench would simulate up to {dies} dies x {messages_per_die} messages x {lengthening} \
             (lengthening) = {total} messages, above the limit of {MAX_NETBENCH_MESSAGES}"
        ),
    )
    .with_hint(format!(
        "pass --messages {} or fewer on this machine",
        (MAX_NETBENCH_MESSAGES / dies.max(1) / lengthening).max(1)
    )))
}

/// One estimated size against its limit.
struct Size {
    what: &'static str,
    /// The factors, as a reader checks them.
    of: String,
    value: u64,
    limit: u64,
    hint: &'static str,
}
