//! `regrelay sync` and the reconcile sweep against real `docker-registry` processes (issue
//! 13): images pushed before anything listened are repaired, a tag moved by hand at the
//! target is pointed back, excluded tags stay untouched, `--check` exit codes, `--prune`
//! deletes only tags gone at the source, and a pattern rule the catalog cannot enumerate
//! is a usage error naming the rule.

mod support;

use std::process::Output;
use std::time::Duration;

use regrelay::oci::Locator;
use regrelay::registry::Registry as _;
use support::image;
use support::{COPIES, Daemon, FaultProxy, LONG, PubSubEmulator, Registries, Rule, SETTLED, mirror_config, tag_digest};

const BIN: &str = env!("CARGO_BIN_EXE_regrelay");

/// The mirror config (everything of `src` to `dst/mirror/{repository}`, push and delete),
/// file source, tags `*-dev` excluded, plus `extra` lines appended to the rule.
fn config(src: &str, dst: &str, extra: &str) -> String {
    mirror_config("[source]\nkind = \"file\"", src, dst, 5)
        .replace("{ADMIN}", "127.0.0.1:0")
        .replace(
            "untagged = \"replicate\"",
            &format!("untagged = \"replicate\"\nexclude_tags = [\"*-dev\"]\n{extra}"),
        )
}

/// Run `regrelay sync --config <config> ARGS`.
async fn sync(config: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(["--log-format", "json", "sync", "--config"])
        .arg(&path)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("REGRELAY_LOG", "regrelay=warn");
    tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("sync finished in time")
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The JSON objects of a `--output json` run, sorted by (kind, target, tag).
fn objects(o: &Output) -> Vec<serde_json::Value> {
    let mut v: Vec<serde_json::Value> = stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    v.sort_by_key(|o| format!("{} {} {}", o["kind"], o["target"], o["tag"]));
    v
}

#[tokio::test]
async fn sync_repairs_old_images_points_moved_tags_back_and_leaves_excluded_tags() {
    support::registry_bin_or_skip!();
    let r = Registries::start().await;
    let (s, d) = (&r.s, &r.d);
    let v1 = image::push_simple(s, "team/app", "v1", 2_000, 1).await;
    let v2 = image::push_simple(s, "team/app", "v2", 2_000, 2).await;
    image::push_simple(s, "team/app", "v1-dev", 2_000, 3).await;
    let x = image::push_simple(s, "other/x", "latest", 2_000, 4).await;
    // At the target, by hand: v2 points elsewhere, an excluded tag holds its own image.
    let stray = image::push_simple(d, "mirror/team/app", "v2", 2_000, 5).await;
    let dev = image::push_simple(d, "mirror/team/app", "v1-dev", 2_000, 6).await;
    let cfg = config(&r.src.host(), &r.dst.host(), "");

    let check = sync(&cfg, &["--check", "--output", "json"]).await;
    assert_eq!(code(&check), 2, "{}", show(&check));
    let found = objects(&check);
    let summary: Vec<(String, String, String)> = found
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_owned(),
                o["target"].as_str().unwrap().to_owned(),
                o["tag"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let dst = r.dst.host();
    assert_eq!(
        summary,
        [
            ("missing".into(), format!("{dst}/mirror/other/x"), "latest".into()),
            ("missing".into(), format!("{dst}/mirror/team/app"), "v1".into()),
            ("moved".into(), format!("{dst}/mirror/team/app"), "v2".into()),
        ],
        "{}",
        show(&check)
    );
    assert_eq!(found[2]["digest"], v2.digest.to_string());
    assert_eq!(found[2]["target_digest"], stray.digest.to_string());

    // A dry run says the same and changes nothing.
    let dry = sync(&cfg, &["--dry-run"]).await;
    assert_eq!(code(&dry), 0, "{}", show(&dry));
    assert_eq!(stdout(&dry).lines().count(), 3, "{}", show(&dry));
    assert!(stdout(&dry).contains("moved"), "{}", show(&dry));
    assert_eq!(tag_digest(d, "mirror/team/app", "v1").await, None);

    let apply = sync(&cfg, &[]).await;
    assert_eq!(code(&apply), 0, "{}", show(&apply));
    assert!(stdout(&apply).contains(": copied"), "{}", show(&apply));
    let digest = |p: &image::Pushed| Some(p.digest.to_string());
    assert_eq!(tag_digest(d, "mirror/team/app", "v1").await, digest(&v1));
    assert_eq!(tag_digest(d, "mirror/team/app", "v2").await, digest(&v2));
    assert_eq!(tag_digest(d, "mirror/other/x", "latest").await, digest(&x));
    // Excluded: never compared, never touched.
    assert_eq!(tag_digest(d, "mirror/team/app", "v1-dev").await, digest(&dev));

    let again = sync(&cfg, &["--check"]).await;
    assert_eq!(code(&again), 0, "{}", show(&again));
    assert_eq!(stdout(&again), "", "{}", show(&again));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("3 tags checked in 2 repositories: 0 missing, 0 moved, 0 gone"),
        "{stderr}"
    );
}

#[tokio::test]
async fn in_sync_costs_two_heads_per_tag_plus_the_tag_lists() {
    support::registry_bin_or_skip!();
    let r = Registries::start().await;
    for i in 0..5 {
        image::push_simple(&r.s, "app", &format!("v{i}"), 500, 10 + i).await;
    }
    let cfg = config(&r.src.host(), &r.dst.host(), "");
    let apply = sync(&cfg, &[]).await;
    assert_eq!(code(&apply), 0, "{}", show(&apply));
    let before = (
        r.src.access_log("HEAD", "/manifests/").len(),
        r.dst.access_log("HEAD", "/manifests/").len(),
        r.src.access_log("GET", "/").len(),
        r.dst.access_log("GET", "/").len(),
    );
    let check = sync(&cfg, &["--check"]).await;
    assert_eq!(code(&check), 0, "{}", show(&check));
    let heads = (
        r.src.access_log("HEAD", "/manifests/").len() - before.0,
        r.dst.access_log("HEAD", "/manifests/").len() - before.1,
    );
    assert_eq!(heads, (5, 5), "one HEAD per tag and side");
    // GETs: the catalog and one tag list per side (plus the /v2/ ping of each client).
    let gets_src: Vec<String> = r.src.access_log("GET", "/").split_off(before.2);
    let gets_dst: Vec<String> = r.dst.access_log("GET", "/").split_off(before.3);
    assert!(
        gets_src
            .iter()
            .all(|l| !l.contains("/manifests/") && !l.contains("/blobs/")),
        "{gets_src:#?}"
    );
    assert!(gets_src.len() <= 3, "{gets_src:#?}");
    assert!(gets_dst.len() <= 2, "{gets_dst:#?}");
}

#[tokio::test]
async fn a_backfill_reads_each_source_manifest_once_and_writes_each_tag_once_issue_16() {
    support::registry_bin_or_skip!();
    let r = Registries::start().await;
    for i in 0..5 {
        image::push_simple(&r.s, "app", &format!("v{i}"), 500, 30 + i).await;
    }
    let cfg = config(&r.src.host(), &r.dst.host(), "");
    let before = (
        r.src.access_log("GET", "/manifests/").len(),
        r.src.access_log("HEAD", "/manifests/").len(),
        r.src.access_log("GET", "/tags/list").len(),
    );
    let apply = sync(&cfg, &[]).await;
    assert_eq!(code(&apply), 0, "{}", show(&apply));
    let src = (
        r.src.access_log("GET", "/manifests/").len() - before.0,
        r.src.access_log("HEAD", "/manifests/").len() - before.1,
        r.src.access_log("GET", "/tags/list").len() - before.2,
    );
    // Missing at the target: no source HEAD (the executor's GET by tag resolves each),
    // one source tag list (the sync's, handed to the copies for referrer lookups).
    assert_eq!(src, (5, 0, 1), "source GETs, HEADs of manifests, tag lists");
    let dst = |m: &str| r.dst.access_log(m, "/manifests/");
    // Per tag: the root HEAD, the root PUT under the tag, the tag's read-back.
    assert_eq!((dst("HEAD").len(), dst("PUT").len(), dst("GET").len()), (5, 5, 5));
    assert!(
        dst("PUT").iter().all(|l| !l.contains("/manifests/sha256:")),
        "{:#?}",
        dst("PUT")
    );
    for i in 0..5 {
        assert!(tag_digest(&r.d, "mirror/app", &format!("v{i}")).await.is_some());
    }
}

#[tokio::test]
async fn prune_deletes_only_tags_gone_at_the_source() {
    support::registry_bin_or_skip!();
    let r = Registries::start().await;
    let (s, d) = (&r.s, &r.d);
    let v1 = image::push_simple(s, "app", "v1", 2_000, 21).await;
    let v2 = image::push_simple(s, "app", "v2", 2_000, 22).await;
    let cfg = config(&r.src.host(), &r.dst.host(), "");
    assert_eq!(code(&sync(&cfg, &[]).await), 0);
    // Excluded at the target: a prune must not see it either.
    let dev = image::push_simple(d, "mirror/app", "old-dev", 2_000, 23).await;
    s.delete_manifest("app", &Locator::Digest(v2.digest.clone()))
        .await
        .unwrap();

    // Without --prune nothing is gone.
    let check = sync(&cfg, &["--check"]).await;
    assert_eq!(code(&check), 0, "{}", show(&check));
    let check = sync(&cfg, &["--check", "--prune", "--output", "json"]).await;
    assert_eq!(code(&check), 2, "{}", show(&check));
    let found = objects(&check);
    assert_eq!(found.len(), 1, "{}", show(&check));
    assert_eq!(found[0]["kind"], "gone");
    assert_eq!(found[0]["tag"], "v2");
    assert_eq!(found[0]["target_digest"], v2.digest.to_string());

    // delete_dry_run: checked, logged, kept.
    let dry_cfg = cfg.replace("[pipeline]\n", "[pipeline]\ndelete_dry_run = true\n");
    let dry = sync(&dry_cfg, &["--prune", "--output", "json"]).await;
    assert_eq!(code(&dry), 0, "{}", show(&dry));
    assert_eq!(objects(&dry)[0]["result"], "dry_run", "{}", show(&dry));
    assert_eq!(tag_digest(d, "mirror/app", "v2").await, Some(v2.digest.to_string()));

    let prune = sync(&cfg, &["--prune", "--output", "json"]).await;
    assert_eq!(code(&prune), 0, "{}", show(&prune));
    assert_eq!(objects(&prune)[0]["result"], "deleted", "{}", show(&prune));
    assert_eq!(tag_digest(d, "mirror/app", "v2").await, None);
    assert_eq!(tag_digest(d, "mirror/app", "v1").await, Some(v1.digest.to_string()));
    assert_eq!(
        tag_digest(d, "mirror/app", "old-dev").await,
        Some(dev.digest.to_string())
    );
    let again = sync(&cfg, &["--check", "--prune"]).await;
    assert_eq!(code(&again), 0, "{}", show(&again));

    // A rule without the delete action never prunes.
    let push_only = cfg.replace("actions = [\"push\", \"delete\"]", "actions = [\"push\"]");
    s.delete_manifest("app", &Locator::Digest(v1.digest.clone()))
        .await
        .unwrap();
    let check = sync(&push_only, &["--check", "--prune"]).await;
    assert_eq!(code(&check), 0, "{}", show(&check));
}

#[tokio::test]
async fn a_pattern_rule_the_catalog_cannot_enumerate_is_a_usage_error_naming_it() {
    support::registry_bin_or_skip!();
    let r = Registries::start().await;
    let v1 = image::push_simple(&r.s, "team/app", "v1", 1_000, 31).await;
    let proxy = FaultProxy::start(&r.src.url()).await;
    proxy.add_rule(Rule::status(404).path_contains("_catalog"));
    let cfg = config(&proxy.host(), &r.dst.host(), "");
    let out = sync(&cfg, &["--check"]).await;
    assert_eq!(code(&out), 64, "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rule mirror: pattern \"**\" needs the catalog of") && stderr.contains("repositories = [...]"),
        "{stderr}"
    );
    // Listing the repositories makes it work without the catalog.
    let listed = config(&proxy.host(), &r.dst.host(), "repositories = [\"team/app\"]");
    let out = sync(&listed, &[]).await;
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(
        tag_digest(&r.d, "mirror/team/app", "v1").await,
        Some(v1.digest.to_string())
    );
}

#[tokio::test]
async fn errors_exit_1_and_unknown_rules_exit_64() {
    support::registry_bin_or_skip!();
    let r = Registries::start().await;
    image::push_simple(&r.s, "app", "v1", 1_000, 41).await;
    let proxy = FaultProxy::start(&r.dst.url()).await;
    let cfg = config(&r.src.host(), &proxy.host(), "");
    proxy.set_down(true);
    let out = sync(&cfg, &["--check"]).await;
    assert_eq!(code(&out), 1, "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error: rule mirror: "),
        "{}",
        show(&out)
    );
    let out = sync(&cfg, &["--rule", "nope"]).await;
    assert_eq!(code(&out), 64, "{}", show(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rule \"nope\": no such rule (rules: mirror)"));
    let out = sync(&cfg, &["--check", "--dry-run"]).await;
    assert_eq!(code(&out), 64, "{}", show(&out));
}

const TOPIC: &str = "sync-events";
const SUB: &str = "sync-sub";

/// The daemon config: Pub/Sub source on `emu`, the mirror rule, a sweep every second.
fn daemon_config(emu: &PubSubEmulator, src: &str, dst: &str) -> String {
    let source = format!(
        "[source]\nkind = \"pubsub\"\nsubscription = \"{}\"\nendpoint = \"{}\"\nlease_extension_secs = 10",
        emu.subscription_path(SUB),
        emu.endpoint()
    );
    format!(
        "{}\n[reconcile]\ninterval_secs = 1\njobs = 2\n",
        mirror_config(&source, src, dst, 5)
    )
}

#[tokio::test]
async fn the_sweep_repairs_images_pushed_before_the_daemon_started_and_stops_cleanly() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let r = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let a = image::push_simple(&r.s, "team/a", "v1", 2_000, 51).await;
    let b = image::push_simple(&r.s, "team/b", "v1", 2_000, 52).await;
    // Moved by hand before the start: the sweep points it back.
    image::push_simple(&r.d, "mirror/team/b", "v1", 2_000, 53).await;
    let mut daemon = Daemon::start(&daemon_config(&emu, &r.src.host(), &r.dst.host())).await;
    daemon
        .wait_metric("regrelay_sweep_last_complete_timestamp_seconds", &[], LONG, |v| v > 0.0)
        .await;
    assert_eq!(
        tag_digest(&r.d, "mirror/team/a", "v1").await,
        Some(a.digest.to_string())
    );
    assert_eq!(
        tag_digest(&r.d, "mirror/team/b", "v1").await,
        Some(b.digest.to_string())
    );
    assert_eq!(
        daemon
            .metric("regrelay_sweep_drift_total", &[("kind", "missing")])
            .await,
        1.0
    );
    assert_eq!(
        daemon.metric("regrelay_sweep_drift_total", &[("kind", "moved")]).await,
        1.0
    );
    assert_eq!(
        daemon
            .metric("regrelay_sweep_repaired_total", &[("kind", "moved")])
            .await,
        1.0
    );
    assert!(daemon.metric("regrelay_sweep_tags_checked_total", &[]).await >= 2.0);
    assert_eq!(daemon.metric("regrelay_sweep_failures_total", &[]).await, 0.0);
    // The sweep settles nothing.
    assert_eq!(daemon.metric(SETTLED, &[]).await, 0.0);
    let (status, took) = daemon.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}\n{}", daemon.log());
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn a_sweep_running_while_events_flow_makes_no_double_copies() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let r = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let daemon = Daemon::start(&daemon_config(&emu, &r.src.host(), &r.dst.host())).await;
    let mut pushed = Vec::new();
    // Push and announce in waves, so events and sweeps overlap.
    for i in 0..12u64 {
        let repo = format!("app{}", i % 3);
        let tag = format!("v{i}");
        let img = image::push_simple(&r.s, &repo, &tag, 150_000, 60 + i).await;
        let event = serde_json::json!({
            "action": "INSERT",
            "digest": format!("{}/{repo}@{}", r.src.host(), img.digest),
            "tag": format!("{}/{repo}:{tag}", r.src.host()),
        });
        emu.publish(TOPIC, &serde_json::to_vec(&event).unwrap()).await;
        pushed.push((repo, tag, img));
        if i % 4 == 3 {
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 12.0)
        .await;
    // Two more complete sweeps after every event was acked.
    let t0 = daemon
        .metric("regrelay_sweep_last_complete_timestamp_seconds", &[])
        .await;
    daemon
        .wait_metric("regrelay_sweep_last_complete_timestamp_seconds", &[], LONG, |v| v > t0)
        .await;
    let t1 = daemon
        .metric("regrelay_sweep_last_complete_timestamp_seconds", &[])
        .await;
    daemon
        .wait_metric("regrelay_sweep_last_complete_timestamp_seconds", &[], LONG, |v| v > t1)
        .await;
    for (repo, tag, img) in &pushed {
        assert_eq!(
            tag_digest(&r.d, &format!("mirror/{repo}"), tag).await,
            Some(img.digest.to_string()),
            "{repo}:{tag}"
        );
    }
    assert_eq!(
        daemon.metric(COPIES, &[("outcome", "replicated")]).await,
        12.0,
        "each image copied exactly once across events and sweeps\n{}",
        daemon.metrics().await
    );
    assert!(daemon.metric("regrelay_sweep_tags_checked_total", &[]).await >= 12.0);
}
