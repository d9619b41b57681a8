//! The copy engine: replicate one image (by tag or digest) from a source registry to a
//! target repository, digest-preserving, then prove the target holds exactly the same
//! thing.
//!
//! Order of work, which is also the order of safety:
//! 1. read the source root manifest (raw bytes, verified), unless the caller already did
//!    ([`Known`]);
//! 2. HEAD the target root first and skip what is there (the children of an index the
//!    target lacks are not HEADed: their blobs are checked);
//! 3. blobs: mount from a repository known to hold the blob (no HEAD first), else HEAD,
//!    else stream source → [`verify::VerifyStream`] → target upload; never a whole blob
//!    in memory; one upload per (target host, digest) at a time (single-flight);
//! 4. child manifests, then the root, pushed from the exact source bytes: by digest, or
//!    under its first tag when no referrer has to land before the tags; one copy of a
//!    manifest per target repository at a time, a child this process pushed there
//!    recently is not pushed again, and no manifest is re-PUT while an index listing it
//!    goes up (`manifests.rs`);
//! 5. referrers (OCI referrers API, or the `sha256-<hex>` fallback tag) and cosign
//!    `sha256-<hex>.sig/.att/.sbom` tags;
//! 6. tags last, so no tag ever points at an incomplete graph (or before its signatures);
//! 7. verify: read the target back by every tag (by digest when there is none); bytes
//!    must hash to the source digest. A tag's first read is its check and, when in place,
//!    its verification.
//!
//! Must never: settle, ack or know about messages (see `lib.rs`); push a manifest before
//! everything it references; report success before step 7.

mod blob;
mod manifests;
mod referrers;

use referrers::referrer_descriptor;
mod ops;
pub mod verify;

pub use manifests::{MANIFEST_MEMORY_TTL, MAX_KNOWN_MANIFESTS, MAX_ROOT_BYTES};
pub use ops::{Deletion, Kept, MAX_OTHER_TAGS, TAG_CHECKS_IN_FLIGHT};

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt as _, TryStreamExt as _};
use tokio::sync::{OnceCell, Semaphore};

use crate::oci::{self, Descriptor, Digest, Locator, Manifest, Reference};
use crate::registry::{self, ManifestBytes, Mount, Registry};
use crate::retry::Schedule;

pub use crate::registry::{ErrorClass, Registries};

/// Which side of a copy an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source registry.
    Source,
    /// The target registry.
    Target,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// Errors of a copy. `class()` tells the caller whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A registry operation failed.
    #[error("{side} {source}")]
    Registry {
        /// Which registry.
        side: Side,
        /// The cause.
        #[source]
        source: registry::Error,
    },
    /// A platform filter left nothing to copy.
    #[error("no manifest in {reference} matches platforms {platforms:?}")]
    NoPlatformMatch {
        /// The index.
        reference: String,
        /// The filter.
        platforms: Vec<String>,
    },
    /// The source reference names neither a tag nor a digest.
    #[error("source reference {0} names no tag or digest")]
    NoLocator(String),
    /// The target read back something other than what was copied.
    #[error("verification failed: {reference} resolves to {actual}, expected {expected}")]
    VerifyFailed {
        /// The target reference read back.
        reference: String,
        /// Source digest.
        expected: Digest,
        /// What the target holds.
        actual: Digest,
    },
}

impl Error {
    /// Classify for the settle policy.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Registry { source, .. } => source.class(),
            Error::NoPlatformMatch { .. } | Error::NoLocator(_) => ErrorClass::Permanent,
            Error::VerifyFailed { .. } => ErrorClass::Transient,
        }
    }

    /// The registry error underneath, if any.
    pub fn registry_error(&self) -> Option<&registry::Error> {
        match self {
            Error::Registry { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn src_err(e: registry::Error) -> Error {
    Error::Registry {
        side: Side::Source,
        source: e,
    }
}
fn dst_err(e: registry::Error) -> Error {
    Error::Registry {
        side: Side::Target,
        source: e,
    }
}

/// Engine options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Copy only these platforms (`os/arch[/variant]`) of an index. Empty = all. A subset
    /// changes the index, and so its digest: the target gets a new, smaller index.
    pub platforms: Vec<String>,
    /// Copy referrers and cosign tags.
    pub referrers: bool,
    /// Concurrent blob transfers, shared by every copy of this engine.
    pub blob_jobs: usize,
    /// Attempts per blob transfer (each with a fresh source stream and upload session).
    pub blob_attempts: u32,
    /// First delay between blob attempts (doubles, full jitter).
    pub blob_retry_delay: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            platforms: Vec::new(),
            referrers: true,
            blob_jobs: 4,
            blob_attempts: 3,
            blob_retry_delay: Duration::from_millis(500),
        }
    }
}

/// Where a copy goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Target registry host.
    pub registry: String,
    /// Target repository.
    pub repository: String,
    /// Tags to point at the copied digest (empty: by digest only).
    pub tags: Vec<String>,
}

/// One unit of work: copy `source` to `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// What to copy (tag and/or digest).
    pub source: Reference,
    /// Where to.
    pub target: Target,
}

impl Task {
    /// `SRC DST` as on the command line: DST's tag, else SRC's tag, is written.
    pub fn from_refs(source: Reference, dest: &Reference) -> Task {
        let tags = dest.tag.clone().or_else(|| source.tag.clone()).into_iter().collect();
        Task {
            target: Target {
                registry: dest.registry.clone(),
                repository: dest.repository.clone(),
                tags,
            },
            source,
        }
    }

    /// The target as a reference string, for logs.
    pub fn target_ref(&self) -> String {
        match self.target.tags.first() {
            Some(t) => format!("{}/{}:{t}", self.target.registry, self.target.repository),
            None => format!("{}/{}", self.target.registry, self.target.repository),
        }
    }
}

/// Counters describing what a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blob bytes streamed from source to target (mounted and skipped blobs excluded).
    pub bytes_copied: u64,
    /// Blobs streamed.
    pub blobs_uploaded: u64,
    /// Blobs mounted from another repository of the target registry.
    pub blobs_mounted: u64,
    /// Blobs the target already had.
    pub blobs_skipped: u64,
    /// Manifests pushed (children, roots, referrers).
    pub manifests_pushed: u64,
    /// Manifests the target already had.
    pub manifests_skipped: u64,
    /// Referrer and signature manifests pushed.
    pub referrers_copied: u64,
    /// Tags written (including cosign and fallback tags).
    pub tags_written: u64,
    /// Blob transfer attempts that failed and were retried.
    pub blob_retries: u64,
}

#[derive(Default)]
struct StatsAcc {
    bytes_copied: AtomicU64,
    blobs_uploaded: AtomicU64,
    blobs_mounted: AtomicU64,
    blobs_skipped: AtomicU64,
    manifests_pushed: AtomicU64,
    manifests_skipped: AtomicU64,
    referrers_copied: AtomicU64,
    tags_written: AtomicU64,
    blob_retries: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl StatsAcc {
    fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            bytes_copied: g(&self.bytes_copied),
            blobs_uploaded: g(&self.blobs_uploaded),
            blobs_mounted: g(&self.blobs_mounted),
            blobs_skipped: g(&self.blobs_skipped),
            manifests_pushed: g(&self.manifests_pushed),
            manifests_skipped: g(&self.manifests_skipped),
            referrers_copied: g(&self.referrers_copied),
            tags_written: g(&self.tags_written),
            blob_retries: g(&self.blob_retries),
        }
    }
}

/// The verified result of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Something was written; the target now verifiably holds `digest`.
    Replicated {
        /// The root digest at the target (equal to the source's, unless a platform
        /// subset was asked for).
        digest: Digest,
        /// What was done.
        stats: Stats,
    },
    /// The target already held everything; nothing was written.
    AlreadyPresent {
        /// The root digest.
        digest: Digest,
        /// What was checked.
        stats: Stats,
    },
}

impl Outcome {
    /// The verified root digest.
    pub fn digest(&self) -> &Digest {
        match self {
            Outcome::Replicated { digest, .. } | Outcome::AlreadyPresent { digest, .. } => digest,
        }
    }
    /// The counters.
    pub fn stats(&self) -> &Stats {
        match self {
            Outcome::Replicated { stats, .. } | Outcome::AlreadyPresent { stats, .. } => stats,
        }
    }
}

/// Live totals across all copies of one engine, for progress bars.
#[derive(Debug, Default)]
pub struct Progress {
    /// Blob bytes streamed so far.
    pub bytes: Arc<AtomicU64>,
    /// Blobs finished (uploaded, mounted or skipped).
    pub blobs_done: AtomicU64,
    /// Blobs seen in the graphs so far.
    pub blobs_total: AtomicU64,
}

/// A blob at a registry host: the single-flight and location-memory key.
type BlobKey = (String, Digest);

/// Upper bound on remembered blob locations before the memory is reset.
const MAX_KNOWN_LOCATIONS: usize = 200_000;

/// The copy engine. Share one per process: it holds the single-flight tables (blobs per
/// target host, manifests per target repository), the blob location memory (for mounts),
/// the memory of manifests pushed per repository and the global transfer limit.
pub struct Replicator<S: Registries> {
    registries: Arc<S>,
    opts: Options,
    inflight: Mutex<HashMap<BlobKey, Arc<tokio::sync::Mutex<()>>>>,
    locations: Mutex<HashMap<BlobKey, Vec<String>>>,
    manifests: manifests::Manifests,
    transfers: Arc<Semaphore>,
    progress: Arc<Progress>,
}

/// What the caller of [`Replicator::replicate_known`] already read, so the copy does not
/// read it again. `Known::default()` (nothing known) is always correct.
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// The source root manifest as the caller read it (the registry client checked its
    /// bytes against their digest). Used only when the task names the source by this
    /// digest.
    pub root: Option<ManifestBytes>,
    /// The source repository's tags as the caller just listed them: the copy looks for
    /// referrer fallback and cosign tags in them instead of listing again.
    pub source_tags: Option<Arc<Vec<String>>>,
    /// The caller just saw that the task's target tags do not point at the source digest
    /// (absent, or elsewhere): they are written without being read first. They are still
    /// read back after the write.
    pub tags_stale: bool,
}

/// What a copy knows about one target tag before writing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagState {
    /// The root manifest was pushed under this tag.
    Pushed,
    /// The caller saw it elsewhere or absent.
    Stale,
    /// Not known: read it first.
    Unknown,
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Per-copy state.
struct Job<R> {
    src: Arc<R>,
    dst: Arc<R>,
    src_repo: String,
    dst_repo: String,
    stats: StatsAcc,
    visited: Mutex<HashSet<Digest>>,
    /// Children skipped because the engine remembered them at the target (not checked
    /// by this copy): pushed again if their parent is refused.
    remembered: Mutex<HashSet<Digest>>,
    src_tags: OnceCell<Arc<Vec<String>>>,
    /// The source's referrers index per subject, once asked (`None`: no API).
    referrers: Mutex<HashMap<Digest, Option<Bytes>>>,
    /// Referrers whose subject the target did not index itself: subject → descriptors.
    pending_fallback: Mutex<HashMap<Digest, Vec<serde_json::Value>>>,
    /// Fallback tags copied byte-for-byte from the source (no merge needed).
    copied_fallback: Mutex<HashSet<Digest>>,
}

impl<S: Registries> Replicator<S> {
    /// A new engine over `registries`.
    pub fn new(registries: Arc<S>, opts: Options) -> Replicator<S> {
        let jobs = opts.blob_jobs.max(1);
        Replicator {
            registries,
            opts,
            inflight: Mutex::new(HashMap::new()),
            locations: Mutex::new(HashMap::new()),
            manifests: manifests::Manifests::default(),
            transfers: Arc::new(Semaphore::new(jobs)),
            progress: Arc::new(Progress::default()),
        }
    }

    /// The registry clients this engine copies between.
    pub fn registries(&self) -> &Arc<S> {
        &self.registries
    }

    /// Live totals.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Copy one image and verify it. See the module docs for the order of work.
    pub async fn replicate(&self, task: &Task) -> Result<Outcome, Error> {
        self.replicate_known(task, Known::default()).await
    }

    /// [`replicate`](Self::replicate), skipping the reads `known` already answers.
    pub async fn replicate_known(&self, task: &Task, known: Known) -> Result<Outcome, Error> {
        // Resolve both hosts before any I/O: an unknown host is refused without contact.
        let src = self.registries.get(&task.source.registry).map_err(src_err)?;
        let dst = self.registries.get(&task.target.registry).map_err(dst_err)?;
        let locator = task
            .source
            .locator()
            .ok_or_else(|| Error::NoLocator(task.source.to_string()))?;
        // A root the caller read is used only when it is what the task names.
        let preloaded = known.root.filter(|m| match &locator {
            Locator::Digest(d) => &m.digest == d,
            Locator::Tag(_) => false,
        });
        let mut root = match preloaded {
            Some(m) => m,
            None => src
                .get_manifest(&task.source.repository, &locator)
                .await
                .map_err(src_err)?,
        };
        let source_ref = task.source.to_string();
        let target_ref = task.target_ref();
        tracing::debug!(%source_ref, %target_ref, digest = %root.digest, "source resolved");
        if !self.opts.platforms.is_empty() {
            root = self.filter_platforms(&source_ref, root)?;
        }
        let src_tags = OnceCell::new();
        if let Some(tags) = known.source_tags {
            src_tags.set(tags).expect("a fresh cell");
        }
        let job = Job {
            src,
            dst,
            src_repo: task.source.repository.clone(),
            dst_repo: task.target.repository.clone(),
            stats: StatsAcc::default(),
            visited: Mutex::new(HashSet::new()),
            remembered: Mutex::new(HashSet::new()),
            src_tags,
            referrers: Mutex::new(HashMap::new()),
            pending_fallback: Mutex::new(HashMap::new()),
            copied_fallback: Mutex::new(HashSet::new()),
        };
        let parsed = Manifest::parse(&root.media_type, &root.bytes).map_err(|e| {
            src_err(registry::Error::InvalidManifest {
                reference: source_ref.clone(),
                source: e,
            })
        })?;
        let mut subjects = vec![root.digest.clone()];
        if let Manifest::Index { manifests, .. } = &parsed {
            subjects.extend(manifests.iter().map(|d| d.digest.clone()));
        }
        // The root goes up under its first tag when nothing has to land between the root
        // and its tags (no referrer or cosign tag to copy): one PUT instead of a PUT by
        // digest, a tag check and a PUT by tag. With referrers, the root goes up by digest
        // and the tags follow them, so a tag never appears before its signatures.
        let first_tag = task.target.tags.first().map(String::as_str);
        let root_tag = match first_tag {
            Some(t) if !self.opts.referrers || !self.has_referrers(&job, &subjects).await? => Some(t),
            _ => None,
        };
        let pushed = self
            .copy_manifest(&job, root.digest.clone(), Some(root.clone()), root_tag)
            .await?;
        if self.opts.referrers {
            for s in &subjects {
                self.copy_referrers(&job, s, 0).await?;
            }
            self.write_fallback_indexes(&job).await?;
        }

        // Tags last: the whole graph is in place now. Each is read back and must hash to
        // the root digest (the verification); one the root was pushed under needs only
        // that read.
        let pushed_as = if pushed { root_tag } else { None };
        for tag in &task.target.tags {
            let state = if pushed_as == Some(tag.as_str()) {
                TagState::Pushed
            } else if known.tags_stale {
                TagState::Stale
            } else {
                TagState::Unknown
            };
            // `subjects` past the root are the manifests an index root lists.
            self.tag_and_verify(&job, (&root, &subjects[1..]), tag, &task.target, state)
                .await?;
        }
        if task.target.tags.is_empty() {
            // get_manifest by digest fails unless the bytes hash to the digest.
            job.dst
                .get_manifest(&job.dst_repo, &Locator::Digest(root.digest.clone()))
                .await
                .map_err(dst_err)?;
        }
        // Verified: another tag onto this digest needs no GET of it (see manifests.rs).
        let key = manifests::key(job.dst.host(), &job.dst_repo, &root.digest);
        self.manifests.remember_root(key, &root);
        let stats = job.stats.snapshot();
        let wrote = stats.manifests_pushed + stats.tags_written + stats.blobs_uploaded + stats.blobs_mounted;
        tracing::info!(
            %source_ref, %target_ref, digest = %root.digest, bytes = stats.bytes_copied,
            uploaded = stats.blobs_uploaded, mounted = stats.blobs_mounted, skipped = stats.blobs_skipped,
            referrers = stats.referrers_copied, "verified"
        );
        Ok(if wrote == 0 {
            Outcome::AlreadyPresent {
                digest: root.digest,
                stats,
            }
        } else {
            Outcome::Replicated {
                digest: root.digest,
                stats,
            }
        })
    }

    /// Make target `tag` point at `root`, then verify it by reading it back: the bytes
    /// must hash to the root digest (a tag that hashes to the digest proves the manifest
    /// is stored under the digest too). A tag of unknown state is read first, and that
    /// read is also the verification when it is in place (one GET). `children`: the
    /// manifests `root` lists (an index), already parsed by the caller.
    async fn tag_and_verify(
        &self,
        job: &Job<S::Registry>,
        (root, children): (&ManifestBytes, &[Digest]),
        tag: &str,
        target: &Target,
        state: TagState,
    ) -> Result<(), Error> {
        let loc = Locator::Tag(tag.to_owned());
        let read = || async {
            match job.dst.get_manifest(&job.dst_repo, &loc).await {
                Ok(m) => Ok(Some(m.digest)),
                Err(registry::Error::ManifestUnknown { .. }) => Ok(None),
                Err(e) => Err(dst_err(e)),
            }
        };
        if state == TagState::Unknown && read().await?.as_ref() == Some(&root.digest) {
            return Ok(());
        }
        if state != TagState::Pushed {
            self.put_manifest(&*job.dst, &job.dst_repo, &loc, root, Some(children))
                .await
                .map_err(dst_err)?;
        }
        inc(&job.stats.tags_written);
        let reference = || format!("{}/{}:{tag}", target.registry, target.repository);
        match read().await? {
            Some(d) if d == root.digest => Ok(()),
            Some(actual) => Err(Error::VerifyFailed {
                reference: reference(),
                expected: root.digest.clone(),
                actual,
            }),
            // The registry accepted the PUT but does not serve the tag.
            None => Err(dst_err(registry::Error::ManifestUnknown { reference: reference() })),
        }
    }

    fn filter_platforms(&self, reference: &str, root: ManifestBytes) -> Result<ManifestBytes, Error> {
        let mut value: serde_json::Value = match serde_json::from_slice(&root.bytes) {
            Ok(v) => v,
            Err(_) => return Ok(root),
        };
        let Some(list) = value.get_mut("manifests").and_then(|m| m.as_array_mut()) else {
            return Ok(root); // not an index: nothing to filter
        };
        let before = list.len();
        list.retain(|entry| {
            let p: oci::Platform = entry
                .get("platform")
                .and_then(|p| serde_json::from_value(p.clone()).ok())
                .unwrap_or_default();
            self.opts.platforms.iter().any(|f| p.matches(f))
        });
        if list.is_empty() {
            return Err(Error::NoPlatformMatch {
                reference: reference.into(),
                platforms: self.opts.platforms.clone(),
            });
        }
        if list.len() == before {
            return Ok(root); // every platform kept: keep the original bytes and digest
        }
        let kept = list.len();
        let bytes = Bytes::from(serde_json::to_vec(&value).expect("a JSON value serialises"));
        let digest = Digest::sha256_of(&bytes);
        tracing::info!(source_ref = reference, %digest, kept, of = before, "platform subset: the target gets a new index");
        Ok(ManifestBytes {
            bytes,
            media_type: root.media_type,
            digest,
        })
    }

    /// Copy a manifest and everything below it, children before parent. `preloaded` is
    /// the manifest when the caller already read it. It is pushed under `as_tag` when
    /// given (the registry stores it under its digest too), else by digest. `true` when
    /// it was pushed, `false` when the target had it.
    ///
    /// The children of an index the target lacks are not HEADed: a new index almost
    /// always brings new platform manifests, and their blobs are checked one by one
    /// anyway (a child the target had costs its blob checks and a PUT instead of a HEAD).
    /// A child this engine pushed to (or found in) the repository recently is skipped.
    fn copy_manifest<'a>(
        &'a self,
        job: &'a Job<S::Registry>,
        digest: Digest,
        preloaded: Option<ManifestBytes>,
        as_tag: Option<&'a str>,
    ) -> BoxFut<'a, Result<bool, Error>> {
        self.copy_manifest_checked(job, digest, preloaded, as_tag, true)
    }

    fn copy_manifest_checked<'a>(
        &'a self,
        job: &'a Job<S::Registry>,
        digest: Digest,
        preloaded: Option<ManifestBytes>,
        as_tag: Option<&'a str>,
        check: bool,
    ) -> BoxFut<'a, Result<bool, Error>> {
        Box::pin(async move {
            if !job.visited.lock().expect("visited lock").insert(digest.clone()) {
                return Ok(false);
            }
            // One copy of a manifest into a repository at a time: a second copier waits
            // here, then finds it remembered (a child) or present (a root, by its HEAD).
            let key = manifests::key(job.dst.host(), &job.dst_repo, &digest);
            let _flight = self.manifests.flight(&key).await;
            if !check && self.manifests.remembered(&key) {
                job.remembered.lock().expect("remembered lock").insert(digest.clone());
                inc(&job.stats.manifests_skipped);
                return Ok(false);
            }
            let loc = Locator::Digest(digest.clone());
            // A registry only stores a manifest whose references it holds, so a present
            // manifest means a present subtree.
            if check
                && job
                    .dst
                    .head_manifest(&job.dst_repo, &loc)
                    .await
                    .map_err(dst_err)?
                    .is_some()
            {
                inc(&job.stats.manifests_skipped);
                self.manifests.remember(key);
                return Ok(false);
            }
            let m = match preloaded {
                Some(m) => m,
                None => job.src.get_manifest(&job.src_repo, &loc).await.map_err(src_err)?,
            };
            let reference = format!("{}/{}@{}", job.src.host(), job.src_repo, digest);
            let parsed = Manifest::parse(&m.media_type, &m.bytes)
                .map_err(|e| src_err(registry::Error::InvalidManifest { reference, source: e }))?;
            let mut children = Vec::new();
            match &parsed {
                Manifest::Image { config, layers, .. } => {
                    let blobs: Vec<&Descriptor> = std::iter::once(config)
                        .chain(layers.iter())
                        .filter(|d| d.urls.as_ref().is_none_or(|u| u.is_empty()))
                        .collect();
                    self.progress
                        .blobs_total
                        .fetch_add(blobs.len() as u64, Ordering::Relaxed);
                    // A failed blob does not drop its siblings mid-transfer (a dropped upload
                    // can leave a session the registry never learns to cancel): the ones
                    // running finish, the ones not started yet are skipped, and then the
                    // first error is returned. Finished siblings also spare the retry work.
                    let failed = AtomicBool::new(false);
                    let mut futs: Vec<BoxFut<'_, Result<(), Error>>> = Vec::with_capacity(blobs.len());
                    for d in blobs {
                        let failed = &failed;
                        futs.push(Box::pin(async move {
                            if failed.load(Ordering::Relaxed) {
                                return Ok(());
                            }
                            let r = self.copy_blob(job, d).await;
                            if r.is_err() {
                                failed.store(true, Ordering::Relaxed);
                            }
                            r
                        }));
                    }
                    let results: Vec<Result<(), Error>> = futures_util::stream::iter(futs)
                        .buffer_unordered(self.opts.blob_jobs.max(1))
                        .collect()
                        .await;
                    results.into_iter().collect::<Result<Vec<()>, Error>>()?;
                }
                Manifest::Index { manifests, .. } => {
                    children = manifests.iter().map(|d| d.digest.clone()).collect();
                    let mut futs = Vec::with_capacity(manifests.len());
                    for d in manifests {
                        futs.push(self.copy_manifest_checked(job, d.digest.clone(), None, None, false));
                    }
                    futures_util::stream::iter(futs)
                        .buffer_unordered(4)
                        .try_collect::<Vec<bool>>()
                        .await?;
                }
            }
            let put_loc = as_tag.map_or(loc, |t| Locator::Tag(t.to_owned()));
            let put = match self
                .put_manifest(&*job.dst, &job.dst_repo, &put_loc, &m, Some(&children))
                .await
            {
                Ok(put) => put,
                Err(e) => {
                    self.put_again_with_stale_children(job, &put_loc, &m, &children, e)
                        .await?
                }
            };
            inc(&job.stats.manifests_pushed);
            self.manifests.remember(key);
            if let Some(subject) = parsed.subject()
                && !put.subject_indexed
            {
                let desc = referrer_descriptor(&m);
                job.pending_fallback
                    .lock()
                    .expect("fallback lock")
                    .entry(subject.digest.clone())
                    .or_default()
                    .push(desc);
            }
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_tags_follow_dest_then_source() {
        let src: Reference = "a.example/app:v1".parse().unwrap();
        let t = Task::from_refs(src.clone(), &"b.example/mirror/app".parse().unwrap());
        assert_eq!(t.target.tags, vec!["v1"]);
        let t = Task::from_refs(src, &"b.example/mirror/app:stable".parse().unwrap());
        assert_eq!(t.target.tags, vec!["stable"]);
        assert_eq!(t.target_ref(), "b.example/mirror/app:stable");
        let by_digest: Reference = format!("a.example/app@{}", Digest::sha256_of(b"x")).parse().unwrap();
        let t = Task::from_refs(by_digest, &"b.example/app".parse().unwrap());
        assert!(t.target.tags.is_empty());
    }

    #[test]
    fn referrer_descriptor_carries_artifact_type_and_annotations() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/example.sig","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"annotations":{"k":"v"}}"#;
        let m = ManifestBytes {
            bytes: Bytes::from_static(body),
            media_type: oci::OCI_MANIFEST.into(),
            digest: Digest::sha256_of(body),
        };
        let d = referrer_descriptor(&m);
        assert_eq!(d["artifactType"], "application/example.sig");
        assert_eq!(d["annotations"]["k"], "v");
        assert_eq!(d["size"], body.len());
    }

    #[test]
    fn error_class_delegates() {
        let e = src_err(registry::Error::ManifestUnknown {
            reference: "r/a:v1".into(),
        });
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert_eq!(e.to_string(), "source manifest not found: r/a:v1");
        let d = Digest::sha256_of(b"");
        assert_eq!(
            Error::VerifyFailed {
                reference: "x".into(),
                expected: d.clone(),
                actual: d
            }
            .class(),
            ErrorClass::Transient
        );
    }
}
