//! Copy-engine tests against real `docker-registry` processes (tier 3): digest
//! preservation, indexes, referrers, skip/mount paths, and faults injected by a proxy.

mod support;

use std::time::Duration;

use regrelay::config::{Auth, Secret};
use regrelay::oci::Locator;
use regrelay::registry::{ErrorClass, Registry};
use regrelay::replicate::{Options, Outcome};
use support::image::{self, anon, cfg, task};
use support::{Action, FaultProxy, Method, Rule, TestRegistry, TokenServer};

/// Engine options without referrer copying, for tests about blobs and manifests.
fn no_refs() -> Options {
    Options {
        referrers: false,
        ..Options::default()
    }
}

async fn target_digest(reg: &impl Registry, repo: &str, tag: &str) -> Option<String> {
    match reg.get_manifest(repo, &Locator::Tag(tag.into())).await {
        Ok(m) => Some(m.digest.to_string()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn oci_and_docker_manifests_copy_with_identical_digests() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let oci = image::push_simple(&s, "team/app", "v1", 50_000, 1).await;
    let docker = image::push_image(
        &s,
        "team/old",
        Some("v2"),
        vec![image::random_bytes(2, 20_000)],
        true,
        2,
    )
    .await;
    let engine = image::engine(vec![anon(&src.host()), anon(&dst.host())], Options::default());

    let out = engine
        .replicate(&task(
            &format!("{}/team/app:v1", src.host()),
            &format!("{}/mirror/app", dst.host()),
        ))
        .await
        .unwrap();
    assert_eq!(out.digest(), &oci.digest);
    assert!(matches!(out, Outcome::Replicated { .. }));
    assert_eq!(out.stats().blobs_uploaded, 2, "config + layer");
    assert_eq!(
        out.stats().bytes_copied,
        50_000 + oci_config_len(&s, "team/app", &oci).await
    );

    let out = engine
        .replicate(&task(
            &format!("{}/team/old:v2", src.host()),
            &format!("{}/mirror/old:stable", dst.host()),
        ))
        .await
        .unwrap();
    assert_eq!(out.digest(), &docker.digest);

    let d = image::client(&dst.host(), Auth::Anonymous);
    assert_eq!(
        target_digest(&d, "mirror/app", "v1").await.unwrap(),
        oci.digest.to_string()
    );
    let got = d
        .get_manifest("mirror/old", &Locator::Tag("stable".into()))
        .await
        .unwrap();
    assert_eq!(got.bytes, docker.bytes, "manifest bytes are pushed exactly as received");
    assert_eq!(got.media_type, regrelay::oci::DOCKER_MANIFEST);
}

async fn oci_config_len(reg: &impl Registry, repo: &str, img: &image::Pushed) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&img.bytes).unwrap();
    let d = v["config"]["digest"].as_str().unwrap().parse().unwrap();
    reg.head_blob(repo, &d).await.unwrap().unwrap()
}

#[tokio::test]
async fn two_platform_index_arrives_with_referrers_and_cosign_tags() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let (idx, children) = image::push_two_platform_index(&s, "team/app", "1.0", 10).await;
    let sbom = image::push_referrer(&s, "team/app", &idx, "application/spdx+json", 11).await;
    let sig = image::push_cosign_signature(&s, "team/app", &idx).await;
    let engine = image::engine(vec![anon(&src.host()), anon(&dst.host())], Options::default());

    let out = engine
        .replicate(&task(
            &format!("{}/team/app:1.0", src.host()),
            &format!("{}/team/app", dst.host()),
        ))
        .await
        .unwrap();
    assert_eq!(out.digest(), &idx.digest, "the target index digest equals the source's");
    assert_eq!(
        out.stats().referrers_copied,
        2,
        "the SBOM referrer and the cosign signature"
    );

    let d = image::client(&dst.host(), Auth::Anonymous);
    assert_eq!(
        target_digest(&d, "team/app", "1.0").await.unwrap(),
        idx.digest.to_string()
    );
    for c in &children {
        assert!(
            d.head_manifest("team/app", &Locator::Digest(c.digest.clone()))
                .await
                .unwrap()
                .is_some()
        );
    }
    let fallback = d
        .get_manifest("team/app", &Locator::Tag(idx.digest.fallback_tag()))
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&fallback.bytes).contains(&sbom.digest.to_string()));
    assert!(
        d.head_manifest("team/app", &Locator::Digest(sbom.digest.clone()))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        target_digest(&d, "team/app", &format!("{}.sig", idx.digest.fallback_tag()))
            .await
            .unwrap(),
        sig.digest.to_string()
    );

    // Again: everything is there, nothing is written.
    let again = engine
        .replicate(&task(
            &format!("{}/team/app:1.0", src.host()),
            &format!("{}/team/app", dst.host()),
        ))
        .await
        .unwrap();
    assert!(matches!(again, Outcome::AlreadyPresent { .. }), "{again:?}");
    assert_eq!(again.stats().bytes_copied, 0);
}

#[tokio::test]
async fn no_referrers_option_and_platform_subset() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let (idx, children) = image::push_two_platform_index(&s, "app", "v1", 20).await;
    image::push_cosign_signature(&s, "app", &idx).await;
    let opts = Options {
        referrers: false,
        platforms: vec!["linux/arm64".into()],
        ..Options::default()
    };
    let engine = image::engine(vec![anon(&src.host()), anon(&dst.host())], opts);
    let out = engine
        .replicate(&task(&format!("{}/app:v1", src.host()), &format!("{}/app", dst.host())))
        .await
        .unwrap();
    assert_ne!(out.digest(), &idx.digest, "a platform subset is a new index");
    let d = image::client(&dst.host(), Auth::Anonymous);
    assert!(
        d.head_manifest("app", &Locator::Digest(children[1].digest.clone()))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        d.head_manifest("app", &Locator::Digest(children[0].digest.clone()))
            .await
            .unwrap()
            .is_none(),
        "amd64 not copied"
    );
    assert!(
        target_digest(&d, "app", &format!("{}.sig", idx.digest.fallback_tag()))
            .await
            .is_none(),
        "no signatures"
    );
    assert_eq!(out.stats().referrers_copied, 0);
}

#[tokio::test]
async fn target_with_every_blob_moves_no_bytes_and_other_repos_mount() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let img = image::push_image(
        &s,
        "base/app",
        Some("v1"),
        vec![image::random_bytes(30, 100_000), image::random_bytes(31, 100_000)],
        false,
        30,
    )
    .await;
    let engine = image::engine(vec![anon(&src.host()), anon(&dst.host())], no_refs());
    let first = engine
        .replicate(&task(
            &format!("{}/base/app:v1", src.host()),
            &format!("{}/a/app", dst.host()),
        ))
        .await
        .unwrap();
    assert_eq!(first.stats().blobs_uploaded, 3);

    // Same repository, new tag: every blob and the manifest are there; only a tag is written.
    let retag = engine
        .replicate(&task(
            &format!("{}/base/app:v1", src.host()),
            &format!("{}/a/app:latest", dst.host()),
        ))
        .await
        .unwrap();
    assert_eq!(retag.stats().bytes_copied, 0);
    assert_eq!(retag.stats().blobs_uploaded, 0);
    assert_eq!(retag.stats().tags_written, 1);
    assert_eq!(retag.digest(), &img.digest);

    // Another repository of the same target: blobs are mounted from a/app, not streamed.
    let other = engine
        .replicate(&task(
            &format!("{}/base/app:v1", src.host()),
            &format!("{}/b/app", dst.host()),
        ))
        .await
        .unwrap();
    assert_eq!(other.stats().blobs_mounted, 3, "{:?}", other.stats());
    assert_eq!(other.stats().bytes_copied, 0);
}

#[tokio::test]
async fn concurrent_copies_of_one_blob_upload_it_once() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let shared = image::random_bytes(40, 300_000);
    for i in 0..4 {
        image::push_image(
            &s,
            &format!("r{i}"),
            Some("v1"),
            vec![shared.clone(), image::random_bytes(41 + i, 1000)],
            false,
            40 + i,
        )
        .await;
    }
    let engine = std::sync::Arc::new(image::engine(vec![anon(&src.host()), anon(&dst.host())], no_refs()));
    let mut handles = Vec::new();
    for i in 0..4 {
        let e = engine.clone();
        let t = task(&format!("{}/r{i}:v1", src.host()), &format!("{}/m{i}", dst.host()));
        handles.push(tokio::spawn(async move { e.replicate(&t).await.unwrap() }));
    }
    let mut shared_uploads = 0;
    for h in handles {
        let s = h.await.unwrap();
        let s = s.stats();
        // Each copy has 3 blobs: config, the shared layer, its own layer.
        assert_eq!(s.blobs_uploaded + s.blobs_mounted + s.blobs_skipped, 3);
        if s.bytes_copied >= 300_000 {
            shared_uploads += 1;
        }
    }
    assert_eq!(
        shared_uploads, 1,
        "the shared 300 kB layer is streamed once; the others mount it"
    );
}

#[tokio::test]
async fn corrupted_source_blob_fails_and_target_gets_no_manifest() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    image::push_simple(&s, "app", "v1", 200_000, 50).await;
    let proxy = FaultProxy::start(&src.url()).await;
    proxy.add_rule(
        Rule::new(Action::CorruptBody)
            .method(Method::GET)
            .path_contains("/blobs/sha256:"),
    );
    let opts = Options {
        referrers: false,
        blob_attempts: 2,
        blob_retry_delay: Duration::from_millis(10),
        ..Options::default()
    };
    let engine = image::engine(vec![anon(&proxy.host()), anon(&dst.host())], opts);
    let err = engine
        .replicate(&task(
            &format!("{}/app:v1", proxy.host()),
            &format!("{}/app", dst.host()),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient, "a redelivery refetches the bytes");
    let d = image::client(&dst.host(), Auth::Anonymous);
    assert!(
        target_digest(&d, "app", "v1").await.is_none(),
        "no manifest for a corrupt image"
    );
    assert!(d.list_tags("app").await.unwrap().is_empty());
}

#[tokio::test]
async fn transient_500s_and_429s_are_retried_and_retry_after_is_waited() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let img = image::push_simple(&s, "app", "v1", 50_000, 60).await;
    let proxy = FaultProxy::start(&dst.url()).await;
    proxy.add_rule(
        Rule::status(500)
            .method(Method::PUT)
            .path_contains("/manifests/")
            .times(2),
    );
    proxy.add_rule(
        Rule::new(Action::Status {
            code: 429,
            retry_after: Some("2".into()),
            body: Some(r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.into()),
        })
        .method(Method::HEAD)
        .times(1),
    );
    proxy.add_rule(Rule::status(503).method(Method::POST).times(1));
    let engine = image::engine(vec![anon(&src.host()), anon(&proxy.host())], no_refs());
    let started = tokio::time::Instant::now();
    let out = engine
        .replicate(&task(
            &format!("{}/app:v1", src.host()),
            &format!("{}/app", proxy.host()),
        ))
        .await
        .unwrap();
    assert_eq!(out.digest(), &img.digest);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After: 2 must be waited, took {:?}",
        started.elapsed()
    );
    let faults = proxy.requests().iter().filter(|r| r.fault.is_some()).count();
    assert_eq!(faults, 4, "every injected fault fired and was retried");
}

/// Blob-level retries never multiply with request-level ones: a target whose every
/// upload start answers 503 gets exactly `retry.attempts` POSTs per blob (10 in tests),
/// not `retry.attempts × blob_attempts` (30), and the copy fails Transient.
#[tokio::test]
async fn exhausted_request_retries_are_not_retried_again_per_blob() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    image::push_simple(&s, "app", "v1", 20_000, 61).await;
    let proxy = FaultProxy::start(&dst.url()).await;
    proxy.add_rule(Rule::status(503).method(Method::POST).times(usize::MAX));
    let mut opts = no_refs();
    opts.blob_jobs = 1;
    let engine = image::engine(vec![anon(&src.host()), anon(&proxy.host())], opts);
    let err = engine
        .replicate(&task(
            &format!("{}/app:v1", src.host()),
            &format!("{}/app", proxy.host()),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    let posts = proxy.requests().iter().filter(|r| r.method == Method::POST).count();
    assert_eq!(
        posts,
        image::test_retry().attempts as usize,
        "one blob, its request attempts only (blob-level retries would make it {})",
        image::test_retry().attempts * Options::default().blob_attempts
    );
}

#[tokio::test]
async fn target_down_then_up_completes() {
    support::registry_bin_or_skip!();
    let src = TestRegistry::start().await;
    let mut dst = TestRegistry::start().await;
    let s = image::client(&src.host(), Auth::Anonymous);
    let img = image::push_simple(&s, "app", "v1", 80_000, 70).await;
    dst.stop().await;
    let engine = image::engine(vec![anon(&src.host()), anon(&dst.host())], no_refs());
    let t = task(&format!("{}/app:v1", src.host()), &format!("{}/app", dst.host()));
    let copy = tokio::spawn(async move { engine.replicate(&t).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!copy.is_finished(), "the copy waits for the target");
    dst.start_again().await;
    let out = copy.await.unwrap().unwrap();
    assert_eq!(out.digest(), &img.digest);
}

#[tokio::test]
async fn refused_monolithic_upload_falls_back_to_chunked() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let img = image::push_simple(&s, "app", "v1", 3_000_000, 80).await;
    let proxy = FaultProxy::start(&dst.url()).await;
    proxy.add_rule(Rule::new(Action::Reject413IfBodyOver { bytes: 1_000_000 }));
    let mut target = anon(&proxy.host());
    target.retry = image::test_retry();
    let engine = image::engine(
        vec![anon(&src.host()), target],
        Options {
            referrers: false,
            blob_retry_delay: Duration::from_millis(10),
            ..Options::default()
        },
    );
    let out = engine
        .replicate(&task(
            &format!("{}/app:v1", src.host()),
            &format!("{}/app", proxy.host()),
        ))
        .await
        .unwrap();
    assert_eq!(out.digest(), &img.digest);
    assert!(out.stats().blob_retries >= 1);
    assert!(
        proxy.requests().iter().any(|r| r.method == Method::PATCH),
        "chunks were PATCHed"
    );
}

#[tokio::test]
async fn basic_and_token_auth_registries() {
    support::registry_bin_or_skip!();
    support::bin_or_skip!(support::HTPASSWD_BIN_ENV, "htpasswd");
    let src = TestRegistry::start_htpasswd("alice", "alice-pw-123").await;
    let tokens = TokenServer::start(&[("bob", "bob-pw-456")]).await;
    let dst = TestRegistry::start_token(&tokens).await;
    let alice = Auth::Basic {
        username: "alice".into(),
        password: Secret::new("alice-pw-123"),
    };
    let s = image::client(&src.host(), alice.clone());
    let img = image::push_simple(&s, "app", "v1", 30_000, 90).await;
    let bob = Auth::Basic {
        username: "bob".into(),
        password: Secret::new("bob-pw-456"),
    };
    let engine = image::engine(vec![cfg(&src.host(), alice), cfg(&dst.host(), bob)], Options::default());
    let out = engine
        .replicate(&task(&format!("{}/app:v1", src.host()), &format!("{}/app", dst.host())))
        .await
        .unwrap();
    assert_eq!(out.digest(), &img.digest);
    let requests = tokens.request_count();
    assert!(
        requests <= 3,
        "tokens are cached per scope, got {requests} token requests"
    );

    // Wrong password: classified Systemic, and the error names neither secret.
    let wrong = Auth::Basic {
        username: "bob".into(),
        password: Secret::new("not-bobs-pw"),
    };
    let alice = Auth::Basic {
        username: "alice".into(),
        password: Secret::new("alice-pw-123"),
    };
    let engine = image::engine(
        vec![cfg(&src.host(), alice), cfg(&dst.host(), wrong)],
        Options::default(),
    );
    let err = engine
        .replicate(&task(
            &format!("{}/app:v1", src.host()),
            &format!("{}/other", dst.host()),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Systemic, "{err}");
    let text = format!("{err} {err:?}");
    for secret in ["not-bobs-pw", "alice-pw-123", "bob-pw-456"] {
        assert!(!text.contains(secret), "secret in error: {text}");
    }
    for t in tokens.issued_tokens() {
        assert!(!text.contains(&t), "token in error");
    }
}

#[tokio::test]
async fn unknown_hosts_are_refused_without_contact() {
    support::registry_bin_or_skip!();
    let src = TestRegistry::start().await;
    let proxy = FaultProxy::start(&src.url()).await;
    let engine = image::engine(vec![anon(&src.host())], Options::default());
    let err = engine
        .replicate(&task(
            &format!("{}/app:v1", proxy.host()),
            &format!("{}/app", src.host()),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("not configured"), "{err}");
    assert!(proxy.requests().is_empty(), "no request reached the unconfigured host");
}

#[tokio::test]
async fn missing_source_is_permanent_with_a_clear_message() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let engine = image::engine(vec![anon(&src.host()), anon(&dst.host())], Options::default());
    let err = engine
        .replicate(&task(
            &format!("{}/nope:v9", src.host()),
            &format!("{}/nope", dst.host()),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("source manifest not found: {}/nope:v9", src.host())
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn expired_tokens_are_refreshed_and_identity_tokens_use_the_oauth2_form() {
    support::registry_bin_or_skip!();
    let tokens = TokenServer::start_with(
        &[("dora", "dora-pw-99")],
        support::TokenOptions {
            expires_in_secs: 2,
            ..Default::default()
        },
    )
    .await;
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start_token(&tokens).await);
    let s = image::client(&src.host(), Auth::Anonymous);
    image::push_simple(&s, "app", "v1", 10_000, 95).await;
    let dora = Auth::Basic {
        username: "dora".into(),
        password: Secret::new("dora-pw-99"),
    };
    let engine = image::engine(vec![anon(&src.host()), cfg(&dst.host(), dora)], no_refs());
    let t = task(&format!("{}/app:v1", src.host()), &format!("{}/app", dst.host()));
    engine.replicate(&t).await.unwrap();
    let after_first = tokens.request_count();
    engine.replicate(&t).await.unwrap();
    assert_eq!(tokens.request_count(), after_first, "a fresh token is reused");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    engine.replicate(&t).await.unwrap();
    assert!(
        tokens.request_count() > after_first,
        "an expired token is fetched again"
    );

    // An OAuth2 refresh token (docker's `identitytoken`) is exchanged with the POST form.
    let form = format!(
        "grant_type=password&username=dora&password=dora-pw-99&service={}&client_id=test&access_type=offline&scope=",
        tokens.service()
    );
    let resp = reqwest::Client::new()
        .post(tokens.realm())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    let refresh = body["refresh_token"].as_str().expect("refresh token issued").to_owned();
    let engine = image::engine(
        vec![
            anon(&src.host()),
            cfg(
                &dst.host(),
                Auth::IdentityToken {
                    token: Secret::new(refresh),
                },
            ),
        ],
        no_refs(),
    );
    let out = engine
        .replicate(&task(
            &format!("{}/app:v1", src.host()),
            &format!("{}/via-refresh", dst.host()),
        ))
        .await
        .unwrap();
    assert!(matches!(out, Outcome::Replicated { .. }));
    let posts = tokens
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.credentials_valid)
        .count();
    assert!(
        posts >= 2,
        "the test's password grant plus the engine's refresh-token grant, got {posts}"
    );
}

#[tokio::test]
async fn connection_reset_and_stall_mid_blob_are_retried() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let img = image::push_simple(&s, "app", "v1", 500_000, 96).await;
    let proxy = FaultProxy::start(&src.url()).await;
    let layer = serde_json::from_slice::<serde_json::Value>(&img.bytes).unwrap()["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    proxy.add_rule(
        Rule::new(Action::ResetAfter { bytes: 100_000 })
            .method(Method::GET)
            .path_contains(layer.clone())
            .times(1),
    );
    proxy.add_rule(
        Rule::new(Action::Stall {
            delay: Duration::from_secs(3),
        })
        .method(Method::GET)
        .path_contains(layer)
        .times(1),
    );
    let mut source = anon(&proxy.host());
    source.read_timeout = Duration::from_secs(1);
    let opts = Options {
        referrers: false,
        blob_retry_delay: Duration::from_millis(10),
        ..Options::default()
    };
    let engine = image::engine(vec![source, anon(&dst.host())], opts);
    let started = tokio::time::Instant::now();
    let out = engine
        .replicate(&task(
            &format!("{}/app:v1", proxy.host()),
            &format!("{}/app", dst.host()),
        ))
        .await
        .unwrap();
    assert_eq!(out.digest(), &img.digest);
    assert!(
        out.stats().blob_retries >= 1,
        "the reset blob was streamed again: {:?}",
        out.stats()
    );
    let faults: Vec<_> = proxy.requests().into_iter().filter_map(|r| r.fault).collect();
    assert!(faults.iter().any(|f| f.starts_with("reset_after")), "{faults:?}");
    // The stalled GET is abandoned by the 1 s read timeout and retried (the proxy never
    // logs it, because the client hung up first).
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the stall was waited out: {:?}",
        started.elapsed()
    );
}
