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
