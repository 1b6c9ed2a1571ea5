//! ShopServices as the API server would hand them to the builders, for the tests.

use std::sync::Arc;

use kube::api::ObjectMeta;

use super::Context;
use crate::crd::{Component, ShopService, ShopServiceSpec};

pub const IMAGE: &str = "ghcr.io/shop-dev/shop:1.0.0";

pub fn namespace() -> &'static str {
    "shop"
}

/// A stored ShopService with every field at its default, as the API server fills them in.
pub fn shop(name: &str, component: Option<Component>) -> ShopService {
    let mut spec = serde_json::json!({});
    if let Some(component) = component {
        spec["component"] = component.as_str().into();
    }
    ShopService {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace().into()),
            uid: Some(format!("uid-of-{name}")),
            ..Default::default()
        },
        spec: serde_json::from_value::<ShopServiceSpec>(spec).unwrap(),
        status: None,
    }
}

/// A stored ShopService routed through the gateway under `prefix`.
pub fn routed(name: &str, component: Component, prefix: &str) -> ShopService {
    let mut shop = shop(name, Some(component));
    shop.spec.route = Some(crate::crd::Route {
        path_prefix: prefix.into(),
        additional_path_prefixes: Vec::new(),
    });
    shop
}

/// A context with `services` as the namespace. They are shared as the operator's cache shares
/// them, in a slice left to live as long as the test process (a few ShopServices per test).
pub fn context<'a>(services: &[ShopService], password: Option<&'a str>) -> Context<'a> {
    let shared: Vec<Arc<ShopService>> = services.iter().cloned().map(Arc::new).collect();
    Context {
        default_image: IMAGE,
        postgres_image: super::database::DEFAULT_POSTGRES_IMAGE,
        namespace_services: Vec::leak(shared),
        database_password: password,
    }
}
