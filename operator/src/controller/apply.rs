//! The reconcile of a ShopService that is not being deleted, in named steps:
//! dereference (read what the build needs) → build (pure, `crate::build`) → provision a
//! Shared database → apply (server-side, every child in the apply order) → prune (what is no
//! longer wanted, `super::prune`) → status (computed purely in `super::status`, written only
//! when it changed). Each step returns its result, Events included; the caller publishes
//! those once.

use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::debug;

use super::cache;
use super::context::{Context, Error, Note};
use super::credentials::{self, Password};
use super::prune::prune;
use super::shared_database::{self, AdminServer, Problem, SharedState};
use super::status::{self, Observed};
use super::storage;
use crate::build::common::MANAGER;
use crate::build::database;
use crate::build::{self, Child, Owner};
use crate::crd::{DatabaseMode, ShopService, ShopServiceStatus};

/// How often a settled ShopService is reconciled anyway, to repair drift that no watch event
/// reports (an edit by hand to a field the operator does not own, say).
const RESYNC_PERIOD: Duration = Duration::from_secs(300);
/// Up to this much more before each resync, a different amount for each ShopService (see
/// [`resync_after`]).
const RESYNC_SPREAD: Duration = Duration::from_secs(60);
/// How often a Shared database that is not ready is tried again. The shared server's Secret
/// is not watched (it is not the operator's), so a fix to it is noticed within this time.
const SHARED_RETRY_PERIOD: Duration = Duration::from_secs(30);
/// How often a database volume that is growing, or cannot, is looked at again: the claim is
/// not watched (see `super::storage`).
const STORAGE_RETRY_PERIOD: Duration = Duration::from_secs(10);

/// Makes the cluster match the ShopService; the Events to publish go to `notes`, also when
/// a later step fails.
pub async fn apply(
    owner: &Owner<'_>,
    ctx: &Context,
    notes: &mut Vec<Note>,
) -> Result<Action, Error> {
    let shop = owner.shop;
    let shops = Api::<ShopService>::namespaced(ctx.client.clone(), owner.namespace);
    if shop.spec.paused {
        let paused = status::paused(shop, &Time(Timestamp::now()));
        notes.extend(write_status(&shops, shop, paused).await?);
        return Ok(Action::await_change());
    }

    let read = dereference(owner, ctx).await?;
    notes.extend(read.generated_password());
    // Before the Deployment, whose pods read it.
    notes.extend(credentials::ensure_service_key(shop, ctx).await?);
    let build_context = build::Context {
        default_image: &ctx.default_image,
        postgres_image: &ctx.postgres_image,
        namespace_services: &read.namespace_services,
        database_password: read.dedicated_password(),
    };
    let children = build::children_of(owner, &build_context)?;
    let missing_dependencies: Vec<&str> = shop
        .spec
        .depends_on
        .iter()
        .map(|name| name.as_str())
        .filter(|name| build_context.find(name).is_none())
        .collect();

    // Before the Deployment, whose pods need the credentials Secret.
    let shared = match read.database {
        Database::Shared(server) => Some(provision_shared(owner, server, ctx).await?),
        Database::Dedicated(_) | Database::None => None,
    };
    let applied = apply_children(ctx, children.into_apply_order(), notes).await?;
    notes.extend(prune(ctx, owner, &applied).await?);
    let database = applied.iter().find_map(|child| match child {
        Child::StatefulSet(stateful_set) => Some(stateful_set),
        _ => None,
    });
    // After the StatefulSet, whose template then asks for the same size.
    let storage = match owner.spec().database.mode {
        DatabaseMode::Dedicated => Some(storage::grow_claim(owner, database, ctx, notes).await?),
        DatabaseMode::Shared | DatabaseMode::None => None,
    };

    let observed = Observed {
        deployment: applied_deployment(&applied),
        database,
        missing_dependencies: &missing_dependencies,
        shared: shared.as_ref(),
        storage: storage.as_ref(),
    };
    let computed = status::compute(owner, observed, &Time(Timestamp::now()));
    if let Some(ready) = computed
        .conditions
        .iter()
        .find(|c| c.type_ == status::READY)
    {
        debug!(ready = %ready.status, reason = %ready.reason, message = %ready.message, "status computed");
    }
    notes.extend(write_status(&shops, shop, computed).await?);
    // A problem with the shared server is in the status, not an error: retried at a steady
    // pace without an event on every attempt.
    if shared.is_some_and(|shared| shared.outcome.is_err()) {
        return Ok(Action::requeue(SHARED_RETRY_PERIOD));
    }
    // Neither is a growing claim's status watched.
    if storage.is_some_and(|storage| storage.waiting()) {
        return Ok(Action::requeue(STORAGE_RETRY_PERIOD));
    }
    Ok(Action::requeue(resync_after(shop)))
}

/// When a settled ShopService is reconciled again: after the resync period and a share of
/// [`RESYNC_SPREAD`] taken from its uid. ShopServices reconciled together (every one of them when
/// the operator starts or a new leader takes over) would otherwise resync together, every period
/// after, each re-applying all its children at once; with the share they drift apart by up to a
/// minute more at every resync, until they are spread over the whole period.
pub(crate) fn resync_after(shop: &ShopService) -> Duration {
    let mut hasher = DefaultHasher::new();
    shop.metadata.uid.hash(&mut hasher);
    let share = (hasher.finish() % 1_000) as f64 / 1_000.0;
    RESYNC_PERIOD + RESYNC_SPREAD.mul_f64(share)
}

/// What the reconcile read from the cluster before building.
struct Dereferenced {
    /// Every ShopService of the namespace, this one included.
    namespace_services: Vec<Arc<ShopService>>,
    database: Database,
}

/// The database inputs of the build and of the Shared database step.
enum Database {
    None,
    Dedicated(Password),
    /// The shared server and the service's password on it, or why the server cannot be used
    /// (then no password is read or generated: nothing could be written with it).
    Shared(Result<(Box<AdminServer>, Password), Problem>),
}

impl Dereferenced {
    fn password(&self) -> Option<&Password> {
        match &self.database {
            Database::Dedicated(password) | Database::Shared(Ok((_, password))) => Some(password),
            Database::Shared(Err(_)) | Database::None => None,
        }
    }

    fn generated_password(&self) -> Option<Note> {
        self.password()?.generated.clone()
    }

    fn dedicated_password(&self) -> Option<&str> {
        match &self.database {
            Database::Dedicated(password) => Some(&password.password),
            Database::Shared(_) | Database::None => None,
        }
    }
}

async fn dereference(owner: &Owner<'_>, ctx: &Context) -> Result<Dereferenced, Error> {
    let namespace_services = ctx.namespace_services(owner.namespace).await?;
    let database = match owner.spec().database.mode {
        DatabaseMode::None => Database::None,
        DatabaseMode::Dedicated => {
            Database::Dedicated(credentials::database_password(owner.shop, ctx).await?)
        }
        DatabaseMode::Shared => {
            Database::Shared(match credentials::admin_server(owner.shop, ctx).await? {
                Ok(server) => Ok((
                    Box::new(server),
                    credentials::database_password(owner.shop, ctx).await?,
                )),
                Err(problem) => Err(problem),
            })
        }
    };
    Ok(Dereferenced {
        namespace_services,
        database,
    })
}

/// The role and database of a Shared database, in the order that survives a crash at any
/// point: the credentials Secret (whose password is generated once), then the role with that
/// password, then the database, then a login as the service. Problems with the shared server
/// or its Secret are returned in the state for the status; only API errors are errors.
async fn provision_shared(
    owner: &Owner<'_>,
    server: Result<(Box<AdminServer>, Password), Problem>,
    ctx: &Context,
) -> Result<SharedState, Error> {
    let identifier = shared_database::identifier(owner.namespace, owner.name);
    let (server, password) = match server {
        Ok(server) => server,
        Err(problem) => {
            return Ok(SharedState {
                host: None,
                identifier,
                outcome: Err(problem),
            });
        }
    };
    let login = server.login(&identifier, &password.password);
    let secret = Child::Secret(database::credentials_secret(owner, &login));
    apply_child(ctx, &secret, &mut Vec::new()).await?;
    let outcome = match server.provision(&login).await {
        Ok(()) => server.verify(&login).await,
        Err(problem) => Err(problem),
    };
    Ok(SharedState {
        host: Some(server.host),
        identifier,
        outcome,
    })
}

/// Server-side applies every child; returns them as they stand, in the apply order. Two
/// waves, each applied at once: what the pods need (ServiceAccount, Secret, ConfigMap) and
/// the rest that runs nothing, then the workloads and what refers to them. One apply after
/// another cost a reconcile about 60 ms per child on a busy API server.
async fn apply_children(
    ctx: &Context,
    children: Vec<Child>,
    notes: &mut Vec<Note>,
) -> Result<Vec<Child>, Error> {
    let (first, second): (Vec<Child>, Vec<Child>) =
        children.into_iter().partition(|child| !runs_pods(child));
    let mut applied = Vec::with_capacity(first.len() + second.len());
    for wave in [first, second] {
        let results = futures::future::try_join_all(wave.iter().map(|child| async move {
            let mut child_notes = Vec::new();
            let applied = apply_child(ctx, child, &mut child_notes).await?;
            Ok::<_, Error>((applied, child_notes))
        }))
        .await?;
        for (child, child_notes) in results {
            applied.push(child);
            notes.extend(child_notes);
        }
    }
    Ok(applied)
}

/// The children that start pods, or refer to those that do: applied after everything else.
fn runs_pods(child: &Child) -> bool {
    match child {
        Child::StatefulSet(_)
        | Child::Deployment(_)
        | Child::HorizontalPodAutoscaler(_)
        | Child::PodDisruptionBudget(_) => true,
        Child::ServiceAccount(_)
        | Child::Secret(_)
        | Child::Service(_)
        | Child::NetworkPolicy(_)
        | Child::ConfigMap(_) => false,
    }
}

/// Applies `child` unless the cache shows that would change nothing (see `super::cache`);
/// returns the child as it stands.
async fn apply_child(ctx: &Context, child: &Child, notes: &mut Vec<Note>) -> Result<Child, Error> {
    let hash = cache::desired_hash(child);
    if let Some(current) = hash.and_then(|hash| ctx.children.unchanged(child, hash)) {
        return Ok(current);
    }
    let applied = apply_kind(ctx, child, notes).await?;
    if let Some(hash) = hash {
        ctx.children.record(child, hash, &applied);
    }
    Ok(applied)
}

async fn apply_kind(ctx: &Context, child: &Child, notes: &mut Vec<Note>) -> Result<Child, Error> {
    Ok(match child {
        Child::StatefulSet(object) => {
            Child::StatefulSet(apply_stateful_set(ctx, object, notes).await?)
        }
        Child::ServiceAccount(object) => Child::ServiceAccount(apply_one(ctx, object).await?),
        Child::Secret(object) => Child::Secret(apply_one(ctx, object).await?),
        Child::Service(object) => Child::Service(apply_one(ctx, object).await?),
        Child::NetworkPolicy(object) => Child::NetworkPolicy(apply_one(ctx, object).await?),
        Child::ConfigMap(object) => Child::ConfigMap(apply_one(ctx, object).await?),
        Child::Deployment(object) => Child::Deployment(apply_one(ctx, object).await?),
        Child::HorizontalPodAutoscaler(object) => {
            Child::HorizontalPodAutoscaler(apply_one(ctx, object).await?)
        }
        Child::PodDisruptionBudget(object) => {
            Child::PodDisruptionBudget(apply_one(ctx, object).await?)
        }
    })
}

/// The applied Deployment, which the status reads.
fn applied_deployment(applied: &[Child]) -> &Deployment {
    applied
        .iter()
        .find_map(|child| match child {
            Child::Deployment(deployment) => Some(deployment),
            _ => None,
        })
        // `Children::deployment` is not optional, so the apply order always holds it.
        .expect("the apply order holds the Deployment")
}

/// How long a StatefulSet deleted to be created again may take to go: the garbage collector
/// first releases its pod (the orphan cascade), usually within a second.
const RECREATE_WAIT: Duration = Duration::from_secs(30);

/// Server-side applies a StatefulSet. One whose change the API server refuses to make in
/// place (`serviceName`, `volumeClaimTemplates`: "updates to statefulset spec for fields
/// other than …") is deleted with the orphan cascade and created again: its pod and volume
/// claim are left as they are, and the new StatefulSet adopts them (same name, same labels),
/// so the database keeps running on its data. An operator upgrade that changes such a field
/// (this one gave the StatefulSets a headless governing Service) needs nothing done by hand.
async fn apply_stateful_set(
    ctx: &Context,
    object: &StatefulSet,
    notes: &mut Vec<Note>,
) -> Result<StatefulSet, Error> {
    let refused = match apply_one(ctx, object).await {
        Err(Error::Kube {
            error: kube::Error::Api(status),
            ..
        }) if changes_a_fixed_field(&status) => status.message,
        other => return other,
    };
    let name = object.meta().name.as_deref().unwrap_or_default();
    let namespace = object.meta().namespace.as_deref().unwrap_or_default();
    let api = Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace);
    let orphan = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..DeleteParams::default()
    };
    match api.delete(name, &orphan).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(error) => {
            return Err(Error::Kube {
                action: format!("delete StatefulSet {name} to create it again"),
                error,
            });
        }
    }
    // Until the old object is gone an apply patches it, and is refused the same way.
    let deadline = tokio::time::Instant::now() + RECREATE_WAIT;
    loop {
        match apply_one(ctx, object).await {
            Ok(applied) => {
                notes.push(Note::normal(
                    "Recreated",
                    "Reconcile",
                    format!(
                        "StatefulSet {name} created again, its pod and volume claim kept, for a change the API server makes only to a new object: {refused}"
                    ),
                ));
                return Ok(applied);
            }
            Err(Error::Kube {
                error: kube::Error::Api(status),
                ..
            }) if changes_a_fixed_field(&status) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The API server's refusal of a StatefulSet change to a field it never updates in place.
fn changes_a_fixed_field(status: &kube::core::Status) -> bool {
    status.code == 422
        && status
            .message
            .contains("updates to statefulset spec for fields")
}

/// Server-side apply as the operator's field manager. `force` takes over fields another
/// manager set (`kubectl edit`, say): the operator's desired state wins. Fields it stops
/// sending are removed, unless another manager owns them (the HPA owns `spec.replicas`
/// while autoscaling is on).
async fn apply_one<K>(ctx: &Context, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object.meta().name.as_deref().unwrap_or_default();
    let namespace = object.meta().namespace.as_deref().unwrap_or_default();
    let api = Api::<K>::namespaced(ctx.client.clone(), namespace);
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(Error::kube(format!("apply {} {name}", K::kind(&()))))
}

/// Writes the status with server-side apply on the status subresource, only when it differs
/// from the stored one: an unchanged status costs no write and wakes no watcher. Returns the
/// Events the change deserves.
pub(super) async fn write_status(
    shops: &Api<ShopService>,
    shop: &ShopService,
    status: ShopServiceStatus,
) -> Result<Vec<Note>, Error> {
    if shop.status.as_ref() == Some(&status) {
        return Ok(Vec::new());
    }
    let notes = status::notes(shop.status.as_ref(), &status);
    let patch = serde_json::json!({
        "apiVersion": ShopService::api_version(&()),
        "kind": ShopService::kind(&()),
        "status": status,
    });
    shops
        .patch_status(
            &shop.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(Error::kube("write the status"))?;
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refused_change_to_a_fixed_statefulset_field_recreates_it() {
        let refusal =
            |code, message: &str| kube::core::Status::failure(message, "Invalid").with_code(code);
        assert!(changes_a_fixed_field(&refusal(
            422,
            "StatefulSet.apps \"cart-db\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"
        )));
        assert!(!changes_a_fixed_field(&refusal(
            422,
            "StatefulSet.apps \"cart-db\" is invalid: spec.replicas: Invalid value: -1"
        )));
        assert!(!changes_a_fixed_field(&refusal(
            409,
            "updates to statefulset spec for fields"
        )));
    }

    #[test]
    fn the_deployment_is_found_among_the_applied_children() {
        let shop = crate::build::fixtures::shop("cart", None);
        let services = [shop.clone()];
        let context = crate::build::fixtures::context(&services, None);
        let built = build::children(&shop, &context).unwrap();
        let expected = built.deployment.clone();
        let applied = built.into_apply_order();
        assert_eq!(applied_deployment(&applied), &expected);
    }
}
