//! The envelope every event travels in.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One event, as stored in the outbox and as sent over the bus (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unique per event (UUID v7); consumers deduplicate by it.
    pub id: Uuid,
    /// What happened, `<entity>.<verb>` (`order.confirmed`, `stock.low`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The service that wrote it.
    pub source: String,
    /// When the change was made (RFC 3339, UTC).
    pub time: String,
    /// The event's own fields; `data.version` is the schema version of this type.
    pub data: serde_json::Value,
}

impl Event {
    /// A new event of schema `version`. `data` must serialize to a JSON object; `version` is
    /// added to it.
    pub fn new(kind: &str, source: &str, version: u32, data: impl Serialize) -> Self {
        let mut data = serde_json::to_value(data).expect("event data serializes to JSON");
        match &mut data {
            serde_json::Value::Object(fields) => {
                fields.insert("version".into(), version.into());
            }
            other => panic!("event data must be a JSON object, not {other}"),
        }
        Self {
            id: shop_kit::context::new_id(),
            kind: kind.to_owned(),
            source: source.to_owned(),
            time: shop_kit::db::now_rfc3339(),
            data,
        }
    }

    /// The schema version of `data` (0 when it has none).
    pub fn version(&self) -> u64 {
        self.data
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    }

    /// Reads `data` as the consumer's type for this event.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        T::deserialize(&self.data)
    }
}
