//! The gateway's route table: the ConfigMap `<gateway>-routes`, key `routes.json`.
//!
//! It lists every routed ShopService of the namespace in the format the gateway parses
//! (`services/gateway/src/domain.rs`):
//! `{"routes":[{"prefix":"/api/cart","service":"cart","upstream":"http://cart.<ns>.svc:8080"}]}`.
//! The gateway re-reads the mounted file when it changes, so routing follows the
//! ShopServices without a restart.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;

use super::common::{Role, names};
use super::{Context, Owner};
use crate::crd::Component;

/// The key of the route table in its ConfigMap, and the file name the gateway reads.
pub const ROUTE_TABLE_KEY: &str = "routes.json";

/// One entry of the table: requests under `prefix` go to `upstream`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub prefix: String,
    /// The ShopService's name, which the gateway uses in logs, metrics and readiness.
    pub service: String,
    pub upstream: String,
}

/// A prefix that more than one ShopService asks for. The first by name gets it, so the
/// table does not depend on the order the API server lists them in; the others are left out
/// (for the status to report).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrefixConflict {
    pub prefix: String,
    pub routed_to: String,
    pub refused: Vec<String>,
}

/// The routes of a namespace, and the prefixes claimed twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// Sorted by prefix.
    pub routes: Vec<Route>,
    pub conflicts: Vec<PrefixConflict>,
}

/// The route table of the namespace the context describes.
pub fn routes(context: &Context, namespace: &str) -> Routes {
    let mut services: Vec<_> = context
        .routed_services()
        .filter_map(|shop| {
            let name = shop.metadata.name.as_deref()?;
            Some((name, shop.spec.route.as_ref()?, shop.spec.port))
        })
        .collect();
    services.sort_by_key(|(name, _, _)| *name);

    // prefix → (the route it gets, the services refused it)
    let mut claims: BTreeMap<String, (Route, Vec<String>)> = BTreeMap::new();
    for (name, route, port) in services {
        for prefix in route.prefixes() {
            let claim = claims
                .entry(normalize(prefix))
                .or_insert_with_key(|prefix| {
                    let route = Route {
                        prefix: prefix.clone(),
                        service: name.into(),
                        upstream: names::service_url(name, namespace, port),
                    };
                    (route, Vec::new())
                });
            if claim.0.service != name && !claim.1.iter().any(|refused| refused == name) {
                claim.1.push(name.into());
            }
        }
    }

    let mut routes = Routes::default();
    for (prefix, (route, refused)) in claims {
        if !refused.is_empty() {
            routes.conflicts.push(PrefixConflict {
                prefix,
                routed_to: route.service.clone(),
                refused,
            });
        }
        routes.routes.push(route);
    }
    routes
}

/// The ConfigMap with the route table, for a gateway; `None` for any other ShopService.
pub fn route_table(owner: &Owner, context: &Context) -> Option<ConfigMap> {
    if owner.spec().component != Some(Component::Gateway) {
        return None;
    }
    #[derive(Serialize)]
    struct Table<'a> {
        routes: &'a [Route],
    }
    let routes = routes(context, owner.namespace);
    let json = serde_json::to_string_pretty(&Table {
        routes: &routes.routes,
    })
    .expect("a route table serializes");
    Some(ConfigMap {
        metadata: owner.metadata(names::route_table(owner.name), Role::RouteTable),
        data: Some([(ROUTE_TABLE_KEY.to_owned(), json)].into()),
        ..Default::default()
    })
}

/// The gateway's own reading of a prefix: without a trailing `/` (except `/` itself), so
/// that `/api/cart/` and `/api/cart` are seen as the same prefix.
fn normalize(prefix: &str) -> String {
    match prefix.trim_end_matches('/') {
        "" => "/".into(),
        trimmed => trimmed.into(),
    }
}

#[cfg(test)]
mod tests {
    use shop_gateway::domain::RouteTable;

    use super::*;
    use crate::build::fixtures::{context, routed, shop};
    use crate::crd::ShopService;

    fn table_json(gateway: &ShopService, services: &[ShopService]) -> String {
        let config_map =
            route_table(&Owner::new(gateway).unwrap(), &context(services, None)).unwrap();
        config_map.data.unwrap()[ROUTE_TABLE_KEY].clone()
    }

    fn the_shop() -> Vec<ShopService> {
        let mut user = routed("user", Component::User, "/api/users");
        user.spec.route.as_mut().unwrap().additional_path_prefixes = vec!["/api/auth".into()];
        user.spec.port = 8081;
        vec![
            shop("gateway", Some(Component::Gateway)),
            user,
            routed("cart", Component::Cart, "/api/cart"),
            shop("payment", Some(Component::Payment)),
        ]
    }

    #[test]
    fn the_gateway_parses_the_table_and_routes_by_it() {
        let services = the_shop();
        let json = table_json(&services[0], &services);
        let table = RouteTable::parse(&json).unwrap();
        assert_eq!(table.routes.len(), 3, "{json}");
        let route = |path: &str| {
            table
                .find(path)
                .map(|r| (r.service.as_str(), r.upstream.as_str()))
        };
        assert_eq!(
            route("/api/cart/items/1"),
            Some(("cart", "http://cart.shop.svc:8080"))
        );
        assert_eq!(
            route("/api/auth/login"),
            Some(("user", "http://user.shop.svc:8081"))
        );
        assert_eq!(
            route("/api/users/me"),
            Some(("user", "http://user.shop.svc:8081"))
        );
        assert_eq!(route("/api/payments"), None, "payment is not routed");
    }

    #[test]
    fn the_table_has_the_documented_shape_and_a_stable_order() {
        let services = the_shop();
        let json = table_json(&services[0], &services);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            value["routes"][0],
            serde_json::json!({"prefix": "/api/auth", "service": "user", "upstream": "http://user.shop.svc:8081"})
        );
        let mut reversed = services.clone();
        reversed.reverse();
        assert_eq!(table_json(&services[0], &reversed), json);
    }

    #[test]
    fn an_empty_namespace_gives_an_empty_table_the_gateway_accepts() {
        let gateway = shop("gateway", Some(Component::Gateway));
        let json = table_json(&gateway, std::slice::from_ref(&gateway));
        assert!(RouteTable::parse(&json).unwrap().routes.is_empty());
    }

    #[test]
    fn services_being_deleted_are_not_routed() {
        let mut services = the_shop();
        services[2].metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        let routes = routes(&context(&services, None), "shop");
        assert!(routes.routes.iter().all(|r| r.service != "cart"));
    }

    #[test]
    fn a_prefix_claimed_twice_goes_to_the_first_by_name_and_is_reported() {
        let services = [
            routed("cart-v2", Component::Cart, "/api/cart/"),
            routed("cart", Component::Cart, "/api/cart"),
        ];
        let routes = routes(&context(&services, None), "shop");
        assert_eq!(routes.routes.len(), 1);
        assert_eq!(routes.routes[0].service, "cart");
        assert_eq!(
            routes.conflicts,
            [PrefixConflict {
                prefix: "/api/cart".into(),
                routed_to: "cart".into(),
                refused: vec!["cart-v2".into()],
            }]
        );
    }

    /// The web shop: the storefront under `/`, the catalog's pictures under `/images`. Only
    /// the longest match decides, so `/` catches what no other prefix claims.
    #[test]
    fn the_storefront_takes_every_path_no_other_route_claims() {
        let mut catalog = routed("catalog", Component::Catalog, "/api/products");
        catalog
            .spec
            .route
            .as_mut()
            .unwrap()
            .additional_path_prefixes = vec!["/api/categories".into(), "/images".into()];
        let mut storefront = routed("storefront", Component::Storefront, "/");
        storefront.spec.depends_on = vec!["gateway".into()];
        let services = [
            shop("gateway", Some(Component::Gateway)),
            catalog,
            storefront,
        ];
        let json = table_json(&services[0], &services);
        let table = RouteTable::parse(&json).unwrap();
        let service = |path: &str| table.find(path).map(|r| r.service.as_str());
        assert_eq!(service("/"), Some("storefront"), "{json}");
        assert_eq!(service("/product/0193"), Some("storefront"));
        assert_eq!(service("/static/shop.css"), Some("storefront"));
        assert_eq!(service("/images/kitchen/mug.svg"), Some("catalog"));
        assert_eq!(
            service("/imagesque"),
            Some("storefront"),
            "segment boundaries"
        );
        assert_eq!(service("/api/products"), Some("catalog"));
        assert_eq!(
            service("/api/cart"),
            None,
            "an API path no route names is the gateway's 404, never a page"
        );
    }

    #[test]
    fn only_a_gateway_has_a_route_table() {
        let cart = routed("cart", Component::Cart, "/api/cart");
        let owner = Owner::new(&cart).unwrap();
        assert_eq!(
            route_table(&owner, &context(std::slice::from_ref(&cart), None)),
            None
        );
    }
}
