//! The contracts between the shop's processes: every type and rule that crosses a process
//! boundary, written once and read by both sides.
//!
//! - [`inventory`], [`payment`], [`shipping`]: the internal API bodies and answers the order
//!   service's checkout saga sends and reads, with the pure rules both sides run (card checks,
//!   quote request rules).
//! - [`catalog`], [`cart`]: the product and the cart as other services read them.
//! - [`money`], [`rules`], [`ids`]: amounts in minor units; field errors as plain data; typed ids.
//! - [`auth`]: the access-token claims the user service signs and the gateway verifies.
//! - [`identity`]: who may call which internal API, and the header the caller's token is in.
//! - [`events`]: event type names and data versions, for producers and consumers alike.
//! - [`services`], [`env`]: the bundled services' names and the environment variables the
//!   operator (and `shop up`) sets for them.
//! - [`seed`]: the seed catalogue's keys and ids, shared by catalog and inventory.
//! - [`test_cards`]: the card numbers the simulated processor answers specially.
//!
//! A leaf crate (serde, utoipa, uuid, time): no web framework, database or kit, so the operator
//! can depend on it as well as every service.

pub mod auth;
pub mod cart;
pub mod catalog;
pub mod env;
pub mod events;
pub mod identity;
pub mod ids;
pub mod inventory;
pub mod money;
pub mod payment;
pub mod rules;
pub mod seed;
pub mod services;
pub mod shipping;
pub mod test_cards;

pub use ids::{OrderId, ProductId, UserId};
pub use money::Money;
pub use rules::{Checks, FieldError};
pub use services::ServiceName;
