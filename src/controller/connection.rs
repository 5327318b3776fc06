//! The connection ConfigMap (`spec.writeConnectionConfigMapToRef`): how applications in the
//! resource's namespace reach its instance, kept up to date for `envFrom`, in the manner of
//! Crossplane's connection Secrets and cert-manager's `secretName`.
//!
//! It is owned by the resource (garbage-collected with it) and holds only the instance id,
//! endpoint, region, status and connectivity — never providerConfig, systemPrompt, mcpServers
//! or a Secret value. It describes the *current* instance, so a Replace switches it only once
//! the new instance is running and online. A ConfigMap of that name that this resource does not
//! own is never overwritten: the resource stalls instead.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::reconcile::{Driver, MANAGER};
use super::status::Problem;
use crate::crd::{BeeosInstance, ObservedInstance, reason};
use crate::error::Error;

/// What the ConfigMap holds for `instance`: environment-variable names, plain values.
pub fn connection_data(instance: &ObservedInstance) -> BTreeMap<String, String> {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    BTreeMap::from([
        ("BEEOS_INSTANCE_ID".to_owned(), instance.id.clone()),
        ("BEEOS_ENDPOINT".to_owned(), value(&instance.endpoint)),
        ("BEEOS_REGION".to_owned(), value(&instance.region)),
        ("BEEOS_STATUS".to_owned(), value(&instance.status)),
        (
            "BEEOS_CONNECTIVITY".to_owned(),
            value(&instance.connectivity),
        ),
    ])
}

/// Whether `config_map` is this resource's (its controller owner reference names the uid).
fn owned_by(config_map: &ConfigMap, resource: &BeeosInstance) -> bool {
    let uid = resource.uid();
    config_map
        .owner_references()
        .iter()
        .any(|owner| owner.controller == Some(true) && Some(&owner.uid) == uid.as_ref())
}

impl Driver<'_> {
    /// Writes the connection ConfigMap when what it should say changed (one read, and a write
    /// only for a change), and removes one this resource wrote under a previous name.
    pub(super) async fn publish_connection(&mut self) -> Result<Option<Problem>, Error> {
        let wanted = self
            .resource
            .spec
            .write_connection_config_map_to_ref
            .as_ref()
            .map(|r| r.name.clone());
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), self.namespace());
        if let Some(previous) = self.connection_config_map.clone()
            && Some(&previous) != wanted.as_ref()
        {
            if let Some(old) = api
                .get_opt(&previous)
                .await
                .map_err(Error::WriteConnection)?
                && owned_by(&old, &self.resource)
            {
                api.delete(&previous, &DeleteParams::default())
                    .await
                    .map_err(Error::WriteConnection)?;
            }
            self.connection_config_map = None;
        }
        let Some(name) = wanted else {
            return Ok(None);
        };
        let current = self
            .instances
            .get(&super::plan::Which::Current)
            .cloned()
            .or_else(|| {
                self.resource
                    .status
                    .as_ref()
                    .and_then(|s| s.instance.clone())
            });
        let Some(current) = current else {
            return Ok(None);
        };
        let data = connection_data(&current);
        let existing = api.get_opt(&name).await.map_err(Error::WriteConnection)?;
        if let Some(existing) = &existing {
            if !owned_by(existing, &self.resource) {
                return Ok(Some(Problem::NeedsAction {
                    reason: reason::CONNECTION_CONFIG_MAP_NOT_OWNED,
                    message: format!(
                        "ConfigMap {}/{name} exists and is not owned by this BeeosInstance; \
                         it is left as it is. Delete it or choose another \
                         spec.writeConnectionConfigMapToRef.name",
                        self.namespace()
                    ),
                }));
            }
            if existing.data.as_ref() == Some(&data) {
                self.connection_config_map = Some(name);
                return Ok(None);
            }
        }
        let owner = OwnerReference {
            api_version: "beeos.ai/v1alpha1".into(),
            kind: "BeeosInstance".into(),
            name: self.resource.name_any(),
            uid: self.resource.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let config_map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "labels": {
                    "app.kubernetes.io/managed-by": "beeos-operator",
                    "beeos.ai/instance": self.resource.name_any(),
                },
                "ownerReferences": [owner],
            },
            "data": data,
        });
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&config_map),
        )
        .await
        .map_err(Error::WriteConnection)?;
        self.connection_config_map = Some(name);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_holds_where_the_instance_is_and_nothing_secret() {
        let instance = ObservedInstance {
            id: "inst-1".into(),
            endpoint: Some("https://rt-1.example".into()),
            region: Some("eu-west-1".into()),
            status: Some("running".into()),
            connectivity: Some("online".into()),
            error_message: Some("sk-should-not-appear".into()),
            ..ObservedInstance::default()
        };
        let data = connection_data(&instance);
        assert_eq!(data["BEEOS_INSTANCE_ID"], "inst-1");
        assert_eq!(data["BEEOS_ENDPOINT"], "https://rt-1.example");
        assert_eq!(data.len(), 5);
        assert!(data.values().all(|v| !v.contains("sk-")));
    }
}
