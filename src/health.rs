//! Health of one running daemon: the state of each configured registry, whether the
//! source is connected, and from those whether pulling should pause and whether the
//! daemon is ready (`/readyz`).
//!
//! Role: one instance per run, owned by the application and shared with the executor
//! (which reports registry failures and successes), the pipeline (which asks whether to
//! pull) and the admin server (which answers `/readyz` from it). Metrics only mirror it.
//!
//! A registry is **unhealthy** after a Systemic failure (credentials refused after a
//! refresh, no answer at all for `unreachable_after_secs`): work that needs it is refused
//! without contacting it until its backoff ends (doubling from `pause_min` to
//! `pause_max`); after that the next piece of work that needs it is the probe, and a
//! success makes it healthy again. Pulling pauses only when no rule can make progress: no
//! rule has a usable source registry and at least one usable target registry.
//!
//! Must never: import anything from the crate but `metrics`; contact a registry; hold
//! its lock across an await.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics;

/// How long after a source error the daemon stays not ready (unless a message arrives
/// sooner).
const NOT_READY_AFTER_SOURCE_ERROR: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
struct Registry {
    /// Unhealthy until this instant (then probing); `None` = healthy.
    until: Option<Instant>,
    /// The next backoff.
    backoff: Duration,
    /// The last Systemic failure (already redacted by the registry client).
    reason: String,
    /// Systemic failures in a row.
    failures: u32,
}

/// Why work that needs a registry was refused without contacting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// The registry host.
    pub registry: String,
    /// How long until it is probed again.
    pub retry_in: Duration,
    /// Its last Systemic failure.
    pub reason: String,
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "registry {} is unhealthy (probed again in {}s; last failure: {}); not contacted",
            self.registry,
            self.retry_in.as_secs(),
            self.reason
        )
    }
}

/// The health state of a run. See the module docs.
#[derive(Debug)]
pub struct Health {
    min: Duration,
    max: Duration,
    registries: Mutex<BTreeMap<String, Registry>>,
    /// (source registry, target registries) of each rule.
    routes: Vec<(String, Vec<String>)>,
    source_error: Mutex<Option<Instant>>,
    running: AtomicBool,
}

impl Health {
    /// Health of `hosts` (the configured registries; a closed set) for rules with the
    /// given (source, targets) pairs; unhealthy registries back off from `min` doubling
    /// to `max`.
    pub fn new(
        hosts: impl IntoIterator<Item = String>,
        routes: Vec<(String, Vec<String>)>,
        min: Duration,
        max: Duration,
    ) -> Health {
        let registries: BTreeMap<String, Registry> = hosts
            .into_iter()
            .map(|h| {
                let r = Registry {
                    until: None,
                    backoff: min,
                    reason: String::new(),
                    failures: 0,
                };
                (h, r)
            })
            .collect();
        for host in registries.keys() {
            metrics::global().set_registry_healthy(host, true);
        }
        Health {
            min,
            max: max.max(min),
            registries: Mutex::new(registries),
            routes,
            source_error: Mutex::new(None),
            running: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Registry>> {
        self.registries.lock().expect("health poisoned")
    }

    /// May work use `registry` now? Refused while it is unhealthy and its backoff runs;
    /// allowed (as the probe) once the backoff is over. Hosts outside the configured set are
    /// not this module's business (the registry set refuses them).
    pub fn check(&self, registry: &str) -> Result<(), Unhealthy> {
        let map = self.lock();
        match map.get(registry) {
            Some(Registry {
                until: Some(t), reason, ..
            }) if *t > Instant::now() => Err(Unhealthy {
                registry: registry.to_string(),
                retry_in: *t - Instant::now(),
                reason: reason.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// A Systemic failure of `registry`: unhealthy for the current backoff, which then
    /// doubles. Returns the backoff.
    pub fn failed(&self, registry: &str, reason: &str) -> Option<Duration> {
        let mut map = self.lock();
        let r = map.get_mut(registry)?;
        let wait = r.backoff;
        r.until = Some(Instant::now() + wait);
        r.backoff = (wait * 2).min(self.max);
        r.reason = reason.to_string();
        r.failures = r.failures.saturating_add(1);
        drop(map);
        metrics::global().set_registry_healthy(registry, false);
        tracing::warn!(registry, backoff = ?wait, reason, "registry marked unhealthy");
        Some(wait)
    }

    /// Work that used `registry` succeeded: it is healthy, and its backoff starts from the
    /// minimum again.
    pub fn succeeded(&self, registry: &str) {
        let mut map = self.lock();
        let Some(r) = map.get_mut(registry) else { return };
        let was_unhealthy = r.until.is_some();
        r.until = None;
        r.backoff = self.min;
        r.failures = 0;
        drop(map);
        if was_unhealthy {
            metrics::global().set_registry_healthy(registry, true);
            tracing::info!(registry, "registry healthy again");
        }
    }

    /// Is `registry` usable now (healthy, or due for its probe)?
    fn usable(map: &BTreeMap<String, Registry>, registry: &str, now: Instant) -> bool {
        map.get(registry).is_none_or(|r| r.until.is_none_or(|t| t <= now))
    }

    /// While no rule can make progress (no rule with a usable source and at least one
    /// usable target): the instant the first relevant registry is probed again.
    pub fn pause_until(&self) -> Option<Instant> {
        if self.routes.is_empty() {
            return None;
        }
        let now = Instant::now();
        let map = self.lock();
        let progress = self.routes.iter().any(|(src, targets)| {
            Health::usable(&map, src, now) && targets.iter().any(|t| Health::usable(&map, t, now))
        });
        if progress {
            return None;
        }
        map.values().filter_map(|r| r.until).filter(|t| *t > now).min()
    }

    /// The pipeline is pulling (`true`) or has stopped (`false`).
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::SeqCst);
    }

    /// The source failed to receive.
    pub fn source_failed(&self) {
        *self.source_error.lock().expect("health poisoned") = Some(Instant::now());
    }

    /// The source delivered a message.
    pub fn source_ok(&self) {
        *self.source_error.lock().expect("health poisoned") = None;
    }

    /// Ready: pulling, no source error in the last 30 s, and not paused.
    pub fn ready(&self) -> bool {
        let source_ok = self
            .source_error
            .lock()
            .expect("health poisoned")
            .is_none_or(|t| t.elapsed() >= NOT_READY_AFTER_SOURCE_ERROR);
        self.running.load(Ordering::SeqCst) && source_ok && self.pause_until().is_none()
    }

    /// `/readyz`'s body: readiness and each registry's state, as JSON.
    pub fn report(&self) -> String {
        let now = Instant::now();
        let registries: serde_json::Map<String, serde_json::Value> = self
            .lock()
            .iter()
            .map(|(host, r)| {
                let v = match r.until {
                    None => serde_json::json!({"state": "healthy"}),
                    Some(t) if t > now => serde_json::json!({
                        "state": "unhealthy",
                        "retry_in_secs": (t - now).as_secs(),
                        "failures": r.failures,
                        "reason": r.reason,
                    }),
                    Some(_) => serde_json::json!({
                        "state": "probing",
                        "failures": r.failures,
                        "reason": r.reason,
                    }),
                };
                (host.clone(), v)
            })
            .collect();
        let body = serde_json::json!({
            "ready": self.ready(),
            "paused": self.pause_until().is_some(),
            "registries": registries,
        });
        format!("{body}\n")
    }

    /// Mirror the state into the metrics (`regrelay_ready`, `regrelay_source_paused`).
    pub fn mirror(&self) {
        let m = metrics::global();
        m.set_ready(self.ready());
        m.set_paused(self.pause_until().is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(
            ["src".to_string(), "a".to_string(), "b".to_string()],
            vec![("src".into(), vec!["a".into(), "b".into()])],
            Duration::from_secs(1),
            Duration::from_secs(4),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn an_unhealthy_registry_is_refused_then_probed_then_healthy() {
        let h = health();
        assert!(h.check("a").is_ok());
        assert_eq!(h.failed("a", "refused"), Some(Duration::from_secs(1)));
        let e = h.check("a").unwrap_err();
        assert_eq!(e.registry, "a");
        assert!(e.to_string().contains("not contacted"), "{e}");
        assert!(h.check("b").is_ok(), "other registries are untouched");
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(h.check("a").is_ok(), "probe allowed after the backoff");
        assert!(h.report().contains("probing"), "{}", h.report());
        assert_eq!(h.failed("a", "refused"), Some(Duration::from_secs(2)));
        assert_eq!(h.failed("a", "refused"), Some(Duration::from_secs(4)));
        assert_eq!(h.failed("a", "refused"), Some(Duration::from_secs(4)), "capped");
        h.succeeded("a");
        assert!(h.check("a").is_ok());
        assert_eq!(h.failed("a", "refused"), Some(Duration::from_secs(1)), "backoff reset");
        assert_eq!(h.failed("unknown", "x"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn pulling_pauses_only_when_no_rule_can_progress() {
        let h = health();
        h.set_running(true);
        assert!(h.ready());
        h.failed("a", "down");
        assert!(h.pause_until().is_none(), "target b is still healthy");
        assert!(h.ready());
        h.failed("b", "down");
        assert!(h.pause_until().is_some(), "no target left");
        assert!(!h.ready());
        let report: serde_json::Value = serde_json::from_str(&h.report()).unwrap();
        assert_eq!(report["paused"], true);
        assert_eq!(report["registries"]["a"]["state"], "unhealthy");
        assert_eq!(report["registries"]["src"]["state"], "healthy");
        h.succeeded("b");
        assert!(h.ready());
        h.failed("src", "creds refused");
        assert!(h.pause_until().is_some(), "the source is unhealthy");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(h.pause_until().is_none(), "probing after the backoff");
    }

    #[tokio::test(start_paused = true)]
    async fn a_source_error_makes_the_daemon_unready_for_a_while() {
        let h = health();
        assert!(!h.ready(), "not ready before pulling");
        h.set_running(true);
        h.source_failed();
        assert!(!h.ready());
        h.source_ok();
        assert!(h.ready());
        h.source_failed();
        tokio::time::advance(NOT_READY_AFTER_SOURCE_ERROR).await;
        assert!(h.ready());
    }
}
