//! Turns a raw deploy body into what to create, or into the 400 the contract asks for: JSON and
//! shape checks, the `DeployInstanceRequest` limits, the refused scheduling fields, exactly one of
//! `variantId` / `agentFramework`, and resolution against the catalog. Error messages name fields,
//! never values.

use serde_json::{Map, Value};

use crate::catalog;
use crate::errors::ApiError;

/// Largest accepted body on the instance routes (64 KiB); larger gets 413.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Scheduling fields the contract refuses: the catalog variant decides them.
pub const REFUSED_FIELDS: [&str; 3] =
    ["ownershipPreference", "maxPricePerHour", "resourceTypeHint"];

/// A validated deploy, resolved against the catalog.
#[derive(Clone, Debug, PartialEq)]
pub struct NewInstance {
    /// Display name.
    pub name: String,
    /// The variant deployed, if any.
    pub variant_id: Option<String>,
    /// Whether the variant deploys trial instances.
    pub is_trial: bool,
    /// Agent framework (from the variant or the request).
    pub agent_framework: String,
    /// Provider (from the variant, the request, or the default).
    pub provider_id: String,
    /// `osType` from the provider.
    pub os_type: String,
    /// `hostingType` from the provider.
    pub hosting_type: String,
    /// `cloudProvider` from the provider.
    pub cloud_provider: String,
    /// Placement region.
    pub region: String,
    /// Cluster (requested, or one named after the region).
    pub cluster_id: String,
    /// Bridge, empty when none was given.
    pub bridge_id: String,
    /// Primary model.
    pub model_primary: String,
    /// All models.
    pub models: Vec<String>,
    /// providerConfig, then config on top, then the catalog's keys on top. Still holds `apiKeys`.
    pub provider_config: Map<String, Value>,
    /// As sent.
    pub system_prompt: Option<String>,
    /// As sent.
    pub mcp_servers: Option<Map<String, Value>>,
    /// The whole body as received, for the admin view.
    pub request: Value,
}

/// Validates `body` (already known to be within [`BODY_LIMIT`]) and resolves it.
pub fn parse(body: &[u8]) -> Result<NewInstance, ApiError> {
    let request: Value = serde_json::from_slice(body).map_err(|_| ApiError::invalid_json())?;
    let fields = request
        .as_object()
        .ok_or_else(|| ApiError::invalid_body("request body must be a JSON object"))?;
    let f = Fields(fields);

    if let Some(refused) = REFUSED_FIELDS.iter().find(|k| fields.contains_key(**k)) {
        return Err(ApiError::invalid_param(
            refused,
            format!("{refused} is not accepted; the catalog variant decides scheduling"),
        ));
    }
    // Checked in the contract's property order so the first offending field is reported.
    let variant_id = f.string("variantId", 128)?;
    let agent_framework = f.string("agentFramework", 64)?;
    let provider_id = f.string("providerId", 64)?;
    let provider_config = f.object("providerConfig")?;
    let name = f.string("name", 128)?;
    let model_primary = f.string("modelPrimary", 128)?;
    let models = f.strings("models", 128)?;
    let system_prompt = f.string("systemPrompt", 8192)?;
    let mcp_servers = f.object("mcpServers")?;
    let bridge_id = f.string("bridgeId", 128)?;
    let config = f.object("config")?;
    let cluster_id = f.string("clusterId", 128)?;
    let preferred_region = f.string("preferredRegion", 64)?;

    let name = name.ok_or_else(|| ApiError::missing_param("name", "name is required"))?;
    let (variant, agent_framework, provider) = match (variant_id.as_deref(), agent_framework) {
        (None, None) => {
            return Err(ApiError::missing_param(
                "variantId",
                "send either variantId or agentFramework",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_param(
                "agentFramework",
                "send either variantId or agentFramework, not both",
            ));
        }
        (Some(id), None) => {
            let v = catalog::variant(id)
                .ok_or_else(|| ApiError::invalid_param("variantId", "unknown variantId"))?;
            // Checked by a catalog unit test: every variant names a known provider.
            let p = catalog::provider(v.provider_id)
                .ok_or_else(|| ApiError::invalid_param("variantId", "variant has no provider"))?;
            (Some(v), v.agent_framework.to_owned(), p)
        }
        (None, Some(framework)) => {
            let id = provider_id.as_deref().unwrap_or(catalog::DEFAULT_PROVIDER);
            let p = catalog::provider(id)
                .ok_or_else(|| ApiError::invalid_param("providerId", "unknown providerId"))?;
            (None, framework, p)
        }
    };

    let mut merged = provider_config.unwrap_or_default();
    merged.extend(config.unwrap_or_default());
    if let Some(v) = variant {
        merged.extend(v.catalog_config());
    }
    let region = provider.placement(preferred_region.as_deref()).to_owned();
    let model_primary = model_primary
        .or_else(|| models.as_ref().and_then(|m| m.first().cloned()))
        .unwrap_or_else(|| {
            variant
                .map_or(catalog::DEFAULT_MODEL, |v| v.model_primary)
                .to_owned()
        });
    let models = models.unwrap_or_else(|| vec![model_primary.clone()]);

    Ok(NewInstance {
        name,
        variant_id: variant.map(|v| v.id.to_owned()),
        is_trial: variant.is_some_and(|v| v.trial),
        agent_framework,
        provider_id: provider.id.to_owned(),
        os_type: provider.os_type.to_owned(),
        hosting_type: provider.hosting_type.to_owned(),
        cloud_provider: provider.cloud_provider.to_owned(),
        cluster_id: cluster_id.unwrap_or_else(|| format!("cl-{region}")),
        region,
        bridge_id: bridge_id.unwrap_or_default(),
        model_primary,
        models,
        provider_config: merged,
        system_prompt,
        mcp_servers,
        request,
    })
}

/// Typed access to the body's fields; `null` counts as absent, like the real (Go) server.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// A string of at most `max` characters; empty counts as absent.
    fn string(&self, field: &str, max: usize) -> Result<Option<String>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.chars().count() > max => Err(ApiError::invalid_param(
                field,
                format!("{field} must be at most {max} characters"),
            )),
            Some(Value::String(s)) => Ok(Some(s.clone()).filter(|s| !s.is_empty())),
            Some(_) => Err(ApiError::invalid_param(
                field,
                format!("{field} must be a string"),
            )),
        }
    }

    /// An array of strings, each at most `max` characters.
    fn strings(&self, field: &str, max: usize) -> Result<Option<Vec<String>>, ApiError> {
        let items = match self.0.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(ApiError::invalid_param(
                    field,
                    format!("{field} must be an array of strings"),
                ));
            }
        };
        items
            .iter()
            .map(|item| match item {
                Value::String(s) if s.chars().count() <= max => Ok(s.clone()),
                Value::String(_) => Err(ApiError::invalid_param(
                    field,
                    format!("each {field} item must be at most {max} characters"),
                )),
                _ => Err(ApiError::invalid_param(
                    field,
                    format!("{field} must be an array of strings"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A JSON object.
    fn object(&self, field: &str) -> Result<Option<Map<String, Value>>, ApiError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(_) => Err(ApiError::invalid_param(
                field,
                format!("{field} must be an object"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse_json(v: Value) -> Result<NewInstance, ApiError> {
        parse(&serde_json::to_vec(&v).unwrap())
    }

    fn rejected(v: Value) -> (String, Option<String>) {
        let e = parse_json(v).unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
        (e.code, e.param)
    }

    fn code_param(code: &str, param: &str) -> (String, Option<String>) {
        (code.to_owned(), Some(param.to_owned()))
    }

    #[test]
    fn a_variant_deploy_takes_framework_provider_and_catalog_config() {
        let n = parse_json(json!({
            "name": "a", "variantId": "beeos-claw-small",
            "providerConfig": {"size": "huge", "x": 1}, "config": {"apiKeys": {"k": "secret"}},
        }))
        .unwrap();
        assert_eq!(n.agent_framework, "beeos-claw");
        assert_eq!(n.provider_id, "default");
        assert_eq!(n.variant_id.as_deref(), Some("beeos-claw-small"));
        // The catalog wins on clashes; user keys survive otherwise.
        assert_eq!(n.provider_config["size"], "small");
        assert_eq!(n.provider_config["x"], 1);
        assert_eq!(n.provider_config["apiKeys"]["k"], "secret");
        assert_eq!(n.models, vec![catalog::DEFAULT_MODEL.to_owned()]);
    }

    #[test]
    fn an_explicit_deploy_defaults_the_provider_and_places_the_region() {
        let n = parse_json(json!({
            "name": "a", "agentFramework": "openclaw", "preferredRegion": "eu-west-1",
            "models": ["gpt-5-mini", "deepseek-r1"],
        }))
        .unwrap();
        assert_eq!(n.provider_id, "default");
        assert_eq!(n.region, "eu-west-1");
        assert_eq!(n.cluster_id, "cl-eu-west-1");
        assert_eq!(n.model_primary, "gpt-5-mini");
    }

    #[test]
    fn body_shape_errors_have_the_contract_codes() {
        assert_eq!(parse(b"{nope").unwrap_err().code, "invalid_json");
        assert_eq!(parse(b"[1]").unwrap_err().code, "invalid_body");
        assert_eq!(
            rejected(json!({"variantId": "beeos-claw-small"})),
            code_param("missing_param", "name")
        );
        assert_eq!(
            rejected(json!({"name": ""  , "variantId": "beeos-claw-small"})),
            code_param("missing_param", "name")
        );
        assert_eq!(
            rejected(json!({"name": "a"})),
            code_param("missing_param", "variantId")
        );
        assert_eq!(
            rejected(json!({"name": "a", "variantId": "beeos-claw-small", "agentFramework": "x"})),
            code_param("invalid_param", "agentFramework")
        );
        assert_eq!(
            rejected(json!({"name": "a", "variantId": "nope"})),
            code_param("invalid_param", "variantId")
        );
        assert_eq!(
            rejected(json!({"name": "a", "agentFramework": "x", "providerId": "nope"})),
            code_param("invalid_param", "providerId")
        );
    }

    #[test]
    fn limits_are_the_contract_limits() {
        let base = || json!({"name": "a", "agentFramework": "x"});
        let cases: [(&str, usize); 8] = [
            ("name", 128),
            ("providerId", 64),
            ("modelPrimary", 128),
            ("systemPrompt", 8192),
            ("bridgeId", 128),
            ("clusterId", 128),
            ("preferredRegion", 64),
            ("agentFramework", 64),
        ];
        for (field, max) in cases {
            let mut ok = base();
            ok[field] = json!("d".repeat(max));
            if field == "providerId" {
                // Within the limit but unknown: a different error than the length one.
                assert_eq!(rejected(ok).0, "invalid_param");
            } else {
                assert!(parse_json(ok).is_ok(), "{field} at {max}");
            }
            let mut long = base();
            long[field] = json!("d".repeat(max + 1));
            assert_eq!(
                rejected(long),
                code_param("invalid_param", field),
                "{field}"
            );
        }
        let mut variant = json!({"name": "a"});
        variant["variantId"] = json!("v".repeat(129));
        assert_eq!(rejected(variant), code_param("invalid_param", "variantId"));
        let mut models = base();
        models["models"] = json!(["ok", "m".repeat(129)]);
        assert_eq!(rejected(models), code_param("invalid_param", "models"));
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        let n = parse_json(json!({"name": "é".repeat(128), "agentFramework": "x"}));
        assert!(n.is_ok());
    }

    #[test]
    fn types_are_checked() {
        let base = || json!({"name": "a", "agentFramework": "x"});
        for (field, bad) in [
            ("name", json!(5)),
            ("providerConfig", json!([])),
            ("config", json!("s")),
            ("mcpServers", json!(1)),
            ("models", json!("m")),
            ("models", json!([1])),
        ] {
            let mut body = base();
            body[field] = bad;
            assert_eq!(
                rejected(body),
                code_param("invalid_param", field),
                "{field}"
            );
        }
    }

    #[test]
    fn scheduling_fields_are_refused() {
        for field in REFUSED_FIELDS {
            let mut body = json!({"name": "a", "variantId": "beeos-claw-small"});
            body[field] = json!("x");
            assert_eq!(rejected(body), code_param("invalid_param", field));
        }
    }

    #[test]
    fn errors_never_echo_secret_values() {
        let e = parse_json(json!({
            "name": "a", "agentFramework": "x", "systemPrompt": "TOPSECRET".repeat(1000),
        }))
        .unwrap_err();
        assert!(!e.message.contains("TOPSECRET"));
        let e = parse_json(json!({"name": "a", "variantId": "TOPSECRET"})).unwrap_err();
        assert!(!e.message.contains("TOPSECRET"));
    }
}
