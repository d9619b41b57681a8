//! Process-wide Prometheus metrics: one registry, typed metric families, closed label sets.
//!
//! Role: count and time what the daemon does (messages, copies, deletes, registry
//! requests) and hold the liveness and readiness latches the admin port reports.
//!
//! Must never: import anything from the crate (this is a leaf module); put a repository,
//! tag, digest, URL or error text in a label. Every label value comes from an enum in
//! `labels` (`as_str()`), from a `&'static str` chosen in code (`source`), or is a configured
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
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder as _, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

mod labels;
mod sweep;

pub use labels::*;

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

/// Buckets of `regrelay_registry_request_duration_seconds`: 5 ms (a HEAD on loopback) to
/// 10 min (a multi-GiB streamed upload).
const REQUEST_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0,
];

/// Most distinct `registry` label values kept; later hosts are counted as `other`.
/// Hosts come from the configuration, so this only trips on a bug.
const MAX_REGISTRY_LABELS: usize = 64;

/// Most configured rule names (and target hosts) kept as `rule` (`target`) label values;
/// the rest are counted as [`OTHER`]. Rules come from the configuration.
const MAX_ROUTE_LABELS: usize = 256;

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
    registry_request_duration: HistogramVec,
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
    /// Configured rule names and target hosts: the closed `rule` and `target` label sets.
    routes: RwLock<RouteLabels>,
}

/// The closed `rule` and `target` label sets (see [`Metrics::configure_routes`]).
#[derive(Debug, Default)]
struct RouteLabels {
    rules: HashSet<String>,
    targets: HashSet<String>,
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
                "Always 1; the version and commit labels tell which regrelay build is running.",
            ),
            &["version", "commit"],
        )
        .expect("valid gauge definition");
        r.register(Box::new(build_info.clone()))
            .expect("metric names are unique");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), env!("REGRELAY_GIT_COMMIT")])
            .set(1);
        // Standard process metrics (process_cpu_seconds_total, process_resident_memory_bytes,
        // process_open_fds, ...); the collector reads /proc and reports nothing elsewhere.
        #[cfg(target_os = "linux")]
        r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("metric names are unique");

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
                 via redelivery, permanent = this image only, systemic = needs an operator), by \
                 configured rule and target registry host (other = not from a configured rule).",
                &["outcome", "error_class", "rule", "target"],
            ),
            copy_duration: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "regrelay_copy_duration_seconds",
                        "Wall time of one image copy including verification, by outcome, configured rule \
                         and target registry host.",
                    )
                    .buckets(COPY_BUCKETS.to_vec()),
                    &["outcome", "rule", "target"],
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
            registry_request_duration: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "regrelay_registry_request_duration_seconds",
                        "Time from sending a registry request to its answer's headers (or the transport \
                         failure), by configured registry host, HTTP method and status class.",
                    )
                    .buckets(REQUEST_BUCKETS.to_vec()),
                    &["registry", "method", "status_class"],
                )
                .expect("valid histogram definition");
                r.register(Box::new(h.clone())).expect("metric names are unique");
                h
            },
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
            routes: RwLock::new(RouteLabels::default()),
        };
        // Pre-create every combination of the closed label sets at zero.
        for s in Settle::ALL {
            m.messages_settled.with_label_values(&[s.as_str()]);
        }
        m.precreate_copies(OTHER, OTHER);
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

    /// Declare the configured routes, each a (rule name, target registry host): they
    /// become the closed `rule` and `target` label sets of the copy families, created at
    /// zero for each pair. Replaces an earlier declaration's sets (series already created
    /// stay). Beyond `MAX_ROUTE_LABELS` rules or targets the rest count as [`OTHER`].
    pub fn configure_routes<'a>(&self, routes: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let routes: Vec<(&str, &str)> = routes.into_iter().collect();
        let mut labels = RouteLabels::default();
        for (rule, target) in &routes {
            if labels.rules.len() < MAX_ROUTE_LABELS {
                labels.rules.insert((*rule).to_owned());
            }
            if labels.targets.len() < MAX_ROUTE_LABELS && looks_like_host(target) {
                labels.targets.insert((*target).to_owned());
            }
        }
        *self.routes.write().unwrap_or_else(|p| p.into_inner()) = labels;
        for (rule, target) in routes {
            let (rule, target) = self.route_labels(rule, target);
            self.precreate_copies(&rule, &target);
        }
    }

    /// The copy series of one (rule, target) label pair, at zero.
    fn precreate_copies(&self, rule: &str, target: &str) {
        for c in CopyResult::ALL {
            self.copies
                .with_label_values(&[c.outcome(), c.error_class(), rule, target]);
        }
        for o in ["replicated", "already_present", "failed"] {
            self.copy_duration.with_label_values(&[o, rule, target]);
        }
    }

    /// The `rule` and `target` label values: each itself when configured, else [`OTHER`].
    fn route_labels(&self, rule: &str, target: &str) -> (String, String) {
        let labels = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let pick = |set: &HashSet<String>, v: &str| {
            if set.contains(v) {
                v.to_owned()
            } else {
                OTHER.to_owned()
            }
        };
        (pick(&labels.rules, rule), pick(&labels.targets, target))
    }

    /// One copy for `rule` to the `target` registry host finished after `duration`.
    /// A rule or target outside the configured sets counts as [`OTHER`].
    pub fn copy_finished(&self, result: CopyResult, duration: Duration, rule: &str, target: &str) {
        let (rule, target) = self.route_labels(rule, target);
        self.copies
            .with_label_values(&[result.outcome(), result.error_class(), &rule, &target])
            .inc();
        self.copy_duration
            .with_label_values(&[result.outcome(), &rule, &target])
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

    /// One answer from `registry` (a configured host) to a `method` request after
    /// `elapsed`: its HTTP status, or `None` when the request got no answer. A 429 also
    /// counts in `regrelay_registry_throttled_total`.
    pub fn registry_request(&self, registry: &str, method: &str, status: Option<u16>, elapsed: Duration) {
        let registry = self.registry_label(registry);
        self.registry_requests
            .with_label_values(&[registry.as_str(), status_class(status)])
            .inc();
        self.registry_request_duration
            .with_label_values(&[registry.as_str(), method_label(method), status_class(status)])
            .observe(elapsed.as_secs_f64());
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
mod tests;
