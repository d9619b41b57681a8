//! Gates: checks an image must pass, by digest, before a watch (or a rule, or a promotion)
//! points a tag at it.
//!
//! Role: build the configured gates ([`GateSet`], shared by watches and by the executor,
//! which runs the gates a rule or a promotion requires) and run them against one exact image
//! (`registry/repository@sha256:...`, never a tag) and say whether it passed, failed
//! (rejected: not gated again until its tag moves) or asked to be tried again later.
//! [`ExecGate`] runs an argv (never through a shell) with the image in its environment;
//! [`CosignGate`] requires a cosign signature over the image's digest verified with one
//! of the configured public keys, fetched with regrelay's own registry client.
//!
//! Must never: look at an image by tag (a tag can move while a gate runs); treat a gate
//! that could not decide as a pass; put a gate's full output in a metric label.

mod cosign;
mod exec;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::config::watch::GateConfig;
use crate::oci::Digest;

pub use cosign::{COSIGN_ARTIFACT, CosignGate, KeyError, PublicKey};
pub use exec::ExecGate;

/// The exact image a gate checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Registry host of the image (the staging registry for watches).
    pub registry: String,
    /// Repository path on that registry.
    pub repository: String,
    /// The digest: the only way a gate names the image.
    pub digest: Digest,
    /// Where the image came from (`docker.io/library/node:22`), for the gate's information.
    pub source: String,
}

impl Subject {
    /// `registry/repository@digest`.
    pub fn image(&self) -> String {
        format!("{}/{}@{}", self.registry, self.repository, self.digest)
    }
}

/// What a gate said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The image passed.
    Pass,
    /// The gate could not decide now (exec exit 75, a registry error): not rejected,
    /// gated again at the next poll.
    Retry {
        /// Why, for logs.
        reason: String,
    },
    /// The image is rejected.
    Fail {
        /// Why, for logs (for exec gates: the exit status and the tail of the output).
        reason: String,
    },
}

impl Verdict {
    /// The metric label: `pass`, `retry` or `fail`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Retry { .. } => "retry",
            Verdict::Fail { .. } => "fail",
        }
    }
}

/// A configured gate.
#[derive(Debug)]
pub enum Gate {
    /// Run a command.
    Exec(ExecGate),
    /// Verify a cosign signature.
    Cosign(CosignGate),
}

impl Gate {
    /// `exec` or `cosign`.
    pub fn kind(&self) -> &'static str {
        match self {
            Gate::Exec(_) => "exec",
            Gate::Cosign(_) => "cosign",
        }
    }

    /// Check `subject`, fetching what the gate needs through `registries`.
    pub async fn check<R: crate::registry::Registries>(&self, registries: &R, subject: &Subject) -> Verdict {
        match self {
            Gate::Exec(g) => g.check(subject).await,
            Gate::Cosign(g) => g.check(registries, subject).await,
        }
    }
}

/// The gate `cfg` describes (a cosign key that does not parse is an error).
pub fn build(cfg: &GateConfig) -> Result<Gate, KeyError> {
    Ok(match cfg {
        GateConfig::Exec {
            argv,
            timeout,
            max_output_bytes,
            pass_env,
        } => Gate::Exec(ExecGate {
            argv: argv.clone(),
            timeout: *timeout,
            max_output_bytes: *max_output_bytes,
            pass_env: pass_env.clone(),
        }),
        GateConfig::Cosign { keys } => Gate::Cosign(CosignGate {
            keys: keys
                .iter()
                .map(|(path, pem)| PublicKey::from_pem(path.display().to_string(), pem))
                .collect::<Result<_, _>>()?,
        }),
    })
}

/// A gate of `[gates.NAME]` that cannot be built.
#[derive(Debug, thiserror::Error)]
#[error("gates.{gate}: {source}")]
pub struct BuildError {
    /// The gate.
    pub gate: String,
    /// Why.
    #[source]
    pub source: KeyError,
}

/// The configured gates by name (`[gates.NAME]`).
#[derive(Debug, Default, Clone)]
pub struct GateSet {
    gates: HashMap<String, Arc<Gate>>,
}

impl GateSet {
    /// Build every gate of `cfg`.
    pub fn from_config(cfg: &BTreeMap<String, GateConfig>) -> Result<GateSet, BuildError> {
        let mut gates = HashMap::new();
        for (name, g) in cfg {
            let gate = build(g).map_err(|source| BuildError {
                gate: name.clone(),
                source,
            })?;
            gates.insert(name.clone(), Arc::new(gate));
        }
        Ok(GateSet { gates })
    }

    /// The gate called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Gate>> {
        self.gates.get(name)
    }

    /// Whether no gate is configured.
    pub fn is_empty(&self) -> bool {
        self.gates.is_empty()
    }
}

/// The verdict of a list of gates, each named: the first that did not pass decides
/// (`Fail` wins over `Retry`, so a rejected image is remembered as such).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The combined verdict.
    pub verdict: Verdict,
    /// The gate that decided, when one did not pass.
    pub gate: Option<String>,
}

/// Run `gates` in order against `subject`; all must pass. A failing gate stops the run
/// (the later gates would be wasted work); a gate asking for a retry does not stop it, so
/// a definite failure later in the list is still found. `observe` is told each gate's
/// name, verdict and duration (for metrics and logs).
pub async fn check_all<R: crate::registry::Registries>(
    gates: &[(String, std::sync::Arc<Gate>)],
    registries: &R,
    subject: &Subject,
    mut observe: impl FnMut(&str, &Gate, &Verdict, Duration),
) -> Decision {
    let mut retry: Option<(String, Verdict)> = None;
    for (name, gate) in gates {
        let started = tokio::time::Instant::now();
        let verdict = gate.check(registries, subject).await;
        observe(name, gate, &verdict, started.elapsed());
        match verdict {
            Verdict::Pass => {}
            Verdict::Retry { .. } => {
                retry.get_or_insert((name.clone(), verdict));
            }
            Verdict::Fail { .. } => {
                return Decision {
                    verdict,
                    gate: Some(name.clone()),
                };
            }
        }
    }
    match retry {
        Some((name, verdict)) => Decision {
            verdict,
            gate: Some(name),
        },
        None => Decision {
            verdict: Verdict::Pass,
            gate: None,
        },
    }
}

/// Keep the last `max` bytes written to it (a gate's output tail).
#[derive(Debug)]
pub(crate) struct Tail {
    buf: std::collections::VecDeque<u8>,
    max: usize,
    dropped: u64,
}

impl Tail {
    pub(crate) fn new(max: usize) -> Tail {
        Tail {
            buf: std::collections::VecDeque::with_capacity(max.min(64 * 1024)),
            max,
            dropped: 0,
        }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let skip = bytes.len().saturating_sub(self.max);
        self.dropped += skip as u64;
        for &b in &bytes[skip..] {
            if self.buf.len() == self.max {
                self.buf.pop_front();
                self.dropped += 1;
            }
            self.buf.push_back(b);
        }
    }

    /// The kept bytes as lossy UTF-8, prefixed with how much was dropped.
    pub(crate) fn text(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let mut v = a.to_vec();
        v.extend_from_slice(b);
        let s = String::from_utf8_lossy(&v).into_owned();
        if self.dropped > 0 {
            format!("[{} earlier bytes dropped] {s}", self.dropped)
        } else {
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes() {
        let mut t = Tail::new(4);
        t.push(b"ab");
        assert_eq!(t.text(), "ab");
        t.push(b"cdef");
        assert_eq!(t.text(), "[2 earlier bytes dropped] cdef");
        t.push(&[b'x'; 100]);
        assert_eq!(t.text(), "[102 earlier bytes dropped] xxxx");
    }
}
