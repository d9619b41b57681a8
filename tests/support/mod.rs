//! Test harness for process tests (tier 3 in STYLE.md section 5).
//!
//! Role: start real servers on loopback for integration tests and tear them
//! down again: a `docker-registry` child process ([`TestRegistry`]), an
//! in-process Docker token server ([`TokenServer`]) and an in-process
//! fault-injecting reverse proxy ([`FaultProxy`]).
//!
//! Must never: bind anything but `127.0.0.1`, touch the internet, sleep for a
//! fixed time to wait for readiness, or use `unsafe`.
//!
//! Invariants: every type is a guard (dropping it stops the server and reaps
//! the child); readiness is polled every [`POLL_INTERVAL`] up to
//! [`READY_DEADLINE`]; a missing registry binary skips the test with a printed
//! reason locally and fails it when `CI` is set (see [`registry_bin_or_skip!`] and
//! [`skip_or_fail`], whose `SKIPPED:` line `scripts/test.sh` counts).
//!
//! Each integration test binary compiles this module separately and may use
//! only part of it, hence the module-wide `dead_code` allowance below.
#![allow(
    dead_code,
    reason = "shared by several test binaries; each one uses only part of the harness"
)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub mod cli;
pub mod cosign;
mod daemon;
pub mod image;
mod proxy;
mod pubsub;
mod registry;
mod servicebus;
mod token;

// Each test binary uses only some of these names.
#[allow(unused_imports, reason = "re-exports for all test binaries; each uses a subset")]
pub use daemon::{
    COPIES, Daemon, LONG, Registries, SETTLED, free_port, mirror_config, outage_pipeline, sample_sum, tag_digest,
};
#[allow(unused_imports, reason = "re-exports for all test binaries; each uses a subset")]
pub use proxy::{Action, FaultProxy, Rule, Seen};
#[allow(unused_imports, reason = "re-exports for all test binaries; each uses a subset")]
pub use pubsub::{GCLOUD_BIN_ENV, PubSubEmulator, ar_insert, gcloud_bin};
#[allow(unused_imports, reason = "re-exports for all test binaries; each uses a subset")]
pub use registry::TestRegistry;
#[allow(unused_imports, reason = "re-exports for all test binaries; each uses a subset")]
pub use reqwest::Method;
#[allow(unused_imports, reason = "re-exports for all test binaries; each uses a subset")]
pub use servicebus::{
    Counts, EntityOptions, Message, MessageStats, NAMESPACE, ROOT_RULE, Request, Right, ServiceBusServer, resource_uri,
    sas, sas_for_sr, unix_now,
};
#[allow(unused_imports, reason = "re-exports for all test binaries; each uses a subset")]
pub use token::{KeyHint, TokenOptions, TokenRequest, TokenServer};

/// How often readiness is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Overall deadline for a server to become ready.
pub const READY_DEADLINE: Duration = Duration::from_secs(10);

/// Env var that overrides the registry binary (default `docker-registry`).
pub const REGISTRY_BIN_ENV: &str = "TEST_REGISTRY_BIN";
/// Env var that overrides the `htpasswd` binary (default `htpasswd`).
pub const HTPASSWD_BIN_ENV: &str = "TEST_HTPASSWD_BIN";

/// Finds a binary: the path in env `env_override` if set, else `default_name`
/// looked up on `PATH`.
///
/// When it is missing: panics if env `CI` is set (CI must not silently skip
/// process tests), otherwise reports the skip (see [`skip_or_fail`]) and returns `None`.
pub fn require_bin(env_override: &str, default_name: &str) -> Option<PathBuf> {
    require_bin_reporting(env_override, default_name, &mut std::io::stderr())
}

/// [`require_bin`] writing its skip line to `out` instead of stderr (for tests of the
/// policy itself, which must not count as skipped).
pub fn require_bin_reporting(env_override: &str, default_name: &str, out: &mut dyn Write) -> Option<PathBuf> {
    match find_bin(env_override, default_name) {
        Ok(path) => Some(path),
        Err(reason) => {
            skip_or_fail(&reason, out);
            None
        }
    }
}

/// The prefix of a skip line: `SKIPPED: <test binary>::<test>: <reason>`.
pub const SKIP_PREFIX: &str = "SKIPPED: ";

/// Reports that the running test skips for `reason` (a missing tool), or panics when env
/// `CI` is set: CI must fail rather than skip.
///
/// The line is `SKIPPED: <test binary>::<test>: <reason>`, written straight to `out` in
/// one write: not through `eprintln!`, which libtest captures and shows only for failing
/// tests. `scripts/test.sh` reads these lines to count such tests as skipped instead of
/// passed (libtest reports them `ok`) and lists them with their reasons.
pub fn skip_or_fail(reason: &str, out: &mut dyn Write) {
    if std::env::var_os("CI").is_some() {
        panic!("{reason} (CI is set, so this test fails instead of skipping)");
    }
    // A lost skip line only makes the summary count the test as passed.
    let _ = out.write_all(skip_line(reason).as_bytes());
    let _ = out.flush();
}

/// The skip line for the running test: `SKIPPED: <test binary>::<test>: <reason>\n`.
pub fn skip_line(reason: &str) -> String {
    format!("{SKIP_PREFIX}{}: {reason}\n", current_test())
}

/// `<test binary>::<test path>` of the running test: libtest runs each test on a thread
/// named after it (`tests::name` for a test in a module).
pub fn current_test() -> String {
    let thread = std::thread::current();
    format!(
        "{}::{}",
        env!("CARGO_CRATE_NAME"),
        thread.name().unwrap_or("unnamed-thread")
    )
}

/// The registry binary (`TEST_REGISTRY_BIN`, default `docker-registry`), with
/// the skip/fail policy of [`require_bin`].
pub fn registry_bin() -> Option<PathBuf> {
    require_bin(REGISTRY_BIN_ENV, "docker-registry")
}

/// Like [`require_bin`] but never prints or panics; used by the guards, which
/// fail with a clear message when the test did not check first.
pub(crate) fn find_bin(env_override: &str, default_name: &str) -> Result<PathBuf, String> {
    if let Some(explicit) = std::env::var_os(env_override).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        if path.is_file() {
            return Ok(path);
        }
        // A bare name in the override is looked up on PATH like the default.
        if let Some(found) = path.to_str().and_then(search_path) {
            return Ok(found);
        }
        return Err(format!(
            "{env_override}={} does not name an existing file",
            path.display()
        ));
    }
    search_path(default_name)
        .ok_or_else(|| format!("`{default_name}` not found on PATH (set {env_override} to its location)"))
}

fn search_path(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The `PATH` handed to child processes (the environment is otherwise cleared).
pub(crate) fn child_path_env() -> std::ffi::OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
}

/// One-line skip: evaluates to the registry binary's path, or `return`s from
/// the enclosing test after printing why (panics instead when `CI` is set).
///
/// ```ignore
/// #[tokio::test]
/// async fn pushes_blob() {
///     support::registry_bin_or_skip!();
///     let reg = support::TestRegistry::start().await;
/// }
/// ```
#[macro_export]
macro_rules! registry_bin_or_skip {
    () => {
        match $crate::support::registry_bin() {
            Some(path) => path,
            None => return,
        }
    };
}

/// One-line skip for any binary: `bin_or_skip!("TEST_HTPASSWD_BIN", "htpasswd")`.
#[macro_export]
macro_rules! bin_or_skip {
    ($env:expr, $default:expr) => {
        match $crate::support::require_bin($env, $default) {
            Some(path) => path,
            None => return,
        }
    };
}

#[allow(unused_imports, reason = "re-exports for all test binaries; each uses a subset")]
pub use crate::{bin_or_skip, gcloud_bin_or_skip, registry_bin_or_skip};

/// Ports handed out by this process (registries, emulators, admin servers); never reused.
static HANDED_OUT: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<u16>>> =
    std::sync::LazyLock::new(Default::default);

/// Reserves a loopback port nobody in this process has been given before. The listener
/// is dropped before the child binds, so another process may take the port in between;
/// the guards retry startup with a new port in that case.
pub(crate) fn reserve_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        if HANDED_OUT.lock().expect("port set poisoned").insert(port) {
            return port;
        }
    }
}

/// The last `n` lines of a child's log file (lossy UTF-8; empty when unreadable).
pub(crate) fn log_tail(path: &std::path::Path, n: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A child's log file from byte `offset` on (lossy UTF-8; empty when unreadable).
pub(crate) fn log_since(path: &std::path::Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// A plain HTTP client for harness use: no proxy, no redirects, short timeouts.
pub(crate) fn probe_client() -> reqwest::Client {
    harness_client(Duration::from_secs(1), Duration::from_secs(2))
}

/// A client for the harness's own requests to loopback services: no proxy, no redirects,
/// the given connect and whole-request timeouts.
pub(crate) fn harness_client(connect: Duration, total: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect)
        .timeout(total)
        .build()
        .expect("build harness http client")
}
