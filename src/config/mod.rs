//! Typed configuration values shared by every module: registry settings, credentials
//! sources, retry policy and the [`Secret`] wrapper.
//!
//! Role: hold validated settings. Everything here is constructed by `main` (from CLI
//! flags today, from the TOML file in `regrelay run`) and passed down; no other module
//! reads environment variables or files named by the operator.
//!
//! Must never: print a secret. [`Secret`] has no `Display`, and its `Debug` is redacted,
//! so a `{:?}` of any config value is safe to log.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

mod daemon;
mod file;

pub use daemon::*;
pub use file::{LoadError, load, load_str, render};

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

/// How regrelay authenticates to one registry.
#[derive(Debug, Clone, Default)]
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
    IdentityToken(Secret),
    /// A docker `config.json`: `auths`, `credHelpers` and `credsStore` are consulted for
    /// this registry's host when it is first used.
    DockerConfig {
        /// Path of the file.
        path: PathBuf,
    },
}

/// Per-request retry policy (exponential backoff with full jitter).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts for one request, including the first. 1 disables retries.
    pub attempts: u32,
    /// First backoff delay.
    pub min_delay: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
    /// Cap on a server's `Retry-After`; longer waits are left to queue redelivery.
    pub max_retry_after: Duration,
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

/// Settings for one registry host.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Host with optional port, exactly as it appears in references.
    pub host: String,
    /// Use plain HTTP. Loopback hosts use plain HTTP whatever this says.
    pub insecure: bool,
    /// Credentials.
    pub auth: Auth,
    /// Maximum concurrent requests to this host (shared by all copies).
    pub max_in_flight: usize,
    /// Optional request rate limit for this host.
    pub requests_per_second: Option<f64>,
    /// Upload blobs in chunks of this size instead of one monolithic PUT.
    pub chunk_size: Option<u64>,
    /// Per-request retry policy.
    pub retry: RetryPolicy,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response before the request fails.
    pub read_timeout: Duration,
    /// After this long with connection failures and no answer at all from the host, its
    /// connection failures are Systemic (the daemon pauses) rather than Transient.
    pub unreachable_after: Duration,
}

impl RegistryConfig {
    /// Defaults for `host`.
    pub fn new(host: impl Into<String>) -> RegistryConfig {
        RegistryConfig {
            host: host.into(),
            insecure: false,
            auth: Auth::Anonymous,
            max_in_flight: 16,
            requests_per_second: None,
            chunk_size: None,
            retry: RetryPolicy::daemon(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            unreachable_after: Duration::from_secs(120),
        }
    }

    /// Check ranges; called before anything connects.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field: &str, reason: &str| Error::Invalid {
            field: format!("registries.{}.{field}", self.host),
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
            return Err(invalid("retry.min_delay", "must not exceed retry.max_delay"));
        }
        Ok(())
    }

    /// The URL scheme to use: HTTPS unless insecure or loopback.
    pub fn scheme(&self) -> &'static str {
        if self.insecure || is_loopback_host(&self.host) {
            "http"
        } else {
            "https"
        }
    }
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
}
