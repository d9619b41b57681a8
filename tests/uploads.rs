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
use regrelay::oci::Reference;
use regrelay::replicate::{Options, Task};
use support::image::{self, cfg};
use support::{Action, FaultProxy, Method, Rule, TestRegistry};

fn task(src: &str, dst: &str) -> Task {
    Task::from_refs(src.parse().unwrap(), &dst.parse::<Reference>().unwrap())
}

fn anon(host: &str) -> regrelay::config::RegistryConfig {
    cfg(host, Auth::Anonymous)
}

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

    // The cancel is part of the failed attempt: no session is left once the copy returns.
    assert_eq!(dst.upload_sessions(), Vec::<String>::new(), "sessions left on the target");
    let deletes = dst.access_log("DELETE", "/v2/app/blobs/uploads/");
    assert!(!deletes.is_empty(), "the target's access log shows no upload DELETE");
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
    image::push_simple(&s, "app", "v1", 500_000, 19).await;
    let proxy = FaultProxy::start(&dst.url()).await;
    // Every monolithic blob PUT is cut after 100 kB: the target holds a partial upload
    // and regrelay sees its connection closed without an answer.
    proxy.add_rule(
        Rule::new(Action::ResetRequestAfter { bytes: 100_000 })
            .method(Method::PUT)
            .path_contains("/blobs/uploads/"),
    );
    let engine = image::engine(vec![anon(&src.host()), anon(&proxy.host())], opts());
    let err = engine
        .replicate(&task(
            &format!("{}/app:v1", src.host()),
            &format!("{}/app", proxy.host()),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("upload blob"), "{err}");
    let seen = proxy.requests();
    assert!(
        seen.iter().any(|r| r.fault.as_deref().is_some_and(|f| f.starts_with("reset_request_after"))),
        "the reset fired: {seen:#?}"
    );

    eventually("the target holds no upload session", || dst.upload_sessions().is_empty()).await;
    let deletes: Vec<_> = seen
        .iter()
        .filter(|r| r.method == Method::DELETE && r.path_and_query.starts_with("/v2/app/blobs/uploads/"))
        .collect();
    let resets = seen.iter().filter(|r| r.method == Method::PUT).count();
    assert_eq!(deletes.len(), resets, "one DELETE per interrupted upload: {seen:#?}");
    assert!(deletes.iter().all(|r| r.status == Some(204)), "{deletes:#?}");
}

#[tokio::test]
async fn dropped_copy_cancels_its_upload_session_issue_9() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let img = image::push_simple(&s, "app", "v1", 500_000, 29).await;
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
        dst.upload_sessions().iter().any(|s| {
            let uuid = s.rsplit('/').next().unwrap();
            let path = dst
                .storage_dir()
                .join("docker/registry/v2/repositories/app/_uploads")
                .join(uuid)
                .join("data");
            std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
        })
    };
    eventually("the upload is under way", || data(&dst)).await;
    assert!(!copy.is_finished());
    // What shutdown does to a copy past the grace period: its future is dropped.
    copy.abort();
    assert!(copy.await.unwrap_err().is_cancelled());

    eventually("the dropped copy's session is cancelled", || {
        dst.upload_sessions().is_empty()
    })
    .await;
    let deletes = dst.access_log("DELETE", "/v2/app/blobs/uploads/");
    assert_eq!(deletes.len(), 1, "one DELETE for the one open session: {deletes:#?}");
    assert!(deletes[0].contains("\" 204 "), "{}", deletes[0]);
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
