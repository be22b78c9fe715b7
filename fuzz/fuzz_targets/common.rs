//! The configuration the request-path targets route by.
use std::sync::OnceLock;

use canary_router::Router;

pub const HOST: &str = "sklearn-iris.kserve-test.example.com";

/// Parsed once per process: the targets exercise the request path, not parsing.
pub fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(build)
}

fn build() -> Router {
    let config = serde_json::json!({"services": [
        {"name": "sklearn-iris", "hosts": [HOST, "sklearn-iris-predictor.kserve-test.example.com"], "tagRouting": true,
         "revisions": [{"name": "r1", "cluster": "c1"}, {"name": "r2", "cluster": "c2", "host": "r2.ns.svc.cluster.local"}],
         "latestRolledoutRevision": "r1", "latestReadyRevision": "r2", "canaryTrafficPercent": 10,
         "headerRoutes": [{"header": "traffic", "value": "test", "revision": "latest"},
                          {"header": "cookie", "value": "canary=1", "revision": "r2"}],
         "outlier": {"maxErrorRate": 0.5}, "autoRollback": {"maxErrorRate": 0.05}},
        {"name": "bert", "hosts": ["bert.example.com"], "tagRouting": true,
         "revisions": [{"name": "b1", "cluster": "c3"}, {"name": "b2", "cluster": "c4"}],
         "traffic": [{"revisionName": "b1", "percent": 50, "tag": "stable"}, {"revisionName": "b2", "percent": 50}]}
    ]});
    match canary_router::parse(config.to_string().as_bytes()) {
        Ok(router) => router,
        Err(e) => panic!("fuzz config rejected: {e}"),
    }
}
