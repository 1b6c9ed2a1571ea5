//! Shipping rules: the rate table, valid requests, tracking numbers, status transitions and what a
//! tracking page shows to whom. No I/O here.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use shop_kit::{ApiResult, Money, Validator};
use utoipa::ToSchema;
use uuid::Uuid;

/// The warehouse ships from here: shipments to this country are domestic.
pub const ORIGIN_COUNTRY: &str = "DE";
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

/// The 27 member states of the European Union.
const EU: &str = "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE";

pub fn is_country(code: &str) -> bool {
    code.len() == 2 && COUNTRIES.split_whitespace().any(|c| c == code)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Zone {
    Domestic,
    Eu,
    RestOfWorld,
}

/// The zone of a valid country code.
pub fn zone(country: &str) -> Zone {
    if country == ORIGIN_COUNTRY {
        Zone::Domestic
    } else if EU.split_whitespace().any(|c| c == country) {
        Zone::Eu
    } else {
        Zone::RestOfWorld
    }
}

/// One row of the rate table, in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub base: i64,
    /// Charged for every started kilogram.
    pub per_kg: i64,
    pub estimated_days: i64,
}

pub fn rate(zone: Zone) -> Rate {
    match zone {
        Zone::Domestic => Rate {
            base: 490,
            per_kg: 100,
            estimated_days: 2,
        },
        Zone::Eu => Rate {
            base: 990,
            per_kg: 250,
            estimated_days: 5,
        },
        Zone::RestOfWorld => Rate {
            base: 1_990,
            per_kg: 600,
            estimated_days: 10,
        },
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub product_id: Uuid,
    pub quantity: i64,
    /// Weight of one unit; 500 g when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_grams: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Address {
    pub name: String,
    pub line1: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    /// ISO 3166-1 alpha-2, upper case (`DE`, `FR`, `US`).
    pub country: String,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    pub items: Vec<Item>,
    pub address: Address,
    /// ISO 4217; the table is priced in EUR, USD and GBP.
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
    pub amount: Money,
    pub service_level: ServiceLevel,
    pub estimated_days: i64,
}

/// Prices a validated request with the rate table.
pub fn quote(items: &[Item], country: &str, currency: &str) -> Quote {
    let rate = rate(zone(country));
    let started_kg = ((total_weight_grams(items) + 999) / 1_000).max(1);
    let amount = rate.base + rate.per_kg * started_kg;
    Quote {
        amount: Money::new(amount, currency),
        service_level: ServiceLevel::Standard,
        estimated_days: rate.estimated_days,
    }
}

fn total_weight_grams(items: &[Item]) -> i64 {
    items
        .iter()
        .map(|i| i.quantity * i.weight_grams.unwrap_or(DEFAULT_UNIT_WEIGHT_GRAMS))
        .sum()
}

fn validate_items(v: &mut Validator, items: &[Item]) {
    v.check(!items.is_empty(), "items", "must list at least one product")
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
        v.check(
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
        v.check(
            total_weight_grams(items) <= MAX_TOTAL_WEIGHT_GRAMS,
            "items",
            format!(
                "weigh more than {} kg together; that is freight",
                MAX_TOTAL_WEIGHT_GRAMS / 1_000
            ),
        );
    }
}

fn validate_address(v: &mut Validator, address: &Address) {
    v.text("address.name", &address.name, MAX_NAME)
        .text("address.line1", &address.line1, MAX_LINE)
        .text("address.city", &address.city, MAX_CITY)
        .text("address.postal_code", &address.postal_code, MAX_POSTAL_CODE)
        .check(
            is_country(&address.country),
            "address.country",
            "must be an ISO 3166-1 alpha-2 code in upper case, such as DE or US",
        );
    if let Some(line2) = &address.line2 {
        v.check(
            line2.chars().count() <= MAX_LINE,
            "address.line2",
            format!("must be at most {MAX_LINE} characters"),
        );
    }
}

fn validate_currency(v: &mut Validator, field: &str, currency: &str) {
    v.check(
        CURRENCIES.contains(&currency),
        field,
        format!("must be one of {}", CURRENCIES.join(", ")),
    );
}

pub fn validate_quote_request(request: &QuoteRequest) -> ApiResult<()> {
    let mut v = Validator::new();
    validate_items(&mut v, &request.items);
    validate_address(&mut v, &request.address);
    validate_currency(&mut v, "currency", &request.currency);
    v.finish()
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateShipment {
    /// The order this shipment is for; a retry with the same order id returns the same shipment.
    pub order_id: Uuid,
    /// The customer: the only one who sees the full address when tracking.
    pub user_id: Uuid,
    pub items: Vec<Item>,
    pub address: Address,
    /// The quote the order was priced with; it must be what the rate table gives now.
    pub quote: Quote,
}

pub fn validate_create(request: &CreateShipment) -> ApiResult<()> {
    let mut v = Validator::new();
    v.check(
        !request.order_id.is_nil(),
        "order_id",
        "must not be the nil UUID",
    )
    .check(
        !request.user_id.is_nil(),
        "user_id",
        "must not be the nil UUID",
    );
    validate_items(&mut v, &request.items);
    validate_address(&mut v, &request.address);
    validate_currency(
        &mut v,
        "quote.amount.currency",
        &request.quote.amount.currency,
    );
    v.finish()?;
    let expected = quote(
        &request.items,
        &request.address.country,
        &request.quote.amount.currency,
    );
    Validator::new()
        .check(
            request.quote == expected,
            "quote",
            format!(
                "does not match the rate table for these items and address: expected {} {} in {} days",
                expected.amount.amount, expected.amount.currency, expected.estimated_days
            ),
        )
        .finish()
}

/// The request as stored: items in product-id order, so a retry listing them in another order is
/// still the same request.
pub fn normalised(request: &CreateShipment) -> CreateShipment {
    let mut request = request.clone();
    request.items.sort_by_key(|i| i.product_id);
    request
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

    /// The statuses a shipment may move to from this one. A parcel in the carrier's hands can no
    /// longer be cancelled, only returned; `returned` and `cancelled` are final.
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

#[derive(Debug, Clone, Deserialize, ToSchema)]
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

/// The delivery address on the tracking page: the recipient's name and street only for the
/// shipment's own customer (and admins); anyone else with the tracking number sees where it goes
/// to the postal code, as on a carrier's tracking page.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct TrackedAddress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
    /// False when name and street were left out for this caller.
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Tracking {
    pub tracking_number: String,
    pub status: ShipmentStatus,
    pub items_count: i64,
    pub estimated_days: i64,
    pub address: TrackedAddress,
    pub history: Vec<HistoryEntry>,
}

/// Who is looking at a tracking page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Anonymous,
    Owner,
    Admin,
    Other,
}

pub fn tracking(shipment: &Shipment, viewer: Viewer) -> Tracking {
    let full = matches!(viewer, Viewer::Owner | Viewer::Admin);
    let a = &shipment.address;
    Tracking {
        tracking_number: shipment.tracking_number.clone(),
        status: shipment.status,
        items_count: shipment.items_count,
        estimated_days: shipment.quote.estimated_days,
        address: TrackedAddress {
            name: full.then(|| a.name.clone()),
            line1: full.then(|| a.line1.clone()),
            line2: if full { a.line2.clone() } else { None },
            city: a.city.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.clone(),
            complete: full,
        },
        history: shipment.history.clone(),
    }
}

/// RFC 4648 base32: upper-case letters and 2-7, nothing easily misread as another symbol's twin
/// (no 0/1/8/9).
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Random bytes in a tracking number: 80 bits, so guessing one of even a billion shipments takes
/// about 10^15 tries.
pub const TRACKING_RANDOM_BYTES: usize = 10;
const TRACKING_PREFIX: &str = "SHP-";

/// `SHP-XXXX-XXXX-XXXX-XXXX`: 10 random bytes in base32, grouped by four for reading aloud.
pub fn tracking_number(random: [u8; TRACKING_RANDOM_BYTES]) -> String {
    // 80 bits are exactly 16 base32 digits.
    let bits = random
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let digits: Vec<char> = (0..16)
        .rev()
        .map(|i| BASE32[((bits >> (i * 5)) & 31) as usize] as char)
        .collect();
    let groups: Vec<String> = digits.chunks(4).map(|c| c.iter().collect()).collect();
    format!("{TRACKING_PREFIX}{}", groups.join("-"))
}

/// Whether `text` has the shape of a tracking number (before looking it up).
pub fn is_tracking_number(text: &str) -> bool {
    let Some(rest) = text.strip_prefix(TRACKING_PREFIX) else {
        return false;
    };
    rest.len() == 19
        && rest.split('-').count() == 4
        && rest
            .split('-')
            .all(|g| g.len() == 4 && g.bytes().all(|b| BASE32.contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(quantity: i64, weight_grams: Option<i64>) -> Item {
        Item {
            product_id: Uuid::now_v7(),
            quantity,
            weight_grams,
        }
    }

    fn address(country: &str) -> Address {
        Address {
            name: "Ada Lovelace".into(),
            line1: "1 Analytical Way".into(),
            line2: None,
            city: "Berlin".into(),
            postal_code: "10115".into(),
            country: country.into(),
        }
    }

    fn amount(items: &[Item], country: &str) -> i64 {
        quote(items, country, "EUR").amount.amount
    }

    #[test]
    fn the_country_list_is_complete_and_the_zones_are_right() {
        assert_eq!(COUNTRIES.split_whitespace().count(), 249);
        assert_eq!(EU.split_whitespace().count(), 27);
        assert!(EU.split_whitespace().all(is_country));
        assert!(is_country("US") && is_country("DE") && is_country("AX"));
        assert!(!is_country("XX") && !is_country("de") && !is_country("DEU") && !is_country(""));
        assert_eq!(zone("DE"), Zone::Domestic);
        assert_eq!(zone("FR"), Zone::Eu);
        assert_eq!(zone("SE"), Zone::Eu);
        assert_eq!(zone("CH"), Zone::RestOfWorld, "not in the EU");
        assert_eq!(zone("GB"), Zone::RestOfWorld, "no longer in the EU");
        assert_eq!(zone("US"), Zone::RestOfWorld);
    }

    #[test]
    fn the_rate_table_prices_each_zone_by_started_kilogram() {
        // 2 units of 500 g (the default) = 1 kg: base + 1 kg.
        let one_kg = [item(2, None)];
        assert_eq!(amount(&one_kg, "DE"), 490 + 100);
        assert_eq!(amount(&one_kg, "FR"), 990 + 250);
        assert_eq!(amount(&one_kg, "US"), 1_990 + 600);
        // 1001 g starts a second kilogram.
        let just_over = [item(1, Some(1_001))];
        assert_eq!(amount(&just_over, "DE"), 490 + 2 * 100);
        // A light parcel still pays one kilogram.
        assert_eq!(amount(&[item(1, Some(1))], "US"), 1_990 + 600);
        // Weights add up over items.
        let mixed = [item(3, Some(2_000)), item(1, Some(500))];
        assert_eq!(amount(&mixed, "IT"), 990 + 7 * 250);
        let q = quote(&mixed, "JP", "USD");
        assert_eq!(q.amount, Money::new(1_990 + 7 * 600, "USD"));
        assert_eq!(q.estimated_days, 10);
        assert_eq!(q.service_level, ServiceLevel::Standard);
        assert_eq!(quote(&mixed, "DE", "EUR").estimated_days, 2);
        assert_eq!(quote(&mixed, "AT", "EUR").estimated_days, 5);
    }

    #[test]
    fn quotes_are_deterministic() {
        let items = [item(4, Some(750)), item(1, None)];
        let first = quote(&items, "NL", "GBP");
        for _ in 0..100 {
            assert_eq!(quote(&items, "NL", "GBP"), first);
        }
    }

    #[test]
    fn bad_requests_name_the_field() {
        let fields = |r: &QuoteRequest| {
            validate_quote_request(r)
                .unwrap_err()
                .errors
                .into_iter()
                .map(|e| e.field)
                .collect::<Vec<_>>()
        };
        let request = |items: Vec<Item>, address: Address, currency: &str| QuoteRequest {
            items,
            address,
            currency: currency.into(),
        };
        assert!(
            validate_quote_request(&request(vec![item(1, None)], address("DE"), "EUR")).is_ok()
        );
        assert_eq!(fields(&request(vec![], address("DE"), "EUR")), ["items"]);
        assert_eq!(
            fields(&request(vec![item(0, None)], address("DE"), "EUR")),
            ["items[0].quantity"]
        );
        assert_eq!(
            fields(&request(vec![item(1, Some(0))], address("DE"), "EUR")),
            ["items[0].weight_grams"]
        );
        assert_eq!(
            fields(&request(
                vec![item(1_000, Some(100_000))],
                address("DE"),
                "EUR"
            )),
            ["items"],
            "100 t is freight"
        );
        assert_eq!(
            fields(&request(vec![item(1, None)], address("XX"), "EUR")),
            ["address.country"]
        );
        assert_eq!(
            fields(&request(vec![item(1, None)], address("DE"), "JPY")),
            ["currency"]
        );
        let mut blank = address("DE");
        blank.city = "  ".into();
        blank.line2 = Some("x".repeat(MAX_LINE + 1));
        assert_eq!(
            fields(&request(vec![item(1, None)], blank, "EUR")),
            ["address.city", "address.line2"]
        );
    }

    #[test]
    fn a_shipment_must_carry_the_tables_quote() {
        let items = vec![item(2, None)];
        let mut request = CreateShipment {
            order_id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            items: items.clone(),
            address: address("FR"),
            quote: quote(&items, "FR", "EUR"),
        };
        assert!(validate_create(&request).is_ok());
        request.quote.amount.amount -= 1;
        let err = validate_create(&request).unwrap_err();
        assert_eq!(err.errors[0].field, "quote");
    }

    #[test]
    fn transitions_follow_the_table() {
        use ShipmentStatus::*;
        let path = [LabelCreated, InTransit, OutForDelivery, Delivered];
        for pair in path.windows(2) {
            assert!(pair[0].may_become(pair[1]), "{pair:?}");
            assert!(!pair[1].may_become(pair[0]) || pair[1] == OutForDelivery);
        }
        assert!(LabelCreated.may_become(Cancelled));
        assert!(!InTransit.may_become(Cancelled), "the carrier has it");
        assert!(Delivered.may_become(Returned));
        assert!(!LabelCreated.may_become(Delivered), "no skipping");
        for end in [Returned, Cancelled] {
            assert!(ShipmentStatus::ALL.iter().all(|s| !end.may_become(*s)));
        }
        for s in ShipmentStatus::ALL {
            assert_eq!(ShipmentStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn tracking_numbers_are_readable_and_recognised() {
        let number = tracking_number([0; TRACKING_RANDOM_BYTES]);
        assert_eq!(number, "SHP-AAAA-AAAA-AAAA-AAAA");
        let number = tracking_number([0xff; TRACKING_RANDOM_BYTES]);
        assert_eq!(number, "SHP-7777-7777-7777-7777");
        let number = tracking_number([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert!(is_tracking_number(&number), "{number}");
        for bad in [
            "",
            "SHP-",
            "SHP-AAAA-AAAA-AAAA-AAA",
            "SHP-AAAA-AAAA-AAAA-AAAAA",
            "SHP-aaaa-AAAA-AAAA-AAAA",
            "SHP-AAA1-AAAA-AAAA-AAAA",
            "XYZ-AAAA-AAAA-AAAA-AAAA",
            "SHP-AAAAA-AAA-AAAA-AAAA",
        ] {
            assert!(!is_tracking_number(bad), "{bad}");
        }
    }

    #[test]
    fn only_the_owner_and_admins_see_name_and_street() {
        let items = vec![item(3, None)];
        let mut addr = address("DE");
        addr.line2 = Some("Hinterhaus".into());
        let shipment = Shipment {
            tracking_number: tracking_number([7; TRACKING_RANDOM_BYTES]),
            order_id: Uuid::now_v7().to_string(),
            user_id: Uuid::now_v7().to_string(),
            status: ShipmentStatus::LabelCreated,
            items_count: 3,
            quote: quote(&items, "DE", "EUR"),
            items,
            address: addr,
            history: vec![],
            created_at: shop_kit::now_rfc3339(),
        };
        for viewer in [Viewer::Owner, Viewer::Admin] {
            let t = tracking(&shipment, viewer);
            assert_eq!(t.address.line1.as_deref(), Some("1 Analytical Way"));
            assert_eq!(t.address.line2.as_deref(), Some("Hinterhaus"));
            assert!(t.address.complete);
        }
        for viewer in [Viewer::Anonymous, Viewer::Other] {
            let t = tracking(&shipment, viewer);
            assert_eq!(
                (t.address.name, t.address.line1, t.address.line2),
                (None, None, None)
            );
            assert_eq!(t.address.postal_code, "10115");
            assert!(!t.address.complete);
            assert_eq!(t.items_count, 3);
        }
    }
}
