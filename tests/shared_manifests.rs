//! Copies that share manifests in one target repository: an index and its platform
//! images, or indexes listing the same image, copied at once by one engine into the same
//! repository of a real `docker-registry` (distribution 2.8). distribution rewrites a
//! manifest's link on every PUT of it, and an index PUT that reads a child's link while
//! another copy re-PUTs that child is refused (`400 MANIFEST_BLOB_UNKNOWN` /
//! `DIGEST_INVALID`): the engine pushes each manifest once per repository, and never
//! re-PUTs one while an index listing it goes up.

mod support;

use std::sync::Arc;

use regrelay::oci::{self, Digest, Locator};
use regrelay::registry::{HttpRegistry, Registry as _, RegistrySet};
use regrelay::replicate::{Options, Replicator};
use support::image::{self, Pushed, anon, task};
use support::{FaultProxy, TestRegistry};

fn no_refs() -> Options {
    Options {
        referrers: false,
        ..Options::default()
    }
}

/// Three platform images and five indexes over them (every pair, the three in two
/// orders, one alone), pushed to `app` at the source.
async fn shared_graph(s: &HttpRegistry, seed: u64) -> (Vec<Pushed>, Vec<Pushed>) {
    let mut images = Vec::new();
    for (i, arch) in ["amd64", "arm64", "s390x"].into_iter().enumerate() {
        let seed = seed + 10 * i as u64;
        let layers = vec![image::random_bytes(seed, 20_000), image::random_bytes(seed + 1, 5_000)];
        let img = image::push_image(s, "app", None, layers, false, seed).await;
        images.push((img, arch));
    }
    let lists: [&[usize]; 5] = [&[0, 1], &[1, 2], &[0, 1, 2], &[2, 1, 0], &[0]];
    let mut indexes = Vec::new();
    for list in lists {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": oci::OCI_INDEX,
            "manifests": list.iter().map(|&i| images[i].0.descriptor(Some(("linux", images[i].1)))).collect::<Vec<_>>(),
        });
        indexes.push(image::push_manifest(s, "app", None, oci::OCI_INDEX, body).await);
    }
    (images.into_iter().map(|(p, _)| p).collect(), indexes)
}

/// Copy every index and every image (`copies` times each, all at once) from `src`'s
/// `app` to `dst`'s `repo`, with the tag `tag(name, n)` names for each (none: by digest).
/// Returns the errors.
async fn copy_all_at_once(
    engine: &Arc<Replicator<RegistrySet>>,
    (src, dst, repo): (&str, &str, &str),
    manifests: &[(String, Digest)],
    copies: usize,
    tag: fn(&str, usize) -> Option<String>,
) -> Vec<String> {
    let mut handles = Vec::new();
    for n in 0..copies {
        for (name, digest) in manifests {
            let e = engine.clone();
            let dest = match tag(name, n) {
                Some(t) => format!("{dst}/{repo}:{t}"),
                None => format!("{dst}/{repo}"),
            };
            let t = task(&format!("{src}/app@{digest}"), &dest);
            let name = name.clone();
            handles.push(tokio::spawn(async move {
                e.replicate(&t).await.map_err(|err| format!("{name} (copy {n}): {err}"))
            }));
        }
    }
    let mut errors = Vec::new();
    for h in handles {
        if let Err(e) = h.await.unwrap() {
            errors.push(e);
        }
    }
    errors
}

fn named(images: &[Pushed], indexes: &[Pushed]) -> Vec<(String, Digest)> {
    let imgs = images
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("image{i}"), p.digest.clone()));
    let idxs = indexes
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("index{i}"), p.digest.clone()));
    // Indexes first, so their children race the images' own copies.
    idxs.chain(imgs).collect()
}

/// Every manifest is at the target, and reads back (by digest) as the source's bytes.
async fn assert_at_target(d: &HttpRegistry, repo: &str, all: &[&Pushed]) {
    for p in all {
        let got = d
            .get_manifest(repo, &Locator::Digest(p.digest.clone()))
            .await
            .unwrap_or_else(|e| panic!("{repo}@{} at the target: {e}", p.digest));
        assert_eq!(got.bytes, p.bytes, "{repo}@{}", p.digest);
    }
}

#[tokio::test]
async fn concurrent_copies_sharing_children_put_each_manifest_once_per_repository() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), regrelay::config::Auth::Anonymous);
    let d = image::client(&dst.host(), regrelay::config::Auth::Anonymous);
    let dp = FaultProxy::start(&dst.url()).await;
    let (images, indexes) = shared_graph(&s, 100).await;
    let manifests = named(&images, &indexes);
    let engine = Arc::new(image::engine(vec![anon(&src.host()), anon(&dp.host())], no_refs()));
    let all: Vec<&Pushed> = images.iter().chain(&indexes).collect();

    for round in 0..3 {
        let repo = format!("mirror/r{round}");
        dp.clear_log();
        let errors = copy_all_at_once(&engine, (&src.host(), &dp.host(), &repo), &manifests, 3, |_, _| None).await;
        assert!(
            errors.is_empty(),
            "round {round}: {} copies failed: {errors:#?}",
            errors.len()
        );
        assert_at_target(&d, &repo, &all).await;
        // By digest only (no tags), so every PUT of a manifest names its digest: each
        // goes up exactly once, however many copies of it and of indexes listing it ran.
        let puts = dp.requests();
        for (name, digest) in &manifests {
            let path = format!("/v2/{repo}/manifests/{digest}");
            let n = puts
                .iter()
                .filter(|r| r.method == "PUT" && r.path_and_query == path)
                .count();
            assert_eq!(n, 1, "round {round}: {name} was PUT {n} times into {repo}");
        }
    }
}

#[tokio::test]
async fn concurrent_tagged_copies_sharing_children_all_succeed() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), regrelay::config::Auth::Anonymous);
    let d = image::client(&dst.host(), regrelay::config::Auth::Anonymous);
    let (images, indexes) = shared_graph(&s, 200).await;
    let manifests = named(&images, &indexes);
    let rounds: usize = std::env::var("SHARED_MANIFEST_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let all: Vec<&Pushed> = images.iter().chain(&indexes).collect();
    let mut failed_rounds = Vec::new();
    for round in 0..rounds {
        // A fresh engine and repository per round: nothing remembered, nothing present.
        let engine = Arc::new(image::engine(vec![anon(&src.host()), anon(&dst.host())], no_refs()));
        let repo = format!("mirror/t{round}");
        // Tagged copies push the root under its tag and write further tags afterwards:
        // the tag writes are manifest PUTs too.
        let errors = copy_all_at_once(&engine, (&src.host(), &dst.host(), &repo), &manifests, 2, |name, n| {
            Some(format!("{name}-{n}"))
        })
        .await;
        if !errors.is_empty() {
            failed_rounds.push((round, errors));
            continue;
        }
        assert_at_target(&d, &repo, &all).await;
    }
    assert!(
        failed_rounds.is_empty(),
        "{} of {rounds} rounds had failed copies: {failed_rounds:#?}",
        failed_rounds.len()
    );
}

#[tokio::test]
async fn a_remembered_child_deleted_behind_the_engines_back_is_pushed_again() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), regrelay::config::Auth::Anonymous);
    let d = image::client(&dst.host(), regrelay::config::Auth::Anonymous);
    let (images, indexes) = shared_graph(&s, 300).await;
    let engine = image::engine(vec![anon(&src.host()), anon(&dst.host())], no_refs());
    let (src_host, dst_host) = (src.host(), dst.host());
    // index0 lists images 0 and 1; index1 lists images 1 and 2.
    engine
        .replicate(&task(
            &format!("{src_host}/app@{}", indexes[0].digest),
            &format!("{dst_host}/mirror/app"),
        ))
        .await
        .unwrap();
    // Someone else deletes image 1 from the target: the engine still remembers it there.
    d.delete_manifest("mirror/app", &Locator::Digest(images[1].digest.clone()))
        .await
        .unwrap();
    let out = engine
        .replicate(&task(
            &format!("{src_host}/app@{}", indexes[1].digest),
            &format!("{dst_host}/mirror/app"),
        ))
        .await
        .expect("the index is refused once, then its remembered child is pushed again");
    assert_eq!(out.digest(), &indexes[1].digest);
    assert_at_target(&d, "mirror/app", &[&images[1], &images[2], &indexes[1]]).await;
}
