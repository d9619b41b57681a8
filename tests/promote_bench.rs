//! Benchmark of `regrelay promote` (issue 12; results in docs/benchmarks.md): a manifest
//! of 1,000 edges (100 images × 10 tags). In place: wall time and registry requests from
//! the registries' access logs (goal: at most 2.1 requests per edge, under 15 s). Then the
//! same manifest against an empty destination, beside one `skopeo copy` per image.
//!
//! Ignored by default (it pushes 100 images): `cargo test --release --test promote_bench -- --ignored --nocapture`.

mod support;

use std::time::Duration;

use tokio::time::Instant;

use regrelay::config::Auth;
use regrelay::oci::Locator;
use regrelay::registry::Registry;
use support::TestRegistry;
use support::image;

const BIN: &str = env!("CARGO_BIN_EXE_regrelay");
const IMAGES: usize = 100;
const TAGS: usize = 10;

fn requests(reg: &TestRegistry) -> usize {
    ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]
        .iter()
        .map(|m| reg.access_log(m, "/v2/").len())
        .sum()
}

async fn promote(args: &[&str]) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let o = tokio::process::Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .output()
        .await
        .unwrap();
    (o, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: pushes 100 images"]
async fn thousand_edges_in_place_and_to_an_empty_destination() {
    support::registry_bin_or_skip!();
    let (src, dst, empty) = (
        TestRegistry::start().await,
        TestRegistry::start().await,
        TestRegistry::start().await,
    );
    let s = image::client(&src.host(), Auth::Anonymous);
    let d = image::client(&dst.host(), Auth::Anonymous);
    let mut images = String::new();
    for i in 0..IMAGES {
        let name = format!("img{i:03}");
        let p = image::push_simple(&s, &format!("staging/{name}"), "t0", 4_000, i as u64).await;
        image::push_simple(&d, &format!("prod/{name}"), "t0", 4_000, i as u64).await;
        let tags: Vec<String> = (0..TAGS).map(|t| format!("\"t{t}\"")).collect();
        for t in 1..TAGS {
            for (reg, repo) in [(&s, format!("staging/{name}")), (&d, format!("prod/{name}"))] {
                reg.put_manifest(&repo, &Locator::Tag(format!("t{t}")), &p.media_type, p.bytes.clone())
                    .await
                    .unwrap();
            }
        }
        images += &format!("- name: {name}\n  dmap:\n    \"{}\": [{}]\n", p.digest, tags.join(", "));
    }
    let dir = tempfile::tempdir().unwrap();
    let manifest = |dst: &str| {
        let f = dir.path().join(format!("{}.yaml", dst.replace([':', '.'], "_")));
        let text = format!(
            "registries:\n- name: {}/staging\n  src: true\n- name: {dst}/prod\nimages:\n{images}",
            src.host()
        );
        std::fs::write(&f, text).unwrap();
        f
    };
    let edges = (IMAGES * TAGS) as f64;

    // In place: the plan (--check).
    let f = manifest(&dst.host());
    let f = f.to_str().unwrap();
    let before = (requests(&src), requests(&dst));
    let (o, took) = promote(&["promote", "--manifest", f, "--check"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let n = requests(&src) - before.0 + requests(&dst) - before.1;
    println!(
        "in place, --check: {took:.2?}, {n} requests ({:.2} per edge; source {}, destination {})",
        n as f64 / edges,
        requests(&src) - before.0,
        requests(&dst) - before.1
    );

    // In place with --confirm: every edge verified (and repaired) through the executor.
    let before = (requests(&src), requests(&dst));
    let (o, took) = promote(&["promote", "--manifest", f, "--confirm", "--output", "json"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let n = requests(&src) - before.0 + requests(&dst) - before.1;
    println!(
        "in place, --confirm: {took:.2?}, {n} requests ({:.2} per edge)",
        n as f64 / edges
    );

    // Empty destination.
    let f = manifest(&empty.host());
    let (o, took) = promote(&[
        "promote",
        "--manifest",
        f.to_str().unwrap(),
        "--confirm",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    println!(
        "empty destination, --confirm: {took:.2?}, {} destination requests",
        requests(&empty)
    );

    // One skopeo copy per image (the first tag only; skopeo copies one tag per run).
    if let Some(skopeo) = support::require_bin("TEST_SKOPEO_BIN", "skopeo") {
        let target = TestRegistry::start().await;
        let started = Instant::now();
        for i in 0..IMAGES {
            let o = tokio::process::Command::new(&skopeo)
                .args([
                    "copy",
                    "--all",
                    "--src-tls-verify=false",
                    "--dest-tls-verify=false",
                    &format!("docker://{}/staging/img{i:03}:t0", src.host()),
                    &format!("docker://{}/prod/img{i:03}:t0", target.host()),
                ])
                .output()
                .await
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        println!("skopeo copy per image (one tag each): {:.2?}", started.elapsed());
        let t = image::client(&target.host(), Auth::Anonymous);
        assert!(
            t.head_manifest("prod/img000", &Locator::Tag("t0".into()))
                .await
                .unwrap()
                .is_some()
        );
    }
}
