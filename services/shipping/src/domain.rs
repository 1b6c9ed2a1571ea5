//! Shipping rules: the rate table, valid requests, tracking numbers, status transitions and what a
//! tracking page shows to whom. No I/O here.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shop_kit::{ApiResult, Money, Problem, Validator};
use utoipa::ToSchema;

/// The internal API's bodies and answers and the quote request rules are the contracts' (the
/// order service sends the same types and checks addresses with the same rules).
pub use shop_contracts::shipping::{
    Address, CURRENCIES, CreateShipment, HistoryEntry, Item, MAX_ITEMS, MAX_LINE, MAX_QUANTITY,
    Quote, QuoteRequest, ServiceLevel, Shipment, ShipmentStatus, StatusEvent, check_address,
    check_currency, check_items, is_country, total_weight_grams,
};

/// The warehouse ships from here: shipments to this country are domestic.
pub const ORIGIN_COUNTRY: &str = "DE";
/// The 27 member states of the European Union.
const EU: &str = "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE";

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

pub fn validate_quote_request(request: &QuoteRequest) -> ApiResult<()> {
    let mut v = Validator::new();
    shop_contracts::shipping::check_quote_request(&mut v, request);
    v.finish()
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
    check_items(&mut v, &request.items);
    check_address(&mut v, &request.address, "address");
    check_currency(
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
    if request.quote != expected {
        // The rate table's answer for these items and address is another now: a conflict with
        // the table's current state (quote again), not a malformed request.
        let detail = format!(
            "does not match the rate table for these items and address: expected {} {} in {} days",
            expected.amount.amount, expected.amount.currency, expected.estimated_days
        );
        return Err(Problem::typed(
            StatusCode::CONFLICT,
            "quote-mismatch",
            format!("the quote {detail}; quote again"),
        )
        .with_errors(vec![shop_kit::FieldError {
            field: "quote".into(),
            message: detail,
        }]));
    }
    Ok(())
}

/// The request as stored: items in product-id order, so a retry listing them in another order is
/// still the same request.
pub fn normalised(request: &CreateShipment) -> CreateShipment {
    let mut request = request.clone();
    request.items.sort_by_key(|i| i.product_id);
    request
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
    use uuid::Uuid;

    fn item(quantity: i64, weight_grams: Option<i64>) -> Item {
        Item {
            product_id: Uuid::now_v7().into(),
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
    fn the_eu_list_is_complete_and_the_zones_are_right() {
        // The country list itself is the contracts' (tested there).
        assert_eq!(EU.split_whitespace().count(), 27);
        assert!(EU.split_whitespace().all(is_country));
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
            order_id: Uuid::now_v7().into(),
            user_id: Uuid::now_v7().into(),
            items: items.clone(),
            address: address("FR"),
            quote: quote(&items, "FR", "EUR"),
        };
        assert!(validate_create(&request).is_ok());
        request.quote.amount.amount -= 1;
        let err = validate_create(&request).unwrap_err();
        assert_eq!((err.status, err.errors[0].field.as_str()), (409, "quote"));
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
