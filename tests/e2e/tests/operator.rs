//! The operator against a real control plane: each test starts the controller in-process,
//! watching only its own throwaway namespace, applies ShopServices and waits for what the
//! operator must make of them. Pods become Ready on kwok nodes without running, so these
//! tests check the objects and their controllers, not the services' code.
//!
//! Before a test deletes its namespace it deletes its ShopServices while the operator still
//! runs: the finalizer would otherwise hold the namespace in Terminating. A failing test
//! cannot do that, so dropping an [`InProcessOperator`] that was not stopped (the test failed, by a
//! panic or an error) removes the finalizers and the test's volumes instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use kube_harness::{Harness, Result, TestNamespace, wait_for, wait_for_deletion, wait_for_none};
use serde_json::json;
use shop_e2e::{
    InProcessOperator, OPERATOR_NAMESPACE, delete_volumes, kube_error, provide_volumes,
    repository_file,
};
use shop_operator::controller::leader::LeaderElection;
use shop_operator::crd::{DatabaseMode, ShopService};

/// Long enough for a namespace's worth of rollouts on a busy two-core machine.
const TIMEOUT: Duration = Duration::from_secs(120);
const FIELD_MANAGER: &str = "shop-e2e";
/// Short, so that a takeover after a crash is quick to test.
const LEASE_DURATION: Duration = Duration::from_secs(3);

/// The operator in-process on `namespace`, with leader election on the Lease `lease` in the
/// operator's namespace as `identity`; leases last [`LEASE_DURATION`].
async fn start_replica(
    harness: &Harness,
    namespace: &str,
    lease: &str,
    identity: &str,
) -> Result<InProcessOperator> {
    InProcessOperator::start_with(harness, namespace, |client, settings| {
        settings.leader_election = Some(Arc::new(LeaderElection::new(
            kube::Api::namespaced(client.clone(), OPERATOR_NAMESPACE),
            lease,
            identity,
            LEASE_DURATION,
        )));
    })
    .await
}

fn condition_is(shop: &ShopService, type_: &str, status: &str) -> bool {
    shop.status.as_ref().is_some_and(|s| {
        s.observed_generation == shop.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == status)
    })
}

/// Waits until the operator has seen the ShopService's current spec and reports it Ready.
async fn wait_ready(ns: &TestNamespace, name: &str) -> Result<ShopService> {
    wait_for(
        &ns.api::<ShopService>(),
        name,
        "Ready at its current generation",
        TIMEOUT,
        |shop: Option<&ShopService>| shop.is_some_and(|s| condition_is(s, "Ready", "True")),
    )
    .await
}

/// Deletes every ShopService of the namespace and waits until they are gone: their
/// finalizer needs the operator.
async fn delete_shop_services(ns: &TestNamespace) -> Result<()> {
    let shops = ns.api::<ShopService>();
    for shop in shops
        .list(&ListParams::default())
        .await
        .map_err(kube_error("list"))?
        .items
    {
        let name = shop.name_any();
        shops
            .delete(&name, &DeleteParams::background())
            .await
            .map_err(kube_error("delete a ShopService"))?;
        wait_for_deletion(&shops, &name, TIMEOUT).await?;
    }
    Ok(())
}

async fn apply_shop(ns: &TestNamespace, yaml: &str) -> Result<Vec<ShopService>> {
    ns.apply_yaml(yaml)
        .await?
        .into_iter()
        .map(|object| {
            Ok(
                serde_json::from_value(serde_json::to_value(object).unwrap())
                    .expect("a ShopService"),
            )
        })
        .collect()
}

/// Changes the spec as a user would, with a merge patch.
async fn patch_spec(ns: &TestNamespace, name: &str, spec: serde_json::Value) -> Result<()> {
    ns.api::<ShopService>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .map_err(kube_error("patch a ShopService"))?;
    Ok(())
}

fn instance(name: &str) -> String {
    format!("app.kubernetes.io/instance={name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_shop_becomes_ready_with_every_child() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let started = Instant::now();
    let ns = harness.namespace("op-shop").await?;
    let operator = InProcessOperator::start(&harness, ns.name()).await?;
    let yaml = std::fs::read_to_string(repository_file("examples/shop.yaml")).unwrap();
    let shops: Vec<ShopService> = kube_harness::parse_manifests(&yaml)?
        .into_iter()
        .map(|o| serde_json::from_value(serde_json::to_value(o).unwrap()).unwrap())
        .collect();
    provide_volumes(&harness, ns.name(), &shops).await?;
    apply_shop(&ns, &yaml).await?;

    for shop in &shops {
        let name = shop.name_any();
        let ready = wait_ready(&ns, &name).await?;
        let status = ready.status.unwrap();
        assert_eq!(
            status.url.unwrap(),
            format!("http://{name}.{}.svc:8080", ns.name())
        );

        let deployment = ns.api::<Deployment>().get(&name).await.unwrap();
        let available = deployment.status.unwrap().conditions.unwrap_or_default();
        assert!(
            available
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True"),
            "{name}: Deployment Available"
        );
        ns.api::<Service>().get(&name).await.unwrap();
        ns.api::<ServiceAccount>().get(&name).await.unwrap();
        ns.api::<NetworkPolicy>().get(&name).await.unwrap();
        if shop.spec.database.mode == DatabaseMode::Dedicated {
            let database = ns
                .api::<StatefulSet>()
                .get(&format!("{name}-db"))
                .await
                .unwrap();
            assert_eq!(
                database.status.unwrap().ready_replicas,
                Some(1),
                "{name}-db"
            );
            let secret = ns
                .api::<Secret>()
                .get(&format!("{name}-db-credentials"))
                .await
                .unwrap();
            let keys: Vec<_> = secret.data.unwrap().into_keys().collect();
            assert_eq!(
                keys,
                ["dbname", "host", "password", "port", "uri", "username"]
            );
            let db_status = status.database.expect("a database status");
            assert_eq!(
                db_status.secret_name.as_deref(),
                Some(format!("{name}-db-credentials").as_str())
            );
        }
    }

    let routes = ns.api::<ConfigMap>().get("gateway-routes").await.unwrap();
    let table = routes.data.unwrap().into_values().collect::<String>();
    let table: serde_json::Value = serde_json::from_str(&table).unwrap();
    for shop in &shops {
        for prefix in shop.spec.route.iter().flat_map(|route| route.prefixes()) {
            let routed = table["routes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|route| route["prefix"] == prefix && route["service"] == shop.name_any());
            assert!(
                routed,
                "the route table sends {prefix} to {}: {table}",
                shop.name_any()
            );
        }
    }
    ns.api::<HorizontalPodAutoscaler>()
        .get("gateway")
        .await
        .unwrap();
    assert_eq!(operator.get("/readyz").await.0, 200);
    eprintln!("the example shop was Ready after {:?}", started.elapsed());

    delete_shop_services(&ns).await?;
    operator.stop().await;
    delete_volumes(&harness, ns.name()).await?;
    ns.cleanup().await
}

/// The fields of the Deployment's spec that the operator's field manager owns.
fn operator_owns_replicas(deployment: &Deployment) -> bool {
    deployment
        .managed_fields()
        .iter()
        .filter(|entry| entry.manager.as_deref() == Some("shop-operator"))
        .filter_map(|entry| entry.fields_v1.as_ref())
        .any(|fields| fields.0.pointer("/f:spec/f:replicas").is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_autoscaling_and_scale_changes_reach_the_deployment() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let started = Instant::now();
    let ns = harness.namespace("op-changes").await?;
    let operator = InProcessOperator::start(&harness, ns.name()).await?;
    apply_shop(
        &ns,
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: cart}\nspec: {component: cart, replicas: 2}\n",
    )
    .await?;
    wait_ready(&ns, "cart").await?;
    let deployments = ns.api::<Deployment>();

    // A new image rolls the pods.
    patch_spec(&ns, "cart", json!({"image": "example.org/cart:2"})).await?;
    wait_for(
        &deployments,
        "cart",
        "the new image in the pod template",
        TIMEOUT,
        |d: Option<&Deployment>| {
            d.and_then(|d| d.spec.as_ref())
                .and_then(|s| s.template.spec.as_ref())
                .is_some_and(|pod| {
                    pod.containers
                        .iter()
                        .any(|c| c.image.as_deref() == Some("example.org/cart:2"))
                })
        },
    )
    .await?;
    wait_ready(&ns, "cart").await?;

    // Autoscaling on: an HPA, and the operator lets go of the replica count.
    patch_spec(
        &ns,
        "cart",
        json!({"autoscaling": {"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 70}}),
    )
    .await?;
    let hpas = ns.api::<HorizontalPodAutoscaler>();
    wait_for(
        &hpas,
        "cart",
        "the autoscaler",
        TIMEOUT,
        |h: Option<&HorizontalPodAutoscaler>| h.is_some(),
    )
    .await?;
    wait_for(
        &deployments,
        "cart",
        "replicas left to the autoscaler",
        TIMEOUT,
        |d: Option<&Deployment>| d.is_some_and(|d| !operator_owns_replicas(d)),
    )
    .await?;

    // Autoscaling off: the HPA goes and the count comes back from the spec.
    patch_spec(&ns, "cart", json!({"autoscaling": null, "replicas": 3})).await?;
    wait_for_deletion(&hpas, "cart", TIMEOUT).await?;
    wait_for(
        &deployments,
        "cart",
        "3 replicas owned by the operator",
        TIMEOUT,
        |d: Option<&Deployment>| {
            d.is_some_and(|d| {
                operator_owns_replicas(d) && d.spec.as_ref().and_then(|s| s.replicas) == Some(3)
            })
        },
    )
    .await?;

    // The scale subresource, as `kubectl scale` uses it.
    let shops = ns.api::<ShopService>();
    shops
        .patch_scale(
            "cart",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .map_err(kube_error("scale"))?;
    wait_for(
        &deployments,
        "cart",
        "4 replicas",
        TIMEOUT,
        |d: Option<&Deployment>| {
            d.and_then(|d| d.spec.as_ref()).and_then(|s| s.replicas) == Some(4)
        },
    )
    .await?;
    let ready = wait_ready(&ns, "cart").await?;
    assert_eq!(ready.spec.replicas, 4);
    let scale = shops
        .get_scale("cart")
        .await
        .map_err(kube_error("get scale"))?;
    assert_eq!(
        scale.status.and_then(|s| s.selector).as_deref(),
        Some("app.kubernetes.io/component=server,app.kubernetes.io/instance=cart")
    );
    eprintln!(
        "image, autoscaling and scale changes took {:?}",
        started.elapsed()
    );

    delete_shop_services(&ns).await?;
    operator.stop().await;
    ns.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_a_standby_takes_over() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let started = Instant::now();
    let ns = harness.namespace("op-leader").await?;
    // One Lease per test run, so that runs do not contend with each other.
    let lease = ns.name().to_owned();
    let leases = kube::Api::<Lease>::namespaced(harness.client(), OPERATOR_NAMESPACE);
    let first = start_replica(&harness, ns.name(), &lease, "first").await?;
    wait_for(
        &leases,
        &lease,
        "held by the first replica",
        TIMEOUT,
        |l: Option<&Lease>| holder(l) == Some("first"),
    )
    .await?;
    let second = start_replica(&harness, ns.name(), &lease, "second").await?;
    assert_eq!(second.get("/readyz").await.0, 200, "a standby is ready");

    apply_shop(
        &ns,
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: cart}\nspec: {component: cart}\n",
    )
    .await?;
    wait_ready(&ns, "cart").await?;
    first.wait_for_reconciles_above(0, TIMEOUT).await;
    assert_eq!(
        second.successful_reconciles().await,
        0,
        "the standby did not reconcile"
    );

    // The leader resigns as it stops; the standby takes over and reconciles.
    first.stop().await;
    wait_for(
        &leases,
        &lease,
        "held by the second replica",
        TIMEOUT,
        |l: Option<&Lease>| holder(l) == Some("second"),
    )
    .await?;
    patch_spec(&ns, "cart", json!({"image": "example.org/cart:2"})).await?;
    wait_for(
        &ns.api::<Deployment>(),
        "cart",
        "the new image",
        TIMEOUT,
        |d: Option<&Deployment>| pod_image(d).as_deref() == Some("example.org/cart:2"),
    )
    .await?;
    second.wait_for_reconciles_above(0, TIMEOUT).await;
    eprintln!("the leader election check took {:?}", started.elapsed());

    delete_shop_services(&ns).await?;
    second.stop().await;
    leases
        .delete(&lease, &DeleteParams::default())
        .await
        .map_err(kube_error("delete the test's Lease"))?;
    ns.cleanup().await
}

fn holder(lease: Option<&Lease>) -> Option<&str> {
    lease?.spec.as_ref()?.holder_identity.as_deref()
}

fn env_value(deployment: Option<&Deployment>, name: &str) -> Option<String> {
    let pod = deployment?.spec.as_ref()?.template.spec.as_ref()?;
    let env = pod.containers[0].env.as_ref()?;
    env.iter().find(|e| e.name == name)?.value.clone()
}

fn has_condition(shop: &ShopService, type_: &str, status: &str, reason: &str) -> bool {
    condition_is(shop, type_, status)
        && shop
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.type_ == type_ && c.reason == reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_shop_service_updates_its_dependents_and_the_gateway() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let started = Instant::now();
    let ns = harness.namespace("op-peers").await?;
    let operator = InProcessOperator::start(&harness, ns.name()).await?;
    apply_shop(
        &ns,
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: gateway}\nspec: {component: gateway}\n---\napiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: cart}\nspec: {component: cart, dependsOn: [catalog], route: {pathPrefix: /api/cart}}\n",
    )
    .await?;
    let shops = ns.api::<ShopService>();
    wait_for(
        &shops,
        "cart",
        "Ready, and Degraded for the missing catalog",
        TIMEOUT,
        |s: Option<&ShopService>| {
            s.is_some_and(|s| {
                condition_is(s, "Ready", "True")
                    && has_condition(s, "Degraded", "True", "DependencyMissing")
            })
        },
    )
    .await?;

    // Only the catalog changes; the cart and the gateway must follow without a change of
    // their own (their periodic resync is minutes away).
    apply_shop(
        &ns,
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: catalog}\nspec: {component: catalog, port: 9090, route: {pathPrefix: /api/products}}\n",
    )
    .await?;
    wait_for(
        &shops,
        "cart",
        "no longer Degraded",
        TIMEOUT,
        |s: Option<&ShopService>| {
            s.is_some_and(|s| has_condition(s, "Degraded", "False", "AsExpected"))
        },
    )
    .await?;
    let catalog_url = format!("http://catalog.{}.svc:9090", ns.name());
    wait_for(
        &ns.api::<Deployment>(),
        "cart",
        "CATALOG_URL with the catalog's port",
        TIMEOUT,
        |d: Option<&Deployment>| {
            env_value(d, "CATALOG_URL").as_deref() == Some(catalog_url.as_str())
        },
    )
    .await?;
    wait_for(
        &ns.api::<ConfigMap>(),
        "gateway-routes",
        "the catalog's route",
        TIMEOUT,
        |c: Option<&ConfigMap>| {
            c.and_then(|c| c.data.as_ref())
                .is_some_and(|data| data.values().any(|table| table.contains("/api/products")))
        },
    )
    .await?;
    eprintln!("the peer updates took {:?}", started.elapsed());

    delete_shop_services(&ns).await?;
    operator.stop().await;
    ns.cleanup().await
}

fn pod_image(deployment: Option<&Deployment>) -> Option<String> {
    deployment?
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers[0]
        .image
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_shop_service_is_left_alone_until_resumed() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let started = Instant::now();
    let ns = harness.namespace("op-paused").await?;
    let operator = InProcessOperator::start(&harness, ns.name()).await?;
    apply_shop(
        &ns,
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: cart}\nspec: {component: cart}\n",
    )
    .await?;
    wait_ready(&ns, "cart").await?;
    let deployments = ns.api::<Deployment>();
    let image = pod_image(deployments.get("cart").await.ok().as_ref());

    patch_spec(
        &ns,
        "cart",
        json!({"paused": true, "image": "example.org/cart:2"}),
    )
    .await?;
    let paused = wait_for(
        &ns.api::<ShopService>(),
        "cart",
        "Progressing False, reason Paused, at the current generation",
        TIMEOUT,
        |shop: Option<&ShopService>| {
            shop.is_some_and(|s| {
                condition_is(s, "Progressing", "False")
                    && s.status
                        .iter()
                        .flat_map(|st| &st.conditions)
                        .any(|c| c.reason == "Paused")
            })
        },
    )
    .await?;
    // The reconcile that wrote this status is the one that would have applied the image.
    assert_eq!(
        paused.status.unwrap().observed_generation,
        paused.metadata.generation
    );
    assert_eq!(
        pod_image(deployments.get("cart").await.ok().as_ref()),
        image
    );

    patch_spec(&ns, "cart", json!({"paused": false})).await?;
    wait_for(
        &deployments,
        "cart",
        "the new image once resumed",
        TIMEOUT,
        |d: Option<&Deployment>| pod_image(d).as_deref() == Some("example.org/cart:2"),
    )
    .await?;
    eprintln!("the pause check took {:?}", started.elapsed());

    delete_shop_services(&ns).await?;
    operator.stop().await;
    ns.cleanup().await
}

/// The resourceVersion of every object the operator made for `name`, by kind and name.
async fn children_versions(ns: &TestNamespace, name: &str) -> BTreeMap<String, String> {
    async fn versions<K>(ns: &TestNamespace, name: &str, into: &mut BTreeMap<String, String>)
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let list = ns
            .api::<K>()
            .list(&ListParams::default().labels(&instance(name)))
            .await
            .expect("list children");
        for object in list.items {
            into.insert(
                format!("{}/{}", K::kind(&()), object.name_any()),
                object.resource_version().unwrap_or_default(),
            );
        }
    }
    let mut all = BTreeMap::new();
    versions::<Deployment>(ns, name, &mut all).await;
    versions::<Service>(ns, name, &mut all).await;
    versions::<ServiceAccount>(ns, name, &mut all).await;
    versions::<NetworkPolicy>(ns, name, &mut all).await;
    versions::<StatefulSet>(ns, name, &mut all).await;
    versions::<Secret>(ns, name, &mut all).await;
    versions::<ConfigMap>(ns, name, &mut all).await;
    all
}

async fn password(ns: &TestNamespace, name: &str) -> Vec<u8> {
    let secret = ns
        .api::<Secret>()
        .get(&format!("{name}-db-credentials"))
        .await
        .expect("the credentials Secret");
    secret.data.unwrap()["password"].0.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciling_a_settled_shop_service_changes_nothing() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let started = Instant::now();
    let ns = harness.namespace("op-idempotent").await?;
    let operator = InProcessOperator::start(&harness, ns.name()).await?;
    let shops = apply_shop(
        &ns,
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: orders}\nspec: {component: order, database: {mode: Dedicated}}\n---\napiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: gateway}\nspec: {component: gateway}\n",
    )
    .await?;
    provide_volumes(&harness, ns.name(), &shops).await?;
    wait_ready(&ns, "orders").await?;
    wait_ready(&ns, "gateway").await?;
    let first_password = password(&ns, "orders").await;

    // Settled: the Deployment and StatefulSet controllers have finished their status writes.
    let deadline = Instant::now() + TIMEOUT;
    let mut before = children_versions(&ns, "orders").await;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = children_versions(&ns, "orders").await;
        if now == before {
            break;
        }
        assert!(Instant::now() < deadline, "the children never settled");
        before = now;
    }
    let shop_version = |shop: ShopService| shop.resource_version();

    let shops_api = ns.api::<ShopService>();
    let reconciles = operator.successful_reconciles().await;
    for round in 0..3 {
        // Metadata-only changes: each is a watch event, so a reconcile, and no new spec.
        shops_api
            .patch(
                "orders",
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(json!({
                    "apiVersion": "shop.dev/v1alpha1",
                    "kind": "ShopService",
                    "metadata": {"annotations": {"shop-e2e/nudge": round.to_string()}},
                })),
            )
            .await
            .map_err(kube_error("annotate"))?;
    }
    operator
        .wait_for_reconciles_above(reconciles, TIMEOUT)
        .await;
    let nudged = shops_api.get("orders").await.map_err(kube_error("get"))?;
    // Give any write the reconciles might make the time to land before comparing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        children_versions(&ns, "orders").await,
        before,
        "no child was written"
    );
    assert_eq!(
        password(&ns, "orders").await,
        first_password,
        "the password never changes"
    );
    let after = shops_api.get("orders").await.map_err(kube_error("get"))?;
    assert_eq!(
        shop_version(after),
        shop_version(nudged),
        "the status was not rewritten"
    );
    eprintln!("the idempotency check took {:?}", started.elapsed());

    delete_shop_services(&ns).await?;
    operator.stop().await;
    delete_volumes(&harness, ns.name()).await?;
    ns.cleanup().await
}

/// The operator skips the apply of a child it applied before and nobody changed since
/// (`controller/cache.rs`): a child deleted, or changed by hand, must still be put back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_deleted_or_changed_by_hand_is_put_back() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let started = Instant::now();
    let ns = harness.namespace("op-drift").await?;
    let operator = InProcessOperator::start(&harness, ns.name()).await?;
    apply_shop(
        &ns,
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: gateway}\nspec: {component: gateway}\n",
    )
    .await?;
    wait_ready(&ns, "gateway").await?;

    let services = ns.api::<Service>();
    let deleted_uid = services
        .get("gateway")
        .await
        .map_err(kube_error("get the Service"))?
        .uid();
    services
        .delete("gateway", &DeleteParams::default())
        .await
        .map_err(kube_error("delete the Service"))?;
    let deployments = ns.api::<Deployment>();
    let replicas = |d: &Deployment| d.spec.as_ref().and_then(|spec| spec.replicas);
    let desired = replicas(
        &deployments
            .get("gateway")
            .await
            .map_err(kube_error("get the Deployment"))?,
    );
    let by_hand = desired.unwrap_or(1) + 2;
    deployments
        .patch(
            "gateway",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": by_hand}})),
        )
        .await
        .map_err(kube_error("scale the Deployment by hand"))?;

    wait_for(
        &services,
        "gateway",
        "the deleted Service made again",
        TIMEOUT,
        |s: Option<&Service>| s.is_some_and(|s| s.uid() != deleted_uid),
    )
    .await?;
    wait_for(
        &deployments,
        "gateway",
        "the replica count set by hand put back",
        TIMEOUT,
        |d: Option<&Deployment>| d.is_some_and(|d| replicas(d) == desired),
    )
    .await?;
    eprintln!("put back after {:?}", started.elapsed());

    delete_shop_services(&ns).await?;
    operator.stop().await;
    ns.cleanup().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_keeps_retained_data_and_removes_the_rest() -> Result<()> {
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let started = Instant::now();
    let ns = harness.namespace("op-delete").await?;
    let operator = InProcessOperator::start(&harness, ns.name()).await?;
    let shops = apply_shop(
        &ns,
        "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: kept}\nspec: {component: payment, database: {mode: Dedicated, deletionPolicy: Retain}}\n---\napiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {name: gone}\nspec: {component: notification, database: {mode: Dedicated, deletionPolicy: Delete}}\n",
    )
    .await?;
    provide_volumes(&harness, ns.name(), &shops).await?;
    wait_ready(&ns, "kept").await?;
    wait_ready(&ns, "gone").await?;
    // The services' key for internal calls: the namespace's, owned by none of them.
    let key = ns
        .api::<Secret>()
        .get("shop-service-key")
        .await
        .map_err(kube_error("get the service key"))?;
    assert!(key.owner_references().is_empty());
    assert!(key.data.is_some_and(|data| data.contains_key("key")));

    delete_shop_services(&ns).await?;
    // Gone with the namespace's last ShopService.
    wait_for_deletion(&ns.api::<Secret>(), "shop-service-key", TIMEOUT).await?;

    // Delete: nothing of it is left.
    wait_for_none(&ns.api::<Secret>(), &instance("gone"), TIMEOUT).await?;
    wait_for_none(
        &ns.api::<PersistentVolumeClaim>(),
        &instance("gone"),
        TIMEOUT,
    )
    .await?;
    wait_for_none(&ns.api::<StatefulSet>(), &instance("gone"), TIMEOUT).await?;
    wait_for_none(&ns.api::<Deployment>(), &instance("gone"), TIMEOUT).await?;

    // Retain: the workload goes, the credentials and the volume stay, owned by nobody.
    wait_for_none(&ns.api::<Deployment>(), &instance("kept"), TIMEOUT).await?;
    wait_for_none(&ns.api::<StatefulSet>(), &instance("kept"), TIMEOUT).await?;
    let secret = ns
        .api::<Secret>()
        .get("kept-db-credentials")
        .await
        .map_err(kube_error("get"))?;
    assert!(
        secret.owner_references().is_empty(),
        "a retained Secret has no owner"
    );
    let claim = ns
        .api::<PersistentVolumeClaim>()
        .get("data-kept-db-0")
        .await
        .map_err(kube_error("get"))?;
    assert!(
        claim.metadata.deletion_timestamp.is_none(),
        "the retained claim is not being deleted"
    );
    eprintln!("the deletion check took {:?}", started.elapsed());

    operator.stop().await;
    delete_volumes(&harness, ns.name()).await?;
    ns.cleanup().await
}

/// The reasons of the Events about the ShopService `name`.
fn condition_of<'a>(shop: &'a ShopService, type_: &str) -> Option<&'a Condition> {
    shop.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

fn requested_storage(claim: &PersistentVolumeClaim) -> Option<&str> {
    let requests = claim.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    Some(requests.get("storage")?.0.as_str())
}

/// The local cluster has no storage provider, so the test makes the volumes (one per claim,
/// of `class`, bound in advance) and plays the provider's resizer: it grows the volume and
/// reports the new capacity in the claim's status, as a CSI resizer and the kubelet would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growing_storage_grows_the_claim_or_says_why_it_cannot() -> Result<()> {
    use k8s_openapi::api::core::v1::PersistentVolume;
    use k8s_openapi::api::storage::v1::StorageClass;
    let Some(harness) = Harness::connect_or_skip().await else {
        return Ok(());
    };
    let ns = harness.namespace("op-storage").await?;
    let namespace = ns.name().to_owned();
    let expandable = format!("{namespace}-expandable");
    let fixed = format!("{namespace}-fixed");
    let classes = harness.api::<StorageClass>();
    let volumes = harness.api::<PersistentVolume>();
    for (class, expands) in [(&expandable, true), (&fixed, false)] {
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": class, "labels": {"shop-e2e/namespace": namespace}},
            "provisioner": "kubernetes.io/no-provisioner",
            "allowVolumeExpansion": expands,
            "volumeBindingMode": "Immediate",
        }))
        .expect("a StorageClass");
        classes
            .create(&Default::default(), &class)
            .await
            .map_err(kube_error("create a StorageClass"))?;
    }
    for (shop, class) in [("grows", &expandable), ("stuck", &fixed)] {
        let claim = format!("data-{shop}-db-0");
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": format!("{namespace}-{claim}"), "labels": {"shop-e2e/namespace": namespace}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": class,
                "hostPath": {"path": format!("/tmp/shop-e2e/{namespace}/{claim}")},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        }))
        .expect("a PersistentVolume");
        volumes
            .create(&Default::default(), &volume)
            .await
            .map_err(kube_error("create a PersistentVolume"))?;
    }
    let operator = InProcessOperator::start(&harness, ns.name()).await?;
    apply_shop(
        &ns,
        &format!(
            "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {{name: grows}}\nspec: {{component: payment, database: {{mode: Dedicated, storage: 1Gi, storageClassName: {expandable}}}}}\n---\napiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {{name: stuck}}\nspec: {{component: notification, database: {{mode: Dedicated, storage: 1Gi, storageClassName: {fixed}}}}}\n"
        ),
    )
    .await?;
    let shops = ns.api::<ShopService>();
    let capacity = |shop: &ShopService| {
        shop.status
            .as_ref()
            .and_then(|s| s.database.as_ref())
            .and_then(|d| d.capacity.clone())
    };
    for name in ["grows", "stuck"] {
        let ready = wait_ready(&ns, name).await?;
        let ready = if capacity(&ready).is_some() {
            ready
        } else {
            wait_for(
                &shops,
                name,
                "capacity shown",
                TIMEOUT,
                |shop: Option<&ShopService>| shop.is_some_and(|shop| capacity(shop).is_some()),
            )
            .await?
        };
        assert_eq!(capacity(&ready).as_deref(), Some("1Gi"), "{name}");
    }

    for name in ["grows", "stuck"] {
        patch_spec(&ns, name, json!({"database": {"storage": "2Gi"}})).await?;
    }

    // Growable: the claim asks for 2Gi, the StatefulSet's template too (created again), and
    // the status says the volume grows while the database stays Ready.
    let claims = ns.api::<PersistentVolumeClaim>();
    let claim_before = claims
        .get("data-grows-db-0")
        .await
        .map_err(kube_error("get the claim"))?;
    let claim = wait_for(
        &claims,
        "data-grows-db-0",
        "asking for 2Gi",
        TIMEOUT,
        |claim: Option<&PersistentVolumeClaim>| claim.and_then(requested_storage) == Some("2Gi"),
    )
    .await?;
    assert_eq!(
        claim.uid(),
        claim_before.uid(),
        "the same claim, and so the same data"
    );
    let resizing = wait_for(
        &shops,
        "grows",
        "DatabaseReady for the reason Resizing",
        TIMEOUT,
        |shop: Option<&ShopService>| {
            shop.and_then(|shop| condition_of(shop, "DatabaseReady"))
                .is_some_and(|c| c.reason == "Resizing")
        },
    )
    .await?;
    let database_ready = condition_of(&resizing, "DatabaseReady").unwrap();
    assert_eq!(database_ready.status, "True", "volumes grow online");
    assert!(
        database_ready.message.contains("grows from 1Gi to 2Gi"),
        "{}",
        database_ready.message
    );
    assert!(condition_is(&resizing, "Ready", "True"));
    let stateful_set = wait_for(
        &ns.api::<StatefulSet>(),
        "grows-db",
        "a claim template of 2Gi",
        TIMEOUT,
        |stateful_set: Option<&StatefulSet>| {
            stateful_set
                .and_then(|s| s.spec.as_ref())
                .and_then(|spec| spec.volume_claim_templates.as_ref())
                .and_then(|templates| templates.first())
                .and_then(requested_storage)
                == Some("2Gi")
        },
    )
    .await?;
    assert!(stateful_set.metadata.deletion_timestamp.is_none());
    shop_e2e::wait_for_event(&ns, "grows", "ResizingStorage").await?;

    // The provider grows the volume; the operator notices on its own (the claim is not
    // watched: it looks again every few seconds while a volume grows).
    volumes
        .patch(
            &format!("{namespace}-data-grows-db-0"),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"capacity": {"storage": "2Gi"}}})),
        )
        .await
        .map_err(kube_error("grow the volume"))?;
    claims
        .patch_status(
            "data-grows-db-0",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"capacity": {"storage": "2Gi"}}})),
        )
        .await
        .map_err(kube_error("report the claim's new capacity"))?;
    let grown = wait_for(
        &shops,
        "grows",
        "a capacity of 2Gi",
        TIMEOUT,
        |shop: Option<&ShopService>| {
            shop.is_some_and(|shop| capacity(shop).as_deref() == Some("2Gi"))
        },
    )
    .await?;
    assert_eq!(
        condition_of(&grown, "DatabaseReady").unwrap().reason,
        "Ready"
    );
    shop_e2e::wait_for_event(&ns, "grows", "StorageResized").await?;

    // Not growable: Degraded names the class and what to change; nothing else moves.
    let degraded = wait_for(
        &shops,
        "stuck",
        "Degraded for the reason StorageNotExpandable",
        TIMEOUT,
        |shop: Option<&ShopService>| {
            shop.and_then(|shop| condition_of(shop, "Degraded"))
                .is_some_and(|c| c.status == "True" && c.reason == "StorageNotExpandable")
        },
    )
    .await?;
    let message = &condition_of(&degraded, "Degraded").unwrap().message;
    assert!(
        message.contains(&format!(
            "StorageClass {fixed} does not set allowVolumeExpansion: true"
        )),
        "{message}"
    );
    assert!(
        condition_is(&degraded, "Ready", "True"),
        "the database keeps working"
    );
    assert_eq!(capacity(&degraded).as_deref(), Some("1Gi"));
    let stuck_claim = claims
        .get("data-stuck-db-0")
        .await
        .map_err(kube_error("get the claim"))?;
    assert_eq!(requested_storage(&stuck_claim), Some("1Gi"));
    shop_e2e::wait_for_event(&ns, "stuck", "StorageNotExpandable").await?;

    delete_shop_services(&ns).await?;
    operator.stop().await;
    delete_volumes(&harness, ns.name()).await?;
    ns.cleanup().await
}
