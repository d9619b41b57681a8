//! Process-wide Prometheus metrics: one registry, typed metric families, closed label sets.
//!
//! Role: count and time what the daemon does (messages, copies, deletes, registry
//! requests) and hold the liveness and readiness latches the admin port reports.
//!
//! Must never: import anything from the crate (this is a leaf module); put a repository,
//! tag, digest, URL or error text in a label. Every label value comes from an enum defined
//! here (`as_str()`), from a `&'static str` chosen in code (`source`), or is a configured
//! registry host (`registry`), which is additionally checked against a host-name alphabet
//! and capped in number, so a bug upstream cannot explode cardinality.
//!
//! Invariants: names follow `regrelay_<noun>_<unit>[_total]` (STYLE.md 2); every family
//! has a HELP text; label combinations of the closed enums are created at zero when the
//! registry is built, so dashboards and alerts see them before the first event.

mod watch;
pub use watch::WatchMetrics;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

mod sweep;

pub use sweep::{Drift as SweepDrift, SweepMetrics};

/// The `Content-Type` of [`Metrics::render`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Buckets of `regrelay_copy_duration_seconds`: 50 ms (an already-present HEAD) to 30 min
/// (a multi-GiB image over a slow link).
const COPY_BUCKETS: [f64; 15] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];

/// Buckets of `regrelay_event_lag_seconds`: 100 ms to one hour.
const LAG_BUCKETS: [f64; 15] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// Most distinct `registry` label values kept; later hosts are counted as `other`.
/// Hosts come from the configuration, so this only trips on a bug.
const MAX_REGISTRY_LABELS: usize = 64;

/// How a message was settled (label `outcome` of `regrelay_messages_settled_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Settle {
    /// Acknowledged after a verified outcome.
    Acked,
    /// Negatively acknowledged: the broker redelivers it.
    Nacked,
    /// Acknowledged without work: the event is not one regrelay acts on.
    Ignored,
    /// Rejected: dead-lettered, or acked and counted (Pub/Sub `reject_mode`).
    Rejected,
}

impl Settle {
    const ALL: [Settle; 4] = [Settle::Acked, Settle::Nacked, Settle::Ignored, Settle::Rejected];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Settle::Acked => "acked",
            Settle::Nacked => "nacked",
            Settle::Ignored => "ignored",
            Settle::Rejected => "rejected",
        }
    }
}

/// The error class of a failure (label `error_class`), mirroring `registry::ErrorClass`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Worth retrying.
    Transient,
    /// Failing for this message only.
    Permanent,
    /// Failing for every message until an operator acts.
    Systemic,
}

impl Class {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Transient => "transient",
            Class::Permanent => "permanent",
            Class::Systemic => "systemic",
        }
    }
}

/// How one copy ended (labels `outcome` and `error_class` of `regrelay_copies_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyResult {
    /// Something was written and verified.
    Replicated,
    /// The target already held everything.
    AlreadyPresent,
    /// The copy failed with this class.
    Failed(Class),
}

impl CopyResult {
    const ALL: [CopyResult; 5] = [
        CopyResult::Replicated,
        CopyResult::AlreadyPresent,
        CopyResult::Failed(Class::Transient),
        CopyResult::Failed(Class::Permanent),
        CopyResult::Failed(Class::Systemic),
    ];

    /// The `outcome` label value.
    pub fn outcome(self) -> &'static str {
        match self {
            CopyResult::Replicated => "replicated",
            CopyResult::AlreadyPresent => "already_present",
            CopyResult::Failed(_) => "failed",
        }
    }

    /// The `error_class` label value (`none` unless failed).
    pub fn error_class(self) -> &'static str {
        match self {
            CopyResult::Failed(c) => c.as_str(),
            _ => "none",
        }
    }
}

/// Why a duplicate was skipped (label `kind` of `regrelay_dedup_hits_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DedupKind {
    /// The same image is being copied right now.
    InFlight,
    /// The same image was copied recently.
    Recent,
    /// The target tag already pointed at the source tag's current digest.
    InPlace,
}

impl DedupKind {
    const ALL: [DedupKind; 3] = [DedupKind::InFlight, DedupKind::Recent, DedupKind::InPlace];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DedupKind::InFlight => "in_flight",
            DedupKind::Recent => "recent",
            DedupKind::InPlace => "in_place",
        }
    }
}

/// How one delete request ended (label `outcome` of `regrelay_deletes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeleteResult {
    /// The target manifest was deleted.
    Deleted,
    /// Dry run: it would have been deleted.
    DryRun,
    /// Not deleted on purpose (absent, moved to another digest, or not allowed by rules).
    Skipped,
    /// The target registry does not allow deletes.
    Unsupported,
    /// The delete failed.
    Failed,
}

impl DeleteResult {
    const ALL: [DeleteResult; 5] = [
        DeleteResult::Deleted,
        DeleteResult::DryRun,
        DeleteResult::Skipped,
        DeleteResult::Unsupported,
        DeleteResult::Failed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteResult::Deleted => "deleted",
            DeleteResult::DryRun => "dry_run",
            DeleteResult::Skipped => "skipped",
            DeleteResult::Unsupported => "unsupported",
            DeleteResult::Failed => "failed",
        }
    }
}

/// What happened to one blob of a copy (label `action` of `regrelay_blobs_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobAction {
    /// Streamed from source to target.
    Uploaded,
    /// Mounted from another repository of the target registry.
    Mounted,
    /// Already present at the target.
    Skipped,
}

impl BlobAction {
    const ALL: [BlobAction; 3] = [BlobAction::Uploaded, BlobAction::Mounted, BlobAction::Skipped];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            BlobAction::Uploaded => "uploaded",
            BlobAction::Mounted => "mounted",
            BlobAction::Skipped => "skipped",
        }
    }
}

/// The `status_class` label value of one registry answer: `1xx`..`5xx`, or `error` when
/// no HTTP answer came back (connect, reset, timeout) or the status is out of range.
pub fn status_class(status: Option<u16>) -> &'static str {
    match status.map(|s| s / 100) {
        Some(1) => "1xx",
        Some(2) => "2xx",
        Some(3) => "3xx",
        Some(4) => "4xx",
        Some(5) => "5xx",
        _ => "error",
    }
}

/// Decrements a gauge when dropped (`regrelay_copies_in_flight`, `regrelay_messages_waiting`);
/// from [`Metrics::copy_in_flight`] and [`Metrics::message_waiting`].
#[must_use = "the copy counts as in flight only while the guard lives"]
#[derive(Debug)]
pub struct InFlightGuard {
    gauge: IntGauge,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The metric families and health latches. Use the process-wide [`global`] instance.
pub struct Metrics {
    registry: Registry,
    messages_received: IntCounterVec,
    messages_settled: IntCounterVec,
    deliveries_dropped: IntCounter,
    lock_lost: IntCounter,
    copies: IntCounterVec,
    copy_duration: HistogramVec,
    copied_bytes: IntCounter,
    blobs: IntCounterVec,
    dedup_hits: IntCounterVec,
    event_lag: Histogram,
    copies_in_flight: IntGauge,
    messages_waiting: IntGauge,
    last_success: Gauge,
    deletes: IntCounterVec,
    registry_requests: IntCounterVec,
    registry_throttled: IntCounterVec,
    registry_retries: IntCounterVec,
    ready_gauge: IntGauge,
    source_paused: IntGauge,
    registry_healthy: IntGaugeVec,
    sweep: SweepMetrics,
    ready: AtomicBool,
    alive: AtomicBool,
    /// `registry` label values handed out so far (see [`MAX_REGISTRY_LABELS`]).
    registry_labels: Mutex<HashSet<String>>,
    /// Watches, gates, promotions and notifications (buffered base images).
    pub watch: WatchMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("ready", &self.is_ready())
            .field("alive", &self.is_alive())
            .finish_non_exhaustive()
    }
}

/// The process-wide metrics, created on first use.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter definition");
    registry.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help)).expect("valid counter definition");
    registry.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

fn int_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge definition");
    registry.register(Box::new(g.clone())).expect("metric names are unique");
    g
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help)).expect("valid gauge definition");
    registry.register(Box::new(g.clone())).expect("metric names are unique");
    g
}

impl Metrics {
    /// A fresh, independent set of families in its own registry. The daemon uses
    /// [`global`]; separate instances are for tests.
    pub fn new() -> Metrics {
        let r = Registry::new();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "regrelay_build_info",
                "Always 1; the version label tells which regrelay build is running.",
            ),
            &["version"],
        )
        .expect("valid gauge definition");
        r.register(Box::new(build_info.clone()))
            .expect("metric names are unique");
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);

        let m = Metrics {
            messages_received: counter_vec(
                &r,
                "regrelay_messages_received_total",
                "Messages received from the queue, by queue source (pubsub, servicebus, ...).",
                &["source"],
            ),
            messages_settled: counter_vec(
                &r,
                "regrelay_messages_settled_total",
                "Messages settled with the broker: acked after a verified copy, nacked for redelivery, \
                 ignored (acked without work) or rejected (dead-lettered or counted).",
                &["outcome"],
            ),
            deliveries_dropped: counter(
                &r,
                "regrelay_deliveries_dropped_total",
                "Deliveries whose handle was dropped without an explicit settlement (each is a nack; \
                 non-zero outside shutdown points at a bug).",
            ),
            lock_lost: counter(
                &r,
                "regrelay_lock_lost_total",
                "Messages whose broker lock was lost (Service Bus answered 404 to a renew, complete or \
                 abandon): the message comes back and is processed again, idempotently.",
            ),
            copies: counter_vec(
                &r,
                "regrelay_copies_total",
                "Image copies finished, by outcome and, for failures, error class (transient = retried \
                 via redelivery, permanent = this image only, systemic = needs an operator).",
                &["outcome", "error_class"],
            ),
            copy_duration: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "regrelay_copy_duration_seconds",
                        "Wall time of one image copy including verification, by outcome.",
                    )
                    .buckets(COPY_BUCKETS.to_vec()),
                    &["outcome"],
                )
                .expect("valid histogram definition");
                r.register(Box::new(h.clone())).expect("metric names are unique");
                h
            },
            copied_bytes: counter(
                &r,
                "regrelay_copied_bytes_total",
                "Blob bytes streamed from source to target registries (mounted and skipped blobs excluded).",
            ),
            blobs: counter_vec(
                &r,
                "regrelay_blobs_total",
                "Blobs handled by copies: uploaded (streamed), mounted (cross-repository) or skipped \
                 (already at the target).",
                &["action"],
            ),
            dedup_hits: counter_vec(
                &r,
                "regrelay_dedup_hits_total",
                "Events skipped as duplicates: the same image was being copied (in_flight) or was \
                 copied recently (recent).",
                &["kind"],
            ),
            event_lag: {
                let h = Histogram::with_opts(
                    HistogramOpts::new(
                        "regrelay_event_lag_seconds",
                        "Time from the event's publication to its acknowledgement: how far replication \
                         trails the source registry.",
                    )
                    .buckets(LAG_BUCKETS.to_vec()),
                )
                .expect("valid histogram definition");
                r.register(Box::new(h.clone())).expect("metric names are unique");
                h
            },
            copies_in_flight: int_gauge(&r, "regrelay_copies_in_flight", "Image copies running right now."),
            messages_waiting: int_gauge(
                &r,
                "regrelay_messages_waiting",
                "Failed messages held (lease or lock kept) until their retry delay ends, then handed \
                 back to the broker.",
            ),
            last_success: {
                let g = Gauge::with_opts(Opts::new(
                    "regrelay_last_success_timestamp_seconds",
                    "Unix time of the last verified copy (0 = none since start); alert on its age.",
                ))
                .expect("valid gauge definition");
                r.register(Box::new(g.clone())).expect("metric names are unique");
                g
            },
            deletes: counter_vec(
                &r,
                "regrelay_deletes_total",
                "Delete requests handled: deleted, dry_run (would delete), skipped (absent, moved or \
                 not allowed), unsupported (the target refuses deletes, or cannot delete a tag and \
                 its manifest is kept) or failed.",
                &["outcome"],
            ),
            registry_requests: counter_vec(
                &r,
                "regrelay_registry_requests_total",
                "HTTP requests to registries (token endpoints included), by configured registry host and \
                 status class; error = no HTTP answer (connect, reset, timeout).",
                &["registry", "status_class"],
            ),
            registry_throttled: counter_vec(
                &r,
                "regrelay_registry_throttled_total",
                "HTTP 429 (too many requests) answers from registries, by configured registry host.",
                &["registry"],
            ),
            registry_retries: counter_vec(
                &r,
                "regrelay_registry_retries_total",
                "Registry requests retried in-process after a failure, by configured registry host and \
                 error class.",
                &["registry", "error_class"],
            ),
            ready_gauge: int_gauge(
                &r,
                "regrelay_ready",
                "1 when the daemon is ready to take work (/readyz answers 200), else 0.",
            ),
            source_paused: int_gauge(
                &r,
                "regrelay_source_paused",
                "1 while pulling from the queue is paused after a systemic failure (for example rejected \
                 registry credentials), else 0.",
            ),
            registry_healthy: int_gauge_vec(
                &r,
                "regrelay_registry_healthy",
                "1 while a configured registry is usable, 0 while it is unhealthy after a systemic failure \
                 (work that needs it waits for its backoff).",
                &["registry"],
            ),
            watch: WatchMetrics::new(&r),
            sweep: SweepMetrics::new(&r),
            registry: r,
            ready: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            registry_labels: Mutex::new(HashSet::new()),
        };
        // Pre-create every combination of the closed label sets at zero.
        for s in Settle::ALL {
            m.messages_settled.with_label_values(&[s.as_str()]);
        }
        for c in CopyResult::ALL {
            m.copies.with_label_values(&[c.outcome(), c.error_class()]);
        }
        for o in ["replicated", "already_present", "failed"] {
            m.copy_duration.with_label_values(&[o]);
        }
        for a in BlobAction::ALL {
            m.blobs.with_label_values(&[a.as_str()]);
        }
        for k in DedupKind::ALL {
            m.dedup_hits.with_label_values(&[k.as_str()]);
        }
        for d in DeleteResult::ALL {
            m.deletes.with_label_values(&[d.as_str()]);
        }
        m
    }

    /// The reconcile sweep's families.
    pub fn sweep(&self) -> &SweepMetrics {
        &self.sweep
    }

    /// All families in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        match TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            Ok(()) => String::from_utf8(buf).unwrap_or_default(),
            // Cannot happen with the families defined here; a comment keeps the page valid.
            Err(e) => format!("# regrelay: encoding metrics failed: {e}\n"),
        }
    }

    /// A message arrived from the queue `source` (`pubsub`, `servicebus`, `memory`).
    pub fn message_received(&self, source: &'static str) {
        self.messages_received.with_label_values(&[source]).inc();
    }

    /// A message was settled with the broker.
    pub fn message_settled(&self, outcome: Settle) {
        self.messages_settled.with_label_values(&[outcome.as_str()]).inc();
    }

    /// A delivery handle was dropped without settlement (it becomes a nack).
    pub fn delivery_dropped(&self) {
        self.deliveries_dropped.inc();
    }

    /// A message's broker lock was lost (counted once per delivery).
    pub fn lock_lost(&self) {
        self.lock_lost.inc();
    }

    /// One copy finished after `duration`.
    pub fn copy_finished(&self, result: CopyResult, duration: Duration) {
        self.copies
            .with_label_values(&[result.outcome(), result.error_class()])
            .inc();
        self.copy_duration
            .with_label_values(&[result.outcome()])
            .observe(duration.as_secs_f64());
    }

    /// What one copy moved: blob bytes streamed and blobs uploaded, mounted and skipped.
    pub fn copy_stats(&self, bytes: u64, uploaded: u64, mounted: u64, skipped: u64) {
        self.copied_bytes.inc_by(bytes);
        for (action, n) in [
            (BlobAction::Uploaded, uploaded),
            (BlobAction::Mounted, mounted),
            (BlobAction::Skipped, skipped),
        ] {
            self.blobs.with_label_values(&[action.as_str()]).inc_by(n);
        }
    }

    /// An event was skipped as a duplicate.
    pub fn dedup_hit(&self, kind: DedupKind) {
        self.dedup_hits.with_label_values(&[kind.as_str()]).inc();
    }

    /// Publish-to-ack lag of one event.
    pub fn event_lag(&self, lag: Duration) {
        self.event_lag.observe(lag.as_secs_f64());
    }

    /// Count a copy as in flight until the guard is dropped.
    pub fn copy_in_flight(&self) -> InFlightGuard {
        self.copies_in_flight.inc();
        InFlightGuard {
            gauge: self.copies_in_flight.clone(),
        }
    }

    /// Count a failed message as waiting for its hand-back until the guard is dropped.
    pub fn message_waiting(&self) -> InFlightGuard {
        self.messages_waiting.inc();
        InFlightGuard {
            gauge: self.messages_waiting.clone(),
        }
    }

    /// Record now as the time of the last verified copy.
    pub fn last_success_now(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.last_success.set(now.as_secs_f64());
    }

    /// One delete request was handled.
    pub fn delete_finished(&self, outcome: DeleteResult) {
        self.deletes.with_label_values(&[outcome.as_str()]).inc();
    }

    /// One answer from `registry` (a configured host): its HTTP status, or `None` when
    /// the request got no answer. A 429 also counts in `regrelay_registry_throttled_total`.
    pub fn registry_request(&self, registry: &str, status: Option<u16>) {
        let registry = self.registry_label(registry);
        self.registry_requests
            .with_label_values(&[registry.as_str(), status_class(status)])
            .inc();
        if status == Some(429) {
            self.registry_throttled.with_label_values(&[registry.as_str()]).inc();
        }
    }

    /// Record whether a configured registry is usable.
    pub fn set_registry_healthy(&self, registry: &str, healthy: bool) {
        let registry = self.registry_label(registry);
        self.registry_healthy
            .with_label_values(&[registry.as_str()])
            .set(i64::from(healthy));
    }

    /// A request to `registry` failed with `class` and is being retried in-process.
    pub fn registry_retry(&self, registry: &str, class: Class) {
        let registry = self.registry_label(registry);
        self.registry_retries
            .with_label_values(&[registry.as_str(), class.as_str()])
            .inc();
    }

    /// Set the readiness latch (and `regrelay_ready`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
        self.ready_gauge.set(i64::from(ready));
    }

    /// Whether the daemon is ready to take work.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Record whether pulling from the queue is paused.
    pub fn set_paused(&self, paused: bool) {
        self.source_paused.set(i64::from(paused));
    }

    /// Set the liveness latch (true from start; false makes `/livez` answer 503 so the
    /// supervisor restarts the process).
    pub fn set_alive(&self, alive: bool) {
        self.alive.store(alive, Ordering::SeqCst);
    }

    /// Whether the process reports itself alive.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// The `registry` label value for `host`: the host itself when it looks like one
    /// (`name[:port]`, IPv6 in brackets), else `invalid`; `other` once
    /// [`MAX_REGISTRY_LABELS`] distinct hosts have been seen.
    fn registry_label(&self, host: &str) -> String {
        if !looks_like_host(host) {
            return "invalid".into();
        }
        let mut seen = self.registry_labels.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(host) {
            return host.to_owned();
        }
        if seen.len() >= MAX_REGISTRY_LABELS {
            return "other".into();
        }
        seen.insert(host.to_owned());
        host.to_owned()
    }
}

/// `name[:port]` or `[v6][:port]` with a host-name alphabet and a numeric port: what a
/// configured registry host looks like, and what a reference, digest or error text is not.
fn looks_like_host(h: &str) -> bool {
    fn port_ok(p: &str) -> bool {
        (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit())
    }
    if h.is_empty() || h.len() > 255 {
        return false;
    }
    if let Some(rest) = h.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        let v6_ok = !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        return v6_ok && (after.is_empty() || after.strip_prefix(':').is_some_and(port_ok));
    }
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (h, None),
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && port.is_none_or(port_ok)
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAMILIES: [(&str, &str); 21] = [
        ("regrelay_build_info", "gauge"),
        ("regrelay_messages_received_total", "counter"),
        ("regrelay_messages_settled_total", "counter"),
        ("regrelay_deliveries_dropped_total", "counter"),
        ("regrelay_lock_lost_total", "counter"),
        ("regrelay_copies_total", "counter"),
        ("regrelay_copy_duration_seconds", "histogram"),
        ("regrelay_copied_bytes_total", "counter"),
        ("regrelay_blobs_total", "counter"),
        ("regrelay_dedup_hits_total", "counter"),
        ("regrelay_event_lag_seconds", "histogram"),
        ("regrelay_copies_in_flight", "gauge"),
        ("regrelay_messages_waiting", "gauge"),
        ("regrelay_last_success_timestamp_seconds", "gauge"),
        ("regrelay_deletes_total", "counter"),
        ("regrelay_registry_requests_total", "counter"),
        ("regrelay_registry_throttled_total", "counter"),
        ("regrelay_registry_retries_total", "counter"),
        ("regrelay_ready", "gauge"),
        ("regrelay_source_paused", "gauge"),
        ("regrelay_registry_healthy", "gauge"),
    ];

    /// The value of the sample line that starts with `prefix` (name plus labels).
    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(prefix).and_then(|rest| rest.trim().parse().ok()))
    }

    /// Drive every method once, with a registry host, so each family has samples.
    fn exercise(m: &Metrics) {
        m.message_received("pubsub");
        for s in Settle::ALL {
            m.message_settled(s);
        }
        m.delivery_dropped();
        m.lock_lost();
        for c in CopyResult::ALL {
            m.copy_finished(c, Duration::from_millis(1500));
        }
        m.copy_stats(1234, 2, 1, 3);
        for k in DedupKind::ALL {
            m.dedup_hit(k);
        }
        m.event_lag(Duration::from_secs(3));
        drop(m.copy_in_flight());
        drop(m.message_waiting());
        m.last_success_now();
        for d in DeleteResult::ALL {
            m.delete_finished(d);
        }
        for s in [None, Some(200), Some(301), Some(404), Some(429), Some(503)] {
            m.registry_request("registry.example:5000", s);
        }
        for c in [Class::Transient, Class::Permanent, Class::Systemic] {
            m.registry_retry("registry.example:5000", c);
        }
        m.set_ready(true);
        m.set_paused(true);
        m.set_registry_healthy("registry.example:5000", false);
        m.set_alive(true);
    }

    #[test]
    fn every_family_has_help_and_type() {
        let m = Metrics::new();
        exercise(&m);
        let text = m.render();
        let names: HashSet<&str> = FAMILIES.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), 21, "twenty-one distinct families");
        for (name, kind) in FAMILIES {
            assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "no TYPE for {name}");
        }
        for name in names {
            assert!(
                name.starts_with("regrelay_")
                    && (name.ends_with("_total")
                        || name.ends_with("_seconds")
                        || name.ends_with("_info")
                        || name.ends_with("_in_flight")
                        || name == "regrelay_messages_waiting"
                        || name == "regrelay_registry_healthy"
                        || name == "regrelay_ready"
                        || name == "regrelay_source_paused"),
                "{name} breaks the naming rule"
            );
        }
    }

    #[test]
    fn closed_label_sets_exist_at_zero_before_any_event() {
        let text = Metrics::new().render();
        for line in [
            r#"regrelay_messages_settled_total{outcome="acked"} 0"#,
            r#"regrelay_messages_settled_total{outcome="rejected"} 0"#,
            r#"regrelay_copies_total{error_class="none",outcome="replicated"} 0"#,
            r#"regrelay_copies_total{error_class="none",outcome="already_present"} 0"#,
            r#"regrelay_copies_total{error_class="systemic",outcome="failed"} 0"#,
            r#"regrelay_copy_duration_seconds_count{outcome="failed"} 0"#,
            r#"regrelay_blobs_total{action="mounted"} 0"#,
            r#"regrelay_dedup_hits_total{kind="in_flight"} 0"#,
            r#"regrelay_deletes_total{outcome="dry_run"} 0"#,
            "regrelay_deliveries_dropped_total 0",
            "regrelay_ready 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}`:\n{text}");
        }
        let version = format!(r#"regrelay_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION"));
        assert!(text.contains(&version));
        // Registry hosts are not pre-created: only configured hosts that were contacted.
        assert!(!text.contains("regrelay_registry_requests_total{"));
    }

    #[test]
    fn counters_move() {
        let m = Metrics::new();
        m.message_settled(Settle::Nacked);
        m.message_settled(Settle::Nacked);
        m.copy_finished(CopyResult::Failed(Class::Transient), Duration::from_secs(2));
        m.copy_finished(CopyResult::Replicated, Duration::from_millis(40));
        m.copy_stats(100, 1, 0, 4);
        m.copy_stats(50, 1, 2, 0);
        m.registry_request("r.example", Some(429));
        m.registry_request("r.example", Some(202));
        m.registry_request("r.example", None);
        m.registry_retry("r.example", Class::Transient);
        m.dedup_hit(DedupKind::Recent);
        m.delete_finished(DeleteResult::Unsupported);
        m.message_received("servicebus");
        m.event_lag(Duration::from_millis(300));
        let t = m.render();
        let v = |p: &str| sample(&t, p).unwrap_or_else(|| panic!("no sample {p}:\n{t}"));
        assert_eq!(v(r#"regrelay_messages_settled_total{outcome="nacked"}"#), 2.0);
        assert_eq!(
            v(r#"regrelay_copies_total{error_class="transient",outcome="failed"}"#),
            1.0
        );
        assert_eq!(v(r#"regrelay_copy_duration_seconds_count{outcome="replicated"}"#), 1.0);
        assert_eq!(
            v(r#"regrelay_copy_duration_seconds_bucket{outcome="replicated",le="0.05"}"#),
            1.0
        );
        assert_eq!(v("regrelay_copied_bytes_total"), 150.0);
        assert_eq!(v(r#"regrelay_blobs_total{action="uploaded"}"#), 2.0);
        assert_eq!(v(r#"regrelay_blobs_total{action="skipped"}"#), 4.0);
        assert_eq!(
            v(r#"regrelay_registry_requests_total{registry="r.example",status_class="4xx"}"#),
            1.0
        );
        assert_eq!(
            v(r#"regrelay_registry_requests_total{registry="r.example",status_class="error"}"#),
            1.0
        );
        assert_eq!(v(r#"regrelay_registry_throttled_total{registry="r.example"}"#), 1.0);
        assert_eq!(
            v(r#"regrelay_registry_retries_total{error_class="transient",registry="r.example"}"#),
            1.0
        );
        assert_eq!(v(r#"regrelay_dedup_hits_total{kind="recent"}"#), 1.0);
        assert_eq!(v(r#"regrelay_deletes_total{outcome="unsupported"}"#), 1.0);
        assert_eq!(v(r#"regrelay_messages_received_total{source="servicebus"}"#), 1.0);
        assert_eq!(v("regrelay_event_lag_seconds_count"), 1.0);
        assert_eq!(v(r#"regrelay_event_lag_seconds_bucket{le="0.5"}"#), 1.0);
    }

    #[test]
    fn gauges_and_latches() {
        let m = Metrics::new();
        assert!(!m.is_ready() && m.is_alive(), "starts not ready, alive");
        let a = m.copy_in_flight();
        let b = m.copy_in_flight();
        assert_eq!(sample(&m.render(), "regrelay_copies_in_flight"), Some(2.0));
        drop(a);
        assert_eq!(sample(&m.render(), "regrelay_copies_in_flight"), Some(1.0));
        drop(b);
        assert_eq!(sample(&m.render(), "regrelay_copies_in_flight"), Some(0.0));
        m.set_ready(true);
        m.set_paused(true);
        assert!(m.is_ready());
        let t = m.render();
        assert_eq!(sample(&t, "regrelay_ready"), Some(1.0));
        assert_eq!(sample(&t, "regrelay_source_paused"), Some(1.0));
        m.set_ready(false);
        m.set_alive(false);
        assert!(!m.is_ready() && !m.is_alive());
        assert_eq!(sample(&m.render(), "regrelay_ready"), Some(0.0));
        assert_eq!(
            sample(&m.render(), "regrelay_last_success_timestamp_seconds"),
            Some(0.0)
        );
        m.last_success_now();
        assert!(sample(&m.render(), "regrelay_last_success_timestamp_seconds").unwrap() > 1.6e9);
    }

    #[test]
    fn no_label_value_comes_from_free_text() {
        // Label values are typed: enums, `&'static str` sources and host names. Even a
        // caller passing junk as a "host" cannot smuggle a reference, digest or error text in.
        let m = Metrics::new();
        exercise(&m);
        let digest = format!("sha256:{}", "a".repeat(64));
        m.registry_request(&format!("r.example/team/app@{digest}"), Some(200));
        m.registry_request("connection refused: tcp 10.0.0.1", None);
        m.registry_retry(&digest, Class::Permanent);
        let text = m.render();
        assert!(!text.contains("sha256:"), "a digest reached a label:\n{text}");
        assert!(!text.contains("team/app") && !text.contains("refused"));
        assert_eq!(
            sample(
                &text,
                r#"regrelay_registry_requests_total{registry="invalid",status_class="2xx"}"#
            ),
            Some(1.0)
        );
    }

    #[test]
    fn registry_label_values_are_capped() {
        let m = Metrics::new();
        for i in 0..MAX_REGISTRY_LABELS + 5 {
            m.registry_request(&format!("r{i}.example"), Some(200));
        }
        let t = m.render();
        assert_eq!(
            sample(
                &t,
                r#"regrelay_registry_requests_total{registry="other",status_class="2xx"}"#
            ),
            Some(5.0)
        );
        assert_eq!(
            sample(
                &t,
                r#"regrelay_registry_requests_total{registry="r0.example",status_class="2xx"}"#
            ),
            Some(1.0)
        );
    }

    #[test]
    fn host_shapes() {
        for ok in [
            "r.example",
            "127.0.0.1:5000",
            "[::1]:5000",
            "[fd00::1]",
            "europe-docker.pkg.dev",
            "my_reg:443",
        ] {
            assert!(looks_like_host(ok), "{ok}");
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        for bad in [
            "",
            digest.as_str(),
            "r.example/team/app",
            "r.example:v1",
            "a b",
            "[::1",
            "[::1]x",
            "r.example:123456",
            "https://r.example",
        ] {
            assert!(!looks_like_host(bad), "{bad}");
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(Some(101)), "1xx");
        assert_eq!(status_class(Some(204)), "2xx");
        assert_eq!(status_class(Some(307)), "3xx");
        assert_eq!(status_class(Some(401)), "4xx");
        assert_eq!(status_class(Some(599)), "5xx");
        assert_eq!(status_class(Some(999)), "error");
        assert_eq!(status_class(None), "error");
    }

    #[test]
    fn global_is_one_instance() {
        assert!(std::ptr::eq(global(), global()));
        assert!(global().render().contains("regrelay_build_info"));
    }
}
