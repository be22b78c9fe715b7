//! `make bench`, variant (c1): sets one request header naming a fixed cluster, for a
//! `cluster_header` route. The least a filter that picks the cluster must do: one host
//! call (`proxy_replace_header_map_value`) per request.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

/// The bench config's cluster for this variant (bench/bench.py).
const CLUSTER: &str = "bench-c1";

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(SetHeader) });
}}

struct SetHeader;

impl Context for SetHeader {}

impl HttpContext for SetHeader {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.set_http_request_header("x-canary-cluster", Some(CLUSTER));
        Action::Continue
    }
}
