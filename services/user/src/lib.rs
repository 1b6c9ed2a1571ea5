//! The user service: accounts, sign-in, and the keys that verify access tokens.
//!
//! `routes` (HTTP) → `domain` (rules, signing; no I/O), `keys` (signing-key rotation) and
//! `passwords` (argon2id hashing in a bounded pool of reused buffers) → `storage` (SQL).
//! Registration writes `user.registered` (`{user_id, email, name}`, version 1) to the outbox in
//! the same transaction; the relay publishes it.

pub mod domain;
pub mod keys;
pub mod passwords;
pub mod routes;
pub mod storage;

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::{Result, ensure};
use shop_events::{Relay, Runtime};
use shop_kit::config::{env_or, env_parse};
use shop_kit::{Database, Service};
use sqlx::migrate::Migrator;
use utoipa::OpenApi;

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The user service's own settings, from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Accounts registered with these emails get the admin role (`SHOP_ADMIN_EMAILS`, comma-separated).
    pub admin_emails: HashSet<String>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub login_attempts_per_minute: u32,
    /// Accounts one client address may register a minute (`SHOP_REGISTRATIONS_PER_MINUTE`,
    /// default 10; 0 turns the limit off, as `shop up` does for its load tools).
    pub registrations_per_minute: u32,
    /// Password hashes run at once (`SHOP_PASSWORD_HASH_CONCURRENCY`, default 1). Each holds
    /// 19 MiB of argon2 working memory for as long as the service runs; more waiting hashes queue.
    pub password_hash_concurrency: NonZeroUsize,
    /// When signing keys are replaced (see [`keys`]).
    pub key_rotation: keys::Rotation,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            admin_emails: HashSet::new(),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            login_attempts_per_minute: 10,
            registrations_per_minute: 10,
            password_hash_concurrency: NonZeroUsize::MIN,
            key_rotation: keys::Rotation::default(),
        }
    }
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        let defaults = Self::default();
        let settings = Self {
            admin_emails: env_or("SHOP_ADMIN_EMAILS", "")
                .split(',')
                .map(domain::normalise_email)
                .filter(|e| !e.is_empty())
                .collect(),
            access_ttl: Duration::from_secs(env_parse(
                "SHOP_ACCESS_TOKEN_TTL_SECS",
                defaults.access_ttl.as_secs(),
            )?),
            refresh_ttl: Duration::from_secs(env_parse(
                "SHOP_REFRESH_TOKEN_TTL_SECS",
                defaults.refresh_ttl.as_secs(),
            )?),
            login_attempts_per_minute: env_parse(
                "SHOP_LOGIN_ATTEMPTS_PER_MINUTE",
                defaults.login_attempts_per_minute,
            )?,
            registrations_per_minute: env_parse(
                "SHOP_REGISTRATIONS_PER_MINUTE",
                defaults.registrations_per_minute,
            )?,
            password_hash_concurrency: env_parse(
                "SHOP_PASSWORD_HASH_CONCURRENCY",
                defaults.password_hash_concurrency,
            )?,
            key_rotation: keys::Rotation {
                every: Duration::from_secs(env_parse(
                    "SHOP_SIGNING_KEY_ROTATION_SECS",
                    defaults.key_rotation.every.as_secs(),
                )?),
                publish_ahead: Duration::from_secs(env_parse(
                    "SHOP_SIGNING_KEY_PUBLISH_AHEAD_SECS",
                    defaults.key_rotation.publish_ahead.as_secs(),
                )?),
            },
        };
        let rotation = settings.key_rotation;
        ensure!(
            rotation.every.is_zero() || rotation.every > rotation.publish_ahead,
            "SHOP_SIGNING_KEY_ROTATION_SECS ({}) must be 0 (never) or longer than \
             SHOP_SIGNING_KEY_PUBLISH_AHEAD_SECS ({}): a key must sign before the next replaces it",
            rotation.every.as_secs(),
            rotation.publish_ahead.as_secs()
        );
        Ok(settings)
    }
}

/// Connects, migrates, loads the signing keys, and returns the service to serve.
pub async fn build(runtime: &Runtime, settings: Settings) -> Result<Service> {
    let db = Database::connect_and_migrate(&runtime.config.database_url, &MIGRATOR).await?;
    // Creates the outbox too; relays `user.registered` while the service runs.
    let relay = Relay::start(runtime, db.clone()).await?;
    let store = storage::Store::new(db.clone());
    let mut tasks = relay.tasks;
    let signer = keys::SigningKeys::start(
        store.clone(),
        settings.key_rotation,
        settings.access_ttl,
        &mut tasks,
    )
    .await?;
    let passwords = passwords::Passwords::new(settings.password_hash_concurrency);
    // Logins for unknown emails verify against this, so they cost what a real one costs.
    let decoy_hash = passwords.hash("not-a-real-password".into()).await?;
    let state = routes::AppState::new(store, signer, settings, passwords, decoy_hash);
    let limiters = (
        state.login_limiter.clone(),
        state.registration_limiter.clone(),
    );
    // The limiters remember every account and address they saw; forget the idle ones now and
    // then.
    tasks.spawn_every(
        tokio::time::interval(Duration::from_secs(60)),
        "forgetting idle login and registration limits",
        move || {
            limiters.0.retain_recent();
            if let Some(registrations) = &limiters.1 {
                registrations.retain_recent();
            }
            std::future::ready(Ok::<_, std::convert::Infallible>(()))
        },
    );
    Ok(Service {
        name: "user",
        router: routes::router(state),
        openapi: routes::ApiDoc::openapi().into(),
        ready: shop_kit::server::Readiness::Database(db),
        tasks,
    })
}
