//! Writing the JSON placement formats: keys in the order the format's
//! documentation gives them, and arrays of numbers (and objects holding
//! only numbers, strings and such arrays) on one line, so a file of
//! thousands of expert ids stays readable, one device, layer or expert a
//! line, where `serde_json`'s pretty printer puts one number a line.

use std::fmt::Write;

/// A JSON value with ordered keys.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Int(i64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    /// An array of integers.
    pub fn ints(values: impl IntoIterator<Item = i64>) -> Json {
        Json::Arr(values.into_iter().map(Json::Int).collect())
    }

    fn is_leaf(&self) -> bool {
        matches!(self, Json::Int(_) | Json::Str(_))
    }

    /// Written on one line: an array of numbers and strings, or an object
    /// whose values are those or such arrays (one device's slots).
    fn is_flat(&self) -> bool {
        match self {
            Json::Arr(items) => items.iter().all(Json::is_leaf),
            Json::Obj(entries) => entries
                .iter()
                .all(|(_, v)| v.is_leaf() || matches!(v, Json::Arr(_)) && v.is_flat()),
            _ => true,
        }
    }
}

/// The text of `value`, two-space indented, ending in a newline.
pub fn to_text(value: &Json) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out.push('\n');
    out
}

fn write_value(out: &mut String, value: &Json, indent: usize) {
    match value {
        Json::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Json::Str(s) => out.push_str(&quoted(s)),
        Json::Arr(items) if value.is_flat() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item, indent);
            }
            out.push(']');
        }
        Json::Obj(entries) if value.is_flat() => {
            out.push('{');
            for (i, (key, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{}: ", quoted(key));
                write_value(out, v, indent);
            }
            out.push('}');
        }
        Json::Arr(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                pad(out, indent + 1);
                write_value(out, item, indent + 1);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push(']');
        }
        Json::Obj(entries) => {
            out.push_str("{\n");
            for (i, (key, v)) in entries.iter().enumerate() {
                pad(out, indent + 1);
                let _ = write!(out, "{}: ", quoted(key));
                write_value(out, v, indent + 1);
                out.push_str(if i + 1 < entries.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push('}');
        }
    }
}

fn pad(out: &mut String, indent: usize) {
    for _ in 0..indent {
        out.push_str("  ");
    }
}

/// A JSON string literal (serde_json's escaping).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// What kind of JSON value this is, for messages.
pub fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_containers_go_on_one_line_and_the_rest_is_indented() {
        let v = Json::Obj(vec![
            ("name", Json::Str("a \"b\"".into())),
            ("rows", Json::Arr(vec![Json::ints([1, 2]), Json::ints([])])),
            (
                "device",
                Json::Obj(vec![("id", Json::Int(0)), ("slots", Json::ints([3]))]),
            ),
        ]);
        assert_eq!(
            to_text(&v),
            "{\n  \"name\": \"a \\\"b\\\"\",\n  \"rows\": [\n    [1, 2],\n    []\n  ],\n  \"device\": {\"id\": 0, \"slots\": [3]}\n}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(&to_text(&v)).unwrap();
        assert_eq!(parsed["rows"][0][1], 2);
    }
}
