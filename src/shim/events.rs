//! Publishes task events to containerd in the order they happen, through a bounded queue.
//! A failed publish is retried with backoff (containerd may be restarting); after the last
//! attempt the event is dropped and logged, and the shim never blocks on containerd: after
//! its restart containerd recovers state through Connect/State/Wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{Client, EventsClient};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// How many events may wait for containerd at once before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 1024;
/// Attempts per event before it is dropped.
pub const MAX_ATTEMPTS: u32 = 8;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where envelopes go; containerd's ttrpc Events service in production, a fake in tests.
#[async_trait::async_trait]
pub trait Forwarder: Send + 'static {
    async fn forward(&mut self, envelope: &Envelope) -> Result<()>;
}

/// What the sending task takes in order: events, and flush marks that answer once every
/// event queued before them is delivered or dropped.
enum Item {
    /// An event, and the flag to raise once containerd has accepted it (if anyone asks).
    Event(Envelope, Option<Arc<AtomicBool>>),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Item>,
    namespace: String,
}

impl Publisher {
    /// Starts the sending task on the current tokio runtime.
    pub fn spawn(namespace: String, forwarder: impl Forwarder) -> Publisher {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(drain(rx, forwarder, FIRST_BACKOFF));
        Publisher { tx, namespace }
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Queues an event; never waits. `type_name` is the Go type URL containerd registers,
    /// e.g. `containerd.events.TaskExit`.
    pub fn publish<M: Message>(&self, topic: &str, event: &M) {
        self.queue(topic, event, None);
    }

    /// As `publish`, and raises `delivered` once containerd has accepted the event (never,
    /// if it is dropped after the last attempt).
    pub fn publish_tracked<M: Message>(&self, topic: &str, event: &M, delivered: Arc<AtomicBool>) {
        self.queue(topic, event, Some(delivered));
    }

    fn queue<M: Message>(&self, topic: &str, event: &M, delivered: Option<Arc<AtomicBool>>) {
        let envelope = match envelope(&self.namespace, topic, event) {
            Ok(e) => e,
            Err(e) => {
                log::error!("event {topic}: {e}");
                return;
            }
        };
        if self.tx.try_send(Item::Event(envelope, delivered)).is_err() {
            log::error!("event {topic} dropped: queue full or closed");
        }
    }

    /// Waits, at most `limit`, until every event queued so far is delivered or dropped: the
    /// daemon calls it before exiting, so a pod's last TaskExit/TaskDelete are not lost
    /// with the process.
    pub async fn flush(&self, limit: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Item::Flush(tx)).await.is_ok() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }
}

/// The proto package of every Task event (containerd's api/events/task.proto).
const EVENTS_PACKAGE: &str = "containerd.events";

fn envelope<M: Message>(namespace: &str, topic: &str, event: &M) -> Result<Envelope> {
    let value = event
        .write_to_bytes()
        .map_err(|e| Error::Internal(format!("encode {topic}: {e}")))?;
    let mut any = Any::new();
    // containerd registers its event types under their Go names without a URL prefix. The
    // name is spelled out rather than read from the message descriptor: building
    // descriptors (protobuf reflection) costs every shim a few hundred KiB of heap.
    any.type_url = format!("{EVENTS_PACKAGE}.{}", M::NAME);
    any.value = value;
    let mut env = Envelope::new();
    env.timestamp = Some(Timestamp::now()).into();
    env.namespace = namespace.to_string();
    env.topic = topic.to_string();
    env.event = Some(any).into();
    Ok(env)
}

async fn drain(mut rx: mpsc::Receiver<Item>, mut fwd: impl Forwarder, first_backoff: Duration) {
    while let Some(item) = rx.recv().await {
        let (env, delivered) = match item {
            Item::Event(env, delivered) => (env, delivered),
            Item::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let mut backoff = first_backoff;
        for attempt in 1..=MAX_ATTEMPTS {
            match fwd.forward(&env).await {
                Ok(()) => {
                    if let Some(flag) = &delivered {
                        flag.store(true, Ordering::SeqCst);
                    }
                    break;
                }
                Err(e) if attempt == MAX_ATTEMPTS => {
                    log::error!("event {} dropped after {attempt} attempts: {e}", env.topic);
                }
                Err(e) => {
                    log::warn!("event {} attempt {attempt} failed: {e}", env.topic);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Forwards to containerd's `containerd.services.events.ttrpc.v1.Events` at `address`,
/// reconnecting after any failure.
pub struct TtrpcForwarder {
    address: String,
    client: Option<EventsClient>,
}

impl TtrpcForwarder {
    pub fn new(address: &str) -> TtrpcForwarder {
        let address = if address.contains("://") {
            address.to_string()
        } else {
            format!("unix://{address}")
        };
        TtrpcForwarder {
            address,
            client: None,
        }
    }
}

#[async_trait::async_trait]
impl Forwarder for TtrpcForwarder {
    async fn forward(&mut self, envelope: &Envelope) -> Result<()> {
        if self.address == "unix://" {
            return Err(Error::InvalidArgument(
                "no TTRPC_ADDRESS to publish events to".into(),
            ));
        }
        if self.client.is_none() {
            let c = Client::connect(&self.address)
                .await
                .map_err(|e| Error::Runtime(format!("connect {}: {e}", self.address)))?;
            self.client = Some(EventsClient::new(c));
        }
        let Some(client) = self.client.as_ref() else {
            return Err(Error::Internal("events client missing".into()));
        };
        let mut req = ForwardRequest::new();
        req.envelope = Some(envelope.clone()).into();
        let ctx = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
        if let Err(e) = client.forward(ctx, &req).await {
            self.client = None;
            return Err(Error::Runtime(format!("forward {}: {e}", envelope.topic)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::events::task::{TaskCreate, TaskExit};
    use std::sync::{Arc, Mutex};

    struct Flaky {
        fail_first: u32,
        calls: u32,
        seen: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait::async_trait]
    impl Forwarder for Flaky {
        async fn forward(&mut self, env: &Envelope) -> Result<()> {
            self.calls += 1;
            if self.calls <= self.fail_first {
                return Err(Error::Runtime("containerd down".into()));
            }
            self.seen.lock().unwrap().push(env.topic.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn retries_then_delivers_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel(8);
        let p = Publisher {
            tx,
            namespace: "default".into(),
        };
        p.publish("/tasks/create", &TaskCreate::new());
        p.publish("/tasks/exit", &TaskExit::new());
        drop(p);
        let fwd = Flaky {
            fail_first: 3,
            calls: 0,
            seen: seen.clone(),
        };
        drain(rx, fwd, Duration::from_millis(1)).await;
        assert_eq!(*seen.lock().unwrap(), vec!["/tasks/create", "/tasks/exit"]);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_and_moves_on() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel(8);
        let p = Publisher {
            tx,
            namespace: "default".into(),
        };
        p.publish("/tasks/create", &TaskCreate::new());
        p.publish("/tasks/exit", &TaskExit::new());
        drop(p);
        let fwd = Flaky {
            fail_first: MAX_ATTEMPTS,
            calls: 0,
            seen: seen.clone(),
        };
        drain(rx, fwd, Duration::from_millis(1)).await;
        // The first event used up its attempts; the second still went out.
        assert_eq!(*seen.lock().unwrap(), vec!["/tasks/exit"]);
    }

    #[test]
    fn envelope_carries_go_type_name() {
        let env = envelope("k8s.io", "/tasks/exit", &TaskExit::new()).unwrap();
        assert_eq!(env.event.type_url, "containerd.events.TaskExit");
        assert_eq!(env.namespace, "k8s.io");
        assert_eq!(env.topic, "/tasks/exit");
    }

    #[test]
    fn full_queue_drops_without_blocking() {
        let (tx, rx) = mpsc::channel(1);
        let p = Publisher {
            tx,
            namespace: "n".into(),
        };
        p.publish("/tasks/create", &TaskCreate::new());
        p.publish("/tasks/exit", &TaskExit::new());
        assert_eq!(rx.len(), 1, "the second event is dropped, not queued");
    }

    #[tokio::test]
    async fn flush_waits_for_what_was_queued_before_it() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fwd = Flaky {
            fail_first: 2,
            calls: 0,
            seen: seen.clone(),
        };
        let (tx, rx) = mpsc::channel(8);
        let p = Publisher {
            tx,
            namespace: "default".into(),
        };
        tokio::spawn(drain(rx, fwd, Duration::from_millis(5)));
        p.publish("/tasks/exit", &TaskExit::new());
        p.flush(Duration::from_secs(5)).await;
        assert_eq!(*seen.lock().unwrap(), vec!["/tasks/exit"]);
    }
}
