//! What the catalog answers most, kept in memory: product pages, listings and the categories.
//!
//! Browsing and search are 80 % of the shop's requests and the catalog rarely changes, so each
//! answer is kept for a short time (`SHOP_CATALOG_CACHE_MS`, default 1,000 ms; 0 turns the cache
//! off). A write through this process empties the cache at once; a write through another
//! replica shows here within that time. Reads that started before a write never store what
//! they read (a generation counter), so an emptied cache cannot be refilled with the old row.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries per map; full, a map is emptied (bounded memory, and refilled by the next reads).
const CAPACITY: usize = 2048;

pub struct ReadCache<K, V> {
    ttl: Duration,
    inner: Mutex<Entries<K, V>>,
}

struct Entries<K, V> {
    generation: u64,
    map: HashMap<K, (Instant, V)>,
}

/// What a read saw before going to the database: store its result only if no write came since.
#[derive(Debug, Clone, Copy)]
pub struct Generation(u64);

impl<K: Eq + Hash, V: Clone> ReadCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            inner: Mutex::new(Entries {
                generation: 0,
                map: HashMap::new(),
            }),
        }
    }

    /// The fresh value for `key`, or the generation to [`Self::put`] the database's answer with.
    pub fn get(&self, key: &K) -> Result<V, Generation> {
        let entries = self.inner.lock().expect("catalog cache lock");
        match entries.map.get(key) {
            Some((at, value)) if at.elapsed() < self.ttl => Ok(value.clone()),
            _ => Err(Generation(entries.generation)),
        }
    }

    pub fn put(&self, seen: Generation, key: K, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.inner.lock().expect("catalog cache lock");
        if entries.generation != seen.0 {
            return;
        }
        if entries.map.len() >= CAPACITY {
            entries.map.clear();
        }
        entries.map.insert(key, (Instant::now(), value));
    }

    /// After a write: forget everything, and refuse what reads that started before it bring.
    pub fn clear(&self) {
        let mut entries = self.inner.lock().expect("catalog cache lock");
        entries.generation += 1;
        entries.map.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_what_was_put_until_cleared() {
        let cache = ReadCache::new(Duration::from_secs(60));
        let seen = cache.get(&"a").unwrap_err();
        cache.put(seen, "a", 1);
        assert_eq!(cache.get(&"a").ok(), Some(1));
        cache.clear();
        assert!(cache.get(&"a").is_err());
    }

    #[test]
    fn a_read_older_than_a_write_is_not_stored() {
        let cache = ReadCache::new(Duration::from_secs(60));
        let seen = cache.get(&"a").unwrap_err();
        cache.clear();
        cache.put(seen, "a", 1);
        assert!(
            cache.get(&"a").is_err(),
            "the value read before the write was stored"
        );
    }

    #[test]
    fn entries_expire() {
        let cache = ReadCache::new(Duration::from_millis(20));
        let seen = cache.get(&"a").unwrap_err();
        cache.put(seen, "a", 1);
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.get(&"a").is_err());
    }

    #[test]
    fn a_zero_ttl_stores_nothing_and_a_full_map_is_emptied() {
        let off = ReadCache::new(Duration::ZERO);
        let seen = off.get(&1).unwrap_err();
        off.put(seen, 1, 1);
        assert!(off.get(&1).is_err());

        let cache = ReadCache::new(Duration::from_secs(60));
        for key in 0..=CAPACITY {
            let seen = cache.get(&key).unwrap_err();
            cache.put(seen, key, key);
        }
        assert!(cache.get(&0).is_err(), "the map grew past its capacity");
        assert_eq!(cache.get(&CAPACITY).ok(), Some(CAPACITY));
    }
}
