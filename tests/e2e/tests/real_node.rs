//! The whole shop on real pods: the cluster of `tests/cluster/cluster.sh up --real-node` (a
//! real kubelet, containerd, runc, CNI bridge, kube-proxy, kube-router and CoreDNS), the images
//! of `cluster.sh images`, and both charts installed the way the README's "On the local test
//! cluster" section says. Run inside the node's network namespace:
//!
//! ```sh
//! tests/cluster/cluster.sh up --real-node && tests/cluster/cluster.sh images
//! tests/cluster/cluster.sh exec cargo test -p shop-e2e --test real_node
//! ```
//!
//! One test, in steps that build on each other (an install of the whole shop takes a minute on
//! two cores; doing it once per check would take the suite's time budget). Without the real
//! node (`SHOP_REAL_NODE` unset) it says SKIPPED and passes, except under `CI=true`, where it
//! fails. The kwok tier skips it by name (`--skip real_node_`).

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use shop_contracts::test_cards::{DECLINED as DECLINED_CARD, SUCCEEDS as GOOD_CARD};

const OPERATOR_NAMESPACE: &str = "shop-system";
const SHOP_NAMESPACE: &str = "shop";
const CANARY_NAMESPACE: &str = "netpol-canary";
/// The whole shop Ready, on a busy two-core node.
const SHOP_READY: Duration = Duration::from_secs(300);
const EVENTS_ARRIVE: Duration = Duration::from_secs(60);
const BUSYBOX: &str = "localhost/shop/busybox:1";

/// The README's install commands, with the images `cluster.sh images` loaded.
const INSTALL_OPERATOR: &[&str] = &[
    "install",
    "shop-operator",
    "charts/shop-operator",
    "-n",
    OPERATOR_NAMESPACE,
    "--create-namespace",
    "--set",
    "image.tag=e2e",
    "--set",
    "postgresImage=localhost/shop/postgres:17",
    "--set",
    "tests.image=localhost/shop/busybox:1",
    "--wait",
    "--timeout",
    "3m",
];
const INSTALL_SHOP: &[&str] = &[
    "install",
    "shop",
    "charts/shop",
    "-n",
    SHOP_NAMESPACE,
    "--create-namespace",
    "--set",
    "nats.image.repository=localhost/shop/nats",
    "--set",
    "nats.image.tag=2.10.24",
    "--set",
    "tests.image=localhost/shop/busybox:1",
];
/// The second tag of the shop image that `cluster.sh images` loads: a rolling update to it
/// changes every pod of the Deployment.
const ROLLOUT_IMAGE: &str = "ghcr.io/shop-dev/shop:e2e-rollout";
/// What the gateway logs for each failed connection it retries (shop_kit::client).
const RETRY_LOG: &str = "upstream connection failed; retrying";

fn run(program: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .current_dir(shop_e2e::repository_file(""))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn ok(program: &str, args: &[&str]) -> String {
    let (success, text) = run(program, args);
    assert!(success, "{program} {}:\n{text}", args.join(" "));
    text
}

fn kubectl(args: &[&str]) -> String {
    ok("kubectl", args)
}

fn step(what: &str, started: Instant) {
    eprintln!("[real-node {:>4}s] {what}", started.elapsed().as_secs());
}

/// What the cluster shows when something does not become ready: every pod, and the events.
fn cluster_state() -> String {
    let (_, pods) = run("kubectl", &["get", "pods", "-A", "-o", "wide"]);
    let (_, events) = run(
        "kubectl",
        &["get", "events", "-A", "--sort-by=.lastTimestamp"],
    );
    let tail: Vec<&str> = events.lines().rev().take(40).collect();
    format!(
        "{pods}\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// Fails at once, naming the pod, when the node cannot run what was asked: an image that is
/// not loaded (nothing can be pulled here) or a node without room.
fn fail_fast_on_unschedulable_or_unpullable() {
    let (_, events) = run(
        "kubectl",
        &[
            "get",
            "events",
            "-A",
            "-o",
            "jsonpath={range .items[*]}{.reason} {.involvedObject.namespace}/{.involvedObject.name}: {.message}{\"\\n\"}{end}",
        ],
    );
    for line in events.lines() {
        assert!(
            !line.contains("Insufficient cpu") && !line.contains("Insufficient memory"),
            "the node has no room for the shop: {line}\n(requests must fit one 2-core node)"
        );
        assert!(
            !line.contains("ErrImagePull") && !line.contains("ErrImageNeverPull"),
            "an image is not loaded into the node (tests/cluster/cluster.sh images): {line}"
        );
    }
}

fn wait_shop_ready(started: Instant) {
    let deadline = Instant::now() + SHOP_READY;
    loop {
        fail_fast_on_unschedulable_or_unpullable();
        let (ready, _) = run(
            "kubectl",
            &[
                "wait",
                "--for=condition=Ready",
                "shopservice",
                "--all",
                "-n",
                SHOP_NAMESPACE,
                "--timeout=10s",
            ],
        );
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shop was not Ready within {SHOP_READY:?}:\n{}\n{}",
            kubectl(&["get", "shopservices", "-n", SHOP_NAMESPACE]),
            cluster_state()
        );
    }
    step("every ShopService Ready", started);
}

fn json_of(args: &[&str]) -> Value {
    serde_json::from_str(&kubectl(args)).expect("kubectl prints JSON")
}

/// Every pod of the shop runs on the real node, its containers ready, and every init container
/// (the `migrate` step) exited 0.
fn check_real_pods() {
    let pods = json_of(&["get", "pods", "-n", SHOP_NAMESPACE, "-o", "json"]);
    let items = pods["items"].as_array().expect("a pod list");
    assert!(items.len() >= 18, "the whole shop: {} pods", items.len());
    let mut migrations = 0;
    for pod in items {
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        if pod["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        assert_eq!(
            pod["status"]["phase"], "Running",
            "{name}: {}",
            pod["status"]
        );
        assert_eq!(
            pod["spec"]["nodeName"], "shop-node",
            "{name} on the real node"
        );
        for container in pod["status"]["containerStatuses"].as_array().unwrap() {
            assert_eq!(container["ready"], true, "{name}: {container}");
            assert!(
                container["containerID"]
                    .as_str()
                    .unwrap()
                    .starts_with("containerd://")
            );
        }
        for init in pod["status"]["initContainerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(init["state"]["terminated"]["exitCode"], 0, "{name}: {init}");
            migrations += 1;
        }
    }
    assert!(
        migrations >= 8,
        "the migrate init containers ran: {migrations}"
    );
    let claims = json_of(&["get", "pvc", "-n", SHOP_NAMESPACE, "-o", "json"]);
    for claim in claims["items"].as_array().unwrap() {
        assert_eq!(
            claim["status"]["phase"], "Bound",
            "{}",
            claim["metadata"]["name"]
        );
    }
}

/// The gateway's Service address (`http://ip:port`): the test runs inside the node's network
/// namespace, where kube-proxy translates it.
fn gateway() -> String {
    let ip = kubectl(&[
        "get",
        "service",
        "gateway",
        "-n",
        SHOP_NAMESPACE,
        "-o",
        "jsonpath={.spec.clusterIP}:{.spec.ports[0].port}",
    ]);
    format!("http://{ip}")
}

struct Shop {
    client: reqwest::Client,
    /// The gateway's Service: the storefront's pages and the catalog's pictures.
    web: String,
    /// The public API under it.
    api: String,
}

/// A page or picture as a browser gets it: status, `Content-Type` and body.
struct Page {
    status: StatusCode,
    content_type: String,
    body: String,
}

struct Customer {
    email: String,
    token: String,
}

const PASSWORD: &str = "correct horse battery";

impl Shop {
    fn new() -> Shop {
        let web = gateway();
        Shop {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                // As a browser would see them: a redirect is an answer of its own.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            api: format!("{web}/api"),
            web,
        }
    }

    /// `path` (from the root, not under /api) through the gateway.
    async fn page(&self, path: &str) -> Page {
        let response = self
            .client
            .get(format!("{}{path}", self.web))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e:#}"));
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Page {
            status: response.status(),
            content_type,
            body: response.text().await.unwrap_or_default(),
        }
    }

    async fn get(&self, path: &str, customer: Option<&Customer>) -> (StatusCode, Value) {
        let mut request = self.client.get(format!("{}{path}", self.api));
        if let Some(customer) = customer {
            request = request.bearer_auth(&customer.token);
        }
        let response = request.send().await.expect("the gateway answers");
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn sign_in(&self, email: &str) -> Option<Customer> {
        let response = self
            .client
            .post(format!("{}/auth/login", self.api))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        let tokens: Value = response.json().await.ok()?;
        Some(Customer {
            email: email.into(),
            token: tokens["access_token"].as_str()?.into(),
        })
    }

    async fn register(&self, name: &str) -> Customer {
        let email = format!("{name}-{}@example.com", std::process::id());
        let created = self
            .client
            .post(format!("{}/users", self.api))
            .json(&json!({"email": email, "password": PASSWORD, "name": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "registering {email}");
        self.sign_in(&email).await.expect("a new customer signs in")
    }

    async fn set_cart(&self, customer: &Customer, product: &str, quantity: u32) {
        let response = self
            .client
            .put(format!("{}/cart/items/{product}", self.api))
            .bearer_auth(&customer.token)
            .json(&json!({ "quantity": quantity }))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    }

    async fn available(&self, product: &str) -> i64 {
        let (_, stock) = self.get(&format!("/stock/{product}"), None).await;
        stock["available"].as_i64().expect("a stock level")
    }

    async fn checkout(&self, customer: &Customer, card: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .post(format!("{}/orders", self.api))
            .bearer_auth(&customer.token)
            .header(
                "Idempotency-Key",
                format!("{}-{card}-{}", customer.email, std::process::id()),
            )
            .json(&json!({
                "shipping_address": {"name": "Ada Lovelace", "line1": "12 Analytical Row",
                    "city": "Berlin", "postal_code": "10115", "country": "DE"},
                "payment": {"card_number": card, "exp_month": 12, "exp_year": 2031, "cvc": "123"}
            }))
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }
}

async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The customer journey: register, sign in, search, cart, checkout with the good card and
/// with a declined one. Returns the customer's e-mail (later steps sign in again).
async fn customer_journey(shop: &Shop) -> String {
    let customer = shop.register("real-node").await;
    // Tokens from either user replica are accepted wherever they are checked (each sign-in
    // lands on a replica at random; every replica must publish the key that signed it).
    for _ in 0..8 {
        let token = shop.sign_in(&customer.email).await.expect("signs in");
        let (status, cart) = shop.get("/cart", Some(&token)).await;
        assert_eq!(status, StatusCode::OK, "a fresh token is accepted: {cart}");
    }
    let (status, found) = shop.get("/products?q=almanac&limit=5", None).await;
    assert_eq!(status, StatusCode::OK, "{found}");
    let items = found["items"].as_array().expect("search results");
    assert!(
        !items.is_empty(),
        "the search finds the seed catalog's almanac"
    );
    let product = items[0]["id"].as_str().unwrap().to_owned();

    let before = shop.available(&product).await;
    shop.set_cart(&customer, &product, 2).await;
    let (status, order) = shop.checkout(&customer, GOOD_CARD).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["status"], "CONFIRMED", "{order}");
    assert_eq!(shop.available(&product).await, before - 2, "stock lowered");
    let tracking = order["tracking_number"]
        .as_str()
        .expect("a tracking number");
    let (status, shipment) = shop
        .get(&format!("/shipments/{tracking}"), Some(&customer))
        .await;
    assert_eq!(status, StatusCode::OK, "{shipment}");
    let order_id = order["id"].as_str().unwrap().to_owned();
    // The events over NATS: the cart emptied, a notification recorded.
    eventually(
        "the cart emptied by order.confirmed",
        EVENTS_ARRIVE,
        || async {
            let (_, cart) = shop.get("/cart", Some(&customer)).await;
            cart["items"].as_array()?.is_empty().then_some(())
        },
    )
    .await;
    eventually("a notification of the order", EVENTS_ARRIVE, || async {
        let (_, notes) = shop.get("/notifications", Some(&customer)).await;
        notes.to_string().contains(&order_id).then_some(())
    })
    .await;

    // A declined card: 402, the order FAILED, the stock back, the cart kept.
    let before = shop.available(&product).await;
    shop.set_cart(&customer, &product, 1).await;
    let (status, failed) = shop.checkout(&customer, DECLINED_CARD).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{failed}");
    let (_, orders) = shop.get("/orders", Some(&customer)).await;
    assert!(
        orders.to_string().contains("FAILED"),
        "the declined order is FAILED: {orders}"
    );
    assert_eq!(shop.available(&product).await, before, "stock restored");
    let (_, cart) = shop.get("/cart", Some(&customer)).await;
    assert_eq!(
        cart["items"].as_array().map(Vec::len),
        Some(1),
        "cart kept: {cart}"
    );
    customer.email
}

/// The web shop through the gateway's Service: the storefront's pages (which it builds from the
/// API, calling the gateway through the NetworkPolicies) and the catalog's pictures (the
/// gateway's `/images` route). Returns what to report.
async fn web_shop(shop: &Shop) -> String {
    let home = shop.page("/").await;
    assert_eq!(home.status, StatusCode::OK, "GET /: {}", home.body);
    assert!(
        home.content_type.starts_with("text/html"),
        "GET /: {}",
        home.content_type
    );
    // The greeting is the template's; the categories and featured products on the same 200
    // page came from the catalog through the gateway (without them the page is a 503).
    assert!(
        home.body.contains("Welcome to shop"),
        "the storefront's home page: {}",
        home.body
    );

    let (status, products) = shop.get("/products?limit=1", None).await;
    assert_eq!(status, StatusCode::OK, "{products}");
    let product = &products["items"][0];
    let id = product["id"].as_str().expect("a product id");
    let page = shop.page(&format!("/product/{id}")).await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "GET /product/{id}: {}",
        page.body
    );
    assert!(
        page.content_type.starts_with("text/html"),
        "{}",
        page.content_type
    );
    assert!(
        page.body.contains(id),
        "the product page is the product's (its add-to-cart form): {}",
        page.body
    );

    let image_url = product["image_url"].as_str().expect("an image_url");
    assert!(
        image_url.starts_with("/images/"),
        "a picture of the catalog's: {image_url}"
    );
    let picture = shop.page(image_url).await;
    assert_eq!(picture.status, StatusCode::OK, "GET {image_url}");
    assert_eq!(picture.content_type, "image/svg+xml", "GET {image_url}");
    assert!(
        picture.body.contains("<svg"),
        "GET {image_url}: {}",
        picture.body
    );
    format!(
        "the web shop: / ({} bytes of HTML), /product/{id}, and {image_url} through the gateway",
        home.body.len()
    )
}

/// How long a probe pod may take to start. Seconds as a rule; more on a machine still busy
/// from the image import before the first one.
const PROBE_POD_READY: Duration = Duration::from_secs(120);

/// A throwaway pod (restricted profile) that can try TCP connections from inside a namespace.
fn probe_pod(namespace: &str, name: &str, labels: &str, command: &str) {
    let manifest = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
  "metadata": {{"name": "{name}", "namespace": "{namespace}", "labels": {labels}}},
  "spec": {{"terminationGracePeriodSeconds": 0, "automountServiceAccountToken": false,
    "securityContext": {{"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                         "seccompProfile": {{"type": "RuntimeDefault"}}}},
    "containers": [{{"name": "probe", "image": "{BUSYBOX}", "imagePullPolicy": "Never",
      "command": ["/bin/busybox", "sh", "-c", "{command}"],
      "resources": {{"requests": {{"cpu": "5m", "memory": "8Mi"}}, "limits": {{"memory": "32Mi"}}}},
      "securityContext": {{"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                           "capabilities": {{"drop": ["ALL"]}}}}}}]}}}}"#
    );
    let path = std::env::temp_dir().join(format!("shop-real-node-{name}.json"));
    std::fs::write(&path, manifest).unwrap();
    kubectl(&["apply", "-f", path.to_str().unwrap()]);
    wait_pod_ready(namespace, name, PROBE_POD_READY);
}

/// Waits for pod `namespace/name` to be Ready; if it is not within `timeout`, fails with why
/// ([`pod_diagnosis`]).
fn wait_pod_ready(namespace: &str, name: &str, timeout: Duration) {
    let (ready, output) = run(
        "kubectl",
        &[
            "wait",
            "--for=condition=Ready",
            &format!("pod/{name}"),
            "-n",
            namespace,
            &format!("--timeout={}s", timeout.as_secs()),
        ],
    );
    assert!(
        ready,
        "pod {namespace}/{name} not Ready within {timeout:?}: {output}\n{}",
        pod_diagnosis(namespace, name)
    );
}

/// Why a pod is not Ready, in few lines: its conditions and container states, its events, and
/// what the kubelet and containerd logged about it (the node's logs, from `cluster.sh env`).
fn pod_diagnosis(namespace: &str, name: &str) -> String {
    let (_, status) = run(
        "kubectl",
        &[
            "get",
            "pod",
            name,
            "-n",
            namespace,
            "-o",
            "jsonpath=node={.spec.nodeName} phase={.status.phase}\
             {range .status.conditions[*]} {.type}={.status}({.reason}){end}\
             {range .status.containerStatuses[*]} {.name}: {.state}{end}",
        ],
    );
    let (_, events) = run(
        "kubectl",
        &[
            "get",
            "events",
            "-n",
            namespace,
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ],
    );
    let mut report = format!("pod: {status}\nevents:\n{events}");
    if let Some(logs) = std::env::var_os("SHOP_NODE_LOGS") {
        for daemon in ["kubelet", "containerd"] {
            let file = std::path::Path::new(&logs).join(format!("{daemon}.log"));
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(namespace) && l.contains(name))
                .collect();
            let tail = &lines[lines.len().saturating_sub(12)..];
            report.push_str(&format!(
                "{daemon} ({}):\n{}\n",
                file.display(),
                tail.join("\n")
            ));
        }
    }
    report
}

/// Whether a TCP connection from the pod to `host:port` opens within 3 s.
fn connects(namespace: &str, pod: &str, host: &str, port: u16) -> bool {
    run(
        "kubectl",
        &[
            "exec",
            "-n",
            namespace,
            pod,
            "--",
            "/bin/busybox",
            "sh",
            "-c",
            &format!("/bin/busybox nc -w 3 {host} {port} </dev/null"),
        ],
    )
    .0
}

/// Proves the engine enforces at all before any test relies on it: a connection that works
/// stops working under a deny-all policy.
fn network_policy_canary() {
    kubectl(&["create", "namespace", CANARY_NAMESPACE]);
    kubectl(&[
        "label",
        "namespace",
        CANARY_NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    probe_pod(
        CANARY_NAMESPACE,
        "server",
        r#"{"app": "server"}"#,
        "exec /bin/busybox httpd -f -p 8080 -h /",
    );
    probe_pod(
        CANARY_NAMESPACE,
        "client",
        "{}",
        "exec /bin/busybox sleep 3600",
    );
    let server = kubectl(&[
        "get",
        "pod",
        "server",
        "-n",
        CANARY_NAMESPACE,
        "-o",
        "jsonpath={.status.podIP}",
    ]);
    assert!(
        connects(CANARY_NAMESPACE, "client", &server, 8080),
        "pod to pod does not work at all (CNI bridge?)"
    );
    let policy = std::env::temp_dir().join("shop-real-node-deny.json");
    std::fs::write(
        &policy,
        format!(
            r#"{{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
  "metadata": {{"name": "deny-all", "namespace": "{CANARY_NAMESPACE}"}},
  "spec": {{"podSelector": {{}}, "policyTypes": ["Ingress"]}}}}"#
        ),
    )
    .unwrap();
    kubectl(&["apply", "-f", policy.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while connects(CANARY_NAMESPACE, "client", &server, 8080) {
        assert!(
            Instant::now() < deadline,
            "NetworkPolicy not enforced: a deny-all policy left pod-to-pod traffic open for 30 s \
             (is kube-router running? see the node's logs/kube-router.log)"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    kubectl(&["delete", "namespace", CANARY_NAMESPACE, "--wait=false"]);
}

/// A steady load on the catalog through the gateway's Service: `workers` loops of
/// `GET /api/products`, until [`Load::finish`]. Every answer that is not 200 is a failure.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    fn start(shop: &Shop, workers: usize) -> Load {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = (0..workers)
            .map(|_| {
                let (stop, client) = (stop.clone(), shop.client.clone());
                let url = format!("{}/products?limit=5", shop.api);
                tokio::spawn(async move {
                    let (mut requests, mut failures) = (0, Vec::new());
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        requests += 1;
                        match client.get(&url).send().await {
                            Ok(response) if response.status() == StatusCode::OK => {}
                            Ok(response) => failures.push(format!(
                                "{}: {}",
                                response.status(),
                                response.text().await.unwrap_or_default()
                            )),
                            Err(e) => failures.push(format!("{e:#}")),
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    (requests, failures)
                })
            })
            .collect();
        Load { stop, workers }
    }

    /// Stops the load; the number of requests made and the failures seen.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (mut requests, mut failures) = (0, Vec::new());
        for worker in self.workers {
            let (n, mut failed) = worker.await.unwrap();
            requests += n;
            failures.append(&mut failed);
        }
        (requests, failures)
    }
}

const SHARED_NAMESPACE: &str = "shared-db";
const SHARED_SERVER: &str = "shared-pg";
/// The shared server's admin password: a test's, on a server that lives for one step.
const SHARED_PASSWORD: &str = "shared-admin-pw";

/// A CA, and a certificate it signed for the shared server's Service name, made by `openssl`
/// in `dir` (as tests/postgres.sh makes the test server's).
fn shared_server_certificates(dir: &std::path::Path) {
    let host = format!("{SHARED_SERVER}.{SHARED_NAMESPACE}.svc");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    let (ca_key, ca_crt) = (file("ca.key"), file("ca.crt"));
    ca.extend([
        "-days",
        "2",
        "-subj",
        "/CN=shop real-node shared server CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca_crt,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    ok("openssl", &ca);
    let (key, csr, crt, ext) = (
        file("tls.key"),
        file("tls.csr"),
        file("tls.crt"),
        file("tls.ext"),
    );
    let subject = format!("/CN={host}");
    let mut request = vec!["req"];
    request.extend(ec);
    request.extend(["-subj", &subject, "-keyout", &key, "-out", &csr]);
    ok("openssl", &request);
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=DNS:{host},DNS:{host}.cluster.local\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    ok(
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ],
    );
}

/// `sql` run by psql as the shared server's superuser, its rows unaligned (`a|b`).
fn shared_server_sql(sql: &str) -> String {
    kubectl(&[
        "exec",
        "-n",
        SHARED_NAMESPACE,
        SHARED_SERVER,
        "--",
        "psql",
        "-h",
        "/var/run/postgresql",
        "-U",
        "postgres",
        "-Atc",
        sql,
    ])
}

/// A Shared database on a PostgreSQL server that speaks TLS, set up as docs/shared-databases.md
/// says: the admin URL with `sslmode=verify-full` and the CA under `ca.crt`, and the operator
/// chart's NetworkPolicy opened to the server (`networkPolicy.extraEgress`). The operator
/// creates the role and the database over verified TLS; the service's pods, given only the
/// CA the operator mounts, migrate (init container) and turn Ready (the readiness probe pings
/// the database), and the server shows their sessions encrypted. With `deletionPolicy: Delete`,
/// deleting the ShopService drops the database over TLS again.
fn shared_database_over_tls() -> String {
    let dir = std::env::temp_dir().join("shop-real-node-shared-tls");
    shared_server_certificates(&dir);
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();

    kubectl(&["create", "namespace", SHARED_NAMESPACE]);
    kubectl(&[
        "label",
        "namespace",
        SHARED_NAMESPACE,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    kubectl(&[
        "create",
        "secret",
        "generic",
        "shared-pg-tls",
        "-n",
        SHARED_NAMESPACE,
        &format!("--from-file=tls.crt={}", path("tls.crt")),
        &format!("--from-file=tls.key={}", path("tls.key")),
    ]);
    // PostgreSQL takes a key owned by root only when no one but root and its group can read
    // it: 0640, the group being the pod's fsGroup (postgres).
    let server = format!(
        r#"{{"apiVersion": "v1", "kind": "List", "items": [
  {{"apiVersion": "v1", "kind": "Pod",
    "metadata": {{"name": "{SHARED_SERVER}", "namespace": "{SHARED_NAMESPACE}", "labels": {{"app": "{SHARED_SERVER}"}}}},
    "spec": {{"terminationGracePeriodSeconds": 0, "enableServiceLinks": false, "automountServiceAccountToken": false,
      "securityContext": {{"runAsNonRoot": true, "runAsUser": 70, "runAsGroup": 70, "fsGroup": 70,
                           "seccompProfile": {{"type": "RuntimeDefault"}}}},
      "containers": [{{"name": "postgres", "image": "localhost/shop/postgres:17", "imagePullPolicy": "Never",
        "args": ["-c", "ssl=on", "-c", "ssl_cert_file=/tls/tls.crt", "-c", "ssl_key_file=/tls/tls.key"],
        "env": [{{"name": "POSTGRES_PASSWORD", "value": "{SHARED_PASSWORD}"}}],
        "ports": [{{"name": "postgres", "containerPort": 5432}}],
        "readinessProbe": {{"exec": {{"command": ["pg_isready", "-h", "127.0.0.1", "-U", "postgres"]}}, "periodSeconds": 2}},
        "resources": {{"requests": {{"cpu": "50m", "memory": "64Mi"}}, "limits": {{"memory": "256Mi"}}}},
        "securityContext": {{"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                             "capabilities": {{"drop": ["ALL"]}}}},
        "volumeMounts": [{{"name": "tls", "mountPath": "/tls", "readOnly": true}},
                         {{"name": "data", "mountPath": "/var/lib/postgresql/data"}},
                         {{"name": "socket", "mountPath": "/var/run/postgresql"}},
                         {{"name": "tmp", "mountPath": "/tmp"}}]}}],
      "volumes": [{{"name": "tls", "secret": {{"secretName": "shared-pg-tls", "defaultMode": 416}}}},
                  {{"name": "data", "emptyDir": {{"sizeLimit": "256Mi"}}}},
                  {{"name": "socket", "emptyDir": {{"sizeLimit": "1Mi"}}}},
                  {{"name": "tmp", "emptyDir": {{"sizeLimit": "16Mi"}}}}]}}}},
  {{"apiVersion": "v1", "kind": "Service",
    "metadata": {{"name": "{SHARED_SERVER}", "namespace": "{SHARED_NAMESPACE}"}},
    "spec": {{"selector": {{"app": "{SHARED_SERVER}"}}, "ports": [{{"port": 5432, "targetPort": "postgres"}}]}}}}]}}"#
    );
    let manifest = dir.join("server.json");
    std::fs::write(&manifest, server).unwrap();
    kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    wait_pod_ready(SHARED_NAMESPACE, SHARED_SERVER, Duration::from_secs(120));

    // The operator reaches the server only once its chart's NetworkPolicy lets it.
    let egress = format!(
        r#"[{{"to": [{{"namespaceSelector": {{"matchLabels": {{"kubernetes.io/metadata.name": "{SHARED_NAMESPACE}"}}}},
                 "podSelector": {{"matchLabels": {{"app": "{SHARED_SERVER}"}}}}}}],
          "ports": [{{"protocol": "TCP", "port": 5432}}]}}]"#
    );
    ok(
        "helm",
        &[
            "upgrade",
            "shop-operator",
            "charts/shop-operator",
            "-n",
            OPERATOR_NAMESPACE,
            "--reuse-values",
            "--set-json",
            &format!(
                "networkPolicy.extraEgress={}",
                egress.split_whitespace().collect::<String>()
            ),
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    let admin_url = format!(
        "url=postgres://postgres:{SHARED_PASSWORD}@{SHARED_SERVER}.{SHARED_NAMESPACE}.svc:5432/postgres?sslmode=verify-full"
    );
    kubectl(&[
        "create",
        "secret",
        "generic",
        "shared-pg-admin",
        "-n",
        SHOP_NAMESPACE,
        &format!("--from-literal={admin_url}"),
        &format!("--from-file=ca.crt={}", path("ca.crt")),
    ]);
    let service = format!(
        r#"{{"apiVersion": "shop.dev/v1alpha1", "kind": "ShopService",
  "metadata": {{"name": "catalog-tls", "namespace": "{SHOP_NAMESPACE}"}},
  "spec": {{"component": "catalog", "replicas": 1,
    "database": {{"mode": "Shared", "sharedServerSecret": "shared-pg-admin", "deletionPolicy": "Delete"}}}}}}"#
    );
    let manifest = dir.join("catalog-tls.json");
    std::fs::write(&manifest, service).unwrap();
    kubectl(&["apply", "-f", manifest.to_str().unwrap()]);
    let (ready, _) = run(
        "kubectl",
        &[
            "wait",
            "--for=condition=Ready",
            "shopservice/catalog-tls",
            "-n",
            SHOP_NAMESPACE,
            "--timeout=180s",
        ],
    );
    assert!(
        ready,
        "catalog-tls on the shared server over TLS was not Ready:\n{}\n{}",
        kubectl(&[
            "get",
            "shopservice",
            "catalog-tls",
            "-n",
            SHOP_NAMESPACE,
            "-o",
            "jsonpath={.status.conditions}"
        ]),
        cluster_state()
    );

    // The service's URI names the CA the pods mount, and verifies the host.
    let uri = kubectl(&[
        "get",
        "secret",
        "catalog-tls-db-credentials",
        "-n",
        SHOP_NAMESPACE,
        "-o",
        "go-template={{.data.uri | base64decode}}",
    ]);
    assert!(
        uri.ends_with("?sslmode=verify-full&sslrootcert=/etc/shop/database-ca/ca.crt"),
        "the service's URI: {}",
        uri.split('@').nth(1).unwrap_or_default()
    );
    // Every session of the service's role on the server is encrypted, and there is one: the
    // pod's pool.
    let sessions = shared_server_sql(
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.usename LIKE 'shop\\_shop\\_catalog\\_tls%'",
    );
    let (encrypted, all) = sessions.trim().split_once('|').expect("two counts");
    assert!(
        all.parse::<u32>().unwrap() > 0 && encrypted == all,
        "the service's sessions on the shared server (encrypted|all): {sessions}"
    );

    // Deleted with `deletionPolicy: Delete`: the operator drops the database over TLS.
    kubectl(&[
        "delete",
        "shopservice",
        "catalog-tls",
        "-n",
        SHOP_NAMESPACE,
        "--timeout=120s",
    ]);
    let databases =
        shared_server_sql("SELECT count(*) FROM pg_database WHERE datname LIKE 'shop\\_%'");
    assert_eq!(databases.trim(), "0", "the service's database was dropped");
    kubectl(&["delete", "secret", "shared-pg-admin", "-n", SHOP_NAMESPACE]);
    kubectl(&["delete", "namespace", SHARED_NAMESPACE, "--wait=false"]);
    format!(
        "Shared database over TLS: created over verify-full by the operator, {all} encrypted session(s) of the pods, dropped on delete"
    )
}

/// How many failed connections to the catalog the gateway has retried so far, from its pods'
/// logs.
fn gateway_retries_of_catalog() -> usize {
    let logs = kubectl(&[
        "logs",
        "-n",
        SHOP_NAMESPACE,
        "-l",
        "app.kubernetes.io/instance=gateway,app.kubernetes.io/name=gateway",
        "--tail=-1",
    ]);
    logs.lines()
        .filter(|line| line.contains(RETRY_LOG) && line.contains(r#""upstream":"catalog""#))
        .count()
}

/// One field of each of the catalog's pods (terminating ones too), e.g. `.metadata.name`.
fn catalog_pods(field: &str) -> Vec<String> {
    kubectl(&[
        "get",
        "pods",
        "-n",
        SHOP_NAMESPACE,
        "-l",
        "app.kubernetes.io/instance=catalog,app.kubernetes.io/name=catalog",
        "-o",
        &format!("jsonpath={{.items[*]{field}}}"),
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// The catalog's Deployment settled: every replica updated, available, and no old pod left.
fn catalog_settled() -> bool {
    let text = kubectl(&[
        "get",
        "deployment",
        "catalog",
        "-n",
        SHOP_NAMESPACE,
        "-o",
        "jsonpath={.spec.replicas} {.status.updatedReplicas} {.status.availableReplicas} {.status.replicas}",
    ]);
    let numbers: Vec<&str> = text.split(' ').collect();
    numbers.len() == 4 && numbers.iter().all(|n| *n == numbers[0])
}

/// Rolls the catalog to a new image tag under a steady load, then deletes one of its pods by
/// hand under load: no request may fail. Returns what to report.
async fn catalog_under_load(shop: &Shop) -> String {
    assert!(
        catalog_settled(),
        "the catalog is settled before the rollout"
    );
    let retries_before = gateway_retries_of_catalog();
    let load = Load::start(shop, 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rollout = Instant::now();
    kubectl(&[
        "patch",
        "shopservice",
        "catalog",
        "-n",
        SHOP_NAMESPACE,
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"spec":{{"image":"{ROLLOUT_IMAGE}"}}}}"#),
    ]);
    eventually(
        "the catalog's pods on the new tag",
        Duration::from_secs(180),
        || async {
            let images = catalog_pods(".spec.containers[0].image");
            (catalog_settled()
                && !images.is_empty()
                && images.iter().all(|image| image == ROLLOUT_IMAGE))
            .then_some(())
        },
    )
    .await;
    let rollout_took = rollout.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (requests, failures) = load.finish().await;
    let retries_rollout = gateway_retries_of_catalog().saturating_sub(retries_before);
    assert!(requests > 100, "a steady load: only {requests} requests");
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed during the catalog's rolling update: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    let load = Load::start(shop, 4);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim = catalog_pods(".metadata.name").remove(0);
    kubectl(&[
        "delete",
        "pod",
        &victim,
        "-n",
        SHOP_NAMESPACE,
        "--wait=false",
    ]);
    eventually(
        "the deleted catalog pod replaced",
        Duration::from_secs(120),
        || async {
            (catalog_settled() && !catalog_pods(".metadata.name").contains(&victim)).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (deleted_requests, failures) = load.finish().await;
    let retries_deleted =
        gateway_retries_of_catalog().saturating_sub(retries_before + retries_rollout);
    assert!(
        failures.is_empty(),
        "{} of {deleted_requests} requests failed after catalog pod {victim} was deleted: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    format!(
        "catalog rolled to a new tag in {rollout_took:.1?} under load: 0 of {requests} requests \
         failed ({retries_rollout} connections retried by the gateway); pod {victim} deleted under \
         load: 0 of {deleted_requests} failed ({retries_deleted} retried)"
    )
}

/// `helm test` of a release: its chart's test pod runs and passes. (A passed test pod is
/// deleted at once, hook-succeeded; a failed one stays, and its log is the message.)
fn helm_test(release: &str, namespace: &str, pod: &str) {
    let (passed, output) = run(
        "helm",
        &["test", release, "-n", namespace, "--timeout", "2m"],
    );
    if !passed {
        let (_, logs) = run("kubectl", &["logs", pod, "-n", namespace]);
        panic!("helm test {release} failed:\n{output}\ntest pod {pod}:\n{logs}");
    }
}

fn leader() -> String {
    kubectl(&[
        "get",
        "lease",
        "shop-operator",
        "-n",
        OPERATOR_NAMESPACE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
}

fn deployment_replicas(name: &str) -> (String, String) {
    let text = kubectl(&[
        "get",
        "deployment",
        name,
        "-n",
        SHOP_NAMESPACE,
        "-o",
        "jsonpath={.spec.replicas} {.status.readyReplicas}",
    ]);
    let (spec, ready) = text.split_once(' ').unwrap_or((&text, ""));
    (spec.to_owned(), ready.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_node_the_whole_shop_on_real_pods() {
    if std::env::var_os("SHOP_REAL_NODE").is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no real node (run inside `tests/cluster/cluster.sh exec` after `up --real-node`)"
        );
        eprintln!("SKIPPED: no real node (tests/cluster/cluster.sh up --real-node)");
        return;
    }
    let started = Instant::now();
    network_policy_canary();
    step(
        "canary: the NetworkPolicy engine enforces a deny-all policy",
        started,
    );

    ok("helm", INSTALL_OPERATOR);
    let operators = json_of(&["get", "pods", "-n", OPERATOR_NAMESPACE, "-o", "json"]);
    assert_eq!(
        operators["items"].as_array().unwrap().len(),
        2,
        "two operator replicas"
    );
    step("operator chart installed: two replicas Running", started);
    ok("helm", INSTALL_SHOP);
    wait_shop_ready(started);
    check_real_pods();
    step(
        "real pods: Running, probes passed, migrations exited 0, volumes Bound",
        started,
    );

    let shop = Shop::new();
    let email = customer_journey(&shop).await;
    step(
        "customer journey: CONFIRMED with the good card, FAILED with a declined one",
        started,
    );
    let report = web_shop(&shop).await;
    step(&report, started);

    let report = shared_database_over_tls();
    step(&report, started);

    // NetworkPolicy on the shop: a stranger pod reaches the gateway, not payment's internal
    // API nor any database. (The order service reaching payment is the checkout above.)
    probe_pod(
        SHOP_NAMESPACE,
        "stranger",
        "{}",
        "exec /bin/busybox sleep 3600",
    );
    assert!(
        connects(SHOP_NAMESPACE, "stranger", "gateway", 8080),
        "the gateway is open"
    );
    assert!(
        !connects(SHOP_NAMESPACE, "stranger", "payment", 8080),
        "payment is closed"
    );
    assert!(
        !connects(SHOP_NAMESPACE, "stranger", "storefront", 8080),
        "the storefront is reached through the gateway only"
    );
    // Every database there is: the Services of the PostgreSQL pods (`<name>-db`; their
    // headless governing Services, `<name>-db-headless`, lead to the same pods).
    let databases = kubectl(&[
        "get",
        "services",
        "-n",
        SHOP_NAMESPACE,
        "-l",
        "app.kubernetes.io/name=postgresql",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let databases: Vec<&str> = databases
        .split_whitespace()
        .filter(|name| !name.ends_with("-headless"))
        .collect();
    assert_eq!(
        databases.len(),
        8,
        "examples/shop.yaml's eight databases: {databases:?}"
    );
    for db in databases {
        assert!(
            !connects(SHOP_NAMESPACE, "stranger", db, 5432),
            "{db} is closed to strangers"
        );
    }
    kubectl(&[
        "delete",
        "pod",
        "stranger",
        "-n",
        SHOP_NAMESPACE,
        "--wait=false",
    ]);
    step(
        "NetworkPolicy: payment, the storefront and every database closed to a stranger pod",
        started,
    );

    // The charts' own test pods (templates/tests/).
    helm_test(
        "shop-operator",
        OPERATOR_NAMESPACE,
        "shop-operator-test-metrics",
    );
    helm_test("shop", SHOP_NAMESPACE, "shop-test-gateway");
    step(
        "helm test: the operator's metrics and readiness, the gateway's upstreams, catalog and home page",
        started,
    );

    let report = catalog_under_load(&shop).await;
    step(&report, started);

    // The operator's leader pod deleted: the other replica takes over and carries out a
    // change made meanwhile.
    let old = leader();
    let change = Instant::now();
    kubectl(&[
        "delete",
        "pod",
        &old,
        "-n",
        OPERATOR_NAMESPACE,
        "--wait=false",
    ]);
    kubectl(&[
        "patch",
        "shopservice",
        "shipping",
        "-n",
        SHOP_NAMESPACE,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":2}}"#,
    ]);
    eventually(
        "the change carried out by the new leader",
        Duration::from_secs(90),
        || async {
            let (spec, ready) = deployment_replicas("shipping");
            (spec == "2" && ready == "2").then_some(())
        },
    )
    .await;
    let new = leader();
    assert_ne!(new, old, "another replica holds the lease");
    step(
        &format!(
            "leader {old} deleted: {new} took over; change done in {:?}",
            change.elapsed()
        ),
        started,
    );

    // The user service's database pod deleted: it comes back with its data.
    kubectl(&[
        "delete",
        "pod",
        "user-db-0",
        "-n",
        SHOP_NAMESPACE,
        "--wait=true",
    ]);
    eventually(
        "the customer signs in after the database pod came back",
        Duration::from_secs(120),
        || shop.sign_in(&email),
    )
    .await;
    step(
        "user-db-0 deleted: back with its data (the account signs in)",
        started,
    );

    // helm uninstall keeps the retained databases' volumes; a reinstall finds the data.
    ok(
        "helm",
        &[
            "uninstall",
            "shop",
            "-n",
            SHOP_NAMESPACE,
            "--wait",
            "--timeout",
            "3m",
        ],
    );
    eventually(
        "Delete removes notification's volume",
        Duration::from_secs(60),
        || async {
            let claims = kubectl(&["get", "pvc", "-n", SHOP_NAMESPACE, "-o", "name"]);
            (!claims.contains("data-notification-db-0")).then_some(())
        },
    )
    .await;
    let claims = kubectl(&["get", "pvc", "-n", SHOP_NAMESPACE, "-o", "name"]);
    assert!(
        claims.contains("data-user-db-0"),
        "the retained volume stays: {claims}"
    );
    ok("helm", INSTALL_SHOP);
    wait_shop_ready(started);
    let shop = Shop::new();
    eventually(
        "the customer signs in after the reinstall",
        Duration::from_secs(60),
        || shop.sign_in(&email),
    )
    .await;
    step(
        "uninstall and reinstall: the retained data is found",
        started,
    );
}

/// The shop image built here (`cluster.sh images`) holds what the `Dockerfile`'s final stage
/// puts in the image `docker build` makes: the same files, user, entrypoint, command, ports
/// and labels.
#[test]
fn real_node_image_matches_the_dockerfile() {
    let Some(images) = std::env::var_os("SHOP_IMAGES_DIR") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "no images (SHOP_IMAGES_DIR; run inside `tests/cluster/cluster.sh exec`)"
        );
        eprintln!("SKIPPED: no images built (tests/cluster/cluster.sh images)");
        return;
    };
    let describe = |what: &str, path: &str| -> Value {
        let text = ok("python3", &["tests/cluster/oci_layout.py", what, path]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what} {path}: {e}: {text}"))
    };
    let archive = std::path::Path::new(&images).join("shop.tar");
    let from_dockerfile = describe("describe", "Dockerfile");
    let built_here = describe("inspect", archive.to_str().unwrap());
    assert_eq!(
        from_dockerfile["files"],
        json!([
            "/usr/local/bin/shop",
            "/usr/local/bin/shop-operator",
            "/usr/share/doc/shop/sbom/shop-operator.cdx.json",
            "/usr/share/doc/shop/sbom/shop.cdx.json"
        ]),
        "the Dockerfile's files as the test expects them"
    );
    assert_eq!(
        built_here, from_dockerfile,
        "the image built here drifted from the Dockerfile"
    );
}
