//! Azure Service Bus source over the documented REST data-plane API (a thin client on
//! reqwest): peek-lock receive with a long poll, lock renewal while a copy runs, complete
//! (DELETE) on success, abandon (PUT, "unlock") on failure.
//!
//! Role: `receivers` tasks long-poll `POST {base}/{entity}/messages/head?timeout=N`
//! (201 = a locked message, 204 = none yet) and feed a small channel that
//! [`ServiceBusSource::next`] reads. Each delivery gets a renewal task (POST to the
//! `Location` URL at half of the lock time left, computed from `LockedUntilUtc` and the
//! broker's `Date`) that stops when its [`AckHandle`] is settled or dropped; the handle
//! sends (lock URL, complete or abandon) to a settle task that talks to the broker.
//!
//! Must never: settle a message by itself (only the pipeline's settlement or a dropped
//! handle does; buffered messages nobody took are abandoned at close), crash or stop on a
//! lost lock (404: logged at warn and counted in `regrelay_lock_lost_total`; the message
//! comes back and is processed again idempotently), trust the message's content type (the
//! body goes to the decoder as bytes), or log a key or a token.
//!
//! Credentials: SAS tokens are signed locally from a shared access key ([`SasTokenSource`]);
//! Entra ID tokens come from [`crate::credentials::EntraTokens`] ([`EntraBearer`]). A 401
//! or 403 makes the [`TokenSource`] fetch a new token before the next request.
//!
//! Rejects: the REST API cannot dead-letter explicitly, so a rejected message is either
//! abandoned until the entity's `MaxDeliveryCount` moves it to the dead-letter queue
//! ([`RejectMode::Nack`], the default for this source) or completed and counted
//! ([`RejectMode::Ack`]). Protocol facts: `/work/shared/reference/protocols.md` §3.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use reqwest::{Method, StatusCode, header};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{AckHandle, Delivery, Settlement, Source, reject_as};
use crate::config::{RejectMode, ServiceBusAuth, ServiceBusConfig};
use crate::credentials::EntraTokens;
use crate::metrics;
use crate::retry::{Jitter, Schedule};

mod auth;

use auth::urlencode;
pub use auth::{EntraBearer, SasTokenSource, TokenSource, sas_token};

/// Longest wait for pending settlements to reach the broker at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies are read up to this size (+1 byte, so the decoder sees that it is too large).
const MAX_BODY_BYTES: usize = 1 << 20;
/// Timeout of a settle or renew request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// In-process attempts of one settle request (STYLE.md 3: 3 attempts, 100 ms to 2 s).
const SETTLE_ATTEMPTS: u32 = 3;
/// Delays between the attempts of one settle request.
const SETTLE_BACKOFF: Schedule = Schedule::new(Duration::from_millis(100), Duration::from_secs(2))
    .attempts(SETTLE_ATTEMPTS)
    .jitter(Jitter::Half);
/// Delays between failed receives (reset by a success).
const RECEIVE_BACKOFF: Schedule =
    Schedule::new(Duration::from_millis(100), Duration::from_secs(30)).jitter(Jitter::Half);
/// Transient receive failures retried quietly before they surface from `next()`.
const QUIET_RECEIVE_FAILURES: u32 = 2;
/// The shortest wait between two renewals.
const MIN_RENEW_WAIT: Duration = Duration::from_millis(200);
const KIND: &str = "servicebus";

/// Why the source could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Entra ID settings were refused by the token provider.
    #[error("entra auth for Service Bus: {0}")]
    Entra(String),
    /// The HTTP client could not be built.
    #[error("cannot create the Service Bus HTTP client: {0}")]
    Client(String),
}

/// The fields of the `BrokerProperties` response header regrelay uses. Dates are RFC 1123
/// strings (`"Wed, 02 Jul 2014 01:33:27 GMT"`), not ISO 8601.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerProperties {
    /// `MessageId`.
    pub message_id: Option<String>,
    /// `LockToken` (a GUID).
    pub lock_token: Option<String>,
    /// `SequenceNumber`.
    pub sequence_number: Option<i64>,
    /// `DeliveryCount`: 1 on the first delivery.
    pub delivery_count: Option<u32>,
    /// `LockedUntilUtc`.
    pub locked_until: Option<SystemTime>,
    /// `EnqueuedTimeUtc`.
    pub enqueued: Option<SystemTime>,
}

impl BrokerProperties {
    /// Parse the header's JSON; unknown fields are ignored, a malformed date is an error.
    pub fn parse(text: &str) -> Result<BrokerProperties, String> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Raw {
            message_id: Option<String>,
            lock_token: Option<String>,
            sequence_number: Option<i64>,
            delivery_count: Option<u32>,
            locked_until_utc: Option<String>,
            enqueued_time_utc: Option<String>,
        }
        let raw: Raw = serde_json::from_str(text).map_err(|e| format!("BrokerProperties is not valid JSON: {e}"))?;
        let date = |field: &str, v: Option<String>| {
            v.map(|s| {
                httpdate::parse_http_date(&s).map_err(|_| format!("BrokerProperties.{field} is not an RFC 1123 date"))
            })
            .transpose()
        };
        Ok(BrokerProperties {
            message_id: raw.message_id,
            lock_token: raw.lock_token,
            sequence_number: raw.sequence_number,
            delivery_count: raw.delivery_count,
            locked_until: date("LockedUntilUtc", raw.locked_until_utc)?,
            enqueued: date("EnqueuedTimeUtc", raw.enqueued_time_utc)?,
        })
    }
}

/// The wire: HTTP client, credentials, base URL and entity path.
struct Wire {
    http: reqwest::Client,
    auth: Arc<dyn TokenSource>,
    base: url::Url,
    entity: String,
    wait: Duration,
}

/// A failed receive: what went wrong and whether retrying soon may help.
struct ReceiveFailure {
    reason: String,
    transient: bool,
}

/// A locked message as received.
struct Locked {
    lock_url: String,
    props: BrokerProperties,
    lock_time: Duration,
    body: Bytes,
}

impl Wire {
    async fn send(&self, method: Method, url: &str, timeout: Duration) -> Result<reqwest::Response, ReceiveFailure> {
        let auth = self.auth.authorization().await.map_err(|reason| ReceiveFailure {
            reason: format!("cannot get a Service Bus token: {reason}"),
            transient: true,
        })?;
        self.http
            .request(method, url)
            .header(header::AUTHORIZATION, auth.expose())
            .header(header::CONTENT_LENGTH, "0")
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| ReceiveFailure {
                reason: format!("request to {} failed: {e}", self.base),
                transient: true,
            })
    }

    /// One peek-lock long poll: `Ok(None)` when no message came within the wait.
    async fn receive(&self) -> Result<Option<Locked>, ReceiveFailure> {
        let url = format!(
            "{}{}/messages/head?timeout={}",
            self.base,
            self.entity,
            self.wait.as_secs()
        );
        let resp = self.send(Method::POST, &url, self.wait + REQUEST_TIMEOUT).await?;
        let status = resp.status();
        match status {
            StatusCode::CREATED => {}
            StatusCode::NO_CONTENT => return Ok(None),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                self.auth.refused();
                return Err(ReceiveFailure {
                    reason: format!(
                        "peek-lock on {} failed: the broker refused our credentials ({status})",
                        self.entity
                    ),
                    transient: false,
                });
            }
            s => {
                let transient =
                    s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS;
                let what = match s.as_u16() {
                    404 | 410 => "the queue or subscription does not exist",
                    _ => "unexpected answer",
                };
                return Err(ReceiveFailure {
                    reason: format!("peek-lock on {} failed: {what} ({s})", self.entity),
                    transient,
                });
            }
        }
        let broker_now = resp
            .headers()
            .get(header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let props = resp
            .headers()
            .get("BrokerProperties")
            .ok_or_else(|| "no BrokerProperties header".to_owned())
            .and_then(|v| v.to_str().map_err(|_| "BrokerProperties is not text".to_owned()))
            .and_then(BrokerProperties::parse);
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let lock_url = self.lock_url(location.as_deref(), props.as_ref().ok());
        let body = read_capped(resp).await;
        let (props, lock_url, body, until) = match (props, lock_url, body) {
            (Ok(p), Some(u), Ok(b)) if p.lock_token.is_some() && p.locked_until.is_some() => {
                let until = p.locked_until.unwrap_or(UNIX_EPOCH);
                (p, u, b, until)
            }
            (props, lock_url, body) => {
                let problem = match (props, &lock_url, body) {
                    (Err(e), _, _) => e,
                    (_, None, _) => "neither a usable Location nor a sequence number".to_owned(),
                    (_, _, Err(e)) => format!("reading the body failed: {e}"),
                    _ => "BrokerProperties lacks LockToken or LockedUntilUtc".to_owned(),
                };
                // Not processable: give the lock back so that the broker's delivery count
                // (and eventually its dead-letter queue) deals with it.
                if let Some(url) = &lock_url {
                    let _ = self.send(Method::PUT, url, REQUEST_TIMEOUT).await;
                }
                return Err(ReceiveFailure {
                    reason: format!("peek-lock on {} returned an unusable message: {problem}", self.entity),
                    transient: true,
                });
            }
        };
        // Both dates come from the broker's clock, so local clock skew does not matter.
        let now = broker_now.unwrap_or_else(SystemTime::now);
        let lock_time = until
            .duration_since(now)
            .unwrap_or_default()
            .max(Duration::from_secs(1));
        Ok(Some(Locked {
            lock_url,
            props,
            lock_time,
            body,
        }))
    }

    /// The URL for settle and renew calls: the `Location` header as-is when it points at
    /// our endpoint (the token must not go anywhere else), else built from the sequence
    /// number and the lock token.
    fn lock_url(&self, location: Option<&str>, props: Option<&BrokerProperties>) -> Option<String> {
        if let Some(loc) = location.and_then(|l| url::Url::parse(l).ok())
            && loc.origin() == self.base.origin()
        {
            return Some(loc.into());
        }
        let props = props?;
        let token = props.lock_token.as_deref()?;
        let seq = props.sequence_number?;
        Some(format!(
            "{}{}/messages/{seq}/{}",
            self.base,
            self.entity,
            urlencode(token)
        ))
    }
}

async fn read_capped(mut resp: reqwest::Response) -> Result<Bytes, reqwest::Error> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        buf.extend_from_slice(&chunk);
        if buf.len() > MAX_BODY_BYTES {
            buf.truncate(MAX_BODY_BYTES + 1);
            break;
        }
    }
    Ok(buf.freeze())
}

/// What the settle task does with a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// DELETE: the message is done.
    Complete,
    /// PUT: unlock, the broker delivers it again (DeliveryCount + 1).
    Abandon,
}

struct SettleRequest {
    url: String,
    op: Op,
    message_id: String,
    lost: Arc<AtomicBool>,
}

/// Count and log a lost lock once per delivery.
fn lock_lost(lost: &AtomicBool, message_id: &str, during: &str) {
    if !lost.swap(true, Ordering::SeqCst) {
        metrics::global().lock_lost();
        tracing::warn!(
            message_id,
            during,
            "lock lost (404): the message will be delivered again"
        );
    }
}

/// A Service Bus queue or topic subscription as a [`Source`].
pub struct ServiceBusSource {
    entity: String,
    rx: mpsc::Receiver<Result<Delivery, super::Error>>,
    settle_tx: mpsc::UnboundedSender<SettleRequest>,
    stop: CancellationToken,
    receivers: Vec<JoinHandle<()>>,
    settler: JoinHandle<()>,
}

impl std::fmt::Debug for ServiceBusSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBusSource")
            .field("entity", &self.entity)
            .finish()
    }
}

/// What each receiver needs to turn a locked message into a [`Delivery`].
struct Shared {
    wire: Arc<Wire>,
    reject: RejectMode,
    lock_renew: Option<Duration>,
    settle_tx: mpsc::UnboundedSender<SettleRequest>,
    stop: CancellationToken,
}

impl ServiceBusSource {
    /// Build the client and start the receivers (they connect on their first poll).
    pub async fn connect(cfg: &ServiceBusConfig, reject: RejectMode) -> Result<ServiceBusSource, Error> {
        let auth: Arc<dyn TokenSource> = match &cfg.auth {
            // Signed for the namespace's entity URI even behind an `endpoint` override
            // (issue 9): the broker checks the audience, not where the request came in.
            ServiceBusAuth::Sas { key_name, key } => Arc::new(SasTokenSource::new(
                auth::sas_audience(&cfg.namespace, &cfg.entity.path()),
                key_name.clone(),
                key.clone(),
            )),
            ServiceBusAuth::Entra { entra, scope } => Arc::new(EntraBearer::new(
                EntraTokens::from_config(entra).map_err(|e| Error::Entra(e.to_string()))?,
                scope.clone(),
            )),
        };
        ServiceBusSource::with_token_source(cfg, reject, auth)
    }

    /// Like [`ServiceBusSource::connect`] with explicit credentials (Entra, tests).
    pub fn with_token_source(
        cfg: &ServiceBusConfig,
        reject: RejectMode,
        auth: Arc<dyn TokenSource>,
    ) -> Result<ServiceBusSource, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("regrelay/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        let base = url::Url::parse(&format!("{}/", cfg.base_url())).map_err(|e| Error::Client(e.to_string()))?;
        let wire = Arc::new(Wire {
            http,
            auth,
            base,
            entity: cfg.entity.path(),
            wait: cfg.wait,
        });
        let (tx, rx) = mpsc::channel(1);
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let shared = Arc::new(Shared {
            wire: wire.clone(),
            reject,
            lock_renew: cfg.lock_renew,
            settle_tx: settle_tx.clone(),
            stop: stop.clone(),
        });
        tracing::info!(
            namespace = %cfg.namespace,
            entity = %wire.entity,
            receivers = cfg.receivers,
            "receiving from Service Bus"
        );
        let receivers = (0..cfg.receivers.max(1))
            .map(|_| tokio::spawn(receiver(shared.clone(), tx.clone())))
            .collect();
        let settler = tokio::spawn(settler(wire.clone(), settle_rx));
        Ok(ServiceBusSource {
            entity: wire.entity.clone(),
            rx,
            settle_tx,
            stop,
            receivers,
            settler,
        })
    }
}

impl Source for ServiceBusSource {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn next(&mut self) -> Option<Result<Delivery, super::Error>> {
        self.rx.recv().await
    }

    async fn close(mut self) {
        self.stop.cancel();
        for r in self.receivers.drain(..) {
            let _ = r.await;
        }
        // Locked messages nobody took: give them back now rather than at lock expiry.
        self.rx.close();
        while let Ok(item) = self.rx.try_recv() {
            if let Ok(d) = item {
                d.handle.nack();
            }
        }
        drop(self.settle_tx);
        if tokio::time::timeout(CLOSE_TIMEOUT, self.settler).await.is_err() {
            tracing::warn!("pending Service Bus settlements not flushed within {CLOSE_TIMEOUT:?}");
        }
    }
}

async fn receiver(shared: Arc<Shared>, tx: mpsc::Sender<Result<Delivery, super::Error>>) {
    let mut failures = 0u32;
    let mut backoff = RECEIVE_BACKOFF.start();
    loop {
        let received = tokio::select! {
            r = shared.wire.receive() => r,
            () = shared.stop.cancelled() => return,
        };
        match received {
            Ok(None) => {
                failures = 0;
                backoff.reset();
            }
            Ok(Some(locked)) => {
                failures = 0;
                backoff.reset();
                let delivery = shared.delivery(locked);
                tokio::select! {
                    permit = tx.reserve() => match permit {
                        Ok(p) => p.send(Ok(delivery)),
                        Err(_) => return,
                    },
                    // Shutting down: the drop abandons it.
                    () = shared.stop.cancelled() => return,
                }
            }
            Err(f) => {
                failures += 1;
                if !(f.transient && failures <= QUIET_RECEIVE_FAILURES) {
                    tracing::warn!(error = %f.reason, failures, "Service Bus receive failed");
                    // Surface it so that the pipeline reports not-ready; never block on it
                    // (a full channel means messages are flowing anyway).
                    let _ = tx.try_send(Err(super::Error::Receive {
                        source_kind: KIND,
                        reason: f.reason,
                    }));
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay().unwrap_or(Duration::from_secs(30))) => {}
                    () = shared.stop.cancelled() => return,
                }
            }
        }
    }
}

impl Shared {
    /// Wrap a locked message: start its renewal, install the settle closure.
    fn delivery(&self, locked: Locked) -> Delivery {
        let Locked {
            lock_url,
            props,
            lock_time,
            body,
        } = locked;
        let id = props
            .message_id
            .clone()
            .or_else(|| props.sequence_number.map(|s| s.to_string()))
            .unwrap_or_default();
        let cancel = self.stop.child_token();
        let lost = Arc::new(AtomicBool::new(false));
        tokio::spawn(renew(
            self.wire.clone(),
            lock_url.clone(),
            lock_time,
            self.lock_renew,
            cancel.clone(),
            lost.clone(),
            id.clone(),
        ));
        let settle_tx = self.settle_tx.clone();
        let mode = self.reject;
        let message_id = id.clone();
        let handle = AckHandle::new(move |s| {
            // Stop renewing before the settlement goes out, so a late renew's 404 is not
            // mistaken for a lost lock.
            cancel.cancel();
            let op = match s {
                Settlement::Ack => Op::Complete,
                Settlement::Nack => Op::Abandon,
                Settlement::Reject => match reject_as(mode) {
                    Settlement::Ack => Op::Complete,
                    _ => Op::Abandon,
                },
            };
            let _ = settle_tx.send(SettleRequest {
                url: lock_url,
                op,
                message_id,
                lost,
            });
        });
        Delivery {
            id,
            payload: body,
            published: props.enqueued,
            attempt: props.delivery_count,
            handle,
        }
    }
}

/// How long to wait before the next renewal: `every` (when configured) but never later
/// than half of the lock time `left`, and not more often than [`MIN_RENEW_WAIT`].
fn renew_wait(left: Duration, every: Option<Duration>) -> Duration {
    let half = left / 2;
    every.map_or(half, |e| e.min(half)).max(MIN_RENEW_WAIT)
}

/// Keep the lock of one delivery until `cancel` (settled or dropped) or a lost lock.
async fn renew(
    wire: Arc<Wire>,
    url: String,
    lock_time: Duration,
    every: Option<Duration>,
    cancel: CancellationToken,
    lost: Arc<AtomicBool>,
    message_id: String,
) {
    let mut deadline = Instant::now() + lock_time;
    let mut failures = 0u32;
    loop {
        let wait = renew_wait(deadline.saturating_duration_since(Instant::now()), every);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = cancel.cancelled() => return,
        }
        let sent = Instant::now();
        let result = tokio::select! {
            r = wire.send(Method::POST, &url, REQUEST_TIMEOUT) => r,
            () = cancel.cancelled() => return,
        };
        if cancel.is_cancelled() {
            return;
        }
        match result.map(|r| r.status()) {
            Ok(StatusCode::OK) => {
                // Renewal extends the lock by the entity's lock duration from now.
                deadline = sent + lock_time;
                failures = 0;
                tracing::debug!(message_id, "lock renewed");
            }
            Ok(StatusCode::NOT_FOUND) => return lock_lost(&lost, &message_id, "renew"),
            other => {
                failures += 1;
                if matches!(other, Ok(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)) {
                    wire.auth.refused();
                }
                let error = match other {
                    Ok(s) => s.to_string(),
                    Err(f) => f.reason,
                };
                tracing::warn!(message_id, %error, failures, "lock renewal failed; retrying");
                if Instant::now() > deadline + lock_time {
                    return lock_lost(&lost, &message_id, "renew");
                }
            }
        }
    }
}

/// Run settle requests concurrently until every sender is gone, then wait for them.
async fn settler(wire: Arc<Wire>, mut rx: mpsc::UnboundedReceiver<SettleRequest>) {
    let tracker = TaskTracker::new();
    while let Some(req) = rx.recv().await {
        tracker.spawn(settle(wire.clone(), req));
    }
    tracker.close();
    tracker.wait().await;
}

async fn settle(wire: Arc<Wire>, req: SettleRequest) {
    let (method, during) = match req.op {
        Op::Complete => (Method::DELETE, "complete"),
        Op::Abandon => (Method::PUT, "abandon"),
    };
    let message_id = req.message_id.as_str();
    let mut backoff = SETTLE_BACKOFF.start();
    loop {
        let error = match wire.send(method.clone(), &req.url, REQUEST_TIMEOUT).await {
            Ok(r) if r.status() == StatusCode::OK => {
                tracing::debug!(message_id, during, "settled with Service Bus");
                return;
            }
            Ok(r) if r.status() == StatusCode::NOT_FOUND => return lock_lost(&req.lost, message_id, during),
            Ok(r) if matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                // A token refused after it worked for the receive: fetch a new one and retry.
                wire.auth.refused();
                r.status().to_string()
            }
            Ok(r) if !(r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS) => {
                tracing::warn!(message_id, during, status = %r.status(), "settlement refused");
                return;
            }
            Ok(r) => r.status().to_string(),
            Err(f) => f.reason,
        };
        let Some(delay) = backoff.next_delay() else {
            tracing::warn!(message_id, during, %error, "settlement failed; the lock will expire and the message come back");
            return;
        };
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests;
