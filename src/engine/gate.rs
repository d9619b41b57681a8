//! The executor's gate hook: before a target tag is written, every gate an item requires
//! (a rule's `require`, a promotion's) runs against the exact target digest
//! (`target-registry/repository@sha256:...`), after the copy has been verified there.
//!
//! Passes and rejections are remembered per (target repository, digest, gate set) for
//! [`MEMORY_TTL`], at most [`MEMORY_MAX`] entries, so that a redelivery or a second tag of
//! the same digest does not run the gates again; "try again later" is never remembered.
//! Concurrent requests for one key share one run.
//!
//! Must never: name the image by tag to a gate; treat an unknown gate, an undecided gate or
//! a gate that could not run as a pass; remember a "try again later".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::dedup::SingleFlight;
use super::{Failure, Repo};
use crate::gates::{self, Gate, GateSet, Subject, Verdict};
use crate::metrics;
use crate::oci::Digest;
use crate::registry::Registries;
use crate::replicate::ErrorClass;

/// How long a gate verdict (pass or rejection) is remembered. A rejection is final for the
/// message that met it; a later event, sync or sweep of the same digest runs the gates again
/// once this has passed (e.g. after the image was signed).
pub const MEMORY_TTL: Duration = Duration::from_secs(600);
/// Most remembered verdicts.
pub const MEMORY_MAX: usize = 10_000;

/// (target registry, target repository, digest, sorted gate names)
type Key = (String, String, Digest, Vec<String>);

#[derive(Debug, Clone)]
enum Remembered {
    Passed,
    Rejected(String),
}

/// The gates of a process and what they decided recently.
#[derive(Debug)]
pub(super) struct Gating {
    set: Arc<GateSet>,
    flights: SingleFlight<Key, Result<(), Failure>>,
    memory: Mutex<HashMap<Key, (Remembered, Instant)>>,
}

impl Gating {
    pub(super) fn new(set: Arc<GateSet>) -> Gating {
        Gating {
            set,
            flights: SingleFlight::default(),
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// Run the gates named in `require` (in order, each once) against `target@digest`;
    /// `Ok` when all pass. A rejection is Permanent, "try again later" Transient.
    pub(super) async fn check<R: Registries>(
        &self,
        registries: &R,
        target: &Repo,
        digest: &Digest,
        require: &[String],
        source: &str,
    ) -> Result<(), Failure> {
        if require.is_empty() {
            return Ok(());
        }
        let mut gates: Vec<(String, Arc<Gate>)> = Vec::new();
        for name in require {
            if gates.iter().any(|(n, _)| n == name) {
                continue;
            }
            match self.set.get(name) {
                Some(g) => gates.push((name.clone(), g.clone())),
                None => return Err(Failure::permanent(format!("gate {name:?} is not configured"))),
            }
        }
        let mut names: Vec<String> = gates.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        let key: Key = (
            target.registry.clone(),
            target.repository.clone(),
            digest.clone(),
            names,
        );
        let image = format!("{target}@{digest}");
        match self.recall(&key) {
            Some(Remembered::Passed) => {
                tracing::debug!(image, "gates passed earlier");
                return Ok(());
            }
            Some(Remembered::Rejected(why)) => return Err(Failure::permanent(format!("{why} (remembered)"))),
            None => {}
        }
        let (result, _) = self
            .flights
            .run(&key, || self.run(registries, &gates, &key, target, digest, source))
            .await;
        result
    }

    async fn run<R: Registries>(
        &self,
        registries: &R,
        gates: &[(String, Arc<Gate>)],
        key: &Key,
        target: &Repo,
        digest: &Digest,
        source: &str,
    ) -> Result<(), Failure> {
        let subject = Subject {
            registry: target.registry.clone(),
            repository: target.repository.clone(),
            digest: digest.clone(),
            source: source.to_string(),
        };
        let image = subject.image();
        let decision = gates::check_all(gates, registries, &subject, |name, gate, verdict, took| {
            metrics::global().watch.gate(name, verdict.outcome(), took);
            tracing::info!(
                gate = name,
                kind = gate.kind(),
                image,
                outcome = verdict.outcome(),
                secs = took.as_secs_f64(),
                "gate decided"
            );
        })
        .await;
        let gate = decision.gate.unwrap_or_default();
        match decision.verdict {
            Verdict::Pass => {
                self.remember(key.clone(), Remembered::Passed);
                Ok(())
            }
            Verdict::Retry { reason } => {
                tracing::info!(gate, image, reason, "gate asks to try again later; tag not written");
                Err(Failure {
                    class: ErrorClass::Transient,
                    message: format!("gate {gate} asks to try {image} again later: {reason}"),
                    registry: None,
                })
            }
            Verdict::Fail { reason } => {
                tracing::warn!(gate, image, reason, "rejected by a gate; tag not written");
                let why = format!("gate {gate} rejected {image}: {reason}");
                self.remember(key.clone(), Remembered::Rejected(why.clone()));
                Err(Failure::permanent(why))
            }
        }
    }

    fn recall(&self, key: &Key) -> Option<Remembered> {
        let map = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|(_, at)| at.elapsed() < MEMORY_TTL)
            .map(|(r, _)| r.clone())
    }

    fn remember(&self, key: Key, r: Remembered) {
        let mut map = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MEMORY_MAX {
            map.retain(|_, (_, at)| at.elapsed() < MEMORY_TTL);
            if map.len() >= MEMORY_MAX {
                // Still full of fresh verdicts: forgetting only costs gate runs later.
                map.clear();
            }
        }
        map.insert(key, (r, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::watch::GateConfig;
    use crate::registry::RegistrySet;

    /// Gating with exec gates `name → script` (each appends a line to `log` first).
    fn gating(log: &std::path::Path, gates: &[(&str, &str)]) -> Gating {
        let cfg: BTreeMap<String, GateConfig> = gates
            .iter()
            .map(|(name, script)| {
                let script = format!("echo {name} >> {}; {script}", log.display());
                let gate = GateConfig::Exec {
                    argv: vec!["sh".into(), "-c".into(), script],
                    timeout: Duration::from_secs(10),
                    max_output_bytes: 1024,
                    pass_env: Vec::new(),
                };
                (name.to_string(), gate)
            })
            .collect();
        Gating::new(Arc::new(GateSet::from_config(&cfg).unwrap()))
    }

    fn runs(log: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn verdicts_are_remembered_per_digest_and_gate_set_but_a_retry_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runs");
        let later = dir.path().join("later");
        let retry_once = format!("test -e {0} || {{ touch {0}; exit 75; }}", later.display());
        let g = gating(&log, &[("ok", "exit 0"), ("no", "exit 1"), ("soon", &retry_once)]);
        let none = RegistrySet::from_configs(Vec::new()).unwrap();
        let target = Repo::new("dst.example", "app");
        let (d1, d2) = (Digest::sha256_of(b"1"), Digest::sha256_of(b"2"));
        let check = |d: &Digest, req: &[&str]| {
            let req = names(req);
            let (g, none, target, d) = (&g, &none, &target, d.clone());
            async move { g.check(none, target, &d, &req, "src.example/app:1").await }
        };

        assert!(check(&d1, &[]).await.is_ok(), "no gates: nothing runs");
        assert!(check(&d1, &["ok"]).await.is_ok());
        assert!(
            check(&d1, &["ok", "ok"]).await.is_ok(),
            "remembered; a name listed twice runs once"
        );
        assert_eq!(runs(&log), ["ok"]);
        assert!(check(&d2, &["ok"]).await.is_ok(), "another digest runs again");
        assert_eq!(runs(&log).len(), 2);

        let f = check(&d1, &["ok", "no"]).await.unwrap_err();
        assert_eq!(f.class, ErrorClass::Permanent);
        assert!(f.message.contains("gate no rejected dst.example/app@sha256:"), "{f:?}");
        // Another set of gates (even in another order) is another key; the same set is not.
        let again = check(&d1, &["no", "ok"]).await.unwrap_err();
        assert!(again.message.contains("remembered"), "{again:?}");
        assert_eq!(runs(&log), ["ok", "ok", "ok", "no"]);

        let f = check(&d1, &["soon"]).await.unwrap_err();
        assert_eq!(f.class, ErrorClass::Transient, "{f:?}");
        assert!(check(&d1, &["soon"]).await.is_ok(), "a retry is not remembered");
        assert_eq!(runs(&log).iter().filter(|r| *r == "soon").count(), 2);

        let f = check(&d1, &["ok", "missing"]).await.unwrap_err();
        assert_eq!(f.class, ErrorClass::Permanent);
        assert!(f.message.contains("\"missing\" is not configured"), "{f:?}");
        assert_eq!(runs(&log).len(), 6, "an unknown gate runs nothing");
    }

    #[test]
    fn the_memory_is_bounded() {
        let g = Gating::new(Arc::default());
        let key = |i: usize| {
            let d = Digest::sha256_of(&i.to_le_bytes());
            ("r".to_string(), "app".to_string(), d, vec!["g".to_string()])
        };
        for i in 0..MEMORY_MAX {
            g.remember(key(i), Remembered::Passed);
        }
        assert!(g.recall(&key(0)).is_some());
        g.remember(key(MEMORY_MAX), Remembered::Passed);
        let len = g.memory.lock().unwrap().len();
        assert!(len <= MEMORY_MAX, "{len} entries");
        assert!(g.recall(&key(MEMORY_MAX)).is_some());
    }
}
