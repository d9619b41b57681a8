//! `regrelay promote` and `regrelay snapshot` (issue 12) against real registries: every
//! edge kind, scoped errors vs `--fail-fast`, `--check` exit codes, thin manifest
//! directories, multi-arch images with signatures, repair of a partial promotion, errors
//! naming file and line, offline lint, and the snapshot → manifest → promote → snapshot
//! round trip.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use regrelay::config::Auth;
use regrelay::oci::{Digest, Locator};
use regrelay::registry::{HttpRegistry, Registry};
use support::image::{self, Pushed};
use support::{FaultProxy, Rule, TestRegistry};

use support::cli::{run, text};

/// The JSON rows of `--output json`, as (image, tag, action, result).
fn rows(o: &Output) -> Vec<(String, String, String, String)> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let s = |k: &str| v[k].as_str().unwrap_or("-").to_string();
            assert!(v["bytes"].is_u64() && v["duration_secs"].is_f64(), "{l}");
            (s("image"), s("tag"), s("action"), s("result"))
        })
        .collect()
}

fn row<'a>(rows: &'a [(String, String, String, String)], image: &str, tag: &str) -> (&'a str, &'a str) {
    let r = rows
        .iter()
        .find(|r| r.0 == image && r.1 == tag)
        .unwrap_or_else(|| panic!("no row {image}:{tag} in {rows:?}"));
    (&r.2, &r.3)
}

/// A `dmap` entry list as cip writes it.
fn images_yaml(entries: &[(&str, &Digest, &[&str])]) -> String {
    let mut out = String::new();
    let mut last = "";
    for (name, d, tags) in entries {
        if *name != last {
            out += &format!("- name: {name}\n  dmap:\n");
            last = name;
        }
        let tags: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
        out += &format!("    \"{d}\": [{}]\n", tags.join(", "));
    }
    out
}

fn registries_yaml(src: &str, dst: &str) -> String {
    format!(
        "registries:\n- name: {src}\n  src: true\n- name: {dst}\n  service-account: promoter@example.iam.gserviceaccount.com\n"
    )
}

fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    p
}

async fn tag_of(reg: &HttpRegistry, repo: &str, tag: &str) -> Option<Digest> {
    reg.head_manifest(repo, &Locator::Tag(tag.into()))
        .await
        .unwrap()
        .and_then(|h| h.digest)
}

fn unknown_digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
}

struct Pair {
    src: TestRegistry,
    dst: TestRegistry,
    s: HttpRegistry,
    d: HttpRegistry,
}

async fn pair() -> Pair {
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let d = image::client(&dst.host(), Auth::Anonymous);
    Pair { src, dst, s, d }
}

impl Pair {
    fn names(&self) -> (String, String) {
        (
            format!("{}/staging", self.src.host()),
            format!("{}/prod", self.dst.host()),
        )
    }
}

#[tokio::test]
async fn every_edge_kind_is_planned_and_errors_hold_only_their_image() {
    support::registry_bin_or_skip!();
    let p = pair().await;
    let (sn, dn) = p.names();
    let copy = image::push_simple(&p.s, "staging/copy", "v1", 20_000, 1).await;
    let tag = image::push_simple(&p.s, "staging/tag", "v2", 20_000, 2).await;
    image::push_image(&p.d, "prod/tag", None, vec![image::random_bytes(2, 20_000)], false, 2).await;
    let skip = image::push_simple(&p.s, "staging/skip", "v3", 20_000, 3).await;
    image::push_simple(&p.d, "prod/skip", "v3", 20_000, 3).await;
    let moved = image::push_simple(&p.s, "staging/move", "v5", 20_000, 5).await;
    image::push_simple(&p.d, "prod/move", "v5", 20_000, 55).await;
    let o1 = image::push_simple(&p.s, "staging/over", "a", 10_000, 6).await;
    let o2 = image::push_simple(&p.s, "staging/over", "b", 10_000, 7).await;
    let lost = unknown_digest('4');
    let lost_ok = image::push_simple(&p.s, "staging/lost", "ok", 10_000, 4).await;
    let m = format!(
        "{}images:\n{}",
        registries_yaml(&sn, &dn),
        images_yaml(&[
            ("copy", &copy.digest, &["v1", "stable"]),
            ("lost", &lost, &["v4"]),
            ("lost", &lost_ok.digest, &[]),
            ("move", &moved.digest, &["v5"]),
            ("over", &o1.digest, &["same"]),
            ("over", &o2.digest, &["same", "other"]),
            ("skip", &skip.digest, &["v3"]),
            ("tag", &tag.digest, &["v2"]),
        ])
    );
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "promoter-manifest.yaml", &m);
    let f = file.to_str().unwrap();

    // Dry run (the default): nothing written; errors give exit 1.
    let o = run(&["promote", "--manifest", f, "--output", "json"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("service-account"),
        "{}",
        text(&o)
    );
    let r = rows(&o);
    assert_eq!(row(&r, "copy", "v1"), ("copy", "pending"));
    assert_eq!(row(&r, "tag", "v2"), ("tag", "pending"));
    assert_eq!(row(&r, "skip", "v3"), ("skip", "in-place"));
    assert_eq!(row(&r, "lost", "v4"), ("lost", "error"));
    assert_eq!(row(&r, "lost", "-"), ("copy", "held"), "scoped to the image");
    assert_eq!(row(&r, "move", "v5"), ("tag-move", "error"));
    assert_eq!(row(&r, "over", "same"), ("overlap", "error"));
    assert_eq!(row(&r, "over", "other"), ("copy", "held"));
    assert_eq!(tag_of(&p.d, "prod/copy", "v1").await, None, "a dry run writes nothing");

    // --confirm promotes everything outside the failed images; never deletes or moves.
    let o = run(&["promote", "--manifest", f, "--confirm", "--output", "json"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = rows(&o);
    // One of the two tags copies; the other joins that copy (single flight) or follows it.
    let results = [row(&r, "copy", "v1").1, row(&r, "copy", "stable").1];
    assert!(results.contains(&"copied"), "{results:?}");
    assert!(
        results.iter().all(|r| ["copied", "tagged", "verified"].contains(r)),
        "{results:?}"
    );
    assert_eq!(row(&r, "tag", "v2"), ("tag", "tagged"));
    assert_eq!(row(&r, "skip", "v3"), ("skip", "verified"));
    assert_eq!(tag_of(&p.d, "prod/copy", "stable").await, Some(copy.digest.clone()));
    assert_eq!(tag_of(&p.d, "prod/tag", "v2").await, Some(tag.digest.clone()));
    assert_ne!(tag_of(&p.d, "prod/move", "v5").await, Some(moved.digest.clone()));
    assert_eq!(tag_of(&p.d, "prod/over", "other").await, None, "held with its image");
    assert!(
        p.d.head_manifest("prod/lost", &Locator::Digest(lost_ok.digest))
            .await
            .unwrap()
            .is_none()
    );

    // With --allow-tag-moves the tag moves (to the verified digest).
    let o = run(&[
        "promote",
        "--manifest",
        f,
        "--confirm",
        "--allow-tag-moves",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(row(&rows(&o), "move", "v5"), ("tag-move", "copied"), "{}", text(&o));
    assert_eq!(tag_of(&p.d, "prod/move", "v5").await, Some(moved.digest));
    drop(p.src);
}

#[tokio::test]
async fn fail_fast_restores_all_or_nothing() {
    support::registry_bin_or_skip!();
    let p = pair().await;
    let (sn, dn) = p.names();
    let good = image::push_simple(&p.s, "staging/good", "v1", 10_000, 1).await;
    let m = format!(
        "{}images:\n{}",
        registries_yaml(&sn, &dn),
        images_yaml(&[("bad", &unknown_digest('9'), &["v1"]), ("good", &good.digest, &["v1"])])
    );
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "m.yaml", &m);
    let f = f.to_str().unwrap();
    let o = run(&[
        "promote",
        "--manifest",
        f,
        "--confirm",
        "--fail-fast",
        "--output",
        "json",
    ])
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(row(&rows(&o), "good", "v1"), ("copy", "held"));
    assert_eq!(tag_of(&p.d, "prod/good", "v1").await, None);
    let o = run(&["promote", "--manifest", f, "--confirm", "--output", "json"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(row(&rows(&o), "good", "v1"), ("copy", "copied"));
    assert_eq!(tag_of(&p.d, "prod/good", "v1").await, Some(good.digest));
    drop(p.src);
}

#[tokio::test]
async fn check_exit_codes_multi_arch_signatures_and_repair_of_a_partial_promotion() {
    support::registry_bin_or_skip!();
    let p = pair().await;
    let (sn, dn) = p.names();
    let (idx, children) = image::push_two_platform_index(&p.s, "staging/app", "v1", 10).await;
    let sig = image::push_cosign_signature(&p.s, "staging/app", &idx).await;
    let referrer = image::push_referrer(&p.s, "staging/app", &idx, "application/vnd.example.sbom", 11).await;
    let m = format!(
        "{}images:\n{}",
        registries_yaml(&sn, &dn),
        images_yaml(&[("app", &idx.digest, &["v1", "latest"])])
    );
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "m.yaml", &m);
    let f = f.to_str().unwrap();

    // Partial state: the index is there and tagged, its signature and referrer are not
    // (as after a promotion whose signing step failed, promo-tools#1946).
    let src_ref = format!("{}/staging/app:v1", p.src.host());
    let o = run(&[
        "copy",
        "--no-referrers",
        &src_ref,
        &format!("{}/prod/app:v1", p.dst.host()),
    ])
    .await;
    assert!(o.status.success(), "{}", text(&o));
    let sig_tag = format!("{}.sig", idx.digest.fallback_tag());
    assert_eq!(tag_of(&p.d, "prod/app", &sig_tag).await, None);

    let o = run(&["promote", "--manifest", f, "--check"]).await;
    assert_eq!(o.status.code(), Some(2), "latest is pending: {}", text(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.starts_with("ACTION"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("tag ") && l.contains("prod/app:latest")),
        "{table}"
    );

    let o = run(&["promote", "--manifest", f, "--confirm", "--output", "json"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r = rows(&o);
    let (action, result) = row(&r, "app", "v1");
    assert_eq!(action, "skip");
    assert!(
        ["copied", "verified"].contains(&result),
        "referrers copied or joined: {result}"
    );
    // The re-run finished what was missing: the signature and the referrer.
    assert_eq!(tag_of(&p.d, "prod/app", &sig_tag).await, Some(sig.digest));
    assert!(
        p.d.head_manifest("prod/app", &Locator::Digest(referrer.digest))
            .await
            .unwrap()
            .is_some()
    );
    for c in &children {
        assert!(
            p.d.head_manifest("prod/app", &Locator::Digest(c.digest.clone()))
                .await
                .unwrap()
                .is_some()
        );
    }
    assert_eq!(tag_of(&p.d, "prod/app", "latest").await, Some(idx.digest));

    let o = run(&["promote", "--manifest", f, "--check"]).await;
    assert_eq!(o.status.code(), Some(0), "all in place: {}", text(&o));
    // Usage errors are 64.
    let o = run(&["promote", "--manifest", f, "--check", "--confirm"]).await;
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let o = run(&["promote"]).await;
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
}

#[tokio::test]
async fn thin_manifests_scope_errors_to_their_directory() {
    support::registry_bin_or_skip!();
    let p = pair().await;
    let (sn, dn) = p.names();
    let a = image::push_simple(&p.s, "staging/a", "v1", 10_000, 1).await;
    let b = image::push_simple(&p.s, "staging/b", "v1", 10_000, 2).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "manifests/team-a/promoter-manifest.yaml", &registries_yaml(&sn, &dn));
    write(
        d,
        "images/team-a/images.yaml",
        &images_yaml(&[("a", &a.digest, &["v1"])]),
    );
    write(d, "manifests/team-b/promoter-manifest.yaml", &registries_yaml(&sn, &dn));
    write(
        d,
        "images/team-b/images.yaml",
        &images_yaml(&[("b", &b.digest, &["v1"]), ("gone", &unknown_digest('7'), &["v1"])]),
    );
    let ds = d.to_str().unwrap();
    let o = run(&["promote", "--thin-manifest-dir", ds, "--confirm", "--output", "json"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = rows(&o);
    assert_eq!(row(&r, "a", "v1"), ("copy", "copied"));
    assert_eq!(row(&r, "gone", "v1"), ("lost", "error"));
    assert_eq!(row(&r, "b", "v1"), ("copy", "held"), "the whole directory is held");
    assert_eq!(tag_of(&p.d, "prod/a", "v1").await, Some(a.digest));
    assert_eq!(tag_of(&p.d, "prod/b", "v1").await, None);

    // A misplaced YAML file and a mismatched <x> are errors naming the files; nothing runs.
    write(d, "images/team-a/more-images.yaml", "- name: x\n");
    write(d, "manifests/team-c/promoter-manifest.yaml", &registries_yaml(&sn, &dn));
    write(
        d,
        "images/team-cc/images.yaml",
        &images_yaml(&[("b", &b.digest, &["v1"])]),
    );
    let contacted = || p.dst.access_log("GET", "/v2/").len() + p.dst.access_log("HEAD", "/v2/").len();
    let before = contacted();
    let o = run(&["promote", "--thin-manifest-dir", ds, "--confirm"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("images/team-a/more-images.yaml: misplaced"), "{err}");
    assert!(
        err.contains("manifests/team-c/promoter-manifest.yaml: no images/team-c/images.yaml"),
        "{err}"
    );
    assert!(
        err.contains("images/team-cc/images.yaml: no manifests/team-cc/"),
        "{err}"
    );
    assert_eq!(contacted(), before, "nothing contacted");
    drop(p.src);
}

#[tokio::test]
async fn malformed_manifests_name_file_and_line_and_lint_works_offline() {
    // No registry: lint and parse errors never touch the network.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bad = write(
        d,
        "bad.yaml",
        "registries:\n- name: gcr.io/a\n  src: true\n- name: gcr.io/b\nimages:\n- name: x\n  dmap:\n    \"sha256:abc\": [\"v1\"]\n",
    );
    let o = run(&["promote", "--manifest", bad.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let want = format!("error: {}:6: images[0].dmap: invalid digest", bad.display());
    assert!(String::from_utf8_lossy(&o.stderr).contains(&want), "{}", text(&o));
    let broken = write(d, "broken.yaml", "registries:\n- name: gcr.io/a\n  src: [true\n");
    let o = run(&["promote", "--manifest", broken.to_str().unwrap(), "--lint"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!("{}:", broken.display())),
        "{}",
        text(&o)
    );

    // The fixtures in cip's exact layout lint clean.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/promotion");
    let plain = fixtures.join("plain/promoter-manifest.yaml");
    let o = run(&["promote", "--lint", "--manifest", plain.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let thin = fixtures.join("thin");
    let o = run(&[
        "promote",
        "--lint",
        "--thin-manifest-dir",
        thin.to_str().unwrap(),
        "--output",
        "json",
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(rows(&o).len(), 5, "{}", text(&o));

    // So do the examples.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/promotion");
    let plain = examples.join("promoter-manifest.yaml");
    let o = run(&["promote", "--lint", "--manifest", plain.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&[
        "promote",
        "--lint",
        "--thin-manifest-dir",
        examples.join("thin").to_str().unwrap(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Overlaps are found offline; tag moves too, given a snapshot of the destination.
    let d1 = unknown_digest('1');
    let d2 = unknown_digest('2');
    let m = write(
        d,
        "m.yaml",
        &format!(
            "{}images:\n{}",
            registries_yaml("gcr.io/a", "gcr.io/b"),
            images_yaml(&[("x", &d1, &["v1"]), ("y", &d1, &["v1"])])
        ),
    );
    let snap = write(
        d,
        "snap.yaml",
        &images_yaml(&[("x", &d2, &["v1"]), ("y", &d1, &["v1"])]),
    );
    let (m, snap) = (m.to_str().unwrap(), snap.to_str().unwrap());
    let o = run(&["promote", "--lint", "--manifest", m, "--output", "json"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&[
        "promote",
        "--lint",
        "--manifest",
        m,
        "--snapshot",
        snap,
        "--output",
        "json",
    ])
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = rows(&o);
    assert_eq!(row(&r, "x", "v1"), ("tag-move", "error"));
    assert_eq!(row(&r, "y", "v1"), ("skip", "ok"));
    let over = write(
        d,
        "over.yaml",
        &format!(
            "{}images:\n{}",
            registries_yaml("gcr.io/a", "gcr.io/b"),
            images_yaml(&[("x", &d1, &["v1"]), ("x", &d2, &["v1"])])
        ),
    );
    let o = run(&["promote", "--lint", "--manifest", over.to_str().unwrap()]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("overlap"), "{}", text(&o));
}

async fn seed_source(s: &HttpRegistry) -> (Pushed, Pushed) {
    let (idx, _) = image::push_two_platform_index(s, "staging/web", "1.0", 20).await;
    image::push_cosign_signature(s, "staging/web", &idx).await;
    s.put_manifest(
        "staging/web",
        &Locator::Tag("latest".into()),
        &idx.media_type,
        idx.bytes.clone(),
    )
    .await
    .unwrap();
    let tool = image::push_simple(s, "staging/tools/cli", "v2", 5_000, 21).await;
    image::push_simple(s, "other/ignored", "v1", 5_000, 22).await;
    (idx, tool)
}

#[tokio::test]
async fn snapshot_round_trip_through_promotion() {
    support::registry_bin_or_skip!();
    let p = pair().await;
    let (sn, dn) = p.names();
    let (idx, tool) = seed_source(&p.s).await;

    // Snapshot of the staging prefix, from the catalog.
    let o = run(&["snapshot", &sn]).await;
    assert!(o.status.success(), "{}", text(&o));
    let snap = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(snap.starts_with("- name: tools/cli\n"), "sorted: {snap}");
    assert!(snap.contains("- name: web\n") && !snap.contains("ignored"), "{snap}");
    assert!(
        snap.contains(&format!("\"{}\": [\"1.0\", \"latest\"]", idx.digest)),
        "{snap}"
    );
    assert_eq!(snap.matches("\": []").count(), 2, "two untagged children: {snap}");
    let o = run(&["snapshot", &sn, "--minimal"]).await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).matches("\": []").count(),
        0,
        "{}",
        text(&o)
    );
    let o = run(&["snapshot", &sn, "--repository", "tools/cli", "--format", "csv"]).await;
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("tools/cli@{d},tools/cli:v2\n", d = tool.digest),
        "{}",
        text(&o)
    );

    // The snapshot as a thin manifest's images.yaml, promoted to an empty registry.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "manifests/web/promoter-manifest.yaml",
        &registries_yaml(&sn, &dn),
    );
    write(dir.path(), "images/web/images.yaml", &snap);
    let ds = dir.path().to_str().unwrap();
    let o = run(&["promote", "--thin-manifest-dir", ds, "--confirm"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&["snapshot", &dn]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), snap, "identical snapshots");
    let o = run(&["promote", "--thin-manifest-dir", ds, "--check"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[tokio::test]
async fn config_credentials_and_a_failed_copy_fails_only_its_image() {
    support::registry_bin_or_skip!();
    let src = TestRegistry::start().await;
    let proxy = FaultProxy::start(&src.url()).await;
    let dst = TestRegistry::start_htpasswd("promoter", "s3cret").await;
    let s = image::client(&src.host(), Auth::Anonymous);
    let broken = image::push_simple(&s, "staging/broken", "v1", 10_000, 1).await;
    let fine = image::push_simple(&s, "staging/fine", "v1", 10_000, 2).await;
    let body: serde_json::Value = serde_json::from_slice(&broken.bytes).unwrap();
    let layer = body["layers"][0]["digest"].as_str().unwrap().to_string();
    proxy.add_rule(Rule::status(404).path_contains(layer));

    let (sn, dn) = (format!("{}/staging", proxy.host()), format!("{}/prod", dst.host()));
    let dir = tempfile::tempdir().unwrap();
    let m = format!(
        "{}images:\n{}",
        registries_yaml(&sn, &dn),
        images_yaml(&[
            ("broken", &broken.digest, &["v1", "v2"]),
            ("fine", &fine.digest, &["v1"])
        ])
    );
    let f = write(dir.path(), "m.yaml", &m);
    let f = f.to_str().unwrap();

    // Without credentials the destination refuses the inventory: every edge is in error,
    // nothing is written.
    let o = run(&["promote", "--manifest", f, "--confirm", "--output", "json"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(rows(&o).iter().all(|r| r.2 == "error"), "{}", text(&o));

    // With the regrelay config's [registries], the destination is reachable; the image whose
    // blob cannot be read fails alone.
    let pw = write(dir.path(), "pw", "s3cret");
    let cfg = write(
        dir.path(),
        "regrelay.toml",
        &format!(
            r#"[source]
kind = "file"
path = "/dev/null"

[registries."{src}"]

[registries."{dst}"]
auth = {{ kind = "basic", username = "promoter", password_file = "{pw}" }}

[[rules]]
name = "unused"
source_registry = "{src}"
repository = "**"
[[rules.targets]]
registry = "{dst}"
repository = "{{repository}}"
"#,
            src = proxy.host(),
            dst = dst.host(),
            pw = pw.display()
        ),
    );
    let o = run(&[
        "promote",
        "--manifest",
        f,
        "--confirm",
        "--output",
        "json",
        "--config",
        cfg.to_str().unwrap(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r = rows(&o);
    assert_eq!(row(&r, "fine", "v1"), ("copy", "copied"), "{}", text(&o));
    let broken_results = [row(&r, "broken", "v1").1, row(&r, "broken", "v2").1];
    assert!(broken_results.contains(&"failed"), "{broken_results:?}");
    assert!(
        broken_results.iter().all(|r| ["failed", "held"].contains(r)),
        "{broken_results:?}"
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("blob"),
        "the failure names the blob: {}",
        text(&o)
    );
}

#[tokio::test]
async fn snapshot_without_a_catalog_needs_repositories() {
    support::registry_bin_or_skip!();
    let src = TestRegistry::start().await;
    let proxy = FaultProxy::start(&src.url()).await;
    let s = image::client(&src.host(), Auth::Anonymous);
    let p = image::push_simple(&s, "team/app", "v1", 5_000, 1).await;
    proxy.add_rule(Rule::status(404).path_contains("/v2/_catalog"));
    let name = format!("{}/team", proxy.host());
    let o = run(&["snapshot", &name]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no repository catalog"),
        "{}",
        text(&o)
    );
    let o = run(&["snapshot", &name, "--repository", "app", "--format", "csv"]).await;
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), format!("app@{},app:v1\n", p.digest));
    let o = run(&["snapshot", "not a registry"]).await;
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
}
