//! The effective configuration as TOML, for `regrelay check-config`.
//!
//! Must never: print a secret value; every password and token is rendered as `"***"`.
//! Invariant: the output uses the file layout of [`super`], with every default filled in,
//! so it can be read back by [`super::load_str`] (with the secrets replaced by `"***"`).

use std::fmt::Write as _;

use crate::config::{Auth, Config, Matcher, RejectMode, SourceConfig, Untagged};

/// The effective configuration as TOML, secrets redacted, for `regrelay check-config`.
pub fn render(config: &Config) -> String {
    let mut out = String::from("# effective configuration: defaults applied, secrets shown as \"***\"\n\n");
    // `write!` into a String cannot fail; the results are ignored on purpose.
    let o = &mut out;
    let _ = writeln!(o, "[source]");
    match &config.source {
        SourceConfig::PubSub(p) => {
            let _ = writeln!(o, "kind = \"pubsub\"");
            let _ = writeln!(o, "subscription = {}", quote(&p.subscription));
            if let Some(e) = &p.endpoint {
                let _ = writeln!(o, "endpoint = {}", quote(e));
            }
            let _ = writeln!(o, "max_outstanding_messages = {}", p.max_outstanding_messages);
            let _ = writeln!(o, "lease_extension_secs = {}", p.lease_extension.as_secs());
            let _ = writeln!(o, "max_lease_secs = {}", p.max_lease.as_secs());
        }
        SourceConfig::File(f) => {
            let _ = writeln!(o, "kind = \"file\"");
            let path = f.path.as_ref().map_or("-".into(), |p| p.display().to_string());
            let _ = writeln!(o, "path = {}", quote(&path));
        }
    }

    let p = &config.pipeline;
    let _ = writeln!(o, "\n[pipeline]");
    let _ = writeln!(o, "workers = {}", p.workers);
    let _ = writeln!(o, "blob_jobs = {}", p.blob_jobs);
    let _ = writeln!(o, "referrers = {}", p.referrers);
    let _ = writeln!(o, "dedup_ttl_secs = {}", p.dedup_ttl.as_secs());
    let _ = writeln!(o, "dedup_max_entries = {}", p.dedup_max_entries);
    let reject = match p.reject_mode {
        RejectMode::Ack => "ack",
        RejectMode::Nack => "nack",
    };
    let _ = writeln!(o, "reject = \"{reject}\"");
    let _ = writeln!(o, "shutdown_grace_secs = {}", p.shutdown_grace.as_secs());
    let _ = writeln!(o, "pause_min_secs = {}", p.pause_min.as_secs());
    let _ = writeln!(o, "pause_max_secs = {}", p.pause_max.as_secs());
    let _ = writeln!(o, "delete_dry_run = {}", p.delete_dry_run);

    let _ = writeln!(o, "\n[admin]");
    let _ = match config.admin_listen {
        Some(addr) => writeln!(o, "listen = {}", quote(&addr.to_string())),
        None => writeln!(o, "enabled = false"),
    };

    for r in &config.registries {
        let _ = writeln!(o, "\n[registries.{}]", quote(&r.host));
        let _ = writeln!(o, "insecure = {}", r.insecure);
        let _ = writeln!(o, "max_in_flight = {}", r.max_in_flight);
        if let Some(rps) = r.requests_per_second {
            let _ = writeln!(o, "requests_per_second = {rps:?}");
        }
        if let Some(c) = r.chunk_size {
            let _ = writeln!(o, "chunk_size = {c}");
        }
        let t = &r.retry;
        let _ = writeln!(
            o,
            "retry = {{ attempts = {}, min_delay_ms = {}, max_delay_ms = {}, max_retry_after_secs = {} }}",
            t.attempts,
            t.min_delay.as_millis(),
            t.max_delay.as_millis(),
            t.max_retry_after.as_secs()
        );
        let _ = writeln!(o, "connect_timeout_secs = {}", r.connect_timeout.as_secs());
        let _ = writeln!(o, "read_timeout_secs = {}", r.read_timeout.as_secs());
        let _ = writeln!(o, "unreachable_after_secs = {}", r.unreachable_after.as_secs());
        let auth = match &r.auth {
            Auth::Anonymous => "{ kind = \"anonymous\" }".to_owned(),
            Auth::Basic { username, .. } => {
                format!(
                    "{{ kind = \"basic\", username = {}, password = \"***\" }}",
                    quote(username)
                )
            }
            Auth::IdentityToken(_) => "{ kind = \"identity_token\", token = \"***\" }".to_owned(),
            Auth::DockerConfig { path } => {
                format!(
                    "{{ kind = \"docker_config\", path = {} }}",
                    quote(&path.display().to_string())
                )
            }
        };
        let _ = writeln!(o, "auth = {auth}");
    }

    for rule in &config.rules {
        let _ = writeln!(o, "\n[[rules]]");
        let _ = writeln!(o, "name = {}", quote(&rule.name));
        let _ = writeln!(o, "source_registry = {}", quote(&rule.source_registry));
        let _ = match &rule.repository {
            Matcher::Glob(_, g) => writeln!(o, "repository = {}", quote(g)),
            Matcher::Regex(_, r) => writeln!(o, "repository_regex = {}", quote(r)),
        };
        matchers(o, "tags", "tags_regex", &rule.tags_include);
        matchers(o, "exclude_tags", "exclude_tags_regex", &rule.tags_exclude);
        let actions: Vec<&str> = [(rule.on_push, "\"push\""), (rule.on_delete, "\"delete\"")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        let _ = writeln!(o, "actions = [{}]", actions.join(", "));
        let untagged = match rule.untagged {
            Untagged::Ignore => "ignore",
            Untagged::Replicate => "replicate",
        };
        let _ = writeln!(o, "untagged = \"{untagged}\"");
        for t in &rule.targets {
            let _ = writeln!(o, "[[rules.targets]]");
            let _ = writeln!(o, "registry = {}", quote(&t.registry));
            let _ = writeln!(o, "repository = {}", quote(&t.repository));
            if let Some(tag) = &t.tag {
                let _ = writeln!(o, "tag = {}", quote(tag));
            }
        }
    }
    out
}

/// `globs = [...]` and `regexes = [...]` lines for the non-empty kinds of `list`.
fn matchers(o: &mut String, globs: &str, regexes: &str, list: &[Matcher]) {
    let (mut g, mut r) = (Vec::new(), Vec::new());
    for m in list {
        match m {
            Matcher::Glob(_, s) => g.push(quote(s)),
            Matcher::Regex(_, s) => r.push(quote(s)),
        }
    }
    for (key, items) in [(globs, g), (regexes, r)] {
        if !items.is_empty() {
            let _ = writeln!(o, "{key} = [{}]", items.join(", "));
        }
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}
