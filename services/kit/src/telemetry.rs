//! Structured logs: JSON lines by default (what log pipelines want), readable text on request.

use tracing_subscriber::EnvFilter;

use crate::config::env_or;

/// Installs the global subscriber. `SHOP_LOG` filters (`info` by default, `RUST_LOG` syntax);
/// `SHOP_LOG_FORMAT=text` switches to human-readable lines. Safe to call more than once.
pub fn init(service: &str) {
    let filter = EnvFilter::try_new(env_or("SHOP_LOG", "info,sqlx=warn"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let result = if env_or("SHOP_LOG_FORMAT", "json") == "text" {
        builder.try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    };
    if result.is_ok() {
        tracing::debug!(service, "logging initialised");
    }
}
