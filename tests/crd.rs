//! The CRD as the real API server enforces it: the committed file is what the types generate,
//! the server accepts it and every example, and rejects bad objects with our messages.

mod support;

use anyhow::{Result, bail};
use beeos_operator::crd::BeeosInstance;
use kube::CustomResourceExt;
use kube::api::{Api, DynamicObject, PostParams};
use serde_json::{Value, json};
use support::{Env, repo_path};

#[test]
fn committed_crd_matches_the_rust_types() -> Result<()> {
    let generated = serde_yaml_ng::to_string(&BeeosInstance::crd())?;
    let committed = std::fs::read_to_string(repo_path("crds/beeos.ai_beeosinstances.yaml"))?;
    assert!(
        generated == committed,
        "crds/beeos.ai_beeosinstances.yaml is stale: run `make crds` and commit the result"
    );
    Ok(())
}

async fn create(env: &Env, name: &str, spec: Value) -> Result<(), kube::Error> {
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "beeos.ai/v1alpha1",
        "kind": "BeeosInstance",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a well-formed object");
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.namespace,
        &kube::api::ApiResource::erase::<BeeosInstance>(&()),
    );
    api.create(&PostParams::default(), &object).await.map(drop)
}

async fn rejection(env: &Env, name: &str, spec: Value) -> Result<String> {
    match create(env, name, spec).await {
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(status.message),
        Err(other) => bail!("expected 422 Invalid, got {other}"),
        Ok(()) => bail!("the API server accepted an invalid {name}"),
    }
}

#[tokio::test]
async fn api_server_rejects_bad_objects_with_our_messages() -> Result<()> {
    let env = Env::without_operator("crd-invalid").await?;

    for (name, spec) in [
        (
            "both",
            json!({"variantId": "beeos-claw-small", "agentFramework": "beeos-claw"}),
        ),
        ("neither", json!({"modelPrimary": "gpt-4o"})),
    ] {
        let message = rejection(&env, name, spec).await?;
        assert!(
            message.contains("set exactly one of spec.variantId"),
            "{name}: {message}"
        );
    }

    let message = rejection(
        &env,
        "long-name",
        json!({"variantId": "v", "name": "n".repeat(129)}),
    )
    .await?;
    assert!(
        message.contains("spec.name") && message.contains("128"),
        "{message}"
    );
    let message = rejection(
        &env,
        "long-prompt",
        json!({"variantId": "v", "systemPrompt": "p".repeat(8193)}),
    )
    .await?;
    assert!(message.contains("spec.systemPrompt"), "{message}");
    let message = rejection(
        &env,
        "long-model",
        json!({"variantId": "v", "models": ["m".repeat(129)]}),
    )
    .await?;
    assert!(message.contains("spec.models[0]"), "{message}");
    let message = rejection(
        &env,
        "bad-power",
        json!({"variantId": "v", "powerState": "Paused"}),
    )
    .await?;
    assert!(
        message.contains("spec.powerState") && message.contains("Running"),
        "{message}"
    );
    let message = rejection(
        &env,
        "bad-policy",
        json!({"variantId": "v", "deletionPolicy": "Keep"}),
    )
    .await?;
    assert!(message.contains("spec.deletionPolicy"), "{message}");
    Ok(())
}

#[tokio::test]
async fn api_server_accepts_every_example_and_keeps_free_form_fields() -> Result<()> {
    let env = Env::without_operator("crd-examples").await?;
    for example in std::fs::read_dir(repo_path("examples"))? {
        let file = example?.file_name().to_string_lossy().into_owned();
        env.apply_example(&file).await?;
    }
    let research = env.api().get("research-agent").await?;
    let mcp = research.spec.mcp_servers.expect("mcpServers kept");
    assert_eq!(mcp["fetch"]["args"][1], "20000");
    Ok(())
}
