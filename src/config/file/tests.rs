//! Loader tests: one per kind of error (file, line and field path checked), defaults,
//! secrets and rendering.

use std::path::Path;
use std::time::Duration;

use super::{LoadError, load, load_str};
use crate::config::render;
use crate::config::{Auth, Config, Matcher, RejectMode, SourceConfig, TagDeleteFallback, Untagged};

/// `kind = "google"` and `kind = "acr_entra"` registry auth.
mod cloud;
/// `strip_prefix` on targets, per-rule `delete_dry_run`, and check-config's example mappings.
mod mapping;
/// `[source.origin]`: the registry of events that name no host.
mod origin;
/// `check-config`: the effective configuration, secrets redacted, loads again.
mod render;
/// `require` on rules: names of `[gates.NAME]`.
mod require;

const FILE: &str = "conf/t.toml";

/// A minimal valid file: registries a.example and b.example, one rule a → b.
const BASE: &str = r#"
[source]
kind = "file"

[registries."a.example"]
[registries."b.example"]

[[rules]]
source_registry = "a.example"
repository = "**"
[[rules.targets]]
registry = "b.example"
"#;

fn ok(text: &str) -> Config {
    load_str(text, Path::new(FILE)).unwrap_or_else(|e| panic!("should load: {e}"))
}

fn err(text: &str) -> LoadError {
    match load_str(text, Path::new(FILE)) {
        Ok(c) => panic!("should fail: {c:?}"),
        Err(e) => e,
    }
}

/// 1-based line of the first line of `text` containing `needle` (starting with it, when
/// `needle` starts with `^`).
fn line_of(text: &str, needle: &str) -> usize {
    let hit = |l: &str| match needle.strip_prefix('^') {
        Some(start) => l.starts_with(start),
        None => l.contains(needle),
    };
    text.lines()
        .position(hit)
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        + 1
}

/// Assert the error names the file, the line holding `at`, `field`, and says `says`.
#[track_caller]
fn expect(text: &str, at: &str, field: &str, says: &str) -> LoadError {
    let e = err(text);
    let line = line_of(text, at);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{FILE}:{line}: {field}: ")),
        "{shown}\n(expected line {line}, field {field})"
    );
    assert!(e.message.contains(says), "{shown}\n(expected to contain {says:?})");
    e
}

fn with_rule(rule: &str) -> String {
    format!("[source]\nkind = \"file\"\n[registries.\"a.example\"]\n[registries.\"b.example\"]\n{rule}")
}

#[test]
fn minimal_file_gets_documented_defaults() {
    let c = ok(BASE);
    assert!(matches!(&c.source, SourceConfig::File(f) if f.path.is_none()));
    assert_eq!(c.admin_listen, Some("0.0.0.0:9090".parse().unwrap()));
    assert_eq!(c.pipeline.workers, 8);
    assert_eq!(c.pipeline.reject_mode, RejectMode::Ack);
    assert_eq!(c.pipeline.tag_delete_fallback, TagDeleteFallback::Manifest);
    let r = &c.rules[0];
    assert_eq!(r.name, "rules[0]");
    assert!(r.on_push && !r.on_delete);
    assert_eq!(r.untagged, Untagged::Ignore);
    assert_eq!(r.targets[0].repository, "{repository}");
    assert_eq!(r.targets[0].tag, None);
    assert_eq!(c.registries.len(), 2);
    assert_eq!(c.registries[0].max_in_flight, 16);
    assert!(matches!(c.registries[0].auth, Auth::Anonymous));
}

#[test]
fn full_file_maps_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "from-file\n").unwrap();
    let text = format!(
        r#"
[source]
kind = "pubsub"
subscription = "projects/p-1/subscriptions/gcr-sub"
endpoint = "http://127.0.0.1:8085"
lease_extension_secs = 30
max_lease_secs = 900

[pipeline]
workers = 3
blob_jobs = 2
referrers = false
dedup_ttl_secs = 0
dedup_max_entries = 10
reject = "nack"
shutdown_grace_secs = 7
pause_min_secs = 2
pause_max_secs = 20
delete_dry_run = true
tag_delete_fallback = "off"

[admin]
listen = "127.0.0.1:9191"

[registries."a.example"]
insecure = true
max_in_flight = 4
requests_per_second = 50
chunk_size = 1048576
retry = {{ attempts = 5, max_delay_ms = 5000 }}
connect_timeout_secs = 3
read_timeout_secs = 30
auth = {{ kind = "basic", username = "u", password_file = "{}" }}

[registries."127.0.0.1:5002"]
auth = {{ kind = "docker_config", path = "/etc/regrelay/docker.json" }}

[[rules]]
name = "apps"
source_registry = "a.example"
repository_regex = "team/(app|web)"
tags = ["v*"]
tags_regex = ["latest"]
exclude_tags = ["*-dev"]
exclude_tags_regex = ["rc[0-9]+"]
actions = ["push", "delete"]
untagged = "replicate"
delete_dry_run = true
[[rules.targets]]
registry = "127.0.0.1:5002"
repository = "mirror/{{registry}}/{{name}}"
tag = "{{tag}}-m"
[[rules.targets]]
registry = "a.example"
repository = "backup/{{repository}}"
"#,
        pw.display()
    );
    let c = ok(&text);
    let SourceConfig::PubSub(p) = &c.source else {
        panic!("pubsub expected")
    };
    assert_eq!(p.subscription, "projects/p-1/subscriptions/gcr-sub");
    assert_eq!(p.endpoint.as_deref(), Some("http://127.0.0.1:8085"));
    assert_eq!(p.max_outstanding_messages, 6, "default is 2 x workers");
    assert_eq!(
        (p.lease_extension, p.max_lease),
        (Duration::from_secs(30), Duration::from_secs(900))
    );
    let pl = &c.pipeline;
    assert_eq!((pl.workers, pl.blob_jobs, pl.referrers), (3, 2, false));
    assert_eq!((pl.dedup_ttl, pl.dedup_max_entries), (Duration::ZERO, 10));
    assert_eq!(pl.reject_mode, RejectMode::Nack);
    assert_eq!(pl.shutdown_grace, Duration::from_secs(7));
    assert_eq!(
        (pl.pause_min, pl.pause_max),
        (Duration::from_secs(2), Duration::from_secs(20))
    );
    assert!(pl.delete_dry_run);
    assert_eq!(pl.tag_delete_fallback, TagDeleteFallback::Off);
    assert_eq!(c.admin_listen, Some("127.0.0.1:9191".parse().unwrap()));
    // Registries come sorted by host.
    let local = &c.registries[0];
    assert_eq!(local.host, "127.0.0.1:5002");
    assert!(matches!(&local.auth, Auth::DockerConfig { path } if path == Path::new("/etc/regrelay/docker.json")));
    let a = &c.registries[1];
    assert!(a.insecure);
    assert_eq!(
        (a.max_in_flight, a.requests_per_second, a.chunk_size),
        (4, Some(50.0), Some(1 << 20))
    );
    assert_eq!(a.retry.attempts, 5);
    assert_eq!(
        a.retry.min_delay,
        Duration::from_millis(100),
        "unset retry fields keep the default"
    );
    assert_eq!(a.retry.max_delay, Duration::from_secs(5));
    assert_eq!(
        (a.connect_timeout, a.read_timeout),
        (Duration::from_secs(3), Duration::from_secs(30))
    );
    match &a.auth {
        Auth::Basic { username, password } => assert_eq!((username.as_str(), password.expose()), ("u", "from-file")),
        other => panic!("basic expected, got {other:?}"),
    }
    let r = &c.rules[0];
    assert_eq!(r.name, "apps");
    assert!(matches!(&r.repository, Matcher::Regex(_, s) if s == "team/(app|web)"));
    assert!(r.repository.is_match("team/web") && !r.repository.is_match("team/webx"));
    assert_eq!(r.tags_include.len(), 2);
    assert_eq!(r.tags_exclude.len(), 2);
    assert!(r.on_push && r.on_delete);
    assert_eq!(r.untagged, Untagged::Replicate);
    assert_eq!(r.delete_dry_run, Some(true));
    assert_eq!(
        r.targets[0].expand_repository("a.example", "team/web"),
        "mirror/a.example/web"
    );
    assert_eq!(r.targets[0].expand_tag("v1"), "v1-m");
    assert_eq!(r.targets[1].registry, "a.example");
}

#[test]
fn syntax_error_names_file_and_line() {
    let text = "[source]\nkind = \"file\nx = 1\n";
    let e = err(text);
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.to_string().starts_with("conf/t.toml:2: "), "{e}");
}

#[test]
fn unknown_keys_are_refused_with_their_path() {
    expect(
        &format!("{BASE}\n[extra]\nx = 1\n"),
        "[extra]",
        "extra",
        "unknown field `extra`",
    );
    let text = BASE.replace(
        "registry = \"b.example\"",
        "registry = \"b.example\"\nregistryy = \"x\"",
    );
    expect(
        &text,
        "registryy",
        "rules[0].targets[0].registryy",
        "unknown field `registryy`",
    );
    let text = BASE.replace(
        "[registries.\"a.example\"]",
        "[registries.\"a.example\"]\nmax_inflight = 3",
    );
    expect(
        &text,
        "max_inflight",
        "registries.\"a.example\".max_inflight",
        "unknown field",
    );
    let text = BASE.replace("kind = \"file\"", "kind = \"file\"\nsubscriptions = \"x\"");
    expect(&text, "subscriptions", "source.subscriptions", "unknown field");
}

#[test]
fn wrong_types_and_unknown_variants_name_the_field() {
    expect(
        &format!("{BASE}\n[pipeline]\nworkers = \"8\"\n"),
        "workers",
        "pipeline.workers",
        "invalid type",
    );
    expect(
        &format!("{BASE}\n[pipeline]\nworkers = -1\n"),
        "workers",
        "pipeline.workers",
        "invalid value",
    );
    expect(
        &format!("{BASE}\n[pipeline]\nreject = \"drop\"\n"),
        "reject",
        "pipeline.reject",
        "unknown variant",
    );
    expect(
        &format!("{BASE}\n[pipeline]\ntag_delete_fallback = \"untag\"\n"),
        "tag_delete_fallback",
        "pipeline.tag_delete_fallback",
        "unknown variant `untag`, expected `manifest` or `off`",
    );
    let text = BASE.replace(
        "repository = \"**\"",
        "repository = \"**\"\nactions = [\"push\", \"pull\"]",
    );
    expect(&text, "actions", "rules[0].actions[1]", "unknown variant `pull`");
    let text = BASE.replace(
        "[registries.\"a.example\"]",
        "[registries.\"a.example\"]\nauth = { kind = \"magic\" }",
    );
    expect(
        &text,
        "magic",
        "registries.\"a.example\".auth.kind",
        "unknown variant `magic`, expected one of `anonymous`, `basic`, `docker_config`, `identity_token`, \
         `google`, `acr_entra`",
    );
    // The Service Bus source's kinds share the auth table's keys, not its kinds.
    let text = text.replace("\"magic\"", "\"sas\", key_name = \"k\", key = \"v\"");
    let e = expect(
        &text,
        "sas",
        "registries.\"a.example\".auth.kind",
        "unknown variant `sas`, expected one of `anonymous`",
    );
    assert!(!e.message.contains("`entra`"), "{e}");
    let text = text.replace(
        "\"sas\", key_name = \"k\", key = \"v\"",
        "\"basic\", username = \"u\", key = \"v\"",
    );
    expect(
        &text,
        "basic",
        "registries.\"a.example\".auth.key",
        "does not apply to kind = \"basic\"",
    );
}

#[test]
fn missing_source_and_source_kind() {
    let text = "[registries.\"a.example\"]\n";
    let e = err(text);
    assert_eq!(e.to_string(), "conf/t.toml:1: source: missing: add a [source] table");
    expect("[source]\npath = \"x\"\n", "[source]", "source", "missing field `kind`");
}

#[test]
fn pubsub_needs_a_well_formed_subscription() {
    let text = "[source]\nkind = \"pubsub\"\nendpoint = \"http://127.0.0.1:8085\"\n";
    expect(
        text,
        "[source]",
        "source.subscription",
        "required when kind = \"pubsub\"",
    );
    let text = "[source]\nkind = \"pubsub\"\nsubscription = \"projects/p/topics/t\"\n";
    expect(
        text,
        "subscription",
        "source.subscription",
        "projects/PROJECT/subscriptions/NAME",
    );
    let text =
        "[source]\nkind = \"pubsub\"\nsubscription = \"projects/p/subscriptions/abc\"\nendpoint = \"127.0.0.1:8085\"\n";
    expect(text, "endpoint", "source.endpoint", "http://");
    let text = "[source]\nkind = \"pubsub\"\nsubscription = \"projects/p/subscriptions/abc\"\npath = \"-\"\n";
    expect(text, "path", "source.path", "only applies to kind = \"file\"");
    let text = "[source]\nkind = \"file\"\n\nsubscription = \"projects/p/subscriptions/abc\"\n";
    expect(
        text,
        "subscription",
        "source.subscription",
        "only applies to kind = \"pubsub\"",
    );
}

#[test]
fn ranges_are_checked() {
    let pubsub = |extra: &str| {
        format!("[source]\nkind = \"pubsub\"\nsubscription = \"projects/p/subscriptions/abc\"\n{extra}\n")
    };
    expect(
        &pubsub("lease_extension_secs = 5"),
        "lease_extension_secs",
        "source.lease_extension_secs",
        "at least 10",
    );
    expect(
        &pubsub("lease_extension_secs = 601"),
        "lease_extension_secs",
        "source.lease_extension_secs",
        "at most 600",
    );
    let text = pubsub("lease_extension_secs = 120\nmax_lease_secs = 60");
    expect(&text, "max_lease_secs", "source.max_lease_secs", "at least 120");
    expect(
        &pubsub("max_outstanding_messages = 0"),
        "max_outstanding",
        "source.max_outstanding_messages",
        "at least 1",
    );
    let pipeline = |extra: &str| format!("{BASE}\n[pipeline]\n{extra}\n");
    expect(&pipeline("workers = 0"), "workers", "pipeline.workers", "at least 1");
    expect(
        &pipeline("blob_jobs = 0"),
        "blob_jobs",
        "pipeline.blob_jobs",
        "at least 1",
    );
    expect(
        &pipeline("pause_min_secs = 0"),
        "pause_min_secs",
        "pipeline.pause_min_secs",
        "at least 1",
    );
    let text = pipeline("pause_min_secs = 10\npause_max_secs = 5");
    expect(&text, "pause_max_secs", "pipeline.pause_max_secs", "at least 10");
    expect(
        &pipeline("pause_min_secs = 400"),
        "pause_min_secs",
        "pipeline.pause_min_secs",
        "must not exceed",
    );
    let registry = |extra: &str| {
        BASE.replace(
            "[registries.\"a.example\"]",
            &format!("[registries.\"a.example\"]\n{extra}"),
        )
    };
    let field = |f: &str| format!("registries.\"a.example\".{f}");
    expect(
        &registry("max_in_flight = 0"),
        "max_in_flight",
        &field("max_in_flight"),
        "at least 1",
    );
    expect(
        &registry("chunk_size = 10"),
        "chunk_size",
        &field("chunk_size"),
        "at least 1024",
    );
    expect(
        &registry("requests_per_second = 0.0"),
        "requests_per",
        &field("requests_per_second"),
        "positive",
    );
    expect(
        &registry("read_timeout_secs = 0"),
        "read_timeout",
        &field("read_timeout_secs"),
        "at least 1",
    );
    expect(
        &registry("retry = { attempts = 0 }"),
        "retry",
        &field("retry.attempts"),
        "at least 1",
    );
    let text = registry("retry = { min_delay_ms = 5000 }");
    expect(
        &text,
        "retry",
        &field("retry.min_delay_ms"),
        "must not exceed retry.max_delay_ms",
    );
}

#[test]
fn registry_keys_are_hosts() {
    let text = BASE.replace("[registries.\"b.example\"]", "[registries.\"https://b.example\"]");
    expect(&text, "https://", "registries.\"https://b.example\"", "host[:port]");
}

#[test]
fn admin_listen_and_disable() {
    let c = ok(&format!("{BASE}\n[admin]\nlisten = \"\"\n"));
    assert_eq!(c.admin_listen, None);
    let c = ok(&format!("{BASE}\n[admin]\nenabled = false\nlisten = \"127.0.0.1:1\"\n"));
    assert_eq!(c.admin_listen, None);
    expect(
        &format!("{BASE}\n[admin]\nlisten = \"localhost\"\n"),
        "listen",
        "admin.listen",
        "IP:PORT",
    );
    let text = format!("{BASE}\n[admin]\nenabled = true\nlisten = \"\"\n");
    expect(&text, "listen", "admin.listen", "admin.enabled = true");
}

#[test]
fn rules_must_name_configured_registries() {
    let text = BASE.replace("registry = \"b.example\"", "registry = \"foo\"");
    let e = expect(
        &text,
        "\"foo\"",
        "rules[0].targets[0].registry",
        "\"foo\" is not a configured registry",
    );
    assert_eq!(e.to_string().lines().count(), 1);
    let text = BASE.replace("source_registry = \"a.example\"", "source_registry = \"c.example\"");
    expect(
        &text,
        "c.example",
        "rules[0].source_registry",
        "not a configured registry",
    );
}

#[test]
fn same_registry_identity_mapping_is_a_loop() {
    let rule = "[[rules]]\nsource_registry = \"a.example\"\nrepository = \"**\"\n[[rules.targets]]\nregistry = \"a.example\"\n";
    expect(
        &with_rule(rule),
        "^registry = \"a.example\"",
        "rules[0].targets[0].registry",
        "a loop",
    );
    let explicit = format!("{rule}repository = \"{{repository}}\"\ntag = \"{{tag}}\"\n");
    expect(
        &with_rule(&explicit),
        "^registry = \"a.example\"",
        "rules[0].targets[0].registry",
        "a loop",
    );
    // Another repository or tag on the same registry is not an identity mapping.
    ok(&with_rule(&format!("{rule}repository = \"backup/{{repository}}\"\n")));
    ok(&with_rule(&format!("{rule}tag = \"{{tag}}-copy\"\n")));
}

#[test]
fn templates_are_checked() {
    let t = |extra: &str| {
        BASE.replace(
            "registry = \"b.example\"",
            &format!("registry = \"b.example\"\n{extra}"),
        )
    };
    let e = expect(
        &t("repository = \"m/{repo}\""),
        "m/{repo}",
        "rules[0].targets[0].repository",
        "unknown template variable {repo}",
    );
    assert!(e.message.contains("{repository}, {name}, {registry}"), "{e}");
    expect(
        &t("tag = \"{name}\""),
        "{name}",
        "rules[0].targets[0].tag",
        "unknown template variable {name}",
    );
    expect(&t("tag = \"{tag\""), "{tag", "rules[0].targets[0].tag", "unclosed");
    expect(
        &t("repository = \"Mirror/{repository}\""),
        "Mirror",
        "rules[0].targets[0].repository",
        "never expands",
    );
    expect(
        &t("repository = \"{repository}/\""),
        "}/\"",
        "rules[0].targets[0].repository",
        "never expands",
    );
    expect(
        &t("repository = \"\""),
        "repository = \"\"",
        "rules[0].targets[0].repository",
        "never expands",
    );
    expect(
        &t("tag = \"-{tag}\""),
        "-{tag}",
        "rules[0].targets[0].tag",
        "never expands to a valid tag",
    );
    // {registry} is the rule's source host: with a port it can never be in a name.
    let text = "[source]\nkind = \"file\"\n[registries.\"127.0.0.1:5001\"]\n[registries.\"b.example\"]\n[[rules]]\nsource_registry = \"127.0.0.1:5001\"\nrepository = \"**\"\n[[rules.targets]]\nregistry = \"b.example\"\nrepository = \"{registry}/{repository}\"\n";
    expect(
        text,
        "{registry}/",
        "rules[0].targets[0].repository",
        "127.0.0.1:5001/a",
    );
}

#[test]
fn patterns_are_compiled_at_load() {
    let text = BASE.replace("repository = \"**\"", "repository_regex = \"team/(\"");
    expect(&text, "team/(", "rules[0].repository_regex", "invalid pattern");
    let text = BASE.replace("repository = \"**\"", "repository = \"**\"\ntags = [\"v*\", \"a[\"]");
    expect(&text, "tags", "rules[0].tags[1]", "invalid pattern \"a[\"");
    let text = BASE.replace(
        "repository = \"**\"",
        "repository = \"**\"\nexclude_tags_regex = [\"*\"]",
    );
    expect(
        &text,
        "exclude_tags_regex",
        "rules[0].exclude_tags_regex[0]",
        "invalid pattern",
    );
    let text = BASE.replace("repository = \"**\"", "repository = \"**\"\nrepository_regex = \"x\"");
    expect(&text, "repository_regex", "rules[0].repository_regex", "not both");
    let text = BASE.replace("repository = \"**\"\n", "");
    expect(&text, "[[rules]]", "rules[0].repository", "required");
    let text = BASE.replace("repository = \"**\"", "repository = \"\"");
    expect(&text, "repository = \"\"", "rules[0].repository", "must not be empty");
}

#[test]
fn rule_names_are_unique_and_rules_need_targets_and_actions() {
    let rule = |name: &str| {
        format!(
            "[[rules]]\nname = \"{name}\"\nsource_registry = \"a.example\"\nrepository = \"**\"\n[[rules.targets]]\nregistry = \"b.example\"\n"
        )
    };
    let text = with_rule(&format!("{}\n{}\n{}", rule("x"), rule("y"), rule("x")));
    let e = err(&text);
    let second_x = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name = \"x\""))
        .nth(1)
        .unwrap()
        .0
        + 1;
    assert_eq!(e.line, Some(second_x), "{e}");
    assert_eq!(e.field.as_deref(), Some("rules[2].name"));
    assert!(e.message.contains("duplicate rule name \"x\" (also rules[0])"), "{e}");
    let text = with_rule("[[rules]]\nsource_registry = \"a.example\"\nrepository = \"**\"\n");
    expect(&text, "[[rules]]", "rules[0].targets", "at least one [[rules.targets]]");
    let text = BASE.replace("repository = \"**\"", "repository = \"**\"\nactions = []");
    expect(&text, "actions", "rules[0].actions", "at least one");
    let text = with_rule("[[rules]]\nrepository = \"**\"\n[[rules.targets]]\nregistry = \"b.example\"\n");
    expect(&text, "[[rules]]", "rules[0]", "missing field `source_registry`");
}

#[test]
fn auth_keys_must_fit_the_kind() {
    let auth = |a: &str| {
        BASE.replace(
            "[registries.\"a.example\"]",
            &format!("[registries.\"a.example\"]\nauth = {a}"),
        )
    };
    let field = |f: &str| format!("registries.\"a.example\".auth.{f}");
    expect(
        &auth("{ kind = \"anonymous\", username = \"u\" }"),
        "auth",
        &field("username"),
        "does not apply to kind = \"anonymous\"",
    );
    expect(
        &auth("{ kind = \"docker_config\" }"),
        "auth",
        &field("path"),
        "required",
    );
    expect(
        &auth("{ kind = \"basic\", password = \"p\" }"),
        "auth",
        &field("username"),
        "required",
    );
    expect(
        &auth("{ kind = \"basic\", username = \"u\" }"),
        "auth",
        &field("password_env"),
        "needs one of",
    );
    let both = auth("{ kind = \"basic\", username = \"u\", password_env = \"PATH\", password = \"p\" }");
    expect(&both, "auth", &field("password"), "only one of");
    expect(
        &auth("{ kind = \"identity_token\", path = \"/x\" }"),
        "auth",
        &field("path"),
        "does not apply",
    );
}

#[test]
fn unreadable_secrets_name_the_source_never_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-password");
    let auth = |a: String| {
        BASE.replace(
            "[registries.\"b.example\"]",
            &format!("[registries.\"b.example\"]\nauth = {a}"),
        )
    };
    let field = |f: &str| format!("registries.\"b.example\".auth.{f}");
    let text = auth("{ kind = \"basic\", username = \"u\", password_env = \"REGRELAY_TEST_SURELY_UNSET_VAR\" }".into());
    expect(
        &text,
        "auth",
        &field("password_env"),
        "environment variable REGRELAY_TEST_SURELY_UNSET_VAR",
    );
    let text = auth(format!(
        "{{ kind = \"identity_token\", token_file = \"{}\" }}",
        missing.display()
    ));
    expect(&text, "auth", &field("token_file"), "no-such-password");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let text = auth(format!(
        "{{ kind = \"identity_token\", token_file = \"{}\" }}",
        empty.display()
    ));
    expect(&text, "auth", &field("token_file"), "empty");
    // Environment variables resolve at load time (PATH is always set).
    let text = auth("{ kind = \"identity_token\", token_env = \"PATH\" }".into());
    let c = ok(&text);
    let Auth::IdentityToken { token: t } = &c.registries[1].auth else {
        panic!("identity token expected")
    };
    assert_eq!(t.expose(), std::env::var("PATH").unwrap());
}

#[test]
fn stdin_path_and_file_errors() {
    let c = ok(&BASE.replace("kind = \"file\"", "kind = \"file\"\npath = \"-\""));
    assert!(matches!(&c.source, SourceConfig::File(f) if f.path.is_none()));
    let c = ok(&BASE.replace("kind = \"file\"", "kind = \"file\"\npath = \"ev.jsonl\""));
    assert!(matches!(&c.source, SourceConfig::File(f) if f.path.as_deref() == Some(Path::new("ev.jsonl"))));
    let e = load(Path::new("/nonexistent/regrelay.toml")).unwrap_err();
    assert!(
        e.to_string().starts_with("/nonexistent/regrelay.toml: cannot read"),
        "{e}"
    );
}

#[test]
fn rule_repositories_must_be_names_the_pattern_matches() {
    let text = BASE.replace(
        "repository = \"**\"",
        "repository = \"team/*\"\nrepositories = [\"team/a\", \"team/b\"]",
    );
    assert_eq!(ok(&text).rules[0].repositories, ["team/a", "team/b"]);
    assert!(render(&ok(&text)).contains("repositories = [\"team/a\", \"team/b\"]"));
    let text = BASE.replace(
        "repository = \"**\"",
        "repository = \"team/*\"\nrepositories = [\"team/a\", \"other/b\"]",
    );
    expect(
        &text,
        "repositories",
        "rules[0].repositories[1]",
        "\"other/b\" does not match the rule's pattern \"team/*\"",
    );
    let text = BASE.replace(
        "repository = \"**\"",
        "repository = \"**\"\nrepositories = [\"Bad Name\"]",
    );
    expect(
        &text,
        "repositories",
        "rules[0].repositories[0]",
        "not a valid repository name",
    );
    assert!(ok(BASE).rules[0].repositories.is_empty());
}

#[test]
fn reconcile_is_off_by_default_and_jobs_must_be_positive() {
    assert_eq!(ok(BASE).reconcile, crate::config::ReconcileConfig::default());
    assert_eq!(ok(BASE).reconcile.interval, None);
    let text = format!("{BASE}\n[reconcile]\ninterval_secs = 600\njobs = 3\nprune = true\n");
    let c = ok(&text);
    assert_eq!(c.reconcile.interval, Some(Duration::from_secs(600)));
    assert_eq!((c.reconcile.jobs, c.reconcile.prune), (3, true));
    let rendered = render(&c);
    assert!(
        rendered.contains("[reconcile]\ninterval_secs = 600\njobs = 3\nprune = true"),
        "{rendered}"
    );
    assert_eq!(
        ok(&format!("{BASE}\n[reconcile]\ninterval_secs = 0\n"))
            .reconcile
            .interval,
        None
    );
    let text = format!("{BASE}\n[reconcile]\njobs = 0\n");
    expect(&text, "jobs = 0", "reconcile.jobs", "at least 1");
    let text = format!("{BASE}\n[reconcile]\nevery = 3\n");
    expect(&text, "every", "reconcile.every", "unknown field `every`");
}
