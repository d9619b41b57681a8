//! In-memory source for in-process tests of the pipeline: a tiny broker that hands out
//! messages, records every settlement, and redelivers nacked messages (with the delivery
//! count raised), as Pub/Sub and Service Bus do.
//!
//! Must never: be used outside tests (it is compiled for tests only).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use super::{AckHandle, Delivery, Error, Settlement, Source};

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<(String, Bytes, u32)>,
    settled: Vec<(String, Settlement)>,
    delivered: Vec<String>,
    /// Messages out (delivered, not settled).
    out: usize,
    closed: bool,
}

/// The broker side: send messages, read settlements. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
}

impl MemoryBroker {
    /// A broker with no messages.
    pub fn new() -> MemoryBroker {
        MemoryBroker::default()
    }

    /// Queue a message.
    pub fn send(&self, id: &str, payload: impl Into<Bytes>) {
        self.lock().queue.push_back((id.to_string(), payload.into(), 1));
        self.notify.notify_waiters();
    }

    /// Every settlement so far, in order: (message id, settlement).
    pub fn settlements(&self) -> Vec<(String, Settlement)> {
        self.lock().settled.clone()
    }

    /// The settlements of one message.
    pub fn settlements_of(&self, id: &str) -> Vec<Settlement> {
        self.lock()
            .settled
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, s)| *s)
            .collect()
    }

    /// How often `id` was delivered.
    pub fn deliveries(&self, id: &str) -> usize {
        self.lock().delivered.iter().filter(|i| *i == id).count()
    }

    /// Messages delivered and not settled yet.
    pub fn outstanding(&self) -> usize {
        self.lock().out
    }

    /// The source for a pipeline.
    pub fn source(&self) -> MemorySource {
        MemorySource { broker: self.clone() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("memory broker poisoned")
    }
}

/// The consumer side, as a [`Source`]. A nacked message is queued again with its delivery
/// count raised; an acked or rejected one is gone (reject = ack, counted).
#[derive(Debug)]
pub struct MemorySource {
    broker: MemoryBroker,
}

impl Source for MemorySource {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn next(&mut self) -> Option<Result<Delivery, Error>> {
        loop {
            let notified = self.broker.notify.notified();
            {
                let mut st = self.broker.lock();
                if st.closed {
                    return None;
                }
                if let Some((id, payload, attempt)) = st.queue.pop_front() {
                    st.out += 1;
                    st.delivered.push(id.clone());
                    drop(st);
                    let broker = self.broker.clone();
                    let (sid, spayload) = (id.clone(), payload.clone());
                    let handle = AckHandle::new(move |s| {
                        let mut st = broker.lock();
                        st.out -= 1;
                        st.settled.push((sid.clone(), s));
                        if s == Settlement::Nack && !st.closed {
                            st.queue.push_back((sid, spayload, attempt + 1));
                            drop(st);
                            broker.notify.notify_waiters();
                        }
                    });
                    return Some(Ok(Delivery {
                        id,
                        payload,
                        published: None,
                        attempt: Some(attempt),
                        handle,
                    }));
                }
            }
            notified.await;
        }
    }

    async fn close(self) {
        self.broker.lock().closed = true;
        self.broker.notify.notify_waiters();
    }
}
