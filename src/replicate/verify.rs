//! A stream adapter that hashes and counts blob bytes as they flow from the source to
//! the target, and fails *before releasing the last chunk* when the content does not
//! match the expected digest or size.
//!
//! Why hold back the last chunk: an upload with a `Content-Length` is complete once that
//! many bytes are sent, and a registry that does not check the digest would then commit
//! it. Withholding the final chunk until the hash is known means a bad blob never reaches
//! its full length on the wire, so no registry can commit it.
//!
//! Must never: buffer more than one upstream chunk, or trust `Content-Length`.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use crate::oci::{Digest, Hasher};
use crate::registry::ByteStream;

/// Why a stream failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The bytes hashed to another digest.
    Digest {
        /// What we computed.
        actual: Digest,
    },
    /// More or fewer bytes than the descriptor says.
    Size {
        /// Bytes seen (for "too many", the count when we stopped).
        actual: u64,
    },
}

/// Shared view of a verifying stream's progress and verdict.
#[derive(Debug, Default)]
pub struct Verdict {
    mismatch: Mutex<Option<Mismatch>>,
}

impl Verdict {
    /// The mismatch, if verification failed.
    pub fn mismatch(&self) -> Option<Mismatch> {
        self.mismatch.lock().expect("verdict lock").clone()
    }
    fn set(&self, m: Mismatch) {
        *self.mismatch.lock().expect("verdict lock") = Some(m);
    }
}

/// Wraps a byte stream; see the module docs.
pub struct VerifyStream {
    inner: ByteStream,
    expected: Digest,
    expected_size: u64,
    hasher: Option<Hasher>,
    seen: u64,
    held: Option<Bytes>,
    finished: bool,
    verdict: Arc<Verdict>,
    progress: Arc<AtomicU64>,
}

impl VerifyStream {
    /// Verify `inner` against `expected` and `expected_size`. Bytes released downstream
    /// are added to `progress`. The returned [`Verdict`] tells, after a failure, whether
    /// it was a mismatch (as opposed to a transport error).
    pub fn new(
        inner: ByteStream,
        expected: Digest,
        expected_size: u64,
        progress: Arc<AtomicU64>,
    ) -> (VerifyStream, Arc<Verdict>) {
        let verdict = Arc::new(Verdict::default());
        let s = VerifyStream {
            inner,
            hasher: Some(expected.hasher()),
            expected,
            expected_size,
            seen: 0,
            held: None,
            finished: false,
            verdict: verdict.clone(),
            progress,
        };
        (s, verdict)
    }

    fn release(&mut self, b: Bytes) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.progress.fetch_add(b.len() as u64, Ordering::Relaxed);
        Poll::Ready(Some(Ok(b)))
    }

    fn fail(&mut self, m: Mismatch) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        self.finished = true;
        self.held = None;
        let msg = match &m {
            Mismatch::Digest { actual } => format!("blob content hashes to {actual}, expected {}", self.expected),
            Mismatch::Size { actual } => format!("blob has {actual} bytes, expected {}", self.expected_size),
        };
        self.verdict.set(m);
        Poll::Ready(Some(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, msg))))
    }
}

impl Stream for VerifyStream {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        loop {
            match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    this.seen += chunk.len() as u64;
                    if this.seen > this.expected_size {
                        let seen = this.seen;
                        return this.fail(Mismatch::Size { actual: seen });
                    }
                    if let Some(h) = this.hasher.as_mut() {
                        h.update(&chunk);
                    }
                    // Release the previously held chunk and hold this one.
                    if let Some(prev) = this.held.replace(chunk) {
                        return this.release(prev);
                    }
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    if this.seen != this.expected_size {
                        let seen = this.seen;
                        return this.fail(Mismatch::Size { actual: seen });
                    }
                    let actual = this.hasher.take().expect("hasher used once").finish();
                    if actual != this.expected {
                        return this.fail(Mismatch::Digest { actual });
                    }
                    return match this.held.take() {
                        Some(last) => this.release(last),
                        None => Poll::Ready(None),
                    };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn stream_of(chunks: &[&'static [u8]]) -> ByteStream {
        let v: Vec<Result<Bytes, std::io::Error>> = chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
        Box::pin(futures_util::stream::iter(v))
    }

    async fn collect(s: VerifyStream) -> (Vec<u8>, Option<String>) {
        let mut out = Vec::new();
        let mut s = Box::pin(s);
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e.to_string())),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn good_content_passes_through_unchanged() {
        let d = Digest::sha256_of(b"hello world");
        let progress = Arc::new(AtomicU64::new(0));
        let (s, verdict) = VerifyStream::new(stream_of(&[b"hello", b" ", b"world"]), d, 11, progress.clone());
        let (out, err) = collect(s).await;
        assert_eq!(out, b"hello world");
        assert!(err.is_none());
        assert!(verdict.mismatch().is_none());
        assert_eq!(progress.load(Ordering::Relaxed), 11);
    }

    #[tokio::test]
    async fn corrupted_content_never_releases_its_last_chunk() {
        let d = Digest::sha256_of(b"hello world");
        let (s, verdict) = VerifyStream::new(stream_of(&[b"hello", b" ", b"wOrld"]), d, 11, Arc::default());
        let (out, err) = collect(s).await;
        assert_eq!(out, b"hello ", "the last chunk must be withheld");
        assert!(err.unwrap().contains("hashes to"));
        assert!(matches!(verdict.mismatch(), Some(Mismatch::Digest { .. })));
    }

    #[tokio::test]
    async fn short_and_long_content_fail_on_size() {
        let d = Digest::sha256_of(b"hello");
        let (s, verdict) = VerifyStream::new(stream_of(&[b"hel", b"lo"]), d.clone(), 6, Arc::default());
        let (_, err) = collect(s).await;
        assert!(err.is_some());
        assert_eq!(verdict.mismatch(), Some(Mismatch::Size { actual: 5 }));
        let (s, verdict) = VerifyStream::new(stream_of(&[b"hel", b"lo", b"!!"]), d, 4, Arc::default());
        let (out, err) = collect(s).await;
        assert!(err.is_some());
        assert!(out.len() < 4, "stops as soon as the size is exceeded");
        assert_eq!(verdict.mismatch(), Some(Mismatch::Size { actual: 5 }));
    }

    #[tokio::test]
    async fn transport_errors_pass_through_without_a_verdict() {
        let d = Digest::sha256_of(b"hello");
        let v: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"he")),
            Err(std::io::Error::other("connection reset")),
        ];
        let (s, verdict) = VerifyStream::new(Box::pin(futures_util::stream::iter(v)), d, 5, Arc::default());
        let (_, err) = collect(s).await;
        assert!(err.unwrap().contains("reset"));
        assert!(verdict.mismatch().is_none());
    }
}
