//! The running operator: all of its I/O, and the pure decisions it makes, apart.
//!
//! Pure (no client, no clock of their own, unit-tested without a cluster):
//! - [`status`]: the status computed from what was applied, and the Events a change deserves.
//! - [`peers`]: which ShopServices a change of one re-queues.
//! - [`permissions`]: every API permission the operator uses (and the startup check that asks).
//!
//! I/O, one reconcile's steps:
//! - [`apply`]: dereference → build → Shared database → apply → prune → status, for a
//!   ShopService that exists.
//! - [`prune`]: deletes what is labelled for and controlled by a ShopService but no longer
//!   applied, kind by kind from `build::OWNED_KINDS`.
//! - [`cleanup`]: the database's `deletionPolicy`, under the finalizer `shop.dev/cleanup`.
//! - [`credentials`]: the database password (read back or generated once) and the shared
//!   server's admin Secret.
//! - [`shared_database`]: the role and database on a shared PostgreSQL server.
//! - [`storage`]: a Dedicated database's volume claim grown to the requested size.
//! - [`context`]: what every reconcile shares, its errors, and publishing Events.
//! - [`cache`]: the children as the watches see them and what was last applied, so a
//!   reconcile that would change nothing sends nothing; the watches of the owned kinds.
//!
//! I/O, the process: [`metrics`] (`/healthz`, `/readyz`, `/metrics`), [`leader`] (leader
//! election), and this file: [`run`], the kube-runtime `Controller` with its watches,
//! per-object backoff and graceful shutdown, and [`reconcile`], which dispatches one
//! ShopService to `apply` or `cleanup` and publishes the Events their steps returned.

pub mod apply;
pub mod cache;
pub mod cleanup;
pub mod context;
pub mod credentials;
pub mod leader;
pub mod metrics;
pub mod peers;
pub mod permissions;
pub mod prune;
#[cfg(test)]
mod reconcile_tests;
pub mod shared_database;
pub mod status;
pub mod storage;

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, Shared};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::PredicateConfig;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{self as runtime, Action, Controller};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::scheduler::{ScheduleRequest, debounced_scheduler};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::build::Owner;
use crate::crd::ShopService;
pub use context::{Context, Error, Note};
use leader::LeaderElection;
use metrics::{Metrics, Outcome};
use peers::PeerTrigger;

/// Held on every ShopService until its cleanup ran: what `deletionPolicy` asks for happens
/// before the garbage collector removes the children.
pub const FINALIZER: &str = "shop.dev/cleanup";

/// [`Settings::concurrency`] unless told otherwise. A reconcile that creates a ShopService's
/// children waits for four round trips to the API server (the finalizer, two waves of
/// applies, the status), ~1 s on a busy 2-core cluster, so 4 slots applied at most ~4
/// ShopServices a second and 1,000 queued for minutes (docs/benchmarks.md). A slot costs
/// little memory since reconciles share their namespace's ShopServices instead of copying
/// them.
pub const DEFAULT_CONCURRENCY: u16 = 8;

/// How the operator runs.
pub struct Settings {
    /// Watch this namespace only; every namespace when `None`.
    pub namespace: Option<String>,
    /// The image of the bundled services, for ShopServices without `spec.image`.
    pub default_image: String,
    /// The PostgreSQL image of Dedicated databases.
    pub postgres_image: String,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub http_listener: TcpListener,
    /// Reconcile only while holding the leader lease; always when `None` (one replica).
    pub leader_election: Option<Arc<LeaderElection>>,
    /// How long after its deletion a ShopService with a Shared database and `deletionPolicy:
    /// Delete` waits for the shared server before letting go, leaving its database behind.
    pub shared_cleanup_timeout: Duration,
    /// How long a change of a child or a peer waits for further ones before its ShopService is
    /// reconciled ([`DEFAULT_DEBOUNCE`]); a change of the ShopService itself does not wait.
    pub debounce: Duration,
    /// How many ShopServices are reconciled at once ([`DEFAULT_CONCURRENCY`]).
    pub concurrency: u16,
}

/// [`Settings::shared_cleanup_timeout`] unless told otherwise.
pub const DEFAULT_SHARED_CLEANUP_TIMEOUT: Duration = Duration::from_secs(300);

/// How soon a reconcile that met a stale copy of its ShopService is tried again.
const STALE_RETRY: Duration = Duration::from_millis(500);

/// [`Settings::debounce`] unless told otherwise. Measured (docs/benchmarks.md): without it a
/// ShopService took ~4.3 reconciles on its way to Ready and, at 5 new ones a second, the queue
/// in front of the reconcile slots put the median apply → Ready at 12 s; with 500 ms, 3.0 and
/// 3.3 s. It holds the children's and peers' triggers only (see `debounced`).
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(500);

type Shutdown = Shared<BoxFuture<'static, ()>>;

/// Runs the operator until `shutdown` completes: the controller and the HTTP endpoints.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let Settings {
        namespace,
        default_image,
        postgres_image,
        http_listener,
        leader_election,
        shared_cleanup_timeout,
        debounce,
        concurrency,
    } = settings;
    let shops: Api<ShopService> = watched(&client, &namespace);
    preflight(
        &client,
        &shops,
        namespace.as_deref(),
        leader_election.as_deref(),
    )
    .await?;

    let metrics = Arc::new(Metrics::default());
    let (children, child_watches) = cache::watch(&client, namespace.as_deref());
    let context = Arc::new(Context::new(
        client.clone(),
        default_image,
        postgres_image,
        shared_cleanup_timeout,
        metrics.clone(),
        children.clone(),
    ));
    let shutdown: Shutdown = shutdown.boxed().shared();
    let http = serve_http(http_listener, &metrics, shutdown.clone());

    let Some(leadership) = take_the_lead(leader_election.as_ref(), &metrics, &shutdown).await
    else {
        http.await??;
        return Ok(());
    };
    // No debounce of the controller's own: a ShopService's change is reconciled at once, and
    // only its children's and peers' changes are merged (`debounced`).
    let config = runtime::Config::default().concurrency(concurrency);
    let (controller, store, peers) = controller(shops, child_watches, config, debounce, &context);
    let readiness = ready_once_synced(store, peers, &context, &metrics);
    let children_synced = children.sync();

    info!("shop-operator started");
    let leadership_lost = leadership.lost_flag();
    controller
        .graceful_shutdown_on(leadership.stop_on(shutdown))
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                // Logged with its backoff by `error_policy`.
                Ok(_) | Err(runtime::Error::ReconcilerFailed(..)) => {}
                // Mostly watch errors; the watchers retry with their own backoff.
                Err(e) => warn!(error = %e, "controller"),
            }
        })
        .await;

    readiness.abort();
    children_synced.abort();
    if *leadership_lost.borrow() {
        // Another replica may be reconciling already: stop at once, and let Kubernetes
        // restart this one as a standby.
        anyhow::bail!("lost the leader lease");
    }
    if let Some(election) = &leader_election {
        election.resign().await;
    }
    http.await??;
    info!("shop-operator stopped");
    Ok(())
}

/// Before anything is reconciled: the CRD is installed and every permission is granted (a
/// missing one would otherwise show up as reconciles failing one call at a time).
async fn preflight(
    client: &Client,
    shops: &Api<ShopService>,
    namespace: Option<&str>,
    leader_election: Option<&LeaderElection>,
) -> anyhow::Result<()> {
    check_crd_installed(shops).await?;
    let lease_namespace = leader_election.and_then(|election| election.namespace());
    permissions::check(client, namespace, lease_namespace).await
}

fn serve_http(
    listener: TcpListener,
    metrics: &Arc<Metrics>,
    shutdown: Shutdown,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(
        axum::serve(listener, metrics.clone().router())
            .with_graceful_shutdown(shutdown)
            .into_future(),
    )
}

/// Holding the lead: with leader election, the task that keeps the lease and tells when it
/// is lost. Dropping it stops keeping the lease.
struct Leadership {
    lost: Option<tokio::sync::oneshot::Receiver<()>>,
    keeper: Option<JoinHandle<()>>,
    mark_lost: tokio::sync::watch::Sender<bool>,
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(keeper) = &self.keeper {
            keeper.abort();
        }
    }
}

impl Leadership {
    /// Whether the lease was lost, once the controller has stopped.
    fn lost_flag(&self) -> tokio::sync::watch::Receiver<bool> {
        self.mark_lost.subscribe()
    }

    /// What stops the controller: `shutdown`, or losing the lease. Owns the lead for as
    /// long as the controller runs.
    async fn stop_on(mut self, shutdown: Shutdown) {
        match self.lost.take() {
            Some(lost) => tokio::select! {
                () = shutdown => {}
                Ok(()) = lost => {
                    let _ = self.mark_lost.send(true);
                }
            },
            None => shutdown.await,
        }
    }
}

/// Waits for the leader lease when there is an election (a standby is ready meanwhile: it
/// is doing its job, which is to wait); `None` when `shutdown` came first.
async fn take_the_lead(
    election: Option<&Arc<LeaderElection>>,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> Option<Leadership> {
    let (mark_lost, _) = tokio::sync::watch::channel(false);
    let Some(election) = election else {
        return Some(Leadership {
            lost: None,
            keeper: None,
            mark_lost,
        });
    };
    metrics.set_ready();
    info!("waiting for the leader lease");
    tokio::select! {
        () = election.acquire() => info!("acquired the leader lease"),
        () = shutdown.clone() => return None,
    }
    let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
    let election = election.clone();
    let keeper = tokio::spawn(async move {
        election.keep().await;
        let _ = lost_tx.send(());
    });
    Some(Leadership {
        lost: Some(lost_rx),
        keeper: Some(keeper),
        mark_lost,
    })
}

/// The controller of ShopServices: its own watch, one watch per owned kind (a change to a
/// child reconciles its ShopService; they fill the [`cache::ChildCache`]), and the peers'
/// watch. Also its cache of ShopServices, whose counts `/metrics` reports.
fn controller(
    shops: Api<ShopService>,
    children: cache::ChildWatches,
    config: runtime::Config,
    debounce: Duration,
    context: &Arc<Context>,
) -> (
    Controller<ShopService>,
    Store<ShopService>,
    Arc<PeerTrigger>,
) {
    // The cache of ShopServices, without their `managedFields` (the field managers' records,
    // which nothing here reads, are a large share of each object).
    let (store, writer) = reflector::store::<ShopService>();
    let shop_events = watcher(shops.clone(), watcher::Config::default())
        .default_backoff()
        .modify(|shop| shop.metadata.managed_fields = None)
        .reflect(writer)
        .applied_objects()
        // Its own status writes come back as events that change nothing to reconcile: only a
        // new spec, another's finalizer added or removed, the deletion starting, or an
        // annotation changed (how a person forces a reconcile) do.
        .predicate_filter(what_is_reconciled, PredicateConfig::default());
    let controller = Controller::for_stream(shop_events, store.clone()).with_config(config);
    context.metrics.count_pending_with({
        let store = store.clone();
        // Weak: the context owns the metrics, which own this.
        let context = Arc::downgrade(context);
        move || {
            let Some(context) = context.upgrade() else {
                return metrics::PendingCounts::default();
            };
            let failures = context.failures.lock().expect("failures lock");
            let shops = store.state();
            metrics::PendingCounts::of(shops.iter().map(AsRef::as_ref), |shop| {
                failures.contains_key(&ObjectRef::from_obj(shop))
            })
        }
    });

    let cache::ChildWatches {
        metadata,
        deployments,
        stateful_sets,
    } = children;
    let mut triggers: Vec<BoxStream<'static, Triggered>> = metadata
        .into_iter()
        .map(|(resource, trigger)| runtime::trigger_owners(trigger, (), resource).boxed())
        .collect();
    triggers.push(runtime::trigger_owners(deployments, (), ()).boxed());
    triggers.push(runtime::trigger_owners(stateful_sets, (), ()).boxed());
    // A ShopService's children depend on its whole namespace (dependency URLs and ports,
    // network policies, the gateway's route table): a change to one spec reconciles its
    // peers too.
    let peers = Arc::new(PeerTrigger::new(store.clone()));
    let trigger = peers.clone();
    let peer_events = watcher(shops, watcher::Config::default())
        .default_backoff()
        .touched_objects();
    triggers.push(
        runtime::trigger_with(peer_events, move |shop: ShopService| {
            trigger
                .peers_of(&shop)
                .into_iter()
                .map(|obj_ref| runtime::ReconcileRequest {
                    obj_ref,
                    reason: runtime::ReconcileReason::Unknown,
                })
        })
        .boxed(),
    );
    let controller = controller.reconcile_on(debounced(triggers, debounce));
    (controller, store, peers)
}

/// A reconcile asked for by a child's or a peer's watch event.
type Triggered = Result<runtime::ReconcileRequest<ShopService>, watcher::Error>;

/// The children's and the peers' triggers, each ShopService's held until `debounce` has passed
/// without another (a trailing debounce): a Deployment and a StatefulSet changing status
/// several times on their way to ready cost one reconcile, not one each. The ShopService's own
/// events do not wait: a person's change is acted on at once.
fn debounced(
    triggers: Vec<BoxStream<'static, Triggered>>,
    debounce: Duration,
) -> impl futures::Stream<Item = ObjectRef<ShopService>> + Send + 'static {
    let requests = futures::stream::select_all(triggers).filter_map(|triggered| async move {
        match triggered {
            Ok(request) => Some(ScheduleRequest {
                message: request.obj_ref,
                run_at: tokio::time::Instant::now(),
            }),
            // The watches retry with their own backoff.
            Err(e) => {
                warn!(error = %e, "watch of children or peers");
                None
            }
        }
    });
    debounced_scheduler(requests, debounce)
}

/// What a reconcile reads of a ShopService besides its peers, and its annotations (a hash):
/// an event that leaves it unchanged needs no reconcile.
fn what_is_reconciled(shop: &ShopService) -> Option<u64> {
    let mut hasher = std::hash::DefaultHasher::new();
    (
        shop.metadata.generation,
        // Not this operator's own: it adds it in the reconcile that goes on to apply, and
        // the echo of that would be a reconcile with nothing to do. One that someone else
        // removes is added back by the next reconcile.
        shop.finalizers()
            .iter()
            .filter(|f| *f != FINALIZER)
            .collect::<Vec<_>>(),
        shop.metadata.deletion_timestamp.is_some(),
        &shop.metadata.annotations,
    )
        .hash(&mut hasher);
    Some(hasher.finish())
}

/// Once the cache of ShopServices is synced: reconciles read their peers from it (through
/// `peers`), and the operator is ready.
fn ready_once_synced(
    store: Store<ShopService>,
    peers: Arc<PeerTrigger>,
    context: &Arc<Context>,
    metrics: &Arc<Metrics>,
) -> JoinHandle<()> {
    let metrics = metrics.clone();
    let context = context.clone();
    tokio::spawn(async move {
        // Polled again every second: the store wakes only the last task that waited on
        // it (a oneshot channel), and the controller itself waits on it too.
        loop {
            match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
                Ok(Ok(())) => break,
                Ok(Err(_)) => return,
                Err(_) => continue,
            }
        }
        let _ = context.synced_shops.set(peers);
        metrics.set_ready();
        info!("ShopService cache synced; ready");
    })
}

fn watched<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// Fails with a message a person can act on when the ShopService CRD is not installed.
async fn check_crd_installed(shops: &Api<ShopService>) -> anyhow::Result<()> {
    match shops.list(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => anyhow::bail!(
            "the ShopService CRD (shopservices.shop.dev) is not installed: run `shop-operator crd | kubectl apply -f -` or `kubectl apply -f crds/`"
        ),
        // Not allowed to list: the permission check that follows names this with everything
        // else that is missing, in one message.
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(()),
        Err(e) => Err(anyhow::anyhow!(e).context("cannot list ShopServices")),
    }
}

/// One reconcile of one ShopService: `apply`, or `cleanup` once it is deleted (the finalizer
/// helper adds and removes `shop.dev/cleanup`), then the Events their steps returned, also
/// when a step failed.
async fn reconcile(shop: Arc<ShopService>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!(
        "reconcile",
        shopservice = %shop.name_any(),
        namespace = %shop.namespace().unwrap_or_default(),
    );
    async move {
        let _in_flight = ctx.metrics.reconcile_started();
        let started = Instant::now();
        let shops = Api::<ShopService>::namespaced(
            ctx.client.clone(),
            &shop.namespace().ok_or(Error::NotNamespaced)?,
        );
        let object_ref = ObjectRef::from_obj(shop.as_ref());
        let mut notes = Vec::new();
        let (shop, result) = match with_finalizer(&shops, &shop).await {
            Ok(Some(shop)) => {
                let result = finalizer(&shops, FINALIZER, shop.clone(), |event| async {
                    match event {
                        finalizer::Event::Apply(shop) => {
                            let owner = Owner::new(&shop)?;
                            apply::apply(&owner, &ctx, &mut notes).await
                        }
                        finalizer::Event::Cleanup(shop) => {
                            cleanup::cleanup(&shop, &ctx, &mut notes).await
                        }
                    }
                })
                .await;
                (shop, result)
            }
            // Soon, from the cache: the change that made the copy stale may be one that
            // triggers no reconcile (a label, say).
            Ok(None) => (shop, Ok(Action::requeue(STALE_RETRY))),
            Err(error) => (shop, Err(finalizer::Error::AddFinalizer(error))),
        };
        let result = not_failures(result).map_err(|e| Error::Finalizer(Box::new(e)));
        if let Err(error) = &result
            && shop.meta().deletion_timestamp.is_none()
        {
            notes.extend(report_failure(&shops, &shop, error).await);
        }
        // Published beside the reconcile, not in it: each Event is a request to a busy API
        // server, and the next ShopService waiting for one of the few reconcile slots need
        // not wait for them too.
        if !notes.is_empty() {
            let (ctx, shop) = (ctx.clone(), shop.clone());
            tokio::spawn(async move { ctx.publish(&shop, notes).await });
        }
        let outcome = if result.is_ok() {
            ctx.failures
                .lock()
                .expect("failures lock")
                .remove(&object_ref);
            Outcome::Success
        } else {
            Outcome::Failure
        };
        debug!(
            took_ms = started.elapsed().as_millis() as u64,
            ok = result.is_ok(),
            "reconciled"
        );
        ctx.metrics.record(outcome, started.elapsed());
        result
    }
    .instrument(span)
    .await
}

/// The ShopService with the finalizer `shop.dev/cleanup`, added here when it lacks it and is
/// not being deleted. The same reconcile then goes on to apply: kube's `finalizer` helper
/// adds it and stops, and the watch event of that change costs a second reconcile and a
/// round trip on every ShopService's way to Ready.
///
/// The patch is guarded by the cached copy's resourceVersion, so a stale copy (a ShopService
/// is reconciled again when a peer changes, from the copy the cache holds) is refused with
/// 409 and never adds the finalizer twice; then `None`.
async fn with_finalizer(
    shops: &Api<ShopService>,
    shop: &Arc<ShopService>,
) -> Result<Option<Arc<ShopService>>, kube::Error> {
    if shop.meta().deletion_timestamp.is_some() || shop.finalizers().iter().any(|f| f == FINALIZER)
    {
        return Ok(Some(shop.clone()));
    }
    let mut finalizers = shop.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": shop.resource_version(),
            "finalizers": finalizers,
        }
    });
    match shops
        .patch(
            &shop.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(mut added) => {
            added.metadata.managed_fields = None;
            Ok(Some(Arc::new(added)))
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            debug!("the cached copy is stale; adding the finalizer again shortly");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

/// The finalizer's outcome that is not a failure: a cleanup that found the ShopService gone
/// when it came to remove the finalizer (the work of a stale cache: the first cleanup had
/// already let the object go).
fn not_failures(
    result: Result<Action, finalizer::Error<Error>>,
) -> Result<Action, finalizer::Error<Error>> {
    match result {
        Err(finalizer::Error::RemoveFinalizer(kube::Error::Api(status)))
            if status.is_not_found() =>
        {
            Ok(Action::await_change())
        }
        other => other,
    }
}

/// The longest message a failed reconcile writes into a condition: the API server's own
/// errors can quote a whole object.
const MAX_FAILURE_MESSAGE: usize = 1024;

/// A failed reconcile in the ShopService's status (`Ready=False`, `Degraded=True`, the
/// error's reason and message), written only when that changes: a ShopService that keeps
/// failing the same way costs no write per retry. Returns the Events the change deserves; a
/// failure to write it is logged (the reconcile is retried anyway).
async fn report_failure(shops: &Api<ShopService>, shop: &ShopService, error: &Error) -> Vec<Note> {
    let message = context::truncate(error.message(), MAX_FAILURE_MESSAGE);
    let failed = status::failed(shop, error.reason(), &message, &Time(Timestamp::now()));
    apply::write_status(shops, shop, failed)
        .await
        .unwrap_or_else(|e| {
            warn!(error = %e, "could not write the failure into the status");
            Vec::new()
        })
}

fn error_policy(shop: Arc<ShopService>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = {
        let mut failures = ctx.failures.lock().expect("failures lock");
        let count = failures
            .entry(ObjectRef::from_obj(shop.as_ref()))
            .or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let retry = context::backoff(failures);
    error!(
        shopservice = %shop.name_any(),
        namespace = %shop.namespace().unwrap_or_default(),
        error = %error,
        failures,
        retry_in_ms = retry.as_millis() as u64,
        "reconcile failed"
    );
    let note = Note::warning(
        "ReconcileFailed",
        "Reconcile",
        format!(
            "{error} (failure {failures}; retrying in {}s)",
            retry.as_secs()
        ),
    );
    tokio::spawn(async move { ctx.publish(&shop, vec![note]).await });
    Action::requeue(retry)
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn trigger(name: &str) -> Triggered {
        Ok(runtime::ReconcileRequest {
            obj_ref: ObjectRef::new(name).within("shop"),
            reason: runtime::ReconcileReason::Unknown,
        })
    }

    #[tokio::test]
    async fn children_triggers_wait_the_debounce_and_merge_per_shop_service() {
        let debounce = Duration::from_millis(100);
        // Two streams, as two watches: `a` twice, a watch error, `b`; then nothing more.
        let triggers: Vec<BoxStream<'static, Triggered>> = vec![
            futures::stream::iter([trigger("a"), Err(watcher::Error::NoResourceVersion)])
                .chain(futures::stream::pending())
                .boxed(),
            futures::stream::iter([trigger("a"), trigger("b")])
                .chain(futures::stream::pending())
                .boxed(),
        ];
        let started = tokio::time::Instant::now();
        let mut out = Box::pin(debounced(triggers, debounce));
        let mut names = Vec::new();
        for _ in 0..2 {
            let next = tokio::time::timeout(Duration::from_secs(5), out.next()).await;
            names.push(next.expect("a reconcile").expect("open").name);
        }
        assert!(started.elapsed() >= debounce, "not held for the debounce");
        names.sort();
        assert_eq!(names, ["a", "b"], "one reconcile per ShopService");
        let more = tokio::time::timeout(debounce * 3, out.next()).await;
        assert!(
            more.is_err(),
            "the second trigger of `a` was merged: {more:?}"
        );
    }

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure("refused", reason).with_code(code)))
    }

    #[test]
    fn a_finalizer_already_removed_is_not_a_failure() {
        let gone = finalizer::Error::RemoveFinalizer(api_error(404, "NotFound"));
        assert!(not_failures(Err(gone)).is_ok());
        let conflict = finalizer::Error::RemoveFinalizer(api_error(409, "Conflict"));
        assert!(not_failures(Err(conflict)).is_err());
        let cleanup = finalizer::Error::CleanupFailed(Error::NotNamespaced);
        assert!(not_failures(Err(cleanup)).is_err());
        let forbidden = finalizer::Error::AddFinalizer(api_error(403, "Forbidden"));
        assert!(not_failures(Err(forbidden)).is_err());
    }

    #[test]
    fn only_changes_a_reconcile_acts_on_pass_the_filter() {
        let mut shop = crate::build::fixtures::shop("cart", None);
        shop.metadata.generation = Some(1);
        let before = what_is_reconciled(&shop);
        let mut changed = shop.clone();
        changed.metadata.finalizers = Some(vec![FINALIZER.into()]);
        changed.status = Some(Default::default());
        assert_eq!(
            what_is_reconciled(&changed),
            before,
            "its own finalizer and status"
        );
        changed.metadata.finalizers = Some(vec![FINALIZER.into(), "other.dev/hold".into()]);
        assert_ne!(what_is_reconciled(&changed), before, "another's finalizer");
        let mut changed = shop.clone();
        changed.metadata.generation = Some(2);
        assert_ne!(what_is_reconciled(&changed), before, "a new spec");
        let mut changed = shop.clone();
        changed.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert_ne!(what_is_reconciled(&changed), before, "its deletion");
    }

    #[test]
    fn a_failure_names_its_reason_and_the_error_without_the_finalizer_wrapping() {
        let refused = Error::Finalizer(Box::new(finalizer::Error::ApplyFailed(Error::Kube {
            action: "apply Service cart".into(),
            error: api_error(422, "Invalid"),
        })));
        assert_eq!(refused.reason(), "ApiRefused");
        assert!(
            refused.message().starts_with("apply Service cart: "),
            "{}",
            refused.message()
        );
        let credentials = Error::Finalizer(Box::new(finalizer::Error::ApplyFailed(
            Error::CredentialsWithoutPassword {
                secret_name: "cart-db-credentials".into(),
            },
        )));
        assert_eq!(credentials.reason(), "CredentialsInvalid");
        let forbidden = Error::Kube {
            action: "list".into(),
            error: api_error(403, "Forbidden"),
        };
        assert_eq!(forbidden.reason(), "Forbidden");
        let finalizer = Error::Finalizer(Box::new(finalizer::Error::AddFinalizer(api_error(
            403,
            "Forbidden",
        ))));
        assert_eq!(finalizer.reason(), "FinalizerFailed");
        assert!(finalizer.message().starts_with("failed to add finalizer"));
    }
}
