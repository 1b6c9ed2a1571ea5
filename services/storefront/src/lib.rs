//! The storefront: the shop's web pages, rendered on the server from the public API.
//!
//! It is a client of the gateway like any other (`api`), keeps no data of its own, and every page
//! and form works without JavaScript. `session` reads and writes the cookies (tokens, the guest
//! cart, the CSRF token) around every request; `routes` are the pages and forms; `pages` the
//! templates they render; `assets` the stylesheet and the small optional script.

pub mod api;
pub mod assets;
pub mod pages;
pub mod routes;
pub mod session;

use std::sync::Arc;

use anyhow::Result;
use shop_contracts::ServiceName;
use shop_events::Runtime;
use shop_kit::config::{env_or, env_parse};
use shop_kit::{Service, Upstream, UpstreamOptions};

#[derive(Debug, Clone)]
pub struct Settings {
    /// The gateway, whose public API every page is built from (`GATEWAY_URL`).
    pub gateway_url: String,
    /// Mark the cookies `Secure` (`STOREFRONT_SECURE_COOKIES`): set it when the shop is served
    /// over HTTPS, as it should be anywhere but on loopback.
    pub secure_cookies: bool,
}

impl Settings {
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            gateway_url: env_or(&ServiceName::Gateway.url_var(), "http://127.0.0.1:8080"),
            secure_cookies: env_parse("STOREFRONT_SECURE_COOKIES", false)?,
        })
    }
}

/// What every handler shares: the API client and the cookie settings.
#[derive(Clone)]
pub struct App {
    pub api: api::Api,
    pub cookies: Arc<session::CookieOptions>,
}

pub async fn build(runtime: &Runtime, settings: Settings) -> Result<Service> {
    let gateway = Upstream::new(
        "gateway",
        &settings.gateway_url,
        &UpstreamOptions::from_env()?.reporting_to(&runtime.metrics),
    )?;
    let app = App {
        api: api::Api::new(gateway),
        cookies: Arc::new(session::CookieOptions {
            secure: settings.secure_cookies,
        }),
    };
    Ok(Service {
        name: "storefront",
        router: routes::router(app),
        openapi: shop_kit::server::described_openapi(
            "shop storefront",
            "The web shop's HTML pages and forms (not a JSON API); the API it uses is the gateway's.",
        ),
        // Ready whenever it runs: with the gateway or a service down it still answers, with a
        // page that says what is unavailable, which is better than no page at all.
        ready: shop_kit::server::Readiness::Always,
        tasks: Default::default(),
    })
}
