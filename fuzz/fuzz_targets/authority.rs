//! Authority normalisation and tag-host lookup with arbitrary `:authority` values.
#![no_main]

use canary_router::route::authority::{lookup_key, KEY_CAPACITY};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(authority) = std::str::from_utf8(data) else {
        return;
    };
    let mut buf = [0u8; KEY_CAPACITY];
    if let Some(key) = lookup_key(authority, &mut buf) {
        assert!(key.len() <= KEY_CAPACITY);
        assert!(!key.bytes().any(|b| b.is_ascii_uppercase()));
    }
    let router = common::router();
    let _ = router.lookup(authority);
});
