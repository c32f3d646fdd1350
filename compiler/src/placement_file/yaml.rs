//! Reading YAML (TensorRT-LLM's load balancer file) without letting a small
//! file grow without bound: `yaml-rust2` expands an alias by copying what
//! its anchor names, so nested aliases can turn kilobytes into gigabytes,
//! and deep nesting costs stack. A placement needs neither, so before
//! parsing, `&` and `*` are refused outside whole-line comments, and flow
//! nesting and indentation are bounded.

use yaml_rust2::{Yaml, YamlLoader};

/// Deepest `[`/`{` nesting accepted (a placement needs 2).
const MAX_FLOW_DEPTH: usize = 64;
/// Widest indentation accepted, in columns (a placement needs 4).
const MAX_INDENT: usize = 256;

/// The single document of `text`.
pub fn load(text: &str) -> Result<Yaml, String> {
    guard(text)?;
    let mut docs = YamlLoader::load_from_str(text).map_err(|e| format!("invalid YAML: {e}"))?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        0 => Err("the file is empty".into()),
        n => Err(format!("the file holds {n} YAML documents; a placement is one")),
    }
}

/// The top-level keys of a YAML mapping (scalars as written).
pub fn top_level_keys(text: &str) -> Result<Vec<String>, String> {
    match load(text)? {
        Yaml::Hash(map) => Ok(map.keys().map(scalar_text).collect()),
        _ => Err("the YAML is not a mapping of keys to values".into()),
    }
}

/// A scalar as text (for keys and messages).
pub fn scalar_text(y: &Yaml) -> String {
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(n) => n.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => "null".into(),
        Yaml::Array(_) => "a list".into(),
        Yaml::Hash(_) => "a mapping".into(),
        Yaml::Alias(_) | Yaml::BadValue => "a bad value".into(),
    }
}

/// Refuses anchors, aliases, deep nesting and wide indentation.
fn guard(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        if body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        if indent > MAX_INDENT {
            return Err(format!(
                "line {} is indented {indent} columns; placement files nest far less (at most {MAX_INDENT})",
                n + 1
            ));
        }
        for c in body.chars() {
            match c {
                '&' | '*' => {
                    return Err(format!(
                        "line {}: YAML anchors and aliases (`&`, `*`) are not accepted in a placement file",
                        n + 1
                    ))
                }
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(format!(
                            "line {}: brackets nest deeper than {MAX_FLOW_DEPTH}; a placement needs two levels",
                            n + 1
                        ));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_deep_nesting_and_wide_indents_are_refused_before_parsing() {
        let laughs = "a: &a [1, 1]\nb: &b [*a, *a]\nc: [*b, *b]\n";
        assert!(load(laughs).unwrap_err().contains("anchors and aliases"));
        assert!(load(&"[".repeat(100)).unwrap_err().contains("nest deeper"));
        assert!(load(&format!("{}a: 1\n", " ".repeat(300)))
            .unwrap_err()
            .contains("indented"));
        assert!(load("# a & b * c\nx: 1\n").is_ok());
        assert_eq!(top_level_keys("num_slots: 4\n3: [1]\n").unwrap(), ["num_slots", "3"]);
        assert!(load("a: [1\n").unwrap_err().starts_with("invalid YAML"));
        assert!(load("").is_err());
    }
}
