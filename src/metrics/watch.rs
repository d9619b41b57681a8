//! Metric families of buffered base images (watches, gates, promotions, notifications).
//! Label values are configured names (`watch`, `gate`, `notify`, `registry`) and closed
//! sets (`outcome`); never a tag, a digest or a gate's output.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// The watch families.
#[derive(Debug, Clone)]
pub struct WatchMetrics {
    polls: IntCounterVec,
    new_digests: IntCounterVec,
    gate_results: IntCounterVec,
    gate_duration: HistogramVec,
    promotions: IntCounterVec,
    notifications: IntCounterVec,
    ratelimit_remaining: IntGaugeVec,
    ratelimit_limit: IntGaugeVec,
    poll_duration: Histogram,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    r.register(Box::new(c.clone())).expect("metric names are unique");
    c
}

impl WatchMetrics {
    /// Register the families in `r`.
    pub(super) fn new(r: &Registry) -> WatchMetrics {
        let cv = |name: &str, help: &str, labels: &[&str]| {
            reg(
                r,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"),
            )
        };
        let gv = |name: &str, help: &str| {
            reg(
                r,
                IntGaugeVec::new(Opts::new(name, help), &["registry"]).expect("valid gauge"),
            )
        };
        WatchMetrics {
            polls: cv(
                "regrelay_watch_polls_total",
                "Polls of a watched upstream tag (one manifest HEAD each), by watch and outcome (ok, gone, error, backoff).",
                &["watch", "outcome"],
            ),
            new_digests: cv(
                "regrelay_watch_new_digests_total",
                "New upstream digests seen by a watch.",
                &["watch"],
            ),
            gate_results: cv(
                "regrelay_gate_results_total",
                "Gate verdicts, by gate and outcome (pass, fail, retry).",
                &["gate", "outcome"],
            ),
            gate_duration: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new("regrelay_gate_duration_seconds", "Time a gate took, by gate.")
                        .buckets(vec![0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1200.0]),
                    &["gate"],
                )
                .expect("valid histogram"),
            ),
            promotions: cv(
                "regrelay_watch_promotions_total",
                "Gated digests promoted to a watch's target (outcome promoted or failed), or rejected by a gate.",
                &["watch", "outcome"],
            ),
            notifications: cv(
                "regrelay_watch_notifications_total",
                "Notifications of a promotion, by notify name and outcome (sent, failed).",
                &["notify", "outcome"],
            ),
            ratelimit_remaining: gv(
                "regrelay_registry_ratelimit_remaining",
                "The last ratelimit-remaining a registry sent (Docker Hub: pulls left in its window).",
            ),
            ratelimit_limit: gv(
                "regrelay_registry_ratelimit_limit",
                "The last ratelimit-limit a registry sent.",
            ),
            poll_duration: reg(
                r,
                Histogram::with_opts(HistogramOpts::new(
                    "regrelay_watch_poll_duration_seconds",
                    "Time one watch poll took (every tag, gates and promotions included).",
                ))
                .expect("valid histogram"),
            ),
        }
    }

    /// A tag was polled.
    pub fn poll(&self, watch: &str, outcome: &'static str) {
        self.polls.with_label_values(&[watch, outcome]).inc();
    }

    /// A new upstream digest was seen.
    pub fn new_digest(&self, watch: &str) {
        self.new_digests.with_label_values(&[watch]).inc();
    }

    /// A gate decided.
    pub fn gate(&self, gate: &str, outcome: &'static str, duration: std::time::Duration) {
        self.gate_results.with_label_values(&[gate, outcome]).inc();
        self.gate_duration
            .with_label_values(&[gate])
            .observe(duration.as_secs_f64());
    }

    /// A gated digest was promoted (`promoted`), failed to be (`failed`) or was rejected.
    pub fn promotion(&self, watch: &str, outcome: &'static str) {
        self.promotions.with_label_values(&[watch, outcome]).inc();
    }

    /// A notification was sent or finally failed.
    pub fn notification(&self, notify: &str, outcome: &'static str) {
        self.notifications.with_label_values(&[notify, outcome]).inc();
    }

    /// A registry sent rate-limit headers.
    pub fn ratelimit(&self, registry: &str, remaining: u64, limit: Option<u64>) {
        self.ratelimit_remaining
            .with_label_values(&[registry])
            .set(remaining as i64);
        if let Some(l) = limit {
            self.ratelimit_limit.with_label_values(&[registry]).set(l as i64);
        }
    }

    /// A poll of every tag of a watch took `d`.
    pub fn poll_duration(&self, d: std::time::Duration) {
        self.poll_duration.observe(d.as_secs_f64());
    }
}
