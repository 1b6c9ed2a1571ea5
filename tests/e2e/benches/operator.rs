//! The operator's speed and size against the cluster in KUBECONFIG (issue 4, "Speed and size").
//!
//! ```text
//! cargo bench -p shop-e2e --bench operator -- [--count 100] [--steady-seconds 60] [--rate 5]
//!     [--ceiling-concurrency 8] [--timeout 900] [--skip-ceiling] [--skip-converge]
//! ```
//!
//! Three measurements and their ceilings, each in a fresh namespace, with a PersistentVolume pre-created (before
//! the clock starts) for every Dedicated database:
//!
//! 1. **Ceiling**: the children of `--count` ShopServices, built by the operator's own pure
//!    build layer before the clock, are created directly with a client, `--ceiling-concurrency`
//!    ShopServices at a time (by default the operator's reconcile concurrency: its
//!    `--concurrency`, 8, or `SHOP_OPERATOR_CONCURRENCY` when set; each
//!    ShopService's objects in the operator's order, one after another, as a reconcile does),
//!    until every Deployment is available and every StatefulSet ready: what the cluster allows.
//! 2. **Converge**: the operator binary (`shop_e2e::operator_binary()`; build it with
//!    `cargo build --release -p shop-operator` and set `SHOP_OPERATOR_BIN`) runs as a process
//!    scoped to the namespace; `--count` ShopServices (Dedicated database) are created at once
//!    (same client concurrency) and the clock stops when a watch has seen every one Ready at
//!    its generation. The operator's peak RSS (VmHWM) is read at the end.
//! 3. **Steady**: a second operator process, ShopServices applied at `--rate` per second for
//!    `--steady-seconds`; the latency of each from its apply to its Ready condition. Its
//!    ceiling (unless `--skip-ceiling`): the same number of ShopServices' children created
//!    directly at the same rate, the latency of each until its pods are ready.
//!
//! Beside each ceiling and the converge, the API server's own `apiserver_request_total` over the
//! phase: everyone's writes and reads per ShopService (the controllers' and kwok's too), so the
//! operator's share of the work is a difference of two measured numbers. Writes refused with
//! 409 Conflict (a controller writing from a stale copy, then retrying) are counted apart too.
//!
//! Targets (issues 4 and 16): converge ≤ 1.25 × ceiling with ≤ 2.5 reconciles per ShopService;
//! steady p99 ≤ 2 s at 5/s; peak memory ≤ 64 MiB at
//! N = 1,000. They are printed next to the figures, not asserted: a benchmark reports.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Resource, ResourceExt};
use kube_harness::{Harness, TestNamespace};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use shop_e2e::{OperatorProcess, install_crd, operator_binary};
use shop_operator::build::common::names;
use shop_operator::build::{self, Context};
use shop_operator::controller;
use shop_operator::crd::ShopService;
use tokio::sync::mpsc;

const IMAGE: &str = "ghcr.io/shop-dev/shop:bench";
const FIELD_MANAGER: &str = "shop-bench";
const VOLUME_LABEL: &str = "shop-bench/namespace";
/// A Dedicated ShopService's children: ServiceAccount, Secret, three Services (its own, the
/// database's and the database's headless one), two NetworkPolicies, StatefulSet, Deployment.
const OBJECTS_PER_SHOP_SERVICE: usize = 9;
/// Of those, the Services that take a cluster IP (the headless one takes none), and the pods.
const CLUSTER_IPS_PER_SHOP_SERVICE: u128 = 2;
const PODS_PER_SHOP_SERVICE: i64 = 2;
/// How many PersistentVolumes, finalizer removals or deletions are sent at once outside the
/// measured windows.
const SETUP_CONCURRENCY: usize = 16;

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = Error> = std::result::Result<T, E>;

struct Args {
    count: usize,
    steady_seconds: u64,
    rate: f64,
    ceiling_concurrency: usize,
    timeout: Duration,
    skip_ceiling: bool,
    skip_converge: bool,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut args = Args {
            count: 100,
            steady_seconds: 60,
            rate: 5.0,
            // The operator's: the process inherits SHOP_OPERATOR_CONCURRENCY.
            ceiling_concurrency: std::env::var("SHOP_OPERATOR_CONCURRENCY")
                .ok()
                .and_then(|value| value.parse().ok())
                .unwrap_or(controller::DEFAULT_CONCURRENCY.into()),
            timeout: Duration::from_secs(900),
            skip_ceiling: false,
            skip_converge: false,
        };
        let mut words = std::env::args().skip(1);
        while let Some(word) = words.next() {
            let mut value = || words.next().ok_or(format!("{word} needs a value"));
            match word.as_str() {
                "--count" => args.count = value()?.parse()?,
                "--steady-seconds" => args.steady_seconds = value()?.parse()?,
                "--rate" => args.rate = value()?.parse()?,
                "--ceiling-concurrency" => args.ceiling_concurrency = value()?.parse()?,
                "--timeout" => args.timeout = Duration::from_secs(value()?.parse()?),
                "--skip-ceiling" => args.skip_ceiling = true,
                "--skip-converge" => args.skip_converge = true,
                // `cargo bench` passes `--bench` to every bench target.
                "--bench" => {}
                other => return Err(format!("unknown argument {other}").into()),
            }
        }
        Ok(args)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    let harness = Harness::connect().await?;
    install_crd(&harness).await?;
    if let Err(e) = preflight(&harness, &args).await {
        // Its lines as they are, not as a debug string.
        eprintln!("operator benchmark: {e}");
        std::process::exit(2);
    }
    println!(
        "operator benchmark: {} ShopServices (Dedicated), steady {}/s for {} s, operator {}",
        args.count,
        args.rate,
        args.steady_seconds,
        operator_binary().display()
    );
    let mut report = Vec::new();
    // Every namespace stays until the end: deleting thousands of objects while the next
    // measurement runs would load the API server under it.
    let mut namespaces = Vec::new();

    let ceiling = if args.skip_ceiling {
        None
    } else {
        let (took, requests, ns) = ceiling(&harness, &args).await?;
        namespaces.push(ns);
        report.push(row(
            "ceiling: direct create → ready",
            per_second(took, args.count),
            "",
        ));
        report.push(row(
            "ceiling: API writes / reads per ShopService",
            requests.writes_and_reads(args.count),
            "",
        ));
        Some(took)
    };
    if !args.skip_converge {
        let converged = converge(&harness, &args).await?;
        namespaces.push(converged.ns);
        let took = converged.took;
        report.push(row(
            "converge: create → all Ready",
            per_second(took, args.count),
            "",
        ));
        if let Some(ceiling) = ceiling {
            let ratio = took.as_secs_f64() / ceiling.as_secs_f64();
            report.push(row("converge / ceiling", format!("{ratio:.2}"), "≤ 1.25"));
        }
        report.push(row(
            "converge: API writes / reads per ShopService",
            converged.requests.writes_and_reads(args.count),
            "",
        ));
        report.push(row(
            "reconciles per ShopService, converge",
            converged.reconciles.per(args.count),
            "≤ 2.5",
        ));
        report.push(row(
            "operator peak RSS (VmHWM), converge",
            mib(converged.peak),
            "≤ 64 MiB at N = 1000",
        ));
    }
    if args.steady_seconds > 0 && !args.skip_ceiling {
        let (latencies, ns) = steady_ceiling(&harness, &args).await?;
        namespaces.push(ns);
        report.push(row(
            "steady ceiling: direct create → ready p50 / p99",
            format!(
                "{} / {}",
                secs(percentile(&latencies, 50)),
                secs(percentile(&latencies, 99))
            ),
            "",
        ));
    }
    if args.steady_seconds > 0 {
        let (steady, ns) = steady(&harness, &args).await?;
        namespaces.push(ns);
        report.push(row(
            "steady: ShopServices applied",
            steady.latencies.len(),
            "",
        ));
        report.push(row("steady: apply → Ready p50", secs(steady.p(50)), ""));
        report.push(row(
            "steady: apply → Ready p99",
            secs(steady.p(99)),
            // Issue 16's target is for 5 applies/s; other rates are measured, not judged.
            if args.rate <= 5.0 { "≤ 2 s" } else { "" },
        ));
        report.push(row("steady: apply → Ready max", secs(steady.p(100)), ""));
        report.push(row(
            "reconciles per ShopService, steady",
            steady.reconciles.per(steady.latencies.len()),
            "",
        ));
        report.push(row(
            "operator peak RSS (VmHWM), steady",
            mib(steady.peak),
            "",
        ));
    }

    println!(
        "\n| N = {} | measured | target |\n|---|---|---|",
        args.count
    );
    for line in report {
        println!("{line}");
    }
    for ns in namespaces {
        release(&harness, ns).await?;
    }
    Ok(())
}

fn row(what: &str, value: impl Display, target: &str) -> String {
    format!("| {what} | {value} | {target} |")
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// A phase's duration and its rate: a steady rate above the converge rate cannot be kept
/// up with, and its latencies grow with the run's length.
fn per_second(took: Duration, shop_services: usize) -> String {
    format!(
        "{} ({:.1} ShopServices/s)",
        secs(took),
        shop_services as f64 / took.as_secs_f64()
    )
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The ShopService `name` of the benchmark: a bundled service with a Dedicated database.
/// How many ShopServices the run creates in all: every namespace stays until the end.
fn shop_services_created(args: &Args) -> usize {
    let steady = (args.rate * args.steady_seconds as f64).ceil() as usize;
    // The ceilings: the converge's and the steady phase's.
    let ceiling = if args.skip_ceiling {
        0
    } else {
        args.count + steady
    };
    let converge = if args.skip_converge { 0 } else { args.count };
    ceiling + converge + steady
}

/// Before any clock: the cluster can hold what the run will create (cluster IPs from the
/// Service range, pods on the nodes), or the run stops at once saying what to change, instead
/// of running into its timeout with ShopServices that cannot become Ready.
async fn preflight(harness: &Harness, args: &Args) -> Result<()> {
    use k8s_openapi::api::core::v1::{Node, Pod, Service};
    use k8s_openapi::api::networking::v1::ServiceCIDR;
    let shop_services = shop_services_created(args);
    let mut problems = Vec::new();

    let needed_ips = shop_services as u128 * CLUSTER_IPS_PER_SHOP_SERVICE;
    match harness
        .api::<ServiceCIDR>()
        .list(&ListParams::default())
        .await
    {
        Ok(ranges) => {
            let size: u128 = ranges
                .items
                .iter()
                .flat_map(|range| {
                    range
                        .spec
                        .iter()
                        .flat_map(|spec| spec.cidrs.iter().flatten())
                })
                .filter_map(|cidr| addresses_in(cidr))
                .sum();
            let used = harness
                .api::<Service>()
                .list(&ListParams::default())
                .await?
                .items
                .iter()
                .filter(|service| {
                    service
                        .spec
                        .as_ref()
                        .and_then(|spec| spec.cluster_ip.as_deref())
                        .is_some_and(|ip| ip != "None" && !ip.is_empty())
                })
                .count() as u128;
            if used + needed_ips > size {
                problems.push(format!(
                    "the Service range holds {size} cluster IPs, {used} are taken and the run needs {needed_ips} more: give the cluster a larger one (SHOP_CLUSTER_SERVICE_CIDR=10.96.0.0/16 tests/cluster/cluster.sh up) or lower --count"
                ));
            }
        }
        Err(e) => println!("preflight: cannot read the Service range ({e}); not checked"),
    }

    let nodes = harness
        .api::<Node>()
        .list(&ListParams::default())
        .await?
        .items;
    let pod_room: i64 = nodes
        .iter()
        .filter(|node| {
            node.spec
                .as_ref()
                .is_none_or(|spec| spec.unschedulable != Some(true))
        })
        .filter_map(|node| {
            node.status
                .as_ref()?
                .allocatable
                .as_ref()?
                .get("pods")?
                .0
                .parse::<i64>()
                .ok()
        })
        .sum();
    let pods = harness
        .api::<Pod>()
        .list(&ListParams::default())
        .await?
        .items
        .len() as i64;
    let needed_pods = shop_services as i64 * PODS_PER_SHOP_SERVICE;
    if pods + needed_pods > pod_room {
        problems.push(format!(
            "the nodes have room for {pod_room} pods, {pods} exist and the run needs {needed_pods} more: add nodes (SHOP_CLUSTER_NODES=8 tests/cluster/cluster.sh up) or lower --count"
        ));
    }
    if !problems.is_empty() {
        return Err(format!(
            "the cluster cannot hold {shop_services} ShopServices:\n- {}",
            problems.join("\n- ")
        )
        .into());
    }
    println!(
        "preflight: {shop_services} ShopServices fit ({needed_ips} cluster IPs, {needed_pods} pods; room for {pod_room} pods)"
    );
    Ok(())
}

/// How many cluster IPs a CIDR such as `10.96.0.0/16` can give, less its first and last
/// address (never allocated); `None` if it does not parse.
fn addresses_in(cidr: &str) -> Option<u128> {
    let (address, prefix) = cidr.split_once('/')?;
    let bits = if address.contains(':') { 128u32 } else { 32 };
    let prefix: u32 = prefix.parse().ok()?;
    let host_bits = bits.checked_sub(prefix)?.min(64);
    Some((1u128 << host_bits).saturating_sub(2))
}

fn shop_service(name: &str) -> ShopService {
    serde_json::from_value(json!({
        "apiVersion": "shop.dev/v1alpha1",
        "kind": "ShopService",
        "metadata": {"name": name},
        "spec": {"component": "catalog", "database": {"mode": "Dedicated"}},
    }))
    .expect("a valid ShopService")
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:04}")).collect()
}

/// Before the clock starts: PersistentVolumes pre-bound to the claims the
/// StatefulSets of `shops` will make (kwok has no provisioner).
async fn provide_volumes(harness: &Harness, ns: &str, shops: &[String]) -> Result<()> {
    let volumes = harness.api::<PersistentVolume>();
    stream::iter(shops)
        .map(|shop| {
            let volumes = volumes.clone();
            async move {
                let claim = format!("data-{shop}-db-0");
                let volume: PersistentVolume = serde_json::from_value(json!({
                    "metadata": {"name": format!("{ns}-{claim}"), "labels": {VOLUME_LABEL: ns}},
                    "spec": {
                        "capacity": {"storage": "10Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": "",
                        "hostPath": {"path": format!("/tmp/shop-bench/{ns}/{claim}")},
                        "claimRef": {"namespace": ns, "name": claim},
                    },
                }))?;
                volumes.create(&PostParams::default(), &volume).await?;
                Ok::<_, Error>(())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<()>()
        .await
}

/// Streams the name of each object of `api` the first time `ready` holds for it, with the
/// instant it was seen; returns once the watch has listed the namespace, so nothing created
/// afterwards is missed.
async fn watch_ready<K>(
    api: Api<K>,
    ready: fn(&K) -> bool,
) -> mpsc::UnboundedReceiver<(String, Instant)>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (sender, receiver) = mpsc::unbounded_channel();
    let (synced, is_synced) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut synced = Some(synced);
        let mut seen = std::collections::HashSet::new();
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::InitDone) => {
                    if let Some(synced) = synced.take() {
                        let _ = synced.send(());
                    }
                }
                Ok(Event::Apply(object) | Event::InitApply(object)) => {
                    if ready(&object) && seen.insert(object.name_any()) {
                        let _ = sender.send((object.name_any(), Instant::now()));
                    }
                }
                Ok(_) => {}
                Err(e) => eprintln!("watch error (retried): {e}"),
            }
        }
    });
    let _ = is_synced.await;
    receiver
}

/// Collects `expected` names from `ready`, or fails at `deadline` saying how many came.
async fn all_ready(
    ready: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    expected: usize,
    deadline: Instant,
    what: &str,
) -> Result<HashMap<String, Instant>> {
    let mut seen = HashMap::new();
    while seen.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ready.recv()).await {
            Ok(Some((name, at))) => {
                seen.insert(name, at);
            }
            Ok(None) => return Err(format!("the watch of {what} ended").into()),
            Err(_) => {
                return Err(format!(
                    "only {} of {expected} {what} were ready in time",
                    seen.len()
                )
                .into());
            }
        }
    }
    Ok(seen)
}

fn shop_is_ready(shop: &ShopService) -> bool {
    shop.status.as_ref().is_some_and(|status| {
        status.observed_generation == shop.metadata.generation
            && status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// The operator's own rule (`controller/status.rs`): rolled out and available.
fn deployment_is_available(deployment: &Deployment) -> bool {
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    deployment.status.as_ref().is_some_and(|status| {
        status.observed_generation >= deployment.metadata.generation
            && status.updated_replicas.unwrap_or(0) >= desired
            && status.available_replicas.unwrap_or(0) >= desired
    })
}

/// The operator's own rule: the database pod is ready.
fn stateful_set_is_ready(stateful_set: &StatefulSet) -> bool {
    stateful_set
        .status
        .as_ref()
        .is_some_and(|status| status.ready_replicas.unwrap_or(0) >= 1)
}

async fn ceiling(harness: &Harness, args: &Args) -> Result<(Duration, ApiRequests, TestNamespace)> {
    let ns = harness.namespace("bench-ceiling").await?;
    let shops = names("direct", args.count);
    provide_volumes(harness, ns.name(), &shops).await?;
    let children = built_children(ns.name(), &shops)?;

    let mut deployments = watch_ready(ns.api::<Deployment>(), deployment_is_available).await;
    let mut stateful_sets = watch_ready(ns.api::<StatefulSet>(), stateful_set_is_ready).await;
    let client = harness.client();
    let namespace = ns.name().to_owned();
    let requests_before = ApiRequests::now(&client).await;
    let started = Instant::now();
    stream::iter(&children)
        .map(|children| create_children(&client, &namespace, children))
        .buffer_unordered(args.ceiling_concurrency)
        .try_collect::<()>()
        .await?;
    let created = started.elapsed();
    let deadline = started + args.timeout;
    all_ready(&mut deployments, args.count, deadline, "Deployments").await?;
    all_ready(&mut stateful_sets, args.count, deadline, "StatefulSets").await?;
    let took = started.elapsed();
    let requests = ApiRequests::since(requests_before, &client).await;
    println!(
        "ceiling: {} objects created in {}, all ready after {}; API requests per ShopService: {}",
        children.len() * OBJECTS_PER_SHOP_SERVICE,
        secs(created),
        secs(took),
        requests.breakdown(args.count)
    );
    Ok((took, requests, ns))
}

/// The children of the ShopServices `shops` of `namespace`, built before the clock by the
/// operator's build layer, as the ShopServices would be stored (a namespace and a uid).
fn built_children(namespace: &str, shops: &[String]) -> Result<Vec<build::Children>> {
    let stored: Vec<Arc<ShopService>> = shops
        .iter()
        .map(|name| {
            let mut shop = shop_service(name);
            shop.metadata.namespace = Some(namespace.into());
            shop.metadata.uid = Some(format!("bench-{name}"));
            Arc::new(shop)
        })
        .collect();
    let context = Context {
        default_image: IMAGE,
        postgres_image: shop_operator::build::database::DEFAULT_POSTGRES_IMAGE,
        namespace_services: &stored,
        database_password: Some("bench-not-a-secret"),
    };
    Ok(stored
        .iter()
        .map(|shop| build::children(shop, &context))
        .collect::<Result<_, _>>()?)
}

/// The steady phase's ceiling: each ShopService's children created directly (as
/// `create_children` does) at `--rate` per second for `--steady-seconds`; the latency of each
/// from its first create until its Deployment is available and its database ready, the
/// operator's Ready rule. What the cluster itself takes to start a ShopService's pods.
async fn steady_ceiling(harness: &Harness, args: &Args) -> Result<(Vec<Duration>, TestNamespace)> {
    let ns = harness.namespace("bench-steady-ceiling").await?;
    let total = (args.rate * args.steady_seconds as f64).round() as usize;
    let shops = names("direct-steady", total);
    provide_volumes(harness, ns.name(), &shops).await?;
    let children = built_children(ns.name(), &shops)?;
    let mut deployments = watch_ready(ns.api::<Deployment>(), deployment_is_available).await;
    let mut stateful_sets = watch_ready(ns.api::<StatefulSet>(), stateful_set_is_ready).await;

    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut started = HashMap::new();
    let mut creates = Vec::new();
    for (name, children) in shops.iter().zip(children) {
        ticks.tick().await;
        started.insert(name.clone(), Instant::now());
        let (client, namespace) = (harness.client(), ns.name().to_owned());
        // Each on its own task, so a slow response does not delay the next one.
        creates.push(tokio::spawn(async move {
            create_children(&client, &namespace, &children).await
        }));
    }
    for create in creates {
        create.await??;
    }
    let deadline = Instant::now() + args.timeout;
    let available = all_ready(&mut deployments, total, deadline, "Deployments").await?;
    let databases = all_ready(&mut stateful_sets, total, deadline, "StatefulSets").await?;
    let latencies = shops
        .iter()
        .map(|name| {
            let ready = available[name].max(databases[&names::database(name)]);
            ready.duration_since(started[name])
        })
        .collect();
    Ok((latencies, ns))
}

/// Creates one ShopService's children in the order the operator applies them. Without owner
/// references: their owner does not exist, and the garbage collector would delete them.
async fn create_children(
    client: &kube::Client,
    ns: &str,
    children: &build::Children,
) -> Result<()> {
    let database = children.database.as_ref().expect("a Dedicated database");
    create(client, ns, &children.service_account).await?;
    create(client, ns, &database.credentials).await?;
    create(client, ns, &database.service).await?;
    create(client, ns, &database.governing_service).await?;
    create(client, ns, &database.network_policy).await?;
    create(client, ns, &database.stateful_set).await?;
    create(client, ns, &children.service).await?;
    create(client, ns, &children.network_policy).await?;
    create(client, ns, &children.deployment).await?;
    Ok(())
}

async fn create<K>(client: &kube::Client, ns: &str, object: &K) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let mut object = object.clone();
    object.meta_mut().owner_references = None;
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await?;
    Ok(())
}

/// The operator binary, scoped to `namespace`, logging to a file; once it is ready.
async fn start_operator(namespace: &str) -> Result<OperatorProcess> {
    let log = std::env::temp_dir().join(format!("shop-bench-operator-{namespace}.log"));
    let mut operator = OperatorProcess::start(
        &["--namespace", namespace, "--default-image", IMAGE],
        &[],
        &log,
    );
    // Ready once its caches are filled (`/readyz`).
    operator.wait_ready(Duration::from_secs(60)).await?;
    Ok(operator)
}

/// The operator's peak resident memory so far, in KiB (`VmHWM`).
fn peak_rss_kib(operator: &OperatorProcess) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", operator.id()))?;
    shop_kit::metrics::proc_kib(&status, "VmHWM:")
        .ok_or_else(|| "no VmHWM in /proc/<pid>/status".into())
}

/// The operator's reconciles so far, by outcome (`shop_operator_reconciles_total` from its
/// `/metrics`): how much work it did for the ShopServices it was given.
struct Reconciles {
    by_outcome: Vec<(String, f64)>,
}

impl Reconciles {
    async fn of(operator: &OperatorProcess) -> Reconciles {
        let metrics = operator
            .get("/metrics")
            .await
            .map(|(_, body)| body)
            .unwrap_or_default();
        let by_outcome = metrics
            .lines()
            .filter_map(|line| line.strip_prefix("shop_operator_reconciles_total{outcome=\""))
            .filter_map(|rest| rest.split_once("\"} "))
            .filter_map(|(outcome, count)| Some((outcome.to_owned(), count.trim().parse().ok()?)))
            .collect();
        Reconciles { by_outcome }
    }

    /// Reconciles of any outcome per ShopService.
    fn per(&self, shop_services: usize) -> String {
        let total: f64 = self.by_outcome.iter().map(|(_, count)| count).sum();
        format!("{:.2}", total / shop_services as f64)
    }
}

impl Display for Reconciles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.by_outcome.is_empty() {
            return f.write_str("unknown (no /metrics)");
        }
        let outcomes: Vec<String> = self
            .by_outcome
            .iter()
            .map(|(outcome, count)| format!("{outcome} {count}"))
            .collect();
        f.write_str(&outcomes.join(", "))
    }
}

/// What the API server was asked, from its `apiserver_request_total`, by verb and resource
/// (with its subresource): everyone's requests, the bench's, the operator's, the controllers'
/// and kwok's, since the API server is what they share.
#[derive(Default)]
struct ApiRequests(HashMap<RequestKind, f64>);

/// A kind of request: verb, resource (with subresource), and whether the API server refused it
/// with 409 Conflict (a write from a stale copy; controllers retry those, and they count here
/// like any other request).
#[derive(PartialEq, Eq, Hash)]
struct RequestKind {
    verb: String,
    resource: String,
    conflict: bool,
}

impl ApiRequests {
    /// The counts so far; `None` when the API server's `/metrics` cannot be read.
    async fn now(client: &kube::Client) -> Option<ApiRequests> {
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .expect("a GET request");
        let text = client.request_text(request).await.ok()?;
        let mut counts = HashMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix("=\""))
                    .map_or("", |value| value.trim_end_matches('"'))
            };
            let resource = match label("subresource") {
                "" => label("resource").to_owned(),
                sub => format!("{}/{sub}", label("resource")),
            };
            let request = RequestKind {
                verb: label("verb").to_owned(),
                resource,
                conflict: label("code") == "409",
            };
            *counts.entry(request).or_default() += value;
        }
        Some(ApiRequests(counts))
    }

    /// The requests made since `before` was read; none (reported as unknown) when either
    /// reading failed, rather than every request since the API server started.
    async fn since(before: Option<ApiRequests>, client: &kube::Client) -> ApiRequests {
        let (Some(before), Some(now)) = (before, Self::now(client).await) else {
            return ApiRequests::default();
        };
        ApiRequests(
            now.0
                .into_iter()
                .map(|(key, count)| {
                    let earlier = before.0.get(&key).copied().unwrap_or(0.0);
                    (key, count - earlier)
                })
                .filter(|(_, count)| *count > 0.0)
                .collect(),
        )
    }

    fn is_write(verb: &str) -> bool {
        !matches!(verb, "GET" | "LIST" | "WATCH" | "CONNECT")
    }

    /// Writes and reads (GET and LIST; WATCH counts connections, not events) per ShopService.
    fn writes_and_reads(&self, shop_services: usize) -> String {
        if self.0.is_empty() {
            return "unknown (the API server's /metrics not read)".into();
        }
        let sum = |test: &dyn Fn(&RequestKind) -> bool| -> f64 {
            self.0
                .iter()
                .filter(|(request, _)| test(request))
                .map(|(_, count)| count)
                .sum()
        };
        let n = shop_services as f64;
        format!(
            "{:.1} / {:.1} ({:.1} of the writes refused with 409)",
            sum(&|r| Self::is_write(&r.verb)) / n,
            sum(&|r| matches!(r.verb.as_str(), "GET" | "LIST")) / n,
            sum(&|r| Self::is_write(&r.verb) && r.conflict) / n,
        )
    }

    /// The writes by verb and resource, most first, per ShopService.
    fn breakdown(&self, shop_services: usize) -> String {
        let mut writes: Vec<(&RequestKind, &f64)> = self
            .0
            .iter()
            .filter(|(request, _)| Self::is_write(&request.verb))
            .collect();
        writes.sort_by(|a, b| b.1.total_cmp(a.1));
        let n = shop_services as f64;
        let listed: Vec<String> = writes
            .iter()
            .map(|(request, count)| {
                let refused = if request.conflict { " (409)" } else { "" };
                format!(
                    "{} {}{refused} {:.2}",
                    request.verb,
                    request.resource,
                    *count / n
                )
            })
            .collect();
        format!(
            "writes / reads {} (writes: {})",
            self.writes_and_reads(shop_services),
            listed.join(", ")
        )
    }
}

async fn converge(harness: &Harness, args: &Args) -> Result<Converged> {
    let ns = harness.namespace("bench-converge").await?;
    let shops = names("shop", args.count);
    provide_volumes(harness, ns.name(), &shops).await?;
    let mut operator = start_operator(ns.name()).await?;
    let api = ns.api::<ShopService>();
    let mut ready = watch_ready(api.clone(), shop_is_ready).await;

    let requests_before = ApiRequests::now(&harness.client()).await;
    let started = Instant::now();
    stream::iter(&shops)
        .map(|name| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &shop_service(name))
                    .await
            }
        })
        .buffer_unordered(args.ceiling_concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let created = started.elapsed();
    let result = all_ready(
        &mut ready,
        args.count,
        started + args.timeout,
        "ShopServices",
    )
    .await;
    let took = started.elapsed();
    let requests = ApiRequests::since(requests_before, &harness.client()).await;
    let peak = peak_rss_kib(&operator)?;
    let reconciles = Reconciles::of(&operator).await;
    println!(
        "converge: {} ShopServices created in {}, all Ready after {}; reconciles: {}; API requests per ShopService: {}; operator log {}",
        args.count,
        secs(created),
        secs(took),
        reconciles,
        requests.breakdown(args.count),
        operator.log_path().display()
    );
    // SIGTERM, as Kubernetes stops it; SIGKILL if it has not stopped 10 s later.
    operator.terminate(Duration::from_secs(10)).await;
    result?;
    Ok(Converged {
        took,
        peak,
        reconciles,
        requests,
        ns,
    })
}

/// What the converge phase measured.
struct Converged {
    took: Duration,
    peak: u64,
    reconciles: Reconciles,
    requests: ApiRequests,
    ns: TestNamespace,
}

struct Steady {
    latencies: Vec<Duration>,
    peak: u64,
    reconciles: Reconciles,
}

impl Steady {
    fn p(&self, percent: usize) -> Duration {
        percentile(&self.latencies, percent)
    }
}

/// The `percent` percentile of `latencies` (nearest rank).
fn percentile(latencies: &[Duration], percent: usize) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

async fn steady(harness: &Harness, args: &Args) -> Result<(Steady, TestNamespace)> {
    let ns = harness.namespace("bench-steady").await?;
    let total = (args.rate * args.steady_seconds as f64).round() as usize;
    let shops = names("steady", total);
    provide_volumes(harness, ns.name(), &shops).await?;
    let mut operator = start_operator(ns.name()).await?;
    let api = ns.api::<ShopService>();
    let mut ready = watch_ready(api.clone(), shop_is_ready).await;

    let period = Duration::from_secs_f64(1.0 / args.rate);
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut applied = HashMap::new();
    let mut applies = Vec::new();
    let first_apply = Instant::now();
    for name in &shops {
        ticks.tick().await;
        applied.insert(name.clone(), Instant::now());
        let api = api.clone();
        let shop = shop_service(name);
        // Each apply on its own task, so a slow response does not delay the next one.
        applies.push(tokio::spawn(async move {
            api.patch(
                &shop.name_any(),
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(&shop),
            )
            .await
        }));
    }
    for apply in applies {
        apply.await??;
    }
    let applied_in = first_apply.elapsed();
    let deadline = Instant::now() + args.timeout;
    let result = all_ready(&mut ready, total, deadline, "ShopServices").await;
    let peak = peak_rss_kib(&operator)?;
    let reconciles = Reconciles::of(&operator).await;
    println!(
        "steady: {total} ShopServices applied in {}, all Ready after {}; reconciles: {}; operator log {}",
        secs(applied_in),
        secs(first_apply.elapsed()),
        reconciles,
        operator.log_path().display()
    );
    // SIGTERM, as Kubernetes stops it; SIGKILL if it has not stopped 10 s later.
    operator.terminate(Duration::from_secs(10)).await;
    let ready_at = result?;
    let mut latencies: Vec<(Duration, &String)> = ready_at
        .iter()
        .map(|(name, at)| (at.duration_since(applied[name]), name))
        .collect();
    latencies.sort();
    // The tail by name, to look up in the operator's log and the cluster.
    let slowest: Vec<String> = latencies
        .iter()
        .rev()
        .take(5)
        .map(|(took, name)| {
            let offset = applied[*name].duration_since(first_apply);
            format!(
                "{name} (applied at +{}, Ready after {})",
                secs(offset),
                secs(*took)
            )
        })
        .collect();
    println!("steady: slowest: {}", slowest.join(", "));
    let latencies = latencies.into_iter().map(|(took, _)| took).collect();
    Ok((
        Steady {
            latencies,
            peak,
            reconciles,
        },
        ns,
    ))
}

/// Removes the finalizers the (stopped) operator left, so the namespace can go, and deletes
/// the namespace and its volumes without waiting.
async fn release(harness: &Harness, ns: TestNamespace) -> Result<()> {
    let api = ns.api::<ShopService>();
    let unfinalized = json!({"metadata": {"finalizers": null}});
    let shops = api.list(&ListParams::default()).await?.items;
    stream::iter(shops)
        .map(|shop| {
            let (api, patch) = (api.clone(), &unfinalized);
            async move {
                api.patch(
                    &shop.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let selector = format!("{VOLUME_LABEL}={}", ns.name());
    ns.cleanup().await?;
    harness
        .api::<PersistentVolume>()
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&selector),
        )
        .await?;
    Ok(())
}
