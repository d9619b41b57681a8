//! In-process tests of the settle policy: the real pipeline over the in-memory broker
//! (`queue::memory`) and a fake executor, with no external process. Each test builds its
//! own `Health`, so they run in parallel without seeing each other's state.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::config::{self, PipelineConfig};
use crate::engine::{Done, Execute, Failure, Guarded, Item, ItemResult, Outcome};
use crate::health::Health;
use crate::queue::Settlement;
use crate::queue::memory::MemoryBroker;
use crate::replicate::ErrorClass;

const SRC: &str = "src.example";
const A: &str = "a.example";
const B: &str = "b.example";

/// A fake executor: answers each item with `answer(item, attempt)`, where `attempt`
/// counts the calls with that same item so far; records every item.
type Answer = Box<dyn Fn(&Item, usize) -> ItemResult + Send + Sync>;

struct Fake {
    answer: Answer,
    delay: Duration,
    calls: Mutex<Vec<Item>>,
    /// The rule name passed with each call, in call order.
    rules: Mutex<Vec<String>>,
}

impl Fake {
    fn new(answer: impl Fn(&Item, usize) -> ItemResult + Send + Sync + 'static) -> Fake {
        Fake {
            answer: Box::new(answer),
            delay: Duration::ZERO,
            calls: Mutex::default(),
            rules: Mutex::default(),
        }
    }

    fn calls_to(&self, registry: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|i| i.registries().1 == registry)
            .count()
    }
}

impl Execute for Fake {
    async fn execute(&self, item: &Item, rule: &str) -> ItemResult {
        self.rules.lock().unwrap().push(rule.to_string());
        let n = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(item.clone());
            calls.iter().filter(|i| *i == item).count()
        };
        tokio::time::sleep(self.delay).await;
        (self.answer)(item, n)
    }
}

fn done() -> ItemResult {
    Ok(Outcome::Done(Done::InPlace))
}

fn fail(class: ErrorClass, registry: &str) -> ItemResult {
    Err(Failure {
        class,
        message: format!("{class:?} at {registry}"),
        registry: Some(registry.to_string()),
    })
}

/// Rules mirroring `SRC` to the given targets.
fn rules(targets: &[&str]) -> Vec<config::Rule> {
    let mut text = format!(
        "[source]\nkind = \"file\"\n[registries.\"{SRC}\"]\n[[rules]]\nname = \"m\"\nsource_registry = \"{SRC}\"\nrepository = \"**\"\nactions = [\"push\", \"delete\"]\n"
    );
    for t in targets {
        text = text.replacen("[[rules]]", &format!("[registries.\"{t}\"]\n[[rules]]"), 1);
        text.push_str(&format!(
            "[[rules.targets]]\nregistry = \"{t}\"\nrepository = \"mirror/{{repository}}\"\n"
        ));
    }
    config::load_str(&text, Path::new("test.toml"))
        .expect("valid test config")
        .rules
}

fn event(tag: &str) -> Vec<u8> {
    let digest = format!("sha256:{}", "a".repeat(64));
    format!(r#"{{"action":"INSERT","digest":"{SRC}/team/app@{digest}","tag":"{SRC}/team/app:{tag}"}}"#).into_bytes()
}

struct Run {
    broker: MemoryBroker,
    health: Arc<Health>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn cfg(retry_min_secs: u64) -> PipelineConfig {
    PipelineConfig {
        workers: 4,
        retry_delay_min: Duration::from_secs(retry_min_secs),
        retry_delay_max: Duration::from_secs(retry_min_secs * 4),
        pause_min: Duration::from_secs(10),
        pause_max: Duration::from_secs(40),
        shutdown_grace: Duration::from_secs(2),
        ..PipelineConfig::default()
    }
}

fn start(fake: Arc<Fake>, targets: &[&str], cfg: PipelineConfig) -> Run {
    let hosts: Vec<String> = [SRC].iter().chain(targets).map(|h| h.to_string()).collect();
    let routes = vec![(SRC.to_string(), targets.iter().map(|t| t.to_string()).collect())];
    let health = Arc::new(Health::new(hosts.clone(), routes, cfg.pause_min, cfg.pause_max));
    let executor = Arc::new(Guarded::new(ArcExec(fake), health.clone()));
    let pipeline = Arc::new(Pipeline::new(executor, health.clone(), rules(targets), hosts, cfg));
    let broker = MemoryBroker::new();
    let stop = CancellationToken::new();
    let task = tokio::spawn(pipeline.run(broker.source(), stop.clone()));
    Run {
        broker,
        health,
        stop,
        task,
    }
}

/// Lets tests keep a handle on the fake while the pipeline owns the executor.
struct ArcExec(Arc<Fake>);

impl Execute for ArcExec {
    async fn execute(&self, item: &Item, rule: &str) -> ItemResult {
        self.0.execute(item, rule).await
    }
}

impl Run {
    async fn until(&self, what: &str, pred: impl Fn(&MemoryBroker) -> bool) {
        for _ in 0..2000 {
            if pred(&self.broker) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{what} not reached; settlements: {:?}", self.broker.settlements());
    }

    async fn stop(self) -> MemoryBroker {
        self.stop.cancel();
        self.task.await.unwrap();
        self.broker
    }
}

#[tokio::test(start_paused = true)]
async fn acked_only_when_every_item_verified_or_was_stale() {
    let fake = Arc::new(Fake::new(|item, _| match item.registries().1 {
        A => done(),
        _ => Ok(Outcome::Stale("gone at the source".into())),
    }));
    let run = start(fake.clone(), &[A, B], cfg(0));
    run.broker.send("m1", event("1.0"));
    run.until("m1 settled", |b| !b.settlements_of("m1").is_empty()).await;
    let broker = run.stop().await;
    assert_eq!(broker.settlements_of("m1"), [Settlement::Ack]);
    assert_eq!((fake.calls_to(A), fake.calls_to(B)), (1, 1));
    // Each item runs under its route's rule name (the copy metrics' `rule` label).
    assert_eq!(*fake.rules.lock().unwrap(), ["m", "m"]);
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_goes_back_after_the_retry_delay_without_holding_a_worker() {
    // Target A fails twice, then works; the message comes back after 5 s, then 10 s.
    // Another message (tag 2.0) works at once.
    let fake = Arc::new(Fake::new(|item, n| {
        if item.target_ref().ends_with(":2.0") || n > 2 {
            done()
        } else {
            fail(ErrorClass::Transient, A)
        }
    }));
    let run = start(fake.clone(), &[A], cfg(5));
    let t0 = tokio::time::Instant::now();
    run.broker.send("m1", event("1.0"));
    // While m1 waits, other messages are processed: the worker is free.
    run.until("m1 waiting", |_| fake.calls_to(A) == 1).await;
    run.broker.send("m2", event("2.0"));
    run.until("m2 handled", |b| !b.settlements_of("m2").is_empty()).await;
    assert!(
        run.broker.settlements_of("m1").is_empty(),
        "m1 handed back before its delay"
    );
    run.until("m1 acked", |b| b.settlements_of("m1").contains(&Settlement::Ack))
        .await;
    let waited = t0.elapsed();
    let broker = run.stop().await;
    assert_eq!(
        broker.settlements_of("m1"),
        [Settlement::Nack, Settlement::Nack, Settlement::Ack],
        "nacked twice, acked once, nothing settled twice"
    );
    assert_eq!(broker.deliveries("m1"), 3);
    // Delays follow the delivery count: 5 s then 10 s (plus up to 20 % jitter).
    assert!(
        waited >= Duration::from_secs(15) && waited <= Duration::from_secs(19),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_permanent_failure_is_rejected_once() {
    let fake = Arc::new(Fake::new(|_, _| fail(ErrorClass::Permanent, A)));
    let run = start(fake.clone(), &[A], cfg(5));
    run.broker.send("m1", event("1.0"));
    run.broker.send("bad", b"not json".to_vec());
    run.until("both settled", |b| b.settlements().len() == 2).await;
    let broker = run.stop().await;
    assert_eq!(broker.settlements_of("m1"), [Settlement::Reject]);
    assert_eq!(broker.settlements_of("bad"), [Settlement::Reject]);
    assert_eq!(fake.calls_to(A), 1, "rejected at once, not retried");
}

#[tokio::test(start_paused = true)]
async fn a_systemic_failure_marks_only_that_registry_unhealthy() {
    // B's credentials are refused; A works. Routes to A go on; B is not contacted again
    // until its backoff (10 s) ends; messages that also target B come back later.
    let fake = Arc::new(Fake::new(|item, _| match item.registries().1 {
        A => done(),
        _ => fail(ErrorClass::Systemic, B),
    }));
    let run = start(fake.clone(), &[A, B], cfg(1));
    run.broker.send("m1", event("1.0"));
    run.until("m1 nacked", |b| !b.settlements_of("m1").is_empty()).await;
    assert!(run.health.check(B).is_err(), "B unhealthy");
    assert!(run.health.check(A).is_ok(), "A untouched");
    assert!(
        run.health.pause_until().is_none(),
        "A can still make progress: no pause"
    );
    assert!(run.health.ready());
    // m1 comes back after 1 s and 2 s: A is done again, B refused without a call.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        fake.calls_to(B),
        1,
        "an unhealthy registry is not contacted during its backoff"
    );
    assert!(fake.calls_to(A) >= 2, "the healthy target keeps being served");
    let broker = run.stop().await;
    assert!(broker.settlements_of("m1").iter().all(|s| *s == Settlement::Nack));
}

#[tokio::test(start_paused = true)]
async fn pulling_pauses_when_no_rule_can_progress_and_resumes_on_recovery() {
    // A refuses the first request only (its credentials are fixed meanwhile).
    let first = std::sync::atomic::AtomicBool::new(true);
    let fake = Arc::new(Fake::new(move |_, _| {
        if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            fail(ErrorClass::Systemic, A)
        } else {
            done()
        }
    }));
    let run = start(fake.clone(), &[A], cfg(1));
    run.broker.send("m1", event("1.0"));
    run.until("m1 nacked", |b| !b.settlements_of("m1").is_empty()).await;
    assert!(run.health.pause_until().is_some(), "the only target is unhealthy");
    assert!(!run.health.ready());
    run.broker.send("m2", event("2.0"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(run.broker.deliveries("m2"), 0, "nothing pulled while paused");
    // After the 10 s backoff the next message probes A, which answers: everything flows.
    run.until("both acked", |b| {
        b.settlements_of("m1").contains(&Settlement::Ack) && b.settlements_of("m2") == [Settlement::Ack]
    })
    .await;
    assert!(run.health.ready());
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_hands_back_waiting_and_running_messages_at_once() {
    let mut fake = Fake::new(|item, _| match item.registries().1 {
        A => fail(ErrorClass::Transient, A),
        _ => done(),
    });
    fake.delay = Duration::from_secs(1);
    let fake = Arc::new(fake);
    let run = start(fake.clone(), &[A], cfg(600));
    run.broker.send("waiting", event("1.0"));
    run.until("one waiting", |b| b.deliveries("waiting") == 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(run.broker.settlements_of("waiting").is_empty(), "held for 600 s");
    let t0 = tokio::time::Instant::now();
    let broker = run.stop().await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "not held past shutdown: {:?}",
        t0.elapsed()
    );
    assert_eq!(broker.settlements_of("waiting"), [Settlement::Nack]);
    assert_eq!(broker.outstanding(), 0, "every delivery settled");
}

#[tokio::test(start_paused = true)]
async fn shutdown_past_the_grace_period_nacks_unfinished_work_once() {
    let mut fake = Fake::new(|_, _| done());
    fake.delay = Duration::from_secs(3600);
    let fake = Arc::new(fake);
    let run = start(fake.clone(), &[A], cfg(1));
    for i in 0..3 {
        run.broker.send(&format!("slow{i}"), event(&format!("{i}.0")));
    }
    run.until("all running", |b| b.outstanding() == 3).await;
    let t0 = tokio::time::Instant::now();
    let broker = run.stop().await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "grace is 2 s: {took:?}"
    );
    for i in 0..3 {
        assert_eq!(
            broker.settlements_of(&format!("slow{i}")),
            [Settlement::Nack],
            "dropped handles nack once"
        );
    }
    assert_eq!(broker.outstanding(), 0);
}

/// A distribution notification envelope from `SRC`: a manifest push of `team/a:1.0` and
/// of `team/b:2.0`, with a blob push between them (issue 10).
fn envelope_of_two_images() -> Vec<u8> {
    let (da, db) = (
        format!("sha256:{}", "a".repeat(64)),
        format!("sha256:{}", "b".repeat(64)),
    );
    let push = |repo: &str, tag: &str, digest: &str| {
        format!(
            r#"{{"id":"{repo}","action":"push","target":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{digest}","size":1,"repository":"{repo}","tag":"{tag}"}},"request":{{"host":"{SRC}"}}}}"#
        )
    };
    let blob = format!(
        r#"{{"action":"push","target":{{"mediaType":"application/octet-stream","digest":"{da}","size":1,"repository":"team/a"}},"request":{{"host":"{SRC}"}}}}"#
    );
    format!(
        r#"{{"events":[{},{blob},{}]}}"#,
        push("team/a", "1.0", &da),
        push("team/b", "2.0", &db)
    )
    .into_bytes()
}

#[tokio::test(start_paused = true)]
async fn an_envelope_of_several_events_is_acked_only_when_all_of_them_are_verified() {
    // team/b fails once (Transient) while team/a is verified: the message goes back, and
    // is acked only on the delivery where both are verified.
    let fake = Arc::new(Fake::new(|item, n| {
        if item.target_ref().contains("team/b") && n == 1 {
            fail(ErrorClass::Transient, A)
        } else {
            done()
        }
    }));
    let run = start(fake.clone(), &[A], cfg(1));
    run.broker.send("env", envelope_of_two_images());
    run.until("env acked", |b| b.settlements_of("env").contains(&Settlement::Ack))
        .await;
    let broker = run.stop().await;
    assert_eq!(broker.settlements_of("env"), [Settlement::Nack, Settlement::Ack]);
    let targets: Vec<String> = fake.calls.lock().unwrap().iter().map(|i| i.target_ref()).collect();
    assert_eq!(
        targets.len(),
        4,
        "both images on each delivery, the blob never: {targets:?}"
    );
    assert!(
        targets
            .iter()
            .all(|t| t.contains("mirror/team/a:1.0") || t.contains("mirror/team/b:2.0")),
        "{targets:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn dry_run_executes_nothing_and_hands_back_after_the_retry_delay_15() {
    let fake = Arc::new(Fake::new(|_, _| done()));
    let run = start(
        fake.clone(),
        &[A, B],
        PipelineConfig {
            dry_run: true,
            ..cfg(30)
        },
    );
    run.broker.send("m1", event("1.0"));
    run.broker.send("m2", b"not json".to_vec());
    run.until("both delivered", |b| b.deliveries("m1") == 1 && b.deliveries("m2") == 1)
        .await;
    // Held for the retry delay like a failure (no redelivery loop), never acked or rejected,
    // not even the undecodable one.
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(
        run.broker.settlements().is_empty(),
        "handed back before the retry delay"
    );
    tokio::time::sleep(Duration::from_secs(8)).await;
    let broker = run.stop().await;
    for id in ["m1", "m2"] {
        let s = broker.settlements_of(id);
        assert!(!s.is_empty() && s.iter().all(|s| *s == Settlement::Nack), "{id}: {s:?}");
    }
    assert!(fake.calls.lock().unwrap().is_empty(), "a dry run executed an item");
}
