//! A Dedicated database: PostgreSQL for one ShopService.
//!
//! - StatefulSet `<name>-db`: one PostgreSQL pod with its data on a PersistentVolumeClaim,
//!   meeting the `restricted` Pod Security Standard with a read-only root filesystem.
//! - Service `<name>-db`: the database's stable address, `<name>-db.<namespace>.svc:5432`.
//! - Service `<name>-db-headless`: the StatefulSet's governing Service, which gives the pod
//!   its own DNS name (`<name>-db-0.<name>-db-headless.<namespace>.svc`), ready or not.
//! - NetworkPolicy `<name>-db`: only the service's own pods may connect; it connects nowhere.
//! - Secret `<name>-db-credentials`: `username password host port dbname uri`, the keys
//!   CloudNativePG uses. PostgreSQL takes its user, password and database from it, and the
//!   service its `DATABASE_URL` (the `uri`).
//!
//! `deletionPolicy` decides what outlives the ShopService. With `Delete` the Secret is owned
//! by it and the StatefulSet deletes its claim, so the garbage collector removes both. With
//! `Retain` the Secret has no owner and the claim is kept: a ShopService created again with
//! the same name finds its data and the password that opens it.

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Secret,
    SecretKeySelector, Service, ServicePort, ServiceSpec, TCPSocketAction,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Owner;
use super::common::{
    Role, TMP_DIR, TMP_SIZE_LIMIT, empty_dir_volume, names, restricted_container_security_context,
    restricted_pod_security_context, volume_mount, with_ephemeral_storage,
};
use super::network_policy::tcp;
use crate::crd::DeletionPolicy;

/// The PostgreSQL image of Dedicated databases when the operator is given none
/// (`--postgres-image`): the official image, whose `postgres` user is uid 70.
pub const DEFAULT_POSTGRES_IMAGE: &str = "postgres:17-alpine";
pub const POSTGRES_PORT: i32 = 5432;

/// The `postgres` user of the Alpine PostgreSQL image.
const POSTGRES_USER_ID: i64 = 70;

/// The volume is mounted here, and the data lives in a subdirectory of it: initdb must own
/// the data directory and set its mode to 0700, which it cannot do to the volume's root (or
/// to a `subPath` directory the kubelet creates as root). A subdirectory also keeps a
/// filesystem's `lost+found` out of the data directory.
const VOLUME_DIR: &str = "/var/lib/postgresql/data";
const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// Where PostgreSQL puts its socket and lock file.
const SOCKET_DIR: &str = "/var/run/postgresql";

const DATA_VOLUME: &str = names::DATABASE_VOLUME;
const SOCKET_VOLUME: &str = "run";
const TMP_VOLUME: &str = "tmp";

/// Everything a Dedicated database consists of.
#[derive(Clone, Debug, PartialEq)]
pub struct DedicatedDatabase {
    pub stateful_set: StatefulSet,
    pub service: Service,
    /// Headless, named by the StatefulSet's `serviceName`.
    pub governing_service: Service,
    pub network_policy: NetworkPolicy,
    pub credentials: Secret,
}

/// How a service logs in to its database: what the credentials Secret holds.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseLogin {
    pub username: String,
    pub password: String,
    pub host: String,
    pub port: i32,
    pub dbname: String,
    pub tls: DatabaseTls,
}

/// How a connection to the database is protected: PostgreSQL's `sslmode` (as the shared
/// server's admin URL gives it; none for a Dedicated database, which is reached inside the
/// namespace) and the CA certificate (PEM) that verifies the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseTls {
    pub mode: Option<String>,
    pub ca_pem: Option<String>,
}

/// The credentials Secret's key for the CA certificate, and where pods find it.
pub const CA_KEY: &str = "ca.crt";
pub const CA_DIR: &str = "/etc/shop/database-ca";

// Written by hand so that the password never reaches a log line through `{:?}`.
impl std::fmt::Debug for DatabaseLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseLogin")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .finish()
    }
}

impl DatabaseLogin {
    /// The login of a Dedicated database. The user and the database are both named after
    /// the ShopService, with '-' as '_' so that they need no quoting in SQL.
    pub fn dedicated(owner: &Owner, password: &str) -> DatabaseLogin {
        let identifier = owner.name.replace('-', "_");
        DatabaseLogin {
            username: identifier.clone(),
            password: password.into(),
            host: format!("{}.{}.svc", names::database(owner.name), owner.namespace),
            port: POSTGRES_PORT,
            dbname: identifier,
            tls: DatabaseTls::default(),
        }
    }

    /// `postgres://user:password@host:port/dbname`, with the user and password
    /// percent-encoded so that any character in them is safe.
    /// With the admin URL's `sslmode`, and `sslrootcert` naming the mounted CA certificate
    /// when there is one.
    pub fn uri(&self) -> String {
        let mut uri = format!(
            "postgres://{}:{}@{}:{}/{}",
            percent_encode(&self.username),
            percent_encode(&self.password),
            self.host,
            self.port,
            self.dbname
        );
        let mut query = Vec::new();
        if let Some(mode) = &self.tls.mode {
            query.push(format!("sslmode={}", percent_encode(mode)));
        }
        if self.tls.ca_pem.is_some() {
            query.push(format!("sslrootcert={CA_DIR}/{CA_KEY}"));
        }
        if !query.is_empty() {
            uri.push('?');
            uri.push_str(&query.join("&"));
        }
        uri
    }
}

pub fn dedicated(owner: &Owner, password: &str, image: &str) -> DedicatedDatabase {
    DedicatedDatabase {
        stateful_set: stateful_set(owner, image),
        service: service(owner),
        governing_service: governing_service(owner),
        network_policy: network_policy(owner),
        credentials: credentials_secret(owner, &DatabaseLogin::dedicated(owner, password)),
    }
}

/// The Secret `<name>-db-credentials`. Shared databases use it too, with the login the I/O
/// layer created on the shared server.
pub fn credentials_secret(owner: &Owner, login: &DatabaseLogin) -> Secret {
    let name = names::credentials_secret(owner.name);
    let metadata = match owner.spec().database.deletion_policy {
        DeletionPolicy::Delete => owner.metadata(name, Role::Database),
        DeletionPolicy::Retain => owner.unowned_metadata(name, Role::Database),
    };
    let entries = [
        ("username", login.username.clone()),
        ("password", login.password.clone()),
        ("host", login.host.clone()),
        ("port", login.port.to_string()),
        ("dbname", login.dbname.clone()),
        ("uri", login.uri()),
    ]
    .into_iter()
    .chain(login.tls.ca_pem.clone().map(|pem| (CA_KEY, pem)));
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(
            entries
                .into_iter()
                .map(|(key, value)| (key.to_owned(), ByteString(value.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn stateful_set(owner: &Owner, image: &str) -> StatefulSet {
    let name = names::database(owner.name);
    let database = &owner.spec().database;
    let claim_policy = match database.deletion_policy {
        DeletionPolicy::Delete => "Delete",
        DeletionPolicy::Retain => "Retain",
    };
    StatefulSet {
        metadata: owner.metadata(&name, Role::Database),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(names::database_pods(owner.name)),
            selector: owner.label_selector(Role::Database),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(claim_policy.into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(owner.labels(Role::Database)),
                    ..Default::default()
                }),
                spec: Some(pod_spec(owner, image)),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(DATA_VOLUME.into()),
                    labels: Some(owner.labels(Role::Database)),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    storage_class_name: database.storage_class_name.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some([("storage".to_owned(), database.storage.clone())].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_spec(owner: &Owner, image: &str) -> PodSpec {
    let secret = names::credentials_secret(owner.name);
    let from_secret = |variable: &str, key: &str| EnvVar {
        name: variable.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.clone(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let postgres = Container {
        name: "postgres".into(),
        image: Some(image.into()),
        env: Some(vec![
            from_secret("POSTGRES_USER", "username"),
            from_secret("POSTGRES_PASSWORD", "password"),
            from_secret("POSTGRES_DB", "dbname"),
            EnvVar {
                name: "PGDATA".into(),
                value: Some(PGDATA.into()),
                ..Default::default()
            },
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".into()),
            container_port: POSTGRES_PORT,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Ready when it accepts connections. Alive while it listens: during crash recovery
        // it refuses connections for a while, and restarting it then would only start over.
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    r#"exec pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB""#.into(),
                ]),
            }),
            period_seconds: Some(5),
            timeout_seconds: Some(3),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("postgres".into()),
                ..Default::default()
            }),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        resources: Some(with_ephemeral_storage(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_owned(), Quantity("100m".into())),
                    ("memory".to_owned(), Quantity("128Mi".into())),
                ]
                .into(),
            ),
            limits: Some([("memory".to_owned(), Quantity("512Mi".into()))].into()),
            ..Default::default()
        })),
        security_context: Some(restricted_container_security_context()),
        volume_mounts: Some(vec![
            volume_mount(DATA_VOLUME, VOLUME_DIR),
            volume_mount(SOCKET_VOLUME, SOCKET_DIR),
            volume_mount(TMP_VOLUME, TMP_DIR),
        ]),
        ..Default::default()
    };
    PodSpec {
        // The ShopService's own account, which mounts no token: PostgreSQL never calls the API.
        service_account_name: Some(owner.name.into()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(restricted_pod_security_context(POSTGRES_USER_ID)),
        containers: vec![postgres],
        volumes: Some(vec![
            // A socket and a lock file.
            empty_dir_volume(SOCKET_VOLUME, "1Mi"),
            empty_dir_volume(TMP_VOLUME, TMP_SIZE_LIMIT),
        ]),
        ..Default::default()
    }
}

/// The address the service connects to: a ClusterIP Service, so that clients keep one stable
/// address across restarts of the pod, and only a ready PostgreSQL gets connections.
fn service(owner: &Owner) -> Service {
    Service {
        metadata: owner.metadata(names::database(owner.name), Role::Database),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(owner.selector_labels(Role::Database)),
            ports: Some(postgres_port()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The StatefulSet's governing Service: headless (no cluster IP, none taken from the Service
/// range), so that the pod has a DNS name of its own, published before it is ready (recovery
/// and tools such as `pg_isready` from another pod need it then).
fn governing_service(owner: &Owner) -> Service {
    Service {
        metadata: owner.metadata(names::database_pods(owner.name), Role::Database),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(owner.selector_labels(Role::Database)),
            ports: Some(postgres_port()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn postgres_port() -> Vec<ServicePort> {
    vec![ServicePort {
        name: Some("postgres".into()),
        protocol: Some("TCP".into()),
        app_protocol: Some("postgresql".into()),
        port: POSTGRES_PORT,
        target_port: Some(IntOrString::String("postgres".into())),
        ..Default::default()
    }]
}

fn network_policy(owner: &Owner) -> NetworkPolicy {
    NetworkPolicy {
        metadata: owner.metadata(names::database(owner.name), Role::Database),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(owner.label_selector(Role::Database)),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(owner.label_selector(Role::Server)),
                    ..Default::default()
                }]),
                ports: Some(vec![tcp(POSTGRES_PORT)]),
            }]),
            // No egress rules with the Egress type: PostgreSQL connects nowhere.
            egress: None,
        }),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, which is always safe in
/// the user and password of a URL.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::shop;
    use crate::crd::{Component, DatabaseMode, ShopService};

    fn order(policy: DeletionPolicy) -> ShopService {
        let mut order = shop("order-history", Some(Component::Order));
        order.spec.database.mode = DatabaseMode::Dedicated;
        order.spec.database.deletion_policy = policy;
        order.spec.database.storage = Quantity("5Gi".into());
        order.spec.database.storage_class_name = Some("fast".into());
        order
    }

    fn secret_value(secret: &Secret, key: &str) -> String {
        String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap()
    }

    #[test]
    fn credentials_have_the_standard_keys_and_a_uri_that_opens_the_database() {
        let shop = order(DeletionPolicy::Retain);
        let owner = Owner::new(&shop).unwrap();
        let secret = dedicated(&owner, "s3cret", DEFAULT_POSTGRES_IMAGE).credentials;
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("order-history-db-credentials")
        );
        let keys: Vec<_> = secret.data.as_ref().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            ["dbname", "host", "password", "port", "uri", "username"]
        );
        assert_eq!(secret_value(&secret, "username"), "order_history");
        assert_eq!(secret_value(&secret, "dbname"), "order_history");
        assert_eq!(secret_value(&secret, "password"), "s3cret");
        assert_eq!(secret_value(&secret, "host"), "order-history-db.shop.svc");
        assert_eq!(secret_value(&secret, "port"), "5432");
        assert_eq!(
            secret_value(&secret, "uri"),
            "postgres://order_history:s3cret@order-history-db.shop.svc:5432/order_history"
        );
    }

    #[test]
    fn the_password_is_percent_encoded_in_the_uri_and_never_debug_printed() {
        let shop = order(DeletionPolicy::Retain);
        let login = DatabaseLogin::dedicated(&Owner::new(&shop).unwrap(), "p@ss:w/rd%");
        assert!(
            login.uri().contains(":p%40ss%3Aw%2Frd%25@"),
            "{}",
            login.uri()
        );
        assert!(!format!("{login:?}").contains("p@ss"));
    }

    #[test]
    fn retain_keeps_the_secret_and_the_claim_and_delete_removes_them() {
        for (policy, owned, claim) in [
            (DeletionPolicy::Retain, false, "Retain"),
            (DeletionPolicy::Delete, true, "Delete"),
        ] {
            let shop = order(policy);
            let database = dedicated(&Owner::new(&shop).unwrap(), "pw", DEFAULT_POSTGRES_IMAGE);
            assert_eq!(
                database.credentials.metadata.owner_references.is_some(),
                owned,
                "{policy:?}"
            );
            let retention = database
                .stateful_set
                .spec
                .unwrap()
                .persistent_volume_claim_retention_policy
                .unwrap();
            assert_eq!(retention.when_deleted.as_deref(), Some(claim), "{policy:?}");
            assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
        }
    }

    #[test]
    fn postgres_runs_restricted_as_its_own_user_on_the_claim() {
        let shop = order(DeletionPolicy::Retain);
        let stateful_set =
            dedicated(&Owner::new(&shop).unwrap(), "pw", DEFAULT_POSTGRES_IMAGE).stateful_set;
        assert_eq!(
            stateful_set.metadata.name.as_deref(),
            Some("order-history-db")
        );
        let spec = stateful_set.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(
            spec.service_name.as_deref(),
            Some("order-history-db-headless"),
            "governed by the headless Service, not the one clients connect to"
        );

        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        let claim_spec = claim.spec.as_ref().unwrap();
        assert_eq!(
            claim_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"],
            Quantity("5Gi".into())
        );
        assert_eq!(claim_spec.storage_class_name.as_deref(), Some("fast"));

        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let security = pod.security_context.unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.run_as_user, Some(70));
        assert_eq!(security.fs_group, Some(70));
        assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");

        let postgres = &pod.containers[0];
        assert_eq!(postgres.image.as_deref(), Some(DEFAULT_POSTGRES_IMAGE));
        let container_security = postgres.security_context.as_ref().unwrap();
        assert_eq!(container_security.read_only_root_filesystem, Some(true));
        assert_eq!(container_security.allow_privilege_escalation, Some(false));
        let mounts: Vec<_> = postgres
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(
            mounts,
            [
                ("data", "/var/lib/postgresql/data"),
                ("run", "/var/run/postgresql"),
                ("tmp", "/tmp")
            ]
        );
        let pgdata = postgres
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "PGDATA")
            .unwrap();
        assert!(
            pgdata
                .value
                .as_deref()
                .unwrap()
                .starts_with("/var/lib/postgresql/data/")
        );
        for variable in ["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"] {
            let env = postgres
                .env
                .iter()
                .flatten()
                .find(|e| e.name == variable)
                .unwrap();
            assert_eq!(env.value, None, "{variable} comes from the Secret");
            let key = env
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            assert_eq!(key.name, "order-history-db-credentials");
        }
    }

    #[test]
    fn only_the_services_own_pods_reach_the_database() {
        let shop = order(DeletionPolicy::Retain);
        let database = dedicated(&Owner::new(&shop).unwrap(), "pw", DEFAULT_POSTGRES_IMAGE);
        let spec = database.network_policy.spec.unwrap();
        let selected = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selected["app.kubernetes.io/component"], "database");
        let ingress = spec.ingress.unwrap();
        assert_eq!(ingress.len(), 1);
        let from = ingress[0].from.as_ref().unwrap()[0]
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(from["app.kubernetes.io/instance"], "order-history");
        assert_eq!(from["app.kubernetes.io/component"], "server");
        assert_eq!(spec.egress, None, "PostgreSQL connects nowhere");
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned(), "Egress".to_owned()][..]),
            "no egress rules deny, rather than allow, all egress"
        );

        let service = database.service.spec.unwrap();
        assert_eq!(service.ports.unwrap()[0].port, 5432);
        assert_eq!(
            service.selector.unwrap()["app.kubernetes.io/component"],
            "database"
        );
        assert_eq!(service.cluster_ip, None, "a stable cluster IP for clients");
    }

    #[test]
    fn the_stateful_set_is_governed_by_a_headless_service_naming_the_pod() {
        let shop = order(DeletionPolicy::Delete);
        let database = dedicated(&Owner::new(&shop).unwrap(), "pw", DEFAULT_POSTGRES_IMAGE);
        let governing = &database.governing_service;
        assert_eq!(
            governing.metadata.name,
            database.stateful_set.spec.as_ref().unwrap().service_name
        );
        let spec = governing.spec.as_ref().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(
            spec.selector,
            database.stateful_set.spec.unwrap().selector.match_labels,
            "it selects the database's pod"
        );
        assert_eq!(spec.ports.as_ref().unwrap()[0].port, 5432);
        // The longest name a ShopService may have still makes a valid Service name.
        let longest = "a".repeat(crate::crd::MAX_NAME_LENGTH);
        assert!(names::database_pods(&longest).len() <= 63);
    }

    #[test]
    fn postgres_is_limited_in_the_local_disk_it_uses() {
        let shop = order(DeletionPolicy::Delete);
        let pod = dedicated(&Owner::new(&shop).unwrap(), "pw", DEFAULT_POSTGRES_IMAGE)
            .stateful_set
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let resources = pod.containers[0].resources.as_ref().unwrap();
        assert_eq!(
            resources.requests.as_ref().unwrap()["ephemeral-storage"],
            Quantity("64Mi".into())
        );
        assert_eq!(
            resources.limits.as_ref().unwrap()["ephemeral-storage"],
            Quantity("256Mi".into())
        );
        for volume in pod.volumes.unwrap() {
            let empty_dir = volume.empty_dir.expect("only emptyDirs besides the claim");
            assert!(
                empty_dir.size_limit.is_some(),
                "{} has no sizeLimit",
                volume.name
            );
        }
    }
}
