//! Google Cloud Pub/Sub source: streaming pull through the official `google-cloud-pubsub`
//! subscriber, which extends each message's lease while its handle is alive.
//!
//! Role: turn the subscriber's `(Message, Handler)` pairs into [`Delivery`] values whose
//! [`AckHandle`] acks or nacks the message; reopen the stream with backoff when it fails.
//!
//! Must never: ack a message on its own, or hold a message past `max_lease` silently
//! (the subscriber stops extending it then, and Pub/Sub redelivers it).
//!
//! Credentials: an `http://` endpoint (the emulator) uses anonymous credentials; anything
//! else uses Application Default Credentials (metadata server, workload identity,
//! `GOOGLE_APPLICATION_CREDENTIALS`, gcloud user credentials).

use std::time::{Duration, SystemTime};

use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::subscriber::{MessageStream, ShutdownBehavior};

use super::{AckHandle, Delivery, Error, Settlement, Source, reject_as};
use crate::config::{PubSubConfig, RejectMode};

/// Longest wait for pending acks to reach the broker at shutdown.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// A Pub/Sub subscription as a [`Source`].
pub struct PubSubSource {
    subscriber: Subscriber,
    cfg: PubSubConfig,
    reject: RejectMode,
    stream: Option<MessageStream>,
}

impl std::fmt::Debug for PubSubSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubSource")
            .field("subscription", &self.cfg.subscription)
            .finish()
    }
}

impl PubSubSource {
    /// Build the client. The connection itself opens lazily on the first receive.
    pub async fn connect(cfg: &PubSubConfig, reject: RejectMode) -> Result<PubSubSource, Error> {
        let mut builder = Subscriber::builder();
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
            if endpoint.starts_with("http://") {
                builder = builder.with_credentials(Anonymous::new().build());
            }
        }
        let subscriber = builder.build().await.map_err(|e| Error::Receive {
            source_kind: "pubsub",
            reason: format!("cannot create the subscriber client: {e}"),
        })?;
        Ok(PubSubSource {
            subscriber,
            cfg: cfg.clone(),
            reject,
            stream: None,
        })
    }

    fn open(&self) -> MessageStream {
        tracing::info!(subscription = %self.cfg.subscription, "opening the Pub/Sub stream");
        self.subscriber
            .subscribe(self.cfg.subscription.clone())
            .set_max_lease_extension(self.cfg.lease_extension)
            .set_max_lease(self.cfg.max_lease)
            .set_max_outstanding_messages(self.cfg.max_outstanding_messages)
            // At shutdown every message the subscriber still leases is nacked at once (those
            // buffered but never handed out, and those whose copies outlived the grace period:
            // the pipeline closes the source before it cancels them), instead of waiting for
            // its lease to run out. Nacking them one by one before closing would let Pub/Sub
            // redeliver them into this very stream, where they would sit until their lease
            // expired.
            .set_shutdown_behavior(ShutdownBehavior::NackImmediately)
            .build()
    }
}

impl Source for PubSubSource {
    fn kind(&self) -> &'static str {
        "pubsub"
    }

    async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        if self.stream.is_none() {
            self.stream = Some(self.open());
        }
        let stream = self.stream.as_mut()?;
        let failed = match stream.next().await {
            Some(Ok((message, handler))) => {
                let attempt = handler.delivery_attempt().and_then(|a| u32::try_from(a).ok());
                let mode = self.reject;
                let handle = AckHandle::new(move |s| match s {
                    Settlement::Ack => handler.ack(),
                    Settlement::Nack => handler.nack(),
                    Settlement::Reject => match reject_as(mode) {
                        Settlement::Ack => handler.ack(),
                        _ => handler.nack(),
                    },
                });
                return Some(Ok(Delivery {
                    id: message.message_id,
                    payload: message.data,
                    published: message.publish_time.and_then(|t| SystemTime::try_from(t).ok()),
                    attempt,
                    handle,
                }));
            }
            Some(Err(e)) => format!("the streaming pull failed: {e}"),
            None => "the streaming pull ended".to_string(),
        };
        // The subscriber already retried transient stream errors; this one is not. Drop the
        // stream (messages it held come back after their lease) and let the caller back off.
        self.stream = None;
        Some(Err(Error::Receive {
            source_kind: "pubsub",
            reason: failed,
        }))
    }

    async fn abort(self, cancel: tokio_util::sync::CancellationToken, drained: impl Future<Output = ()> + Send) {
        // `ShutdownBehavior::NackImmediately`: closing nacks everything under lease
        // management in one go, while the unfinished handles are still alive, so nothing is
        // redelivered into this stream meanwhile. Then the copies are cancelled.
        self.close().await;
        cancel.cancel();
        drained.await;
    }

    async fn close(self) {
        if let Some(stream) = self.stream {
            let token = stream.shutdown_token();
            if tokio::time::timeout(CLOSE_TIMEOUT, token.shutdown()).await.is_err() {
                tracing::warn!("pending Pub/Sub settlements not flushed within {CLOSE_TIMEOUT:?}");
            }
        }
    }
}
