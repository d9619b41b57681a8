//! Inventory for a plan: what the registries hold for exactly the repositories, tags and
//! digests the edges name, with plain distribution calls only (`tags/list`, paginated,
//! and manifest `HEAD`), each lookup made once.
//!
//! Cost, for edges already in place: one `tags/list` per destination repository and one
//! `HEAD` per destination tag; the source is asked only about digests that still need a
//! copy or a tag (to tell `copy` from `lost`).
//!
//! Must never: write; list a repository the manifests do not name; scan a whole registry.

use std::collections::{BTreeSet, HashMap};

use futures_util::StreamExt as _;

use super::plan::{Edge, Inventory, Unreadable};
use crate::oci::{Digest, Locator};
use crate::registry::{self, Registries, Registry};

/// Lookups in flight at once.
const CONCURRENCY: usize = 16;

/// Gather what `edges` need. Failed lookups are returned beside the inventory, by
/// repository: the planner fails the edges that needed them (their scope only).
pub async fn gather<S: Registries>(registries: &S, edges: &[Edge]) -> (Inventory, Unreadable) {
    let mut inv = Inventory::default();
    let mut failures = Unreadable::new();

    // 1. List the tags of every destination repository.
    let repos: BTreeSet<(String, String)> = edges
        .iter()
        .filter(|e| e.tag.is_some())
        .map(|e| (e.destination.host.clone(), e.destination_repository()))
        .collect();
    let listed: Vec<_> = futures_util::stream::iter(repos)
        .map(|(host, repo)| async move {
            let r = match registries.get(&host) {
                Ok(c) => c.list_tags(&repo).await,
                Err(e) => Err(e),
            };
            (host, repo, r)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut tag_sets: HashMap<(String, String), BTreeSet<String>> = HashMap::new();
    for (host, repo, r) in listed {
        match r {
            Ok(tags) => {
                inv.listed.insert((host.clone(), repo.clone()));
                tag_sets.insert((host, repo), tags.into_iter().collect());
            }
            Err(e) => fail(&mut failures, host, repo, &e),
        }
    }

    // 2. HEAD each destination tag the edges name that exists.
    let tag_heads: BTreeSet<(String, String, String)> = edges
        .iter()
        .filter_map(|e| {
            let t = e.tag.clone()?;
            let key = (e.destination.host.clone(), e.destination_repository());
            tag_sets.get(&key)?.contains(&t).then_some((key.0, key.1, t))
        })
        .collect();
    let heads = lookups(
        registries,
        tag_heads.into_iter().map(|(h, r, t)| (h, r, Locator::Tag(t))),
    )
    .await;
    for ((host, repo, loc), r) in heads {
        match (loc, r) {
            (Locator::Tag(t), Ok(Some(d))) => {
                inv.tags.insert((host, repo, t), d);
            }
            (_, Ok(None)) => {}
            (_, Err(e)) => fail(&mut failures, host, repo, &e),
            _ => {}
        }
    }

    // 3. HEAD the digest at the destination where no tag proves it is there.
    let dst_digests: BTreeSet<(String, String, Digest)> = edges
        .iter()
        .filter(|e| {
            let repo = e.destination_repository();
            let tagged = e
                .tag
                .as_ref()
                .and_then(|t| inv.tags.get(&(e.destination.host.clone(), repo.clone(), t.clone())));
            tagged != Some(&e.digest)
        })
        .map(|e| (e.destination.host.clone(), e.destination_repository(), e.digest.clone()))
        .filter(|k| {
            !inv.tags
                .iter()
                .any(|((h, r, _), d)| h == &k.0 && r == &k.1 && d == &k.2)
        })
        .collect();
    digests(registries, dst_digests, &mut inv, &mut failures).await;

    // 4. HEAD the digest at the source for edges that need a write.
    let src_digests: BTreeSet<(String, String, Digest)> = edges
        .iter()
        .filter(|e| {
            let repo = e.destination_repository();
            let host = e.destination.host.clone();
            let in_place = match &e.tag {
                Some(t) => inv.tags.get(&(host.clone(), repo.clone(), t.clone())) == Some(&e.digest),
                None => inv.digests.get(&(host, repo, e.digest.clone())) == Some(&true),
            };
            !in_place
        })
        .map(|e| (e.source.host.clone(), e.source_repository(), e.digest.clone()))
        .collect();
    digests(registries, src_digests, &mut inv, &mut failures).await;
    (inv, failures)
}

async fn digests<S: Registries>(
    registries: &S,
    keys: BTreeSet<(String, String, Digest)>,
    inv: &mut Inventory,
    failures: &mut Unreadable,
) {
    let heads = lookups(registries, keys.into_iter().map(|(h, r, d)| (h, r, Locator::Digest(d)))).await;
    for ((host, repo, loc), r) in heads {
        match (loc, r) {
            (Locator::Digest(d), Ok(found)) => {
                inv.digests.insert((host, repo, d), found.is_some());
            }
            (_, Err(e)) => fail(failures, host, repo, &e),
            _ => {}
        }
    }
}

type Key = (String, String, Locator);

/// HEAD every key; `Some(digest)` when the manifest exists (the digest from the header,
/// else the locator's own digest).
async fn lookups<S: Registries>(
    registries: &S,
    keys: impl Iterator<Item = Key>,
) -> Vec<(Key, Result<Option<Digest>, registry::Error>)> {
    futures_util::stream::iter(keys)
        .map(|(host, repo, loc)| async move {
            let r = async {
                let c = registries.get(&host)?;
                let head = c.head_manifest(&repo, &loc).await?;
                Ok(match head {
                    None => None,
                    Some(h) => match (h.digest, &loc) {
                        (Some(d), _) => Some(d),
                        (None, Locator::Digest(d)) => Some(d.clone()),
                        // No digest header: read the manifest to learn it.
                        (None, Locator::Tag(_)) => Some(c.get_manifest(&repo, &loc).await?.digest),
                    },
                })
            }
            .await;
            ((host, repo, loc), r)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

fn fail(failures: &mut Unreadable, host: String, repo: String, e: &registry::Error) {
    failures.entry((host, repo)).or_insert_with(|| e.to_string());
}
