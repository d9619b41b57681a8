//! Build script: records the git commit the crate is built from in the compile-time
//! variable `REGRELAY_GIT_COMMIT`, which `regrelay --version` prints.
//!
//! The commit is `$REGRELAY_GIT_COMMIT` when that is set at build time (the Dockerfile sets
//! it from its `REVISION` argument: the build context carries no `.git`), else
//! `git rev-parse --short=12 HEAD`, else `unknown` (no git, or not a checkout).
//!
//! Must never: fail the build because git is missing or the tree is not a repository.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=REGRELAY_GIT_COMMIT");
    let commit = std::env::var("REGRELAY_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=REGRELAY_GIT_COMMIT={commit}");
    // Rebuild when HEAD moves: HEAD itself (a checkout), the branch it points to (a commit),
    // and packed-refs (a gc). Only files that exist: cargo reruns every time for a missing one.
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watch.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watch.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// The trimmed output of `git ARGS`, or `None` when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}
