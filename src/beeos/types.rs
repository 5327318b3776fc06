//! Wire types of the BeeOS public API (contract `beeos-platform-v1.yaml`, version 1.1.x): the deploy
//! body, the instance DTO, list pages and the deploy catalog.
//!
//! Decoding is open-world: BeeOS adds response fields in minor versions and documents its enums in
//! prose, so every response field is optional or defaulted, unknown fields are ignored and unknown
//! enum strings are kept verbatim. Types here must not print secret material in `Debug`
//! (`providerConfig`, `config`, `mcpServers` and `systemPrompt` may carry API keys).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// The largest `pageSize` BeeOS accepts on `GET /api/v1/instances`.
pub const MAX_PAGE_SIZE: u32 = 200;

/// Defines a string enum that keeps values it does not know in an `Other(String)` variant.
///
/// Known values match ASCII case-insensitively and serialize in their canonical spelling.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $wire:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this client does not know yet, kept as BeeOS sent it.
            Other(String),
        }

        impl $name {
            /// The wire spelling of this value.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $wire, )+
                    Self::Other(raw) => raw,
                }
            }
        }

        impl From<&str> for $name {
            fn from(raw: &str) -> Self {
                $( if raw.eq_ignore_ascii_case($wire) { return Self::$variant; } )+
                Self::Other(raw.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    Self::Other(raw) => write!(f, "Other({raw:?})"),
                    known => f.write_str(known.as_str()),
                }
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Ok(Self::from(raw.as_str()))
            }
        }
    };
}

open_enum! {
    /// The lifecycle state of an instance (`status`).
    InstanceStatus {
        /// Accepted, not yet scheduled.
        Pending => "pending",
        /// Being created or started.
        Provisioning => "provisioning",
        /// Running (check [`Connectivity`] too: a running instance can be offline).
        Running => "running",
        /// Stopped; can be started again.
        Stopped => "stopped",
        /// Destroyed; stays visible for a while, then disappears (404).
        Terminated => "terminated",
    }
}

open_enum! {
    /// The state BeeOS is driving an instance towards (`desiredStatus`).
    DesiredStatus {
        /// Should run.
        Running => "running",
        /// Should be stopped.
        Stopped => "stopped",
        /// Should be destroyed.
        Terminated => "terminated",
    }
}

open_enum! {
    /// Live reachability of the instance's runtime or device (`connectivity`).
    Connectivity {
        /// Not known (yet).
        Unknown => "unknown",
        /// Reachable: control calls work.
        Online => "online",
        /// Not reachable: control calls are rejected.
        Offline => "offline",
    }
}

impl InstanceStatus {
    /// Whether the status belongs to the same family as a desired status (e.g. `running`/`running`).
    pub fn matches(&self, desired: &DesiredStatus) -> bool {
        self.as_str() == desired.as_str()
    }
}

/// Body of `POST /api/v1/instances` (`DeployInstanceRequest`).
///
/// Send exactly one of `variant_id` (catalog-driven) and `agent_framework` (explicit). `None` and
/// empty fields are left out of the JSON. `Debug` redacts `provider_config`, `config`,
/// `mcp_servers` (only their top-level keys are shown) and `system_prompt`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployRequest {
    /// Display name (≤128). The operator makes it unique and searches for it after a lost response.
    pub name: String,
    /// Catalog variant (≤128); authoritative for framework, provider and region when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant_id: Option<String>,
    /// Agent framework (≤64) on the explicit path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_framework: Option<String>,
    /// Provider (≤64) on the explicit path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Provider-specific configuration, merged under the catalog's (the catalog wins on clashes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_config: Option<Map<String, Value>>,
    /// Alternate name for `provider_config`; the variant path layers `apiKeys`/`apiBaseUrls` with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Map<String, Value>>,
    /// Primary model id (≤128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_primary: Option<String>,
    /// Additional model ids (each ≤128).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// System prompt (≤8192).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// MCP servers; free-form, no schema documented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<Map<String, Value>>,
    /// Bridge id (≤128), passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_id: Option<String>,
    /// Cluster id (≤128), passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Preferred region (≤64); the instance's `region` says where it actually landed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_region: Option<String>,
}

impl fmt::Debug for DeployRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeployRequest")
            .field("name", &self.name)
            .field("variant_id", &self.variant_id)
            .field("agent_framework", &self.agent_framework)
            .field("provider_id", &self.provider_id)
            .field(
                "provider_config",
                &RedactedObject(self.provider_config.as_ref()),
            )
            .field("config", &RedactedObject(self.config.as_ref()))
            .field("model_primary", &self.model_primary)
            .field("models", &self.models)
            .field(
                "system_prompt",
                &RedactedText(self.system_prompt.as_deref()),
            )
            .field("mcp_servers", &RedactedObject(self.mcp_servers.as_ref()))
            .field("bridge_id", &self.bridge_id)
            .field("cluster_id", &self.cluster_id)
            .field("preferred_region", &self.preferred_region)
            .finish()
    }
}

/// One instance as BeeOS reports it (`InstanceDataDTO`).
///
/// Every field is optional or defaulted (`null` reads as the default) because the contract's own
/// examples leave "required" fields out; unknown fields are ignored. Timestamps are RFC 3339 strings
/// as sent. `Debug` redacts `provider_config`, `system_prompt` and `mcp_servers`.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Instance {
    /// The instance id (`id` on the wire), e.g. `instance_abc123`.
    #[serde(rename = "id", deserialize_with = "null_as_default")]
    pub instance_id: String,
    /// Owner of the instance (the credential's user).
    #[serde(deserialize_with = "null_as_default")]
    pub owner_id: String,
    /// Display name given at deploy.
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// Agent framework, e.g. `beeos-claw`.
    #[serde(deserialize_with = "null_as_default")]
    pub agent_framework: String,
    /// Provider, e.g. `openclaw-k8s`.
    #[serde(deserialize_with = "null_as_default")]
    pub provider_id: String,
    /// Provider-side id (undocumented).
    #[serde(deserialize_with = "null_as_default")]
    pub external_id: String,
    /// Operating system, e.g. `android`, `linux`.
    #[serde(deserialize_with = "null_as_default")]
    pub os_type: String,
    /// Hosting type, e.g. `physical`.
    #[serde(deserialize_with = "null_as_default")]
    pub hosting_type: String,
    /// Cloud provider, e.g. `local`.
    #[serde(deserialize_with = "null_as_default")]
    pub cloud_provider: String,
    /// Primary model id.
    #[serde(deserialize_with = "null_as_default")]
    pub model_primary: String,
    /// All model ids.
    #[serde(deserialize_with = "null_as_default")]
    pub models: Vec<String>,
    /// Lifecycle state; `None` when absent or empty.
    #[serde(deserialize_with = "open_enum_or_none")]
    pub status: Option<InstanceStatus>,
    /// Target state; differs from `status` while a transition is under way.
    #[serde(deserialize_with = "open_enum_or_none")]
    pub desired_status: Option<DesiredStatus>,
    /// Runtime endpoint URL; empty when there is none.
    #[serde(deserialize_with = "null_as_default")]
    pub endpoint: String,
    /// Bridge id (undocumented).
    #[serde(deserialize_with = "null_as_default")]
    pub bridge_id: String,
    /// Identity id (undocumented).
    #[serde(deserialize_with = "null_as_default")]
    pub identity_id: String,
    /// Accumulated run time; moves on its own.
    #[serde(deserialize_with = "null_as_default")]
    pub total_run_seconds: i64,
    /// Live reachability.
    #[serde(deserialize_with = "open_enum_or_none")]
    pub connectivity: Option<Connectivity>,
    /// Why the instance is not online (e.g. `device_disconnected`); empty when online.
    pub connectivity_reason: Option<String>,
    /// Why the instance halted (values undocumented).
    pub halt_reason: Option<String>,
    /// Sanitized provider config (BeeOS strips `apiKeys`); may still hold secrets, never log it.
    pub provider_config: Option<Value>,
    /// Public IP address.
    pub public_ip: Option<String>,
    /// Cluster id.
    pub cluster_id: Option<String>,
    /// Region the instance landed in.
    pub region: Option<String>,
    /// Image id.
    pub image_id: Option<String>,
    /// Image reference.
    pub image_ref: Option<String>,
    /// Whether this is a trial instance.
    pub is_trial: Option<bool>,
    /// When a trial instance expires.
    pub expires_at: Option<String>,
    /// Last error BeeOS recorded (there is no `error` status).
    pub error_message: Option<String>,
    /// System prompt; may hold secrets, never log it.
    pub system_prompt: Option<String>,
    /// MCP servers; may hold secrets, never log it.
    pub mcp_servers: Option<Value>,
    /// When the instance last started.
    pub started_at: Option<String>,
    /// When the instance last stopped.
    pub stopped_at: Option<String>,
    /// When the instance entered its current status.
    pub status_entered_at: Option<String>,
    /// When `connectivity` last changed.
    pub connectivity_updated_at: Option<String>,
    /// Messaging link state (`unknown`, `connecting`, `connected`, …), kept verbatim.
    pub ms_connection_status: Option<String>,
    /// When `ms_connection_status` last changed.
    pub ms_connection_updated_at: Option<String>,
    /// When the instance was created.
    pub created_at: Option<String>,
    /// When the record last changed; moves on its own.
    pub updated_at: Option<String>,
    /// Latest screenshot URL; moves on its own.
    pub screenshot_url: Option<String>,
    /// When the screenshot was taken; moves on its own.
    pub screenshot_updated_at: Option<String>,
    /// Instance-level capability snapshot (free-form).
    pub capabilities: Option<Value>,
}

impl Instance {
    /// Whether BeeOS reports the instance as destroyed (`status` is `terminated`).
    pub fn is_terminated(&self) -> bool {
        self.status == Some(InstanceStatus::Terminated)
    }

    /// Whether a transition is under way (`status` differs from `desiredStatus`, or either is unknown).
    pub fn is_transitioning(&self) -> bool {
        match (&self.status, &self.desired_status) {
            (Some(status), Some(desired)) => !status.matches(desired),
            _ => true,
        }
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("instance_id", &self.instance_id)
            .field("owner_id", &self.owner_id)
            .field("name", &self.name)
            .field("agent_framework", &self.agent_framework)
            .field("provider_id", &self.provider_id)
            .field("external_id", &self.external_id)
            .field("os_type", &self.os_type)
            .field("hosting_type", &self.hosting_type)
            .field("cloud_provider", &self.cloud_provider)
            .field("model_primary", &self.model_primary)
            .field("models", &self.models)
            .field("status", &self.status)
            .field("desired_status", &self.desired_status)
            .field("endpoint", &self.endpoint)
            .field("bridge_id", &self.bridge_id)
            .field("identity_id", &self.identity_id)
            .field("total_run_seconds", &self.total_run_seconds)
            .field("connectivity", &self.connectivity)
            .field("connectivity_reason", &self.connectivity_reason)
            .field("halt_reason", &self.halt_reason)
            .field(
                "provider_config",
                &RedactedObject(self.provider_config.as_ref().and_then(Value::as_object)),
            )
            .field("public_ip", &self.public_ip)
            .field("cluster_id", &self.cluster_id)
            .field("region", &self.region)
            .field("image_id", &self.image_id)
            .field("image_ref", &self.image_ref)
            .field("is_trial", &self.is_trial)
            .field("expires_at", &self.expires_at)
            .field("error_message", &self.error_message)
            .field(
                "system_prompt",
                &RedactedText(self.system_prompt.as_deref()),
            )
            .field(
                "mcp_servers",
                &RedactedObject(self.mcp_servers.as_ref().and_then(Value::as_object)),
            )
            .field("started_at", &self.started_at)
            .field("stopped_at", &self.stopped_at)
            .field("status_entered_at", &self.status_entered_at)
            .field("connectivity_updated_at", &self.connectivity_updated_at)
            .field("ms_connection_status", &self.ms_connection_status)
            .field("ms_connection_updated_at", &self.ms_connection_updated_at)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .field("screenshot_url", &self.screenshot_url)
            .field("screenshot_updated_at", &self.screenshot_updated_at)
            .field("capabilities", &self.capabilities)
            .finish()
    }
}

/// Filters and position for `GET /api/v1/instances`. Filters combine with AND.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    /// Zero-based page number.
    pub page: u32,
    /// Page size; always sent, clamped to 1..=[`MAX_PAGE_SIZE`] (0 means the maximum).
    pub page_size: u32,
    /// Only instances in this status.
    pub status: Option<InstanceStatus>,
    /// Only instances of this provider.
    pub provider_id: Option<String>,
    /// Only instances of this agent framework.
    pub agent_framework: Option<String>,
    /// Only instances on this cluster.
    pub cluster_id: Option<String>,
    /// Free text over name and metadata (not an exact match: compare names yourself).
    pub search: Option<String>,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            page: 0,
            page_size: MAX_PAGE_SIZE,
            status: None,
            provider_id: None,
            agent_framework: None,
            cluster_id: None,
            search: None,
        }
    }
}

impl ListQuery {
    /// A query for instances whose name or metadata matches `search`, largest pages.
    pub fn search(search: impl Into<String>) -> Self {
        Self {
            search: Some(search.into()),
            ..Self::default()
        }
    }

    /// The page size actually sent: explicit, within 1..=[`MAX_PAGE_SIZE`].
    pub fn effective_page_size(&self) -> u32 {
        match self.page_size {
            0 => MAX_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        }
    }

    /// The query-string pairs for this query, in a stable order.
    pub(crate) fn to_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![
            ("page", self.page.to_string()),
            ("pageSize", self.effective_page_size().to_string()),
        ];
        let filters = [
            (
                "status",
                self.status.as_ref().map(|s| s.as_str().to_owned()),
            ),
            ("providerId", self.provider_id.clone()),
            ("agentFramework", self.agent_framework.clone()),
            ("clusterId", self.cluster_id.clone()),
            ("search", self.search.clone()),
        ];
        pairs.extend(
            filters
                .into_iter()
                .filter_map(|(key, value)| value.map(|value| (key, value))),
        );
        pairs
    }
}

/// One page of `GET /api/v1/instances`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstancePage {
    /// The instances on this page.
    pub instances: Vec<Instance>,
    /// How many instances match the filters in total; `None` when BeeOS left it out.
    pub total: Option<u64>,
    /// The zero-based page number that was asked for.
    pub page: u32,
    /// The page size that was sent.
    pub page_size: u32,
}

impl InstancePage {
    /// Whether no page follows this one: it is empty, or `(page + 1) * pageSize >= total`.
    pub fn is_last(&self) -> bool {
        if self.instances.is_empty() {
            return true;
        }
        match self.total {
            Some(total) => (u64::from(self.page) + 1) * u64::from(self.page_size) >= total,
            // Without a total only an empty page ends the listing.
            None => false,
        }
    }
}

/// One provider of the deploy catalog (`ProviderCatalogItem`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Provider {
    /// Who the provider is.
    pub meta: ProviderMeta,
    /// What it can do.
    pub capabilities: ProviderCapabilities,
}

/// Identity of a provider (`ProviderMeta`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProviderMeta {
    /// Provider id, the `providerId` of deploy calls.
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// Display name.
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// Description.
    #[serde(deserialize_with = "null_as_default")]
    pub description: String,
    /// Provider version.
    #[serde(deserialize_with = "null_as_default")]
    pub version: String,
}

/// Capabilities of a provider (`ProviderCapabilities`); camelCase since 1.1.0, snake_case accepted.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ProviderCapabilities {
    /// Supports long-running instances.
    #[serde(alias = "long_running")]
    pub long_running: Option<bool>,
    /// Supports browser use.
    #[serde(alias = "browser_use")]
    pub browser_use: Option<bool>,
    /// Supports code execution.
    #[serde(alias = "code_exec")]
    pub code_exec: Option<bool>,
    /// Has a file system.
    #[serde(alias = "file_system")]
    pub file_system: Option<bool>,
    /// Accepts a custom image.
    #[serde(alias = "custom_image")]
    pub custom_image: Option<bool>,
    /// Longest run, in seconds.
    #[serde(alias = "max_duration_sec")]
    pub max_duration_sec: Option<i64>,
    /// Cost model, free text.
    #[serde(alias = "cost_model")]
    pub cost_model: Option<String>,
    /// Backs a device.
    pub device: Option<bool>,
}

/// A deploy region (`DeployRegionItem`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Region {
    /// Region id, the `preferredRegion` of deploy calls.
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// Display name.
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// Whether deploys may land there now.
    #[serde(deserialize_with = "null_as_default")]
    pub available: bool,
}

/// A deploy model option (`DeployModelItem`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Model {
    /// Model id, for `modelPrimary` / `models`.
    #[serde(deserialize_with = "null_as_default")]
    pub id: String,
    /// Display name.
    #[serde(deserialize_with = "null_as_default")]
    pub name: String,
    /// Tier, free text.
    #[serde(deserialize_with = "null_as_default")]
    pub tier: String,
    /// Whether it is a reasoning model.
    #[serde(deserialize_with = "null_as_default")]
    pub reasoning: bool,
}

/// Reads `null` as the type's default, so an explicit `null` is as harmless as a missing field.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Reads an enum-like string, treating `null` and `""` as absent.
fn open_enum_or_none<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: for<'a> From<&'a str>,
{
    let raw = Option::<String>::deserialize(deserializer)?;
    Ok(raw
        .filter(|raw| !raw.is_empty())
        .map(|raw| T::from(raw.as_str())))
}

/// Debug view of a free-form object that may hold secrets: top-level keys only.
struct RedactedObject<'a>(Option<&'a Map<String, Value>>);

impl fmt::Debug for RedactedObject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("None"),
            Some(map) => {
                f.write_str("<redacted; keys ")?;
                f.debug_list().entries(map.keys()).finish()?;
                f.write_str(">")
            }
        }
    }
}

/// Debug view of a text that may hold secrets: its length only.
struct RedactedText<'a>(Option<&'a str>);

impl fmt::Debug for RedactedText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("None"),
            Some(text) => write!(f, "<redacted; {} bytes>", text.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The `single` example of `listInstances` in the contract, verbatim.
    const CONTRACT_LIST_EXAMPLE: &str = r#"{
        "success": true,
        "data": [{
            "id": "instance_abc123",
            "ownerId": "user_abc123",
            "agentFramework": "device-agent",
            "name": "my-agent-1",
            "providerId": "openclaw-k8s",
            "externalId": "device_abc123",
            "osType": "android",
            "hostingType": "physical",
            "cloudProvider": "local",
            "modelPrimary": "autoglm-phone",
            "models": ["autoglm-phone"],
            "status": "running",
            "desiredStatus": "running",
            "endpoint": "",
            "bridgeId": "bridge_abc123",
            "identityId": "identity_abc123",
            "totalRunSeconds": 3600,
            "connectivity": "online",
            "providerConfig": {},
            "region": "us-east-1",
            "createdAt": "2026-05-14T18:00:00Z"
        }],
        "total": 1
    }"#;

    #[derive(Deserialize)]
    struct Page {
        data: Vec<Instance>,
        total: u64,
    }

    #[test]
    fn contract_list_example_decodes() {
        let page: Page = serde_json::from_str(CONTRACT_LIST_EXAMPLE).unwrap();
        assert_eq!(page.total, 1);
        let instance = &page.data[0];
        assert_eq!(instance.instance_id, "instance_abc123");
        assert_eq!(instance.owner_id, "user_abc123");
        assert_eq!(instance.status, Some(InstanceStatus::Running));
        assert_eq!(instance.desired_status, Some(DesiredStatus::Running));
        assert_eq!(instance.connectivity, Some(Connectivity::Online));
        assert_eq!(instance.total_run_seconds, 3600);
        assert_eq!(instance.models, vec!["autoglm-phone".to_owned()]);
        assert_eq!(instance.region.as_deref(), Some("us-east-1"));
        assert_eq!(instance.created_at.as_deref(), Some("2026-05-14T18:00:00Z"));
        assert_eq!(instance.endpoint, "");
        assert!(!instance.is_transitioning());
    }

    #[test]
    fn contract_empty_list_example_decodes() {
        let page: Page =
            serde_json::from_str(r#"{"success": true, "data": [], "total": 0}"#).unwrap();
        assert!(page.data.is_empty());
    }

    #[test]
    fn instance_with_only_an_id_decodes_with_defaults() {
        let instance: Instance = serde_json::from_value(json!({"id": "i-1"})).unwrap();
        assert_eq!(instance.instance_id, "i-1");
        assert_eq!(instance.status, None);
        assert_eq!(instance.connectivity, None);
        assert!(instance.models.is_empty());
        assert!(instance.is_transitioning());
    }

    #[test]
    fn empty_object_decodes_as_default_instance() {
        let instance: Instance = serde_json::from_value(json!({})).unwrap();
        assert_eq!(instance, Instance::default());
    }

    #[test]
    fn nulls_decode_as_defaults() {
        let instance: Instance = serde_json::from_value(json!({
            "id": "i-1", "name": null, "models": null, "totalRunSeconds": null,
            "status": null, "desiredStatus": "", "connectivity": null, "region": null,
        }))
        .unwrap();
        assert_eq!(instance.name, "");
        assert!(instance.models.is_empty());
        assert_eq!(instance.total_run_seconds, 0);
        assert_eq!(instance.status, None);
        assert_eq!(instance.desired_status, None);
        assert_eq!(instance.region, None);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let instance: Instance = serde_json::from_value(json!({
            "id": "i-1",
            "status": "stopped",
            "brandNewField": {"nested": [1, 2, 3]},
            "anotherOne": 42,
        }))
        .unwrap();
        assert_eq!(instance.status, Some(InstanceStatus::Stopped));
    }

    #[test]
    fn unknown_enum_values_are_kept_verbatim() {
        let instance: Instance = serde_json::from_value(json!({
            "id": "i-1",
            "status": "hibernating",
            "desiredStatus": "Archived",
            "connectivity": "degraded",
        }))
        .unwrap();
        assert_eq!(
            instance.status,
            Some(InstanceStatus::Other("hibernating".to_owned()))
        );
        assert_eq!(
            instance.desired_status,
            Some(DesiredStatus::Other("Archived".to_owned()))
        );
        assert_eq!(
            instance.connectivity,
            Some(Connectivity::Other("degraded".to_owned()))
        );
        assert_eq!(
            instance.status.as_ref().map(InstanceStatus::as_str),
            Some("hibernating")
        );
    }

    #[test]
    fn known_enum_values_match_case_insensitively_and_serialize_canonically() {
        assert_eq!(InstanceStatus::from("RUNNING"), InstanceStatus::Running);
        assert_eq!(Connectivity::from("unknown"), Connectivity::Unknown);
        assert_eq!(
            serde_json::to_value(InstanceStatus::Provisioning).unwrap(),
            json!("provisioning")
        );
        assert_eq!(
            serde_json::to_value(InstanceStatus::Other("x-new".into())).unwrap(),
            json!("x-new")
        );
    }

    #[test]
    fn transitions_follow_status_against_desired_status() {
        let stopping = Instance {
            status: Some(InstanceStatus::Running),
            desired_status: Some(DesiredStatus::Stopped),
            ..Instance::default()
        };
        assert!(stopping.is_transitioning());
        let terminated = Instance {
            status: Some(InstanceStatus::Terminated),
            desired_status: Some(DesiredStatus::Terminated),
            ..Instance::default()
        };
        assert!(terminated.is_terminated());
        assert!(!terminated.is_transitioning());
    }

    #[test]
    fn deploy_request_leaves_out_unset_fields_and_uses_camel_case() {
        let request = DeployRequest {
            name: "ns-a-1234".into(),
            variant_id: Some("beeos-claw-small".into()),
            preferred_region: Some("us-east-1".into()),
            ..DeployRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"name": "ns-a-1234", "variantId": "beeos-claw-small", "preferredRegion": "us-east-1"})
        );
    }

    #[test]
    fn deploy_request_serializes_every_field() {
        let object = |value: Value| value.as_object().cloned();
        let request = DeployRequest {
            name: "n".into(),
            variant_id: None,
            agent_framework: Some("openclaw".into()),
            provider_id: Some("default".into()),
            provider_config: object(json!({"image": "x"})),
            config: object(json!({"apiKeys": {"openai": "sk-1"}})),
            model_primary: Some("gpt-4o".into()),
            models: vec!["gpt-4o".into()],
            system_prompt: Some("be nice".into()),
            mcp_servers: object(json!({"files": {"url": "http://x"}})),
            bridge_id: Some("b".into()),
            cluster_id: Some("cl-east-1".into()),
            preferred_region: Some("eu".into()),
        };
        let value = serde_json::to_value(&request).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "name",
            "agentFramework",
            "providerId",
            "providerConfig",
            "config",
            "modelPrimary",
            "models",
            "systemPrompt",
            "mcpServers",
            "bridgeId",
            "clusterId",
            "preferredRegion",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        let back: DeployRequest = serde_json::from_value(value).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn deploy_request_debug_redacts_secret_fields() {
        let request = DeployRequest {
            name: "visible-name".into(),
            agent_framework: Some("openclaw".into()),
            provider_config: json!({"apiKeys": {"openai": "sk-provider-secret"}})
                .as_object()
                .cloned(),
            config: json!({"apiKeys": {"anthropic": "sk-config-secret"}})
                .as_object()
                .cloned(),
            system_prompt: Some("prompt-secret".into()),
            mcp_servers: json!({"github": {"env": {"TOKEN": "ghp_mcp-secret"}}})
                .as_object()
                .cloned(),
            ..DeployRequest::default()
        };
        let debug = format!("{request:?} {request:#?}");
        for secret in [
            "sk-provider-secret",
            "sk-config-secret",
            "prompt-secret",
            "ghp_mcp-secret",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert!(debug.contains("visible-name"));
        assert!(debug.contains("apiKeys"));
        assert!(debug.contains("github"));
    }

    #[test]
    fn instance_debug_redacts_secret_fields() {
        let instance: Instance = serde_json::from_value(json!({
            "id": "i-1",
            "providerConfig": {"baseUrl": "sk-provider-secret"},
            "systemPrompt": "prompt-secret",
            "mcpServers": {"github": {"token": "ghp_mcp-secret"}},
        }))
        .unwrap();
        let debug = format!("{instance:?}");
        for secret in ["sk-provider-secret", "prompt-secret", "ghp_mcp-secret"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert!(debug.contains("i-1"));
    }

    #[test]
    fn list_query_always_sends_an_explicit_page_size_within_bounds() {
        let pairs = ListQuery::default().to_pairs();
        assert_eq!(
            pairs,
            vec![("page", "0".to_owned()), ("pageSize", "200".to_owned())]
        );
        let huge = ListQuery {
            page_size: 10_000,
            ..ListQuery::default()
        };
        assert_eq!(huge.effective_page_size(), MAX_PAGE_SIZE);
        let zero = ListQuery {
            page_size: 0,
            ..ListQuery::default()
        };
        assert_eq!(zero.effective_page_size(), MAX_PAGE_SIZE);
    }

    #[test]
    fn list_query_sends_every_filter_under_its_wire_name() {
        let query = ListQuery {
            page: 3,
            page_size: 50,
            status: Some(InstanceStatus::Running),
            provider_id: Some("p".into()),
            agent_framework: Some("f".into()),
            cluster_id: Some("c".into()),
            search: Some("my name".into()),
        };
        assert_eq!(
            query.to_pairs(),
            vec![
                ("page", "3".to_owned()),
                ("pageSize", "50".to_owned()),
                ("status", "running".to_owned()),
                ("providerId", "p".to_owned()),
                ("agentFramework", "f".to_owned()),
                ("clusterId", "c".to_owned()),
                ("search", "my name".to_owned()),
            ]
        );
    }

    #[test]
    fn page_is_last_when_total_is_reached_or_page_is_empty() {
        let one = vec![Instance::default()];
        let page = |instances: Vec<Instance>, total, page| InstancePage {
            instances,
            total,
            page,
            page_size: 2,
        };
        assert!(!page(one.clone(), Some(5), 0).is_last());
        assert!(!page(one.clone(), Some(5), 1).is_last());
        assert!(page(one.clone(), Some(5), 2).is_last());
        assert!(page(one.clone(), Some(4), 1).is_last());
        assert!(page(Vec::new(), Some(5), 0).is_last());
        assert!(!page(one, None, 7).is_last());
        assert!(page(Vec::new(), None, 7).is_last());
    }

    #[test]
    fn catalog_items_decode_with_either_capability_spelling() {
        let camel: Provider = serde_json::from_value(json!({
            "meta": {"id": "default", "name": "Default", "description": "d", "version": "1"},
            "capabilities": {"longRunning": true, "maxDurationSec": 3600, "costModel": "hourly", "device": false},
        }))
        .unwrap();
        assert_eq!(camel.meta.id, "default");
        assert_eq!(camel.capabilities.long_running, Some(true));
        assert_eq!(camel.capabilities.max_duration_sec, Some(3600));
        let snake: Provider = serde_json::from_value(json!({
            "meta": {"id": "old"},
            "capabilities": {"long_running": false, "code_exec": true, "futureFlag": 1},
        }))
        .unwrap();
        assert_eq!(snake.capabilities.long_running, Some(false));
        assert_eq!(snake.capabilities.code_exec, Some(true));
        let region: Region =
            serde_json::from_value(json!({"id": "us-east-1", "available": true})).unwrap();
        assert!(region.available);
        let model: Model =
            serde_json::from_value(json!({"id": "gpt-4o", "tier": "pro", "reasoning": null}))
                .unwrap();
        assert!(!model.reasoning);
    }
}
