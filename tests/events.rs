//! End-to-end tests of the event sources beyond Artifact Registry and ACR (issue 10): the
//! real `regrelay run` binary, real `docker-registry` processes and the real Pub/Sub
//! emulator, fed payloads in Artifactory's and distribution's documented shapes (as a
//! bridge would publish them).

mod support;

use std::time::Duration;

use regrelay::oci::Locator;
use regrelay::registry::Registry as _;
use support::image;
use support::{
    Action, COPIES, Daemon, FaultProxy, LONG, Method, PubSubEmulator, Registries, Rule, SETTLED, mirror_config,
    tag_digest,
};

const TOPIC: &str = "registry-events";
const SUB: &str = "regrelay";

/// The mirror config (everything of `src` to `dst/mirror/{repository}`, push and
/// delete) over a Pub/Sub source, with `origin` as the `[source.origin]` body if given.
fn config(emu: &PubSubEmulator, origin: Option<&str>, src: &str, dst: &str, read_timeout_secs: u64) -> String {
    let mut source = format!(
        "[source]\nkind = \"pubsub\"\nsubscription = \"{}\"\nendpoint = \"{}\"\nlease_extension_secs = 10",
        emu.subscription_path(SUB),
        emu.endpoint()
    );
    if let Some(o) = origin {
        source.push_str(&format!("\n\n[source.origin]\n{o}"));
    }
    mirror_config(&source, src, dst, read_timeout_secs)
}

/// An Artifactory Docker webhook body (JFrog's documented shape) for `repo_key`,
/// `image_name:tag` whose stored manifest has checksum `digest`.
fn artifactory(event_type: &str, repo_key: &str, image_name: &str, tag: &str, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    serde_json::to_vec(&serde_json::json!({
        "domain": "docker",
        "event_type": event_type,
        "data": {
            "repo_key": repo_key,
            "event_type": event_type,
            "path": format!("{image_name}/{tag}/manifest.json"),
            "name": "manifest.json",
            "sha256": hex,
            "size": 528,
            "image_name": image_name,
            "tag": tag,
            "platforms": [{"architecture": "amd64", "os": "linux"}]
        },
        "subscription_key": "regrelay",
        "jpd_origin": "https://acme.jfrog.io",
        "source": "jfrog/ci"
    }))
    .unwrap()
}

#[tokio::test]
async fn artifactory_push_is_replicated_and_verified_through_the_repository_mapping() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    // Artifactory's repository-path access method: HOST/REPO_KEY/IMAGE.
    let img = image::push_simple(&s, "docker-local/team/app", "1.0", 150_000, 11).await;
    let origin = format!(
        "registry = \"{}\"\nrepository = \"{{repo_key}}/{{image_name}}\"",
        src.host()
    );
    let daemon = Daemon::start(&config(&emu, Some(&origin), &src.host(), &dst.host(), 5)).await;

    let digest = img.digest.to_string();
    emu.publish(
        TOPIC,
        &artifactory("pushed", "docker-local", "team/app", "1.0", &digest),
    )
    .await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/docker-local/team/app", "1.0").await.as_deref(),
        Some(digest.as_str())
    );
    assert_eq!(daemon.metric(COPIES, &[("outcome", "replicated")]).await, 1.0);
    assert!(emu.peek(SUB, 10).await.is_empty(), "the acked message came back");
}

#[tokio::test]
async fn artifactory_event_without_an_origin_is_rejected_naming_the_setting() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let img = image::push_simple(&s, "docker-local/team/app", "1.0", 1000, 12).await;
    let daemon = Daemon::start(&config(&emu, None, &src.host(), &dst.host(), 5)).await;

    let digest = img.digest.to_string();
    emu.publish(
        TOPIC,
        &artifactory("pushed", "docker-local", "team/app", "1.0", &digest),
    )
    .await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "rejected")], LONG, |v| v == 1.0)
        .await;
    assert!(daemon.log().contains("[source.origin]"), "log:\n{}", daemon.log());
    assert_eq!(tag_digest(&d, "mirror/docker-local/team/app", "1.0").await, None);
    assert_eq!(daemon.metric(COPIES, &[]).await, 0.0, "nothing was copied");
}

#[tokio::test]
async fn artifactory_delete_is_propagated_to_the_target() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let img = image::push_simple(&s, "docker-local/team/app", "old", 1000, 13).await;
    let origin = format!(
        "registry = \"{}\"\nrepository = \"{{repo_key}}/{{image_name}}\"",
        src.host()
    );
    let daemon = Daemon::start(&config(&emu, Some(&origin), &src.host(), &dst.host(), 5)).await;
    let digest = img.digest.to_string();
    emu.publish(
        TOPIC,
        &artifactory("pushed", "docker-local", "team/app", "old", &digest),
    )
    .await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/docker-local/team/app", "old").await.as_deref(),
        Some(digest.as_str())
    );

    // The tag is deleted at the source (Artifactory removes the tag's folder and its
    // manifest; distribution deletes by digest), then the webhook arrives.
    s.delete_manifest("docker-local/team/app", &Locator::Digest(img.digest.clone()))
        .await
        .expect("delete at the source");
    emu.publish(
        TOPIC,
        &artifactory("deleted", "docker-local", "team/app", "old", &digest),
    )
    .await;
    daemon
        .wait_metric("regrelay_deletes_total", &[("outcome", "deleted")], LONG, |v| v == 1.0)
        .await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 2.0)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/docker-local/team/app", "old").await,
        None,
        "the tag is still at the target"
    );
}

/// A distribution notification envelope from `host`: a manifest push for each of
/// `images` (repository, tag, digest), with a blob push between them.
fn distribution_envelope(host: &str, images: &[(&str, &str, &str)]) -> Vec<u8> {
    let request = serde_json::json!({"id": "r1", "addr": "192.0.2.10:5123", "host": host, "method": "PUT", "useragent": "containerd/1.7"});
    let mut events = Vec::new();
    for (i, (repo, tag, digest)) in images.iter().enumerate() {
        events.push(serde_json::json!({
            "id": format!("blob-{i}"), "timestamp": "2026-05-04T10:15:29Z", "action": "push",
            "target": {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 100, "length": 100,
                       "digest": "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
                       "repository": repo, "url": format!("http://{host}/v2/{repo}/blobs/sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef")},
            "request": request.clone(), "actor": {}, "source": {"addr": "registry:5000", "instanceID": "i"}
        }));
        events.push(serde_json::json!({
            "id": format!("manifest-{i}"), "timestamp": "2026-05-04T10:15:30Z", "action": "push",
            "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 500, "length": 500,
                       "digest": digest, "repository": repo, "tag": tag,
                       "url": format!("http://{host}/v2/{repo}/manifests/{digest}")},
            "request": request.clone(), "actor": {}, "source": {"addr": "registry:5000", "instanceID": "i"}
        }));
    }
    serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap()
}

#[tokio::test]
async fn distribution_envelope_with_two_images_is_acked_only_after_both_are_verified() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let proxy = FaultProxy::start(&src.url()).await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let a = image::push_simple(&s, "team/a", "1.0", 50_000, 21).await;
    let b = image::push_simple(&s, "team/b", "2.0", 50_000, 22).await;
    // The copy of team/b is held up: its manifest GET at the source waits 4 s. The copy of
    // team/a finishes meanwhile, and the message must still wait for team/b.
    proxy.add_rule(
        Rule::new(Action::Stall {
            delay: Duration::from_secs(4),
        })
        .method(Method::GET)
        .path_contains("/v2/team/b/manifests/")
        .times(1),
    );
    let daemon = Daemon::start(&config(&emu, None, &proxy.host(), &dst.host(), 10)).await;

    let (da, db) = (a.digest.to_string(), b.digest.to_string());
    emu.publish(
        TOPIC,
        &distribution_envelope(&proxy.host(), &[("team/a", "1.0", &da), ("team/b", "2.0", &db)]),
    )
    .await;
    // team/a arrives first; the message is not settled while team/b is still copying.
    let deadline = tokio::time::Instant::now() + LONG;
    while tag_digest(&d, "mirror/team/a", "1.0").await.as_deref() != Some(da.as_str()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "team/a never arrived; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        tag_digest(&d, "mirror/team/b", "2.0").await,
        None,
        "team/b was not held up"
    );
    assert_eq!(
        daemon.metric(SETTLED, &[]).await,
        0.0,
        "the message was settled before team/b was verified"
    );
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/team/b", "2.0").await.as_deref(),
        Some(db.as_str())
    );
    assert_eq!(daemon.metric(COPIES, &[("outcome", "replicated")]).await, 2.0);
    assert_eq!(daemon.metric(SETTLED, &[]).await, 1.0, "one message, settled once");
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| !r.path_and_query.contains("/blobs/sha256:5f70bf18")),
        "an ignored blob event was acted on"
    );
    assert!(emu.peek(SUB, 10).await.is_empty(), "the acked message came back");
}
