//! End-to-end tests of `regrelay run` (tier 4): the real binary, real `docker-registry`
//! processes, and the real Pub/Sub emulator. Each test states the behaviour it proves
//! through the registries' contents, the subscription's contents and `/metrics`.

mod support;

use std::time::Duration;

use support::image;
use support::{
    Action, COPIES, Daemon, FaultProxy, LONG, Method, PubSubEmulator, Registries, Rule, SETTLED, ar_insert,
    mirror_config, tag_digest,
};

const TOPIC: &str = "gcr";
const SUB: &str = "regrelay";

/// The daemon config: `source` and the rule mirroring everything of `src` to
/// `dst/mirror/{repository}`, with a 5 s read timeout.
fn config(source: &str, src: &str, dst: &str) -> String {
    mirror_config(source, src, dst, 5)
}

#[tokio::test]
async fn pubsub_event_is_replicated_verified_and_acked() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let img = image::push_simple(&s, "team/app", "1.0", 200_000, 1).await;
    let mut daemon = Daemon::start(&config(&emu.source_section(SUB), &src.host(), &dst.host())).await;

    emu.publish(
        TOPIC,
        &ar_insert(&src.host(), "team/app", Some("1.0"), &img.digest.to_string()),
    )
    .await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/team/app", "1.0").await.as_deref(),
        Some(img.digest.to_string().as_str())
    );
    assert_eq!(daemon.metric(COPIES, &[("outcome", "replicated")]).await, 1.0);
    assert_eq!(daemon.readyz().await, 200);
    let lag = daemon.metric("regrelay_event_lag_seconds_count", &[]).await;
    assert_eq!(lag, 1.0, "the publish-to-ack lag is observed once");

    let (status, _) = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
    // Acked means gone: after the daemon has exited nothing is left or redelivered.
    assert!(emu.peek(SUB, 10).await.is_empty(), "the acked message came back");
}

#[tokio::test]
async fn fifty_duplicates_of_one_digest_make_exactly_one_copy() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, .. } = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let img = image::push_simple(&s, "team/app", "2.0", 300_000, 2).await;
    let daemon = Daemon::start(&config(&emu.source_section(SUB), &src.host(), &dst.host())).await;

    let msg = ar_insert(&src.host(), "team/app", Some("2.0"), &img.digest.to_string());
    emu.publish_many(TOPIC, &vec![msg; 50]).await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 50.0)
        .await;
    assert_eq!(daemon.metric(COPIES, &[("outcome", "replicated")]).await, 1.0);
    assert_eq!(
        daemon.metric(COPIES, &[]).await,
        1.0,
        "no second copy, not even a no-op one"
    );
    assert!(daemon.metric("regrelay_dedup_hits_total", &[]).await >= 49.0);
}

#[tokio::test]
async fn failing_target_is_nacked_redelivered_and_finally_replicated() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let proxy = FaultProxy::start(&dst.url()).await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let img = image::push_simple(&s, "team/app", "3.0", 100_000, 3).await;
    // Every manifest PUT at the target fails with 503 for the first 6 tries: more than
    // the in-process retries, so the message must go back to Pub/Sub and return.
    proxy.add_rule(
        Rule::status(503)
            .method(Method::PUT)
            .path_contains("/manifests/")
            .times(6),
    );
    let daemon = Daemon::start(&config(&emu.source_section(SUB), &src.host(), &proxy.host())).await;

    emu.publish(
        TOPIC,
        &ar_insert(&src.host(), "team/app", Some("3.0"), &img.digest.to_string()),
    )
    .await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    assert!(daemon.metric(SETTLED, &[("outcome", "nacked")]).await >= 1.0);
    assert!(
        daemon
            .metric(COPIES, &[("outcome", "failed"), ("error_class", "transient")])
            .await
            >= 1.0
    );
    assert_eq!(
        tag_digest(&d, "mirror/team/app", "3.0").await.as_deref(),
        Some(img.digest.to_string().as_str())
    );
    assert!(
        daemon
            .metric("regrelay_registry_requests_total", &[("status_class", "5xx")])
            .await
            >= 6.0
    );
}

#[tokio::test]
async fn sigkill_mid_copy_redelivers_and_the_copy_completes_after_restart() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let proxy = FaultProxy::start(&src.url()).await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let img = image::push_simple(&s, "team/big", "1", 8 << 20, 4).await;
    // The first blob GET from the source hangs: the copy is in flight when we kill.
    proxy.add_rule(
        Rule::new(Action::Stall {
            delay: Duration::from_secs(30),
        })
        .method(Method::GET)
        .path_contains("/blobs/")
        .times(1),
    );
    let cfg = config(&emu.source_section(SUB), &proxy.host(), &dst.host());
    let mut daemon = Daemon::start(&cfg).await;
    emu.publish(
        TOPIC,
        &ar_insert(&proxy.host(), "team/big", Some("1"), &img.digest.to_string()),
    )
    .await;
    daemon
        .wait_metric("regrelay_copies_in_flight", &[], LONG, |v| v == 1.0)
        .await;
    daemon.kill().await;
    assert_eq!(tag_digest(&d, "mirror/team/big", "1").await, None, "nothing tagged yet");

    // The lease (10 s) runs out, Pub/Sub redelivers to the new process. The emulator
    // sometimes goes on delivering to the killed process's stream for tens of seconds
    // before it redelivers (seen in about one run in six, as with the SIGTERM test), so
    // this waits up to 150 s.
    daemon.restart().await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], Duration::from_secs(150), |v| v == 1.0)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/team/big", "1").await.as_deref(),
        Some(img.digest.to_string().as_str())
    );
    let (status, _) = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success());
    assert!(emu.peek(SUB, 10).await.is_empty());
}

#[tokio::test]
async fn malformed_and_hostile_messages_are_rejected_without_contact() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, .. } = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    // A host we own but did not configure: it must never see a connection.
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    stranger.set_nonblocking(true).unwrap();
    let stranger_host = stranger.local_addr().unwrap().to_string();
    let mut daemon = Daemon::start(&config(&emu.source_section(SUB), &src.host(), &dst.host())).await;

    let digest = format!("sha256:{}", "a".repeat(64));
    let bad: Vec<Vec<u8>> = vec![
        b"not json at all".to_vec(),
        br#"{"action":"UPSERT","digest":"x"}"#.to_vec(),
        br#"{"action":"INSERT","tag":42}"#.to_vec(),
        format!(r#"{{"action":"INSERT","digest":"{}"}}"#, "x".repeat(100_000)).into_bytes(),
        ar_insert(&stranger_host, "team/app", Some("1"), &digest),
    ];
    emu.publish_many(TOPIC, &bad).await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "rejected")], LONG, |v| v == 5.0)
        .await;
    assert!(daemon.exited().is_none(), "the daemon must keep running");
    assert_eq!(daemon.readyz().await, 200);
    assert!(
        matches!(stranger.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the unconfigured host was contacted"
    );
    let log = daemon.log();
    assert!(log.contains("not in the configuration"), "log: {log}");
    // reject = "ack" (the default): rejected messages do not come back.
    let (status, _) = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success());
    assert!(emu.peek(SUB, 10).await.is_empty());
}

#[tokio::test]
async fn sigterm_while_busy_drains_within_the_grace_period_and_exits_zero() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let proxy = FaultProxy::start(&src.url()).await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let quick = image::push_simple(&s, "team/quick", "1", 50_000, 5).await;
    let stuck = image::push_simple(&s, "team/stuck", "1", 50_000, 6).await;
    // team/quick's blobs take 1 s each (finishes inside the 4 s grace period); team/stuck's
    // blob takes 30 s (does not: it is nacked and comes back).
    proxy.add_rule(
        Rule::new(Action::Stall {
            delay: Duration::from_millis(1000),
        })
        .method(Method::GET)
        .path_contains("team/quick/blobs/")
        .times(2),
    );
    proxy.add_rule(
        Rule::new(Action::Stall {
            delay: Duration::from_secs(30),
        })
        .method(Method::GET)
        .path_contains("team/stuck/blobs/"),
    );
    let mut daemon = Daemon::start(&config(&emu.source_section(SUB), &proxy.host(), &dst.host())).await;
    // The stuck copy first, and in flight, before the quick one is published: both are
    // then in flight for as long as the quick one runs, however late (under load) its
    // delivery comes.
    emu.publish(
        TOPIC,
        &ar_insert(&proxy.host(), "team/stuck", Some("1"), &stuck.digest.to_string()),
    )
    .await;
    daemon
        .wait_metric("regrelay_copies_in_flight", &[], LONG, |v| v == 1.0)
        .await;
    emu.publish(
        TOPIC,
        &ar_insert(&proxy.host(), "team/quick", Some("1"), &quick.digest.to_string()),
    )
    .await;
    daemon
        .wait_metric("regrelay_copies_in_flight", &[], LONG, |v| v == 2.0)
        .await;
    let (status, took) = daemon.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(12), "took {took:?} for a 4 s grace period");
    // The quick copy finished and was acked; the stuck one was nacked and is back.
    assert_eq!(
        tag_digest(&d, "mirror/team/quick", "1").await.as_deref(),
        Some(quick.digest.to_string().as_str())
    );
    assert_eq!(tag_digest(&d, "mirror/team/stuck", "1").await, None);
    // Not acked: only the quick message was.
    let log = daemon.log();
    assert_eq!(log.matches("\"message\":\"acked\"").count(), 1, "log:\n{log}");
    assert!(log.contains("handing the messages still in flight back to the broker"));
    // It is back in the subscription. The source nacks it at shutdown, yet the emulator
    // mostly goes on delivering it to the closed stream, again at each ack deadline
    // (10 s), so a pull can catch it only in the moment after an expiry: `peek_within`
    // pulls every 20 ms (seen back after 11-21 s on one loaded core, where pulling every
    // 500 ms missed it for over 45 s, and in a slow full run for 150 s).
    let left = emu.peek_within(SUB, 10, Duration::from_secs(150)).await;
    assert_eq!(left.len(), 1, "exactly the unfinished message is back");
    assert!(String::from_utf8_lossy(&left[0]).contains("team/stuck"));
}

#[tokio::test]
async fn out_of_order_tag_events_never_move_the_target_tag_back() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let old = image::push_simple(&s, "team/app", "stable", 40_000, 7).await;
    let new = image::push_simple(&s, "team/app", "stable", 40_000, 8).await;
    assert_ne!(old.digest, new.digest);
    let daemon = Daemon::start(&config(&emu.source_section(SUB), &src.host(), &dst.host())).await;
    // The newer event arrives first, the older one second.
    emu.publish(
        TOPIC,
        &ar_insert(&src.host(), "team/app", Some("stable"), &new.digest.to_string()),
    )
    .await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    emu.publish(
        TOPIC,
        &ar_insert(&src.host(), "team/app", Some("stable"), &old.digest.to_string()),
    )
    .await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 2.0)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/team/app", "stable").await.as_deref(),
        Some(new.digest.to_string().as_str()),
        "the target tag must stay on the source's current digest"
    );
    assert!(daemon.log().contains("tag has moved since the event"));
}

/// The file source needs no emulator: a JSON-lines backfill, one bad line, exit code 1.
#[tokio::test]
async fn file_source_backfill_verifies_each_line_and_reports_failures() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let a = image::push_simple(&s, "team/a", "1", 30_000, 9).await;
    let b = image::push_simple(&s, "team/b", "2", 30_000, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let mut lines = String::new();
    for (repo, tag, img) in [("team/a", "1", &a), ("team/b", "2", &b)] {
        lines.push_str(&String::from_utf8(ar_insert(&src.host(), repo, Some(tag), &img.digest.to_string())).unwrap());
        lines.push('\n');
    }
    lines.push_str("{\"broken\": true\n");
    std::fs::write(&events, lines).unwrap();
    let source = format!("[source]\nkind = \"file\"\npath = \"{}\"", events.display());
    let cfg_path = dir.path().join("regrelay.toml");
    std::fs::write(
        &cfg_path,
        config(&source, &src.host(), &dst.host()).replace("{ADMIN}", "127.0.0.1:0"),
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_regrelay"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&cfg_path)
        .env_clear()
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "one line failed; stderr:\n{stderr}");
    assert!(
        stderr.contains("2 events verified or ignored, 1 failed"),
        "stderr:\n{stderr}"
    );
    assert_eq!(
        tag_digest(&d, "mirror/team/a", "1").await.as_deref(),
        Some(a.digest.to_string().as_str())
    );
    assert_eq!(
        tag_digest(&d, "mirror/team/b", "2").await.as_deref(),
        Some(b.digest.to_string().as_str())
    );
}

/// Peak resident memory of process `pid` (`VmHWM`), KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Issue 9: a 50 MB line on stdin is not read into memory: it is rejected with its reason
/// and counted as failed, the next line is replicated, and the process's peak memory stays
/// far below the line's size (the old reader took it to 63 MB).
#[tokio::test]
async fn stdin_line_over_the_limit_is_rejected_unbuffered_and_the_next_line_runs_issue_9() {
    use tokio::io::AsyncWriteExt as _;
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let img = image::push_simple(&s, "team/app", "1", 20_000, 11).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("regrelay.toml");
    std::fs::write(
        &cfg_path,
        config("[source]\nkind = \"file\"", &src.host(), &dst.host()).replace("{ADMIN}", "127.0.0.1:0"),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_regrelay"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&cfg_path)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    const BIG: usize = 50 << 20;
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..BIG / chunk.len() {
        stdin.write_all(&chunk).await.unwrap();
    }
    stdin.write_all(b"\n").await.unwrap();
    stdin
        .write_all(&ar_insert(&src.host(), "team/app", Some("1"), &img.digest.to_string()))
        .await
        .unwrap();
    stdin.write_all(b"\n").await.unwrap();
    stdin.flush().await.unwrap();
    // The good line is replicated while stdin is still open: measure before the exit.
    let deadline = tokio::time::Instant::now() + LONG;
    while tag_digest(&d, "mirror/team/app", "1").await.as_deref() != Some(img.digest.to_string().as_str()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the line after the long one was not replicated; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak_kib = vm_hwm_kib(pid).expect("VmHWM of the running process");
    drop(stdin);
    let status = tokio::time::timeout(LONG, child.wait())
        .await
        .expect("regrelay exits at the end of stdin")
        .unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    eprintln!("peak RSS of regrelay reading a 50 MiB line: {} MiB", peak_kib / 1024);
    assert!(
        peak_kib < 40 * 1024,
        "peak RSS {peak_kib} KiB: the long line must not be buffered"
    );
    assert_eq!(status.code(), Some(1), "the long line failed; stderr:\n{stderr}");
    assert!(
        stderr.contains("1 events verified or ignored, 1 failed"),
        "stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("longer than the 65536-byte payload limit") && stderr.contains(&BIG.to_string()),
        "the reason and the line's size are logged; stderr:\n{stderr}"
    );
}

/// `check-config` and `run` refuse a bad file with exit code 64 before contacting anything.
#[tokio::test]
async fn bad_config_exits_64_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        config("[source]\nkind = \"file\"", "127.0.0.1:1", "127.0.0.1:2")
            .replace("{ADMIN}", "127.0.0.1:0")
            .replace("registry = \"127.0.0.1:2\"", "registry = \"unknown.example\""),
    )
    .unwrap();
    for cmd in ["check-config", "run"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_regrelay"))
            .args([cmd, "--config"])
            .arg(&path)
            .env_clear()
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{cmd}: {stderr}");
        assert!(stderr.contains("bad.toml:"), "{cmd}: {stderr}");
        assert!(stderr.contains("unknown.example"), "{cmd}: {stderr}");
    }
}

/// Poll `/readyz` until it answers `want` (deadline `within`).
async fn wait_readyz(daemon: &Daemon, want: u16, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while daemon.readyz().await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never answered {want}; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unreachable_target_is_systemic_pauses_and_recovers_by_itself() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let proxy = FaultProxy::start(&dst.url()).await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let img = image::push_simple(&s, "team/app", "4.0", 50_000, 11).await;
    proxy.set_down(true);
    // A silent target: 1 s read timeout, Systemic after 1 s without any answer.
    let target_section = format!("[registries.\"{}\"]\nread_timeout_secs = 5\n", proxy.host());
    let cfg = config(&emu.source_section(SUB), &src.host(), &proxy.host()).replace(
        &target_section,
        &format!(
            "[registries.\"{}\"]\nread_timeout_secs = 1\nunreachable_after_secs = 1\n",
            proxy.host()
        ),
    );
    assert!(cfg.contains("unreachable_after_secs"), "{cfg}");
    let daemon = Daemon::start(&cfg).await;
    emu.publish(
        TOPIC,
        &ar_insert(&src.host(), "team/app", Some("4.0"), &img.digest.to_string()),
    )
    .await;

    // Silent for more than a second: Systemic, nacked, pulling paused, not ready.
    daemon
        .wait_metric(COPIES, &[("error_class", "systemic")], LONG, |v| v >= 1.0)
        .await;
    wait_readyz(&daemon, 503, Duration::from_secs(20)).await;
    assert_eq!(daemon.metric(SETTLED, &[("outcome", "acked")]).await, 0.0);
    assert!(daemon.metric(SETTLED, &[("outcome", "nacked")]).await >= 1.0);

    // The target comes back: the paused daemon resumes by itself and finishes the work.
    proxy.set_down(false);
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    wait_readyz(&daemon, 200, Duration::from_secs(20)).await;
    assert_eq!(
        tag_digest(&d, "mirror/team/app", "4.0").await.as_deref(),
        Some(img.digest.to_string().as_str())
    );
}

/// `run` reading events from stdin exits 0 on SIGTERM even though stdin stays open (the
/// runtime must not wait for the blocked stdin read).
#[tokio::test]
async fn stdin_source_exits_on_sigterm_while_stdin_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stdin.toml");
    std::fs::write(
        &path,
        config("[source]\nkind = \"file\"", "127.0.0.1:1", "127.0.0.1:2").replace("{ADMIN}", "127.0.0.1:0"),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_regrelay"))
        .args(["run", "--config"])
        .arg(&path)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take();
    let mut stderr = child.stderr.take().unwrap();
    // Wait until it is running (its first log line), then stop it.
    let mut first = [0u8; 1];
    tokio::io::AsyncReadExt::read_exact(&mut stderr, &mut first)
        .await
        .unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("regrelay did not exit within 10 s of SIGTERM with stdin open")
        .unwrap();
    assert!(status.success(), "{status}");
}

/// A target answering 503 to everything for 30 s while 20 messages are in flight, on a
/// subscription with no retry policy (Pub/Sub redelivers a nacked message at once): each
/// failed message is held (its lease extended) for a retry delay that doubles per delivery
/// (2, 4, 8, 8, ... s) before it is nacked, so each is delivered a handful of times instead
/// of hundreds, and all are replicated and acked once the target is back.
#[tokio::test]
async fn a_30_second_outage_is_ridden_out_with_bounded_redeliveries() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let proxy = FaultProxy::start(&dst.url()).await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let mut events = Vec::new();
    let mut digests = Vec::new();
    for i in 0..20u64 {
        let tag = format!("v{i}");
        let digest = image::push_simple(&s, "team/app", &tag, 4_000, 200 + i).await.digest;
        events.push(ar_insert(&src.host(), "team/app", Some(&tag), &digest.to_string()));
        digests.push((tag, digest));
    }
    let cfg = support::outage_pipeline(&config(
        &emu.source_section(SUB)
            .replace("max_outstanding_messages = 16", "max_outstanding_messages = 40"),
        &src.host(),
        &proxy.host(),
    ));
    proxy.add_rule(Rule::status(503).times(usize::MAX));
    let daemon = Daemon::start(&cfg).await;
    emu.publish_many(TOPIC, &events).await;
    daemon
        .wait_metric("regrelay_messages_waiting", &[], LONG, |v| v >= 10.0)
        .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(daemon.metric(SETTLED, &[("outcome", "acked")]).await, 0.0);
    proxy.clear_rules();

    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], Duration::from_secs(90), |v| v == 20.0)
        .await;
    for (tag, digest) in &digests {
        assert_eq!(
            tag_digest(&d, "mirror/team/app", tag).await.as_deref(),
            Some(digest.to_string().as_str()),
            "{tag} replicated"
        );
    }
    // About five deliveries per message over 30 s; an immediate nack loop makes hundreds.
    let received = daemon.metric("regrelay_messages_received_total", &[]).await;
    assert!((40.0..=20.0 * 7.0).contains(&received), "deliveries: {received}");
    assert_eq!(daemon.metric("regrelay_messages_waiting", &[]).await, 0.0);
    assert!(emu.peek(SUB, 10).await.is_empty(), "acked means gone");
}

/// Per-registry health: two targets, one of them (a disaster-recovery copy behind the
/// fault proxy) silent. Messages for images that only go to the healthy target are acked
/// at once; messages that also go to the dead one have their healthy route done and come
/// back after the retry delay (a few deliveries, not a tight loop); `/readyz` stays 200
/// and lists the dead registry as unhealthy; when it answers again everything converges,
/// nothing lost and nothing acked before its copies were verified.
#[tokio::test]
async fn a_dead_target_does_not_stop_replication_to_a_healthy_one() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let dr = support::TestRegistry::start().await;
    let proxy = FaultProxy::start(&dr.url()).await;
    let dr_client = image::client(&dr.host(), regrelay::config::Auth::Anonymous);
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let mut events = Vec::new();
    let mut images = Vec::new();
    for (i, repo) in ["team/app", "team/app", "both/app", "both/app"].iter().enumerate() {
        let tag = format!("v{i}");
        let digest = image::push_simple(&s, repo, &tag, 4_000, 300 + i as u64).await.digest;
        events.push(ar_insert(&src.host(), repo, Some(&tag), &digest.to_string()));
        images.push((repo.to_string(), tag, digest.to_string()));
    }
    proxy.set_down(true);
    let cfg = format!(
        "{}\n[registries.\"{dead}\"]\nread_timeout_secs = 1\nunreachable_after_secs = 1\nretry = {{ attempts = 2, min_delay_ms = 50, max_delay_ms = 200 }}\n\n[[rules]]\nname = \"dr\"\nsource_registry = \"{src}\"\nrepository = \"both/**\"\n\n[[rules.targets]]\nregistry = \"{dead}\"\nrepository = \"dr/{{repository}}\"\n",
        config(&emu.source_section(SUB), &src.host(), &dst.host()).replace(
            "retry_delay_min_secs = 1\nretry_delay_max_secs = 2\n",
            "retry_delay_min_secs = 2\nretry_delay_max_secs = 4\n"
        ),
        dead = proxy.host(),
        src = src.host(),
    );
    let daemon = Daemon::start(&cfg).await;
    emu.publish_many(TOPIC, &events).await;

    // The team/app images only need the healthy target: acked, and replicated there.
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 2.0)
        .await;
    for (repo, tag, digest) in &images {
        let want = Some(digest.as_str());
        let at = tag_digest(&d, &format!("mirror/{repo}"), tag).await;
        if repo == "team/app" {
            assert_eq!(at.as_deref(), want, "{repo}:{tag} at the healthy target");
        }
    }
    // The dead target is unhealthy; the daemon stays ready (the healthy target can progress).
    daemon
        .wait_metric("regrelay_registry_healthy", &[("registry", &proxy.host())], LONG, |v| {
            v == 0.0
        })
        .await;
    let ready = reqwest::get(daemon.url("/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["registries"][proxy.host()]["state"], "unhealthy", "{body}");
    assert_eq!(body["registries"][dst.host()]["state"], "healthy", "{body}");
    assert_eq!(
        daemon
            .metric("regrelay_registry_healthy", &[("registry", &dst.host())])
            .await,
        1.0
    );
    // While the dead target stays down (15 s), the both/app messages come back only after
    // their retry delay (2, 4, 4, ... s): a few deliveries each, never a tight loop.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(
        daemon.metric(SETTLED, &[("outcome", "acked")]).await,
        2.0,
        "nothing acked unverified"
    );
    let received = daemon.metric("regrelay_messages_received_total", &[]).await;
    assert!(
        received <= 2.0 + 2.0 * 8.0,
        "redelivered in a tight loop: {received} deliveries"
    );

    // The dead target answers again: everything converges.
    proxy.set_down(false);
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 4.0)
        .await;
    for (repo, tag, digest) in &images {
        let want = Some(digest.as_str());
        assert_eq!(tag_digest(&d, &format!("mirror/{repo}"), tag).await.as_deref(), want);
        if repo == "both/app" {
            assert_eq!(
                tag_digest(&dr_client, &format!("dr/{repo}"), tag).await.as_deref(),
                want
            );
        }
    }
    daemon
        .wait_metric("regrelay_registry_healthy", &[("registry", &proxy.host())], LONG, |v| {
            v == 1.0
        })
        .await;
    assert!(emu.peek(SUB, 10).await.is_empty(), "acked means gone");
}
