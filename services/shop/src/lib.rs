//! The parts of the `shop` binary that its process tests use too: the service names and
//! `shop up`'s way of starting them (ports, environment, start order).

pub mod up;

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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
}

impl ServiceName {
    pub const ALL: [Self; 9] = [
        Self::Gateway,
        Self::User,
        Self::Catalog,
        Self::Cart,
        Self::Inventory,
        Self::Payment,
        Self::Shipping,
        Self::Order,
        Self::Notification,
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
        }
    }
}
