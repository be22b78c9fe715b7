//! gRPC on the request path: which requests are gRPC calls, where a call's status is
//! read, and which statuses count as failures.
//!
//! A gRPC call that fails is still an HTTP 200: its outcome is `grpc-status`, sent in the
//! trailers after the response messages, or in the one HEADERS frame of a trailers-only
//! answer (an immediate error: KServe's INTERNAL for an exception in `predict`, and
//! Envoy's own UNAVAILABLE for a refused or reset upstream). Reading it costs a host call,
//! so the filter reads it only where it can be: in the headers of a 200 that ends the
//! stream, or in the trailers of a 200 that does not.

/// `content-type` of a gRPC call starts with this (`application/grpc`,
/// `application/grpc+proto`, ...). Media types compare case-insensitively.
pub const CONTENT_TYPE: &str = "application/grpc";

pub const OK: u32 = 0;
pub const UNKNOWN: u32 = 2;
/// The highest status code gRPC defines (UNAUTHENTICATED).
pub const MAX_CODE: u32 = 16;
/// UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS: the server or the
/// path to it failed. Codes such as INVALID_ARGUMENT or NOT_FOUND are the caller's
/// errors (what 4xx is to HTTP) and say nothing about the revision.
pub const DEFAULT_ERROR_CODES: [u32; 5] = [2, 4, 13, 14, 15];

/// Whether a request with this `content-type` is a gRPC call.
pub fn is_grpc(content_type: &[u8]) -> bool {
    content_type
        .get(..CONTENT_TYPE.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(CONTENT_TYPE.as_bytes()))
}

/// The status a `grpc-status` value gives: its code when it is one gRPC defines, else
/// UNKNOWN, as gRPC clients read a status from an error space they do not know.
pub fn status(value: &[u8]) -> u32 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&code| code <= MAX_CODE)
        .unwrap_or(UNKNOWN)
}

/// The statuses that count as a failure of the revision that answered (`grpcErrorCodes`),
/// as a bit set: one test per answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCodes(u32);

impl ErrorCodes {
    /// The set of `codes`; codes outside 1..=16 are not gRPC failures and are left out
    /// (the configuration step refuses them with an error first).
    pub fn new(codes: &[u32]) -> ErrorCodes {
        ErrorCodes(
            codes
                .iter()
                .filter(|&&c| (1..=MAX_CODE).contains(&c))
                .fold(0, |set, &c| set | 1 << c),
        )
    }

    pub fn contains(self, code: u32) -> bool {
        code <= MAX_CODE && self.0 & (1 << code) != 0
    }

    /// What a call that ended with `code` counts as.
    pub fn outcome(self, code: u32) -> Outcome {
        if code == OK {
            Outcome::Ok
        } else if self.contains(code) {
            Outcome::Failed
        } else {
            Outcome::Other
        }
    }

    /// The codes in the set, in increasing order.
    pub fn codes(self) -> impl Iterator<Item = u32> {
        (1..=MAX_CODE).filter(move |&c| self.contains(c))
    }
}

impl Default for ErrorCodes {
    fn default() -> Self {
        ErrorCodes::new(&DEFAULT_ERROR_CODES)
    }
}

/// How a gRPC call ended, as the health windows and metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// One of the error codes: counts against the revision (ejection, rollback).
    Failed,
    /// Any other code: the caller's error, like a 4xx.
    Other,
}

/// Where the status of a counted response is, from what the response headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAt {
    /// A 200 that ends the stream: a trailers-only answer carries `grpc-status` here
    /// (anything else, e.g. a REST 200 without a body, simply has none).
    Headers,
    /// A 200 with more to come: a gRPC answer ends with trailers that carry it (a REST
    /// answer has no trailers, and then nothing more is read).
    Trailers,
    /// Any other HTTP status: gRPC answers only ever use 200, so the HTTP class says it
    /// all (a 5xx counts as an error as it is).
    Nowhere,
}

pub fn status_at(http_status: u16, end_of_stream: bool) -> StatusAt {
    match (http_status, end_of_stream) {
        (200, true) => StatusAt::Headers,
        (200, false) => StatusAt::Trailers,
        _ => StatusAt::Nowhere,
    }
}

/// The `grpc-message` of a local reply to a gRPC call: Envoy sends the body of the
/// filter's local reply there, and the newline that ends a text body is no part of the
/// message a client should print.
pub fn local_reply_message(body: &str) -> &str {
    body.trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_calls_by_content_type() {
        for ct in [
            &b"application/grpc"[..],
            b"application/grpc+proto",
            b"application/grpc+json",
            b"Application/GRPC",
            b"application/grpc-web",
        ] {
            assert!(is_grpc(ct), "{ct:?}");
        }
        for ct in [
            &b"application/json"[..],
            b"application/gr",
            b"",
            b"text/grpc",
        ] {
            assert!(!is_grpc(ct), "{ct:?}");
        }
    }

    #[test]
    fn statuses_outside_the_known_codes_read_as_unknown() {
        assert_eq!(status(b"0"), OK);
        assert_eq!(status(b"13"), 13);
        assert_eq!(status(b"16"), 16);
        for odd in [
            &b"17"[..],
            b"",
            b"-1",
            b"1 3",
            b"x",
            b"99999999999",
            b"\xff",
        ] {
            assert_eq!(status(odd), UNKNOWN, "{odd:?}");
        }
    }

    #[test]
    fn default_error_codes_are_the_servers_failures() {
        let codes = ErrorCodes::default();
        assert_eq!(codes.codes().collect::<Vec<_>>(), DEFAULT_ERROR_CODES);
        assert_eq!(codes.outcome(0), Outcome::Ok);
        assert_eq!(codes.outcome(13), Outcome::Failed);
        assert_eq!(codes.outcome(14), Outcome::Failed);
        // INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, UNAUTHENTICATED: the caller's.
        for code in [3, 5, 8, 16] {
            assert_eq!(codes.outcome(code), Outcome::Other, "{code}");
        }
        // A status read from a malformed value is UNKNOWN, a failure by default.
        assert_eq!(codes.outcome(status(b"oops")), Outcome::Failed);
    }

    #[test]
    fn configured_codes_replace_the_defaults() {
        let codes = ErrorCodes::new(&[8, 16, 14]);
        assert_eq!(codes.codes().collect::<Vec<_>>(), [8, 14, 16]);
        assert_eq!(codes.outcome(13), Outcome::Other);
        assert_eq!(codes.outcome(8), Outcome::Failed);
        // OK is never a failure; codes past 16 are not in any set.
        assert_eq!(ErrorCodes::new(&[0, 17, 40]), ErrorCodes::new(&[]));
        assert!(!ErrorCodes::new(&[16]).contains(48));
    }

    #[test]
    fn where_the_status_is() {
        assert_eq!(status_at(200, true), StatusAt::Headers);
        assert_eq!(status_at(200, false), StatusAt::Trailers);
        assert_eq!(status_at(503, true), StatusAt::Nowhere);
        assert_eq!(status_at(204, false), StatusAt::Nowhere);
    }

    #[test]
    fn local_reply_messages_lose_their_newline() {
        assert_eq!(
            local_reply_message("revision r2 of service s is not ready\n"),
            "revision r2 of service s is not ready"
        );
    }
}
