//! The state machine behind [`super::ServiceBusServer`]: entities, peek-lock, settlement
//! and dead-lettering, as the Service Bus docs describe them (protocols.md §3.4), with no
//! HTTP in it.
//!
//! Invariants: a message is locked by at most one receiver at a time; every lock (a
//! delivery) increments `DeliveryCount` (1 on the first delivery); abandon and lock expiry
//! give the message back, and once it has been delivered `MaxDeliveryCount` times it moves
//! to the entity's `$deadletterqueue` with `DeadLetterReason = MaxDeliveryCountExceeded`;
//! a settle call with a token that is not the message's current, unexpired lock fails
//! (HTTP 404). Dead-letter queues are entities of their own (`PATH/$deadletterqueue`)
//! whose messages are never dead-lettered again.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::time::Instant;

/// Settings of a queue or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityOptions {
    /// `LockDuration` (Service Bus default 1 min, at most 5 min).
    pub lock_duration: Duration,
    /// `MaxDeliveryCount` (default 10).
    pub max_delivery_count: u32,
    /// `RequiresDuplicateDetection` with this history window; `None` = off.
    pub duplicate_detection: Option<Duration>,
}

impl Default for EntityOptions {
    fn default() -> Self {
        EntityOptions {
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
            duplicate_detection: None,
        }
    }
}

/// One message in an entity.
#[derive(Debug, Clone)]
pub struct Message {
    /// `SequenceNumber`, unique per server.
    pub seq: i64,
    /// `MessageId` (given by the sender or generated).
    pub message_id: String,
    /// The body bytes, as sent.
    pub body: Bytes,
    /// The sender's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// `Label`, if any.
    pub label: Option<String>,
    /// Custom properties: name and the header value as sent (`"quoted"` = string).
    pub properties: Vec<(String, String)>,
    /// `EnqueuedTimeUtc`.
    pub enqueued: SystemTime,
    /// `DeliveryCount`: how many times the message has been locked.
    pub delivery_count: u32,
    /// Current lock: token and expiry.
    pub lock: Option<(String, Instant)>,
}

/// What happened to one message id, over all entities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageStats {
    /// Peek-locks (deliveries).
    pub deliveries: u32,
    /// Successful completes.
    pub completions: u32,
    /// Successful abandons.
    pub abandons: u32,
    /// Successful lock renewals.
    pub renewals: u32,
    /// Locks that ran out (or were expired by the test).
    pub expiries: u32,
    /// Settle or renew calls that got 404 (stale or unknown lock).
    pub stale: u32,
    /// Moves to a dead-letter queue.
    pub dead_lettered: u32,
}

/// Message counts of one entity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Visible, waiting for a receiver.
    pub active: usize,
    /// Locked by a receiver.
    pub locked: usize,
    /// In the entity's dead-letter queue.
    pub dead_lettered: usize,
    /// Completed (deleted) so far.
    pub completed: usize,
}

#[derive(Debug, Default)]
struct Entity {
    opts: EntityOptions,
    messages: Vec<Message>,
    completed: Vec<Message>,
    recent_ids: Vec<(String, Instant)>,
}

/// A settle operation on a locked message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOp {
    /// DELETE: complete.
    Complete,
    /// PUT: abandon (unlock).
    Abandon,
    /// POST: renew the lock.
    Renew,
}

/// Why an operation failed (mapped to HTTP by the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The entity does not exist: 410.
    NoEntity,
    /// No message with that id and lock token: 404.
    NoLock,
}

/// All entities of one namespace.
#[derive(Debug, Default)]
pub struct Broker {
    entities: HashMap<String, Entity>,
    topics: HashMap<String, Vec<String>>,
    next_seq: i64,
    stats: HashMap<String, MessageStats>,
}

const DLQ: &str = "/$deadletterqueue";

fn key(path: &str) -> String {
    path.trim_matches('/').to_ascii_lowercase()
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).expect("a hex digit"))
        .collect()
}

/// A fresh GUID-shaped lock token.
fn guid() -> String {
    let h = random_hex(32);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

impl Broker {
    /// Create a queue or a topic's subscription entity (and its dead-letter queue).
    pub fn create(&mut self, path: &str, opts: EntityOptions) {
        let k = key(path);
        let dlq = EntityOptions {
            max_delivery_count: u32::MAX,
            duplicate_detection: None,
            ..opts
        };
        self.entities.insert(
            format!("{k}{DLQ}"),
            Entity {
                opts: dlq,
                ..Entity::default()
            },
        );
        self.entities.insert(
            k,
            Entity {
                opts,
                ..Entity::default()
            },
        );
    }

    /// Create a topic (a send target whose messages go to each subscription).
    pub fn create_topic(&mut self, topic: &str) {
        self.topics.entry(key(topic)).or_default();
    }

    /// Create `topic/subscriptions/name`.
    pub fn create_subscription(&mut self, topic: &str, name: &str, opts: EntityOptions) {
        let path = format!("{}/subscriptions/{}", key(topic), key(name));
        self.topics.entry(key(topic)).or_default().push(path.clone());
        self.create(&path, opts);
    }

    /// Enqueue (to a queue, or a copy to each subscription of a topic). Returns whether the
    /// message was accepted (`false` = dropped by duplicate detection).
    pub fn send(&mut self, path: &str, mut msg: Message, now: Instant) -> Result<bool, Failure> {
        let k = key(path);
        let targets = match self.topics.get(&k) {
            Some(subs) => subs.clone(),
            None if self.entities.contains_key(&k) && !k.ends_with(DLQ) && !k.contains("/subscriptions/") => vec![k],
            None => return Err(Failure::NoEntity),
        };
        let mut accepted = false;
        for t in targets {
            self.next_seq += 1;
            msg.seq = self.next_seq;
            let e = self.entities.get_mut(&t).ok_or(Failure::NoEntity)?;
            if let Some(window) = e.opts.duplicate_detection {
                e.recent_ids.retain(|(_, at)| now.duration_since(*at) < window);
                if e.recent_ids.iter().any(|(id, _)| *id == msg.message_id) {
                    continue;
                }
                e.recent_ids.push((msg.message_id.clone(), now));
            }
            e.messages.push(msg.clone());
            accepted = true;
        }
        Ok(accepted)
    }

    /// Give back every lock that ran out. Returns whether a message became visible.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut expired = Vec::new();
        for (k, e) in &self.entities {
            for m in &e.messages {
                if m.lock.as_ref().is_some_and(|(_, until)| *until <= now) {
                    expired.push((k.clone(), m.seq));
                }
            }
        }
        let any = !expired.is_empty();
        for (k, seq) in expired {
            let id = self.release(&k, seq);
            self.stats.entry(id).or_default().expiries += 1;
        }
        any
    }

    /// Unlock a message; dead-letter it when it has been delivered `MaxDeliveryCount` times.
    /// Returns its message id.
    fn release(&mut self, k: &str, seq: i64) -> String {
        let e = self.entities.get_mut(k).expect("entity of a locked message");
        let i = e.messages.iter().position(|m| m.seq == seq).expect("locked message");
        e.messages[i].lock = None;
        let id = e.messages[i].message_id.clone();
        if e.messages[i].delivery_count >= e.opts.max_delivery_count {
            let mut m = e.messages.remove(i);
            m.properties.retain(|(n, _)| !n.starts_with("DeadLetter"));
            m.properties
                .push(("DeadLetterReason".into(), "\"MaxDeliveryCountExceeded\"".into()));
            m.properties.push((
                "DeadLetterErrorDescription".into(),
                "\"Message could not be consumed after maximum delivery attempts.\"".into(),
            ));
            self.entities
                .get_mut(&format!("{k}{DLQ}"))
                .expect("every entity has a dead-letter queue")
                .messages
                .push(m);
            self.stats.entry(id.clone()).or_default().dead_lettered += 1;
        }
        id
    }

    /// Lock the first visible message of `path` (peek-lock); `Ok(None)` = none visible.
    pub fn lock_next(&mut self, path: &str, now: Instant) -> Result<Option<Message>, Failure> {
        let e = self.entities.get_mut(&key(path)).ok_or(Failure::NoEntity)?;
        let lock_duration = e.opts.lock_duration;
        let Some(m) = e.messages.iter_mut().find(|m| m.lock.is_none()) else {
            return Ok(None);
        };
        m.delivery_count += 1;
        m.lock = Some((guid(), now + lock_duration));
        let m = m.clone();
        self.stats.entry(m.message_id.clone()).or_default().deliveries += 1;
        Ok(Some(m))
    }

    /// Remove the first visible message (receive-and-delete).
    pub fn take_next(&mut self, path: &str) -> Result<Option<Message>, Failure> {
        let e = self.entities.get_mut(&key(path)).ok_or(Failure::NoEntity)?;
        let Some(i) = e.messages.iter().position(|m| m.lock.is_none()) else {
            return Ok(None);
        };
        let mut m = e.messages.remove(i);
        m.delivery_count += 1;
        self.stats.entry(m.message_id.clone()).or_default().deliveries += 1;
        Ok(Some(m))
    }

    /// Complete, abandon or renew the message `id` (sequence number or MessageId) locked
    /// with `token`. Returns the message after the operation.
    pub fn settle(
        &mut self,
        path: &str,
        id: &str,
        token: &str,
        op: SettleOp,
        now: Instant,
    ) -> Result<Message, Failure> {
        self.expire(now);
        let k = key(path);
        let e = self.entities.get_mut(&k).ok_or(Failure::NoEntity)?;
        let lock_duration = e.opts.lock_duration;
        let found = e.messages.iter().position(|m| {
            (m.seq.to_string() == id || m.message_id == id)
                && m.lock.as_ref().is_some_and(|(t, _)| t.eq_ignore_ascii_case(token))
        });
        let Some(i) = found else {
            // Count the stale call against the message it names, when it exists anywhere.
            let named = self
                .entities
                .values()
                .flat_map(|e| e.messages.iter().chain(&e.completed))
                .find(|m| m.seq.to_string() == id || m.message_id == id)
                .map(|m| m.message_id.clone())
                .unwrap_or_else(|| id.to_owned());
            self.stats.entry(named).or_default().stale += 1;
            return Err(Failure::NoLock);
        };
        let id = e.messages[i].message_id.clone();
        let stats = self.stats.entry(id).or_default();
        match op {
            SettleOp::Complete => {
                stats.completions += 1;
                let mut m = e.messages.remove(i);
                m.lock = None;
                e.completed.push(m.clone());
                Ok(m)
            }
            SettleOp::Renew => {
                stats.renewals += 1;
                let m = &mut e.messages[i];
                m.lock = m.lock.take().map(|(t, _)| (t, now + lock_duration));
                Ok(m.clone())
            }
            SettleOp::Abandon => {
                stats.abandons += 1;
                let m = e.messages[i].clone();
                self.release(&k, m.seq);
                Ok(m)
            }
        }
    }

    /// Make the lock of `message_id` run out now, as if its lock duration had passed.
    /// Returns whether it was locked.
    pub fn expire_lock(&mut self, message_id: &str, now: Instant) -> bool {
        let mut hit = false;
        for e in self.entities.values_mut() {
            for m in e.messages.iter_mut().filter(|m| m.message_id == message_id) {
                if let Some((_, until)) = m.lock.as_mut() {
                    *until = now;
                    hit = true;
                }
            }
        }
        self.expire(now);
        hit
    }

    /// Counts of the entity at `path`.
    pub fn counts(&self, path: &str) -> Counts {
        let k = key(path);
        let e = self.entities.get(&k);
        let messages = e.map(|e| e.messages.as_slice()).unwrap_or_default();
        Counts {
            active: messages.iter().filter(|m| m.lock.is_none()).count(),
            locked: messages.iter().filter(|m| m.lock.is_some()).count(),
            dead_lettered: self.entities.get(&format!("{k}{DLQ}")).map_or(0, |d| d.messages.len()),
            completed: e.map_or(0, |e| e.completed.len()),
        }
    }

    /// The messages now in `path`'s dead-letter queue.
    pub fn dead_letters(&self, path: &str) -> Vec<Message> {
        self.entities
            .get(&format!("{}{DLQ}", key(path)))
            .map(|d| d.messages.clone())
            .unwrap_or_default()
    }

    /// The messages completed in `path`, oldest first.
    pub fn completed(&self, path: &str) -> Vec<Message> {
        self.entities
            .get(&key(path))
            .map(|e| e.completed.clone())
            .unwrap_or_default()
    }

    /// The lock duration of `path`.
    pub fn lock_duration(&self, path: &str) -> Option<Duration> {
        self.entities.get(&key(path)).map(|e| e.opts.lock_duration)
    }

    /// What happened to `message_id`.
    pub fn stats(&self, message_id: &str) -> MessageStats {
        self.stats.get(message_id).copied().unwrap_or_default()
    }

    /// A new message with a generated MessageId unless `message_id` is given.
    pub fn new_message(message_id: Option<String>, body: Bytes) -> Message {
        Message {
            seq: 0,
            message_id: message_id.unwrap_or_else(|| random_hex(32)),
            body,
            content_type: None,
            label: None,
            properties: Vec::new(),
            enqueued: SystemTime::now(),
            delivery_count: 0,
            lock: None,
        }
    }
}
