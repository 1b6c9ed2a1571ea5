//! The bundled services: the names `shop serve <name>` takes, the operator's `component`, the
//! source of the events each writes, and the stem of the variable a peer's URL is given in.
//!
//! A new service is one variant here, one line in [`ServiceName::ALL`] and one in
//! [`ServiceName::as_str`]; the compiler then points at every exhaustive match that must learn it
//! (`shop`'s `ServiceName`, the operator's `Component`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    Gateway,
    User,
    Catalog,
    Cart,
    Inventory,
    Payment,
    Shipping,
    Order,
    Notification,
    Storefront,
}

impl ServiceName {
    /// Every service, in the order `shop up` assigns their ports (the gateway first).
    pub const ALL: [Self; 10] = [
        Self::Gateway,
        Self::User,
        Self::Catalog,
        Self::Cart,
        Self::Inventory,
        Self::Payment,
        Self::Shipping,
        Self::Order,
        Self::Notification,
        Self::Storefront,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::User => "user",
            Self::Catalog => "catalog",
            Self::Cart => "cart",
            Self::Inventory => "inventory",
            Self::Payment => "payment",
            Self::Shipping => "shipping",
            Self::Order => "order",
            Self::Notification => "notification",
            Self::Storefront => "storefront",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The variable its callers find it in: `CART_URL` (see [`crate::env::peer_url`]).
    pub fn url_var(self) -> String {
        crate::env::peer_url(self.as_str())
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for service in ServiceName::ALL {
            assert_eq!(ServiceName::parse(service.as_str()), Some(service));
            assert_eq!(
                serde_json::to_value(service).unwrap(),
                serde_json::json!(service.as_str())
            );
        }
        assert_eq!(ServiceName::parse("warehouse"), None);
        assert_eq!(ServiceName::Cart.url_var(), "CART_URL");
    }
}
