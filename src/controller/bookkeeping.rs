//! The operator's writes to a resource's metadata: its finalizer, the pending marks and ids of
//! its instances, and its claim. Every write is guarded: by the resourceVersion the reconcile
//! read (so a concurrent change makes it fail and the reconcile starts over), or — for writes
//! that must land whatever else changed, such as recording a deployed id — by a JSON-patch
//! `test` on the pending mark, so only the process whose mark is still current records.

use std::sync::Arc;

use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::{Value, json};

use super::index::Claim;
use super::plan::{Observation, Which};
use super::reconcile::{Driver, annotation, keys};
use crate::crd::{
    BeeosInstance, CLAIM_ANNOTATION, DEPLOY_STARTED_AT_ANNOTATION, DEPLOYED_DIGEST_ANNOTATION,
    DeletionPolicy, FINALIZER, INSTANCE_ID_ANNOTATION, REPLACEMENT_DIGEST_ANNOTATION,
    REPLACEMENT_ID_ANNOTATION, REPLACEMENT_STARTED_AT_ANNOTATION, RETIRING_ID_ANNOTATION, reason,
};
use crate::error::Error;

/// How often a mark-guarded write is rebuilt after the resource changed under it while the mark
/// stayed ours (someone else edited another annotation meanwhile).
const FENCED_ATTEMPTS: usize = 3;

/// A mark-guarded write did not land because the mark is no longer the one it was made for.
#[derive(Debug)]
pub(super) struct Fenced;

/// `/metadata/annotations/<key>` as a JSON pointer.
fn annotation_path(key: &str) -> String {
    format!(
        "/metadata/annotations/{}",
        key.replace('~', "~0").replace('/', "~1")
    )
}

/// A 409 (stale resourceVersion) or 422 (failed JSON-patch `test`) from the API server.
pub(super) fn is_stale_write(err: &Error) -> bool {
    matches!(
        err,
        Error::WriteAnnotations(kube::Error::Api(status))
            | Error::WriteFinalizer(kube::Error::Api(status))
            if status.code == 409 || status.code == 422
    )
}

impl Driver<'_> {
    /// The claim value recording that this resource owns `instance_id` (or no current instance).
    pub(super) fn claim_value(&self, instance_id: Option<&str>) -> String {
        Claim::value(&self.key.namespace, &self.key.name, instance_id)
    }

    fn adopt(&mut self, updated: BeeosInstance) {
        self.resource = Arc::new(updated);
    }

    /// Adds or removes our finalizer, guarded by the resourceVersion it was read at.
    pub(super) async fn set_finalizer(&mut self, present: bool) -> Result<(), Error> {
        let mut finalizers: Vec<String> = self
            .resource
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .cloned()
            .collect();
        if present {
            finalizers.push(FINALIZER.to_owned());
        }
        let patch = json!({"metadata": {
            "resourceVersion": self.resource.resource_version(),
            "finalizers": finalizers,
        }});
        let updated = self
            .api
            .patch(
                &self.resource.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(Error::WriteFinalizer)?;
        self.adopt(updated);
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) annotations in one merge patch, guarded by the
    /// resourceVersion this reconcile read (a conflict when the resource changed since); with
    /// `finalizer`, adds our finalizer in the same write.
    pub(super) async fn annotate(
        &mut self,
        annotations: &[(&str, Option<&str>)],
        finalizer: bool,
    ) -> Result<(), Error> {
        let annotations: serde_json::Map<String, Value> = annotations
            .iter()
            .map(|(key, value)| ((*key).to_owned(), json!(value)))
            .collect();
        let mut metadata = json!({
            "annotations": annotations,
            "resourceVersion": self.resource.resource_version(),
        });
        if finalizer && !self.resource.finalizers().iter().any(|f| f == FINALIZER) {
            let mut finalizers = self.resource.finalizers().to_vec();
            finalizers.push(FINALIZER.to_owned());
            metadata["finalizers"] = json!(finalizers);
        }
        let updated = self
            .api
            .patch(
                &self.resource.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": metadata})),
            )
            .await
            .map_err(Error::WriteAnnotations)?;
        self.adopt(updated);
        Ok(())
    }

    /// Sets and removes annotations only while `mark_key` still holds `mark`: the write of a
    /// process that may have been overtaken (a pause, a lost Lease, a slow network) while
    /// another one took over its deploy. `Ok(Err(Fenced))` when the mark changed.
    pub(super) async fn annotate_if_marked(
        &mut self,
        mark_key: &str,
        mark: &str,
        set: &[(&str, &str)],
        remove: &[&str],
    ) -> Result<Result<(), Fenced>, Error> {
        for _ in 0..FENCED_ATTEMPTS {
            if annotation(&self.resource, Some(mark_key)) != Some(mark) {
                return Ok(Err(Fenced));
            }
            let mut ops =
                vec![json!({"op": "test", "path": annotation_path(mark_key), "value": mark})];
            for (key, value) in set {
                ops.push(json!({"op": "add", "path": annotation_path(key), "value": value}));
            }
            for key in remove {
                // A JSON patch fails as a whole on removing what is not there.
                if self.resource.annotations().contains_key(*key) {
                    ops.push(json!({"op": "remove", "path": annotation_path(key)}));
                }
            }
            let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
                .map_err(|err| Error::WriteAnnotations(kube::Error::SerdeError(err)))?;
            match self
                .api
                .patch(
                    &self.resource.name_any(),
                    &PatchParams::default(),
                    &Patch::<()>::Json(patch),
                )
                .await
            {
                Ok(updated) => {
                    self.adopt(updated);
                    return Ok(Ok(()));
                }
                Err(kube::Error::Api(status)) if status.code == 422 || status.code == 409 => {
                    // The mark, or an annotation the patch removes, changed: read it again and
                    // tell which.
                    let fresh = self
                        .api
                        .get(&self.resource.name_any())
                        .await
                        .map_err(Error::WriteAnnotations)?;
                    self.adopt(fresh);
                }
                Err(err) => return Err(Error::WriteAnnotations(err)),
            }
        }
        Ok(Err(Fenced))
    }

    /// Records that this resource owns the instance its annotation names (set by hand, free),
    /// counting it as deployed with `digest`. A resource copied from another one drops the
    /// bookkeeping it copied (marks, spares), which belongs to the original.
    pub(super) async fn claim(
        &mut self,
        o: &Observation<'_>,
        digest: Option<&str>,
    ) -> Result<(), Error> {
        let claim = self.claim_value(o.current.id);
        let mut write: Vec<(&str, Option<&str>)> = vec![(CLAIM_ANNOTATION, Some(&claim))];
        if !o.bookkeeping_own {
            write.extend([
                (DEPLOY_STARTED_AT_ANNOTATION, None),
                (DEPLOYED_DIGEST_ANNOTATION, None),
                (REPLACEMENT_ID_ANNOTATION, None),
                (REPLACEMENT_DIGEST_ANNOTATION, None),
                (REPLACEMENT_STARTED_AT_ANNOTATION, None),
                (RETIRING_ID_ANNOTATION, None),
            ]);
        }
        if o.current.id.is_some() && o.current.digest.is_none() {
            write.retain(|(key, _)| *key != DEPLOYED_DIGEST_ANNOTATION);
            write.push((DEPLOYED_DIGEST_ANNOTATION, digest));
        }
        self.annotate(&write, false).await?;
        if let Some(id) = o.current.id {
            self.publish(
                EventType::Normal,
                reason::ADOPTED,
                "Adopt",
                format!("adopted BeeOS instance {id}"),
            )
            .await;
        }
        Ok(())
    }

    /// Writes `beeos.ai/instance-id` back from the record that still names the live instance.
    pub(super) async fn restore_id(&mut self, o: &Observation<'_>) -> Result<(), Error> {
        let id = o.lost.id.unwrap_or_default();
        let claim = self.claim_value(Some(id));
        self.annotate(
            &[
                (INSTANCE_ID_ANNOTATION, Some(id)),
                (CLAIM_ANNOTATION, Some(&claim)),
            ],
            false,
        )
        .await?;
        self.publish(
            EventType::Warning,
            reason::RESTORED,
            "Restore",
            format!(
                "{INSTANCE_ID_ANNOTATION} was missing while BeeOS instance {id} lives; wrote it \
                 back instead of deploying a second instance"
            ),
        )
        .await;
        Ok(())
    }

    /// Records what an instance claimed before digests were kept counts as deployed with.
    pub(super) async fn record_digest(
        &mut self,
        instance_id: &str,
        digest: Option<&str>,
    ) -> Result<(), Error> {
        self.annotate(&[(DEPLOYED_DIGEST_ANNOTATION, digest)], false)
            .await?;
        tracing::debug!(instance_id, "recorded the digest of a claimed instance");
        Ok(())
    }

    /// Drops a slot whose instance is gone.
    pub(super) async fn forget(&mut self, which: Which, o: &Observation<'_>) -> Result<(), Error> {
        let keys = keys(which);
        let mut clear = vec![(keys.id, None)];
        clear.extend(keys.digest.map(|k| (k, None)));
        self.annotate(&clear, false).await?;
        if which == Which::Retiring {
            let id = o.retiring.id.unwrap_or_default();
            self.publish(
                EventType::Normal,
                reason::RETIRED,
                "Destroy",
                format!("replaced BeeOS instance {id} is gone"),
            )
            .await;
        }
        Ok(())
    }

    /// Makes the ready replacement current and retires the old instance, in one guarded write.
    pub(super) async fn promote(&mut self, o: &Observation<'_>) -> Result<(), Error> {
        let old = o.current.id;
        let new = o.replacement.id;
        let claim = self.claim_value(new);
        self.annotate(
            &[
                (INSTANCE_ID_ANNOTATION, new),
                (CLAIM_ANNOTATION, Some(&claim)),
                (DEPLOYED_DIGEST_ANNOTATION, o.replacement.digest),
                (RETIRING_ID_ANNOTATION, old),
                (REPLACEMENT_ID_ANNOTATION, None),
                (REPLACEMENT_DIGEST_ANNOTATION, None),
            ],
            false,
        )
        .await?;
        self.publish(
            EventType::Normal,
            reason::REPLACING,
            "Replace",
            format!(
                "BeeOS instance {} replaces {} (the spec changed)",
                new.unwrap_or_default(),
                old.unwrap_or_default()
            ),
        )
        .await;
        Ok(())
    }

    /// Recreate: retire the current instance; a new one is deployed once it is gone.
    pub(super) async fn retire_for_recreate(&mut self, o: &Observation<'_>) -> Result<(), Error> {
        let old = o.current.id;
        let claim = self.claim_value(None);
        self.annotate(
            &[
                (RETIRING_ID_ANNOTATION, old),
                (CLAIM_ANNOTATION, Some(&claim)),
                (INSTANCE_ID_ANNOTATION, None),
                (DEPLOYED_DIGEST_ANNOTATION, None),
            ],
            false,
        )
        .await?;
        self.publish(
            EventType::Normal,
            reason::RECREATING,
            "Recreate",
            format!(
                "destroying BeeOS instance {} to deploy the changed spec",
                old.unwrap_or_default()
            ),
        )
        .await;
        Ok(())
    }

    /// Lets the resource go: what it owned is destroyed, orphaned, or never existed.
    pub(super) async fn release(&mut self) -> super::ReconcileResult {
        let id = annotation(&self.resource, Some(INSTANCE_ID_ANNOTATION)).map(str::to_owned);
        let owned =
            self.ctx.resources.index().ownership(&self.resource) == super::index::Ownership::Owned;
        self.set_finalizer(false).await?;
        let (reason, message) = match (self.resource.spec.deletion_policy, id) {
            (_, Some(id)) if !owned => (
                reason::DESTROYED,
                format!("left BeeOS instance {id} alone: this resource does not own it"),
            ),
            (DeletionPolicy::Orphan, Some(id)) => (
                reason::ORPHANED,
                format!("left BeeOS instance {id} running (deletionPolicy Orphan)"),
            ),
            (_, Some(id)) => (reason::DESTROYED, format!("BeeOS instance {id} is gone")),
            (_, None) => (reason::DESTROYED, "no BeeOS instance to destroy".to_owned()),
        };
        self.publish(EventType::Normal, reason, "Delete", message)
            .await;
        Ok(kube::runtime::controller::Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_keys_become_json_pointers() {
        assert_eq!(
            annotation_path("beeos.ai/deploy-started-at"),
            "/metadata/annotations/beeos.ai~1deploy-started-at"
        );
        assert_eq!(annotation_path("a~b"), "/metadata/annotations/a~0b");
    }
}
