//! What every reconcile shares ([`Context`]), how it fails ([`Error`]) and what it tells
//! people ([`Note`], published as Kubernetes Events).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backon::BackoffBuilder;
use kube::api::ListParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource};
use tracing::warn;

use super::cache::ChildCache;
use super::metrics::Metrics;
use super::peers::PeerTrigger;
use crate::build::BuildError;
use crate::build::common::MANAGER;
use crate::crd::ShopService;

/// The first retry after a failure, doubled on each further failure up to the cap.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// The API server refuses an Event whose note is longer than 1 kB.
const MAX_EVENT_NOTE: usize = 1024;

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
    pub(super) fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let action = action.into();
        move |error| Error::Kube { action, error }
    }

    /// The reason, in CamelCase, a failed reconcile gives in the ShopService's conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube {
                error: kube::Error::Api(status),
                ..
            } if status.code == 403 => "Forbidden",
            Error::Kube {
                error: kube::Error::Api(_),
                ..
            } => "ApiRefused",
            Error::Kube { .. } => "ApiUnreachable",
            Error::Build(_) => "BuildFailed",
            Error::NotNamespaced => "NotNamespaced",
            Error::CredentialsWithoutPassword { .. } => "CredentialsInvalid",
            Error::SharedCleanupPending { .. } => "CleanupPending",
            Error::Random => "RandomFailed",
            Error::Finalizer(error) => match error.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.reason()
                }
                _ => "FinalizerFailed",
            },
        }
    }

    /// What a failed reconcile says in the ShopService's conditions: the error without the
    /// finalizer helper's wrapping, which names no step a person knows.
    pub fn message(&self) -> String {
        match self {
            Error::Finalizer(error) => match error.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.message()
                }
                other => other.to_string(),
            },
            other => other.to_string(),
        }
    }
}

/// An Event about the ShopService being reconciled, as a step's result asks for it; the
/// reconcile publishes them once the steps are done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    pub reason: String,
    /// What the operator was doing: `Provision`, `Prune`, `Reconcile`, `Cleanup`.
    pub action: &'static str,
    pub message: String,
}

impl Note {
    pub fn normal(reason: &str, action: &'static str, message: String) -> Note {
        Note {
            type_: EventType::Normal,
            reason: reason.into(),
            action,
            message,
        }
    }

    pub fn warning(reason: &str, action: &'static str, message: String) -> Note {
        Note {
            type_: EventType::Warning,
            ..Note::normal(reason, action, message)
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub default_image: String,
    pub postgres_image: String,
    /// How long after its deletion a ShopService with a Shared database and `deletionPolicy:
    /// Delete` waits for the shared server before letting go.
    pub shared_cleanup_timeout: Duration,
    /// Publishes the warnings. Its cache turns a warning repeated within six minutes (a
    /// reconcile failing again) into a count on the first Event, and holds every Event it
    /// published for those six minutes.
    recorder: Recorder,
    reporter: Reporter,
    pub(super) random: ring::rand::SystemRandom,
    pub(super) metrics: Arc<Metrics>,
    /// Consecutive failures per ShopService, for its backoff; cleared by a success.
    pub(super) failures: Mutex<HashMap<ObjectRef<ShopService>, u32>>,
    /// The controller's cache of ShopServices (through the peer trigger, which knows whether
    /// it is up to date), once its first list is complete: reconciles read a ShopService's
    /// peers from it instead of listing them from the API server each time (a list per
    /// reconcile made N ShopServices cost N² reads).
    pub(super) synced_shops: OnceLock<Arc<PeerTrigger>>,
    /// The children as the watches see them, and what was applied last: an apply that would
    /// change nothing is skipped.
    pub(super) children: Arc<ChildCache>,
}

impl Context {
    pub fn new(
        client: Client,
        default_image: String,
        postgres_image: String,
        shared_cleanup_timeout: Duration,
        metrics: Arc<Metrics>,
        children: Arc<ChildCache>,
    ) -> Context {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            default_image,
            postgres_image,
            shared_cleanup_timeout,
            random: ring::rand::SystemRandom::new(),
            metrics,
            failures: Mutex::default(),
            synced_shops: OnceLock::new(),
            children,
        }
    }

    /// Every ShopService of `namespace`: from the cache once it is synced and up to date, from
    /// the API server otherwise (a reconcile must never build from a stale picture of its
    /// peers: nothing would trigger it again).
    pub async fn namespace_services(
        &self,
        namespace: &str,
    ) -> Result<Vec<Arc<ShopService>>, Error> {
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
                .items
                .into_iter()
                .map(Arc::new)
                .collect(),
        )
    }

    /// Publishes `notes` as Kubernetes Events about `shop`, in order. A failure to publish is
    /// logged, never fatal: events are for people, the reconcile does not depend on them.
    pub async fn publish(&self, shop: &ShopService, notes: Vec<Note>) {
        let regarding = shop.object_ref(&());
        for note in notes {
            let event = Event {
                type_: note.type_,
                reason: note.reason,
                note: Some(truncate(note.message, MAX_EVENT_NOTE)),
                action: note.action.into(),
                secondary: None,
            };
            // Normal Events do not repeat (each marks a change), so they go through a
            // recorder without a memory: the shared one's cache held ~9 MB of them at 1,000
            // new ShopServices (docs/benchmarks.md).
            let recorder = match event.type_ {
                EventType::Warning => self.recorder.clone(),
                EventType::Normal => Recorder::new(self.client.clone(), self.reporter.clone()),
            };
            if let Err(e) = recorder.publish(&event, &regarding).await {
                warn!(error = %e, reason = %event.reason, "could not publish an event");
            }
        }
    }
}

/// The wait before retrying a ShopService after its `failures`-th consecutive failure:
/// exponential with "equal jitter" (between half and all of the exponential value), so
/// that objects failing together do not retry together.
pub(super) fn backoff(failures: u32) -> Duration {
    shop_kit::client::equal_jitter(FIRST_RETRY, MAX_RETRY)
        .build()
        .nth(failures.clamp(1, 32) as usize - 1)
        .expect("a schedule without a maximum never ends")
}

pub(super) fn truncate(mut text: String, max: usize) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_from_a_second_to_five_minutes_with_equal_jitter() {
        for failures in 1..=40u32 {
            let exponential = FIRST_RETRY
                .saturating_mul(2u32.saturating_pow(failures - 1))
                .min(MAX_RETRY);
            for _ in 0..20 {
                let wait = backoff(failures);
                // backon doubles in f32: allow a millisecond either side.
                assert!(
                    wait + Duration::from_millis(1) >= exponential / 2
                        && wait <= exponential + Duration::from_millis(1),
                    "failure {failures}: waited {wait:?}, expected {:?} to {exponential:?}",
                    exponential / 2
                );
            }
        }
        let spread: std::collections::HashSet<_> = (0..20).map(|_| backoff(5)).collect();
        assert!(spread.len() > 1, "the waits are jittered");
    }
}
