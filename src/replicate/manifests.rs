//! Manifest PUTs into one target repository, coordinated within the process per
//! (target host, repository, manifest digest).
//!
//! Why: distribution's filesystem driver rewrites a manifest's revision link in place on
//! every PUT of that manifest (by digest or by tag), and the PUT of an index reads the
//! links of the manifests it lists. An index PUT that runs while another copy re-PUTs
//! one of its children into the same repository can find the child missing and is
//! refused (`400 MANIFEST_BLOB_UNKNOWN` or `DIGEST_INVALID`). Two copies share children
//! whenever an index and one of its platform images, or two indexes listing the same
//! image, go to the same repository at once. Three pieces:
//!
//! - **single-flight** ([`Manifests::flight`]): one copy of a manifest into a repository
//!   at a time; a second copier waits for the first, then finds the manifest in the
//!   memory (or HEADs it, for a root);
//! - **memory** ([`Manifests::remembered`]): manifests this process pushed to (or found
//!   by HEAD in) a repository within [`MANIFEST_MEMORY_TTL`]; a child found there is not
//!   pushed again. Bounded by [`MAX_KNOWN_MANIFESTS`] (cleared when full), and an entry
//!   is forgotten when this process deletes the manifest;
//! - **PUT exclusion** ([`Manifests::put_turn`]): a PUT of a manifest holds its lock
//!   exclusively and the locks of the manifests it lists shared, so no manifest is
//!   re-PUT while an index listing it is being PUT, even by a tag write;
//! - **root bytes** ([`Manifests::root`]): the bytes of root manifests a copy verified in
//!   a repository within the TTL (at most [`MAX_ROOT_BYTES`] in all), so that pointing
//!   another tag at the same digest (a release's `1.2.3`, `1.2`, `latest`; a promotion's
//!   ten tags) PUTs them without a GET first. The PUT itself is still checked (the
//!   registry's digest for the bytes) and the tag read back.
//!
//! Deadlock freedom: a PUT takes all its locks in key order and holds nothing else of
//! this module's PUT locks while waiting; single-flights are taken parent before child
//! (the manifest graph is acyclic) and are never awaited while a PUT turn is held.
//!
//! Must never: be the only proof that a manifest is present. A remembered child lets a
//! copy skip it; when the parent's PUT is then refused, the copy forgets it and pushes
//! it again (`put_again_with_stale_children`). Other processes are not coordinated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};
use tokio::time::Instant;

use super::{Error, ErrorClass, Job, Registries, Replicator, dst_err};
use crate::oci::{Digest, Locator, Manifest};
use crate::registry::{self, ManifestBytes, PutManifest, Registry};

/// How long a pushed manifest is remembered as present in its repository.
pub const MANIFEST_MEMORY_TTL: Duration = Duration::from_secs(600);

/// Upper bound on remembered manifests before the memory is reset.
pub const MAX_KNOWN_MANIFESTS: usize = 100_000;

/// Most bytes of root manifests kept for tag writes; the memory is reset beyond it.
pub const MAX_ROOT_BYTES: usize = 4 << 20;

/// Locks kept before unused ones are swept.
const SWEEP_ABOVE: usize = 1024;

/// A manifest in a repository of a registry host.
pub(super) type ManifestKey = (String, String, Digest);

/// A root manifest's bytes and when a copy verified them at the target.
type Verified = (Instant, ManifestBytes);

/// The key of `digest` in `repo` at `host`.
pub(super) fn key(host: &str, repo: &str, digest: &Digest) -> ManifestKey {
    (host.to_owned(), repo.to_owned(), digest.clone())
}

/// The manifests `bytes` lists (an index's children); none for anything else.
pub(super) fn children_of(media_type: &str, bytes: &[u8]) -> Vec<Digest> {
    match Manifest::parse(media_type, bytes) {
        Ok(Manifest::Index { manifests, .. }) => manifests.into_iter().map(|d| d.digest).collect(),
        _ => Vec::new(),
    }
}

/// The per-process state; one per [`Replicator`](super::Replicator).
#[derive(Default)]
pub(super) struct Manifests {
    flights: Mutex<HashMap<ManifestKey, Weak<tokio::sync::Mutex<()>>>>,
    puts: Mutex<HashMap<ManifestKey, Weak<RwLock<()>>>>,
    pushed: Mutex<HashMap<ManifestKey, Instant>>,
    /// Verified root manifests per repository, with their total size in bytes.
    roots: Mutex<(usize, HashMap<ManifestKey, Verified>)>,
}

/// A held PUT turn: dropping it lets the next PUT in.
pub(super) struct PutTurn {
    _exclusive: OwnedRwLockWriteGuard<()>,
    _shared: Vec<OwnedRwLockReadGuard<()>>,
}

fn shared_lock<T: Default>(map: &Mutex<HashMap<ManifestKey, Weak<T>>>, key: &ManifestKey) -> Arc<T> {
    let mut map = map.lock().expect("manifest locks poisoned");
    if map.len() > SWEEP_ABOVE {
        map.retain(|_, w| w.strong_count() > 0);
    }
    match map.get(key).and_then(Weak::upgrade) {
        Some(l) => l,
        None => {
            let l = Arc::new(T::default());
            map.insert(key.clone(), Arc::downgrade(&l));
            l
        }
    }
}

impl Manifests {
    /// Wait for the turn to copy `key` (held for the whole copy of that manifest).
    pub(super) async fn flight(&self, key: &ManifestKey) -> OwnedMutexGuard<()> {
        shared_lock(&self.flights, key).lock_owned().await
    }

    /// Wait until `digest` may be PUT into `repo` at `host`: no other PUT of it, and no
    /// PUT of one of `children` (which it lists), is running. Hold the turn for the PUT.
    pub(super) async fn put_turn(&self, host: &str, repo: &str, digest: &Digest, children: &[Digest]) -> PutTurn {
        let mut order: Vec<&Digest> = children.iter().filter(|c| *c != digest).collect();
        order.push(digest);
        order.sort();
        order.dedup();
        let mut exclusive = None;
        let mut shared = Vec::with_capacity(order.len());
        for d in order {
            let lock = shared_lock(&self.puts, &key(host, repo, d));
            if d == digest {
                exclusive = Some(lock.write_owned().await);
            } else {
                shared.push(lock.read_owned().await);
            }
        }
        PutTurn {
            _exclusive: exclusive.expect("the manifest itself is in the order"),
            _shared: shared,
        }
    }

    /// Was `key` pushed (or seen present) within the TTL?
    pub(super) fn remembered(&self, key: &ManifestKey) -> bool {
        let map = self.pushed.lock().expect("manifest memory poisoned");
        map.get(key).is_some_and(|t| t.elapsed() < MANIFEST_MEMORY_TTL)
    }

    /// Remember `key` as present now.
    pub(super) fn remember(&self, key: ManifestKey) {
        let mut map = self.pushed.lock().expect("manifest memory poisoned");
        if map.len() >= MAX_KNOWN_MANIFESTS {
            map.clear();
        }
        map.insert(key, Instant::now());
    }

    /// Forget `key` (deleted, or refused as missing by a registry).
    pub(super) fn forget(&self, key: &ManifestKey) {
        self.pushed.lock().expect("manifest memory poisoned").remove(key);
        let mut roots = self.roots.lock().expect("root memory poisoned");
        if let Some((_, m)) = roots.1.remove(key) {
            roots.0 -= m.bytes.len();
        }
    }

    /// Keep `m`, a root manifest just verified at `key` (its digest is `key`'s).
    pub(super) fn remember_root(&self, key: ManifestKey, m: &ManifestBytes) {
        debug_assert_eq!(key.2, m.digest);
        let mut roots = self.roots.lock().expect("root memory poisoned");
        let (total, map) = &mut *roots;
        if *total + m.bytes.len() > MAX_ROOT_BYTES {
            map.clear();
            *total = 0;
        }
        if m.bytes.len() <= MAX_ROOT_BYTES {
            *total += m.bytes.len();
            if let Some((_, old)) = map.insert(key, (Instant::now(), m.clone())) {
                *total -= old.bytes.len();
            }
        }
    }

    /// The bytes of the root manifest verified at `key` within the TTL.
    pub(super) fn root(&self, key: &ManifestKey) -> Option<ManifestBytes> {
        let roots = self.roots.lock().expect("root memory poisoned");
        roots
            .1
            .get(key)
            .filter(|(t, _)| t.elapsed() < MANIFEST_MEMORY_TTL)
            .map(|(_, m)| m.clone())
    }
}

impl<S: Registries> Replicator<S> {
    /// PUT `m` into `repo` at `loc` (its digest or a tag) in its turn: never while another
    /// PUT of it, or of a manifest it lists, runs in this process. `children` are the
    /// manifests it lists when the caller has parsed them (`None`: parsed here).
    pub(super) async fn put_manifest(
        &self,
        dst: &S::Registry,
        repo: &str,
        loc: &Locator,
        m: &ManifestBytes,
        children: Option<&[Digest]>,
    ) -> Result<PutManifest, registry::Error> {
        let parsed;
        let children = match children {
            Some(c) => c,
            None => {
                parsed = children_of(&m.media_type, &m.bytes);
                &parsed
            }
        };
        let _turn = self.manifests.put_turn(dst.host(), repo, &m.digest, children).await;
        dst.put_manifest(repo, loc, &m.media_type, m.bytes.clone()).await
    }

    /// The PUT of `m` (an index) failed with `err`. If the copy skipped some of its
    /// children only because the engine remembered them at the target, and the target
    /// refused the index for good (e.g. `MANIFEST_BLOB_UNKNOWN`: a child was deleted
    /// since), forget them, copy them again (HEAD first) and PUT the index once more.
    /// Otherwise `err` stands.
    pub(super) async fn put_again_with_stale_children(
        &self,
        job: &Job<S::Registry>,
        put_loc: &Locator,
        m: &ManifestBytes,
        children: &[Digest],
        err: registry::Error,
    ) -> Result<registry::PutManifest, Error> {
        let stale: Vec<Digest> = {
            let mut remembered = job.remembered.lock().expect("remembered lock");
            children.iter().filter(|c| remembered.remove(*c)).cloned().collect()
        };
        if stale.is_empty() || err.class() != ErrorClass::Permanent {
            return Err(dst_err(err));
        }
        tracing::warn!(
            digest = %m.digest, error = %err, children = stale.len(),
            "the target refused an index whose children were remembered as pushed; pushing them again"
        );
        for c in &stale {
            self.manifests.forget(&key(job.dst.host(), &job.dst_repo, c));
            job.visited.lock().expect("visited lock").remove(c);
        }
        for c in stale {
            self.copy_manifest_checked(job, c, None, None, true).await?;
        }
        self.put_manifest(&*job.dst, &job.dst_repo, put_loc, m, Some(children))
            .await
            .map_err(dst_err)
    }

    /// This process deleted `digest` from `repo` at `host`: it is no longer remembered
    /// there.
    pub(super) fn forget_manifest(&self, host: &str, repo: &str, digest: &Digest) {
        self.manifests.forget(&key(host, repo, digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    #[tokio::test(start_paused = true)]
    async fn memory_expires_and_forgets() {
        let m = Manifests::default();
        let k = key("h", "r", &d("a"));
        assert!(!m.remembered(&k));
        m.remember(k.clone());
        assert!(m.remembered(&k));
        assert!(!m.remembered(&key("h", "other", &d("a"))), "per repository");
        tokio::time::advance(MANIFEST_MEMORY_TTL).await;
        assert!(!m.remembered(&k), "expired");
        m.remember(k.clone());
        m.forget(&k);
        assert!(!m.remembered(&k));
    }

    #[tokio::test(start_paused = true)]
    async fn root_bytes_are_kept_per_repository_bounded_and_forgotten() {
        let m = Manifests::default();
        let bytes = |n: usize| {
            let b = bytes::Bytes::from(vec![b'x'; n]);
            ManifestBytes {
                digest: Digest::sha256_of(&b),
                bytes: b,
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            }
        };
        let small = bytes(10);
        let k = key("h", "r", &small.digest);
        m.remember_root(k.clone(), &small);
        assert_eq!(m.root(&k).map(|r| r.bytes), Some(small.bytes.clone()));
        assert!(m.root(&key("h", "other", &small.digest)).is_none(), "per repository");
        m.forget(&k);
        assert!(m.root(&k).is_none(), "forgotten with the manifest");
        m.remember_root(k.clone(), &small);
        tokio::time::advance(MANIFEST_MEMORY_TTL).await;
        assert!(m.root(&k).is_none(), "expired");
        // Past the byte bound the memory starts over; one over the bound is not kept.
        m.remember_root(k.clone(), &small);
        let big = bytes(MAX_ROOT_BYTES - 5);
        let kb = key("h", "r", &big.digest);
        m.remember_root(kb.clone(), &big);
        assert!(m.root(&k).is_none() && m.root(&kb).is_some());
        let huge = bytes(MAX_ROOT_BYTES + 1);
        m.remember_root(key("h", "r", &huge.digest), &huge);
        assert!(m.root(&key("h", "r", &huge.digest)).is_none());
        assert_eq!(m.roots.lock().unwrap().0, 0);
    }

    #[tokio::test]
    async fn a_child_put_waits_for_the_put_of_an_index_listing_it() {
        let m = Arc::new(Manifests::default());
        let (index, child, other) = (d("index"), d("child"), d("other"));
        let parent = m.put_turn("h", "r", &index, std::slice::from_ref(&child)).await;
        // Another index listing the same child may go at the same time.
        let sibling = m.put_turn("h", "r", &other, std::slice::from_ref(&child)).await;
        drop(sibling);
        // The same child in another repository is independent.
        drop(m.put_turn("h", "elsewhere", &child, &[]).await);
        let m2 = m.clone();
        let c = child.clone();
        let waiter = tokio::spawn(async move {
            drop(m2.put_turn("h", "r", &c, &[]).await);
        });
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "the child PUT waits for the index PUT");
        drop(parent);
        waiter.await.unwrap();
    }
}
