//! BGP mode on this node: keeps one [`SessionHandle`] per BGPPeer that selects the node, feeds
//! each the routes [`advertisement::decide`] gives it, and turns what the sessions report into
//! BGPSessionStates, ServiceBGPStatuses and events.
//!
//! Called from the speaker's main loop; sessions run as their own tasks, so a slow router never
//! holds the loop up. A session is restarted only when what it runs with changed (its spec, the
//! password, the router ID); route changes go to the running session.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ferrolb_crds::bgp_peer::PeerSettings;
use ferrolb_crds::bgp_session_state::{self, BfdState, NODE_LABEL, PEER_LABEL, SessionState};
use ferrolb_crds::{BGPSessionStateStatus, service_bgp_status};
use ipnet::IpNet;

use crate::bfd::Timers;
use crate::bgp::advertisement::{self, BgpView, Decision, PeerFacts};
use crate::bgp::{self, Families, Family, State};
use crate::bgp_connection::ConnectionConfig;
use crate::bgp_session_task::{Reports, SessionHandle, SessionId, SessionReport, SessionSpec};
use crate::election::ServiceId;
use crate::statuses::{Desired, DesiredObjects, ObjectKey, ServiceRoutes, keep_unchanged};

/// At most one Warning event per peer and reason in this interval (a session retrying against
/// a wrong ASN fails every backoff period).
const EVENT_INTERVAL: Duration = Duration::from_secs(60);
/// What graceful restart offers as the restart time (MetalLB's and FRR's default).
const RESTART_TIME: Duration = Duration::from_secs(120);
/// The longest one TCP connect attempt waits (Linux gives up on SYNs after about two minutes).
const MAX_CONNECT_ATTEMPT: Duration = Duration::from_secs(10);

/// The Secrets passwords come from, as last read: by name, the data or why it is unusable.
pub type Passwords = BTreeMap<String, Result<BTreeMap<String, Vec<u8>>, String>>;

/// This node's addresses, for the default router ID.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeAddresses {
    /// The Node's InternalIP (then ExternalIP) IPv4 addresses, in that order.
    pub node_ipv4: Vec<Ipv4Addr>,
    /// The IPv4 addresses on this node's links.
    pub links: Vec<IpNet>,
}

impl NodeAddresses {
    /// The node's IPv4, as MetalLB takes it: the Node's own address, else the link address on
    /// the peer's subnet, else the lowest global one.
    pub fn router_id(&self, peer: IpAddr) -> Option<Ipv4Addr> {
        if let Some(first) = self.node_ipv4.first() {
            return Some(*first);
        }
        let v4 = || {
            self.links.iter().filter_map(|net| match net {
                IpNet::V4(v4) if !v4.addr().is_loopback() && !v4.addr().is_link_local() => {
                    Some(*v4)
                }
                _ => None,
            })
        };
        v4().find(|net| matches!(peer, IpAddr::V4(peer) if net.contains(&peer)))
            .or_else(|| v4().min_by_key(|net| net.addr()))
            .map(|net| net.addr())
    }
}

/// What a session cannot start without, as shown in its BGPSessionState.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotStarted {
    pub reason: &'static str,
    pub text: String,
}

/// What one peer's session runs with.
pub fn session_spec(
    settings: &PeerSettings,
    addresses: &NodeAddresses,
    passwords: &Passwords,
) -> Result<SessionSpec, NotStarted> {
    let router_id = settings
        .router_id
        .or_else(|| addresses.router_id(settings.peer_address))
        .ok_or_else(|| NotStarted {
            reason: "BGPNoRouterID",
            text: "this node has no IPv4 address to take as the router ID: set routerID".into(),
        })?;
    let password = match &settings.password_secret {
        None => Vec::new(),
        Some(secret) => match passwords.get(&secret.name) {
            None => {
                return Err(NotStarted {
                    reason: "BGPPasswordPending",
                    text: format!("reading the password Secret {}", secret.name),
                });
            }
            Some(Err(error)) => {
                return Err(NotStarted {
                    reason: "BGPPasswordUnavailable",
                    text: format!("password Secret {}: {error}", secret.name),
                });
            }
            Some(Ok(data)) => match data.get(&secret.key) {
                Some(value) if !value.is_empty() => value.clone(),
                _ => {
                    return Err(NotStarted {
                        reason: "BGPPasswordUnavailable",
                        text: format!(
                            "password Secret {} has no key {:?} (or it is empty)",
                            secret.name, secret.key
                        ),
                    });
                }
            },
        },
    };
    if password.len() > crate::bgp_connection::MAX_PASSWORD_LEN {
        return Err(NotStarted {
            reason: "BGPPasswordUnavailable",
            text: format!(
                "the password in Secret {} is {} bytes; TCP MD5 takes at most {}",
                settings
                    .password_secret
                    .as_ref()
                    .map_or("", |s| s.name.as_str()),
                password.len(),
                crate::bgp_connection::MAX_PASSWORD_LEN
            ),
        });
    }
    let mut fsm = bgp::Config::new(settings.my_asn, settings.peer_asn, router_id);
    fsm.hold_time = settings.hold_time;
    fsm.keepalive_time = settings.keepalive_time;
    // connectTime is how long the attempts back off to (MetalLB's meaning); one attempt may
    // take as long, but no longer than a connect usually can.
    fsm.backoff.cap = settings.connect_time.max(Duration::from_secs(1));
    fsm.backoff.initial = fsm.backoff.initial.min(fsm.backoff.cap);
    fsm.connect_time = settings
        .connect_time
        .clamp(Duration::from_secs(1), MAX_CONNECT_ATTEMPT);
    // Each family over a session of its own family: the next hop is the session's address.
    let mut families = Families::NONE;
    families.insert(match settings.peer_address {
        IpAddr::V4(_) => Family::Ipv4Unicast,
        IpAddr::V6(_) => Family::Ipv6Unicast,
    });
    fsm.families = families;
    fsm.graceful_restart = settings.graceful_restart.then_some(RESTART_TIME);
    fsm.validate().map_err(|error| NotStarted {
        reason: "InvalidSpec",
        text: error.to_string(),
    })?;
    let bfd = settings
        .bfd
        .as_ref()
        .map(|bfd| {
            Timers::new(
                Duration::from_millis(u64::from(bfd.transmit_interval)),
                Duration::from_millis(u64::from(bfd.receive_interval)),
                bfd.detect_multiplier,
            )
        })
        .transpose()
        .map_err(|error| NotStarted {
            reason: "InvalidSpec",
            text: format!("bfd: {error}"),
        })?;
    // A directly connected external peer is one hop away (TTL 1, as BIRD and FRR expect);
    // internal and multi-hop peers may be further.
    let ttl = if settings.is_ebgp() && !settings.ebgp_multi_hop {
        1
    } else {
        255
    };
    let attempt = fsm.connect_time;
    Ok(SessionSpec {
        fsm,
        connection: ConnectionConfig {
            peer: std::net::SocketAddr::new(settings.peer_address, settings.peer_port),
            source: settings.source_address,
            password,
            ttl,
            timeout: attempt,
        },
        bfd,
    })
}

fn session_state(state: State) -> SessionState {
    match state {
        State::Idle => SessionState::Idle,
        State::Connect => SessionState::Connect,
        State::Active => SessionState::Active,
        State::OpenSent => SessionState::OpenSent,
        State::OpenConfirm => SessionState::OpenConfirm,
        State::Established => SessionState::Established,
    }
}

fn rfc3339(at: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(at)
        .map(|t| {
            t.round(k8s_openapi::jiff::Unit::Second)
                .unwrap_or(t)
                .to_string()
        })
        .unwrap_or_default()
}

/// One peer as this node sees it.
struct PeerSlot {
    address: String,
    session: Option<SessionHandle>,
    report: Option<SessionReport>,
    not_started: Option<(NotStarted, SystemTime)>,
    bfd: bool,
}

/// An event the runtime publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BgpEvent {
    /// About this node's session with a peer (published on the Node).
    Session {
        peer: String,
        warning: bool,
        reason: String,
        note: String,
    },
    /// About a Service's routes from this node.
    Service {
        service: ServiceId,
        reason: &'static str,
        note: String,
    },
}

pub struct BgpSpeaker {
    node: Arc<str>,
    peers: BTreeMap<String, PeerSlot>,
    decision: Decision,
    reports: Reports,
    next_session: SessionId,
    last_event: BTreeMap<(String, String), Instant>,
}

/// What [`BgpSpeaker::reconcile`] reads.
pub struct BgpInputs<'a> {
    pub view: Option<BgpView<'a>>,
    pub addresses: &'a NodeAddresses,
    pub passwords: &'a Passwords,
}

impl BgpSpeaker {
    /// Sessions report to `reports`; feed each to [`BgpSpeaker::report`].
    pub fn new(node: &str, reports: Reports) -> Self {
        Self {
            node: node.into(),
            peers: BTreeMap::new(),
            decision: Decision::default(),
            reports,
            next_session: 0,
            last_event: BTreeMap::new(),
        }
    }

    /// The Secrets the peers of this node take passwords from.
    pub fn password_secrets(peers: &[PeerFacts]) -> BTreeSet<String> {
        peers
            .iter()
            .filter_map(|peer| peer.spec.password_secret.as_ref())
            .map(|secret| secret.name.clone())
            .collect()
    }

    /// Brings the sessions and their routes in line with `inputs`; `view` is `None` while this
    /// node's own Node object is unknown (nothing is advertised then). Sessions that go are
    /// stopped in the background. Returns the events.
    pub fn reconcile(&mut self, inputs: BgpInputs<'_>) -> Vec<BgpEvent> {
        let decision = inputs.view.map(advertisement::decide).unwrap_or_default();
        let settings: BTreeMap<&str, PeerSettings> = inputs
            .view
            .map(|view| view.peers)
            .unwrap_or_default()
            .iter()
            .filter(|peer| decision.routes.contains_key(&peer.name))
            .filter_map(|peer| Some((peer.name.as_str(), peer.spec.settings().ok()?)))
            .collect();
        // Peers no longer used: withdraw, Cease and close, all at once.
        let gone: Vec<String> = self
            .peers
            .keys()
            .filter(|name| {
                !settings.contains_key(name.as_str()) && !decision.skipped_peers.contains_key(*name)
            })
            .cloned()
            .collect();
        let mut stopping = Vec::new();
        for name in gone {
            if let Some(slot) = self.peers.remove(&name)
                && let Some(session) = slot.session
            {
                tracing::info!(peer = %name, "BGP peer no longer selects this node: stopping its session");
                stopping.push(session.stop());
            }
        }
        for (name, reason) in &decision.skipped_peers {
            let slot = self.peers.entry(name.clone()).or_insert_with(|| PeerSlot {
                address: String::new(),
                session: None,
                report: None,
                not_started: None,
                bfd: false,
            });
            if let Some(session) = slot.session.take() {
                stopping.push(session.stop());
            }
            slot.report = None;
            let problem = NotStarted {
                reason: "BGPPeerSkipped",
                text: reason.clone(),
            };
            if slot.not_started.as_ref().map(|(p, _)| p) != Some(&problem) {
                slot.not_started = Some((problem, SystemTime::now()));
            }
        }
        // In the background: the main loop must not wait for a router.
        for stop in stopping {
            tokio::spawn(stop);
        }

        let mut events = Vec::new();
        for (name, peer) in &settings {
            let routes = decision.routes.get(*name).cloned().unwrap_or_default();
            let spec = session_spec(peer, inputs.addresses, inputs.passwords);
            let slot = self
                .peers
                .entry((*name).to_owned())
                .or_insert_with(|| PeerSlot {
                    address: String::new(),
                    session: None,
                    report: None,
                    not_started: None,
                    bfd: false,
                });
            slot.address = std::net::SocketAddr::new(peer.peer_address, peer.peer_port).to_string();
            slot.bfd = peer.bfd.is_some();
            match spec {
                Ok(spec) => {
                    slot.not_started = None;
                    let current = slot.session.as_ref().map(SessionHandle::spec);
                    if current == Some(&spec) {
                        if let Some(session) = &slot.session {
                            session.set_routes(routes);
                        }
                        continue;
                    }
                    if let Some(old) = slot.session.take() {
                        tracing::info!(peer = %name, "BGP peer settings changed: restarting its session");
                        tokio::spawn(old.stop());
                    }
                    slot.report = None;
                    self.next_session += 1;
                    slot.session = Some(SessionHandle::start(
                        (*name).to_owned(),
                        self.next_session,
                        spec,
                        routes,
                        self.reports.clone(),
                    ));
                }
                Err(problem) => {
                    if let Some(old) = slot.session.take() {
                        tokio::spawn(old.stop());
                    }
                    slot.report = None;
                    if slot.not_started.as_ref().map(|(p, _)| p) != Some(&problem) {
                        if problem.reason != "BGPPasswordPending" {
                            events.push(BgpEvent::Session {
                                peer: (*name).to_owned(),
                                warning: true,
                                reason: problem.reason.to_owned(),
                                note: format!(
                                    "BGP session of {} with peer {name} not started: {}",
                                    self.node, problem.text
                                ),
                            });
                        }
                        slot.not_started = Some((problem, SystemTime::now()));
                    }
                }
            }
        }
        events.extend(self.service_events(&decision));
        self.decision = decision;
        events
    }

    fn service_events(&self, decision: &Decision) -> Vec<BgpEvent> {
        let mut events = Vec::new();
        for (service, now) in &decision.services {
            if self.decision.service(service) == Some(now) {
                continue;
            }
            let prefixes: Vec<String> = now.prefixes.iter().map(ToString::to_string).collect();
            let peers: Vec<&str> = now.peers.iter().map(String::as_str).collect();
            events.push(BgpEvent::Service {
                service: service.clone(),
                reason: "BGPAdvertised",
                note: format!(
                    "{} advertises {} to BGP peers {}",
                    self.node,
                    prefixes.join(", "),
                    peers.join(", ")
                ),
            });
        }
        for (service, _) in &self.decision.services {
            if decision.service(service).is_none() {
                events.push(BgpEvent::Service {
                    service: service.clone(),
                    reason: "BGPWithdrawn",
                    note: format!("{} withdrew its BGP routes", self.node),
                });
            }
        }
        events
    }

    /// Whether `session` is the one now running for `peer` (not one being replaced).
    pub fn is_current(&self, peer: &str, session: SessionId) -> bool {
        self.peers
            .get(peer)
            .and_then(|slot| slot.session.as_ref())
            .is_some_and(|s| s.id() == session)
    }

    /// A session's report: kept for its BGPSessionState; an event when it is news.
    pub fn report(
        &mut self,
        peer: &str,
        session: SessionId,
        report: SessionReport,
        now: Instant,
    ) -> Option<BgpEvent> {
        // Only the current session's: one being replaced reports its stop too.
        if !self.is_current(peer, session) {
            return None;
        }
        let slot = self.peers.get_mut(peer)?;
        let previous = slot.report.replace(report.clone());
        let was_established = previous
            .as_ref()
            .is_some_and(|p| p.state == State::Established);
        let event = if report.errors > previous.as_ref().map_or(0, |p| p.errors) {
            report.last_error.as_ref().map(|error| {
                (
                    true,
                    error.reason.to_owned(),
                    format!(
                        "BGP session of {} with peer {peer} ({}): {}",
                        self.node, slot.address, error.text
                    ),
                )
            })
        } else if report.state == State::Established && !was_established {
            Some((
                false,
                "BGPSessionEstablished".to_owned(),
                format!(
                    "BGP session of {} with peer {peer} ({}) is Established",
                    self.node, slot.address
                ),
            ))
        } else {
            None
        }?;
        let (warning, reason, note) = event;
        let key = (peer.to_owned(), reason.clone());
        if self
            .last_event
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < EVENT_INTERVAL)
        {
            return None;
        }
        self.last_event.insert(key, now);
        Some(BgpEvent::Session {
            peer: peer.to_owned(),
            warning,
            reason,
            note,
        })
    }

    /// This node's BGPSessionStates, in `namespace`, owned by the Node `node_uid`.
    pub fn session_states(
        &self,
        namespace: &str,
        node_uid: &str,
        previous: &DesiredObjects<BGPSessionStateStatus>,
    ) -> DesiredObjects<BGPSessionStateStatus> {
        self.peers
            .iter()
            .map(|(peer, slot)| {
                let mut status = BGPSessionStateStatus {
                    node: self.node.to_string(),
                    peer: peer.clone(),
                    peer_address: slot.address.clone(),
                    bfd_state: slot.bfd.then_some(BfdState::Down),
                    ..Default::default()
                };
                if let Some(report) = &slot.report {
                    status.state = session_state(report.state);
                    status.since = Some(rfc3339(report.since));
                    status.local_address = report
                        .local_address
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    if let Some(error) = &report.last_error {
                        status.last_error = format!("{}: {}", error.reason, error.text);
                        status.last_error_time = Some(rfc3339(error.at));
                    }
                    status.advertised_prefixes = report.advertised as u64;
                    status.hold_time_seconds = report.hold_time_seconds;
                    if report.bfd.is_some() {
                        status.bfd_state = report.bfd;
                    }
                } else if let Some((problem, at)) = &slot.not_started {
                    status.last_error = format!("{}: {}", problem.reason, problem.text);
                    status.last_error_time = Some(rfc3339(*at));
                    status.since = Some(rfc3339(*at));
                }
                let key = ObjectKey {
                    namespace: namespace.into(),
                    name: bgp_session_state::object_name(&self.node, peer).into(),
                };
                let desired = Desired {
                    owner: crate::statuses::owner(
                        crate::statuses::OwnerKind::Node,
                        Arc::clone(&self.node),
                        node_uid,
                    ),
                    labels: BTreeMap::from([
                        (
                            NODE_LABEL.to_owned(),
                            bgp_session_state::label_value(&self.node),
                        ),
                        (PEER_LABEL.to_owned(), bgp_session_state::label_value(peer)),
                    ]),
                    status,
                };
                keep_unchanged(previous, key, desired)
            })
            .collect()
    }

    /// The peers whose session is Established now: only they have this node's routes.
    pub fn established_peers(&self) -> BTreeSet<&str> {
        self.peers
            .iter()
            .filter(|(_, slot)| {
                slot.report
                    .as_ref()
                    .is_some_and(|report| report.state == State::Established)
            })
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// This node's ServiceBGPStatuses: one per Service it advertises to some peer with an
    /// Established session, naming those peers, owned by the Service (`uid_of` gives its uid;
    /// Services without one are left out). A node whose sessions are all down has none.
    pub fn service_statuses(
        &self,
        uid_of: impl Fn(&ServiceId) -> Option<Arc<str>>,
        previous: &DesiredObjects<ServiceRoutes>,
    ) -> DesiredObjects<ServiceRoutes> {
        let established = self.established_peers();
        self.decision
            .services
            .iter()
            .filter_map(|(id, advertised)| {
                let peers: Arc<[String]> = if advertised
                    .peers
                    .iter()
                    .all(|p| established.contains(p.as_str()))
                {
                    Arc::clone(&advertised.peers)
                } else {
                    advertised
                        .peers
                        .iter()
                        .filter(|peer| established.contains(peer.as_str()))
                        .cloned()
                        .collect()
                };
                if peers.is_empty() {
                    return None;
                }
                let uid = uid_of(id)?;
                let status = ServiceRoutes {
                    node: Arc::clone(&self.node),
                    service_name: Arc::clone(&id.name),
                    peers,
                    prefixes: advertised.prefixes.clone(),
                };
                let key = ObjectKey {
                    namespace: Arc::clone(&id.namespace),
                    name: service_bgp_status::object_name(&id.name, &self.node).into(),
                };
                let desired = Desired::owned_by_service(Arc::clone(&id.name), uid, status);
                Some(keep_unchanged(previous, key, desired))
            })
            .collect()
    }

    pub fn sessions(&self) -> impl Iterator<Item = (&str, Option<&SessionReport>)> {
        self.peers
            .iter()
            .map(|(name, slot)| (name.as_str(), slot.report.as_ref()))
    }

    /// SIGTERM: every session withdraws, sends Cease and closes, concurrently.
    pub async fn shutdown(&mut self) {
        let stopping: Vec<_> = self
            .peers
            .values_mut()
            .filter_map(|slot| slot.session.take())
            .map(SessionHandle::stop)
            .collect();
        let count = stopping.len();
        futures::future::join_all(stopping).await;
        if count > 0 {
            tracing::info!(sessions = count, "BGP sessions closed after withdrawing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::BGPPeerSpec;

    fn settings(yaml: serde_json::Value) -> PeerSettings {
        let spec: BGPPeerSpec = serde_json::from_value(yaml).unwrap();
        spec.settings().unwrap()
    }

    fn addresses() -> NodeAddresses {
        NodeAddresses {
            node_ipv4: Vec::new(),
            links: vec![
                "203.0.113.2/28".parse().unwrap(),
                "198.51.100.10/24".parse().unwrap(),
                "127.0.0.1/8".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn the_router_id_is_the_nodes_address_on_the_peers_subnet_unless_the_node_has_one() {
        let mut addresses = addresses();
        let peer: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(addresses.router_id(peer), "198.51.100.10".parse().ok());
        let elsewhere: IpAddr = "2001:db8:1::1".parse().unwrap();
        assert_eq!(addresses.router_id(elsewhere), "198.51.100.10".parse().ok());
        addresses.node_ipv4 = vec!["203.0.113.5".parse().unwrap()];
        assert_eq!(addresses.router_id(peer), "203.0.113.5".parse().ok());
        assert_eq!(NodeAddresses::default().router_id(peer), None);
    }

    #[test]
    fn a_direct_external_peer_gets_ttl_1_and_its_family_only() {
        let spec = session_spec(
            &settings(serde_json::json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "2001:db8:1::1"})),
            &addresses(),
            &Passwords::new(),
        )
        .unwrap();
        assert_eq!(spec.connection.ttl, 1);
        assert!(spec.fsm.families.contains(Family::Ipv6Unicast));
        assert!(!spec.fsm.families.contains(Family::Ipv4Unicast));
        assert_eq!(
            spec.fsm.router_id,
            "198.51.100.10".parse::<Ipv4Addr>().unwrap()
        );
        let multihop = session_spec(
            &settings(serde_json::json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "198.51.100.1", "ebgpMultiHop": true, "enableGracefulRestart": true})),
            &addresses(),
            &Passwords::new(),
        )
        .unwrap();
        assert_eq!(multihop.connection.ttl, 255);
        assert_eq!(multihop.fsm.graceful_restart, Some(RESTART_TIME));
        let internal = session_spec(
            &settings(serde_json::json!({"myASN": 64512, "peerASN": 64512, "peerAddress": "198.51.100.1"})),
            &addresses(),
            &Passwords::new(),
        )
        .unwrap();
        assert_eq!(internal.connection.ttl, 255);
    }

    #[test]
    fn passwords_come_from_the_secret_or_the_session_says_why_not() {
        let peer = settings(
            serde_json::json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "198.51.100.1", "passwordSecret": {"name": "bgp-auth"}}),
        );
        let mut passwords = Passwords::new();
        let pending = session_spec(&peer, &addresses(), &passwords).unwrap_err();
        assert_eq!(pending.reason, "BGPPasswordPending");
        passwords.insert("bgp-auth".into(), Err("not found".into()));
        let missing = session_spec(&peer, &addresses(), &passwords).unwrap_err();
        assert_eq!(missing.reason, "BGPPasswordUnavailable");
        assert!(missing.text.contains("not found"));
        passwords.insert(
            "bgp-auth".into(),
            Ok(BTreeMap::from([("other".into(), b"x".to_vec())])),
        );
        let no_key = session_spec(&peer, &addresses(), &passwords).unwrap_err();
        assert!(no_key.text.contains("\"password\""), "{}", no_key.text);
        passwords.insert(
            "bgp-auth".into(),
            Ok(BTreeMap::from([("password".into(), b"s3cret".to_vec())])),
        );
        let spec = session_spec(&peer, &addresses(), &passwords).unwrap();
        assert_eq!(spec.connection.password, b"s3cret");
        passwords.insert(
            "bgp-auth".into(),
            Ok(BTreeMap::from([("password".into(), vec![b'x'; 81])])),
        );
        assert!(session_spec(&peer, &addresses(), &passwords).is_err());
    }

    #[test]
    fn bfd_timers_follow_the_peer() {
        let peer = settings(
            serde_json::json!({"myASN": 64513, "peerASN": 64512, "peerAddress": "198.51.100.1", "bfd": {"transmitInterval": 100, "receiveInterval": 150, "detectMultiplier": 3}}),
        );
        let spec = session_spec(&peer, &addresses(), &Passwords::new()).unwrap();
        let timers = spec.bfd.unwrap();
        assert_eq!(timers.desired_min_tx(), Duration::from_millis(100));
        assert_eq!(timers.required_min_rx(), Duration::from_millis(150));
        assert_eq!(timers.detect_mult(), 3);
    }

    /// A peer slot as a session in `state` leaves it.
    fn slot(state: Option<State>) -> PeerSlot {
        PeerSlot {
            address: "198.51.100.1:179".into(),
            session: None,
            report: state.map(|state| SessionReport {
                state,
                ..SessionReport::new()
            }),
            not_started: None,
            bfd: false,
        }
    }

    #[test]
    fn a_service_bgp_status_names_only_peers_with_an_established_session() {
        let (reports, _) = tokio::sync::mpsc::unbounded_channel();
        let mut speaker = BgpSpeaker::new("node-a", reports);
        let web = ServiceId {
            namespace: "shop".into(),
            name: "web".into(),
        };
        speaker.decision.services.push((
            web.clone(),
            advertisement::ServiceAdvertisement {
                peers: ["tor-a", "tor-b"].map(String::from).into(),
                prefixes: ["198.51.100.200/32".parse().unwrap()].into_iter().collect(),
            },
        ));
        speaker
            .peers
            .insert("tor-a".into(), slot(Some(State::Established)));
        speaker
            .peers
            .insert("tor-b".into(), slot(Some(State::Active)));
        let uid = |_: &ServiceId| Some(Arc::from("uid-1"));
        let statuses = speaker.service_statuses(uid, &DesiredObjects::new());
        let only: Vec<_> = statuses.values().collect();
        assert_eq!(only.len(), 1);
        assert_eq!(*only[0].status.peers, ["tor-a"]);
        assert_eq!(
            only[0].status.prefixes.as_slice(),
            ["198.51.100.200/32".parse::<IpNet>().unwrap()]
        );

        // Rebuilt with nothing changed, the statuses are the earlier ones, not copies; once
        // the second session is up, the Service's status is a new one.
        let again = speaker.service_statuses(uid, &statuses);
        assert_eq!(again, statuses);
        assert!(Arc::ptr_eq(again.values().next().unwrap(), only[0]));
        speaker
            .peers
            .insert("tor-b".into(), slot(Some(State::Established)));
        let both = speaker.service_statuses(uid, &statuses);
        assert_eq!(
            *both.values().next().unwrap().status.peers,
            ["tor-a", "tor-b"]
        );
        assert!(!Arc::ptr_eq(both.values().next().unwrap(), only[0]));
        speaker
            .peers
            .insert("tor-b".into(), slot(Some(State::Active)));

        // Every session down: the node advertises nothing, so it has no status for the Service.
        speaker
            .peers
            .insert("tor-a".into(), slot(Some(State::Idle)));
        assert!(speaker.service_statuses(uid, &statuses).is_empty());
        speaker.peers.insert("tor-a".into(), slot(None));
        assert!(speaker.service_statuses(uid, &statuses).is_empty());
    }
}
