//! The Secrets resources use: the BeeOS token (`spec.credentials`) and injected values
//! (`spec.secretInjections`), always in the resource's own namespace.
//!
//! - They are read by name when a reconcile needs them; never listed with their data.
//! - Each one a resource reads gets the label `beeos.ai/referenced`, and the operator watches
//!   the *metadata* of labelled Secrets: a rotated value, a fixed token or a recreated Secret
//!   wakes exactly the resources that read it, at once, while nothing is read while nothing
//!   changes.
//! - A credentials Secret carries the finalizer `beeos.ai/in-use` while any resource names it:
//!   deleting a namespace deletes Secrets and resources together, and without the token the
//!   operator could not destroy the instances (they would run on, and the namespace would
//!   never finish). The finalizer goes once no resource names the Secret; the label goes once
//!   no resource reads it at all.
//!
//! Values never leave this module except into the deploy request and the client's credential;
//! errors name the Secret and the key, never a value.

use std::sync::{Arc, PoisonError};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use super::index::SecretRef;
use super::reconcile::Driver;
use super::request::{deploy_request, inject};
use super::status::Problem;
use super::{Context, Namespaces};
use crate::beeos::{BeeosClient, Credential, DeployRequest};
use crate::crd::{SECRET_IN_USE_FINALIZER, SECRET_REFERENCED_LABEL, reason};
use crate::error::Error;

impl Driver<'_> {
    /// The BeeOS client for the resource's credentials, or the problem that keeps it from one.
    pub(super) async fn beeos_client(&self) -> Result<Result<BeeosClient, Problem>, Error> {
        let credential = match &self.resource.spec.credentials {
            Some(reference) => {
                let problem = |what: String| Problem::NeedsAction {
                    reason: reason::CREDENTIALS_UNAVAILABLE,
                    message: what,
                };
                let token = match self
                    .secret_value(&reference.name, reference.key(), true)
                    .await?
                {
                    Ok(token) => token,
                    Err(missing) => return Ok(Err(problem(format!("credentials {missing}")))),
                };
                match Credential::new(token) {
                    Ok(credential) => credential,
                    Err(_) => {
                        return Ok(Err(problem(format!(
                            "key {:?} of credentials Secret {}/{} does not hold a BeeOS token",
                            reference.key(),
                            self.namespace(),
                            reference.name
                        ))));
                    }
                }
            }
            None => match self.ctx.beeos.default_credential() {
                Some(credential) => credential.clone(),
                None => {
                    return Ok(Err(Problem::NeedsAction {
                        reason: reason::CREDENTIALS_UNAVAILABLE,
                        message: "no BeeOS credentials: set spec.credentials or give the \
                                  operator default credentials"
                            .into(),
                    }));
                }
            },
        };
        Ok(self
            .ctx
            .beeos
            .client_for(&credential)
            .map_err(|err| Problem::NeedsAction {
                reason: err.reason(),
                message: err.to_string(),
            }))
    }

    /// Reads one key of a Secret in the resource's namespace, protecting the Secret on the way
    /// (`credentials`: it must outlive the resource). `Err` names what is missing, never a value.
    pub(super) async fn secret_value(
        &self,
        name: &str,
        key: &str,
        credentials: bool,
    ) -> Result<Result<String, String>, Error> {
        // Each Secret is read once per reconcile, however many keys are taken from it.
        let cached = self
            .secrets_read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned();
        let secret = match cached {
            Some(secret) => secret,
            None => {
                let secrets: Api<Secret> =
                    Api::namespaced(self.ctx.client.clone(), self.namespace());
                let secret = secrets.get_opt(name).await.map_err(Error::ReadSecret)?;
                if let Some(secret) = &secret
                    && let Some(version) = protect(&secrets, secret, credentials).await
                {
                    // Our own write must not wake the resources that read the Secret.
                    self.ctx
                        .own_secret_writes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(
                            SecretRef {
                                namespace: self.namespace().to_owned(),
                                name: name.to_owned(),
                            },
                            version,
                        );
                }
                self.secrets_read
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(name.to_owned(), secret.clone());
                secret
            }
        };
        let where_ = format!("Secret {}/{name}", self.namespace());
        let Some(secret) = secret else {
            return Ok(Err(format!("{where_} not found")));
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .map(|bytes| bytes.0.clone());
        Ok(match value {
            None => Err(format!("{where_} has no key {key:?}")),
            Some(bytes) => String::from_utf8(bytes)
                .map_err(|_| format!("key {key:?} of {where_} is not UTF-8 text")),
        })
    }

    /// The deploy body the spec asks for now, Secret values injected.
    pub(super) async fn desired_request(&self) -> Result<Result<DeployRequest, Problem>, Error> {
        let mut request = deploy_request(&self.resource.spec, &self.resource.name_any());
        for injection in &self.resource.spec.secret_injections {
            let reference = &injection.secret_key_ref;
            let problem = |message: String| Problem::NeedsAction {
                reason: reason::SECRET_UNAVAILABLE,
                message,
            };
            let value = match self
                .secret_value(&reference.name, &reference.key, false)
                .await?
            {
                Ok(value) => value,
                Err(missing) => {
                    return Ok(Err(problem(format!(
                        "secretInjections {:?}: {missing}",
                        injection.path
                    ))));
                }
            };
            if let Err(message) = inject(&mut request, &injection.path, value) {
                return Ok(Err(problem(format!("secretInjections: {message}"))));
            }
        }
        Ok(Ok(request))
    }
}

/// Labels a Secret a resource reads, and puts the in-use finalizer on a credentials Secret;
/// returns the resourceVersion of its write, if it wrote. Best effort: without the permission
/// the operator still works, only unprotected — worth a warning, not a failed reconcile.
async fn protect(secrets: &Api<Secret>, secret: &Secret, credentials: bool) -> Option<String> {
    let labelled = secret
        .labels()
        .get(SECRET_REFERENCED_LABEL)
        .map(String::as_str)
        == Some("true");
    let finalized = secret
        .finalizers()
        .iter()
        .any(|f| f == SECRET_IN_USE_FINALIZER);
    if labelled && (finalized || !credentials) {
        return None;
    }
    let mut metadata = json!({
        "resourceVersion": secret.resource_version(),
        "labels": {SECRET_REFERENCED_LABEL: "true"},
    });
    if credentials && !finalized {
        let mut finalizers = secret.finalizers().to_vec();
        finalizers.push(SECRET_IN_USE_FINALIZER.to_owned());
        metadata["finalizers"] = json!(finalizers);
    }
    let name = secret.name_any();
    match secrets
        .patch_metadata(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": metadata})),
        )
        .await
    {
        Ok(written) => written.metadata.resource_version,
        Err(err) => {
            // A conflict means someone changed it meanwhile; the next read tries again.
            tracing::warn!(secret = %name, error = %err, "protecting a Secret failed");
            None
        }
    }
}

/// Watches the metadata of the Secrets resources read, and wakes their readers when one
/// changes (a rotated value, a fixed token) or is deleted. Also checks, at start and whenever
/// a protected Secret is being deleted, whether its protection can go.
pub(super) async fn watch(context: Arc<Context>, namespaces: Namespaces) {
    let apis: Vec<Api<PartialObjectMeta<Secret>>> = match &namespaces {
        Namespaces::All => vec![Api::all(context.client.clone())],
        Namespaces::Only(names) => names
            .iter()
            .map(|ns| Api::namespaced(context.client.clone(), ns))
            .collect(),
    };
    let config = watcher::Config::default()
        .labels(&format!("{SECRET_REFERENCED_LABEL}=true"))
        .any_semantic();
    let streams = apis
        .into_iter()
        .map(|api| watcher(api, config.clone()).default_backoff().boxed());
    let mut events = futures::stream::select_all(streams);
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                tracing::info!(error = %err, "watching Secrets failed; retrying");
                continue;
            }
        };
        let (meta, changed) = match &event {
            watcher::Event::Apply(meta) | watcher::Event::Delete(meta) => (meta, true),
            // The initial list: nothing changed, but leftover protection may be released.
            watcher::Event::InitApply(meta) => (meta, false),
            watcher::Event::Init | watcher::Event::InitDone => continue,
        };
        let secret = SecretRef {
            namespace: meta.namespace().unwrap_or_default(),
            name: meta.name_any(),
        };
        let ours = context
            .own_secret_writes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&secret)
            .is_some_and(|version| meta.metadata.resource_version.as_ref() == Some(version));
        if changed && !ours {
            let readers = context.resources.index().readers(&secret);
            for reader in readers {
                let _ = context.wake.send(reader.object_ref());
            }
        }
        if meta.meta().deletion_timestamp.is_some() || !changed {
            let _ = context.secrets_to_check.send(secret);
        }
    }
}

/// Removes the in-use finalizer from credentials Secrets no resource names any more, and the
/// label from Secrets no resource reads.
pub(super) async fn release_unused(
    context: Arc<Context>,
    receiver: Option<mpsc::UnboundedReceiver<SecretRef>>,
) {
    let Some(mut receiver) = receiver else {
        return;
    };
    while let Some(secret) = receiver.recv().await {
        if let Err(err) = release_if_unused(&context, &secret).await {
            tracing::info!(secret = %secret.name, namespace = %secret.namespace, error = %err,
                "releasing a Secret failed; it is checked again when its users change");
        }
    }
}

async fn release_if_unused(context: &Context, secret: &SecretRef) -> Result<(), kube::Error> {
    let (in_use, read) = {
        let index = context.resources.index();
        (
            index.credentials_in_use(secret),
            !index.readers(secret).is_empty(),
        )
    };
    if in_use && read {
        return Ok(());
    }
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &secret.namespace);
    let Some(meta) = secrets.get_metadata_opt(&secret.name).await? else {
        return Ok(());
    };
    let finalized = meta
        .finalizers()
        .iter()
        .any(|f| f == SECRET_IN_USE_FINALIZER);
    let labelled = meta.labels().contains_key(SECRET_REFERENCED_LABEL);
    let drop_finalizer = finalized && !in_use;
    let drop_label = labelled && !read;
    if !drop_finalizer && !drop_label {
        return Ok(());
    }
    let mut metadata = json!({"resourceVersion": meta.resource_version()});
    if drop_finalizer {
        let finalizers: Vec<&String> = meta
            .finalizers()
            .iter()
            .filter(|f| *f != SECRET_IN_USE_FINALIZER)
            .collect();
        metadata["finalizers"] = json!(finalizers);
    }
    if drop_label {
        metadata["labels"] = json!({SECRET_REFERENCED_LABEL: null});
    }
    match secrets
        .patch_metadata(
            &secret.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": metadata})),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Changed meanwhile: look again with what is there now.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let _ = context.secrets_to_check.send(secret.clone());
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(err) => Err(err),
    }
}
