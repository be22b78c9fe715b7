//! `make bench`, the floor of the LLM variants (bench/llm.py): behind Envoy's
//! json_to_metadata (the entry of envoy/envoy.yaml), read the body's model from dynamic
//! metadata and set the cluster header for a `cluster_header` route. The least any
//! filter that routes by body model through this Envoy chain must do: two host calls
//! per request, no body callback.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

/// The bench config's cluster for this variant (bench/llm.py).
const CLUSTER: &str = "bench-llm-floor";

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(FloorOpenAi) });
}}

struct FloorOpenAi;

impl Context for FloorOpenAi {}

impl HttpContext for FloorOpenAi {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        // The value decides, so it is used.
        let model = self.get_property(vec!["metadata", "filter_metadata", "canary-router", "model"]);
        if model.is_some_and(|m| !m.is_empty()) {
            self.set_http_request_header("x-canary-cluster", Some(CLUSTER));
        }
        Action::Continue
    }
}
