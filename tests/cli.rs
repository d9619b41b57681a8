//! Tests of the `regrelay` binary (tier 4): exit codes, the one-line error, secrets kept
//! out of logs, credential helpers, `--from-file`, and bounded memory on a 1 GiB blob.

mod support;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use regrelay::config::{Auth, Secret};
use regrelay::oci::{Digest, Locator};
use regrelay::registry::Registry;
use support::image;
use support::{TestRegistry, TokenServer};

use support::cli::{BIN, run_with, text};

#[tokio::test]
async fn version_and_usage_errors() {
    let o = run_with(&["version"], &[]).await;
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("regrelay "));
    let o = run_with(&["copy", "not-a-reference", "127.0.0.1:1/app"], &[]).await;
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("error: source: invalid image reference"));
    let o = run_with(&["copy", "127.0.0.1:1/app:v1"], &[]).await;
    assert_eq!(o.status.code(), Some(64), "missing DST is a usage error");
    let o = run_with(
        &[
            "copy",
            "127.0.0.1:1/app:v1",
            "127.0.0.1:2/app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(64));
}

#[tokio::test]
async fn version_flag_prints_the_crate_version_and_the_git_commit() {
    let commit = env!("REGRELAY_GIT_COMMIT");
    let want = format!("regrelay {} ({commit})\n", env!("CARGO_PKG_VERSION"));
    for argv in [&["--version"][..], &["-V"], &["version"]] {
        let o = run_with(argv, &[]).await;
        assert!(o.status.success(), "{argv:?}: {}", text(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), want, "{argv:?}");
    }
    // Built from a git checkout (CI builds from a clean clone), the commit is known.
    let in_git = std::process::Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .is_ok_and(|o| o.status.success());
    if in_git {
        assert!(
            commit.len() == 12 && commit.bytes().all(|b| b.is_ascii_hexdigit()),
            "commit {commit:?} is not a short hash"
        );
    }
}

#[tokio::test]
async fn missing_source_exits_1_with_one_clear_line() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let o = run_with(
        &[
            "copy",
            "--log-format",
            "json",
            &format!("{}/app:v1", src.host()),
            &format!("{}/app", dst.host()),
        ],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let line = format!("error: source manifest not found: {}/app:v1", src.host());
    assert!(stderr.lines().any(|l| l == line), "expected {line:?} in {stderr}");
}

#[tokio::test]
async fn from_file_copies_many_and_reports_each() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let s = image::client(&src.host(), Auth::Anonymous);
    let base = image::random_bytes(100, 200_000);
    let mut digests = Vec::new();
    for i in 0..5u64 {
        let img = image::push_image(
            &s,
            &format!("svc{i}"),
            Some("v1"),
            vec![base.clone(), image::random_bytes(101 + i, 5_000)],
            false,
            100 + i,
        )
        .await;
        digests.push(img.digest);
    }
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("pairs.txt");
    let mut body = String::from("# five services\n");
    for i in 0..5 {
        body.push_str(&format!(
            "{h}/svc{i}:v1   {d}/mirror/svc{i}\n",
            h = src.host(),
            d = dst.host()
        ));
    }
    body.push_str(&format!("{}/missing:v1 {}/mirror/missing\n", src.host(), dst.host()));
    std::fs::write(&list, body).unwrap();
    let o = run_with(&["copy", "--from-file", list.to_str().unwrap(), "--jobs", "3"], &[]).await;
    assert_eq!(
        o.status.code(),
        Some(1),
        "one pair fails, so the exit is 1: {}",
        text(&o)
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    for d in &digests {
        assert!(stdout.contains(&d.to_string()), "{stdout}");
    }
    assert!(String::from_utf8_lossy(&o.stderr).contains("5 of 6 copies verified, 1 failed"));
    let t = image::client(&dst.host(), Auth::Anonymous);
    for (i, d) in digests.iter().enumerate() {
        let m = t
            .get_manifest(&format!("mirror/svc{i}"), &Locator::Tag("v1".into()))
            .await
            .unwrap();
        assert_eq!(&m.digest, d);
    }
}

#[tokio::test]
async fn secrets_never_reach_logs_even_at_trace_level() {
    support::registry_bin_or_skip!();
    support::bin_or_skip!(support::HTPASSWD_BIN_ENV, "htpasswd");
    let src = TestRegistry::start_htpasswd("alice", "alice-pw-3141").await;
    let tokens = TokenServer::start(&[("bob", "bob-pw-2718")]).await;
    let dst = TestRegistry::start_token(&tokens).await;
    let alice = Auth::Basic {
        username: "alice".into(),
        password: Secret::new("alice-pw-3141"),
    };
    let s = image::client(&src.host(), alice);
    let img = image::push_simple(&s, "app", "v1", 20_000, 200).await;

    let dir = tempfile::tempdir().unwrap();
    let bob_b64 = base64::engine::general_purpose::STANDARD.encode("bob:bob-pw-2718");
    let authfile = dir.path().join("config.json");
    std::fs::write(
        &authfile,
        format!(r#"{{"auths":{{"{}":{{"auth":"{bob_b64}"}}}}}}"#, dst.host()),
    )
    .unwrap();
    let args = [
        "copy",
        "--log-format",
        "text",
        "--src-username",
        "alice",
        "--src-password-env",
        "SRC_PW",
        "--authfile",
        authfile.to_str().unwrap(),
        &format!("{}/app:v1", src.host()),
        &format!("{}/app", dst.host()),
    ];
    let o = run_with(&args, &[("SRC_PW", "alice-pw-3141"), ("REGRELAY_LOG", "trace")]).await;
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(&img.digest.to_string()));
    assert!(out.lines().count() > 20, "trace logging was on");
    let alice_b64 = base64::engine::general_purpose::STANDARD.encode("alice:alice-pw-3141");
    for secret in ["alice-pw-3141", "bob-pw-2718", &bob_b64, &alice_b64] {
        assert!(!out.contains(secret), "secret {secret:?} leaked into output");
    }
    let issued = tokens.issued_tokens();
    assert!(!issued.is_empty());
    for t in issued {
        assert!(!out.contains(&t), "a bearer token leaked into output");
    }

    // Wrong password: exit 1, the error names the host, not the secret.
    let o = run_with(&args, &[("SRC_PW", "wrong-pw-1618"), ("REGRELAY_LOG", "trace")]).await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("rejected our credentials"), "{out}");
    assert!(!out.contains("wrong-pw-1618"));
}

#[tokio::test]
async fn docker_credential_helpers_are_used() {
    support::registry_bin_or_skip!();
    support::bin_or_skip!(support::HTPASSWD_BIN_ENV, "htpasswd");
    let src = TestRegistry::start().await;
    let dst = TestRegistry::start_htpasswd("carol", "carol-pw-1414").await;
    let s = image::client(&src.host(), Auth::Anonymous);
    let img = image::push_simple(&s, "app", "v1", 10_000, 300).await;
    let dir = tempfile::tempdir().unwrap();
    let helper = dir.path().join("docker-credential-regrelaytest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread host\nif [ \"$host\" = \"{}\" ]; then echo '{{\"ServerURL\":\"x\",\"Username\":\"carol\",\"Secret\":\"carol-pw-1414\"}}'; else exit 1; fi\n",
            dst.host()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"regrelaytest"}}}}"#, dst.host()),
    )
    .unwrap();
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    let docker_config = dir.path().to_str().unwrap();
    let o = run_with(
        &[
            "copy",
            &format!("{}/app:v1", src.host()),
            &format!("{}/app", dst.host()),
        ],
        &[("PATH", path.as_str()), ("DOCKER_CONFIG", docker_config)],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("carol-pw-1414"));
    let d = image::client(
        &dst.host(),
        Auth::Basic {
            username: "carol".into(),
            password: Secret::new("carol-pw-1414"),
        },
    );
    assert_eq!(
        d.get_manifest("app", &Locator::Tag("v1".into())).await.unwrap().digest,
        img.digest
    );
}

/// 1 GiB of deterministic, incompressible-enough bytes, produced on the fly.
fn gib_stream(base: &'static [u8]) -> regrelay::registry::ByteStream {
    let chunks = (0u64..1024).map(move |i| {
        let mut c = base.to_vec();
        c[..8].copy_from_slice(&i.to_le_bytes());
        Ok::<_, std::io::Error>(Bytes::from(c))
    });
    Box::pin(futures_util::stream::iter(chunks))
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn one_gib_blob_copies_with_bounded_memory() {
    support::registry_bin_or_skip!();
    let (src, dst) = (TestRegistry::start().await, TestRegistry::start().await);
    let base: &'static [u8] = Box::leak(image::random_bytes(400, 1 << 20).into_boxed_slice());
    let mut hasher = Digest::sha256_of(b"").hasher();
    {
        use futures_util::StreamExt;
        let mut s = gib_stream(base);
        while let Some(c) = s.next().await {
            hasher.update(&c.unwrap());
        }
    }
    let digest = hasher.finish();
    let size = 1u64 << 30;
    let s = image::client(&src.host(), Auth::Anonymous);
    let session = s.start_upload("big").await.unwrap();
    s.upload_blob(session, &digest, size, gib_stream(base)).await.unwrap();
    let config = image::push_blob(
        &s,
        "big",
        "application/vnd.oci.image.config.v1+json",
        b"{\"os\":\"linux\"}".to_vec(),
    )
    .await;
    let body = serde_json::json!({
        "schemaVersion": 2, "mediaType": regrelay::oci::OCI_MANIFEST, "config": config,
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest.to_string(), "size": size}],
    });
    let img = image::push_manifest(&s, "big", Some("v1"), regrelay::oci::OCI_MANIFEST, body).await;

    let child = tokio::process::Command::new(BIN)
        .args([
            "copy",
            "--log-format",
            "text",
            &format!("{}/big:v1", src.host()),
            &format!("{}/big", dst.host()),
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let waiter = tokio::spawn(child.wait_with_output());
    let mut peak_kib = 0;
    while !waiter.is_finished() {
        if let Some(k) = vm_hwm_kib(pid) {
            peak_kib = peak_kib.max(k);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let o = waiter.await.unwrap().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&img.digest.to_string()));
    eprintln!("peak RSS of regrelay copying 1 GiB: {} MiB", peak_kib / 1024);
    assert!(peak_kib > 0, "memory was sampled");
    assert!(
        peak_kib < 128 * 1024,
        "peak RSS {peak_kib} KiB: the blob must stream, not buffer"
    );
    let d = image::client(&dst.host(), Auth::Anonymous);
    assert_eq!(d.head_blob("big", &digest).await.unwrap(), Some(size));
}
