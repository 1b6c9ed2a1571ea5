//! The NetworkPolicy `<name>`: the service's pods talk only to whom the ShopServices say.
//!
//! Everything is denied unless allowed here. In: the gateway takes traffic from anywhere;
//! another service only from the gateway (if it is routed) and from its dependents (the
//! ShopServices that list it in `dependsOn`). Out: DNS, the service's dependencies (for the
//! gateway also every routed service and the user service), the event bus (for a service with
//! events) and its database. This is what lets the services trust the caller headers the
//! gateway sets (docs/decisions.md).

use std::collections::BTreeSet;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use shop_contracts::events;

use super::common::{INSTANCE_LABEL, Role};
use super::database::POSTGRES_PORT;
use super::{Context, Owner};
use crate::crd::{Component, DatabaseMode, ShopServiceSpec};

pub fn network_policy(owner: &Owner, context: &Context) -> NetworkPolicy {
    NetworkPolicy {
        metadata: owner.metadata(owner.name, Role::Server),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(owner.label_selector(Role::Server)),
            // Both types listed: no rules for a type then denies, rather than allows, all.
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: unless_empty(ingress(owner, context)),
            egress: unless_empty(egress(owner, context)),
        }),
    }
}

fn ingress(owner: &Owner, context: &Context) -> Vec<NetworkPolicyIngressRule> {
    let spec = owner.spec();
    let ports = Some(vec![tcp(spec.port)]);
    if spec.component == Some(Component::Gateway) {
        // The entry point: no `from` admits every source.
        return vec![NetworkPolicyIngressRule { from: None, ports }];
    }
    let mut callers = BTreeSet::new();
    if spec.route.is_some() {
        callers.extend(
            context
                .live_services()
                .filter(|shop| shop.spec.component == Some(Component::Gateway))
                .filter_map(|gateway| gateway.metadata.name.as_deref()),
        );
    }
    callers.extend(
        context
            .dependents_of(owner.name)
            .filter_map(|dependent| dependent.metadata.name.as_deref()),
    );
    if callers.is_empty() {
        return Vec::new();
    }
    vec![NetworkPolicyIngressRule {
        from: Some(callers.into_iter().map(server_pods_of).collect()),
        ports,
    }]
}

fn egress(owner: &Owner, context: &Context) -> Vec<NetworkPolicyEgressRule> {
    let spec = owner.spec();
    let mut rules = vec![dns()];

    // Each ShopService it calls, on the port that one listens on.
    let mut callees: BTreeSet<(&str, i32)> = spec
        .depends_on
        .iter()
        .map(|dependency| (dependency.as_str(), context.port_of(dependency.as_str())))
        .collect();
    if spec.component == Some(Component::Gateway) {
        callees.extend(
            context
                .routed_services()
                .filter_map(|shop| Some((shop.metadata.name.as_deref()?, shop.spec.port))),
        );
        callees.extend(context.user_service());
    }
    rules.extend(
        callees
            .into_iter()
            .map(|(name, port)| NetworkPolicyEgressRule {
                to: Some(vec![server_pods_of(name)]),
                ports: Some(vec![tcp(port)]),
            }),
    );

    rules.extend(event_bus(spec));

    match spec.database.mode {
        DatabaseMode::Dedicated => rules.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(owner.label_selector(Role::Database)),
                ..Default::default()
            }]),
            ports: Some(vec![tcp(POSTGRES_PORT)]),
        }),
        // The shared server's address is in a Secret the builders do not read, and may be
        // outside the cluster: allow the PostgreSQL port to any destination.
        DatabaseMode::Shared => rules.push(NetworkPolicyEgressRule {
            to: None,
            ports: Some(vec![tcp(POSTGRES_PORT)]),
        }),
        DatabaseMode::None => {}
    }
    rules
}

/// The NATS servers named by `NATS_URL` in the ShopService's `env` (how the shop chart wires the
/// event bus). The URL may name a server outside the namespace or the cluster, so the rule allows
/// the servers' ports to any destination, as for a shared database. Only for a service that
/// writes or reads events (or a custom workload): the others never open the bus, although the
/// chart gives every service the variable.
fn event_bus(spec: &ShopServiceSpec) -> Option<NetworkPolicyEgressRule> {
    if spec
        .component
        .is_some_and(|component| !events::has_events(component.service()))
    {
        return None;
    }
    let url = spec
        .env
        .iter()
        .rev()
        .find(|var| var.name == shop_contracts::env::NATS_URL)?
        .value
        .trim();
    let ports: BTreeSet<i32> = url
        .split(',')
        .map(str::trim)
        .filter(|server| !server.is_empty())
        .map(nats_port)
        .collect();
    (!ports.is_empty()).then(|| NetworkPolicyEgressRule {
        to: None,
        ports: Some(ports.into_iter().map(tcp).collect()),
    })
}

/// The port of one server in a NATS URL (`nats://host:port`, `tls://…`, or a bare `host:port`),
/// 4222 when it names none or names it badly (the client would fail on its own, more clearly).
fn nats_port(server: &str) -> i32 {
    const NATS_PORT: i32 = 4222;
    let address = server.split_once("://").map_or(server, |(_, rest)| rest);
    let host_port = address.rsplit_once('@').map_or(address, |(_, hp)| hp);
    let host_port = host_port.split('/').next().unwrap_or_default();
    match host_port.rsplit_once(':') {
        // `[::1]` alone splits inside the brackets: no port there.
        Some((_, port)) if !port.contains(']') => port
            .parse()
            .ok()
            .filter(|p| (1..=65535).contains(p))
            .unwrap_or(NATS_PORT),
        _ => NATS_PORT,
    }
}

/// Name resolution through the cluster DNS (CoreDNS keeps kube-dns's `k8s-app` label).
fn dns() -> NetworkPolicyEgressRule {
    let port = |protocol: &str| NetworkPolicyPort {
        port: Some(IntOrString::Int(53)),
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(match_labels("kubernetes.io/metadata.name", "kube-system")),
            pod_selector: Some(match_labels("k8s-app", "kube-dns")),
            ..Default::default()
        }]),
        ports: Some(vec![port("UDP"), port("TCP")]),
    }
}

/// The server pods of the ShopService `name` in the same namespace.
fn server_pods_of(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(
                [
                    (INSTANCE_LABEL.to_owned(), name.to_owned()),
                    (
                        "app.kubernetes.io/component".to_owned(),
                        Role::Server.as_str().to_owned(),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn match_labels(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some([(key.to_owned(), value.to_owned())].into()),
        ..Default::default()
    }
}

/// `None` for no rules. The API server stores an empty list as no list, so sending `[]`
/// would change the object (its generation) on every apply.
fn unless_empty<T>(rules: Vec<T>) -> Option<Vec<T>> {
    (!rules.is_empty()).then_some(rules)
}

/// A TCP port, as a NetworkPolicy names it.
pub(super) fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{context, routed, shop};
    use crate::crd::{ServiceName, ShopService};

    fn build(shop: &ShopService, services: &[ShopService]) -> NetworkPolicySpec {
        network_policy(&Owner::new(shop).unwrap(), &context(services, None))
            .spec
            .unwrap()
    }

    /// The ShopService names a list of peers selects, in order.
    fn instances(peers: &[NetworkPolicyPeer]) -> Vec<String> {
        peers
            .iter()
            .map(|peer| {
                let labels = peer
                    .pod_selector
                    .as_ref()
                    .unwrap()
                    .match_labels
                    .as_ref()
                    .unwrap();
                assert_eq!(labels["app.kubernetes.io/component"], "server");
                labels["app.kubernetes.io/instance"].clone()
            })
            .collect()
    }

    /// `(instance, port)` of every egress rule to another ShopService's server pods: not
    /// DNS (which has a namespace selector) and not the database.
    fn callees(spec: &NetworkPolicySpec) -> Vec<(String, i32)> {
        let callee = |rule: &NetworkPolicyEgressRule| {
            let peer = rule.to.as_ref()?.first()?;
            let labels = peer.pod_selector.as_ref()?.match_labels.as_ref()?;
            if peer.namespace_selector.is_some()
                || labels["app.kubernetes.io/component"] != "server"
            {
                return None;
            }
            let Some(IntOrString::Int(port)) = rule.ports.as_ref()?[0].port else {
                panic!("a ShopService is reached on a numbered port: {rule:?}");
            };
            Some((labels["app.kubernetes.io/instance"].clone(), port))
        };
        spec.egress.iter().flatten().filter_map(callee).collect()
    }

    fn depends_on(shop: &mut ShopService, names: &[&str]) {
        shop.spec.depends_on = names.iter().map(|&n| ServiceName::from(n)).collect();
    }

    #[test]
    fn denies_both_ways_by_default() {
        let cart = shop("cart", Some(Component::Cart));
        let spec = build(&cart, std::slice::from_ref(&cart));
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
        );
        assert_eq!(spec.ingress, None, "nobody may call it");
        assert_eq!(spec.egress.as_ref().unwrap().len(), 1, "only DNS");
        let selector = spec.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(selector["app.kubernetes.io/instance"], "cart");
    }

    #[test]
    fn dns_is_allowed_to_the_cluster_dns_only() {
        let cart = shop("cart", Some(Component::Cart));
        let spec = build(&cart, &[]);
        let dns = &spec.egress.unwrap()[0];
        let ports: Vec<_> = dns
            .ports
            .iter()
            .flatten()
            .map(|p| p.protocol.clone().unwrap())
            .collect();
        assert_eq!(ports, ["UDP", "TCP"]);
        let peer = &dns.to.as_ref().unwrap()[0];
        assert_eq!(
            peer.namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["kubernetes.io/metadata.name"],
            "kube-system"
        );
    }

    #[test]
    fn a_routed_service_admits_the_gateway_and_its_dependents_on_its_port() {
        let mut cart = routed("cart", Component::Cart, "/api/cart");
        cart.spec.port = 8083;
        let gateway = shop("gateway", Some(Component::Gateway));
        let mut order = shop("order", Some(Component::Order));
        depends_on(&mut order, &["cart", "payment"]);
        let payment = shop("payment", Some(Component::Payment));
        let services = [cart.clone(), gateway, order, payment];
        let spec = build(&cart, &services);
        let rules = spec.ingress.unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(
            instances(rules[0].from.as_ref().unwrap()),
            ["gateway", "order"]
        );
        assert_eq!(
            rules[0].ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(8083))
        );
    }

    #[test]
    fn an_unrouted_service_does_not_admit_the_gateway() {
        let payment = shop("payment", Some(Component::Payment));
        let gateway = shop("gateway", Some(Component::Gateway));
        let mut order = shop("order", Some(Component::Order));
        depends_on(&mut order, &["payment"]);
        let spec = build(&payment, &[payment.clone(), gateway, order]);
        assert_eq!(
            instances(spec.ingress.unwrap()[0].from.as_ref().unwrap()),
            ["order"]
        );
    }

    #[test]
    fn dependents_being_deleted_are_not_admitted() {
        let payment = shop("payment", Some(Component::Payment));
        let mut order = shop("order", Some(Component::Order));
        depends_on(&mut order, &["payment"]);
        order.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        let spec = build(&payment, &[payment.clone(), order]);
        assert_eq!(spec.ingress, None);
    }

    #[test]
    fn the_gateway_admits_everyone_and_reaches_every_routed_service_and_the_user_service() {
        let gateway = shop("gateway", Some(Component::Gateway));
        let mut user = routed("user", Component::User, "/api/users");
        user.spec.port = 8081;
        let catalog = routed("catalog", Component::Catalog, "/api/products");
        let payment = shop("payment", Some(Component::Payment));
        let services = [gateway.clone(), user, catalog, payment];
        let spec = build(&gateway, &services);
        let ingress = spec.ingress.as_ref().unwrap();
        assert_eq!(ingress.len(), 1);
        assert_eq!(ingress[0].from, None, "from anywhere");
        assert_eq!(
            callees(&spec),
            [("catalog".to_owned(), 8080), ("user".to_owned(), 8081)],
            "not the unrouted payment service"
        );
    }

    /// The storefront is both: routed (the gateway sends it every page) and a client of the
    /// gateway (every page is built from the public API).
    fn web_shop() -> [ShopService; 3] {
        let mut storefront = routed("storefront", Component::Storefront, "/");
        depends_on(&mut storefront, &["gateway"]);
        let mut gateway = shop("gateway", Some(Component::Gateway));
        gateway.spec.port = 8090;
        let catalog = routed("catalog", Component::Catalog, "/api/products");
        [storefront, gateway, catalog]
    }

    #[test]
    fn the_storefront_admits_only_the_gateway_and_reaches_only_the_gateway() {
        let services = web_shop();
        let spec = build(&services[0], &services);
        let ingress = spec.ingress.clone().unwrap();
        assert_eq!(ingress.len(), 1);
        assert_eq!(instances(ingress[0].from.as_ref().unwrap()), ["gateway"]);
        assert_eq!(
            ingress[0].ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(8080))
        );
        assert_eq!(
            callees(&spec),
            [("gateway".to_owned(), 8090)],
            "the gateway on its own port, and no service behind it"
        );
        assert_eq!(
            spec.egress.unwrap().len(),
            2,
            "DNS and the gateway: no database"
        );
    }

    #[test]
    fn the_gateway_reaches_the_storefront_it_routes_pages_to() {
        let services = web_shop();
        let spec = build(&services[1], &services);
        assert_eq!(
            spec.ingress.as_ref().unwrap()[0].from,
            None,
            "from anywhere"
        );
        assert_eq!(
            callees(&spec),
            [
                ("catalog".to_owned(), 8080),
                ("storefront".to_owned(), 8080)
            ]
        );
    }

    #[test]
    fn reaches_each_dependency_on_its_port_and_its_dedicated_database() {
        let mut order = shop("order", Some(Component::Order));
        depends_on(&mut order, &["payment", "inventory"]);
        order.spec.database.mode = DatabaseMode::Dedicated;
        let mut payment = shop("payment", Some(Component::Payment));
        payment.spec.port = 9000;
        let spec = build(&order, &[order.clone(), payment]);
        assert_eq!(
            callees(&spec),
            [("inventory".to_owned(), 8080), ("payment".to_owned(), 9000)]
        );
        let database = spec.egress.as_ref().unwrap().last().unwrap();
        let labels = database.to.as_ref().unwrap()[0]
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(labels["app.kubernetes.io/instance"], "order");
        assert_eq!(labels["app.kubernetes.io/component"], "database");
        assert_eq!(
            database.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(5432))
        );
    }

    #[test]
    fn the_event_bus_in_nats_url_is_reached_on_its_ports() {
        let mut order = shop("order", Some(Component::Order));
        let without = build(&order, &[]).egress.unwrap().len();
        order.spec.env.push(crate::crd::EnvVar {
            name: "NATS_URL".into(),
            value: "nats://user:secret@shop-nats.shop.svc:4223, tls://nats.example.com".into(),
        });
        let egress = build(&order, &[]).egress.unwrap();
        assert_eq!(egress.len(), without + 1);
        let bus = egress
            .iter()
            .find(|rule| rule.to.is_none())
            .expect("a rule to any destination");
        let ports: Vec<_> = bus.ports.iter().flatten().map(|p| p.port.clone()).collect();
        assert_eq!(
            ports,
            [Some(IntOrString::Int(4222)), Some(IntOrString::Int(4223))]
        );
    }

    #[test]
    fn services_without_events_do_not_reach_the_event_bus() {
        let nats = crate::crd::EnvVar {
            name: "NATS_URL".into(),
            value: "nats://shop-nats.shop.svc:4222".into(),
        };
        let opens_the_bus = |component: Option<Component>| {
            let mut service = shop("service", component);
            service.spec.env.push(nats.clone());
            build(&service, &[])
                .egress
                .unwrap()
                .iter()
                .any(|rule| rule.to.is_none())
        };
        for component in [
            Component::Gateway,
            Component::Storefront,
            Component::Catalog,
            Component::Payment,
        ] {
            assert!(!opens_the_bus(Some(component)), "{component:?}");
        }
        assert!(opens_the_bus(Some(Component::Notification)));
        assert!(opens_the_bus(None), "a custom workload may use it");
    }

    #[test]
    fn nats_ports_come_from_each_form_of_server_address() {
        assert_eq!(nats_port("nats://nats:4222"), 4222);
        assert_eq!(nats_port("nats://a:b@nats.ns.svc:7422"), 7422);
        assert_eq!(nats_port("tls://nats.example.com"), 4222);
        assert_eq!(nats_port("nats.local:5000"), 5000);
        assert_eq!(nats_port("nats://[::1]:4333"), 4333);
        assert_eq!(nats_port("nats://[::1]"), 4222);
        assert_eq!(nats_port("nats://nats:notaport"), 4222);
    }

    #[test]
    fn an_empty_nats_url_opens_nothing() {
        let mut order = shop("order", Some(Component::Order));
        let without = build(&order, &[]).egress.unwrap();
        order.spec.env.push(crate::crd::EnvVar {
            name: "NATS_URL".into(),
            value: " ".into(),
        });
        assert_eq!(build(&order, &[]).egress.unwrap(), without);
    }

    #[test]
    fn a_shared_database_is_reached_on_the_postgres_port_anywhere() {
        let mut order = shop("order", Some(Component::Order));
        order.spec.database.mode = DatabaseMode::Shared;
        let spec = build(&order, &[]);
        let database = spec.egress.as_ref().unwrap().last().unwrap();
        assert_eq!(database.to, None);
        assert_eq!(
            database.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(5432))
        );
    }
}
