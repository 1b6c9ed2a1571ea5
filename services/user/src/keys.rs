//! Signing-key rotation: a new key is published before it signs, and an old one stays published
//! until the last token it signed has expired.
//!
//! Every replica reads the keys from the database and decides the same way from their creation
//! times ([`plan`]): the newest key published for at least `publish_ahead` signs (on a fresh
//! database the first key signs at once: nobody has cached a JWKS yet); a key is made when the
//! newest is `every` old (one replica's insert wins, by generation); a key whose successor has
//! signed for longer than the access-token lifetime plus a margin is deleted.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use shop_kit::Tasks;

use crate::domain::{KeyMaterial, Signer, generate_key, unix_now};
use crate::storage::Store;

/// How signing keys are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// A new key is made when the newest is this old (`SHOP_SIGNING_KEY_ROTATION_SECS`, default
    /// 30 days).
    pub every: Duration,
    /// A new key is published this long before it signs, so that verifiers which cache the
    /// JWKS (the gateway refetches every 5 minutes) have it first
    /// (`SHOP_SIGNING_KEY_PUBLISH_AHEAD_SECS`, default 1 hour).
    pub publish_ahead: Duration,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(30 * 24 * 3600),
            publish_ahead: Duration::from_secs(3600),
        }
    }
}

impl Rotation {
    /// How often each replica looks at the keys: a quarter of the publication lead, between a
    /// quarter of a second and a minute.
    pub fn check_every(&self) -> Duration {
        (self.publish_ahead / 4).clamp(Duration::from_millis(250), Duration::from_secs(60))
    }
}

/// Seconds a verifier may accept a token past its expiry (the gateway's leeway).
const VERIFIER_LEEWAY_SECS: i64 = 5;

/// What to do with the stored keys now.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    /// The index (in the keys given) of the key that signs.
    pub signing: usize,
    /// The indexes of the keys in the JWKS.
    pub published: Vec<usize>,
    /// The kids of keys no token still valid was signed with: delete them.
    pub retired: Vec<String>,
    /// The newest key is due for replacement.
    pub new_key_due: bool,
}

/// The plan for `keys` (kid and creation time in Unix seconds, newest first, not empty) at
/// `now`, for access tokens living `access_ttl`.
pub fn plan(keys: &[(&str, i64)], now: i64, rotation: &Rotation, access_ttl: Duration) -> Plan {
    let ahead = rotation.publish_ahead.as_secs() as i64;
    let starts = |i: usize| keys[i].1.saturating_add(ahead);
    let signing = (0..keys.len())
        .find(|&i| starts(i) <= now)
        .unwrap_or(keys.len() - 1);
    // A key older than the signing one stopped signing when the next newer key started; its
    // tokens are gone once they expired there (plus the verifiers' leeway and the time a
    // replica may take to notice the switch).
    let margin = access_ttl.as_secs() as i64
        + VERIFIER_LEEWAY_SECS
        + rotation.check_every().as_secs() as i64
        + 1;
    let mut published = Vec::new();
    let mut retired = Vec::new();
    for (i, (kid, _)) in keys.iter().enumerate() {
        if i > signing && starts(i - 1).saturating_add(margin) <= now {
            retired.push((*kid).to_owned());
        } else {
            published.push(i);
        }
    }
    let new_key_due = !rotation.every.is_zero()
        && keys[0].1.saturating_add(rotation.every.as_secs() as i64) <= now;
    Plan {
        signing,
        published,
        retired,
        new_key_due,
    }
}

/// The signer in use, replaced as keys rotate. Cheap to clone.
#[derive(Clone)]
pub struct SigningKeys {
    current: Arc<RwLock<Arc<Signer>>>,
}

impl SigningKeys {
    /// The signer to issue and publish with now.
    pub fn signer(&self) -> Arc<Signer> {
        self.current.read().expect("signer lock").clone()
    }

    /// Reads (and on a fresh database makes) the keys, and keeps rotating them while `tasks`
    /// run.
    pub async fn start(
        store: Store,
        rotation: Rotation,
        access_ttl: Duration,
        tasks: &mut Tasks,
    ) -> Result<Self> {
        store.signing_keys().await?;
        let signer = rotate(&store, &rotation, access_ttl).await?;
        let keys = Self {
            current: Arc::new(RwLock::new(Arc::new(signer))),
        };
        let current = keys.current.clone();
        let every = rotation.check_every();
        tasks.spawn_every(
            // Not at once: the look above was the first.
            tokio::time::interval_at(tokio::time::Instant::now() + every, every),
            "rotating the signing keys",
            move || {
                let (store, current) = (store.clone(), current.clone());
                async move {
                    let signer = rotate(&store, &rotation, access_ttl).await?;
                    let mut slot = current.write().expect("signer lock");
                    if slot.kid() != signer.kid() {
                        tracing::info!(kid = signer.kid(), "signing with a new key");
                    }
                    *slot = Arc::new(signer);
                    Ok::<_, anyhow::Error>(())
                }
            },
        );
        Ok(keys)
    }
}

/// One look at the keys: make one if due, delete the retired, and the signer for what is left.
async fn rotate(store: &Store, rotation: &Rotation, access_ttl: Duration) -> Result<Signer> {
    let now = unix_now();
    let mut keys = store.load_keys().await?;
    if plan_for(&keys, now, rotation, access_ttl)?.new_key_due {
        let key = generate_key()?;
        let newer_than = now - rotation.every.as_secs() as i64;
        if store.insert_next_key(&key, newer_than).await? {
            tracing::info!(kid = key.kid, "published a new signing key");
        }
        keys = store.load_keys().await?;
    }
    let plan = plan_for(&keys, now, rotation, access_ttl)?;
    for kid in &plan.retired {
        store.delete_key(kid).await?;
        tracing::info!(
            kid,
            "retired a signing key: every token it signed has expired"
        );
    }
    let published: Vec<&KeyMaterial> = plan.published.iter().map(|&i| &keys[i]).collect();
    Signer::new(&keys[plan.signing], &published, access_ttl)
}

/// [`plan`] for the stored keys (newest first).
fn plan_for(
    keys: &[KeyMaterial],
    now: i64,
    rotation: &Rotation,
    access_ttl: Duration,
) -> Result<Plan> {
    anyhow::ensure!(!keys.is_empty(), "no signing key");
    let view = keys
        .iter()
        .map(|k| Ok((k.kid.as_str(), unix_seconds(&k.created_at)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(plan(&view, now, rotation, access_ttl))
}

fn unix_seconds(rfc3339: &str) -> Result<i64> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .with_context(|| format!("a signing key's creation time {rfc3339:?} is not RFC 3339"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    fn rotation() -> Rotation {
        Rotation {
            every: Duration::from_secs(24 * HOUR as u64),
            publish_ahead: Duration::from_secs(HOUR as u64),
        }
    }

    const TTL: Duration = Duration::from_secs(900);
    /// 900 s of tokens, 5 of leeway, 60 of noticing, 1 of rounding.
    const MARGIN: i64 = 966;

    #[test]
    fn the_first_key_signs_at_once() {
        let plan = plan(&[("a", 0)], 10, &rotation(), TTL);
        assert_eq!(plan.signing, 0);
        assert_eq!(plan.published, [0]);
        assert!(!plan.new_key_due);
    }

    #[test]
    fn a_new_key_is_due_after_the_period_and_published_before_it_signs() {
        assert!(plan(&[("a", 0)], 24 * HOUR, &rotation(), TTL).new_key_due);
        // b made at 24 h: published, a still signs for the hour ahead.
        let keys = [("b", 24 * HOUR), ("a", 0)];
        let during = plan(&keys, 24 * HOUR + 10, &rotation(), TTL);
        assert_eq!((during.signing, during.published.clone()), (1, vec![0, 1]));
        assert!(during.retired.is_empty() && !during.new_key_due);
        let after = plan(&keys, 25 * HOUR, &rotation(), TTL);
        assert_eq!((after.signing, after.published), (0, vec![0, 1]));
    }

    #[test]
    fn an_old_key_goes_once_its_last_token_has_expired() {
        let keys = [("b", 24 * HOUR), ("a", 0)];
        // b signs from 25 h; a's last token expires at 25 h + 900 s.
        let kept = plan(&keys, 25 * HOUR + MARGIN - 1, &rotation(), TTL);
        assert!(kept.retired.is_empty());
        let gone = plan(&keys, 25 * HOUR + MARGIN, &rotation(), TTL);
        assert_eq!(gone.retired, ["a"]);
        assert_eq!(gone.published, [0]);
    }

    #[test]
    fn a_rotation_of_zero_never_makes_a_key() {
        let never = Rotation {
            every: Duration::ZERO,
            ..rotation()
        };
        assert!(!plan(&[("a", 0)], 1000 * HOUR, &never, TTL).new_key_due);
    }
}
