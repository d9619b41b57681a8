//! The reconcile sweep's metric families (`regrelay_sweep_*`), registered with the
//! process registry by [`super::Metrics::new`].
//!
//! Must never: take a label value that is not one of the enums here.

use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

/// Buckets of `regrelay_sweep_duration_seconds`: one second to two hours.
const SWEEP_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
];

/// How a target tag differed (label `kind` of the drift families).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drift {
    /// The target lacked the tag.
    Missing,
    /// The target tag pointed at another digest.
    Moved,
    /// The source tag was gone (pruned).
    Gone,
}

impl Drift {
    const ALL: [Drift; 3] = [Drift::Missing, Drift::Moved, Drift::Gone];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Drift::Missing => "missing",
            Drift::Moved => "moved",
            Drift::Gone => "gone",
        }
    }
}

/// The sweep families.
#[derive(Debug)]
pub struct SweepMetrics {
    duration: Histogram,
    tags_checked: IntCounter,
    drift: IntCounterVec,
    repaired: IntCounterVec,
    failures: IntCounter,
    last_complete: Gauge,
}

impl SweepMetrics {
    /// Register the families with `r`.
    pub(super) fn new(r: &Registry) -> SweepMetrics {
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "regrelay_sweep_duration_seconds",
                "Wall time of one reconcile sweep over every rule (finished sweeps, complete or not).",
            )
            .buckets(SWEEP_BUCKETS.to_vec()),
        )
        .expect("valid histogram definition");
        r.register(Box::new(duration.clone())).expect("metric names are unique");
        let m = SweepMetrics {
            duration,
            tags_checked: super::counter(
                r,
                "regrelay_sweep_tags_checked_total",
                "Source tags the reconcile sweep resolved and compared with their targets.",
            ),
            drift: super::counter_vec(
                r,
                "regrelay_sweep_drift_total",
                "Target tags the reconcile sweep found different from their source: missing, moved \
                 (pointing elsewhere) or gone (source tag deleted; with prune only).",
                &["kind"],
            ),
            repaired: super::counter_vec(
                r,
                "regrelay_sweep_repaired_total",
                "Drift the reconcile sweep repaired through the executor (copied, tag written, deleted), \
                 by kind.",
                &["kind"],
            ),
            failures: super::counter(
                r,
                "regrelay_sweep_failures_total",
                "Reconcile sweeps that finished incomplete: a listing, a HEAD or a repair failed.",
            ),
            last_complete: {
                let g = Gauge::with_opts(Opts::new(
                    "regrelay_sweep_last_complete_timestamp_seconds",
                    "Unix time the last complete reconcile sweep ended (0 = none since start); alert \
                     when it is older than a few intervals.",
                ))
                .expect("valid gauge definition");
                r.register(Box::new(g.clone())).expect("metric names are unique");
                g
            },
        };
        for d in Drift::ALL {
            m.drift.with_label_values(&[d.as_str()]);
            m.repaired.with_label_values(&[d.as_str()]);
        }
        m
    }

    /// A sweep finished after `secs`: `complete` when nothing failed.
    pub fn finished(&self, secs: f64, complete: bool) {
        self.duration.observe(secs);
        if complete {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            self.last_complete.set(now.as_secs_f64());
        } else {
            self.failures.inc();
        }
    }

    /// `n` more tags were checked.
    pub fn tags_checked(&self, n: u64) {
        self.tags_checked.inc_by(n);
    }

    /// `found` drifts of `kind`, `repaired` of them repaired.
    pub fn drift(&self, kind: Drift, found: u64, repaired: u64) {
        self.drift.with_label_values(&[kind.as_str()]).inc_by(found);
        self.repaired.with_label_values(&[kind.as_str()]).inc_by(repaired);
    }
}
