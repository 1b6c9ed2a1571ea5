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

/// The operator binary ([`operator_binary`]) running as a child process of the test, its
/// stdout and stderr appended to a log file. Dropping it kills it.
///
/// It runs in a process group of its own, and signals go to the group: when `SHOP_OPERATOR_BIN`
/// is a wrapper (a profiler such as heaptrack, a script), the operator it started ends with it
/// instead of outliving the test.
pub struct OperatorProcess {
    child: std::process::Child,
    /// Where it serves `/healthz`, `/readyz` and `/metrics`.
    pub metrics_addr: std::net::SocketAddr,
    log: PathBuf,
}

impl OperatorProcess {
    /// Starts `shop-operator run` with `args` (besides `--metrics-addr`, which it picks: a
    /// free loopback port) and `env` (on top of this process's environment: `KUBECONFIG`
    /// names the identity). Logs are human-readable lines.
    pub fn start(args: &[&str], env: &[(&str, &str)], log: &Path) -> OperatorProcess {
        use std::os::unix::process::CommandExt;
        // The kernel's choice of a free port; released just before the operator binds it.
        let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port");
        let output = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the operator's log file");
        let child = std::process::Command::new(operator_binary())
            .arg("run")
            .args(args)
            .args(["--metrics-addr", &metrics_addr.to_string()])
            .envs(env.iter().copied())
            .env("SHOP_LOG_FORMAT", "text")
            .stdin(std::process::Stdio::null())
            .stdout(output.try_clone().expect("share the log file"))
            .stderr(output)
            .process_group(0)
            .spawn()
            .expect("start the operator binary");
        OperatorProcess {
            child,
            metrics_addr,
            log: log.to_owned(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `KILL`) to the operator's process group.
    fn signal_group(&self, signal: &str) {
        let _ = std::process::Command::new("kill")
            .args([&format!("-{signal}"), "--", &format!("-{}", self.id())])
            .status();
    }

    /// SIGKILL: no shutdown code runs, as when a node dies or the OOM killer strikes.
    pub fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal_group("KILL");
        }
        let _ = self.child.wait();
    }

    /// The exit status once the process has ended, if it ends within `timeout`.
    pub async fn exited_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the operator process") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, as Kubernetes stops a pod: the exit status if the process ends within
    /// `timeout`; SIGKILL and `None` if not.
    pub async fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.signal_group("TERM");
        let status = self.exited_within(timeout).await;
        if status.is_none() {
            self.kill();
        }
        status
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the operator processes logged to this log file so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A GET on the operator's HTTP port: the status code and the body; `None` while nothing
    /// answers there.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.metrics_addr, path).await
    }

    /// The value of the sample `name` (with its labels, as in the text format) on `/metrics`.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await?;
        body.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    /// Waits until `/readyz` answers 200. Fails with the log if the process ends first or
    /// `timeout` passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> std::result::Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the operator process") {
                return Err(format!(
                    "the operator exited ({status}) before it was ready; its log:\n{}",
                    self.log()
                ));
            }
            if matches!(self.get("/readyz").await, Some((200, _))) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the operator was not ready within {timeout:?}; its log:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// PersistentVolumes for the Dedicated databases of `shops` in `namespace`, bound in advance
/// to the claims their StatefulSets will make: the local cluster has no storage provisioner.
/// They carry the label `shop-e2e/namespace=<namespace>`, for [`delete_volumes`].
pub async fn provide_volumes(
    harness: &Harness,
    namespace: &str,
    shops: &[shop_operator::crd::ShopService],
) -> Result<()> {
    use k8s_openapi::api::core::v1::PersistentVolume;
    use kube::ResourceExt;
    let volumes = harness.api::<PersistentVolume>();
    for shop in shops
        .iter()
        .filter(|s| s.spec.database.mode == shop_operator::crd::DatabaseMode::Dedicated)
    {
        let claim = format!("data-{}-db-0", shop.name_any());
        let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": format!("{namespace}-{claim}"),
                "labels": {"shop-e2e/namespace": namespace},
            },
            "spec": {
                "capacity": {"storage": "10Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": format!("/tmp/shop-e2e/{namespace}/{claim}")},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }))
        .expect("a valid PersistentVolume");
        volumes
            .create(&kube::api::PostParams::default(), &volume)
            .await
            .map_err(|source| kube_harness::Error::Kube {
                context: format!("create PersistentVolume for {claim}"),
                source,
            })?;
    }
    Ok(())
}

/// Deletes the PersistentVolumes (and StorageClasses) labelled `shop-e2e/namespace=<namespace>`,
/// as [`provide_volumes`] and tests of storage make them.
pub async fn delete_volumes(harness: &Harness, namespace: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::PersistentVolume;
    use k8s_openapi::api::storage::v1::StorageClass;
    use kube::api::{DeleteParams, ListParams};
    let labelled = ListParams::default().labels(&format!("shop-e2e/namespace={namespace}"));
    let error = |what: &str| {
        let context = format!("delete the {what} of {namespace}");
        move |source| kube_harness::Error::Kube { context, source }
    };
    harness
        .api::<PersistentVolume>()
        .delete_collection(&DeleteParams::default(), &labelled)
        .await
        .map_err(error("PersistentVolumes"))?;
    harness
        .api::<StorageClass>()
        .delete_collection(&DeleteParams::default(), &labelled)
        .await
        .map_err(error("StorageClasses"))?;
    Ok(())
}

/// Lets a test namespace go without the operator: removes the finalizers of its
/// ShopServices (which only a running operator would otherwise remove), and deletes the
/// PersistentVolumes and StorageClasses made for it and a leader Lease named after it. For a
/// failed test's cleanup.
pub async fn release_namespace(namespace: &str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::PersistentVolume;
    use kube::ResourceExt;
    use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
    let client = kube::Client::try_default().await?;
    let shops = kube::Api::<shop_operator::crd::ShopService>::namespaced(client.clone(), namespace);
    let unfinalized = serde_json::json!({"metadata": {"finalizers": null}});
    for shop in shops.list(&ListParams::default()).await?.items {
        shops
            .patch(
                &shop.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&unfinalized),
            )
            .await?;
    }
    // Tests of leader election name their Lease after their namespace.
    match kube::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        client.clone(),
        OPERATOR_NAMESPACE,
    )
    .delete(namespace, &DeleteParams::default())
    .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let labelled = ListParams::default().labels(&format!("shop-e2e/namespace={namespace}"));
    kube::Api::<PersistentVolume>::all(client.clone())
        .delete_collection(&DeleteParams::default(), &labelled)
        .await?;
    kube::Api::<k8s_openapi::api::storage::v1::StorageClass>::all(client)
        .delete_collection(&DeleteParams::default(), &labelled)
        .await?;
    Ok(())
}

/// A GET on an operator's HTTP port (`/healthz`, `/readyz`, `/metrics`): the status code and
/// the body; `None` while nothing answers there (within 5 s).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.get(9..12)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// The count of successful reconciles in a `/metrics` body (0 before the first).
pub fn successful_reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("shop_operator_reconciles_total{outcome=\"Success\"} "))
        .map_or(0, |count| count.trim().parse().expect("a counter value"))
}

/// A `map_err` for a kube call: the error with what the test was doing.
pub fn kube_error(context: &str) -> impl FnOnce(kube::Error) -> kube_harness::Error {
    let context = context.to_owned();
    move |source| kube_harness::Error::Kube { context, source }
}

/// Waits for an Event of `reason` about the ShopService `name` in `ns`, and returns it. The operator
/// publishes a reconcile's Events after it has written the status, so a test that has just seen
/// the status must wait for them rather than list them once.
pub async fn wait_for_event(
    ns: &kube_harness::TestNamespace,
    name: &str,
    reason: &str,
) -> Result<k8s_openapi::api::events::v1::Event> {
    const WAIT: Duration = Duration::from_secs(60);
    let events = ns.api::<k8s_openapi::api::events::v1::Event>();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let about: Vec<_> = events
            .list(&Default::default())
            .await
            .map_err(kube_error("list events"))?
            .items
            .into_iter()
            .filter(|event| {
                event.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("ShopService") && r.name.as_deref() == Some(name)
                })
            })
            .collect();
        if let Some(event) = about.iter().find(|e| e.reason.as_deref() == Some(reason)) {
            return Ok(event.clone());
        }
        if tokio::time::Instant::now() > deadline {
            let reasons: Vec<_> = about.iter().filter_map(|e| e.reason.as_deref()).collect();
            return Err(kube_harness::Error::Timeout {
                what: format!("an Event {reason} about {name}"),
                timeout: WAIT,
                state: format!("its Events: {reasons:?}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The image the tests' operators give ShopServices without `spec.image`.
pub const TEST_IMAGE: &str = "ghcr.io/shop-dev/shop:e2e";
/// The operator's namespace, as the operator chart (`k8s/operator`) names it.
pub const OPERATOR_NAMESPACE: &str = "shop-system";
/// The operator's ServiceAccount, as the operator chart (`k8s/operator`) names it.
const OPERATOR_USER: &str = "system:serviceaccount:shop-system:shop-operator";

/// A client with the rights of the operator's ServiceAccount in `k8s/operator` (the chart's
/// RBAC) and nothing more: the tests run the operator with it, so the manifest is tested too.
pub async fn operator_client(harness: &Harness) -> Result<kube::Client> {
    harness
        .apply_yaml(
            &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {OPERATOR_NAMESPACE}}}\n"),
            None,
        )
        .await?;
    harness.apply_yaml(&operator_rbac_yaml(), None).await?;
    let mut config = kube::Config::from_kubeconfig(&Default::default())
        .await
        .expect("the kubeconfig the harness connected with");
    config.auth_info.impersonate = Some(OPERATOR_USER.into());
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{OPERATOR_NAMESPACE}"),
        "system:authenticated".into(),
    ]);
    Ok(kube::Client::try_from(config).expect("a client for the operator's ServiceAccount"))
}

/// The operator's controller running in-process, on the test's runtime, as the operator's
/// ServiceAccount ([`operator_client`]), until [`InProcessOperator::stop`]. Dropping one that
/// was not stopped (the test failed) aborts it and releases its namespace
/// ([`release_namespace`]), which the finalizers would otherwise hold in Terminating.
pub struct InProcessOperator {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    http: std::net::SocketAddr,
    namespace: String,
}

impl InProcessOperator {
    /// Installs the checked-in CRD and starts the operator on `namespace`, with default
    /// settings.
    pub async fn start(harness: &Harness, namespace: &str) -> Result<InProcessOperator> {
        InProcessOperator::start_with(harness, namespace, |_, _| {}).await
    }

    /// [`InProcessOperator::start`], with `configure` changing the settings (given the
    /// operator's client) before it runs.
    pub async fn start_with(
        harness: &Harness,
        namespace: &str,
        configure: impl FnOnce(&kube::Client, &mut shop_operator::controller::Settings),
    ) -> Result<InProcessOperator> {
        use shop_operator::controller::{self, Settings};
        install_crd(harness).await?;
        let client = operator_client(harness).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let http = listener.local_addr().expect("a bound address");
        let mut settings = Settings {
            namespace: Some(namespace.into()),
            default_image: TEST_IMAGE.into(),
            postgres_image: shop_operator::build::database::DEFAULT_POSTGRES_IMAGE.into(),
            http_listener: listener,
            leader_election: None,
            shared_cleanup_timeout: controller::DEFAULT_SHARED_CLEANUP_TIMEOUT,
            debounce: controller::DEFAULT_DEBOUNCE,
            concurrency: controller::DEFAULT_CONCURRENCY,
        };
        configure(&client, &mut settings);
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(client, settings, async {
            let _ = stopped.await;
        }));
        Ok(InProcessOperator {
            shutdown: Some(shutdown),
            task: Some(task),
            http,
            namespace: namespace.into(),
        })
    }

    /// A GET on the operator's HTTP port: the status code and the body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
            .await
            .unwrap_or_else(|| panic!("the operator does not answer GET {path}"))
    }

    /// Successful reconciles so far, from `/metrics`.
    pub async fn successful_reconciles(&self) -> u64 {
        successful_reconciles(&self.get("/metrics").await.1)
    }

    /// Waits until `/metrics` counts more than `than` successful reconciles, at most
    /// `timeout`. The children and the status are written inside a reconcile, and the count
    /// goes up only when it returns: a test that saw the writes must still wait for the count.
    pub async fn wait_for_reconciles_above(&self, than: u64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.successful_reconciles().await <= than {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no more than {than} reconciles finished successfully within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Signals the shutdown and waits (at most 30 s) until the operator has stopped cleanly.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let task = self.task.take().expect("the operator runs until stopped");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the operator stops within 30 s of its shutdown signal")
            .expect("the operator task does not panic")
            .expect("the operator stops cleanly");
    }
}

impl Drop for InProcessOperator {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return; // stopped: the test cleaned up after itself
        };
        // Stop it first, or it would put the finalizers back.
        task.abort();
        let namespace = self.namespace.clone();
        release_namespace_from_drop(&namespace, Duration::from_secs(1));
    }
}

/// [`release_namespace`] from a `drop` (the test's runtime cannot be used there: a helper
/// thread runs its own), after `settle` (a request an aborted operator had already sent may
/// still land). Says on stderr when it could not.
pub fn release_namespace_from_drop(namespace: &str, settle: Duration) {
    let owned = namespace.to_owned();
    let released = std::thread::spawn(move || {
        std::thread::sleep(settle);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(release_namespace(&owned))
    })
    .join();
    if !matches!(released, Ok(Ok(()))) {
        eprintln!(
            "could not release namespace {namespace}; remove its ShopServices' finalizers by hand"
        );
    }
}
