//! `TestRegistry`: a real `docker-registry serve CONFIG` child process on loopback.
//!
//! Role: give a test a private CNCF distribution 2.8 instance (anonymous,
//! htpasswd or token auth) with its own storage, config and log file.
//!
//! Must never: bind anything but `127.0.0.1`, inherit the test's environment
//! (only `PATH` is passed), or start the debug server (no `http.debug`).
//!
//! Invariants: distribution cannot report an OS-chosen port, so ports are
//! reserved by binding `127.0.0.1:0` and recorded in a process-wide set so two
//! tests in one process never get the same one; startup retries once with a
//! new port when the child reports "address already in use". Dropping the guard
//! kills and reaps the child and, while panicking, prints the log tail.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::{POLL_INTERVAL, READY_DEADLINE, TokenServer};

/// Fixed `http.secret` so upload state stays valid across `start_again`.
const HTTP_SECRET: &str = "regrelay-test-9c4f1e7a2b6d08e35f1a4c7b";
/// Lines of log printed when a guard is dropped during a panic.
const PANIC_LOG_LINES: usize = 30;
/// How long `stop` waits for a clean exit after SIGTERM before killing.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// Which `auth:` section the registry config gets.
#[derive(Debug, Clone)]
enum Auth {
    Anonymous,
    Htpasswd,
    Token {
        realm: String,
        service: String,
        issuer: String,
    },
}

/// A running (or stopped) `docker-registry` child; see the module docs.
pub struct TestRegistry {
    bin: PathBuf,
    storage: PathBuf,
    dir: TempDir,
    port: u16,
    auth: Auth,
    child: Option<Child>,
}

impl TestRegistry {
    /// Starts an anonymous registry (no `auth:` section) and waits for readiness.
    pub async fn start() -> Self {
        Self::launch(Auth::Anonymous, |_| {}).await
    }

    /// Starts a registry with `auth: htpasswd` and one bcrypt user.
    ///
    /// The hash comes from `htpasswd -Bbn` (env `TEST_HTPASSWD_BIN` overrides);
    /// panics with a clear message if that tool is missing.
    pub async fn start_htpasswd(user: &str, password: &str) -> Self {
        let htpasswd = super::find_bin(super::HTPASSWD_BIN_ENV, "htpasswd")
            .unwrap_or_else(|reason| panic!("start_htpasswd: {reason} (Debian: apache2-utils)"));
        let out = std::process::Command::new(&htpasswd)
            .args(["-B", "-b", "-n", user, password])
            .env_clear()
            .env("PATH", super::child_path_env())
            .stdin(Stdio::null())
            .output()
            .expect("run htpasswd");
        assert!(
            out.status.success(),
            "htpasswd -Bbn failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let entry = String::from_utf8(out.stdout).expect("htpasswd output is utf-8");
        let line = entry.trim().to_owned();
        Self::launch(Auth::Htpasswd, move |dir| {
            std::fs::write(dir.join("htpasswd"), format!("{line}\n")).expect("write htpasswd");
        })
        .await
    }

    /// Starts a registry with `auth: token` trusting `tokens` (realm, service,
    /// issuer and its certificate, copied into the registry's own dir so a
    /// restart works even after the token server is gone).
    pub async fn start_token(tokens: &TokenServer) -> Self {
        let cert = tokens.cert_path().to_path_buf();
        let auth = Auth::Token {
            realm: tokens.realm(),
            service: tokens.service().to_owned(),
            issuer: tokens.issuer().to_owned(),
        };
        Self::launch(auth, move |dir| {
            std::fs::copy(&cert, dir.join("token-root.pem")).expect("copy token root cert");
        })
        .await
    }

    async fn launch(auth: Auth, prepare: impl FnOnce(&Path)) -> Self {
        let bin = super::find_bin(super::REGISTRY_BIN_ENV, "docker-registry")
            .unwrap_or_else(|reason| panic!("{reason}; call registry_bin_or_skip!() at the top of the test"));
        let dir = tempfile::Builder::new()
            .prefix("regrelay-registry-")
            .tempdir()
            .expect("create registry temp dir");
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).expect("create storage dir");
        prepare(dir.path());
        let mut registry = TestRegistry {
            bin,
            storage,
            dir,
            port: 0,
            auth,
            child: None,
        };
        // One retry on a port race ("address already in use"), as STYLE.md 5 asks.
        for attempt in 0..2 {
            registry.port = super::reserve_port();
            registry.write_config();
            match registry.spawn_and_wait().await {
                Ok(()) => return registry,
                Err(StartError::AddrInUse) if attempt == 0 => continue,
                Err(err) => registry.fail_start(err),
            }
        }
        registry.fail_start(StartError::AddrInUse)
    }

    /// Loopback socket address the registry listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// `127.0.0.1:PORT`, as used in image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Root of the filesystem storage driver.
    pub fn storage_dir(&self) -> &Path {
        &self.storage
    }

    /// The upload sessions the registry holds, as `repository/uuid`, sorted. distribution
    /// keeps each one under `docker/registry/v2/repositories/<name>/_uploads/<uuid>/`
    /// (`startedat`, `data`, `hashstates/`) until it is committed or cancelled; upload
    /// purging is off in these registries.
    ///
    /// A directory holding neither `startedat` nor `data` is not counted: distribution 2.8
    /// leaves such a husk (`hashstates/sha256/0`, a few hundred bytes) after *every*
    /// successful `DELETE`, because its handler closes the cancelled writer once more and
    /// that stores a hash state again. The API treats it as no upload (404), and no
    /// client can remove it.
    pub fn upload_sessions(&self) -> Vec<String> {
        fn walk(dir: &Path, repo: &str, out: &mut Vec<String>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !entry.path().is_dir() {
                    continue;
                }
                if name == "_uploads" {
                    let Ok(sessions) = std::fs::read_dir(entry.path()) else {
                        continue;
                    };
                    out.extend(
                        sessions
                            .flatten()
                            .filter(|s| s.path().join("startedat").exists() || s.path().join("data").exists())
                            .map(|s| format!("{repo}/{}", s.file_name().to_string_lossy())),
                    );
                } else if !name.starts_with('_') {
                    let child = if repo.is_empty() {
                        name
                    } else {
                        format!("{repo}/{name}")
                    };
                    walk(&entry.path(), &child, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.storage.join("docker/registry/v2/repositories"), "", &mut out);
        out.sort();
        out
    }

    /// The access-log lines (combined log format, e.g. `"DELETE /v2/app/blobs/uploads/…
    /// HTTP/1.1" 204`) whose request line starts with `method` and contains `path`.
    pub fn access_log(&self, method: &str, path: &str) -> Vec<String> {
        let needle = format!("\"{method} ");
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.split_once(&needle)
                    .is_some_and(|(_, rest)| rest.split(' ').next().is_some_and(|p| p.contains(path)))
            })
            .map(str::to_owned)
            .collect()
    }

    /// The generated `config.yml`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// File receiving the child's stdout and stderr (appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The last `n` lines of the child's log (lossy UTF-8).
    pub fn log_tail(&self, n: usize) -> String {
        super::log_tail(&self.log_path(), n)
    }

    /// Whether the child is currently running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGTERM and waits for the child to exit (it drains for up to 2 s,
    /// `http.draintimeout`, and then exits 0). Kills it if it has not exited
    /// within 10 s. Returns the exit status.
    ///
    /// Panics if the registry is not running.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("stop: registry is not running");
        if let Some(pid) = child.id() {
            // No `unsafe` libc call: the `kill` utility sends the signal.
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .env_clear()
                .env("PATH", super::child_path_env())
                .stdin(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(sent, "stop: failed to send SIGTERM to pid {pid}");
        }
        match tokio::time::timeout(STOP_DEADLINE, child.wait()).await {
            Ok(status) => status.expect("wait for registry"),
            Err(_) => {
                eprintln!("registry {} ignored SIGTERM for 10 s; killing", self.host());
                child.kill().await.expect("kill registry");
                child.wait().await.expect("reap registry")
            }
        }
    }

    /// Starts the same config, port and storage again after [`stop`](Self::stop)
    /// and waits for readiness. Panics (with the log tail) if the port was taken
    /// meanwhile or the child does not become ready.
    pub async fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "start_again: registry {} is still running; call stop() first",
            self.host()
        );
        if let Err(err) = self.spawn_and_wait().await {
            self.fail_start(err);
        }
    }

    fn write_config(&self) {
        let dir = self.dir.path();
        let auth = match &self.auth {
            Auth::Anonymous => String::new(),
            Auth::Htpasswd => format!(
                "auth:\n  htpasswd:\n    realm: regrelay-test\n    path: {}\n",
                yaml_str(&dir.join("htpasswd"))
            ),
            Auth::Token { realm, service, issuer } => format!(
                "auth:\n  token:\n    realm: \"{realm}\"\n    service: \"{service}\"\n    \
                 issuer: \"{issuer}\"\n    rootcertbundle: {}\n",
                yaml_str(&dir.join("token-root.pem"))
            ),
        };
        // No `http.debug` (it would bind a second port), no redis, no
        // notifications; upload purging off so nothing runs in the background.
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  \
             delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: {HTTP_SECRET}\n  draintimeout: 2s\n\
             {auth}",
            storage = yaml_str(self.storage_dir()),
            port = self.port,
        );
        std::fs::write(self.config_path(), config).expect("write registry config");
    }

    async fn spawn_and_wait(&mut self) -> Result<(), StartError> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open registry log");
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let stderr: File = log.try_clone().expect("clone log handle");
        let mut child = Command::new(&self.bin)
            .arg("serve")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", super::child_path_env())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| StartError::Spawn(e.to_string()))?;

        let client = super::probe_client();
        let probe = format!("{}/v2/", self.url());
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().map_err(|e| StartError::Spawn(e.to_string()))? {
                let new_log = self.log_since(log_start);
                return Err(if new_log.contains("address already in use") {
                    StartError::AddrInUse
                } else {
                    StartError::Exited(status)
                });
            }
            if let Ok(resp) = client.get(&probe).send().await {
                // 401 counts: the server is up, it just wants credentials.
                if matches!(resp.status().as_u16(), 200 | 401) {
                    self.child = Some(child);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                return Err(StartError::Timeout);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn log_since(&self, offset: u64) -> String {
        super::log_since(&self.log_path(), offset)
    }

    fn fail_start(&self, err: StartError) -> ! {
        // The log tail is printed by `Drop` while this panic unwinds.
        panic!(
            "registry on {} failed to start: {err:?}\nconfig {}:\n{}",
            self.host(),
            self.config_path().display(),
            std::fs::read_to_string(self.config_path()).unwrap_or_default(),
        )
    }
}

#[derive(Debug)]
enum StartError {
    Spawn(String),
    AddrInUse,
    Exited(ExitStatus),
    Timeout,
}

/// Quotes a path for YAML (temp paths are plain, but be safe).
fn yaml_str(path: &Path) -> String {
    let s = path.to_str().expect("temp path is utf-8");
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            // Reap synchronously (Drop cannot await); SIGKILL makes this quick.
            // Bounded by iterations, not std::time::Instant (banned: paused time).
            for _ in 0..1000 {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- registry {} ({}) last {PANIC_LOG_LINES} log lines ---\n{}\n--- end of registry log ---",
                self.host(),
                self.log_path().display(),
                self.log_tail(PANIC_LOG_LINES)
            );
        }
    }
}
