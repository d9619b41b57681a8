//! `Daemon`: the real `regrelay run` binary as a child process, for end-to-end tests.
//!
//! Role: write a config file, start the binary with it (stderr to a log file), find its
//! admin port, read `/metrics` and `/readyz`, and stop it with SIGTERM or SIGKILL. Also
//! the setup the end-to-end tests share: two registries with clients ([`Registries`]),
//! a config mirroring one onto the other ([`mirror_config`]), [`tag_digest`] and the
//! metric names they wait on.
//!
//! Must never: bind anything but loopback or sleep for a fixed time to wait for a state
//! (every wait polls with a deadline and prints the daemon's log when it expires).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use regrelay::config::Auth;
use regrelay::oci::Locator;
use regrelay::registry::{HttpRegistry, Registry};
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::image;
use super::registry::TestRegistry;

/// `regrelay_messages_settled_total`, by `outcome` (`acked`, `nacked`, `rejected`).
pub const SETTLED: &str = "regrelay_messages_settled_total";
/// `regrelay_copies_total`, by `outcome` and `error_class`.
pub const COPIES: &str = "regrelay_copies_total";
/// How long an end-to-end test waits for a state before it fails.
pub const LONG: Duration = Duration::from_secs(60);

/// A daemon config: `source`, then a quick `[pipeline]` (1–2 s retry delays), `[admin]` on `{ADMIN}`, the
/// registries `src` and `dst` (`read_timeout_secs`, two quick attempts) and one rule
/// mirroring everything of `src` to `dst/mirror/{repository}` (push and delete;
/// digest-only pushes replicated).
pub fn mirror_config(source: &str, src: &str, dst: &str, read_timeout_secs: u64) -> String {
    format!(
        r#"
{source}

[pipeline]
workers = 4
shutdown_grace_secs = 4
pause_min_secs = 1
pause_max_secs = 2
retry_delay_min_secs = 1
retry_delay_max_secs = 2

[admin]
listen = "{{ADMIN}}"

[registries."{src}"]
read_timeout_secs = {read_timeout_secs}
retry = {{ attempts = 2, min_delay_ms = 50, max_delay_ms = 200, max_retry_after_secs = 1 }}

[registries."{dst}"]
read_timeout_secs = {read_timeout_secs}
retry = {{ attempts = 2, min_delay_ms = 50, max_delay_ms = 200, max_retry_after_secs = 1 }}

[[rules]]
name = "mirror"
source_registry = "{src}"
repository = "**"
actions = ["push", "delete"]
untagged = "replicate"

[[rules.targets]]
registry = "{dst}"
repository = "mirror/{{repository}}"
"#
    )
}

/// `cfg` (from [`mirror_config`]) tuned for the outage tests: 8 workers, retry delays of
/// 2 s doubling to 8 s.
pub fn outage_pipeline(cfg: &str) -> String {
    cfg.replace(
        "retry_delay_min_secs = 1\nretry_delay_max_secs = 2\n",
        "retry_delay_min_secs = 2\nretry_delay_max_secs = 8\n",
    )
    .replace("workers = 4\n", "workers = 8\n")
}

/// The digest `repo:tag` names in `reg`; `None` if it is absent (or the HEAD failed).
pub async fn tag_digest(reg: &HttpRegistry, repo: &str, tag: &str) -> Option<String> {
    reg.head_manifest(repo, &Locator::Tag(tag.into()))
        .await
        .ok()
        .flatten()
        .and_then(|h| h.digest)
        .map(|d| d.to_string())
}

/// A source and a target registry, each with an anonymous client (`s` for `src`, `d`
/// for `dst`). Start it after `registry_bin_or_skip!()`.
pub struct Registries {
    pub src: TestRegistry,
    pub dst: TestRegistry,
    pub s: HttpRegistry,
    pub d: HttpRegistry,
}

impl Registries {
    /// Start both registries (empty) and their clients.
    pub async fn start() -> Registries {
        let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
        let s = image::client(&src.host(), Auth::Anonymous);
        let d = image::client(&dst.host(), Auth::Anonymous);
        Registries { src, dst, s, d }
    }
}

/// A running `regrelay run`.
pub struct Daemon {
    child: Option<Child>,
    dir: TempDir,
    admin: SocketAddr,
    config: String,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    super::reserve_port()
}

impl Daemon {
    /// Start `regrelay run` with `config`, where the text `{ADMIN}` is replaced by a
    /// free loopback `host:port` for the admin server. Waits until `/healthz` answers.
    pub async fn start(config: &str) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("regrelay-daemon-")
            .tempdir()
            .expect("temp dir");
        let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let config = config.replace("{ADMIN}", &admin.to_string());
        let mut d = Daemon {
            child: None,
            dir,
            admin,
            config,
        };
        d.spawn().await;
        d
    }

    /// Start the same configuration again (after a kill or stop), same admin port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running daemon");
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, &self.config).expect("write config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_regrelay"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(&path)
            .env_clear()
            .env("PATH", super::child_path_env())
            .env("REGRELAY_LOG", "regrelay=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn regrelay");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = super::probe_client().get(self.url("/healthz")).send().await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("regrelay exited early with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "regrelay not healthy in 20 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(super::POLL_INTERVAL).await;
        }
    }

    /// The temporary directory (config and log live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("regrelay.log")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A URL on the admin server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        super::probe_client()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// The sum of the samples of `name` whose labels include all of `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sample_sum(&self.metrics().await, name, labels)
    }

    /// Poll `metric` until `pred` holds (deadline `within`); returns the value.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        within: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let v = self.metric(name, labels).await;
            if pred(v) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{name}{labels:?} = {v}, condition not met within {within:?}\nmetrics:\n{}\nlog:\n{}",
                    self.metrics().await,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The HTTP status of `/readyz`.
    pub async fn readyz(&self) -> u16 {
        super::probe_client()
            .get(self.url("/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }

    /// SIGKILL, and reap.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.expect("kill regrelay");
        }
    }

    /// SIGTERM and wait (at most `within`) for the exit; returns the status and how long
    /// the exit took.
    pub async fn terminate(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let mut c = self.child.take().expect("daemon running");
        let pid = c.id().expect("pid").to_string();
        let started = Instant::now();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(ok.success());
        match tokio::time::timeout(within, c.wait()).await {
            Ok(status) => (status.expect("wait"), started.elapsed()),
            Err(_) => {
                let _ = c.kill().await;
                panic!(
                    "regrelay did not exit within {within:?} of SIGTERM; log:\n{}",
                    self.log()
                )
            }
        }
    }

    /// Has the process exited? (its status, if so)
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }
}

/// Sum of the samples of `name` with all of `labels`, in Prometheus text format.
pub fn sample_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut sum = 0.0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let has_all = labels
            .iter()
            .all(|(k, v)| series_labels.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if has_all {
            sum += value.parse::<f64>().unwrap_or(0.0);
        }
    }
    sum
}
