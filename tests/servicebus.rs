//! End-to-end tests of `regrelay run` with `[source] kind = "servicebus"`: the real binary,
//! real `docker-registry` processes, and the in-process Service Bus REST server
//! (`support::ServiceBusServer`). Each behaviour runs once with Event Grid-schema events
//! and once with CloudEvents-schema events (protocols.md §2.3, §2.4), and is proven
//! through the registries' contents, the broker's records and `/metrics`.

mod support;

use std::time::Duration;

use regrelay::config::RejectMode;
use regrelay::queue::Source as _;
use regrelay::queue::servicebus::ServiceBusSource;
use support::image;
use support::{
    Action, COPIES, Daemon, EntityOptions, FaultProxy, LONG, Method, NAMESPACE, Registries, Right, Rule, SETTLED,
    ServiceBusServer, mirror_config, tag_digest,
};
use tempfile::TempDir;

const Q: &str = "acr-events";
const RULE: &str = "regrelay-listen";
const LOCK_LOST: &str = "regrelay_lock_lost_total";
const ARM_ID: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/example-rg/providers/Microsoft.ContainerRegistry/registries/exampleregistry";

/// The two event schemas an Event Grid subscription can deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    EventGrid,
    CloudEvents,
}

/// An ACR ImagePushed event for `host/repo[:tag]@digest`, as Event Grid puts it in a
/// Service Bus message body: one JSON object.
fn pushed(schema: Schema, host: &str, repo: &str, tag: Option<&str>, digest: &str) -> Vec<u8> {
    let id = format!("{:032x}", fastrand::u128(..));
    let mut target = serde_json::json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "size": 1609, "length": 1609, "digest": digest, "repository": repo,
    });
    if let Some(t) = tag {
        target["tag"] = t.into();
    }
    let data = serde_json::json!({
        "id": id, "timestamp": "2026-05-04T10:15:30.4681009Z", "action": "push", "location": "westeurope",
        "target": target,
        "request": {"id": "b33dfdd7", "host": host, "method": "PUT", "useragent": "buildkit/v0.13"},
    });
    let subject = tag.map_or(repo.to_owned(), |t| format!("{repo}:{t}"));
    let event = match schema {
        Schema::EventGrid => serde_json::json!({
            "id": id, "topic": ARM_ID, "subject": subject,
            "eventType": "Microsoft.ContainerRegistry.ImagePushed", "eventTime": "2026-05-04T10:15:30.6609948Z",
            "data": data, "dataVersion": "2.0", "metadataVersion": "1",
        }),
        Schema::CloudEvents => serde_json::json!({
            "specversion": "1.0", "id": id, "source": ARM_ID, "subject": subject,
            "type": "Microsoft.ContainerRegistry.ImagePushed", "time": "2026-05-04T10:15:30.6609948Z",
            "data": data,
        }),
    };
    serde_json::to_vec(&event).unwrap()
}

/// The application properties Event Grid adds, as custom property headers.
fn aeg_headers(schema: Schema) -> [(&'static str, &'static str); 3] {
    let version = match schema {
        Schema::EventGrid => "\"1\"",
        Schema::CloudEvents => "\"1.0\"",
    };
    [
        ("aeg-event-type", "\"Notification\""),
        ("aeg-delivery-count", "0"),
        ("aeg-metadata-version", version),
    ]
}

/// A queue-reading source with a Listen-only SAS rule whose key is in a file in `dir`.
fn source(sb: &ServiceBusServer, dir: &TempDir, key: &str, extra: &str) -> String {
    let key_file = dir.path().join("sb-key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    format!(
        r#"[source]
kind = "servicebus"
namespace = "{NAMESPACE}"
endpoint = "{}"
queue = "{Q}"
receivers = 2
wait_secs = 2
auth = {{ kind = "sas", key_name = "{RULE}", key_file = "{}" }}
{extra}"#,
        sb.url(),
        key_file.display()
    )
}

/// The daemon config: `source` and the rule mirroring everything of `src` to
/// `dst/mirror/{repository}`, with a 10 s read timeout (some tests stall a blob GET
/// for up to 6 s).
fn config(source: &str, src: &str, dst: &str) -> String {
    mirror_config(source, src, dst, 10)
}

/// A server with the queue and the daemon's Listen rule; returns it and the rule's key.
async fn broker(lock: Duration, max_delivery_count: u32) -> (ServiceBusServer, String) {
    let sb = ServiceBusServer::start().await;
    sb.create_queue(
        Q,
        EntityOptions {
            lock_duration: lock,
            max_delivery_count,
            duplicate_detection: None,
        },
    );
    let key = format!("listen-key-{:016x}", fastrand::u64(..));
    sb.add_sas_rule(RULE, &key, &[Right::Listen]);
    (sb, key)
}

/// Issue 9: behind an `endpoint` override (a private endpoint, a proxy, this test server)
/// the SAS token is signed for the namespace's URI for the entity, which is what the broker
/// checks (the test server refuses any other audience, like the real service); the
/// override only decides where requests go. The source runs in-process, for a queue and
/// for a topic subscription, with the config read as the daemon reads it.
#[tokio::test]
async fn sas_audience_is_the_namespace_behind_an_endpoint_override_issue_9() {
    let (sb, key) = broker(Duration::from_secs(60), 10).await;
    sb.create_topic("acr");
    sb.create_subscription("acr", "regrelay", EntityOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("sb-key");
    std::fs::write(&key_file, &key).unwrap();
    let entities = [
        (format!("queue = \"{Q}\""), Q, Q.to_owned()),
        (
            "topic = \"acr\"\nsubscription = \"regrelay\"".to_owned(),
            "acr",
            "acr/subscriptions/regrelay".to_owned(),
        ),
    ];
    for (i, (entity, send_to, receive_from)) in entities.iter().enumerate() {
        let id = format!("audience-{i}");
        assert_eq!(sb.send(send_to, b"{}", Some(&id), &[]).await, 201);
        let source = format!(
            "[source]\nkind = \"servicebus\"\nnamespace = \"{NAMESPACE}\"\nendpoint = \"{}\"\n{entity}\nwait_secs = 1\n\
             auth = {{ kind = \"sas\", key_name = \"{RULE}\", key_file = \"{}\" }}",
            sb.url(),
            key_file.display()
        );
        let toml = config(&source, "127.0.0.1:1", "127.0.0.1:2").replace("{ADMIN}", "127.0.0.1:0");
        let cfg = regrelay::config::load_str(&toml, std::path::Path::new("regrelay.toml")).unwrap();
        let regrelay::config::SourceConfig::ServiceBus(sbc) = &cfg.source else {
            panic!("a Service Bus source");
        };
        let mut source = ServiceBusSource::connect(sbc, RejectMode::Nack).await.unwrap();
        let delivery = tokio::time::timeout(Duration::from_secs(10), source.next())
            .await
            .unwrap_or_else(|_| panic!("{receive_from}: nothing received; requests: {:#?}", sb.requests()))
            .expect("the source is open")
            .unwrap_or_else(|e| panic!("{receive_from}: receive refused: {e}"));
        assert_eq!(&delivery.payload[..], b"{}");
        delivery.handle.ack();
        source.close().await;
        sb.wait_until(LONG, "the message completed", |sb| {
            sb.counts(receive_from).completed == 1
        })
        .await;
    }
    assert!(
        sb.requests().iter().all(|r| r.status != 401),
        "no request was refused: {:#?}",
        sb.requests()
    );
}

async fn push_is_replicated_verified_and_completed(schema: Schema) {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let (sb, key) = broker(Duration::from_secs(60), 10).await;
    let dir = tempfile::tempdir().unwrap();
    let img = image::push_simple(&s, "team/app", "1.0", 200_000, 1).await;
    let mut daemon = Daemon::start(&config(&source(&sb, &dir, &key, ""), &src.host(), &dst.host())).await;

    let body = pushed(schema, &src.host(), "team/app", Some("1.0"), &img.digest.to_string());
    assert_eq!(sb.send(Q, &body, Some("m-1"), &aeg_headers(schema)).await, 201);
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/team/app", "1.0").await.as_deref(),
        Some(img.digest.to_string().as_str())
    );
    sb.wait_until(LONG, "the message completed", |sb| sb.counts(Q).completed == 1)
        .await;
    let st = sb.stats("m-1");
    assert_eq!(
        (st.deliveries, st.completions, st.abandons, st.stale),
        (1, 1, 0, 0),
        "{st:?}"
    );
    // The complete went to the Location URL (sequence number + lock token).
    let seq = sb.completed(Q)[0].seq;
    let prefix = format!("/{Q}/messages/{seq}/");
    assert!(
        sb.requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.path.starts_with(&prefix) && r.status == 200),
        "{:?}",
        sb.requests()
    );
    assert_eq!(daemon.metric(COPIES, &[("outcome", "replicated")]).await, 1.0);
    assert_eq!(
        daemon
            .metric("regrelay_messages_received_total", &[("source", "servicebus")])
            .await,
        1.0
    );
    assert_eq!(daemon.readyz().await, 200);
    let (status, _) = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
    let c = sb.counts(Q);
    assert_eq!((c.active, c.locked, c.dead_lettered), (0, 0, 0), "nothing left behind");
    assert!(!daemon.log().contains(&key), "the SAS key was logged");
}

#[tokio::test]
async fn event_grid_push_is_replicated_verified_and_completed() {
    push_is_replicated_verified_and_completed(Schema::EventGrid).await;
}

#[tokio::test]
async fn cloudevents_push_is_replicated_verified_and_completed() {
    push_is_replicated_verified_and_completed(Schema::CloudEvents).await;
}

async fn failing_target_is_abandoned_redelivered_and_finally_replicated(schema: Schema) {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let proxy = FaultProxy::start(&dst.url()).await;
    let (sb, key) = broker(Duration::from_secs(60), 10).await;
    let dir = tempfile::tempdir().unwrap();
    let img = image::push_simple(&s, "team/app", "3.0", 100_000, 3).await;
    // More 503s on the manifest PUT than one delivery's in-process retries absorb.
    proxy.add_rule(
        Rule::status(503)
            .method(Method::PUT)
            .path_contains("/manifests/")
            .times(4),
    );
    let daemon = Daemon::start(&config(&source(&sb, &dir, &key, ""), &src.host(), &proxy.host())).await;
    let body = pushed(schema, &src.host(), "team/app", Some("3.0"), &img.digest.to_string());
    sb.send(Q, &body, Some("m-3"), &aeg_headers(schema)).await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    assert!(daemon.metric(SETTLED, &[("outcome", "nacked")]).await >= 1.0);
    assert_eq!(
        tag_digest(&d, "mirror/team/app", "3.0").await.as_deref(),
        Some(img.digest.to_string().as_str())
    );
    sb.wait_until(LONG, "the message completed", |sb| sb.counts(Q).completed == 1)
        .await;
    let st = sb.stats("m-3");
    assert!(
        st.deliveries >= 2 && st.abandons >= 1,
        "abandoned and redelivered: {st:?}"
    );
    assert_eq!((st.completions, st.dead_lettered), (1, 0), "{st:?}");
    assert!(
        daemon.log().contains("\"attempt\":2"),
        "the redelivery's attempt is logged"
    );
}

#[tokio::test]
async fn event_grid_failing_target_is_abandoned_redelivered_and_finally_replicated() {
    failing_target_is_abandoned_redelivered_and_finally_replicated(Schema::EventGrid).await;
}

#[tokio::test]
async fn cloudevents_failing_target_is_abandoned_redelivered_and_finally_replicated() {
    failing_target_is_abandoned_redelivered_and_finally_replicated(Schema::CloudEvents).await;
}

async fn copy_outlasting_the_lock_keeps_it_renewed_and_runs_once(schema: Schema) {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let proxy = FaultProxy::start(&src.url()).await;
    let (sb, key) = broker(Duration::from_secs(2), 10).await;
    let dir = tempfile::tempdir().unwrap();
    let img = image::push_simple(&s, "team/slow", "1", 100_000, 4).await;
    // The first blob GET takes 5 s: two and a half lock durations.
    proxy.add_rule(
        Rule::new(Action::Stall {
            delay: Duration::from_secs(5),
        })
        .method(Method::GET)
        .path_contains("/blobs/")
        .times(1),
    );
    let daemon = Daemon::start(&config(&source(&sb, &dir, &key, ""), &proxy.host(), &dst.host())).await;
    let body = pushed(schema, &proxy.host(), "team/slow", Some("1"), &img.digest.to_string());
    sb.send(Q, &body, Some("m-slow"), &aeg_headers(schema)).await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v >= 1.0)
        .await;
    sb.wait_until(LONG, "the message completed", |sb| sb.counts(Q).completed == 1)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/team/slow", "1").await.as_deref(),
        Some(img.digest.to_string().as_str())
    );
    let st = sb.stats("m-slow");
    assert_eq!(
        (st.deliveries, st.expiries, st.stale),
        (1, 0, 0),
        "never redelivered: {st:?}"
    );
    assert!(st.renewals >= 3, "renewed about every second: {st:?}");
    assert_eq!(st.completions, 1);
    assert_eq!(
        daemon.metric(COPIES, &[]).await,
        1.0,
        "one copy, no duplicate processing"
    );
    assert_eq!(daemon.metric(LOCK_LOST, &[]).await, 0.0);
    assert_eq!(daemon.metric("regrelay_messages_received_total", &[]).await, 1.0);
    assert_eq!(daemon.metric(SETTLED, &[("outcome", "acked")]).await, 1.0);
}

#[tokio::test]
async fn event_grid_copy_outlasting_the_lock_keeps_it_renewed_and_runs_once() {
    copy_outlasting_the_lock_keeps_it_renewed_and_runs_once(Schema::EventGrid).await;
}

#[tokio::test]
async fn cloudevents_copy_outlasting_the_lock_keeps_it_renewed_and_runs_once() {
    copy_outlasting_the_lock_keeps_it_renewed_and_runs_once(Schema::CloudEvents).await;
}

async fn poison_is_dead_lettered_after_max_deliveries_and_the_daemon_keeps_going(schema: Schema) {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let (sb, key) = broker(Duration::from_secs(60), 3).await;
    let dir = tempfile::tempdir().unwrap();
    let img = image::push_simple(&s, "team/app", "5.0", 50_000, 5).await;
    let mut daemon = Daemon::start(&config(&source(&sb, &dir, &key, ""), &src.host(), &dst.host())).await;

    // Permanent failures: not JSON at all, and a well-formed event that cannot be acted on
    // (Event Grid: a registry that is not configured; CloudEvents: an invalid digest).
    let digest = img.digest.to_string();
    let unusable = match schema {
        Schema::EventGrid => pushed(schema, "127.0.0.1:1", "team/app", Some("5.0"), &digest),
        Schema::CloudEvents => pushed(schema, &src.host(), "team/app", Some("5.0"), "sha256:not-a-digest"),
    };
    sb.send(Q, b"not json at all", Some("poison-1"), &aeg_headers(schema))
        .await;
    sb.send(Q, &unusable, Some("poison-2"), &aeg_headers(schema)).await;
    sb.wait_until(LONG, "both poison messages dead-lettered", |sb| {
        sb.counts(Q).dead_lettered == 2
    })
    .await;
    for m in sb.dead_letters(Q) {
        assert!(m.message_id.starts_with("poison-"), "{}", m.message_id);
        assert_eq!(m.delivery_count, 3, "abandoned until MaxDeliveryCount");
        assert!(
            m.properties
                .iter()
                .any(|(k, v)| k == "DeadLetterReason" && v.contains("MaxDeliveryCountExceeded"))
        );
    }
    daemon
        .wait_metric(SETTLED, &[("outcome", "rejected")], LONG, |v| v == 6.0)
        .await;
    assert!(daemon.exited().is_none(), "the daemon keeps running");

    // And it still does its job.
    let body = pushed(schema, &src.host(), "team/app", Some("5.0"), &digest);
    sb.send(Q, &body, Some("good"), &aeg_headers(schema)).await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/team/app", "5.0").await.as_deref(),
        Some(digest.as_str())
    );
    sb.wait_until(LONG, "the good message completed", |sb| sb.counts(Q).completed == 1)
        .await;
    assert_eq!(daemon.readyz().await, 200);
    assert_eq!(sb.completed(Q)[0].message_id, "good");
    let (status, _) = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success());
}

#[tokio::test]
async fn event_grid_poison_is_dead_lettered_after_max_deliveries_and_the_daemon_keeps_going() {
    poison_is_dead_lettered_after_max_deliveries_and_the_daemon_keeps_going(Schema::EventGrid).await;
}

#[tokio::test]
async fn cloudevents_poison_is_dead_lettered_after_max_deliveries_and_the_daemon_keeps_going() {
    poison_is_dead_lettered_after_max_deliveries_and_the_daemon_keeps_going(Schema::CloudEvents).await;
}

#[tokio::test]
async fn reject_complete_drops_a_permanent_failure_at_once_and_counts_it() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, .. } = Registries::start().await;
    let (sb, key) = broker(Duration::from_secs(60), 3).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        &source(&sb, &dir, &key, "reject = \"complete\""),
        &src.host(),
        &dst.host(),
    );
    let daemon = Daemon::start(&cfg).await;
    sb.send(Q, b"{\"broken\": true", Some("bad"), &[]).await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "rejected")], LONG, |v| v == 1.0)
        .await;
    sb.wait_until(LONG, "the message completed", |sb| sb.counts(Q).completed == 1)
        .await;
    let st = sb.stats("bad");
    assert_eq!((st.deliveries, st.abandons, st.dead_lettered), (1, 0, 0), "{st:?}");
}

#[tokio::test]
async fn lost_lock_is_counted_and_the_message_is_processed_again() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let proxy = FaultProxy::start(&src.url()).await;
    let (sb, key) = broker(Duration::from_secs(2), 10).await;
    let dir = tempfile::tempdir().unwrap();
    let img = image::push_simple(&s, "team/lost", "1", 50_000, 6).await;
    proxy.add_rule(
        Rule::new(Action::Stall {
            delay: Duration::from_secs(6),
        })
        .method(Method::GET)
        .path_contains("/blobs/")
        .times(1),
    );
    let daemon = Daemon::start(&config(&source(&sb, &dir, &key, ""), &proxy.host(), &dst.host())).await;
    let body = pushed(
        Schema::EventGrid,
        &proxy.host(),
        "team/lost",
        Some("1"),
        &img.digest.to_string(),
    );
    sb.send(Q, &body, Some("m-lost"), &[]).await;
    daemon
        .wait_metric("regrelay_copies_in_flight", &[], LONG, |v| v == 1.0)
        .await;
    // The broker takes the lock away (as after a long GC pause or a network partition).
    assert!(sb.expire_lock("m-lost"));
    daemon.wait_metric(LOCK_LOST, &[], LONG, |v| v >= 1.0).await;
    // The message comes back, the second delivery finishes the work and completes it.
    sb.wait_until(LONG, "the message completed", |sb| sb.counts(Q).completed == 1)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/team/lost", "1").await.as_deref(),
        Some(img.digest.to_string().as_str())
    );
    let st = sb.stats("m-lost");
    assert_eq!((st.deliveries, st.completions), (2, 1), "{st:?}");
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 2.0)
        .await;
    assert_eq!(daemon.metric(LOCK_LOST, &[]).await, 1.0, "counted once per delivery");
    assert!(daemon.log().contains("lock lost"), "logged");
    assert_eq!(daemon.readyz().await, 200);
}

#[tokio::test]
async fn refused_credentials_make_the_daemon_unready_until_the_key_is_valid() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, .. } = Registries::start().await;
    let (sb, _) = broker(Duration::from_secs(60), 10).await;
    let dir = tempfile::tempdir().unwrap();
    let img = image::push_simple(&s, "team/app", "7.0", 20_000, 7).await;
    let wrong = "definitely-wrong-s3cr3t";
    let daemon = Daemon::start(&config(&source(&sb, &dir, wrong, ""), &src.host(), &dst.host())).await;
    let deadline = tokio::time::Instant::now() + LONG;
    while !(daemon.readyz().await == 503 && sb.requests().iter().any(|r| r.status == 401)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never unready; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        daemon.log().contains("refused our credentials"),
        "log:\n{}",
        daemon.log()
    );
    // The operator rotates the rule's key to the one the daemon has: it recovers by itself.
    sb.add_sas_rule(RULE, wrong, &[Right::Listen]);
    let body = pushed(
        Schema::EventGrid,
        &src.host(),
        "team/app",
        Some("7.0"),
        &img.digest.to_string(),
    );
    sb.send(Q, &body, Some("after"), &[]).await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    let log = daemon.log();
    assert!(
        !log.contains(wrong) && !log.contains("SharedAccessSignature"),
        "a secret was logged"
    );
}

#[tokio::test]
async fn topic_subscription_with_a_connection_string_file() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let sb = ServiceBusServer::start().await;
    sb.create_topic("acr");
    sb.create_subscription("acr", "regrelay", EntityOptions::default());
    sb.create_subscription("acr", "audit", EntityOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let cs = dir.path().join("connection-string");
    std::fs::write(
        &cs,
        support::ServiceBusServer::connection_string(&sb, support::ROOT_RULE),
    )
    .unwrap();
    let source = format!(
        "[source]\nkind = \"servicebus\"\nnamespace = \"{NAMESPACE}\"\nendpoint = \"{}\"\ntopic = \"acr\"\nsubscription = \"regrelay\"\nwait_secs = 2\nauth = {{ kind = \"sas\", connection_string_file = \"{}\" }}",
        sb.url(),
        cs.display()
    );
    let img = image::push_simple(&s, "team/app", "8.0", 20_000, 8).await;
    let daemon = Daemon::start(&config(&source, &src.host(), &dst.host())).await;
    let body = pushed(
        Schema::CloudEvents,
        &src.host(),
        "team/app",
        Some("8.0"),
        &img.digest.to_string(),
    );
    assert_eq!(
        sb.send("acr", &body, Some("t-1"), &aeg_headers(Schema::CloudEvents))
            .await,
        201
    );
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/team/app", "8.0").await.as_deref(),
        Some(img.digest.to_string().as_str())
    );
    sb.wait_until(LONG, "completed on the subscription", |sb| {
        sb.counts("acr/subscriptions/regrelay").completed == 1
    })
    .await;
    assert_eq!(
        sb.counts("acr/subscriptions/audit").active,
        1,
        "the other subscription keeps its copy"
    );
}

#[tokio::test]
async fn entra_bearer_tokens_from_a_token_file() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let (sb, _) = broker(Duration::from_secs(60), 10).await;
    let token = format!("entra-access-token-{:016x}", fastrand::u64(..));
    sb.accept_bearer(&token);
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("entra-token");
    std::fs::write(&token_file, &token).unwrap();
    let source = format!(
        "[source]\nkind = \"servicebus\"\nnamespace = \"{NAMESPACE}\"\nendpoint = \"{}\"\nqueue = \"{Q}\"\nwait_secs = 2\nauth = {{ kind = \"entra\", credential = \"static_token_file\", token_file = \"{}\" }}",
        sb.url(),
        token_file.display()
    );
    let img = image::push_simple(&s, "team/app", "9.0", 20_000, 9).await;
    let daemon = Daemon::start(&config(&source, &src.host(), &dst.host())).await;
    let body = pushed(
        Schema::EventGrid,
        &src.host(),
        "team/app",
        Some("9.0"),
        &img.digest.to_string(),
    );
    sb.send(Q, &body, Some("e-1"), &aeg_headers(Schema::EventGrid)).await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/team/app", "9.0").await.as_deref(),
        Some(img.digest.to_string().as_str())
    );
    sb.wait_until(LONG, "the message completed", |sb| sb.counts(Q).completed == 1)
        .await;
    assert!(
        sb.requests().iter().all(|r| r.status != 401),
        "every request carried the bearer token"
    );
    assert!(!daemon.log().contains(&token), "the token was logged");
}

/// A target answering 503 to everything for 30 s while 20 messages are in flight, with the
/// queue's MaxDeliveryCount at 10: each failed message is held (its lock renewed) for a
/// retry delay that doubles per delivery (2, 4, 8, 8, ... s) before it is abandoned, so
/// nothing reaches the dead-letter queue, every message is completed once the target is
/// back, and each is delivered only a handful of times (an immediate abandon would burn
/// through all ten deliveries in about two seconds).
#[tokio::test]
async fn a_30_second_outage_dead_letters_nothing() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let proxy = FaultProxy::start(&dst.url()).await;
    // A 6 s lock: holding a message through an 8 s delay needs renewals.
    let (sb, key) = broker(Duration::from_secs(6), 10).await;
    let dir = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for i in 0..20u64 {
        let tag = format!("v{i}");
        digests.push((
            tag.clone(),
            image::push_simple(&s, "team/app", &tag, 4_000, 100 + i).await.digest,
        ));
    }
    let cfg = support::outage_pipeline(&config(&source(&sb, &dir, &key, ""), &src.host(), &proxy.host()));
    proxy.add_rule(Rule::status(503).times(usize::MAX));
    let daemon = Daemon::start(&cfg).await;
    for (tag, digest) in &digests {
        let body = pushed(
            Schema::EventGrid,
            &src.host(),
            "team/app",
            Some(tag),
            &digest.to_string(),
        );
        sb.send(
            Q,
            &body,
            Some(&format!("outage-{tag}")),
            &aeg_headers(Schema::EventGrid),
        )
        .await;
    }
    // Everything fails and waits while the target is down.
    daemon
        .wait_metric("regrelay_messages_waiting", &[], LONG, |v| v >= 10.0)
        .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(sb.counts(Q).dead_lettered, 0, "dead-lettered during the outage");
    assert_eq!(daemon.metric(SETTLED, &[("outcome", "acked")]).await, 0.0);
    proxy.clear_rules();

    sb.wait_until(Duration::from_secs(90), "all 20 messages completed", |sb| {
        sb.counts(Q).completed == 20
    })
    .await;
    assert_eq!(sb.counts(Q).dead_lettered, 0);
    for (tag, digest) in &digests {
        assert_eq!(
            tag_digest(&d, "mirror/team/app", tag).await.as_deref(),
            Some(digest.to_string().as_str()),
            "{tag} replicated"
        );
        let st = sb.stats(&format!("outage-{tag}"));
        // 30 s of outage at 2 + 4 + 8 + 8 + ... s: about five deliveries, never ten.
        assert!(
            (2..=7).contains(&st.deliveries) && st.completions == 1 && st.dead_lettered == 0,
            "{tag}: {st:?}"
        );
        assert!(
            st.renewals >= 1,
            "{tag}: the lock was kept while the message waited: {st:?}"
        );
    }
    assert_eq!(daemon.metric("regrelay_messages_waiting", &[]).await, 0.0);
}
