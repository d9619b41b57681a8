//! Notify dependents of a promotion: `[notify.NAME]` of kind `exec`, `webhook` or `pubsub`.
//!
//! Every notification carries the same JSON ([`Promotion`]); a webhook POSTs it (to the
//! configured URL only, redirects not followed), Pub/Sub publishes it with attributes
//! (`watch`, `digest`, `event = "promoted"`) so build pipelines can filter, and an exec
//! notification runs an argv (never a shell) with `REGRELAY_IMAGE` (the promoted
//! `target@sha256:...`), `REGRELAY_DIGEST` and `REGRELAY_SOURCE` in its environment.
//! Delivery is at least once: each is tried `notify_attempts` times with backoff; a final
//! failure is counted and logged.
//!
//! Must never: undo or block the promotion that already happened; contact a host other
//! than the configured webhook's or Pub/Sub's endpoint.

use std::collections::BTreeMap;
use std::time::Duration;

use google_cloud_auth::credentials::anonymous::Builder as Anonymous;
use serde::Serialize;

use super::Error;
use crate::config::watch::{NotifyConfig, WatchSettings};
use crate::gates::{ExecGate, Subject, Verdict};
use crate::metrics;
use crate::oci::Digest;

/// What is told about a promotion.
#[derive(Debug, Clone, Serialize)]
pub struct Promotion {
    /// The watch that promoted.
    pub watch: String,
    /// The upstream `repository:tag`.
    pub source: String,
    /// The promoted digest.
    #[serde(serialize_with = "as_string")]
    pub digest: Digest,
    /// `target@digest`.
    pub image: String,
    /// `target:tag` for every target tag written.
    pub tags: Vec<String>,
}

enum Notifier {
    Exec(ExecGate),
    Webhook(url::Url),
    PubSub {
        topic: String,
        endpoint: Option<String>,
        publisher: tokio::sync::OnceCell<google_cloud_pubsub::client::Publisher>,
    },
}

/// The configured notifications.
pub struct Dependents {
    by_name: BTreeMap<String, Notifier>,
    http: reqwest::Client,
    attempts: u32,
}

impl std::fmt::Debug for Dependents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dependents")
            .field("names", &self.by_name.keys())
            .finish_non_exhaustive()
    }
}

impl Dependents {
    /// From `[notify.NAME]` tables.
    pub fn from_settings(settings: &WatchSettings) -> Result<Dependents, Error> {
        let mut by_name = BTreeMap::new();
        for (name, n) in &settings.notify {
            let notifier = match n {
                NotifyConfig::Exec { argv, timeout } => Notifier::Exec(ExecGate {
                    argv: argv.clone(),
                    timeout: *timeout,
                    max_output_bytes: 4096,
                    pass_env: Vec::new(),
                }),
                NotifyConfig::Webhook { url } => Notifier::Webhook(url.clone()),
                NotifyConfig::PubSub { topic, endpoint } => Notifier::PubSub {
                    topic: topic.clone(),
                    endpoint: endpoint.clone(),
                    publisher: tokio::sync::OnceCell::new(),
                },
            };
            by_name.insert(name.clone(), notifier);
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Notify {
                name: "webhook".into(),
                reason: e.to_string(),
            })?;
        Ok(Dependents {
            by_name,
            http,
            attempts: settings.watcher.notify_attempts.max(1),
        })
    }

    /// Tell every name in `names` about `p`; failures are counted and logged.
    pub async fn notify(&self, names: &[String], p: &Promotion) {
        let m = &metrics::global().watch;
        for name in names {
            let Some(n) = self.by_name.get(name) else { continue };
            let mut delay = Duration::from_millis(500);
            let mut last = String::new();
            let mut sent = false;
            for attempt in 1..=self.attempts {
                match self.send(n, p).await {
                    Ok(()) => {
                        sent = true;
                        break;
                    }
                    Err(e) => {
                        tracing::info!(notify = %name, attempt, error = %e, "notification failed; retrying");
                        last = e;
                    }
                }
                if attempt < self.attempts {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
            if sent {
                m.notification(name, "sent");
                tracing::info!(notify = %name, watch = %p.watch, digest = %p.digest, "dependents notified");
            } else {
                m.notification(name, "failed");
                tracing::warn!(notify = %name, watch = %p.watch, digest = %p.digest, error = %last,
                    "notification failed after every attempt; the promotion stands");
            }
        }
    }

    async fn send(&self, n: &Notifier, p: &Promotion) -> Result<(), String> {
        let body = serde_json::to_vec(p).map_err(|e| e.to_string())?;
        match n {
            Notifier::Exec(cmd) => {
                let (registry, repository) = p
                    .image
                    .split_once('@')
                    .map(|(r, _)| r)
                    .unwrap_or(&p.image)
                    .split_once('/')
                    .unwrap_or(("", ""));
                let subject = Subject {
                    registry: registry.into(),
                    repository: repository.into(),
                    digest: p.digest.clone(),
                    source: p.source.clone(),
                };
                match cmd.check(&subject).await {
                    Verdict::Pass => Ok(()),
                    Verdict::Retry { reason } | Verdict::Fail { reason } => Err(reason),
                }
            }
            Notifier::Webhook(url) => {
                let resp = self
                    .http
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| format!("POST {}: {}", redact(url), e.without_url()))?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("POST {}: HTTP {}", redact(url), resp.status().as_u16()))
                }
            }
            Notifier::PubSub {
                topic,
                endpoint,
                publisher,
            } => {
                let publisher = publisher
                    .get_or_try_init(|| async {
                        let mut b = google_cloud_pubsub::client::Publisher::builder(topic.clone());
                        if let Some(e) = endpoint {
                            b = b.with_endpoint(e.clone());
                            if e.starts_with("http://") {
                                b = b.with_credentials(Anonymous::new().build());
                            }
                        }
                        b.build().await.map_err(|e| format!("publisher for {topic}: {e}"))
                    })
                    .await?;
                let msg = google_cloud_pubsub::model::Message::new()
                    .set_data(body)
                    .set_attributes([
                        ("event", "promoted".to_string()),
                        ("watch", p.watch.clone()),
                        ("digest", p.digest.to_string()),
                    ]);
                publisher
                    .publish(msg)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("publish to {topic}: {e}"))
            }
        }
    }
}

fn as_string<S: serde::Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.to_string())
}

/// The URL without its query (which may hold a token).
fn redact(url: &url::Url) -> String {
    format!("{}://{}{}", url.scheme(), url.host_str().unwrap_or(""), url.path())
}
