//! The one translation from a `BeeosInstance` spec to a BeeOS deploy request: the spec's
//! fields, Secret values injected at their paths, the name the instance gets at BeeOS, and the
//! digest that tells whether a deployed instance is up to date. Pure; the driver reads the
//! Secrets.

use serde_json::{Map, Value};

use crate::beeos::DeployRequest;
use crate::crd::BeeosInstanceSpec;

/// Longest instance name BeeOS accepts.
const MAX_NAME_CHARS: usize = 128;

/// Characters of the per-deploy suffix (hex of a SHA-256).
const SUFFIX_CHARS: usize = 8;

/// The name an instance gets at BeeOS: the display name (`spec.name`, else the resource's
/// name), cut to fit, then `-` and 8 hex characters derived from the resource's uid and the
/// deploy's pending mark. No two deploys, of one resource or of two, share a name, so the
/// search for a deploy whose answer was lost can only ever find that very deploy — never
/// another namespace's instance with the same display name, nor an earlier attempt of this
/// resource that a newer one superseded.
pub fn instance_name(display_name: &str, resource_uid: &str, mark: &str) -> String {
    let hash = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{resource_uid}\n{mark}").as_bytes(),
    );
    let suffix: String = hash.as_ref()[..SUFFIX_CHARS / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let room = MAX_NAME_CHARS - SUFFIX_CHARS - 1;
    let display: String = display_name.chars().take(room).collect();
    format!("{display}-{suffix}")
}

/// What the instance is called before its suffix: `spec.name`, else the resource's name.
pub fn display_name(spec: &BeeosInstanceSpec, resource_name: &str) -> String {
    spec.name
        .clone()
        .unwrap_or_else(|| resource_name.to_owned())
}

/// The deploy body for `spec`; `resource_name` is the display name when `spec.name` is unset.
/// The digest is taken of this body; the name sent is [`instance_name`].
pub fn deploy_request(spec: &BeeosInstanceSpec, resource_name: &str) -> DeployRequest {
    DeployRequest {
        name: display_name(spec, resource_name),
        variant_id: spec.variant_id.clone(),
        agent_framework: spec.agent_framework.clone(),
        provider_id: spec.provider_id.clone(),
        provider_config: spec.provider_config.clone(),
        config: spec.config.clone(),
        model_primary: spec.model_primary.clone(),
        models: spec.models.clone().unwrap_or_default(),
        system_prompt: spec.system_prompt.clone(),
        mcp_servers: spec.mcp_servers.clone(),
        bridge_id: spec.bridge_id.clone(),
        cluster_id: spec.cluster_id.clone(),
        preferred_region: spec.preferred_region.clone(),
    }
}

/// Places `value` at `path` (`config.a.b`, `providerConfig.apiKeys.openai`, `mcpServers.x.env.T`),
/// creating missing objects. Fails, naming the path only, when the path crosses a value that is
/// not an object.
pub fn inject(request: &mut DeployRequest, path: &str, value: String) -> Result<(), String> {
    let mut keys = path.split('.');
    let root = match keys.next() {
        Some("config") => &mut request.config,
        Some("providerConfig") => &mut request.provider_config,
        Some("mcpServers") => &mut request.mcp_servers,
        _ => {
            return Err(format!(
                "path {path:?} must start with config, providerConfig or mcpServers"
            ));
        }
    };
    let keys: Vec<&str> = keys.collect();
    let Some((last, parents)) = keys.split_last() else {
        return Err(format!("path {path:?} names no key"));
    };
    let mut object: &mut Map<String, Value> = root.get_or_insert_with(Map::new);
    for key in parents {
        let next = object
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        object = next
            .as_object_mut()
            .ok_or_else(|| format!("path {path:?} crosses {key:?}, which is not an object"))?;
    }
    object.insert((*last).to_owned(), Value::String(value));
    Ok(())
}

/// A digest of everything a deploy sends (injected values included), independent of key order.
/// Stored in annotations: it names a deploy without revealing what it carried.
pub fn digest(request: &DeployRequest) -> String {
    let value = serde_json::to_value(request).unwrap_or(Value::Null);
    let mut canonical = String::new();
    write_canonical(&value, &mut canonical);
    let hash = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    hash.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_defaults_to_the_resource_name_and_fields_pass_through() {
        let spec = BeeosInstanceSpec {
            agent_framework: Some("beeos-claw".into()),
            models: Some(vec!["gpt-4o".into()]),
            system_prompt: Some("be brief".into()),
            ..BeeosInstanceSpec::default()
        };
        let request = deploy_request(&spec, "agent-a");
        assert_eq!(request.name, "agent-a");
        assert_eq!(request.agent_framework.as_deref(), Some("beeos-claw"));
        assert_eq!(request.models, ["gpt-4o"]);
        let body = serde_json::to_value(&request).expect("serializes");
        assert_eq!(body["systemPrompt"], "be brief");
        assert!(body.get("variantId").is_none(), "{body}");

        let named = BeeosInstanceSpec {
            name: Some("shown-name".into()),
            ..spec
        };
        assert_eq!(deploy_request(&named, "agent-a").name, "shown-name");
    }

    #[test]
    fn instance_names_are_unique_per_resource_and_deploy_and_fit_beeos() {
        let a = instance_name("agent", "uid-a", "2026-12-01T10:00:00Z");
        assert!(
            a.starts_with("agent-") && a.len() == "agent-".len() + 8,
            "{a}"
        );
        assert_eq!(a, instance_name("agent", "uid-a", "2026-12-01T10:00:00Z"));
        assert_ne!(a, instance_name("agent", "uid-b", "2026-12-01T10:00:00Z"));
        assert_ne!(a, instance_name("agent", "uid-a", "2026-12-01T10:00:01Z"));
        let long = instance_name(&"x".repeat(200), "uid-a", "m");
        assert_eq!(long.chars().count(), MAX_NAME_CHARS);
    }

    #[test]
    fn injection_creates_objects_and_keeps_neighbours() {
        let mut request = DeployRequest {
            provider_config: serde_json::from_value(serde_json::json!({"apiKeys": {"other": "x"}}))
                .expect("an object"),
            ..DeployRequest::default()
        };
        inject(&mut request, "providerConfig.apiKeys.openai", "sk-1".into()).expect("injects");
        inject(&mut request, "mcpServers.files.env.TOKEN", "t-1".into()).expect("injects");
        let body = serde_json::to_value(&request).expect("serializes");
        assert_eq!(body["providerConfig"]["apiKeys"]["openai"], "sk-1");
        assert_eq!(body["providerConfig"]["apiKeys"]["other"], "x");
        assert_eq!(body["mcpServers"]["files"]["env"]["TOKEN"], "t-1");
    }

    #[test]
    fn injection_through_a_non_object_fails_naming_the_path_not_the_value() {
        let mut request = DeployRequest::default();
        inject(&mut request, "config.region", "eu".into()).expect("injects");
        let err = inject(&mut request, "config.region.zone", "secret-value".into())
            .expect_err("region is a string");
        assert!(
            err.contains("config.region.zone") && !err.contains("secret-value"),
            "{err}"
        );
    }

    #[test]
    fn digest_changes_with_any_value_and_ignores_key_order() {
        let spec: BeeosInstanceSpec = serde_json::from_value(serde_json::json!({
            "agentFramework": "f", "config": {"a": 1, "b": 2}
        }))
        .expect("parses");
        let reordered: BeeosInstanceSpec = serde_json::from_value(serde_json::json!({
            "config": {"b": 2, "a": 1}, "agentFramework": "f"
        }))
        .expect("parses");
        let base = deploy_request(&spec, "n");
        assert_eq!(digest(&base), digest(&deploy_request(&reordered, "n")));
        let mut injected = base.clone();
        inject(&mut injected, "config.key", "v1".into()).expect("injects");
        let mut rotated = base.clone();
        inject(&mut rotated, "config.key", "v2".into()).expect("injects");
        assert_ne!(digest(&injected), digest(&rotated));
        assert_ne!(digest(&base), digest(&injected));
        assert!(!digest(&injected).contains("v1"));
    }
}
