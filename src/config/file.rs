//! Loading `regrelay run`'s TOML file into a validated [`super::Config`].
//!
//! Role: parse the file, then check and convert it (`validate`) into the typed config.
//! Sections with a typed struct of the file's layout (`[pipeline]`, `[reconcile]`,
//! `[watcher]`, `[[watch]]`, a registry's `retry`) are deserialized straight into it:
//! that struct is the setting's one definition (doc, default, unit). The others go through the raw serde structs below (one
//! `///` per field: the file's reference), because their keys depend on a `kind` or need
//! resolving (secrets). Every check runs here, before anything binds or connects; secrets
//! named by the file (environment variables, files) are read here too, once.
//!
//! Must never: put a secret value in an error or in `check-config` output
//! ([`super::render`]), or accept an unknown key (a typo must not silently fall back to a
//! default).
//!
//! Invariants: every [`LoadError`] names the file and, whenever the problem has a place in
//! the file, its line and the field path (`rules[0].targets[1].registry`). Raw fields that
//! are checked after parsing are `toml::Spanned` so that their line is known; a problem in
//! a typed section is placed by looking its field path up in the parsed document.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Config, PipelineConfig, ReconcileConfig, key_path};

mod validate;

#[cfg(test)]
mod tests;

/// Why a configuration file was refused. Its `Display` is
/// `FILE:LINE: FIELD: MESSAGE` (line and field omitted when the problem has no place in
/// the file, e.g. the file cannot be read), and never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file, as given to [`load`] or [`load_str`].
    pub file: PathBuf,
    /// 1-based line of the offending key, value or table header.
    pub line: Option<usize>,
    /// Path of the offending field, e.g. `registries."gcr.io".auth.password_env`.
    pub field: Option<String>,
    /// What is wrong, lowercase.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LoadError {}

/// Read, parse and validate the file at `path` (secrets from env vars and files resolved).
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError {
        file: path.to_owned(),
        line: None,
        field: None,
        message: format!("cannot read the configuration file: {e}"),
    })?;
    load_str(&text, path)
}

/// Parse and validate `text`; `origin` names the file in errors.
pub fn load_str(text: &str, origin: &Path) -> Result<Config, LoadError> {
    let error = |span: Option<Range<usize>>, field: Option<String>, message: String| LoadError {
        file: origin.to_owned(),
        line: span.map(|s| line_of(text, s.start)),
        field,
        message,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        // The deserializer knows the span but keeps the key path private: find the
        // field by walking the parsed document to the innermost key or value at the span.
        let field = e.span().and_then(|s| field_at(text, s.start));
        error(e.span(), field, e.message().trim_end().to_owned())
    })?;
    // Settings deserialized straight into their typed structs carry no spans: their
    // problems are placed by looking their field path up in the document.
    let doc = toml::de::DeTable::parse(text).ok();
    let written = |field: &str, exact: bool| doc.as_ref().and_then(|d| span_of(d.get_ref(), field, exact));
    validate::config(raw, &|field| written(field, true)).map_err(|p| {
        let span = p.span.or_else(|| written(&p.field, false)).unwrap_or(0..0);
        error(Some(span), Some(p.field), p.message)
    })
}

/// A problem found after parsing: where (`None`: wherever `field` is written), which
/// field, what.
#[derive(Debug)]
struct Problem {
    span: Option<Range<usize>>,
    field: String,
    message: String,
}

impl Problem {
    fn new(span: Range<usize>, field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            span: Some(span),
            field: field.into(),
            message: message.into(),
        }
    }

    /// A problem with the setting at `field`, placed where the file writes it.
    fn at(field: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            span: None,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The span of the key `field` (a path as in errors: `registries."a.b".retry.attempts`,
/// `rules[0].name`) in `doc`; unless `exact`, of the innermost key on its path that the
/// file writes (the table it would be in).
fn span_of(doc: &toml::de::DeTable<'_>, field: &str, exact: bool) -> Option<Range<usize>> {
    use toml::de::DeValue;
    let mut table = Some(doc);
    let mut items: Option<&toml::de::DeArray<'_>> = None;
    let mut found = None;
    let mut rest = field;
    while !rest.is_empty() {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        let value = if let Some(r) = rest.strip_prefix('[') {
            let (index, after) = r.split_once(']')?;
            rest = after;
            let item = items.and_then(|a| a.get(index.parse::<usize>().ok()?));
            found = item.map(Spanned::span).or(found);
            item
        } else {
            let (key, after) = match rest.strip_prefix('"') {
                Some(r) => r.split_once('"')?,
                None => rest.split_at(rest.find(['.', '[']).unwrap_or(rest.len())),
            };
            rest = after;
            let entry = table.and_then(|t| t.iter().find(|(k, _)| k.get_ref().as_ref() == key));
            found = entry.map(|(k, _)| k.span()).or(found);
            entry.map(|(_, v)| v)
        };
        let Some(value) = value else {
            return if exact { None } else { found };
        };
        (table, items) = match value.get_ref() {
            DeValue::Table(t) => (Some(t), None),
            DeValue::Array(a) => (None, Some(a)),
            _ => (None, None),
        };
    }
    found
}

/// 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The path of the innermost key or value of `text` whose span holds `offset`.
fn field_at(text: &str, offset: usize) -> Option<String> {
    use toml::de::{DeTable, DeValue};

    fn holds(span: Range<usize>, offset: usize) -> bool {
        span.start <= offset && (offset < span.end || span.start == span.end)
    }
    fn in_value(v: &Spanned<DeValue<'_>>, offset: usize, path: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::Table(t) => in_table(t, offset, path),
            DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                let p = format!("{path}[{i}]");
                in_value(item, offset, &p).or_else(|| holds(item.span(), offset).then_some(p))
            }),
            _ => None,
        }
    }
    fn in_table(t: &DeTable<'_>, offset: usize, path: &str) -> Option<String> {
        t.iter().find_map(|(k, v)| {
            let key = key_path(k.get_ref());
            let p = if path.is_empty() { key } else { format!("{path}.{key}") };
            // Children first: a table's span is its header, its keys come after it.
            in_value(v, offset, &p).or_else(|| (holds(k.span(), offset) || holds(v.span(), offset)).then_some(p))
        })
    }
    let doc = DeTable::parse(text).ok()?;
    in_table(doc.get_ref(), offset, "")
}

// ---------------------------------------------------------------------------------------
// Raw file layout. Every field is optional unless it says "required"; defaults are given.
// ---------------------------------------------------------------------------------------

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// `[source]`, required: where events come from.
    source: Option<Spanned<RawSource>>,
    /// `[pipeline]`: concurrency, deduplication, settlement and pause knobs.
    #[serde(default)]
    pipeline: PipelineConfig,
    /// `[admin]`: the `/metrics`, `/livez`, `/readyz` HTTP server.
    admin: Option<Spanned<RawAdmin>>,
    /// `[reconcile]`: the periodic sweep that repairs what events missed (off by default).
    #[serde(default)]
    reconcile: ReconcileConfig,
    /// `[registries."HOST[:PORT]"]`: every registry regrelay may contact, keyed by the host
    /// exactly as it appears in image references. Events naming other hosts are rejected.
    #[serde(default)]
    registries: BTreeMap<Spanned<String>, Spanned<super::RegistryConfig>>,
    /// `[[rules]]`: what to replicate where, in file order; every matching rule applies.
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    /// `[[watch]]`: upstream tags to buffer.
    #[serde(default)]
    watch: Vec<super::watch::WatchConfig>,
    /// `[gates.NAME]`: checks a watched digest must pass.
    #[serde(default)]
    gates: BTreeMap<String, Spanned<validate::watch::RawGate>>,
    /// `[notify.NAME]`: who is told about a promotion.
    #[serde(default)]
    notify: BTreeMap<String, Spanned<validate::watch::RawNotify>>,
    /// `[watcher]`: state file and polling limits.
    #[serde(default)]
    watcher: super::watch::WatcherConfig,
}

/// `source.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SourceKind {
    /// Google Cloud Pub/Sub streaming pull.
    Pubsub,
    /// JSON lines from a file or standard input.
    File,
    /// Azure Service Bus queue or topic subscription (REST peek-lock).
    Servicebus,
}

/// `[source]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    /// Required: `"pubsub"`, `"file"` or `"servicebus"`.
    kind: Spanned<SourceKind>,
    /// pubsub, required: `projects/PROJECT/subscriptions/NAME`. servicebus: the
    /// subscription name under `topic` (required with `topic`).
    subscription: Option<Spanned<String>>,
    /// pubsub: endpoint override, `http://…` (emulator, anonymous) or `https://…`.
    /// servicebus: base URL override, `https://…`, or `http://` on loopback only (tests).
    endpoint: Option<Spanned<String>>,
    /// servicebus, required: the namespace's full host name,
    /// e.g. `example.servicebus.windows.net`.
    namespace: Option<Spanned<String>>,
    /// servicebus: the queue to receive from. Exactly one of `queue` and `topic`.
    queue: Option<Spanned<String>>,
    /// servicebus: the topic whose `subscription` to receive from.
    topic: Option<Spanned<String>>,
    /// servicebus: receivers long-polling in parallel, 1..=64. Default 2.
    receivers: Option<Spanned<usize>>,
    /// servicebus: long-poll timeout of one receive, 1..=60 s. Default 30.
    wait_secs: Option<Spanned<u64>>,
    /// servicebus: renew each lock this often, 1..=300 s. Default: at half of the lock
    /// time left (never later than that, whatever this says).
    lock_renew_secs: Option<Spanned<u64>>,
    /// servicebus: permanent failures: `"abandon"` (default; `MaxDeliveryCount` moves
    /// the message to the dead-letter queue) or `"complete"` (drop and count). Sets
    /// `pipeline.reject` (`"nack"` / `"ack"`); giving both, they must agree.
    reject: Option<Spanned<RawServiceBusReject>>,
    /// servicebus, required: `{ kind = "sas", ... }` or `{ kind = "entra", ... }`.
    auth: Option<Spanned<AuthTable>>,
    /// pubsub: most messages leased and not yet settled. Default 2 × `pipeline.workers`.
    max_outstanding_messages: Option<Spanned<i64>>,
    /// pubsub: how far each lease extension reaches, 10..=600 s. Default 60.
    lease_extension_secs: Option<Spanned<u64>>,
    /// pubsub: longest time a message is held, ≥ `lease_extension_secs`. Default 3600.
    max_lease_secs: Option<Spanned<u64>>,
    /// file: the JSON-lines file to read; absent or `"-"` = standard input.
    path: Option<Spanned<String>>,
    /// `[source.origin]`, any kind: which registry events come from when their payload
    /// names no registry host. Without it such events are rejected.
    origin: Option<Spanned<RawOrigin>>,
}

/// `[source.origin]`: where events that name no registry host come from: Artifactory
/// webhooks (a repository key, no host), bridges whose CloudEvents name only `team/app`,
/// distribution events without `request.host`. Payloads that do name a host keep it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrigin {
    /// Required: the registry host, a key of `[registries]`; or a template over
    /// `{repo_key}` (Artifactory's subdomain method, `"{repo_key}.acme.jfrog.io"`), whose
    /// hosts must each be configured (others are rejected at runtime, never contacted).
    registry: Spanned<String>,
    /// Repository template over `{repository}` (the path the payload names; Artifactory's
    /// `image_name`), `{repo_key}` and `{image_name}` (Artifactory only). Default
    /// `"{repository}"`; Artifactory's repository-path method is `"{repo_key}/{image_name}"`.
    repository: Option<Spanned<String>>,
}

/// `source.reject` (servicebus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawServiceBusReject {
    /// Abandon (unlock) until `MaxDeliveryCount` dead-letters it (default).
    Abandon,
    /// Complete (delete) and count it.
    Complete,
}

/// `[admin]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    /// `IP:PORT` to listen on. Default `"0.0.0.0:9090"`; `""` disables the server.
    listen: Option<Spanned<String>>,
    /// `false` disables the server. Default true.
    enabled: Option<Spanned<bool>>,
}

/// `auth.kind`: of a registry (`anonymous` … `acr_entra`) or of the Service Bus source
/// (`sas`, `entra`). Read as a string: which names are valid depends on the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthKind {
    /// No credentials.
    Anonymous,
    /// `username` plus one of `password_env`, `password_file`, `password`.
    Basic,
    /// A docker `config.json` at `path` (read when the registry is first used).
    DockerConfig,
    /// An OAuth2 refresh token from one of `token_env`, `token_file`, `token`.
    IdentityToken,
    /// Google access tokens (Application Default Credentials, or `credentials_file`),
    /// sent as `oauth2accesstoken`. For Artifact Registry and Container Registry.
    Google,
    /// Azure Container Registry with an Entra ID token (`tenant`, `credential`, ...)
    /// exchanged for ACR tokens. ACR admin users and repository-scoped tokens are `basic`.
    AcrEntra,
    /// Service Bus: a shared access key, from a connection string or `key_name` plus the key.
    Sas,
    /// Service Bus: Microsoft Entra ID bearer tokens (the credentials of `acr_entra`).
    Entra,
}

/// `registries."HOST".auth.credential` (acr_entra): where the Entra token comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawEntraCredential {
    /// AKS workload identity (`client_id`, `federated_token_file`; default to the
    /// webhook's `AZURE_CLIENT_ID` / `AZURE_FEDERATED_TOKEN_FILE`).
    WorkloadIdentity,
    /// Managed identity of the VM / App Service; `client_id` picks a user-assigned one.
    ManagedIdentity,
    /// A service principal: `client_id` plus one of `client_secret_env`,
    /// `client_secret_file`, `client_secret`.
    ClientSecret,
    /// An Entra access token in `token_file`, kept current by something else.
    StaticTokenFile,
}

/// `registries."HOST".auth` and `source.auth` (servicebus): one flat table whose `kind`
/// says which other keys apply (a key that does not belong to the kind is an error). Its
/// `Debug` shows the kind only: the table may hold a secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthTable {
    /// Required. A registry: `"anonymous"`, `"basic"`, `"docker_config"`,
    /// `"identity_token"`, `"google"` or `"acr_entra"`. The Service Bus source: `"sas"` or
    /// `"entra"`.
    kind: Spanned<String>,
    /// basic, required: the user name.
    username: Option<Spanned<String>>,
    /// basic: environment variable holding the password (read at startup).
    password_env: Option<Spanned<String>>,
    /// basic: file holding the password (read at startup, trailing newline stripped).
    password_file: Option<Spanned<String>>,
    /// basic: the password itself. Allowed, discouraged: prefer `password_env`/`_file`.
    password: Option<Spanned<String>>,
    /// docker_config, required: path of a docker `config.json`.
    path: Option<Spanned<String>>,
    /// identity_token: environment variable holding the refresh token.
    token_env: Option<Spanned<String>>,
    /// identity_token: file holding the refresh token. acr_entra with
    /// `credential = "static_token_file"`, required: file holding an Entra access token
    /// (reread as it expires).
    token_file: Option<Spanned<String>>,
    /// identity_token: the token itself. Allowed, discouraged.
    token: Option<Spanned<String>>,
    /// google: a credentials JSON file (service-account key, gcloud user credentials,
    /// workload identity federation). Default: Application Default Credentials.
    credentials_file: Option<Spanned<String>>,
    /// acr_entra, required; entra: the directory (tenant) ID (workload identity falls back
    /// to `AZURE_TENANT_ID`).
    tenant: Option<Spanned<String>>,
    /// acr_entra and entra, required: `"workload_identity"`, `"managed_identity"`,
    /// `"client_secret"` or `"static_token_file"`.
    credential: Option<Spanned<RawEntraCredential>>,
    /// acr_entra, entra: application (client) ID; required for `client_secret`.
    client_id: Option<Spanned<String>>,
    /// acr_entra, entra, client_secret: environment variable holding the secret.
    client_secret_env: Option<Spanned<String>>,
    /// acr_entra, entra, client_secret: file holding the secret.
    client_secret_file: Option<Spanned<String>>,
    /// acr_entra, entra, client_secret: the secret itself. Allowed, discouraged.
    client_secret: Option<Spanned<String>>,
    /// acr_entra, entra, workload_identity: the projected service-account token file.
    federated_token_file: Option<Spanned<String>>,
    /// acr_entra, entra: Entra authority host. Default
    /// `"https://login.microsoftonline.com"` (US Government:
    /// `https://login.microsoftonline.us`, China: `https://login.chinacloudapi.cn`).
    authority_host: Option<Spanned<String>>,
    /// acr_entra, entra: Entra token scope. Default
    /// `"https://containerregistry.azure.net/.default"` (acr_entra),
    /// `"https://servicebus.azure.net/.default"` (entra).
    scope: Option<Spanned<String>>,
    /// sas: environment variable holding a connection string
    /// `Endpoint=sb://NAMESPACE/;SharedAccessKeyName=NAME;SharedAccessKey=KEY`.
    connection_string_env: Option<Spanned<String>>,
    /// sas: file holding that connection string.
    connection_string_file: Option<Spanned<String>>,
    /// sas: the connection string itself. Allowed, discouraged.
    connection_string: Option<Spanned<String>>,
    /// sas, without a connection string: the authorization rule's name.
    key_name: Option<Spanned<String>>,
    /// sas: environment variable holding the rule's key.
    key_env: Option<Spanned<String>>,
    /// sas: file holding the rule's key.
    key_file: Option<Spanned<String>>,
    /// sas: the rule's key itself. Allowed, discouraged.
    key: Option<Spanned<String>>,
}

impl fmt::Debug for AuthTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthTable")
            .field("kind", self.kind.get_ref())
            .finish_non_exhaustive()
    }
}

/// An entry of `rules[].actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawAction {
    /// Replicate pushes.
    Push,
    /// Propagate deletes of tags and manifests.
    Delete,
}

/// `rules[].untagged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawUntagged {
    /// Digest-only pushes are ignored (default).
    Ignore,
    /// Digest-only pushes are copied by digest.
    Replicate,
}

/// `[[rules]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// Name for logs, unique. Default `"rules[N]"` (N = position, from 0).
    name: Option<Spanned<String>>,
    /// Required: source registry host; must be a key of `[registries]`.
    source_registry: Spanned<String>,
    /// Glob over the source repository path (`*` within a segment, `**` across
    /// segments). Exactly one of `repository` and `repository_regex` is required.
    repository: Option<Spanned<String>>,
    /// Regular expression over the source repository path, anchored `^…$`.
    repository_regex: Option<Spanned<String>>,
    /// The source repositories `regrelay sync` and the reconcile sweep visit for a
    /// pattern rule, instead of the registry's `_catalog`; each must match the pattern.
    repositories: Option<Vec<Spanned<String>>>,
    /// Tag globs to include; absent or empty (with `tags_regex`) = every tag.
    tags: Option<Vec<Spanned<String>>>,
    /// Tag regexes to include (anchored); combined with `tags` by "any of".
    tags_regex: Option<Vec<Spanned<String>>>,
    /// Tag globs never replicated (checked after the includes).
    exclude_tags: Option<Vec<Spanned<String>>>,
    /// Tag regexes never replicated (anchored).
    exclude_tags_regex: Option<Vec<Spanned<String>>>,
    /// Non-empty subset of `["push", "delete"]`. Default `["push"]`.
    actions: Option<Spanned<Vec<RawAction>>>,
    /// Digest-only pushes: `"ignore"` (default) or `"replicate"`.
    untagged: Option<RawUntagged>,
    /// Deletes of this rule are only logged; default `[pipeline] delete_dry_run`.
    delete_dry_run: Option<bool>,
    /// Required, at least one `[[rules.targets]]`.
    targets: Option<Vec<Spanned<RawTarget>>>,
    /// Names of `[gates.NAME]` the target digest must pass before a target tag is written.
    #[serde(default)]
    require: Vec<Spanned<String>>,
}

/// `[[rules.targets]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    /// Required: target registry host; must be a key of `[registries]`.
    registry: Spanned<String>,
    /// Repository template over `{repository}` (source path), `{name}` (its last
    /// segment) and `{registry}` (source host). Default `"{repository}"`.
    repository: Option<Spanned<String>>,
    /// Tag template over `{tag}`. Default: the source tag unchanged.
    tag: Option<Spanned<String>>,
    /// A leading path removed from the source repository before the template sees it
    /// (`{repository}`), e.g. `"my-project/docker/"`; ends with `/`.
    strip_prefix: Option<Spanned<String>>,
}
