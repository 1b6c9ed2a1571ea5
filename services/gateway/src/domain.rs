//! The route table: which path prefix goes to which service. Pure data and matching, no I/O.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Route {
    /// A path prefix on segment boundaries: `/api/cart` matches `/api/cart/items/x`, not `/api/cartoon`.
    pub prefix: String,
    /// The service's name, for logs, metrics and readiness.
    pub service: String,
    /// Base URL of the service, e.g. `http://cart.shop.svc:8080`.
    pub upstream: String,
}

/// The API's namespace: never sent to the `/` route.
const API_PREFIX: &str = "/api";

/// Whether `path` is `prefix` or below it, on segment boundaries.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// The whole table, as kept in `routes.json` (a file in `shop up`, a ConfigMap in Kubernetes).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteTable {
    pub routes: Vec<Route>,
}

impl RouteTable {
    /// Parses and checks a table; the error says which entry is wrong.
    pub fn parse(json: &str) -> Result<Self> {
        let mut table: Self = serde_json::from_str(json)
            .context("the route table is not valid JSON of the form {\"routes\": [...]}")?;
        for (i, route) in table.routes.iter().enumerate() {
            if !route.prefix.starts_with('/') {
                bail!("route {i}: prefix {:?} must start with /", route.prefix);
            }
            if !(route.upstream.starts_with("http://") || route.upstream.starts_with("https://")) {
                bail!(
                    "route {i}: upstream {:?} must be an http:// or https:// URL",
                    route.upstream
                );
            }
            if route.service.is_empty() {
                bail!("route {i}: service must be named");
            }
        }
        for route in &mut table.routes {
            if route.prefix.len() > 1 {
                route.prefix = route.prefix.trim_end_matches('/').to_owned();
            }
        }
        // Longest prefix first, so the most specific route wins.
        table.routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(a.prefix.cmp(&b.prefix))
        });
        Ok(table)
    }

    /// The route for `path`: the longest prefix that covers it. A `/` route (the storefront's
    /// pages) covers every path but the API's: an `/api/...` path no route names is the
    /// gateway's 404, never a page.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            if r.prefix == "/" {
                return !under(path, API_PREFIX);
            }
            under(path, &r.prefix)
        })
    }

    /// Each distinct upstream once, in a stable order.
    pub fn services(&self) -> Vec<(&str, &str)> {
        let mut services: Vec<_> = self
            .routes
            .iter()
            .map(|r| (r.service.as_str(), r.upstream.as_str()))
            .collect();
        services.sort_unstable();
        services.dedup();
        services
    }
}

/// Headers that belong to one connection, not to the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a client's header goes on to the service: not hop-by-hop, not `host` or the length
/// (the gateway re-sends the buffered body and its client sets both), and not one of the
/// identity headers only the gateway may set.
pub fn is_forwardable_request_header(name: &str) -> bool {
    !HOP_BY_HOP.contains(&name)
        && name != "host"
        && name != "content-length"
        && !name.starts_with("x-shop-user-")
}

/// Whether a service's header goes back to the client. The length is kept: the body is passed
/// through unchanged, and a known length spares the client chunked decoding.
pub fn is_forwardable_response_header(name: &str) -> bool {
    !HOP_BY_HOP.contains(&name)
}

/// The table `shop up` uses: every bundled service on its local port.
pub fn local_table(ports: &[(&str, u16)]) -> RouteTable {
    const PREFIXES: &[(&str, &str)] = &[
        ("/api/users", "user"),
        ("/api/auth", "user"),
        ("/api/products", "catalog"),
        ("/api/categories", "catalog"),
        ("/api/cart", "cart"),
        ("/api/orders", "order"),
        ("/api/stock", "inventory"),
        ("/api/shipments", "shipping"),
        ("/api/notifications", "notification"),
        (shop_contracts::catalog::PICTURES_PREFIX, "catalog"),
        // Everything else: the web shop's pages.
        ("/", "storefront"),
    ];
    RouteTable {
        routes: PREFIXES
            .iter()
            .filter_map(|(prefix, service)| {
                ports
                    .iter()
                    .find(|(name, _)| name == service)
                    .map(|(_, port)| Route {
                        prefix: (*prefix).into(),
                        service: (*service).into(),
                        upstream: format!("http://127.0.0.1:{port}"),
                    })
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::parse(
            r#"{"routes": [
                {"prefix": "/api/cart/", "service": "cart", "upstream": "http://c"},
                {"prefix": "/api", "service": "fallback", "upstream": "http://f"},
                {"prefix": "/api/cart/special", "service": "special", "upstream": "http://s"}
            ]}"#,
        )
        .unwrap()
    }

    #[test]
    fn longest_prefix_on_segment_boundaries_wins() {
        let t = table();
        assert_eq!(t.find("/api/cart").unwrap().service, "cart");
        assert_eq!(t.find("/api/cart/items/1").unwrap().service, "cart");
        assert_eq!(t.find("/api/cart/special/x").unwrap().service, "special");
        assert_eq!(t.find("/api/cartoon").unwrap().service, "fallback");
        assert!(t.find("/other").is_none());
    }

    #[test]
    fn the_root_route_takes_every_page_but_no_api_path() {
        let t = RouteTable::parse(
            r#"{"routes": [
                {"prefix": "/", "service": "storefront", "upstream": "http://s"},
                {"prefix": "/api/cart", "service": "cart", "upstream": "http://c"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(t.find("/").unwrap().service, "storefront");
        assert_eq!(t.find("/product/1").unwrap().service, "storefront");
        assert_eq!(t.find("/apiary").unwrap().service, "storefront");
        assert_eq!(t.find("/api/cart").unwrap().service, "cart");
        assert!(t.find("/api/unknown").is_none());
        assert!(t.find("/api").is_none());
    }

    #[test]
    fn bad_tables_are_refused_with_the_reason() {
        let err = RouteTable::parse(
            r#"{"routes": [{"prefix": "api", "service": "x", "upstream": "http://x"}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("must start with /"), "{err}");
        let err = RouteTable::parse(
            r#"{"routes": [{"prefix": "/a", "service": "x", "upstream": "ftp://x"}]}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("http://"), "{err}");
        assert!(RouteTable::parse("not json").is_err());
    }

    #[test]
    fn identity_headers_from_clients_are_dropped() {
        assert!(!is_forwardable_request_header("x-shop-user-id"));
        assert!(!is_forwardable_request_header("x-shop-user-roles"));
        assert!(!is_forwardable_request_header("connection"));
        assert!(!is_forwardable_request_header("content-length"));
        assert!(is_forwardable_response_header("content-length"));
        assert!(!is_forwardable_response_header("transfer-encoding"));
        assert!(is_forwardable_request_header("authorization"));
        assert!(is_forwardable_request_header("idempotency-key"));
    }
}
