//! Upload sessions are never left behind on the target (issue 9, defect 3), against real
//! `docker-registry` processes: whatever stops a blob upload (a digest mismatch, a reset
//! mid-upload, the copy being dropped), the session regrelay opened is cancelled with a
//! `DELETE` on its location, and a completed upload gets no `DELETE`.
//!
//! Sessions are counted where distribution keeps them, in the target's storage
//! (`<root>/docker/registry/v2/repositories/<name>/_uploads/<uuid>/`); upload purging is
//! off in the test registries, so nothing else removes them.

mod support;

use std::time::Duration;

use regrelay::config::Auth;
use regrelay::replicate::Options;
use support::image::{self, anon, task};
use support::{Action, FaultProxy, Method, Rule, TestRegistry};

/// Two quick attempts per blob, no referrers.
fn opts() -> Options {
    Options {
        referrers: false,
        blob_attempts: 2,
        blob_retry_delay: Duration::from_millis(10),
        ..Options::default()
    }
}

/// The digest of the first layer of a pushed image manifest.
fn first_layer(img: &image::Pushed) -> String {
    serde_json::from_slice::<serde_json::Value>(&img.bytes).unwrap()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Copies the image's config blob to the target beforehand, so that its layer is the
/// only upload of the copy.
async fn seed_config(src: &TestRegistry, dst: &TestRegistry, img: &image::Pushed) {
    let s = image::client(&src.host(), Auth::Anonymous);
    let v: serde_json::Value = serde_json::from_slice(&img.bytes).unwrap();
    let config: regrelay::oci::Digest = v["config"]["digest"].as_str().unwrap().parse().unwrap();
    let bytes = image::read_blob(&s, "app", &config).await;
    image::push_blob(&image::client(&dst.host(), Auth::Anonymous), "app", "config", bytes).await;
}

/// Polls until `cond` holds, for at most 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn digest_mismatch_leaves_no_upload_session_on_the_target_issue_9() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    image::push_simple(&s, "app", "v1", 300_000, 9).await;
    let proxy = FaultProxy::start(&src.url()).await;
    proxy.add_rule(
        Rule::new(Action::CorruptBody)
            .method(Method::GET)
            .path_contains("/blobs/sha256:"),
    );
    let engine = image::engine(vec![anon(&proxy.host()), anon(&dst.host())], opts());
    let err = engine
        .replicate(&task(
            &format!("{}/app:v1", proxy.host()),
            &format!("{}/app", dst.host()),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");

    // The failed attempt cancels its session before returning; a sibling transfer dropped
    // with the failed copy cancels its own in the background.
    eventually("the target holds no upload session", || {
        dst.upload_sessions().is_empty()
    })
    .await;
    // distribution writes its access-log line after the handler has returned.
    eventually("the access log shows an upload DELETE", || {
        !dst.access_log("DELETE", "/v2/app/blobs/uploads/").is_empty()
    })
    .await;
    let deletes = dst.access_log("DELETE", "/v2/app/blobs/uploads/");
    assert!(
        deletes.iter().all(|l| l.contains("\" 204 ")),
        "each upload DELETE was answered 204: {deletes:#?}"
    );
}

#[tokio::test]
async fn reset_mid_upload_leaves_no_upload_session_on_the_target_issue_9() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let img = image::push_simple(&s, "app", "v1", 500_000, 19).await;
    // The target already has the config blob, so the layer is the only upload.
    seed_config(&src, &dst, &img).await;

    let proxy = FaultProxy::start(&dst.url()).await;
    // The first chunk arrives; every later chunk is cut off before it reaches the
    // registry (the connection to the target resets mid-upload).
    proxy.add_rule(
        Rule::new(Action::Stall { delay: Duration::ZERO })
            .method(Method::PATCH)
            .times(1),
    );
    proxy.add_rule(Rule::new(Action::ResetRequestAfter { bytes: 0 }).method(Method::PATCH));
    let mut target = anon(&proxy.host());
    target.chunk_size = Some(256 << 10);
    target.retry.attempts = 2;
    let engine = image::engine(vec![anon(&src.host()), target], opts());
    let err = engine
        .replicate(&task(
            &format!("{}/app:v1", src.host()),
            &format!("{}/app", proxy.host()),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("upload blob chunk"), "{err}");
    let seen = proxy.requests();
    assert!(
        seen.iter()
            .any(|r| r.fault.as_deref().is_some_and(|f| f.starts_with("reset_request_after"))),
        "the reset fired: {seen:#?}"
    );

    eventually("the target holds no upload session", || {
        dst.upload_sessions().is_empty()
    })
    .await;
    let sessions = seen
        .iter()
        .filter(|r| r.method == Method::POST && r.path_and_query.starts_with("/v2/app/blobs/uploads/"))
        .count();
    let deletes: Vec<_> = seen
        .iter()
        .filter(|r| r.method == Method::DELETE && r.path_and_query.starts_with("/v2/app/blobs/uploads/"))
        .collect();
    assert_eq!(deletes.len(), sessions, "one DELETE per session opened: {seen:#?}");
    assert!(deletes.iter().all(|r| r.status == Some(204)), "{deletes:#?}");
}

#[tokio::test]
async fn dropped_copy_cancels_its_upload_session_issue_9() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    // Larger than the 1 MiB small-blob limit, so the layer streams through a PATCH.
    let img = image::push_simple(&s, "app", "v1", 2_000_000, 29).await;
    // Only the layer is uploaded. (A copy dropped while a closing PUT is in flight can
    // collide with the registry's own commit; see docs/design.md.)
    seed_config(&src, &dst, &img).await;
    let proxy = FaultProxy::start(&src.url()).await;
    // The source stops sending the layer after 100 kB, for longer than the test runs.
    proxy.add_rule(
        Rule::new(Action::StallAfter {
            bytes: 100_000,
            delay: Duration::from_secs(60),
        })
        .method(Method::GET)
        .path_contains(first_layer(&img)),
    );
    let engine = image::engine(vec![anon(&proxy.host()), anon(&dst.host())], opts());
    let t = task(&format!("{}/app:v1", proxy.host()), &format!("{}/app", dst.host()));
    let copy = tokio::spawn(async move { engine.replicate(&t).await });

    // Mid-upload: the target holds a session that has received part of the layer.
    let data = |dst: &TestRegistry| {
        dst.upload_sessions().into_iter().find(|s| {
            let uuid = s.rsplit('/').next().unwrap();
            let path = dst
                .storage_dir()
                .join("docker/registry/v2/repositories/app/_uploads")
                .join(uuid)
                .join("data");
            std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
        })
    };
    eventually("the upload is under way", || data(&dst).is_some()).await;
    let stalled = data(&dst).unwrap();
    assert!(!copy.is_finished());
    // What shutdown does to a copy past the grace period: its future is dropped.
    copy.abort();
    assert!(copy.await.unwrap_err().is_cancelled());

    eventually("the dropped copy's session is cancelled", || {
        dst.upload_sessions().is_empty()
    })
    .await;
    // The stalled layer's session is cancelled, with the state the registry answered the
    // cleanly ended body with.
    let uuid = stalled.rsplit('/').next().unwrap();
    // distribution writes its access-log line after the handler has returned.
    eventually("the access log shows the DELETE", || {
        dst.access_log("DELETE", uuid).iter().any(|l| l.contains("\" 204 "))
    })
    .await;
    let deletes = dst.access_log("DELETE", "/v2/app/blobs/uploads/");
    assert!(
        deletes.iter().any(|l| l.contains(uuid) && l.contains("\" 204 ")),
        "no accepted DELETE for {stalled}: {deletes:#?}"
    );
    assert_eq!(deletes.len(), 1, "one DELETE, for the one session: {deletes:#?}");
}

#[tokio::test]
async fn completed_uploads_get_no_delete_issue_9() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let img = image::push_simple(&s, "app", "v1", 200_000, 39).await;
    // Chunked on the target, so both upload paths are covered.
    let mut chunked = anon(&dst.host());
    chunked.chunk_size = Some(64 << 10);
    for (n, target) in [anon(&dst.host()), chunked].into_iter().enumerate() {
        let engine = image::engine(vec![anon(&src.host()), target], opts());
        let out = engine
            .replicate(&task(
                &format!("{}/app:v1", src.host()),
                &format!("{}/copy{n}", dst.host()),
            ))
            .await
            .unwrap();
        assert_eq!(out.digest(), &img.digest);
        assert_eq!(out.stats().blobs_uploaded, 2);
    }
    // Give a (wrongly) spawned cancel time to show up before checking it did not happen.
    let sessions_before = dst.upload_sessions();
    assert!(sessions_before.is_empty(), "{sessions_before:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        dst.access_log("DELETE", "/blobs/uploads/"),
        Vec::<String>::new(),
        "a committed upload is never cancelled"
    );
}
