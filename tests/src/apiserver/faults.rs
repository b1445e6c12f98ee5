//! Fault injection, driven by tests through [`super::ApiServerHandle`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::error::ApiError;

/// Error replies for a share of the matching requests.
#[derive(Debug, Clone)]
pub struct ErrorRule {
    /// HTTP status: 429, 500 or 503 (any code works; those are the useful ones).
    pub code: u16,
    /// Fraction of matching requests that fail, 0.0..=1.0.
    pub share: f64,
    /// Only requests with this verb ("get", "list", "watch", "create", ...).
    pub verb: Option<String>,
    /// Only requests for this resource ("leases", "services/status", ...).
    pub resource: Option<String>,
    /// Sent as Retry-After (and retryAfterSeconds) with 429 and 503.
    pub retry_after_seconds: u64,
}

impl ErrorRule {
    pub fn new(code: u16, share: f64) -> Self {
        Self {
            code,
            share: share.clamp(0.0, 1.0),
            verb: None,
            resource: None,
            retry_after_seconds: 1,
        }
    }

    pub fn for_verb(mut self, verb: &str) -> Self {
        self.verb = Some(verb.into());
        self
    }

    pub fn for_resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.into());
        self
    }

    fn applies(&self, verb: &str, resource: &str) -> bool {
        self.verb.as_deref().is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == resource)
    }
}

#[derive(Debug)]
struct ActiveRule {
    rule: ErrorRule,
    /// Accumulated share; a request fails each time it passes 1.0, which
    /// spreads failures evenly and keeps tests deterministic.
    credit: f64,
}

#[derive(Debug)]
pub struct Faults {
    latency: Mutex<Duration>,
    rules: Mutex<Vec<ActiveRule>>,
    reject_writes_until: Mutex<Option<Instant>>,
    force_gone_next_watch: AtomicBool,
    close_watches: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: Mutex::new(Duration::ZERO),
            rules: Mutex::new(Vec::new()),
            reject_writes_until: Mutex::new(None),
            force_gone_next_watch: AtomicBool::new(false),
            close_watches: watch::channel(0).0,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl Faults {
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.latency) = latency;
    }

    pub fn latency(&self) -> Duration {
        *lock(&self.latency)
    }

    pub fn add_error_rule(&self, rule: ErrorRule) {
        lock(&self.rules).push(ActiveRule { rule, credit: 0.0 });
    }

    pub fn clear_error_rules(&self) {
        lock(&self.rules).clear();
    }

    pub fn reject_writes_for(&self, duration: Duration) {
        *lock(&self.reject_writes_until) = Some(Instant::now() + duration);
    }

    pub fn force_gone_on_next_watch(&self) {
        self.force_gone_next_watch.store(true, Ordering::SeqCst);
    }

    pub fn take_forced_gone(&self) -> bool {
        self.force_gone_next_watch.swap(false, Ordering::SeqCst)
    }

    pub fn close_all_watches(&self) {
        self.close_watches
            .send_modify(|generation| *generation += 1);
    }

    pub fn watch_closer(&self) -> watch::Receiver<u64> {
        self.close_watches.subscribe()
    }

    pub fn clear(&self) {
        self.set_latency(Duration::ZERO);
        self.clear_error_rules();
        *lock(&self.reject_writes_until) = None;
        self.force_gone_next_watch.store(false, Ordering::SeqCst);
    }

    /// The injected error for this request, if any.
    pub fn error_for(&self, verb: &str, resource: &str) -> Option<ApiError> {
        if WRITE_VERBS.contains(&verb) {
            let until = *lock(&self.reject_writes_until);
            if until.is_some_and(|t| Instant::now() < t) {
                let mut err = ApiError::new(
                    503,
                    "ServiceUnavailable",
                    "writes are rejected for now (injected fault)",
                );
                err.retry_after_seconds = Some(1);
                return Some(err);
            }
        }
        let mut rules = lock(&self.rules);
        for active in rules.iter_mut() {
            if !active.rule.applies(verb, resource) {
                continue;
            }
            active.credit += active.rule.share;
            if active.credit >= 1.0 {
                active.credit -= 1.0;
                let code = active.rule.code;
                let (reason, message) = match code {
                    429 => (
                        "TooManyRequests",
                        "the server has received too many requests and has asked us to try again later (injected fault)",
                    ),
                    503 => (
                        "ServiceUnavailable",
                        "the server is currently unable to handle the request (injected fault)",
                    ),
                    _ => (
                        "InternalError",
                        "an error on the server has prevented the request from succeeding (injected fault)",
                    ),
                };
                let mut err = ApiError::new(code, reason, message);
                if matches!(code, 429 | 503) {
                    err.retry_after_seconds = Some(active.rule.retry_after_seconds);
                }
                return Some(err);
            }
        }
        None
    }
}
