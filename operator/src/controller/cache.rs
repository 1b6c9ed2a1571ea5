//! What the operator knows of its children without asking the API server, so that a reconcile
//! that would change nothing sends nothing (measured in docs/benchmarks.md: each ShopService is
//! reconciled about four times on its way to Ready, and every reconcile used to re-apply every
//! child and list three kinds for the prune):
//!
//! - the watches' stores, filled by the same watches that trigger reconciles: the metadata of
//!   every owned kind, and Deployments and StatefulSets whole (their status is the
//!   ShopService's), each without `managedFields` and without its pod template;
//! - what the operator last applied to each child: a hash of the object it sent, and the
//!   version of the child the API server answered with.
//!
//! An apply is skipped only when all of these hold: the stores are synced; the desired object
//! hashes the same as the last one applied; the watch shows the child at the version that apply
//! left, so nobody changed it since (the generation where the kind has one, so that the status
//! updates of controllers do not count; the resourceVersion otherwise); and that apply is
//! younger than [`REAPPLY_AFTER`], which repairs in time what no version tracks (a label edited
//! by hand on a Deployment). A deleted child is not in the store: it is applied again.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::Resource as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};
use tokio::task::JoinHandle;
use tracing::info;

use super::status;
use crate::build::common::{INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGER, controlled_by};
use crate::build::{Child, OWNED_KINDS, OwnedKind};

/// How long an applied child is trusted without being applied again.
pub const REAPPLY_AFTER: Duration = Duration::from_secs(300);

/// The store of one owned kind.
pub enum KindStore {
    /// Metadata only: names, labels, owner references, versions.
    Metadata(ApiResource, Store<PartialObjectMeta<DynamicObject>>),
    Deployments(Store<Deployment>),
    StatefulSets(Store<StatefulSet>),
}

/// A child as its store holds it.
enum Watched {
    Metadata(Arc<PartialObjectMeta<DynamicObject>>),
    Deployment(Arc<Deployment>),
    StatefulSet(Arc<StatefulSet>),
}

impl Watched {
    fn meta(&self) -> &ObjectMeta {
        match self {
            Watched::Metadata(object) => &object.metadata,
            Watched::Deployment(object) => &object.metadata,
            Watched::StatefulSet(object) => &object.metadata,
        }
    }

    /// The object the status reads, for a Deployment or a StatefulSet.
    fn into_child(self) -> Option<Child> {
        match self {
            Watched::Metadata(_) => None,
            Watched::Deployment(object) => Some(Child::Deployment(Deployment::clone(&object))),
            Watched::StatefulSet(object) => Some(Child::StatefulSet(StatefulSet::clone(&object))),
        }
    }
}

/// The watches' stores of the owned kinds and what was last applied. See the module's doc.
pub struct ChildCache {
    stores: Vec<(&'static OwnedKind, KindStore)>,
    synced: AtomicBool,
    applied: Mutex<HashMap<Key, Applied>>,
    /// The status last seen of each Deployment and StatefulSet (a hash), to tell a status
    /// change from the echo of an apply.
    statuses: Mutex<HashMap<Key, u64>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: &'static str,
    namespace: String,
    name: String,
}

impl Key {
    fn new(kind: &'static str, meta: &ObjectMeta) -> Key {
        Key {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    fn of(child: &Child) -> Key {
        Key::new(child.kind().kind, child.meta())
    }
}

/// The version of a child that tells whether someone changed it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Version {
    /// Kinds with a spec and a status count changes of their spec only.
    Generation(i64),
    Resource(String),
}

impl Version {
    fn of(meta: &ObjectMeta) -> Option<Version> {
        match meta.generation {
            Some(generation) if generation > 0 => Some(Version::Generation(generation)),
            _ => meta.resource_version.clone().map(Version::Resource),
        }
    }
}

struct Applied {
    desired: u64,
    version: Version,
    at: Instant,
    /// The ShopService the child belongs to (its `app.kubernetes.io/instance` label).
    instance: Option<String>,
    /// The password the credentials Secret was applied with, so a reconcile need not read the
    /// Secret back while it is unchanged.
    password: Option<String>,
}

/// A hash of the object the operator would send (stable within the process, which is all the
/// cache lives for); `None` if it cannot be serialized (only maps with non-string keys fail,
/// which no Kubernetes object has), and then the child is always applied.
pub fn desired_hash(child: &Child) -> Option<u64> {
    Some(hash_of(&child.to_json().ok()?))
}

impl ChildCache {
    pub fn new(stores: Vec<(&'static OwnedKind, KindStore)>) -> ChildCache {
        ChildCache {
            stores,
            synced: AtomicBool::new(false),
            applied: Mutex::default(),
            statuses: Mutex::default(),
        }
    }

    /// Whether a watch event of the child `meta` of `kind` (whose status, for a Deployment or
    /// a StatefulSet, hashes to `status`) can change anything for its ShopService: a child the
    /// store does not hold (deleted, to be made again; or still in the watch's first list), a
    /// change of its status, or a change by someone else. Not the echo of the operator's own
    /// apply: the child at the version that apply left, its status as before.
    pub fn matters(&self, kind: &OwnedKind, meta: &ObjectMeta, status: Option<u64>) -> bool {
        let key = Key::new(kind.kind, meta);
        if self.watched(&key).is_none() {
            self.statuses.lock().expect("statuses lock").remove(&key);
            return true;
        }
        if let Some(status) = status {
            let before = self
                .statuses
                .lock()
                .expect("statuses lock")
                .insert(key.clone(), status);
            if before != Some(status) {
                return true;
            }
        }
        let applied = self.applied.lock().expect("applied lock");
        applied
            .get(&key)
            .is_none_or(|last| Version::of(meta).as_ref() != Some(&last.version))
    }

    /// Whether the watch shows the Secret `name` of `namespace` (one the operator labelled);
    /// false also until the stores are synced.
    pub fn has_secret(&self, namespace: &str, name: &str) -> bool {
        self.synced()
            && self
                .watched(&Key {
                    kind: Secret::KIND,
                    namespace: namespace.into(),
                    name: name.into(),
                })
                .is_some()
    }

    /// The child `key` as its store holds it.
    fn watched(&self, key: &Key) -> Option<Watched> {
        let (name, namespace) = (key.name.as_str(), key.namespace.as_str());
        Some(match self.store_of(key.kind)? {
            KindStore::Metadata(resource, store) => Watched::Metadata(
                store.get(&ObjectRef::new_with(name, resource.clone()).within(namespace))?,
            ),
            KindStore::Deployments(store) => {
                Watched::Deployment(store.get(&ObjectRef::new(name).within(namespace))?)
            }
            KindStore::StatefulSets(store) => {
                Watched::StatefulSet(store.get(&ObjectRef::new(name).within(namespace))?)
            }
        })
    }

    /// Marks the cache usable once every store has its first list; until then every child is
    /// applied and the prune lists from the API server.
    pub fn sync(self: &Arc<Self>) -> JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            for (_, store) in &cache.stores {
                let ready = match store {
                    KindStore::Metadata(_, store) => store.wait_until_ready().await,
                    KindStore::Deployments(store) => store.wait_until_ready().await,
                    KindStore::StatefulSets(store) => store.wait_until_ready().await,
                };
                if ready.is_err() {
                    return;
                }
            }
            cache.synced.store(true, Ordering::Release);
            info!("children's caches synced");
        })
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn store_of(&self, kind: &str) -> Option<&KindStore> {
        self.stores
            .iter()
            .find(|(stored, _)| stored.kind == kind)
            .map(|(_, store)| store)
    }

    /// The child as it stands, when applying `desired` (whose hash is `hash`) would change
    /// nothing; `None` when it must be applied. For a Deployment or a StatefulSet it is the
    /// watched object (the status reads it); for other kinds `desired` itself.
    pub fn unchanged(&self, desired: &Child, hash: u64) -> Option<Child> {
        if !self.synced() {
            return None;
        }
        let key = Key::of(desired);
        let watched = self.watched(&key)?;
        let applied = self.applied.lock().expect("applied lock");
        let last = applied.get(&key)?;
        let fresh = last.desired == hash
            && Version::of(watched.meta()).as_ref() == Some(&last.version)
            && last.at.elapsed() < REAPPLY_AFTER;
        fresh.then(|| watched.into_child().unwrap_or_else(|| desired.clone()))
    }

    /// Remembers that `desired` (hashing to `hash`) was applied and the API server answered
    /// with `applied`.
    pub fn record(&self, desired: &Child, hash: u64, applied: &Child) {
        let key = Key::of(desired);
        // The status the reconcile just read: the watch's echo of this apply is no change.
        let status = match applied {
            Child::Deployment(deployment) => Some(deployment.status_hash()),
            Child::StatefulSet(stateful_set) => Some(stateful_set.status_hash()),
            _ => None,
        };
        if let Some(status) = status {
            self.statuses
                .lock()
                .expect("statuses lock")
                .insert(key.clone(), status);
        }
        let mut entries = self.applied.lock().expect("applied lock");
        match Version::of(applied.meta()) {
            Some(version) => {
                let password = match desired {
                    Child::Secret(secret) => secret_password(secret),
                    _ => None,
                };
                entries.insert(
                    key,
                    Applied {
                        desired: hash,
                        version,
                        at: Instant::now(),
                        instance: desired
                            .meta()
                            .labels
                            .as_ref()
                            .and_then(|labels| labels.get(INSTANCE_LABEL).cloned()),
                        password,
                    },
                );
            }
            None => {
                entries.remove(&key);
            }
        }
    }

    /// Forgets what was applied for the ShopService `owner_name` of `namespace` (it is gone).
    pub fn forget(&self, namespace: &str, owner_name: &str) {
        let mut entries = self.applied.lock().expect("applied lock");
        entries.retain(|key, applied| {
            key.namespace != namespace || applied.instance.as_deref() != Some(owner_name)
        });
    }

    /// The password in the credentials Secret `name` of `namespace`, when the operator applied
    /// it and the watch shows that nobody changed the Secret since.
    pub fn known_password(&self, namespace: &str, name: &str) -> Option<String> {
        if !self.synced() {
            return None;
        }
        let key = Key {
            kind: Secret::KIND,
            namespace: namespace.into(),
            name: name.into(),
        };
        let watched = self.watched(&key)?;
        let applied = self.applied.lock().expect("applied lock");
        let last = applied.get(&key)?;
        (Version::of(watched.meta()).as_ref() == Some(&last.version))
            .then(|| last.password.clone())
            .flatten()
    }

    /// The names of the objects of `kind` that the ShopService `owner_name` (uid `owner_uid`)
    /// controls in `namespace`, as the watch sees them; `None` until the stores are synced.
    pub fn controlled(
        &self,
        kind: &OwnedKind,
        namespace: &str,
        owner_name: &str,
        owner_uid: &str,
    ) -> Option<Vec<String>> {
        if !self.synced() {
            return None;
        }
        let KindStore::Metadata(_, store) = self.store_of(kind.kind)? else {
            return None;
        };
        let labelled = |meta: &ObjectMeta| {
            meta.labels.as_ref().is_some_and(|labels| {
                labels.get(INSTANCE_LABEL).map(String::as_str) == Some(owner_name)
                    && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER)
            })
        };
        Some(
            store
                .state_filter(|object| {
                    let meta = &object.metadata;
                    meta.namespace.as_deref() == Some(namespace)
                        && labelled(meta)
                        && controlled_by(meta, owner_uid)
                })
                .iter()
                .filter_map(|object| object.metadata.name.clone())
                .collect(),
        )
    }
}

fn secret_password(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get("password")?;
    String::from_utf8(bytes.0.clone()).ok()
}

type Trigger<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// The watches of the owned kinds, for the controller's triggers; polling them fills the
/// [`ChildCache`]'s stores. Each passes on only the events that can matter to the owner (see
/// [`ChildCache::matters`]).
pub struct ChildWatches {
    pub metadata: Vec<(ApiResource, Trigger<PartialObjectMeta<DynamicObject>>)>,
    pub deployments: Trigger<Deployment>,
    pub stateful_sets: Trigger<StatefulSet>,
}

/// One watch per owned kind, of the operator's own children only (they carry its label), in
/// `namespace` or every namespace; and the cache they fill.
pub fn watch(client: &Client, namespace: Option<&str>) -> (Arc<ChildCache>, ChildWatches) {
    let config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"));
    let (deployments, deployment_writer) = reflector::store::<Deployment>();
    let (stateful_sets, stateful_set_writer) = reflector::store::<StatefulSet>();
    let mut stores = Vec::new();
    let mut metadata_writers = Vec::new();
    for kind in &OWNED_KINDS {
        if kind.kind == Deployment::KIND {
            stores.push((kind, KindStore::Deployments(deployments.clone())));
        } else if kind.kind == StatefulSet::KIND {
            stores.push((kind, KindStore::StatefulSets(stateful_sets.clone())));
        } else {
            let writer = Writer::new(kind.api_resource());
            stores.push((
                kind,
                KindStore::Metadata(kind.api_resource(), writer.as_reader()),
            ));
            metadata_writers.push((kind, writer));
        }
    }
    let cache = Arc::new(ChildCache::new(stores));

    let metadata = metadata_writers
        .into_iter()
        .map(|(kind, writer)| {
            let resource = kind.api_resource();
            let api = match namespace {
                Some(namespace) => Api::<PartialObjectMeta<DynamicObject>>::namespaced_with(
                    client.clone(),
                    namespace,
                    &resource,
                ),
                None => Api::all_with(client.clone(), &resource),
            };
            let cache = cache.clone();
            let trigger = watcher(api, config.clone())
                .default_backoff()
                .modify(|object| object.metadata.managed_fields = None)
                .reflect(writer)
                .touched_objects()
                .try_filter(move |object| {
                    future::ready(cache.matters(kind, &object.metadata, None))
                })
                .boxed();
            (resource, trigger)
        })
        .collect();
    let whole = Whole {
        client,
        namespace,
        config: &config,
        cache: &cache,
    };
    let watches = ChildWatches {
        metadata,
        deployments: whole.watch(deployment_writer, |deployment| {
            if let Some(spec) = deployment.spec.as_mut() {
                spec.template = Default::default();
            }
        }),
        stateful_sets: whole.watch(stateful_set_writer, |stateful_set| {
            if let Some(spec) = stateful_set.spec.as_mut() {
                spec.template = Default::default();
                spec.volume_claim_templates = None;
            }
        }),
    };
    (cache, watches)
}

fn hash_of(value: &impl serde::Serialize) -> u64 {
    let mut hasher = DefaultHasher::new();
    serde_json::to_string(value)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// What the watches of whole objects share.
struct Whole<'a> {
    client: &'a Client,
    namespace: Option<&'a str>,
    config: &'a watcher::Config,
    cache: &'a Arc<ChildCache>,
}

/// An owned kind watched whole: its status is what the ShopService's status reads.
trait WithStatus {
    fn status_hash(&self) -> u64;
}

impl WithStatus for Deployment {
    fn status_hash(&self) -> u64 {
        status::deployment_reading(self)
    }
}

impl WithStatus for StatefulSet {
    fn status_hash(&self) -> u64 {
        status::database_reading(self)
    }
}

impl Whole<'_> {
    /// A watch of whole objects of `K` into `writer`'s store, each without `managedFields`
    /// and without what `strip` takes out.
    fn watch<K>(&self, writer: Writer<K>, strip: fn(&mut K)) -> Trigger<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + k8s_openapi::Resource
            + WithStatus
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
    {
        let api = match self.namespace {
            Some(namespace) => Api::<K>::namespaced(self.client.clone(), namespace),
            None => Api::<K>::all(self.client.clone()),
        };
        let kind = OWNED_KINDS
            .iter()
            .find(|kind| kind.kind == <K as k8s_openapi::Resource>::KIND)
            .expect("an owned kind");
        let cache = self.cache.clone();
        watcher(api, self.config.clone())
            .default_backoff()
            .modify(move |object| {
                object.meta_mut().managed_fields = None;
                strip(object);
            })
            .reflect(writer)
            .touched_objects()
            .try_filter(move |object| {
                future::ready(cache.matters(kind, object.meta(), Some(object.status_hash())))
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::core::PartialObjectMetaExt;
    use kube::runtime::watcher::Event;

    use super::*;

    const NAMESPACE: &str = "shop";

    fn kind(name: &str) -> &'static OwnedKind {
        OWNED_KINDS.iter().find(|kind| kind.kind == name).unwrap()
    }

    fn meta(name: &str, generation: Option<i64>, resource_version: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NAMESPACE.into()),
            generation,
            resource_version: Some(resource_version.into()),
            labels: Some(
                [
                    (INSTANCE_LABEL.to_owned(), "cart".to_owned()),
                    (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
                ]
                .into(),
            ),
            owner_references: Some(vec![OwnerReference {
                controller: Some(true),
                uid: "uid-cart".into(),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    /// A synced cache with a metadata store of Services and Secrets and a Deployment store,
    /// and the writers that stand in for the watches.
    struct Fixture {
        cache: ChildCache,
        services: Writer<PartialObjectMeta<DynamicObject>>,
        secrets: Writer<PartialObjectMeta<DynamicObject>>,
        deployments: Writer<Deployment>,
    }

    fn fixture() -> Fixture {
        let mut services = Writer::new(kind(Service::KIND).api_resource());
        let mut secrets = Writer::new(kind(Secret::KIND).api_resource());
        let (deployment_store, mut deployments) = reflector::store::<Deployment>();
        for writer in [&mut services, &mut secrets] {
            writer.apply_watcher_event(&Event::Init);
            writer.apply_watcher_event(&Event::InitDone);
        }
        deployments.apply_watcher_event(&Event::Init);
        deployments.apply_watcher_event(&Event::InitDone);
        let cache = ChildCache::new(vec![
            (
                kind(Service::KIND),
                KindStore::Metadata(kind(Service::KIND).api_resource(), services.as_reader()),
            ),
            (
                kind(Secret::KIND),
                KindStore::Metadata(kind(Secret::KIND).api_resource(), secrets.as_reader()),
            ),
            (
                kind(Deployment::KIND),
                KindStore::Deployments(deployment_store),
            ),
        ]);
        cache.synced.store(true, Ordering::Release);
        Fixture {
            cache,
            services,
            secrets,
            deployments,
        }
    }

    fn watched(writer: &mut Writer<PartialObjectMeta<DynamicObject>>, meta: ObjectMeta) {
        writer.apply_watcher_event(&Event::Apply(meta.into_response_partial()));
    }

    fn service_child(cluster_ip: &str, resource_version: &str) -> Child {
        Child::Service(Service {
            metadata: meta("cart", None, resource_version),
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                cluster_ip: Some(cluster_ip.into()),
                ..Default::default()
            }),
            ..Service::default()
        })
    }

    #[test]
    fn a_child_is_skipped_only_while_it_hashes_the_same_and_nobody_changed_it() {
        let mut fixture = fixture();
        let desired = service_child("a", "");
        let hash = desired_hash(&desired).unwrap();
        assert_eq!(
            fixture.cache.unchanged(&desired, hash),
            None,
            "never applied"
        );

        let answered = service_child("a", "5");
        fixture.cache.record(&desired, hash, &answered);
        assert_eq!(
            fixture.cache.unchanged(&desired, hash),
            None,
            "not yet seen by the watch"
        );
        watched(&mut fixture.services, meta("cart", None, "5"));
        assert_eq!(
            fixture.cache.unchanged(&desired, hash),
            Some(desired.clone())
        );

        let other = service_child("b", "");
        assert_ne!(desired_hash(&other), Some(hash));
        assert_eq!(
            fixture
                .cache
                .unchanged(&other, desired_hash(&other).unwrap()),
            None,
            "a new desired state is applied"
        );

        watched(&mut fixture.services, meta("cart", None, "6"));
        assert_eq!(
            fixture.cache.unchanged(&desired, hash),
            None,
            "changed by someone since the apply"
        );

        fixture.cache.forget(NAMESPACE, "cart");
        watched(&mut fixture.services, meta("cart", None, "5"));
        assert_eq!(fixture.cache.unchanged(&desired, hash), None, "forgotten");
    }

    #[test]
    fn a_deployment_counts_its_generation_and_comes_back_with_the_watched_status() {
        let mut fixture = fixture();
        let desired = Child::Deployment(Deployment {
            metadata: meta("cart", None, ""),
            ..Deployment::default()
        });
        let hash = desired_hash(&desired).unwrap();
        let answered = Child::Deployment(Deployment {
            metadata: meta("cart", Some(2), "10"),
            ..Deployment::default()
        });
        fixture.cache.record(&desired, hash, &answered);
        let with_status = Deployment {
            metadata: meta("cart", Some(2), "14"),
            status: Some(DeploymentStatus {
                available_replicas: Some(1),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        };
        fixture
            .deployments
            .apply_watcher_event(&Event::Apply(with_status.clone()));
        assert_eq!(
            fixture.cache.unchanged(&desired, hash),
            Some(Child::Deployment(with_status)),
            "a status update is no change; the status comes from the watch"
        );
        fixture
            .deployments
            .apply_watcher_event(&Event::Apply(Deployment {
                metadata: meta("cart", Some(3), "15"),
                ..Deployment::default()
            }));
        assert_eq!(
            fixture.cache.unchanged(&desired, hash),
            None,
            "a new generation is a change of its spec"
        );
    }

    #[test]
    fn only_events_that_can_change_something_reach_the_owner() {
        let mut fixture = fixture();
        let service = kind(Service::KIND);
        let desired = service_child("a", "");
        let answered = service_child("a", "5");
        fixture
            .cache
            .record(&desired, desired_hash(&desired).unwrap(), &answered);
        watched(&mut fixture.services, meta("cart", None, "5"));
        assert!(
            !fixture
                .cache
                .matters(service, &meta("cart", None, "5"), None),
            "the echo of the operator's own apply"
        );
        watched(&mut fixture.services, meta("cart", None, "6"));
        assert!(
            fixture
                .cache
                .matters(service, &meta("cart", None, "6"), None),
            "changed by someone else"
        );
        fixture.services.apply_watcher_event(&Event::Delete(
            meta("cart", None, "6").into_response_partial(),
        ));
        assert!(
            fixture
                .cache
                .matters(service, &meta("cart", None, "6"), None),
            "deleted: to be made again"
        );

        let deployment = kind(Deployment::KIND);
        let desired = Child::Deployment(Deployment {
            metadata: meta("cart", None, ""),
            ..Deployment::default()
        });
        let stored = Deployment {
            metadata: meta("cart", Some(1), "10"),
            ..Deployment::default()
        };
        let answered = Child::Deployment(stored.clone());
        fixture
            .cache
            .record(&desired, desired_hash(&desired).unwrap(), &answered);
        fixture
            .deployments
            .apply_watcher_event(&Event::Apply(stored.clone()));
        let seen = meta("cart", Some(1), "10");
        assert!(
            !fixture
                .cache
                .matters(deployment, &seen, Some(stored.status_hash())),
            "the echo of the apply, its status as the apply answered"
        );
        assert!(
            fixture.cache.matters(deployment, &seen, Some(1)),
            "a status the apply did not see"
        );
        assert!(
            !fixture.cache.matters(deployment, &seen, Some(1)),
            "the same status again, at the applied generation"
        );
        assert!(
            fixture.cache.matters(deployment, &seen, Some(2)),
            "a new status"
        );
        assert!(
            fixture
                .cache
                .matters(deployment, &meta("cart", Some(2), "12"), Some(2)),
            "a new generation: someone changed its spec"
        );
    }

    #[test]
    fn a_password_is_known_while_its_secret_is_as_applied() {
        let mut fixture = fixture();
        let secret = |resource_version| {
            Child::Secret(Secret {
                metadata: meta("cart-db-credentials", None, resource_version),
                data: Some([("password".to_owned(), ByteString(b"s3cret".to_vec()))].into()),
                ..Secret::default()
            })
        };
        let (desired, answered) = (secret(""), secret("7"));
        fixture
            .cache
            .record(&desired, desired_hash(&desired).unwrap(), &answered);
        assert_eq!(
            fixture
                .cache
                .known_password(NAMESPACE, "cart-db-credentials"),
            None
        );
        watched(&mut fixture.secrets, meta("cart-db-credentials", None, "7"));
        assert_eq!(
            fixture
                .cache
                .known_password(NAMESPACE, "cart-db-credentials")
                .as_deref(),
            Some("s3cret")
        );
        watched(&mut fixture.secrets, meta("cart-db-credentials", None, "8"));
        assert_eq!(
            fixture
                .cache
                .known_password(NAMESPACE, "cart-db-credentials"),
            None,
            "edited since: read it back"
        );
    }

    #[test]
    fn the_prune_sees_only_what_the_owner_controls_and_nothing_before_the_sync() {
        let mut fixture = fixture();
        watched(&mut fixture.services, meta("cart", None, "1"));
        watched(&mut fixture.services, meta("cart-extra", None, "1"));
        let mut foreign = meta("cart-foreign", None, "1");
        foreign.owner_references = None;
        watched(&mut fixture.services, foreign);
        let mut other_namespace = meta("cart-elsewhere", None, "1");
        other_namespace.namespace = Some("other".into());
        watched(&mut fixture.services, other_namespace);
        let mut names = fixture
            .cache
            .controlled(kind(Service::KIND), NAMESPACE, "cart", "uid-cart")
            .unwrap();
        names.sort();
        assert_eq!(names, ["cart", "cart-extra"]);
        assert_eq!(
            fixture
                .cache
                .controlled(kind(Service::KIND), NAMESPACE, "cart", "uid-other"),
            Some(Vec::new())
        );

        fixture.cache.synced.store(false, Ordering::Release);
        assert_eq!(
            fixture
                .cache
                .controlled(kind(Service::KIND), NAMESPACE, "cart", "uid-cart"),
            None
        );
    }
}
