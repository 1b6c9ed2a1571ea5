//! The contract: the `ShopService` custom resource (`shop.dev/v1alpha1`).
//!
//! Every doc comment on a field becomes its description in the CRD, which is what
//! `kubectl explain shopservice.spec.<field>` shows, so they are written for the user.
//! Validation that the API server can do at admission lives here too: bounds and defaults in
//! the OpenAPI schema, and the rules that span fields as CEL (`x-kubernetes-validations`),
//! each with a message that says what to change. `crds/shopservices.shop.dev.yaml` is
//! generated from this file (`cargo run -p shop-operator -- crd`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use shop_contracts::services;

/// The longest ShopService name: its database's StatefulSet is `<name>-db`, and Kubernetes
/// needs StatefulSet names of at most 52 characters (the pods' `controller-revision-hash`
/// label is `<statefulset>-<hash>`, and label values end at 63).
pub const MAX_NAME_LENGTH: usize = 49;

// In the `#[kube(validation = ...)]` and `#[x_kube(...)]` attributes, `Rule`, `Message` and
// `ListMerge` are kube's (`kube::core`): the derives bring them into scope.

/// What the ShopService runs, and how.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "shop.dev",
    version = "v1alpha1",
    kind = "ShopService",
    shortname = "shopsvc",
    category = "shop",
    namespaced,
    status = "ShopServiceStatus",
    derive = "PartialEq",
    doc = "A microservice of the shop (or a custom workload): the operator runs it as a Deployment with its Service, autoscaler, disruption budget, network policies and, if asked, its own PostgreSQL database, and routes the gateway to it.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Component", type_ = "string", json_path = ".spec.component", description = "The bundled service it runs"),
    printcolumn(name = "Ready Replicas", type_ = "integer", json_path = ".status.readyReplicas", description = "Pods ready to serve"),
    printcolumn(name = "Database", type_ = "string", json_path = ".spec.database.mode", description = "Dedicated, Shared or None"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status", description = "Whether the service is ready"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // These two need `metadata.name`, which only a rule on the whole object can see.
    validation = Rule::new(format!(
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$') && size(self.metadata.name) <= {MAX_NAME_LENGTH}"
    ))
    .message(Message::Message(format!(
        "metadata.name must be a DNS label of at most {MAX_NAME_LENGTH} characters: lower-case letters, digits and '-', starting with a letter (it names the Service, and <name>-db the database's StatefulSet)"
    ))),
    validation = Rule::new("!has(self.spec.dependsOn) || !(self.metadata.name in self.spec.dependsOn)")
        .message("spec.dependsOn must not name this ShopService itself")
        .field_path(".spec.dependsOn"),
)]
#[x_kube(
    validation = Rule::new("has(self.component) || has(self.image)").message(
        "set spec.component to a bundled service (gateway, user, catalog, cart, order, payment, inventory, shipping, notification, storefront), or spec.image for a custom workload"
    ),
    // `shop migrate` refuses them, so a database would keep the pods in their init container.
    validation = Rule::new(no_database_rule())
        .message(Message::Expression(
            "'the ' + self.component + ' keeps no data: remove spec.database (or set its mode to None)'".into()
        ))
        .field_path(".database"),
    validation = Rule::new("!has(self.route) || !has(self.component) || self.component != 'gateway'")
        .message("the gateway is the entry point and cannot be routed to itself: remove spec.route")
        .field_path(".route"),
    validation = Rule::new("!has(self.dependsOn) || !('database' in self.dependsOn)")
        .message("spec.dependsOn cannot name a ShopService called database: its variable would be DATABASE_URL, which is the service's own database; rename that ShopService")
        .field_path(".dependsOn"),
    validation = Rule::new("!has(self.env) || self.database.mode == 'None' || !self.env.exists(e, e.name == 'DATABASE_URL')")
        .message("spec.env must not set DATABASE_URL when spec.database.mode is Dedicated or Shared: the operator sets it from the database's Secret")
        .field_path(".env"),
)]
#[serde(rename_all = "camelCase")]
pub struct ShopServiceSpec {
    /// Which bundled service to run: gateway, user, catalog, cart, order, payment, inventory,
    /// shipping, notification or storefront (the web shop's pages, built from the gateway's
    /// API: give it `dependsOn: [gateway]` and `route.pathPrefix: /`). May be left out when
    /// `image` names a custom workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<Component>,

    /// The container image. Defaults to the operator's shop image, which contains every
    /// bundled service; set it to run a custom build, or a custom workload without `component`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// When the kubelet pulls the image: Always, IfNotPresent or Never. Defaults to
    /// Kubernetes' rule (Always for `:latest` or untagged images, IfNotPresent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// How many pods to run (0 to 100). Ignored while `autoscaling` is set: the autoscaler
    /// owns the count then.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// The port the service listens on and its Service exposes (1 to 65535).
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// CPU and memory for each pod. The defaults suit the bundled services.
    #[serde(default)]
    pub resources: ComputeResources,

    /// Extra environment variables for the service, after the ones the operator sets; a
    /// variable named here replaces the operator's of the same name (for example
    /// `SHOP_LOG_FORMAT=text`). Names are unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub env: Vec<EnvVar>,

    /// How a new version replaces the old one.
    #[serde(default)]
    pub rollout: Rollout,

    /// Scale on CPU load with a HorizontalPodAutoscaler. When set, the autoscaler owns the
    /// replica count and `replicas` is ignored; leave it out for a fixed count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// The service's PostgreSQL database. Defaults to none.
    #[serde(default)]
    pub database: Database,

    /// Names of other ShopServices in this namespace that this one calls. Each becomes an
    /// environment variable `<NAME>_URL=http://<name>.<namespace>.svc:<port>` (upper-cased,
    /// '-' as '_') and is let through the network policy. A dependency that does not exist
    /// yet is reported in the status; it does not hold up the rollout.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Set)]
    pub depends_on: Vec<ServiceName>,

    /// Expose the service through the gateway under one or more path prefixes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<Route>,

    /// Stop reconciling this ShopService: its objects stay as they are until it is unpaused.
    #[serde(default)]
    pub paused: bool,
}

fn default_replicas() -> i32 {
    1
}

/// The port a ShopService listens on unless its spec says otherwise.
pub const DEFAULT_PORT: i32 = 8080;

fn default_port() -> i32 {
    DEFAULT_PORT
}

/// The bundled services of the shop.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Gateway,
    User,
    Catalog,
    Cart,
    Order,
    Payment,
    Inventory,
    Shipping,
    Notification,
    Storefront,
}

impl Component {
    /// The name `shop serve <name>` and `shop migrate <name>` take.
    pub fn as_str(self) -> &'static str {
        self.service().as_str()
    }

    /// Whether it keeps data in a database of its own. The gateway and the storefront do not:
    /// the API refuses them a database (`spec.database`).
    pub fn keeps_data(self) -> bool {
        match self {
            Component::Gateway | Component::Storefront => false,
            Component::User
            | Component::Catalog
            | Component::Cart
            | Component::Order
            | Component::Payment
            | Component::Inventory
            | Component::Shipping
            | Component::Notification => true,
        }
    }

    /// The contracts' name of this component.
    pub fn service(self) -> services::ServiceName {
        match self {
            Component::Gateway => services::ServiceName::Gateway,
            Component::User => services::ServiceName::User,
            Component::Catalog => services::ServiceName::Catalog,
            Component::Cart => services::ServiceName::Cart,
            Component::Order => services::ServiceName::Order,
            Component::Payment => services::ServiceName::Payment,
            Component::Inventory => services::ServiceName::Inventory,
            Component::Shipping => services::ServiceName::Shipping,
            Component::Notification => services::ServiceName::Notification,
            Component::Storefront => services::ServiceName::Storefront,
        }
    }
}

/// Every bundled service is a component: a service added to the contracts does not compile
/// here until the CRD can name it.
impl From<services::ServiceName> for Component {
    fn from(service: services::ServiceName) -> Self {
        match service {
            services::ServiceName::Gateway => Component::Gateway,
            services::ServiceName::User => Component::User,
            services::ServiceName::Catalog => Component::Catalog,
            services::ServiceName::Cart => Component::Cart,
            services::ServiceName::Order => Component::Order,
            services::ServiceName::Payment => Component::Payment,
            services::ServiceName::Inventory => Component::Inventory,
            services::ServiceName::Shipping => Component::Shipping,
            services::ServiceName::Notification => Component::Notification,
            services::ServiceName::Storefront => Component::Storefront,
        }
    }
}

/// The CEL rule that refuses a database to the components that keep no data, listed from
/// [`Component::keeps_data`] so the two cannot disagree.
fn no_database_rule() -> String {
    let stateless: Vec<String> = services::ServiceName::ALL
        .into_iter()
        .map(Component::from)
        .filter(|component| !component.keeps_data())
        .map(|component| format!("'{}'", component.as_str()))
        .collect();
    format!(
        "!has(self.component) || !(self.component in [{}]) || self.database.mode == 'None'",
        stateless.join(", ")
    )
}

/// When the kubelet pulls the image.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// CPU and memory for each pod of the service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(
    validation = Rule::new("!has(self.limits.memory) || quantity(self.requests.memory).compareTo(quantity(self.limits.memory)) <= 0")
        .message("resources.requests.memory must not exceed resources.limits.memory"),
    validation = Rule::new("!has(self.limits.cpu) || quantity(self.requests.cpu).compareTo(quantity(self.limits.cpu)) <= 0")
        .message("resources.requests.cpu must not exceed resources.limits.cpu"),
)]
#[serde(rename_all = "camelCase")]
pub struct ComputeResources {
    /// What the scheduler reserves for each pod; the autoscaler measures CPU against
    /// `requests.cpu`.
    #[serde(default)]
    pub requests: ResourceRequests,
    /// The most each pod may use: over the memory limit a container is killed, over the
    /// CPU limit it is slowed down.
    #[serde(default)]
    pub limits: ResourceLimits,
}

/// What the scheduler reserves for each pod.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequests {
    /// CPU reserved for each pod, for example `50m` (a twentieth of a core) or `1`.
    #[serde(default = "default_cpu_request")]
    #[schemars(schema_with = "quantity_schema")]
    pub cpu: Quantity,
    /// Memory reserved for each pod, for example `64Mi`.
    #[serde(default = "default_memory_request")]
    #[schemars(schema_with = "quantity_schema")]
    pub memory: Quantity,
}

impl Default for ResourceRequests {
    fn default() -> Self {
        ResourceRequests {
            cpu: default_cpu_request(),
            memory: default_memory_request(),
        }
    }
}

fn default_cpu_request() -> Quantity {
    Quantity("50m".into())
}

fn default_memory_request() -> Quantity {
    Quantity("64Mi".into())
}

/// The most each pod may use.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourceLimits {
    /// CPU limit of each pod. No limit by default: a limit throttles a service even when the
    /// node has idle CPU, which shows as latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub cpu: Option<Quantity>,
    /// Memory limit of each pod, for example `256Mi`; above it the container is restarted.
    #[serde(default = "default_memory_limit")]
    #[schemars(schema_with = "quantity_schema")]
    pub memory: Quantity,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            cpu: None,
            memory: default_memory_limit(),
        }
    }
}

fn default_memory_limit() -> Quantity {
    Quantity("256Mi".into())
}

/// An environment variable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// The variable's name: letters, digits, '_', '-' or '.', not starting with a digit.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z][-._a-zA-Z0-9]*$')")
        .message("env names consist of letters, digits, '_', '-' or '.', and do not start with a digit"))]
    pub name: String,
    /// The variable's value (may be empty). Do not put secrets here: the value is stored in
    /// the ShopService and the Deployment in plain text.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// How a new version of the pods replaces the old ones (a rolling update).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new(
    "!((self.maxSurge == 0 || self.maxSurge == '0%') && (self.maxUnavailable == 0 || self.maxUnavailable == '0%'))"
).message("rollout.maxSurge and rollout.maxUnavailable cannot both be zero: the rollout could never make progress"))]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// How many pods may exist above the desired count during a rollout: a number or a
    /// percentage of the desired count (rounded up). Default `25%`.
    #[serde(default = "default_max_surge")]
    pub max_surge: IntOrString,
    /// How many pods may be unavailable during a rollout: a number or a percentage of the
    /// desired count (rounded down). Default `0`: the old pods keep serving until new ones
    /// are ready.
    #[serde(default = "default_max_unavailable")]
    pub max_unavailable: IntOrString,
}

impl Default for Rollout {
    fn default() -> Self {
        Rollout {
            max_surge: default_max_surge(),
            max_unavailable: default_max_unavailable(),
        }
    }
}

fn default_max_surge() -> IntOrString {
    IntOrString::String("25%".into())
}

fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(0)
}

/// Scaling on CPU load (an autoscaling/v2 HorizontalPodAutoscaler).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("autoscaling.minReplicas must not be greater than autoscaling.maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// The fewest pods to run (1 to 100). Default 1.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// The most pods to run (1 to 100).
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// The average CPU use, in percent of `resources.requests.cpu`, that the autoscaler
    /// aims for (1 to 100). Default 80.
    #[serde(default = "default_target_cpu")]
    #[schemars(range(min = 1, max = 100))]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: i32,
}

fn default_min_replicas() -> i32 {
    1
}

fn default_target_cpu() -> i32 {
    80
}

/// The service's database.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(
    validation = Rule::new("self.mode != 'Shared' || has(self.sharedServerSecret)")
        .message("database.sharedServerSecret is required when database.mode is Shared: name the Secret that holds the shared server's admin URL"),
    // On the object, not the field: the field's one `x_kube` rule is that it never shrinks. A
    // size that is not a quantity at all is the field's own refusal.
    validation = Rule::new("!isQuantity(self.storage) || quantity(self.storage).isGreaterThan(quantity('0'))")
        .message(Message::Expression("'database.storage must be a size above zero, such as 1Gi or 500Mi (not ' + self.storage + ')'".into()))
        .field_path(".storage"),
    validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)")
        .message("database.storageClassName cannot be changed after creation: a volume cannot move to another storage class")
        .field_path(".storageClassName"),
)]
#[serde(rename_all = "camelCase")]
pub struct Database {
    /// `Dedicated`: the operator runs a PostgreSQL server for this service alone (a
    /// StatefulSet with a volume). `Shared`: the operator creates a role and a database for
    /// this service on an existing server (see `sharedServerSecret`). `None` (the default): no
    /// database. Either way the credentials are in the Secret `<name>-db-credentials` and
    /// reach the service as `DATABASE_URL`. Cannot be changed after creation.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "database.mode cannot be changed after creation: the data would not move with it; create a new ShopService instead"
    ))]
    pub mode: DatabaseMode,
    /// The size of a Dedicated database's volume, for example `1Gi` (the default) or `500Mi`.
    /// It can grow (if the storage class allows expansion) but never shrink.
    #[serde(default = "default_storage")]
    #[schemars(schema_with = "quantity_schema")]
    #[x_kube(validation = Rule::new("quantity(self).compareTo(quantity(oldSelf)) >= 0").message(Message::Expression(
        "'database.storage cannot shrink (from ' + oldSelf + ' to ' + self + '): a volume can only grow'".into()
    )))]
    pub storage: Quantity,
    /// The StorageClass of a Dedicated database's volume; the cluster's default class when
    /// unset. Cannot be changed after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// What happens to the data when the ShopService is deleted: `Retain` (the default)
    /// keeps the volume and the credentials Secret (or the shared database), so a
    /// ShopService created again with the same name finds its data; `Delete` removes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// For `Shared`: the name of a Secret in this namespace whose key `url` is an admin URL
    /// of the shared PostgreSQL server (`postgres://admin:password@host:5432/postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub shared_server_secret: Option<String>,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            mode: DatabaseMode::default(),
            storage: default_storage(),
            storage_class_name: None,
            deletion_policy: DeletionPolicy::default(),
            shared_server_secret: None,
        }
    }
}

fn default_storage() -> Quantity {
    Quantity("1Gi".into())
}

/// Where the service's database lives.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DatabaseMode {
    Dedicated,
    Shared,
    #[default]
    None,
}

/// What happens to the data when the ShopService is deleted.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// Paths that the gateway sends to this service.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// A path prefix, such as `/api/cart`, that the gateway sends to this service. It matches
    /// on segment boundaries (`/api/cart` matches `/api/cart/items`, not `/api/cartoon`), and
    /// the longest matching prefix of all routes wins, so `/` (the storefront's) takes every
    /// path no other route claims.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^/[^?# ]*$')").message(
        "route.pathPrefix must be a URL path starting with /, such as /api/cart (no spaces, ? or #)"
    ))]
    pub path_prefix: String,
    /// More prefixes for the same service, for a service that answers under several (the
    /// user service: `/api/users` and `/api/auth`; the catalog: `/api/products`,
    /// `/api/categories` and its product pictures under `/images`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[schemars(inner(length(min = 1, max = 256)))]
    #[x_kube(validation = Rule::new(
        "self.all(p, p.matches('^/[^?# ]*$'))"
    ).message("every additional path prefix must be a URL path starting with /, such as /api/auth (no spaces, ? or #)"))]
    pub additional_path_prefixes: Vec<String>,
}

impl Route {
    /// Every prefix of the route, the main one first.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.path_prefix.as_str())
            .chain(self.additional_path_prefixes.iter().map(String::as_str))
    }
}

/// The name of a ShopService in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(transparent)]
pub struct ServiceName(pub String);

impl ServiceName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ServiceName {
    fn from(name: &str) -> Self {
        ServiceName(name.to_owned())
    }
}

impl JsonSchema for ServiceName {
    fn schema_name() -> Cow<'static, str> {
        "ServiceName".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": MAX_NAME_LENGTH,
            "x-kubernetes-validations": [{
                "rule": "self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                "message": "must be the name of a ShopService: lower-case letters, digits and '-', starting with a letter",
            }],
        })
    }
}

/// A resource quantity (`500Mi`, `1Gi`, `50m`) as a plain string checked with CEL's
/// `isQuantity`. k8s-openapi describes `Quantity` as `x-kubernetes-int-or-string`, which
/// would let a bare number through and make `quantity(self)` in the rules fail on it.
fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 64,
        "x-kubernetes-validations": [{
            "rule": "isQuantity(self)",
            "message": "must be a quantity such as 500Mi, 1Gi or 250m",
        }],
    })
}

/// What the operator last saw of the service. Written by the operator only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ShopServiceStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (serving with the desired pods), `Progressing` (a rollout is under way),
    /// `Degraded` (something needs attention; the message says what) and `DatabaseReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Pods of the current Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Where other workloads in the cluster reach the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The state of the service's database, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseStatus>,
    /// The label selector of the service's pods, for the scale subresource (and so for
    /// `kubectl scale` and autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

/// The state of a ShopService's database.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// `Provisioning` (being created or not reachable yet), `Ready` or `Failed` (the
    /// `DatabaseReady` condition says why).
    pub phase: DatabasePhase,
    /// The Secret with the credentials: keys `username`, `password`, `host`, `port`, `dbname`
    /// and `uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The database server's host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The size of a Dedicated database's volume as its claim reports it, once bound. Below
    /// `spec.database.storage` while the volume grows (`DatabaseReady` says so) or when it
    /// cannot (`Degraded` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<String>,
}

/// The phase of a ShopService's database.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabasePhase {
    Provisioning,
    Ready,
    Failed,
}

/// The CustomResourceDefinition, as installed in the cluster.
///
/// kube's derive leaves `metadata` out of the schema; it is added here with the one
/// restriction Kubernetes allows on it, a bound on `name`. The bound is also what lets the API
/// server accept the CEL rule on the name: it refuses rules whose cost it cannot bound.
pub fn custom_resource_definition() -> CustomResourceDefinition {
    let mut crd = ShopService::crd();
    let metadata = JSONSchemaProps {
        type_: Some("object".into()),
        properties: Some(BTreeMap::from([(
            "name".to_owned(),
            JSONSchemaProps {
                type_: Some("string".into()),
                max_length: Some(MAX_NAME_LENGTH as i64),
                ..Default::default()
            },
        )])),
        ..Default::default()
    };
    for version in &mut crd.spec.versions {
        let root = version
            .schema
            .as_mut()
            .and_then(|schema| schema.open_api_v3_schema.as_mut())
            .expect("the derived CRD has a schema");
        root.properties
            .get_or_insert_default()
            .insert("metadata".into(), metadata.clone());
    }
    let mut value = serde_json::to_value(crd).expect("a CRD serializes");
    unwrap_descriptions(&mut value);
    serde_json::from_value(value).expect("unwrapping descriptions keeps the CRD valid")
}

/// Joins the lines of each paragraph of every `description`. Doc comments are wrapped at 100
/// columns, and `kubectl explain`, which wraps text itself, would keep those line breaks and
/// break sentences in odd places.
fn unwrap_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    serde_json::Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|paragraph| {
                                paragraph
                                    .split('\n')
                                    .map(str::trim)
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            })
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(child),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn schema() -> Value {
        let crd = serde_json::to_value(custom_resource_definition()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    /// Calls `visit(path, schema)` on every schema node under `node`.
    fn walk(path: &str, node: &Value, visit: &mut dyn FnMut(&str, &Value)) {
        visit(path, node);
        if let Some(properties) = node["properties"].as_object() {
            for (name, property) in properties {
                walk(&format!("{path}.{name}"), property, visit);
            }
        }
        if node["items"].is_object() {
            walk(&format!("{path}[]"), &node["items"], visit);
        }
    }

    #[test]
    fn every_field_is_described_for_kubectl_explain_in_unbroken_lines() {
        let schema = schema();
        let mut missing = Vec::new();
        for part in ["spec", "status"] {
            walk(part, &schema["properties"][part], &mut |path, node| {
                let description = node["description"].as_str().unwrap_or_default();
                if description.trim().is_empty() && !path.ends_with("[]") {
                    missing.push(path.to_owned());
                }
                assert!(
                    !description.replace("\n\n", "").contains('\n'),
                    "{path}: a line break inside a paragraph: {description:?}"
                );
            });
        }
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }

    #[test]
    fn the_schema_is_structural() {
        walk("", &schema(), &mut |path, node| {
            for keyword in [
                "$ref",
                "anyOf",
                "oneOf",
                "allOf",
                "not",
                "definitions",
                "$defs",
            ] {
                assert!(node.get(keyword).is_none(), "{path} uses {keyword}");
            }
            let typed = node["type"].is_string()
                || node["x-kubernetes-int-or-string"] == true
                || node["x-kubernetes-preserve-unknown-fields"] == true;
            assert!(typed, "{path} has no type: {node}");
        });
    }

    #[test]
    fn the_name_is_bounded_so_the_api_server_can_cost_the_rule_on_it() {
        let name = &schema()["properties"]["metadata"]["properties"]["name"];
        assert_eq!(name["maxLength"], MAX_NAME_LENGTH);
    }

    #[test]
    fn schema_defaults_are_what_the_operator_assumes_for_a_missing_field() {
        let schema = schema();
        let spec: ShopServiceSpec = serde_json::from_value(json!({"component": "cart"})).unwrap();
        let assumed = serde_json::to_value(&spec).unwrap();
        let mut compared = 0;
        walk("", &schema["properties"]["spec"], &mut |path, node| {
            let pointer = path.replace('.', "/");
            let parent = &pointer[..pointer.rfind('/').unwrap_or(0)];
            // Defaults inside optional objects (autoscaling, route) and list items apply
            // once the user writes the object; an empty spec has none of them.
            let parent_present = assumed.pointer(parent).is_some() && !path.contains("[]");
            if let (Some(default), true) = (node.get("default"), parent_present) {
                assert_eq!(assumed.pointer(&pointer), Some(default), "spec{path}");
                compared += 1;
            }
        });
        assert!(compared >= 15, "only {compared} defaults compared");
    }

    #[test]
    fn every_component_is_a_contracts_service_under_the_same_name() {
        for service in services::ServiceName::ALL {
            let component = Component::from(service);
            assert_eq!(component.service(), service);
            assert_eq!(
                serde_json::to_value(component).unwrap(),
                json!(service.as_str())
            );
        }
    }

    #[test]
    fn an_empty_spec_gets_the_documented_defaults() {
        let spec: ShopServiceSpec = serde_json::from_value(json!({"component": "cart"})).unwrap();
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.port, 8080);
        assert_eq!(spec.database.mode, DatabaseMode::None);
        assert_eq!(spec.database.storage, Quantity("1Gi".into()));
        assert_eq!(spec.database.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(spec.rollout.max_surge, IntOrString::String("25%".into()));
        assert_eq!(spec.rollout.max_unavailable, IntOrString::Int(0));
        assert_eq!(spec.resources.requests.cpu, Quantity("50m".into()));
        assert!(spec.autoscaling.is_none() && spec.route.is_none() && !spec.paused);
    }

    #[test]
    fn only_the_components_that_keep_no_data_are_refused_a_database() {
        assert_eq!(
            no_database_rule(),
            "!has(self.component) || !(self.component in ['gateway', 'storefront']) || self.database.mode == 'None'"
        );
        let rules = &schema()["properties"]["spec"]["x-kubernetes-validations"];
        let rule = rules
            .as_array()
            .unwrap()
            .iter()
            .find(|rule| rule["rule"] == no_database_rule())
            .expect("the rule is on the spec");
        assert_eq!(rule["fieldPath"], ".database");
        assert!(rule["messageExpression"].is_string(), "{rule}");
    }

    #[test]
    fn a_route_lists_its_main_prefix_first() {
        let route = Route {
            path_prefix: "/api/users".into(),
            additional_path_prefixes: vec!["/api/auth".into()],
        };
        assert_eq!(
            route.prefixes().collect::<Vec<_>>(),
            ["/api/users", "/api/auth"]
        );
    }

    #[test]
    fn the_crd_has_the_names_subresources_and_columns_of_the_contract() {
        let crd = custom_resource_definition();
        assert_eq!(crd.spec.group, "shop.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names, Some(vec!["shopsvc".into()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        let scale = version
            .subresources
            .as_ref()
            .unwrap()
            .scale
            .as_ref()
            .unwrap();
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            columns,
            ["Component", "Ready Replicas", "Database", "Ready", "Age"]
        );
    }
}
