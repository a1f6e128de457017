//! Edits of a config document for the admin API: create-or-update and
//! delete of one `[[functions]]` entry. The result is TOML text that goes
//! through the same parsing and validation as a file, so the admin API can
//! never install a config a file could not express.

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

/// Why an edit could not be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    #[error("the current config is not valid TOML: {0}")]
    Document(String),
    #[error("function '{0}' is not defined")]
    NotFound(String),
    #[error("the function definition must be a JSON object of config keys")]
    NotAnObject,
    #[error("key `{key}`: {message}")]
    Value { key: String, message: String },
}

fn to_toml(key: &str, value: &serde_json::Value) -> Result<Value, EditError> {
    let err = |message: &str| EditError::Value {
        key: key.to_string(),
        message: message.to_string(),
    };
    Ok(match value {
        serde_json::Value::Null => {
            return Err(err("null is not a config value; leave the key out instead"))
        }
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(f)) => Value::from(f),
            _ => return Err(err("number out of range")),
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(items) => {
            let mut array = Array::new();
            for item in items {
                array.push(to_toml(key, item)?);
            }
            Value::Array(array)
        }
        serde_json::Value::Object(map) => {
            let mut table = InlineTable::new();
            for (k, v) in map {
                table.insert(k, to_toml(&format!("{key}.{k}"), v)?);
            }
            Value::InlineTable(table)
        }
    })
}

fn functions(doc: &mut DocumentMut) -> &mut ArrayOfTables {
    if doc
        .get("functions")
        .and_then(Item::as_array_of_tables)
        .is_none()
    {
        doc.insert("functions", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    doc["functions"]
        .as_array_of_tables_mut()
        .expect("just ensured an array of tables")
}

fn position(tables: &ArrayOfTables, name: &str) -> Option<usize> {
    tables
        .iter()
        .position(|t| t.get("name").and_then(Item::as_str) == Some(name))
}

/// Replaces (or appends) the `[[functions]]` entry called `name` with the
/// keys of `entry` (a JSON object in the shape of a TOML function entry;
/// its `name`, if present, must equal `name`).
pub fn upsert_function(
    text: &str,
    name: &str,
    entry: &serde_json::Value,
) -> Result<String, EditError> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| EditError::Document(e.to_string()))?;
    let object = entry.as_object().ok_or(EditError::NotAnObject)?;
    let mut table = Table::new();
    table.insert("name", toml_edit::value(name));
    for (key, value) in object {
        if key == "name" {
            if value.as_str() != Some(name) {
                return Err(EditError::Value {
                    key: "name".into(),
                    message: format!(
                        "must match the function in the URL ({name:?}) or be left out"
                    ),
                });
            }
            continue;
        }
        table.insert(key, Item::Value(to_toml(key, value)?));
    }
    let tables = functions(&mut doc);
    match position(tables, name) {
        Some(i) => {
            *tables.get_mut(i).expect("position is in range") = table;
        }
        None => tables.push(table),
    }
    Ok(doc.to_string())
}

/// Removes the `[[functions]]` entry called `name`.
pub fn remove_function(text: &str, name: &str) -> Result<String, EditError> {
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| EditError::Document(e.to_string()))?;
    let tables = functions(&mut doc);
    let i = position(tables, name).ok_or_else(|| EditError::NotFound(name.to_string()))?;
    tables.remove(i);
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "[server]\nlisten = \"127.0.0.1:0\"\n\n[[functions]]\nname = \"a\"\nruntime = \"python3\"\ncode = \".\"\nhandler = \"h.h\"\n";

    #[test]
    fn upsert_appends_and_replaces() {
        let entry = serde_json::json!({"runtime": "python3", "code": ".", "handler": "m.f", "memory_mb": 256, "env": {"K": "v"}});
        let text = upsert_function(BASE, "b", &entry).unwrap();
        let doc: DocumentMut = text.parse().unwrap();
        let fns = doc["functions"].as_array_of_tables().unwrap();
        assert_eq!(fns.len(), 2);
        assert_eq!(fns.get(1).unwrap()["memory_mb"].as_integer(), Some(256));
        assert_eq!(fns.get(1).unwrap()["env"]["K"].as_str(), Some("v"));
        let text = upsert_function(
            &text,
            "a",
            &serde_json::json!({"runtime": "python3", "code": ".", "handler": "x.y"}),
        )
        .unwrap();
        let doc: DocumentMut = text.parse().unwrap();
        let fns = doc["functions"].as_array_of_tables().unwrap();
        assert_eq!(fns.len(), 2);
        assert_eq!(fns.get(0).unwrap()["handler"].as_str(), Some("x.y"));
        assert!(text.contains("[server]"), "other sections are kept");
    }

    #[test]
    fn bad_edits_are_refused() {
        assert_eq!(
            upsert_function(BASE, "a", &serde_json::json!([1])),
            Err(EditError::NotAnObject)
        );
        assert!(matches!(
            upsert_function(BASE, "a", &serde_json::json!({"name": "b"})),
            Err(EditError::Value { .. })
        ));
        assert!(matches!(
            upsert_function(BASE, "a", &serde_json::json!({"cpu": null})),
            Err(EditError::Value { .. })
        ));
        assert_eq!(
            remove_function(BASE, "zz"),
            Err(EditError::NotFound("zz".into()))
        );
        let text = remove_function(BASE, "a").unwrap();
        assert!(!text.contains("name = \"a\""));
    }
}
