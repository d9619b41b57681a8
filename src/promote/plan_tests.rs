use super::*;
use crate::promote::manifest::parse_plain_str;
use std::path::Path;

fn d(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64)).parse().unwrap()
}

fn manifest(images: &str) -> Manifest {
    let text = format!("registries:\n- name: src.io/stage\n  src: true\n- name: dst.io/prod\nimages:\n{images}");
    parse_plain_str(Path::new("m.yaml"), &text).unwrap()
}

fn img(name: &str, entries: &[(char, &[&str])]) -> String {
    let mut s = format!("- name: {name}\n  dmap:\n");
    for (c, tags) in entries {
        let tags: Vec<String> = tags.iter().map(|t| format!("{t:?}")).collect();
        s += &format!("    \"{}\": [{}]\n", d(*c), tags.join(", "));
    }
    s
}

fn dst_tag(inv: &mut Inventory, repo: &str, tag: &str, c: char) {
    inv.tags
        .insert(("dst.io".into(), format!("prod/{repo}"), tag.into()), d(c));
}

fn has(inv: &mut Inventory, host: &str, repo: &str, c: char, present: bool) {
    inv.digests.insert((host.into(), repo.into(), d(c)), present);
}

#[test]
fn every_edge_kind() {
    let m = manifest(
        &[
            img("copy", &[('1', &["v1"])]),
            img("tag", &[('2', &["v2"])]),
            img("skip", &[('3', &["v3"])]),
            img("lost", &[('4', &["v4"])]),
            img("move", &[('5', &["v5"])]),
            img("over", &[('6', &["same"]), ('7', &["same", "other"])]),
            img("untagged", &[('8', &[])]),
        ]
        .concat(),
    );
    let mut inv = Inventory::default();
    has(&mut inv, "src.io", "stage/copy", '1', true);
    has(&mut inv, "dst.io", "prod/copy", '1', false);
    has(&mut inv, "dst.io", "prod/tag", '2', true);
    dst_tag(&mut inv, "skip", "v3", '3');
    has(&mut inv, "src.io", "stage/lost", '4', false);
    dst_tag(&mut inv, "move", "v5", '9');
    has(&mut inv, "dst.io", "prod/untagged", '8', true);
    let p = plan(edges(&[m]), &inv, &Unreadable::new(), false, false);
    let names: Vec<(String, Option<String>, &str)> = p
        .iter()
        .map(|p| (p.edge.image.clone(), p.edge.tag.clone(), p.action.name()))
        .collect();
    let want = [
        ("copy", Some("v1"), "copy"),
        ("tag", Some("v2"), "tag"),
        ("skip", Some("v3"), "skip"),
        ("lost", Some("v4"), "lost"),
        ("move", Some("v5"), "tag-move"),
        ("over", Some("same"), "overlap"),
        ("over", Some("other"), "copy"),
        ("over", Some("same"), "overlap"),
        ("untagged", None, "skip"),
    ];
    let want: Vec<(String, Option<String>, &str)> = want
        .iter()
        .map(|(i, t, a)| (i.to_string(), t.map(str::to_string), *a))
        .collect();
    assert_eq!(names, want);
    assert_eq!(
        p[4].action,
        Action::TagMove {
            from: d('9'),
            allowed: false
        }
    );
    assert_eq!(p[5].action, Action::Overlap { with: vec![d('7')] });
    // Scoped: only the overlapping image's other edge is held.
    assert!(
        p[6].held.as_deref().unwrap().contains("m.yaml: over"),
        "{:?}",
        p[6].held
    );
    assert!(p[0].held.is_none() && p[1].held.is_none());
}

#[test]
fn allowed_tag_moves_proceed_and_fail_fast_holds_everything() {
    let m = manifest(
        &[
            img("move", &[('5', &["v5"])]),
            img("lost", &[('4', &["v4"])]),
            img("ok", &[('1', &["v1"])]),
        ]
        .concat(),
    );
    let mut inv = Inventory::default();
    dst_tag(&mut inv, "move", "v5", '9');
    has(&mut inv, "src.io", "stage/lost", '4', false);
    let p = plan(edges(std::slice::from_ref(&m)), &inv, &Unreadable::new(), true, false);
    assert_eq!(
        p[0].action,
        Action::TagMove {
            from: d('9'),
            allowed: true
        }
    );
    assert!(p[0].action.is_pending() && !p[0].action.is_error());
    assert!(p[2].held.is_none());
    let p = plan(edges(&[m]), &inv, &Unreadable::new(), true, true);
    assert!(p[0].held.as_deref().unwrap().contains("--fail-fast"));
    assert!(p[2].held.is_some());
}

#[test]
fn thin_scopes_hold_the_whole_directory() {
    let mut m = manifest(&[img("a", &[('4', &["v4"])]), img("b", &[('1', &["v1"])])].concat());
    m.thin = true;
    m.scope = "team-x".into();
    let mut inv = Inventory::default();
    has(&mut inv, "src.io", "stage/a", '4', false);
    let p = plan(edges(&[m]), &inv, &Unreadable::new(), false, false);
    assert_eq!(p[0].action, Action::Lost);
    assert!(p[1].held.as_deref().unwrap().contains("team-x"));
}

#[test]
fn identical_edges_are_deduplicated_and_overlaps_cross_manifests() {
    let a = manifest(&img("x", &[('1', &["v1"])]));
    let b = manifest(&img("x", &[('1', &["v1"])]));
    assert_eq!(edges(&[a.clone(), b]).len(), 1);
    let mut c = manifest(&img("x", &[('2', &["v1"])]));
    c.scope = "other.yaml".into();
    let e = edges(&[a, c]);
    let ov = overlaps(&e);
    assert_eq!(ov, vec![vec![d('2')], vec![d('1')]]);
}

#[test]
fn unreadable_repositories_fail_their_edges_only() {
    let m = manifest(&[img("a", &[('1', &["v1"])]), img("b", &[('2', &["v2"])])].concat());
    let mut bad = Unreadable::new();
    bad.insert(("src.io".into(), "stage/a".into()), "HTTP 500".into());
    let p = plan(edges(&[m]), &Inventory::default(), &bad, false, false);
    assert_eq!(
        p[0].action,
        Action::Unreadable {
            message: "HTTP 500".into()
        }
    );
    assert_eq!(p[1].action, Action::Copy);
    assert!(p[1].held.is_none());
}
