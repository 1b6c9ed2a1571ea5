//! Verifying access tokens with the user service's public keys, fetched from its JWKS and cached.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use shop_kit::auth::{AUDIENCE, Claims, ISSUER, JWKS_PATH};
use shop_kit::{Problem, Upstream};

/// Seconds past `exp` a token is still accepted (clock skew between the user service and here).
const LEEWAY_SECONDS: u64 = 5;

/// Unknown key ids trigger a refetch at most this often, so garbage tokens cannot hammer the
/// user service.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Tokens remembered as verified. A client sends the same token with every request until it
/// expires, and an Ed25519 verification was the gateway's largest single cost (about a quarter
/// of its CPU under `shop bench`). Full, the map is emptied: bounded memory (~1 MiB), and the
/// next requests verify again.
const VERIFIED_CAPACITY: usize = 4096;

pub struct KeyCache {
    user: Upstream,
    keys: RwLock<HashMap<String, DecodingKey>>,
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    validation: Validation,
    /// SHA-256 of a token → its claims, for tokens whose signature, issuer and audience were
    /// checked. Keyed by a cryptographic hash so no other token can stand in for one; expiry is
    /// checked on every use; emptied whenever the key set is refetched (a key withdrawn from
    /// the JWKS stops its tokens at once).
    verified: std::sync::Mutex<HashMap<[u8; 32], Claims>>,
}

impl KeyCache {
    pub fn new(user: Upstream) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.leeway = LEEWAY_SECONDS;
        Self {
            user,
            keys: RwLock::new(HashMap::new()),
            last_fetch: tokio::sync::Mutex::new(None),
            validation,
            verified: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.read().expect("key cache lock").get(kid).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.read().expect("key cache lock").is_empty()
    }

    /// Fetches the JWKS now, replacing the cached keys.
    pub async fn refresh(&self) -> Result<usize, shop_kit::UpstreamError> {
        let set: JwkSet = self.user.get_json(JWKS_PATH).await?;
        let keys: HashMap<_, _> = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
            .collect();
        let count = keys.len();
        *self.keys.write().expect("key cache lock") = keys;
        self.verified.lock().expect("verified tokens lock").clear();
        Ok(count)
    }

    /// Refetches unless another caller did so recently; concurrent callers wait for one fetch.
    async fn refresh_for_unknown_key(&self) -> Result<(), Problem> {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|at| at.elapsed() < MIN_REFETCH_INTERVAL) && !self.is_empty() {
            return Ok(());
        }
        *last = Some(Instant::now());
        match self.refresh().await {
            Ok(count) => {
                tracing::info!(keys = count, "refreshed token keys");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not fetch token keys");
                if self.is_empty() {
                    Err(Problem::unavailable(
                        "sign-in cannot be checked right now; try again shortly",
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Checks a bearer token's signature, issuer, audience and expiry.
    pub async fn verify(&self, token: &str) -> Result<Claims, Problem> {
        let digest: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        let remembered = self
            .verified
            .lock()
            .expect("verified tokens lock")
            .get(&digest)
            .cloned();
        if let Some(claims) = remembered {
            // The same expiry rule as the full check: `exp` plus the validation's leeway.
            if jsonwebtoken::get_current_timestamp()
                <= (claims.exp.max(0) as u64).saturating_add(LEEWAY_SECONDS)
            {
                return Ok(claims);
            }
            self.verified
                .lock()
                .expect("verified tokens lock")
                .remove(&digest);
        }
        let claims = self.verify_signature(token).await?;
        let mut verified = self.verified.lock().expect("verified tokens lock");
        if verified.len() >= VERIFIED_CAPACITY {
            verified.clear();
        }
        verified.insert(digest, claims.clone());
        Ok(claims)
    }

    async fn verify_signature(&self, token: &str) -> Result<Claims, Problem> {
        let invalid = |why: &str| Problem::unauthorized(format!("the access token is {why}"));
        let header = decode_header(token).map_err(|_| invalid("malformed"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(invalid("signed with an unsupported algorithm"));
        }
        let kid = header.kid.ok_or_else(|| invalid("missing its key id"))?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.refresh_for_unknown_key().await?;
                self.key(&kid)
                    .ok_or_else(|| invalid("signed by an unknown key"))?
            }
        };
        decode::<Claims>(token, &key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => invalid("expired; refresh it"),
                _ => invalid("invalid"),
            })
    }
}
