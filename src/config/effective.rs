//! The effective configuration as TOML, for `regrelay check-config`: the typed
//! [`Config`] serialized in the file's layout, every default filled in.
//!
//! Must never: print a secret value. Secrets are [`Secret`]s, whose `Serialize` writes
//! `"***"`; a webhook URL's query (which may carry a token) is shown as `***` too.
//!
//! Invariant: the output loads again with [`super::load_str`] (secrets aside) to the same
//! effective configuration. The typed structs serialize themselves in the file's layout
//! (auth tables through serde's `kind` tag); only `[admin]`, `[source]`'s extra keys and
//! rules (patterns back under their glob or regex key) go through views below.

use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

use super::watch::WatchSettings;
use super::{Config, RegistryConfig, RejectMode, Secret, SourceConfig};
use crate::rules::{Matcher, Rule, RuleTarget, Untagged, example_mapping};

impl Serialize for Secret {
    /// Always `"***"`: the value never leaves the process this way.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// The effective configuration as TOML, secrets redacted, for `regrelay check-config`;
/// each rule target's example mapping follows as a comment.
pub fn render(config: &Config) -> String {
    let mut out = String::from("# effective configuration: defaults applied, secrets shown as \"***\"\n\n");
    // Every value here is representable in TOML (no None in arrays, maps keyed by strings).
    out.push_str(&toml::to_string(&File::of(config)).unwrap_or_else(|e| format!("# cannot render: {e}\n")));
    let examples: Vec<String> = config
        .rules
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.targets.iter().enumerate().filter_map(move |(j, t)| {
                example_mapping(r, t).map(|e| format!("# example: {e}  (rules[{i}].targets[{j}])\n"))
            })
        })
        .collect();
    if !examples.is_empty() {
        out.push_str("\n# Example mappings, one per rule target:\n");
        out.extend(examples);
    }
    out
}

/// The whole file.
#[derive(Serialize)]
struct File<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<Source<'a>>,
    pipeline: &'a super::PipelineConfig,
    admin: Admin,
    reconcile: &'a super::ReconcileConfig,
    registries: BTreeMap<&'a str, &'a RegistryConfig>,
    rules: Vec<RuleView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    watcher: Option<&'a super::watch::WatcherConfig>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    watch: &'a [super::watch::WatchConfig],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    gates: &'a BTreeMap<String, super::watch::GateConfig>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    notify: &'a BTreeMap<String, super::watch::NotifyConfig>,
}

impl<'a> File<'a> {
    fn of(c: &'a Config) -> File<'a> {
        // Exhaustive, so that a new section cannot be left out of check-config.
        let Config {
            source: _,
            origin: _,
            registries,
            rules,
            pipeline,
            admin_listen,
            watch,
            reconcile,
        } = c;
        let WatchSettings {
            watches,
            gates,
            notify,
            watcher,
        } = watch;
        let any_watch = !(watches.is_empty() && gates.is_empty() && notify.is_empty());
        File {
            source: Source::of(c),
            pipeline,
            admin: Admin {
                listen: admin_listen.map(|a| a.to_string()),
                enabled: admin_listen.is_none().then_some(false),
            },
            reconcile,
            registries: registries.iter().map(|r| (r.host.as_str(), r)).collect(),
            rules: rules.iter().map(RuleView).collect(),
            watcher: any_watch.then_some(watcher),
            watch: watches,
            gates,
            notify,
        }
    }
}

/// `[admin]`: `listen`, or `enabled = false`.
#[derive(Serialize)]
struct Admin {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enabled: Option<bool>,
}

/// `[source]`: the typed source (its `kind` and keys), with `origin` and, for Service
/// Bus, `reject` beside it.
#[derive(Serialize)]
struct Source<'a> {
    #[serde(flatten)]
    source: &'a SourceConfig,
    /// The same setting as `pipeline.reject` (abandon = nack, complete = ack).
    #[serde(skip_serializing_if = "Option::is_none")]
    reject: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<&'a super::OriginConfig>,
}

impl<'a> Source<'a> {
    fn of(c: &'a Config) -> Option<Source<'a>> {
        let reject = match c.pipeline.reject_mode {
            RejectMode::Ack => "complete",
            RejectMode::Nack => "abandon",
        };
        (!matches!(c.source, SourceConfig::None)).then_some(Source {
            source: &c.source,
            reject: matches!(c.source, SourceConfig::ServiceBus(_)).then_some(reject),
            origin: c.origin.as_ref(),
        })
    }
}

/// `[[rules]]`: patterns back under the key they came from (glob or regex).
struct RuleView<'a>(&'a Rule);

impl Serialize for RuleView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct View<'a> {
            name: &'a str,
            source_registry: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            repository: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            repository_regex: Option<&'a str>,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            repositories: &'a [String],
            #[serde(skip_serializing_if = "Vec::is_empty")]
            tags: Vec<&'a str>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            tags_regex: Vec<&'a str>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            exclude_tags: Vec<&'a str>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            exclude_tags_regex: Vec<&'a str>,
            actions: Vec<&'static str>,
            untagged: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            delete_dry_run: Option<bool>,
            targets: &'a [RuleTarget],
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            require: &'a [String],
        }
        /// (globs, regexes) of `list`, as written.
        fn split(list: &[Matcher]) -> (Vec<&str>, Vec<&str>) {
            let globs = list.iter().filter(|m| matches!(m, Matcher::Glob(..)));
            let regexes = list.iter().filter(|m| matches!(m, Matcher::Regex(..)));
            (
                globs.map(Matcher::as_str).collect(),
                regexes.map(Matcher::as_str).collect(),
            )
        }
        // Exhaustive, so that a new rule setting cannot be left out of check-config.
        let Rule {
            name,
            source_registry,
            repository,
            repositories,
            tags_include,
            tags_exclude,
            on_push,
            on_delete,
            untagged,
            delete_dry_run,
            targets,
            require,
        } = self.0;
        let (repository, repository_regex) = match repository {
            Matcher::Glob(_, g) => (Some(g.as_str()), None),
            Matcher::Regex(_, re) => (None, Some(re.as_str())),
        };
        let (tags, tags_regex) = split(tags_include);
        let (exclude_tags, exclude_tags_regex) = split(tags_exclude);
        let actions = [(*on_push, "push"), (*on_delete, "delete")];
        View {
            name,
            source_registry,
            repository,
            repository_regex,
            repositories,
            tags,
            tags_regex,
            exclude_tags,
            exclude_tags_regex,
            actions: actions.into_iter().filter_map(|(on, a)| on.then_some(a)).collect(),
            untagged: match untagged {
                Untagged::Ignore => "ignore",
                Untagged::Replicate => "replicate",
            },
            delete_dry_run: *delete_dry_run,
            targets,
            require,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::render;
    use crate::config::load_str;

    /// Every kind of secret the file can hold, inline, so that the value is known here.
    const SECRETS: &str = r#"
[source]
kind = "servicebus"
namespace = "ex.servicebus.windows.net"
queue = "q"
auth = { kind = "sas", connection_string = "Endpoint=sb://ex.servicebus.windows.net/;SharedAccessKeyName=l;SharedAccessKey=sb-k3y-1" }

[registries."a.example"]
auth = { kind = "basic", username = "bob", password = "pw-s3cret-2" }
[registries."b.example"]
auth = { kind = "identity_token", token = "t0ken-s3cret-3" }
[registries."c.example"]
auth = { kind = "acr_entra", tenant = "t", credential = "client_secret", client_id = "c", client_secret = "entra-s3cret-4" }

[[rules]]
source_registry = "a.example"
repository = "**"
[[rules.targets]]
registry = "b.example"

[notify.hook]
kind = "webhook"
url = "https://hooks.example/x?token=hook-s3cret-5"
"#;

    #[test]
    fn no_secret_reaches_check_config_or_debug() {
        let sb_entra = SECRETS.replace(
            "auth = { kind = \"sas\", connection_string = \"Endpoint=sb://ex.servicebus.windows.net/;SharedAccessKeyName=l;SharedAccessKey=sb-k3y-1\" }",
            "auth = { kind = \"entra\", credential = \"client_secret\", tenant = \"t\", client_id = \"c\", client_secret = \"sb-entra-s3cret-6\" }",
        );
        for text in [SECRETS.to_owned(), sb_entra] {
            let c = load_str(&text, Path::new("s.toml")).unwrap_or_else(|e| panic!("{e}"));
            let shown = render(&c);
            let debug = format!("{c:?}");
            for secret in [
                "sb-k3y-1",
                "pw-s3cret-2",
                "t0ken-s3cret-3",
                "entra-s3cret-4",
                "hook-s3cret-5",
                "sb-entra-s3cret-6",
            ] {
                assert!(!shown.contains(secret), "{secret} in\n{shown}");
                assert!(!debug.contains(secret), "{secret} in\n{debug}");
            }
            assert!(shown.contains("\"***\""), "{shown}");
            // Valid TOML that loads again (the secrets are now "***").
            load_str(&shown, Path::new("shown.toml")).unwrap_or_else(|e| panic!("{e}\n{shown}"));
        }
    }
}

#[cfg(test)]
mod helm_schema {
    use std::collections::BTreeSet;

    use crate::config::{PipelineConfig, ReconcileConfig, RegistryConfig, RetryPolicy};

    /// The keys of a typed section, from its one definition: the fields its `Deserialize`
    /// accepts (optional ones included), as serde hands them to the deserializer.
    fn keys<'de, T: serde::Deserialize<'de>>() -> BTreeSet<String> {
        struct Fields(Vec<&'static str>);
        #[derive(Debug)]
        struct Stop;
        impl std::fmt::Display for Stop {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("stop")
            }
        }
        impl std::error::Error for Stop {}
        impl serde::de::Error for Stop {
            fn custom<M: std::fmt::Display>(_: M) -> Stop {
                Stop
            }
        }
        impl<'de> serde::Deserializer<'de> for &mut Fields {
            type Error = Stop;
            fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
                Err(Stop)
            }
            fn deserialize_struct<V: serde::de::Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Stop> {
                self.0.extend(fields);
                Err(Stop)
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
                option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
            }
        }
        let mut fields = Fields(Vec::new());
        let _ = T::deserialize(&mut fields);
        assert!(!fields.0.is_empty(), "not a struct");
        fields.0.iter().map(|f| (*f).to_owned()).collect()
    }
    /// The Helm chart's schema lists every key of the sections that have one typed
    /// definition, and no other (it refuses unknown keys, so a missing one cannot be set).
    #[test]
    fn helm_schema_lists_the_keys_of_the_typed_sections() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/regrelay/values.schema.json");
        let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let config = &schema["properties"]["config"]["properties"];
        let of = |v: &serde_json::Value| -> BTreeSet<String> {
            v["properties"].as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(of(&config["pipeline"]), keys::<PipelineConfig>(), "[pipeline]");
        assert_eq!(of(&config["reconcile"]), keys::<ReconcileConfig>(), "[reconcile]");
        let registry = &config["registries"]["items"];
        assert_eq!(
            of(&registry["properties"]["retry"]),
            keys::<RetryPolicy>(),
            "registries[].retry"
        );
        // The chart's list gives the table's key as `host`; `test_dial` is for tests only.
        let mut expected = keys::<RegistryConfig>();
        expected.remove("test_dial");
        expected.insert("host".into());
        assert_eq!(of(registry), expected, "registries[]");
    }

    /// The README's configuration reference has a row for every key of the sections that
    /// have one typed definition, and no other.
    #[test]
    fn readme_lists_the_keys_of_the_typed_sections() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        // The backticked keys in the first column of the table after the line starting
        // with `section`.
        let table = |section: &str| -> BTreeSet<String> {
            let mut lines = readme.lines().skip_while(|l| !l.starts_with(section));
            assert!(lines.next().is_some(), "no {section} in the README");
            let rows = lines.skip_while(|l| !l.starts_with('|')).skip(2);
            rows.take_while(|l| l.starts_with('|'))
                .flat_map(|row| {
                    let first = row.split('|').nth(1).unwrap_or_default();
                    first
                        .split('`')
                        .skip(1)
                        .step_by(2)
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        assert_eq!(table("`[pipeline]`"), keys::<PipelineConfig>(), "[pipeline]");
        assert_eq!(table("`[reconcile]`"), keys::<ReconcileConfig>(), "[reconcile]");
        let mut registry = keys::<RegistryConfig>();
        registry.remove("test_dial");
        assert_eq!(table("`[registries.\"HOST[:PORT]\"]`"), registry, "[registries.HOST]");
    }
}
