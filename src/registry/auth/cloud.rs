//! Registry tokens from cloud identities: a Google access token as the Basic password
//! `oauth2accesstoken:<token>` at the token endpoint (Artifact Registry, Container
//! Registry; protocols.md §5.2), and the Azure Container Registry exchange of an Entra ID
//! token for an ACR refresh token, which then buys per-repository access tokens through
//! the OAuth2 refresh-token form (§5.3, Azure/acr `docs/AAD-OAuth.md`).
//!
//! Role: the cloud half of [`Authenticator`]: the challenge, scopes and token cache stay
//! in `auth.rs`; this file supplies the credentials for one token request and refreshes
//! them once when the token endpoint refuses them. A second refusal is returned as
//! [`Error::TokenRefused`] (Systemic).
//!
//! Must never: log or return a token; send a Google or Entra token to a token endpoint
//! that is not on the registry's own host name (a redirecting challenge must not collect
//! cloud credentials), or over plain HTTP to anything but loopback.

use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use tokio::time::Instant;

use super::{Authenticator, CachedToken, Credentials, Error, RepoScope, form_encode, read_capped, without_url};
use crate::config::{self, Auth, Secret};
use crate::credentials::{self, EntraTokens, GoogleTokens};

/// ACR refresh tokens whose `exp` cannot be read are exchanged again after this long
/// (they live about 3 h; protocols.md §5.3).
const ACR_REFRESH_FALLBACK: Duration = Duration::from_secs(150 * 60);
/// The user name that tells Google's token endpoints the password is an access token.
const GOOGLE_USER: &str = "oauth2accesstoken";

/// The token sources of the cloud kinds, built on first use.
pub(super) enum Cloud {
    /// Google access tokens.
    Google(GoogleTokens),
    /// Entra ID tokens and the ACR refresh token bought with them.
    Acr(Box<Acr>),
}

/// ACR exchange state for one registry host.
pub(super) struct Acr {
    entra: EntraTokens,
    tenant: String,
    scope: String,
    /// The ACR refresh token of the last exchange. An async lock: concurrent requests
    /// wait for one exchange instead of each running their own.
    refresh: tokio::sync::Mutex<Option<CachedToken>>,
}

/// `POST /oauth2/exchange` answer.
#[derive(Deserialize)]
struct ExchangeResponse {
    #[serde(default)]
    refresh_token: Option<String>,
}

impl Authenticator {
    /// The cloud token source for this host's [`Auth`].
    async fn cloud(&self) -> Result<&Cloud, Error> {
        let credentials_error = |detail: String| Error::Credentials {
            host: self.host.clone(),
            detail,
        };
        self.cloud
            .get_or_try_init(|| async {
                match &self.auth {
                    Auth::Google(g) => GoogleTokens::from_config(g)
                        .map(Cloud::Google)
                        .map_err(|e| credentials_error(e.to_string())),
                    Auth::AcrEntra { tenant, entra, scope } => EntraTokens::from_config(entra)
                        .map(|entra| {
                            Cloud::Acr(Box::new(Acr {
                                entra,
                                tenant: tenant.clone(),
                                scope: scope.clone(),
                                refresh: tokio::sync::Mutex::new(None),
                            }))
                        })
                        .map_err(|e| credentials_error(e.to_string())),
                    _ => Err(credentials_error("no cloud identity is configured".into())),
                }
            })
            .await
    }

    /// Basic credentials `oauth2accesstoken:<current Google token>`.
    pub(super) async fn google_basic(&self) -> Result<Credentials, Error> {
        let Cloud::Google(g) = self.cloud().await? else {
            return Err(Error::Credentials {
                host: self.host.clone(),
                detail: "google credentials are not configured".into(),
            });
        };
        let password = g.token().await.map_err(|e| self.identity_error(e))?;
        Ok(Credentials::Basic {
            username: GOOGLE_USER.into(),
            password,
        })
    }

    /// A bearer token from `realm` for `scopes`, bought with the cloud identity. When the
    /// endpoint refuses, the identity (Google token, or ACR refresh token) is renewed
    /// once and the request repeated.
    pub(super) async fn cloud_token(
        &self,
        client: &reqwest::Client,
        realm: &str,
        service: Option<&str>,
        scopes: &[RepoScope],
    ) -> Result<CachedToken, Error> {
        self.check_realm(realm)?;
        match self.cloud().await? {
            Cloud::Google(g) => {
                let basic = self.google_basic().await?;
                match self.fetch_token(client, &basic, realm, service, scopes).await {
                    Err(Error::TokenRefused { .. }) => {
                        g.refresh();
                        let basic = self.google_basic().await?;
                        self.fetch_token(client, &basic, realm, service, scopes).await
                    }
                    other => other,
                }
            }
            Cloud::Acr(acr) => {
                let (refresh, fresh) = self.acr_refresh(client, acr, realm, service, None).await?;
                let creds = Credentials::IdentityToken(refresh.clone());
                match self.fetch_token(client, &creds, realm, service, scopes).await {
                    // An ACR refresh token that expired or was revoked: exchange again.
                    Err(Error::TokenRefused { .. }) if !fresh => {
                        let (refresh, _) = self.acr_refresh(client, acr, realm, service, Some(&refresh)).await?;
                        let creds = Credentials::IdentityToken(refresh);
                        self.fetch_token(client, &creds, realm, service, scopes).await
                    }
                    other => other,
                }
            }
        }
    }

    /// The ACR refresh token, exchanged when there is none, it is about to expire, or it
    /// is `stale` (refused). Returns whether it was exchanged just now.
    async fn acr_refresh(
        &self,
        client: &reqwest::Client,
        acr: &Acr,
        realm: &str,
        service: Option<&str>,
        stale: Option<&Secret>,
    ) -> Result<(Secret, bool), Error> {
        let mut slot = acr.refresh.lock().await;
        if let Some(c) = slot.as_ref()
            && c.refresh_at > Instant::now()
            && stale != Some(&c.token)
        {
            return Ok((c.token.clone(), false));
        }
        *slot = None;
        let entra = acr.entra.token(&acr.scope).await.map_err(|e| self.identity_error(e))?;
        let token = match self.exchange(client, acr, realm, service, &entra).await {
            // The Entra token itself was refused: get a new one, once.
            Err(Error::TokenRefused { .. }) => {
                acr.entra.invalidate(&acr.scope);
                let entra = acr.entra.token(&acr.scope).await.map_err(|e| self.identity_error(e))?;
                self.exchange(client, acr, realm, service, &entra).await?
            }
            other => other?,
        };
        let lifetime = credentials::jwt_lifetime(token.expose()).unwrap_or(ACR_REFRESH_FALLBACK);
        *slot = Some(CachedToken {
            token: token.clone(),
            refresh_at: credentials::refresh_at(lifetime),
        });
        Ok((token, true))
    }

    /// `POST {realm origin}/oauth2/exchange`: Entra access token → ACR refresh token.
    async fn exchange(
        &self,
        client: &reqwest::Client,
        acr: &Acr,
        realm: &str,
        service: Option<&str>,
        entra: &Secret,
    ) -> Result<Secret, Error> {
        let mut url = url::Url::parse(realm).map_err(|_| Error::TokenInvalid {
            host: self.host.clone(),
            realm_host: "?".into(),
            detail: "the challenge's realm is not a URL".into(),
        })?;
        url.set_path("/oauth2/exchange");
        url.set_query(None);
        let realm_host = url.host_str().unwrap_or_default().to_owned();
        let form: Vec<(&str, String)> = vec![
            ("grant_type", "access_token".into()),
            ("service", service.unwrap_or(&self.host).into()),
            ("tenant", acr.tenant.clone()),
            ("access_token", entra.expose().into()),
        ];
        let started = tokio::time::Instant::now();
        let sent = client
            .post(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form_encode(&form))
            .send()
            .await;
        crate::metrics::global().registry_request(
            &self.host,
            "POST",
            sent.as_ref().ok().map(|r| r.status().as_u16()),
            started.elapsed(),
        );
        let unavailable = |detail: String, status: Option<u16>| Error::TokenUnavailable {
            host: self.host.clone(),
            realm_host: realm_host.clone(),
            detail: format!("acr exchange: {detail}"),
            status,
        };
        let resp = sent.map_err(|e| unavailable(format!("connection failed: {}", without_url(&e)), None))?;
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            408 | 429 | 500..=599 => return Err(unavailable(format!("HTTP {status}"), Some(status))),
            // 401/403: the Entra token was refused. Any other 4xx (an unknown tenant, a
            // registry without Entra auth) will not fix itself either.
            _ => {
                return Err(Error::TokenRefused {
                    host: self.host.clone(),
                    realm_host,
                    status,
                });
            }
        }
        let invalid = |detail: &str| Error::TokenInvalid {
            host: self.host.clone(),
            realm_host: realm_host.clone(),
            detail: format!("acr exchange: {detail}"),
        };
        let body = read_capped(resp, 1 << 20)
            .await
            .map_err(|e| unavailable(format!("reading the answer failed: {e}"), None))?;
        let parsed: ExchangeResponse =
            serde_json::from_slice(&body).map_err(|_| invalid("the answer is not a JSON object"))?;
        parsed
            .refresh_token
            .filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| invalid("the answer holds no refresh_token"))
    }

    /// Cloud tokens go only to a token endpoint on the registry's own host name (any
    /// port), over HTTPS unless that host is loopback.
    fn check_realm(&self, realm: &str) -> Result<(), Error> {
        let refuse = |detail: String| Error::Credentials {
            host: self.host.clone(),
            detail,
        };
        let realm_url = url::Url::parse(realm).map_err(|_| refuse("the challenge's realm is not a URL".into()))?;
        let realm_name = realm_url.host_str().unwrap_or_default();
        let own = url::Url::parse(&format!("https://{}/", self.host))
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        if !realm_name.eq_ignore_ascii_case(&own) {
            return Err(refuse(format!(
                "the token endpoint {realm_name} is not on the registry's host; cloud tokens are only sent there"
            )));
        }
        if realm_url.scheme() != "https" && !config::is_loopback_host(realm_name) {
            return Err(refuse(format!("the token endpoint on {realm_name} is not HTTPS")));
        }
        Ok(())
    }

    /// A token provider's failure as an auth error: transient ones are retried,
    /// everything else needs an operator (Systemic).
    fn identity_error(&self, e: credentials::Error) -> Error {
        if e.is_transient() {
            Error::TokenUnavailable {
                host: self.host.clone(),
                realm_host: "the identity provider".into(),
                detail: e.to_string(),
                status: None,
            }
        } else {
            Error::Credentials {
                host: self.host.clone(),
                detail: e.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EntraConfig, EntraCredential, GoogleAuth};

    fn acr(host: &str) -> Authenticator {
        Authenticator::new(
            host,
            Auth::AcrEntra {
                tenant: "t".into(),
                entra: EntraConfig {
                    tenant: Some("t".into()),
                    credential: EntraCredential::StaticTokenFile {
                        path: "/nonexistent".into(),
                    },
                    authority_host: config::ENTRA_AUTHORITY_HOST.into(),
                },
                scope: config::ACR_ENTRA_SCOPE.into(),
            },
        )
    }

    #[test]
    fn cloud_tokens_only_go_to_the_registrys_own_host() {
        let a = acr("example.azurecr.io");
        assert!(a.check_realm("https://example.azurecr.io/oauth2/token").is_ok());
        assert!(a.check_realm("https://EXAMPLE.azurecr.io:443/oauth2/token").is_ok());
        let err = a.check_realm("https://evil.example/oauth2/token").unwrap_err();
        assert!(matches!(err, Error::Credentials { .. }), "{err}");
        assert!(
            a.check_realm("http://example.azurecr.io/oauth2/token").is_err(),
            "plain http"
        );
        let local = acr("127.0.0.1:5000");
        assert!(
            local.check_realm("http://127.0.0.1:6000/token").is_ok(),
            "loopback test servers"
        );
        assert!(acr("[::1]:5000").check_realm("http://[::1]:7/token").is_ok());
    }

    #[tokio::test]
    async fn an_unreadable_identity_is_systemic_not_transient() {
        let a = acr("127.0.0.1:5000");
        let client = reqwest::Client::new();
        let Err(err) = a
            .cloud_token(&client, "http://127.0.0.1:1/token", None, &[RepoScope::pull("x")])
            .await
        else {
            panic!("a missing token file cannot give a token")
        };
        assert!(matches!(err, Error::Credentials { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent"), "{err}");
        let g = Authenticator::new("127.0.0.1:5000", Auth::Google(GoogleAuth::default()));
        assert!(matches!(g.cloud().await, Ok(Cloud::Google(_))));
    }
}
