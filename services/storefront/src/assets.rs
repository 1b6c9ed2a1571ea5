//! The stylesheet, the optional script and the icon, compiled in: the shop needs nothing from
//! anywhere else, and the image holds no files to keep in step.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const CSS: &str = include_str!("../static/shop.css");
const JS: &str = include_str!("../static/shop.js");
const ICON: &str = include_str!("../static/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // An hour: short enough that a new version shows up the same day without
            // fingerprinted names.
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

pub async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

pub async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}
