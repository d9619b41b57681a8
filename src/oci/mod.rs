//! OCI value types: image references, digests, media types and the parts of manifests
//! that the copy engine needs (descriptors, platforms, subjects).
//!
//! Role: parsing and formatting only. This module never performs I/O, never allocates
//! more than the input it is given, and never re-serialises a manifest: manifests travel
//! through regrelay as the exact bytes a registry returned, and the types here are
//! read-only views of those bytes.
//!
//! Invariants: a [`Digest`] always holds a known algorithm and a lowercase hex string of
//! the right length; a [`Reference`] always has a registry host and a repository that
//! match the distribution-spec grammar.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use sha2::{Digest as _, Sha256, Sha512};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker v2 schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list media type.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Every manifest media type regrelay asks for, in `Accept` header order.
pub const ACCEPTED_MANIFEST_TYPES: [&str; 4] = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/// Errors from parsing references, digests and manifests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The digest is not `algorithm:hex` with a supported algorithm and length.
    #[error("invalid digest {0:?}")]
    InvalidDigest(String),
    /// The image reference does not follow `host/repository[:tag][@digest]`.
    #[error("invalid image reference {input:?}: {reason}")]
    InvalidReference {
        /// The text that failed to parse.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The manifest body is not JSON of a known shape.
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
}

/// Content digest algorithms that regrelay can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the default everywhere.
    Sha256,
    /// SHA-512, allowed by the image spec.
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A content digest such as `sha256:<64 hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// The digest of `bytes` computed with this digest's algorithm.
    pub fn recompute(&self, bytes: &[u8]) -> Digest {
        let hex = match self.algorithm {
            Algorithm::Sha256 => hex::encode(Sha256::digest(bytes)),
            Algorithm::Sha512 => hex::encode(Sha512::digest(bytes)),
        };
        Digest {
            algorithm: self.algorithm,
            hex,
        }
    }

    /// True when `bytes` hash to this digest.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        self.recompute(bytes) == *self
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// A streaming hasher for this digest's algorithm.
    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.algorithm)
    }

    /// The referrers fallback tag for this digest (`sha256-<hex>`), per the
    /// distribution spec's "referrers tag schema".
    pub fn fallback_tag(&self) -> String {
        format!("{}-{}", self.algorithm.name(), &self.hex[..self.hex.len().min(64)])
    }
}

/// The suffixes of cosign's tags beside [`Digest::fallback_tag`]: signature, attestation,
/// SBOM (`sha256-<hex>.sig`, ...).
pub const COSIGN_TAG_SUFFIXES: [&str; 3] = [".sig", ".att", ".sbom"];

/// Is `tag` one of cosign's tags for some image (`sha256-<64 lowercase hex>` followed by
/// one of [`COSIGN_TAG_SUFFIXES`])?
pub fn is_cosign_tag(tag: &str) -> bool {
    COSIGN_TAG_SUFFIXES.iter().any(|suffix| {
        tag.strip_suffix(suffix)
            .and_then(|base| base.strip_prefix("sha256-"))
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
    })
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || Error::InvalidDigest(s.chars().take(200).collect());
        let (alg, hex) = s.split_once(':').ok_or_else(bad)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(bad()),
        };
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad());
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental hasher matching a [`Digest`] algorithm.
pub enum Hasher {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state.
    Sha512(Sha512),
}

impl Hasher {
    /// A fresh hasher.
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }
    /// Feed bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }
    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        match self {
            Hasher::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Hasher::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

/// A tag or a digest: what follows the repository in a reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Locator {
    /// `:tag`
    Tag(String),
    /// `@digest`
    Digest(Digest),
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Locator::Tag(t) => f.write_str(t),
            Locator::Digest(d) => write!(f, "{d}"),
        }
    }
}

/// A fully qualified image reference: `host[:port]/repository[:tag][@digest]`.
///
/// Unlike docker's CLI, regrelay never guesses a default registry: the host is required,
/// because a replicator must never contact a host the operator did not name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host, with port if any (`registry.example.com`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`team/app`).
    pub repository: String,
    /// Tag, if given.
    pub tag: Option<String>,
    /// Digest, if given. When both are given the digest wins for reads.
    pub digest: Option<Digest>,
}

/// Maximum length of a repository path, per common registry limits.
const MAX_NAME_LEN: usize = 255;

impl Reference {
    /// A reference to `repository` on `registry` with the given locator.
    pub fn new(registry: &str, repository: &str, locator: Locator) -> Result<Reference, Error> {
        let (tag, digest) = match locator {
            Locator::Tag(t) => (Some(t), None),
            Locator::Digest(d) => (None, Some(d)),
        };
        let r = Reference {
            registry: registry.into(),
            repository: repository.into(),
            tag,
            digest,
        };
        r.validate(&r.to_string())?;
        Ok(r)
    }

    /// What to read from the registry: the digest when known, else the tag, else `latest`
    /// is *not* assumed: `None` means the reference names no manifest.
    pub fn locator(&self) -> Option<Locator> {
        match (&self.digest, &self.tag) {
            (Some(d), _) => Some(Locator::Digest(d.clone())),
            (None, Some(t)) => Some(Locator::Tag(t.clone())),
            (None, None) => None,
        }
    }

    /// The same repository with another locator.
    pub fn with_locator(&self, locator: Locator) -> Reference {
        let (tag, digest) = match locator {
            Locator::Tag(t) => (Some(t), None),
            Locator::Digest(d) => (None, Some(d)),
        };
        Reference {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            tag,
            digest,
        }
    }

    fn validate(&self, input: &str) -> Result<(), Error> {
        let bad = |reason| Error::InvalidReference {
            input: input.chars().take(300).collect(),
            reason,
        };
        if self.registry.is_empty() || !valid_host(&self.registry) {
            return Err(bad("registry host is missing or invalid"));
        }
        if self.repository.is_empty() || self.repository.len() > MAX_NAME_LEN {
            return Err(bad("repository is empty or too long"));
        }
        if !self.repository.split('/').all(valid_path_component) {
            return Err(bad("repository must be lowercase path components [a-z0-9._-]"));
        }
        if let Some(t) = &self.tag
            && !valid_tag(t)
        {
            return Err(bad("tag must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}"));
        }
        Ok(())
    }
}

/// Docker Hub as written in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API is served from.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// Is `host` one of Docker Hub's names (`docker.io`, `index.docker.io`,
/// `registry-1.docker.io`)?
pub fn is_docker_hub(host: &str) -> bool {
    matches!(host, DOCKER_HUB | "index.docker.io" | DOCKER_HUB_API)
}

/// Docker Hub's naming rule: a one-segment repository on Docker Hub is an official image
/// under `library/` (`docker.io/node` is `docker.io/library/node`). Other names unchanged.
pub fn hub_repository(registry: &str, repository: &str) -> String {
    if is_docker_hub(registry) && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository.to_string()
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |reason| Error::InvalidReference {
            input: input.chars().take(300).collect(),
            reason,
        };
        let s = input.trim();
        let s = s.strip_prefix("docker://").unwrap_or(s);
        let (rest, digest) = match s.rsplit_once('@') {
            Some((l, r)) => (
                l,
                Some(r.parse::<Digest>().map_err(|_| bad("digest after '@' is invalid"))?),
            ),
            None => (s, None),
        };
        let (registry, path) = rest.split_once('/').ok_or_else(|| bad("expected HOST/REPOSITORY"))?;
        // The tag separator is the last ':' after the last '/', so ports in hosts are safe.
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_owned())),
            _ => (path, None),
        };
        let r = Reference {
            registry: registry.to_owned(),
            repository: hub_repository(registry, repository),
            tag,
            digest,
        };
        r.validate(input)?;
        Ok(r)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// A registry host with optional port, as written in references: `[A-Za-z0-9.-]` (at
/// most 253 characters) or a bracketed IPv6 literal, then an optional `:PORT`. No scheme,
/// no path.
pub fn valid_host(h: &str) -> bool {
    let (name, port) = match h.rsplit_once(':') {
        Some((n, p)) if !n.starts_with('[') || n.ends_with(']') => (n, Some(p)),
        _ => (h, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    let name_ok = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }
    };
    port_ok && name_ok
}

/// The repository name grammar (distribution's reference.go): lowercase `[a-z0-9]`
/// components joined by `.`, `_`, `__` or runs of `-`, separated by `/`, at most 255
/// characters.
pub fn valid_repository(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('/').all(valid_path_component)
}

fn valid_path_component(c: &str) -> bool {
    // [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// True when `t` is a valid tag.
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

/// A platform as found in an index entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct Platform {
    /// CPU architecture (`amd64`, `arm64`).
    #[serde(default)]
    pub architecture: String,
    /// Operating system (`linux`).
    #[serde(default)]
    pub os: String,
    /// Architecture variant (`v8`).
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    /// Does this platform match a filter such as `linux/arm64` or `linux/arm64/v8`?
    pub fn matches(&self, filter: &str) -> bool {
        let mut parts = filter.split('/');
        let os = parts.next().unwrap_or_default();
        let arch = parts.next().unwrap_or_default();
        let variant = parts.next();
        self.os == os && self.architecture == arch && variant.is_none_or(|v| self.variant.as_deref() == Some(v))
    }
}

/// A content descriptor: media type, digest and size of a referenced object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(default)]
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Platform, for index entries.
    #[serde(default)]
    pub platform: Option<Platform>,
    /// Artifact type, for referrers.
    #[serde(default)]
    pub artifact_type: Option<String>,
    /// External URLs: such blobs are "foreign" and are not copied.
    #[serde(default)]
    pub urls: Option<Vec<String>>,
}

/// The fields of a manifest or index that the copy engine walks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    subject: Option<Descriptor>,
}

/// A parsed view of a manifest: what it points to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manifest {
    /// An image (or artifact) manifest: blobs.
    Image {
        /// Config blob.
        config: Descriptor,
        /// Layer blobs (and artifact blobs).
        layers: Vec<Descriptor>,
        /// The manifest this one refers to, for referrers.
        subject: Option<Descriptor>,
    },
    /// An index / manifest list: child manifests.
    Index {
        /// Child manifests.
        manifests: Vec<Descriptor>,
        /// The manifest this index refers to, for referrers.
        subject: Option<Descriptor>,
    },
}

impl Manifest {
    /// Parse the manifest bytes served with `media_type` (the `Content-Type`, which may be
    /// empty or generic; the body's own `mediaType` and shape decide then).
    pub fn parse(media_type: &str, bytes: &[u8]) -> Result<Manifest, Error> {
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| Error::InvalidManifest(e.to_string()))?;
        if raw.schema_version == Some(1) {
            return Err(Error::InvalidManifest(
                "docker schema 1 manifests are not supported".into(),
            ));
        }
        let declared = raw.media_type.as_deref().unwrap_or(media_type);
        let is_index = declared == OCI_INDEX
            || declared == DOCKER_MANIFEST_LIST
            || (raw.manifests.is_some() && raw.config.is_none());
        if is_index {
            return Ok(Manifest::Index {
                manifests: raw.manifests.unwrap_or_default(),
                subject: raw.subject,
            });
        }
        match raw.config {
            Some(config) => Ok(Manifest::Image {
                config,
                layers: raw.layers.unwrap_or_default(),
                subject: raw.subject,
            }),
            None => Err(Error::InvalidManifest("neither a config nor a manifests list".into())),
        }
    }

    /// The manifest's subject, if it is a referrer.
    pub fn subject(&self) -> Option<&Descriptor> {
        match self {
            Manifest::Image { subject, .. } | Manifest::Index { subject, .. } => subject.as_ref(),
        }
    }
}

/// The media type declared inside a manifest body, if any.
pub fn declared_media_type(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<RawManifest>(bytes).ok()?.media_type
}

/// Is `media_type` one of the manifest types regrelay copies as a manifest?
pub fn is_manifest_type(media_type: &str) -> bool {
    ACCEPTED_MANIFEST_TYPES.contains(&media_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "2c983205795bbf038b585fa925adeb03a8d47c4d2729ea7a4a6fdba32d9ef752";

    #[test]
    fn name_grammar_is_the_configs_too() {
        assert!(valid_repository("mirror/a"));
        assert!(valid_repository("a__b/c-d--e/f.g"));
        assert!(!valid_repository("Mirror/a") && !valid_repository("a//b") && !valid_repository("a/"));
        assert!(!valid_repository("a___b") && !valid_repository("-a") && !valid_repository("a.-b"));
        assert!(valid_tag("v1.2_3-x") && valid_tag("_x") && !valid_tag("-x") && !valid_tag(""));
        assert!(valid_host("us-docker.pkg.dev") && valid_host("127.0.0.1:5001") && valid_host("[::1]:5000"));
        assert!(!valid_host("https://x") && !valid_host("a/b") && !valid_host("a:b") && !valid_host(""));
        assert!(valid_host("[::1]") && !valid_host("[nope]:5000") && !valid_host("a[b"));
    }

    #[test]
    fn digest_round_trip_and_rejects_garbage() {
        let d: Digest = format!("sha256:{HEX}").parse().unwrap();
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        assert_eq!(d.fallback_tag(), format!("sha256-{HEX}"));
        for bad in [
            "sha256:",
            "md5:abc",
            "sha256:XYZ",
            &format!("sha256:{}", &HEX[1..]),
            &format!("sha256:{}", HEX.to_uppercase()),
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn digest_of_bytes() {
        let d = Digest::sha256_of(b"");
        assert_eq!(
            d.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(d.matches(b""));
        assert!(!d.matches(b"x"));
    }

    #[test]
    fn reference_forms() {
        let r: Reference = "us-west1-docker.pkg.dev/proj/repo/team/app:1.1".parse().unwrap();
        assert_eq!(r.registry, "us-west1-docker.pkg.dev");
        assert_eq!(r.repository, "proj/repo/team/app");
        assert_eq!(r.tag.as_deref(), Some("1.1"));
        let r: Reference = format!("127.0.0.1:5000/app@sha256:{HEX}").parse().unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "app");
        assert!(r.tag.is_none());
        assert_eq!(r.digest.as_ref().unwrap().hex(), HEX);
        let r: Reference = format!("localhost:5000/a/b:v1@sha256:{HEX}").parse().unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert!(matches!(r.locator(), Some(Locator::Digest(_))));
        let r: Reference = "docker://reg.example/app".parse().unwrap();
        assert_eq!(r.locator(), None);
        assert_eq!(r.to_string(), "reg.example/app");
    }

    #[test]
    fn reference_rejects_bad_input() {
        for bad in [
            "app:v1",
            "reg.example/App:v1",
            "reg.example/app:-bad",
            "reg.example/a//b",
            "reg.example/app@sha256:zz",
            "host:notaport/app",
            "",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn path_components() {
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "0abc"] {
            assert!(valid_path_component(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a___b", "a.-b", "A"] {
            assert!(!valid_path_component(bad), "{bad}");
        }
    }

    #[test]
    fn platform_filter() {
        let p = Platform {
            architecture: "arm64".into(),
            os: "linux".into(),
            variant: Some("v8".into()),
        };
        assert!(p.matches("linux/arm64"));
        assert!(p.matches("linux/arm64/v8"));
        assert!(!p.matches("linux/arm64/v7"));
        assert!(!p.matches("linux/amd64"));
    }

    #[test]
    fn parses_image_and_index() {
        let img = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"c","digest":"sha256:{HEX}","size":2}},"layers":[{{"mediaType":"l","digest":"sha256:{HEX}","size":3}}]}}"#
        );
        match Manifest::parse("", img.as_bytes()).unwrap() {
            Manifest::Image {
                layers,
                config,
                subject,
            } => {
                assert_eq!(layers.len(), 1);
                assert_eq!(config.size, 2);
                assert!(subject.is_none());
            }
            other => panic!("expected image, got {other:?}"),
        }
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"sha256:{HEX}","size":5,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        match Manifest::parse(DOCKER_MANIFEST_LIST, idx.as_bytes()).unwrap() {
            Manifest::Index { manifests, .. } => {
                assert_eq!(manifests[0].platform.as_ref().unwrap().architecture, "amd64")
            }
            other => panic!("expected index, got {other:?}"),
        }
        assert!(Manifest::parse("", b"not json").is_err());
        assert!(Manifest::parse("", br#"{"schemaVersion":1,"fsLayers":[]}"#).is_err());
        assert!(Manifest::parse("", br#"{"schemaVersion":2}"#).is_err());
    }

    #[test]
    fn docker_hub_one_segment_names_get_library_issue_14() {
        let r: Reference = "docker.io/node:22".parse().unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/node")
        );
        let r: Reference = "docker.io/bitnami/redis:7".parse().unwrap();
        assert_eq!(r.repository, "bitnami/redis");
        let r: Reference = "reg.example/node:22".parse().unwrap();
        assert_eq!(r.repository, "node");
    }
}
