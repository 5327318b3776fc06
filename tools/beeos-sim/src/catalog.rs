//! The simulator's small built-in catalog: providers with their regions, deploy models, and the
//! variants a `variantId` resolves to. Static data and lookups only.

use serde_json::{Value, json};

/// A provider of `GET /api/v1/providers`, with what instances on it look like.
#[derive(Debug)]
pub struct Provider {
    /// `meta.id`, also the `providerId` of instances.
    pub id: &'static str,
    /// `meta.name`.
    pub name: &'static str,
    /// `meta.description`.
    pub description: &'static str,
    /// Regions served; the first is the default placement.
    pub regions: &'static [Region],
    /// `osType` of instances.
    pub os_type: &'static str,
    /// `hostingType` of instances.
    pub hosting_type: &'static str,
    /// `cloudProvider` of instances.
    pub cloud_provider: &'static str,
    /// `capabilities.device`.
    pub device: bool,
}

/// A deploy region.
#[derive(Debug)]
pub struct Region {
    /// Region id, also the instance's `region`.
    pub id: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Whether deploys may land there.
    pub available: bool,
}

/// A deploy model of `GET /api/v1/deploy/models`.
#[derive(Debug)]
pub struct Model {
    /// Model id, as in `modelPrimary`.
    pub id: &'static str,
    /// Display name.
    pub name: &'static str,
    /// Price tier.
    pub tier: &'static str,
    /// Whether it reasons.
    pub reasoning: bool,
    /// Agent frameworks that offer it.
    pub frameworks: &'static [&'static str],
}

/// A catalog variant: what a `variantId` deploy gets.
#[derive(Debug)]
pub struct Variant {
    /// The `variantId`.
    pub id: &'static str,
    /// Framework the variant runs.
    pub agent_framework: &'static str,
    /// Provider it is placed on.
    pub provider_id: &'static str,
    /// Default primary model.
    pub model_primary: &'static str,
    /// Size recorded in the catalog part of `providerConfig`.
    pub size: &'static str,
    /// Whether it deploys trial instances (`isTrial`, expiring `trialMs` after deploy).
    pub trial: bool,
}

/// The model used when a deploy names none.
pub const DEFAULT_MODEL: &str = "claude-sonnet-4-5";

/// The provider used when an explicit deploy names none.
pub const DEFAULT_PROVIDER: &str = "default";

const CLOUD_REGIONS: &[Region] = &[
    Region {
        id: "us-east-1",
        name: "US East",
        available: true,
    },
    Region {
        id: "eu-west-1",
        name: "EU West",
        available: true,
    },
    Region {
        id: "ap-southeast-1",
        name: "Asia Pacific (Singapore)",
        available: false,
    },
];

/// Every provider.
pub const PROVIDERS: &[Provider] = &[
    Provider {
        id: "default",
        name: "BeeOS Cloud",
        description: "Managed Linux sandboxes run by BeeOS",
        regions: CLOUD_REGIONS,
        os_type: "linux",
        hosting_type: "cloud",
        cloud_provider: "beeos",
        device: false,
    },
    Provider {
        id: "openclaw-k8s",
        name: "OpenClaw on Kubernetes",
        description: "OpenClaw agents on BeeOS-managed Kubernetes",
        regions: &[
            Region {
                id: "us-east-1",
                name: "US East",
                available: true,
            },
            Region {
                id: "eu-west-1",
                name: "EU West",
                available: true,
            },
        ],
        os_type: "linux",
        hosting_type: "cloud",
        cloud_provider: "beeos",
        device: false,
    },
    Provider {
        id: "byod",
        name: "Bring your own device",
        description: "A phone or desktop of yours, connected through a bridge",
        regions: &[Region {
            id: "local",
            name: "Local device",
            available: true,
        }],
        os_type: "android",
        hosting_type: "physical",
        cloud_provider: "local",
        device: true,
    },
];

/// Every deploy model.
pub const MODELS: &[Model] = &[
    Model {
        id: "claude-sonnet-4-5",
        name: "Claude Sonnet 4.5",
        tier: "premium",
        reasoning: true,
        frameworks: &["beeos-claw", "openclaw"],
    },
    Model {
        id: "gpt-5-mini",
        name: "GPT-5 mini",
        tier: "standard",
        reasoning: false,
        frameworks: &["beeos-claw", "openclaw"],
    },
    Model {
        id: "deepseek-r1",
        name: "DeepSeek R1",
        tier: "standard",
        reasoning: true,
        frameworks: &["beeos-claw"],
    },
    Model {
        id: "autoglm-phone",
        name: "AutoGLM Phone",
        tier: "standard",
        reasoning: false,
        frameworks: &["device-agent"],
    },
];

/// Every variant.
pub const VARIANTS: &[Variant] = &[
    Variant {
        id: "beeos-claw-small",
        agent_framework: "beeos-claw",
        provider_id: "default",
        model_primary: DEFAULT_MODEL,
        size: "small",
        trial: false,
    },
    Variant {
        id: "beeos-claw-trial",
        agent_framework: "beeos-claw",
        provider_id: "default",
        model_primary: DEFAULT_MODEL,
        size: "small",
        trial: true,
    },
    Variant {
        id: "beeos-claw-large",
        agent_framework: "beeos-claw",
        provider_id: "default",
        model_primary: DEFAULT_MODEL,
        size: "large",
        trial: false,
    },
    Variant {
        id: "openclaw-standard",
        agent_framework: "openclaw",
        provider_id: "openclaw-k8s",
        model_primary: DEFAULT_MODEL,
        size: "standard",
        trial: false,
    },
    Variant {
        id: "device-agent-android",
        agent_framework: "device-agent",
        provider_id: "byod",
        model_primary: "autoglm-phone",
        size: "device",
        trial: false,
    },
];

/// The provider with `id`.
pub fn provider(id: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.id == id)
}

/// The variant with `id`.
pub fn variant(id: &str) -> Option<&'static Variant> {
    VARIANTS.iter().find(|v| v.id == id)
}

impl Variant {
    /// The catalog part of the instance's `providerConfig`.
    pub fn catalog_config(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("variant".to_owned(), json!(self.id));
        m.insert("size".to_owned(), json!(self.size));
        m
    }
}

impl Provider {
    /// The region an instance lands in: the preferred one when this provider serves it and it
    /// is available, else the provider's first region.
    pub fn placement(&self, preferred: Option<&str>) -> &'static str {
        preferred
            .and_then(|p| self.regions.iter().find(|r| r.id == p && r.available))
            .or_else(|| self.regions.first())
            .map_or("", |r| r.id)
    }

    /// The `ProviderCatalogItem` JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "meta": {
                "id": self.id,
                "name": self.name,
                "description": self.description,
                "version": "1.0.0",
            },
            "capabilities": {
                "longRunning": true,
                "browserUse": !self.device,
                "codeExec": !self.device,
                "fileSystem": true,
                "customImage": false,
                "maxDurationSec": 86_400,
                "costModel": if self.device { "free" } else { "per_hour" },
                "device": self.device,
            },
        })
    }
}

/// `DeployRegionItem`s of one provider, or of all providers (each region id once) when `None`.
pub fn regions_json(provider: Option<&Provider>) -> Vec<Value> {
    let mut seen = Vec::new();
    let all = provider.map_or_else(|| PROVIDERS.iter().collect(), |p| vec![p]);
    all.into_iter()
        .flat_map(|p| p.regions.iter())
        .filter(|r| {
            let first = !seen.contains(&r.id);
            seen.push(r.id);
            first
        })
        .map(|r| json!({ "id": r.id, "name": r.name, "available": r.available }))
        .collect()
}

/// `DeployModelItem`s offered for `framework`, or all models when `None`.
pub fn models_json(framework: Option<&str>) -> Vec<Value> {
    MODELS
        .iter()
        .filter(|m| framework.is_none_or(|f| m.frameworks.contains(&f)))
        .map(|m| json!({ "id": m.id, "name": m.name, "tier": m.tier, "reasoning": m.reasoning }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_names_a_known_provider() {
        for v in VARIANTS {
            assert!(provider(v.provider_id).is_some(), "{}", v.id);
        }
    }

    #[test]
    fn placement_prefers_an_available_served_region() {
        let p = provider("default").unwrap();
        assert_eq!(p.placement(Some("eu-west-1")), "eu-west-1");
        assert_eq!(p.placement(Some("ap-southeast-1")), "us-east-1");
        assert_eq!(p.placement(Some("mars-1")), "us-east-1");
        assert_eq!(p.placement(None), "us-east-1");
    }

    #[test]
    fn regions_of_all_providers_are_listed_once() {
        let all = regions_json(None);
        let ids: Vec<_> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["us-east-1", "eu-west-1", "ap-southeast-1", "local"]);
        assert_eq!(regions_json(provider("byod")).len(), 1);
    }

    #[test]
    fn models_filter_by_framework() {
        assert_eq!(models_json(Some("device-agent")).len(), 1);
        assert_eq!(models_json(Some("unknown")).len(), 0);
        assert_eq!(models_json(None).len(), MODELS.len());
    }
}
