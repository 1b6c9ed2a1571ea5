//! Cart rules: quantities, totals, one currency per cart. No I/O here.

use shop_kit::{ApiResult, Money, Problem, Validator};

pub use shop_contracts::cart::MAX_QUANTITY;
pub const MAX_LINES: usize = 100;

/// The cart as this service answers it and the order service reads it at checkout.
pub use shop_contracts::cart::{Cart, CartLine};

pub fn line(product_id: String, name: String, quantity: i64, unit_price: Money) -> CartLine {
    CartLine {
        line_total: Money::new(unit_price.amount * quantity, &unit_price.currency),
        product_id,
        name,
        quantity,
        unit_price,
    }
}

pub fn validate_quantity(quantity: i64) -> ApiResult<()> {
    Validator::new()
        .check(
            (1..=MAX_QUANTITY).contains(&quantity),
            "quantity",
            format!("must be 1 to {MAX_QUANTITY}; remove the item to drop it"),
        )
        .finish()
}

/// A cart holds one currency; a product priced in another cannot join it.
pub fn check_currency(cart: &Cart, price: &Money) -> ApiResult<()> {
    match &cart.total {
        // The product is fine; the cart already holds another currency: a conflict with its state.
        Some(total) if total.currency != price.currency => Err(Problem::typed(
            axum::http::StatusCode::CONFLICT,
            "currency-mismatch",
            format!(
                "the cart is in {} and this product is priced in {}",
                total.currency, price.currency
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_in_minor_units() {
        let cart = Cart::from_lines(vec![
            line("a".into(), "A".into(), 2, Money::new(1999, "USD")),
            line("b".into(), "B".into(), 1, Money::new(1, "USD")),
        ]);
        assert_eq!(cart.total, Some(Money::new(3999, "USD")));
        assert_eq!(cart.item_count, 3);
        assert_eq!(Cart::from_lines(vec![]).total, None);
    }

    #[test]
    fn quantities_outside_the_range_are_rejected() {
        for q in [0, -1, 100, i64::MAX] {
            assert_eq!(validate_quantity(q).unwrap_err().status, 422, "{q}");
        }
        assert!(validate_quantity(1).is_ok() && validate_quantity(99).is_ok());
    }

    #[test]
    fn a_second_currency_is_refused() {
        let cart = Cart::from_lines(vec![line("a".into(), "A".into(), 1, Money::new(5, "USD"))]);
        assert!(check_currency(&cart, &Money::new(5, "EUR")).is_err());
        assert!(check_currency(&cart, &Money::new(5, "USD")).is_ok());
    }
}
