//! The plugin configuration: its JSON shape (KServe's and Knative's vocabulary, in
//! `raw`, decoded by serde) and its compilation into a `Router`. Every rule is enforced
//! here, at configure time, so that a configuration that loads can be routed without a
//! failure path per request.

pub mod error;
pub mod names;
mod raw;

use std::fmt::Write;

use hashbrown::{HashMap, HashSet};
use serde_path_to_error::Segment;

use crate::config::error::{ConfigError, ErrorKind};
use crate::health::grpc_probe::{self, GrpcProbe, ProbeMethod};
use crate::health::{HealthCheck, Outlier, ProbeKind, RatePolicy, BUCKET_MS, MAX_WINDOW_BUCKETS};
use crate::route::grpc::{ErrorCodes, MAX_CODE};
use crate::route::mirror::{
    Mirror, DEFAULT_MAX_BODY_BYTES, DEFAULT_TIMEOUT_MS, MAX_BODY_BYTES_LIMIT,
};
use crate::route::openai::{self, OpenAi};
use crate::route::split::Split;
use crate::route::steps::{parse_rfc3339, Steps};
use crate::route::{
    Canary, HeaderRoute, HostRoute, Policies, Revision, Router, Service, Sticky, TagRoute,
    DEFAULT_CLUSTER_HEADER, DEFAULT_REVISION_HEADER, DEFAULT_TAG_HEADER,
};
use raw::{
    Names, RawConfig, RawHealthCheck, RawMirror, RawOpenAi, RawOutlier, RawRevision, RawService,
    RawSteps, RawSticky, RawTarget,
};

/// Parses and validates a plugin configuration (the JSON Envoy hands to `on_configure`,
/// or Istio's `pluginConfig` turned into JSON).
pub fn parse(bytes: &[u8]) -> Result<Router, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ConfigError::top(ErrorKind::Empty));
    }
    let raw = decode(bytes)?;
    // The top level's errors come before any service's.
    let top = top_level(&raw)?;
    let hosts = raw.services.iter().map(|s| s.hosts.len()).sum();
    let mut router = Router {
        hosts: HashMap::with_capacity(hosts),
        services: Vec::with_capacity(raw.services.len()),
        ..Router::default()
    };
    let mut names = HashSet::with_capacity(raw.services.len());
    let mut llm = top.openai;
    for (index, service) in raw.services.iter().enumerate() {
        let name = &*service.name;
        if name.is_empty() {
            return Err(ConfigError::top(ErrorKind::EmptyValue {
                field: format!("services[{index}].name"),
            }));
        }
        let fail = |kind| ConfigError::in_service(name, kind);
        if !names.insert(name) {
            return Err(fail(ErrorKind::DuplicateService {
                name: name.to_owned(),
            }));
        }
        let compiled =
            compile_service(service, &top.cluster_header, &top.tag_header, llm.is_some())
                .map_err(fail)?;
        let renames = revision_models(service, llm.is_some()).map_err(fail)?;
        if let Some(o) = llm.as_mut() {
            o.set_rewrites(index, renames);
            o.list(index, service.models.iter().map(|m| Box::from(&**m)));
        }
        register_hosts(&mut router, index, &compiled, service).map_err(fail)?;
        router.tag_routing |= !compiled.tags.is_empty();
        router.services.push(compiled);
    }
    if llm.is_some() && router.models.is_empty() {
        return Err(ConfigError::top(ErrorKind::Missing {
            field: "openai",
            reason: "no service lists models, so no request can be routed by the model in its body"
                .into(),
        }));
    }
    router.openai = llm.map(Box::new);
    router.cluster_header = top.cluster_header.into();
    router.revision_header = top.revision_header.into();
    router.tag_header = top.tag_header.into();
    router.upstream_revision_header = raw.upstream_revision_header;
    router.status_path = top.status_path;
    router.metrics = raw.metrics.unwrap_or(false);
    router.grpc_error_codes = top.grpc_error_codes;
    Ok(router)
}

/// The document decoded by serde into its shape, or the error naming where it is wrong.
fn decode(bytes: &[u8]) -> Result<RawConfig<'_>, ConfigError> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let raw = serde_path_to_error::deserialize(&mut json).map_err(|e| decode_error(bytes, e))?;
    json.end().map_err(|e| not_json(&e))?;
    Ok(raw)
}

/// Only the decoding part of [`parse`] (for bench/configure.rs): the number of services.
#[doc(hidden)]
pub fn decode_only(bytes: &[u8]) -> Option<usize> {
    decode(bytes).ok().map(|raw| raw.services.len())
}

fn not_json(e: &serde_json::Error) -> ConfigError {
    ConfigError::top(ErrorKind::Json {
        path: String::new(),
        message: format!("not valid JSON: {e}"),
    })
}

/// A decoding error as the operator reads it: syntax errors say the document is not
/// JSON; a value of the wrong shape is named by its path, inside the service it is in.
fn decode_error(bytes: &[u8], e: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    if e.inner().is_syntax() || e.inner().is_eof() {
        let message = match e.path().to_string() {
            path if path == "." => format!("not valid JSON: {}", e.inner()),
            path => format!("not valid JSON: {path}: {}", e.inner()),
        };
        return ConfigError::top(ErrorKind::Json {
            path: String::new(),
            message,
        });
    }
    let message = e.inner().to_string();
    let mut segments = e.path().iter();
    if let (Some(Segment::Map { key }), Some(Segment::Seq { index })) =
        (segments.next(), segments.next())
    {
        let names = (key == "services")
            .then(|| serde_json::from_slice::<Names<'_>>(bytes).ok())
            .flatten();
        if let Some(service) = names.and_then(|n| n.services.into_iter().nth(*index)) {
            let inner = segments.fold(String::new(), |mut path, segment| {
                if !path.is_empty() && !matches!(segment, Segment::Seq { .. }) {
                    path.push('.');
                }
                // Writing to a String cannot fail.
                let _ = write!(path, "{segment}");
                path
            });
            return ConfigError::in_service(
                &service.name,
                ErrorKind::Json {
                    path: inner,
                    message,
                },
            );
        }
    }
    ConfigError::top(ErrorKind::Json {
        path: e.path().to_string(),
        message,
    })
}

/// The top level's settings, checked (before any service's errors are reported).
struct TopLevel {
    cluster_header: String,
    revision_header: String,
    tag_header: String,
    status_path: Option<Box<str>>,
    grpc_error_codes: ErrorCodes,
    openai: Option<OpenAi>,
}

fn top_level(raw: &RawConfig<'_>) -> Result<TopLevel, ConfigError> {
    let cluster_header = header_field(
        "clusterHeader",
        raw.cluster_header.as_deref(),
        DEFAULT_CLUSTER_HEADER,
    )?;
    let revision_header = header_field(
        "revisionHeader",
        raw.revision_header.as_deref(),
        DEFAULT_REVISION_HEADER,
    )?;
    let tag_header = header_field("tagHeader", raw.tag_header.as_deref(), DEFAULT_TAG_HEADER)?;
    if tag_header == cluster_header || tag_header == revision_header {
        return Err(ConfigError::top(ErrorKind::InvalidHeaderName {
            field: "tagHeader".into(),
            value: tag_header,
            reason: "it must differ from clusterHeader and revisionHeader",
        }));
    }
    if cluster_header == revision_header {
        return Err(ConfigError::top(ErrorKind::InvalidHeaderName {
            field: "revisionHeader".into(),
            value: revision_header,
            reason: "it must differ from clusterHeader",
        }));
    }
    let status_path = raw
        .status_path
        .as_deref()
        .map(|p| url_path("statusPath", p).map_err(ConfigError::top))
        .transpose()?;
    let grpc_error_codes = match raw.grpc_error_codes.as_deref() {
        Some(codes) => grpc_error_codes(codes).map_err(ConfigError::top)?,
        None => ErrorCodes::default(),
    };
    let openai = raw
        .openai
        .as_deref()
        .map(|o| openai_section(o).map_err(ConfigError::top))
        .transpose()?;
    Ok(TopLevel {
        cluster_header,
        revision_header,
        tag_header,
        status_path,
        grpc_error_codes,
        openai,
    })
}

/// `grpcErrorCodes`: the gRPC statuses that count as a failure, replacing the default
/// list. Each a code gRPC defines other than OK, once; an empty list counts none.
fn grpc_error_codes(codes: &[i64]) -> Result<ErrorCodes, ErrorKind> {
    let mut valid = Vec::with_capacity(codes.len());
    for (i, &code) in codes.iter().enumerate() {
        let field = || format!("grpcErrorCodes[{i}]");
        let Some(code) = u32::try_from(code)
            .ok()
            .filter(|c| (1..=MAX_CODE).contains(c))
        else {
            return Err(ErrorKind::InvalidValue {
                field: field(),
                value: code.to_string(),
                reason: "a gRPC status code in 1..16 (0, OK, is never a failure)",
            });
        };
        if valid.contains(&code) {
            return Err(ErrorKind::InvalidValue {
                field: field(),
                value: code.to_string(),
                reason: "listed twice",
            });
        }
        valid.push(code);
    }
    Ok(ErrorCodes::new(&valid))
}

/// The `openai` section: paths (default: KServe's and vLLM's), the body limit and the
/// metadata namespace json_to_metadata writes into.
fn openai_section(raw: &RawOpenAi<'_>) -> Result<OpenAi, ErrorKind> {
    let paths: Vec<Box<str>> = match &raw.paths {
        None => openai::DEFAULT_PATHS
            .iter()
            .map(|p| Box::from(*p))
            .collect(),
        Some(paths) => {
            if paths.is_empty() {
                return Err(ErrorKind::EmptyValue {
                    field: "openai.paths".into(),
                });
            }
            let mut out: Vec<Box<str>> = Vec::with_capacity(paths.len());
            for (i, p) in paths.iter().enumerate() {
                let field = format!("openai.paths[{i}]");
                let path = url_path(&field, p)?;
                if path.contains(['?', '#']) {
                    return Err(ErrorKind::InvalidValue {
                        field,
                        value: p.to_string(),
                        reason: "a path without query: requests match it whatever their query",
                    });
                }
                if out.contains(&path) {
                    return Err(ErrorKind::InvalidValue {
                        field,
                        value: p.to_string(),
                        reason: "listed twice",
                    });
                }
                out.push(path);
            }
            out
        }
    };
    let max_body = bounded(
        "openai.maxBodyBytes",
        raw.max_body_bytes,
        openai::DEFAULT_MAX_BODY_BYTES as u64,
        1,
        openai::MAX_BODY_BYTES_LIMIT,
    )?;
    let namespace = match raw.metadata_namespace.as_deref() {
        None => openai::DEFAULT_NAMESPACE.into(),
        Some(ns) => {
            names::header_value(ns).map_err(|reason| ErrorKind::InvalidValue {
                field: "openai.metadataNamespace".into(),
                value: ns.to_owned(),
                reason,
            })?;
            Box::from(ns)
        }
    };
    Ok(OpenAi::new(
        paths,
        usize::try_from(max_body).unwrap_or(usize::MAX),
        raw.list_models.unwrap_or(false),
        namespace,
    ))
}

/// Each revision's `model` (the name sent upstream in OpenAI bodies instead of the
/// client's): a model name, for a service that lists the public names it replaces.
fn revision_models(raw: &RawService<'_>, openai: bool) -> Result<Vec<Option<Box<str>>>, ErrorKind> {
    let mut out = Vec::with_capacity(raw.revisions.len());
    for (i, revision) in raw.revisions.iter().enumerate() {
        let Some(model) = revision.model.as_deref() else {
            out.push(None);
            continue;
        };
        let field = || format!("revisions[{i}].model");
        names::model_name(model).map_err(|reason| ErrorKind::InvalidValue {
            field: field(),
            value: model.to_owned(),
            reason,
        })?;
        if !openai {
            return Err(ErrorKind::InvalidValue {
                field: field(),
                value: model.to_owned(),
                reason: "a revision's model is used in OpenAI bodies: it needs the top-level openai section",
            });
        }
        if raw.models.is_empty() {
            return Err(ErrorKind::InvalidValue {
                field: field(),
                value: model.to_owned(),
                reason: "it replaces the service's public model names: the service must list them in models",
            });
        }
        out.push(Some(Box::from(model)));
    }
    Ok(out)
}

fn header_field(field: &str, value: Option<&str>, default: &str) -> Result<String, ConfigError> {
    match value {
        None => Ok(default.to_owned()),
        Some(v) => names::header_name(v).map_err(|reason| {
            ConfigError::top(ErrorKind::InvalidHeaderName {
                field: field.into(),
                value: v.to_owned(),
                reason,
            })
        }),
    }
}

/// A service ready to route (its hosts and models are registered from the raw service
/// by `register_hosts`, once it has compiled).
fn compile_service(
    raw: &RawService<'_>,
    cluster_header: &str,
    tag_header: &str,
    openai: bool,
) -> Result<Service, ErrorKind> {
    let revisions = compile_revisions(&raw.revisions)?;
    // A scan: services have a few revisions (and compile_revisions is quadratic anyway),
    // and a map per service costs more than it saves.
    let resolve = |field: &str, name: &str| {
        revisions
            .iter()
            .position(|r| r.name() == name)
            .ok_or_else(|| ErrorKind::UnknownRevision {
                field: field.into(),
                value: name.into(),
            })
    };

    if raw.steps.is_some() {
        if raw.traffic.is_some() {
            return Err(ErrorKind::InvalidValue {
                field: "steps".into(),
                value: "traffic".into(),
                reason: "steps apply to the KServe form (latestRolledoutRevision, latestReadyRevision), not to traffic",
            });
        }
        if let Some(p) = raw.canary_traffic_percent {
            return Err(ErrorKind::InvalidValue {
                field: "steps".into(),
                value: format!("canaryTrafficPercent: {p}"),
                reason: "steps and canaryTrafficPercent are mutually exclusive",
            });
        }
    }
    let form = match &raw.traffic {
        Some(traffic) => {
            let kserve_field = [
                ("canaryTrafficPercent", raw.canary_traffic_percent.is_some()),
                (
                    "latestRolledoutRevision",
                    raw.latest_rolledout_revision.is_some(),
                ),
                ("latestReadyRevision", raw.latest_ready_revision.is_some()),
            ]
            .into_iter()
            .find_map(|(f, set)| set.then_some(f));
            if let Some(kserve_field) = kserve_field {
                return Err(ErrorKind::MixedForms { kserve_field });
            }
            traffic_form(traffic, &resolve)?
        }
        None => kserve_form(
            raw.latest_ready_revision.as_deref(),
            raw.latest_rolledout_revision.as_deref(),
            raw.canary_traffic_percent,
            revisions.len(),
            &resolve,
        )?,
    };

    let mut header_routes = Vec::with_capacity(raw.header_routes.len());
    for (i, rule) in raw.header_routes.iter().enumerate() {
        let field = format!("headerRoutes[{i}].header");
        let header =
            names::header_name(&rule.header).map_err(|reason| ErrorKind::InvalidHeaderName {
                field: field.clone(),
                value: rule.header.to_string(),
                reason,
            })?;
        if header == cluster_header {
            return Err(ErrorKind::InvalidHeaderName {
                field,
                value: rule.header.to_string(),
                reason: "the filter strips clusterHeader from every request",
            });
        }
        if rule
            .value
            .bytes()
            .any(|b| b.is_ascii_control() && b != b'\t')
        {
            return Err(ErrorKind::InvalidValue {
                field: format!("headerRoutes[{i}].value"),
                value: rule.value.to_string(),
                reason: "control characters never arrive in a header",
            });
        }
        let field = format!("headerRoutes[{i}].revision");
        let by_tag = form.tags.find(&rule.revision);
        let revision = if form.tags.keywords() && matches!(&*rule.revision, "latest" | "prev") {
            by_tag.ok_or_else(|| ErrorKind::Missing {
                field: "latestRolledoutRevision",
                reason: format!("{field} is \"prev\", which needs it"),
            })?
        } else {
            // A revision name first; in the traffic form, then a tag.
            resolve(&field, &rule.revision).or_else(|e| by_tag.ok_or(e))?
        };
        header_routes.push(HeaderRoute {
            header: header.into(),
            value: Box::from(&*rule.value),
            revision,
        });
    }

    // A service reached only by model (path or OpenAI body) needs no host.
    if raw.hosts.is_empty() && raw.models.is_empty() {
        return Err(ErrorKind::EmptyValue {
            field: "hosts".into(),
        });
    }
    for (i, h) in raw.hosts.iter().enumerate() {
        names::checked_host(h).map_err(|reason| ErrorKind::InvalidHost {
            field: format!("hosts[{i}]"),
            value: h.to_string(),
            reason,
        })?;
    }

    let health_check = raw
        .health_check
        .as_deref()
        .map(|h| health_check(h, &raw.name))
        .transpose()?;
    if let Some(HealthCheck {
        probe: ProbeKind::Grpc(_),
        ..
    }) = &health_check
    {
        grpc_probe_targets(&revisions)?;
    }
    let outlier = raw.outlier.as_deref().map(outlier).transpose()?;
    let auto_rollback = raw
        .auto_rollback
        .as_deref()
        .map(|r| {
            if form.canary.is_none() {
                return Err(ErrorKind::Missing {
                    field: "autoRollback",
                    reason: "it needs a canary: latestRolledoutRevision and latestReadyRevision naming two revisions (KServe form)".into(),
                });
            }
            rate_policy("autoRollback", r.max_error_rate, r.min_requests, 50, r.window_ms, 30_000)
        })
        .transpose()?;
    let probe_authority = raw
        .hosts
        .first()
        .map_or_else(|| "localhost".to_owned(), |h| host_key(h))
        .into_boxed_str();
    let sticky = raw
        .sticky
        .as_deref()
        .map(|s| sticky(s, cluster_header, tag_header, openai))
        .transpose()?;
    let exact = match raw.split.as_deref() {
        None | Some("random") => false,
        Some("exact") => true,
        Some(other) => {
            return Err(ErrorKind::InvalidValue {
                field: "split".into(),
                value: other.into(),
                reason: "\"random\" (the default) or \"exact\"",
            })
        }
    };
    let tags = if raw.tag_routing {
        form.tags.into_list()
    } else {
        Vec::new()
    };

    for (i, model) in raw.models.iter().enumerate() {
        names::model_name(model).map_err(|reason| ErrorKind::InvalidValue {
            field: format!("models[{i}]"),
            value: model.to_string(),
            reason,
        })?;
    }

    let mirror = raw
        .mirror
        .as_deref()
        .map(|m| mirror(m, |name| resolve("mirror.revision", name)))
        .transpose()?;
    let steps = raw.steps.as_deref().map(steps).transpose()?;
    let mut split = form.split;
    let mut canary = form.canary;
    if let Some(steps) = &steps {
        let Some(c) = canary.as_mut() else {
            return Err(ErrorKind::Missing {
                field: "latestRolledoutRevision",
                reason: "steps need a canary: latestRolledoutRevision and latestReadyRevision naming two revisions".into(),
            });
        };
        let first = steps.weights.first().copied().unwrap_or(100);
        c.active = first > 0 && first < 100;
        split = Split::new(&[(c.ready, first), (c.rolled, 100 - first)]);
    }

    let policies = Policies {
        health_check,
        outlier,
        auto_rollback,
        sticky,
        steps,
        mirror,
    };
    let some = policies.health_check.is_some()
        || policies.outlier.is_some()
        || policies.auto_rollback.is_some()
        || policies.sticky.is_some()
        || policies.steps.is_some()
        || policies.mirror.is_some();
    Ok(Service {
        name: Box::from(&*raw.name),
        revisions,
        split,
        header_routes,
        canary,
        probe_authority,
        tags,
        exact,
        policies: some.then(|| Box::new(policies)),
    })
}

/// A host `names::checked_host` accepted, as the host table keys it: without its
/// trailing dot, in lowercase.
fn host_key(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

fn compile_revisions(raw: &[RawRevision<'_>]) -> Result<Vec<Revision>, ErrorKind> {
    if raw.is_empty() {
        return Err(ErrorKind::EmptyValue {
            field: "revisions".into(),
        });
    }
    let mut revisions: Vec<Revision> = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let field = |f: &str| format!("revisions[{i}].{f}");
        if r.name.is_empty() {
            return Err(ErrorKind::EmptyValue {
                field: field("name"),
            });
        }
        if let Err(reason) = names::header_value(&r.name) {
            return Err(ErrorKind::InvalidValue {
                field: field("name"),
                value: r.name.to_string(),
                reason,
            });
        }
        if revisions.iter().any(|other| other.name() == &*r.name) {
            return Err(ErrorKind::DuplicateRevision {
                field: field("name"),
                name: r.name.to_string(),
            });
        }
        if r.cluster.is_empty() {
            return Err(ErrorKind::EmptyValue {
                field: field("cluster"),
            });
        }
        if let Err(reason) = names::header_value(&r.cluster) {
            return Err(ErrorKind::InvalidValue {
                field: field("cluster"),
                value: r.cluster.to_string(),
                reason,
            });
        }
        let host = match &r.host {
            None => None,
            Some(h) => Some(
                names::authority(h)
                    .map_err(|reason| ErrorKind::InvalidHost {
                        field: field("host"),
                        value: h.to_string(),
                        reason,
                    })?
                    .into_boxed_str(),
            ),
        };
        revisions.push(Revision::new(&r.name, &r.cluster, host));
    }
    Ok(revisions)
}

/// The split and the tags of one service, whichever form it was written in.
struct Form {
    split: Split,
    tags: FormTags,
    /// KServe form with two distinct revisions: who is canary, who is stable.
    canary: Option<Canary>,
}

/// A form's tags: `(tag, revision index)`.
enum FormTags {
    /// KServe form: `latest` (latestReadyRevision) and, with latestRolledoutRevision,
    /// `prev`; header routes say them before revision names.
    Keywords { latest: usize, prev: Option<usize> },
    /// Traffic form: the targets' tags.
    Named(Vec<(String, usize)>),
}

impl FormTags {
    fn keywords(&self) -> bool {
        matches!(self, FormTags::Keywords { .. })
    }

    fn find(&self, tag: &str) -> Option<usize> {
        match self {
            FormTags::Keywords { latest, prev } => match tag {
                "latest" => Some(*latest),
                "prev" => *prev,
                _ => None,
            },
            FormTags::Named(tags) => tags.iter().find(|(t, _)| t == tag).map(|&(_, r)| r),
        }
    }

    fn into_list(self) -> Vec<(Box<str>, usize)> {
        match self {
            FormTags::Keywords { latest, prev } => [("latest", Some(latest)), ("prev", prev)]
                .into_iter()
                .filter_map(|(t, r)| Some((Box::from(t), r?)))
                .collect(),
            FormTags::Named(tags) => tags.into_iter().map(|(t, r)| (t.into(), r)).collect(),
        }
    }
}

fn kserve_form(
    ready: Option<&str>,
    rolled: Option<&str>,
    percent: Option<i64>,
    revision_count: usize,
    resolve: &dyn Fn(&str, &str) -> Result<usize, ErrorKind>,
) -> Result<Form, ErrorKind> {
    let ready = match ready {
        Some(name) => resolve("latestReadyRevision", name)?,
        None if revision_count == 1 => 0,
        None => {
            return Err(ErrorKind::Missing {
                field: "latestReadyRevision",
                reason: format!("the service has {revision_count} revisions; name the one that serves (or gets the canary share)"),
            })
        }
    };
    let rolled = rolled
        .map(|name| resolve("latestRolledoutRevision", name))
        .transpose()?;
    let percent = match percent {
        Some(p) if !(0..=100).contains(&p) => {
            return Err(ErrorKind::PercentOutOfRange {
                field: "canaryTrafficPercent".into(),
                value: p,
            })
        }
        p => p.map(|p| p as u32),
    };
    let split = match (percent, rolled) {
        // Promoted: the field is absent.
        (None, _) => Split::new(&[(ready, 100)]),
        (Some(_), Some(r)) if r == ready => Split::new(&[(ready, 100)]),
        // The canary owns the low buckets.
        (Some(p), Some(r)) => Split::new(&[(ready, p), (r, 100 - p)]),
        (Some(100), None) => Split::new(&[(ready, 100)]),
        (Some(_), None) if revision_count == 1 => Split::new(&[(ready, 100)]),
        (Some(p), None) => {
            return Err(ErrorKind::Missing {
                field: "latestRolledoutRevision",
                reason: format!(
                "canaryTrafficPercent is {p}, so the other {} percent needs a revision to go to",
                100 - p
            ),
            })
        }
    };
    let canary = rolled.filter(|&r| r != ready).map(|rolled| Canary {
        ready,
        rolled,
        active: percent.is_some_and(|p| p > 0 && p < 100),
    });
    Ok(Form {
        split,
        tags: FormTags::Keywords {
            latest: ready,
            prev: rolled,
        },
        canary,
    })
}

fn traffic_form(
    traffic: &[RawTarget<'_>],
    resolve: &dyn Fn(&str, &str) -> Result<usize, ErrorKind>,
) -> Result<Form, ErrorKind> {
    if traffic.is_empty() {
        return Err(ErrorKind::EmptyValue {
            field: "traffic".into(),
        });
    }
    let mut weights = Vec::with_capacity(traffic.len());
    let mut tags: Vec<(String, usize)> = Vec::new();
    let mut sum: i64 = 0;
    for (i, target) in traffic.iter().enumerate() {
        let revision = resolve(&format!("traffic[{i}].revisionName"), &target.revision_name)?;
        let percent = target.percent.unwrap_or(0);
        if !(0..=100).contains(&percent) {
            return Err(ErrorKind::PercentOutOfRange {
                field: format!("traffic[{i}].percent"),
                value: percent,
            });
        }
        sum += percent;
        weights.push((revision, percent as u32));
        if let Some(raw_tag) = &target.tag {
            let field = format!("traffic[{i}].tag");
            let tag = names::tag(raw_tag).map_err(|reason| ErrorKind::InvalidTag {
                field: field.clone(),
                value: raw_tag.to_string(),
                reason,
            })?;
            if tags.iter().any(|(t, _)| *t == tag) {
                return Err(ErrorKind::DuplicateTag { field, tag });
            }
            tags.push((tag, revision));
        }
    }
    if sum != 100 {
        return Err(ErrorKind::TrafficSum { sum });
    }
    Ok(Form {
        split: Split::new(&weights),
        tags: FormTags::Named(tags),
        canary: None,
    })
}

fn steps(raw: &RawSteps<'_>) -> Result<Steps, ErrorKind> {
    if raw.weights.is_empty() {
        return Err(ErrorKind::EmptyValue {
            field: "steps.weights".into(),
        });
    }
    let mut weights = Vec::with_capacity(raw.weights.len());
    for (i, &w) in raw.weights.iter().enumerate() {
        if !(0..=100).contains(&w) {
            return Err(ErrorKind::PercentOutOfRange {
                field: format!("steps.weights[{i}]"),
                value: w,
            });
        }
        if weights.last().is_some_and(|&last| w < i64::from(last)) {
            return Err(ErrorKind::InvalidValue {
                field: format!("steps.weights[{i}]"),
                value: w.to_string(),
                reason: "weights only go up: a progression never moves users back",
            });
        }
        weights.push(w as u32);
    }
    let interval = bounded(
        "steps.intervalSeconds",
        Some(raw.interval_seconds),
        60,
        1,
        2_592_000,
    )?;
    let start_ms = parse_rfc3339(&raw.start_time).ok_or_else(|| ErrorKind::InvalidValue {
        field: "steps.startTime".into(),
        value: raw.start_time.to_string(),
        reason: "an RFC 3339 time such as 2026-11-23T12:00:00Z",
    })?;
    Ok(Steps {
        weights,
        interval_ms: interval * 1000,
        start_ms,
    })
}

fn mirror(
    raw: &RawMirror<'_>,
    resolve: impl Fn(&str) -> Result<usize, ErrorKind>,
) -> Result<Mirror, ErrorKind> {
    let revision = resolve(&raw.revision)?;
    if !(0..=100).contains(&raw.percent) {
        return Err(ErrorKind::PercentOutOfRange {
            field: "mirror.percent".into(),
            value: raw.percent,
        });
    }
    let max_body = bounded(
        "mirror.maxBodyBytes",
        raw.max_body_bytes,
        DEFAULT_MAX_BODY_BYTES,
        0,
        MAX_BODY_BYTES_LIMIT,
    )?;
    let timeout_ms = bounded(
        "mirror.timeoutMs",
        raw.timeout_ms,
        DEFAULT_TIMEOUT_MS,
        1,
        60_000,
    )?;
    Ok(Mirror {
        revision,
        share: u32::try_from(raw.percent * 100).unwrap_or(0),
        max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
        timeout_ms,
    })
}

fn sticky(
    raw: &RawSticky<'_>,
    cluster_header: &str,
    tag_header: &str,
    openai: bool,
) -> Result<Sticky, ErrorKind> {
    match (
        raw.header.as_deref(),
        raw.cookie.as_deref(),
        raw.body_field.as_deref(),
    ) {
        (None, None, Some(field)) => {
            let invalid = |reason| ErrorKind::InvalidValue {
                field: "sticky.bodyField".into(),
                value: field.to_owned(),
                reason,
            };
            if field.is_empty() || field.chars().any(char::is_control) {
                return Err(invalid(
                    "a top-level field name of OpenAI bodies, such as \"user\"",
                ));
            }
            if openai::keys::RESERVED.contains(&field) {
                return Err(invalid(
                    "the model (or a metadata key canary-router reserves): every user would share one bucket",
                ));
            }
            if !openai {
                return Err(invalid(
                    "body fields are read on OpenAI paths only: it needs the top-level openai section",
                ));
            }
            Ok(Sticky::BodyField(field.into()))
        }
        (Some(h), None, None) => {
            let name = names::header_name(h).map_err(|reason| ErrorKind::InvalidHeaderName {
                field: "sticky.header".into(),
                value: h.to_string(),
                reason,
            })?;
            if name == cluster_header || name == tag_header || name == "cookie" {
                return Err(ErrorKind::InvalidHeaderName {
                    field: "sticky.header".into(),
                    value: h.to_owned(),
                    reason: "the filter strips it, or it is `cookie` (use sticky.cookie)",
                });
            }
            Ok(Sticky::Header(name.into()))
        }
        (None, Some(c), None) => {
            if c.is_empty()
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
            {
                return Err(ErrorKind::InvalidValue {
                    field: "sticky.cookie".into(),
                    value: c.to_owned(),
                    reason: "a cookie name is a token",
                });
            }
            Ok(Sticky::Cookie(c.into()))
        }
        _ => Err(ErrorKind::InvalidValue {
            field: "sticky".into(),
            value: [
                raw.header.as_ref().map(|_| "header"),
                raw.cookie.as_ref().map(|_| "cookie"),
                raw.body_field.as_ref().map(|_| "bodyField"),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and "),
            reason: "set exactly one of header, cookie or bodyField",
        }),
    }
}

/// `service` is the service's name: ModelReady's model unless `model` names another.
fn health_check(raw: &RawHealthCheck<'_>, service: &str) -> Result<HealthCheck, ErrorKind> {
    let probe = match raw.protocol.as_deref() {
        None | Some("http") => http_probe(raw)?,
        Some("grpc") => grpc_probe(raw, service)?,
        Some(other) => {
            return Err(ErrorKind::InvalidValue {
                field: "healthCheck.protocol".into(),
                value: other.into(),
                reason: "\"http\" (the default) or \"grpc\"",
            })
        }
    };
    let interval_ms = bounded(
        "healthCheck.intervalMs",
        raw.interval_ms,
        1000,
        100,
        600_000,
    )?;
    let timeout_ms = bounded(
        "healthCheck.timeoutMs",
        raw.timeout_ms,
        500.min(interval_ms),
        1,
        interval_ms,
    )?;
    let unhealthy = bounded(
        "healthCheck.unhealthyThreshold",
        raw.unhealthy_threshold,
        2,
        1,
        100,
    )?;
    let healthy = bounded(
        "healthCheck.healthyThreshold",
        raw.healthy_threshold,
        1,
        1,
        100,
    )?;
    Ok(HealthCheck {
        probe,
        interval_ms,
        timeout_ms,
        unhealthy_threshold: u32::try_from(unhealthy).unwrap_or(100),
        healthy_threshold: u32::try_from(healthy).unwrap_or(100),
    })
}

/// `GET <path>` (protocol http): the gRPC fields have no say.
fn http_probe(raw: &RawHealthCheck<'_>) -> Result<ProbeKind, ErrorKind> {
    for (field, value) in [
        ("healthCheck.grpcMethod", &raw.grpc_method),
        ("healthCheck.model", &raw.model),
    ] {
        if let Some(value) = value {
            return Err(ErrorKind::InvalidValue {
                field: field.into(),
                value: value.to_string(),
                reason: "it applies to gRPC probes: set healthCheck.protocol to \"grpc\"",
            });
        }
    }
    let path = match raw.path.as_deref() {
        Some(p) => url_path("healthCheck.path", p)?,
        None => "/v2/health/ready".into(),
    };
    Ok(ProbeKind::Http { path })
}

/// A gRPC method (protocol grpc): ModelReady of the service's model unless told otherwise.
fn grpc_probe(raw: &RawHealthCheck<'_>, service: &str) -> Result<ProbeKind, ErrorKind> {
    if let Some(path) = &raw.path {
        return Err(ErrorKind::InvalidValue {
            field: "healthCheck.path".into(),
            value: path.to_string(),
            reason: "it applies to HTTP probes; a gRPC probe calls healthCheck.grpcMethod",
        });
    }
    let method = match raw.grpc_method.as_deref() {
        None => ProbeMethod::ModelReady,
        Some(name) => ProbeMethod::parse(name).ok_or_else(|| ErrorKind::InvalidValue {
            field: "healthCheck.grpcMethod".into(),
            value: name.into(),
            reason: "one of \"inference.GRPCInferenceService/ModelReady\" (the default), \
                     \"inference.GRPCInferenceService/ServerReady\", \"grpc.health.v1.Health/Check\"",
        })?,
    };
    let model = match raw.model.as_deref() {
        Some(model) if method != ProbeMethod::ModelReady => {
            return Err(ErrorKind::InvalidValue {
                field: "healthCheck.model".into(),
                value: model.into(),
                reason: "only ModelReady asks about a model",
            })
        }
        Some(model) => {
            names::model_name(model).map_err(|reason| ErrorKind::InvalidValue {
                field: "healthCheck.model".into(),
                value: model.into(),
                reason,
            })?;
            model
        }
        None => service,
    };
    Ok(ProbeKind::Grpc(GrpcProbe {
        method,
        model: model.into(),
    }))
}

/// Every revision's cluster must fit in the target `dispatch_grpc_call` is given (see
/// `grpc_probe::upstream`).
fn grpc_probe_targets(revisions: &[Revision]) -> Result<(), ErrorKind> {
    for (i, revision) in revisions.iter().enumerate() {
        if grpc_probe::upstream(revision.cluster(), "").is_none() {
            return Err(ErrorKind::InvalidValue {
                field: format!("revisions[{i}].cluster"),
                value: revision.cluster().into(),
                reason: "gRPC probes reach clusters of at most 125 bytes (the SDK passes Envoy \
                         the target as text)",
            });
        }
    }
    Ok(())
}

fn outlier(raw: &RawOutlier) -> Result<Outlier, ErrorKind> {
    Ok(Outlier {
        rate: rate_policy(
            "outlier",
            raw.max_error_rate,
            raw.min_requests,
            20,
            raw.window_ms,
            10_000,
        )?,
        ejection_ms: bounded(
            "outlier.ejectionMs",
            raw.ejection_ms,
            30_000,
            100,
            3_600_000,
        )?,
    })
}

fn rate_policy(
    section: &str,
    max_error_rate: f64,
    min_requests: Option<u64>,
    default_min: u64,
    window_ms: Option<u64>,
    default_window: u64,
) -> Result<RatePolicy, ErrorKind> {
    if !(max_error_rate > 0.0 && max_error_rate <= 1.0) {
        return Err(ErrorKind::InvalidValue {
            field: format!("{section}.maxErrorRate"),
            value: max_error_rate.to_string(),
            reason: "a fraction in (0, 1]: 0.05 is 5%",
        });
    }
    Ok(RatePolicy {
        max_error_rate,
        min_requests: bounded(
            &format!("{section}.minRequests"),
            min_requests,
            default_min,
            1,
            1_000_000_000,
        )?,
        window_ms: bounded(
            &format!("{section}.windowMs"),
            window_ms,
            default_window,
            BUCKET_MS,
            BUCKET_MS * MAX_WINDOW_BUCKETS,
        )?,
    })
}

fn bounded(
    field: &str,
    value: Option<u64>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ErrorKind> {
    match value {
        None => Ok(default),
        Some(v) if (min..=max).contains(&v) => Ok(v),
        Some(v) => Err(ErrorKind::InvalidValue {
            field: field.into(),
            value: v.to_string(),
            reason: match (min, max) {
                (1, 100) => "must be in 1..100",
                (100, 600_000) => "must be in 100..600000 (ms)",
                (1000, 60_000) => "must be in 1000..60000 (ms)",
                (100, 3_600_000) => "must be in 100..3600000 (ms)",
                (1, 2_592_000) => "must be in 1..2592000 (s)",
                (1, 1_000_000_000) => "must be at least 1",
                (1, 60_000) => "must be in 1..60000 (ms)",
                (0, MAX_BODY_BYTES_LIMIT) => "must be in 0..16777216 (bytes)",
                _ => "must be positive and below the interval",
            },
        }),
    }
}

/// A request path the filter matches or sends: absolute, printable, no spaces.
fn url_path(field: &str, value: &str) -> Result<Box<str>, ErrorKind> {
    if !value.starts_with('/') || !value.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(ErrorKind::InvalidValue {
            field: field.into(),
            value: value.to_owned(),
            reason: "a path starts with '/' and has only printable ASCII without spaces",
        });
    }
    Ok(value.into())
}

/// Adds a service's hosts and, with tag routing, its `<tag>-<host>` names to the table.
/// Not inlined into `compile`'s loop: V8 runs a long loop in its baseline code to the end
/// of the call, and a function called per service in its optimised code soon.
#[inline(never)]
fn register_hosts(
    router: &mut Router,
    index: usize,
    service: &Service,
    raw: &RawService<'_>,
) -> Result<(), ErrorKind> {
    for (i, host) in raw.hosts.iter().enumerate() {
        let route = HostRoute {
            service: index,
            tag: None,
        };
        claim(
            router,
            &service.name,
            || format!("hosts[{i}]"),
            host_key(host),
            route,
        )?;
    }
    for (i, model) in raw.models.iter().enumerate() {
        claim_model(router, index, format!("models[{i}]"), model)?;
    }
    if service.tags.is_empty() {
        return Ok(());
    }
    for host in &raw.hosts {
        let host = host_key(host);
        for (tag, revision) in &service.tags {
            let route = HostRoute {
                service: index,
                tag: Some(TagRoute {
                    revision: *revision,
                    authority: host.as_str().into(),
                }),
            };
            claim(
                router,
                &service.name,
                || format!("tag {tag:?} on host {host:?}"),
                format!("{tag}-{host}"),
                route,
            )?;
        }
    }
    Ok(())
}

/// Model names are unique across services: a path names one InferenceService.
fn claim_model(
    router: &mut Router,
    index: usize,
    field: String,
    model: &str,
) -> Result<(), ErrorKind> {
    // A lookup, then an insert: the table's `insert` is linked anyway, `entry` would
    // add its own copy of the probing code to the .wasm.
    let Some(taken) = router.models.get(model) else {
        router.models.insert(
            model.into(),
            HostRoute {
                service: index,
                tag: None,
            },
        );
        return Ok(());
    };
    let reason = if taken.service == index {
        "listed twice"
    } else {
        "another service already serves this model (model names are unique across services)"
    };
    Err(ErrorKind::InvalidValue {
        field,
        value: model.into(),
        reason,
    })
}

fn claim(
    router: &mut Router,
    service: &str,
    field: impl FnOnce() -> String,
    host: String,
    route: HostRoute,
) -> Result<(), ErrorKind> {
    // A lookup, then an insert (see claim_model).
    let Some(existing) = router.hosts.get(host.as_str()) else {
        router.hosts.insert(host.into_boxed_str(), route);
        return Ok(());
    };
    let owner = router
        .services
        .get(existing.service)
        .map_or(service, |s| &*s.name);
    let other = match (existing.tag.is_some(), owner == service) {
        (false, false) => format!("service {owner:?}"),
        (true, false) => format!("a tag host of service {owner:?}"),
        (false, true) => "another host of this service".to_owned(),
        (true, true) => "another tag host of this service".to_owned(),
    };
    Err(ErrorKind::HostConflict {
        field: field(),
        host,
        other,
    })
}

impl Router {
    /// One line for the log after a configuration loads: each service's split
    /// (the first few; a 10,000-service config would flood the log).
    pub fn summary(&self) -> String {
        const SHOWN: usize = 5;
        let mut out = format!(
            "{} service(s), {} host(s)",
            self.services.len(),
            self.hosts.len()
        );
        // Writing to a String cannot fail.
        for service in self.services.iter().take(SHOWN) {
            let _ = write!(out, "; {}:", service.name());
            for (i, (rev, pct)) in service.split_percents().enumerate() {
                let _ = write!(out, "{} {rev} {pct}%", if i == 0 { "" } else { "," });
            }
        }
        if self.services.len() > SHOWN {
            let _ = write!(out, "; and {} more", self.services.len() - SHOWN);
        }
        out
    }
}

#[cfg(test)]
mod tests;
