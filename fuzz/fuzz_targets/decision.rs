//! The whole per-request decision: arbitrary authority, headers, random draws and health
//! state, on a configuration with tags, header rules, a split and policies.
#![no_main]

use canary_router::route::rng::Rng;
use canary_router::health::view::{ClusterState, View};
use canary_router::Outcome;
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\n');
    let authority = parts.next().unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    let router = common::router();
    let view = View::build(
        &router,
        u64::from(flags) * 60_000,
        |s, r, _| ClusterState {
            ready: (u32::from(flags) >> ((s * 2 + r) as u32 & 7)) & 1 == 0,
            ejected: flags & 0x40 != 0 && r == 1,
        },
        |_| flags & 0x80 != 0,
    );
    let mut rng = Rng::new(u64::from(flags));
    let Some(route) = router.lookup(authority) else {
        return;
    };
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match router.decide(route, header, &mut rng, &view) {
        Some(Outcome::Routed(d)) => {
            assert!(!d.cluster.is_empty());
            assert_eq!(router.revision_name(d.choice), Some(d.revision));
        }
        Some(Outcome::Unavailable { revision, .. }) => assert!(!revision.is_empty()),
        None => {}
    }
});
