//! Event type names and data versions. Producers write an event with its type's name, version
//! and producer; consumers subscribe by name and refuse a version they do not understand. The
//! payloads are not here: each consumer reads only the fields it needs (a tolerant reader).

use crate::services::ServiceName;

/// One kind of event: its `type`, the `version` of its data and the service that writes it (the
/// event's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventType {
    pub name: &'static str,
    pub version: u32,
    pub producer: ServiceName,
}

impl EventType {
    /// The event's `source`.
    pub fn source(self) -> &'static str {
        self.producer.as_str()
    }

    /// The type of this name, if the shop has one.
    pub fn named(name: &str) -> Option<Self> {
        ALL.into_iter().find(|t| t.name == name)
    }
}

/// A new account: `user_id`, `email`, `name`.
pub const USER_REGISTERED: EventType = EventType {
    name: "user.registered",
    version: 1,
    producer: ServiceName::User,
};
/// An order exists and its saga starts.
pub const ORDER_PLACED: EventType = EventType {
    name: "order.placed",
    version: 1,
    producer: ServiceName::Order,
};
/// An order is paid, committed and shipped.
pub const ORDER_CONFIRMED: EventType = EventType {
    name: "order.confirmed",
    version: 1,
    producer: ServiceName::Order,
};
/// An order's saga ended without the order; compensations have run.
pub const ORDER_FAILED: EventType = EventType {
    name: "order.failed",
    version: 1,
    producer: ServiceName::Order,
};
/// A hold took a product's availability below the inventory's threshold.
pub const STOCK_LOW: EventType = EventType {
    name: "stock.low",
    version: 1,
    producer: ServiceName::Inventory,
};
/// A shipment was created for an order (no name or street in it).
pub const SHIPMENT_CREATED: EventType = EventType {
    name: "shipment.created",
    version: 1,
    producer: ServiceName::Shipping,
};

/// Every event type the shop writes.
pub const ALL: [EventType; 6] = [
    USER_REGISTERED,
    ORDER_PLACED,
    ORDER_CONFIRMED,
    ORDER_FAILED,
    STOCK_LOW,
    SHIPMENT_CREATED,
];

/// The services that consume events (the local bus delivers to them; each has a JetStream consumer).
pub const CONSUMERS: [ServiceName; 2] = [ServiceName::Notification, ServiceName::Cart];

/// The event types `consumer` reads (none for a service that consumes nothing): the local bus
/// delivers only these to it. The cart empties a cart on `order.confirmed`; the notification
/// service writes a message for every event.
pub fn read_by(consumer: ServiceName) -> &'static [EventType] {
    match consumer {
        ServiceName::Cart => &[ORDER_CONFIRMED],
        ServiceName::Notification => &ALL,
        _ => &[],
    }
}

/// Whether `service` writes or reads events, and so needs the event bus at all.
pub fn has_events(service: ServiceName) -> bool {
    ALL.iter().any(|t| t.producer == service) || CONSUMERS.contains(&service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_consumer_reads_something_and_only_consumers_do() {
        for service in crate::services::ServiceName::ALL {
            assert_eq!(
                !read_by(service).is_empty(),
                CONSUMERS.contains(&service),
                "{service:?}"
            );
        }
    }

    #[test]
    fn names_are_unique_and_found() {
        for t in ALL {
            assert_eq!(EventType::named(t.name), Some(t));
            assert_eq!(ALL.iter().filter(|o| o.name == t.name).count(), 1);
        }
        assert_eq!(EventType::named("cart.touched"), None);
        assert_eq!(ORDER_CONFIRMED.source(), "order");
    }

    #[test]
    fn only_producers_and_consumers_have_events() {
        let with: Vec<_> = ServiceName::ALL
            .into_iter()
            .filter(|s| has_events(*s))
            .collect();
        use ServiceName::*;
        assert_eq!(
            with,
            [User, Cart, Inventory, Shipping, Order, Notification],
            "gateway, catalog and payment neither write nor read events"
        );
    }
}
