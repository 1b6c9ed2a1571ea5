//! What the end-to-end tests in `tests/` share: paths into the repository and the ShopService CRD.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::wait::conditions::is_crd_established;
use kube_harness::{Harness, Result, wait_for};

pub const CRD_NAME: &str = "shopservices.shop.dev";

/// A file of the repository, by its path from the top (`crds/…`, `examples/…`).
pub fn repository_file(path: &str) -> PathBuf {
    // `cargo test` names the package under test at run time; prefer it to the path compiled in,
    // which is another checkout's when checkouts share a build directory and this library was
    // last compiled there.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir.join("../..").join(path)
}

/// Installs (or updates) the checked-in ShopService CRD and waits until the API server serves it.
pub async fn install_crd(harness: &Harness) -> Result<()> {
    harness
        .apply_file(repository_file("crds/shopservices.shop.dev.yaml"), None)
        .await?;
    wait_for(
        &harness.api::<CustomResourceDefinition>(),
        CRD_NAME,
        "Established",
        Duration::from_secs(60),
        is_crd_established(),
    )
    .await?;
    Ok(())
}

/// The `shop-operator` binary, for tests that run the operator as a process of its own (to
/// kill it, or to run it with another identity). `tests/run.sh` builds it and sets
/// `SHOP_OPERATOR_BIN`; without it, the binary next to this test's own build is used
/// (`cargo build -p shop-operator` makes it).
pub fn operator_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SHOP_OPERATOR_BIN") {
        return PathBuf::from(path);
    }
    // The test runs as target/<profile>/deps/<test>-<hash>; binaries are in target/<profile>.
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in target/<profile>/deps")
        .join("shop-operator");
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build -p shop-operator` first, or set SHOP_OPERATOR_BIN",
        path.display()
    );
    path
}

/// Writes a copy of the test cluster's kubeconfig (`KUBECONFIG`) that acts as the
/// ServiceAccount `namespace/name` (impersonation), and returns its path. A process given it
/// (the operator binary) gets exactly the permissions of that ServiceAccount's RBAC: how the
/// tests prove the RBAC manifests suffice, on a cluster that cannot run the operator's pod.
pub fn kubeconfig_as_service_account(namespace: &str, name: &str) -> PathBuf {
    let source = std::env::var_os("KUBECONFIG").expect("KUBECONFIG names the test cluster");
    let mut config = kube::config::Kubeconfig::read_from(&source).expect("read KUBECONFIG");
    for named in &mut config.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
        }
    }
    // JSON is YAML, so every kubeconfig reader takes it.
    let text = serde_json::to_string_pretty(&config).expect("serialize the kubeconfig");
    let path = std::env::temp_dir().join(format!(
        "shop-e2e-kubeconfig-{namespace}-{name}-{}.json",
        std::process::id()
    ));
    std::fs::write(&path, text).expect("write the kubeconfig");
    path
}

/// The operator's manifest as installed by `kubectl apply -k k8s/` (rendered from the chart).
pub const OPERATOR_MANIFEST: &str = "k8s/operator/shop-operator.yaml";

/// The RBAC documents of [`OPERATOR_MANIFEST`] (the ServiceAccount, its roles and their
/// bindings), without the Deployment and the CRD: what tests that run the operator with the
/// ServiceAccount's identity apply.
pub fn operator_rbac_yaml() -> String {
    const RBAC_KINDS: [&str; 5] = [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ];
    let path = repository_file(OPERATOR_MANIFEST);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.split("\n---")
        .filter(|document| {
            document.lines().any(|line| {
                line.strip_prefix("kind: ")
                    .is_some_and(|kind| RBAC_KINDS.contains(&kind.trim()))
            })
        })
        .collect::<Vec<_>>()
        .join("\n---")
}
