//! The validated configuration of `regrelay run`: source, registries, rules and the
//! pipeline's knobs. Values of these types exist only after [`super::load`] has checked
//! them, so the rest of the daemon never re-validates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::RegistryConfig;

/// The whole daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where events come from.
    pub source: SourceConfig,
    /// `[source.origin]`: the registry of events whose payload names no registry host
    /// (Artifactory webhooks, bridges that name only `team/app`). `None`: such events are
    /// rejected.
    pub origin: Option<OriginConfig>,
    /// Every registry regrelay may contact, sources and targets alike. An event naming
    /// any other host is rejected without a connection.
    pub registries: Vec<RegistryConfig>,
    /// Replication rules, in file order. Every matching rule contributes its targets.
    pub rules: Vec<Rule>,
    /// Pipeline settings.
    pub pipeline: PipelineConfig,
    /// Admin HTTP server (`/metrics`, `/healthz`, `/readyz`); `None` = disabled.
    pub admin_listen: Option<SocketAddr>,
    /// `[[watch]]`, `[gates.*]`, `[notify.*]`, `[watcher]`: buffered base images.
    pub watch: super::watch::WatchSettings,
    /// `[reconcile]`: the periodic sweep.
    pub reconcile: ReconcileConfig,
}

/// The reconcile sweep of `regrelay run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileConfig {
    /// Time between sweeps (±10 % jitter); `None` = no sweep.
    pub interval: Option<Duration>,
    /// HEADs and repairs in flight during a sweep.
    pub jobs: usize,
    /// Delete target tags gone at the source (delete rules only).
    pub prune: bool,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            interval: None,
            jobs: 2,
            prune: false,
        }
    }
}

/// The event source.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A Google Cloud Pub/Sub subscription (streaming pull).
    PubSub(PubSubConfig),
    /// JSON lines from a file, or standard input when `path` is `None`.
    File(FileSourceConfig),
    /// An Azure Service Bus queue or topic subscription (REST peek-lock).
    ServiceBus(ServiceBusConfig),
    /// No event source: the file has no `[source]` and only its `[[watch]]` blocks run.
    None,
}

impl SourceConfig {
    /// A short name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::PubSub(_) => "pubsub",
            SourceConfig::File(_) => "file",
            SourceConfig::ServiceBus(_) => "servicebus",
            SourceConfig::None => "none",
        }
    }
}

/// `[source.origin]`: how events that name no registry host are placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginConfig {
    /// Registry host, or a template over `{repo_key}` (Artifactory's per-repository
    /// subdomain method, `{repo_key}.acme.jfrog.io`). The hosts it yields must be
    /// configured registries, or the events are rejected without a connection.
    pub registry: String,
    /// Repository template over `{repository}` (the path the payload names; Artifactory's
    /// `image_name`), `{repo_key}` and `{image_name}`: `{repo_key}/{image_name}` for
    /// Artifactory's repository-path method. Default `{repository}`.
    pub repository: String,
}

/// Pub/Sub settings.
#[derive(Debug, Clone)]
pub struct PubSubConfig {
    /// Full subscription name, `projects/PROJECT/subscriptions/NAME`.
    pub subscription: String,
    /// Endpoint override (`http://127.0.0.1:8085` for the emulator). With an `http://`
    /// endpoint regrelay uses anonymous credentials; otherwise Application Default
    /// Credentials.
    pub endpoint: Option<String>,
    /// Flow control: most messages held (leased, not yet settled) at once.
    pub max_outstanding_messages: i64,
    /// How far each lease extension reaches (10 s to 600 s).
    pub lease_extension: Duration,
    /// Longest time one message is held before its lease is no longer extended.
    pub max_lease: Duration,
}

/// Azure Service Bus settings (REST data plane, peek-lock).
#[derive(Debug, Clone)]
pub struct ServiceBusConfig {
    /// The namespace's full host name, e.g. `example.servicebus.windows.net` (Azure China:
    /// `.servicebus.chinacloudapi.cn`, US Government: `.servicebus.usgovcloudapi.net`).
    pub namespace: String,
    /// The queue, or the topic subscription, to receive from.
    pub entity: ServiceBusEntity,
    /// Base URL override (`http://127.0.0.1:PORT` for a test server; plain HTTP only on
    /// loopback). `None` = `https://{namespace}`.
    pub endpoint: Option<String>,
    /// Receivers long-polling in parallel.
    pub receivers: usize,
    /// Long-poll timeout of one receive request.
    pub wait: Duration,
    /// Renew each lock this often; `None` = at half of the lock time left.
    pub lock_renew: Option<Duration>,
    /// Credentials.
    pub auth: ServiceBusAuth,
}

impl ServiceBusConfig {
    /// `https://{namespace}`, or the endpoint override, without a trailing slash.
    pub fn base_url(&self) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_owned(),
            None => format!("https://{}", self.namespace),
        }
    }
}

/// What a Service Bus source receives from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceBusEntity {
    /// A queue (its path).
    Queue(String),
    /// A subscription of a topic.
    Subscription {
        /// The topic path.
        topic: String,
        /// The subscription name.
        subscription: String,
    },
}

impl ServiceBusEntity {
    /// The receive path: `queue` or `topic/subscriptions/subscription`.
    pub fn path(&self) -> String {
        match self {
            ServiceBusEntity::Queue(q) => q.clone(),
            ServiceBusEntity::Subscription { topic, subscription } => format!("{topic}/subscriptions/{subscription}"),
        }
    }
}

/// Default Entra ID scope for Service Bus (the Azure SDKs use it in every cloud).
pub const SERVICEBUS_ENTRA_SCOPE: &str = "https://servicebus.azure.net/.default";

/// How regrelay authenticates to Service Bus.
#[derive(Debug, Clone)]
pub enum ServiceBusAuth {
    /// A shared access key: SAS tokens are signed locally and renewed before they expire.
    Sas {
        /// The authorization rule's name (`SharedAccessKeyName`).
        key_name: String,
        /// The rule's key (`SharedAccessKey`), used as the UTF-8 bytes of the string.
        key: super::Secret,
    },
    /// Microsoft Entra ID bearer tokens (workload identity, managed identity, client
    /// secret, token file) for `scope`.
    Entra {
        /// Where the tokens come from.
        entra: super::EntraConfig,
        /// Token scope, [`SERVICEBUS_ENTRA_SCOPE`] unless a sovereign cloud needs another.
        scope: String,
    },
}

/// File / stdin source settings.
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    /// The file to read; `None` = standard input.
    pub path: Option<PathBuf>,
}

/// What to do with a message whose failure is Permanent (the image is gone, the event is
/// malformed, the host is not allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectMode {
    /// Acknowledge it and count it as rejected (default): it will not come back.
    Ack,
    /// Nack it, so that the subscription's dead-letter policy takes it after its
    /// maximum delivery attempts. Service Bus: abandon it until `MaxDeliveryCount`
    /// moves it to the dead-letter queue (the Service Bus default).
    Nack,
}

/// What a tag delete does when the target registry cannot delete a tag (`DELETE
/// /v2/NAME/manifests/TAG` is optional in the distribution spec; distribution 2.x answers
/// `400 DIGEST_INVALID`, others `405 UNSUPPORTED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagDeleteFallback {
    /// Delete the manifest the tag points at, by digest, when no other tag in the
    /// repository points at it or at an index holding it (default). Deleting by digest
    /// removes the manifest itself, not only the tag.
    #[default]
    Manifest,
    /// Never delete a manifest for a tag delete: keep it and count the delete as
    /// `unsupported`.
    Off,
}

impl TagDeleteFallback {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TagDeleteFallback::Manifest => "manifest",
            TagDeleteFallback::Off => "off",
        }
    }
}

/// Pipeline settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Messages processed concurrently.
    pub workers: usize,
    /// Concurrent blob transfers shared by all copies.
    pub blob_jobs: usize,
    /// Copy referrers and cosign tags.
    pub referrers: bool,
    /// How long a verified (target, digest) is remembered, so that repeats cost one HEAD.
    pub dedup_ttl: Duration,
    /// Most entries in that memory.
    pub dedup_max_entries: usize,
    /// Settlement of Permanent failures.
    pub reject_mode: RejectMode,
    /// On SIGTERM/SIGINT, how long in-flight copies may run before they are nacked.
    pub shutdown_grace: Duration,
    /// First pause of pulling after a Systemic failure (doubles up to `pause_max`).
    pub pause_min: Duration,
    /// Longest pause of pulling after Systemic failures.
    pub pause_max: Duration,
    /// Log deletions instead of performing them (for every rule that propagates deletes).
    pub delete_dry_run: bool,
    /// Retry delay of a message after its first Transient or Systemic failure: the message
    /// is held (lease or lock kept) this long before it goes back to the broker. Doubles with
    /// each delivery up to `retry_delay_max`. Zero hands failed messages back at once.
    pub retry_delay_min: Duration,
    /// Longest retry delay.
    pub retry_delay_max: Duration,
    /// Most failed messages held at once while their retry delay runs; when full, workers
    /// wait for a slot (and so pulling slows down).
    pub max_waiting: usize,
    /// What a tag delete does at a target that cannot delete a tag.
    pub tag_delete_fallback: TagDeleteFallback,
    /// `regrelay run --dry-run` (not a file setting): plan and log every route, write
    /// nothing, hand every message back to the broker at once.
    pub dry_run: bool,
}

impl Default for PipelineConfig {
    fn default() -> PipelineConfig {
        PipelineConfig {
            workers: 8,
            blob_jobs: 8,
            referrers: true,
            dedup_ttl: Duration::from_secs(600),
            dedup_max_entries: 100_000,
            reject_mode: RejectMode::Ack,
            shutdown_grace: Duration::from_secs(30),
            pause_min: Duration::from_secs(5),
            pause_max: Duration::from_secs(300),
            delete_dry_run: false,
            retry_delay_min: Duration::from_secs(15),
            retry_delay_max: Duration::from_secs(300),
            max_waiting: 1000,
            tag_delete_fallback: TagDeleteFallback::Manifest,
            dry_run: false,
        }
    }
}

/// A string pattern: a glob (`*` within a path segment, `**` across segments) or a
/// regular expression (anchored at both ends), compiled at load time.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Compiled glob, with its source text.
    Glob(globset::GlobMatcher, String),
    /// Compiled anchored regex, with its source text.
    Regex(regex::Regex, String),
}

impl Matcher {
    /// Does `text` match?
    pub fn is_match(&self, text: &str) -> bool {
        match self {
            Matcher::Glob(g, _) => g.is_match(text),
            Matcher::Regex(r, _) => r.is_match(text),
        }
    }
    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        match self {
            Matcher::Glob(_, s) | Matcher::Regex(_, s) => s,
        }
    }

    /// Compile a glob in which `*` and `?` stay within one `/`-separated segment and `**`
    /// crosses segments. The error is globset's reason, for the loader to place.
    pub fn try_glob(pattern: &str) -> Result<Matcher, String> {
        globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map(|g| Matcher::Glob(g.compile_matcher(), pattern.to_owned()))
            .map_err(|e| e.kind().to_string())
    }

    /// Compile a regular expression anchored at both ends (`^(?:pattern)$`).
    pub fn try_regex(pattern: &str) -> Result<Matcher, String> {
        regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(1 << 20)
            .build()
            .map(|r| Matcher::Regex(r, pattern.to_owned()))
            .map_err(|e| e.to_string())
    }
}

/// What a rule does with events that name a digest but no tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untagged {
    /// Ignore them (default): the tagged event that usually follows does the work.
    Ignore,
    /// Copy the digest to the target, by digest only.
    Replicate,
}

/// One replication rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Name for logs (`rules[N]` when not given).
    pub name: String,
    /// Source registry host this rule applies to (exact match, must be a configured
    /// registry).
    pub source_registry: String,
    /// Source repository pattern.
    pub repository: Matcher,
    /// The source repositories a sync or sweep visits for a pattern rule (config
    /// `repositories`); empty = a literal pattern's one name, else the registry's catalog.
    pub repositories: Vec<String>,
    /// Tags to replicate (empty = all tags).
    pub tags_include: Vec<Matcher>,
    /// Tags never replicated (checked after `tags_include`).
    pub tags_exclude: Vec<Matcher>,
    /// Replicate pushes.
    pub on_push: bool,
    /// Propagate deletes (off by default).
    pub on_delete: bool,
    /// Digest-only events.
    pub untagged: Untagged,
    /// Deletes of this rule are only logged (`Some(true)`) or carried out
    /// (`Some(false)`); `None` = `[pipeline] delete_dry_run`.
    pub delete_dry_run: Option<bool>,
    /// Where matching images go (at least one).
    pub targets: Vec<RuleTarget>,
    /// Names of `[gates.NAME]` the target digest must pass before a target tag is
    /// written (config `require`; empty = none).
    pub require: Vec<String>,
}

/// A target of a rule.
#[derive(Debug, Clone)]
pub struct RuleTarget {
    /// Target registry host (must be a configured registry).
    pub registry: String,
    /// Repository template: `{repository}` (full source path), `{name}` (its last
    /// segment), `{registry}` (source host), and literal text. Example: `mirror/{repository}`.
    pub repository: String,
    /// Optional tag template: `{tag}` and literal text, e.g. `{tag}-mirror`. Default `{tag}`.
    pub tag: Option<String>,
    /// A leading path (ending with `/`) removed from the source repository before the
    /// template sees it: `strip_prefix = "my-project/docker/"` maps Artifact Registry's
    /// `my-project/docker/team/app` to `{repository}` = `team/app`. A source repository
    /// that does not start with it gets no route to this target (the reason is logged).
    pub strip_prefix: Option<String>,
}

impl RuleTarget {
    /// The target repository for `repository` on `source_registry`: `{repository}`,
    /// `{name}` and `{registry}` replaced. A placeholder this version does not know is
    /// left as written (the loader rejects such templates), so the result may be an
    /// invalid name: callers validate it before use. With `strip_prefix`, `repository`
    /// is taken without it (callers check [`Self::strips`] first; a path without the
    /// prefix is used whole).
    pub fn expand_repository(&self, source_registry: &str, repository: &str) -> String {
        let repository = self
            .strip_prefix
            .as_deref()
            .and_then(|p| repository.strip_prefix(p))
            .unwrap_or(repository);
        let name = repository.rsplit('/').next().unwrap_or(repository);
        expand(
            &self.repository,
            &[
                ("repository", repository),
                ("name", name),
                ("registry", source_registry),
            ],
        )
    }

    /// Whether `repository` can be mapped: it starts with `strip_prefix` (and is longer),
    /// or there is none.
    pub fn strips(&self, repository: &str) -> bool {
        self.strip_prefix
            .as_deref()
            .is_none_or(|p| repository.strip_prefix(p).is_some_and(|rest| !rest.is_empty()))
    }

    /// The target tag for `tag`: the tag template with `{tag}` replaced, or `tag` itself
    /// when the target has no template. May be invalid; callers validate it.
    pub fn expand_tag(&self, tag: &str) -> String {
        match &self.tag {
            Some(template) => expand(template, &[("tag", tag)]),
            None => tag.to_owned(),
        }
    }
}

/// Replace each `{var}` of `template` in one pass (values are never re-expanded).
/// Unknown placeholders and unbalanced braces are copied through unchanged.
fn expand(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let var = &after[..close];
                match vars.iter().find(|(k, _)| *k == var) {
                    Some((_, value)) => out.push_str(value),
                    None => out.push_str(&rest[open..open + close + 2]),
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(repository: &str, tag: Option<&str>) -> RuleTarget {
        RuleTarget {
            registry: "dst.example".into(),
            repository: repository.into(),
            tag: tag.map(str::to_owned),
            strip_prefix: None,
        }
    }

    #[test]
    fn strip_prefix_removes_the_leading_path_before_the_template_15() {
        let t = RuleTarget {
            strip_prefix: Some("my-project/docker/".into()),
            ..target("mirror/{repository}", None)
        };
        assert_eq!(
            t.expand_repository("europe-docker.pkg.dev", "my-project/docker/team/app"),
            "mirror/team/app"
        );
        assert!(t.strips("my-project/docker/team/app"));
        assert!(t.strips("my-project/docker/app"));
        // Not under the prefix, the prefix itself, or a lookalike segment: no mapping.
        assert!(!t.strips("other/docker/team/app"));
        assert!(!t.strips("my-project/docker/"));
        assert!(!t.strips("my-project/dockerx/app"));
        // `{name}` is unchanged by it; without strip_prefix everything maps.
        let n = RuleTarget {
            strip_prefix: Some("p/r/".into()),
            ..target("{name}", None)
        };
        assert_eq!(n.expand_repository("s", "p/r/team/app"), "app");
        assert!(target("{repository}", None).strips("anything/at/all"));
    }

    #[test]
    fn templates_expand_every_variable_once() {
        let t = target("mirror/{registry}/{repository}-{name}", Some("{tag}-m"));
        assert_eq!(
            t.expand_repository("src.example", "a/b/app"),
            "mirror/src.example/a/b/app-app"
        );
        assert_eq!(t.expand_tag("v1"), "v1-m");
        assert_eq!(target("{repository}", None).expand_tag("v1"), "v1");
        // Values are not re-expanded; unknown placeholders and stray braces pass through.
        assert_eq!(target("{repository}", None).expand_repository("r", "{name}"), "{name}");
        assert_eq!(target("x/{nope}/{", None).expand_repository("r", "a"), "x/{nope}/{");
        assert_eq!(target("}{}", None).expand_repository("r", "a"), "}{}");
    }

    #[test]
    fn globs_keep_single_stars_within_a_segment() {
        let m = Matcher::try_glob("proj/*").unwrap();
        assert!(m.is_match("proj/app"));
        assert!(!m.is_match("proj/team/app"));
        let m = Matcher::try_glob("proj/**").unwrap();
        assert!(m.is_match("proj/team/app"));
        assert!(Matcher::try_glob("a[").is_err());
        let r = Matcher::try_regex("v[0-9]+").unwrap();
        assert!(r.is_match("v12") && !r.is_match("xv12") && !r.is_match("v12x"));
        assert!(Matcher::try_regex("(").is_err());
        assert_eq!(r.as_str(), "v[0-9]+");
    }
}
