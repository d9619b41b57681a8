//! Planning: every edge (source registry, image, digest) → (destination registry, image,
//! tag) of a set of manifests, classified against what the registries hold (an
//! [`Inventory`]) into an [`Action`], with errors confined to their scope (an image of a
//! plain manifest, or a whole thin-manifest directory).
//!
//! Must never: do I/O (the inventory is gathered elsewhere); plan a deletion (promotion
//! never deletes); let an edge of a failed scope proceed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use super::manifest::{Manifest, RegistryName};
use crate::oci::Digest;

/// One edge of a promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The scope a failure of this edge fails: `<x>` of a thin manifest, or
    /// `FILE: IMAGE` of a plain one.
    pub scope: String,
    /// Where the image comes from.
    pub source: RegistryName,
    /// Where it goes.
    pub destination: RegistryName,
    /// The image path (the same under both).
    pub image: String,
    /// The digest.
    pub digest: Digest,
    /// The tag it must carry, or `None` for a digest promoted untagged.
    pub tag: Option<String>,
    /// Gates the destination digest must pass first (the manifest's `require`).
    pub require: Vec<String>,
}

impl Edge {
    /// The source repository path.
    pub fn source_repository(&self) -> String {
        self.source.repository(&self.image)
    }

    /// The destination repository path.
    pub fn destination_repository(&self) -> String {
        self.destination.repository(&self.image)
    }

    /// `DEST/IMAGE:TAG` (or `@DIGEST` when untagged).
    pub fn target_ref(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}/{}:{t}", self.destination, self.image),
            None => format!("{}/{}@{}", self.destination, self.image, self.digest),
        }
    }

    fn tag_key(&self) -> Option<(String, String, String)> {
        let t = self.tag.clone()?;
        Some((self.destination.host.clone(), self.destination_repository(), t))
    }
}

/// What an edge needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The digest is not at the destination: copy it (and tag it).
    Copy,
    /// The digest is at the destination, the tag is not: tag it.
    Tag,
    /// Already in place.
    Skip,
    /// The digest is not at the source.
    Lost,
    /// The destination tag points at another digest.
    TagMove {
        /// The digest the tag points at now.
        from: Digest,
        /// Whether `--allow-tag-moves` lets it proceed (then it is copied/tagged).
        allowed: bool,
    },
    /// Other digests are aimed at the same destination tag.
    Overlap {
        /// The other digests.
        with: Vec<Digest>,
    },
    /// Not planned against any registry (offline lint without a snapshot).
    Unchecked,
    /// A registry lookup the edge needs failed, so it cannot be planned.
    Unreadable {
        /// What failed.
        message: String,
    },
}

impl Action {
    /// The action's name in the plan (`copy`, `tag`, `skip`, `lost`, `tag-move`, `overlap`).
    pub fn name(&self) -> &'static str {
        match self {
            Action::Copy => "copy",
            Action::Tag => "tag",
            Action::Skip => "skip",
            Action::Lost => "lost",
            Action::TagMove { .. } => "tag-move",
            Action::Overlap { .. } => "overlap",
            Action::Unreadable { .. } => "error",
            Action::Unchecked => "unchecked",
        }
    }

    /// Whether the edge is an error in itself.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Action::Lost | Action::Overlap { .. } | Action::Unreadable { .. } | Action::TagMove { allowed: false, .. }
        )
    }

    /// Whether the edge needs a write.
    pub fn is_pending(&self) -> bool {
        matches!(self, Action::Copy | Action::Tag | Action::TagMove { allowed: true, .. })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::TagMove { from, allowed } => {
                write!(f, "tag-move from {from}{}", if *allowed { " (allowed)" } else { "" })
            }
            Action::Overlap { with } => {
                let w: Vec<String> = with.iter().map(ToString::to_string).collect();
                write!(f, "overlap with {}", w.join(", "))
            }
            Action::Unreadable { message } => write!(f, "error: {message}"),
            a => f.write_str(a.name()),
        }
    }
}

/// The edges of `manifests`, deduplicated (cip dedups identical edges), in manifest order.
pub fn edges(manifests: &[Manifest]) -> Vec<Edge> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for m in manifests {
        for img in &m.images {
            let scope = if m.thin {
                m.scope.clone()
            } else {
                format!("{}: {}", m.scope, img.name)
            };
            for dst in m.destinations() {
                for (digest, tags) in &img.dmap {
                    let tags: Vec<Option<String>> = if tags.is_empty() {
                        vec![None]
                    } else {
                        tags.iter().cloned().map(Some).collect()
                    };
                    for tag in tags {
                        let e = Edge {
                            scope: scope.clone(),
                            source: m.source().clone(),
                            destination: dst.clone(),
                            image: img.name.clone(),
                            digest: digest.clone(),
                            tag,
                            require: m.require.clone(),
                        };
                        let key = (
                            e.source.clone(),
                            e.destination.clone(),
                            e.image.clone(),
                            e.digest.clone(),
                            e.tag.clone(),
                        );
                        if seen.insert(key) {
                            out.push(e);
                        }
                    }
                }
            }
        }
    }
    out
}

/// For each edge, the other digests aimed at its destination tag (empty when none).
pub fn overlaps(edges: &[Edge]) -> Vec<Vec<Digest>> {
    let mut by_tag: HashMap<(String, String, String), Vec<Digest>> = HashMap::new();
    for e in edges {
        if let Some(k) = e.tag_key() {
            let v = by_tag.entry(k).or_default();
            if !v.contains(&e.digest) {
                v.push(e.digest.clone());
            }
        }
    }
    edges
        .iter()
        .map(|e| match e.tag_key() {
            Some(k) => by_tag[&k].iter().filter(|d| **d != e.digest).cloned().collect(),
            None => Vec::new(),
        })
        .collect()
}

/// What the registries hold, as far as the edges need to know. `None` = not looked up.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    /// (host, repository, tag) → the digest it points at; a missing key with the
    /// repository in `listed` means the tag does not exist.
    pub tags: HashMap<(String, String, String), Digest>,
    /// (host, repository) whose tags were listed (every tag of them is in `tags`, or at
    /// least every tag the edges name).
    pub listed: HashSet<(String, String)>,
    /// (host, repository, digest) → whether the manifest exists.
    pub digests: HashMap<(String, String, Digest), bool>,
}

impl Inventory {
    fn tag(&self, host: &str, repo: &str, tag: &str) -> Option<&Digest> {
        self.tags.get(&(host.to_string(), repo.to_string(), tag.to_string()))
    }

    fn has(&self, host: &str, repo: &str, d: &Digest) -> Option<bool> {
        if let Some(b) = self.digests.get(&(host.to_string(), repo.to_string(), d.clone())) {
            return Some(*b);
        }
        // A tag pointing at the digest proves it is there.
        let tagged = self.tags.iter().any(|((h, r, _), v)| h == host && r == repo && v == d);
        tagged.then_some(true)
    }
}

/// One planned edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The edge.
    pub edge: Edge,
    /// What it needs.
    pub action: Action,
    /// Why it will not be acted on although it is fine itself: another edge of its scope
    /// failed (or, with fail-fast, any edge of the run).
    pub held: Option<String>,
}

/// Classify one edge against the inventory (overlaps are found before, by [`overlaps`]).
/// Lookups the inventory lacks count as absent.
pub fn classify(e: &Edge, inv: &Inventory, allow_tag_moves: bool) -> Action {
    let dst_repo = e.destination_repository();
    let host = &e.destination.host;
    let at_dst = inv.has(host, &dst_repo, &e.digest).unwrap_or(false);
    if let Some(t) = &e.tag {
        match inv.tag(host, &dst_repo, t) {
            Some(d) if *d == e.digest => return Action::Skip,
            Some(d) => {
                if !allow_tag_moves {
                    return Action::TagMove {
                        from: d.clone(),
                        allowed: false,
                    };
                }
                if !at_dst && inv.has(&e.source.host, &e.source_repository(), &e.digest) == Some(false) {
                    return Action::Lost;
                }
                return Action::TagMove {
                    from: d.clone(),
                    allowed: true,
                };
            }
            None => {}
        }
    } else if at_dst {
        return Action::Skip;
    }
    if at_dst {
        return Action::Tag;
    }
    if inv.has(&e.source.host, &e.source_repository(), &e.digest) == Some(false) {
        return Action::Lost;
    }
    Action::Copy
}

/// Repositories (host, repository) whose lookup failed, with the error.
pub type Unreadable = HashMap<(String, String), String>;

/// Plan every edge: overlaps first, then each edge against `inv` (an edge whose
/// destination, or whose source when it needs a write, could not be read is in error);
/// then hold every other edge of a scope with an error (all edges when `fail_fast`).
pub fn plan(
    edges: Vec<Edge>,
    inv: &Inventory,
    unreadable: &Unreadable,
    allow_tag_moves: bool,
    fail_fast: bool,
) -> Vec<Planned> {
    let ov = overlaps(&edges);
    let mut out: Vec<Planned> = edges
        .into_iter()
        .zip(ov)
        .map(|(edge, with)| {
            let dst = (edge.destination.host.clone(), edge.destination_repository());
            let src = (edge.source.host.clone(), edge.source_repository());
            let action = if !with.is_empty() {
                Action::Overlap { with }
            } else if let Some(m) = unreadable.get(&dst) {
                Action::Unreadable { message: m.clone() }
            } else {
                match (classify(&edge, inv, allow_tag_moves), unreadable.get(&src)) {
                    (a, Some(m)) if a.is_pending() => Action::Unreadable { message: m.clone() },
                    (a, _) => a,
                }
            };
            Planned {
                edge,
                action,
                held: None,
            }
        })
        .collect();
    hold(&mut out, fail_fast);
    out
}

/// Hold the edges of every scope that has an error edge (every edge when `fail_fast`).
pub fn hold(planned: &mut [Planned], fail_fast: bool) {
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for p in planned.iter() {
        if p.action.is_error() {
            *failed.entry(p.edge.scope.clone()).or_default() += 1;
        }
    }
    let total: usize = failed.values().sum();
    for p in planned.iter_mut() {
        if p.action.is_error() {
            continue;
        }
        if fail_fast && total > 0 {
            p.held = Some(format!("held: {total} edge(s) in error and --fail-fast"));
        } else if let Some(n) = failed.get(&p.edge.scope) {
            p.held = Some(format!("held: {n} edge(s) in error in {}", p.edge.scope));
        }
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
