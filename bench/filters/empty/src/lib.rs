//! `make bench`, variant (c): an empty proxy-wasm filter. It costs what Envoy spends on
//! any wasm filter: the VM calls for context creation and each callback, no host call.

use proxy_wasm::traits::{Context, HttpContext};

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Empty) });
}}

struct Empty;

impl Context for Empty {}

impl HttpContext for Empty {}
