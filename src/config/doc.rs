//! The configuration reference, generated from the config structs themselves: `retailflow
//! config --doc` prints it and docs/CONFIG.md holds a copy that a test keeps in step.
//!
//! The doc comments are read from the source at compile time (`include_str!`): every struct
//! in [`SOURCES`] with its fields, their types and the `///` lines above them. A walk from
//! `Config` turns a field whose type is one of those structs into a section (`nats.`), a
//! `Vec` of one into an array of tables (`erp[].`), and every other field into a row. A row's
//! default is the field's value in `Config::default()` serialized to TOML (an `[[erp]]`
//! endpoint's from `ErpEndpointConfig::default()`), printed as it would be written in the file;
//! a field the default leaves out (an unset `Option`) is `unset`.

use super::{Config, ErpEndpointConfig, SourceConfig};
use std::collections::HashMap;
use std::fmt::Write as _;

/// The files whose structs the walk can descend into: the configuration itself, its leader,
/// finance and telemetry sections, the ERP rate limit it embeds and the events stream's sources.
const SOURCES: [&str; 6] = [
    include_str!("../config.rs"),
    include_str!("leader.rs"),
    include_str!("finance.rs"),
    include_str!("telemetry.rs"),
    include_str!("../post/ratelimit.rs"),
    include_str!("sources.rs"),
];

/// One setting: its path in the TOML file, its default and what it means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `section.field`; fields of an array of tables read `erp[].field`.
    pub path: String,
    /// The default as written in TOML (`"2m"`, `4`, `["pos", "web"]`), or `unset`.
    pub default: String,
    /// The field's doc comment, its lines joined.
    pub meaning: String,
}

/// A struct field as the source declares it.
#[derive(Debug, PartialEq, Eq)]
struct Field {
    /// The key in TOML: the field's name, or its `#[serde(rename = "...")]`.
    key: String,
    ty: String,
    doc: String,
}

/// Every named-field struct in `sources`, by name, with its serialized fields in order.
fn structs(sources: &[&str]) -> HashMap<String, Vec<Field>> {
    let mut found = HashMap::new();
    for source in sources {
        let mut lines = source.lines().map(str::trim);
        while let Some(line) = lines.next() {
            let Some(rest) = line
                .strip_prefix("pub struct ")
                .filter(|r| r.ends_with('{'))
            else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name, fields(&mut lines));
        }
    }
    found
}

/// Reads a struct's body up to its closing brace.
fn fields<'a>(lines: &mut impl Iterator<Item = &'a str>) -> Vec<Field> {
    let mut out = Vec::new();
    let (mut doc, mut attrs) = (Vec::<&str>::new(), String::new());
    while let Some(line) = lines.next() {
        if line == "}" {
            break;
        }
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.strip_prefix(' ').unwrap_or(text));
        } else if line.starts_with("#[") {
            // An attribute, possibly over several lines: read on until its brackets close.
            let mut attr = line.to_string();
            while attr.matches('[').count() > attr.matches(']').count() {
                match lines.next() {
                    Some(more) => attr.push_str(more),
                    None => break,
                }
            }
            attrs.push_str(&attr);
        } else if let Some((name, ty)) = line.split_once(':').filter(|_| !line.starts_with("//")) {
            let name = name
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            let skipped = attrs.contains("serde(skip)") || attrs.contains("serde(skip,");
            if !skipped {
                out.push(Field {
                    key: renamed(&attrs).unwrap_or(name).to_string(),
                    ty: ty.trim().trim_end_matches(',').to_string(),
                    doc: doc
                        .iter()
                        .filter(|l| !l.is_empty())
                        .copied()
                        .collect::<Vec<_>>()
                        .join(" "),
                });
            }
            doc.clear();
            attrs.clear();
        }
    }
    out
}

/// The name a field's `#[serde(rename = "...")]` gives it.
fn renamed(attrs: &str) -> Option<&str> {
    let start = attrs.find("rename = \"")? + "rename = \"".len();
    let len = attrs[start..].find('"')?;
    Some(&attrs[start..start + len])
}

/// Every setting, in the order the structs declare them.
pub fn rows() -> Vec<Row> {
    let structs = structs(&SOURCES);
    let mut defaults = toml::Value::try_from(Config::default()).expect("the default serializes");
    // An endpoint's defaults are ErpEndpointConfig's, however many endpoints Config has.
    if let Some(table) = defaults.as_table_mut() {
        let endpoint = toml::Value::try_from(ErpEndpointConfig::default()).expect("serializes");
        table.insert("erp".into(), toml::Value::Array(vec![endpoint]));
        // A source's defaults likewise, though the default configuration has none; its domain
        // has no default (it is required) and shows as unset.
        let mut source = toml::Value::try_from(SourceConfig::default()).expect("serializes");
        if let Some(fields) = source.as_table_mut() {
            fields.remove("domain");
        }
        if let Some(streams) = table.get_mut("streams").and_then(|s| s.as_table_mut()) {
            streams.insert("sources".into(), toml::Value::Array(vec![source]));
        }
    }
    let mut rows = Vec::new();
    walk(&structs, "Config", "", Some(&defaults), &mut rows);
    rows
}

fn walk(
    structs: &HashMap<String, Vec<Field>>,
    name: &str,
    prefix: &str,
    defaults: Option<&toml::Value>,
    rows: &mut Vec<Row>,
) {
    for field in structs.get(name).into_iter().flatten() {
        let path = format!("{prefix}{}", field.key);
        let default = defaults.and_then(|d| d.get(&field.key));
        if structs.contains_key(&field.ty) {
            walk(structs, &field.ty, &format!("{path}."), default, rows);
        } else if let Some(element) = field
            .ty
            .strip_prefix("Vec<")
            .and_then(|t| t.strip_suffix('>'))
            .filter(|t| structs.contains_key(*t))
        {
            let first = default.and_then(|d| d.get(0));
            walk(structs, element, &format!("{path}[]."), first, rows);
        } else {
            rows.push(Row {
                default: default.map_or_else(|| "unset".into(), |v| shown(&field.key, v)),
                path,
                meaning: field.doc.clone(),
            });
        }
    }
}

/// A default as TOML, in backticks; byte counts also in KiB, MiB or GiB.
fn shown(key: &str, value: &toml::Value) -> String {
    let mut text = format!("`{value}`");
    if let (true, Some(n)) = (key.ends_with("_bytes"), value.as_integer()) {
        if let Some((size, unit)) = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
            .into_iter()
            .find(|(size, _)| n >= *size && n % size == 0)
        {
            let _ = write!(text, " ({} {unit})", n / size);
        }
    }
    text
}

/// The reference as a markdown table.
pub fn markdown() -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from("| field | default | meaning |\n| --- | --- | --- |\n");
    for row in rows() {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            row.path,
            cell(&row.default),
            cell(&row.meaning)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_doc_comments_past_attributes_and_renames() {
        let source = r#"
pub struct Outer {
    /// First line
    /// and second.
    #[serde(
        with = "duration"
    )]
    pub wait: Duration,
    // A plain comment is no documentation.
    #[serde(rename = "other-name")]
    pub named: Inner,
    #[serde(skip)]
    pub hidden: u8,
    pub list: Vec<Inner>,
}
pub struct Inner {
    /// A flag.
    pub on: bool,
}
"#;
        let found = structs(&[source]);
        let outer = &found["Outer"];
        let keys: Vec<&str> = outer.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["wait", "other-name", "list"]);
        assert_eq!(outer[0].doc, "First line and second.");
        assert_eq!(outer[0].ty, "Duration");
        assert_eq!(outer[1].doc, "");
        assert_eq!(found["Inner"][0].doc, "A flag.");
    }

    #[test]
    fn sections_arrays_and_unset_options_become_rows() {
        let rows = rows();
        let row = |path: &str| rows.iter().find(|r| r.path == path).cloned();
        assert_eq!(row("nats.url").unwrap().default, "`\"127.0.0.1:4222\"`");
        assert_eq!(row("streams.duplicate_window").unwrap().default, "`\"2m\"`");
        assert_eq!(
            row("streams.dead_letters_max_bytes").unwrap().default,
            "`1073741824` (1 GiB)"
        );
        assert_eq!(row("runtime.data_nice").unwrap().default, "unset");
        assert_eq!(row("erp[].rate.window").unwrap().default, "`\"5m\"`");
        assert!(row("erp[].retry.max").is_some());
        assert!(row("erp").is_none() && row("erp[].rate").is_none());
        assert_eq!(
            row("streams.sources[].stream").unwrap().default,
            "`\"STORE\"`"
        );
        assert_eq!(row("streams.sources[].domain").unwrap().default, "unset");
    }
}
