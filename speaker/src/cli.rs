//! Command-line flags.

use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::heartbeat::{HeartbeatTiming, HeartbeatTimingError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// FerroLB speaker: elects one node per external IP and answers ARP/NDP for it there.
#[derive(Debug, Clone, Parser)]
#[command(name = "ferrolb-speaker", version)]
pub struct Args {
    /// This node's name (its registration Lease is named `ferrolb-speaker-` followed by it).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Namespace of the speakers' registrations and of the heartbeat key Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = ferrolb_crds::permissions::SYSTEM_NAMESPACE)]
    pub namespace: String,
    /// How often a heartbeat is sent on each announcing interface ("75ms"). Every other
    /// period follows from this, --heartbeat-jitter and --heartbeat-max-delay: a dead node is
    /// replaced 3 x interval + 2 x jitter + delay after its last heartbeat (285 ms by default);
    /// see docs/heartbeat-protocol.md.
    #[arg(long, default_value = "75ms", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// How late this node's loop may send a heartbeat before it counts as missed.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub heartbeat_jitter: Duration,
    /// The longest a heartbeat may take from one speaker to another, on the wire and in the
    /// receiver's queue.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    pub heartbeat_max_delay: Duration,
    /// Where /metrics, /healthz and /readyz are served.
    /// `[::]` is both families (IPv4 only where the node has no IPv6).
    #[arg(long, default_value = "[::]:7473")]
    pub metrics_bind_address: std::net::SocketAddr,
    /// Announce only Services whose spec.loadBalancerClass equals this (unset: only Services
    /// without a class), like the controller.
    #[arg(long)]
    pub lb_class: Option<String>,
    /// Nice value of the threads that read and answer ARP and NDP and read heartbeats, and of
    /// the main loop that sends heartbeats (-20 to 19; lower is picked sooner). Below the process's own it needs CAP_SYS_NICE; without
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
    pub fn heartbeat_timing(&self) -> Result<HeartbeatTiming, HeartbeatTimingError> {
        HeartbeatTiming::new(
            self.heartbeat_interval,
            self.heartbeat_jitter,
            self.heartbeat_max_delay,
        )
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
    fn defaults_give_the_documented_heartbeat_timing() {
        let args = Args::try_parse_from(["ferrolb-speaker", "--node-name", "node-a"]).unwrap();
        assert_eq!(args.heartbeat_timing(), Ok(HeartbeatTiming::DEFAULT));
        assert_eq!(args.namespace, "ferrolb-system");
        assert_eq!(args.log_format, LogFormat::Text);
    }

    #[test]
    fn timings_are_checked_together() {
        let parse = |extra: &[&str]| {
            Args::try_parse_from([&["ferrolb-speaker", "--node-name", "node-a"], extra].concat())
                .unwrap()
                .heartbeat_timing()
        };
        let timing = parse(&["--heartbeat-interval", "50ms"]).unwrap();
        assert_eq!(timing.dead_after(), Duration::from_millis(210));
        assert!(
            parse(&["--heartbeat-interval", "20ms"]).is_err(),
            "jitter 20 ms"
        );
        assert!(parse(&["--heartbeat-interval", "5ms", "--heartbeat-jitter", "1ms"]).is_err());
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
