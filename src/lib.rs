//! regrelay keeps container images replicated between OCI registries: it copies an image
//! registry-to-registry, digest-preserving, with its referrers and signatures, and proves
//! the target holds exactly the same bytes before it reports success.
//!
//! # Layout and dependency direction
//!
//! Data flows from a queue source through the pipeline to `replicate` and then to the
//! `registry` client. Imports follow the same direction and never point back: the registry
//! client knows nothing about queues, and `replicate` knows nothing about acknowledgements.
//!
//! | module | role | may import (in-crate) |
//! |---|---|---|
//! | `main.rs` | thin binary: CLI, tracing, exit codes (64 = bad usage/config) | `app`, `config`, `oci`, `registry`, `replicate` |
//! | [`app`] | composition root of `regrelay run`: build everything from a `Config`, run, drain | all |
//! | [`shutdown`] | SIGTERM/SIGINT → cancellation token | — (leaf) |
//! | [`notify`] | systemd `READY=1` / `WATCHDOG=1` / `STOPPING=1` | — (leaf) |
//! | [`config`] | TOML loading and validation, typed settings, [`config::Secret`] | — (leaf) |
//! | [`credentials`] | Google ADC and Entra ID token providers, cached, refreshed before expiry | `config` |
//! | [`metrics`] | the Prometheus families (mirrors of the health state included) | — (leaf) |
//! | [`health`] | per-registry health, pause and readiness of one run | `metrics` |
//! | [`admin`] | `/metrics`, `/healthz`, `/livez`, `/readyz` | `metrics`, `health` |
//! | [`oci`] | references, digests, media types, manifest views; no I/O | — (leaf) |
//! | [`event`] | pure decoders: GAR/GCR, ACR, Artifactory, Harbor, distribution, Pub/Sub push envelopes, generic → [`event::Event`]s | `oci` |
//! | [`rules`] | pure planner: event + rules → target routes | `config`, `event`, `oci` |
//! | [`queue`] | `Source` trait, `Delivery`, move-only `AckHandle`; Pub/Sub, Service Bus and file sources | `config`, `metrics`, `credentials` |
//! | [`pipeline`] | receive, decode, route, execute, settle; **the only place that settles** | `queue`, `event`, `rules`, `engine`, `health`, `replicate` (error classes), `metrics`, `config`, `oci` |
//! | [`engine`] | the executor: makes desired-state items true and verified (tag locks, single-flight, recent memory, guarded deletes, registry health); blind to messages | `replicate`, `health`, `metrics`, `oci` |
//! | [`registry`] | `Registry` trait, HTTP client, auth, error classes | `config`, `credentials`, `oci`, `metrics` |
//! | [`replicate`] | the copy engine, its verifying stream, and single-manifest ops | `registry`, `oci` |
//!
//! The layering tests below enforce the direction for the lower layers.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod config;
pub mod credentials;
pub mod engine;
pub mod event;
pub mod health;
pub mod metrics;
pub mod notify;
pub mod oci;
pub mod pipeline;
pub mod queue;
pub mod registry;
pub mod replicate;
pub mod rules;
pub mod shutdown;

#[cfg(test)]
mod layering {
    //! GGCR-style depcheck: the lower layers must not import the upper ones.
    use std::path::Path;

    fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
        if dir.is_file() {
            out.push((dir.display().to_string(), std::fs::read_to_string(dir).unwrap()));
            return;
        }
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push((path.display().to_string(), std::fs::read_to_string(&path).unwrap()));
            }
        }
    }

    fn assert_no_imports(dir: &str, forbidden: &[&str]) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir);
        let mut files = Vec::new();
        sources(&root, &mut files);
        assert!(!files.is_empty(), "no sources under {}", root.display());
        for (path, text) in files {
            for f in forbidden {
                assert!(!text.contains(f), "{path} imports {f}, which points up the layering");
            }
        }
    }

    #[test]
    fn registry_and_replicate_never_import_queue_or_pipeline() {
        let upper = ["crate::queue", "crate::pipeline", "crate::app", "crate::admin"];
        assert_no_imports("registry", &upper);
        assert_no_imports("replicate", &upper);
    }

    #[test]
    fn registry_never_imports_replicate_and_leaves_import_nothing() {
        assert_no_imports("registry", &["crate::replicate"]);
        assert_no_imports("oci", &["crate::"]);
        assert_no_imports("event", &["crate::registry", "crate::replicate", "crate::config"]);
        assert_no_imports("metrics.rs", &["crate::"]);
        assert_no_imports("shutdown.rs", &["crate::"]);
        let not_config = [
            "crate::registry",
            "crate::replicate",
            "crate::queue",
            "crate::pipeline",
            "crate::metrics",
        ];
        assert_no_imports("config", &not_config);
        // Token providers sit just above config, for the registry client and queues alike.
        assert_no_imports(
            "credentials.rs",
            &[&not_config[..], &["crate::app", "crate::oci"]].concat(),
        );
    }

    #[test]
    fn only_the_pipeline_sits_between_sources_and_the_engine() {
        // Sources know nothing of the engine; the planner and the admin server do no I/O
        // on registries; the pipeline reaches registries only through `replicate`.
        let engine = ["crate::registry", "crate::replicate", "crate::pipeline"];
        assert_no_imports("queue", &engine);
        assert_no_imports("rules.rs", &engine);
        assert_no_imports(
            "admin.rs",
            &["crate::registry", "crate::replicate", "crate::queue", "crate::pipeline"],
        );
        assert_no_imports("pipeline", &["crate::registry", "crate::app", "crate::admin"]);
    }

    #[test]
    fn the_executor_knows_nothing_of_messages() {
        let messages = [
            "crate::queue",
            "crate::pipeline",
            "crate::event",
            "crate::app",
            "crate::admin",
        ];
        assert_no_imports("engine", &messages);
        assert_no_imports(
            "health.rs",
            &[&messages[..], &["crate::engine", "crate::replicate", "crate::registry"]].concat(),
        );
    }
}
