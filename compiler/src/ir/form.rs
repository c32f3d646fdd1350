//! The parallel form of an MoE layer's experts: whole on one die (EP),
//! split by FFN columns over groups of dies (expert TP, MoEShard), or split
//! per expert as HD-MoE's NodeBalance says; and whether a die's experts run
//! as one grouped kernel.
//!
//! A form is what `parallel = ...` names in a plan and what the
//! `parallel(...)` pass lays out on the IR (`passes/parallel/mod.rs`), one per
//! MoE layer; `parallel = auto` chooses one per layer by equality
//! saturation (`passes/parallel/form_graph.rs`). Every form computes the same
//! result: splitting the up (and gate) projection by columns and the down
//! projection by rows is an exact decomposition.

use std::fmt;

/// How one MoE layer's experts are split over the alive dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FormKind {
    /// Expert parallelism: every expert whole on the die its placement chose.
    Ep,
    /// Expert tensor parallelism: the alive dies in compact groups of `k`;
    /// each expert split by FFN columns over the `k` dies of the group that
    /// holds its placed die (one copy; experts spread over the groups as
    /// the placement spread them).
    Tp(u32),
    /// MoEShard: the alive dies in compact groups of `k`; every group
    /// holds a copy of every expert, a column shard on each of its `k`
    /// dies; a token uses its home die's group.
    Shard(u32),
    /// HD-MoE's hybrid: NodeBalance's fraction of each expert on each die
    /// (whole on one die, EP, or split over several, TP), the dies mapped
    /// onto the mesh by LinkBalance.
    Hybrid,
    /// The compute-balanced hybrid HD-MoE compares against: EPLB's
    /// load-balancing replication read as a split (each expert's slots
    /// become column parts), dies in order, communication not considered.
    ComputeBalanced,
}

/// A layer's form and how its experts launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Form {
    pub kind: FormKind,
    /// One grouped kernel per die over all of its experts and expert parts
    /// (true), or one launch per part (false).
    pub fused: bool,
}

impl Form {
    /// Expert parallelism, fused: what a plan without `parallel` gets.
    pub const EP: Form = Form {
        kind: FormKind::Ep,
        fused: true,
    };

    /// The tie rule of `parallel(auto)`: among forms of equal cost the one
    /// with the smaller key wins. The simpler layout first (EP, then TP and
    /// MoEShard by fewer ways, then hybrid), and a fused launch before
    /// separate ones: on equal predicted time, the form with less to go wrong.
    pub fn tie_key(self) -> (FormKind, bool) {
        (self.kind, !self.fused)
    }

    /// Whether this form is one `parallel(auto)` searches on `dies` alive
    /// dies: `k` divides the dies; hybrid only when available; never the
    /// compute-balanced baseline.
    pub fn fits(self, dies: u32, hybrid: bool) -> bool {
        match self.kind {
            FormKind::Ep => true,
            FormKind::Tp(k) | FormKind::Shard(k) => k >= 1 && k <= dies && dies.is_multiple_of(k),
            FormKind::Hybrid => hybrid,
            FormKind::ComputeBalanced => false,
        }
    }

    /// The form's name in the language, without arguments.
    pub fn name(self) -> &'static str {
        match self.kind {
            FormKind::Ep => "ep",
            FormKind::Tp(_) => "tp",
            FormKind::Shard(_) => "moeshard",
            FormKind::Hybrid => "hybrid",
            FormKind::ComputeBalanced => "compute_balanced",
        }
    }

    /// Parses the language's spelling (`ep`, `tp(4)`, `moeshard(8, fused =
    /// false)`, `hybrid`, `compute_balanced`), as a pass argument. `tp` and
    /// `moeshard` without a size take `all_dies`.
    pub fn parse(text: &str, all_dies: u32) -> Result<Form, String> {
        let text = text.trim();
        let (name, args) = match text.split_once('(') {
            Some((name, rest)) => (
                name.trim(),
                rest.strip_suffix(')')
                    .ok_or_else(|| format!("`{text}` is missing its `)`"))?,
            ),
            None => (text, ""),
        };
        let mut ways = None;
        let mut fused = true;
        for arg in args.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match arg.split_once('=') {
                Some((key, value)) if key.trim() == "fused" => {
                    fused = match value.trim() {
                        "true" => true,
                        "false" => false,
                        v => return Err(format!("`fused` is true or false, not `{v}`")),
                    }
                }
                Some((key, _)) => return Err(format!("a parallel form takes `fused = ...`, not `{}`", key.trim())),
                None => {
                    ways = Some(
                        arg.parse::<u32>()
                            .ok()
                            .filter(|&k| k >= 1)
                            .ok_or_else(|| format!("`{arg}` is not a group size (a whole number from 1)"))?,
                    )
                }
            }
        }
        let kind = match (name, ways) {
            ("ep", None) => FormKind::Ep,
            ("tp", k) => FormKind::Tp(k.unwrap_or(all_dies)),
            ("moeshard", k) => FormKind::Shard(k.unwrap_or(all_dies)),
            ("hybrid", None) => FormKind::Hybrid,
            ("compute_balanced", None) => FormKind::ComputeBalanced,
            ("ep" | "hybrid" | "compute_balanced", Some(_)) => return Err(format!("`{name}` takes no group size")),
            _ => {
                return Err(format!(
                    "no parallel form `{name}` (forms: ep, tp(k), moeshard(k), hybrid, compute_balanced)"
                ))
            }
        };
        Ok(Form { kind, fused })
    }
}

impl fmt::Display for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut args = Vec::new();
        if let FormKind::Tp(k) | FormKind::Shard(k) = self.kind {
            args.push(k.to_string());
        }
        if !self.fused {
            args.push("fused = false".into());
        }
        if args.is_empty() {
            write!(f, "{}", self.name())
        } else {
            write!(f, "{}({})", self.name(), args.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_read_back_what_they_print() {
        for kind in [
            FormKind::Ep,
            FormKind::Tp(4),
            FormKind::Shard(16),
            FormKind::Hybrid,
            FormKind::ComputeBalanced,
        ] {
            for fused in [true, false] {
                let form = Form { kind, fused };
                assert_eq!(Form::parse(&form.to_string(), 64), Ok(form), "{form}");
            }
        }
        assert_eq!(Form::parse("tp", 8).unwrap().kind, FormKind::Tp(8));
        assert_eq!(Form::parse("moeshard", 4).unwrap().kind, FormKind::Shard(4));
        for bad in [
            "tp(0)",
            "ep(2)",
            "moeshard(4, fast = true)",
            "tp(4",
            "shard(2)",
            "tp(x)",
        ] {
            assert!(Form::parse(bad, 8).is_err(), "{bad}");
        }
    }
}
