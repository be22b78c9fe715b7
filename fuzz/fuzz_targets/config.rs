//! Plugin configuration parsing and validation: any bytes are accepted or rejected with
//! an error, never a panic; an accepted configuration summarises and routes.
#![no_main]

use canary_router::route::rng::Rng;
use canary_router::health::view::View;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match canary_router::parse(data) {
        Ok(router) => {
            let _ = router.summary();
            let view = View::configured(&router);
            let _ = canary_router::health::status::render(&router, &view);
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
            let _ = e.to_string();
        }
    }
});
