//! The proxy-wasm glue (built only for wasm): the filter's callbacks, and the host calls
//! the timer needs for shared data, time and stats.

mod filter;
mod grpc;
mod openai;
mod shared;
