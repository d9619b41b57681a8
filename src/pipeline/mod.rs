//! The pipeline: receive a delivery, decode it, turn it into executor items, run them,
//! and settle the message. **The only place that settles a message.**
//!
//! Per message:
//! 1. Decode the payload ([`crate::event::decode`]) into one or more events (a
//!    distribution envelope or an Event Grid batch carries several); undecodable →
//!    Permanent (rejected).
//! 2. Refuse a registry host that is not configured (any event's) → Permanent, with no
//!    connection.
//! 3. Plan routes with [`crate::rules::plan`] for every event; none → acked and counted as
//!    `ignored`.
//! 4. Turn each route of each event into an [`Item`](crate::engine::Item) ([`settle::item`]) and run the
//!    items through the executor ([`Execute`]), in parallel. The executor owns the
//!    replication policy (re-resolving tags under a lock, single-flight, the recent
//!    memory, guarded deletes, registry health).
//! 5. Settle from the items' results ([`settle::verdict`], pure): ack only when every item
//!    verified (or was stale); Permanent → reject (the source applies its reject mode);
//!    Transient or Systemic → hand back after the retry delay ([`handback`]: the message
//!    is held, its lease or lock kept, for a delay that grows with its delivery count).
//!
//! With `dry_run` (`regrelay run --dry-run`) steps 1–3 run and every route is logged with
//! what it would do; nothing is executed and every message goes back to the broker
//! untouched, after the retry delay (so a dry run does not spin on redeliveries).
//!
//! Pulling pauses only while no rule can make progress (its source registry or all its
//! targets unhealthy: [`Health::pause_until`]).
//!
//! Must never: ack before the executor returned a verified result for every item, ack a
//! message whose work failed with a Transient or Systemic error, or contact a registry
//! that is not in the configuration. Dropping a delivery (shutdown past the grace period)
//! nacks.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::config::{PipelineConfig, Rule};
use crate::engine::{Execute, Failure};
use crate::event;
use crate::health::Health;
use crate::metrics::{self, Settle};
use crate::queue::{Delivery, Source};
use crate::replicate::ErrorClass;
use crate::retry::{Jitter, Schedule};
use crate::rules::{self, Plan};

pub mod handback;
pub mod settle;

use handback::HandBack;

/// Reconnect delays after a source error: 0.5 s doubling to 60 s, in [d/2, d].
const SOURCE_BACKOFF: Schedule =
    Schedule::new(Duration::from_millis(500), Duration::from_secs(60)).jitter(Jitter::Half);
use settle::Verdict;

/// The message-processing loop, shared by all workers.
pub struct Pipeline<E: Execute> {
    executor: Arc<E>,
    health: Arc<Health>,
    rules: Vec<Rule>,
    allowed: HashSet<String>,
    cfg: PipelineConfig,
    handback: HandBack,
    /// Where events without a registry host come from (`[source.origin]`).
    origin: event::Origin,
}

impl<E: Execute> std::fmt::Debug for Pipeline<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("rules", &self.rules.len()).finish()
    }
}

impl<E: Execute> Pipeline<E> {
    /// A pipeline over `executor`; `allowed_hosts` are the configured registries.
    pub fn new(
        executor: Arc<E>,
        health: Arc<Health>,
        rules: Vec<Rule>,
        allowed_hosts: impl IntoIterator<Item = String>,
        cfg: PipelineConfig,
    ) -> Pipeline<E> {
        Pipeline {
            executor,
            health,
            rules,
            allowed: allowed_hosts.into_iter().collect(),
            handback: HandBack::new(cfg.retry_delay_min, cfg.retry_delay_max, cfg.max_waiting),
            origin: event::Origin::none(),
            cfg,
        }
    }

    /// Place events whose payload names no registry host with `origin`
    /// (`[source.origin]`); without it they are rejected.
    pub fn with_origin(mut self, origin: event::Origin) -> Pipeline<E> {
        self.origin = origin;
        self
    }

    /// Pull from `source` with at most `workers` messages in flight until `shutdown` is
    /// cancelled or the source is exhausted; then hand back the waiting messages, let
    /// in-flight work finish within the grace period, and have the source hand back what
    /// is left ([`Source::abort`]) or close it.
    pub async fn run<Src: Source>(self: Arc<Self>, mut source: Src, shutdown: CancellationToken) {
        let m = metrics::global();
        let kind = source.kind();
        let redelivers = source.redelivers();
        let permits = Arc::new(Semaphore::new(self.cfg.workers.max(1)));
        let tracker = TaskTracker::new();
        let hard = CancellationToken::new();
        let mut source_backoff = SOURCE_BACKOFF.start();
        self.health.set_running(true);
        let mirror = {
            let health = self.health.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    health.mirror();
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                        () = stop.cancelled() => {}
                    }
                }
            })
        };
        loop {
            if let Some(until) = self.health.pause_until() {
                m.set_paused(true);
                tracing::warn!(resume_in = ?until - tokio::time::Instant::now(), "pulling paused: no rule can make progress while its registries are unhealthy");
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
                    self.health.source_failed();
                    self.health.mirror();
                    let retry_in = source_backoff.next_delay().unwrap_or(Duration::from_secs(60));
                    tracing::error!(error = %e, ?retry_in, "source not available");
                    tokio::select! {
                        () = tokio::time::sleep(retry_in) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
                Some(Ok(delivery)) => {
                    source_backoff.reset();
                    self.health.source_ok();
                    m.message_received(kind);
                    let this = self.clone();
                    let hard = hard.clone();
                    tracker.spawn(async move {
                        let _permit = permit;
                        tokio::select! {
                            () = this.process(delivery, redelivers) => {}
                            // Grace period over: dropping the delivery nacks it.
                            () = hard.cancelled() => {}
                        }
                    });
                }
            }
        }
        tracker.close();
        if !shutdown.is_cancelled() {
            // End of input: wait for the work, unless a shutdown comes meanwhile.
            tokio::select! {
                () = tracker.wait() => {}
                () = shutdown.cancelled() => {}
            }
        }
        self.health.set_running(false);
        mirror.abort();
        self.health.mirror();
        // Messages waiting out their retry delay go back to the broker now, not after it;
        // work that fails from here on is handed back at once too.
        let waiting = self.handback.waiting();
        if waiting > 0 {
            tracing::info!(waiting, "handing back the messages waiting for a retry");
        }
        self.handback.release_all().await;
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
                source.abort(hard, tracker.wait()).await;
                return;
            }
        }
        source.close().await;
    }

    /// Handle one delivery from receipt to settlement. `redelivers`: the source gives a
    /// nacked message back later (a broker), so failures wait out a retry delay first.
    async fn process(&self, delivery: Delivery, redelivers: bool) {
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
            if self.cfg.dry_run {
                self.log_plan(&payload);
                // Back to the broker after the retry delay like a failure, not at once: an
                // immediate hand-back would loop (Pub/Sub) or burn through the delivery
                // count (Service Bus) in seconds.
                let retry_in = self.handback.retry_delay(&id, attempt, redelivers);
                self.handback.park(handle, retry_in).await;
                m.message_settled(Settle::Nacked);
                return;
            }
            match self.handle_payload(&payload).await {
                Verdict::Done => {
                    handle.ack();
                    self.handback.forget(&id);
                    m.message_settled(Settle::Acked);
                    m.last_success_now();
                    if let Some(lag) = published.and_then(|p| SystemTime::now().duration_since(p).ok()) {
                        m.event_lag(lag);
                    }
                    tracing::debug!("acked");
                }
                Verdict::Ignored(reason) => {
                    handle.ack();
                    self.handback.forget(&id);
                    m.message_settled(Settle::Ignored);
                    tracing::info!(%reason, "ignored");
                }
                Verdict::Failed(f) if f.class == ErrorClass::Permanent => {
                    handle.reject();
                    self.handback.forget(&id);
                    m.message_settled(Settle::Rejected);
                    tracing::warn!(error = %f.message, "rejected: permanent failure");
                }
                Verdict::Failed(f) => {
                    let retry_in = self.handback.retry_delay(&id, attempt, redelivers);
                    let class = if f.class == ErrorClass::Systemic { "systemic" } else { "transient" };
                    tracing::warn!(error = %f.message, registry = f.registry.as_deref(), class, ?retry_in, "failed; the message goes back to the broker after the retry delay");
                    self.handback.park(handle, retry_in).await;
                    m.message_settled(Settle::Nacked);
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Dry run: decode and plan like [`Self::handle_payload`], and log each route with
    /// what it would do instead of running it.
    fn log_plan(&self, payload: &[u8]) {
        let decoded = match event::decode(payload, &self.origin) {
            Ok(d) => d,
            Err(e) => {
                tracing::info!(error = %e, "dry run: undecodable message; would be rejected");
                return;
            }
        };
        for reason in &decoded.ignored {
            tracing::info!(%reason, "dry run: part of the message not acted on");
        }
        if let Some(e) = decoded.events.iter().find(|e| !self.allowed.contains(&e.registry)) {
            tracing::warn!(registry = %e.registry, "dry run: registry not in the configuration; would be rejected without contact");
            return;
        }
        for event in &decoded.events {
            let source_ref = format!("{}/{}", event.registry, event.repository);
            match rules::plan(&self.rules, event) {
                Plan::Ignore(reason) => tracing::info!(%source_ref, %reason, "dry run: ignored"),
                Plan::Work(routes) => {
                    for route in routes {
                        tracing::info!(
                            rule = %route.rule,
                            %source_ref,
                            target_ref = %route.target_reference(event),
                            would = %route.describe(event, self.cfg.delete_dry_run),
                            "dry run: not executed"
                        );
                    }
                }
            }
        }
    }

    async fn handle_payload(&self, payload: &[u8]) -> Verdict {
        // One message may carry several image events (a distribution envelope, an Event
        // Grid batch): the items of all of them run, and the message settles on the worst
        // result, so it is acked only when every event is verified.
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
        // Every event's host is checked before anything is contacted.
        if let Some(e) = decoded.events.iter().find(|e| !self.allowed.contains(&e.registry)) {
            return Verdict::Failed(Failure::permanent(format!(
                "event names registry {:?}, which is not in the configuration; not contacted",
                e.registry
            )));
        }
        let mut work = Vec::new();
        let mut skipped = Vec::new();
        for event in &decoded.events {
            match rules::plan(&self.rules, event) {
                Plan::Ignore(reason) => skipped.push(reason),
                Plan::Work(routes) => work.extend(routes.into_iter().map(|route| (event, route))),
            }
        }
        if work.is_empty() {
            return Verdict::Ignored(skipped.join("; "));
        }
        if decoded.events.len() > 1 {
            tracing::info!(
                events = decoded.events.len(),
                items = work.len(),
                "message carries several image events"
            );
        }
        let results = join_all(work.iter().map(|(event, route)| {
            let span = tracing::info_span!("route", rule = %route.rule);
            let item = settle::item(event, route, &self.cfg);
            async move {
                match item {
                    Ok(item) => self.executor.execute(&item, &route.rule).await,
                    Err(f) => Err(f),
                }
            }
            .instrument(span)
        }))
        .await;
        settle::verdict(&results)
    }
}

#[cfg(test)]
mod tests;
