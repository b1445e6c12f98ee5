//! Kubernetes Events, published by a few tasks from a bounded queue. A burst (10,000 Services
//! advertised at once) must not become 10,000 requests in flight, each holding its buffers:
//! beyond the queue's room, events are dropped and counted, as the API server's own rate
//! limits would drop them anyway.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Recorder, Reporter};
use tokio::sync::mpsc;

/// Events waiting at most; a burst beyond this is dropped.
const QUEUE: usize = 1024;
/// Requests in flight at most.
const IN_FLIGHT: usize = 4;
/// A dropped event is logged once per this many.
const LOG_EVERY: u64 = 1000;

pub struct EventQueue {
    queue: mpsc::Sender<(Event, ObjectReference)>,
    dropped: Arc<AtomicU64>,
}

impl EventQueue {
    /// Starts the publishing tasks; they end when the queue is dropped.
    pub fn start(client: Client, reporter: Reporter) -> Self {
        let (queue, mut receiver) = mpsc::channel::<(Event, ObjectReference)>(QUEUE);
        let events = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
        tokio::spawn(futures::StreamExt::for_each_concurrent(
            events,
            IN_FLIGHT,
            move |(event, reference)| {
                // A fresh recorder each: only `create` is granted, and a recorder that has seen
                // an event before would patch it into a series.
                let recorder = Recorder::new(client.clone(), reporter.clone());
                async move {
                    if let Err(error) = recorder.publish(&event, &reference).await {
                        tracing::warn!(%error, "publishing an event failed");
                    }
                }
            },
        ));
        Self {
            queue,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues `event` about `reference`, or drops it when the queue is full.
    pub fn publish(&self, event: Event, reference: ObjectReference) {
        if self.queue.try_send((event, reference)).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped % LOG_EVERY == 1 {
                tracing::warn!(dropped, "too many events at once: some were not published");
            }
        }
    }
}
