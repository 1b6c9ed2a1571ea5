//! The operator's startup check of its RBAC, with the real binary acting as a
//! ServiceAccount (impersonation): with a rule of the operator chart's RBAC (`k8s/operator`) missing it stops
//! at once with one message naming every missing permission; with all of them it starts and
//! reconciles, leader election and the Delete cleanup included.
//!
//! The manifest's ClusterRole and leader-election Role are cluster-wide and in
//! `shop-system`; here their rules are granted by one Role in the test's namespace, which is
//! both the watched namespace and the Lease's, so tests do not share RBAC objects.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube_harness::{Harness, Result, TestNamespace, wait_for, wait_for_deletion};
use serde_json::json;
use shop_e2e::{
    OperatorProcess, TEST_IMAGE, install_crd, kube_error, kubeconfig_as_service_account,
    provide_volumes, release_namespace, repository_file,
};
use shop_operator::controller::permissions::RBAC_MANIFEST;
use shop_operator::crd::ShopService;

const TIMEOUT: Duration = Duration::from_secs(120);
/// How long a refusal to start may take: a client, one list and a few dozen access reviews.
const STARTUP_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The rules of the manifest's ClusterRole `shop-operator` and Role
/// `shop-operator-leader-election`, together.
fn manifest_rules() -> Vec<PolicyRule> {
    let yaml = std::fs::read_to_string(repository_file(RBAC_MANIFEST)).unwrap();
    let mut rules = Vec::new();
    for object in kube_harness::parse_manifests(&yaml).unwrap() {
        let kind = object.types.as_ref().map(|t| t.kind.clone());
        let value = serde_json::to_value(&object).unwrap();
        match kind.as_deref() {
            Some("ClusterRole") => {
                let role: ClusterRole = serde_json::from_value(value).unwrap();
                rules.extend(role.rules.unwrap_or_default());
            }
            Some("Role") => {
                let role: Role = serde_json::from_value(value).unwrap();
                rules.extend(role.rules.unwrap_or_default());
            }
            _ => {}
        }
    }
    assert!(!rules.is_empty(), "{RBAC_MANIFEST} has rules");
    rules
}

/// `rules` without `verb` on `resource`.
fn without(mut rules: Vec<PolicyRule>, resource: &str, verb: &str) -> Vec<PolicyRule> {
    let mut removed = false;
    for rule in &mut rules {
        if rule.resources.iter().flatten().any(|r| r == resource) {
            let before = rule.verbs.len();
            rule.verbs.retain(|v| v != verb);
            removed |= rule.verbs.len() != before;
        }
    }
    assert!(removed, "the manifest grants {verb} {resource}");
    rules.retain(|rule| !rule.verbs.is_empty());
    rules
}

/// A ServiceAccount `name` in the test's namespace, granted `rules` there; returns a
/// kubeconfig that acts as it.
async fn service_account_with(
    ns: &TestNamespace,
    name: &str,
    rules: Vec<PolicyRule>,
) -> Result<std::path::PathBuf> {
    let create = PostParams::default();
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    ns.api::<ServiceAccount>()
        .create(&create, &account)
        .await
        .map_err(kube_error("create a ServiceAccount"))?;
    let role = Role {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        rules: Some(rules),
    };
    ns.api::<Role>()
        .create(&create, &role)
        .await
        .map_err(kube_error("create a Role"))?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": ns.name()}],
    }))
    .unwrap();
    ns.api::<RoleBinding>()
        .create(&create, &binding)
        .await
        .map_err(kube_error("create a RoleBinding"))?;
    wait_until_granted(ns.harness(), ns.name(), name, Some(ns.name())).await;
    Ok(kubeconfig_as_service_account(ns.name(), name))
}

/// Waits until the API server's authorizer sees the grant of `patch services` to the
/// ServiceAccount `namespace/name` (in `scope`, every namespace when `None`): a new binding
/// takes a moment to reach it, and an operator started before would be refused.
async fn wait_until_granted(harness: &Harness, namespace: &str, name: &str, scope: Option<&str>) {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": format!("system:serviceaccount:{namespace}:{name}"),
            "resourceAttributes": {
                "group": "", "resource": "services", "verb": "patch",
                "namespace": scope.unwrap_or_default(),
            },
        },
    }))
    .unwrap();
    let reviews = harness.api::<SubjectAccessReview>();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .expect("a SubjectAccessReview");
        if answer.status.is_some_and(|s| s.allowed) {
            return;
        }
        assert!(Instant::now() < deadline, "the grant never took effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_file(ns: &TestNamespace) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("shop-e2e-{}.log", ns.name()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_permissions_stop_the_operator_at_startup_with_one_message() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    install_crd(&harness).await?;
    let ns = harness.namespace("rbac-missing").await?;
    // Listing ShopServices too: the check that the CRD exists must not hide the others.
    let rules = without(manifest_rules(), "shopservices", "list");
    let rules = without(rules, "secrets", "create");
    let rules = without(rules, "persistentvolumeclaims", "deletecollection");
    let kubeconfig = service_account_with(&ns, "partial", rules).await?;
    // Something to reconcile, that must be left alone.
    ns.apply_yaml(
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: cart}\nspec: {component: cart}\n",
    )
    .await?;

    let log = log_file(&ns);
    let started = Instant::now();
    let mut operator = OperatorProcess::start(
        &["--namespace", ns.name(), "--default-image", TEST_IMAGE],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        &log,
    );
    let status = operator.exited_within(STARTUP_CHECK_TIMEOUT).await;
    let took = started.elapsed();
    let output = operator.log();
    let _ = std::fs::remove_file(&log);
    let status = status.unwrap_or_else(|| {
        panic!("the operator still runs after {STARTUP_CHECK_TIMEOUT:?}; its log:\n{output}")
    });
    assert!(
        !status.success(),
        "a failed check exits non-zero; log:\n{output}"
    );
    eprintln!("the operator refused to start after {took:?}");
    let message = output
        .lines()
        .find(|line| line.contains("RBAC permission"))
        .unwrap_or_else(|| panic!("no RBAC message in the log:\n{output}"));
    eprintln!("its message: {message}");
    for expected in [
        "missing 3 RBAC permission(s)",
        "list shopservices.shop.dev, create secrets, deletecollection persistentvolumeclaims in namespace",
        RBAC_MANIFEST,
    ] {
        assert!(message.contains(expected), "{expected:?} in: {message}");
    }
    assert!(
        !output.contains("shop-operator started"),
        "the controller never started; log:\n{output}"
    );
    let cart = ns
        .api::<ShopService>()
        .get("cart")
        .await
        .map_err(kube_error("get the ShopService"))?;
    assert!(
        cart.finalizers().is_empty() && cart.status.is_none(),
        "nothing was reconciled"
    );
    assert!(
        ns.api::<Deployment>()
            .list(&ListParams::default())
            .await
            .map_err(kube_error("list Deployments"))?
            .items
            .is_empty()
    );
    ns.cleanup().await
}

/// Without `--namespace` the operator needs its permissions in every namespace: a
/// ClusterRole bound cluster-wide. (Only the refusal is tested this way: an operator that
/// started would reconcile the ShopServices of every other test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_namespace_the_check_is_cluster_wide() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    install_crd(&harness).await?;
    let ns = harness.namespace("rbac-cluster").await?;
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "cluster-wide"}})).unwrap();
    ns.api::<ServiceAccount>()
        .create(&PostParams::default(), &account)
        .await
        .map_err(kube_error("create a ServiceAccount"))?;
    // Cluster-scoped, so named after the test's namespace.
    let name = format!("shop-e2e-{}", ns.name());
    let role = ClusterRole {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        rules: Some(without(manifest_rules(), "secrets", "watch")),
        ..Default::default()
    };
    let roles = harness.api::<ClusterRole>();
    roles
        .create(&PostParams::default(), &role)
        .await
        .map_err(kube_error("create a ClusterRole"))?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": "cluster-wide", "namespace": ns.name()}],
    }))
    .unwrap();
    let bindings = harness.api::<ClusterRoleBinding>();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .map_err(kube_error("create a ClusterRoleBinding"))?;
    wait_until_granted(&harness, ns.name(), "cluster-wide", None).await;

    let kubeconfig = kubeconfig_as_service_account(ns.name(), "cluster-wide");
    let log = log_file(&ns);
    let mut operator = OperatorProcess::start(
        &["--default-image", TEST_IMAGE],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        &log,
    );
    let status = operator.exited_within(STARTUP_CHECK_TIMEOUT).await;
    let output = operator.log();
    let _ = std::fs::remove_file(&log);
    for result in [
        bindings
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
        roles
            .delete(&name, &DeleteParams::default())
            .await
            .map(|_| ()),
    ] {
        result.map_err(kube_error("delete the test's cluster RBAC"))?;
    }
    let status = status.unwrap_or_else(|| {
        panic!("the operator still runs after {STARTUP_CHECK_TIMEOUT:?}; its log:\n{output}")
    });
    assert!(
        !status.success(),
        "a failed check exits non-zero; log:\n{output}"
    );
    assert!(
        output.contains(
            "missing 1 RBAC permission(s) it needs: watch secrets in every namespace (no --namespace given)"
        ),
        "the message names the cluster-wide permission; log:\n{output}"
    );
    ns.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_rules_suffice_to_start_and_reconcile() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    install_crd(&harness).await?;
    let ns = harness.namespace("rbac-full").await?;
    let kubeconfig = service_account_with(&ns, "operator", manifest_rules()).await?;
    // A Dedicated database that goes with its ShopService: every kind of call, deletion of
    // its Secret and volume included.
    let yaml = "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: notes}\nspec: {component: notification, replicas: 2, database: {mode: Dedicated, deletionPolicy: Delete}}\n";
    let shops: Vec<ShopService> = kube_harness::parse_manifests(yaml)?
        .into_iter()
        .map(|o| serde_json::from_value(serde_json::to_value(o).unwrap()).unwrap())
        .collect();
    provide_volumes(&harness, ns.name(), &shops).await?;
    let log = log_file(&ns);
    let started = Instant::now();
    let mut operator = OperatorProcess::start(
        &[
            "--namespace",
            ns.name(),
            "--default-image",
            TEST_IMAGE,
            "--leader-elect",
            "--lease-duration",
            "3",
        ],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("POD_NAME", "operator-0"),
            ("POD_NAMESPACE", ns.name()),
        ],
        &log,
    );
    let result = async {
        operator
            .wait_ready(TIMEOUT)
            .await
            .map_err(kube_harness::Error::Wait)?;
        ns.apply_yaml(yaml).await?;
        let shop_api = ns.api::<ShopService>();
        wait_for(
            &shop_api,
            "notes",
            "Ready",
            TIMEOUT,
            |shop: Option<&ShopService>| {
                shop.and_then(|s| s.status.as_ref()).is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            },
        )
        .await?;
        let secrets = ns.api::<Secret>();
        secrets
            .get("notes-db-credentials")
            .await
            .map_err(kube_error("get the credentials"))?;
        ns.api::<Deployment>()
            .get("notes")
            .await
            .map_err(kube_error("get the Deployment"))?;
        shop_api
            .delete("notes", &DeleteParams::background())
            .await
            .map_err(kube_error("delete the ShopService"))?;
        wait_for_deletion(&shop_api, "notes", TIMEOUT).await?;
        // Its cleanup ran as the ServiceAccount: the Secret and the claim are gone.
        wait_for_deletion(&secrets, "notes-db-credentials", TIMEOUT).await?;
        wait_for_deletion(
            &ns.api::<PersistentVolumeClaim>(),
            "data-notes-db-0",
            TIMEOUT,
        )
        .await
    }
    .await;
    if result.is_err() {
        eprintln!("--- the operator's log ---\n{}", operator.log());
        operator.kill();
        let _ = release_namespace(ns.name()).await;
    }
    result?;
    eprintln!(
        "as the ServiceAccount, the operator started, provisioned and cleaned up in {:?}",
        started.elapsed()
    );
    let output = operator.log();
    assert!(
        !output.contains("Forbidden") && !output.contains("forbidden"),
        "no call was refused; log:\n{output}"
    );
    operator.kill();
    let _ = std::fs::remove_file(&log);
    release_namespace(ns.name())
        .await
        .map_err(|e| kube_harness::Error::Wait(e.to_string()))?;
    ns.cleanup().await
}
