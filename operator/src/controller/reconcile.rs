//! One reconcile of one ShopService: dereference (read what the build needs) → build (pure)
//! → apply (server-side, every child) → prune (children no longer desired) → status. And the
//! cleanup that runs, under the finalizer, when the ShopService is deleted.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use ring::rand::SecureRandom;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use super::shared_database::{self, AdminServer, Problem, SharedState};
use super::status::{self, Observed};
use super::{Context, Error};
use crate::build::common::{MANAGER, Role, names};
use crate::build::database;
use crate::build::{self, Children, Owner};
use crate::crd::{DatabaseMode, DeletionPolicy, ShopService, ShopServiceStatus};

/// How often a settled ShopService is reconciled anyway, to repair drift that no watch event
/// reports (an edit by hand to a field the operator does not own, say).
const RESYNC_PERIOD: Duration = Duration::from_secs(300);
/// How often a Shared database that is not ready is tried again. The shared server's Secret
/// is not watched (it is not the operator's), so a fix to it is noticed within this time.
const SHARED_RETRY_PERIOD: Duration = Duration::from_secs(30);

/// The length of a generated database password: 32 characters of 64 possible ones, 192 bits.
const PASSWORD_LENGTH: usize = 32;
const PASSWORD_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Makes the cluster match the ShopService.
pub async fn apply(shop: Arc<ShopService>, ctx: &Context) -> Result<Action, Error> {
    let namespace = shop.namespace().ok_or(Error::NotNamespaced)?;
    let shops = Api::<ShopService>::namespaced(ctx.client.clone(), &namespace);
    if shop.spec.paused {
        let now = Time(Timestamp::now());
        write_status(&shops, &shop, status::paused(&shop, &now), ctx).await?;
        return Ok(Action::await_change());
    }

    // Dereference.
    let namespace_services = ctx.namespace_services(&namespace).await?;
    let password = match shop.spec.database.mode {
        DatabaseMode::Dedicated => Some(database_password(&shop, &namespace, ctx).await?),
        DatabaseMode::Shared | DatabaseMode::None => None,
    };

    let build_context = build::Context {
        default_image: &ctx.default_image,
        postgres_image: &ctx.postgres_image,
        namespace_services: &namespace_services,
        database_password: password.as_deref(),
    };
    let children = build::children(&shop, &build_context)?;
    let owner = Owner::new(&shop)?;
    // Before the Deployment, whose pods need the credentials Secret.
    let shared = match shop.spec.database.mode {
        DatabaseMode::Shared => Some(provision_shared(&owner, ctx).await?),
        DatabaseMode::Dedicated | DatabaseMode::None => None,
    };
    let applied = apply_children(ctx, &children).await?;
    prune(ctx, &owner, &children).await?;

    let missing_dependencies: Vec<&str> = shop
        .spec
        .depends_on
        .iter()
        .map(|name| name.as_str())
        .filter(|name| build_context.find(name).is_none())
        .collect();
    let observed = Observed {
        deployment: &applied.deployment,
        database: applied.database.as_ref(),
        missing_dependencies: &missing_dependencies,
        shared: shared.as_ref(),
    };
    let now = Time(Timestamp::now());
    write_status(&shops, &shop, status::compute(&owner, observed, &now), ctx).await?;
    // A problem with the shared server is in the status, not an error: retried at a steady
    // pace without an event on every attempt.
    if shared.is_some_and(|shared| shared.outcome.is_err()) {
        return Ok(Action::requeue(SHARED_RETRY_PERIOD));
    }
    Ok(Action::requeue(RESYNC_PERIOD))
}

/// The role and database of a Shared database, in the order that survives a crash at any
/// point: the credentials Secret (whose password is generated once), then the role with that
/// password, then the database, then a login as the service. Problems with the shared server
/// or its Secret are returned in the state for the status; only API errors are errors.
async fn provision_shared(owner: &Owner<'_>, ctx: &Context) -> Result<SharedState, Error> {
    let identifier = shared_database::identifier(owner.namespace, owner.name);
    let server = match admin_server(owner.shop, owner.namespace, ctx).await? {
        Ok(server) => server,
        Err(problem) => {
            return Ok(SharedState {
                host: None,
                identifier,
                outcome: Err(problem),
            });
        }
    };
    let password = database_password(owner.shop, owner.namespace, ctx).await?;
    let login = server.login(&identifier, &password);
    apply_one(ctx, &database::credentials_secret(owner, &login)).await?;
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

/// The shared server named by `spec.database.sharedServerSecret`, or why it cannot be used.
async fn admin_server(
    shop: &ShopService,
    namespace: &str,
    ctx: &Context,
) -> Result<Result<AdminServer, Problem>, Error> {
    let Some(secret_name) = shop.spec.database.shared_server_secret.as_deref() else {
        return Ok(Err(Problem::new(
            shared_database::SECRET_MISSING,
            "spec.database.sharedServerSecret is not set: name the Secret that holds the shared server's admin URL",
        )));
    };
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let secret = secrets
        .get_opt(secret_name)
        .await
        .map_err(Error::kube(format!("read Secret {secret_name}")))?;
    let Some(secret) = secret else {
        return Ok(Err(Problem::new(
            shared_database::SECRET_MISSING,
            format!(
                "Secret {secret_name} (spec.database.sharedServerSecret) does not exist in namespace {namespace}"
            ),
        )));
    };
    let url = secret
        .data
        .as_ref()
        .and_then(|data| data.get("url"))
        .and_then(|bytes| std::str::from_utf8(&bytes.0).ok());
    Ok(match url {
        Some(url) => AdminServer::parse(url, secret_name),
        None => Err(Problem::new(
            shared_database::URL_INVALID,
            format!(
                "Secret {secret_name} (spec.database.sharedServerSecret) has no key `url` with the shared server's admin URL (postgres://user:password@host:port/database)"
            ),
        )),
    })
}

/// What the `Delete` or `Retain` policy of the database asks for once the ShopService is
/// deleted. Everything else goes with it through the owner references.
pub async fn cleanup(shop: Arc<ShopService>, ctx: &Context) -> Result<Action, Error> {
    let namespace = shop.namespace().ok_or(Error::NotNamespaced)?;
    let database = &shop.spec.database;
    if database.mode == DatabaseMode::None {
        return Ok(Action::await_change());
    }
    let name = shop.name_any();
    let secret_name = names::credentials_secret(&name);
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    if database.mode == DatabaseMode::Shared && database.deletion_policy == DeletionPolicy::Delete {
        return cleanup_shared(&shop, &namespace, ctx).await;
    }
    match database.deletion_policy {
        DeletionPolicy::Retain => {
            // The builder leaves a retained Secret unowned; this also covers one that was
            // created while the policy was still Delete and not reconciled since.
            let unowned = serde_json::json!({"metadata": {"ownerReferences": null}});
            match secrets
                .patch(
                    &secret_name,
                    &PatchParams::default(),
                    &Patch::Merge(&unowned),
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => return Err(Error::kube(format!("release Secret {secret_name}"))(e)),
            }
            let kept = match database.mode {
                DatabaseMode::Shared => format!(
                    "role and database {} on the shared server",
                    shared_database::identifier(&namespace, &name)
                ),
                _ => "the database's volume".to_owned(),
            };
            ctx.publish(
                &shop,
                EventType::Normal,
                "RetainedData",
                "Cleanup",
                format!(
                    "deletionPolicy is Retain: kept Secret {secret_name} and {kept}; a ShopService created again with the name {name} finds them"
                ),
            )
            .await;
        }
        DeletionPolicy::Delete => {
            match secrets
                .delete(&secret_name, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => return Err(Error::kube(format!("delete Secret {secret_name}"))(e)),
            }
            // The StatefulSet's claim retention policy deletes its claims too, but only
            // while the StatefulSet controller runs and the claims carry its owner reference;
            // deleting them here makes `Delete` hold either way.
            let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &namespace);
            let selector = selector(&name, Some(Role::Database));
            claims
                .delete_collection(
                    &DeleteParams::background(),
                    &ListParams::default().labels(&selector),
                )
                .await
                .map_err(Error::kube(format!(
                    "delete the database volumes of {name}"
                )))?;
            ctx.publish(
                &shop,
                EventType::Normal,
                "DeletedData",
                "Cleanup",
                format!("deletionPolicy is Delete: deleted Secret {secret_name} and the database's volume"),
            )
            .await;
        }
    }
    Ok(Action::await_change())
}

/// `deletionPolicy: Delete` of a Shared database: drop its database and role on the shared
/// server, then its Secret. While the server or its Secret is unavailable this fails (an
/// error, so a Warning event and a retry with backoff) until the bound after the deletion;
/// then it lets go with a Warning event naming what was left behind, so that a shared server
/// that is gone for good never holds a deletion forever.
async fn cleanup_shared(
    shop: &ShopService,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, Error> {
    let name = shop.name_any();
    let identifier = shared_database::identifier(namespace, &name);
    let secret_name = names::credentials_secret(&name);
    let dropped = match admin_server(shop, namespace, ctx).await? {
        Ok(server) => server
            .drop_database_and_role(&identifier)
            .await
            .map(|()| server.host),
        Err(problem) => Err(problem),
    };
    let left = format!("database and role {identifier} on the shared server");
    let (type_, reason, note) = match dropped {
        Ok(host) => (
            EventType::Normal,
            "DeletedData",
            format!(
                "deletionPolicy is Delete: dropped database and role {identifier} on the shared server {host}, and deleted Secret {secret_name}"
            ),
        ),
        Err(problem) => {
            let now = Timestamp::now();
            let deleted_at = shop
                .metadata
                .deletion_timestamp
                .as_ref()
                .map_or(now, |time| time.0);
            let give_up_at = deleted_at
                .checked_add(ctx.shared_cleanup_timeout)
                .unwrap_or(deleted_at);
            if now < give_up_at {
                return Err(Error::SharedCleanupPending {
                    problem: problem.to_string(),
                    left,
                    give_up_at: give_up_at.to_string(),
                });
            }
            (
                EventType::Warning,
                "CleanupAbandoned",
                format!(
                    "gave up cleaning up the Shared database {} s after the deletion ({problem}): left behind {left}, to be dropped by hand; deleted Secret {secret_name}",
                    ctx.shared_cleanup_timeout.as_secs()
                ),
            )
        }
    };
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    match secrets
        .delete(&secret_name, &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_not_found() => {}
        Err(e) => return Err(Error::kube(format!("delete Secret {secret_name}"))(e)),
    }
    ctx.publish(shop, type_, reason, "Cleanup", note).await;
    Ok(Action::await_change())
}

/// The database's password: read back from its Secret, or generated once when the Secret
/// does not exist yet. The caller writes the Secret before anything uses the password.
async fn database_password(
    shop: &ShopService,
    namespace: &str,
    ctx: &Context,
) -> Result<String, Error> {
    let secret_name = names::credentials_secret(&shop.name_any());
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let existing = secrets
        .get_opt(&secret_name)
        .await
        .map_err(Error::kube(format!("read Secret {secret_name}")))?;
    match existing {
        Some(secret) => {
            let password = secret
                .data
                .as_ref()
                .and_then(|data| data.get("password"))
                .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok());
            // A new password would not open the existing database: refuse rather than rotate.
            password.ok_or(Error::CredentialsWithoutPassword { secret_name })
        }
        None => {
            let password = generate_password(&ctx.random)?;
            ctx.publish(
                shop,
                EventType::Normal,
                "GeneratedCredentials",
                "Provision",
                format!("generated the database password into Secret {secret_name}"),
            )
            .await;
            Ok(password)
        }
    }
}

fn generate_password(random: &ring::rand::SystemRandom) -> Result<String, Error> {
    let mut bytes = [0u8; PASSWORD_LENGTH];
    random.fill(&mut bytes).map_err(|_| Error::Random)?;
    // 256 is a multiple of 64, so every character is equally likely.
    Ok(bytes
        .iter()
        .map(|byte| PASSWORD_ALPHABET[usize::from(byte % 64)] as char)
        .collect())
}

/// The children as the API server returned them, where the status needs them.
struct Applied {
    deployment: Deployment,
    database: Option<StatefulSet>,
}

/// Server-side applies every child. Order matters only for first creation: the
/// ServiceAccount and the credentials before the pods that use them.
async fn apply_children(ctx: &Context, children: &Children) -> Result<Applied, Error> {
    apply_one(ctx, &children.service_account).await?;
    let database = match &children.database {
        Some(database) => {
            apply_one(ctx, &database.credentials).await?;
            apply_one(ctx, &database.service).await?;
            apply_one(ctx, &database.network_policy).await?;
            Some(apply_one(ctx, &database.stateful_set).await?)
        }
        None => None,
    };
    if let Some(route_table) = &children.route_table {
        apply_one(ctx, route_table).await?;
    }
    apply_one(ctx, &children.service).await?;
    apply_one(ctx, &children.network_policy).await?;
    let deployment = apply_one(ctx, &children.deployment).await?;
    if let Some(hpa) = &children.horizontal_pod_autoscaler {
        apply_one(ctx, hpa).await?;
    }
    if let Some(pdb) = &children.pod_disruption_budget {
        apply_one(ctx, pdb).await?;
    }
    Ok(Applied {
        deployment,
        database,
    })
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

/// Deletes the children that may come and go (the HPA, the PDB, the route table) when they
/// exist but are no longer desired. The others exist for as long as the ShopService does.
async fn prune(ctx: &Context, owner: &Owner<'_>, children: &Children) -> Result<(), Error> {
    let why_hpa = "autoscaling is off";
    let why_pdb = "a single pod has no disruption budget";
    let why_routes = "the ShopService is not a gateway";
    let pruned = [
        prune_kind(
            ctx,
            owner,
            children.horizontal_pod_autoscaler.as_ref(),
            why_hpa,
        )
        .await?,
        prune_kind(ctx, owner, children.pod_disruption_budget.as_ref(), why_pdb).await?,
        prune_kind::<ConfigMap>(ctx, owner, children.route_table.as_ref(), why_routes).await?,
    ];
    for note in pruned.into_iter().flatten() {
        info!(%note, "pruned");
        ctx.publish(owner.shop, EventType::Normal, "Pruned", "Prune", note)
            .await;
    }
    Ok(())
}

/// Deletes every `K` this ShopService controls except `desired`; returns what it deleted.
async fn prune_kind<K>(
    ctx: &Context,
    owner: &Owner<'_>,
    desired: Option<&K>,
    why: &str,
) -> Result<Vec<String>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api = Api::<K>::namespaced(ctx.client.clone(), owner.namespace);
    let existing = api
        .list(&ListParams::default().labels(&selector(owner.name, None)))
        .await
        .map_err(Error::kube(format!(
            "list the {}s of {}",
            K::kind(&()),
            owner.name
        )))?;
    let desired_name = desired.and_then(|object| object.meta().name.as_deref());
    let owner_uid = owner.shop.uid();
    let mut deleted = Vec::new();
    for object in existing.items {
        let controlled = object.owner_references().iter().any(|reference| {
            reference.controller == Some(true) && Some(&reference.uid) == owner_uid.as_ref()
        });
        let name = object.name_any();
        if !controlled || desired_name == Some(name.as_str()) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(format!("deleted {} {name}: {why}", K::kind(&()))),
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => return Err(Error::kube(format!("delete {} {name}", K::kind(&())))(e)),
        }
    }
    Ok(deleted)
}

/// The label selector of the operator's objects for the ShopService `name`, of one role or
/// all of them.
fn selector(name: &str, role: Option<Role>) -> String {
    let mut selector =
        format!("app.kubernetes.io/instance={name},app.kubernetes.io/managed-by={MANAGER}");
    if let Some(role) = role {
        selector.push_str(&format!(",app.kubernetes.io/component={}", role.as_str()));
    }
    selector
}

/// Writes the status with server-side apply on the status subresource, only when it differs
/// from the stored one: an unchanged status costs no write and wakes no watcher.
async fn write_status(
    shops: &Api<ShopService>,
    shop: &ShopService,
    status: ShopServiceStatus,
    ctx: &Context,
) -> Result<(), Error> {
    if shop.status.as_ref() == Some(&status) {
        return Ok(());
    }
    // Events for the transitions a person wants to hear about: a condition that turned
    // True, or stayed True for another reason.
    let newly_true = |type_: &str| {
        let now = condition(Some(&status), type_).filter(|c| c.status == "True");
        let before = condition(shop.status.as_ref(), type_).filter(|c| c.status == "True");
        now.filter(|now| before.is_none_or(|before| before.reason != now.reason))
            .cloned()
    };
    let became_ready = newly_true(status::READY);
    let became_degraded = newly_true(status::DEGRADED);
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
    if let Some(ready) = became_ready {
        ctx.publish(shop, EventType::Normal, "Ready", "Reconcile", ready.message)
            .await;
    }
    if let Some(degraded) = became_degraded {
        ctx.publish(
            shop,
            EventType::Warning,
            &degraded.reason,
            "Reconcile",
            degraded.message,
        )
        .await;
    }
    Ok(())
}

fn condition<'a>(status: Option<&'a ShopServiceStatus>, type_: &str) -> Option<&'a Condition> {
    status?.conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_url_safe_and_different() {
        let random = ring::rand::SystemRandom::new();
        let first = generate_password(&random).unwrap();
        let second = generate_password(&random).unwrap();
        assert_eq!(first.len(), PASSWORD_LENGTH);
        assert!(first.bytes().all(|b| PASSWORD_ALPHABET.contains(&b)));
        assert_ne!(first, second);
    }

    #[test]
    fn selectors_pick_the_operators_objects_of_one_service() {
        assert_eq!(
            selector("cart", Some(Role::Database)),
            "app.kubernetes.io/instance=cart,app.kubernetes.io/managed-by=shop-operator,app.kubernetes.io/component=database"
        );
    }
}
