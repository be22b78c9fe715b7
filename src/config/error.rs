//! Why a plugin configuration was refused. Each message names the service (when the
//! problem is inside one), the field and the offending value, because that single log
//! line is all an operator sees when Envoy or Istio refuses the filter. Values are
//! quoted with `{:?}`: control characters and invisible or bidi-reordering characters
//! come out escaped, so a value cannot disguise the line it is logged in.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The service the problem is in, `None` for top-level fields.
    pub service: Option<String>,
    pub kind: ErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// No configuration bytes at all.
    Empty,
    /// Not JSON, unknown field, or a value of the wrong type; `path` locates it.
    Json {
        path: String,
        message: String,
    },
    PercentOutOfRange {
        field: String,
        value: i64,
    },
    TrafficSum {
        sum: i64,
    },
    UnknownRevision {
        field: String,
        value: String,
    },
    DuplicateRevision {
        field: String,
        name: String,
    },
    DuplicateService {
        name: String,
    },
    DuplicateTag {
        field: String,
        tag: String,
    },
    /// A host (or generated tag host) that two services, or two tags, would both answer.
    HostConflict {
        field: String,
        host: String,
        other: String,
    },
    EmptyValue {
        field: String,
    },
    InvalidHeaderName {
        field: String,
        value: String,
        reason: &'static str,
    },
    InvalidHost {
        field: String,
        value: String,
        reason: &'static str,
    },
    InvalidTag {
        field: String,
        value: String,
        reason: &'static str,
    },
    InvalidValue {
        field: String,
        value: String,
        reason: &'static str,
    },
    /// KServe fields and the Knative `traffic` list in one service.
    MixedForms {
        kserve_field: &'static str,
    },
    Missing {
        field: &'static str,
        reason: String,
    },
}

impl ConfigError {
    pub fn top(kind: ErrorKind) -> Self {
        ConfigError {
            service: None,
            kind,
        }
    }

    pub fn in_service(service: &str, kind: ErrorKind) -> Self {
        ConfigError {
            service: Some(service.to_owned()),
            kind,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(service) = &self.service {
            write!(f, "service {service:?}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Empty => write!(
                f,
                "the plugin configuration is empty; expected a JSON object with \"services\""
            ),
            ErrorKind::Json { path, message } if path.is_empty() || path == "." => {
                write!(f, "{message}")
            }
            ErrorKind::Json { path, message } => write!(f, "{path}: {message}"),
            ErrorKind::PercentOutOfRange { field, value } => {
                write!(f, "{field}: {value} is outside 0..100")
            }
            ErrorKind::TrafficSum { sum } => write!(
                f,
                "traffic: percents sum to {sum}, they must sum to exactly 100"
            ),
            ErrorKind::UnknownRevision { field, value } => {
                write!(f, "{field}: {value:?} is not a revision of this service")
            }
            ErrorKind::DuplicateRevision { field, name } => {
                write!(f, "{field}: revision name {name:?} is used twice")
            }
            ErrorKind::DuplicateService { name } => {
                write!(f, "name: service name {name:?} is used twice")
            }
            ErrorKind::DuplicateTag { field, tag } => {
                write!(f, "{field}: tag {tag:?} is used twice")
            }
            ErrorKind::HostConflict { field, host, other } => {
                write!(f, "{field}: host {host:?} is already claimed by {other}")
            }
            ErrorKind::EmptyValue { field } => write!(f, "{field}: must not be empty"),
            ErrorKind::InvalidHeaderName {
                field,
                value,
                reason,
            } => write!(
                f,
                "{field}: {value:?} is not a usable header name: {reason}"
            ),
            ErrorKind::InvalidHost {
                field,
                value,
                reason,
            } => write!(f, "{field}: {value:?} is not a valid host: {reason}"),
            ErrorKind::InvalidTag {
                field,
                value,
                reason,
            } => write!(f, "{field}: {value:?} is not a valid tag: {reason}"),
            ErrorKind::InvalidValue {
                field,
                value,
                reason,
            } => write!(f, "{field}: {value:?} is invalid: {reason}"),
            ErrorKind::MixedForms { kserve_field } => write!(
                f,
                "traffic and {kserve_field}: use either the KServe fields \
                 (canaryTrafficPercent, latestRolledoutRevision, latestReadyRevision) \
                 or the Knative traffic list, not both"
            ),
            ErrorKind::Missing { field, reason } => write!(f, "{field}: missing: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}
