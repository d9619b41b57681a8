//! The report of `regrelay promote`: one row per edge (action, result, bytes, duration),
//! printed as a table or as one JSON object per line, and the exit code it implies.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use super::OutputFormat;
use crate::promote::plan::{Action, Planned};

/// What became of an edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowResult {
    /// Dry run: the edge needs a copy or a tag.
    Pending,
    /// Dry run: already in place.
    InPlace,
    /// Lint: nothing wrong found offline.
    Valid,
    /// The edge is in error itself (lost, tag move, overlap, unreadable).
    Error(String),
    /// Not acted on because another edge of its scope (or run) is in error.
    Held(String),
    /// Copied and verified.
    Copied,
    /// Tagged and verified.
    Tagged,
    /// Verified in place (anything missing, such as referrers, repaired).
    Verified,
    /// The executor failed.
    Failed(String),
}

impl RowResult {
    fn name(&self) -> &'static str {
        match self {
            RowResult::Pending => "pending",
            RowResult::InPlace => "in-place",
            RowResult::Valid => "ok",
            RowResult::Error(_) => "error",
            RowResult::Held(_) => "held",
            RowResult::Copied => "copied",
            RowResult::Tagged => "tagged",
            RowResult::Verified => "verified",
            RowResult::Failed(_) => "failed",
        }
    }

    fn detail(&self) -> Option<&str> {
        match self {
            RowResult::Error(m) | RowResult::Held(m) | RowResult::Failed(m) => Some(m),
            _ => None,
        }
    }
}

/// One edge of the report.
#[derive(Debug, Clone)]
pub struct Row {
    /// The planned edge.
    pub planned: Planned,
    /// What became of it.
    pub result: RowResult,
    /// Blob bytes copied.
    pub bytes: u64,
    /// Time spent executing it.
    pub duration: Duration,
}

impl Row {
    /// The row of an edge that was only planned.
    pub fn planned(p: Planned) -> Row {
        let result = if p.action.is_error() {
            RowResult::Error(p.action.to_string())
        } else if let Some(h) = &p.held {
            RowResult::Held(h.clone())
        } else if p.action.is_pending() {
            RowResult::Pending
        } else {
            RowResult::InPlace
        };
        Row::with(p, result, 0, Duration::ZERO)
    }

    /// The row of an edge linted offline.
    pub fn linted(p: Planned) -> Row {
        let mut r = Row::planned(p);
        if matches!(r.result, RowResult::InPlace | RowResult::Pending) {
            r.result = RowResult::Valid;
        }
        r
    }

    /// A row with its result.
    pub fn with(planned: Planned, result: RowResult, bytes: u64, duration: Duration) -> Row {
        Row {
            planned,
            result,
            bytes,
            duration,
        }
    }

    fn json(&self) -> serde_json::Value {
        let e = &self.planned.edge;
        let mut v = serde_json::json!({
            "scope": e.scope,
            "source": format!("{}/{}@{}", e.source, e.image, e.digest),
            "destination": e.target_ref(),
            "image": e.image,
            "digest": e.digest.to_string(),
            "tag": e.tag,
            "action": self.planned.action.name(),
            "result": self.result.name(),
            "bytes": self.bytes,
            "duration_secs": self.duration.as_secs_f64(),
        });
        if let Action::TagMove { from, .. } = &self.planned.action {
            v["tag_points_at"] = serde_json::json!(from.to_string());
        }
        if let Some(d) = self.result.detail() {
            v["detail"] = serde_json::json!(d);
        }
        v
    }
}

/// The counts behind the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Report {
    /// Edges planned.
    pub edges: usize,
    /// Edges (or manifest problems) in error, failed or held.
    pub errors: usize,
    /// Edges that still need a write (dry run).
    pub pending: usize,
    /// Whether `--check` was given.
    pub check: bool,
}

impl Report {
    /// The report of manifests that did not parse.
    pub fn invalid(errors: usize) -> Report {
        Report {
            errors,
            ..Report::default()
        }
    }

    /// 1 on errors; with `--check`, 2 when work is pending; else 0.
    pub fn exit_code(&self) -> u8 {
        if self.errors > 0 {
            1
        } else if self.check && self.pending > 0 {
            2
        } else {
            0
        }
    }

    /// Print `rows` to `out` in `format`, a summary to `err`, and count them.
    pub fn print(
        rows: Vec<Row>,
        format: OutputFormat,
        check: bool,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> Report {
        // A closed stdout (`| head`) must not change the outcome.
        match format {
            OutputFormat::Json => {
                for r in &rows {
                    let _ = writeln!(out, "{}", r.json());
                }
            }
            OutputFormat::Table => table(&rows, out),
        }
        let mut by_action: BTreeMap<&str, usize> = BTreeMap::new();
        let mut by_result: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &rows {
            *by_action.entry(r.planned.action.name()).or_default() += 1;
            *by_result.entry(r.result.name()).or_default() += 1;
        }
        let fmt = |m: &BTreeMap<&str, usize>| m.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ");
        let _ = writeln!(err, "{} edges: {}; {}", rows.len(), fmt(&by_action), fmt(&by_result));
        Report {
            edges: rows.len(),
            errors: rows
                .iter()
                .filter(|r| {
                    matches!(
                        r.result,
                        RowResult::Error(_) | RowResult::Held(_) | RowResult::Failed(_)
                    )
                })
                .count(),
            pending: rows.iter().filter(|r| r.result == RowResult::Pending).count(),
            check,
        }
    }
}

fn table(rows: &[Row], out: &mut dyn Write) {
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let e = &r.planned.edge;
            let digest = e.digest.to_string();
            let short = digest.get(..19).unwrap_or(&digest).to_string();
            let bytes = if r.bytes > 0 { r.bytes.to_string() } else { "-".into() };
            let took = if r.duration.is_zero() {
                "-".into()
            } else {
                format!("{:.2}s", r.duration.as_secs_f64())
            };
            let mut detail = r.result.detail().unwrap_or_default().to_string();
            if let Action::TagMove { from, allowed: true } = &r.planned.action {
                detail = format!("moves from {from}");
            }
            [
                r.planned.action.name().to_string(),
                r.result.name().to_string(),
                match e.tag {
                    Some(_) => format!("{} {short}", e.target_ref()),
                    None => e.target_ref(),
                },
                bytes,
                took,
                detail,
            ]
        })
        .collect();
    let head = ["ACTION", "RESULT", "TARGET DIGEST", "BYTES", "TIME", "DETAIL"];
    let mut w = head.map(str::len);
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.len());
        }
    }
    let line = |c: [&str; 6]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}  {}",
            c[0],
            c[1],
            c[2],
            c[3],
            c[4],
            c[5],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4]
        )
    };
    let _ = writeln!(out, "{}", line(head).trim_end());
    for c in &cells {
        let _ = writeln!(out, "{}", line([&c[0], &c[1], &c[2], &c[3], &c[4], &c[5]]).trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        let r = |errors, pending, check| Report {
            edges: 3,
            errors,
            pending,
            check,
        };
        assert_eq!(r(0, 0, true).exit_code(), 0);
        assert_eq!(r(0, 2, true).exit_code(), 2);
        assert_eq!(r(1, 2, true).exit_code(), 1, "errors win over pending work");
        assert_eq!(r(0, 2, false).exit_code(), 0, "a dry run without --check");
        assert_eq!(Report::invalid(2).exit_code(), 1);
    }
}
