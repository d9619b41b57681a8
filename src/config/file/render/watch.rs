//! `[watcher]`, `[[watch]]`, `[gates.NAME]` and `[notify.NAME]` as TOML (no secrets here:
//! key files are rendered as their paths).

use std::fmt::Write as _;

use super::quote;
use crate::config::watch::{GateConfig, NotifyConfig, Unsigned, WatchSettings};

fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let v: Vec<String> = items.into_iter().map(|s| quote(s.as_ref())).collect();
    format!("[{}]", v.join(", "))
}

/// Append the watch sections (nothing when the file has none).
pub(super) fn render(o: &mut String, w: &WatchSettings) {
    if w.watches.is_empty() && w.gates.is_empty() && w.notify.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n[watcher]");
    if let Some(p) = &w.state_file {
        let _ = writeln!(o, "state_file = {}", quote(&p.display().to_string()));
    }
    let _ = writeln!(o, "ratelimit_floor = {}", w.ratelimit_floor);
    let _ = writeln!(o, "notify_attempts = {}", w.notify_attempts);
    for x in &w.watches {
        let _ = writeln!(o, "\n[[watch]]");
        let _ = writeln!(o, "name = {}", quote(&x.name));
        let _ = writeln!(o, "source = {}", quote(&x.source.to_string()));
        let _ = writeln!(o, "tags = {}", list(&x.tags));
        let _ = writeln!(o, "interval_secs = {}", x.interval.as_secs());
        let _ = writeln!(o, "staging = {}", quote(&x.staging.to_string()));
        let _ = writeln!(o, "target = {}", quote(&x.target.to_string()));
        let _ = writeln!(o, "target_tags = {}", list(&x.target_tags));
        let _ = writeln!(o, "gates = {}", list(&x.gates));
        let _ = writeln!(o, "notify = {}", list(&x.notify));
    }
    for (name, g) in &w.gates {
        let _ = writeln!(o, "\n[gates.{}]", quote(name));
        match g {
            GateConfig::Exec {
                argv,
                timeout,
                max_output_bytes,
                pass_env,
            } => {
                let _ = writeln!(o, "kind = \"exec\"\nargv = {}", list(argv));
                let _ = writeln!(o, "timeout_secs = {}", timeout.as_secs());
                let _ = writeln!(o, "max_output_bytes = {max_output_bytes}");
                let _ = writeln!(o, "pass_env = {}", list(pass_env));
            }
            GateConfig::Cosign { keys, unsigned } => {
                let paths = keys.iter().map(|(p, _)| p.display().to_string());
                let _ = writeln!(o, "kind = \"cosign\"\nkeys = {}", list(paths));
                let unsigned = match unsigned {
                    Unsigned::Retry => "retry",
                    Unsigned::Reject => "reject",
                };
                let _ = writeln!(o, "unsigned = {}", quote(unsigned));
            }
        }
    }
    for (name, n) in &w.notify {
        let _ = writeln!(o, "\n[notify.{}]", quote(name));
        match n {
            NotifyConfig::Exec { argv, timeout } => {
                let _ = writeln!(o, "kind = \"exec\"\nargv = {}", list(argv));
                let _ = writeln!(o, "timeout_secs = {}", timeout.as_secs());
            }
            // The URL may carry a token in its query: shown without it.
            NotifyConfig::Webhook { url } => {
                let mut shown = url.clone();
                if shown.query().is_some() {
                    shown.set_query(Some("***"));
                }
                let _ = writeln!(o, "kind = \"webhook\"\nurl = {}", quote(shown.as_str()));
            }
            NotifyConfig::PubSub { topic, endpoint } => {
                let _ = writeln!(o, "kind = \"pubsub\"\ntopic = {}", quote(topic));
                if let Some(e) = endpoint {
                    let _ = writeln!(o, "endpoint = {}", quote(e));
                }
            }
        }
    }
}
