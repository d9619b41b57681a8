//! Tag deletes at a registry that cannot delete a tag (issue 10), against real
//! `docker-registry` processes (tier 3). Distribution 2.8 with deletes enabled answers
//! `DELETE /v2/NAME/manifests/TAG` with `400 DIGEST_INVALID`; regrelay then deletes the
//! manifest by digest, only when no other tag points at it or at an index listing it.

mod support;

use std::time::Duration;

use regrelay::config::Auth;
use regrelay::config::TagDeleteFallback::{Manifest, Off};
use regrelay::oci::{Digest, Locator};
use regrelay::registry::{HttpRegistry, Registry};
use regrelay::replicate::{Deletion, Kept, MAX_OTHER_TAGS, Options};
use support::image::{self, cfg};
use support::{Action, FaultProxy, Method, Rule, Seen, TestRegistry};

const REPO: &str = "mirror/app";

/// A target registry, a fault proxy in front of it, a client straight to the registry
/// and an engine that talks through the proxy.
struct Target {
    _reg: TestRegistry,
    proxy: FaultProxy,
    d: HttpRegistry,
    engine: regrelay::replicate::Replicator<regrelay::registry::RegistrySet>,
}

impl Target {
    async fn start() -> Target {
        let reg = TestRegistry::start().await;
        let d = image::client(&reg.host(), Auth::Anonymous);
        let proxy = FaultProxy::start(&reg.url()).await;
        let engine = image::engine(vec![cfg(&proxy.host(), Auth::Anonymous)], Options::default());
        Target {
            _reg: reg,
            proxy,
            d,
            engine,
        }
    }

    fn host(&self) -> String {
        self.proxy.host()
    }

    /// Delete `tag` through the engine (not a dry run).
    async fn delete_tag(&self, tag: &str, fallback: regrelay::config::TagDeleteFallback) -> Deletion {
        self.engine
            .delete(&self.host(), REPO, &Locator::Tag(tag.into()), None, false, fallback)
            .await
            .unwrap()
    }

    /// What `tag` points at, straight from the registry.
    async fn tag(&self, tag: &str) -> Option<Digest> {
        self.d
            .head_manifest(REPO, &Locator::Tag(tag.into()))
            .await
            .unwrap()
            .and_then(|h| h.digest)
    }

    /// Is the manifest `digest` still stored?
    async fn has(&self, digest: &Digest) -> bool {
        self.d
            .head_manifest(REPO, &Locator::Digest(digest.clone()))
            .await
            .unwrap()
            .is_some()
    }

    /// The DELETE requests the engine sent, as (path, status).
    fn deletes(&self) -> Vec<(String, Option<u16>)> {
        self.proxy
            .requests()
            .into_iter()
            .filter(|r: &Seen| r.method == Method::DELETE)
            .map(|r| (r.path_and_query, r.status))
            .collect()
    }
}

/// Point `tag` at the manifest `p` (already pushed by digest).
async fn tag_as(d: &HttpRegistry, p: &image::Pushed, tag: &str) {
    d.put_manifest(REPO, &Locator::Tag(tag.into()), &p.media_type, p.bytes.clone())
        .await
        .unwrap();
}

#[tokio::test]
async fn tag_delete_on_distribution_deletes_the_manifest_when_no_other_tag_uses_it_10() {
    support::registry_bin_or_skip!();
    let t = Target::start().await;
    let img = image::push_simple(&t.d, REPO, "v1", 3_000, 1).await;
    // Another tag on another manifest does not hold the delete back.
    let other = image::push_simple(&t.d, REPO, "v2", 3_000, 2).await;

    let out = t.delete_tag("v1", Manifest).await;
    assert_eq!(
        out,
        Deletion::ManifestDeleted {
            digest: img.digest.clone()
        }
    );
    assert!(!t.has(&img.digest).await, "the manifest is deleted");
    assert_eq!(t.tag("v1").await, None, "and with it the tag");
    assert_eq!(
        t.tag("v2").await,
        Some(other.digest.clone()),
        "the other tag is untouched"
    );
    // Distribution refused the DELETE by tag (400 DIGEST_INVALID), then deleted by digest.
    assert_eq!(
        t.deletes(),
        vec![
            (format!("/v2/{REPO}/manifests/v1"), Some(400)),
            (format!("/v2/{REPO}/manifests/{}", img.digest), Some(202)),
        ]
    );
}

#[tokio::test]
async fn tag_delete_keeps_a_manifest_another_tag_points_at_10() {
    support::registry_bin_or_skip!();
    let t = Target::start().await;
    let img = image::push_simple(&t.d, REPO, "v1", 3_000, 3).await;
    tag_as(&t.d, &img, "stable").await;

    let out = t.delete_tag("v1", Manifest).await;
    assert_eq!(out, Deletion::Unsupported(Kept::SharedWith { tag: "stable".into() }));
    assert!(out_text(&out).contains("would also remove tag stable"), "{out:?}");
    assert!(t.has(&img.digest).await);
    assert_eq!(t.tag("stable").await, Some(img.digest.clone()));
    assert_eq!(t.tag("v1").await, Some(img.digest.clone()), "distribution cannot untag");
    assert_eq!(
        t.deletes().len(),
        1,
        "only the refused DELETE by tag: {:?}",
        t.deletes()
    );
}

fn out_text(d: &Deletion) -> String {
    match d {
        Deletion::Unsupported(k) => k.to_string(),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn tag_delete_keeps_a_manifest_a_tagged_index_lists_10() {
    support::registry_bin_or_skip!();
    let t = Target::start().await;
    let (index, children) = image::push_two_platform_index(&t.d, REPO, "multi", 4).await;
    tag_as(&t.d, &children[0], "amd64").await;

    let out = t.delete_tag("amd64", Manifest).await;
    assert_eq!(out, Deletion::Unsupported(Kept::ListedBy { tag: "multi".into() }));
    assert!(t.has(&children[0].digest).await, "the index's child is kept");
    assert_eq!(t.tag("multi").await, Some(index.digest.clone()));

    // The index itself, tagged once, goes (its children stay, untagged).
    let out = t.delete_tag("multi", Manifest).await;
    assert_eq!(
        out,
        Deletion::ManifestDeleted {
            digest: index.digest.clone()
        }
    );
    assert!(!t.has(&index.digest).await);
    assert!(t.has(&children[0].digest).await);
}

#[tokio::test]
async fn tag_delete_with_the_fallback_off_keeps_the_manifest_10() {
    support::registry_bin_or_skip!();
    let t = Target::start().await;
    let img = image::push_simple(&t.d, REPO, "v1", 3_000, 5).await;

    let out = t.delete_tag("v1", Off).await;
    assert_eq!(out, Deletion::Unsupported(Kept::FallbackOff));
    assert!(out_text(&out).contains("tag_delete_fallback = \"off\""), "{out:?}");
    assert!(t.has(&img.digest).await);
    assert_eq!(t.tag("v1").await, Some(img.digest.clone()));
    assert_eq!(t.deletes().len(), 1, "{:?}", t.deletes());
    assert!(
        !t.proxy
            .requests()
            .iter()
            .any(|r| r.path_and_query.contains("/tags/list")),
        "no tag listing when the fallback is off"
    );
}

#[tokio::test]
async fn tag_delete_dry_run_sends_no_delete_10() {
    support::registry_bin_or_skip!();
    let t = Target::start().await;
    let img = image::push_simple(&t.d, REPO, "v1", 3_000, 6).await;

    let out = t
        .engine
        .delete(&t.host(), REPO, &Locator::Tag("v1".into()), None, true, Manifest)
        .await
        .unwrap();
    assert_eq!(out, Deletion::DryRun);
    assert!(t.deletes().is_empty(), "{:?}", t.deletes());
    assert!(t.has(&img.digest).await);
    assert_eq!(t.tag("v1").await, Some(img.digest.clone()));
}

#[tokio::test]
async fn tag_delete_refused_outright_is_unsupported_10() {
    support::registry_bin_or_skip!();
    let t = Target::start().await;
    let img = image::push_simple(&t.d, REPO, "v1", 3_000, 7).await;
    // Deletes disabled (`storage.delete.enabled: false`): 405 UNSUPPORTED for both.
    t.proxy.add_rule(
        Rule::new(Action::Status {
            code: 405,
            retry_after: None,
            body: Some(r#"{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}"#.into()),
        })
        .method(Method::DELETE),
    );

    let out = t.delete_tag("v1", Manifest).await;
    assert_eq!(out, Deletion::Unsupported(Kept::DeletesRefused));
    assert!(t.has(&img.digest).await);
    let deletes = t.deletes();
    assert_eq!(deletes.len(), 2, "by tag, then by digest: {deletes:?}");
    assert!(deletes[1].0.ends_with(&img.digest.to_string()));
}

#[tokio::test]
async fn tag_delete_checks_at_most_the_bounded_number_of_other_tags_10() {
    support::registry_bin_or_skip!();
    let t = Target::start().await;
    let img = image::push_simple(&t.d, REPO, "v1", 3_000, 8).await;
    // A repository with more tags than the bound (served by the proxy; pushing a
    // thousand tags would only slow the test down).
    let mut tags: Vec<String> = (0..=MAX_OTHER_TAGS).map(|i| format!("t{i}")).collect();
    tags.push("v1".into());
    let body = serde_json::json!({"name": REPO, "tags": tags}).to_string();
    t.proxy.add_rule(
        Rule::new(Action::Status {
            code: 200,
            retry_after: None,
            body: Some(body),
        })
        .method(Method::GET)
        .path_contains("/tags/list"),
    );

    let out = t.delete_tag("v1", Manifest).await;
    assert_eq!(
        out,
        Deletion::Unsupported(Kept::TooManyTags {
            tags: MAX_OTHER_TAGS + 1
        })
    );
    assert!(t.has(&img.digest).await);
    let heads = t
        .proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::HEAD)
        .count();
    assert_eq!(heads, 1, "only the tag itself was resolved");
}

#[tokio::test]
async fn tag_moved_during_the_check_is_not_deleted_10() {
    support::registry_bin_or_skip!();
    let t = Target::start().await;
    let old = image::push_simple(&t.d, REPO, "v1", 3_000, 9).await;
    let new = image::push_image(&t.d, REPO, None, vec![image::random_bytes(10, 3_000)], false, 10).await;
    // Hold the tag listing back long enough to move the tag meanwhile.
    t.proxy.add_rule(
        Rule::new(Action::Stall {
            delay: Duration::from_secs(2),
        })
        .method(Method::GET)
        .path_contains("/tags/list")
        .times(1),
    );

    let deleting = t.delete_tag("v1", Manifest);
    let moving = async {
        // The refused DELETE by tag is recorded before the listing starts.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while t.deletes().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "no DELETE by tag");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tag_as(&t.d, &new, "v1").await;
    };
    let (out, ()) = tokio::join!(deleting, moving);
    assert_eq!(
        out,
        Deletion::Mismatch {
            actual: new.digest.clone()
        }
    );
    assert!(t.has(&old.digest).await, "the old manifest was not deleted");
    assert_eq!(t.tag("v1").await, Some(new.digest.clone()));
    assert_eq!(t.deletes().len(), 1, "no DELETE by digest: {:?}", t.deletes());
}
