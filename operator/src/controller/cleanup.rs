//! The cleanup of a deleted ShopService, under the finalizer `shop.dev/cleanup`: what the
//! database's `deletionPolicy` asks for. Everything else goes with the ShopService through
//! the owner references (the garbage collector).

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::context::{Context, Error, Note};
use super::credentials;
use super::prune::selector;
use super::shared_database;
use crate::build::common::{Role, names};
use crate::crd::{DatabaseMode, DeletionPolicy, ShopService};

/// Applies the database's `deletionPolicy`; the Event that says what happened goes to
/// `notes`.
pub async fn cleanup(
    shop: &ShopService,
    ctx: &Context,
    notes: &mut Vec<Note>,
) -> Result<Action, Error> {
    // Whatever the cleanup does, its children go: what was applied to them is not needed.
    ctx.children
        .forget(&shop.namespace().unwrap_or_default(), &shop.name_any());
    let database = &shop.spec.database;
    match (database.mode, database.deletion_policy) {
        (DatabaseMode::None, _) => {}
        (DatabaseMode::Shared, DeletionPolicy::Delete) => {
            notes.push(delete_shared(shop, ctx).await?);
        }
        (DatabaseMode::Dedicated | DatabaseMode::Shared, DeletionPolicy::Retain) => {
            notes.push(retain(shop, ctx).await?);
        }
        (DatabaseMode::Dedicated, DeletionPolicy::Delete) => {
            notes.push(delete_dedicated(shop, ctx).await?);
        }
    }
    release_service_key(shop, ctx).await?;
    Ok(Action::await_change())
}

/// Deletes the namespace's service key Secret with its last ShopService: nothing signs or
/// checks a token with it any more, and a ShopService created later gets a new one.
async fn release_service_key(shop: &ShopService, ctx: &Context) -> Result<(), Error> {
    let namespace = shop.namespace().ok_or(Error::NotNamespaced)?;
    let staying = ctx
        .namespace_services(&namespace)
        .await?
        .iter()
        .any(|other| other.uid() != shop.uid() && other.metadata.deletion_timestamp.is_none());
    if staying {
        return Ok(());
    }
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    match secrets
        .delete(names::SERVICE_KEY_SECRET, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(error) => Err(Error::Kube {
            action: format!("delete Secret {}", names::SERVICE_KEY_SECRET),
            error,
        }),
    }
}

/// `Retain`: the credentials Secret is released (no owner reference), so the garbage
/// collector leaves it; the volume's claim is kept by the StatefulSet's retention policy.
async fn retain(shop: &ShopService, ctx: &Context) -> Result<Note, Error> {
    let namespace = shop.namespace().ok_or(Error::NotNamespaced)?;
    let name = shop.name_any();
    let secret_name = names::credentials_secret(&name);
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    // The builder leaves a retained Secret unowned; this also covers one that was created
    // while the policy was still Delete and not reconciled since.
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
    let kept = match shop.spec.database.mode {
        DatabaseMode::Shared => format!(
            "role and database {} on the shared server",
            shared_database::identifier(&namespace, &name)
        ),
        _ => "the database's volume".to_owned(),
    };
    Ok(Note::normal(
        "RetainedData",
        "Cleanup",
        format!(
            "deletionPolicy is Retain: kept Secret {secret_name} and {kept}; a ShopService created again with the name {name} finds them"
        ),
    ))
}

/// `Delete` of a Dedicated database: its Secret and its volume's claims.
async fn delete_dedicated(shop: &ShopService, ctx: &Context) -> Result<Note, Error> {
    let namespace = shop.namespace().ok_or(Error::NotNamespaced)?;
    let name = shop.name_any();
    let secret_name = names::credentials_secret(&name);
    delete_secret(ctx, &namespace, &secret_name).await?;
    // The StatefulSet's claim retention policy deletes its claims too, but only while the
    // StatefulSet controller runs and the claims carry its owner reference; deleting them
    // here makes `Delete` hold either way.
    let claims = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &namespace);
    claims
        .delete_collection(
            &DeleteParams::background(),
            &ListParams::default().labels(&selector(&name, Some(Role::Database))),
        )
        .await
        .map_err(Error::kube(format!(
            "delete the database volumes of {name}"
        )))?;
    Ok(Note::normal(
        "DeletedData",
        "Cleanup",
        format!("deletionPolicy is Delete: deleted Secret {secret_name} and the database's volume"),
    ))
}

/// `Delete` of a Shared database: drop its database and role on the shared server, then its
/// Secret. While the server or its Secret is unavailable this fails (an error, so a Warning
/// event and a retry with backoff) until the bound after the deletion; then it lets go with a
/// Warning event naming what was left behind, so that a shared server that is gone for good
/// never holds a deletion forever.
async fn delete_shared(shop: &ShopService, ctx: &Context) -> Result<Note, Error> {
    let namespace = shop.namespace().ok_or(Error::NotNamespaced)?;
    let name = shop.name_any();
    let identifier = shared_database::identifier(&namespace, &name);
    let secret_name = names::credentials_secret(&name);
    let dropped = match credentials::admin_server(shop, ctx).await? {
        Ok(server) => server
            .drop_database_and_role(&identifier)
            .await
            .map(|()| server.host),
        Err(problem) => Err(problem),
    };
    let left = format!("database and role {identifier} on the shared server");
    let note = match dropped {
        Ok(host) => Note::normal(
            "DeletedData",
            "Cleanup",
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
            Note::warning(
                "CleanupAbandoned",
                "Cleanup",
                format!(
                    "gave up cleaning up the Shared database {} s after the deletion ({problem}): left behind {left}, to be dropped by hand; deleted Secret {secret_name}",
                    ctx.shared_cleanup_timeout.as_secs()
                ),
            )
        }
    };
    delete_secret(ctx, &namespace, &secret_name).await?;
    Ok(note)
}

/// Deletes a Secret; one already gone is fine.
async fn delete_secret(ctx: &Context, namespace: &str, secret_name: &str) -> Result<(), Error> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    match secrets
        .delete(secret_name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(Error::kube(format!("delete Secret {secret_name}"))(e)),
    }
}
