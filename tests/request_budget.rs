//! Request budgets (issue 16): the registry requests of a copy, counted by a proxy in
//! front of each real `docker-registry`, pinned at the protocol's minimum so that a cut
//! cannot silently regress. Per new blob: an existence HEAD, the upload start and one PUT
//! (blobs here are under the 1 MiB single-PUT limit), or a mount; per manifest one PUT,
//! the root's under its tag; one HEAD of the root before copying and one read-back GET of
//! the tag after (the verification). Also the executor's paths: an event for a changed
//! tag, an event for a tag in place (2 requests), a digest item with a tag (a promotion
//! edge), and a sync's repair, which skips the reads the sync has just made.

mod support;

use std::sync::Arc;
use std::time::Duration;

use regrelay::engine::{Done, Execute as _, Executor, Hint, Item, Memory, Outcome as ItemOutcome, Repo};
use regrelay::registry::{HttpRegistry, Registry as _, RegistrySet};
use regrelay::replicate::{Options, Outcome, Replicator};
use support::image::{self, anon, task};
use support::{FaultProxy, TestRegistry};

fn no_refs() -> Options {
    Options {
        referrers: false,
        ..Options::default()
    }
}

/// What a request is, for counting: method and kind of path.
fn kind(method: &str, path: &str) -> String {
    let what = if path == "/v2/" {
        "ping"
    } else if path.contains("/manifests/sha256:") {
        "manifest@digest"
    } else if path.contains("/manifests/") {
        "manifest:tag"
    } else if path.contains("/blobs/uploads/") && path.contains("mount=") {
        "mount"
    } else if path.contains("/blobs/uploads/") {
        "upload"
    } else if path.contains("/blobs/") {
        "blob"
    } else if path.contains("/tags/list") {
        "tags"
    } else if path.contains("/referrers/") {
        "referrers"
    } else {
        path
    };
    format!("{method} {what}")
}

/// The requests the proxy saw since its last clear, as sorted kinds; then clears.
fn seen(proxy: &FaultProxy) -> Vec<String> {
    let mut v: Vec<String> = proxy
        .requests()
        .iter()
        .map(|r| kind(r.method.as_str(), r.path_and_query.as_str()))
        .collect();
    v.sort();
    proxy.clear_log();
    v
}

/// `[(kind, n)]` as the sorted list `seen` returns.
fn budget(spec: &[(&str, usize)]) -> Vec<String> {
    let mut v: Vec<String> = spec
        .iter()
        .flat_map(|(k, n)| std::iter::repeat_n(k.to_string(), *n))
        .collect();
    v.sort();
    v
}

/// The target's requests for a new image of three small blobs into an empty repository
/// (12): the root's HEAD; per blob its HEAD, the upload start and one PUT; the root PUT
/// under its tag; the tag's read-back (the verification).
const NEW_IMAGE_AT_TARGET: [(&str, usize); 6] = [
    ("HEAD manifest@digest", 1),
    ("HEAD blob", 3),
    ("POST upload", 3),
    ("PUT upload", 3),
    ("PUT manifest:tag", 1),
    ("GET manifest:tag", 1),
];

struct Setup {
    _src: TestRegistry,
    _dst: TestRegistry,
    s: HttpRegistry,
    sp: FaultProxy,
    dp: FaultProxy,
}

impl Setup {
    async fn start() -> Setup {
        let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
        let s = image::client(&src.host(), regrelay::config::Auth::Anonymous);
        let sp = FaultProxy::start(&src.url()).await;
        let dp = FaultProxy::start(&dst.url()).await;
        Setup {
            _src: src,
            _dst: dst,
            s,
            sp,
            dp,
        }
    }

    fn engine(&self, opts: Options) -> Replicator<RegistrySet> {
        image::engine(vec![anon(&self.sp.host()), anon(&self.dp.host())], opts)
    }

    fn clear(&self) {
        self.sp.clear_log();
        self.dp.clear_log();
    }
}

/// An image with a config and two layers, all under the single-PUT limit.
async fn three_blobs(s: &HttpRegistry, tag: &str, seed: u64) -> image::Pushed {
    let layers = vec![image::random_bytes(seed, 20_000), image::random_bytes(seed + 1, 30_000)];
    image::push_image(s, "app", Some(tag), layers, false, seed).await
}

#[tokio::test]
async fn new_image_present_image_and_mounts_are_at_the_protocol_minimum_issue_16() {
    support::registry_bin_or_skip!();
    let t = Setup::start().await;
    let img = three_blobs(&t.s, "v1", 1).await;
    let engine = t.engine(no_refs());
    t.clear();
    let (src, dst) = (t.sp.host(), t.dp.host());

    // A new image: the root goes up under its tag, read back once.
    let out = engine
        .replicate(&task(&format!("{src}/app:v1"), &format!("{dst}/mirror/a")))
        .await
        .unwrap();
    assert_eq!(out.digest(), &img.digest);
    assert_eq!(seen(&t.sp), budget(&[("GET manifest:tag", 1), ("GET blob", 3)]));
    assert_eq!(
        seen(&t.dp),
        budget(&NEW_IMAGE_AT_TARGET),
        "12 target requests for a new image of 3 blobs"
    );

    // The same again: present; the tag read is both the check and the verification.
    let out = engine
        .replicate(&task(&format!("{src}/app:v1"), &format!("{dst}/mirror/a")))
        .await
        .unwrap();
    assert!(matches!(out, Outcome::AlreadyPresent { .. }), "{out:?}");
    assert_eq!(seen(&t.sp), budget(&[("GET manifest:tag", 1)]));
    assert_eq!(
        seen(&t.dp),
        budget(&[("HEAD manifest@digest", 1), ("GET manifest:tag", 1)])
    );

    // Into another repository of the same target: every blob is mounted without a HEAD.
    let out = engine
        .replicate(&task(&format!("{src}/app:v1"), &format!("{dst}/mirror/b")))
        .await
        .unwrap();
    assert_eq!(out.stats().blobs_mounted, 3);
    assert_eq!(seen(&t.sp), budget(&[("GET manifest:tag", 1)]));
    assert_eq!(
        seen(&t.dp),
        budget(&[
            ("HEAD manifest@digest", 1),
            ("POST mount", 3),
            ("PUT manifest:tag", 1),
            ("GET manifest:tag", 1),
        ])
    );
}

#[tokio::test]
async fn new_index_pushes_children_unchecked_and_the_root_under_its_tag_issue_16() {
    support::registry_bin_or_skip!();
    let t = Setup::start().await;
    let (idx, _) = image::push_two_platform_index(&t.s, "app", "multi", 5).await;
    let engine = t.engine(no_refs());
    t.clear();
    let out = engine
        .replicate(&task(
            &format!("{}/app:multi", t.sp.host()),
            &format!("{}/mirror/app", t.dp.host()),
        ))
        .await
        .unwrap();
    assert_eq!(out.digest(), &idx.digest);
    // Two platforms: config + 2 layers, config + 1 layer.
    assert_eq!(
        seen(&t.sp),
        budget(&[("GET manifest:tag", 1), ("GET manifest@digest", 2), ("GET blob", 5)])
    );
    assert_eq!(
        seen(&t.dp),
        budget(&[
            ("HEAD manifest@digest", 1),
            ("HEAD blob", 5),
            ("POST upload", 5),
            ("PUT upload", 5),
            ("PUT manifest@digest", 2),
            ("PUT manifest:tag", 1),
            ("GET manifest:tag", 1),
        ])
    );
}

#[tokio::test]
async fn with_referrers_on_the_tag_waits_for_signatures_but_a_bare_image_still_goes_up_by_tag() {
    support::registry_bin_or_skip!();
    let t = Setup::start().await;
    let bare = three_blobs(&t.s, "bare", 11).await;
    let signed = three_blobs(&t.s, "signed", 21).await;
    let sig = image::push_cosign_signature(&t.s, "app", &signed).await;
    let engine = t.engine(Options::default());
    t.clear();
    let (src, dst) = (t.sp.host(), t.dp.host());

    // No referrer: one tag listing and one referrers query more at the source (the
    // registry has no referrers API, remembered per host), the target as without them.
    let out = engine
        .replicate(&task(&format!("{src}/app:bare"), &format!("{dst}/mirror/app")))
        .await
        .unwrap();
    assert_eq!(out.digest(), &bare.digest);
    assert_eq!(
        seen(&t.sp),
        budget(&[
            ("GET manifest:tag", 1),
            ("GET blob", 3),
            ("GET tags", 1),
            ("GET referrers", 1)
        ])
    );
    assert_eq!(seen(&t.dp).len(), 12);

    // A signed image: the root goes up by digest, the signature and its tag, and only
    // then the image's tag.
    engine
        .replicate(&task(&format!("{src}/app:signed"), &format!("{dst}/mirror/app")))
        .await
        .unwrap();
    let order: Vec<String> =
        t.dp.requests()
            .iter()
            .filter(|r| r.method.as_str() == "PUT" && r.path_and_query.contains("/manifests/"))
            .map(|r| r.path_and_query.rsplit('/').next().unwrap().to_string())
            .collect();
    let sig_tag = format!("{}.sig", signed.digest.fallback_tag());
    assert_eq!(
        order,
        vec![
            signed.digest.to_string(),
            sig.digest.to_string(),
            sig_tag,
            "signed".to_string()
        ],
        "the image's tag is written last"
    );
}

/// A promotion edge: `app@digest` from the source to `promoted/app:tag` at the target.
fn promotion_edge(t: &Setup, digest: &regrelay::oci::Digest, tag: &str) -> Item {
    Item::Digest {
        source: Repo::new(t.sp.host(), "app"),
        digest: digest.clone(),
        target: Repo::new(t.dp.host(), "promoted/app"),
        tag: Some(tag.into()),
        require: Vec::new(),
    }
}

fn executor(engine: Replicator<RegistrySet>) -> Executor<RegistrySet> {
    let memory = Memory {
        ttl: Duration::ZERO,
        max_entries: 0,
    };
    Executor::new(Arc::new(engine), memory)
}

#[tokio::test]
async fn executor_tag_items_read_nothing_twice_issue_16() {
    support::registry_bin_or_skip!();
    let t = Setup::start().await;
    let v1 = three_blobs(&t.s, "v1", 31).await;
    let v2 = three_blobs(&t.s, "v2", 41).await;
    let exec = executor(t.engine(no_refs()));
    t.clear();
    let source = Repo::new(t.sp.host(), "app");
    let target = Repo::new(t.dp.host(), "mirror/app");
    let tag_item = |tag: &str, hint: Hint| Item::Tag {
        source: source.clone(),
        source_tag: tag.into(),
        seen: None,
        target: target.clone(),
        tag: tag.into(),
        hint,
        require: Vec::new(),
    };

    // An event for a new tag: the source tag re-resolved (HEAD), the target tag looked at
    // (HEAD), then the copy writes the tag itself: no second look, no second write.
    let r = exec.execute(&tag_item("v1", Hint::default()), "r").await.unwrap();
    assert!(matches!(r, ItemOutcome::Done(Done::Copied { .. })), "{r:?}");
    assert_eq!(
        seen(&t.sp),
        budget(&[("HEAD manifest:tag", 1), ("GET manifest@digest", 1), ("GET blob", 3)])
    );
    assert_eq!(
        seen(&t.dp),
        budget(&[&[("HEAD manifest:tag", 1)], &NEW_IMAGE_AT_TARGET[..]].concat())
    );

    // The same event again: the tag is in place; 2 requests.
    let r = exec.execute(&tag_item("v1", Hint::default()), "r").await.unwrap();
    assert_eq!(r, ItemOutcome::Done(Done::InPlace));
    assert_eq!(seen(&t.sp), budget(&[("HEAD manifest:tag", 1)]));
    assert_eq!(seen(&t.dp), budget(&[("HEAD manifest:tag", 1)]));

    // A sync's repair of a tag it saw missing, with the source's tag list: the source
    // tag is re-resolved by the GET the copy needs; the target tag is not looked at.
    let hint = Hint {
        target: Some(None),
        source_tags: Some(Arc::new(vec!["v1".into(), "v2".into()])),
    };
    let r = exec.execute(&tag_item("v2", hint), "r").await.unwrap();
    assert!(matches!(r, ItemOutcome::Done(Done::Copied { .. })), "{r:?}");
    assert_eq!(seen(&t.sp), budget(&[("GET manifest:tag", 1), ("GET blob", 3)]));
    assert_eq!(seen(&t.dp), budget(&NEW_IMAGE_AT_TARGET));

    // A tag moved at the target (seen by the sync at v1's digest): pointed back at v2
    // without a copy (present) and without a look before the write.
    let hint = Hint {
        target: Some(Some(v1.digest.clone())),
        source_tags: None,
    };
    let r = exec.execute(&tag_item("v2", hint.clone()), "r").await;
    // v2 is in place already, but the sync said otherwise: the write is idempotent.
    assert!(matches!(r, Ok(ItemOutcome::Done(Done::TagWritten))), "{r:?}");
    assert_eq!(seen(&t.sp), budget(&[("GET manifest:tag", 1)]));
    assert_eq!(
        seen(&t.dp),
        budget(&[
            ("HEAD manifest@digest", 1),
            ("PUT manifest:tag", 1),
            ("GET manifest:tag", 1)
        ])
    );
    let got =
        t.s.get_manifest("app", &regrelay::oci::Locator::Tag("v2".into()))
            .await
            .unwrap();
    assert_eq!(got.digest, v2.digest);
}

/// A digest with a tag (a promotion edge, a watch's target tag): the copy writes the tag
/// itself, as for a tag item, instead of copying by digest and then writing the tag
/// (16 target requests for a new image before, 12 now).
#[tokio::test]
async fn executor_digest_items_with_a_tag_write_it_with_the_copy() {
    support::registry_bin_or_skip!();
    let t = Setup::start().await;
    let v1 = three_blobs(&t.s, "v1", 51).await;
    let exec = executor(t.engine(no_refs()));
    t.clear();
    let item = |tag: &str| promotion_edge(&t, &v1.digest, tag);

    // Into an empty repository: the root goes up under the tag (looked at first: nothing
    // says it is absent), read back once.
    let r = exec.execute(&item("1.0"), "r").await.unwrap();
    assert!(matches!(r, ItemOutcome::Done(Done::Copied { .. })), "{r:?}");
    assert_eq!(seen(&t.sp), budget(&[("GET manifest@digest", 1), ("GET blob", 3)]));
    assert_eq!(
        seen(&t.dp),
        budget(&NEW_IMAGE_AT_TARGET),
        "12 target requests, as for a tag item"
    );

    // In place: the source root read by digest (the copy's first step), the digest's
    // HEAD and the tag's read, which is also the verification.
    let r = exec.execute(&item("1.0"), "r").await.unwrap();
    assert!(matches!(r, ItemOutcome::Done(Done::InPlace)), "{r:?}");
    assert_eq!(seen(&t.sp), budget(&[("GET manifest@digest", 1)]));
    assert_eq!(
        seen(&t.dp),
        budget(&[("HEAD manifest@digest", 1), ("GET manifest:tag", 1)])
    );

    // Another tag on the same digest: present, so only the tag is looked at, written
    // and read back.
    let r = exec.execute(&item("stable"), "r").await.unwrap();
    assert!(matches!(r, ItemOutcome::Done(Done::TagWritten)), "{r:?}");
    assert_eq!(seen(&t.sp), budget(&[("GET manifest@digest", 1)]));
    assert_eq!(
        seen(&t.dp),
        budget(&[
            ("HEAD manifest@digest", 1),
            ("GET manifest:tag", 2),
            ("PUT manifest:tag", 1),
        ])
    );
}

/// Several tags onto one digest (a release's `1.2.3`, `1.2`, `latest`; a promotion's tags
/// of one image): once the digest is copied and remembered, each further tag is its look,
/// its PUT from the bytes the copy verified (no GET of the manifest first) and its
/// read-back.
#[tokio::test]
async fn further_tags_onto_a_copied_digest_put_the_bytes_it_verified() {
    support::registry_bin_or_skip!();
    let t = Setup::start().await;
    let v1 = three_blobs(&t.s, "v1", 61).await;
    let memory = Memory {
        ttl: Duration::from_secs(600),
        max_entries: 1000,
    };
    let exec = Executor::new(Arc::new(t.engine(no_refs())), memory);
    t.clear();
    let item = |tag: &str| promotion_edge(&t, &v1.digest, tag);
    let r = exec.execute(&item("1.2.3"), "r").await.unwrap();
    assert!(matches!(r, ItemOutcome::Done(Done::Copied { .. })), "{r:?}");
    t.clear();
    for tag in ["1.2", "1", "latest"] {
        let r = exec.execute(&item(tag), "r").await.unwrap();
        assert!(matches!(r, ItemOutcome::Done(Done::TagWritten)), "{tag}: {r:?}");
        assert_eq!(seen(&t.sp), budget(&[]), "{tag}");
        assert_eq!(
            seen(&t.dp),
            budget(&[
                ("HEAD manifest@digest", 1),
                ("HEAD manifest:tag", 2),
                ("PUT manifest:tag", 1),
            ]),
            "{tag}: present check, look, PUT, read-back"
        );
    }
    let d = image::client(&t._dst.host(), regrelay::config::Auth::Anonymous);
    for tag in ["1.2.3", "1.2", "1", "latest"] {
        let got = d
            .get_manifest("promoted/app", &regrelay::oci::Locator::Tag(tag.into()))
            .await
            .unwrap();
        assert_eq!(got.digest, v1.digest, "{tag}");
    }
}
