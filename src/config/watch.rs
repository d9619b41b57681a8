//! Typed settings of buffered base images: `[[watch]]`, `[gates.NAME]`, `[notify.NAME]`
//! and `[watcher]` (validated in `file/validate/watch.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::units;

/// A repository on a configured registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    /// Registry host (a key of `[registries]`).
    pub registry: String,
    /// Repository path.
    pub repository: String,
}

impl serde::Serialize for RepoRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for RepoRef {
    /// `HOST/REPOSITORY`; Docker Hub's rule applies (`docker.io/node` is
    /// `docker.io/library/node`). Whether the host is configured is checked later.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RepoRef, D::Error> {
        use serde::de::Error;
        let s = String::deserialize(d)?;
        let Some((host, path)) = s.split_once('/') else {
            return Err(D::Error::custom("expected HOST/REPOSITORY"));
        };
        if path.is_empty() || path.split('/').any(str::is_empty) {
            return Err(D::Error::custom("empty repository path"));
        }
        Ok(RepoRef {
            registry: host.to_owned(),
            repository: crate::oci::hub_repository(host, path),
        })
    }
}

impl std::fmt::Display for RepoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)
    }
}

/// One `[[watch]]`: upstream tags polled, gated in staging, promoted to the target.
/// Each field is its file key; `name`, `source`, `tags`, `staging` and `target` are
/// required.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Unique name (state, logs).
    pub name: String,
    /// The upstream repository.
    pub source: RepoRef,
    /// Tags: exact names, or globs (`22-*`) resolved through the tag list.
    pub tags: Vec<String>,
    /// `interval_secs`: time between polls (a random jitter of up to 10 % is added),
    /// ≥ 1. Default 600.
    #[serde(rename = "interval_secs", with = "units::secs", default = "default_interval")]
    pub interval: Duration,
    /// Where new digests are copied and gated.
    pub staging: RepoRef,
    /// Where gated digests are promoted.
    pub target: RepoRef,
    /// Target tag templates over `{tag}` and `{digest12}`. Default `["{tag}"]`.
    #[serde(default = "default_target_tags")]
    pub target_tags: Vec<String>,
    /// Names of `[gates.NAME]`; all must pass.
    #[serde(default)]
    pub gates: Vec<String>,
    /// Names of `[notify.NAME]`, told after a promotion.
    #[serde(default)]
    pub notify: Vec<String>,
}

fn default_interval() -> Duration {
    Duration::from_secs(600)
}

fn default_target_tags() -> Vec<String> {
    vec!["{tag}".into()]
}

/// One `[gates.NAME]`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GateConfig {
    /// Run a command (never through a shell).
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
        /// How long it may run.
        #[serde(rename = "timeout_secs", serialize_with = "units::secs::serialize")]
        timeout: Duration,
        /// How much of its output is kept (the tail).
        max_output_bytes: usize,
        /// Variables passed from regrelay's environment besides `PATH` and `HOME`.
        pass_env: Vec<String>,
    },
    /// Require a cosign signature by one of these keys.
    Cosign {
        /// (file path, PEM text) of each ECDSA P-256 public key.
        #[serde(serialize_with = "key_paths")]
        keys: Vec<(PathBuf, String)>,
        /// What an image with no signature at all gets.
        unsigned: Unsigned,
    },
}

/// A cosign gate's answer for an image that carries no signature at all (`unsigned`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unsigned {
    /// "Try again later" (default): images are usually signed after they are pushed.
    #[default]
    Retry,
    /// Rejected, like an image whose signature does not verify.
    Reject,
}

/// One `[notify.NAME]`. Its `Debug` shows a webhook URL without its query, which may
/// carry a token.
#[derive(Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotifyConfig {
    /// Run a command with the promotion in its environment.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
        /// How long it may run.
        #[serde(rename = "timeout_secs", serialize_with = "units::secs::serialize")]
        timeout: Duration,
    },
    /// POST the promotion as JSON.
    Webhook {
        /// The URL (its host is the only one contacted).
        #[serde(serialize_with = "redacted_url")]
        url: url::Url,
    },
    /// Publish the promotion to a Pub/Sub topic.
    #[serde(rename = "pubsub")]
    PubSub {
        /// `projects/P/topics/T`.
        topic: String,
        /// Endpoint override (`http://127.0.0.1:8085` for the emulator: anonymous
        /// credentials); `None` is Google's endpoint with Application Default Credentials.
        #[serde(skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotifyConfig::Exec { argv, timeout } => f
                .debug_struct("Exec")
                .field("argv", argv)
                .field("timeout", timeout)
                .finish(),
            NotifyConfig::Webhook { url } => f.debug_struct("Webhook").field("url", &redacted(url).as_str()).finish(),
            NotifyConfig::PubSub { topic, endpoint } => f
                .debug_struct("PubSub")
                .field("topic", topic)
                .field("endpoint", endpoint)
                .finish(),
        }
    }
}

/// `url` with its query, if any, replaced by `***`.
fn redacted(url: &url::Url) -> url::Url {
    let mut shown = url.clone();
    if shown.query().is_some() {
        shown.set_query(Some("***"));
    }
    shown
}

/// Cosign keys are shown as their files.
fn key_paths<S: serde::Serializer>(keys: &[(PathBuf, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(keys.iter().map(|(p, _)| p))
}

/// The URL may carry a token in its query: shown as `?***`.
fn redacted_url<S: serde::Serializer>(url: &url::Url, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(redacted(url).as_str())
}

/// `[watcher]`: state file and polling limits. Each field is its file key; defaults are
/// those of [`Default`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatcherConfig {
    /// Where last seen/passed/rejected digests are kept. Default: nowhere (each start
    /// gates the current digests again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// Below this many remaining requests (as the registry's `ratelimit-remaining` says),
    /// polls of that registry wait. Default 10.
    pub ratelimit_floor: u64,
    /// Tries per notification, ≥ 1. Default 5.
    pub notify_attempts: u32,
}

impl Default for WatcherConfig {
    fn default() -> WatcherConfig {
        WatcherConfig {
            state_file: None,
            ratelimit_floor: 10,
            notify_attempts: 5,
        }
    }
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
    /// `[watcher]`.
    pub watcher: WatcherConfig,
}
