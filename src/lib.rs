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
//! | `main.rs` | thin binary: CLI, tracing, exit codes (64 = bad usage/config), `--version` | `app`, `cli`, `config`, `notify` |
//! | [`app`] | composition root: build everything from a `Config` for `regrelay run`, run, drain; builds `copy`'s engine too | all |
//! | [`cli`] | command front ends besides the daemon: `copy` (pairs, credential flags, progress, report), `explain` (one event's plan, optionally resolved), `promote`, `snapshot`, `sync` (plan lines, exit codes), `watch` | `app`, `config`, `oci`, `registry`, `replicate`, `engine`, `promote` |
//! | [`promote`] | cip manifests, edge planning, inventory (tags/list + HEAD), snapshots; a front end over the executor | `engine`, `registry`, `oci` |
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
//! | [`engine`] | the executor: makes desired-state items true and verified (tag locks, single-flight, recent memory, guarded deletes, registry health, the gates items require); blind to messages | `replicate`, `gates`, `health`, `metrics`, `oci` |
//! | [`sync`] | the second front end: `regrelay sync` and the reconcile sweep compare sources and targets (tag lists, HEADs) and send differences to the executor; blind to messages | `engine`, `health`, `rules`, `replicate`, `registry` (reads), `config`, `oci`, `metrics` |
//! | [`registry`] | `Registry` trait, HTTP client, auth, error classes | `config`, `credentials`, `oci`, `metrics` |
//! | [`replicate`] | the copy engine, its verifying stream, and single-manifest ops | `registry`, `oci` |
//! | [`retry`] | the one retry schedule (exponential, jittered) of every retry loop | — (leaf) |
//! | [`gates`] | checks of one image by digest before a tag is written: exec (argv), cosign (P-256 keys); the configured `GateSet` | `registry`, `config`, `oci` |
//! | [`watch`] | buffered base images: poll upstream tags, stage, gate, promote through the executor, notify dependents | `engine`, `gates`, `registry`, `config`, `metrics`, `oci` |
//!
//! The layering tests (`src/layering.rs`) enforce the direction: they resolve every
//! in-crate path a module names (plain, grouped and nested imports, paths in code,
//! `super::` climbs) and fail on one that points up.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod engine;
pub mod event;
pub mod gates;
pub mod health;
pub mod metrics;
pub mod notify;
pub mod oci;
pub mod pipeline;
pub mod promote;
pub mod queue;
pub mod registry;
pub mod replicate;
pub mod retry;
pub mod rules;
pub mod shutdown;
pub mod sync;
pub mod watch;

// The dependency-direction test (STYLE.md section 1), with its path matcher.
#[cfg(test)]
mod layering;
