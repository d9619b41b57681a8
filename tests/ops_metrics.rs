//! End-to-end test of per-destination visibility (issue 15): the real binary, real
//! `docker-registry` processes and the Pub/Sub emulator, observed through `/metrics`.
//! Copies carry the rule and target they served; registry requests are timed per
//! registry, method and status class; process metrics and the build commit are exported.

mod support;

use support::image;
use support::{
    COPIES, Daemon, FaultProxy, LONG, PubSubEmulator, Registries, Rule, SETTLED, mirror_config, sample_sum, tag_digest,
};

const TOPIC: &str = "gcr";
const SUB: &str = "regrelay";

#[tokio::test]
async fn copies_are_labelled_by_rule_and_target_and_requests_are_timed_15() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    let Registries { src, dst, s, d } = Registries::start().await;
    // A second target behind a proxy that answers 500 to everything: copies to it fail.
    let broken = support::TestRegistry::start().await;
    let proxy = FaultProxy::start(&broken.url()).await;
    proxy.add_rule(Rule::status(500));
    let emu = PubSubEmulator::start().await;
    emu.create_topic(TOPIC).await;
    emu.create_subscription(SUB, TOPIC, 10).await;
    let img = image::push_simple(&s, "team/app", "1.0", 50_000, 15).await;

    let source = format!(
        "[source]\nkind = \"pubsub\"\nsubscription = \"{}\"\nendpoint = \"{}\"\nlease_extension_secs = 10",
        emu.subscription_path(SUB),
        emu.endpoint()
    );
    let cfg = format!(
        "{}\n[registries.\"{eu}\"]\nread_timeout_secs = 2\nretry = {{ attempts = 1, min_delay_ms = 50, max_delay_ms = 200, max_retry_after_secs = 1 }}\n\n[[rules]]\nname = \"to-eu\"\nsource_registry = \"{src}\"\nrepository = \"team/**\"\n\n[[rules.targets]]\nregistry = \"{eu}\"\nrepository = \"eu/{{repository}}\"\n",
        mirror_config(&source, &src.host(), &dst.host(), 5),
        eu = proxy.host(),
        src = src.host(),
    );
    let daemon = Daemon::start(&cfg).await;

    // Before any event: the configured (rule, target) pairs exist at zero, and only those.
    let text = daemon.metrics().await;
    let zero = format!(
        r#"regrelay_copies_total{{error_class="none",outcome="replicated",rule="to-eu",target="{}"}} 0"#,
        proxy.host()
    );
    assert!(text.lines().any(|l| l == zero), "missing `{zero}`:\n{text}");
    assert!(
        !text.contains(&format!(r#"rule="to-eu",target="{}""#, dst.host())),
        "a pair no rule names was created:\n{text}"
    );

    let digest = img.digest.to_string();
    let event = serde_json::json!({
        "action": "INSERT",
        "digest": format!("{}/team/app@{digest}", src.host()),
        "tag": format!("{}/team/app:1.0", src.host()),
    });
    emu.publish(TOPIC, &serde_json::to_vec(&event).unwrap()).await;

    let dst_host = dst.host();
    let mirror = [("rule", "mirror"), ("target", dst_host.as_str())];
    let eu_host = proxy.host();
    let to_eu = [("rule", "to-eu"), ("target", eu_host.as_str())];
    daemon
        .wait_metric(
            COPIES,
            &[&mirror[..], &[("outcome", "replicated")]].concat(),
            LONG,
            |v| v == 1.0,
        )
        .await;
    daemon
        .wait_metric(COPIES, &[&to_eu[..], &[("outcome", "failed")]].concat(), LONG, |v| {
            v >= 1.0
        })
        .await;
    assert_eq!(
        tag_digest(&d, "mirror/team/app", "1.0").await.as_deref(),
        Some(digest.as_str())
    );
    // Nothing acked while the second target fails.
    assert_eq!(daemon.metric(SETTLED, &[("outcome", "acked")]).await, 0.0);

    let text = daemon.metrics().await;
    let count = |name: &str, labels: &[(&str, &str)]| sample_sum(&text, name, labels);
    assert_eq!(
        count(COPIES, &[&mirror[..], &[("outcome", "failed")]].concat()),
        0.0,
        "the healthy target's copies do not fail"
    );
    assert_eq!(count(COPIES, &[&to_eu[..], &[("outcome", "replicated")]].concat()), 0.0);
    assert!(
        count(
            "regrelay_copy_duration_seconds_count",
            &[&mirror[..], &[("outcome", "replicated")]].concat()
        ) == 1.0
    );
    assert!(
        count(
            "regrelay_copy_duration_seconds_count",
            &[&to_eu[..], &[("outcome", "failed")]].concat()
        ) >= 1.0
    );
    assert!(!text.contains("team/app"), "a repository reached a label:\n{text}");

    // Registry requests: timed per registry, method and status class.
    let dur = "regrelay_registry_request_duration_seconds_count";
    // A new image at the target: its HEADs find nothing (4xx), its PUTs succeed.
    for (method, class) in [("HEAD", "4xx"), ("PUT", "2xx")] {
        let n = count(
            dur,
            &[("registry", &dst_host), ("method", method), ("status_class", class)],
        );
        assert!(n >= 1.0, "no timed {method} ({class}) to the target:\n{text}");
    }
    let src_host = src.host();
    assert!(
        count(
            dur,
            &[("registry", &src_host), ("method", "GET"), ("status_class", "2xx")]
        ) >= 1.0
    );
    assert!(count(dur, &[("registry", &eu_host), ("status_class", "5xx")]) >= 1.0);
    // Timed requests and counted requests agree, per registry.
    for host in [&src_host, &dst_host, &eu_host] {
        assert_eq!(
            count(dur, &[("registry", host)]),
            count("regrelay_registry_requests_total", &[("registry", host)]),
            "{host}"
        );
    }

    // Process metrics and the build.
    assert!(count("process_resident_memory_bytes", &[]) > 1_000_000.0, "{text}");
    assert!(count("process_open_fds", &[]) >= 3.0);
    assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    let build = text
        .lines()
        .find(|l| l.starts_with("regrelay_build_info{"))
        .expect("build info");
    assert!(
        build.contains(&format!(r#"commit="{}""#, env!("REGRELAY_GIT_COMMIT"))) && build.ends_with(" 1"),
        "{build}"
    );
}
