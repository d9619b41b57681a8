//! The pipeline: receive a delivery, decode it, match the rules, replicate to every
//! target, and settle the message. **The only place that settles a message.**
//!
//! Per message:
//! 1. Decode the payload ([`crate::event::decode`]) into one or more events;
//!    undecodable → Permanent (rejected).
//! 2. Refuse a registry host that is not configured (any event's) → Permanent, with no
//!    connection.
//! 3. Plan routes with [`crate::rules::plan`] for every event; none → acked and counted as
//!    `ignored`.
//! 4. For each route of each event, in parallel:
//!    - tagged push: under a lock on (target, tag), re-read the source tag's *current*
//!      digest, copy that digest (single-flight per (target, digest); a recently verified
//!      pair costs one HEAD), then point the target tag at it. Re-reading under the lock
//!      is what keeps out-of-order events from moving a tag back to an older digest;
//!    - digest-only push: copy the digest;
//!    - delete: skip if the source has the tag / digest again, else delete at the target
//!      only where it still points at the deleted digest (or log it in dry-run mode).
//! 5. Settle: ack only when every route verified (or was stale); otherwise the worst
//!    error class decides: Systemic → nack and pause pulling; Transient → nack;
//!    Permanent → reject (the source applies its reject mode).
//!
//! Must never: ack before the copy engine returned a verified outcome, ack a message
//! whose work failed with a Transient or Systemic error, or contact a registry that is
//! not in the configuration. Dropping a delivery (shutdown past the grace period) nacks.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::config::{PipelineConfig, Rule};
use crate::event::{self, Action, Event};
use crate::metrics::{self, Class, CopyResult, DedupKind, DeleteResult, Settle};
use crate::oci::{Digest, Locator, Reference};
use crate::queue::{Delivery, Source};
use crate::replicate::{self, Deletion, ErrorClass, Registries, Replicator, Target, Task};
use crate::rules::{self, Plan, Route, RouteKind};

mod dedup;

use dedup::{KeyedLocks, Recent, SingleFlight};

/// A failed piece of work: its class decides the settlement; the text is for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// How to settle.
    pub class: ErrorClass,
    /// What failed (lowercase, no secrets: registry errors are already redacted).
    pub message: String,
}

impl Failure {
    fn permanent(message: impl Into<String>) -> Failure {
        Failure {
            class: ErrorClass::Permanent,
            message: message.into(),
        }
    }
}

impl From<&replicate::Error> for Failure {
    fn from(e: &replicate::Error) -> Failure {
        Failure {
            class: e.class(),
            message: e.to_string(),
        }
    }
}

/// How long after a source error `/readyz` stays 503 (unless a message arrives sooner).
const READY_AFTER_SOURCE_ERROR: Duration = Duration::from_secs(30);

/// What became of one route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RouteDone {
    /// The target verifiably holds the image (or the delete was done / logged).
    Done,
    /// Nothing to do any more (the source moved on); the reason is logged.
    Stale(String),
}

/// What became of one message.
#[derive(Debug)]
enum Verdict {
    Done,
    Ignored(String),
    Failed(Failure),
}

/// (target registry, target repository, digest)
type DigestKey = (String, String, Digest);
/// (target registry, target repository, tag)
type TagKey = (String, String, String);

/// Pause of pulling after Systemic failures, with doubling backoff.
#[derive(Debug)]
struct Pause {
    min: Duration,
    max: Duration,
    state: Mutex<(Option<Instant>, Duration)>,
}

impl Pause {
    fn new(min: Duration, max: Duration) -> Pause {
        Pause {
            min,
            max,
            state: Mutex::new((None, min)),
        }
    }

    /// A Systemic failure: pause pulling for the current backoff, then double it.
    fn trip(&self) -> Duration {
        let mut s = self.state.lock().expect("pause poisoned");
        let wait = s.1;
        s.0 = Some(Instant::now() + wait);
        s.1 = (wait * 2).min(self.max);
        metrics::global().set_paused(true);
        metrics::global().set_ready(false);
        wait
    }

    /// A verified success: the next pause starts from the minimum again.
    fn reset(&self) {
        let mut s = self.state.lock().expect("pause poisoned");
        s.1 = self.min;
    }

    /// The instant pulling may resume, while paused.
    fn until(&self) -> Option<Instant> {
        let mut s = self.state.lock().expect("pause poisoned");
        match s.0 {
            Some(t) if t > Instant::now() => Some(t),
            Some(_) => {
                s.0 = None;
                metrics::global().set_paused(false);
                None
            }
            None => None,
        }
    }
}

/// The message-processing engine, shared by all workers.
pub struct Pipeline<S: Registries> {
    replicator: Arc<Replicator<S>>,
    rules: Vec<Rule>,
    allowed: HashSet<String>,
    cfg: PipelineConfig,
    tag_locks: KeyedLocks<TagKey>,
    flights: SingleFlight<DigestKey, Result<(), Failure>>,
    recent: Recent<DigestKey>,
    pause: Pause,
    /// Where events without a registry host come from (`[source.origin]`).
    origin: event::Origin,
}

impl<S: Registries> std::fmt::Debug for Pipeline<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("rules", &self.rules.len()).finish()
    }
}

impl<S: Registries> Pipeline<S> {
    /// A pipeline over `replicator`; `allowed_hosts` are the configured registries.
    pub fn new(
        replicator: Arc<Replicator<S>>,
        rules: Vec<Rule>,
        allowed_hosts: impl IntoIterator<Item = String>,
        cfg: PipelineConfig,
    ) -> Pipeline<S> {
        Pipeline {
            replicator,
            rules,
            allowed: allowed_hosts.into_iter().collect(),
            recent: Recent::new(cfg.dedup_ttl, cfg.dedup_max_entries),
            pause: Pause::new(cfg.pause_min, cfg.pause_max),
            tag_locks: KeyedLocks::default(),
            flights: SingleFlight::default(),
            origin: event::Origin::none(),
            cfg,
        }
    }

    /// Place events whose payload names no registry host with `origin`
    /// (`[source.origin]`); without it they are rejected.
    pub fn with_origin(mut self, origin: event::Origin) -> Pipeline<S> {
        self.origin = origin;
        self
    }

    /// Pull from `source` with at most `workers` messages in flight until `shutdown` is
    /// cancelled or the source is exhausted; then let in-flight work finish within the
    /// grace period, drop (nack) what is left, and close the source.
    pub async fn run<Src: Source>(self: Arc<Self>, mut source: Src, shutdown: CancellationToken) {
        let m = metrics::global();
        let kind = source.kind();
        let permits = Arc::new(Semaphore::new(self.cfg.workers.max(1)));
        let tracker = TaskTracker::new();
        let hard = CancellationToken::new();
        let mut source_backoff = Duration::from_millis(500);
        // Readiness: not paused, not stopping, and no source error in the last
        // READY_AFTER_SOURCE_ERROR (an idle subscription produces no proof of health other
        // than the absence of errors).
        let last_source_error: Arc<Mutex<Option<Instant>>> = Arc::default();
        let readiness = {
            let this = self.clone();
            let last = last_source_error.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let source_ok = last
                        .lock()
                        .expect("readiness poisoned")
                        .is_none_or(|t| t.elapsed() >= READY_AFTER_SOURCE_ERROR);
                    let paused = this.pause.until().is_some();
                    metrics::global().set_ready(source_ok && !paused && !stop.is_cancelled());
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        () = stop.cancelled() => {}
                    }
                    if stop.is_cancelled() {
                        metrics::global().set_ready(false);
                        return;
                    }
                }
            })
        };
        loop {
            if let Some(until) = self.pause.until() {
                tracing::warn!(resume_in = ?until - Instant::now(), "pulling paused after a systemic failure");
                tokio::select! {
                    () = tokio::time::sleep_until(until) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
                () = shutdown.cancelled() => break,
            };
            let next = tokio::select! {
                n = source.next() => n,
                () = shutdown.cancelled() => break,
            };
            match next {
                None => break,
                Some(Err(e)) => {
                    *last_source_error.lock().expect("readiness poisoned") = Some(Instant::now());
                    m.set_ready(false);
                    tracing::error!(error = %e, retry_in = ?source_backoff, "source not available");
                    tokio::select! {
                        () = tokio::time::sleep(jitter(source_backoff)) => {}
                        () = shutdown.cancelled() => break,
                    }
                    source_backoff = (source_backoff * 2).min(Duration::from_secs(60));
                }
                Some(Ok(delivery)) => {
                    source_backoff = Duration::from_millis(500);
                    *last_source_error.lock().expect("readiness poisoned") = None;
                    m.message_received(kind);
                    let this = self.clone();
                    let hard = hard.clone();
                    tracker.spawn(async move {
                        let _permit = permit;
                        tokio::select! {
                            () = this.process(delivery) => {}
                            // Grace period over: dropping the delivery nacks it.
                            () = hard.cancelled() => {}
                        }
                    });
                }
            }
        }
        tracker.close();
        readiness.abort();
        let exhausted = !shutdown.is_cancelled();
        if exhausted {
            // End of input: wait for the work, unless a shutdown comes meanwhile.
            tokio::select! {
                () = tracker.wait() => {}
                () = shutdown.cancelled() => {}
            }
        }
        m.set_ready(false);
        if !tracker.is_empty() {
            tracing::info!(in_flight = tracker.len(), grace = ?self.cfg.shutdown_grace, "draining in-flight work");
            if tokio::time::timeout(self.cfg.shutdown_grace, tracker.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    in_flight = tracker.len(),
                    "grace period over; handing the messages still in flight back to the broker"
                );
                if source.closes_leased() {
                    // Pub/Sub: close first, while the unfinished handles are still alive: the
                    // broker takes all of them back in one go and redelivers nothing into this
                    // process meanwhile. Then cancel the copies.
                    source.close().await;
                    hard.cancel();
                    tracker.wait().await;
                    return;
                }
                // Otherwise cancelling drops the handles, which nack (Service Bus: abandon);
                // closing then flushes those settlements.
                hard.cancel();
                tracker.wait().await;
            }
        }
        source.close().await;
    }

    /// Handle one delivery from receipt to settlement.
    async fn process(&self, delivery: Delivery) {
        let Delivery {
            id,
            payload,
            published,
            attempt,
            handle,
        } = delivery;
        // `attempt` is known only when the broker reports it (Pub/Sub: with a dead-letter
        // policy on the subscription).
        let span = tracing::info_span!("message", message_id = %id, attempt = tracing::field::Empty);
        if let Some(a) = attempt {
            span.record("attempt", a);
        }
        async move {
            let m = metrics::global();
            match self.handle_payload(&payload).await {
                Verdict::Done => {
                    handle.ack();
                    m.message_settled(Settle::Acked);
                    m.last_success_now();
                    self.pause.reset();
                    if let Some(lag) = published.and_then(|p| SystemTime::now().duration_since(p).ok()) {
                        m.event_lag(lag);
                    }
                    tracing::debug!("acked");
                }
                Verdict::Ignored(reason) => {
                    handle.ack();
                    m.message_settled(Settle::Ignored);
                    tracing::info!(%reason, "ignored");
                }
                Verdict::Failed(f) => match f.class {
                    ErrorClass::Permanent => {
                        handle.reject();
                        m.message_settled(Settle::Rejected);
                        tracing::warn!(error = %f.message, "rejected: permanent failure");
                    }
                    ErrorClass::Transient => {
                        handle.nack();
                        m.message_settled(Settle::Nacked);
                        tracing::warn!(error = %f.message, "nacked: transient failure, the broker will redeliver");
                    }
                    ErrorClass::Systemic => {
                        handle.nack();
                        m.message_settled(Settle::Nacked);
                        let pause = self.pause.trip();
                        tracing::error!(error = %f.message, ?pause, "nacked: systemic failure, pausing");
                    }
                },
            }
        }
        .instrument(span)
        .await;
    }

    async fn handle_payload(&self, payload: &[u8]) -> Verdict {
        // One message may carry several image events (a distribution envelope, an Event
        // Grid batch): the routes of all of them run, and the message settles on the
        // worst result, so it is acked only when every event is verified.
        let decoded = match event::decode(payload, &self.origin) {
            Ok(d) => d,
            Err(e) => return Verdict::Failed(Failure::permanent(format!("undecodable message: {e}"))),
        };
        if decoded.events.is_empty() {
            return Verdict::Ignored(decoded.ignored.join("; "));
        }
        for reason in &decoded.ignored {
            tracing::debug!(%reason, "part of the message not acted on");
        }
        // Every host is checked before anything is contacted.
        if let Some(e) = decoded.events.iter().find(|e| !self.allowed.contains(&e.registry)) {
            return Verdict::Failed(Failure::permanent(format!(
                "event names registry {:?}, which is not in the configuration; not contacted",
                e.registry
            )));
        }
        let mut work: Vec<(&Event, Route)> = Vec::new();
        let mut skipped = Vec::new();
        for event in &decoded.events {
            match rules::plan(&self.rules, event) {
                Plan::Ignore(reason) => skipped.push(reason),
                Plan::Work(routes) => work.extend(routes.into_iter().map(|r| (event, r))),
            }
        }
        if work.is_empty() {
            return Verdict::Ignored(skipped.join("; "));
        }
        if decoded.events.len() > 1 {
            tracing::info!(
                events = decoded.events.len(),
                routes = work.len(),
                "message carries several image events"
            );
        }
        let results = join_all(work.iter().map(|(e, r)| self.route(e, r))).await;
        let mut worst: Option<Failure> = None;
        let mut stale = Vec::new();
        for r in results {
            match r {
                Ok(RouteDone::Done) => {}
                Ok(RouteDone::Stale(reason)) => stale.push(reason),
                Err(f) => {
                    if worst.as_ref().is_none_or(|w| severity(f.class) > severity(w.class)) {
                        worst = Some(f);
                    }
                }
            }
        }
        match worst {
            Some(f) => Verdict::Failed(f),
            None if stale.len() == work.len() => Verdict::Ignored(stale.join("; ")),
            None => Verdict::Done,
        }
    }

    /// Carry out one route.
    async fn route(&self, event: &Event, route: &Route) -> Result<RouteDone, Failure> {
        let span = tracing::info_span!(
            "route",
            rule = %route.rule,
            target_ref = %target_ref(route),
        );
        match route.kind {
            RouteKind::Push => self.push(event, route).instrument(span).await,
            RouteKind::Delete => self.delete(event, route).instrument(span).await,
        }
    }

    async fn push(&self, event: &Event, route: &Route) -> Result<RouteDone, Failure> {
        let source = |locator| Reference {
            registry: event.registry.clone(),
            repository: event.repository.clone(),
            tag: match &locator {
                Locator::Tag(t) => Some(t.clone()),
                Locator::Digest(_) => None,
            },
            digest: match locator {
                Locator::Digest(d) => Some(d),
                Locator::Tag(_) => None,
            },
        };
        match (&event.tag, &route.target_tag) {
            (Some(tag), Some(target_tag)) => {
                let key = (
                    route.target_registry.clone(),
                    route.target_repository.clone(),
                    target_tag.clone(),
                );
                let _tag_lock = self.tag_locks.lock(&key).await;
                // Re-resolve now: the tag may have moved since the event was published.
                let src = source(Locator::Tag(tag.clone()));
                let current = match self.replicator.resolve(&src).await {
                    Ok(Some(d)) => d,
                    Ok(None) => return Ok(RouteDone::Stale(format!("{src} no longer exists at the source"))),
                    Err(e) => return Err(Failure::from(&e)),
                };
                if event.digest.as_ref().is_some_and(|d| d != &current) {
                    tracing::info!(source_ref = %src, digest = %current, "tag has moved since the event; copying its current digest");
                }
                self.ensure_digest(&event.registry, &event.repository, &current, route)
                    .await?;
                let wrote = self
                    .replicator
                    .ensure_tag(&route.target_registry, &route.target_repository, target_tag, &current)
                    .await
                    .map_err(|e| Failure::from(&e))?;
                tracing::info!(source_ref = %src, digest = %current, tag_written = wrote, "verified");
                Ok(RouteDone::Done)
            }
            _ => {
                let Some(digest) = &event.digest else {
                    return Err(Failure::permanent("event names neither a tag nor a digest"));
                };
                self.ensure_digest(&event.registry, &event.repository, digest, route)
                    .await?;
                tracing::info!(source_ref = %source(Locator::Digest(digest.clone())), %digest, "verified");
                Ok(RouteDone::Done)
            }
        }
    }

    /// Make sure the target repository holds `digest` (verified), copying it if needed.
    async fn ensure_digest(
        &self,
        src_registry: &str,
        src_repository: &str,
        digest: &Digest,
        route: &Route,
    ) -> Result<(), Failure> {
        let m = metrics::global();
        let key = (
            route.target_registry.clone(),
            route.target_repository.clone(),
            digest.clone(),
        );
        if self.recent.contains(&key) {
            match self
                .replicator
                .present(&route.target_registry, &route.target_repository, digest)
                .await
            {
                Ok(true) => {
                    m.dedup_hit(DedupKind::Recent);
                    return Ok(());
                }
                Ok(false) => self.recent.remove(&key),
                Err(e) => return Err(Failure::from(&e)),
            }
        }
        let (result, joined) = self
            .flights
            .run(&key, || async {
                let _in_flight = m.copy_in_flight();
                let started = Instant::now();
                let task = Task {
                    source: Reference {
                        registry: src_registry.to_string(),
                        repository: src_repository.to_string(),
                        tag: None,
                        digest: Some(digest.clone()),
                    },
                    target: Target {
                        registry: route.target_registry.clone(),
                        repository: route.target_repository.clone(),
                        tags: Vec::new(),
                    },
                };
                match self.replicator.replicate(&task).await {
                    Ok(outcome) if outcome.digest() == digest => {
                        let s = outcome.stats();
                        let result = match outcome {
                            replicate::Outcome::Replicated { .. } => CopyResult::Replicated,
                            replicate::Outcome::AlreadyPresent { .. } => CopyResult::AlreadyPresent,
                        };
                        m.copy_finished(result, started.elapsed());
                        m.copy_stats(s.bytes_copied, s.blobs_uploaded, s.blobs_mounted, s.blobs_skipped);
                        self.recent.insert(key.clone());
                        Ok(())
                    }
                    Ok(outcome) => {
                        m.copy_finished(CopyResult::Failed(Class::Transient), started.elapsed());
                        Err(Failure {
                            class: ErrorClass::Transient,
                            message: format!("target verified {}, expected {digest}", outcome.digest()),
                        })
                    }
                    Err(e) => {
                        m.copy_finished(CopyResult::Failed(e.class().into()), started.elapsed());
                        Err(Failure::from(&e))
                    }
                }
            })
            .await;
        if joined {
            m.dedup_hit(DedupKind::InFlight);
        }
        result
    }

    async fn delete(&self, event: &Event, route: &Route) -> Result<RouteDone, Failure> {
        let m = metrics::global();
        let dry_run = self.cfg.delete_dry_run;
        let (source_locator, target_locator, expected) = match (event.action, &event.digest, &route.target_tag) {
            (Action::DeleteTag, _, Some(target_tag)) => {
                let tag = event.tag.clone().unwrap_or_default();
                (Locator::Tag(tag), Locator::Tag(target_tag.clone()), None)
            }
            (Action::DeleteManifest, Some(d), _) => {
                (Locator::Digest(d.clone()), Locator::Digest(d.clone()), Some(d.clone()))
            }
            _ => return Err(Failure::permanent("delete event without the tag or digest it needs")),
        };
        let src = Reference {
            registry: event.registry.clone(),
            repository: event.repository.clone(),
            tag: None,
            digest: None,
        }
        .with_locator(source_locator);
        // A delete may arrive after a newer push of the same tag: the source is the truth.
        match self.replicator.resolve(&src).await {
            Ok(Some(_)) => {
                m.delete_finished(DeleteResult::Skipped);
                return Ok(RouteDone::Stale(format!(
                    "{src} exists again at the source; not deleted"
                )));
            }
            Ok(None) => {}
            Err(e) => return Err(Failure::from(&e)),
        }
        let result = self
            .replicator
            .delete(
                &route.target_registry,
                &route.target_repository,
                &target_locator,
                expected.as_ref(),
                dry_run,
            )
            .await;
        match result {
            Ok(Deletion::Deleted) => {
                m.delete_finished(DeleteResult::Deleted);
                tracing::info!(source_ref = %src, "deleted at the target");
                Ok(RouteDone::Done)
            }
            Ok(Deletion::DryRun) => {
                m.delete_finished(DeleteResult::DryRun);
                tracing::info!(source_ref = %src, "dry run: would delete at the target");
                Ok(RouteDone::Done)
            }
            Ok(Deletion::Absent) => {
                m.delete_finished(DeleteResult::Skipped);
                Ok(RouteDone::Stale("already absent at the target".into()))
            }
            Ok(Deletion::Mismatch { actual }) => {
                m.delete_finished(DeleteResult::Skipped);
                Ok(RouteDone::Stale(format!(
                    "the target points at {actual}, not at the deleted digest; kept"
                )))
            }
            Ok(Deletion::Unsupported) => {
                m.delete_finished(DeleteResult::Unsupported);
                tracing::warn!("the target registry does not support this delete");
                Ok(RouteDone::Stale("delete unsupported by the target registry".into()))
            }
            Err(e) => {
                m.delete_finished(DeleteResult::Failed);
                Err(Failure::from(&e))
            }
        }
    }
}

fn target_ref(route: &Route) -> String {
    match &route.target_tag {
        Some(t) => format!("{}/{}:{t}", route.target_registry, route.target_repository),
        None => format!("{}/{}", route.target_registry, route.target_repository),
    }
}

/// Which failure decides the settlement when several routes fail.
fn severity(c: ErrorClass) -> u8 {
    match c {
        ErrorClass::Permanent => 0,
        ErrorClass::Transient => 1,
        ErrorClass::Systemic => 2,
    }
}

/// Full jitter: a random delay in [d/2, d].
fn jitter(d: Duration) -> Duration {
    d / 2 + d.mul_f64(fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_class_decides() {
        assert!(severity(ErrorClass::Systemic) > severity(ErrorClass::Transient));
        assert!(severity(ErrorClass::Transient) > severity(ErrorClass::Permanent));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_doubles_and_resets() {
        let p = Pause::new(Duration::from_secs(1), Duration::from_secs(3));
        assert!(p.until().is_none());
        assert_eq!(p.trip(), Duration::from_secs(1));
        assert!(p.until().is_some());
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(p.until().is_none());
        assert_eq!(p.trip(), Duration::from_secs(2));
        assert_eq!(p.trip(), Duration::from_secs(3));
        assert_eq!(p.trip(), Duration::from_secs(3));
        p.reset();
        assert_eq!(p.trip(), Duration::from_secs(1));
    }
}
