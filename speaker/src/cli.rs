//! Command-line flags.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::election::{LeaseTiming, LeaseTimingError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// FerroLB speaker: elects one node per external IP and answers ARP/NDP for it there.
#[derive(Debug, Clone, Parser)]
#[command(name = "ferrolb-speaker", version)]
pub struct Args {
    /// This node's name (its Lease is named `ferrolb-speaker-` followed by it).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Namespace of the speakers' Leases.
    #[arg(long, env = "POD_NAMESPACE", default_value = ferrolb_crds::permissions::SYSTEM_NAMESPACE)]
    pub namespace: String,
    /// How often the Lease is renewed ("1s", "500ms").
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub lease_renew: Duration,
    /// How long other speakers count this one alive after seeing a renewal.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long after its last successful renewal this speaker keeps answering; must lie
    /// between --lease-renew and --lease-duration (default: halfway between them).
    #[arg(long, value_parser = parse_duration)]
    pub lease_renew_deadline: Option<Duration>,
    /// Where /metrics, /healthz and /readyz are served.
    /// `[::]` is both families (IPv4 only where the node has no IPv6).
    #[arg(long, default_value = "[::]:7473")]
    pub metrics_bind_address: std::net::SocketAddr,
    /// Announce only Services whose spec.loadBalancerClass equals this (unset: only Services
    /// without a class), like the controller.
    #[arg(long)]
    pub lb_class: Option<String>,
    /// Nice value of the threads that read and answer ARP and NDP (-20 to 19; lower is picked
    /// sooner when a request arrives). Below the process's own it needs CAP_SYS_NICE; without
    /// it the readers keep the process's priority, with a warning.
    #[arg(long, default_value_t = -10, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub reader_nice: i32,
    /// Answer plain ARP requests in the kernel (an eBPF program on each announcing interface's
    /// tc ingress; Linux 6.6 or later, CAP_BPF and CAP_NET_ADMIN), as fast as the kernel
    /// answers for the node's own address. Where it cannot load, the packet readers answer.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub kernel_arp: bool,
    /// Log format.
    #[arg(long, value_enum, default_value = "text", env = "FERROLB_LOG_FORMAT")]
    pub log_format: LogFormat,
}

impl Args {
    pub fn lease_timing(&self) -> Result<LeaseTiming, LeaseTimingError> {
        let deadline = self.lease_renew_deadline.unwrap_or_else(|| {
            LeaseTiming::default_renew_deadline(self.lease_renew, self.lease_duration)
        });
        LeaseTiming::new(self.lease_renew, deadline, self.lease_duration)
    }
}

/// A whole number of milliseconds, seconds or minutes: "500ms", "1s", "2m".
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("{text:?} is not a duration such as \"500ms\", \"1s\" or \"2m\"");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| invalid())?;
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        "m" => value
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_give_the_documented_lease_timing() {
        let args = Args::try_parse_from(["ferrolb-speaker", "--node-name", "node-a"]).unwrap();
        assert_eq!(args.lease_timing(), Ok(LeaseTiming::DEFAULT));
        assert_eq!(args.namespace, "ferrolb-system");
        assert_eq!(args.log_format, LogFormat::Text);
    }

    #[test]
    fn timings_are_checked_together() {
        let args = Args::try_parse_from([
            "ferrolb-speaker",
            "--node-name",
            "node-a",
            "--lease-renew",
            "500ms",
            "--lease-duration",
            "2s",
        ])
        .unwrap();
        let timing = args.lease_timing().unwrap();
        assert_eq!(timing.renew_deadline, Duration::from_millis(1250));
        let args = Args::try_parse_from([
            "ferrolb-speaker",
            "--node-name",
            "node-a",
            "--lease-renew-deadline",
            "3s",
        ])
        .unwrap();
        assert!(args.lease_timing().is_err());
    }

    #[test]
    fn reader_nice_defaults_to_favoured_and_stays_in_range() {
        let parse = |extra: &[&str]| {
            Args::try_parse_from([&["ferrolb-speaker", "--node-name", "node-a"], extra].concat())
        };
        assert_eq!(parse(&[]).unwrap().reader_nice, -10);
        assert!(parse(&[]).unwrap().kernel_arp);
        assert!(!parse(&["--kernel-arp", "false"]).unwrap().kernel_arp);
        assert_eq!(parse(&["--reader-nice", "-5"]).unwrap().reader_nice, -5);
        assert_eq!(parse(&["--reader-nice", "0"]).unwrap().reader_nice, 0);
        for out_of_range in ["-21", "20"] {
            let error = parse(&["--reader-nice", out_of_range]).unwrap_err();
            assert!(error.to_string().contains(out_of_range), "{error}");
        }
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "1", "s", "1.5s", "-1s", "1h", "1 s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
