//! Which bus carries events, chosen once per process from the environment.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use backon::{BackoffBuilder, ExponentialBuilder};

use shop_kit::config::{env_or, env_parse};

/// Tuning shared by relays and consumers; every field has an environment override.
#[derive(Debug, Clone)]
pub struct EventOptions {
    /// How often the relay looks for new outbox rows when nobody woke it (`SHOP_OUTBOX_POLL_MS`).
    pub poll_interval: Duration,
    /// How long published rows stay in the outbox before they are deleted
    /// (`SHOP_OUTBOX_RETENTION_SECS`).
    pub retention: Duration,
    /// How long a consumer remembers the ids of the events it applied (`processed_events`),
    /// which is what makes a redelivered event a no-op (`SHOP_PROCESSED_EVENTS_RETENTION_SECS`,
    /// default 8 days: longer than JetStream keeps an event, 7 days, and than the outbox keeps
    /// redelivering one).
    pub processed_retention: Duration,
    /// Rows read per relay batch.
    pub batch_size: i64,
    /// Deliveries of one event to one consumer before it is dead-lettered
    /// (`SHOP_EVENT_MAX_DELIVER`).
    pub max_deliveries: u32,
    /// First delay before an event is retried, and the first backoff while a bus or peer is down;
    /// doubles up to `retry_cap` (`SHOP_EVENT_RETRY_MS`, `SHOP_EVENT_RETRY_CAP_MS`).
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// How long JetStream waits for an ack before redelivering (`SHOP_EVENT_ACK_WAIT_SECS`).
    pub ack_wait: Duration,
}

impl Default for EventOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            retention: Duration::from_secs(24 * 3600),
            processed_retention: Duration::from_secs(8 * 24 * 3600),
            batch_size: 100,
            max_deliveries: 5,
            retry_base: Duration::from_millis(500),
            retry_cap: Duration::from_secs(30),
            ack_wait: Duration::from_secs(30),
        }
    }
}

impl EventOptions {
    pub fn from_env() -> Result<Self> {
        let default = Self::default();
        let millis = |key: &str, default: Duration| -> Result<Duration> {
            Ok(Duration::from_millis(
                env_parse(key, default.as_millis() as u64)?.max(1),
            ))
        };
        Ok(Self {
            poll_interval: millis("SHOP_OUTBOX_POLL_MS", default.poll_interval)?,
            retention: Duration::from_secs(env_parse(
                "SHOP_OUTBOX_RETENTION_SECS",
                default.retention.as_secs(),
            )?),
            processed_retention: Duration::from_secs(
                env_parse(
                    "SHOP_PROCESSED_EVENTS_RETENTION_SECS",
                    default.processed_retention.as_secs(),
                )?
                .max(1),
            ),
            batch_size: default.batch_size,
            max_deliveries: env_parse("SHOP_EVENT_MAX_DELIVER", default.max_deliveries)?.max(1),
            retry_base: millis("SHOP_EVENT_RETRY_MS", default.retry_base)?,
            retry_cap: millis("SHOP_EVENT_RETRY_CAP_MS", default.retry_cap)?,
            ack_wait: Duration::from_secs(
                env_parse("SHOP_EVENT_ACK_WAIT_SECS", default.ack_wait.as_secs())?.max(1),
            ),
        })
    }

    /// The wait before attempt `attempt + 1` (attempt counts from 1): doubling from
    /// `retry_base`, capped at `retry_cap`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        // Not jittered: JetStream redelivers a message to one consumer, not to a crowd.
        ExponentialBuilder::new()
            .with_min_delay(self.retry_base)
            .with_max_delay(self.retry_cap)
            .with_factor(2.0)
            .without_max_times()
            .build()
            .nth(attempt.clamp(1, 32) as usize - 1)
            .expect("a schedule without a maximum never ends")
    }
}

/// A consumer that a producer delivers to directly on the local bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The consumer's name (as given to `Consumer::start`).
    pub name: String,
    /// The base URL of the service running it.
    pub url: String,
}

impl Peer {
    /// Whether this peer is sent events of type `kind`. A type of the shop's contracts goes only
    /// to the services `shop_contracts::events::read_by` says read it; any other type (one
    /// newer than this build, a test's) to every peer, whose consumer decides.
    pub fn reads(&self, kind: &str) -> bool {
        use shop_contracts::events::{EventType, read_by};
        match (
            EventType::named(kind),
            shop_contracts::ServiceName::parse(&self.name),
        ) {
            (Some(known), Some(service)) => read_by(service).contains(&known),
            _ => true,
        }
    }
}

/// Parses `SHOP_EVENT_PEERS`: `name=url,name=url`.
pub fn parse_peers(list: &str) -> Result<Vec<Peer>> {
    let mut peers: Vec<Peer> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, url)) = entry.split_once('=') else {
            bail!("SHOP_EVENT_PEERS entry {entry:?} is not name=url");
        };
        let (name, url) = (name.trim(), url.trim().trim_end_matches('/'));
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("SHOP_EVENT_PEERS: {name:?} is not a consumer name (letters, digits, - and _)");
        }
        reqwest::Url::parse(url)
            .with_context(|| format!("SHOP_EVENT_PEERS: the URL of {name} is not a URL"))?;
        if peers.iter().any(|p| p.name == name) {
            bail!("SHOP_EVENT_PEERS names {name} twice");
        }
        peers.push(Peer {
            name: name.to_owned(),
            url: url.to_owned(),
        });
    }
    Ok(peers)
}

#[derive(Debug)]
pub(crate) enum Kind {
    /// NATS JetStream: the relay publishes to `SHOP_EVENTS`, consumers pull from it.
    Nats(async_nats::jetstream::Context),
    /// Direct delivery: the relay POSTs batches of events to every peer's
    /// `/internal/events/<name>`.
    Local(Vec<Peer>),
    /// No bus: events wait in the outbox; consumers still accept local deliveries.
    None,
}

/// The bus a process's relays and consumers use. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    pub(crate) kind: Arc<Kind>,
    pub(crate) options: EventOptions,
}

impl Bus {
    /// `NATS_URL` set → JetStream; else `SHOP_EVENT_PEERS` set → the local bus; else none
    /// (events wait in the outbox, logged once).
    pub async fn from_env() -> Result<Self> {
        let options = EventOptions::from_env()?;
        let nats_url = env_or(shop_contracts::env::NATS_URL, "");
        let peers = env_or("SHOP_EVENT_PEERS", "");
        let bus = if !nats_url.is_empty() {
            Self::nats(&nats_url, options).await?
        } else if !peers.is_empty() {
            Self::local(parse_peers(&peers)?, options)
        } else {
            tracing::warn!(
                "no event bus: neither NATS_URL nor SHOP_EVENT_PEERS is set; events wait in the outbox"
            );
            Self::none(options)
        };
        Ok(bus)
    }

    /// JetStream at `url`. The connection is made in the background and re-made after outages,
    /// so a NATS server that is down at start delays events, never the service.
    pub async fn nats(url: &str, options: EventOptions) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name("shop")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .context("connecting to NATS at NATS_URL")?;
        let mut context = async_nats::jetstream::new(client);
        context.set_timeout(Duration::from_secs(5));
        Ok(Self {
            kind: Arc::new(Kind::Nats(context)),
            options,
        })
    }

    /// Direct delivery to `peers`.
    pub fn local(peers: Vec<Peer>, options: EventOptions) -> Self {
        Self {
            kind: Arc::new(Kind::Local(peers)),
            options,
        }
    }

    /// No bus at all.
    pub fn none(options: EventOptions) -> Self {
        Self {
            kind: Arc::new(Kind::None),
            options,
        }
    }

    pub fn options(&self) -> &EventOptions {
        &self.options
    }

    /// `nats`, `local` or `none`, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match *self.kind {
            Kind::Nats(_) => "nats",
            Kind::Local(_) => "local",
            Kind::None => "none",
        }
    }

    /// The JetStream context, for tests and tools that look at the streams.
    pub fn jetstream(&self) -> Option<&async_nats::jetstream::Context> {
        match &*self.kind {
            Kind::Nats(context) => Some(context),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_sent_what_they_read() {
        let peer = |name: &str| Peer {
            name: name.into(),
            url: "http://127.0.0.1:1".into(),
        };
        assert!(peer("cart").reads("order.confirmed"));
        assert!(!peer("cart").reads("order.placed"));
        assert!(!peer("cart").reads("user.registered"));
        assert!(peer("notification").reads("order.placed"));
        // A type the contracts do not list, or a consumer that is not a shop service: sent.
        assert!(peer("cart").reads("test.created"));
        assert!(peer("audit").reads("order.placed"));
    }

    #[test]
    fn peers_parse_and_reject_nonsense() {
        let peers =
            parse_peers("notification=http://127.0.0.1:8088/, cart=http://127.0.0.1:8083").unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].url, "http://127.0.0.1:8088");
        assert_eq!(peers[1].name, "cart");
        assert!(parse_peers("notification").is_err());
        assert!(parse_peers("a=http://x,a=http://y").is_err());
        assert!(parse_peers("a b=http://x").is_err());
        assert!(parse_peers("a=not a url").is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let options = EventOptions {
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_millis(700),
            ..EventOptions::default()
        };
        let waits: Vec<_> = (1..=5).map(|a| options.backoff(a).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 700, 700]);
    }
}
