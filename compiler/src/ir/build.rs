//! Building the IR of one step from a checked plan's model, machine and
//! workload. Nothing is placed yet.

use super::{ExpertId, Header, Ir, LayerId, Node, Op, Overlap, Tensor, TensorType};
use moec_runtime::machine::Machine;
use moec_runtime::model::{Activation, LayerKind, ModelSpec};
use moec_runtime::units::Bytes;
use moec_runtime::workload::WorkloadSpec;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};

/// The unplaced IR of one step of `model` serving `workload`.
pub fn build(plan: &str, model: &ModelSpec, machine: &Machine, workload: &WorkloadSpec) -> Ir {
    let tokens = workload.tokens_per_step();
    let data = TensorType::Data(model.dtype);
    let hidden_states = Tensor::new(vec![tokens, model.hidden], data);
    let mut g = StableDiGraph::new();
    let node = |op, layer: Option<u64>, weights: Bytes, out: &Tensor| Node {
        op,
        layer: layer.map(|l| LayerId(l as u32)),
        weights,
        state: Bytes(0),
        out: out.clone(),
        ann: Default::default(),
    };
    let bytes = |params: u64| Bytes(params.saturating_mul(model.dtype.bytes()));
    let ffn_activation = model.moe.as_ref().map_or(Activation::Swiglu, |m| m.activation);

    let mut prev = g.add_node(node(
        Op::Embed { vocab: model.vocab },
        None,
        bytes(model.vocab * model.hidden),
        &hidden_states,
    ));
    for l in 0..model.layers {
        let mut attention = node(
            Op::Attention {
                kind: model.attention.kind(),
                heads: model.attention.heads(),
            },
            Some(l),
            model.attention_bytes(),
            &hidden_states,
        );
        // The KV cache of every sequence, for this layer.
        attention.state = model.kv_bytes_per_token() * workload.batch.saturating_mul(workload.context());
        let attn = add(&mut g, attention, &[prev]);
        prev = match (model.layer_kind(l), &model.moe) {
            (LayerKind::Moe, Some(moe)) => {
                let route = Tensor::new(vec![tokens, moe.top_k], TensorType::Route);
                let gate = Op::Gate {
                    experts: moe.experts,
                    top_k: moe.top_k,
                    scoring: moe.gate,
                    groups: moe.groups,
                    topk_groups: moe.topk_groups,
                };
                let gate = add(&mut g, node(gate, Some(l), bytes(model.gate_params()), &route), &[attn]);
                // Tokens an expert receives when routing is uniform; the runtime
                // sends what each step's routing really sends.
                let per_expert = (tokens * moe.top_k).div_ceil(moe.experts);
                let dispatched = Tensor::new(vec![per_expert, model.hidden], data);
                let dispatch = Op::Dispatch {
                    experts: moe.experts,
                    top_k: moe.top_k,
                };
                let dispatch = add(&mut g, node(dispatch, Some(l), Bytes(0), &dispatched), &[attn, gate]);
                let experts: Vec<NodeIndex> = (0..moe.experts)
                    .map(|e| {
                        let op = Op::Expert {
                            expert: ExpertId(e as u32),
                            ffn: moe.expert_ffn,
                            activation: moe.activation,
                        };
                        add(
                            &mut g,
                            node(op, Some(l), model.expert_bytes(), &dispatched),
                            &[dispatch],
                        )
                    })
                    .collect();
                let mut combine_inputs = experts;
                combine_inputs.push(gate);
                if moe.shared_experts > 0 {
                    let op = Op::SharedExpert {
                        count: moe.shared_experts,
                        ffn: moe.shared_ffn,
                        activation: moe.activation,
                    };
                    combine_inputs.push(add(
                        &mut g,
                        node(op, Some(l), model.shared_bytes(), &hidden_states),
                        &[attn],
                    ));
                }
                add(
                    &mut g,
                    node(Op::Combine { top_k: moe.top_k }, Some(l), Bytes(0), &hidden_states),
                    &combine_inputs,
                )
            }
            _ => {
                let op = Op::DenseFfn {
                    ffn: model.dense_ffn,
                    activation: ffn_activation,
                };
                add(
                    &mut g,
                    node(op, Some(l), model.dense_ffn_bytes(), &hidden_states),
                    &[attn],
                )
            }
        };
    }
    let logits = Tensor::new(vec![tokens, model.vocab], TensorType::Data(model.dtype));
    add(
        &mut g,
        node(
            Op::LmHead { vocab: model.vocab },
            None,
            bytes(model.vocab * model.hidden),
            &logits,
        ),
        &[prev],
    );

    let header = Header {
        plan: plan.to_string(),
        model: model.name.clone(),
        machine: machine.spec().name.clone(),
        workload: workload.name.clone(),
        tokens_per_step: tokens,
        dies: machine.die_count(),
        alive_dies: machine.alive_dies().len() as u32,
        passes: Vec::new(),
        notes: Vec::new(),
    };
    Ir {
        header,
        graph: g,
        model: model.clone(),
        shadow_slots: 0,
        overlap: Overlap::None,
        pools: None,
        transport: Default::default(),
        capacity_factor: None,
    }
}

/// Adds `node` with an edge from each input carrying that input's output.
fn add(g: &mut StableDiGraph<Node, Tensor>, node: Node, inputs: &[NodeIndex]) -> NodeIndex {
    let n = g.add_node(node);
    for &i in inputs {
        let t = g[i].out.clone();
        g.add_edge(i, n, t);
    }
    n
}
