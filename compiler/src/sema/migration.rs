//! Checking a plan's `migration = ...`: which policy moves expert weights
//! while the run goes on, with its settings.
//!
//! ```text
//! migration = none
//! migration = invasive { every = 10; window = 10 }
//! migration = ni_balancer { alpha = 0.1; every = 1; window = 8; slots = 2 }
//! migration = dynamic_placement { every = 1; window = 4 }
//! ```
//!
//! A bare name takes every setting's default. The settings are read with a
//! [`BlockReader`], so an unknown one gets "did you mean" against exactly
//! what that policy accepts.

use super::reader::{self, BlockReader};
use crate::diag::{Code, Diagnostic};
use crate::passes::MigrationPolicy;
use crate::syntax::ast::{Value, ValueKind};

/// The policy names, in the order the help lists them.
pub const POLICIES: &[&str] = &["none", "invasive", "ni_balancer", "dynamic_placement"];

/// Reads `migration = NAME` or `migration = NAME { settings }`; reports
/// into `diags` and returns `None` when anything is wrong.
pub fn migration_policy(v: &Value, diags: &mut Vec<Diagnostic>) -> Option<MigrationPolicy> {
    let (policy, block) = match &v.kind {
        ValueKind::Name(_) => match reader::choice(v, "migration", POLICIES) {
            Ok(name) => (MigrationPolicy::default_of(name)?, None),
            Err(d) => {
                diags.push(d);
                return None;
            }
        },
        ValueKind::Configured { name, body } => match MigrationPolicy::default_of(&name.text) {
            Some(p) => (p, Some((name, body))),
            None => {
                diags.push(reader::unknown_choice(name.span, "migration", &name.text, POLICIES));
                return None;
            }
        },
        other => {
            diags.push(reader::wrong_type(
                v,
                "migration",
                "a migration policy such as ni_balancer { alpha = 0.1 }",
                other.describe(),
            ));
            return None;
        }
    };
    let Some((name, block)) = block else {
        return Some(policy);
    };
    let mut policy = policy;
    let mut r = BlockReader::new(format!("migration `{}`", name.text), name.span, block);
    match &mut policy {
        MigrationPolicy::None => {}
        MigrationPolicy::Invasive { every, window } | MigrationPolicy::DynamicPlacement { every, window } => {
            *every = r.int("every", 1, 1 << 20).unwrap_or(*every);
            *window = r.int("window", 1, 1 << 16).unwrap_or(*window);
        }
        MigrationPolicy::NiBalancer {
            alpha,
            every,
            window,
            slots,
        } => {
            *alpha = r.float("alpha", 0.0, 10.0).unwrap_or(*alpha);
            *every = r.int("every", 1, 1 << 20).unwrap_or(*every);
            *window = r.int("window", 1, 1 << 16).unwrap_or(*window);
            *slots = r.int("slots", 1, 64).map_or(*slots, |s| s as u32);
        }
    }
    let found = r.finish();
    let ok = found.is_empty();
    diags.extend(found);
    ok.then_some(policy)
}

/// E0041: migration moves whole experts, so a plan whose experts are split
/// over dies (`parallel = tp(k)`, `moeshard`, `hybrid`, ...) cannot have it,
/// and the policy decides from routing it can observe before the run, which
/// `routing = gate` does not give.
pub fn refuse(span: crate::syntax::Span, why: &str, hint: &str) -> Diagnostic {
    Diagnostic::error(
        Code::E0041,
        span,
        format!("this migration cannot run on this plan: {why}"),
    )
    .with_label("migration policy")
    .with_hint(hint.to_string())
}
