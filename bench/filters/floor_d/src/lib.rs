//! `make bench`, variant (c2): the floor of variant d. Exactly the host calls
//! canary-router makes per request there, with no routing logic: read `:authority`,
//! replace the cluster header (for a `cluster_header` route), and on the response
//! replace `x-canary-revision`. Three host calls per request; what canary-router costs
//! beyond this figure is its own work (lookup, split, bookkeeping).

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

/// The bench config's cluster for this variant (bench/bench.py).
const CLUSTER: &str = "bench-c2";
/// A revision name as long as the ones canary-router writes in variant d.
const REVISION: &str = "bench-c2-predictor-00001";

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(FloorD) });
}}

struct FloorD;

impl Context for FloorD {}

impl HttpContext for FloorD {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // Read as canary-router reads it (bytes); the value decides, so it is used.
        let authority = self.get_http_request_header_bytes(":authority");
        if authority.is_some_and(|a| !a.is_empty()) {
            self.set_http_request_header("x-canary-cluster", Some(CLUSTER));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_response_header("x-canary-revision", Some(REVISION));
        Action::Continue
    }
}
