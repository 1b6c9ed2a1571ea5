//! Money as an integer count of minor units (cents) and an ISO 4217 currency code: the contract's
//! type, re-exported so services keep writing `shop_kit::Money`.

pub use shop_contracts::money::{MAX_AMOUNT, Money};
