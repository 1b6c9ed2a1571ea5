//! HTTP handlers of the user service.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use shop_kit::db::now_rfc3339;
use shop_kit::{ApiResult, Caller, Database, Json, Problem, Validator};
use utoipa::{OpenApi, ToSchema};

use crate::Settings;
use crate::domain;
use crate::keys::SigningKeys;
use crate::passwords::Passwords;
use crate::storage::{Consumed, Store, UserRow};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub signer: SigningKeys,
    pub settings: Arc<Settings>,
    pub login_limiter: Arc<DefaultKeyedRateLimiter<String>>,
    /// Registrations per client address; `None` when the limit is off.
    pub registration_limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    pub passwords: Passwords,
    /// Verified against for unknown emails, so their logins take as long as real ones.
    pub decoy_hash: Arc<str>,
}

impl AppState {
    pub fn new(
        store: Store,
        signer: SigningKeys,
        settings: Settings,
        passwords: Passwords,
        decoy_hash: String,
    ) -> Self {
        let per_minute =
            NonZeroU32::new(settings.login_attempts_per_minute.max(1)).expect("at least one");
        let registration_limiter = NonZeroU32::new(settings.registrations_per_minute)
            .map(|per_minute| Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))));
        Self {
            store,
            signer,
            settings: Arc::new(settings),
            login_limiter: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
            registration_limiter,
            passwords,
            decoy_hash: decoy_hash.into(),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Registration {
    /// Signs the account in; compared without regard to case.
    #[schema(
        max_length = 254,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f@]+@[^\s\x00-\x1f\x7f-\x9f]+$"
    )]
    pub email: String,
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    #[schema(max_length = 100, pattern = r"[^\s\x00-\x1f\x7f-\x9f]")]
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Profile {
    pub id: String,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: String,
}

impl From<UserRow> for Profile {
    fn from(row: UserRow) -> Self {
        Self {
            roles: domain::roles_from_column(&row.roles),
            id: row.id,
            email: row.email,
            name: row.name,
            created_at: row.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Login {
    #[schema(max_length = 254, pattern = r"[^\s\x00-\x1f\x7f-\x9f]")]
    pub email: String,
    #[schema(max_length = 128)]
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Refresh {
    /// The `refresh_token` of the last sign-in or refresh (any other answers 401).
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ProfileUpdate {
    #[schema(max_length = 100, pattern = r"[^\s\x00-\x1f\x7f-\x9f]")]
    pub name: Option<String>,
    #[schema(min_length = 8, max_length = 128)]
    pub password: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Tokens {
    pub access_token: String,
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "shop user service",
        description = "Accounts, sign-in and token keys."
    ),
    paths(register, login, refresh, logout, me, update_me, jwks),
    components(schemas(Registration, Profile, Login, Refresh, ProfileUpdate, Tokens, Problem))
)]
pub struct ApiDoc;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/users", post(register))
        .route("/api/users/me", get(me).patch(update_me))
        .route("/api/auth/login", post(login))
        .route("/api/auth/refresh", post(refresh))
        .route("/api/auth/logout", post(logout))
        .route(shop_contracts::auth::JWKS_PATH, get(jwks))
        .with_state(state)
}

/// Register a new account.
#[utoipa::path(post, path = "/api/users", request_body = Registration, responses(
    (status = 201, body = Profile), (status = 409, body = Problem, description = "An account with this email exists."),
    (status = 429, body = Problem, description = "Too many accounts registered from this address.")))]
async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<Registration>,
) -> ApiResult<impl IntoResponse> {
    domain::validate_registration(&body.email, &body.password, &body.name)?;
    if let Some(limiter) = &state.registration_limiter
        && limiter.check_key(&client_address(&headers, peer)).is_err()
    {
        tracing::warn!("registration rate limit reached for a client address");
        return Err(Problem::too_many_requests(
            "too many accounts registered from this address; wait a minute and try again",
        ));
    }
    let email = domain::normalise_email(&body.email);
    let password_hash = state
        .passwords
        .hash(body.password)
        .await
        .map_err(Problem::internal)?;
    let now = now_rfc3339();
    let roles = if state.settings.admin_emails.contains(&email) {
        "admin"
    } else {
        ""
    };
    let user = UserRow {
        id: shop_kit::context::new_id().to_string(),
        email,
        name: body.name.trim().to_owned(),
        password_hash,
        roles: roles.into(),
        created_at: now.clone(),
        updated_at: now,
    };
    match state.store.insert_user(&user).await {
        Ok(()) => {
            tracing::info!(user_id = %user.id, "user registered");
            Ok((StatusCode::CREATED, Json(Profile::from(user))))
        }
        Err(e) if Database::is_unique_violation(&e) => Err(Problem::conflict(
            "an account with this email already exists",
        )),
        Err(e) => Err(e.into()),
    }
}

/// The address a request came from: the last `X-Forwarded-For` entry, which the gateway
/// appends from the connection it accepted (what a client wrote there itself comes before it),
/// or the connection's peer when the request did not come through the gateway.
fn client_address(headers: &HeaderMap, peer: SocketAddr) -> String {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .rfind(|entry| !entry.is_empty())
        .map_or_else(|| peer.ip().to_string(), str::to_owned)
}

/// Sign in with email and password.
#[utoipa::path(post, path = "/api/auth/login", request_body = Login, responses(
    (status = 200, body = Tokens),
    (status = 401, body = Problem, description = "The email or password is wrong."),
    (status = 429, body = Problem, description = "Too many sign-in attempts for this account.")))]
async fn login(State(state): State<AppState>, Json(body): Json<Login>) -> ApiResult<Json<Tokens>> {
    let mut v = Validator::new();
    v.text("email", &body.email, domain::MAX_EMAIL).check(
        body.password.chars().count() <= domain::MAX_PASSWORD,
        "password",
        "is too long",
    );
    v.finish()?;
    let email = domain::normalise_email(&body.email);
    if state.login_limiter.check_key(&email).is_err() {
        tracing::warn!("login rate limit reached for an account");
        return Err(Problem::too_many_requests(
            "too many sign-in attempts for this account; wait a minute and try again",
        ));
    }
    let user = state.store.user_by_email(&email).await?;
    let hash = user
        .as_ref()
        .map_or_else(|| state.decoy_hash.to_string(), |u| u.password_hash.clone());
    let matches = state
        .passwords
        .verify(hash, body.password)
        .await
        .map_err(Problem::internal)?;
    match user {
        // Each sign-in starts a family of refresh tokens.
        Some(user) if matches => Ok(Json(
            issue_tokens(&state, &user, &uuid::Uuid::new_v4().to_string()).await?,
        )),
        _ => Err(Problem::unauthorized("the email or password is wrong")),
    }
}

/// A used refresh token presented again this soon after its use is refused without revoking
/// its family: two requests of one client refreshing at once, not a stolen token.
const REUSE_GRACE_SECS: i64 = 10;

/// Trade a refresh token for new tokens. Each refresh token works once; one presented again
/// after it was used revokes every token of its sign-in (it was copied).
#[utoipa::path(post, path = "/api/auth/refresh", request_body = Refresh, responses(
    (status = 200, body = Tokens),
    (status = 401, body = Problem, description = "The refresh token is invalid, expired, already used or revoked.")))]
async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<Refresh>,
) -> ApiResult<Json<Tokens>> {
    let invalid = || Problem::unauthorized("the refresh token is invalid, expired or already used");
    if body.refresh_token.is_empty() || body.refresh_token.len() > 128 {
        return Err(invalid());
    }
    let hash = domain::hash_refresh_token(&body.refresh_token);
    let now = domain::unix_now();
    let (user_id, family) = match state.store.consume_refresh_token(&hash, now).await? {
        Consumed::Fresh { user_id, family } => (user_id, family),
        Consumed::Reused { family, used_at } if now - used_at > REUSE_GRACE_SECS => {
            let revoked = state.store.revoke_refresh_family(&family, now).await?;
            // The token itself is never logged; the family id says which sign-in it was.
            tracing::warn!(
                family,
                revoked,
                "a used refresh token was presented again; every token of its sign-in is revoked"
            );
            return Err(invalid());
        }
        Consumed::Reused { .. } | Consumed::Invalid => return Err(invalid()),
    };
    let user = state
        .store
        .user_by_id(&user_id)
        .await?
        .ok_or_else(invalid)?;
    Ok(Json(issue_tokens(&state, &user, &family).await?))
}

/// Sign out: revokes the refresh token and every other token of its sign-in. Answers 204 for
/// any token, known or not, so that the answer tells nothing about it (as OAuth 2.0 token
/// revocation does). Access tokens already issued stay valid until they expire (minutes).
#[utoipa::path(post, path = "/api/auth/logout", request_body = Refresh, responses(
    (status = 204, description = "Signed out: the refresh token's sign-in is revoked, if there was one.")))]
async fn logout(State(state): State<AppState>, Json(body): Json<Refresh>) -> ApiResult<StatusCode> {
    if !body.refresh_token.is_empty() && body.refresh_token.len() <= 128 {
        let hash = domain::hash_refresh_token(&body.refresh_token);
        if let Some(family) = state.store.refresh_token_family(&hash).await? {
            state
                .store
                .revoke_refresh_family(&family, domain::unix_now())
                .await?;
            tracing::info!(family, "signed out");
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn issue_tokens(state: &AppState, user: &UserRow, family: &str) -> ApiResult<Tokens> {
    let now = domain::unix_now();
    let signer = state.signer.signer();
    let access_token = signer
        .issue(&user.id, domain::roles_from_column(&user.roles), now)
        .map_err(Problem::internal)?;
    let (refresh_token, refresh_hash) = domain::new_refresh_token();
    let expires_at = now + state.settings.refresh_ttl.as_secs() as i64;
    state
        .store
        .insert_refresh_token(&refresh_hash, &user.id, expires_at, family)
        .await?;
    Ok(Tokens {
        access_token,
        token_type: "Bearer".into(),
        expires_in: signer.access_ttl.as_secs(),
        refresh_token,
    })
}

/// The caller's profile.
#[utoipa::path(get, path = "/api/users/me", security(("identity" = [])), responses(
    (status = 200, body = Profile), (status = 404, body = Problem, description = "The account no longer exists.")))]
async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Profile>> {
    let user = state
        .store
        .user_by_id(&caller.user_id.to_string())
        .await?
        .ok_or_else(|| Problem::not_found("this account no longer exists"))?;
    Ok(Json(user.into()))
}

/// Change the caller's name or password.
#[utoipa::path(patch, path = "/api/users/me", request_body = ProfileUpdate, security(("identity" = [])), responses(
    (status = 200, body = Profile), (status = 404, body = Problem, description = "The account no longer exists.")))]
async fn update_me(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<ProfileUpdate>,
) -> ApiResult<Json<Profile>> {
    let mut v = Validator::new();
    if let Some(name) = &body.name {
        v.text("name", name, domain::MAX_NAME);
    }
    if let Some(password) = &body.password {
        domain::validate_password(&mut v, password);
    }
    v.finish()?;
    let password_hash = match body.password {
        Some(password) => Some(
            state
                .passwords
                .hash(password)
                .await
                .map_err(Problem::internal)?,
        ),
        None => None,
    };
    let name = body.name.as_deref().map(str::trim);
    let user = state
        .store
        .update_user(&caller.user_id.to_string(), name, password_hash.as_deref())
        .await?
        .ok_or_else(|| Problem::not_found("this account no longer exists"))?;
    Ok(Json(user.into()))
}

/// The public keys that verify access tokens (JWKS).
#[utoipa::path(get, path = "/.well-known/jwks.json", responses((status = 200, description = "A JSON Web Key Set")))]
async fn jwks(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(state.signer.signer().jwks().clone())
}
