//! The environment variables the operator (and `shop up`) sets and the services read. Each
//! service's own tuning variables (`ORDER_RESUME_INTERVAL_MS`, …) stay with the service: only
//! what is set from outside is a contract.

/// Where the service listens (`host:port`).
pub const LISTEN: &str = "SHOP_LISTEN";
/// The service's database (`postgres://…` or `sqlite://…`).
pub const DATABASE_URL: &str = "DATABASE_URL";
/// The NATS JetStream servers events travel over; absent: events wait in the outbox.
pub const NATS_URL: &str = "NATS_URL";
/// `json` or `text`.
pub const LOG_FORMAT: &str = "SHOP_LOG_FORMAT";
/// How long a stopping service keeps serving after it reports not ready.
pub const SHUTDOWN_DELAY_MS: &str = "SHOP_SHUTDOWN_DELAY_MS";
/// The gateway's route table file, re-read when it changes.
pub const ROUTES_FILE: &str = "SHOP_ROUTES_FILE";
/// The installation's key (base64, at least 32 bytes) that the services' tokens on the
/// internal APIs are signed with (`shop_kit::identity`).
pub const SERVICE_KEY: &str = "SHOP_SERVICE_KEY";

/// The variable a peer's base URL is given in: `order-history` → `ORDER_HISTORY_URL`. The
/// operator derives it from a ShopService's `dependsOn` name; the services read it for the
/// bundled peers they call ([`crate::ServiceName::url_var`]).
pub fn peer_url(name: &str) -> String {
    format!("{}_URL", name.to_ascii_uppercase().replace('-', "_"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn peer_variables_are_upper_snake_case() {
        assert_eq!(super::peer_url("user"), "USER_URL");
        assert_eq!(super::peer_url("order-history"), "ORDER_HISTORY_URL");
    }
}
