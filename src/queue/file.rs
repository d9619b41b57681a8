//! File / stdin source: one event per line (JSON), for backfills and for trying regrelay
//! without a cloud.
//!
//! Role: every non-empty line becomes a [`Delivery`]; the [`Tally`] records how each was
//! settled so that the process exit code can report failures. There is no redelivery: a
//! nacked or rejected line counts as failed.
//!
//! Must never: stop at a bad line (it is delivered and rejected like any bad message).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};

use super::{AckHandle, Delivery, Error, Settlement, Source};

/// Settlement counts of a file source.
#[derive(Debug, Default)]
pub struct Tally {
    /// Lines acked (verified or ignored).
    pub acked: AtomicU64,
    /// Lines nacked or rejected.
    pub failed: AtomicU64,
}

impl Tally {
    /// Lines that failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
    /// Lines that succeeded.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }
}

/// JSON lines as a [`Source`].
pub struct FileSource {
    lines: tokio::io::Lines<BufReader<Box<dyn AsyncRead + Send + Unpin>>>,
    line_no: u64,
    tally: Arc<Tally>,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource").field("line", &self.line_no).finish()
    }
}

impl FileSource {
    /// Open `path`, or standard input when `None`.
    pub async fn open(path: Option<&PathBuf>) -> Result<FileSource, Error> {
        let reader: Box<dyn AsyncRead + Send + Unpin> = match path {
            Some(p) => Box::new(tokio::fs::File::open(p).await.map_err(|e| Error::Receive {
                source_kind: "file",
                reason: format!("cannot open {}: {e}", p.display()),
            })?),
            None => Box::new(tokio::io::stdin()),
        };
        Ok(FileSource::from_reader(reader))
    }

    /// Read events from any reader.
    pub fn from_reader(reader: Box<dyn AsyncRead + Send + Unpin>) -> FileSource {
        FileSource {
            lines: BufReader::new(reader).lines(),
            line_no: 0,
            tally: Arc::default(),
        }
    }

    /// The settlement counts (shared; read them after the pipeline has finished).
    pub fn tally(&self) -> Arc<Tally> {
        self.tally.clone()
    }
}

impl Source for FileSource {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn redelivers(&self) -> bool {
        // A nacked line has failed; there is no later delivery to wait for.
        false
    }

    async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        loop {
            let line = match self.lines.next_line().await {
                Ok(Some(l)) => l,
                Ok(None) => return None,
                Err(e) => {
                    // Unreadable input (e.g. not UTF-8): count it as a failed line, go on.
                    self.line_no += 1;
                    tracing::error!(line = self.line_no, error = %e, "cannot read event line");
                    self.tally.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
            self.line_no += 1;
            if line.trim().is_empty() {
                continue;
            }
            let tally = self.tally.clone();
            let handle = AckHandle::new(move |s| {
                let counter = match s {
                    Settlement::Ack => &tally.acked,
                    Settlement::Nack | Settlement::Reject => &tally.failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            });
            return Some(Ok(Delivery {
                id: format!("line-{}", self.line_no),
                payload: Bytes::from(line),
                published: None,
                attempt: Some(1),
                handle,
            }));
        }
    }

    async fn close(self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_become_deliveries_and_settlements_are_tallied() {
        let input: &'static [u8] = b"{\"a\":1}\n\n   \nnot json\n{\"b\":2}";
        let mut src = FileSource::from_reader(Box::new(input));
        let tally = src.tally();
        let d1 = src.next().await.unwrap().unwrap();
        assert_eq!(d1.id, "line-1");
        assert_eq!(&d1.payload[..], b"{\"a\":1}");
        let d2 = src.next().await.unwrap().unwrap();
        assert_eq!(d2.id, "line-4");
        let d3 = src.next().await.unwrap().unwrap();
        assert_eq!(&d3.payload[..], b"{\"b\":2}");
        assert!(src.next().await.is_none());
        d1.handle.ack();
        d2.handle.reject();
        drop(d3.handle);
        assert_eq!(tally.acked(), 1);
        assert_eq!(tally.failed(), 2);
    }
}
