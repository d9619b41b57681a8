//! The executor: one engine for desired state under every front end (events today;
//! promotion manifests, reconcile sweeps and upstream watches build on it).
//!
//! Role: take an [`Item`] ("target repository T must hold digest D", "target tag T:X must
//! hold whatever source tag S:X points at now", "this deletion, guarded") and make it true,
//! verified, returning a typed [`ItemResult`]. It owns the per-(target, tag) locks, the
//! single-flight per (target, digest), the recently-verified memory and the copy metrics.
//! [`Guarded`] wraps any executor with registry health: a Systemic failure marks that
//! registry unhealthy, and work that needs an unhealthy registry is refused without
//! contacting it until its backoff ends.
//!
//! Gates: an item may `require` gates (`[gates.NAME]`, a rule's `require`, a promotion's).
//! They run against the exact target digest after the copy is verified and before the
//! target tag is written ([`gate`]); a rejection is Permanent, "try again later" Transient,
//! and the tag is not written either way; after "try again later" the (target, digest) is
//! dropped from the recently-verified memory, so the retry copies again (signatures that
//! appeared at the source since come along) before gating again. A digest-only item is copied and then gated (its
//! result is the gates'), so nothing is ever tagged by regrelay without passing; the copied
//! digest itself stays in the target repository. Deletes are never gated.
//!
//! Must never: know about messages, brokers, acks or events (it imports neither `queue`
//! nor `pipeline` nor `event`); report `Done` for anything not verified at the target.

use std::sync::Arc;

use tokio::time::Instant;
use tracing::Instrument as _;

use crate::config::TagDeleteFallback;
use crate::health::Health;
use crate::metrics::{self, Class, CopyResult, DedupKind, DeleteResult};
use crate::oci::{Digest, Locator, Reference};
use crate::registry::ManifestBytes;
use crate::replicate::{self, Deletion, ErrorClass, Known, Registries, Replicator, Side, Target, Task};

mod dedup;
pub mod gate;

use dedup::{KeyedLocks, Recent, SingleFlight};

/// A repository on a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repo {
    /// Registry host.
    pub registry: String,
    /// Repository path.
    pub repository: String,
}

impl Repo {
    /// `registry/repository`.
    pub fn new(registry: impl Into<String>, repository: impl Into<String>) -> Repo {
        Repo {
            registry: registry.into(),
            repository: repository.into(),
        }
    }

    fn reference(&self, locator: Option<Locator>) -> Reference {
        let r = Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag: None,
            digest: None,
        };
        match locator {
            Some(l) => r.with_locator(l),
            None => r,
        }
    }
}

impl std::fmt::Display for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// What a front end read just before handing over an [`Item::Tag`], so the executor does
/// not read it again. `Hint::default()` (nothing known) is always correct; a hint only
/// saves requests, the re-resolve of the source tag under the lock stays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hint {
    /// The target tag as the front end has just read it (`Some(None)`: absent,
    /// `Some(Some(d))`: at `d`). The executor then does not HEAD it, and, expecting a
    /// copy, re-resolves the source tag with the GET the copy needs anyway instead of a
    /// HEAD.
    pub target: Option<Option<Digest>>,
    /// The source repository's tags as the front end has just listed them (the copy looks
    /// for referrer fallback and cosign tags there instead of listing again).
    pub source_tags: Option<Arc<Vec<String>>>,
}

/// A piece of desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `target` holds `digest` copied from `source` (verified), and `tag` points at it
    /// when given.
    Digest {
        /// Where the image comes from.
        source: Repo,
        /// The image.
        digest: Digest,
        /// Where it must be.
        target: Repo,
        /// A tag to point at it.
        tag: Option<String>,
        /// Gates (`[gates.NAME]`) that must pass for `target@digest` before the tag is
        /// written (empty: none).
        require: Vec<String>,
    },
    /// `target:tag` holds whatever `source:source_tag` points at *now*: re-resolved under
    /// the per-(target, tag) lock, which is what keeps out-of-order requests from moving a
    /// tag back to an older digest.
    Tag {
        /// Where the image comes from.
        source: Repo,
        /// The source tag.
        source_tag: String,
        /// The digest the caller saw (logged when the tag has moved since).
        seen: Option<Digest>,
        /// Where it must be.
        target: Repo,
        /// The target tag.
        tag: String,
        /// Gates (`[gates.NAME]`) that must pass for the target digest before the tag is
        /// written (empty: none).
        require: Vec<String>,
        /// What the front end has just read (nothing, for events).
        hint: Hint,
    },
    /// Remove `locator` at `target`, unless the source holds `source_locator` again; a
    /// deletion only where the target still points at `expected` (when given). With
    /// `dry_run` everything is checked and the deletion only logged.
    Delete {
        /// The source repository (the truth).
        source: Repo,
        /// What was deleted at the source.
        source_locator: Locator,
        /// The target repository.
        target: Repo,
        /// What to delete there.
        locator: Locator,
        /// The digest it must still point at.
        expected: Option<Digest>,
        /// Log instead of deleting.
        dry_run: bool,
        /// What a tag delete does at a target that cannot delete tags.
        fallback: TagDeleteFallback,
    },
}

impl Item {
    /// The source and target registry hosts.
    pub fn registries(&self) -> (&str, &str) {
        match self {
            Item::Digest { source, target, .. }
            | Item::Tag { source, target, .. }
            | Item::Delete { source, target, .. } => (&source.registry, &target.registry),
        }
    }

    /// The same item requiring `gates` before its tag is written (deletes are not gated).
    pub fn requiring(mut self, gates: &[String]) -> Item {
        match &mut self {
            Item::Digest { require, .. } | Item::Tag { require, .. } => require.extend_from_slice(gates),
            Item::Delete { .. } => {}
        }
        self
    }

    /// The target reference, for logs.
    pub fn target_ref(&self) -> String {
        match self {
            Item::Digest {
                target, tag: Some(t), ..
            }
            | Item::Tag { target, tag: t, .. } => format!("{target}:{t}"),
            Item::Digest { target, digest, .. } => format!("{target}@{digest}"),
            Item::Delete { target, locator, .. } => target.reference(Some(locator.clone())).to_string(),
        }
    }
}

/// What was done to make an item true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// The image was copied (and the tag written, if any).
    Copied {
        /// Blob bytes streamed.
        bytes: u64,
    },
    /// The image was there; only the tag was written.
    TagWritten,
    /// Everything was already in place.
    InPlace,
    /// The deletion was carried out.
    Deleted,
    /// The deletion was only logged (dry run).
    DryRun,
}

/// The result of an item that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target verifiably holds the desired state.
    Done(Done),
    /// Nothing to do any more (the source moved on, or the target cannot); the reason.
    Stale(String),
}

/// A failed item: its class decides what the caller does; the text is for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// How to treat it.
    pub class: ErrorClass,
    /// What failed (no secrets: registry errors are already redacted).
    pub message: String,
    /// The registry that failed, when known.
    pub registry: Option<String>,
}

impl Failure {
    /// A Permanent failure with `message`.
    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            class: ErrorClass::Permanent,
            message: message.into(),
            registry: None,
        }
    }

    /// A replicate error, attributed to the side's registry.
    fn of(e: &replicate::Error, source: &str, target: &str) -> Failure {
        let registry = match e {
            replicate::Error::Registry { side: Side::Source, .. } => Some(source.to_string()),
            replicate::Error::Registry { side: Side::Target, .. } => Some(target.to_string()),
            _ => None,
        };
        Failure {
            class: e.class(),
            message: e.to_string(),
            registry,
        }
    }
}

/// The result of one item.
pub type ItemResult = Result<Outcome, Failure>;

/// Makes items true. The pipeline and every other front end depend on this trait, so a
/// fake can stand in for the real [`Executor`] in tests.
pub trait Execute: Send + Sync + 'static {
    /// Make `item` true and verified, or say why not. `rule` names the configured rule
    /// the item carries out: the `rule` label of the copy metrics (a front end without
    /// rules passes its own fixed name, which counts as `other`).
    fn execute(&self, item: &Item, rule: &str) -> impl Future<Output = ItemResult> + Send;

    /// Forget that `target` was recently verified to hold `digest`: the next item for it
    /// copies again (signature tags and referrers that appeared since come with it)
    /// instead of answering from memory. For a front end whose own gate asked to try
    /// again later (a watch). An executor without such a memory has nothing to forget.
    fn forget(&self, _target: &Repo, _digest: &Digest) {}
}

/// How long a verified (target, digest) is remembered, and how many.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Time to live; zero disables the memory.
    pub ttl: std::time::Duration,
    /// Most entries.
    pub max_entries: usize,
}

/// What a copy did, shared with every caller that joined it.
#[derive(Debug, Clone)]
struct Copied {
    /// Something was written besides tags.
    copied: bool,
    /// The tag the copy wrote and verified, and whether it had to write it.
    tag: Option<(String, bool)>,
}

/// A tag for the copy to write, with what the caller knows.
struct TagWrite {
    /// The target tag.
    tag: String,
    /// What it pointed at when the caller looked (`None`: not known).
    observed: Option<Option<Digest>>,
    /// The source root manifest, when the caller read it.
    root: Option<ManifestBytes>,
    /// The source repository's tags, when the caller listed them.
    source_tags: Option<Arc<Vec<String>>>,
}

/// (target registry, target repository, digest)
type DigestKey = (String, String, Digest);
/// (target registry, target repository, tag)
type TagKey = (String, String, String);

/// The executor over the copy engine.
pub struct Executor<S: Registries> {
    replicator: Arc<Replicator<S>>,
    tag_locks: KeyedLocks<TagKey>,
    flights: SingleFlight<DigestKey, Result<Copied, Failure>>,
    recent: Recent<DigestKey>,
    gating: gate::Gating,
}

impl<S: Registries> std::fmt::Debug for Executor<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").finish_non_exhaustive()
    }
}

/// An executor behind registry health: work that needs an unhealthy registry is refused
/// (Systemic, not contacted) until its backoff ends; a Systemic failure marks its
/// registry unhealthy; a success marks both registries healthy.
#[derive(Debug)]
pub struct Guarded<E> {
    inner: E,
    health: Arc<Health>,
}

impl<E: Execute> Guarded<E> {
    /// `inner` guarded by `health`.
    pub fn new(inner: E, health: Arc<Health>) -> Guarded<E> {
        Guarded { inner, health }
    }
}

impl<E: Execute> Execute for Guarded<E> {
    async fn execute(&self, item: &Item, rule: &str) -> ItemResult {
        let (src, dst) = item.registries();
        for registry in [src, dst] {
            if let Err(u) = self.health.check(registry) {
                return Err(Failure {
                    class: ErrorClass::Systemic,
                    message: u.to_string(),
                    registry: Some(u.registry),
                });
            }
        }
        let result = self.inner.execute(item, rule).await;
        match &result {
            Ok(_) => {
                self.health.succeeded(src);
                self.health.succeeded(dst);
            }
            Err(f) if f.class == ErrorClass::Systemic => {
                if let Some(r) = &f.registry {
                    self.health.failed(r, &f.message);
                }
            }
            Err(_) => {}
        }
        result
    }

    fn forget(&self, target: &Repo, digest: &Digest) {
        self.inner.forget(target, digest);
    }
}

impl<S: Registries> Execute for Executor<S> {
    async fn execute(&self, item: &Item, rule: &str) -> ItemResult {
        let span = tracing::info_span!("item", target_ref = %item.target_ref());
        match item {
            Item::Digest {
                source,
                digest,
                target,
                tag,
                require,
            } => {
                self.digest(source, digest, target, (tag.as_deref(), require), rule)
                    .instrument(span)
                    .await
            }
            Item::Tag {
                source,
                source_tag,
                seen,
                target,
                tag,
                require,
                hint,
            } => {
                self.tag(source, source_tag, seen.as_ref(), hint, target, (tag, require), rule)
                    .instrument(span)
                    .await
            }
            Item::Delete {
                source,
                source_locator,
                target,
                locator,
                expected,
                dry_run,
                fallback,
            } => {
                let policy = (*dry_run, *fallback);
                self.delete(source, source_locator, target, locator, expected.as_ref(), policy)
                    .instrument(span)
                    .await
            }
        }
    }

    fn forget(&self, target: &Repo, digest: &Digest) {
        self.recent
            .remove(&(target.registry.clone(), target.repository.clone(), digest.clone()));
    }
}

impl<S: Registries> Executor<S> {
    /// An executor over `replicator`.
    pub fn new(replicator: Arc<Replicator<S>>, memory: Memory) -> Executor<S> {
        Executor {
            replicator,
            tag_locks: KeyedLocks::default(),
            flights: SingleFlight::default(),
            recent: Recent::new(memory.ttl, memory.max_entries),
            gating: gate::Gating::new(Arc::default()),
        }
    }

    /// The same executor running `gates` when an item requires them (without, an item that
    /// requires a gate fails: an unknown gate is never a pass).
    pub fn with_gates(mut self, gates: Arc<crate::gates::GateSet>) -> Executor<S> {
        self.gating = gate::Gating::new(gates);
        self
    }

    async fn digest(
        &self,
        source: &Repo,
        digest: &Digest,
        target: &Repo,
        (tag, require): (Option<&str>, &[String]),
        rule: &str,
    ) -> ItemResult {
        // Without gates the copy writes the tag itself (the root pushed under it when
        // nothing else has to land first) and reads it back, as for a tag item.
        let write = tag.filter(|_| require.is_empty()).map(|t| TagWrite {
            tag: t.to_string(),
            observed: None,
            root: None,
            source_tags: None,
        });
        let (copied, tagged) = self.ensure_digest(source, digest, target, rule, write.as_ref()).await?;
        let src = source.reference(Some(Locator::Digest(digest.clone())));
        let wrote = match (tagged, tag) {
            (Some(wrote), _) => wrote,
            (None, None) => {
                self.gate(target, digest, require, &src.to_string()).await?;
                false
            }
            (None, Some(t)) => {
                // A tag already at this digest needs no gate: gating cannot change what it
                // names. The look is handed to the tag write, which does not read it again.
                let observed = if require.is_empty() {
                    None
                } else {
                    self.replicator
                        .target_tag(&target.registry, &target.repository, t)
                        .await
                        .ok()
                };
                if observed.as_ref().is_none_or(|o| o.as_ref() != Some(digest)) {
                    self.gate(target, digest, require, &src.to_string()).await?;
                }
                self.ensure_tag(source, target, t, digest, observed).await?
            }
        };
        tracing::info!(source_ref = %src, %digest, tag_written = wrote, "verified");
        Ok(Outcome::Done(done(copied, wrote)))
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of Item::Tag; a struct would only rename them"
    )]
    async fn tag(
        &self,
        source: &Repo,
        source_tag: &str,
        seen: Option<&Digest>,
        hint: &Hint,
        target: &Repo,
        (tag, require): (&str, &[String]),
        rule: &str,
    ) -> ItemResult {
        let key = (target.registry.clone(), target.repository.clone(), tag.to_string());
        let _tag_lock = self.tag_locks.lock(&key).await;
        // Re-resolve now: the tag may have moved since the caller looked. A front end that
        // has just seen the target tag differ (a sync) expects a copy: the source manifest
        // is read by tag, which re-resolves and reads what the copy needs in one request.
        // Events HEAD it, so a repeat event for a tag in place reads no manifest.
        let src = source.reference(Some(Locator::Tag(source_tag.to_string())));
        let (current, root) = if hint.target.is_some() {
            match self.replicator.read_source(&src).await {
                Ok(Some(m)) => (m.digest.clone(), Some(m)),
                Ok(None) => return Ok(Outcome::Stale(format!("{src} no longer exists at the source"))),
                Err(e) => return Err(Failure::of(&e, &source.registry, &target.registry)),
            }
        } else {
            match self.replicator.resolve(&src).await {
                Ok(Some(d)) => (d, None),
                Ok(None) => return Ok(Outcome::Stale(format!("{src} no longer exists at the source"))),
                Err(e) => return Err(Failure::of(&e, &source.registry, &target.registry)),
            }
        };
        if seen.is_some_and(|d| d != &current) {
            tracing::info!(source_ref = %src, digest = %current, "tag has moved since the event; copying its current digest");
        }
        // What the target tag points at: the front end's read, else one HEAD. A failed
        // look is not an answer (`None`): the copy below meets the same failure, counts
        // it and reports it.
        let observed = match &hint.target {
            Some(t) => Some(t.clone()),
            None => self
                .replicator
                .target_tag(&target.registry, &target.repository, tag)
                .await
                .ok(),
        };
        // The target tag already at the current digest: in place (a registry only lets a
        // tag point at a manifest it holds whole). Two requests for a repeat event.
        if observed.as_ref().is_some_and(|o| o.as_ref() == Some(&current)) {
            metrics::global().dedup_hit(DedupKind::InPlace);
            tracing::info!(source_ref = %src, digest = %current, "verified: the target tag is in place");
            return Ok(Outcome::Done(Done::InPlace));
        }
        // Without gates the copy writes the tag itself (the root pushed under it when
        // nothing else has to land first, else right after the graph) and reads it back.
        // With gates (run under the tag lock, so a newer digest for this tag waits for the
        // verdict) the copy goes without the tag, the gates check the target digest, and
        // `ensure_tag` points the tag with `observed` (the tag is not HEADed a second time);
        // so does a copy that did not write the tag.
        let write = require.is_empty().then(|| TagWrite {
            tag: tag.to_string(),
            observed: observed.clone(),
            root,
            source_tags: hint.source_tags.clone(),
        });
        let (copied, tagged) = self
            .ensure_digest(source, &current, target, rule, write.as_ref())
            .await?;
        let wrote = match tagged {
            Some(wrote) => wrote,
            None => {
                self.gate(target, &current, require, &src.to_string()).await?;
                self.ensure_tag(source, target, tag, &current, observed).await?
            }
        };
        tracing::info!(source_ref = %src, digest = %current, tag_written = wrote, "verified");
        Ok(Outcome::Done(done(copied, wrote)))
    }

    /// Run the gates `require` names against `target@digest` (none: nothing to do).
    async fn gate(&self, target: &Repo, digest: &Digest, require: &[String], source: &str) -> Result<(), Failure> {
        let result = self
            .gating
            .check(&**self.replicator.registries(), target, digest, require, source)
            .await;
        // "Try again later" often waits for something that travels with the image (a
        // signature pushed after it): the retry must run the copy again, which brings
        // the signature tags and referrers that appeared since, not answer from memory.
        if result.as_ref().is_err_and(|f| f.class == ErrorClass::Transient) {
            self.forget(target, digest);
        }
        result
    }

    /// Point `tag` at `digest` (present at the target); `observed`: the tag as just read.
    async fn ensure_tag(
        &self,
        source: &Repo,
        target: &Repo,
        tag: &str,
        digest: &Digest,
        observed: Option<Option<Digest>>,
    ) -> Result<bool, Failure> {
        self.replicator
            .ensure_tag_observed(&target.registry, &target.repository, tag, digest, observed)
            .await
            .map_err(|e| Failure::of(&e, &source.registry, &target.registry))
    }

    /// Make sure `target` holds `digest` (verified), copying it if needed. The first
    /// value is `Some(bytes)` when a copy wrote something, `None` when it was in place;
    /// the second, with `write`, is `Some(tag written)` when the copy also wrote and
    /// verified `write.tag` (else the caller writes the tag). The copy counts under `rule`
    /// (the first caller's, when several join one copy).
    async fn ensure_digest(
        &self,
        source: &Repo,
        digest: &Digest,
        target: &Repo,
        rule: &str,
        write: Option<&TagWrite>,
    ) -> Result<(Option<u64>, Option<bool>), Failure> {
        let m = metrics::global();
        let fail = |e: &replicate::Error| Failure::of(e, &source.registry, &target.registry);
        let key = (target.registry.clone(), target.repository.clone(), digest.clone());
        if self.recent.contains(&key) {
            match self
                .replicator
                .present(&target.registry, &target.repository, digest)
                .await
            {
                Ok(true) => {
                    m.dedup_hit(DedupKind::Recent);
                    return Ok((None, None));
                }
                Ok(false) => self.recent.remove(&key),
                Err(e) => return Err(fail(&e)),
            }
        }
        let bytes = std::sync::atomic::AtomicU64::new(0);
        let (result, joined) = self
            .flights
            .run(&key, || async {
                let _in_flight = m.copy_in_flight();
                let started = Instant::now();
                let task = Task {
                    source: source.reference(Some(Locator::Digest(digest.clone()))),
                    target: Target {
                        registry: target.registry.clone(),
                        repository: target.repository.clone(),
                        tags: write.map(|w| w.tag.clone()).into_iter().collect(),
                    },
                };
                let known = match write {
                    Some(w) => Known {
                        root: w.root.clone(),
                        source_tags: w.source_tags.clone(),
                        // Seen absent or elsewhere: written without another look.
                        tags_stale: w.observed.as_ref().is_some_and(|o| o.as_ref() != Some(digest)),
                    },
                    None => Known::default(),
                };
                match self.replicator.replicate_known(&task, known).await {
                    Ok(outcome) if outcome.digest() == digest => {
                        let s = outcome.stats();
                        // A tag written onto a manifest the target had is not a copy.
                        let copied = s.manifests_pushed + s.blobs_uploaded + s.blobs_mounted > 0;
                        let result = if copied {
                            CopyResult::Replicated
                        } else {
                            CopyResult::AlreadyPresent
                        };
                        m.copy_finished(result, started.elapsed(), rule, &target.registry);
                        m.copy_stats(s.bytes_copied, s.blobs_uploaded, s.blobs_mounted, s.blobs_skipped);
                        bytes.store(s.bytes_copied, std::sync::atomic::Ordering::Relaxed);
                        self.recent.insert(key.clone());
                        Ok(Copied {
                            copied,
                            tag: write.map(|w| (w.tag.clone(), s.tags_written > 0)),
                        })
                    }
                    Ok(outcome) => {
                        m.copy_finished(
                            CopyResult::Failed(Class::Transient),
                            started.elapsed(),
                            rule,
                            &target.registry,
                        );
                        Err(Failure {
                            class: ErrorClass::Transient,
                            message: format!("target verified {}, expected {digest}", outcome.digest()),
                            registry: None,
                        })
                    }
                    Err(e) => {
                        m.copy_finished(
                            CopyResult::Failed(e.class().into()),
                            started.elapsed(),
                            rule,
                            &target.registry,
                        );
                        Err(fail(&e))
                    }
                }
            })
            .await;
        if joined {
            m.dedup_hit(DedupKind::InFlight);
        }
        let result = result?;
        // A caller that joined another's copy did not copy anything itself, nor (another
        // tag: the same one waits on the tag lock) write its tag.
        if joined {
            return Ok((None, None));
        }
        Ok((result.copied.then(|| bytes.into_inner()), result.tag.map(|(_, w)| w)))
    }

    async fn delete(
        &self,
        source: &Repo,
        source_locator: &Locator,
        target: &Repo,
        locator: &Locator,
        expected: Option<&Digest>,
        (dry_run, fallback): (bool, TagDeleteFallback),
    ) -> ItemResult {
        let m = metrics::global();
        let src = source.reference(Some(source_locator.clone()));
        // A delete may arrive after a newer push of the same tag: the source is the truth.
        match self.replicator.resolve(&src).await {
            Ok(Some(_)) => {
                m.delete_finished(DeleteResult::Skipped);
                return Ok(Outcome::Stale(format!("{src} exists again at the source; not deleted")));
            }
            Ok(None) => {}
            Err(e) => return Err(Failure::of(&e, &source.registry, &target.registry)),
        }
        let result = self
            .replicator
            .delete(
                &target.registry,
                &target.repository,
                locator,
                expected,
                dry_run,
                fallback,
            )
            .await;
        match result {
            Ok(Deletion::Deleted | Deletion::ManifestDeleted { .. }) => {
                m.delete_finished(DeleteResult::Deleted);
                tracing::info!(source_ref = %src, "deleted at the target");
                Ok(Outcome::Done(Done::Deleted))
            }
            Ok(Deletion::DryRun) => {
                m.delete_finished(DeleteResult::DryRun);
                tracing::info!(source_ref = %src, "dry run: would delete at the target");
                Ok(Outcome::Done(Done::DryRun))
            }
            Ok(Deletion::Absent) => {
                m.delete_finished(DeleteResult::Skipped);
                Ok(Outcome::Stale("already absent at the target".into()))
            }
            Ok(Deletion::Mismatch { actual }) => {
                m.delete_finished(DeleteResult::Skipped);
                Ok(Outcome::Stale(format!(
                    "the target points at {actual}, not at the deleted digest; kept"
                )))
            }
            Ok(Deletion::Unsupported(kept)) => {
                m.delete_finished(DeleteResult::Unsupported);
                tracing::warn!(source_ref = %src, reason = %kept, "not deleted at the target: {kept}");
                Ok(Outcome::Stale(format!("not deleted at the target: {kept}")))
            }
            Err(e) => {
                m.delete_finished(DeleteResult::Failed);
                Err(Failure::of(&e, &source.registry, &target.registry))
            }
        }
    }
}

fn done(copied: Option<u64>, tag_written: bool) -> Done {
    match (copied, tag_written) {
        (Some(bytes), _) => Done::Copied { bytes },
        (None, true) => Done::TagWritten,
        (None, false) => Done::InPlace,
    }
}
