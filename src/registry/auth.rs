//! Registry authentication: resolving configured credentials (including docker
//! `config.json` and credential helpers), parsing `WWW-Authenticate` challenges, and a
//! bearer-token cache keyed by scope that honours expiry.
//!
//! Role: answer "which `Authorization` header goes on this request?" and "a 401 came
//! back: what now?". The request pipeline in `registry/mod.rs` calls it.
//!
//! Must never: log, format or return a credential or token. Tokens and passwords live
//! in [`Secret`]s; error messages name the host and the step, never the value.
//!
//! Cloud identities (Google access tokens, ACR's Entra exchange) live in `auth/cloud.rs`;
//! they plug into the same challenge handling and token cache.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::config::{Auth, Secret};

mod cloud;
mod docker_config;

use docker_config::from_docker_config;

/// Credentials after resolution of docker config files and helpers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// None.
    Anonymous,
    /// User name and password.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: Secret,
    },
    /// OAuth2 refresh token for the token endpoint.
    IdentityToken(Secret),
    /// A bearer token sent to the registry as is (docker's `registrytoken`).
    RegistryToken(Secret),
    /// Google access tokens, fetched per token request and sent as the Basic password
    /// of `oauth2accesstoken` (so a rotated token is always the current one).
    GoogleAccessToken,
    /// An Entra ID token exchanged for an ACR refresh token (OAuth2 refresh-token form).
    AcrEntra,
}

/// What a `WWW-Authenticate` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP Basic.
    Basic,
    /// Docker/OCI token flow.
    Bearer {
        /// Token endpoint URL.
        realm: String,
        /// Service name to request tokens for.
        service: Option<String>,
        /// Scope the registry asked for, if any.
        scope: Option<String>,
    },
}

/// Parse a `WWW-Authenticate` value. Unknown schemes give `None`.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let params = parse_params(params);
            let realm = params.get("realm")?.clone();
            Some(Challenge::Bearer {
                realm,
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            })
        }
        _ => None,
    }
}

/// Parse `k="v",k2=v2` (quoted strings may contain commas).
fn parse_params(s: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => val.push(c),
                }
            }
            (val, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.insert(key, val);
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Actions on one repository, e.g. `repository:team/app:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoScope {
    /// Repository path.
    pub repository: String,
    /// Whether push is needed (pull is always included).
    pub push: bool,
    /// Whether delete is needed (distribution's token scope action `delete`).
    pub delete: bool,
    /// The registry-wide catalog (`registry:catalog:*`) instead of a repository.
    pub catalog: bool,
}

impl RepoScope {
    /// Pull-only access to `repository`.
    pub fn pull(repository: &str) -> RepoScope {
        RepoScope {
            repository: repository.into(),
            push: false,
            delete: false,
            catalog: false,
        }
    }
    /// The repository catalog (`GET /v2/_catalog`): scope `registry:catalog:*`.
    pub fn catalog() -> RepoScope {
        RepoScope {
            repository: String::new(),
            push: false,
            delete: false,
            catalog: true,
        }
    }
    /// Pull and push access to `repository`.
    pub fn push(repository: &str) -> RepoScope {
        RepoScope {
            repository: repository.into(),
            push: true,
            delete: false,
            catalog: false,
        }
    }
    /// Pull and delete access to `repository` (manifest deletes).
    pub fn delete(repository: &str) -> RepoScope {
        RepoScope {
            repository: repository.into(),
            push: false,
            delete: true,
            catalog: false,
        }
    }
    /// The scope string for a token request.
    pub fn as_scope(&self) -> String {
        if self.catalog {
            return "registry:catalog:*".into();
        }
        let actions = match (self.push, self.delete) {
            (false, false) => "pull",
            (true, false) => "pull,push",
            (false, true) => "pull,delete",
            (true, true) => "pull,push,delete",
        };
        format!("repository:{}:{actions}", self.repository)
    }
}

/// The scopes one request needs; usually one repository, two for a cross-repo mount.
pub type Scopes = Vec<RepoScope>;

fn scope_key(scopes: &[RepoScope]) -> String {
    let mut s: Vec<String> = scopes.iter().map(RepoScope::as_scope).collect();
    s.sort();
    s.join(" ")
}

/// Errors from the authentication steps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token endpoint refused our credentials.
    #[error("token request to {realm_host} for {host} was refused with HTTP {status}")]
    TokenRefused {
        /// Registry host.
        host: String,
        /// Host of the token endpoint.
        realm_host: String,
        /// HTTP status.
        status: u16,
    },
    /// The token endpoint failed in a way worth retrying.
    #[error("token request to {realm_host} for {host} failed: {detail}")]
    TokenUnavailable {
        /// Registry host.
        host: String,
        /// Host of the token endpoint.
        realm_host: String,
        /// What happened (no secrets).
        detail: String,
        /// HTTP status, if one came back.
        status: Option<u16>,
    },
    /// The token endpoint answered something we cannot use.
    #[error("token endpoint {realm_host} for {host} gave an unusable answer: {detail}")]
    TokenInvalid {
        /// Registry host.
        host: String,
        /// Host of the token endpoint.
        realm_host: String,
        /// What was wrong.
        detail: String,
    },
    /// Credentials could not be resolved (config file, helper).
    #[error("cannot resolve credentials for {host}: {detail}")]
    Credentials {
        /// Registry host.
        host: String,
        /// What failed (never the secret).
        detail: String,
    },
}

#[derive(Clone)]
struct CachedToken {
    token: Secret,
    refresh_at: Instant,
}

/// Per-registry authenticator: resolved credentials, the last challenge and a token
/// cache keyed by scope. Shared by all requests to the host.
pub struct Authenticator {
    host: String,
    auth: Auth,
    resolved: OnceCell<Credentials>,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, CachedToken>>,
    /// Google / Entra token sources, for those kinds only (built on first use).
    cloud: OnceCell<cloud::Cloud>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// Token endpoint response body.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Default token lifetime when the endpoint does not say (distribution token spec).
const DEFAULT_TOKEN_SECS: u64 = 60;

impl Authenticator {
    /// An authenticator for `host` using `auth`.
    pub fn new(host: &str, auth: Auth) -> Authenticator {
        Authenticator {
            host: host.into(),
            auth,
            resolved: OnceCell::new(),
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            cloud: OnceCell::new(),
        }
    }

    /// Resolved credentials (docker config and helpers are read once, on first use).
    pub async fn credentials(&self) -> Result<&Credentials, Error> {
        self.resolved
            .get_or_try_init(|| async {
                match &self.auth {
                    Auth::Anonymous => Ok(Credentials::Anonymous),
                    Auth::Basic { username, password } => Ok(Credentials::Basic {
                        username: username.clone(),
                        password: password.clone(),
                    }),
                    Auth::IdentityToken { token } => Ok(Credentials::IdentityToken(token.clone())),
                    Auth::DockerConfig { path } => from_docker_config(&self.host, path).await,
                    Auth::Google(_) => Ok(Credentials::GoogleAccessToken),
                    Auth::AcrEntra { .. } => Ok(Credentials::AcrEntra),
                }
            })
            .await
    }

    /// The `Authorization` value to send pre-emptively, if the host's challenge is known
    /// and a fresh token (or basic credentials) is at hand.
    pub async fn header_for(&self, scopes: &[RepoScope]) -> Result<Option<String>, Error> {
        let challenge = self.challenge.lock().expect("challenge lock").clone();
        let creds = self.credentials().await?;
        if let Credentials::RegistryToken(t) = creds {
            return Ok(Some(format!("Bearer {}", t.expose())));
        }
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) if *creds == Credentials::GoogleAccessToken => {
                Ok(basic_header(&self.google_basic().await?))
            }
            Some(Challenge::Basic) => Ok(basic_header(creds)),
            Some(Challenge::Bearer { .. }) => {
                let key = scope_key(scopes);
                let tokens = self.tokens.lock().expect("token lock");
                Ok(tokens
                    .get(&key)
                    .filter(|t| t.refresh_at > Instant::now())
                    .map(|t| format!("Bearer {}", t.token.expose())))
            }
        }
    }

    /// Handle a 401: remember the challenge and, for bearer, fetch a token for `scopes`.
    /// Returns false when there is nothing new to try (unknown scheme, or Basic with no
    /// credentials), so the caller reports the 401.
    pub async fn on_unauthorized(
        &self,
        client: &reqwest::Client,
        www_authenticate: Option<&str>,
        scopes: &[RepoScope],
    ) -> Result<bool, Error> {
        let Some(challenge) = www_authenticate.and_then(parse_challenge) else {
            return Ok(false);
        };
        *self.challenge.lock().expect("challenge lock") = Some(challenge.clone());
        let creds = self.credentials().await?.clone();
        match challenge {
            Challenge::Basic => Ok(creds == Credentials::GoogleAccessToken || basic_header(&creds).is_some()),
            Challenge::Bearer { realm, service, .. } => {
                let token = match creds {
                    Credentials::GoogleAccessToken | Credentials::AcrEntra => {
                        self.cloud_token(client, &realm, service.as_deref(), scopes).await?
                    }
                    _ => {
                        self.fetch_token(client, &creds, &realm, service.as_deref(), scopes)
                            .await?
                    }
                };
                self.tokens.lock().expect("token lock").insert(scope_key(scopes), token);
                Ok(true)
            }
        }
    }

    /// Forget a cached token (after a 401 that a fresh token did not fix).
    pub fn invalidate(&self, scopes: &[RepoScope]) {
        self.tokens.lock().expect("token lock").remove(&scope_key(scopes));
    }

    async fn fetch_token(
        &self,
        client: &reqwest::Client,
        creds: &Credentials,
        realm: &str,
        service: Option<&str>,
        scopes: &[RepoScope],
    ) -> Result<CachedToken, Error> {
        let realm_url = url::Url::parse(realm).map_err(|_| Error::TokenInvalid {
            host: self.host.clone(),
            realm_host: "?".into(),
            detail: "the challenge's realm is not a URL".into(),
        })?;
        let realm_host = realm_url.host_str().unwrap_or_default().to_owned();
        let scope_strings: Vec<String> = scopes.iter().map(RepoScope::as_scope).collect();
        // The OAuth2 form is POSTed; every other credential asks with a GET.
        let method = match creds {
            Credentials::IdentityToken(_) => "POST",
            _ => "GET",
        };
        let req = match creds {
            Credentials::IdentityToken(refresh) => {
                // OAuth2 form (distribution docs/spec/auth/oauth.md): scope is one
                // space-separated field.
                let mut form: Vec<(&str, String)> = vec![
                    ("grant_type", "refresh_token".into()),
                    ("client_id", "regrelay".into()),
                    ("refresh_token", refresh.expose().into()),
                    ("scope", scope_strings.join(" ")),
                ];
                if let Some(s) = service {
                    form.push(("service", s.into()));
                }
                let body = form_encode(&form);
                client
                    .post(realm_url)
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            }
            other => {
                let mut u = realm_url;
                {
                    let mut q = u.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in &scope_strings {
                        q.append_pair("scope", s);
                    }
                }
                let r = client.get(u);
                match basic_header(other) {
                    Some(h) => r.header(reqwest::header::AUTHORIZATION, h),
                    None => r,
                }
            }
        };
        let unavailable = |detail: String, status: Option<u16>| Error::TokenUnavailable {
            host: self.host.clone(),
            realm_host: realm_host.clone(),
            detail,
            status,
        };
        let started = tokio::time::Instant::now();
        let sent = req.send().await;
        crate::metrics::global().registry_request(
            &self.host,
            method,
            sent.as_ref().ok().map(|r| r.status().as_u16()),
            started.elapsed(),
        );
        let resp = sent.map_err(|e| unavailable(format!("connection failed: {}", without_url(&e)), None))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(Error::TokenRefused {
                host: self.host.clone(),
                realm_host,
                status,
            });
        }
        if !resp.status().is_success() {
            return Err(unavailable(format!("HTTP {status}"), Some(status)));
        }
        let body = read_capped(resp, 1 << 20)
            .await
            .map_err(|e| unavailable(format!("reading the answer failed: {e}"), None))?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| Error::TokenInvalid {
            host: self.host.clone(),
            realm_host: realm_host.clone(),
            detail: "the answer is not a token JSON object".into(),
        })?;
        let token = parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::TokenInvalid {
                host: self.host.clone(),
                realm_host: realm_host.clone(),
                detail: "the answer holds no token".into(),
            })?;
        let lifetime = parsed.expires_in.unwrap_or(DEFAULT_TOKEN_SECS).max(1);
        // Refresh before expiry: 10 s early, or halfway for short-lived tokens.
        let margin = (lifetime / 2).min(10);
        Ok(CachedToken {
            token: Secret::new(token),
            refresh_at: Instant::now() + Duration::from_secs(lifetime - margin),
        })
    }
}

/// A reqwest error's text without its URL (URLs may carry signed query strings).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(u) = e.url() {
        msg = msg.replace(u.as_str(), "<url>");
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Read at most `cap` bytes of a response body.
pub(crate) async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| without_url(&e))? {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    Ok(out)
}

fn form_encode(pairs: &[(&str, String)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fn basic_header(creds: &Credentials) -> Option<String> {
    match creds {
        Credentials::Basic { username, password } => Some(format!(
            "Basic {}",
            B64.encode(format!("{username}:{}", password.expose()))
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenge_with_commas_in_scope() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/app:pull,push""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:team/app:pull,push".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "bearer without realm");
    }

    #[test]
    fn scope_keys_are_order_independent() {
        let a = vec![RepoScope::push("dst/app"), RepoScope::pull("src/app")];
        let b = vec![RepoScope::pull("src/app"), RepoScope::push("dst/app")];
        assert_eq!(scope_key(&a), scope_key(&b));
        assert_eq!(RepoScope::push("x").as_scope(), "repository:x:pull,push");
        assert_eq!(RepoScope::delete("x").as_scope(), "repository:x:pull,delete");
        assert_eq!(RepoScope::catalog().as_scope(), "registry:catalog:*");
    }
}
