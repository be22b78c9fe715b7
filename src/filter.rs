//! The proxy-wasm glue: configuration in, one decision per request out. All logic lives
//! in the host-tested modules; this file only moves headers across the ABI, and counts
//! its host calls (each costs thousands of Envoy instructions).

use std::cell::Cell;
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::config;
use crate::rng::Rng;
use crate::router::{Choice, Router};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(CanaryRoot::new()) });
}}

struct CanaryRoot {
    /// Swapped whole on reconfiguration; requests in flight keep the table they started with.
    router: Rc<Router>,
    rng: Rc<Cell<Rng>>,
}

impl CanaryRoot {
    fn new() -> Self {
        CanaryRoot {
            router: Rc::new(Router::default()),
            rng: Rc::new(Cell::new(Rng::new(0))),
        }
    }

    fn seed(&self) -> u64 {
        getrandom::u64().unwrap_or_else(|_| {
            // No entropy from the host: the clock still differs per VM and start.
            self.get_current_time()
                .duration_since(UNIX_EPOCH)
                .map_or(0x5eed, |d| d.as_nanos() as u64)
        })
    }
}

impl Context for CanaryRoot {}

impl RootContext for CanaryRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Seeded here, not in on_vm_start: a reconfiguration (ECDS) gets a new root
        // context in the running VM, and on_vm_start does not run again for it.
        self.rng.set(Rng::new(self.seed()));
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match config::parse(&bytes) {
            Ok(router) => {
                info!("configuration loaded: {}", router.summary());
                self.router = Rc::new(router);
                true
            }
            Err(e) => {
                error!("configuration rejected: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(CanaryHttp {
            router: Rc::clone(&self.router),
            rng: Rc::clone(&self.rng),
            choice: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct CanaryHttp {
    router: Rc<Router>,
    rng: Rc<Cell<Rng>>,
    /// Set when this filter routed the request; names the revision on the response.
    choice: Option<Choice>,
}

impl Context for CanaryHttp {}

impl HttpContext for CanaryHttp {
    // Host calls: unknown host 2 (read authority, remove the cluster header); routed
    // request 2 plus one per header rule read, one for an authority rewrite and one for
    // the optional upstream revision header.
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let router = Rc::clone(&self.router);
        let authority = self.get_http_request_header(":authority");
        let route = authority.as_deref().and_then(|a| router.lookup(a));
        let decision = route.and_then(|route| {
            let mut rng = self.rng.get();
            let decision =
                router.decide(route, |name| self.get_http_request_header(name), &mut rng);
            self.rng.set(rng);
            decision
        });
        match decision {
            None => {
                // Whatever the host, a client never picks the upstream cluster.
                self.set_http_request_header(router.cluster_header(), None);
            }
            Some(d) => {
                // Setting replaces every copy a client sent, and (ABI 0.2.1) makes Envoy
                // re-select the route, so the `cluster_header` route sees this value.
                self.set_http_request_header(router.cluster_header(), Some(d.cluster));
                if let Some(authority) = d.authority {
                    self.set_http_request_header(":authority", Some(authority));
                }
                if router.upstream_revision_header() {
                    self.set_http_request_header(router.revision_header(), Some(d.revision));
                }
                self.choice = Some(d.choice);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(name) = self.choice.and_then(|c| self.router.revision_name(c)) {
            self.set_http_response_header(self.router.revision_header(), Some(name));
        }
        Action::Continue
    }
}
