//! `regrelay explain`: what one event would make the daemon do, before it does it.
//!
//! Role: decode one event payload the way `regrelay run` does (same decoders, same
//! `[source.origin]`), refuse a registry host the configuration does not name, plan the
//! routes with the configured rules, and print for each event and route the rule, the
//! target reference and what would happen (copy, delete, ignored and why, refused host).
//! With `--resolve` it also reads the current digests (manifest HEADs; a GET only where a
//! registry's HEAD carries no digest) of the source and the target and says whether the
//! target is already in place, or whether only the tag would be pointed.
//!
//! Must never: write to a registry, settle or publish a message, contact any host without
//! `--resolve`, or contact a host that is not in the configuration (a refused host is
//! reported, not resolved).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use crate::app;
use crate::config::{self, Config};
use crate::event::{self, Action, Event};
use crate::oci::{Digest, Locator, Reference};
use crate::registry::RegistrySet;
use crate::replicate::{Options, Replicator};
use crate::rules::{self, Plan, Route, RouteKind};

/// The arguments of `regrelay explain`.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The TOML configuration file.
    #[arg(long, short = 'c', env = "REGRELAY_CONFIG")]
    pub config: PathBuf,
    /// The event payload (a JSON file as the broker delivers it); `-` or absent reads stdin.
    pub event: Option<PathBuf>,
    /// Also read the source and target digests (HEAD requests to the configured
    /// registries) and say whether each target is already in place.
    #[arg(long)]
    pub resolve: bool,
}

/// Why `explain` could not explain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable (exit code 64).
    #[error("{0}")]
    Config(String),
    /// The event could not be read (exit code 64).
    #[error("cannot read the event from {path}: {reason}")]
    Input {
        /// Where it was read from.
        path: String,
        /// Why not.
        reason: String,
    },
}

/// How the explanation went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Routes that would act (copy or delete).
    pub routes: usize,
    /// `--resolve` lookups that failed (a registry error): the exit code is 1 when any did.
    pub resolve_failures: usize,
}

/// Explain the event in `args.event` (or `stdin`) under `args.config`, writing to `out`.
pub async fn run(args: ExplainArgs, stdin: &mut dyn Read, out: &mut dyn Write) -> Result<Summary, Error> {
    let config = config::load(&args.config).map_err(|e| Error::Config(e.to_string()))?;
    let payload = read_payload(args.event.as_deref(), stdin)?;
    let engine = if args.resolve {
        Some(app::replicator(config.registries.clone(), Options::default()).map_err(|e| Error::Config(e.to_string()))?)
    } else {
        None
    };
    let mut w = Writer { out, failed: false };
    let summary = explain(&config, &payload, engine.as_ref(), &mut w).await;
    Ok(summary)
}

fn read_payload(path: Option<&Path>, stdin: &mut dyn Read) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    let (name, result) = match path {
        None => ("stdin".to_owned(), stdin.read_to_end(&mut buf).map(|_| ())),
        Some(p) if p == Path::new("-") => ("stdin".to_owned(), stdin.read_to_end(&mut buf).map(|_| ())),
        Some(p) => (
            p.display().to_string(),
            std::fs::read(p).map(|b| {
                buf = b;
            }),
        ),
    };
    result.map_err(|e| Error::Input {
        path: name,
        reason: e.to_string(),
    })?;
    Ok(buf)
}

/// Writes lines, remembering a failed write (stdout closed) instead of panicking.
struct Writer<'a> {
    out: &'a mut dyn Write,
    failed: bool,
}

impl Writer<'_> {
    fn line(&mut self, text: impl AsRef<str>) {
        if !self.failed && writeln!(self.out, "{}", text.as_ref()).is_err() {
            self.failed = true;
        }
    }
}

async fn explain(
    config: &Config,
    payload: &[u8],
    engine: Option<&Arc<Replicator<RegistrySet>>>,
    w: &mut Writer<'_>,
) -> Summary {
    let mut summary = Summary::default();
    let origin = match &config.origin {
        Some(o) => event::Origin::new(&o.registry, &o.repository),
        None => event::Origin::none(),
    };
    let decoded = match event::decode(payload, &origin) {
        Ok(d) => d,
        Err(e) => {
            w.line(format!("rejected: undecodable message: {e}"));
            return summary;
        }
    };
    for reason in &decoded.ignored {
        w.line(format!("ignored part of the message: {reason}"));
    }
    if decoded.events.is_empty() {
        w.line("the message asks for nothing: acked and counted as ignored");
        return summary;
    }
    // As the pipeline does: one host outside the configuration refuses the whole message.
    let hosts: Vec<&str> = config.registries.iter().map(|r| r.host.as_str()).collect();
    if let Some(e) = decoded.events.iter().find(|e| !hosts.contains(&e.registry.as_str())) {
        for (i, event) in decoded.events.iter().enumerate() {
            w.line(format!("event {}: {}", i + 1, headline(event)));
        }
        w.line(format!(
            "refused: the event names registry {:?}, which is not in the configuration; nothing is contacted and the message is rejected",
            e.registry
        ));
        return summary;
    }
    for (i, event) in decoded.events.iter().enumerate() {
        w.line(format!("event {}: {}", i + 1, headline(event)));
        match rules::plan(&config.rules, event) {
            Plan::Ignore(reason) => w.line(format!("  ignored: {reason}")),
            Plan::Work(routes) => {
                for route in &routes {
                    summary.routes += 1;
                    w.line(format!("  rule {}: {}", route.rule, route.target_reference(event)));
                    w.line(format!("    {}", route.describe(event, config.pipeline.delete_dry_run)));
                    if let Some(engine) = engine {
                        match resolve(engine, event, route).await {
                            Ok(state) => w.line(format!("    now: {state}")),
                            Err(e) => {
                                summary.resolve_failures += 1;
                                w.line(format!("    now: unknown: {e}"));
                            }
                        }
                    }
                }
            }
        }
    }
    summary
}

/// `push src.example/team/app:1.0@sha256:…`
fn headline(e: &Event) -> String {
    let action = match e.action {
        Action::Push => "push",
        Action::DeleteTag => "delete tag",
        Action::DeleteManifest => "delete manifest",
    };
    let mut s = format!("{action} {}/{}", e.registry, e.repository);
    if let Some(t) = &e.tag {
        s.push_str(&format!(":{t}"));
    }
    if let Some(d) = &e.digest {
        s.push_str(&format!("@{d}"));
    }
    s
}

fn reference(registry: &str, repository: &str, locator: Locator) -> Result<Reference, String> {
    Reference::new(registry, repository, locator).map_err(|e| e.to_string())
}

/// What the registries hold now for `route`, and what that means (reads only).
async fn resolve(engine: &Replicator<RegistrySet>, event: &Event, route: &Route) -> Result<String, String> {
    let err = |e: crate::replicate::Error| e.to_string();
    let source_locator = match (route.kind, &event.tag, &event.digest) {
        (RouteKind::Push, Some(t), _) if route.target_tag.is_some() => Locator::Tag(t.clone()),
        (RouteKind::Delete, Some(t), _) if event.action == Action::DeleteTag => Locator::Tag(t.clone()),
        (_, _, Some(d)) => Locator::Digest(d.clone()),
        _ => return Ok("nothing to resolve: the event names neither a tag nor a digest".into()),
    };
    let src = reference(&event.registry, &event.repository, source_locator)?;
    let at_source = engine.resolve(&src).await.map_err(err)?;
    let target_locator = match (&route.target_tag, &event.digest) {
        (Some(t), _) => Locator::Tag(t.clone()),
        (None, Some(d)) => Locator::Digest(d.clone()),
        (None, None) => return Ok("nothing to resolve".into()),
    };
    let dst = reference(&route.target_registry, &route.target_repository, target_locator)?;
    let at_target = engine.resolve(&dst).await.map_err(err)?;
    let show = |d: &Option<Digest>| d.as_ref().map_or_else(|| "absent".to_owned(), Digest::to_string);
    let mut text = format!(
        "source {src} = {}; target {dst} = {}",
        show(&at_source),
        show(&at_target)
    );
    let verdict = match route.kind {
        RouteKind::Push => match &at_source {
            None => "the source no longer holds it: nothing would be copied (stale)".to_owned(),
            Some(d) if at_target.as_ref() == Some(d) => "already in place: nothing would be written".to_owned(),
            Some(d) => {
                if engine
                    .present(&route.target_registry, &route.target_repository, d)
                    .await
                    .map_err(err)?
                {
                    "the image is at the target: only the tag would be pointed at it".to_owned()
                } else {
                    "would copy".to_owned()
                }
            }
        },
        RouteKind::Delete => match (&at_source, &at_target) {
            (Some(_), _) => "it exists again at the source: nothing would be deleted".to_owned(),
            (None, None) => "already absent at the target: nothing would be deleted".to_owned(),
            (None, Some(d)) if event.action == Action::DeleteManifest && event.digest.as_ref() != Some(d) => {
                "the target holds another digest: kept".to_owned()
            }
            (None, Some(_)) => "would delete".to_owned(),
        },
    };
    text.push_str(&format!(": {verdict}"));
    Ok(text)
}
