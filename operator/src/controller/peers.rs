//! Which ShopServices must be reconciled again when another one of their namespace changes.
//!
//! A ShopService's children read some of its peers' specs (see `build::Context`): the ports and
//! existence of its dependencies (environment, egress, status), who depends on it (ingress), the
//! gateways (ingress of routed services), and for a gateway every routed and user service (route
//! table, egress, token keys). Only those peers are re-queued: re-queuing the whole namespace on
//! every change made creating N ShopServices cost N² reconciles (measured in
//! `docs/benchmarks.md`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::crd::{Component, ShopService};

/// What a peer may depend on of a ShopService, as last seen: after a change, the peers that
/// depended on the old spec need a reconcile as much as those that depend on the new one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    namespace: String,
    generation: i64,
    /// Marked for deletion: peers no longer count it.
    going: bool,
    depends_on: Vec<String>,
    gateway: bool,
    routed_or_user: bool,
}

impl Seen {
    fn of(shop: &ShopService) -> Seen {
        Seen {
            namespace: shop.namespace().unwrap_or_default(),
            generation: shop.metadata.generation.unwrap_or_default(),
            going: shop.metadata.deletion_timestamp.is_some(),
            depends_on: shop
                .spec
                .depends_on
                .iter()
                .map(|d| d.as_str().to_owned())
                .collect(),
            gateway: shop.spec.component == Some(Component::Gateway),
            routed_or_user: shop.spec.route.is_some()
                || shop.spec.component == Some(Component::User),
        }
    }
}

/// Whether `peer`'s children read something of `changed`, now or as it was (`before`).
fn affects(changed: &ShopService, before: Option<&Seen>, peer: &ShopService) -> bool {
    let now = Seen::of(changed);
    let name = changed.name_any();
    let peer_name = peer.name_any();
    let either = |test: &dyn Fn(&Seen) -> bool| test(&now) || before.is_some_and(test);
    let peer_is_gateway = peer.spec.component == Some(Component::Gateway);
    // The peer calls `changed`: its URL, egress and "missing dependency" status.
    peer.spec.depends_on.iter().any(|d| d.as_str() == name)
        // `changed` calls the peer: the peer's ingress lists its dependents.
        || either(&|seen| seen.depends_on.contains(&peer_name))
        // A gateway routes to routed services and fetches the user service's keys.
        || (peer_is_gateway && either(&|seen| seen.routed_or_user))
        // A routed service lets the gateways in, by name.
        || (peer.spec.route.is_some() && either(&|seen| seen.gateway))
}

/// Maps a ShopService whose spec changed (or that is going away) to the peers it
/// [`affects`]. Status-only changes map to nothing: the operator writes statuses itself, and
/// reacting to them would reconcile every namespace in a loop.
pub struct PeerTrigger {
    store: Store<ShopService>,
    /// What was last seen of each ShopService, by uid.
    seen: Mutex<HashMap<String, Seen>>,
}

impl PeerTrigger {
    pub fn new(store: Store<ShopService>) -> PeerTrigger {
        PeerTrigger {
            store,
            seen: Mutex::default(),
        }
    }

    pub fn peers_of(&self, shop: &ShopService) -> Vec<ObjectRef<ShopService>> {
        let uid = shop.uid().unwrap_or_default();
        let now = Seen::of(shop);
        let before = {
            let mut seen = self.seen.lock().expect("seen lock");
            let before = seen.insert(uid, now.clone());
            if !now.going && before.as_ref().map(|b| b.generation) == Some(now.generation) {
                return Vec::new();
            }
            before
        };
        self.store
            .state()
            .iter()
            .filter(|peer| {
                peer.namespace() == shop.namespace()
                    && peer.name_any() != shop.name_any()
                    && affects(shop, before.as_ref(), peer)
            })
            .map(|peer| ObjectRef::from_obj(peer.as_ref()))
            .collect()
    }

    /// The ShopServices of `namespace` from the controller's cache, if the cache has caught up
    /// with every spec change this trigger has seen there; `None` if not. The cache and this
    /// trigger are fed by two watches, and a peer reconciled on a change the cache does not
    /// hold yet would be built from the old spec and not be triggered again.
    pub fn namespace_services(&self, namespace: &str) -> Option<Vec<Arc<ShopService>>> {
        let cached: Vec<Arc<ShopService>> = self
            .store
            .state()
            .into_iter()
            .filter(|shop| shop.metadata.namespace.as_deref() == Some(namespace))
            .collect();
        let by_uid: HashMap<&str, &ShopService> = cached
            .iter()
            .filter_map(|shop| Some((shop.metadata.uid.as_deref()?, shop.as_ref())))
            .collect();
        let mut seen = self.seen.lock().expect("seen lock");
        let mut caught_up = true;
        seen.retain(|uid, seen| {
            if seen.namespace != namespace {
                return true;
            }
            match by_uid.get(uid.as_str()) {
                // Gone from the cache after its deletion: nothing left to compare.
                None if seen.going => return false,
                None => caught_up = false,
                Some(shop) => {
                    let generation = shop.metadata.generation.unwrap_or_default();
                    let going = shop.metadata.deletion_timestamp.is_some();
                    if generation < seen.generation || (seen.going && !going) {
                        caught_up = false;
                    }
                }
            }
            true
        });
        caught_up.then_some(cached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop(yaml: &str) -> ShopService {
        serde_saphyr::from_str(yaml).expect("a ShopService")
    }

    fn named(name: &str, spec: &str) -> ShopService {
        shop(&format!(
            "apiVersion: shop.dev/v1alpha1\nkind: ShopService\nmetadata: {{name: {name}, namespace: shop, generation: 1}}\nspec: {spec}\n"
        ))
    }

    #[test]
    fn independent_services_do_not_affect_each_other() {
        let a = named("a", "{component: catalog}");
        let b = named("b", "{component: cart}");
        assert!(!affects(&a, None, &b));
        assert!(!affects(&b, None, &a));
    }

    #[test]
    fn a_dependency_and_its_dependent_affect_each_other() {
        let catalog = named("catalog", "{component: catalog}");
        let cart = named("cart", "{component: cart, dependsOn: [catalog]}");
        assert!(affects(&catalog, None, &cart), "cart's URL and egress");
        assert!(affects(&cart, None, &catalog), "catalog's ingress");
    }

    #[test]
    fn a_dependency_dropped_still_reaches_the_old_dependency() {
        let catalog = named("catalog", "{component: catalog}");
        let cart_now = named("cart", "{component: cart}");
        let before = Seen::of(&named("cart", "{component: cart, dependsOn: [catalog]}"));
        assert!(affects(&cart_now, Some(&before), &catalog));
        assert!(!affects(&cart_now, None, &catalog));
    }

    #[test]
    fn gateways_and_routed_services_affect_each_other() {
        let gateway = named("gateway", "{component: gateway}");
        let routed = named("cart", "{component: cart, route: {pathPrefix: /api/cart}}");
        let internal = named("payment", "{component: payment}");
        let user = named("user", "{component: user}");
        assert!(affects(&routed, None, &gateway), "the route table");
        assert!(affects(&user, None, &gateway), "the token keys");
        assert!(!affects(&internal, None, &gateway));
        assert!(
            affects(&gateway, None, &routed),
            "the routed service's ingress"
        );
        assert!(!affects(&gateway, None, &internal));
    }

    fn stored(name: &str, generation: i64) -> ShopService {
        let mut shop = named(name, "{component: catalog}");
        shop.metadata.uid = Some(format!("uid-{name}"));
        shop.metadata.generation = Some(generation);
        shop
    }

    #[test]
    fn the_cache_is_used_only_once_it_holds_every_change_the_trigger_saw() {
        use kube::runtime::watcher::Event;
        let (reader, mut writer) = kube::runtime::reflector::store::<ShopService>();
        let trigger = PeerTrigger::new(reader);
        writer.apply_watcher_event(&Event::Apply(stored("a", 1)));
        trigger.peers_of(&stored("a", 1));
        assert_eq!(trigger.namespace_services("shop").map(|s| s.len()), Some(1));

        // The trigger's watch saw a new spec and a new object before the cache did.
        trigger.peers_of(&stored("a", 2));
        assert!(trigger.namespace_services("shop").is_none(), "a is behind");
        writer.apply_watcher_event(&Event::Apply(stored("a", 2)));
        trigger.peers_of(&stored("b", 1));
        assert!(trigger.namespace_services("shop").is_none(), "b is missing");
        writer.apply_watcher_event(&Event::Apply(stored("b", 1)));
        assert_eq!(trigger.namespace_services("shop").map(|s| s.len()), Some(2));

        // A deletion: behind until the cache has it marked, forgotten once the cache drops it.
        let mut going = stored("b", 2);
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        trigger.peers_of(&going);
        assert!(
            trigger.namespace_services("shop").is_none(),
            "b's deletion is not cached"
        );
        writer.apply_watcher_event(&Event::Delete(going));
        assert_eq!(trigger.namespace_services("shop").map(|s| s.len()), Some(1));
        assert!(
            trigger
                .namespace_services("other")
                .is_some_and(|s| s.is_empty())
        );
    }

    #[test]
    fn a_route_removed_still_reaches_the_gateway() {
        let gateway = named("gateway", "{component: gateway}");
        let now = named("cart", "{component: cart}");
        let before = Seen::of(&named(
            "cart",
            "{component: cart, route: {pathPrefix: /api/cart}}",
        ));
        assert!(affects(&now, Some(&before), &gateway));
    }
}
