//! Cloud identities on the token server: an ACR-style `/oauth2/exchange`, a Microsoft
//! Entra token endpoint `/{tenant}/oauth2/v2.0/token`, and a Google OAuth2 endpoint
//! `/google/token`. Refresh tokens from the exchange are accepted by the refresh-token
//! grant of `/token`; Google access tokens are accepted as Basic
//! `oauth2accesstoken:<token>` on `GET /token`.
//!
//! Must never: accept a token it did not issue or one of a revoked identity.

use super::*;

/// The user name Google's registries expect with an access token as password.
const GOOGLE_USER: &str = "oauth2accesstoken";

/// State of the cloud endpoints; everything is off until enabled.
#[derive(Default)]
pub(super) struct Cloud {
    /// The tenant `/oauth2/exchange` accepts (`None`: the endpoint refuses everything).
    acr_tenant: Option<String>,
    /// Entra access tokens the exchange accepts.
    entra_accepted: std::collections::HashSet<String>,
    /// Lifetime (`exp`) of issued ACR refresh tokens; 0 = the 3 h default.
    acr_refresh_ttl_secs: u64,
    /// Entra token endpoint: tenant, client ID, client secret, federated assertion.
    sts: Option<(String, String, Option<String>, Option<String>)>,
    /// Google OAuth2: client ID, client secret, refresh token of the authorized user.
    google: Option<(String, String, String)>,
    /// Google access tokens the registry token endpoint accepts.
    google_accepted: std::collections::HashSet<String>,
    /// Set by `revoke_google`: no Google access token is accepted any more.
    google_revoked: bool,
    /// Every cloud secret issued (Entra tokens, ACR refresh tokens, Google tokens).
    issued: Vec<String>,
}

impl TokenServer {
    /// Lets `POST /oauth2/exchange` trade Entra tokens of `tenant` (see
    /// [`TokenServer::accept_entra_token`]) for ACR refresh tokens (ES256 JWTs with `exp`).
    pub fn enable_acr_exchange(&self, tenant: &str) {
        self.shared.cloud().acr_tenant = Some(tenant.to_owned());
    }

    /// Makes the exchange accept `token` as an Entra access token.
    pub fn accept_entra_token(&self, token: &str) {
        self.shared.cloud().entra_accepted.insert(token.to_owned());
    }

    /// Lifetime of ACR refresh tokens issued from now on (default 3 h).
    pub fn set_acr_refresh_ttl(&self, secs: u64) {
        self.shared.cloud().acr_refresh_ttl_secs = secs;
    }

    /// Forgets every refresh token issued so far, as if they had expired or been
    /// revoked: the refresh-token grant refuses them with 401 from now on.
    pub fn revoke_refresh_tokens(&self) {
        self.shared.refresh.lock().expect("refresh lock").clear();
    }

    /// Serves an Entra token endpoint at `{url()}/{tenant}/oauth2/v2.0/token` for one app:
    /// the client-credentials grant with `client_secret`, or with `client_assertion` equal
    /// to `federated_assertion` (workload identity). Issued tokens are accepted by the
    /// ACR exchange.
    pub fn enable_entra_sts(
        &self,
        tenant: &str,
        client_id: &str,
        client_secret: Option<&str>,
        federated_assertion: Option<&str>,
    ) {
        self.shared.cloud().sts = Some((
            tenant.to_owned(),
            client_id.to_owned(),
            client_secret.map(str::to_owned),
            federated_assertion.map(str::to_owned),
        ));
    }

    /// Serves a Google OAuth2 token endpoint at [`TokenServer::google_token_uri`] for one
    /// authorized user (the `authorized_user` credentials file's fields); its access
    /// tokens are accepted as `oauth2accesstoken` passwords on `GET /token`.
    pub fn enable_google(&self, client_id: &str, client_secret: &str, refresh_token: &str) {
        self.shared.cloud().google = Some((client_id.to_owned(), client_secret.to_owned(), refresh_token.to_owned()));
    }

    /// `http://127.0.0.1:PORT/google/token`, for a credentials file's `token_uri`.
    pub fn google_token_uri(&self) -> String {
        format!("http://{}/google/token", self.addr)
    }

    /// From now on no Google access token is accepted, including ones issued later (the
    /// account lost its registry permission).
    pub fn revoke_google(&self) {
        let mut c = self.shared.cloud();
        c.google_revoked = true;
        c.google_accepted.clear();
    }

    /// Every request to the cloud endpoints, oldest first: `path_and_query` is
    /// `/oauth2/exchange`, `/google/token` or `/{tenant}/oauth2/v2.0/token`; `scopes` holds
    /// the requested scope (exchange: none).
    pub fn cloud_requests(&self) -> Vec<TokenRequest> {
        self.shared.cloud_requests.lock().expect("cloud requests lock").clone()
    }

    /// Every secret the cloud endpoints issued (for "never logged" assertions).
    pub fn issued_cloud_secrets(&self) -> Vec<String> {
        self.shared.cloud().issued.clone()
    }
}

impl Shared {
    fn cloud(&self) -> std::sync::MutexGuard<'_, Cloud> {
        self.cloud.lock().expect("cloud lock")
    }

    pub(super) fn google_accepts(&self, user: &str, password: &str) -> bool {
        let c = self.cloud();
        user == GOOGLE_USER && !c.google_revoked && c.google_accepted.contains(password)
    }

    fn record_cloud(&self, path: String, had_credentials: bool, valid: bool, scopes: Vec<String>) {
        self.cloud_requests
            .lock()
            .expect("cloud requests lock")
            .push(TokenRequest {
                method: Method::POST.to_string(),
                path_and_query: path,
                had_credentials,
                credentials_valid: valid,
                scopes,
            });
    }
}

#[derive(Serialize)]
struct AcrRefreshClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    jti: String,
    tenant: &'a str,
}

/// `POST /oauth2/exchange` form: `grant_type=access_token`, `service`, `tenant`,
/// `access_token` (Azure/acr `docs/AAD-OAuth.md`).
pub(super) async fn acr_exchange(
    State(shared): State<Arc<Shared>>,
    Form(params): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| values(&params, name).next().map(str::to_owned);
    let token = field("access_token");
    let (tenant, valid) = {
        let c = shared.cloud();
        let valid = field("grant_type").as_deref() == Some("access_token")
            && field("service").as_deref() == Some(shared.service.as_str())
            && c.acr_tenant.is_some()
            && field("tenant") == c.acr_tenant
            && token.as_ref().is_some_and(|t| c.entra_accepted.contains(t));
        (c.acr_tenant.clone().unwrap_or_default(), valid)
    };
    shared.record_cloud("/oauth2/exchange".into(), token.is_some(), valid, Vec::new());
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": "invalid AAD access token"}]})),
        )
            .into_response();
    }
    let now = unix_now();
    let ttl = match shared.cloud().acr_refresh_ttl_secs {
        0 => 3 * 3600,
        t => t,
    };
    let claims = AcrRefreshClaims {
        iss: &shared.issuer,
        sub: "acr-entra",
        aud: &shared.service,
        exp: now + ttl,
        iat: now,
        jti: random_hex(),
        tenant: &tenant,
    };
    let refresh = match jsonwebtoken::encode(&shared.header, &claims, &shared.key) {
        Ok(t) => t,
        Err(err) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("sign: {err}")).into_response(),
    };
    shared
        .refresh
        .lock()
        .expect("refresh lock")
        .insert(refresh.clone(), "acr-entra".to_owned());
    shared.cloud().issued.push(refresh.clone());
    Json(serde_json::json!({ "refresh_token": refresh })).into_response()
}

/// `POST /{tenant}/oauth2/v2.0/token`: Entra's client-credentials grant, with a client
/// secret or a client assertion; errors in Entra's JSON format.
pub(super) async fn entra_token(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(tenant): axum::extract::Path<String>,
    Form(params): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| values(&params, name).next().map(str::to_owned);
    let scope = field("scope").unwrap_or_default();
    let assertion = field("client_assertion");
    let secret = field("client_secret");
    let valid = match &shared.cloud().sts {
        Some((t, id, s, a)) => {
            let by_secret = secret.is_some() && secret == *s;
            let by_assertion = assertion.is_some()
                && assertion == *a
                && field("client_assertion_type").as_deref()
                    == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
            *t == tenant
                && field("client_id").as_deref() == Some(id.as_str())
                && field("grant_type").as_deref() == Some("client_credentials")
                && (by_secret || by_assertion)
        }
        None => false,
    };
    shared.record_cloud(
        format!("/{tenant}/oauth2/v2.0/token"),
        secret.is_some() || assertion.is_some(),
        valid,
        vec![scope],
    );
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.",
                "error_codes": [7000215],
            })),
        )
            .into_response();
    }
    let token = format!("entra-{}", random_hex());
    {
        let mut c = shared.cloud();
        c.entra_accepted.insert(token.clone());
        c.issued.push(token.clone());
    }
    Json(serde_json::json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": token,
    }))
    .into_response()
}

/// `POST /google/token` with Google's JSON refresh request (`grant_type`, `client_id`,
/// `client_secret`, `refresh_token`, `scopes`), as google-cloud-auth sends it for
/// `authorized_user` credentials.
pub(super) async fn google_token(State(shared): State<Arc<Shared>>, Json(body): Json<serde_json::Value>) -> Response {
    let field = |name: &str| body.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
    let valid = match &shared.cloud().google {
        Some((id, secret, refresh)) => {
            field("grant_type").as_deref() == Some("refresh_token")
                && field("client_id").as_ref() == Some(id)
                && field("client_secret").as_ref() == Some(secret)
                && field("refresh_token").as_ref() == Some(refresh)
        }
        None => false,
    };
    let scopes = field("scopes").into_iter().collect();
    shared.record_cloud("/google/token".into(), field("refresh_token").is_some(), valid, scopes);
    if !valid {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    let token = format!("ya29.test-{}", random_hex());
    {
        let mut c = shared.cloud();
        if !c.google_revoked {
            c.google_accepted.insert(token.clone());
        }
        c.issued.push(token.clone());
    }
    Json(serde_json::json!({
        "access_token": token,
        "expires_in": 3600,
        "token_type": "Bearer",
        "scope": "https://www.googleapis.com/auth/cloud-platform",
    }))
    .into_response()
}
