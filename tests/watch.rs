//! Buffered base images (issue 14) against real `docker-registry` processes (tier 3): an
//! "upstream" registry stands in for Docker Hub, a "central" one holds the staging and
//! target repositories. Signatures are made here in cosign's format with generated P-256
//! keys; gates and notifications are real commands.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use regrelay::app::AppWatcher;
use regrelay::config::Auth;
use regrelay::gates::{CosignGate, PublicKey, Subject, Verdict};
use regrelay::oci::{self, Digest, Locator};
use regrelay::registry::{HttpRegistry, Registry, RegistrySet};
use regrelay::watch::TagOutcome;
use support::cosign::{Claim, new_key, pem, sign};
use support::image::{self, Pushed};
use support::{Action, FaultProxy, Rule, TestRegistry};

const UP: &str = "library/node";
const STAGING: &str = "staging/node";
const TARGET: &str = "base/node";

struct Env {
    _up: TestRegistry,
    _central: TestRegistry,
    up_host: String,
    central_host: String,
    up: HttpRegistry,
    central: HttpRegistry,
    dir: tempfile::TempDir,
    key: p256::ecdsa::SigningKey,
}

impl Env {
    async fn start() -> Env {
        let (up, central) = (TestRegistry::start().await, TestRegistry::start().await);
        let (up_host, central_host) = (up.host(), central.host());
        let key = new_key(1);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cosign.pub"), pem(&key)).unwrap();
        Env {
            up: image::client(&up_host, Auth::Anonymous),
            central: image::client(&central_host, Auth::Anonymous),
            _up: up,
            _central: central,
            up_host,
            central_host,
            dir,
            key,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A config with one watch of `UP:22` (staging and target on central), the given gates
    /// (TOML tables) and an exec notification that appends its environment to notify.log.
    fn config(&self, gates: &[&str], gate_tables: &str, extra: &str) -> String {
        let gates = gates.iter().map(|g| format!("{g:?}")).collect::<Vec<_>>().join(", ");
        format!(
            r#"
[registries."{up}"]
retry = {{ attempts = 2, min_delay_ms = 50, max_delay_ms = 200, max_retry_after_secs = 1 }}
[registries."{central}"]
retry = {{ attempts = 2, min_delay_ms = 50, max_delay_ms = 200, max_retry_after_secs = 1 }}

[[watch]]
name = "node"
source = "{up}/{UP}"
tags = ["22"]
interval_secs = 60
staging = "{central}/{STAGING}"
target = "{central}/{TARGET}"
target_tags = ["{{tag}}", "{{tag}}-{{digest12}}"]
gates = [{gates}]
notify = ["log"]

[notify.log]
kind = "exec"
argv = ["sh", "-c", "echo \"$REGRELAY_IMAGE $REGRELAY_SOURCE\" >> {notify}"]

{gate_tables}
{extra}
"#,
            up = self.up_host,
            central = self.central_host,
            notify = self.path("notify.log"),
        )
    }

    fn watcher(&self, config: &str) -> Arc<AppWatcher> {
        let cfg = regrelay::config::load_str(config, Path::new("watch.toml")).expect("valid config");
        regrelay::app::watcher(&cfg).expect("watcher")
    }

    /// Push a new image under `UP:22` and sign it (valid signature).
    async fn push_signed(&self, seed: u64) -> Pushed {
        let p = image::push_simple(&self.up, UP, "22", 200, seed).await;
        sign(&self.up, UP, &p.digest, &self.key, &Claim::default()).await;
        p
    }

    async fn target_tag(&self, tag: &str) -> Option<Digest> {
        self.central
            .head_manifest(TARGET, &Locator::Tag(tag.into()))
            .await
            .unwrap()
            .and_then(|h| h.digest)
    }

    fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn counter_gate(name: &str, log: &str, script: &str) -> String {
    format!(
        "[gates.{name}]\nkind = \"exec\"\ntimeout_secs = 30\nargv = [\"sh\", \"-c\", {:?}]\n",
        format!("echo \"$REGRELAY_IMAGE\" >> {log}; {script}")
    )
}

#[tokio::test]
async fn new_upstream_digest_is_staged_gated_promoted_by_digest_and_notified() {
    support::registry_bin_or_skip!();
    let env = Env::start().await;
    let gate_log = env.path("gate.log");
    let keys = env.path("cosign.pub");
    let tables = format!(
        "{}\n[gates.signed]\nkind = \"cosign\"\nkeys = [{keys:?}]\n",
        counter_gate("smoke", &gate_log, "exit 0")
    );
    let w = env.watcher(&env.config(&["signed", "smoke"], &tables, ""));
    let first = env.push_signed(1).await;

    let report = w.run_once().await;
    assert_eq!(
        report[0].1,
        vec![("22".to_string(), TagOutcome::Promoted(first.digest.clone()))]
    );
    let short = &first.digest.hex()[..12];
    assert_eq!(env.target_tag("22").await, Some(first.digest.clone()));
    assert_eq!(env.target_tag(&format!("22-{short}")).await, Some(first.digest.clone()));
    // Gated by digest in staging, never by tag.
    let staged = format!("{}/{STAGING}@{}", env.central_host, first.digest);
    assert_eq!(env.lines("gate.log"), vec![staged]);
    assert_eq!(
        env.lines("notify.log"),
        vec![format!(
            "{}/{TARGET}@{} {}/{UP}:22",
            env.central_host, first.digest, env.up_host
        )]
    );

    // Nothing new: no gate, no notification.
    assert_eq!(w.run_once().await[0].1, vec![("22".to_string(), TagOutcome::Unchanged)]);
    assert_eq!(env.lines("gate.log").len(), 1);

    // The tag moves upstream: the new digest goes through the same flow.
    let second = env.push_signed(2).await;
    assert_eq!(
        w.run_once().await[0].1[0].1,
        TagOutcome::Promoted(second.digest.clone())
    );
    assert_eq!(env.target_tag("22").await, Some(second.digest.clone()));
    // The first digest keeps its unique tag, for rollbacks.
    assert_eq!(env.target_tag(&format!("22-{short}")).await, Some(first.digest));
    assert_eq!(env.lines("notify.log").len(), 2);
}

#[tokio::test]
async fn cosign_gate_accepts_only_a_valid_signature_over_the_subject_digest() {
    support::registry_bin_or_skip!();
    let reg = TestRegistry::start().await;
    let c = image::client(&reg.host(), Auth::Anonymous);
    let set = RegistrySet::from_configs([image::cfg(&reg.host(), Auth::Anonymous)]).unwrap();
    let key = new_key(1);
    let other = new_key(2);
    let gate = CosignGate {
        keys: vec![
            PublicKey::from_pem("unrelated.pub", &pem(&new_key(3))).unwrap(),
            PublicKey::from_pem("cosign.pub", &pem(&key)).unwrap(),
        ],
    };
    let verdict = |repo: &'static str, d: Digest| {
        let (gate, set) = (&gate, &set);
        let subject = Subject {
            registry: reg.host(),
            repository: repo.into(),
            digest: d,
            source: "upstream".into(),
        };
        async move { gate.check(set, &subject).await }
    };
    let fails = |v: Verdict, why: &str| match v {
        Verdict::Fail { reason } => assert!(reason.contains(why), "{reason}"),
        v => panic!("expected a failure ({why}), got {v:?}"),
    };

    let img = image::push_simple(&c, "valid", "1", 100, 1).await;
    sign(&c, "valid", &img.digest, &key, &Claim::default()).await;
    assert_eq!(verdict("valid", img.digest.clone()).await, Verdict::Pass);

    let img = image::push_simple(&c, "unsigned", "1", 100, 2).await;
    fails(verdict("unsigned", img.digest).await, "no cosign signature");

    let img = image::push_simple(&c, "otherkey", "1", 100, 3).await;
    sign(&c, "otherkey", &img.digest, &other, &Claim::default()).await;
    fails(verdict("otherkey", img.digest).await, "none of the keys");

    // A valid signature of another image, copied under this image's signature tag.
    let img = image::push_simple(&c, "otherdigest", "1", 100, 4).await;
    let elsewhere = image::push_simple(&c, "otherdigest", "2", 100, 5).await;
    let claim = Claim {
        digest: Some(elsewhere.digest.clone()),
        ..Claim::default()
    };
    sign(&c, "otherdigest", &img.digest, &key, &claim).await;
    fails(verdict("otherdigest", img.digest).await, "not sha256:");

    let img = image::push_simple(&c, "tampered", "1", 100, 6).await;
    let claim = Claim {
        tampered: true,
        ..Claim::default()
    };
    sign(&c, "tampered", &img.digest, &key, &claim).await;
    fails(verdict("tampered", img.digest).await, "none of the keys");

    let img = image::push_simple(&c, "wrongtype", "1", 100, 7).await;
    let claim = Claim {
        kind: Some("atomic container signature"),
        ..Claim::default()
    };
    sign(&c, "wrongtype", &img.digest, &key, &claim).await;
    fails(verdict("wrongtype", img.digest).await, "payload type");
}

#[tokio::test]
async fn a_rejected_digest_is_not_gated_again_until_the_tag_moves() {
    support::registry_bin_or_skip!();
    let env = Env::start().await;
    let tables = counter_gate("smoke", &env.path("gate.log"), "echo smoke test failed; exit 1");
    let w = env.watcher(&env.config(&["smoke"], &tables, ""));
    let first = env.push_signed(1).await;
    assert_eq!(w.run_once().await[0].1[0].1, TagOutcome::Rejected(first.digest.clone()));
    assert_eq!(w.run_once().await[0].1[0].1, TagOutcome::Unchanged);
    assert_eq!(env.lines("gate.log").len(), 1, "a rejected digest is not gated again");
    assert_eq!(env.target_tag("22").await, None, "nothing promoted");
    assert!(env.lines("notify.log").is_empty());
    let second = env.push_signed(2).await;
    assert_eq!(
        w.run_once().await[0].1[0].1,
        TagOutcome::Rejected(second.digest.clone())
    );
    assert_eq!(env.lines("gate.log").len(), 2, "a moved tag is gated again");
    // The operator asks for a retry (`regrelay watch --retry-rejected`).
    w.forget_rejections().await;
    assert_eq!(w.run_once().await[0].1[0].1, TagOutcome::Rejected(second.digest));
    assert_eq!(env.lines("gate.log").len(), 3);
}

#[tokio::test]
async fn exit_75_defers_the_digest_without_rejecting_it() {
    support::registry_bin_or_skip!();
    let env = Env::start().await;
    let tables = counter_gate("smoke", &env.path("gate.log"), "exit 75");
    let w = env.watcher(&env.config(&["smoke"], &tables, ""));
    let first = env.push_signed(1).await;
    assert_eq!(w.run_once().await[0].1[0].1, TagOutcome::Deferred(first.digest.clone()));
    assert_eq!(w.run_once().await[0].1[0].1, TagOutcome::Deferred(first.digest));
    assert_eq!(env.lines("gate.log").len(), 2, "tried again at the next poll");
    assert_eq!(env.target_tag("22").await, None);
}

#[tokio::test]
async fn a_gate_timeout_rejects_the_digest() {
    support::registry_bin_or_skip!();
    let env = Env::start().await;
    let tables = "[gates.slow]\nkind = \"exec\"\ntimeout_secs = 1\nargv = [\"sleep\", \"30\"]\n";
    let w = env.watcher(&env.config(&["slow"], tables, ""));
    let first = env.push_signed(1).await;
    let started = std::time::SystemTime::now();
    assert_eq!(w.run_once().await[0].1[0].1, TagOutcome::Rejected(first.digest));
    assert!(started.elapsed().unwrap() < Duration::from_secs(20));
    assert_eq!(env.target_tag("22").await, None);
}

#[tokio::test]
async fn the_upstream_tag_moving_while_a_gate_runs_promotes_the_gated_digest() {
    support::registry_bin_or_skip!();
    let env = Env::start().await;
    let (started, go) = (env.path("started"), env.path("go"));
    let script = format!("touch {started}; while [ ! -e {go} ]; do sleep 0.05; done");
    let tables = counter_gate("smoke", &env.path("gate.log"), &script);
    let w = env.watcher(&env.config(&["smoke"], &tables, ""));
    let first = env.push_signed(1).await;
    let run = tokio::spawn({
        let w = w.clone();
        async move { w.run_once().await }
    });
    let deadline = std::time::SystemTime::now() + Duration::from_secs(30);
    while !Path::new(&started).exists() {
        assert!(std::time::SystemTime::now() < deadline, "the gate never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The tag moves upstream while the gate runs.
    let second = env.push_signed(2).await;
    std::fs::write(&go, b"").unwrap();
    let report = run.await.unwrap();
    assert_eq!(report[0].1[0].1, TagOutcome::Promoted(first.digest.clone()));
    assert_eq!(
        env.target_tag("22").await,
        Some(first.digest.clone()),
        "the gated digest, not the new one"
    );
    // The new digest is gated at the next poll.
    assert_eq!(
        w.run_once().await[0].1[0].1,
        TagOutcome::Promoted(second.digest.clone())
    );
    assert_eq!(env.target_tag("22").await, Some(second.digest));
    let gated = env.lines("gate.log");
    assert_eq!(gated.len(), 2);
    assert!(gated[0].ends_with(&first.digest.to_string()), "{gated:?}");
}

#[tokio::test]
async fn a_restart_with_the_state_file_does_not_gate_again_and_without_it_does() {
    support::registry_bin_or_skip!();
    let env = Env::start().await;
    let state = env.path("state.json");
    let tables = counter_gate("smoke", &env.path("gate.log"), "exit 0");
    let config = env.config(&["smoke"], &tables, &format!("[watcher]\nstate_file = {state:?}\n"));
    let first = env.push_signed(1).await;
    assert_eq!(
        env.watcher(&config).run_once().await[0].1[0].1,
        TagOutcome::Promoted(first.digest.clone())
    );
    assert!(
        std::fs::read_to_string(&state)
            .unwrap()
            .contains(&first.digest.to_string())
    );

    // A new process with the state file: nothing to do.
    assert_eq!(env.watcher(&config).run_once().await[0].1[0].1, TagOutcome::Unchanged);
    assert_eq!(env.lines("gate.log").len(), 1);

    // The file is lost: the current digest is gated again, and promoting it again is safe.
    std::fs::remove_file(&state).unwrap();
    assert_eq!(
        env.watcher(&config).run_once().await[0].1[0].1,
        TagOutcome::Promoted(first.digest.clone())
    );
    assert_eq!(env.lines("gate.log").len(), 2);
    assert_eq!(env.target_tag("22").await, Some(first.digest));
}

#[tokio::test]
async fn ratelimit_remaining_below_the_floor_backs_off() {
    support::registry_bin_or_skip!();
    let env = Env::start().await;
    let proxy = FaultProxy::start(&env._up.url()).await;
    proxy.add_rule(
        Rule::new(Action::AddHeaders(vec![
            ("ratelimit-limit".into(), "100;w=21600".into()),
            ("ratelimit-remaining".into(), "0;w=21600".into()),
        ]))
        .method(support::Method::HEAD),
    );
    let tables = counter_gate("smoke", &env.path("gate.log"), "exit 0");
    // The watch polls the upstream through the proxy.
    let config = env
        .config(&["smoke"], &tables, "")
        .replace(
            &format!("source = \"{}/", env.up_host),
            &format!("source = \"{}/", proxy.host()),
        )
        .replacen(
            &format!("[registries.\"{}\"]", env.up_host),
            &format!("[registries.\"{}\"]", proxy.host()),
            1,
        );
    let w = env.watcher(&config);
    let first = env.push_signed(1).await;
    // The first poll reads the headers (and still handles the digest it saw).
    assert_eq!(w.run_once().await[0].1[0].1, TagOutcome::Promoted(first.digest));
    proxy.clear_log();
    assert_eq!(w.run_once().await[0].1[0].1, TagOutcome::Backoff);
    assert!(
        proxy.requests().is_empty(),
        "no request while backing off: {:?}",
        proxy.requests()
    );
    let metrics = regrelay::metrics::global().render();
    let line = format!(
        "regrelay_registry_ratelimit_remaining{{registry=\"{}\"}} 0",
        proxy.host()
    );
    assert!(metrics.contains(&line), "{line} not in metrics");
}

#[tokio::test]
async fn a_promotion_is_published_to_pubsub_and_posted_to_a_webhook() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let env = Env::start().await;
    let emu = support::PubSubEmulator::start().await;
    emu.create_topic("base-images").await;
    emu.create_subscription("builds", "base-images", 10).await;
    // A webhook receiver on loopback.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let _ = tx.send((ct, body.to_vec()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    // A webhook nobody answers: counted as failed, the promotion stands.
    let dead = format!("http://127.0.0.1:{}/hook", support::free_port());
    let tables = format!(
        "[notify.topic]\nkind = \"pubsub\"\ntopic = {:?}\nendpoint = {:?}\n\
         [notify.hook]\nkind = \"webhook\"\nurl = {hook:?}\n\
         [notify.dead]\nkind = \"webhook\"\nurl = {dead:?}\n",
        emu.topic_path("base-images"),
        emu.endpoint()
    );
    let config = env
        .config(&[], &tables, "[watcher]\nnotify_attempts = 2\n")
        .replace("notify = [\"log\"]", "notify = [\"dead\", \"topic\", \"hook\"]");
    let w = env.watcher(&config);
    let first = env.push_signed(1).await;
    assert_eq!(w.run_once().await[0].1[0].1, TagOutcome::Promoted(first.digest.clone()));
    assert_eq!(env.target_tag("22").await, Some(first.digest.clone()));

    let expect = |body: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["digest"], first.digest.to_string());
        assert_eq!(v["image"], format!("{}/{TARGET}@{}", env.central_host, first.digest));
        assert_eq!(v["source"], format!("{}/{UP}:22", env.up_host));
        assert_eq!(v["watch"], "node");
        assert_eq!(v["tags"].as_array().unwrap().len(), 2);
    };
    let (ct, body) = rx.try_recv().expect("the webhook was called");
    assert_eq!(ct, "application/json");
    expect(&body);
    let published = emu.drain("builds", 10).await;
    assert_eq!(published.len(), 1);
    expect(&published[0]);
    let metrics = regrelay::metrics::global().render();
    assert!(metrics.contains("regrelay_watch_notifications_total{notify=\"dead\",outcome=\"failed\"} 1"));
    assert!(metrics.contains("regrelay_watch_notifications_total{notify=\"topic\",outcome=\"sent\"} 1"));
}

#[tokio::test]
async fn docker_io_names_are_resolved_like_docker_hub() {
    support::registry_bin_or_skip!();
    let env = Env::start().await;
    // `docker.io` is dialled at the loopback "upstream" (test-only `test_dial`); the
    // one-segment name `node` is `library/node` there.
    let tables = counter_gate("smoke", &env.path("gate.log"), "exit 0");
    let config = env
        .config(&["smoke"], &tables, "")
        .replace(
            &format!("source = \"{}/{UP}\"", env.up_host),
            "source = \"docker.io/node\"",
        )
        .replacen(
            &format!("[registries.\"{}\"]", env.up_host),
            &format!("[registries.\"docker.io\"]\ntest_dial = \"{}\"", env.up_host),
            1,
        );
    let w = env.watcher(&config);
    let first = env.push_signed(1).await;
    assert_eq!(w.run_once().await[0].1[0].1, TagOutcome::Promoted(first.digest.clone()));
    assert_eq!(env.target_tag("22").await, Some(first.digest));
    assert_eq!(
        env.lines("notify.log")[0].split(' ').nth(1),
        Some("docker.io/library/node:22")
    );
}

#[tokio::test]
async fn regrelay_watch_once_promotes_and_exits_zero() {
    support::registry_bin_or_skip!();
    let env = Env::start().await;
    let tables = counter_gate("smoke", &env.path("gate.log"), "exit 0");
    let config = env.path("watch.toml");
    std::fs::write(&config, env.config(&["smoke"], &tables, "")).unwrap();
    let first = env.push_signed(1).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_regrelay"))
        .args(["watch", "--once", "--log-format", "json", "--config", &config])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("node 22: promoted {}", first.digest));
    assert_eq!(env.target_tag("22").await, Some(first.digest));
}

#[tokio::test]
async fn regrelay_run_with_only_watches_polls_and_promotes_then_stops_cleanly() {
    support::registry_bin_or_skip!();
    let env = Env::start().await;
    let tables = counter_gate("smoke", &env.path("gate.log"), "exit 0");
    let config = format!(
        "[admin]\nlisten = \"{{ADMIN}}\"\n{}",
        env.config(&["smoke"], &tables, "")
            .replace("interval_secs = 60", "interval_secs = 1")
    );
    let first = env.push_signed(1).await;
    let mut daemon = support::Daemon::start(&config).await;
    // Promoted (every target tag written) within the deadline: exactly once.
    let promoted = [("watch", "node"), ("outcome", "promoted")];
    daemon
        .wait_metric("regrelay_watch_promotions_total", &promoted, support::LONG, |v| {
            v >= 1.0
        })
        .await;
    assert_eq!(env.target_tag("22").await, Some(first.digest.clone()));
    assert_eq!(daemon.metric("regrelay_watch_promotions_total", &promoted).await, 1.0);
    assert_eq!(
        daemon
            .metric("regrelay_gate_results_total", &[("gate", "smoke"), ("outcome", "pass")])
            .await,
        1.0
    );
    assert!(
        daemon
            .metric("regrelay_watch_polls_total", &[("watch", "node"), ("outcome", "ok")])
            .await
            >= 1.0
    );
    assert_eq!(daemon.readyz().await, 200, "no source to wait for: ready");
    let (status, _) = daemon.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", daemon.log());
}

#[tokio::test]
async fn cosign_signatures_are_also_found_as_oci_referrers() {
    support::registry_bin_or_skip!();
    // distribution 2.8 has no referrers API: the proxy answers it for the subject with an
    // index naming a signature manifest stored by digest only (no `.sig` tag).
    let reg = TestRegistry::start().await;
    let c = image::client(&reg.host(), Auth::Anonymous);
    let proxy = FaultProxy::start(&reg.url()).await;
    let set = RegistrySet::from_configs([image::cfg(&proxy.host(), Auth::Anonymous)]).unwrap();
    let key = new_key(1);
    let gate = CosignGate {
        keys: vec![PublicKey::from_pem("cosign.pub", &pem(&key)).unwrap()],
    };
    let img = image::push_simple(&c, "app", "1", 100, 1).await;
    let sig = sign(&c, "app", &img.digest, &key, &Claim::default()).await;
    let tag = format!("{}.sig", img.digest.fallback_tag());
    // Make sure only the referrer can lead to the signature: the `.sig` tag answers 404.
    proxy.add_rule(Rule::status(404).path_contains(format!("/manifests/{tag}")));
    let mut entry = sig.descriptor(None);
    entry["artifactType"] = regrelay::gates::COSIGN_ARTIFACT.into();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": [entry]});
    proxy.add_rule(
        Rule::new(Action::Status {
            code: 200,
            retry_after: None,
            body: Some(index.to_string()),
        })
        .path_contains(format!("/referrers/{}", img.digest)),
    );
    let subject = Subject {
        registry: proxy.host(),
        repository: "app".into(),
        digest: img.digest.clone(),
        source: "upstream".into(),
    };
    assert_eq!(gate.check(&set, &subject).await, Verdict::Pass);
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.path_and_query.contains("/referrers/")),
        "the referrers API was asked"
    );
}

#[tokio::test]
async fn glob_tags_are_matched_against_the_upstream_tag_list() {
    support::registry_bin_or_skip!();
    let env = Env::start().await;
    let tables = counter_gate("smoke", &env.path("gate.log"), "exit 0");
    let config = env
        .config(&["smoke"], &tables, "")
        .replace("tags = [\"22\"]", "tags = [\"22-*\", \"*slim\", \"sha256-*\"]")
        .replace(
            "target_tags = [\"{tag}\", \"{tag}-{digest12}\"]",
            "target_tags = [\"{tag}\"]",
        );
    let w = env.watcher(&config);
    // A signed "22" leaves a `sha256-<hex>.sig` tag, which even a "sha256-*" glob skips.
    env.push_signed(9).await;
    let slim = image::push_simple(&env.up, UP, "22-slim", 100, 1).await;
    let alpine = image::push_simple(&env.up, UP, "22-alpine", 100, 2).await;
    image::push_simple(&env.up, UP, "20", 100, 3).await;
    let report = w.run_once().await;
    assert_eq!(
        report[0].1,
        vec![
            ("22-alpine".to_string(), TagOutcome::Promoted(alpine.digest.clone())),
            ("22-slim".to_string(), TagOutcome::Promoted(slim.digest.clone())),
        ]
    );
    assert_eq!(env.target_tag("22-slim").await, Some(slim.digest));
    assert_eq!(env.target_tag("20").await, None);
}
