//! `make bench`, variant (c3): the floor of variant e. Exactly the host calls
//! canary-router makes per request there, in its order, with no routing logic: read
//! `:authority`, the tag header (absent in the bench), the header rule's `traffic`
//! (absent) and the sticky `x-user` (present), replace the cluster header; on the
//! response replace `x-canary-revision`, then read `:status` (metrics). Seven host calls
//! per request; what canary-router costs beyond this figure is its own work.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

/// The bench config's cluster for this variant (bench/bench.py).
const CLUSTER: &str = "bench-c3";
/// A revision name as long as the ones canary-router writes in variant e.
const REVISION: &str = "bench-c3-predictor-00001";

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(FloorE { status: 0 }) });
}}

struct FloorE {
    /// The response's first status digit, kept as canary-router keeps its response class.
    status: u8,
}

impl Context for FloorE {}

impl HttpContext for FloorE {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Read as canary-router reads them (bytes); every value takes part in the
        // decision, so none is unused.
        let authority = self.get_http_request_header_bytes(":authority");
        let tag = self.get_http_request_header_bytes("x-canary-tag");
        let rule = self.get_http_request_header_bytes("traffic");
        let user = self.get_http_request_header_bytes("x-user");
        if authority.is_some_and(|a| !a.is_empty())
            && (tag.is_some() || rule.is_some() || user.is_some())
        {
            self.set_http_request_header("x-canary-cluster", Some(CLUSTER));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("x-canary-revision", Some(REVISION));
        let status = self.get_http_response_header_bytes(":status");
        self.status = status.and_then(|s| s.first().copied()).unwrap_or(0);
        Action::Continue
    }
}
