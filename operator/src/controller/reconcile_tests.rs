//! Reconciles against a mocked API server: each request the reconcile makes arrives here in
//! order, is checked (method, path, what matters of its body) and answered as the API server
//! would. The cluster tests (`tests/e2e`) run the same paths against a real one; these need
//! nothing but the process and say exactly which calls a reconcile makes.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

use super::cache::ChildCache;
use super::metrics::Metrics;
use super::{Context, FINALIZER, apply, reconcile};
use crate::build::fixtures::{IMAGE, namespace, shop};
use crate::crd::{Component, DatabaseMode, DeletionPolicy, ShopService};

const SHOP_SERVICES: &str = "/apis/shop.dev/v1alpha1/namespaces/shop/shopservices";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";
const SELECTOR: &str =
    "app.kubernetes.io%2Finstance%3Dcart%2Capp.kubernetes.io%2Fmanaged-by%3Dshop-operator";

/// The API server's side of the mocked connection.
struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// One request, to be answered.
struct Exchange {
    query: String,
    content_type: String,
    body: Value,
    reply: SendResponse<Response<Body>>,
}

impl Exchange {
    /// Whether the query holds every `key=value` of `expected`, in any order.
    fn query_has(&self, expected: &[&str]) -> bool {
        let pairs: Vec<&str> = self.query.split('&').collect();
        expected.iter().all(|pair| pairs.contains(pair))
    }

    /// A server-side apply as the operator's field manager, taking over conflicting fields.
    fn assert_applied_by_the_operator(&self) {
        assert!(
            self.query_has(&["fieldManager=shop-operator", "force=true"]),
            "{}",
            self.query
        );
        assert_eq!(self.content_type, "application/apply-patch+yaml");
    }

    fn answer(self, status: StatusCode, body: &Value) {
        let response = Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).unwrap()))
            .unwrap();
        self.reply.send_response(response);
    }

    /// Answers with the object sent, as an apply or a create returns it.
    fn echo(self) {
        let body = self.body.clone();
        self.answer(StatusCode::OK, &body);
    }

    /// Checks a server-side apply as the operator's field manager and echoes it.
    fn applied(self) -> Value {
        self.assert_applied_by_the_operator();
        let body = self.body.clone();
        self.echo();
        body
    }
}

impl ApiServer {
    /// The next request, which must be `method` on `path`.
    async fn expect(&mut self, method: Method, path: &str) -> Exchange {
        let (request, reply) = tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
            .unwrap_or_else(|| panic!("the client is gone; expected {method} {path}"));
        let what = format!("{} {}", request.method(), request.uri());
        assert_eq!(request.method(), method, "{what}");
        assert_eq!(request.uri().path(), path, "{what}");
        let query = request.uri().query().unwrap_or_default().to_owned();
        let content_type = request
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Exchange {
            query,
            content_type,
            body,
            reply,
        }
    }

    /// The next request must be a server-side apply of `path`; returns what was applied.
    async fn apply(&mut self, path: &str) -> Value {
        self.expect(Method::PATCH, path).await.applied()
    }

    /// An Event is published about the ShopService; returns its reason and note.
    async fn event(&mut self) -> (String, String) {
        let exchange = self.expect(Method::POST, EVENTS).await;
        let reason = exchange.body["reason"].as_str().unwrap().to_owned();
        let note = exchange.body["note"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(exchange.body["regarding"]["name"], "cart");
        exchange.echo();
        (reason, note)
    }

    /// The namespace's service key Secret is created (the mocked watches never show it);
    /// answered as created when `created`, else as already there. Returns what was sent.
    async fn service_key(&mut self, created: bool) -> Value {
        let exchange = self
            .expect(Method::POST, "/api/v1/namespaces/shop/secrets")
            .await;
        assert!(exchange.query_has(&["fieldManager=shop-operator"]));
        let body = exchange.body.clone();
        if created {
            exchange.echo();
        } else {
            exchange.answer(
                StatusCode::CONFLICT,
                &refusal(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    "secrets \"shop-service-key\" already exists",
                ),
            );
        }
        body
    }

    /// A list of the ShopServices of the namespace, answered with `shops`.
    async fn list_shop_services(&mut self, shops: &[&ShopService]) {
        self.expect(Method::GET, SHOP_SERVICES).await.answer(
            StatusCode::OK,
            &json!({
                "apiVersion": "shop.dev/v1alpha1",
                "kind": "ShopServiceList",
                "metadata": {},
                "items": shops,
            }),
        );
    }

    /// The prune's metadata list of one kind for `cart`, answered with `items`.
    async fn list_for_prune(&mut self, path: &str, items: Vec<Value>) {
        let exchange = self.expect(Method::GET, path).await;
        assert!(
            exchange
                .query
                .contains(&format!("labelSelector={SELECTOR}")),
            "{}",
            exchange.query
        );
        exchange.answer(
            StatusCode::OK,
            &json!({
                "apiVersion": "meta.k8s.io/v1",
                "kind": "PartialObjectMetadataList",
                "metadata": {},
                "items": items,
            }),
        );
    }

    /// The prune finds nothing of the three kinds that may come and go.
    async fn prune_finds_nothing(&mut self) {
        self.list_for_prune("/api/v1/namespaces/shop/configmaps", Vec::new())
            .await;
        self.list_for_prune(
            "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers",
            Vec::new(),
        )
        .await;
        self.list_for_prune(
            "/apis/policy/v1/namespaces/shop/poddisruptionbudgets",
            Vec::new(),
        )
        .await;
    }

    /// The status is written; returns it.
    async fn status(&mut self) -> Value {
        let exchange = self
            .expect(Method::PATCH, &format!("{SHOP_SERVICES}/cart/status"))
            .await;
        exchange.assert_applied_by_the_operator();
        let status = exchange.body["status"].clone();
        let mut stored = serde_json::to_value(cart()).unwrap();
        stored["status"] = status.clone();
        exchange.answer(StatusCode::OK, &stored);
        status
    }
}

/// The API server's answer to a refused request.
fn refusal(code: StatusCode, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "code": code.as_u16(), "message": message})
}

fn not_found() -> Value {
    refusal(StatusCode::NOT_FOUND, "NotFound", "not found")
}

/// A stored ShopService `cart` that already carries the finalizer, so reconciles go straight
/// to apply (or cleanup).
fn cart() -> ShopService {
    let mut cart = shop("cart", Some(Component::Cart));
    cart.metadata.generation = Some(1);
    cart.metadata.finalizers = Some(vec![FINALIZER.into()]);
    cart
}

/// Runs one reconcile of `shop` while `script` plays the API server; then checks that the
/// reconcile made no request beyond those the script expected.
async fn reconcile_against<F>(
    shop: ShopService,
    script: impl FnOnce(ApiServer) -> F,
) -> Result<Action, super::Error>
where
    F: Future<Output = ApiServer>,
{
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, namespace());
    let context = Arc::new(Context::new(
        client,
        IMAGE.into(),
        crate::build::database::DEFAULT_POSTGRES_IMAGE.into(),
        Duration::from_secs(300),
        Arc::new(Metrics::default()),
        // Never synced: every child is applied and the prune lists, as the script expects.
        Arc::new(ChildCache::new(Vec::new())),
    ));
    let reconciling = tokio::spawn(reconcile(Arc::new(shop), context));
    let mut server = script(ApiServer(handle)).await;
    let result = tokio::time::timeout(Duration::from_secs(5), reconciling)
        .await
        .expect("the reconcile ends")
        .expect("the reconcile does not panic");
    // The context, and with it every client, is gone with the reconcile: a request still
    // waiting would be one the script did not expect.
    if let Some((request, _)) = server.0.next_request().await {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
    result
}

/// The API server's side of the first reconcile of `cart()` once it has the finalizer: its
/// children applied in order (its Deployment answered as available), nothing to prune, its
/// status written Ready, and the Events.
async fn first_apply_of_cart(mut server: ApiServer) -> ApiServer {
    server.list_shop_services(&[&cart()]).await;
    let key = server.service_key(true).await;
    assert_eq!(key["metadata"]["name"], "shop-service-key");
    assert!(
        key["metadata"].get("ownerReferences").is_none(),
        "the namespace's, not one ShopService's"
    );
    let encoded: k8s_openapi::ByteString =
        serde_json::from_value(key["data"]["key"].clone()).unwrap();
    let encoded = String::from_utf8(encoded.0).unwrap();
    assert!(
        shop_kit::ServiceKey::decode(&encoded).is_ok(),
        "a key the services accept"
    );
    let account = server
        .apply("/api/v1/namespaces/shop/serviceaccounts/cart")
        .await;
    assert_eq!(account["kind"], "ServiceAccount");
    assert_eq!(account["automountServiceAccountToken"], false);
    server.apply("/api/v1/namespaces/shop/services/cart").await;
    server
        .apply("/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/cart")
        .await;
    // Answered as a Deployment whose one pod is available.
    let exchange = server
        .expect(
            Method::PATCH,
            "/apis/apps/v1/namespaces/shop/deployments/cart",
        )
        .await;
    exchange.assert_applied_by_the_operator();
    let mut deployment = exchange.body.clone();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        IMAGE
    );
    assert_eq!(
        deployment["metadata"]["ownerReferences"][0]["uid"],
        "uid-of-cart"
    );
    deployment["metadata"]["generation"] = json!(1);
    deployment["status"] = json!({"observedGeneration": 1, "replicas": 1,
            "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1});
    exchange.answer(StatusCode::OK, &deployment);

    server.prune_finds_nothing().await;
    let status = server.status().await;
    assert_eq!(status["observedGeneration"], 1);
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True", "{status}");
    let (reason, _) = server.event().await;
    assert_eq!(reason, "GeneratedServiceKey");
    let (reason, _) = server.event().await;
    assert_eq!(reason, "Ready");
    server
}

#[tokio::test]
async fn a_new_shop_service_gets_the_finalizer_then_its_children_in_the_same_reconcile() {
    let mut new = cart();
    new.metadata.finalizers = None;
    new.metadata.resource_version = Some("41".into());
    let result = reconcile_against(new, |mut server| async move {
        let exchange = server
            .expect(Method::PATCH, &format!("{SHOP_SERVICES}/cart"))
            .await;
        assert_eq!(exchange.content_type, "application/merge-patch+json");
        assert_eq!(
            exchange.body,
            json!({"metadata": {"resourceVersion": "41", "finalizers": [FINALIZER]}}),
            "guarded by the version it was read at"
        );
        exchange.answer(StatusCode::OK, &serde_json::to_value(cart()).unwrap());
        first_apply_of_cart(server).await
    })
    .await;
    assert_eq!(
        result.unwrap(),
        Action::requeue(apply::resync_after(&cart()))
    );
}

#[tokio::test]
async fn a_stale_copy_without_the_finalizer_is_tried_again_soon() {
    let mut stale = cart();
    stale.metadata.finalizers = None;
    stale.metadata.resource_version = Some("41".into());
    let result = reconcile_against(stale, |mut server| async move {
        let exchange = server
            .expect(Method::PATCH, &format!("{SHOP_SERVICES}/cart"))
            .await;
        let conflict = refusal(
            StatusCode::CONFLICT,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version",
        );
        exchange.answer(StatusCode::CONFLICT, &conflict);
        server
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_millis(500)));
}

#[tokio::test]
async fn a_shop_service_gets_its_children_applied_in_order_then_its_status() {
    let result = reconcile_against(
        cart(),
        |server| async move { first_apply_of_cart(server).await },
    )
    .await;
    assert_eq!(
        result.unwrap(),
        Action::requeue(apply::resync_after(&cart()))
    );
}

#[tokio::test]
async fn a_dedicated_database_gets_a_generated_password_and_its_objects_first() {
    let mut cart = cart();
    cart.spec.database.mode = DatabaseMode::Dedicated;
    let stored = cart.clone();
    let result = reconcile_against(cart, |mut server| async move {
        server.list_shop_services(&[&stored]).await;
        server
            .expect(
                Method::GET,
                "/api/v1/namespaces/shop/secrets/cart-db-credentials",
            )
            .await
            .answer(StatusCode::NOT_FOUND, &not_found());
        server.service_key(false).await;
        server
            .apply("/api/v1/namespaces/shop/serviceaccounts/cart")
            .await;
        let secret = server
            .apply("/api/v1/namespaces/shop/secrets/cart-db-credentials")
            .await;
        let password: k8s_openapi::ByteString =
            serde_json::from_value(secret["data"]["password"].clone()).unwrap();
        let password = String::from_utf8(password.0).unwrap();
        assert_eq!(password.len(), 32, "a generated password is 32 characters");
        server
            .apply("/api/v1/namespaces/shop/services/cart-db")
            .await;
        server
            .apply("/api/v1/namespaces/shop/services/cart-db-headless")
            .await;
        server
            .apply("/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/cart-db")
            .await;
        server.apply("/api/v1/namespaces/shop/services/cart").await;
        server
            .apply("/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/cart")
            .await;
        // The workloads after everything their pods need.
        server
            .apply("/apis/apps/v1/namespaces/shop/statefulsets/cart-db")
            .await;
        server
            .apply("/apis/apps/v1/namespaces/shop/deployments/cart")
            .await;
        server.prune_finds_nothing().await;
        // The claim is not read: the StatefulSet's controller has not seen it yet (the apply
        // answered without a status), so it has made none.
        let status = server.status().await;
        assert_eq!(status["database"]["secretName"], "cart-db-credentials");
        let (reason, note) = server.event().await;
        assert_eq!(reason, "GeneratedCredentials");
        assert!(
            !note.contains(&password),
            "the Event names no password: {note}"
        );
        server
    })
    .await;
    result.unwrap();
}

#[tokio::test]
async fn children_no_longer_wanted_are_pruned_and_others_left_alone() {
    let controlled = |name: &str, uid: &str| {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
               "metadata": {"name": name, "namespace": "shop",
                            "ownerReferences": [{"apiVersion": "shop.dev/v1alpha1",
                                "kind": "ShopService", "name": "cart", "uid": uid,
                                "controller": true}]}})
    };
    let result = reconcile_against(cart(), |mut server| async move {
        server.list_shop_services(&[&cart()]).await;
        server.service_key(false).await;
        for path in [
            "/api/v1/namespaces/shop/serviceaccounts/cart",
            "/api/v1/namespaces/shop/services/cart",
            "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/cart",
            "/apis/apps/v1/namespaces/shop/deployments/cart",
        ] {
            server.apply(path).await;
        }
        server
            .list_for_prune("/api/v1/namespaces/shop/configmaps", Vec::new())
            .await;
        // Autoscaling was switched off: the HPA goes. One of another owner stays.
        server
            .list_for_prune(
                "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers",
                vec![
                    controlled("cart", "uid-of-cart"),
                    controlled("cart-old", "uid-of-another-cart"),
                ],
            )
            .await;
        server
            .expect(
                Method::DELETE,
                "/apis/autoscaling/v2/namespaces/shop/horizontalpodautoscalers/cart",
            )
            .await
            .answer(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success"}),
            );
        server
            .list_for_prune(
                "/apis/policy/v1/namespaces/shop/poddisruptionbudgets",
                Vec::new(),
            )
            .await;
        server.status().await;
        let (reason, note) = server.event().await;
        assert_eq!(reason, "Pruned");
        assert_eq!(
            note,
            "deleted HorizontalPodAutoscaler cart: autoscaling is off"
        );
        server
    })
    .await;
    result.unwrap();
}

#[tokio::test]
async fn a_paused_shop_service_only_says_so_in_its_status() {
    let mut paused = cart();
    paused.spec.paused = true;
    let result = reconcile_against(paused, |mut server| async move {
        let status = server.status().await;
        let progressing = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Progressing")
            .unwrap();
        assert_eq!(progressing["reason"], "Paused");
        server
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn deleting_with_policy_delete_removes_the_secret_and_volumes_then_the_finalizer() {
    let mut deleted = cart();
    deleted.spec.database.mode = DatabaseMode::Dedicated;
    deleted.spec.database.deletion_policy = DeletionPolicy::Delete;
    deleted.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    let stored = deleted.clone();
    let result = reconcile_against(deleted, |mut server| async move {
        server
            .expect(
                Method::DELETE,
                "/api/v1/namespaces/shop/secrets/cart-db-credentials",
            )
            .await
            .answer(StatusCode::NOT_FOUND, &not_found());
        let claims = server
            .expect(
                Method::DELETE,
                "/api/v1/namespaces/shop/persistentvolumeclaims",
            )
            .await;
        assert!(
            claims
                .query
                .contains("app.kubernetes.io%2Fcomponent%3Ddatabase"),
            "{}",
            claims.query
        );
        claims.answer(
            StatusCode::OK,
            &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {},
                    "items": []}),
        );
        // The namespace's last ShopService, and it is going: the service key goes too.
        server.list_shop_services(&[&stored]).await;
        server
            .expect(
                Method::DELETE,
                "/api/v1/namespaces/shop/secrets/shop-service-key",
            )
            .await
            .answer(StatusCode::NOT_FOUND, &not_found());
        let release = server
            .expect(Method::PATCH, &format!("{SHOP_SERVICES}/cart"))
            .await;
        assert_eq!(release.content_type, "application/json-patch+json");
        let removes_the_finalizer = release.body.as_array().is_some_and(|ops| {
            ops.iter()
                .any(|op| op["op"] == "remove" && op["path"] == "/metadata/finalizers/0")
        });
        assert!(removes_the_finalizer, "{}", release.body);
        let mut released = serde_json::to_value(&stored).unwrap();
        released["metadata"]["finalizers"] = json!([]);
        release.answer(StatusCode::OK, &released);
        let (reason, _) = server.event().await;
        assert_eq!(reason, "DeletedData");
        server
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
}

#[tokio::test]
async fn a_refused_apply_fails_the_reconcile_before_prune_and_status() {
    let result = reconcile_against(cart(), |mut server| async move {
        server.list_shop_services(&[&cart()]).await;
        server.service_key(false).await;
        server
            .expect(
                Method::PATCH,
                "/api/v1/namespaces/shop/serviceaccounts/cart",
            )
            .await
            .answer(
                StatusCode::FORBIDDEN,
                &refusal(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    "serviceaccounts \"cart\" is forbidden",
                ),
            );
        // Sent with it in the same wave, and abandoned: nothing after the wave is applied.
        drop(
            server
                .expect(Method::PATCH, "/api/v1/namespaces/shop/services/cart")
                .await,
        );
        drop(
            server
                .expect(
                    Method::PATCH,
                    "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/cart",
                )
                .await,
        );
        // The failure is in the status, and announced once as Degraded.
        let status = server.status().await;
        assert_eq!(status["observedGeneration"], 1);
        let conditions = status["conditions"].as_array().unwrap();
        for (type_, value) in [("Ready", "False"), ("Degraded", "True")] {
            let condition = conditions.iter().find(|c| c["type"] == type_).unwrap();
            assert_eq!(condition["status"], value, "{condition}");
            assert_eq!(condition["reason"], "Forbidden", "{condition}");
            let message = condition["message"].as_str().unwrap();
            assert!(
                message.contains("apply ServiceAccount cart") && message.contains("forbidden"),
                "{message}"
            );
        }
        let (reason, _) = server.event().await;
        assert_eq!(reason, "Forbidden");
        server
    })
    .await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("apply ServiceAccount cart"), "{error}");
}

#[tokio::test]
async fn a_credentials_secret_without_a_password_is_never_replaced() {
    let mut cart = cart();
    cart.spec.database.mode = DatabaseMode::Dedicated;
    let stored = cart.clone();
    let result = reconcile_against(cart, |mut server| async move {
        server.list_shop_services(&[&stored]).await;
        server
            .expect(
                Method::GET,
                "/api/v1/namespaces/shop/secrets/cart-db-credentials",
            )
            .await
            .answer(
                StatusCode::OK,
                &json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "cart-db-credentials", "namespace": "shop"},
                        "data": {"username": "Y2FydA=="}}),
            );
        let status = server.status().await;
        let ready = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()
            .clone();
        assert_eq!(ready["reason"], "CredentialsInvalid", "{ready}");
        server.event().await;
        server
    })
    .await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("has no valid key `password`"), "{error}");
}

#[test]
fn settled_shop_services_resync_apart_within_a_minute_of_the_period() {
    let after: Vec<Duration> = (0..200)
        .map(|i| {
            let mut shop = cart();
            shop.metadata.uid = Some(format!("6f1c2a4e-0000-4000-8000-{i:012}"));
            apply::resync_after(&shop)
        })
        .collect();
    let (earliest, latest) = (after.iter().min().unwrap(), after.iter().max().unwrap());
    assert!(*earliest >= Duration::from_secs(300), "{earliest:?}");
    assert!(*latest < Duration::from_secs(360), "{latest:?}");
    // Spread over the minute, not bunched: 200 ShopServices reach both ends of it.
    assert!(*earliest < Duration::from_secs(306), "{earliest:?}");
    assert!(*latest > Duration::from_secs(354), "{latest:?}");
    // The same ShopService always gets the same share.
    let mut shop = cart();
    shop.metadata.uid = Some("6f1c2a4e-0000-4000-8000-000000000007".into());
    assert_eq!(apply::resync_after(&shop), after[7]);
}
