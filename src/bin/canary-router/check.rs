//! `canary-router check`: every plugin configuration in the inputs, compiled by the
//! filter's own `canary_router::parse`, the function `on_configure` calls. A refusal is
//! printed as Envoy logs it after `configuration rejected: `, with the file and document.
//!
//! An input is one of: a bare plugin configuration (JSON, handed over byte for byte, as
//! Envoy hands the filter its `configuration` string); or manifests (YAML or JSON, several
//! documents, `List`s), where each `WasmPlugin`'s `pluginConfig` goes through the JSON
//! Istio would make of it, and each Envoy wasm filter's `StringValue` configuration is
//! taken as is (bootstraps and ECDS resources alike). Other objects are skipped.

use std::io::Write;

use serde_json::Value;

use crate::manifest;
use crate::Error;

const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";

pub struct Options {
    pub files: Vec<String>,
    pub quiet: bool,
    pub verbose: bool,
}

/// One configuration found in an input, and what it is called in messages.
#[derive(Debug)]
pub struct Found {
    pub what: String,
    pub config: Result<Vec<u8>, String>,
}

/// What is in one input: the configurations to check and the objects skipped.
#[derive(Debug, Default)]
pub struct Contents {
    pub found: Vec<Found>,
    pub skipped: Vec<String>,
}

pub fn run(opts: &Options) -> Result<(), Error> {
    let mut stdin_copy = None;
    let (mut checked, mut refused) = (0usize, 0usize);
    let mut err = std::io::stderr().lock();
    for path in &opts.files {
        let name = manifest::display_name(path);
        let bytes = manifest::read(path)?;
        let contents = match contents(&bytes, path) {
            Ok(c) => c,
            Err(e) => {
                refused += 1;
                let _ = writeln!(err, "{name}: {e}");
                continue;
            }
        };
        if contents.found.is_empty() {
            let _ = writeln!(
                err,
                "{name}: no WasmPlugin, plugin configuration or Envoy wasm filter to check"
            );
        }
        for what in &contents.skipped {
            if opts.verbose {
                let _ = writeln!(
                    err,
                    "{name}: {what}: skipped (not a configuration of the filter)"
                );
            }
        }
        for found in contents.found {
            checked += 1;
            match found.config.map(|bytes| canary_router::parse(&bytes)) {
                Ok(Ok(router)) => {
                    if !opts.quiet {
                        let _ = writeln!(
                            err,
                            "{name}: {}: accepted: {}",
                            found.what,
                            router.summary()
                        );
                    }
                }
                Ok(Err(e)) => {
                    refused += 1;
                    let _ = writeln!(err, "{name}: {}: configuration rejected: {e}", found.what);
                }
                Err(why) => {
                    refused += 1;
                    let _ = writeln!(err, "{name}: {}: cannot check: {why}", found.what);
                }
            }
        }
        if path == "-" {
            stdin_copy = Some(bytes);
        }
    }
    if refused > 0 {
        return Err(Error::Refused);
    }
    if checked == 0 {
        return Err(Error::Input("nothing to check".to_owned()));
    }
    // In a pipe (`render | check - | kubectl apply -f -`), what passed goes on.
    if let Some(bytes) = stdin_copy {
        let mut out = std::io::stdout().lock();
        out.write_all(&bytes)
            .and_then(|()| out.flush())
            .map_err(|e| Error::Input(format!("writing standard output: {e}")))?;
    }
    Ok(())
}

/// Splits an input into the configurations to check. `Err` only when the input is
/// neither JSON nor YAML at all.
pub fn contents(bytes: &[u8], path: &str) -> Result<Contents, String> {
    if is_bare_config(bytes, path) {
        return Ok(Contents {
            found: vec![Found {
                what: "plugin configuration".to_owned(),
                config: Ok(bytes.to_vec()),
            }],
            skipped: Vec::new(),
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8 text: {e}"))?;
    let docs = manifest::yaml_documents(text).map_err(|e| format!("not YAML: {e}"))?;
    let mut contents = Contents::default();
    for (i, doc) in docs.iter().enumerate() {
        collect(doc, &format!("document {}", i + 1), &mut contents);
    }
    Ok(contents)
}

/// A bare configuration goes to the filter byte for byte, so that its syntax errors are
/// the filter's: JSON that is not a Kubernetes object or an Envoy configuration, and any
/// `.json` file or `{`/`[`-led input that does not parse at all.
fn is_bare_config(bytes: &[u8], path: &str) -> bool {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => !["kind", "apiVersion", "static_resources", "resources"]
            .iter()
            .any(|k| map.contains_key(*k)),
        Ok(_) => true,
        Err(_) => {
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            path.ends_with(".json") || matches!(first, None | Some(b'{' | b'['))
        }
    }
}

fn collect(doc: &Value, at: &str, contents: &mut Contents) {
    let kind = doc.get("kind").and_then(Value::as_str);
    let named = |kind: &str| format!("{at} ({kind} {})", object_name(doc));
    match kind {
        Some("WasmPlugin") => {
            // Istio hands an absent pluginConfig over as no configuration at all.
            let config = doc
                .pointer("/spec/pluginConfig")
                .map_or_else(Vec::new, manifest::istio_json);
            contents.found.push(Found {
                what: named("WasmPlugin"),
                config: Ok(config),
            });
        }
        Some("List") | Some("WasmPluginList") => {
            let items = doc
                .get("items")
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice);
            for (i, item) in items.iter().enumerate() {
                collect(item, &format!("{at} item {}", i + 1), contents);
            }
        }
        Some(other) => contents.skipped.push(named(other)),
        None if doc.get("services").is_some() => contents.found.push(Found {
            what: format!("{at} (plugin configuration)"),
            config: Ok(manifest::istio_json(doc)),
        }),
        None => {
            let before = contents.found.len();
            envoy_filters(doc, at, contents);
            if contents.found.len() == before {
                contents.skipped.push(at.to_owned());
            }
        }
    }
}

fn object_name(doc: &Value) -> String {
    let field = |f: &str| {
        doc.pointer(&format!("/metadata/{f}"))
            .and_then(Value::as_str)
    };
    match (field("namespace"), field("name")) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_owned(),
        _ => "(unnamed)".to_owned(),
    }
}

/// Every Envoy wasm HTTP filter in a bootstrap or discovery response: its configuration
/// string is what `on_configure` reads.
fn envoy_filters(value: &Value, at: &str, contents: &mut Contents) {
    match value {
        Value::Object(map) => {
            if map.get("@type").and_then(Value::as_str) == Some(WASM_FILTER_TYPE) {
                let name = value
                    .pointer("/config/name")
                    .and_then(Value::as_str)
                    .unwrap_or("(unnamed)");
                let what = format!("{at} (Envoy wasm filter {name})");
                let config = match value.pointer("/config/configuration") {
                    None => Ok(Vec::new()),
                    Some(any) => match (any.get("@type").and_then(Value::as_str), any.get("value"))
                    {
                        (Some(STRING_VALUE_TYPE), Some(Value::String(s))) => {
                            Ok(s.clone().into_bytes())
                        }
                        (Some(STRING_VALUE_TYPE), None) => Ok(Vec::new()),
                        (t, _) => Err(format!(
                            "its configuration is a {}, not a google.protobuf.StringValue",
                            t.unwrap_or("value without @type")
                        )),
                    },
                };
                contents.found.push(Found { what, config });
                return;
            }
            for v in map.values() {
                envoy_filters(v, at, contents);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| envoy_filters(v, at, contents)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whats(c: &Contents) -> Vec<&str> {
        c.found.iter().map(|f| f.what.as_str()).collect()
    }

    #[test]
    fn bare_json_goes_to_the_filter_byte_for_byte() {
        for (bytes, path) in [
            (&b"{\"services\": []} trailing"[..], "x.json"),
            (b"", "-"),
            (b"  [1, 2", "-"),
            (b"{\"services\": [], \"services\": []}", "x"),
            (b"42", "x.yaml"),
        ] {
            let c = contents(bytes, path).unwrap();
            assert_eq!(whats(&c), ["plugin configuration"], "{bytes:?}");
            assert_eq!(c.found[0].config.as_deref().unwrap(), bytes);
        }
    }

    #[test]
    fn manifests_yield_their_wasmplugins_and_skip_the_rest() {
        let text = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: n}\n---\n\
                    apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: w, namespace: n}\n\
                    spec:\n  pluginConfig:\n    services: []\n    metrics: true\n";
        let c = contents(text.as_bytes(), "m.yaml").unwrap();
        assert_eq!(whats(&c), ["document 2 (WasmPlugin n/w)"]);
        assert_eq!(c.skipped, ["document 1 (Gateway n/g)"]);
        assert_eq!(
            c.found[0].config.as_deref().unwrap(),
            br#"{"metrics":true,"services":[]}"#
        );
    }

    #[test]
    fn a_json_list_is_manifests() {
        let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
            {"kind": "WasmPlugin", "metadata": {"name": "w"}, "spec": {}}]}"#;
        let c = contents(text.as_bytes(), "-").unwrap();
        assert_eq!(whats(&c), ["document 1 item 1 (WasmPlugin w)"]);
        assert_eq!(c.found[0].config.as_deref().unwrap(), b"");
    }

    #[test]
    fn envoy_wasm_filters_are_found_anywhere_in_a_config() {
        let text = r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - typed_config:
          http_filters:
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: canary-router
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{"services": []}'
          - name: other
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: b
                configuration: {"@type": type.googleapis.com/google.protobuf.BytesValue, value: e30=}
"#;
        let c = contents(text.as_bytes(), "envoy.yaml").unwrap();
        assert_eq!(
            whats(&c),
            [
                "document 1 (Envoy wasm filter canary-router)",
                "document 1 (Envoy wasm filter b)"
            ]
        );
        assert_eq!(
            c.found[0].config.as_deref().unwrap(),
            br#"{"services": []}"#
        );
        assert!(c.found[1]
            .config
            .as_ref()
            .unwrap_err()
            .contains("BytesValue"));
    }

    #[test]
    fn unparseable_yaml_is_an_error_of_the_input() {
        assert!(contents(b"kind: [", "x.yaml")
            .unwrap_err()
            .starts_with("not YAML: "));
    }
}
