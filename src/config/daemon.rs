//! The validated configuration of `regrelay run`: source, registries, rules and the
//! pipeline's knobs. Values of these types exist only after [`super::load`] has checked
//! them, so the rest of the daemon never re-validates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::RegistryConfig;
use serde::Serialize as _;

use super::units;
use crate::rules::Rule;

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

/// `[reconcile]`: the periodic sweep of `regrelay run` that repairs what events missed
/// (off by default). With several replicas use the `regrelay sync` CronJob instead.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    /// `interval_secs`: time from the end of one sweep to the start of the next (±10 %
    /// jitter); absent or 0 = no sweep (`None`). A sweep never overlaps the next one.
    #[serde(rename = "interval_secs", with = "units::secs_or_off")]
    pub interval: Option<Duration>,
    /// HEADs and repairs a sweep keeps in flight (below the event workers), ≥ 1. Default 2.
    pub jobs: usize,
    /// Also delete target tags gone at the source (rules with the delete action, like
    /// `sync --prune`). Default false.
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

/// The event source; serialized as `[source]` with its `kind`.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    /// A Google Cloud Pub/Sub subscription (streaming pull).
    PubSub(PubSubConfig),
    /// JSON lines from a file, or standard input when `path` is `None`.
    File(FileSourceConfig),
    /// An Azure Service Bus queue or topic subscription (REST peek-lock).
    ServiceBus(ServiceBusConfig),
    /// No event source: the file has no `[source]` and only its `[[watch]]` blocks run.
    #[serde(skip)]
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
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
#[derive(Debug, Clone, serde::Serialize)]
pub struct PubSubConfig {
    /// Full subscription name, `projects/PROJECT/subscriptions/NAME`.
    pub subscription: String,
    /// Endpoint override (`http://127.0.0.1:8085` for the emulator). With an `http://`
    /// endpoint regrelay uses anonymous credentials; otherwise Application Default
    /// Credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Flow control: most messages held (leased, not yet settled) at once.
    pub max_outstanding_messages: i64,
    /// How far each lease extension reaches (10 s to 600 s).
    #[serde(rename = "lease_extension_secs", serialize_with = "units::secs::serialize")]
    pub lease_extension: Duration,
    /// Longest time one message is held before its lease is no longer extended.
    #[serde(rename = "max_lease_secs", serialize_with = "units::secs::serialize")]
    pub max_lease: Duration,
}

/// Azure Service Bus settings (REST data plane, peek-lock).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceBusConfig {
    /// The namespace's full host name, e.g. `example.servicebus.windows.net` (Azure China:
    /// `.servicebus.chinacloudapi.cn`, US Government: `.servicebus.usgovcloudapi.net`).
    pub namespace: String,
    /// The queue, or the topic subscription, to receive from (`queue`, or `topic` and
    /// `subscription`).
    #[serde(flatten)]
    pub entity: ServiceBusEntity,
    /// Base URL override (`http://127.0.0.1:PORT` for a test server; plain HTTP only on
    /// loopback). `None` = `https://{namespace}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Receivers long-polling in parallel.
    pub receivers: usize,
    /// Long-poll timeout of one receive request.
    #[serde(rename = "wait_secs", serialize_with = "units::secs::serialize")]
    pub wait: Duration,
    /// Renew each lock this often; `None` = at half of the lock time left.
    #[serde(rename = "lock_renew_secs", skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "units::secs_or_off::serialize")]
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

impl serde::Serialize for ServiceBusEntity {
    /// The keys of `[source]` that name it.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ServiceBusEntity::Queue(q) => s.collect_map([("queue", q)]),
            ServiceBusEntity::Subscription { topic, subscription } => {
                s.collect_map([("topic", topic), ("subscription", subscription)])
            }
        }
    }
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
/// Serialized as the file's flat `source.auth` table (secrets as `"***"`).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
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
        #[serde(flatten)]
        entra: super::EntraConfig,
        /// Token scope, [`SERVICEBUS_ENTRA_SCOPE`] unless a sovereign cloud needs another.
        scope: String,
    },
}

/// File / stdin source settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FileSourceConfig {
    /// The file to read; `None` = standard input (written `"-"`).
    #[serde(serialize_with = "stdin_dash")]
    pub path: Option<PathBuf>,
}

/// `path`, `"-"` for standard input.
fn stdin_dash<S: serde::Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => p.serialize(s),
        None => s.serialize_str("-"),
    }
}

/// What to do with a message whose failure is Permanent (the image is gone, the event is
/// malformed, the host is not allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
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

/// `[pipeline]`: concurrency, deduplication, settlement and pause knobs. Each field is
/// its file key (durations as `*_secs`); defaults are those of [`Default`].
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Messages processed concurrently, ≥ 1. Default 8.
    pub workers: usize,
    /// Concurrent blob transfers shared by all copies, ≥ 1. Default 8.
    pub blob_jobs: usize,
    /// Copy referrers (signatures, SBOMs) and cosign tags too. Default true.
    pub referrers: bool,
    /// `dedup_ttl_secs`: how long a verified (target, digest) is remembered, so that
    /// repeats cost one HEAD; 0 disables. Default 600.
    #[serde(rename = "dedup_ttl_secs", with = "units::secs")]
    pub dedup_ttl: Duration,
    /// Most entries in that memory. Default 100000.
    pub dedup_max_entries: usize,
    /// `reject`: settlement of Permanent failures, `"ack"` (default) or `"nack"`. The
    /// servicebus source defaults to `"nack"` (abandon; see `source.reject`).
    #[serde(rename = "reject")]
    pub reject_mode: RejectMode,
    /// `shutdown_grace_secs`: on SIGTERM/SIGINT, how long in-flight copies may run before
    /// they are nacked. Default 30.
    #[serde(rename = "shutdown_grace_secs", with = "units::secs")]
    pub shutdown_grace: Duration,
    /// `pause_min_secs`: first pause of pulling after a Systemic failure (doubles up to
    /// `pause_max`), ≥ 1. Default 5.
    #[serde(rename = "pause_min_secs", with = "units::secs")]
    pub pause_min: Duration,
    /// `pause_max_secs`: longest pause of pulling, ≥ `pause_min_secs`. Default 300.
    #[serde(rename = "pause_max_secs", with = "units::secs")]
    pub pause_max: Duration,
    /// Log deletions instead of performing them (for every rule that propagates deletes
    /// and does not set its own). Default false.
    pub delete_dry_run: bool,
    /// `retry_delay_min_secs`: retry delay of a message after its first Transient or
    /// Systemic failure: the message is held (lease or lock kept) this long before it goes
    /// back to the broker. Doubles with each delivery up to `retry_delay_max`. 0 hands
    /// failed messages back at once. At most 3600. Default 15.
    #[serde(rename = "retry_delay_min_secs", with = "units::secs")]
    pub retry_delay_min: Duration,
    /// `retry_delay_max_secs`: longest retry delay, ≥ `retry_delay_min_secs`, at most
    /// 3600. Default 300.
    #[serde(rename = "retry_delay_max_secs", with = "units::secs")]
    pub retry_delay_max: Duration,
    /// Most failed messages held at once while their retry delay runs, ≥ 1; when full,
    /// workers wait for a slot (and so pulling slows down). Default 1000.
    pub max_waiting: usize,
    /// A tag delete at a target that cannot delete tags: `"manifest"` (delete the manifest
    /// by digest when no other tag uses it; default) or `"off"`.
    pub tag_delete_fallback: TagDeleteFallback,
    /// `regrelay run --dry-run` (not a file setting): plan and log every route, write
    /// nothing, hand every message back to the broker at once.
    #[serde(skip)]
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
