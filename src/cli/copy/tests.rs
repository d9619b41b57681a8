//! Unit tests of `regrelay copy`'s argument handling: pairs, credential flags, registry
//! configurations and the report. The copies themselves are tested against real
//! registries in `tests/cli.rs` and `tests/copy.rs`.

use std::path::Path;

use clap::Parser;

use super::*;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: CopyArgs,
}

fn args(argv: &[&str]) -> CopyArgs {
    Cli::try_parse_from(std::iter::once("copy").chain(argv.iter().copied()))
        .expect("arguments parse")
        .args
}

fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const DOCKER: &str = "/home/someone/.docker/config.json";

fn configs(a: &CopyArgs) -> Result<Vec<RegistryConfig>, String> {
    registry_configs(a, Path::new(DOCKER), &pairs(a)?)
}

#[test]
fn one_pair_from_the_command_line() {
    let p = pairs(&args(&["src.example/app:v1", "dst.example/mirror/app"])).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].0.to_string(), "src.example/app:v1");
    assert_eq!(p[0].1.to_string(), "dst.example/mirror/app");
}

#[test]
fn a_source_needs_a_tag_or_a_digest_and_a_target_no_digest() {
    let err = pairs(&args(&["src.example/app", "dst.example/app"])).unwrap_err();
    assert_eq!(err, "source src.example/app needs a tag or a digest");
    let digest = format!("sha256:{}", "0".repeat(64));
    let err = pairs(&args(&["src.example/app:v1", &format!("dst.example/app@{digest}")])).unwrap_err();
    assert!(err.starts_with("target dst.example/app@sha256:"), "{err}");
    assert!(
        err.ends_with("must not carry a digest: the digest is the source's"),
        "{err}"
    );
    let err = pairs(&args(&["not a reference", "dst.example/app"])).unwrap_err();
    assert!(err.starts_with("source: "), "{err}");
}

#[test]
fn pairs_from_a_file_skip_comments_and_name_the_line_of_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = file(
        &dir,
        "pairs",
        "# mirror list\n\nsrc.example/a:v1 dst.example/a   # inline comment\n  src.example/b@sha256:0000000000000000000000000000000000000000000000000000000000000000 dst.example/b\n",
    );
    let p = pairs(&args(&["--from-file", &good])).unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[1].1.to_string(), "dst.example/b");

    let three = file(
        &dir,
        "three",
        "src.example/a:v1 dst.example/a\n\nsrc.example/b:v1 dst.example/b extra\n",
    );
    assert_eq!(
        pairs(&args(&["--from-file", &three])).unwrap_err(),
        format!("{three}:3: expected `SRC DST`")
    );
    let untagged = file(&dir, "untagged", "# one\nsrc.example/a dst.example/a\n");
    assert_eq!(
        pairs(&args(&["--from-file", &untagged])).unwrap_err(),
        format!("{untagged}:2: source src.example/a needs a tag or a digest")
    );
    let empty = file(&dir, "empty", "# nothing\n\n");
    assert_eq!(
        pairs(&args(&["--from-file", &empty])).unwrap_err(),
        format!("{empty}: no `SRC DST` pairs")
    );
    let missing = dir.path().join("missing").display().to_string();
    let err = pairs(&args(&["--from-file", &missing])).unwrap_err();
    assert!(err.starts_with(&format!("cannot read {missing}: ")), "{err}");
}

#[test]
fn from_file_conflicts_with_positional_pairs() {
    let parsed = Cli::try_parse_from(["copy", "--from-file", "x", "src.example/a:v1", "dst.example/a"]);
    assert!(parsed.is_err());
    assert!(
        Cli::try_parse_from(["copy", "src.example/a:v1"]).is_err(),
        "DST is required"
    );
}

#[test]
fn source_and_target_credentials_go_to_their_hosts_and_the_rest_use_docker_config() {
    let dir = tempfile::tempdir().unwrap();
    let src_pw = file(&dir, "src", "s3cret-src\n");
    let dst_pw = file(&dir, "dst", "s3cret-dst");
    let list = file(
        &dir,
        "pairs",
        "src.example/a:v1 dst.example/a\nthird.example/b:v1 dst.example/b\ndst.example/c:v1 other.example/c\n",
    );
    let a = args(&[
        "--from-file",
        &list,
        "--src-username",
        "alice",
        "--src-password-file",
        &src_pw,
        "--dest-username",
        "bob",
        "--dest-password-file",
        &dst_pw,
        "--insecure-registry",
        "other.example",
        "--retries",
        "0",
        "--chunk-size",
        "1048576",
        "-j",
        "3",
    ]);
    let cfgs = configs(&a).unwrap();
    let hosts: Vec<&str> = cfgs.iter().map(|c| c.host.as_str()).collect();
    assert_eq!(hosts, ["src.example", "dst.example", "third.example", "other.example"]);
    let basic = |host: &str| match &cfgs.iter().find(|c| c.host == host).unwrap().auth {
        Auth::Basic { username, password } => Some((username.clone(), password.expose().to_owned())),
        _ => None,
    };
    assert_eq!(basic("src.example"), Some(("alice".into(), "s3cret-src".into())));
    assert_eq!(basic("third.example"), Some(("alice".into(), "s3cret-src".into())));
    // A host seen first as a target keeps the target credentials.
    assert_eq!(basic("dst.example"), Some(("bob".into(), "s3cret-dst".into())));
    assert_eq!(basic("other.example"), Some(("bob".into(), "s3cret-dst".into())));
    for c in &cfgs {
        assert_eq!(c.insecure, c.host == "other.example", "{}", c.host);
        assert_eq!(c.retry.attempts, 1, "--retries 0 still makes one attempt");
        assert_eq!(c.chunk_size, Some(1_048_576));
        assert_eq!(c.max_in_flight, 12);
    }

    let plain = configs(&args(&["src.example/a:v1", "dst.example/a"])).unwrap();
    for c in &plain {
        assert!(
            matches!(&c.auth, Auth::DockerConfig { path } if path == Path::new(DOCKER)),
            "{:?}",
            c.auth
        );
        assert_eq!(c.retry.attempts, 6);
        assert_eq!(c.max_in_flight, 32, "4 requests per image of the default --jobs 8");
    }
    let authfile = configs(&args(&[
        "--authfile",
        "/etc/auth.json",
        "src.example/a:v1",
        "dst.example/a",
    ]))
    .unwrap();
    assert!(matches!(&authfile[0].auth, Auth::DockerConfig { path } if path == Path::new("/etc/auth.json")));
}

#[test]
fn credential_flags_that_do_not_go_together_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pw = file(&dir, "pw", "x");
    let pair = ["src.example/a:v1", "dst.example/a"];
    let with = |flags: &[&str]| configs(&args(&[flags, &pair[..]].concat())).unwrap_err();
    assert_eq!(
        with(&["--src-username", "alice"]),
        "--src-username and a --src-password-* option go together"
    );
    assert_eq!(
        with(&["--dest-password-file", &pw]),
        "--dest-username and a --dest-password-* option go together"
    );
    assert_eq!(
        with(&[
            "--src-username",
            "a",
            "--src-password-file",
            &pw,
            "--src-password-env",
            "PW"
        ]),
        "give --src password as an env var or a file, not both"
    );
    let missing = dir.path().join("nope").display().to_string();
    let err = with(&["--dest-username", "bob", "--dest-password-file", &missing]);
    assert!(err.contains("--dest password"), "{err}");
    assert!(err.contains(&missing), "{err}");
}

#[tokio::test]
async fn zero_jobs_is_a_usage_error_before_anything_is_contacted() {
    let ctx = Context {
        docker_config: DOCKER.into(),
        progress: false,
    };
    let err = run(args(&["-j", "0", "127.0.0.1:1/a:v1", "127.0.0.1:2/a"]), ctx.clone())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "--jobs must be at least 1");
    let err = run(
        args(&["--blob-jobs", "0", "127.0.0.1:1/a:v1", "127.0.0.1:2/a"]),
        ctx.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.to_string(), "--blob-jobs must be at least 1");
    let err = run(args(&["127.0.0.1:1/a", "127.0.0.1:2/a"]), ctx).await.unwrap_err();
    assert_eq!(err.to_string(), "source 127.0.0.1:1/a needs a tag or a digest");
}

#[test]
fn the_report_prints_each_verified_image_and_counts_failures() {
    let digest: crate::oci::Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
    let task = |s: &str, d: &str| Task::from_refs(s.parse().unwrap(), &d.parse().unwrap());
    let stats = replicate::Stats {
        bytes_copied: 10,
        blobs_uploaded: 2,
        blobs_mounted: 1,
        blobs_skipped: 3,
        referrers_copied: 1,
        ..Default::default()
    };
    let results = vec![
        (
            task("src.example/a:v1", "dst.example/a"),
            Ok(Outcome::Replicated {
                digest: digest.clone(),
                stats: stats.clone(),
            }),
        ),
        (
            task("src.example/b:v2", "dst.example/b:copy"),
            Ok(Outcome::AlreadyPresent {
                digest: digest.clone(),
                stats: replicate::Stats::default(),
            }),
        ),
        (
            task("src.example/c:v3", "dst.example/c"),
            Err(replicate::Error::NoLocator("src.example/c".into())),
        ),
    ];
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let text = Reporting {
        format: OutputFormat::Text,
        seconds: &[],
    };
    let summary = report(&results, text, &mut out, &mut err);
    assert_eq!(summary, Summary { total: 3, failed: 1 });
    let out = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "src.example/a:v1 replicated dst.example/a:v1@{digest} (verified; 10 bytes copied, blobs: 2 uploaded, 1 mounted, 3 skipped; 1 referrers)"
            ),
            format!(
                "src.example/b:v2 already present dst.example/b:copy@{digest} (verified; 0 bytes copied, blobs: 0 uploaded, 0 mounted, 0 skipped; 0 referrers)"
            ),
        ]
    );
    assert_eq!(
        String::from_utf8(err).unwrap(),
        "error: source reference src.example/c names no tag or digest\n2 of 3 copies verified, 1 failed\n"
    );

    // One image: no total line.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let summary = report(&results[..1], text, &mut out, &mut err);
    assert_eq!(summary, Summary { total: 1, failed: 0 });
    assert!(err.is_empty());

    // JSON: one object per verified image on stdout, failures still on stderr.
    let json = Reporting {
        format: OutputFormat::Json,
        seconds: &[1.5, 0.25, 3.0],
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let summary = report(&results, json, &mut out, &mut err);
    assert_eq!(summary, Summary { total: 3, failed: 1 });
    let objects: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        objects[0],
        serde_json::json!({
            "source": "src.example/a:v1",
            "target": "dst.example/a:v1",
            "digest": digest.to_string(),
            "outcome": "replicated",
            "bytes": 10,
            "blobs": {"uploaded": 2, "mounted": 1, "skipped": 3},
            "referrers": 1,
            "seconds": 1.5,
        })
    );
    assert_eq!(objects[1]["outcome"], "already_present");
    assert_eq!(objects[1]["seconds"], 0.25);
    assert_eq!(objects.len(), 2);
    assert!(
        String::from_utf8(err)
            .unwrap()
            .starts_with("error: source reference src.example/c")
    );
}
