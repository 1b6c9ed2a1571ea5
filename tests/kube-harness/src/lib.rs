//! Test-support library for end-to-end tests against a real Kubernetes cluster.
//!
//! It works against any cluster the `KUBECONFIG` variable points at: the local one from
//! `tests/cluster/cluster.sh up`, a kind cluster, or a real one. A test typically does:
//!
//! ```no_run
//! # async fn example() -> Result<(), kube_harness::Error> {
//! use std::time::Duration;
//! use k8s_openapi::api::apps::v1::Deployment;
//!
//! let Some(harness) = kube_harness::Harness::connect_or_skip().await else { return Ok(()) };
//! let ns = harness.namespace("smoke").await?; // labelled PodSecurity `restricted`
//! ns.apply_file("fixtures/deployment.yaml").await?; // server-side apply
//! let deployments = ns.api::<Deployment>();
//! kube_harness::wait_for(&deployments, "web", "Available", Duration::from_secs(60), |d: Option<&Deployment>| {
//!     d.and_then(|d| d.status.as_ref()).is_some_and(|s| s.available_replicas == Some(3))
//! })
//! .await?;
//! ns.cleanup().await?;
//! # Ok(())
//! # }
//! ```
//!
//! Without a cluster, [`Harness::connect_or_skip`] prints a loud `SKIPPED` line and the test
//! returns early, except under `CI=true`, where it panics: a CI run must never pass by
//! skipping its end-to-end tests.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Event, Namespace, ServiceAccount};
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams,
};
use kube::core::Status;
use kube::discovery::{self, Scope};
use kube::runtime::wait::{Condition, await_condition};
use kube::{Client, Config, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

// The versions the harness is built with, for tests that want no second copy to keep in step.
pub use {k8s_openapi, kube};

/// The field manager of every server-side apply made by the harness.
pub const FIELD_MANAGER: &str = "kube-harness";

/// Label put on every namespace the harness creates, so leftovers are easy to find:
/// `kubectl delete namespace -l app.kubernetes.io/managed-by=kube-harness`.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kube-harness");

/// How long to wait for the API server to answer when connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a new namespace may take to get its `default` ServiceAccount.
const NAMESPACE_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything that can go wrong in the harness. `Debug` prints the same readable text as
/// `Display`, so `.unwrap()` and `?` in tests show object dumps with real line breaks.
#[derive(thiserror::Error)]
pub enum Error {
    /// `KUBECONFIG` is unset or unusable, or the API server does not answer.
    #[error("no usable cluster: {0}")]
    NoCluster(String),
    /// A request failed; [`Error::api_status`] has the server's answer if it refused it.
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// A YAML document is not a Kubernetes object the harness can apply.
    #[error("{0}")]
    Manifest(String),
    /// Watching an object failed, or a wait was used for something it cannot wait for.
    #[error("{0}")]
    Wait(String),
    /// A fixture file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A wait ran out of time; `state` shows what the cluster looked like then.
    #[error("timed out after {timeout:?} waiting for {what}\n{state}")]
    Timeout {
        what: String,
        timeout: Duration,
        /// The last observed state of the object(s), as YAML, plus related events.
        state: String,
    },
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Error {
    fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let context = context.into();
        move |source| Error::Kube { context, source }
    }

    /// The API server's `Status` when the server refused a request (admission, validation,
    /// not found, ...); `None` for any other error.
    pub fn api_status(&self) -> Option<&Status> {
        match self {
            Error::Kube {
                source: kube::Error::Api(status),
                ..
            } => Some(status),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True when running in CI (`CI` set to anything but empty, `0` or `false`), where a missing
/// cluster is a failure instead of a skip.
pub fn running_in_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// A connection to the cluster under test.
#[derive(Clone)]
pub struct Harness {
    client: Client,
    config: Config,
}

impl Harness {
    /// Connects with the kubeconfig that `KUBECONFIG` names and checks that the API server
    /// answers. `KUBECONFIG` is required on purpose: falling back to `~/.kube/config` could
    /// point the tests, which create and delete objects, at someone's real cluster.
    pub async fn connect() -> Result<Harness> {
        let path = std::env::var("KUBECONFIG").unwrap_or_default();
        if path.is_empty() {
            return Err(Error::NoCluster("KUBECONFIG is not set".into()));
        }
        let config = Config::from_kubeconfig(&Default::default())
            .await
            .map_err(|e| Error::NoCluster(format!("cannot load KUBECONFIG={path}: {e}")))?;
        let client = Client::try_from(config.clone()).map_err(|e| {
            Error::NoCluster(format!(
                "cannot build a client for {}: {e}",
                config.cluster_url
            ))
        })?;
        match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
            Ok(Ok(_)) => Ok(Harness { client, config }),
            Ok(Err(e)) => Err(Error::NoCluster(format!(
                "{} does not answer: {e}",
                config.cluster_url
            ))),
            Err(_) => Err(Error::NoCluster(format!(
                "{} did not answer within {CONNECT_TIMEOUT:?}",
                config.cluster_url
            ))),
        }
    }

    /// [`Harness::connect`], or `None` after printing a loud `SKIPPED` line when there is no
    /// cluster. Under `CI=true` a missing cluster panics instead: CI must not skip.
    pub async fn connect_or_skip() -> Option<Harness> {
        match Harness::connect().await {
            Ok(harness) => Some(harness),
            Err(e) if running_in_ci() => {
                panic!(
                    "CI=true but there is no cluster to test against ({e}); run tests/cluster/cluster.sh up"
                )
            }
            Err(e) => {
                // Written to the stderr handle, not with `eprintln!`, which the test runner
                // captures and hides for passing tests: a skip must be seen.
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "SKIPPED: no cluster ({e}) (set KUBECONFIG / run tests/cluster/cluster.sh up)"
                );
                None
            }
        }
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// An API handle for a cluster-scoped kind, or for a namespaced kind across all namespaces.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = ()>,
    {
        Api::all(self.client.clone())
    }

    /// Creates a throwaway namespace `<prefix>-<random>` that enforces the `restricted`
    /// Pod Security Standard. Delete it with [`TestNamespace::cleanup`]; if a test fails
    /// first, dropping the value deletes it.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let name = namespace_name(prefix);
        let labels = [
            ("pod-security.kubernetes.io/enforce", "restricted"),
            ("pod-security.kubernetes.io/enforce-version", "latest"),
            MANAGED_BY,
        ];
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        };
        self.api::<Namespace>()
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(Error::kube(format!("create namespace {name}")))?;
        let namespace = TestNamespace {
            harness: self.clone(),
            name,
            deleted: false,
        };
        // Pods are refused until the controller manager has created the namespace's
        // `default` ServiceAccount; wait for it so the namespace is usable at once.
        let accounts = namespace.api::<ServiceAccount>();
        wait_for(
            &accounts,
            "default",
            "the default ServiceAccount",
            NAMESPACE_READY_TIMEOUT,
            |sa: Option<&ServiceAccount>| sa.is_some(),
        )
        .await?;
        Ok(namespace)
    }

    /// Server-side applies every document of a multi-document YAML string, in order, and
    /// returns the objects as the server stored them. Namespaced objects without
    /// `metadata.namespace` go to `namespace`; the kind of each object is looked up in the
    /// API server's discovery, so custom resources work once their CRD is established.
    pub async fn apply_yaml(
        &self,
        yaml: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<DynamicObject>> {
        let mut applied = Vec::new();
        for object in parse_manifests(yaml)? {
            let (api, name) = self.dynamic_api(&object, namespace).await?;
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let result = api
                .patch(&name, &params, &Patch::Apply(&object))
                .await
                .map_err(Error::kube(format!("apply {}", describe(&object))))?;
            applied.push(result);
        }
        Ok(applied)
    }

    /// [`Harness::apply_yaml`] on the contents of a file.
    pub async fn apply_file(
        &self,
        path: impl AsRef<Path>,
        namespace: Option<&str>,
    ) -> Result<Vec<DynamicObject>> {
        self.apply_yaml(&read(path.as_ref())?, namespace).await
    }

    /// Deletes every object of a multi-document YAML string (like `kubectl delete -f`);
    /// objects that are already gone are not an error.
    pub async fn delete_yaml(&self, yaml: &str, namespace: Option<&str>) -> Result<()> {
        for object in parse_manifests(yaml)? {
            let (api, name) = self.dynamic_api(&object, namespace).await?;
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(e) => return Err(Error::kube(format!("delete {}", describe(&object)))(e)),
            }
        }
        Ok(())
    }

    /// [`Harness::delete_yaml`] on the contents of a file.
    pub async fn delete_file(&self, path: impl AsRef<Path>, namespace: Option<&str>) -> Result<()> {
        self.delete_yaml(&read(path.as_ref())?, namespace).await
    }

    async fn dynamic_api(
        &self,
        object: &DynamicObject,
        namespace: Option<&str>,
    ) -> Result<(Api<DynamicObject>, String)> {
        let types = object
            .types
            .as_ref()
            .expect("parse_manifests checks apiVersion and kind");
        let gvk = GroupVersionKind::try_from(types)
            .map_err(|e| Error::Manifest(format!("{}: {e}", describe(object))))?;
        let (resource, capabilities) =
            discovery::pinned_kind(&self.client, &gvk)
                .await
                .map_err(Error::kube(format!(
                    "discover the API of {}",
                    describe(object)
                )))?;
        let api = match capabilities.scope {
            Scope::Cluster => Api::all_with(self.client.clone(), &resource),
            Scope::Namespaced => {
                let ns = object
                    .metadata
                    .namespace
                    .as_deref()
                    .or(namespace)
                    .ok_or_else(|| {
                        Error::Manifest(format!(
                            "{} is namespaced but no namespace was given",
                            describe(object)
                        ))
                    })?;
                Api::namespaced_with(self.client.clone(), ns, &resource)
            }
        };
        Ok((api, object.name_any()))
    }
}

/// A namespace that exists for one test. Prefer the explicit [`TestNamespace::cleanup`];
/// `Drop` (which cannot be async) deletes it from a helper thread as a fallback, unless
/// `KUBE_HARNESS_KEEP_NAMESPACES` is set and the test is failing, to keep the evidence.
pub struct TestNamespace {
    harness: Harness,
    name: String,
    deleted: bool,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn harness(&self) -> &Harness {
        &self.harness
    }

    /// An API handle for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.harness.client(), &self.name)
    }

    /// [`Harness::apply_yaml`] with this namespace as the default.
    pub async fn apply_yaml(&self, yaml: &str) -> Result<Vec<DynamicObject>> {
        self.harness.apply_yaml(yaml, Some(&self.name)).await
    }

    /// [`Harness::apply_file`] with this namespace as the default.
    pub async fn apply_file(&self, path: impl AsRef<Path>) -> Result<Vec<DynamicObject>> {
        self.harness.apply_file(path, Some(&self.name)).await
    }

    /// Deletes the namespace (the namespace controller then deletes its contents). Does not
    /// wait for that to finish: nothing in a test depends on it.
    pub async fn cleanup(mut self) -> Result<()> {
        self.deleted = true;
        delete_namespace(self.harness.client(), &self.name).await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        if std::thread::panicking() && std::env::var_os("KUBE_HARNESS_KEEP_NAMESPACES").is_some() {
            eprintln!(
                "kube-harness: keeping namespace {} of the failed test",
                self.name
            );
            return;
        }
        // The test's runtime cannot be used from `drop` (it may be the very thread we block),
        // so a helper thread runs its own runtime and client to send the delete.
        let (config, name) = (self.harness.config.clone(), self.name.clone());
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = Client::try_from(config)?;
                tokio::time::timeout(CONNECT_TIMEOUT, delete_namespace(client, &name))
                    .await
                    .map_err(|_| std::io::Error::other("timed out"))??;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            })
        })
        .join();
        if !matches!(deleted, Ok(Ok(()))) {
            eprintln!(
                "kube-harness: could not delete namespace {}; delete it by hand",
                self.name
            );
        }
    }
}

async fn delete_namespace(client: Client, name: &str) -> Result<()> {
    match Api::<Namespace>::all(client)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(e) => Err(Error::kube(format!("delete namespace {name}"))(e)),
    }
}

/// Waits until the object `name` satisfies `condition` (which sees `None` while the object
/// does not exist) and returns it. On timeout the error carries the object's last state as
/// YAML and its events, so a failing test shows why.
///
/// Conditions from [`kube::runtime::wait::conditions`] work, as do closures
/// `|obj: Option<&K>| -> bool`.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    condition: impl Condition<K>,
) -> Result<K>
where
    K: Resource + Clone + fmt::Debug + Serialize + DeserializeOwned + Send + 'static,
{
    let waited = tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await;
    match waited {
        Ok(Ok(Some(object))) => Ok(object),
        Ok(Ok(None)) => Err(Error::Wait(format!(
            "the condition \"{what}\" matched while {name} does not exist; use wait_for_deletion to wait for that"
        ))),
        Ok(Err(e)) => Err(Error::Wait(format!(
            "watching {name} for \"{what}\" failed: {e}"
        ))),
        Err(_) => Err(Error::Timeout {
            what: format!("{what} ({name})"),
            timeout,
            state: dump_object(api, name).await,
        }),
    }
}

/// Waits until the object `name` no longer exists.
pub async fn wait_for_deletion<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<()>
where
    K: Resource + Clone + fmt::Debug + Serialize + DeserializeOwned + Send + 'static,
{
    let gone = tokio::time::timeout(
        timeout,
        await_condition(api.clone(), name, |o: Option<&K>| o.is_none()),
    )
    .await;
    match gone {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(Error::Wait(format!(
            "watching {name} for its deletion failed: {e}"
        ))),
        Err(_) => Err(Error::Timeout {
            what: format!("{name} to be deleted"),
            timeout,
            state: dump_object(api, name).await,
        }),
    }
}

/// Waits until no object matches the label selector (for example, until the garbage
/// collector has removed every child of a deleted owner). On timeout the error lists the
/// objects that remain.
pub async fn wait_for_none<K>(api: &Api<K>, label_selector: &str, timeout: Duration) -> Result<()>
where
    K: Resource + Clone + fmt::Debug + Serialize + DeserializeOwned,
{
    let params = ListParams::default().labels(label_selector);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let remaining = api
            .list(&params)
            .await
            .map_err(Error::kube(format!("list {label_selector}")))?;
        if remaining.items.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let state = remaining
                .items
                .iter()
                .map(to_yaml)
                .collect::<Vec<_>>()
                .join("---\n");
            return Err(Error::Timeout {
                what: format!("every object matching {label_selector} to be gone"),
                timeout,
                state: format!("--- objects that remain ---\n{state}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The object's current YAML and its events, for timeout messages. Never fails: it is
/// called while reporting another failure.
async fn dump_object<K>(api: &Api<K>, name: &str) -> String
where
    K: Resource + Clone + fmt::Debug + Serialize + DeserializeOwned,
{
    let object = match api.get_opt(name).await {
        Ok(Some(object)) => object,
        Ok(None) => return format!("--- {name} does not exist ---\n"),
        Err(e) => return format!("--- could not read {name}: {e} ---\n"),
    };
    let mut dump = format!("--- last observed state ---\n{}", to_yaml(&object));
    if let Some(ns) = object.namespace() {
        let events = Api::<Event>::namespaced(api.clone().into_client(), &ns);
        let uid = object.uid().unwrap_or_default();
        let params = ListParams::default().fields(&format!("involvedObject.uid={uid}"));
        if let Ok(list) = events.list(&params).await {
            dump.push_str("--- events ---\n");
            for e in &list.items {
                let reason = e.reason.as_deref().unwrap_or("");
                let message = e.message.as_deref().unwrap_or("");
                dump.push_str(&format!(
                    "{} {reason}: {message}\n",
                    e.type_.as_deref().unwrap_or("")
                ));
            }
        }
    }
    dump
}

/// YAML of an object without `managedFields`, which are long and never the point.
pub fn to_yaml<T: Serialize>(object: &T) -> String {
    let mut value = serde_json::to_value(object).unwrap_or_default();
    if let Some(metadata) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        metadata.remove("managedFields");
    }
    serde_saphyr::to_string(&value)
        .unwrap_or_else(|e| format!("<cannot render YAML: {e}>\n{value}"))
}

/// Parses multi-document YAML into objects, skipping empty documents, and checks that each
/// has `apiVersion`, `kind` and `metadata.name`.
pub fn parse_manifests(yaml: &str) -> Result<Vec<DynamicObject>> {
    let documents: Vec<Option<serde_json::Value>> = serde_saphyr::from_multiple(yaml)
        .map_err(|e| Error::Manifest(format!("invalid YAML: {e}")))?;
    documents
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, document)| {
            let object: DynamicObject = serde_json::from_value(document).map_err(|e| {
                Error::Manifest(format!(
                    "document {} is not a Kubernetes object: {e}",
                    i + 1
                ))
            })?;
            let typed = object
                .types
                .as_ref()
                .is_some_and(|t| !t.api_version.is_empty() && !t.kind.is_empty());
            if !typed || object.metadata.name.is_none() {
                return Err(Error::Manifest(format!(
                    "document {} needs apiVersion, kind and metadata.name",
                    i + 1
                )));
            }
            Ok(object)
        })
        .collect()
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// `Kind/name` (or `Kind/namespace/name`) for messages.
fn describe(object: &DynamicObject) -> String {
    let kind = object.types.as_ref().map_or("?", |t| t.kind.as_str());
    match &object.metadata.namespace {
        Some(ns) => format!("{kind}/{ns}/{}", object.name_any()),
        None => format!("{kind}/{}", object.name_any()),
    }
}

/// `<prefix>-<8 hex digits>`, cut to a valid DNS label. The random part comes from std's
/// `RandomState` (seeded from the OS) mixed with a counter: unique enough for test
/// namespaces without a `rand` dependency.
fn namespace_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let random = RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed)) as u32;
    let prefix: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63 - 9)
        .collect();
    let prefix = prefix.trim_matches('-');
    let prefix = if prefix.is_empty() { "test" } else { prefix };
    format!("{prefix}-{random:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_yaml_and_skips_empty_documents() {
        let yaml = "---\n# a comment\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n  namespace: other\n";
        let objects = parse_manifests(yaml).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].types.as_ref().unwrap().kind, "ConfigMap");
        assert_eq!(objects[0].data["data"]["k"], "v");
        assert_eq!(describe(&objects[1]), "Deployment/other/b");
    }

    #[test]
    fn rejects_documents_that_are_not_objects() {
        let err = parse_manifests("apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert!(err.to_string().contains("metadata.name"), "{err}");
        let err = parse_manifests("metadata:\n  name: x\n").unwrap_err();
        assert!(err.to_string().contains("document 1"), "{err}");
        assert!(parse_manifests("key: [unclosed").is_err());
    }

    #[test]
    fn namespace_names_are_unique_dns_labels() {
        let names: Vec<String> = (0..100).map(|_| namespace_name("Smoke_Test")).collect();
        for name in &names {
            assert!(name.starts_with("smoke-test-"), "{name}");
            assert!(name.len() <= 63);
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert!(namespace_name(&"x".repeat(100)).len() <= 63);
        assert!(namespace_name("--").starts_with("test-"));
    }

    #[test]
    fn yaml_dump_leaves_out_managed_fields() {
        let object = serde_json::json!({
            "metadata": {"name": "a", "managedFields": [{"manager": "m"}]},
            "status": {"ready": true},
        });
        let yaml = to_yaml(&object);
        assert!(yaml.contains("ready: true"), "{yaml}");
        assert!(!yaml.contains("managedFields"), "{yaml}");
    }
}
