//! canary-router: a proxy-wasm HTTP filter that performs KServe-style canary releases
//! of model inference services inside an Envoy or Istio ingress gateway.
//!
//! The pure logic (configuration model, host parsing, selection) lives in plain modules
//! tested on the host; `filter` is the thin proxy-wasm glue, built only for wasm.

pub mod authority;
pub mod config;
mod decode;
pub mod error;
pub mod health;
mod json;
pub mod mirror;
pub mod model_path;
pub mod names;
pub mod numfmt;
pub mod plan;
mod quoted;
pub mod rng;
pub mod router;
pub mod split;
pub mod status;
pub mod steps;
mod text;
pub mod view;

#[cfg(target_arch = "wasm32")]
mod filter;
#[cfg(target_arch = "wasm32")]
mod shared;
pub mod strhash;

pub use config::parse;
pub use error::{ConfigError, ErrorKind};
pub use router::{Choice, Decision, Outcome, Router};
