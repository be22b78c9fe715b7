//! Header and cookie values as clients send them, against header rules: whatever the
//! bytes, a rule matches only its exact value and nothing panics.
#![no_main]

use canary_router::route::rng::Rng;
use canary_router::health::view::View;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data).into_owned();
    let router = common::router();
    let view = View::configured(&router);
    let Some(route) = router.lookup(common::HOST) else {
        return;
    };
    let mut rng = Rng::new(7);
    let outcome = router.decide(route, |_| Some(value.clone()), &mut rng, &view);
    let routed = outcome.and_then(|o| o.routed());
    if value == "test" {
        assert_eq!(routed.map(|d| d.revision), Some("r2"));
    }
});
