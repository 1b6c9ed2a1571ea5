//! The shipping service's internal API, as the order service's checkout saga calls it:
//! `POST /internal/quotes` prices a parcel, `POST /internal/shipments` creates the order's
//! shipment; and the quote request rules both sides run (the order checks the shipping address
//! before anything is reserved). Not routed by the gateway. The rate table itself is shipping's.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ids::{OrderId, ProductId, UserId};
use crate::money::Money;
use crate::rules::Checks;

pub const QUOTES_PATH: &str = "/internal/quotes";
pub const SHIPMENTS_PATH: &str = "/internal/shipments";

/// Currencies the rate table is priced in. The table uses the same minor-unit numbers in each
/// (a simplification until rates come from a carrier).
pub const CURRENCIES: [&str; 3] = ["EUR", "USD", "GBP"];
/// Most different products in one shipment.
pub const MAX_ITEMS: usize = 100;
/// Most units of one product in one shipment.
pub const MAX_QUANTITY: i64 = 1_000;
/// Heaviest unit the table accepts (100 kg).
pub const MAX_UNIT_WEIGHT_GRAMS: i64 = 100_000;
/// Heaviest parcel the table prices (1 t); beyond that it is freight, not shipping.
pub const MAX_TOTAL_WEIGHT_GRAMS: i64 = 1_000_000;
/// The weight a unit counts with when the caller does not know it.
pub const DEFAULT_UNIT_WEIGHT_GRAMS: i64 = 500;
pub const MAX_NAME: usize = 100;
pub const MAX_LINE: usize = 200;
pub const MAX_CITY: usize = 100;
pub const MAX_POSTAL_CODE: usize = 20;

/// Every ISO 3166-1 alpha-2 code (officially assigned; 249).
const COUNTRIES: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ \
    BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
    CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ \
    DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR \
    GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY \
    HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP \
    KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY \
    MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ \
    NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA \
    RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ \
    TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ \
    VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

pub fn is_country(code: &str) -> bool {
    code.len() == 2 && COUNTRIES.split_whitespace().any(|c| c == code)
}

/// The schema of a country: one of [`COUNTRIES`], from the same list the rule checks.
pub fn country_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .description(Some("ISO 3166-1 alpha-2, upper case (`DE`, `FR`, `US`)."))
        .enum_values(Some(COUNTRIES.split_whitespace()))
        .build()
}

/// The schema of a quote's amount: in one of the rate table's [`CURRENCIES`].
pub fn quote_amount_schema() -> utoipa::openapi::Object {
    crate::money::money_schema(0, Some(&CURRENCIES))
}

/// The schema of a rate table currency: one of [`CURRENCIES`].
pub fn currency_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .description(Some("ISO 4217; the rate table is priced in these."))
        .enum_values(Some(CURRENCIES))
        .build()
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub product_id: ProductId,
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(deserialize_with = "crate::rules::integer")]
    pub quantity: i64,
    /// Weight of one unit; 500 g when absent. The parcel weighs at most 1,000 kg in all.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::rules::optional_integer"
    )]
    #[schema(minimum = 1, maximum = 100_000)]
    pub weight_grams: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Address {
    #[schema(max_length = 100, pattern = r"[^\s\x00-\x1f\x7f-\x9f]")]
    pub name: String,
    #[schema(max_length = 200, pattern = r"[^\s\x00-\x1f\x7f-\x9f]")]
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub line2: Option<String>,
    #[schema(max_length = 100, pattern = r"[^\s\x00-\x1f\x7f-\x9f]")]
    pub city: String,
    #[schema(max_length = 20, pattern = r"[^\s\x00-\x1f\x7f-\x9f]")]
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case (`DE`, `FR`, `US`).
    #[schema(schema_with = country_schema)]
    pub country: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    /// Each product once, with its total quantity.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<Item>,
    pub address: Address,
    /// ISO 4217; the table is priced in EUR, USD and GBP.
    #[schema(schema_with = currency_schema)]
    pub currency: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceLevel {
    Standard,
}

/// The price of shipping these items to this address. Quotes are not stored: the table is a pure
/// function, so the same request always gets the same quote, and a shipment's quote is checked by
/// computing it again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Quote {
    #[schema(schema_with = quote_amount_schema)]
    pub amount: Money,
    pub service_level: ServiceLevel,
    #[serde(deserialize_with = "crate::rules::integer")]
    pub estimated_days: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateShipment {
    /// The order this shipment is for; a retry with the same order id returns the same shipment.
    pub order_id: OrderId,
    /// The customer: the only one who sees the full address when tracking.
    pub user_id: UserId,
    /// Each product once, with its total quantity.
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<Item>,
    pub address: Address,
    /// The quote the order was priced with; it must be what the rate table gives now.
    pub quote: Quote,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    LabelCreated,
    InTransit,
    OutForDelivery,
    Delivered,
    /// Sent back to the warehouse (refused, undeliverable, or returned by the customer).
    Returned,
    /// Cancelled before the carrier picked it up.
    Cancelled,
}

impl ShipmentStatus {
    pub const ALL: [Self; 6] = [
        Self::LabelCreated,
        Self::InTransit,
        Self::OutForDelivery,
        Self::Delivered,
        Self::Returned,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::LabelCreated => "label_created",
            Self::InTransit => "in_transit",
            Self::OutForDelivery => "out_for_delivery",
            Self::Delivered => "delivered",
            Self::Returned => "returned",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The statuses a shipment may move to from this one (`POST …/events` answers `409` to any
    /// other). A parcel in the carrier's hands can no longer be cancelled, only returned;
    /// `returned` and `cancelled` are final.
    pub fn next(self) -> &'static [Self] {
        use ShipmentStatus::*;
        match self {
            LabelCreated => &[InTransit, Cancelled],
            InTransit => &[OutForDelivery, Returned],
            // A failed delivery attempt goes back to the depot.
            OutForDelivery => &[Delivered, InTransit, Returned],
            Delivered => &[Returned],
            Returned | Cancelled => &[],
        }
    }

    pub fn may_become(self, next: Self) -> bool {
        self.next().contains(&next)
    }
}

/// `POST /internal/shipments/{tracking_number}/events`: the carrier moved the parcel.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusEvent {
    pub status: ShipmentStatus,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct HistoryEntry {
    pub status: ShipmentStatus,
    pub at: String,
}

/// A shipment as the order service sees it (everything).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Shipment {
    pub tracking_number: String,
    pub order_id: String,
    pub user_id: String,
    pub status: ShipmentStatus,
    /// Units in the parcel.
    pub items_count: i64,
    pub items: Vec<Item>,
    pub address: Address,
    pub quote: Quote,
    /// Oldest first; the first entry is `label_created`.
    pub history: Vec<HistoryEntry>,
    pub created_at: String,
}

/// The parcel's weight, each unit at its own weight or the default.
pub fn total_weight_grams(items: &[Item]) -> i64 {
    items
        .iter()
        .map(|i| i.quantity * i.weight_grams.unwrap_or(DEFAULT_UNIT_WEIGHT_GRAMS))
        .sum()
}

/// The parcel's rules: one to [`MAX_ITEMS`] different products, sane quantities and weights, not
/// freight.
pub fn check_items(checks: &mut Checks, items: &[Item]) {
    checks
        .check(!items.is_empty(), "items", "must list at least one product")
        .check(
            items.len() <= MAX_ITEMS,
            "items",
            format!("must list at most {MAX_ITEMS} products"),
        );
    let mut seen = HashSet::new();
    let mut all_valid = true;
    for (i, item) in items.iter().enumerate() {
        let quantity_ok = (1..=MAX_QUANTITY).contains(&item.quantity);
        let weight_ok = item
            .weight_grams
            .is_none_or(|w| (1..=MAX_UNIT_WEIGHT_GRAMS).contains(&w));
        all_valid &= quantity_ok && weight_ok;
        checks
            .check(
                quantity_ok,
                &format!("items[{i}].quantity"),
                format!("must be 1 to {MAX_QUANTITY}"),
            )
            .check(
                weight_ok,
                &format!("items[{i}].weight_grams"),
                format!("must be 1 to {MAX_UNIT_WEIGHT_GRAMS}"),
            )
            .check(
                seen.insert(item.product_id),
                &format!("items[{i}].product_id"),
                "appears more than once; list each product once with its total quantity",
            );
    }
    // Only summed when every term is in range, so the sum cannot overflow.
    if all_valid && items.len() <= MAX_ITEMS {
        checks.check(
            total_weight_grams(items) <= MAX_TOTAL_WEIGHT_GRAMS,
            "items",
            format!(
                "weigh more than {} kg together; that is freight",
                MAX_TOTAL_WEIGHT_GRAMS / 1_000
            ),
        );
    }
}

/// The delivery address's rules, its errors named `{field}.name`, `{field}.country`, ….
pub fn check_address(checks: &mut Checks, address: &Address, field: &str) {
    checks
        .text(&format!("{field}.name"), &address.name, MAX_NAME)
        .text(&format!("{field}.line1"), &address.line1, MAX_LINE)
        .text(&format!("{field}.city"), &address.city, MAX_CITY)
        .text(
            &format!("{field}.postal_code"),
            &address.postal_code,
            MAX_POSTAL_CODE,
        )
        .check(
            is_country(&address.country),
            &format!("{field}.country"),
            "must be an ISO 3166-1 alpha-2 code in upper case, such as DE or US",
        );
    if let Some(line2) = &address.line2 {
        checks.check(
            line2.chars().count() <= MAX_LINE,
            &format!("{field}.line2"),
            format!("must be at most {MAX_LINE} characters"),
        );
    }
}

/// One of the table's [`CURRENCIES`].
pub fn check_currency(checks: &mut Checks, field: &str, currency: &str) {
    checks.check(
        CURRENCIES.contains(&currency),
        field,
        format!("must be one of {}", CURRENCIES.join(", ")),
    );
}

/// Every rule of a quote request.
pub fn check_quote_request(checks: &mut Checks, request: &QuoteRequest) {
    check_items(checks, &request.items);
    check_address(checks, &request.address, "address");
    check_currency(checks, "currency", &request.currency);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_country_list_is_complete() {
        assert_eq!(COUNTRIES.split_whitespace().count(), 249);
        assert!(is_country("US") && is_country("DE") && is_country("AX"));
        assert!(!is_country("XX") && !is_country("de") && !is_country("DEU") && !is_country(""));
    }

    #[test]
    fn address_errors_are_named_under_the_given_field() {
        let mut checks = Checks::new();
        let address = Address {
            name: "Ann".into(),
            line1: "Main St 1".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: "Germany".into(),
        };
        check_address(&mut checks, &address, "shipping_address");
        let fields: Vec<_> = checks.take().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["shipping_address.country"]);
    }
}
