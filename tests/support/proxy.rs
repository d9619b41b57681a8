//! `FaultProxy`: an in-process HTTP reverse proxy on loopback for fault injection.
//!
//! Role: sit between the code under test and a real registry, forward every
//! request unchanged (method, path and query, headers including `Host`,
//! streaming bodies both ways) and inject faults chosen at run time by
//! [`Rule`]s: canned statuses, stalls, resets mid-body, corrupted bodies,
//! 413 for large uploads and a dead upstream.
//!
//! Must never: buffer a whole body (a 1 GiB blob passes through), follow
//! redirects, decompress, or bind anything but `127.0.0.1`.
//!
//! Invariants: the incoming `Host` header is forwarded, so the absolute
//! `Location` URLs distribution builds point back at the proxy; rules are
//! checked in insertion order and the first matching rule with remaining
//! `times` fires and is decremented; every request is recorded as a [`Seen`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use tokio::task::JoinHandle;

/// After the last byte before a `ResetAfter` abort, wait this long so hyper
/// flushes those bytes before the body error tears the connection down.
const RESET_FLUSH_DELAY: Duration = Duration::from_millis(100);

/// What a matching [`Rule`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer with this status without forwarding (e.g. 500, 503, or 429 with
    /// `retry_after: Some("1")`); `body` is sent as JSON if it starts with `{`.
    /// The request body is read and discarded first so the client sees the answer.
    Status {
        /// HTTP status code.
        code: u16,
        /// Value of a `Retry-After` header, if any.
        retry_after: Option<String>,
        /// Response body, if any.
        body: Option<String>,
    },
    /// Forward, but abort the response body after `bytes` bytes (the client
    /// sees a connection closed before `Content-Length` was reached).
    ResetAfter {
        /// Bytes of the response body delivered before the abort.
        bytes: u64,
    },
    /// Wait `delay`, then forward.
    Stall {
        /// How long to wait before forwarding.
        delay: Duration,
    },
    /// Forward, but pause the response body for `delay` after its first `bytes`
    /// bytes (a source that stops sending mid-blob).
    StallAfter {
        /// Bytes of the response body delivered before the pause.
        bytes: u64,
        /// How long the body pauses.
        delay: Duration,
    },
    /// Forward the first `bytes` bytes of the *request* body upstream, then abort
    /// the upstream request and close the client's connection without an answer:
    /// a connection reset in the middle of an upload, seen from both ends.
    ResetRequestAfter {
        /// Bytes of the request body that reach the upstream before the abort.
        bytes: u64,
    },
    /// Forward, but invert all bits of the byte at `Content-Length / 2` of the
    /// response body (length unchanged). Without a `Content-Length` the first
    /// byte is flipped.
    CorruptBody,
    /// Answer 413 without forwarding when the request's `Content-Length`
    /// exceeds `bytes` (the body is discarded). The rule only matches such
    /// requests, so smaller ones neither fire it nor use up its `times`. A
    /// streamed body (`Transfer-Encoding`, no length) matches, is read up to
    /// `bytes`, and is answered 413 once it grows past them, or forwarded when
    /// it ends first (then it has used up one of the rule's `times`).
    Reject413IfBodyOver {
        /// Largest accepted `Content-Length`.
        bytes: u64,
    },
    /// Close the connection without sending any response. Implemented as a
    /// response body that fails before the first byte, which makes hyper drop
    /// the connection with the response head still unsent. A HEAD request gets
    /// no answer at all instead (it has no body to fail), until the client gives up.
    Down,
    /// Forward, and add these headers to the answer (for example Docker Hub's
    /// `ratelimit-remaining`).
    AddHeaders(Vec<(String, String)>),
}

/// A fault rule; see [`FaultProxy::add_rule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Only requests with this method (any if `None`).
    pub method: Option<Method>,
    /// Only requests whose path and query contain this (any if `None`).
    pub path_contains: Option<String>,
    /// How many times the rule fires; 0 = forever.
    pub times: usize,
    /// What happens when it fires.
    pub action: Action,
}

impl Rule {
    /// A rule that fires on every request, forever, until narrowed.
    pub fn new(action: Action) -> Self {
        Rule {
            method: None,
            path_contains: None,
            times: 0,
            action,
        }
    }

    /// Shorthand for a [`Action::Status`] rule without `Retry-After` or body.
    pub fn status(code: u16) -> Self {
        Rule::new(Action::Status {
            code,
            retry_after: None,
            body: None,
        })
    }

    /// Restricts the rule to `method`.
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Restricts the rule to paths (with query) containing `needle`.
    pub fn path_contains(mut self, needle: impl Into<String>) -> Self {
        self.path_contains = Some(needle.into());
        self
    }

    /// Fires `n` times (0 = forever).
    pub fn times(mut self, n: usize) -> Self {
        self.times = n;
        self
    }
}

/// One request that reached the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Request method.
    pub method: Method,
    /// Path and query as received.
    pub path_and_query: String,
    /// Status sent to the client; `None` when the connection was closed
    /// without a response (`Down`).
    pub status: Option<u16>,
    /// The fault injected, e.g. `status 429`, `reset_after 100`, `stall 2s`,
    /// `corrupt_body`, `reject413`, `down`; `None` when forwarded untouched.
    /// An unreachable upstream shows as status 502 with fault `upstream_error`.
    pub fault: Option<String>,
}

struct ActiveRule {
    rule: Rule,
    fired: usize,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    rules: Mutex<Vec<ActiveRule>>,
    down: AtomicBool,
    seen: Mutex<Vec<Seen>>,
}

/// Guard for a running fault proxy; dropping it stops accepting connections.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` forwarding to `upstream_url`
    /// (e.g. `http://127.0.0.1:5000`).
    pub async fn start(upstream_url: &str) -> Self {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            // HTTP/1.1 upstream so the forwarded `Host` header is sent as is.
            .http1_only()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .expect("build proxy http client");
        let shared = Arc::new(Shared {
            upstream: upstream_url.trim_end_matches('/').to_owned(),
            client,
            rules: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind fault proxy on 127.0.0.1:0");
        let addr = listener.local_addr().expect("fault proxy addr");
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy { addr, shared, task }
    }

    /// Loopback address of the proxy.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Appends a rule (checked after the rules added before it).
    pub fn add_rule(&self, rule: Rule) {
        self.shared
            .rules
            .lock()
            .expect("rules lock")
            .push(ActiveRule { rule, fired: 0 });
    }

    /// Removes all rules.
    pub fn clear_rules(&self) {
        self.shared.rules.lock().expect("rules lock").clear();
    }

    /// While `true`, every request fails like [`Action::Down`].
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Every request seen since start or the last [`clear_log`](Self::clear_log).
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("seen lock").clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_log(&self) {
        self.shared.seen.lock().expect("seen lock").clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn record(&self, method: &Method, path_and_query: &str, status: Option<u16>, fault: Option<String>) {
        self.seen.lock().expect("seen lock").push(Seen {
            method: method.clone(),
            path_and_query: path_and_query.to_owned(),
            status,
            fault,
        });
    }

    /// The action of the first matching rule with remaining `times`, if any.
    fn pick(
        &self,
        method: &Method,
        path_and_query: &str,
        content_length: Option<u64>,
        streamed: bool,
    ) -> Option<Action> {
        let mut rules = self.rules.lock().expect("rules lock");
        let active = rules.iter_mut().find(|a| {
            let r = &a.rule;
            (r.times == 0 || a.fired < r.times)
                && r.method.as_ref().is_none_or(|m| m == method)
                && r.path_contains
                    .as_deref()
                    .is_none_or(|needle| path_and_query.contains(needle))
                && match r.action {
                    Action::Reject413IfBodyOver { bytes } => content_length.map_or(streamed, |n| n > bytes),
                    _ => true,
                }
        })?;
        active.fired += 1;
        Some(active.rule.action.clone())
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let pq = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let content_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());

    let streamed = content_length.is_none() && req.headers().contains_key(header::TRANSFER_ENCODING);
    let action = if shared.down.load(Ordering::SeqCst) {
        Some(Action::Down)
    } else {
        shared.pick(&method, &pq, content_length, streamed)
    };

    match action {
        None => forward(&shared, req, &pq, None, None).await,
        Some(Action::Down) => {
            shared.record(&method, &pq, None, Some("down".to_owned()));
            if method == Method::HEAD {
                // A HEAD answer has no body, so hyper would write the head before the
                // failing body could stop it: stay silent instead, until the client's
                // read timeout gives up, as with a host that does not answer.
                std::future::pending::<()>().await;
            }
            close_without_response()
        }
        Some(Action::Status {
            code,
            retry_after,
            body,
        }) => {
            discard_body(req).await;
            shared.record(&method, &pq, Some(code), Some(format!("status {code}")));
            canned(&method, code, retry_after.as_deref(), body)
        }
        Some(Action::Reject413IfBodyOver { bytes }) if streamed => {
            let (parts, body) = req.into_parts();
            let mut stream = body.into_data_stream();
            let mut head = BytesMut::new();
            while head.len() as u64 <= bytes {
                match stream.next().await {
                    Some(Ok(chunk)) => head.extend_from_slice(&chunk),
                    _ => break,
                }
            }
            if head.len() as u64 <= bytes {
                // It ended within the limit: forward what was read.
                let req = Request::from_parts(parts, Body::from(head.freeze()));
                return forward(&shared, req, &pq, None, None).await;
            }
            while let Some(Ok(_)) = stream.next().await {}
            shared.record(&method, &pq, Some(413), Some("reject413".to_owned()));
            canned(&method, 413, None, None)
        }
        Some(Action::Reject413IfBodyOver { .. }) => {
            discard_body(req).await;
            shared.record(&method, &pq, Some(413), Some("reject413".to_owned()));
            canned(&method, 413, None, None)
        }
        Some(Action::Stall { delay }) => {
            tokio::time::sleep(delay).await;
            forward(&shared, req, &pq, None, Some(format!("stall {delay:?}"))).await
        }
        Some(Action::ResetAfter { bytes }) => {
            let fault = Some(format!("reset_after {bytes}"));
            forward(&shared, req, &pq, Some(BodyFault::ResetAfter(bytes)), fault).await
        }
        Some(Action::CorruptBody) => {
            let fault = Some("corrupt_body".to_owned());
            forward(&shared, req, &pq, Some(BodyFault::Corrupt), fault).await
        }
        Some(Action::StallAfter { bytes, delay }) => {
            let fault = Some(format!("stall_after {bytes} {delay:?}"));
            forward(&shared, req, &pq, Some(BodyFault::StallAfter(bytes, delay)), fault).await
        }
        Some(Action::ResetRequestAfter { bytes }) => {
            let fault = Some(format!("reset_request_after {bytes}"));
            forward(&shared, req, &pq, Some(BodyFault::ResetRequest(bytes)), fault).await
        }
        Some(Action::AddHeaders(extra)) => {
            let mut resp = forward(&shared, req, &pq, None, Some("add_headers".to_owned())).await;
            for (k, v) in extra {
                if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), header::HeaderValue::from_str(&v)) {
                    resp.headers_mut().insert(k, v);
                }
            }
            resp
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum BodyFault {
    ResetAfter(u64),
    Corrupt,
    StallAfter(u64, Duration),
    /// Applies to the request body, not the response.
    ResetRequest(u64),
}

/// Headers that describe one connection and must not be forwarded (RFC 9110 7.6.1),
/// plus `expect`, which our own server already answered.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::EXPECT,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

async fn forward(
    shared: &Shared,
    req: Request,
    pq: &str,
    body_fault: Option<BodyFault>,
    fault: Option<String>,
) -> Response {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let has_body = parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    let mut headers = parts.headers;
    // `Host` stays: distribution builds absolute `Location` URLs from it.
    strip_hop_by_hop(&mut headers);
    let mut upstream_req = shared
        .client
        .request(method.clone(), format!("{}{pq}", shared.upstream))
        .headers(headers);
    if has_body {
        // Streamed; hyper honours the forwarded Content-Length (or chunks).
        let stream = body.into_data_stream().map(|c| c.map_err(io_err));
        upstream_req = match body_fault {
            Some(BodyFault::ResetRequest(limit)) => {
                upstream_req.body(reqwest::Body::wrap_stream(reset_after(stream, limit)))
            }
            _ => upstream_req.body(reqwest::Body::wrap_stream(stream)),
        };
    }
    let upstream = match upstream_req.send().await {
        Ok(resp) => resp,
        Err(_) if matches!(body_fault, Some(BodyFault::ResetRequest(_))) => {
            // The upstream saw its request cut off; the client sees its connection closed.
            shared.record(&method, pq, None, fault);
            return close_without_response();
        }
        Err(err) => {
            shared.record(&method, pq, Some(502), Some("upstream_error".to_owned()));
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from(format!("fault proxy: upstream request failed: {err}")))
                .expect("valid 502 response");
        }
    };

    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    strip_hop_by_hop(&mut headers);
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bodiless = method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || content_length == Some(0);
    shared.record(&method, pq, Some(status.as_u16()), fault);

    let body = if bodiless {
        Body::empty()
    } else {
        let stream = upstream.bytes_stream();
        match body_fault {
            None => Body::from_stream(stream),
            Some(BodyFault::ResetAfter(limit)) => Body::from_stream(reset_after(stream, limit)),
            Some(BodyFault::Corrupt) => {
                let target = content_length.map_or(0, |n| n / 2);
                Body::from_stream(corrupt_at(stream, target))
            }
            Some(BodyFault::StallAfter(limit, delay)) => Body::from_stream(stall_after(stream, limit, delay)),
            Some(BodyFault::ResetRequest(_)) => Body::from_stream(stream),
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

type Chunk = Result<Bytes, std::io::Error>;

fn io_err(err: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(err.to_string())
}

/// Passes `limit` bytes, then fails the body (after a short delay so the
/// bytes before the cut are flushed to the receiver first).
fn reset_after<E: std::fmt::Display>(
    upstream: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    limit: u64,
) -> impl Stream<Item = Chunk> + Send + 'static {
    let upstream = Box::pin(upstream);
    futures_util::stream::unfold((upstream, 0u64, false), move |(mut up, sent, done)| async move {
        if done {
            return None;
        }
        if sent >= limit {
            if limit > 0 {
                tokio::time::sleep(RESET_FLUSH_DELAY).await;
            }
            return Some((
                Err(io_err(format!("fault proxy: reset after {limit} bytes"))),
                (up, sent, true),
            ));
        }
        match up.next().await {
            None => None,
            Some(Err(err)) => Some((Err(io_err(err)), (up, sent, true))),
            Some(Ok(mut chunk)) => {
                let room = usize::try_from(limit - sent).unwrap_or(usize::MAX);
                chunk.truncate(room);
                let sent = sent + chunk.len() as u64;
                Some((Ok(chunk), (up, sent, false)))
            }
        }
    })
}

/// Passes `limit` bytes, then pauses for `delay` before passing the rest.
fn stall_after(
    upstream: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    limit: u64,
    delay: Duration,
) -> impl Stream<Item = Chunk> + Send + 'static {
    let up: futures_util::stream::BoxStream<'static, Chunk> = Box::pin(upstream.map(|c| c.map_err(io_err)));
    futures_util::stream::unfold((up, 0u64, false), move |(mut up, sent, stalled)| async move {
        let stalled = stalled || {
            if sent >= limit {
                tokio::time::sleep(delay).await;
            }
            sent >= limit
        };
        let mut chunk = match up.next().await? {
            Ok(chunk) => chunk,
            Err(err) => return Some((Err(err), (up, sent, true))),
        };
        let room = usize::try_from(limit.saturating_sub(sent)).unwrap_or(usize::MAX);
        if !stalled && chunk.len() > room {
            // Hold the rest back until after the pause.
            let rest = chunk.split_off(room);
            up = Box::pin(futures_util::stream::once(async move { Ok(rest) }).chain(up));
        }
        let sent = sent + chunk.len() as u64;
        Some((Ok(chunk), (up, sent, stalled)))
    })
}

/// Inverts all bits of the byte at offset `target`.
fn corrupt_at(
    upstream: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    target: u64,
) -> impl Stream<Item = Chunk> + Send + 'static {
    let mut offset = 0u64;
    upstream.map(move |item| {
        let chunk = item.map_err(io_err)?;
        let start = offset;
        offset += chunk.len() as u64;
        if (start..offset).contains(&target) {
            let mut bytes = BytesMut::from(&chunk[..]);
            let i = usize::try_from(target - start).expect("index within chunk");
            bytes[i] ^= 0xFF;
            Ok(bytes.freeze())
        } else {
            Ok(chunk)
        }
    })
}

/// A response whose body fails before its first byte: hyper then drops the
/// connection without writing the buffered head, so the client sees the
/// connection closed with no response.
fn close_without_response() -> Response {
    let failing =
        futures_util::stream::once(async { Err::<Bytes, _>(io_err("fault proxy: down, closing connection")) });
    let mut response = Response::new(Body::from_stream(failing));
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn canned(method: &Method, code: u16, retry_after: Option<&str>, body: Option<String>) -> Response {
    let status = StatusCode::from_u16(code).expect("valid status code in rule");
    let mut builder = Response::builder().status(status);
    if let Some(value) = retry_after {
        builder = builder.header(header::RETRY_AFTER, value);
    }
    let body = match body {
        Some(text) if *method != Method::HEAD => {
            let kind = if text.trim_start().starts_with('{') {
                "application/json"
            } else {
                "text/plain"
            };
            builder = builder.header(header::CONTENT_TYPE, kind);
            Body::from(text)
        }
        _ => Body::empty(),
    };
    builder.body(body).expect("valid canned response")
}

/// Reads and drops the request body (streaming) so a client that is still
/// uploading sees our answer instead of a reset.
async fn discard_body(req: Request) {
    let mut stream = req.into_body().into_data_stream();
    while let Some(Ok(_)) = stream.next().await {}
}
