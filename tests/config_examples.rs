//! Every file in `examples/` loads with `regrelay::config::load` (no secret is needed:
//! the examples use anonymous or docker-config auth, read lazily), renders without
//! secrets, and its rendering loads again to the same text.

use std::path::{Path, PathBuf};

use regrelay::config::{self, SourceConfig};
use regrelay::event::{Action, Event};
use regrelay::rules::{self, Plan};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_loads_and_renders_stably() {
    let files = examples();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in ["acr-to-ar.toml", "ar-to-acr.toml", "ar-to-ar.toml", "quickstart.toml"] {
        assert!(names.iter().any(|n| n == want), "examples/{want} is missing");
    }
    for file in files {
        let cfg = config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        assert!(!cfg.rules.is_empty(), "{}: no rules", file.display());
        let rendered = config::render(&cfg);
        let again = config::load_str(&rendered, Path::new("rendered.toml"))
            .unwrap_or_else(|e| panic!("{}: rendering does not load: {e}\n{rendered}", file.display()));
        assert_eq!(config::render(&again), rendered, "{}", file.display());
    }
}

/// `regrelay check-config` prints valid TOML that loads again to the same effective
/// configuration, for every example file.
#[test]
fn check_config_output_of_every_example_loads_to_the_same_config() {
    for file in examples() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_regrelay"))
            .args(["check-config", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", file.display());
        let shown = String::from_utf8(out.stdout).unwrap();
        shown
            .parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("{}: not TOML: {e}\n{shown}", file.display()));
        let first = config::load(&file).unwrap();
        let again = config::load_str(&shown, Path::new("shown.toml"))
            .unwrap_or_else(|e| panic!("{}: check-config output does not load: {e}\n{shown}", file.display()));
        // The Debug form covers every typed setting (secrets are redacted in it, and the
        // examples name none).
        assert_eq!(format!("{again:?}"), format!("{first:?}"), "{}", file.display());
    }
}

#[test]
fn quickstart_routes_demo_images_to_the_mirror() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.toml");
    let cfg = config::load(&path).unwrap();
    let SourceConfig::PubSub(p) = &cfg.source else {
        panic!("the quickstart uses the emulator")
    };
    assert_eq!(p.endpoint.as_deref(), Some("http://127.0.0.1:8085"));
    assert_eq!(cfg.admin_listen, Some("127.0.0.1:9090".parse().unwrap()));
    let event = Event {
        action: Action::Push,
        registry: "127.0.0.1:5001".into(),
        repository: "demo/app".into(),
        tag: Some("1.0".into()),
        digest: None,
        media_type: None,
        event_id: None,
    };
    let Plan::Work(routes) = rules::plan(&cfg.rules, &event) else {
        panic!("demo/app should route")
    };
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].target_registry, "127.0.0.1:5002");
    assert_eq!(routes[0].target_repository, "mirror/demo/app");
    assert_eq!(routes[0].target_tag.as_deref(), Some("1.0"));
    let other = Event {
        repository: "other/app".into(),
        ..event
    };
    assert!(matches!(rules::plan(&cfg.rules, &other), Plan::Ignore(_)));
}

#[test]
fn artifactory_example_places_a_webhook_on_its_rule() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/artifactory-to-ar.toml");
    let cfg = config::load(&path).unwrap();
    let o = cfg.origin.as_ref().expect("[source.origin]");
    let origin = regrelay::event::Origin::new(&o.registry, &o.repository);
    let payload = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events/artifactory-docker-tag-pushed.json"),
    )
    .unwrap();
    let decoded = regrelay::event::decode(&payload, &origin).unwrap();
    let Plan::Work(routes) = rules::plan(&cfg.rules, &decoded.events[0]) else {
        panic!("the webhook matches no rule")
    };
    assert_eq!(routes[0].target_registry, "us-docker.pkg.dev");
    assert_eq!(routes[0].target_repository, "acme-prod/mirror/docker-local/team/app");
    assert_eq!(routes[0].target_tag.as_deref(), Some("1.4.2"));
}
