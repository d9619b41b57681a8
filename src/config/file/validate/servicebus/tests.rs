//! Unit tests of the Service Bus source checks, and of the loader end to end for
//! `kind = "servicebus"`.

mod unit {
    use super::super::*;
    // `pipeline.reject` is deserialized straight into the typed mode.
    use crate::config::RejectMode as RawReject;

    fn queue() -> ServiceBusEntity {
        ServiceBusEntity::Queue("acr-events".into())
    }

    #[test]
    fn connection_strings_parse_and_never_echo_the_key() {
        let ns = "ex.servicebus.windows.net";
        let ok = connection_string(
            "Endpoint=sb://ex.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=abc+/=;EntityPath=acr-events",
            ns,
            &queue(),
        )
        .unwrap();
        let ServiceBusAuth::Sas { key_name, key } = ok else {
            panic!("sas expected")
        };
        assert_eq!((key_name.as_str(), key.expose()), ("listen", "abc+/="));
        for (text, says) in [
            (
                "Endpoint=sb://other.servicebus.windows.net/;SharedAccessKeyName=n;SharedAccessKey=s3cr3t",
                "not source.namespace",
            ),
            (
                "Endpoint=sb://ex.servicebus.windows.net/;SharedAccessKeyName=n",
                "needs Endpoint",
            ),
            (
                "Endpoint=sb://ex.servicebus.windows.net/;SharedAccessSignature=SharedAccessSignature sr=x",
                "not supported",
            ),
            ("s3cr3t", "NAME=VALUE"),
            (
                "Endpoint=sb://ex.servicebus.windows.net/;SharedAccessKeyName=n;SharedAccessKey=s3cr3t;EntityPath=other",
                "entity \"other\"",
            ),
        ] {
            let e = connection_string(text, ns, &queue()).unwrap_err();
            assert!(e.contains(says), "{e}");
            assert!(!e.contains("s3cr3t"), "the key leaked: {e}");
        }
    }

    #[test]
    fn namespace_and_entity_grammar() {
        for ok in [
            "ex.servicebus.windows.net",
            "a-b.servicebus.chinacloudapi.cn",
            "x.servicebus.usgovcloudapi.net",
        ] {
            assert!(valid_namespace(ok), "{ok}");
        }
        for bad in [
            "ex",
            "sb://ex.servicebus.windows.net",
            "ex.servicebus.windows.net:443",
            "ex..net",
            "-a.b",
            "",
        ] {
            assert!(!valid_namespace(bad), "{bad}");
        }
        let name = |s: &str, path| entity_name(&Spanned::new(0..1, s.to_owned()), "f", path);
        assert!(name("acr-events", true).is_ok() && name("team/acr.events_1", true).is_ok());
        assert!(name("a/b", false).is_err() && name("", true).is_err() && name("a$b", true).is_err());
        assert!(name("/a", true).is_err() && name("a//b", true).is_err() && name(&"a".repeat(51), false).is_err());
    }

    #[test]
    fn reject_modes_relate_to_pipeline_reject() {
        let at = 0..1;
        assert_eq!(reject_mode(None, None).unwrap(), RejectMode::Nack, "abandon by default");
        assert_eq!(
            reject_mode(None, Some((RawReject::Ack, at.clone()))).unwrap(),
            RejectMode::Ack
        );
        assert_eq!(
            reject_mode(Some((RawServiceBusReject::Complete, at.clone())), None).unwrap(),
            RejectMode::Ack
        );
        assert_eq!(
            reject_mode(
                Some((RawServiceBusReject::Abandon, at.clone())),
                Some((RawReject::Nack, at.clone()))
            )
            .unwrap(),
            RejectMode::Nack
        );
        let e = reject_mode(
            Some((RawServiceBusReject::Abandon, at.clone())),
            Some((RawReject::Ack, at)),
        )
        .unwrap_err();
        assert!(e.message.contains("contradicts pipeline.reject"), "{}", e.message);
    }
}

/// The loader end to end: every error names the file, the line and the field.
mod load {
    use std::path::Path;

    use crate::config::{
        Config, ENTRA_AUTHORITY_HOST, EntraCredential, LoadError, RejectMode, ServiceBusAuth, ServiceBusEntity,
        SourceConfig, load_str,
    };

    const REST: &str = "[registries.\"a.example\"]\n[registries.\"b.example\"]\n[[rules]]\nsource_registry = \"a.example\"\nrepository = \"**\"\n[[rules.targets]]\nregistry = \"b.example\"\n";

    fn file(source: &str) -> String {
        format!("[source]\nkind = \"servicebus\"\n{source}\n{REST}")
    }

    fn ok(text: &str) -> Config {
        load_str(text, Path::new("sb.toml")).unwrap_or_else(|e| panic!("should load: {e}"))
    }

    /// Assert the error is at the first line containing `at`, names `field`, says `says`.
    #[track_caller]
    fn expect(text: &str, at: &str, field: &str, says: &str) -> LoadError {
        let e = load_str(text, Path::new("sb.toml")).expect_err("should fail");
        let line = text.lines().position(|l| l.contains(at)).expect("`at` is in the text") + 1;
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("sb.toml:{line}: {field}: ")), "{shown}");
        assert!(e.message.contains(says), "{shown}\n(expected {says:?})");
        e
    }

    const SAS: &str = "auth = { kind = \"sas\", key_name = \"listen\", key = \"k3y\" }";

    #[test]
    fn queue_and_subscription_with_defaults() {
        let c = ok(&file(&format!(
            "namespace = \"ex.servicebus.windows.net\"\nqueue = \"acr-events\"\n{SAS}"
        )));
        let SourceConfig::ServiceBus(b) = &c.source else {
            panic!("servicebus expected")
        };
        assert_eq!(b.entity, ServiceBusEntity::Queue("acr-events".into()));
        assert_eq!((b.receivers, b.wait.as_secs(), b.lock_renew), (2, 30, None));
        assert_eq!(b.base_url(), "https://ex.servicebus.windows.net");
        assert_eq!(
            c.pipeline.reject_mode,
            RejectMode::Nack,
            "abandon is the servicebus default"
        );
        assert!(
            matches!(&b.auth, ServiceBusAuth::Sas { key_name, key } if key_name == "listen" && key.expose() == "k3y")
        );

        let dir = tempfile::tempdir().unwrap();
        let cs = dir.path().join("cs");
        std::fs::write(
            &cs,
            "Endpoint=sb://ex.servicebus.chinacloudapi.cn/;SharedAccessKeyName=r;SharedAccessKey=K=\n",
        )
        .unwrap();
        let text = file(&format!(
            "namespace = \"ex.servicebus.chinacloudapi.cn\"\ntopic = \"acr\"\nsubscription = \"regrelay\"\nendpoint = \"http://127.0.0.1:9/\"\nreceivers = 4\nwait_secs = 5\nlock_renew_secs = 20\nreject = \"complete\"\nauth = {{ kind = \"sas\", connection_string_file = \"{}\" }}",
            cs.display()
        ));
        let c = ok(&text);
        let SourceConfig::ServiceBus(b) = &c.source else {
            panic!("servicebus expected")
        };
        assert_eq!(b.entity.path(), "acr/subscriptions/regrelay");
        assert_eq!(b.base_url(), "http://127.0.0.1:9");
        assert_eq!(
            (b.receivers, b.wait.as_secs(), b.lock_renew.map(|d| d.as_secs())),
            (4, 5, Some(20))
        );
        assert_eq!(c.pipeline.reject_mode, RejectMode::Ack);
        assert!(matches!(&b.auth, ServiceBusAuth::Sas { key_name, key } if key_name == "r" && key.expose() == "K="));

        let c = ok(&file(
            "namespace = \"ex.servicebus.usgovcloudapi.net\"\nqueue = \"q\"\nauth = { kind = \"entra\", credential = \"managed_identity\" }",
        ));
        let SourceConfig::ServiceBus(b) = &c.source else {
            panic!("servicebus expected")
        };
        let ServiceBusAuth::Entra { entra, scope } = &b.auth else {
            panic!("entra expected")
        };
        assert_eq!(scope, super::super::DEFAULT_SCOPE);
        assert_eq!(entra.credential, EntraCredential::ManagedIdentity { client_id: None });
        assert_eq!(
            (entra.tenant.as_deref(), entra.authority_host.as_str()),
            (None, ENTRA_AUTHORITY_HOST)
        );
        let c = ok(&file(
            "namespace = \"e.x\"\nqueue = \"q\"\nauth = { kind = \"entra\", credential = \"client_secret\", tenant = \"t-1\", client_id = \"c-1\", client_secret = \"cs\", authority_host = \"https://login.microsoftonline.us/\", scope = \"https://servicebus.usgovcloudapi.net/.default\" }",
        ));
        let SourceConfig::ServiceBus(b) = &c.source else {
            panic!("servicebus expected")
        };
        let ServiceBusAuth::Entra { entra, scope } = &b.auth else {
            panic!("entra expected")
        };
        assert_eq!(scope, "https://servicebus.usgovcloudapi.net/.default");
        assert_eq!(entra.authority_host, "https://login.microsoftonline.us");
        assert!(
            matches!(&entra.credential, EntraCredential::ClientSecret { client_id, secret } if client_id == "c-1" && secret.expose() == "cs")
        );
        // pipeline.reject alone decides when source.reject is absent.
        let text = format!(
            "{}\n[pipeline]\nreject = \"ack\"\n",
            file(&format!("namespace = \"e.x\"\nqueue = \"q\"\n{SAS}"))
        );
        assert_eq!(ok(&text).pipeline.reject_mode, RejectMode::Ack);
    }

    #[test]
    fn every_source_error_names_line_and_field() {
        let ns = "namespace = \"ex.servicebus.windows.net\"";
        let with = |rest: &str| file(&format!("{ns}\n{rest}"));
        expect(
            &file(&format!("queue = \"q\"\n{SAS}")),
            "[source]",
            "source.namespace",
            "required",
        );
        expect(
            &file(&format!("namespace = \"ex\"\nqueue = \"q\"\n{SAS}")),
            "namespace",
            "source.namespace",
            "full host name",
        );
        expect(
            &with(&format!("queue = \"q\"\ntopic = \"t\"\n{SAS}")),
            "topic",
            "source.topic",
            "not both",
        );
        expect(
            &with(&format!("topic = \"t\"\n{SAS}")),
            "topic",
            "source.subscription",
            "required with topic",
        );
        expect(
            &with(&format!("queue = \"q\"\nsubscription = \"s\"\n{SAS}")),
            "subscription",
            "source.subscription",
            "only applies with topic",
        );
        expect(
            &with(SAS),
            "[source]",
            "source.queue",
            "give queue, or topic and subscription",
        );
        expect(
            &with(&format!("queue = \"a$b\"\n{SAS}")),
            "queue",
            "source.queue",
            "not a Service Bus entity name",
        );
        expect(
            &with(&format!("queue = \"q\"\nendpoint = \"http://10.0.0.1:80\"\n{SAS}")),
            "endpoint",
            "source.endpoint",
            "loopback",
        );
        expect(
            &with(&format!("queue = \"q\"\nendpoint = \"https://h/path\"\n{SAS}")),
            "endpoint",
            "source.endpoint",
            "without a path",
        );
        expect(
            &with(&format!("queue = \"q\"\nreceivers = 0\n{SAS}")),
            "receivers",
            "source.receivers",
            "at least 1",
        );
        expect(
            &with(&format!("queue = \"q\"\nreceivers = 65\n{SAS}")),
            "receivers",
            "source.receivers",
            "at most 64",
        );
        expect(
            &with(&format!("queue = \"q\"\nwait_secs = 61\n{SAS}")),
            "wait_secs",
            "source.wait_secs",
            "at most 60",
        );
        expect(
            &with(&format!("queue = \"q\"\nlock_renew_secs = 0\n{SAS}")),
            "lock_renew",
            "source.lock_renew_secs",
            "at least 1",
        );
        expect(
            &with(&format!("queue = \"q\"\nlease_extension_secs = 30\n{SAS}")),
            "lease_extension",
            "source.lease_extension_secs",
            "only applies to kind = \"pubsub\"",
        );
        expect(
            &with(&format!("queue = \"q\"\npath = \"-\"\n{SAS}")),
            "path",
            "source.path",
            "only applies to kind = \"file\"",
        );
        let pubsub = "[source]\nkind = \"pubsub\"\nsubscription = \"projects/p/subscriptions/abc\"\nqueue = \"q\"\n";
        expect(pubsub, "queue", "source.queue", "only applies to kind = \"servicebus\"");
        expect(&with("queue = \"q\""), "[source]", "source.auth", "required");
        let text = format!(
            "{}\n[pipeline]\nreject = \"ack\"\n",
            with(&format!("queue = \"q\"\nreject = \"abandon\"\n{SAS}"))
        );
        expect(
            &text,
            "reject = \"abandon\"",
            "source.reject",
            "contradicts pipeline.reject",
        );
        expect(
            &with(&format!("queue = \"q\"\nreject = \"drop\"\n{SAS}")),
            "reject",
            "source.reject",
            "unknown variant",
        );
    }

    #[test]
    fn every_auth_error_names_the_key_never_the_secret() {
        let with = |auth: &str| {
            file(&format!(
                "namespace = \"ex.servicebus.windows.net\"\nqueue = \"q\"\nauth = {auth}"
            ))
        };
        let f = |k: &str| format!("source.auth.{k}");
        expect(
            &with("{ kind = \"sas\" }"),
            "auth",
            &f("connection_string_env"),
            "needs a connection string",
        );
        expect(
            &with("{ kind = \"sas\", key = \"s3cr3t\" }"),
            "auth",
            &f("key_name"),
            "required with key_env",
        );
        expect(
            &with("{ kind = \"sas\", key_name = \"\", key = \"s3cr3t\" }"),
            "auth",
            &f("key_name"),
            "must not be empty",
        );
        expect(
            &with("{ kind = \"sas\", key_name = \"n\", key = \"s3cr3t\", key_env = \"PATH\" }"),
            "auth",
            &f("key"),
            "only one of",
        );
        expect(
            &with("{ kind = \"sas\", key_name = \"n\", connection_string = \"x\" }"),
            "auth",
            &f("key_name"),
            "not both",
        );
        expect(
            &with("{ kind = \"sas\", key_name = \"n\", scope = \"https://x\" }"),
            "auth",
            &f("scope"),
            "does not apply to kind = \"sas\"",
        );
        expect(
            &with("{ kind = \"entra\", key_env = \"K\" }"),
            "auth",
            &f("key_env"),
            "does not apply to kind = \"entra\"",
        );
        let mi = "kind = \"entra\", credential = \"managed_identity\"";
        expect(
            &with(&format!("{{ {mi}, scope = \"servicebus.azure.net\" }}")),
            "auth",
            &f("scope"),
            "https://",
        );
        expect(
            &with("{ kind = \"entra\" }"),
            "auth",
            &f("credential"),
            "required when kind = \"entra\"",
        );
        expect(
            &with(&format!("{{ {mi}, token_file = \"/t\" }}")),
            "auth",
            &f("token_file"),
            "does not apply to credential",
        );
        expect(
            &with(&format!("{{ {mi}, client_id = \"\" }}")),
            "auth",
            &f("client_id"),
            "must not be empty",
        );
        expect(
            &with(&format!("{{ {mi}, authority_host = \"http://login.example\" }}")),
            "auth",
            &f("authority_host"),
            "https://",
        );
        expect(
            &with("{ kind = \"entra\", credential = \"static_token_file\" }"),
            "auth",
            &f("token_file"),
            "required",
        );
        let cs = "kind = \"entra\", credential = \"client_secret\"";
        expect(
            &with(&format!("{{ {cs}, tenant = \"t\", client_secret = \"x\" }}")),
            "auth",
            &f("client_id"),
            "required",
        );
        expect(
            &with(&format!("{{ {cs}, tenant = \"t\", client_id = \"c\" }}")),
            "auth",
            &f("client_secret_env"),
            "needs one of",
        );
        expect(
            &with(&format!("{{ {cs}, client_id = \"c\", client_secret = \"x\" }}")),
            "auth",
            &f("tenant"),
            "required for a client secret",
        );
        let e = expect(
            &with(&format!(
                "{{ {cs}, tenant = \"t\", client_id = \"c\", client_secret_env = \"REGRELAY_TEST_SURELY_UNSET_VAR\" }}"
            )),
            "auth",
            &f("client_secret_env"),
            "REGRELAY_TEST_SURELY_UNSET_VAR",
        );
        assert!(e.message.contains("source.auth.client_secret"), "{e}");
        expect(
            &with("{ kind = \"magic\" }"),
            "auth",
            &f("kind"),
            "unknown variant `magic`, expected `sas` or `entra`",
        );
        // A registry's auth kinds share the table's keys, not its kinds.
        expect(
            &with("{ kind = \"basic\", username = \"u\", password = \"p\" }"),
            "auth",
            &f("kind"),
            "unknown variant `basic`, expected `sas` or `entra`",
        );
        expect(
            &with("{ kind = \"sas\", key_name = \"k\", key = \"v\", password = \"p\" }"),
            "auth",
            &f("password"),
            "does not apply to kind = \"sas\"",
        );
        let e = expect(
            &with(
                "{ kind = \"sas\", connection_string = \"Endpoint=sb://other.servicebus.windows.net/;SharedAccessKeyName=n;SharedAccessKey=s3cr3t\" }",
            ),
            "auth",
            &f("connection_string"),
            "not source.namespace",
        );
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let e = expect(
            &with("{ kind = \"sas\", connection_string_env = \"REGRELAY_TEST_SURELY_UNSET_VAR\" }"),
            "auth",
            &f("connection_string_env"),
            "environment variable REGRELAY_TEST_SURELY_UNSET_VAR",
        );
        assert!(e.message.contains("source.auth.connection_string"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let text = with(&format!(
            "{{ kind = \"sas\", key_name = \"n\", key_file = \"{}\" }}",
            empty.display()
        ));
        expect(&text, "auth", &f("key_file"), "the key is empty");
    }
}
