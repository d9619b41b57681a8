//! Typed settings of buffered base images: `[[watch]]`, `[gates.NAME]`, `[notify.NAME]`
//! and `[watcher]` (validated in `file/validate/watch.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A repository on a configured registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    /// Registry host (a key of `[registries]`).
    pub registry: String,
    /// Repository path.
    pub repository: String,
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// One `[[watch]]`: upstream tags polled, gated in staging, promoted to the target.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Unique name (state, logs).
    pub name: String,
    /// The upstream repository.
    pub source: RepoRef,
    /// Tags: exact names, or globs (`22-*`) resolved through the tag list.
    pub tags: Vec<String>,
    /// Time between polls (a random jitter of up to 10 % is added).
    pub interval: Duration,
    /// Where new digests are copied and gated.
    pub staging: RepoRef,
    /// Where gated digests are promoted.
    pub target: RepoRef,
    /// Target tag templates over `{tag}` and `{digest12}`.
    pub target_tags: Vec<String>,
    /// Names of `[gates.NAME]`; all must pass.
    pub gates: Vec<String>,
    /// Names of `[notify.NAME]`, told after a promotion.
    pub notify: Vec<String>,
}

/// One `[gates.NAME]`.
#[derive(Debug, Clone)]
pub enum GateConfig {
    /// Run a command (never through a shell).
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
        /// How long it may run.
        timeout: Duration,
        /// How much of its output is kept (the tail).
        max_output_bytes: usize,
        /// Variables passed from regrelay's environment besides `PATH` and `HOME`.
        pass_env: Vec<String>,
    },
    /// Require a cosign signature by one of these keys.
    Cosign {
        /// (file path, PEM text) of each ECDSA P-256 public key.
        keys: Vec<(PathBuf, String)>,
        /// What an image with no signature at all gets.
        unsigned: Unsigned,
    },
}

/// A cosign gate's answer for an image that carries no signature at all (`unsigned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unsigned {
    /// "Try again later" (default): images are usually signed after they are pushed.
    #[default]
    Retry,
    /// Rejected, like an image whose signature does not verify.
    Reject,
}

/// One `[notify.NAME]`.
#[derive(Debug, Clone)]
pub enum NotifyConfig {
    /// Run a command with the promotion in its environment.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
        /// How long it may run.
        timeout: Duration,
    },
    /// POST the promotion as JSON.
    Webhook {
        /// The URL (its host is the only one contacted).
        url: url::Url,
    },
    /// Publish the promotion to a Pub/Sub topic.
    PubSub {
        /// `projects/P/topics/T`.
        topic: String,
        /// Endpoint override (`http://127.0.0.1:8085` for the emulator: anonymous
        /// credentials); `None` is Google's endpoint with Application Default Credentials.
        endpoint: Option<String>,
    },
}

/// Everything watches need.
#[derive(Debug, Clone, Default)]
pub struct WatchSettings {
    /// The watches, in file order.
    pub watches: Vec<WatchConfig>,
    /// Gates by name.
    pub gates: BTreeMap<String, GateConfig>,
    /// Notifications by name.
    pub notify: BTreeMap<String, NotifyConfig>,
    /// `[watcher] state_file`: where last seen/passed/rejected digests are kept.
    pub state_file: Option<PathBuf>,
    /// `[watcher] ratelimit_floor`: below this many remaining requests (as the registry's
    /// `ratelimit-remaining` says), polls of that registry wait.
    pub ratelimit_floor: u64,
    /// `[watcher] notify_attempts`: tries per notification.
    pub notify_attempts: u32,
}
