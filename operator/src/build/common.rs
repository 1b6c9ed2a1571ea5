//! What every builder shares, written once: the owner and its checked identity, names,
//! labels, selectors, owner references and the restricted security settings.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, PodSecurityContext, ResourceRequirements, SeccompProfile,
    Secret, SecurityContext, TopologySpreadConstraint, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use super::BuildError;
use crate::crd::{ShopService, ShopServiceSpec};

/// The `app.kubernetes.io/managed-by` value of every object the operator makes.
pub const MANAGER: &str = "shop-operator";
/// The label naming the ShopService an object belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// The label naming who manages an object: [`MANAGER`] on the operator's.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The `app.kubernetes.io/part-of` value of every object the operator makes.
pub const PART_OF: &str = "shop";
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";

/// The uid and gid the shop image runs as (distroless `nonroot`).
pub const SHOP_USER_ID: i64 = 65532;

/// Where the writable scratch space of a read-only container is mounted.
pub const TMP_DIR: &str = "/tmp";
/// How large that scratch space may grow: nothing the services or PostgreSQL write there
/// (temporary files of a request, a sort that spills) comes near it.
pub const TMP_SIZE_LIMIT: &str = "64Mi";

/// What an object is to the ShopService that owns it: its `app.kubernetes.io/component`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The service's pods and everything that serves or guards them.
    Server,
    /// The service's dedicated PostgreSQL and its credentials.
    Database,
    /// The gateway's route table.
    RouteTable,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Database => "database",
            Role::RouteTable => "route-table",
        }
    }
}

/// A ShopService as the API server stored it: with a name, a namespace and a uid, which the
/// children's names and owner references need. Builders take this instead of the raw object
/// so none of them has to deal with a ShopService that was never stored.
#[derive(Clone, Debug)]
pub struct Owner<'a> {
    pub shop: &'a ShopService,
    pub name: &'a str,
    pub namespace: &'a str,
    owner_reference: OwnerReference,
}

impl<'a> Owner<'a> {
    pub fn new(shop: &'a ShopService) -> Result<Owner<'a>, BuildError> {
        let name = shop.metadata.name.as_deref();
        let namespace = shop.metadata.namespace.as_deref();
        let owner_reference = shop.controller_owner_ref(&());
        match (name, namespace, owner_reference) {
            (Some(name), Some(namespace), Some(owner_reference)) => Ok(Owner {
                shop,
                name,
                namespace,
                owner_reference,
            }),
            _ => Err(BuildError::NotStored {
                name: shop.name_any(),
            }),
        }
    }

    pub fn spec(&self) -> &'a ShopServiceSpec {
        &self.shop.spec
    }

    /// `app.kubernetes.io/name`: the bundled component, the ShopService's name for a custom
    /// workload, and `postgresql` for the database.
    fn app_name(&self, role: Role) -> &'a str {
        match (role, self.spec().component) {
            (Role::Database, _) => "postgresql",
            (_, Some(component)) => component.as_str(),
            (_, None) => self.name,
        }
    }

    /// The labels that select this ShopService's pods of one role. Only labels that never
    /// change for the life of the ShopService: a Deployment's selector is immutable.
    pub fn selector_labels(&self, role: Role) -> BTreeMap<String, String> {
        BTreeMap::from([
            (INSTANCE_LABEL.into(), self.name.into()),
            ("app.kubernetes.io/component".into(), role.as_str().into()),
        ])
    }

    pub fn label_selector(&self, role: Role) -> LabelSelector {
        LabelSelector {
            match_labels: Some(self.selector_labels(role)),
            ..Default::default()
        }
    }

    /// The recommended `app.kubernetes.io/*` labels, on every object and pod.
    pub fn labels(&self, role: Role) -> BTreeMap<String, String> {
        let mut labels = self.selector_labels(role);
        labels.insert("app.kubernetes.io/name".into(), self.app_name(role).into());
        labels.insert(MANAGED_BY_LABEL.into(), MANAGER.into());
        labels.insert(PART_OF_LABEL.into(), PART_OF.into());
        labels
    }

    /// Metadata of a child: its name, the owner's namespace, the labels, and the owner
    /// reference that makes the garbage collector delete it with the ShopService.
    pub fn metadata(&self, name: impl Into<String>, role: Role) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![self.owner_reference.clone()]),
            ..self.unowned_metadata(name, role)
        }
    }

    /// [`Owner::metadata`] without the owner reference, for what must outlive the
    /// ShopService (retained database credentials).
    pub fn unowned_metadata(&self, name: impl Into<String>, role: Role) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.namespace.into()),
            labels: Some(self.labels(role)),
            ..Default::default()
        }
    }

    /// The selector of the service's pods as a string, for `status.selector` (the scale
    /// subresource).
    pub fn selector_string(&self) -> String {
        self.selector_labels(Role::Server)
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Names of the children, derived from the ShopService's name.
pub mod names {
    /// The dedicated database's StatefulSet, Service and NetworkPolicy.
    pub fn database(shop: &str) -> String {
        format!("{shop}-db")
    }

    /// The dedicated database's headless Service, which governs its StatefulSet: it gives the
    /// pod its stable DNS name, `<name>-db-0.<name>-db-headless.<namespace>.svc`.
    pub fn database_pods(shop: &str) -> String {
        format!("{shop}-db-headless")
    }

    /// The volume claim template of the dedicated database's StatefulSet.
    pub const DATABASE_VOLUME: &str = "data";

    /// The claim the StatefulSet makes from that template for its one pod:
    /// `<template>-<statefulset>-<ordinal>`.
    pub fn database_claim(shop: &str) -> String {
        format!("{DATABASE_VOLUME}-{}-0", database(shop))
    }

    /// The Secret with the key the services of a namespace sign their calls to each other's
    /// internal APIs with (`SHOP_SERVICE_KEY`); one per namespace, made by the first reconcile.
    pub const SERVICE_KEY_SECRET: &str = "shop-service-key";
    /// Its one key.
    pub const SERVICE_KEY_ENTRY: &str = "key";

    /// The Secret with the database credentials.
    pub fn credentials_secret(shop: &str) -> String {
        format!("{shop}-db-credentials")
    }

    /// The gateway's route table ConfigMap.
    pub fn route_table(gateway: &str) -> String {
        format!("{gateway}-routes")
    }

    /// Where a ShopService is reached inside the cluster.
    pub fn service_url(shop: &str, namespace: &str, port: i32) -> String {
        format!("http://{shop}.{namespace}.svc:{port}")
    }
}

/// Pod-level settings of the `restricted` Pod Security Standard, for pods running as `uid`.
/// `fsGroup` makes mounted volumes writable by that group.
pub fn restricted_pod_security_context(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Container-level settings of the `restricted` Pod Security Standard, plus a read-only root
/// filesystem: whatever a container writes goes to a volume it mounts on purpose.
pub fn restricted_container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..Default::default()
    }
}

/// An empty, pod-lifetime directory of at most `size_limit`: writable space in a read-only
/// container. The limit keeps one pod from filling its node's disk (the kubelet evicts a pod
/// whose directory grows past it).
pub fn empty_dir_volume(name: &str, size_limit: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity(size_limit.into())),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The local disk every container of the operator's pods asks for and may use: its logs
/// (the kubelet keeps up to 5 × 10 MiB of them by default) and its writable layer, which the
/// read-only root filesystem keeps empty. The emptyDirs are limited on their own
/// ([`empty_dir_volume`]) and count towards the pod's total too.
pub const EPHEMERAL_STORAGE_REQUEST: &str = "64Mi";
pub const EPHEMERAL_STORAGE_LIMIT: &str = "256Mi";

/// `requests` and `limits` of `ephemeral-storage`, added to a container's resources.
pub fn with_ephemeral_storage(mut resources: ResourceRequirements) -> ResourceRequirements {
    let key = "ephemeral-storage".to_owned();
    resources
        .requests
        .get_or_insert_default()
        .insert(key.clone(), Quantity(EPHEMERAL_STORAGE_REQUEST.into()));
    resources
        .limits
        .get_or_insert_default()
        .insert(key, Quantity(EPHEMERAL_STORAGE_LIMIT.into()));
    resources
}

/// Soft spreading of the pods `selector` picks across nodes and zones: the scheduler prefers
/// the placement with the fewest of them on one node (and in one zone), so that one node's
/// loss takes as few as possible and the PodDisruptionBudget is a promise it can keep; when it
/// cannot spread, it schedules anyway (`ScheduleAnyway`: a one-node cluster still runs
/// everything). `pod-template-hash` counts the pods of each revision apart during a rollout.
pub fn spread_over_nodes_and_zones(selector: &LabelSelector) -> Vec<TopologySpreadConstraint> {
    ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            topology_key: key.into(),
            max_skew: 1,
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(selector.clone()),
            match_label_keys: Some(vec!["pod-template-hash".into()]),
            ..Default::default()
        })
        .collect()
}

pub fn volume_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

/// The namespace's Secret with the key its services sign their internal calls with (`key`, in
/// the form `SHOP_SERVICE_KEY` takes). Labelled as the operator's, so the watch sees it, and
/// owned by no ShopService: it serves them all.
pub fn service_key_secret(namespace: &str, key: String) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(names::SERVICE_KEY_SECRET.into()),
            namespace: Some(namespace.into()),
            labels: Some(
                [
                    (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
                    (PART_OF_LABEL.to_owned(), PART_OF.to_owned()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        data: Some(
            [(
                names::SERVICE_KEY_ENTRY.to_owned(),
                ByteString(key.into_bytes()),
            )]
            .into(),
        ),
        ..Default::default()
    }
}

/// Whether `meta` names the ShopService with uid `owner_uid` as its controller.
pub fn controlled_by(meta: &ObjectMeta, owner_uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|reference| reference.controller == Some(true) && reference.uid == owner_uid)
}
