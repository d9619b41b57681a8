//! Per-registry trust (issue 15): a real `docker-registry` serving HTTPS with a
//! certificate from a private CA (generated here with rcgen). With that CA in the
//! registry's `ca_file` regrelay copies to it and verifies; with another CA it refuses the
//! connection; a `ca_file` that is not a PEM bundle is a configuration error naming the
//! file, line and field.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use regrelay::config::{Auth, RegistryConfig};
use regrelay::oci::{Locator, Reference};
use regrelay::registry::{HttpRegistry, Registry as _};
use regrelay::replicate::{Options, Target, Task};
use support::image;

/// A CA (certificate PEM) and a server certificate for 127.0.0.1 signed by it, written
/// to `dir` as `NAME-ca.pem`, `NAME-cert.pem` and `NAME-key.pem`.
fn private_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("regrelay test CA {name}"));
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}-cert.pem")),
        dir.join(format!("{name}-key.pem")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

/// `docker-registry` on 127.0.0.1 serving HTTPS with `cert`/`key`; ready when `GET /v2/`
/// answers through a client that trusts `ca`.
async fn tls_registry(bin: &Path, dir: &Path, cert: &Path, key: &Path, ca: &Path) -> (tokio::process::Child, String) {
    let port = support::free_port();
    let storage = dir.join("storage");
    std::fs::create_dir_all(&storage).unwrap();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: regrelay-tls-test\n  tls:\n    certificate: {}\n    key: {}\n",
            storage.display(),
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("registry.log")).unwrap();
    let child = tokio::process::Command::new(bin)
        .arg("serve")
        .arg(&config)
        .env_clear()
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pem = std::fs::read(ca).unwrap();
    let probe = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .build()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(r) = probe.get(format!("https://127.0.0.1:{port}/v2/")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "TLS registry not ready; log:\n{}",
            std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, format!("127.0.0.1:{port}"))
}

fn with_ca(host: &str, ca: &Path) -> RegistryConfig {
    let mut c = image::cfg(host, Auth::Anonymous);
    c.ca_file = Some(ca.to_path_buf());
    c
}

/// The digest `repo:tag` has at the TLS registry `host`, read through a client trusting
/// `ca`; panics when the tag is not there.
async fn tag_digest(host: &str, ca: &Path, repo: &str, tag: &str) -> regrelay::oci::Digest {
    let head = HttpRegistry::new(with_ca(host, ca))
        .unwrap()
        .head_manifest(repo, &Locator::Tag(tag.into()))
        .await
        .unwrap()
        .expect("tag at the TLS target");
    head.digest.expect("the registry names the digest")
}

#[tokio::test]
async fn a_registry_with_a_private_ca_is_trusted_through_its_ca_file_15() {
    let bin = support::registry_bin_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path(), "good");
    let (other_ca, _, _) = private_ca(dir.path(), "other");
    let (_tls, host) = tls_registry(&bin, dir.path(), &cert, &key, &ca).await;
    let src = support::TestRegistry::start().await;
    let s = image::client(&src.host(), Auth::Anonymous);
    let img = image::push_simple(&s, "team/app", "1.0", 30_000, 153).await;

    // Trusted through ca_file: copied and verified over HTTPS.
    let engine = image::engine(
        vec![image::cfg(&src.host(), Auth::Anonymous), with_ca(&host, &ca)],
        Options::default(),
    );
    let task = Task {
        source: Reference::new(&src.host(), "team/app", Locator::Tag("1.0".into())).unwrap(),
        target: Target {
            registry: host.clone(),
            repository: "mirror/team/app".into(),
            tags: vec!["1.0".into()],
        },
    };
    let outcome = engine.replicate(&task).await.expect("copy over TLS");
    assert_eq!(outcome.digest(), &img.digest);
    assert_eq!(tag_digest(&host, &ca, "mirror/team/app", "1.0").await, img.digest);

    // Over HTTP/1.1, although the registry offers HTTP/2 (the readiness probe, a plain
    // reqwest client, took it): one h2 connection would carry every blob through one TLS
    // session (docs/benchmarks.md, "TLS").
    let log = std::fs::read_to_string(dir.path().join("registry.log")).unwrap();
    let ours: Vec<&str> = log.lines().filter(|l| l.contains("\"regrelay/")).collect();
    assert!(log.contains(" HTTP/2.0\""), "the registry offers HTTP/2:\n{log}");
    assert!(ours.len() > 5, "regrelay's requests are in the access log:\n{log}");
    assert!(ours.iter().all(|l| l.contains(" HTTP/1.1\"")), "{ours:#?}");

    // Another CA: the certificate is refused, nothing is read.
    let wrong = HttpRegistry::new(with_ca(&host, &other_ca)).unwrap();
    wrong
        .head_manifest("mirror/team/app", &Locator::Tag("1.0".into()))
        .await
        .expect_err("a certificate from an untrusted CA was accepted");
}

/// `regrelay copy --registry-ca HOST=FILE`: the CLI trusts a private CA per host, as the
/// daemon's `ca_file` does (without it the loopback target is spoken to in plain HTTP
/// and the copy fails); a file that is not a PEM bundle is a usage error (exit 64) before
/// anything connects.
#[tokio::test]
async fn copy_trusts_a_private_ca_given_with_registry_ca() {
    let bin = support::registry_bin_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path(), "cli");
    let (_tls, host) = tls_registry(&bin, dir.path(), &cert, &key, &ca).await;
    let src = support::TestRegistry::start().await;
    let s = image::client(&src.host(), Auth::Anonymous);
    let img = image::push_simple(&s, "team/app", "1.0", 20_000, 157).await;
    let (from, to) = (format!("{}/team/app:1.0", src.host()), format!("{host}/mirror/app:1.0"));

    let untrusted = support::cli::run(&["copy", "--retries", "1", &from, &to]).await;
    assert!(!untrusted.status.success(), "{}", support::cli::text(&untrusted));

    let trust = format!("{host}={}", ca.display());
    let ok = support::cli::run(&["copy", "--registry-ca", &trust, &from, &to]).await;
    assert!(ok.status.success(), "{}", support::cli::text(&ok));
    assert_eq!(tag_digest(&host, &ca, "mirror/app", "1.0").await, img.digest);

    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    for (flag, says) in [
        (format!("{host}={}", junk.display()), "no PEM certificate"),
        (ca.display().to_string(), "expected HOST=FILE"),
    ] {
        let bad = support::cli::run(&["copy", "--registry-ca", &flag, &from, &to]).await;
        assert_eq!(bad.status.code(), Some(64), "{}", support::cli::text(&bad));
        assert!(support::cli::text(&bad).contains(says), "{}", support::cli::text(&bad));
    }
    // A CA for a host also given plain HTTP: refused where every registry config is checked.
    let both = [
        "copy",
        "--registry-ca",
        &trust,
        "--insecure-registry",
        &host,
        &from,
        &to,
    ];
    let bad = support::cli::run(&both).await;
    assert_eq!(bad.status.code(), Some(64), "{}", support::cli::text(&bad));
    assert!(
        support::cli::text(&bad).contains("needs TLS"),
        "{}",
        support::cli::text(&bad)
    );
}

#[test]
fn a_ca_file_that_is_not_pem_is_a_config_error_naming_the_line_15() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let text = format!(
        "[source]\nkind = \"file\"\n[registries.\"a.example\"]\nca_file = \"{}\"\n[registries.\"b.example\"]\n[[rules]]\nsource_registry = \"a.example\"\nrepository = \"**\"\n[[rules.targets]]\nregistry = \"b.example\"\n",
        junk.display()
    );
    let err = regrelay::config::load_str(&text, Path::new("t.toml")).expect_err("junk CA accepted");
    let shown = err.to_string();
    assert!(
        shown.starts_with("t.toml:4: registries.\"a.example\".ca_file: ") && shown.contains("no PEM certificate"),
        "{shown}"
    );
    let missing = text.replace(&junk.display().to_string(), "/nonexistent/ca.pem");
    let shown = regrelay::config::load_str(&missing, Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(shown.contains("cannot read /nonexistent/ca.pem"), "{shown}");
    let both = text.replace("ca_file", "insecure = true\nca_file");
    let shown = regrelay::config::load_str(&both, Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(shown.contains("needs TLS"), "{shown}");
}
