//! Gates on rules and promotions (issue 14, item 3) against real `docker-registry`
//! processes: the real `regrelay run` binary fed by the real Pub/Sub emulator, real exec
//! gates (shell commands) and cosign gates over signatures made in cosign's format;
//! `regrelay promote` with gates; a rule naming an unknown gate.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use regrelay::config::watch::GateConfig;
use regrelay::engine::{Execute as _, Executor, Item, Memory, Outcome, Repo};
use regrelay::gates::GateSet;
use regrelay::oci::{Digest, Locator};
use regrelay::registry::{HttpRegistry, Registry as _, RegistrySet};
use regrelay::replicate::{ErrorClass, Options};
use support::cosign::{Claim, new_key, pem, sign};
use support::image;
use support::{Daemon, LONG, PubSubEmulator, Registries, SETTLED, ar_insert, mirror_config, tag_digest};

const TOPIC: &str = "gar";
const SUB: &str = "regrelay";
const GATES: &str = "regrelay_gate_results_total";
use support::cli::{BIN, run, text};

/// The mirror config (everything of `src` to `dst/mirror/{repository}`) over the emulator,
/// its rule requiring `require` (a TOML list), plus `gate_tables`.
fn config(emu: &PubSubEmulator, src: &str, dst: &str, require: &str, gate_tables: &str) -> String {
    let source = format!(
        "[source]\nkind = \"pubsub\"\nsubscription = \"{}\"\nendpoint = \"{}\"\nlease_extension_secs = 10",
        emu.subscription_path(SUB),
        emu.endpoint()
    );
    let cfg = mirror_config(&source, src, dst, 5);
    let with = cfg.replace(
        "untagged = \"replicate\"\n",
        &format!("untagged = \"replicate\"\nrequire = {require}\n"),
    );
    assert_ne!(with, cfg, "the rule takes `require`");
    with + gate_tables
}

/// An exec gate `name` running `script` with `sh -c`, after appending `$REGRELAY_IMAGE` to
/// `log`.
fn exec_gate(name: &str, log: &Path, script: &str) -> String {
    let script = format!("echo \"$REGRELAY_IMAGE\" >> {}\n{script}", log.display());
    format!("\n[gates.{name}]\nkind = \"exec\"\ntimeout_secs = 30\nargv = [\"sh\", \"-c\", {script:?}]\n")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn has_digest(reg: &HttpRegistry, repo: &str, d: &Digest) -> bool {
    reg.head_manifest(repo, &Locator::Digest(d.clone()))
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn a_rule_writes_the_target_tag_only_after_its_exec_gate_passed_the_target_digest() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gate.log");
    let mark = dir.path().join("later.mark");
    // team/bad fails its smoke test; team/later asks once to be tried later, then passes;
    // everything else passes.
    let script = format!(
        "case \"$REGRELAY_IMAGE\" in\n\
         */mirror/team/bad@sha256:*) echo 'smoke test failed: app exited 3'; exit 3;;\n\
         */mirror/team/later@sha256:*) if [ -e {m} ]; then exit 0; fi; touch {m}; echo 'database not ready'; exit 75;;\n\
         esac",
        m = mark.display()
    );
    let good = image::push_simple(&s, "team/good", "1.0", 2000, 1).await;
    // A second tag of the same digest: its gates are not run again.
    let good2 = image::push_simple(&s, "team/good", "1.1", 2000, 1).await;
    assert_eq!(good.digest, good2.digest);
    let bad = image::push_simple(&s, "team/bad", "1.0", 2000, 2).await;
    let later = image::push_simple(&s, "team/later", "1.0", 2000, 3).await;
    let cfg = config(
        &emu,
        &src.host(),
        &dst.host(),
        "[\"smoke\"]",
        &exec_gate("smoke", &log, &script),
    );
    let daemon = Daemon::start(&cfg).await;

    let h = src.host();
    emu.publish(
        TOPIC,
        &ar_insert(&h, "team/good", Some("1.0"), &good.digest.to_string()),
    )
    .await;
    emu.publish(TOPIC, &ar_insert(&h, "team/bad", Some("1.0"), &bad.digest.to_string()))
        .await;
    emu.publish(
        TOPIC,
        &ar_insert(&h, "team/later", Some("1.0"), &later.digest.to_string()),
    )
    .await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 2.0)
        .await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "rejected")], LONG, |v| v == 1.0)
        .await;
    emu.publish(
        TOPIC,
        &ar_insert(&h, "team/good", Some("1.1"), &good.digest.to_string()),
    )
    .await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 3.0)
        .await;

    let want = |p: &image::Pushed| Some(p.digest.to_string());
    assert_eq!(tag_digest(&d, "mirror/team/good", "1.0").await, want(&good));
    assert_eq!(tag_digest(&d, "mirror/team/good", "1.1").await, want(&good));
    assert_eq!(tag_digest(&d, "mirror/team/later", "1.0").await, want(&later));
    // The rejected digest was copied (the gate ran against it there) but never tagged.
    assert_eq!(tag_digest(&d, "mirror/team/bad", "1.0").await, None);
    assert!(has_digest(&d, "mirror/team/bad", &bad.digest).await);
    // "Try again later" handed the message back (nacked) before it passed.
    assert!(daemon.metric(SETTLED, &[("outcome", "nacked")]).await >= 1.0);
    assert_eq!(daemon.metric(SETTLED, &[("outcome", "rejected")]).await, 1.0);
    assert_eq!(
        daemon.metric(GATES, &[("gate", "smoke"), ("outcome", "fail")]).await,
        1.0
    );
    assert_eq!(
        daemon.metric(GATES, &[("gate", "smoke"), ("outcome", "retry")]).await,
        1.0
    );
    assert_eq!(
        daemon.metric(GATES, &[("gate", "smoke"), ("outcome", "pass")]).await,
        2.0
    );

    // Every gate saw the exact target digest, never a tag; good ran once for two tags.
    let seen = lines(&log);
    let at = |repo: &str, p: &image::Pushed| format!("{}/mirror/{repo}@{}", dst.host(), p.digest);
    assert_eq!(
        seen.iter().filter(|l| **l == at("team/good", &good)).count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|l| **l == at("team/bad", &bad)).count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|l| **l == at("team/later", &later)).count(),
        2,
        "{seen:?}"
    );
    assert_eq!(seen.len(), 4, "{seen:?}");
    // The rejection is logged with the gate's output tail.
    let log_text = daemon.log();
    assert!(log_text.contains("smoke test failed: app exited 3"), "{log_text}");
}

/// A cosign gate `signed` trusting `key` (its public key written under `dir`), plus `extra`
/// lines in its table.
fn cosign_gate(dir: &Path, key: &p256::ecdsa::SigningKey, extra: &str) -> String {
    let keyfile = dir.join("cosign.pub");
    std::fs::write(&keyfile, pem(key)).unwrap();
    format!(
        "\n[gates.signed]\nkind = \"cosign\"\nkeys = [{:?}]\n{extra}",
        keyfile.display().to_string()
    )
}

/// The messages left in the subscription once the daemon stopped; with `expect_some`,
/// waits for them: the daemon nacks what it held at shutdown, yet the emulator mostly
/// goes on delivering it to the closed stream at each ack deadline, so it is pulled
/// often until it shows (`peek_within`; see tests/daemon.rs).
async fn left(emu: &PubSubEmulator, expect_some: bool) -> Vec<serde_json::Value> {
    let within = if expect_some {
        Duration::from_secs(150)
    } else {
        Duration::ZERO
    };
    let left = emu.peek_within(SUB, 10, within).await;
    left.iter().map(|m| serde_json::from_slice(m).unwrap()).collect()
}

#[tokio::test]
async fn a_rule_with_a_cosign_gate_tags_only_images_signed_by_its_key() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let dir = tempfile::tempdir().unwrap();
    let key = new_key(7);
    let signed = image::push_simple(&s, "team/signed", "1.0", 2000, 11).await;
    sign(&s, "team/signed", &signed.digest, &key, &Claim::default()).await;
    let unsigned = image::push_simple(&s, "team/unsigned", "1.0", 2000, 12).await;
    let other = image::push_simple(&s, "team/other-key", "1.0", 2000, 13).await;
    sign(&s, "team/other-key", &other.digest, &new_key(8), &Claim::default()).await;
    let gate = cosign_gate(dir.path(), &key, "");
    let mut daemon = Daemon::start(&config(&emu, &src.host(), &dst.host(), "[\"signed\"]", &gate)).await;

    let h = src.host();
    for (repo, p) in [
        ("team/signed", &signed),
        ("team/unsigned", &unsigned),
        ("team/other-key", &other),
    ] {
        emu.publish(TOPIC, &ar_insert(&h, repo, Some("1.0"), &p.digest.to_string()))
            .await;
    }
    daemon
        .wait_metric(SETTLED, &[("outcome", "rejected")], LONG, |v| v == 1.0)
        .await;
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    // The never-signed image is not rejected: it is handed back again and again (retry
    // delay 1-2 s), gated each time, never tagged.
    daemon
        .wait_metric(GATES, &[("gate", "signed"), ("outcome", "retry")], LONG, |v| v >= 3.0)
        .await;
    assert!(daemon.metric(SETTLED, &[("outcome", "nacked")]).await >= 2.0);
    // The signature travelled with the image; the gate verified it at the target.
    assert_eq!(
        tag_digest(&d, "mirror/team/signed", "1.0").await,
        Some(signed.digest.to_string())
    );
    assert_eq!(tag_digest(&d, "mirror/team/unsigned", "1.0").await, None);
    assert_eq!(tag_digest(&d, "mirror/team/other-key", "1.0").await, None);
    assert_eq!(
        daemon.metric(GATES, &[("gate", "signed"), ("outcome", "pass")]).await,
        1.0
    );
    // A signature by another key is a rejection, not a retry.
    assert_eq!(
        daemon.metric(GATES, &[("gate", "signed"), ("outcome", "fail")]).await,
        1.0
    );
    assert_eq!(daemon.metric(SETTLED, &[("outcome", "rejected")]).await, 1.0);
    assert_eq!(daemon.metric(SETTLED, &[("outcome", "acked")]).await, 1.0);
    let log = daemon.log();
    assert!(log.contains("no cosign signature"), "{log}");
    assert!(log.contains("verifies with none of the keys"), "{log}");
    // Stopped, the daemon hands the waiting message back: it is still in the subscription.
    let (status, _) = daemon.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    let left = left(&emu, true).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["tag"], format!("{h}/team/unsigned:1.0"));
}

#[tokio::test]
async fn an_image_signed_after_its_push_event_is_tagged_once_its_signature_exists() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let emu = PubSubEmulator::with_subscription(TOPIC, SUB).await;
    let dir = tempfile::tempdir().unwrap();
    let key = new_key(7);
    let gate = cosign_gate(dir.path(), &key, "");
    let mut daemon = Daemon::start(&config(&emu, &src.host(), &dst.host(), "[\"signed\"]", &gate)).await;

    // CI's order: push, the push event goes out, then `cosign sign`.
    let app = image::push_simple(&s, "team/app", "1.0", 2000, 51).await;
    emu.publish(
        TOPIC,
        &ar_insert(&src.host(), "team/app", Some("1.0"), &app.digest.to_string()),
    )
    .await;
    // The first delivery copies the image, finds no signature and hands the message back;
    // the redelivery finds none either.
    daemon
        .wait_metric(GATES, &[("gate", "signed"), ("outcome", "retry")], LONG, |v| v >= 2.0)
        .await;
    assert_eq!(tag_digest(&d, "mirror/team/app", "1.0").await, None);
    assert!(
        has_digest(&d, "mirror/team/app", &app.digest).await,
        "copied to be gated"
    );
    sign(&s, "team/app", &app.digest, &key, &Claim::default()).await;

    // A redelivery copies again (the image is at the target, its tag is not): the
    // signature comes along, the gate passes at the target, the tag is written, acked.
    daemon
        .wait_metric(SETTLED, &[("outcome", "acked")], LONG, |v| v == 1.0)
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/team/app", "1.0").await,
        Some(app.digest.to_string())
    );
    let sig_tag = format!("{}.sig", app.digest.fallback_tag());
    let sig = d
        .head_manifest("mirror/team/app", &Locator::Tag(sig_tag))
        .await
        .unwrap();
    assert!(sig.is_some(), "the signature is at the target");
    assert_eq!(
        daemon.metric(GATES, &[("gate", "signed"), ("outcome", "pass")]).await,
        1.0
    );
    assert_eq!(
        daemon.metric(GATES, &[("gate", "signed"), ("outcome", "fail")]).await,
        0.0
    );
    assert_eq!(daemon.metric(SETTLED, &[("outcome", "rejected")]).await, 0.0);
    let (status, _) = daemon.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(
        left(&emu, false).await,
        Vec::<serde_json::Value>::new(),
        "the message was acked"
    );
}

#[tokio::test]
async fn a_promotion_whose_gate_fails_writes_no_destination_tag_and_exits_non_zero() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gate.log");
    let app = image::push_simple(&s, "app", "1.0", 2000, 21).await;
    let config = dir.path().join("regrelay.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"file\"\n[registries.\"{}\"]\n[registries.\"{}\"]\n{}{}",
            src.host(),
            dst.host(),
            exec_gate("smoke", &log, "echo 'smoke failed'; exit 1"),
            exec_gate("ok", &log, "exit 0"),
        ),
    )
    .unwrap();
    let registries = format!(
        "registries:\n- name: {}\n  src: true\n- name: {}\n",
        src.host(),
        dst.host()
    );
    let images = format!("images:\n- name: app\n  dmap:\n    \"{}\": [\"1.0\"]\n", app.digest);
    let manifest = dir.path().join("promoter-manifest.yaml");
    let cfg = config.display().to_string();
    let m = manifest.display().to_string();

    // The manifest requires the failing gate: the digest is copied and gated there, the
    // tag is not written, and the run fails.
    std::fs::write(&manifest, format!("{registries}require: [smoke]\n{images}")).unwrap();
    let o = run(&["promote", "--manifest", &m, "--config", &cfg, "--confirm"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("smoke failed"), "{}", text(&o));
    assert_eq!(tag_digest(&d, "app", "1.0").await, None);
    assert_eq!(lines(&log), [format!("{}/app@{}", dst.host(), app.digest)]);

    // A kpromo manifest (no `require:`) with `--require` of a passing gate: promoted.
    std::fs::write(&manifest, format!("{registries}{images}")).unwrap();
    let o = run(&[
        "promote",
        "--manifest",
        &m,
        "--config",
        &cfg,
        "--confirm",
        "--require",
        "ok",
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(tag_digest(&d, "app", "1.0").await, Some(app.digest.to_string()));
    assert_eq!(lines(&log).len(), 2);

    // Unknown gates: in the manifest, an error naming file, line and field; in
    // `--require`, a usage error. Nothing runs.
    std::fs::write(&manifest, format!("{registries}require:\n- nope\n{images}")).unwrap();
    let o = run(&["promote", "--manifest", &m, "--config", &cfg, "--confirm"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{m}:5: require[0]: unknown gate \"nope\"")),
        "{}",
        text(&o)
    );
    std::fs::write(&manifest, format!("{registries}{images}")).unwrap();
    let o = run(&["promote", "--manifest", &m, "--config", &cfg, "--require", "nope"]).await;
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    assert_eq!(lines(&log).len(), 2, "no gate ran");
}

#[tokio::test]
async fn a_rule_requiring_an_unknown_gate_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("regrelay.toml");
    std::fs::write(
        &path,
        "[source]\nkind = \"file\"\n[registries.\"a.example\"]\n[registries.\"b.example\"]\n\
         [[rules]]\nsource_registry = \"a.example\"\nrepository = \"**\"\nrequire = [\"smoke\"]\n\
         [[rules.targets]]\nregistry = \"b.example\"\n",
    )
    .unwrap();
    let o = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{}:8: rules[0].require[0]: unknown gate \"smoke\"",
            path.display()
        )),
        "{err}"
    );
}

/// An executor over `src` and `dst` with one exec gate `smoke` running `script` (after
/// appending `$REGRELAY_IMAGE` to `log`).
fn executor(src: &str, dst: &str, log: &Path, script: &str) -> Executor<RegistrySet> {
    let script = format!("echo \"$REGRELAY_IMAGE\" >> {}\n{script}", log.display());
    let mut cfg = BTreeMap::new();
    cfg.insert(
        "smoke".to_string(),
        GateConfig::Exec {
            argv: vec!["sh".into(), "-c".into(), script],
            timeout: Duration::from_secs(30),
            max_output_bytes: 4096,
            pass_env: Vec::new(),
        },
    );
    let engine = image::engine(vec![image::anon(src), image::anon(dst)], Options::default());
    let memory = Memory {
        ttl: Duration::from_secs(600),
        max_entries: 1000,
    };
    Executor::new(Arc::new(engine), memory).with_gates(Arc::new(GateSet::from_config(&cfg).unwrap()))
}

#[tokio::test]
async fn a_digest_only_item_is_copied_then_gated_and_a_rejected_digest_never_gets_a_tag() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gate.log");
    let ex = executor(&src.host(), &dst.host(), &log, "echo 'no good'; exit 1");
    let app = image::push_simple(&s, "app", "1.0", 2000, 31).await;
    let item = |tag: Option<&str>| Item::Digest {
        source: Repo::new(src.host(), "app"),
        digest: app.digest.clone(),
        target: Repo::new(dst.host(), "app"),
        tag: tag.map(str::to_string),
        require: vec!["smoke".into()],
    };

    // Untagged: copied (the gate needs it at the target), gated, rejected; by digest only.
    let f = ex.execute(&item(None), "r").await.unwrap_err();
    assert_eq!(f.class, ErrorClass::Permanent, "{f:?}");
    assert!(f.message.contains("no good"), "{f:?}");
    assert!(has_digest(&d, "app", &app.digest).await);
    assert_eq!(lines(&log), [format!("{}/app@{}", dst.host(), app.digest)]);

    // A tag for the rejected digest: refused from memory, no second run, no tag.
    let f = ex.execute(&item(Some("1.0")), "r").await.unwrap_err();
    assert_eq!(f.class, ErrorClass::Permanent, "{f:?}");
    assert!(f.message.contains("remembered"), "{f:?}");
    assert_eq!(tag_digest(&d, "app", "1.0").await, None);
    assert_eq!(lines(&log).len(), 1);

    // A target tag already at the digest (written by someone else) is in place: no gate.
    image::push_simple(&d, "app", "2.0", 2000, 31).await;
    let done = ex.execute(&item(Some("2.0")), "r").await;
    assert!(matches!(done, Ok(Outcome::Done(_))), "{done:?}");
    assert_eq!(lines(&log).len(), 1);

    // Without `require`, the same executor tags as before.
    let plain = Item::Digest {
        source: Repo::new(src.host(), "app"),
        digest: app.digest.clone(),
        target: Repo::new(dst.host(), "app"),
        tag: Some("1.0".into()),
        require: Vec::new(),
    };
    assert!(ex.execute(&plain, "r").await.is_ok());
    assert_eq!(tag_digest(&d, "app", "1.0").await, Some(app.digest.to_string()));
}

#[tokio::test]
async fn regrelay_sync_gates_the_tags_it_repairs() {
    support::registry_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gate.log");
    let good = image::push_simple(&s, "team/good", "1.0", 2000, 41).await;
    image::push_simple(&s, "team/bad", "1.0", 2000, 42).await;
    let config = dir.path().join("regrelay.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nkind = \"file\"\n[registries.\"{s}\"]\n[registries.\"{d}\"]\n\
             [[rules]]\nsource_registry = \"{s}\"\nrepository = \"team/*\"\nrepositories = [\"team/good\", \"team/bad\"]\nrequire = [\"smoke\"]\n\
             [[rules.targets]]\nregistry = \"{d}\"\n{}",
            exec_gate(
                "smoke",
                &log,
                "case \"$REGRELAY_IMAGE\" in */team/bad@*) echo 'bad image'; exit 1;; esac"
            ),
            s = src.host(),
            d = dst.host(),
        ),
    )
    .unwrap();
    let o = tokio::process::Command::new(BIN)
        .args(["sync", "--config"])
        .arg(&config)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "a rejected repair is an error: {}", text(&o));
    assert_eq!(tag_digest(&d, "team/good", "1.0").await, Some(good.digest.to_string()));
    assert_eq!(tag_digest(&d, "team/bad", "1.0").await, None);
    assert_eq!(lines(&log).len(), 2, "{:?}", lines(&log));
    assert!(
        lines(&log)
            .iter()
            .all(|l| l.starts_with(&format!("{}/team/", dst.host())) && l.contains("@sha256:"))
    );
}
