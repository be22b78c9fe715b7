//! Reading and writing Kubernetes manifests: files or standard input, YAML streams of
//! several documents or JSON, `v1` `List`s, and the JSON Istio hands the filter for a
//! WasmPlugin's `pluginConfig`. Parsing and printing are serde_json's and serde_norway's.

use std::io::Read;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::Error;

/// A file's bytes, or standard input's for `-`.
pub fn read(path: &str) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::new();
    let read = if path == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(path).map(|b| bytes = b)
    };
    read.map_err(|e| Error::Input(format!("{}: {e}", display_name(path))))?;
    Ok(bytes)
}

/// How messages name an input.
pub fn display_name(path: &str) -> &str {
    if path == "-" {
        "<stdin>"
    } else {
        path
    }
}

/// The documents of a YAML stream (JSON is YAML too), as JSON values; empty documents
/// (`---` with nothing after it) are dropped, as kubectl drops them.
pub fn yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).map_err(|e| e.to_string())?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// `pluginConfig` as Istio hands it to the filter: the manifest's object is stored as a
/// protobuf `Struct`, whose numbers are doubles, and marshalled back to JSON, where a
/// whole double prints without a fraction (`10.0` arrives as `10`, `1e2` as `100`).
pub fn istio_json(plugin_config: &Value) -> Vec<u8> {
    // Serialising a Value cannot fail (its keys are strings).
    serde_json::to_vec(&as_struct(plugin_config)).unwrap_or_default()
}

fn as_struct(value: &Value) -> Value {
    match value {
        Value::Number(n) => Value::Number(through_double(n)),
        Value::Array(items) => Value::Array(items.iter().map(as_struct).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), as_struct(v))).collect())
        }
        other => other.clone(),
    }
}

fn through_double(n: &Number) -> Number {
    let Some(x) = n.as_f64() else {
        return n.clone();
    };
    // Whole doubles within 64 bits print as integers (as Go's encoder does below 1e21);
    // the bounds make both casts exact.
    if x.fract() == 0.0 {
        if x >= -(2f64.powi(63)) && x < 2f64.powi(63) {
            return Number::from(x as i64);
        }
        if x >= 0.0 && x < 2f64.powi(64) {
            return Number::from(x as u64);
        }
    }
    Number::from_f64(x).unwrap_or_else(|| n.clone())
}

/// Manifests as a YAML stream, one document per object, each after `---`.
pub fn to_yaml<T: Serialize>(header: &str, objects: &[T]) -> Result<String, Error> {
    let mut out = String::from(header);
    for object in objects {
        let doc = serde_norway::to_string(object)
            .map_err(|e| Error::Input(format!("writing YAML: {e}")))?;
        out.push_str("---\n");
        out.push_str(&doc);
    }
    Ok(out)
}

/// Manifests as one `v1` `List`, as `kubectl get -o json` prints several objects.
pub fn to_json_list<T: Serialize>(objects: &[T]) -> Result<String, Error> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct List<'a, T> {
        api_version: &'static str,
        kind: &'static str,
        items: &'a [T],
    }
    let list = List {
        api_version: "v1",
        kind: "List",
        items: objects,
    };
    serde_json::to_string_pretty(&list)
        .map(|s| s + "\n")
        .map_err(|e| Error::Input(format!("writing JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plugin_config_numbers_pass_through_doubles_as_in_istio() {
        let yaml = "canaryTrafficPercent: 10.0\nratio: 0.05\nbig: 9007199254740993\nneg: -3\n";
        let doc = yaml_documents(yaml).unwrap().remove(0);
        let out: Value = serde_json::from_slice(&istio_json(&doc)).unwrap();
        assert_eq!(
            out,
            json!({"canaryTrafficPercent": 10, "ratio": 0.05, "big": 9007199254740992u64, "neg": -3})
        );
        assert_eq!(
            String::from_utf8(istio_json(&json!({"p": 10.0}))).unwrap(),
            r#"{"p":10}"#
        );
    }

    #[test]
    fn empty_documents_are_dropped() {
        let docs = yaml_documents("---\n---\na: 1\n---\n# only a comment\n---\nb: [2]\n").unwrap();
        assert_eq!(docs, vec![json!({"a": 1}), json!({"b": [2]})]);
    }

    #[test]
    fn yaml_errors_say_where() {
        let err = yaml_documents("a: 1\nb: [2\n").unwrap_err();
        assert!(err.contains("line"), "{err}");
    }
}
