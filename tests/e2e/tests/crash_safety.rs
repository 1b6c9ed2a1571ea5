//! The operator binary as a process of its own, killed with SIGKILL: no shutdown code runs,
//! as when its node dies. Whatever point a kill lands on, a restarted operator must converge
//! with no lost or rotated password, no duplicate and no orphaned child; a standby replica
//! must take over from a killed leader. Also the backlog on `/metrics` of a real process.
//!
//! The kill points are random but seeded: the seed is printed, and `SHOP_CRASH_SEED=<seed>`
//! replays the same choices (timing on a busy machine still varies). Every other kill lands a
//! few milliseconds after the operator creates its n-th child, which hits the short windows
//! inside a reconcile (credentials Secret applied, StatefulSet not yet) far more often than a
//! kill at a random time: an operator that regenerated the password when the StatefulSet was
//! missing failed this test in 8 runs out of 8 so. `SHOP_E2E_KEEP_LOGS=1` keeps the
//! operator's log of a passing run (a failing one prints it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use kube_harness::{Harness, Result, TestNamespace, wait_for, wait_for_deletion};
use serde_json::json;
use shop_e2e::{
    OperatorProcess, TEST_IMAGE, delete_volumes, install_crd, kube_error, provide_volumes,
    release_namespace_from_drop, repository_file,
};
use shop_operator::build::common::{MANAGER, names};
use shop_operator::build::{self, Children};
use shop_operator::crd::{DatabaseMode, ShopService};

const TIMEOUT: Duration = Duration::from_secs(120);
/// How many times the operator is killed before it may finish.
const KILLS: u64 = 12;
/// The longest an operator runs before its kill. Here it starts reconciling 0.1–0.3 s after
/// its launch (client, checks, caches) and a restarted operator settles the whole shop in
/// 1–2 s, so kills land in start-up, mid-rollout and after it.
const MAX_RUN_MS: u64 = 3000;
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// splitmix64: a few lines of well-known arithmetic, enough for reproducible test choices.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

fn seed() -> u64 {
    match std::env::var("SHOP_CRASH_SEED") {
        Ok(seed) => seed.trim().parse().expect("SHOP_CRASH_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_nanos() as u64,
    }
}

/// What a failed test leaves for its reader and for the cluster: the operator's log and the
/// seed on stderr, and its namespace released (finalizers removed, volumes deleted) so that
/// it can be deleted without an operator. Disarmed when the test passes.
struct OnFailure {
    namespace: String,
    log: PathBuf,
    seed: Option<u64>,
    armed: bool,
}

impl OnFailure {
    fn new(namespace: &str, log: &Path, seed: Option<u64>) -> OnFailure {
        OnFailure {
            namespace: namespace.into(),
            log: log.into(),
            seed,
            armed: true,
        }
    }

    /// The test passed: its log goes too, unless `SHOP_E2E_KEEP_LOGS` is set.
    fn disarm(mut self) {
        self.armed = false;
        if std::env::var_os("SHOP_E2E_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

impl Drop for OnFailure {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(300)..].join("\n");
        eprintln!(
            "--- the operator's log (last 300 lines; all of it in {}) ---\n{tail}",
            self.log.display()
        );
        if let Some(seed) = self.seed {
            eprintln!("--- replay with SHOP_CRASH_SEED={seed} ---");
        }
        release_namespace_from_drop(&self.namespace, Duration::ZERO);
    }
}

fn log_file(ns: &TestNamespace) -> PathBuf {
    std::env::temp_dir().join(format!("shop-e2e-{}.log", ns.name()))
}

fn append_log(log: &Path, line: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the log");
    let now = k8s_openapi::jiff::Timestamp::now();
    writeln!(file, "{now} {line}").expect("write the log");
}

fn is_ready(shop: &ShopService) -> bool {
    shop.status.as_ref().is_some_and(|s| {
        s.observed_generation == shop.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

async fn wait_ready(ns: &TestNamespace, name: &str) -> Result<ShopService> {
    wait_for(
        &ns.api::<ShopService>(),
        name,
        "Ready at its current generation",
        TIMEOUT,
        |shop: Option<&ShopService>| shop.is_some_and(is_ready),
    )
    .await
}

async fn shop_services(ns: &TestNamespace) -> Result<Vec<ShopService>> {
    Ok(ns
        .api::<ShopService>()
        .list(&ListParams::default())
        .await
        .map_err(kube_error("list the ShopServices"))?
        .items)
}

async fn patch_spec(ns: &TestNamespace, name: &str, spec: serde_json::Value) -> Result<()> {
    ns.api::<ShopService>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .map_err(kube_error("patch a ShopService"))?;
    Ok(())
}

/// A change a user could make mid-rollout, drawn at random: a new image for one service
/// (every child's rollout), autoscaling on or off for the cart (an HPA created or pruned),
/// one or two shipping pods (a PodDisruptionBudget created or pruned).
async fn change_something(ns: &TestNamespace, random: &mut Random, round: u64) -> Result<String> {
    let shops = shop_services(ns).await?;
    let change = match random.below(3) {
        0 => {
            let shop = &shops[random.below(shops.len() as u64) as usize];
            let image = format!("example.org/{}:{round}", shop.name_any());
            patch_spec(ns, &shop.name_any(), json!({"image": image})).await?;
            format!("image of {} to {image}", shop.name_any())
        }
        1 => {
            let cart = shops.iter().find(|s| s.name_any() == "cart").expect("cart");
            let autoscaling = match cart.spec.autoscaling {
                Some(_) => serde_json::Value::Null,
                None => {
                    json!({"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70})
                }
            };
            let on = !autoscaling.is_null();
            patch_spec(ns, "cart", json!({"autoscaling": autoscaling})).await?;
            format!("autoscaling of cart {}", if on { "on" } else { "off" })
        }
        _ => {
            let shipping = shops
                .iter()
                .find(|s| s.name_any() == "shipping")
                .expect("shipping");
            let replicas = if shipping.spec.replicas == 1 { 2 } else { 1 };
            patch_spec(ns, "shipping", json!({"replicas": replicas})).await?;
            format!("shipping to {replicas} replicas")
        }
    };
    Ok(change)
}

/// Reports every child the operator creates from now on (kind/name), so that a kill can land
/// right after a creation: between the credentials Secret and the StatefulSet, say, which a
/// kill at a random time rarely hits.
struct Creations {
    created: tokio::sync::mpsc::UnboundedReceiver<String>,
    watches: Vec<tokio::task::JoinHandle<()>>,
}

impl Creations {
    /// Starts watching; returns once every watch has listed what exists already.
    async fn watch(ns: &TestNamespace) -> Creations {
        let (sender, created) = tokio::sync::mpsc::unbounded_channel();
        let mut listed = Vec::new();
        let mut watches = Vec::new();
        let mut add = |(watch, done)| {
            watches.push(watch);
            listed.push(done);
        };
        add(watch_kind(ns.api::<Secret>(), sender.clone()));
        add(watch_kind(ns.api::<StatefulSet>(), sender.clone()));
        add(watch_kind(ns.api::<Deployment>(), sender.clone()));
        add(watch_kind(ns.api::<Service>(), sender.clone()));
        add(watch_kind(ns.api::<NetworkPolicy>(), sender.clone()));
        add(watch_kind(
            ns.api::<HorizontalPodAutoscaler>(),
            sender.clone(),
        ));
        add(watch_kind(ns.api::<PodDisruptionBudget>(), sender));
        for done in listed {
            let _ = done.await;
        }
        Creations { created, watches }
    }
}

impl Drop for Creations {
    fn drop(&mut self) {
        self.watches.iter().for_each(|watch| watch.abort());
    }
}

type Watch = (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<()>,
);

fn watch_kind<K>(api: kube::Api<K>, sender: tokio::sync::mpsc::UnboundedSender<String>) -> Watch
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    use futures::StreamExt;
    use kube::runtime::watcher::{self, Event};
    let (done, listed) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(async move {
        let config = watcher::Config::default().labels(&format!("{MANAGED_BY}={MANAGER}"));
        let mut events = std::pin::pin!(watcher::watcher(api, config));
        let mut seen = BTreeSet::new();
        let mut done = Some(done);
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::InitApply(object)) => {
                    seen.insert(object.meta().uid.clone());
                }
                Ok(Event::InitDone) => {
                    if let Some(done) = done.take() {
                        let _ = done.send(());
                    }
                }
                Ok(Event::Apply(object)) if seen.insert(object.meta().uid.clone()) => {
                    let _ = sender.send(format!("{}/{}", K::kind(&()), object.name_any()));
                }
                _ => {}
            }
        }
    });
    (watch, listed)
}

/// Records the password of every credentials Secret (and the namespace's service key) the
/// first time it is seen, and fails if one changed since, or if a Secret's `uri` does not
/// carry its password.
async fn check_passwords(
    ns: &TestNamespace,
    seen: &mut BTreeMap<String, Vec<u8>>,
    when: &str,
) -> Result<()> {
    let secrets = ns
        .api::<Secret>()
        .list(&ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER}")))
        .await
        .map_err(kube_error("list the Secrets"))?;
    for secret in secrets.items {
        let name = secret.name_any();
        let data = secret.data.unwrap_or_default();
        if name == names::SERVICE_KEY_SECRET {
            // The namespace's key for the services' internal calls: made once, never changed
            // (running pods hold it), whatever the kills.
            let key = data
                .get("key")
                .unwrap_or_else(|| panic!("{when}: Secret {name} has no key"))
                .0
                .clone();
            let first = seen.entry(name.clone()).or_insert_with(|| key.clone());
            assert!(*first == key, "{when}: the service key changed");
            continue;
        }
        let password = data
            .get("password")
            .unwrap_or_else(|| panic!("{when}: Secret {name} has no password"))
            .0
            .clone();
        let uri = String::from_utf8(data.get("uri").map(|u| u.0.clone()).unwrap_or_default())
            .expect("a UTF-8 uri");
        let password_text = String::from_utf8(password.clone()).expect("a UTF-8 password");
        assert!(
            !password_text.is_empty() && uri.contains(&format!(":{password_text}@")),
            "{when}: the uri of Secret {name} carries its password"
        );
        let first = seen.entry(name.clone()).or_insert_with(|| password.clone());
        // Never print a password, even a test's.
        assert!(
            *first == password,
            "{when}: the password in Secret {name} changed"
        );
    }
    Ok(())
}

/// Every kind the operator makes, listed by its label: kind/name → metadata.
async fn operator_children(ns: &TestNamespace) -> BTreeMap<String, ObjectMeta> {
    async fn collect<K>(ns: &TestNamespace, into: &mut BTreeMap<String, ObjectMeta>)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let list = ns
            .api::<K>()
            .list(&ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER}")))
            .await
            .expect("list the operator's children");
        for object in list.items {
            let key = format!("{}/{}", K::kind(&()), object.name_any());
            assert!(
                into.insert(key.clone(), object.meta().clone()).is_none(),
                "{key} listed twice"
            );
        }
    }
    let mut all = BTreeMap::new();
    collect::<Deployment>(ns, &mut all).await;
    collect::<StatefulSet>(ns, &mut all).await;
    collect::<Service>(ns, &mut all).await;
    collect::<ServiceAccount>(ns, &mut all).await;
    collect::<NetworkPolicy>(ns, &mut all).await;
    collect::<HorizontalPodAutoscaler>(ns, &mut all).await;
    collect::<PodDisruptionBudget>(ns, &mut all).await;
    collect::<Secret>(ns, &mut all).await;
    collect::<ConfigMap>(ns, &mut all).await;
    all
}

fn key<K: Resource<DynamicType = ()>>(object: &K) -> (String, ObjectMeta) {
    let meta = object.meta().clone();
    (
        format!("{}/{}", K::kind(&()), meta.name.clone().unwrap_or_default()),
        meta,
    )
}

/// What the operator's own builders say the namespace should hold, for the ShopServices as
/// they are now and the passwords already in their Secrets.
fn desired_children(
    shops: &[ShopService],
    passwords: &BTreeMap<String, Vec<u8>>,
) -> (BTreeMap<String, ObjectMeta>, BTreeMap<String, Children>) {
    let mut objects = BTreeMap::new();
    let mut by_shop = BTreeMap::new();
    let shared: Vec<Arc<ShopService>> = shops.iter().cloned().map(Arc::new).collect();
    for shop in shops {
        let secret = names::credentials_secret(&shop.name_any());
        let password = passwords
            .get(&secret)
            .map(|p| String::from_utf8(p.clone()).expect("a UTF-8 password"));
        let context = build::Context {
            default_image: TEST_IMAGE,
            postgres_image: build::database::DEFAULT_POSTGRES_IMAGE,
            namespace_services: &shared,
            database_password: password.as_deref(),
        };
        let children = build::children(shop, &context).expect("the children build");
        let mut add = |(key, meta): (String, ObjectMeta)| {
            assert!(objects.insert(key.clone(), meta).is_none(), "{key} twice");
        };
        add(key(&children.service_account));
        add(key(&children.deployment));
        add(key(&children.service));
        add(key(&children.network_policy));
        children
            .horizontal_pod_autoscaler
            .iter()
            .for_each(|o| add(key(o)));
        children
            .pod_disruption_budget
            .iter()
            .for_each(|o| add(key(o)));
        children.route_table.iter().for_each(|o| add(key(o)));
        if let Some(database) = &children.database {
            add(key(&database.stateful_set));
            add(key(&database.service));
            add(key(&database.governing_service));
            add(key(&database.network_policy));
            add(key(&database.credentials));
        }
        by_shop.insert(shop.name_any(), children);
    }
    // The namespace's service key, which no one ShopService controls.
    if !shops.is_empty() {
        objects.insert(
            format!("Secret/{}", names::SERVICE_KEY_SECRET),
            ObjectMeta::default(),
        );
    }
    (objects, by_shop)
}

fn controller_of(meta: &ObjectMeta) -> Vec<OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .filter(|r| r.controller == Some(true))
        .cloned()
        .collect()
}

fn pod_image(deployment: &Deployment) -> Option<String> {
    deployment.spec.as_ref()?.template.spec.as_ref()?.containers[0]
        .image
        .clone()
}

/// The children are exactly the desired set (none missing, none extra), each controlled by
/// the ShopService (uid and all) its builder names, with the image of its current spec; and
/// each Dedicated database has one claim.
async fn check_children(ns: &TestNamespace, passwords: &BTreeMap<String, Vec<u8>>) -> Result<()> {
    let shops = shop_services(ns).await?;
    let (desired, by_shop) = desired_children(&shops, passwords);
    let actual = operator_children(ns).await;
    let desired_keys: BTreeSet<&String> = desired.keys().collect();
    let actual_keys: BTreeSet<&String> = actual.keys().collect();
    let missing: Vec<_> = desired_keys.difference(&actual_keys).collect();
    let orphans: Vec<_> = actual_keys.difference(&desired_keys).collect();
    assert!(missing.is_empty(), "children missing: {missing:?}");
    assert!(
        orphans.is_empty(),
        "children no ShopService wants: {orphans:?}"
    );
    for (key, meta) in &actual {
        assert_eq!(
            controller_of(meta),
            controller_of(&desired[key]),
            "{key} is controlled by the ShopService that wants it, uid and all"
        );
    }
    let deployments = ns.api::<Deployment>();
    for (name, children) in &by_shop {
        let deployment = deployments
            .get(name)
            .await
            .map_err(kube_error("get a Deployment"))?;
        assert_eq!(
            pod_image(&deployment),
            pod_image(&children.deployment),
            "{name}: the Deployment runs the image of the current spec"
        );
    }
    let claims: BTreeSet<String> = ns
        .api::<PersistentVolumeClaim>()
        .list(&ListParams::default())
        .await
        .map_err(kube_error("list the claims"))?
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    let wanted_claims: BTreeSet<String> = shops
        .iter()
        .filter(|s| s.spec.database.mode == DatabaseMode::Dedicated)
        .map(|s| format!("data-{}-db-0", s.name_any()))
        .collect();
    assert_eq!(claims, wanted_claims, "one claim per Dedicated database");
    Ok(())
}

/// The operator's own entries in an object's managedFields: what it applied and when its
/// apply last changed the object. Another controller's status write leaves them alone.
fn operator_entries(meta: &ObjectMeta) -> Vec<serde_json::Value> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|entry| entry.manager.as_deref() == Some(MANAGER))
        .map(|entry| serde_json::to_value(entry).expect("a managedFields entry"))
        .collect()
}

/// Kinds whose status other controllers write (the Deployment, StatefulSet, HPA and
/// disruption controllers, some on a timer): their resourceVersion moves without the
/// operator, so only its own managedFields entry tells whether it wrote.
const STATUS_WRITTEN_BY_OTHERS: [&str; 4] = [
    "Deployment/",
    "StatefulSet/",
    "HorizontalPodAutoscaler/",
    "PodDisruptionBudget/",
];

/// The children the operator wrote between `before` and `after`, with why each counts.
fn rewritten(
    before: &BTreeMap<String, ObjectMeta>,
    after: &BTreeMap<String, ObjectMeta>,
) -> Vec<String> {
    let mut written = Vec::new();
    for (key, now) in after {
        let Some(then) = before.get(key) else {
            written.push(format!("{key} is new"));
            continue;
        };
        if operator_entries(now) != operator_entries(then) {
            written.push(format!("{key}: the operator's managedFields entry changed"));
        } else if now.resource_version != then.resource_version
            && !STATUS_WRITTEN_BY_OTHERS
                .iter()
                .any(|kind| key.starts_with(kind))
        {
            written.push(format!("{key}: its resourceVersion moved"));
        }
    }
    written.extend(
        before
            .keys()
            .filter(|key| !after.contains_key(*key))
            .map(|key| format!("{key} is gone")),
    );
    written
}

/// Waits until no child changes for a few seconds: the Deployment and StatefulSet
/// controllers have written their statuses.
async fn settled_children(ns: &TestNamespace) -> BTreeMap<String, ObjectMeta> {
    let versions = |children: &BTreeMap<String, ObjectMeta>| -> Vec<Option<String>> {
        children
            .values()
            .map(|m| m.resource_version.clone())
            .collect()
    };
    let deadline = Instant::now() + TIMEOUT;
    let mut before = operator_children(ns).await;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = operator_children(ns).await;
        if versions(&now) == versions(&before) {
            return now;
        }
        assert!(Instant::now() < deadline, "the children never settled");
        before = now;
    }
}

async fn successful_reconciles(operator: &OperatorProcess) -> f64 {
    operator
        .metric(r#"shop_operator_reconciles_total{outcome="Success"}"#)
        .await
        .unwrap_or(0.0)
}

/// Waits until the operator has counted more than `than` successful reconciles: a reconcile
/// is counted after its last write, so a test that saw the write may read the count early.
async fn wait_reconciles_above(operator: &OperatorProcess, than: f64) {
    let deadline = Instant::now() + TIMEOUT;
    while successful_reconciles(operator).await <= than {
        assert!(
            Instant::now() < deadline,
            "no more than {than} successful reconciles"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn pending(operator: &OperatorProcess, reason: &str) -> Option<f64> {
    operator
        .metric(&format!(
            r#"shop_operator_shopservices_pending{{reason="{reason}"}}"#
        ))
        .await
}

/// Deletes every ShopService and waits until they are gone (their finalizer needs the
/// operator, which must be running).
async fn delete_shop_services(ns: &TestNamespace) -> Result<()> {
    let shops = ns.api::<ShopService>();
    for shop in shop_services(ns).await? {
        shops
            .delete(&shop.name_any(), &DeleteParams::background())
            .await
            .map_err(kube_error("delete a ShopService"))?;
    }
    for shop in shop_services(ns).await? {
        wait_for_deletion(&shops, &shop.name_any(), TIMEOUT).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_the_operator_converges_without_losing_a_password() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let started = Instant::now();
    let seed = seed();
    eprintln!("seed {seed}: replay with SHOP_CRASH_SEED={seed}");
    let mut random = Random(seed);
    install_crd(&harness).await?;
    let ns = harness.namespace("crash").await?;
    let log = log_file(&ns);
    let on_failure = OnFailure::new(ns.name(), &log, Some(seed));

    let yaml = std::fs::read_to_string(repository_file("examples/shop.yaml")).unwrap();
    let shops: Vec<ShopService> = kube_harness::parse_manifests(&yaml)?
        .into_iter()
        .map(|o| serde_json::from_value(serde_json::to_value(o).unwrap()).unwrap())
        .collect();
    provide_volumes(&harness, ns.name(), &shops).await?;
    ns.apply_yaml(&yaml).await?;

    // The cluster's admin identity (KUBECONFIG, inherited): this test is about crashes; the
    // RBAC is tested in tests/permissions.rs.
    let args = ["--namespace", ns.name(), "--default-image", TEST_IMAGE];
    let mut passwords = BTreeMap::new();
    let mut kill_points = Vec::new();
    for round in 1..=KILLS {
        let run_for = Duration::from_millis(random.below(MAX_RUN_MS));
        // Every other round, the kill follows the operator's n-th creation of a child (a
        // few milliseconds after its watch event), if that comes before `run_for`.
        let after_creation = (round % 2 == 1)
            .then(|| (1 + random.below(6), Duration::from_millis(random.below(10))));
        // A change before the start, one during the run, or none.
        let change_at = match random.below(3) {
            0 => Some(Duration::ZERO),
            1 if after_creation.is_none() => Some(Duration::from_millis(
                random.below(run_for.as_millis() as u64 + 1),
            )),
            _ => None,
        };
        append_log(
            &log,
            &format!(
                "=== round {round}: SIGKILL after {run_for:?} or after creation (n, delay) {after_creation:?} ==="
            ),
        );
        if change_at == Some(Duration::ZERO) {
            let change = change_something(&ns, &mut random, round).await?;
            append_log(
                &log,
                &format!("=== round {round}: before the start, {change} ==="),
            );
        }
        let mut creations = Creations::watch(&ns).await;
        let mut operator = OperatorProcess::start(&args, &[], &log);
        let began = Instant::now();
        let mut kill_point = format!("{}ms", run_for.as_millis());
        if let Some((nth, delay)) = after_creation {
            let deadline = tokio::time::Instant::from_std(began + run_for);
            let mut count = 0;
            loop {
                tokio::select! {
                    Some(created) = creations.created.recv() => {
                        count += 1;
                        if count == nth {
                            tokio::time::sleep(delay).await;
                            kill_point = format!("{}ms after creating {created}", delay.as_millis());
                            break;
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        } else {
            if let Some(at) = change_at.filter(|at| !at.is_zero()) {
                tokio::time::sleep(at).await;
                let change = change_something(&ns, &mut random, round).await?;
                append_log(&log, &format!("=== round {round}: at {at:?}, {change} ==="));
            }
            tokio::time::sleep(run_for.saturating_sub(began.elapsed())).await;
        }
        operator.kill();
        drop(creations);
        append_log(&log, &format!("=== round {round}: killed {kill_point} ==="));
        kill_points.push(kill_point);
        check_passwords(&ns, &mut passwords, &format!("after kill {round}")).await?;
    }
    eprintln!("killed the operator {KILLS} times: {kill_points:#?}");

    // Now let it finish.
    let mut operator = OperatorProcess::start(&args, &[], &log);
    let converging = Instant::now();
    operator
        .wait_ready(TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for shop in &shops {
        wait_ready(&ns, &shop.name_any()).await?;
    }
    eprintln!(
        "converged {:?} after the last restart",
        converging.elapsed()
    );
    check_passwords(&ns, &mut passwords, "after convergence").await?;
    let dedicated = shops
        .iter()
        .filter(|s| s.spec.database.mode == DatabaseMode::Dedicated)
        .count();
    assert_eq!(
        passwords.len(),
        dedicated + 1,
        "one credentials Secret per Dedicated database, and the namespace's service key"
    );
    check_children(&ns, &passwords).await?;

    // A forced reconcile of every ShopService changes nothing.
    let before = settled_children(&ns).await;
    let reconciles = successful_reconciles(&operator).await;
    let shop_api = ns.api::<ShopService>();
    for shop in &shops {
        shop_api
            .patch(
                &shop.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"shop-e2e/nudge": "1"}}})),
            )
            .await
            .map_err(kube_error("annotate a ShopService"))?;
    }
    wait_reconciles_above(&operator, reconciles + shops.len() as f64 - 1.0).await;
    // Time for any write those reconciles made to land before comparing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = rewritten(&before, &operator_children(&ns).await);
    assert!(
        written.is_empty(),
        "a forced reconcile rewrote no child: {written:#?}"
    );
    check_passwords(&ns, &mut passwords, "after the forced reconcile").await?;
    for reason in ["Retrying", "Deleting", "NewGeneration"] {
        assert_eq!(
            pending(&operator, reason).await,
            Some(0.0),
            "nothing is pending ({reason}) once converged"
        );
    }
    eprintln!("the crash-safety check took {:?}", started.elapsed());

    delete_shop_services(&ns).await?;
    operator.kill();
    delete_volumes(&harness, ns.name()).await?;
    on_failure.disarm();
    ns.cleanup().await
}

fn holder(lease: Option<&Lease>) -> Option<&str> {
    lease?.spec.as_ref()?.holder_identity.as_deref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_from_a_killed_leader() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    install_crd(&harness).await?;
    let ns = harness.namespace("crash-leader").await?;
    let log = log_file(&ns);
    let on_failure = OnFailure::new(ns.name(), &log, None);
    const LEASE_SECONDS: u64 = 3;
    let lease_duration = LEASE_SECONDS.to_string();
    let args = [
        "--namespace",
        ns.name(),
        "--default-image",
        TEST_IMAGE,
        "--leader-elect",
        "--lease-duration",
        &lease_duration,
    ];
    // The Lease goes in the test's namespace, and with it.
    let replica = |name| [("POD_NAME", name), ("POD_NAMESPACE", ns.name())];
    let leases = ns.api::<Lease>();
    let lease = shop_operator::controller::leader::LEASE_NAME;

    let mut leader = OperatorProcess::start(&args, &replica("first"), &log);
    wait_for(
        &leases,
        lease,
        "held by the first replica",
        TIMEOUT,
        |l: Option<&Lease>| holder(l) == Some("first"),
    )
    .await?;
    let mut standby = OperatorProcess::start(&args, &replica("second"), &log);
    standby
        .wait_ready(TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ns.apply_yaml(
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: cart}\nspec: {component: cart}\n",
    )
    .await?;
    wait_ready(&ns, "cart").await?;
    wait_reconciles_above(&leader, 0.0).await;
    assert_eq!(
        successful_reconciles(&standby).await,
        0.0,
        "the standby waits"
    );

    // No resignation: the standby must wait for the lease to expire, then take it.
    leader.kill();
    let killed = Instant::now();
    wait_for(
        &leases,
        lease,
        "held by the second replica",
        TIMEOUT,
        |l: Option<&Lease>| holder(l) == Some("second"),
    )
    .await?;
    let takeover = killed.elapsed();
    eprintln!("the standby held the lease {takeover:?} after the leader's SIGKILL");
    // It waits a lease duration from when it saw the last renewal, and the leader renewed
    // every third of one: never sooner than 2/3 of a lease duration after the kill (no two
    // leaders), and about 2 lease durations at most on an idle machine.
    assert!(
        takeover >= Duration::from_secs(2 * LEASE_SECONDS) / 3,
        "the standby waited for the lease to expire"
    );
    assert!(
        takeover <= Duration::from_secs(4 * LEASE_SECONDS),
        "took over within 4 lease durations"
    );
    patch_spec(&ns, "cart", json!({"image": "example.org/cart:2"})).await?;
    wait_for(
        &ns.api::<Deployment>(),
        "cart",
        "the new image, applied by the new leader",
        TIMEOUT,
        |d: Option<&Deployment>| d.and_then(pod_image).as_deref() == Some("example.org/cart:2"),
    )
    .await?;
    wait_reconciles_above(&standby, 0.0).await;

    delete_shop_services(&ns).await?;
    standby.kill();
    on_failure.disarm();
    ns.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_shop_service_counts_as_pending_on_metrics() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    install_crd(&harness).await?;
    let ns = harness.namespace("crash-metrics").await?;
    let log = log_file(&ns);
    let on_failure = OnFailure::new(ns.name(), &log, None);
    // A credentials Secret without a password: the operator refuses to replace it, so every
    // reconcile of `broken` fails until someone fixes it.
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "broken-db-credentials"},
                "stringData": {"username": "broken"},
            }))
            .unwrap(),
        )
        .await
        .map_err(kube_error("create a Secret"))?;
    ns.apply_yaml(
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: broken}\nspec: {component: cart, database: {mode: Dedicated}}\n---\napiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: fine}\nspec: {component: catalog}\n",
    )
    .await?;
    let mut operator = OperatorProcess::start(
        &["--namespace", ns.name(), "--default-image", TEST_IMAGE],
        &[],
        &log,
    );
    operator
        .wait_ready(TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_ready(&ns, "fine").await?;
    let deadline = Instant::now() + TIMEOUT;
    while pending(&operator, "Retrying").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the failing ShopService never showed as Retrying: {:?}",
            operator.get("/metrics").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(pending(&operator, "NewGeneration").await, Some(0.0));

    // The failure is in its status, once: Ready=False and Degraded=True with the reason and
    // the error, at its generation; retrying the same failure rewrites nothing.
    let shops = ns.api::<ShopService>();
    let failed = wait_for(
        &shops,
        "broken",
        "the failure in broken's status",
        TIMEOUT,
        |shop: Option<&ShopService>| {
            shop.and_then(|shop| shop.status.as_ref())
                .and_then(|status| status.conditions.iter().find(|c| c.type_ == "Ready"))
                .is_some_and(|ready| ready.reason == "CredentialsInvalid")
        },
    )
    .await?;
    let status = failed.status.as_ref().unwrap();
    assert_eq!(status.observed_generation, failed.metadata.generation);
    for (type_, value) in [("Ready", "False"), ("Degraded", "True")] {
        let condition = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
        assert_eq!(condition.status, value, "{condition:?}");
        assert_eq!(condition.reason, "CredentialsInvalid", "{condition:?}");
        assert!(
            condition.message.contains("broken-db-credentials"),
            "the message names the Secret: {condition:?}"
        );
    }
    let failures = || async {
        operator
            .metric(r#"shop_operator_reconciles_total{outcome="Failure"}"#)
            .await
            .unwrap_or(0.0)
    };
    let failures_before = failures().await;
    let deadline = Instant::now() + TIMEOUT;
    while failures().await < failures_before + 2.0 {
        assert!(Instant::now() < deadline, "broken was not retried twice");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        shops
            .get("broken")
            .await
            .map_err(kube_error("get broken"))?
            .resource_version(),
        failed.resource_version(),
        "two more failed reconciles rewrote the status"
    );

    assert_eq!(
        operator
            .metric("shop_operator_reconciles_in_flight")
            .await
            .map(|v| v >= 0.0),
        Some(true),
        "the in-flight gauge is served"
    );

    // Gone, it is no longer pending.
    delete_shop_services(&ns).await?;
    let deadline = Instant::now() + TIMEOUT;
    while pending(&operator, "Retrying").await != Some(0.0) {
        assert!(Instant::now() < deadline, "still Retrying once deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    operator.kill();
    on_failure.disarm();
    ns.cleanup().await
}

/// An operator upgrade that changes a StatefulSet field the API server never updates in place
/// (here `serviceName`, which now names the headless `<name>-db-headless`): the operator
/// deletes the old StatefulSet with the orphan cascade and creates it again, and the new one
/// adopts the pod and the volume claim, so the database keeps its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_with_a_field_that_cannot_change_is_recreated_keeping_its_claim() -> Result<()>
{
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    install_crd(&harness).await?;
    let ns = harness.namespace("crash-recreate").await?;
    let log = log_file(&ns);
    let on_failure = OnFailure::new(ns.name(), &log, None);
    ns.apply_yaml(
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: kept}\nspec: {component: cart, database: {mode: Dedicated}}\n",
    )
    .await?;
    let shop = ns
        .api::<ShopService>()
        .get("kept")
        .await
        .map_err(kube_error("get kept"))?;
    provide_volumes(&harness, ns.name(), std::slice::from_ref(&shop)).await?;

    // The StatefulSet as the operator made it before: governed by the ordinary `kept-db`.
    let context = build::Context {
        default_image: TEST_IMAGE,
        postgres_image: build::database::DEFAULT_POSTGRES_IMAGE,
        namespace_services: &[Arc::new(shop.clone())],
        database_password: Some("unused: the pod reads the Secret"),
    };
    let mut old = build::children(&shop, &context)
        .expect("the children build")
        .database
        .expect("a Dedicated database")
        .stateful_set;
    old.spec.as_mut().unwrap().service_name = Some(names::database("kept"));
    let stateful_sets = ns.api::<StatefulSet>();
    let old = stateful_sets
        .patch(
            "kept-db",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&old),
        )
        .await
        .map_err(kube_error("apply the old StatefulSet"))?;
    let claims = ns.api::<PersistentVolumeClaim>();
    let claim = wait_for(
        &claims,
        "data-kept-db-0",
        "the old StatefulSet's claim",
        TIMEOUT,
        |claim: Option<&PersistentVolumeClaim>| claim.is_some(),
    )
    .await?;

    let mut operator = OperatorProcess::start(
        &["--namespace", ns.name(), "--default-image", TEST_IMAGE],
        &[],
        &log,
    );
    operator
        .wait_ready(TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let recreated = wait_for(
        &stateful_sets,
        "kept-db",
        "governed by kept-db-headless",
        TIMEOUT,
        |stateful_set: Option<&StatefulSet>| {
            stateful_set
                .and_then(|s| s.spec.as_ref())
                .and_then(|spec| spec.service_name.as_deref())
                == Some("kept-db-headless")
        },
    )
    .await?;
    assert_ne!(recreated.uid(), old.uid(), "a new StatefulSet");
    wait_ready(&ns, "kept").await?;
    assert_eq!(
        claims
            .get("data-kept-db-0")
            .await
            .map_err(kube_error("get the claim"))?
            .uid(),
        claim.uid(),
        "the volume claim, and so the data, is the one from before"
    );
    let headless = ns
        .api::<Service>()
        .get("kept-db-headless")
        .await
        .map_err(kube_error("get the headless Service"))?;
    assert_eq!(
        headless.spec.and_then(|spec| spec.cluster_ip).as_deref(),
        Some("None")
    );
    // An Event says the StatefulSet was recreated.
    shop_e2e::wait_for_event(&ns, "kept", "Recreated").await?;

    delete_shop_services(&ns).await?;
    operator.kill();
    delete_volumes(&harness, ns.name()).await?;
    on_failure.disarm();
    ns.cleanup().await
}
