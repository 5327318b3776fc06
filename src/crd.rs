//! The `BeeosInstance` custom resource: spec and status types, condition types and reasons,
//! and the finalizer and annotation names.
//!
//! The spec mirrors the body of BeeOS's deploy call with the same camelCase names and the
//! contract's limits, so what a user writes is what BeeOS receives. This module knows nothing of
//! the BeeOS client: translating a spec into a deploy request is the controller's job.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The API group of every beeos-operator resource.
pub const GROUP: &str = "beeos.ai";
/// Keeps a resource until its instance has been destroyed (or let go, under `Orphan`).
pub const FINALIZER: &str = "beeos.ai/cleanup";
/// The id of the BeeOS instance the resource owns: written by the operator after a deploy,
/// or set by a user to adopt an existing instance instead of deploying one.
pub const INSTANCE_ID_ANNOTATION: &str = "beeos.ai/instance-id";
/// Each new value asks for exactly one restart of the instance.
pub const RESTART_REQUESTED_AT_ANNOTATION: &str = "beeos.ai/restart-requested-at";
/// While `"true"`, the operator makes no BeeOS calls for the resource.
pub const PAUSED_ANNOTATION: &str = "beeos.ai/paused";
/// Set just before a deploy call and cleared once its instance id is recorded. While it is set
/// without an instance id, a deploy may have happened unseen: the operator looks before it
/// deploys again. Its value (a timestamp) also names the deploy: the instance's name carries a
/// suffix derived from it, and only the process whose mark is still current may record the id.
pub const DEPLOY_STARTED_AT_ANNOTATION: &str = "beeos.ai/deploy-started-at";
/// Which resource the operator's bookkeeping belongs to and which instance id it recorded for it:
/// `<namespace>/<name>/<instance-id>` (the id is empty while there is no current instance). A
/// copy of a resource carries another resource's claim, so it owns nothing; an instance id that
/// differs from the claim was set by hand and must be free before it is taken over.
pub const CLAIM_ANNOTATION: &str = "beeos.ai/claim";
/// A digest of what the current instance was deployed with (injected secret values included),
/// to tell whether it is up to date with the spec.
pub const DEPLOYED_DIGEST_ANNOTATION: &str = "beeos.ai/deployed-digest";
/// The instance deployed to replace the current one (update strategy `Replace`).
pub const REPLACEMENT_ID_ANNOTATION: &str = "beeos.ai/replacement-id";
/// What the replacement was deployed with.
pub const REPLACEMENT_DIGEST_ANNOTATION: &str = "beeos.ai/replacement-digest";
/// The pending mark of the replacement's deploy (see [`DEPLOY_STARTED_AT_ANNOTATION`]).
pub const REPLACEMENT_STARTED_AT_ANNOTATION: &str = "beeos.ai/replacement-started-at";
/// A replaced instance still to be destroyed.
pub const RETIRING_ID_ANNOTATION: &str = "beeos.ai/retiring-id";
/// The operator's own bookkeeping annotations. Writing them must not wake the resource (only
/// user changes do), or a failed deploy that clears its mark would retry at once, forever.
pub const BOOKKEEPING_ANNOTATIONS: [&str; 7] = [
    CLAIM_ANNOTATION,
    DEPLOY_STARTED_AT_ANNOTATION,
    DEPLOYED_DIGEST_ANNOTATION,
    REPLACEMENT_ID_ANNOTATION,
    REPLACEMENT_DIGEST_ANNOTATION,
    REPLACEMENT_STARTED_AT_ANNOTATION,
    RETIRING_ID_ANNOTATION,
];
/// On a credentials Secret while a resource may still need it to destroy its instance, so that
/// deleting a namespace (which deletes Secrets and resources together) cannot strand instances.
pub const SECRET_IN_USE_FINALIZER: &str = "beeos.ai/in-use";
/// On every Secret a resource reads (credentials and injections): the operator watches the
/// metadata of Secrets with this label, to roll out rotated values and heal fixed credentials.
pub const SECRET_REFERENCED_LABEL: &str = "beeos.ai/referenced";
/// The key read from the credentials Secret when `spec.credentials.key` is not set.
pub const DEFAULT_CREDENTIALS_KEY: &str = "token";

/// The desired state of one BeeOS instance.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "beeos.ai",
    version = "v1alpha1",
    kind = "BeeosInstance",
    namespaced,
    shortname = "bi",
    category = "beeos",
    status = "BeeosInstanceStatus",
    doc = "A BeeOS AI-agent instance, managed by beeos-operator. The spec is the body of BeeOS's deploy call plus how the operator treats the instance (credentials, injected secrets, power state, update strategy, deletion policy); the status mirrors the live instance, with kstatus conditions (Ready, Reconciling, Stalled, Synced) that say whether it is as asked, on its way, or needs a person.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","description":"Why the instance is or is not ready (the Ready condition's reason).","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.instance.status"}"#,
    printcolumn = r#"{"name":"Connectivity","type":"string","jsonPath":".status.instance.connectivity"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.instance.endpoint"}"#,
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".status.instance.region"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","description":"When a trial instance expires (BeeOS's expiresAt); empty for other instances.","jsonPath":".status.instance.expiresAt"}"#,
    printcolumn = r#"{"name":"Message","type":"string","priority":1,"description":"The Ready condition's message: what the instance is doing, or what a person must do.","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#
)]
#[x_kube(
    cel,
    validation = Rule::new("has(self.variantId) != has(self.agentFramework)").message(
        "set exactly one of spec.variantId (a catalog variant, e.g. variantId: beeos-claw-small) or spec.agentFramework (an explicit framework, e.g. agentFramework: beeos-claw)"
    ),
)]
#[serde(rename_all = "camelCase")]
pub struct BeeosInstanceSpec {
    /// Display name of the instance at BeeOS. Defaults to the resource's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub name: Option<String>,

    /// A catalog variant. When set, BeeOS takes the framework, provider, region and
    /// scheduling from the variant. Exactly one of variantId and agentFramework.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub variant_id: Option<String>,

    /// The agent framework to deploy (explicit path). Exactly one of variantId and agentFramework.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub agent_framework: Option<String>,

    /// The provider to deploy on (explicit path; optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub provider_id: Option<String>,

    /// Provider-specific configuration, merged with the catalog's (the catalog wins on clashes).
    /// Keep secret values out of it: inject them from Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub provider_config: Option<Map<String, Value>>,

    /// Extra configuration on top of the catalog's (e.g. apiBaseUrls). Same meaning as
    /// providerConfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub config: Option<Map<String, Value>>,

    /// The primary model id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub model_primary: Option<String>,

    /// Additional model ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(length(min = 1, max = 128)))]
    pub models: Option<Vec<String>>,

    /// The agent's system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub system_prompt: Option<String>,

    /// MCP servers for the agent, passed to BeeOS as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub mcp_servers: Option<Map<String, Value>>,

    /// The device or remote-display bridge to attach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub bridge_id: Option<String>,

    /// The compute cluster to place the instance on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub cluster_id: Option<String>,

    /// A preferred region; status.instance.region shows where it landed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub preferred_region: Option<String>,

    /// The BeeOS API token (`oag_…`) to use, from a Secret in this resource's namespace.
    /// Without it, the operator's default credentials are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretKeyRef>,

    /// Whether the instance should run. Stopped stops it at BeeOS; Running starts it again.
    #[serde(default)]
    pub power_state: PowerState,

    /// What happens to the instance when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// How a change to the deploy fields (or to an injected Secret value) reaches BeeOS, which
    /// has no update call: Replace (deploy the new one, wait until it is ready, then destroy the
    /// old), Recreate (destroy, then deploy) or OnDelete (report the drift, change nothing).
    #[serde(default)]
    pub update_strategy: UpdateStrategy,

    /// Secret values placed into config, providerConfig or mcpServers at deploy time, so no
    /// secret is ever written in this resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub secret_injections: Vec<SecretInjection>,

    /// A ConfigMap in this namespace that the operator keeps up to date with how to reach the
    /// instance (BEEOS_INSTANCE_ID, BEEOS_ENDPOINT, BEEOS_REGION, BEEOS_STATUS,
    /// BEEOS_CONNECTIVITY), for applications to load with `envFrom`. Owned by this resource
    /// (deleted with it); never holds providerConfig, systemPrompt, mcpServers or a Secret
    /// value. During a Replace it switches to the new instance once that is running and online.
    /// An existing ConfigMap of that name not owned by this resource is left alone (Stalled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_connection_config_map_to_ref: Option<LocalObjectRef>,
}

/// A named object in the resource's own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalObjectRef {
    /// The object's name (in the resource's namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// One Secret value placed into the deploy body.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[x_kube(cel)]
#[serde(rename_all = "camelCase")]
pub struct SecretInjection {
    /// Where the value goes: `config.`, `providerConfig.` or `mcpServers.` followed by
    /// dot-separated keys, e.g. `providerConfig.apiKeys.openai`. Missing objects are created.
    #[x_kube(validation = Rule::new(r"self.matches('^(config|providerConfig|mcpServers)(\\.[^.]+)+$')").message(
        "path must start with config., providerConfig. or mcpServers. and name at least one key, e.g. providerConfig.apiKeys.openai"
    ))]
    #[schemars(length(min = 1, max = 512))]
    pub path: String,
    /// The Secret key whose value is placed there (same namespace as the resource).
    pub secret_key_ref: InjectedSecretKeyRef,
}

/// A key of a Secret in the resource's own namespace; the key is required.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InjectedSecretKeyRef {
    /// The Secret's name (same namespace as the resource; never across namespaces).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key inside the Secret whose value is injected.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// How spec changes reach BeeOS.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpdateStrategy {
    /// Deploy the new instance, wait until it is ready, then destroy the old one (the default).
    #[default]
    Replace,
    /// Destroy the instance, then deploy the new one.
    Recreate,
    /// Report the drift and change nothing until the resource is deleted and created again.
    OnDelete,
}

/// A key of a Secret in the resource's own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name (same namespace as the resource; never across namespaces).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key inside the Secret. Defaults to `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

impl SecretKeyRef {
    /// The key to read, `token` unless set.
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or(DEFAULT_CREDENTIALS_KEY)
    }
}

/// Whether the instance should run.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PowerState {
    /// Deployed and started (the default).
    #[default]
    Running,
    /// Deployed and stopped.
    Stopped,
}

/// What deleting the resource does to the instance.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Destroy the instance, then let the resource go (the default).
    #[default]
    Delete,
    /// Let the resource go and leave the instance running at BeeOS.
    Orphan,
}

/// What the operator last observed, and its conditions.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BeeosInstanceStatus {
    /// The metadata.generation the operator last acted on. While it is behind
    /// metadata.generation, the status describes an older spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready (the instance is as the spec asks), Reconciling (the operator is getting there),
    /// Stalled (a person must act: the reason and message say why) and Synced (the last BeeOS
    /// call worked), following kstatus; each with the generation it describes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The instance as BeeOS last reported it. The id is also in the
    /// `beeos.ai/instance-id` annotation, which survives a backup and restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<ObservedInstance>,

    /// The instance being deployed to replace the current one (update strategy Replace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Boxed: rarely set, and every watched resource is cached, so an unboxed empty slot would
    // cost each of them the size of an ObservedInstance.
    pub replacement: Option<Box<ObservedInstance>>,

    /// The last `beeos.ai/restart-requested-at` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart_requested_at: Option<String>,

    /// The ConfigMap the operator last wrote the connection details to
    /// (spec.writeConnectionConfigMapToRef), so a renamed one is cleaned up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_config_map: Option<String>,

    /// Seconds run by instances this resource replaced (Replace, Recreate), so the run-time
    /// metric of the resource never goes back when an instance is retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_run_seconds: Option<i64>,

    /// The trial expiry (expiresAt) a TrialExpiring warning was already given for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_expiry_warned: Option<String>,
}

/// The live instance at BeeOS. Never holds providerConfig, systemPrompt or mcpServers: they
/// may carry secrets.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservedInstance {
    /// BeeOS's instance id.
    pub id: String,
    /// Lifecycle state: pending, provisioning, running, stopped or terminated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The state BeeOS is moving the instance to; differs from status during a transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_status: Option<String>,
    /// The runtime endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Live reachability: unknown, online or offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity: Option<String>,
    /// Why the instance is not online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connectivity_reason: Option<String>,
    /// Why BeeOS halted the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_reason: Option<String>,
    /// BeeOS's error message for the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// The region the instance runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The compute cluster the instance was placed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The instance's public IP address, once it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    /// The id of the image the instance runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The reference of the image the instance runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
    /// Whether it is a trial instance, which BeeOS stops at expiresAt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_trial: Option<bool>,
    /// When a trial instance expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the instance last started running (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the instance last stopped (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// When the instance entered its current status (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_entered_at: Option<String>,
    /// When BeeOS created the instance (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

/// Condition types (kstatus).
pub mod condition {
    /// The instance is running and online (or stopped, when Stopped was asked for).
    pub const READY: &str = "Ready";
    /// The last reconcile reached BeeOS and applied the spec.
    pub const SYNCED: &str = "Synced";
    /// The operator is moving the instance towards the spec.
    pub const RECONCILING: &str = "Reconciling";
    /// A person must act: the operator cannot make progress on its own.
    pub const STALLED: &str = "Stalled";
}

/// Condition reasons, CamelCase; events reuse them.
pub mod reason {
    pub const DEPLOYING: &str = "Deploying";
    pub const DEPLOYED: &str = "Deployed";
    pub const PROVISIONING: &str = "Provisioning";
    pub const RUNNING: &str = "Running";
    pub const OFFLINE: &str = "Offline";
    pub const STARTING: &str = "Starting";
    pub const STOPPING: &str = "Stopping";
    pub const STOPPED: &str = "Stopped";
    pub const RESTARTING: &str = "Restarting";
    pub const DELETING: &str = "Deleting";
    pub const DESTROYED: &str = "Destroyed";
    pub const ORPHANED: &str = "Orphaned";
    pub const PAUSED: &str = "Paused";
    pub const SYNCED: &str = "Synced";
    pub const INSTANCE_GONE: &str = "InstanceGone";
    pub const CREDENTIALS_UNAVAILABLE: &str = "CredentialsUnavailable";
    pub const IN_PROGRESS: &str = "InProgress";
    pub const NO_ISSUES: &str = "NoIssues";
    pub const ADOPTED: &str = "Adopted";
    pub const AMBIGUOUS_DEPLOY: &str = "AmbiguousDeploy";
    pub const INSTANCE_CLAIMED: &str = "InstanceClaimed";
    pub const INSTANCE_FORBIDDEN: &str = "InstanceForbidden";
    pub const TRANSITION_TIMEOUT: &str = "TransitionTimeout";
    pub const SUPERSEDED: &str = "Superseded";
    pub const RESTORED: &str = "Restored";
    pub const CONNECTION_CONFIG_MAP_NOT_OWNED: &str = "ConnectionConfigMapNotOwned";
    pub const TRIAL_EXPIRING: &str = "TrialExpiring";
    pub const TRIAL_EXPIRED: &str = "TrialExpired";
    pub const SECRET_UNAVAILABLE: &str = "SecretUnavailable";
    pub const SPEC_DRIFT: &str = "SpecDrift";
    pub const REPLACING: &str = "Replacing";
    pub const RECREATING: &str = "Recreating";
    pub const RETIRED: &str = "Retired";
}

/// A free-form JSON object whose unknown fields the API server keeps.
fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn validate(spec: Value) -> Result<(), String> {
        BeeosInstanceSpec::validate_cel(&spec, None).map_err(|err| err.to_string())
    }

    #[test]
    fn exactly_one_of_variant_and_framework_is_accepted() {
        assert!(validate(json!({"variantId": "beeos-claw-small"})).is_ok());
        assert!(validate(json!({"agentFramework": "beeos-claw", "providerId": "default"})).is_ok());
    }

    #[test]
    fn both_or_neither_of_variant_and_framework_say_what_to_write() {
        for spec in [
            json!({"variantId": "beeos-claw-small", "agentFramework": "beeos-claw"}),
            json!({"modelPrimary": "gpt-4o"}),
        ] {
            let err = validate(spec).expect_err("the rule must reject it");
            assert!(err.contains("set exactly one of spec.variantId"), "{err}");
        }
    }

    #[test]
    fn injection_paths_must_name_a_key_under_a_free_form_field() {
        let injection =
            |path: &str| json!({"path": path, "secretKeyRef": {"name": "s", "key": "k"}});
        for good in [
            "providerConfig.apiKeys.openai",
            "config.x",
            "mcpServers.files.env.TOKEN",
        ] {
            assert!(
                SecretInjection::validate_cel(&injection(good), None).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "providerConfig",
            "apiKeys.openai",
            "config..x",
            "config.",
            "spec.config.x",
        ] {
            let err = SecretInjection::validate_cel(&injection(bad), None)
                .expect_err(bad)
                .to_string();
            assert!(err.contains("path must start with config."), "{bad}: {err}");
        }
    }

    #[test]
    fn defaults_are_running_and_delete() {
        let spec: BeeosInstanceSpec =
            serde_json::from_value(json!({"variantId": "v"})).expect("a minimal spec parses");
        assert_eq!(spec.power_state, PowerState::Running);
        assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
        assert_eq!(spec.update_strategy, UpdateStrategy::Replace);
    }

    #[test]
    fn free_form_objects_keep_unknown_fields() {
        let spec: BeeosInstanceSpec = serde_json::from_value(json!({
            "agentFramework": "beeos-claw",
            "mcpServers": {"files": {"command": "mcp-files", "args": ["--root", "/"]}},
        }))
        .expect("parses");
        let back = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(back["mcpServers"]["files"]["args"][1], "/");
    }
}
