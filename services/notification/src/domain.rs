//! What the events say and the messages they become: parsing, rendering, money. No I/O.

use serde::{Deserialize, Serialize};
use shop_contracts::events::{self, EventType};
use shop_kit::Money;
use utoipa::ToSchema;
use uuid::Uuid;

pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// How a message travels. Only e-mail is written today (the shop knows no phone numbers); the
/// column takes `sms` for when it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "sms" => Self::Sms,
            _ => Self::Email,
        }
    }
}

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// One customer, by user id.
    User(Uuid),
    /// The shop's administrators (`stock.low`).
    Admins,
}

/// A known address book entry, from `user.registered`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub email: String,
    pub name: String,
}

/// A message rendered from an event, before it is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub audience: Audience,
    pub channel: Channel,
    pub subject: String,
    pub body: String,
}

// --- Event data (contract v1). Unknown extra fields are tolerated: a producer may add some. ---

#[derive(Debug, Clone, Deserialize)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderItem {
    pub product_id: Uuid,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Money,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub items: Vec<OrderItem>,
    pub total: Money,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderConfirmed {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub items: Vec<OrderItem>,
    pub total: Money,
    pub tracking_number: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OrderFailed {
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub reason_code: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShipmentQuote {
    pub amount: Money,
    #[serde(default)]
    pub estimated_days: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ShipmentCreated {
    pub tracking_number: String,
    pub order_id: Uuid,
    pub user_id: Uuid,
    pub items_count: i64,
    pub country: String,
    pub quote: ShipmentQuote,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StockLow {
    pub product_id: Uuid,
    pub available: i64,
    pub threshold: i64,
}

/// An event this service turns into a message, its data parsed.
#[derive(Debug, Clone)]
pub enum Notice {
    UserRegistered(UserRegistered),
    OrderPlaced(OrderPlaced),
    OrderConfirmed(OrderConfirmed),
    OrderFailed(OrderFailed),
    ShipmentCreated(ShipmentCreated),
    StockLow(StockLow),
}

/// Why an event's data cannot be used; the event is dead-lettered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unusable {
    #[error("{kind} has data version {found}; this service understands version {understood}")]
    Version {
        kind: String,
        found: u64,
        understood: u32,
    },
    #[error("{kind} data is malformed: {reason}")]
    Malformed { kind: String, reason: String },
}

impl Notice {
    /// Reads an event: `Ok(None)` for a type this service does not handle.
    pub fn parse(event: &shop_events::Event) -> Result<Option<Self>, Unusable> {
        fn read<T: serde::de::DeserializeOwned>(
            event: &shop_events::Event,
            kind: EventType,
        ) -> Result<T, Unusable> {
            if event.version() != u64::from(kind.version) {
                return Err(Unusable::Version {
                    kind: event.kind.clone(),
                    found: event.version(),
                    understood: kind.version,
                });
            }
            event.data_as().map_err(|e| Unusable::Malformed {
                kind: event.kind.clone(),
                reason: e.to_string(),
            })
        }
        let Some(kind) = EventType::named(&event.kind) else {
            return Ok(None);
        };
        let notice = match kind {
            events::USER_REGISTERED => Self::UserRegistered(read(event, kind)?),
            events::ORDER_PLACED => Self::OrderPlaced(read(event, kind)?),
            events::ORDER_CONFIRMED => Self::OrderConfirmed(read(event, kind)?),
            events::ORDER_FAILED => Self::OrderFailed(read(event, kind)?),
            events::SHIPMENT_CREATED => Self::ShipmentCreated(read(event, kind)?),
            events::STOCK_LOW => Self::StockLow(read(event, kind)?),
            _ => return Ok(None),
        };
        notice.check().map_err(|reason| Unusable::Malformed {
            kind: event.kind.clone(),
            reason,
        })?;
        Ok(Some(notice))
    }

    /// What serde cannot say: quantities and amounts that make no sense.
    fn check(&self) -> Result<(), String> {
        let items = match self {
            Self::OrderPlaced(o) => &o.items,
            Self::OrderConfirmed(o) => &o.items,
            _ => return Ok(()),
        };
        if items.is_empty() {
            return Err("an order has at least one item".into());
        }
        if let Some(item) = items.iter().find(|i| i.quantity < 1) {
            return Err(format!(
                "item {} has quantity {}",
                item.product_id, item.quantity
            ));
        }
        Ok(())
    }

    /// The customer the message is about, if any.
    pub fn user_id(&self) -> Option<Uuid> {
        match self {
            Self::UserRegistered(e) => Some(e.user_id),
            Self::OrderPlaced(e) => Some(e.user_id),
            Self::OrderConfirmed(e) => Some(e.user_id),
            Self::OrderFailed(e) => Some(e.user_id),
            Self::ShipmentCreated(e) => Some(e.user_id),
            Self::StockLow(_) => None,
        }
    }

    /// The message for this event. `recipient` is the address book entry of the user, when it is
    /// known; without it the greeting has no name.
    pub fn render(&self, recipient: Option<&Recipient>) -> Message {
        let hello = match recipient {
            Some(r) if !r.name.trim().is_empty() => format!("Hello {},", r.name.trim()),
            _ => "Hello,".to_owned(),
        };
        let to_user = |user_id: Uuid, subject: String, text: String| Message {
            audience: Audience::User(user_id),
            channel: Channel::Email,
            subject,
            body: format!("{hello}\n\n{text}\n\nThe shop team\n"),
        };
        match self {
            Self::UserRegistered(e) => Message {
                audience: Audience::User(e.user_id),
                channel: Channel::Email,
                subject: "Welcome to the shop".to_owned(),
                body: format!(
                    "Hello {},\n\nwelcome to the shop! Your account for {} is ready: sign in to \
                     fill your cart and check out.\n\nThe shop team\n",
                    e.name.trim(),
                    e.email
                ),
            },
            Self::OrderPlaced(e) => to_user(
                e.user_id,
                format!("We received your order {}", e.order_id),
                format!(
                    "thank you for your order {}. We are reserving the items and taking the \
                     payment now; you will hear from us again in a moment.\n\n{}\nTotal: {}",
                    e.order_id,
                    item_lines(&e.items),
                    e.total
                ),
            ),
            Self::OrderConfirmed(e) => to_user(
                e.user_id,
                format!("Your order {} is confirmed", e.order_id),
                format!(
                    "good news: your order {} is confirmed and paid.\n\n{}\nTotal paid: {}\n\n\
                     Your parcel's tracking number is {}. Follow it at /api/shipments/{}.",
                    e.order_id,
                    item_lines(&e.items),
                    e.total,
                    e.tracking_number,
                    e.tracking_number
                ),
            ),
            Self::OrderFailed(e) => to_user(
                e.user_id,
                format!("Your order {} could not be completed", e.order_id),
                format!(
                    "we are sorry: your order {} could not be completed.\n\nReason: {}\n\n{}\n\n\
                     Nothing has been charged: any payment taken for it has been refunded in full, \
                     and the items are back in stock for you to try again.",
                    e.order_id,
                    e.reason.trim(),
                    failure_advice(&e.reason_code)
                ),
            ),
            Self::ShipmentCreated(e) => {
                let days = e
                    .quote
                    .estimated_days
                    .map(|d| format!(" It should arrive within {d} working days."))
                    .unwrap_or_default();
                to_user(
                    e.user_id,
                    format!("Your order {} is being shipped", e.order_id),
                    format!(
                        "the parcel for your order {} ({} {}) is ready to ship to {}.{}\n\n\
                         Tracking number: {}\nShipping: {}",
                        e.order_id,
                        e.items_count,
                        if e.items_count == 1 { "item" } else { "items" },
                        e.country,
                        days,
                        e.tracking_number,
                        e.quote.amount
                    ),
                )
            }
            Self::StockLow(e) => Message {
                audience: Audience::Admins,
                channel: Channel::Email,
                subject: format!("Low stock: product {}", e.product_id),
                body: format!(
                    "Product {} is running low: {} available, below the threshold of {}.\n\
                     Restock it with PUT /api/stock/{}.\n",
                    e.product_id, e.available, e.threshold, e.product_id
                ),
            },
        }
    }
}

fn item_lines(items: &[OrderItem]) -> String {
    items
        .iter()
        .map(|i| {
            let line_total = Money::new(
                i.unit_price.amount.saturating_mul(i.quantity),
                &i.unit_price.currency,
            );
            format!(
                "  {} × {} at {}: {}\n",
                i.quantity,
                i.name.trim(),
                i.unit_price,
                line_total
            )
        })
        .collect()
}

/// What the customer can do about a failed checkout, by the order service's reason code.
pub fn failure_advice(reason_code: &str) -> &'static str {
    match reason_code {
        "card_declined" => "Your bank declined the card. Please try another card.",
        "insufficient_funds" => {
            "The card has insufficient funds. Please try another card or a smaller order."
        }
        "invalid_card" => "The card details were not valid. Please check them and try again.",
        "out_of_stock" => {
            "Some items sold out before we could reserve them. Your cart still holds them; \
             adjust the quantities and try again."
        }
        "payment_unavailable" | "upstream_unavailable" => {
            "A part of our shop was unavailable for a moment. Please try again in a few minutes."
        }
        _ => "Please try again, or contact us if it keeps happening.",
    }
}

/// A recorded message, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Notification {
    pub id: String,
    /// The event that caused it (`order.confirmed`, ...).
    pub event_type: String,
    /// Absent for messages to the administrators.
    pub user_id: Option<String>,
    pub channel: Channel,
    /// Where it goes; absent while the user's address is not known yet.
    pub address: Option<String>,
    pub subject: String,
    pub body: String,
    pub created_at: String,
    /// `pending` (waiting to be sent, or for an address), `sent`, `skipped` (the sender is
    /// `none`) or `failed` (gave up after repeated errors).
    pub send_state: String,
    pub sent_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shop_events::Event;

    #[test]
    fn versions_and_shapes_are_checked() {
        let order = json!({"order_id": Uuid::nil(), "user_id": Uuid::nil(), "reason_code": "x", "reason": "y"});
        let ok = Event::new("order.failed", "order", 1, &order);
        assert!(matches!(
            Notice::parse(&ok),
            Ok(Some(Notice::OrderFailed(_)))
        ));
        let v2 = Event::new("order.failed", "order", 2, &order);
        assert!(matches!(
            Notice::parse(&v2),
            Err(Unusable::Version { found: 2, .. })
        ));
        let bad = Event::new("order.failed", "order", 1, json!({"order_id": "nope"}));
        assert!(matches!(
            Notice::parse(&bad),
            Err(Unusable::Malformed { .. })
        ));
        let other = Event::new("cart.touched", "cart", 7, json!({}));
        assert!(matches!(Notice::parse(&other), Ok(None)));
        let no_items = Event::new(
            "order.placed",
            "order",
            1,
            json!({"order_id": Uuid::nil(), "user_id": Uuid::nil(), "items": [], "total": {"amount": 0, "currency": "EUR"}}),
        );
        assert!(matches!(
            Notice::parse(&no_items),
            Err(Unusable::Malformed { .. })
        ));
    }

    #[test]
    fn a_failed_order_explains_itself() {
        let notice = Notice::OrderFailed(OrderFailed {
            order_id: Uuid::nil(),
            user_id: Uuid::nil(),
            reason_code: "card_declined".into(),
            reason: "the card was declined".into(),
        });
        let message = notice.render(Some(&Recipient {
            email: "ann@example.com".into(),
            name: "Ann".into(),
        }));
        assert!(message.body.starts_with("Hello Ann,"));
        assert!(message.body.contains("Reason: the card was declined"));
        assert!(message.body.contains("try another card"));
        assert!(message.subject.contains(&Uuid::nil().to_string()));
        assert!(
            notice
                .render(None)
                .body
                .starts_with("Hello,\n\nwe are sorry")
        );
    }
}
