//! The cookies around every request: the visitor's tokens (refreshed when the access token has
//! run out), the guest cart, and the CSRF token every form POST must carry.
//!
//! All cookies are HttpOnly and SameSite=Lax (and Secure when the shop is served over HTTPS):
//! no script can read them, and other sites cannot send them with a form. On top of that, every
//! POST must carry the CSRF cookie's value in its `csrf` field (a double-submit token), and a
//! request the browser marks as cross-site (`Sec-Fetch-Site`) is refused.

use axum::body::{Body, Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use shop_contracts::auth::Claims;
use subtle::ConstantTimeEq;

use crate::App;
use crate::api::{ApiError, Tokens};
use crate::pages;

pub const ACCESS_COOKIE: &str = "shop_access";
pub const REFRESH_COOKIE: &str = "shop_refresh";
pub const CSRF_COOKIE: &str = "shop_csrf";
pub const GUEST_CART_COOKIE: &str = "shop_guest_cart";
/// The form field that must repeat the CSRF cookie.
pub const CSRF_FIELD: &str = "csrf";

/// How long the cookies live in the browser. The access token itself lasts 15 minutes; the
/// cookie outlives it so the refresh can happen on the next visit.
const SESSION_MAX_AGE: u64 = 14 * 24 * 3600;
/// Refresh this long before the access token expires, so it does not expire mid-request.
const REFRESH_MARGIN_SECONDS: i64 = 30;
/// The largest form the storefront reads (a checkout is well under 1 KiB).
const MAX_FORM_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Default)]
pub struct CookieOptions {
    pub secure: bool,
}

impl CookieOptions {
    /// A `Set-Cookie` value; `None` clears the cookie.
    pub fn set(&self, name: &str, value: Option<&str>) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let cookie = match value {
            Some(value) => format!(
                "{name}={value}; Path=/; Max-Age={SESSION_MAX_AGE}; HttpOnly; SameSite=Lax{secure}"
            ),
            None => format!("{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{secure}"),
        };
        HeaderValue::from_str(&cookie).expect("cookie values are checked ASCII")
    }
}

/// One line of the guest cart: kept in a cookie until the visitor signs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestLine {
    pub product_id: String,
    pub quantity: i64,
}

/// The most lines a guest cart keeps (a cookie is at most 4 KiB).
pub const GUEST_CART_MAX_LINES: usize = 40;

/// The guest cart's cookie value: `<uuid>:<quantity>` joined by `.`. Anything else in it is
/// dropped: the cookie is the visitor's own and may hold anything.
pub fn parse_guest_cart(raw: &str) -> Vec<GuestLine> {
    let mut lines: Vec<GuestLine> = Vec::new();
    for item in raw.split('.') {
        let Some((id, quantity)) = item.split_once(':') else {
            continue;
        };
        let (Ok(id), Ok(quantity)) = (uuid::Uuid::parse_str(id), quantity.parse::<i64>()) else {
            continue;
        };
        let id = id.to_string();
        if (1..=crate::routes::MAX_QUANTITY).contains(&quantity)
            && lines.len() < GUEST_CART_MAX_LINES
            && !lines.iter().any(|l| l.product_id == id)
        {
            lines.push(GuestLine {
                product_id: id,
                quantity,
            });
        }
    }
    lines
}

pub fn format_guest_cart(lines: &[GuestLine]) -> String {
    lines
        .iter()
        .map(|l| format!("{}:{}", l.product_id, l.quantity))
        .collect::<Vec<_>>()
        .join(".")
}

/// Who is asking, from the cookies (put into the request's extensions by [`layer`]).
#[derive(Debug, Clone)]
pub struct Visitor {
    pub access_token: Option<String>,
    /// Read from the access token without checking its signature: only to show the right
    /// page (a name in the header, the admin form). Every API call is checked by the gateway.
    pub claims: Option<Claims>,
    pub csrf: String,
    pub guest_cart: Vec<GuestLine>,
}

impl Visitor {
    pub fn signed_in(&self) -> Option<&str> {
        self.access_token.as_deref()
    }

    pub fn is_admin(&self) -> bool {
        self.claims
            .as_ref()
            .is_some_and(|c| c.roles.iter().any(|r| r == "admin"))
    }
}

pub fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    cookies(headers)
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// The refresh token the browser holds, if it looks like one.
pub fn refresh_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, REFRESH_COOKIE).filter(|v| plausible(v))
}

/// The claims of a JWT, unverified (see [`Visitor::claims`]).
pub fn read_claims(token: &str) -> Option<Claims> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// 32 random bytes, URL-safe: a new CSRF token.
fn new_token() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether a cookie value is one we could have set: token characters only.
fn plausible(value: &str) -> bool {
    value.len() <= 4096
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Reads the cookies into a [`Visitor`], refreshes the tokens when the access token has expired,
/// checks the CSRF token of every POST, and writes back the cookies that changed, unless the
/// handler set them itself (signing in or out).
pub async fn layer(State(app): State<App>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let headers = &parts.headers;
    let mut set: Vec<(&'static str, Option<String>)> = Vec::new();

    let csrf = match cookie(headers, CSRF_COOKIE).filter(|v| plausible(v)) {
        Some(token) => token.to_owned(),
        None => {
            let token = new_token();
            set.push((CSRF_COOKIE, Some(token.clone())));
            token
        }
    };

    let mut access = cookie(headers, ACCESS_COOKIE)
        .filter(|v| plausible(v))
        .map(str::to_owned);
    let mut claims = access.as_deref().and_then(read_claims);
    let fresh = claims
        .as_ref()
        .is_some_and(|c| c.exp > now() + REFRESH_MARGIN_SECONDS);
    if !fresh {
        match cookie(headers, REFRESH_COOKIE).filter(|v| plausible(v)) {
            Some(refresh_token) => match app.api.refresh(refresh_token).await {
                Ok(Tokens {
                    access_token,
                    refresh_token,
                }) => {
                    claims = read_claims(&access_token);
                    set.push((ACCESS_COOKIE, Some(access_token.clone())));
                    set.push((REFRESH_COOKIE, Some(refresh_token)));
                    access = Some(access_token);
                }
                Err(ApiError::Unavailable) => {
                    // The user service is down: this page is anonymous, the cookies stay for
                    // the next one.
                    access = None;
                    claims = None;
                }
                Err(_) => {
                    // Refused: the session is over.
                    set.push((ACCESS_COOKIE, None));
                    set.push((REFRESH_COOKIE, None));
                    access = None;
                    claims = None;
                }
            },
            None => {
                if access.is_some() {
                    set.push((ACCESS_COOKIE, None));
                }
                access = None;
                claims = None;
            }
        }
    }

    let guest_cart = cookie(headers, GUEST_CART_COOKIE)
        .map(parse_guest_cart)
        .unwrap_or_default();
    let visitor = Visitor {
        access_token: access,
        claims,
        csrf: csrf.clone(),
        guest_cart,
    };

    let body = if parts.method == Method::GET || parts.method == Method::HEAD {
        body
    } else {
        match check_form(headers, body, &csrf).await {
            Ok(bytes) => Body::from(bytes),
            Err(refusal) => return refusal,
        }
    };
    parts.extensions.insert(visitor);
    let mut response = next.run(Request::from_parts(parts, body)).await;

    let already: Vec<String> = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split_once('=').map(|(name, _)| name.to_owned()))
        .collect();
    for (name, value) in set {
        if !already.iter().any(|n| n == name) {
            response
                .headers_mut()
                .append(header::SET_COOKIE, app.cookies.set(name, value.as_deref()));
        }
    }
    response
}

/// The form of a POST, once its CSRF token matches the cookie's; otherwise a page that says
/// the form has expired.
async fn check_form(headers: &HeaderMap, body: Body, csrf: &str) -> Result<Bytes, Response> {
    let refuse = |why: &str| {
        tracing::info!(reason = why, "form refused");
        pages::error_page(
            axum::http::StatusCode::FORBIDDEN,
            "This form has expired",
            "For your safety the shop only accepts forms it has just shown you. Go back, reload the page and send it again.",
        )
        .into_response()
    };
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Err(refuse("cross-site request"));
    }
    let bytes = to_bytes(body, MAX_FORM_BYTES).await.map_err(|_| {
        pages::error_page(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "That form is too large",
            "The shop's forms are small; this one was over 16 KiB.",
        )
        .into_response()
    })?;
    let sent = form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == CSRF_FIELD)
        .map(|(_, v)| v.into_owned());
    // A fresh cookie was minted for this request when the browser sent none: then nothing it
    // sent can match, which is right: the form did not come from a page of ours.
    match sent {
        // Compared in constant time: how long it takes says nothing of how much of a guess was right.
        Some(sent) if bool::from(sent.as_bytes().ct_eq(csrf.as_bytes())) => Ok(bytes),
        _ => Err(refuse("missing or wrong CSRF token")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_cart_cookie_round_trips_and_drops_junk() {
        let id = "2c780eeb-9221-5e01-a4bc-fc11aee236a6";
        let other = "38843629-1d03-5380-8737-ea582935057e";
        let lines = parse_guest_cart(&format!(
            "{id}:2.junk.{other}:0.{other}:100.{other}:3.{id}:5.x:1"
        ));
        assert_eq!(
            lines,
            vec![
                GuestLine {
                    product_id: id.into(),
                    quantity: 2
                },
                GuestLine {
                    product_id: other.into(),
                    quantity: 3
                },
            ]
        );
        assert_eq!(parse_guest_cart(&format_guest_cart(&lines)), lines);
    }

    #[test]
    fn cookies_are_http_only_and_lax_and_secure_when_asked() {
        let plain = CookieOptions { secure: false }.set("a", Some("b"));
        assert_eq!(
            plain,
            "a=b; Path=/; Max-Age=1209600; HttpOnly; SameSite=Lax"
        );
        let secure = CookieOptions { secure: true }.set("a", None);
        assert_eq!(
            secure,
            "a=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax; Secure"
        );
    }

    #[test]
    fn claims_are_read_from_the_token_payload() {
        let claims = Claims {
            sub: "u".into(),
            roles: vec!["admin".into()],
            iss: "i".into(),
            aud: "a".into(),
            iat: 1,
            exp: 2,
        };
        let token = format!(
            "x.{}.y",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        assert_eq!(read_claims(&token), Some(claims));
        assert_eq!(read_claims("not a token"), None);
    }
}
