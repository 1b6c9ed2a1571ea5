//! Service identity on the internal APIs. A caller sends, in the header
//! `shop_contracts::identity::HEADER`, a token it minted for the one service it calls:
//! `v1:<caller>:<audience>:<expires>:<signature>`, the signature an HMAC-SHA256 of the rest
//! with the installation's key (`SHOP_SERVICE_KEY`, which the operator keeps in a Secret per
//! namespace and `shop up` generates at start). The receiver checks the signature, that the
//! token is for it and not expired, and that the caller may call the path
//! (`shop_contracts::identity::callers`). Tokens live a minute and are reused for most of it,
//! so a call costs one HMAC on each side. Why a shared key and not mutual TLS or a key pair per
//! service: docs/decisions.md ("Service identity on the internal APIs").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use shop_contracts::ServiceName;
use shop_contracts::identity::{Callers, HEADER, INTERNAL_PREFIX, callers};

use crate::problem::Problem;

/// How long a minted token is valid.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// A cached token is minted again when less than this is left of it.
const REMINT_BEFORE_EXPIRY: Duration = Duration::from_secs(20);
/// Clocks of two machines may disagree by this much.
const CLOCK_SKEW: Duration = Duration::from_secs(30);
/// The shortest key accepted: HMAC-SHA256's output size.
pub const MIN_KEY_BYTES: usize = 32;
const VERSION: &str = "v1";

/// The installation's key. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct ServiceKey(Arc<hmac::Key>);

impl std::fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceKey(redacted)")
    }
}

impl ServiceKey {
    /// The key in `SHOP_SERVICE_KEY` (base64 of at least 32 bytes). Without it, a key of this
    /// process's own: the service still runs, but nothing else can call its internal API, and
    /// its own internal calls are refused (a warning says so).
    pub fn from_env() -> Result<Self> {
        let var = shop_contracts::env::SERVICE_KEY;
        match std::env::var(var) {
            Ok(value) if !value.trim().is_empty() => {
                Self::decode(value.trim()).with_context(|| format!("{var} is not valid"))
            }
            _ => {
                tracing::warn!(
                    "{var} is not set: a key of this process's own signs and checks internal calls, so no other service can call this one's /internal/ API nor be called by it"
                );
                Self::decode(&Self::generate())
            }
        }
    }

    /// A key from its environment form, base64 (standard alphabet, padded or not).
    pub fn decode(encoded: &str) -> Result<Self> {
        let bytes = STANDARD
            .decode(encoded)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
            .context("not base64")?;
        if bytes.len() < MIN_KEY_BYTES {
            bail!(
                "{} bytes, fewer than the {MIN_KEY_BYTES} needed",
                bytes.len()
            );
        }
        Ok(Self::from_bytes(&bytes))
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// A new random key in its environment form: what `shop up` and the operator generate.
    pub fn generate() -> String {
        let mut bytes = [0u8; MIN_KEY_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .expect("the operating system's random number generator works");
        STANDARD.encode(bytes)
    }

    fn sign(&self, message: &str) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.0, message.as_bytes()))
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// A token of `caller` for `audience`, valid until `expires` (seconds since the epoch).
pub fn mint(key: &ServiceKey, caller: &str, audience: &str, expires: u64) -> String {
    let claims = format!("{VERSION}:{caller}:{audience}:{expires}");
    let signature = key.sign(&claims);
    format!("{claims}:{signature}")
}

/// Why a token was refused. Its text never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no service credential: internal APIs need a caller's token in the {HEADER} header")]
    Missing,
    #[error("the service credential is not a token of this installation")]
    Invalid,
    #[error("the service credential has expired")]
    Expired,
    #[error("the service credential was made for the {audience} service, not this one")]
    OtherAudience { audience: String },
    #[error("the {caller} service may not call {path}")]
    NotAllowed { caller: String, path: String },
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::NotAllowed { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Refusal::NotAllowed { .. } => "caller-not-allowed",
            _ => "service-credential-invalid",
        }
    }
}

/// The caller named by `token`, if it is a token of `key` for `audience` that is valid at
/// `now` (seconds since the epoch).
pub fn verify(key: &ServiceKey, token: &str, audience: &str, now: u64) -> Result<String, Refusal> {
    let (claims, signature) = token.rsplit_once(':').ok_or(Refusal::Invalid)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| Refusal::Invalid)?;
    // Constant time, before anything else is believed.
    hmac::verify(&key.0, claims.as_bytes(), &signature).map_err(|_| Refusal::Invalid)?;
    let mut parts = claims.split(':');
    let (Some(VERSION), Some(caller), Some(token_audience), Some(expires), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(Refusal::Invalid);
    };
    let expires: u64 = expires.parse().map_err(|_| Refusal::Invalid)?;
    if expires.saturating_add(CLOCK_SKEW.as_secs()) < now {
        return Err(Refusal::Expired);
    }
    // A member of the installation could mint a token for ever; one that lives longer than
    // any this code mints is refused.
    if expires > now + (TOKEN_LIFETIME + CLOCK_SKEW).as_secs() {
        return Err(Refusal::Invalid);
    }
    if token_audience != audience {
        return Err(Refusal::OtherAudience {
            audience: token_audience.to_owned(),
        });
    }
    Ok(caller.to_owned())
}

/// Whether `caller` may call `path` of `receiver`.
pub fn allowed(receiver: &str, path: &str, caller: &str) -> bool {
    match callers(receiver, path) {
        Callers::AnyHolder => true,
        Callers::Only(names) => ServiceName::parse(caller).is_some_and(|c| names.contains(&c)),
    }
}

/// A service as a caller of others' internal APIs: its name and the installation's key, and
/// the tokens it minted, reused while they have time left. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Identity {
    name: Arc<str>,
    key: ServiceKey,
    tokens: Arc<Mutex<HashMap<String, (String, u64)>>>,
}

impl Identity {
    pub fn new(name: &str, key: ServiceKey) -> Self {
        Self {
            name: name.into(),
            key,
            tokens: Arc::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A token of this service for calling `audience`.
    pub fn token_for(&self, audience: &str) -> String {
        let now = unix_now();
        let mut tokens = self.tokens.lock().expect("token cache lock");
        if let Some((token, expires)) = tokens.get(audience)
            && *expires >= now + REMINT_BEFORE_EXPIRY.as_secs()
        {
            return token.clone();
        }
        let expires = now + TOKEN_LIFETIME.as_secs();
        let token = mint(&self.key, &self.name, audience, expires);
        tokens.insert(audience.to_owned(), (token.clone(), expires));
        token
    }
}

/// What the middleware of a service's internal API checks callers against.
#[derive(Clone, Debug)]
pub(crate) struct Guard {
    pub(crate) receiver: &'static str,
    pub(crate) key: ServiceKey,
}

/// Middleware: a request under `/internal/` passes only with a valid token of a caller that
/// may call the path; otherwise `401` or `403` problem+json, logged without the token.
pub(crate) async fn guard_internal(
    State(guard): State<Guard>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if !path.starts_with(INTERNAL_PREFIX) {
        return next.run(request).await;
    }
    let checked = match request.headers().get(HEADER) {
        None => Err(Refusal::Missing),
        Some(value) => value
            .to_str()
            .map_err(|_| Refusal::Invalid)
            .and_then(|token| verify(&guard.key, token, guard.receiver, unix_now())),
    }
    .and_then(|caller| {
        if allowed(guard.receiver, path, &caller) {
            Ok(caller)
        } else {
            Err(Refusal::NotAllowed {
                caller,
                path: path.to_owned(),
            })
        }
    });
    match checked {
        Ok(_) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(path, reason = %refusal, "internal call refused");
            Problem::typed(refusal.status(), refusal.kind(), refusal.to_string()).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ServiceKey {
        ServiceKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn a_token_names_its_caller_to_its_audience_only() {
        let token = mint(&key(), "order", "payment", 1_000);
        assert_eq!(verify(&key(), &token, "payment", 990), Ok("order".into()));
        assert_eq!(
            verify(&key(), &token, "inventory", 990),
            Err(Refusal::OtherAudience {
                audience: "payment".into()
            })
        );
    }

    #[test]
    fn another_key_a_changed_claim_or_garbage_is_invalid() {
        let token = mint(&key(), "order", "payment", 1_000);
        let other = ServiceKey::from_bytes(&[8u8; 32]);
        assert_eq!(
            verify(&other, &token, "payment", 990),
            Err(Refusal::Invalid)
        );
        let forged = token.replacen("order", "admin", 1);
        assert_eq!(
            verify(&key(), &forged, "payment", 990),
            Err(Refusal::Invalid)
        );
        for garbage in ["", "v1", "a:b:c:d:e:f", "v1:order:payment:1000:!!!"] {
            assert_eq!(
                verify(&key(), garbage, "payment", 990),
                Err(Refusal::Invalid)
            );
        }
    }

    #[test]
    fn tokens_expire_with_some_leeway_and_cannot_be_made_to_last() {
        let token = mint(&key(), "order", "payment", 1_000);
        assert!(verify(&key(), &token, "payment", 1_000 + CLOCK_SKEW.as_secs()).is_ok());
        assert_eq!(
            verify(&key(), &token, "payment", 1_001 + CLOCK_SKEW.as_secs()),
            Err(Refusal::Expired)
        );
        for forever in [u64::MAX / 2, u64::MAX] {
            let token = mint(&key(), "order", "payment", forever);
            assert_eq!(
                verify(&key(), &token, "payment", 1_000),
                Err(Refusal::Invalid)
            );
        }
    }

    #[test]
    fn a_refusal_never_repeats_the_token() {
        let token = mint(&key(), "order", "payment", 1_000);
        for refusal in [
            verify(&key(), &token, "inventory", 990).unwrap_err(),
            verify(&key(), &token, "payment", 5_000).unwrap_err(),
            verify(&key(), &token.replace('v', "w"), "payment", 990).unwrap_err(),
        ] {
            let signature = token.rsplit(':').next().unwrap();
            assert!(!refusal.to_string().contains(signature), "{refusal}");
        }
    }

    #[test]
    fn minted_tokens_are_reused_until_near_their_end() {
        let identity = Identity::new("order", key());
        let first = identity.token_for("payment");
        assert_eq!(identity.token_for("payment"), first);
        assert_ne!(identity.token_for("inventory"), first);
        assert!(verify(&key(), &first, "payment", unix_now()).is_ok());
    }

    #[test]
    fn keys_are_base64_of_at_least_32_bytes() {
        assert!(ServiceKey::decode(&ServiceKey::generate()).is_ok());
        assert!(ServiceKey::decode(&STANDARD.encode([1u8; 16])).is_err());
        assert!(ServiceKey::decode("not base64!").is_err());
        assert_eq!(format!("{:?}", key()), "ServiceKey(redacted)");
    }

    #[test]
    fn the_rules_of_the_contracts_decide_who_may_call() {
        assert!(allowed("payment", "/internal/charges", "order"));
        assert!(!allowed("payment", "/internal/charges", "cart"));
        assert!(allowed("cart", "/internal/events/cart", "user"));
        assert!(!allowed("catalog", "/internal/anything", "order"));
    }
}
