//! Renders an instance as the contract's `InstanceDataDTO` at a given moment, with `apiKeys`
//! stripped from `providerConfig`, and the admin view that adds what the API hides. The views
//! borrow from the table and serialize straight from it: a page of 200 clones nothing.

use std::time::SystemTime;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::store::{Instance, Status};

/// A moment, serialized as RFC 3339 with milliseconds and `Z`, e.g. `2026-08-22T10:00:00.123Z`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timestamp(pub SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// `providerConfig` as the API shows it: every key but `apiKeys`.
#[derive(Clone, Copy, Debug)]
struct WithoutApiKeys<'a>(&'a Map<String, Value>);

impl Serialize for WithoutApiKeys<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let shown = self.0.iter().filter(|(k, _)| *k != "apiKeys");
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in shown {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// The contract's `InstanceDataDTO`; required fields first, optional ones left out when empty.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDto<'a> {
    id: &'a str,
    owner_id: &'a str,
    agent_framework: &'a str,
    provider_id: &'a str,
    external_id: String,
    os_type: &'a str,
    hosting_type: &'a str,
    cloud_provider: &'a str,
    name: &'a str,
    model_primary: &'a str,
    models: &'a [String],
    status: &'static str,
    desired_status: &'static str,
    endpoint: String,
    bridge_id: &'a str,
    identity_id: String,
    total_run_seconds: u64,
    connectivity: &'static str,
    provider_config: WithoutApiKeys<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connectivity_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    halt_reason: Option<&'static str>,
    cluster_id: &'a str,
    region: &'a str,
    is_trial: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mcp_servers: Option<&'a Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stopped_at: Option<Timestamp>,
    status_entered_at: Timestamp,
    connectivity_updated_at: Timestamp,
    ms_connection_status: &'static str,
    ms_connection_updated_at: Timestamp,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl<'a> InstanceDto<'a> {
    /// `instance` as the API shows it at `now`.
    pub fn of(instance: &'a Instance, now: SystemTime) -> Self {
        let status = instance.status(now);
        let entered = Timestamp(instance.status_entered_at(now));
        let (connectivity, reason, ms_connection) = match status {
            Status::Running => ("online", None, "connected"),
            Status::Pending | Status::Provisioning => ("unknown", None, "unknown"),
            Status::Stopped | Status::Terminated => {
                ("offline", Some("instance_disconnected"), "unknown")
            }
        };
        let spec = &instance.spec;
        Self {
            id: &instance.id,
            owner_id: &instance.owner,
            agent_framework: &spec.agent_framework,
            provider_id: &spec.provider_id,
            external_id: instance.external_id(),
            os_type: &spec.os_type,
            hosting_type: &spec.hosting_type,
            cloud_provider: &spec.cloud_provider,
            name: &spec.name,
            model_primary: &spec.model_primary,
            models: &spec.models,
            status: status.as_str(),
            desired_status: instance.desired(now).as_str(),
            endpoint: instance.endpoint(),
            bridge_id: &spec.bridge_id,
            identity_id: instance.identity_id(),
            total_run_seconds: instance.total_run_seconds(now),
            connectivity,
            provider_config: WithoutApiKeys(&spec.provider_config),
            connectivity_reason: reason,
            halt_reason: instance.halt_reason(now),
            cluster_id: &spec.cluster_id,
            region: &spec.region,
            is_trial: spec.is_trial,
            expires_at: instance.expires_at.map(Timestamp),
            system_prompt: spec.system_prompt.as_deref(),
            mcp_servers: spec.mcp_servers.as_ref(),
            started_at: instance.last_entered(Status::Running, now).map(Timestamp),
            stopped_at: instance.last_entered(Status::Stopped, now).map(Timestamp),
            status_entered_at: entered,
            connectivity_updated_at: entered,
            ms_connection_status: ms_connection,
            ms_connection_updated_at: entered,
            created_at: Timestamp(instance.created_at),
            updated_at: Timestamp(instance.updated_at(now)),
        }
    }
}

/// One row of `GET /_sim/instances`: the DTO plus what tests need to judge duplicates, leaks and
/// secret injection.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminInstance<'a> {
    #[serde(flatten)]
    dto: InstanceDto<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant_id: Option<&'a str>,
    /// When destroy was accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    destroyed_at: Option<Timestamp>,
    /// Terminated for longer than the retention: get/list answer 404 for it.
    expired: bool,
    /// The deploy body exactly as received, `apiKeys` included.
    deploy_request: &'a Value,
}

impl<'a> AdminInstance<'a> {
    /// `instance` for the admin view at `now`.
    pub fn of(instance: &'a Instance, now: SystemTime, expired: bool) -> Self {
        Self {
            dto: InstanceDto::of(instance, now),
            variant_id: instance.spec.variant_id.as_deref(),
            destroyed_at: instance.destroyed_at.map(Timestamp),
            expired,
            deploy_request: &instance.spec.request,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

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
        assert_eq!(v["isTrial"], false);
        assert!(v.get("expiresAt").is_none() && v.get("haltReason").is_none());
    }

    #[test]
    fn a_trial_shows_its_expiry_and_once_past_it_is_stopped_with_a_halt_reason() {
        let spec = crate::deploy::parse(br#"{"name":"t","variantId":"beeos-claw-trial"}"#).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let settings = Settings {
            trial_ms: 60_000,
            ..Settings::default()
        };
        let i = Instance::deployed("inst_t".into(), "alice".into(), spec, t0, &settings);
        let v = serde_json::to_value(InstanceDto::of(&i, t0)).unwrap();
        assert_eq!(v["isTrial"], true);
        assert_eq!(v["expiresAt"], "2027-01-15T08:01:00.000Z");
        let later =
            serde_json::to_value(InstanceDto::of(&i, t0 + Duration::from_secs(90))).unwrap();
        assert_eq!(
            (
                &later["status"],
                &later["desiredStatus"],
                &later["connectivity"],
                &later["haltReason"]
            ),
            (
                &json!("stopped"),
                &json!("stopped"),
                &json!("offline"),
                &json!("trial_expired")
            )
        );
        assert_eq!(later["stoppedAt"], "2027-01-15T08:01:00.000Z");
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
