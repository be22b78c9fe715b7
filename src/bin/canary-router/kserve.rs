//! KServe's `InferenceService` as `kubectl get inferenceservices -o json` prints it, reduced
//! to the fields `render` reads. Real objects carry much more (managed fields, the model
//! spec, resources); every other field is ignored, so objects from any KServe version
//! since 0.7 decode. The field names are KServe's (`ComponentStatusSpec`) and Knative's
//! (`TrafficTarget`).

use std::collections::BTreeMap;

use serde::Deserialize;

pub const TAG_ROUTING_ANNOTATION: &str = "serving.kserve.io/enable-tag-routing";
pub const DEPLOYMENT_MODE_ANNOTATION: &str = "serving.kserve.io/deploymentMode";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceService {
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: Spec,
    #[serde(default)]
    pub status: Status,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub name: String,
    /// Absent only in objects written by hand; kubectl always prints it.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub generation: Option<i64>,
}

fn default_namespace() -> String {
    "default".to_owned()
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub predictor: Option<ComponentSpec>,
    pub transformer: Option<ComponentSpec>,
    pub explainer: Option<ComponentSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    pub canary_traffic_percent: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub url: Option<String>,
    #[serde(default)]
    pub components: BTreeMap<String, ComponentStatus>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    pub observed_generation: Option<i64>,
    /// Set by KServe 0.13 and later; older objects only have the annotation.
    pub deployment_mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    pub url: Option<String>,
    pub address: Option<Address>,
    pub latest_ready_revision: Option<String>,
    pub latest_created_revision: Option<String>,
    pub latest_rolledout_revision: Option<String>,
    #[serde(default)]
    pub traffic: Vec<TrafficTarget>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Address {
    pub url: Option<String>,
}

/// One entry of Knative's route status: what the revision really gets.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficTarget {
    pub revision_name: Option<String>,
    pub percent: Option<i64>,
    pub tag: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// How KServe runs the object's components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serverless (KServe 0.15 and later call it Knative): Knative revisions.
    Knative,
    /// RawDeployment (later: Standard): one Kubernetes Deployment and Service per component.
    Raw,
    ModelMesh,
}

impl InferenceService {
    /// `namespace/name`, as kubectl names objects.
    pub fn id(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata.annotations.get(key).map(String::as_str)
    }

    /// The mode from the status (newer KServe), else the annotation, else what the status
    /// shows: Knative revisions, or none (a raw deployment).
    pub fn mode(&self) -> Result<Mode, String> {
        let (field, value) = match (
            &self.status.deployment_mode,
            self.annotation(DEPLOYMENT_MODE_ANNOTATION),
        ) {
            (Some(mode), _) => ("status.deploymentMode", mode.as_str()),
            (None, Some(mode)) => (
                "metadata.annotations[\"serving.kserve.io/deploymentMode\"]",
                mode,
            ),
            (None, None) => {
                let revisions = self.status.components.values().any(|c| {
                    c.latest_ready_revision.is_some()
                        || c.latest_created_revision.is_some()
                        || !c.traffic.is_empty()
                });
                return Ok(if revisions { Mode::Knative } else { Mode::Raw });
            }
        };
        match value {
            "Serverless" | "Knative" => Ok(Mode::Knative),
            "RawDeployment" | "Standard" => Ok(Mode::Raw),
            "ModelMesh" => Ok(Mode::ModelMesh),
            other => Err(format!("{field}: {other:?} is not a KServe deployment mode (Serverless, Knative, RawDeployment, Standard, ModelMesh)")),
        }
    }

    /// The condition of this type, if KServe has set it.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.status.conditions.iter().find(|c| c.kind == kind)
    }

    /// The spec's generation KServe has not reconciled yet, if any: its status then
    /// describes an older spec.
    pub fn unreconciled_generation(&self) -> Option<i64> {
        match (self.metadata.generation, self.status.observed_generation) {
            (Some(g), Some(seen)) if seen < g => Some(g),
            _ => None,
        }
    }
}
