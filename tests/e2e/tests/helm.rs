//! The Helm charts (`charts/shop-operator`, `charts/shop`) and the kustomize bases rendered from
//! them (`k8s/`): lint, checkov, server-side dry runs, the values schema, drift, and the whole
//! life of an install on the local cluster (install, the shop Ready, upgrade, uninstall,
//! reinstall).
//!
//! The tests run the real `helm` and `kubectl` from PATH (`eval "$(tests/cluster/cluster.sh
//! env)"` puts them there); without them a test is skipped with a loud line, and under
//! `CI=true` it fails. The local cluster's pods never run, so the operator Deployment the chart
//! installs becomes Available with simulated pods and does not reconcile: the life-cycle test
//! runs the operator binary as a process of its own instead, with the arguments of the
//! installed Deployment and the identity of the chart's ServiceAccount (impersonation), so the
//! chart's arguments and RBAC are what is tested.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams};
use kube::{Resource, ResourceExt};
use kube_harness::{Harness, Result, TestNamespace, wait_for, wait_for_deletion};
use serde_json::{Value, json};
use shop_e2e::{
    CRD_NAME, http_get, kubeconfig_as_service_account, operator_binary, provide_volumes,
    release_namespace_from_drop, repository_file, successful_reconciles,
};
use shop_operator::crd::{DatabaseMode, ShopService};

/// Long enough for the whole shop's rollouts on a busy two-core machine.
const TIMEOUT: Duration = Duration::from_secs(180);
const OPERATOR_CHART: &str = "charts/shop-operator";
const SHOP_CHART: &str = "charts/shop";
/// The operator chart's release in the life-cycle test; its full name (and ServiceAccount).
const OPERATOR_RELEASE: &str = "shop-operator";

/// The README's CRD step (Helm installs `crds/` only when the CRD is missing, and other tests
/// may have installed it first), then waits until the API server serves it.
fn install_crd() {
    run_ok(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "charts/shop-operator/crds/",
        ],
    );
    run_ok(
        "kubectl",
        &[
            "wait",
            "--for",
            "condition=established",
            "--timeout",
            "60s",
            &format!("crd/{CRD_NAME}"),
        ],
    );
}

/// True when every tool is on PATH. Otherwise a loud skip, or a failure under `CI=true`.
fn tools_present(tools: &[&str]) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for tool in tools {
        if !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
            let message = format!(
                "{tool} is not on PATH (eval \"$(tests/cluster/cluster.sh env)\" puts it there)"
            );
            assert!(!kube_harness::running_in_ci(), "CI=true but {message}");
            eprintln!("SKIPPED: {message}");
            return false;
        }
    }
    true
}

/// Runs a command from the repository's top directory and returns its output.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repository_file(""))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// [`run`], failing the test with the command's output unless it succeeds; returns stdout.
fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    assert!(
        output.status.success(),
        "`{program} {}` failed ({}):\n{}\n{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// `helm template` of a chart with extra arguments (`--set …`, `--include-crds`).
fn render(chart: &str, release: &str, namespace: &str, extra: &[&str]) -> String {
    let mut args = vec!["template", release, chart, "--namespace", namespace];
    args.extend_from_slice(extra);
    run_ok("helm", &args)
}

/// A fresh directory for one test's files.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shop-helm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// The variants every static check covers: both scopes of the operator (with the optional
/// ServiceMonitor), and the shop with its own NATS server (the default) and with an external one,
/// both charts with their Grafana dashboards.
fn rendered_variants(namespace: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "operator-cluster.yaml",
            render(
                OPERATOR_CHART,
                "shop-operator",
                namespace,
                &["--include-crds"],
            ),
        ),
        (
            "operator-namespace.yaml",
            render(
                OPERATOR_CHART,
                "shop-operator",
                namespace,
                &[
                    "--set",
                    "watch.scope=Namespace",
                    "--set",
                    "grafanaDashboards.enabled=true",
                ],
            ),
        ),
        ("shop.yaml", render(SHOP_CHART, "shop", namespace, &[])),
        (
            "shop-external-nats.yaml",
            render(
                SHOP_CHART,
                "shop",
                namespace,
                &[
                    "--set",
                    "nats.enabled=false",
                    "--set",
                    "nats.url=nats://nats.messaging.svc:4222",
                    "--set",
                    "image=example.org/shop:1",
                    "--set",
                    "grafanaDashboards.enabled=true",
                ],
            ),
        ),
    ]
}

#[test]
fn both_charts_lint_clean() {
    if !tools_present(&["helm"]) {
        return;
    }
    let output = run_ok("helm", &["lint", "--strict", OPERATOR_CHART, SHOP_CHART]);
    assert!(
        output.contains("2 chart(s) linted, 0 chart(s) failed"),
        "{output}"
    );
    // The single-namespace mode and an external NATS server lint clean too.
    run_ok(
        "helm",
        &[
            "lint",
            "--strict",
            OPERATOR_CHART,
            "--set",
            "watch.scope=Namespace",
        ],
    );
    run_ok(
        "helm",
        &[
            "lint",
            "--strict",
            SHOP_CHART,
            "--set",
            "nats.enabled=false",
            "--set",
            "nats.url=nats://nats.messaging.svc:4222",
        ],
    );
}

#[test]
fn rendered_charts_pass_checkov() {
    if !tools_present(&["helm", "python3"]) {
        return;
    }
    let dir = scratch_dir("checkov");
    for (file, yaml) in rendered_variants("shop") {
        std::fs::write(dir.join(file), yaml).unwrap();
    }
    let output = run_ok("tests/lint/checkov.sh", &[dir.to_str().unwrap()]);
    assert!(output.contains("Failed checks: 0"), "{output}");
    // The optional ServiceMonitor renders (checkov does not know its kind).
    let monitor = render(
        OPERATOR_CHART,
        "shop-operator",
        "shop",
        &["--set", "metrics.serviceMonitor.enabled=true"],
    );
    assert!(monitor.contains("kind: ServiceMonitor"), "{monitor}");
    // And the shop's PodMonitor, with the NetworkPolicy letting the scraper in.
    let monitor = render(
        SHOP_CHART,
        "shop",
        "shop",
        &[
            "--set",
            "podMonitor.enabled=true",
            "--set",
            "podMonitor.allowFrom[0].namespaceSelector.matchLabels.team=monitoring",
        ],
    );
    assert!(monitor.contains("kind: PodMonitor"), "{monitor}");
    assert!(monitor.contains("name: shop-metrics-scrape"), "{monitor}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_charts_pass_a_server_side_dry_run() -> Result<()> {
    if !tools_present(&["helm", "kubectl"]) {
        return Ok(());
    }
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    install_crd();
    let ns = harness.namespace("helm-dry-run").await?;
    // PodSecurity enforces on pods only, which a dry run does not create; in `warn` mode the
    // API server also checks the pod templates of Deployments and StatefulSets.
    let namespace = format!("namespace/{}", ns.name());
    run_ok(
        "kubectl",
        &[
            "label",
            &namespace,
            "pod-security.kubernetes.io/warn=restricted",
            "pod-security.kubernetes.io/warn-version=latest",
        ],
    );
    let dir = scratch_dir(ns.name());
    for (file, yaml) in rendered_variants(ns.name()) {
        let path = dir.join(file);
        std::fs::write(&path, yaml).unwrap();
        let output = run(
            "kubectl",
            &["apply", "--dry-run=server", "-f", path.to_str().unwrap()],
        );
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert!(output.status.success(), "{file}: {stdout}{stderr}");
        assert!(stdout.contains("(server dry run)"), "{file}: {stdout}");
        assert!(
            !stderr.contains("PodSecurity"),
            "{file} breaks the restricted Pod Security Standard: {stderr}"
        );
    }
    // The kustomize bases build with kubectl's built-in kustomize.
    for base in ["k8s", "k8s/operator", "k8s/shop"] {
        run_ok("kubectl", &["kustomize", base]);
    }
    std::fs::remove_dir_all(dir).unwrap();
    ns.cleanup().await
}

/// The `# expect: …` lines of a bad-values fixture: what helm's message must contain.
fn expectations(fixture: &Path) -> Vec<String> {
    std::fs::read_to_string(fixture)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("# expect: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_values_schemas_refuse_bad_values_naming_the_field() {
    if !tools_present(&["helm"]) {
        return;
    }
    for chart in ["shop-operator", "shop"] {
        let dir = repository_file(&format!("tests/e2e/fixtures/bad-values/{chart}"));
        let mut fixtures: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        fixtures.sort();
        assert!(
            fixtures.len() >= 5,
            "at least 5 kinds of bad values for {chart}"
        );
        for fixture in fixtures {
            let expected = expectations(&fixture);
            assert!(
                !expected.is_empty(),
                "{}: no `# expect:` line",
                fixture.display()
            );
            let output = run(
                "helm",
                &[
                    "template",
                    "bad",
                    &format!("charts/{chart}"),
                    "--values",
                    fixture.to_str().unwrap(),
                ],
            );
            let message = String::from_utf8_lossy(&output.stderr);
            assert!(
                !output.status.success(),
                "{} was accepted",
                fixture.display()
            );
            assert!(
                message.contains("values don't meet the specifications of the schema"),
                "{}: refused by the schema, not by a template: {message}",
                fixture.display()
            );
            for text in expected {
                assert!(
                    message.contains(&text),
                    "{}: the message names {text:?}: {message}",
                    fixture.display()
                );
            }
        }
    }
}

#[test]
fn the_operator_chart_carries_the_checked_in_crd() {
    let chart_copy = repository_file("charts/shop-operator/crds/shopservices.shop.dev.yaml");
    let checked_in = repository_file("crds/shopservices.shop.dev.yaml");
    assert!(
        std::fs::read(&chart_copy).unwrap() == std::fs::read(&checked_in).unwrap(),
        "{} differs from {}: run charts/render-k8s.sh",
        chart_copy.display(),
        checked_in.display()
    );
}

#[test]
fn k8s_bases_are_what_the_charts_render() {
    if !tools_present(&["helm", "diff"]) {
        return;
    }
    let dir = scratch_dir("k8s");
    run_ok("charts/render-k8s.sh", &[dir.to_str().unwrap()]);
    let output = run("diff", &["-ru", "k8s", dir.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "k8s/ differs from what the charts render; regenerate it with charts/render-k8s.sh\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Name → spec of every ShopService in a multi-document YAML.
fn shop_specs(yaml: &str) -> BTreeMap<String, Value> {
    kube_harness::parse_manifests(yaml)
        .unwrap()
        .into_iter()
        .filter(|o| o.types.as_ref().is_some_and(|t| t.kind == "ShopService"))
        .map(|o| (o.name_any(), o.data["spec"].clone()))
        .collect()
}

#[test]
fn the_shop_chart_defaults_are_the_example_shop() {
    if !tools_present(&["helm"]) {
        return;
    }
    let example = std::fs::read_to_string(repository_file("examples/shop.yaml")).unwrap();
    let rendered = render(SHOP_CHART, "shop", "shop", &[]);
    let (example, mut rendered) = (shop_specs(&example), shop_specs(&rendered));
    assert_eq!(example.len(), 10, "the example shop has ten ShopServices");
    // The chart adds one thing to each: the URL of its own NATS server (on by default).
    for (name, spec) in &mut rendered {
        let env = spec
            .as_object_mut()
            .unwrap()
            .remove("env")
            .unwrap_or_else(|| panic!("{name} has no env"));
        assert_eq!(
            env,
            json!([{"name": "NATS_URL", "value": "nats://shop-nats.shop.svc:4222"}]),
            "{name}"
        );
    }
    assert_eq!(
        rendered, example,
        "charts/shop/values.yaml = examples/shop.yaml"
    );

    // And the values do select and change them.
    let changed = shop_specs(&render(
        SHOP_CHART,
        "shop",
        "shop",
        &[
            "--set",
            "services.notification.enabled=false",
            "--set",
            "image=example.org/shop:2",
            "--set",
            "nats.enabled=false",
            "--set",
            "nats.url=nats://nats.messaging.svc:4222",
        ],
    ));
    assert_eq!(changed.len(), 9);
    assert!(!changed.contains_key("notification"));
    for spec in changed.values() {
        assert_eq!(spec["image"], "example.org/shop:2");
        assert_eq!(
            spec["env"],
            json!([{"name": "NATS_URL", "value": "nats://nats.messaging.svc:4222"}])
        );
    }
}

/// The operator binary, started with the arguments and environment of the operator
/// Deployment the chart installed, as the chart's ServiceAccount.
struct LocalOperator {
    child: Option<Child>,
    metrics: u16,
    log: PathBuf,
}

impl LocalOperator {
    async fn start(ns: &TestNamespace, replica: &str) -> LocalOperator {
        let deployment = ns
            .api::<Deployment>()
            .get(OPERATOR_RELEASE)
            .await
            .expect("the chart's operator Deployment");
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(
            container.command.as_deref(),
            Some(&["/usr/local/bin/shop-operator".to_owned()][..])
        );
        let service_account = pod.service_account_name.expect("a ServiceAccount");
        // A free loopback port for /metrics instead of the pod's 0.0.0.0.
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args: Vec<String> = container
            .args
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|arg| match arg.strip_prefix("--metrics-addr=") {
                Some(_) => format!("--metrics-addr=127.0.0.1:{metrics}"),
                None => arg,
            })
            .collect();
        assert!(
            args.contains(&format!("--namespace={}", ns.name())),
            "{args:?}"
        );
        assert!(args.contains(&"--leader-elect".to_owned()), "{args:?}");

        let log = std::env::temp_dir().join(format!("shop-helm-{}-{replica}.log", ns.name()));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(operator_binary());
        command
            .args(&args)
            .env_clear()
            .env(
                "KUBECONFIG",
                kubeconfig_as_service_account(ns.name(), &service_account),
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        for var in container.env.iter().flatten() {
            let field = var
                .value_from
                .as_ref()
                .and_then(|from| from.field_ref.as_ref())
                .map(|field| field.field_path.as_str());
            let value = match (var.value.as_deref(), field) {
                (Some(value), _) => value.to_owned(),
                (None, Some("metadata.namespace")) => ns.name().to_owned(),
                (None, Some("metadata.name")) => replica.to_owned(),
                _ => panic!("an environment variable the test cannot provide: {var:?}"),
            };
            command.env(&var.name, value);
        }
        let child = command.spawn().expect("start the operator binary");
        let operator = LocalOperator {
            child: Some(child),
            metrics,
            log,
        };
        let deadline = Instant::now() + TIMEOUT;
        while operator.get("/readyz").await.map(|(status, _)| status) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "the operator never became ready:\n{}",
                operator.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        operator
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A GET on the operator's HTTP port: status and body, `None` while it does not answer.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(([127, 0, 0, 1], self.metrics).into(), path).await
    }

    async fn successful_reconciles(&self) -> u64 {
        successful_reconciles(&self.get("/metrics").await.unwrap_or_default().1)
    }

    /// Waits until it has reconciled at least `count` times successfully.
    async fn wait_for_reconciles(&self, count: u64) {
        let deadline = Instant::now() + TIMEOUT;
        while self.successful_reconciles().await < count {
            assert!(
                Instant::now() < deadline,
                "fewer than {count} successful reconciles:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// SIGTERM, as Kubernetes stops a pod, and waits for a clean exit.
    async fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        run_ok("kill", &["-TERM", &child.id().to_string()]);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not stop within 30 s of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            status.success(),
            "the operator exited with {status}:\n{}",
            self.logs()
        );
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Drop for LocalOperator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            eprintln!("the operator's last log lines:");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Lets a failed life-cycle test's namespace go: removes the ShopServices' finalizers (the
/// operator is gone by then) and deletes the test's PersistentVolumes. Disarmed on success.
struct ReleaseOnFailure {
    namespace: String,
    armed: bool,
}

impl Drop for ReleaseOnFailure {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        release_namespace_from_drop(&self.namespace, Duration::ZERO);
    }
}

fn volume_selector(namespace: &str) -> ListParams {
    ListParams::default().labels(&format!("shop-e2e/namespace={namespace}"))
}

/// The resourceVersion of every ShopService and of every object the operator made for them
/// (and of the database volume claims), by kind and name.
async fn shop_versions(ns: &TestNamespace) -> BTreeMap<String, String> {
    async fn add<K>(ns: &TestNamespace, selector: &str, into: &mut BTreeMap<String, String>)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let list = ns
            .api::<K>()
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list");
        for object in list.items {
            into.insert(
                format!("{}/{}", K::kind(&()), object.name_any()),
                object.resource_version().unwrap_or_default(),
            );
        }
    }
    // Every child carries the instance label of its ShopService.
    let children = "app.kubernetes.io/instance";
    let mut all = BTreeMap::new();
    add::<ShopService>(ns, "", &mut all).await; // every ShopService
    add::<Deployment>(ns, children, &mut all).await;
    add::<StatefulSet>(ns, children, &mut all).await;
    add::<Service>(ns, children, &mut all).await;
    add::<ServiceAccount>(ns, children, &mut all).await;
    add::<NetworkPolicy>(ns, children, &mut all).await;
    add::<Secret>(ns, children, &mut all).await;
    add::<ConfigMap>(ns, children, &mut all).await;
    add::<PersistentVolumeClaim>(ns, "", &mut all).await;
    // The operator chart's own objects carry the label too; they are not the shop.
    all.retain(|key, _| !key.contains(OPERATOR_RELEASE));
    all
}

/// [`shop_versions`] once the controllers' status writes have stopped.
async fn settled_versions(ns: &TestNamespace) -> BTreeMap<String, String> {
    let deadline = Instant::now() + TIMEOUT;
    let mut before = shop_versions(ns).await;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = shop_versions(ns).await;
        if now == before {
            return now;
        }
        assert!(Instant::now() < deadline, "the shop never settled");
        before = now;
    }
}

async fn passwords(ns: &TestNamespace, names: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let mut all = BTreeMap::new();
    for name in names {
        let secret = ns
            .api::<Secret>()
            .get(&format!("{name}-db-credentials"))
            .await
            .expect("the credentials Secret");
        all.insert(name.to_string(), secret.data.unwrap()["password"].0.clone());
    }
    all
}

async fn wait_all_ready(ns: &TestNamespace, names: &[String]) -> Result<()> {
    for name in names {
        wait_for(
            &ns.api::<ShopService>(),
            name,
            "Ready at its current generation",
            TIMEOUT,
            |shop: Option<&ShopService>| {
                shop.and_then(|s| Some((s, s.status.as_ref()?)))
                    .is_some_and(|(shop, status)| {
                        status.observed_generation == shop.metadata.generation
                            && status
                                .conditions
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                    })
            },
        )
        .await?;
    }
    Ok(())
}

/// The pod-template hashes of the operator Deployment's ReplicaSets.
async fn operator_template_hashes(ns: &TestNamespace) -> BTreeSet<String> {
    ns.api::<ReplicaSet>()
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/name=shop-operator,app.kubernetes.io/instance={OPERATOR_RELEASE}"
        )))
        .await
        .expect("list ReplicaSets")
        .items
        .iter()
        .filter_map(|rs| rs.labels().get("pod-template-hash").cloned())
        .collect()
}

fn cpu_request(deployment: &Deployment) -> Option<String> {
    let pod = deployment.spec.as_ref()?.template.spec.as_ref()?;
    let requests = pod.containers[0].resources.as_ref()?.requests.as_ref()?;
    Some(requests.get("cpu")?.0.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_upgrade_uninstall_and_reinstall_keep_the_shop() -> Result<()> {
    if !tools_present(&["helm", "kubectl"]) {
        return Ok(());
    }
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let started = Instant::now();
    let ns = harness.namespace("helm-life").await?;
    let mut release_on_failure = ReleaseOnFailure {
        namespace: ns.name().to_owned(),
        armed: true,
    };
    let namespace = ns.name();
    install_crd();

    // The operator, watching this namespace only (namespaced Roles), as users install it.
    let operator_values = ["--set", "watch.scope=Namespace"];
    let mut install = vec![
        "install",
        OPERATOR_RELEASE,
        OPERATOR_CHART,
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "180s",
    ];
    install.extend_from_slice(&operator_values);
    let notes = run_ok("helm", &install);
    assert!(
        notes.contains(&format!(
            "reconciles ShopServices in namespace {namespace} only"
        )),
        "{notes}"
    );
    let operator = LocalOperator::start(&ns, "first").await;

    // The whole shop, from the shop chart.
    let example = std::fs::read_to_string(repository_file("examples/shop.yaml")).unwrap();
    let shops: Vec<ShopService> = kube_harness::parse_manifests(&example)?
        .into_iter()
        .map(|o| serde_json::from_value(serde_json::to_value(o).unwrap()).unwrap())
        .collect();
    let names: Vec<String> = shops.iter().map(|s| s.name_any()).collect();
    let databases: Vec<&str> = shops
        .iter()
        .filter(|s| s.spec.database.mode == DatabaseMode::Dedicated)
        .map(|s| s.metadata.name.as_deref().unwrap())
        .collect();
    provide_volumes(&harness, ns.name(), &shops).await?;
    run_ok(
        "helm",
        &["install", "shop", SHOP_CHART, "--namespace", namespace],
    );
    wait_all_ready(&ns, &names).await?;
    let ready_after = started.elapsed();
    // The HPA scales an autoscaled Deployment up to its minimum on its own schedule; the
    // shop has settled only once it has (and the operator has reported it).
    for shop in &shops {
        if let Some(autoscaling) = &shop.spec.autoscaling {
            wait_for(
                &ns.api::<ShopService>(),
                &shop.name_any(),
                "ready replicas at the autoscaling minimum",
                TIMEOUT,
                |s: Option<&ShopService>| {
                    s.and_then(|s| s.status.as_ref()?.ready_replicas)
                        .is_some_and(|ready| ready >= autoscaling.min_replicas)
                },
            )
            .await?;
        }
    }
    let shop = settled_versions(&ns).await;
    let first_passwords = passwords(&ns, &databases).await;
    operator.stop().await;

    // Upgrade with a changed value: the operator's pods roll, the shop is not touched.
    let hashes_before = operator_template_hashes(&ns).await;
    let mut upgrade = vec![
        "upgrade",
        OPERATOR_RELEASE,
        OPERATOR_CHART,
        "--namespace",
        namespace,
        "--wait",
        "--timeout",
        "180s",
        "--set",
        "resources.requests.cpu=100m",
    ];
    upgrade.extend_from_slice(&operator_values);
    run_ok("helm", &upgrade);
    let deployments = ns.api::<Deployment>();
    let upgraded = deployments.get(OPERATOR_RELEASE).await.unwrap();
    assert_eq!(cpu_request(&upgraded).as_deref(), Some("100m"));
    let status = upgraded.status.clone().unwrap();
    assert_eq!(status.observed_generation, upgraded.metadata.generation);
    assert_eq!(status.updated_replicas, Some(2), "both replicas rolled");
    let hashes_after = operator_template_hashes(&ns).await;
    assert!(
        hashes_after.difference(&hashes_before).count() == 1,
        "a new pod template: {hashes_before:?} → {hashes_after:?}"
    );
    assert_eq!(
        shop_versions(&ns).await,
        shop,
        "helm upgrade touched the shop"
    );
    // The upgraded operator (its new arguments) adopts the shop without rewriting it.
    let operator = LocalOperator::start(&ns, "upgraded").await;
    operator.wait_for_reconciles(names.len() as u64).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        shop_versions(&ns).await,
        shop,
        "the upgraded operator rewrote the shop"
    );
    operator.stop().await;

    // Uninstall: the operator's objects go; the CRD, the ShopServices and their data stay.
    run_ok(
        "helm",
        &[
            "uninstall",
            OPERATOR_RELEASE,
            "--namespace",
            namespace,
            "--wait",
        ],
    );
    wait_for_deletion(&deployments, OPERATOR_RELEASE, TIMEOUT).await?;
    assert!(
        ns.api::<ServiceAccount>()
            .get_opt(OPERATOR_RELEASE)
            .await
            .unwrap()
            .is_none(),
        "the release's ServiceAccount is gone"
    );
    harness
        .api::<CustomResourceDefinition>()
        .get(CRD_NAME)
        .await
        .expect("the CRD outlives the release");
    assert_eq!(
        shop_versions(&ns).await,
        shop,
        "helm uninstall touched the shop"
    );
    assert_eq!(passwords(&ns, &databases).await, first_passwords);

    // Reinstall: the new operator finds everything as it was and changes nothing.
    let mut reinstall = install.clone();
    reinstall.extend_from_slice(&["--set", "resources.requests.cpu=100m"]);
    run_ok("helm", &reinstall);
    let operator = LocalOperator::start(&ns, "reinstalled").await;
    operator.wait_for_reconciles(names.len() as u64).await;
    wait_all_ready(&ns, &names).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        shop_versions(&ns).await,
        shop,
        "the reinstalled operator rewrote the shop"
    );
    assert_eq!(
        passwords(&ns, &databases).await,
        first_passwords,
        "no password changed"
    );
    eprintln!(
        "the shop was Ready {ready_after:?} after the install; the whole life cycle took {:?}",
        started.elapsed()
    );

    // Clean up as a user would: the shop first (the operator finishes each deletion), then
    // the operator.
    run_ok("helm", &["uninstall", "shop", "--namespace", namespace]);
    for name in &names {
        wait_for_deletion(&ns.api::<ShopService>(), name, TIMEOUT).await?;
    }
    operator.stop().await;
    run_ok(
        "helm",
        &[
            "uninstall",
            OPERATOR_RELEASE,
            "--namespace",
            namespace,
            "--wait",
        ],
    );
    release_on_failure.armed = false;
    harness
        .api::<PersistentVolume>()
        .delete_collection(&DeleteParams::default(), &volume_selector(namespace))
        .await
        .expect("delete the test's PersistentVolumes");
    ns.cleanup().await
}
