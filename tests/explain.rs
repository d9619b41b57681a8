//! `regrelay explain` and `regrelay run --dry-run` against real `docker-registry`
//! processes (issue 15): what an event would do is told without writing anything, and
//! without contacting anything unless `--resolve` is given.

mod support;

use std::path::Path;
use std::process::Output;

use support::image;
use support::{FaultProxy, Registries, mirror_config, tag_digest};

/// `regrelay ARGS` with `stdin` as its input.
async fn regrelay(args: &[&str], cfg: &Path, stdin: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_regrelay"))
        .args(args)
        .arg("--config")
        .arg(cfg)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).await.unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn insert(host: &str, repo: &str, tag: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "action": "INSERT",
        "digest": format!("{host}/{repo}@{digest}"),
        "tag": format!("{host}/{repo}:{tag}"),
    }))
    .unwrap()
}

#[tokio::test]
async fn explain_tells_each_route_and_resolve_says_whether_the_target_is_in_place_15() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    // The source behind a proxy that records every request: explain without --resolve
    // must not make any.
    let proxy = FaultProxy::start(&src.url()).await;
    let img = image::push_simple(&s, "team/app", "1.0", 20_000, 151).await;
    let digest = img.digest.to_string();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("regrelay.toml");
    std::fs::write(
        &cfg,
        mirror_config("[source]\nkind = \"file\"", &proxy.host(), &dst.host(), 5).replace("{ADMIN}", "127.0.0.1:0"),
    )
    .unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(&event, insert(&proxy.host(), "team/app", "1.0", &digest)).unwrap();
    let event_arg = event.to_str().unwrap();

    // Pure: the rule, the target reference, what would happen; nothing contacted.
    let out = regrelay(&["explain", event_arg], &cfg, b"").await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&format!("rule mirror: {}/mirror/team/app:1.0", dst.host())),
        "{t}"
    );
    assert!(t.contains(&format!("copy {}/team/app:1.0 to", proxy.host())), "{t}");
    assert!(!t.contains("now:"), "{t}");
    assert!(
        proxy.requests().is_empty(),
        "explain contacted the source: {:?}",
        proxy.requests()
    );

    // --resolve before the copy: the target lacks it.
    let out = regrelay(&["explain", "--resolve", event_arg], &cfg, b"").await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(&format!("= {digest}; target")), "{t}");
    assert!(t.contains("= absent: would copy"), "{t}");
    assert!(!proxy.requests().is_empty());
    assert!(
        proxy.requests().iter().all(|r| r.method == reqwest::Method::HEAD),
        "--resolve made a request other than HEAD: {:?}",
        proxy.requests()
    );
    assert_eq!(tag_digest(&d, "mirror/team/app", "1.0").await, None, "explain wrote");

    // The image at the target under another tag: only the tag would be pointed.
    let copy = tokio::process::Command::new(env!("CARGO_BIN_EXE_regrelay"))
        .args(["copy", "--no-referrers"])
        .arg(format!("{}/team/app:1.0", src.host()))
        .arg(format!("{}/mirror/team/app:other", dst.host()))
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(copy.status.success(), "{}", text(&copy));
    let out = regrelay(&["explain", "--resolve", "-"], &cfg, &std::fs::read(&event).unwrap()).await;
    let t = text(&out);
    assert!(t.contains("only the tag would be pointed at it"), "{t}");

    // In place.
    let copy = tokio::process::Command::new(env!("CARGO_BIN_EXE_regrelay"))
        .args(["copy", "--no-referrers"])
        .arg(format!("{}/team/app:1.0", src.host()))
        .arg(format!("{}/mirror/team/app:1.0", dst.host()))
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(copy.status.success(), "{}", text(&copy));
    let out = regrelay(&["explain", "--resolve", event_arg], &cfg, b"").await;
    let t = text(&out);
    assert!(t.contains("already in place: nothing would be written"), "{t}");

    // A host outside the configuration is refused, and never contacted even with --resolve.
    proxy.clear_log();
    let foreign = insert("elsewhere.example", "team/app", "1.0", &digest);
    let out = regrelay(&["explain", "--resolve"], &cfg, &foreign).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("refused: the event names registry \"elsewhere.example\""),
        "{t}"
    );
    // A manifest delete is described (delete propagation is on for this rule).
    let other = serde_json::to_vec(&serde_json::json!({
        "action": "DELETE",
        "digest": format!("{}/team/app@{digest}", proxy.host()),
    }))
    .unwrap();
    let out = regrelay(&["explain"], &cfg, &other).await;
    let t = text(&out);
    assert!(t.contains("delete manifest"), "{t}");
    assert!(proxy.requests().is_empty());
    // Undecodable input is explained, not an error.
    let out = regrelay(&["explain"], &cfg, b"not json").await;
    assert!(text(&out).contains("rejected: undecodable message"), "{}", text(&out));
    // A bad configuration is a usage error.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[source]\nkind = \"nope\"\n").unwrap();
    let out = regrelay(&["explain"], &bad, b"{}").await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out));
}

#[tokio::test]
async fn run_dry_run_logs_every_route_writes_nothing_and_settles_nothing_15() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let proxy = FaultProxy::start(&dst.url()).await;
    let img = image::push_simple(&s, "team/app", "2.0", 20_000, 152).await;
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let mut lines = insert(&src.host(), "team/app", "2.0", &img.digest.to_string());
    lines.push(b'\n');
    std::fs::write(&events, lines).unwrap();
    let cfg = dir.path().join("regrelay.toml");
    std::fs::write(
        &cfg,
        mirror_config(
            &format!("[source]\nkind = \"file\"\npath = \"{}\"", events.display()),
            &src.host(),
            &proxy.host(),
            5,
        )
        .replace("{ADMIN}", "127.0.0.1:0"),
    )
    .unwrap();
    let out = regrelay(&["--log-format", "json", "run", "--dry-run"], &cfg, b"").await;
    let t = text(&out);
    // The line is handed back (a nack), so the file source counts it as not verified.
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("0 events verified or ignored, 1 failed"), "{t}");
    let logged = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "dry run: not executed")
        .unwrap_or_else(|| panic!("no dry-run line: {t}"));
    assert_eq!(logged["rule"], "mirror");
    assert_eq!(logged["target_ref"], format!("{}/mirror/team/app:2.0", proxy.host()));
    assert!(logged["would"].as_str().unwrap().starts_with("copy "), "{logged}");
    assert!(proxy.requests().is_empty(), "the dry run contacted the target");
    assert_eq!(tag_digest(&d, "mirror/team/app", "2.0").await, None);
}
