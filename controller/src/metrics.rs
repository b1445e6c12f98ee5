//! Prometheus metrics of the controller.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use ferrolb_crds::{AddressCount, IpFamily};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// Every metric the controller exports.
pub struct Metrics {
    pub registry: Registry,
    addresses_total: Family<Labels, Gauge<f64, AtomicU64>>,
    addresses_in_use: Family<Labels, Gauge<f64, AtomicU64>>,
    pool_ready: Family<Labels, Gauge>,
    /// The reason each pool's Ready series carries, so a change of reason replaces the series.
    pool_ready_reasons: Mutex<BTreeMap<String, String>>,
    allocation_failures: Family<Labels, Counter>,
    api_errors: Family<Labels, Counter>,
    pub reconcile_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts up to 2^128 as a float: exact below 2^53, close enough for dashboards above.
fn as_f64(count: AddressCount) -> f64 {
    count.as_u128().map_or(2f64.powi(128), |n| n as f64)
}

fn ready_labels(pool: &str, reason: &str) -> Labels {
    vec![
        ("pool".to_owned(), pool.to_owned()),
        ("reason".to_owned(), reason.to_owned()),
    ]
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferrolb_controller");
        let addresses_total = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let addresses_in_use = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let pool_ready = Family::<Labels, Gauge>::default();
        let allocation_failures = Family::<Labels, Counter>::default();
        let api_errors = Family::<Labels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.0001, 4.0, 10));
        registry.register(
            "pool_addresses",
            "Addresses a pool can hand out, per pool and family",
            addresses_total.clone(),
        );
        registry.register(
            "pool_addresses_in_use",
            "Addresses assigned to Services, per pool and family",
            addresses_in_use.clone(),
        );
        registry.register(
            "pool_ready",
            "1 when the pool's Ready condition is True, else 0, with the condition's reason",
            pool_ready.clone(),
        );
        registry.register(
            "allocation_failures",
            "Allocations that failed, by reason",
            allocation_failures.clone(),
        );
        registry.register(
            "kubernetes_api_errors",
            "Failed Kubernetes API calls, by resource and verb",
            api_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time to process one batch of changes",
            reconcile_duration.clone(),
        );
        Self {
            registry,
            addresses_total,
            addresses_in_use,
            pool_ready,
            pool_ready_reasons: Mutex::default(),
            allocation_failures,
            api_errors,
            reconcile_duration,
        }
    }

    pub fn set_pool(
        &self,
        pool: &str,
        family: IpFamily,
        total: AddressCount,
        in_use: AddressCount,
    ) {
        let labels = vec![
            ("pool".to_owned(), pool.to_owned()),
            ("family".to_owned(), family.to_string()),
        ];
        self.addresses_total
            .get_or_create(&labels)
            .set(as_f64(total));
        self.addresses_in_use
            .get_or_create(&labels)
            .set(as_f64(in_use));
    }

    /// The pool's Ready condition: one series per pool, labelled with the current reason.
    pub fn set_pool_ready(&self, pool: &str, ready: bool, reason: &str) {
        let mut reasons = self
            .pool_ready_reasons
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(previous) = reasons.insert(pool.to_owned(), reason.to_owned())
            && previous != reason
        {
            self.pool_ready.remove(&ready_labels(pool, &previous));
        }
        self.pool_ready
            .get_or_create(&ready_labels(pool, reason))
            .set(i64::from(ready));
    }

    /// Forgets the series of a pool that is gone.
    pub fn remove_pool(&self, pool: &str) {
        for family in IpFamily::BOTH {
            let labels = vec![
                ("pool".to_owned(), pool.to_owned()),
                ("family".to_owned(), family.to_string()),
            ];
            self.addresses_total.remove(&labels);
            self.addresses_in_use.remove(&labels);
        }
        let previous = self
            .pool_ready_reasons
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(pool);
        if let Some(reason) = previous {
            self.pool_ready.remove(&ready_labels(pool, &reason));
        }
    }

    pub fn allocation_failed(&self, reason: &str) {
        self.allocation_failures
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }

    pub fn api_error(&self, resource: &str, verb: &str) {
        self.api_errors
            .get_or_create(&vec![
                ("resource".to_owned(), resource.to_owned()),
                ("verb".to_owned(), verb.to_owned()),
            ])
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_pool_counts_failures_and_api_errors() {
        let metrics = Metrics::new();
        metrics.set_pool(
            "lan",
            IpFamily::IPv6,
            AddressCount::new(1 << 80),
            AddressCount::new(2),
        );
        metrics.allocation_failed("exhausted");
        metrics.api_error("services/status", "patch");
        metrics.reconcile_duration.observe(0.002);
        let text = metrics.encode();
        assert!(
            text.contains(
                "ferrolb_controller_pool_addresses_in_use{pool=\"lan\",family=\"IPv6\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("ferrolb_controller_allocation_failures_total{reason=\"exhausted\"} 1")
        );
        assert!(text.contains("ferrolb_controller_kubernetes_api_errors_total{resource=\"services/status\",verb=\"patch\"} 1"));
        assert!(text.contains("ferrolb_controller_reconcile_duration_seconds_count 1"));
    }

    #[test]
    fn pool_ready_has_one_series_per_pool_with_the_current_reason() {
        let metrics = Metrics::new();
        metrics.set_pool_ready("lan", true, "Valid");
        metrics.set_pool_ready("dmz", false, "Overlap");
        let text = metrics.encode();
        assert!(
            text.contains(r#"ferrolb_controller_pool_ready{pool="lan",reason="Valid"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"ferrolb_controller_pool_ready{pool="dmz",reason="Overlap"} 0"#),
            "{text}"
        );
        // A new reason replaces the pool's series rather than adding one.
        metrics.set_pool_ready("lan", false, "InvalidAddresses");
        metrics.set_pool_ready("dmz", false, "Overlap");
        let text = metrics.encode();
        assert!(!text.contains(r#"pool="lan",reason="Valid""#), "{text}");
        assert!(
            text.contains(
                r#"ferrolb_controller_pool_ready{pool="lan",reason="InvalidAddresses"} 0"#
            ),
            "{text}"
        );
        // A deleted pool's series go, its usage series with them.
        metrics.set_pool(
            "lan",
            IpFamily::IPv4,
            AddressCount::new(4),
            AddressCount::new(1),
        );
        metrics.remove_pool("lan");
        let text = metrics.encode();
        assert!(!text.contains(r#"pool="lan""#), "{text}");
        assert!(
            text.contains(r#"ferrolb_controller_pool_ready{pool="dmz",reason="Overlap"} 0"#),
            "{text}"
        );
    }
}
