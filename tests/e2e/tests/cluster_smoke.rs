//! Smoke test of the cluster the end-to-end tests run on: the control-plane behaviour the
//! operator relies on is real, not mocked. Runs against whatever KUBECONFIG points at
//! (`tests/cluster/cluster.sh up`, kind, ...); skips without a cluster, fails under CI=true.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::wait::conditions::is_crd_established;
use kube_harness::{Harness, Result, wait_for, wait_for_none};

const TIMEOUT: Duration = Duration::from_secs(90);
const SMOKE_SELECTOR: &str = "app.kubernetes.io/name=smoke";

fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The Deployment, ReplicaSet and scheduler controllers and kwok work together: three
/// replicas are scheduled onto simulated nodes and become Ready, and the Deployment Available.
#[tokio::test]
async fn deployment_of_three_replicas_becomes_available_on_kwok_nodes() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let ns = harness.namespace("smoke-deploy").await?;
    ns.apply_file(fixture("smoke-deployment.yaml")).await?;

    let deployment = wait_for(
        &ns.api::<Deployment>(),
        "smoke",
        "3 available replicas and the Available condition",
        TIMEOUT,
        |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
                let available = s
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Available" && c.status == "True");
                s.available_replicas == Some(3) && available
            })
        },
    )
    .await?;
    assert_eq!(deployment.status.unwrap().ready_replicas, Some(3));

    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(SMOKE_SELECTOR))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 3, "expected exactly 3 pods");
    let nodes = harness.api::<Node>();
    for pod in &pods.items {
        let status = pod.status.as_ref().expect("pod has a status");
        assert_eq!(
            status.phase.as_deref(),
            Some("Running"),
            "pod {}",
            pod.name_any()
        );
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        assert!(ready, "pod {} is not Ready", pod.name_any());
        let node_name = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .expect("pod is scheduled");
        let node = nodes.get(&node_name).await.unwrap();
        assert_eq!(
            node.annotations()
                .get("kwok.x-k8s.io/node")
                .map(String::as_str),
            Some("fake"),
            "pod {} runs on {node_name}, which is not a kwok node",
            pod.name_any()
        );
    }
    ns.cleanup().await
}

/// Owner references are honoured: deleting the Deployment makes the garbage collector
/// delete its ReplicaSet, and then the ReplicaSet's pods.
#[tokio::test]
async fn deleting_the_owner_garbage_collects_its_children() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let ns = harness.namespace("smoke-gc").await?;
    ns.apply_file(fixture("smoke-deployment.yaml")).await?;
    let deployments = ns.api::<Deployment>();
    let deployment = wait_for(
        &deployments,
        "smoke",
        "3 replicas",
        TIMEOUT,
        |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref())
                .is_some_and(|s| s.replicas == Some(3))
        },
    )
    .await?;

    // The children exist and point at their owner before the owner goes.
    let (replicasets, pods) = (ns.api::<ReplicaSet>(), ns.api::<Pod>());
    let by_label = ListParams::default().labels(SMOKE_SELECTOR);
    let owned = replicasets.list(&by_label).await.unwrap().items;
    assert_eq!(owned.len(), 1);
    assert_eq!(
        owned[0].owner_references()[0].uid,
        deployment.uid().unwrap()
    );
    assert_eq!(pods.list(&by_label).await.unwrap().items.len(), 3);

    deployments
        .delete("smoke", &DeleteParams::background())
        .await
        .unwrap();
    wait_for_none(&replicasets, SMOKE_SELECTOR, TIMEOUT).await?;
    wait_for_none(&pods, SMOKE_SELECTOR, TIMEOUT).await?;
    ns.cleanup().await
}

/// The HPA controller runs: it picks up an autoscaler and reports on it in its status.
#[tokio::test]
async fn hpa_controller_reconciles_an_autoscaler() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let ns = harness.namespace("smoke-hpa").await?;
    ns.apply_file(fixture("smoke-deployment.yaml")).await?;
    ns.apply_file(fixture("smoke-hpa.yaml")).await?;
    let hpa = wait_for(
        &ns.api::<HorizontalPodAutoscaler>(),
        "smoke",
        "the HPA controller to set the AbleToScale condition",
        TIMEOUT,
        |h: Option<&HorizontalPodAutoscaler>| {
            let conditions = h
                .and_then(|h| h.status.as_ref())
                .and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "AbleToScale"))
        },
    )
    .await?;
    // The controller read the target's scale subresource, so it knows the current replicas.
    assert!(hpa.status.unwrap().current_replicas.is_some_and(|n| n > 0));
    ns.cleanup().await
}

/// PodSecurity admission enforces `restricted` in the test namespace: a privileged root pod
/// is refused, while a compliant pod in the same namespace is admitted.
#[tokio::test]
async fn pod_breaking_the_restricted_standard_is_rejected() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let ns = harness.namespace("smoke-psa").await?;

    let rejected = ns
        .apply_yaml(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: privileged
spec:
  containers:
    - name: app
      image: registry.k8s.io/pause:3.10
      securityContext:
        privileged: true
        runAsUser: 0
"#,
        )
        .await
        .expect_err("a privileged pod must be rejected in a restricted namespace");
    let status = rejected
        .api_status()
        .unwrap_or_else(|| panic!("not an API rejection: {rejected}"));
    assert_eq!(status.code, 403, "{status:?}");
    assert!(
        status
            .message
            .contains("violates PodSecurity \"restricted:latest\""),
        "{}",
        status.message
    );
    assert!(status.message.contains("privileged"), "{}", status.message);

    // The control: the namespace does admit a pod that meets the standard.
    ns.apply_yaml(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: compliant
spec:
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    seccompProfile: {type: RuntimeDefault}
  containers:
    - name: app
      image: registry.k8s.io/pause:3.10
      securityContext:
        allowPrivilegeEscalation: false
        capabilities: {drop: [ALL]}
"#,
    )
    .await?;
    ns.cleanup().await
}

/// A CRD's OpenAPI schema and its CEL rule (`x-kubernetes-validations`) are enforced at
/// admission: a valid object is stored, objects breaking either are refused with 422.
#[tokio::test]
async fn crd_cel_rule_rejects_a_bad_object() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let crd_file = fixture("smoke-crd.yaml");
    harness.apply_file(&crd_file, None).await?;
    wait_for(
        &harness.api::<CustomResourceDefinition>(),
        "gadgets.smoke.shop.dev",
        "Established",
        TIMEOUT,
        is_crd_established(),
    )
    .await?;
    let ns = harness.namespace("smoke-cel").await?;
    let gadget = |name: &str, min: i64, max: i64| {
        format!(
            "apiVersion: smoke.shop.dev/v1\nkind: Gadget\nmetadata:\n  name: {name}\nspec:\n  minReplicas: {min}\n  maxReplicas: {max}\n"
        )
    };

    let stored = ns.apply_yaml(&gadget("good", 1, 3)).await?;
    assert_eq!(stored[0].data["spec"]["maxReplicas"], 3);

    let cel = ns
        .apply_yaml(&gadget("inverted", 5, 2))
        .await
        .expect_err("the CEL rule must reject min > max");
    let status = cel
        .api_status()
        .unwrap_or_else(|| panic!("not an API rejection: {cel}"));
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status
            .message
            .contains("minReplicas must not exceed maxReplicas"),
        "{}",
        status.message
    );

    let schema = ns
        .apply_yaml(&gadget("negative", -1, 2))
        .await
        .expect_err("the schema minimum must reject -1");
    let status = schema
        .api_status()
        .unwrap_or_else(|| panic!("not an API rejection: {schema}"));
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status.message.contains("spec.minReplicas"),
        "{}",
        status.message
    );

    ns.cleanup().await?;
    harness.delete_file(&crd_file, None).await
}
