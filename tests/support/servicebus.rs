//! `ServiceBusServer`: an in-process Azure Service Bus REST data plane on loopback.
//!
//! Role: follow the documented REST semantics (protocols.md §3) closely enough that
//! regrelay's Service Bus source cannot tell it from the real service in the ways that
//! matter: SAS validation (HMAC-SHA256 keyed with the UTF-8 bytes of the key, over
//! `sr + "\n" + se`, `se` in the future, and the audience checked strictly: `sr`
//! percent-encoded and naming [`NAMESPACE`]'s URI for the entity or one of its parents,
//! whatever address the request came in on) and bearer validation; send with `BrokerProperties` and custom property headers; peek-lock
//! long-polls that honour `timeout` and wake on send; `Location` lock URLs; complete,
//! abandon and renew with lock-token checks (404 when stale); lock expiry;
//! `MaxDeliveryCount` dead-lettering into `PATH/$deadletterqueue`, readable with the same
//! API; 410 for a missing entity. The state machine is in [`broker`]. Inspection helpers
//! let tests assert what the broker saw.
//!
//! Must never: bind anything but `127.0.0.1`, accept a request without valid credentials,
//! or share code with the client under test (the SAS signer here is its own).

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod broker;

use broker::{Broker, Failure, SettleOp};
#[allow(unused_imports, reason = "re-exports for all test binaries; each uses a subset")]
pub use broker::{Counts, EntityOptions, Message, MessageStats};

/// The namespace host name tests put in configs and connection strings (requests go to
/// [`ServiceBusServer::url`]).
pub const NAMESPACE: &str = "regrelay-test.servicebus.windows.net";

/// `https://NAMESPACE/{entity}`: the resource URI a SAS token for `entity` is signed for
/// (the namespace's URI, not [`ServiceBusServer::url`]). `""` gives the namespace root.
pub fn resource_uri(entity: &str) -> String {
    format!("https://{NAMESPACE}/{entity}")
}

/// The rule every server starts with, holding every right.
pub const ROOT_RULE: &str = "RootManageSharedAccessKey";

/// Rights of a shared access authorization rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Receive, complete, abandon, renew.
    Listen,
    /// Send.
    Send,
}

/// One request the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// HTTP method.
    pub method: String,
    /// Path (percent-decoded) and query.
    pub path: String,
    /// The status sent.
    pub status: u16,
}

struct Shared {
    addr: SocketAddr,
    broker: Mutex<Broker>,
    notify: Notify,
    rules: Mutex<HashMap<String, (String, Vec<Right>)>>,
    bearers: Mutex<HashSet<String>>,
    requests: Mutex<Vec<Request>>,
}

/// Guard for a running server; dropping it stops it.
pub struct ServiceBusServer {
    shared: Arc<Shared>,
    root_key: String,
    tasks: [JoinHandle<()>; 2],
}

impl ServiceBusServer {
    /// Start on `127.0.0.1:0` with the rule [`ROOT_RULE`] (a random key) and no entities.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind service bus server on 127.0.0.1:0");
        let addr = listener.local_addr().expect("service bus server addr");
        let root_key = B64.encode((0..32).map(|_| fastrand::u8(..)).collect::<Vec<u8>>());
        let shared = Arc::new(Shared {
            addr,
            broker: Mutex::new(Broker::default()),
            notify: Notify::new(),
            rules: Mutex::new(HashMap::from([(
                ROOT_RULE.to_owned(),
                (root_key.clone(), vec![Right::Listen, Right::Send]),
            )])),
            bearers: Mutex::new(HashSet::new()),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        // Locks run out on their own, like on the real broker, whether or not anyone asks.
        let s = shared.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if s.broker.lock().expect("broker lock").expire(Instant::now()) {
                    s.notify.notify_waiters();
                }
            }
        });
        ServiceBusServer {
            shared,
            root_key,
            tasks: [server, ticker],
        }
    }

    /// `http://127.0.0.1:PORT` (the `endpoint` override for regrelay).
    pub fn url(&self) -> String {
        format!("http://{}", self.shared.addr)
    }

    /// The key of [`ROOT_RULE`].
    pub fn root_key(&self) -> &str {
        &self.root_key
    }

    /// Add (or replace) a shared access rule.
    pub fn add_sas_rule(&self, name: &str, key: &str, rights: &[Right]) {
        self.shared
            .rules
            .lock()
            .expect("rules lock")
            .insert(name.to_owned(), (key.to_owned(), rights.to_vec()));
    }

    /// Accept `Authorization: Bearer {token}` with every right (stands in for Entra ID).
    pub fn accept_bearer(&self, token: &str) {
        self.shared
            .bearers
            .lock()
            .expect("bearers lock")
            .insert(token.to_owned());
    }

    /// `Endpoint=sb://NAMESPACE/;SharedAccessKeyName=RULE;SharedAccessKey=KEY`.
    pub fn connection_string(&self, rule: &str) -> String {
        let key = &self.shared.rules.lock().expect("rules lock")[rule].0;
        format!("Endpoint=sb://{NAMESPACE}/;SharedAccessKeyName={rule};SharedAccessKey={key}")
    }

    /// Create a queue.
    pub fn create_queue(&self, name: &str, opts: EntityOptions) {
        self.broker().create(name, opts);
    }

    /// Create a topic.
    pub fn create_topic(&self, topic: &str) {
        self.broker().create_topic(topic);
    }

    /// Create a subscription `topic/subscriptions/name`.
    pub fn create_subscription(&self, topic: &str, name: &str, opts: EntityOptions) {
        self.broker().create_subscription(topic, name, opts);
    }

    fn broker(&self) -> std::sync::MutexGuard<'_, Broker> {
        self.shared.broker.lock().expect("broker lock")
    }

    /// Send `body` to `entity` over HTTP with the root rule; `message_id` sets
    /// `BrokerProperties.MessageId`, `headers` are extra request headers (custom
    /// properties). Returns the HTTP status.
    pub async fn send(&self, entity: &str, body: &[u8], message_id: Option<&str>, headers: &[(&str, &str)]) -> u16 {
        let url = format!("{}/{entity}/messages", self.url());
        let auth = sas(&resource_uri(entity), ROOT_RULE, &self.root_key, unix_now() + 300);
        let mut req = super::probe_client()
            .post(&url)
            .header("Authorization", auth)
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        if let Some(id) = message_id {
            req = req.header("BrokerProperties", serde_json::json!({ "MessageId": id }).to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
            .await
            .expect("send to the service bus server")
            .status()
            .as_u16()
    }

    /// Message counts of `entity` (a queue or `topic/subscriptions/name`).
    pub fn counts(&self, entity: &str) -> Counts {
        self.broker().counts(entity)
    }

    /// What happened to `message_id` so far.
    pub fn stats(&self, message_id: &str) -> MessageStats {
        self.broker().stats(message_id)
    }

    /// The messages in `entity`'s dead-letter queue.
    pub fn dead_letters(&self, entity: &str) -> Vec<Message> {
        self.broker().dead_letters(entity)
    }

    /// The messages completed in `entity`, oldest first.
    pub fn completed(&self, entity: &str) -> Vec<Message> {
        self.broker().completed(entity)
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().expect("requests lock").clone()
    }

    /// Let the lock on `message_id` run out now (as if the lock duration had passed while
    /// its receiver was not renewing). Returns whether it was locked.
    pub fn expire_lock(&self, message_id: &str) -> bool {
        let hit = self.broker().expire_lock(message_id, Instant::now());
        self.shared.notify.notify_waiters();
        hit
    }

    /// Poll `pred` every 50 ms until it holds; panics after `within` naming `what`.
    pub async fn wait_until(&self, within: Duration, what: &str, pred: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + within;
        while !pred(self) {
            assert!(
                Instant::now() < deadline,
                "service bus server: {what} not reached within {within:?}; requests: {:#?}",
                self.requests().iter().rev().take(20).collect::<Vec<_>>()
            );
            tokio::time::sleep(super::POLL_INTERVAL).await;
        }
    }
}

impl Drop for ServiceBusServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// HMAC-SHA256 (RFC 2104), written here again so that the server checks the client's
/// signatures with code of its own.
fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = if key.len() > 64 {
        Sha256::digest(key).to_vec()
    } else {
        key.to_vec()
    };
    k.resize(64, 0);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn form_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-decode; `plus` also turns `+` into a space (form encoding).
fn decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `SharedAccessSignature sr=..&sig=..&se=..&skn=..` as in Microsoft's samples, for
/// `resource`, signed with `rule`'s `key`, expiring at `expiry` (Unix seconds); the
/// harness's own signer.
pub fn sas(resource: &str, rule: &str, key: &str, expiry: u64) -> String {
    sas_for_sr(&form_encode(resource), rule, key, expiry)
}

/// Like [`sas`] with `sr` given exactly as it goes on the wire (already encoded, or not),
/// for tests of how the server reads it.
pub fn sas_for_sr(sr: &str, rule: &str, key: &str, expiry: u64) -> String {
    let sig = B64.encode(hmac(key.as_bytes(), format!("{sr}\n{expiry}").as_bytes()));
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry}&skn={rule}",
        form_encode(&sig)
    )
}

/// Check the `Authorization` header for a request on `entity` that needs `need`.
fn authorize(shared: &Shared, headers: &HeaderMap, entity: &str, need: Right) -> Result<(), &'static str> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("no Authorization header")?;
    if let Some(token) = value.strip_prefix("Bearer ") {
        return if shared.bearers.lock().expect("bearers lock").contains(token) {
            Ok(())
        } else {
            Err("unknown bearer token")
        };
    }
    let params = value
        .strip_prefix("SharedAccessSignature ")
        .ok_or("neither SharedAccessSignature nor Bearer")?;
    let params: HashMap<&str, &str> = params.split('&').filter_map(|kv| kv.split_once('=')).collect();
    let (Some(sr), Some(sig), Some(se), Some(skn)) =
        (params.get("sr"), params.get("sig"), params.get("se"), params.get("skn"))
    else {
        return Err("a SAS token needs sr, sig, se and skn");
    };
    let rules = shared.rules.lock().expect("rules lock");
    let (key, rights) = rules.get(&decode(skn, true)).ok_or("unknown key name")?;
    // The signature covers sr exactly as sent (still URL-encoded) and se.
    let expected = B64.encode(hmac(key.as_bytes(), format!("{sr}\n{se}").as_bytes()));
    if decode(sig, true) != expected {
        return Err("signature mismatch");
    }
    if se.parse::<u64>().map_err(|_| "se is not a number")? <= unix_now() {
        return Err("token expired");
    }
    if !audience_covers(sr, entity) {
        // The real service's words for it.
        return Err("InvalidAudience: The authorization header contains a token with a wrong audience.");
    }
    if !rights.contains(&need) {
        return Err("the rule lacks the right for this operation");
    }
    Ok(())
}

/// Whether a token's `sr` (as sent) grants access to `entity` of [`NAMESPACE`], as the
/// real service decides it (Microsoft's "Service Bus access control with Shared Access
/// Signatures"): `sr` is the percent-encoded URI of the namespace, the entity, or one of
/// the entity's hierarchical parents (a topic for its subscriptions), with an `https`,
/// `http` or `sb` scheme, compared case-insensitively; the token is valid for everything
/// under that URI, on path-segment boundaries. The address the request was sent to plays
/// no part: behind a private endpoint or a proxy the audience is still the namespace.
fn audience_covers(sr: &str, entity: &str) -> bool {
    // Percent-encoded: a bare ':' or '/' means the client signed the URI unencoded.
    if sr.contains([':', '/']) {
        return false;
    }
    let resource = decode(sr, true).to_ascii_lowercase();
    let Some(rest) = ["https://", "http://", "sb://"]
        .iter()
        .find_map(|scheme| resource.strip_prefix(scheme))
    else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host != NAMESPACE {
        return false;
    }
    let path = path.trim_end_matches('/');
    let entity = entity.to_ascii_lowercase();
    path.is_empty() || entity == path || entity.starts_with(&format!("{path}/"))
}

fn status(code: StatusCode, why: &str) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(why.to_owned()))
        .expect("valid response")
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = decode(uri.path(), false);
    let resp = route(&shared, &method, &path, uri.query().unwrap_or(""), &headers, body).await;
    shared.requests.lock().expect("requests lock").push(Request {
        method: method.to_string(),
        path: uri.query().map_or(path.clone(), |q| format!("{path}?{q}")),
        status: resp.status().as_u16(),
    });
    resp
}

async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let Some(i) = segs
        .iter()
        .position(|s| s.eq_ignore_ascii_case("messages"))
        .filter(|i| *i > 0)
    else {
        return status(StatusCode::NOT_FOUND, "not a Service Bus runtime URL");
    };
    let entity = segs[..i].join("/");
    let rest = &segs[i + 1..];
    let need = if rest.is_empty() { Right::Send } else { Right::Listen };
    if let Err(why) = authorize(shared, headers, &entity, need) {
        return status(StatusCode::UNAUTHORIZED, why);
    }
    let now = Instant::now();
    match (method.clone(), rest) {
        (Method::POST, []) => send(shared, &entity, headers, body),
        (Method::POST, [head]) if head.eq_ignore_ascii_case("head") => peek_lock(shared, &entity, query).await,
        (Method::DELETE, [head]) if head.eq_ignore_ascii_case("head") => {
            let taken = shared.broker.lock().expect("broker lock").take_next(&entity);
            match taken {
                Ok(Some(m)) => message_response(shared, StatusCode::OK, &entity, &m, None),
                Ok(None) => status(StatusCode::NO_CONTENT, ""),
                Err(_) => status(StatusCode::GONE, "no such entity"),
            }
        }
        (m @ (Method::DELETE | Method::PUT | Method::POST), [id, token]) => {
            let op = match m {
                Method::DELETE => SettleOp::Complete,
                Method::PUT => SettleOp::Abandon,
                _ => SettleOp::Renew,
            };
            let result = shared
                .broker
                .lock()
                .expect("broker lock")
                .settle(&entity, id, token, op, now);
            match result {
                Ok(_) => {
                    if op == SettleOp::Abandon {
                        shared.notify.notify_waiters();
                    }
                    Response::builder()
                        .status(StatusCode::OK)
                        .header(header::CONTENT_TYPE, "application/atom+xml;type=entry;charset=utf-8")
                        .body(Body::empty())
                        .expect("valid response")
                }
                Err(Failure::NoLock) => status(StatusCode::NOT_FOUND, "no message with that id and lock token"),
                Err(Failure::NoEntity) => status(StatusCode::GONE, "no such entity"),
            }
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation"),
    }
}

/// Headers that are HTTP, not custom properties, on send.
const STANDARD_HEADERS: [&str; 12] = [
    "authorization",
    "content-type",
    "content-length",
    "host",
    "brokerproperties",
    "user-agent",
    "accept",
    "accept-encoding",
    "connection",
    "transfer-encoding",
    "expect",
    "date",
];

fn send(shared: &Shared, entity: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let props: serde_json::Value = match headers
        .get("BrokerProperties")
        .map(|v| serde_json::from_slice(v.as_bytes()))
    {
        None => serde_json::Value::Null,
        Some(Ok(v)) => v,
        Some(Err(_)) => return status(StatusCode::BAD_REQUEST, "BrokerProperties is not JSON"),
    };
    let text = |k: &str| props.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let mut m = Broker::new_message(text("MessageId"), body);
    m.label = text("Label");
    m.content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    m.properties = headers
        .iter()
        .filter(|(n, _)| !STANDARD_HEADERS.contains(&n.as_str()) && !n.as_str().starts_with("x-ms-"))
        .filter_map(|(n, v)| Some((n.to_string(), v.to_str().ok()?.to_owned())))
        .collect();
    let sent = shared
        .broker
        .lock()
        .expect("broker lock")
        .send(entity, m, Instant::now());
    match sent {
        Ok(_) => {
            shared.notify.notify_waiters();
            status(StatusCode::CREATED, "")
        }
        Err(_) => status(StatusCode::GONE, "no such queue or topic"),
    }
}

async fn peek_lock(shared: &Arc<Shared>, entity: &str, query: &str) -> Response {
    let timeout = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("timeout"))
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(60);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = Instant::now();
        let locked = {
            let mut b = shared.broker.lock().expect("broker lock");
            b.expire(now);
            b.lock_next(entity, now).map(|m| (m, b.lock_duration(entity)))
        };
        match locked {
            Err(_) => return status(StatusCode::GONE, "no such queue or subscription"),
            Ok((Some(m), lock_duration)) => {
                return message_response(shared, StatusCode::CREATED, entity, &m, lock_duration);
            }
            Ok((None, _)) => {}
        }
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(deadline) => return status(StatusCode::NO_CONTENT, ""),
        }
    }
}

/// A received message: `BrokerProperties` (RFC 1123 dates), `Location`, the sender's
/// content type, custom properties as headers, the body.
fn message_response(shared: &Shared, code: StatusCode, entity: &str, m: &Message, lock: Option<Duration>) -> Response {
    let now = SystemTime::now();
    let mut props = serde_json::json!({
        "DeliveryCount": m.delivery_count,
        "EnqueuedSequenceNumber": 0,
        "EnqueuedTimeUtc": httpdate::fmt_http_date(m.enqueued),
        "MessageId": m.message_id,
        "SequenceNumber": m.seq,
        "State": "Active",
        "TimeToLive": 922_337_203_685.477_5,
    });
    if let Some(l) = &m.label {
        props["Label"] = l.clone().into();
    }
    let mut b = Response::builder()
        .status(code)
        .header(header::DATE, httpdate::fmt_http_date(now))
        .header(
            header::CONTENT_TYPE,
            m.content_type
                .as_deref()
                .unwrap_or("application/atom+xml;type=entry;charset=utf-8"),
        );
    if let (Some((token, until)), Some(_)) = (&m.lock, lock) {
        let left = until.saturating_duration_since(Instant::now());
        props["LockToken"] = token.clone().into();
        props["LockedUntilUtc"] = httpdate::fmt_http_date(now + left).into();
        b = b.header(
            header::LOCATION,
            format!("http://{}/{entity}/messages/{}/{token}", shared.addr, m.seq),
        );
    }
    b = b.header("BrokerProperties", props.to_string());
    for (name, value) in &m.properties {
        if let (Ok(n), Ok(v)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            b = b.header(n, v);
        }
    }
    b.body(Body::from(m.body.clone())).expect("valid response")
}
