//! The configuration's JSON shape, as serde decodes it: one struct per JSON object, in
//! KServe's and Knative's words (camelCase). Decoding checks only what types can say
//! (unknown fields, duplicate keys, types, objects where objects belong); every other
//! rule is the compile step's (`super`), which names the service, the field and the value.
//!
//! Strings borrow from the document unless they have escapes: a 10,000-service
//! configuration is decoded without a copy of every name.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// A string of the document: borrowed, unless it had escapes.
#[derive(Debug, Default, Deserialize)]
#[serde(transparent)]
pub(super) struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// serde's derive also reads a struct from a JSON array, field by position, and a
/// configuration object written as an array is a mistake, never an intent: every struct
/// here is read from a JSON object only. `remote = "Self"` makes the derive generate an
/// inherent `deserialize` that this trait's impl calls, so serde still does all decoding.
pub(super) trait FromObject<'de>: Sized {
    /// What an error says was expected instead.
    const EXPECTING: &'static str;

    fn from_object<D: Deserializer<'de>>(object: D) -> Result<Self, D::Error>;
}

struct Object<T>(PhantomData<T>);

impl<'de, T: FromObject<'de>> Visitor<'de> for Object<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::from_object(MapAccessDeserializer::new(map))
    }
}

macro_rules! object_only {
    ($($name:ident $(<$a:lifetime>)? $(as $expecting:literal)?),* $(,)?) => {$(
        impl<'de $(: $a, $a)?> FromObject<'de> for $name $(<$a>)? {
            const EXPECTING: &'static str = object_only!(@expecting $($expecting)?);

            fn from_object<D: Deserializer<'de>>(object: D) -> Result<Self, D::Error> {
                $name::deserialize(object)
            }
        }

        impl<'de $(: $a, $a)?> Deserialize<'de> for $name $(<$a>)? {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_map(Object::<Self>(PhantomData))
            }
        }
    )*};
    (@expecting) => { "a JSON object" };
    (@expecting $expecting:literal) => { $expecting };
}

object_only!(
    RawConfig<'a> as "the configuration as a JSON object with \"services\"",
    RawService<'a>,
    RawRevision<'a>,
    RawTarget<'a>,
    RawHeaderRoute<'a>,
    RawHealthCheck<'a>,
    RawOutlier,
    RawAutoRollback,
    RawSticky<'a>,
    RawSteps<'a>,
    RawMirror<'a>,
    RawOpenAi<'a>,
);

#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawConfig<'a> {
    #[serde(borrow)]
    pub cluster_header: Option<Text<'a>>,
    #[serde(borrow)]
    pub revision_header: Option<Text<'a>>,
    #[serde(borrow)]
    pub tag_header: Option<Text<'a>>,
    #[serde(default)]
    pub upstream_revision_header: bool,
    #[serde(borrow)]
    pub status_path: Option<Text<'a>>,
    pub metrics: Option<bool>,
    pub grpc_error_codes: Option<Vec<i64>>,
    #[serde(borrow)]
    pub openai: Option<Box<RawOpenAi<'a>>>,
    #[serde(borrow)]
    pub services: Vec<RawService<'a>>,
}

/// OpenAI-style requests, routed by the model in their body.
#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawOpenAi<'a> {
    #[serde(borrow)]
    pub paths: Option<Vec<Text<'a>>>,
    pub max_body_bytes: Option<u64>,
    pub list_models: Option<bool>,
    #[serde(borrow)]
    pub metadata_namespace: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawService<'a> {
    #[serde(borrow)]
    pub name: Text<'a>,
    // May be left out by a service that lists `models`.
    #[serde(borrow, default)]
    pub hosts: Vec<Text<'a>>,
    #[serde(borrow)]
    pub revisions: Vec<RawRevision<'a>>,
    #[serde(borrow)]
    pub latest_rolledout_revision: Option<Text<'a>>,
    #[serde(borrow)]
    pub latest_ready_revision: Option<Text<'a>>,
    pub canary_traffic_percent: Option<i64>,
    #[serde(borrow)]
    pub traffic: Option<Vec<RawTarget<'a>>>,
    #[serde(default)]
    pub tag_routing: bool,
    #[serde(borrow, default)]
    pub header_routes: Vec<RawHeaderRoute<'a>>,
    // The rare parts boxed: 10,000 services are decoded before they are compiled.
    #[serde(borrow)]
    pub health_check: Option<Box<RawHealthCheck<'a>>>,
    pub outlier: Option<Box<RawOutlier>>,
    pub auto_rollback: Option<Box<RawAutoRollback>>,
    #[serde(borrow)]
    pub sticky: Option<Box<RawSticky<'a>>>,
    #[serde(borrow)]
    pub split: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub models: Vec<Text<'a>>,
    #[serde(borrow)]
    pub steps: Option<Box<RawSteps<'a>>>,
    #[serde(borrow)]
    pub mirror: Option<Box<RawMirror<'a>>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawRevision<'a> {
    #[serde(borrow)]
    pub name: Text<'a>,
    #[serde(borrow)]
    pub cluster: Text<'a>,
    #[serde(borrow)]
    pub host: Option<Text<'a>>,
    /// The model name sent upstream in OpenAI bodies instead of the client's.
    #[serde(borrow)]
    pub model: Option<Text<'a>>,
}

/// A Knative traffic target.
#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawTarget<'a> {
    #[serde(borrow)]
    pub revision_name: Text<'a>,
    pub percent: Option<i64>,
    #[serde(borrow)]
    pub tag: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawHeaderRoute<'a> {
    #[serde(borrow)]
    pub header: Text<'a>,
    #[serde(borrow)]
    pub value: Text<'a>,
    #[serde(borrow)]
    pub revision: Text<'a>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawHealthCheck<'a> {
    #[serde(borrow)]
    pub protocol: Option<Text<'a>>,
    #[serde(borrow)]
    pub path: Option<Text<'a>>,
    #[serde(borrow)]
    pub grpc_method: Option<Text<'a>>,
    #[serde(borrow)]
    pub model: Option<Text<'a>>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub unhealthy_threshold: Option<u64>,
    pub healthy_threshold: Option<u64>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawOutlier {
    pub max_error_rate: f64,
    pub min_requests: Option<u64>,
    pub window_ms: Option<u64>,
    pub ejection_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawAutoRollback {
    pub max_error_rate: f64,
    pub min_requests: Option<u64>,
    pub window_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawSticky<'a> {
    #[serde(borrow)]
    pub header: Option<Text<'a>>,
    #[serde(borrow)]
    pub cookie: Option<Text<'a>>,
    #[serde(borrow)]
    pub body_field: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawSteps<'a> {
    pub weights: Vec<i64>,
    pub interval_seconds: u64,
    #[serde(borrow)]
    pub start_time: Text<'a>,
}

#[derive(Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawMirror<'a> {
    #[serde(borrow)]
    pub revision: Text<'a>,
    pub percent: i64,
    pub max_body_bytes: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// Only the services' names, to name the service a decoding error is in (read again, on
/// the error path only; any other field is skipped).
#[derive(Deserialize)]
pub(super) struct Names<'a> {
    #[serde(borrow)]
    pub services: Vec<NameOnly<'a>>,
}

#[derive(Deserialize)]
pub(super) struct NameOnly<'a> {
    #[serde(borrow)]
    pub name: Text<'a>,
}
