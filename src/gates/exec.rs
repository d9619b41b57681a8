//! The exec gate: run an argv (never through a shell) with the image in its environment.
//!
//! Exit 0 passes, exit 75 (`EX_TEMPFAIL`) asks to be tried again later, anything else
//! (another code, a signal, a timeout, a command that cannot start) fails. The child sees
//! a cleared environment: `PATH` and `HOME` from regrelay's, the variables named in
//! `pass_env`, and `REGRELAY_IMAGE`, `REGRELAY_DIGEST`, `REGRELAY_SOURCE`, so that no
//! credential of regrelay's leaks into a test by accident. (Reading `PATH`, `HOME` and the
//! `pass_env` names here is the one place outside `main` and `config` that reads the
//! environment: those values are handed to the child, never used by regrelay.) Standard output and error are
//! read concurrently into one bounded buffer that keeps the tail.
//!
//! Must never: run through a shell; hold more than `max_output_bytes` of output; wait past
//! the timeout (the child is killed and reaped).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;

use super::{Subject, Tail, Verdict};

/// The exit code that means "try again later".
pub const EX_TEMPFAIL: i32 = 75;

/// A command run against the image.
#[derive(Debug, Clone)]
pub struct ExecGate {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// How long it may run.
    pub timeout: Duration,
    /// How much of its output is kept (the tail).
    pub max_output_bytes: usize,
    /// Variables copied from regrelay's environment (besides `PATH` and `HOME`).
    pub pass_env: Vec<String>,
}

impl ExecGate {
    /// Run the command for `subject`.
    pub async fn check(&self, subject: &Subject) -> Verdict {
        let Some((program, args)) = self.argv.split_first() else {
            return Verdict::Fail {
                reason: "empty argv".into(),
            };
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so that a timeout kills what it started too.
            .process_group(0);
        for var in ["PATH", "HOME"]
            .iter()
            .copied()
            .chain(self.pass_env.iter().map(String::as_str))
        {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        cmd.env("REGRELAY_IMAGE", subject.image())
            .env("REGRELAY_DIGEST", subject.digest.to_string())
            .env("REGRELAY_SOURCE", &subject.source);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Verdict::Fail {
                    reason: format!("cannot start {program}: {e}"),
                };
            }
        };
        let tail = std::sync::Mutex::new(Tail::new(self.max_output_bytes));
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let read = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
            let tail = &tail;
            async move {
                let Some(mut pipe) = pipe else { return };
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    tail.lock().unwrap_or_else(|p| p.into_inner()).push(&buf[..n]);
                }
            }
        };
        let run = async {
            let (_, _, status) = tokio::join!(
                read(stdout.map(|s| Box::new(s) as _)),
                read(stderr.map(|s| Box::new(s) as _)),
                child.wait()
            );
            status
        };
        let status = tokio::time::timeout(self.timeout, run).await;
        let output = || tail.lock().unwrap_or_else(|p| p.into_inner()).text();
        match status {
            Err(_) => {
                // Kill the whole group (grandchildren may hold the pipes open), then reap
                // the child; its output so far is reported.
                if let Some(pid) = child.id() {
                    let _ = tokio::process::Command::new("kill")
                        .args(["-KILL", "--", &format!("-{pid}")])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .await;
                }
                let _ = child.kill().await;
                Verdict::Fail {
                    reason: format!("timed out after {} s; output: {}", self.timeout.as_secs_f64(), output()),
                }
            }
            Ok(Err(e)) => Verdict::Fail {
                reason: format!("waiting for {program}: {e}"),
            },
            Ok(Ok(s)) if s.success() => Verdict::Pass,
            Ok(Ok(s)) if s.code() == Some(EX_TEMPFAIL) => Verdict::Retry {
                reason: format!("exit 75 (try again later); output: {}", output()),
            },
            Ok(Ok(s)) => Verdict::Fail {
                reason: format!("{s}; output: {}", output()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject() -> Subject {
        Subject {
            registry: "staging.example:5000".into(),
            repository: "base/node".into(),
            digest: crate::oci::Digest::sha256_of(b"x"),
            source: "docker.io/library/node:22".into(),
        }
    }

    fn gate(script: &str, timeout_ms: u64, max: usize) -> ExecGate {
        ExecGate {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_millis(timeout_ms),
            max_output_bytes: max,
            pass_env: Vec::new(),
        }
    }

    #[tokio::test]
    async fn exit_zero_passes_and_sees_the_image_by_digest() {
        let s = subject();
        let script = format!(
            "test \"$REGRELAY_IMAGE\" = '{}' && test \"$REGRELAY_DIGEST\" = '{}' && test \"$REGRELAY_SOURCE\" = '{}'",
            s.image(),
            s.digest,
            s.source
        );
        assert_eq!(gate(&script, 5000, 1024).check(&s).await, Verdict::Pass);
    }

    #[tokio::test]
    async fn other_exit_codes_fail_with_the_output_tail() {
        let v = gate("echo broken >&2; exit 3", 5000, 1024).check(&subject()).await;
        let Verdict::Fail { reason } = v else { panic!("{v:?}") };
        assert!(
            reason.contains("exit status: 3") && reason.contains("broken"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn exit_75_asks_for_a_retry() {
        let v = gate("echo later; exit 75", 5000, 1024).check(&subject()).await;
        assert!(
            matches!(v, Verdict::Retry { ref reason } if reason.contains("later")),
            "{v:?}"
        );
    }

    #[tokio::test]
    async fn a_timeout_fails_and_kills_the_command() {
        let started = std::time::SystemTime::now();
        let v = gate("echo started; exec sleep 30", 300, 1024).check(&subject()).await;
        assert!(started.elapsed().unwrap() < Duration::from_secs(10));
        let Verdict::Fail { reason } = v else { panic!("{v:?}") };
        assert!(reason.contains("timed out") && reason.contains("started"), "{reason}");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_commands_children_too() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        // The shell is not replaced (`exec`): its child `sleep` would outlive a plain kill.
        let script = format!("sleep 2; touch {}", marker.display());
        let v = gate(&script, 300, 1024).check(&subject()).await;
        assert!(matches!(v, Verdict::Fail { .. }), "{v:?}");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!marker.exists(), "the command's children were left running");
    }

    #[tokio::test]
    async fn huge_output_is_bounded_to_its_tail() {
        // 20 MB on stdout and stderr, then, once the pipes have been drained (two pipes have no order between them), a last line: only the tail is kept.
        let script = "head -c 10000000 /dev/zero | tr '\\0' a; head -c 10000000 /dev/zero | tr '\\0' b >&2; sleep 0.5; echo THE-END >&2; exit 1";
        let v = gate(script, 60_000, 256).check(&subject()).await;
        let Verdict::Fail { reason } = v else { panic!("{v:?}") };
        assert!(reason.len() < 512, "{} bytes kept", reason.len());
        assert!(
            reason.contains("THE-END") && reason.contains("earlier bytes dropped"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn the_environment_is_cleared() {
        // SAFETY of the assertion: CARGO is set for every test process by cargo.
        assert!(std::env::var_os("CARGO").is_some());
        assert_eq!(
            gate("test -z \"$CARGO\"", 5000, 1024).check(&subject()).await,
            Verdict::Pass
        );
    }

    #[tokio::test]
    async fn a_missing_program_fails() {
        let g = ExecGate {
            argv: vec!["/nonexistent/gate".into()],
            ..gate("", 1000, 64)
        };
        assert!(matches!(g.check(&subject()).await, Verdict::Fail { .. }));
    }
}
