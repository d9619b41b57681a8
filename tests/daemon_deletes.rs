//! End-to-end tests of delete propagation in `regrelay run` (tier 4): the real binary,
//! real `docker-registry` processes and the real Pub/Sub emulator. A delete at the source
//! reaches the target only when the source no longer has what was deleted and the target
//! still points at what the event named; a registry that cannot delete tags gets the
//! guarded manifest fallback (issue 10).

mod support;

use regrelay::oci::Locator;
use regrelay::registry::Registry as _;
use support::image;
use support::{Daemon, LONG, PubSubEmulator, Registries, SETTLED, ar_insert, mirror_config, tag_digest};

const TOPIC: &str = "gcr";
const SUB: &str = "regrelay";

/// The daemon config: `source` and the rule mirroring everything of `src` to
/// `dst/mirror/{repository}`, with a 5 s read timeout.
fn config(source: &str, src: &str, dst: &str) -> String {
    mirror_config(source, src, dst, 5)
}

/// Delete propagation (`actions = ["push", "delete"]`): a DELETE whose digest the source
/// still holds is stale and deletes nothing; once the source has really deleted it, the
/// target manifest goes too; with `delete_dry_run` it is only logged.
#[tokio::test]
async fn deletes_propagate_only_when_the_source_no_longer_has_the_digest() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let kept = image::push_simple(&s, "team/app", "1", 30_000, 12).await;
    let gone = image::push_simple(&s, "team/old", "1", 30_000, 13).await;
    let dry = image::push_simple(&s, "team/dry", "1", 30_000, 14).await;
    let cfg = config(&emu.source_section(SUB), &src.host(), &dst.host());
    let daemon = Daemon::start(&cfg).await;
    for (repo, img) in [("team/app", &kept), ("team/old", &gone), ("team/dry", &dry)] {
        emu.publish(TOPIC, &ar_insert(&src.host(), repo, Some("1"), &img.digest.to_string()))
            .await;
    }
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 3.0)
        .await;
    let delete = |repo: &str, digest: &str| {
        serde_json::to_vec(
            &serde_json::json!({"action": "DELETE", "digest": format!("{}/{repo}@{digest}", src.host())}),
        )
        .unwrap()
    };
    let at_target = |repo: &'static str, digest: regrelay::oci::Digest| {
        let d = &d;
        async move { d.head_manifest(repo, &Locator::Digest(digest)).await.unwrap().is_some() }
    };

    // Stale: the source still has team/app's digest.
    emu.publish(TOPIC, &delete("team/app", &kept.digest.to_string())).await;
    daemon
        .wait_metric("regrelay_deletes_total", &[("outcome", "skipped")], LONG, |v| v == 1.0)
        .await;
    assert!(
        at_target("mirror/team/app", kept.digest.clone()).await,
        "a stale delete removed the copy"
    );

    // Real: deleted at the source first.
    s.delete_manifest("team/old", &Locator::Digest(gone.digest.clone()))
        .await
        .unwrap();
    emu.publish(TOPIC, &delete("team/old", &gone.digest.to_string())).await;
    daemon
        .wait_metric("regrelay_deletes_total", &[("outcome", "deleted")], LONG, |v| v == 1.0)
        .await;
    assert!(
        !at_target("mirror/team/old", gone.digest.clone()).await,
        "the target manifest is still there"
    );
    drop(daemon);

    // Dry run: logged, counted, nothing deleted.
    s.delete_manifest("team/dry", &Locator::Digest(dry.digest.clone()))
        .await
        .unwrap();
    let daemon = Daemon::start(&cfg.replace("[pipeline]\n", "[pipeline]\ndelete_dry_run = true\n")).await;
    emu.publish(TOPIC, &delete("team/dry", &dry.digest.to_string())).await;
    daemon
        .wait_metric("regrelay_deletes_total", &[("outcome", "dry_run")], LONG, |v| v == 1.0)
        .await;
    assert!(
        at_target("mirror/team/dry", dry.digest.clone()).await,
        "dry run deleted"
    );
    assert!(daemon.log().contains("would delete"), "log:\n{}", daemon.log());
}

/// Tag deletes at a target that cannot delete a tag (distribution 2.8 answers 400
/// DIGEST_INVALID; issue 10): the manifest is deleted by digest when that tag was its
/// only one, kept and counted `unsupported` when another tag still points at it, and
/// kept with `tag_delete_fallback = "off"`. None of these messages is rejected.
#[tokio::test]
async fn tag_deletes_fall_back_to_the_manifest_only_when_no_other_tag_uses_it_10() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let solo = image::push_simple(&s, "team/solo", "1", 30_000, 15).await;
    let pair = image::push_simple(&s, "team/pair", "1", 30_000, 16).await;
    s.put_manifest(
        "team/pair",
        &Locator::Tag("2".into()),
        &pair.media_type,
        pair.bytes.clone(),
    )
    .await
    .unwrap();
    let off = image::push_simple(&s, "team/off", "1", 30_000, 17).await;
    let cfg = config(&emu.source_section(SUB), &src.host(), &dst.host());
    let daemon = Daemon::start(&cfg).await;
    for (repo, tag, img) in [
        ("team/solo", "1", &solo),
        ("team/pair", "1", &pair),
        ("team/pair", "2", &pair),
        ("team/off", "1", &off),
    ] {
        emu.publish(TOPIC, &ar_insert(&src.host(), repo, Some(tag), &img.digest.to_string()))
            .await;
    }
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 4.0)
        .await;
    // The tags go at the source (distribution deletes them with their manifest).
    for (repo, img) in [("team/solo", &solo), ("team/pair", &pair), ("team/off", &off)] {
        s.delete_manifest(repo, &Locator::Digest(img.digest.clone()))
            .await
            .unwrap();
    }
    let delete_tag = |repo: &str, tag: &str| {
        serde_json::to_vec(&serde_json::json!({"action": "DELETE", "tag": format!("{}/{repo}:{tag}", src.host())}))
            .unwrap()
    };
    let at_target = |repo: &'static str, digest: regrelay::oci::Digest| {
        let d = &d;
        async move { d.head_manifest(repo, &Locator::Digest(digest)).await.unwrap().is_some() }
    };
    const DELETES: &str = "regrelay_deletes_total";

    // The only tag of its manifest: the manifest is deleted by digest.
    emu.publish(TOPIC, &delete_tag("team/solo", "1")).await;
    daemon
        .wait_metric(DELETES, &[("outcome", "deleted")], LONG, |v| v == 1.0)
        .await;
    assert!(!at_target("mirror/team/solo", solo.digest.clone()).await);
    assert!(
        daemon.log().contains("this removes the manifest, not only the tag"),
        "log:\n{}",
        daemon.log()
    );

    // Another tag still points at it: kept, counted unsupported.
    emu.publish(TOPIC, &delete_tag("team/pair", "1")).await;
    daemon
        .wait_metric(DELETES, &[("outcome", "unsupported")], LONG, |v| v == 1.0)
        .await;
    assert!(at_target("mirror/team/pair", pair.digest.clone()).await);
    assert_eq!(
        tag_digest(&d, "mirror/team/pair", "2").await.as_deref(),
        Some(pair.digest.to_string().as_str())
    );
    assert!(
        daemon.log().contains("would also remove tag 2"),
        "log:\n{}",
        daemon.log()
    );
    assert_eq!(daemon.metric(SETTLED, &[("outcome", "rejected")]).await, 0.0);
    drop(daemon);

    // tag_delete_fallback = "off": kept, counted unsupported.
    let daemon = Daemon::start(&cfg.replace("[pipeline]\n", "[pipeline]\ntag_delete_fallback = \"off\"\n")).await;
    emu.publish(TOPIC, &delete_tag("team/off", "1")).await;
    daemon
        .wait_metric(DELETES, &[("outcome", "unsupported")], LONG, |v| v == 1.0)
        .await;
    assert!(at_target("mirror/team/off", off.digest.clone()).await);
    assert_eq!(daemon.metric(DELETES, &[("outcome", "deleted")]).await, 0.0);
    assert_eq!(daemon.metric(SETTLED, &[("outcome", "rejected")]).await, 0.0);
    assert!(
        daemon.log().contains(r#"tag_delete_fallback = \"off\""#),
        "log:\n{}",
        daemon.log()
    );
}
