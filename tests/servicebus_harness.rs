//! Self-tests of the Service Bus REST test server (`support::ServiceBusServer`): each test
//! drives it over HTTP, as a client would, and checks one documented behaviour
//! (protocols.md §3). The `BrokerProperties` it sends are parsed with regrelay's own
//! parser, so the two agree on the wire format.

mod support;

use std::time::Duration;

use regrelay::queue::servicebus::BrokerProperties;
use reqwest::{Method, Response};
use support::{EntityOptions, NAMESPACE, ROOT_RULE, Right, ServiceBusServer, resource_uri, sas, sas_for_sr, unix_now};
use tokio::time::Instant;

const Q: &str = "acr-events";

fn opts(lock_ms: u64, max: u32) -> EntityOptions {
    EntityOptions {
        lock_duration: Duration::from_millis(lock_ms),
        max_delivery_count: max,
        duplicate_detection: None,
    }
}

async fn server(lock_ms: u64, max: u32) -> ServiceBusServer {
    let sb = ServiceBusServer::start().await;
    sb.create_queue(Q, opts(lock_ms, max));
    sb
}

/// A request to `url` (on the server) with a root SAS token for the namespace URI of the
/// entity the URL names (the part before `/messages`).
async fn call(sb: &ServiceBusServer, method: Method, url: &str) -> Response {
    let path = url
        .strip_prefix(&format!("{}/", sb.url()))
        .expect("a URL on the server");
    let entity = path.split("/messages").next().unwrap();
    let auth = sas(&resource_uri(entity), ROOT_RULE, sb.root_key(), unix_now() + 60);
    call_as(method, url, Some(&auth)).await
}

async fn call_as(method: Method, url: &str, auth: Option<&str>) -> Response {
    let mut r = reqwest::Client::new()
        .request(method, url)
        .header("Content-Length", "0");
    if let Some(a) = auth {
        r = r.header("Authorization", a);
    }
    r.send().await.expect("request to the test server")
}

/// Peek-lock `entity` with `timeout` seconds: (status, BrokerProperties, Location, response).
async fn peek_lock(
    sb: &ServiceBusServer,
    entity: &str,
    timeout: u64,
) -> (u16, Option<BrokerProperties>, Option<String>, Response) {
    let r = call(
        sb,
        Method::POST,
        &format!("{}/{entity}/messages/head?timeout={timeout}", sb.url()),
    )
    .await;
    let props = r
        .headers()
        .get("BrokerProperties")
        .map(|v| BrokerProperties::parse(v.to_str().unwrap()).expect("BrokerProperties parses"));
    let loc = r.headers().get("Location").map(|v| v.to_str().unwrap().to_owned());
    (r.status().as_u16(), props, loc, r)
}

#[tokio::test]
async fn sas_and_bearer_tokens_are_validated() {
    let sb = server(60_000, 10).await;
    sb.create_queue("acr-events2", EntityOptions::default());
    let head = format!("{}/{Q}/messages/head?timeout=0", sb.url());
    let status = |r: Response| r.status().as_u16();
    assert_eq!(status(call_as(Method::POST, &head, None).await), 401, "no credentials");
    let base = resource_uri(Q);
    let exp = unix_now() + 60;
    let good = sas(&base, ROOT_RULE, sb.root_key(), exp);
    assert_eq!(
        status(call_as(Method::POST, &head, Some(&good)).await),
        204,
        "valid SAS, empty queue"
    );
    let key = sb.root_key();
    let signed = |resource: &str| sas(resource, ROOT_RULE, key, unix_now() + 60);
    // The audience is the namespace's URI for the entity or a parent of it, compared
    // case-insensitively, with any of the schemes Microsoft's SAS page shows, and with
    // upper- or lowercase escapes (.NET's HttpUtility.UrlEncode writes `%3a`).
    let accepted = [
        ("the namespace root", signed(&format!("https://{NAMESPACE}/"))),
        ("the namespace without a slash", signed(&format!("https://{NAMESPACE}"))),
        ("another case", signed(&base.to_ascii_uppercase())),
        ("the sb scheme", signed(&format!("sb://{NAMESPACE}/{Q}"))),
        ("the http scheme", signed(&format!("http://{NAMESPACE}/{Q}"))),
        ("a trailing slash", signed(&format!("{base}/"))),
        (
            "lowercase escapes",
            sas_for_sr(
                &format!("https%3a%2f%2f{NAMESPACE}%2f{Q}"),
                ROOT_RULE,
                key,
                unix_now() + 60,
            ),
        ),
    ];
    for (what, auth) in &accepted {
        assert_eq!(status(call_as(Method::POST, &head, Some(auth)).await), 204, "{what}");
    }
    let refused = [
        ("wrong key", sas(&base, ROOT_RULE, "not-the-key", unix_now() + 60)),
        ("expired", sas(&base, ROOT_RULE, key, unix_now() - 1)),
        ("unknown rule", sas(&base, "nobody", key, unix_now() + 60)),
        ("another entity", signed(&resource_uri("other"))),
        (
            "a prefix that is not a path segment",
            signed(&resource_uri("acr-event")),
        ),
        (
            "a path under the entity",
            signed(&resource_uri(&format!("{Q}/messages"))),
        ),
        (
            "another namespace",
            signed(&format!("https://other.servicebus.windows.net/{Q}")),
        ),
        // What regrelay signed before issue 9: the endpoint the request was sent to.
        ("the endpoint's URL", signed(&format!("{}/{Q}", sb.url()))),
        ("the endpoint's root", signed(&format!("{}/", sb.url()))),
        ("no scheme", signed(&format!("{NAMESPACE}/{Q}"))),
        ("sr not URL-encoded", sas_for_sr(&base, ROOT_RULE, key, unix_now() + 60)),
        (
            "tampered expiry",
            good.replace(&format!("se={exp}"), &format!("se={}", exp + 6000)),
        ),
    ];
    for (what, auth) in &refused {
        assert_eq!(status(call_as(Method::POST, &head, Some(auth)).await), 401, "{what}");
    }
    // A wrong audience is told apart from a bad signature, in the service's words.
    let r = call_as(Method::POST, &head, Some(&signed(&format!("{}/{Q}", sb.url())))).await;
    assert!(r.text().await.unwrap().starts_with("InvalidAudience"));
    // A token for a topic covers its subscriptions.
    sb.create_topic("acr");
    sb.create_subscription("acr", "regrelay", EntityOptions::default());
    let sub_head = format!("{}/acr/subscriptions/regrelay/messages/head?timeout=0", sb.url());
    assert_eq!(
        status(call_as(Method::POST, &sub_head, Some(&signed(&resource_uri("acr")))).await),
        204
    );
    // The key's UTF-8 bytes are the HMAC key: a base64-decoded key does not verify.
    sb.add_sas_rule("listen", "aGVsbG8=", &[Right::Listen]);
    let decoded = String::from_utf8_lossy(b"hello").into_owned();
    assert_eq!(
        status(
            call_as(
                Method::POST,
                &head,
                Some(&sas(&base, "listen", &decoded, unix_now() + 60))
            )
            .await
        ),
        401
    );
    let listen = sas(&base, "listen", "aGVsbG8=", unix_now() + 60);
    assert_eq!(status(call_as(Method::POST, &head, Some(&listen)).await), 204);
    let send_url = format!("{}/{Q}/messages", sb.url());
    assert_eq!(
        status(call_as(Method::POST, &send_url, Some(&listen)).await),
        401,
        "Listen cannot send"
    );
    // Bearer tokens (Entra ID stand-in).
    sb.accept_bearer("good-jwt");
    assert_eq!(status(call_as(Method::POST, &head, Some("Bearer good-jwt")).await), 204);
    assert_eq!(status(call_as(Method::POST, &head, Some("Bearer bad-jwt")).await), 401);
    // A missing entity is 410 Gone.
    assert_eq!(
        status(call(&sb, Method::POST, &format!("{}/nope/messages/head?timeout=0", sb.url())).await),
        410
    );
}

#[tokio::test]
async fn peek_lock_long_polls_and_wakes_on_send() {
    let sb = server(60_000, 10).await;
    let started = Instant::now();
    let (code, ..) = peek_lock(&sb, Q, 1).await;
    assert_eq!(code, 204);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "timeout=1 waits about a second"
    );

    let started = Instant::now();
    let poll = peek_lock(&sb, Q, 10);
    let send = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(sb.send(Q, b"{}", Some("m-1"), &[]).await, 201);
    };
    let ((code, props, ..), ()) = tokio::join!(poll, send);
    assert_eq!(code, 201);
    assert_eq!(props.unwrap().message_id.as_deref(), Some("m-1"));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "woken by the send, not the timeout"
    );
}

#[tokio::test]
async fn received_messages_carry_broker_properties_location_and_custom_properties() {
    let sb = server(60_000, 10).await;
    let headers = [("aeg-event-type", "\"Notification\""), ("aeg-delivery-count", "0")];
    assert_eq!(sb.send(Q, br#"{"id":"e1"}"#, Some("msg-1"), &headers).await, 201);
    let (code, props, loc, r) = peek_lock(&sb, Q, 1).await;
    assert_eq!(code, 201);
    let h = r.headers().clone();
    assert_eq!(h["aeg-event-type"], "\"Notification\"", "strings stay quoted");
    assert_eq!(h["aeg-delivery-count"], "0", "numbers are bare");
    assert_eq!(h["content-type"], "application/json", "the sender's content type");
    let raw = h["BrokerProperties"].to_str().unwrap().to_owned();
    assert!(raw.contains("GMT\""), "RFC 1123 dates: {raw}");
    let p = props.unwrap();
    assert_eq!(p.delivery_count, Some(1), "1 on the first delivery");
    assert_eq!(p.message_id.as_deref(), Some("msg-1"));
    let until = p.locked_until.unwrap();
    let date = httpdate::parse_http_date(h["date"].to_str().unwrap()).unwrap();
    let lock = until.duration_since(date).unwrap();
    assert!(
        (59..=60).contains(&lock.as_secs()),
        "LockedUntilUtc = Date + LockDuration, got {lock:?}"
    );
    let loc = loc.unwrap();
    let seq = p.sequence_number.unwrap();
    let token = p.lock_token.unwrap();
    assert_eq!(loc, format!("{}/{Q}/messages/{seq}/{token}", sb.url()));
    assert_eq!(&r.bytes().await.unwrap()[..], br#"{"id":"e1"}"#);
    assert_eq!(
        call(&sb, Method::DELETE, &loc).await.status().as_u16(),
        200,
        "the Location URL completes"
    );
    assert_eq!(sb.counts(Q).completed, 1);
}

#[tokio::test]
async fn lock_expiry_makes_the_message_visible_with_delivery_count_plus_one() {
    let sb = server(1000, 10).await;
    sb.send(Q, b"x", Some("m"), &[]).await;
    let (_, first, old_loc, _) = peek_lock(&sb, Q, 1).await;
    assert_eq!(first.unwrap().delivery_count, Some(1));
    assert_eq!((sb.counts(Q).locked, sb.counts(Q).active), (1, 0));
    let (code, ..) = peek_lock(&sb, Q, 0).await;
    assert_eq!(code, 204, "invisible while locked");
    // The long poll returns as soon as the lock runs out.
    let (code, second, new_loc, _) = peek_lock(&sb, Q, 5).await;
    assert_eq!(code, 201);
    let second = second.unwrap();
    assert_eq!(second.delivery_count, Some(2));
    assert_ne!(old_loc, new_loc, "a new lock token");
    for m in [Method::DELETE, Method::PUT, Method::POST] {
        let r = call(&sb, m.clone(), old_loc.as_deref().unwrap()).await;
        assert_eq!(r.status().as_u16(), 404, "{m} with the stale lock");
    }
    let s = sb.stats("m");
    assert_eq!((s.deliveries, s.expiries, s.stale), (2, 1, 3));
}

#[tokio::test]
async fn renew_extends_locked_until() {
    let sb = server(1000, 10).await;
    sb.send(Q, b"x", Some("m"), &[]).await;
    let (_, _, loc, _) = peek_lock(&sb, Q, 1).await;
    let loc = loc.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = call(&sb, Method::POST, &loc).await;
        assert_eq!(r.status().as_u16(), 200, "renew");
        assert!(
            r.headers().get("BrokerProperties").is_none(),
            "renew has no body or properties"
        );
    }
    // 2 s after the receive, 1 s lock: still held thanks to the renewals.
    assert_eq!(sb.counts(Q).locked, 1);
    assert_eq!(call(&sb, Method::DELETE, &loc).await.status().as_u16(), 200);
    let s = sb.stats("m");
    assert_eq!((s.deliveries, s.renewals, s.expiries, s.completions), (1, 4, 0, 1));
}

#[tokio::test]
async fn abandon_past_max_delivery_count_dead_letters_and_the_dlq_is_readable() {
    let sb = server(60_000, 2).await;
    sb.send(Q, b"poison", Some("p"), &[]).await;
    for n in 1..=2 {
        let (code, props, loc, _) = peek_lock(&sb, Q, 1).await;
        assert_eq!(code, 201);
        assert_eq!(props.unwrap().delivery_count, Some(n));
        assert_eq!(call(&sb, Method::PUT, &loc.unwrap()).await.status().as_u16(), 200);
    }
    let c = sb.counts(Q);
    assert_eq!((c.active, c.locked, c.dead_lettered), (0, 0, 1));
    let dlq = format!("{Q}/$deadletterqueue");
    let (code, props, loc, r) = peek_lock(&sb, &dlq, 1).await;
    assert_eq!(code, 201);
    assert_eq!(r.headers()["DeadLetterReason"], "\"MaxDeliveryCountExceeded\"");
    assert_eq!(props.unwrap().message_id.as_deref(), Some("p"));
    let loc = loc.unwrap();
    assert!(loc.contains("/$deadletterqueue/messages/"), "{loc}");
    assert_eq!(&r.bytes().await.unwrap()[..], b"poison");
    assert_eq!(call(&sb, Method::DELETE, &loc).await.status().as_u16(), 200);
    assert_eq!(sb.counts(Q).dead_lettered, 0);
}

#[tokio::test]
async fn settle_by_message_id_and_stale_locks_get_404() {
    let sb = server(60_000, 10).await;
    sb.send(Q, b"x", Some("by-id"), &[]).await;
    let (_, props, _, _) = peek_lock(&sb, Q, 1).await;
    let token = props.unwrap().lock_token.unwrap();
    let url = format!("{}/{Q}/messages/by-id/{token}", sb.url());
    assert_eq!(
        call(&sb, Method::POST, &url).await.status().as_u16(),
        200,
        "renew by MessageId"
    );
    let wrong = format!("{}/{Q}/messages/by-id/00000000-0000-0000-0000-000000000000", sb.url());
    assert_eq!(
        call(&sb, Method::DELETE, &wrong).await.status().as_u16(),
        404,
        "wrong token"
    );
    assert_eq!(call(&sb, Method::DELETE, &url).await.status().as_u16(), 200);
    assert_eq!(
        call(&sb, Method::DELETE, &url).await.status().as_u16(),
        404,
        "already completed"
    );
    assert_eq!(sb.counts(Q).completed, 1);
}

#[tokio::test]
async fn topics_fan_out_and_duplicate_detection_drops_repeats() {
    let sb = ServiceBusServer::start().await;
    sb.create_topic("acr");
    sb.create_subscription("acr", "a", EntityOptions::default());
    sb.create_subscription("acr", "b", EntityOptions::default());
    assert_eq!(sb.send("acr", b"e", Some("t-1"), &[]).await, 201);
    for sub in ["acr/subscriptions/a", "acr/subscriptions/b"] {
        let (code, props, loc, _) = peek_lock(&sb, sub, 1).await;
        assert_eq!(code, 201, "{sub}");
        assert_eq!(props.unwrap().message_id.as_deref(), Some("t-1"));
        assert!(loc.unwrap().contains(&format!("/{sub}/messages/")));
    }
    let dd = EntityOptions {
        duplicate_detection: Some(Duration::from_secs(600)),
        ..EntityOptions::default()
    };
    sb.create_queue("dedup", dd);
    for _ in 0..3 {
        assert_eq!(
            sb.send("dedup", b"same", Some("dup"), &[]).await,
            201,
            "accepted, silently dropped"
        );
    }
    assert_eq!(sb.counts("dedup").active, 1);
    assert_eq!(sb.send("missing", b"x", None, &[]).await, 410);
}

#[tokio::test]
async fn forced_lock_expiry_hands_the_message_to_the_next_receiver() {
    let sb = server(60_000, 10).await;
    sb.send(Q, b"x", Some("m"), &[]).await;
    let (_, _, loc, _) = peek_lock(&sb, Q, 1).await;
    assert!(sb.expire_lock("m"));
    let (code, props, _, _) = peek_lock(&sb, Q, 1).await;
    assert_eq!((code, props.unwrap().delivery_count), (201, Some(2)));
    assert_eq!(
        call(&sb, Method::POST, &loc.unwrap()).await.status().as_u16(),
        404,
        "the old lock is gone"
    );
    assert!(sb.requests().iter().any(|r| r.status == 404 && r.method == "POST"));
}
