//! Buffered base images: watch upstream tags, gate the exact digest in staging, promote
//! it, notify dependents. A front end over the executor (`crate::engine`).
//!
//! The flow for a new digest of a watched tag: copy it by digest into `staging` (through
//! [`Execute::execute`], referrers and cosign tags included) → run every gate against
//! `staging@sha256:...` → only if all pass, point each target tag at that exact digest
//! (an [`Item::Digest`] with a tag: copied from staging, verified) → record it → notify.
//! A tag that moves upstream while the gates run changes nothing: the digest that was
//! gated is the one promoted, and the new one is gated at the next poll. A digest a gate
//! rejects is remembered and not gated again until its tag moves; a digest a gate asks to
//! try again later (exec exit 75, a cosign gate finding no signature yet) is staged again
//! (signatures that appeared upstream come along) and gated again at the next poll.
//!
//! Polling is one manifest HEAD per tag (Docker Hub does not count a HEAD as a pull);
//! the registry's `ratelimit-remaining` is exported and, below `[watcher]
//! ratelimit_floor`, polls of that registry pause for [`RATELIMIT_BACKOFF`].
//!
//! Must never: write a target tag except to a digest that passed every gate; gate or
//! promote by tag; let a failed notification undo or block a promotion; contact a host
//! that is not a configured registry (or a configured webhook).

pub mod dependents;
pub mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::watch::{RepoRef, WatchConfig, WatchSettings};
use crate::engine::{Execute, Item, Repo};
use crate::gates::{self, Gate, Subject, Verdict};
use crate::metrics;
use crate::oci::{Digest, Locator};
use crate::registry::{Registries, Registry};

use dependents::{Dependents, Promotion};
use state::{State, Store};

/// How long polls of a registry pause once its `ratelimit-remaining` is below the floor.
pub const RATELIMIT_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// A watch that cannot be set up (a key that does not parse).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A cosign key is not usable.
    #[error("gates.{gate}: {source}")]
    Key {
        /// The gate.
        gate: String,
        /// Why.
        #[source]
        source: gates::KeyError,
    },
    /// A notification cannot be set up.
    #[error("notify.{name}: {reason}")]
    Notify {
        /// The notify name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// What happened to one watched tag in one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagOutcome {
    /// The digest was already promoted (or rejected) earlier: nothing to do.
    Unchanged,
    /// The tag does not exist upstream.
    Gone,
    /// Polls of the registry are paused (rate limit).
    Backoff,
    /// The digest passed every gate and was promoted.
    Promoted(Digest),
    /// A gate rejected the digest.
    Rejected(Digest),
    /// A gate asked to try again later, or a copy failed: tried again at the next poll.
    Deferred(Digest),
    /// The poll failed.
    Error(String),
}

/// The result of one poll of one watch: (tag, outcome) in tag order.
pub type PollReport = Vec<(String, TagOutcome)>;

/// Runs the watches of a configuration.
pub struct Watcher<E: Execute, R: Registries> {
    executor: Arc<E>,
    registries: Arc<R>,
    watches: Vec<WatchConfig>,
    gates: gates::GateSet,
    dependents: Dependents,
    store: Store,
    state: Mutex<Option<State>>,
    floor: u64,
    /// registry host → polls paused until.
    paused: std::sync::Mutex<HashMap<String, Instant>>,
}

impl<E: Execute, R: Registries> std::fmt::Debug for Watcher<E, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("watches", &self.watches.len())
            .finish_non_exhaustive()
    }
}

impl<E: Execute, R: Registries> Watcher<E, R> {
    /// Build the watches of `settings` over `executor` (every copy and tag write) and
    /// `registries` (polls and signature reads).
    pub fn from_settings(settings: &WatchSettings, executor: Arc<E>, registries: Arc<R>) -> Result<Self, Error> {
        let gates = gates::GateSet::from_config(&settings.gates).map_err(|e| Error::Key {
            gate: e.gate,
            source: e.source,
        })?;
        Ok(Watcher {
            executor,
            registries,
            watches: settings.watches.clone(),
            gates,
            dependents: Dependents::from_settings(settings)?,
            store: Store::new(settings.watcher.state_file.clone()),
            state: Mutex::new(None),
            floor: settings.watcher.ratelimit_floor,
            paused: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Forget every rejection (`regrelay watch --retry-rejected`): the digests gates
    /// rejected are gated again at the next poll.
    pub async fn forget_rejections(&self) {
        self.save(|s| {
            for tags in s.watches.values_mut() {
                for t in tags.values_mut() {
                    t.rejected = None;
                }
            }
        })
        .await;
    }

    /// Poll every watch once, one after the other (`regrelay watch --once`).
    pub async fn run_once(&self) -> Vec<(String, PollReport)> {
        let mut out = Vec::new();
        for w in &self.watches {
            out.push((w.name.clone(), self.poll(w).await));
        }
        out
    }

    /// Poll every watch at its interval (plus up to 10 % jitter) until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..self.watches.len() {
            let me = self.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move {
                let w = &me.watches[i];
                loop {
                    // Shutdown does not wait for a gate: the poll is dropped (its command
                    // killed, its copies cancelled) and, as nothing was recorded, the digest
                    // is gated again after the restart.
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = me.poll(w) => {}
                    }
                    let jitter = w.interval.mul_f64(fastrand::f64() * 0.1);
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(w.interval + jitter) => {}
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Poll one watch: every tag, in order.
    pub async fn poll(&self, w: &WatchConfig) -> PollReport {
        let started = Instant::now();
        let m = &metrics::global().watch;
        let tags = match self.tags(w).await {
            Ok(t) => t,
            Err(e) => {
                m.poll(&w.name, "error");
                tracing::warn!(watch = %w.name, source_ref = %w.source, error = %e, "cannot list upstream tags");
                return vec![(String::new(), TagOutcome::Error(e))];
            }
        };
        let mut report = Vec::new();
        for tag in tags {
            let outcome = self.poll_tag(w, &tag).await;
            m.poll(
                &w.name,
                match &outcome {
                    TagOutcome::Backoff => "backoff",
                    TagOutcome::Gone => "gone",
                    TagOutcome::Error(_) => "error",
                    _ => "ok",
                },
            );
            report.push((tag, outcome));
        }
        m.poll_duration(started.elapsed());
        report
    }

    /// The watch's tags: exact names as given, globs through the upstream tag list.
    async fn tags(&self, w: &WatchConfig) -> Result<Vec<String>, String> {
        let is_glob = |t: &str| t.contains(['*', '?', '[', '{']);
        let mut out: Vec<String> = w.tags.iter().filter(|t| !is_glob(t)).cloned().collect();
        let globs: Vec<&String> = w.tags.iter().filter(|t| is_glob(t)).collect();
        if !globs.is_empty() {
            if self.paused(&w.source.registry) {
                return Ok(out);
            }
            let mut set = globset::GlobSetBuilder::new();
            for g in globs {
                set.add(globset::Glob::new(g).map_err(|e| e.to_string())?);
            }
            let set = set.build().map_err(|e| e.to_string())?;
            let reg = self.registries.get(&w.source.registry).map_err(|e| e.to_string())?;
            let listed = reg.list_tags(&w.source.repository).await.map_err(|e| e.to_string())?;
            // Signature, attestation and referrer-fallback tags (`sha256-<hex>[.sig]`) are
            // not images to watch, whatever the glob.
            out.extend(
                listed
                    .into_iter()
                    .filter(|t| !t.starts_with("sha256-") && set.is_match(t)),
            );
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn paused(&self, registry: &str) -> bool {
        let mut p = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        match p.get(registry) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                p.remove(registry);
                false
            }
            None => false,
        }
    }

    async fn head(&self, source: &RepoRef, tag: &str) -> Result<Option<Digest>, String> {
        let reg = self.registries.get(&source.registry).map_err(|e| e.to_string())?;
        let locator = Locator::Tag(tag.to_string());
        let head = reg
            .head_manifest(&source.repository, &locator)
            .await
            .map_err(|e| e.to_string())?;
        let Some(head) = head else { return Ok(None) };
        if let Some(rl) = head.ratelimit {
            metrics::global()
                .watch
                .ratelimit(&source.registry, rl.remaining, rl.limit);
            if rl.remaining < self.floor {
                tracing::warn!(registry = %source.registry, remaining = rl.remaining, floor = self.floor,
                    "registry rate limit below the floor; pausing its polls");
                let until = Instant::now() + RATELIMIT_BACKOFF;
                self.paused
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(source.registry.clone(), until);
            }
        }
        match head.digest {
            Some(d) => Ok(Some(d)),
            // No Docker-Content-Digest on the HEAD: GET it (verified bytes, hashed here).
            None => Ok(Some(
                reg.get_manifest(&source.repository, &locator)
                    .await
                    .map_err(|e| e.to_string())?
                    .digest,
            )),
        }
    }

    async fn poll_tag(&self, w: &WatchConfig, tag: &str) -> TagOutcome {
        if self.paused(&w.source.registry) {
            return TagOutcome::Backoff;
        }
        let digest = match self.head(&w.source, tag).await {
            Ok(Some(d)) => d,
            Ok(None) => return TagOutcome::Gone,
            Err(e) => {
                tracing::warn!(watch = %w.name, source_ref = %format!("{}:{tag}", w.source), error = %e, "poll failed");
                return TagOutcome::Error(e);
            }
        };
        let known = self.with_state(|s| s.get(&w.name, tag)).await;
        let d = digest.to_string();
        if known.seen.as_deref() != Some(&d) {
            metrics::global().watch.new_digest(&w.name);
            tracing::info!(watch = %w.name, source_ref = %format!("{}:{tag}", w.source), digest = %d, "new upstream digest");
            // A moved tag forgets its rejection: the new digest is gated.
            self.save(|s| {
                s.update(&w.name, tag, |t| {
                    t.seen = Some(d.clone());
                    if t.rejected.as_deref() != Some(&d) {
                        t.rejected = None;
                    }
                })
            })
            .await;
        }
        if known.passed.as_deref() == Some(&d) || known.rejected.as_deref() == Some(&d) {
            return TagOutcome::Unchanged;
        }
        self.gate_and_promote(w, tag, digest).await
    }

    async fn gate_and_promote(&self, w: &WatchConfig, tag: &str, digest: Digest) -> TagOutcome {
        let m = &metrics::global().watch;
        let source_ref = format!("{}:{tag}", w.source);
        // 1. Stage by digest (never by tag: the tag may move from now on).
        let stage = Item::Digest {
            source: repo(&w.source),
            digest: digest.clone(),
            target: repo(&w.staging),
            tag: None,
            // The watch runs its own gates, against staging.
            require: Vec::new(),
        };
        if let Err(f) = self.executor.execute(&stage, &w.name).await {
            tracing::warn!(watch = %w.name, source_ref, digest = %digest, error = %f.message, "staging copy failed; retried at the next poll");
            return TagOutcome::Deferred(digest);
        }
        // 2. Gate the staged digest.
        let subject = Subject {
            registry: w.staging.registry.clone(),
            repository: w.staging.repository.clone(),
            digest: digest.clone(),
            source: source_ref.clone(),
        };
        let gates: Vec<(String, Arc<Gate>)> = w
            .gates
            .iter()
            .filter_map(|g| self.gates.get(g).map(|gate| (g.clone(), gate.clone())))
            .collect();
        let decision = gates::check_all(&gates, &*self.registries, &subject, |name, gate, verdict, took| {
            m.gate(name, verdict.outcome(), took);
            tracing::info!(watch = %w.name, gate = name, kind = gate.kind(), digest = %digest,
                outcome = verdict.outcome(), secs = took.as_secs_f64(), "gate decided");
        })
        .await;
        match decision.verdict {
            Verdict::Pass => {}
            Verdict::Retry { reason } => {
                tracing::info!(watch = %w.name, source_ref, digest = %digest, gate = ?decision.gate, reason, "gate asks to try again later");
                // The next poll stages again (not from the executor's memory), so a
                // signature pushed upstream since then reaches staging before the gates.
                self.executor.forget(&repo(&w.staging), &digest);
                return TagOutcome::Deferred(digest);
            }
            Verdict::Fail { reason } => {
                m.promotion(&w.name, "rejected");
                tracing::warn!(watch = %w.name, source_ref, digest = %digest, gate = ?decision.gate, reason, "rejected by a gate; not promoted");
                let d = digest.to_string();
                self.save(|s| s.update(&w.name, tag, |t| t.rejected = Some(d))).await;
                return TagOutcome::Rejected(digest);
            }
        }
        // 3. Promote that exact digest under every target tag.
        let mut tags = Vec::new();
        for tpl in &w.target_tags {
            let target_tag = render(tpl, tag, &digest);
            let item = Item::Digest {
                source: repo(&w.staging),
                digest: digest.clone(),
                target: repo(&w.target),
                tag: Some(target_tag.clone()),
                require: Vec::new(),
            };
            if let Err(f) = self.executor.execute(&item, &w.name).await {
                m.promotion(&w.name, "failed");
                tracing::warn!(watch = %w.name, target_ref = %format!("{}:{target_tag}", w.target), digest = %digest,
                    error = %f.message, "promotion failed; retried at the next poll");
                return TagOutcome::Deferred(digest);
            }
            tags.push(target_tag);
        }
        m.promotion(&w.name, "promoted");
        tracing::info!(watch = %w.name, source_ref, digest = %digest, target_ref = %w.target, tags = ?tags, "promoted");
        let d = digest.to_string();
        self.save(|s| s.update(&w.name, tag, |t| t.passed = Some(d))).await;
        // 4. Tell dependents (at least once, never blocking what already happened).
        let promotion = Promotion {
            watch: w.name.clone(),
            source: source_ref,
            digest: digest.clone(),
            image: format!("{}@{digest}", w.target),
            tags: tags.iter().map(|t| format!("{}:{t}", w.target)).collect(),
        };
        self.dependents.notify(&w.notify, &promotion).await;
        TagOutcome::Promoted(digest)
    }

    async fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let mut guard = self.state.lock().await;
        if guard.is_none() {
            *guard = Some(self.store.load().await);
        }
        f(guard.as_ref().expect("loaded above"))
    }

    async fn save(&self, f: impl FnOnce(&mut State)) {
        let mut guard = self.state.lock().await;
        if guard.is_none() {
            *guard = Some(self.store.load().await);
        }
        let state = guard.as_mut().expect("loaded above");
        f(state);
        if let Err(e) = self.store.save(state).await {
            // The state in memory is right; a lost file only means gating again.
            tracing::warn!(error = %e, "cannot write the watch state file");
        }
    }
}

fn repo(r: &RepoRef) -> Repo {
    Repo::new(&r.registry, &r.repository)
}

/// A target tag from its template: `{tag}` and `{digest12}` (the first 12 hex digits).
pub fn render(template: &str, tag: &str, digest: &Digest) -> String {
    let hex = digest.hex();
    template
        .replace("{tag}", tag)
        .replace("{digest12}", &hex[..hex.len().min(12)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_tags_render_tag_and_short_digest() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(render("{tag}-{digest12}", "22", &d), format!("22-{}", &d.hex()[..12]));
        assert_eq!(render("stable", "22", &d), "stable");
    }
}
