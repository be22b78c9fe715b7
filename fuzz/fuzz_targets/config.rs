//! Plugin configuration parsing and validation, through serde as the filter ships it: any
//! bytes are accepted or rejected with an error, never a panic. Differential checks keep
//! the filter's reading of the document in line with serde_json's generic one: whatever
//! the filter accepts is a JSON document, whatever it calls "not valid JSON" is not, and
//! every accepted configuration re-serialises through the status view as JSON with one
//! entry per service. An accepted configuration also summarises and routes.
#![no_main]

use canary_router::health::view::View;
use canary_router::route::rng::Rng;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let generic = serde_json::from_slice::<Value>(data);
    match canary_router::parse(data) {
        Ok(router) => {
            assert!(generic.is_ok(), "accepted a document serde_json refuses");
            let _ = router.summary();
            let view = View::configured(&router);
            let status = canary_router::health::status::render(&router, &view);
            let status: Value = match serde_json::from_str(&status) {
                Ok(v) => v,
                Err(e) => panic!("status view is not JSON: {e}"),
            };
            assert_eq!(
                status["services"].as_array().map(Vec::len),
                Some(router.services().len())
            );
            let mut rng = Rng::new(data.len() as u64);
            for service in router.services() {
                let _ = service.split_percents().count();
            }
            // Route a request for every configured host string the input may contain.
            if let Ok(text) = std::str::from_utf8(data) {
                for word in text.split('"') {
                    if let Some(route) = router.lookup(word) {
                        let _ = router.decide(route, |_| Some(word.to_owned()), &mut rng, &view);
                    }
                }
            }
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
            if message.starts_with("not valid JSON") {
                assert!(generic.is_err(), "called valid JSON invalid: {message}");
            }
        }
    }
});
