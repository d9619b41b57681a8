//! File / stdin source: one event per line (JSON), for backfills and for trying regrelay
//! without a cloud.
//!
//! Role: every non-empty line becomes a [`Delivery`]; the [`Tally`] records how each was
//! settled so that the process exit code can report failures. There is no redelivery: a
//! nacked or rejected line counts as failed.
//!
//! Lines are read with a cap of [`MAX_LINE_BYTES`] (the decoder's payload limit): a longer
//! line is never held in memory; the rest of it is read and discarded, the line is counted
//! as failed with the reason logged, and reading goes on with the next line (issue 9).
//!
//! Must never: stop at a bad line (it is delivered and rejected like any bad message, or,
//! when it is too long or not UTF-8, counted as failed here), or buffer more than
//! [`MAX_LINE_BYTES`] of one line.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};

use super::{AckHandle, Delivery, Error, Settlement, Source};

/// The longest line kept: the event decoder's payload limit
/// ([`crate::event::MAX_PAYLOAD_BYTES`], 64 KiB; a test keeps the two equal). The line
/// ending (`\n` or `\r\n`) does not count.
pub const MAX_LINE_BYTES: usize = 64 << 10;

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
    reader: BufReader<Box<dyn AsyncRead + Send + Unpin>>,
    /// The current line, reused; never longer than [`MAX_LINE_BYTES`] + 1.
    line: Vec<u8>,
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
            reader: BufReader::new(reader),
            // Never grows: at most MAX_LINE_BYTES + 1 bytes are kept.
            line: Vec::with_capacity(MAX_LINE_BYTES + 1),
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
            let read = read_line_capped(&mut self.reader, &mut self.line, MAX_LINE_BYTES).await;
            let payload = match read {
                Ok(Line::End) => return None,
                Ok(Line::Kept) => {
                    self.line_no += 1;
                    match std::str::from_utf8(&self.line) {
                        Ok(text) if text.trim().is_empty() => continue,
                        Ok(_) => Bytes::copy_from_slice(&self.line),
                        Err(e) => {
                            tracing::error!(line = self.line_no, error = %e, "rejected event line: not UTF-8");
                            self.tally.failed.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                }
                Ok(Line::TooLong { bytes }) => {
                    self.line_no += 1;
                    tracing::error!(
                        line = self.line_no,
                        bytes,
                        limit = MAX_LINE_BYTES,
                        "rejected event line: longer than the {MAX_LINE_BYTES}-byte payload limit; read through without keeping it"
                    );
                    self.tally.failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(e) => {
                    // The input itself failed (not one bad line): count it and stop, as
                    // retrying a failing read would spin.
                    tracing::error!(line = self.line_no + 1, error = %e, "cannot read the event input");
                    self.tally.failed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            };
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
                payload,
                published: None,
                attempt: Some(1),
                handle,
            }));
        }
    }

    async fn close(self) {}
}

/// What [`read_line_capped`] found.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line (without its ending) is in the buffer.
    Kept,
    /// A line longer than the cap was read and discarded; `bytes` is its full length
    /// without the line ending.
    TooLong {
        /// Its full length.
        bytes: u64,
    },
    /// End of input, no line started.
    End,
}

/// Read one line into `buf` (cleared first), keeping at most `cap` bytes of it: past that,
/// the rest of the line is consumed from the reader's own buffer and dropped, so memory
/// stays at `cap` + the reader's buffer however long the line is. A last line without a
/// newline counts.
async fn read_line_capped<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<Line> {
    buf.clear();
    // Bytes seen of this line (kept or not), counting a `\r` that may turn out to be the
    // line ending's.
    let mut seen: u64 = 0;
    let mut started = false;
    let mut ended_with_cr = false;
    let mut newline = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            break;
        }
        started = true;
        let (chunk, consumed, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if !chunk.is_empty() {
            ended_with_cr = chunk.last() == Some(&b'\r');
        }
        seen += chunk.len() as u64;
        // Keep up to cap + 1 bytes: one more than the cap may still be a `\r`.
        let room = (cap + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(consumed);
        if done {
            newline = true;
            break;
        }
    }
    if !started {
        return Ok(Line::End);
    }
    // `\r\n` ends a line like `\n` (as `tokio::io::Lines` has it); a lone `\r` at the very
    // end of the input stays.
    let len = if newline && ended_with_cr { seen - 1 } else { seen };
    if len > cap as u64 {
        buf.clear();
        return Ok(Line::TooLong { bytes: len });
    }
    buf.truncate(len as usize);
    Ok(Line::Kept)
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

    #[test]
    fn the_line_cap_is_the_decoders_payload_limit() {
        assert_eq!(MAX_LINE_BYTES, crate::event::MAX_PAYLOAD_BYTES);
    }

    /// `len` bytes of `x`, a newline, then `tail`, produced on demand (never held whole);
    /// records how many bytes were handed out and the largest single read.
    struct LongLine {
        len: u64,
        pos: u64,
        tail: &'static [u8],
        max_read: Arc<AtomicU64>,
        total: Arc<AtomicU64>,
    }

    impl AsyncRead for LongLine {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            if self.pos < self.len {
                let n = (buf.remaining() as u64).min(self.len - self.pos);
                buf.put_slice(&vec![b'x'; n as usize]);
                self.pos += n;
            }
            if self.pos == self.len && buf.remaining() > 0 {
                buf.put_slice(b"\n");
                self.pos += 1;
            }
            let at = (self.pos.saturating_sub(self.len + 1) as usize).min(self.tail.len());
            let rest = &self.tail[at..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            self.pos += n as u64;
            let n = (buf.filled().len() - before) as u64;
            self.max_read.fetch_max(n, Ordering::Relaxed);
            self.total.fetch_add(n, Ordering::Relaxed);
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Issue 9: a 10 MB line is not buffered: it is read through, counted as failed, and
    /// the next line is delivered; the line buffer never grows past the cap.
    #[tokio::test]
    async fn an_overlong_line_is_skipped_without_buffering_it_issue_9() {
        let (max_read, total) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let len = 10 << 20;
        let tail: &'static [u8] = b"{\"ok\":1}\n";
        let mut src = FileSource::from_reader(Box::new(LongLine {
            len,
            pos: 0,
            tail,
            max_read: max_read.clone(),
            total: total.clone(),
        }));
        let tally = src.tally();
        let d = src.next().await.unwrap().unwrap();
        assert_eq!(d.id, "line-2", "the long line is line 1");
        assert_eq!(&d.payload[..], b"{\"ok\":1}");
        assert_eq!(tally.failed(), 1, "the long line counts as failed");
        assert_eq!(
            total.load(Ordering::Relaxed),
            len + 1 + tail.len() as u64,
            "read through"
        );
        assert!(
            src.line.capacity() <= 2 * (MAX_LINE_BYTES + 1),
            "line buffer grew to {} bytes",
            src.line.capacity()
        );
        assert!(max_read.load(Ordering::Relaxed) <= 64 << 10, "reads are small");
        assert!(src.next().await.is_none());
        d.handle.ack();
        assert_eq!((tally.acked(), tally.failed()), (1, 1));
    }

    /// Reads every line of `input` with `cap`, through a reader buffer of `chunk` bytes.
    async fn lines(input: &'static [u8], cap: usize, chunk: usize) -> Vec<Result<String, u64>> {
        let mut r = BufReader::with_capacity(chunk, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_line_capped(&mut r, &mut buf, cap).await.unwrap() {
                Line::End => return out,
                Line::Kept => {
                    assert!(buf.len() <= cap);
                    out.push(Ok(String::from_utf8(buf.clone()).unwrap()));
                }
                Line::TooLong { bytes } => {
                    assert!(buf.is_empty());
                    out.push(Err(bytes));
                }
            }
            assert!(buf.capacity() <= 2 * (cap + 1) + chunk);
        }
    }

    #[tokio::test]
    async fn lines_are_capped_at_the_limit_and_endings_do_not_count() {
        for chunk in [1, 2, 3, 5, 64] {
            let got = lines(b"abcd\nabcde\r\nabcd\r\n\nabcdefghij\nab\r", 4, chunk).await;
            let want = vec![
                Ok("abcd".to_owned()),
                Err(5),
                Ok("abcd".to_owned()),
                Ok(String::new()),
                Err(10),
                Ok("ab\r".to_owned()),
            ];
            assert_eq!(got, want, "chunk {chunk}");
            assert_eq!(
                lines(b"abcdefgh", 4, chunk).await,
                vec![Err(8)],
                "last line, no newline"
            );
            assert_eq!(lines(b"", 4, chunk).await, vec![], "empty input");
            assert_eq!(lines(b"abcd\r", 4, chunk).await, vec![Err(5)], "a lone \\r counts");
        }
    }
}
