//! The native `canary-router` command: renders the WasmPlugin and its routes from
//! KServe's own InferenceService objects, checks plugin configurations with the filter's
//! own compiler (`canary_router::parse`, what `on_configure` runs), and shows the
//! filter's status view as `kubectl get isvc` does. Built from the same crate as the
//! wasm module, for the host only: its crates are target-gated in Cargo.toml and none
//! of this is compiled into the filter.

#[cfg(not(target_arch = "wasm32"))]
mod check;
#[cfg(not(target_arch = "wasm32"))]
mod kserve;
#[cfg(not(target_arch = "wasm32"))]
mod manifest;
#[cfg(not(target_arch = "wasm32"))]
mod render;
#[cfg(not(target_arch = "wasm32"))]
mod status;

#[cfg(not(target_arch = "wasm32"))]
mod cli;
#[cfg(not(target_arch = "wasm32"))]
mod error;
#[cfg(not(target_arch = "wasm32"))]
use error::Error;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

/// `cargo build --target wasm32-wasip1` builds every target of the crate; for wasm the
/// crate is the filter (the library, `make opt`), and the command has nothing to do.
#[cfg(target_arch = "wasm32")]
fn main() {
    eprintln!("canary-router: the command runs natively; built for wasm32, this crate is the filter (make opt)");
    std::process::exit(2);
}
