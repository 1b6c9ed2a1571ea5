//! The prune: deletes what a ShopService controls but no longer wants. For every owned kind
//! that may come and go ([`Prune::WhenNotApplied`] in [`OWNED_KINDS`]), every object labelled
//! for the ShopService and controlled by it that this reconcile did not apply is deleted;
//! nothing is named kind by kind here.

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use tracing::info;

use super::context::{Context, Error, Note};
use crate::build::common::{INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGER, Role, controlled_by};
use crate::build::{Child, OWNED_KINDS, OwnedKind, Owner, Prune};

/// Deletes the objects of the prunable kinds that `applied` does not hold; an Event for each.
pub async fn prune(
    ctx: &Context,
    owner: &Owner<'_>,
    applied: &[Child],
) -> Result<Vec<Note>, Error> {
    let mut notes = Vec::new();
    for kind in &OWNED_KINDS {
        let Prune::WhenNotApplied { why } = kind.prune else {
            continue;
        };
        let wanted: Vec<&str> = applied
            .iter()
            .filter(|child| child.kind() == kind)
            .map(Child::name)
            .collect();
        for name in prune_kind(ctx, owner, kind, &wanted).await? {
            let message = format!("deleted {} {name}: {why}", kind.kind);
            info!(note = %message, "pruned");
            notes.push(Note::normal("Pruned", "Prune", message));
        }
    }
    Ok(notes)
}

/// Deletes every object of `kind` that `owner` controls except those named in `wanted`;
/// returns the names of those it deleted.
async fn prune_kind(
    ctx: &Context,
    owner: &Owner<'_>,
    kind: &OwnedKind,
    wanted: &[&str],
) -> Result<Vec<String>, Error> {
    let api = Api::<DynamicObject>::namespaced_with(
        ctx.client.clone(),
        owner.namespace,
        &kind.api_resource(),
    );
    let owner_uid = owner.shop.uid().unwrap_or_default();
    let mut deleted = Vec::new();
    for name in controlled(ctx, &api, owner, kind, &owner_uid).await? {
        if wanted.contains(&name.as_str()) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(e) => return Err(Error::kube(format!("delete {} {name}", kind.kind))(e)),
        }
    }
    Ok(deleted)
}

/// The names of the objects of `kind` that `owner` controls: from the watch's cache once it
/// is synced (an object it does not show yet triggers a reconcile of its owner when it does),
/// from the API server before.
async fn controlled(
    ctx: &Context,
    api: &Api<DynamicObject>,
    owner: &Owner<'_>,
    kind: &OwnedKind,
    owner_uid: &str,
) -> Result<Vec<String>, Error> {
    if let Some(names) = ctx
        .children
        .controlled(kind, owner.namespace, owner.name, owner_uid)
    {
        return Ok(names);
    }
    // Metadata is all the prune reads: names and owner references.
    let existing = api
        .list_metadata(&ListParams::default().labels(&selector(owner.name, None)))
        .await
        .map_err(Error::kube(format!(
            "list the {}s of {}",
            kind.kind, owner.name
        )))?;
    Ok(existing
        .items
        .into_iter()
        .filter(|object| controlled_by(&object.metadata, owner_uid))
        .map(|object| object.name_any())
        .collect())
}

/// The label selector of the operator's objects for the ShopService `name`, of one role or
/// all of them.
pub fn selector(name: &str, role: Option<Role>) -> String {
    let mut selector = format!("{INSTANCE_LABEL}={name},{MANAGED_BY_LABEL}={MANAGER}");
    if let Some(role) = role {
        selector.push_str(&format!(",app.kubernetes.io/component={}", role.as_str()));
    }
    selector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_pick_the_operators_objects_of_one_service() {
        assert_eq!(
            selector("cart", Some(Role::Database)),
            "app.kubernetes.io/instance=cart,app.kubernetes.io/managed-by=shop-operator,app.kubernetes.io/component=database"
        );
    }
}
