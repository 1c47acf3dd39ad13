//! Publishes task events to containerd in the order they happen, through a queue the
//! shim never blocks on. A failed publish is retried with backoff (containerd may be
//! restarting); after the last attempt the event is dropped: after its restart containerd
//! recovers state through Connect/State/Wait. The queue holds `QUEUE_CAPACITY` events;
//! beyond that new events are dropped and counted, except TaskExit, which is always
//! queued: an exit is the one event containerd cannot learn again by asking for it
//! before the process is deleted. Failures are reported per outage, not per attempt.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{Client, EventsClient};
use containerd_shim_protos::topics;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// How many events may wait for containerd at once before new ones (but TaskExit) are
/// dropped.
pub const QUEUE_CAPACITY: usize = 1024;
/// Attempts per event before it is dropped.
pub const MAX_ATTEMPTS: u32 = 8;

/// The sending task's clock: backoff between attempts, and how often a long outage that
/// keeps dropping events is reported again.
#[derive(Clone, Copy)]
struct Timing {
    first_backoff: Duration,
    max_backoff: Duration,
    report_every: Duration,
}

const TIMING: Timing = Timing {
    first_backoff: Duration::from_millis(50),
    max_backoff: Duration::from_secs(2),
    report_every: Duration::from_secs(60),
};

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

/// Counters shared by the publishers and the sending task.
#[derive(Default)]
struct Queue {
    /// Events queued and not yet taken by the sending task.
    waiting: AtomicUsize,
    /// Events dropped because the queue was full, not yet reported by the sending task.
    dropped: AtomicU64,
}

#[derive(Clone)]
pub struct Publisher {
    // Unbounded so that TaskExit and flush marks always get in; `Queue::waiting` bounds
    // every other event.
    tx: mpsc::UnboundedSender<Item>,
    queue: Arc<Queue>,
    namespace: String,
}

impl Publisher {
    /// Starts the sending task on the current tokio runtime.
    pub fn spawn(namespace: String, forwarder: impl Forwarder) -> Publisher {
        let (p, rx) = Publisher::channel(namespace);
        tokio::spawn(drain(rx, p.queue.clone(), forwarder, TIMING));
        p
    }

    fn channel(namespace: String) -> (Publisher, mpsc::UnboundedReceiver<Item>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let p = Publisher {
            tx,
            queue: Arc::default(),
            namespace,
        };
        (p, rx)
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
        let always = topic == topics::TASK_EXIT_EVENT_TOPIC;
        if !always && self.queue.waiting.load(Ordering::SeqCst) >= QUEUE_CAPACITY {
            // One line per full spell; the sending task reports the count once it drains.
            if self.queue.dropped.fetch_add(1, Ordering::SeqCst) == 0 {
                log::error!(
                    "event queue full ({QUEUE_CAPACITY} events wait for containerd): dropping \
                     {topic} and further events other than TaskExit until it drains"
                );
            }
            return;
        }
        let envelope = match envelope(&self.namespace, topic, event) {
            Ok(e) => e,
            Err(e) => {
                log::error!("event {topic}: {e}");
                return;
            }
        };
        self.queue.waiting.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(Item::Event(envelope, delivered)).is_err() {
            self.queue.waiting.fetch_sub(1, Ordering::SeqCst);
            log::error!("event {topic} dropped: the sending task has stopped");
        }
    }

    /// Waits, at most `limit`, until every event queued so far is delivered or dropped: the
    /// daemon calls it before exiting, so a pod's last TaskExit/TaskDelete are not lost
    /// with the process. Never longer than `limit`, however full the queue.
    pub async fn flush(&self, limit: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Item::Flush(tx)).is_ok() {
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

/// A spell during which containerd does not take events (a restart, say): said once when
/// it begins, once more on the first event dropped and then at most every
/// `report_every`, and summed up when containerd takes events again. A line per failed
/// attempt would be `MAX_ATTEMPTS` lines per event for every event of the spell.
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
    failed_attempts: u64,
    /// Events given up after their last attempt, by topic.
    dropped: BTreeMap<String, u64>,
    last_report: Option<Instant>,
}

impl Outage {
    fn failed(&mut self, topic: &str, e: &Error) {
        self.failed_attempts += 1;
        if self.since.is_none() {
            self.since = Some(Instant::now());
            log::warn!(
                "containerd does not take events ({topic}: {e}); retrying each up to \
                 {MAX_ATTEMPTS} times, and saying more only when it does or drops one"
            );
        }
    }

    fn dropped(&mut self, topic: &str, report_every: Duration) {
        *self.dropped.entry(topic.to_string()).or_default() += 1;
        let now = Instant::now();
        if self
            .last_report
            .is_none_or(|t| now.duration_since(t) >= report_every)
        {
            self.last_report = Some(now);
            log::error!(
                "containerd has not taken events for {:?}: dropped after {MAX_ATTEMPTS} \
                 attempts each so far: {}",
                self.since
                    .map(|s| now.duration_since(s))
                    .unwrap_or_default(),
                self.dropped_summary()
            );
        }
    }

    fn delivered(&mut self) {
        let Some(since) = self.since.take() else {
            return;
        };
        log::warn!(
            "containerd takes events again after {:?}: {} attempts failed meanwhile; \
             dropped: {}",
            since.elapsed(),
            self.failed_attempts,
            self.dropped_summary()
        );
        *self = Outage::default();
    }

    fn dropped_summary(&self) -> String {
        if self.dropped.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> = self
            .dropped
            .iter()
            .map(|(topic, n)| format!("{n} {topic}"))
            .collect();
        parts.join(", ")
    }
}

async fn drain(
    mut rx: mpsc::UnboundedReceiver<Item>,
    queue: Arc<Queue>,
    mut fwd: impl Forwarder,
    timing: Timing,
) {
    let mut outage = Outage::default();
    while let Some(item) = rx.recv().await {
        let (env, delivered) = match item {
            Item::Event(env, delivered) => (env, delivered),
            Item::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let waiting = queue.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        // Reported once the queue is half empty, so a queue that stays full gives one
        // line per spell, not one per event.
        if waiting <= QUEUE_CAPACITY / 2 {
            let dropped = queue.dropped.swap(0, Ordering::SeqCst);
            if dropped > 0 {
                log::error!(
                    "{dropped} events (no TaskExit) were dropped while the event queue was full"
                );
            }
        }
        let mut backoff = timing.first_backoff;
        for attempt in 1..=MAX_ATTEMPTS {
            match fwd.forward(&env).await {
                Ok(()) => {
                    if let Some(flag) = &delivered {
                        flag.store(true, Ordering::SeqCst);
                    }
                    outage.delivered();
                    break;
                }
                Err(e) => {
                    outage.failed(&env.topic, &e);
                    if attempt == MAX_ATTEMPTS {
                        outage.dropped(&env.topic, timing.report_every);
                    } else {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(timing.max_backoff);
                    }
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
    use std::sync::{Arc, Mutex, OnceLock};
    use std::thread::ThreadId;

    const FAST: Timing = Timing {
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        report_every: Duration::from_secs(3600),
    };

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

    /// Holds every event until the gate opens (containerd busy or gone), then records it.
    struct Gated {
        gate: Arc<tokio::sync::Notify>,
        open: bool,
        seen: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait::async_trait]
    impl Forwarder for Gated {
        async fn forward(&mut self, env: &Envelope) -> Result<()> {
            if !self.open {
                self.gate.notified().await;
                self.open = true;
            }
            self.seen.lock().unwrap().push(env.topic.clone());
            Ok(())
        }
    }

    /// Log lines, with the thread that wrote them: a test reads only its own thread's (a
    /// current-thread tokio test runs its sending task on the test's thread).
    struct Capture(Mutex<Vec<(ThreadId, String)>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, r: &log::Record) {
            if r.target().ends_with("shim::events") {
                let line = format!("{} {}", r.level(), r.args());
                self.0
                    .lock()
                    .unwrap()
                    .push((std::thread::current().id(), line));
            }
        }
        fn flush(&self) {}
    }

    fn captured() -> &'static Capture {
        static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
        CAPTURE.get_or_init(|| {
            let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
            let _ = log::set_logger(c);
            log::set_max_level(log::LevelFilter::Trace);
            c
        })
    }

    fn lines_of_this_thread() -> Vec<String> {
        let me = std::thread::current().id();
        captured()
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t == me)
            .map(|(_, l)| l.clone())
            .collect()
    }

    #[tokio::test]
    async fn retries_then_delivers_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (p, rx) = Publisher::channel("default".into());
        p.publish("/tasks/create", &TaskCreate::new());
        p.publish("/tasks/exit", &TaskExit::new());
        let queue = p.queue.clone();
        drop(p);
        let fwd = Flaky {
            fail_first: 3,
            calls: 0,
            seen: seen.clone(),
        };
        drain(rx, queue, fwd, FAST).await;
        assert_eq!(*seen.lock().unwrap(), vec!["/tasks/create", "/tasks/exit"]);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_and_moves_on() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (p, rx) = Publisher::channel("default".into());
        p.publish("/tasks/create", &TaskCreate::new());
        p.publish("/tasks/exit", &TaskExit::new());
        let queue = p.queue.clone();
        drop(p);
        let fwd = Flaky {
            fail_first: MAX_ATTEMPTS,
            calls: 0,
            seen: seen.clone(),
        };
        drain(rx, queue, fwd, FAST).await;
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
    fn full_queue_drops_other_events_without_blocking() {
        let (p, rx) = Publisher::channel("n".into());
        for _ in 0..QUEUE_CAPACITY + 3 {
            p.publish("/tasks/create", &TaskCreate::new());
        }
        assert_eq!(
            rx.len(),
            QUEUE_CAPACITY,
            "events beyond the capacity are dropped"
        );
        assert_eq!(p.queue.dropped.load(Ordering::SeqCst), 3, "and counted");
    }

    // Public API only (spawn, publish, flush), as on the main branch before the fix,
    // where the TaskExit published into a full queue was dropped.
    #[tokio::test]
    async fn full_queue_never_drops_task_exit() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Notify::new());
        let p = Publisher::spawn(
            "n".into(),
            Gated {
                gate: gate.clone(),
                open: false,
                seen: seen.clone(),
            },
        );
        for _ in 0..QUEUE_CAPACITY + 5 {
            p.publish("/tasks/create", &TaskCreate::new());
        }
        p.publish("/tasks/exit", &TaskExit::new());
        gate.notify_one();
        p.flush(Duration::from_secs(10)).await;
        let seen = seen.lock().unwrap();
        assert_eq!(seen.last().map(String::as_str), Some("/tasks/exit"));
        assert!(seen.len() <= QUEUE_CAPACITY + 1, "{} events", seen.len());
    }

    // The daemon flushes with a limit before it exits; with containerd stuck and the queue
    // full the flush must still return within that limit (main's waited for queue room
    // first, which a stuck containerd never makes).
    #[tokio::test]
    async fn flush_is_bounded_even_when_the_queue_is_full() {
        let p = Publisher::spawn(
            "n".into(),
            Gated {
                gate: Arc::new(tokio::sync::Notify::new()),
                open: false,
                seen: Arc::default(),
            },
        );
        for _ in 0..QUEUE_CAPACITY + 5 {
            p.publish("/tasks/create", &TaskCreate::new());
        }
        // The sending task takes the first and is stuck in it; fill its place too.
        tokio::task::yield_now().await;
        p.publish("/tasks/create", &TaskCreate::new());
        let began = std::time::Instant::now();
        let flushed =
            tokio::time::timeout(Duration::from_secs(3), p.flush(Duration::from_millis(100))).await;
        assert!(flushed.is_ok(), "flush(100ms) still waiting after 3 s");
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "{:?}",
            began.elapsed()
        );
    }

    // A containerd restart: the first event fails every attempt and is dropped, the next
    // fails a few times more, then containerd answers. Public API and real backoff, as on
    // the main branch, which logged a line per failed attempt (11 here).
    #[tokio::test]
    async fn an_outage_is_logged_per_spell_not_per_attempt() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        captured();
        let p = Publisher::spawn(
            "n".into(),
            Flaky {
                fail_first: MAX_ATTEMPTS + 3,
                calls: 0,
                seen: seen.clone(),
            },
        );
        p.publish("/tasks/create", &TaskCreate::new());
        p.publish("/tasks/exit", &TaskExit::new());
        p.publish("/tasks/delete", &TaskCreate::new());
        p.flush(Duration::from_secs(30)).await;
        assert_eq!(*seen.lock().unwrap(), vec!["/tasks/exit", "/tasks/delete"]);
        let lines = lines_of_this_thread();
        assert!(lines.len() <= 3, "{} lines: {lines:#?}", lines.len());
        let last = lines.last().cloned().unwrap_or_default();
        assert!(
            last.contains("takes events again") && last.contains("1 /tasks/create"),
            "{lines:#?}"
        );
    }

    #[tokio::test]
    async fn a_long_outage_repeats_its_drop_report_at_most_every_period() {
        captured();
        let (p, rx) = Publisher::channel("n".into());
        for _ in 0..20 {
            p.publish("/tasks/create", &TaskCreate::new());
        }
        let queue = p.queue.clone();
        drop(p);
        let fwd = Flaky {
            fail_first: u32::MAX,
            calls: 0,
            seen: Arc::default(),
        };
        drain(rx, queue, fwd, FAST).await;
        // One line when it began, one on the first drop; the period (an hour) never passed.
        let lines = lines_of_this_thread();
        assert_eq!(lines.len(), 2, "{lines:#?}");
    }

    #[tokio::test]
    async fn flush_waits_for_what_was_queued_before_it() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let fwd = Flaky {
            fail_first: 2,
            calls: 0,
            seen: seen.clone(),
        };
        let (p, rx) = Publisher::channel("default".into());
        tokio::spawn(drain(rx, p.queue.clone(), fwd, FAST));
        p.publish("/tasks/exit", &TaskExit::new());
        p.flush(Duration::from_secs(5)).await;
        assert_eq!(*seen.lock().unwrap(), vec!["/tasks/exit"]);
    }
}
