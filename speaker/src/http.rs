//! /metrics, /healthz and /readyz: the server both components share, fed the speaker's metrics.

pub use ferrolb_crds::health_server::{bind, serve};

use crate::metrics::Metrics;

/// What the endpoints report; `ready` is set once every watch has synced and the Lease was
/// renewed.
pub type Health = ferrolb_crds::health_server::Health<Metrics>;

impl ferrolb_crds::health_server::Exposition for Metrics {
    fn encode(&self) -> String {
        Metrics::encode(self)
    }
    const NOT_READY: &'static str = "not synced or Lease not held";
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::health_server::Exposition;

    #[test]
    fn the_endpoints_expose_the_speaker_metrics() {
        let health = Health::new(Metrics::new());
        let text = Exposition::encode(&health.metrics);
        assert!(text.contains("ferrolb_speaker_fenced"), "{text}");
        assert_eq!(
            <Metrics as Exposition>::NOT_READY,
            "not synced or Lease not held"
        );
    }
}
