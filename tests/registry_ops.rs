//! Engine operations against real `docker-registry` processes (tier 3): resolve,
//! present, ensure_tag and guarded delete; plus the registry request metrics, observed
//! through a fault-injecting proxy.

mod support;

use regrelay::config::TagDeleteFallback::Manifest;
use regrelay::config::{Auth, Secret};
use regrelay::oci::{Digest, Locator, Reference};
use regrelay::registry::{self, ErrorClass, Registry};
use regrelay::replicate::{Deletion, Error, Kept, Options, Side};
use support::image::{self, anon, cfg};
use support::{Action, FaultProxy, Method, Rule, TestRegistry, TokenServer};

fn reference(s: &str) -> Reference {
    s.parse().unwrap()
}

/// A digest nothing was ever pushed under.
fn unknown_digest() -> Digest {
    Digest::sha256_of(b"never pushed")
}

/// The value of the metric sample line that starts with `prefix`, 0 when absent.
fn metric(prefix: &str) -> f64 {
    regrelay::metrics::global()
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(prefix).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::test]
async fn resolve_follows_tags_and_digests_and_reports_missing_as_none() {
    support::registry_bin_or_skip!();
    let src = TestRegistry::start().await;
    let s = image::client(&src.host(), Auth::Anonymous);
    let img = image::push_simple(&s, "team/app", "v1", 4_000, 1).await;
    let engine = image::engine(vec![anon(&src.host())], Options::default());
    let h = src.host();

    let got = engine.resolve(&reference(&format!("{h}/team/app:v1"))).await.unwrap();
    assert_eq!(got, Some(img.digest.clone()));
    let got = engine
        .resolve(&reference(&format!("{h}/team/app@{}", img.digest)))
        .await
        .unwrap();
    assert_eq!(got, Some(img.digest.clone()));

    assert_eq!(
        engine.resolve(&reference(&format!("{h}/team/app:v9"))).await.unwrap(),
        None
    );
    assert_eq!(
        engine.resolve(&reference(&format!("{h}/team/nope:v1"))).await.unwrap(),
        None
    );
    let missing = format!("{h}/team/app@{}", unknown_digest());
    assert_eq!(engine.resolve(&reference(&missing)).await.unwrap(), None);

    let err = engine.resolve(&reference(&format!("{h}/team/app"))).await.unwrap_err();
    assert!(matches!(err, Error::NoLocator(_)), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
}

#[tokio::test]
async fn present_is_one_head_by_digest() {
    support::registry_bin_or_skip!();
    let dst = TestRegistry::start().await;
    let d = image::client(&dst.host(), Auth::Anonymous);
    let img = image::push_simple(&d, "mirror/app", "v1", 3_000, 2).await;
    let proxy = FaultProxy::start(&dst.url()).await;
    let engine = image::engine(vec![anon(&proxy.host())], Options::default());
    let h = proxy.host();

    assert!(engine.present(&h, "mirror/app", &img.digest).await.unwrap());
    let seen = proxy.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, Method::HEAD);
    assert!(seen[0].path_and_query.contains(&format!("/manifests/{}", img.digest)));

    assert!(!engine.present(&h, "mirror/app", &unknown_digest()).await.unwrap());
    assert!(!engine.present(&h, "mirror/none", &img.digest).await.unwrap());
}

#[tokio::test]
async fn ensure_tag_writes_once_then_reports_no_change() {
    support::registry_bin_or_skip!();
    let dst = TestRegistry::start().await;
    let d = image::client(&dst.host(), Auth::Anonymous);
    // By digest only: no tag points at it yet.
    let img = image::push_image(&d, "mirror/app", None, vec![image::random_bytes(3, 5_000)], false, 3).await;
    let other = image::push_simple(&d, "mirror/app", "stable", 5_000, 4).await;
    let engine = image::engine(vec![anon(&dst.host())], Options::default());
    let h = dst.host();

    assert!(engine.ensure_tag(&h, "mirror/app", "v1", &img.digest).await.unwrap());
    assert!(!engine.ensure_tag(&h, "mirror/app", "v1", &img.digest).await.unwrap());
    let got = d.get_manifest("mirror/app", &Locator::Tag("v1".into())).await.unwrap();
    assert_eq!(got.digest, img.digest);
    assert_eq!(got.bytes, img.bytes, "the tag serves the exact bytes of the digest");

    // An existing tag pointing elsewhere is moved.
    assert!(
        engine
            .ensure_tag(&h, "mirror/app", "stable", &img.digest)
            .await
            .unwrap()
    );
    let got = d
        .head_manifest("mirror/app", &Locator::Tag("stable".into()))
        .await
        .unwrap();
    assert_eq!(got.unwrap().digest, Some(img.digest.clone()));
    assert!(engine.present(&h, "mirror/app", &other.digest).await.unwrap());

    // A digest that is not at the target is never tagged.
    let err = engine
        .ensure_tag(&h, "mirror/app", "v2", &unknown_digest())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Registry {
                side: Side::Target,
                source: registry::Error::ManifestUnknown { .. }
            }
        ),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        d.head_manifest("mirror/app", &Locator::Tag("v2".into()))
            .await
            .unwrap()
            .is_none(),
        "no tag was written"
    );
}

#[tokio::test]
async fn delete_by_digest_when_expected_matches_removes_the_manifest() {
    support::registry_bin_or_skip!();
    let dst = TestRegistry::start().await;
    let d = image::client(&dst.host(), Auth::Anonymous);
    let img = image::push_simple(&d, "mirror/app", "v1", 3_000, 5).await;
    let engine = image::engine(vec![anon(&dst.host())], Options::default());
    let h = dst.host();
    let by_digest = Locator::Digest(img.digest.clone());

    let before = metric(&format!(
        r#"regrelay_registry_requests_total{{registry="{h}",status_class="2xx"}}"#
    ));
    let out = engine
        .delete(&h, "mirror/app", &by_digest, Some(&img.digest), false, Manifest)
        .await
        .unwrap();
    assert_eq!(out, Deletion::Deleted);
    assert!(!engine.present(&h, "mirror/app", &img.digest).await.unwrap());
    assert!(
        d.head_manifest("mirror/app", &Locator::Tag("v1".into()))
            .await
            .unwrap()
            .is_none(),
        "deleting by digest removes the tags pointing at it"
    );
    let after = metric(&format!(
        r#"regrelay_registry_requests_total{{registry="{h}",status_class="2xx"}}"#
    ));
    assert!(
        after >= before + 2.0,
        "HEAD and DELETE were counted: {before} -> {after}"
    );

    // Gone already: nothing to do, with or without an expected digest.
    let again = engine
        .delete(&h, "mirror/app", &by_digest, Some(&img.digest), false, Manifest)
        .await
        .unwrap();
    assert_eq!(again, Deletion::Absent);
    assert_eq!(
        engine
            .delete(&h, "mirror/app", &by_digest, None, false, Manifest)
            .await
            .unwrap(),
        Deletion::Absent
    );
}

#[tokio::test]
async fn delete_on_a_token_registry_asks_for_the_delete_action() {
    support::registry_bin_or_skip!();
    let tokens = TokenServer::start(&[("bob", "bob-pw-456")]).await;
    let dst = TestRegistry::start_token(&tokens).await;
    let bob = Auth::Basic {
        username: "bob".into(),
        password: Secret::new("bob-pw-456"),
    };
    let d = image::client(&dst.host(), bob.clone());
    let img = image::push_simple(&d, "mirror/app", "v1", 3_000, 12).await;
    let engine = image::engine(vec![cfg(&dst.host(), bob)], Options::default());
    let out = engine
        .delete(
            &dst.host(),
            "mirror/app",
            &Locator::Digest(img.digest.clone()),
            Some(&img.digest),
            false,
            Manifest,
        )
        .await
        .unwrap();
    assert_eq!(out, Deletion::Deleted);
    assert!(!engine.present(&dst.host(), "mirror/app", &img.digest).await.unwrap());
    let scopes: Vec<String> = tokens.requests().into_iter().flat_map(|r| r.scopes).collect();
    assert!(
        scopes.iter().any(|s| s == "repository:mirror/app:pull,delete"),
        "{scopes:?}"
    );
}

#[tokio::test]
async fn delete_with_a_mismatching_expected_digest_deletes_nothing() {
    support::registry_bin_or_skip!();
    let dst = TestRegistry::start().await;
    let d = image::client(&dst.host(), Auth::Anonymous);
    let img = image::push_simple(&d, "mirror/app", "v1", 3_000, 6).await;
    let newer = image::push_image(&d, "mirror/app", None, vec![image::random_bytes(7, 3_000)], false, 7).await;
    let engine = image::engine(vec![anon(&dst.host())], Options::default());
    let h = dst.host();

    let out = engine
        .delete(
            &h,
            "mirror/app",
            &Locator::Tag("v1".into()),
            Some(&newer.digest),
            false,
            Manifest,
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        Deletion::Mismatch {
            actual: img.digest.clone()
        }
    );
    let out = engine
        .delete(
            &h,
            "mirror/app",
            &Locator::Digest(img.digest.clone()),
            Some(&newer.digest),
            false,
            Manifest,
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        Deletion::Mismatch {
            actual: img.digest.clone()
        }
    );
    assert!(engine.present(&h, "mirror/app", &img.digest).await.unwrap());
    assert!(engine.present(&h, "mirror/app", &newer.digest).await.unwrap());
    let tag = d.head_manifest("mirror/app", &Locator::Tag("v1".into())).await.unwrap();
    assert_eq!(tag.unwrap().digest, Some(img.digest));
}

#[tokio::test]
async fn dry_run_checks_but_deletes_nothing() {
    support::registry_bin_or_skip!();
    let dst = TestRegistry::start().await;
    let d = image::client(&dst.host(), Auth::Anonymous);
    let img = image::push_simple(&d, "mirror/app", "v1", 3_000, 8).await;
    let proxy = FaultProxy::start(&dst.url()).await;
    let engine = image::engine(vec![anon(&proxy.host())], Options::default());
    let h = proxy.host();

    for loc in [Locator::Digest(img.digest.clone()), Locator::Tag("v1".into())] {
        let out = engine
            .delete(&h, "mirror/app", &loc, Some(&img.digest), true, Manifest)
            .await
            .unwrap();
        assert_eq!(out, Deletion::DryRun, "{loc}");
    }
    assert!(
        proxy.requests().iter().all(|r| r.method != Method::DELETE),
        "a dry run sends no DELETE"
    );
    assert!(engine.present(&h, "mirror/app", &img.digest).await.unwrap());
    let tag = d.head_manifest("mirror/app", &Locator::Tag("v1".into())).await.unwrap();
    assert_eq!(tag.unwrap().digest, Some(img.digest));
}

#[tokio::test]
async fn registries_that_refuse_deletes_report_unsupported() {
    support::registry_bin_or_skip!();
    let dst = TestRegistry::start().await;
    let d = image::client(&dst.host(), Auth::Anonymous);
    let img = image::push_simple(&d, "mirror/app", "v1", 3_000, 9).await;
    let proxy = FaultProxy::start(&dst.url()).await;
    let unsupported = r#"{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}"#;
    // distribution with deletes disabled: 405; some registries: 400 UNSUPPORTED.
    for code in [405, 400] {
        proxy.add_rule(
            Rule::new(Action::Status {
                code,
                retry_after: None,
                body: Some(unsupported.into()),
            })
            .method(Method::DELETE)
            .times(1),
        );
    }
    let engine = image::engine(vec![anon(&proxy.host())], Options::default());
    let h = proxy.host();
    let loc = Locator::Digest(img.digest.clone());
    for _ in 0..2 {
        let out = engine
            .delete(&h, "mirror/app", &loc, Some(&img.digest), false, Manifest)
            .await
            .unwrap();
        assert_eq!(out, Deletion::Unsupported(Kept::DeletesRefused));
    }
    assert!(engine.present(&h, "mirror/app", &img.digest).await.unwrap());

    // Any other 400 is an error, not "unsupported".
    proxy.add_rule(
        Rule::new(Action::Status {
            code: 400,
            retry_after: None,
            body: Some(r#"{"errors":[{"code":"DIGEST_INVALID","message":"bad"}]}"#.into()),
        })
        .method(Method::DELETE)
        .times(1),
    );
    let err = engine
        .delete(&h, "mirror/app", &loc, Some(&img.digest), false, Manifest)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().starts_with("target delete manifest"), "{err}");
}

#[tokio::test]
async fn transient_answers_are_counted_as_requests_and_retries() {
    support::registry_bin_or_skip!();
    let dst = TestRegistry::start().await;
    let d = image::client(&dst.host(), Auth::Anonymous);
    let img = image::push_simple(&d, "mirror/app", "v1", 3_000, 10).await;
    let proxy = FaultProxy::start(&dst.url()).await;
    proxy.add_rule(Rule::status(503).method(Method::HEAD).times(1));
    proxy.add_rule(
        Rule::new(Action::Status {
            code: 429,
            retry_after: Some("0".into()),
            body: None,
        })
        .method(Method::HEAD)
        .times(1),
    );
    let engine = image::engine(vec![anon(&proxy.host())], Options::default());
    let h = proxy.host();
    let requests = |class: &str| {
        metric(&format!(
            r#"regrelay_registry_requests_total{{registry="{h}",status_class="{class}"}}"#
        ))
    };
    let throttled = || metric(&format!(r#"regrelay_registry_throttled_total{{registry="{h}"}}"#));
    let retries = || {
        metric(&format!(
            r#"regrelay_registry_retries_total{{error_class="transient",registry="{h}"}}"#
        ))
    };
    let before = [
        requests("2xx"),
        requests("4xx"),
        requests("5xx"),
        throttled(),
        retries(),
    ];

    assert!(engine.present(&h, "mirror/app", &img.digest).await.unwrap());
    let after = [
        requests("2xx"),
        requests("4xx"),
        requests("5xx"),
        throttled(),
        retries(),
    ];
    let delta: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(
        delta,
        vec![1.0, 1.0, 1.0, 1.0, 2.0],
        "2xx, 4xx, 5xx, throttled, retries"
    );

    // A dead host (nothing listens on the port): each attempt counts as status_class="error".
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut quick = anon(&dead);
    quick.retry.attempts = 2;
    let engine = image::engine(vec![quick], Options::default());
    let errors = || {
        metric(&format!(
            r#"regrelay_registry_requests_total{{registry="{dead}",status_class="error"}}"#
        ))
    };
    let before = errors();
    let err = engine.present(&dead, "mirror/app", &img.digest).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Transient, "{err}");
    assert_eq!(errors() - before, 2.0, "one per attempt");
    let text = regrelay::metrics::global().render();
    assert!(!text.contains("sha256:") && !text.contains("mirror/app"), "{text}");
}

#[tokio::test]
async fn unknown_hosts_are_refused_without_contact() {
    support::registry_bin_or_skip!();
    let dst = TestRegistry::start().await;
    let d = image::client(&dst.host(), Auth::Anonymous);
    let img = image::push_simple(&d, "mirror/app", "v1", 3_000, 11).await;
    let proxy = FaultProxy::start(&dst.url()).await;
    // Only the real registry is configured; the proxy in front of it is not.
    let engine = image::engine(vec![anon(&dst.host())], Options::default());
    let h = proxy.host();
    let loc = Locator::Digest(img.digest.clone());

    let refused = |err: Error, side: Side| {
        assert!(
            matches!(&err, Error::Registry { side: s, source: registry::Error::HostNotAllowed { .. } } if *s == side),
            "{err}"
        );
        assert!(err.to_string().contains("not configured"), "{err}");
    };
    refused(
        engine
            .resolve(&reference(&format!("{h}/mirror/app:v1")))
            .await
            .unwrap_err(),
        Side::Source,
    );
    refused(
        engine.present(&h, "mirror/app", &img.digest).await.unwrap_err(),
        Side::Target,
    );
    refused(
        engine
            .ensure_tag(&h, "mirror/app", "v2", &img.digest)
            .await
            .unwrap_err(),
        Side::Target,
    );
    refused(
        engine
            .delete(&h, "mirror/app", &loc, None, false, Manifest)
            .await
            .unwrap_err(),
        Side::Target,
    );
    assert!(proxy.requests().is_empty(), "no request reached the unconfigured host");
    assert!(engine.present(&dst.host(), "mirror/app", &img.digest).await.unwrap());
}

/// Connection failures are Transient until the host has given no answer at all for
/// `unreachable_after`; then they are Systemic (the daemon pauses instead of spinning),
/// and one answer makes the host reachable again.
#[tokio::test]
async fn a_host_silent_past_unreachable_after_becomes_systemic_until_it_answers() {
    support::registry_bin_or_skip!();
    let reg = TestRegistry::start().await;
    let proxy = FaultProxy::start(&reg.url()).await;
    let mut c = anon(&proxy.host());
    c.retry.attempts = 1;
    c.unreachable_after = std::time::Duration::from_millis(300);
    let client = registry::HttpRegistry::new(c).unwrap();
    let loc = Locator::Tag("v1".into());

    // GETs: the proxy's "down" closes the connection before the response head, which a
    // body-less HEAD answer would not exercise.
    proxy.set_down(true);
    let first = client.get_manifest("team/app", &loc).await.unwrap_err();
    assert_eq!(first.class(), ErrorClass::Transient, "{first}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let later = client.get_manifest("team/app", &loc).await.unwrap_err();
    assert_eq!(later.class(), ErrorClass::Systemic, "{later}");
    assert!(later.to_string().contains("unreachable for"), "{later}");

    proxy.set_down(false);
    let answered = client.get_manifest("team/app", &loc).await.unwrap_err();
    assert_eq!(
        answered.class(),
        ErrorClass::Permanent,
        "the registry answers: no such tag: {answered}"
    );
    proxy.set_down(true);
    let again = client.get_manifest("team/app", &loc).await.unwrap_err();
    assert_eq!(
        again.class(),
        ErrorClass::Transient,
        "an answer resets the clock: {again}"
    );
}

#[tokio::test]
async fn list_repositories_reads_the_catalog_with_the_catalog_scope() {
    support::registry_bin_or_skip!();
    let tokens = TokenServer::start(&[("bob", "bob-pw-456")]).await;
    let reg = TestRegistry::start_token(&tokens).await;
    let bob = Auth::Basic {
        username: "bob".into(),
        password: Secret::new("bob-pw-456"),
    };
    let r = image::client(&reg.host(), bob);
    assert_eq!(r.list_repositories().await.unwrap(), Some(Vec::new()));
    for (i, repo) in ["team/b", "team/a", "other"].into_iter().enumerate() {
        image::push_simple(&r, repo, "v1", 1_000, 40 + i as u64).await;
    }
    let mut repos = r
        .list_repositories()
        .await
        .unwrap()
        .expect("the registry has a catalog");
    repos.sort();
    assert_eq!(repos, ["other", "team/a", "team/b"]);
    let scopes: Vec<String> = tokens.requests().into_iter().flat_map(|r| r.scopes).collect();
    assert!(scopes.iter().any(|s| s == "registry:catalog:*"), "{scopes:?}");
}
