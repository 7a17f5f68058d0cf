//! docs/CONFIG.md's settings table is the one `retailflow config --doc` generates from the
//! config structs' doc comments, and that table has a documented row for every field of the
//! default configuration.

use retailflow::config::{Config, doc};
use std::collections::HashMap;
use std::path::PathBuf;

const BEGIN: &str = "<!-- config:begin";
const END: &str = "<!-- config:end -->";

fn config_md() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/CONFIG.md")
}

/// Splits the document into the text up to and including the begin marker's line, the table
/// between the markers, and the end marker with what follows.
fn split(text: &str) -> (&str, &str, &str) {
    let begin = text
        .find(BEGIN)
        .expect("docs/CONFIG.md has a `<!-- config:begin ... -->` line");
    let table = begin + text[begin..].find('\n').expect("a line after the marker") + 1;
    let end = text
        .find(END)
        .expect("docs/CONFIG.md has a `<!-- config:end -->` line");
    assert!(table <= end, "the config markers are out of order");
    (&text[..table], &text[table..end], &text[end..])
}

#[test]
fn config_doc_table_in_docs_is_the_generated_one() {
    let path = config_md();
    let text = std::fs::read_to_string(&path).expect("reading docs/CONFIG.md");
    let (head, table, tail) = split(&text);
    let generated = doc::markdown();
    if table == generated {
        return;
    }
    if std::env::var("RETAILFLOW_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, format!("{head}{generated}{tail}")).expect("writing docs/CONFIG.md");
        eprintln!("rewrote the settings table in {}", path.display());
        return;
    }
    let (line, docs, new) = table
        .lines()
        .map(Some)
        .chain(std::iter::repeat(None))
        .zip(generated.lines().map(Some).chain(std::iter::repeat(None)))
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .map(|(n, (a, b))| (n + 1, a.unwrap_or("(nothing)"), b.unwrap_or("(nothing)")))
        .expect("the tables differ somewhere");
    panic!(
        "docs/CONFIG.md's settings table is not the one generated from the doc comments in \
         src/config.rs (the doc comments are the source: edit them, not the table).\n\
         Regenerate it with `RETAILFLOW_BLESS=1 cargo test -p retailflow --test it config_doc`, \
         or put the output of `retailflow config --doc` between the markers.\n\
         First difference, line {line} of the table:\n  docs/CONFIG.md: {docs}\n  generated:      {new}"
    );
}

/// Every leaf of the serialized value under `path`: a table's keys, the first element of an
/// array of tables (as `name[].key`), anything else as it is.
fn leaves(path: &str, value: &toml::Value, out: &mut Vec<(String, toml::Value)>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        toml::Value::Table(table) => {
            for (key, v) in table {
                leaves(&join(key), v, out);
            }
        }
        toml::Value::Array(items) if items.first().is_some_and(toml::Value::is_table) => {
            leaves(&format!("{path}[]"), &items[0], out);
        }
        _ => out.push((path.to_string(), value.clone())),
    }
}

#[test]
fn config_doc_table_documents_every_field_of_the_default_config() {
    let generated = doc::markdown();
    // `| `path` | default | meaning |`, parsed from the markdown rather than taken from the
    // generator's rows.
    let rows: HashMap<&str, (&str, &str)> = generated
        .lines()
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 3, "a row with three cells: {line}");
            (cells[0].trim_matches('`'), (cells[1], cells[2]))
        })
        .collect();
    let default = toml::Value::try_from(Config::default()).expect("the default serializes");
    let mut fields = Vec::new();
    leaves("", &default, &mut fields);
    assert!(fields.len() > 50, "the walk found the fields: {fields:?}");
    for (path, value) in fields {
        // An array of tables empty by default (`streams.sources`) is documented by its
        // elements' rows.
        let elements = format!("{path}[].");
        if value.as_array().is_some_and(Vec::is_empty)
            && rows.keys().any(|k| k.starts_with(&elements))
        {
            continue;
        }
        let Some((shown, meaning)) = rows.get(path.as_str()) else {
            panic!("`{path}` is in the default configuration but not in `retailflow config --doc`");
        };
        assert!(
            shown.starts_with(&format!("`{value}`")),
            "`{path}`: the table says {shown}, the default configuration {value}"
        );
        assert!(
            !meaning.is_empty(),
            "`{path}` has no doc comment in src/config.rs; write one and regenerate docs/CONFIG.md"
        );
    }
    for (path, (_, meaning)) in &rows {
        assert!(!meaning.is_empty(), "`{path}` has no doc comment");
    }
}
