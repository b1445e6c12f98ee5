//! /metrics, /healthz and /readyz: the server both components share, fed the controller's
//! metrics.

pub use ferrolb_crds::health_server::{bind, serve};

use crate::metrics::Metrics;

/// What the endpoints report; `ready` is set once every cache has synced and cleared while
/// re-listing.
pub type Health = ferrolb_crds::health_server::Health<Metrics>;

impl ferrolb_crds::health_server::Exposition for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }
    const NOT_READY: &'static str = "caches not synced";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::health_server::Exposition;

    #[test]
    fn the_endpoints_expose_the_controller_metrics() {
        let health = Health::new(Metrics::new());
        let text = Exposition::encode(&health.metrics);
        assert!(
            text.contains("ferrolb_controller_reconcile_duration_seconds"),
            "{text}"
        );
        assert_eq!(<Metrics as Exposition>::NOT_READY, "caches not synced");
    }
}
