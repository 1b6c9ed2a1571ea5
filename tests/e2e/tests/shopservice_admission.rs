//! The ShopService CRD at admission, against a real API server: the checked-in CRD
//! (`crds/`) installs and becomes Established, every example in `examples/` is accepted,
//! and every fixture in `fixtures/invalid/` is refused with the message its
//! `# Expected message:` line names. Files named `update-*` hold two documents: the first is
//! created, and applying the second over it must be refused (CEL transition rules). The scale
//! subresource (`kubectl scale`) reads and writes `spec.replicas`.
//!
//! Objects are sent as `kubectl apply --server-side` sends them: server-side apply with
//! strict field validation, so an unknown field is an error rather than silently dropped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use kube_harness::{Harness, Result, TestNamespace, parse_manifests};
use shop_e2e::{install_crd, repository_file};

const TIMEOUT: Duration = Duration::from_secs(60);
const FIELD_MANAGER: &str = "shop-e2e";

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn shop_services(ns: &TestNamespace) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("shop.dev", "v1alpha1", "ShopService");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "shopservices");
    Api::namespaced_with(ns.harness().client(), ns.name(), &resource)
}

/// Server-side apply with strict field validation, as `kubectl apply --server-side` does.
async fn apply(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
) -> Result<DynamicObject, kube::Error> {
    let params = PatchParams::apply(FIELD_MANAGER)
        .force()
        .validation_strict();
    api.patch(&object.name_any(), &params, &Patch::Apply(object))
        .await
}

/// One file of `fixtures/invalid/`.
struct Fixture {
    path: PathBuf,
    text: String,
    /// The fragment of the refusal message, from the `# Expected message:` line.
    expected: String,
}

impl Fixture {
    fn read(path: PathBuf) -> Fixture {
        let text = read(&path);
        let expected = text
            .lines()
            .find_map(|line| line.strip_prefix("# Expected message: "))
            .unwrap_or_else(|| panic!("{} has no `# Expected message:` line", path.display()))
            .trim()
            .to_owned();
        Fixture {
            path,
            text,
            expected,
        }
    }

    /// An update case: create the first document, then apply the second over it.
    fn is_update(&self) -> bool {
        self.path
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("update-"))
    }

    fn objects(&self) -> Vec<DynamicObject> {
        parse_manifests(&self.text).unwrap_or_else(|e| panic!("{}: {e}", self.path.display()))
    }
}

/// Every invalid fixture, by file name.
fn invalid_fixtures() -> Vec<Fixture> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/invalid");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths.into_iter().map(Fixture::read).collect()
}

/// Why `result` is not a refusal carrying `expected`, or `None` if it is.
fn refusal_problem(result: Result<DynamicObject, kube::Error>, expected: &str) -> Option<String> {
    match result {
        Ok(_) => Some("was accepted".into()),
        Err(kube::Error::Api(status)) if status.message.contains(expected) => None,
        Err(kube::Error::Api(status)) => Some(format!(
            "was refused ({}) with another message: {}",
            status.code, status.message
        )),
        Err(other) => Some(format!(
            "failed without an answer from the API server: {other}"
        )),
    }
}

#[tokio::test]
async fn every_example_is_accepted_with_its_defaults_filled_in() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    install_crd(&harness).await?;
    let ns = harness.namespace("shopsvc-examples").await?;
    let api = shop_services(&ns);

    let mut files: Vec<PathBuf> = std::fs::read_dir(repository_file("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 11,
        "the ten services and the whole shop: {files:?}"
    );
    for file in &files {
        for object in parse_manifests(&read(file)).unwrap() {
            let stored = apply(&api, &object).await.unwrap_or_else(|e| {
                panic!(
                    "{} ({}) was refused: {e}",
                    file.display(),
                    object.name_any()
                )
            });
            // Defaulting ran: what the example left out is filled in from the schema.
            assert_eq!(stored.data["spec"]["port"], 8080, "{}", file.display());
            assert_eq!(stored.data["spec"]["paused"], false, "{}", file.display());
            let database = &stored.data["spec"]["database"];
            assert!(database["mode"].is_string(), "{}", file.display());
            assert!(database["storage"].is_string(), "{}", file.display());
        }
    }
    let stored = api.list(&Default::default()).await.unwrap();
    assert_eq!(
        stored.items.len(),
        10,
        "examples/shop.yaml is the ten examples"
    );
    ns.cleanup().await
}

#[tokio::test]
async fn every_invalid_fixture_is_refused_with_its_message() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    install_crd(&harness).await?;
    let ns = harness.namespace("shopsvc-invalid").await?;
    let api = shop_services(&ns);

    let creations: Vec<Fixture> = invalid_fixtures()
        .into_iter()
        .filter(|fixture| !fixture.is_update())
        .collect();
    assert!(
        creations.len() >= 15,
        "only {} invalid fixtures",
        creations.len()
    );
    let mut problems = Vec::new();
    for fixture in &creations {
        let objects = fixture.objects();
        assert_eq!(
            objects.len(),
            1,
            "{} holds one object",
            fixture.path.display()
        );
        if let Some(problem) = refusal_problem(apply(&api, &objects[0]).await, &fixture.expected) {
            problems.push(format!(
                "{}: expected a refusal saying {:?}, but it {problem}",
                fixture.path.display(),
                fixture.expected
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    // Nothing slipped through as a side effect.
    assert!(
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    ns.cleanup().await
}

#[tokio::test]
async fn transition_rules_refuse_the_invalid_updates_and_allow_growth() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    install_crd(&harness).await?;
    let ns = harness.namespace("shopsvc-updates").await?;
    let api = shop_services(&ns);

    let updates: Vec<Fixture> = invalid_fixtures()
        .into_iter()
        .filter(Fixture::is_update)
        .collect();
    assert!(updates.len() >= 2, "only {} update fixtures", updates.len());
    let mut problems = Vec::new();
    for fixture in &updates {
        let path = fixture.path.display();
        let objects = fixture.objects();
        assert_eq!(objects.len(), 2, "{path}: the object, then the update");
        let (created, update) = (&objects[0], &objects[1]);
        apply(&api, created)
            .await
            .unwrap_or_else(|e| panic!("{path}: the first document was refused: {e}"));
        if let Some(problem) = refusal_problem(apply(&api, update).await, &fixture.expected) {
            problems.push(format!(
                "{path}: expected the update to be refused saying {:?}, but it {problem}",
                fixture.expected
            ));
        }
        api.delete(&created.name_any(), &DeleteParams::default())
            .await
            .unwrap();
        kube_harness::wait_for_deletion(&api, &created.name_any(), TIMEOUT).await?;
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));

    // The control: a storage that grows is an allowed update, so the rule above refuses
    // shrinking, not every change.
    let cart = |storage: &str| {
        parse_manifests(&format!(
            "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata:\n  name: cart\nspec:\n  component: cart\n  database:\n    mode: Dedicated\n    storage: {storage}\n"
        ))
        .unwrap()
        .remove(0)
    };
    apply(&api, &cart("1Gi")).await.unwrap();
    let grown = apply(&api, &cart("3Gi")).await.unwrap();
    assert_eq!(grown.data["spec"]["database"]["storage"], "3Gi");
    ns.cleanup().await
}

#[tokio::test]
async fn the_scale_subresource_reads_and_writes_spec_replicas() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    install_crd(&harness).await?;
    let ns = harness.namespace("shopsvc-scale").await?;
    let api = shop_services(&ns);
    let cart = parse_manifests(&read(&repository_file("examples/cart.yaml")))
        .unwrap()
        .remove(0);
    apply(&api, &cart).await.unwrap();
    assert_eq!(
        api.get_scale("cart").await.unwrap().spec.unwrap().replicas,
        Some(2)
    );

    // What `kubectl scale shopservice cart --replicas=4` sends.
    api.patch_scale("cart", &PatchParams::default(), &Patch::Merge(&scale_to(4)))
        .await
        .unwrap();
    let stored = api.get("cart").await.unwrap();
    assert_eq!(stored.data["spec"]["replicas"], 4);
    ns.cleanup().await
}

/// A Scale that sets the replicas, as the body of a merge patch.
fn scale_to(replicas: i32) -> Scale {
    Scale {
        spec: Some(ScaleSpec {
            replicas: Some(replicas),
        }),
        ..Default::default()
    }
}
