//! `check-config` output: no secret in it, and it loads again to the same rendering.

use super::{BASE, ok, with_rule};
use crate::config::render;

#[test]
fn render_never_shows_a_secret_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "hunter2-from-file").unwrap();
    let text = format!(
        "{BASE}\n[registries.\"c.example\"]\nauth = {{ kind = \"basic\", username = \"bob\", password_file = \"{}\" }}\n[registries.\"d.example\"]\nauth = {{ kind = \"identity_token\", token = \"inline-t0ken\" }}\n",
        pw.display()
    );
    let c = ok(&text);
    let out = render(&c);
    assert!(!out.contains("hunter2") && !out.contains("inline-t0ken"), "{out}");
    assert!(
        out.contains("password = \"***\"") && out.contains("token = \"***\""),
        "{out}"
    );
    assert!(out.contains("username = \"bob\""), "{out}");
    // The rendering is the same file layout with defaults filled in: it loads and is stable.
    let again = ok(&out);
    assert_eq!(render(&again), out);
    assert!(
        out.contains("[registries.\"a.example\"]\ninsecure = false\nmax_in_flight = 16\n"),
        "{out}"
    );
    assert!(out.contains("repository = \"{repository}\""), "{out}");
}

#[test]
fn render_round_trips_a_full_file() {
    let text = format!(
        "{}\n[pipeline]\nworkers = 2\n[admin]\nenabled = false\n",
        with_rule(
            "[[rules]]\nname = \"n\"\nsource_registry = \"a.example\"\nrepository_regex = \"a|b\"\ntags = [\"v*\"]\nexclude_tags_regex = [\"x\"]\nactions = [\"delete\"]\n[[rules.targets]]\nregistry = \"b.example\"\ntag = \"{tag}-q\"\n"
        )
    )
    .replace("kind = \"file\"", "kind = \"pubsub\"\nsubscription = \"projects/p/subscriptions/s-1\"");
    let out = render(&ok(&text));
    assert_eq!(render(&ok(&out)), out);
    for line in [
        "max_outstanding_messages = 4",
        "enabled = false",
        "repository_regex = \"a|b\"",
        "actions = [\"delete\"]",
        "tag = \"{tag}-q\"",
    ] {
        assert!(out.contains(line), "{line} missing from\n{out}");
    }
}

#[test]
fn servicebus_renders_without_its_key_and_reloads() {
    let text = BASE.replace(
        "kind = \"file\"",
        "kind = \"servicebus\"\nnamespace = \"ex.servicebus.windows.net\"\ntopic = \"acr\"\nsubscription = \"regrelay\"\nlock_renew_secs = 15\nauth = { kind = \"sas\", connection_string = \"Endpoint=sb://ex.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=hunter2-sb\" }",
    );
    let out = render(&ok(&text));
    assert!(!out.contains("hunter2") && !out.contains("Endpoint="), "{out}");
    for line in [
        "kind = \"servicebus\"",
        "topic = \"acr\"\nsubscription = \"regrelay\"",
        "receivers = 2\nwait_secs = 30\nlock_renew_secs = 15",
        "reject = \"abandon\"",
        "[source.auth]\nkind = \"sas\"\nkey_name = \"listen\"\nkey = \"***\"\n\n",
        "[pipeline]",
        "reject = \"nack\"",
    ] {
        assert!(out.contains(line), "{line} missing from\n{out}");
    }
    assert_eq!(render(&ok(&out)), out, "the rendering loads again, same reject mode");
    let entra = BASE.replace(
        "kind = \"file\"",
        "kind = \"servicebus\"\nnamespace = \"e.x\"\nqueue = \"q\"\nreject = \"complete\"\nauth = { kind = \"entra\", credential = \"client_secret\", tenant = \"t\", client_id = \"c\", client_secret = \"hunter3\" }",
    );
    let out = render(&ok(&entra));
    assert!(
        out.contains(
            "[source.auth]\nkind = \"entra\"\ntenant = \"t\"\ncredential = \"client_secret\"\nclient_id = \"c\"\n\
             client_secret = \"***\"\nauthority_host = \"https://login.microsoftonline.com\"\n\
             scope = \"https://servicebus.azure.net/.default\"\n"
        ) && !out.contains("hunter3"),
        "{out}"
    );
    assert!(
        out.contains("reject = \"complete\"") && out.contains("reject = \"ack\""),
        "{out}"
    );
    assert_eq!(render(&ok(&out)), out);
}
