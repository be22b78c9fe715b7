//! gRPC glue: reading a call's status from the header maps Envoy hands over, the local
//! reply to a gRPC call, and gRPC probes. What statuses mean lives in `route::grpc`,
//! what a probe sends and how its answer reads in `health::grpc_probe`.
//!
//! Host calls: one per map read. The request path reads `grpc-status` only from a
//! counted response that can carry it (see `route::grpc::status_at`), and the request's
//! `content-type` only when the filter answers the request itself.

use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

use crate::health::grpc_probe::{GrpcProbe, ProbeMethod};
use crate::route::grpc;

/// The gRPC status in `map`, when it has `grpc-status` (one host call).
pub(super) fn status_in(map: MapType) -> Option<u32> {
    let value = hostcalls::get_map_value_bytes(map, "grpc-status").ok()??;
    Some(grpc::status(&value))
}

/// Whether the request being handled is a gRPC call (one host call).
pub(super) fn is_grpc_request() -> bool {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "content-type")
        .ok()
        .flatten()
        .is_some_and(|ct| grpc::is_grpc(&ct))
}

/// The status of an answer to a `dispatch_http_call` (a shadow copy): in its headers for
/// a trailers-only answer, else in its trailers. `None` for an answer that is not gRPC.
pub(super) fn call_status(num_trailers: usize) -> Option<u32> {
    status_in(MapType::HttpCallResponseHeaders).or_else(|| {
        (num_trailers > 0)
            .then(|| status_in(MapType::HttpCallResponseTrailers))
            .flatten()
    })
}

/// The local reply when a revision a tag or rule chose is out of rotation. HTTP: 503,
/// the message as a text body. gRPC: the same 503, which Envoy turns into a trailers-only
/// UNAVAILABLE with the body as `grpc-message` (and `content-type: application/grpc`),
/// so the body is the bare message.
pub(super) fn unavailable_reply(revision_header: &str, revision: &str, message: &str) {
    let (body, content_type) = if is_grpc_request() {
        (grpc::local_reply_message(message), None)
    } else {
        (message, Some(("content-type", "text/plain")))
    };
    let mut headers = vec![(revision_header, revision)];
    headers.extend(content_type);
    let _ = hostcalls::send_http_response(503, headers, Some(body.as_bytes()));
}

/// Sends a gRPC probe to `target` (a serialized GrpcService, `grpc_probe::upstream`;
/// never a bare cluster name, which Envoy would parse as one first). The answer comes to
/// the root context's `on_grpc_call_response`.
pub(super) fn dispatch_probe(
    target: Option<&str>,
    probe: &GrpcProbe,
    timeout: Duration,
) -> Result<u32, Status> {
    let target = target.ok_or(Status::BadArgument)?;
    let (service, method) = probe.method.service_and_method();
    let message = probe.method.request(&probe.model);
    hostcalls::dispatch_grpc_call(
        target,
        service,
        method,
        vec![("user-agent", b"canary-router-probe")],
        Some(&message),
        timeout,
    )
}

/// Whether a gRPC probe's answer says ready: status OK, and an answer that reads as
/// ready (one host call to read it).
pub(super) fn probe_ready(method: ProbeMethod, status_code: u32, size: usize) -> bool {
    if status_code != grpc::OK {
        return false;
    }
    let answer = if size == 0 {
        Vec::new()
    } else {
        match hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(_) => return false,
        }
    };
    method.ready(&answer)
}
