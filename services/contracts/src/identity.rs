//! Service identity on the internal APIs (`/internal/*`): the header a caller's credential
//! travels in, and who may call what. The credential itself (a short-lived token signed with
//! the installation's key, `SHOP_SERVICE_KEY`) is minted and verified by `shop_kit::identity`.

use crate::ServiceName;

/// The request header that carries a caller's token. Not `Authorization`: that header is the
/// customer's, and a service must never mistake one for the other.
pub const HEADER: &str = "shop-service-token";

/// Where the internal APIs live; every path under it needs a caller's token.
pub const INTERNAL_PREFIX: &str = "/internal/";

/// Who may call a path of the internal API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callers {
    /// Only these services.
    Only(&'static [ServiceName]),
    /// Any holder of the installation's key: the event relays of every service, and the
    /// carrier's tracking updates (an integration outside the shop given the key).
    AnyHolder,
}

/// Who may call `path` of the service `receiver` (a bundled service's name, or another
/// service's). Least privilege: a path no rule names is open to nobody, so a new internal
/// route is refused until it gets a rule here.
pub fn callers(receiver: &str, path: &str) -> Callers {
    use ServiceName::{Inventory, Order, Payment, Shipping};
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if under("/internal/events") {
        return Callers::AnyHolder;
    }
    match ServiceName::parse(receiver) {
        // The checkout saga reserves, charges, quotes and ships; nobody else does.
        Some(Inventory) if under(crate::inventory::RESERVATIONS_PATH) => Callers::Only(&[Order]),
        Some(Payment) if under(crate::payment::CHARGES_PATH) => Callers::Only(&[Order]),
        Some(Shipping) if path.ends_with("/events") && under(crate::shipping::SHIPMENTS_PATH) => {
            Callers::AnyHolder
        }
        Some(Shipping)
            if under(crate::shipping::QUOTES_PATH) || under(crate::shipping::SHIPMENTS_PATH) =>
        {
            Callers::Only(&[Order])
        }
        _ => Callers::Only(&[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServiceName::Order;

    #[test]
    fn only_the_order_service_reserves_charges_and_ships() {
        for (receiver, path) in [
            ("inventory", "/internal/reservations"),
            ("inventory", "/internal/reservations/0b0e/commit"),
            ("payment", "/internal/charges"),
            ("payment", "/internal/charges/7/refunds"),
            ("shipping", "/internal/quotes"),
            ("shipping", "/internal/shipments"),
            ("shipping", "/internal/shipments/SHP-1"),
        ] {
            assert_eq!(callers(receiver, path), Callers::Only(&[Order]), "{path}");
        }
    }

    #[test]
    fn events_and_carrier_updates_come_from_any_holder_of_the_key() {
        assert_eq!(callers("cart", "/internal/events/cart"), Callers::AnyHolder);
        assert_eq!(
            callers("shipping", "/internal/shipments/SHP-1/events"),
            Callers::AnyHolder
        );
    }

    #[test]
    fn a_path_without_a_rule_is_open_to_nobody() {
        assert_eq!(
            callers("payment", "/internal/reservations"),
            Callers::Only(&[])
        );
        assert_eq!(
            callers("inventory", "/internal/reservationsX"),
            Callers::Only(&[])
        );
        assert_eq!(callers("catalog", "/internal/anything"), Callers::Only(&[]));
        assert_eq!(
            callers("my-service", "/internal/charges"),
            Callers::Only(&[])
        );
    }
}
