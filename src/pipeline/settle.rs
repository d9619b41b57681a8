//! The pipeline's two pure decisions: which executor [`Item`] each route of an event
//! becomes, and how a message is settled from its items' results.
//!
//! Must never: do I/O, or decide a settlement from anything but the results passed in.

use crate::config::PipelineConfig;
use crate::engine::{Failure, Hint, Item, ItemResult, Outcome, Repo};
use crate::event::{Action, Event};
use crate::oci::Locator;
use crate::replicate::ErrorClass;
use crate::rules::{Route, RouteKind};

/// What becomes of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every item verified (or some were stale and at least one verified): ack.
    Done,
    /// Nothing to do (every item stale, or no rule matched): ack, counted as ignored.
    Ignored(String),
    /// The worst failure decides: Permanent → reject; Transient or Systemic → hand back.
    Failed(Failure),
}

/// The item that carries out `route` for `event`; an error for an event that lacks what
/// the route needs.
pub fn item(event: &Event, route: &Route, cfg: &PipelineConfig) -> Result<Item, Failure> {
    let dry_run = route.delete_dry_run.unwrap_or(cfg.delete_dry_run);
    let source = Repo::new(&event.registry, &event.repository);
    let target = Repo::new(&route.target_registry, &route.target_repository);
    match route.kind {
        RouteKind::Push => match (&event.tag, &route.target_tag, &event.digest) {
            (Some(tag), Some(target_tag), _) => Ok(Item::Tag {
                source,
                source_tag: tag.clone(),
                seen: event.digest.clone(),
                target,
                tag: target_tag.clone(),
                require: route.require.clone(),
                hint: Hint::default(),
            }),
            (_, _, Some(digest)) => Ok(Item::Digest {
                source,
                digest: digest.clone(),
                target,
                tag: None,
                require: route.require.clone(),
            }),
            _ => Err(Failure::permanent("event names neither a tag nor a digest")),
        },
        RouteKind::Delete => match (event.action, &event.digest, &route.target_tag, &event.tag) {
            (Action::DeleteTag, _, Some(target_tag), Some(tag)) => Ok(Item::Delete {
                source,
                source_locator: Locator::Tag(tag.clone()),
                target,
                locator: Locator::Tag(target_tag.clone()),
                expected: None,
                dry_run,
                fallback: cfg.tag_delete_fallback,
            }),
            (Action::DeleteManifest, Some(d), _, _) => Ok(Item::Delete {
                source,
                source_locator: Locator::Digest(d.clone()),
                target,
                locator: Locator::Digest(d.clone()),
                expected: Some(d.clone()),
                dry_run,
                fallback: cfg.tag_delete_fallback,
            }),
            _ => Err(Failure::permanent("delete event without the tag or digest it needs")),
        },
    }
}

/// Which failure decides the settlement when several items fail.
fn severity(c: ErrorClass) -> u8 {
    match c {
        ErrorClass::Permanent => 0,
        ErrorClass::Transient => 1,
        ErrorClass::Systemic => 2,
    }
}

/// The settlement of a message from its items' results: ack only when every item
/// verified or was stale; otherwise the worst failure decides (Systemic > Transient >
/// Permanent). All stale → ignored, with the reasons.
pub fn verdict(results: &[ItemResult]) -> Verdict {
    let mut worst: Option<&Failure> = None;
    let mut stale = Vec::new();
    for r in results {
        match r {
            Ok(Outcome::Done(_)) => {}
            Ok(Outcome::Stale(reason)) => stale.push(reason.as_str()),
            Err(f) => {
                if worst.is_none_or(|w| severity(f.class) > severity(w.class)) {
                    worst = Some(f);
                }
            }
        }
    }
    match worst {
        Some(f) => Verdict::Failed(f.clone()),
        None if stale.len() == results.len() => Verdict::Ignored(stale.join("; ")),
        None => Verdict::Done,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Done;
    use crate::oci::Digest;

    fn failure(class: ErrorClass, msg: &str) -> ItemResult {
        Err(Failure {
            class,
            message: msg.into(),
            registry: None,
        })
    }

    #[test]
    fn ack_only_when_every_item_verified_or_was_stale() {
        let done = Ok(Outcome::Done(Done::InPlace));
        let stale = Ok(Outcome::Stale("gone".into()));
        assert_eq!(verdict(&[done.clone(), done.clone()]), Verdict::Done);
        assert_eq!(verdict(&[done.clone(), stale.clone()]), Verdict::Done);
        assert_eq!(
            verdict(&[stale.clone(), stale.clone()]),
            Verdict::Ignored("gone; gone".into())
        );
        let t = failure(ErrorClass::Transient, "t");
        let p = failure(ErrorClass::Permanent, "p");
        let s = failure(ErrorClass::Systemic, "s");
        let worst = |rs: &[ItemResult]| match verdict(rs) {
            Verdict::Failed(f) => f.message,
            v => panic!("{v:?}"),
        };
        assert_eq!(worst(&[done.clone(), p.clone()]), "p");
        assert_eq!(worst(&[p.clone(), t.clone(), done.clone()]), "t");
        assert_eq!(worst(&[t.clone(), s.clone(), p.clone()]), "s");
        assert_eq!(worst(&[s, t]), "s");
    }

    fn event(action: Action, tag: Option<&str>, digest: Option<&Digest>) -> Event {
        Event {
            action,
            registry: "src.example".into(),
            repository: "team/app".into(),
            tag: tag.map(str::to_string),
            digest: digest.cloned(),
            media_type: None,
            event_id: None,
        }
    }

    fn route(kind: RouteKind, tag: Option<&str>) -> Route {
        Route {
            rule: "r".into(),
            kind,
            target_registry: "dst.example".into(),
            target_repository: "mirror/team/app".into(),
            target_tag: tag.map(str::to_string),
            delete_dry_run: None,
            require: Vec::new(),
        }
    }

    #[test]
    fn routes_become_items() {
        let d: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let cfg = PipelineConfig::default();
        let dry = PipelineConfig {
            delete_dry_run: true,
            ..PipelineConfig::default()
        };
        let push = item(
            &event(Action::Push, Some("1.0"), Some(&d)),
            &route(RouteKind::Push, Some("1.0")),
            &cfg,
        );
        assert!(matches!(push, Ok(Item::Tag { ref tag, ref seen, .. }) if tag == "1.0" && seen.as_ref() == Some(&d)));
        let by_digest = item(
            &event(Action::Push, None, Some(&d)),
            &route(RouteKind::Push, None),
            &cfg,
        );
        assert!(matches!(by_digest, Ok(Item::Digest { tag: None, .. })));
        let nothing = item(&event(Action::Push, None, None), &route(RouteKind::Push, None), &cfg);
        assert_eq!(nothing.unwrap_err().class, ErrorClass::Permanent);
        let untag = item(
            &event(Action::DeleteTag, Some("1.0"), None),
            &route(RouteKind::Delete, Some("1.0")),
            &dry,
        );
        assert!(matches!(
            untag,
            Ok(Item::Delete {
                expected: None,
                dry_run: true,
                ..
            })
        ));
        let del = item(
            &event(Action::DeleteManifest, None, Some(&d)),
            &route(RouteKind::Delete, None),
            &cfg,
        );
        assert!(matches!(
            del,
            Ok(Item::Delete {
                expected: Some(_),
                dry_run: false,
                ..
            })
        ));
        // A rule's own delete_dry_run wins over the pipeline's, both ways.
        let per_rule = |rule: bool, cfg: &PipelineConfig| {
            let r = Route {
                delete_dry_run: Some(rule),
                ..route(RouteKind::Delete, None)
            };
            match item(&event(Action::DeleteManifest, None, Some(&d)), &r, cfg) {
                Ok(Item::Delete { dry_run, .. }) => dry_run,
                other => panic!("{other:?}"),
            }
        };
        assert!(per_rule(true, &cfg));
        assert!(!per_rule(false, &dry));
        let bad = item(
            &event(Action::DeleteManifest, None, None),
            &route(RouteKind::Delete, None),
            &cfg,
        );
        assert!(bad.is_err());
    }
}
