//! OpenAI-style requests (`/v1/chat/completions` and friends), where the model is named in
//! the JSON body rather than in the host or path.
//!
//! A proxy-wasm filter cannot route by its own body (once its headers callback returns,
//! the headers are read-only; pausing there stops the body too), so Envoy's native
//! `json_to_metadata`, in front of the filter and scoped to these paths, holds the headers
//! until the body is complete and leaves the body's `model` in dynamic metadata (the
//! [`keys`] below). The filter routes on that in its headers callback, then checks the
//! body itself with serde_json in its body callback: the gateway's own parse is the one
//! that counts (two `model` keys are refused, whichever one Envoy's parser kept), and it
//! gives the exact span of the model string, whose bytes alone a revision's `model`
//! replaces. The filter's own answers on these paths are OpenAI error documents, so that
//! OpenAI clients raise their usual exceptions.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::route::Choice;

/// `openai.paths` when not configured: KServe's OpenAI routes, and vLLM-style servers'.
pub const DEFAULT_PATHS: [&str; 8] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/rerank",
    "/openai/v1/chat/completions",
    "/openai/v1/completions",
    "/openai/v1/embeddings",
    "/openai/v1/rerank",
];
/// `openai.maxBodyBytes` when not configured.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Largest `openai.maxBodyBytes`: the filter copies the whole body into its VM.
pub const MAX_BODY_BYTES_LIMIT: u64 = 64 << 20;
/// `openai.metadataNamespace` when not configured.
pub const DEFAULT_NAMESPACE: &str = "canary-router";

/// What `json_to_metadata` writes into the namespace (see `envoy/envoy.yaml`).
pub mod keys {
    /// The body's `model`, as a protobuf Value: a string arrives as its bytes, a number as
    /// the 8 bytes of a double, a boolean as one byte.
    pub const MODEL: &str = "model";
    /// The same value converted to text (`5`, `2.500000`, `1` for true): it equals
    /// [`MODEL`] only when the model is a string, which is how the filter tells them apart.
    pub const MODEL_TEXT: &str = "model_text";
    /// [`BODY_JSON`] for any body that parsed, then [`BODY_NO_MODEL`] when `model` was
    /// missing or not a scalar, or [`BODY_INVALID`] when the body was not JSON.
    pub const BODY: &str = "body";
    pub const BODY_JSON: &[u8] = b"json";
    pub const BODY_NO_MODEL: &[u8] = b"no-model";
    pub const BODY_INVALID: &[u8] = b"invalid";
    /// Names a sticky `bodyField` may not take (they are the keys above).
    pub const RESERVED: [&str; 3] = [MODEL, MODEL_TEXT, BODY];
}

/// Per revision of a service, the model it sends upstream (`None`: the client's).
pub type RevisionModels = Box<[Option<Box<str>>]>;

/// The compiled `openai` section, and every revision's `model` (here rather than on the
/// revisions: a configuration without `openai` pays nothing for them).
#[derive(Debug, Clone, Default)]
pub struct OpenAi {
    /// Paths (without query) whose POST bodies name the model.
    pub(crate) paths: Vec<Box<str>>,
    /// `<prefix>/v1/models` for each prefix of `paths`, when `listModels` is on.
    pub(crate) list_paths: Vec<Box<str>>,
    pub(crate) max_body: usize,
    pub(crate) namespace: Box<str>,
    /// (service index, per revision the model sent upstream instead of the client's), in
    /// service order (a sorted list: another map type would be another copy of the table
    /// code in the .wasm).
    pub(crate) rewrites: Vec<(usize, RevisionModels)>,
    /// Every public model name and its service, in configuration order (for the list).
    pub(crate) listed: Vec<(usize, Box<str>)>,
    /// The model list document (rendered when the configuration loads).
    pub(crate) model_list: Box<str>,
}

impl OpenAi {
    pub fn new(
        paths: Vec<Box<str>>,
        max_body: usize,
        list_models: bool,
        namespace: Box<str>,
    ) -> OpenAi {
        let mut list_paths: Vec<Box<str>> = Vec::new();
        if list_models {
            for path in &paths {
                let Some(prefix) = path.find("/v1/").and_then(|i| path.get(..i)) else {
                    continue;
                };
                let list = format!("{prefix}/v1/models");
                if !list_paths.iter().any(|p| **p == *list) {
                    list_paths.push(list.into());
                }
            }
        }
        OpenAi {
            paths,
            list_paths,
            max_body,
            namespace,
            rewrites: Vec::new(),
            listed: Vec::new(),
            model_list: Box::from(""),
        }
    }

    /// Sets a service's per-revision `model`s (`None` where a revision keeps the client's).
    pub fn set_rewrites(&mut self, service: usize, models: Vec<Option<Box<str>>>) {
        if models.iter().any(Option::is_some) {
            let at = self.rewrites.partition_point(|(s, _)| *s < service);
            self.rewrites
                .insert(at, (service, models.into_boxed_slice()));
        }
    }

    fn service_rewrites(&self, service: usize) -> Option<&[Option<Box<str>>]> {
        let at = self
            .rewrites
            .binary_search_by_key(&service, |(s, _)| *s)
            .ok()?;
        self.rewrites.get(at).map(|(_, r)| &**r)
    }

    /// The model a revision sends upstream in place of the client's, if it has one.
    pub fn revision_model(&self, choice: Choice) -> Option<&str> {
        self.service_rewrites(choice.service)?
            .get(choice.revision)?
            .as_deref()
    }

    /// Whether some revision of `service` renames the model.
    pub fn renames(&self, service: usize) -> bool {
        self.service_rewrites(service).is_some()
    }

    /// Adds a service's public model names, for the model list.
    pub fn list(&mut self, service: usize, models: impl Iterator<Item = Box<str>>) {
        self.listed.extend(models.map(|m| (service, m)));
    }

    /// `(service index, model)`, in configuration order.
    pub fn listed(&self) -> impl Iterator<Item = (usize, &str)> {
        self.listed.iter().map(|(s, m)| (*s, &**m))
    }

    /// The model list document, once `set_model_list` rendered it.
    pub fn model_list(&self) -> &str {
        &self.model_list
    }

    pub fn set_model_list(&mut self, document: String) {
        self.model_list = document.into();
    }

    /// Whether a request path (query ignored) is one of `paths`.
    pub fn is_model_path(&self, path: &str) -> bool {
        let path = without_query(path);
        self.paths.iter().any(|p| **p == *path)
    }

    /// Whether a request path (query ignored) asks for the model list.
    pub fn is_list_path(&self, path: &str) -> bool {
        let path = without_query(path);
        self.list_paths.iter().any(|p| **p == *path)
    }

    pub fn max_body(&self) -> usize {
        self.max_body
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.iter().map(|p| &**p)
    }
}

/// A request path without its query (or fragment).
pub fn without_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or_default()
}

/// An answer of the filter's own, in OpenAI's error shape:
/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
}

/// Model names echoed in messages are cut here: they come from clients.
const ECHO_LIMIT: usize = 200;

fn echo(value: &str) -> Cow<'_, str> {
    if value.len() <= ECHO_LIMIT {
        return Cow::Borrowed(value);
    }
    let mut end = ECHO_LIMIT;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}...", value.get(..end).unwrap_or_default()))
}

impl ApiError {
    fn invalid(
        status: u16,
        message: String,
        param: Option<&'static str>,
        code: &'static str,
    ) -> Self {
        ApiError {
            status,
            message,
            kind: "invalid_request_error",
            param,
            code: Some(code),
        }
    }

    pub fn model_not_found(model: &str) -> Self {
        Self::invalid(
            404,
            format!("The model `{}` does not exist.", echo(model)),
            Some("model"),
            "model_not_found",
        )
    }

    pub fn model_missing() -> Self {
        Self::invalid(
            400,
            "you must provide a model parameter: a non-empty string at the top level of the JSON body".into(),
            Some("model"),
            "missing_required_parameter",
        )
    }

    pub fn model_not_string(found: &str) -> Self {
        Self::invalid(
            400,
            format!("Invalid type for 'model': expected a string, but got {found} instead."),
            Some("model"),
            "invalid_type",
        )
    }

    pub fn duplicate_model() -> Self {
        Self::invalid(
            400,
            "the JSON body names 'model' more than once".into(),
            Some("model"),
            "duplicate_parameter",
        )
    }

    /// The body the gateway parsed names another model than the one Envoy's parser
    /// reported (the request was routed on the latter).
    pub fn model_mismatch() -> Self {
        Self::invalid(
            400,
            "the JSON body's 'model' could not be read unambiguously".into(),
            Some("model"),
            "invalid_value",
        )
    }

    pub fn invalid_json(detail: &str) -> Self {
        Self::invalid(
            400,
            format!("We could not parse the JSON body of your request: {detail}"),
            None,
            "invalid_json",
        )
    }

    pub fn too_large(limit: usize) -> Self {
        Self::invalid(
            413,
            format!("the request body is larger than {limit} bytes"),
            None,
            "request_too_large",
        )
    }

    pub fn compressed(encoding: &str) -> Self {
        Self::invalid(
            415,
            format!(
                "content-encoding `{}` is not supported: send the JSON body uncompressed",
                echo(encoding)
            ),
            None,
            "unsupported_content_encoding",
        )
    }

    pub fn not_json_content(content_type: Option<&str>) -> Self {
        Self::invalid(
            415,
            format!(
                "content-type must be application/json, not `{}`",
                echo(content_type.unwrap_or(""))
            ),
            None,
            "unsupported_content_type",
        )
    }

    pub fn unavailable(revision: &str, service: &str, reason: &str) -> Self {
        ApiError {
            status: 503,
            message: format!("revision {revision} of service {service} is {reason}"),
            kind: "server_error",
            param: None,
            code: Some("revision_unavailable"),
        }
    }

    /// The Envoy side (json_to_metadata in front of the filter) left nothing.
    pub fn gateway_misconfigured() -> Self {
        ApiError {
            status: 500,
            message: "the gateway could not read the request's model (its body filter is missing)"
                .into(),
            kind: "server_error",
            param: None,
            code: Some("gateway_misconfigured"),
        }
    }

    /// The JSON document clients receive.
    pub fn body(&self) -> String {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Detail<'a>,
        }
        #[derive(Serialize)]
        struct Detail<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        let doc = Envelope {
            error: Detail {
                message: &self.message,
                kind: self.kind,
                param: self.param,
                code: self.code,
            },
        };
        // Strings and options only: serialising cannot fail.
        serde_json::to_string(&doc).unwrap_or_default()
    }
}

/// The OpenAI model list of the configured public names, in configuration order:
/// `(model, owned_by)` pairs; `created` is when the configuration was loaded.
pub fn model_list<'a>(models: impl Iterator<Item = (&'a str, &'a str)>, created: u64) -> String {
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<Card<'a>>,
    }
    #[derive(Serialize)]
    struct Card<'a> {
        id: &'a str,
        object: &'static str,
        created: u64,
        owned_by: &'a str,
    }
    let data = models
        .map(|(id, owned_by)| Card {
            id,
            object: "model",
            created,
            owned_by,
        })
        .collect();
    serde_json::to_string(&List {
        object: "list",
        data,
    })
    .unwrap_or_default()
}

/// Why a request on an OpenAI path could not be routed by the metadata's model, decided
/// from the other keys `json_to_metadata` left and, where they say nothing, headers.
/// `model` is what the `model` key held (already known to name no configured model);
/// `meta` reads another key of the namespace, `header` a request header (each a host call,
/// made only when the answer depends on it).
pub fn unrouted(
    model: Option<&[u8]>,
    mut meta: impl FnMut(&str) -> Option<Vec<u8>>,
    mut header: impl FnMut(&str) -> Option<String>,
) -> Unrouted {
    if let Some(model) = model.filter(|m| !m.is_empty()) {
        // Only a string converts to the same bytes (a number's 8 bytes are not its text).
        if meta(keys::MODEL_TEXT).as_deref() == Some(model) {
            return Unrouted::Answer(ApiError::model_not_found(&String::from_utf8_lossy(model)));
        }
        return Unrouted::Answer(ApiError::model_not_string(scalar_kind(model)));
    }
    let not_post = |header: &mut dyn FnMut(&str) -> Option<String>| {
        header(":method").is_some_and(|m| m != "POST")
    };
    match meta(keys::BODY).as_deref() {
        // `model` present but empty ("" reads as nothing), missing, null or not a scalar.
        Some(keys::BODY_JSON) | Some(keys::BODY_NO_MODEL) => {
            if not_post(&mut header) {
                // A GET or other method without a body: not an OpenAI call to route.
                return Unrouted::Pass;
            }
            Unrouted::Answer(ApiError::model_missing())
        }
        // Not JSON, or (for json_to_metadata) not of an allowed content type.
        Some(keys::BODY_INVALID) => Unrouted::Answer(match encoding(&mut header) {
            Some(e) => ApiError::compressed(&e),
            None => match header("content-type") {
                ct if is_json_content_type(ct.as_deref()) => {
                    ApiError::invalid_json("the body is not a JSON document")
                }
                ct => ApiError::not_json_content(ct.as_deref()),
            },
        }),
        _ => {
            if not_post(&mut header) {
                return Unrouted::Pass;
            }
            let content_type = header("content-type");
            if is_json_content_type(content_type.as_deref()) {
                Unrouted::Misconfigured
            } else {
                Unrouted::Answer(ApiError::not_json_content(content_type.as_deref()))
            }
        }
    }
}

/// What to do with a request on an OpenAI path that names no configured model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unrouted {
    /// Answer it with this error.
    Answer(ApiError),
    /// Not an OpenAI call after all (no body, another method): leave it alone.
    Pass,
    /// A JSON request arrived without any of the metadata: the Envoy side is missing (or
    /// not scoped to this path, or does not allow this content type). Answered 500.
    Misconfigured,
}

/// `content-encoding` other than identity, if the request has one.
pub fn encoding(header: &mut dyn FnMut(&str) -> Option<String>) -> Option<String> {
    header("content-encoding").filter(|e| {
        let e = e.trim();
        !e.is_empty() && !e.eq_ignore_ascii_case("identity")
    })
}

/// `application/json`, with any parameters.
pub fn is_json_content_type(value: Option<&str>) -> bool {
    value
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// What a non-string `model` is, from the bytes a protobuf Value of it reads as.
fn scalar_kind(bytes: &[u8]) -> &'static str {
    match bytes.len() {
        1 => "a boolean",
        _ => "a number",
    }
}

/// A request body the filter accepted: where its model string is, and what it says.
#[derive(Debug, PartialEq, Eq)]
pub struct Inspected<'b> {
    /// The model, unescaped.
    pub model: Cow<'b, str>,
    /// The bytes of the model's JSON string, quotes included.
    pub span: Range<usize>,
    /// Whether the body has the sticky `bodyField` at its top level.
    pub has_sticky_field: bool,
}

/// Why a body was refused.
#[derive(Debug)]
pub enum BodyError {
    /// serde_json refused the document, or its top level is not an object.
    Json(serde_json::Error),
    DuplicateModel,
    MissingModel,
    /// `model` is a JSON value of this kind, not a string.
    NotAString(&'static str),
    EmptyModel,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Json(e) => write!(f, "{e}"),
            BodyError::DuplicateModel => f.write_str("duplicate field `model`"),
            BodyError::MissingModel => f.write_str("missing field `model`"),
            BodyError::NotAString(kind) => write!(f, "`model` is {kind}, not a string"),
            BodyError::EmptyModel => f.write_str("`model` is empty"),
        }
    }
}

impl BodyError {
    pub fn api_error(&self) -> ApiError {
        match self {
            BodyError::Json(e) => ApiError::invalid_json(&e.to_string()),
            BodyError::DuplicateModel => ApiError::duplicate_model(),
            BodyError::MissingModel | BodyError::EmptyModel => ApiError::model_missing(),
            BodyError::NotAString(kind) => ApiError::model_not_string(kind),
        }
    }
}

/// Parses a whole request body with serde_json: a JSON object whose top-level `model`
/// (keys compared after unescaping, so `"mod\u0065l"` is `model`) appears exactly once
/// and is a non-empty string. Any document serde_json refuses (syntax, nesting deeper
/// than its limit, numbers out of range, trailing data) is refused. `sticky_field`, if
/// given, is looked for at the top level too (duplicates of it are refused as well).
pub fn inspect<'b>(body: &'b [u8], sticky_field: Option<&str>) -> Result<Inspected<'b>, BodyError> {
    let duplicate = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let top = TopLevel {
        sticky: sticky_field,
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|top| de.end().map(|()| top));
    let (model, has_sticky_field) = match top {
        Ok(found) => found,
        Err(_) if duplicate.get() => return Err(BodyError::DuplicateModel),
        Err(e) => return Err(BodyError::Json(e)),
    };
    let raw = model.ok_or(BodyError::MissingModel)?;
    let text = raw.get();
    // The raw value borrows from `body`: its offset there is the span.
    let start = (text.as_ptr() as usize)
        .checked_sub(body.as_ptr() as usize)
        .ok_or(BodyError::MissingModel)?;
    let span = start..start + text.len();
    if body.get(span.clone()) != Some(text.as_bytes()) {
        return Err(BodyError::MissingModel);
    }
    // `text` is a JSON value serde_json has just validated: its first byte says its type.
    let kind = match text.as_bytes().first() {
        Some(b'"') => None,
        Some(b'{') => Some("an object"),
        Some(b'[') => Some("an array"),
        Some(b't' | b'f') => Some("a boolean"),
        Some(b'n') => Some("null"),
        _ => Some("a number"),
    };
    if let Some(kind) = kind {
        return Err(BodyError::NotAString(kind));
    }
    let model = StrValue
        .deserialize(&mut serde_json::Deserializer::from_str(text))
        .map_err(BodyError::Json)?;
    if model.is_empty() {
        return Err(BodyError::EmptyModel);
    }
    Ok(Inspected {
        model,
        span,
        has_sticky_field,
    })
}

/// The body with the bytes of `span` (a JSON string) replaced by `model` as a JSON string;
/// every other byte as it was.
pub fn rewrite(body: &[u8], span: Range<usize>, model: &str) -> Vec<u8> {
    // A string serialises infallibly.
    let quoted = serde_json::to_string(model).unwrap_or_default();
    let before = body.get(..span.start).unwrap_or_default();
    let after = body.get(span.end..).unwrap_or_default();
    let mut out = Vec::with_capacity(before.len() + quoted.len() + after.len());
    out.extend_from_slice(before);
    out.extend_from_slice(quoted.as_bytes());
    out.extend_from_slice(after);
    out
}

/// The top-level object: `model` as a borrowed raw value, the sticky field's presence,
/// everything else skipped (and still checked by serde_json).
struct TopLevel<'f> {
    sticky: Option<&'f str>,
    duplicate: &'f Cell<bool>,
}

enum Key {
    Model,
    Sticky,
    Other,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = (Option<&'de RawValue>, bool);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = (Option<&'de RawValue>, bool);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut model: Option<&'de RawValue> = None;
        let mut sticky = false;
        while let Some(key) = map.next_key_seed(KeySeed(self.sticky))? {
            match key {
                Key::Model => {
                    if model.is_some() {
                        self.duplicate.set(true);
                        return Err(de::Error::duplicate_field("model"));
                    }
                    model = Some(map.next_value()?);
                }
                Key::Sticky => {
                    if sticky {
                        return Err(de::Error::custom("duplicate sticky field"));
                    }
                    sticky = true;
                    map.next_value::<IgnoredAny>()?;
                }
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((model, sticky))
    }
}

/// A key of the top-level object, compared after serde_json unescaped it.
struct KeySeed<'f>(Option<&'f str>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
        Ok(if key == "model" {
            Key::Model
        } else if self.0 == Some(key) {
            Key::Sticky
        } else {
            Key::Other
        })
    }
}

/// A JSON string, borrowed when it has no escapes.
struct StrValue;

impl<'de> DeserializeSeed<'de> for StrValue {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrValue {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests;
