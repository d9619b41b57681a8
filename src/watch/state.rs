//! The watch state file: per watch and tag, the digest last seen upstream, the last one
//! that passed its gates and the last one rejected.
//!
//! Written atomically (a temporary file in the same directory, synced, then renamed), so
//! a crash leaves the old file or the new one. Losing it is safe: the current digest is
//! gated again (gates are idempotent checks; promoting the same digest again is a no-op).
//!
//! Must never: hold anything but digests and tag names (no credentials, no output).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What is known about one watched tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagState {
    /// The digest the upstream tag pointed at at the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen: Option<String>,
    /// The last digest that passed every gate and was promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<String>,
    /// The last digest a gate rejected (not gated again until the tag moves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
}

/// Every watch's tags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// watch name → tag → state.
    #[serde(default)]
    pub watches: BTreeMap<String, BTreeMap<String, TagState>>,
}

impl State {
    /// The state of `watch`'s `tag` (default when unknown).
    pub fn get(&self, watch: &str, tag: &str) -> TagState {
        self.watches
            .get(watch)
            .and_then(|t| t.get(tag))
            .cloned()
            .unwrap_or_default()
    }

    /// Change the state of `watch`'s `tag`.
    pub fn update(&mut self, watch: &str, tag: &str, f: impl FnOnce(&mut TagState)) {
        f(self
            .watches
            .entry(watch.into())
            .or_default()
            .entry(tag.into())
            .or_default());
    }
}

/// Where the state lives; `None` keeps it in memory only.
#[derive(Debug, Clone)]
pub struct Store {
    path: Option<PathBuf>,
}

impl Store {
    /// A store at `path` (in memory when `None`).
    pub fn new(path: Option<PathBuf>) -> Store {
        Store { path }
    }

    /// Read the state; a missing file is an empty state, an unreadable one is logged and
    /// treated as empty (safe: digests are gated again).
    pub async fn load(&self) -> State {
        let Some(path) = &self.path else {
            return State::default();
        };
        match tokio::fs::read(path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "watch state file unreadable; starting afresh");
                State::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the watch state file; starting afresh");
                State::default()
            }
        }
    }

    /// Write the state atomically.
    pub async fn save(&self, state: &State) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        write_atomic(path, &bytes).await
    }
}

async fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = tokio::fs::File::create(&tmp).await?;
    f.write_all(bytes).await?;
    f.sync_all().await?;
    drop(f);
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn state_round_trips_and_a_missing_or_broken_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Some(dir.path().join("state.json")));
        assert_eq!(store.load().await, State::default());
        let mut s = State::default();
        s.update("node", "22", |t| t.passed = Some("sha256:ab".into()));
        store.save(&s).await.unwrap();
        assert_eq!(store.load().await, s);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::write(dir.path().join("state.json"), b"{broken").unwrap();
        assert_eq!(store.load().await, State::default());
    }
}
