//! What `on_configure` does for `make bench`'s variant f (10,000 services), outside
//! Envoy, on the same bytes bench/bench.py hands Envoy (its `plugin_f()` through Python's
//! `json.dumps`). Phases: `parse` (config::parse: each service decoded, then compiled),
//! `plan` (Plan::new), `view` (View::configured), `rest` (the rest of on_configure that needs no
//! host: its copy of the bytes, the fingerprint, the counters, the log line's summary),
//! `drop` (not part of on_configure) and, apart, `decode` (the decoding part of `parse`).
//!
//!     cargo run --release --example configure [ROUNDS]   # best wall time per phase
//!
//! Instructions: build with symbols and run one round under callgrind; each `phase_*`
//! function's inclusive count is that phase's (the document is built before them):
//!
//!     CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --example configure \
//!         --target-dir target/prof
//!     valgrind --tool=callgrind --callgrind-out-file=target/configure.cg \
//!         target/prof/release/examples/configure 1
//!     callgrind_annotate --inclusive=yes target/configure.cg | grep 'phase_[a-z]* \['
//!
//! In V8, as Envoy runs it: `cargo build --release --example configure --target
//! wasm32-wasip1` and run the .wasm with node's WASI (stub the `env` imports; call
//! `_start`); `node --liftoff-only` is closer to Envoy's one-shot on_configure than the
//! optimised code of later rounds. CONFIGURE_VERBOSE=1 prints every round;
//! CONFIGURE_ONLY=1 skips `drop` and `decode` (for profiles of on_configure alone).

use std::hint::black_box;
use std::time::Instant;

use canary_router::health::plan::{Counters, Plan};
use canary_router::health::view::View;
use canary_router::Router;

/// bench.py's SERVICES_F.
const SERVICES: usize = 10_000;

/// bench.py's `service()` as `json.dumps` writes it.
fn service(out: &mut String, name: &str, host: &str, cluster: &str) {
    out.push_str(&format!(
        "{{\"name\": \"{name}\", \"hosts\": [\"{host}\"], \"revisions\": [\
         {{\"name\": \"{name}-predictor-00001\", \"cluster\": \"{cluster}-1\"}}, \
         {{\"name\": \"{name}-predictor-00002\", \"cluster\": \"{cluster}-2\"}}], \
         \"latestRolledoutRevision\": \"{name}-predictor-00001\", \
         \"latestReadyRevision\": \"{name}-predictor-00002\", \"canaryTrafficPercent\": 10}}"
    ));
}

/// bench.py's `plugin_f()`: the benchmarked service in the middle of the list.
fn plugin_f() -> String {
    let mut out = String::from("{\"services\": [");
    let mut written = 0;
    let mut next = 0;
    while written < SERVICES {
        if written > 0 {
            out.push_str(", ");
        }
        if written == SERVICES / 2 {
            service(
                &mut out,
                "bench-f",
                "bench-model.bench.example.com",
                "bench-f",
            );
        } else {
            let name = format!("svc-{next:05}");
            service(&mut out, &name, &format!("{name}.bench.example.com"), &name);
            next += 1;
        }
        written += 1;
    }
    out.push_str("]}");
    out
}

#[inline(never)]
fn phase_parse(bytes: &[u8]) -> Router {
    match canary_router::parse(bytes) {
        Ok(router) => router,
        Err(e) => {
            eprintln!("configuration rejected: {e}");
            std::process::exit(1);
        }
    }
}

/// Decoding only (`config::parse` compiles each service once it is decoded).
#[inline(never)]
fn phase_decode(bytes: &[u8]) -> usize {
    canary_router::config::decode_only(bytes).unwrap_or(0)
}

#[inline(never)]
fn phase_plan(router: &Router) -> Plan {
    Plan::new(router)
}

#[inline(never)]
fn phase_view(router: &Router) -> View {
    View::configured(router)
}

/// The rest of on_configure (src/wasm/filter.rs) that does not touch the host: its copy of
/// the configuration, the fingerprint, the per-slot counters, the log line's summary.
#[inline(never)]
fn phase_rest(bytes: &[u8], router: &Router, plan: &Plan) -> usize {
    let copy = bytes.to_vec();
    let fingerprint = format!("{:016x}", canary_router::health::fingerprint(&copy));
    // As on_configure: counters and health bookkeeping only with metrics or a policy.
    let counted = router.metrics() || plan.active;
    let counters = Counters::new(if counted { plan.slot_count() } else { 0 });
    let next_probe = vec![0u64; if plan.active { plan.clusters.len() } else { 0 }];
    let summary = router.summary();
    black_box((&counters, &next_probe));
    fingerprint.len() + summary.len()
}

#[inline(never)]
fn phase_drop(router: Router, plan: Plan, view: View) {
    drop((router, plan, view));
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let text = plugin_f();
    if std::env::var_os("CONFIGURE_DUMP").is_some() {
        println!("{text}");
        return;
    }
    let verbose = std::env::var_os("CONFIGURE_VERBOSE").is_some();
    let only_configure = std::env::var_os("CONFIGURE_ONLY").is_some();
    let mut best = [f64::MAX; 6];
    for round in 0..rounds {
        let t0 = Instant::now();
        let router = phase_parse(black_box(text.as_bytes()));
        let t1 = Instant::now();
        let plan = phase_plan(&router);
        let t2 = Instant::now();
        let view = phase_view(&router);
        let t3 = Instant::now();
        black_box(phase_rest(text.as_bytes(), &router, &plan));
        let t4 = Instant::now();
        if only_configure {
            // For counting what on_configure runs: no drop, no separate decoding.
            std::mem::forget((router, plan, view));
        } else {
            phase_drop(black_box(router), black_box(plan), black_box(view));
        }
        let t5 = Instant::now();
        if !only_configure {
            black_box(phase_decode(black_box(text.as_bytes())));
        }
        let t6 = Instant::now();
        let ms = [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6)]
            .map(|(a, z)| (z - a).as_secs_f64() * 1e3);
        if verbose {
            println!(
                "round {round}: parse {:.2} ms, plan {:.2} ms, view {:.2} ms, rest {:.2} ms, drop {:.2} ms (of parse: decode {:.2} ms)",
                ms[0], ms[1], ms[2], ms[3], ms[4], ms[5]
            );
        }
        for (b, m) in best.iter_mut().zip(ms) {
            *b = b.min(m);
        }
    }
    println!(
        "{SERVICES} services, {} bytes, best of {rounds}: parse {:.2} ms, plan {:.2} ms, view {:.2} ms, rest {:.2} ms, drop {:.2} ms (of parse: decode {:.2} ms)",
        text.len(),
        best[0],
        best[1],
        best[2],
        best[3],
        best[4],
        best[5]
    );
}
