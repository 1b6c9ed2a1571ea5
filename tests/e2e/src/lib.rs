//! What the end-to-end tests in `tests/` share: paths into the repository and the ShopService CRD.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::runtime::wait::conditions::is_crd_established;
use kube_harness::{Harness, Result, wait_for};

pub const CRD_NAME: &str = "shopservices.shop.dev";

/// A file of the repository, by its path from the top (`crds/…`, `examples/…`).
pub fn repository_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
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
