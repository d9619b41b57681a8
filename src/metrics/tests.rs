//! Unit tests of the metric families: names, HELP/TYPE, closed label sets, caps.

use super::*;

const FAMILIES: [(&str, &str); 22] = [
    ("regrelay_build_info", "gauge"),
    ("regrelay_messages_received_total", "counter"),
    ("regrelay_messages_settled_total", "counter"),
    ("regrelay_deliveries_dropped_total", "counter"),
    ("regrelay_lock_lost_total", "counter"),
    ("regrelay_copies_total", "counter"),
    ("regrelay_copy_duration_seconds", "histogram"),
    ("regrelay_copied_bytes_total", "counter"),
    ("regrelay_blobs_total", "counter"),
    ("regrelay_dedup_hits_total", "counter"),
    ("regrelay_event_lag_seconds", "histogram"),
    ("regrelay_copies_in_flight", "gauge"),
    ("regrelay_messages_waiting", "gauge"),
    ("regrelay_last_success_timestamp_seconds", "gauge"),
    ("regrelay_deletes_total", "counter"),
    ("regrelay_registry_requests_total", "counter"),
    ("regrelay_registry_request_duration_seconds", "histogram"),
    ("regrelay_registry_throttled_total", "counter"),
    ("regrelay_registry_retries_total", "counter"),
    ("regrelay_ready", "gauge"),
    ("regrelay_source_paused", "gauge"),
    ("regrelay_registry_healthy", "gauge"),
];

/// The value of the sample line that starts with `prefix` (name plus labels).
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(prefix).and_then(|rest| rest.trim().parse().ok()))
}

/// Drive every method once, with a registry host, so each family has samples.
fn exercise(m: &Metrics) {
    m.message_received("pubsub");
    for s in Settle::ALL {
        m.message_settled(s);
    }
    m.delivery_dropped();
    m.lock_lost();
    for c in CopyResult::ALL {
        m.copy_finished(c, Duration::from_millis(1500), "r", "registry.example:5000");
    }
    m.copy_stats(1234, 2, 1, 3);
    for k in DedupKind::ALL {
        m.dedup_hit(k);
    }
    m.event_lag(Duration::from_secs(3));
    drop(m.copy_in_flight());
    drop(m.message_waiting());
    m.last_success_now();
    for d in DeleteResult::ALL {
        m.delete_finished(d);
    }
    for s in [None, Some(200), Some(301), Some(404), Some(429), Some(503)] {
        m.registry_request("registry.example:5000", "GET", s, Duration::from_millis(20));
    }
    for c in [Class::Transient, Class::Permanent, Class::Systemic] {
        m.registry_retry("registry.example:5000", c);
    }
    m.set_ready(true);
    m.set_paused(true);
    m.set_registry_healthy("registry.example:5000", false);
    m.set_alive(true);
}

#[test]
fn every_family_has_help_and_type() {
    let m = Metrics::new();
    exercise(&m);
    let text = m.render();
    let names: HashSet<&str> = FAMILIES.iter().map(|(n, _)| *n).collect();
    assert_eq!(names.len(), 22, "twenty-two distinct families");
    for (name, kind) in FAMILIES {
        assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{text}");
        assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "no TYPE for {name}");
    }
    for name in names {
        assert!(
            name.starts_with("regrelay_")
                && (name.ends_with("_total")
                    || name.ends_with("_seconds")
                    || name.ends_with("_info")
                    || name.ends_with("_in_flight")
                    || name == "regrelay_messages_waiting"
                    || name == "regrelay_registry_healthy"
                    || name == "regrelay_ready"
                    || name == "regrelay_source_paused"),
            "{name} breaks the naming rule"
        );
    }
}

#[test]
fn closed_label_sets_exist_at_zero_before_any_event() {
    let text = Metrics::new().render();
    for line in [
        r#"regrelay_messages_settled_total{outcome="acked"} 0"#,
        r#"regrelay_messages_settled_total{outcome="rejected"} 0"#,
        r#"regrelay_copies_total{error_class="none",outcome="replicated",rule="other",target="other"} 0"#,
        r#"regrelay_copies_total{error_class="none",outcome="already_present",rule="other",target="other"} 0"#,
        r#"regrelay_copies_total{error_class="systemic",outcome="failed",rule="other",target="other"} 0"#,
        r#"regrelay_copy_duration_seconds_count{outcome="failed",rule="other",target="other"} 0"#,
        r#"regrelay_blobs_total{action="mounted"} 0"#,
        r#"regrelay_dedup_hits_total{kind="in_flight"} 0"#,
        r#"regrelay_deletes_total{outcome="dry_run"} 0"#,
        "regrelay_deliveries_dropped_total 0",
        "regrelay_ready 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}`:\n{text}");
    }
    let version = format!(
        r#"regrelay_build_info{{commit="{}",version="{}"}} 1"#,
        env!("REGRELAY_GIT_COMMIT"),
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&version));
    // Registry hosts are not pre-created: only configured hosts that were contacted.
    assert!(!text.contains("regrelay_registry_requests_total{"));
}

#[test]
fn counters_move() {
    let m = Metrics::new();
    m.configure_routes([("eu", "eu.example")]);
    m.message_settled(Settle::Nacked);
    m.message_settled(Settle::Nacked);
    m.copy_finished(
        CopyResult::Failed(Class::Transient),
        Duration::from_secs(2),
        "eu",
        "eu.example",
    );
    m.copy_finished(CopyResult::Replicated, Duration::from_millis(40), "eu", "eu.example");
    m.copy_stats(100, 1, 0, 4);
    m.copy_stats(50, 1, 2, 0);
    m.registry_request("r.example", "HEAD", Some(429), Duration::from_millis(3));
    m.registry_request("r.example", "PATCH", Some(202), Duration::from_secs(3));
    m.registry_request("r.example", "GET", None, Duration::from_millis(30));
    m.registry_retry("r.example", Class::Transient);
    m.dedup_hit(DedupKind::Recent);
    m.delete_finished(DeleteResult::Unsupported);
    m.message_received("servicebus");
    m.event_lag(Duration::from_millis(300));
    let t = m.render();
    let v = |p: &str| sample(&t, p).unwrap_or_else(|| panic!("no sample {p}:\n{t}"));
    assert_eq!(v(r#"regrelay_messages_settled_total{outcome="nacked"}"#), 2.0);
    assert_eq!(
        v(r#"regrelay_copies_total{error_class="transient",outcome="failed",rule="eu",target="eu.example"}"#),
        1.0
    );
    assert_eq!(
        v(r#"regrelay_copy_duration_seconds_count{outcome="replicated",rule="eu",target="eu.example"}"#),
        1.0
    );
    assert_eq!(
        v(r#"regrelay_copy_duration_seconds_bucket{outcome="replicated",rule="eu",target="eu.example",le="0.05"}"#),
        1.0
    );
    assert_eq!(v("regrelay_copied_bytes_total"), 150.0);
    assert_eq!(v(r#"regrelay_blobs_total{action="uploaded"}"#), 2.0);
    assert_eq!(v(r#"regrelay_blobs_total{action="skipped"}"#), 4.0);
    assert_eq!(
        v(r#"regrelay_registry_requests_total{registry="r.example",status_class="4xx"}"#),
        1.0
    );
    assert_eq!(
        v(r#"regrelay_registry_requests_total{registry="r.example",status_class="error"}"#),
        1.0
    );
    assert_eq!(v(r#"regrelay_registry_throttled_total{registry="r.example"}"#), 1.0);
    assert_eq!(
        v(
            r#"regrelay_registry_request_duration_seconds_count{method="PATCH",registry="r.example",status_class="2xx"}"#
        ),
        1.0
    );
    assert_eq!(
        v(
            r#"regrelay_registry_request_duration_seconds_bucket{method="PATCH",registry="r.example",status_class="2xx",le="2.5"}"#
        ),
        0.0
    );
    assert_eq!(
        v(
            r#"regrelay_registry_request_duration_seconds_bucket{method="HEAD",registry="r.example",status_class="4xx",le="0.005"}"#
        ),
        1.0
    );
    assert_eq!(
        v(r#"regrelay_registry_retries_total{error_class="transient",registry="r.example"}"#),
        1.0
    );
    assert_eq!(v(r#"regrelay_dedup_hits_total{kind="recent"}"#), 1.0);
    assert_eq!(v(r#"regrelay_deletes_total{outcome="unsupported"}"#), 1.0);
    assert_eq!(v(r#"regrelay_messages_received_total{source="servicebus"}"#), 1.0);
    assert_eq!(v("regrelay_event_lag_seconds_count"), 1.0);
    assert_eq!(v(r#"regrelay_event_lag_seconds_bucket{le="0.5"}"#), 1.0);
}

#[test]
fn gauges_and_latches() {
    let m = Metrics::new();
    assert!(!m.is_ready() && m.is_alive(), "starts not ready, alive");
    let a = m.copy_in_flight();
    let b = m.copy_in_flight();
    assert_eq!(sample(&m.render(), "regrelay_copies_in_flight"), Some(2.0));
    drop(a);
    assert_eq!(sample(&m.render(), "regrelay_copies_in_flight"), Some(1.0));
    drop(b);
    assert_eq!(sample(&m.render(), "regrelay_copies_in_flight"), Some(0.0));
    m.set_ready(true);
    m.set_paused(true);
    assert!(m.is_ready());
    let t = m.render();
    assert_eq!(sample(&t, "regrelay_ready"), Some(1.0));
    assert_eq!(sample(&t, "regrelay_source_paused"), Some(1.0));
    m.set_ready(false);
    m.set_alive(false);
    assert!(!m.is_ready() && !m.is_alive());
    assert_eq!(sample(&m.render(), "regrelay_ready"), Some(0.0));
    assert_eq!(
        sample(&m.render(), "regrelay_last_success_timestamp_seconds"),
        Some(0.0)
    );
    m.last_success_now();
    assert!(sample(&m.render(), "regrelay_last_success_timestamp_seconds").unwrap() > 1.6e9);
}

#[test]
fn no_label_value_comes_from_free_text() {
    // Label values are typed: enums, `&'static str` sources and host names. Even a
    // caller passing junk as a "host" cannot smuggle a reference, digest or error text in.
    let m = Metrics::new();
    exercise(&m);
    let digest = format!("sha256:{}", "a".repeat(64));
    m.registry_request(
        &format!("r.example/team/app@{digest}"),
        "GET",
        Some(200),
        Duration::ZERO,
    );
    m.registry_request("connection refused: tcp 10.0.0.1", "BREW", None, Duration::ZERO);
    m.registry_retry(&digest, Class::Permanent);
    let text = m.render();
    assert!(!text.contains("sha256:"), "a digest reached a label:\n{text}");
    assert!(!text.contains("team/app") && !text.contains("refused"));
    assert_eq!(
        sample(
            &text,
            r#"regrelay_registry_requests_total{registry="invalid",status_class="2xx"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn rule_and_target_labels_are_the_configured_sets() {
    let m = Metrics::new();
    m.configure_routes([
        ("to-eu", "eu.example"),
        ("to-eu", "dr.example:5000"),
        ("to-us", "us.example"),
    ]);
    let t = m.render();
    // Configured pairs exist at zero before any copy; a rule is not paired with a target
    // it does not name.
    for line in [
        r#"regrelay_copies_total{error_class="transient",outcome="failed",rule="to-eu",target="dr.example:5000"} 0"#,
        r#"regrelay_copies_total{error_class="none",outcome="replicated",rule="to-us",target="us.example"} 0"#,
        r#"regrelay_copy_duration_seconds_count{outcome="replicated",rule="to-eu",target="eu.example"} 0"#,
    ] {
        assert!(t.lines().any(|l| l == line), "missing `{line}`:\n{t}");
    }
    assert!(!t.contains(r#"rule="to-us",target="eu.example""#));
    // Anything outside the configured sets collapses to `other`.
    let digest = format!("sha256:{}", "b".repeat(64));
    m.copy_finished(CopyResult::Replicated, Duration::from_secs(1), "to-eu", "eu.example");
    m.copy_finished(CopyResult::Replicated, Duration::from_secs(1), "promote", "eu.example");
    m.copy_finished(CopyResult::Replicated, Duration::from_secs(1), "to-eu", &digest);
    m.copy_finished(
        CopyResult::Replicated,
        Duration::from_secs(1),
        "to-us",
        "elsewhere.example",
    );
    let t = m.render();
    let v = |p: &str| sample(&t, p).unwrap_or_else(|| panic!("no sample {p}:\n{t}"));
    assert_eq!(
        v(r#"regrelay_copies_total{error_class="none",outcome="replicated",rule="to-eu",target="eu.example"}"#),
        1.0
    );
    assert_eq!(
        v(r#"regrelay_copies_total{error_class="none",outcome="replicated",rule="other",target="eu.example"}"#),
        1.0
    );
    assert_eq!(
        v(r#"regrelay_copies_total{error_class="none",outcome="replicated",rule="to-eu",target="other"}"#),
        1.0
    );
    assert_eq!(
        v(r#"regrelay_copies_total{error_class="none",outcome="replicated",rule="to-us",target="other"}"#),
        1.0
    );
    for leak in ["=\"sha256:", "rule=\"promote\"", "\"elsewhere.example\""] {
        assert!(!t.contains(leak), "{leak} leaked into a label:\n{t}");
    }
}

#[test]
fn method_labels_are_closed() {
    for m in ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"] {
        assert_eq!(method_label(m), m);
    }
    assert_eq!(method_label("get"), "other");
    assert_eq!(method_label("BREW"), "other");
}

#[test]
fn process_metrics_are_exported() {
    let t = Metrics::new().render();
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(t.contains(&format!("# TYPE {name} ")), "no {name}:\n{t}");
    }
}

#[test]
fn registry_label_values_are_capped() {
    let m = Metrics::new();
    for i in 0..MAX_REGISTRY_LABELS + 5 {
        m.registry_request(&format!("r{i}.example"), "GET", Some(200), Duration::ZERO);
    }
    let t = m.render();
    assert_eq!(
        sample(
            &t,
            r#"regrelay_registry_requests_total{registry="other",status_class="2xx"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &t,
            r#"regrelay_registry_requests_total{registry="r0.example",status_class="2xx"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn host_shapes() {
    for ok in [
        "r.example",
        "127.0.0.1:5000",
        "[::1]:5000",
        "[fd00::1]",
        "europe-docker.pkg.dev",
        "my_reg:443",
    ] {
        assert!(looks_like_host(ok), "{ok}");
    }
    let digest = format!("sha256:{}", "a".repeat(64));
    for bad in [
        "",
        digest.as_str(),
        "r.example/team/app",
        "r.example:v1",
        "a b",
        "[::1",
        "[::1]x",
        "r.example:123456",
        "https://r.example",
    ] {
        assert!(!looks_like_host(bad), "{bad}");
    }
}

#[test]
fn status_classes() {
    assert_eq!(status_class(Some(101)), "1xx");
    assert_eq!(status_class(Some(204)), "2xx");
    assert_eq!(status_class(Some(307)), "3xx");
    assert_eq!(status_class(Some(401)), "4xx");
    assert_eq!(status_class(Some(599)), "5xx");
    assert_eq!(status_class(Some(999)), "error");
    assert_eq!(status_class(None), "error");
}

#[test]
fn global_is_one_instance() {
    assert!(std::ptr::eq(global(), global()));
    assert!(global().render().contains("regrelay_build_info"));
}
