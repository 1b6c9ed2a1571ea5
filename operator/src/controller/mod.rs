//! The running operator: all of its I/O.
//!
//! - [`reconcile`]: the pipeline for one ShopService (dereference → build → apply → prune →
//!   status) and the cleanup on deletion, under the finalizer `shop.dev/cleanup`.
//! - [`status`]: the status computed from what was applied (pure).
//! - [`metrics`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`leader`]: leader election, so that replicas stand by while one reconciles.
//! - [`permissions`]: every API permission the operator uses, checked at startup.
//! - this file: the kube-runtime `Controller` that calls the pipeline, with its watches,
//!   per-object backoff, Events and graceful shutdown.

pub mod leader;
pub mod metrics;
pub mod peers;
pub mod permissions;
pub mod reconcile;
pub mod shared_database;
pub mod status;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use kube::runtime::controller::{self as runtime, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use ring::rand::SecureRandom;
use tokio::net::TcpListener;
use tracing::{Instrument, error, info, info_span, warn};

use crate::build::BuildError;
use crate::build::common::MANAGER;
use crate::crd::ShopService;
use leader::LeaderElection;
use metrics::{Metrics, Outcome};
use peers::PeerTrigger;

/// Held on every ShopService until its cleanup ran: what `deletionPolicy` asks for happens
/// before the garbage collector removes the children.
pub const FINALIZER: &str = "shop.dev/cleanup";

/// How many ShopServices are reconciled at once. 16 was measured too (docs/benchmarks.md): on a
/// 2-core cluster it was no faster (the API server is the limit) and more than doubled the
/// operator's peak memory.
const CONCURRENCY: u16 = 4;
/// The first retry after a failure, doubled on each further failure up to the cap.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// The API server refuses an Event whose note is longer than 1 kB.
const MAX_EVENT_NOTE: usize = 1024;

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

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
}

/// [`Settings::shared_cleanup_timeout`] unless told otherwise.
pub const DEFAULT_SHARED_CLEANUP_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {error}")]
    Kube {
        action: String,
        #[source]
        error: kube::Error,
    },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("ShopService has no namespace")]
    NotNamespaced,
    #[error(
        "Secret {secret_name} exists but has no valid key `password`; the operator will not replace it (that would lock the service out of its data): restore the key or delete the Secret"
    )]
    CredentialsWithoutPassword { secret_name: String },
    #[error(
        "could not clean up the Shared database: {problem}; left for now: {left}; retrying until {give_up_at}, then giving up and leaving them behind"
    )]
    SharedCleanupPending {
        problem: String,
        left: String,
        give_up_at: String,
    },
    #[error("the operating system's random number generator failed")]
    Random,
    #[error(transparent)]
    Finalizer(Box<finalizer::Error<Error>>),
}

impl Error {
    /// Wraps a kube error with what was being done, for `map_err`.
    fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |error| Error::Kube { action, error }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub default_image: String,
    pub postgres_image: String,
    /// See [`Settings::shared_cleanup_timeout`].
    pub shared_cleanup_timeout: Duration,
    recorder: Recorder,
    random: ring::rand::SystemRandom,
    metrics: Arc<Metrics>,
    /// Consecutive failures per ShopService, for its backoff; cleared by a success.
    failures: Mutex<HashMap<ObjectRef<ShopService>, u32>>,
    /// The controller's cache of ShopServices (through the peer trigger, which knows whether
    /// it is up to date), once its first list is complete: reconciles read a ShopService's
    /// peers from it instead of listing them from the API server each time (a list per
    /// reconcile made N ShopServices cost N² reads).
    synced_shops: std::sync::OnceLock<Arc<PeerTrigger>>,
}

impl Context {
    /// Every ShopService of `namespace`: from the cache once it is synced and up to date, from
    /// the API server otherwise (a reconcile must never build from a stale picture of its
    /// peers: nothing would trigger it again).
    pub async fn namespace_services(&self, namespace: &str) -> Result<Vec<ShopService>, Error> {
        if let Some(cached) = self
            .synced_shops
            .get()
            .and_then(|peers| peers.namespace_services(namespace))
        {
            return Ok(cached);
        }
        Ok(
            Api::<ShopService>::namespaced(self.client.clone(), namespace)
                .list(&ListParams::default())
                .await
                .map_err(Error::kube("list the ShopServices of the namespace"))?
                .items,
        )
    }
}

impl Context {
    /// Publishes a Kubernetes Event about `shop`. A failure to publish is logged, never
    /// fatal: events are for people, the reconcile does not depend on them.
    async fn publish(
        &self,
        shop: &ShopService,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(note, MAX_EVENT_NOTE)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &shop.object_ref(&())).await {
            warn!(error = %e, reason, "could not publish an event");
        }
    }

    /// The wait before retrying `shop` after its `failures`-th consecutive failure:
    /// exponential with "equal jitter" (between half and all of the exponential value), so
    /// that objects failing together do not retry together.
    fn backoff(&self, failures: u32) -> Duration {
        let exponential = FIRST_RETRY
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)))
            .min(MAX_RETRY);
        let mut byte = [0u8; 1];
        let fraction = match self.random.fill(&mut byte) {
            Ok(()) => f64::from(byte[0]) / 255.0,
            Err(_) => 1.0,
        };
        exponential.mul_f64(0.5 + fraction / 2.0)
    }
}

/// Runs the operator until `shutdown` completes: the controller and the HTTP endpoints.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let shops: Api<ShopService> = match &settings.namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    check_crd_installed(&shops).await?;
    // Before anything is reconciled: a missing permission would otherwise show up as
    // reconciles failing one call at a time.
    let lease_namespace = settings
        .leader_election
        .as_ref()
        .and_then(|election| election.namespace());
    permissions::check(&client, settings.namespace.as_deref(), lease_namespace).await?;

    let metrics = Arc::new(Metrics::default());
    let context = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        client: client.clone(),
        default_image: settings.default_image,
        postgres_image: settings.postgres_image,
        shared_cleanup_timeout: settings.shared_cleanup_timeout,
        random: ring::rand::SystemRandom::new(),
        metrics: metrics.clone(),
        failures: Mutex::default(),
        synced_shops: std::sync::OnceLock::new(),
    });

    let shutdown = shutdown.shared();
    let http = tokio::spawn(
        axum::serve(settings.http_listener, metrics.clone().router())
            .with_graceful_shutdown(shutdown.clone())
            .into_future(),
    );

    let (lost, keeper) = match &settings.leader_election {
        Some(election) => {
            // A standby is healthy and ready: it is doing its job, which is to wait.
            metrics.set_ready();
            info!("waiting for the leader lease");
            tokio::select! {
                () = election.acquire() => info!("acquired the leader lease"),
                () = shutdown.clone() => {
                    http.await??;
                    return Ok(());
                }
            }
            let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<()>();
            let election = election.clone();
            let keeper = tokio::spawn(async move {
                election.keep().await;
                let _ = lost_tx.send(());
            });
            (Some(lost_rx), Some(keeper))
        }
        None => (None, None),
    };
    let (mark_lost, leadership_lost) = tokio::sync::watch::channel(false);
    let controller_stop = {
        let shutdown = shutdown.clone();
        async move {
            match lost {
                Some(lost) => tokio::select! {
                    () = shutdown => {}
                    Ok(()) = lost => {
                        let _ = mark_lost.send(true);
                    }
                },
                None => shutdown.await,
            }
        }
    };

    // Only the operator's own children are cached: they carry its label.
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let namespace = settings.namespace;
    let controller = Controller::new(shops.clone(), watcher::Config::default());
    let store = controller.store();
    metrics.count_pending_with({
        let store = store.clone();
        // Weak: the context owns the metrics, which own this.
        let context = Arc::downgrade(&context);
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
    let peers = Arc::new(PeerTrigger::new(store.clone()));
    let trigger = peers.clone();
    let controller = controller
        .with_config(runtime::Config::default().concurrency(CONCURRENCY))
        .owns(api::<Deployment>(&client, &namespace), owned.clone())
        .owns(api::<Service>(&client, &namespace), owned.clone())
        .owns(
            api::<HorizontalPodAutoscaler>(&client, &namespace),
            owned.clone(),
        )
        .owns(
            api::<PodDisruptionBudget>(&client, &namespace),
            owned.clone(),
        )
        .owns(api::<NetworkPolicy>(&client, &namespace), owned.clone())
        .owns(api::<ServiceAccount>(&client, &namespace), owned.clone())
        .owns(api::<Secret>(&client, &namespace), owned.clone())
        .owns(api::<ConfigMap>(&client, &namespace), owned.clone())
        .owns(api::<StatefulSet>(&client, &namespace), owned)
        // A ShopService's children depend on its whole namespace (dependency URLs and ports,
        // network policies, the gateway's route table): a change to one spec reconciles its
        // peers too.
        .watches(shops, watcher::Config::default(), move |shop| {
            peers.peers_of(&shop)
        })
        .graceful_shutdown_on(controller_stop);

    let readiness = tokio::spawn({
        let metrics = metrics.clone();
        let context = context.clone();
        async move {
            // Polled again every second: the store wakes only the last task that waited on
            // it (a oneshot channel), and the controller itself waits on it too.
            loop {
                match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
                    Ok(Ok(())) => break,
                    Ok(Err(_)) => return,
                    Err(_) => continue,
                }
            }
            let _ = context.synced_shops.set(trigger);
            metrics.set_ready();
            info!("ShopService cache synced; ready");
        }
    });

    let controller =
        controller
            .run(reconcile, error_policy, context)
            .for_each(|result| async move {
                match result {
                    // Logged with its backoff by `error_policy`.
                    Ok(_) | Err(runtime::Error::ReconcilerFailed(..)) => {}
                    // Mostly watch errors; the watchers retry with their own backoff.
                    Err(e) => warn!(error = %e, "controller"),
                }
            });
    info!("shop-operator started");
    controller.await;
    readiness.abort();
    if let Some(keeper) = keeper {
        keeper.abort();
    }
    if *leadership_lost.borrow() {
        // Another replica may be reconciling already: stop at once, and let Kubernetes
        // restart this one as a standby.
        anyhow::bail!("lost the leader lease");
    }
    if let Some(election) = &settings.leader_election {
        election.resign().await;
    }
    http.await??;
    info!("shop-operator stopped");
    Ok(())
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
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
        let result = finalizer(&shops, FINALIZER, shop, |event| async {
            match event {
                finalizer::Event::Apply(shop) => reconcile::apply(shop, &ctx).await,
                finalizer::Event::Cleanup(shop) => reconcile::cleanup(shop, &ctx).await,
            }
        })
        .await;
        let result = gone_is_done(result).map_err(|e| Error::Finalizer(Box::new(e)));
        let outcome = if result.is_ok() {
            ctx.failures
                .lock()
                .expect("failures lock")
                .remove(&object_ref);
            Outcome::Success
        } else {
            Outcome::Failure
        };
        ctx.metrics.record(outcome, started.elapsed());
        result
    }
    .instrument(span)
    .await
}

/// A cleanup that found the ShopService gone when it came to remove the finalizer is done,
/// not failed: a stale cache ran the cleanup a second time (deleting several ShopServices
/// reconciles their peers) after the first one had already let the object go.
fn gone_is_done(
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

fn error_policy(shop: Arc<ShopService>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = {
        let mut failures = ctx.failures.lock().expect("failures lock");
        let count = failures
            .entry(ObjectRef::from_obj(shop.as_ref()))
            .or_insert(0);
        *count = count.saturating_add(1);
        *count
    };
    let retry = ctx.backoff(failures);
    error!(
        shopservice = %shop.name_any(),
        namespace = %shop.namespace().unwrap_or_default(),
        error = %error,
        failures,
        retry_in_ms = retry.as_millis() as u64,
        "reconcile failed"
    );
    let note = format!(
        "{error} (failure {failures}; retrying in {}s)",
        retry.as_secs()
    );
    tokio::spawn(async move {
        ctx.publish(
            &shop,
            EventType::Warning,
            "ReconcileFailed",
            "Reconcile",
            note,
        )
        .await;
    });
    Action::requeue(retry)
}

#[cfg(test)]
mod tests {
    use kube::core::Status;

    use super::*;

    fn api_error(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure("refused", reason).with_code(code)))
    }

    #[test]
    fn a_finalizer_already_removed_is_not_a_failure() {
        let gone = finalizer::Error::RemoveFinalizer(api_error(404, "NotFound"));
        assert!(gone_is_done(Err(gone)).is_ok());
        let conflict = finalizer::Error::RemoveFinalizer(api_error(409, "Conflict"));
        assert!(gone_is_done(Err(conflict)).is_err());
        let cleanup = finalizer::Error::CleanupFailed(Error::NotNamespaced);
        assert!(gone_is_done(Err(cleanup)).is_err());
    }
}
