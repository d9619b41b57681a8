//! The effective configuration as TOML, for `regrelay check-config`.
//!
//! Must never: print a secret value; every password and token is rendered as `"***"`.
//! Invariant: the output uses the file layout of [`super`], with every default filled in,
//! so it can be read back by [`super::load_str`] (with the secrets replaced by `"***"`).

use std::fmt::Write as _;

mod watch;

use crate::config::{
    Auth, Config, EntraConfig, EntraCredential, Matcher, RejectMode, ServiceBusAuth, ServiceBusEntity, SourceConfig,
    Untagged,
};

/// The effective configuration as TOML, secrets redacted, for `regrelay check-config`.
pub fn render(config: &Config) -> String {
    let mut out = String::from("# effective configuration: defaults applied, secrets shown as \"***\"\n\n");
    // `write!` into a String cannot fail; the results are ignored on purpose.
    let o = &mut out;
    if !matches!(config.source, SourceConfig::None) {
        let _ = writeln!(o, "[source]");
    }
    match &config.source {
        SourceConfig::None => {}
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
        SourceConfig::ServiceBus(b) => {
            let _ = writeln!(o, "kind = \"servicebus\"");
            let _ = writeln!(o, "namespace = {}", quote(&b.namespace));
            let _ = match &b.entity {
                ServiceBusEntity::Queue(q) => writeln!(o, "queue = {}", quote(q)),
                ServiceBusEntity::Subscription { topic, subscription } => {
                    writeln!(o, "topic = {}\nsubscription = {}", quote(topic), quote(subscription))
                }
            };
            if let Some(e) = &b.endpoint {
                let _ = writeln!(o, "endpoint = {}", quote(e));
            }
            let _ = writeln!(o, "receivers = {}", b.receivers);
            let _ = writeln!(o, "wait_secs = {}", b.wait.as_secs());
            if let Some(r) = b.lock_renew {
                let _ = writeln!(o, "lock_renew_secs = {}", r.as_secs());
            }
            // The same setting as pipeline.reject below (abandon = nack, complete = ack).
            let reject = match config.pipeline.reject_mode {
                RejectMode::Ack => "complete",
                RejectMode::Nack => "abandon",
            };
            let _ = writeln!(o, "reject = \"{reject}\"");
            let _ = match &b.auth {
                ServiceBusAuth::Sas { key_name, .. } => writeln!(
                    o,
                    "auth = {{ kind = \"sas\", key_name = {}, key = \"***\" }}",
                    quote(key_name)
                ),
                ServiceBusAuth::Entra { entra, scope } => writeln!(o, "auth = {}", servicebus_entra(entra, scope)),
            };
        }
    }
    if let Some(origin) = &config.origin {
        let _ = writeln!(o, "\n[source.origin]");
        let _ = writeln!(o, "registry = {}", quote(&origin.registry));
        let _ = writeln!(o, "repository = {}", quote(&origin.repository));
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
    let _ = writeln!(o, "retry_delay_min_secs = {}", p.retry_delay_min.as_secs());
    let _ = writeln!(o, "retry_delay_max_secs = {}", p.retry_delay_max.as_secs());
    let _ = writeln!(o, "max_waiting = {}", p.max_waiting);
    let _ = writeln!(o, "delete_dry_run = {}", p.delete_dry_run);
    let _ = writeln!(o, "tag_delete_fallback = \"{}\"", p.tag_delete_fallback.as_str());

    let _ = writeln!(o, "\n[admin]");
    let _ = match config.admin_listen {
        Some(addr) => writeln!(o, "listen = {}", quote(&addr.to_string())),
        None => writeln!(o, "enabled = false"),
    };

    let rc = &config.reconcile;
    let _ = writeln!(o, "\n[reconcile]");
    let _ = writeln!(o, "interval_secs = {}", rc.interval.map_or(0, |d| d.as_secs()));
    let _ = writeln!(o, "jobs = {}", rc.jobs);
    let _ = writeln!(o, "prune = {}", rc.prune);

    for r in &config.registries {
        let _ = writeln!(o, "\n[registries.{}]", quote(&r.host));
        let _ = writeln!(o, "insecure = {}", r.insecure);
        if let Some(ca) = &r.ca_file {
            let _ = writeln!(o, "ca_file = {}", quote(&ca.display().to_string()));
        }
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
            Auth::Google(g) => match &g.credentials_file {
                Some(f) => format!(
                    "{{ kind = \"google\", credentials_file = {} }}",
                    quote(&f.display().to_string())
                ),
                None => "{ kind = \"google\" }".to_owned(),
            },
            Auth::AcrEntra { tenant, entra, scope } => acr_entra(tenant, entra, scope),
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
        if !rule.repositories.is_empty() {
            let names: Vec<String> = rule.repositories.iter().map(|r| quote(r)).collect();
            let _ = writeln!(o, "repositories = [{}]", names.join(", "));
        }
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
        if let Some(d) = rule.delete_dry_run {
            let _ = writeln!(o, "delete_dry_run = {d}");
        }
        if !rule.require.is_empty() {
            let names: Vec<String> = rule.require.iter().map(|g| quote(g)).collect();
            let _ = writeln!(o, "require = [{}]", names.join(", "));
        }
        for t in &rule.targets {
            let _ = writeln!(o, "[[rules.targets]]");
            let _ = writeln!(o, "registry = {}", quote(&t.registry));
            let _ = writeln!(o, "repository = {}", quote(&t.repository));
            if let Some(tag) = &t.tag {
                let _ = writeln!(o, "tag = {}", quote(tag));
            }
            if let Some(p) = &t.strip_prefix {
                let _ = writeln!(o, "strip_prefix = {}", quote(p));
            }
            if let Some(example) = example_mapping(rule, t) {
                let _ = writeln!(o, "# example: {example}");
            }
        }
    }
    watch::render(o, &config.watch);
    out
}

/// `SRC/REPO:1.0 -> TARGET/MAPPED:TAG` for a source repository the rule matches, built
/// from its pattern (`**` = `team/app`, `*` = `app`, under the target's `strip_prefix`);
/// `None` when no such sample matches (a regex, say) or the target refuses it.
fn example_mapping(rule: &crate::config::Rule, t: &crate::config::RuleTarget) -> Option<String> {
    let from_glob = match &rule.repository {
        Matcher::Glob(_, g) => Some(g.replace("**", "team/app").replace('*', "app")),
        Matcher::Regex(..) => None,
    };
    let prefix = t.strip_prefix.as_deref().unwrap_or_default();
    let repository = [
        from_glob,
        Some(format!("{prefix}team/app")),
        Some(format!("{prefix}app")),
    ]
    .into_iter()
    .flatten()
    .find(|r| rule.repository.is_match(r) && t.strips(r))?;
    let tag = t.expand_tag("1.0");
    Some(format!(
        "{}/{repository}:1.0 -> {}/{}:{tag}",
        rule.source_registry,
        t.registry,
        t.expand_repository(&rule.source_registry, &repository)
    ))
}

/// The inline table of `kind = "acr_entra"`, secrets as `"***"`.
fn acr_entra(tenant: &str, entra: &EntraConfig, scope: &str) -> String {
    let mut keys = vec![("kind", quote("acr_entra")), ("tenant", quote(tenant))];
    let path = |p: &std::path::Path| quote(&p.display().to_string());
    match &entra.credential {
        EntraCredential::WorkloadIdentity { client_id, token_file } => {
            keys.push(("credential", quote("workload_identity")));
            keys.extend(client_id.as_deref().map(|c| ("client_id", quote(c))));
            keys.extend(token_file.as_deref().map(|f| ("federated_token_file", path(f))));
        }
        EntraCredential::ManagedIdentity { client_id } => {
            keys.push(("credential", quote("managed_identity")));
            keys.extend(client_id.as_deref().map(|c| ("client_id", quote(c))));
        }
        EntraCredential::ClientSecret { client_id, .. } => {
            keys.push(("credential", quote("client_secret")));
            keys.push(("client_id", quote(client_id)));
            keys.push(("client_secret", quote("***")));
        }
        EntraCredential::StaticTokenFile { path: p } => {
            keys.push(("credential", quote("static_token_file")));
            keys.push(("token_file", path(p)));
        }
    }
    keys.push(("authority_host", quote(&entra.authority_host)));
    keys.push(("scope", quote(scope)));
    let body: Vec<String> = keys.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("{{ {} }}", body.join(", "))
}

/// The inline table of a Service Bus `kind = "entra"` auth, secrets as `"***"`.
fn servicebus_entra(entra: &EntraConfig, scope: &str) -> String {
    let path = |p: &std::path::Path| quote(&p.display().to_string());
    let mut keys = vec![("kind", quote("entra"))];
    let (credential, client_id) = match &entra.credential {
        EntraCredential::WorkloadIdentity { client_id, .. } => ("workload_identity", client_id.as_deref()),
        EntraCredential::ManagedIdentity { client_id } => ("managed_identity", client_id.as_deref()),
        EntraCredential::ClientSecret { client_id, .. } => ("client_secret", Some(client_id.as_str())),
        EntraCredential::StaticTokenFile { .. } => ("static_token_file", None),
    };
    keys.push(("credential", quote(credential)));
    keys.extend(entra.tenant.as_deref().map(|t| ("tenant", quote(t))));
    keys.extend(client_id.map(|c| ("client_id", quote(c))));
    match &entra.credential {
        EntraCredential::WorkloadIdentity { token_file, .. } => {
            keys.extend(token_file.as_deref().map(|f| ("federated_token_file", path(f))));
        }
        EntraCredential::ClientSecret { .. } => keys.push(("client_secret", quote("***"))),
        EntraCredential::StaticTokenFile { path: p } => keys.push(("token_file", path(p))),
        EntraCredential::ManagedIdentity { .. } => {}
    }
    keys.push(("authority_host", quote(&entra.authority_host)));
    keys.push(("scope", quote(scope)));
    let body: Vec<String> = keys.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("{{ {} }}", body.join(", "))
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
