//! What the request pipeline reads off the wire: `Retry-After`, OCI error bodies, `Link`
//! pagination, content types, and URLs made safe for logs and errors.
//!
//! Must never: return or format a URL with its query or user info (upload and signed URLs
//! carry state and keys) except through [`redact`].

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use url::Url;

use super::{HttpRegistry, Req};
use crate::registry::Error;
use crate::registry::auth::{RepoScope, read_capped};

/// `host[:port]` of a URL, as written in references.
pub(super) fn host_port(u: &Url) -> Option<String> {
    let host = u.host_str()?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    })
}

/// A URL without its query string (upload URLs carry opaque state, signed URLs carry keys).
pub(crate) fn redact(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

pub(super) fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

pub(super) fn strip_params(ct: &str) -> String {
    ct.split(';').next().unwrap_or_default().trim().to_owned()
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The OCI error codes and first message of an error body.
pub(super) fn parse_oci_errors(body: &[u8]) -> (Vec<String>, String) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(env) => {
            let message = env
                .errors
                .first()
                .map(|e| e.message.chars().take(200).collect())
                .unwrap_or_default();
            (
                env.errors
                    .into_iter()
                    .map(|e| e.code)
                    .filter(|c| !c.is_empty())
                    .collect(),
                message,
            )
        }
        Err(_) => (Vec::new(), String::new()),
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params
            .contains("rel=\"next\"")
            .then(|| target.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
    })
}

impl HttpRegistry {
    /// GET a paginated list (`tags/list`, `_catalog`): `n=1000` per page, following the
    /// `Link: <…>; rel="next"` header on this host only, at most 1,000 pages. The names
    /// are under `key` in each page. `missing_is_empty`: a 404 ends the list (a
    /// repository that does not exist has no tags).
    pub(super) async fn paginated(
        &self,
        mut url: reqwest::Url,
        step: &'static str,
        scopes: &[RepoScope],
        key: &str,
        missing_is_empty: bool,
    ) -> Result<Vec<String>, Error> {
        url.query_pairs_mut().append_pair("n", "1000");
        let ok: &[u16] = if missing_is_empty { &[200, 404] } else { &[200] };
        let mut names = Vec::new();
        for _ in 0..1000 {
            let req = Req {
                method: Method::GET,
                url: url.clone(),
                step,
                scopes,
                headers: vec![],
                body: None,
                ok,
            };
            let resp = self.execute(req).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(names);
            }
            let next = header_str(resp.headers(), "link")
                .and_then(|l| next_link(&l))
                .and_then(|n| url.join(&n).ok());
            let body = read_capped(resp, 16 << 20).await.map_err(|detail| Error::Transport {
                step,
                url: redact(&url),
                detail,
            })?;
            let page = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| match v.get(key) {
                    None | Some(serde_json::Value::Null) => Some(Vec::new()),
                    Some(list) => serde_json::from_value::<Vec<String>>(list.clone()).ok(),
                })
                .ok_or_else(|| Error::Protocol {
                    step,
                    url: redact(&url),
                    detail: format!("the answer is not JSON with a list of {key}"),
                })?;
            names.extend(page);
            match next {
                Some(n) if self.is_own_host(&n) => url = n,
                _ => break,
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn oci_error_bodies() {
        let (codes, msg) =
            parse_oci_errors(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"},{"code":"X"}]}"#);
        assert_eq!(codes, vec!["MANIFEST_UNKNOWN", "X"]);
        assert_eq!(msg, "manifest unknown");
        assert_eq!(parse_oci_errors(b"<html>"), (vec![], String::new()));
    }

    #[test]
    fn link_header() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
        assert_eq!(next_link(r#"<x>; rel="prev""#), None);
    }

    #[test]
    fn redaction_drops_query_and_userinfo() {
        let u = Url::parse("https://user:pw@store.example/blob?sig=SECRET&se=1").unwrap();
        let r = redact(&u);
        assert!(!r.contains("SECRET") && !r.contains("pw"), "{r}");
        assert_eq!(
            host_port(&Url::parse("http://127.0.0.1:5000/v2/").unwrap()).unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(
            host_port(&Url::parse("https://[::1]:5000/v2/").unwrap()).unwrap(),
            "[::1]:5000"
        );
    }
}
