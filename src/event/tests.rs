//! Decoder tests shared by every payload family: the fixtures in
//! `tests/fixtures/events/` (payloads in each registry's documented shape), the Artifact
//! Registry and ACR forms, batches, and the no-panic sweep over every decoder.

use super::*;

/// The digest most fixtures name.
pub(super) const HEX: &str = "2c983205795bbf038b585fa925adeb03a8d47c4d2729ea7a4a6fdba32d9ef752";
pub(super) const D: &str = "sha256:2c983205795bbf038b585fa925adeb03a8d47c4d2729ea7a4a6fdba32d9ef752";

/// Every fixture in `tests/fixtures/events/`.
pub(super) const FIXTURES: [&str; 20] = [
    "gcr-insert-tag.json",
    "gcr-insert-digest-only.json",
    "gcr-delete.json",
    "ar-insert.json",
    "ar-insert-digest-only.json",
    "ar-delete-tag.json",
    "pubsub-push-envelope-ar-insert.json",
    "acr-eventgrid-imagepushed.json",
    "acr-cloudevents-imagepushed.json",
    "acr-eventgrid-imagedeleted.json",
    "acr-eventgrid-chartpushed.json",
    "distribution-notification.json",
    "distribution-two-images.json",
    "harbor-push.json",
    "harbor-push-cloudevents.json",
    "harbor-delete-two-artifacts.json",
    "artifactory-docker-tag-pushed.json",
    "artifactory-docker-tag-deleted.json",
    "artifactory-docker-tag-promoted.json",
    "cloudevent-generic-structured.json",
];

/// The bytes of fixture `name`.
pub(super) fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// No `[source.origin]`.
pub(super) fn none() -> Origin {
    Origin::none()
}

/// The single event `p` decodes to (no origin).
pub(super) fn event(p: &str) -> Event {
    match decode(p.as_bytes(), &none()) {
        Ok(Decoded { mut events, .. }) if events.len() == 1 => events.remove(0),
        other => panic!("expected one event, got {other:?}"),
    }
}

#[test]
fn every_fixture_is_listed_and_decodes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|s| (*s).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "FIXTURES and tests/fixtures/events/ differ");
    // With an origin for the host-less ones, each fixture decodes to something.
    let origin = Origin::new("acme.jfrog.io", "{repository}");
    for name in FIXTURES {
        let d = decode(&fixture(name), &origin).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!d.events.is_empty() || !d.ignored.is_empty(), "{name}");
        for e in &d.events {
            check_reference("test", &e.registry, &e.repository, e.tag.as_deref())
                .unwrap_or_else(|err| panic!("{name}: {err}"));
        }
    }
}

#[test]
fn artifact_registry_and_gcr_fixtures() {
    let e = &decode(&fixture("ar-insert.json"), &none()).unwrap().events[0];
    assert_eq!(e.action, Action::Push);
    assert_eq!(e.registry, "us-east1-docker.pkg.dev");
    assert_eq!(e.repository, "example-project/example-repo/team/app");
    assert_eq!(e.tag.as_deref(), Some("1.4.2"));
    assert_eq!(e.digest.as_ref().unwrap().to_string(), D);
    let e = &decode(&fixture("ar-insert-digest-only.json"), &none()).unwrap().events[0];
    assert_eq!((e.action, e.tag.as_deref()), (Action::Push, None));
    let e = &decode(&fixture("ar-delete-tag.json"), &none()).unwrap().events[0];
    assert_eq!((e.action, e.tag.as_deref()), (Action::DeleteTag, Some("old")));
    let e = &decode(&fixture("gcr-delete.json"), &none()).unwrap().events[0];
    assert_eq!((e.action, e.registry.as_str()), (Action::DeleteManifest, "gcr.io"));
    assert_eq!(
        event(&String::from_utf8(fixture("gcr-insert-tag.json")).unwrap()).repository,
        "example-project/team/app"
    );
}

#[test]
fn bare_tag_belongs_to_the_digest_repository_and_ports_are_not_tags() {
    let e = event(&format!(
        r#"{{"action":"INSERT","digest":"localhost:5000/app@{D}","tag":"v1.0.0"}}"#
    ));
    assert_eq!((e.registry.as_str(), e.repository.as_str()), ("localhost:5000", "app"));
    assert_eq!(e.tag.as_deref(), Some("v1.0.0"));
    let e = event(r#"{"action":"DELETE","tag":"localhost:5000/team/app:v2"}"#);
    assert_eq!(e.registry, "localhost:5000");
    assert_eq!(e.repository, "team/app");
}

#[test]
fn acr_event_grid_and_cloudevents_fixtures_and_batches() {
    let eg = String::from_utf8(fixture("acr-eventgrid-imagepushed.json")).unwrap();
    let ce = String::from_utf8(fixture("acr-cloudevents-imagepushed.json")).unwrap();
    for p in [eg.clone(), ce.clone(), format!("[{eg}]")] {
        let e = event(&p);
        assert_eq!(e.action, Action::Push);
        assert_eq!(e.registry, "exampleregistry.azurecr.io");
        assert_eq!(e.repository, "team/app");
        assert_eq!(e.tag.as_deref(), Some("1.4.2"));
        assert_eq!(e.event_id.as_deref(), Some("831e1650-001e-001b-66ab-eeb76e069631"));
    }
    // An Event Grid (or CloudEvents) batch: every event, in order.
    let del = String::from_utf8(fixture("acr-eventgrid-imagedeleted.json")).unwrap();
    let d = decode(format!("[{eg},{del}]").as_bytes(), &none()).unwrap();
    let actions: Vec<Action> = d.events.iter().map(|e| e.action).collect();
    assert_eq!(actions, [Action::Push, Action::DeleteManifest]);
    let chart = decode(&fixture("acr-eventgrid-chartpushed.json"), &none()).unwrap();
    assert!(chart.events.is_empty() && chart.ignored[0].contains("Helm chart"));
}

#[test]
fn generic_cloudevent_naming_only_team_app_needs_an_origin() {
    // Before [source.origin], "team" was taken for the registry host.
    let err = decode(&fixture("cloudevent-generic-structured.json"), &none()).unwrap_err();
    assert!(matches!(err, DecodeError::NoHost(_)), "{err}");
    assert!(err.to_string().contains("[source.origin]"), "{err}");
    let origin = Origin::new("registry.example.com", "{repository}");
    let d = decode(&fixture("cloudevent-generic-structured.json"), &origin).unwrap();
    let e = &d.events[0];
    assert_eq!(
        (e.registry.as_str(), e.repository.as_str()),
        ("registry.example.com", "team/app")
    );
    assert_eq!((e.action, e.tag.as_deref()), (Action::Push, Some("1.4.2")));
    assert_eq!(e.event_id.as_deref(), Some("0b8c2f6e-6f1a-4d8b-9c3e-5a7d1e2f3a4b"));
}

#[test]
fn malformed_payloads_are_errors_never_panics() {
    let huge = vec![b' '; MAX_PAYLOAD_BYTES + 1];
    assert_eq!(
        decode(&huge, &none()),
        Err(DecodeError::TooLarge(MAX_PAYLOAD_BYTES + 1))
    );
    let cases: Vec<String> = vec![
        "not json".into(),
        "{}".into(),
        "[]".into(),
        "[{},{}]".into(),
        "[[]]".into(),
        "42".into(),
        r#"{"action":"INSERT"}"#.into(),
        r#"{"action":"INSERT","digest":"gcr.io/p/app:latest"}"#.into(),
        r#"{"action":"INSERT","digest":"gcr.io/p/app@sha256:abc"}"#.into(),
        format!(r#"{{"action":"INSERT","digest":"gcr.io/p/a@{D}","tag":"gcr.io/p/b:1"}}"#),
        r#"{"action":"UPSERT","tag":"gcr.io/p/a:1"}"#.into(),
        r#"{"action":"DELETE","tag":"../../etc:1"}"#.into(),
        r#"{"eventType":"Microsoft.ContainerRegistry.ImagePushed","data":{}}"#.into(),
        r#"{"eventType":"Microsoft.ContainerRegistry.ImagePushed","data":{"target":{"repository":"Bad Repo","tag":"1"},"request":{"host":"r.azurecr.io"}}}"#.into(),
        r#"{"eventType":"Microsoft.ContainerRegistry.Something","data":{}}"#.into(),
        r#"{"specversion":"1.0","type":"x"}"#.into(),
        r#"{"action":"push","repository":"noslash"}"#.into(),
        r#"{"action":["push"]}"#.into(),
        r#"{"events":[{"action":"push"}]}"#.into(),
        r#"{"events":[{"action":"teleport","target":{}}]}"#.into(),
        r#"{"domain":"docker","event_type":"pushed"}"#.into(),
        r#"{"domain":"docker","event_type":"pushed","data":{"repo_key":"k","image_name":"a","tag":"1"}}"#.into(),
        r#"{"type":"PUSH_ARTIFACT","event_data":{}}"#.into(),
        r#"{"type":"PUSH_ARTIFACT","event_data":{"resources":[{"tag":"1"}]}}"#.into(),
        r#"{"message":{"data":"e30="},"subscription":"s"}"#.into(),
    ];
    for c in cases {
        assert!(decode(c.as_bytes(), &none()).is_err(), "{c} should not decode");
    }
    let origin = Origin::new("{repo_key}.r.example", "{repo_key}/{image_name}/{repository}");
    // Arbitrary bytes: no panic.
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..2000 {
        let len = rng.usize(0..200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let _ = decode(&bytes, &origin);
    }
    // Every decoder, reached through its fixture, then fed mutations: truncations, byte
    // flips, and values swapped for other JSON types. No panic, whatever comes out.
    let junk = [
        "null",
        "[]",
        "{}",
        "0",
        "\"\"",
        "\"a/../b\"",
        "\"{repo_key}\"",
        "[[[[1]]]]",
        "true",
    ];
    for name in FIXTURES {
        let base = fixture(name);
        for _ in 0..300 {
            let mut b = base.clone();
            match rng.u8(0..3) {
                0 => b.truncate(rng.usize(0..b.len())),
                1 => {
                    for _ in 0..rng.usize(1..4) {
                        let i = rng.usize(0..b.len());
                        b[i] = rng.u8(..);
                    }
                }
                _ => {
                    // Replace one string value ("…") with a value of another type.
                    let text = String::from_utf8_lossy(&b).into_owned();
                    let quotes: Vec<usize> = text
                        .match_indices(": \"")
                        .map(|(i, _)| i + 2)
                        .chain(text.match_indices(":\"").map(|(i, _)| i + 1))
                        .collect();
                    if let Some(&start) = quotes.get(rng.usize(0..quotes.len().max(1)))
                        && let Some(len) = text[start + 1..].find('"')
                    {
                        let j = junk[rng.usize(0..junk.len())];
                        b = format!("{}{j}{}", &text[..start], &text[start + len + 2..]).into_bytes();
                    }
                }
            }
            let _ = decode(&b, &origin);
            let _ = decode(&b, &none());
        }
    }
}
