//! canary-router: a proxy-wasm HTTP filter that performs KServe-style canary releases
//! of model inference services inside an Envoy or Istio ingress gateway.
//!
//! Grouped by concern: `config` (the JSON shape, its compilation into a `Router`, errors,
//! name validation), `route` (the routing table and the per-request decision), `health`
//! (probes, windows, ejection, rollback, the view, the status document) and `wasm` (the
//! thin proxy-wasm glue, built only for wasm). Everything but `wasm` is tested on the host.

pub mod config;
pub mod health;
pub mod route;

#[cfg(target_arch = "wasm32")]
mod wasm;

pub use config::error::{ConfigError, ErrorKind};
pub use config::parse;
pub use route::{Choice, Decision, Outcome, Router};
