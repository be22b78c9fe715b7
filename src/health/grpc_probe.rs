//! gRPC readiness probes (`healthCheck.protocol: grpc`): the methods a probe may call,
//! their messages, how an answer reads as ready, and the target handed to Envoy's
//! `dispatch_grpc_call`.
//!
//! KServe 0.21's `ServerReady` answers true whatever its models' state, so the default
//! is `ModelReady`, which sees an unready model; `grpc.health.v1.Health/Check` is for
//! servers that implement the standard health service (Triton). Messages are prost
//! derives of the same field numbers as the protos they mirror.

use prost::Message;

/// A method a gRPC probe may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeMethod {
    /// `inference.GRPCInferenceService/ModelReady` for the probe's model: ready when
    /// the answer's `ready` is true.
    ModelReady,
    /// `inference.GRPCInferenceService/ServerReady`: ready when `ready` is true.
    ServerReady,
    /// `grpc.health.v1.Health/Check` for the whole server (service ""): ready when
    /// SERVING.
    HealthCheck,
}

impl ProbeMethod {
    pub const ALL: [ProbeMethod; 3] = [
        ProbeMethod::ModelReady,
        ProbeMethod::ServerReady,
        ProbeMethod::HealthCheck,
    ];

    /// `service/method`, as `grpcMethod` spells it.
    pub fn full_name(self) -> &'static str {
        match self {
            ProbeMethod::ModelReady => "inference.GRPCInferenceService/ModelReady",
            ProbeMethod::ServerReady => "inference.GRPCInferenceService/ServerReady",
            ProbeMethod::HealthCheck => "grpc.health.v1.Health/Check",
        }
    }

    pub fn parse(name: &str) -> Option<ProbeMethod> {
        ProbeMethod::ALL.into_iter().find(|m| m.full_name() == name)
    }

    /// The fully qualified service and the method, as `dispatch_grpc_call` takes them.
    pub fn service_and_method(self) -> (&'static str, &'static str) {
        let full = self.full_name();
        let at = full.find('/').unwrap_or(full.len());
        (
            full.get(..at).unwrap_or_default(),
            full.get(at + 1..).unwrap_or_default(),
        )
    }

    /// The serialized request (`model` is the name ModelReady asks about).
    pub fn request(self, model: &str) -> Vec<u8> {
        match self {
            ProbeMethod::ModelReady => ModelReadyRequest {
                name: model.to_owned(),
                version: String::new(),
            }
            .encode_to_vec(),
            ProbeMethod::ServerReady => Vec::new(),
            ProbeMethod::HealthCheck => HealthCheckRequest {
                service: String::new(),
            }
            .encode_to_vec(),
        }
    }

    /// Whether an OK answer says ready. An answer that does not decode is not.
    pub fn ready(self, answer: &[u8]) -> bool {
        match self {
            ProbeMethod::ModelReady => ModelReadyResponse::decode(answer).is_ok_and(|r| r.ready),
            ProbeMethod::ServerReady => ServerReadyResponse::decode(answer).is_ok_and(|r| r.ready),
            ProbeMethod::HealthCheck => {
                HealthCheckResponse::decode(answer).is_ok_and(|r| r.status == SERVING)
            }
        }
    }
}

/// A gRPC probe's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcProbe {
    pub method: ProbeMethod,
    /// The model ModelReady asks about (KServe's model name: the service's by default).
    pub model: Box<str>,
}

/// Longest cluster name a gRPC probe can target (see `upstream`).
pub const MAX_CLUSTER_BYTES: usize = 125;

/// What `dispatch_grpc_call` is given as its upstream: a serialized
/// `envoy.config.core.v3.GrpcService` naming `cluster` and `authority` (the `:authority`
/// of the call, as HTTP probes send it).
///
/// Envoy 1.40 parses the argument as a `GrpcService` first and takes it for a cluster
/// name only when that fails; a string that happens to parse without naming a target
/// (the empty string does) makes Envoy abort the whole process ("panic: unset oneof"),
/// so a plain cluster name is never passed. The SDK takes the argument as `&str`: the
/// encoding is valid UTF-8 while every length in it fits one varint byte, i.e. while
/// the cluster name and the authority together take at most 123 bytes. Past that the
/// authority is left out (Envoy then sends the cluster name as `:authority`); a cluster
/// name longer than `MAX_CLUSTER_BYTES` cannot be encoded at all (`None`).
pub fn upstream(cluster: &str, authority: &str) -> Option<String> {
    let encode = |authority: &str| {
        let service = GrpcService {
            envoy_grpc: Some(EnvoyGrpc {
                cluster_name: cluster.to_owned(),
                authority: authority.to_owned(),
            }),
        };
        String::from_utf8(service.encode_to_vec()).ok()
    };
    if cluster.is_empty() {
        return None;
    }
    encode(authority).or_else(|| encode(""))
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;

/// `inference.ModelReadyRequest`.
#[derive(Clone, PartialEq, Message)]
struct ModelReadyRequest {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    version: String,
}

/// `inference.ModelReadyResponse`.
#[derive(Clone, PartialEq, Message)]
struct ModelReadyResponse {
    #[prost(bool, tag = "1")]
    ready: bool,
}

/// `inference.ServerReadyResponse` (its request has no fields).
#[derive(Clone, PartialEq, Message)]
struct ServerReadyResponse {
    #[prost(bool, tag = "1")]
    ready: bool,
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `envoy.config.core.v3.GrpcService`, with only the target this filter uses.
#[derive(Clone, PartialEq, Message)]
struct GrpcService {
    #[prost(message, optional, tag = "1")]
    envoy_grpc: Option<EnvoyGrpc>,
}

/// `envoy.config.core.v3.GrpcService.EnvoyGrpc`.
#[derive(Clone, PartialEq, Message)]
struct EnvoyGrpc {
    #[prost(string, tag = "1")]
    cluster_name: String,
    #[prost(string, tag = "2")]
    authority: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_by_name() {
        for m in ProbeMethod::ALL {
            assert_eq!(ProbeMethod::parse(m.full_name()), Some(m));
        }
        assert_eq!(
            ProbeMethod::ModelReady.service_and_method(),
            ("inference.GRPCInferenceService", "ModelReady")
        );
        assert_eq!(
            ProbeMethod::HealthCheck.service_and_method(),
            ("grpc.health.v1.Health", "Check")
        );
        for bad in [
            "",
            "ModelReady",
            "inference.GRPCInferenceService/ModelInfer",
            "inference.GRPCInferenceService.ModelReady",
            "grpc.health.v1.Health/Watch",
        ] {
            assert_eq!(ProbeMethod::parse(bad), None, "{bad}");
        }
    }

    // The bytes below are what KServe's own generated Python classes
    // (kserve.protocol.grpc.grpc_predict_v2_pb2) and grpcio-health-checking serialize.
    #[test]
    fn requests_match_the_reference_encodings() {
        assert_eq!(
            ProbeMethod::ModelReady.request("sklearn-iris"),
            b"\n\x0csklearn-iris"
        );
        assert_eq!(ProbeMethod::ServerReady.request("ignored"), b"");
        assert_eq!(ProbeMethod::HealthCheck.request("ignored"), b"");
    }

    #[test]
    fn answers_read_as_ready_or_not() {
        // ready: true is field 1 = 1; ready: false is the empty message (proto3 leaves
        // defaults out), which is also what an empty OK answer decodes to.
        assert!(ProbeMethod::ModelReady.ready(b"\x08\x01"));
        assert!(!ProbeMethod::ModelReady.ready(b""));
        assert!(ProbeMethod::ServerReady.ready(b"\x08\x01"));
        assert!(!ProbeMethod::ServerReady.ready(b"\x08\x00"));
        // SERVING = 1, NOT_SERVING = 2, SERVICE_UNKNOWN = 3, UNKNOWN = 0 (empty).
        assert!(ProbeMethod::HealthCheck.ready(b"\x08\x01"));
        for not in [&b"\x08\x02"[..], b"\x08\x03", b""] {
            assert!(!ProbeMethod::HealthCheck.ready(not), "{not:?}");
        }
        // Garbage (a truncated varint, a bad wire type) is not ready, whatever the method.
        for m in ProbeMethod::ALL {
            assert!(!m.ready(b"\x08"), "{m:?}");
            assert!(!m.ready(b"\x0f\x01"), "{m:?}");
        }
    }

    #[test]
    fn upstreams_name_cluster_and_authority() {
        let up = upstream("g1", "probe.example.com").unwrap();
        assert_eq!(up.as_bytes(), b"\n\x17\n\x02g1\x12\x11probe.example.com");
        let service = GrpcService::decode(up.as_bytes()).unwrap();
        let target = service.envoy_grpc.unwrap();
        assert_eq!(
            (&*target.cluster_name, &*target.authority),
            ("g1", "probe.example.com")
        );
        // Istio's cluster names are long: with the revision's host, past 123 bytes
        // together, the authority is left out rather than the probe.
        let cluster = "outbound|8081||sklearn-iris-predictor-00001.kserve-test.svc.cluster.local";
        let host = "sklearn-iris-predictor-00001.kserve-test.svc.cluster.local";
        let up = upstream(cluster, host).unwrap();
        let target = GrpcService::decode(up.as_bytes())
            .unwrap()
            .envoy_grpc
            .unwrap();
        assert_eq!((&*target.cluster_name, &*target.authority), (cluster, ""));
        let short_host = "iris.example.com";
        assert_eq!(
            GrpcService::decode(upstream(cluster, short_host).unwrap().as_bytes())
                .unwrap()
                .envoy_grpc
                .unwrap()
                .authority,
            short_host
        );
        // The limits, exactly.
        let name = |n: usize| "c".repeat(n);
        assert!(upstream(&name(MAX_CLUSTER_BYTES), "").is_some());
        assert!(upstream(&name(MAX_CLUSTER_BYTES + 1), "").is_none());
        let kept = |c: usize, a: usize| {
            let up = upstream(&name(c), &"a".repeat(a)).unwrap();
            !GrpcService::decode(up.as_bytes())
                .unwrap()
                .envoy_grpc
                .unwrap()
                .authority
                .is_empty()
        };
        assert!(kept(60, 63) && !kept(60, 64));
        // Never an empty target: Envoy would take it for a GrpcService without one.
        assert_eq!(upstream("", "a"), None);
    }
}
