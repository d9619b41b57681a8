//! The admin port: `/metrics` for Prometheus, `/livez` (alias `/healthz`) and `/readyz`
//! for the supervisor (systemd watchdog scripts, Kubernetes probes).
//!
//! Must never: expose anything but metrics and health (no config, no secrets, no debug
//! or profiling endpoints, no request echo); import anything but `crate::metrics` and
//! `crate::health`.
//!
//! Invariants: `/metrics` and liveness come from [`metrics::global`]; readiness from the
//! run's [`Health`] (`/readyz` answers JSON: `ready`, `paused` and each registry's state);
//! unknown paths answer 404; the server stops accepting on the shutdown token and finishes
//! in-flight answers.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::metrics;

/// Serve the admin endpoints on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, health: Arc<Health>, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router(health))
        .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
        .await
}

/// The routes. `GET` routes also answer `HEAD`; other methods get 405, other paths 404.
fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/livez", get(livez))
        .route("/healthz", get(livez))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(health)
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

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    let status = if health.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    text(status, "application/json", health.report())
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

    fn health() -> Arc<Health> {
        Arc::new(Health::new(
            ["src.example".to_string(), "dst.example".to_string()],
            vec![("src.example".into(), vec!["dst.example".into()])],
            Duration::from_secs(60),
            Duration::from_secs(60),
        ))
    }

    async fn start() -> Server {
        start_with(health()).await
    }

    async fn start_with(health: Arc<Health>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let token = CancellationToken::new();
        let task = tokio::spawn(serve(listener, health, token.clone()));
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
        metrics::global().registry_request("admin-test.example", "GET", Some(200), std::time::Duration::ZERO);
        let (status, ct, body) = s.get("/metrics").await;
        assert_eq!(status, 200);
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        assert!(body.contains("# TYPE regrelay_copies_total counter"));
        assert!(body.contains(r#"registry="admin-test.example""#));
        s.stop().await;
    }

    #[tokio::test]
    async fn readiness_follows_the_health_and_liveness_the_latch() {
        let _g = LATCHES.lock().await;
        let m = metrics::global();
        let health = health();
        let s = start_with(health.clone()).await;

        // Not pulling yet: not ready.
        let (status, ct, body) = s.get("/readyz").await;
        assert_eq!((status, ct.as_str()), (503, "application/json"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["ready"], false);
        health.set_running(true);
        let (status, _, body) = s.get("/readyz").await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["registries"]["dst.example"]["state"], "healthy");
        // The only target unhealthy: no rule can progress, not ready; the body says why.
        health.failed("dst.example", "credentials refused");
        let (status, _, body) = s.get("/readyz").await;
        assert_eq!(status, 503);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["paused"].clone(), v["registries"]["dst.example"]["state"].clone()),
            (true.into(), "unhealthy".into())
        );
        assert_eq!(v["registries"]["dst.example"]["reason"], "credentials refused");
        health.succeeded("dst.example");
        assert_eq!(s.get("/readyz").await.0, 200);

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
