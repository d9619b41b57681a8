//! `TokenServer`: an in-process Docker registry token server on loopback.
//!
//! Role: implement the token protocol of distribution's
//! `docs/spec/auth/token.md` (GET with HTTP Basic) and `oauth.md` (POST form
//! with `grant_type=password` or `refresh_token`) well enough for a
//! `docker-registry` with `auth: token` to accept the tokens it issues, and
//! record everything so tests can assert on token traffic.
//!
//! Must never: bind anything but `127.0.0.1`, grant anonymous requests (they
//! get 401 with a Basic challenge), or accept wrong credentials.
//!
//! Invariants: one ECDSA P-256 key and a self-signed certificate per server;
//! the certificate PEM is the registry's `rootcertbundle`; tokens are ES256
//! JWTs whose header carries the certificate in `x5c` (default) or the
//! libtrust key ID in `kid`, and that grant every action requested.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;
use tokio::task::JoinHandle;

mod cloud;

use cloud::{Cloud, acr_exchange, entra_token, google_token};

/// Which JWT header field tells the registry the signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHint {
    /// `x5c: [base64 DER of the self-signed certificate]`; the registry
    /// verifies it against `rootcertbundle`. Accepted by distribution 2.8.2.
    X5c,
    /// `kid`: the libtrust key ID of the public key (SHA-256 of the SPKI DER,
    /// first 240 bits, base32, groups of 4 joined by `:`); the registry looks
    /// it up among the keys of `rootcertbundle`. Accepted by distribution 2.8.2.
    Kid,
}

/// Settings of a [`TokenServer`]; `TokenOptions::default()` is what
/// [`TokenServer::start`] uses.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    /// `expires_in` of issued tokens and their `exp` claim (default 300 s).
    /// Distribution accepts a token for 60 s past `exp` (clock-skew leeway).
    pub expires_in_secs: u64,
    /// JWT header variant (default [`KeyHint::X5c`]).
    pub key_hint: KeyHint,
    /// The `service` (JWT `aud`) the registry is configured with.
    pub service: String,
    /// The `issuer` (JWT `iss`) the registry is configured with.
    pub issuer: String,
}

impl Default for TokenOptions {
    fn default() -> Self {
        TokenOptions {
            expires_in_secs: 300,
            key_hint: KeyHint::X5c,
            service: "regrelay-test-registry".to_owned(),
            issuer: "regrelay-test-token-issuer".to_owned(),
        }
    }
}

/// One request the token server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// Path and query as received (POST form fields are not included).
    pub path_and_query: String,
    /// The request carried credentials (Basic header, password or refresh token).
    pub had_credentials: bool,
    /// Those credentials were valid (a token was issued).
    pub credentials_valid: bool,
    /// Requested scopes, e.g. `repository:a/b:pull,push`.
    pub scopes: Vec<String>,
}

struct Shared {
    users: HashMap<String, String>,
    key: EncodingKey,
    header: Header,
    service: String,
    issuer: String,
    expires_in_secs: AtomicU64,
    issued: Mutex<Vec<String>>,
    refresh: Mutex<HashMap<String, String>>,
    requests: Mutex<Vec<TokenRequest>>,
    /// ACR exchange, Entra token endpoint and Google OAuth2 endpoint (see `cloud` below).
    cloud: Mutex<Cloud>,
    cloud_requests: Mutex<Vec<TokenRequest>>,
}

/// Guard for a running token server; dropping it stops the server.
pub struct TokenServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    cert_path: PathBuf,
    // Keeps the certificate file alive as long as the server.
    _dir: TempDir,
    task: JoinHandle<()>,
}

impl TokenServer {
    /// Starts a token server for `users` (username, password) with default options.
    pub async fn start(users: &[(&str, &str)]) -> Self {
        Self::start_with(users, TokenOptions::default()).await
    }

    /// Starts a token server with explicit [`TokenOptions`].
    pub async fn start_with(users: &[(&str, &str)], options: TokenOptions) -> Self {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("generate P-256 key");
        let mut params =
            rcgen::CertificateParams::new(vec!["regrelay-test-token".to_owned()]).expect("certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "regrelay test token signer");
        let cert = params.self_signed(&key_pair).expect("self-sign certificate");

        let dir = tempfile::Builder::new()
            .prefix("regrelay-token-")
            .tempdir()
            .expect("create token temp dir");
        let cert_path = dir.path().join("root.pem");
        std::fs::write(&cert_path, cert.pem()).expect("write cert pem");

        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".to_owned());
        match options.key_hint {
            KeyHint::X5c => header.x5c = Some(vec![B64.encode(cert.der())]),
            KeyHint::Kid => {
                use rcgen::PublicKeyData as _;
                header.kid = Some(libtrust_key_id(&key_pair.subject_public_key_info()));
            }
        }
        let key =
            EncodingKey::from_ec_pem(key_pair.serialize_pem().as_bytes()).expect("load P-256 key into jsonwebtoken");

        let shared = Arc::new(Shared {
            users: users.iter().map(|(u, p)| ((*u).to_owned(), (*p).to_owned())).collect(),
            key,
            header,
            service: options.service,
            issuer: options.issuer,
            expires_in_secs: AtomicU64::new(options.expires_in_secs),
            issued: Mutex::new(Vec::new()),
            refresh: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            cloud: Mutex::new(Cloud::default()),
            cloud_requests: Mutex::new(Vec::new()),
        });

        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind token server on 127.0.0.1:0");
        let addr = listener.local_addr().expect("token server addr");
        let app = Router::new()
            .route("/token", get(get_token).post(post_token))
            .route("/oauth2/exchange", post(acr_exchange))
            .route("/google/token", post(google_token))
            .route("/{tenant}/oauth2/v2.0/token", post(entra_token))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            // Serving only ends when the task is aborted on drop.
            let _ = axum::serve(listener, app).await;
        });
        // The listener is bound before spawning, so the server is ready now.
        TokenServer {
            addr,
            shared,
            cert_path,
            _dir: dir,
            task,
        }
    }

    /// Loopback address of the token server.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token endpoint, `http://127.0.0.1:PORT/token` (the registry's `realm`).
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The `service` (JWT audience).
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The `issuer` (JWT `iss`).
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// PEM file with the signing certificate (the registry's `rootcertbundle`).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Changes `expires_in` (and `exp`) for tokens issued from now on.
    pub fn set_expires_in(&self, secs: u64) {
        self.shared.expires_in_secs.store(secs, Ordering::SeqCst);
    }

    /// Every access token issued so far, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.issued.lock().expect("issued lock").clone()
    }

    /// Every refresh token issued so far (for "never logged" assertions).
    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        self.shared
            .refresh
            .lock()
            .expect("refresh lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Number of requests to `/token` so far (GET and POST, valid or not).
    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().expect("requests lock").len()
    }

    /// Every request to `/token` so far, oldest first.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.requests.lock().expect("requests lock").clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    access: Vec<Access>,
}

#[derive(Serialize)]
struct Access {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    actions: Vec<String>,
}

#[derive(Serialize)]
struct TokenResponse {
    token: String,
    access_token: String,
    expires_in: u64,
    issued_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
}

/// `GET /token?service=..&scope=..&scope=..[&offline_token=true]` with Basic auth.
async fn get_token(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let scopes: Vec<String> = values(&params, "scope")
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let basic = basic_credentials(&headers);
    let user = basic
        .as_ref()
        .filter(|(u, p)| shared.users.get(u) == Some(p) || shared.google_accepts(u, p))
        .map(|(u, _)| u.clone());
    shared.record(TokenRequest {
        method: Method::GET.to_string(),
        path_and_query: path_and_query(&uri),
        had_credentials: basic.is_some(),
        credentials_valid: user.is_some(),
        scopes: scopes.clone(),
    });
    let Some(user) = user else {
        return unauthorized();
    };
    let offline = values(&params, "offline_token").any(|v| v == "true");
    shared.issue(&user, &scopes, offline)
}

/// `POST /token` form: `grant_type=password` (username, password) or
/// `grant_type=refresh_token` (refresh_token); `scope` is space-separated.
async fn post_token(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    Form(params): Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| values(&params, name).next().map(str::to_owned);
    let scopes: Vec<String> = values(&params, "scope")
        .flat_map(|s| s.split(' '))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let grant = field("grant_type").unwrap_or_default();
    let (had_credentials, user) = match grant.as_str() {
        "password" => {
            let (u, p) = (field("username"), field("password"));
            let valid = match (&u, &p) {
                (Some(u), Some(p)) => shared.users.get(u) == Some(p),
                _ => false,
            };
            (u.is_some() || p.is_some(), u.filter(|_| valid))
        }
        "refresh_token" => {
            let t = field("refresh_token");
            let user = t
                .as_ref()
                .and_then(|t| shared.refresh.lock().expect("refresh lock").get(t).cloned());
            (t.is_some(), user)
        }
        _ => (false, None),
    };
    shared.record(TokenRequest {
        method: Method::POST.to_string(),
        path_and_query: path_and_query(&uri),
        had_credentials,
        credentials_valid: user.is_some(),
        scopes: scopes.clone(),
    });
    if !matches!(grant.as_str(), "password" | "refresh_token") {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    let Some(user) = user else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "invalid_grant"})),
        )
            .into_response();
    };
    // Per oauth.md a refresh token is returned when asked for offline access;
    // a refresh grant keeps using the same refresh token.
    let offline = grant == "password" && values(&params, "access_type").any(|v| v == "offline");
    shared.issue(&user, &scopes, offline)
}

impl Shared {
    fn record(&self, request: TokenRequest) {
        self.requests.lock().expect("requests lock").push(request);
    }

    fn issue(&self, user: &str, scopes: &[String], offline: bool) -> Response {
        let now = unix_now();
        let expires_in = self.expires_in_secs.load(Ordering::SeqCst);
        let claims = Claims {
            iss: &self.issuer,
            sub: user,
            aud: &self.service,
            exp: now + expires_in,
            nbf: now.saturating_sub(1),
            iat: now,
            jti: random_hex(),
            access: scopes.iter().filter_map(|s| parse_scope(s)).collect(),
        };
        let token = match jsonwebtoken::encode(&self.header, &claims, &self.key) {
            Ok(t) => t,
            Err(err) => {
                return (StatusCode::INTERNAL_SERVER_ERROR, format!("sign token: {err}")).into_response();
            }
        };
        self.issued.lock().expect("issued lock").push(token.clone());
        let refresh_token = offline.then(|| {
            let t = random_hex();
            self.refresh
                .lock()
                .expect("refresh lock")
                .insert(t.clone(), user.to_owned());
            t
        });
        Json(TokenResponse {
            token: token.clone(),
            access_token: token,
            expires_in,
            issued_at: rfc3339(now),
            refresh_token,
        })
        .into_response()
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"regrelay-test-token\"")],
        Json(serde_json::json!({"details": "incorrect username or password"})),
    )
        .into_response()
}

fn values<'a>(params: &'a [(String, String)], name: &'a str) -> impl Iterator<Item = &'a str> {
    params.iter().filter(move |(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| uri.path().to_owned())
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(B64.decode(rest.trim()).ok()?).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// `type:name:actions`; the name may itself contain `:` (a registry port).
fn parse_scope(scope: &str) -> Option<Access> {
    let (kind, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    Some(Access {
        kind: kind.to_owned(),
        name: name.to_owned(),
        actions: actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// libtrust's key ID: base32 of the first 30 bytes of SHA-256(SPKI DER),
/// without padding, in groups of four joined by `:`.
fn libtrust_key_id(spki_der: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(spki_der);
    let mut out = String::new();
    // 30 bytes = 240 bits = exactly 48 base32 characters, so no padding.
    for chunk in digest[..30].chunks(5) {
        let mut buf = 0u64;
        for b in chunk {
            buf = (buf << 8) | u64::from(*b);
        }
        for i in (0..8).rev() {
            out.push(ALPHABET[((buf >> (i * 5)) & 31) as usize] as char);
        }
    }
    out.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect::<Vec<_>>()
        .join(":")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// 128 random bits as hex, from std's randomly seeded hasher (no extra crate).
fn random_hex() -> String {
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Formats Unix seconds as RFC 3339 UTC (`2006-01-02T15:04:05Z`).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}
