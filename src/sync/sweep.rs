//! The reconcile sweep of `regrelay run`: the same check and repair as `regrelay sync`,
//! every `[reconcile] interval_secs` (±10 %), through the daemon's own executor.
//!
//! Role: one task, so at most one sweep runs at a time; each waits a jittered interval
//! after the previous one ends, checks every rule with its own small concurrency (below
//! the event workers), repairs through the shared executor (an event and a sweep that
//! want the same digest at the same target copy it once: the executor's single-flight and
//! tag locks span both), logs what it repaired and records the `regrelay_sweep_*`
//! metrics. Shutdown cancels the wait or the sweep in progress.
//!
//! Must never: settle a message, touch the pipeline, or change a target other than
//! through the executor.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Entry, Kind, Options, Syncer};
use crate::config::Rule;
use crate::engine::{Done, Execute, Outcome};
use crate::metrics::{self, SweepDrift};
use crate::registry::Registries;

/// A periodic sweep over `rules`.
#[derive(Debug)]
pub struct Sweep<S: Registries, E: Execute> {
    syncer: Syncer<S, E>,
    rules: Vec<Rule>,
    interval: Duration,
    prune: bool,
}

/// `d` ±10 %.
pub fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}

fn label(kind: Kind) -> SweepDrift {
    match kind {
        Kind::Missing => SweepDrift::Missing,
        Kind::Moved => SweepDrift::Moved,
        Kind::Gone => SweepDrift::Gone,
    }
}

impl<S: Registries, E: Execute> Sweep<S, E> {
    /// A sweep of `rules` every `interval` through `syncer`, pruning when `prune`.
    pub fn new(syncer: Syncer<S, E>, rules: Vec<Rule>, interval: Duration, prune: bool) -> Self {
        Sweep {
            syncer,
            rules,
            interval,
            prune,
        }
    }

    /// Sweep every interval until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        tracing::info!(
            interval_secs = self.interval.as_secs(),
            rules = self.rules.len(),
            "reconcile sweep on"
        );
        loop {
            tokio::select! {
                () = tokio::time::sleep(jittered(self.interval)) => {}
                () = stop.cancelled() => return,
            }
            if !self.once(&stop).await {
                return;
            }
        }
    }

    /// One sweep; `false` when it was stopped.
    pub async fn once(&self, stop: &CancellationToken) -> bool {
        let m = metrics::global().sweep();
        let started = Instant::now();
        let sink = |entry: Entry<'_>| match entry {
            Entry::Drift(d, result) => {
                let repaired = matches!(
                    result,
                    Some(Ok(Outcome::Done(
                        Done::Copied { .. } | Done::TagWritten | Done::Deleted
                    )))
                );
                m.drift(label(d.kind), 1, u64::from(repaired));
                let target_ref = format!("{}:{}", d.target, d.tag);
                match result {
                    Some(Ok(outcome)) => {
                        tracing::info!(rule = %d.rule, drift = d.kind.as_str(), %target_ref, ?outcome, "sweep repaired drift");
                    }
                    Some(Err(f)) => {
                        tracing::warn!(rule = %d.rule, drift = d.kind.as_str(), %target_ref, error_class = f.class.as_str(), error = %f.message, "sweep could not repair drift");
                    }
                    None => {}
                }
            }
            Entry::Problem(p) => {
                tracing::warn!(rule = %p.rule, repository = p.repository.as_deref().unwrap_or(""), error_class = p.class.as_str(), error = %p.message, "sweep could not check");
            }
        };
        let opts = Options {
            apply: true,
            prune: self.prune,
        };
        let report = self.syncer.run(&self.rules, opts, stop, &sink).await;
        m.tags_checked(report.tags_checked);
        if report.cancelled {
            tracing::info!("reconcile sweep stopped by shutdown");
            return false;
        }
        let complete = report.problems == 0 && report.failed == 0;
        m.finished(started.elapsed().as_secs_f64(), complete);
        tracing::info!(
            repositories = report.repositories,
            tags_checked = report.tags_checked,
            drift = report.drift(),
            repaired = report.repaired.iter().sum::<u64>(),
            failed = report.failed,
            problems = report.problems,
            complete,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "reconcile sweep finished"
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        let d = Duration::from_secs(100);
        for _ in 0..1000 {
            let j = jittered(d);
            assert!(j >= Duration::from_secs(90) && j <= Duration::from_secs(110), "{j:?}");
        }
    }
}
