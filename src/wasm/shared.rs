//! Host access the timer needs, without the SDK's `unwrap`s: wall-clock time, process-wide
//! shared data with compare-and-swap, and Envoy stats defined once per root context.

use std::time::UNIX_EPOCH;

use hashbrown::HashMap;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MetricType, Status};

/// Every key starts with this: Istio leaves `vm_id` empty, so other plugins share the
/// namespace.
pub const PREFIX: &str = "canary-router/";

pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Wall-clock microseconds, for timing configuration loads.
pub fn now_us() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

pub fn get(key: &str) -> Option<Vec<u8>> {
    hostcalls::get_shared_data(key).ok().and_then(|(v, _)| v)
}

/// Read-modify-write with CAS. `change` gets the current value and returns the new one,
/// or `None` to leave it. True when this call wrote.
pub fn update(key: &str, change: impl Fn(Option<&[u8]>) -> Option<Vec<u8>>) -> bool {
    for _ in 0..8 {
        let Ok((current, cas)) = hostcalls::get_shared_data(key) else {
            return false;
        };
        let Some(next) = change(current.as_deref()) else {
            return false;
        };
        // A missing key has no CAS; 0 means "no check", so a racing first write is
        // possible only for a key that did not exist, and both writers wrote a value
        // computed from nothing.
        match hostcalls::set_shared_data(key, Some(&next), cas.or(Some(0))) {
            Ok(()) => return true,
            Err(Status::CasMismatch) => continue,
            Err(_) => return false,
        }
    }
    false
}

/// Creates `key` with `initial` if it does not exist, so that later changes to it are
/// real compare-and-swaps (a missing key has no CAS value to compare).
pub fn ensure(key: &str, initial: &[u8]) {
    if get(key).is_none() {
        let _ = hostcalls::set_shared_data(key, Some(initial), None);
    }
}

/// Envoy stats by name, each defined once per root context.
#[derive(Default)]
pub struct Stats {
    ids: HashMap<String, u32>,
}

impl Stats {
    fn id(&mut self, kind: MetricType, name: String) -> Option<u32> {
        if let Some(id) = self.ids.get(&name) {
            return Some(*id);
        }
        let id = hostcalls::define_metric(kind, &name).ok()?;
        self.ids.insert(name, id);
        Some(id)
    }

    pub fn add(&mut self, name: String, delta: u64) {
        if delta == 0 {
            return;
        }
        if let Some(id) = self.id(MetricType::Counter, name) {
            let _ = hostcalls::increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
        }
    }

    pub fn set(&mut self, name: String, value: u64) {
        if let Some(id) = self.id(MetricType::Gauge, name) {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}
