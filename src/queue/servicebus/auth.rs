//! Credentials for the Service Bus REST API: the [`TokenSource`] trait, SAS tokens signed
//! locally from a shared access key ([`SasTokenSource`]), and Entra ID bearer tokens from
//! [`crate::credentials::EntraTokens`] ([`EntraBearer`]).
//!
//! Must never: log, format or return a key or a token in an error or `Debug` output.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::future::BoxFuture;
use sha2::{Digest as _, Sha256};

use crate::config::Secret;
use crate::credentials::EntraTokens;

/// Lifetime of a locally signed SAS token; a new one is signed when less than
/// [`SAS_RENEW_BEFORE`] is left.
const SAS_TTL: Duration = Duration::from_secs(3600);
const SAS_RENEW_BEFORE: Duration = Duration::from_secs(600);

/// Something that yields the `Authorization` header value for Service Bus requests
/// (`SharedAccessSignature …` or `Bearer …`), cached and renewed by the implementation.
pub trait TokenSource: Send + Sync {
    /// The current header value. The error text must not contain a credential.
    fn authorization(&self) -> BoxFuture<'_, Result<Secret, String>>;

    /// The broker answered 401/403 to the current value: fetch a new one next time.
    fn refused(&self) {}
}

/// Microsoft Entra ID bearer tokens for `scope` from [`EntraTokens`] (workload identity,
/// managed identity, client secret, token file), cached there.
pub struct EntraBearer {
    tokens: EntraTokens,
    scope: String,
}

impl std::fmt::Debug for EntraBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntraBearer")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl EntraBearer {
    /// Tokens for `scope` from `tokens`.
    pub fn new(tokens: EntraTokens, scope: impl Into<String>) -> EntraBearer {
        EntraBearer {
            tokens,
            scope: scope.into(),
        }
    }
}

impl TokenSource for EntraBearer {
    fn authorization(&self) -> BoxFuture<'_, Result<Secret, String>> {
        Box::pin(async move {
            let token = self.tokens.token(&self.scope).await.map_err(|e| e.to_string())?;
            Ok(Secret::new(format!("Bearer {}", token.expose())))
        })
    }

    fn refused(&self) {
        self.tokens.invalidate(&self.scope);
    }
}

/// SAS tokens signed locally with a shared access key, cached until shortly before expiry.
pub struct SasTokenSource {
    resource_uri: String,
    key_name: String,
    key: Secret,
    cache: Mutex<Option<(Secret, u64)>>,
}

impl std::fmt::Debug for SasTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasTokenSource")
            .field("resource_uri", &self.resource_uri)
            .field("key_name", &self.key_name)
            .finish_non_exhaustive()
    }
}

impl SasTokenSource {
    /// Tokens for everything under `resource_uri` (e.g. `https://ns.servicebus.windows.net/queue`).
    pub fn new(resource_uri: impl Into<String>, key_name: impl Into<String>, key: Secret) -> SasTokenSource {
        SasTokenSource {
            resource_uri: resource_uri.into(),
            key_name: key_name.into(),
            key,
            cache: Mutex::new(None),
        }
    }

    fn current(&self, now_unix: u64) -> Secret {
        let mut cache = self.cache.lock().expect("sas cache poisoned");
        if let Some((token, expiry)) = cache.as_ref()
            && *expiry > now_unix + SAS_RENEW_BEFORE.as_secs()
        {
            return token.clone();
        }
        let expiry = now_unix + SAS_TTL.as_secs();
        let token = Secret::new(sas_token(&self.resource_uri, &self.key_name, self.key.expose(), expiry));
        *cache = Some((token.clone(), expiry));
        token
    }
}

impl TokenSource for SasTokenSource {
    fn authorization(&self) -> BoxFuture<'_, Result<Secret, String>> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let token = self.current(now);
        Box::pin(async move { Ok(token) })
    }
}

/// The resource URI a SAS token is signed for: `https://{namespace}/{entity_path}`.
///
/// Always the namespace's own URI, never the `endpoint` override: the broker checks the
/// token's `sr` against the URI of the entity it serves (a token is valid for that URI and
/// everything under it), whatever address the request was sent to (a private endpoint, a
/// proxy). The override only decides where requests go. Microsoft's "Service Bus access
/// control with Shared Access Signatures"; protocols.md §3.3.
pub fn sas_audience(namespace: &str, entity_path: &str) -> String {
    format!("https://{namespace}/{entity_path}")
}

/// `SharedAccessSignature sr=..&sig=..&se=..&skn=..` for `resource_uri`, valid until
/// `expiry` (Unix seconds). The string to sign is `urlencode(uri) + "\n" + expiry`, the
/// HMAC-SHA256 key is the UTF-8 bytes of `key` as shown in the portal (not base64-decoded),
/// as in Microsoft's samples (protocols.md §3.3).
pub fn sas_token(resource_uri: &str, key_name: &str, key: &str, expiry: u64) -> String {
    let sr = urlencode(resource_uri);
    let sig = B64.encode(hmac_sha256(key.as_bytes(), format!("{sr}\n{expiry}").as_bytes()));
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={expiry}&skn={}",
        urlencode(&sig),
        urlencode(key_name)
    )
}

/// `application/x-www-form-urlencoded` encoding, as .NET's `WebUtility.UrlEncode`.
pub(super) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// HMAC-SHA256 (RFC 2104) over `sha2`, the only hash crate the daemon depends on.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new()
        .chain_update(block.map(|b| b ^ 0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(block.map(|b| b ^ 0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test cases 2 and 6 (a key longer than the block is hashed first).
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn sas_token_matches_an_independent_computation() {
        // Computed with Python, as Microsoft's samples do (key = UTF-8 bytes of the string):
        //   sr = urllib.parse.quote_plus(uri)
        //   sig = base64.b64encode(hmac.new(key.encode('utf-8'),
        //             (sr + "\n" + str(expiry)).encode('utf-8'), hashlib.sha256).digest())
        //   "SharedAccessSignature sr={}&sig={}&se={}&skn={}".format(
        //             sr, urllib.parse.quote_plus(sig), expiry, name)
        let token = sas_token(
            "https://example.servicebus.windows.net/acr-events",
            "RootManageSharedAccessKey",
            "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo=",
            1_767_225_600,
        );
        assert_eq!(
            token,
            "SharedAccessSignature sr=https%3A%2F%2Fexample.servicebus.windows.net%2Facr-events\
             &sig=czYsLa%2FdpUNPCoA617urJLiym%2BaeKOwj%2F5LtSTc6xCE%3D&se=1767225600&skn=RootManageSharedAccessKey"
        );
    }

    #[test]
    fn audience_is_the_namespace_entity_uri() {
        assert_eq!(
            sas_audience("ex.servicebus.windows.net", "acr-events"),
            "https://ex.servicebus.windows.net/acr-events"
        );
        assert_eq!(
            sas_audience("ex.servicebus.windows.net", "acr/subscriptions/regrelay"),
            "https://ex.servicebus.windows.net/acr/subscriptions/regrelay"
        );
    }

    #[test]
    fn sas_tokens_are_cached_until_shortly_before_expiry() {
        let s = SasTokenSource::new("https://ns.example/q", "k", Secret::new("s3cr3t-key"));
        let a = s.current(1_000_000);
        assert_eq!(s.current(1_000_000 + 60), a, "reused within its lifetime");
        let later = s.current(1_000_000 + SAS_TTL.as_secs() - SAS_RENEW_BEFORE.as_secs() + 1);
        assert_ne!(later, a, "renewed before it expires");
        assert!(
            later
                .expose()
                .contains(&format!("se={}", 1_000_000 + 2 * SAS_TTL.as_secs() - 599))
        );
        assert!(!format!("{s:?}").contains("s3cr3t"), "the key is not in Debug");
    }
}
