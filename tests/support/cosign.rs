//! Cosign-format signatures made by the tests with generated P-256 keys: the
//! simple-signing payload, the signature annotation, pushed under `sha256-<hex>.sig` as
//! cosign writes them (shared by the watch and the rule-gate tests).

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use regrelay::oci::{self, Digest};
use regrelay::registry::HttpRegistry;

use super::image::{self, Pushed};

/// A P-256 signing key derived from `seed`.
pub fn new_key(seed: u64) -> p256::ecdsa::SigningKey {
    let mut rng = fastrand::Rng::with_seed(seed);
    loop {
        let bytes: Vec<u8> = (0..32).map(|_| rng.u8(..)).collect();
        if let Ok(k) = p256::ecdsa::SigningKey::from_slice(&bytes) {
            return k;
        }
    }
}

/// The public key of `key` in PEM, as `cosign generate-key-pair` writes it.
pub fn pem(key: &p256::ecdsa::SigningKey) -> String {
    key.verifying_key().to_public_key_pem(Default::default()).unwrap()
}

/// How a test signature deviates from a valid one.
#[derive(Default)]
pub struct Claim {
    /// The digest the payload names (default: the subject).
    pub digest: Option<Digest>,
    /// `critical.type` (default: cosign's).
    pub kind: Option<&'static str>,
    /// Push these bytes as the payload instead of the signed ones.
    pub tampered: bool,
}

/// A simple-signing payload naming `digest` with `critical.type` `kind`.
pub fn payload(digest: &Digest, kind: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": "upstream/library/node"},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": kind,
        },
        "optional": null,
    }))
    .unwrap()
}

/// Push a cosign signature for `subject` (tag `sha256-<hex>.sig`), as cosign writes it.
pub async fn sign(
    reg: &HttpRegistry,
    repo: &str,
    subject: &Digest,
    key: &p256::ecdsa::SigningKey,
    claim: &Claim,
) -> Pushed {
    let signed = payload(
        claim.digest.as_ref().unwrap_or(subject),
        claim.kind.unwrap_or("cosign container image signature"),
    );
    let sig: p256::ecdsa::Signature = key.sign(&signed);
    let sig = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
    let pushed_payload = if claim.tampered {
        let mut p = signed.clone();
        let i = p.len() - 3;
        p[i] ^= 0x01;
        p
    } else {
        signed
    };
    let mut layer = image::push_blob(
        reg,
        repo,
        "application/vnd.dev.cosign.simplesigning.v1+json",
        pushed_payload,
    )
    .await;
    layer["annotations"] = serde_json::json!({ "dev.cosignproject.cosign/signature": sig });
    let config = image::push_blob(reg, repo, "application/vnd.oci.image.config.v1+json", b"{}".to_vec()).await;
    let body =
        serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_MANIFEST, "config": config, "layers": [layer]});
    let tag = format!("{}.sig", subject.fallback_tag());
    image::push_manifest(reg, repo, Some(&tag), oci::OCI_MANIFEST, body).await
}
