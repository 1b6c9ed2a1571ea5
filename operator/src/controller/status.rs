//! The status of a ShopService, computed from what the apply step got back from the API
//! server. Pure: the clock comes in as an argument, so the same observations give the same
//! status and the operator writes it only when something really changed. Also the Events a
//! change of status deserves ([`notes`]).

use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::context::Note;
use crate::build::Owner;
use crate::build::common::names;
use crate::build::database::DatabaseLogin;
use crate::controller::shared_database::SharedState;
use crate::controller::storage::Storage;
use crate::crd::{DatabaseMode, DatabasePhase, DatabaseStatus, ShopService, ShopServiceStatus};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const DATABASE_READY: &str = "DatabaseReady";
/// `DatabaseReady`'s reason while a Dedicated database's volume grows.
pub const RESIZING: &str = "Resizing";

/// What the operator saw of the children after applying them.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    pub deployment: &'a Deployment,
    /// The StatefulSet of a Dedicated database.
    pub database: Option<&'a StatefulSet>,
    /// `dependsOn` entries that name no ShopService in the namespace.
    pub missing_dependencies: &'a [&'a str],
    /// What the reconcile found of a Shared database.
    pub shared: Option<&'a SharedState>,
    /// What became of a Dedicated database's volume.
    pub storage: Option<&'a Storage>,
}

/// A condition before it is merged with the one already in the status.
struct Computed {
    type_: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
}

impl Computed {
    fn new(type_: &'static str, status: bool, reason: &'static str, message: String) -> Computed {
        Computed {
            type_,
            status,
            reason,
            message,
        }
    }
}

/// The status of `owner`'s ShopService given what was observed.
pub fn compute(owner: &Owner, observed: Observed, now: &Time) -> ShopServiceStatus {
    let shop = owner.shop;
    // Autoscaled: the Deployment starts at one replica until the autoscaler's first sync; the
    // service is not Ready below the minimum its spec promises.
    let minimum = shop.spec.autoscaling.as_ref().map(|a| a.min_replicas);
    let rollout = Rollout::of(observed.deployment, minimum);
    let database = database_state(owner, observed.database, observed.shared, observed.storage);
    let database_ready = database
        .as_ref()
        .is_none_or(|db| db.0 == DatabasePhase::Ready);

    let ready = if rollout.desired == 0 {
        Computed::new(
            READY,
            false,
            "ScaledToZero",
            "no pods are running: spec.replicas is 0".into(),
        )
    } else if rollout.available < rollout.desired {
        Computed::new(
            READY,
            false,
            "PodsUnavailable",
            format!(
                "{} of {} pods available",
                rollout.available, rollout.desired
            ),
        )
    } else if !database_ready {
        Computed::new(
            READY,
            false,
            "DatabaseNotReady",
            "the pods are available but the database is not ready".into(),
        )
    } else {
        Computed::new(
            READY,
            true,
            "Available",
            format!(
                "{} of {} pods available",
                rollout.available, rollout.desired
            ),
        )
    };

    let progressing = match &rollout.deadline_exceeded {
        Some(message) => Computed::new(
            PROGRESSING,
            false,
            "ProgressDeadlineExceeded",
            message.clone(),
        ),
        None if rollout.complete => Computed::new(
            PROGRESSING,
            false,
            "RolloutComplete",
            format!("{} pods run the current version", rollout.updated),
        ),
        None => Computed::new(
            PROGRESSING,
            true,
            "RollingOut",
            format!(
                "{} of {} pods updated, {} available",
                rollout.updated, rollout.desired, rollout.available
            ),
        ),
    };

    let degraded = if let Some(message) = &rollout.deadline_exceeded {
        Computed::new(DEGRADED, true, "ProgressDeadlineExceeded", message.clone())
    } else if let Some(message) = &rollout.replica_failure {
        Computed::new(DEGRADED, true, "ReplicaFailure", message.clone())
    } else if let Some((DatabasePhase::Failed, _, message)) = &database {
        Computed::new(DEGRADED, true, "DatabaseFailed", message.clone())
    } else if let Some(Storage::CannotGrow {
        reason, message, ..
    }) = observed.storage
    {
        Computed::new(DEGRADED, true, reason, message.clone())
    } else if !observed.missing_dependencies.is_empty() {
        Computed::new(
            DEGRADED,
            true,
            "DependencyMissing",
            format!(
                "spec.dependsOn names ShopServices that do not exist in this namespace: {}; their URLs point at nothing until they are created",
                observed.missing_dependencies.join(", ")
            ),
        )
    } else {
        Computed::new(
            DEGRADED,
            false,
            "AsExpected",
            "nothing needs attention".into(),
        )
    };

    let database_condition = match &database {
        None => Computed::new(
            DATABASE_READY,
            true,
            "NoDatabase",
            "spec.database.mode is None".into(),
        ),
        Some((phase, reason, message)) => Computed::new(
            DATABASE_READY,
            *phase == DatabasePhase::Ready,
            reason,
            message.clone(),
        ),
    };

    let generation = shop.metadata.generation;
    let previous = shop.status.as_ref();
    ShopServiceStatus {
        observed_generation: generation,
        conditions: [ready, progressing, degraded, database_condition]
            .into_iter()
            .map(|computed| merge(previous, computed, generation, now))
            .collect(),
        replicas: Some(rollout.total),
        ready_replicas: Some(rollout.ready),
        url: Some(names::service_url(
            owner.name,
            owner.namespace,
            shop.spec.port,
        )),
        database: database
            .map(|(phase, _, _)| database_status(owner, phase, observed.shared, observed.storage)),
        selector: Some(owner.selector_string()),
    }
}

/// The status of a paused ShopService: what it was, with `Progressing` saying why nothing
/// moves.
pub fn paused(shop: &ShopService, now: &Time) -> ShopServiceStatus {
    let previous = shop.status.as_ref();
    let generation = shop.metadata.generation;
    let condition = merge(
        previous,
        Computed::new(
            PROGRESSING,
            false,
            "Paused",
            "spec.paused is true: the operator leaves this ShopService's objects as they are"
                .into(),
        ),
        generation,
        now,
    );
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    match status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == PROGRESSING)
    {
        Some(existing) => *existing = condition,
        None => status.conditions.push(condition),
    }
    status
}

/// The status of a ShopService whose reconcile failed with `reason` and `message`: not
/// Ready and Degraded, both saying why, at the generation that failed; what was observed
/// before (replicas, URL, database) is kept. The message names no attempt or retry time, so
/// a reconcile that keeps failing the same way writes the status once.
pub fn failed(
    shop: &ShopService,
    reason: &'static str,
    message: &str,
    now: &Time,
) -> ShopServiceStatus {
    let previous = shop.status.as_ref();
    let generation = shop.metadata.generation;
    let message = format!("the last reconcile failed: {message}");
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    for (type_, value) in [(READY, false), (DEGRADED, true)] {
        let condition = merge(
            previous,
            Computed::new(type_, value, reason, message.clone()),
            generation,
            now,
        );
        match status.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(existing) => *existing = condition,
            None => status.conditions.push(condition),
        }
    }
    status
}

/// The Events a change of status from `before` to `after` deserves: a condition that turned
/// True, or stayed True for another reason, of the two a person wants to hear about (Ready,
/// and Degraded as a Warning with its own reason).
pub fn notes(before: Option<&ShopServiceStatus>, after: &ShopServiceStatus) -> Vec<Note> {
    let newly_true = |type_: &str| {
        let now = find_condition(Some(after), type_).filter(|c| c.status == "True");
        let then = find_condition(before, type_).filter(|c| c.status == "True");
        now.filter(|now| then.is_none_or(|then| then.reason != now.reason))
    };
    let mut notes = Vec::new();
    if let Some(ready) = newly_true(READY) {
        notes.push(Note::normal("Ready", "Reconcile", ready.message.clone()));
    }
    if let Some(degraded) = newly_true(DEGRADED) {
        notes.push(Note::warning(
            &degraded.reason,
            "Reconcile",
            degraded.message.clone(),
        ));
    }
    let database_reason = |status| find_condition(status, DATABASE_READY).map(|c| &c.reason);
    if database_reason(before).is_some_and(|reason| reason == RESIZING)
        && database_reason(Some(after)).is_some_and(|reason| reason == "Ready")
    {
        let capacity = after
            .database
            .as_ref()
            .and_then(|database| database.capacity.as_deref())
            .unwrap_or("the requested size");
        notes.push(Note::normal(
            "StorageResized",
            "Reconcile",
            format!("the database's volume has grown to {capacity}"),
        ));
    }
    notes
}

fn find_condition<'a>(status: Option<&'a ShopServiceStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

/// The condition as it should be stored: `lastTransitionTime` stays as it was unless the
/// condition's status changed, so rewriting the same facts changes nothing.
fn merge(
    previous: Option<&ShopServiceStatus>,
    computed: Computed,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if computed.status { "True" } else { "False" };
    let last_transition_time = previous
        .into_iter()
        .flat_map(|previous| &previous.conditions)
        .find(|c| c.type_ == computed.type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: computed.type_.into(),
        status: status.into(),
        reason: computed.reason.into(),
        message: computed.message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// What [`compute`] reads of a Deployment, as a hash: a change of the Deployment's status
/// that leaves it equal (a condition's timestamps, `unavailableReplicas`, the collision count)
/// cannot change the ShopService's status, so its watch event reconciles nothing.
pub fn deployment_reading(deployment: &Deployment) -> u64 {
    hash(&Rollout::of(deployment, None))
}

/// What [`compute`] reads of a Dedicated database's StatefulSet, as a hash (see
/// [`deployment_reading`]).
pub fn database_reading(stateful_set: &StatefulSet) -> u64 {
    hash(&DatabasePod::of(stateful_set))
}

fn hash(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// The rollout of the Deployment, in numbers.
#[derive(Hash)]
struct Rollout {
    desired: i32,
    total: i32,
    updated: i32,
    ready: i32,
    available: i32,
    /// The rollout reached its goal: the Deployment controller saw the current spec, every
    /// pod runs it and is available, and no old pod is left.
    complete: bool,
    /// The Deployment controller gave up waiting for the rollout (`progressDeadlineSeconds`).
    deadline_exceeded: Option<String>,
    /// Pods could not be created (for example, refused by admission).
    replica_failure: Option<String>,
}

impl Rollout {
    /// `minimum`: the autoscaler's minReplicas, when the ShopService is autoscaled.
    fn of(deployment: &Deployment, minimum: Option<i32>) -> Rollout {
        let status = deployment.status.clone().unwrap_or_default();
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.replicas)
            .unwrap_or(1)
            .max(minimum.unwrap_or(0));
        let seen = status.observed_generation >= deployment.metadata.generation;
        let updated = status.updated_replicas.unwrap_or(0);
        let available = status.available_replicas.unwrap_or(0);
        let total = status.replicas.unwrap_or(0);
        let conditions = status.conditions.as_deref().unwrap_or_default();
        let condition = |type_: &str| -> Option<&DeploymentCondition> {
            conditions.iter().find(|c| c.type_ == type_)
        };
        Rollout {
            desired,
            total,
            updated,
            ready: status.ready_replicas.unwrap_or(0),
            available,
            complete: seen && updated >= desired && available >= desired && total == updated,
            deadline_exceeded: condition("Progressing")
                .filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
                .map(|c| c.message.clone().unwrap_or_default()),
            replica_failure: condition("ReplicaFailure")
                .filter(|c| c.status == "True")
                .map(|c| c.message.clone().unwrap_or_default()),
        }
    }
}

/// The phase of the database, with the reason and message of `DatabaseReady`; `None` when
/// the ShopService has no database.
fn database_state(
    owner: &Owner,
    stateful_set: Option<&StatefulSet>,
    shared: Option<&SharedState>,
    storage: Option<&Storage>,
) -> Option<(DatabasePhase, &'static str, String)> {
    match owner.spec().database.mode {
        DatabaseMode::None => None,
        DatabaseMode::Shared => Some(match shared {
            None => (
                DatabasePhase::Provisioning,
                "Provisioning",
                "the role and database on the shared server are being created".into(),
            ),
            Some(SharedState {
                outcome: Ok(()),
                identifier,
                host,
            }) => (
                DatabasePhase::Ready,
                "Ready",
                format!(
                    "role {identifier} logs in to database {identifier} on the shared server {}",
                    host.as_deref().unwrap_or_default()
                ),
            ),
            Some(SharedState {
                outcome: Err(problem),
                ..
            }) => (
                DatabasePhase::Failed,
                problem.reason,
                problem.message.clone(),
            ),
        }),
        DatabaseMode::Dedicated => {
            let name = names::database(owner.name);
            let Some(stateful_set) = stateful_set else {
                return Some((
                    DatabasePhase::Provisioning,
                    "Provisioning",
                    format!("StatefulSet {name} is being created"),
                ));
            };
            let DatabasePod {
                seen,
                ready,
                current,
            } = DatabasePod::of(stateful_set);
            let growing = match storage {
                Some(Storage::Growing {
                    capacity,
                    requested,
                }) => Some(format!(
                    "its volume grows from {} to {requested}",
                    capacity.as_deref().unwrap_or("its first size")
                )),
                _ => None,
            };
            Some(if seen && ready && current {
                match growing {
                    // Volumes grow online: the database stays usable meanwhile.
                    Some(growing) => (
                        DatabasePhase::Ready,
                        RESIZING,
                        format!("PostgreSQL ({name}-0) is ready; {growing}"),
                    ),
                    None => (
                        DatabasePhase::Ready,
                        "Ready",
                        format!("PostgreSQL ({name}-0) is ready"),
                    ),
                }
            } else {
                (
                    DatabasePhase::Provisioning,
                    "Provisioning",
                    format!("waiting for PostgreSQL ({name}-0) to become ready"),
                )
            })
        }
    }
}

/// The database's pod as its StatefulSet's status tells it.
#[derive(Hash)]
struct DatabasePod {
    /// The StatefulSet controller saw the current spec.
    seen: bool,
    ready: bool,
    /// The pod runs the current revision.
    current: bool,
}

impl DatabasePod {
    fn of(stateful_set: &StatefulSet) -> DatabasePod {
        let status = stateful_set.status.clone().unwrap_or_default();
        DatabasePod {
            seen: status.observed_generation >= stateful_set.metadata.generation,
            ready: status.ready_replicas.unwrap_or(0) >= 1,
            current: status.update_revision.is_none()
                || status.current_revision == status.update_revision,
        }
    }
}

fn database_status(
    owner: &Owner,
    phase: DatabasePhase,
    shared: Option<&SharedState>,
    storage: Option<&Storage>,
) -> DatabaseStatus {
    // The host is all of the login that status may show; the password is never read here.
    let host = match owner.spec().database.mode {
        DatabaseMode::Dedicated => Some(DatabaseLogin::dedicated(owner, "").host),
        // Known once the admin URL was read, which is also when the Secret is written.
        DatabaseMode::Shared => shared.and_then(|shared| shared.host.clone()),
        DatabaseMode::None => None,
    };
    // A reconcile that did not read the claim keeps what the last one read.
    let capacity = storage
        .and_then(Storage::capacity)
        .or_else(|| crate::controller::storage::shown_capacity(owner))
        .map(str::to_owned);
    DatabaseStatus {
        phase,
        secret_name: host
            .is_some()
            .then(|| names::credentials_secret(owner.name)),
        host,
        capacity: capacity.filter(|_| owner.spec().database.mode == DatabaseMode::Dedicated),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus, StatefulSetStatus};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::jiff::Timestamp;

    use kube::runtime::events::EventType;

    use super::*;
    use crate::build::fixtures::shop;
    use crate::crd::Component;

    fn time(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn deployment(desired: i32, status: DeploymentStatus) -> Deployment {
        let mut deployment = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(1),
                ..status
            }),
            ..Default::default()
        };
        deployment.metadata.generation = Some(1);
        deployment
    }

    fn available(replicas: i32) -> DeploymentStatus {
        DeploymentStatus {
            replicas: Some(replicas),
            updated_replicas: Some(replicas),
            ready_replicas: Some(replicas),
            available_replicas: Some(replicas),
            ..Default::default()
        }
    }

    fn condition<'a>(status: &'a ShopServiceStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    fn observe(deployment: &Deployment) -> Observed<'_> {
        Observed {
            deployment,
            database: None,
            missing_dependencies: &[],
            shared: None,
            storage: None,
        }
    }

    #[test]
    fn an_available_deployment_is_ready_with_the_url_and_selector() {
        let cart = shop("cart", Some(Component::Cart));
        let owner = Owner::new(&cart).unwrap();
        let deployment = deployment(2, available(2));
        let status = compute(&owner, observe(&deployment), &time(100));
        assert_eq!(condition(&status, READY).status, "True");
        assert_eq!(condition(&status, PROGRESSING).reason, "RolloutComplete");
        assert_eq!(condition(&status, DEGRADED).status, "False");
        assert_eq!(condition(&status, DATABASE_READY).reason, "NoDatabase");
        assert_eq!(status.url.as_deref(), Some("http://cart.shop.svc:8080"));
        assert_eq!(
            status.selector.as_deref(),
            Some("app.kubernetes.io/component=server,app.kubernetes.io/instance=cart")
        );
        assert_eq!((status.replicas, status.ready_replicas), (Some(2), Some(2)));
        assert!(status.database.is_none());
    }

    #[test]
    fn an_autoscaled_service_is_not_ready_below_its_minimum() {
        let mut gateway = shop("gateway", Some(Component::Gateway));
        gateway.spec.autoscaling = Some(crate::crd::Autoscaling {
            min_replicas: 2,
            max_replicas: 6,
            target_cpu_utilization_percentage: 70,
        });
        let owner = Owner::new(&gateway).unwrap();
        // Created without replicas (the autoscaler's field): one pod until its first sync.
        let mut starting = deployment(1, available(1));
        starting.spec.as_mut().unwrap().replicas = None;
        let status = compute(&owner, observe(&starting), &time(100));
        let ready = condition(&status, READY);
        assert_eq!(ready.status, "False");
        assert_eq!(ready.message, "1 of 2 pods available");
        let scaled = deployment(2, available(2));
        let status = compute(&owner, observe(&scaled), &time(100));
        assert_eq!(condition(&status, READY).status, "True");
    }

    #[test]
    fn transition_times_move_only_when_a_condition_flips() {
        let mut cart = shop("cart", Some(Component::Cart));
        let rolling = deployment(
            2,
            DeploymentStatus {
                available_replicas: Some(1),
                ..available(2)
            },
        );
        let first = compute(&Owner::new(&cart).unwrap(), observe(&rolling), &time(100));
        cart.status = Some(first.clone());

        let again = compute(&Owner::new(&cart).unwrap(), observe(&rolling), &time(200));
        assert_eq!(again, first, "the same observations give the same status");

        let done = deployment(2, available(2));
        let later = compute(&Owner::new(&cart).unwrap(), observe(&done), &time(300));
        assert_eq!(condition(&later, READY).last_transition_time, time(300));
        assert_eq!(
            condition(&later, DEGRADED).last_transition_time,
            time(100),
            "Degraded stayed False"
        );
    }

    #[test]
    fn a_rollout_past_its_deadline_is_degraded() {
        let cart = shop("cart", Some(Component::Cart));
        let stuck = deployment(
            1,
            DeploymentStatus {
                conditions: Some(vec![DeploymentCondition {
                    type_: "Progressing".into(),
                    status: "False".into(),
                    reason: Some("ProgressDeadlineExceeded".into()),
                    message: Some("ReplicaSet \"cart-1\" has timed out progressing.".into()),
                    ..Default::default()
                }]),
                updated_replicas: Some(1),
                replicas: Some(2),
                available_replicas: Some(1),
                ready_replicas: Some(1),
                ..Default::default()
            },
        );
        let status = compute(&Owner::new(&cart).unwrap(), observe(&stuck), &time(1));
        let degraded = condition(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "ProgressDeadlineExceeded")
        );
        assert!(degraded.message.contains("timed out"));
        assert_eq!(condition(&status, PROGRESSING).status, "False");
    }

    #[test]
    fn missing_dependencies_are_reported_without_blocking_readiness() {
        let cart = shop("cart", Some(Component::Cart));
        let deployment = deployment(1, available(1));
        let observed = Observed {
            missing_dependencies: &["catalog"],
            ..observe(&deployment)
        };
        let status = compute(&Owner::new(&cart).unwrap(), observed, &time(1));
        assert_eq!(condition(&status, READY).status, "True");
        let degraded = condition(&status, DEGRADED);
        assert_eq!(degraded.reason, "DependencyMissing");
        assert!(degraded.message.contains("catalog"));
    }

    #[test]
    fn a_dedicated_database_holds_readiness_until_postgres_is_ready() {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.database.mode = DatabaseMode::Dedicated;
        let owner = Owner::new(&cart).unwrap();
        let deployment = deployment(1, available(1));
        let mut stateful_set = StatefulSet::default();
        let observed = Observed {
            database: Some(&stateful_set),
            ..observe(&deployment)
        };
        let status = compute(&owner, observed, &time(1));
        assert_eq!(condition(&status, READY).reason, "DatabaseNotReady");
        assert_eq!(condition(&status, DATABASE_READY).status, "False");
        let database = status.database.unwrap();
        assert_eq!(database.phase, DatabasePhase::Provisioning);
        assert_eq!(database.secret_name.as_deref(), Some("cart-db-credentials"));
        assert_eq!(database.host.as_deref(), Some("cart-db.shop.svc"));

        stateful_set.status = Some(StatefulSetStatus {
            ready_replicas: Some(1),
            current_revision: Some("r1".into()),
            update_revision: Some("r1".into()),
            ..Default::default()
        });
        let observed = Observed {
            database: Some(&stateful_set),
            ..observe(&deployment)
        };
        let status = compute(&owner, observed, &time(1));
        assert_eq!(condition(&status, READY).status, "True");
        assert_eq!(status.database.unwrap().phase, DatabasePhase::Ready);
    }

    /// The StatefulSet of a Dedicated database whose PostgreSQL is ready.
    fn ready_database() -> StatefulSet {
        StatefulSet {
            status: Some(StatefulSetStatus {
                ready_replicas: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_growing_volume_is_reported_and_announced_once_grown() {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.database.mode = DatabaseMode::Dedicated;
        cart.spec.database.storage = Quantity("2Gi".into());
        let deployment = deployment(1, available(1));
        let stateful_set = ready_database();
        let growing = Storage::Growing {
            capacity: Some("1Gi".into()),
            requested: "2Gi".into(),
        };
        let observe_storage = |storage| Observed {
            database: Some(&stateful_set),
            storage: Some(storage),
            ..observe(&deployment)
        };
        let status = compute(
            &Owner::new(&cart).unwrap(),
            observe_storage(&growing),
            &time(1),
        );
        let database_ready = condition(&status, DATABASE_READY);
        assert_eq!(
            (
                database_ready.status.as_str(),
                database_ready.reason.as_str()
            ),
            ("True", RESIZING),
            "a volume grows online"
        );
        assert!(
            database_ready.message.contains("grows from 1Gi to 2Gi"),
            "{}",
            database_ready.message
        );
        assert_eq!(condition(&status, READY).status, "True");
        assert_eq!(
            status.database.as_ref().unwrap().capacity.as_deref(),
            Some("1Gi")
        );

        // The next reconcile finds it grown: one Event says so; its status shows the size.
        cart.status = Some(status);
        let grown = Storage::Enough {
            capacity: "2Gi".into(),
        };
        let after = compute(
            &Owner::new(&cart).unwrap(),
            observe_storage(&grown),
            &time(2),
        );
        assert_eq!(condition(&after, DATABASE_READY).reason, "Ready");
        assert_eq!(
            after.database.as_ref().unwrap().capacity.as_deref(),
            Some("2Gi")
        );
        let notes = notes(cart.status.as_ref(), &after);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].reason, "StorageResized");

        // A reconcile that did not read the claim keeps the size last read.
        cart.status = Some(after);
        let kept = compute(
            &Owner::new(&cart).unwrap(),
            observe_storage(&Storage::Known),
            &time(3),
        );
        assert_eq!(kept.database.unwrap().capacity.as_deref(), Some("2Gi"));
    }

    #[test]
    fn a_volume_that_cannot_grow_degrades_without_unreadying() {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.database.mode = DatabaseMode::Dedicated;
        let deployment = deployment(1, available(1));
        let stateful_set = ready_database();
        let stuck = Storage::CannotGrow {
            reason: "StorageNotExpandable",
            capacity: Some("1Gi".into()),
            message: "StorageClass local does not set allowVolumeExpansion: true".into(),
        };
        let observed = Observed {
            database: Some(&stateful_set),
            storage: Some(&stuck),
            ..observe(&deployment)
        };
        let status = compute(&Owner::new(&cart).unwrap(), observed, &time(1));
        assert_eq!(condition(&status, READY).status, "True");
        let degraded = condition(&status, DEGRADED);
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "StorageNotExpandable")
        );
        assert!(degraded.message.contains("allowVolumeExpansion"));
    }

    #[test]
    fn a_shared_database_is_ready_once_its_role_logs_in_and_says_why_not_otherwise() {
        use crate::controller::shared_database::{Problem, SharedState, UNREACHABLE};
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.database.mode = DatabaseMode::Shared;
        let owner = Owner::new(&cart).unwrap();
        let deployment = deployment(1, available(1));

        let unreachable = SharedState {
            host: Some("pg.example.org".into()),
            identifier: "shop_shop_cart_0123456789ab".into(),
            outcome: Err(Problem::new(
                UNREACHABLE,
                "cannot reach pg.example.org:5432",
            )),
        };
        let observed = Observed {
            shared: Some(&unreachable),
            ..observe(&deployment)
        };
        let status = compute(&owner, observed, &time(1));
        let database_ready = condition(&status, DATABASE_READY);
        assert_eq!(database_ready.status, "False");
        assert_eq!(database_ready.reason, UNREACHABLE);
        assert_eq!(database_ready.message, "cannot reach pg.example.org:5432");
        assert_eq!(condition(&status, READY).reason, "DatabaseNotReady");
        assert_eq!(condition(&status, DEGRADED).reason, "DatabaseFailed");
        let database = status.database.unwrap();
        assert_eq!(database.phase, DatabasePhase::Failed);
        assert_eq!(database.host.as_deref(), Some("pg.example.org"));
        assert_eq!(database.secret_name.as_deref(), Some("cart-db-credentials"));

        let no_url = SharedState {
            host: None,
            outcome: Err(Problem::new("SharedServerSecretMissing", "no Secret")),
            ..unreachable.clone()
        };
        let observed = Observed {
            shared: Some(&no_url),
            ..observe(&deployment)
        };
        let status = compute(&owner, observed, &time(1));
        let database = status.database.unwrap();
        assert_eq!(database.secret_name, None, "no Secret was written");

        let ready = SharedState {
            outcome: Ok(()),
            ..unreachable
        };
        let observed = Observed {
            shared: Some(&ready),
            ..observe(&deployment)
        };
        let status = compute(&owner, observed, &time(1));
        assert_eq!(condition(&status, DATABASE_READY).status, "True");
        assert_eq!(condition(&status, READY).status, "True");
        assert_eq!(status.database.unwrap().phase, DatabasePhase::Ready);
    }

    #[test]
    fn events_announce_a_condition_turning_true_or_changing_reason_once() {
        let cart = shop("cart", Some(Component::Cart));
        let owner = Owner::new(&cart).unwrap();
        let rolling = compute(&owner, observe(&deployment(2, available(1))), &time(1));
        let ready = compute(&owner, observe(&deployment(2, available(2))), &time(2));
        assert_eq!(notes(None, &rolling), []);
        let became_ready = notes(Some(&rolling), &ready);
        assert_eq!(became_ready.len(), 1, "{became_ready:?}");
        assert_eq!(became_ready[0].reason, "Ready");
        assert_eq!(became_ready[0].type_, EventType::Normal);
        assert_eq!(became_ready[0].message, condition(&ready, READY).message);
        assert_eq!(notes(Some(&ready), &ready), [], "still Ready: nothing new");

        let mut degraded = ready.clone();
        let condition = degraded
            .conditions
            .iter_mut()
            .find(|c| c.type_ == DEGRADED)
            .unwrap();
        condition.status = "True".into();
        condition.reason = "RouteConflict".into();
        let warned = notes(Some(&ready), &degraded);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert_eq!(warned[0].type_, EventType::Warning);
        assert_eq!(warned[0].reason, "RouteConflict");
    }

    #[test]
    fn a_failed_reconcile_is_not_ready_and_degraded_and_rewrites_nothing_when_it_fails_again() {
        // Never reconciled: the failure is the whole status.
        let mut cart = shop("cart", Some(Component::Cart));
        cart.metadata.generation = Some(3);
        let first = failed(
            &cart,
            "ApiRefused",
            "apply Service cart: range is full",
            &time(1),
        );
        assert_eq!(first.observed_generation, Some(3));
        for (type_, value) in [(READY, "False"), (DEGRADED, "True")] {
            let condition = condition(&first, type_);
            assert_eq!(condition.status, value);
            assert_eq!(condition.reason, "ApiRefused");
            assert_eq!(
                condition.message,
                "the last reconcile failed: apply Service cart: range is full"
            );
            assert_eq!(condition.observed_generation, Some(3));
        }
        // The same failure again, later: the same status, so nothing is written.
        cart.status = Some(first.clone());
        assert_eq!(
            failed(
                &cart,
                "ApiRefused",
                "apply Service cart: range is full",
                &time(9)
            ),
            first
        );

        // Ready before: the failure keeps what was observed and flips Ready with a new time.
        let deployment = deployment(1, available(1));
        let ready = compute(&Owner::new(&cart).unwrap(), observe(&deployment), &time(1));
        cart.status = Some(ready.clone());
        let broken = failed(&cart, "CredentialsInvalid", "no password", &time(5));
        assert_eq!(broken.url, ready.url);
        assert_eq!(broken.ready_replicas, ready.ready_replicas);
        assert_eq!(condition(&broken, READY).last_transition_time, time(5));
        assert_eq!(
            condition(&broken, DATABASE_READY),
            condition(&ready, DATABASE_READY)
        );
        let warned = notes(Some(&ready), &broken);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert_eq!(warned[0].reason, "CredentialsInvalid");
    }

    #[test]
    fn pausing_keeps_the_status_and_says_so_in_progressing() {
        let mut cart = shop("cart", Some(Component::Cart));
        let deployment = deployment(1, available(1));
        let before = compute(&Owner::new(&cart).unwrap(), observe(&deployment), &time(1));
        cart.status = Some(before.clone());
        cart.metadata.generation = Some(2);
        let status = paused(&cart, &time(5));
        assert_eq!(status.observed_generation, Some(2));
        assert_eq!(condition(&status, PROGRESSING).reason, "Paused");
        assert_eq!(condition(&status, READY), condition(&before, READY));
    }

    #[test]
    fn a_child_status_update_is_read_only_when_it_can_change_the_status() {
        let starting = deployment(
            1,
            DeploymentStatus {
                replicas: Some(1),
                updated_replicas: Some(1),
                unavailable_replicas: Some(1),
                ..Default::default()
            },
        );
        let progressing = |at: i64| DeploymentCondition {
            type_: "Progressing".into(),
            status: "True".into(),
            reason: Some("ReplicaSetUpdated".into()),
            last_update_time: Some(time(at)),
            ..Default::default()
        };
        let mut touched = starting.clone();
        touched.status.as_mut().unwrap().conditions = Some(vec![progressing(100)]);
        let mut touched_again = touched.clone();
        touched_again.status.as_mut().unwrap().conditions = Some(vec![progressing(101)]);
        assert_eq!(deployment_reading(&touched), deployment_reading(&starting));
        assert_eq!(
            deployment_reading(&touched_again),
            deployment_reading(&touched)
        );
        let ready = deployment(1, available(1));
        assert_ne!(deployment_reading(&ready), deployment_reading(&starting));
        let mut stuck = starting.clone();
        stuck.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            reason: Some("ProgressDeadlineExceeded".into()),
            ..progressing(102)
        }]);
        assert_ne!(deployment_reading(&stuck), deployment_reading(&starting));

        let database = |ready: i32, current: &str| {
            let mut stateful_set = StatefulSet::default();
            stateful_set.metadata.generation = Some(1);
            stateful_set.status = Some(StatefulSetStatus {
                observed_generation: Some(1),
                replicas: 1,
                ready_replicas: Some(ready),
                current_revision: Some(current.into()),
                update_revision: Some("db-2".into()),
                ..Default::default()
            });
            stateful_set
        };
        let mut counted = database(1, "db-2");
        counted.status.as_mut().unwrap().available_replicas = Some(1);
        assert_eq!(
            database_reading(&counted),
            database_reading(&database(1, "db-2"))
        );
        assert_ne!(
            database_reading(&database(0, "db-2")),
            database_reading(&database(1, "db-2"))
        );
        assert_ne!(
            database_reading(&database(1, "db-1")),
            database_reading(&database(1, "db-2"))
        );
    }
}
