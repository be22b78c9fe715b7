use serde_json::{json, Value};

use super::*;

fn ok(body: &str) -> Inspected<'_> {
    inspect(body.as_bytes(), Some("user")).unwrap_or_else(|e| panic!("{body}: {e}"))
}

fn err(body: &[u8]) -> BodyError {
    match inspect(body, Some("user")) {
        Ok(found) => panic!("{} accepted: {found:?}", String::from_utf8_lossy(body)),
        Err(e) => e,
    }
}

#[test]
fn the_model_string_and_its_exact_span() {
    let body = r#"{"messages": [{"role": "user", "content": "hi"}], "model" :  "llama-3-8b" , "stream": true}"#;
    let found = ok(body);
    assert_eq!(found.model, "llama-3-8b");
    assert_eq!(&body[found.span.clone()], r#""llama-3-8b""#);
    assert!(!found.has_sticky_field);
    // Escapes in the value: the span is the string as written, the model as meant.
    let body = r#"{"model":"ll\u0061ma\/3"}"#;
    let found = ok(body);
    assert_eq!(found.model, "llama/3");
    assert_eq!(&body[found.span], r#""ll\u0061ma\/3""#);
}

#[test]
fn escaped_keys_are_the_same_key() {
    let found = ok(r#"{"mod\u0065l": "a", "us\u0065r": "bob"}"#);
    assert_eq!(found.model, "a");
    assert!(found.has_sticky_field);
    assert!(matches!(
        err(br#"{"model": "a", "mod\u0065l": "b"}"#),
        BodyError::DuplicateModel
    ));
    assert!(matches!(
        err(br#"{"model": "a", "model": "a"}"#),
        BodyError::DuplicateModel
    ));
    assert!(matches!(
        err(br#"{"user": "a", "model": "m", "\u0075ser": "b"}"#),
        BodyError::Json(_)
    ));
}

#[test]
fn only_the_top_level_model_counts() {
    let found = ok(r#"{"tools": [{"model": "x"}], "metadata": {"model": "y"}, "model": "z"}"#);
    assert_eq!(found.model, "z");
    assert!(matches!(
        err(br#"{"metadata": {"model": "y"}}"#),
        BodyError::MissingModel
    ));
}

#[test]
fn model_of_every_other_json_type_is_refused() {
    for (value, kind) in [
        ("5", "a number"),
        ("-2.5e3", "a number"),
        ("18446744073709551615", "a number"),
        ("true", "a boolean"),
        ("false", "a boolean"),
        ("null", "null"),
        ("[\"llama\"]", "an array"),
        ("{\"name\": \"llama\"}", "an object"),
    ] {
        let body = format!(r#"{{"model": {value}}}"#);
        match err(body.as_bytes()) {
            BodyError::NotAString(k) => assert_eq!(k, kind, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    assert!(matches!(err(br#"{"model": ""}"#), BodyError::EmptyModel));
}

#[test]
fn whatever_serde_json_refuses_is_refused() {
    for body in [
        &b""[..],
        b"   ",
        b"not json",
        b"[{\"model\": \"m\"}]",
        b"\"model\"",
        b"42",
        b"null",
        b"{\"model\": \"m\"} trailing",
        b"{\"model\": \"m\"}{}",
        b"{\"model\": \"m\",}",
        b"\xef\xbb\xbf{\"model\": \"m\"}",
        b"{\"model\": \"m\xff\"}",
        b"{\"model\": \"\\ud800\"}",
        b"{\"model\": \"m\", \"x\": \"\x01\"}",
        b"{\"model\": \"m\"",
        b"{\"model\": \"m\", \"x\": [[[]]}",
    ] {
        assert!(
            matches!(err(body), BodyError::Json(_)),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // Numbers are checked for their grammar only where they are skipped (as Envoy's
    // parser does): an out-of-range exponent is valid JSON.
    assert_eq!(ok(r#"{"model": "m", "n": 1e999}"#).model, "m");
    // Values the filter skips are checked without recursion (serde_json keeps their
    // nesting on the heap): deep nesting costs no stack, however deep.
    for depth in [100, 200, 100_000] {
        let nested = format!(
            r#"{{"model": "m", "x": {}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        assert_eq!(ok(&nested).model, "m");
        let nested = format!(
            r#"{{"x": {}1{}, "model": "m"}}"#,
            "{\"a\":".repeat(depth),
            "}".repeat(depth)
        );
        assert_eq!(ok(&nested).model, "m");
    }
    // A deeply nested model is not a string, whatever its depth.
    let deep_model = format!(
        r#"{{"model": {}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(matches!(
        err(deep_model.as_bytes()),
        BodyError::NotAString("an array")
    ));
}

#[test]
fn the_rewrite_changes_only_the_model_string() {
    let body = r#"{"model": "llama-3-8b",
  "messages": [{"role": "user", "content": "caf\u00e9 \"quoted\""}], "user": "alice", "n": 1.50}"#;
    let found = ok(body);
    for new in [
        "llama-3-8b-v2",
        "x",
        "a \"quoted\" name\n",
        "caf\u{e9}/\u{1F600}",
        "\u{0}",
    ] {
        let out = rewrite(body.as_bytes(), found.span.clone(), new);
        let again = inspect(&out, Some("user")).expect("the rewrite is valid JSON");
        assert_eq!(again.model, new);
        assert_eq!(
            &out[..found.span.start],
            &body.as_bytes()[..found.span.start]
        );
        assert_eq!(&out[again.span.end..], &body.as_bytes()[found.span.end..]);
        let before: Value = serde_json::from_str(body).unwrap();
        let mut after: Value = serde_json::from_slice(&out).unwrap();
        after["model"] = before["model"].clone();
        assert_eq!(before, after);
    }
}

#[test]
fn errors_are_openai_documents() {
    let cases = [
        (
            ApiError::model_not_found("gpt-x"),
            404,
            Some("model_not_found"),
        ),
        (
            ApiError::model_missing(),
            400,
            Some("missing_required_parameter"),
        ),
        (
            ApiError::model_not_string("a number"),
            400,
            Some("invalid_type"),
        ),
        (
            ApiError::duplicate_model(),
            400,
            Some("duplicate_parameter"),
        ),
        (ApiError::invalid_json("EOF"), 400, Some("invalid_json")),
        (ApiError::too_large(10), 413, Some("request_too_large")),
        (
            ApiError::compressed("gzip"),
            415,
            Some("unsupported_content_encoding"),
        ),
        (
            ApiError::not_json_content(Some("text/plain")),
            415,
            Some("unsupported_content_type"),
        ),
        (
            ApiError::unavailable("r2", "llama", "not ready"),
            503,
            Some("revision_unavailable"),
        ),
        (
            ApiError::gateway_misconfigured(),
            500,
            Some("gateway_misconfigured"),
        ),
    ];
    for (e, status, code) in cases {
        assert_eq!(e.status, status);
        let doc: Value = serde_json::from_str(&e.body()).unwrap();
        let error = doc["error"].as_object().unwrap();
        assert_eq!(error.len(), 4, "{doc}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(error["type"].is_string());
        assert!(error.contains_key("param"));
        assert_eq!(error["code"].as_str(), code);
    }
    let e = ApiError::model_not_found("gpt-x");
    assert!(e.message.contains("`gpt-x`"));
    assert_eq!(e.param, Some("model"));
    // Client-supplied names are escaped by the serialiser and cut when long.
    let odd = format!("a\"b\n{}", "é".repeat(500));
    let doc: Value = serde_json::from_str(&ApiError::model_not_found(&odd).body()).unwrap();
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("The model `a\"b\n") && message.len() < 300,
        "{message}"
    );
}

#[test]
fn the_model_list() {
    let doc: Value = serde_json::from_str(&model_list(
        [("llama-3-8b", "llama"), ("bert", "bert")].into_iter(),
        7,
    ))
    .unwrap();
    assert_eq!(
        doc,
        json!({"object": "list", "data": [
            {"id": "llama-3-8b", "object": "model", "created": 7, "owned_by": "llama"},
            {"id": "bert", "object": "model", "created": 7, "owned_by": "bert"}]})
    );
    let empty: Value = serde_json::from_str(&model_list(std::iter::empty(), 0)).unwrap();
    assert_eq!(empty, json!({"object": "list", "data": []}));
}

#[test]
fn paths_and_list_paths() {
    let paths = DEFAULT_PATHS.iter().map(|p| Box::from(*p)).collect();
    let o = OpenAi::new(
        paths,
        DEFAULT_MAX_BODY_BYTES,
        true,
        DEFAULT_NAMESPACE.into(),
    );
    for p in [
        "/v1/chat/completions",
        "/openai/v1/embeddings?x=1",
        "/v1/rerank#f",
    ] {
        assert!(o.is_model_path(p), "{p}");
    }
    for p in [
        "/v1/chat/completions/",
        "/v1/chat/completionsx",
        "/V1/chat/completions",
        "/v2/chat/completions",
        "",
    ] {
        assert!(!o.is_model_path(p), "{p}");
    }
    assert_eq!(
        &*o.list_paths,
        [Box::from("/v1/models"), Box::from("/openai/v1/models")]
    );
    assert!(o.is_list_path("/openai/v1/models?limit=1"));
    assert!(!o.is_list_path("/v1/models/llama"));
    let quiet = OpenAi::new(
        vec!["/x/v1/completions".into(), "/other".into()],
        1,
        false,
        "ns".into(),
    );
    assert!(quiet.list_paths.is_empty());
    let listed = OpenAi::new(
        vec!["/x/v1/completions".into(), "/other".into()],
        1,
        true,
        "ns".into(),
    );
    assert_eq!(&*listed.list_paths, [Box::from("/x/v1/models")]);
}

/// Fake metadata and headers for `unrouted`, recording what was read.
fn why(
    model: Option<&[u8]>,
    meta: &[(&str, &[u8])],
    headers: &[(&str, &str)],
) -> (Unrouted, Vec<String>) {
    let reads = std::cell::RefCell::new(Vec::new());
    let out = unrouted(
        model,
        |k| {
            reads.borrow_mut().push(format!("meta {k}"));
            meta.iter().find(|(m, _)| *m == k).map(|(_, v)| v.to_vec())
        },
        |h| {
            reads.borrow_mut().push(format!("header {h}"));
            headers
                .iter()
                .find(|(n, _)| *n == h)
                .map(|(_, v)| (*v).to_owned())
        },
    );
    (out, reads.into_inner())
}

fn status(u: &Unrouted) -> u16 {
    match u {
        Unrouted::Answer(e) => e.status,
        Unrouted::Pass => 0,
        Unrouted::Misconfigured => 500,
    }
}

#[test]
fn unrouted_requests_are_classified_from_the_metadata() {
    let json = [("content-type", "application/json"), (":method", "POST")];
    // An unknown string model: one more read, then 404.
    let (u, reads) = why(Some(b"gpt-x"), &[("model_text", b"gpt-x")], &json);
    assert_eq!(u, Unrouted::Answer(ApiError::model_not_found("gpt-x")));
    assert_eq!(reads, ["meta model_text"]);
    // A number (8 bytes of a double) or a boolean (one byte): 400.
    let five = 5.0f64.to_le_bytes();
    let (u, _) = why(Some(&five), &[("model_text", b"5")], &json);
    assert_eq!(u, Unrouted::Answer(ApiError::model_not_string("a number")));
    let (u, _) = why(Some(b"\x01"), &[("model_text", b"1")], &json);
    assert_eq!(u, Unrouted::Answer(ApiError::model_not_string("a boolean")));
    // Missing, empty or not a scalar.
    for marker in [&b"json"[..], b"no-model"] {
        let (u, _) = why(None, &[("body", marker)], &json);
        assert_eq!(u, Unrouted::Answer(ApiError::model_missing()));
    }
    // A GET without a body passes.
    let (u, _) = why(None, &[("body", b"no-model")], &[(":method", "GET")]);
    assert_eq!(u, Unrouted::Pass);
    // Not JSON: 400, or 415 when compressed or not declared JSON (json_to_metadata says
    // "invalid" for a content type it does not allow too).
    let (u, _) = why(None, &[("body", b"invalid")], &json);
    assert_eq!(status(&u), 400);
    let (u, _) = why(
        None,
        &[("body", b"invalid")],
        &[("content-encoding", "gzip")],
    );
    assert_eq!(u, Unrouted::Answer(ApiError::compressed("gzip")));
    let (u, _) = why(
        None,
        &[("body", b"invalid")],
        &[
            ("content-encoding", "identity"),
            ("content-type", "application/json"),
        ],
    );
    assert_eq!(status(&u), 400);
    let (u, _) = why(
        None,
        &[("body", b"invalid")],
        &[("content-type", "text/plain")],
    );
    assert_eq!(
        u,
        Unrouted::Answer(ApiError::not_json_content(Some("text/plain")))
    );
    // No metadata at all: the content type says whether Envoy should have left some.
    let (u, _) = why(None, &[], &json);
    assert_eq!(u, Unrouted::Misconfigured);
    let (u, _) = why(
        None,
        &[],
        &[("content-type", "Application/JSON; charset=utf-8")],
    );
    assert_eq!(u, Unrouted::Misconfigured);
    for ct in [Some("text/plain"), Some("application/jsonx"), None] {
        let headers: Vec<(&str, &str)> = ct.map(|c| ("content-type", c)).into_iter().collect();
        let (u, _) = why(None, &[], &headers);
        assert_eq!(
            u,
            Unrouted::Answer(ApiError::not_json_content(ct)),
            "{ct:?}"
        );
    }
    let (u, _) = why(None, &[], &[(":method", "GET")]);
    assert_eq!(u, Unrouted::Pass);
}
