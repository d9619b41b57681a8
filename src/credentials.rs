//! Cloud token providers: Google OAuth2 access tokens (Application Default Credentials,
//! through `google-cloud-auth`) and Microsoft Entra ID access tokens (through
//! `azure_identity`), cached and fetched again before they expire.
//!
//! Role: answer "a current token, please" for the registry client (Artifact Registry /
//! Container Registry, ACR) and the Service Bus source. What the token is then used for
//! (a Basic password, an ACR exchange, a bearer header) is the caller's business.
//!
//! Must never: log, format or return a token, a secret or a key, nor a token endpoint's
//! response body; read environment variables itself. The two libraries do read their
//! documented ones when the config leaves a setting open (`GOOGLE_APPLICATION_CREDENTIALS`
//! and gcloud's well-known file, then the metadata server; `AZURE_CLIENT_ID`,
//! `AZURE_TENANT_ID`, `AZURE_FEDERATED_TOKEN_FILE`, `IDENTITY_ENDPOINT`): that discovery is
//! what ADC and AKS workload identity are, so it is accepted here as library behaviour.
//!
//! Invariants: a token is cached per scope until five minutes before it expires (halfway
//! through shorter lifetimes); `refresh`/`invalidate` drop the library's credential object
//! too, so the next call really asks the identity provider again (both libraries cache
//! internally and would otherwise hand back the refused token). Imports only
//! `crate::config`.
//!
//! Why `azure_identity` (1.0) rather than hand-written Entra requests: it is Microsoft's
//! own, GA implementation of workload identity (token-file rereads), managed identity
//! (IMDS and App Service, with their retry rules) and client secrets, and it runs on the
//! same reqwest 0.13 / rustls / hyper stack as regrelay (with default features off: no
//! openssl, no gzip). Measured on this 2-core machine: about 13 s more for a clean debug
//! build (azure_core, azure_identity, typespec*), 27 s with its default features, which
//! also rebuild reqwest with gzip/deflate. Its one obstacle for tests, an HTTPS-only
//! authority host, is met through its own transport hook: `LoopbackHttp` speaks plain
//! HTTP to loopback hosts only, the rule the registry client applies to loopback
//! registries, so the client-secret and workload-identity paths run end to end against a
//! local token server in `tests/cloud_auth.rs`. Managed identity cannot be (IMDS is a
//! fixed link-local address).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::credentials::TokenCredential;
use azure_core::http::{AsyncRawResponse, ClientOptions, ExponentialRetryOptions, HttpClient, Request, RetryOptions};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use google_cloud_auth::credentials::{
    AccessTokenCredentials, external_account, impersonated, service_account, user_account,
};
use tokio::time::Instant;

use crate::config::{self, EntraConfig, EntraCredential, GOOGLE_CLOUD_PLATFORM_SCOPE, GoogleAuth, Secret};

/// Fetch a token again this long before it expires.
const REFRESH_BEFORE: Duration = Duration::from_secs(300);
/// How long a token from a static file that is not a JWT is trusted before a reread.
const STATIC_REREAD: Duration = Duration::from_secs(60);
const GOOGLE: &str = "google";
const ENTRA: &str = "entra";

/// Errors getting a cloud token. Texts name the provider and the step, never a token.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The identity provider could not be reached or failed in a way worth retrying.
    #[error("getting a {provider} token failed: {detail}")]
    Unavailable {
        /// `google` or `entra`.
        provider: &'static str,
        /// What happened.
        detail: String,
    },
    /// The identity provider refused the credential, or the credential is unusable: an
    /// operator has to act.
    #[error("the {provider} credential was refused or is unusable: {detail}")]
    Refused {
        /// `google` or `entra`.
        provider: &'static str,
        /// What happened.
        detail: String,
    },
}

impl Error {
    /// Worth retrying as is?
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// A token and when to fetch the next one.
#[derive(Clone)]
struct Cached {
    token: Secret,
    refresh_at: Instant,
}

/// When to fetch again a token valid for `lifetime` from now: [`REFRESH_BEFORE`] early,
/// or halfway for shorter lifetimes.
pub(crate) fn refresh_at(lifetime: Duration) -> Instant {
    let margin = (lifetime / 2).min(REFRESH_BEFORE);
    Instant::now() + lifetime.saturating_sub(margin)
}

/// Time left before the `exp` claim of a JWT (zero when past), `None` when `token` is not
/// a JWT with a numeric `exp`. The signature is not checked: this only schedules refreshes.
pub(crate) fn jwt_lifetime(token: &str) -> Option<Duration> {
    let mut parts = token.split('.');
    let (_, claims, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = B64URL.decode(claims.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    Some(Duration::from_secs_f64((exp - now).max(0.0)))
}

// ---------------------------------------------------------------------------------------
// Google
// ---------------------------------------------------------------------------------------

/// Google OAuth2 access tokens for scope `cloud-platform`, from Application Default
/// Credentials or a configured credentials file. `google-cloud-auth` caches the token and
/// refreshes it in the background before it expires.
pub struct GoogleTokens {
    cfg: GoogleAuth,
    /// Built on first use (building spawns the library's refresh task on the runtime).
    creds: Mutex<Option<AccessTokenCredentials>>,
}

impl std::fmt::Debug for GoogleTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleTokens")
            .field("credentials_file", &self.cfg.credentials_file)
            .finish_non_exhaustive()
    }
}

impl GoogleTokens {
    /// Check the settings (a credentials file must be readable JSON of a supported type).
    /// Nothing is contacted until [`GoogleTokens::token`].
    pub fn from_config(cfg: &GoogleAuth) -> Result<GoogleTokens, config::Error> {
        cfg.validate()?;
        Ok(GoogleTokens {
            cfg: cfg.clone(),
            creds: Mutex::new(None),
        })
    }

    /// A current access token.
    pub async fn token(&self) -> Result<Secret, Error> {
        let creds = self.credentials()?;
        match creds.access_token().await {
            Ok(t) if !t.token.is_empty() => Ok(Secret::new(t.token)),
            Ok(_) => Err(Error::Refused {
                provider: GOOGLE,
                detail: "the credentials produced an empty token".into(),
            }),
            Err(e) => {
                // A permanent error stays in the library's cache for good: start afresh
                // next time, so that a fixed credential is picked up without a restart.
                if !e.is_transient() {
                    self.refresh();
                }
                Err(google_error(&e))
            }
        }
    }

    /// Forget the current credentials and token: the next [`GoogleTokens::token`] reads
    /// the credentials again and asks for a new token (after a registry refused one).
    pub fn refresh(&self) {
        *self.creds.lock().expect("google credentials lock") = None;
    }

    fn credentials(&self) -> Result<AccessTokenCredentials, Error> {
        let mut slot = self.creds.lock().expect("google credentials lock");
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let built = build_google(&self.cfg)?;
        *slot = Some(built.clone());
        Ok(built)
    }
}

fn build_google(cfg: &GoogleAuth) -> Result<AccessTokenCredentials, Error> {
    let scopes = [GOOGLE_CLOUD_PLATFORM_SCOPE];
    let refused = |detail: String| Error::Refused {
        provider: GOOGLE,
        detail,
    };
    let built = match &cfg.credentials_file {
        // ADC discovery: GOOGLE_APPLICATION_CREDENTIALS, gcloud's file, the metadata server.
        None => google_cloud_auth::credentials::Builder::default()
            .with_scopes(scopes)
            .build_access_token_credentials(),
        Some(path) => {
            // Read again at each build, so a rotated key file is picked up on refresh.
            cfg.validate().map_err(|e| refused(e.to_string()))?;
            let text = std::fs::read_to_string(path).map_err(|e| refused(format!("{}: {e}", path.display())))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|_| refused(format!("{} is not JSON", path.display())))?;
            match json.get("type").and_then(serde_json::Value::as_str).unwrap_or_default() {
                "service_account" => service_account::Builder::new(json)
                    .with_access_specifier(service_account::AccessSpecifier::from_scopes(scopes))
                    .build_access_token_credentials(),
                "authorized_user" => user_account::Builder::new(json)
                    .with_scopes(scopes)
                    .build_access_token_credentials(),
                "external_account" => external_account::Builder::new(json)
                    .with_scopes(scopes)
                    .build_access_token_credentials(),
                "impersonated_service_account" => impersonated::Builder::new(json)
                    .with_scopes(scopes)
                    .build_access_token_credentials(),
                other => return Err(refused(format!("credentials of type {other:?} are not supported"))),
            }
        }
    };
    // The builder's own text may quote parts of the file: say only what kind of problem.
    built.map_err(|e| {
        let what = if e.is_missing_field() {
            "a required field is missing"
        } else if e.is_parsing() {
            "the file does not match its type"
        } else if e.is_not_supported() || e.is_unknown_type() {
            "that kind of credentials is not supported"
        } else {
            "the credentials could not be loaded"
        };
        refused(format!("cannot build Google credentials: {what}"))
    })
}

/// Classify a google-cloud-auth error. Its text may carry the token endpoint's whole
/// answer, so an HTTP failure is reported by its status only.
fn google_error(e: &google_cloud_auth::errors::CredentialsError) -> Error {
    let mut status = None;
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<reqwest::Error>() {
            status = status.or(r.status().map(|s| s.as_u16()));
        }
        src = s.source();
    }
    let detail = match status {
        Some(s) => format!("the token endpoint answered HTTP {s}"),
        None => capped(&e.to_string()),
    };
    if e.is_transient() {
        Error::Unavailable {
            provider: GOOGLE,
            detail,
        }
    } else {
        Error::Refused {
            provider: GOOGLE,
            detail,
        }
    }
}

/// The first line of `s`, at most 300 characters.
fn capped(s: &str) -> String {
    s.lines().next().unwrap_or_default().chars().take(300).collect()
}

// ---------------------------------------------------------------------------------------
// Microsoft Entra ID
// ---------------------------------------------------------------------------------------

/// Microsoft Entra ID access tokens, cached per scope and fetched again five minutes
/// before they expire. One value serves every scope (ACR, Service Bus, ...).
pub struct EntraTokens {
    cfg: EntraConfig,
    /// The `azure_identity` credential, built on first use (building may read files).
    credential: Mutex<Option<Arc<dyn TokenCredential>>>,
    cache: Mutex<HashMap<String, Cached>>,
    /// One fetch at a time, so concurrent callers share a fresh token.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for EntraTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraTokens")
            .field("tenant", &self.cfg.tenant)
            .field("authority_host", &self.cfg.authority_host)
            .finish_non_exhaustive()
    }
}

impl EntraTokens {
    /// Check the settings. Nothing is read or contacted until [`EntraTokens::token`].
    pub fn from_config(cfg: &EntraConfig) -> Result<EntraTokens, config::Error> {
        cfg.validate()?;
        Ok(EntraTokens {
            cfg: cfg.clone(),
            credential: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// A current access token for `scope` (e.g. `https://servicebus.azure.net/.default`).
    pub async fn token(&self, scope: &str) -> Result<Secret, Error> {
        if let Some(t) = self.cached(scope) {
            return Ok(t);
        }
        let _one = self.fetching.lock().await;
        if let Some(t) = self.cached(scope) {
            return Ok(t);
        }
        let (token, lifetime) = match &self.cfg.credential {
            EntraCredential::StaticTokenFile { path } => read_static(path).await?,
            _ => self.fetch_azure(scope).await?,
        };
        self.cache.lock().expect("entra cache lock").insert(
            scope.to_owned(),
            Cached {
                token: token.clone(),
                refresh_at: refresh_at(lifetime),
            },
        );
        Ok(token)
    }

    /// Forget the token for `scope` (it was refused): the next [`EntraTokens::token`]
    /// asks the identity provider, or rereads the file, again.
    pub fn invalidate(&self, scope: &str) {
        self.cache.lock().expect("entra cache lock").remove(scope);
        // The library caches per scope as well; a new credential object starts empty.
        *self.credential.lock().expect("entra credential lock") = None;
    }

    fn cached(&self, scope: &str) -> Option<Secret> {
        let cache = self.cache.lock().expect("entra cache lock");
        cache
            .get(scope)
            .filter(|c| c.refresh_at > Instant::now())
            .map(|c| c.token.clone())
    }

    async fn fetch_azure(&self, scope: &str) -> Result<(Secret, Duration), Error> {
        let credential = {
            let mut slot = self.credential.lock().expect("entra credential lock");
            match slot.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let built = build_azure(&self.cfg).map_err(|e| entra_error(&e))?;
                    *slot = Some(built.clone());
                    built
                }
            }
        };
        let t = credential
            .get_token(&[scope], None)
            .await
            .map_err(|e| entra_error(&e))?;
        let left = (t.expires_on - azure_core::time::OffsetDateTime::now_utc()).whole_seconds();
        let lifetime = Duration::from_secs(u64::try_from(left).unwrap_or(0));
        Ok((Secret::new(t.token.secret()), lifetime))
    }
}

/// A token from a file kept current by something else; a JWT's `exp` says how long to
/// trust it, anything else is reread after [`STATIC_REREAD`].
async fn read_static(path: &Path) -> Result<(Secret, Duration), Error> {
    let refused = |detail: String| Error::Refused {
        provider: ENTRA,
        detail,
    };
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| refused(format!("reading {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(refused(format!("{} is empty", path.display())));
    }
    let lifetime = match jwt_lifetime(token) {
        Some(l) if l.is_zero() => return Err(refused(format!("the token in {} has expired", path.display()))),
        Some(l) => l,
        None => STATIC_REREAD,
    };
    Ok((Secret::new(token), lifetime))
}

/// The `azure_identity` credential for `cfg`.
fn build_azure(cfg: &EntraConfig) -> azure_core::Result<Arc<dyn TokenCredential>> {
    let client_options = || {
        let mut cloud = azure_core::cloud::CustomConfiguration::default();
        cloud.authority_host = https_authority(&cfg.authority_host);
        ClientOptions {
            transport: Some(azure_core::http::Transport::new(Arc::new(LoopbackHttp::new()))),
            cloud: Some(Arc::new(cloud.into())),
            // STYLE.md 3: a few quick in-process retries; longer waits belong to the queue.
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                initial_delay: azure_core::time::Duration::milliseconds(100),
                max_retries: 2,
                max_total_elapsed: azure_core::time::Duration::seconds(10),
                max_delay: azure_core::time::Duration::seconds(2),
            }),
            ..ClientOptions::default()
        }
    };
    Ok(match &cfg.credential {
        EntraCredential::WorkloadIdentity { client_id, token_file } => {
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: client_options(),
                },
                client_id: client_id.clone(),
                tenant_id: cfg.tenant.clone(),
                token_file_path: token_file.clone(),
            }))?
        }
        EntraCredential::ManagedIdentity { client_id } => {
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                client_options: client_options(),
            }))?
        }
        EntraCredential::ClientSecret { client_id, secret } => ClientSecretCredential::new(
            cfg.tenant.as_deref().unwrap_or_default(),
            client_id.clone(),
            secret.expose().to_owned().into(),
            Some(ClientSecretCredentialOptions {
                client_options: client_options(),
            }),
        )?,
        EntraCredential::StaticTokenFile { .. } => {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "a static token file needs no azure_identity credential",
            ));
        }
    })
}

/// `azure_identity` insists on an `https://` authority host; a loopback `http://` host
/// (tests) is handed over as `https://` and [`LoopbackHttp`] sends it plain again.
fn https_authority(host: &str) -> String {
    match url::Url::parse(host) {
        Ok(mut u) if u.scheme() == "http" => {
            let _ = u.set_scheme("https");
            u.as_str().trim_end_matches('/').to_owned()
        }
        _ => host.trim_end_matches('/').to_owned(),
    }
}

/// The `azure_core` transport: reqwest, except that requests to a loopback host go over
/// plain HTTP (the registry client's rule for loopback hosts; validation refuses
/// `http://` authority hosts anywhere else).
#[derive(Debug)]
struct LoopbackHttp(reqwest::Client);

impl LoopbackHttp {
    fn new() -> LoopbackHttp {
        let client = reqwest::Client::builder()
            .user_agent(concat!("regrelay/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(30))
            // Token endpoints do not redirect; following one could leak the form.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        LoopbackHttp(client)
    }
}

#[async_trait::async_trait]
impl HttpClient for LoopbackHttp {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let url = request.url();
        if url.scheme() == "https" && url.host_str().is_some_and(config::is_loopback_host) {
            let mut plain = request.clone();
            let _ = plain.url_mut().set_scheme("http");
            return self.0.execute_request(&plain).await;
        }
        self.0.execute_request(request).await
    }
}

/// Classify an `azure_core` error by the HTTP status or transport failure in its chain:
/// 408, 429 and 5xx or no answer at all are worth retrying; anything else (400/401 from
/// Entra: a wrong secret, an unknown client, a federation mismatch) needs an operator.
fn entra_error(e: &azure_core::Error) -> Error {
    use azure_core::error::ErrorKind;
    let mut status: Option<u16> = None;
    let mut no_answer = false;
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(a) = s.downcast_ref::<azure_core::Error>() {
            match a.kind() {
                ErrorKind::HttpResponse { status: st, .. } => status = status.or(Some(u16::from(*st))),
                ErrorKind::Connection | ErrorKind::Io => no_answer = true,
                _ => {}
            }
        }
        src = s.source();
    }
    // The library's message is Entra's short description (`AADSTS7000215: Invalid
    // client secret provided...`), useful to an operator and never a secret.
    let message = capped(&e.to_string());
    let detail = match status {
        Some(s) => format!("HTTP {s}: {message}"),
        None => message,
    };
    let transient = match status {
        Some(s) => matches!(s, 408 | 429 | 500..=599),
        None => no_answer,
    };
    if transient {
        Error::Unavailable {
            provider: ENTRA,
            detail,
        }
    } else {
        Error::Refused {
            provider: ENTRA,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "{}.{}.sig",
            B64URL.encode(br#"{"alg":"none"}"#),
            B64URL.encode(claims.to_string())
        )
    }

    fn unix_now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    #[test]
    fn jwt_lifetimes_come_from_exp() {
        let l = jwt_lifetime(&jwt(serde_json::json!({"exp": unix_now() + 3600}))).unwrap();
        assert!(l > Duration::from_secs(3590) && l <= Duration::from_secs(3600), "{l:?}");
        assert_eq!(
            jwt_lifetime(&jwt(serde_json::json!({"exp": unix_now() - 10}))),
            Some(Duration::ZERO)
        );
        assert_eq!(jwt_lifetime(&jwt(serde_json::json!({"sub": "x"}))), None);
        assert_eq!(jwt_lifetime("opaque-token"), None);
        assert_eq!(jwt_lifetime("a.%%%.c"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn refresh_is_five_minutes_early_or_halfway() {
        let now = Instant::now();
        assert_eq!(refresh_at(Duration::from_secs(3600)) - now, Duration::from_secs(3300));
        assert_eq!(refresh_at(Duration::from_secs(60)) - now, Duration::from_secs(30));
        assert_eq!(refresh_at(Duration::ZERO) - now, Duration::ZERO);
    }

    fn static_file(path: &Path) -> EntraConfig {
        EntraConfig {
            tenant: None,
            credential: EntraCredential::StaticTokenFile { path: path.into() },
            authority_host: config::ENTRA_AUTHORITY_HOST.into(),
        }
    }

    #[tokio::test]
    async fn static_token_files_are_cached_and_reread_after_invalidate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "first-token\n").unwrap();
        let e = EntraTokens::from_config(&static_file(&p)).unwrap();
        assert_eq!(e.token("s").await.unwrap().expose(), "first-token");
        std::fs::write(&p, "second-token").unwrap();
        assert_eq!(e.token("s").await.unwrap().expose(), "first-token", "cached");
        e.invalidate("s");
        assert_eq!(e.token("s").await.unwrap().expose(), "second-token");

        std::fs::write(&p, jwt(serde_json::json!({"exp": unix_now() - 5}))).unwrap();
        e.invalidate("s");
        let err = e.token("s").await.unwrap_err();
        assert!(!err.is_transient() && err.to_string().contains("expired"), "{err}");
        std::fs::write(&p, "  \n").unwrap();
        let err = e.token("s").await.unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        std::fs::remove_file(&p).unwrap();
        assert!(!e.token("s").await.unwrap_err().is_transient());
    }

    #[test]
    fn entra_settings_are_checked() {
        let mut c = static_file(Path::new("/t"));
        c.authority_host = "http://login.example".into();
        assert!(
            EntraTokens::from_config(&c)
                .unwrap_err()
                .to_string()
                .contains("authority_host")
        );
        c.authority_host = "http://127.0.0.1:9".into();
        assert!(EntraTokens::from_config(&c).is_ok(), "plain http on loopback (tests)");
        c.authority_host = "https://login.example/tenant".into();
        assert!(EntraTokens::from_config(&c).is_err());
        let c = EntraConfig {
            tenant: None,
            credential: EntraCredential::ClientSecret {
                client_id: "app".into(),
                secret: Secret::new("s3cret"),
            },
            authority_host: config::ENTRA_AUTHORITY_HOST.into(),
        };
        let err = EntraTokens::from_config(&c).unwrap_err().to_string();
        assert!(err.contains("tenant") && !err.contains("s3cret"), "{err}");
        assert_eq!(https_authority("http://127.0.0.1:9/"), "https://127.0.0.1:9");
        assert_eq!(
            https_authority("https://login.microsoftonline.us/"),
            "https://login.microsoftonline.us"
        );
    }

    #[test]
    fn entra_errors_are_classified_by_status() {
        use azure_core::error::ErrorKind;
        let http = |code: u16| {
            azure_core::Error::with_message(
                ErrorKind::HttpResponse {
                    status: code.into(),
                    error_code: None,
                    raw_response: None,
                },
                "AADSTS7000215: Invalid client secret provided.",
            )
        };
        let refused = entra_error(&http(401));
        assert!(!refused.is_transient());
        assert!(refused.to_string().contains("HTTP 401: AADSTS7000215"), "{refused}");
        assert!(entra_error(&http(503)).is_transient());
        assert!(entra_error(&http(429)).is_transient());
        assert!(!entra_error(&http(400)).is_transient());
        // Wrapped, as azure_identity does.
        let wrapped = azure_core::Error::with_error(ErrorKind::Credential, http(500), "authentication failed");
        assert!(entra_error(&wrapped).is_transient());
        let conn = azure_core::Error::with_message(ErrorKind::Connection, "refused");
        assert!(entra_error(&conn).is_transient());
        let other = azure_core::Error::with_message(ErrorKind::Credential, "no token file");
        assert!(!entra_error(&other).is_transient());
    }

    #[test]
    fn google_files_are_checked_without_echoing_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key.json");
        std::fs::write(&p, r#"{"type": "gdch_service_account", "private_key": "KEY-MATERIAL"}"#).unwrap();
        let cfg = GoogleAuth {
            credentials_file: Some(p.clone()),
        };
        let err = GoogleTokens::from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("not supported") && !err.contains("KEY-MATERIAL"), "{err}");
        std::fs::write(&p, "KEY-MATERIAL not json").unwrap();
        let err = GoogleTokens::from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("not JSON") && !err.contains("KEY-MATERIAL"), "{err}");
        assert!(GoogleTokens::from_config(&GoogleAuth::default()).is_ok());
    }

    #[tokio::test]
    async fn a_broken_google_file_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("user.json");
        std::fs::write(
            &p,
            r#"{"type": "authorized_user", "client_id": 7, "refresh_token": "RT-SECRET"}"#,
        )
        .unwrap();
        let g = GoogleTokens::from_config(&GoogleAuth {
            credentials_file: Some(p),
        })
        .unwrap();
        let err = g.token().await.unwrap_err();
        assert!(!err.is_transient());
        assert!(!err.to_string().contains("RT-SECRET"), "{err}");
    }
}
