//! The admin port: `/metrics` for Prometheus, `/livez` (alias `/healthz`) and `/readyz`
//! for the supervisor (systemd watchdog scripts, Kubernetes probes).
//!
//! Must never: expose anything but metrics and health (no config, no secrets, no debug
//! or profiling endpoints, no request echo); import anything but `crate::metrics`.
//!
//! Invariants: every answer is computed from [`metrics::global`]: liveness from its
//! liveness latch, readiness from its readiness latch; unknown paths answer 404; the
//! server stops accepting on the shutdown token and finishes in-flight answers.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// Serve the admin endpoints on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
        .await
}

/// The routes. `GET` routes also answer `HEAD`; other methods get 405, other paths 404.
fn router() -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/livez", get(livez))
        .route("/healthz", get(livez))
        .route("/readyz", get(readyz))
        .fallback(not_found)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn render_metrics() -> Response {
    text(StatusCode::OK, metrics::CONTENT_TYPE, metrics::global().render())
}

async fn livez() -> Response {
    if metrics::global().is_alive() {
        text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "not alive\n".into(),
        )
    }
}

async fn readyz() -> Response {
    if metrics::global().is_ready() {
        text(StatusCode::OK, "text/plain; charset=utf-8", "ready\n".into())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "not ready\n".into(),
        )
    }
}

async fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Serializes tests that flip the global latches.
    static LATCHES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    struct Server {
        base: String,
        token: CancellationToken,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let token = CancellationToken::new();
        let task = tokio::spawn(serve(listener, token.clone()));
        Server { base, token, task }
    }

    impl Server {
        async fn get(&self, path: &str) -> (u16, String, String) {
            let resp = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (status, ct, resp.text().await.unwrap())
        }

        async fn stop(self) {
            self.token.cancel();
            tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .expect("server stops on the token")
                .unwrap()
                .unwrap();
        }
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_the_text_format() {
        let s = start().await;
        metrics::global().registry_request("admin-test.example", Some(200));
        let (status, ct, body) = s.get("/metrics").await;
        assert_eq!(status, 200);
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        assert!(body.contains("# TYPE regrelay_copies_total counter"));
        assert!(body.contains(r#"registry="admin-test.example""#));
        s.stop().await;
    }

    #[tokio::test]
    async fn readiness_and_liveness_follow_the_latches() {
        let _g = LATCHES.lock().await;
        let m = metrics::global();
        let s = start().await;

        m.set_ready(false);
        assert_eq!(s.get("/readyz").await.0, 503);
        assert_eq!(s.get("/readyz").await.2, "not ready\n");
        m.set_ready(true);
        assert_eq!(
            s.get("/readyz").await,
            (200, "text/plain; charset=utf-8".into(), "ready\n".into())
        );

        assert_eq!(s.get("/livez").await.2, "ok\n");
        assert_eq!(s.get("/healthz").await.0, 200);
        m.set_alive(false);
        assert_eq!(s.get("/livez").await.0, 503);
        assert_eq!(s.get("/healthz").await.0, 503);
        m.set_alive(true);
        m.set_ready(false);
        s.stop().await;
    }

    #[tokio::test]
    async fn anything_else_is_not_found() {
        let s = start().await;
        for path in ["/", "/config", "/debug/pprof", "/metrics/x", "/readyz/../config"] {
            assert_eq!(s.get(path).await.0, 404, "{path}");
        }
        let post = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("{}/metrics", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(post.status().as_u16(), 405);
        s.stop().await;
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let s = start().await;
        let base = s.base.clone();
        s.stop().await;
        let err = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap()
            .get(format!("{base}/livez"))
            .send()
            .await;
        assert!(err.is_err(), "the port is closed after shutdown");
    }
}
