//! Leader election on a `coordination.k8s.io` Lease: several replicas of the operator can run
//! for availability while one reconciles. The others wait and take over once the leader's
//! lease has not been renewed for a whole lease duration, or at once when it resigns on
//! shutdown.
//!
//! As in client-go, expiry is judged by the local clock: a contender notes when it first saw
//! the current holder's renewal and waits a lease duration from then, so clock skew between
//! machines does not matter. Writes carry the resourceVersion read just before, so two
//! contenders cannot both take the lease.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tracing::warn;

/// The Lease's name, in the namespace the operator runs in.
pub const LEASE_NAME: &str = "shop-operator";

pub struct LeaderElection {
    leases: Api<Lease>,
    lease_name: String,
    identity: String,
    lease_duration: Duration,
    observed: Mutex<Option<Observation>>,
}

/// The holder and renewal of the lease last seen, and when this replica saw them.
struct Observation {
    holder: Option<String>,
    renewed: Option<MicroTime>,
    at: Instant,
}

impl LeaderElection {
    /// Contends for the Lease `lease_name` (normally [`LEASE_NAME`]) in `leases`' namespace
    /// as `identity` (the pod's name: unique among the replicas).
    pub fn new(
        leases: Api<Lease>,
        lease_name: impl Into<String>,
        identity: impl Into<String>,
        lease_duration: Duration,
    ) -> Self {
        LeaderElection {
            leases,
            lease_name: lease_name.into(),
            identity: identity.into(),
            lease_duration,
            observed: Mutex::default(),
        }
    }

    /// The namespace of the Lease, for the startup check of permissions.
    pub fn namespace(&self) -> Option<&str> {
        self.leases.namespace()
    }

    fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_hold().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "could not read or take the leader lease"),
            }
            tokio::time::sleep(self.renew_interval()).await;
        }
    }

    /// Renews the lease and returns once it is lost: another replica holds it, or it could
    /// not be renewed for a whole lease duration.
    pub async fn keep(&self) {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.renew_interval()).await;
            match self.try_hold().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    warn!(error = %e, "could not renew the leader lease");
                    if renewed.elapsed() >= self.lease_duration {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up, so that a standby replica takes over without waiting for it to
    /// expire. Best effort: on failure the lease simply expires.
    pub async fn resign(&self) {
        let Ok(Some(mut lease)) = self.leases.get_opt(&self.lease_name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return;
        }
        spec.holder_identity = None;
        if let Err(e) = self
            .leases
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await
        {
            warn!(error = %e, "could not resign the leader lease; it will expire");
        }
    }

    /// Takes or renews the lease if it is this replica's, free or expired; `Ok(false)` when
    /// another replica holds it.
    async fn try_hold(&self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.leases.get_opt(&self.lease_name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.lease_name.clone()),
                    ..Default::default()
                },
                spec: Some(self.held(now.clone(), now, 0)),
            };
            return won(self.leases.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(&self.identity);
        if !mine && !self.free_or_expired(&spec) {
            return Ok(false);
        }
        let (acquired, transitions) = match (mine, spec.acquire_time) {
            (true, Some(acquired)) => (acquired, spec.lease_transitions.unwrap_or(0)),
            _ => (now.clone(), spec.lease_transitions.unwrap_or(0) + 1),
        };
        lease.spec = Some(self.held(acquired, now, transitions));
        // `replace` sends the resourceVersion just read: if another replica wrote the lease
        // in between, this write is refused with a conflict.
        won(self
            .leases
            .replace(&self.lease_name, &PostParams::default(), &lease)
            .await)
    }

    /// Whether nobody holds the lease, or its holder has not renewed it for a lease duration
    /// as measured here.
    fn free_or_expired(&self, spec: &LeaseSpec) -> bool {
        if spec.holder_identity.is_none() {
            return true;
        }
        let mut observed = self.observed.lock().expect("observed lock");
        match observed.as_ref() {
            Some(seen)
                if seen.holder == spec.holder_identity && seen.renewed == spec.renew_time =>
            {
                seen.at.elapsed() >= self.lease_duration
            }
            _ => {
                *observed = Some(Observation {
                    holder: spec.holder_identity.clone(),
                    renewed: spec.renew_time.clone(),
                    at: Instant::now(),
                });
                false
            }
        }
    }

    fn held(&self, acquired: MicroTime, renewed: MicroTime, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired),
            renew_time: Some(renewed),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }
}

/// A write that lost the race (409 Conflict, or 409 AlreadyExists on create) is not an
/// error: another replica holds the lease.
fn won(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
