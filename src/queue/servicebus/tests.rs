//! Unit tests of the Service Bus source: broker properties, lock URLs, renewal timing.

use super::*;
use crate::config::Secret;

#[test]
fn broker_properties_parse_rfc_1123_dates() {
    let p = BrokerProperties::parse(
        r#"{"DeliveryCount":1,"EnqueuedSequenceNumber":0,"EnqueuedTimeUtc":"Wed, 02 Jul 2014 01:32:27 GMT","Label":"M1","LockToken":"7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547","LockedUntilUtc":"Wed, 02 Jul 2014 01:33:27 GMT","MessageId":"31907572164743c38741631acd554d6f","SequenceNumber":2,"State":"Active","TimeToLive":10}"#,
    )
    .unwrap();
    assert_eq!(p.delivery_count, Some(1));
    assert_eq!(p.sequence_number, Some(2));
    assert_eq!(p.message_id.as_deref(), Some("31907572164743c38741631acd554d6f"));
    assert_eq!(p.lock_token.as_deref(), Some("7da9cfd5-40d5-4bb1-8d64-ec5a52e1c547"));
    let secs = |t: Option<SystemTime>| t.unwrap().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(secs(p.enqueued), 1_404_264_747);
    assert_eq!(secs(p.locked_until) - secs(p.enqueued), 60);
    assert_eq!(BrokerProperties::parse("{}").unwrap(), BrokerProperties::default());
    let e = BrokerProperties::parse(r#"{"LockedUntilUtc":"2014-07-02T01:33:27Z"}"#).unwrap_err();
    assert!(e.contains("LockedUntilUtc") && e.contains("RFC 1123"), "{e}");
    assert!(BrokerProperties::parse("not json").is_err());
}

fn wire(base: &str) -> Wire {
    Wire {
        http: reqwest::Client::new(),
        auth: Arc::new(SasTokenSource::new(base, "k", Secret::new("v"))),
        base: url::Url::parse(base).unwrap(),
        entity: "topic/subscriptions/sub".into(),
        wait: Duration::from_secs(1),
    }
}

#[test]
fn lock_urls_come_from_location_only_on_our_origin() {
    let w = wire("https://ns.servicebus.windows.net/");
    let props = BrokerProperties {
        lock_token: Some("tok-1".into()),
        sequence_number: Some(7),
        ..BrokerProperties::default()
    };
    let loc = "https://ns.servicebus.windows.net/topic/subscriptions/sub/messages/7/tok-1";
    assert_eq!(w.lock_url(Some(loc), Some(&props)).as_deref(), Some(loc));
    // Another host must not receive our token: build the URL from the properties.
    let foreign = "https://evil.example/topic/subscriptions/sub/messages/7/tok-1";
    assert_eq!(w.lock_url(Some(foreign), Some(&props)).as_deref(), Some(loc));
    assert_eq!(w.lock_url(None, Some(&props)).as_deref(), Some(loc));
    assert_eq!(w.lock_url(None, Some(&BrokerProperties::default())), None);
    let local = wire("http://127.0.0.1:5000/");
    let l = "http://127.0.0.1:5000/topic/subscriptions/sub/messages/7/tok-1";
    assert_eq!(local.lock_url(Some(l), None).as_deref(), Some(l));
}

#[test]
fn renewals_come_at_half_the_lock_time_left_or_sooner() {
    let s = Duration::from_secs;
    assert_eq!(renew_wait(s(60), None), s(30));
    assert_eq!(renew_wait(s(60), Some(s(10))), s(10));
    assert_eq!(renew_wait(s(60), Some(s(45))), s(30), "never later than half");
    assert_eq!(renew_wait(Duration::ZERO, None), MIN_RENEW_WAIT);
}

#[test]
fn backoff_grows_and_is_capped() {
    for _ in 0..20 {
        let b = RECEIVE_BACKOFF.start().next_delay().unwrap();
        assert!(
            b >= Duration::from_millis(50) && b <= Duration::from_millis(100),
            "{b:?}"
        );
        let mut settle = SETTLE_BACKOFF.start();
        let mut delays = 0;
        while let Some(d) = settle.next_delay() {
            assert!(d <= Duration::from_secs(2));
            delays += 1;
        }
        assert_eq!(delays, SETTLE_ATTEMPTS - 1);
        let mut receive = RECEIVE_BACKOFF.start();
        for _ in 0..30 {
            assert!(receive.next_delay().unwrap() <= Duration::from_secs(30));
        }
    }
}
