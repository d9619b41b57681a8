//! Running the `regrelay` binary as a user would: a clean environment (only `PATH`, and a
//! `HOME` that does not exist, so no docker config of the machine leaks in), a time limit,
//! and the combined output for assertions.

use std::process::Output;
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_regrelay");

/// `regrelay ARGS` with only `PATH` and `HOME=/nonexistent` in its environment.
pub async fn run(args: &[&str]) -> Output {
    run_with(args, &[]).await
}

/// [`run`] with `envs` added to the environment; panics after 300 s.
pub async fn run_with(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .expect("regrelay finished in time")
        .unwrap()
}

/// stdout then stderr, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
