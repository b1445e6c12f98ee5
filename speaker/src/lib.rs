//! The FerroLB speaker: elects one node per external IP and answers ARP/NDP for it there.
//!
//! Pure cores (no I/O, fully unit- and property-tested):
//! - [`packet`]: ARP and NDP frames, parsed and validated (RFC 826, 4861, 5227) and built;
//!   the socket filters and the in-kernel ARP responder program, assembled.
//! - [`heartbeat`]: liveness on the LAN: the heartbeat frame, replay checks, periods, and the
//!   membership rules that decide who counts alive and when this node must fall silent.
//! - [`election`]: candidates and rendezvous owners over the speakers counted alive.
//! - [`announcer`]: what the owner sends (gratuitous bursts and repeats) and answers.
//! - [`speaker_state`]: the above tied together for one node, fence checked on every frame.
//! - [`cluster`], [`interfaces`]: Kubernetes objects and rtnetlink links as election inputs.
//! - [`bfd`]: BFD for BGP peers (RFC 5880, 5881): the Control packet and the session state
//!   machine (timers, Poll/Final, jitter as an input); its UDP glue and per-session task beside.
//! - [`bgp`]: BGP sessions to routers (RFC 4271): the message codec adapter, the session state
//!   machine, connect-retry backoff, UPDATE packing and the per-peer adj-RIB-out.
//!
//! I/O glue: [`packet_socket`] (AF_PACKET with a BPF filter, read through Tokio),
//! [`dataplane`] (the sockets of the announcing interfaces), [`kernel_arp`] and [`bpf`] (the
//! in-kernel ARP responder kept in step with what the node owns), [`netlink`] (links and addresses
//! through rtnetlink), [`metrics`], [`cli`], [`http`] (/metrics, /healthz, /readyz).
//!
//! The process: [`runtime`] (watches and the main loop), [`registration`] (this node's
//! registration Lease), [`heartbeat_transport`] and [`heartbeat_keys`] (heartbeat sockets and
//! the key Secret), [`statuses`] (ServiceL2Status objects).

pub mod announcer;
pub mod bfd;
pub mod bgp;
pub mod bgp_connection;
pub mod bgp_passwords;
pub mod bgp_session_task;
pub mod bgp_speaker;
pub mod bpf;
pub mod cli;
pub mod cluster;
pub mod dataplane;
pub mod election;
pub mod event_queue;
pub mod heap;
pub mod heartbeat;
pub mod heartbeat_keys;
pub mod heartbeat_queue;
pub mod heartbeat_transport;
pub mod http;
pub mod interfaces;
pub mod kernel_arp;
pub mod metrics;
pub mod netlink;
pub mod packet;
pub mod packet_socket;
pub mod probe;
pub mod registration;
pub mod runtime;
pub mod sockopt;
pub mod speaker_state;
pub mod statuses;
pub mod thread_priority;

/// The whole process for `args`: logging, then the runtime around [`runtime::run`]. The
/// `ferrolb-speaker` binary and the image's multi-call `ferrolb` binary both start here.
///
/// The main loop runs on the main thread and the status writer, registration and HTTP server
/// on one worker; the packet path has its own reader threads. More workers only add stacks and
/// heap arenas.
pub fn main_process(args: cli::Args) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let timing = args.heartbeat_timing().context("heartbeat timing flags")?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match args.log_format {
        cli::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        cli::LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    tracing::info!(node = %args.node_name, namespace = %args.namespace, ?timing, "ferrolb-speaker starting");
    // The worker drives the timers that wake the main loop for each heartbeat: it gets the
    // same raised priority (best effort; the loop logs when it cannot).
    let nice = args.reader_nice;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || {
            let _ = thread_priority::set_current_thread_nice(nice);
        })
        .enable_all()
        .build()?
        .block_on(runtime::run(args, timing))
}
