//! Accounts and tokens: validation, password hashing, signing. No I/O here.

use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use shop_contracts::auth::{AUDIENCE, Claims, ISSUER};
use shop_kit::{ApiResult, Validator};

pub const MAX_EMAIL: usize = 254;
pub const MAX_NAME: usize = 100;
pub const MIN_PASSWORD: usize = 8;
/// argon2 accepts far longer input, but an unbounded password is a cheap way to burn CPU.
pub const MAX_PASSWORD: usize = 128;

/// Lower-cased and trimmed, so `Ann@Example.com` and `ann@example.com` are one account.
pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

pub fn validate_email(v: &mut Validator, email: &str) {
    let at = email.find('@');
    v.text("email", email, MAX_EMAIL).check(
        at.is_some_and(|i| i > 0 && i < email.len() - 1)
            && !email.contains(|c: char| c.is_whitespace() || c.is_control()),
        "email",
        "must be an email address like name@example.com",
    );
}

pub fn validate_password(v: &mut Validator, password: &str) {
    let len = password.chars().count();
    v.check(
        (MIN_PASSWORD..=MAX_PASSWORD).contains(&len),
        "password",
        format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
    );
}

pub fn validate_registration(email: &str, password: &str, name: &str) -> ApiResult<()> {
    let mut v = Validator::new();
    validate_email(&mut v, email);
    validate_password(&mut v, password);
    v.text("name", name, MAX_NAME);
    v.finish()
}

/// An Ed25519 signing key, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyMaterial {
    pub kid: String,
    /// PKCS#8 document, standard base64.
    pub pkcs8: String,
    /// Raw 32-byte public key, base64url (the JWK `x`).
    pub public_key: String,
    /// RFC 3339; when it was made (its publication), from which its signing starts.
    pub created_at: String,
}

pub fn generate_key() -> Result<KeyMaterial> {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("generating an Ed25519 key"))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|_| anyhow::anyhow!("reading a new key"))?;
    let public_key = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    Ok(KeyMaterial {
        kid: uuid::Uuid::new_v4().simple().to_string(),
        pkcs8: STANDARD.encode(pkcs8.as_ref()),
        public_key,
        created_at: shop_kit::now_rfc3339(),
    })
}

/// Signs access tokens with one key; publishes a set of keys (it and those still verifying).
pub struct Signer {
    kid: String,
    key: EncodingKey,
    jwks: serde_json::Value,
    pub access_ttl: Duration,
}

impl Signer {
    /// `signing` signs; `published` (which holds it) is the JWKS.
    pub fn new(
        signing: &KeyMaterial,
        published: &[&KeyMaterial],
        access_ttl: Duration,
    ) -> Result<Self> {
        let der = STANDARD
            .decode(&signing.pkcs8)
            .context("a stored key is not base64")?;
        let jwks = serde_json::json!({
            "keys": published.iter().map(|k| serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                "kid": k.kid, "x": k.public_key,
            })).collect::<Vec<_>>()
        });
        Ok(Self {
            kid: signing.kid.clone(),
            key: EncodingKey::from_ed_der(&der),
            jwks,
            access_ttl,
        })
    }

    /// The id of the key that signs.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    pub fn issue(&self, user_id: &str, roles: Vec<String>, now: i64) -> Result<String> {
        let claims = Claims {
            sub: user_id.to_owned(),
            roles,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).context("signing an access token")
    }
}

/// A new opaque refresh token and the hash stored for it.
pub fn new_refresh_token() -> (String, String) {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source works");
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

pub fn hash_refresh_token(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

pub fn roles_from_column(roles: &str) -> Vec<String> {
    roles
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_rejects_each_bad_field() {
        let err = validate_registration("no-at-sign", "short", "").unwrap_err();
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["email", "password", "name"]);
        assert!(validate_registration("ann@example.com", "long enough", "Ann").is_ok());
        assert!(validate_registration("ann@example.com", &"p".repeat(129), "Ann").is_err());
    }

    #[test]
    fn issued_tokens_verify_with_the_published_key() {
        let key = generate_key().unwrap();
        let signer = Signer::new(&key, &[&key], Duration::from_secs(60)).unwrap();
        let token = signer
            .issue("u1", vec!["admin".into()], unix_now())
            .unwrap();
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_value(signer.jwks().clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        let data = jsonwebtoken::decode::<Claims>(&token, &decoding, &validation).unwrap();
        assert_eq!(data.claims.sub, "u1");
        assert_eq!(data.claims.roles, ["admin"]);
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, hash_a) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(hash_refresh_token(&a), hash_a);
        assert_ne!(a, hash_a);
    }
}
