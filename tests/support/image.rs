//! Seeding helpers: push images, indexes, referrers and cosign-style signatures into a
//! test registry with regrelay's own registry client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use regrelay::config::{Auth, RegistryConfig, RetryPolicy};
use regrelay::oci::{self, Digest, Locator};
use regrelay::registry::{HttpRegistry, Registry, RegistrySet};
use regrelay::replicate::{Options, Replicator};

/// A pushed manifest.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Digest of the manifest bytes.
    pub digest: Digest,
    /// The bytes.
    pub bytes: Bytes,
    /// Media type.
    pub media_type: String,
}

impl Pushed {
    /// A JSON descriptor for this manifest.
    pub fn descriptor(&self, platform: Option<(&str, &str)>) -> serde_json::Value {
        let mut d = serde_json::json!({"mediaType": self.media_type, "digest": self.digest.to_string(), "size": self.bytes.len()});
        if let Some((os, arch)) = platform {
            d["platform"] = serde_json::json!({"os": os, "architecture": arch});
        }
        d
    }
}

/// Retry policy for tests: patient enough for restarts, fast enough for CI.
pub fn test_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 10,
        min_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(800),
        max_retry_after: Duration::from_secs(5),
    }
}

/// A registry config for a loopback test host.
pub fn cfg(host: &str, auth: Auth) -> RegistryConfig {
    let mut c = RegistryConfig::new(host);
    c.auth = auth;
    c.retry = test_retry();
    c.read_timeout = Duration::from_secs(20);
    c
}

/// An anonymous registry config for a loopback test host.
pub fn anon(host: &str) -> RegistryConfig {
    cfg(host, Auth::Anonymous)
}

/// A copy task from `src` to `dst` (references as `regrelay copy` takes them).
pub fn task(src: &str, dst: &str) -> regrelay::replicate::Task {
    regrelay::replicate::Task::from_refs(src.parse().unwrap(), &dst.parse::<regrelay::oci::Reference>().unwrap())
}

/// A client for seeding.
pub fn client(host: &str, auth: Auth) -> HttpRegistry {
    HttpRegistry::new(cfg(host, auth)).expect("client")
}

/// An engine over the given registry configs.
pub fn engine(configs: Vec<RegistryConfig>, opts: Options) -> Replicator<RegistrySet> {
    Replicator::new(Arc::new(RegistrySet::from_configs(configs).expect("configs")), opts)
}

/// Push one blob from memory; returns its descriptor JSON.
pub async fn push_blob(reg: &HttpRegistry, repo: &str, media_type: &str, data: Vec<u8>) -> serde_json::Value {
    let digest = Digest::sha256_of(&data);
    let size = data.len() as u64;
    if reg.head_blob(repo, &digest).await.unwrap().is_none() {
        let session = reg.start_upload(repo).await.unwrap();
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::from(data))];
        reg.upload_blob(session, &digest, size, Box::pin(futures_util::stream::iter(chunks)))
            .await
            .unwrap();
    }
    serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

/// Read a whole (small) blob into memory.
pub async fn read_blob(reg: &HttpRegistry, repo: &str, digest: &Digest) -> Vec<u8> {
    use futures_util::TryStreamExt as _;
    let reader = reg.get_blob(repo, digest).await.unwrap();
    let chunks: Vec<Bytes> = reader.stream.try_collect().await.unwrap();
    chunks.concat()
}

/// Random bytes (deterministic per seed).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// Push a manifest (by digest, and under `tag` if given).
pub async fn push_manifest(
    reg: &HttpRegistry,
    repo: &str,
    tag: Option<&str>,
    media_type: &str,
    body: serde_json::Value,
) -> Pushed {
    let bytes = Bytes::from(serde_json::to_vec_pretty(&body).unwrap());
    let digest = Digest::sha256_of(&bytes);
    reg.put_manifest(repo, &Locator::Digest(digest.clone()), media_type, bytes.clone())
        .await
        .unwrap();
    if let Some(t) = tag {
        reg.put_manifest(repo, &Locator::Tag(t.into()), media_type, bytes.clone())
            .await
            .unwrap();
    }
    Pushed {
        digest,
        bytes,
        media_type: media_type.into(),
    }
}

/// Push an image with the given layer contents. `docker` selects Docker schema 2 media
/// types instead of OCI.
pub async fn push_image(
    reg: &HttpRegistry,
    repo: &str,
    tag: Option<&str>,
    layers: Vec<Vec<u8>>,
    docker: bool,
    seed: u64,
) -> Pushed {
    let (mt, cfg_mt, layer_mt) = if docker {
        (
            oci::DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        )
    } else {
        (
            oci::OCI_MANIFEST,
            "application/vnd.oci.image.config.v1+json",
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
    };
    let config =
        serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "seed": seed})).unwrap();
    let config = push_blob(reg, repo, cfg_mt, config).await;
    let mut descs = Vec::new();
    for l in layers {
        descs.push(push_blob(reg, repo, layer_mt, l).await);
    }
    let body = serde_json::json!({"schemaVersion": 2, "mediaType": mt, "config": config, "layers": descs});
    push_manifest(reg, repo, tag, mt, body).await
}

/// Push a two-platform OCI index (linux/amd64 + linux/arm64) under `tag`.
pub async fn push_two_platform_index(reg: &HttpRegistry, repo: &str, tag: &str, seed: u64) -> (Pushed, Vec<Pushed>) {
    let amd = push_image(
        reg,
        repo,
        None,
        vec![random_bytes(seed, 40_000), random_bytes(seed + 1, 10_000)],
        false,
        seed,
    )
    .await;
    let arm = push_image(reg, repo, None, vec![random_bytes(seed + 2, 30_000)], false, seed + 3).await;
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_INDEX,
        "manifests": [amd.descriptor(Some(("linux", "amd64"))), arm.descriptor(Some(("linux", "arm64")))],
    });
    let idx = push_manifest(reg, repo, Some(tag), oci::OCI_INDEX, body).await;
    (idx, vec![amd, arm])
}

/// Push an OCI 1.1 artifact whose `subject` is `subject`, and maintain the referrers
/// fallback tag (`sha256-<hex>`) as a client must on a registry without the referrers
/// API (distribution 2.8).
pub async fn push_referrer(reg: &HttpRegistry, repo: &str, subject: &Pushed, artifact_type: &str, seed: u64) -> Pushed {
    let empty = push_blob(reg, repo, "application/vnd.oci.empty.v1+json", b"{}".to_vec()).await;
    let payload = push_blob(reg, repo, "application/vnd.example.payload", random_bytes(seed, 2_000)).await;
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": oci::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": empty,
        "layers": [payload],
        "subject": subject.descriptor(None),
        "annotations": {"org.example.seed": seed.to_string()},
    });
    let referrer = push_manifest(reg, repo, None, oci::OCI_MANIFEST, body).await;
    let mut entry = referrer.descriptor(None);
    entry["artifactType"] = artifact_type.into();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX, "manifests": [entry]});
    push_manifest(reg, repo, Some(&subject.digest.fallback_tag()), oci::OCI_INDEX, index).await;
    referrer
}

/// Push a cosign-style signature under the tag `sha256-<hex>.sig`.
pub async fn push_cosign_signature(reg: &HttpRegistry, repo: &str, subject: &Pushed) -> Pushed {
    let tag = format!("{}.sig", subject.digest.fallback_tag());
    let layer = push_blob(
        reg,
        repo,
        "application/vnd.dev.cosign.simplesigning.v1+json",
        random_bytes(7, 300),
    )
    .await;
    let config = push_blob(
        reg,
        repo,
        "application/vnd.oci.image.config.v1+json",
        b"{\"sig\":1}".to_vec(),
    )
    .await;
    let body =
        serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_MANIFEST, "config": config, "layers": [layer]});
    push_manifest(reg, repo, Some(&tag), oci::OCI_MANIFEST, body).await
}

/// Push an OCI image with one random layer of `layer_size` bytes under `repo:tag`.
pub async fn push_simple(reg: &HttpRegistry, repo: &str, tag: &str, layer_size: usize, seed: u64) -> Pushed {
    push_image(reg, repo, Some(tag), vec![random_bytes(seed, layer_size)], false, seed).await
}
