//! A bounded cache of parsed and prepared HPKE recipient keys (issue 3, item 6).
//!
//! MLS encrypts path secrets to the public keys of the tree; a member that commits again
//! and again encrypts to the same keys (every leaf and parent key that did not change since).
//! The cache keeps each key parsed and validated (the ML-KEM modulus check, point decoding),
//! and *prepared* for encapsulation once that pays:
//! - ML-KEM keys are prepared on first use: preparing builds the matrix that a single
//!   encapsulation builds anyway, so it costs nothing extra.
//! - X25519 and X-Wing keys are prepared on their [`CacheConfig::prepare_after`]-th use:
//!   the X25519 table costs about 1 ms to build and saves about 25 us per encapsulation,
//!   so only keys encapsulated to repeatedly should pay for it.
//!
//! The cache holds at most [`CacheConfig::capacity`] keys; when full it evicts the least
//! recently used eighth. It holds only public keys, so nothing in it is secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::hpke::{HpkeError, Kem, RecipientKey};

/// Cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// The most keys kept; 0 turns the cache off.
    pub capacity: usize,
    /// After how many uses an X25519 or X-Wing key is prepared (1 = at once).
    pub prepare_after: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        // 1024 prepared X-Wing keys are about 40 MB; 4 uses are a key that is part of the
        // tree across several commits.
        CacheConfig {
            capacity: 1024,
            prepare_after: 4,
        }
    }
}

struct Entry {
    key: Arc<RecipientKey>,
    uses: u32,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<(Kem, Vec<u8>), Entry>,
    tick: u64,
    hits: u64,
    misses: u64,
    prepared: u64,
}

/// Counters of the cache, for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Keys currently cached.
    pub len: usize,
    /// Lookups that found the key.
    pub hits: u64,
    /// Lookups that parsed the key.
    pub misses: u64,
    /// Keys prepared so far.
    pub prepared: u64,
}

/// The cache; shared by all threads using one provider.
pub struct KeyCache {
    config: CacheConfig,
    inner: Mutex<Inner>,
}

impl core::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyCache")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish()
    }
}

fn prepares_at_once(kem: Kem) -> bool {
    matches!(kem, Kem::MlKem768 | Kem::MlKem1024)
}

fn preparable(kem: Kem) -> bool {
    matches!(
        kem,
        Kem::MlKem768 | Kem::MlKem1024 | Kem::XWing | Kem::DhKemX25519
    )
}

impl KeyCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        KeyCache {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The settings.
    pub fn config(&self) -> CacheConfig {
        self.config
    }

    /// The counters.
    pub fn stats(&self) -> CacheStats {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        CacheStats {
            len: inner.map.len(),
            hits: inner.hits,
            misses: inner.misses,
            prepared: inner.prepared,
        }
    }

    /// The recipient key for `pk`, parsed (and prepared, per the policy) once.
    ///
    /// # Errors
    /// [`HpkeError::InvalidPublicKey`] for an invalid key (never cached).
    pub fn get(&self, kem: Kem, pk: &[u8]) -> Result<Arc<RecipientKey>, HpkeError> {
        if self.config.capacity == 0 {
            return Ok(Arc::new(RecipientKey::parse(kem, pk)?));
        }
        let upgrade = {
            let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            inner.tick += 1;
            let tick = inner.tick;
            let found = match inner.map.get_mut(&(kem, pk.to_vec())) {
                Some(e) => {
                    e.uses = e.uses.saturating_add(1);
                    e.last_used = tick;
                    let due = !e.key.is_prepared() && e.uses >= self.config.prepare_after;
                    Some((Arc::clone(&e.key), due))
                }
                None => None,
            };
            match found {
                Some((key, false)) => {
                    inner.hits += 1;
                    return Ok(key);
                }
                Some((_, true)) => {
                    inner.hits += 1;
                    true
                }
                None => {
                    inner.misses += 1;
                    false
                }
            }
        };
        // Parse and prepare outside the lock: preparing an X25519 table takes about 1 ms.
        let mut key = RecipientKey::parse(kem, pk)?;
        if preparable(kem) && (upgrade || prepares_at_once(kem) || self.config.prepare_after <= 1) {
            key.prepare();
        }
        let key = Arc::new(key);
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if key.is_prepared() && preparable(kem) {
            inner.prepared += 1;
        }
        if !upgrade && inner.map.len() >= self.config.capacity {
            evict(&mut inner, self.config.capacity);
        }
        let tick = inner.tick;
        let entry = inner.map.entry((kem, pk.to_vec())).or_insert(Entry {
            key: Arc::clone(&key),
            uses: 1,
            last_used: tick,
        });
        if key.is_prepared() && !entry.key.is_prepared() {
            entry.key = Arc::clone(&key);
        }
        Ok(key)
    }
}

/// Drops the least recently used eighth of the entries (at least one).
fn evict(inner: &mut Inner, capacity: usize) {
    let drop_n = (capacity / 8).max(1);
    let mut ticks: Vec<u64> = inner.map.values().map(|e| e.last_used).collect();
    ticks.sort_unstable();
    let cutoff = ticks.get(drop_n - 1).copied().unwrap_or(0);
    inner.map.retain(|_, e| e.last_used > cutoff);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hpke::{DeriveProfile, derive_key_pair};

    fn pk(kem: Kem, i: u8) -> Vec<u8> {
        derive_key_pair(kem, &[i; 32], DeriveProfile::Plain)
            .unwrap()
            .public
    }

    #[test]
    fn mlkem_prepared_at_once_xwing_after_threshold() {
        let cache = KeyCache::new(CacheConfig {
            capacity: 16,
            prepare_after: 3,
        });
        let m = pk(Kem::MlKem768, 1);
        assert!(cache.get(Kem::MlKem768, &m).unwrap().is_prepared());
        let x = pk(Kem::XWing, 2);
        assert!(!cache.get(Kem::XWing, &x).unwrap().is_prepared());
        assert!(!cache.get(Kem::XWing, &x).unwrap().is_prepared());
        assert!(cache.get(Kem::XWing, &x).unwrap().is_prepared());
        assert!(cache.get(Kem::XWing, &x).unwrap().is_prepared());
        let s = cache.stats();
        assert_eq!((s.len, s.misses, s.hits, s.prepared), (2, 2, 3, 2));
    }

    #[test]
    fn bounded_and_rejects_bad_keys() {
        let cache = KeyCache::new(CacheConfig {
            capacity: 8,
            prepare_after: 100,
        });
        for i in 0..40 {
            cache
                .get(Kem::DhKemX25519, &pk(Kem::DhKemX25519, i))
                .unwrap();
            assert!(cache.stats().len <= 8);
        }
        assert_eq!(
            cache.get(Kem::XWing, &[0u8; 10]).unwrap_err(),
            HpkeError::InvalidPublicKey
        );
        let mut bad = pk(Kem::MlKem768, 3);
        bad[0] = 0xff;
        bad[1] = 0xff; // a coefficient >= q: fails the FIPS 203 modulus check
        assert_eq!(
            cache.get(Kem::MlKem768, &bad).unwrap_err(),
            HpkeError::InvalidPublicKey
        );
    }

    #[test]
    fn off_when_capacity_zero() {
        let cache = KeyCache::new(CacheConfig {
            capacity: 0,
            prepare_after: 1,
        });
        let x = pk(Kem::XWing, 4);
        cache.get(Kem::XWing, &x).unwrap();
        assert_eq!(cache.stats().len, 0);
    }
}
