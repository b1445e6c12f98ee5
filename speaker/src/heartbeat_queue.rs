//! The hand-over of accepted heartbeats from the reader threads to the speaker's loop.
//!
//! Most heartbeats repeat what their sender said last time and only show it is still there.
//! Those wait here, stamped with the moment they were read, until the loop next wakes for a
//! reason of its own (its next heartbeat is at most an interval away, a peer's deadline may be
//! sooner). The loop applies everything queued before it decides anything, with the read
//! times, so it decides as if it had woken for each one; it just wakes a dozen times a second
//! instead of once per peer's heartbeat. A heartbeat that says something new wakes the loop at
//! once ([`NewsFilter`]), and so does every heartbeat while the loop asks for them eagerly
//! (this node is rejoining and waits to hear from each peer).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::heartbeat::{Heartbeat, Kind, NodeId};
use crate::heartbeat_transport::Accepted;

/// Accepted heartbeats waiting for the loop: with 100 peers on 4 networks at 75 ms, three
/// quarters of a second of them. Only authenticated, fresh, known senders take a place.
pub const ACCEPTED_QUEUE_LEN: usize = 4096;

/// How long a reader's memory of a sender lasts once it is no longer heard.
const FORGET_AFTER: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Inner {
    waiting: Mutex<Vec<Accepted>>,
    news: Notify,
    eager: AtomicBool,
}

/// Shared by the readers (which push) and the loop (which takes).
#[derive(Clone, Default)]
pub struct AcceptedQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AcceptedQueue {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AcceptedQueue")
            .field("waiting", &self.lock().len())
            .field("eager", &self.eager())
            .finish()
    }
}

impl AcceptedQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Accepted>> {
        self.inner
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `batch`, waking the loop if `news`. Returns how many did not fit (the loop is
    /// far behind); they are dropped, like heartbeats lost on the wire.
    pub fn push(&self, batch: &mut Vec<Accepted>, news: bool) -> usize {
        let dropped = {
            let mut waiting = self.lock();
            let room = ACCEPTED_QUEUE_LEN.saturating_sub(waiting.len());
            let dropped = batch.len().saturating_sub(room);
            batch.truncate(room);
            waiting.append(batch);
            dropped
        };
        batch.clear();
        if news || self.eager() {
            self.inner.news.notify_one();
        }
        dropped
    }

    /// Everything queued so far, oldest first.
    pub fn take(&self) -> Vec<Accepted> {
        std::mem::take(&mut *self.lock())
    }

    /// Returns once a reader queued news since the last call (at once if it already has).
    pub async fn news(&self) {
        self.inner.news.notified().await;
    }

    /// While `eager`, every heartbeat wakes the loop.
    pub fn set_eager(&self, eager: bool) {
        self.inner.eager.store(eager, Ordering::Relaxed);
    }

    pub fn eager(&self) -> bool {
        self.inner.eager.load(Ordering::Relaxed)
    }
}

struct Seen {
    at: Instant,
    kind: Kind,
    suspects: Vec<NodeId>,
    reported: Vec<NodeId>,
}

/// A reader's memory of what each sender said last, to tell news from repetition.
pub struct NewsFilter {
    /// A sender unheard for longer than this was (as good as) missed: its next heartbeat is
    /// news. One interval and the jitter, the fence: no regular heartbeat comes later.
    quiet_for: Duration,
    seen: HashMap<NodeId, Seen>,
    next_forget: Option<Instant>,
}

impl NewsFilter {
    pub fn new(quiet_for: Duration) -> Self {
        Self {
            quiet_for,
            seen: HashMap::new(),
            next_forget: None,
        }
    }

    /// Whether `heartbeat`, read at `now`, may change what the loop decides: the sender's
    /// first, one after a silence, or one whose kind or lists differ from its last.
    pub fn is_news(&mut self, heartbeat: &Heartbeat, now: Instant) -> bool {
        self.forget_the_long_gone(now);
        let news = self.seen.get(&heartbeat.node).is_none_or(|seen| {
            now.saturating_duration_since(seen.at) > self.quiet_for
                || seen.kind != heartbeat.kind
                || seen.suspects != heartbeat.suspects
                || seen.reported != heartbeat.reported
        });
        match self.seen.get_mut(&heartbeat.node) {
            Some(seen) if !news => seen.at = seen.at.max(now),
            _ => {
                self.seen.insert(
                    heartbeat.node,
                    Seen {
                        at: now,
                        kind: heartbeat.kind,
                        suspects: heartbeat.suspects.clone(),
                        reported: heartbeat.reported.clone(),
                    },
                );
            }
        }
        news
    }

    /// Senders are known nodes, so the memory is bounded by the cluster; this keeps it to the
    /// nodes still heard.
    fn forget_the_long_gone(&mut self, now: Instant) {
        if self.next_forget.is_some_and(|at| now < at) {
            return;
        }
        self.next_forget = Some(now + FORGET_AFTER);
        self.seen
            .retain(|_, seen| now.saturating_duration_since(seen.at) < FORGET_AFTER);
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::MacAddr;
    use ferrolb_crds::InterfaceName;

    const QUIET: Duration = Duration::from_millis(95);

    fn heartbeat(node: u64, suspects: Vec<NodeId>) -> Heartbeat {
        Heartbeat {
            kind: Kind::Heartbeat,
            api_reachable: true,
            key_id: 1,
            node: NodeId(node),
            incarnation: 1,
            sequence: 1,
            sent_unix_ms: 0,
            suspects,
            reported: Vec::new(),
        }
    }

    fn accepted(node: u64, at: Instant) -> Accepted {
        Accepted {
            interface: InterfaceName::new("lan0").unwrap(),
            at,
            source_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            heartbeat: heartbeat(node, Vec::new()),
        }
    }

    #[test]
    fn repetitions_are_not_news_but_firsts_changes_silences_and_goodbyes_are() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut filter = NewsFilter::new(QUIET);
        assert!(filter.is_news(&heartbeat(1, vec![]), start));
        assert!(!filter.is_news(&heartbeat(1, vec![]), start + ms(75)));
        assert!(!filter.is_news(&heartbeat(1, vec![]), start + ms(170)));
        assert!(filter.is_news(&heartbeat(1, vec![NodeId(3)]), start + ms(240)));
        assert!(!filter.is_news(&heartbeat(1, vec![NodeId(3)]), start + ms(300)));
        assert!(filter.is_news(&heartbeat(1, vec![]), start + ms(370)));
        // Silent for longer than the fence.
        assert!(filter.is_news(&heartbeat(1, vec![]), start + ms(470)));
        let mut goodbye = heartbeat(1, vec![]);
        goodbye.kind = Kind::Goodbye;
        assert!(filter.is_news(&goodbye, start + ms(480)));
        // Another sender has a memory of its own.
        assert!(filter.is_news(&heartbeat(2, vec![]), start + ms(480)));
    }

    #[test]
    fn senders_no_longer_heard_are_forgotten() {
        let start = Instant::now();
        let mut filter = NewsFilter::new(QUIET);
        for node in 0..100 {
            filter.is_news(&heartbeat(node, vec![]), start);
        }
        assert_eq!(filter.remembered(), 100);
        filter.is_news(&heartbeat(7, vec![]), start + FORGET_AFTER + QUIET);
        assert_eq!(filter.remembered(), 1);
    }

    #[tokio::test]
    async fn only_news_or_eagerness_wakes_the_loop_and_nothing_queued_is_lost() {
        let queue = AcceptedQueue::default();
        let now = Instant::now();
        let woken =
            |queue: &AcceptedQueue| futures::FutureExt::now_or_never(queue.news()).is_some();
        assert_eq!(queue.push(&mut vec![accepted(1, now)], false), 0);
        assert!(!woken(&queue));
        assert_eq!(queue.push(&mut vec![accepted(2, now)], true), 0);
        assert!(woken(&queue));
        assert!(!woken(&queue), "one wake per news");
        queue.set_eager(true);
        queue.push(&mut vec![accepted(3, now)], false);
        assert!(woken(&queue));
        let nodes: Vec<u64> = queue.take().iter().map(|a| a.heartbeat.node.0).collect();
        assert_eq!(nodes, [1, 2, 3]);
        assert!(queue.take().is_empty());
    }

    #[test]
    fn a_full_queue_drops_and_says_how_many() {
        let queue = AcceptedQueue::default();
        let now = Instant::now();
        let mut batch: Vec<Accepted> = (0..ACCEPTED_QUEUE_LEN as u64 + 5)
            .map(|node| accepted(node, now))
            .collect();
        assert_eq!(queue.push(&mut batch, false), 5);
        assert!(batch.is_empty());
        assert_eq!(queue.take().len(), ACCEPTED_QUEUE_LEN);
    }
}
