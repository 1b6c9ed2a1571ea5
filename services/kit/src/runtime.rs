//! What a process gives each service it builds: one value, so every service is built the same way.

use anyhow::Result;

use crate::config::ServiceConfig;
use crate::identity::Identity;
use crate::metrics::Metrics;

/// The runtime context a service is built from: `build(&runtime, settings)` in every service
/// crate, whether `shop serve` or a test builds it.
///
/// `B` is the event bus (`shop_events::Bus`; services name `shop_events::Runtime`). It is a
/// parameter because the event crate stands on the kit: naming its bus here would make the two
/// crates depend on each other.
#[derive(Clone)]
pub struct Runtime<B> {
    /// Where to listen, the database, timeouts.
    pub config: ServiceConfig,
    /// Where the service's events go and come from.
    pub bus: B,
    /// The service's registry: `/metrics` serves what the service registers here.
    pub metrics: Metrics,
    /// The service as a caller of other services' internal APIs.
    pub identity: Identity,
}

impl<B> Runtime<B> {
    /// The context of service `name` from the environment (see [`ServiceConfig::from_env`]),
    /// with a fresh metric registry.
    pub fn from_env(name: &str, bus: B) -> Result<Self> {
        let config = ServiceConfig::from_env(name)?;
        Ok(Self {
            identity: Identity::new(name, config.service_key.clone()),
            config,
            bus,
            metrics: Metrics::new(name),
        })
    }
}

/// The settings of a service that has none of its own (`pub type Settings = NoSettings;`), so
/// `build(&runtime, settings)` and `Settings::from_env()` stay the same in every service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoSettings;

impl NoSettings {
    pub fn from_env() -> Result<Self> {
        Ok(Self)
    }
}
