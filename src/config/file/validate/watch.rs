//! `[[watch]]`, `[gates.NAME]`, `[notify.NAME]` and `[watcher]`: checks, and the raw
//! layout of the gates and notifications (`[[watch]]` and `[watcher]` are read straight
//! into their typed structs).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{KindKey, Problem, Result, Written, foreign_key, given, invalid, ranged};
use crate::config::key_path;
use crate::config::watch::{GateConfig, NotifyConfig, RepoRef, Unsigned, WatchConfig, WatchSettings, WatcherConfig};

/// `[gates.NAME]`: a check that a rule's `require`, a watch's `gates` or a promotion
/// names. One flat table whose `kind` says which keys apply (a key of the other kind is
/// an error).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config::file) struct RawGate {
    /// Required: `"exec"` (run `argv`) or `"cosign"` (a signature by one of `keys`).
    kind: Spanned<String>,
    /// exec, required: the program and its arguments, run without a shell.
    argv: Option<Spanned<Vec<String>>>,
    /// exec: time limit, ≥ 1. Default 600.
    timeout_secs: Option<Spanned<u64>>,
    /// exec: how much of the output tail is kept for logs, 256..=16777216. Default 65536.
    max_output_bytes: Option<Spanned<usize>>,
    /// exec: environment variables passed besides `PATH` and `HOME`. Default none.
    pass_env: Option<Spanned<Vec<String>>>,
    /// cosign, required: ECDSA P-256 public key files (PEM); any one may have signed.
    keys: Option<Spanned<Vec<PathBuf>>>,
    /// cosign: an image with no signature at all: `"retry"` (default; try again later)
    /// or `"reject"`.
    unsigned: Option<Spanned<String>>,
}

/// `[notify.NAME]`: who is told about a promotion. One flat table whose `kind` says
/// which keys apply.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config::file) struct RawNotify {
    /// Required: `"exec"`, `"webhook"` or `"pubsub"`.
    kind: Spanned<String>,
    /// exec, required: the program and its arguments, run without a shell.
    argv: Option<Spanned<Vec<String>>>,
    /// exec: time limit, ≥ 1. Default 60.
    timeout_secs: Option<Spanned<u64>>,
    /// webhook, required: the `http(s)://` URL the promotion is POSTed to (no redirects).
    url: Option<Spanned<String>>,
    /// pubsub, required: `projects/PROJECT/topics/TOPIC`.
    topic: Option<Spanned<String>>,
    /// pubsub: endpoint override, `http://…` (emulator, anonymous) or `https://…`.
    /// Default: Google's, with Application Default Credentials.
    endpoint: Option<Spanned<String>>,
}

/// `only for kind = "exec"`: the wording of a gate or notify key of another kind.
fn only_for(kinds: &[&str]) -> String {
    let kinds: Vec<String> = kinds.iter().map(|k| format!("{k:?}")).collect();
    format!("only for kind = {}", kinds.join(" or "))
}

fn gate(path: &str, g: Spanned<RawGate>) -> Result<GateConfig> {
    let span = g.span();
    let g = g.into_inner();
    let kind = g.kind.get_ref().as_str();
    let keys: [KindKey<&str>; 6] = [
        ("argv", given(&g.argv), &["exec"]),
        ("timeout_secs", given(&g.timeout_secs), &["exec"]),
        ("max_output_bytes", given(&g.max_output_bytes), &["exec"]),
        ("pass_env", given(&g.pass_env), &["exec"]),
        ("keys", given(&g.keys), &["cosign"]),
        ("unsigned", given(&g.unsigned), &["cosign"]),
    ];
    Ok(match kind {
        "exec" => {
            foreign_key(path, &"exec", &keys, only_for)?;
            let argv = match g.argv {
                Some(a) if !a.get_ref().is_empty() => a.into_inner(),
                _ => return invalid(span, format!("{path}.argv"), "required: the program and its arguments"),
            };
            GateConfig::Exec {
                argv,
                timeout: Duration::from_secs(
                    ranged(&g.timeout_secs, &format!("{path}.timeout_secs"), 1, None)?.unwrap_or(600),
                ),
                max_output_bytes: ranged(
                    &g.max_output_bytes,
                    &format!("{path}.max_output_bytes"),
                    256,
                    Some(16 << 20),
                )?
                .unwrap_or(64 * 1024),
                pass_env: g.pass_env.map(Spanned::into_inner).unwrap_or_default(),
            }
        }
        "cosign" => {
            foreign_key(path, &"cosign", &keys, only_for)?;
            let Some(keys) = g.keys.filter(|k| !k.get_ref().is_empty()) else {
                return invalid(span, format!("{path}.keys"), "required: at least one public key file");
            };
            let kspan = keys.span();
            let mut out = Vec::new();
            for k in keys.into_inner() {
                match std::fs::read_to_string(&k) {
                    Ok(pem) => out.push((k, pem)),
                    Err(e) => {
                        return invalid(
                            kspan,
                            format!("{path}.keys"),
                            format!("cannot read {}: {e}", k.display()),
                        );
                    }
                }
            }
            let unsigned = match g.unsigned.as_ref().map(|u| (u.get_ref().as_str(), u.span())) {
                None | Some(("retry", _)) => Unsigned::Retry,
                Some(("reject", _)) => Unsigned::Reject,
                Some((other, at)) => {
                    return invalid(
                        at,
                        format!("{path}.unsigned"),
                        format!("unknown value {other:?} (expected \"retry\" or \"reject\")"),
                    );
                }
            };
            GateConfig::Cosign { keys: out, unsigned }
        }
        other => {
            return invalid(
                g.kind.span(),
                format!("{path}.kind"),
                format!("unknown gate kind {other:?} (expected \"exec\" or \"cosign\")"),
            );
        }
    })
}

fn notify(path: &str, n: Spanned<RawNotify>) -> Result<NotifyConfig> {
    let span = n.span();
    let n = n.into_inner();
    let kind = n.kind.get_ref().as_str();
    let keys: [KindKey<&str>; 5] = [
        ("argv", given(&n.argv), &["exec"]),
        ("timeout_secs", given(&n.timeout_secs), &["exec"]),
        ("url", given(&n.url), &["webhook"]),
        ("topic", given(&n.topic), &["pubsub"]),
        ("endpoint", given(&n.endpoint), &["pubsub"]),
    ];
    Ok(match kind {
        "exec" => {
            foreign_key(path, &"exec", &keys, only_for)?;
            match n.argv {
                Some(a) if !a.get_ref().is_empty() => NotifyConfig::Exec {
                    argv: a.into_inner(),
                    timeout: Duration::from_secs(
                        ranged(&n.timeout_secs, &format!("{path}.timeout_secs"), 1, None)?.unwrap_or(60),
                    ),
                },
                _ => return invalid(span, format!("{path}.argv"), "required: the program and its arguments"),
            }
        }
        "webhook" => {
            foreign_key(path, &"webhook", &keys, only_for)?;
            let Some(u) = n.url else {
                return invalid(span, format!("{path}.url"), "required");
            };
            match url::Url::parse(u.get_ref()) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                    NotifyConfig::Webhook { url }
                }
                _ => return invalid(u.span(), format!("{path}.url"), "expected an http(s) URL"),
            }
        }
        "pubsub" => {
            foreign_key(path, &"pubsub", &keys, only_for)?;
            let Some(t) = n.topic else {
                return invalid(span, format!("{path}.topic"), "required: projects/PROJECT/topics/TOPIC");
            };
            let parts: Vec<&str> = t.get_ref().split('/').collect();
            if parts.len() != 4 || parts[0] != "projects" || parts[2] != "topics" || parts.iter().any(|p| p.is_empty())
            {
                return invalid(
                    t.span(),
                    format!("{path}.topic"),
                    "expected projects/PROJECT/topics/TOPIC",
                );
            }
            if let Some(e) = &n.endpoint {
                let url = url::Url::parse(e.get_ref()).ok();
                if !url.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some()) {
                    return invalid(
                        e.span(),
                        format!("{path}.endpoint"),
                        "must be an http:// or https:// URL with a host",
                    );
                }
            }
            NotifyConfig::PubSub {
                topic: t.into_inner(),
                endpoint: n.endpoint.map(Spanned::into_inner),
            }
        }
        other => {
            return invalid(
                n.kind.span(),
                format!("{path}.kind"),
                format!("unknown notify kind {other:?} (expected \"exec\", \"webhook\" or \"pubsub\")"),
            );
        }
    })
}

/// The watch sections of the file.
#[derive(Debug, Default)]
pub(in crate::config::file) struct RawWatchSections {
    pub watch: Vec<WatchConfig>,
    pub gates: BTreeMap<String, Spanned<RawGate>>,
    pub notify: BTreeMap<String, Spanned<RawNotify>>,
    pub watcher: WatcherConfig,
}

/// `r`, the value of `field`, on a configured registry.
fn configured(r: &RepoRef, field: &str, hosts: &HashSet<&str>) -> Result<()> {
    if hosts.contains(r.registry.as_str()) {
        return Ok(());
    }
    let host = &r.registry;
    Err(Problem::at(
        field,
        format!("{host:?} is not a configured registry (add a [registries.{host:?}] table)"),
    ))
}

/// Check the watch sections.
pub(super) fn settings(raw: RawWatchSections, hosts: &HashSet<&str>, written: Written<'_>) -> Result<WatchSettings> {
    let mut gates = BTreeMap::new();
    for (name, g) in raw.gates {
        let gate = gate(&format!("gates.{}", key_path(&name)), g)?;
        gates.insert(name, gate);
    }
    let mut notify = BTreeMap::new();
    for (name, n) in raw.notify {
        let cfg = self::notify(&format!("notify.{}", key_path(&name)), n)?;
        notify.insert(name, cfg);
    }
    let mut names = HashSet::new();
    for (i, w) in raw.watch.iter().enumerate() {
        let field = |f: &str| format!("watch[{i}].{f}");
        let problem = |f: &str, message: String| Err(Problem::at(field(f), message));
        if !names.insert(&w.name) {
            return problem("name", "duplicate watch name".into());
        }
        if w.tags.is_empty() {
            return problem("tags", "at least one tag or glob".into());
        }
        for t in &w.tags {
            if let Err(e) = globset::Glob::new(t) {
                return problem("tags", format!("{t:?}: {e}"));
            }
        }
        for tpl in &w.target_tags {
            let rest = tpl.replace("{tag}", "t").replace("{digest12}", "d");
            if tpl.is_empty() || rest.contains(['{', '}']) || !crate::oci::valid_tag(&rest) {
                return problem(
                    "target_tags",
                    format!("{tpl:?}: a tag template over {{tag}} and {{digest12}}"),
                );
            }
        }
        // A name that is not defined is placed at itself in the list.
        let gate_names: HashSet<&String> = gates.keys().collect();
        let notify_names: HashSet<&String> = notify.keys().collect();
        for (key, names, known) in [("gates", &w.gates, &gate_names), ("notify", &w.notify, &notify_names)] {
            if let Some((j, n)) = names.iter().enumerate().find(|(_, n)| !known.contains(n)) {
                return Err(Problem {
                    span: written(&field(&format!("{key}[{j}]"))),
                    field: field(key),
                    message: format!("no [{key}.{n}] table"),
                });
            }
        }
        if w.interval.is_zero() {
            return problem("interval_secs", "must be at least 1".into());
        }
        configured(&w.staging, &field("staging"), hosts)?;
        configured(&w.target, &field("target"), hosts)?;
        if w.staging == w.target {
            return problem("target", "must differ from staging".into());
        }
        configured(&w.source, &field("source"), hosts)?;
    }
    if raw.watcher.notify_attempts == 0 {
        return Err(Problem::at("watcher.notify_attempts", "must be at least 1"));
    }
    Ok(WatchSettings {
        watches: raw.watch,
        gates,
        notify,
        watcher: raw.watcher,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn load(text: &str) -> Result<crate::config::Config, String> {
        crate::config::load_str(text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    const BASE: &str = r#"
[registries."docker.io"]
[registries."central.example"]
[[watch]]
name = "node"
source = "docker.io/node"
tags = ["22", "22-*"]
staging = "central.example/staging/node"
target = "central.example/base/node"
target_tags = ["{tag}", "{tag}-{digest12}"]
gates = ["smoke"]
[gates.smoke]
kind = "exec"
argv = ["true"]
"#;

    #[test]
    fn a_file_with_watches_needs_no_source() {
        let c = load(BASE).unwrap();
        assert_eq!(c.source.kind(), "none");
        let w = &c.watch.watches[0];
        assert_eq!(w.source.repository, "library/node");
        assert_eq!(w.interval.as_secs(), 600);
        assert_eq!(c.watch.watcher.ratelimit_floor, 10);
    }

    #[test]
    fn bad_watches_are_refused_with_their_field() {
        for (bad, field) in [
            (
                BASE.replace("gates = [\"smoke\"]", "gates = [\"nope\"]"),
                "watch[0].gates",
            ),
            (BASE.replace("{tag}-{digest12}", "{tag}-{sha}"), "watch[0].target_tags"),
            (
                BASE.replace("central.example/base/node", "elsewhere.example/base/node"),
                "watch[0].target",
            ),
            (BASE.replace("kind = \"exec\"", "kind = \"shell\""), "gates.smoke.kind"),
            (BASE.replace("argv = [\"true\"]", "argv = []"), "gates.smoke.argv"),
            (
                format!("{BASE}\n[gates.sig]\nkind = \"cosign\"\nkeys = [\"/nonexistent.pub\"]\n"),
                "gates.sig.keys",
            ),
        ] {
            let e = load(&bad).unwrap_err();
            assert!(e.contains(field), "{field}: {e}");
        }
        // Without watches, [source] is still required.
        let no_watch = "[registries.\"docker.io\"]\n";
        assert!(load(no_watch).unwrap_err().contains("source"));
    }

    #[test]
    fn watch_problems_are_placed_at_their_key() {
        for (bad, want) in [
            (
                BASE.replace("\"central.example/staging/node\"", "\"nowhere\""),
                "t.toml:8: watch[0].staging: expected HOST/REPOSITORY",
            ),
            (
                BASE.replace("docker.io/node", "docker.io//node"),
                "t.toml:6: watch[0].source: empty repository path",
            ),
            (
                BASE.replace("gates = [\"smoke\"]", "gates = [\n  \"smoke\",\n  \"nope\",\n]"),
                "t.toml:13: watch[0].gates: no [gates.nope] table",
            ),
            (
                BASE.replace("tags = [\"22\"", "interval_secs = 0\ntags = [\"22\""),
                "t.toml:7: watch[0].interval_secs: must be at least 1",
            ),
            (
                format!("{BASE}[watcher]\nnotify_attempts = 0\n"),
                "t.toml:16: watcher.notify_attempts: must be at least 1",
            ),
        ] {
            let e = load(&bad).unwrap_err();
            assert!(e.starts_with(want), "{want}\n{e}");
        }
    }

    /// A gate's or notification's key of another kind, or out of range, is an error at
    /// its line (it was silently ignored or clamped).
    #[test]
    fn gate_and_notify_keys_belong_to_their_kind_and_range() {
        let notify = |table: &str| {
            format!(
                "{}notify = [\"n\"]\n{}[notify.n]\n{table}\n",
                &BASE[..BASE.find("gates =").unwrap()],
                &BASE[BASE.find("gates =").unwrap()..]
            )
        };
        for (bad, want) in [
            (
                BASE.replace("argv = [\"true\"]", "argv = [\"true\"]\nkeys = [\"k.pub\"]"),
                "t.toml:15: gates.smoke.keys: only for kind = \"cosign\"",
            ),
            (
                BASE.replace("argv = [\"true\"]", "argv = [\"true\"]\ntimeout_secs = 0"),
                "t.toml:15: gates.smoke.timeout_secs: must be at least 1, got 0",
            ),
            (
                BASE.replace("argv = [\"true\"]", "argv = [\"true\"]\nmax_output_bytes = 10"),
                "t.toml:15: gates.smoke.max_output_bytes: must be at least 256, got 10",
            ),
            (
                notify("kind = \"webhook\"\nurl = \"https://ci.example/h\"\nargv = [\"x\"]"),
                "t.toml:19: notify.n.argv: only for kind = \"exec\"",
            ),
            (
                notify("kind = \"pubsub\"\ntopic = \"projects/p/topics/t\"\nendpoint = \"localhost:8085\""),
                "t.toml:19: notify.n.endpoint: must be an http:// or https:// URL",
            ),
            (
                notify("kind = \"exec\"\nargv = [\"x\"]\ntimeout_secs = 0"),
                "t.toml:19: notify.n.timeout_secs: must be at least 1, got 0",
            ),
        ] {
            let e = load(&bad).unwrap_err();
            assert!(e.starts_with(want), "{want}\n{e}\n{bad}");
        }
        let ok = notify("kind = \"pubsub\"\ntopic = \"projects/p/topics/t\"\nendpoint = \"http://127.0.0.1:8085\"");
        load(&ok).unwrap();
    }

    #[test]
    fn watches_render_and_reload_stably() {
        let text = format!(
            "{BASE}\n[notify.hook]\nkind = \"webhook\"\nurl = \"https://ci.example/h?token=SECRET\"\n\
             [notify.topic]\nkind = \"pubsub\"\ntopic = \"projects/p/topics/t\"\n"
        );
        let c = load(&text).unwrap();
        let out = crate::config::render(&c);
        assert!(!out.contains("SECRET"), "{out}");
        assert!(
            out.contains("[[watch]]") && out.contains("source = \"docker.io/library/node\""),
            "{out}"
        );
        let again = load(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(crate::config::render(&again), out);
    }

    #[test]
    fn a_cosign_gate_retries_unsigned_images_unless_told_to_reject_them() {
        use crate::config::watch::{GateConfig, Unsigned};
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pub");
        std::fs::write(&key, "not parsed here").unwrap();
        let cosign = |extra: &str| format!("{BASE}[gates.sig]\nkind = \"cosign\"\nkeys = [{key:?}]\n{extra}");
        let unsigned = |text: &str| match &load(text).unwrap().watch.gates["sig"] {
            GateConfig::Cosign { unsigned, .. } => *unsigned,
            other => panic!("{other:?}"),
        };
        assert_eq!(unsigned(&cosign("")), Unsigned::Retry);
        assert_eq!(unsigned(&cosign("unsigned = \"retry\"\n")), Unsigned::Retry);
        let reject = cosign("unsigned = \"reject\"\n");
        assert_eq!(unsigned(&reject), Unsigned::Reject);
        let out = crate::config::render(&load(&reject).unwrap());
        assert!(out.contains("unsigned = \"reject\""), "{out}");
        assert_eq!(unsigned(&out), Unsigned::Reject);

        let e = load(&cosign("unsigned = \"ignore\"\n")).unwrap_err();
        assert!(
            e.starts_with("t.toml:18: gates.sig.unsigned: unknown value \"ignore\""),
            "{e}"
        );
        let e = load(&format!("{BASE}unsigned = \"retry\"\n")).unwrap_err();
        assert!(
            e.starts_with("t.toml:15: gates.smoke.unsigned: only for kind = \"cosign\""),
            "{e}"
        );
    }
}
