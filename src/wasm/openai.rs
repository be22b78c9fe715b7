//! The glue for OpenAI-style requests (the logic is in `route::openai`): in the headers
//! callback, read the model Envoy's json_to_metadata left in dynamic metadata and pick
//! the service; in the body callback (the whole body at once: json_to_metadata held it),
//! check the body with serde_json and rewrite the model for the chosen revision.
//!
//! Host calls, only for requests on the OpenAI paths (a request elsewhere costs what it
//! did): `content-encoding` (one read), the `model` key (one property read), and when
//! routed, `content-length` removed if the body will be rewritten; the sticky body field
//! (one property read) where it decides; in the body callback the body (one read) and,
//! when rewritten, the new body (one write). Requests the filter answers read what their
//! answer depends on (`model_text`, `body`, `:method`, `content-type`).
//!
//! Request headers are neither read nor written after the headers callback: the host
//! refuses both then, and the SDK panics on the refusal.

use std::sync::atomic::{AtomicBool, Ordering};

use log::{error, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, MapType};

use super::filter::header;
use crate::route::mirror::{Capture, Outbox};
use crate::route::openai::{self, keys, ApiError, OpenAi, Unrouted};
use crate::route::{Choice, HostRoute, Router};

/// "The Envoy side is missing" is logged once per VM, not once per request.
static MISCONFIGURED_LOGGED: AtomicBool = AtomicBool::new(false);
static STICKY_FIELD_LOGGED: AtomicBool = AtomicBool::new(false);

/// One key of the request's metadata namespace.
fn metadata(namespace: &str, key: &str) -> Option<Vec<u8>> {
    hostcalls::get_property(vec!["metadata", "filter_metadata", namespace, key])
        .ok()
        .flatten()
}

/// A local reply in OpenAI's error shape.
pub fn answer(error: &ApiError, extra: Option<(&str, &str)>) {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(extra);
    let _ = hostcalls::send_http_response(
        u32::from(error.status),
        headers,
        Some(error.body().as_bytes()),
    );
}

/// What the headers callback does with a request, OpenAI-wise.
pub enum Start<'r> {
    /// Not an OpenAI request (or one the filter leaves to the usual routing).
    Other,
    /// Answered here: an error, or the model list.
    Answered,
    /// Route on this route; the body is checked (and maybe rewritten) when it arrives.
    Body(&'r HostRoute, Pending),
}

/// What the headers callback learnt, for the body callback.
pub struct Pending {
    /// The model as Envoy's parser read it: the body's own must be the same.
    model: Vec<u8>,
}

/// Decides, before the body, what becomes of a request: `route` is what its host (or
/// model path) selected, `path` the `:path` if already read.
pub fn start<'r>(
    router: &'r Router,
    openai: &OpenAi,
    route: Option<&'r HostRoute>,
    path: &mut Option<String>,
) -> Start<'r> {
    // A host with a service: only the services that read bodies care about the path.
    if route.is_some_and(|r| !router.reads_bodies(r.service())) {
        return Start::Other;
    }
    if path.is_none() {
        *path = header(MapType::HttpRequestHeaders, ":path");
    }
    let Some(p) = path.as_deref() else {
        return Start::Other;
    };
    if route.is_none() && openai.is_list_path(p) {
        if header(MapType::HttpRequestHeaders, ":method").as_deref() != Some("GET") {
            return Start::Other;
        }
        let _ = hostcalls::send_http_response(
            200,
            vec![("content-type", "application/json")],
            Some(openai.model_list().as_bytes()),
        );
        return Start::Answered;
    }
    if !openai.is_model_path(p) {
        return Start::Other;
    }
    let mut read = |name: &str| header(MapType::HttpRequestHeaders, name);
    if let Some(encoding) = openai::encoding(&mut read) {
        answer(&ApiError::compressed(&encoding), None);
        return Start::Answered;
    }
    let namespace = openai.namespace();
    let model = metadata(namespace, keys::MODEL);
    let selected = model.as_deref().and_then(|m| match route {
        // By host: the model must be one this service serves.
        Some(r) => router.serves_model(r.service(), m).then_some(r),
        None => router.lookup_body_model(m),
    });
    if let (Some(route), Some(model)) = (selected, model.as_ref()) {
        return Start::Body(
            route,
            Pending {
                model: model.clone(),
            },
        );
    }
    match openai::unrouted(model.as_deref(), |k| metadata(namespace, k), read) {
        Unrouted::Answer(e) => answer(&e, None),
        // No body, another method: not the filter's to answer; routed by host as usual.
        Unrouted::Pass => return Start::Other,
        Unrouted::Misconfigured => {
            if !MISCONFIGURED_LOGGED.swap(true, Ordering::Relaxed) {
                error!(
                    "a JSON request on an OpenAI path ({}) arrived without metadata in namespace {:?}: \
                     json_to_metadata must stand before canary-router, scoped to openai.paths, write \
                     into openai.metadataNamespace and allow the request's content-type (envoy/envoy.yaml \
                     has the entry); answering 500 (logged once per VM)",
                    openai::without_query(p),
                    namespace
                );
            }
            answer(&ApiError::gateway_misconfigured(), None);
        }
    }
    Start::Answered
}

/// A sticky body field's value, for `Router::decide_with`.
pub fn body_field(openai: &OpenAi, field: &str) -> Option<String> {
    metadata(openai.namespace(), field).map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// A routed OpenAI request, between its headers and its body.
pub struct Llm {
    pending: Pending,
    choice: Choice,
    /// Bytes buffered so far (a body followed by trailers arrives in two callbacks).
    buffered: usize,
}

impl Llm {
    /// The request was routed to `choice`: a body that will be rewritten loses its
    /// `content-length` now (Envoy then sends it chunked), the last moment headers change.
    pub fn routed(router: &Router, pending: Pending, choice: Choice) -> Llm {
        let renamed = router
            .revision_model(choice)
            .is_some_and(|m| m.as_bytes() != pending.model.as_slice());
        if renamed {
            let _ =
                hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, "content-length", None);
        }
        Llm {
            pending,
            choice,
            buffered: 0,
        }
    }

    /// The body callback: holds the body until it is complete, then checks it, hands a
    /// copy to the shadow capture (with the mirror revision's model) and rewrites the
    /// model for the chosen revision. `Err(())` when it answered the request itself.
    pub fn on_body(
        &mut self,
        router: &Router,
        body_size: usize,
        end_of_stream: bool,
        capture: &mut Option<Capture>,
        outbox: &Outbox,
    ) -> Result<Action, ()> {
        if !end_of_stream {
            // Buffered by Envoy until the trailers.
            self.buffered = body_size;
            return Ok(Action::Pause);
        }
        self.finish(router, body_size, capture, outbox)?;
        Ok(Action::Continue)
    }

    /// The trailers arrived after a body the filter holds.
    pub fn on_trailers(
        &self,
        router: &Router,
        capture: &mut Option<Capture>,
        outbox: &Outbox,
    ) -> Result<Action, ()> {
        self.finish(router, self.buffered, capture, outbox)?;
        Ok(Action::Continue)
    }

    /// The body is complete (`body_size` bytes buffered): check, copy, rewrite.
    fn finish(
        &self,
        router: &Router,
        body_size: usize,
        capture: &mut Option<Capture>,
        outbox: &Outbox,
    ) -> Result<(), ()> {
        let Some(openai) = router.openai() else {
            return Ok(());
        };
        if body_size > openai.max_body() {
            answer(&ApiError::too_large(openai.max_body()), None);
            return Err(());
        }
        let body = if body_size == 0 {
            Vec::new()
        } else {
            hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        let sticky_field = router
            .services()
            .get(self.choice.service)
            .and_then(|s| s.sticky_body_field());
        let found = match openai::inspect(&body, sticky_field) {
            Ok(found) => found,
            Err(e) => {
                answer(&e.api_error(), None);
                return Err(());
            }
        };
        if found.model.as_bytes() != self.pending.model.as_slice() {
            answer(&ApiError::model_mismatch(), None);
            return Err(());
        }
        if let Some(field) = sticky_field.filter(|_| found.has_sticky_field) {
            if metadata(openai.namespace(), field).is_none()
                && !STICKY_FIELD_LOGGED.swap(true, Ordering::Relaxed)
            {
                warn!(
                    "sticky.bodyField {field:?} is in request bodies but not in metadata namespace {:?}: \
                     add a json_to_metadata rule for it (users are split at random until then; logged once per VM)",
                    openai.namespace()
                );
            }
        }
        if let Some(capture) = capture.take() {
            let copy = match router.mirror(self.choice.service) {
                Some((mirror, _)) => renamed(router, &body, &found, mirror.revision, &self.choice),
                None => None,
            };
            let mut capture = capture;
            match capture.push(copy.as_deref().unwrap_or(&body)) {
                Ok(()) => capture.finish(outbox),
                Err(reason) => outbox.skipped(capture.service, reason),
            }
        }
        if let Some(new) = renamed(router, &body, &found, self.choice.revision, &self.choice) {
            let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, &new);
        }
        Ok(())
    }
}

/// The body as `revision` of the chosen service receives it: `None` when that is the
/// client's (no `model` of its own, or the same name).
fn renamed(
    router: &Router,
    body: &[u8],
    found: &openai::Inspected<'_>,
    revision: usize,
    choice: &Choice,
) -> Option<Vec<u8>> {
    let target = router.revision_model(Choice {
        service: choice.service,
        revision,
    })?;
    (target != found.model).then(|| openai::rewrite(body, found.span.clone(), target))
}
