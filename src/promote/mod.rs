//! Manifest-driven promotion, compatible with the Kubernetes image promoter (cip,
//! `kpromo cip`): its manifests ([`manifest`]), the edges they imply and their plan
//! ([`plan`]), the inventory a plan needs ([`inventory`]), and registry snapshots in its
//! `images.yaml` format ([`snapshot`]).
//!
//! Role: a front end over the executor ([`crate::engine`]): it turns manifests into
//! `Item::Digest` items (target holds digest, tagged); every copy, tag and repair goes
//! through `Execute::execute`, so promotion gets the same verification, referrer and
//! signature copying and dedup as events.
//!
//! Must never: delete anything (production is append-only); contact a host the manifests
//! do not name; list a repository the manifests do not name (snapshots aside); let one bad
//! edge stop edges outside its scope unless asked to (`fail_fast`).

pub mod inventory;
pub mod manifest;
pub mod plan;
pub mod snapshot;

use crate::engine::{Item, Repo};
use plan::Edge;

/// The executor item that makes `edge` true.
pub fn item(edge: &Edge) -> Item {
    Item::Digest {
        source: Repo::new(edge.source.host.clone(), edge.source_repository()),
        digest: edge.digest.clone(),
        target: Repo::new(edge.destination.host.clone(), edge.destination_repository()),
        tag: edge.tag.clone(),
        require: edge.require.clone(),
    }
}
