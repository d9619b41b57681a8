//! `PubSubEmulator`: the Google Cloud Pub/Sub emulator as a child process group on loopback.
//!
//! Role: give a test a Pub/Sub emulator (`gcloud beta emulators pubsub start`,
//! package google-cloud-cli-pubsub-emulator, needs Java) and a small REST
//! client for setup and inspection: create topics and subscriptions, publish,
//! peek at and drain what a subscription still holds. The emulator serves
//! plaintext gRPC and the REST API (`/v1/...`) on the same port, so the code
//! under test can be pointed at [`PubSubEmulator::host_port`].
//!
//! Sharing: [`PubSubEmulator::start`] hands each test a project of its own
//! (`regrelay-test-N`) on one emulator process per test binary, so tests see
//! only their own topics and subscriptions while the suite starts one JVM per
//! binary instead of one per test. The shared process outlives every guard; a
//! small watchdog (`sh`) kills its group and removes its directory once the test
//! process is gone, however it ends. [`PubSubEmulator::start_dedicated`] gives a
//! test a process of its own (the harness self-tests of start, stop and kill).
//!
//! Must never: bind anything but `127.0.0.1` (the emulator binds IPv6 unless
//! `--host-port=127.0.0.1:PORT` is given), inherit the test's environment or
//! write into the real home (gcloud gets a private `HOME`/`CLOUDSDK_CONFIG`),
//! talk to the internet, or use `unsafe`.
//!
//! Invariants: `gcloud` is a Python wrapper that starts `java -jar
//! cloud-pubsub-emulator-*.jar`, so the child is spawned in its own process
//! group and every signal goes to the whole group (`kill -SIG -- -PGID`, the
//! `kill` utility, no libc). The group leader (`gcloud`) is reaped only after
//! the group has been signalled and has no live member left, so the PGID can
//! never have been reused by an unrelated group when it is signalled. Dropping
//! the guard SIGKILLs the group, waits for it to die and, while panicking,
//! prints the log tail. Ports are reserved like `TestRegistry`'s (bind
//! `127.0.0.1:0`, never hand one out twice) and startup retries with a new port
//! when the emulator reports `Address already in use`.
//!
//! Measured on the 2-core development machine (emulator 0.8.20, OpenJDK 17):
//! - Start (`start()` call to ready): ~1.9 s alone, 1.7-2.8 s with two
//!   starting at once (the self-test on 2 test threads). A JVM start can take
//!   much longer under a parallel cargo build, hence the 60 s
//!   [`EMULATOR_READY_DEADLINE`]. SIGTERM to the group: gone after ~2.3 s.
//! - Port already taken: Java prints `java.net.BindException: Address already
//!   in use` and then HANGS (it does not exit), so the log is watched for it.
//! - `returnImmediately: true` pulls returned every deliverable message on the
//!   first try in 50 publish-then-pull trials (no spurious empty first pull was
//!   seen); [`peek`](PubSubEmulator::peek) and [`drain`](PubSubEmulator::drain)
//!   still only stop after pulls have stayed empty for [`PULL_SETTLE`].
//! - One pull returns at most 100 messages whatever `maxMessages` is (0 is
//!   rejected: "No max_messages specified"); one publish takes at most 1000
//!   messages ("Too many messages to publish"); empty `data` without
//!   attributes is rejected ("Some messages are empty").
//! - `modifyAckDeadline` with 0 redelivers at once: the very next pull (about
//!   40 ms later) returns the messages again, with new ackIds.
//! - Ack-deadline expiry redelivers exactly on time (measured 0.96 s, 2.02 s,
//!   5.01 s, 10.02 s after the pull for deadlines 1, 2, 5, 10 s;
//!   `modifyAckDeadline` 20 extended it to 20.03 s). Unlike real Pub/Sub
//!   (minimum 10 s) the emulator accepts `ackDeadlineSeconds` 1..=9; 0 means the
//!   default 10; above 600 is rejected. `deliveryAttempt` is not set.
//! - A streaming pull whose client has gone (the process exited) is still fed:
//!   a message nacked at the client's shutdown is mostly delivered into the
//!   closed stream, and again each time its ack deadline expires, for minutes.
//!   A `returnImmediately` pull gets it only just after an expiry, before the
//!   stream's next poll (every 50 ms): pulling every 20 ms
//!   ([`peek_within`](PubSubEmulator::peek_within)) got it at the first or second
//!   expiry (11-21 s with a 10 s deadline) in 6 of 6 trials on one loaded core,
//!   pulling every 500 ms missed it for 45 s in 2 of 6.
//! - Acknowledging an ackId whose message was nacked since (stale ackId)
//!   answers 200 but does not remove the message; unknown-format ackIds give 400.
//! - Topic and subscription names need at least 3 characters (`t1` gives 400
//!   "Invalid [topics] name"); creating an existing one gives 409.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Env var that overrides the `gcloud` binary (default `gcloud` on `PATH`).
pub const GCLOUD_BIN_ENV: &str = "TEST_GCLOUD_BIN";
/// Project every emulator is started with.
pub const PROJECT: &str = "regrelay-test";
/// Deadline for the emulator to answer `GET /` (a JVM start; ~2.7 s idle here).
pub const EMULATOR_READY_DEADLINE: Duration = Duration::from_secs(60);
/// How often startup readiness is polled.
pub const EMULATOR_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// [`PubSubEmulator::peek`] and [`PubSubEmulator::drain`] stop once pulls have
/// come back empty for this long.
pub const PULL_SETTLE: Duration = Duration::from_secs(1);
/// Pause between two empty pulls while settling.
const PULL_RETRY_INTERVAL: Duration = Duration::from_millis(100);
/// Between pulls while [`PubSubEmulator::peek_within`] waits for a first message.
pub const WAIT_PULL_INTERVAL: Duration = Duration::from_millis(20);
/// How long `stop` waits for the group to exit after SIGTERM before killing it.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// Lines of log printed when a guard is dropped during a panic.
const PANIC_LOG_LINES: usize = 40;
/// Start attempts (each with a fresh port) before giving up on port races.
const START_ATTEMPTS: usize = 3;
/// The emulator's limit of messages per publish request.
const MAX_PUBLISH_BATCH: usize = 1000;
/// Cap on the base64 payload per publish request (the API limit is 10 MB).
const MAX_PUBLISH_BYTES: usize = 8 * 1024 * 1024;
/// Cap on ackIds per acknowledge / modifyAckDeadline request.
const MAX_ACK_IDS: usize = 1000;

/// The `gcloud` binary (`TEST_GCLOUD_BIN`, default `gcloud`), with the
/// skip/fail policy of [`require_bin`](super::require_bin).
pub fn gcloud_bin() -> Option<PathBuf> {
    super::require_bin(GCLOUD_BIN_ENV, "gcloud")
}

/// One-line skip: evaluates to the `gcloud` path, or `return`s from the
/// enclosing test after printing why (panics instead when `CI` is set).
///
/// ```ignore
/// #[tokio::test]
/// async fn relays_event() {
///     support::gcloud_bin_or_skip!();
///     let pubsub = support::PubSubEmulator::start().await;
/// }
/// ```
#[macro_export]
macro_rules! gcloud_bin_or_skip {
    () => {
        match $crate::support::gcloud_bin() {
            Some(path) => path,
            None => return,
        }
    };
}

/// One message as pulled: what `peek` and `drain` need of it.
struct Pulled {
    ack_id: String,
    message_id: String,
    data: Vec<u8>,
}

/// A running Pub/Sub emulator process group; see the module docs.
pub struct PubSubEmulator {
    project: String,
    port: u16,
    /// The process's directory (log, gcloud home, data); shared by the handles on
    /// the shared process.
    dir: Arc<TempDir>,
    /// The `gcloud` child of a dedicated emulator; its pid is the process group id.
    /// `None` on a handle of the shared process.
    child: Option<Child>,
    client: reqwest::Client,
}

impl PubSubEmulator {
    /// A project of its own (`regrelay-test-N`) on this test binary's shared
    /// emulator, started on first use (see the module docs).
    pub async fn start() -> Self {
        static SHARED: tokio::sync::OnceCell<(u16, Arc<TempDir>)> = tokio::sync::OnceCell::const_new();
        static NEXT_PROJECT: AtomicU32 = AtomicU32::new(1);
        let (port, dir) = SHARED
            .get_or_init(|| async {
                let mut emu = Self::start_dedicated().await;
                let child = emu.child.take().expect("a dedicated emulator has its child");
                let pgid = child.id().expect("a running child has a pid");
                // Outlives this guard and every test: the watchdog ends it.
                std::mem::forget(child);
                kill_when_process_ends(pgid, emu.dir.path());
                (emu.port, Arc::clone(&emu.dir))
            })
            .await
            .clone();
        PubSubEmulator {
            project: format!("{PROJECT}-{}", NEXT_PROJECT.fetch_add(1, Ordering::Relaxed)),
            port,
            dir,
            child: None,
            client: rest_client(),
        }
    }

    /// Starts an emulator process of its own for project `regrelay-test` on a
    /// free loopback port and waits (up to [`EMULATOR_READY_DEADLINE`]) until it
    /// answers; dropping the guard kills it.
    ///
    /// Panics, printing the log tail, if it does not come up; panics with a
    /// hint if `gcloud` is missing (call [`gcloud_bin_or_skip!`] first).
    pub async fn start_dedicated() -> Self {
        let bin = super::find_bin(GCLOUD_BIN_ENV, "gcloud")
            .unwrap_or_else(|reason| panic!("{reason}; call gcloud_bin_or_skip!() at the top of the test"));
        let dir = tempfile::Builder::new()
            .prefix("regrelay-pubsub-")
            .tempdir()
            .expect("create pubsub temp dir");
        for sub in ["home", "data"] {
            std::fs::create_dir(dir.path().join(sub)).expect("create pubsub sub dir");
        }
        let mut emulator = PubSubEmulator {
            project: PROJECT.to_owned(),
            port: 0,
            dir: Arc::new(dir),
            child: None,
            client: rest_client(),
        };
        for attempt in 1..=START_ATTEMPTS {
            emulator.port = super::reserve_port();
            match emulator.spawn_and_wait(&bin).await {
                Ok(()) => return emulator,
                Err(StartError::AddrInUse) if attempt < START_ATTEMPTS => {
                    eprintln!("pubsub emulator: port {} was taken, retrying", emulator.port);
                }
                Err(err) => emulator.fail_start(err),
            }
        }
        unreachable!("the last attempt either returns or fails")
    }

    /// The project id (`regrelay-test`, or `regrelay-test-N` on the shared process).
    pub fn project(&self) -> &str {
        &self.project
    }

    /// `http://127.0.0.1:PORT` (no trailing slash): the REST endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`: what `PUBSUB_EMULATOR_HOST` is set to (plaintext gRPC).
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Loopback socket address the emulator listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `projects/P/topics/T` for the short name `topic`.
    pub fn topic_path(&self, topic: &str) -> String {
        format!("projects/{}/topics/{topic}", self.project)
    }

    /// `projects/P/subscriptions/S` for the short name `sub`.
    pub fn subscription_path(&self, sub: &str) -> String {
        format!("projects/{}/subscriptions/{sub}", self.project)
    }

    /// File receiving the output of `gcloud` and the emulator.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("emulator.log")
    }

    /// The last `n` lines of the log (lossy UTF-8).
    pub fn log_tail(&self, n: usize) -> String {
        super::log_tail(&self.log_path(), n)
    }

    /// [`start`](Self::start), then topic `topic` and subscription `sub` on it with a 10 s
    /// ack deadline: the setup of every daemon test.
    pub async fn with_subscription(topic: &str, sub: &str) -> Self {
        let emu = Self::start().await;
        emu.create_topic(topic).await;
        emu.create_subscription(sub, topic, 10).await;
        emu
    }

    /// The daemon's `[source]` section for subscription `sub` on this emulator (10 s lease
    /// extension, 16 outstanding messages).
    pub fn source_section(&self, sub: &str) -> String {
        format!(
            "[source]\nkind = \"pubsub\"\nsubscription = \"{}\"\nendpoint = \"{}\"\nlease_extension_secs = 10\nmax_outstanding_messages = 16",
            self.subscription_path(sub),
            self.endpoint()
        )
    }

    /// Creates topic `topic` (short name, at least 3 characters). Panics on
    /// any error, including 409 when it already exists.
    pub async fn create_topic(&self, topic: &str) {
        let path = self.topic_path(topic);
        self.call(Method::PUT, &path, json!({})).await;
    }

    /// Creates subscription `sub` on topic `topic` (short names). The emulator
    /// accepts `ack_deadline_secs` 1..=600 (real Pub/Sub: 10..=600; 0 means 10).
    pub async fn create_subscription(&self, sub: &str, topic: &str, ack_deadline_secs: u32) {
        let path = self.subscription_path(sub);
        let body = json!({ "topic": self.topic_path(topic), "ackDeadlineSeconds": ack_deadline_secs });
        self.call(Method::PUT, &path, body).await;
    }

    /// Publishes one message with `data` (must not be empty) and returns its
    /// message id.
    pub async fn publish(&self, topic: &str, data: &[u8]) -> String {
        let mut ids = self.publish_many(topic, &[data.to_vec()]).await;
        ids.pop().expect("one message id")
    }

    /// Publishes `data` in order, one request per batch of up to 1000
    /// messages (the emulator's limit) and 8 MiB of base64; returns the
    /// message ids in the same order.
    pub async fn publish_many(&self, topic: &str, data: &[Vec<u8>]) -> Vec<String> {
        let path = format!("{}:publish", self.topic_path(topic));
        let mut ids = Vec::with_capacity(data.len());
        let mut batch: Vec<Value> = Vec::new();
        let mut batch_bytes = 0;
        for item in data {
            let encoded = B64.encode(item);
            if !batch.is_empty()
                && (batch.len() == MAX_PUBLISH_BATCH || batch_bytes + encoded.len() > MAX_PUBLISH_BYTES)
            {
                ids.extend(self.publish_batch(&path, std::mem::take(&mut batch)).await);
                batch_bytes = 0;
            }
            batch_bytes += encoded.len();
            batch.push(json!({ "data": encoded }));
        }
        if !batch.is_empty() {
            ids.extend(self.publish_batch(&path, batch).await);
        }
        ids
    }

    async fn publish_batch(&self, path: &str, messages: Vec<Value>) -> Vec<String> {
        let count = messages.len();
        let resp = self.call(Method::POST, path, json!({ "messages": messages })).await;
        let ids: Vec<String> = resp["messageIds"]
            .as_array()
            .unwrap_or_else(|| panic!("publish to {path}: no messageIds in {resp}"))
            .iter()
            .map(|id| id.as_str().expect("messageId is a string").to_owned())
            .collect();
        assert_eq!(ids.len(), count, "publish to {path}: {count} messages but ids {ids:?}");
        ids
    }

    /// Pulls without acking to inspect what is left: returns the data of up to
    /// `max` messages currently deliverable (in pull order, which is publish
    /// order in practice), then nacks them (`modifyAckDeadline` 0) so they stay
    /// in the subscription and are immediately deliverable again.
    ///
    /// Pulls with `returnImmediately` until `max` distinct messages were seen
    /// or pulls have stayed empty for [`PULL_SETTLE`] (so a peek that finds
    /// fewer than `max` takes about 1 s). Messages held by another subscriber
    /// (pulled and not yet acked or expired) are not seen; while the peek runs,
    /// the peeked messages are withheld from other subscribers. A redelivery
    /// during the peek (it outlasted the ack deadline) is counted once.
    pub async fn peek(&self, sub: &str, max: u32) -> Vec<Vec<u8>> {
        self.peek_within(sub, max, Duration::ZERO).await
    }

    /// [`peek`](Self::peek), but first waits up to `within` for any message to become
    /// deliverable, pulling every [`WAIT_PULL_INTERVAL`]. For a message a stopped
    /// subscriber handed back: the emulator can go on delivering it to the subscriber's
    /// closed stream, again each time its ack deadline expires (seen with no subscriber
    /// process alive, for minutes under load), so it is deliverable to a pull only in the
    /// moments between such expiries and the stream's next poll (every 50 ms). Pulling
    /// often catches it in one of those moments (see the module docs).
    pub async fn peek_within(&self, sub: &str, max: u32, within: Duration) -> Vec<Vec<u8>> {
        let mut ack_ids = Vec::new();
        let data = self
            .collect(sub, max, within, |batch| {
                ack_ids.extend(batch.iter().map(|m| m.ack_id.clone()));
                async {}
            })
            .await;
        self.ack_request(sub, "modifyAckDeadline", &ack_ids, Some(0)).await;
        data
    }

    /// Pulls and acknowledges everything available, up to `max` messages, and
    /// returns the data (in pull order); stops like [`peek`](Self::peek).
    pub async fn drain(&self, sub: &str, max: u32) -> Vec<Vec<u8>> {
        self.collect(sub, max, Duration::ZERO, |batch| {
            let ack_ids: Vec<String> = batch.iter().map(|m| m.ack_id.clone()).collect();
            async move { self.ack_request(sub, "acknowledge", &ack_ids, None).await }
        })
        .await
    }

    /// The pull loop shared by `peek` and `drain`: `on_batch` sees every
    /// non-empty pull (duplicates included) before the next one is made. Until the
    /// first message arrives, pulls go on every [`WAIT_PULL_INTERVAL`] for `wait_first`.
    async fn collect<F, Fut>(&self, sub: &str, max: u32, wait_first: Duration, mut on_batch: F) -> Vec<Vec<u8>>
    where
        F: FnMut(&[Pulled]) -> Fut,
        Fut: Future<Output = ()>,
    {
        let max = usize::try_from(max).expect("u32 fits usize");
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut empty_since: Option<Instant> = None;
        let waiting_until = Instant::now() + wait_first;
        while out.len() < max {
            let batch = self.pull(sub, max - out.len()).await;
            if batch.is_empty() && out.is_empty() && Instant::now() < waiting_until {
                tokio::time::sleep(WAIT_PULL_INTERVAL).await;
                continue;
            }
            if batch.is_empty() {
                let since = *empty_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= PULL_SETTLE {
                    break;
                }
                tokio::time::sleep(PULL_RETRY_INTERVAL).await;
                continue;
            }
            empty_since = None;
            on_batch(&batch).await;
            for msg in batch {
                if seen.insert(msg.message_id) {
                    out.push(msg.data);
                }
            }
        }
        out
    }

    /// One `returnImmediately` pull of up to `max` (at most 1000) messages.
    async fn pull(&self, sub: &str, max: usize) -> Vec<Pulled> {
        let path = format!("{}:pull", self.subscription_path(sub));
        let body = json!({ "maxMessages": max.min(1000), "returnImmediately": true });
        let resp = self.call(Method::POST, &path, body).await;
        let Some(received) = resp.get("receivedMessages").and_then(Value::as_array) else {
            return Vec::new();
        };
        received
            .iter()
            .map(|r| {
                let field = |v: &Value, name: &str| {
                    v[name]
                        .as_str()
                        .unwrap_or_else(|| panic!("pull {path}: no {name} in {r}"))
                        .to_owned()
                };
                let message = &r["message"];
                // Attribute-only messages have no `data`.
                let data = message["data"].as_str().unwrap_or("");
                Pulled {
                    ack_id: field(r, "ackId"),
                    message_id: field(message, "messageId"),
                    data: B64
                        .decode(data)
                        .unwrap_or_else(|e| panic!("pull {path}: bad base64 data ({e}) in {r}")),
                }
            })
            .collect()
    }

    /// `:acknowledge` or `:modifyAckDeadline` (with `deadline`) in chunks.
    async fn ack_request(&self, sub: &str, verb: &str, ack_ids: &[String], deadline: Option<u32>) {
        let path = format!("{}:{verb}", self.subscription_path(sub));
        for chunk in ack_ids.chunks(MAX_ACK_IDS) {
            let mut body = json!({ "ackIds": chunk });
            if let Some(secs) = deadline {
                body["ackDeadlineSeconds"] = json!(secs);
            }
            self.call(Method::POST, &path, body).await;
        }
    }

    /// One REST call to `/v1/{path}`; panics with the emulator's answer on any
    /// non-2xx status. An empty body parses as `{}`.
    async fn call(&self, method: Method, path: &str, body: Value) -> Value {
        let url = format!("{}/v1/{path}", self.endpoint());
        let resp = self
            .client
            .request(method.clone(), &url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: reading body: {e}"));
        assert!(
            status.is_success(),
            "{method} {url} -> {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return json!({});
        }
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {url}: bad JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    }

    /// Sends SIGTERM to the process group and waits (up to 15 s, then SIGKILL)
    /// until no process of the group is left and the leader is reaped.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pgid) = child.id() {
            signal_group(pgid, "TERM");
            let deadline = Instant::now() + STOP_DEADLINE;
            while live_group_members(pgid) > 0 && Instant::now() < deadline {
                tokio::time::sleep(super::POLL_INTERVAL).await;
            }
            if live_group_members(pgid) > 0 {
                eprintln!("pubsub emulator {} ignored SIGTERM for 15 s; killing", self.host_port());
                signal_group(pgid, "KILL");
                let deadline = Instant::now() + STOP_DEADLINE;
                while live_group_members(pgid) > 0 {
                    assert!(
                        Instant::now() < deadline,
                        "pubsub emulator group {pgid} survived SIGKILL"
                    );
                    tokio::time::sleep(super::POLL_INTERVAL).await;
                }
            }
        }
        // The whole group is dead (the leader a zombie), so reaping is quick.
        match tokio::time::timeout(STOP_DEADLINE, child.wait()).await {
            Ok(status) => {
                status.expect("reap gcloud");
            }
            Err(_) => panic!("gcloud leader of {} not reaped after its group died", self.host_port()),
        }
    }

    async fn spawn_and_wait(&mut self, bin: &Path) -> Result<(), StartError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open emulator log");
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr: File = log.try_clone().expect("clone log handle");
        let home = self.dir.path().join("home");
        let mut cmd = Command::new(bin);
        cmd.args(["beta", "emulators", "pubsub", "start"])
            .arg(format!("--project={}", self.project))
            .arg(format!("--host-port={}", self.host_port()))
            .arg(format!("--data-dir={}", self.dir.path().join("data").display()))
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", super::child_path_env())
            .env("HOME", &home)
            .env("CLOUDSDK_CONFIG", home.join("gcloud"))
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")
            .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            // Own process group: gcloud's Java child must die with it.
            .process_group(0)
            // Backstop only: the guard kills the whole group itself.
            .kill_on_drop(true);
        for var in ["JAVA_HOME", "CLOUDSDK_PYTHON"] {
            if let Some(value) = std::env::var_os(var) {
                cmd.env(var, value);
            }
        }
        let child = cmd.spawn().map_err(|e| StartError::Spawn(e.to_string()))?;
        let pgid = child.id().expect("freshly spawned child has a pid");
        self.child = Some(child);

        let client = super::probe_client();
        let probe = format!("{}/", self.endpoint());
        let listening = format!("listening on {}", self.port);
        let deadline = Instant::now() + EMULATOR_READY_DEADLINE;
        let result = loop {
            let new_log = self.log_since(log_start);
            if new_log.contains("Address already in use") {
                break Err(StartError::AddrInUse);
            }
            // Zombie check instead of try_wait: the leader stays unreaped
            // until the group has been killed (see module docs).
            if !process_alive(pgid) {
                break Err(StartError::Exited);
            }
            // The log line proves the answer comes from our child, not from
            // another process that took the port.
            if new_log.contains(&listening)
                && let Ok(resp) = client.get(&probe).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                break Err(StartError::Timeout);
            }
            tokio::time::sleep(EMULATOR_POLL_INTERVAL).await;
        };
        self.kill_group_and_reap();
        result
    }

    fn log_since(&self, offset: u64) -> String {
        super::log_since(&self.log_path(), offset)
    }

    fn fail_start(&self, err: StartError) -> ! {
        // The log tail is printed by `Drop` while this panic unwinds.
        panic!(
            "pubsub emulator on {} failed to start: {err:?} (log: {})",
            self.host_port(),
            self.log_path().display(),
        )
    }

    /// SIGKILLs the group, waits (bounded) for its members to die, then reaps
    /// the leader. Synchronous for `Drop`; bounded by iterations, not by
    /// `std::time::Instant` (banned: paused time).
    fn kill_group_and_reap(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pgid) = child.id() {
            signal_group(pgid, "KILL");
            for _ in 0..2000 {
                if live_group_members(pgid) == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = child.start_kill();
        for _ in 0..1000 {
            if !matches!(child.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether something accepts TCP connections on the emulator's port.
    pub fn port_accepts(&self) -> bool {
        TcpStream::connect_timeout(&self.addr(), Duration::from_millis(500)).is_ok()
    }
}

#[derive(Debug)]
enum StartError {
    Spawn(String),
    AddrInUse,
    Exited,
    Timeout,
}

/// The REST client of one guard (each test has its own runtime, and a client's
/// connections belong to the runtime that made them).
fn rest_client() -> reqwest::Client {
    super::harness_client(Duration::from_secs(2), Duration::from_secs(30))
}

/// Starts a watchdog that, once this test process has exited (however: a panic, the
/// harness's end, SIGKILL), SIGTERMs then SIGKILLs process group `pgid` and removes
/// `dir`. No `unsafe`: the `sh` child polls the test process with `kill -0`, and
/// signals the group with the `kill` utility (`env kill`: the shell's own `kill`
/// does not take `--`, without which `-PGID` reads as a signal).
#[expect(
    clippy::zombie_processes,
    reason = "the watchdog outlives the test process by design; init reaps it"
)]
fn kill_when_process_ends(pgid: u32, dir: &Path) {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; env kill -TERM -- -{pgid} 2>/dev/null; \
         sleep 2; env kill -KILL -- -{pgid} 2>/dev/null; rm -rf -- \"$0\"",
        me = std::process::id()
    );
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .env_clear()
        .env("PATH", super::child_path_env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own group: not signalled with the test's.
        .process_group(0)
        .spawn()
        .expect("start the shared emulator's watchdog");
}

/// Sends `SIG` to every process of group `pgid` with the `kill` utility (no
/// `unsafe` libc call). Failure (the group is already gone) is ignored.
fn signal_group(pgid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{sig}"), "--".to_owned(), format!("-{pgid}")])
        .env_clear()
        .env("PATH", super::child_path_env())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `(state, pgrp)` from `/proc/PID/stat`, or `None` if the process is gone.
fn proc_stat(pid: &str) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "PID (COMM) STATE PPID PGRP ..."; COMM may contain spaces and parens.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// Whether `pid` exists and is not a zombie (does not reap it).
fn process_alive(pid: u32) -> bool {
    matches!(proc_stat(&pid.to_string()), Some((state, _)) if !matches!(state, 'Z' | 'X'))
}

/// Number of live (non-zombie) processes in process group `pgid`.
fn live_group_members(pgid: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|pid| proc_stat(&pid))
        .filter(|&(state, pgrp)| pgrp == pgid && !matches!(state, 'Z' | 'X'))
        .count()
}

impl Drop for PubSubEmulator {
    fn drop(&mut self) {
        self.kill_group_and_reap();
        if std::thread::panicking() {
            eprintln!(
                "--- pubsub emulator {} ({}) last {PANIC_LOG_LINES} log lines ---\n{}\n--- end of emulator log ---",
                self.host_port(),
                self.log_path().display(),
                self.log_tail(PANIC_LOG_LINES)
            );
        }
    }
}

/// An Artifact Registry-shaped `INSERT` message for `host/repo@digest`, with the tag
/// `host/repo:tag` when given (the `gcr` topic's payload).
pub fn ar_insert(host: &str, repo: &str, tag: Option<&str>, digest: &str) -> Vec<u8> {
    let mut v = json!({"action": "INSERT", "digest": format!("{host}/{repo}@{digest}")});
    if let Some(t) = tag {
        v["tag"] = format!("{host}/{repo}:{t}").into();
    }
    serde_json::to_vec(&v).unwrap()
}
