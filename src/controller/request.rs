//! The one translation from a `BeeosInstance` spec to a BeeOS deploy request.

use crate::beeos::DeployRequest;
use crate::crd::BeeosInstanceSpec;

/// The deploy body for `spec`; `resource_name` is the display name when `spec.name` is unset.
pub fn deploy_request(spec: &BeeosInstanceSpec, resource_name: &str) -> DeployRequest {
    DeployRequest {
        name: spec
            .name
            .clone()
            .unwrap_or_else(|| resource_name.to_owned()),
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
}
