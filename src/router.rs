//! The compiled routing table and the per-request decision. Built once per
//! configuration (see `config`), read-only afterwards: lookups are one hash probe on a
//! stack-normalised key, decisions touch no JSON and allocate nothing of their own.

use std::collections::HashMap;

use crate::authority::{lookup_key, KeyBuf, KEY_CAPACITY};
use crate::rng::Rng;
use crate::split::Split;

pub const DEFAULT_CLUSTER_HEADER: &str = "x-canary-cluster";
pub const DEFAULT_REVISION_HEADER: &str = "x-canary-revision";

#[derive(Debug)]
pub struct Router {
    pub(crate) cluster_header: Box<str>,
    pub(crate) revision_header: Box<str>,
    pub(crate) upstream_revision_header: bool,
    /// Every authority the filter answers, plain and tagged, lowercased without port.
    pub(crate) hosts: HashMap<Box<str>, HostRoute>,
    pub(crate) services: Vec<Service>,
}

#[derive(Debug)]
pub struct Service {
    pub(crate) name: Box<str>,
    pub(crate) revisions: Vec<Revision>,
    pub(crate) split: Split,
    pub(crate) header_routes: Vec<HeaderRoute>,
}

#[derive(Debug)]
pub struct Revision {
    pub(crate) name: Box<str>,
    pub(crate) cluster: Box<str>,
    /// Authority to send upstream instead of the client's.
    pub(crate) host: Option<Box<str>>,
}

#[derive(Debug)]
pub struct HeaderRoute {
    pub(crate) header: Box<str>,
    pub(crate) value: Box<str>,
    pub(crate) revision: usize,
}

/// What a host of the table leads to.
#[derive(Debug)]
pub struct HostRoute {
    pub(crate) service: usize,
    pub(crate) tag: Option<TagRoute>,
}

/// A `<tag>-<host>` authority: one revision, whatever the split says.
#[derive(Debug)]
pub struct TagRoute {
    pub(crate) revision: usize,
    /// The untagged host, or the revision's own `host` where set.
    pub(crate) authority: Box<str>,
}

/// The revision picked for a request, kept by the HTTP context until the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub service: usize,
    pub revision: usize,
}

/// What the glue must do to the upstream request.
#[derive(Debug, PartialEq, Eq)]
pub struct Decision<'a> {
    pub choice: Choice,
    pub cluster: &'a str,
    pub revision: &'a str,
    /// New `:authority`, if it changes.
    pub authority: Option<&'a str>,
}

impl Default for Router {
    fn default() -> Self {
        Router {
            cluster_header: DEFAULT_CLUSTER_HEADER.into(),
            revision_header: DEFAULT_REVISION_HEADER.into(),
            upstream_revision_header: false,
            hosts: HashMap::new(),
            services: Vec::new(),
        }
    }
}

impl Router {
    pub fn cluster_header(&self) -> &str {
        &self.cluster_header
    }

    pub fn revision_header(&self) -> &str {
        &self.revision_header
    }

    pub fn upstream_revision_header(&self) -> bool {
        self.upstream_revision_header
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The route for a request authority, or `None` for a host this filter does not serve.
    pub fn lookup(&self, authority: &str) -> Option<&HostRoute> {
        let mut buf: KeyBuf = [0; KEY_CAPACITY];
        let key = lookup_key(authority, &mut buf)?;
        self.hosts.get(key)
    }

    /// Picks the revision: tag, then header routes (first match), then the split.
    /// `header` reads one request header; it is called at most once per rule, and only
    /// for untagged requests of services that have rules.
    pub fn decide<'a, H>(&'a self, route: &'a HostRoute, mut header: H, rng: &mut Rng) -> Option<Decision<'a>>
    where
        H: FnMut(&str) -> Option<String>,
    {
        let service = self.services.get(route.service)?;
        let (revision, tag_authority) = match &route.tag {
            Some(tag) => (tag.revision, Some(&*tag.authority)),
            None => {
                let by_header = match_header_routes(&service.header_routes, &mut header);
                (by_header.unwrap_or_else(|| service.split.pick(rng)), None)
            }
        };
        let chosen = service.revisions.get(revision)?;
        Some(Decision {
            choice: Choice {
                service: route.service,
                revision,
            },
            cluster: &chosen.cluster,
            revision: &chosen.name,
            authority: chosen.host.as_deref().or(tag_authority),
        })
    }

    /// The revision name to put on the response of a routed request.
    pub fn revision_name(&self, choice: Choice) -> Option<&str> {
        let service = self.services.get(choice.service)?;
        service.revisions.get(choice.revision).map(|r| &*r.name)
    }
}

/// The revision of the first rule whose header has exactly its value. Consecutive
/// rules on the same header read it once.
fn match_header_routes<H>(routes: &[HeaderRoute], header: &mut H) -> Option<usize>
where
    H: FnMut(&str) -> Option<String>,
{
    let mut last: Option<(&str, Option<String>)> = None;
    for rule in routes {
        let fresh = !matches!(&last, Some((name, _)) if *name == &*rule.header);
        if fresh {
            last = Some((&rule.header, header(&rule.header)));
        }
        if let Some((_, Some(value))) = &last {
            if value.as_str() == &*rule.value {
                return Some(rule.revision);
            }
        }
    }
    None
}

impl Service {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `(revision name, percent)` of the split, in bucket order, for logs and status.
    pub fn split_percents(&self) -> impl Iterator<Item = (&str, u32)> + '_ {
        self.split.percents().filter_map(move |(rev, pct)| {
            self.revisions.get(rev).map(|r| (&*r.name, pct))
        })
    }
}

impl HostRoute {
    pub fn service(&self) -> usize {
        self.service
    }

    pub fn is_tagged(&self) -> bool {
        self.tag.is_some()
    }
}
