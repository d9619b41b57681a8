//! Self-test of the process-test harness in `tests/support`: a real
//! `docker-registry` (anonymous, htpasswd, token auth), the token server and
//! the fault proxy, driven with raw reqwest calls.

mod support;

use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::{Client, StatusCode, header};
use sha2::{Digest as _, Sha256};
use support::{Action, FaultProxy, KeyHint, Method, Rule, TestRegistry, TokenOptions, TokenServer};

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Deterministic pseudo-random bytes (xorshift), so corruption is visible.
fn blob(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Percent-encodes a query value (reqwest's `query` feature is not enabled).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn json(resp: reqwest::Response) -> serde_json::Value {
    serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json body")
}

fn with_auth(req: reqwest::RequestBuilder, bearer: Option<&str>) -> reqwest::RequestBuilder {
    match bearer {
        Some(token) => req.bearer_auth(token),
        None => req,
    }
}

/// Resolves a `Location` header against `base` (distribution sends absolute URLs).
fn location(resp: &reqwest::Response, base: &str) -> String {
    let loc = resp
        .headers()
        .get(header::LOCATION)
        .expect("Location header")
        .to_str()
        .expect("ascii Location")
        .to_owned();
    if loc.starts_with("http") {
        loc
    } else {
        format!("{base}{loc}")
    }
}

/// POST + PUT upload of `data` to `repo` at `base`; returns the digest.
async fn push_blob(c: &Client, base: &str, repo: &str, data: &[u8], bearer: Option<&str>) -> String {
    let digest = digest_of(data);
    let resp = with_auth(c.post(format!("{base}/v2/{repo}/blobs/uploads/")), bearer)
        .send()
        .await
        .expect("start upload");
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "start upload");
    let upload = location(&resp, base);
    let sep = if upload.contains('?') { '&' } else { '?' };
    let resp = with_auth(c.put(format!("{upload}{sep}digest={}", enc(&digest))), bearer)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("finish upload");
    assert_eq!(resp.status(), StatusCode::CREATED, "finish upload");
    digest
}

async fn get_blob(c: &Client, base: &str, repo: &str, digest: &str) -> reqwest::Response {
    c.get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .expect("get blob")
}

#[tokio::test]
async fn anonymous_registry_round_trips_blob_and_manifest() {
    support::registry_bin_or_skip!();
    let reg = TestRegistry::start().await;
    let c = client();
    let base = reg.url();
    assert_eq!(reg.host(), format!("127.0.0.1:{}", reg.addr().port()));
    assert!(reg.storage_dir().is_dir());

    let v2 = c.get(format!("{base}/v2/")).send().await.expect("GET /v2/");
    assert_eq!(v2.status(), StatusCode::OK);

    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = blob(4096, 7);
    let config_digest = push_blob(&c, &base, "x", &config, None).await;
    let layer_digest = push_blob(&c, &base, "x", &layer, None).await;
    let fetched = get_blob(&c, &base, "x", &layer_digest).await;
    assert_eq!(fetched.status(), StatusCode::OK);
    assert_eq!(fetched.bytes().await.expect("blob body").as_ref(), &layer[..]);

    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer.len()}],
    }))
    .expect("manifest json");
    let mt = "application/vnd.oci.image.manifest.v1+json";
    let put = c
        .put(format!("{base}/v2/x/manifests/v1"))
        .header(header::CONTENT_TYPE, mt)
        .body(manifest.clone())
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(put.status(), StatusCode::CREATED, "{:?}", put.text().await);

    let got = c
        .get(format!("{base}/v2/x/manifests/v1"))
        .header(header::ACCEPT, mt)
        .send()
        .await
        .expect("GET manifest");
    assert_eq!(got.status(), StatusCode::OK);
    let header_digest = got.headers()["docker-content-digest"].to_str().unwrap().to_owned();
    assert_eq!(header_digest, digest_of(&manifest));
    assert_eq!(got.bytes().await.unwrap().as_ref(), &manifest[..]);
    assert!(
        reg.log_tail(200).contains("\"GET /v2/ HTTP/1.1\" 200"),
        "{}",
        reg.log_tail(5)
    );
}

#[tokio::test]
async fn htpasswd_registry_challenges_basic_and_accepts_the_user() {
    support::registry_bin_or_skip!();
    support::bin_or_skip!(support::HTPASSWD_BIN_ENV, "htpasswd");
    let reg = TestRegistry::start_htpasswd("alice", "s3cret pass").await;
    let c = client();

    let anon = c.get(format!("{}/v2/", reg.url())).send().await.unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let challenge = anon.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
    assert!(challenge.starts_with("Basic "), "{challenge}");

    let wrong = c
        .get(format!("{}/v2/", reg.url()))
        .basic_auth("alice", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let ok = c
        .get(format!("{}/v2/", reg.url()))
        .basic_auth("alice", Some("s3cret pass"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

async fn fetch_token_get(c: &Client, ts: &TokenServer, scope: &str, password: &str) -> reqwest::Response {
    c.get(format!(
        "{}?service={}&scope={}",
        ts.realm(),
        enc(ts.service()),
        enc(scope)
    ))
    .basic_auth("bob", Some(password))
    .send()
    .await
    .expect("token request")
}

async fn token_push_works(hint: KeyHint) {
    let ts = TokenServer::start_with(
        &[("bob", "hunter2")],
        TokenOptions {
            key_hint: hint,
            ..TokenOptions::default()
        },
    )
    .await;
    let reg = TestRegistry::start_token(&ts).await;
    let c = client();

    let anon = c.get(format!("{}/v2/", reg.url())).send().await.unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let challenge = anon.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains(&format!("realm=\"{}\"", ts.realm())), "{challenge}");
    assert!(
        challenge.contains(&format!("service=\"{}\"", ts.service())),
        "{challenge}"
    );

    let resp = fetch_token_get(&c, &ts, "repository:a/b:pull,push", "hunter2").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = json(resp).await;
    let token = body["token"].as_str().expect("token field").to_owned();
    assert_eq!(body["access_token"].as_str(), Some(token.as_str()));
    assert_eq!(body["expires_in"].as_u64(), Some(300));
    let issued_at = body["issued_at"].as_str().expect("issued_at");
    assert!(issued_at.len() == 20 && issued_at.ends_with('Z'), "{issued_at}");

    let data = blob(1000, 3);
    let digest = push_blob(&c, &reg.url(), "a/b", &data, Some(&token)).await;
    let head = c
        .head(format!("{}/v2/a/b/blobs/{digest}", reg.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), StatusCode::OK, "{hint:?}\n{}", reg.log_tail(10));

    // A token for another repository does not grant this one.
    let other = fetch_token_get(&c, &ts, "repository:other:pull", "hunter2").await;
    let other: serde_json::Value = json(other).await;
    let denied = c
        .head(format!("{}/v2/a/b/blobs/{digest}", reg.url()))
        .bearer_auth(other["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);

    let wrong = fetch_token_get(&c, &ts, "repository:a/b:pull", "wrong").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let anon_token = c.get(ts.realm()).send().await.unwrap();
    assert_eq!(anon_token.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(ts.request_count(), 4);
    assert_eq!(ts.issued_tokens().len(), 2);
    assert_eq!(ts.issued_tokens()[0], token);
    let reqs = ts.requests();
    assert!(reqs[0].credentials_valid && reqs[0].scopes == ["repository:a/b:pull,push"]);
    assert!(reqs[2].had_credentials && !reqs[2].credentials_valid);
    assert!(!reqs[3].had_credentials && !reqs[3].credentials_valid);
    // Tokens never show up in the registry's own log.
    let log = reg.log_tail(10_000);
    assert!(ts.issued_tokens().iter().all(|t| !log.contains(t.as_str())));
}

#[tokio::test]
async fn token_registry_accepts_x5c_tokens_for_push() {
    support::registry_bin_or_skip!();
    token_push_works(KeyHint::X5c).await;
}

#[tokio::test]
async fn token_registry_accepts_kid_tokens_for_push() {
    support::registry_bin_or_skip!();
    token_push_works(KeyHint::Kid).await;
}

#[tokio::test]
async fn token_server_post_password_and_refresh_grants() {
    support::registry_bin_or_skip!();
    let ts = TokenServer::start(&[("bob", "hunter2")]).await;
    ts.set_expires_in(2);
    let reg = TestRegistry::start_token(&ts).await;
    let c = client();
    let form = |fields: &[(&str, &str)]| {
        fields
            .iter()
            .map(|(k, v)| format!("{k}={}", enc(v)))
            .collect::<Vec<_>>()
            .join("&")
    };
    let post = |body: String| {
        c.post(ts.realm())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };

    let first = post(form(&[
        ("grant_type", "password"),
        ("username", "bob"),
        ("password", "hunter2"),
        ("service", ts.service()),
        ("scope", "repository:a/b:pull repository:c/d:pull,push"),
        ("client_id", "regrelay"),
        ("access_type", "offline"),
    ]))
    .await
    .unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first: serde_json::Value = json(first).await;
    assert_eq!(first["expires_in"].as_u64(), Some(2));
    let refresh = first["refresh_token"].as_str().expect("refresh token").to_owned();

    let second = post(form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &refresh),
        ("service", ts.service()),
        ("scope", "repository:c/d:pull,push"),
        ("client_id", "regrelay"),
    ]))
    .await
    .unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let second: serde_json::Value = json(second).await;
    let token = second["access_token"].as_str().unwrap();
    push_blob(&c, &reg.url(), "c/d", b"refreshed", Some(token)).await;

    let bad = post(form(&[
        ("grant_type", "password"),
        ("username", "bob"),
        ("password", "nope"),
        ("service", ts.service()),
    ]))
    .await
    .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let bad_refresh = post(form(&[("grant_type", "refresh_token"), ("refresh_token", "forged")]))
        .await
        .unwrap();
    assert_eq!(bad_refresh.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(ts.request_count(), 4);
    assert_eq!(ts.issued_tokens().len(), 2);
    assert_eq!(ts.issued_refresh_tokens(), vec![refresh]);
    assert_eq!(ts.requests()[0].scopes.len(), 2);
}

#[tokio::test]
async fn proxy_returns_429_once_then_passes_through() {
    support::registry_bin_or_skip!();
    let reg = TestRegistry::start().await;
    let proxy = FaultProxy::start(&reg.url()).await;
    proxy.add_rule(
        Rule::new(Action::Status {
            code: 429,
            retry_after: Some("1".to_owned()),
            body: Some(r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.to_owned()),
        })
        .method(Method::GET)
        .path_contains("/v2/")
        .times(1),
    );
    let c = client();
    let first = c.get(format!("{}/v2/", proxy.url())).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(first.headers()[header::RETRY_AFTER], "1");
    assert!(first.text().await.unwrap().contains("TOOMANYREQUESTS"));
    let second = c.get(format!("{}/v2/", proxy.url())).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["docker-distribution-api-version"], "registry/2.0");

    let seen = proxy.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].status, seen[0].fault.as_deref()),
        (Some(429), Some("status 429"))
    );
    assert_eq!((seen[1].status, seen[1].fault.as_deref()), (Some(200), None));
    assert_eq!(seen[1].method, Method::GET);
    assert_eq!(seen[1].path_and_query, "/v2/");
    proxy.clear_log();
    assert!(proxy.requests().is_empty());
}

#[tokio::test]
async fn proxy_corrupt_body_flips_one_byte_and_keeps_length() {
    support::registry_bin_or_skip!();
    let reg = TestRegistry::start().await;
    let proxy = FaultProxy::start(&reg.url()).await;
    let c = client();
    let data = blob(300_000, 11);
    let digest = push_blob(&c, &reg.url(), "corrupt/me", &data, None).await;

    proxy.add_rule(
        Rule::new(Action::CorruptBody)
            .method(Method::GET)
            .path_contains("/blobs/")
            .times(1),
    );
    let resp = get_blob(&c, &proxy.url(), "corrupt/me", &digest).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.content_length(), Some(data.len() as u64));
    let got = resp.bytes().await.expect("corrupted body still completes");
    assert_eq!(got.len(), data.len());
    let diffs: Vec<usize> = (0..data.len()).filter(|&i| got[i] != data[i]).collect();
    assert_eq!(diffs, vec![data.len() / 2]);
    assert_ne!(digest_of(&got), digest);

    // The rule was used up: the next fetch is intact.
    let clean = get_blob(&c, &proxy.url(), "corrupt/me", &digest)
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(clean.as_ref(), &data[..]);
}

#[tokio::test]
async fn proxy_reset_after_breaks_the_body_read() {
    support::registry_bin_or_skip!();
    let reg = TestRegistry::start().await;
    let proxy = FaultProxy::start(&reg.url()).await;
    let c = client();
    let data = blob(200_000, 5);
    let digest = push_blob(&c, &reg.url(), "reset/me", &data, None).await;

    proxy.add_rule(
        Rule::new(Action::ResetAfter { bytes: 1000 })
            .path_contains("/blobs/sha256:")
            .times(1),
    );
    let resp = get_blob(&c, &proxy.url(), "reset/me", &digest).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut stream = resp.bytes_stream();
    let mut received = 0usize;
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => received += bytes.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "body read must fail");
    assert_eq!(received, 1000);

    let again = get_blob(&c, &proxy.url(), "reset/me", &digest).await;
    assert_eq!(again.bytes().await.expect("rule used up").as_ref(), &data[..]);
    assert_eq!(proxy.requests()[0].fault.as_deref(), Some("reset_after 1000"));
}

#[tokio::test]
async fn proxy_upload_locations_point_at_the_proxy() {
    support::registry_bin_or_skip!();
    let reg = TestRegistry::start().await;
    let proxy = FaultProxy::start(&reg.url()).await;
    let c = client();

    let resp = c
        .post(format!("{}/v2/via/proxy/blobs/uploads/", proxy.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let loc = resp.headers()[header::LOCATION].to_str().unwrap().to_owned();
    assert!(
        loc.starts_with(&format!("{}/v2/via/proxy/blobs/uploads/", proxy.url())),
        "{loc}"
    );

    // The whole upload through the proxy works and lands in the registry.
    let data = blob(70_000, 9);
    let digest = push_blob(&c, &proxy.url(), "via/proxy", &data, None).await;
    let direct = get_blob(&c, &reg.url(), "via/proxy", &digest).await;
    assert_eq!(direct.bytes().await.unwrap().as_ref(), &data[..]);
    assert!(proxy.requests().iter().all(|s| s.fault.is_none()));
}

#[tokio::test]
async fn proxy_down_stall_and_413() {
    support::registry_bin_or_skip!();
    let reg = TestRegistry::start().await;
    let proxy = FaultProxy::start(&reg.url()).await;
    let c = client();
    let v2 = format!("{}/v2/", proxy.url());

    proxy.set_down(true);
    let err = c.get(&v2).send().await.expect_err("down proxy gives no response");
    assert!(!err.is_status(), "{err:?}");
    proxy.set_down(false);
    assert_eq!(c.get(&v2).send().await.unwrap().status(), StatusCode::OK);

    proxy.add_rule(Rule::new(Action::Down).path_contains("/v2/").times(1));
    assert!(c.get(&v2).send().await.is_err());
    assert_eq!(c.get(&v2).send().await.unwrap().status(), StatusCode::OK);

    proxy.add_rule(
        Rule::new(Action::Stall {
            delay: Duration::from_millis(300),
        })
        .times(1),
    );
    let started = tokio::time::Instant::now();
    assert_eq!(c.get(&v2).send().await.unwrap().status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Monolithic upload over 1 KiB is refused; a small one passes the same rule.
    proxy.add_rule(Rule::new(Action::Reject413IfBodyOver { bytes: 1024 }).method(Method::PUT));
    let big = blob(5000, 1);
    let resp = c
        .post(format!("{}/v2/mono/blobs/uploads/", proxy.url()))
        .send()
        .await
        .unwrap();
    let upload = location(&resp, &proxy.url());
    let put = c
        .put(format!("{upload}&digest={}", enc(&digest_of(&big))))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::PAYLOAD_TOO_LARGE);
    push_blob(&c, &proxy.url(), "mono", b"small enough", None).await;

    let faults: Vec<Option<String>> = proxy.requests().into_iter().map(|s| s.fault).collect();
    assert_eq!(faults.iter().filter(|f| f.as_deref() == Some("down")).count(), 2);
    assert!(faults.contains(&Some("reject413".to_owned())));
    assert!(
        faults
            .iter()
            .any(|f| f.as_deref().is_some_and(|f| f.starts_with("stall")))
    );

    // A stopped upstream shows as 502.
    drop(reg);
    let gone = c.get(&v2).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn registry_stop_and_start_again_keeps_data() {
    support::registry_bin_or_skip!();
    let mut reg = TestRegistry::start().await;
    let c = client();
    let data = blob(2048, 13);
    let digest = push_blob(&c, &reg.url(), "keep/me", &data, None).await;

    let status = reg.stop().await;
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert!(!reg.is_running());
    assert!(c.get(format!("{}/v2/", reg.url())).send().await.is_err());

    reg.start_again().await;
    assert!(reg.is_running());
    let resp = get_blob(&c, &reg.url(), "keep/me", &digest).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), &data[..]);
}

#[tokio::test]
async fn concurrent_registries_get_different_ports() {
    support::registry_bin_or_skip!();
    let (a, b) = tokio::join!(TestRegistry::start(), TestRegistry::start());
    assert_ne!(a.addr(), b.addr());
    assert_ne!(a.storage_dir(), b.storage_dir());
    let c = client();
    for reg in [&a, &b] {
        let resp = c.get(format!("{}/v2/", reg.url())).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}

#[test]
fn missing_binary_skips_locally_and_fails_in_ci() {
    let mut out = Vec::new();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        support::require_bin_reporting("REGRELAY_TEST_NO_SUCH_VAR", "regrelay-no-such-binary-3f9a", &mut out)
    }));
    let out = String::from_utf8(out).unwrap();
    if std::env::var_os("CI").is_some() {
        assert!(outcome.is_err(), "CI must fail instead of skipping");
        assert!(out.is_empty(), "no skip line under CI: {out}");
    } else {
        assert_eq!(outcome.ok(), Some(None));
        // One machine-readable line naming this test and the reason, for scripts/test.sh.
        assert_eq!(
            out,
            "SKIPPED: harness_selftest::missing_binary_skips_locally_and_fails_in_ci: \
             `regrelay-no-such-binary-3f9a` not found on PATH (set REGRELAY_TEST_NO_SUCH_VAR to its location)\n"
        );
    }
    let mut out = Vec::new();
    assert!(support::require_bin_reporting("REGRELAY_TEST_NO_SUCH_VAR", "sh", &mut out).is_some());
    assert!(out.is_empty(), "a binary that is there is no skip");
}

/// scripts/test.sh's closing lines for `log` (its awk script, as test.sh runs it).
fn test_sh_summary(log: &str, packaging_passed: u32) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cargo-test.log");
    std::fs::write(&path, log).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-summary.awk");
    let out = std::process::Command::new("awk")
        .arg("-v")
        .arg(format!("pp={packaging_passed}"))
        .args(["-v", "pf=0", "-f"])
        .arg(&script)
        .arg(&path)
        .output()
        .expect("run awk");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn test_sh_counts_a_test_skipped_for_a_missing_tool_as_skipped_and_says_why() {
    // A log shaped like `cargo test`'s, with the line the harness writes when a test skips
    // (libtest still reports that test `ok`).
    let skip = support::skip_line("`gcloud` not found on PATH (set TEST_GCLOUD_BIN to its location)");
    let log = format!(
        "running 3 tests\ntest a ... ok\n{skip}test b ... ok\ntest c ... ignored\n\
         test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\n\
         running 2 tests\ntest d ... ok\ntest e ... FAILED\n\
         test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n"
    );
    assert_eq!(
        test_sh_summary(&log, 2),
        "skipped for a missing tool (1; under CI=true these fail instead):\n  \
         harness_selftest::test_sh_counts_a_test_skipped_for_a_missing_tool_as_skipped_and_says_why: \
         `gcloud` not found on PATH (set TEST_GCLOUD_BIN to its location)\n\
         tests: 4 passed, 1 failed, 2 skipped\n"
    );
    // Without a skip line every `ok` is a pass, and the closing line is all there is.
    let log = log.replace(&skip, "");
    assert_eq!(test_sh_summary(&log, 0), "tests: 3 passed, 1 failed, 1 skipped\n");
}
