//! `canary-router render`: KServe's InferenceServices, as `kubectl get isvc -A -o json`
//! prints them, to the manifests that put canary-router in KServe's place on the Istio
//! ingress gateway: one WasmPlugin (a service per InferenceService), a Gateway for their
//! hosts, and a VirtualService per InferenceService with a route per revision, in the
//! shape of istio/wasmplugin.yaml and istio/gateway.yaml.
//!
//! The split follows KServe's own rule (its Knative service reconciler): with
//! `canaryTrafficPercent` N and a rolled-out revision, N% to the latest ready revision
//! and the rest to `latestRolledoutRevision` (tagged `prev`); otherwise 100% to the
//! latest ready revision. Revisions come from the status, the percentage from the spec;
//! where Knative's `traffic` in the status says otherwise (KServe has not caught up),
//! stderr says so. States that route nothing (no ready revision yet, ModelMesh, only
//! cluster-local URLs) are skipped with a note; an object that cannot be read is an
//! error naming it and the field, and then nothing is written.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::kserve::{ComponentStatus, InferenceService, Mode, TAG_ROUTING_ANNOTATION};
use crate::manifest;
use crate::Error;

/// `render`'s default image: a placeholder the README names, to be replaced by the
/// registry `make push` pushed to (`--image-from target/istio`).
pub const PLACEHOLDER_IMAGE: &str = concat!(
    "oci://registry.example.com/canary-router:",
    env!("CARGO_PKG_VERSION")
);
const DEFAULT_CLUSTER_HEADER: &str = "x-canary-cluster";
/// The fields `render` writes from KServe's objects; a policy may not replace them.
const OWNED_SERVICE_FIELDS: &[&str] = &[
    "name",
    "hosts",
    "revisions",
    "latestReadyRevision",
    "latestRolledoutRevision",
    "canaryTrafficPercent",
    "traffic",
    "tagRouting",
];
/// KServe's route for explanations (`constants.ExplainPrefix`).
const EXPLAIN_PATH: &str = r"^/v1/models/[\w-]+:explain$";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "canary-router");

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

pub struct Options {
    pub input: String,
    pub namespace: String,
    pub name: String,
    pub image: Option<String>,
    pub sha256: Option<String>,
    pub image_from: Option<String>,
    pub selector: Vec<String>,
    pub gateway: Option<String>,
    pub policies: Vec<String>,
    pub config: Vec<String>,
    pub local_gateway: String,
    pub output: Format,
}

pub fn run(opts: &Options) -> Result<(), Error> {
    let bytes = manifest::read(&opts.input)?;
    let (text, notes) = render(opts, &bytes)?;
    let mut err = std::io::stderr().lock();
    for note in notes {
        let _ = writeln!(err, "{note}");
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Input(format!("writing standard output: {e}")))
}

/// The manifests, and the notes for stderr. Pure: no I/O but `--image-from` and
/// `@FILE` policies.
pub fn render(opts: &Options, input: &[u8]) -> Result<(String, Vec<String>), Error> {
    let source = manifest::display_name(&opts.input);
    let objects = inference_services(input, source)?;
    let mut notes = Vec::new();
    let mut mapped = Vec::new();
    for isvc in &objects {
        if let Some(m) = map(isvc, &mut notes)
            .map_err(|e| Error::Input(format!("inferenceservice {}: {e}", isvc.id())))?
        {
            mapped.push(m);
        }
    }
    mapped.sort_by(|a, b| (&a.namespace, &a.isvc).cmp(&(&b.namespace, &b.isvc)));
    name_services(&mut mapped);

    let policies = Policies::parse(&opts.policies)?;
    for unused in policies.unmatched(&mapped) {
        notes.push(format!(
            "--policy {unused}: no InferenceService of that name was read; not applied"
        ));
    }
    let mut config = Vec::new();
    for fragment in &opts.config {
        let patch = json_object("--config", fragment)?;
        if patch.contains_key("services") {
            return Err(Error::Input("--config: services are rendered from the InferenceServices; a --config cannot set them".into()));
        }
        config.push(patch);
    }
    let settings = merged(&config);
    let cluster_header = settings
        .get("clusterHeader")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_CLUSTER_HEADER)
        .to_owned();

    let services = mapped
        .iter()
        .map(|m| ServiceConfig {
            policies: policies.for_service(m),
            ..m.service.clone()
        })
        .collect();
    let plugin_config = PluginConfig { settings, services };
    self_check(&plugin_config, &mapped)?;

    let (url, sha256) = image(opts, &mut notes)?;
    let selector = selector(&opts.selector)?;
    let labels = BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())]);
    let mut manifests = vec![Manifest::WasmPlugin(Object {
        api_version: "extensions.istio.io/v1alpha1",
        kind: "WasmPlugin",
        metadata: Meta {
            name: opts.name.clone(),
            namespace: opts.namespace.clone(),
            labels: labels.clone(),
        },
        spec: WasmPluginSpec {
            selector: Selector {
                match_labels: selector.clone(),
            },
            url,
            sha256,
            image_pull_policy: "IfNotPresent",
            phase: "AUTHN",
            priority: 1000,
            fail_strategy: "FAIL_CLOSE",
            plugin_config,
        },
    })];
    let virtual_services: Vec<_> = mapped.iter().map(|m| (m, m.virtual_hosts())).collect();
    let gateway = match &opts.gateway {
        Some(gateway) => gateway.clone(),
        None => {
            let hosts: BTreeSet<String> = virtual_services
                .iter()
                .flat_map(|(_, h)| h.iter().cloned())
                .collect();
            if hosts.is_empty() {
                notes.push("no InferenceService to route: no Gateway rendered, and the WasmPlugin has no services".into());
            } else {
                manifests.push(Manifest::Gateway(Object {
                    api_version: "networking.istio.io/v1",
                    kind: "Gateway",
                    metadata: Meta {
                        name: opts.name.clone(),
                        namespace: opts.namespace.clone(),
                        labels: labels.clone(),
                    },
                    spec: GatewaySpec {
                        selector,
                        servers: vec![Server {
                            port: Port {
                                number: 80,
                                name: "http",
                                protocol: "HTTP",
                            },
                            hosts: hosts.into_iter().collect(),
                        }],
                    },
                }));
            }
            format!("{}/{}", opts.namespace, opts.name)
        }
    };
    for (m, hosts) in virtual_services {
        manifests.push(Manifest::VirtualService(Object {
            api_version: "networking.istio.io/v1",
            kind: "VirtualService",
            metadata: Meta {
                name: format!("{}-canary", m.isvc),
                namespace: m.namespace.clone(),
                labels: labels.clone(),
            },
            spec: m.virtual_service(hosts, &gateway, &cluster_header, &opts.local_gateway),
        }));
    }
    let text = match opts.output {
        Format::Yaml => manifest::to_yaml(
            &format!(
                "# Rendered by canary-router render from {} InferenceService(s) of {source}; check with\n\
                 # `canary-router check`, apply with `kubectl apply -f`.\n",
                objects.len()
            ),
            &manifests,
        )?,
        Format::Json => manifest::to_json_list(&manifests)?,
    };
    Ok((text, notes))
}

/// The objects of `kubectl get inferenceservices -o json` (a `List`) or of `-o json`/`-o
/// yaml` on one object.
fn inference_services(input: &[u8], source: &str) -> Result<Vec<InferenceService>, Error> {
    let fail = |e: String| Error::Input(format!("{source}: {e}"));
    let text = std::str::from_utf8(input).map_err(|e| fail(format!("not UTF-8 text: {e}")))?;
    let docs =
        manifest::yaml_documents(text).map_err(|e| fail(format!("not JSON or YAML: {e}")))?;
    let mut items = Vec::new();
    for doc in docs {
        match doc.get("kind").and_then(Value::as_str) {
            Some("List" | "InferenceServiceList") => match doc.get("items") {
                Some(Value::Array(list)) => items.extend(list.iter().cloned()),
                Some(Value::Null) | None => {}
                Some(_) => return Err(fail("items: not a list".into())),
            },
            _ => items.push(doc),
        }
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let name = item
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("(unnamed)");
            let ns = item
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("default");
            match item.get("kind").and_then(Value::as_str) {
                Some("InferenceService") => {}
                Some(kind) => {
                    return Err(fail(format!(
                        "item {} ({ns}/{name}): kind: {kind} is not an InferenceService",
                        i + 1
                    )))
                }
                None => {
                    return Err(fail(format!(
                        "item {} ({ns}/{name}): kind: missing (expected InferenceService)",
                        i + 1
                    )))
                }
            }
            serde_path_to_error::deserialize(&item).map_err(|e| {
                Error::Input(format!(
                    "inferenceservice {ns}/{name}: {}: {}",
                    e.path(),
                    e.inner()
                ))
            })
        })
        .collect()
}

/// One InferenceService as the filter and Istio will see it.
struct Mapped {
    isvc: String,
    namespace: String,
    service: ServiceConfig,
    /// Per revision: the Kubernetes Service that serves it (host and authority).
    backends: Vec<String>,
    /// Where KServe sends `:explain` requests: (destination, authority).
    explainer: Option<(Option<String>, String)>,
}

impl Mapped {
    /// The hosts the VirtualService (and so the Gateway) must accept: the service's hosts
    /// and, with tag routing, the tag hosts the filter answers.
    fn virtual_hosts(&self) -> Vec<String> {
        let mut hosts = self.service.hosts.clone();
        if self.service.tag_routing {
            let mut tags = vec!["latest"];
            if self.service.latest_rolledout_revision.is_some() {
                tags.push("prev");
            }
            for tag in tags {
                hosts.extend(self.service.hosts.iter().map(|h| format!("{tag}-{h}")));
            }
        }
        hosts
    }

    fn virtual_service(
        &self,
        hosts: Vec<String>,
        gateway: &str,
        cluster_header: &str,
        local_gateway: &str,
    ) -> VirtualServiceSpec {
        let mut http = Vec::new();
        if let Some((destination, authority)) = &self.explainer {
            http.push(HttpRoute {
                name: "explainer".into(),
                matches: vec![Match {
                    uri: Some(Regex {
                        regex: EXPLAIN_PATH,
                    }),
                    ..Match::default()
                }],
                rewrite: Some(Rewrite {
                    authority: authority.clone(),
                }),
                route: Some(vec![Destination::to(
                    destination.as_deref().unwrap_or(local_gateway),
                )]),
                direct_response: None,
            });
        }
        for (revision, backend) in self.service.revisions.iter().zip(&self.backends) {
            http.push(HttpRoute {
                name: revision.name.clone(),
                matches: vec![Match {
                    headers: Some(BTreeMap::from([(
                        cluster_header.to_owned(),
                        Exact {
                            exact: revision.cluster.clone(),
                        },
                    )])),
                    ..Match::default()
                }],
                rewrite: Some(Rewrite {
                    authority: backend.clone(),
                }),
                route: Some(vec![Destination::to(backend)]),
                direct_response: None,
            });
        }
        // Reached only if the filter did not route the request: refuse rather than guess.
        http.push(HttpRoute {
            name: "not-routed".into(),
            matches: Vec::new(),
            rewrite: None,
            route: None,
            direct_response: Some(DirectResponse {
                status: 503,
                body: Body {
                    string: "canary-router did not route this request\n",
                },
            }),
        });
        VirtualServiceSpec {
            hosts,
            gateways: vec![gateway.to_owned()],
            http,
        }
    }
}

/// The revisions of the component that takes the InferenceService's traffic, in the
/// filter's KServe form.
struct Split {
    revisions: Vec<String>,
    rolled: Option<String>,
    ready: String,
    percent: Option<i64>,
}

/// `Ok(None)`: a state that routes nothing, with the reason in `notes`.
fn map(isvc: &InferenceService, notes: &mut Vec<String>) -> Result<Option<Mapped>, String> {
    let id = isvc.id();
    let (name, ns) = (
        isvc.metadata.name.as_str(),
        isvc.metadata.namespace.as_str(),
    );
    let mut note = |text: String| notes.push(format!("inferenceservice {id}: {text}"));
    let mode = isvc.mode()?;
    if mode == Mode::ModelMesh {
        note("skipped: ModelMesh serves its models through one shared Service, not per InferenceService".into());
        return Ok(None);
    }
    // KServe's ingress sends the InferenceService's host to the transformer when there is
    // one (it calls the predictor inside the cluster), else to the predictor.
    let (entry, spec) = match &isvc.spec.transformer {
        Some(t) => ("transformer", Some(t)),
        None => ("predictor", isvc.spec.predictor.as_ref()),
    };
    let canary = spec.and_then(|s| s.canary_traffic_percent);
    if let Some(p) = canary.filter(|p| !(0..=100).contains(p)) {
        return Err(format!(
            "spec.{entry}.canaryTrafficPercent: {p} is outside 0..100"
        ));
    }
    let not_ready = isvc
        .condition("Ready")
        .filter(|c| c.status != "True")
        .map(|c| {
            let message = c
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            format!(
                "not Ready ({}{message})",
                c.reason.as_deref().unwrap_or("no reason given")
            )
        });
    let Some(status) = isvc.status.components.get(entry) else {
        let why = not_ready.as_deref().unwrap_or("no status");
        note(format!(
            "skipped: no status.components.{entry} yet ({why}): KServe routes nothing to it either"
        ));
        return Ok(None);
    };
    let hosts = external_hosts(isvc, status, entry)?;
    if hosts.is_empty() {
        note(
            "skipped: no external URL (cluster-local only): the ingress gateway does not serve it"
                .into(),
        );
        return Ok(None);
    }
    let split = match mode {
        Mode::Knative => {
            let Some(split) = knative_split(status, canary, &mut note) else {
                return Ok(None);
            };
            split
        }
        Mode::Raw | Mode::ModelMesh => raw_split(status, name, entry, canary, &mut note)?,
    };
    if let Some(reason) = &not_ready {
        note(format!(
            "{reason}; rendered from the revisions its status names"
        ));
    }
    if let Some(generation) = isvc.unreconciled_generation() {
        note(format!(
            "KServe has not reconciled generation {generation} of its spec yet; its status may lag"
        ));
    }
    if entry == "transformer" {
        note("the transformer takes the split (KServe routes the InferenceService's host to it); it calls the predictor inside the cluster, where Knative splits the predictor's revisions".into());
    }
    let cluster_local = |service: &str| format!("{service}.{ns}.svc.cluster.local");
    let explainer = isvc.spec.explainer.as_ref().map(|_| {
        let service = format!("{name}-explainer");
        note(format!(
            "`:explain` requests go to the explainer {service}, as KServe routes them; x-canary-revision on their responses names the {entry} revision the filter picked"
        ));
        // Serverless: through Knative's local gateway, as KServe's own route does.
        let destination = (mode != Mode::Knative).then(|| cluster_local(&service));
        (destination, cluster_local(&service))
    });
    let tag_routing = isvc.annotation(TAG_ROUTING_ANNOTATION) == Some("true");
    if !tag_routing {
        // KServe tags the rolled-out revision `prev` even without the annotation; the
        // filter's tag hosts come in pairs, with the annotation.
        let tagged: Vec<String> = status
            .traffic
            .iter()
            .filter_map(|t| {
                Some(format!(
                    "{} ({})",
                    t.tag.as_deref()?,
                    t.revision_name.as_deref()?
                ))
            })
            .collect();
        if !tagged.is_empty() {
            note(format!(
                "status.traffic tags {} but {TAG_ROUTING_ANNOTATION} is not \"true\": no tag hosts are routed (annotate it to route latest- and prev-)",
                tagged.join(", ")
            ));
        }
    }
    Ok(Some(Mapped {
        isvc: name.to_owned(),
        namespace: ns.to_owned(),
        backends: split.revisions.iter().map(|r| cluster_local(r)).collect(),
        service: ServiceConfig {
            name: name.to_owned(),
            hosts,
            revisions: split
                .revisions
                .iter()
                .map(|r| Revision {
                    name: r.clone(),
                    cluster: format!("{r}.{ns}"),
                })
                .collect(),
            latest_rolledout_revision: split.rolled,
            latest_ready_revision: split.ready,
            canary_traffic_percent: split.percent,
            tag_routing,
            policies: Map::new(),
        },
        explainer,
    }))
}

/// The hosts of `status.url` and the component's URL, in that order, without
/// cluster-local ones.
fn external_hosts(
    isvc: &InferenceService,
    status: &ComponentStatus,
    entry: &str,
) -> Result<Vec<String>, String> {
    let mut hosts = Vec::new();
    for (field, url) in [
        ("status.url".to_owned(), &isvc.status.url),
        (format!("status.components.{entry}.url"), &status.url),
    ] {
        let Some(url) = url else { continue };
        if let Some(host) = external_host(url).map_err(|e| format!("{field}: {e}"))? {
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    Ok(hosts)
}

/// KServe's rule over Knative revisions; `None` when no revision is ready yet.
fn knative_split(
    status: &ComponentStatus,
    canary: Option<i64>,
    note: &mut impl FnMut(String),
) -> Option<Split> {
    let Some(ready) = status.latest_ready_revision.clone() else {
        let created = status
            .latest_created_revision
            .as_deref()
            .map(|r| format!(" ({r} created)"))
            .unwrap_or_default();
        note(format!(
            "skipped: no ready revision yet{created}: KServe routes nothing to it either"
        ));
        return None;
    };
    let rolled = status.latest_rolledout_revision.clone();
    let live = match (canary, rolled) {
        (Some(p), Some(r)) if p < 100 && r != ready => Some((r, p)),
        (Some(p), None) => {
            note(format!("canaryTrafficPercent {p} before the first rollout (no latestRolledoutRevision): 100% to {ready}, as KServe routes it"));
            None
        }
        _ => None,
    };
    if let Some(created) = status
        .latest_created_revision
        .as_ref()
        .filter(|c| **c != ready)
    {
        note(format!(
            "latestCreatedRevision {created} is not ready: it gets no traffic until it is"
        ));
    }
    compare_with_traffic(
        status,
        live.as_ref().map(|(r, p)| (r.as_str(), *p)),
        &ready,
        note,
    );
    Some(match live {
        Some((rolled, p)) => Split {
            revisions: vec![rolled.clone(), ready.clone()],
            rolled: Some(rolled),
            ready,
            percent: Some(p),
        },
        None => Split {
            revisions: vec![ready.clone()],
            rolled: None,
            ready,
            percent: None,
        },
    })
}

/// A raw deployment has no revisions: its one revision is the component's Service.
fn raw_split(
    status: &ComponentStatus,
    name: &str,
    entry: &str,
    canary: Option<i64>,
    note: &mut impl FnMut(String),
) -> Result<Split, String> {
    let address = status.address.as_ref().and_then(|a| a.url.as_deref());
    let service = match address {
        Some(url) => host_of(url)
            .map_err(|e| format!("status.components.{entry}.address.url: {e}"))?
            .split('.')
            .next()
            .unwrap_or_default()
            .to_owned(),
        None => format!("{name}-{entry}"),
    };
    let ignored = if canary.is_some() {
        " (canaryTrafficPercent needs Knative revisions: ignored, as KServe ignores it)"
    } else {
        ""
    };
    note(format!(
        "RawDeployment: no revisions, so one revision: the {entry} Service {service}{ignored}"
    ));
    Ok(Split {
        revisions: vec![service.clone()],
        rolled: None,
        ready: service,
        percent: None,
    })
}

/// Knative's `traffic` is what the revisions get now; the spec is what KServe will set.
fn compare_with_traffic(
    status: &ComponentStatus,
    split: Option<(&str, i64)>,
    ready: &str,
    note: &mut impl FnMut(String),
) {
    if status.traffic.is_empty() {
        return;
    }
    let mut observed: BTreeMap<&str, i64> = BTreeMap::new();
    for t in &status.traffic {
        if let Some(rev) = t.revision_name.as_deref() {
            *observed.entry(rev).or_default() += t.percent.unwrap_or(0);
        }
    }
    observed.retain(|_, p| *p != 0);
    let mut rendered = BTreeMap::from([(ready, 100)]);
    if let Some((rolled, p)) = split {
        rendered = BTreeMap::from([(rolled, 100 - p), (ready, p)]);
    }
    rendered.retain(|_, p| *p != 0);
    if observed != rendered {
        let show = |m: &BTreeMap<&str, i64>| {
            m.iter()
                .map(|(r, p)| format!("{r} {p}%"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        note(format!(
            "status.traffic shows {} where the spec says {}: KServe has not applied it yet; rendered as the spec says",
            show(&observed),
            show(&rendered)
        ));
    }
}

/// The host of an InferenceService URL, lowercase; `None` for a cluster-local one
/// (`<name>.<namespace>.svc[.<cluster domain>]`), which the ingress gateway never sees.
fn external_host(url: &str) -> Result<Option<String>, String> {
    let host = host_of(url)?;
    Ok((host.split('.').nth(2) != Some("svc")).then_some(host))
}

fn host_of(url: &str) -> Result<String, String> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match (uri.scheme(), uri.host()) {
        (Some(_), Some(host)) => Ok(host.to_ascii_lowercase()),
        _ => Err(format!("{url:?} is not a URL with a scheme and a host")),
    }
}

/// Service names are the InferenceService names, which users know from `kubectl get
/// isvc`; a name used in two namespaces becomes `<name>.<namespace>` there.
fn name_services(mapped: &mut [Mapped]) {
    let mut namespaces: BTreeMap<String, usize> = BTreeMap::new();
    for m in mapped.iter() {
        *namespaces.entry(m.isvc.clone()).or_default() += 1;
    }
    for m in mapped.iter_mut() {
        if namespaces.get(&m.isvc).copied().unwrap_or(0) > 1 {
            m.service.name = format!("{}.{}", m.isvc, m.namespace);
        }
    }
}

/// `--policy JSON` (every service) and `--policy NAME=JSON` (the InferenceService NAME or
/// NAMESPACE/NAME); `@FILE` instead of JSON reads it from a file.
struct Policies {
    all: Vec<Map<String, Value>>,
    named: Vec<(String, Map<String, Value>)>,
}

impl Policies {
    fn parse(args: &[String]) -> Result<Self, Error> {
        let mut policies = Policies {
            all: Vec::new(),
            named: Vec::new(),
        };
        for arg in args {
            let trimmed = arg.trim_start();
            match trimmed.split_once('=') {
                Some((name, fragment)) if !trimmed.starts_with(['{', '@']) => {
                    let patch = json_object(&format!("--policy {name}"), fragment)?;
                    policies.named.push((
                        name.to_owned(),
                        owned_fields_free(&format!("--policy {name}"), patch)?,
                    ));
                }
                _ => {
                    let patch = json_object("--policy", arg)?;
                    policies.all.push(owned_fields_free("--policy", patch)?);
                }
            }
        }
        Ok(policies)
    }

    fn matches(name: &str, m: &Mapped) -> bool {
        name == m.isvc || name == format!("{}/{}", m.namespace, m.isvc)
    }

    fn unmatched(&self, mapped: &[Mapped]) -> Vec<String> {
        self.named
            .iter()
            .filter(|(name, _)| !mapped.iter().any(|m| Self::matches(name, m)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Every all-services fragment, then the service's own, in order.
    fn for_service(&self, m: &Mapped) -> Map<String, Value> {
        let named = self
            .named
            .iter()
            .filter(|(n, _)| Self::matches(n, m))
            .map(|(_, p)| p);
        merged(self.all.iter().chain(named))
    }
}

/// The fragments merged in order into an empty object (RFC 7386: a later value wins,
/// `null` removes the field).
fn merged<'a>(patches: impl IntoIterator<Item = &'a Map<String, Value>>) -> Map<String, Value> {
    let mut out = Value::Object(Map::new());
    for patch in patches {
        json_patch::merge(&mut out, &Value::Object(patch.clone()));
    }
    match out {
        Value::Object(map) => map,
        // Objects merged into an object stay one.
        _ => Map::new(),
    }
}

fn owned_fields_free(what: &str, patch: Map<String, Value>) -> Result<Map<String, Value>, Error> {
    match OWNED_SERVICE_FIELDS
        .iter()
        .find(|f| patch.contains_key(**f))
    {
        Some(field) => Err(Error::Input(format!(
            "{what}: {field} is rendered from the InferenceService; a policy cannot set it"
        ))),
        None => Ok(patch),
    }
}

/// A JSON object given inline or as `@FILE`.
fn json_object(what: &str, arg: &str) -> Result<Map<String, Value>, Error> {
    let text = match arg.trim_start().strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Error::Input(format!("{what}: {path}: {e}")))?,
        None => arg.to_owned(),
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::Input(format!(
            "{what}: expected a JSON object, got {text}"
        ))),
        Err(e) => Err(Error::Input(format!("{what}: not JSON: {e}"))),
    }
}

/// The rendered pluginConfig through the filter's own compiler, as Istio will hand it
/// over: render never writes what the gateway would refuse.
fn self_check(config: &PluginConfig, mapped: &[Mapped]) -> Result<(), Error> {
    let value =
        serde_json::to_value(config).map_err(|e| Error::Input(format!("pluginConfig: {e}")))?;
    canary_router::parse(&manifest::istio_json(&value)).map(|_| ()).map_err(|e| {
        let object = e
            .service
            .as_deref()
            .and_then(|s| mapped.iter().find(|m| m.service.name == s))
            .map(|m| format!("inferenceservice {}/{}: ", m.namespace, m.isvc))
            .unwrap_or_default();
        Error::Input(format!("{object}the filter would refuse the rendered pluginConfig: configuration rejected: {e}"))
    })
}

/// `--image`/`--sha256`, or the url and sha256 that `make push` wrote into
/// target/istio/wasmplugin.yaml (`--image-from`), or the placeholder.
fn image(opts: &Options, notes: &mut Vec<String>) -> Result<(String, Option<String>), Error> {
    let (url, sha256) = match &opts.image_from {
        Some(path) => {
            let file = if std::path::Path::new(path).is_dir() {
                format!("{path}/wasmplugin.yaml")
            } else {
                path.clone()
            };
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Error::Input(format!("--image-from: {file}: {e}")))?;
            let docs = manifest::yaml_documents(&text)
                .map_err(|e| Error::Input(format!("--image-from: {file}: {e}")))?;
            let plugin = docs
                .iter()
                .find(|d| d.get("kind").and_then(Value::as_str) == Some("WasmPlugin"))
                .ok_or_else(|| {
                    Error::Input(format!("--image-from: {file}: no WasmPlugin in it"))
                })?;
            let field = |f: &str| {
                plugin
                    .pointer(&format!("/spec/{f}"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let url = field("url")
                .ok_or_else(|| Error::Input(format!("--image-from: {file}: spec.url: missing")))?;
            (url, field("sha256"))
        }
        None => match &opts.image {
            Some(url) => (url.clone(), opts.sha256.clone()),
            None => {
                notes.push(format!(
                    "no --image: the WasmPlugin's url is the placeholder {PLACEHOLDER_IMAGE}; give the image `make push` pushed (--image-from target/istio, or --image and --sha256)"
                ));
                (PLACEHOLDER_IMAGE.to_owned(), opts.sha256.clone())
            }
        },
    };
    if let Some(digest) = &sha256 {
        if digest.len() != 64
            || !digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(Error::Input(format!("sha256: {digest:?} is not 64 lowercase hex digits (Istio compares it with the image manifest digest)")));
        }
    }
    Ok((url, sha256))
}

fn selector(args: &[String]) -> Result<BTreeMap<String, String>, Error> {
    if args.is_empty() {
        return Ok(BTreeMap::from([(
            "istio".to_owned(),
            "ingressgateway".to_owned(),
        )]));
    }
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(Error::Input(format!(
                "--selector: {a:?} is not LABEL=VALUE"
            ))),
        })
        .collect()
}

// The manifests, field for field as Istio's CRDs name them and in the order istio/*.yaml
// writes them.

#[derive(Serialize)]
#[serde(untagged)]
enum Manifest {
    WasmPlugin(Object<WasmPluginSpec>),
    Gateway(Object<GatewaySpec>),
    VirtualService(Object<VirtualServiceSpec>),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Object<S> {
    api_version: &'static str,
    kind: &'static str,
    metadata: Meta,
    spec: S,
}

#[derive(Serialize)]
struct Meta {
    name: String,
    namespace: String,
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmPluginSpec {
    selector: Selector,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    image_pull_policy: &'static str,
    /// First in the chain: the routing header is stripped before any other filter sees it.
    phase: &'static str,
    priority: u32,
    /// Requests fail (503) rather than reach the VirtualService without the filter, where
    /// a client-sent cluster header would pick the revision.
    fail_strategy: &'static str,
    plugin_config: PluginConfig,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Selector {
    match_labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct PluginConfig {
    /// `--config`: top-level settings (statusPath, metrics, header names, ...).
    #[serde(flatten)]
    settings: Map<String, Value>,
    services: Vec<ServiceConfig>,
}

#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
struct ServiceConfig {
    name: String,
    hosts: Vec<String>,
    revisions: Vec<Revision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latest_rolledout_revision: Option<String>,
    latest_ready_revision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    canary_traffic_percent: Option<i64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tag_routing: bool,
    /// `--policy`: health checks, outlier ejection, sticky users, ...
    #[serde(flatten)]
    policies: Map<String, Value>,
}

#[derive(Serialize, Clone)]
struct Revision {
    name: String,
    cluster: String,
}

#[derive(Serialize)]
struct GatewaySpec {
    selector: BTreeMap<String, String>,
    servers: Vec<Server>,
}

#[derive(Serialize)]
struct Server {
    port: Port,
    hosts: Vec<String>,
}

#[derive(Serialize)]
struct Port {
    number: u16,
    name: &'static str,
    protocol: &'static str,
}

#[derive(Serialize)]
struct VirtualServiceSpec {
    hosts: Vec<String>,
    gateways: Vec<String>,
    http: Vec<HttpRoute>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpRoute {
    name: String,
    #[serde(rename = "match", skip_serializing_if = "Vec::is_empty")]
    matches: Vec<Match>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rewrite: Option<Rewrite>,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<Vec<Destination>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direct_response: Option<DirectResponse>,
}

#[derive(Serialize, Default)]
struct Match {
    #[serde(skip_serializing_if = "Option::is_none")]
    uri: Option<Regex>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<BTreeMap<String, Exact>>,
}

#[derive(Serialize)]
struct Regex {
    regex: &'static str,
}

#[derive(Serialize)]
struct Exact {
    exact: String,
}

#[derive(Serialize)]
struct Rewrite {
    authority: String,
}

#[derive(Serialize)]
struct Destination {
    destination: Host,
}

impl Destination {
    fn to(host: &str) -> Self {
        Destination {
            destination: Host {
                host: host.to_owned(),
                port: Number { number: 80 },
            },
        }
    }
}

#[derive(Serialize)]
struct Host {
    host: String,
    port: Number,
}

#[derive(Serialize)]
struct Number {
    number: u16,
}

#[derive(Serialize)]
struct DirectResponse {
    status: u16,
    body: Body,
}

#[derive(Serialize)]
struct Body {
    string: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(policies: &[&str]) -> Options {
        Options {
            input: "-".into(),
            namespace: "istio-system".into(),
            name: "canary-router".into(),
            image: None,
            sha256: None,
            image_from: None,
            selector: Vec::new(),
            gateway: None,
            policies: policies.iter().map(|p| (*p).to_owned()).collect(),
            config: Vec::new(),
            local_gateway: "knative-local-gateway.istio-system.svc.cluster.local".into(),
            output: Format::Json,
        }
    }

    /// The canary fixture, also in namespace `team-b` (its URLs moved there too).
    fn two_namespaces() -> Vec<u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cli/isvc/canary.json");
        let one = std::fs::read_to_string(path).unwrap();
        let other = one.replace("kserve-test", "team-b");
        format!(r#"{{"apiVersion": "v1", "kind": "List", "items": [{one}, {other}]}}"#).into_bytes()
    }

    fn services(text: &str) -> Vec<Value> {
        let list: Value = serde_json::from_str(text).unwrap();
        list["items"][0]["spec"]["pluginConfig"]["services"]
            .as_array()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_name_in_two_namespaces_is_qualified_and_policies_pick_by_namespace() {
        let opts = options(&[r#"team-b/sklearn-iris={"sticky": {"header": "x-user"}}"#]);
        let (text, notes) = render(&opts, &two_namespaces()).unwrap();
        let services = services(&text);
        let names: Vec<&str> = services
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["sklearn-iris.kserve-test", "sklearn-iris.team-b"]);
        assert!(services[0].get("sticky").is_none());
        assert_eq!(services[1]["sticky"]["header"], "x-user");
        assert_eq!(
            services[1]["revisions"][0]["cluster"],
            "sklearn-iris-predictor-00001.team-b"
        );
        assert!(notes.iter().all(|n| !n.contains("--policy")), "{notes:?}");
    }

    #[test]
    fn a_plain_name_policy_applies_in_every_namespace() {
        let opts = options(&[r#"sklearn-iris={"metrics": true}"#]);
        // `metrics` is a top-level field: the filter refuses it in a service, and render
        // says so before writing anything.
        let Err(Error::Input(e)) = render(&opts, &two_namespaces()) else {
            panic!("accepted")
        };
        assert!(
            e.contains("configuration rejected: service \"sklearn-iris.kserve-test\""),
            "{e}"
        );
        assert!(
            e.starts_with("inferenceservice kserve-test/sklearn-iris: "),
            "{e}"
        );
        let opts = options(&[r#"sklearn-iris={"split": "exact"}"#]);
        let (text, _) = render(&opts, &two_namespaces()).unwrap();
        assert!(services(&text).iter().all(|s| s["split"] == "exact"));
    }

    #[test]
    fn hosts_leave_out_cluster_local_urls() {
        assert_eq!(external_host("http://a.b.svc.cluster.local").unwrap(), None);
        assert_eq!(external_host("http://a.b.svc").unwrap(), None);
        assert_eq!(
            external_host("http://Sklearn-Iris.kserve-test.example.com:8080/x")
                .unwrap()
                .as_deref(),
            Some("sklearn-iris.kserve-test.example.com")
        );
        assert!(external_host("sklearn-iris").is_err());
    }
}
