//! `scripts/quickstart.sh`, both ways (issue 15): with the Pub/Sub emulator, and without
//! it (gcloud and java stripped from `PATH`, installing forbidden), where the same
//! demonstration runs through the stdin source and still ends with the same digest at the
//! target and a verified event.

mod support;

use std::path::{Path, PathBuf};

/// A directory of symlinks to every executable on `PATH` except `without`.
fn path_without(dir: &Path, without: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let name = e.file_name();
            if without.iter().any(|w| name == *w) || bin.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), bin.join(&name));
        }
    }
    bin
}

fn tools_or_skip() -> bool {
    for tool in ["skopeo", "python3", "curl"] {
        if support::require_bin(&format!("TEST_{}_BIN", tool.to_uppercase()), tool).is_none() {
            return false;
        }
    }
    true
}

async fn quickstart(path: &std::ffi::OsStr) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quickstart.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .env_clear()
        .env("PATH", path)
        .env(
            "HOME",
            std::env::var_os("HOME").unwrap_or_else(|| "/nonexistent".into()),
        )
        .env("REGRELAY_BIN", env!("CARGO_BIN_EXE_regrelay"))
        .env("QUICKSTART_INSTALL", "0")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The digests the script printed: (source, target).
fn digests(text: &str) -> (String, String) {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| panic!("no {key:?} line:\n{text}"))
    };
    (value("source digest:"), value("target digest:"))
}

#[tokio::test]
async fn quickstart_without_the_emulator_runs_through_stdin_15() {
    support::registry_bin_or_skip!();
    if !tools_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = path_without(dir.path(), &["gcloud", "java"]);
    let (ok, text) = quickstart(bin.as_os_str()).await;
    assert!(ok, "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("runs through the stdin source"))
            .count(),
        1,
        "the fallback is said in one line:\n{text}"
    );
    assert!(text.contains("1 events verified or ignored, 0 failed"), "{text}");
    assert!(text.contains("replicated, verified and acked (stdin source)"), "{text}");
    let (src, dst) = digests(&text);
    assert!(src.starts_with("sha256:") && src == dst, "{text}");
}

#[tokio::test]
async fn quickstart_with_the_emulator_replicates_and_acks_15() {
    support::registry_bin_or_skip!();
    support::gcloud_bin_or_skip!();
    if !tools_or_skip() {
        return;
    }
    let (ok, text) = quickstart(&std::env::var_os("PATH").unwrap_or_default()).await;
    assert!(ok, "{text}");
    assert!(!text.contains("stdin source"), "{text}");
    assert!(text.contains("left in subscription:   0 messages"), "{text}");
    let (src, dst) = digests(&text);
    assert!(src.starts_with("sha256:") && src == dst, "{text}");
}
