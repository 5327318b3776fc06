//! Renders an instance as the contract's `InstanceDataDTO` at a given moment, with `apiKeys`
//! stripped from `providerConfig`, and the admin view that adds what the API hides.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::store::{Instance, Status};

/// RFC 3339 with milliseconds and `Z`, e.g. `2026-08-22T10:00:00.123Z`.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The contract's `InstanceDataDTO`; required fields first, optional ones left out when empty.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDto {
    id: String,
    owner_id: String,
    agent_framework: String,
    provider_id: String,
    external_id: String,
    os_type: String,
    hosting_type: String,
    cloud_provider: String,
    name: String,
    model_primary: String,
    models: Vec<String>,
    status: &'static str,
    desired_status: &'static str,
    endpoint: String,
    bridge_id: String,
    identity_id: String,
    total_run_seconds: u64,
    connectivity: &'static str,
    provider_config: Map<String, Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connectivity_reason: Option<&'static str>,
    cluster_id: String,
    region: String,
    is_trial: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_prompt: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp_servers: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped_at: Option<String>,
    status_entered_at: String,
    connectivity_updated_at: String,
    ms_connection_status: &'static str,
    ms_connection_updated_at: String,
    created_at: String,
    updated_at: String,
}

impl InstanceDto {
    /// `instance` as the API shows it at `now`.
    pub fn of(instance: &Instance, now: SystemTime) -> Self {
        let status = instance.status(now);
        let entered = timestamp(instance.status_entered_at(now));
        let (connectivity, reason, ms_connection) = match status {
            Status::Running => ("online", None, "connected"),
            Status::Pending | Status::Provisioning => ("unknown", None, "unknown"),
            Status::Stopped | Status::Terminated => {
                ("offline", Some("instance_disconnected"), "unknown")
            }
        };
        let spec = &instance.spec;
        let mut provider_config = spec.provider_config.clone();
        provider_config.remove("apiKeys");
        Self {
            id: instance.id.clone(),
            owner_id: instance.owner.clone(),
            agent_framework: spec.agent_framework.clone(),
            provider_id: spec.provider_id.clone(),
            external_id: instance.external_id(),
            os_type: spec.os_type.clone(),
            hosting_type: spec.hosting_type.clone(),
            cloud_provider: spec.cloud_provider.clone(),
            name: spec.name.clone(),
            model_primary: spec.model_primary.clone(),
            models: spec.models.clone(),
            status: status.as_str(),
            desired_status: instance.desired().as_str(),
            endpoint: instance.endpoint(),
            bridge_id: spec.bridge_id.clone(),
            identity_id: instance.identity_id(),
            total_run_seconds: instance.total_run_seconds(now),
            connectivity,
            provider_config,
            connectivity_reason: reason,
            cluster_id: spec.cluster_id.clone(),
            region: spec.region.clone(),
            is_trial: false,
            system_prompt: spec.system_prompt.clone(),
            mcp_servers: spec.mcp_servers.clone(),
            started_at: instance.last_entered(Status::Running, now).map(timestamp),
            stopped_at: instance.last_entered(Status::Stopped, now).map(timestamp),
            status_entered_at: entered.clone(),
            connectivity_updated_at: entered.clone(),
            ms_connection_status: ms_connection,
            ms_connection_updated_at: entered,
            created_at: timestamp(instance.created_at),
            updated_at: timestamp(instance.updated_at(now)),
        }
    }
}

/// One row of `GET /_sim/instances`: the DTO plus what tests need to judge duplicates, leaks and
/// secret injection.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminInstance {
    #[serde(flatten)]
    dto: InstanceDto,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant_id: Option<String>,
    /// When destroy was accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    destroyed_at: Option<String>,
    /// Terminated for longer than the retention: get/list answer 404 for it.
    expired: bool,
    /// The deploy body exactly as received, `apiKeys` included.
    deploy_request: Value,
}

impl AdminInstance {
    /// `instance` for the admin view at `now`.
    pub fn of(instance: &Instance, now: SystemTime, expired: bool) -> Self {
        Self {
            dto: InstanceDto::of(instance, now),
            variant_id: instance.spec.variant_id.clone(),
            destroyed_at: instance.destroyed_at.map(timestamp),
            expired,
            deploy_request: instance.spec.request.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Settings;

    fn instance() -> Instance {
        let spec = crate::deploy::parse(
            br#"{"name":"a","agentFramework":"x","providerConfig":{"apiKeys":{"k":"s"},"keep":1}}"#,
        )
        .unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Instance::deployed(
            "inst_ab".into(),
            "alice".into(),
            spec,
            t0,
            &Settings::default(),
        )
    }

    #[test]
    fn every_required_field_is_present_and_api_keys_are_stripped() {
        let i = instance();
        let v = serde_json::to_value(InstanceDto::of(&i, i.created_at)).unwrap();
        let contract: serde_json::Value =
            serde_yaml_ng::from_str(include_str!("../contract/beeos-platform-v1.yaml")).unwrap();
        let required = contract["components"]["schemas"]["InstanceDataDTO"]["required"]
            .as_array()
            .unwrap();
        assert!(required.len() >= 19, "{required:?}");
        for field in required.iter().filter_map(|f| f.as_str()) {
            assert!(
                v.get(field).is_some_and(|f| !f.is_null()),
                "{field} missing"
            );
        }
        assert_eq!(v["providerConfig"], serde_json::json!({"keep": 1}));
        assert_eq!(v["status"], "pending");
        assert_eq!(v["connectivity"], "unknown");
        assert_eq!(v["createdAt"], "2027-01-15T08:00:00.000Z");
        assert!(v.get("startedAt").is_none());
    }

    #[test]
    fn running_is_online_and_has_started_at() {
        let i = instance();
        let later = i.created_at + Duration::from_secs(5);
        let v = serde_json::to_value(InstanceDto::of(&i, later)).unwrap();
        assert_eq!(
            (v["status"].as_str(), v["connectivity"].as_str()),
            (Some("running"), Some("online"))
        );
        assert!(v.get("connectivityReason").is_none());
        assert_eq!(v["startedAt"], "2027-01-15T08:00:00.400Z");
        assert_eq!(v["totalRunSeconds"], 4);
    }

    #[test]
    fn the_admin_view_keeps_the_request_with_its_secrets() {
        let i = instance();
        let v = serde_json::to_value(AdminInstance::of(&i, i.created_at, false)).unwrap();
        assert_eq!(v["deployRequest"]["providerConfig"]["apiKeys"]["k"], "s");
        assert!(v["providerConfig"].get("apiKeys").is_none());
        assert_eq!(v["expired"], false);
        assert_eq!(v["ownerId"], "alice");
    }
}
