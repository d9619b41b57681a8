//! Deduplication state of the executor: per-key locks, single-flight of copies, and the
//! short-lived memory of verified (target, digest) pairs.
//!
//! Must never: be the only proof that an image is present. A "recent" entry only lets the
//! executor replace a copy with one manifest HEAD at the target.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::time::Instant;

/// Async mutexes keyed by value, created on demand and freed when unused.
#[derive(Debug)]
pub struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, Weak<tokio::sync::Mutex<()>>>>,
}

impl<K: Eq + Hash + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Wait for exclusive use of `key`.
    pub async fn lock(&self, key: &K) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.locks.lock().expect("keyed locks poisoned");
            if map.len() > 1024 {
                map.retain(|_, w| w.strong_count() > 0);
            }
            match map.get(key).and_then(Weak::upgrade) {
                Some(l) => l,
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(key.clone(), Arc::downgrade(&l));
                    l
                }
            }
        };
        lock.lock_owned().await
    }
}

/// One shared computation per key at a time: every caller that arrives while it runs gets
/// its result.
#[derive(Debug)]
pub struct SingleFlight<K, V> {
    flights: Mutex<HashMap<K, Arc<OnceCell<V>>>>,
}

impl<K: Eq + Hash + Clone, V: Clone> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V: Clone> SingleFlight<K, V> {
    /// Run `work` for `key`, or join the run already under way. Returns the value and
    /// whether this caller joined another's run (a dedup hit). If the running caller is
    /// cancelled, a waiting caller takes over the work.
    pub async fn run<F: Future<Output = V>>(&self, key: &K, work: impl FnOnce() -> F) -> (V, bool) {
        let cell = {
            let mut map = self.flights.lock().expect("single flight poisoned");
            map.entry(key.clone()).or_default().clone()
        };
        let mut ran = false;
        let value = cell
            .get_or_init(|| {
                ran = true;
                work()
            })
            .await
            .clone();
        if ran {
            let mut map = self.flights.lock().expect("single flight poisoned");
            if map.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                map.remove(key);
            }
        }
        (value, !ran)
    }
}

/// Keys verified recently, each forgotten after a TTL.
#[derive(Debug)]
pub struct Recent<K> {
    ttl: Duration,
    max: usize,
    seen: Mutex<HashMap<K, Instant>>,
}

impl<K: Eq + Hash + Clone> Recent<K> {
    /// An empty memory.
    pub fn new(ttl: Duration, max: usize) -> Recent<K> {
        Recent {
            ttl,
            max: max.max(1),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Was `key` verified within the TTL?
    pub fn contains(&self, key: &K) -> bool {
        let map = self.seen.lock().expect("recent set poisoned");
        map.get(key).is_some_and(|t| t.elapsed() < self.ttl)
    }

    /// Remember `key` as verified now.
    pub fn insert(&self, key: K) {
        if self.ttl.is_zero() {
            return;
        }
        let mut map = self.seen.lock().expect("recent set poisoned");
        if map.len() >= self.max {
            let ttl = self.ttl;
            map.retain(|_, t| t.elapsed() < ttl);
            if map.len() >= self.max {
                // Still full of fresh entries: forgetting costs only extra HEADs later.
                map.clear();
            }
        }
        map.insert(key, Instant::now());
    }

    /// Forget `key` (the target no longer holds it).
    pub fn remove(&self, key: &K) {
        self.seen.lock().expect("recent set poisoned").remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let sf: Arc<SingleFlight<u32, u32>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut handles = Vec::new();
        for _ in 0..20 {
            let sf = sf.clone();
            let runs = runs.clone();
            handles.push(tokio::spawn(async move {
                sf.run(&7, || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    42
                })
                .await
            }));
        }
        let mut joined = 0;
        for h in handles {
            let (v, hit) = h.await.unwrap();
            assert_eq!(v, 42);
            joined += usize::from(hit);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(joined, 19);
        // A later call runs again: results are shared only while a run is under way.
        let (_, hit) = sf.run(&7, || async { 1 }).await;
        assert!(!hit);
    }

    #[tokio::test(start_paused = true)]
    async fn recent_entries_expire() {
        let r = Recent::new(Duration::from_secs(10), 2);
        r.insert("a");
        assert!(r.contains(&"a"));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!r.contains(&"a"));
        r.insert("b");
        r.insert("c");
        r.insert("d");
        assert!(r.contains(&"d"));
        r.remove(&"d");
        assert!(!r.contains(&"d"));
    }

    #[tokio::test]
    async fn keyed_locks_serialise_one_key_only() {
        let locks: KeyedLocks<&str> = KeyedLocks::default();
        let g = locks.lock(&"a").await;
        // Another key is free.
        let _h = tokio::time::timeout(Duration::from_millis(100), locks.lock(&"b"))
            .await
            .expect("other key must not wait");
        // The same key waits until the guard is gone.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), locks.lock(&"a"))
                .await
                .is_err()
        );
        drop(g);
        let _g2 = tokio::time::timeout(Duration::from_millis(100), locks.lock(&"a"))
            .await
            .expect("freed key must be available");
    }
}
