//! Shadow traffic (`mirror`): which requests are copied, what a copy carries, and the
//! per-VM outbox that the root context sends copies from. A copy never delays or changes
//! the request it was taken from: the body is read chunk by chunk as it passes, and the
//! copy is sent by the root context on its next tick (Envoy drops the answer to a call
//! made from a request context once that request finishes, and we count the answers).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024;
pub const MAX_BODY_BYTES_LIMIT: u64 = 16 * 1024 * 1024;
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Copies being captured, queued or waiting for an answer, per VM. A slow or hanging
/// shadow must not grow memory without bound: beyond this, copies are skipped.
pub const OUTSTANDING_LIMIT: usize = 512;

/// A service's `mirror` setting, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub revision: usize,
    /// Share of split-routed requests copied, out of 10,000.
    pub share: u32,
    pub max_body: usize,
    pub timeout_ms: u64,
}

impl Mirror {
    /// Whether a request with this draw (uniform in 0..10,000) is copied.
    pub fn samples(&self, draw: u32) -> bool {
        draw < self.share
    }
}

/// Why a sampled request was not copied; each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The body was larger than `maxBodyBytes`.
    TooLarge,
    /// `OUTSTANDING_LIMIT` copies were already outstanding on this VM.
    Busy,
    /// The mirror revision is out of rotation (not ready or ejected).
    Unavailable,
}

impl Skip {
    pub const ALL: [Skip; 3] = [Skip::TooLarge, Skip::Busy, Skip::Unavailable];

    pub fn metric(self) -> &'static str {
        match self {
            Skip::TooLarge => "mirror_skipped_too_large",
            Skip::Busy => "mirror_skipped_busy",
            Skip::Unavailable => "mirror_skipped_unavailable",
        }
    }
}

/// Headers a copy never carries: hop-by-hop ones (RFC 9110 section 7.6.1), the framing
/// Envoy works out for the call itself, and `expect` (the body is already complete).
/// `te` is hop-by-hop too, but see `kept_te`.
const NOT_COPIED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "expect",
];

/// `te: trailers` is copied (the one `te` HTTP/2 allows, which Envoy forwards upstream
/// too): gRPC servers refuse a call without it, with HTTP 200 and a gRPC error. Any other
/// `te` is hop-by-hop and dropped.
fn kept_te(value: &[u8]) -> bool {
    value.eq_ignore_ascii_case(b"trailers")
}

/// The headers of a copy: the client's request as the filter received it, without the
/// headers above and the filter's own (`own`), with `:authority` replaced when the mirror
/// revision has a host, and the `revision` header set when given (the upstream revision
/// header). Values that are not UTF-8 are replaced lossily (the call takes text).
pub fn copy_headers(
    headers: Vec<(String, Vec<u8>)>,
    own: &[&str],
    authority: Option<&str>,
    revision: Option<(&str, &str)>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .into_iter()
        .filter(|(name, value)| {
            !NOT_COPIED.contains(&name.as_str())
                && !own.contains(&name.as_str())
                && (name != "te" || kept_te(value))
        })
        .map(|(name, value)| {
            let value = match (name.as_str(), authority) {
                (":authority", Some(a)) => a.to_owned(),
                _ => String::from_utf8(value)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            };
            (name, value)
        })
        .collect();
    if let Some((name, value)) = revision {
        out.push((name.to_owned(), value.to_owned()));
    }
    out
}

/// Whether a declared `content-length` already rules the copy out.
pub fn declared_too_large(content_length: Option<&str>, max_body: usize) -> bool {
    content_length
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > max_body as u64)
}

/// Holds one of the outbox's `OUTSTANDING_LIMIT` places; gives it back when dropped,
/// whatever became of the copy (sent and answered, too large, request aborted). It holds
/// the count, not the outbox: a queued copy pointing back at its outbox would be a cycle
/// that leaks the copies of a configuration replaced before they were sent.
#[derive(Debug)]
pub struct Ticket {
    outstanding: Rc<Cell<usize>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let n = self.outstanding.get();
        self.outstanding.set(n.saturating_sub(1));
    }
}

/// A copy being taken from a request that is still arriving.
#[derive(Debug)]
pub struct Capture {
    pub service: usize,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    max_body: usize,
    ticket: Ticket,
}

impl Capture {
    /// Appends a body chunk; `Err` once the body outgrows `maxBodyBytes` (the copy is
    /// then dropped and counted as skipped).
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), Skip> {
        if self.body.len().saturating_add(chunk.len()) > self.max_body {
            return Err(Skip::TooLarge);
        }
        self.body.extend_from_slice(chunk);
        Ok(())
    }

    /// The request is complete: queue the copy for the next tick.
    pub fn finish(self, outbox: &Outbox) {
        outbox.queue.borrow_mut().push(Shadow {
            service: self.service,
            headers: self.headers,
            body: self.body,
            ticket: self.ticket,
        });
    }
}

/// A complete copy, waiting for the root context.
#[derive(Debug)]
pub struct Shadow {
    pub service: usize,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Kept until the answer comes (or the call fails).
    pub ticket: Ticket,
}

/// Per VM and configuration: shared by the root context and its HTTP contexts.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: RefCell<Vec<Shadow>>,
    outstanding: Rc<Cell<usize>>,
    /// Skips since the last flush, by service and reason (rare: a short list).
    skips: RefCell<Vec<(usize, Skip, u64)>>,
}

impl Outbox {
    /// Starts a copy of a sampled request, or says why not.
    pub fn start(
        &self,
        service: usize,
        headers: Vec<(String, String)>,
        max_body: usize,
    ) -> Result<Capture, Skip> {
        let n = self.outstanding.get();
        if n >= OUTSTANDING_LIMIT {
            return Err(Skip::Busy);
        }
        self.outstanding.set(n + 1);
        Ok(Capture {
            service,
            headers,
            body: Vec::new(),
            max_body,
            ticket: Ticket {
                outstanding: Rc::clone(&self.outstanding),
            },
        })
    }

    pub fn skipped(&self, service: usize, reason: Skip) {
        let mut skips = self.skips.borrow_mut();
        match skips
            .iter_mut()
            .find(|(s, r, _)| *s == service && *r == reason)
        {
            Some((_, _, n)) => *n += 1,
            None => skips.push((service, reason, 1)),
        }
    }

    /// The copies queued since the last call, oldest first.
    pub fn take_queued(&self) -> Vec<Shadow> {
        std::mem::take(&mut *self.queue.borrow_mut())
    }

    /// `(service, reason, count)` since the last call.
    pub fn take_skips(&self) -> Vec<(usize, Skip, u64)> {
        std::mem::take(&mut *self.skips.borrow_mut())
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    }

    #[test]
    fn sampling_by_share() {
        let m = Mirror {
            revision: 0,
            share: 2_500,
            max_body: 10,
            timeout_ms: 1,
        };
        assert_eq!((0..10_000).filter(|&d| m.samples(d)).count(), 2_500);
        let off = Mirror {
            share: 0,
            ..m.clone()
        };
        assert!(!(0..10_000).any(|d| off.samples(d)));
        let all = Mirror { share: 10_000, ..m };
        assert!((0..10_000).all(|d| all.samples(d)));
    }

    #[test]
    fn copies_drop_hop_by_hop_and_own_headers() {
        let headers = h(&[
            (":method", b"POST"),
            (":path", b"/v1/models/iris:predict"),
            (":authority", b"iris.example.com"),
            ("content-length", b"12"),
            ("transfer-encoding", b"chunked"),
            ("connection", b"keep-alive"),
            ("expect", b"100-continue"),
            ("x-canary-cluster", b"spoofed"),
            ("x-canary-tag", b"latest"),
            ("x-request-id", b"abc"),
            ("x-user", b"caf\xe9"),
        ]);
        let out = copy_headers(
            headers,
            &["x-canary-cluster", "x-canary-tag"],
            Some("shadow.internal"),
            Some(("x-canary-revision", "iris-shadow")),
        );
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                ":method",
                ":path",
                ":authority",
                "x-request-id",
                "x-user",
                "x-canary-revision"
            ]
        );
        assert_eq!(out[2].1, "shadow.internal");
        assert_eq!(out[4].1, "caf\u{fffd}");
        assert_eq!(out[5].1, "iris-shadow");
        let kept = copy_headers(h(&[(":authority", b"iris.example.com")]), &[], None, None);
        assert_eq!(kept[0].1, "iris.example.com");
    }

    #[test]
    fn grpc_copies_keep_te_trailers() {
        let grpc = h(&[
            (":method", b"POST"),
            (":path", b"/inference.GRPCInferenceService/ModelInfer"),
            ("content-type", b"application/grpc"),
            ("te", b"trailers"),
            ("grpc-timeout", b"5S"),
        ]);
        let out = copy_headers(grpc, &[], None, None);
        let names: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [":method", ":path", "content-type", "te", "grpc-timeout"]
        );
        let other = copy_headers(h(&[("te", b"gzip, trailers")]), &[], None, None);
        assert!(other.is_empty(), "{other:?}");
        let upper = copy_headers(h(&[("te", b"Trailers")]), &[], None, None);
        assert_eq!(upper.len(), 1);
    }

    #[test]
    fn declared_length() {
        assert!(declared_too_large(Some("11"), 10));
        assert!(!declared_too_large(Some("10"), 10));
        assert!(!declared_too_large(None, 10));
        assert!(!declared_too_large(Some("nonsense"), 10));
        // Beyond u64: Envoy refuses such a request; the streaming limit would catch it.
        assert!(!declared_too_large(Some("99999999999999999999"), 10));
    }

    #[test]
    fn capture_limits_the_body_and_queues_when_done() {
        let outbox = Rc::new(Outbox::default());
        let mut c = outbox.start(3, vec![], 5).unwrap();
        assert_eq!(c.push(b"abc"), Ok(()));
        assert_eq!(c.push(b"de"), Ok(()));
        assert_eq!(c.push(b"f"), Err(Skip::TooLarge));
        assert_eq!(outbox.outstanding(), 1);
        c.finish(&outbox);
        let queued = outbox.take_queued();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].body, b"abcde");
        assert_eq!(queued[0].service, 3);
        assert_eq!(outbox.outstanding(), 1, "held until the answer");
        drop(queued);
        assert_eq!(outbox.outstanding(), 0);
        assert!(outbox.take_queued().is_empty());
    }

    #[test]
    fn outstanding_copies_are_bounded_and_released() {
        let outbox = Rc::new(Outbox::default());
        let held: Vec<Capture> = (0..OUTSTANDING_LIMIT)
            .map(|i| outbox.start(i, vec![], 0).unwrap())
            .collect();
        assert_eq!(outbox.start(0, vec![], 0).err(), Some(Skip::Busy));
        drop(held);
        assert_eq!(outbox.outstanding(), 0);
        assert!(outbox.start(0, vec![], 0).is_ok());
    }

    #[test]
    fn a_dropped_outbox_frees_its_queued_copies() {
        let outbox = Rc::new(Outbox::default());
        let weak = Rc::downgrade(&outbox);
        let c = outbox.start(0, vec![], 0).unwrap();
        c.finish(&outbox);
        let late = outbox.start(1, vec![], 0).unwrap();
        drop(outbox);
        assert!(weak.upgrade().is_none(), "no cycle through the queued copy");
        drop(late);
    }

    #[test]
    fn skips_are_counted_and_drained() {
        let outbox = Outbox::default();
        outbox.skipped(1, Skip::TooLarge);
        outbox.skipped(1, Skip::TooLarge);
        outbox.skipped(2, Skip::Busy);
        let skips = outbox.take_skips();
        assert_eq!(skips, [(1, Skip::TooLarge, 2), (2, Skip::Busy, 1)]);
        assert!(outbox.take_skips().is_empty());
        assert_eq!(
            Skip::ALL.map(Skip::metric),
            [
                "mirror_skipped_too_large",
                "mirror_skipped_busy",
                "mirror_skipped_unavailable"
            ]
        );
    }
}
