use super::*;

const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn plain(text: &str) -> Result<Manifest, Error> {
    parse_plain_str(Path::new("m.yaml"), text)
}

fn good() -> String {
    format!(
        "registries:\n- name: gcr.io/staging\n  src: true\n- name: us.gcr.io/prod/sub\n  service-account: sa@x.iam.gserviceaccount.com\nimages:\n- name: apple\n  dmap:\n    \"{D1}\": [\"1.0\", \"latest\"]\n- name: pear/x\n  dmap:\n    \"{D2}\": []\n"
    )
}

#[test]
fn parses_a_plain_manifest() {
    let m = plain(&good()).unwrap();
    assert_eq!(m.source().to_string(), "gcr.io/staging");
    let dst: Vec<String> = m.destinations().map(ToString::to_string).collect();
    assert_eq!(dst, ["us.gcr.io/prod/sub"]);
    assert_eq!(m.destinations().next().unwrap().repository("apple"), "prod/sub/apple");
    assert!(m.has_service_accounts());
    assert_eq!(m.images.len(), 2);
    assert_eq!(m.images[0].dmap[&D1.parse().unwrap()], ["1.0", "latest"]);
    assert!(m.images[1].dmap[&D2.parse().unwrap()].is_empty());
    assert_eq!(m.images[1].line, 10);
}

#[test]
fn exactly_one_source_and_a_destination() {
    let none = good().replace("  src: true\n", "");
    let e = plain(&none).unwrap_err();
    assert_eq!((e.line, e.field.as_deref()), (Some(1), Some("registries")));
    assert!(e.message.contains("no source"), "{e}");
    let two = good().replace("  service-account: sa@x.iam.gserviceaccount.com\n", "  src: true\n");
    assert!(plain(&two).unwrap_err().message.contains("2 source registries"));
    let lonely = good().replace(
        "- name: us.gcr.io/prod/sub\n  service-account: sa@x.iam.gserviceaccount.com\n",
        "",
    );
    assert!(plain(&lonely).unwrap_err().message.contains("no destination"));
}

#[test]
fn bad_digests_tags_and_empty_dmaps_name_file_line_and_field() {
    let bad = good().replace(D2, "sha256:ABC");
    let e = plain(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        "m.yaml:10: images[1].dmap: invalid digest \"sha256:ABC\" (want sha256:<64 lowercase hex>)"
    );
    let bad = good().replace("\"latest\"", "\"-latest\"");
    let e = plain(&bad).unwrap_err();
    assert_eq!(e.line, Some(7));
    assert_eq!(e.field, Some(format!("images[0].dmap.\"{D1}\"")));
    assert!(e.message.contains("invalid tag \"-latest\""), "{e}");
    let long = "a".repeat(129);
    assert!(plain(&good().replace("\"1.0\"", &format!("\"{long}\""))).is_err());
    assert!(plain(&good().replace("\"1.0\"", &format!("\"{}\"", &long[..128]))).is_ok());
    let empty = good().replace(&format!("  dmap:\n    \"{D2}\": []\n"), "  dmap: {}\n");
    let e = plain(&empty).unwrap_err();
    assert_eq!((e.line, e.field.as_deref()), (Some(10), Some("images[1].dmap")));
    assert!(e.message.contains("empty dmap"));
}

#[test]
fn malformed_yaml_and_unknown_fields_name_the_line() {
    let e = plain("registries:\n- name: a\n  src: true\n   bad: [\n").unwrap_err();
    assert_eq!(e.file, Path::new("m.yaml"));
    assert!(e.line.is_some(), "{e}");
    let e = plain(&good().replace("  src: true\n", "  src: true\n  srcc: 1\n")).unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    assert_eq!(e.field.as_deref(), Some("registries[0]"), "{e}");
    assert!(e.message.contains("srcc"), "{e}");
    let e = plain(&good().replace("[\"1.0\", \"latest\"]", "7")).unwrap_err();
    assert_eq!(e.line, Some(9), "{e}");
}

#[test]
fn duplicate_images_and_registries_are_refused() {
    let dup = format!("{}- name: apple\n  dmap:\n    \"{D2}\": []\n", good());
    assert!(plain(&dup).unwrap_err().message.contains("listed twice"));
    let dup = good().replace("us.gcr.io/prod/sub", "gcr.io/staging");
    assert!(plain(&dup).unwrap_err().message.contains("listed twice"));
}

#[test]
fn tag_and_digest_rules_match_cip() {
    for t in ["v1", "1.0", "_x", "a-b.c_d", "A"] {
        assert!(valid_tag(t), "{t}");
    }
    for t in ["", "-a", ".a", "a/b", "a:b", "ä"] {
        assert!(!valid_tag(t), "{t}");
    }
    assert!(valid_digest(D1));
    assert!(!valid_digest(&D1.to_uppercase()));
    assert!(!valid_digest(&D1[..70]));
    assert!(!valid_digest(&D1.replace("sha256", "sha512")));
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const REGS: &str = "registries:\n- name: gcr.io/staging-a\n  src: true\n- name: gcr.io/prod\n";

#[test]
fn thin_manifest_directories() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "manifests/a/promoter-manifest.yaml", REGS);
    write(
        d.path(),
        "images/a/images.yaml",
        &format!("- name: x\n  dmap:\n    \"{D1}\": [\"v1\"]\n"),
    );
    write(d.path(), "README.md", "not yaml");
    let ms = parse_thin_dir(d.path()).unwrap();
    assert_eq!(ms.len(), 1);
    assert_eq!((ms[0].scope.as_str(), ms[0].thin), ("a", true));
    assert_eq!(ms[0].images[0].name, "x");

    // A misplaced file and a <x> on one side only are each reported.
    write(d.path(), "images/a/extra.yaml", "- name: y\n");
    write(d.path(), "manifests/b/promoter-manifest.yaml", REGS);
    write(d.path(), "images/c/images.yaml", "");
    let errs = parse_thin_dir(d.path()).unwrap_err();
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 3, "{text:?}");
    assert!(
        text.iter()
            .any(|e| e.contains("images/a/extra.yaml") && e.contains("misplaced")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|e| e.contains("manifests/b/promoter-manifest.yaml") && e.contains("images/b/images.yaml")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|e| e.contains("images/c/images.yaml") && e.contains("manifests/c/")),
        "{text:?}"
    );
}

#[test]
fn thin_image_errors_name_the_images_file() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "manifests/a/promoter-manifest.yaml", REGS);
    write(
        d.path(),
        "images/a/images.yaml",
        &format!("- name: x\n  dmap:\n    \"{D1}\": [\"v1\"]\n- name: y\n  dmap: {{}}\n"),
    );
    let errs = parse_thin_dir(d.path()).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].file.ends_with("images/a/images.yaml"));
    assert_eq!((errs[0].line, errs[0].field.as_deref()), (Some(4), Some("[1].dmap")));
    // images: inside a thin promoter-manifest.yaml is not cip's layout.
    write(
        d.path(),
        "manifests/a/promoter-manifest.yaml",
        &format!("{REGS}images: []\n"),
    );
    let errs = parse_thin_dir(d.path()).unwrap_err();
    assert!(errs[0].message.contains("images"), "{:?}", errs[0]);
}

#[test]
fn provenance_policies_are_refused_and_images_path_is_ignored() {
    let with = format!("{}provenance:\n  enabled: true\n", good());
    let e = plain(&with).unwrap_err();
    assert_eq!((e.line, e.field.as_deref()), (Some(13), Some("provenance")));
    assert!(e.message.contains("not supported"), "{e}");
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "manifests/a/promoter-manifest.yaml",
        &format!("{REGS}imagesPath: ../images/a\n"),
    );
    write(
        d.path(),
        "images/a/images.yaml",
        &format!("- name: x\n  dmap:\n    \"{D1}\": [\"v1\"]\n"),
    );
    assert_eq!(parse_thin_dir(d.path()).unwrap().len(), 1);
    write(
        d.path(),
        "manifests/a/promoter-manifest.yaml",
        &format!("{REGS}provenance:\n  enabled: true\n"),
    );
    let errs = parse_thin_dir(d.path()).unwrap_err();
    assert_eq!(errs[0].field.as_deref(), Some("provenance"));
}

#[test]
fn require_is_regrelays_optional_extension_with_its_line() {
    // A kpromo manifest has none.
    let m = plain(&good()).unwrap();
    assert!(m.require.is_empty());
    let text = good().replace("images:\n", "require: [cosign, smoke]\nimages:\n");
    let m = plain(&text).unwrap();
    assert_eq!(m.require, ["cosign", "smoke"]);
    assert_eq!(m.require_at, (PathBuf::from("m.yaml"), 6));
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "manifests/a/promoter-manifest.yaml",
        "registries:\n- name: gcr.io/s\n  src: true\n- name: us.gcr.io/p\nrequire:\n- smoke\n",
    );
    write(
        dir.path(),
        "images/a/images.yaml",
        &format!("- name: apple\n  dmap:\n    \"{D1}\": [\"1.0\"]\n"),
    );
    let ms = parse_thin_dir(dir.path()).unwrap();
    assert_eq!(ms[0].require, ["smoke"]);
    assert_eq!(ms[0].require_at.1, 5);
}
