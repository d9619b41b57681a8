//! Promoter manifests in the Kubernetes image promoter's (cip, `kpromo cip`) format: plain
//! manifests (`registries` + `images` in one file) and thin manifest directories
//! (`manifests/<x>/promoter-manifest.yaml` + `images/<x>/images.yaml`), parsed and
//! validated with errors that name the file, the line and the field.
//!
//! Must never: do I/O beyond reading the files it is given; accept a manifest cip would
//! refuse (one source registry, at least one destination, digests `^sha256:[0-9a-f]{64}$`,
//! tags `^\w[\w.-]{0,127}$`, no empty `dmap`); silently ignore a YAML file in a thin
//! manifest directory that is not where cip reads one.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::oci::Digest;

/// Why a manifest was refused: `FILE[:LINE]: [FIELD: ]MESSAGE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The file (or directory) at fault.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// The field at fault (`images[2].dmap`), when known.
    pub field: Option<String>,
    /// What is wrong, lowercase.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Error {}

/// A registry name, `HOST[/PREFIX]`: an image `NAME` lives at `HOST/PREFIX/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryName {
    /// The registry host (`gcr.io`, `127.0.0.1:5000`).
    pub host: String,
    /// The path prefix, possibly empty.
    pub prefix: String,
}

impl RegistryName {
    /// Parse `HOST[/PREFIX]`.
    pub fn parse(s: &str) -> Result<RegistryName, String> {
        let s = s.trim_end_matches('/');
        let (host, prefix) = s.split_once('/').unwrap_or((s, ""));
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("registry name {s:?} must be HOST[/PREFIX]"));
        }
        if !prefix.is_empty() && !valid_path(prefix) {
            return Err(format!("registry name {s:?}: invalid path {prefix:?}"));
        }
        Ok(RegistryName {
            host: host.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// The repository path of image `name` under this registry.
    pub fn repository(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

impl fmt::Display for RegistryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "{}", self.host)
        } else {
            write!(f, "{}/{}", self.host, self.prefix)
        }
    }
}

/// A repository path as distribution accepts it (lowercase components separated by `/`).
fn valid_path(p: &str) -> bool {
    p.split('/').all(|c| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
    })
}

/// cip's tag rule `^\w[\w.-]{0,127}$` (`\w` is ASCII in Go's RE2).
pub fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty() && b.len() <= 128 && word(b[0]) && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// cip's digest rule `^sha256:[0-9a-f]{64}$`.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// One `registries` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// `HOST[/PREFIX]`.
    pub name: RegistryName,
    /// The source registry (exactly one per manifest).
    pub src: bool,
    /// cip's service account; accepted and not used (regrelay uses its own credentials).
    pub service_account: Option<String>,
}

/// One `images` entry: digests of image `name` and the tags each must carry (possibly
/// none: the digest is promoted untagged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The image path under every registry (no renaming).
    pub name: String,
    /// Digest → tags.
    pub dmap: BTreeMap<Digest, Vec<String>>,
    /// 1-based line of the entry, for messages.
    pub line: usize,
}

/// One manifest: a plain file, or one `<x>` of a thin manifest directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The scope errors are confined to: the file of a plain manifest, `<x>` of a thin one.
    pub scope: String,
    /// Whether a failed edge fails the whole manifest (thin directory) rather than its
    /// image (plain manifest).
    pub thin: bool,
    /// The file holding the images (for messages).
    pub images_file: PathBuf,
    /// The registries; exactly one is the source.
    pub registries: Vec<Registry>,
    /// The images.
    pub images: Vec<Image>,
    /// regrelay's extension `require:` (top level of a plain manifest or of a thin
    /// `promoter-manifest.yaml`): names of `[gates.NAME]` every destination digest must
    /// pass before its tag is written. Empty for kpromo manifests.
    pub require: Vec<String>,
    /// The file and 1-based line of `require:`, for messages.
    pub require_at: (PathBuf, usize),
}

impl Manifest {
    /// The source registry.
    pub fn source(&self) -> &RegistryName {
        // Validated at parse time: exactly one.
        &self
            .registries
            .iter()
            .find(|r| r.src)
            .expect("validated: one source")
            .name
    }

    /// The destination registries.
    pub fn destinations(&self) -> impl Iterator<Item = &RegistryName> {
        self.registries.iter().filter(|r| !r.src).map(|r| &r.name)
    }

    /// Whether any registry names a service account (regrelay ignores them).
    pub fn has_service_accounts(&self) -> bool {
        self.registries.iter().any(|r| r.service_account.is_some())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    name: String,
    #[serde(default)]
    src: bool,
    #[serde(default, rename = "service-account")]
    service_account: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    name: String,
    dmap: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlain {
    registries: Vec<RawRegistry>,
    #[serde(default)]
    require: Vec<String>,
    #[serde(default)]
    images: Vec<RawImage>,
    #[serde(default)]
    provenance: Option<yaml_serde::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThin {
    registries: Vec<RawRegistry>,
    #[serde(default)]
    require: Vec<String>,
    #[serde(default)]
    provenance: Option<yaml_serde::Value>,
    /// Deprecated in cip, where it does nothing; accepted and ignored likewise.
    #[serde(default, rename = "imagesPath")]
    #[allow(dead_code, reason = "read only to accept cip's deprecated field")]
    images_path: Option<String>,
}

/// cip's provenance policies (signature identity checks before promotion) are a gate
/// regrelay does not evaluate: refuse a manifest with one rather than promote past it.
fn no_provenance(file: &Path, text: &str, provenance: Option<&yaml_serde::Value>) -> Result<(), Error> {
    match provenance {
        None | Some(yaml_serde::Value::Null) => Ok(()),
        Some(_) => Err(Error {
            file: file.to_path_buf(),
            line: Some(key_line(text, "provenance")),
            field: Some("provenance".into()),
            message: "provenance policies are not supported: regrelay would promote without checking them; remove the policy or promote with kpromo".into(),
        }),
    }
}

/// A YAML syntax or schema error of `file`.
fn yaml_error(file: &Path, e: &yaml_serde::Error) -> Error {
    // The crate's message reads `FIELD: WHAT at line L column C`; keep the field and the
    // text, and lift the line out.
    let text = e.to_string();
    let text = match text.rfind(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    let (field, message) = match text.split_once(": ") {
        Some((f, m)) if !f.contains(' ') => (Some(f.to_string()), m.to_string()),
        _ => (None, text),
    };
    Error {
        file: file.to_path_buf(),
        line: e.location().map(|l| l.line()),
        field,
        message,
    }
}

/// The 1-based line where the `n`th (0-based) top-level list item (`- `) at the indentation
/// of the first one starts under `key` (or at the top when `key` is `None`); 1 if not found.
fn item_line(text: &str, key: Option<&str>, n: usize) -> usize {
    let mut lines = text.lines().enumerate().peekable();
    if let Some(k) = key {
        let prefix = format!("{k}:");
        for (_, l) in lines.by_ref() {
            if l.starts_with(&prefix) {
                break;
            }
        }
    }
    let mut indent = None;
    let mut seen = 0;
    for (i, l) in lines {
        let t = l.trim_start();
        let ind = l.len() - t.len();
        if t.starts_with("- ") || t == "-" {
            match indent {
                None => indent = Some(ind),
                Some(x) if x != ind => continue,
                _ => {}
            }
            if seen == n {
                return i + 1;
            }
            seen += 1;
        } else if key.is_some() && ind == 0 && !t.is_empty() && !t.starts_with('#') {
            break;
        }
    }
    1
}

/// The 1-based line of the first line of `text` starting with `key:`; 1 if none.
fn key_line(text: &str, key: &str) -> usize {
    let prefix = format!("{key}:");
    text.lines().position(|l| l.starts_with(&prefix)).map_or(1, |i| i + 1)
}

fn read(file: &Path) -> Result<String, Error> {
    std::fs::read_to_string(file).map_err(|e| Error {
        file: file.to_path_buf(),
        line: None,
        field: None,
        message: format!("cannot read: {e}"),
    })
}

fn registries(file: &Path, text: &str, raw: Vec<RawRegistry>) -> Result<Vec<Registry>, Error> {
    let err = |line, field: String, message: String| Error {
        file: file.to_path_buf(),
        line: Some(line),
        field: Some(field),
        message,
    };
    let mut out: Vec<Registry> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let line = item_line(text, Some("registries"), i);
        let name = RegistryName::parse(&r.name).map_err(|m| err(line, format!("registries[{i}].name"), m))?;
        if out.iter().any(|o| o.name == name) {
            return Err(err(
                line,
                format!("registries[{i}].name"),
                format!("{name} is listed twice"),
            ));
        }
        out.push(Registry {
            name,
            src: r.src,
            service_account: r.service_account,
        });
    }
    let line = key_line(text, "registries");
    match out.iter().filter(|r| r.src).count() {
        1 => {}
        0 => {
            return Err(err(
                line,
                "registries".into(),
                "no source registry (`src: true`)".into(),
            ));
        }
        n => {
            return Err(err(
                line,
                "registries".into(),
                format!("{n} source registries; exactly one must have `src: true`"),
            ));
        }
    }
    if out.len() < 2 {
        return Err(err(line, "registries".into(), "no destination registry".into()));
    }
    Ok(out)
}

fn images(file: &Path, text: &str, key: Option<&str>, raw: Vec<RawImage>) -> Result<Vec<Image>, Error> {
    let mut out: Vec<Image> = Vec::new();
    let base = key.map_or(String::new(), |k| k.to_string());
    for (i, img) in raw.into_iter().enumerate() {
        let line = item_line(text, key, i);
        let field = |f: &str| Some(format!("{base}[{i}]{f}"));
        let err = |f: &str, message: String| Error {
            file: file.to_path_buf(),
            line: Some(line),
            field: field(f),
            message,
        };
        if !valid_path(&img.name) {
            return Err(err(".name", format!("invalid image name {:?}", img.name)));
        }
        if out.iter().any(|o| o.name == img.name) {
            return Err(err(".name", format!("image {} is listed twice", img.name)));
        }
        if img.dmap.is_empty() {
            return Err(err(".dmap", "empty dmap: list at least one digest".into()));
        }
        let mut dmap = BTreeMap::new();
        for (d, tags) in img.dmap {
            if !valid_digest(&d) {
                return Err(err(
                    ".dmap",
                    format!("invalid digest {d:?} (want sha256:<64 lowercase hex>)"),
                ));
            }
            let digest: Digest = d.parse().map_err(|e| err(".dmap", format!("{e}")))?;
            for t in &tags {
                if !valid_tag(t) {
                    return Err(err(
                        &format!(".dmap.\"{d}\""),
                        format!("invalid tag {t:?} (want ^\\w[\\w.-]{{0,127}}$)"),
                    ));
                }
            }
            let mut tags = tags;
            tags.sort();
            tags.dedup();
            dmap.insert(digest, tags);
        }
        out.push(Image {
            name: img.name,
            dmap,
            line,
        });
    }
    Ok(out)
}

/// Parse a plain manifest file.
pub fn parse_plain(file: &Path) -> Result<Manifest, Error> {
    let text = read(file)?;
    parse_plain_str(file, &text)
}

/// Parse plain manifest `text`; `file` names it in errors.
pub fn parse_plain_str(file: &Path, text: &str) -> Result<Manifest, Error> {
    let raw: RawPlain = yaml_serde::from_str(text).map_err(|e| yaml_error(file, &e))?;
    no_provenance(file, text, raw.provenance.as_ref())?;
    let regs = registries(file, text, raw.registries)?;
    let imgs = images(file, text, Some("images"), raw.images)?;
    Ok(Manifest {
        scope: file.display().to_string(),
        thin: false,
        images_file: file.to_path_buf(),
        registries: regs,
        images: imgs,
        require: raw.require,
        require_at: (file.to_path_buf(), key_line(text, "require")),
    })
}

/// Parse a bare image list (`images.yaml`, or a snapshot).
pub fn parse_images_str(file: &Path, text: &str) -> Result<Vec<Image>, Error> {
    // An empty file is an empty list.
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Ok(Vec::new());
    }
    let raw: Vec<RawImage> = yaml_serde::from_str(text).map_err(|e| yaml_error(file, &e))?;
    images(file, text, None, raw)
}

/// Parse a bare image list file.
pub fn parse_images(file: &Path) -> Result<Vec<Image>, Error> {
    let text = read(file)?;
    parse_images_str(file, &text)
}

/// Parse a thin manifest directory: every `<x>` with both files becomes one manifest.
/// Every problem is reported (a misplaced YAML file, a `<x>` on one side only, a bad file),
/// not only the first.
pub fn parse_thin_dir(dir: &Path) -> Result<Vec<Manifest>, Vec<Error>> {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    walk(dir, &mut files, &mut errors);
    let mut manifests: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut image_files: BTreeMap<String, PathBuf> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(dir).unwrap_or(&f);
        let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
        let yaml = parts
            .last()
            .is_some_and(|n| n.ends_with(".yaml") || n.ends_with(".yml"));
        match parts.as_slice() {
            ["manifests", x, "promoter-manifest.yaml"] => {
                manifests.insert(x.to_string(), f.clone());
            }
            ["images", x, "images.yaml"] => {
                image_files.insert(x.to_string(), f.clone());
            }
            _ if yaml => errors.push(Error {
                file: f.clone(),
                line: None,
                field: None,
                message: "misplaced: thin manifests are only read from manifests/<x>/promoter-manifest.yaml and images/<x>/images.yaml".into(),
            }),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (x, mf) in &manifests {
        let Some(imf) = image_files.get(x) else {
            errors.push(Error {
                file: mf.clone(),
                line: None,
                field: None,
                message: format!("no images/{x}/images.yaml beside it (the <x> names must match)"),
            });
            continue;
        };
        match parse_thin_pair(x, mf, imf) {
            Ok(m) => out.push(m),
            Err(e) => errors.push(e),
        }
    }
    for (x, imf) in &image_files {
        if !manifests.contains_key(x) {
            errors.push(Error {
                file: imf.clone(),
                line: None,
                field: None,
                message: format!("no manifests/{x}/promoter-manifest.yaml for it (the <x> names must match)"),
            });
        }
    }
    if out.is_empty() && errors.is_empty() {
        errors.push(Error {
            file: dir.to_path_buf(),
            line: None,
            field: None,
            message: "no thin manifests (manifests/<x>/promoter-manifest.yaml) found".into(),
        });
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn parse_thin_pair(x: &str, manifest_file: &Path, images_file: &Path) -> Result<Manifest, Error> {
    let text = read(manifest_file)?;
    let raw: RawThin = yaml_serde::from_str(&text).map_err(|e| yaml_error(manifest_file, &e))?;
    no_provenance(manifest_file, &text, raw.provenance.as_ref())?;
    let regs = registries(manifest_file, &text, raw.registries)?;
    let imgs = parse_images(images_file)?;
    Ok(Manifest {
        scope: x.to_string(),
        thin: true,
        images_file: images_file.to_path_buf(),
        registries: regs,
        images: imgs,
        require: raw.require,
        require_at: (manifest_file.to_path_buf(), key_line(&text, "require")),
    })
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<Error>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.push(Error {
                file: dir.to_path_buf(),
                line: None,
                field: None,
                message: format!("cannot read the directory: {e}"),
            });
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        // Hidden entries (`.git`) are not manifests.
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
        {
            continue;
        }
        if p.is_dir() {
            walk(&p, files, errors);
        } else {
            files.push(p);
        }
    }
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
