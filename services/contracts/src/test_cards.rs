//! The card numbers the payment service's simulated processor answers specially, as card
//! processors' test modes do. Every other Luhn-valid number succeeds like [`SUCCEEDS`].

/// Charged successfully.
pub const SUCCEEDS: &str = "4242424242424242";
/// Declined: `402` with code `card_declined`.
pub const DECLINED: &str = "4000000000000002";
/// Insufficient funds: `402` with code `insufficient_funds`.
pub const INSUFFICIENT_FUNDS: &str = "4000000000009995";
