//! Checking a `model` item into a [`ModelSpec`].

use super::reader::{unknown_choice, BlockReader};
use crate::diag::{Code, Diagnostic};
use crate::syntax::ast::Decl;
use moec_runtime::model::{Activation, AttentionSpec, DType, GateKind, ModelSpec, MoeSpec};

/// Upper bound on any model dimension: large enough for any real model,
/// small enough that products of dimensions fit in `u64`.
const MAX_DIM: u64 = 1 << 24;

/// Reads a model; `None` when an error leaves it unusable.
pub fn check(decl: &Decl, diags: &mut Vec<Diagnostic>) -> Option<ModelSpec> {
    let what = format!("model `{}`", decl.name.text);
    let mut r = BlockReader::new(&what, decl.name.span, &decl.body);
    let layers = r.req_int("layers", 1, 100_000, "layers = 32");
    let dense_layers = r.int("dense_layers", 0, 100_000).unwrap_or(0);
    let moe_every = r.int("moe_every", 1, 64).unwrap_or(1);
    let hidden = r.req_int("hidden", 1, MAX_DIM, "hidden = 4096");
    let vocab = r.req_int("vocab", 1, MAX_DIM, "vocab = 32000");
    let dense_ffn = r.int("dense_ffn", 1, MAX_DIM);
    let dtype = match r.choice("dtype", &["bf16", "fp16", "fp32", "fp8"]) {
        Some(("fp16", _)) => DType::Fp16,
        Some(("fp32", _)) => DType::Fp32,
        Some(("fp8", _)) => DType::Fp8,
        _ => DType::Bf16,
    };
    let attention = match r.section("attention") {
        Some((label, body, span)) => {
            let kind = label.map(|l| (l.text.as_str(), l.span));
            let mut a = BlockReader::new(format!("the attention of {what}"), span, body);
            let attention = match kind {
                Some(("mha", _)) => {
                    let heads = a.req_int("heads", 1, MAX_DIM, "heads = 32");
                    let head_dim = a.req_int("head_dim", 1, MAX_DIM, "head_dim = 128");
                    Some(AttentionSpec::Mha {
                        heads: heads?,
                        head_dim: head_dim?,
                    })
                }
                Some(("gqa", _)) => {
                    let heads = a.req_int("heads", 1, MAX_DIM, "heads = 32");
                    let kv_heads = a.req_int("kv_heads", 1, MAX_DIM, "kv_heads = 8");
                    let head_dim = a.req_int("head_dim", 1, MAX_DIM, "head_dim = 128");
                    if let (Some(h), Some(kv)) = (heads, kv_heads) {
                        if h % kv != 0 {
                            diags.push(
                                Diagnostic::error(
                                    Code::E0023,
                                    span,
                                    format!("{h} query heads cannot share {kv} key/value heads evenly"),
                                )
                                .with_label("in this attention block")
                                .with_hint("kv_heads must divide heads"),
                            );
                        }
                    }
                    Some(AttentionSpec::Gqa {
                        heads: heads?,
                        kv_heads: kv_heads?,
                        head_dim: head_dim?,
                    })
                }
                Some(("mla", _)) => {
                    let heads = a.req_int("heads", 1, MAX_DIM, "heads = 128");
                    let q_lora_rank = a.int("q_lora_rank", 0, MAX_DIM).unwrap_or(0);
                    let kv_lora_rank = a.req_int("kv_lora_rank", 1, MAX_DIM, "kv_lora_rank = 512");
                    let head_dim = a.req_int("head_dim", 1, MAX_DIM, "head_dim = 128");
                    let rope_dim = a.req_int("rope_dim", 1, MAX_DIM, "rope_dim = 64");
                    let v_head_dim = a.int("v_head_dim", 1, MAX_DIM);
                    Some(AttentionSpec::Mla {
                        heads: heads?,
                        q_lora_rank,
                        kv_lora_rank: kv_lora_rank?,
                        head_dim: head_dim?,
                        rope_dim: rope_dim?,
                        v_head_dim: v_head_dim.or(head_dim)?,
                    })
                }
                Some((other, span)) => {
                    diags.push(unknown_choice(span, "attention kind", other, &["mha", "gqa", "mla"]));
                    None
                }
                None => {
                    diags.push(
                        Diagnostic::error(Code::E0006, span, "the attention block needs its kind")
                            .with_label("kind missing")
                            .with_hint(
                                "write `attention mha { ... }`, `attention gqa { ... }` or `attention mla { ... }`",
                            ),
                    );
                    None
                }
            };
            // With no known kind there is no schema to hold the keys against.
            if kind.is_some_and(|(k, _)| ["mha", "gqa", "mla"].contains(&k)) {
                diags.extend(a.finish());
            }
            attention
        }
        None => {
            r.missing(
                "attention",
                "attention gqa { heads = 32; kv_heads = 8; head_dim = 128 }",
            );
            None
        }
    };
    let moe_section = r.section("moe");
    let moe = moe_section.and_then(|(label, body, span)| {
        if let Some(l) = label {
            diags.push(Diagnostic::error(Code::E0001, l.span, "`moe` takes no kind").with_label("remove this"));
        }
        check_moe(&what, span, body, diags)
    });
    diags.extend(r.finish());

    let (layers, hidden, vocab, attention) = (layers?, hidden?, vocab?, attention?);
    if moe_section.is_some() && moe.is_none() {
        return None; // its errors are reported; checking on would only cascade
    }
    if dense_layers > layers {
        diags.push(
            Diagnostic::error(
                Code::E0023,
                decl.name.span,
                format!("{what} has {dense_layers} dense layers but only {layers} layers"),
            )
            .with_label("in this model"),
        );
        return None;
    }
    let needs_dense = moe.is_none() || dense_layers > 0 || moe_every > 1;
    let dense_ffn = match dense_ffn {
        Some(f) => f,
        None if needs_dense => {
            diags.push(
                Diagnostic::error(
                    Code::E0023,
                    decl.name.span,
                    format!("{what} has dense FFN layers but no `dense_ffn`"),
                )
                .with_label("in this model")
                .with_hint("add `dense_ffn = ...`, the intermediate size of the dense layers"),
            );
            return None;
        }
        None => 0,
    };
    Some(ModelSpec {
        name: decl.name.text.clone(),
        layers,
        dense_layers,
        moe_every,
        hidden,
        vocab,
        dtype,
        attention,
        dense_ffn,
        moe,
    })
}

fn check_moe(
    what: &str,
    span: crate::syntax::Span,
    body: &crate::syntax::ast::Block,
    diags: &mut Vec<Diagnostic>,
) -> Option<MoeSpec> {
    let mut m = BlockReader::new(format!("the moe block of {what}"), span, body);
    let experts = m.req_int("experts", 1, 1 << 16, "experts = 8");
    let shared_experts = m.int("shared_experts", 0, 1 << 10).unwrap_or(0);
    let top_k = m.req_int("top_k", 1, 1 << 16, "top_k = 2");
    let expert_ffn = m.req_int("expert_ffn", 1, MAX_DIM, "expert_ffn = 14336");
    let shared_ffn = m.int("shared_ffn", 1, MAX_DIM);
    let activation = match m.choice("activation", &["swiglu", "gelu", "relu"]) {
        Some(("gelu", _)) => Activation::Gelu,
        Some(("relu", _)) => Activation::Relu,
        _ => Activation::Swiglu,
    };
    let gate = match m.choice("gate", &["softmax", "sigmoid"]) {
        Some(("sigmoid", _)) => GateKind::Sigmoid,
        _ => GateKind::Softmax,
    };
    let groups = m.int("groups", 1, 1 << 16).unwrap_or(1);
    let topk_groups = m.int("topk_groups", 1, 1 << 16).unwrap_or(groups);
    let (groups_v, topk_groups_v) = (m.span_of("groups"), m.span_of("topk_groups"));
    let top_k_span = m.span_of("top_k").unwrap_or(span);
    diags.extend(m.finish());
    let (experts, top_k, expert_ffn) = (experts?, top_k?, expert_ffn?);

    if top_k > experts {
        diags.push(
            Diagnostic::error(
                Code::E0012,
                top_k_span,
                format!("top_k = {top_k} but the layer has only {experts} experts"),
            )
            .with_label("larger than `experts`")
            .with_hint("each token picks top_k distinct experts, so top_k <= experts"),
        );
        return None;
    }
    if top_k == experts && experts > 1 {
        diags.push(
            Diagnostic::warning(
                Code::W0001,
                top_k_span,
                format!("top_k = experts = {experts}: every token visits every expert"),
            )
            .with_label("the layer is effectively dense"),
        );
    }
    let group_span = groups_v.unwrap_or(span);
    if experts % groups != 0 {
        diags.push(
            Diagnostic::error(
                Code::E0013,
                group_span,
                format!("{groups} groups do not divide {experts} experts evenly"),
            )
            .with_label("groups must divide experts"),
        );
        return None;
    }
    if topk_groups > groups {
        diags.push(
            Diagnostic::error(
                Code::E0013,
                topk_groups_v.unwrap_or(span),
                format!("topk_groups = {topk_groups} but there are only {groups} groups"),
            )
            .with_label("more than `groups`"),
        );
        return None;
    }
    if topk_groups * (experts / groups) < top_k {
        diags.push(
            Diagnostic::error(
                Code::E0013,
                topk_groups_v.unwrap_or(group_span),
                format!(
                    "the {topk_groups} kept groups hold {} experts, fewer than top_k = {top_k}",
                    topk_groups * (experts / groups)
                ),
            )
            .with_label("too few experts kept"),
        );
        return None;
    }
    if groups > 1 && topk_groups == groups {
        diags.push(
            Diagnostic::warning(
                Code::W0002,
                topk_groups_v.unwrap_or(group_span),
                "topk_groups = groups: group limiting keeps every group",
            )
            .with_label("no effect"),
        );
    }
    Some(MoeSpec {
        experts,
        shared_experts,
        shared_ffn: shared_ffn.unwrap_or(expert_ffn),
        top_k,
        expert_ffn,
        activation,
        gate,
        groups,
        topk_groups,
    })
}
