//! The parts of the `shop` binary that its process tests use too: the service names and
//! `shop up`'s way of starting them (ports, environment, start order).

pub mod up;

use clap::ValueEnum;
use shop_contracts::ServiceName as Contract;

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
    /// Every service, in the contracts' order (the order `shop up` assigns their ports).
    pub const ALL: [Self; Contract::ALL.len()] = {
        let mut all = [Self::Gateway; Contract::ALL.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = Self::from_contract(Contract::ALL[i]);
            i += 1;
        }
        all
    };

    pub fn as_str(self) -> &'static str {
        self.contract().as_str()
    }

    /// The contracts' name of this service (events, environment variables, the operator's
    /// component).
    pub const fn contract(self) -> Contract {
        match self {
            Self::Gateway => Contract::Gateway,
            Self::User => Contract::User,
            Self::Catalog => Contract::Catalog,
            Self::Cart => Contract::Cart,
            Self::Inventory => Contract::Inventory,
            Self::Payment => Contract::Payment,
            Self::Shipping => Contract::Shipping,
            Self::Order => Contract::Order,
            Self::Notification => Contract::Notification,
        }
    }

    const fn from_contract(name: Contract) -> Self {
        match name {
            Contract::Gateway => Self::Gateway,
            Contract::User => Self::User,
            Contract::Catalog => Self::Catalog,
            Contract::Cart => Self::Cart,
            Contract::Inventory => Self::Inventory,
            Contract::Payment => Self::Payment,
            Contract::Shipping => Self::Shipping,
            Contract::Order => Self::Order,
            Contract::Notification => Self::Notification,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_names_are_the_contracts() {
        for (service, contract) in ServiceName::ALL.into_iter().zip(Contract::ALL) {
            assert_eq!(service.contract(), contract);
            let value = service
                .to_possible_value()
                .expect("every service is selectable");
            assert_eq!(value.get_name(), contract.as_str());
        }
    }
}
