//! The cosign gate: the image must carry a cosign signature that verifies with one of the
//! configured public keys and whose simple-signing payload names the image's digest.
//!
//! Where signatures are looked for: the tag `sha256-<hex>.sig` in the image's repository
//! (cosign's tag scheme), and the OCI referrers of the digest when the registry has the
//! referrers API (cosign's OCI 1.1 mode). Every layer of a signature manifest is a
//! candidate: its blob is the payload, its `dev.cosignproject.cosign/signature` annotation
//! the base64 ECDSA signature. A candidate passes when the payload's digest matches its
//! descriptor, the signature verifies over the payload bytes with one of the keys, the
//! payload's `critical.image.docker-manifest-digest` is the subject digest and its
//! `critical.type` is `cosign container image signature`.
//!
//! No signature at all (neither the tag nor a cosign referrer) is not the same as a bad
//! one: CI usually pushes the image and signs it a moment later, so the push event (or the
//! watch's poll) can arrive before the signature exists. By default ([`Unsigned::Retry`])
//! that answer is "try again later"; the redelivery or the next poll copies the image
//! again (its signature tags and referrers with it) and checks again. A signature that is
//! there but does not verify (another key, a tampered payload, another digest, another
//! type) is a rejection.
//!
//! Keys: ECDSA P-256 public keys in PEM (`PUBLIC KEY`, as `cosign generate-key-pair`
//! writes them). Verification uses the RustCrypto `p256` crate directly (see
//! docs/design.md). Keyless signatures (Fulcio certificates, Rekor proofs, sigstore
//! bundles) are not verified: they need the public-good instance to test.
//!
//! Must never: accept a payload whose digest claim is not the subject digest (a signature
//! of another image copied next to this one); read an unbounded blob; pass when no
//! candidate verified.

use base64::Engine as _;
use futures_util::StreamExt as _;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use serde::Deserialize;

use super::{Subject, Verdict};
pub use crate::config::watch::Unsigned;
use crate::oci::{Digest, Locator};
use crate::registry::{self, Registries, Registry};

/// The annotation cosign puts the signature in.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The media type of a simple-signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The `critical.type` of a cosign image signature.
pub const COSIGN_TYPE: &str = "cosign container image signature";
/// The artifact type of cosign signatures stored as OCI referrers.
pub const COSIGN_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The largest payload read (they are a few hundred bytes).
const MAX_PAYLOAD: usize = 64 * 1024;
/// The most signature manifests looked at per image.
const MAX_CANDIDATES: usize = 16;

/// A verification key.
#[derive(Clone)]
pub struct PublicKey {
    /// Where it came from (a file path), for logs.
    pub name: String,
    key: p256::ecdsa::VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A key that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("public key {name}: {reason}")]
pub struct KeyError {
    /// Where it came from.
    pub name: String,
    /// What was wrong.
    pub reason: String,
}

impl PublicKey {
    /// Parse an ECDSA P-256 public key from PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn from_pem(name: impl Into<String>, pem: &str) -> Result<PublicKey, KeyError> {
        let name = name.into();
        match p256::ecdsa::VerifyingKey::from_public_key_pem(pem.trim()) {
            Ok(key) => Ok(PublicKey { name, key }),
            Err(e) => Err(KeyError {
                name,
                reason: format!("not an ECDSA P-256 public key in PEM: {e}"),
            }),
        }
    }

    /// Whether `signature` (DER, or the 64-byte fixed form) is this key's over `payload`.
    fn verifies(&self, payload: &[u8], signature: &[u8]) -> bool {
        let sig =
            p256::ecdsa::Signature::from_der(signature).or_else(|_| p256::ecdsa::Signature::from_slice(signature));
        sig.is_ok_and(|s| self.key.verify(payload, &s).is_ok())
    }
}

/// Requires a cosign signature by one of `keys`.
#[derive(Debug, Clone)]
pub struct CosignGate {
    /// Any one of them may have signed.
    pub keys: Vec<PublicKey>,
    /// The verdict for an image with no signature at all.
    pub unsigned: Unsigned,
}

/// What the signatures of an image came to.
enum Found {
    /// A candidate verified with this key.
    Verified(String),
    /// There is no signature at all (why, for logs).
    Nothing(String),
    /// Signatures exist, none verified (why not).
    Invalid(String),
}

#[derive(Debug, Deserialize)]
struct SigManifest {
    #[serde(default)]
    layers: Vec<SigLayer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SigLayer {
    #[serde(default)]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Debug, Deserialize)]
struct Critical {
    image: PayloadImage,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

#[derive(Debug, Deserialize)]
struct ReferrersIndex {
    #[serde(default)]
    manifests: Vec<crate::oci::Descriptor>,
}

impl CosignGate {
    /// Look for a verifying signature of `subject`.
    pub async fn check<R: Registries>(&self, registries: &R, subject: &Subject) -> Verdict {
        let registry = match registries.get(&subject.registry) {
            Ok(r) => r,
            Err(e) => return Verdict::Fail { reason: e.to_string() },
        };
        match self.find(&*registry, subject).await {
            Ok(Found::Verified(key)) => {
                tracing::debug!(digest = %subject.digest, key, "cosign signature verified");
                Verdict::Pass
            }
            Ok(Found::Nothing(why)) => match self.unsigned {
                Unsigned::Retry => Verdict::Retry {
                    reason: format!("{why}; not signed yet? checked again later"),
                },
                Unsigned::Reject => Verdict::Fail { reason: why },
            },
            Ok(Found::Invalid(why)) => Verdict::Fail { reason: why },
            // The registry could not be read: undecided, not a rejection.
            Err(e) if e.class() == registry::ErrorClass::Permanent => Verdict::Fail {
                reason: format!("reading signatures: {e}"),
            },
            Err(e) => Verdict::Retry {
                reason: format!("reading signatures: {e}"),
            },
        }
    }

    /// What the signatures of `subject` come to.
    async fn find<G: Registry>(&self, registry: &G, subject: &Subject) -> Result<Found, registry::Error> {
        let repo = &subject.repository;
        let mut manifests = Vec::new();
        let sig_tag = format!("{}.sig", subject.digest.fallback_tag());
        match registry.get_manifest(repo, &Locator::Tag(sig_tag.clone())).await {
            Ok(m) => manifests.push(m.bytes),
            Err(registry::Error::ManifestUnknown { .. }) => {}
            Err(e) => return Err(e),
        }
        if let Some(index) = registry.referrers(repo, &subject.digest).await? {
            let index: ReferrersIndex = serde_json::from_slice(&index).unwrap_or(ReferrersIndex { manifests: vec![] });
            for d in index
                .manifests
                .iter()
                .filter(|d| d.artifact_type.as_deref() == Some(COSIGN_ARTIFACT))
                .take(MAX_CANDIDATES)
            {
                manifests.push(
                    registry
                        .get_manifest(repo, &Locator::Digest(d.digest.clone()))
                        .await?
                        .bytes,
                );
            }
        }
        if manifests.is_empty() {
            return Ok(Found::Nothing(format!(
                "no cosign signature (neither tag {sig_tag} nor a referrer)"
            )));
        }
        let mut why = Vec::new();
        for bytes in manifests {
            let Ok(m) = serde_json::from_slice::<SigManifest>(&bytes) else {
                why.push("a signature manifest that does not parse".to_string());
                continue;
            };
            for layer in m
                .layers
                .iter()
                .filter(|l| l.media_type == SIMPLE_SIGNING)
                .take(MAX_CANDIDATES)
            {
                match self.candidate(registry, repo, layer, &subject.digest).await? {
                    Ok(key) => return Ok(Found::Verified(key)),
                    Err(reason) => why.push(reason),
                }
            }
        }
        if why.is_empty() {
            why.push("signature manifests hold no simple-signing layer".into());
        }
        Ok(Found::Invalid(format!("no valid cosign signature: {}", why.join("; "))))
    }

    async fn candidate<G: Registry>(
        &self,
        registry: &G,
        repo: &str,
        layer: &SigLayer,
        subject: &Digest,
    ) -> Result<Result<String, String>, registry::Error> {
        let Some(sig) = layer.annotations.get(SIGNATURE_ANNOTATION) else {
            return Ok(Err(format!("layer {} carries no signature annotation", layer.digest)));
        };
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(sig.trim()) else {
            return Ok(Err(format!("layer {}: signature is not base64", layer.digest)));
        };
        if layer.size > MAX_PAYLOAD as u64 {
            return Ok(Err(format!(
                "layer {}: payload of {} bytes is too large",
                layer.digest, layer.size
            )));
        }
        let payload = read_bounded(registry, repo, &layer.digest).await?;
        let Some(payload) = payload.filter(|p| layer.digest.matches(p)) else {
            return Ok(Err(format!(
                "layer {}: payload does not match its digest",
                layer.digest
            )));
        };
        let Some(key) = self.keys.iter().find(|k| k.verifies(&payload, &sig)) else {
            return Ok(Err(format!(
                "layer {}: signature verifies with none of the keys",
                layer.digest
            )));
        };
        let claim: Payload = match serde_json::from_slice(&payload) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Err(format!(
                    "layer {}: payload is not simple signing: {e}",
                    layer.digest
                )));
            }
        };
        if claim.critical.kind != COSIGN_TYPE {
            return Ok(Err(format!(
                "layer {}: payload type is {:?}",
                layer.digest, claim.critical.kind
            )));
        }
        if claim.critical.image.digest != subject.to_string() {
            return Ok(Err(format!(
                "layer {}: payload signs {}, not {subject}",
                layer.digest, claim.critical.image.digest
            )));
        }
        Ok(Ok(key.name.clone()))
    }
}

/// A blob of at most [`MAX_PAYLOAD`] bytes; `None` when it is larger.
async fn read_bounded<G: Registry>(
    registry: &G,
    repo: &str,
    digest: &Digest,
) -> Result<Option<Vec<u8>>, registry::Error> {
    let mut reader = registry.get_blob(repo, digest).await?;
    let mut out = Vec::new();
    while let Some(chunk) = reader.stream.next().await {
        let chunk = chunk.map_err(|e| registry::Error::Transport {
            step: "reading signature payload",
            url: format!("{}/{repo}@{digest}", registry.host()),
            detail: e.to_string(),
        })?;
        if out.len() + chunk.len() > MAX_PAYLOAD {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_p256_pem_is_refused() {
        let e =
            PublicKey::from_pem("k.pub", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").unwrap_err();
        assert!(e.to_string().contains("k.pub"), "{e}");
    }

    #[test]
    fn signatures_verify_in_der_form() {
        use p256::ecdsa::signature::Signer as _;
        use p256::pkcs8::EncodePublicKey as _;
        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let pem = sk.verifying_key().to_public_key_pem(Default::default()).unwrap();
        let key = PublicKey::from_pem("k", &pem).unwrap();
        let sig: p256::ecdsa::Signature = sk.sign(b"payload");
        assert!(key.verifies(b"payload", sig.to_der().as_bytes()));
        assert!(!key.verifies(b"payloaD", sig.to_der().as_bytes()));
    }
}
