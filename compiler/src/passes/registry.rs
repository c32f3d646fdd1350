//! Every pass by name, and parsing pipeline specs.
//!
//! A spec is `name` or `name(arg)`; a pipeline is specs joined by commas:
//! `place(round_robin)`. Named pipelines stand for a list of specs.

use crate::passes::migrate::Migrate;
use crate::passes::overlap::OverlapPass;
use crate::passes::parallel::Parallel;
use crate::passes::place::from_file::FromFile;
use crate::passes::place::Place;
use crate::passes::Pass;

/// A pass as written in a pipeline: its name and optional argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassSpec {
    pub name: String,
    pub arg: Option<String>,
}

impl std::fmt::Display for PassSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.arg {
            Some(a) => write!(f, "{}({a})", self.name),
            None => write!(f, "{}", self.name),
        }
    }
}

/// Every pass, with what it does (for `--help` and error hints).
pub const PASSES: &[(&str, &str)] = &[
    (
        "place",
        "place(ALGORITHM): assign experts and layers to dies; ALGORITHM: any `placement = ...` name \
         (round_robin, contiguous, eplb, eplb_hierarchical, eplb_global, moetuner, er_mapping, tp_contiguous, hd_moe, auto)",
    ),
    (
        "parallel",
        "parallel(FORM): the form of every MoE layer's experts on the placed dies; FORM: any `parallel = ...` \
         value (ep, tp(k), moeshard(k), hybrid, compute_balanced, each optionally with `fused = false`; auto)",
    ),
    (
        "overlap",
        "overlap(FORM): how a step's work overlaps on each die; FORM: none (one batch), two_batch (two \
         micro-batches, one's all-to-all under the other's compute), micro_batches(m) (the same with m), chunked(d) (FSMoE: each MoE layer's \
         tokens in d chunks, one's experts under the next one's all-to-all), chunked(auto) (d per layer from \
         FSMoE's task model), monta(n) (MoNTA: a split expert's tokens cross once and are forwarded inside its \
         group, in n chunks), monta(auto) (MoNTA's strategy from volumes and bandwidths) or auto (each \
         simulated, the fastest kept)",
    ),
    (
        "migrate",
        "migrate(POLICY): expert weights moved while the run goes on, planned over its steps from the loads \
         observed so far; POLICY: invasive, ni_balancer or dynamic_placement, with settings \
         (migrate(ni_balancer, alpha = 0.1, every = 1, window = 8, slots = 2))",
    ),
    (
        "from_file",
        "from_file: experts where the plan's `placement = file(\"...\")` says, the rest as `place`",
    ),
];

/// Named pipelines.
pub const PIPELINES: &[(&str, &str)] = &[("baseline", "place(round_robin)")];

/// Parses `a(x),b` (or a pipeline name) into specs.
pub fn parse_pipeline(text: &str) -> Result<Vec<PassSpec>, String> {
    let text = text.trim();
    if let Some((_, specs)) = PIPELINES.iter().find(|(n, _)| *n == text) {
        return parse_pipeline(specs);
    }
    let mut out = Vec::new();
    for part in split_top_level(text) {
        let part = part.trim();
        if part.is_empty() {
            return Err(format!("empty pass in pipeline `{text}`"));
        }
        let spec = match part.split_once('(') {
            Some((name, rest)) => {
                let arg = rest
                    .strip_suffix(')')
                    .ok_or_else(|| format!("`{part}` is missing its `)`"))?;
                PassSpec {
                    name: name.trim().to_string(),
                    arg: Some(arg.trim().to_string()),
                }
            }
            None => PassSpec {
                name: part.to_string(),
                arg: None,
            },
        };
        out.push(spec);
    }
    Ok(out)
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Builds the pass a spec names.
pub fn create(spec: &PassSpec) -> Result<Box<dyn Pass>, String> {
    match spec.name.as_str() {
        "place" => Ok(Box::new(Place::new(spec.arg.as_deref())?)),
        "parallel" => Ok(Box::new(Parallel::new(spec.arg.as_deref())?)),
        "migrate" => Ok(Box::new(Migrate::new(spec.arg.as_deref())?)),
        "overlap" => Ok(Box::new(OverlapPass::new(spec.arg.as_deref())?)),
        "from_file" => match &spec.arg {
            None => Ok(Box::new(FromFile)),
            Some(_) => Err("`from_file` takes no argument: the file is the plan's `placement = file(\"...\")`".into()),
        },
        other => {
            let names: Vec<&str> = PASSES.iter().map(|(n, _)| *n).collect();
            let hint = crate::sema::suggest::did_you_mean(other, names.iter().copied()).unwrap_or_default();
            Err(format!("no pass named `{other}` {hint}(passes: {})", names.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_place_help_names_every_placement() {
        let help = PASSES.iter().find(|(n, _)| *n == "place").unwrap().1;
        for (name, _) in crate::sema::PlacementChoice::ALL {
            assert!(help.contains(name), "`place` help misses {name}");
        }
    }

    #[test]
    fn pipelines_parse_into_specs() {
        let p = parse_pipeline("place(round_robin), verify").unwrap();
        assert_eq!(
            p[0],
            PassSpec {
                name: "place".into(),
                arg: Some("round_robin".into())
            }
        );
        assert_eq!(p[1].name, "verify");
        assert_eq!(
            parse_pipeline("baseline").unwrap(),
            parse_pipeline("place(round_robin)").unwrap()
        );
        assert!(parse_pipeline("place(round_robin").is_err());
        assert!(parse_pipeline("a,,b").is_err());
    }

    #[test]
    fn unknown_passes_are_refused_with_a_suggestion() {
        let e = create(&PassSpec {
            name: "plase".into(),
            arg: None,
        })
        .err()
        .unwrap();
        assert!(e.contains("did you mean `place`"), "{e}");
        assert!(create(&PassSpec {
            name: "place".into(),
            arg: Some("magic".into())
        })
        .is_err());
    }
}
