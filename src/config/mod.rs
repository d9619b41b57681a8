//! Typed configuration values shared by every module: registry settings, credentials
//! sources, retry policy and the [`Secret`] wrapper.
//!
//! Role: hold validated settings. Everything here is constructed by `main` (from CLI
//! flags today, from the TOML file in `regrelay run`) and passed down; no other module
//! reads environment variables or files named by the operator.
//!
//! Must never: print a secret. [`Secret`] has no `Display`, its `Debug` is redacted and
//! it serializes as `"***"`, so a `{:?}` of any config value is safe to log and
//! `check-config` ([`render`]) shows none.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

mod daemon;
mod effective;
mod file;
mod units;
pub mod watch;

/// The rule model lives in [`crate::rules`]; re-exported for the loader's callers.
pub use crate::rules::{Matcher, Rule, RuleTarget, Untagged};
pub use daemon::*;
pub use effective::render;
pub use file::{LoadError, load, load_str};

/// A credential (password, token, key). Its `Debug` output is redacted and it has no
/// `Display`; call [`Secret::expose`] only where the value is put on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret value, for building a request.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Is the value empty?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Errors in configuration values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A secret source could not be read.
    #[error("cannot read secret for {what} from {source_desc}: {reason}")]
    SecretUnreadable {
        /// Which setting needed it.
        what: String,
        /// Where we looked (env var name or file path; never the value).
        source_desc: String,
        /// Why it failed.
        reason: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid setting {field}: {reason}")]
    Invalid {
        /// The setting.
        field: String,
        /// Why.
        reason: String,
    },
}

/// Where a secret comes from. Plain-text values are accepted for tests and quickstarts,
/// but the documented forms are an environment variable or a file.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// Read from this environment variable at startup.
    Env(String),
    /// Read from this file at startup (trailing newline stripped).
    File(PathBuf),
    /// Given inline.
    Inline(Secret),
}

impl SecretSource {
    /// Resolve the secret; `what` names the setting for error messages.
    pub fn resolve(&self, what: &str) -> Result<Secret, Error> {
        match self {
            SecretSource::Inline(s) => Ok(s.clone()),
            SecretSource::Env(var) => std::env::var(var)
                .map(Secret::new)
                .map_err(|e| Error::SecretUnreadable {
                    what: what.into(),
                    source_desc: format!("environment variable {var}"),
                    reason: e.to_string(),
                }),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret::new(s.trim_end_matches(['\r', '\n'])))
                .map_err(|e| Error::SecretUnreadable {
                    what: what.into(),
                    source_desc: format!("file {}", path.display()),
                    reason: e.to_string(),
                }),
        }
    }
}

/// How regrelay authenticates to one registry. Serialized (for `check-config`) as the
/// file's flat `auth` table: `kind` and the keys of that kind, secrets as `"***"`.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Auth {
    /// No credentials; bearer challenges are answered with anonymous token requests.
    #[default]
    Anonymous,
    /// Username and password (HTTP Basic, or Basic at the token endpoint).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// An OAuth2 refresh token ("identity token"), exchanged at the token endpoint.
    IdentityToken {
        /// The refresh token.
        token: Secret,
    },
    /// A docker `config.json`: `auths`, `credHelpers` and `credsStore` are consulted for
    /// this registry's host when it is first used.
    DockerConfig {
        /// Path of the file.
        path: PathBuf,
    },
    /// Google OAuth2 access tokens (Artifact Registry, Container Registry), sent to the
    /// registry's token endpoint as Basic `oauth2accesstoken:<token>`.
    Google(GoogleAuth),
    /// Azure Container Registry with Microsoft Entra ID: an Entra token for `scope` is
    /// exchanged at the registry's `/oauth2/exchange` for an ACR refresh token, which
    /// then buys per-repository access tokens. (ACR admin users and repository-scoped
    /// tokens are plain [`Auth::Basic`].)
    AcrEntra {
        /// Directory (tenant) ID sent to `/oauth2/exchange` (the same as `entra.tenant`,
        /// which the file requires for this kind; serialized there).
        #[serde(skip)]
        tenant: String,
        /// Where the Entra token comes from.
        #[serde(flatten)]
        entra: EntraConfig,
        /// Entra scope, [`ACR_ENTRA_SCOPE`] unless configured.
        scope: String,
    },
}

/// OAuth2 scope of the Google access tokens regrelay asks for.
pub const GOOGLE_CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Default Entra ID scope for Azure Container Registry.
pub const ACR_ENTRA_SCOPE: &str = "https://containerregistry.azure.net/.default";
/// Default Entra ID authority host (Azure public cloud).
pub const ENTRA_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// Where Google access tokens come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GoogleAuth {
    /// A credentials JSON file: a service-account key, `gcloud auth application-default
    /// login` user credentials, or a workload identity federation config. `None`:
    /// Application Default Credentials as google-cloud-auth discovers them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
}

/// Where Microsoft Entra ID tokens come from. Shared by every Azure consumer (ACR
/// registry auth, the Service Bus source). Serialized as keys of the auth table that
/// holds it (`tenant`, `credential` and its keys, `authority_host`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntraConfig {
    /// Directory (tenant) ID. Required for a client secret; workload identity falls back
    /// to `AZURE_TENANT_ID` (set by the AKS webhook); managed identity ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The credential.
    #[serde(flatten)]
    pub credential: EntraCredential,
    /// Authority host without a trailing slash, [`ENTRA_AUTHORITY_HOST`] unless
    /// configured (sovereign clouds). HTTPS, or plain HTTP on a loopback host (tests).
    pub authority_host: String,
}

/// Which Entra ID credential to use: the auth table's `credential` and its keys.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "credential", rename_all = "snake_case")]
pub enum EntraCredential {
    /// AKS workload identity: a projected service-account token is exchanged as a
    /// client assertion. Unset fields fall back to `AZURE_CLIENT_ID` and
    /// `AZURE_FEDERATED_TOKEN_FILE`, which the AKS webhook sets.
    WorkloadIdentity {
        /// Client ID of the user-assigned identity or app registration.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        /// The projected token file (`federated_token_file`).
        #[serde(rename = "federated_token_file", skip_serializing_if = "Option::is_none")]
        token_file: Option<PathBuf>,
    },
    /// Managed identity (VM / VM scale set IMDS, App Service); `client_id` picks a
    /// user-assigned identity, `None` the system-assigned one.
    ManagedIdentity {
        /// Client ID of a user-assigned identity.
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    /// A service principal with a client secret.
    ClientSecret {
        /// Application (client) ID.
        client_id: String,
        /// The client secret (`client_secret`).
        #[serde(rename = "client_secret")]
        secret: Secret,
    },
    /// An Entra access token kept current in a file by something else; the file is
    /// read again whenever the token it held is about to expire or was refused.
    StaticTokenFile {
        /// The file (`token_file`).
        #[serde(rename = "token_file")]
        path: PathBuf,
    },
}

/// `type`s of Google credentials files that regrelay can use.
pub const GOOGLE_CREDENTIAL_TYPES: [&str; 4] = [
    "service_account",
    "authorized_user",
    "external_account",
    "impersonated_service_account",
];

impl GoogleAuth {
    /// Check that a configured credentials file is readable JSON of a supported `type`.
    /// Errors name the file and the problem, never its content.
    pub fn validate(&self) -> Result<(), Error> {
        let Some(path) = &self.credentials_file else {
            return Ok(());
        };
        let unreadable = |reason: String| Error::SecretUnreadable {
            what: "google credentials".into(),
            source_desc: format!("file {}", path.display()),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| unreadable(format!("not JSON (line {})", e.line())))?;
        match json.get("type").and_then(serde_json::Value::as_str) {
            Some(t) if GOOGLE_CREDENTIAL_TYPES.contains(&t) => Ok(()),
            Some(t) => Err(unreadable(format!(
                "credentials of type {t:?} are not supported (use one of {})",
                GOOGLE_CREDENTIAL_TYPES.join(", ")
            ))),
            None => Err(unreadable("no string `type` field".into())),
        }
    }
}

impl EntraConfig {
    /// Check names and the authority host. Reads nothing.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field: &str, reason: &str| Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        };
        let host = url::Url::parse(&self.authority_host).map_err(|_| invalid("authority_host", "not a URL"))?;
        let loopback = host.host_str().is_some_and(is_loopback_host);
        if !(host.scheme() == "https" || (host.scheme() == "http" && loopback)) {
            return Err(invalid(
                "authority_host",
                "must be https:// (plain http:// only on a loopback host)",
            ));
        }
        if host.path() != "/" || host.query().is_some() || !host.username().is_empty() {
            return Err(invalid("authority_host", "must be a scheme and a host, without a path"));
        }
        if let Some(t) = &self.tenant
            && !valid_entra_name(t)
        {
            return Err(invalid(
                "tenant",
                "must be a tenant ID or domain (letters, digits, '-', '.')",
            ));
        }
        match &self.credential {
            EntraCredential::ClientSecret { client_id, secret } => {
                if self.tenant.is_none() {
                    return Err(invalid("tenant", "required for a client secret"));
                }
                if !valid_entra_name(client_id) {
                    return Err(invalid("client_id", "must be an application (client) ID"));
                }
                if secret.is_empty() {
                    return Err(invalid("client_secret", "must not be empty"));
                }
            }
            EntraCredential::WorkloadIdentity { client_id, .. } | EntraCredential::ManagedIdentity { client_id } => {
                if client_id.as_deref().is_some_and(|c| !valid_entra_name(c)) {
                    return Err(invalid("client_id", "must be a client ID"));
                }
            }
            EntraCredential::StaticTokenFile { path } => {
                if path.as_os_str().is_empty() {
                    return Err(invalid("token_file", "must not be empty"));
                }
            }
        }
        Ok(())
    }
}

/// A tenant or client ID: a GUID or a domain name.
fn valid_entra_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Per-request retry policy (exponential backoff with full jitter); serialized as a
/// registry's `retry` table.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts for one request, including the first, ≥ 1. 1 disables retries.
    /// Default 3 (the one-shot CLI: 6).
    pub attempts: u32,
    /// First backoff delay (`min_delay_ms`). Default 100 ms.
    #[serde(rename = "min_delay_ms", with = "units::millis")]
    pub min_delay: Duration,
    /// Largest backoff delay (`max_delay_ms`), ≥ the first. Default 2000 ms.
    #[serde(rename = "max_delay_ms", with = "units::millis")]
    pub max_delay: Duration,
    /// Cap on a server's `Retry-After` (`max_retry_after_secs`); longer waits are left to
    /// queue redelivery. Default 10 s.
    #[serde(rename = "max_retry_after_secs", with = "units::secs")]
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy::daemon()
    }
}

impl RetryPolicy {
    /// The daemon's policy: short in-process retries; long waits belong to the queue.
    pub fn daemon() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(10),
        }
    }
    /// The one-shot CLI's policy: there is no redelivery, so it waits longer.
    pub fn cli() -> RetryPolicy {
        RetryPolicy {
            attempts: 6,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Settings for one registry host: its `[registries."HOST"]` table, read straight into
/// this struct (each field's doc and default is the file's reference) and serialized back
/// by `check-config`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Host with optional port, exactly as it appears in references (the table's key).
    #[serde(skip)]
    pub host: String,
    /// Use plain HTTP (no TLS at all; nothing about certificates). Loopback hosts use
    /// plain HTTP whatever this says, unless `ca_file` is set. Default false.
    pub insecure: bool,
    /// A PEM bundle of CA certificates trusted for this host in addition to the system's
    /// roots (a registry with a private CA). Setting it means the host speaks HTTPS, on
    /// loopback too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Credentials, resolved by the loader from the `auth` table.
    /// Default anonymous.
    #[serde(skip_deserializing)]
    pub auth: Auth,
    /// The `auth` table as the file writes it; the loader resolves it into `auth` and
    /// leaves `None`.
    #[serde(rename = "auth", skip_serializing)]
    auth_table: Option<toml::Spanned<file::AuthTable>>,
    /// Maximum concurrent requests to this host (shared by all copies), ≥ 1. Default 16.
    pub max_in_flight: usize,
    /// Request rate limit for this host, > 0. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    /// Upload blobs in chunks of this many bytes (≥ 1024) instead of one monolithic PUT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<u64>,
    /// Per-request retry policy; absent keys keep the daemon's defaults.
    pub retry: RetryPolicy,
    /// TCP connect timeout (`connect_timeout_secs`), ≥ 1. Default 10.
    #[serde(rename = "connect_timeout_secs", with = "units::secs")]
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before the request fails
    /// (`read_timeout_secs`), ≥ 1. Default 60.
    #[serde(rename = "read_timeout_secs", with = "units::secs")]
    pub read_timeout: Duration,
    /// After this long with connection failures and no answer at all from the host, its
    /// connection failures are Systemic (the registry is marked unhealthy) rather than
    /// Transient (`unreachable_after_secs`), ≥ 1. Default 120.
    #[serde(rename = "unreachable_after_secs", with = "units::secs")]
    pub unreachable_after: Duration,
    /// Test only, and only in debug builds (a release build rejects the key `test_dial`):
    /// the `host:port` actually dialled, so that tests can stand a loopback registry in
    /// for `docker.io`.
    #[doc(hidden)]
    #[serde(rename = "test_dial", skip_serializing)]
    #[cfg_attr(not(debug_assertions), serde(skip_deserializing))]
    pub dial: Option<String>,
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig::new("")
    }
}

impl RegistryConfig {
    /// The `host[:port]` connections go to: Docker Hub's API host for `docker.io`
    /// (`registry-1.docker.io`), else the host itself.
    pub fn dial_host(&self) -> &str {
        if let Some(d) = &self.dial {
            return d;
        }
        if self.host == "docker.io" || self.host == "index.docker.io" {
            "registry-1.docker.io"
        } else {
            &self.host
        }
    }

    /// Defaults for `host`.
    pub fn new(host: impl Into<String>) -> RegistryConfig {
        RegistryConfig {
            host: host.into(),
            insecure: false,
            ca_file: None,
            auth: Auth::Anonymous,
            max_in_flight: 16,
            requests_per_second: None,
            chunk_size: None,
            retry: RetryPolicy::daemon(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            unreachable_after: Duration::from_secs(120),
            dial: None,
            auth_table: None,
        }
    }

    /// Check ranges; called before anything connects. An error's field is the setting's
    /// path in the file (`registries."HOST".retry.min_delay_ms`).
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field: &str, reason: &str| Error::Invalid {
            field: format!("registries.{}.{field}", key_path(&self.host)),
            reason: reason.into(),
        };
        if self.max_in_flight == 0 {
            return Err(invalid("max_in_flight", "must be at least 1"));
        }
        if let Some(r) = self.requests_per_second
            && !(r.is_finite() && r > 0.0)
        {
            return Err(invalid("requests_per_second", "must be a positive number"));
        }
        if let Some(c) = self.chunk_size
            && c < 1024
        {
            return Err(invalid("chunk_size", "must be at least 1024 bytes"));
        }
        if self.retry.attempts == 0 {
            return Err(invalid("retry.attempts", "must be at least 1"));
        }
        if self.retry.min_delay > self.retry.max_delay {
            return Err(invalid("retry.min_delay_ms", "must not exceed retry.max_delay_ms"));
        }
        for (key, d) in [
            ("connect_timeout_secs", self.connect_timeout),
            ("read_timeout_secs", self.read_timeout),
            ("unreachable_after_secs", self.unreachable_after),
        ] {
            if d < Duration::from_secs(1) {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.insecure && self.ca_file.is_some() {
            return Err(invalid("ca_file", "needs TLS, but insecure = true means plain HTTP"));
        }
        Ok(())
    }

    /// The certificates of `ca_file` (none without one); an error names the file and says
    /// what is wrong with it.
    pub fn ca_certificates(&self) -> Result<Vec<reqwest::Certificate>, String> {
        let Some(path) = &self.ca_file else {
            return Ok(Vec::new());
        };
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        Ok(certs)
    }

    /// The URL scheme to use: HTTPS unless insecure or loopback (a `ca_file` means HTTPS).
    pub fn scheme(&self) -> &'static str {
        if self.ca_file.is_none() && (self.insecure || is_loopback_host(self.dial_host())) {
            "http"
        } else {
            "https"
        }
    }
}

/// A key as written in a field path: bare when TOML allows it, quoted otherwise.
pub(crate) fn key_path(key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { key.to_owned() } else { format!("{key:?}") }
}

/// Is `host` (with optional port) a loopback name or address?
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        let auth = Auth::Basic {
            username: "u".into(),
            password: s,
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
    }

    #[test]
    fn loopback_detection() {
        for h in ["127.0.0.1:5000", "localhost", "localhost:80", "[::1]:5000", "127.1.2.3"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["registry.example.com", "10.0.0.1:5000", "example.localhost.com"] {
            assert!(!is_loopback_host(h), "{h}");
        }
        assert_eq!(RegistryConfig::new("reg.example").scheme(), "https");
        assert_eq!(RegistryConfig::new("127.0.0.1:1").scheme(), "http");
    }

    #[test]
    fn validation_catches_nonsense() {
        let mut c = RegistryConfig::new("r");
        assert!(c.validate().is_ok());
        c.max_in_flight = 0;
        assert!(c.validate().is_err());
        let mut c = RegistryConfig::new("r");
        c.requests_per_second = Some(0.0);
        assert!(c.validate().is_err());
        let mut c = RegistryConfig::new("r");
        c.retry.min_delay = Duration::from_secs(5);
        assert!(c.validate().unwrap_err().to_string().contains("retry.min_delay"));
    }

    #[test]
    fn secret_from_file_and_env_errors_name_the_source_not_the_value() {
        let dir = std::env::temp_dir().join(format!("regrelay-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        assert_eq!(SecretSource::File(f.clone()).resolve("x").unwrap().expose(), "s3cret");
        let err = SecretSource::File(dir.join("missing"))
            .resolve("registry password")
            .unwrap_err();
        assert!(err.to_string().contains("missing"));
        let err = SecretSource::Env("REGRELAY_TEST_SURELY_UNSET_VAR".into())
            .resolve("x")
            .unwrap_err();
        assert!(err.to_string().contains("REGRELAY_TEST_SURELY_UNSET_VAR"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn docker_hub_is_dialled_at_its_api_host_issue_14() {
        assert_eq!(RegistryConfig::new("docker.io").dial_host(), "registry-1.docker.io");
        assert_eq!(RegistryConfig::new("docker.io").scheme(), "https");
        assert_eq!(RegistryConfig::new("ghcr.io").dial_host(), "ghcr.io");
        let mut c = RegistryConfig::new("docker.io");
        c.dial = Some("127.0.0.1:5000".into());
        assert_eq!((c.dial_host(), c.scheme()), ("127.0.0.1:5000", "http"));
    }
}
