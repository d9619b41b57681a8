//! Snapshots: what a registry prefix holds, in cip's `images.yaml` format (names,
//! digests and tags sorted; an untagged digest as `[]`) or its CSV format
//! (`name@digest,name:tag`, or `name@digest,-` for an untagged digest).
//!
//! A snapshot is both a first manifest for a registry that exists and the offline
//! inventory for `promote --lint --snapshot`.
//!
//! Must never: write to a registry; list repositories outside the prefix it is given.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use futures_util::StreamExt as _;

use super::manifest::{Image, RegistryName};
use crate::oci::{Digest, Locator, Manifest};
use crate::registry::{self, Registry};

/// Image name → digest → tags, plus the digests that are only children of an index.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Image → digest → tags (sorted by construction).
    pub images: BTreeMap<String, BTreeMap<Digest, BTreeSet<String>>>,
    /// (image, digest) pairs that are children of an index and carry no tag.
    pub children: BTreeSet<(String, Digest)>,
}

impl Snapshot {
    /// The snapshot of a parsed image list (a manifest's images or a snapshot file).
    pub fn from_images(images: &[Image]) -> Snapshot {
        let mut s = Snapshot::default();
        for i in images {
            let m = s.images.entry(i.name.clone()).or_default();
            for (d, tags) in &i.dmap {
                m.entry(d.clone()).or_default().extend(tags.iter().cloned());
            }
        }
        s
    }

    /// Drop the child-only digests (`--minimal`).
    pub fn minimal(mut self) -> Snapshot {
        for (name, d) in std::mem::take(&mut self.children) {
            if let Some(m) = self.images.get_mut(&name) {
                if m.get(&d).is_some_and(BTreeSet::is_empty) {
                    m.remove(&d);
                }
                if m.is_empty() {
                    self.images.remove(&name);
                }
            }
        }
        self
    }

    /// cip's `images.yaml` format.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for (name, dmap) in &self.images {
            let _ = writeln!(out, "- name: {name}\n  dmap:");
            for (d, tags) in dmap {
                let tags: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
                let _ = writeln!(out, "    \"{d}\": [{}]", tags.join(", "));
            }
        }
        out
    }

    /// cip's CSV format.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        for (name, dmap) in &self.images {
            for (d, tags) in dmap {
                if tags.is_empty() {
                    let _ = writeln!(out, "{name}@{d},-");
                }
                for t in tags {
                    let _ = writeln!(out, "{name}@{d},{name}:{t}");
                }
            }
        }
        out
    }
}

/// Why a snapshot could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry has no catalog and no repositories were named.
    #[error("{0} offers no repository catalog; name the repositories with --repository")]
    NoCatalog(String),
    /// A registry call failed.
    #[error(transparent)]
    Registry(#[from] registry::Error),
}

/// Lookups in flight at once.
const CONCURRENCY: usize = 8;

/// Take a snapshot of `prefix` on `reg`: the repositories named, else every repository
/// under the prefix in the catalog. Image names are relative to the prefix.
pub async fn take<R: Registry>(reg: &R, prefix: &RegistryName, repositories: &[String]) -> Result<Snapshot, Error> {
    let names: Vec<String> = if repositories.is_empty() {
        let all = reg
            .list_repositories()
            .await?
            .ok_or_else(|| Error::NoCatalog(prefix.host.clone()))?;
        let mut names: Vec<String> = all
            .into_iter()
            .filter_map(|r| {
                if prefix.prefix.is_empty() {
                    Some(r)
                } else {
                    r.strip_prefix(&format!("{}/", prefix.prefix)).map(str::to_string)
                }
            })
            .collect();
        names.sort();
        names
    } else {
        repositories.to_vec()
    };
    let mut snap = Snapshot::default();
    for name in names {
        let repo = prefix.repository(&name);
        let tags = reg.list_tags(&repo).await?;
        let got: Vec<Result<(String, registry::ManifestBytes), registry::Error>> = futures_util::stream::iter(tags)
            .map(|t| {
                let repo = repo.clone();
                async move {
                    let m = reg.get_manifest(&repo, &Locator::Tag(t.clone())).await?;
                    Ok((t, m))
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut dmap: BTreeMap<Digest, BTreeSet<String>> = BTreeMap::new();
        let mut children = BTreeSet::new();
        for r in got {
            let (tag, m) = r?;
            dmap.entry(m.digest.clone()).or_default().insert(tag);
            if let Ok(Manifest::Index { manifests, .. }) = Manifest::parse(&m.media_type, &m.bytes) {
                children.extend(manifests.into_iter().map(|d| d.digest));
            }
        }
        for c in children {
            if !dmap.contains_key(&c) {
                dmap.insert(c.clone(), BTreeSet::new());
                snap.children.insert((name.clone(), c));
            }
        }
        if !dmap.is_empty() {
            snap.images.insert(name, dmap);
        }
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: u8) -> Digest {
        format!("sha256:{}", (c as char).to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn sample() -> Snapshot {
        let mut s = Snapshot::default();
        let m = s.images.entry("b/app".into()).or_default();
        m.insert(d(b'2'), ["v2".to_string(), "latest".to_string()].into());
        m.insert(d(b'1'), BTreeSet::new());
        s.images
            .entry("a".into())
            .or_default()
            .insert(d(b'3'), ["1.0".to_string()].into());
        s.children.insert(("b/app".into(), d(b'1')));
        s
    }

    #[test]
    fn yaml_is_sorted_and_parses_back_as_images() {
        let y = sample().to_yaml();
        let a = y.find("- name: a\n").unwrap();
        let b = y.find("- name: b/app\n").unwrap();
        assert!(a < b, "{y}");
        assert!(y.contains(&format!("\"{}\": []", d(b'1'))), "{y}");
        assert!(y.contains(&format!("\"{}\": [\"latest\", \"v2\"]", d(b'2'))), "{y}");
        let imgs = super::super::manifest::parse_images_str(std::path::Path::new("s.yaml"), &y).unwrap();
        assert_eq!(Snapshot::from_images(&imgs).images, sample().images);
    }

    #[test]
    fn csv_lines_follow_cip() {
        let c = sample().to_csv();
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines[0], format!("a@{},a:1.0", d(b'3')));
        assert_eq!(lines[1], format!("b/app@{},-", d(b'1')));
        assert_eq!(lines[2], format!("b/app@{},b/app:latest", d(b'2')));
        assert_eq!(lines[3], format!("b/app@{},b/app:v2", d(b'2')));
    }

    #[test]
    fn minimal_drops_child_only_digests() {
        let s = sample().minimal();
        assert!(!s.images["b/app"].contains_key(&d(b'1')));
        assert!(s.images["b/app"].contains_key(&d(b'2')));
    }
}
