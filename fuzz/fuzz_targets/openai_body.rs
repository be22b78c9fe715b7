//! OpenAI request bodies as clients send them: whatever the bytes, the body check never
//! panics; an accepted body's span is exactly its model string, the rewrite changes only
//! those bytes and yields a body the check accepts with the new model, serde_json's own
//! `Value` (where it parses the body) agrees on the model, and every refusal renders as
//! an OpenAI error document.
#![no_main]

use canary_router::route::openai::{inspect, rewrite};
use libfuzzer_sys::fuzz_target;

/// Names a revision may rewrite to, among them ones that need escaping in JSON.
const TARGETS: [&str; 4] = ["llama-3-8b-v2", "a\"b\\c\n", "caf\u{e9}/\u{1F600}", "\u{0}\u{1f}"];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let found = match inspect(body, Some("user")) {
        Ok(found) => found,
        Err(e) => {
            let doc: serde_json::Value = serde_json::from_str(&e.api_error().body()).expect("error JSON");
            assert!(doc["error"]["message"].is_string());
            return;
        }
    };
    let raw = &body[found.span.clone()];
    let model: String = serde_json::from_slice(raw).expect("the span is a JSON string");
    assert_eq!(model, found.model);
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(body) {
        assert_eq!(map.get("model").and_then(|m| m.as_str()), Some(&*found.model));
    }
    let target = TARGETS[usize::from(pick) % TARGETS.len()];
    let out = rewrite(body, found.span.clone(), target);
    assert_eq!(&out[..found.span.start], &body[..found.span.start]);
    let again = inspect(&out, Some("user")).expect("a rewritten body is accepted");
    assert_eq!(again.model, target);
    assert_eq!(again.span.start, found.span.start);
    assert_eq!(&out[again.span.end..], &body[found.span.end..]);
    assert_eq!(again.has_sticky_field, found.has_sticky_field);
});
