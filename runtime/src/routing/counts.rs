//! Expert-count data, the input of the `counts(...)` routing source: reading
//! the files, picking one model, domain and variant out of them, and checking
//! the result against the model it will route (formats in `docs/TRACES.md`).
//!
//! Three files hold per-layer expert counts:
//!
//! - the OLMoE routing analysis's JSON (`expert_counts.json`):
//!   `counts[model][domain][variant][layer] = [count per expert]`, with
//!   `meta.models[model]` giving `num_experts` and `top_k`;
//! - its long CSV form (`model,domain,variant,layer,expert,count`), which
//!   carries neither experts nor top_k (the experts are the ids it lists);
//! - SGLang's expert-distribution record (`logical_count`, what
//!   `--init-expert-location` reads): `[layers][experts]` counts of every
//!   top-k selection, one row per model layer (dense layers all zero), or
//!   `[steps][layers][experts]`, which is summed over steps as SGLang's
//!   EPLB does.
//!
//! A fourth, the analysis's `crosslayer_counts.json`, holds
//! `crosslayer[model][domain][variant]["a->b"]`: E x E matrices pairing a
//! token's expert at layer a with its expert at layer b (`top1`: top-1 with
//! top-1; `topk_rank_aligned`: the j-th choice with the j-th choice).
//!
//! The file kind is recognised from its content (`logical_count`, `counts`
//! or `crosslayer` key; a CSV header), so one `counts("...")` takes any.
//! [`select`] turns a file (and optionally a crosslayer file) into the
//! [`RoutingCounts`] a run samples from; the sampler is `count_sampler.rs`.

use super::synthetic::RoutingShape;
use crate::model::ModelSpec;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Most experts a count file may describe (as many as a model may have).
pub const MAX_COUNT_EXPERTS: usize = 1 << 24;

/// What a count records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CountVariant {
    /// Every top-k selection (a layer's counts sum to tokens x top_k): each
    /// expert's share of the tokens that chose it.
    #[default]
    Topk,
    /// Only each token's top-1 expert (a layer's counts sum to tokens).
    Top1,
}

impl CountVariant {
    /// Every variant with its spelling in the files and the language.
    pub const ALL: [(&'static str, CountVariant); 2] = [("topk", CountVariant::Topk), ("top1", CountVariant::Top1)];

    /// The spelling in the files and the language.
    pub fn name(self) -> &'static str {
        match self {
            CountVariant::Topk => "topk",
            CountVariant::Top1 => "top1",
        }
    }

    /// The crosslayer matrices that go with the variant: the rank-aligned
    /// top-k pairs for `topk`, the top-1 pairs for `top1`.
    pub fn crosslayer_name(self) -> &'static str {
        match self {
            CountVariant::Topk => "topk_rank_aligned",
            CountVariant::Top1 => "top1",
        }
    }
}

/// One recorded layer's counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerCounts {
    /// The model layer (0-based, dense layers counted).
    pub layer: u32,
    /// Per expert.
    pub counts: Vec<u64>,
}

/// Tokens moving from one recorded layer's experts to a later one's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrossLayerCounts {
    pub from: u32,
    pub to: u32,
    /// `counts[i][j]`: tokens (or, rank-aligned, token choices) with expert
    /// i at `from` and expert j at `to`.
    pub counts: Vec<Vec<u64>>,
}

/// The counts a `counts(...)` routing source samples from: one model, one
/// variant, one domain or several pooled. Carried in the workload, so a
/// schedule file needs no count file to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutingCounts {
    /// Where they come from, in words: file, model, domains, variant.
    pub source: String,
    pub variant: CountVariant,
    /// Experts per layer the counts index.
    pub experts: u32,
    /// The top_k the data were recorded with, when the file says.
    pub top_k: Option<u32>,
    /// The model's layer count, when the file has one row per model layer
    /// (SGLang); such a file must cover every MoE layer.
    pub model_layers: Option<u32>,
    /// The recorded layers, ascending.
    pub layers: Vec<LayerCounts>,
    /// Crosslayer pairs between recorded layers, ascending by `to`.
    pub crosslayer: Vec<CrossLayerCounts>,
}

/// Which file of a `counts(...)` source something is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountFileRole {
    /// The expert-count file.
    Counts,
    /// The crosslayer file.
    Crosslayer,
}

/// A selection setting of `counts(...)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountKey {
    Model,
    Domain,
    Variant,
    Crosslayer,
}

impl CountKey {
    /// The argument's name in the language.
    pub fn name(self) -> &'static str {
        match self {
            CountKey::Model => "model",
            CountKey::Domain => "domain",
            CountKey::Variant => "variant",
            CountKey::Crosslayer => "crosslayer",
        }
    }
}

/// Why count data cannot be used.
#[derive(Clone, Debug, PartialEq)]
pub enum CountsError {
    /// The file is none of the known kinds, or breaks its own rules.
    Malformed {
        role: CountFileRole,
        file: String,
        reason: String,
    },
    /// A selection names nothing in the file, or one is needed and missing
    /// (`given` is None); `present` lists what the file has.
    NotFound {
        role: CountFileRole,
        file: String,
        key: CountKey,
        given: Option<String>,
        present: Vec<String>,
    },
    /// An argument this kind of file does not take (SGLang's counts are of
    /// one model, one variant, no domains, no crosslayer data).
    NotApplicable { file: String, key: CountKey, why: String },
}

impl fmt::Display for CountsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CountsError::Malformed { file, reason, .. } => write!(f, "{file}: {reason}"),
            CountsError::NotFound {
                file,
                key,
                given,
                present,
                ..
            } => {
                let what = key.name();
                let list = present.join(", ");
                match given {
                    Some(g) => write!(f, "{file} has no {what} `{g}` (it has: {list})"),
                    None => write!(f, "{file} holds several of {what}; name one (it has: {list})"),
                }
            }
            CountsError::NotApplicable { file, key, why } => {
                write!(f, "{file}: `{}` does not apply: {why}", key.name())
            }
        }
    }
}

/// Names (of models, domains, variants, layers as written) to what they hold.
pub type Keyed<T> = BTreeMap<String, T>;

/// Counts per expert, by layer.
pub type LayerTable = BTreeMap<u32, Vec<u64>>;

/// E x E matrices, by (from, to) layer pair.
pub type PairTable = BTreeMap<(u32, u32), Vec<Vec<u64>>>;

/// A parsed expert-count file.
#[derive(Clone, Debug, PartialEq)]
pub enum CountFile {
    /// The OLMoE routing analysis's JSON or CSV.
    Analysis(AnalysisCounts),
    /// SGLang's `logical_count`.
    Sglang(SglangCounts),
}

/// Counts per model, domain and variant (the OLMoE routing analysis).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnalysisCounts {
    /// Experts and top_k per model, where the file says (the JSON's `meta`).
    pub meta: BTreeMap<String, ModelMeta>,
    /// `counts[model][domain][variant][layer]`: counts per expert.
    pub counts: Keyed<Keyed<Keyed<LayerTable>>>,
}

/// What a file says about a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelMeta {
    pub experts: Option<u64>,
    pub top_k: Option<u64>,
}

/// SGLang's `logical_count`, summed over steps: one row per model layer.
#[derive(Clone, Debug, PartialEq)]
pub struct SglangCounts {
    pub layers: Vec<Vec<u64>>,
}

/// A parsed crosslayer file: `crosslayer[model][domain][variant][(a, b)]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CrosslayerFile {
    pub crosslayer: Keyed<Keyed<Keyed<PairTable>>>,
}

/// The settings of a `counts(...)` source that pick data out of the files.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CountSelection {
    /// The model key; may be left out when the file holds one model.
    pub model: Option<String>,
    /// The domain key; None pools every domain.
    pub domain: Option<String>,
    /// None: `topk`.
    pub variant: Option<CountVariant>,
}

/// Reads an expert-count file of any kind; `file` names it in errors.
pub fn parse_counts(text: &str, file: &str) -> Result<CountFile, CountsError> {
    let bad = |reason: String| CountsError::Malformed {
        role: CountFileRole::Counts,
        file: file.to_string(),
        reason,
    };
    if !text.trim_start().starts_with('{') {
        return parse_csv(text).map(CountFile::Analysis).map_err(bad);
    }
    let keys = top_level_keys(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    if keys.iter().any(|k| k == "logical_count") {
        parse_sglang(text).map(CountFile::Sglang).map_err(bad)
    } else if keys.iter().any(|k| k == "counts") {
        parse_analysis_json(text).map(CountFile::Analysis).map_err(bad)
    } else if keys.iter().any(|k| k == "crosslayer") {
        Err(bad(
            "this is a crosslayer file (it has \"crosslayer\"); give it as `crosslayer = \"...\"` beside an \
             expert-count file"
                .into(),
        ))
    } else if keys.iter().any(|k| k == "physical_to_logical_map") {
        Err(bad(
            "this SGLang expert-location file holds a placement (\"physical_to_logical_map\"), not counts; \
             use a record with \"logical_count\""
                .into(),
        ))
    } else {
        Err(bad(format!(
            "not an expert-count file: expected a \"logical_count\" (SGLang) or \"counts\" (OLMoE routing \
             analysis) key, found {}",
            if keys.is_empty() {
                "no keys".to_string()
            } else {
                keys.iter().map(|k| format!("\"{k}\"")).collect::<Vec<_>>().join(", ")
            }
        )))
    }
}

/// Reads a crosslayer file; `file` names it in errors.
pub fn parse_crosslayer(text: &str, file: &str) -> Result<CrosslayerFile, CountsError> {
    let bad = |reason: String| CountsError::Malformed {
        role: CountFileRole::Crosslayer,
        file: file.to_string(),
        reason,
    };
    type Matrix = Vec<Vec<u64>>;
    #[derive(Deserialize)]
    struct Raw {
        crosslayer: Keyed<Keyed<Keyed<Keyed<Matrix>>>>,
    }
    let raw: Raw = serde_json::from_str(text).map_err(|e| bad(format!("not a crosslayer file: {e}")))?;
    let mut out = CrosslayerFile::default();
    for (model, domains) in raw.crosslayer {
        for (domain, variants) in domains {
            for (variant, pairs) in variants {
                let mut parsed = BTreeMap::new();
                for (pair, m) in pairs {
                    let where_ = format!("{model}/{domain}/{variant}/\"{pair}\"");
                    let (a, b) = parse_pair(&pair).ok_or_else(|| {
                        bad(format!(
                            "{where_}: a layer pair is written \"a->b\" with a < b, e.g. \"0->7\""
                        ))
                    })?;
                    let n = m.len();
                    if n == 0 || n > MAX_COUNT_EXPERTS {
                        return Err(bad(format!("{where_}: the matrix has {n} rows")));
                    }
                    if let Some((i, r)) = m.iter().enumerate().find(|(_, r)| r.len() != n) {
                        return Err(bad(format!(
                            "{where_}: row {i} has {} entries but the matrix has {n} rows (it must be square)",
                            r.len()
                        )));
                    }
                    parsed.insert((a, b), m);
                }
                out.crosslayer
                    .entry(model.clone())
                    .or_default()
                    .entry(domain.clone())
                    .or_default()
                    .insert(variant, parsed);
            }
        }
    }
    Ok(out)
}

/// `"a->b"` with a < b.
fn parse_pair(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once("->")?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a < b).then_some((a, b))
}

/// The keys of a JSON object, without parsing the values into a tree.
fn top_level_keys(text: &str) -> Result<Vec<String>, serde_json::Error> {
    struct Keys(Vec<String>);
    impl<'de> Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Keys, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                    let mut keys = Vec::new();
                    while let Some(k) = map.next_key::<String>()? {
                        map.next_value::<serde::de::IgnoredAny>()?;
                        keys.push(k);
                    }
                    Ok(Keys(keys))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Keys>(text).map(|k| k.0)
}

fn parse_analysis_json(text: &str) -> Result<AnalysisCounts, String> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        meta: Option<RawMeta>,
        counts: Keyed<Keyed<Keyed<Keyed<Vec<u64>>>>>,
    }
    #[derive(Deserialize)]
    struct RawMeta {
        #[serde(default)]
        models: BTreeMap<String, RawModel>,
    }
    #[derive(Deserialize)]
    struct RawModel {
        #[serde(default)]
        num_experts: Option<u64>,
        #[serde(default)]
        top_k: Option<u64>,
    }
    let raw: Raw = serde_json::from_str(text).map_err(|e| format!("malformed expert counts: {e}"))?;
    let mut out = AnalysisCounts::default();
    if let Some(meta) = raw.meta {
        for (m, r) in meta.models {
            out.meta.insert(
                m,
                ModelMeta {
                    experts: r.num_experts,
                    top_k: r.top_k,
                },
            );
        }
    }
    for (model, domains) in raw.counts {
        for (domain, variants) in domains {
            for (variant, layers) in variants {
                let mut parsed = BTreeMap::new();
                for (layer, counts) in layers {
                    let l: u32 = layer.trim().parse().map_err(|_| {
                        format!("{model}/{domain}/{variant}: layer key \"{layer}\" is not a layer number")
                    })?;
                    parsed.insert(l, counts);
                }
                out.counts
                    .entry(model.clone())
                    .or_default()
                    .entry(domain.clone())
                    .or_default()
                    .insert(variant, parsed);
            }
        }
    }
    check_analysis(&out)?;
    Ok(out)
}

/// The CSV header of the long form.
const CSV_HEADER: [&str; 6] = ["model", "domain", "variant", "layer", "expert", "count"];

fn parse_csv(text: &str) -> Result<AnalysisCounts, String> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let header: Vec<&str> = match lines.next() {
        Some((_, h)) => h.split(',').map(str::trim).collect(),
        None => return Err("the file is empty".into()),
    };
    if header != CSV_HEADER {
        return Err(format!(
            "not an expert-count file: neither JSON nor a CSV with the header `{}` (the first line is `{}`)",
            CSV_HEADER.join(","),
            header.join(",")
        ));
    }
    // (model, domain, variant, layer) -> expert -> count
    let mut cells: BTreeMap<(String, String, String, u32), BTreeMap<u32, u64>> = BTreeMap::new();
    for (i, line) in lines {
        let n = i + 1;
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let [model, domain, variant, layer, expert, count] = f[..] else {
            return Err(format!(
                "line {n}: expected 6 comma-separated fields, found {}",
                f.len()
            ));
        };
        let number = |what: &str, s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("line {n}: {what} `{s}` is not a whole number >= 0"))
        };
        let layer =
            u32::try_from(number("layer", layer)?).map_err(|_| format!("line {n}: layer {layer} is too large"))?;
        let expert = number("expert", expert)?;
        if expert >= MAX_COUNT_EXPERTS as u64 {
            return Err(format!("line {n}: expert {expert} is beyond 2^24 experts"));
        }
        let count = number("count", count)?;
        let cell = cells
            .entry((model.into(), domain.into(), variant.into(), layer))
            .or_default();
        if cell.insert(expert as u32, count).is_some() {
            return Err(format!(
                "line {n}: {model}/{domain}/{variant} layer {layer} expert {expert} is listed twice"
            ));
        }
    }
    if cells.is_empty() {
        return Err("the CSV has a header but no rows".into());
    }
    // Each model's experts are the ids it lists; an id it skips counts 0.
    let mut experts: BTreeMap<&str, u32> = BTreeMap::new();
    for ((model, ..), row) in &cells {
        let top = row.keys().next_back().map_or(0, |&e| e + 1);
        let e = experts.entry(model.as_str()).or_insert(0);
        *e = (*e).max(top);
    }
    let mut out = AnalysisCounts::default();
    for ((model, domain, variant, layer), row) in &cells {
        let mut counts = vec![0u64; experts.get(model.as_str()).copied().unwrap_or(0) as usize];
        for (&e, &c) in row {
            counts[e as usize] = c;
        }
        out.counts
            .entry(model.clone())
            .or_default()
            .entry(domain.clone())
            .or_default()
            .entry(variant.clone())
            .or_default()
            .insert(*layer, counts);
    }
    check_analysis(&out)?;
    Ok(out)
}

/// Every layer of a model has the same number of experts (the meta's, when
/// it says), between 1 and 2^24.
fn check_analysis(a: &AnalysisCounts) -> Result<(), String> {
    for (model, domains) in &a.counts {
        let declared = a.meta.get(model).and_then(|m| m.experts);
        let mut seen: Option<(usize, String)> = None;
        for (domain, variants) in domains {
            for (variant, layers) in variants {
                if layers.is_empty() {
                    return Err(format!("{model}/{domain}/{variant}: no layers"));
                }
                for (layer, counts) in layers {
                    let here = format!("{model}/{domain}/{variant} layer {layer}");
                    let n = counts.len();
                    if n == 0 || n > MAX_COUNT_EXPERTS {
                        return Err(format!("{here}: {n} experts is outside 1 ..= 2^24"));
                    }
                    if let Some(d) = declared.filter(|&d| d != n as u64) {
                        return Err(format!(
                            "{here}: {n} counts, but meta.models.{model}.num_experts is {d}"
                        ));
                    }
                    match &seen {
                        Some((m, first)) if *m != n => {
                            return Err(format!("{here}: {n} experts, but {first} has {m}"));
                        }
                        Some(_) => {}
                        None => seen = Some((n, here)),
                    }
                }
            }
        }
    }
    Ok(())
}

fn parse_sglang(text: &str) -> Result<SglangCounts, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Shape {
        Layers(Vec<Vec<u64>>),
        Steps(Vec<Vec<Vec<u64>>>),
    }
    #[derive(Deserialize)]
    struct Raw {
        logical_count: serde_json::Value,
    }
    let raw: Raw = serde_json::from_str(text).map_err(|e| format!("malformed SGLang record: {e}"))?;
    let shape: Shape = serde_json::from_value(raw.logical_count).map_err(|_| {
        "\"logical_count\" must be [layers][experts] or [steps][layers][experts] whole numbers >= 0".to_string()
    })?;
    let layers = match shape {
        Shape::Layers(l) => l,
        Shape::Steps(steps) => {
            let Some(first) = steps.first() else {
                return Err("\"logical_count\" holds no step".into());
            };
            let mut sum = vec![vec![0u64; first.first().map_or(0, Vec::len)]; first.len()];
            for (s, step) in steps.iter().enumerate() {
                if step.len() != sum.len() || step.iter().any(|r| r.len() != sum[0].len()) {
                    return Err(format!(
                        "\"logical_count\" step {s} is not [{}][{}] like step 0",
                        sum.len(),
                        sum[0].len()
                    ));
                }
                for (acc, row) in sum.iter_mut().zip(step) {
                    for (a, &c) in acc.iter_mut().zip(row) {
                        *a = a.saturating_add(c);
                    }
                }
            }
            sum
        }
    };
    let Some(first) = layers.first() else {
        return Err("\"logical_count\" holds no layer".into());
    };
    let n = first.len();
    if n == 0 || n > MAX_COUNT_EXPERTS {
        return Err(format!("\"logical_count\" rows have {n} experts, outside 1 ..= 2^24"));
    }
    if let Some((l, r)) = layers.iter().enumerate().find(|(_, r)| r.len() != n) {
        return Err(format!(
            "\"logical_count\" layer {l} has {} experts but layer 0 has {n}",
            r.len()
        ));
    }
    if layers.iter().all(|r| r.iter().all(|&c| c == 0)) {
        return Err("\"logical_count\" is all zero: nothing was recorded".into());
    }
    Ok(SglangCounts { layers })
}

/// Picks the counts a source samples from: `selection` out of `file`, and,
/// when given, the matching crosslayer pairs out of `crosslayer` (file name
/// `crosslayer_name`). With no domain, every domain with the variant (and,
/// with a crosslayer file, with crosslayer data for it too) is pooled: counts
/// and matrices summed. The result is checked for what does not depend on a
/// model: every recorded layer has counts, crosslayer pairs join recorded
/// layers over the same experts.
pub fn select(
    file: &CountFile,
    name: &str,
    selection: &CountSelection,
    crosslayer: Option<(&CrosslayerFile, &str)>,
) -> Result<RoutingCounts, CountsError> {
    match file {
        CountFile::Sglang(s) => select_sglang(s, name, selection, crosslayer.is_some()),
        CountFile::Analysis(a) => select_analysis(a, name, selection, crosslayer),
    }
}

fn select_sglang(
    s: &SglangCounts,
    name: &str,
    selection: &CountSelection,
    with_crosslayer: bool,
) -> Result<RoutingCounts, CountsError> {
    let not = |key: CountKey, why: &str| {
        Err(CountsError::NotApplicable {
            file: name.to_string(),
            key,
            why: why.to_string(),
        })
    };
    if selection.model.is_some() {
        return not(CountKey::Model, "an SGLang logical_count holds the counts of one model");
    }
    if selection.domain.is_some() {
        return not(CountKey::Domain, "an SGLang logical_count has no domains");
    }
    if selection.variant == Some(CountVariant::Top1) {
        return not(
            CountKey::Variant,
            "an SGLang logical_count counts every top-k selection (variant topk)",
        );
    }
    if with_crosslayer {
        return not(
            CountKey::Crosslayer,
            "an SGLang logical_count has no crosslayer data to pair with",
        );
    }
    let layers: Vec<LayerCounts> = s
        .layers
        .iter()
        .enumerate()
        .filter(|(_, c)| c.iter().any(|&x| x > 0))
        .map(|(l, c)| LayerCounts {
            layer: l as u32,
            counts: c.clone(),
        })
        .collect();
    Ok(RoutingCounts {
        source: format!("{name}: SGLang logical_count, {} layers", s.layers.len()),
        variant: CountVariant::Topk,
        experts: s.layers[0].len() as u32,
        top_k: None,
        model_layers: Some(s.layers.len() as u32),
        layers,
        crosslayer: Vec::new(),
    })
}

fn select_analysis(
    a: &AnalysisCounts,
    name: &str,
    selection: &CountSelection,
    crosslayer: Option<(&CrosslayerFile, &str)>,
) -> Result<RoutingCounts, CountsError> {
    let not_found = |role: CountFileRole, file: &str, key: CountKey, given: Option<&str>, present: Vec<String>| {
        CountsError::NotFound {
            role,
            file: file.to_string(),
            key,
            given: given.map(str::to_string),
            present,
        }
    };
    let models: Vec<String> = a.counts.keys().cloned().collect();
    let model = match &selection.model {
        Some(m) if a.counts.contains_key(m) => m.clone(),
        Some(m) => return Err(not_found(CountFileRole::Counts, name, CountKey::Model, Some(m), models)),
        None if models.len() == 1 => models[0].clone(),
        None => return Err(not_found(CountFileRole::Counts, name, CountKey::Model, None, models)),
    };
    let domains = &a.counts[&model];
    let variant = selection.variant.unwrap_or_default();
    let v = variant.name();
    // The crosslayer data of this model and variant, per domain.
    let cross: Option<(BTreeMap<&String, &PairTable>, &str)> = match crosslayer {
        None => None,
        Some((c, cname)) => {
            let Some(cd) = c.crosslayer.get(&model) else {
                return Err(not_found(
                    CountFileRole::Crosslayer,
                    cname,
                    CountKey::Model,
                    Some(&model),
                    c.crosslayer.keys().cloned().collect(),
                ));
            };
            let per: BTreeMap<&String, _> = cd
                .iter()
                .filter_map(|(d, vs)| vs.get(variant.crosslayer_name()).map(|p| (d, p)))
                .collect();
            if per.is_empty() {
                let mut present: BTreeSet<String> = BTreeSet::new();
                cd.values().for_each(|vs| present.extend(vs.keys().cloned()));
                return Err(not_found(
                    CountFileRole::Crosslayer,
                    cname,
                    CountKey::Variant,
                    Some(variant.crosslayer_name()),
                    present.into_iter().collect(),
                ));
            }
            Some((per, cname))
        }
    };
    let with_variant: Vec<&String> = domains
        .iter()
        .filter(|(_, vs)| vs.contains_key(v))
        .map(|(d, _)| d)
        .collect();
    let chosen: Vec<&String> = match &selection.domain {
        Some(d) => {
            let Some(vs) = domains.get(d) else {
                return Err(not_found(
                    CountFileRole::Counts,
                    name,
                    CountKey::Domain,
                    Some(d),
                    domains.keys().cloned().collect(),
                ));
            };
            if !vs.contains_key(v) {
                return Err(not_found(
                    CountFileRole::Counts,
                    name,
                    CountKey::Variant,
                    Some(v),
                    vs.keys().cloned().collect(),
                ));
            }
            if let Some((per, cname)) = &cross {
                if !per.contains_key(d) {
                    return Err(not_found(
                        CountFileRole::Crosslayer,
                        cname,
                        CountKey::Domain,
                        Some(d),
                        per.keys().map(|s| s.to_string()).collect(),
                    ));
                }
            }
            vec![d]
        }
        None => {
            let pooled: Vec<&String> = with_variant
                .iter()
                .copied()
                .filter(|d| cross.as_ref().is_none_or(|(per, _)| per.contains_key(d)))
                .collect();
            if pooled.is_empty() {
                let mut present: BTreeSet<String> = BTreeSet::new();
                domains.values().for_each(|vs| present.extend(vs.keys().cloned()));
                return Err(not_found(
                    CountFileRole::Counts,
                    name,
                    CountKey::Variant,
                    Some(v),
                    present.into_iter().collect(),
                ));
            }
            pooled
        }
    };
    let bad = |role: CountFileRole, file: &str, reason: String| CountsError::Malformed {
        role,
        file: file.to_string(),
        reason,
    };
    // Sum the chosen domains' layers; every domain must record the same ones.
    let mut sum: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (i, d) in chosen.iter().enumerate() {
        let layers = &domains[*d][v];
        if i > 0 && !layers.keys().eq(sum.keys()) {
            return Err(bad(
                CountFileRole::Counts,
                name,
                format!(
                    "{model}/{d}/{v} records layers {:?} but {model}/{}/{v} records {:?}: they cannot be pooled",
                    layers.keys().collect::<Vec<_>>(),
                    chosen[0],
                    sum.keys().collect::<Vec<_>>()
                ),
            ));
        }
        for (&l, c) in layers {
            let acc = sum.entry(l).or_insert_with(|| vec![0; c.len()]);
            for (a, &x) in acc.iter_mut().zip(c) {
                *a = a.saturating_add(x);
            }
        }
    }
    let experts = sum.values().next().map_or(0, Vec::len);
    if let Some((l, _)) = sum.iter().find(|(_, c)| c.iter().all(|&x| x == 0)) {
        return Err(bad(
            CountFileRole::Counts,
            name,
            format!("{model}/{v} layer {l} has no counts: no token was recorded there"),
        ));
    }
    let mut pairs: BTreeMap<(u32, u32), Vec<Vec<u64>>> = BTreeMap::new();
    if let Some((per, cname)) = &cross {
        for d in &chosen {
            for (&(from, to), m) in per[*d] {
                let here = format!("{model}/{d}/{}/\"{from}->{to}\"", variant.crosslayer_name());
                if m.len() != experts {
                    return Err(bad(
                        CountFileRole::Crosslayer,
                        cname,
                        format!(
                            "{here}: a {0} x {0} matrix, but the counts have {experts} experts",
                            m.len()
                        ),
                    ));
                }
                if !sum.contains_key(&from) || !sum.contains_key(&to) {
                    return Err(bad(
                        CountFileRole::Crosslayer,
                        cname,
                        format!(
                            "{here}: pairs layers the expert counts do not record (they record {:?})",
                            sum.keys().collect::<Vec<_>>()
                        ),
                    ));
                }
                let acc = pairs
                    .entry((from, to))
                    .or_insert_with(|| vec![vec![0; experts]; experts]);
                for (ar, r) in acc.iter_mut().zip(m) {
                    for (a, &x) in ar.iter_mut().zip(r) {
                        *a = a.saturating_add(x);
                    }
                }
            }
        }
    }
    let meta = a.meta.get(&model).copied().unwrap_or_default();
    let domains_text = match &selection.domain {
        Some(d) => format!("domain {d}"),
        None if chosen.len() == 1 => format!("domain {}", chosen[0]),
        None => format!(
            "pooled over {} domains ({})",
            chosen.len(),
            chosen.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ),
    };
    let mut source = format!("{name}: model {model}, {domains_text}, variant {v}");
    if let Some((_, cname)) = &cross {
        let list: Vec<String> = pairs.keys().map(|(a, b)| format!("{a}->{b}")).collect();
        source.push_str(&format!("; crosslayer {} from {cname}", list.join(", ")));
    }
    Ok(RoutingCounts {
        source,
        variant,
        experts: experts as u32,
        top_k: meta.top_k.and_then(|k| u32::try_from(k).ok()),
        model_layers: None,
        layers: sum
            .into_iter()
            .map(|(layer, counts)| LayerCounts { layer, counts })
            .collect(),
        crosslayer: pairs
            .into_iter()
            .map(|((from, to), counts)| CrossLayerCounts { from, to, counts })
            .collect(),
    })
}

impl RoutingCounts {
    /// Checks the counts against the model they will route: the same
    /// experts and top_k (when the file says), every recorded layer an MoE
    /// layer (and, for a file with one row per model layer, every MoE layer
    /// recorded), enough experts with counts for top_k distinct choices, and
    /// no expert with more than 1/top_k of a layer's top-k selections (no
    /// token chooses an expert twice, so more would mean another top_k).
    pub fn fit(&self, model: &ModelSpec) -> Result<(), String> {
        let shape = RoutingShape::of(model)?;
        let name = &model.name;
        // What `select` guarantees, checked again for counts read back from
        // a schedule file.
        self.check_shape()?;
        if self.experts as usize != shape.experts {
            return Err(format!(
                "the counts cover {} experts but model `{name}` has {}",
                self.experts, shape.experts
            ));
        }
        if let Some(k) = self.top_k.filter(|&k| k as usize != shape.top_k) {
            return Err(format!(
                "the counts were recorded with top_k = {k} but model `{name}` has top_k = {}",
                shape.top_k
            ));
        }
        if let Some(n) = self.model_layers.filter(|&n| u64::from(n) != model.layers) {
            return Err(format!(
                "the counts have one row per layer for {n} layers but model `{name}` has {}",
                model.layers
            ));
        }
        if shape.layers.is_empty() {
            return Err(format!("model `{name}` has no MoE layer to route"));
        }
        let moe = super::trace::list_layers(&shape.layers);
        if let Some(l) = self
            .layers
            .iter()
            .find(|l| shape.layers.binary_search(&l.layer).is_err())
        {
            return Err(format!(
                "counted layer {} is not an MoE layer of model `{name}` (its MoE layers: {moe})",
                l.layer
            ));
        }
        if self.model_layers.is_some() {
            if let Some(&l) = shape
                .layers
                .iter()
                .find(|&&l| !self.layers.iter().any(|c| c.layer == l))
            {
                return Err(format!(
                    "MoE layer {l} of model `{name}` has no counts (every count is 0 in its row)"
                ));
            }
        }
        let k = shape.top_k;
        for l in &self.layers {
            let positive = l.counts.iter().filter(|&&c| c > 0).count();
            if positive < k {
                return Err(format!(
                    "layer {} has counts for {positive} experts, fewer than the top_k = {k} distinct experts a \
                     token of model `{name}` chooses",
                    l.layer
                ));
            }
            if self.variant == CountVariant::Topk && k > 1 {
                let total: u64 = l.counts.iter().sum();
                let (e, &max) = l.counts.iter().enumerate().max_by_key(|(_, &c)| c).unwrap_or((0, &0));
                // max / total > 1 / k, in integers.
                if u128::from(max) * k as u128 > u128::from(total) {
                    return Err(format!(
                        "expert {e} has {:.1}% of layer {}'s top-k selections, but with top_k = {k} (model \
                         `{name}`) no expert can have more than {:.1}%: the counts were recorded with a smaller top_k",
                        100.0 * max as f64 / total as f64,
                        l.layer,
                        100.0 / k as f64
                    ));
                }
            }
        }
        Ok(())
    }

    /// The layers ascending and not empty, every count array `experts`
    /// long, every crosslayer matrix `experts` square between two recorded
    /// layers, `from < to`.
    fn check_shape(&self) -> Result<(), String> {
        let e = self.experts as usize;
        if self.layers.is_empty() {
            return Err("the counts hold no layer".into());
        }
        if let Some(w) = self.layers.windows(2).find(|w| w[0].layer >= w[1].layer) {
            return Err(format!(
                "counted layers must ascend, but {} comes after {}",
                w[1].layer, w[0].layer
            ));
        }
        if let Some(l) = self.layers.iter().find(|l| l.counts.len() != e) {
            return Err(format!(
                "layer {} has {} counts for {e} experts",
                l.layer,
                l.counts.len()
            ));
        }
        for p in &self.crosslayer {
            let recorded = |l: u32| self.layers.iter().any(|x| x.layer == l);
            if p.from >= p.to || !recorded(p.from) || !recorded(p.to) {
                return Err(format!(
                    "crosslayer pair {}->{} does not join two counted layers in order",
                    p.from, p.to
                ));
            }
            if p.counts.len() != e || p.counts.iter().any(|r| r.len() != e) {
                return Err(format!("crosslayer pair {}->{} is not {e} x {e}", p.from, p.to));
            }
        }
        Ok(())
    }

    /// The recorded layer numbers, ascending.
    pub fn recorded_layers(&self) -> Vec<u32> {
        self.layers.iter().map(|l| l.layer).collect()
    }

    /// Per MoE layer of `model`, (model layer, the recorded layer whose
    /// counts it follows): the nearest, the earlier on a tie, as a trace
    /// replay maps layers. Empty for a model without MoE layers or counts
    /// without layers.
    pub fn layer_map(&self, model: &ModelSpec) -> Vec<(u32, u32)> {
        let recorded = self.recorded_layers();
        let Ok(shape) = RoutingShape::of(model) else {
            return Vec::new();
        };
        if recorded.is_empty() {
            return Vec::new();
        }
        shape
            .layers
            .iter()
            .map(|&m| (m, recorded[super::trace::nearest(&recorded, m)]))
            .collect()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::routing::synthetic::tests::model;

    /// The routing analysis's files, as copied into the examples.
    pub fn example(file: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/traces/olmoe-routing-analysis")
            .join(file);
        std::fs::read_to_string(path).unwrap()
    }

    fn sel(model: &str, domain: Option<&str>, variant: CountVariant) -> CountSelection {
        CountSelection {
            model: Some(model.into()),
            domain: domain.map(str::to_string),
            variant: Some(variant),
        }
    }

    #[test]
    fn json_and_csv_give_the_same_counts() {
        let json = parse_counts(&example("expert_counts.json"), "expert_counts.json").unwrap();
        let csv = parse_counts(&example("expert_counts.csv"), "expert_counts.csv").unwrap();
        let (CountFile::Analysis(j), CountFile::Analysis(c)) = (&json, &csv) else {
            panic!("both are analysis files");
        };
        assert_eq!(j.counts, c.counts);
        assert_eq!(
            j.meta["mistral"],
            ModelMeta {
                experts: Some(8),
                top_k: Some(2)
            }
        );
        let arxiv = select(&json, "j", &sel("mistral", Some("arxiv"), CountVariant::Topk), None).unwrap();
        assert_eq!(arxiv.experts, 8);
        assert_eq!(arxiv.top_k, Some(2));
        assert_eq!(arxiv.recorded_layers(), [0, 7, 15]);
        assert_eq!(
            arxiv.layers[0].counts,
            [55713, 52019, 52619, 50522, 44401, 66285, 44770, 51463]
        );
        assert_eq!(arxiv.layers[0].counts.iter().sum::<u64>(), 417_792);
        // The CSV knows no top_k; otherwise the same.
        let from_csv = select(&csv, "j", &sel("mistral", Some("arxiv"), CountVariant::Topk), None).unwrap();
        assert_eq!(from_csv.layers, arxiv.layers);
        assert_eq!(from_csv.top_k, None);
    }

    #[test]
    fn no_domain_pools_every_domain_with_the_variant() {
        let f = parse_counts(&example("expert_counts.json"), "f").unwrap();
        let pooled = select(&f, "f", &sel("mistral", None, CountVariant::Topk), None).unwrap();
        assert_eq!(pooled.layers[1].counts.iter().sum::<u64>(), 5 * 417_792);
        assert!(pooled.source.contains("pooled over 5 domains"), "{}", pooled.source);
        // OLMoE's tulu has top-k counts only, so it pools into topk (6
        // domains) but not top1 (5), and not when the crosslayer file,
        // which has no tulu, is given.
        let olmoe = select(&f, "f", &sel("olmoe", None, CountVariant::Topk), None).unwrap();
        assert_eq!(olmoe.layers[0].counts.iter().sum::<u64>(), 5 * 1_671_168 + 1_641_944);
        let cross = parse_crosslayer(&example("crosslayer_counts.json"), "c").unwrap();
        let both = select(&f, "f", &sel("olmoe", None, CountVariant::Topk), Some((&cross, "c"))).unwrap();
        assert_eq!(both.layers[0].counts.iter().sum::<u64>(), 5 * 1_671_168);
        assert_eq!(both.crosslayer.len(), 2);
        assert_eq!((both.crosslayer[0].from, both.crosslayer[0].to), (0, 7));
        let m: u64 = both.crosslayer[1].counts.iter().flatten().sum();
        assert_eq!(m, 5 * 1_671_168, "rank-aligned: k pairs per token");
        // The matrices' rows sum to the source layer's counts.
        let rows: Vec<u64> = both.crosslayer[0].counts.iter().map(|r| r.iter().sum()).collect();
        assert_eq!(rows, both.layers[0].counts);
    }

    #[test]
    fn missing_keys_list_what_is_there() {
        let f = parse_counts(&example("expert_counts.json"), "f.json").unwrap();
        let e = select(&f, "f.json", &sel("mixtral", None, CountVariant::Topk), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.json has no model `mixtral` (it has: mistral, olmoe, olmoe-dpo, olmoe-sft)"
        );
        let e = select(&f, "f.json", &sel("mistral", Some("tulu"), CountVariant::Topk), None).unwrap_err();
        assert!(
            e.to_string()
                .contains("no domain `tulu` (it has: arxiv, book, c4, github, wikipedia)"),
            "{e}"
        );
        let e = select(&f, "f.json", &sel("olmoe", Some("tulu"), CountVariant::Top1), None).unwrap_err();
        assert!(e.to_string().contains("no variant `top1` (it has: topk)"), "{e}");
        let e = select(&f, "f.json", &CountSelection::default(), None).unwrap_err();
        assert!(
            matches!(
                e,
                CountsError::NotFound {
                    key: CountKey::Model,
                    given: None,
                    ..
                }
            ),
            "{e}"
        );
        let cross = parse_crosslayer(&example("crosslayer_counts.json"), "c.json").unwrap();
        let e = select(
            &f,
            "f.json",
            &sel("olmoe-sft", None, CountVariant::Topk),
            Some((&cross, "c.json")),
        )
        .unwrap_err();
        assert!(
            matches!(
                &e,
                CountsError::NotFound {
                    role: CountFileRole::Crosslayer,
                    key: CountKey::Model,
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("c.json has no model `olmoe-sft` (it has: mistral, olmoe)"),
            "{e}"
        );
    }

    #[test]
    fn sglang_logical_count_reads_in_both_shapes() {
        // DeepSeek-style: dense layer 0 records nothing.
        let two = r#"{"logical_count": [[0, 0, 0, 0], [5, 1, 0, 2], [3, 3, 1, 1]], "rank": 0}"#;
        let f = parse_counts(two, "s.json").unwrap();
        let c = select(&f, "s.json", &CountSelection::default(), None).unwrap();
        assert_eq!(c.recorded_layers(), [1, 2]);
        assert_eq!((c.experts, c.model_layers, c.top_k), (4, Some(3), None));
        // Per buffered step, summed.
        let three = r#"{"logical_count": [[[0,0,0,0],[2,1,0,1],[1,1,1,0]], [[0,0,0,0],[3,0,0,1],[2,2,0,1]]]}"#;
        assert_eq!(parse_counts(three, "s.json").unwrap(), f);
        // Selection settings it has nothing for are refused.
        let e = select(&f, "s.json", &sel("m", None, CountVariant::Topk), None).unwrap_err();
        assert!(
            matches!(
                e,
                CountsError::NotApplicable {
                    key: CountKey::Model,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn malformed_files_say_what_is_wrong() {
        let bad = |text: &str| parse_counts(text, "x").unwrap_err().to_string();
        assert!(
            bad("{\"counts\": {").starts_with("x: not valid JSON"),
            "{}",
            bad("{\"counts\": {")
        );
        assert!(bad("{\"counts\": {\"m\": {\"d\": {\"topk\": {\"0\": [-1]}}}}}").contains("malformed expert counts"));
        assert!(bad("{\"counts\": {\"m\": {\"d\": {\"topk\": {\"zero\": [1]}}}}}").contains("not a layer number"));
        assert!(
            bad("{\"counts\": {\"m\": {\"d\": {\"topk\": {\"0\": [1, 2], \"1\": [1]}}}}}")
                .contains("but m/d/topk layer 0 has 2")
        );
        assert!(bad("{\"other\": 1}").contains("found \"other\""));
        assert!(bad("{\"crosslayer\": {}}").contains("crosslayer = "));
        assert!(bad("{\"logical_count\": [[1.5, 2]]}").contains("whole numbers"));
        assert!(bad("{\"logical_count\": [[0, 0]]}").contains("all zero"));
        assert!(bad("{\"logical_count\": [[1, 2], [1]]}").contains("layer 1 has 1 experts"));
        assert!(bad("a,b\n1,2\n").contains("header"));
        assert!(bad("model,domain,variant,layer,expert,count\nm,d,topk,0,0\n").contains("line 2: expected 6"));
        assert!(bad("model,domain,variant,layer,expert,count\nm,d,topk,0,x,1\n").contains("expert `x`"));
        assert!(
            bad("model,domain,variant,layer,expert,count\nm,d,topk,0,0,1\nm,d,topk,0,0,2\n").contains("listed twice")
        );
        let e = parse_crosslayer("{\"crosslayer\": {\"m\": {\"d\": {\"top1\": {\"7->0\": [[1]]}}}}}", "c").unwrap_err();
        assert!(e.to_string().contains("\"a->b\" with a < b"), "{e}");
        let e = parse_crosslayer(
            "{\"crosslayer\": {\"m\": {\"d\": {\"top1\": {\"0->7\": [[1, 2], [1]]}}}}}",
            "c",
        )
        .unwrap_err();
        assert!(e.to_string().contains("square"), "{e}");
    }

    #[test]
    fn fit_checks_the_counts_against_the_model() {
        let f = parse_counts(&example("expert_counts.json"), "f").unwrap();
        let mistral = select(&f, "f", &sel("mistral", Some("arxiv"), CountVariant::Topk), None).unwrap();
        assert_eq!(mistral.fit(&model(8, 2, 1, 1, 0, 32)), Ok(()));
        let e = mistral.fit(&model(16, 2, 1, 1, 0, 32)).unwrap_err();
        assert!(e.contains("cover 8 experts but model `test_moe` has 16"), "{e}");
        let e = mistral.fit(&model(8, 1, 1, 1, 0, 32)).unwrap_err();
        assert!(e.contains("top_k = 2 but model `test_moe` has top_k = 1"), "{e}");
        let e = mistral.fit(&model(8, 2, 1, 1, 0, 12)).unwrap_err();
        assert!(e.contains("counted layer 15 is not an MoE layer"), "{e}");
        // Without a declared top_k, an impossible share gives it away.
        let s = parse_counts(r#"{"logical_count": [[9, 1, 1, 1], [3, 3, 3, 3]]}"#, "s").unwrap();
        let s = select(&s, "s", &CountSelection::default(), None).unwrap();
        assert_eq!(s.fit(&model(4, 1, 1, 1, 0, 2)), Ok(()));
        let e = s.fit(&model(4, 2, 1, 1, 0, 2)).unwrap_err();
        assert!(e.contains("expert 0 has 75.0% of layer 0's top-k selections"), "{e}");
        let e = s.fit(&model(4, 1, 1, 1, 0, 3)).unwrap_err();
        assert!(e.contains("for 2 layers but model `test_moe` has 3"), "{e}");
        let z = parse_counts(r#"{"logical_count": [[0, 0, 0, 0], [3, 3, 3, 3]]}"#, "s").unwrap();
        let z = select(&z, "s", &CountSelection::default(), None).unwrap();
        let e = z.fit(&model(4, 1, 1, 1, 0, 2)).unwrap_err();
        assert!(e.contains("MoE layer 0 of model `test_moe` has no counts"), "{e}");
        assert_eq!(
            z.fit(&model(4, 1, 1, 1, 1, 1)),
            Ok(()),
            "a dense layer 0 records nothing"
        );
        // Counts edited in a schedule file are checked as well.
        let mut broken = mistral.clone();
        broken.layers.clear();
        assert!(broken.fit(&model(8, 2, 1, 1, 0, 32)).unwrap_err().contains("no layer"));
        let mut broken = mistral.clone();
        broken.layers[1].counts.pop();
        assert!(broken
            .fit(&model(8, 2, 1, 1, 0, 32))
            .unwrap_err()
            .contains("7 counts for 8 experts"));
        let mut broken = mistral.clone();
        broken.crosslayer.push(CrossLayerCounts {
            from: 7,
            to: 0,
            counts: vec![vec![1; 8]; 8],
        });
        assert!(broken.fit(&model(8, 2, 1, 1, 0, 32)).unwrap_err().contains("7->0"));
    }
}
