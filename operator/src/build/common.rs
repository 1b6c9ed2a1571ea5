//! What every builder shares, written once: the owner and its checked identity, names,
//! labels, selectors, owner references and the restricted security settings.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, EmptyDirVolumeSource, PodSecurityContext, SeccompProfile, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use super::BuildError;
use crate::crd::{ShopService, ShopServiceSpec};

/// The `app.kubernetes.io/managed-by` value of every object the operator makes.
pub const MANAGER: &str = "shop-operator";
/// The `app.kubernetes.io/part-of` value of every object the operator makes.
pub const PART_OF: &str = "shop";

/// The uid and gid the shop image runs as (distroless `nonroot`).
pub const SHOP_USER_ID: i64 = 65532;

/// Where the writable scratch space of a read-only container is mounted.
pub const TMP_DIR: &str = "/tmp";

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
            ("app.kubernetes.io/instance".into(), self.name.into()),
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
        labels.insert("app.kubernetes.io/managed-by".into(), MANAGER.into());
        labels.insert("app.kubernetes.io/part-of".into(), PART_OF.into());
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

/// An empty, pod-lifetime directory: writable space in a read-only container.
pub fn empty_dir_volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

pub fn volume_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}
