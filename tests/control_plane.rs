//! Proves the test harness runs a real kube-apiserver: CEL validation, the status subresource,
//! finalizers, watches, RBAC for ServiceAccount tokens and the stamped version are behaviours a
//! mock would have to fake, and each assertion below would fail against one that did not. And
//! that a real kube-controller-manager runs beside it: namespaces finish deleting, owned objects
//! are garbage-collected, and each namespace gets its ServiceAccount and root CA.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn widget_crd() -> Result<CustomResourceDefinition> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.testenv.beeos.ai"},
        "spec": {
            "group": "testenv.beeos.ai",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "properties": {
                                "replicas": {"type": "integer"},
                                "maxReplicas": {"type": "integer"}
                            },
                            "x-kubernetes-validations": [{
                                "rule": "self.replicas <= self.maxReplicas",
                                "message": "replicas must not exceed maxReplicas"
                            }]
                        },
                        "status": {
                            "type": "object",
                            "properties": {"phase": {"type": "string"}}
                        }
                    }
                }}
            }]
        }
    }))?)
}

fn widget(name: &str, replicas: i64, max_replicas: i64) -> DynamicObject {
    let mut widget = DynamicObject::new(name, &widget_resource()).data(json!({
        "spec": {"replicas": replicas, "maxReplicas": max_replicas}
    }));
    widget.metadata.finalizers = Some(vec!["testenv.beeos.ai/keep".into()]);
    widget
}

fn widget_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("testenv.beeos.ai", "v1", "Widget"))
}

/// Applies the CRD once per test binary and waits until the server serves it.
async fn ensure_widget_crd(client: &kube::Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = widget_crd()?;
    crds.patch(
        "widgets.testenv.beeos.ai",
        &PatchParams::apply("testenv-test").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    tokio::time::timeout(
        WAIT,
        await_condition(
            crds,
            "widgets.testenv.beeos.ai",
            conditions::is_crd_established(),
        ),
    )
    .await
    .context("the CRD was not established in time")??;
    Ok(())
}

#[tokio::test]
async fn server_reports_the_pinned_kubernetes_version() -> Result<()> {
    let client = testenv::shared().admin_client();
    let go_mod = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/k8s-testbins/go.mod"
    ))?;
    let pinned = go_mod
        .lines()
        .find_map(|line| line.trim().strip_prefix("k8s.io/kubernetes "))
        .context("go.mod pins no k8s.io/kubernetes")?
        .trim();
    let version = client.apiserver_version().await?;
    assert_eq!(version.git_version, pinned);
    Ok(())
}

#[tokio::test]
async fn cel_rule_rejects_a_bad_object_with_its_message() -> Result<()> {
    let control_plane = testenv::shared();
    let client = control_plane.admin_client();
    ensure_widget_crd(&client).await?;
    let namespace = control_plane.namespace("cel").await?;
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &widget_resource());

    let err = widgets
        .create(&PostParams::default(), &widget("too-many", 5, 3))
        .await
        .expect_err("the CEL rule must reject replicas > maxReplicas");
    match err {
        kube::Error::Api(status) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status
                    .message
                    .contains("replicas must not exceed maxReplicas"),
                "{}",
                status.message
            );
        }
        other => bail!("expected a 422 from the API server, got {other}"),
    }
    Ok(())
}

#[tokio::test]
async fn status_subresource_finalizer_and_watch_behave_like_kubernetes() -> Result<()> {
    let control_plane = testenv::shared();
    let client = control_plane.admin_client();
    ensure_widget_crd(&client).await?;
    let namespace = control_plane.namespace("lifecycle").await?;
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &widget_resource());

    let created = widgets
        .create(&PostParams::default(), &widget("w", 1, 3))
        .await?;
    let mut events = widgets
        .watch(
            &WatchParams::default().fields("metadata.name=w"),
            created.metadata.resource_version.as_deref().unwrap_or("0"),
        )
        .await?
        .boxed();

    // Writing status through the main resource is ignored; only the subresource sets it.
    let mut with_status = created.clone();
    with_status.data["status"] = json!({"phase": "Ignored"});
    let replaced = widgets
        .replace("w", &PostParams::default(), &with_status)
        .await?;
    assert!(replaced.data.get("status").is_none(), "{:?}", replaced.data);
    let patched = widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Ready"}})),
        )
        .await?;
    assert_eq!(patched.data["status"]["phase"], "Ready");
    // ...and a status write leaves the spec and the generation alone.
    assert_eq!(patched.metadata.generation, created.metadata.generation);

    // A stale resourceVersion is refused with a conflict.
    let err = widgets
        .replace("w", &PostParams::default(), &created)
        .await
        .expect_err("a stale resourceVersion must conflict");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err}"
    );

    // The finalizer keeps the object alive, marked for deletion, until it is removed.
    widgets.delete("w", &DeleteParams::default()).await?;
    let terminating = widgets.get("w").await?;
    assert!(terminating.metadata.deletion_timestamp.is_some());
    widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    assert!(widgets.get_opt("w").await?.is_none());

    // The watch saw every step, ending with the deletion.
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(event) = events.try_next().await? {
            match event {
                WatchEvent::Modified(_) => seen.push("modified"),
                WatchEvent::Deleted(_) => {
                    seen.push("deleted");
                    break;
                }
                WatchEvent::Added(_) => seen.push("added"),
                WatchEvent::Bookmark(_) => {}
                WatchEvent::Error(err) => bail!("watch error: {err:?}"),
            }
        }
        Ok(())
    })
    .await
    .context("the watch did not report the deletion in time")??;
    // The status write and the deletion mark come first; the object is gone last.
    assert_eq!(seen[..2], ["modified", "modified"], "{seen:?}");
    assert_eq!(seen.last(), Some(&"deleted"), "{seen:?}");
    Ok(())
}

#[tokio::test]
async fn service_account_token_is_held_to_its_role() -> Result<()> {
    let control_plane = testenv::shared();
    let admin = control_plane.admin_client();
    let namespace = control_plane.namespace("rbac").await?;
    let pp = PostParams::default();

    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), &namespace)
        .create(&pp, &account)
        .await?;
    let role = Role {
        metadata: ObjectMeta {
            name: Some("configmap-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &namespace)
        .create(&pp, &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("reader".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "configmap-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(namespace.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, &namespace)
        .create(&pp, &binding)
        .await?;

    let reader = control_plane
        .service_account_client(&namespace, "reader")
        .await?;
    Api::<ConfigMap>::namespaced(reader.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .context("the Role grants listing ConfigMaps")?;
    let denied = Api::<Secret>::namespaced(reader.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .expect_err("the Role grants nothing on Secrets");
    assert!(
        matches!(denied, kube::Error::Api(ref s) if s.code == 403),
        "{denied}"
    );
    let denied = Api::<ConfigMap>::namespaced(reader, "default")
        .list(&ListParams::default())
        .await
        .expect_err("a Role grants nothing outside its namespace");
    assert!(
        matches!(denied, kube::Error::Api(ref s) if s.code == 403),
        "{denied}"
    );
    Ok(())
}

/// Polls `check` until it holds, failing with `what` after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await? {
        if tokio::time::Instant::now() > deadline {
            bail!("{what} did not happen within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn config_map(name: &str, owner: Option<&ConfigMap>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: owner.map(|owner| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: owner.metadata.name.clone().unwrap_or_default(),
                    uid: owner.metadata.uid.clone().unwrap_or_default(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        data: Some([("key".to_owned(), "value".to_owned())].into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn deleted_namespace_is_emptied_and_goes_once_finalizers_are_removed() -> Result<()> {
    let control_plane = testenv::shared();
    let client = control_plane.admin_client();
    ensure_widget_crd(&client).await?;
    let namespace = control_plane.namespace("ns-delete").await?;
    let pp = PostParams::default();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    config_maps.create(&pp, &config_map("plain", None)).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "plain"}, "stringData": {"key": "value"},
    }))?;
    secrets.create(&pp, &secret).await?;
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &widget_resource());
    // One custom resource goes freely; the other holds the namespace with its finalizer.
    let mut free = widget("free", 1, 3);
    free.metadata.finalizers = None;
    widgets.create(&pp, &free).await?;
    widgets.create(&pp, &widget("held", 1, 3)).await?;

    let deleting = {
        let namespace = namespace.clone();
        tokio::spawn(async move { testenv::shared().delete_namespace(&namespace).await })
    };
    // The namespace controller deletes everything it can; the finalized widget waits, marked.
    eventually(
        "the namespace emptying itself but for the held widget",
        || async {
            let config_maps_left = config_maps.list(&ListParams::default()).await?.items.len();
            let secrets_left = secrets.list(&ListParams::default()).await?.items.len();
            let widgets_left = widgets.list(&ListParams::default()).await?.items;
            Ok(config_maps_left == 0
                && secrets_left == 0
                && widgets_left.len() == 1
                && widgets_left[0].metadata.deletion_timestamp.is_some())
        },
    )
    .await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let terminating = namespaces.get(&namespace).await?;
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    assert!(
        !deleting.is_finished(),
        "the finalizer must hold the namespace"
    );

    widgets
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await?;
    deleting.await??;
    assert!(namespaces.get_opt(&namespace).await?.is_none());
    Ok(())
}

#[tokio::test]
async fn owned_config_map_is_garbage_collected_after_its_owner_is_deleted() -> Result<()> {
    let control_plane = testenv::shared();
    let namespace = control_plane.namespace("gc").await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(control_plane.admin_client(), &namespace);
    let pp = PostParams::default();
    let owner = config_maps.create(&pp, &config_map("owner", None)).await?;
    config_maps
        .create(&pp, &config_map("owned", Some(&owner)))
        .await?;
    config_maps
        .create(&pp, &config_map("bystander", None))
        .await?;

    // The API server itself deletes only the owner (background propagation).
    config_maps
        .delete("owner", &DeleteParams::default())
        .await?;
    eventually("garbage collection of the owned ConfigMap", || async {
        Ok(config_maps.get_opt("owned").await?.is_none())
    })
    .await?;
    assert!(
        config_maps.get_opt("bystander").await?.is_some(),
        "an object without owners must stay"
    );
    control_plane.delete_namespace(&namespace).await?;
    Ok(())
}

#[tokio::test]
async fn each_namespace_gets_its_default_service_account_and_root_ca() -> Result<()> {
    let control_plane = testenv::shared();
    let client = control_plane.admin_client();
    let namespace = control_plane.namespace("defaults").await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &namespace);
    eventually(
        "the default ServiceAccount and kube-root-ca.crt",
        || async {
            Ok(accounts.get_opt("default").await?.is_some()
                && config_maps.get_opt("kube-root-ca.crt").await?.is_some())
        },
    )
    .await?;
    let root_ca = config_maps.get("kube-root-ca.crt").await?;
    let published = root_ca
        .data
        .and_then(|data| data.get("ca.crt").cloned())
        .context("kube-root-ca.crt has no ca.crt")?;
    let ca = std::fs::read_to_string(control_plane.dir().join("ca.crt"))?;
    assert_eq!(published.trim(), ca.trim());
    control_plane.delete_namespace(&namespace).await?;
    Ok(())
}
