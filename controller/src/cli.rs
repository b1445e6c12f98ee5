//! Command-line flags.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// FerroLB controller: assigns external IPs from IPAddressPools to LoadBalancer Services.
#[derive(Debug, Clone, Parser)]
#[command(name = "ferrolb-controller", version)]
pub struct Args {
    /// Serve only Services with this spec.loadBalancerClass (default: Services without a class).
    #[arg(long, env = "FERROLB_LB_CLASS")]
    pub lb_class: Option<String>,
    /// Elect a leader through a Lease so several replicas can run; only the leader writes.
    #[arg(long, env = "FERROLB_LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = ferrolb_crds::permissions::SYSTEM_NAMESPACE)]
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "ferrolb-controller")]
    pub lease_name: String,
    /// Namespace of the speakers' heartbeat key Secret, which the controller creates with a
    /// random key when it is missing. Empty: leave it alone.
    #[arg(long, env = "POD_NAMESPACE", default_value = ferrolb_crds::permissions::SYSTEM_NAMESPACE)]
    pub heartbeat_key_namespace: String,
    /// Address serving /metrics, /healthz and /readyz.
    /// `[::]` is both families (IPv4 only where the node has no IPv6).
    #[arg(long, default_value = "[::]:7472")]
    pub metrics_bind_address: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "FERROLB_LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_flags_parse() {
        let args = Args::try_parse_from(["ferrolb-controller"]).unwrap();
        assert_eq!(args.lb_class, None);
        assert!(!args.leader_elect);
        assert_eq!(args.metrics_bind_address.port(), 7472);
        assert_eq!(args.heartbeat_key_namespace, "ferrolb-system");
        let args = Args::try_parse_from([
            "ferrolb-controller",
            "--lb-class",
            "ferrolb.io/lb",
            "--leader-elect",
            "--log-format",
            "json",
            "--metrics-bind-address",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(args.lb_class.as_deref(), Some("ferrolb.io/lb"));
        assert!(args.leader_elect);
        assert_eq!(args.log_format, LogFormat::Json);
    }
}
