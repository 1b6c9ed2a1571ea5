//! What a ShopService owns, named in one place: [`Children`] (the objects of one
//! ShopService), [`Child`] (one of them, of one of the owned kinds) and [`OWNED_KINDS`] (the
//! kinds, for what works by kind: the watches, the prune, the RBAC check).
//!
//! [`Children::into_apply_order`] destructures `Children` without `..`, so a new field does
//! not compile until it is placed in the apply order; apply, prune and `render` then take it
//! from that list. A new kind is a [`Child`] variant, whose `match`es do not compile until
//! they handle it, and an [`OWNED_KINDS`] entry, which a test holds to the variants and to
//! `controller::permissions::REQUIRED`.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ApiResource;

use super::database::DedicatedDatabase;

/// Every object one ShopService should have. An `Option` that is `None` is an object that
/// must not exist (the prune deletes it if it does).
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub service_account: ServiceAccount,
    pub deployment: Deployment,
    pub service: Service,
    pub horizontal_pod_autoscaler: Option<HorizontalPodAutoscaler>,
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    pub network_policy: NetworkPolicy,
    /// A Dedicated database. A Shared one has no objects here: its role, database and
    /// credentials Secret are made by the I/O layer on the shared server (it builds the Secret
    /// with [`super::database::credentials_secret`]).
    pub database: Option<DedicatedDatabase>,
    /// The route table, for a gateway.
    pub route_table: Option<ConfigMap>,
}

impl Children {
    /// Every object, in the order the operator applies them. Order matters only for first
    /// creation: the ServiceAccount and the credentials before the pods that use them, the
    /// route table before the gateway that reads it.
    pub fn into_apply_order(self) -> Vec<Child> {
        // No `..`: a field added to `Children` is a compile error here until it is listed.
        let Children {
            service_account,
            deployment,
            service,
            horizontal_pod_autoscaler,
            pod_disruption_budget,
            network_policy,
            database,
            route_table,
        } = self;
        let mut order = vec![Child::ServiceAccount(service_account)];
        if let Some(DedicatedDatabase {
            stateful_set,
            service,
            governing_service,
            network_policy,
            credentials,
        }) = database
        {
            order.extend([
                Child::Secret(credentials),
                Child::Service(service),
                Child::Service(governing_service),
                Child::NetworkPolicy(network_policy),
                Child::StatefulSet(stateful_set),
            ]);
        }
        order.extend(route_table.map(Child::ConfigMap));
        order.extend([
            Child::Service(service),
            Child::NetworkPolicy(network_policy),
            Child::Deployment(deployment),
        ]);
        order.extend(horizontal_pod_autoscaler.map(Child::HorizontalPodAutoscaler));
        order.extend(pod_disruption_budget.map(Child::PodDisruptionBudget));
        order
    }
}

/// One object a ShopService owns, of one of the owned kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    ServiceAccount(ServiceAccount),
    Secret(Secret),
    Service(Service),
    NetworkPolicy(NetworkPolicy),
    StatefulSet(StatefulSet),
    ConfigMap(ConfigMap),
    Deployment(Deployment),
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    PodDisruptionBudget(PodDisruptionBudget),
}

impl Child {
    /// The kind of this object, as [`OWNED_KINDS`] lists it.
    pub fn kind(&self) -> &'static OwnedKind {
        match self {
            Child::ServiceAccount(_) => &SERVICE_ACCOUNT,
            Child::Secret(_) => &SECRET,
            Child::Service(_) => &SERVICE,
            Child::NetworkPolicy(_) => &NETWORK_POLICY,
            Child::StatefulSet(_) => &STATEFUL_SET,
            Child::ConfigMap(_) => &CONFIG_MAP,
            Child::Deployment(_) => &DEPLOYMENT,
            Child::HorizontalPodAutoscaler(_) => &HORIZONTAL_POD_AUTOSCALER,
            Child::PodDisruptionBudget(_) => &POD_DISRUPTION_BUDGET,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Child::ServiceAccount(object) => &object.metadata,
            Child::Secret(object) => &object.metadata,
            Child::Service(object) => &object.metadata,
            Child::NetworkPolicy(object) => &object.metadata,
            Child::StatefulSet(object) => &object.metadata,
            Child::ConfigMap(object) => &object.metadata,
            Child::Deployment(object) => &object.metadata,
            Child::HorizontalPodAutoscaler(object) => &object.metadata,
            Child::PodDisruptionBudget(object) => &object.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// The object as JSON, with its `apiVersion` and `kind`.
    pub fn to_json(&self) -> serde_json::Result<serde_json::Value> {
        match self {
            Child::ServiceAccount(object) => serde_json::to_value(object),
            Child::Secret(object) => serde_json::to_value(object),
            Child::Service(object) => serde_json::to_value(object),
            Child::NetworkPolicy(object) => serde_json::to_value(object),
            Child::StatefulSet(object) => serde_json::to_value(object),
            Child::ConfigMap(object) => serde_json::to_value(object),
            Child::Deployment(object) => serde_json::to_value(object),
            Child::HorizontalPodAutoscaler(object) => serde_json::to_value(object),
            Child::PodDisruptionBudget(object) => serde_json::to_value(object),
        }
    }
}

/// Whether the prune deletes objects of a kind that this reconcile did not apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prune {
    /// Objects that come and go with the spec (the autoscaler, the disruption budget, the
    /// route table): deleted when labelled for the ShopService, controlled by it and not
    /// applied this time. `why` ends the Event that says so.
    WhenNotApplied { why: &'static str },
    /// Never deleted by the prune, for the reason given in [`OWNED_KINDS`]; the garbage
    /// collector removes them with the ShopService.
    Never,
}

/// One kind of object a ShopService owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnedKind {
    /// The API group, empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub api_version: &'static str,
    pub kind: &'static str,
    /// The resource's name in URLs and RBAC rules.
    pub plural: &'static str,
    pub prune: Prune,
}

impl OwnedKind {
    const fn of<K: k8s_openapi::Resource>(prune: Prune) -> OwnedKind {
        OwnedKind {
            group: K::GROUP,
            version: K::VERSION,
            api_version: K::API_VERSION,
            kind: K::KIND,
            plural: K::URL_PATH_SEGMENT,
            prune,
        }
    }

    /// For `kube`'s dynamic API: the list, watch and delete calls that work by kind.
    pub fn api_resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.into(),
            version: self.version.into(),
            api_version: self.api_version.into(),
            kind: self.kind.into(),
            plural: self.plural.into(),
        }
    }
}

// The kinds that exist as long as their ShopService are never pruned: their names follow
// from the ShopService's name, and the database's mode cannot change, so nothing of theirs
// can become undesired while it lives. Pruning them would also need `delete` on Deployments
// and StatefulSets, which the operator's RBAC deliberately leaves out.
const SERVICE_ACCOUNT: OwnedKind = OwnedKind::of::<ServiceAccount>(Prune::Never);
const SERVICE: OwnedKind = OwnedKind::of::<Service>(Prune::Never);
const NETWORK_POLICY: OwnedKind = OwnedKind::of::<NetworkPolicy>(Prune::Never);
const DEPLOYMENT: OwnedKind = OwnedKind::of::<Deployment>(Prune::Never);
const STATEFUL_SET: OwnedKind = OwnedKind::of::<StatefulSet>(Prune::Never);
/// The credentials Secret lives by the database's `deletionPolicy` (the cleanup's business),
/// and a Shared database's Secret is written by the shared-database step, which a reconcile
/// may not reach (the shared server's Secret missing): a prune would lose its password.
const SECRET: OwnedKind = OwnedKind::of::<Secret>(Prune::Never);
const CONFIG_MAP: OwnedKind = OwnedKind::of::<ConfigMap>(Prune::WhenNotApplied {
    why: "the ShopService is not a gateway",
});
const HORIZONTAL_POD_AUTOSCALER: OwnedKind =
    OwnedKind::of::<HorizontalPodAutoscaler>(Prune::WhenNotApplied {
        why: "autoscaling is off",
    });
const POD_DISRUPTION_BUDGET: OwnedKind =
    OwnedKind::of::<PodDisruptionBudget>(Prune::WhenNotApplied {
        why: "a single pod has no disruption budget",
    });

/// Every kind a ShopService owns: the operator watches each (a change to a child reconciles
/// its ShopService) and prunes those marked [`Prune::WhenNotApplied`].
pub const OWNED_KINDS: [OwnedKind; 9] = [
    SERVICE_ACCOUNT,
    SECRET,
    SERVICE,
    NETWORK_POLICY,
    STATEFUL_SET,
    CONFIG_MAP,
    DEPLOYMENT,
    HORIZONTAL_POD_AUTOSCALER,
    POD_DISRUPTION_BUDGET,
];
