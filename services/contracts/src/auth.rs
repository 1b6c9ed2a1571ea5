//! The access-token contract between the user service (which signs) and the gateway (which verifies).

use serde::{Deserialize, Serialize};

/// Who issues access tokens, and for whom.
pub const ISSUER: &str = "shop-user";
pub const AUDIENCE: &str = "shop";
/// Tokens are Ed25519 (EdDSA) signed; the public keys are served as a JWKS at this path.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub roles: Vec<String>,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
}
