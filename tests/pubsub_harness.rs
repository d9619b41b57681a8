//! Self-test of the Pub/Sub emulator harness in `tests/support/pubsub.rs`:
//! a real `gcloud beta emulators pubsub start`, driven over REST.

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use support::PubSubEmulator;

/// Processes whose command line mentions the emulator jar and `--port=PORT`.
/// `None` when `pgrep` is unavailable (the port check still runs).
fn emulator_processes(port: u16) -> Option<Vec<String>> {
    let out = std::process::Command::new("pgrep")
        .args(["-a", "-f", &format!("pubsub-emulator.*--port={port}( |$)")])
        .output()
        .ok()?;
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

/// Polls (every 50 ms, up to 10 s) until nothing accepts connections on `port`.
async fn wait_port_closed(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

#[tokio::test]
async fn starts_on_loopback_and_answers_rest() {
    support::gcloud_bin_or_skip!();
    let ps = PubSubEmulator::start_dedicated().await;
    assert_eq!(ps.project(), "regrelay-test");
    let port = ps.addr().port();
    assert_eq!(ps.host_port(), format!("127.0.0.1:{port}"));
    assert_eq!(ps.endpoint(), format!("http://127.0.0.1:{port}"));
    assert_eq!(
        ps.subscription_path("subx"),
        "projects/regrelay-test/subscriptions/subx"
    );
    assert!(ps.port_accepts());

    let body = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/", ps.endpoint()))
        .send()
        .await
        .expect("GET /")
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), "Ok");

    // The log shows the JVM bound to our loopback port, and gcloud wrote its
    // config into the private HOME inside the guard's temp dir.
    let log = ps.log_tail(100);
    assert!(log.contains(&format!("--host=127.0.0.1 --port={port}")), "{log}");
    let dir = ps.log_path().parent().map(Path::to_path_buf).expect("log dir");
    assert!(
        dir.join("home").join("gcloud").is_dir(),
        "CLOUDSDK_CONFIG inside the temp dir"
    );
    ps.stop().await;
}

#[tokio::test]
async fn peek_keeps_messages_and_drain_removes_them() {
    support::gcloud_bin_or_skip!();
    let ps = PubSubEmulator::start_dedicated().await;
    ps.create_topic("events").await;
    ps.create_subscription("relay", "events", 30).await;

    let payloads: Vec<Vec<u8>> = vec![b"first".to_vec(), b"{\"action\":\"INSERT\"}".to_vec(), vec![0, 255, 1]];
    let mut ids = Vec::new();
    for p in &payloads {
        ids.push(ps.publish("events", p).await);
    }
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        3,
        "distinct message ids: {ids:?}"
    );

    let first = ps.peek("relay", 10).await;
    assert_eq!(sorted(first), sorted(payloads.clone()), "peek sees all three");
    // Peek nacked them: they are still there, and immediately deliverable.
    let second = ps.peek("relay", 10).await;
    assert_eq!(sorted(second), sorted(payloads.clone()), "peek again sees them");
    // `max` limits a peek.
    assert_eq!(ps.peek("relay", 2).await.len(), 2);

    let drained = ps.drain("relay", 10).await;
    assert_eq!(sorted(drained), sorted(payloads), "drain returns the three");
    assert!(ps.peek("relay", 10).await.is_empty(), "nothing left after drain");
    assert!(ps.drain("relay", 10).await.is_empty());
    ps.stop().await;
}

#[tokio::test]
async fn publish_many_batches_over_the_1000_limit() {
    support::gcloud_bin_or_skip!();
    let ps = PubSubEmulator::start_dedicated().await;
    ps.create_topic("bulk-topic").await;
    ps.create_subscription("bulk-sub", "bulk-topic", 60).await;

    let payloads: Vec<Vec<u8>> = (0..1500).map(|i| format!("msg-{i:04}").into_bytes()).collect();
    let ids = ps.publish_many("bulk-topic", &payloads).await;
    assert_eq!(ids.len(), 1500);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1500, "ids are distinct");

    // The emulator hands out at most 100 per pull; drain loops until empty.
    let drained = ps.drain("bulk-sub", 5000).await;
    assert_eq!(drained.len(), 1500);
    assert_eq!(sorted(drained), sorted(payloads));
    assert!(ps.peek("bulk-sub", 10).await.is_empty());
    ps.stop().await;
}

#[tokio::test]
async fn subscription_sees_only_messages_published_after_it() {
    support::gcloud_bin_or_skip!();
    let ps = PubSubEmulator::start_dedicated().await;
    ps.create_topic("late-topic").await;
    ps.publish("late-topic", b"before").await;
    ps.create_subscription("late-sub", "late-topic", 10).await;
    ps.publish("late-topic", b"after").await;
    assert_eq!(ps.drain("late-sub", 10).await, vec![b"after".to_vec()]);
    ps.stop().await;
}

#[tokio::test]
async fn dropping_the_guard_kills_the_whole_process_group() {
    support::gcloud_bin_or_skip!();
    let ps = PubSubEmulator::start_dedicated().await;
    let port = ps.addr().port();
    if let Some(procs) = emulator_processes(port) {
        assert_eq!(procs.len(), 1, "one emulator JVM for port {port}: {procs:?}");
        assert!(procs[0].contains("java"), "{procs:?}");
    }
    let dir = ps.log_path().parent().map(Path::to_path_buf).expect("log dir");
    assert!(dir.join("home").is_dir(), "private HOME exists while running");

    drop(ps);

    assert!(
        wait_port_closed(port).await,
        "port {port} still accepts connections after drop"
    );
    if let Some(procs) = emulator_processes(port) {
        assert!(procs.is_empty(), "emulator processes left behind: {procs:?}");
    }
    assert!(!dir.exists(), "temp dir removed on drop");
}

#[tokio::test]
async fn stop_terminates_gracefully() {
    support::gcloud_bin_or_skip!();
    let ps = PubSubEmulator::start_dedicated().await;
    let port = ps.addr().port();
    ps.stop().await;
    // stop() returns only after the group is gone, so no polling here.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still open after stop"
    );
    if let Some(procs) = emulator_processes(port) {
        assert!(procs.is_empty(), "emulator processes left behind: {procs:?}");
    }
}
