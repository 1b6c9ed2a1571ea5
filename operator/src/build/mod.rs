//! The build layer: what a ShopService becomes, as plain functions.
//!
//! Each builder takes the ShopService ([`Owner`]) and what the I/O layer read or decided
//! ([`Context`]) and returns the desired object; none of them talks to the cluster, reads a
//! clock or draws a random number, so the same input always gives the same objects and a
//! server-side apply of them changes nothing when nothing changed. [`children`] calls them
//! all: it is the operator's whole output for one ShopService, a [`Children`], which
//! [`owned`] turns into the one apply-ordered list of [`Child`]ren and whose kinds it names
//! once ([`OWNED_KINDS`]).
//!
//! | file | objects |
//! |---|---|
//! | [`service_account`] | ServiceAccount `<name>` (mounts no API token) |
//! | [`deployment`] | Deployment `<name>` |
//! | [`service`] | Service `<name>` |
//! | [`hpa`] | HorizontalPodAutoscaler `<name>`, when autoscaling is on |
//! | [`pdb`] | PodDisruptionBudget `<name>`, when more than one pod runs |
//! | [`network_policy`] | NetworkPolicy `<name>`: who may talk to the pods, and to whom they may talk |
//! | [`database`] | for a Dedicated database: StatefulSet, Service and NetworkPolicy `<name>-db`, Secret `<name>-db-credentials` |
//! | [`routes`] | for a gateway: ConfigMap `<name>-routes`, the route table |
//! | [`owned`] | no builder: `Children`, the apply order, and the table of owned kinds |
//!
//! Shared names, labels, owner references and security settings are in [`common`].

pub mod common;
pub mod database;
pub mod deployment;
pub mod hpa;
pub mod network_policy;
pub mod owned;
pub mod pdb;
pub mod routes;
pub mod service;
pub mod service_account;

#[cfg(test)]
pub(crate) mod fixtures;

use std::fmt;
use std::sync::Arc;

pub use common::Owner;
pub use owned::{Child, Children, OWNED_KINDS, OwnedKind, Prune};

use crate::crd::{Component, DEFAULT_PORT, DatabaseMode, ShopService};

/// Everything besides the ShopService that the builders need: what the I/O layer read from
/// the cluster, decided once, or was configured with.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The image of the bundled services, used when `spec.image` is not set.
    pub default_image: &'a str,
    /// The PostgreSQL image of Dedicated databases ([`database::DEFAULT_POSTGRES_IMAGE`]
    /// unless the operator is told otherwise).
    pub postgres_image: &'a str,
    /// Every ShopService in the namespace, the one being built included: where its
    /// dependencies listen, who depends on it, and (for a gateway) which are routed. Shared
    /// with the operator's cache, not copied: a reconcile of one ShopService among thousands
    /// would otherwise copy them all.
    pub namespace_services: &'a [Arc<ShopService>],
    /// The password of a Dedicated database: generated once by the I/O layer when the
    /// credentials Secret does not exist yet, and read back from that Secret afterwards, so a
    /// reconcile never rotates it. `None` when there is no Dedicated database.
    pub database_password: Option<&'a str>,
}

impl<'a> Context<'a> {
    /// The ShopServices of the namespace that are not being deleted.
    pub fn live_services(self) -> impl Iterator<Item = &'a ShopService> {
        self.namespace_services
            .iter()
            .map(|shop| shop.as_ref())
            .filter(|shop| shop.metadata.deletion_timestamp.is_none())
    }

    /// The live ShopService named `name`, if there is one.
    pub fn find(self, name: &str) -> Option<&'a ShopService> {
        self.live_services()
            .find(|shop| shop.metadata.name.as_deref() == Some(name))
    }

    /// The port the ShopService `name` listens on; the default port for one that does not
    /// exist yet, so that whoever calls it finds it once it is created with that default.
    pub fn port_of(self, name: &str) -> i32 {
        self.find(name).map_or(DEFAULT_PORT, |shop| shop.spec.port)
    }

    /// The namespace's user service, whose public keys the gateway verifies tokens with: its
    /// name and port (the first by name if there are several).
    pub fn user_service(self) -> Option<(&'a str, i32)> {
        self.live_services()
            .filter(|shop| shop.spec.component == Some(Component::User))
            .filter_map(|shop| Some((shop.metadata.name.as_deref()?, shop.spec.port)))
            .min()
    }

    /// The live ShopServices with a route, that the gateway sends requests to.
    pub fn routed_services(self) -> impl Iterator<Item = &'a ShopService> {
        self.live_services()
            .filter(|shop| shop.spec.route.is_some())
    }

    /// The live ShopServices that list `name` in their `dependsOn`.
    pub fn dependents_of(self, name: &str) -> impl Iterator<Item = &'a ShopService> {
        self.live_services()
            .filter(move |shop| shop.spec.depends_on.iter().any(|d| d.as_str() == name))
    }
}

/// Why the objects of a ShopService cannot be built. Both are mistakes of the caller, not of
/// the user: the user's mistakes are refused at admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// The ShopService has no name, namespace or uid: it was not read from the API server.
    NotStored { name: String },
    /// A Dedicated database needs its password in [`Context::database_password`].
    MissingDatabasePassword { name: String },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NotStored { name } => write!(
                f,
                "ShopService {name:?} has no name, namespace or uid; only a stored ShopService can own objects"
            ),
            BuildError::MissingDatabasePassword { name } => write!(
                f,
                "ShopService {name:?} has a Dedicated database but no password was supplied"
            ),
        }
    }
}

impl std::error::Error for BuildError {}

/// The operator's whole output for one ShopService.
pub fn children(shop: &ShopService, context: &Context) -> Result<Children, BuildError> {
    children_of(&Owner::new(shop)?, context)
}

/// [`children`] of a ShopService already checked to be stored.
pub fn children_of(owner: &Owner, context: &Context) -> Result<Children, BuildError> {
    let database = match owner.spec().database.mode {
        DatabaseMode::Dedicated => {
            let password =
                context
                    .database_password
                    .ok_or_else(|| BuildError::MissingDatabasePassword {
                        name: owner.name.into(),
                    })?;
            Some(database::dedicated(owner, password, context.postgres_image))
        }
        DatabaseMode::Shared | DatabaseMode::None => None,
    };
    Ok(Children {
        service_account: service_account::service_account(owner),
        deployment: deployment::deployment(owner, context),
        service: service::service(owner),
        horizontal_pod_autoscaler: hpa::horizontal_pod_autoscaler(owner),
        pod_disruption_budget: pdb::pod_disruption_budget(owner),
        network_policy: network_policy::network_policy(owner, context),
        database,
        route_table: routes::route_table(owner, context),
    })
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;
    use kube::api::ObjectMeta;

    use super::fixtures::{context, namespace, shop};
    use super::*;
    use crate::crd::{Autoscaling, Component, DeletionPolicy};

    /// The metadata of every object in `children`, named by kind for failure messages.
    fn all_metadata(children: &Children) -> Vec<(&'static str, ObjectMeta)> {
        children
            .clone()
            .into_apply_order()
            .iter()
            .map(|child| (child.kind().kind, child.meta().clone()))
            .collect()
    }

    /// A ShopService that has every optional child: autoscaling (HPA, PDB), a Dedicated
    /// database that is deleted with it, and (as a gateway) a route table. The API server
    /// refuses a gateway a database (it keeps no data); the builders do not rely on that, and
    /// one object with every child keeps these checks whole.
    fn everything(policy: DeletionPolicy) -> ShopService {
        let mut gateway = shop("front", Some(Component::Gateway));
        gateway.spec.autoscaling = Some(Autoscaling {
            min_replicas: 2,
            max_replicas: 5,
            target_cpu_utilization_percentage: 70,
        });
        gateway.spec.database.mode = DatabaseMode::Dedicated;
        gateway.spec.database.deletion_policy = policy;
        gateway
    }

    #[test]
    fn every_object_has_the_labels_and_is_in_the_namespace() {
        let gateway = everything(DeletionPolicy::Delete);
        let services = [gateway.clone()];
        let children = children(&gateway, &context(&services, Some("pw"))).unwrap();
        let all = all_metadata(&children);
        assert_eq!(all.len(), 12, "every optional child is present");
        for (kind, meta) in &all {
            let labels = meta.labels.as_ref().unwrap();
            for key in ["name", "instance", "component", "managed-by", "part-of"] {
                let key = format!("app.kubernetes.io/{key}");
                assert!(labels.contains_key(&key), "{kind} lacks the label {key}");
            }
            assert_eq!(labels["app.kubernetes.io/instance"], "front", "{kind}");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "shop-operator");
            assert_eq!(labels["app.kubernetes.io/part-of"], "shop");
            assert_eq!(meta.namespace.as_deref(), Some(namespace()), "{kind}");
        }
    }

    fn kinds_and_names(children: Children) -> Vec<String> {
        children
            .into_apply_order()
            .iter()
            .map(|child| format!("{} {}", child.kind().kind, child.name()))
            .collect()
    }

    #[test]
    fn the_apply_order_puts_what_pods_use_before_the_pods() {
        let gateway = everything(DeletionPolicy::Delete);
        let services = [gateway.clone()];
        let built = children(&gateway, &context(&services, Some("pw"))).unwrap();
        assert_eq!(
            kinds_and_names(built),
            [
                "ServiceAccount front",
                "Secret front-db-credentials",
                "Service front-db",
                "Service front-db-headless",
                "NetworkPolicy front-db",
                "StatefulSet front-db",
                "ConfigMap front-routes",
                "Service front",
                "NetworkPolicy front",
                "Deployment front",
                "HorizontalPodAutoscaler front",
                "PodDisruptionBudget front",
            ]
        );
    }

    /// `OWNED_KINDS` (the watches, the prune, the RBAC check) and the children built agree:
    /// a kind missing from the table would be applied but never watched.
    #[test]
    fn the_owned_kinds_are_exactly_the_kinds_of_the_children() {
        let gateway = everything(DeletionPolicy::Delete);
        let services = [gateway.clone()];
        let built = children(&gateway, &context(&services, Some("pw"))).unwrap();
        let of_children: std::collections::BTreeSet<&str> = built
            .into_apply_order()
            .iter()
            .map(|child| child.kind().kind)
            .collect();
        let table: std::collections::BTreeSet<&str> =
            OWNED_KINDS.iter().map(|kind| kind.kind).collect();
        assert_eq!(table.len(), OWNED_KINDS.len(), "a kind is listed twice");
        assert_eq!(of_children, table);
    }

    /// The prune leaves the kinds marked `Prune::Never` alone, which is right only while no
    /// change of a ShopService's spec makes one of their objects undesired (the database mode
    /// cannot change: the API server refuses it).
    #[test]
    fn kinds_never_pruned_do_not_come_and_go_with_the_spec() {
        for mode in [
            DatabaseMode::None,
            DatabaseMode::Dedicated,
            DatabaseMode::Shared,
        ] {
            let mut plain = shop("front", Some(Component::Cart));
            plain.spec.database.mode = mode;
            let mut gateway = everything(DeletionPolicy::Retain);
            gateway.spec.database.mode = mode;
            let mut scaled_to_zero = plain.clone();
            scaled_to_zero.spec.replicas = 0;
            let mut two_pods = plain.clone();
            two_pods.spec.replicas = 2;
            let never_pruned = |shop: &ShopService| {
                let services = [shop.clone()];
                let built = children(shop, &context(&services, Some("pw"))).unwrap();
                built
                    .into_apply_order()
                    .iter()
                    .filter(|child| child.kind().prune == Prune::Never)
                    .map(|child| format!("{} {}", child.kind().kind, child.name()))
                    .collect::<Vec<_>>()
            };
            let expected = never_pruned(&plain);
            for variant in [&gateway, &scaled_to_zero, &two_pods] {
                assert_eq!(never_pruned(variant), expected, "{mode:?}");
            }
        }
    }

    #[test]
    fn every_object_is_owned_by_the_shop_service_as_controller() {
        let gateway = everything(DeletionPolicy::Delete);
        let services = [gateway.clone()];
        let children = children(&gateway, &context(&services, Some("pw"))).unwrap();
        for (kind, meta) in all_metadata(&children) {
            let owners = meta.owner_references.as_deref().unwrap_or_default();
            assert_eq!(owners.len(), 1, "{kind} has one owner");
            assert_eq!(owners[0].uid, gateway.uid().unwrap(), "{kind}");
            assert_eq!(owners[0].kind, "ShopService");
            assert_eq!(owners[0].api_version, "shop.dev/v1alpha1");
            assert_eq!(owners[0].name, "front");
            assert_eq!(owners[0].controller, Some(true), "{kind}");
        }
    }

    #[test]
    fn retained_credentials_are_the_only_object_without_an_owner() {
        let gateway = everything(DeletionPolicy::Retain);
        let services = [gateway.clone()];
        let children = children(&gateway, &context(&services, Some("pw"))).unwrap();
        let unowned: Vec<_> = all_metadata(&children)
            .into_iter()
            .filter(|(_, meta)| meta.owner_references.is_none())
            .map(|(kind, meta)| format!("{kind}/{}", meta.name.as_deref().unwrap()))
            .collect();
        assert_eq!(unowned, ["Secret/front-db-credentials"]);
    }

    /// The paths of the empty lists in `value`.
    fn empty_lists(path: &str, value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Array(items) if items.is_empty() => found.push(path.to_owned()),
            serde_json::Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    empty_lists(&format!("{path}[{i}]"), item, found);
                }
            }
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    empty_lists(&format!("{path}.{key}"), item, found);
                }
            }
            _ => {}
        }
    }

    /// The API server stores an empty list as no list at all, so an object holding one would
    /// be changed by every apply: reconciling would never settle.
    #[test]
    fn no_object_holds_an_empty_list() {
        let gateway = everything(DeletionPolicy::Delete);
        let lonely = shop("lonely", Some(Component::Payment));
        let services = [gateway.clone(), lonely.clone()];
        for shop in [&gateway, &lonely] {
            let built = children(shop, &context(&services, Some("pw"))).unwrap();
            let objects: Vec<serde_json::Value> = built
                .into_apply_order()
                .iter()
                .map(|child| child.to_json().unwrap())
                .collect();
            let mut found = Vec::new();
            for object in &objects {
                empty_lists(
                    object["kind"].as_str().unwrap_or("null"),
                    object,
                    &mut found,
                );
            }
            assert!(found.is_empty(), "empty lists: {found:?}");
        }
    }

    #[test]
    fn a_dedicated_database_without_a_password_is_an_error() {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.spec.database.mode = DatabaseMode::Dedicated;
        let services = [cart.clone()];
        let error = children(&cart, &context(&services, None)).unwrap_err();
        assert_eq!(
            error,
            BuildError::MissingDatabasePassword {
                name: "cart".into()
            }
        );
    }

    #[test]
    fn a_shop_service_that_was_never_stored_is_an_error() {
        let mut cart = shop("cart", Some(Component::Cart));
        cart.metadata.uid = None;
        let error = children(&cart, &context(&[], None)).unwrap_err();
        assert_eq!(
            error,
            BuildError::NotStored {
                name: "cart".into()
            }
        );
    }

    #[test]
    fn shared_and_no_database_build_no_database_objects() {
        for mode in [DatabaseMode::Shared, DatabaseMode::None] {
            let mut cart = shop("cart", Some(Component::Cart));
            cart.spec.database.mode = mode;
            let services = [cart.clone()];
            let built = children(&cart, &context(&services, None)).unwrap();
            assert!(built.database.is_none(), "{mode:?}");
        }
    }

    #[test]
    fn only_a_gateway_gets_a_route_table() {
        let cart = shop("cart", Some(Component::Cart));
        let services = [cart.clone()];
        let built = children(&cart, &context(&services, None)).unwrap();
        assert!(built.route_table.is_none());
    }
}
