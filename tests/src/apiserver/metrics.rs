//! Request counters per verb and resource.

use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct RequestCounters {
    counts: Mutex<BTreeMap<(String, String), u64>>,
}

impl RequestCounters {
    pub fn record(&self, verb: &str, resource: &str) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts
            .entry((verb.to_string(), resource.to_string()))
            .or_default() += 1;
    }

    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP apiserver_request_total Requests by verb and resource.\n# TYPE apiserver_request_total counter\n",
        );
        for ((verb, resource), count) in self.snapshot() {
            out.push_str(&format!(
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\"}} {count}\n"
            ));
        }
        out
    }
}
