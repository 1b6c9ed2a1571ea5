//! The access-token contract between the user service (which signs) and the gateway (which
//! verifies): re-exported from `shop_contracts::auth`.

pub use shop_contracts::auth::{AUDIENCE, Claims, ISSUER, JWKS_PATH};
