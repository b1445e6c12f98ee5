//! Prometheus metrics of the controller.

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

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferrolb_controller");
        let addresses_total = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        let addresses_in_use = Family::<Labels, Gauge<f64, AtomicU64>>::default();
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
}
